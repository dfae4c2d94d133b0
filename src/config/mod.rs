//! Configuration: the public, validated form of a Balanciaga4 config.
//!
//! This file owns the types the rest of the crate codes against ([`Config`]
//! and its parts, [`PolicyKind`], [`ConfigError`]), their defaults, and the
//! entry points [`Config::load`], [`Config::parse`] and [`Config::validate`],
//! and the text-to-value helpers the CLI quick mode shares with config files
//! ([`resolve_bind`], [`parse_backend_address`], [`parse_log_level`]).
//! The file format and its conversion live in `raw.rs`, the semantic checks
//! in `validate.rs`, human durations in `duration.rs`, the per-pool `health`
//! section (types, schema and checks) in `health.rs`, the PROXY protocol
//! settings in `proxy.rs`, the access log's format and syslog in `logs.rs`. Every field is
//! documented for users in docs/CONFIG.md and config/balanciaga4.ron.
//!
//! Error messages name the field with a path such as
//! `pools[0].backends[2].address`; [`ConfigError`] collects every problem
//! found, not only the first.

pub mod duration;
mod health;
mod limits;
mod logs;
#[cfg(test)]
mod props;
mod proxy;
mod raw;
mod routes;
#[cfg(test)]
mod tests;
mod udp;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;

pub use health::{
    AllDown, HealthConfig, InitialState, MAX_HEALTH_INTERVAL, MAX_JITTER, MAX_PROBE_BYTES,
    MAX_RISE_FALL,
};
pub use limits::{ListenerLimits, QueueConfig, Rate, MAX_QUEUE};
pub use proxy::DEFAULT_PROXY_TIMEOUT;
pub use routes::{RouteConfig, Routing, DEFAULT_INSPECT_TIMEOUT};
pub use udp::{FlowKey, Protocol, UdpConfig};

/// Default size in bytes of each pooled I/O buffer.
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;
/// Smallest accepted `global.buffer_size`.
pub const MIN_BUFFER_SIZE: usize = 1024;
/// Largest accepted `global.buffer_size` (16 MiB).
pub const MAX_BUFFER_SIZE: usize = 16 * 1024 * 1024;
/// Largest accepted `global.workers`.
pub const MAX_WORKERS: usize = 1024;
/// Largest accepted backend weight; keeps sums of weights far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;
/// Longest accepted timeout (365 days): longer ones are surely typos, and
/// `Instant + Duration` must not overflow in the event loops.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Pool name used when a pool has no `name`, and the pool a listener without
/// a `pool` forwards to.
pub const DEFAULT_POOL: &str = "default";

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Process-wide settings; some need a restart to change.
    pub global: Global,
    /// Connect, idle and drain timeouts of TCP sessions.
    pub timeouts: Timeouts,
    /// At least one; names unique, each forwarding to a pool of `pools`.
    pub listeners: Vec<ListenerConfig>,
    /// At least one; names unique, each with at least one backend.
    pub pools: Vec<PoolConfig>,
    /// The admin listener (metrics, status page, runtime actions); off
    /// unless set.
    pub admin: Option<AdminConfig>,
}

/// The `admin` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where the status page, `/metrics` and actions are served: the first
    /// address `admin.bind` resolves to. Changing it needs a restart.
    pub bind: SocketAddr,
    /// When set, runtime actions need `Authorization: Bearer TOKEN` and are
    /// allowed from any client; without it, only from loopback.
    pub token: Option<String>,
}

pub use logs::{
    parse_syslog_flag, AccessLogFormat, SyslogConfig, SyslogFormat, SyslogLogs, SyslogTarget,
};

/// Process-wide settings (the `global` section).
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Number of worker event loops, always at least 1: a `0` in a file is
    /// resolved to [`available_workers`] when loading.
    pub workers: usize,
    /// Bytes per pooled buffer, [`MIN_BUFFER_SIZE`]..=[`MAX_BUFFER_SIZE`].
    pub buffer_size: usize,
    /// Most verbose level logged to stderr; `off` silences the log
    /// (access lines written to a file are not affected). Needs a restart.
    pub log_level: LevelFilter,
    /// Log one line per closed connection at info level.
    pub access_log: bool,
    /// Write access lines to this file (appending) instead of stderr.
    pub access_log_file: Option<PathBuf>,
    /// How access lines are written; a reload applies a change.
    pub access_log_format: AccessLogFormat,
    /// A copy of the logs sent to syslog; `None`: no syslog. Needs a
    /// restart.
    pub syslog: Option<SyslogConfig>,
    /// Connect attempts on other backends after the first one fails.
    pub retries: u32,
    /// When TCP sessions relay through kernel pipes instead of buffers.
    pub zero_copy: ZeroCopy,
    /// Run as this user (a name or a numeric uid) once the listeners are
    /// bound; `None`: keep the user the process started as.
    pub user: Option<String>,
    /// Run as this group (a name or a numeric gid); `None`: the user's
    /// primary group. Needs `user`.
    pub group: Option<String>,
}

