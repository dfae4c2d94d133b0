//! Backends added and removed at run time through the admin API: an added
//! one takes new connections at once, a removed one keeps its open
//! sessions until they end or the drain deadline, refused actions change
//! nothing, and a reload undoes (and names) the runtime changes its file
//! does not repeat.

use crate::support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http::{get, post};
use support::*;

fn stats(admin: SocketAddr) -> Value {
    let response = get(admin, "/stats");
    assert_eq!(response.status, 200);
    serde_json::from_str(&response.body).expect("/stats is JSON")
}

/// Each pool's policy and its backends' address, state and weight, in
/// `/stats` order: what an action may change.
fn topology(admin: SocketAddr) -> Vec<String> {
    let s = stats(admin);
    let mut out = Vec::new();
    for pool in s["pools"].as_array().expect("pools") {
        out.push(format!("{} {}", pool["name"], pool["policy"]));
        for b in pool["backends"].as_array().expect("backends") {
            out.push(format!(
                "  {} {} {} backup={}",
                b["address"], b["state"], b["weight"], b["backup"]
            ));
        }
    }
    out
}

/// The backend addresses `/stats` lists for the first pool.
fn listed(admin: SocketAddr) -> Vec<String> {
    stats(admin)["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["address"].as_str().expect("address").to_string())
        .collect()
}

fn who_answers(listen: SocketAddr) -> String {
    let mut s = connect(listen);
    let line = read_line(&mut s, Duration::from_secs(5)).expect("identity line");
    line.trim_end().to_string()
}

/// `:` and `[`, `]` percent-encoded, as `curl --data-urlencode` sends them.
fn encoded(addr: SocketAddr) -> String {
    addr.to_string()
        .replace(':', "%3A")
        .replace('[', "%5B")
        .replace(']', "%5D")
}

fn ok(admin: SocketAddr, target: &str) -> String {
    let response = post(admin, target);
    assert_eq!(response.status, 200, "{target}: {}", response.body);
    response.body
}

/// Pool web with `backends`, checked every 200 ms, and an admin listener.
fn file(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], drain: &str) -> String {
    let mut list = String::new();
    for backend in backends {
        list += &format!("(address: \"{backend}\"), ");
    }
    format!(
        r#"(
    timeouts: (drain: "{drain}"),
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(name: "web", health: (interval: "200ms"), backends: [{list}])],
    admin: (bind: "{admin}"),
)"#
    )
}

#[test]
fn an_added_backend_takes_new_connections_at_once_by_an_encoded_address() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let c = Backend::identity_on(localhost_v6(0), "c");
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(&file(listen, admin, &[a.addr()], "10s"), listen);
    assert_eq!(who_answers(listen), "a");

    let done = ok(
        admin,
        &format!("/backend/add?pool=web&address={}", encoded(b.addr())),
    );
    assert!(done.contains("added"), "{done}");
    let seen: Vec<String> = (0..4).map(|_| who_answers(listen)).collect();
    assert_eq!(seen, ["a", "b", "a", "b"], "round robin over both at once");

    // IPv6 in brackets, every reserved character encoded, and a weight.
    ok(
        admin,
        &format!(
            "/backend/add?pool=web&address={}&weight=2",
            encoded(c.addr())
        ),
    );
    let seen: Vec<String> = (0..8).map(|_| who_answers(listen)).collect();
    let to_c = seen.iter().filter(|s| *s == "c").count();
    assert_eq!(to_c, 8 / 3, "round robin takes c in turn: {seen:?}");
    let names = listed(admin);
    assert_eq!(
        names,
        [
            a.addr().to_string(),
            b.addr().to_string(),
            c.addr().to_string()
        ]
    );
    let s = stats(admin);
    assert_eq!(s["pools"][0]["backends"][2]["weight"], 2);
    assert!(
        s["pools"][0]["backends"][1]["connections"].as_u64() >= Some(2),
        "{}",
        s["pools"][0]["backends"][1]
    );
    // Health checks reach it as they reach the others.
    assert!(
        wait_until(Duration::from_secs(5), || stats(admin)["pools"][0]
            ["backends"][2]["checks"]["ok"]
            .as_u64()
            >= Some(2)),
        "the added backend is never checked: {}",
        stats(admin)["pools"][0]["backends"][2]
    );
    lb.expect_line(Duration::from_secs(2), "admin action from 127.0.0.1");
}

