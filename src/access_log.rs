//! The access log: one line per closed connection, like HAProxy's tcplog.
//!
//! Owns what a line says: the [`Record`] a session fills when it closes,
//! why it ended ([`End`], which the session reports and the line names), the
//! two-character termination code ([`term`], HAProxy's "session state at
//! disconnection") and the `key=value` text of the line. Where lines go and
//! when they are written (stderr or a file, batched per reactor turn) is
//! `logging`'s business; this module only formats.
//!
//! A line, after the timestamp of the close:
//!
//! ```text
//! conn client=IP:PORT listener=NAME pool=NAME [route=NAME|- sni=NAME|-]
//!      backend=IP:PORT|- bytes_in=N bytes_out=N connect_ms=N|-
//!      duration_ms=N attempts=N end=REASON term=XX
//! ```
//!
//! `route` and `sni` are written only by listeners with routes, and
//! `backup=1` after `backend` only when the backend is a backup.
//!
//! With `global.access_log_format: "json"` ([`set_format`], which a reload
//! calls too) the same fields are one JSON object per line, the time first
//! and inside it ([`Record::write_json`]).

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::config::AccessLogFormat;
use crate::limits;
use crate::logging;
use crate::metrics::counters::Rejected;

/// How a session ended, as written in the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished with a FIN.
    Done,
    /// The client's socket failed: a reset, or a read from or write to it
    /// failed. The backend connection is then reset too.
    ClientReset,
    /// The backend's socket failed the same way; the client is then reset.
    BackendReset,
    /// Connected, but no byte moved either way for the idle timeout.
    IdleTimeout,
    /// No backend could be connected to.
    NoBackend,
    /// Still open when the drain deadline passed.
    Shutdown,
    /// Still open at the drain deadline after a reload removed its backend
    /// or its listener.
    Removed,
    /// No valid PROXY header in time (rejected, not logged as a session).
    ProxyHeader,
    /// Every backend was full and the pool's queue too (or it has none).
    QueueFull,
    /// Waited in the queue for its whole timeout.
    QueueTimeout,
    /// Refused by the listener's allow/deny or per-IP limits once the
    /// PROXY header named the client (counted, not logged as a session).
    Refused(Rejected),
}

impl End {
    /// The `end=` value of the access line, in kebab case (`client-reset`).
    pub fn as_str(self) -> &'static str {
        match self {
            End::Done => "done",
            End::ClientReset => "client-reset",
            End::BackendReset => "backend-reset",
            End::IdleTimeout => "idle-timeout",
            End::NoBackend => "no-backend",
            End::Shutdown => "shutdown",
            End::Removed => "removed",
            End::ProxyHeader => "proxy-header",
            End::QueueFull => "queue-full",
            End::QueueTimeout => "queue-timeout",
            End::Refused(_) => "refused",
        }
    }
}

/// How far a session had come when it ended: the second character of the
/// termination code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting in the pool's queue for a backend slot (`Q`).
    Queue,
    /// Still connecting to a backend (`C`).
    Connect,
    /// Connected, both directions open (`D`).
    Data,
    /// Connected, one direction already ended with a FIN (`L`, last data).
    LastData,
}

/// Why a connect attempt failed, for the first character of `xC` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Refused, reset or unreachable: the backend's side (`S`).
    Refused,
    /// No answer within the connect timeout (`s`).
    TimedOut,
    /// This host ran out of descriptors, memory or local ports (`R`).
    Local,
}

impl ConnectFailure {
    /// Classifies a failed connect's error: local exhaustion first, then a
    /// timeout; anything else counts against the backend.
    pub fn of(error: &io::Error) -> ConnectFailure {
        if limits::is_local_exhaustion(error) {
            ConnectFailure::Local
        } else if error.kind() == io::ErrorKind::TimedOut {
            ConnectFailure::TimedOut
        } else {
            ConnectFailure::Refused
        }
    }
}

/// How a connection was routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteTaken<'a> {
    /// The route taken; `None` for the listener's default pool.
    pub name: Option<&'a str>,
    /// The server name in its ClientHello.
    pub sni: Option<&'a str>,
}

/// Everything the access line says about one connection.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The client's address: the peer of the accepted socket, or the source
    /// a PROXY header named.
    pub client: SocketAddr,
    /// Name of the listener that accepted it.
    pub listener: &'a str,
    /// Name of the pool it was sent to (the route's pool on listeners with
    /// routes).
    pub pool: &'a str,
    /// The backend it was connected (or last connecting) to; `None` when
    /// no backend could be connected to.
    pub backend: Option<SocketAddr>,
    /// Bytes read from the client (toward the backend).
    pub bytes_in: u64,
    /// Bytes written to the client (from the backend).
    pub bytes_out: u64,
    /// Accepted.
    pub started: Instant,
    /// The backend connection was established; `None` if it never was.
    pub connected: Option<Instant>,
    /// Closed.
    pub ended: Instant,
    /// Backends tried.
    pub attempts: u32,
    /// Why it ended: the `end=` field and the first character of `term=`.
    pub end: End,
    /// How far it had come: the second character of `term=`.
    pub stage: Stage,
    /// How the last failed connect attempt failed, if one did.
    pub connect_failure: Option<ConnectFailure>,
    /// The backend is one of its pool's backups.
    pub backup: bool,
    /// How a listener with routes routed it; `None` on other listeners.
    pub route: Option<RouteTaken<'a>>,
}

