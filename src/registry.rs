//! The published view of pools, backends and session settings.
//!
//! Owns the immutable `Registry` snapshot and its publication point
//! (`Shared`). A snapshot is built off the hot path, swapped in under a short
//! parking_lot write lock, and announced by bumping an epoch; each reactor
//! compares the epoch once per loop turn and clones the `Arc` only when it
//! changed, so workers never take the lock per connection and never across
//! I/O. Runtime counters live in per-backend atomics (`Backend`) so they can
//! be carried over when a later snapshot keeps the same backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::config::{Config, ListenerConfig};
use crate::policy::{Policy, Tried};

/// Settings every session reads when it starts.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub retries: u32,
    pub access_log: bool,
}

#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Sessions currently connecting to or connected to this backend.
    pub active: AtomicUsize,
}

impl Backend {
    pub fn new(addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            addr,
            weight,
            active: AtomicUsize::new(0),
        }
    }

    /// May new sessions be sent here?
    pub fn is_eligible(&self) -> bool {
        self.weight > 0
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub policy: Policy,
    pub backends: Vec<Arc<Backend>>,
}

impl Pool {
    /// Chooses a backend for a new session, skipping the indices set in
    /// `tried` (those that already failed this client).
    pub fn pick(&self, tried: &Tried) -> Option<usize> {
        self.policy.pick(&self.backends, tried)
    }
}

/// A listener as the reactors see it: where it binds and which pool serves it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub addresses: Vec<SocketAddr>,
    pub pool: usize,
}

#[derive(Debug)]
pub struct Registry {
    pub settings: Settings,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Arc<Pool>>,
}

impl Registry {
    /// Builds a snapshot from a validated configuration.
    pub fn build(config: &Config) -> Registry {
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                Arc::new(Pool {
                    name: Arc::from(p.name.as_str()),
                    policy: Policy::new(p.policy),
                    backends: p
                        .backends
                        .iter()
                        .map(|b| Arc::new(Backend::new(b.address, b.weight)))
                        .collect(),
                })
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|l: &ListenerConfig| Listener {
                name: Arc::from(l.name.as_str()),
                addresses: l.addresses.clone(),
                // Validation guarantees every listener names a defined pool.
                pool: config
                    .pools
                    .iter()
                    .position(|p| p.name == l.pool)
                    .unwrap_or(0),
            })
            .collect();
        Registry {
            settings: Settings {
                connect_timeout: config.timeouts.connect,
                idle_timeout: config.timeouts.idle,
                drain_timeout: config.timeouts.drain,
                retries: config.global.retries,
                access_log: config.global.access_log,
            },
            listeners,
            pools,
        }
    }
}

/// The publication point shared by the control side and every reactor.
#[derive(Debug)]
pub struct Shared {
    current: RwLock<Arc<Registry>>,
    epoch: AtomicU64,
}

impl Shared {
    pub fn new(registry: Registry) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(registry)),
            epoch: AtomicU64::new(1),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current snapshot and the epoch it belongs to.
    pub fn snapshot(&self) -> (Arc<Registry>, u64) {
        let guard = self.current.read();
        (Arc::clone(&guard), self.epoch())
    }

    /// Publishes a snapshot built by the caller; readers see it at their
    /// next loop turn.
    pub fn publish(&self, registry: Registry) {
        let next = Arc::new(registry);
        let mut guard = self.current.write();
        *guard = next;
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}
