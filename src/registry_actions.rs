//! The runtime changes admin actions make to the published snapshot:
//! a pool's policy, a backend's weight or operator state, backends added
//! and removed.
//!
//! Owns the rules each action checks (what is unknown, what would conflict)
//! and how its change is published: a new pool in a new snapshot, built
//! under `Shared`'s publishing lock so that it lands wholly before or after
//! a reload, with routes pointed at it. A removed backend is retired as a
//! reload retires one (its open sessions have until the drain deadline).
//! It may touch backends' atomics and publish; no I/O.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::{Admin, Backend, State};
use crate::config::{InitialState, PolicyKind};
use crate::pool::Pool;
use crate::registry::{Registry, Shared};
use crate::route::Table;

/// Why an action was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// No such pool, or no such backend in it.
    NotFound(String),
    /// The change contradicts the pool as it is (an address it already
    /// has, a last backend).
    Conflict(String),
}

impl ActionError {
    /// The HTTP status the admin API answers with: 404 or 409.
    pub fn status(&self) -> u16 {
        match self {
            ActionError::NotFound(_) => 404,
            ActionError::Conflict(_) => 409,
        }
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::NotFound(why) | ActionError::Conflict(why) => f.write_str(why),
        }
    }
}

/// A backend the admin API adds: where, how heavy, which tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewBackend {
    /// Its address, unique in its pool.
    pub addr: SocketAddr,
    /// As in the file, `0..=MAX_WEIGHT`.
    pub weight: u32,
    /// Taken only while no primary of the pool can be.
    pub backup: bool,
}

fn no_backend(pool: &str, addr: SocketAddr) -> ActionError {
    ActionError::NotFound(format!("pool {pool} has no backend {addr}"))
}

/// Where backend `addr` is in pool `p` (named `pool`).
fn index_of(p: &Pool, pool: &str, addr: SocketAddr) -> Result<usize, ActionError> {
    p.backends
        .iter()
        .position(|b| b.addr == addr)
        .ok_or_else(|| no_backend(pool, addr))
}

impl Shared {
    /// Switches pool `pool` to another policy. The new picker is built
    /// outside the registry lock and published as a new snapshot: sessions
    /// already open keep the pool they started with, the next new session
    /// uses the new policy. Backends, their counters and health carry over.
    pub fn set_policy(&self, pool: &str, kind: PolicyKind) -> Result<(), ActionError> {
        self.republish_pool(pool, |p| Ok(p.with_policy(kind)))
    }

    /// Gives backend `addr` of pool `pool` a new weight, and publishes the
    /// pool with its picker rebuilt for it. Open sessions are untouched.
    pub fn set_weight(&self, pool: &str, addr: SocketAddr, weight: u32) -> Result<(), ActionError> {
        self.republish_pool(pool, |p| {
            let backend = &p.backends[index_of(p, pool, addr)?];
            let others_serve = p.backends.iter().any(|b| b.addr != addr && b.weight() > 0);
            if weight == 0 && !others_serve {
                return Err(ActionError::Conflict(format!(
                    "weight 0 would leave pool {pool} with no backend to serve"
                )));
            }
            backend.set_weight(weight);
            Ok(p.with_policy(p.policy.kind()))
        })
    }

    /// Adds a backend to pool `pool`, taking new sessions as soon as the
    /// snapshot is published. It starts as a reload's new backend does:
    /// up, unless the pool's checks run with `initial_state: "unknown"`,
    /// and the health thread starts checking it when it sees the snapshot.
    pub fn add_backend(&self, pool: &str, new: NewBackend) -> Result<(), ActionError> {
        self.republish_pool(pool, |p| {
            if p.backends.iter().any(|b| b.addr == new.addr) {
                return Err(ActionError::Conflict(format!(
                    "pool {pool} already has backend {}",
                    new.addr
                )));
            }
            let up = !p.health.enabled || p.health.initial_state == InitialState::Up;
            let backend = Backend::new(new.addr, new.weight)
                .backup(new.backup)
                .starting(up);
            let mut backends = p.backends.clone();
            backends.push(Arc::new(backend));
            Ok(p.rebuilt(p.policy.kind(), backends))
        })
    }

