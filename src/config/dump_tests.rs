//! The dump reads back to the configuration it came from, for generated
//! configurations using every section, and writes every default out.

use std::net::SocketAddr;

use quickcheck::{Gen, QuickCheck, TestResult};

use crate::config::Config;

/// Host names resolve to fixed addresses, so no case waits on DNS.
fn fake_dns(host: &str) -> Result<Vec<SocketAddr>, String> {
    let port = host.rsplit_once(':').map_or("80", |(_, p)| p);
    let port: u16 = port.parse().map_err(|_| format!("{host:?}: bad port"))?;
    Ok(vec![
        SocketAddr::from(([10, 9, 0, 1], port)),
        SocketAddr::from(([10, 9, 0, 2], port)),
    ])
}

fn parse(text: &str) -> Result<Config, String> {
    Config::parse_with(text, "dump.ron", &fake_dns).map_err(|e| e.to_string())
}

/// Parses `text`, dumps it, and parses the dump: both must be equal.
fn round_trip(text: &str) -> Result<(Config, String), String> {
    let mut config = parse(text)?;
    let dumped = config.dump()?;
    let again = parse(&dumped).map_err(|e| format!("the dump does not parse: {e}\n{dumped}"))?;
    // The token is never written, so it cannot come back.
    if let Some(admin) = &mut config.admin {
        admin.token = None;
    }
    if again != config {
        return Err(format!("read back differently:\n{text}\n---\n{dumped}"));
    }
    Ok((config, dumped))
}

const EVERYTHING: &str = r#"(
    global: (workers: 3, buffer_size: 4096, log_level: "debug", access_log: false,
             access_log_file: "/tmp/b4-access.log", access_log_format: "json",
             syslog: (target: "udp://127.0.0.1:5514", format: "rfc3164",
                      facility: "local4", tag: "lb", logs: "access"),
             retries: 0, zero_copy: "on", user: "nobody", group: "nogroup"),
    timeouts: (connect: "1500ms", idle: "1h2m", drain: "0s"),
    listeners: [
        (name: "tls", bind: "127.0.0.1:8443", pool: "web", accept_proxy: true,
         proxy_timeout: "750ms", allow: ["10.0.0.0/8", "::1"], deny: ["10.1.2.3"],
         max_connections: 100, max_connections_per_ip: 5,
         rate_per_ip: (per_second: 20), inspect_timeout: "2s",
         routes: [(name: "api", sni: ["api.example", "*.api.example"], alpn: ["h2"],
                   pool: "api"),
                  (source: ["192.0.2.0/24"], pool: "api")]),
        (bind: "[::1]:5353", pool: "dns", protocol: "udp",
         udp: (idle_timeout: "5s", responses: 1, requests: 0, key: "ip", max_flows: 77)),
    ],
    pools: [
        (name: "web", policy: "least-connections", send_proxy: "v1",
         queue: (size: 10, timeout: "250ms"),
         health: (interval: "3s", timeout: "1s", rise: 1, fall: 5, jitter: 0.25,
                  send: "GET / HTTP/1.0\r\n\r\n\x00\xff", expect: "HTTP/1.1 200",
                  initial_state: "unknown", passive_failures: 0,
                  when_all_down: "fail-open", slow_start: "30s"),
         backends: [(address: "127.0.0.1:9001", weight: 3, max_connections: 9),
                    (address: "[::1]:9002", weight: 0),
                    (address: "127.0.0.1:9003", backup: true)]),
        (name: "api", policy: "source-hash", resolve_every: "1m",
         backends: [(address: "api.internal:8080", weight: 2)]),
        (name: "dns", policy: "random", send_proxy: "v2", health: (enabled: false),
         backends: [(address: "127.0.0.1:53")]),
    ],
    admin: (bind: "127.0.0.1:9090", token: "s3cret"),
)"#;

#[test]
fn a_config_using_every_section_reads_back_equal_without_its_token() {
    let (config, dumped) = round_trip(EVERYTHING).unwrap_or_else(|e| panic!("{e}"));
    assert!(!dumped.contains("s3cret"), "{dumped}");
    assert!(dumped.starts_with("// admin.token is set"), "{dumped}");
    assert!(
        dumped.contains(r#"address: "api.internal:8080""#),
        "{dumped}"
    );
    assert_eq!(config.pools[1].backends[0].addresses.len(), 2);
}

#[test]
fn every_default_is_written_out() {
    let minimal = r#"(listeners: [(bind: "127.0.0.1:8080")],
                      pools: [(backends: [(address: "127.0.0.1:9001")])])"#;
    let (_, dumped) = round_trip(minimal).unwrap_or_else(|e| panic!("{e}"));
    for default in [
        r#"connect: "3s""#,
        r#"idle: "5m""#,
        r#"drain: "10s""#,
        r#"policy: "round-robin""#,
        r#"interval: "2s""#,
        r#"name: "default""#,
        r#"log_level: "info""#,
        r#"zero_copy: "auto""#,
        "retries: 3",
        r#"access_log_format: "key-value""#,
        "weight: 1",
    ] {
        assert!(
            dumped.contains(default),
            "{default} missing from:\n{dumped}"
        );
    }
    assert!(!dumped.contains("admin"), "no admin listener, no section");
}

/// One of `items`, chosen by `g`.
fn pick<'a>(g: &mut Gen, items: &[&'a str]) -> &'a str {
    g.choose(items).copied().unwrap_or("")
}

