//! Ten thousand idle connections at once: all of them established through
//! to the backend, their memory measured, a new client still served at
//! once, and every descriptor given back when they leave.
//!
//! A session takes two descriptors, and the balancer keeps room for pipes
//! (2.5 a session), so 10,000 need an open-file limit of about 25,100. Where
//! the hard limit is lower and this process may not raise it (no
//! CAP_SYS_RESOURCE), the test runs with as many connections as that limit
//! lets the balancer hold, says so, and skips below 1,000.

use crate::support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use support::chaos::{loopback_sources, open_fds, raise_fd_hard_limit, start_connects};
use support::holder::Holder;
use support::*;

const WANTED: usize = 10_000;
/// The balancer's descriptor limit when it may be raised: two sockets a
/// session and room for its pipes, so that its session cap lies above
/// `WANTED`.
const BALANCER_FDS: u64 = 32_768;

/// Sessions a balancer with two workers, one listener and `fds` open files
/// holds (`limits::sessions_per_reactor`): what is left after 30 fixed
/// descriptors, at 2.5 a session.
fn session_cap(fds: u64) -> usize {
    (fds.saturating_sub(30) * 2 / 5) as usize
}

/// The number of connections to open: `WANTED`, or 95% of what the hard
/// open-file limit lets the balancer hold, in hundreds.
fn connection_count() -> Option<(usize, u64)> {
    let needed = 2 * WANTED as u64 + 1_000;
    let limit = raise_fd_hard_limit(needed.max(BALANCER_FDS));
    let balancer_fds = BALANCER_FDS.min(limit);
    let fits = (session_cap(balancer_fds) * 19 / 20 / 100 * 100).min((limit as usize - 1_000) / 2);
    let n = WANTED.min(fits);
    if n < WANTED {
        println!(
            "the open-file limit is {limit} and cannot be raised (raising it needs CAP_SYS_RESOURCE): \
             the balancer holds {} sessions at most, so {n} connections instead of {WANTED}",
            session_cap(balancer_fds)
        );
    }
    if n < 1_000 {
        support::skip::skip(
            &format!("the open-file limit allows {n} connections, which would not show much"),
            &[],
        );
        return None;
    }
    Some((n, balancer_fds))
}

/// Polls `count` every 100 ms until `done` holds or `within` passes;
/// returns the last count and how long it took.
fn wait_count(
    within: Duration,
    mut count: impl FnMut() -> usize,
    done: impl Fn(usize) -> bool,
) -> (usize, Duration, bool) {
    let start = Instant::now();
    loop {
        let n = count();
        if done(n) || start.elapsed() >= within {
            return (n, start.elapsed(), done(n));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn thousands_of_idle_connections_are_held_cheaply_and_a_new_client_is_served_at_once() {
    // Each connection costs this process a client socket and the holder's
    // accepted one, and the balancer two.
    let Some((connections, balancer_fds)) = connection_count() else {
        return;
    };
    let holder = Holder::start();
    let lb = Balancer::builder(free_addr())
        .backend(holder.addr())
        .opt("--workers", "2")
        .fd_limit(balancer_fds)
        .start();
    let mut warm = connect(lb.listen);
    warm.write_all(b"warm\n").unwrap();
    read_exact_within(&mut warm, 5, Duration::from_secs(2)).unwrap();
    drop(warm);
    thread::sleep(Duration::from_millis(200));
    let fds_before = open_fds(lb.pid());
    let rss_before = lb.rss_kib();

    let clients = start_connects(lb.listen, connections, &loopback_sources(8));
    let want = fds_before + 2 * connections;
    let (fds, took, all) = wait_count(
        Duration::from_secs(20),
        || open_fds(lb.pid()),
        |n| n >= want,
    );
    assert!(
        all,
        "the balancer holds {fds} descriptors after {took:?}, expected {want}"
    );
    let sockets = support::chaos::socket_inodes(lb.pid()).len();
    assert!(
        sockets >= 2 * connections,
        "{sockets} sockets for {connections} connections"
    );
    assert!(
        wait_until(Duration::from_secs(5), || holder.open() >= connections),
        "the backend holds {} connections",
        holder.open()
    );
    thread::sleep(Duration::from_millis(200));
    let rss_full = lb.rss_kib();
    let per_connection = rss_full.saturating_sub(rss_before) as f64 / connections as f64;

    let asked = Instant::now();
    let mut fresh = connect(lb.listen);
    fresh.write_all(b"fresh request\n").unwrap();
    let answer = read_exact_within(&mut fresh, 14, Duration::from_secs(1));
    let served_in = asked.elapsed();
    assert_eq!(answer.expect("fresh request echoed"), b"fresh request\n");
    drop(fresh);

    println!(
        "{connections} idle connections established in {took:?}: balancer {sockets} sockets, \
         {fds_before} -> {fds} descriptors; VmRSS {rss_before} KiB -> {rss_full} KiB \
         ({per_connection:.2} KiB per connection); a new client served in {served_in:?}"
    );
    assert!(
        served_in < Duration::from_millis(100),
        "a new client waited {served_in:?} beside {connections} idle ones"
    );

    drop(clients);
    let (fds_after, released_in, released) = wait_count(
        Duration::from_secs(20),
        || open_fds(lb.pid()),
        |n| n <= fds_before + 4,
    );
    assert!(
        released,
        "{fds_after} descriptors still open {released_in:?} after the clients left (before: {fds_before})"
    );
    assert!(
        wait_until(Duration::from_secs(5), || holder.open() == 0),
        "the backend still holds {} connections",
        holder.open()
    );
    println!(
        "released in {released_in:?}: {fds_after} descriptors, VmRSS {} KiB",
        lb.rss_kib()
    );
}
