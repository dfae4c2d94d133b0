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
    /// in `tried`. Only the first 64 backends can be excluded by `tried`.
    pub fn pick(&self, backends: &[Arc<Backend>], tried: u64) -> Option<usize> {
        let n = backends.len();
        match self {
            Policy::RoundRobin { cursor } => {
                for _ in 0..n {
                    let i = cursor.fetch_add(1, Ordering::Relaxed) % n;
                    if is_tried(tried, i) || !backends[i].is_eligible() {
                        continue;
                    }
                    return Some(i);
                }
                None
            }
        }
    }
}

pub fn is_tried(tried: u64, index: usize) -> bool {
    index < 64 && tried & (1 << index) != 0
}

pub fn mark_tried(tried: u64, index: usize) -> u64 {
    if index < 64 {
        tried | (1 << index)
    } else {
        tried
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
        let picks: Vec<_> = (0..7).map(|_| p.pick(&b, 0)).collect();
        let want = [0, 1, 2, 0, 1, 2, 0].map(Some);
        assert_eq!(picks, want);
    }

    #[test]
    fn round_robin_skips_tried_and_zero_weight_backends() {
        let b = backends(&[1, 0, 1]);
        let p = Policy::new(PolicyKind::RoundRobin);
        assert_eq!(p.pick(&b, mark_tried(0, 0)), Some(2));
        assert_eq!(p.pick(&b, mark_tried(mark_tried(0, 0), 2)), None);
    }
}
