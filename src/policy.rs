//! Balancing policies: which backend of a pool gets the next session.
//!
//! Owns the per-pool policy state (cursors). A policy sees the pool's
//! backends and a mask of those already tried for this client, and touches
//! nothing else. State shared between reactors is one atomic per pool, so a
//! pick is a single uncontended-by-design `fetch_add`, never a lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::PolicyKind;
use crate::registry::Backend;

#[derive(Debug)]
pub enum Policy {
    /// Backends in configuration order, one shared cursor for all reactors,
    /// so successive sessions visit backends in exactly that order.
    RoundRobin { cursor: AtomicUsize },
}

impl Policy {
    pub fn new(kind: PolicyKind) -> Policy {
        match kind {
            PolicyKind::RoundRobin => Policy::RoundRobin {
                cursor: AtomicUsize::new(0),
            },
        }
    }

    /// Index of the chosen backend, or `None` when every eligible backend is
    /// in `tried`.
    pub fn pick(&self, backends: &[Arc<Backend>], tried: &Tried) -> Option<usize> {
        let n = backends.len();
        match self {
            Policy::RoundRobin { cursor } => {
                for _ in 0..n {
                    let i = cursor.fetch_add(1, Ordering::Relaxed) % n;
                    if tried.contains(i) || !backends[i].is_eligible() {
                        continue;
                    }
                    return Some(i);
                }
                None
            }
        }
    }
}

/// The backends (by index in the pool) that already failed one client, so
/// a retry never goes back to them. Pools of up to 64 backends fit in one
/// word; larger pools spill to a heap bitset, allocated on first use
/// (an empty `Vec` does not allocate).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tried {
    small: u64,
    large: Vec<u64>,
}

impl Tried {
    pub fn contains(&self, index: usize) -> bool {
        if index < 64 {
            return self.small & (1 << index) != 0;
        }
        let (word, bit) = (index / 64, index % 64);
        self.large.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn insert(&mut self, index: usize, pool_size: usize) {
        if index < 64 {
            self.small |= 1 << index;
            return;
        }
        let (word, bit) = (index / 64, index % 64);
        if self.large.len() <= word {
            self.large.resize(pool_size.div_ceil(64).max(word + 1), 0);
        }
        self.large[word] |= 1 << bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("127.0.0.1:{}", 9000 + i).parse().expect("addr");
                Arc::new(Backend::new(addr, w))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_in_configuration_order() {
        let b = backends(&[1, 1, 1]);
        let p = Policy::new(PolicyKind::RoundRobin);
        let picks: Vec<_> = (0..7).map(|_| p.pick(&b, &Tried::default())).collect();
        let want = [0, 1, 2, 0, 1, 2, 0].map(Some);
        assert_eq!(picks, want);
    }

    #[test]
    fn round_robin_skips_tried_and_zero_weight_backends() {
        let b = backends(&[1, 0, 1]);
        let p = Policy::new(PolicyKind::RoundRobin);
        let mut tried = Tried::default();
        tried.insert(0, 3);
        assert_eq!(p.pick(&b, &tried), Some(2));
        tried.insert(2, 3);
        assert_eq!(p.pick(&b, &tried), None);
    }

    #[test]
    fn tried_set_covers_pools_larger_than_a_word() {
        let mut tried = Tried::default();
        for i in [0, 63, 64, 69, 200] {
            assert!(!tried.contains(i));
            tried.insert(i, 70);
            assert!(tried.contains(i));
        }
        assert!(!tried.contains(65));
        assert!(!tried.contains(1000));
    }
}
