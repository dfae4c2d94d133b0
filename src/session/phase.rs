//! A session's phases and the moves between them.
//!
//! Owns `Phase` (where a session is, and what it holds there: the backend
//! and its socket exist only while connecting and streaming) and
//! `Session::transition`, the one place a session changes phase, with the
//! deadline each phase has. Touches the session's pool (its queue count,
//! a backend's slot and counters) and the reactor's timers.

use std::sync::Arc;
use std::time::Instant;

use log::warn;

use super::connect::Link;
use super::socket::{Net, Socket};
use super::{Ctx, End, Routes, Session, Step};

/// Where a session is, and what it holds there.
#[derive(Debug)]
pub(super) enum Phase<S> {
    /// An `accept_proxy` listener's client must send a PROXY header by
    /// `since` + `proxy_timeout`; no backend yet, since the pick depends
    /// on the client address the header gives.
    ReadingProxy {
        since: Instant,
        /// The listener's routes, taken once the header names the client.
        routes: Option<Arc<Routes>>,
    },
    /// A listener with ClientHello routes peeks at the client's first
    /// bytes since `since`, to choose its pool (`inspect.rs`).
    Inspecting { since: Instant, routes: Arc<Routes> },
    /// No backend: about to pick one (at accept, once a PROXY header is
    /// in, after a failed connect), or none could be had.
    Picking,
    /// Waiting since `since` for a backend slot: no backend socket, one
    /// place in the pool's queue, and no buffer unless an `accept_proxy`
    /// client sent bytes along with its header.
    Queued { since: Instant },
    /// A non-blocking connect to `link` is in progress since `since`.
    Connecting { link: Link<S>, since: Instant },
    /// Connected since `since`; bytes flow both ways until both
    /// directions have ended.
    Streaming { link: Link<S>, since: Instant },
}

/// Where a transition goes (see `Session::transition`).
pub(super) enum Next<S> {
    /// Peek at the client's ClientHello to route it.
    Inspecting(Arc<Routes>),
    /// Drop the backend, if any (its connect failed), to pick again.
    Picking,
    Queued,
    Connecting(Link<S>),
    /// The connect in progress succeeded.
    Streaming,
}

impl<S: Socket> Session<S> {
    /// The one place a session changes phase (but for its end, `close`):
    /// gives up what the old phase held (a queue place, a failed backend)
    /// and takes on what the new one needs (its deadline). `Step::Wait`
    /// when the session goes on in the new phase.
    pub(super) fn transition<N: Net<Socket = S>>(
        &mut self,
        next: Next<S>,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        let now = ctx.now;
        let was_queued = self.is_queued();
        match next {
            Next::Picking => {
                let left = std::mem::replace(&mut self.phase, Phase::Picking);
                if let Phase::Connecting { link, .. } | Phase::Streaming { link, .. } = left {
                    // Its socket closes as `link` drops, which also takes
                    // it off the poller.
                    *ctx.slot_freed |= self.pool.release(link.index);
                }
            }
            Next::Queued if was_queued => {}
            Next::Queued => {
                if !self.pool.waiting.enter(self.pool.queue.size) {
                    return Step::Close(End::QueueFull);
                }
                self.phase = Phase::Queued { since: now };
            }
            Next::Inspecting(routes) => self.phase = Phase::Inspecting { since: now, routes },
            Next::Connecting(link) => self.phase = Phase::Connecting { link, since: now },
            Next::Streaming => match std::mem::replace(&mut self.phase, Phase::Picking) {
                Phase::Connecting { link, since } => {
                    link.socket.set_nodelay();
                    link.backend.record_connect_success();
                    let elapsed = now.saturating_duration_since(since);
                    link.backend.counters.connected_in(elapsed);
                    self.phase = Phase::Streaming { link, since: now };
                    self.last_active = now;
                    if let Some(version) = self.pool.send_proxy {
                        self.queue_proxy_header(version, ctx);
                    }
                }
                other => {
                    self.phase = other;
                    warn!(
                        "listener {} client {}: connected while not connecting; closing",
                        self.peer.listener, self.peer.client
                    );
                    return Step::Close(End::BackendReset);
                }
            },
        }
        if was_queued && !self.is_queued() {
            self.pool.waiting.leave();
        }
        if let Some(due) = self.deadline() {
            // One live timer entry: a later deadline is found when the
            // earlier entry fires, unless that entry is already spent.
            if due < self.timer_at || self.timer_at <= now {
                self.arm(due, ctx);
            }
        }
        Step::Wait
    }

    /// When the current phase times out.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::ReadingProxy { since, .. } => Some(*since + self.timeouts.proxy_header),
            Phase::Inspecting { since, routes } => Some(*since + routes.inspect_timeout),
            Phase::Picking => None,
            Phase::Queued { since } => Some(*since + self.pool.queue.timeout),
            Phase::Connecting { since, .. } => Some(*since + self.timeouts.connect),
            Phase::Streaming { .. } => Some(self.last_active + self.timeouts.idle),
        }
    }

    pub(super) fn arm<N>(&mut self, at: Instant, ctx: &mut Ctx<'_, N>) {
        self.timer_at = at;
        ctx.timers.arm(at, self.key, self.id);
    }
}

impl<S> Session<S> {
    /// The backend this session is connecting or connected to.
    pub(super) fn link(&self) -> Option<&Link<S>> {
        match &self.phase {
            Phase::Connecting { link, .. } | Phase::Streaming { link, .. } => Some(link),
            _ => None,
        }
    }

    /// Waiting in the queue: the reactor keeps it in its FIFO.
    pub(crate) fn is_queued(&self) -> bool {
        matches!(self.phase, Phase::Queued { .. })
    }
}
