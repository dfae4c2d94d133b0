//! A pool: its backends, the picker over them and what it does when they
//! fail or fill up.
//!
//! Owns one pool of one snapshot: its backend list (shared `Arc<Backend>`s),
//! its pickers (`policy::Policy`, built from the backends' weights when the
//! pool is built: one over the primaries and, when the pool has backups, one
//! over those), which of the two tiers a new session goes to, its health settings as the data path reads them
//! (fail-open, slow start, passive detection threshold), its queue and its
//! "no backend" counter and warning pace (both shared by every snapshot of
//! the same pool). A pool is immutable once published: a new policy or
//! weight is a new `Pool` in a new snapshot (`registry`). It may touch its
//! backends' atomics and the queue's counts, and log; no lock, no I/O.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Backend;
use crate::config::{AllDown, HealthConfig, PolicyKind, Protocol, QueueConfig};
use crate::logging::SharedRateLimit;
use crate::metrics::events;
use crate::policy::{Pick, Policy, Tried};
use crate::proxy_protocol::Version;
use crate::queue::Queue;
use crate::timer::millis;

/// One pool of one snapshot: its backends and how they are picked.
#[derive(Debug)]
pub struct Pool {
    /// Unique among pools; how a reload matches it to its predecessor
    /// (counters, queue), and the `pool` label of logs and metrics.
    pub name: Arc<str>,
    /// The picker over the primaries, `backends[..primaries]`, built for
    /// them and their weights at the time; a new weight or policy means a
    /// new `Pool`.
    pub policy: Policy,
    /// The primaries, then the backups, each in configuration order (a
    /// host name's addresses in resolver order); indexes into it are what
    /// `Policy`, `Tried` and a session's backend deal in.
    pub backends: Vec<Arc<Backend>>,
    /// How many of `backends` are primaries.
    primaries: usize,
    /// The picker over the backups, `backends[primaries..]`, with its own
    /// weights (and Maglev table); `None` when the pool has no backup, so
    /// that such a pool pays one branch per pick and nothing else.
    backup_policy: Option<Policy>,
    /// Clients closed because no backend could take them; shared by every
    /// snapshot of this pool.
    pub no_backend: Arc<AtomicU64>,
    /// Paces the "no backend" warning, so that a pool with every backend
    /// down logs once a second, not per client.
    no_backend_warnings: Arc<SharedRateLimit>,
    /// The pool's `health` section: checks, and what the data path reads
    /// (fail-open, slow start, passive failure threshold).
    pub health: HealthConfig,
    /// How its backends are reached, and so checked: UDP when only UDP
    /// listeners use the pool.
    pub protocol: Protocol,
    /// The PROXY protocol header written to its backends, if any.
    pub send_proxy: Option<Version>,
    /// What a session does when every backend is full.
    pub queue: QueueConfig,
    /// Sessions waiting for a slot, over all reactors; shared by every
    /// snapshot of this pool.
    pub waiting: Arc<Queue>,
}

impl Pool {
    /// A TCP pool of `backends`, the backups (`Backend::is_backup`, read
    /// now) moved after the primaries, with no PROXY header, no queue and
    /// fresh shared counters; the pickers are built from the backends as
    /// they are now.
    pub fn new(
        name: &str,
        kind: PolicyKind,
        backends: Vec<Arc<Backend>>,
        health: HealthConfig,
    ) -> Pool {
        let (mut backends, backups): (Vec<_>, Vec<_>) =
            backends.into_iter().partition(|b| !b.is_backup());
        let primaries = backends.len();
        backends.extend(backups);
        let (policy, backup_policy) = pickers(kind, &backends, primaries);
        Pool {
            name: Arc::from(name),
            policy,
            backends,
            primaries,
            backup_policy,
            no_backend: Arc::default(),
            no_backend_warnings: Arc::default(),
            health,
            protocol: Protocol::Tcp,
            send_proxy: None,
            queue: QueueConfig::default(),
            waiting: Arc::default(),
        }
    }

    /// The same pool with `queue` settings.
    pub fn with_queue(mut self, queue: QueueConfig) -> Pool {
        self.queue = queue;
        self
    }

