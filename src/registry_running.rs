//! What runs, as configuration: the applied file (`Registry::applied`)
//! with the runtime changes of admin actions folded in, and those changes
//! one by one.
//!
//! Owns the comparison of a snapshot's pools with the configuration they
//! were built from: backends added or removed, weights and policies set at
//! run time. `GET /config` shows the folded configuration; a reload names
//! each change the new file does not keep. Drain and disable are operator
//! states the file cannot express, so they are not changes here. Reads a
//! snapshot only: no lock, no I/O.

use std::fmt;
use std::net::SocketAddr;

use crate::config::{BackendConfig, Config, PolicyKind, PoolConfig};
use crate::registry::Registry;

/// One change an admin action made to what the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeChange {
    /// `POST /backend/add`.
    Added {
        /// Its pool.
        pool: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// `POST /backend/remove`.
    Removed {
        /// Its pool.
        pool: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// `POST /backend/weight` on a backend of the file.
    Weight {
        /// Its pool.
        pool: String,
        /// Its address.
        addr: SocketAddr,
        /// The weight it has now.
        weight: u32,
    },
    /// `POST /pool/policy`.
    Policy {
        /// The pool.
        pool: String,
        /// The policy it has now.
        kind: PolicyKind,
    },
}

impl fmt::Display for RuntimeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeChange::Added { pool, addr } => write!(f, "pool {pool} backend {addr} added"),
            RuntimeChange::Removed { pool, addr } => {
                write!(f, "pool {pool} backend {addr} removed")
            }
            RuntimeChange::Weight { pool, addr, weight } => {
                write!(f, "pool {pool} backend {addr} weight {weight}")
            }
            RuntimeChange::Policy { pool, kind } => write!(f, "pool {pool} policy {kind}"),
        }
    }
}

impl RuntimeChange {
    /// Whether configuration `next` says the same, so that applying it
    /// keeps this change.
    pub fn kept_by(&self, next: &Config) -> bool {
        let weight_of = |pool: &str, addr: &SocketAddr| {
            next.pool(pool)
                .and_then(|p| p.backends.iter().find(|b| b.addresses.contains(addr)))
                .map(|b| b.weight)
        };
        match self {
            RuntimeChange::Added { pool, addr } => weight_of(pool, addr).is_some(),
            RuntimeChange::Removed { pool, addr } => weight_of(pool, addr).is_none(),
            RuntimeChange::Weight { pool, addr, weight } => weight_of(pool, addr) == Some(*weight),
            RuntimeChange::Policy { pool, kind } => {
                next.pool(pool).map(|p| p.policy) == Some(*kind)
            }
        }
    }
}

/// Every address a pool of the file has, with the entry it comes from.
fn file_backends(pool: &PoolConfig) -> impl Iterator<Item = (SocketAddr, &BackendConfig)> {
    pool.backends
        .iter()
        .flat_map(|b| b.addresses.iter().map(move |&a| (a, b)))
}

impl Registry {
    /// What admin actions changed since the configuration was applied,
    /// pool by pool in configuration order.
    pub fn runtime_changes(&self) -> Vec<RuntimeChange> {
        let mut changes = Vec::new();
        for pool in &self.pools {
            let Some(file) = self.applied.pool(&pool.name) else {
                continue;
            };
            let name = pool.name.to_string();
            if pool.policy.kind() != file.policy {
                let kind = pool.policy.kind();
                changes.push(RuntimeChange::Policy {
                    pool: name.clone(),
                    kind,
                });
            }
            for backend in &pool.backends {
                let (pool, addr) = (name.clone(), backend.addr);
                match file_backends(file).find(|(a, _)| *a == addr) {
                    None => changes.push(RuntimeChange::Added { pool, addr }),
                    Some((_, b)) if b.weight != backend.weight() => {
                        let weight = backend.weight();
                        changes.push(RuntimeChange::Weight { pool, addr, weight });
                    }
                    Some(_) => {}
                }
            }
            for (addr, _) in file_backends(file) {
                if !pool.backends.iter().any(|b| b.addr == addr) {
                    changes.push(RuntimeChange::Removed {
                        pool: name.clone(),
                        addr,
                    });
                }
            }
        }
        changes
    }

