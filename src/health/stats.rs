//! Check counters per backend, readable by the rest of the process.
//!
//! Owns [`HealthStats`]: a map from (pool, backend address) to that
//! backend's [`CheckStats`] atomics. The checker thread updates the atomics
//! (relaxed) and changes the map only when its list of targets changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Check counters of one backend.
#[derive(Debug, Default)]
pub struct CheckStats {
    /// Checks that connected (and got the expected reply, if any).
    pub passed: AtomicU64,
    /// Checks that failed, whatever the reason; a check not started for
    /// lack of local resources counts in neither.
    pub failed: AtomicU64,
    /// Changes to up (including an `unknown` backend's first pass).
    pub went_up: AtomicU64,
    /// Changes to down made by checks (not passive marks adopted).
    pub went_down: AtomicU64,
}

impl CheckStats {
    pub(super) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) type Key = (Arc<str>, SocketAddr);

/// Check counters of every backend currently checked, by (pool, address).
/// The checker updates them with relaxed atomics; the map itself changes
/// only when the set of targets does.
#[derive(Debug, Default)]
pub struct HealthStats {
    pub(super) rows: Mutex<HashMap<Key, Arc<CheckStats>>>,
}

impl HealthStats {
    /// The counters of backend `addr` of pool `pool`; `None` if it is not
    /// (or not yet) checked.
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Option<Arc<CheckStats>> {
        self.rows.lock().get(&(Arc::from(pool), addr)).cloned()
    }

    /// Every row, sorted by pool then address.
    pub fn rows(&self) -> Vec<(Arc<str>, SocketAddr, Arc<CheckStats>)> {
        let mut rows: Vec<_> = self
            .rows
            .lock()
            .iter()
            .map(|((pool, addr), s)| (Arc::clone(pool), *addr, Arc::clone(s)))
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }
}