fn duration(g: &mut Gen) -> String {
    let n = u32::from(<u8 as quickcheck::Arbitrary>::arbitrary(g)) + 1;
    format!("{n}{}", pick(g, &["ms", "s", "m", "s500ms"]))
}

fn small(g: &mut Gen, below: u8) -> u8 {
    <u8 as quickcheck::Arbitrary>::arbitrary(g) % below
}

/// A configuration drawn from every section's values; some draws break a
/// cross-field rule, and are skipped.
fn generated(g: &mut Gen) -> String {
    let pools = 1 + small(g, 3);
    let mut text = format!(
        "(global: (workers: {}, buffer_size: {}, log_level: \"{}\", access_log: {}, retries: {}, zero_copy: \"{}\"),\n",
        1 + small(g, 8),
        pick(g, &["1024", "4096", "16384", "65536"]),
        pick(g, &["off", "error", "warn", "info", "debug", "trace"]),
        small(g, 2) == 0,
        small(g, 6),
        pick(g, &["auto", "on", "off"]),
    );
    text += &format!(
        "timeouts: (connect: \"{}\", idle: \"{}\", drain: \"{}\"),\nlisteners: [\n",
        duration(g),
        duration(g),
        pick(g, &["0s", "1s", "250ms"])
    );
    for l in 0..1 + small(g, 3) {
        let pool = small(g, pools);
        if small(g, 3) == 0 {
            text += &format!(
                "(bind: \"127.0.0.1:{}\", pool: \"p{pool}\", protocol: \"udp\", udp: (idle_timeout: \"{}\", responses: {}, requests: {}, key: \"{}\")),\n",
                7000 + u16::from(l),
                duration(g),
                small(g, 3),
                small(g, 3),
                pick(g, &["ip", "ip-port"]),
            );
            continue;
        }
        text += &format!(
            "(name: \"l{l}\", bind: \"{}:{}\", pool: \"p{pool}\", allow: [{}], deny: [{}], {} {} routes: [{}]),\n",
            pick(g, &["127.0.0.1", "[::1]", "0.0.0.0"]),
            8000 + u16::from(l),
            pick(g, &["", "\"10.0.0.0/8\"", "\"::1\", \"192.0.2.0/24\""]),
            pick(g, &["", "\"10.1.0.0/16\""]),
            pick(g, &["", "accept_proxy: true,", "accept_proxy: true, proxy_timeout: \"1s\","]),
            pick(g, &["", "max_connections: 50,", "max_connections_per_ip: 3, rate_per_ip: (per_second: 5, burst: 9),"]),
            pick(g, &["", "(sni: [\"a.example\"], pool: \"p0\")", "(name: \"x\", alpn: [\"h2\", \"http/1.1\"], source: [\"10.0.0.0/8\"], pool: \"p0\")"]),
        );
    }
    text += "],\npools: [\n";
    for p in 0..pools {
        let interval = 1 + small(g, 9);
        text += &format!(
            "(name: \"p{p}\", policy: \"{}\", {} queue: (size: {}, timeout: \"{}\"),\n health: (enabled: {}, interval: \"{interval}s\", timeout: \"{}s\", rise: {}, fall: {}, jitter: {}, {} initial_state: \"{}\", passive_failures: {}, when_all_down: \"{}\", slow_start: \"{}\"),\n backends: [",
            pick(g, &["round-robin", "weighted-round-robin", "least-connections", "power-of-two", "random", "source-hash"]),
            pick(g, &["", "send_proxy: \"v2\",", "resolve_every: \"30s\","]),
            small(g, 20),
            duration(g),
            small(g, 4) != 0,
            1 + small(g, interval),
            1 + small(g, 5),
            1 + small(g, 5),
            pick(g, &["0.0", "0.1", "0.25", "0.5"]),
            pick(g, &["", "send: \"PING\\r\\n\", expect: \"+PONG\",", "expect: \"SSH-\",", "send: \"\\x00\\x01\\xfe\\xff\","]),
            pick(g, &["up", "unknown"]),
            small(g, 4),
            pick(g, &["fail-fast", "fail-open"]),
            pick(g, &["0s", "10s"]),
        );
        for b in 0..1 + small(g, 4) {
            let address = match small(g, 4) {
                0 => format!("[::1]:{}", 9000 + u16::from(b)),
                1 if b == 0 => "db.internal:5432".to_string(),
                _ => format!("127.0.{p}.{}:9000", b + 1),
            };
            text += &format!(
                "(address: \"{address}\", weight: {}, {} {}),",
                1 + small(g, 10),
                pick(g, &["", "max_connections: 4,"]),
                if b > 0 && small(g, 3) == 0 {
                    "backup: true"
                } else {
                    ""
                },
            );
        }
        text += "]),\n";
    }
    text + "])"
}

/// The text of a generated configuration.
#[derive(Debug, Clone)]
struct Generated(String);

impl quickcheck::Arbitrary for Generated {
    fn arbitrary(g: &mut Gen) -> Generated {
        Generated(generated(g))
    }
}

#[test]
fn generated_configs_read_back_equal_from_their_dump() {
    fn prop(config: Generated) -> TestResult {
        if parse(&config.0).is_err() {
            return TestResult::discard();
        }
        match round_trip(&config.0) {
            Ok(_) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .tests(300)
        .max_tests(3000)
        .quickcheck(prop as fn(Generated) -> TestResult);
}
