//! A pool: its backends, the picker over them and what it does when they
//! fail or fill up.
//!
//! Owns one pool of one snapshot: its backend list (shared `Arc<Backend>`s),
//! its picker (`policy::Policy`, built from the backends' weights when the
//! pool is built), its health settings as the data path reads them
//! (fail-open, slow start, passive detection threshold), its queue and its
//! "no backend" counter and warning pace (both shared by every snapshot of
//! the same pool). A pool is immutable once published: a new policy or
//! weight is a new `Pool` in a new snapshot (`registry`). It may touch its
//! backends' atomics and the queue's counts, and log; no lock, no I/O.

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
    /// The picker, built for these backends and their weights at the time;
    /// a new weight or policy means a new `Pool`.
    pub policy: Policy,
    /// In config order, a host name's addresses in resolver order; indexes
    /// into it are what `Policy` and `Tried` deal in.
    pub backends: Vec<Arc<Backend>>,
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
    /// A TCP pool with no PROXY header, no queue and fresh shared counters;
    /// the picker is built from `backends` as they are now.
    pub fn new(
        name: &str,
        kind: PolicyKind,
        backends: Vec<Arc<Backend>>,
        health: HealthConfig,
    ) -> Pool {
        Pool {
            name: Arc::from(name),
            policy: Policy::new(kind, &backends),
            backends,
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
    pub fn full_backends_left(&self, tried: &Tried) -> bool {
        self.backends.iter().enumerate().any(|(i, b)| {
            !tried.contains(i)
                && !b.has_room()
                && (b.is_eligible()
                    || (self.health.when_all_down == AllDown::FailOpen && b.is_enabled()))
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

    /// Chooses a backend for a new session (see `Policy::pick`). When every
    /// backend is down, a fail-open pool tries them anyway.
    pub fn pick(&self, pick: &mut Pick<'_>) -> Option<usize> {
        pick.slow_start_ms = u64::try_from(self.health.slow_start.as_millis()).unwrap_or(u64::MAX);
        self.policy.pick(&self.backends, pick).or_else(|| {
            if self.health.when_all_down != AllDown::FailOpen || pick.ignore_health {
                return None;
            }
            pick.ignore_health = true;
            let chosen = self.policy.pick(&self.backends, pick);
            pick.ignore_health = false;
            chosen
        })
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
                .map(|b| format!("{} {}", b.addr, b.state().as_str()))
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
        Pool {
            name: Arc::clone(&self.name),
            policy: Policy::new(kind, &self.backends),
            backends: self.backends.clone(),
            no_backend: Arc::clone(&self.no_backend),
            no_backend_warnings: Arc::clone(&self.no_backend_warnings),
            health: self.health.clone(),
            protocol: self.protocol,
            send_proxy: self.send_proxy,
            queue: self.queue,
            waiting: Arc::clone(&self.waiting),
        }
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
