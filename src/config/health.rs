//! Per-pool health-check settings: the `health` section of a pool.
//!
//! This file owns everything about that section: the resolved types
//! ([`HealthConfig`], [`InitialState`], [`AllDown`]) and their defaults, the
//! file schema ([`RawHealth`]) and its conversion, and the semantic checks,
//! which run both on files and on configs built in code. Documented for
//! users in docs/CONFIG.md ("Health checks") and config/balanciaga4.ron.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::plain;

use super::duration::{format_duration, parse_duration};
use super::validate::Issue;

/// Longest accepted `health.interval` (and so `health.timeout`): one hour.
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
/// Largest accepted `health.rise` and `health.fall` (the smallest is 1).
pub const MAX_RISE_FALL: u32 = 100;
/// Largest accepted `health.jitter` (the smallest is 0.0).
pub const MAX_JITTER: f64 = 0.5;
/// Longest accepted `health.send` and `health.expect`, in bytes.
pub const MAX_PROBE_BYTES: usize = 4096;

/// Health checking of the backends of one pool (the pool's `health`
/// section). Checks connect to each backend every `interval`; with `send`
/// they write those bytes, with `expect` the reply (or banner) must start
/// with those bytes, otherwise a completed connect is a success.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Active checks on. When off, backends are never marked down, by checks
    /// or by passive detection.
    pub enabled: bool,
    /// Time between two checks of one backend, more than zero, at most
    /// [`MAX_HEALTH_INTERVAL`].
    pub interval: Duration,
    /// Longest a check may take (connect, send, reply), more than zero and at
    /// most `interval`; from a file it defaults to `interval`.
    pub timeout: Duration,
    /// Consecutive successful checks that bring a backend up, 1..=100.
    pub rise: u32,
    /// Consecutive failed checks that bring a backend down, 1..=100.
    pub fall: u32,
    /// Each wait between checks is `interval` times a random factor in
    /// `1 - jitter ..= 1 + jitter`; 0.0..=[`MAX_JITTER`].
    pub jitter: f64,
    /// Bytes written once connected, at most [`MAX_PROBE_BYTES`].
    pub send: Option<Vec<u8>>,
    /// Bytes the reply must start with; not empty, at most
    /// [`MAX_PROBE_BYTES`]. Without `send` this checks the banner a server
    /// sends first (SSH, SMTP).
    pub expect: Option<Vec<u8>>,
    /// State of a backend before its first check completes.
    pub initial_state: InitialState,
    /// Consecutive failed connects by client sessions that mark the backend
    /// down; 0 turns passive detection off. Acts only while `enabled`.
    pub passive_failures: u32,
    /// What to do with a new client when every backend of the pool is down.
    pub when_all_down: AllDown,
    /// A backend that comes back up takes a growing share of new sessions
    /// over this long (0 = at once); at most [`MAX_HEALTH_INTERVAL`].
    pub slow_start: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            jitter: 0.1,
            send: None,
            expect: None,
            initial_state: InitialState::Up,
            passive_failures: 1,
            when_all_down: AllDown::FailFast,
            slow_start: Duration::ZERO,
        }
    }
}

/// State of a backend before its first health check completes, written
/// `"up"` or `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InitialState {
    /// Up until proven down (HAProxy's behaviour): traffic flows at once.
    #[default]
    Up,
    /// No traffic until the first check passes.
    Unknown,
}

impl InitialState {
    /// Every state, in the order they are listed in messages and docs.
    pub const ALL: &'static [InitialState] = &[InitialState::Up, InitialState::Unknown];

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            InitialState::Up => "up",
            InitialState::Unknown => "unknown",
        }
    }
}

/// What a pool does with a new client when every backend is down, written
/// `"fail-fast"` or `"fail-open"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AllDown {
    /// Close the client connection at once.
    #[default]
    FailFast,
    /// Pick among the down backends anyway, as if they were up.
    FailOpen,
}

impl AllDown {
    /// Every choice, in the order they are listed in messages and docs.
    pub const ALL: &'static [AllDown] = &[AllDown::FailFast, AllDown::FailOpen];

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            AllDown::FailFast => "fail-fast",
            AllDown::FailOpen => "fail-open",
        }
    }
}

