//! UDP listeners on real sockets: datagrams come back whole, flows spread
//! by the pool's policy, expire, obey their limits and caps, survive a
//! burst without cross-talk, move off a closed backend port, serve a real
//! DNS exchange, and come and go with reloads.

use crate::support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::http::get;
use support::prometheus;
use support::udp::{self, client, client_from, exchange, open_fds, who_answers, UdpBackend};
use support::*;

const REPLY: Duration = Duration::from_secs(2);

/// A quick-mode UDP balancer over `backends` with extra flags.
fn udp_balancer(backends: &[SocketAddr], flags: &[&str]) -> Balancer {
    let mut b = Balancer::builder(free_addr())
        .backends(backends)
        .flag("--udp")
        .opt("--workers", "2");
    let mut flags = flags.iter().peekable();
    while let Some(flag) = flags.next() {
        b = match flags.next_if(|v| !v.starts_with("--")) {
            Some(value) => b.opt(flag, value),
            None => b.flag(flag),
        };
    }
    b.start()
}

/// One sample of /metrics, 0 when absent.
fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let body = get(admin, "/metrics").body;
    let families = prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    prometheus::value(&families, name, labels).unwrap_or(0.0)
}

fn flows_active(admin: SocketAddr) -> f64 {
    metric(
        admin,
        "balanciaga4_udp_flows_active",
        &[("listener", "default")],
    )
}

#[test]
fn datagrams_of_1_1400_9000_and_65507_bytes_come_back_whole_and_one_for_one() {
    let backends = [UdpBackend::echo(), UdpBackend::echo()];
    let lb = udp_balancer(&[backends[0].addr(), backends[1].addr()], &[]);
    for size in [1, 1400, 9000, 65_507] {
        let c = client(lb.listen);
        let payload = Pattern::bytes(size as u64, size);
        let reply = exchange(&c, &payload, REPLY).unwrap_or_else(|e| panic!("{size} B: {e}"));
        assert_eq!(reply.len(), size, "a {size} B datagram came back resized");
        assert!(reply == payload, "a {size} B datagram came back changed");
    }
    // Back to back on one flow: two datagrams out, the same two back,
    // neither merged nor split.
    let c = client(lb.listen);
    let (small, large) = (Pattern::bytes(1, 3), Pattern::bytes(2, 65_507));
    c.send(&small).unwrap();
    c.send(&large).unwrap();
    let first = udp::receive(&c, REPLY).unwrap();
    let second = udp::receive(&c, REPLY).unwrap();
    assert_eq!((first.len(), second.len()), (3, 65_507));
    assert!(first == small && second == large);
}

#[test]
fn round_robin_gives_each_new_client_port_the_next_backend_and_a_flow_keeps_its_own() {
    let (a, b) = (UdpBackend::tagged("a"), UdpBackend::tagged("b"));
    let lb = udp_balancer(&[a.addr(), b.addr()], &[]);
    let clients: Vec<UdpSocket> = (0..4).map(|_| client(lb.listen)).collect();
    let first: Vec<String> = clients
        .iter()
        .map(|c| who_answers(c, b"hello").unwrap())
        .collect();
    assert_eq!(first, ["a", "b", "a", "b"]);
    // Each client's later datagrams stay on its flow's backend.
    for (c, was) in clients.iter().zip(&first) {
        for _ in 0..3 {
            assert_eq!(&who_answers(c, b"again").unwrap(), was);
        }
    }
    assert_eq!(a.peers() + b.peers(), 4, "one flow socket per client");
}

#[test]
fn source_hash_keeps_every_port_of_a_client_ip_on_one_backend() {
    let (a, b) = (UdpBackend::tagged("a"), UdpBackend::tagged("b"));
    let lb = udp_balancer(&[a.addr(), b.addr()], &["--policy", "source-hash"]);
    let mut seen = HashMap::new();
    for host in 2..=21u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 3, host));
        let names: Vec<String> = (0..3)
            .map(|_| who_answers(&client_from(ip, lb.listen), b"x").unwrap())
            .collect();
        assert!(
            names.iter().all(|n| *n == names[0]),
            "{ip} moved between backends: {names:?}"
        );
        *seen.entry(names[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "20 client IPs all hashed to one backend");
}

