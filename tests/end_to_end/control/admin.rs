//! The admin listener of a running balancer: `/metrics` is strict
//! Prometheus text whose counters equal what clients did, `/stats` has
//! rates and shares, runtime actions change where new connections go, and
//! bad requests get a 4xx without hurting anything.

use crate::support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::http::{exchange, get, post, request};
use support::prometheus::{self, Family};
use support::*;

fn metrics(admin: SocketAddr) -> Vec<Family> {
    let response = get(admin, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    prometheus::parse(&response.body).unwrap_or_else(|e| panic!("{e}\n{}", response.body))
}

fn stats(admin: SocketAddr) -> Value {
    let response = get(admin, "/stats");
    assert_eq!(response.status, 200);
    serde_json::from_str(&response.body).expect("/stats is JSON")
}

/// Sum of a family's samples that have `labels`.
fn total(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus::samples(families, name, labels)
        .map(|s| s.value)
        .sum()
}

fn who_answers(listen: SocketAddr) -> String {
    let mut s = connect(listen);
    read_line(&mut s, Duration::from_secs(5))
        .expect("identity line")
        .trim_end()
        .to_string()
}

#[test]
fn metrics_are_strict_prometheus_text_and_count_exactly_what_clients_did() {
    const CLIENTS: usize = 12;
    const BYTES: usize = 3000;
    let backends = [Backend::echo(), Backend::echo()];
    let admin = free_addr();
    let lb = Balancer::builder(free_addr())
        .backends(&[backends[0].addr(), backends[1].addr()])
        .opt("--admin", &admin.to_string())
        // Checks run, and must not count as client connections.
        .opt("--health-interval", "100ms")
        .start();
    for i in 0..CLIENTS {
        let mut s = connect(lb.listen);
        let payload = Pattern::bytes(i as u64, BYTES);
        s.write_all(&payload).unwrap();
        let echoed = read_exact_within(&mut s, BYTES, Duration::from_secs(5)).unwrap();
        assert_eq!(echoed, payload);
    }
    // Sessions report their bytes when they close.
    let families = |_: ()| metrics(admin);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let m = families(());
            total(&m, "balanciaga4_backend_bytes_received_total", &[]) == (CLIENTS * BYTES) as f64
                && total(&m, "balanciaga4_listener_active_connections", &[]) == 0.0
        }),
        "counters never settled:\n{}",
        get(admin, "/metrics").body
    );
    let m = metrics(admin);
    let n = CLIENTS as f64;
    let listener = [("listener", "default")];
    assert_eq!(
        prometheus::value(&m, "balanciaga4_listener_accepted_total", &listener),
        Some(n)
    );
    assert_eq!(total(&m, "balanciaga4_backend_connections_total", &[]), n);
    assert_eq!(
        total(&m, "balanciaga4_backend_bytes_sent_total", &[]),
        (CLIENTS * BYTES) as f64
    );
    for b in &backends {
        let labels = [("pool", "default"), ("backend", &*b.addr().to_string())];
        assert_eq!(
            prometheus::value(&m, "balanciaga4_backend_connections_total", &labels),
            Some(n / 2.0),
            "round robin: half each"
        );
        assert_eq!(
            prometheus::value(&m, "balanciaga4_backend_up", &labels),
            Some(1.0)
        );
        assert_eq!(
            prometheus::value(&m, "balanciaga4_backend_weight", &labels),
            Some(1.0)
        );
        let count = "balanciaga4_backend_connect_seconds_count";
        assert_eq!(prometheus::value(&m, count, &labels), Some(n / 2.0));
        let passed = [
            ("pool", "default"),
            ("backend", &*b.addr().to_string()),
            ("result", "passed"),
        ];
        let checked = wait_until(Duration::from_secs(3), || {
            prometheus::value(&metrics(admin), "balanciaga4_health_checks_total", &passed)
                .is_some_and(|c| c >= 1.0)
        });
        assert!(checked, "no passed check counted for {}", b.addr());
    }
    // Checks ran meanwhile; client counters did not move.
    let m = metrics(admin);
    assert_eq!(total(&m, "balanciaga4_backend_connections_total", &[]), n);
    assert_eq!(
        total(&m, "balanciaga4_backend_connect_failures_total", &[]),
        0.0
    );
    assert_eq!(
        total(&m, "balanciaga4_reloads_total", &[("result", "failed")]),
        0.0
    );
    assert!(prometheus::value(&m, "balanciaga4_uptime_seconds", &[]).is_some_and(|u| u > 0.0));
    assert_eq!(
        prometheus::value(&m, "balanciaga4_buffers_in_use", &[]),
        Some(0.0)
    );
}

