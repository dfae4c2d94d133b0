//! Properties of the config loader over generated input: arbitrary text and
//! valid configs with random bytes flipped, inserted or deleted never panic
//! and every error names a field path or a line:column; generated valid
//! configs parse back to the values written.
//!
//! Backend host names go to a resolver that knows none, so no case waits
//! on DNS. Counts and sizes are bounded to keep the set to about a second.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use log::LevelFilter;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use super::duration::format_duration;
use super::{Config, ConfigError, PolicyKind, ZeroCopy, MAX_BUFFER_SIZE, MAX_TIMEOUT};
use super::{MAX_WEIGHT, MAX_WORKERS, MIN_BUFFER_SIZE};

const ORIGIN: &str = "props.ron";

/// Valid configs the mutations start from: none names a file or a host,
/// so a mutation cannot create files nor wait on a lookup for long.
const SEEDS: &[&str] = &[
    include_str!("../../config/demo.ron"),
    r#"(
    global: (workers: 2, buffer_size: 4096, log_level: "warn", retries: 1, zero_copy: "off"),
    timeouts: (connect: "500ms", idle: "1m30s", drain: "0s"),
    listeners: [
        (name: "web", bind: "127.0.0.1:8080", pool: "web", max_connections: 10,
         allow: ["10.0.0.0/8", "::1"], deny: ["10.0.0.5"], accept_proxy: true),
        (name: "dns", bind: "[::1]:5353", pool: "dns", protocol: "udp"),
    ],
    pools: [
        (name: "web", policy: "least-connections", send_proxy: "v2",
         health: (interval: "2s", rise: 2, fall: 3),
         backends: [(address: "127.0.0.1:9001", weight: 3), (address: "[::1]:9002")]),
        (name: "dns", policy: "source-hash", backends: [(address: "127.0.0.1:53")]),
    ],
)"#,
];

fn no_dns(host: &str) -> Result<Vec<SocketAddr>, String> {
    Err(format!("{host:?} does not resolve: no such host"))
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with(text, ORIGIN, &no_dns)
}

fn check<A: Arbitrary + std::fmt::Debug>(tests: u64, prop: fn(A) -> TestResult) {
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 10)
        .quickcheck(prop);
}

/// `a.b[3].c`: field names and list indexes, nothing else.
fn is_field_path(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            let (name, index) = match part.split_once('[') {
                Some((name, index)) => (name, Some(index)),
                None => (part, None),
            };
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && index.is_none_or(|i| {
                    i.strip_suffix(']')
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
        })
}

/// `ORIGIN:LINE:COL: ...` or `ORIGIN: PATH: ...`, with a message after.
fn is_located(error: &str) -> bool {
    let Some(rest) = error.strip_prefix(ORIGIN) else {
        return false;
    };
    if let Some(path_and_message) = rest.strip_prefix(": ") {
        return path_and_message
            .split_once(": ")
            .is_some_and(|(path, message)| is_field_path(path) && !message.trim().is_empty());
    }
    let mut parts = rest.splitn(4, ':');
    let number = |p: Option<&str>| p.is_some_and(|d| !d.is_empty() && d.parse::<u32>().is_ok());
    parts.next() == Some("")
        && number(parts.next())
        && number(parts.next())
        && parts.next().is_some_and(|m| m.trim().len() > 1)
}

fn errors_are_located(text: &str) -> TestResult {
    match parse(text) {
        Ok(_) => TestResult::passed(),
        Err(e) if e.errors.is_empty() => TestResult::error("an error without a message"),
        Err(e) => match e.errors.iter().find(|m| !is_located(m)) {
            None => TestResult::passed(),
            Some(m) => TestResult::error(format!("{m:?} names neither a field nor a line")),
        },
    }
}

#[test]
fn the_checker_accepts_real_messages_and_refuses_bare_ones() {
    assert!(is_located("props.ron:3:14: pools[0].policy: unknown"));
    assert!(is_located("props.ron:1:1: the config file is empty"));
    assert!(is_located("props.ron: listeners[1].bind: port 0"));
    assert!(is_located("props.ron: timeouts.idle: too long"));
    assert!(!is_located("props.ron: something went wrong"));
    assert!(!is_located("props.ron:3: no column"));
    assert!(!is_located("pools[0]: no origin"));
}