#[test]
fn an_idle_flow_closes_its_socket_after_the_idle_timeout() {
    let backend = UdpBackend::echo();
    let admin = free_addr();
    let lb = udp_balancer(
        &[backend.addr()],
        &["--admin", &admin.to_string(), "--udp-idle-timeout", "500ms"],
    );
    let baseline = open_fds(lb.pid());
    let clients: Vec<UdpSocket> = (0..5).map(|_| client(lb.listen)).collect();
    for c in &clients {
        exchange(c, b"ping", REPLY).unwrap();
    }
    assert_eq!(flows_active(admin), 5.0);
    assert!(
        wait_until(REPLY, || open_fds(lb.pid()) == baseline + 5),
        "one socket per flow: {} descriptors, {baseline} before",
        open_fds(lb.pid())
    );
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || flows_active(admin) == 0.0),
        "flows still open after 5 s"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || open_fds(lb.pid()) == baseline),
        "flow sockets still open: {} descriptors, {baseline} before",
        open_fds(lb.pid())
    );
    lb.wait_for_line(REPLY, |l| l.contains("end=idle-timeout"))
        .expect("a flow line ending idle-timeout");
}

#[test]
fn with_responses_1_the_flow_is_freed_as_soon_as_the_reply_is_relayed() {
    let backend = UdpBackend::echo();
    let admin = free_addr();
    let lb = udp_balancer(
        &[backend.addr()],
        &["--admin", &admin.to_string(), "--udp-responses", "1"],
    );
    let c = client(lb.listen);
    for _ in 0..3 {
        assert_eq!(exchange(&c, b"query", REPLY).unwrap(), b"query");
    }
    // The idle timeout is 30 s: these flows ended on their reply.
    assert!(wait_until(Duration::from_secs(1), || flows_active(admin) == 0.0));
    let total = metric(
        admin,
        "balanciaga4_udp_flows_total",
        &[("listener", "default")],
    );
    assert_eq!(total, 3.0, "each query had a flow of its own");
    let line = lb
        .wait_for_line(REPLY, |l| l.contains("flow client="))
        .unwrap();
    assert!(
        line.contains("datagrams_in=1 datagrams_out=1") && line.contains("end=responses"),
        "{line}"
    );
}

#[test]
fn with_requests_1_every_datagram_is_balanced_on_its_own() {
    let (a, b) = (UdpBackend::tagged("a"), UdpBackend::tagged("b"));
    let lb = udp_balancer(&[a.addr(), b.addr()], &["--udp-requests", "1"]);
    let c = client(lb.listen);
    let names: Vec<String> = (0..4).map(|_| who_answers(&c, b"log").unwrap()).collect();
    assert_eq!(names, ["a", "b", "a", "b"], "one client socket, four flows");
}

#[test]
fn past_max_flows_a_new_client_evicts_the_longest_idle_flow_and_active_ones_go_on() {
    let backend = UdpBackend::echo();
    let admin = free_addr();
    // One worker: every flow is in the one table a newcomer evicts from.
    let lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .flag("--udp")
        .opt("--workers", "1")
        .opt("--admin", &admin.to_string())
        .opt("--udp-max-flows", "3")
        .start();
    let open: Vec<UdpSocket> = (0..3).map(|_| client(lb.listen)).collect();
    for c in &open {
        exchange(c, b"in", REPLY).unwrap();
    }
    // The first client is now the longest idle.
    for c in &open[1..] {
        exchange(c, b"again", REPLY).unwrap();
    }
    let newcomer = client(lb.listen);
    assert_eq!(exchange(&newcomer, b"new", REPLY).unwrap(), b"new");
    let first = format!("flow client={} ", open[0].local_addr().unwrap());
    let evicted = lb.wait_for_line(REPLY, |l| l.contains(&first));
    let evicted = evicted.expect("the longest idle flow ended");
    assert!(evicted.contains("end=evicted"), "{evicted}");
    let evictions = || {
        metric(
            admin,
            "balanciaga4_udp_flows_evicted_total",
            &[("listener", "default")],
        )
    };
    assert_eq!(evictions(), 1.0);
    assert_eq!(flows_active(admin), 3.0);
    for c in &open[1..] {
        exchange(c, b"talk", REPLY).unwrap();
    }

    // A flood of new client ports, one datagram each, while two flows
    // talk after each: each newcomer is served by evicting the idlest
    // flow, the previous newcomer, never one of the two that talk.
    const FLOOD: usize = 200;
    for i in 0..FLOOD {
        let port = client(lb.listen);
        assert_eq!(
            exchange(&port, b"flood", REPLY).unwrap(),
            b"flood",
            "newcomer {i}"
        );
        for c in &open[1..] {
            assert_eq!(exchange(c, b"still", REPLY).unwrap(), b"still");
        }
    }
    assert_eq!(evictions(), 1.0 + FLOOD as f64);
    assert_eq!(flows_active(admin), 3.0);
    assert_eq!(
        metric(
            admin,
            "balanciaga4_udp_dropped_total",
            &[("listener", "default"), ("reason", "max_flows")],
        ),
        0.0
    );
    // The talking flows were never ended (an evicted one would have been
    // replaced by a new flow at its next datagram, evicting another).
    for c in &open[1..] {
        let mine = format!("flow client={} ", c.local_addr().unwrap());
        let ended: Vec<String> = lb
            .logs()
            .into_iter()
            .filter(|l| l.contains(&mine))
            .collect();
        assert!(ended.is_empty(), "a talking flow ended: {ended:?}");
    }
}

