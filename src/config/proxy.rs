//! The PROXY protocol settings: a listener's `accept_proxy` and
//! `proxy_timeout`, a pool's `send_proxy`.
//!
//! This file owns their defaults, their conversion from the file's text
//! and their semantic checks (which run on files and on configs built in
//! code alike). The wire format is `crate::proxy_protocol`'s. Documented
//! for users in docs/CONFIG.md and config/balanciaga4.ron.

use std::time::Duration;

use super::duration::parse_duration;
use super::validate::{self, Issue};
use super::{Config, Protocol};
use crate::proxy_protocol::Version;

/// How long a client of an `accept_proxy` listener has to send its header.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(3);

/// A listener's `accept_proxy` and `proxy_timeout` as written: `Some`
/// timeout when headers are expected.
pub(super) fn convert_accept(
    i: usize,
    accept: bool,
    timeout: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    let path = format!("listeners[{i}].proxy_timeout");
    let timeout = match timeout {
        None => DEFAULT_PROXY_TIMEOUT,
        Some(_) if !accept => {
            issues.push(Issue::new(
                path,
                "is only used with accept_proxy: true; remove it or add accept_proxy: true",
            ));
            return None;
        }
        Some(text) => parse_duration(&text).unwrap_or_else(|e| {
            issues.push(Issue::new(
                path,
                format!("{text:?} is not a duration (examples: 500ms, 3s): {e}"),
            ));
            DEFAULT_PROXY_TIMEOUT
        }),
    };
    accept.then_some(timeout)
}

/// A pool's `send_proxy`: `"v1"`, `"v2"` or absent (off).
pub(super) fn convert_send(
    i: usize,
    text: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<Version> {
    text.and_then(|text| {
        text.parse()
            .map_err(|e| issues.push(Issue::new(format!("pools[{i}].send_proxy"), e)))
            .ok()
    })
}

/// The semantic checks of every listener's and pool's PROXY settings.
pub(super) fn check(config: &Config, issues: &mut Vec<Issue>) {
    for (i, listener) in config.listeners.iter().enumerate() {
        let Some(timeout) = listener.accept_proxy else {
            continue;
        };
        if listener.protocol == Protocol::Udp {
            issues.push(Issue::new(
                format!("listeners[{i}].accept_proxy"),
                "is for TCP listeners only (PROXY headers on UDP are not accepted)",
            ));
        }
        let path = format!("listeners[{i}].proxy_timeout");
        validate::check_timeout(path, timeout, true, issues);
    }
    for (i, pool) in config.pools.iter().enumerate() {
        let udp_user = config
            .listeners
            .iter()
            .find(|l| l.pool == pool.name && l.protocol == Protocol::Udp);
        if let (Some(Version::V1), Some(listener)) = (pool.send_proxy, udp_user) {
            issues.push(Issue::new(
                format!("pools[{i}].send_proxy"),
                format!(
                    "\"v1\" cannot carry UDP, and UDP listener {:?} uses this pool; use \"v2\"",
                    listener.name
                ),
            ));
        }
    }
}