    /// The applied configuration with the runtime changes folded in:
    /// each pool's policy, its backends (removed ones left out, added ones
    /// last, by address) and their weights as they are now. A host name
    /// stays a host name, standing for the addresses it still has.
    pub fn running_config(&self) -> Config {
        let mut config = Config::clone(&self.applied);
        for file in &mut config.pools {
            let Some(pool) = self.pools.iter().find(|p| *p.name == file.name) else {
                continue;
            };
            file.policy = pool.policy.kind();
            let live = |addr: &SocketAddr| pool.backends.iter().find(|b| b.addr == *addr);
            file.backends.retain_mut(|entry| {
                entry.addresses.retain(|a| live(a).is_some());
                if let Some(backend) = entry.addresses.first().and_then(live) {
                    entry.weight = backend.weight();
                }
                !entry.addresses.is_empty()
            });
            for backend in &pool.backends {
                let listed = file
                    .backends
                    .iter()
                    .any(|b| b.addresses.contains(&backend.addr));
                if !listed {
                    let mut entry = BackendConfig::ip(backend.addr, backend.weight());
                    entry.backup = backend.is_backup();
                    let max = backend.max_connections();
                    entry.max_connections = (max > 0).then_some(max);
                    file.backends.push(entry);
                }
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{Config, PolicyKind};
    use crate::registry::{NewBackend, Shared};

    use super::RuntimeChange;

    fn shared() -> Shared {
        Shared::new(crate::registry::actions::tests::registry())
    }

    #[test]
    fn actions_show_as_runtime_changes_and_in_the_running_config() {
        let shared = shared();
        let a: std::net::SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let b: std::net::SocketAddr = "127.0.0.1:9002".parse().expect("addr");
        let c: std::net::SocketAddr = "[::1]:9003".parse().expect("addr");
        assert!(shared.snapshot().0.runtime_changes().is_empty());
        let file = Config::clone(&shared.snapshot().0.applied);
        assert_eq!(shared.snapshot().0.running_config(), file);

        shared.set_policy("p", PolicyKind::Random).expect("pool");
        shared.set_weight("p", b, 7).expect("backend");
        let new = NewBackend {
            addr: c,
            weight: 2,
            backup: true,
        };
        shared.add_backend("p", new).expect("added");
        shared.remove_backend("p", a).expect("removed");

        let (now, _) = shared.snapshot();
        let p = || "p".to_string();
        assert_eq!(
            now.runtime_changes(),
            vec![
                RuntimeChange::Policy {
                    pool: p(),
                    kind: PolicyKind::Random
                },
                RuntimeChange::Weight {
                    pool: p(),
                    addr: b,
                    weight: 7
                },
                RuntimeChange::Added { pool: p(), addr: c },
                RuntimeChange::Removed { pool: p(), addr: a },
            ]
        );
        let running = now.running_config();
        let pool = &running.pools[0];
        assert_eq!(pool.policy, PolicyKind::Random);
        let listed: Vec<_> = pool
            .backends
            .iter()
            .map(|e| (e.addresses[0], e.weight, e.backup))
            .collect();
        assert_eq!(listed, vec![(b, 7, false), (c, 2, true)]);
        running.validate().expect("still a valid configuration");
        // The running configuration keeps every change; the file none.
        assert!(now.runtime_changes().iter().all(|c| c.kept_by(&running)));
        assert!(now.runtime_changes().iter().all(|c| !c.kept_by(&file)));
        assert!(Arc::ptr_eq(&now.applied, &shared.snapshot().0.applied));
    }
}