impl fmt::Display for InitialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for AllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InitialState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_name(s, InitialState::ALL, InitialState::name, "an initial state")
    }
}

impl FromStr for AllDown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        from_name(s, AllDown::ALL, AllDown::name, "a when_all_down choice")
    }
}

/// The value of `all` called `s`; the error quotes `s` and lists the names.
pub(super) fn from_name<T: Copy>(
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> Result<T, String> {
    if let Some(value) = all.iter().find(|v| name(**v) == s) {
        return Ok(*value);
    }
    let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
    Err(format!(
        "{s:?} is not {what} (expected one of: {})",
        names.join(", ")
    ))
}

/// The `health` section as written in a file.
#[derive(Deserialize, Serialize)]
#[serde(rename = "Health", deny_unknown_fields, default)]
pub(super) struct RawHealth {
    pub(super) enabled: bool,
    pub(super) interval: String,
    /// `None` when omitted: the timeout is then the interval.
    #[serde(deserialize_with = "super::raw::present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    pub(super) timeout: Option<String>,
    pub(super) rise: u32,
    pub(super) fall: u32,
    pub(super) jitter: f64,
    #[serde(deserialize_with = "super::raw::present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    pub(super) send: Option<String>,
    #[serde(deserialize_with = "super::raw::present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    pub(super) expect: Option<String>,
    pub(super) initial_state: String,
    pub(super) passive_failures: u32,
    pub(super) when_all_down: String,
    pub(super) slow_start: String,
}

impl Default for RawHealth {
    fn default() -> Self {
        let defaults = HealthConfig::default();
        RawHealth {
            enabled: defaults.enabled,
            interval: format_duration(defaults.interval),
            timeout: None,
            rise: defaults.rise,
            fall: defaults.fall,
            jitter: defaults.jitter,
            send: None,
            expect: None,
            initial_state: defaults.initial_state.name().to_string(),
            passive_failures: defaults.passive_failures,
            when_all_down: defaults.when_all_down.name().to_string(),
            slow_start: format_duration(defaults.slow_start),
        }
    }
}

/// Converts the `health` section of `pools[i]`, recording each malformed
/// value in `issues` and putting a placeholder in its place. A placeholder
/// never causes a follow-on issue outside the failed field's path.
pub(super) fn convert(i: usize, raw: RawHealth, issues: &mut Vec<Issue>) -> HealthConfig {
    let at = |field: &str| format!("pools[{i}].health.{field}");
    let defaults = HealthConfig::default();
    let mut duration = |field: &str, text: &str| match parse_duration(text) {
        Ok(d) => Some(d),
        Err(e) => {
            issues.push(Issue::new(
                at(field),
                format!("{text:?} is not a duration (examples: 500ms, 2s, 1m): {e}"),
            ));
            None
        }
    };
    // A malformed interval becomes zero, which the checks refuse (an issue
    // dropped as being about a field that already failed). An omitted
    // timeout is the interval, unless the interval is malformed or out of
    // range: the error is then the interval's alone.
    let interval = duration("interval", &raw.interval);
    let timeout = match &raw.timeout {
        Some(text) => duration("timeout", text).unwrap_or(defaults.timeout),
        None => interval
            .filter(|d| interval_in_range(*d))
            .unwrap_or(defaults.timeout),
    };
    let interval = interval.unwrap_or(Duration::ZERO);
    let slow_start = duration("slow_start", &raw.slow_start).unwrap_or(defaults.slow_start);
    let mut bytes = |field: &str, text: Option<String>| {
        text.and_then(|text| {
            probe_bytes(&text)
                .map_err(|e| issues.push(Issue::new(at(field), e)))
                .ok()
        })
    };
    let send = bytes("send", raw.send);
    let expect = bytes("expect", raw.expect);
    let initial_state = raw.initial_state.parse().unwrap_or_else(|e| {
        issues.push(Issue::new(at("initial_state"), e));
        defaults.initial_state
    });
    let when_all_down = raw.when_all_down.parse().unwrap_or_else(|e| {
        issues.push(Issue::new(at("when_all_down"), e));
        defaults.when_all_down
    });
    HealthConfig {
        enabled: raw.enabled,
        interval,
        timeout,
        rise: raw.rise,
        fall: raw.fall,
        jitter: raw.jitter,
        send,
        expect,
        initial_state,
        passive_failures: raw.passive_failures,
        when_all_down,
        slow_start,
    }
}

/// The bytes of a `send` or `expect` string: each character is one byte, so
/// `"\xff"` is the byte 0xFF. RON strings are Unicode and RON reads `\xNN`
/// as the character U+00NN, so characters above U+00FF cannot be bytes.
fn probe_bytes(text: &str) -> Result<Vec<u8>, String> {
    text.chars()
        .map(|c| {
            u8::try_from(c).map_err(|_| {
                format!(
                    "{c:?} (U+{:04X}) is not a byte; each character must be from U+0000 to U+00FF: write bytes as \\xNN escapes, e.g. \\xe2\\x82\\xac for the UTF-8 of \"€\"",
                    u32::from(c)
                )
            })
        })
        .collect()
}

fn interval_in_range(interval: Duration) -> bool {
    !interval.is_zero() && interval <= MAX_HEALTH_INTERVAL
}

/// The semantic checks of `pools[i].health`.
pub(super) fn check(health: &HealthConfig, i: usize, issues: &mut Vec<Issue>) {
    let at = |field: &str| format!("pools[{i}].health.{field}");
    let max = format_duration(MAX_HEALTH_INTERVAL);
    let interval_ok = interval_in_range(health.interval);
    if health.interval.is_zero() {
        issues.push(Issue::new(
            at("interval"),
            "must be more than zero (e.g. 2s)",
        ));
    } else if !interval_ok {
        issues.push(Issue::new(
            at("interval"),
            format!(
                "{} is longer than the maximum of {max}",
                format_duration(health.interval)
            ),
        ));
    }
    if health.timeout.is_zero() {
        issues.push(Issue::new(
            at("timeout"),
            "must be more than zero (e.g. 1s); omit it to use the interval",
        ));
    } else if health.timeout > MAX_HEALTH_INTERVAL {
        issues.push(Issue::new(
            at("timeout"),
            format!(
                "{} is longer than the maximum of {max}",
                format_duration(health.timeout)
            ),
        ));
    } else if interval_ok && health.timeout > health.interval {
        issues.push(Issue::new(
            at("timeout"),
            format!(
                "{} is longer than the interval ({}); a check must end before the next one starts",
                format_duration(health.timeout),
                format_duration(health.interval)
            ),
        ));
    }
    for (field, value) in [("rise", health.rise), ("fall", health.fall)] {
        if !(1..=MAX_RISE_FALL).contains(&value) {
            issues.push(Issue::new(
                at(field),
                format!(
                    "{value} is out of range (expected 1 to {MAX_RISE_FALL} consecutive checks)"
                ),
            ));
        }
    }
    if !(0.0..=MAX_JITTER).contains(&health.jitter) {
        issues.push(Issue::new(
            at("jitter"),
            format!(
                "{} is out of range (expected 0.0 to {MAX_JITTER:.1}, a fraction of the interval)",
                health.jitter
            ),
        ));
    }
    if health.slow_start > MAX_HEALTH_INTERVAL {
        issues.push(Issue::new(
            at("slow_start"),
            format!(
                "{} is longer than the maximum of {max}",
                format_duration(health.slow_start)
            ),
        ));
    }
    for (field, bytes) in [("send", &health.send), ("expect", &health.expect)] {
        let Some(bytes) = bytes else { continue };
        if bytes.len() > MAX_PROBE_BYTES {
            issues.push(Issue::new(
                at(field),
                format!(
                    "{} bytes is more than the maximum of {MAX_PROBE_BYTES}",
                    bytes.len()
                ),
            ));
        } else if field == "expect" && bytes.is_empty() {
            issues.push(Issue::new(
                at(field),
                "must not be empty; omit it to accept any reply (or none)",
            ));
        }
    }
}
