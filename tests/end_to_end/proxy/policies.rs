//! The balancing policies through the real binary: weighted round robin's
//! exact sequence, least-connections under held sessions, source-hash
//! stickiness (on every connection, when a backend dies, across balancer
//! processes, through a dual-stack listener), the spread of the random
//! policies, weight 0 and refused backends under every policy, and the
//! policy name on the command line and in files.
//!
//! Backends are identity servers: each writes its name on accept, so a
//! client knows where it landed. Source-hash clients bind distinct loopback
//! source addresses (127.0.0.2 ... 127.0.0.41) before connecting.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use support::balancer::{run_to_completion, Builder, TempDir};
use support::*;

const LINE_WAIT: Duration = Duration::from_secs(5);
const LOG_WAIT: Duration = Duration::from_secs(5);

/// Every policy name, as written in files and on `--policy`.
const POLICIES: [&str; 6] = [
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "power-of-two",
    "random",
    "source-hash",
];

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Starts a quick-mode balancer set up by `configure`, listening on a port
/// reserved until it is up (see `ReservedPort`: no other test can take it
/// in between).
fn quick(configure: impl FnOnce(Builder) -> Builder) -> Balancer {
    let port = ReservedPort::on(LOOPBACK);
    configure(Balancer::builder(port.addr)).start()
}

/// Reads the identity line of a fresh connection.
fn identity(s: &mut TcpStream) -> String {
    read_line(s, LINE_WAIT)
        .unwrap_or_else(|e| panic!("reading identity line: {e}"))
        .trim_end()
        .to_string()
}

/// Connect, read the backend's identity line, and hang up.
fn who_answers(listen: SocketAddr) -> String {
    identity(&mut connect(listen))
}

/// Same from source address `source`; also returns the client's address
/// (as the balancer's access log names it).
fn who_answers_from(source: IpAddr, listen: SocketAddr) -> (String, SocketAddr) {
    let mut s = connect_from(source, listen);
    let client = s.local_addr().unwrap();
    (identity(&mut s), client)
}

