//! The admin HTTP/1.1 server: one thread, one mio `Poll`, one request per
//! connection.
//!
//! Owns the `admin` thread, its listening socket, the slab of connections
//! and each connection's buffers and deadline. It touches nothing shared:
//! what a response says comes from the [`Handler`], called on this thread
//! with a complete request only. Clients are untrusted, so everything is
//! bounded: the request head and body, the number of connections (a client
//! beyond it is answered 503 and closed), and time (a request must arrive
//! within `request_timeout` of the accept, its response be taken within
//! `response_timeout`). Every response closes its connection; the socket is
//! then drained for a moment (lingering close) so that a client still
//! sending reads the error rather than a reset.

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::limits;

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection `key` polls as `Token(FIRST_CONN + key)`.
const FIRST_CONN: usize = 2;
const BACKLOG: i32 = 128;
/// Header fields a request may carry; more is answered 431.
const MAX_HEADERS: usize = 64;
/// While the head is this short it is parsed after every read, so garbage
/// is answered at once; beyond, only once a blank line has arrived, so a
/// client trickling bytes cannot make parsing cost quadratic.
const EARLY_PARSE: usize = 1024;
/// The first read buffer; it doubles up to the limit as a request needs.
const FIRST_READ: usize = 1024;
const ACCEPT_BUDGET: usize = 64;
/// Pause after the process ran out of descriptors or memory on accept, so
/// a full backlog does not spin this thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long, and how many bytes, a closing connection is drained for.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
const STOP_WAIT: Duration = Duration::from_secs(1);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A complete request, as the handler sees it. It borrows the connection's
/// buffer; nothing in it is decoded (no percent-decoding of the path).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target up to `?`.
    pub path: &'a str,
    /// The request target after `?`; empty without one.
    pub query: &'a str,
    /// Header fields in the order received, names as sent.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
    pub peer: SocketAddr,
}

impl<'a> Request<'a> {
    /// The first field named `name` (any case), trimmed, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let (_, value) = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value)
            .ok()
            .map(|v| v.trim_matches([' ', '\t']))
    }
}

/// What the handler answers. The server adds Content-Length,
/// `Cache-Control: no-store` and `Connection: close`, and drops extra
/// headers that would contradict them or are not valid field lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "application/json", body)
    }

    pub fn html(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Called on the admin thread for every complete request; it must not
/// block for long, as every other admin client waits meanwhile.
pub type Handler = Arc<dyn Fn(&Request<'_>) -> Response + Send + Sync>;

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

#[derive(Debug)]
pub enum AdminError {
    /// The admin address could not be listened on.
    Bind { addr: SocketAddr, error: io::Error },
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
        let mut listener = bind(addr).map_err(|error| AdminError::Bind { addr, error })?;
        let addr = listener.local_addr().map_err(AdminError::Start)?;
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
                    Ok(Fill::Eof) if incoming.filled == 0 => Step::Close,
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

/// A request as it arrives: the bytes read so far and, once the head has
/// been parsed, where the body ends. Reads from any `Read`, so tests can
/// drive it without sockets.
#[derive(Debug, Default)]
struct Incoming {
    /// Zeroed up to its length when grown; `filled` bytes are the request.
    buf: Vec<u8>,
    filled: usize,
    /// After empty lines before the request line, which are ignored.
    start: usize,
    /// The blank line ending the head is searched for from here.
    scanned: usize,
    framed: Option<Framed>,
}

#[derive(Debug, Clone, Copy)]
struct Framed {
    head_end: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Partial,
    /// The head is in and the client waits for 100 Continue to send the body.
    Continue,
    Complete,
    Reject(u16, &'static str),
    Eof,
}

/// A 4xx/5xx answer to a request the handler never sees.
type Reject = (u16, &'static str);

const HEAD_TOO_LARGE: Reject = (431, "request header fields too large");

impl Incoming {
    /// Reads once, never past what the request may still use.
    fn fill(&mut self, src: &mut impl Read, options: &ServerOptions) -> io::Result<Fill> {
        let limit = self.framed.map_or(options.max_head, |f| f.end);
        if self.filled >= limit {
            // Only with a zero head limit: a read into no room would look
            // like the end of the stream.
            return Ok(Fill::Reject(HEAD_TOO_LARGE.0, HEAD_TOO_LARGE.1));
        }
        if self.filled == self.buf.len() {
            let grown = limit.min(self.buf.len().max(FIRST_READ / 2) * 2);
            self.buf.reserve_exact(grown - self.buf.len());
            self.buf.resize(grown, 0);
        }
        let room = limit.min(self.buf.len());
        let n = src.read(&mut self.buf[self.filled..room])?;
        if n == 0 {
            return Ok(Fill::Eof);
        }
        self.filled += n;
        Ok(self.advance(options))
    }

    fn advance(&mut self, options: &ServerOptions) -> Fill {
        if let Some(f) = self.framed {
            return if self.filled >= f.end {
                Fill::Complete
            } else {
                Fill::Partial
            };
        }
        while self.start < self.filled && matches!(self.buf[self.start], b'\r' | b'\n') {
            self.start += 1;
        }
        let blank = self.blank_line_arrived();
        let head = &self.buf[self.start..self.filled];
        let parsed = if blank || head.len() <= EARLY_PARSE {
            parse_head(head, options)
        } else {
            Ok(None)
        };
        match parsed {
            Err((status, why)) => Fill::Reject(status, why),
            Ok(Some((len, framing))) => {
                let head_end = self.start + len;
                let end = head_end + framing.body;
                self.framed = Some(Framed { head_end, end });
                if self.filled >= end {
                    Fill::Complete
                } else if framing.expect_continue {
                    Fill::Continue
                } else {
                    Fill::Partial
                }
            }
            // The first line was not empty, so a blank line ends the head.
            Ok(None) if blank => Fill::Reject(400, "malformed request head"),
            Ok(None) if self.filled >= options.max_head => {
                Fill::Reject(HEAD_TOO_LARGE.0, HEAD_TOO_LARGE.1)
            }
            Ok(None) => Fill::Partial,
        }
    }

    /// Whether the bytes read since the last call completed a blank line
    /// (`\n\n` or `\n\r\n`) after the request line.
    fn blank_line_arrived(&mut self) -> bool {
        let from = self.scanned.saturating_sub(2).max(self.start);
        self.scanned = self.filled;
        let window = &self.buf[from..self.filled];
        window
            .windows(2)
            .enumerate()
            .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && window.get(i + 2) == Some(&b'\n')))
    }

    /// Calls the handler with the complete request; returns the encoded
    /// response.
    fn respond(&self, peer: SocketAddr, handler: &Handler) -> Vec<u8> {
        let bad = || encode(Response::text(400, "malformed request\n"), false);
        let Some(f) = self.framed else {
            return bad();
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        // Parsed once before; parsing again is cheaper than keeping offsets.
        let (Ok(httparse::Status::Complete(_)), Some(method), Some(target)) = (
            req.parse(&self.buf[self.start..f.head_end]),
            req.method,
            req.path,
        ) else {
            return bad();
        };
        let mut fields: [(&str, &[u8]); MAX_HEADERS] = [("", &[]); MAX_HEADERS];
        for (field, h) in fields.iter_mut().zip(req.headers.iter()) {
            *field = (h.name, h.value);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method,
            path,
            query,
            headers: &fields[..req.headers.len()],
            body: &self.buf[f.head_end..f.end],
            peer,
        };
        let response = handler(&request);
        debug!("admin: {peer}: {method} {path} {}", response.status);
        encode(response, method == "HEAD")
    }
}

/// How the body of a parsed head is framed.
struct Framing {
    body: usize,
    expect_continue: bool,
}

/// `Ok(None)` while the head is incomplete.
fn parse_head(head: &[u8], options: &ServerOptions) -> Result<Option<(usize, Framing)>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some((len, framing(&req, options)?))),
        Err(e) => Err(parse_error(e, head)),
    }
}

fn parse_error(e: httparse::Error, head: &[u8]) -> Reject {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => (431, "too many header fields"),
        // httparse says Version for any bad third word; only a real
        // HTTP version is worth a 505.
        E::Version if head.windows(6).any(|w| w == b" HTTP/") => {
            (505, "only HTTP/1.0 and HTTP/1.1 are served")
        }
        E::HeaderName => (400, "invalid header name"),
        E::HeaderValue => (400, "invalid header value"),
        E::NewLine => (400, "invalid line ending"),
        _ => (400, "malformed request line"),
    }
}

