//! Reloads under load: SIGHUP every 100 ms for 5 s, alternating two files
//! that change backends, weights, the policy and a second listener, while
//! clients open hundreds of short connections a second and run long
//! transfers. Nothing may fail, and nothing may be left behind.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const RELOADS: usize = 50;
const RELOAD_EVERY: Duration = Duration::from_millis(100);
const SHORT_CLIENTS: usize = 4;
const LONG_TRANSFERS: u64 = 3;
const LONG_LEN: u64 = 16 << 20;

/// File A: backends x and y, round robin, one listener. File B: y and z
/// (z weighted), least connections, and a second listener.
fn config(web: SocketAddr, side: SocketAddr, b: &[SocketAddr; 3], variant: bool) -> String {
    let (policy, backends, listeners) = if variant {
        (
            "least-connections",
            format!("(address: \"{}\"), (address: \"{}\", weight: 2)", b[1], b[2]),
            format!(
                "(name: \"web\", bind: \"{web}\", pool: \"p\"), (name: \"side\", bind: \"{side}\", pool: \"p\")"
            ),
        )
    } else {
        (
            "round-robin",
            format!("(address: \"{}\"), (address: \"{}\")", b[0], b[1]),
            format!("(name: \"web\", bind: \"{web}\", pool: \"p\")"),
        )
    };
    format!(
        r#"(
    global: (workers: 2, access_log: false),
    timeouts: (drain: "30s"),
    listeners: [{listeners}],
    pools: [(name: "p", policy: "{policy}", health: (interval: "500ms"), backends: [{backends}])],
)"#
    )
}

/// Replaces the file in one step, so the balancer never reads half of it.
fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One short request: 32 bytes echoed back exactly.
fn short_request(web: SocketAddr, n: u64) -> Result<(), String> {
    let mut s = try_connect(web).map_err(|e| format!("connect: {e}"))?;
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

/// Sends `LONG_LEN` bytes in paced chunks and hashes the echo.
fn long_transfer(web: SocketAddr, seed: u64) -> Result<(), String> {
    let s = try_connect(web).map_err(|e| format!("connect: {e}"))?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let chunk = Pattern::bytes(seed, LONG_LEN as usize);
        for piece in chunk.chunks(64 << 10) {
            w.write_all(piece)?;
            thread::sleep(Duration::from_millis(15));
        }
        w.shutdown(Shutdown::Write)
    });
    let mut r = s;
    let got = hash_to_eof(&mut r, Duration::from_secs(40)).map_err(|e| format!("read: {e}"));
    writer
        .join()
        .map_err(|_| "writer panicked".to_string())?
        .map_err(|e| format!("write: {e}"))?;
    let (len, hash) = got?;
    if (len, hash) != (LONG_LEN, Pattern::hash(seed, LONG_LEN)) {
        return Err(format!("echo of {len} bytes does not match what was sent"));
    }
    Ok(())
}

#[test]
fn reloading_every_100ms_under_load_fails_no_connection_and_leaks_nothing() {
    let backends = [Backend::echo(), Backend::echo(), Backend::echo()];
    let addrs = [backends[0].addr(), backends[1].addr(), backends[2].addr()];
    let (web, side) = (free_addr(), free_addr());
    let lb = Balancer::with_config(&config(web, side, &addrs, false), web);
    let path = lb.config_path();
    // Warm up, then count descriptors in the state the test ends in.
    for n in 0..20 {
        short_request(web, n).expect("warm-up request");
    }
    thread::sleep(Duration::from_millis(200));
    let fds_before = open_fds(lb.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let short: Vec<_> = (0..SHORT_CLIENTS as u64)
        .map(|c| {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut n = c << 32;
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match short_request(web, n) {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(e),
                    }
                    n += 1;
                    thread::sleep(Duration::from_millis(4));
                }
                failures
            })
        })
        .collect();
    let long: Vec<_> = (0..LONG_TRANSFERS)
        .map(|seed| thread::spawn(move || long_transfer(web, 100 + seed)))
        .collect();

    let started = Instant::now();
    for i in 0..RELOADS {
        write_atomically(&path, &config(web, side, &addrs, i % 2 == 0));
        lb.signal(libc::SIGHUP);
        thread::sleep(RELOAD_EVERY);
    }
    // End on file A, the one the descriptor count was taken with.
    write_atomically(&path, &config(web, side, &addrs, false));
    lb.signal(libc::SIGHUP);
    let reload_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);

    let failures: Vec<String> = short
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let long_results: Vec<Result<(), String>> = long
        .into_iter()
        .map(|t| t.join().expect("transfer thread"))
        .collect();
    let served = served.load(Ordering::Relaxed);
    let rate = served as f64 / reload_time.as_secs_f64();
    println!(
        "{served} short connections in {reload_time:?} ({rate:.0}/s) across {RELOADS} reloads"
    );
    assert!(failures.is_empty(), "failed connections: {failures:?}");
    assert!(rate > 200.0, "only {rate:.0} connections/s");
    for (i, r) in long_results.iter().enumerate() {
        assert!(r.is_ok(), "long transfer {i}: {r:?}");
    }

    let logs = lb.logs_joined();
    let applied = logs.matches("reloaded").count();
    assert!(!logs.contains("failed, the running"), "{logs}");
    assert!(
        applied >= RELOADS / 2,
        "only {applied} reloads applied:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    // Sessions, sockets of removed listeners and backends all let go.
    let settled = wait_until(Duration::from_secs(5), || open_fds(lb.pid()) <= fds_before);
    assert!(
        settled,
        "descriptors: {} before the reloads, {} after",
        fds_before,
        open_fds(lb.pid())
    );
    assert!(
        logs.contains("listener side on"),
        "side was never added:\n{logs}"
    );
    assert!(try_connect(side).is_err(), "side listener still open");
    let mut check = connect(web);
    check.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    check.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}
