//! Backend selection: round robin over the backends in config order with
//! one cursor shared by all worker threads.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use support::*;

/// Connect, read the backend's identity line, and hang up.
fn who_answers(listen: SocketAddr) -> String {
    let mut s = connect(listen);
    let line = read_line(&mut s, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("reading identity: {e}"));
    line.trim_end().to_string()
}

#[test]
fn round_robin_visits_backends_in_config_order() {
    let b0 = Backend::identity("b0");
    let b1 = Backend::identity("b1");
    let b2 = Backend::identity("b2");
    let lb = Balancer::builder(free_addr())
        .backends(&[b0.addr(), b1.addr(), b2.addr()])
        .opt("--workers", "2")
        .start();

    let seen: Vec<String> = (0..9).map(|_| who_answers(lb.listen)).collect();
    assert_eq!(
        seen,
        ["b0", "b1", "b2", "b0", "b1", "b2", "b0", "b1", "b2"],
        "sequential connections must visit backends in config order"
    );
    assert_eq!((b0.accepted(), b1.accepted(), b2.accepted()), (3, 3, 3));
}

#[test]
fn round_robin_order_holds_with_four_workers() {
    let names = ["alpha", "beta", "gamma", "delta"];
    let backends: Vec<Backend> = names.iter().map(|n| Backend::identity(n)).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let lb = Balancer::builder(free_addr())
        .backends(&addrs)
        .opt("--workers", "4")
        .start();

    let seen: Vec<String> = (0..12).map(|_| who_answers(lb.listen)).collect();
    let expected: Vec<String> = (0..12).map(|i| names[i % 4].to_string()).collect();
    assert_eq!(seen, expected);
}

#[test]
fn round_robin_spreads_concurrent_connections_exactly_evenly() {
    // One shared cursor: however the 30 concurrent accepts interleave over
    // the workers, each backend gets exactly every third connection.
    let b0 = Backend::identity("b0");
    let b1 = Backend::identity("b1");
    let b2 = Backend::identity("b2");
    let lb = Balancer::builder(free_addr())
        .backends(&[b0.addr(), b1.addr(), b2.addr()])
        .opt("--workers", "2")
        .start();

    let listen = lb.listen;
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                // Open five at once from this thread, then read them all.
                let mut conns: Vec<_> = (0..5).map(|_| connect(listen)).collect();
                conns
                    .iter_mut()
                    .map(|s| {
                        read_line(s, Duration::from_secs(5))
                            .expect("identity line")
                            .trim_end()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in threads {
        for name in t.join().expect("client thread") {
            *counts.entry(name).or_default() += 1;
        }
    }
    assert_eq!(counts.get("b0"), Some(&10), "counts: {counts:?}");
    assert_eq!(counts.get("b1"), Some(&10), "counts: {counts:?}");
    assert_eq!(counts.get("b2"), Some(&10), "counts: {counts:?}");
    assert_eq!((b0.accepted(), b1.accepted(), b2.accepted()), (10, 10, 10));
}

#[test]
fn file_config_routes_each_listener_to_its_own_pool() {
    let web_a = Backend::identity("web-a");
    let web_b = Backend::identity("web-b");
    let api = Backend::identity("api");
    let web_listen = free_addr();
    let api_listen = free_addr();
    let ron = format!(
        r#"(
    global: (workers: 2),
    listeners: [
        (name: "web", bind: "{web_listen}", pool: "web"),
        (name: "api", bind: "{api_listen}", pool: "api"),
    ],
    pools: [
        (name: "web", policy: "round-robin", backends: [(address: "{}"), (address: "{}")]),
        (name: "api", backends: [(address: "{}")]),
    ],
)"#,
        web_a.addr(),
        web_b.addr(),
        api.addr()
    );
    let lb = Balancer::with_config(&ron, web_listen);

    let seen: Vec<String> = [web_listen, api_listen, web_listen, api_listen, web_listen]
        .iter()
        .map(|l| who_answers(*l))
        .collect();
    assert_eq!(seen, ["web-a", "api", "web-b", "api", "web-a"]);

    // The access log names the listener each connection came through.
    let entries = wait_entries(&lb, 5);
    let by_listener = |name: &str| entries.iter().filter(|a| a.listener == name).count();
    assert_eq!(by_listener("web"), 3, "access log:\n{}", lb.logs_joined());
    assert_eq!(by_listener("api"), 2, "access log:\n{}", lb.logs_joined());
    for a in &entries {
        let expected_backend = if a.listener == "api" {
            vec![api.addr()]
        } else {
            vec![web_a.addr(), web_b.addr()]
        };
        assert!(
            expected_backend.iter().any(|b| b.to_string() == a.backend),
            "connection on listener {} went to {}: {}",
            a.listener,
            a.backend,
            a.line
        );
    }
}

fn wait_entries(lb: &Balancer, n: usize) -> Vec<AccessLog> {
    assert!(
        wait_until(Duration::from_secs(5), || lb.access_logs().len() >= n),
        "expected {n} access-log lines; balancer printed:\n{}",
        lb.logs_joined()
    );
    lb.access_logs()
}

#[test]
fn zero_weight_backend_receives_no_connections() {
    let b0 = Backend::identity("b0");
    let b1 = Backend::identity("b1");
    let b2 = Backend::identity("b2");
    let lb = Balancer::builder(free_addr())
        .backend(b0.addr())
        .weighted_backend(b1.addr(), 0)
        .backend(b2.addr())
        .start();

    let seen: Vec<String> = (0..6).map(|_| who_answers(lb.listen)).collect();
    assert_eq!(seen, ["b0", "b2", "b0", "b2", "b0", "b2"]);
    assert_eq!(b1.accepted(), 0);
}

#[test]
fn round_robin_treats_every_positive_weight_alike() {
    // Documented in config/balanciaga4.ron: round-robin treats every weight
    // above 0 alike.
    let b0 = Backend::identity("b0");
    let b1 = Backend::identity("b1");
    let lb = Balancer::builder(free_addr())
        .weighted_backend(b0.addr(), 5)
        .weighted_backend(b1.addr(), 1)
        .opt("--policy", "round-robin")
        .start();

    let seen: Vec<String> = (0..6).map(|_| who_answers(lb.listen)).collect();
    assert_eq!(seen, ["b0", "b1", "b0", "b1", "b0", "b1"]);
}
