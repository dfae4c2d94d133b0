//! One proxied TCP connection, from accept to close.
//!
//! Owns the session state machine and the byte pump. Reading top to bottom
//! follows the data path: a client is accepted (`Session::open`), on an
//! `accept_proxy` listener its PROXY header is read first (`read_proxy`)
//! and the listener's client checks run on the address it gives, a
//! backend is picked and connected to without blocking (`connect_or_queue`,
//! `connect_next`) or, when every backend is at its `max_connections`, the
//! session waits in the pool's queue without a backend until its reactor
//! finds it a slot (`dequeue`) or the queue timeout passes; the connect
//! completes or is retried elsewhere (`on_connect_ready`, `retry`) and, for
//! a `send_proxy` pool, a PROXY header is queued before the client's bytes;
//! bytes are pumped both ways through pooled buffers (`Flow::pump`), and
//! the session closes with one access-log line (`Session::close`).
//!
//! Phases, in order: `ReadingProxy` (accept_proxy listeners only) →
//! `Queued` (only when every backend is full) → `Connecting` → `Streaming`.
//! Every move into `Queued` or `Connecting` goes through
//! `connect_or_queue`.
//!
//! It touches only its own two sockets, the reactor's poll registry, buffer
//! pool and timers (through `Ctx`), its backend's active counter, its
//! pool's queue count and, when its listener limits clients by IP, its
//! entry in the per-IP table (released at close).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry as PollRegistry};

pub use crate::access_log::End;
use crate::access_log::{self, ConnectFailure, Record, Stage};
use crate::acl::unmapped;
use crate::admission::Admitted;
use crate::buffer::{Buffer, BufferPool};
use crate::config::ZeroCopy;
use crate::logging::RateLimit;
use crate::metrics::counters::{ListenerCounters, Rejected};
use crate::policy::{Pick, Tried};
use crate::proxy_protocol::{self, Addresses, Header, Parsed, Transport};
use crate::registry::{Pool, Settings};
use crate::splice::{self, Pipe, PipePool};
use crate::timer::Timers;
use crate::token::{self, Side};

/// Reads per flow per event before yielding to other sessions (16 × 16 KiB
/// buffers = 256 KiB), so one fast sender cannot starve the reactor.
const READ_BUDGET: usize = 16;

/// What a session borrows from its reactor while it handles an event.
pub struct Ctx<'a> {
    pub poll: &'a PollRegistry,
    pub buffers: &'a mut BufferPool,
    /// Pipes for flows that relay with splice(2).
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

impl Ctx<'_> {
    fn carriers(&mut self) -> Carriers<'_> {
        Carriers {
            buffers: self.buffers,
            pipes: self.pipes,
            zero_copy: self.settings.zero_copy,
        }
    }
}

/// What a flow moves bytes with: buffers, or pipes when zero-copy applies.
struct Carriers<'a> {
    buffers: &'a mut BufferPool,
    pipes: &'a mut PipePool,
    zero_copy: ZeroCopy,
}

/// What the reactor must do with a session after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait for the next socket event or timer.
    Wait,
    /// A flow used up its budget with bytes still to move: call `resume`
    /// on the next loop turn.
    Yield,
    /// Every backend is full: the session waits in its pool's queue; the
    /// reactor calls `dequeue` when a slot may have freed.
    Queued,
    Close(End),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An `accept_proxy` listener's client must send a PROXY header by
    /// `since` + `proxy_timeout`; no backend yet, since the pick depends
    /// on the client address the header gives.
    ReadingProxy { since: Instant },
    /// Waiting since `since` for a backend slot: no backend socket, one
    /// place in the pool's queue, and no buffer unless an `accept_proxy`
    /// client sent bytes along with its header.
    Queued { since: Instant },
    /// A non-blocking connect to `backend` is in progress since `since`.
    Connecting { since: Instant },
    /// Bytes flow both ways until both directions have ended.
    Streaming,
}

/// Who a session is, for log lines, and its listener's counters.
#[derive(Debug, Clone)]
pub struct Peer {
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub counters: Arc<ListenerCounters>,
    /// What the listener's admission must get back at close.
    pub admitted: Admitted,
}

