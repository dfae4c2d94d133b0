//! The admin HTTP/1.1 server: one thread, one mio `Poll`, one request per
//! connection.
//!
//! Owns the `admin` thread, its listening socket, the slab of connections
//! and each connection's buffers and deadline. It touches nothing shared:
//! what a response says comes from the [`Handler`], called on this thread
//! with a complete request only (framing lives in `http`). Clients are
//! untrusted, so everything is bounded: the request head and body, the
//! number of connections (a client beyond it is answered 503 and closed),
//! and time (a request must arrive within `request_timeout` of the accept,
//! its response be taken within `response_timeout`). Every response closes
//! its connection; the socket is then drained for a moment (lingering
//! close) so that a client still sending reads the error rather than a
//! reset. The listening socket is on the upgrade list (`upgrade::Listing`)
//! while the server runs, and may be one the previous process handed over.

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::http::{encode, Fill, Handler, Incoming, Response};
use crate::limits;
use crate::upgrade::{Kind, Listing};

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection `key` polls as `Token(FIRST_CONN + key)`.
const FIRST_CONN: usize = 2;
const BACKLOG: i32 = 128;
const ACCEPT_BUDGET: usize = 64;
/// Pause after the process ran out of descriptors or memory on accept, so
/// a full backlog does not spin this thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long, and how many bytes, a closing connection is drained for.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
const STOP_WAIT: Duration = Duration::from_secs(1);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Limits of the admin server; the defaults suit a status page and a
/// handful of operators.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections held at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// From accept to a complete request; then 408.
    pub request_timeout: Duration,
    /// For the client to take the whole response; then the connection closes.
    pub response_timeout: Duration,
    /// Request line and header fields; more is answered 431.
    pub max_head: usize,
    /// Request body (Content-Length); more is answered 413.
    pub max_body: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 64,
            request_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            max_head: 8 * 1024,
            max_body: 64 * 1024,
        }
    }
}

/// Why the admin server did not start.
#[derive(Debug)]
pub enum AdminError {
    /// The admin address could not be listened on.
    Bind {
        /// The configured admin address.
        addr: SocketAddr,
        /// What bind or listen said (in use, not local, permission).
        error: io::Error,
    },
    /// The poller or the thread could not be set up.
    Start(io::Error),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Bind { addr, error } => {
                write!(f, "admin: cannot listen on {addr}: {error}")
            }
            AdminError::Start(error) => write!(f, "admin: cannot start the server: {error}"),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::Bind { error, .. } | AdminError::Start(error) => Some(error),
        }
    }
}

/// The running server; [`stop`](AdminServer::stop) or dropping it ends the
/// thread.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Waker,
    /// Disconnected once the thread has ended, however it ended.
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    /// Taken off before the socket closes.
    listing: Option<Listing>,
}

impl AdminServer {
    /// Binds `addr` (SO_REUSEADDR, so a restart need not wait out
    /// TIME_WAIT) and starts the thread named "admin" with default limits.
    pub fn start(addr: SocketAddr, handler: Handler) -> Result<AdminServer, AdminError> {
        AdminServer::start_with(addr, handler, ServerOptions::default())
    }

    /// [`start`](AdminServer::start) with the given limits.
    pub fn start_with(
        addr: SocketAddr,
        handler: Handler,
        options: ServerOptions,
    ) -> Result<AdminServer, AdminError> {
        let listener = bind(addr).map_err(|error| AdminError::Bind { addr, error })?;
        AdminServer::serve(listener, handler, options)
    }

    /// Serves on a listening socket the previous process handed over.
    pub fn adopt(fd: OwnedFd, handler: Handler) -> Result<AdminServer, AdminError> {
        let socket = Socket::from(fd);
        socket.set_nonblocking(true).map_err(AdminError::Start)?;
        let listener = TcpListener::from_std(socket.into());
        AdminServer::serve(listener, handler, ServerOptions::default())
    }