#[test]
fn a_session_held_across_its_backends_removal_passes_bytes_until_it_closes() {
    let a = Backend::echo();
    let b = Backend::echo();
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(&file(listen, admin, &[a.addr()], "3s"), listen);
    let mut finishing = connect(listen);
    let mut lingering = connect(listen);
    for s in [&mut finishing, &mut lingering] {
        s.write_all(b"hello\n").unwrap();
        assert_eq!(read_line(s, Duration::from_secs(5)).unwrap(), "hello\n");
    }
    assert_eq!(a.active(), 2);

    // Its last primary cannot go; once another is added, it can.
    assert_eq!(
        post(
            admin,
            &format!("/backend/remove?pool=web&backend={}", a.addr())
        )
        .status,
        409
    );
    ok(
        admin,
        &format!("/backend/add?pool=web&address={}", b.addr()),
    );
    let removed_at = Instant::now();
    ok(
        admin,
        &format!("/backend/remove?pool=web&backend={}", a.addr()),
    );
    // Listed as removed while its sessions drain, and takes none.
    assert_eq!(
        states(admin),
        [
            (b.addr().to_string(), "up".to_string(), 0),
            (a.addr().to_string(), "removed".to_string(), 2)
        ]
    );

    // New connections go to b only (by their access lines: a's count of
    // accepted connections also has health checks in it); both sessions
    // on a still echo.
    for _ in 0..3 {
        let mut s = connect(listen);
        s.write_all(b"new\n").unwrap();
        assert_eq!(read_line(&mut s, Duration::from_secs(5)).unwrap(), "new\n");
        let client = s.local_addr().unwrap();
        drop(s);
        let line = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(line.backend, b.addr().to_string(), "{}", line.line);
    }
    for round in 0..5 {
        for s in [&mut finishing, &mut lingering] {
            let line = format!("round {round}\n");
            s.write_all(line.as_bytes()).unwrap();
            assert_eq!(read_line(s, Duration::from_secs(2)).unwrap(), line);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let finishing_addr = finishing.local_addr().unwrap();
    drop(finishing);
    let end = lb.access_log_for(finishing_addr, Duration::from_secs(5));
    assert_eq!(end.backend, a.addr().to_string(), "{}", end.line);
    assert_eq!(end.end, "done", "{}", end.line);

    // The one left open is closed at the drain deadline, not before.
    let lingering_addr = lingering.local_addr().unwrap();
    let closed = wait_closed(&mut lingering, Duration::from_secs(6));
    let after = removed_at.elapsed();
    assert!(closed.is_ok(), "still open {after:?} after the removal");
    assert!(
        after >= Duration::from_millis(2900) && after < Duration::from_secs(5),
        "closed {after:?} after the removal, the deadline is 3s"
    );
    let end = lb.access_log_for(lingering_addr, Duration::from_secs(5));
    assert_eq!(end.end, "removed", "{}", end.line);
    assert!(wait_until(Duration::from_secs(2), || a.active() == 0));

    // Its last session over, it is gone from /stats and /metrics.
    assert!(wait_until(Duration::from_secs(2), || listed(admin)
        == [b.addr().to_string()]));
    let metrics = get(admin, "/metrics").body;
    assert!(
        !metrics.contains(&format!("backend=\"{}\"", a.addr())),
        "gone from /metrics:\n{metrics}"
    );
}

/// (address, state, active sessions) of each backend `/stats` lists for
/// the first pool.
fn states(admin: SocketAddr) -> Vec<(String, String, u64)> {
    stats(admin)["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["address"].as_str().expect("address").to_string(),
                b["state"].as_str().expect("state").to_string(),
                b["active"].as_u64().expect("active"),
            )
        })
        .collect()
}

