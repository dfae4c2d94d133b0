//! The config file format (RON) and its conversion into a [`Config`].
//!
//! This file owns the serde schema of the file (the `Raw*` structs: defaults,
//! unknown fields rejected everywhere), the reporting of syntax and type
//! errors as `FILE:LINE:COL: PATH: message`, and the conversion of the raw
//! values into a [`Config`]. Addresses, durations, log levels and policies
//! are read as strings and converted here (with the helpers in `mod.rs` the
//! CLI shares; a pool's `health` section by `health.rs`), so that one run
//! reports every malformed value with its path;
//! `validate.rs` then checks the converted config.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_path_to_error::Segment;

#[path = "dump.rs"]
mod dump;

use super::duration::{format_duration, parse_duration};
use super::health::{self, RawHealth};
use super::limits::{self, RawListenerLimits, RawQueue, RawRate};
use super::logs::{self, RawSyslog};
use super::proxy;
use super::routes::{self, RawRoute};
use super::udp::{self, RawUdp};
use super::validate::{self, Issue};
use super::{
    available_workers, parse_backend_address, parse_log_level, resolve_bind, AdminConfig,
    BackendConfig, Config, ConfigError, Global, ListenerConfig, PolicyKind, PoolConfig, Resolver,
    Timeouts, DEFAULT_POOL,
};

#[derive(Deserialize, Serialize, Default)]
#[serde(rename = "Config", deny_unknown_fields, default)]
struct RawConfig {
    global: RawGlobal,
    timeouts: RawTimeouts,
    listeners: Vec<RawListener>,
    pools: Vec<RawPool>,
    #[serde(skip_serializing_if = "RawAdmin::is_off")]
    admin: RawAdmin,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename = "Admin", deny_unknown_fields, default)]
struct RawAdmin {
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    bind: Option<String>,
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    token: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename = "Global", deny_unknown_fields, default)]
struct RawGlobal {
    workers: usize,
    buffer_size: usize,
    log_level: String,
    access_log: bool,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    access_log_file: Option<String>,
    access_log_format: String,
    #[serde(default, deserialize_with = "logs::present_section")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    syslog: Option<RawSyslog>,
    retries: u32,
    zero_copy: String,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    user: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    group: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename = "Timeouts", deny_unknown_fields, default)]
struct RawTimeouts {
    connect: String,
    idle: String,
    drain: String,
}

#[derive(Deserialize, Serialize)]
#[serde(rename = "Listener", deny_unknown_fields)]
struct RawListener {
    /// `None` when omitted: the name is then the `bind` text.
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    name: Option<String>,
    bind: String,
    #[serde(default = "default_pool")]
    pool: String,
    #[serde(default = "default_protocol")]
    protocol: String,
    /// `None` when omitted, so that one given to a TCP listener is caught.
    #[serde(default, deserialize_with = "udp::present_section")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    udp: Option<RawUdp>,
    #[serde(default)]
    accept_proxy: bool,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    proxy_timeout: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default, deserialize_with = "limits::present_some")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "limits::present_some")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    max_connections_per_ip: Option<u32>,
    #[serde(default, deserialize_with = "limits::present_some")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    rate_per_ip: Option<RawRate>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    inspect_timeout: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename = "Pool", deny_unknown_fields)]
struct RawPool {
    #[serde(default = "default_pool")]
    name: String,
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    resolve_every: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    send_proxy: Option<String>,
    #[serde(default)]
    queue: RawQueue,
}

#[derive(Deserialize, Serialize)]
#[serde(rename = "Backend", deny_unknown_fields)]
struct RawBackend {
    address: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default, deserialize_with = "limits::present_some")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    max_connections: Option<usize>,
    #[serde(default)]
    backup: bool,
}

impl Default for RawGlobal {
    fn default() -> Self {
        let defaults = Global::default();
        RawGlobal {
            workers: 0,
            buffer_size: defaults.buffer_size,
            log_level: defaults.log_level.as_str().to_ascii_lowercase(),
            access_log: defaults.access_log,
            access_log_file: None,
            access_log_format: defaults.access_log_format.name().to_string(),
            syslog: None,
            retries: defaults.retries,
            zero_copy: defaults.zero_copy.as_str().to_string(),
            user: None,
            group: None,
        }
    }
}