/// When a TCP flow moves its bytes with splice(2) (see `splice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// A flow starts on a buffer and switches to a pipe once one read fills
    /// the whole buffer, the sign of a bulk transfer (HAProxy's
    /// splice-auto): small exchanges keep the cheaper buffer path.
    #[default]
    Auto,
    /// Every flow uses a pipe while one is free.
    On,
    /// Buffers only.
    Off,
}

impl ZeroCopy {
    /// The name used in config files (`auto`, `on`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            ZeroCopy::Auto => "auto",
            ZeroCopy::On => "on",
            ZeroCopy::Off => "off",
        }
    }
}

impl FromStr for ZeroCopy {
    type Err = String;

    fn from_str(text: &str) -> Result<ZeroCopy, String> {
        match text {
            "auto" => Ok(ZeroCopy::Auto),
            "on" => Ok(ZeroCopy::On),
            "off" => Ok(ZeroCopy::Off),
            _ => Err(format!(
                "{text:?} is not a zero-copy mode (expected auto, on or off)"
            )),
        }
    }
}

/// Connection timeouts (the `timeouts` section).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Longest wait for a backend connection to be established.
    pub connect: Duration,
    /// A connection with no traffic in either direction for this long is closed.
    pub idle: Duration,
    /// On graceful shutdown, how long open connections may take to finish.
    pub drain: Duration,
}

/// One listening address and the pool it forwards to.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique among listeners and not blank; the `bind` text when not
    /// given. Shown in logs, the access log and metrics labels, and how a
    /// reload matches a listener to its running predecessor.
    pub name: String,
    /// The address as written, for messages (e.g. `"localhost:8080"`).
    pub bind: String,
    /// Every address `bind` resolves to, without duplicates; an IP literal
    /// such as `"[::]:80"` is exactly one address.
    pub addresses: Vec<SocketAddr>,
    /// Name of the pool that serves it (routes aside); [`DEFAULT_POOL`]
    /// when not given. Validation ensures it is defined.
    pub pool: String,
    /// TCP connections or UDP datagrams.
    pub protocol: Protocol,
    /// How a UDP listener keeps its flows (defaults for a TCP listener,
    /// which ignores them).
    pub udp: UdpConfig,
    /// `accept_proxy`: clients must start with a PROXY protocol header,
    /// within this long (`proxy_timeout`); `None`: no header expected.
    pub accept_proxy: Option<Duration>,
    /// Who may connect and how much (`allow`, `deny`, `max_connections`...).
    pub limits: ListenerLimits,
    /// Where connections go by what they say (`routes`), else to `pool`.
    pub routing: Routing,
}

impl ListenerConfig {
    /// A TCP listener on `addresses` forwarding to `pool`.
    pub fn tcp(name: &str, bind: &str, addresses: Vec<SocketAddr>, pool: &str) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            bind: bind.into(),
            addresses,
            pool: pool.into(),
            protocol: Protocol::Tcp,
            udp: UdpConfig::default(),
            accept_proxy: None,
            limits: ListenerLimits::default(),
            routing: Routing::default(),
        }
    }
}

/// A named group of backends and the policy that picks among them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Unique among pools and not blank; [`DEFAULT_POOL`] when not given.
    /// What listeners and routes refer to, and the `pool` label in logs
    /// and metrics.
    pub name: String,
    /// How a backend is picked for each new session or flow.
    pub policy: PolicyKind,
    /// At least one; an address appears at most once per pool.
    pub backends: Vec<BackendConfig>,
    /// How the backends are health-checked (the pool's `health` section).
    pub health: HealthConfig,
    /// How often backends given by host name are looked up again, besides
    /// at every reload; `None`: only at load and reload.
    pub resolve_every: Option<Duration>,
    /// Write a PROXY protocol header of this version to each backend
    /// connection (and UDP datagram) before the client's bytes.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// What new sessions do when every backend is at its `max_connections`.
    pub queue: QueueConfig,
}

