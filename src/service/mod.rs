//! Talking to the service manager: systemd's notify protocol.
//!
//! Owns the datagrams sent to `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract socket), written directly: no libsystemd. Start-up says
//! `READY=1` once every reactor runs; a reload is framed by `RELOADING=1`
//! (with `MONOTONIC_USEC=`, which `Type=notify-reload` requires) and
//! `READY=1`; a drain says `STOPPING=1`; a binary upgrade hands over with
//! `MAINPID=`; `watchdog` sends `WATCHDOG=1` while every worker makes
//! progress. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.
//! It touches no other module's state.

pub mod watchdog;

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use log::{debug, warn};

/// The socket systemd reads notifications from.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// An open line to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
    /// Only the first failed send is a warning: a manager that went away
    /// would otherwise fill the log with one line per watchdog ping.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `socket`, a path or `@abstract` name.
    pub fn open(socket: &OsStr) -> io::Result<Notifier> {
        let addr = match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => UnixAddr::from_abstract_name(name)?,
            None => UnixAddr::from_pathname(socket)?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
            warned: AtomicBool::new(false),
        })
    }

    /// Sends `message`, newline-separated `KEY=value` lines, as one
    /// datagram. It never blocks for long: the socket is a local datagram
    /// socket systemd always reads.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        Ok(())
    }

    fn send_logged(&self, message: &str) {
        match self.send(message) {
            Ok(()) => debug!("told the service manager: {}", message.replace('\n', " ")),
            Err(e) if !self.warned.swap(true, Ordering::Relaxed) => warn!(
                "cannot notify the service manager ({message:?}): {e}; later failures are not logged"
            ),
            Err(_) => {}
        }
    }
}

/// The process's notifier, read from `NOTIFY_SOCKET` on first use; `None`
/// outside systemd or if the variable is unusable (said once, in the log).
fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER
        .get_or_init(|| {
            let socket = std::env::var_os(NOTIFY_SOCKET)?;
            Notifier::open(&socket)
                .map_err(|e| warn!("{NOTIFY_SOCKET}={socket:?} cannot be used: {e}"))
                .ok()
        })
        .as_ref()
}

/// Set once a binary upgrade handed the service to another process: this
/// one is no longer the main process, and systemd would refuse (and log)
/// anything more it sent.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

fn tell(message: &str) {
    if HANDED_OVER.load(Ordering::Acquire) {
        return;
    }
    if let Some(notifier) = notifier() {
        notifier.send_logged(message);
    }
}

/// Status lines are one line: a newline would start a new `KEY=`.
fn one_line(status: &str) -> String {
    status.lines().next().unwrap_or_default().to_owned()
}

/// Every listener accepts and every reactor runs.
pub fn ready(status: &str) {
    tell(&format!("READY=1\nSTATUS={}\n", one_line(status)));
}

/// A reload starts. `MONOTONIC_USEC` lets systemd tell this reload from
/// one it asked for earlier.
pub fn reloading() {
    tell(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration\n",
        monotonic_usec()
    ));
}

/// The reload that `reloading` announced was applied or refused; either
/// way the process serves again.
pub fn reloaded(status: &str) {
    tell(&format!("READY=1\nSTATUS={}\n", one_line(status)));
}

/// Draining starts (SIGTERM or SIGINT).
pub fn stopping() {
    tell("STOPPING=1\nSTATUS=draining open sessions\n");
}

/// A binary upgrade's new process `pid` took over; this one drains.
///
/// `STOPPING=1` is deliberately not sent: systemd would take it for the
/// whole service stopping and, once this process exits, kill the new main
/// process with the rest of the unit. The status line says what happens.
pub fn handed_over(pid: u32) {
    tell(&format!(
        "MAINPID={pid}\nSTATUS=upgraded: PID {pid} serves, PID {} drains\n",
        std::process::id()
    ));
    HANDED_OVER.store(true, Ordering::Release);
}

/// `CLOCK_MONOTONIC` in microseconds, systemd's clock for reloads.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let nanos = u64::try_from(now.tv_nsec).unwrap_or_default();
    secs * 1_000_000 + nanos / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_arrives_as_one_datagram_at_a_path() {
        let path = std::env::temp_dir().join(format!("b4-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifier::open(path.as_os_str())
            .unwrap()
            .send("READY=1\nSTATUS=x\n")
            .unwrap();
        let mut buf = [0; 64];
        let n = socket.recv(&mut buf).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x\n");
    }

    #[test]
    fn an_abstract_socket_is_named_with_an_at_sign() {
        let name = format!(
            "b4-notify-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let socket =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let spelled = format!("@{name}");
        Notifier::open(OsStr::new(&spelled))
            .unwrap()
            .send("WATCHDOG=1\n")
            .unwrap();
        let mut buf = [0; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }

    #[test]
    fn the_monotonic_clock_moves_forward_in_microseconds() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = monotonic_usec();
        assert!((15_000..2_000_000).contains(&(b - a)), "{a} then {b}");
    }

    #[test]
    fn a_status_keeps_only_its_first_line() {
        assert_eq!(
            one_line("reload refused: line 3\nmore"),
            "reload refused: line 3"
        );
        assert_eq!(one_line(""), "");
    }
}
