//! One proxied TCP connection, from accept to close.
//!
//! Owns the session state machine. Reading this folder top to bottom
//! follows the data path:
//!
//! 1. accept: the reactor accepts a client and calls `Session::open`;
//!    on an `accept_proxy` listener the client's PROXY header is read
//!    first (`proxy.rs`) and the listener's client checks run on the
//!    address it gives;
//! 2. pick and connect: a backend is picked by the pool's policy and
//!    connected to without blocking, or, when every backend is at its
//!    `max_connections`, the session waits in the pool's queue without a
//!    backend until its reactor finds it a slot (`dequeue`) or the queue
//!    timeout passes; a failed connect is retried on another backend
//!    (`connect.rs`);
//! 3. pump: bytes move both ways through pooled buffers or pipes, each
//!    direction on its own, honouring half-close (`pump.rs`); a `send_proxy`
//!    pool gets a PROXY header before the client's first byte;
//! 4. close: both sockets close (a reset passed on as a reset), every
//!    slot, buffer and pipe goes back, and one access-log line is written
//!    (`Session::close`).
//!
//! Phases, in order: `ReadingProxy` (accept_proxy listeners only) →
//! `Picking` → `Queued` (only when every backend is full) → `Connecting`
//! → `Streaming`; a failed connect goes back to `Picking`. The phases own
//! what they need (the backend and its socket exist only while
//! `Connecting` and `Streaming`), and `Session::transition` (`phase.rs`) is the one place a session
//! changes phase.
//!
//! A session touches only its own two sockets, what the reactor lends it
//! for one event (`Ctx`: the poller, buffer and pipe pools, timers), its
//! backend's slot and counters, its pool's queue count and, when its
//! listener limits clients by IP, its entry in the per-IP table (released
//! at close). Sockets and the poller are reached through the traits of
//! `socket.rs`, so the whole session also runs in a simulation (`sim`).

mod connect;
mod inspect;
mod phase;
mod proxy;
pub(crate) mod pump;
pub(crate) mod socket;

#[cfg(test)]
mod pump_props;
#[cfg(test)]
mod sim;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;

pub(crate) use crate::access_log::End;
use crate::access_log::{self, ConnectFailure, Record, Stage};
use crate::admission::Admitted;
use crate::buffer::BufferPool;
use crate::logging::RateLimit;
use crate::metrics::counters::{ListenerCounters, Rejected};
use crate::pool::Pool;
use crate::registry::{Routes, Settings};
use crate::splice::PipePool;
use crate::timer::Timers;
use crate::token::{self, Side};

use connect::Attempts;
use inspect::Routed;
use phase::Phase;
use pump::{Carriers, Direction, DirectionState, Pumped};
pub(crate) use socket::{Net, Poller, Readiness, Socket};

/// What a session borrows from its reactor while it handles an event.
#[derive(Debug)]
pub(crate) struct Ctx<'a, N = Poller<'a>> {
    /// Registers sockets and starts connects.
    pub net: N,
    pub buffers: &'a mut BufferPool,
    /// Pipes for directions that relay with splice(2).
    pub pipes: &'a mut PipePool,
    pub timers: &'a mut Timers,
    pub settings: &'a Settings,
    /// The reactor's own generator, for policies that pick at random.
    pub rng: &'a mut fastrand::Rng,
    /// Limits the warnings about bad PROXY headers to one a second.
    pub proxy_warnings: &'a mut RateLimit,
    pub now: Instant,
    /// Set when a session freed a backend slot that queued sessions wait
    /// for: the reactor then retries its queue and wakes the others.
    pub slot_freed: &'a mut bool,
}

impl<N> Ctx<'_, N> {
    fn carriers(&mut self) -> Carriers<'_> {
        Carriers {
            buffers: self.buffers,
            pipes: self.pipes,
            zero_copy: self.settings.zero_copy,
        }
    }
}

/// What the reactor must do with a session after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wait for the next socket event or timer.
    Wait,
    /// A direction used up its budget with bytes still to move: call
    /// `resume` on the next loop turn.
    Yield,
    /// Every backend is full: the session waits in its pool's queue; the
    /// reactor calls `dequeue` when a slot may have freed.
    Queued,
    Close(End),
}

/// Who a session is, for log lines, and its listener's counters.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub counters: Arc<ListenerCounters>,
    /// What the listener's admission must get back at close.
    pub admitted: Admitted,
}