/// One backend entry: an address, or a host name standing for every
/// address it resolves to (each a backend of its own, with this weight).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Resolved addresses, without duplicates; exactly one for an IP.
    pub addresses: Vec<SocketAddr>,
    /// The `host:port` written in the file, when it is not an IP address;
    /// re-resolved on reload and every `resolve_every`.
    pub host: Option<String>,
    /// Relative share of new connections; 0 takes the backend out of rotation.
    pub weight: u32,
    /// Sessions (and UDP flows) it takes at once; `None`: no limit.
    pub max_connections: Option<usize>,
    /// Takes new connections only while no other (primary) backend of the
    /// pool can: HAProxy's `backup`.
    pub backup: bool,
}

impl BackendConfig {
    /// A backend given by its IP address.
    pub fn ip(address: SocketAddr, weight: u32) -> BackendConfig {
        BackendConfig {
            addresses: vec![address],
            host: None,
            weight,
            max_connections: None,
            backup: false,
        }
    }

    /// How the file names it: the host name, or the address.
    pub fn label(&self) -> String {
        match (&self.host, self.addresses.as_slice()) {
            (Some(host), _) => host.clone(),
            (None, [address]) => address.to_string(),
            (None, _) => format!("{:?}", self.addresses),
        }
    }
}

/// Resolves a backend's `host:port` to its addresses; an error is a full
/// message. Reloads pass one that falls back to the last good answer.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Result<Vec<SocketAddr>, String>;

/// The system resolver (getaddrinfo), as used at start-up.
pub fn resolve_host(host: &str) -> Result<Vec<SocketAddr>, String> {
    resolve_bind(host)
}

/// Load-balancing policy of a pool, written in kebab-case (`"round-robin"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyKind {
    /// Each new connection goes to the next backend in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's): weights 5, 1, 1 give
    /// a a b a c a a.
    WeightedRoundRobin,
    /// Fewest active sessions relative to weight; ties in turn.
    LeastConnections,
    /// The less loaded (relative to weight) of two random backends.
    PowerOfTwo,
    /// Weighted random.
    Random,
    /// Sticky by client IP through consistent hashing (Maglev).
    SourceHash,
}

impl PolicyKind {
    /// Every policy, in the order they are listed in messages and docs.
    pub const ALL: &'static [PolicyKind] = &[
        PolicyKind::RoundRobin,
        PolicyKind::WeightedRoundRobin,
        PolicyKind::LeastConnections,
        PolicyKind::PowerOfTwo,
        PolicyKind::Random,
        PolicyKind::SourceHash,
    ];

    /// The name used in config files and on `--policy`.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::WeightedRoundRobin => "weighted-round-robin",
            PolicyKind::LeastConnections => "least-connections",
            PolicyKind::PowerOfTwo => "power-of-two",
            PolicyKind::Random => "random",
            PolicyKind::SourceHash => "source-hash",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(policy) = PolicyKind::ALL.iter().find(|p| p.name() == s) {
            return Ok(*policy);
        }
        let names: Vec<&str> = PolicyKind::ALL.iter().map(|p| p.name()).collect();
        Err(format!(
            "{s:?} is not a load-balancing policy (expected one of: {})",
            names.join(", ")
        ))
    }
}

