//! Applying a changed configuration file to the running balancer.
//!
//! Owns the decision of what a reload may change live and the building of
//! the next registry snapshot from the new file: pools, policies, backends
//! (added, removed, re-weighted), health settings, timeouts and retries
//! change for new sessions at once; what cannot change live (workers,
//! buffer size, the set of listeners and their addresses) is reported as
//! needing a restart and otherwise left as it runs. It runs on the signal
//! thread, never on a reactor, reads the file, builds the snapshot outside
//! the registry lock and publishes it; a file that fails to load or to
//! apply changes nothing.
//!
//! Backends are matched by pool name and address, and a backend whose
//! weight did not change is the very same `Arc<Backend>` in the new
//! snapshot, so its active count, health and operator state carry over; a
//! re-weighted one is a new backend that inherits health and operator
//! state. A removed backend simply is not in the new snapshot: sessions
//! already open on it hold the old pool and finish normally.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::registry::{Backend, Listener, Registry, Shared};

/// Reloads attempted, by outcome.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub applied: AtomicU64,
    pub failed: AtomicU64,
}

/// Why a reload was not applied.
#[derive(Debug)]
pub enum ReloadError {
    Config(ConfigError),
    /// The new file moves a running listener to a pool it no longer has.
    Inconsistent(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Config(e) => e.fmt(f),
            ReloadError::Inconsistent(e) => f.write_str(e),
        }
    }
}

/// What one reload changed, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
    pub reweighted: usize,
    /// Settings that only take effect after a restart.
    pub needs_restart: Vec<String>,
}

/// Reads `path` and applies it; logs the outcome either way.
pub fn reload(
    path: &Path,
    running: &Config,
    shared: &Shared,
    stats: &ReloadStats,
) -> Option<Config> {
    let result = Config::load(path)
        .map_err(ReloadError::Config)
        .and_then(|next| apply(running, &next, shared).map(|changes| (next, changes)));
    match result {
        Ok((next, changes)) => {
            stats.applied.fetch_add(1, Ordering::Relaxed);
            info!(
                "reloaded {}: {} pools; backends {} added, {} removed, {} re-weighted",
                path.display(),
                next.pools.len(),
                changes.added,
                changes.removed,
                changes.reweighted
            );
            for setting in &changes.needs_restart {
                warn!(
                    "reload of {}: {setting} needs a restart; still running with the old value",
                    path.display()
                );
            }
            Some(still_running(running, next))
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            error!(
                "reload of {} failed, the running configuration stays:\n{e}",
                path.display()
            );
            None
        }
    }
}

/// Builds the snapshot for `next` on top of what runs now and publishes it.
pub fn apply(running: &Config, next: &Config, shared: &Shared) -> Result<Changes, ReloadError> {
    let (current, _) = shared.snapshot();
    let mut changes = Changes {
        needs_restart: needs_restart(running, next),
        ..Changes::default()
    };
    let mut fresh = Registry::build(next);
    // The listening sockets stay as bound; only their pool may change.
    fresh.listeners = keep_listeners(&current.listeners, next)?;
    let old: HashMap<(&str, SocketAddr), &Arc<Backend>> = current
        .pools
        .iter()
        .flat_map(|p| p.backends.iter().map(move |b| ((&*p.name, b.addr), b)))
        .collect();
    let mut kept = 0;
    for pool in &mut fresh.pools {
        let Some(pool) = Arc::get_mut(pool) else {
            continue; // just built: never shared yet
        };
        if let Some(previous) = current.pools.iter().find(|p| p.name == pool.name) {
            pool.carry_counters_from(previous);
        }
        for backend in &mut pool.backends {
            match old.get(&(&*pool.name, backend.addr)) {
                Some(previous) if previous.weight == backend.weight => {
                    *backend = Arc::clone(previous);
                    kept += 1;
                }
                Some(previous) => {
                    backend.set_up(previous.is_up());
                    backend.set_admin(previous.admin());
                    changes.reweighted += 1;
                    kept += 1;
                }
                None => changes.added += 1,
            }
        }
    }
    changes.removed = old.len() - kept;
    shared.publish(fresh);
    Ok(changes)
}

/// The running listeners in their running order (reactors index them),
/// each pointed at its pool in the new file.
fn keep_listeners(running: &[Listener], next: &Config) -> Result<Vec<Listener>, ReloadError> {
    running
        .iter()
        .map(|l| {
            let wanted = next
                .listeners
                .iter()
                .find(|n| *n.name == *l.name)
                .ok_or_else(|| {
                    ReloadError::Inconsistent(format!(
                        "listener {} is not in the new file; removing a listener needs a restart",
                        l.name
                    ))
                })?;
            let pool = next
                .pools
                .iter()
                .position(|p| p.name == wanted.pool)
                .ok_or_else(|| {
                    ReloadError::Inconsistent(format!(
                        "listener {} names an undefined pool",
                        l.name
                    ))
                })?;
            Ok(Listener { pool, ..l.clone() })
        })
        .collect()
}

/// What runs after `next` was applied: its live settings, and the running
/// values of the ones that need a restart, so that the next reload still
/// reports them.
fn still_running(running: &Config, mut next: Config) -> Config {
    next.global.workers = running.global.workers;
    next.global.buffer_size = running.global.buffer_size;
    next.global.log_level = running.global.log_level;
    next.listeners.clone_from(&running.listeners);
    next
}

fn needs_restart(running: &Config, next: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if running.global.workers != next.global.workers {
        out.push(format!(
            "global.workers ({} → {})",
            running.global.workers, next.global.workers
        ));
    }
    if running.global.buffer_size != next.global.buffer_size {
        out.push(format!(
            "global.buffer_size ({} → {})",
            running.global.buffer_size, next.global.buffer_size
        ));
    }
    if running.global.log_level != next.global.log_level {
        out.push(format!(
            "global.log_level ({} → {})",
            running.global.log_level, next.global.log_level
        ));
    }
    for l in &next.listeners {
        match running.listeners.iter().find(|r| r.name == l.name) {
            None => out.push(format!("new listener {} on {}", l.name, l.bind)),
            Some(r) if r.addresses != l.addresses => out.push(format!(
                "listener {} address ({} → {})",
                l.name, r.bind, l.bind
            )),
            Some(_) => {}
        }
    }
    out
}
