//! Access control and limits through the real binary: allow/deny lists
//! (IPv4, IPv6, mapped addresses, UDP), the listener's and each client
//! address's connection limits, the per-address rate limit, and backend
//! `max_connections` with the pool queue. Clients come from distinct
//! 127.x.y.z source addresses; every count the metrics give is checked
//! against what the test did.

use crate::support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::prometheus::{self, Family};
use support::udp::{client_from, exchange, UdpBackend};
use support::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn metrics(admin: SocketAddr) -> Vec<Family> {
    let response = support::http::get(admin, "/metrics");
    assert_eq!(response.status, 200);
    prometheus::parse(&response.body).unwrap_or_else(|e| panic!("{e}\n{}", response.body))
}

fn rejected(admin: SocketAddr, reason: &str) -> f64 {
    let labels = [("listener", "default"), ("reason", reason)];
    prometheus::value(
        &metrics(admin),
        "balanciaga4_listener_rejected_total",
        &labels,
    )
    .unwrap_or_else(|| panic!("no rejected sample for {reason}"))
}

fn pool_queued(admin: SocketAddr) -> f64 {
    prometheus::value(
        &metrics(admin),
        "balanciaga4_pool_queued",
        &[("pool", "default")],
    )
    .expect("pool_queued sample")
}

/// Sends a line and waits for its echo: true if served, false if the
/// balancer closed or reset the connection instead.
fn served(c: &mut TcpStream) -> bool {
    let payload = b"ping\n";
    if c.write_all(payload).is_err() {
        return false;
    }
    matches!(read_exact_within(c, payload.len(), Duration::from_secs(3)), Ok(got) if got == payload)
}

/// A connection the balancer refused at accept: it is reset (or closed)
/// without a byte, at once. The reset may come so fast that setting up the
/// client socket already fails with it.
fn assert_refused(c: std::io::Result<TcpStream>, what: &str) {
    let mut c = match c {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("{what}: connect failed: {e}"),
    };
    let _ = c.write_all(b"ping\n");
    let mut buf = [0u8; 16];
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut => {}
        other => panic!("{what}: expected a refused connection, got {other:?}"),
    }
}

fn quick(args: &[(&str, &str)], backend: SocketAddr, admin: SocketAddr) -> Balancer {
    let mut b = Balancer::builder(free_addr())
        .backend(backend)
        .opt("--admin", &admin.to_string());
    for (flag, value) in args {
        b = b.opt(flag, value);
    }
    b.start()
}

#[test]
fn a_denied_address_is_reset_at_accept_and_its_neighbour_is_served() {
    let echo = Backend::echo();
    let admin = free_addr();
    let lb = quick(&[("--deny", "127.0.0.5/32")], echo.addr(), admin);

    let mut neighbour = connect_from(ip("127.0.0.6"), lb.listen);
    assert!(served(&mut neighbour), "127.0.0.6 must be served");
    for _ in 0..3 {
        assert_refused(try_connect_from(ip("127.0.0.5"), lb.listen), "127.0.0.5");
    }
    assert_eq!(
        echo.accepted(),
        1,
        "a denied client never reaches a backend"
    );
    assert_eq!(rejected(admin, "denied"), 3.0);
    assert_eq!(rejected(admin, "per_ip_limit"), 0.0);
    let denied_lines = lb
        .access_logs()
        .iter()
        .filter(|a| a.client.starts_with("127.0.0.5:"))
        .count();
    assert_eq!(
        denied_lines, 0,
        "denied clients are counted, not access-logged"
    );
}

#[test]
fn an_allow_list_admits_only_its_blocks() {
    let echo = Backend::echo();
    let admin = free_addr();
    let lb = quick(
        &[("--allow", "127.0.8.0/29"), ("--deny", "127.0.8.3")],
        echo.addr(),
        admin,
    );
    assert!(served(&mut connect_from(ip("127.0.8.1"), lb.listen)));
    assert!(served(&mut connect_from(ip("127.0.8.7"), lb.listen)));
    assert_refused(try_connect_from(ip("127.0.8.3"), lb.listen), "denied wins");
    assert_refused(try_connect_from(ip("127.0.8.8"), lb.listen), "outside");
    assert_refused(try_connect_from(ip("127.0.0.1"), lb.listen), "outside");
    assert_eq!(rejected(admin, "denied"), 3.0);
}

#[test]
fn ipv6_rules_match_ipv6_clients_and_ipv4_rules_match_mapped_clients() {
    let echo = Backend::echo();
    let admin = free_addr();
    let port = free_dual_stack_port();
    let lb = Balancer::builder(SocketAddr::from(([0u16; 8], port)))
        .backend(echo.addr())
        .opt("--admin", &admin.to_string())
        .opt("--allow", "::1/128")
        .opt("--allow", "127.0.0.7/32")
        .start();
    assert!(served(&mut connect(localhost_v6(port))), "::1 is allowed");
    // IPv4 clients reach the dual-stack socket as ::ffff:127.0.0.x.
    assert!(served(&mut connect_from(ip("127.0.0.7"), localhost(port))));
    assert_refused(
        try_connect_from(ip("127.0.0.8"), localhost(port)),
        "mapped 127.0.0.8",
    );
    assert_eq!(rejected(admin, "denied"), 1.0);
    drop(lb);
}

