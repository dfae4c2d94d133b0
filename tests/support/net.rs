//! Client-side socket helpers. Every socket made here has read and write
//! timeouts, and every loop has a deadline.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// Default read/write timeout for test sockets: long enough never to fire on
/// a healthy run, short enough that a hung engine fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub fn localhost_v6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
}

/// A loopback port for a server the test starts next (the balancer's listen
/// address, mostly). The port stays reserved for the rest of the test
/// process: it is bound with `SO_REUSEADDR` and never listening, then
/// deliberately leaked. A port that was merely free a moment ago could be
/// taken by another test first, or still be held in LISTEN by the copy of a
/// just-dropped listener that a concurrently spawned process carries between
/// its fork and its exec; a reserved one cannot, and while nothing listens
/// on it, it refuses connections.
pub fn free_port() -> u16 {
    let reserved = ReservedPort::on(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = reserved.addr.port();
    std::mem::forget(reserved);
    port
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    localhost(free_port())
}

/// A port held for a server the test starts next, for as long as this
/// value lives: bound with `SO_REUSEADDR`, never listening (`::` gives a
/// dual-stack port). Unlike with `free_addr`, nothing can take the port
/// before the server binds it: other tests' `bind(0)`s and `connect()`s skip
/// a bound port, and a copy of this socket that a concurrently spawned
/// process holds between its fork and its exec does not get in the way
/// either. The server must set `SO_REUSEADDR` too, as the balancer and
/// `Backend::spawn_on` do. When no server listens on it, the port refuses
/// connections, so a backend dropped from a reserved port leaves a port that
/// keeps refusing and that no one else can take.
pub struct ReservedPort {
    _sock: Socket,
    pub addr: SocketAddr,
}

impl ReservedPort {
    /// A port below the kernel's ephemeral range when there is room for
    /// one: no `connect()` or `bind(0)`, a test's or a balancer's (a UDP
    /// flow's socket, a backend connect), is ever given such a port, so a
    /// UDP listener on the reserved number, which the TCP reservation does
    /// not cover, cannot find it taken. Else any free port.
    pub fn on(ip: IpAddr) -> ReservedPort {
        let sock = Socket::new(
            Domain::for_address(SocketAddr::new(ip, 0)),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .unwrap();
        if ip.is_ipv6() {
            sock.set_only_v6(false).unwrap();
        }
        sock.set_reuse_address(true).unwrap();
        let bound = below_ephemeral()
            .map(|port| SocketAddr::new(ip, port))
            .chain([SocketAddr::new(ip, 0)])
            .find(|addr| sock.bind(&SockAddr::from(*addr)).is_ok());
        bound.unwrap_or_else(|| panic!("no port to bind on {ip}"));
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        ReservedPort { _sock: sock, addr }
    }
}

/// Up to 200 candidate ports from 10000 to just below the ephemeral range
/// (`ip_local_port_range`), walked by one cursor per test process that
/// starts at an offset of the process id, so tests and test processes
/// rarely try the same ones. Empty when fewer than 2000 such ports exist.
fn below_ephemeral() -> impl Iterator<Item = u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    const LOW: u32 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = high.saturating_sub(LOW);
    let tries = if span < 2_000 { 0 } else { 200 };
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span.max(1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    (0..tries).map(move |_| (LOW + CURSOR.fetch_add(1, Ordering::Relaxed) % span) as u16)
}

/// Like `free_port`, on both stacks (`[::]`, dual-stack on this machine).
pub fn free_dual_stack_port() -> u16 {
    let reserved = ReservedPort::on(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let port = reserved.addr.port();
    std::mem::forget(reserved);
    port
}

/// A loopback address that refuses connections for as long as this value
/// lives: the port is bound (so nobody else can take it) but not listening,
/// so a SYN to it is answered with RST.
pub struct RefusingPort {
    _sock: Socket,
    pub addr: SocketAddr,
}

impl RefusingPort {
    pub fn new() -> Self {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.bind(&SockAddr::from(localhost(0))).unwrap();
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        let r = RefusingPort { _sock: sock, addr };
        // Make sure it really refuses.
        match TcpStream::connect_timeout(&r.addr, Duration::from_secs(2)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            other => panic!("refusing port {} did not refuse: {other:?}", r.addr),
        }
        r
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback listener whose accept queue is full and which never accepts,
/// so further SYNs to it are dropped and a connect to it never completes.
pub struct BlackHole {
    _listener: Socket,
    _fillers: Vec<Socket>,
    pub addr: SocketAddr,
}

impl BlackHole {
    pub fn new() -> Self {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        listener.bind(&SockAddr::from(localhost(0))).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // With backlog 0 Linux queues one connection; then the queue is
        // full and SYNs are dropped. Fill it with a few connections, keeping
        // the sockets (even those still in SYN_SENT) alive.
        let mut fillers = Vec::new();
        for _ in 0..3 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            let _ = s.connect_timeout(&SockAddr::from(addr), Duration::from_millis(100));
            fillers.push(s);
        }
        // Check: a further connect must not complete.
        let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        match probe.connect_timeout(&SockAddr::from(addr), Duration::from_millis(300)) {
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            }
            other => panic!("black hole {addr} is not a black hole: probe connect gave {other:?}"),
        }
        BlackHole {
            _listener: listener,
            _fillers: fillers,
            addr,
        }
    }
}

impl Default for BlackHole {
    fn default() -> Self {
        Self::new()
    }
}

/// Connect with a 5 s connect timeout; the stream gets IO_TIMEOUT read and
/// write timeouts and TCP_NODELAY.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Like `connect`, but from a chosen source IP (any of 127.0.0.0/8 works
/// on loopback), with a port the kernel picks.
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    try_connect_from(source, addr)
        .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"))
}

pub fn try_connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    sock.connect_timeout(&SockAddr::from(addr), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reset the connection on drop (SO_LINGER 0) instead of a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let now = Instant::now();
    if now >= deadline {
        None
    } else {
        Some((deadline - now).max(Duration::from_millis(1)))
    }
}

/// Read bytes until a '\n' (included) or until the deadline / EOF / error,
/// whichever comes first; returns what was read as a (lossy) string.
pub fn read_line(s: &mut TcpStream, within: Duration) -> io::Result<String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no full line within {within:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
            ));
        };
        s.set_read_timeout(Some(left))?;
        match s.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before newline; got {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                ))
            }
            Ok(_) => {
                out.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Read exactly `n` bytes with an overall deadline.
pub fn read_exact_within(s: &mut TcpStream, n: usize, within: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let Some(left) = remaining(deadline) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("read {got} of {n} bytes within {within:?}"),
            ));
        };
        s.set_read_timeout(Some(left))?;
        match s.read(&mut out[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {got} of {n} bytes"),
                ))
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Read until EOF with an overall deadline. Errors (including a reset or the
/// deadline) are returned as errors.
pub fn read_to_eof(s: &mut TcpStream, within: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no EOF within {within:?} ({} bytes read)", out.len()),
            ));
        };
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How a connection ended from the reader's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// read returned 0.
    Eof,
    /// read failed with a connection error (reset, aborted, ...).
    Error(io::ErrorKind),
}