/// A termination code such as `--`, `CD` or `sC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term([u8; 2]);

impl Term {
    /// The two characters, as written after `term=`.
    pub fn as_str(&self) -> &str {
        // Built only from the ASCII letters in `term`.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The termination code: the first character says what ended the session
/// (`C`/`S` client/server abort, `c` client-side timeout, `s` server-side
/// connect timeout, `R` local resources, `K` killed at a drain deadline,
/// `-` normal end; `P` refused by the proxy's own limits), the second where
/// it was (`Q` queued, `C` connecting, `D` data, `L` last data, `-` normal
/// end). `failure` matters only for `NoBackend`.
pub fn term(end: End, stage: Stage, failure: Option<ConnectFailure>) -> Term {
    let phase = match stage {
        Stage::Queue => b'Q',
        Stage::Connect => b'C',
        Stage::Data => b'D',
        Stage::LastData => b'L',
    };
    let cause = match end {
        End::Done => return Term(*b"--"),
        End::ClientReset => b'C',
        End::BackendReset => b'S',
        // One idle timeout covers both directions; HAProxy reports an
        // expired `timeout client` as `c`.
        End::IdleTimeout => b'c',
        // The cause is the last attempt's failure. A pool with no backend
        // left to try at all is `SC`, as HAProxy logs `<NOSRV>`.
        End::NoBackend => {
            let cause = match failure {
                None | Some(ConnectFailure::Refused) => b'S',
                Some(ConnectFailure::TimedOut) => b's',
                Some(ConnectFailure::Local) => b'R',
            };
            return Term([cause, b'C']);
        }
        End::Shutdown | End::Removed => b'K',
        // Never written (such clients are counted, not logged); HAProxy's
        // code for a connection refused while waiting for its request.
        End::ProxyHeader => return Term(*b"PR"),
        // Never written either: refused by allow/deny or a per-IP limit
        // once the PROXY header named the client; HAProxy's `PR` for a
        // connection a rule blocked.
        End::Refused(_) => return Term(*b"PR"),
        // Every backend full and no room to wait: HAProxy's `PC`, "the
        // proxy refused the connection because of a limit".
        End::QueueFull => return Term(*b"PC"),
        // HAProxy logs an expired `timeout queue` as `sQ`.
        End::QueueTimeout => return Term(*b"sQ"),
    };
    Term([cause, phase])
}

impl Record<'_> {
    /// This connection's termination code, from `end`, `stage` and
    /// `connect_failure`.
    pub fn term(&self) -> Term {
        term(self.end, self.stage, self.connect_failure)
    }

    /// Milliseconds from accept to the backend connection, if it was made.
    fn connect_ms(&self) -> Option<u128> {
        let at = self.connected?;
        Some(at.saturating_duration_since(self.started).as_millis())
    }

    /// Appends the line (without timestamp and newline) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let duration_ms = self
            .ended
            .saturating_duration_since(self.started)
            .as_millis();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "conn client={} listener=", self.client);
        push_name(out, self.listener);
        out.extend_from_slice(b" pool=");
        push_name(out, self.pool);
        if let Some(route) = &self.route {
            out.extend_from_slice(b" route=");
            push_name(out, route.name.unwrap_or("-"));
            out.extend_from_slice(b" sni=");
            push_name(out, route.sni.unwrap_or("-"));
        }
        let _ = match self.backend {
            Some(backend) => write!(out, " backend={backend}"),
            None => out.write_all(b" backend=-"),
        };
        if self.backup {
            out.extend_from_slice(b" backup=1");
        }
        let _ = write!(
            out,
            " bytes_in={} bytes_out={} connect_ms=",
            self.bytes_in, self.bytes_out
        );
        push_number_or(out, self.connect_ms(), b"-");
        let _ = write!(
            out,
            " duration_ms={duration_ms} attempts={} end={} term={}",
            self.attempts,
            self.end.as_str(),
            self.term()
        );
    }
}

/// Whether lines are JSON; one relaxed load per line.
static JSON: AtomicBool = AtomicBool::new(false);

/// From now on lines are written in `format`; at start and on reload.
pub fn set_format(format: AccessLogFormat) {
    JSON.store(format == AccessLogFormat::Json, Ordering::Relaxed);
}

/// Writes `record`'s line to the access log's destination.
pub fn log(record: &Record<'_>) {
    if JSON.load(Ordering::Relaxed) {
        logging::access(false, |out| record.write_json(out, SystemTime::now()));
    } else {
        logging::access(true, |out| record.write_to(out));
    }
}

/// Writes a UDP flow's line to the access log's destination.
pub fn log_flow(flow: &FlowRecord<'_>) {
    if JSON.load(Ordering::Relaxed) {
        logging::access(false, |out| flow.write_json(out, SystemTime::now()));
    } else {
        logging::access(true, |out| flow.write_to(out));
    }
}