fn framing(req: &httparse::Request<'_, '_>, options: &ServerOptions) -> Result<Framing, Reject> {
    let http11 = req.version == Some(1);
    let mut length: Option<usize> = None;
    let mut hosts = 0;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = trim(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map_or(&[][..], trim);
            return Err(if last.eq_ignore_ascii_case(b"chunked") {
                (
                    411,
                    "chunked request bodies are not supported; send Content-Length",
                )
            } else {
                (501, "unsupported Transfer-Encoding")
            });
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value, options.max_body)?;
            if length.is_some_and(|l| l != n) {
                return Err((400, "conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err((417, "unsupported Expect"));
            }
            expect_continue = http11;
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one before.
    if hosts > 1 || (http11 && hosts == 0) {
        return Err((400, "an HTTP/1.1 request needs exactly one Host header"));
    }
    let body = length.unwrap_or(0);
    Ok(Framing {
        body,
        expect_continue: expect_continue && body > 0,
    })
}

/// Digits only (`usize::from_str` would take a sign); saturates, so any
/// huge value is "too large", not "malformed".
fn content_length(value: &[u8], max: usize) -> Result<usize, Reject> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err((400, "invalid Content-Length"));
    }
    let n = value.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    if n > max {
        return Err((413, "request body too large"));
    }
    Ok(n)
}

fn trim(v: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_space(b)).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// Serializes a response; `head_only` for HEAD requests, whose answer
/// says how long the body would be without sending it.
fn encode(response: Response, head_only: bool) -> Vec<u8> {
    let mut response = response;
    // 1xx would promise a second response; only final statuses are sent.
    if !(200..=599).contains(&response.status) {
        warn!(
            "admin: handler answered status {}; sending 500",
            response.status
        );
        response = Response::text(500, "invalid status from the admin handler\n");
    }
    let content_type = if is_field_value(response.content_type) {
        response.content_type
    } else {
        warn!(
            "admin: invalid Content-Type {:?} dropped",
            response.content_type
        );
        "application/octet-stream"
    };
    let status = response.status;
    let mut head = String::with_capacity(192);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        reason(status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        if is_token(name) && !is_framing(name) && is_field_value(value) {
            let _ = write!(head, "{name}: {value}\r\n");
        } else {
            warn!("admin: response header {name:?} dropped");
        }
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Fields the server sets itself, which a handler must not contradict.
fn is_framing(name: &str) -> bool {
    [
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "cache-control",
    ]
    .iter()
    .any(|f| name.eq_ignore_ascii_case(f))
}

/// No control characters but tab: a value with CR or LF would let input
/// echoed into a header add fields of its own.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
