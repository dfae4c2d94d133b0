//! The published view of listeners, pools and session settings.
//!
//! Owns the immutable `Registry` snapshot and its publication point
//! (`Shared`). A snapshot is built off the hot path, swapped in under a short
//! parking_lot write lock, and announced by bumping an epoch; each reactor
//! compares the epoch once per loop turn and clones the `Arc` only when it
//! changed, so workers never take the lock per connection and never across
//! I/O. Publishers (reload, admin actions) hold one `publishing` lock across
//! read-modify-publish, so one cannot undo another's change. Pools and
//! backends are `pool` and `backend`'s; this module may build them, swap
//! snapshots and read the process counters (`metrics::counters`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::admission::Admission;
use crate::config::{Config, InitialState, ListenerConfig, PolicyKind, Protocol, UdpConfig};
use crate::metrics::counters::{ListenerCounters, ProcessCounters, WorkerGauges};
use crate::route::{Route, Table};

use crate::backend::{Admin, Backend, State};
use crate::pool::Pool;
use crate::timer::millis;

/// Settings every session reads when it starts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `timeouts.connect`: longest wait for one backend connect attempt;
    /// then the next backend is tried.
    pub connect_timeout: Duration,
    /// `timeouts.idle`: a connected session with no traffic either way for
    /// this long is closed.
    pub idle_timeout: Duration,
    /// `timeouts.drain`: how long sessions get to finish at shutdown, or
    /// after a reload removed their backend or listener; then they are
    /// closed.
    pub drain_timeout: Duration,
    /// `global.retries`: connect attempts on other backends after the
    /// first fails; a UDP datagram tries as many backends for its flow.
    pub retries: u32,
    /// `global.access_log`: write one access line per closed session.
    pub access_log: bool,
    /// `global.zero_copy`: when a session's directions move to splice(2).
    pub zero_copy: crate::config::ZeroCopy,
}

/// A listener as the reactors see it: where it binds and which pool serves it.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique among listeners; how a reload matches it to the listener of
    /// the previous snapshot (counters, routes, bound sockets), and the
    /// `listener` label of logs and metrics.
    pub name: Arc<str>,
    /// Every address its `bind` resolved to; each is bound on every
    /// reactor.
    pub addresses: Vec<SocketAddr>,
    /// Index in this snapshot's `pools` of the pool serving it (the
    /// default when it has routes).
    pub pool: usize,
    /// Shared with the same-named listener of earlier snapshots.
    pub counters: Arc<ListenerCounters>,
    /// TCP sessions or UDP flows.
    pub protocol: Protocol,
    /// A UDP listener's flow settings.
    pub udp: UdpConfig,
    /// A UDP listener's most flows at once, over all reactors:
    /// `udp.max_flows` or the default from the open-file limit.
    pub max_flows: usize,
    /// Clients must start with a PROXY header, within this long.
    pub accept_proxy: Option<Duration>,
    /// What is checked at accept; `None` (the usual case) when nothing is.
    pub admission: Option<Arc<Admission>>,
    /// Where connections go by what they say; `None` (the usual case):
    /// all to `pool`.
    pub routes: Option<Arc<Routes>>,
}

/// A listener's routes, leading to this snapshot's pools.
pub type Routes = Table<Arc<Pool>>;

/// One immutable snapshot of what runs: published whole by [`Shared`],
/// replaced (never changed) by reloads and admin actions.
#[derive(Debug)]
pub struct Registry {
    /// What new sessions read when they start; open ones keep theirs.
    pub settings: Settings,
    /// In config order.
    pub listeners: Vec<Listener>,
    /// In config order; `Listener::pool` indexes it. An `Arc` so that open
    /// sessions keep the pool they started with across snapshots.
    pub pools: Vec<Arc<Pool>>,
}

