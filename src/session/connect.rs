//! Picking a backend and connecting to it, with retries on others.
//!
//! Owns the session's moves around a connect (`seek_backend`,
//! `on_connect_ready`, `retry`), its connect attempts (`Attempts`: which backends it tried,
//! how many attempts it made and may make) and the link to the backend it
//! holds a slot on (`Link`). Touches the pool's policy and backends (a
//! slot, the connection counter, passive health) and, through `Net`, the
//! poller.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::debug;

use super::phase::{Next, Phase};
use super::socket::{Net, Readiness, Socket};
use super::{Ctx, End, Peer, Session, Step};
use crate::access_log::ConnectFailure;
use crate::backend::Backend;
use crate::policy::{Pick, Tried};
use crate::pool::Pool;
use crate::token::{self, Side};

/// The backend a session holds a slot on, and its socket to it.
#[derive(Debug)]
pub(crate) struct Link<S> {
    pub backend: Arc<Backend>,
    /// The backend's place in the session's pool snapshot, for the pool's
    /// per-backend calls and the tried set.
    pub index: usize,
    pub socket: S,
}

/// The connect attempts of one session.
#[derive(Debug)]
pub(crate) struct Attempts {
    tried: Tried,
    made: u32,
    max: u32,
}

impl Attempts {
    /// One attempt plus `retries` on other backends.
    pub(super) fn new(retries: u32) -> Attempts {
        Attempts {
            tried: Tried::default(),
            made: 0,
            max: retries.saturating_add(1),
        }
    }

    pub(super) fn made(&self) -> u32 {
        self.made
    }

    pub(super) fn max(&self) -> u32 {
        self.max
    }
}

impl<S: Socket> Session<S> {
    /// Picks a backend and starts connecting to it; when every backend is
    /// full, waits in the pool's queue (or is refused if it is full).
    pub(super) fn seek_backend<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        loop {
            let next = connect_next(&self.pool, &self.peer, &mut self.attempts, self.key, ctx);
            let queued = self.is_queued();
            let NoConnect { failure, full } = match next {
                Ok(link) => return self.transition(Next::Connecting(link), ctx),
                Err(no) => no,
            };
            self.connect_failure = failure.or(self.connect_failure);
            match (full, queued) {
                (true, true) => return Step::Queued,
                (false, _) => {
                    self.pool.count_no_backend(ctx.now);
                    return Step::Close(End::NoBackend);
                }
                // Counted in the queue first, then one more look: a slot
                // freed in between is seen here or announced to the queue.
                (true, false) => match self.transition(Next::Queued, ctx) {
                    Step::Wait => {}
                    step => return step,
                },
            }
        }
    }

    /// The backend accepted, refused or timed out.
    pub(super) fn on_connect_ready<N: Net<Socket = S>>(
        &mut self,
        ready: Readiness,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        let Phase::Connecting { link, .. } = &self.phase else {
            return Step::Wait;
        };
        // Writable without an error settles it without a system call: the
        // kernel reports a connecting socket neither writable nor, until it
        // fails, in error.
        let result = if ready.writable && !ready.error {
            Some(Ok(()))
        } else {
            link.socket.connect_result()
        };
        match result {
            None => Step::Wait,
            Some(Err(e)) => self.retry(e, ctx),
            Some(Ok(())) => match self.transition(Next::Streaming, ctx) {
                // The client's edges that arrived while connecting were not
                // acted on. The backend's are all in this event, its first
                // since the connect: unless it says readable, a read would
                // only return WouldBlock (most servers wait for a request).
                Step::Wait => self.pump(true, ready.can_read(), ctx),
                step => step,
            },
        }
    }

    /// Drops the failed backend and connects to another one, if any is left
    /// (or waits for one in the queue, if the others are full).
    pub(super) fn retry<N: Net<Socket = S>>(
        &mut self,
        error: std::io::Error,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        let failed = self.link().map(|link| (link.backend.addr, link.index));
        if let Some((addr, _)) = failed {
            debug!(
                "listener {} client {}: connect to backend {addr} failed: {error} (attempt {}/{})",
                self.peer.listener,
                self.peer.client,
                self.attempts.made(),
                self.attempts.max()
            );
        }
        match self.transition(Next::Picking, ctx) {
            Step::Wait => {}
            step => return step,
        }
        if let Some((_, index)) = failed {
            self.pool.note_failure(index, &error);
        }
        // The hang-up the failed connect reported must not pass for a FIN
        // of the next backend: that would end the reply at its first short
        // read.
        self.down.src_closing = false;
        self.connect_failure = Some(ConnectFailure::of(&error));
        self.seek_backend(ctx)
    }
}

/// Why `connect_next` started no connect.
#[derive(Debug)]
pub(crate) struct NoConnect {
    /// How the last attempt it made failed, if it made one.
    pub failure: Option<ConnectFailure>,
    /// Some backend that could have taken the session is full: the session
    /// may wait for it.
    pub full: bool,
}

/// Picks backends until a non-blocking connect starts, taking a slot on the
/// backend first and registering the new socket under the session's
/// backend token. Counts each attempt; a backend found full (another
/// reactor took its last slot since the pick) is no attempt.
pub(crate) fn connect_next<N: Net>(
    pool: &Pool,
    peer: &Peer,
    attempts: &mut Attempts,
    key: usize,
    ctx: &mut Ctx<'_, N>,
) -> Result<Link<N::Socket>, NoConnect> {
    let mut failure = None;
    let mut lost_races = 0;
    while attempts.made < attempts.max && lost_races <= pool.backends.len() {
        let now_ms = crate::timer::millis(ctx.now);
        let mut pick = Pick::new(peer.client.ip(), &attempts.tried, ctx.rng, now_ms);
        let Some(index) = pool.pick(&mut pick) else {
            break;
        };
        let Some(backend) = pool.backends.get(index) else {
            break; // a policy answered outside its pool: nothing to connect to
        };
        if !backend.try_acquire() {
            lost_races += 1;
            continue;
        }
        attempts.tried.insert(index, pool.backends.len());
        attempts.made += 1;
        match ctx
            .net
            .connect(backend.addr, token::session(key, Side::Backend))
        {
            Ok(socket) => {
                backend.counters.connections.fetch_add(1, Ordering::Relaxed);
                let backend = Arc::clone(backend);
                return Ok(Link {
                    backend,
                    index,
                    socket,
                });
            }
            Err(e) => {
                *ctx.slot_freed |= pool.release(index);
                debug!(
                    "listener {} client {}: connect to backend {} failed: {e} (attempt {}/{})",
                    peer.listener, peer.client, backend.addr, attempts.made, attempts.max
                );
                pool.note_failure(index, &e);
                failure = Some(ConnectFailure::of(&e));
            }
        }
    }
    let full = attempts.made < attempts.max && pool.full_backends_left(&attempts.tried);
    Err(NoConnect { failure, full })
}