impl Default for RawTimeouts {
    fn default() -> Self {
        let defaults = Timeouts::default();
        RawTimeouts {
            connect: format_duration(defaults.connect),
            idle: format_duration(defaults.idle),
            drain: format_duration(defaults.drain),
        }
    }
}

fn default_pool() -> String {
    DEFAULT_POOL.to_string()
}

fn default_protocol() -> String {
    super::Protocol::default().name().to_string()
}

fn default_policy() -> String {
    PolicyKind::default().name().to_string()
}

fn default_weight() -> u32 {
    1
}

/// Writes `Some(value)` as the value alone, as `present` and
/// `present_some` read it (fields that use it skip `None`).
pub(super) fn plain<T: Serialize, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(serializer),
        None => serializer.serialize_none(),
    }
}

/// Reads a plain string into `Some`, so that `None` means "not written"
/// without making users write `Some("...")`.
pub(super) fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// Parses, converts and validates `source`; every message starts with
/// `origin`.
pub(super) fn parse(
    source: &str,
    origin: &str,
    resolve: Resolver<'_>,
) -> Result<Config, ConfigError> {
    let raw = deserialize(source).map_err(|e| ConfigError {
        errors: vec![format!("{origin}:{e}")],
    })?;
    let mut issues = Vec::new();
    let config = convert(raw, resolve, &mut issues);
    // A value that failed to convert holds a placeholder; drop what the
    // semantic checks say about those fields, it would only be noise.
    let failed: Vec<String> = issues.iter().map(|i| i.path.clone()).collect();
    issues.extend(
        validate::check(&config)
            .into_iter()
            .filter(|issue| !failed.iter().any(|f| is_within(&issue.path, f))),
    );
    if issues.is_empty() {
        return Ok(config);
    }
    validate::sort(&mut issues);
    Err(ConfigError {
        errors: issues.iter().map(|i| format!("{origin}: {i}")).collect(),
    })
}

/// True if `path` is `parent` or a field or element inside it.
fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Deserializes the RON text; an error reads `LINE:COL: PATH: message`.
fn deserialize(source: &str) -> Result<RawConfig, String> {
    if source.trim().is_empty() {
        return Err(
            "1:1: the config file is empty; a config looks like ( listeners: [...], pools: [...] )"
                .to_string(),
        );
    }
    let mut de = ron::de::Deserializer::from_str(source)
        .map_err(|e| located(source, e.position, "", &e.code))?;
    let raw: RawConfig = match serde_path_to_error::deserialize(&mut de) {
        Ok(raw) => raw,
        Err(e) => {
            let path = format_path(e.path());
            let spanned = de.span_error(e.into_inner());
            return Err(located(source, spanned.position, &path, &spanned.code));
        }
    };
    if let Err(e) = de.end() {
        let spanned = de.span_error(e);
        return Err(located(source, spanned.position, "", &spanned.code));
    }
    Ok(raw)
}

/// `LINE:COL: PATH: message`, with COL counted in characters. For a bad
/// field name ron stops after the name; point at its start instead.
fn located(source: &str, position: ron::error::Position, path: &str, error: &ron::Error) -> String {
    let line = source
        .lines()
        .nth(position.line.saturating_sub(1))
        .unwrap_or("");
    let mut byte_col = position.col.saturating_sub(1).min(line.len());
    while !line.is_char_boundary(byte_col) {
        byte_col -= 1;
    }
    if let ron::Error::NoSuchStructField { found, .. } = error {
        if line[..byte_col].ends_with(found.as_str()) {
            byte_col -= found.len();
        }
    }
    let col = line[..byte_col].chars().count() + 1;
    let message = describe(error, path);
    if path.is_empty() {
        format!("{}:{col}: {message}", position.line)
    } else {
        format!("{}:{col}: {path}: {message}", position.line)
    }
}

