//! Semantic checks on a built [`Config`], each problem reported with the path
//! of the field at fault (e.g. `pools[0].backends[2].address`).
//!
//! This file owns the rules that hold whatever way a config was made: ranges,
//! non-empty lists, unique names and addresses, and listener→pool references
//! (the rules of a pool's `health` section live in `health.rs`, called from
//! here).
//! Text-level problems (a malformed address, duration, log level or policy)
//! are found earlier, while converting the file (`raw.rs`). Every check runs
//! and every problem is collected; [`sort`] puts them in file order. No
//! check touches the system: whether the access log file opens and the user
//! and group exist on this host is `preflight`'s, run after these.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::duration::format_duration;
use super::health;
use super::limits;
use super::proxy;
use super::udp;
use super::{
    Config, Global, ListenerConfig, PoolConfig, Protocol, Timeouts, DEFAULT_POOL, MAX_BUFFER_SIZE,
    MAX_TIMEOUT, MAX_WEIGHT, MAX_WORKERS, MIN_BUFFER_SIZE,
};

/// One problem: the path of the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Issue {
    pub(super) path: String,
    pub(super) message: String,
}

impl Issue {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Runs every semantic check and returns all problems found.
pub(super) fn check(config: &Config) -> Vec<Issue> {
    let mut issues = Vec::new();
    check_global(&config.global, &mut issues);
    check_timeouts(&config.timeouts, &mut issues);
    check_listeners(config, &mut issues);
    super::routes::check(config, &mut issues);
    check_pools(&config.pools, &mut issues);
    check_udp_checks(config, &mut issues);
    proxy::check(config, &mut issues);
    check_admin(config, &mut issues);
    issues
}

/// An admin listener others can reach must have a token: without one, its
/// actions are refused to everyone but loopback, so the bind could only be
/// a mistake that also shows every backend to the network.
fn check_admin(config: &Config, issues: &mut Vec<Issue>) {
    let Some(admin) = config.admin.as_ref() else {
        return;
    };
    // A TCP listener's sockets would hold the port first (the admin socket
    // does not share it), so start-up would fail after --check passed.
    let taken = config.listeners.iter().position(|l| {
        l.protocol == Protocol::Tcp && l.addresses.iter().any(|a| overlaps(*a, admin.bind))
    });
    if let Some(i) = taken {
        issues.push(Issue::new(
            "admin.bind",
            format!(
                "{} is also where listeners[{i}] ({:?}) listens; give the admin listener a port of its own",
                admin.bind, config.listeners[i].name
            ),
        ));
    }
    // IPv4 on a dual-stack socket is written ::ffff:127.0.0.1.
    if admin.token.is_none() && !crate::acl::unmapped(admin.bind.ip()).is_loopback() {
        issues.push(Issue::new(
            "admin.token",
            format!(
                "is required when the admin listener binds {}, which is not a loopback address; set a token in a config file (clients then send Authorization: Bearer TOKEN) or bind to 127.0.0.1",
                admin.bind
            ),
        ));
    }
}

/// Two TCP sockets on these addresses would compete for one port: the same
/// port and the same address, or either one a wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Orders issues as their fields appear in a file: by section, then by list
/// index, then by field order within an entry. The sort is stable.
pub(super) fn sort(issues: &mut [Issue]) {
    issues.sort_by_cached_key(|issue| path_key(&issue.path));
}

fn check_global(global: &Global, issues: &mut Vec<Issue>) {
    if global.workers == 0 {
        issues.push(Issue::new(
            "global.workers",
            "must be at least 1 (0, meaning one per core, is resolved when a file is loaded)",
        ));
    } else if global.workers > MAX_WORKERS {
        issues.push(Issue::new(
            "global.workers",
            format!(
                "{} is more than the maximum of {MAX_WORKERS} (0 means one worker per core)",
                global.workers
            ),
        ));
    }
    if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&global.buffer_size) {
        issues.push(Issue::new(
            "global.buffer_size",
            format!(
                "{} bytes is out of range (expected {MIN_BUFFER_SIZE} to {MAX_BUFFER_SIZE}, i.e. 1 KiB to 16 MiB)",
                global.buffer_size
            ),
        ));
    }
    if let Some(path) = &global.access_log_file {
        if path.as_os_str().is_empty() {
            issues.push(Issue::new(
                "global.access_log_file",
                "must not be empty (leave the field out to log to stderr)",
            ));
        }
    }
    check_identity(global, issues);
}

