//! Reloads under load: SIGHUP every 100 ms for 5 s, alternating two files
//! that change backends, weights, the policy and a second listener, while
//! clients open hundreds of short connections a second and run long
//! transfers. Nothing may fail, and nothing may be left behind.

use crate::support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const RELOADS: usize = 50;
const RELOAD_EVERY: Duration = Duration::from_millis(100);
const SHORT_CLIENTS: u64 = 4;
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

/// Descriptors other than pipes: the long transfers relay with splice, and
/// each reactor keeps the empty pipes they used for the next bulk flow, so
/// pipes are reused rather than leaked (bounded per reactor).
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path())
                    .map_or(true, |t| !t.to_string_lossy().starts_with("pipe:"))
            })
            .count()
    })
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
        load::short_request(web, n).expect("warm-up request");
    }
    thread::sleep(Duration::from_millis(200));
    let fds_before = open_fds(lb.pid());

    let short = load::ShortClients::start(web, SHORT_CLIENTS, Duration::from_millis(4));
    let long: Vec<_> = (0..LONG_TRANSFERS)
        .map(|seed| {
            let pace = Duration::from_millis(15);
            thread::spawn(move || load::paced_transfer(web, 100 + seed, LONG_LEN, pace))
        })
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
    let load::ShortTotals {
        served, failures, ..
    } = short.stop();
    let long_results: Vec<Result<u64, String>> = long
        .into_iter()
        .map(|t| t.join().expect("transfer thread"))
        .collect();
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