/// `pools[0].backends[1]` from serde_path_to_error's segments.
fn format_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// A user-facing message for a RON syntax or type error at `path`.
fn describe(error: &ron::Error, path: &str) -> String {
    use ron::Error as E;
    match error {
        E::NoSuchStructField {
            expected, found, ..
        } => {
            let hint = closest(found, expected)
                .map(|name| format!("did you mean {name:?}? "))
                .unwrap_or_default();
            format!(
                "unknown field {found:?} ({hint}expected one of: {})",
                expected.join(", ")
            )
        }
        E::MissingStructField { field, .. } => format!("missing required field {field:?}"),
        E::DuplicateStructField { field, .. } => {
            format!("field {field:?} is given more than once")
        }
        E::InvalidValueForType { expected, found } => format!("expected {expected}, found {found}"),
        E::ExpectedString => {
            let field = path.rsplit('.').next().unwrap_or("");
            let example = match field {
                "connect" | "idle" | "drain" => "\"3s\"",
                "interval" | "timeout" => "\"2s\"",
                "send" => "\"PING\\r\\n\"",
                "expect" => "\"+PONG\"",
                "initial_state" => "\"up\"",
                "when_all_down" => "\"fail-fast\"",
                "log_level" => "\"info\"",
                "access_log_format" => "\"json\"",
                "target" => "\"/dev/log\"",
                "format" => "\"rfc5424\"",
                "facility" => "\"daemon\"",
                "tag" => "\"balanciaga4\"",
                "logs" => "\"both\"",
                "policy" => "\"round-robin\"",
                "protocol" => "\"udp\"",
                "idle_timeout" => "\"30s\"",
                "key" => "\"ip-port\"",
                "proxy_timeout" => "\"3s\"",
                "send_proxy" => "\"v2\"",
                "zero_copy" => "\"auto\"",
                "user" => "\"nobody\"",
                "group" => "\"nogroup\"",
                "name" | "pool" => "\"web\"",
                _ => "\"127.0.0.1:8080\"",
            };
            format!("expected a string in double quotes, e.g. {example}")
        }
        E::ExpectedInteger => "expected a whole number (0 or more), e.g. 4".into(),
        E::ExpectedBoolean => "expected true or false".into(),
        E::ExpectedFloat => "expected a number, e.g. 0.1".into(),
        E::IntegerOutOfBounds => "this number is too large for the field".into(),
        E::Eof => "unexpected end of file (is a bracket or parenthesis not closed?)".into(),
        E::TrailingCharacters => "unexpected text after the end of the config".into(),
        E::ExpectedComma => "expected a comma (`,`) between two fields or list items".into(),
        E::ExpectedIdentifier => {
            "expected a field name followed by `:` (e.g. `address: ...`)".into()
        }
        E::ExpectedStructLike | E::ExpectedNamedStructLike(_) => {
            "expected `(` opening a section like (name: ..., ...)".into()
        }
        E::ExpectedArray => "expected `[` opening a list".into(),
        other => {
            // ron's own wording, made to start in lower case like ours.
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

/// The expected name closest to a misspelt one, if it is close enough.
fn closest<'a>(found: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|name| (edit_distance(found, name), *name))
        .filter(|(distance, name)| *distance <= 2.max(name.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Converts the raw file values, recording each malformed one in `issues`
/// and putting a placeholder in its place.
fn convert(raw: RawConfig, resolve: Resolver<'_>, issues: &mut Vec<Issue>) -> Config {
    let mut global = Global::default();
    global.workers = match raw.global.workers {
        0 => available_workers(),
        n => n,
    };
    global.buffer_size = raw.global.buffer_size;
    global.access_log = raw.global.access_log;
    global.access_log_file = raw.global.access_log_file.map(Into::into);
    global.retries = raw.global.retries;
    global.user = raw.global.user;
    global.group = raw.global.group;
    match raw.global.zero_copy.parse() {
        Ok(mode) => global.zero_copy = mode,
        Err(e) => issues.push(Issue::new("global.zero_copy", e)),
    }
    match parse_log_level(&raw.global.log_level) {
        Ok(level) => global.log_level = level,
        Err(e) => issues.push(Issue::new("global.log_level", e)),
    }
    match raw.global.access_log_format.parse() {
        Ok(format) => global.access_log_format = format,
        Err(e) => issues.push(Issue::new("global.access_log_format", e)),
    }
    if let Some(syslog) = &raw.global.syslog {
        match logs::convert(syslog, resolve) {
            Ok(syslog) => global.syslog = Some(syslog),
            Err((field, e)) => issues.push(Issue::new(format!("global.syslog.{field}"), e)),
        }
    }

    let mut timeouts = Timeouts::default();
    for (name, text, slot) in [
        ("connect", &raw.timeouts.connect, &mut timeouts.connect),
        ("idle", &raw.timeouts.idle, &mut timeouts.idle),
        ("drain", &raw.timeouts.drain, &mut timeouts.drain),
    ] {
        match parse_duration(text) {
            Ok(d) => *slot = d,
            Err(e) => issues.push(Issue::new(
                format!("timeouts.{name}"),
                format!("{text:?} is not a duration (examples: 500ms, 3s, 1m): {e}"),
            )),
        }
    }

    let listeners = raw
        .listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let addresses = resolve_bind(&listener.bind).unwrap_or_else(|e| {
                issues.push(Issue::new(format!("listeners[{i}].bind"), e));
                Vec::new()
            });
            let (protocol, udp) = udp::convert(i, &listener.protocol, listener.udp, issues);
            let accept_proxy =
                proxy::convert_accept(i, listener.accept_proxy, listener.proxy_timeout, issues);
            let raw_limits = RawListenerLimits {
                allow: listener.allow,
                deny: listener.deny,
                max_connections: listener.max_connections,
                max_connections_per_ip: listener.max_connections_per_ip,
                rate_per_ip: listener.rate_per_ip,
            };
            ListenerConfig {
                routing: routes::convert(i, listener.routes, listener.inspect_timeout, issues),
                limits: limits::convert_listener(i, raw_limits, issues),
                name: listener.name.unwrap_or_else(|| listener.bind.clone()),
                bind: listener.bind,
                addresses,
                pool: listener.pool,
                protocol,
                udp,
                accept_proxy,
            }
        })
        .collect();

    let pools = raw
        .pools
        .into_iter()
        .enumerate()
        .map(|(i, pool)| convert_pool(i, pool, resolve, issues))
        .collect();

    Config {
        global,
        timeouts,
        listeners,
        pools,
        admin: convert_admin(raw.admin, issues),
    }
}

fn convert_admin(raw: RawAdmin, issues: &mut Vec<Issue>) -> Option<AdminConfig> {
    let Some(bind) = raw.bind else {
        if raw.token.is_some() {
            issues.push(Issue::new(
                "admin.bind",
                "a token is set but no bind address; add e.g. bind: \"127.0.0.1:9090\"",
            ));
        }
        return None;
    };
    let address = match resolve_bind(&bind) {
        Ok(addresses) => addresses[0],
        Err(e) => {
            issues.push(Issue::new("admin.bind", e));
            return None;
        }
    };
    if address.port() == 0 {
        issues.push(Issue::new(
            "admin.bind",
            format!("{bind:?} has port 0; give a fixed port, e.g. 9090"),
        ));
    }
    if raw.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        issues.push(Issue::new(
            "admin.token",
            "is blank; remove it or give a secret",
        ));
    }
    Some(AdminConfig {
        bind: address,
        token: raw.token,
    })
}

fn convert_pool(
    i: usize,
    pool: RawPool,
    resolve: Resolver<'_>,
    issues: &mut Vec<Issue>,
) -> PoolConfig {
    let policy = pool.policy.parse().unwrap_or_else(|e| {
        issues.push(Issue::new(format!("pools[{i}].policy"), e));
        PolicyKind::default()
    });
    let backends = pool
        .backends
        .into_iter()
        .enumerate()
        .map(|(k, backend)| {
            let (addresses, host) = parse_backend_address(&backend.address, resolve)
                .unwrap_or_else(|e| {
                    issues.push(Issue::new(format!("pools[{i}].backends[{k}].address"), e));
                    (vec![SocketAddr::from(([0, 0, 0, 0], 0))], None)
                });
            BackendConfig {
                addresses,
                host,
                weight: backend.weight,
                max_connections: backend.max_connections,
                backup: backend.backup,
            }
        })
        .collect();
    // At least a second (a look-up every resolver turn would be a
    // flood), at most a day (and so never past what `Instant` can add).
    let resolve_every = pool.resolve_every.and_then(|text| {
        let bounds = std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86_400);
        parse_duration(&text)
            .map_err(|e| format!("{text:?} is not a duration (examples: 10s, 1m): {e}"))
            .and_then(|d| match bounds.contains(&d) {
                true => Ok(d),
                false => Err(format!("{text:?} is out of range: from 1s to 24h")),
            })
            .map_err(|e| issues.push(Issue::new(format!("pools[{i}].resolve_every"), e)))
            .ok()
    });
    PoolConfig {
        name: pool.name,
        policy,
        backends,
        health: health::convert(i, pool.health, issues),
        resolve_every,
        send_proxy: proxy::convert_send(i, pool.send_proxy, issues),
        queue: limits::convert_queue(i, pool.queue, issues),
    }
}