/// Datagram `seq` of client `id`: its id, its sequence number, filler.
fn numbered(id: u32, seq: u32) -> [u8; 64] {
    let mut d = [0u8; 64];
    d[..4].copy_from_slice(&id.to_be_bytes());
    d[4..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in d[8..].iter_mut().enumerate() {
        *b = (id as usize * 31 + seq as usize + i) as u8;
    }
    d
}

/// Per client: (datagrams sent, replies that were its own, replies that
/// belonged to someone else).
fn burst(listen: SocketAddr, ids: std::ops::Range<u32>, each: u32) -> Vec<(u32, u32, u32)> {
    const WINDOW: u32 = 8;
    let clients: Vec<UdpSocket> = ids
        .clone()
        .map(|id| {
            let ip = Ipv4Addr::new(127, 1, (id / 200) as u8, (id % 200 + 1) as u8);
            let s = udp::burst_socket(SocketAddr::new(ip.into(), 0));
            s.connect(listen).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut tallies = vec![(0u32, 0u32, 0u32); clients.len()];
    let mut buf = [0u8; 128];
    let mut sent = 0;
    while sent < each {
        let window = WINDOW.min(each - sent);
        for (k, c) in clients.iter().enumerate() {
            let id = ids.start + k as u32;
            for seq in sent..sent + window {
                c.send(&numbered(id, seq)).unwrap();
                tallies[k].0 += 1;
            }
        }
        sent += window;
        // Collect this round's replies; a lost one is given up after a
        // quiet 200 ms.
        let expected = window as usize * clients.len();
        let mut got = 0;
        let mut quiet_since = Instant::now();
        while got < expected && quiet_since.elapsed() < Duration::from_millis(200) {
            let mut any = false;
            for (k, c) in clients.iter().enumerate() {
                while let Ok(n) = c.recv(&mut buf) {
                    any = true;
                    got += 1;
                    let id = ids.start + k as u32;
                    let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                    if n == 64 && buf[..64] == numbered(id, seq) {
                        tallies[k].1 += 1;
                    } else {
                        tallies[k].2 += 1;
                    }
                }
            }
            if any {
                quiet_since = Instant::now();
            } else {
                thread::sleep(Duration::from_micros(200));
            }
        }
    }
    tallies
}

#[test]
fn a_burst_of_100000_datagrams_from_100_clients_comes_back_to_each_client_without_cross_talk() {
    const CLIENTS: u32 = 100;
    const EACH: u32 = 1000;
    const THREADS: u32 = 4;
    let backends = [UdpBackend::echo(), UdpBackend::echo()];
    let admin = free_addr();
    let lb = udp_balancer(
        &[backends[0].addr(), backends[1].addr()],
        &["--admin", &admin.to_string(), "--no-access-log"],
    );
    let rss_before = lb.rss_kib();
    let started = Instant::now();
    let per = CLIENTS / THREADS;
    let listen = lb.listen;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || burst(listen, t * per..(t + 1) * per, EACH)))
        .collect();
    let tallies: Vec<(u32, u32, u32)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    let elapsed = started.elapsed();
    let sent: u64 = tallies.iter().map(|t| u64::from(t.0)).sum();
    let own: u64 = tallies.iter().map(|t| u64::from(t.1)).sum();
    let foreign: u64 = tallies.iter().map(|t| u64::from(t.2)).sum();
    let lost = sent - own - foreign;
    let rss_after = lb.rss_kib();
    println!(
        "burst: {sent} datagrams from {CLIENTS} clients in {elapsed:?} ({:.0}/s round trips), {lost} lost ({:.3}%), RSS {rss_before} → {rss_after} KiB",
        own as f64 / elapsed.as_secs_f64(),
        lost as f64 * 100.0 / sent as f64
    );
    assert_eq!(sent, u64::from(CLIENTS * EACH));
    assert_eq!(foreign, 0, "replies reached the wrong client");
    assert!(
        lost * 100 < sent,
        "{lost} of {sent} datagrams lost (1% allowed)"
    );
    assert!(
        tallies.iter().all(|t| t.1 * 100 >= t.0 * 95),
        "a client lost more than 5%: {tallies:?}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(
        flows_active(admin),
        f64::from(CLIENTS),
        "one flow per client"
    );
    // A reactor adds a batch's datagrams to the counters once the whole
    // batch is relayed, so the last replies can reach clients just before
    // they are counted.
    let relayed = || {
        metric(
            admin,
            "balanciaga4_udp_datagrams_total",
            &[("listener", "default"), ("direction", "out")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(2), || relayed() >= own as f64),
        "{} relayed, {own} received",
        relayed()
    );
}

#[test]
fn after_a_backend_port_closes_new_flows_go_to_the_other_backend() {
    let a = UdpBackend::tagged("a");
    let b = UdpBackend::tagged("b");
    let a_addr = a.addr();
    let admin = free_addr();
    // Checks on (with a datagram, so they are meaningful over UDP) but too
    // rare to run during the test: only client traffic can find a out.
    let lb = udp_balancer(
        &[a_addr, b.addr()],
        &[
            "--admin",
            &admin.to_string(),
            "--health-send",
            "ping",
            "--health-interval",
            "1h",
        ],
    );
    assert_eq!(who_answers(&client(lb.listen), b"1").unwrap(), "a");
    drop(a); // its port now answers with ICMP port unreachable
    let mut unanswered = 0;
    let mut names = Vec::new();
    for _ in 0..8 {
        match who_answers(&client(lb.listen), b"hi") {
            Ok(name) => names.push(name),
            Err(_) => unanswered += 1,
        }
    }
    assert!(
        unanswered <= 1,
        "{unanswered} clients unanswered: {names:?}"
    );
    assert!(names.iter().all(|n| n == "b"), "{names:?}");
    let line = lb
        .wait_for_line(REPLY, |l| {
            l.contains("DOWN: port unreachable on client traffic")
        })
        .expect("a passive DOWN line");
    assert!(line.contains(&a_addr.to_string()), "{line}");
    let failures = metric(
        admin,
        "balanciaga4_backend_connect_failures_total",
        &[("pool", "default"), ("backend", &a_addr.to_string())],
    );
    assert!(failures >= 1.0);
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dig_gets_dnsmasq_answers_through_the_balancer() {
    if !support::skip::require_programs(&["dig", "dnsmasq"]) {
        return;
    }
    let dns = free_addr();
    let server = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={}", dns.port()),
            "--address=/example.test/192.0.2.7",
            "--log-facility=-",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    let _server = Reaped(server);
    let lb = udp_balancer(&[dns], &["--udp-responses", "1"]);
    let port = lb.listen.port().to_string();
    let mut answer = String::new();
    let answered = wait_until(Duration::from_secs(5), || {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port,
                "example.test",
                "A",
                "+short",
                "+time=1",
                "+tries=1",
            ])
            .output()
            .expect("run dig");
        answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        answer == "192.0.2.7"
    });
    assert!(answered, "dig printed {answer:?}");
    lb.wait_for_line(REPLY, |l| {
        l.contains("flow client=") && l.contains("end=responses")
    })
    .expect("the query's flow ended on its reply");
}

/// A file with a TCP listener `web` and, if `dns` is given, a UDP listener
/// of that name on the same address, over one pool of `backend`.
fn reload_config(listen: SocketAddr, backend: SocketAddr, dns: Option<&str>) -> String {
    let udp = dns
        .map(|name| {
            format!(
                r#"(name: "{name}", bind: "{listen}", pool: "p", protocol: "udp", udp: (responses: 1)),"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"(
    global: (workers: 2),
    listeners: [(name: "web", bind: "{listen}", pool: "p"), {udp}],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{backend}")])],
)"#
    )
}

#[test]
fn a_reload_adds_a_udp_listener_beside_a_tcp_one_and_another_removes_it() {
    let backend = UdpBackend::echo();
    let listen = free_addr();
    let lb = Balancer::with_config(&reload_config(listen, backend.addr(), None), listen);
    let before = exchange(&client(listen), b"early", Duration::from_millis(300));
    assert!(
        before.is_err(),
        "UDP answered before the reload: {before:?}"
    );

    lb.reload_with(&reload_config(listen, backend.addr(), Some("dns")));
    // Every worker's socket answers: many client ports spread over them.
    for i in 0..20u8 {
        let c = client(listen);
        assert_eq!(exchange(&c, &[i], REPLY).unwrap(), [i]);
    }
    lb.expect_line(Duration::from_secs(5), "listener dns on");

    lb.reload_with(&reload_config(listen, backend.addr(), None));
    assert!(
        wait_until(Duration::from_secs(2), || exchange(
            &client(listen),
            b"late",
            Duration::from_millis(200)
        )
        .is_err()),
        "the removed UDP listener still answers"
    );
}
