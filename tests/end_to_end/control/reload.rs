//! SIGHUP re-reads the configuration file: pool changes reach new
//! connections at once, open sessions are untouched, and a bad file keeps
//! the running configuration.

use crate::support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use support::*;

fn config(listen: SocketAddr, policy: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("(address: \"{b}\")"))
        .collect();
    format!(
        r#"(
    global: (workers: 2),
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(name: "web", policy: "{policy}", health: (enabled: false), backends: [{}])],
)"#,
        list.join(", ")
    )
}

fn who_answers(listen: SocketAddr) -> String {
    let mut s = connect(listen);
    let line = read_line(&mut s, Duration::from_secs(5)).expect("identity line");
    line.trim_end().to_string()
}

/// Sends SIGHUP and waits for the outcome line containing `outcome`.
fn reload(lb: &Balancer, outcome: &str) -> String {
    let before = lb.logs().len();
    lb.signal(libc::SIGHUP);
    let line = lb.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(outcome) && !lb.logs()[..before].iter().any(|old| old == l)
    });
    line.unwrap_or_else(|| panic!("no {outcome:?} line after SIGHUP:\n{}", lb.logs_joined()))
}

#[test]
fn reload_sends_new_connections_to_the_new_backends_and_leaves_open_sessions_alone() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let c = Backend::identity("c");
    let listen = free_addr();
    let lb = Balancer::with_config(
        &config(listen, "round-robin", &[a.addr(), b.addr()]),
        listen,
    );

    // A session to a, held open across the reload.
    let mut held = connect(listen);
    let held_addr = held.local_addr().unwrap();
    assert_eq!(read_line(&mut held, Duration::from_secs(5)).unwrap(), "a\n");

    std::fs::write(
        lb.config_path(),
        config(listen, "round-robin", &[b.addr(), c.addr()]),
    )
    .unwrap();
    let line = reload(&lb, "reloaded");
    assert!(line.contains("1 added, 1 removed"), "{line}");

    let seen: Vec<String> = (0..4).map(|_| who_answers(listen)).collect();
    assert_eq!(
        seen,
        ["b", "c", "b", "c"],
        "new connections use the new pool"
    );

    // The session to the removed backend still works: a's handler reads
    // until EOF, so our FIN reaches it and the balancer then closes us.
    held.write_all(b"still here").unwrap();
    held.shutdown(Shutdown::Write).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    held.read_to_end(&mut rest)
        .expect("clean end of the held session");
    let end = lb.access_log_for(held_addr, Duration::from_secs(5));
    assert_eq!(
        (end.backend.as_str(), end.end.as_str()),
        (a.addr().to_string().as_str(), "done"),
        "{}",
        end.line
    );
}

#[test]
fn reload_switches_the_policy_for_new_connections() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let listen = free_addr();
    let lb = Balancer::with_config(
        &config(listen, "round-robin", &[a.addr(), b.addr()]),
        listen,
    );
    assert_eq!(who_answers(listen), "a");

    let weighted = config(listen, "weighted-round-robin", &[a.addr(), b.addr()]).replace(
        &format!("(address: \"{}\")", b.addr()),
        &format!("(address: \"{}\", weight: 3)", b.addr()),
    );
    std::fs::write(lb.config_path(), weighted).unwrap();
    let line = reload(&lb, "reloaded");
    assert!(line.contains("1 re-weighted"), "{line}");
    let seen: Vec<String> = (0..4).map(|_| who_answers(listen)).collect();
    assert_eq!(
        seen,
        ["b", "a", "b", "b"],
        "smooth 1:3 sequence from the start"
    );
}

#[test]
fn bad_file_on_reload_is_reported_and_the_running_configuration_keeps_serving() {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let listen = free_addr();
    let lb = Balancer::with_config(
        &config(listen, "round-robin", &[a.addr(), b.addr()]),
        listen,
    );

    std::fs::write(lb.config_path(), "(\n  listeners: [ oops ],\n)").unwrap();
    let line = reload(&lb, "failed, the running configuration stays");
    assert!(line.contains("[ERROR]"), "{line}");
    // The error names file and line.
    let path = lb.config_path().display().to_string();
    lb.expect_line(Duration::from_secs(5), &format!("{path}:2:"));
    assert!(line.contains("(1 failed reloads so far)"), "{line}");
    let seen: Vec<String> = (0..2).map(|_| who_answers(listen)).collect();
    assert_eq!(seen, ["a", "b"]);

    // Fixed, the file applies on the next SIGHUP.
    std::fs::write(lb.config_path(), config(listen, "round-robin", &[b.addr()])).unwrap();
    reload(&lb, "reloaded");
    let seen: Vec<String> = (0..2).map(|_| who_answers(listen)).collect();
    assert_eq!(seen, ["b", "b"]);
}

#[test]
fn settings_that_need_a_restart_are_reported_not_dropped() {
    let a = Backend::identity("a");
    let listen = free_addr();
    let lb = Balancer::with_config(&config(listen, "round-robin", &[a.addr()]), listen);
    std::fs::write(
        lb.config_path(),
        config(listen, "round-robin", &[a.addr()]).replace("workers: 2", "workers: 3"),
    )
    .unwrap();
    reload(&lb, "reloaded");
    let warning = lb.wait_for_line(Duration::from_secs(2), |l| l.contains("needs a restart"));
    let warning = warning.unwrap_or_else(|| panic!("no restart warning:\n{}", lb.logs_joined()));
    assert!(warning.contains("global.workers (2 → 3)"), "{warning}");
    assert_eq!(who_answers(listen), "a");
    // Still two workers running: a second reload says so again.
    let before = lb.logs().len();
    reload(&lb, "reloaded");
    let again = lb.wait_for_line(Duration::from_secs(2), |l| {
        l.contains("global.workers (2 → 3)") && !lb.logs()[..before].iter().any(|o| o == l)
    });
    assert!(
        again.is_some(),
        "second reload forgot:
{}",
        lb.logs_joined()
    );
}

#[test]
fn a_backend_given_by_host_name_is_every_address_the_name_resolves_to() {
    use std::net::ToSocketAddrs;
    // Whatever "localhost" resolves to here, one backend answers on each.
    let first = Backend::identity_on(localhost(0), "127.0.0.1");
    let port = first.addr().port();
    let resolved: Vec<SocketAddr> = ("localhost", port)
        .to_socket_addrs()
        .expect("localhost resolves")
        .collect();
    let others: Vec<Backend> = resolved
        .iter()
        .filter(|a| **a != first.addr())
        .map(|a| Backend::identity_on(*a, &a.ip().to_string()))
        .collect();
    let listen = free_addr();
    let lb = Balancer::with_config(
        &config(listen, "round-robin", &[]).replace(
            "backends: []",
            &format!("backends: [(address: \"localhost:{port}\")]"),
        ),
        listen,
    );
    let mut seen: Vec<String> = (0..resolved.len() * 2)
        .map(|_| who_answers(listen))
        .collect();
    seen.sort();
    seen.dedup();
    let mut expected: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(seen, expected, "one backend per address of localhost");
    assert!(
        lb.logs_joined().contains(&format!("localhost:{port} = [")),
        "{}",
        lb.logs_joined()
    );
    drop(others);
}