/// The 40 client addresses 127.0.0.2 ... 127.0.0.41.
fn clients() -> Vec<IpAddr> {
    (2..=41u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

/// One identity backend per name.
fn identities(names: &[&str]) -> Vec<Backend> {
    names.iter().map(|n| Backend::identity(n)).collect()
}

/// How many of `seen` went to each name.
fn tally(seen: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in seen {
        *counts.entry(name.clone()).or_default() += 1;
    }
    counts
}

/// A quick-mode balancer over `backends` with the given weights and policy.
fn weighted(policy: &str, backends: &[Backend], weights: &[u32], workers: &str) -> Balancer {
    quick(|mut builder| {
        builder = builder.opt("--policy", policy).opt("--workers", workers);
        for (b, &w) in backends.iter().zip(weights) {
            builder = builder.weighted_backend(b.addr(), w);
        }
        builder
    })
}

fn wrr_sequence(weights: &[u32], workers: &str, connections: usize) -> Vec<String> {
    let backends = identities(&["a", "b", "c"]);
    let lb = weighted("weighted-round-robin", &backends, weights, workers);
    (0..connections).map(|_| who_answers(lb.listen)).collect()
}

#[test]
fn weighted_round_robin_gives_the_smooth_nginx_sequence_on_one_and_two_workers() {
    // nginx's smooth weighted round robin for 5, 1, 1: a a b a c a a, twice.
    let expected = "a a b a c a a a a b a c a a";
    for workers in ["1", "2"] {
        let seen = wrr_sequence(&[5, 1, 1], workers, 14).join(" ");
        assert_eq!(seen, expected, "weights 5,1,1 with --workers {workers}");
    }
}

#[test]
fn weighted_round_robin_gives_the_smooth_sequence_for_weights_1_2_3() {
    let seen = wrr_sequence(&[1, 2, 3], "2", 12).join(" ");
    assert_eq!(
        seen, "c b a c b c c b a c b c",
        "weights 1,2,3, --workers 2"
    );
}

#[test]
fn least_connections_spreads_held_sessions_in_turn_and_refills_the_emptiest_backend() {
    let backends = identities(&["a", "b", "c"]);
    let lb = weighted("least-connections", &backends, &[1, 1, 1], "1");

    // Six sessions opened one after another and kept open: each goes to a
    // backend with the fewest sessions, ties taken in turn.
    let mut held: Vec<(String, TcpStream)> = (0..6)
        .map(|_| {
            let mut s = connect(lb.listen);
            (identity(&mut s), s)
        })
        .collect();
    let order: Vec<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
    let active = || backends.iter().map(Backend::active).collect::<Vec<_>>();
    assert_eq!(active(), [2, 2, 2]);

    // Close both sessions on b. The backend sees the close before the
    // balancer has finished the session (the backend's FIN still has to
    // travel back), so wait for the balancer's access-log lines too: a
    // session's count is released before its line is written.
    let closing: Vec<SocketAddr> = held
        .iter()
        .filter(|(n, _)| n == "b")
        .map(|(_, s)| s.local_addr().unwrap())
        .collect();
    held.retain(|(n, _)| n != "b");
    assert!(
        wait_until(LOG_WAIT, || backends[1].active() == 0),
        "backend b still reports {} sessions",
        backends[1].active()
    );
    for client in &closing {
        lb.access_log_for(*client, LOG_WAIT);
    }

    // b now has 0 sessions, a and c 2 each: both new sessions go to b.
    let mut fresh: Vec<(String, TcpStream)> = (0..2)
        .map(|_| {
            let mut s = connect(lb.listen);
            (identity(&mut s), s)
        })
        .collect();
    let order: Vec<&str> = fresh.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["b", "b"]);
    assert_eq!(active(), [2, 2, 2]);
    held.append(&mut fresh);
}

#[test]
fn least_connections_takes_turns_between_equally_idle_backends() {
    // Each session is over (logged by the balancer) before the next starts,
    // so all three backends are always tied at 0 sessions: ties go round
    // robin, not always to the first backend.
    let backends = identities(&["a", "b", "c"]);
    let lb = weighted("least-connections", &backends, &[1, 1, 1], "2");
    let seen: Vec<String> = (0..6)
        .map(|_| {
            let (name, client) = who_answers_from(LOOPBACK, lb.listen);
            lb.access_log_for(client, LOG_WAIT);
            name
        })
        .collect();
    assert_eq!(seen.join(" "), "a b c a b c");
}

#[test]
fn least_connections_holds_sessions_in_proportion_to_weight() {
    let backends = identities(&["a", "b"]);
    let lb = weighted("least-connections", &backends, &[1, 2], "1");
    let held: Vec<(String, TcpStream)> = (0..6)
        .map(|_| {
            let mut s = connect(lb.listen);
            (identity(&mut s), s)
        })
        .collect();
    let names: Vec<String> = held.iter().map(|(n, _)| n.clone()).collect();
    let counts = tally(&names);
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&2), Some(&4)),
        "weights 1,2 with 6 held sessions; order {names:?}"
    );
    assert_eq!((backends[0].active(), backends[1].active()), (2, 4));
}

/// Stops `backend` once its sessions are over. On a `ReservedPort` its port
/// then refuses connections (and stays reserved).
fn kill(backend: Backend) {
    let addr = backend.addr();
    assert!(
        wait_until(LOG_WAIT, || backend.active() == 0),
        "backend {addr} still has sessions"
    );
    drop(backend);
    // A process another test spawns can hold a copy of the listener for a
    // moment (between its fork and its exec): wait until it is really gone.
    assert!(
        wait_until(LOG_WAIT, || matches!(
            try_connect(addr),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )),
        "{addr} still accepts connections"
    );
}

