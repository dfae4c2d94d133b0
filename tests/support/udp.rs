//! UDP on loopback for the tests: echo backends (exact, or tagging each
//! reply with their name) that count what they got and from whom, and
//! client sockets with deadlines.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::net::localhost;

/// Socket buffers for test sockets that take bursts (4 MiB, the most
/// `net.core.rmem_max` allows on a stock Debian, forced past it as root).
pub const BURST_BUFFER: usize = 4 << 20;

/// What an echo backend saw.
#[derive(Default)]
struct Seen {
    datagrams: AtomicU64,
    /// Source addresses: one per flow socket of the balancer.
    peers: Mutex<HashSet<SocketAddr>>,
}

/// A UDP echo server on a thread of its own. Dropping it closes its port,
/// so datagrams sent there afterwards meet an ICMP port unreachable.
pub struct UdpBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl UdpBackend {
    /// Replies to each datagram with the same bytes.
    pub fn echo() -> UdpBackend {
        Self::spawn(Vec::new())
    }

    /// Replies with `name|` followed by the datagram, so a test sees which
    /// backend answered.
    pub fn tagged(name: &str) -> UdpBackend {
        Self::spawn(format!("{name}|").into_bytes())
    }

    fn spawn(prefix: Vec<u8>) -> UdpBackend {
        let socket = burst_socket(localhost(0));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            thread::Builder::new()
                .name(format!("udp-backend-{addr}"))
                .spawn(move || serve(socket, &prefix, &stop, &seen))
                .expect("spawn backend thread")
        };
        UdpBackend {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn datagrams(&self) -> u64 {
        self.seen.datagrams.load(Ordering::SeqCst)
    }

    /// Distinct source addresses seen: the balancer's flow sockets.
    pub fn peers(&self) -> usize {
        self.seen.peers.lock().unwrap().len()
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: UdpSocket, prefix: &[u8], stop: &AtomicBool, seen: &Seen) {
    let mut buf = vec![0u8; 65536];
    let at = prefix.len();
    buf[..at].copy_from_slice(prefix);
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf[at..]) {
            Ok((n, from)) => {
                seen.datagrams.fetch_add(1, Ordering::SeqCst);
                seen.peers.lock().unwrap().insert(from);
                // A reply too long for UDP is the test's mistake: say so.
                if let Err(e) = socket.send_to(&buf[..at + n], from) {
                    eprintln!("udp backend: reply of {} bytes failed: {e}", at + n);
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::TimedOut
                    || e.kind() == io::ErrorKind::Interrupted => {}
            // A flow socket of the balancer went away: not our concern.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                eprintln!("udp backend: receive failed: {e}");
                return;
            }
        }
    }
}

/// A UDP socket on `bind` with 4 MiB buffers each way.
pub fn burst_socket(bind: SocketAddr) -> UdpSocket {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, None).expect("socket");
    for option in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        force_buffer(&socket, option);
    }
    socket
        .bind(&SockAddr::from(bind))
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    socket.into()
}

/// Sets a buffer size past `rmem_max`/`wmem_max` (root), or as far as it
/// goes otherwise.
fn force_buffer(socket: &Socket, option: libc::c_int) {
    let size = BURST_BUFFER as libc::c_int;
    // SAFETY: setsockopt reads `size` (an int, as the option expects) for
    // the duration of the call only.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = match option {
            libc::SO_RCVBUFFORCE => socket.set_recv_buffer_size(BURST_BUFFER),
            _ => socket.set_send_buffer_size(BURST_BUFFER),
        };
    }
}

/// A client socket on 127.0.0.1 connected to `to`, with a read timeout.
pub fn client(to: SocketAddr) -> UdpSocket {
    client_from(IpAddr::V4(Ipv4Addr::LOCALHOST), to)
}

/// A client socket on `source` (any of 127.0.0.0/8), a port the kernel
/// picks, connected to `to`: it only takes datagrams from `to`, and an ICMP
/// port unreachable from `to` shows as `ConnectionRefused`.
pub fn client_from(source: IpAddr, to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind a client on {source}: {e}"));
    socket.connect(to).expect("connect a UDP client");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    socket
}

/// Sends `payload` and waits up to `within` for one reply datagram.
pub fn exchange(socket: &UdpSocket, payload: &[u8], within: Duration) -> io::Result<Vec<u8>> {
    socket.send(payload)?;
    receive(socket, within)
}

/// One datagram within `within` (at most 64 KiB, never truncated).
pub fn receive(socket: &UdpSocket, within: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time"));
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time"))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The name of the tagged backend that answered `payload`, checking that
/// the rest of the reply is the payload itself.
pub fn who_answers(socket: &UdpSocket, payload: &[u8]) -> io::Result<String> {
    let reply = exchange(socket, payload, Duration::from_secs(2))?;
    let bar = reply
        .iter()
        .position(|&b| b == b'|')
        .ok_or_else(|| io::Error::other("reply without a tag"))?;
    if &reply[bar + 1..] != payload {
        return Err(io::Error::other("reply is not the payload"));
    }
    Ok(String::from_utf8_lossy(&reply[..bar]).into_owned())
}

/// Descriptors the process `pid` has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