    /// A session on backend `index` ended (or moved elsewhere): frees its
    /// slot. True if sessions wait in this pool's queue for one (their
    /// reactors should be woken).
    pub fn release(&self, index: usize) -> bool {
        let Some(backend) = self.backends.get(index) else {
            return false;
        };
        backend.active.fetch_sub(1, Ordering::SeqCst);
        backend.max_connections() > 0 && self.waiting.slot_freed()
    }

    /// Whether some backend that could take this session but for its
    /// `max_connections` is full: the session may then wait for it.
    /// Only the tier new sessions go to counts: full primaries mean
    /// waiting, not backups.
    pub fn full_backends_left(&self, tried: &Tried) -> bool {
        let fail_open = self.health.when_all_down == AllDown::FailOpen;
        let mut tier = self.tier(false);
        if fail_open && self.backup_policy.is_some() && !self.serves(&tier, false) {
            tier = self.tier(true);
        }
        self.backends[tier.clone()].iter().zip(tier).any(|(b, i)| {
            !tried.contains(i)
                && !b.has_room()
                && (b.is_eligible() || (fail_open && b.is_enabled()))
        })
    }

    /// Whether backend `index` is a backup in this snapshot.
    pub fn is_backup(&self, index: usize) -> bool {
        index >= self.primaries && index < self.backends.len()
    }

    /// The indices of the tier that new sessions go to: the primaries
    /// while one of them can take sessions (`Backend::is_eligible`, or only
    /// enabled when health is ignored), whether or not it has room;
    /// otherwise the backups.
    fn tier(&self, ignore_health: bool) -> Range<usize> {
        let primaries = 0..self.primaries;
        if self.backup_policy.is_none() || self.serves(&primaries, ignore_health) {
            primaries
        } else {
            self.primaries..self.backends.len()
        }
    }

    /// Whether a backend of `range` can take sessions.
    fn serves(&self, range: &Range<usize>, ignore_health: bool) -> bool {
        self.backends[range.clone()].iter().any(|b| {
            if ignore_health {
                b.is_enabled()
            } else {
                b.is_eligible()
            }
        })
    }

    /// The same pool reached over `protocol`. A UDP backend can only be
    /// checked by sending it something, so without `health.send` its
    /// checks are off, and with them passive detection (nothing would
    /// bring a backend it marked down back up).
    pub fn over(mut self, protocol: Protocol) -> Pool {
        self.protocol = protocol;
        if protocol == Protocol::Udp && self.health.send.is_none() {
            self.health.enabled = false;
        }
        self
    }

    /// The same pool with its backends reading PROXY headers of `version`
    /// (their health checks send one too: `health::Target::new`).
    pub fn sending_proxy(mut self, version: Option<Version>) -> Pool {
        self.send_proxy = version;
        self
    }

    /// Chooses a backend for a new session (see `Policy::pick`) in the tier
    /// new sessions go to (`tier`). When every backend, primary and backup,
    /// is down, a fail-open pool tries them anyway, primaries first.
    pub fn pick(&self, pick: &mut Pick<'_>) -> Option<usize> {
        pick.slow_start_ms = u64::try_from(self.health.slow_start.as_millis()).unwrap_or(u64::MAX);
        self.pick_in_tier(pick).or_else(|| {
            if self.health.when_all_down != AllDown::FailOpen || pick.ignore_health {
                return None;
            }
            pick.ignore_health = true;
            let chosen = self.pick_in_tier(pick);
            pick.ignore_health = false;
            chosen
        })
    }

    fn pick_in_tier(&self, pick: &mut Pick<'_>) -> Option<usize> {
        let Some(backups) = &self.backup_policy else {
            return self.policy.pick(&self.backends, pick);
        };
        if self.serves(&(0..self.primaries), pick.ignore_health) {
            return self.policy.pick(&self.backends[..self.primaries], pick);
        }
        // The backups' picker counts from 0: the tried set is shifted to
        // its indices, and its choice back to the pool's.
        let offset = self.primaries;
        let tried = shifted(pick.tried, offset..self.backends.len());
        let mut within = Pick {
            tried: &tried,
            rng: &mut *pick.rng,
            ..*pick
        };
        backups
            .pick(&self.backends[offset..], &mut within)
            .map(|k| offset + k)
    }