#[derive(Debug)]
pub struct Session {
    id: u64,
    key: usize,
    peer: Peer,
    pool: Arc<Pool>,
    client: TcpStream,
    /// `None` until a backend connect starts, while queued, or after the
    /// last connect failed.
    backend: Option<TcpStream>,
    /// `NO_BACKEND` when `backend` is `None`.
    backend_index: usize,
    /// Where the client connected to, as an incoming PROXY header says.
    destination: Option<SocketAddr>,
    proxy_timeout: Duration,
    phase: Phase,
    /// Client → backend.
    up: Flow,
    /// Backend → client.
    down: Flow,
    connect_timeout: Duration,
    idle_timeout: Duration,
    started: Instant,
    /// When the backend connection was established (connect time).
    connected_at: Option<Instant>,
    /// How the last failed connect attempt failed (for the access log).
    connect_failure: Option<ConnectFailure>,
    last_active: Instant,
    /// Deadline of this session's live timer entry (see `timer`).
    timer_at: Instant,
    attempts: u32,
    max_attempts: u32,
    tried: Tried,
    yielded: Yielded,
    /// Already given a deadline because a reload removed its backend or
    /// listener.
    noticed: bool,
    /// Bytes sent to and received from the backend already added to its
    /// counters.
    reported: (u64, u64),
}

#[derive(Debug, Clone, Copy, Default)]
struct Yielded {
    up: bool,
    down: bool,
}

/// `backend_index` of a session without a backend.
const NO_BACKEND: usize = usize::MAX;