/// A group alone would leave the process root, so it needs a user. Whether
/// they exist on this host is `preflight`'s check.
fn check_identity(global: &Global, issues: &mut Vec<Issue>) {
    if global.user.is_none() && global.group.is_some() {
        issues.push(Issue::new(
            "global.group",
            "is set without global.user; set the user too (the group alone would leave the process running as root)",
        ));
    }
}

fn check_timeouts(timeouts: &Timeouts, issues: &mut Vec<Issue>) {
    let fields = [
        ("connect", timeouts.connect, true),
        ("idle", timeouts.idle, true),
        ("drain", timeouts.drain, false),
    ];
    for (name, value, must_be_positive) in fields {
        check_timeout(format!("timeouts.{name}"), value, must_be_positive, issues);
    }
}

/// A timeout is at most [`MAX_TIMEOUT`] and, if `must_be_positive`, not
/// zero (which would close every connection at once).
pub(super) fn check_timeout(
    path: String,
    value: Duration,
    must_be_positive: bool,
    issues: &mut Vec<Issue>,
) {
    if must_be_positive && value.is_zero() {
        issues.push(Issue::new(
            path,
            "must be more than zero (e.g. 3s); a zero timeout would close every connection",
        ));
    } else if value > MAX_TIMEOUT {
        issues.push(Issue::new(
            path,
            format!(
                "{} is longer than the maximum of {} (365 days)",
                format_duration(value),
                format_duration(MAX_TIMEOUT)
            ),
        ));
    }
}

