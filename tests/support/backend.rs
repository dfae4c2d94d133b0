//! Real backend servers on loopback: a std TcpListener with an accept thread
//! and one thread per connection running a handler closure.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::net::{localhost, IO_TIMEOUT};

type Handler = dyn Fn(TcpStream) + Send + Sync + 'static;

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

/// A backend server. Dropping it stops the accept loop (connection handlers
/// end by themselves: their sockets have read/write timeouts).
pub struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    accept_thread: Option<JoinHandle<()>>,
}

struct ActiveGuard(Arc<Counters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend {
    /// A backend on 127.0.0.1 (free port) running `handler` for every
    /// accepted connection, each in its own thread.
    pub fn spawn<F>(handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        Self::spawn_on(localhost(0), handler)
    }

    /// Same as `spawn` but on a chosen address (e.g. `[::1]:0`).
    pub fn spawn_on<F>(bind: SocketAddr, handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let sock =
            Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&SockAddr::from(bind))
            .unwrap_or_else(|e| panic!("backend bind {bind}: {e}"));
        // A deep accept queue: the 1,000-session test connects in bursts.
        sock.listen(4096).unwrap();
        let listener: TcpListener = sock.into();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let accept_thread = {
            let stop = stop.clone();
            let counters = counters.clone();
            thread::Builder::new()
                .name(format!("backend-{addr}"))
                .spawn(move || accept_loop(listener, stop, counters, handler))
                .unwrap()
        };
        Backend {
            addr,
            stop,
            counters,
            accept_thread: Some(accept_thread),
        }
    }

    /// Writes `"{name}\n"` on accept, then reads (and discards) until the
    /// client side closes.
    pub fn identity(name: &str) -> Backend {
        Self::identity_on(localhost(0), name)
    }

    /// Same as `identity` but on a chosen address, e.g. a `ReservedPort`'s,
    /// which keeps refusing connections once this backend is dropped.
    pub fn identity_on(bind: SocketAddr, name: &str) -> Backend {
        let line = format!("{name}\n");
        Self::spawn_on(bind, move |mut s| {
            if s.write_all(line.as_bytes()).is_err() {
                return;
            }
            drain(&mut s);
        })
    }

    /// Echoes everything back; on EOF from the client, shuts down its write
    /// side after flushing.
    pub fn echo() -> Backend {
        Self::spawn(echo_handler)
    }

    pub fn echo_on(bind: SocketAddr) -> Backend {
        Self::spawn_on(bind, echo_handler)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose handler is still running.
    pub fn active(&self) -> usize {
        self.counters.active.load(Ordering::SeqCst)
    }

    /// Highest number of simultaneously running handlers seen.
    pub fn max_active(&self) -> usize {
        self.counters.max_active.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    handler: Arc<Handler>,
) {
    loop {
        let res = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match res {
            Ok((s, _)) => s,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted =>
            {
                continue
            }
            Err(e) => {
                // E.g. EMFILE: back off briefly rather than spin.
                eprintln!("backend accept error: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_nodelay(true);
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let now = counters.active.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_active.fetch_max(now, Ordering::SeqCst);
        let guard = ActiveGuard(counters.clone());
        let handler = handler.clone();
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _guard = guard;
                handler(stream);
            });
        if let Err(e) = spawned {
            eprintln!("backend could not spawn handler thread: {e}");
        }
    }
}

/// Echo until EOF, then shut down the write side.
pub fn echo_handler(mut s: TcpStream) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Write);
                drain(&mut s);
                return;
            }
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Read and discard until EOF, error or read timeout. Returns bytes read.
pub fn drain(s: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}