    /// Keeps the counters of the pool of the same name in an earlier
    /// snapshot, so that they run on across a reload.
    pub fn carry_counters_from(&mut self, previous: &Pool) {
        self.no_backend = Arc::clone(&previous.no_backend);
        self.no_backend_warnings = Arc::clone(&previous.no_backend_warnings);
        self.waiting = Arc::clone(&previous.waiting);
    }

    /// Counts a client closed for want of a backend and, at most once a
    /// second per pool (whichever reactor gets there first), says so.
    pub fn count_no_backend(&self, now: Instant) {
        let total = self.no_backend.fetch_add(1, Ordering::Relaxed) + 1;
        if self.no_backend_warnings.allow(millis(now)) {
            let states: Vec<String> = self
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let backup = if self.is_backup(i) { " (backup)" } else { "" };
                    format!("{} {}{backup}", b.addr, b.state().as_str())
                })
                .collect();
            log::warn!(
                "pool {}: no backend can take new clients, closing them ({total} so far; {})",
                self.name,
                states.join(", ")
            );
        }
    }

    /// Consecutive failed connects from traffic that mark a backend down:
    /// only while active checks run, since nothing else would bring it back.
    pub fn passive_threshold(&self) -> u32 {
        if self.health.enabled {
            self.health.passive_failures
        } else {
            0
        }
    }

    /// The same backends (and so the same counters and health) under
    /// another policy.
    pub fn with_policy(&self, kind: PolicyKind) -> Pool {
        self.rebuilt(kind, self.backends.clone())
    }

    /// The same pool (settings, shared counters, queue) over `backends`,
    /// backups moved after the primaries, with `kind`'s pickers built for
    /// them: what an admin action that adds or removes a backend publishes.
    pub fn rebuilt(&self, kind: PolicyKind, backends: Vec<Arc<Backend>>) -> Pool {
        let mut pool = Pool::new(&self.name, kind, backends, self.health.clone())
            .with_queue(self.queue)
            .sending_proxy(self.send_proxy);
        pool.name = Arc::clone(&self.name);
        pool.protocol = self.protocol;
        pool.carry_counters_from(self);
        pool
    }

    /// Passive detection: traffic to backend `index` failed through the
    /// backend's fault (a refused or timed-out connect, an ICMP port
    /// unreachable on a UDP flow), not ours (like running out of
    /// descriptors). Enough of them in a row mark it down until the active
    /// checks bring it back.
    pub fn note_failure(&self, index: usize, error: &std::io::Error) {
        use std::io::ErrorKind::*;
        let Some(backend) = self.backends.get(index) else {
            return;
        };
        backend
            .counters
            .connect_failures_total
            .fetch_add(1, Ordering::Relaxed);
        let backend_fault = matches!(
            error.kind(),
            ConnectionRefused
                | ConnectionReset
                | ConnectionAborted
                | TimedOut
                | HostUnreachable
                | NetworkUnreachable
        );
        if !backend_fault {
            return;
        }
        let threshold = self.passive_threshold();
        if let Some(failures) = backend.record_connect_failure(threshold) {
            let what = match (self.protocol, error.kind()) {
                (Protocol::Udp, ConnectionRefused) => "port unreachable",
                (_, ConnectionRefused) => "connect refused",
                (_, TimedOut) => "connect timed out",
                (_, ConnectionReset | ConnectionAborted) => "connection reset",
                (_, HostUnreachable | NetworkUnreachable) => "unreachable",
                _ => "connect failed",
            };
            let change = format!(
                "pool {} backend {} DOWN: {what} on client traffic ({failures}/{threshold})",
                self.name, backend.addr
            );
            log::warn!("{change}");
            events::record(change);
        }
    }
}

/// The pickers over `backends[..primaries]` and, if there are backups,
/// over `backends[primaries..]`.
fn pickers(
    kind: PolicyKind,
    backends: &[Arc<Backend>],
    primaries: usize,
) -> (Policy, Option<Policy>) {
    let (first, backups) = backends.split_at(primaries);
    let backup = (!backups.is_empty()).then(|| Policy::new(kind, backups));
    (Policy::new(kind, first), backup)
}

/// The part of `tried` within `range`, counted from its start.
fn shifted(tried: &Tried, range: Range<usize>) -> Tried {
    let len = range.len();
    let mut out = Tried::default();
    for (k, i) in range.enumerate() {
        if tried.contains(i) {
            out.insert(k, len);
        }
    }
    out
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
