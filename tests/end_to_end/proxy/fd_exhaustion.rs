//! Out of descriptors: a balancer limited to 256 open files gets 1,000
//! clients at once. It must keep serving the sessions it holds, not spin,
//! say so in the log a few times a second at most, and be whole again once
//! the clients leave.

use crate::support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::chaos::{loopback_sources, open_fds, start_connects};
use support::*;

const FD_LIMIT: u64 = 256;
const HELD: usize = 40;
const CLIENTS: usize = 1000;

/// Whether a line reports the session limit or a failed accept.
fn is_exhaustion_line(line: &str) -> bool {
    line.contains("session limit") || line.contains("cannot accept")
}

fn echo_once(c: &mut TcpStream, what: &[u8]) {
    c.write_all(what).expect("write on a held session");
    let got =
        read_exact_within(c, what.len(), Duration::from_secs(2)).expect("echo on a held session");
    assert_eq!(got, what);
}

#[test]
fn out_of_descriptors_keeps_serving_held_sessions_without_spinning_and_recovers() {
    raise_fd_limit(4 * CLIENTS as u64);
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "2")
        .fd_limit(FD_LIMIT)
        .start();
    thread::sleep(Duration::from_millis(100));
    let fds_idle = open_fds(lb.pid());

    let mut held: Vec<TcpStream> = (0..HELD).map(|_| connect(lb.listen)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        echo_once(c, format!("held {i:>4}\n").as_bytes());
    }

    // The flood: far more clients than the balancer has descriptors for.
    let flood_start = Instant::now();
    let flood = start_connects(lb.listen, CLIENTS, &loopback_sources(4));
    let saturated = wait_until(Duration::from_secs(5), || {
        lb.logs().iter().any(|l| is_exhaustion_line(l))
    });
    assert!(
        saturated,
        "no word of the limit in the log:\n{}",
        lb.logs_joined()
    );
    let fds_full = open_fds(lb.pid());
    assert!(fds_full as u64 <= FD_LIMIT, "{fds_full} descriptors open");

    // Saturated: CPU over 2 s, with the held sessions still answering.
    let cpu_before = lb.cpu_time();
    let measured = Instant::now();
    let mut exchanges = 0;
    while measured.elapsed() < Duration::from_secs(2) {
        for (i, c) in held.iter_mut().enumerate() {
            echo_once(c, format!("again{i:>4}\n").as_bytes());
            exchanges += 1;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let cpu = lb.cpu_time() - cpu_before;
    let wall = measured.elapsed();
    let logs = lb.logs();
    let exhaustion_lines = logs.iter().filter(|l| is_exhaustion_line(l)).count();
    let flood_secs = flood_start.elapsed().as_secs_f64();
    println!(
        "fd limit {FD_LIMIT}: {HELD} held sessions + {CLIENTS} clients; {fds_full} descriptors open when full (idle {fds_idle}); \
         {exchanges} echoes on held sessions; CPU {cpu:?} in {wall:?}; {exhaustion_lines} limit lines in {flood_secs:.1} s"
    );
    assert!(
        cpu < Duration::from_millis(500),
        "the balancer used {cpu:?} of CPU in {wall:?} while out of descriptors"
    );
    assert!(
        exhaustion_lines as f64 <= 3.0 * flood_secs.ceil(),
        "{exhaustion_lines} lines about the limit in {flood_secs:.1} s:\n{}",
        logs.iter()
            .filter(|l| is_exhaustion_line(l))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The clients leave: every descriptor comes back, new clients are served.
    drop(flood);
    drop(held);
    let recovered = wait_until(Duration::from_secs(10), || {
        open_fds(lb.pid()) <= fds_idle + 4
    });
    let fds_after = open_fds(lb.pid());
    assert!(
        recovered,
        "{fds_after} descriptors open after the clients left (idle {fds_idle})"
    );
    let mut fresh = connect(lb.listen);
    echo_once(&mut fresh, b"after the flood\n");
    println!("recovered: {fds_after} descriptors open (idle {fds_idle}), a new client served");
}
