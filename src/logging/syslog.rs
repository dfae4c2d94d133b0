//! Syslog output: a copy of the process log and/or the access log sent as
//! RFC 5424 or RFC 3164 datagrams to a unix socket (`/dev/log`) or UDP.
//!
//! Owns the `syslog` thread, the bounded queue that feeds it and the socket
//! it sends on. Whoever logs (a reactor, the health thread...) never waits
//! for syslog: it takes a buffer from a fixed pool, writes the message into
//! it and queues it without blocking; with no buffer free the line is
//! dropped and counted (`metrics::logs`). Buffers go back to the pool once
//! sent, so a line costs no allocation once the pool is warm. The thread
//! alone formats the header and sends, non-blocking: a daemon that does not
//! read gets at most [`STALL_WAIT`] of patience before lines are dropped
//! (counted), a socket that is missing or refuses is dropped and connected
//! again a second later. Touches its parent `logging` (timestamps, the process
//! logger's interface) and the drop counter, nothing else.

use std::io::{self, Write as _};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

use super::RateLimit;
use crate::config::{SyslogConfig, SyslogFormat, SyslogTarget};
use crate::metrics::logs::DROPPED;

/// Lines that may wait for the syslog thread.
pub const QUEUE: usize = 1024;
/// How long the thread waits for a daemon that does not read before it
/// drops lines without waiting, for [`STALL_FOR`].
const STALL_WAIT: Duration = Duration::from_millis(20);
const STALL_FOR: Duration = Duration::from_secs(1);
/// A socket that could not be connected is tried again this much later.
const RETRY: Duration = Duration::from_secs(1);
/// Longest message; longer ones are cut (at a character boundary).
const MAX_MESSAGE: usize = 8 * 1024;

/// Syslog severity of access lines (informational).
const INFO: u8 = 6;

struct Msg {
    severity: u8,
    access: bool,
    at: SystemTime,
    text: Vec<u8>,
}

struct Queue {
    free: Mutex<Vec<Msg>>,
    full: SyncSender<Msg>,
    access: bool,
    process: bool,
}

static QUEUE_SLOT: OnceLock<Queue> = OnceLock::new();

/// Starts the syslog thread for `config`; lines logged from now on are
/// copied to it. Once per process; an error if the thread cannot start.
pub fn start(config: &SyslogConfig) -> io::Result<()> {
    let (full, receiver) = mpsc::sync_channel(QUEUE);
    let free = (0..QUEUE)
        .map(|_| Msg {
            severity: INFO,
            access: false,
            at: SystemTime::UNIX_EPOCH,
            text: Vec::with_capacity(256),
        })
        .collect();
    let queue = Queue {
        free: Mutex::new(free),
        full,
        access: config.logs.access(),
        process: config.logs.process(),
    };
    if QUEUE_SLOT.set(queue).is_err() {
        return Err(io::Error::other("syslog already started"));
    }
    let sender = Sender::new(config);
    thread::Builder::new()
        .name("syslog".into())
        .spawn(move || sender.run(receiver))?;
    Ok(())
}

/// Whether access lines go to syslog.
pub(crate) fn takes_access() -> bool {
    QUEUE_SLOT.get().is_some_and(|q| q.access)
}

/// Queues one access line, written by `body`; never blocks.
pub(crate) fn access(body: impl FnOnce(&mut Vec<u8>)) {
    if let Some(queue) = QUEUE_SLOT.get().filter(|q| q.access) {
        queue.push(INFO, true, body);
    }
}

impl Queue {
    fn push(&self, severity: u8, access: bool, body: impl FnOnce(&mut Vec<u8>)) {
        let Some(mut msg) = self.free.lock().pop() else {
            DROPPED.count_syslog(1);
            return;
        };
        msg.severity = severity;
        msg.access = access;
        msg.at = SystemTime::now();
        msg.text.clear();
        body(&mut msg.text);
        // The pool holds as many buffers as the queue has places.
        if let Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) =
            self.full.try_send(msg)
        {
            DROPPED.count_syslog(1);
            self.free.lock().push(msg);
        }
    }
}

/// The process log's syslog copy, combined with the stderr logger by
/// `logging::init`; `None` when syslog does not take process lines.
pub(crate) fn process_logger(level: LevelFilter) -> Option<ProcessLogger> {
    QUEUE_SLOT
        .get()
        .filter(|q| q.process)
        .map(|_| ProcessLogger { level })
}

/// Copies process log records at or above its level to syslog.
#[derive(Debug)]
pub(crate) struct ProcessLogger {
    level: LevelFilter,
}

impl Log for ProcessLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // The syslog thread's own complaints go to stderr only, or a dead
        // daemon would feed its own queue.
        metadata.level() <= self.level && metadata.target() != module_path!()
    }

    fn log(&self, record: &Record<'_>) {
        let Some(queue) = QUEUE_SLOT.get().filter(|_| self.enabled(record.metadata())) else {
            return;
        };
        let severity = match record.level() {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        };
        queue.push(severity, false, |out| {
            let _ = write!(out, "{}", record.args());
        });
    }

    fn flush(&self) {}
}

