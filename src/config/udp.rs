//! A listener's transport and, for UDP listeners, its `udp` section.
//!
//! This file owns everything about them: the resolved types ([`Protocol`],
//! [`UdpConfig`], [`FlowKey`]) and their defaults, the file schema
//! ([`RawUdp`]) and its conversion, and the semantic checks, which run both
//! on files and on configs built in code. Documented for users in
//! docs/CONFIG.md ("UDP listeners") and config/balanciaga4.ron.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::raw::plain;

use super::duration::{format_duration, parse_duration};
use super::health::from_name;
use super::validate::Issue;
use super::MAX_TIMEOUT;

/// What a listener receives, written `"tcp"` (the default) or `"udp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// Connections, relayed byte for byte.
    #[default]
    Tcp,
    /// Datagrams, relayed one for one per client flow.
    Udp,
}

impl Protocol {
    /// Every protocol, in the order they are listed in messages and docs.
    pub const ALL: &'static [Protocol] = &[Protocol::Tcp, Protocol::Udp];

    /// The name used in config files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// What makes two datagrams part of one flow, written `"ip-port"` (the
/// default) or `"ip"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FlowKey {
    /// The client's address and port: each client socket is a flow.
    #[default]
    IpPort,
    /// The client's address alone: every port of one host shares a flow
    /// (and so a backend); replies go to the port that sent last.
    Ip,
}

impl FlowKey {
    /// Every flow key, in the order they are listed in messages and docs.
    pub const ALL: &'static [FlowKey] = &[FlowKey::IpPort, FlowKey::Ip];

    /// The name used in config files and logs.
    pub fn name(self) -> &'static str {
        match self {
            FlowKey::IpPort => "ip-port",
            FlowKey::Ip => "ip",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_name(s, Protocol::ALL, Protocol::name, "a protocol")
    }
}

impl FromStr for FlowKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_name(s, FlowKey::ALL, FlowKey::name, "a flow key")
    }
}

/// How a UDP listener keeps its flows (the listener's `udp` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpConfig {
    /// A flow with no datagram either way for this long ends.
    pub idle_timeout: Duration,
    /// Replies after which a flow ends at once (1 for DNS); 0: no limit.
    pub responses: u32,
    /// Client datagrams after which a flow takes no more: the next one
    /// starts a new flow, balanced anew (1: every datagram on its own);
    /// 0: no limit.
    pub requests: u32,
    /// Which client datagrams share a flow, and so a backend.
    pub key: FlowKey,
    /// Flows the listener holds at most, over all workers; `None`: derived
    /// from the open-file limit when the balancer starts.
    pub max_flows: Option<usize>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            idle_timeout: Duration::from_secs(30),
            responses: 0,
            requests: 0,
            key: FlowKey::IpPort,
            max_flows: None,
        }
    }
}

/// The `udp` section as written in a file.
#[derive(Deserialize, Serialize)]
#[serde(rename = "Udp", deny_unknown_fields, default)]
pub(super) struct RawUdp {
    pub(super) idle_timeout: String,
    pub(super) responses: u32,
    pub(super) requests: u32,
    pub(super) key: String,
    #[serde(deserialize_with = "super::limits::present_some")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    pub(super) max_flows: Option<usize>,
}

impl Default for RawUdp {
    fn default() -> Self {
        let defaults = UdpConfig::default();
        RawUdp {
            idle_timeout: format_duration(defaults.idle_timeout),
            responses: defaults.responses,
            requests: defaults.requests,
            key: defaults.key.name().to_string(),
            max_flows: None,
        }
    }
}

/// Reads a section into `Some`, so that `udp: (...)` needs no `Some(...)`.
pub(super) fn present_section<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawUdp>, D::Error> {
    RawUdp::deserialize(deserializer).map(Some)
}

/// Converts the protocol and `udp` section of `listeners[i]`, recording
/// each malformed value in `issues` with a placeholder in its place.
pub(super) fn convert(
    i: usize,
    protocol: &str,
    raw: Option<RawUdp>,
    issues: &mut Vec<Issue>,
) -> (Protocol, UdpConfig) {
    let at = |field: &str| format!("listeners[{i}].{field}");
    let protocol = protocol.parse().unwrap_or_else(|e| {
        issues.push(Issue::new(at("protocol"), e));
        Protocol::Udp // keeps a `udp` section from also being reported
    });
    let Some(raw) = raw else {
        return (protocol, UdpConfig::default());
    };
    if protocol == Protocol::Tcp {
        issues.push(Issue::new(
            at("udp"),
            "is only for listeners with protocol: \"udp\"; remove it or add protocol: \"udp\"",
        ));
    }
    let defaults = UdpConfig::default();
    let idle_timeout = parse_duration(&raw.idle_timeout).unwrap_or_else(|e| {
        issues.push(Issue::new(
            at("udp.idle_timeout"),
            format!(
                "{:?} is not a duration (examples: 500ms, 30s, 1m): {e}",
                raw.idle_timeout
            ),
        ));
        defaults.idle_timeout
    });
    let key = raw.key.parse().unwrap_or_else(|e| {
        issues.push(Issue::new(at("udp.key"), e));
        defaults.key
    });
    let udp = UdpConfig {
        idle_timeout,
        responses: raw.responses,
        requests: raw.requests,
        key,
        max_flows: raw.max_flows,
    };
    (protocol, udp)
}

/// The semantic checks of `listeners[i].udp`.
pub(super) fn check(udp: &UdpConfig, i: usize, issues: &mut Vec<Issue>) {
    let at = |field: &str| format!("listeners[{i}].udp.{field}");
    if udp.idle_timeout.is_zero() {
        issues.push(Issue::new(
            at("idle_timeout"),
            "must be more than zero (e.g. 30s); a zero timeout would end every flow at once",
        ));
    } else if udp.idle_timeout > MAX_TIMEOUT {
        issues.push(Issue::new(
            at("idle_timeout"),
            format!(
                "{} is longer than the maximum of {} (365 days)",
                format_duration(udp.idle_timeout),
                format_duration(MAX_TIMEOUT)
            ),
        ));
    }
    if udp.max_flows == Some(0) {
        issues.push(Issue::new(
            at("max_flows"),
            "must be at least 1; leave it out for the default (from the open-file limit)",
        ));
    }
}