/// What the reactor knows of an accepted client: who it is and where its
/// listener sends it.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub peer: Peer,
    /// The listener's pool (its default, when it has routes).
    pub pool: Arc<Pool>,
    /// `accept_proxy`: the PROXY header's deadline.
    pub accept_proxy: Option<Duration>,
    pub routes: Option<Arc<Routes>>,
}

/// The timeouts a session was opened with (a reload changes them only for
/// sessions that start after it).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    idle: Duration,
    /// Zero unless the listener reads PROXY headers.
    proxy_header: Duration,
}

#[derive(Debug)]
pub(crate) struct Session<S = TcpStream> {
    id: u64,
    key: usize,
    peer: Peer,
    pool: Arc<Pool>,
    client: S,
    phase: Phase<S>,
    /// Client → backend.
    up: Direction,
    /// Backend → client.
    down: Direction,
    /// Where the client connected to, as an incoming PROXY header says.
    destination: Option<SocketAddr>,
    /// The route it took, on a listener with routes.
    routed: Option<Routed>,
    timeouts: Timeouts,
    attempts: Attempts,
    /// How the last failed connect attempt failed (for the access log).
    connect_failure: Option<ConnectFailure>,
    started: Instant,
    last_active: Instant,
    /// Deadline of this session's live timer entry (see `timer`).
    timer_at: Instant,
    yielded: Yielded,
    /// Already given a deadline because a reload removed its backend or
    /// listener.
    noticed: bool,
    /// Bytes sent to and received from the backend already added to its
    /// counters.
    reported: (u64, u64),
}

/// Directions that used up their budget and continue on the next turn.
#[derive(Debug, Clone, Copy, Default)]
struct Yielded {
    up: bool,
    down: bool,
}

impl<S: Socket> Session<S> {
    /// Starts a session for an accepted client whom the reactor has counted
    /// in its listener's `active`: registers the client, then on an
    /// `accept_proxy` listener (`Some` header timeout) waits for its PROXY
    /// header, else picks a backend and starts the connect, or queues it.
    /// On `Err` the client has been logged, uncounted and dropped.
    pub(crate) fn open<N: Net<Socket = S>>(
        key: usize,
        id: u64,
        client: S,
        arrival: Arrival,
        ctx: &mut Ctx<'_, N>,
    ) -> Result<Session<S>, End> {
        let now = ctx.now;
        let Arrival {
            peer,
            pool,
            accept_proxy,
            routes,
        } = arrival;
        let mut routes = Some(routes);
        let mut session = Session {
            id,
            key,
            peer,
            pool,
            client,
            phase: match accept_proxy {
                Some(_) => Phase::ReadingProxy {
                    since: now,
                    routes: routes.take().flatten(),
                },
                None => Phase::Picking,
            },
            routed: None,
            up: Direction::default(),
            down: Direction::default(),
            destination: None,
            timeouts: Timeouts {
                connect: ctx.settings.connect_timeout,
                idle: ctx.settings.idle_timeout,
                proxy_header: accept_proxy.unwrap_or_default(),
            },
            attempts: Attempts::new(ctx.settings.retries),
            connect_failure: None,
            started: now,
            last_active: now,
            timer_at: now,
            yielded: Yielded::default(),
            noticed: false,
            reported: (0, 0),
        };
        // TCP_NODELAY comes from the listening socket: accepted sockets
        // inherit it, which saves a system call per connection.
        let token = token::session(key, Side::Client);
        let step = match ctx.net.register(&mut session.client, token) {
            Ok(()) if accept_proxy.is_some() => {
                session.arm(now + session.timeouts.proxy_header, ctx);
                Step::Wait
            }
            Ok(()) => session.begin(routes.flatten(), ctx),
            Err(e) => {
                debug!(
                    "listener {} client {}: cannot register: {e}",
                    session.peer.listener, session.peer.client
                );
                Step::Close(End::ClientReset)
            }
        };
        match step {
            Step::Close(end) => {
                session.close(end, ctx);
                Err(end)
            }
            _ => Ok(session),
        }
    }