/// The backend (by identity) each client reaches through `listen`.
fn map_clients(listen: SocketAddr, clients: &[IpAddr]) -> Vec<String> {
    clients
        .iter()
        .map(|&ip| who_answers_from(ip, listen).0)
        .collect()
}

#[test]
fn source_hash_keeps_each_client_on_one_backend_and_moves_only_a_dead_backends_clients() {
    let names = ["a", "b", "c", "d"];
    // Each backend on a reserved port, which keeps refusing once the backend
    // is dropped and which no other test can take meanwhile.
    let ports: Vec<ReservedPort> = names.iter().map(|_| ReservedPort::on(LOOPBACK)).collect();
    let mut backends: Vec<Option<Backend>> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| Some(Backend::identity_on(port.addr, name)))
        .collect();
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| p.addr).collect();
    let addr_of: HashMap<String, String> = names
        .iter()
        .zip(&addrs)
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
    let lb = quick(|b| {
        b.backends(&addrs)
            .opt("--policy", "source-hash")
            .opt("--workers", "2")
    });
    let clients = clients();

    // Each client reaches the same backend on every connection.
    let mut home: Vec<String> = Vec::new();
    for &ip in &clients {
        let seen: Vec<String> = (0..3).map(|_| who_answers_from(ip, lb.listen).0).collect();
        assert!(
            seen.iter().all(|n| *n == seen[0]),
            "client {ip} reached {seen:?}"
        );
        home.push(seen[0].clone());
    }
    let used = tally(&home);
    assert!(
        used.len() >= 3,
        "40 clients should use at least 3 of 4 backends: {used:?}"
    );

    // Kill the backend with the most clients; its port then refuses.
    let victim = used.iter().max_by_key(|(_, &n)| n).unwrap().0.clone();
    let slot = names.iter().position(|n| *n == victim).unwrap();
    kill(backends[slot].take().unwrap());

    // Its clients move, each to one other backend that it keeps; everyone
    // else stays put and never touches the dead backend.
    let mut expect_log: Vec<(SocketAddr, String, u64)> = Vec::new();
    for (&ip, old) in clients.iter().zip(&home) {
        let seen: Vec<(String, SocketAddr)> =
            (0..2).map(|_| who_answers_from(ip, lb.listen)).collect();
        let now = &seen[0].0;
        assert_eq!(
            *now, seen[1].0,
            "client {ip} (was on {old}) reached {seen:?}"
        );
        if *old == victim {
            assert_ne!(*now, victim, "client {ip} still reaches the dead backend");
        } else {
            assert_eq!(now, old, "client {ip} moved although its backend is alive");
        }
        // Until health checks exist, a moved client tries its dead backend
        // first on every connection: two attempts.
        let attempts = if *old == victim { 2 } else { 1 };
        for (_, client) in &seen {
            expect_log.push((*client, addr_of[now].clone(), attempts));
        }
    }
    let found = wait_until(LOG_WAIT, || {
        let logs = lb.access_logs();
        expect_log.iter().all(|(client, backend, _)| {
            let (client, backend) = (client.to_string(), backend.as_str());
            logs.iter()
                .any(|a| a.client == client && a.backend == backend)
        })
    });
    assert!(found, "missing access-log lines:\n{}", lb.logs_joined());
    let logs = lb.access_logs();
    for (client, backend, attempts) in &expect_log {
        let client = client.to_string();
        for a in logs
            .iter()
            .filter(|a| a.client == client && a.backend == *backend)
        {
            assert_eq!(a.attempts, *attempts, "{}", a.line);
        }
    }
}

