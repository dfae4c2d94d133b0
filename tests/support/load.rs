//! Steady client load for tests that change the balancer under traffic:
//! threads opening short echo connections back to back, and long echoed
//! transfers written in paced chunks, both checked byte for byte.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{hash_to_eof, read_exact_within, try_connect, Pattern};

/// One short request: 32 bytes echoed back exactly.
pub fn short_request(addr: SocketAddr, n: u64) -> Result<(), String> {
    let mut s = try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    let request = format!("request {n:>24}\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let echoed = read_exact_within(&mut s, request.len(), Duration::from_secs(5))
        .map_err(|e| format!("read: {e}"))?;
    if echoed != request.as_bytes() {
        return Err(format!("wrong echo {:?}", String::from_utf8_lossy(&echoed)));
    }
    Ok(())
}

/// Threads each making `short_request`s to an echo service, `pause` apart,
/// until stopped.
pub struct ShortClients {
    stop: Arc<AtomicBool>,
    attempted: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

/// What the short clients did: requests attempted, served, and why each
/// failed one failed.
pub struct ShortTotals {
    pub attempted: u64,
    pub served: u64,
    pub failures: Vec<String>,
}

impl ShortClients {
    pub fn start(addr: SocketAddr, clients: u64, pause: Duration) -> ShortClients {
        let stop = Arc::new(AtomicBool::new(false));
        let attempted = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|c| {
                let (stop, attempted, served) = (stop.clone(), attempted.clone(), served.clone());
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut n = c << 32;
                    while !stop.load(Ordering::Relaxed) {
                        attempted.fetch_add(1, Ordering::Relaxed);
                        match short_request(addr, n) {
                            Ok(()) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.push(e),
                        }
                        n += 1;
                        thread::sleep(pause);
                    }
                    failures
                })
            })
            .collect();
        ShortClients {
            stop,
            attempted,
            served,
            threads,
        }
    }

    pub fn stop(self) -> ShortTotals {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect();
        ShortTotals {
            attempted: self.attempted.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            failures,
        }
    }
}

/// Sends `len` bytes of `Pattern::new(seed)` to an echo service in 64 KiB
/// chunks `pause` apart, then FIN, and checks the hash of what comes back.
/// Returns the bytes verified.
pub fn paced_transfer(
    addr: SocketAddr,
    seed: u64,
    len: u64,
    pause: Duration,
) -> Result<u64, String> {
    let s = try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let bytes = Pattern::bytes(seed, len as usize);
        for piece in bytes.chunks(64 << 10) {
            w.write_all(piece)?;
            thread::sleep(pause);
        }
        w.shutdown(Shutdown::Write)
    });
    let mut r = s;
    let got = hash_to_eof(&mut r, Duration::from_secs(60)).map_err(|e| format!("read: {e}"));
    writer
        .join()
        .map_err(|_| "writer panicked".to_string())?
        .map_err(|e| format!("write: {e}"))?;
    let (got_len, hash) = got?;
    if (got_len, hash) != (len, Pattern::hash(seed, len)) {
        return Err(format!(
            "echo of {got_len} bytes does not match what was sent"
        ));
    }
    Ok(got_len)
}