impl simplelog::SharedLogger for ProcessLogger {
    fn level(&self) -> LevelFilter {
        self.level
    }

    fn config(&self) -> Option<&simplelog::Config> {
        None
    }

    fn as_log(self: Box<Self>) -> Box<dyn Log> {
        self
    }
}

enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

impl Socket {
    fn connect(target: &SyslogTarget) -> io::Result<Socket> {
        let socket = match target {
            SyslogTarget::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                Socket::Unix(s)
            }
            SyslogTarget::Udp(addr) => {
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = UdpSocket::bind(local)?;
                s.connect(addr)?;
                Socket::Udp(s)
            }
        };
        match &socket {
            Socket::Unix(s) => s.set_nonblocking(true)?,
            Socket::Udp(s) => s.set_nonblocking(true)?,
        }
        Ok(socket)
    }

    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.send(datagram),
            Socket::Udp(s) => s.send(datagram),
        }
    }

    /// Waits up to `limit` for room to send.
    fn wait_writable(&self, limit: Duration) {
        let fd = match self {
            Socket::Unix(s) => s.as_fd().as_raw_fd(),
            Socket::Udp(s) => s.as_fd().as_raw_fd(),
        };
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, and `fd` stays open for the call.
        unsafe { libc::poll(&mut poll, 1, ms) };
    }
}

/// The syslog thread's state: the socket, when to try connecting again,
/// and the fixed parts of every header.
struct Sender {
    target: SyslogTarget,
    format: SyslogFormat,
    facility: u8,
    tag: String,
    hostname: String,
    pid: u32,
    socket: Option<Socket>,
    retry_at: Instant,
    stalled_until: Option<Instant>,
    out: Vec<u8>,
    complaints: RateLimit,
}

impl Sender {
    fn new(config: &SyslogConfig) -> Sender {
        Sender {
            target: config.target.clone(),
            format: config.format,
            facility: config.facility,
            tag: config.tag.clone(),
            hostname: hostname(),
            pid: std::process::id(),
            socket: None,
            retry_at: Instant::now(),
            stalled_until: None,
            out: Vec::with_capacity(MAX_MESSAGE + 512),
            complaints: RateLimit::default(),
        }
    }

