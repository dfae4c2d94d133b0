//! Access control and connection limits: a listener's `allow`, `deny`,
//! `max_connections`, `max_connections_per_ip` and `rate_per_ip`, a
//! backend's `max_connections` and a pool's `queue` section.
//!
//! This file owns their resolved types and defaults, the file schema of the
//! two sub-sections ([`RawRate`], [`RawQueue`]) and the conversion and
//! semantic checks of every field above. Documented for users in
//! docs/CONFIG.md ("Access control and limits").

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::raw::plain;

use super::duration::{format_duration, parse_duration};
use super::validate::Issue;
use super::{PoolConfig, Protocol, MAX_TIMEOUT};
use crate::acl::{Acl, Cidr};

/// Largest accepted `queue.size`: more sessions than that waiting is a
/// flood, not a queue.
pub const MAX_QUEUE: usize = 1_000_000;

/// What a listener admits (its `allow`, `deny` and limit fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerLimits {
    /// The `allow` and `deny` lists; empty (everyone admitted) by default.
    pub acl: Acl,
    /// Connections the listener holds at most, over all workers.
    pub max_connections: Option<usize>,
    /// Connections one client address holds at most, over all workers.
    pub max_connections_per_ip: Option<u32>,
    /// New connections a second from one client address.
    pub rate_per_ip: Option<Rate>,
}

impl ListenerLimits {
    /// Anything to check at accept at all.
    pub fn is_empty(&self) -> bool {
        *self == ListenerLimits::default()
    }

    /// Needs the shared per-IP table.
    pub fn per_ip(&self) -> bool {
        self.max_connections_per_ip.is_some() || self.rate_per_ip.is_some()
    }
}

/// A token bucket: `per_second` new connections a second, up to `burst`
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Refill rate of the bucket, in connections a second; at least 1.
    pub per_second: u32,
    /// Bucket size: most connections let through at once after a quiet
    /// spell; at least 1, `per_second` unless written.
    pub burst: u32,
}

/// A pool's `queue` section: what a new session does when every backend
/// is at its `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Sessions that may wait, over all workers; 0 refuses at once.
    pub size: usize,
    /// Longest a session waits; then it is closed.
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            size: 0,
            timeout: Duration::from_secs(5),
        }
    }
}

/// `rate_per_ip: (per_second: 20, burst: 40)`; `burst` defaults to
/// `per_second`.
#[derive(Deserialize, Serialize)]
#[serde(rename = "Rate", deny_unknown_fields)]
pub(super) struct RawRate {
    pub(super) per_second: u32,
    #[serde(default, deserialize_with = "present_some")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    pub(super) burst: Option<u32>,
}

/// `queue: (size: 100, timeout: "5s")`.
#[derive(Deserialize, Serialize)]
#[serde(rename = "Queue", deny_unknown_fields, default)]
pub(super) struct RawQueue {
    pub(super) size: usize,
    pub(super) timeout: String,
}

impl Default for RawQueue {
    fn default() -> Self {
        let defaults = QueueConfig::default();
        RawQueue {
            size: defaults.size,
            timeout: format_duration(defaults.timeout),
        }
    }
}

/// Reads a value (a number, a section) into `Some`, so that `None` means
/// "not written" without making users write `Some(...)`.
pub(super) fn present_some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// The limit fields of `listeners[i]` as written in a file.
pub(super) struct RawListenerLimits {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<u32>,
    pub rate_per_ip: Option<RawRate>,
}

/// Converts the limit fields of `listeners[i]`; a malformed address block
/// is recorded in `issues` and left out.
pub(super) fn convert_listener(
    i: usize,
    raw: RawListenerLimits,
    issues: &mut Vec<Issue>,
) -> ListenerLimits {
    let mut blocks = |field: &str, texts: Vec<String>| -> Vec<Cidr> {
        texts
            .iter()
            .enumerate()
            .filter_map(|(k, text)| {
                Cidr::parse(text)
                    .map_err(|e| issues.push(Issue::new(format!("listeners[{i}].{field}[{k}]"), e)))
                    .ok()
            })
            .collect()
    };
    let acl = Acl {
        allow: blocks("allow", raw.allow),
        deny: blocks("deny", raw.deny),
    };
    ListenerLimits {
        acl,
        max_connections: raw.max_connections,
        max_connections_per_ip: raw.max_connections_per_ip,
        rate_per_ip: raw.rate_per_ip.map(|r| Rate {
            per_second: r.per_second,
            burst: r.burst.unwrap_or(r.per_second),
        }),
    }
}