#[test]
fn the_seeds_are_valid() {
    for seed in SEEDS {
        if let Err(e) = parse(seed) {
            panic!("seed does not parse:\n{e}");
        }
    }
}

#[test]
fn arbitrary_text_never_panics_and_errors_are_located() {
    fn prop(text: String) -> TestResult {
        errors_are_located(&text)
    }
    check(1000, prop as fn(_) -> _);
}

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
}

impl Arbitrary for Edit {
    fn arbitrary(g: &mut Gen) -> Edit {
        let at = usize::arbitrary(g);
        // Bytes that matter to RON come up more often than uniformly.
        let byte = if bool::arbitrary(g) {
            *g.choose(b"()[]{},:\"'/\\*.-+0123456789 \nabcdefghijklmnopqrstuvwxyz_#rb")
                .unwrap_or(&b'(')
        } else {
            u8::arbitrary(g)
        };
        match u8::arbitrary(g) % 3 {
            0 => Edit::Flip { at, bit: byte % 8 },
            1 => Edit::Insert { at, byte },
            _ => Edit::Delete { at },
        }
    }
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    match *edit {
        Edit::Flip { at, bit } if !bytes.is_empty() => {
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
        }
        Edit::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
        Edit::Delete { at } if !bytes.is_empty() => {
            bytes.remove(at % bytes.len());
        }
        _ => {}
    }
}

#[test]
fn mutated_valid_configs_never_panic_and_errors_are_located() {
    fn prop((seed, edits): (usize, Vec<Edit>)) -> TestResult {
        let mut bytes = SEEDS[seed % SEEDS.len()].as_bytes().to_vec();
        for edit in edits.iter().take(8) {
            apply(&mut bytes, edit);
        }
        errors_are_located(&String::from_utf8_lossy(&bytes))
    }
    check(5000, prop as fn(_) -> _);
}

#[test]
fn a_seed_cut_anywhere_never_panics_and_errors_are_located() {
    fn prop((seed, at): (usize, usize)) -> TestResult {
        let text = SEEDS[seed % SEEDS.len()];
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        errors_are_located(&text[..at])
    }
    check(500, prop as fn(_) -> _);
}

/// The values of a valid config, to be written as RON and read back.
#[derive(Debug, Clone)]
struct Values {
    workers: usize,
    buffer_size: usize,
    log_level: LevelFilter,
    access_log: bool,
    retries: u32,
    zero_copy: ZeroCopy,
    connect: Duration,
    idle: Duration,
    drain: Duration,
    /// Per listener: its port and the pool it uses.
    listeners: Vec<(u16, usize)>,
    /// Per pool: its policy and its backends' ports and weights.
    pools: Vec<(PolicyKind, Vec<(u16, u32)>)>,
}

fn timeout(g: &mut Gen, positive: bool) -> Duration {
    let max = MAX_TIMEOUT.as_nanos() as u64;
    let nanos = match u8::arbitrary(g) % 3 {
        // Round values, as people write them, and arbitrary ones.
        0 => u64::arbitrary(g) % 3600 * 1_000_000_000,
        1 => u64::arbitrary(g) % 10_000 * 1_000_000,
        _ => u64::arbitrary(g) % max,
    };
    Duration::from_nanos(nanos.max(u64::from(positive)))
}

impl Arbitrary for Values {
    fn arbitrary(g: &mut Gen) -> Values {
        let levels = [
            LevelFilter::Off,
            LevelFilter::Error,
            LevelFilter::Warn,
            LevelFilter::Info,
            LevelFilter::Debug,
            LevelFilter::Trace,
        ];
        let pool_count = 1 + usize::arbitrary(g) % 3;
        let pools = (0..pool_count)
            .map(|_| {
                let policy = *g.choose(PolicyKind::ALL).unwrap_or(&PolicyKind::Random);
                // The first backend takes a weight of at least 1: a pool of
                // weight-0 backends only is refused.
                let backends = (0..1 + usize::arbitrary(g) % 4)
                    .map(|k| {
                        let weight = u32::arbitrary(g) % (MAX_WEIGHT + 1);
                        (u16::arbitrary(g).max(1), weight.max(u32::from(k == 0)))
                    })
                    .collect();
                (policy, backends)
            })
            .collect();
        let first_port = 10_000 + u16::arbitrary(g) % 50_000;
        let listeners = (0..1 + u16::arbitrary(g) % 3)
            .map(|i| (first_port + i, usize::arbitrary(g) % pool_count))
            .collect();
        Values {
            workers: 1 + usize::arbitrary(g) % MAX_WORKERS,
            buffer_size: MIN_BUFFER_SIZE
                + usize::arbitrary(g) % (MAX_BUFFER_SIZE - MIN_BUFFER_SIZE + 1),
            log_level: *g.choose(&levels).unwrap_or(&LevelFilter::Info),
            access_log: bool::arbitrary(g),
            retries: u32::arbitrary(g) % 100,
            zero_copy: *g
                .choose(&[ZeroCopy::Auto, ZeroCopy::On, ZeroCopy::Off])
                .unwrap_or(&ZeroCopy::Auto),
            connect: timeout(g, true),
            idle: timeout(g, true),
            drain: timeout(g, false),
            listeners,
            pools,
        }
    }
}

