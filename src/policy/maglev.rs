//! Sticky source-IP routing by consistent hashing: the Maglev lookup table.
//!
//! Owns the mapping from a client's key to its backend, and the order in
//! which the client falls back when that backend can't take it. It exists
//! so that a client keeps reaching the same backend (its caches, its
//! sessions) across connections, across every balancer of a fleet and
//! across restarts, while a change to the pool moves as few clients as
//! possible: a backend that goes down moves only its own clients, and one
//! added to or removed from the configuration moves little more than its
//! fair share. Everything that decides a client's backend, fallbacks
//! included, comes from the backends' names and weights and the client's
//! key through the specified hashes in `policy::hash`, never from memory
//! addresses, random state or the order of the configuration, which is
//! what lets independent processes agree.
//!
//! Building is O(M log N) for a table of M slots and N backends and happens
//! when the pool is (re)configured; a pick is one division and one table
//! read unless the client's backend can't be used.
//!
//! Reference: D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

use super::hash::{fmix64, hash64};

/// Table sizes, all primes M ≡ 2 (mod 3) (see `Walk`). A pool of N
/// backends (weight 0 included, so that draining one never resizes) gets
/// the first that is at least `SLOTS_PER_BACKEND * N`, or the largest.
///
/// The list starts high on purpose. A key's slot is `key % M`, so a change
/// of M remaps nearly every client; with a floor of 65,537 that happens
/// only when a pool grows past 655 backends (then 1,311, 2,621, …), never in
/// the everyday range of pools, and the table is 128 KiB per pool.
const TABLE_SIZES: [u64; 9] = [
    65_537, 131_111, 262_151, 524_309, 1_048_583, 2_097_257, 4_194_329, 8_388_617, 16_777_259,
];

/// Slots per backend that the table size guarantees: the paper's M > 100 N,
/// which keeps the part of the key space each backend gets within about 1%
/// of its share. (Measured here: a backend's slots are within 2 of its
/// weight share of M; removing one backend moves 0.2–1.2% of the other
/// backends' keys, from 2 to 1,311 backends.)
const SLOTS_PER_BACKEND: u64 = 100;

/// Seeds of the two hashes of a backend's identity that fix its permutation
/// of the slots, and of the one of a client key that fixes the client's
/// fallback probes: ASCII read big-endian, see `policy::hash::hash64`.
const OFFSET_SEED: u64 = u64::from_be_bytes(*b"mgoffset");
const SKIP_SEED: u64 = u64::from_be_bytes(*b"mgskip\0\0");
const PROBE_SEED: u64 = u64::from_be_bytes(*b"mgprobe\0");

/// Fallback probes per backend that can be picked before the final scan.
const PROBES_PER_BACKEND: usize = 4;

/// At least this many fallback probes, so that tiny pools with most
/// backends down seldom need the scan.
const MIN_PROBES: usize = 16;

/// Owner of a slot while the table is being populated.
const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table over one pool's backends.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    /// Backend index (into the `backends` given to [`Maglev::new`]) of each
    /// slot; empty when no backend has a weight.
    slots: Slots,
    /// Number of slots, M, as the divisor of the key.
    m: u64,
    /// Indices of the backends of positive weight, in population order (by
    /// identity): the order of the last-resort scan.
    order: Box<[u32]>,
    /// How many fallback slots a pick looks at before scanning backends.
    probes: usize,
}

/// The table itself, two bytes per slot when backend indices fit.
#[derive(Clone, PartialEq, Eq)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Slots {
    #[inline]
    fn owner(&self, slot: u64) -> Option<usize> {
        let slot = usize::try_from(slot).ok()?;
        match self {
            Slots::Narrow(table) => table.get(slot).map(|&b| usize::from(b)),
            Slots::Wide(table) => table.get(slot).and_then(|&b| usize::try_from(b).ok()),
        }
    }
}