    fn serve(
        mut listener: TcpListener,
        handler: Handler,
        options: ServerOptions,
    ) -> Result<AdminServer, AdminError> {
        let addr = listener.local_addr().map_err(AdminError::Start)?;
        let listing = Listing::new(Kind::Admin, addr, listener.as_raw_fd());
        let poll = Poll::new().map_err(AdminError::Start)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(AdminError::Start)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(AdminError::Start)?;
        let stop = Arc::new(AtomicBool::new(false));
        let busy = encode(Response::text(503, "too many admin connections\n"), false);
        let server = Server {
            poll,
            listener,
            conns: Slab::with_capacity(options.max_connections),
            handler,
            options,
            stop: Arc::clone(&stop),
            busy,
            accept_more: false,
            paused_until: None,
            warned_at: None,
        };
        let (done_tx, done) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                let _done = done_tx;
                server.run();
            })
            .map_err(AdminError::Start)?;
        Ok(AdminServer {
            addr,
            stop,
            waker,
            done,
            thread: Some(thread),
            listing: Some(listing),
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread, closing every connection, and joins it; waits at
    /// most a second, after which a thread stuck in a handler is left behind.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.listing = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            warn!("admin: cannot wake the server thread to stop it: {e}");
        }
        match self.done.recv_timeout(STOP_WAIT) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                warn!("admin: server thread did not stop within {STOP_WAIT:?}; leaving it")
            }
            _ => {
                if thread.join().is_err() {
                    error!("admin: server thread panicked");
                }
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The event loop's state, owned by the admin thread.
struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    handler: Handler,
    options: ServerOptions,
    stop: Arc<AtomicBool>,
    /// The 503 sent to a client beyond `max_connections`, encoded once.
    busy: Vec<u8>,
    /// The accept budget ran out with clients possibly still queued.
    accept_more: bool,
    paused_until: Option<Instant>,
    warned_at: Option<Instant>,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            self.expire(now);
            if self.accept_more || self.paused_until.is_some_and(|t| t <= now) {
                self.accept(now);
            }
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout(now)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("admin: poll failed, stopping the admin server: {e}");
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {} // the stop flag is read every turn
                    LISTENER => self.accept(now),
                    Token(t) => self.on_ready(t - FIRST_CONN, now),
                }
            }
        }
        debug!("admin: stopped, closing {} connections", self.conns.len());
    }

    fn accept(&mut self, now: Instant) {
        self.accept_more = false;
        if self.paused_until.is_some_and(|t| t > now) {
            return;
        }
        self.paused_until = None;
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, peer)) => self.open(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if limits::is_local_exhaustion(&e) => {
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    if self
                        .warned_at
                        .is_none_or(|t| now >= t + Duration::from_secs(1))
                    {
                        self.warned_at = Some(now);
                        warn!("admin: cannot accept: {e}; pausing accepts");
                    }
                    return;
                }
                // The client gave up before we accepted it.
                Err(e) => debug!("admin: accept failed: {e}"),
            }
        }
        self.accept_more = true;
    }

    fn open(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if self.conns.len() >= self.options.max_connections {
            // Accepted anyway so the backlog does not fill with clients that
            // would time out there. One write to a fresh socket's empty send
            // buffer is taken whole or not at all in practice; either way the
            // socket closes now.
            let _ = stream.write(&self.busy);
            debug!(
                "admin: {peer}: turned away, {} connections open",
                self.conns.len()
            );
            return;
        }
        let entry = self.conns.vacant_entry();
        let token = Token(FIRST_CONN + entry.key());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            debug!("admin: {peer}: cannot register: {e}");
            return;
        }
        entry.insert(Conn {
            stream,
            peer,
            deadline: now + self.options.request_timeout,
            phase: Phase::Reading(Incoming::default()),
        });
    }

    fn on_ready(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return; // closed earlier in this turn
        };
        if !conn.on_ready(&self.handler, &self.options, now) {
            self.conns.remove(key);
        }
    }

    fn expire(&mut self, now: Instant) {
        let (handler, options) = (&self.handler, &self.options);
        self.conns
            .retain(|_, conn| conn.deadline > now || conn.on_timeout(handler, options, now));
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.accept_more {
            return Some(Duration::ZERO);
        }
        self.conns
            .iter()
            .map(|(_, c)| c.deadline)
            .chain(self.paused_until)
            .min()
            .map(|t| t.saturating_duration_since(now))
    }
}

/// One client connection. Its phases only move forward: read the request,
/// write the response, drain until the client closes.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// When the current phase has run out of time.
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    Reading(Incoming),
    Writing {
        out: Vec<u8>,
        sent: usize,
    },
    /// Our side is shut down; reading and discarding until the client's.
    Lingering {
        drained: usize,
    },
}