/// Converts `pools[i].queue`.
pub(super) fn convert_queue(i: usize, raw: RawQueue, issues: &mut Vec<Issue>) -> QueueConfig {
    let defaults = QueueConfig::default();
    let timeout = parse_duration(&raw.timeout).unwrap_or_else(|e| {
        issues.push(Issue::new(
            format!("pools[{i}].queue.timeout"),
            format!(
                "{:?} is not a duration (examples: 500ms, 5s, 1m): {e}",
                raw.timeout
            ),
        ));
        defaults.timeout
    });
    QueueConfig {
        size: raw.size,
        timeout,
    }
}

/// The semantic checks of `listeners[i]`'s limits.
pub(super) fn check_listener(
    limits: &ListenerLimits,
    protocol: Protocol,
    i: usize,
    issues: &mut Vec<Issue>,
) {
    let at = |field: &str| format!("listeners[{i}].{field}");
    let tcp_only = [
        ("max_connections", limits.max_connections.is_some()),
        (
            "max_connections_per_ip",
            limits.max_connections_per_ip.is_some(),
        ),
        ("rate_per_ip", limits.rate_per_ip.is_some()),
    ];
    for (field, given) in tcp_only {
        if given && protocol == Protocol::Udp {
            issues.push(Issue::new(
                at(field),
                "is for TCP listeners; a UDP listener limits flows with udp.max_flows",
            ));
        }
    }
    if limits.max_connections == Some(0) {
        issues.push(Issue::new(
            at("max_connections"),
            "must be at least 1; leave it out for no limit",
        ));
    }
    if limits.max_connections_per_ip == Some(0) {
        issues.push(Issue::new(
            at("max_connections_per_ip"),
            "must be at least 1; leave it out for no limit",
        ));
    }
    if let Some(rate) = limits.rate_per_ip {
        if rate.per_second == 0 {
            issues.push(Issue::new(
                at("rate_per_ip.per_second"),
                "must be at least 1; leave rate_per_ip out for no limit",
            ));
        }
        if rate.burst == 0 {
            issues.push(Issue::new(
                at("rate_per_ip.burst"),
                "must be at least 1 (it defaults to per_second)",
            ));
        }
    }
}

/// The semantic checks of `pools[i]`'s queue and backends' limits.
pub(super) fn check_pool(pool: &PoolConfig, i: usize, issues: &mut Vec<Issue>) {
    for (k, backend) in pool.backends.iter().enumerate() {
        if backend.max_connections == Some(0) {
            issues.push(Issue::new(
                format!("pools[{i}].backends[{k}].max_connections"),
                "must be at least 1; leave it out for no limit",
            ));
        }
    }
    let at = |field: &str| format!("pools[{i}].queue.{field}");
    if pool.queue.size > MAX_QUEUE {
        issues.push(Issue::new(
            at("size"),
            format!(
                "{} is more than the maximum of {MAX_QUEUE}",
                pool.queue.size
            ),
        ));
    }
    if pool.queue.timeout.is_zero() {
        issues.push(Issue::new(
            at("timeout"),
            "must be more than zero (e.g. 5s); use size: 0 to refuse at once instead",
        ));
    } else if pool.queue.timeout > MAX_TIMEOUT {
        issues.push(Issue::new(
            at("timeout"),
            format!(
                "{} is longer than the maximum of {} (365 days)",
                format_duration(pool.queue.timeout),
                format_duration(MAX_TIMEOUT)
            ),
        ));
    }
}
