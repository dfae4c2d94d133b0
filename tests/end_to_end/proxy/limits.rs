//! Running out of file descriptors: the balancer pauses accepting instead of
//! spinning, keeps serving the sessions it has, logs at a limited rate, and
//! recovers once descriptors free up; a limit too low for the listeners'
//! `max_connections` is said at start.

use crate::support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// Sends a line and waits for its echo; true if it came back in time.
fn served(c: &mut TcpStream, payload: &[u8], within: Duration) -> bool {
    c.write_all(payload).is_ok()
        && read_exact_within(c, payload.len(), within).is_ok_and(|got| got == payload)
}

fn is_accept_warning(line: &str) -> bool {
    line.contains("session limit") || line.contains("cannot accept")
}

#[test]
fn descriptor_exhaustion_pauses_accepts_without_spinning_and_recovers() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "1")
        .fd_limit(64)
        .start();

    // Far more clients than 64 descriptors can hold (two per session): the
    // kernel completes their handshakes into the listen backlog regardless.
    let mut clients: Vec<TcpStream> = (0..150).map(|_| connect(lb.listen)).collect();
    let payload = |i: usize| format!("client {i:03}\n").into_bytes();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&payload(i))
            .expect("write to a backlogged client");
    }
    std::thread::sleep(Duration::from_millis(300));
    // Whoever was accepted has had ample time for the echo to come back.
    let mut served_count = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let echoed = read_exact_within(c, payload(i).len(), Duration::from_millis(5));
        if echoed.is_ok_and(|got| got == payload(i)) {
            served_count += 1;
        }
    }
    assert!(served_count > 5, "only {served_count} clients served");
    assert!(
        served_count < 150,
        "all clients served: the limit did not bite"
    );
    let dropped = lb
        .access_logs()
        .iter()
        .filter(|l| l.end == "no-backend")
        .count();
    assert_eq!(
        dropped, 0,
        "clients accepted without a descriptor for their backend"
    );
    let warned = lb.wait_for_line(Duration::from_secs(2), is_accept_warning);
    assert!(warned.is_some(), "no accept warning:\n{}", lb.logs_joined());

    // Saturated: the backlog still holds clients it cannot accept.
    let cpu_before = lb.cpu_time();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = lb.cpu_time() - cpu_before;
    let elapsed = window.elapsed();
    println!("CPU while out of descriptors: {cpu:?} over {elapsed:?}");
    assert!(
        cpu < Duration::from_millis(200),
        "balancer used {cpu:?} of CPU in {elapsed:?} while out of descriptors"
    );
    let warnings = lb.logs().iter().filter(|l| is_accept_warning(l)).count();
    assert!(
        warnings <= 6,
        "{warnings} accept warnings in about 3 s: not rate-limited"
    );

    // Recovery: once the clients leave, a new client is served promptly.
    drop(clients);
    let recovered = wait_until(Duration::from_secs(10), || {
        let Ok(mut c) = try_connect(lb.listen) else {
            return false;
        };
        served(&mut c, b"after\n", Duration::from_millis(500))
    });
    assert!(
        recovered,
        "not serving after the clients left:\n{}",
        lb.logs_joined()
    );
}

#[test]
fn an_open_file_limit_too_low_for_max_connections_is_logged_at_start() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "1")
        .opt("--max-connections", "10000")
        .fd_limit(64)
        .start();
    let logs = lb.logs_joined();
    assert!(
        logs.contains("open file limit 64: at most 14 sessions (14 per worker)"),
        "{logs}"
    );
    let warning = lb
        .logs()
        .into_iter()
        .find(|l| l.contains("[WARN]") && l.contains("open file limit 64 allows"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(
        warning.contains(
            "open file limit 64 allows at most ~14 sessions, but listeners allow 10000: raise LimitNOFILE"
        ),
        "{warning}"
    );

    // With a limit that holds them all there is nothing to warn about.
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "1")
        .opt("--max-connections", "10")
        .fd_limit(64)
        .start();
    assert!(
        !lb.logs_joined().contains("raise LimitNOFILE"),
        "{}",
        lb.logs_joined()
    );
}