#[test]
fn the_eleventh_connection_from_one_address_is_refused_while_another_address_connects() {
    let echo = Backend::echo();
    let admin = free_addr();
    let lb = quick(
        &[("--max-per-ip", "10"), ("--workers", "2")],
        echo.addr(),
        admin,
    );
    let busy = ip("127.0.1.21");
    let mut held: Vec<TcpStream> = (0..10).map(|_| connect_from(busy, lb.listen)).collect();
    for c in &mut held {
        assert!(served(c), "the first ten are served");
    }
    assert_refused(try_connect_from(busy, lb.listen), "the eleventh");
    let mut other = connect_from(ip("127.0.1.22"), lb.listen);
    assert!(served(&mut other), "another address is not limited");
    // One closes: a slot for that address again (once the close is seen).
    drop(held.pop());
    let again = wait_until(Duration::from_secs(5), || {
        try_connect_from(busy, lb.listen).is_ok_and(|mut c| served(&mut c))
    });
    assert!(again, "a closed connection frees its address's slot");
    let refusals = rejected(admin, "per_ip_limit");
    assert!(refusals >= 1.0, "{refusals}");
    assert_eq!(rejected(admin, "denied"), 0.0);
}

#[test]
fn a_burst_beyond_the_bucket_is_refused_then_admitted_after_refill() {
    let echo = Backend::echo();
    let admin = free_addr();
    // One token a second, five at once.
    let lb = quick(&[("--rate-per-ip", "1,burst=5")], echo.addr(), admin);
    let client = ip("127.0.2.9");
    let start = Instant::now();
    for i in 0..5 {
        assert!(served(&mut connect_from(client, lb.listen)), "burst {i}");
    }
    assert_refused(try_connect_from(client, lb.listen), "the sixth in a burst");
    assert_refused(
        try_connect_from(client, lb.listen),
        "the seventh in a burst",
    );
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "the burst took {:?}: too slow to test the bucket",
        start.elapsed()
    );
    assert!(
        served(&mut connect_from(ip("127.0.2.10"), lb.listen)),
        "another address has its own bucket"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        served(&mut connect_from(client, lb.listen)),
        "a token refilled after a second"
    );
    assert_eq!(rejected(admin, "rate_limited"), 2.0);
}

#[test]
fn the_listener_holds_at_most_max_connections() {
    let echo = Backend::echo();
    let admin = free_addr();
    let lb = quick(
        &[("--max-connections", "3"), ("--workers", "2")],
        echo.addr(),
        admin,
    );
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(lb.listen)).collect();
    for c in &mut held {
        assert!(served(c));
    }
    assert_refused(try_connect(lb.listen), "the fourth");
    drop(held.pop());
    let again = wait_until(Duration::from_secs(5), || {
        try_connect(lb.listen).is_ok_and(|mut c| served(&mut c))
    });
    assert!(again, "room again after one closed");
    assert!(rejected(admin, "listener_full") >= 1.0);
}

/// A backend with room for one session, and a balancer whose pool queue
/// takes `queue` sessions for `timeout`.
fn one_slot(queue: &str, timeout: &str) -> (Backend, SocketAddr, Balancer) {
    let echo = Backend::echo();
    let admin = free_addr();
    let lb = Balancer::builder(free_addr())
        .opt("--backend", &format!("{},max=1", echo.addr()))
        .opt("--queue", queue)
        .opt("--queue-timeout", timeout)
        .opt("--workers", "2")
        .opt("--admin", &admin.to_string())
        .start();
    (echo, admin, lb)
}

#[test]
fn a_queued_session_proceeds_as_soon_as_the_slot_frees() {
    let (echo, admin, lb) = one_slot("5", "10s");
    let mut first = connect(lb.listen);
    assert!(served(&mut first));
    let mut waiting = connect(lb.listen);
    waiting.write_all(b"queued\n").unwrap();
    assert!(
        read_exact_within(&mut waiting, 7, Duration::from_millis(400)).is_err(),
        "the second session must wait while the backend is full"
    );
    assert_eq!(pool_queued(admin), 1.0);
    assert_eq!(echo.accepted(), 1);
    // Free the slot; the waiting session's bytes must come back promptly.
    let freed = Instant::now();
    drop(first);
    let echoed = read_exact_within(&mut waiting, 7, Duration::from_secs(5)).expect("served");
    let waited = freed.elapsed();
    println!("queued session served {waited:?} after the slot freed");
    assert_eq!(echoed, b"queued\n");
    assert!(
        waited < Duration::from_millis(150),
        "served {waited:?} after the slot freed"
    );
    assert_eq!(pool_queued(admin), 0.0);
    let max = prometheus::value(
        &metrics(admin),
        "balanciaga4_backend_max_connections",
        &[("pool", "default"), ("backend", &echo.addr().to_string())],
    );
    assert_eq!(max, Some(1.0));
    assert_eq!(rejected(admin, "queue_full"), 0.0);
    assert_eq!(rejected(admin, "queue_timeout"), 0.0);
}

