//! The schedule entry of one backend and what happens to it when a check
//! ends: its rise/fall machine, jitter generator and reply buffer.
//!
//! Touches the shared backend only through `Backend::is_up` / `set_up`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::probe::{Failure, Probe, Progress, Spec};
use super::state::Machine;
use super::stats::CheckStats;
use super::{Target, JITTER_SEED};
use crate::backend::Backend;
use crate::config::{HealthConfig, InitialState, Protocol};
use crate::metrics::events;
use crate::policy::hash::hash64;

/// The schedule entry of one backend.
pub(super) struct BackendCheck {
    pub(super) pool: Arc<str>,
    pub(super) backend: Arc<Backend>,
    pub(super) health: HealthConfig,
    pub(super) protocol: Protocol,
    pub(super) machine: Machine,
    pub(super) rng: fastrand::Rng,
    /// `expect.len()` bytes, reused by every check.
    pub(super) reply: Box<[u8]>,
    pub(super) stats: Arc<CheckStats>,
    /// Start of the next check, or of the one in flight.
    pub(super) scheduled: Instant,
    /// The check in flight and its deadline.
    pub(super) probe: Option<(Probe, Instant)>,
    /// Bumped whenever the entry's live timer changes; older heap entries
    /// with another value are stale.
    pub(super) seq: u64,
    #[cfg(test)]
    pub(super) started: Instant,
}

impl BackendCheck {
    pub(super) fn due(&self) -> Instant {
        self.probe.as_ref().map_or(self.scheduled, |(_, at)| *at)
    }

    pub(super) fn advance(&mut self) -> Progress {
        let Some((probe, _)) = self.probe.as_mut() else {
            return Progress::Pending;
        };
        let spec = Spec {
            send: self.health.send.as_deref(),
            expect: self.health.expect.as_deref(),
        };
        probe.advance(spec, &mut self.reply)
    }

    /// Interval × a uniform factor in 1 ± jitter.
    pub(super) fn next_wait(&mut self) -> Duration {
        let jitter = if self.health.jitter.is_finite() {
            self.health.jitter.clamp(0.0, 0.5)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * (2.0 * self.rng.f64() - 1.0);
        self.health.interval.mul_f64(factor)
    }
}

/// A new entry: initial state applied, first check at a random point of
/// the first interval.
pub(super) fn fresh(target: Target, stats: Arc<CheckStats>, now: Instant) -> BackendCheck {
    let mut identity = target.pool.as_bytes().to_vec();
    identity.push(0);
    identity.extend_from_slice(target.backend.addr.to_string().as_bytes());
    let mut rng = fastrand::Rng::with_seed(hash64(&identity, JITTER_SEED));
    let h = &target.health;
    if h.initial_state == InitialState::Unknown {
        target.backend.set_up(false);
    }
    let machine = Machine::new(h.initial_state, h.rise, h.fall);
    let scheduled = now + h.interval.mul_f64(rng.f64());
    let expect_len = h.expect.as_ref().map_or(0, Vec::len);
    BackendCheck {
        pool: target.pool,
        backend: target.backend,
        reply: vec![0; expect_len].into_boxed_slice(),
        health: target.health,
        protocol: target.protocol,
        machine,
        rng,
        stats,
        scheduled,
        probe: None,
        seq: 0,
        #[cfg(test)]
        started: now,
    }
}

/// Feeds one result to the entry's machine and publishes a change.
pub(super) fn observe(e: &mut BackendCheck, result: Result<(), Failure>) {
    CheckStats::count(if result.is_ok() {
        &e.stats.passed
    } else {
        &e.stats.failed
    });
    if e.machine.is_up() && !e.backend.is_up() && e.machine.adopt_down() {
        debug!(
            "pool {} backend {}: marked down by client connects; up again after {} passed checks",
            e.pool, e.backend.addr, e.health.rise
        );
    }
    let Some(t) = e.machine.observe(result.is_ok()) else {
        if !e.machine.is_up() && e.backend.is_up() {
            e.backend.set_up(false); // keep the published flag ours
        }
        return;
    };
    // Published even when the flag already says so: an `unknown` backend
    // confirmed down was never up, and its confirmation is still logged.
    e.backend.set_up(t.up);
    match result {
        Ok(()) => {
            CheckStats::count(&e.stats.went_up);
            let change = format!(
                "pool {} backend {} UP: check passed ({}/{})",
                e.pool, e.backend.addr, t.count, t.needed
            );
            info!("{change}");
            events::record(change);
        }
        Err(failure) => {
            CheckStats::count(&e.stats.went_down);
            let change = format!(
                "pool {} backend {} DOWN: {failure} ({}/{})",
                e.pool, e.backend.addr, t.count, t.needed
            );
            warn!("{change}");
            events::record(change);
        }
    }
}