/// Read (and count) until the peer closes the connection, at most `within`.
/// Returns how it closed, the elapsed time and the number of bytes read, or
/// Err with the bytes read if it is still open at the deadline.
pub fn wait_closed(
    s: &mut TcpStream,
    within: Duration,
) -> Result<(Closed, Duration, usize), usize> {
    let start = Instant::now();
    let deadline = start + within;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(total);
        };
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok((Closed::Eof, start.elapsed(), total)),
            Ok(k) => total += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                if Instant::now() >= deadline {
                    return Err(total);
                }
            }
            Err(e) => return Ok((Closed::Error(e.kind()), start.elapsed(), total)),
        }
    }
}

/// Write `len` bytes of `Pattern::new(seed)` in chunks; returns the hash of
/// what was written.
pub fn write_pattern<W: Write>(w: &mut W, seed: u64, len: u64) -> io::Result<u64> {
    let mut p = super::Pattern::new(seed);
    let mut h = super::Fnv1a::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finish())
}

/// Read until EOF, hashing; returns (bytes, hash). Stops with an error at
/// the deadline.
pub fn hash_to_eof(s: &mut TcpStream, within: Duration) -> io::Result<(u64, u64)> {
    let deadline = Instant::now() + within;
    let mut h = super::Fnv1a::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no EOF within {within:?} ({} bytes read)", h.len()),
            ));
        };
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok((h.len(), h.finish())),
            Ok(k) => h.update(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Raise this process's soft RLIMIT_NOFILE to at least `want` (up to the hard
/// limit). Returns the resulting soft limit.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 only on some targets
pub fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if (lim.rlim_cur as u64) < want {
            let new_cur = (want as libc::rlim_t).min(lim.rlim_max);
            let new = libc::rlimit {
                rlim_cur: new_cur,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                lim.rlim_cur = new_cur;
            }
        }
        lim.rlim_cur as u64
    }
}

/// Sleep in small steps until `cond` holds or the deadline passes; returns
/// whether it held.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}
