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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::admission::Admission;
use crate::config::{
    AllDown, Config, HealthConfig, InitialState, ListenerConfig, PolicyKind, Protocol, QueueConfig,
    UdpConfig,
};
use crate::metrics::counters::{BackendCounters, ListenerCounters, WorkerGauges};
use crate::policy::{Pick, Policy};
use crate::proxy_protocol::{self, Version};
use crate::queue::Queue;

/// Milliseconds from a process-wide origin (set the first time this is
/// called) to `at`: a time that fits in an atomic.
pub fn millis(at: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
}

/// Settings every session reads when it starts.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub retries: u32,
    pub access_log: bool,
    pub zero_copy: crate::config::ZeroCopy,
}

#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Relative share of new sessions. Atomic so that a reload or an
    /// operator can re-weight a backend without a new identity (counters
    /// and sessions stay attached); pickers precompute from it per snapshot.
    weight: AtomicU32,
    /// Set once a reload dropped this backend: open sessions on it have
    /// until the drain deadline to finish.
    retired: AtomicBool,
    /// Sessions currently connecting to or connected to this backend.
    pub active: AtomicUsize,
    /// Most sessions (and UDP flows) at once; 0: no limit. Atomic, like
    /// the weight, so that a reload changes it in place.
    max_connections: AtomicUsize,
    /// Health: false while checks (or failed connects) say it is down.
    up: AtomicBool,
    /// What the operator asked: an `Admin` as u8.
    admin: AtomicU8,
    /// Consecutive connects from real traffic that failed.
    connect_failures: AtomicU32,
    /// Health changes (up to down or back), by checks or by traffic.
    pub transitions: AtomicU64,
    /// When it last came back up, in `millis`; 0 if it never went down.
    up_since_ms: AtomicU64,
    /// Client traffic, for metrics.
    pub counters: BackendCounters,
}

/// What an operator (reload, admin actions) asked of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    Enabled = 0,
    /// No new sessions; open ones finish.
    Drain = 1,
    /// No new sessions; open ones finish; checks may go on.
    Disabled = 2,
}

/// A backend's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Drain,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Drain => "drain",
            State::Disabled => "disabled",
        }
    }
}

