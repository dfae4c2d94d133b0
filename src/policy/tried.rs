//! The backends one client has already been sent to without success.
//!
//! Owns the per-session set that keeps a retry from returning to a backend
//! that just failed; policies consult it and never pick from it.

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
    /// Whether backend `index` already failed this client.
    pub fn contains(&self, index: usize) -> bool {
        // Nearly every pick is a client's first: one predictable branch.
        if self.small == 0 && self.large.is_empty() {
            return false;
        }
        if index < 64 {
            return self.small & (1 << index) != 0;
        }
        let (word, bit) = (index / 64, index % 64);
        self.large.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Marks backend `index` as failed; `pool_size`, the number of
    /// backends, sizes the heap bitset once, so it grows at most once.
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