    /// Removes backend `addr` from pool `pool`: no new session goes to it,
    /// and it is retired as a reload retires a backend, so open sessions
    /// may finish until the drain deadline (`timeouts.drain`). A pool
    /// keeps at least one primary: removing its last is refused.
    pub fn remove_backend(&self, pool: &str, addr: SocketAddr) -> Result<(), ActionError> {
        self.republish_pool(pool, |p| {
            let gone = index_of(p, pool, addr)?;
            let mut backends = p.backends.clone();
            let removed = backends.remove(gone);
            if !backends.iter().any(|b| !b.is_backup()) {
                return Err(ActionError::Conflict(format!(
                    "backend {addr} is the last primary of pool {pool}; add another first"
                )));
            }
            let next = p.rebuilt(p.policy.kind(), backends);
            // Only once nothing can fail: an error publishes nothing.
            removed.retire();
            Ok(next)
        })
    }

    /// Publishes a snapshot in which pool `pool` is replaced by what
    /// `change` makes of it.
    fn republish_pool(
        &self,
        pool: &str,
        change: impl FnOnce(&Pool) -> Result<Pool, ActionError>,
    ) -> Result<(), ActionError> {
        self.update(|current| {
            let index = current
                .pools
                .iter()
                .position(|p| &*p.name == pool)
                .ok_or_else(|| ActionError::NotFound(format!("no pool named {pool:?}")))?;
            let mut pools = current.pools.clone();
            let old = &current.pools[index];
            let new = Arc::new(change(old)?);
            pools[index] = Arc::clone(&new);
            let mut listeners = current.listeners.clone();
            // Routes lead to the new pool too, or routed sessions would keep
            // the old policy and backends.
            for routes in listeners.iter_mut().filter_map(|l| l.routes.as_mut()) {
                let mut table = Table::clone(routes);
                let targets = table.routes.iter_mut().map(|r| &mut r.target);
                for target in targets.chain([&mut table.default]) {
                    if Arc::ptr_eq(target, old) {
                        *target = Arc::clone(&new);
                    }
                }
                *routes = Arc::new(table);
            }
            Ok(Registry {
                settings: current.settings.clone(),
                listeners,
                pools,
                applied: Arc::clone(&current.applied),
            })
        })
    }

