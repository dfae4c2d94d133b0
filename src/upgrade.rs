//! Replacing the running binary without closing a listening socket.
//!
//! Owns both halves of the handoff. The running process, on SIGUSR2, starts
//! its binary again (the path it was started from, resolved at start-up, or
//! `BALANCIAGA4_UPGRADE_BINARY`) with the same arguments and environment
//! plus two variables: `BALANCIAGA4_INHERITED` lists every listening socket
//! it holds, `kind:address=fd,fd;...` with kind `tcp`, `udp` or `admin`,
//! and `BALANCIAGA4_READY_FD` names the write end of a pipe. The new process
//! adopts those sockets instead of binding (`Inherited`), starts its
//! reactors, writes `ready` on the pipe and closes it; the old one then
//! stops accepting and drains as on SIGTERM. Both hold the same kernel
//! sockets meanwhile, so no connection is refused or reset. If the new
//! process exits or stays silent for `READY_WITHIN`, it is killed and the
//! old one keeps serving. Under systemd, the old process names the new one
//! the service's main process (`MAINPID=` on `NOTIFY_SOCKET`).
//!
//! Which descriptors to hand over: every listening socket is listed here
//! from its creation until just before it is closed (`Listing`, held by
//! `listener::Bound` and by the admin listener's owner), whichever thread
//! owns it. The list is locked while the new process is forked, so no
//! descriptor in it can be closed and its number reused meanwhile.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::Mutex;
use socket2::{SockRef, Type};

use crate::config::Protocol;
use crate::control::Control;

/// Sockets handed to the new process, described as above.
pub const INHERITED_VAR: &str = "BALANCIAGA4_INHERITED";
/// The descriptor the new process writes `ready` to.
pub const READY_VAR: &str = "BALANCIAGA4_READY_FD";
/// Starts this binary instead of the running one (packaging, tests).
pub const BINARY_VAR: &str = "BALANCIAGA4_UPGRADE_BINARY";
/// How long the new process gets to start its reactors and confirm.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// What a listening socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A TCP listener's socket (`tcp` in the inherited list).
    Tcp,
    /// A UDP listener's socket (`udp`).
    Udp,
    /// The admin listener's socket (`admin`).
    Admin,
}