fn check_listeners(config: &Config, issues: &mut Vec<Issue>) {
    if config.listeners.is_empty() {
        issues.push(Issue::new(
            "listeners",
            "no listeners are defined; add at least one, e.g. listeners: [(name: \"web\", bind: \"0.0.0.0:8080\", pool: \"web\")]",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut bound: HashMap<(Protocol, SocketAddr), usize> = HashMap::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let at = |field: &str| format!("listeners[{i}].{field}");
        check_name(
            &listener.name,
            &at("name"),
            "listeners",
            i,
            &mut names,
            issues,
        );
        check_listener_addresses(listener, i, &mut bound, &config.listeners, issues);
        if config.pool(&listener.pool).is_none() {
            issues.push(Issue::new(at("pool"), unknown_pool(&listener.pool, config)));
        }
        if listener.protocol == Protocol::Udp {
            udp::check(&listener.udp, i, issues);
        }
        limits::check_listener(&listener.limits, listener.protocol, i, issues);
    }
}

/// A UDP pool's check is a datagram and its reply: a server speaks first
/// only over TCP, so `expect` without `send` could never pass.
fn check_udp_checks(config: &Config, issues: &mut Vec<Issue>) {
    for (i, pool) in config.pools.iter().enumerate() {
        let udp = config.pool_protocol(&pool.name) == Protocol::Udp;
        if udp && pool.health.expect.is_some() && pool.health.send.is_none() {
            issues.push(Issue::new(
                format!("pools[{i}].health.expect"),
                "needs send: the pool serves UDP listeners only, and a UDP backend answers only a datagram sent to it",
            ));
        }
    }
}

fn check_listener_addresses(
    listener: &ListenerConfig,
    i: usize,
    bound: &mut HashMap<(Protocol, SocketAddr), usize>,
    all: &[ListenerConfig],
    issues: &mut Vec<Issue>,
) {
    let path = format!("listeners[{i}].bind");
    if listener.addresses.is_empty() {
        issues.push(Issue::new(
            path,
            format!("{:?} resolves to no address", listener.bind),
        ));
        return;
    }
    if listener.addresses.iter().any(|a| a.port() == 0) {
        issues.push(Issue::new(
            path,
            format!(
                "{:?} has port 0; give a fixed port from 1 to 65535",
                listener.bind
            ),
        ));
        return;
    }
    for address in &listener.addresses {
        if let Some(&j) = bound.get(&(listener.protocol, *address)) {
            issues.push(Issue::new(
                path,
                format!(
                    "{address} is already bound by listeners[{j}] ({:?}); each address can have only one {} listener",
                    all[j].name, listener.protocol
                ),
            ));
            return;
        }
    }
    for address in &listener.addresses {
        bound.insert((listener.protocol, *address), i);
    }
}

pub(super) fn unknown_pool(pool: &str, config: &Config) -> String {
    let mut defined: Vec<&str> = Vec::new();
    for pool in &config.pools {
        if !defined.contains(&pool.name.as_str()) {
            defined.push(&pool.name);
        }
    }
    let defined = if defined.is_empty() {
        "no pools are defined".to_string()
    } else {
        format!("defined: {}", defined.join(", "))
    };
    let hint = if pool == DEFAULT_POOL {
        format!("; a listener without `pool` uses {DEFAULT_POOL:?}")
    } else {
        String::new()
    };
    format!("{pool:?} is not a pool defined in pools ({defined}){hint}")
}

fn check_pools(pools: &[PoolConfig], issues: &mut Vec<Issue>) {
    if pools.is_empty() {
        issues.push(Issue::new(
            "pools",
            "no pools are defined; add at least one, e.g. pools: [(name: \"web\", backends: [(address: \"127.0.0.1:9001\")])]",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, pool) in pools.iter().enumerate() {
        check_name(
            &pool.name,
            &format!("pools[{i}].name"),
            "pools",
            i,
            &mut names,
            issues,
        );
        check_backends(pool, i, issues);
        health::check(&pool.health, i, issues);
        limits::check_pool(pool, i, issues);
    }
}

fn check_backends(pool: &PoolConfig, i: usize, issues: &mut Vec<Issue>) {
    if pool.backends.is_empty() {
        issues.push(Issue::new(
            format!("pools[{i}].backends"),
            format!(
                "pool {:?} has no backends; add at least one, e.g. backends: [(address: \"127.0.0.1:9001\")]",
                pool.name
            ),
        ));
        return;
    }
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    for (k, backend) in pool.backends.iter().enumerate() {
        let at = |field: &str| format!("pools[{i}].backends[{k}].{field}");
        // A host name's message says which address it resolved to.
        let named = |address: SocketAddr| match &backend.host {
            Some(host) => format!("{host} (resolved to {address})"),
            None => address.to_string(),
        };
        for &address in &backend.addresses {
            if address.port() == 0 {
                issues.push(Issue::new(
                    at("address"),
                    format!(
                        "{} has port 0; give the port the backend listens on",
                        named(address)
                    ),
                ));
            } else if address.ip().is_unspecified() {
                issues.push(Issue::new(
                    at("address"),
                    format!(
                        "{} is not an address one can connect to; give the backend's own IP (e.g. 127.0.0.1:{})",
                        named(address),
                        address.port()
                    ),
                ));
            } else if let Some(&j) = seen.get(&address) {
                issues.push(Issue::new(
                    at("address"),
                    format!(
                        "{} is already listed as pools[{i}].backends[{j}]; list it once and raise its weight instead",
                        named(address)
                    ),
                ));
            } else {
                seen.insert(address, k);
            }
        }
        if backend.weight > MAX_WEIGHT {
            issues.push(Issue::new(
                at("weight"),
                format!(
                    "{} is more than the maximum of {MAX_WEIGHT}",
                    backend.weight
                ),
            ));
        }
    }
    if pool.backends.iter().all(|b| b.backup) {
        issues.push(Issue::new(
            format!("pools[{i}].backends"),
            format!(
                "every backend of pool {:?} has backup: true, so none is a primary for the backups to stand in for; remove backup: true from at least one",
                pool.name
            ),
        ));
    }
    if pool.backends.iter().all(|b| b.weight == 0) {
        issues.push(Issue::new(
            format!("pools[{i}].backends"),
            format!(
                "every backend of pool {:?} has weight 0, so it could serve no connection; give at least one a weight of 1 or more",
                pool.name
            ),
        ));
    }
}

/// Checks that a listener or pool name is not blank and not already used in
/// the same list; `names` maps names seen so far to their index.
fn check_name<'a>(
    name: &'a str,
    path: &str,
    list: &str,
    i: usize,
    names: &mut HashMap<&'a str, usize>,
    issues: &mut Vec<Issue>,
) {
    if name.trim().is_empty() {
        issues.push(Issue::new(path, "must not be empty"));
    } else if let Some(&j) = names.get(name) {
        issues.push(Issue::new(
            path,
            format!("{name:?} is already the name of {list}[{j}]; names must be unique"),
        ));
    } else {
        names.insert(name, i);
    }
}

/// Field names in the order they are documented, for [`sort`].
const FIELD_ORDER: &[&str] = &[
    "global",
    "workers",
    "buffer_size",
    "log_level",
    "access_log",
    "access_log_file",
    "access_log_format",
    "syslog",
    "target",
    "format",
    "facility",
    "tag",
    "logs",
    "retries",
    "zero_copy",
    "user",
    "group",
    "timeouts",
    "connect",
    "idle",
    "drain",
    "listeners",
    "pools",
    "name",
    "bind",
    "pool",
    "protocol",
    "udp",
    "idle_timeout",
    "responses",
    "requests",
    "key",
    "max_flows",
    "accept_proxy",
    "proxy_timeout",
    "routes",
    "inspect_timeout",
    "sni",
    "alpn",
    "source",
    "allow",
    "deny",
    "max_connections",
    "max_connections_per_ip",
    "rate_per_ip",
    "per_second",
    "burst",
    "policy",
    "send_proxy",
    "backends",
    "address",
    "weight",
    "health",
    "enabled",
    "interval",
    "timeout",
    "rise",
    "fall",
    "jitter",
    "send",
    "expect",
    "initial_state",
    "passive_failures",
    "when_all_down",
    "queue",
    "size",
    "admin",
    "token",
];

/// `pools[0].backends[2].address` → ranks of `pools`, 0, `backends`, 2,
/// `address`. Unknown names sort after known ones.
fn path_key(path: &str) -> Vec<usize> {
    let mut key = Vec::new();
    for segment in path.split(['.', '[']) {
        if let Some(index) = segment.strip_suffix(']') {
            key.push(index.parse().unwrap_or(usize::MAX));
        } else if !segment.is_empty() {
            let rank = FIELD_ORDER.iter().position(|f| *f == segment);
            key.push(rank.unwrap_or(FIELD_ORDER.len()));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::super::{BackendConfig, HealthConfig, PolicyKind};
    use super::*;
    use std::time::Duration;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn good() -> Config {
        Config {
            admin: None,
            global: Global::default(),
            timeouts: Timeouts::default(),
            listeners: vec![ListenerConfig::tcp(
                "web",
                "127.0.0.1:8080",
                vec![addr("127.0.0.1:8080")],
                "web",
            )],
            pools: vec![PoolConfig {
                name: "web".into(),
                policy: PolicyKind::RoundRobin,
                backends: vec![
                    BackendConfig::ip(addr("127.0.0.1:9001"), 1),
                    BackendConfig::ip(addr("127.0.0.1:9002"), 2),
                ],
                health: HealthConfig::default(),
                resolve_every: None,
                send_proxy: None,
                queue: Default::default(),
            }],
        }
    }

    fn errors_of(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.errors,
        }
    }

    #[test]
    fn a_built_config_with_defaults_is_valid() {
        assert_eq!(good().validate(), Ok(()));
    }

    #[test]
    fn unresolved_zero_workers_is_an_error() {
        let mut config = good();
        config.global.workers = 0;
        assert_eq!(
            errors_of(&config),
            ["global.workers: must be at least 1 (0, meaning one per core, is resolved when a file is loaded)"]
        );
    }

    #[test]
    fn too_many_workers_and_bad_buffer_size_are_both_reported() {
        let mut config = good();
        config.global.workers = 1025;
        config.global.buffer_size = 1023;
        let errors = errors_of(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("global.workers: 1025 is more than the maximum of 1024"));
        assert!(errors[1].starts_with("global.buffer_size: 1023 bytes is out of range"));
    }

    #[test]
    fn buffer_size_limits_are_inclusive() {
        let mut config = good();
        config.global.buffer_size = MIN_BUFFER_SIZE;
        assert_eq!(config.validate(), Ok(()));
        config.global.buffer_size = MAX_BUFFER_SIZE;
        assert_eq!(config.validate(), Ok(()));
        config.global.buffer_size = MAX_BUFFER_SIZE + 1;
        assert_eq!(errors_of(&config).len(), 1);
    }

    #[test]
    fn zero_connect_and_idle_are_errors_but_zero_drain_is_not() {
        let mut config = good();
        config.timeouts = Timeouts {
            connect: Duration::ZERO,
            idle: Duration::ZERO,
            drain: Duration::ZERO,
        };
        let errors = errors_of(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("timeouts.connect: must be more than zero"));
        assert!(errors[1].starts_with("timeouts.idle: must be more than zero"));
    }

    #[test]
    fn absurdly_long_timeout_is_an_error() {
        let mut config = good();
        config.timeouts.drain = MAX_TIMEOUT + Duration::from_secs(1);
        assert_eq!(
            errors_of(&config),
            ["timeouts.drain: 8760h1s is longer than the maximum of 8760h (365 days)"]
        );
    }

    #[test]
    fn listener_pointing_at_a_missing_pool_lists_the_defined_pools() {
        let mut config = good();
        config.listeners[0].pool = "api".into();
        assert_eq!(
            errors_of(&config),
            ["listeners[0].pool: \"api\" is not a pool defined in pools (defined: web)"]
        );
    }

    #[test]
    fn listener_port_zero_is_an_error() {
        let mut config = good();
        config.listeners[0].addresses = vec![addr("127.0.0.1:0")];
        let errors = errors_of(&config);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("listeners[0].bind: \"127.0.0.1:8080\" has port 0"));
    }

    #[test]
    fn two_listeners_on_one_address_is_an_error() {
        let mut config = good();
        let mut second = config.listeners[0].clone();
        second.name = "web2".into();
        config.listeners.push(second);
        assert_eq!(
            errors_of(&config),
            ["listeners[1].bind: 127.0.0.1:8080 is already bound by listeners[0] (\"web\"); each address can have only one tcp listener"]
        );
    }

    #[test]
    fn backend_port_zero_and_unspecified_ip_are_errors() {
        let mut config = good();
        config.pools[0].backends[0].addresses = vec![addr("127.0.0.1:0")];
        config.pools[0].backends[1].addresses = vec![addr("0.0.0.0:80")];
        let errors = errors_of(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("pools[0].backends[0].address: 127.0.0.1:0 has port 0"));
        assert!(errors[1].starts_with(
            "pools[0].backends[1].address: 0.0.0.0:80 is not an address one can connect to"
        ));
    }

    #[test]
    fn overweight_backend_is_an_error() {
        let mut config = good();
        config.pools[0].backends[1].weight = MAX_WEIGHT + 1;
        assert_eq!(
            errors_of(&config),
            ["pools[0].backends[1].weight: 10001 is more than the maximum of 10000"]
        );
    }

    #[test]
    fn blank_names_are_errors() {
        let mut config = good();
        config.listeners[0].name = " ".into();
        config.pools[0].name = String::new();
        config.listeners[0].pool = String::new();
        assert_eq!(
            errors_of(&config),
            [
                "listeners[0].name: must not be empty",
                "pools[0].name: must not be empty"
            ]
        );
    }

    #[test]
    fn issues_sort_in_file_order() {
        let mut issues = vec![
            Issue::new("pools[1].backends[0].address", "e"),
            Issue::new("pools[0].name", "d"),
            Issue::new("listeners[10].pool", "c2"),
            Issue::new("listeners[2].bind", "c"),
            Issue::new("timeouts.connect", "b"),
            Issue::new("global.workers", "a"),
            Issue::new("pools[0].backends", "d2"),
        ];
        sort(&mut issues);
        let order: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "c2", "d", "d2", "e"]);
    }
}