impl Record<'_> {
    /// Appends the line as one JSON object (without newline) to `out`:
    /// the fields of [`Record::write_to`] under the same names, `time`
    /// (`at`, RFC 3339) first, the client's and backend's port apart from
    /// the address, numbers as numbers, `null` for a `-`, `backup` always.
    pub fn write_json(&self, out: &mut Vec<u8>, at: SystemTime) {
        json_start(out, at, "conn", self.client, self.listener);
        out.extend_from_slice(b",\"pool\":");
        push_json(out, self.pool);
        if let Some(route) = &self.route {
            out.extend_from_slice(b",\"route\":");
            push_json_or_null(out, route.name);
            out.extend_from_slice(b",\"sni\":");
            push_json_or_null(out, route.sni);
        }
        json_backend(out, self.backend);
        let _ = write!(
            out,
            ",\"backup\":{},\"bytes_in\":{},\"bytes_out\":{},\"connect_ms\":",
            self.backup, self.bytes_in, self.bytes_out
        );
        push_number_or(out, self.connect_ms(), b"null");
        let _ = write!(
            out,
            ",\"duration_ms\":{},\"attempts\":{},\"end\":\"{}\",\"term\":\"{}\"}}",
            self.ended
                .saturating_duration_since(self.started)
                .as_millis(),
            self.attempts,
            self.end.as_str(),
            self.term()
        );
    }
}

/// What the access line of a UDP flow says.
#[derive(Debug, Clone)]
pub struct FlowRecord<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The listener's name.
    pub listener: &'a str,
    /// The backend the flow went to, if any.
    pub backend: Option<SocketAddr>,
    /// Datagrams from the client.
    pub datagrams_in: u64,
    /// Datagrams to the client.
    pub datagrams_out: u64,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// From the flow's first datagram to its end.
    pub duration: Duration,
    /// Why it ended, as the `end=` value.
    pub end: &'a str,
}

impl FlowRecord<'_> {
    /// Appends the `flow client=...` line (no timestamp, no newline).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "flow client={} listener=", self.client);
        push_name(out, self.listener);
        let _ = match self.backend {
            Some(b) => write!(out, " backend={b}"),
            None => out.write_all(b" backend=-"),
        };
        for (key, value) in self.counts() {
            let _ = write!(out, " {key}={value}");
        }
        let _ = write!(out, " end={}", self.end);
    }

    /// The same fields as one JSON object, like [`Record::write_json`].
    pub fn write_json(&self, out: &mut Vec<u8>, at: SystemTime) {
        json_start(out, at, "flow", self.client, self.listener);
        json_backend(out, self.backend);
        for (key, value) in self.counts() {
            let _ = write!(out, ",\"{key}\":{value}");
        }
        let _ = write!(out, ",\"end\":\"{}\"}}", self.end);
    }

    /// The numeric fields, named and in the order of the line.
    fn counts(&self) -> [(&'static str, u128); 5] {
        [
            ("datagrams_in", self.datagrams_in.into()),
            ("datagrams_out", self.datagrams_out.into()),
            ("bytes_in", self.bytes_in.into()),
            ("bytes_out", self.bytes_out.into()),
            ("duration_ms", self.duration.as_millis()),
        ]
    }
}

/// Opens a JSON line: `{"time":...,"event":...,"client":...,
/// "client_port":...,"listener":...`.
fn json_start(out: &mut Vec<u8>, at: SystemTime, event: &str, client: SocketAddr, listener: &str) {
    out.extend_from_slice(b"{\"time\":\"");
    logging::write_time(out, at);
    let _ = write!(
        out,
        "\",\"event\":\"{event}\",\"client\":\"{}\",\"client_port\":{},\"listener\":",
        client.ip(),
        client.port()
    );
    push_json(out, listener);
}

/// `,"backend":"IP","backend_port":N`, both `null` without a backend.
fn json_backend(out: &mut Vec<u8>, backend: Option<SocketAddr>) {
    let _ = match backend {
        Some(b) => write!(
            out,
            ",\"backend\":\"{}\",\"backend_port\":{}",
            b.ip(),
            b.port()
        ),
        None => out.write_all(b",\"backend\":null,\"backend_port\":null"),
    };
}

/// `number` in decimal, or `none` without one.
fn push_number_or(out: &mut Vec<u8>, number: Option<u128>, none: &[u8]) {
    let _ = match number {
        Some(n) => write!(out, "{n}"),
        None => out.write_all(none),
    };
}

/// `text` as a JSON string, escaped by serde_json (no allocation).
fn push_json(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn push_json_or_null(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => push_json(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// A listener or pool name as one `key=value` token: whitespace, control
/// characters and backslashes written as `\xHH`, so a name with a space
/// cannot break the line into wrong fields.
fn push_name(out: &mut Vec<u8>, name: &str) {
    let plain = |b: u8| (b.is_ascii_graphic() && b != b'\\') || b >= 0x80;
    if name.bytes().all(plain) {
        out.extend_from_slice(name.as_bytes());
        return;
    }
    for b in name.bytes() {
        if plain(b) {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

#[cfg(test)]
#[path = "access_log_tests.rs"]
mod tests;
