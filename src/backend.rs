//! One backend server and what is known of it at run time.
//!
//! Owns a backend's identity (its address) and the state every thread
//! shares about it, each in its own atomic: weight and session limit (set
//! by reloads and admin actions, in place), whether it is a backup (taken
//! only when no primary of its pool can be; set by reloads, in place, and
//! read by pools when they are built), health (set by the health
//! thread and by passive detection), operator state (drain, disable), the
//! failed-connect streak, active sessions and traffic counters. A `Backend`
//! is shared as `Arc<Backend>` by every snapshot that keeps it, so all of
//! that survives reloads. It takes no lock and does no I/O; it may read the
//! clock (`timer::millis`) and hold its counters (`metrics::counters`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

use crate::metrics::counters::BackendCounters;
use crate::timer::millis;

/// One backend server of one pool, shared as `Arc<Backend>` by the
/// snapshots, sessions and health checks that use it.
#[derive(Debug)]
pub struct Backend {
    /// Where sessions connect to. With the pool's name, its identity:
    /// a reload keeps the same `Backend` (counters, open sessions) for an
    /// address its pool still lists.
    pub addr: SocketAddr,
    /// Relative share of new sessions. Atomic so that a reload or an
    /// operator can re-weight a backend without a new identity (counters
    /// and sessions stay attached); pickers precompute from it per snapshot.
    weight: AtomicU32,
    /// A backup: its pool sends it new sessions only while none of its
    /// primaries is eligible. Pools read it once, when they are built (a
    /// pool's tiers are fixed for its snapshot); a reload that changes it
    /// sets it in place, like the weight, and builds new pools.
    backup: AtomicBool,
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
    connect_streak: AtomicU32,
    /// Health changes (up to down or back), by checks or by traffic.
    pub transitions: AtomicU64,
    /// When it last came back up, in `timer::millis`; 0 if it never went down.
    up_since_ms: AtomicU64,
    /// Client traffic, for metrics.
    pub counters: BackendCounters,
}

/// What an operator (reload, admin actions) asked of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    /// Takes new sessions while healthy: the default, and what `enable`
    /// restores.
    Enabled = 0,
    /// No new sessions; open ones finish.
    Drain = 1,
    /// No new sessions; open ones finish; checks may go on.
    Disabled = 2,
}

/// A backend's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Enabled and healthy: takes new sessions (if its weight is above 0).
    Up,
    /// Enabled, but health checks or failed connects marked it down.
    Down,
    /// Drained by the operator, whatever its health.
    Drain,
    /// Disabled by the operator, whatever its health.
    Disabled,
    /// Gone from the configuration (a reload or `/backend/remove`); its
    /// open sessions finish, until the drain deadline.
    Removed,
}

impl State {
    /// The lowercase name shown by the admin API, status page and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Drain => "drain",
            State::Disabled => "disabled",
            State::Removed => "removed",
        }
    }
}

impl Backend {
    /// A backend that is up, enabled, with no session limit and zeroed
    /// counters; `weight` as in the config, `0..=MAX_WEIGHT` (0: no new
    /// sessions).
    pub fn new(addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            addr,
            weight: AtomicU32::new(weight),
            backup: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            admin: AtomicU8::new(Admin::Enabled as u8),
            connect_streak: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(0),
            counters: BackendCounters::default(),
        }
    }

    /// The same backend starting `up` or down, before anyone reads it:
    /// not a transition, so nothing is counted or logged.
    pub fn starting(self, up: bool) -> Backend {
        self.up.store(up, Ordering::Relaxed);
        self
    }

    /// The same backend as a backup (`true`) or a primary, before anyone
    /// reads it.
    pub fn backup(self, backup: bool) -> Backend {
        self.backup.store(backup, Ordering::Relaxed);
        self
    }

    /// A backup: it takes new sessions only while no primary of its pool
    /// is eligible. A reload may change it; pools read it when built.
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }

    /// Moves the backend to the backup tier or back; only pools built
    /// afterwards see it. True if it was a change.
    pub fn set_backup(&self, backup: bool) -> bool {
        self.backup.swap(backup, Ordering::Relaxed) != backup
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

    /// Current relative share of new sessions; 0 takes none.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Re-weights in place (reload or admin `weight` action); pickers see
    /// it once a new snapshot rebuilds them.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// No later snapshot has this backend: sessions on it are on notice.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether a reload dropped it (see [`retire`](Backend::retire)).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Health only, ignoring operator state and weight.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Publishes a health change; true if it was a change.
    pub fn set_up(&self, up: bool) -> bool {
        if up {
            self.connect_streak.store(0, Ordering::Relaxed);
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

    /// What the operator last asked (enabled unless drained or disabled).
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

    /// Operator state and health combined: the operator's choice wins.
    pub fn state(&self) -> State {
        if self.is_retired() {
            return State::Removed;
        }
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
        let failures = self.connect_streak.fetch_add(1, Ordering::Relaxed) + 1;
        (threshold > 0 && failures >= threshold && self.set_up(false)).then_some(failures)
    }

    /// A connect from real traffic succeeded: the failure streak ends. Reads
    /// first so that the common case writes nothing shared.
    pub fn record_connect_success(&self) {
        if self.connect_streak.load(Ordering::Relaxed) != 0 {
            self.connect_streak.store(0, Ordering::Relaxed);
        }
    }

    /// Sessions and UDP flows connecting to or connected to it now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// 0: no limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// Changes the session limit in place (0: none); sessions already
    /// over a lowered limit are left open.
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