    /// The one handler for every socket event of this session.
    pub(crate) fn on_event<N: Net<Socket = S>>(
        &mut self,
        side: Side,
        ready: Readiness,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        // Remember a peer's FIN even while connecting or blocked: the pump
        // must then read on to EOF instead of stopping after a short read.
        if ready.read_closed {
            match side {
                Side::Client => self.up.src_closing = true,
                Side::Backend => self.down.src_closing = true,
            }
        }
        // epoll reports every readiness a socket has, not only the one that
        // changed, so each direction runs only for the edge it waits for:
        // its source readable, or, while it holds unsent bytes, its
        // destination writable. Anything else would be a wasted call.
        match (&self.phase, side) {
            (Phase::ReadingProxy { .. }, Side::Client) => self.read_proxy(ctx),
            (Phase::ReadingProxy { .. }, Side::Backend) => Step::Wait,
            (Phase::Inspecting { .. }, Side::Client) => self.read_hello(ctx),
            (Phase::Inspecting { .. }, Side::Backend) => Step::Wait,
            (Phase::Connecting { .. }, Side::Backend) => self.on_connect_ready(ready, ctx),
            // A reset peer ends the session at once, even while connecting
            // (a client's FIN, by contrast, leaves a request to relay).
            (_, Side::Client) if ready.error && self.client.has_error() => {
                Step::Close(End::ClientReset)
            }
            (_, Side::Backend)
                if ready.error && self.link().is_some_and(|l| l.socket.has_error()) =>
            {
                Step::Close(End::BackendReset)
            }
            (Phase::Streaming { .. }, Side::Client) => self.pump(
                ready.can_read() && !self.up.is_blocked(),
                ready.can_write() && self.down.is_blocked(),
                ctx,
            ),
            (Phase::Streaming { .. }, Side::Backend) => self.pump(
                ready.can_write() && self.up.is_blocked(),
                ready.can_read() && !self.down.is_blocked(),
                ctx,
            ),
            // Nothing to relay yet: a queued or connecting client's FIN
            // may end a request still to relay.
            _ => Step::Wait,
        }
    }

