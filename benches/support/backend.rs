//! TCP backends on loopback for the benches, and the request they answer.
//!
//! The first byte of a connection says what the backend does with it, so
//! one pair of backends (and one balancer in front of them) serves every
//! scenario:
//! - [`KEEP_ALIVE`]: echo every byte until the client closes;
//! - [`CLOSE`]: read one [`MESSAGE`]-byte request, answer it, close;
//! - [`SINK`]: read and count bytes until the client closes.
//!
//! A fixed set of threads blocks in `accept` on the same socket, so a new
//! connection costs no thread start and, once they run, no heap
//! allocation: the allocation bench counts the whole process.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Bytes in each request and each reply.
pub const MESSAGE: usize = 100;
pub const KEEP_ALIVE: u8 = b'K';
pub const CLOSE: u8 = b'C';
pub const SINK: u8 = b'S';

/// A stalled peer frees its thread after this long.
const IDLE: Duration = Duration::from_secs(5);

pub struct Backend {
    pub addr: SocketAddr,
    /// Bytes received on [`SINK`] connections so far.
    pub sunk: Arc<AtomicU64>,
}

impl Backend {
    /// Listens on a free loopback port with `threads` connection threads,
    /// which live as long as the process: each serves one connection at a
    /// time, so `threads` is how many it holds open at once.
    pub fn start(threads: usize) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend bind");
        let addr = listener.local_addr().expect("backend address");
        let sunk = Arc::new(AtomicU64::new(0));
        for i in 0..threads {
            let listener = listener.try_clone().expect("backend socket");
            let sunk = Arc::clone(&sunk);
            thread::Builder::new()
                .name(format!("backend-{}-{i}", addr.port()))
                .spawn(move || serve(&listener, &sunk))
                .expect("backend thread");
        }
        Backend { addr, sunk }
    }
}

fn serve(listener: &TcpListener, sunk: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        // A failed connection is the client's to report.
        let _ = connection(stream, &mut buf, sunk);
    }
}

fn connection(mut stream: TcpStream, buf: &mut [u8], sunk: &AtomicU64) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let n = stream.read(buf)?;
    if n == 0 {
        return Ok(());
    }
    match buf[0] {
        KEEP_ALIVE => {
            let mut n = n;
            while n > 0 {
                stream.write_all(&buf[..n])?;
                n = stream.read(buf)?;
            }
            Ok(())
        }
        CLOSE => {
            if n < MESSAGE {
                stream.read_exact(&mut buf[n..MESSAGE])?;
            }
            stream.write_all(&buf[..MESSAGE])
        }
        SINK => {
            let mut n = n;
            while n > 0 {
                sunk.fetch_add(n as u64, Ordering::Relaxed);
                n = stream.read(buf)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A TCP port nothing listens on now; bound and dropped, so another
/// process could take it first, which a quiet machine makes unlikely.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