#[test]
fn a_session_queued_past_the_timeout_is_closed_with_sq() {
    let (_echo, admin, lb) = one_slot("5", "500ms");
    let mut first = connect(lb.listen);
    assert!(served(&mut first));
    let mut waiting = connect(lb.listen);
    let local = waiting.local_addr().unwrap();
    let (how, after, bytes) =
        wait_closed(&mut waiting, Duration::from_secs(5)).expect("closed at the queue timeout");
    println!("queued session closed after {after:?} ({how:?})");
    assert_eq!(bytes, 0);
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_millis(1500),
        "closed after {after:?}, queue timeout 500ms"
    );
    let line = lb.access_log_for(local, Duration::from_secs(2));
    assert_eq!(
        (line.end.as_str(), line.term.as_str()),
        ("queue-timeout", "sQ")
    );
    assert_eq!(line.backend, "-");
    assert_eq!(rejected(admin, "queue_timeout"), 1.0);
    assert_eq!(pool_queued(admin), 0.0);
    assert!(
        served(&mut first),
        "the session holding the slot is untouched"
    );
}

#[test]
fn a_full_queue_refuses_at_once_with_pc() {
    let (echo, admin, lb) = one_slot("1", "10s");
    let mut first = connect(lb.listen);
    assert!(served(&mut first));
    let _waiting = connect(lb.listen);
    assert!(wait_until(Duration::from_secs(2), || pool_queued(admin) == 1.0));
    let mut third = connect(lb.listen);
    let local = third.local_addr().unwrap();
    let (_, after, _) = wait_closed(&mut third, Duration::from_secs(2)).expect("refused at once");
    assert!(after < Duration::from_millis(300), "closed after {after:?}");
    let line = lb.access_log_for(local, Duration::from_secs(2));
    assert_eq!(
        (line.end.as_str(), line.term.as_str()),
        ("queue-full", "PC")
    );
    assert_eq!(rejected(admin, "queue_full"), 1.0);
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn without_a_queue_a_full_backend_refuses_at_once() {
    let (_echo, admin, lb) = one_slot("0", "5s");
    let mut first = connect(lb.listen);
    assert!(served(&mut first));
    let mut second = connect(lb.listen);
    let (_, after, _) = wait_closed(&mut second, Duration::from_secs(2)).expect("refused");
    assert!(after < Duration::from_millis(300), "closed after {after:?}");
    assert_eq!(rejected(admin, "queue_full"), 1.0);
    assert_eq!(rejected(admin, "no_backend"), 0.0);
}

#[test]
fn udp_datagrams_from_a_denied_address_are_dropped_and_counted() {
    let echo = UdpBackend::echo();
    let admin = free_addr();
    let listen = free_addr();
    let _lb = Balancer::builder(listen)
        .backend(echo.addr())
        .flag("--udp")
        .opt("--deny", "127.0.3.5")
        .opt("--admin", &admin.to_string())
        .start();
    let allowed = client_from(ip("127.0.3.6"), listen);
    assert_eq!(
        exchange(&allowed, b"hi", Duration::from_secs(2)).expect("reply"),
        b"hi"
    );
    let denied = client_from(ip("127.0.3.5"), listen);
    for _ in 0..3 {
        assert!(exchange(&denied, b"no", Duration::from_millis(200)).is_err());
    }
    let dropped = prometheus::value(
        &metrics(admin),
        "balanciaga4_udp_dropped_total",
        &[("listener", "default"), ("reason", "denied")],
    );
    assert_eq!(dropped, Some(3.0));
    assert_eq!(echo.datagrams(), 1);
}

#[test]
fn every_queued_session_is_served_in_turn_and_none_starves() {
    const WAITERS: usize = 10;
    let (_echo, admin, lb) = one_slot("20", "10s");
    let mut holder = connect(lb.listen);
    assert!(served(&mut holder));
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..WAITERS {
        let mut c = connect(lb.listen);
        c.write_all(format!("{i:02}\n").as_bytes()).unwrap();
        let order = std::sync::Arc::clone(&order);
        threads.push(std::thread::spawn(move || {
            let got = read_exact_within(&mut c, 3, Duration::from_secs(10));
            order.lock().unwrap().push((i, got.is_ok()));
            // Closing frees the slot for the next one.
        }));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(wait_until(Duration::from_secs(2), || pool_queued(admin)
        == WAITERS as f64));
    let start = Instant::now();
    drop(holder);
    for t in threads {
        t.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert!(
        order.iter().all(|&(_, ok)| ok),
        "someone starved: {order:?}"
    );
    let ids: Vec<usize> = order.iter().map(|&(i, _)| i).collect();
    let inversions = (0..ids.len())
        .flat_map(|a| (a + 1..ids.len()).map(move |b| (a, b)))
        .filter(|&(a, b)| ids[a] > ids[b])
        .count();
    println!(
        "{WAITERS} queued sessions served in {:?}, order {ids:?}, {inversions} inversions of {} pairs",
        start.elapsed(),
        WAITERS * (WAITERS - 1) / 2
    );
}
