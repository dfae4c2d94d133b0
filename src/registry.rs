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
//! snapshots and read the process counters (`metrics::counters`). What
//! admin actions publish is in `registry_actions.rs`; how a snapshot
//! differs from the configuration it was applied from (the runtime
//! changes) in `registry_running.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::admission::Admission;
use crate::config::{Config, InitialState, ListenerConfig, Protocol, UdpConfig};
use crate::metrics::counters::{ListenerCounters, ProcessCounters, WorkerGauges};
use crate::route::{Route, Table};

use crate::backend::Backend;
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
    /// The configuration last applied (at start, by a reload or a
    /// re-resolution). Admin actions change the pools, never this: the
    /// two differ by exactly the runtime changes, which is how a reload
    /// names those it drops and how `GET /config` shows what runs.
    pub applied: Arc<Config>,
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
            applied: Arc::new(config.clone()),
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
    /// Backends a publish left out while sessions were still open on
    /// them, with their pool's name: shown (as `removed`) until the last
    /// one ends, so an operator sees a removal drain.
    retiring: Mutex<Vec<(Arc<str>, Arc<Backend>)>>,
    /// Snapshots a publish replaced, held until no reader has them: so
    /// the last reference is never a reactor's, and freeing a large one
    /// (thousands of pools) never lands in a reactor's loop turn.
    replaced: Mutex<Vec<Arc<Registry>>>,
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
            retiring: Mutex::new(Vec::new()),
            replaced: Mutex::new(Vec::new()),
        }
    }

    /// Frees the replaced snapshots no reader holds any more. Called after
    /// each publish and a few times a second by the `resolver` thread,
    /// never by a reactor. None can be picked up again meanwhile: readers
    /// only ever take the current one.
    pub fn free_replaced(&self) {
        let unread: Vec<Arc<Registry>> = {
            let mut replaced = self.replaced.lock();
            let (unread, read) = replaced.drain(..).partition(|r| Arc::strong_count(r) == 1);
            *replaced = read;
            unread
        };
        drop(unread);
    }

    /// Backends no longer in the snapshot whose sessions are still open,
    /// with their pool's name; those whose last session ended are
    /// forgotten here.
    pub fn retiring(&self) -> Vec<(Arc<str>, Arc<Backend>)> {
        let mut retiring = self.retiring.lock();
        retiring.retain(|(_, b)| b.active() > 0);
        retiring.clone()
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
        let previous = {
            let mut guard = self.current.write();
            let previous = std::mem::replace(&mut *guard, Arc::clone(&next));
            self.epoch.fetch_add(1, Ordering::AcqRel);
            previous
        };
        self.note_leaving(&previous, &next);
        self.replaced.lock().push(previous);
        self.free_replaced();
    }

    /// Keeps the backends `previous` had and `next` has not, while
    /// sessions remain on them. Runs under the publishing lock, after the
    /// swap: no reader waits for it.
    fn note_leaving(&self, previous: &Registry, next: &Registry) {
        let kept: std::collections::HashSet<*const Backend> = next
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(Arc::as_ptr))
            .collect();
        let mut retiring = self.retiring.lock();
        for pool in &previous.pools {
            for backend in &pool.backends {
                if !kept.contains(&Arc::as_ptr(backend)) && backend.active() > 0 {
                    retiring.push((Arc::clone(&pool.name), Arc::clone(backend)));
                }
            }
        }
    }
}

#[path = "registry_actions.rs"]
mod actions;
pub use actions::{ActionError, NewBackend};

#[path = "registry_running.rs"]
mod running;
pub use running::RuntimeChange;
