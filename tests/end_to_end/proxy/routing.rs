//! Routing by TLS server name, ALPN and client address through the real
//! binary: real TLS clients (curl, `openssl s_client`) reach the
//! `openssl s_server` of their route, hellos written byte by byte, in two
//! records or padded past 4 KiB are routed the same, plain text and silent
//! clients go to the default pool (at once, and at `inspect_timeout`), the
//! peeked bytes reach the backend unchanged (after a PROXY v2 header that
//! names the server, and again on a retry), PROXY-header clients are routed
//! by the header's address, reloads change routes without failing a
//! handshake, and `--check` names bad route entries.
//!
//! Tests that need `openssl` or `curl` print `skipping: reason` and pass
//! when one is missing, except under `CI=true`, where they fail.

use crate::support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::balancer::{run_to_completion, TempDir};
use support::http::get;
use support::net::{read_line, RefusingPort};
use support::prometheus;
use support::tls::{self, capture, records, CertDir, Hello, TlsServer};
use support::{connect, free_addr, wait_until, AccessLog, Backend, Balancer};

const WITHIN: Duration = Duration::from_secs(5);

/// A pool: its name, backends and any extra fields (`send_proxy: "v2"`).
struct Pool<'a>(&'a str, Vec<SocketAddr>, &'a str);

/// A configuration with `listeners` (RON list items) and `pools`; health
/// checks off so that only clients make connections.
fn config(listeners: &str, pools: &[Pool<'_>], admin: Option<SocketAddr>) -> String {
    let pools: Vec<String> = pools
        .iter()
        .map(|Pool(name, backends, extra)| {
            let list: Vec<String> = backends
                .iter()
                .map(|b| format!("(address: \"{b}\")"))
                .collect();
            format!(
                "(name: \"{name}\", health: (enabled: false), backends: [{}]{extra})",
                list.join(", ")
            )
        })
        .collect();
    let admin = admin
        .map(|a| format!("admin: (bind: \"{a}\"),"))
        .unwrap_or_default();
    format!(
        "(\n    global: (workers: 2),\n    listeners: [{listeners}],\n    pools: [{}],\n    {admin}\n)",
        pools.join(",\n        ")
    )
}

/// The routes most tests use: acme by ALPN first, then alpha (exact and
/// wildcard) and beta by name; the rest goes to `default`.
const ROUTES: &str = r#"routes: [
        (name: "acme", alpn: ["acme-tls/1"], pool: "acme"),
        (name: "alpha", sni: ["alpha.example", "*.alpha.example"], pool: "alpha"),
        (name: "beta", sni: ["beta.example"], pool: "beta"),
    ]"#;

/// A listener named `tls` on `listen` with `ROUTES` and `extra` fields.
fn tls_listener(listen: SocketAddr, extra: &str) -> String {
    format!("(name: \"tls\", bind: \"{listen}\", pool: \"default\", {ROUTES}{extra})")
}

/// `key=` of an access-log line.
fn field<'a>(log: &'a AccessLog, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    log.line
        .split_whitespace()
        .find_map(|t| t.strip_prefix(prefix.as_str()))
}

/// Four capturing backends named after their pools, and the pools.
struct Capturing {
    backends: Vec<(Backend, tls::Captures)>,
}

impl Capturing {
    fn new() -> Capturing {
        Capturing {
            backends: ["default", "alpha", "beta", "acme"]
                .iter()
                .map(|n| capture(n))
                .collect(),
        }
    }

    fn pools(&self) -> Vec<Pool<'static>> {
        ["default", "alpha", "beta", "acme"]
            .iter()
            .zip(&self.backends)
            .map(|(n, (b, _))| Pool(n, vec![b.addr()], ""))
            .collect()
    }

    /// What the backend named `name` received, one entry per connection
    /// whose client has closed.
    fn captured(&self, name: &str) -> &tls::Captures {
        let at = ["default", "alpha", "beta", "acme"]
            .iter()
            .position(|n| *n == name)
            .expect("a pool name");
        &self.backends[at].1
    }
}

/// Starts a balancer with one routed listener (`extra` fields on it) in
/// front of capturing backends, and the address of its admin listener.
fn capturing_balancer(extra: &str) -> (Balancer, Capturing, SocketAddr) {
    let backends = Capturing::new();
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(
        &config(&tls_listener(listen, extra), &backends.pools(), Some(admin)),
        listen,
    );
    (lb, backends, admin)
}