/// Every problem found in a configuration, one message per entry.
///
/// From a file each message is `FILE:LINE:COL: PATH: message` (syntax and
/// type errors) or `FILE: PATH: message` (semantic errors); from
/// [`Config::validate`] it is `PATH: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Never empty, in the order found; shown one per line.
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl Default for Global {
    fn default() -> Self {
        Global {
            workers: available_workers(),
            buffer_size: DEFAULT_BUFFER_SIZE,
            log_level: LevelFilter::Info,
            access_log: true,
            access_log_file: None,
            access_log_format: AccessLogFormat::KeyValue,
            syslog: None,
            retries: 3,
            zero_copy: ZeroCopy::Auto,
            user: None,
            group: None,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            idle: Duration::from_secs(5 * 60),
            drain: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Reads, parses and validates the config file at `path`. Messages name
    /// the file as `path` was given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &resolve_host)
    }

    /// [`Config::load`] with backend host names looked up by `resolve`.
    pub fn load_with(path: &Path, resolve: Resolver<'_>) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            errors: vec![format!("{origin}: cannot read the config file: {e}")],
        })?;
        raw::parse(&source, &origin, resolve)
    }

    /// Parses and validates RON text; `origin` (a file name) starts every
    /// message.
    pub fn parse(source: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_with(source, origin, &resolve_host)
    }

    /// [`Config::parse`] with backend host names looked up by `resolve`.
    pub fn parse_with(
        source: &str,
        origin: &str,
        resolve: Resolver<'_>,
    ) -> Result<Config, ConfigError> {
        raw::parse(source, origin, resolve)
    }

    /// Checks the semantic rules on a config built in code (the CLI quick
    /// mode); [`Config::parse`] applies the same rules with the same
    /// messages. `global.workers` must already be resolved (at least 1).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let issues = validate::check(self);
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                errors: issues.iter().map(ToString::to_string).collect(),
            })
        }
    }

    /// The pool called `name`, if any.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The transport a pool's backends are reached over: UDP when every
    /// listener that uses it is a UDP listener (and one does), TCP
    /// otherwise. Health checks use it.
    pub fn pool_protocol(&self, pool: &str) -> Protocol {
        let mut users = self
            .listeners
            .iter()
            .filter(|l| l.pool == pool || l.routing.routes.iter().any(|r| r.pool == pool))
            .peekable();
        if users.peek().is_some() && users.all(|l| l.protocol == Protocol::Udp) {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    }
}

/// Worker count used for `workers: 0`: one per core (1 if unknown, at most
/// [`MAX_WORKERS`]).
pub fn available_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// Resolves a listener `bind` (`IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`) to
/// every address it names, in resolver order without duplicates. An IP
/// literal needs no lookup and gives exactly one address; a host name is
/// looked up with the system resolver. Port 0 is accepted here (and refused
/// by validation). The error is a full message quoting `bind`.
pub fn resolve_bind(bind: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(address) = SocketAddr::from_str(bind) {
        return Ok(vec![address]);
    }
    let example = "expected HOST:PORT, e.g. 127.0.0.1:8080, [::]:8080 or localhost:8080";
    if bind.trim().is_empty() {
        return Err(format!("{bind:?} is empty ({example})"));
    }
    let no_port = format!("{bind:?} has no port ({example})");
    if IpAddr::from_str(bind).is_ok() || bind.ends_with(']') {
        return Err(no_port);
    }
    let Some((host, port)) = bind.rsplit_once(':') else {
        return Err(no_port);
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "{bind:?} is not a valid address: write IPv6 addresses in brackets, e.g. [::1]:8080"
        ));
    }
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "{bind:?} does not end in a port number from 0 to 65535 ({example})"
        ));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{bind:?} has no host ({example})"));
    }
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{bind:?} does not resolve: {e}"))?;
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for address in resolved {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Err(format!("{bind:?} does not resolve to any address"));
    }
    Ok(addresses)
}

/// Parses a backend address: `IP:PORT` (`[IPv6]:PORT`), or `HOST:PORT`,
/// looked up with `resolve`. Returns the addresses and, for a host name,
/// the name. The error is a full message quoting the input.
pub fn parse_backend_address(
    text: &str,
    resolve: Resolver<'_>,
) -> Result<(Vec<SocketAddr>, Option<String>), String> {
    if let Ok(address) = SocketAddr::from_str(text) {
        return Ok((vec![address], None));
    }
    if IpAddr::from_str(text).is_ok() {
        return Err(format!(
            "{text:?} has no port (expected IP:PORT, e.g. 10.0.0.1:80; IPv6 in brackets, e.g. [::1]:80)"
        ));
    }
    let is_host_port = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    });
    if !is_host_port {
        return Err(format!(
            "{text:?} is not a socket address (expected IP:PORT or HOST:PORT, e.g. 10.0.0.1:80 or db.internal:5432)"
        ));
    }
    Ok((resolve(text)?, Some(text.to_string())))
}

/// Parses a log level name: off, error, warn, info, debug or trace (any
/// case). The error is a full message quoting the input.
pub fn parse_log_level(text: &str) -> Result<LevelFilter, String> {
    LevelFilter::from_str(text).map_err(|_| {
        format!("{text:?} is not a log level (expected off, error, warn, info, debug or trace)")
    })
}