    fn run(mut self, receiver: Receiver<Msg>) {
        let Some(queue) = QUEUE_SLOT.get() else {
            return;
        };
        loop {
            match receiver.recv_timeout(RETRY) {
                Ok(msg) => {
                    self.send(&msg);
                    queue.free.lock().push(msg);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn send(&mut self, msg: &Msg) {
        let now = Instant::now();
        if self.socket.is_none() && now >= self.retry_at {
            match Socket::connect(&self.target) {
                Ok(s) => self.socket = Some(s),
                Err(e) => {
                    self.retry_at = now + RETRY;
                    self.complain(now, &e);
                }
            }
        }
        let Some(socket) = &self.socket else {
            DROPPED.count_syslog(1);
            return;
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        format(&mut out, self, msg);
        let mut result = socket.send(&out);
        // At most one wait per STALL_FOR while the daemon stays full.
        let wait = is_full(&result) && self.stalled_until.is_none_or(|t| now >= t);
        if wait {
            socket.wait_writable(STALL_WAIT);
            result = socket.send(&out);
        }
        self.out = out;
        match result {
            Ok(_) => self.stalled_until = None,
            Err(e) if is_full_error(&e) => {
                if wait {
                    self.stalled_until = Some(now + STALL_FOR);
                }
                DROPPED.count_syslog(1);
            }
            Err(e) => {
                DROPPED.count_syslog(1);
                // A unix socket whose daemon went away (or restarted with a
                // new socket) is connected again later; a UDP refusal is an
                // ICMP answer to an earlier datagram, and the socket stays.
                if matches!(self.socket, Some(Socket::Unix(_))) {
                    self.socket = None;
                    self.retry_at = now + RETRY;
                }
                self.complain(now, &e);
            }
        }
    }

    fn complain(&mut self, now: Instant, e: &io::Error) {
        if let Some(suppressed) = self.complaints.allow(now) {
            log::warn!(
                "syslog {}: lines are dropped: {e}{}",
                self.target,
                if suppressed > 0 {
                    format!(" ({suppressed} more errors)")
                } else {
                    String::new()
                }
            );
        }
    }
}

fn is_full(result: &io::Result<usize>) -> bool {
    result.as_ref().err().is_some_and(is_full_error)
}

fn is_full_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Writes `msg`'s datagram: the header `sender`'s format asks for, then the
/// message, cut at [`MAX_MESSAGE`] bytes.
fn format(out: &mut Vec<u8>, sender: &Sender, msg: &Msg) {
    let pri = u16::from(sender.facility) * 8 + u16::from(msg.severity);
    match sender.format {
        SyslogFormat::Rfc5424 => {
            let _ = write!(out, "<{pri}>1 ");
            super::write_time_precision(out, msg.at, 6);
            let msgid = if msg.access { "access" } else { "log" };
            let _ = write!(
                out,
                " {} {} {} {msgid} - ",
                sender.hostname, sender.tag, sender.pid
            );
        }
        SyslogFormat::Rfc3164 => {
            let _ = write!(out, "<{pri}>");
            write_3164_time(out, msg.at);
            // What syslog(3) writes on a local socket has no host name;
            // a remote daemon needs it.
            if matches!(sender.target, SyslogTarget::Udp(_)) {
                let _ = write!(out, " {}", sender.hostname);
            }
            let _ = write!(out, " {}[{}]: ", sender.tag, sender.pid);
        }
    }
    let text = &msg.text[..];
    let mut end = text.len().min(MAX_MESSAGE);
    while end < text.len() && end > 0 && (text[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    out.extend_from_slice(&text[..end]);
}

/// `Dec  8 01:53:05`, in UTC.
fn write_3164_time(out: &mut Vec<u8>, at: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (_, month, day) = super::civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let month = MONTHS[(month as usize - 1).min(11)];
    let _ = write!(
        out,
        "{month} {day:>2} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
}

/// This host's name for the HOSTNAME field: printable ASCII only, `-`
/// when there is none.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = &buf[..len];
    if rc != 0 || name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
        return "-".into();
    }
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyslogLogs;
    use std::time::UNIX_EPOCH;

    fn sender(format: SyslogFormat, target: SyslogTarget) -> Sender {
        Sender::new(&SyslogConfig {
            target,
            format,
            facility: 3,
            tag: "b4".into(),
            logs: SyslogLogs::Both,
        })
    }

    fn datagram(s: &Sender, severity: u8, access: bool, text: &str) -> String {
        let msg = Msg {
            severity,
            access,
            at: UNIX_EPOCH + Duration::new(1_795_769_305, 331_924_673),
            text: text.as_bytes().to_vec(),
        };
        let mut out = Vec::new();
        format(&mut out, s, &msg);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc5424_header_has_pri_version_time_host_app_procid_msgid() {
        let s = sender(SyslogFormat::Rfc5424, SyslogTarget::Unix("/dev/log".into()));
        let d = datagram(&s, 6, true, "conn client=1.2.3.4:5");
        let want = format!(
            "<30>1 2026-11-27T08:48:25.331924Z {} b4 {} access - conn client=1.2.3.4:5",
            s.hostname, s.pid
        );
        assert_eq!(d, want);
        assert!(datagram(&s, 3, false, "x").starts_with("<27>1 "));
    }

    #[test]
    fn rfc3164_names_the_host_only_over_udp() {
        let local = sender(SyslogFormat::Rfc3164, SyslogTarget::Unix("/dev/log".into()));
        let d = datagram(&local, 4, false, "careful");
        assert_eq!(d, format!("<28>Nov 27 08:48:25 b4[{}]: careful", local.pid));
        let remote = sender(
            SyslogFormat::Rfc3164,
            SyslogTarget::Udp("127.0.0.1:514".parse().unwrap()),
        );
        let d = datagram(&remote, 4, false, "careful");
        assert_eq!(
            d,
            format!(
                "<28>Nov 27 08:48:25 {} b4[{}]: careful",
                remote.hostname, remote.pid
            )
        );
    }

    #[test]
    fn a_daemon_that_does_not_read_costs_one_short_wait_and_counted_drops() {
        let (ours, daemon) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        daemon.set_nonblocking(true).unwrap();
        let mut s = sender(SyslogFormat::Rfc5424, SyslogTarget::Unix("/unused".into()));
        s.socket = Some(Socket::Unix(ours));
        let msg = Msg {
            severity: INFO,
            access: true,
            at: SystemTime::now(),
            // Large enough that 200 overflow the socket buffer.
            text: vec![b'x'; 4000],
        };
        let before = DROPPED.read()[0].1;
        let started = Instant::now();
        for _ in 0..200 {
            s.send(&msg);
        }
        let took = started.elapsed();
        let mut received = 0u64;
        let mut buf = [0u8; 8192];
        while daemon.recv(&mut buf).is_ok() {
            received += 1;
        }
        let dropped = DROPPED.read()[0].1 - before;
        assert_eq!(received + dropped, 200, "{received} received");
        assert!(received > 0 && dropped > 0, "{received} received");
        // One STALL_WAIT, not one per dropped line.
        assert!(took < STALL_WAIT * 10, "{took:?}");
        assert!(s.socket.is_some(), "a full daemon is not disconnected");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let s = sender(SyslogFormat::Rfc3164, SyslogTarget::Unix("/dev/log".into()));
        let text = "é".repeat(MAX_MESSAGE);
        let d = datagram(&s, 6, false, &text);
        let body = d.split_once("]: ").unwrap().1;
        assert!(body.len() <= MAX_MESSAGE && body.len() >= MAX_MESSAGE - 1);
        assert!(body.chars().all(|c| c == 'é'));
    }
}