#[test]
fn stats_give_rates_and_each_backend_a_third_after_300_round_robin_connections() {
    let backends = [
        Backend::identity("a"),
        Backend::identity("b"),
        Backend::identity("c"),
    ];
    let admin = free_addr();
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let lb = Balancer::builder(free_addr())
        .backends(&addrs)
        .opt("--admin", &admin.to_string())
        .start();
    for _ in 0..300 {
        who_answers(lb.listen);
    }
    // The sampler records once a second; wait for one after the traffic.
    std::thread::sleep(Duration::from_millis(2200));
    let s = stats(admin);
    let pool = &s["pools"][0];
    assert_eq!(pool["policy"], "round-robin");
    let backends = pool["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 3);
    for b in backends {
        assert_eq!(b["connections"], 100, "{b}");
        let share = b["share"].as_f64().expect("share");
        assert!((share - 1.0 / 3.0).abs() < 1e-9, "{b}");
        assert_eq!(b["state"], "up");
        for window in ["1s", "10s", "60s"] {
            let rate = &b["rates"][window];
            for key in ["connections", "bytes_sent", "bytes_received"] {
                assert!(rate[key].is_number(), "{window} {key} in {b}");
            }
        }
        // 100 connections within the last ~3 s: well above 10 a second
        // over 10 s, far from 0.
        let per_second = b["rates"]["10s"]["connections"].as_f64().unwrap();
        assert!(per_second > 10.0, "{b}");
    }
    let listener = &s["listeners"][0];
    assert_eq!(listener["accepted"], 300);
    assert!(listener["rates"]["60s"]["connections"].as_f64().unwrap() > 0.0);
    assert!(s["uptime_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn admin_actions_drain_reweight_and_switch_policy_for_new_connections() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let admin = free_addr();
    let lb = Balancer::builder(free_addr())
        .backends(&[a.addr(), b.addr()])
        .opt("--admin", &admin.to_string())
        .start();
    let drain = format!("/backend/drain?pool=default&backend={}", a.addr());
    let response = post(admin, &drain);
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.body.contains("drain"), "{}", response.body);
    let seen: Vec<String> = (0..4).map(|_| who_answers(lb.listen)).collect();
    assert_eq!(
        seen,
        ["b", "b", "b", "b"],
        "no new session to a drained backend"
    );
    let s = stats(admin);
    assert_eq!(s["pools"][0]["backends"][0]["state"], "drain");
    assert!(
        s["events"]
            .to_string()
            .contains("admin action from 127.0.0.1"),
        "{}",
        s["events"]
    );

    post(
        admin,
        &format!("/backend/enable?pool=default&backend={}", a.addr()),
    );
    let response = post(
        admin,
        &format!("/backend/weight?pool=default&backend={}&weight=3", a.addr()),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let response = post(
        admin,
        "/pool/policy?pool=default&policy=weighted-round-robin",
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let seen: Vec<String> = (0..4).map(|_| who_answers(lb.listen)).collect();
    assert_eq!(seen, ["a", "a", "b", "a"], "smooth 3:1 sequence");
    let m = metrics(admin);
    let labels = [("pool", "default"), ("backend", &*a.addr().to_string())];
    assert_eq!(
        prometheus::value(&m, "balanciaga4_backend_weight", &labels),
        Some(3.0)
    );

    // Unknown names are refused with the reason, and change nothing.
    assert_eq!(
        post(admin, "/pool/policy?pool=nope&policy=random").status,
        404
    );
    assert_eq!(
        post(admin, "/pool/policy?pool=default&policy=zigzag").status,
        400
    );
    assert_eq!(get(admin, "/backend/drain").status, 405);
}

#[test]
fn with_a_token_actions_need_it() {
    let a = Backend::identity("a");
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(
        &format!(
            r#"(
    listeners: [(name: "web", bind: "{listen}", pool: "p")],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{}")])],
    admin: (bind: "{admin}", token: "s3cret"),
)"#,
            a.addr()
        ),
        listen,
    );
    let target = format!("/backend/disable?pool=p&backend={}", a.addr());
    assert_eq!(post(admin, &target).status, 401);
    let wrong = request(admin, "POST", &target, "Authorization: Bearer guess\r\n");
    assert_eq!(wrong.status, 401);
    assert_eq!(who_answers(listen), "a", "nothing changed");
    let right = request(admin, "POST", &target, "Authorization: Bearer s3cret\r\n");
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(stats(admin)["pools"][0]["backends"][0]["state"], "disabled");
    drop(lb);
}

#[test]
fn malformed_and_oversized_requests_get_4xx_and_the_admin_listener_keeps_serving() {
    let a = Backend::identity("a");
    let admin = free_addr();
    let lb = Balancer::builder(free_addr())
        .backend(a.addr())
        .opt("--admin", &admin.to_string())
        .start();
    let garbage = exchange(admin, b"\x00\x01 hello?\r\n\r\n").expect("an answer");
    assert_eq!(garbage.status, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "y".repeat(100 << 10)
    );
    let huge = exchange(admin, huge.as_bytes()).expect("an answer");
    assert_eq!(huge.status, 431);
    assert_eq!(get(admin, "/nowhere").status, 404);
    assert_eq!(request(admin, "DELETE", "/metrics", "").status, 405);
    // Still serving, and the balancer too.
    assert_eq!(get(admin, "/metrics").status, 200);
    assert_eq!(who_answers(lb.listen), "a");
    let page = get(admin, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<!DOCTYPE html>"));
}

#[test]
fn reloads_are_counted_by_result_and_the_pause_to_take_one_in_is_measured() {
    let a = Backend::identity("a");
    let (listen, admin) = (free_addr(), free_addr());
    let file = format!(
        r#"(
    listeners: [(name: "web", bind: "{listen}", pool: "p")],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{}")])],
    admin: (bind: "{admin}"),
)"#,
        a.addr()
    );
    let lb = Balancer::with_config(&file, listen);
    std::fs::write(lb.config_path(), "(listeners: [ oops ])").unwrap();
    lb.signal(libc::SIGHUP);
    let counted = |result: &str, n: f64| {
        wait_until(Duration::from_secs(5), || {
            prometheus::value(
                &metrics(admin),
                "balanciaga4_reloads_total",
                &[("result", result)],
            ) == Some(n)
        })
    };
    assert!(counted("failed", 1.0), "{}", lb.logs_joined());
    let stall = || {
        prometheus::value(
            &metrics(admin),
            "balanciaga4_snapshot_stall_max_seconds",
            &[],
        )
        .expect("the snapshot stall gauge")
    };
    assert_eq!(stall(), 0.0, "a refused reload publishes nothing");
    std::fs::write(lb.config_path(), &file).unwrap();
    lb.signal(libc::SIGHUP);
    assert!(counted("ok", 1.0), "{}", lb.logs_joined());
    // Every reactor takes the new snapshot in at its next loop turn; the
    // pause it measured is there once one has.
    assert!(
        wait_until(Duration::from_secs(5), || stall() > 0.0),
        "no worker measured taking in the new snapshot"
    );
    assert!(
        stall() < 0.1,
        "a one-pool snapshot took {} s to take in",
        stall()
    );
    assert_eq!(
        prometheus::value(
            &metrics(admin),
            "balanciaga4_reloads_total",
            &[("result", "failed")]
        ),
        Some(1.0)
    );
}