#[test]
fn source_hash_maps_every_client_alike_in_separate_balancers_also_with_a_backend_down() {
    let names = ["a", "b", "c", "d"];
    let weights = [2, 1, 3, 1];
    let ports: Vec<ReservedPort> = names.iter().map(|_| ReservedPort::on(LOOPBACK)).collect();
    let mut backends: Vec<Option<Backend>> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| Some(Backend::identity_on(port.addr, name)))
        .collect();
    // Same backends and weights; different worker counts, and the third
    // lists the backends the other way round (order does not matter).
    let start = |workers: &str, reversed: bool| {
        let mut list: Vec<(SocketAddr, u32)> = ports.iter().map(|p| p.addr).zip(weights).collect();
        if reversed {
            list.reverse();
        }
        quick(|mut b| {
            b = b.opt("--policy", "source-hash").opt("--workers", workers);
            for (addr, w) in list {
                b = b.weighted_backend(addr, w);
            }
            b
        })
    };
    let balancers = [start("1", false), start("2", false), start("2", true)];
    let clients = clients();
    let same_everywhere = |when: &str| {
        let maps: Vec<Vec<String>> = balancers
            .iter()
            .map(|lb| map_clients(lb.listen, &clients))
            .collect();
        for (k, map) in maps.iter().enumerate().skip(1) {
            for ((ip, x), y) in clients.iter().zip(&maps[0]).zip(map) {
                assert_eq!(x, y, "{when}: client {ip}, balancer 0 vs {k}");
            }
        }
        maps[0].clone()
    };
    let before = same_everywhere("all backends up");
    let used = tally(&before);
    assert!(used.len() >= 3, "clients spread: {used:?}");

    // The clients of a dead backend fall back the same way in all three.
    let victim = used.iter().max_by_key(|(_, &n)| n).unwrap().0.clone();
    let slot = names.iter().position(|n| *n == victim).unwrap();
    kill(backends[slot].take().unwrap());
    let after = same_everywhere(&format!("backend {victim} down"));
    assert!(
        !after.contains(&victim),
        "{victim} still reached: {after:?}"
    );
}

#[test]
fn source_hash_maps_ipv4_clients_of_a_dual_stack_listener_like_plain_ipv4() {
    let backends = identities(&["a", "b", "c", "d"]);
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let v4 = quick(|b| b.backends(&addrs).opt("--policy", "source-hash"));
    // The dual-stack listener sees these clients as ::ffff:127.0.0.N.
    let any = ReservedPort::on(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let _dual = Balancer::builder(any.addr)
        .backends(&addrs)
        .opt("--policy", "source-hash")
        .start();
    let port = any.addr.port();
    let clients = clients();
    let plain = map_clients(v4.listen, &clients);
    let mapped = map_clients(localhost(port), &clients);
    for ((ip, x), y) in clients.iter().zip(&plain).zip(&mapped) {
        assert_eq!(x, y, "client {ip}: IPv4 listener vs dual-stack listener");
    }
}

/// Backend names of `n` sequential connections, each closed after its
/// identity line.
fn sequence(listen: SocketAddr, n: usize) -> Vec<String> {
    (0..n).map(|_| who_answers(listen)).collect()
}

/// How many connections went to the same backend as the one before.
fn repeats(seen: &[String]) -> usize {
    seen.windows(2).filter(|w| w[0] == w[1]).count()
}

#[test]
fn random_over_equal_backends_spreads_evenly_and_repeats_backends_like_independent_draws() {
    // 300 connections over three equal backends. With independent uniform
    // picks:
    // - each backend's count is Binomial(300, 1/3), mean 100. Hoeffding:
    //   P(|X - 100| >= 50) <= 2 exp(-2 * 50^2 / 300) = 1.2e-7, so the
    //   bound [51, 149] fails wrongly with probability < 3.6e-7 for the
    //   three backends together.
    // - the 299 events "same backend as the connection before" are
    //   independent with probability 1/3 each (for uniform picks, which
    //   backend came before does not change the chance of a repeat), so
    //   the number of repeats is Binomial(299, 1/3), mean 99.7. Chernoff:
    //   P(X <= 40) <= exp(-d^2 mu / 2) with d = 1 - 40/99.7 = 0.599, that
    //   is exp(-17.9) = 1.7e-8.
    // Round robin (and weighted round robin with equal weights) passes the
    // first check exactly and fails the second: a shared cursor never
    // repeats a backend.
    let backends = identities(&["a", "b", "c"]);
    let lb = weighted("random", &backends, &[1, 1, 1], "2");
    let seen = sequence(lb.listen, 300);
    let counts = tally(&seen);
    for name in ["a", "b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            (51..=149).contains(&n),
            "backend {name} got {n} of 300: {counts:?}"
        );
    }
    let same = repeats(&seen);
    assert!(
        same > 40,
        "only {same} of 299 connections went to the backend before them \
         (about 100 expected of random picks, 0 of a rotation): {seen:?}"
    );
}