/// Backend `k` of pool `p`: a distinct address in 10.p.k.1.
fn backend_ip(p: usize, k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, p as u8, k as u8, 1))
}

impl Values {
    fn to_ron(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, (port, pool))| {
                format!(r#"(name: "l{i}", bind: "127.0.0.1:{port}", pool: "p{pool}")"#)
            })
            .collect();
        let pools: Vec<String> = self
            .pools
            .iter()
            .enumerate()
            .map(|(p, (policy, backends))| {
                let backends: Vec<String> = backends
                    .iter()
                    .enumerate()
                    .map(|(k, (port, weight))| {
                        let address = SocketAddr::new(backend_ip(p, k), *port);
                        format!(r#"(address: "{address}", weight: {weight})"#)
                    })
                    .collect();
                format!(
                    r#"(name: "p{p}", policy: "{policy}", backends: [{}])"#,
                    backends.join(", ")
                )
            })
            .collect();
        format!(
            r#"(
    global: (workers: {}, buffer_size: {}, log_level: "{}", access_log: {}, retries: {}, zero_copy: "{}"),
    timeouts: (connect: "{}", idle: "{}", drain: "{}"),
    listeners: [{}],
    pools: [{}],
)"#,
            self.workers,
            self.buffer_size,
            self.log_level,
            self.access_log,
            self.retries,
            self.zero_copy.as_str(),
            format_duration(self.connect),
            format_duration(self.idle),
            format_duration(self.drain),
            listeners.join(", "),
            pools.join(", "),
        )
    }

    /// Whether `config` holds exactly these values.
    fn read_back_in(&self, config: &Config) -> bool {
        let g = &config.global;
        let t = &config.timeouts;
        let global_ok = (
            g.workers,
            g.buffer_size,
            g.log_level,
            g.access_log,
            g.retries,
        ) == (
            self.workers,
            self.buffer_size,
            self.log_level,
            self.access_log,
            self.retries,
        ) && g.zero_copy == self.zero_copy;
        let timeouts_ok = (t.connect, t.idle, t.drain) == (self.connect, self.idle, self.drain);
        let listeners_ok = config.listeners.len() == self.listeners.len()
            && config
                .listeners
                .iter()
                .zip(&self.listeners)
                .all(|(l, (port, pool))| {
                    l.addresses == [SocketAddr::from(([127, 0, 0, 1], *port))]
                        && l.pool == format!("p{pool}")
                });
        let pools_ok = config.pools.len() == self.pools.len()
            && config.pools.iter().zip(&self.pools).enumerate().all(
                |(p, (pool, (policy, backends)))| {
                    pool.name == format!("p{p}")
                        && pool.policy == *policy
                        && pool.backends.len() == backends.len()
                        && pool.backends.iter().zip(backends).enumerate().all(
                            |(k, (b, (port, weight)))| {
                                b.addresses == [SocketAddr::new(backend_ip(p, k), *port)]
                                    && b.weight == *weight
                            },
                        )
                },
            );
        global_ok && timeouts_ok && listeners_ok && pools_ok
    }
}

#[test]
fn a_valid_config_reads_back_the_values_written() {
    fn prop(values: Values) -> TestResult {
        let text = values.to_ron();
        match parse(&text) {
            Ok(config) if values.read_back_in(&config) => TestResult::passed(),
            Ok(config) => TestResult::error(format!("{text}\nread as {config:#?}")),
            Err(e) => TestResult::error(format!("{text}\nrefused:\n{e}")),
        }
    }
    check(500, prop as fn(_) -> _);
}