    /// Drains, disables or re-enables backend `addr` of pool `pool` (an
    /// atomic of the backend: nothing is published), under the publishing
    /// lock, so that it acts on the snapshot a reload in progress is about
    /// to publish rather than on a backend that reload retires. Returns
    /// the backend's state after.
    pub fn set_admin(
        &self,
        pool: &str,
        addr: SocketAddr,
        admin: Admin,
    ) -> Result<State, ActionError> {
        let _publisher = self.publishing.lock();
        let (current, _) = self.snapshot();
        let backend = current
            .pools
            .iter()
            .find(|p| &*p.name == pool)
            .ok_or_else(|| ActionError::NotFound(format!("no pool named {pool:?}")))?
            .backends
            .iter()
            .find(|b| b.addr == addr)
            .ok_or_else(|| no_backend(pool, addr))?;
        backend.set_admin(admin);
        Ok(backend.state())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::{Pick, Tried};
    use std::time::Duration;

    /// Pool p: 127.0.0.1:9001 of weight 1 and 127.0.0.1:9002 of weight 3.
    pub(in crate::registry) fn registry() -> Registry {
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
                let client = "127.0.0.1".parse().expect("ip");
                pool.pick(&mut Pick::new(client, &tried, &mut rng, 0))
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
        assert_eq!(e.status(), 404);
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(shared.snapshot().1, epoch);
    }

    #[test]
    fn an_admin_action_during_a_publishers_update_waits_and_builds_on_it() {
        let shared = Arc::new(Shared::new(registry()));
        let addr: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let mut admin = None;
        shared
            .update(|current| {
                // A reload between reading the snapshot and publishing.
                let s = Arc::clone(&shared);
                let action = std::thread::spawn(move || s.set_weight("p", addr, 5));
                std::thread::sleep(Duration::from_millis(100));
                assert!(!action.is_finished(), "the action waits for the publish");
                admin = Some(action);
                Ok::<_, String>(Registry {
                    settings: current.settings.clone(),
                    listeners: current.listeners.clone(),
                    pools: current.pools.clone(),
                    applied: Arc::clone(&current.applied),
                })
            })
            .expect("published");
        let action = admin.expect("started").join().expect("admin thread");
        action.expect("backend exists");
        let (after, _) = shared.snapshot();
        assert_eq!(after.pools[0].backends[0].weight(), 5);
        let drained = shared
            .set_admin("p", addr, Admin::Drain)
            .expect("backend exists");
        assert_eq!(drained, State::Drain);
        let e = shared.set_admin("p", "127.0.0.1:1".parse().expect("addr"), Admin::Drain);
        assert!(e.unwrap_err().to_string().contains("has no backend"));
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn an_added_backend_takes_turns_and_keeps_the_pools_counters() {
        let shared = Shared::new(registry());
        let (before, epoch) = shared.snapshot();
        let new = NewBackend {
            addr: addr("127.0.0.1:9003"),
            weight: 1,
            backup: false,
        };
        shared.add_backend("p", new).expect("added");
        let (after, new_epoch) = shared.snapshot();
        assert!(new_epoch > epoch);
        let pool = &after.pools[0];
        assert_eq!(pool.backends.len(), 3);
        assert!(Arc::ptr_eq(&pool.no_backend, &before.pools[0].no_backend));
        assert!(Arc::ptr_eq(&pool.backends[0], &before.pools[0].backends[0]));
        assert_eq!(picks(pool, 3), vec![0, 1, 2]);
        assert!(pool.backends[2].is_up(), "starts up, as after a reload");
        // The same address again is a conflict and publishes nothing.
        let e = shared.add_backend("p", new).unwrap_err();
        assert_eq!(e.status(), 409, "{e}");
        let e = shared.add_backend("q", new).unwrap_err();
        assert_eq!(e.status(), 404, "{e}");
        assert_eq!(shared.snapshot().1, new_epoch);
    }

    #[test]
    fn a_removed_backend_is_retired_and_the_last_primary_stays() {
        let shared = Shared::new(registry());
        let (before, _) = shared.snapshot();
        shared
            .remove_backend("p", addr("127.0.0.1:9001"))
            .expect("removed");
        assert!(before.pools[0].backends[0].is_retired());
        let (after, epoch) = shared.snapshot();
        let left: Vec<SocketAddr> = after.pools[0].backends.iter().map(|b| b.addr).collect();
        assert_eq!(left, vec![addr("127.0.0.1:9002")]);
        let e = shared
            .remove_backend("p", addr("127.0.0.1:9002"))
            .unwrap_err();
        assert_eq!(e.status(), 409, "{e}");
        assert!(!after.pools[0].backends[0].is_retired());
        let e = shared
            .remove_backend("p", addr("127.0.0.1:9001"))
            .unwrap_err();
        assert_eq!(e.status(), 404, "{e}");
        assert_eq!(shared.snapshot().1, epoch, "refusals publish nothing");
    }

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_publisher_or_sweeper_never_by_its_last_reader() {
        let shared = Shared::new(registry());
        let (reader, _) = shared.snapshot();
        let watch = Arc::downgrade(&reader);
        shared.publish(registry());
        // The reader (a reactor) lets go of it: that must not free it.
        drop(reader);
        assert!(watch.upgrade().is_some(), "kept for the sweeper");
        shared.free_replaced();
        assert!(watch.upgrade().is_none(), "freed once no reader has it");

        // Not held by anyone but `Shared`: freed by the publish itself.
        let watch = Arc::downgrade(&shared.snapshot().0);
        shared.publish(registry());
        assert!(watch.upgrade().is_none());
    }
}