/// `balanciaga4_route_defaulted_total` of listener `tls` for `reason`
/// (0 when the sample is absent).
fn defaulted(admin: SocketAddr, reason: &str) -> f64 {
    let body = get(admin, "/metrics").body;
    let families = prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    prometheus::value(
        &families,
        "balanciaga4_route_defaulted_total",
        &[("listener", "tls"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// The identity line of the backend a connection reached.
fn identity(s: &mut TcpStream) -> String {
    read_line(s, WITHIN)
        .expect("an identity line")
        .trim_end()
        .to_string()
}

/// Sends `hello` to `listen` and returns the identity line of the backend
/// it reached.
fn pool_reached(listen: SocketAddr, hello: &[u8]) -> std::io::Result<String> {
    let mut s = support::try_connect(listen)?;
    s.write_all(hello)?;
    Ok(read_line(&mut s, WITHIN)?.trim_end().to_string())
}

/// Closes the client's side, and waits until the backend `name` has kept
/// what it received on `count` connections in all; returns the last.
fn captured_after_close(s: TcpStream, backends: &Capturing, name: &str, count: usize) -> Vec<u8> {
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let seen = backends.captured(name);
    assert!(
        wait_until(WITHIN, || seen.lock().unwrap().len() >= count),
        "backend {name} did not see connection {count} end"
    );
    drop(s);
    seen.lock().unwrap().last().cloned().unwrap()
}

#[test]
fn real_tls_clients_reach_the_backend_of_their_server_name_alpn_or_the_default() {
    if !tls::tools_present(&["openssl", "curl"]) {
        return;
    }
    let certs = CertDir::new();
    let servers: Vec<TlsServer> = [
        ("default-backend", &["default.example"][..]),
        ("alpha-backend", &["alpha.example", "*.alpha.example"]),
        ("beta-backend", &["beta.example"]),
        ("acme-backend", &["alpha.example"]),
    ]
    .iter()
    .map(|(cn, names)| TlsServer::start(&certs.make(cn, names)))
    .collect();
    let pools: Vec<Pool<'_>> = ["default", "alpha", "beta", "acme"]
        .iter()
        .zip(&servers)
        .map(|(n, s)| Pool(n, vec![s.addr], ""))
        .collect();
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(
        &config(&tls_listener(listen, ""), &pools, Some(admin)),
        listen,
    );
    let port = listen.port();

    // Each client with the route it must take (`-`: the default pool) and
    // the name it sent.
    let mut cases: Vec<(tls::Answer, &str, &str)> = [
        ("alpha.example", "alpha"),
        ("x.alpha.example", "alpha"),
        ("x.y.alpha.example", "alpha"),
        ("beta.example", "beta"),
        ("gamma.example", "-"),
    ]
    .into_iter()
    .map(|(name, route)| (tls::curl(name, port), route, name))
    .collect();
    for (name, alpn, route) in [
        (None, None, "-"),
        (Some("alpha.example"), Some("acme-tls/1"), "acme"),
        (Some("alpha.example"), Some("h2"), "alpha"),
    ] {
        cases.push((tls::s_client(port, name, alpn), route, name.unwrap_or("-")));
    }
    let pool_of = |route: &str| if route == "-" { "default" } else { route }.to_string();
    for (answer, route, _) in &cases {
        assert_eq!(
            answer.cn,
            Some(format!("{}-backend", pool_of(route))),
            "client output:\n{}",
            answer.output
        );
    }

    // One access-log line per client, each with its route and name.
    assert!(
        wait_until(WITHIN, || lb.access_logs().len() >= cases.len()),
        "{}",
        lb.logs_joined()
    );
    let mut logged: Vec<(String, String, String)> = lb
        .access_logs()
        .iter()
        .map(|a| {
            (
                a.pool.clone(),
                field(a, "route").unwrap_or("?").to_string(),
                field(a, "sni").unwrap_or("?").to_string(),
            )
        })
        .collect();
    let mut wanted: Vec<(String, String, String)> = cases
        .iter()
        .map(|(_, route, sni)| (pool_of(route), route.to_string(), sni.to_string()))
        .collect();
    logged.sort();
    wanted.sort();
    assert_eq!(logged, wanted, "{}", lb.logs_joined());

    let body = get(admin, "/metrics").body;
    let families = prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let routed = |route: &str, pool: &str| {
        prometheus::value(
            &families,
            "balanciaga4_route_connections_total",
            &[("listener", "tls"), ("route", route), ("pool", pool)],
        )
    };
    assert_eq!(routed("alpha", "alpha"), Some(4.0), "{body}");
    assert_eq!(routed("beta", "beta"), Some(1.0), "{body}");
    assert_eq!(routed("acme", "acme"), Some(1.0), "{body}");
    assert_eq!(defaulted(admin, "no_match"), 2.0, "{body}");
    for reason in ["not_tls", "too_large", "timeout", "closed"] {
        assert_eq!(defaulted(admin, reason), 0.0, "{reason}: {body}");
    }
}

#[test]
fn a_hello_sent_one_byte_per_segment_is_routed_and_relayed_unchanged() {
    let (lb, backends, _) = capturing_balancer("");
    let hello = Hello {
        sni: Some("x.alpha.example"),
        alpn: &["h2", "http/1.1"],
        ..Hello::default()
    }
    .record();
    let mut client = connect(lb.listen);
    for byte in &hello {
        client.write_all(&[*byte]).unwrap();
        client.flush().unwrap();
        thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(identity(&mut client), "alpha");
    assert_eq!(captured_after_close(client, &backends, "alpha", 1), hello);
}

/// Sends `hello` in one write through a fresh balancer: it must reach the
/// backend of pool `pool` byte for byte.
fn routed_unchanged(hello: &[u8], pool: &str) {
    let (lb, backends, _) = capturing_balancer("");
    let mut client = connect(lb.listen);
    client.write_all(hello).unwrap();
    assert_eq!(identity(&mut client), pool);
    assert_eq!(captured_after_close(client, &backends, pool, 1), hello);
}

#[test]
fn a_hello_split_over_two_records_is_routed_and_relayed_unchanged() {
    let message = Hello {
        sni: Some("beta.example"),
        ..Hello::default()
    }
    .message();
    // Cut inside the extensions, so the name is in neither record whole.
    routed_unchanged(&records(&message, &[message.len() - 40]), "beta");
}

#[test]
fn a_hello_padded_past_four_kib_is_routed_and_relayed_unchanged() {
    let hello = Hello {
        sni: Some("alpha.example"),
        padding: 6000,
        ..Hello::default()
    }
    .record();
    assert!(hello.len() > 6000);
    routed_unchanged(&hello, "alpha");
}

#[test]
fn a_plain_text_client_goes_to_the_default_pool_at_once_with_its_bytes_unchanged() {
    // A long inspect_timeout: only seeing "GET" can route this quickly.
    let (lb, backends, admin) = capturing_balancer(", inspect_timeout: \"20s\"");
    let request = b"GET / HTTP/1.0\r\nHost: alpha.example\r\n\r\n";
    let mut client = connect(lb.listen);
    let start = Instant::now();
    client.write_all(request).unwrap();
    assert_eq!(identity(&mut client), "default");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        captured_after_close(client, &backends, "default", 1),
        request
    );
    let log = lb.wait_access_log(WITHIN, |a| a.pool == "default");
    assert_eq!(field(&log, "route"), Some("-"), "{}", log.line);
    assert_eq!(defaulted(admin, "not_tls"), 1.0);
    assert_eq!(defaulted(admin, "timeout"), 0.0);
}

#[test]
fn a_silent_client_goes_to_the_default_pool_at_the_inspect_timeout() {
    let (lb, _backends, admin) = capturing_balancer(", inspect_timeout: \"300ms\"");
    let mut client = connect(lb.listen);
    let start = Instant::now();
    // The default backend writes its name as soon as it is connected.
    assert_eq!(identity(&mut client), "default");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(280),
        "routed after {waited:?}, before the 300ms inspect_timeout"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "routed only after {waited:?}"
    );
    assert_eq!(defaulted(admin, "timeout"), 1.0);
    assert_eq!(defaulted(admin, "not_tls"), 0.0);
}

#[test]
fn a_hello_over_16_kib_goes_to_the_default_pool_with_its_bytes_unchanged() {
    for (padding, pool, too_large) in [(15_000, "alpha", 0.0), (17_000, "default", 1.0)] {
        let (lb, backends, admin) = capturing_balancer("");
        let hello = Hello {
            sni: Some("alpha.example"),
            padding,
            ..Hello::default()
        }
        .record();
        let mut client = connect(lb.listen);
        client.write_all(&hello).unwrap();
        assert_eq!(identity(&mut client), pool, "{} bytes", hello.len());
        assert_eq!(captured_after_close(client, &backends, pool, 1), hello);
        assert_eq!(defaulted(admin, "too_large"), too_large);
    }
}

#[test]
fn hundreds_of_hellos_in_parallel_each_reach_the_pool_of_their_name() {
    const CLIENTS: usize = 300;
    const THREADS: usize = 12;
    let (lb, _backends, _) = capturing_balancer("");
    let cases: [(Option<&str>, &[&str], &str); 5] = [
        (Some("alpha.example"), &[], "alpha"),
        (Some("deep.x.alpha.example"), &["h2"], "alpha"),
        (Some("beta.example"), &["http/1.1"], "beta"),
        (Some("alpha.example"), &["acme-tls/1"], "acme"),
        (None, &[], "default"),
    ];
    let next = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(Mutex::new(Vec::new()));
    let listen = lb.listen;
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, wrong) = (Arc::clone(&next), Arc::clone(&wrong));
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= CLIENTS || Instant::now() >= deadline {
                    return;
                }
                let (sni, alpn, want) = cases[i % cases.len()];
                let hello = Hello {
                    sni,
                    alpn,
                    ..Hello::default()
                }
                .record();
                let got = pool_reached(listen, &hello).unwrap_or_else(|e| format!("error: {e}"));
                if got != want {
                    wrong
                        .lock()
                        .unwrap()
                        .push(format!("{sni:?} {alpn:?}: {got}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        next.load(Ordering::SeqCst).min(CLIENTS),
        CLIENTS,
        "ran out of time"
    );
    let wrong = wrong.lock().unwrap();
    assert!(
        wrong.is_empty(),
        "{} misrouted: {:?}",
        wrong.len(),
        &wrong[..]
    );
}

/// A balancer whose one route sends `alpha.example` to a pool of
/// `alpha` (with `extra` fields), and the rest to `default`.
fn alpha_balancer(default: &Backend, alpha: Vec<SocketAddr>, extra: &str) -> Balancer {
    let listen = free_addr();
    let listener = format!(
        "(name: \"tls\", bind: \"{listen}\", pool: \"default\", routes: [(sni: [\"alpha.example\"], pool: \"alpha\")])"
    );
    let pools = [
        Pool("default", vec![default.addr()], ""),
        Pool("alpha", alpha, extra),
    ];
    Balancer::with_config(&config(&listener, &pools, None), listen)
}

#[test]
fn a_pool_with_send_proxy_v2_gets_the_server_name_as_authority_then_the_exact_hello() {
    let (backend, seen) = capture("alpha");
    let default = Backend::identity("default");
    let lb = alpha_balancer(&default, vec![backend.addr()], ", send_proxy: \"v2\"");
    let hello = Hello {
        // Written in capitals and with a trailing dot: still alpha's.
        sni: Some("Alpha.Example."),
        alpn: &["h2"],
        ..Hello::default()
    }
    .record();
    let mut client = connect(lb.listen);
    client.write_all(&hello).unwrap();
    assert_eq!(identity(&mut client), "alpha");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(wait_until(WITHIN, || !seen.lock().unwrap().is_empty()));
    let got = seen.lock().unwrap()[0].clone();
    let (tlvs, header_len) = tls::v2_tlvs(&got).unwrap();
    let authority: Vec<&Vec<u8>> = tlvs
        .iter()
        .filter(|(kind, _)| *kind == 0x02)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(authority.len(), 1, "TLVs: {tlvs:?}");
    let name = String::from_utf8_lossy(authority[0]).to_ascii_lowercase();
    assert_eq!(name.trim_end_matches('.'), "alpha.example");
    assert_eq!(&got[header_len..], &hello[..], "the hello after the header");
}

#[test]
fn an_accept_proxy_listener_routes_by_the_header_address_and_the_server_name() {
    let backends = Capturing::new();
    let (listen, sources_only) = (free_addr(), free_addr());
    let listeners = format!(
        r#"(name: "edge", bind: "{listen}", pool: "default", accept_proxy: true, routes: [
            (name: "inside", source: ["198.51.100.0/24"], sni: ["alpha.example"], pool: "acme"),
            (name: "alpha", sni: ["alpha.example"], pool: "alpha"),
        ]),
        (name: "by-address", bind: "{sources_only}", pool: "default", accept_proxy: true, routes: [
            (name: "inside", source: ["198.51.100.0/24"], pool: "beta"),
        ])"#
    );
    let lb = Balancer::with_config(&config(&listeners, &backends.pools(), None), listen);
    let hello = Hello {
        sni: Some("alpha.example"),
        ..Hello::default()
    }
    .record();
    let through = |to: SocketAddr, source: &str, payload: &[u8]| {
        let mut client = connect(to);
        let mut bytes = format!("PROXY TCP4 {source} 192.0.2.1 40000 443\r\n").into_bytes();
        bytes.extend_from_slice(payload);
        client.write_all(&bytes).unwrap();
        identity(&mut client)
    };
    assert_eq!(through(listen, "198.51.100.7", &hello), "acme");
    assert_eq!(through(listen, "203.0.113.9", &hello), "alpha");
    assert_eq!(through(sources_only, "198.51.100.8", b"hi"), "beta");
    assert_eq!(through(sources_only, "203.0.113.9", b"hi"), "default");
    let log = lb.wait_access_log(WITHIN, |a| a.client == "198.51.100.7:40000");
    assert_eq!(field(&log, "route"), Some("inside"), "{}", log.line);
    assert_eq!(field(&log, "sni"), Some("alpha.example"), "{}", log.line);
    // The hello that came with the header, counted once.
    assert_eq!(log.bytes_in, hello.len() as u64, "{}", log.line);
}

#[test]
fn a_retry_after_a_refused_backend_replays_the_whole_hello() {
    let refusing = RefusingPort::new();
    let (backend, seen) = capture("alpha");
    let default = Backend::identity("default");
    let lb = alpha_balancer(&default, vec![refusing.addr, backend.addr()], "");
    let hello = Hello {
        sni: Some("alpha.example"),
        padding: 3000,
        ..Hello::default()
    }
    .record();
    // Round-robin sends one of two connections to the refusing port first.
    for n in 1..=2 {
        let mut client = connect(lb.listen);
        client.write_all(&hello).unwrap();
        assert_eq!(identity(&mut client), "alpha");
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(wait_until(WITHIN, || seen.lock().unwrap().len() >= n));
    }
    for got in seen.lock().unwrap().iter() {
        assert_eq!(got, &hello);
    }
    assert!(
        wait_until(WITHIN, || {
            lb.access_logs()
                .iter()
                .any(|a| a.attempts == 2 && a.backend == backend.addr().to_string())
        }),
        "no connection was retried:\n{}",
        lb.logs_joined()
    );
}

#[test]
fn reloads_that_add_and_remove_routes_fail_no_handshake_and_apply_to_new_connections() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 400;
    let backends = Capturing::new();
    let listen = free_addr();
    let with_routes = |routes: &str| {
        config(
            &format!("(name: \"tls\", bind: \"{listen}\", pool: \"default\", routes: [{routes}])"),
            &backends.pools(),
            None,
        )
    };
    let alpha_only = r#"(name: "alpha", sni: ["alpha.example"], pool: "alpha")"#;
    let both = r#"(name: "alpha", sni: ["alpha.example"], pool: "alpha"), (name: "beta", sni: ["beta.example"], pool: "beta")"#;
    let beta_only = r#"(name: "beta", sni: ["beta.example"], pool: "beta")"#;
    let lb = Balancer::with_config(&with_routes(alpha_only), listen);

    let reach = |name: &str| {
        let hello = Hello {
            sni: Some(name),
            ..Hello::default()
        };
        pool_reached(listen, &hello.record()).unwrap()
    };
    assert_eq!(reach("alpha.example"), "alpha");
    assert_eq!(reach("beta.example"), "default");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
            let name = if t % 2 == 0 {
                "alpha.example"
            } else {
                "beta.example"
            };
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                        return;
                    }
                    let hello = Hello {
                        sni: Some(name),
                        ..Hello::default()
                    }
                    .record();
                    let got = pool_reached(listen, &hello);
                    // Either pool is right for a name whose route changes.
                    match got.as_deref() {
                        Ok("alpha" | "beta" | "default") => {}
                        other => failures.lock().unwrap().push(format!("{name}: {other:?}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Reload while the clients are busy.
    assert!(wait_until(WITHIN, || done.load(Ordering::SeqCst) >= 50));
    lb.reload_with(&with_routes(both));
    assert_eq!(reach("alpha.example"), "alpha");
    assert_eq!(reach("beta.example"), "beta");
    let mark = done.load(Ordering::SeqCst);
    assert!(wait_until(WITHIN, || done.load(Ordering::SeqCst) >= mark + 50));
    lb.reload_with(&with_routes(beta_only));
    // Every new connection after the reload line follows the new routes.
    for _ in 0..10 {
        assert_eq!(reach("alpha.example"), "default");
        assert_eq!(reach("beta.example"), "beta");
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} handshakes failed: {:?}",
        failures.len(),
        done.load(Ordering::SeqCst),
        &failures[..failures.len().min(10)]
    );
}

/// Runs `--check` on a configuration with a routed listener and pools
/// default, alpha and beta; returns stderr.
fn check_routes(routes: &str, protocol: &str) -> (bool, String) {
    let dir = TempDir::new("check-routes");
    let text = format!(
        r#"(
    listeners: [
        (name: "plain", bind: "127.0.0.1:8080", pool: "default"),
        (name: "tls", bind: "127.0.0.1:8443", pool: "default"{protocol}, routes: {routes}),
    ],
    pools: [
        (name: "default", backends: [(address: "127.0.0.1:9001")]),
        (name: "alpha", backends: [(address: "127.0.0.1:9002")]),
        (name: "beta", backends: [(address: "127.0.0.1:9003")]),
    ],
)"#
    );
    dir.write("routes.ron", &text);
    let out = run_to_completion(
        &["--check", "--config", "routes.ron"],
        Some(dir.path()),
        Duration::from_secs(10),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_the_path_of_each_bad_route_entry() {
    let (ok, err) = check_routes(
        r#"[(sni: ["alpha.example"], pool: "alpha"), (sni: ["*.alpha.example"], pool: "gamma")]"#,
        "",
    );
    assert!(!ok);
    assert!(err.contains("listeners[1].routes[1].pool"), "{err}");
    assert!(err.contains("gamma"), "{err}");

    let (ok, err) = check_routes(
        r#"[(sni: ["alpha.example", "not a name"], pool: "alpha")]"#,
        "",
    );
    assert!(!ok);
    assert!(err.contains("listeners[1].routes[0].sni[1]"), "{err}");

    let (ok, err) = check_routes(
        r#"[(alpn: ["h2"], pool: "alpha"), (source: ["10.0.0.1/8"], pool: "beta")]"#,
        "",
    );
    assert!(!ok);
    assert!(err.contains("listeners[1].routes[1].source[0]"), "{err}");

    let (ok, err) = check_routes(
        r#"[(sni: ["*.example"], pool: "alpha"), (sni: ["a.example"], alpn: ["h2"], pool: "beta")]"#,
        "",
    );
    assert!(!ok);
    assert!(
        err.contains("listeners[1].routes[1]: can never match: routes[0]"),
        "{err}"
    );

    let (ok, err) = check_routes(r#"[(pool: "alpha")]"#, "");
    assert!(!ok);
    assert!(
        err.contains("listeners[1].routes[0]: has no condition"),
        "{err}"
    );

    let (ok, err) = check_routes(
        r#"[(source: ["10.0.0.0/8"], pool: "alpha")]"#,
        r#", protocol: "udp""#,
    );
    assert!(!ok);
    assert!(err.contains("listeners[1].routes"), "{err}");

    let (ok, err) = check_routes(
        r#"[(name: "x", sni: ["alpha.example"], pool: "alpha"), (name: "x", sni: ["beta.example"], pool: "beta")]"#,
        "",
    );
    assert!(!ok);
    assert!(err.contains("listeners[1].routes[1].name"), "{err}");

    // And a good one passes.
    let (ok, err) = check_routes(
        r#"[(name: "acme", alpn: ["acme-tls/1"], pool: "beta"), (sni: ["alpha.example", "*.alpha.example"], pool: "alpha")]"#,
        "",
    );
    assert!(ok, "{err}");
}