#[test]
fn random_follows_the_weights() {
    // Weights 3 and 1: backend a's count of 300 is Binomial(300, 3/4),
    // mean 225. Hoeffding: P(|X - 225| >= 48) <= 2 exp(-2 * 48^2 / 300)
    // = 4.3e-7, so [178, 272] fails wrongly with probability < 1e-6.
    // Round robin ignores weights and gives a 150.
    let backends = identities(&["a", "b"]);
    let lb = weighted("random", &backends, &[3, 1], "2");
    let counts = tally(&sequence(lb.listen, 300));
    let a = counts.get("a").copied().unwrap_or(0);
    assert!(
        (178..=272).contains(&a),
        "backend a (weight 3 of 4) got {a} of 300: {counts:?}"
    );
}

#[test]
fn power_of_two_keeps_new_sessions_off_the_backend_holding_long_sessions() {
    // Three backends; sessions that land on a are held open, those on b
    // and c end before the next connection (the test waits for their
    // access lines). Each pick compares two distinct random backends and
    // takes the one with fewer sessions: once a holds one, it loses every
    // comparison to b or c (none open), so it gets no other session, while
    // b and c share the rest. Round robin and random give a a third of the
    // 90 connections whatever it holds.
    //
    // While all three are idle the pair's first candidate wins, so a gets
    // its one session with probability 1/3 per connection: it gets none in
    // 90 with probability (2/3)^90 = 1.4e-16. Every other connection goes
    // to b or c, symmetrically and independently (the pairs are drawn
    // afresh each time), so b's count of those 89 is Binomial(89, 1/2),
    // mean 44.5. Hoeffding: P(X < 15 or X > 74) <= 2 exp(-2 * 29.5^2 / 89)
    // = 6e-9, likewise for c.
    let backends = identities(&["a", "b", "c"]);
    let lb = weighted("power-of-two", &backends, &[1, 1, 1], "2");
    let mut held = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..90 {
        let mut s = connect(lb.listen);
        let client = s.local_addr().unwrap();
        let name = identity(&mut s);
        if name == "a" {
            held.push(s);
        } else {
            drop(s);
            lb.access_log_for(client, LOG_WAIT);
        }
        seen.push(name);
    }
    let counts = tally(&seen);
    assert_eq!(
        held.len(),
        1,
        "backend a got {} sessions while it held the only open ones: {seen:?}",
        held.len()
    );
    for name in ["b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            (15..=75).contains(&n),
            "backend {name} got {n} of 90, not a random share: {counts:?}"
        );
    }
}