#[test]
fn refused_actions_answer_400_404_or_409_and_change_nothing() {
    let a = Backend::identity("a");
    let backup = Backend::identity("z");
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(&file(listen, admin, &[a.addr()], "10s"), listen);
    ok(
        admin,
        &format!("/backend/add?pool=web&address={}&backup=1", backup.addr()),
    );
    let before = topology(admin);
    let config_before = get(admin, "/config").body;
    let (a_addr, missing) = (a.addr(), free_addr());
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("/backend/add?pool=nope&address={missing}"),
            404,
            "nope",
        ),
        (
            format!("/backend/add?pool=web&address={a_addr}"),
            409,
            "already has",
        ),
        (
            "/backend/add?pool=web&address=localhost%3A80".into(),
            400,
            "address=",
        ),
        (
            "/backend/add?pool=web&address=127.0.0.1%3A0".into(),
            400,
            "address=",
        ),
        ("/backend/add?pool=web".into(), 400, "missing address="),
        (
            format!("/backend/add?pool=web&address={missing}&weight=20000"),
            400,
            "weight=",
        ),
        (
            format!("/backend/add?pool=web&address={missing}&backup=maybe"),
            400,
            "backup=",
        ),
        (
            "/backend/add?pool=web&address=127.0.0.1%3".into(),
            400,
            "address=: bad percent escape",
        ),
        (
            format!("/backend/remove?pool=web&backend={missing}"),
            404,
            "has no backend",
        ),
        (
            format!("/backend/remove?pool=nope&backend={a_addr}"),
            404,
            "no pool",
        ),
        (
            format!("/backend/remove?pool=web&backend={a_addr}"),
            409,
            "last primary",
        ),
        (
            format!("/backend/weight?pool=nope&backend={a_addr}&weight=2"),
            404,
            "no pool",
        ),
        (
            format!("/backend/weight?pool=web&backend={missing}&weight=2"),
            404,
            "has no backend",
        ),
        (
            format!("/backend/weight?pool=web&backend={a_addr}&weight=x"),
            400,
            "weight=",
        ),
        (
            format!("/backend/drain?pool=web&backend={missing}"),
            404,
            "has no backend",
        ),
        (
            format!("/backend/disable?pool=nope&backend={a_addr}"),
            404,
            "no pool",
        ),
        (
            "/backend/enable?pool=web&backend=nonsense".into(),
            400,
            "backend=",
        ),
        (
            format!("/backend/frobnicate?pool=web&backend={a_addr}"),
            404,
            "unknown action",
        ),
        (
            "/pool/policy?pool=nope&policy=random".into(),
            404,
            "no pool",
        ),
        ("/pool/policy?pool=web&policy=zigzag".into(), 400, "policy="),
        (
            format!("/backend/drain?backend={a_addr}"),
            400,
            "missing pool",
        ),
    ];
    for (target, status, reason) in &cases {
        let response = post(admin, target);
        assert_eq!(response.status, *status, "{target}: {}", response.body);
        assert!(
            response.body.contains(reason),
            "{target}: {}",
            response.body
        );
    }
    assert_eq!(
        topology(admin),
        before,
        "a refused action changed something"
    );
    assert_eq!(get(admin, "/config").body, config_before);
    assert_eq!(who_answers(listen), "a");
    assert!(!lb.logs_joined().contains("reloaded"));
}

#[test]
fn a_reload_undoes_the_runtime_changes_its_file_does_not_repeat_and_names_each() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let c = Backend::identity("c");
    let (listen, admin) = (free_addr(), free_addr());
    let text = file(listen, admin, &[a.addr(), b.addr()], "10s");
    let lb = Balancer::with_config(&text, listen);
    let file_view = topology(admin);
    ok(
        admin,
        &format!("/backend/add?pool=web&address={}", c.addr()),
    );
    ok(
        admin,
        &format!("/backend/weight?pool=web&backend={}&weight=4", b.addr()),
    );
    ok(admin, "/pool/policy?pool=web&policy=random");
    ok(
        admin,
        &format!("/backend/drain?pool=web&backend={}", a.addr()),
    );

    lb.reload_with(&text);
    for change in [
        format!("pool web backend {} added", c.addr()),
        format!("pool web backend {} weight 4", b.addr()),
        "pool web policy random".to_string(),
    ] {
        let line = lb.wait_for_line(Duration::from_secs(2), |l| {
            l.contains("runtime change dropped") && l.ends_with(&change)
        });
        let line = line.unwrap_or_else(|| panic!("{change} not named:\n{}", lb.logs_joined()));
        assert!(line.contains("WARN"), "{line}");
    }
    // Back to the file, but for the drain, which a file cannot say.
    let drained: Vec<String> = file_view
        .iter()
        .map(|l| {
            l.replace(
                &format!("\"{}\" \"up\"", a.addr()),
                &format!("\"{}\" \"drain\"", a.addr()),
            )
        })
        .collect();
    assert_eq!(topology(admin), drained);
    let seen: Vec<String> = (0..4).map(|_| who_answers(listen)).collect();
    assert_eq!(seen, ["b", "b", "b", "b"], "a drained, c gone");
    // A second reload has nothing left to drop.
    lb.reload_with(&text);
    let warnings = lb
        .logs()
        .iter()
        .filter(|l| l.contains("runtime change dropped"))
        .count();
    assert_eq!(warnings, 3, "{}", lb.logs_joined());
}
