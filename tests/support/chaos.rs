//! Fault injection around the balancer: a backend whose connections say
//! what to do in their first line, a paced hashed transfer that must come
//! through any fault next to it intact, a backend on a fixed port that can
//! be killed (every connection reset) and started again, and the sockets a
//! process holds, read from /proc.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::backend::echo_handler;
use super::{connect, hash_to_eof, read_line, set_linger_zero, Backend, Pattern};

/// A backend whose connections start with a command line: `echo` echoes
/// the rest of the stream (FIN after FIN); any other line goes, with the
/// socket, to `handler`.
pub fn scripted_backend<F>(handler: F) -> Backend
where
    F: Fn(&str, TcpStream) + Send + Sync + 'static,
{
    Backend::spawn(move |s: TcpStream| serve_command(s, &handler))
}

/// Reads the command line and runs it (see `scripted_backend`).
fn serve_command(mut s: TcpStream, handler: &dyn Fn(&str, TcpStream)) {
    let Ok(line) = read_line(&mut s, Duration::from_secs(5)) else {
        return;
    };
    match line.trim() {
        "echo" => echo_handler(s),
        command => handler(command, s),
    }
}

/// A client sending `len` bytes of `Pattern::new(seed)` in 64 KiB chunks,
/// `pause` apart, through an `echo` connection, and hashing what comes
/// back: the healthy session that must finish intact beside a fault.
pub struct Healthy {
    pub client: SocketAddr,
    seed: u64,
    len: u64,
    sent: Arc<AtomicU64>,
    reader: JoinHandle<std::io::Result<(u64, u64)>>,
    writer: JoinHandle<std::io::Result<()>>,
}

impl Healthy {
    pub fn start(listen: SocketAddr, seed: u64, len: u64, pause: Duration) -> Healthy {
        let s = connect(listen);
        let client = s.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let mut w = s.try_clone().unwrap();
        let writer = {
            let sent = Arc::clone(&sent);
            thread::spawn(move || {
                w.write_all(b"echo\n")?;
                send_pattern(&mut w, seed, len, pause, &sent)?;
                w.shutdown(Shutdown::Write)
            })
        };
        let mut r = s;
        let reader = thread::spawn(move || hash_to_eof(&mut r, Duration::from_secs(60)));
        Healthy {
            client,
            seed,
            len,
            sent,
            reader,
            writer,
        }
    }

    /// Waits until the transfer is under way (a first chunk sent).
    pub fn wait_moving(&self) {
        assert!(
            super::wait_until(Duration::from_secs(5), || self.sent.load(Ordering::SeqCst)
                > 0),
            "the healthy transfer did not start"
        );
    }

    /// Whether the writer is still sending.
    pub fn sending(&self) -> bool {
        self.sent.load(Ordering::SeqCst) < self.len
    }

    /// Waits for the echo to end and checks every byte; returns the bytes
    /// verified (each way).
    pub fn finish(self) -> u64 {
        self.try_finish()
            .unwrap_or_else(|e| panic!("healthy session: {e}"))
    }

    /// Like `finish`, with what went wrong as an error.
    pub fn try_finish(self) -> Result<u64, String> {
        let written = self.writer.join().expect("healthy writer thread");
        let read = self.reader.join().expect("healthy reader thread");
        written.map_err(|e| format!("writing: {e}"))?;
        let (len, hash) = read.map_err(|e| format!("reading the echo to EOF: {e}"))?;
        if len != self.len {
            return Err(format!("{len} bytes came back of {}", self.len));
        }
        if hash != Pattern::hash(self.seed, self.len) {
            return Err(format!("the {len} bytes that came back are corrupted"));
        }
        Ok(len)
    }
}

/// An echo backend (`echo` connections of `scripted_backend`; others are
/// closed) on a fixed address that can be killed, as a crashed process
/// would be: the listener closes and every open connection is
/// reset; `start` binds the same address again.
pub struct Killable {
    pub addr: SocketAddr,
    running: Option<(Backend, OpenConnections)>,
}

/// A killable backend's connections still being served, by number.
type OpenConnections = Arc<Mutex<HashMap<u64, TcpStream>>>;