#[test]
fn only_the_backend_with_weight_above_zero_is_reached_under_every_policy() {
    // A config file this time, so `policy:` and `weight:` are covered too.
    let backends = identities(&["a", "b", "c", "d"]);
    let weights = [0, 0, 3, 0];
    let clients = clients();
    for policy in POLICIES {
        let port = ReservedPort::on(LOOPBACK);
        let listen = port.addr;
        let list: Vec<String> = backends
            .iter()
            .zip(weights)
            .map(|(b, w)| format!("(address: \"{}\", weight: {w})", b.addr()))
            .collect();
        let ron = format!(
            r#"(
    global: (workers: 2),
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(name: "web", policy: "{policy}", health: (enabled: false), backends: [{}])],
)"#,
            list.join(", ")
        );
        let lb = Balancer::with_config(&ron, listen);
        // Ten different clients, so source-hash cannot pass by luck. Checks
        // are off so that every accept counted below is a client's.
        let seen = map_clients(lb.listen, &clients[..10]);
        assert!(
            seen.iter().all(|n| n == "c"),
            "{policy}: weight-0 backends reached: {seen:?}"
        );
    }
    let accepted: Vec<usize> = backends.iter().map(Backend::accepted).collect();
    assert_eq!(accepted, [0, 0, 60, 0]);
}

#[test]
fn every_policy_skips_a_refused_backend_and_closes_the_client_when_none_is_left() {
    for policy in POLICIES {
        // One live backend among refusing ones: every client is served.
        let dead = [RefusingPort::new(), RefusingPort::new()];
        let live = Backend::identity("live");
        let lb = quick(|b| {
            b.backends(&[dead[0].addr, live.addr(), dead[1].addr])
                .opt("--policy", policy)
        });
        let seen = map_clients(lb.listen, &clients()[..6]);
        assert!(
            seen.iter().all(|n| n == "live"),
            "{policy}: {seen:?}\n{}",
            lb.logs_joined()
        );
        drop(lb);

        // Only refusing backends: closed at once, end=no-backend, each
        // backend tried once.
        let lb = quick(|b| {
            b.backends(&[dead[0].addr, dead[1].addr])
                .opt("--policy", policy)
        });
        let mut c = connect(lb.listen);
        let client = c.local_addr().unwrap();
        let (_, elapsed, bytes) = wait_closed(&mut c, Duration::from_secs(2))
            .unwrap_or_else(|n| panic!("{policy}: client still open after 2 s ({n} bytes)"));
        assert_eq!(bytes, 0, "{policy}");
        assert!(
            elapsed < Duration::from_secs(1),
            "{policy}: closed after {elapsed:?}"
        );
        let a = lb.access_log_for(client, LOG_WAIT);
        assert_eq!(
            (a.end.as_str(), a.backend.as_str(), a.attempts),
            ("no-backend", "-", 2),
            "{policy}: {}",
            a.line
        );
    }
}

#[test]
fn unknown_policy_on_the_command_line_is_a_usage_error_naming_every_policy() {
    // The addresses are never bound: the usage error comes first.
    let out = run_to_completion(
        &[
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--policy",
            "nonsense",
        ],
        None,
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("--policy") && err.contains("nonsense"),
        "{err}"
    );
    for name in POLICIES {
        assert!(err.contains(name), "{name} missing from:\n{err}");
    }
}

#[test]
fn every_policy_name_is_accepted_in_a_file_and_an_unknown_one_is_reported() {
    let dir = TempDir::new("policies");
    for policy in POLICIES {
        let ron = format!(
            r#"(listeners: [(bind: "127.0.0.1:8080")],
                pools: [(policy: "{policy}", backends: [(address: "127.0.0.1:9001", weight: 2)])])"#
        );
        dir.write("p.ron", &ron);
        let out = run_to_completion(
            &["--check", "--config", "p.ron"],
            Some(dir.path()),
            Duration::from_secs(10),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "policy {policy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir.write(
        "bad.ron",
        r#"(listeners: [(bind: "127.0.0.1:8080")],
            pools: [(policy: "nonsense", backends: [(address: "127.0.0.1:9001")])])"#,
    );
    let out = run_to_completion(
        &["--check", "--config", "bad.ron"],
        Some(dir.path()),
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains("pools[0].policy") && err.contains("nonsense"),
        "{err}"
    );
    for name in POLICIES {
        assert!(err.contains(name), "{name} missing from:\n{err}");
    }
}