impl Backend {
    pub fn new(addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            addr,
            weight: AtomicU32::new(weight),
            retired: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            admin: AtomicU8::new(Admin::Enabled as u8),
            connect_failures: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(0),
            counters: BackendCounters::default(),
        }
    }

    /// May new sessions be sent here? Up, enabled, weight above 0.
    pub fn is_eligible(&self) -> bool {
        self.is_up() && self.is_enabled()
    }

    /// Enabled with a weight above 0, whatever its health: what a pool in
    /// fail-open mode falls back to when every backend is down.
    pub fn is_enabled(&self) -> bool {
        self.weight() > 0 && self.admin() == Admin::Enabled
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// No later snapshot has this backend: sessions on it are on notice.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Publishes a health change; true if it was a change.
    pub fn set_up(&self, up: bool) -> bool {
        if up {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
        let changed = self.up.swap(up, Ordering::Relaxed) != up;
        if changed {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            if up {
                let now = millis(Instant::now()).max(1);
                self.up_since_ms.store(now, Ordering::Relaxed);
            }
        }
        changed
    }

    /// Share of its weight a backend gets during slow start: 1.0 unless it
    /// came back up less than `slow_start_ms` before `now_ms`.
    pub fn ramp(&self, now_ms: u64, slow_start_ms: u64) -> f64 {
        let since = self.up_since_ms.load(Ordering::Relaxed);
        if slow_start_ms == 0 || since == 0 {
            return 1.0;
        }
        let elapsed = now_ms.saturating_sub(since);
        if elapsed >= slow_start_ms {
            1.0
        } else {
            elapsed.max(1) as f64 / slow_start_ms as f64
        }
    }

    pub fn admin(&self) -> Admin {
        match self.admin.load(Ordering::Relaxed) {
            1 => Admin::Drain,
            2 => Admin::Disabled,
            _ => Admin::Enabled,
        }
    }

    /// Drains, disables or re-enables the backend; open sessions are never
    /// touched, only new ones are affected.
    pub fn set_admin(&self, admin: Admin) {
        self.admin.store(admin as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> State {
        match (self.admin(), self.is_up()) {
            (Admin::Drain, _) => State::Drain,
            (Admin::Disabled, _) => State::Disabled,
            (Admin::Enabled, true) => State::Up,
            (Admin::Enabled, false) => State::Down,
        }
    }

    /// Passive detection: a connect from real traffic failed. With
    /// `threshold` above 0, the failure that makes `threshold` in a row
    /// marks the backend down and returns that count.
    pub fn record_connect_failure(&self, threshold: u32) -> Option<u32> {
        let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        (threshold > 0 && failures >= threshold && self.set_up(false)).then_some(failures)
    }

    /// A connect from real traffic succeeded: the failure streak ends. Reads
    /// first so that the common case writes nothing shared.
    pub fn record_connect_success(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// 0: no limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    pub fn set_max_connections(&self, max: usize) {
        self.max_connections.store(max, Ordering::Relaxed);
    }

    /// Below its `max_connections` (always, without one): what pickers
    /// look at. The slot itself is taken by `try_acquire`.
    pub fn has_room(&self) -> bool {
        let max = self.max_connections();
        max == 0 || self.active() < max
    }

    /// Counts a new session on this backend unless it is full; with no
    /// limit, always. Exact across reactors: a compare-and-swap.
    pub fn try_acquire(&self) -> bool {
        let max = self.max_connections();
        if max == 0 {
            self.active.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
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
    /// When the last "no backend" warning was logged (`millis`), so that a
    /// pool with every backend down logs once a second, not per client.
    no_backend_warned_ms: Arc<AtomicU64>,
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
            no_backend_warned_ms: Arc::default(),
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
    pub fn full_backends_left(&self, tried: &crate::policy::Tried) -> bool {
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

    /// The same pool with its backends reading PROXY headers of `version`.
    /// Checks that talk to a backend then start with a header too, as the
    /// backend refuses anything else: a v2 LOCAL one (or v1 `UNKNOWN`),
    /// which tells it the connection is the balancer's own.
    pub fn sending_proxy(mut self, version: Option<Version>) -> Pool {
        self.send_proxy = version;
        let health = &mut self.health;
        if let Some(version) = version {
            if health.send.is_some() || health.expect.is_some() {
                let local = proxy_protocol::Header {
                    version,
                    addresses: proxy_protocol::Addresses::Local,
                };
                let mut header = [0; proxy_protocol::MAX_ENCODED_LEN];
                let n = proxy_protocol::encode(&local, &mut header);
                let mut send = header[..n].to_vec();
                send.extend_from_slice(health.send.as_deref().unwrap_or_default());
                health.send = Some(send);
            }
        }
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
        self.no_backend_warned_ms = Arc::clone(&previous.no_backend_warned_ms);
        self.waiting = Arc::clone(&previous.waiting);
    }

    /// Counts a client closed for want of a backend and, at most once a
    /// second per pool (whichever reactor gets there first), says so.
    pub fn count_no_backend(&self, now: Instant) {
        let total = self.no_backend.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = millis(now).max(1);
        let last = self.no_backend_warned_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms < last + 1000 {
            return;
        }
        let won = self
            .no_backend_warned_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if won {
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
            no_backend_warned_ms: Arc::clone(&self.no_backend_warned_ms),
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
            .connect_failures
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
            crate::metrics::events::record(change);
        }
    }
}

/// A listener as the reactors see it: where it binds and which pool serves it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub addresses: Vec<SocketAddr>,
    pub pool: usize,
    /// Shared with the same-named listener of earlier snapshots.
    pub counters: Arc<ListenerCounters>,
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
                        let backend = Backend::new(address, b.weight);
                        backend.set_max_connections(b.max_connections.unwrap_or(0));
                        backend.up.store(up, Ordering::Relaxed);
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
            })
            .collect();
        Registry {
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
    pub counters: Counters,
    /// Each reactor's gauges, in start order.
    workers: Mutex<Vec<Arc<WorkerGauges>>>,
    started: Instant,
}

/// Process-wide events, counted for operators.
#[derive(Debug, Default)]
pub struct Counters {
    pub reloads_applied: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Sessions closed at the drain deadline after a reload removed their
    /// backend or listener.
    pub closed_at_deadline: AtomicU64,
}

impl Shared {
    pub fn new(registry: Registry) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(registry)),
            epoch: AtomicU64::new(1),
            publishing: Mutex::new(()),
            counters: Counters::default(),
            workers: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Gauges for a new reactor to keep up to date.
    pub fn add_worker(&self) -> Arc<WorkerGauges> {
        let gauges = Arc::new(WorkerGauges::default());
        self.workers.lock().push(Arc::clone(&gauges));
        gauges
    }

    pub fn workers(&self) -> Vec<Arc<WorkerGauges>> {
        self.workers.lock().clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

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
        let _publisher = self.publishing.lock();
        let (current, _) = self.snapshot();
        let index = current
            .pools
            .iter()
            .position(|p| &*p.name == pool)
            .ok_or_else(|| format!("no pool named {pool:?}"))?;
        let mut pools = current.pools.clone();
        pools[index] = Arc::new(change(&current.pools[index])?);
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
}