impl Session {
    /// Starts a session for an accepted client whom the reactor has counted
    /// in its listener's `active`: registers the client, then on an
    /// `accept_proxy` listener (`Some` header timeout) waits for its PROXY
    /// header, else picks a backend and starts the connect, or queues it.
    /// On `Err` the client has been logged, uncounted and dropped.
    pub fn open(
        key: usize,
        id: u64,
        client: TcpStream,
        peer: Peer,
        pool: Arc<Pool>,
        accept_proxy: Option<Duration>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Session, End> {
        let started = ctx.now;
        let mut session = Session {
            id,
            key,
            peer,
            pool,
            client,
            backend: None,
            backend_index: NO_BACKEND,
            destination: None,
            proxy_timeout: accept_proxy.unwrap_or_default(),
            phase: match accept_proxy {
                Some(_) => Phase::ReadingProxy { since: started },
                None => Phase::Connecting { since: started },
            },
            up: Flow::default(),
            down: Flow::default(),
            connect_timeout: ctx.settings.connect_timeout,
            idle_timeout: ctx.settings.idle_timeout,
            started,
            connected_at: None,
            connect_failure: None,
            last_active: started,
            timer_at: started,
            attempts: 0,
            max_attempts: ctx.settings.retries.saturating_add(1),
            tried: Tried::default(),
            yielded: Yielded::default(),
            noticed: false,
            reported: (0, 0),
        };
        // TCP_NODELAY comes from the listening socket: accepted sockets
        // inherit it, which saves a system call per connection.
        let token = token::session(key, Side::Client);
        let registered = ctx.poll.register(
            &mut session.client,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        let step = match registered {
            Ok(()) if accept_proxy.is_some() => {
                session.arm(started + session.proxy_timeout, ctx);
                Step::Wait
            }
            Ok(()) => session.connect_or_queue(ctx),
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

    /// Waiting in the queue: the reactor keeps it in its FIFO.
    pub fn is_queued(&self) -> bool {
        matches!(self.phase, Phase::Queued { .. })
    }

    /// The queue this session waits in.
    pub fn queue(&self) -> &Arc<crate::queue::Queue> {
        &self.pool.waiting
    }

    /// A slot may have freed: a queued session tries the backends again.
    /// `Step::Queued` if it must wait on.
    pub fn dequeue(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if !self.is_queued() {
            return Step::Wait;
        }
        self.connect_or_queue(ctx)
    }

    /// Picks a backend and starts connecting to it; when every backend is
    /// full, waits in the pool's queue (or is refused if it is full).
    fn connect_or_queue(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let next = connect_next(
            &self.pool,
            &self.peer,
            &mut self.tried,
            &mut self.attempts,
            self.max_attempts,
            self.key,
            ctx,
        );
        let queued = self.is_queued();
        match next {
            Ok((backend, index)) => {
                if queued {
                    self.pool.waiting.leave();
                }
                self.backend = Some(backend);
                self.backend_index = index;
                self.phase = Phase::Connecting { since: ctx.now };
                self.arm(ctx.now + self.connect_timeout, ctx);
                Step::Wait
            }
            Err(NoConnect { failure, full }) => {
                self.connect_failure = failure.or(self.connect_failure);
                if full && queued {
                    return Step::Queued;
                }
                if !full {
                    self.pool.count_no_backend(ctx.now);
                    return Step::Close(End::NoBackend);
                }
                if !self.pool.waiting.enter(self.pool.queue.size) {
                    return Step::Close(End::QueueFull);
                }
                self.phase = Phase::Queued { since: ctx.now };
                self.arm(ctx.now + self.pool.queue.timeout, ctx);
                // Counted in the queue first, then one more look: a slot
                // freed in between is seen here or announced to the queue.
                self.connect_or_queue(ctx)
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The listener that accepted this session.
    pub fn listener(&self) -> &str {
        &self.peer.listener
    }

    /// The listener's name, to keep past the session.
    pub fn listener_name(&self) -> Arc<str> {
        Arc::clone(&self.peer.listener)
    }

    /// The client: the peer address, or the one its PROXY header gave.
    pub fn client(&self) -> SocketAddr {
        self.peer.client
    }

    /// True the first time it is called: the reactor puts a session whose
    /// backend or listener was removed on notice once.
    pub fn take_notice(&mut self) -> bool {
        !std::mem::replace(&mut self.noticed, true)
    }

    /// Adds the bytes moved since the last report to the backend's
    /// counters; called at close and, while open, once a second.
    pub fn report_traffic(&mut self) {
        let totals = (self.up.written, self.down.read);
        if let Some(b) = self.pool.backends.get(self.backend_index) {
            b.counters.report(totals, &mut self.reported);
        }
    }

    /// A reload removed the backend this session is on.
    pub fn backend_retired(&self) -> bool {
        self.pool
            .backends
            .get(self.backend_index)
            .is_some_and(|b| b.is_retired())
    }

    /// The one handler for every socket event of this session.
    pub fn on_event(&mut self, side: Side, event: &Event, ctx: &mut Ctx<'_>) -> Step {
        let readable = event.is_readable() || event.is_read_closed();
        let writable = event.is_writable() || event.is_write_closed();
        // Remember a peer's FIN even while connecting or blocked: the pump
        // must then read on to EOF instead of stopping after a short read.
        if event.is_read_closed() {
            match side {
                Side::Client => self.up.src_closing = true,
                Side::Backend => self.down.src_closing = true,
            }
        }
        // epoll reports every readiness a socket has, not only the one that
        // changed, so each flow runs only for the edge it waits for: its
        // source readable, or, while it holds unsent bytes, its destination
        // writable. Anything else would be a wasted read or write.
        match (self.phase, side) {
            (Phase::ReadingProxy { .. }, Side::Client) => self.read_proxy(ctx),
            (Phase::ReadingProxy { .. }, Side::Backend) => Step::Wait,
            (Phase::Connecting { .. }, Side::Backend) => self.on_connect_ready(event, ctx),
            // A reset peer ends the session at once, even while connecting
            // (a client's FIN, by contrast, leaves a request to relay).
            (_, Side::Client) if event.is_error() && has_error(&self.client) => {
                Step::Close(End::ClientReset)
            }
            (_, Side::Backend)
                if event.is_error() && self.backend.as_ref().is_some_and(has_error) =>
            {
                Step::Close(End::BackendReset)
            }
            // A queued client's FIN may end a request still to relay; its
            // reset ends the session above.
            (Phase::Queued { .. }, _) => Step::Wait,
            (Phase::Connecting { .. }, Side::Client) => Step::Wait,
            (Phase::Streaming, Side::Client) => self.pump(
                readable && !self.up.is_blocked(),
                writable && self.down.is_blocked(),
                ctx,
            ),
            (Phase::Streaming, Side::Backend) => self.pump(
                writable && self.up.is_blocked(),
                readable && !self.down.is_blocked(),
                ctx,
            ),
        }
    }

    /// Continues flows that yielded on an earlier turn.
    pub fn resume(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let Yielded { up, down } = std::mem::take(&mut self.yielded);
        self.pump(up, down, ctx)
    }

    /// Called when this session's timer entry `at` fires.
    pub fn on_timer(&mut self, at: Instant, ctx: &mut Ctx<'_>) -> Step {
        if at != self.timer_at {
            return Step::Wait; // superseded by an earlier re-arm
        }
        let due = match self.phase {
            Phase::ReadingProxy { since } => since + self.proxy_timeout,
            Phase::Queued { since } => since + self.pool.queue.timeout,
            Phase::Connecting { since } => since + self.connect_timeout,
            Phase::Streaming => self.last_active + self.idle_timeout,
        };
        if due > ctx.now {
            self.arm(due, ctx);
            return Step::Wait;
        }
        match self.phase {
            Phase::ReadingProxy { .. } => {
                let why = format_args!(
                    "no complete PROXY header within {}ms",
                    self.proxy_timeout.as_millis()
                );
                self.reject_proxy(why, ctx)
            }
            Phase::Queued { .. } => Step::Close(End::QueueTimeout),
            Phase::Connecting { .. } => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                self.retry(e, ctx)
            }
            Phase::Streaming => Step::Close(End::IdleTimeout),
        }
    }

    fn arm(&mut self, at: Instant, ctx: &mut Ctx<'_>) {
        self.timer_at = at;
        ctx.timers.arm(at, self.key, self.id);
    }

    /// Reads what the client sent so far into the client→backend buffer
    /// and looks for a complete PROXY header in it. Bytes after the header
    /// are the client's first payload and stay in the buffer. Reads leave
    /// room for the outgoing header `send_proxy` puts in front of them.
    fn read_proxy(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let buf = self.up.buf.get_or_insert_with(|| ctx.buffers.take());
        let outcome = loop {
            let space = buf.space();
            let room = space.len().saturating_sub(proxy_protocol::MAX_ENCODED_LEN);
            // Cannot happen: the smallest buffer holds the longest header
            // accepted and the longest written.
            if room == 0 {
                break Err(ProxyError::Parse("header too long for the buffer"));
            }
            match self.client.read(&mut space[..room]) {
                Ok(0) => break Err(ProxyError::Closed),
                Ok(n) => {
                    buf.filled(n);
                    match proxy_protocol::parse(buf.pending()) {
                        Parsed::Incomplete => {}
                        Parsed::Invalid(why) => break Err(ProxyError::Parse(why)),
                        Parsed::Done(header, used) => {
                            buf.consume(used);
                            break Ok(header);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(ProxyError::Io(e)),
            }
        };
        match outcome {
            Ok(header) => self.on_proxy_header(header, ctx),
            Err(ProxyError::Parse(why)) => self.reject_proxy(why, ctx),
            Err(ProxyError::Closed) => {
                self.reject_proxy("closed before a complete PROXY header", ctx)
            }
            Err(ProxyError::Io(e)) => self.reject_proxy(e, ctx),
        }
    }

    /// The header is in: its client (unless LOCAL or UNKNOWN) becomes this
    /// session's client for the pick, the logs and an outgoing header.
    fn on_proxy_header(&mut self, header: Header, ctx: &mut Ctx<'_>) -> Step {
        if let Some((source, destination)) = header.endpoints() {
            self.peer.client = unmapped(source);
            self.destination = Some(unmapped(destination));
        }
        // The listener's client checks, deferred from accept to this
        // address; the per-IP entry is counted (and later released) under
        // exactly the address checked here.
        if let Some(admission) = self.peer.admitted.take_pending() {
            let now_ms = crate::registry::millis(ctx.now);
            match admission.admit_client(self.peer.client.ip(), now_ms) {
                Ok(admitted) => self.peer.admitted = admitted,
                Err(why) => return Step::Close(End::Refused(why)),
            }
        }
        let payload = self.up.buf.as_ref().map_or(0, |b| b.pending().len());
        self.up.read += payload as u64;
        self.up.release(ctx.buffers);
        let step = self.connect_or_queue(ctx);
        if step == Step::Close(End::NoBackend) {
            self.peer.counters.reject(Rejected::NoBackend);
        }
        step
    }

    /// Closes a client that sent no valid PROXY header: counted, and said
    /// at most once a second per reactor (a scan or a misconfigured
    /// upstream would otherwise flood the log).
    fn reject_proxy(&mut self, why: impl std::fmt::Display, ctx: &mut Ctx<'_>) -> Step {
        if let Some(suppressed) = ctx.proxy_warnings.allow(ctx.now) {
            warn!(
                "listener {} client {}: closed: {why} ({suppressed} similar messages not logged)",
                self.peer.listener, self.peer.client
            );
        }
        Step::Close(End::ProxyHeader)
    }

    /// Puts this session's PROXY header in front of the client's bytes,
    /// into the buffer they are sent from. Reads while waiting for an
    /// incoming header left room for it.
    fn queue_proxy_header(&mut self, version: proxy_protocol::Version, ctx: &mut Ctx<'_>) {
        let destination = self
            .destination
            .or_else(|| self.client.local_addr().ok().map(unmapped));
        let addresses = match destination {
            Some(destination) => Addresses::Inet {
                transport: Transport::Tcp,
                source: self.peer.client,
                destination,
            },
            None => Addresses::Unknown,
        };
        let mut header = [0; proxy_protocol::MAX_ENCODED_LEN];
        let n = proxy_protocol::encode(&Header { version, addresses }, &mut header);
        let buf = self.up.buf.get_or_insert_with(|| ctx.buffers.take());
        let fits = buf.prepend(&header[..n]);
        debug_assert!(fits, "no room for the PROXY header");
    }

    fn on_connect_ready(&mut self, event: &Event, ctx: &mut Ctx<'_>) -> Step {
        let Some(stream) = self.backend.as_ref() else {
            return Step::Wait; // an event for a socket already replaced
        };
        // Writable without an error settles it without a system call: the
        // kernel reports a connecting socket neither writable nor, until it
        // fails, in error.
        let result = if event.is_writable() && !event.is_error() {
            Some(Ok(()))
        } else {
            connect_result(stream)
        };
        match result {
            None => Step::Wait,
            Some(Err(e)) => self.retry(e, ctx),
            Some(Ok(())) => {
                let _ = stream.set_nodelay(true);
                let backend = &self.pool.backends[self.backend_index];
                backend.record_connect_success();
                if let Phase::Connecting { since } = self.phase {
                    backend
                        .counters
                        .connected_in(ctx.now.saturating_duration_since(since));
                }
                self.connected_at = Some(ctx.now);
                if let Some(version) = self.pool.send_proxy {
                    self.queue_proxy_header(version, ctx);
                }
                self.phase = Phase::Streaming;
                self.last_active = ctx.now;
                let idle_due = ctx.now + self.idle_timeout;
                if idle_due < self.timer_at {
                    self.arm(idle_due, ctx);
                }
                // The client's edges that arrived while connecting were not
                // acted on. The backend's are all in this event, its first
                // since the connect: unless it says readable, a read would
                // only return WouldBlock (most servers wait for a request).
                let backend_readable = event.is_readable() || event.is_read_closed();
                self.pump(true, backend_readable, ctx)
            }
        }
    }

    /// Drops the failed backend and connects to another one, if any is left
    /// (or waits for one in the queue, if the others are full).
    fn retry(&mut self, error: io::Error, ctx: &mut Ctx<'_>) -> Step {
        let failed = &self.pool.backends[self.backend_index];
        debug!(
            "listener {} client {}: connect to backend {} failed: {error} (attempt {}/{})",
            self.peer.listener, self.peer.client, failed.addr, self.attempts, self.max_attempts
        );
        // The old socket closes (and leaves the poller) when dropped. The
        // hang-up its failed connect reported must not pass for a FIN of the
        // next backend: that would end the reply at its first short read.
        self.backend = None;
        self.down.src_closing = false;
        let index = std::mem::replace(&mut self.backend_index, NO_BACKEND);
        *ctx.slot_freed |= self.pool.release(index);
        self.pool.note_failure(index, &error);
        self.connect_failure = Some(ConnectFailure::of(&error));
        self.connect_or_queue(ctx)
    }

    /// Runs the requested flows, then decides what comes next.
    fn pump(&mut self, up: bool, down: bool, ctx: &mut Ctx<'_>) -> Step {
        let Some(backend) = self.backend.as_mut() else {
            return Step::Wait;
        };
        if up {
            let last = self.down.state == FlowState::Closed;
            let pumped = self
                .up
                .pump(&mut self.client, backend, &mut ctx.carriers(), last);
            match pumped {
                Pumped::ReadFailed => return Step::Close(End::ClientReset),
                Pumped::WriteFailed => return Step::Close(End::BackendReset),
                Pumped::Yield => self.yielded.up = true,
                Pumped::Moved | Pumped::Finished => {}
            }
        }
        if down {
            let last = self.up.state == FlowState::Closed;
            let pumped = self
                .down
                .pump(backend, &mut self.client, &mut ctx.carriers(), last);
            match pumped {
                Pumped::ReadFailed => return Step::Close(End::BackendReset),
                Pumped::WriteFailed => return Step::Close(End::ClientReset),
                Pumped::Yield => self.yielded.down = true,
                Pumped::Moved | Pumped::Finished => {}
            }
        }
        if self.up.moved || self.down.moved {
            self.up.moved = false;
            self.down.moved = false;
            self.last_active = ctx.now;
        }
        if self.up.state == FlowState::Closed && self.down.state == FlowState::Closed {
            Step::Close(End::Done)
        } else if self.yielded.up || self.yielded.down {
            Step::Yield
        } else {
            Step::Wait
        }
    }

    /// Closes both sockets, returns buffers, logs the line. Closing a socket
    /// removes it from the poller, so there is no separate deregistration.
    pub fn close(mut self, end: End, ctx: &mut Ctx<'_>) {
        // Propagate a reset as a reset, so the other peer cannot mistake a
        // truncated stream for a complete one.
        match (end, &self.backend) {
            (End::ClientReset, Some(backend)) => abort_on_close(backend),
            // Refused like a client refused at accept: with a reset.
            (End::BackendReset | End::Refused(_), _) => abort_on_close(&self.client),
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
        if self.pool.backends.get(self.backend_index).is_some() {
            *ctx.slot_freed |= self.pool.release(self.backend_index);
        }
        match end {
            // Never a session: counted, and warned about in `reject_proxy`
            // or by the reactor.
            End::ProxyHeader => return self.peer.counters.reject(Rejected::ProxyHeader),
            End::Refused(why) => return self.peer.counters.reject(why),
            _ => {}
        }
        log_close(&self.record(end, ctx.now), ctx);
    }

    /// The access-log record of this session ending now.
    fn record(&self, end: End, now: Instant) -> Record<'_> {
        Record {
            client: self.peer.client,
            listener: &self.peer.listener,
            pool: &self.pool.name,
            backend: self.pool.backends.get(self.backend_index).map(|b| b.addr),
            bytes_in: self.up.read,
            bytes_out: self.down.written,
            started: self.started,
            connected: self.connected_at,
            ended: now,
            attempts: self.attempts,
            end,
            stage: self.stage(),
            connect_failure: self.connect_failure,
        }
    }

    /// How far the session had come, for its termination code.
    fn stage(&self) -> Stage {
        let one_ended = self.up.state != FlowState::Open || self.down.state != FlowState::Open;
        match self.phase {
            Phase::ReadingProxy { .. } | Phase::Connecting { .. } => Stage::Connect,
            Phase::Queued { .. } => Stage::Queue,
            Phase::Streaming if one_ended => Stage::LastData,
            Phase::Streaming => Stage::Data,
        }
    }
}

/// Why `connect_next` started no connect.
struct NoConnect {
    /// How the last attempt it made failed, if it made one.
    failure: Option<ConnectFailure>,
    /// Some backend that could have taken the session is full: the session
    /// may wait for it.
    full: bool,
}

/// Picks backends until a non-blocking connect starts, taking a slot on the
/// backend first and registering the new socket under the session's
/// backend token. Counts each attempt; a backend found full (another
/// reactor took its last slot since the pick) is no attempt.
fn connect_next(
    pool: &Pool,
    peer: &Peer,
    tried: &mut Tried,
    attempts: &mut u32,
    max_attempts: u32,
    key: usize,
    ctx: &mut Ctx<'_>,
) -> Result<(TcpStream, usize), NoConnect> {
    let mut failure = None;
    let mut lost_races = 0;
    while *attempts < max_attempts && lost_races <= pool.backends.len() {
        let now_ms = crate::registry::millis(ctx.now);
        let mut pick = Pick::new(peer.client.ip(), tried, ctx.rng, now_ms);
        let Some(index) = pool.pick(&mut pick) else {
            break;
        };
        let backend = &pool.backends[index];
        if !backend.try_acquire() {
            lost_races += 1;
            continue;
        }
        tried.insert(index, pool.backends.len());
        *attempts += 1;
        let token = token::session(key, Side::Backend);
        let started = TcpStream::connect(backend.addr).and_then(|mut s| {
            ctx.poll
                .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
                .map(|()| s)
        });
        match started {
            Ok(stream) => {
                backend.counters.connections.fetch_add(1, Ordering::Relaxed);
                return Ok((stream, index));
            }
            Err(e) => {
                *ctx.slot_freed |= pool.release(index);
                debug!(
                    "listener {} client {}: connect to backend {} failed: {e} (attempt {}/{})",
                    peer.listener, peer.client, backend.addr, attempts, max_attempts
                );
                pool.note_failure(index, &e);
                failure = Some(ConnectFailure::of(&e));
            }
        }
    }
    let full = *attempts < max_attempts && pool.full_backends_left(tried);
    Err(NoConnect { failure, full })
}

/// Why no PROXY header could be read.
enum ProxyError {
    Parse(&'static str),
    Closed,
    Io(io::Error),
}

/// `None` while the handshake is still in progress, asked of the socket.
fn connect_result(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
    }
}

fn has_error(stream: &TcpStream) -> bool {
    !matches!(stream.take_error(), Ok(None))
}

fn abort_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Writes the access line of a closed session, if the access log is on.
fn log_close(record: &Record<'_>, ctx: &Ctx<'_>) {
    if ctx.settings.access_log {
        access_log::log(record);
    }
}

/// One direction of a session.
#[derive(Debug, Default)]
struct Flow {
    /// Held only while bytes are in flight.
    buf: Option<Buffer>,
    /// Held instead of `buf` while spliced bytes are in flight.
    pipe: Option<Pipe>,
    /// A read once filled the whole buffer: a bulk transfer, which
    /// `ZeroCopy::Auto` moves to a pipe.
    bulk: bool,
    state: FlowState,
    /// The source signalled FIN (an error ends the session before any
    /// read): a short read reaches its end.
    src_closing: bool,
    /// Bytes moved since the session last looked (activity for idle timer).
    moved: bool,
    read: u64,
    written: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FlowState {
    #[default]
    Open,
    /// The source sent FIN; flush what is buffered, then shut down writing.
    Eof,
    /// Write side of the destination is shut down; nothing more to do.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// Moved what it could; now waits for the source to become readable or
    /// the destination writable.
    Moved,
    /// Budget used up with the source possibly still readable.
    Yield,
    /// This direction has ended with a FIN passed on.
    Finished,
    ReadFailed,
    WriteFailed,
}

impl Flow {
    /// Moves bytes from `src` to `dst` until the source has nothing more,
    /// the destination cannot take more, or the budget is spent. Reads only
    /// into an empty buffer, so a session never holds more than one buffer
    /// per direction and a full destination stops reads from the source.
    /// Bytes go through a pipe instead (`pump_spliced`) once zero-copy
    /// applies and the buffer is empty, so that they stay in order.
    /// `last` says the other direction has ended already.
    fn pump(
        &mut self,
        src: &mut TcpStream,
        dst: &mut TcpStream,
        carriers: &mut Carriers<'_>,
        last: bool,
    ) -> Pumped {
        let mut budget = READ_BUDGET;
        if self.pipe.is_some() {
            if let Some(pumped) = self.pump_spliced(src, dst, carriers.pipes, last, budget) {
                return pumped;
            }
        }
        let mut src_drained = false;
        loop {
            if let Some(buf) = self.buf.as_mut() {
                while !buf.is_empty() {
                    let pending = buf.pending();
                    match dst.write(pending) {
                        Ok(0) => return Pumped::WriteFailed,
                        Ok(n) => {
                            let partial = n < pending.len();
                            buf.consume(n);
                            self.written += n as u64;
                            self.moved = true;
                            // A short write means the socket buffer is full;
                            // the kernel signals writable again when it drains.
                            if partial {
                                return Pumped::Moved;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pumped::Moved,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Pumped::WriteFailed,
                    }
                }
            }
            match self.state {
                FlowState::Open => {}
                FlowState::Eof => {
                    self.release(carriers.buffers);
                    return self.finish(dst, last);
                }
                FlowState::Closed => return Pumped::Finished,
            }
            if src_drained {
                self.release(carriers.buffers);
                return Pumped::Moved;
            }
            if budget == 0 {
                self.release(carriers.buffers);
                return Pumped::Yield;
            }
            if self.wants_pipe(carriers) {
                self.pipe = carriers.pipes.take();
                if self.pipe.is_some() {
                    self.release(carriers.buffers);
                    let spliced = self.pump_spliced(src, dst, carriers.pipes, last, budget);
                    if let Some(pumped) = spliced {
                        return pumped;
                    }
                }
            }
            budget -= 1;
            let buf = self.buf.get_or_insert_with(|| carriers.buffers.take());
            let space = buf.space();
            let wanted = space.len();
            match src.read(space) {
                Ok(0) => self.state = FlowState::Eof,
                Ok(n) => {
                    buf.filled(n);
                    self.read += n as u64;
                    self.moved = true;
                    self.bulk |= n == wanted;
                    // A short read emptied the socket: new data raises a new
                    // edge, so another read would only return WouldBlock.
                    // After a signalled FIN nothing more can arrive, so the
                    // short read has reached the end: the read that would
                    // return 0 is saved (one per connection that closes).
                    if n < wanted {
                        match self.src_closing {
                            true => self.state = FlowState::Eof,
                            false => src_drained = true,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => src_drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pumped::ReadFailed,
            }
        }
    }

    /// The pump through `self.pipe`, which must be held: drains the pipe
    /// into `dst`, refills it from `src`, until one of them would block.
    /// Unlike a buffer read, a short splice does not mean the source is
    /// drained (the pipe may have run out of slots), so it reads on until
    /// WouldBlock. `None` when the kernel cannot splice these sockets (the
    /// pipe was empty: the caller goes on with a buffer, losing nothing).
    fn pump_spliced(
        &mut self,
        src: &mut TcpStream,
        dst: &mut TcpStream,
        pipes: &mut PipePool,
        last: bool,
        mut budget: usize,
    ) -> Option<Pumped> {
        let pumped = loop {
            let pipe = self.pipe.as_mut()?;
            while !pipe.is_empty() {
                match pipe.drain(dst) {
                    Ok(n) => {
                        self.written += n as u64;
                        self.moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Some(Pumped::Moved);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Some(Pumped::WriteFailed),
                }
            }
            match self.state {
                FlowState::Open => {}
                FlowState::Eof => break self.finish(dst, last),
                FlowState::Closed => break Pumped::Finished,
            }
            if budget == 0 {
                break Pumped::Yield;
            }
            budget -= 1;
            match pipe.fill(src) {
                Ok(0) => self.state = FlowState::Eof,
                Ok(n) => {
                    self.read += n as u64;
                    self.moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Pumped::Moved,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if splice::is_unsupported(&e) => {
                    pipes.mark_unsupported();
                    self.release_pipe(pipes);
                    return None;
                }
                Err(_) => return Some(Pumped::ReadFailed),
            }
        };
        // The pipe is empty here: back to the pool until the next bytes.
        self.release_pipe(pipes);
        Some(pumped)
    }

    /// The source has ended and everything it sent is out: pass the FIN on.
    fn finish(&mut self, dst: &TcpStream, last: bool) -> Pumped {
        // When the other direction has ended too, the session closes next
        // and close() sends this FIN itself. ENOTCONN means the peer is
        // gone; the other direction finds out.
        if !last {
            let _ = dst.shutdown(Shutdown::Write);
        }
        self.state = FlowState::Closed;
        Pumped::Finished
    }

    /// Whether the next bytes should go through a pipe: zero-copy applies
    /// to this flow and a pipe could be had.
    fn wants_pipe(&self, carriers: &Carriers<'_>) -> bool {
        let wanted = match carriers.zero_copy {
            ZeroCopy::On => true,
            ZeroCopy::Auto => self.bulk,
            ZeroCopy::Off => false,
        };
        wanted && carriers.pipes.available()
    }

    /// Holding bytes the destination has not taken yet: the flow waits for
    /// the destination to become writable, not for the source.
    fn is_blocked(&self) -> bool {
        self.buf.as_ref().is_some_and(|b| !b.is_empty())
            || self.pipe.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// Returns the buffer and the pipe, dropping any bytes still in them.
    fn discard(&mut self, carriers: &mut Carriers<'_>) {
        if let Some(b) = self.buf.take() {
            carriers.buffers.put(b);
        }
        if let Some(p) = self.pipe.take() {
            carriers.pipes.put(p);
        }
    }

    /// Returns the buffer to the pool if it holds nothing.
    fn release(&mut self, buffers: &mut BufferPool) {
        if self.buf.as_ref().is_some_and(Buffer::is_empty) {
            if let Some(b) = self.buf.take() {
                buffers.put(b);
            }
        }
    }

    /// Returns the pipe to the pool if it holds nothing.
    fn release_pipe(&mut self, pipes: &mut PipePool) {
        if self.pipe.as_ref().is_some_and(Pipe::is_empty) {
            if let Some(p) = self.pipe.take() {
                pipes.put(p);
            }
        }
    }
}
