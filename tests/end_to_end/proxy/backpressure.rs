//! Memory per session is bounded: when the side being written to does not
//! read, the balancer stops reading from the other side instead of
//! buffering.

use crate::support;

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn backend_that_never_reads_does_not_grow_balancer_memory() {
    // The backend accepts but does not read until released; then it reads
    // everything to EOF and reports (bytes, hash).
    let release = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let tx = Mutex::new(tx);
    let backend = {
        let release = release.clone();
        Backend::spawn(move |mut s: TcpStream| {
            let tx = tx.lock().unwrap().clone();
            let until = Instant::now() + Duration::from_secs(20);
            while !release.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
            if let Ok(got) = hash_to_eof(&mut s, Duration::from_secs(20)) {
                let _ = tx.send(got);
            }
        })
    };
    let lb = Balancer::quick(&[backend.addr()]);

    let mut c = connect(lb.listen);
    assert!(
        wait_until(Duration::from_secs(2), || backend.accepted() == 1),
        "backend never got the connection"
    );
    thread::sleep(Duration::from_millis(100));
    let rss_before = lb.rss_kib();

    // Write as fast as the balancer lets us for 2 s.
    c.set_nonblocking(true).unwrap();
    let mut pattern = Pattern::new(11);
    let mut hash = Fnv1a::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = chunk.len();
    let start = Instant::now();
    let mut last_progress = start;
    while start.elapsed() < Duration::from_secs(2) {
        if offset == chunk.len() {
            pattern.fill(&mut chunk);
            offset = 0;
        }
        match c.write(&chunk[offset..]) {
            Ok(n) => {
                hash.update(&chunk[offset..offset + n]);
                offset += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("client write failed after {} bytes: {e}", hash.len()),
        }
    }
    let written = hash.len();
    let stalled_for = last_progress.elapsed();
    thread::sleep(Duration::from_millis(100));
    let rss_after = lb.rss_kib();
    let growth_kib = rss_after.saturating_sub(rss_before);
    println!(
        "backend never reads: client wrote {:.1} MiB, then blocked for {:?}; balancer VmRSS {} KiB -> {} KiB (growth {} KiB)",
        written as f64 / MIB as f64,
        stalled_for,
        rss_before,
        rss_after,
        growth_kib
    );
    assert!(
        growth_kib < 8 * 1024,
        "balancer RSS grew by {growth_kib} KiB while the backend did not read (client wrote {written} bytes)"
    );
    assert!(
        written < 128 * MIB,
        "the balancer accepted {written} bytes from the client although the backend reads nothing"
    );
    assert!(
        stalled_for >= Duration::from_millis(500),
        "client writes were still progressing {stalled_for:?} before the end: no backpressure"
    );

    // Release the backend: everything the client wrote arrives, in order.
    release.store(true, Ordering::SeqCst);
    c.set_nonblocking(false).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    if offset < chunk.len() {
        // Finish the current chunk so the stream stays a pattern prefix.
        c.write_all(&chunk[offset..]).unwrap();
    }
    let total = written + (chunk.len() - offset) as u64;
    c.shutdown(Shutdown::Write).unwrap();
    let (got_len, got_hash) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("backend report");
    assert_eq!(
        got_len, total,
        "bytes lost or duplicated under backpressure"
    );
    assert_eq!(
        got_hash,
        Pattern::hash(11, total),
        "data corrupted under backpressure"
    );
}

#[test]
fn client_that_never_reads_does_not_grow_balancer_memory() {
    // The other direction: a backend streams as fast as it can to a client
    // that reads nothing for 2 s.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<u64>();
    let tx = Mutex::new(tx);
    let backend = {
        let stop = stop.clone();
        Backend::spawn(move |mut s: TcpStream| {
            let tx = tx.lock().unwrap().clone();
            s.set_nonblocking(true).unwrap();
            let buf = vec![0x5au8; 64 * 1024];
            let mut written = 0u64;
            let until = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match s.write(&buf) {
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(written);
        })
    };
    let lb = Balancer::quick(&[backend.addr()]);
    let c = connect(lb.listen);
    assert!(wait_until(Duration::from_secs(2), || backend.accepted() == 1));
    let rss_before = lb.rss_kib();
    thread::sleep(Duration::from_secs(2));
    let rss_after = lb.rss_kib();
    stop.store(true, Ordering::SeqCst);
    let written = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("backend report");
    let growth_kib = rss_after.saturating_sub(rss_before);
    println!(
        "client never reads: backend wrote {:.1} MiB; balancer VmRSS {rss_before} KiB -> {rss_after} KiB (growth {growth_kib} KiB)",
        written as f64 / MIB as f64
    );
    assert!(
        growth_kib < 8 * 1024,
        "balancer RSS grew by {growth_kib} KiB"
    );
    assert!(
        written < 128 * MIB,
        "balancer took {written} bytes from the backend for a client that reads nothing"
    );
    drop(c);
}

#[test]
fn small_buffer_size_still_relays_large_transfer_intact() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--buffer-size", "4096")
        .start();
    let c = connect(lb.listen);
    let mut w = c.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let h = write_pattern(&mut w, 21, 8 * MIB);
        let _ = w.shutdown(Shutdown::Write);
        h
    });
    let mut r = c;
    let (len, hash) = hash_to_eof(&mut r, Duration::from_secs(20)).expect("echo to EOF");
    let sent = writer.join().unwrap().expect("write");
    assert_eq!(len, 8 * MIB);
    assert_eq!(hash, sent);
}