/// A backend's walk through its permutation of the slots: the j-th slot it
/// tries is `offset + skip * j³ (mod M)`, for j = 0, 1, 2, …
///
/// The paper walks `offset + skip * j`. That walk has a flaw that shows in
/// small pools: two backends whose skips are equal (a birthday collision in
/// M - 1 values, about N² / 2M per pool: 1 in 730 pools of 10 backends)
/// walk the same cycle of slots a fixed distance apart, so whenever one
/// takes the other's next slot it takes the one after as well, and any
/// change to the pool swaps long runs of slots between the two; removing a
/// third backend from a pool of 3 then moved a median 20% (up to 51%) of
/// the two survivors' clients, where it normally moves well under 1%. (A
/// skip twice the other's chains half as badly.) Cubing j keeps the walk a
/// permutation, because x ↦ x³ is a bijection modulo a prime M ≡ 2 (mod 3),
/// while making where two walks meet irregular, so no pair of backends
/// chains. It costs three modular additions per step, stepping j³ by its
/// finite differences:
///
/// ```text
/// slot₀ = offset,  d1₀ = skip,  d2₀ = 6 skip,  d3 = 6 skip
/// slotⱼ₊₁ = slotⱼ + d1ⱼ,  d1ⱼ₊₁ = d1ⱼ + d2ⱼ,  d2ⱼ₊₁ = d2ⱼ + d3   (mod M)
/// ```
struct Walk {
    slot: u64,
    d1: u64,
    d2: u64,
    d3: u64,
    m: u64,
}

impl Walk {
    fn new(identity: &str, m: u64) -> Walk {
        let offset = hash64(identity.as_bytes(), OFFSET_SEED) % m;
        let skip = hash64(identity.as_bytes(), SKIP_SEED) % (m - 1) + 1;
        let d3 = 6 * skip % m;
        Walk {
            slot: offset,
            d1: skip,
            d2: d3,
            d3,
            m,
        }
    }

    /// The slot to try now; moves on to the next.
    #[inline(always)]
    fn step(&mut self) -> u64 {
        let slot = self.slot;
        self.slot = add_mod(self.slot, self.d1, self.m);
        self.d1 = add_mod(self.d1, self.d2, self.m);
        self.d2 = add_mod(self.d2, self.d3, self.m);
        slot
    }
}

/// `(a + b) % m` for `a, b < m`.
#[inline(always)]
fn add_mod(a: u64, b: u64, m: u64) -> u64 {
    let sum = a + b;
    if sum >= m {
        sum - m
    } else {
        sum
    }
}