impl Killable {
    /// Not yet listening: `addr` should be held by a `ReservedPort` that
    /// outlives this value, so that nothing else takes it while it is down.
    pub fn new(addr: SocketAddr) -> Killable {
        Killable {
            addr,
            running: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let open: OpenConnections = Arc::default();
        let next = AtomicU64::new(0);
        let backend = {
            let open = Arc::clone(&open);
            Backend::spawn_on(self.addr, move |s: TcpStream| {
                let id = next.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = s.try_clone() {
                    open.lock().unwrap().insert(id, clone);
                }
                serve_command(s, &|_, _| {});
                open.lock().unwrap().remove(&id);
            })
        };
        self.running = Some((backend, open));
    }

    /// Stops accepting and resets every open connection; returns how many
    /// there were.
    pub fn kill(&mut self) -> usize {
        let Some((backend, open)) = self.running.take() else {
            return 0;
        };
        drop(backend);
        let open: Vec<TcpStream> = open.lock().unwrap().drain().map(|(_, s)| s).collect();
        for s in &open {
            set_linger_zero(s);
            let _ = s.shutdown(Shutdown::Both);
        }
        open.len()
    }
}

/// Writes `len` bytes of `Pattern::new(seed)` in 64 KiB chunks, `pause`
/// after each, adding what it wrote to `sent` chunk by chunk so that
/// another thread can see it progress or stall.
pub fn send_pattern<W: Write>(
    w: &mut W,
    seed: u64,
    len: u64,
    pause: Duration,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut p = Pattern::new(seed);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        p.fill(&mut chunk[..n]);
        w.write_all(&chunk[..n])?;
        left -= n as u64;
        sent.fetch_add(n as u64, Ordering::SeqCst);
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    Ok(())
}

/// Waits until `counter` has not moved for `quiet` (at most `within`);
/// returns its value then, or None if it was still moving.
pub fn wait_stalled(counter: &AtomicU64, quiet: Duration, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    let mut last = counter.load(Ordering::SeqCst);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return Some(now);
        }
    }
    None
}

/// Replaces the file in one step, so that a reader never sees half of it.
pub fn write_atomically(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Socket inodes among a process's open descriptors.
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Open descriptors of a process.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The inode of the IPv4 TCP socket connected from `local` to `remote`,
/// from /proc/net/tcp (addresses in hex, in the host's byte order).
pub fn tcp_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (l, r) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == l && f[2] == r)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// `127.0.N.1` for N in 1..=`count`: source addresses to spread many
/// clients over, each with its own range of ephemeral ports.
pub fn loopback_sources(count: u8) -> Vec<std::net::IpAddr> {
    (1..=count)
        .map(|n| std::net::IpAddr::from([127, 0, n, 1]))
        .collect()
}

/// Starts `n` non-blocking connects to `target`, taking the source
/// addresses in turn; the sockets are returned at once, connected or not
/// (a full listen backlog leaves some in SYN_SENT, retrying).
pub fn start_connects(target: SocketAddr, n: usize, sources: &[std::net::IpAddr]) -> Vec<Socket> {
    (0..n)
        .map(|i| {
            let source = sources[i % sources.len()];
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            s.set_nonblocking(true).unwrap();
            s.bind(&SockAddr::from(SocketAddr::new(source, 0)))
                .unwrap_or_else(|e| panic!("bind {source}: {e}"));
            match s.connect(&SockAddr::from(target)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => panic!("connect {i} of {n} to {target}: {e}"),
            }
            s
        })
        .collect()
}

/// Sets this process's RLIMIT_NOFILE to `want`, soft and hard, when the
/// hard limit is lower and the process may raise it (root); otherwise
/// raises the soft limit as far as the hard one allows. Returns the soft
/// limit in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 only on some targets
pub fn raise_fd_hard_limit(want: u64) -> u64 {
    let limit = libc::rlimit {
        rlim_cur: want as libc::rlim_t,
        rlim_max: want as libc::rlim_t,
    };
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with pointers to local structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) == 0 && (now.rlim_max as u64) < want {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    super::raise_fd_limit(want)
}