/// What one step of a connection's work came to.
enum Step {
    /// Nothing more until the next event.
    Wait,
    Again,
    Close,
    Respond(Vec<u8>),
    Flushed,
}

impl Conn {
    /// Makes all the progress the socket allows (events are edge-triggered,
    /// so stopping short of `WouldBlock` could stall the connection); false
    /// when the connection is done with.
    fn on_ready(&mut self, handler: &Handler, options: &ServerOptions, now: Instant) -> bool {
        loop {
            let step = match &mut self.phase {
                Phase::Reading(incoming) => match incoming.fill(&mut self.stream, options) {
                    Ok(Fill::Partial) => Step::Again,
                    Ok(Fill::Continue) => send_continue(&mut self.stream),
                    Ok(Fill::Complete) => Step::Respond(incoming.respond(self.peer, handler)),
                    Ok(Fill::Reject(status, why)) => {
                        debug!("admin: {}: {status} {why}", self.peer);
                        Step::Respond(encode(Response::text(status, format!("{why}\n")), false))
                    }
                    Ok(Fill::Eof) if incoming.is_empty() => Step::Close,
                    // A client that half-closed may still read why.
                    Ok(Fill::Eof) => {
                        Step::Respond(encode(Response::text(400, "incomplete request\n"), false))
                    }
                    Err(e) => io_step(e, self.peer),
                },
                Phase::Writing { out, sent } => match self.stream.write(&out[*sent..]) {
                    Ok(0) => Step::Close,
                    Ok(n) => {
                        *sent += n;
                        debug_assert!(*sent <= out.len());
                        if *sent >= out.len() {
                            Step::Flushed
                        } else {
                            Step::Again
                        }
                    }
                    Err(e) => io_step(e, self.peer),
                },
                Phase::Lingering { drained } => {
                    let mut sink = [0u8; 4096];
                    match self.stream.read(&mut sink) {
                        Ok(0) => Step::Close,
                        Ok(n) if *drained + n > LINGER_BYTES => Step::Close,
                        Ok(n) => {
                            *drained += n;
                            Step::Again
                        }
                        Err(e) => io_step(e, self.peer),
                    }
                }
            };
            match step {
                Step::Wait => return true,
                Step::Again => {}
                Step::Close => return false,
                Step::Respond(out) => {
                    self.phase = Phase::Writing { out, sent: 0 };
                    self.deadline = now + options.response_timeout;
                }
                Step::Flushed => {
                    // A FIN after the response, but reading on: closing with
                    // unread bytes would reset the connection, and the client
                    // could lose the response.
                    if self.stream.shutdown(Shutdown::Write).is_err() {
                        return false;
                    }
                    self.phase = Phase::Lingering { drained: 0 };
                    self.deadline = now + LINGER;
                }
            }
        }
    }

    /// The deadline passed; false when the connection is done with.
    fn on_timeout(&mut self, handler: &Handler, options: &ServerOptions, now: Instant) -> bool {
        match self.phase {
            Phase::Reading(_) => {
                debug!("admin: {}: no complete request in time", self.peer);
                let out = encode(Response::text(408, "request timed out\n"), false);
                self.phase = Phase::Writing { out, sent: 0 };
                self.deadline = now + options.response_timeout;
                self.on_ready(handler, options, now)
            }
            Phase::Writing { .. } => {
                debug!("admin: {}: response not taken in time", self.peer);
                false
            }
            Phase::Lingering { .. } => false,
        }
    }
}

fn io_step(e: io::Error, peer: SocketAddr) -> Step {
    match e.kind() {
        io::ErrorKind::WouldBlock => Step::Wait,
        io::ErrorKind::Interrupted => Step::Again,
        _ => {
            debug!("admin: {peer}: {e}");
            Step::Close
        }
    }
}

/// Asks for the announced body. Nothing was written before on this socket,
/// so its send buffer takes the whole line; a partial write cannot be
/// resumed in this phase and ends the connection.
fn send_continue(stream: &mut TcpStream) -> Step {
    match stream.write(CONTINUE) {
        Ok(n) if n == CONTINUE.len() => Step::Again,
        _ => Step::Close,
    }
}