/// A backend's next turn at claiming a slot while populating. The k-th
/// claim (from 0) of a backend of weight w falls at time k / w, so over any
/// stretch of the fill each backend claims in proportion to its weight;
/// ties go to the lower rank. Ordered earliest first.
struct Turn {
    claims: u64,
    weight: u64,
    rank: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // claims ≤ M < 2^25 and weight < 2^32: the products fit in a u64.
        (self.claims * other.weight)
            .cmp(&(other.claims * self.weight))
            .then(self.rank.cmp(&other.rank))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Maglev {
    /// Builds the table for `backends`: (identity, weight) in configuration
    /// order. The identity is the backend's stable name (its socket address
    /// as text, e.g. `"10.0.0.1:80"`); a backend's slots depend only on its
    /// identity and weight and on the other backends' identities and
    /// weights, not on their order in the list. Weight 0 = never chosen.
    /// With no backend of positive weight, every pick is `None`.
    ///
    /// Takes about a millisecond per 65,537 slots in a release build (see
    /// the module's timing test).
    pub fn new(backends: &[(&str, u32)]) -> Maglev {
        Maglev::build(backends, false)
    }

    /// Number of slots M; 0 when no backend can ever be picked.
    pub fn table_size(&self) -> usize {
        match &self.slots {
            Slots::Narrow(table) => table.len(),
            Slots::Wide(table) => table.len(),
        }
    }

    /// Index (into the `backends` given to [`Maglev::new`]) of the first
    /// backend in `key`'s preference order for which `usable(index)` is
    /// true, or `None` if there is none. `usable` is never asked about a
    /// backend of weight 0, and may be asked about the same backend more
    /// than once.
    ///
    /// A key's first choice is the owner of slot `key % M`: while that
    /// backend is usable the key goes nowhere else, whatever happens to the
    /// others. Otherwise the key probes slots of its own, in an order fixed
    /// by the key, and takes the first usable owner; so the clients of a
    /// backend that is down, draining or already tried spread over the
    /// others in proportion to their weights, and each client's fallback is
    /// the same on every balancer. After `4 N` probes (at least 16) without
    /// luck (N = backends of positive weight) it scans those backends from
    /// a point fixed by the key, so the answer is `None` only if none of
    /// them is usable. The same key and the same usable set always give the
    /// same answer, whatever the order of the configuration.
    ///
    /// `key` should be well mixed, e.g. `policy::hash::client_key`.
    #[inline]
    pub fn pick(&self, key: u64, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.m == 0 {
            return None;
        }
        let first = self.slots.owner(key % self.m)?;
        if usable(first) {
            return Some(first);
        }
        self.fall_back(key, first, &mut usable)
    }

    /// The key's probes after its first choice: `r = fmix64(key ^
    /// PROBE_SEED)`, first slot `(r * M) >> 64` (high half of the 128-bit
    /// product), step `1 + ((r mod 2^32) * (M - 1)) >> 32`, so both are
    /// uniform and independent of the first choice `key % M` and of each
    /// other; then the scan of the backends of positive weight in order of
    /// identity, from the `(r >> 40) % N`-th.
    #[cold]
    fn fall_back(
        &self,
        key: u64,
        first: usize,
        usable: &mut impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let m = self.m;
        let r = fmix64(key ^ PROBE_SEED);
        // Both results are below M: the products have M (or M - 1) as a
        // factor and the other factor below 2^64 (or 2^32).
        let mut slot = ((u128::from(r) * u128::from(m)) >> 64) as u64;
        // M is prime, so any step in 1..M visits every slot before repeating.
        let step = 1 + (((r & 0xffff_ffff) * (m - 1)) >> 32);
        for _ in 0..self.probes {
            if let Some(b) = self.slots.owner(slot) {
                if b != first && usable(b) {
                    return Some(b);
                }
            }
            slot = add_mod(slot, step, m);
        }
        let n = self.order.len();
        let start = usize::try_from(r >> 40).unwrap_or(0) % n;
        self.order[start..]
            .iter()
            .chain(&self.order[..start])
            .filter_map(|&i| usize::try_from(i).ok())
            .find(|&i| usable(i))
    }

    /// [`Maglev::new`], with the choice of a four-byte table forced for
    /// tests (it is otherwise taken only above 65,536 backends).
    fn build(backends: &[(&str, u32)], force_wide: bool) -> Maglev {
        // Backends that take part, as (index, identity, weight), in
        // population order: by identity, so the table does not depend on
        // the order of the configuration (identical identities, which only
        // a faulty configuration has, by index).
        let mut live: Vec<(u32, &str, u64)> = backends
            .iter()
            .enumerate()
            .filter(|&(_, &(_, w))| w > 0)
            .filter_map(|(i, &(id, w))| {
                let i = u32::try_from(i).ok().filter(|&i| i != EMPTY)?;
                Some((i, id, u64::from(w)))
            })
            .collect();
        if live.is_empty() {
            return Maglev {
                slots: Slots::Narrow(Box::new([])),
                m: 0,
                order: Box::new([]),
                probes: 0,
            };
        }
        live.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)));

        let m = table_size_for(backends.len());
        let mut walks: Vec<Walk> = live.iter().map(|&(_, id, _)| Walk::new(id, m)).collect();
        let mut turns: BinaryHeap<Reverse<Turn>> = live
            .iter()
            .enumerate()
            .map(|(rank, &(_, _, weight))| {
                Reverse(Turn {
                    claims: 0,
                    weight,
                    rank,
                })
            })
            .collect();

        let mut owners = vec![EMPTY; usize::try_from(m).unwrap_or(usize::MAX)];
        let mut filled = 0usize;
        while filled < owners.len() {
            let Some(Reverse(mut turn)) = turns.pop() else {
                break;
            };
            let (index, walk) = (live[turn.rank].0, &mut walks[turn.rank]);
            // The table is not full, so the walk meets an empty slot within
            // M steps.
            for _ in 0..m {
                let slot = walk.step() as usize;
                if owners[slot] == EMPTY {
                    owners[slot] = index;
                    filled += 1;
                    break;
                }
            }
            turn.claims += 1;
            turns.push(Reverse(turn));
        }

        let slots = if force_wide || backends.len() > usize::from(u16::MAX) + 1 {
            Slots::Wide(owners.into_boxed_slice())
        } else {
            // Every index is below 65,536 here.
            Slots::Narrow(owners.iter().map(|&b| b as u16).collect())
        };
        Maglev {
            slots,
            m,
            order: live.iter().map(|&(i, _, _)| i).collect(),
            probes: (PROBES_PER_BACKEND * live.len()).max(MIN_PROBES),
        }
    }
}

/// The first size in `TABLE_SIZES` with at least `SLOTS_PER_BACKEND` slots
/// for each of `backends`, or the largest.
fn table_size_for(backends: usize) -> u64 {
    let wanted = u64::try_from(backends)
        .unwrap_or(u64::MAX)
        .saturating_mul(SLOTS_PER_BACKEND);
    let largest = TABLE_SIZES[TABLE_SIZES.len() - 1];
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| m >= wanted)
        .unwrap_or(largest)
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table_size())
            .field("pickable_backends", &self.order.len())
            .finish()
    }
}

#[cfg(test)]
#[path = "maglev_tests.rs"]
mod tests;
