//! A reload adds and removes listeners live: new ones accept on every
//! worker, removed ones stop accepting while their sessions finish (until
//! the drain deadline), and one that cannot bind is rolled back alone.

use crate::support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use support::*;

/// A file with `listeners` as (name, address) pairs, all on pool "web".
fn config(listeners: &[(&str, SocketAddr)], backends: &[SocketAddr], drain: &str) -> String {
    let listeners: Vec<String> = listeners
        .iter()
        .map(|(name, addr)| format!("(name: \"{name}\", bind: \"{addr}\", pool: \"web\")"))
        .collect();
    let backends: Vec<String> = backends
        .iter()
        .map(|b| format!("(address: \"{b}\")"))
        .collect();
    format!(
        r#"(
    global: (workers: 2),
    timeouts: (drain: "{drain}"),
    listeners: [{}],
    pools: [(name: "web", health: (enabled: false), backends: [{}])],
)"#,
        listeners.join(", "),
        backends.join(", ")
    )
}

fn answers(listen: SocketAddr) -> bool {
    try_connect(listen)
        .ok()
        .and_then(|mut s| read_line(&mut s, Duration::from_secs(5)).ok())
        .is_some_and(|line| line == "a\n")
}

#[test]
fn a_listener_added_by_reload_serves_at_once_and_a_removed_one_stops_accepting_while_its_sessions_finish(
) {
    let a = Backend::identity("a");
    let (web, api) = (free_addr(), free_addr());
    let lb = Balancer::with_config(&config(&[("web", web)], &[a.addr()], "10s"), web);
    assert!(try_connect(api).is_err(), "api is not listening yet");

    lb.reload_with(&config(&[("web", web), ("api", api)], &[a.addr()], "10s"));
    lb.expect_line(Duration::from_secs(5), "listener api on");
    // Every connection is served: whichever worker's socket the kernel
    // picks, it is accepting.
    let served = (0..40).filter(|_| answers(api)).count();
    assert_eq!(served, 40, "connections to the new listener");
    assert!(answers(web), "the old listener still serves");

    // A session through web, open while web is removed.
    let mut held = connect(web);
    let held_addr = held.local_addr().unwrap();
    assert_eq!(read_line(&mut held, Duration::from_secs(5)).unwrap(), "a\n");
    lb.reload_with(&config(&[("api", api)], &[a.addr()], "10s"));
    assert!(
        wait_until(Duration::from_secs(2), || try_connect(web).is_err()),
        "web still accepts after its removal"
    );
    assert!(answers(api));
    held.write_all(b"still here").unwrap();
    held.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_eof(&mut held, Duration::from_secs(5));
    assert!(rest.is_ok(), "held session ended badly: {rest:?}");
    let end = lb.access_log_for(held_addr, Duration::from_secs(5));
    assert_eq!(
        (end.listener.as_str(), end.end.as_str()),
        ("web", "done"),
        "{}",
        end.line
    );
}

#[test]
fn a_listener_whose_port_is_taken_is_rolled_back_and_the_rest_of_the_reload_applies() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let web = free_addr();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let lb = Balancer::with_config(&config(&[("web", web)], &[a.addr()], "10s"), web);

    // The new file adds a listener on a port in use and switches backends.
    lb.reload_with(&config(&[("web", web), ("busy", busy)], &[b.addr()], "10s"));
    let failed = lb.expect_line(
        Duration::from_secs(5),
        &format!("listener busy: cannot listen on {busy}: Address already in use"),
    );
    assert!(failed.contains("listener not added"), "{failed}");
    let mut s = connect(web);
    assert_eq!(
        read_line(&mut s, Duration::from_secs(5)).unwrap(),
        "b\n",
        "the backend change applied"
    );

    // Once the port is free, the next reload adds the listener.
    drop(taken);
    lb.reload_with(&config(&[("web", web), ("busy", busy)], &[b.addr()], "10s"));
    let mut s = connect(busy);
    assert_eq!(read_line(&mut s, Duration::from_secs(5)).unwrap(), "b\n");
}

#[test]
fn moving_a_listener_to_another_address_closes_the_old_one() {
    let a = Backend::identity("a");
    let (old, new) = (free_addr(), free_addr());
    let lb = Balancer::with_config(&config(&[("web", old)], &[a.addr()], "10s"), old);
    lb.reload_with(&config(&[("web", new)], &[a.addr()], "10s"));
    assert!(answers(new));
    assert!(
        wait_until(Duration::from_secs(2), || try_connect(old).is_err()),
        "the old address still accepts"
    );
}

#[test]
fn sessions_on_a_removed_backend_are_closed_at_the_drain_deadline() {
    // a answers with its name, then holds the connection open.
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let web = free_addr();
    let lb = Balancer::with_config(&config(&[("web", web)], &[a.addr()], "1s"), web);
    let mut held = connect(web);
    let held_addr = held.local_addr().unwrap();
    assert_eq!(read_line(&mut held, Duration::from_secs(5)).unwrap(), "a\n");

    let removed_at = Instant::now();
    lb.reload_with(&config(&[("web", web)], &[b.addr()], "1s"));
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let outcome = held.read(&mut buf);
    let waited = removed_at.elapsed();
    assert!(
        matches!(outcome, Ok(0)) || outcome.is_err(),
        "expected the session closed, got {outcome:?}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "closed after {waited:?}, drain deadline 1s"
    );
    let end = lb.access_log_for(held_addr, Duration::from_secs(5));
    assert_eq!(
        (end.backend.as_str(), end.end.as_str()),
        (a.addr().to_string().as_str(), "removed"),
        "{}",
        end.line
    );
    lb.expect_line(
        Duration::from_secs(5),
        "drain deadline passed, closed 1 sessions on removed backends or listeners",
    );
    let mut s = connect(web);
    assert_eq!(read_line(&mut s, Duration::from_secs(5)).unwrap(), "b\n");
}
