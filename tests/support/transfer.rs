//! Two-way bulk transfers with hashed content: a backend that sends its
//! own stream while hashing what it receives, and a client that does the
//! same, so that a test can check every byte in both directions at once.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use super::{connect, hash_to_eof, write_pattern, Backend};

/// What one side received: (bytes, FNV-1a hash).
pub type Received = (u64, u64);

/// A backend that, for each connection, sends `len` bytes of
/// `Pattern::new(seed)` and shuts down its write side, while reading the
/// client's stream to EOF; it reports what it received on the channel.
pub fn hashing_backend(seed: u64, len: u64) -> (Backend, Receiver<Received>) {
    let (tx, rx) = mpsc::channel::<Received>();
    let tx = Mutex::new(tx);
    let backend = Backend::spawn(move |s: TcpStream| {
        let Ok(tx) = tx.lock().map(|t| t.clone()) else {
            return;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
        let Ok(mut w) = s.try_clone() else {
            return;
        };
        let sender = thread::spawn(move || {
            let sent = write_pattern(&mut w, seed, len);
            let _ = w.shutdown(Shutdown::Write);
            sent.is_ok()
        });
        let mut r = s;
        let got = hash_to_eof(&mut r, Duration::from_secs(60));
        if let (Ok(got), Ok(true)) = (got, sender.join()) {
            let _ = tx.send(got);
        }
    });
    (backend, rx)
}

/// Connects to `listen`, sends `len` bytes of `Pattern::new(seed)` then
/// FIN while reading to EOF. Returns (hash sent, what came back).
pub fn both_ways(listen: SocketAddr, seed: u64, len: u64, within: Duration) -> (u64, Received) {
    let client = connect(listen);
    client
        .set_write_timeout(Some(within))
        .expect("client write timeout");
    let mut w = client.try_clone().expect("clone the client socket");
    let writer = thread::spawn(move || {
        let sent = write_pattern(&mut w, seed, len);
        let _ = w.shutdown(Shutdown::Write);
        sent
    });
    let mut r = client;
    let got = hash_to_eof(&mut r, within).expect("client reading to EOF");
    let sent = writer
        .join()
        .expect("client writer thread")
        .expect("client writing its stream");
    (sent, got)
}
