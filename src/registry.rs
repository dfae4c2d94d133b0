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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::config::{Config, ListenerConfig, PolicyKind};
use crate::policy::{Pick, Policy};

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
    /// Health: false while checks say the backend is down.
    up: AtomicBool,
    /// Taking no new sessions while open ones finish.
    draining: AtomicBool,
}

impl Backend {
    pub fn new(addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            addr,
            weight,
            active: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
        }
    }

    /// May new sessions be sent here? Up, not draining, weight above 0.
    pub fn is_eligible(&self) -> bool {
        self.weight > 0 && self.is_up() && !self.is_draining()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
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
    /// Clients closed because no backend could take them; shared by every
    /// snapshot of this pool.
    pub no_backend: Arc<AtomicU64>,
}

impl Pool {
    /// Chooses a backend for a new session (see `Policy::pick`).
    pub fn pick(&self, pick: &mut Pick<'_>) -> Option<usize> {
        self.policy.pick(&self.backends, pick)
    }

    /// The same backends (and so the same counters and health) under
    /// another policy.
    pub fn with_policy(&self, kind: PolicyKind) -> Pool {
        Pool {
            name: Arc::clone(&self.name),
            policy: Policy::new(kind, &self.backends),
            backends: self.backends.clone(),
            no_backend: Arc::clone(&self.no_backend),
        }
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
                let backends: Vec<Arc<Backend>> = p
                    .backends
                    .iter()
                    .map(|b| Arc::new(Backend::new(b.address, b.weight)))
                    .collect();
                Arc::new(Pool {
                    name: Arc::from(p.name.as_str()),
                    policy: Policy::new(p.policy, &backends),
                    backends,
                    no_backend: Arc::default(),
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
    /// Serialises publishers (reload, admin actions) so that one's
    /// read-modify-publish cannot undo another's. Reactors never take it.
    publishing: Mutex<()>,
}

impl Shared {
    pub fn new(registry: Registry) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(registry)),
            epoch: AtomicU64::new(1),
            publishing: Mutex::new(()),
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
        let _publisher = self.publishing.lock();
        self.swap_in(registry);
    }

    fn swap_in(&self, registry: Registry) {
        let next = Arc::new(registry);
        let mut guard = self.current.write();
        *guard = next;
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Switches pool `pool` to another policy. The new picker is built
    /// outside the registry lock and published as a new snapshot: sessions
    /// already open keep the pool they started with, the next new session
    /// uses the new policy. Backends, their counters and health carry over.
    pub fn set_policy(&self, pool: &str, kind: PolicyKind) -> Result<(), String> {
        let _publisher = self.publishing.lock();
        let (current, _) = self.snapshot();
        let index = current
            .pools
            .iter()
            .position(|p| &*p.name == pool)
            .ok_or_else(|| format!("no pool named {pool:?}"))?;
        let mut pools = current.pools.clone();
        pools[index] = Arc::new(current.pools[index].with_policy(kind));
        self.swap_in(Registry {
            settings: current.settings.clone(),
            listeners: current.listeners.clone(),
            pools,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Tried;

    fn registry() -> Registry {
        let config = Config::parse(
            r#"(listeners: [(name: "l", bind: "127.0.0.1:1", pool: "p")],
                pools: [(name: "p", backends: [
                    (address: "127.0.0.1:9001", weight: 1),
                    (address: "127.0.0.1:9002", weight: 3),
                ])])"#,
            "test.ron",
        )
        .expect("valid config");
        Registry::build(&config)
    }

    fn picks(pool: &Pool, n: usize) -> Vec<usize> {
        let tried = Tried::default();
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n)
            .filter_map(|_| {
                pool.pick(&mut Pick {
                    client: "127.0.0.1".parse().expect("ip"),
                    tried: &tried,
                    rng: &mut rng,
                })
            })
            .collect()
    }

    #[test]
    fn set_policy_publishes_a_new_picker_and_leaves_open_sessions_pool_alone() {
        let shared = Shared::new(registry());
        let (before, epoch) = shared.snapshot();
        let old_pool = Arc::clone(&before.pools[0]);
        assert_eq!(picks(&old_pool, 4), vec![0, 1, 0, 1]);

        shared
            .set_policy("p", PolicyKind::WeightedRoundRobin)
            .expect("pool exists");
        let (after, new_epoch) = shared.snapshot();
        assert!(new_epoch > epoch, "reactors must see a new epoch");
        assert_eq!(after.pools[0].policy.kind(), PolicyKind::WeightedRoundRobin);
        assert_eq!(picks(&after.pools[0], 4), vec![1, 0, 1, 1]);
        // A session that started before the swap holds the old pool.
        assert_eq!(old_pool.policy.kind(), PolicyKind::RoundRobin);
        // Same backends: counters and health carry over.
        assert!(Arc::ptr_eq(
            &old_pool.backends[1],
            &after.pools[0].backends[1]
        ));
    }

    #[test]
    fn set_policy_on_unknown_pool_changes_nothing() {
        let shared = Shared::new(registry());
        let (_, epoch) = shared.snapshot();
        let e = shared.set_policy("nope", PolicyKind::Random).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        assert_eq!(shared.snapshot().1, epoch);
    }
}