    /// Continues directions that yielded on an earlier turn.
    pub(crate) fn resume<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        let Yielded { up, down } = std::mem::take(&mut self.yielded);
        self.pump(up, down, ctx)
    }

    /// Called when this session's timer entry `at` fires.
    pub(crate) fn on_timer<N: Net<Socket = S>>(
        &mut self,
        at: Instant,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        if at != self.timer_at {
            return Step::Wait; // superseded by a later arm
        }
        let Some(due) = self.deadline() else {
            return Step::Wait;
        };
        if due > ctx.now {
            self.arm(due, ctx);
            return Step::Wait;
        }
        match self.phase {
            Phase::ReadingProxy { .. } => {
                let ms = self.timeouts.proxy_header.as_millis();
                self.reject_proxy(format_args!("no complete PROXY header within {ms}ms"), ctx)
            }
            Phase::Inspecting { .. } => self.hello_timed_out(ctx),
            Phase::Queued { .. } => Step::Close(End::QueueTimeout),
            Phase::Connecting { .. } => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                self.retry(e, ctx)
            }
            Phase::Streaming { .. } => Step::Close(End::IdleTimeout),
            Phase::Picking => Step::Wait,
        }
    }

    /// A slot may have freed: a queued session tries the backends again.
    /// `Step::Queued` if it must wait on.
    pub(crate) fn dequeue<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        if !self.is_queued() {
            return Step::Wait;
        }
        self.seek_backend(ctx)
    }

    /// Runs the requested directions, then decides what comes next.
    fn pump<N>(&mut self, up: bool, down: bool, ctx: &mut Ctx<'_, N>) -> Step {
        let Phase::Streaming { link, .. } = &mut self.phase else {
            return Step::Wait;
        };
        let backend = &mut link.socket;
        let mut carriers = ctx.carriers();
        if up {
            let last = self.down.state() == DirectionState::Closed;
            match self.up.pump(&mut self.client, backend, &mut carriers, last) {
                Pumped::ReadFailed => return Step::Close(End::ClientReset),
                Pumped::WriteFailed => return Step::Close(End::BackendReset),
                Pumped::Yield => self.yielded.up = true,
                Pumped::Moved | Pumped::Finished => {}
            }
        }
        if down {
            let last = self.up.state() == DirectionState::Closed;
            match self
                .down
                .pump(backend, &mut self.client, &mut carriers, last)
            {
                Pumped::ReadFailed => return Step::Close(End::BackendReset),
                Pumped::WriteFailed => return Step::Close(End::ClientReset),
                Pumped::Yield => self.yielded.down = true,
                Pumped::Moved | Pumped::Finished => {}
            }
        }
        if std::mem::take(&mut self.up.moved) | std::mem::take(&mut self.down.moved) {
            self.last_active = ctx.now;
        }
        let closed = DirectionState::Closed;
        if self.up.state() == closed && self.down.state() == closed {
            Step::Close(End::Done)
        } else if self.yielded.up || self.yielded.down {
            Step::Yield
        } else {
            Step::Wait
        }
    }

    /// Closes both sockets, returns buffers, pipes and slots, logs the
    /// line. Closing a socket removes it from the poller, so there is no
    /// separate deregistration.
    pub(crate) fn close<N>(mut self, end: End, ctx: &mut Ctx<'_, N>) {
        // Propagate a reset as a reset, so the other peer cannot mistake a
        // truncated stream for a complete one.
        match (end, self.link()) {
            (End::ClientReset, Some(link)) => link.socket.abort_on_close(),
            // Refused like a client refused at accept: with a reset.
            (End::BackendReset | End::Refused(_), _) => self.client.abort_on_close(),
            (End::QueueFull, _) => self.peer.counters.reject(Rejected::QueueFull),
            (End::QueueTimeout, _) => self.peer.counters.reject(Rejected::QueueTimeout),
            _ => {}
        }
        if self.is_queued() {
            self.pool.waiting.leave();
        }
        self.up.discard(&mut ctx.carriers());
        self.down.discard(&mut ctx.carriers());
        self.report_traffic();
        self.peer.counters.active.fetch_sub(1, Ordering::Relaxed);
        self.peer.admitted.release();
        if let Some(link) = self.link() {
            *ctx.slot_freed |= self.pool.release(link.index);
        }
        match end {
            // Never a session: counted, and warned about in `reject_proxy`
            // or by the reactor.
            End::ProxyHeader => self.peer.counters.reject(Rejected::ProxyHeader),
            End::Refused(why) => self.peer.counters.reject(why),
            _ if ctx.settings.access_log => access_log::log(&self.record(end, ctx.now)),
            _ => {}
        }
    }

    /// The access-log record of this session ending now.
    fn record(&self, end: End, now: Instant) -> Record<'_> {
        Record {
            client: self.peer.client,
            listener: &self.peer.listener,
            pool: &self.pool.name,
            backend: self.link().map(|link| link.backend.addr),
            backup: self.link().is_some_and(|link| link.backend.is_backup()),
            bytes_in: self.up.read,
            bytes_out: self.down.written,
            started: self.started,
            connected: match self.phase {
                Phase::Streaming { since, .. } => Some(since),
                _ => None,
            },
            ended: now,
            attempts: self.attempts.made(),
            end,
            stage: self.stage(),
            connect_failure: self.connect_failure,
            route: self.routed.as_ref().map(|r| access_log::RouteTaken {
                name: r.route.as_deref(),
                sni: r.sni.as_deref(),
            }),
        }
    }

    /// How far the session had come, for its termination code.
    fn stage(&self) -> Stage {
        let open = DirectionState::Open;
        let one_ended = self.up.state() != open || self.down.state() != open;
        match self.phase {
            Phase::ReadingProxy { .. }
            | Phase::Inspecting { .. }
            | Phase::Picking
            | Phase::Connecting { .. } => Stage::Connect,
            Phase::Queued { .. } => Stage::Queue,
            Phase::Streaming { .. } if one_ended => Stage::LastData,
            Phase::Streaming { .. } => Stage::Data,
        }
    }
}

impl<S> Session<S> {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The queue this session waits in.
    pub(crate) fn queue(&self) -> &Arc<crate::queue::Queue> {
        &self.pool.waiting
    }

    /// The listener that accepted this session.
    pub(crate) fn listener(&self) -> &str {
        &self.peer.listener
    }

    /// The listener's name, to keep past the session.
    pub(crate) fn listener_name(&self) -> Arc<str> {
        Arc::clone(&self.peer.listener)
    }

    /// The client: the peer address, or the one its PROXY header gave.
    pub(crate) fn client(&self) -> SocketAddr {
        self.peer.client
    }

    /// True the first time it is called: the reactor puts a session whose
    /// backend or listener was removed on notice once.
    pub(crate) fn take_notice(&mut self) -> bool {
        !std::mem::replace(&mut self.noticed, true)
    }

    /// Adds the bytes moved since the last report to the backend's
    /// counters; called at close and, while open, once a second.
    pub(crate) fn report_traffic(&mut self) {
        let totals = (self.up.written, self.down.read);
        if let Phase::Connecting { link, .. } | Phase::Streaming { link, .. } = &self.phase {
            link.backend.counters.report(totals, &mut self.reported);
        }
    }

    /// A reload removed the backend this session is on.
    pub(crate) fn backend_retired(&self) -> bool {
        self.link().is_some_and(|link| link.backend.is_retired())
    }
}
