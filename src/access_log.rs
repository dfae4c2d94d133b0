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

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

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
        let _ = match self.connected {
            Some(at) => write!(
                out,
                "{}",
                at.saturating_duration_since(self.started).as_millis()
            ),
            None => out.write_all(b"-"),
        };
        let _ = write!(
            out,
            " duration_ms={duration_ms} attempts={} end={} term={}",
            self.attempts,
            self.end.as_str(),
            self.term()
        );
    }
}

/// Writes `record`'s line to the access log's destination.
pub fn log(record: &Record<'_>) {
    logging::access(|out| record.write_to(out));
}

/// Opens (creating it if missing) the file `global.access_log_file` names,
/// for appending.
pub fn open_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
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
mod tests {
    use super::*;
    use std::time::Duration;

    fn code(end: End, stage: Stage) -> String {
        term(end, stage, None).to_string()
    }

    #[test]
    fn every_end_maps_to_its_haproxy_code_in_each_stage() {
        use Stage::*;
        let table = [
            (End::Done, ["--", "--", "--"]),
            (End::ClientReset, ["CC", "CD", "CL"]),
            (End::BackendReset, ["SC", "SD", "SL"]),
            (End::IdleTimeout, ["cC", "cD", "cL"]),
            (End::NoBackend, ["SC", "SC", "SC"]),
            (End::Shutdown, ["KC", "KD", "KL"]),
            (End::Removed, ["KC", "KD", "KL"]),
            (End::QueueFull, ["PC", "PC", "PC"]),
            (End::QueueTimeout, ["sQ", "sQ", "sQ"]),
        ];
        for (end, codes) in table {
            for (stage, want) in [Connect, Data, LastData].into_iter().zip(codes) {
                assert_eq!(code(end, stage), want, "{end:?} in {stage:?}");
            }
        }
    }

    #[test]
    fn a_session_ending_while_queued_says_q() {
        assert_eq!(code(End::ClientReset, Stage::Queue), "CQ");
        assert_eq!(code(End::Shutdown, Stage::Queue), "KQ");
        assert_eq!(code(End::QueueTimeout, Stage::Queue), "sQ");
    }

    #[test]
    fn no_backend_code_names_how_the_last_attempt_failed() {
        let cases = [
            (None, "SC"),
            (Some(ConnectFailure::Refused), "SC"),
            (Some(ConnectFailure::TimedOut), "sC"),
            (Some(ConnectFailure::Local), "RC"),
        ];
        for (failure, want) in cases {
            let got = term(End::NoBackend, Stage::Connect, failure);
            assert_eq!(got.as_str(), want, "{failure:?}");
        }
        // Only a session that found no backend looks at the failure.
        let got = term(
            End::ClientReset,
            Stage::Data,
            Some(ConnectFailure::TimedOut),
        );
        assert_eq!(got.as_str(), "CD");
    }

    #[test]
    fn connect_failures_are_classified_by_cause() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        let no_fds = io::Error::from_raw_os_error(libc::EMFILE);
        let no_port = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(ConnectFailure::of(&refused), ConnectFailure::Refused);
        assert_eq!(ConnectFailure::of(&timed_out), ConnectFailure::TimedOut);
        assert_eq!(ConnectFailure::of(&no_fds), ConnectFailure::Local);
        assert_eq!(ConnectFailure::of(&no_port), ConnectFailure::Local);
    }

    fn record(started: Instant) -> Record<'static> {
        Record {
            client: "192.0.2.7:40000".parse().unwrap(),
            listener: "web",
            pool: "app",
            backend: Some("[2001:db8::1]:80".parse().unwrap()),
            bytes_in: 120,
            bytes_out: 4567,
            started,
            connected: Some(started + Duration::from_millis(3)),
            ended: started + Duration::from_millis(1250),
            attempts: 2,
            end: End::ClientReset,
            stage: Stage::Data,
            connect_failure: Some(ConnectFailure::Refused),
            route: None,
            backup: false,
        }
    }

    fn line(r: &Record<'_>) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn line_has_every_field_as_key_value() {
        let r = record(Instant::now());
        assert_eq!(
            line(&r),
            "conn client=192.0.2.7:40000 listener=web pool=app backend=[2001:db8::1]:80 \
             bytes_in=120 bytes_out=4567 connect_ms=3 duration_ms=1250 attempts=2 \
             end=client-reset term=CD"
        );
    }

    #[test]
    fn a_routed_session_on_a_backup_says_so() {
        let r = Record {
            route: Some(RouteTaken {
                name: Some("alpha"),
                sni: Some("x.alpha.example"),
            }),
            backup: true,
            ..record(Instant::now())
        };
        let l = line(&r);
        assert!(
            l.contains(" pool=app route=alpha sni=x.alpha.example backend=[2001:db8::1]:80 backup=1 bytes_in="),
            "{l}"
        );
        let default = Record {
            route: Some(RouteTaken {
                name: None,
                sni: None,
            }),
            ..record(Instant::now())
        };
        assert!(
            line(&default).contains(" route=- sni=- backend="),
            "{}",
            line(&default)
        );
    }

    #[test]
    fn never_connected_session_has_dashes_for_backend_and_connect_time() {
        let r = Record {
            backend: None,
            connected: None,
            end: End::NoBackend,
            stage: Stage::Connect,
            connect_failure: Some(ConnectFailure::TimedOut),
            route: None,
            backup: false,
            ..record(Instant::now())
        };
        let l = line(&r);
        assert!(l.contains(" backend=- "), "{l}");
        assert!(l.contains(" connect_ms=- "), "{l}");
        assert!(l.ends_with(" end=no-backend term=sC"), "{l}");
    }

    #[test]
    fn names_with_spaces_stay_one_token() {
        let r = Record {
            listener: "front door",
            pool: "a\\b\tc",
            ..record(Instant::now())
        };
        let l = line(&r);
        assert!(
            l.contains(" listener=front\\x20door pool=a\\x5cb\\x09c "),
            "{l}"
        );
        let mut plain = Vec::new();
        push_name(&mut plain, "päärakennus:8080");
        assert_eq!(plain, "päärakennus:8080".as_bytes());
    }
}