impl Kind {
    /// The kind of a listener socket of `protocol`.
    pub fn of(protocol: Protocol) -> Kind {
        match protocol {
            Protocol::Tcp => Kind::Tcp,
            Protocol::Udp => Kind::Udp,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "tcp" => Some(Kind::Tcp),
            "udp" => Some(Kind::Udp),
            "admin" => Some(Kind::Admin),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct ListeningSocket {
    id: u64,
    kind: Kind,
    addr: SocketAddr,
    fd: RawFd,
}

/// Every listening socket of this process.
static LISTENING: Mutex<Vec<ListeningSocket>> = Mutex::new(Vec::new());

/// A socket's place in the list; dropping it takes the socket off, so an
/// owner must drop it before closing the socket.
#[derive(Debug)]
pub struct Listing(u64);

impl Listing {
    /// Lists the socket `fd`, bound to `addr`, for the next upgrade until
    /// the returned `Listing` is dropped. `fd` must stay open until then.
    pub fn new(kind: Kind, addr: SocketAddr, fd: RawFd) -> Listing {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        LISTENING
            .lock()
            .push(ListeningSocket { id, kind, addr, fd });
        Listing(id)
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        LISTENING.lock().retain(|e| e.id != self.0);
    }
}

/// `kind:addr=fd,fd;...`, addresses in order of first appearance.
fn describe(entries: &[ListeningSocket]) -> String {
    let mut groups: Vec<(Kind, SocketAddr, Vec<RawFd>)> = Vec::new();
    for e in entries {
        match groups
            .iter_mut()
            .find(|(k, a, _)| (*k, *a) == (e.kind, e.addr))
        {
            Some((_, _, fds)) => fds.push(e.fd),
            None => groups.push((e.kind, e.addr, vec![e.fd])),
        }
    }
    let mut out = String::new();
    for (kind, addr, fds) in groups {
        if !out.is_empty() {
            out.push(';');
        }
        let fds: Vec<String> = fds.iter().map(RawFd::to_string).collect();
        let _ = write!(out, "{}:{addr}={}", kind.name(), fds.join(","));
    }
    out
}

/// Parses `describe`'s format.
fn parse(text: &str) -> Result<Vec<(Kind, SocketAddr, Vec<RawFd>)>, String> {
    let mut out = Vec::new();
    for group in text.split(';').filter(|g| !g.is_empty()) {
        let bad = || format!("{INHERITED_VAR}: cannot read {group:?}");
        let (head, fds) = group.split_once('=').ok_or_else(bad)?;
        let (kind, addr) = head.split_once(':').ok_or_else(bad)?;
        let kind = Kind::parse(kind).ok_or_else(bad)?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        let fds = fds
            .split(',')
            .map(|fd| {
                fd.parse::<RawFd>()
                    .ok()
                    .filter(|&fd| fd > 2)
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((kind, addr, fds));
    }
    Ok(out)
}

/// What the previous process handed over, taken by address as start-up
/// binds its listeners; whatever is left is closed by `confirm`.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: HashMap<(Kind, SocketAddr), Vec<OwnedFd>>,
    ready: Option<OwnedFd>,
    adopted: usize,
}

impl Inherited {
    /// Reads and checks the variables; none set means a plain start. A
    /// descriptor that is not an open socket of the kind and address
    /// described is an error: start-up must not adopt a stranger.
    pub fn from_env() -> Result<Inherited, String> {
        let mut inherited = Inherited::default();
        if let Some(value) = std::env::var_os(READY_VAR) {
            let fd = value
                .to_str()
                .and_then(|v| v.parse::<RawFd>().ok())
                .filter(|&fd| fd > 2 && is_open(fd))
                .ok_or_else(|| format!("{READY_VAR}: {value:?} is not an open descriptor"))?;
            // SAFETY: the previous process handed this descriptor to us
            // alone; it is open, checked above, and owned from here on.
            inherited.ready = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            set_cloexec(fd, true);
        }
        let Some(value) = std::env::var_os(INHERITED_VAR) else {
            return Ok(inherited);
        };
        let text = value
            .into_string()
            .map_err(|v| format!("{INHERITED_VAR}: {v:?} is not text"))?;
        let groups = parse(&text)?;
        let mut seen = Vec::new();
        for (kind, addr, fds) in &groups {
            for &fd in fds {
                if seen.contains(&fd) {
                    return Err(format!("{INHERITED_VAR}: descriptor {fd} listed twice"));
                }
                seen.push(fd);
                check(*kind, *addr, fd).map_err(|e| {
                    format!(
                        "{INHERITED_VAR}: descriptor {fd} for {} {addr}: {e}",
                        kind.name()
                    )
                })?;
            }
        }
        // Owned only once every one checked out, so a bad description
        // closes nothing this process does not own.
        for (kind, addr, fds) in groups {
            for fd in fds {
                set_cloexec(fd, true);
                // SAFETY: checked above to be an open socket handed to
                // this process, listed once.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                inherited
                    .sockets
                    .entry((kind, addr))
                    .or_default()
                    .push(owned);
            }
        }
        Ok(inherited)
    }

    /// Inherited sockets for `kind` on `addr`, now owned by the caller.
    pub fn take(&mut self, kind: Kind, addr: SocketAddr) -> Vec<OwnedFd> {
        let fds = self.sockets.remove(&(kind, addr)).unwrap_or_default();
        self.adopted += fds.len();
        fds
    }

    /// The admin listener, if it was handed over on `bind` (or on any port
    /// of its address when `bind` asks for port 0).
    pub fn take_admin(&mut self, bind: SocketAddr) -> Option<OwnedFd> {
        let key = *self.sockets.keys().find(|(kind, addr)| {
            *kind == Kind::Admin && (*addr == bind || (bind.port() == 0 && addr.ip() == bind.ip()))
        })?;
        let mut fds = self.take(key.0, key.1);
        let first = fds.pop();
        self.adopted -= fds.len(); // extras are closed
        first
    }

    /// Once the reactors run: closes sockets of addresses the configuration
    /// no longer has, tells the previous process to stand down, and says
    /// so. True if there was a previous process to tell.
    pub fn confirm(mut self) -> bool {
        let unused: usize = self.sockets.values().map(Vec::len).sum();
        self.sockets.clear();
        if unused > 0 {
            info!("closed {unused} inherited listening sockets the configuration no longer has");
        }
        let Some(ready) = self.ready.take() else {
            return false;
        };
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        match std::fs::File::from(ready).write_all(b"ready\n") {
            Ok(()) => info!(
                "took over {} listening sockets from PID {parent}",
                self.adopted
            ),
            Err(e) => warn!("cannot confirm the upgrade to PID {parent}: {e}"),
        }
        true
    }
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn set_cloexec(fd: RawFd, on: bool) -> bool {
    // SAFETY: F_GETFD/F_SETFD only change the close-on-exec flag; both are
    // async-signal-safe, so this may run between fork and exec.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags == -1 {
            return false;
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        libc::fcntl(fd, libc::F_SETFD, flags) != -1
    }
}

/// `fd` is an open socket of `kind`'s type bound to `addr`.
fn check(kind: Kind, addr: SocketAddr, fd: RawFd) -> io::Result<()> {
    if !is_open(fd) {
        return Err(io::Error::other("not open"));
    }
    // SAFETY: open, checked above; only borrowed for the checks.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = SockRef::from(&borrowed);
    let want = match kind {
        Kind::Udp => Type::DGRAM,
        Kind::Tcp | Kind::Admin => Type::STREAM,
    };
    if socket.r#type()? != want {
        return Err(io::Error::other("not a socket of that type"));
    }
    let local = socket.local_addr()?.as_socket();
    if local != Some(addr) {
        return Err(io::Error::other(format!("bound to {local:?} instead")));
    }
    Ok(())
}

/// Starts new copies of the binary on request; one at a time.
pub struct Upgrader {
    binary: PathBuf,
    args: Vec<OsString>,
    control: Arc<Control>,
    busy: AtomicBool,
    /// Run once the new process took over, before draining (stops the
    /// admin listener, whose socket the new process now serves).
    on_handover: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Upgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrader")
            .field("binary", &self.binary)
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
}

impl Upgrader {
    /// Records what to start: call before anything could replace the file.
    pub fn new(control: Arc<Control>) -> io::Result<Upgrader> {
        let binary = match std::env::var_os(BINARY_VAR) {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()?,
        };
        Ok(Upgrader {
            binary,
            args: std::env::args_os().skip(1).collect(),
            control,
            busy: AtomicBool::new(false),
            on_handover: Mutex::new(None),
        })
    }

    /// Sets what runs once the new process has confirmed, right after the
    /// shutdown request (main closes the admin listener with it); replaces
    /// any earlier one, and runs at most once.
    pub fn on_handover(&self, f: impl FnOnce() + Send + 'static) {
        *self.on_handover.lock() = Some(Box::new(f));
    }

    /// Starts the new process and a thread that waits for its `ready`.
    pub fn start(self: &Arc<Self>) {
        if self.control.shutdown_requested() {
            warn!("upgrade: already shutting down; ignored");
            return;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            warn!("upgrade: one is under way already; ignored");
            return;
        }
        let (child, ready) = match self.spawn() {
            Ok(started) => started,
            Err(e) => {
                error!(
                    "upgrade: cannot start {}: {e}; still serving",
                    self.binary.display()
                );
                self.busy.store(false, Ordering::Release);
                return;
            }
        };
        info!(
            "upgrade: started {} as PID {}, waiting for it to take over",
            self.binary.display(),
            child.id()
        );
        let me = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("upgrade".into())
            .spawn(move || me.await_ready(child, ready));
        if let Err(e) = spawned {
            // The closure, child included, is gone; the child sees its
            // pipe close and the old process keeps serving.
            error!("upgrade: cannot start the thread that waits for it: {e}; still serving");
            self.busy.store(false, Ordering::Release);
        }
    }

    /// Forks with the listing locked, so every descriptor in it is the
    /// socket it names until the child has its copy.
    fn spawn(&self) -> io::Result<(Child, std::fs::File)> {
        let (read, write) = pipe()?;
        let listing = LISTENING.lock();
        let mut fds: Vec<RawFd> = listing.iter().map(|e| e.fd).collect();
        fds.push(write.as_raw_fd());
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .env(INHERITED_VAR, describe(&listing))
            .env(READY_VAR, write.as_raw_fd().to_string())
            // systemd names this process in WATCHDOG_PID; the new one,
            // main once it takes over, must send the watchdog pings.
            .env_remove(crate::service::watchdog::WATCHDOG_PID);
        // SAFETY: the hook only calls fcntl, which is async-signal-safe,
        // on descriptors open in the parent (the listing is locked).
        unsafe {
            command.pre_exec(move || {
                for &fd in &fds {
                    if !set_cloexec(fd, false) {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(listing);
        // Ours closed, the pipe reaches end of file when the child exits.
        drop(write);
        Ok((child, read))
    }

    fn await_ready(&self, mut child: Child, ready: std::fs::File) {
        let pid = child.id();
        let outcome = wait_for_ready(&mut child, ready, &self.control);
        match outcome {
            Ok(()) => {
                // Said first: with no session to drain the process may be
                // gone right after the request.
                info!("upgrade: handed over to PID {pid}; draining");
                crate::service::handed_over(pid);
                self.control.request_shutdown();
                if let Some(f) = self.on_handover.lock().take() {
                    f();
                }
                // Not reaped: it outlives this process and is adopted by
                // whoever reaps orphans.
                drop(child);
            }
            Err(why) => {
                let running = matches!(child.try_wait(), Ok(None));
                let killed = if running && child.kill().is_ok() {
                    "; killed it"
                } else {
                    ""
                };
                let _ = child.wait();
                error!("upgrade: PID {pid} {why}{killed}; still serving");
                self.busy.store(false, Ordering::Release);
            }
        }
    }
}

/// Reads the pipe until `ready`, end of file, the deadline or a shutdown.
fn wait_for_ready(
    child: &mut Child,
    ready: std::fs::File,
    control: &Control,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    let mut got = Vec::new();
    let mut ready = ready;
    loop {
        if control.shutdown_requested() {
            return Err("abandoned: shutting down".into());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("did not confirm within {READY_WITHIN:?}"));
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        let mut pfd = libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("cannot be waited for: {e}"));
        }
        if n == 0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited before taking over ({status})"));
            }
            continue;
        }
        let mut buf = [0u8; 64];
        match ready.read(&mut buf) {
            Ok(0) => {
                let status = child.wait().map_or("?".into(), |s| s.to_string());
                return Err(format!("closed its pipe without confirming ({status})"));
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(b"ready\n") {
                    return Ok(());
                }
                if got.len() >= 6 {
                    return Err(format!(
                        "said {:?} instead of ready",
                        String::from_utf8_lossy(&got)
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot be read from: {e}")),
        }
    }
}

/// A pipe, both ends close-on-exec; the child's end is opened in its hook.
fn pipe() -> io::Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nobody else.
    unsafe {
        Ok((
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_round_trips_with_ipv6_and_several_descriptors() {
        let entries = vec![
            ListeningSocket {
                id: 0,
                kind: Kind::Tcp,
                addr: "127.0.0.1:8080".parse().unwrap(),
                fd: 5,
            },
            ListeningSocket {
                id: 1,
                kind: Kind::Udp,
                addr: "[::]:53".parse().unwrap(),
                fd: 7,
            },
            ListeningSocket {
                id: 2,
                kind: Kind::Tcp,
                addr: "127.0.0.1:8080".parse().unwrap(),
                fd: 6,
            },
            ListeningSocket {
                id: 3,
                kind: Kind::Admin,
                addr: "127.0.0.1:9090".parse().unwrap(),
                fd: 9,
            },
        ];
        let text = describe(&entries);
        assert_eq!(
            text,
            "tcp:127.0.0.1:8080=5,6;udp:[::]:53=7;admin:127.0.0.1:9090=9"
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed[0].2, vec![5, 6]);
        assert_eq!(parsed[1].1, "[::]:53".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn description_refuses_standard_streams_and_garbage() {
        assert!(parse("tcp:127.0.0.1:80=1").is_err());
        assert!(parse("sctp:127.0.0.1:80=5").is_err());
        assert!(parse("tcp:127.0.0.1:80").is_err());
    }
}