impl Registry {
    /// Builds a snapshot from a validated configuration.
    pub fn build(config: &Config) -> Registry {
        millis(Instant::now()); // fixes the origin before any backend changes
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                // "unknown" backends take no traffic before their first
                // check; UDP backends without `send` are never checked.
                let checked = p.health.enabled
                    && (config.pool_protocol(&p.name) == Protocol::Tcp || p.health.send.is_some());
                let up = !checked || p.health.initial_state == InitialState::Up;
                let backends: Vec<Arc<Backend>> = p
                    .backends
                    .iter()
                    .flat_map(|b| b.addresses.iter().map(move |&a| (a, b)))
                    .map(|(address, b)| {
                        let backend = Backend::new(address, b.weight)
                            .backup(b.backup)
                            .starting(up);
                        backend.set_max_connections(b.max_connections.unwrap_or(0));
                        Arc::new(backend)
                    })
                    .collect();
                let pool = Pool::new(&p.name, p.policy, backends, p.health.clone());
                let pool = pool.over(config.pool_protocol(&p.name)).with_queue(p.queue);
                Arc::new(pool.sending_proxy(p.send_proxy))
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
                counters: Arc::default(),
                protocol: l.protocol,
                udp: l.udp.clone(),
                max_flows: l
                    .udp
                    .max_flows
                    .unwrap_or_else(crate::limits::default_max_flows),
                accept_proxy: l.accept_proxy,
                admission: Admission::build(&l.limits, None),
                routes: None,
            })
            .collect();
        let mut registry = Registry {
            settings: Settings {
                connect_timeout: config.timeouts.connect,
                idle_timeout: config.timeouts.idle,
                drain_timeout: config.timeouts.drain,
                retries: config.global.retries,
                access_log: config.global.access_log,
                zero_copy: config.global.zero_copy,
            },
            listeners,
            pools,
        };
        registry.link_routes(config, None);
        registry
    }

    /// Points each listener's routes at this snapshot's pools, keeping the
    /// counters of same-named routes of `previous`. Called last when a
    /// snapshot is built, since route tables share the pools' `Arc`s.
    pub fn link_routes(&mut self, config: &Config, previous: Option<&Registry>) {
        let pool = |name: &str| self.pools.iter().find(|p| &*p.name == name).map(Arc::clone);
        for (listener, l) in self.listeners.iter_mut().zip(&config.listeners) {
            let routing = &l.routing;
            let default = self.pools.get(listener.pool).map(Arc::clone);
            let (Some(default), false) = (default, routing.routes.is_empty()) else {
                listener.routes = None;
                continue;
            };
            let before = previous
                .and_then(|p| p.listeners.iter().find(|old| old.name == listener.name))
                .and_then(|old| old.routes.as_deref());
            let routes = routing
                .routes
                .iter()
                .filter_map(|r| {
                    let taken = before
                        .and_then(|b| b.routes.iter().find(|old| *old.name == *r.name))
                        .map_or_else(Arc::default, |old| Arc::clone(&old.taken));
                    Some(Route {
                        name: Arc::from(r.name.as_str()),
                        conditions: r.conditions.clone(),
                        target: pool(&r.pool)?,
                        taken,
                    })
                })
                .collect();
            listener.routes = Some(Arc::new(Table {
                routes,
                default,
                inspect: routing.inspects(),
                inspect_timeout: routing.inspect_timeout,
                defaulted: before.map_or_else(Arc::default, |b| Arc::clone(&b.defaulted)),
            }));
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
    /// Reloads and deadline closes, for `/metrics` and `/stats`.
    pub counters: ProcessCounters,
    /// Each reactor's gauges, in start order.
    workers: Mutex<Vec<Arc<WorkerGauges>>>,
    started: Instant,
}

impl Shared {
    /// Publishes `registry` as the first snapshot (epoch 1) and starts the
    /// uptime clock.
    pub fn new(registry: Registry) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(registry)),
            epoch: AtomicU64::new(1),
            publishing: Mutex::new(()),
            counters: ProcessCounters::default(),
            workers: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    /// Goes up by one at each publish: a reader whose epoch is still
    /// current has the current snapshot. Cheap, with no lock.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Gauges for a new reactor to keep up to date.
    pub fn add_worker(&self) -> Arc<WorkerGauges> {
        let gauges = Arc::new(WorkerGauges::default());
        self.workers.lock().push(Arc::clone(&gauges));
        gauges
    }

    /// Every reactor's gauges, in start order, to be summed when scraped.
    pub fn workers(&self) -> Vec<Arc<WorkerGauges>> {
        self.workers.lock().clone()
    }

    /// Time since [`Shared::new`], roughly since the process started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts `sessions` closed at the drain deadline after a reload
    /// removed their backend or listener (`end=removed`).
    pub fn count_closed_at_deadline(&self, sessions: u64) {
        self.counters
            .closed_at_deadline
            .fetch_add(sessions, Ordering::Relaxed);
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

    /// Publishes what `change` makes of the current snapshot, holding the
    /// publishing lock from the read to the swap: no other publisher (a
    /// reload, an admin action) can publish in between, so whichever
    /// comes second builds on the first's snapshot and neither undoes half
    /// of the other. `change` must not block on I/O: admin actions wait
    /// for it. An error publishes nothing.
    pub fn update<E>(
        &self,
        change: impl FnOnce(&Registry) -> Result<Registry, E>,
    ) -> Result<(), E> {
        let _publisher = self.publishing.lock();
        let (current, _) = self.snapshot();
        let next = change(&current)?;
        self.swap_in(next);
        Ok(())
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
        self.republish_pool(pool, |p| Ok(p.with_policy(kind)))
    }

    /// Gives backend `addr` of pool `pool` a new weight, and publishes the
    /// pool with its picker rebuilt for it. Open sessions are untouched.
    pub fn set_weight(&self, pool: &str, addr: SocketAddr, weight: u32) -> Result<(), String> {
        self.republish_pool(pool, |p| {
            let backend = p
                .backends
                .iter()
                .find(|b| b.addr == addr)
                .ok_or_else(|| format!("pool {pool} has no backend {addr}"))?;
            let others_serve = p.backends.iter().any(|b| b.addr != addr && b.weight() > 0);
            if weight == 0 && !others_serve {
                return Err(format!(
                    "weight 0 would leave pool {pool} with no backend to serve"
                ));
            }
            backend.set_weight(weight);
            Ok(p.with_policy(p.policy.kind()))
        })
    }

    /// Publishes a snapshot in which pool `pool` is replaced by what
    /// `change` makes of it.
    fn republish_pool(
        &self,
        pool: &str,
        change: impl FnOnce(&Pool) -> Result<Pool, String>,
    ) -> Result<(), String> {
        self.update(|current| {
            let index = current
                .pools
                .iter()
                .position(|p| &*p.name == pool)
                .ok_or_else(|| format!("no pool named {pool:?}"))?;
            let mut pools = current.pools.clone();
            let old = &current.pools[index];
            let new = Arc::new(change(old)?);
            pools[index] = Arc::clone(&new);
            let mut listeners = current.listeners.clone();
            // Routes lead to the new pool too, or routed sessions would keep
            // the old policy and weights.
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
            })
        })
    }

    /// Drains, disables or re-enables backend `addr` of pool `pool` (an
    /// atomic of the backend: nothing is published), under the publishing
    /// lock, so that it acts on the snapshot a reload in progress is about
    /// to publish rather than on a backend that reload retires. Returns
    /// the backend's state after.
    pub fn set_admin(&self, pool: &str, addr: SocketAddr, admin: Admin) -> Result<State, String> {
        let _publisher = self.publishing.lock();
        let (current, _) = self.snapshot();
        let backend = current
            .pools
            .iter()
            .find(|p| &*p.name == pool)
            .ok_or_else(|| format!("no pool named {pool:?}"))?
            .backends
            .iter()
            .find(|b| b.addr == addr)
            .ok_or_else(|| format!("pool {pool} has no backend {addr}"))?;
        backend.set_admin(admin);
        Ok(backend.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Pick, Tried};

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
        assert!(e.contains("nope"), "{e}");
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
        assert!(e.unwrap_err().contains("has no backend"));
    }
}
