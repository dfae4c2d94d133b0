//! Balancing policies: which backend of a pool gets the next session.
//!
//! Owns each pool's picker: its precomputed tables (smooth weighted
//! sequence, cumulative weights, Maglev table) and its cursor. A picker is
//! built from the backend list off the hot path, whenever a pool snapshot is
//! built, so changing a pool's policy is building and publishing a new
//! snapshot. A pick reads the backends' state and active counts and the
//! client's address, and touches nothing else. Shared mutable state is at
//! most one atomic cursor per pool: no locks on the hot path. Random picks
//! use the calling reactor's own generator.
//!
//! Every policy skips backends that cannot take sessions (down, draining,
//! weight 0) and those this client already failed on (`Tried`); `None`
//! means no backend is left, and the session fails fast.

pub mod hash;
mod maglev;
mod tried;
mod weighted;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::config::PolicyKind;

pub use maglev::Maglev;
pub use tried::Tried;

/// What a policy may look at besides the backends, for one pick.
#[derive(Debug)]
pub struct Pick<'a> {
    /// The client's address (unmapped): what source hashing keys on.
    pub client: IpAddr,
    /// Backends this client already failed on; never picked again.
    pub tried: &'a Tried,
    /// The calling reactor's generator, for random policies and the
    /// slow-start draw.
    pub rng: &'a mut fastrand::Rng,
    /// Consider backends whatever their health (a fail-open pool whose
    /// backends are all down); drained and disabled ones stay out.
    pub ignore_health: bool,
    /// Now, in `timer::millis`, and the pool's slow-start period in ms
    /// (0 = none): a backend that came back up less than that long ago is
    /// eligible for only its ramp's share of picks.
    pub now_ms: u64,
    /// The pool's `health.slow_start` in ms; 0: no slow start.
    pub slow_start_ms: u64,
}

impl<'a> Pick<'a> {
    /// A pick for `client` at `now_ms` among the backends not yet `tried`;
    /// the pool fills in its own health and slow-start rules.
    pub fn new(client: IpAddr, tried: &'a Tried, rng: &'a mut fastrand::Rng, now_ms: u64) -> Self {
        Pick {
            client,
            tried,
            rng,
            ignore_health: false,
            now_ms,
            slow_start_ms: 0,
        }
    }
}

/// A pool's picker: a [`PolicyKind`] with the state and tables it picks
/// with, built for one backend list.
#[derive(Debug)]
pub enum Policy {
    /// Backends in configuration order, one shared cursor for all reactors,
    /// so successive sessions visit backends in exactly that order.
    RoundRobin {
        /// Picks made so far; taken modulo the pool size.
        cursor: AtomicUsize,
    },
    /// One precomputed cycle of smooth weighted round robin, walked by a
    /// shared cursor: the exact nginx sequence, without a lock.
    WeightedRoundRobin {
        /// Backend indices, one cycle; empty when every weight is 0.
        sequence: Box<[u32]>,
        /// Steps taken so far; taken modulo the sequence's length.
        cursor: AtomicUsize,
    },
    /// Fewest active sessions relative to weight; the scan starts one
    /// further each pick, so ties go round robin.
    LeastConnections {
        /// Picks made so far; modulo the pool size, where the scan starts.
        cursor: AtomicUsize,
    },
    /// Two distinct random backends, the less loaded relative to weight.
    PowerOfTwo,
    /// Weighted random over the cumulative weights.
    Random {
        /// Running sums of the weights: backend `i` owns
        /// `cumulative[i-1]..cumulative[i]`; the last is the total.
        cumulative: Box<[u64]>,
    },
    /// Consistent hashing of the client IP over a Maglev table.
    SourceHash {
        /// Built from the backends' addresses and weights (not their
        /// order), so nearly every client keeps its backend when another
        /// one joins or leaves the pool.
        table: Maglev,
    },
}

impl Policy {
    /// Builds the picker for `backends` (in configuration order).
    pub fn new(kind: PolicyKind, backends: &[Arc<Backend>]) -> Policy {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight()).collect();
        match kind {
            PolicyKind::RoundRobin => Policy::RoundRobin {
                cursor: AtomicUsize::new(0),
            },
            PolicyKind::WeightedRoundRobin => Policy::WeightedRoundRobin {
                sequence: weighted::smooth_sequence(&weights).into_boxed_slice(),
                cursor: AtomicUsize::new(0),
            },
            PolicyKind::LeastConnections => Policy::LeastConnections {
                cursor: AtomicUsize::new(0),
            },
            PolicyKind::PowerOfTwo => Policy::PowerOfTwo,
            PolicyKind::Random => Policy::Random {
                cumulative: weighted::cumulative(&weights).into_boxed_slice(),
            },
            PolicyKind::SourceHash => {
                let ids: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
                let members: Vec<(&str, u32)> = ids
                    .iter()
                    .zip(&weights)
                    .map(|(id, &w)| (id.as_str(), w))
                    .collect();
                Policy::SourceHash {
                    table: Maglev::new(&members),
                }
            }
        }
    }

    /// The policy this picker implements, as written in the config.
    pub fn kind(&self) -> PolicyKind {
        match self {
            Policy::RoundRobin { .. } => PolicyKind::RoundRobin,
            Policy::WeightedRoundRobin { .. } => PolicyKind::WeightedRoundRobin,
            Policy::LeastConnections { .. } => PolicyKind::LeastConnections,
            Policy::PowerOfTwo => PolicyKind::PowerOfTwo,
            Policy::Random { .. } => PolicyKind::Random,
            Policy::SourceHash { .. } => PolicyKind::SourceHash,
        }
    }

    /// Index of the chosen backend, or `None` when no backend can take the
    /// session.
    pub fn pick(&self, backends: &[Arc<Backend>], pick: &mut Pick<'_>) -> Option<usize> {
        // Slow start: one draw per pick, and a backend ramping up is usable
        // only if its ramp (0..1) exceeds it, so it gets that share of the
        // picks it would otherwise have had. Source hashing is left alone:
        // moving clients away and back would break their stickiness. If the
        // draw leaves nothing (every backend ramping), ramps are ignored.
        let slow = pick.slow_start_ms > 0 && !matches!(self, Policy::SourceHash { .. });
        if slow {
            let draw = pick.rng.f64();
            if let Some(i) = self.pick_with(backends, pick, draw) {
                return Some(i);
            }
        }
        self.pick_with(backends, pick, 0.0)
    }

    fn pick_with(
        &self,
        backends: &[Arc<Backend>],
        pick: &mut Pick<'_>,
        draw: f64,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let tried = pick.tried;
        let ignore_health = pick.ignore_health;
        let (now_ms, slow_start_ms) = (pick.now_ms, pick.slow_start_ms);
        let usable = |i: usize| {
            !tried.contains(i)
                && if ignore_health {
                    backends[i].is_enabled()
                } else {
                    backends[i].is_eligible()
                }
                && backends[i].has_room()
                && (draw == 0.0 || backends[i].ramp(now_ms, slow_start_ms) > draw)
        };
        match self {
            Policy::RoundRobin { cursor } => (0..n).find_map(|_| {
                Some(cursor.fetch_add(1, Ordering::Relaxed) % n).filter(|&i| usable(i))
            }),
            Policy::WeightedRoundRobin { sequence, cursor } => (0..sequence.len()).find_map(|_| {
                let i = sequence[cursor.fetch_add(1, Ordering::Relaxed) % sequence.len()] as usize;
                Some(i).filter(|&i| usable(i))
            }),
            Policy::LeastConnections { cursor } => {
                let start = cursor.fetch_add(1, Ordering::Relaxed) % n.max(1);
                least_loaded(
                    backends,
                    (0..n).map(|k| (start + k) % n).filter(|&i| usable(i)),
                )
            }
            Policy::PowerOfTwo => {
                let a = random_usable(pick.rng, n, None, usable)?;
                match random_usable(pick.rng, n, Some(a), usable) {
                    Some(b) => least_loaded(backends, [a, b].into_iter()),
                    None => Some(a),
                }
            }
            Policy::Random { cumulative } => {
                let total = cumulative.last().copied().unwrap_or(0);
                if total == 0 {
                    return None;
                }
                // A few weighted draws; if they keep hitting unusable
                // backends (many down), any usable one will do.
                (0..4)
                    .map(|_| weighted::owner(cumulative, pick.rng.u64(0..total)))
                    .find(|&i| usable(i))
                    .or_else(|| random_usable(pick.rng, n, None, usable))
            }
            Policy::SourceHash { table } => table.pick(hash::client_key(pick.client), usable),
        }
    }
}

/// The candidate with the fewest active sessions relative to its weight;
/// the first one wins ties, so an idle candidate ends the scan at once.
fn least_loaded(
    backends: &[Arc<Backend>],
    candidates: impl Iterator<Item = usize>,
) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for i in candidates {
        let (active, weight) = (backends[i].active() as u64, u64::from(backends[i].weight()));
        if active == 0 {
            return Some(i);
        }
        let better = match best {
            None => true,
            // active/weight < best_active/best_weight, without division.
            Some((_, ba, bw)) => active * bw < ba * weight,
        };
        if better {
            best = Some((i, active, weight));
        }
    }
    best.map(|(i, _, _)| i)
}

/// A uniformly random usable index other than `except`: a few random draws,
/// then a scan from a random start so a mostly-down pool still finds one.
fn random_usable(
    rng: &mut fastrand::Rng,
    n: usize,
    except: Option<usize>,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let ok = |i: usize| Some(i) != except && usable(i);
    if let Some(i) = (0..4).map(|_| rng.usize(0..n)).find(|&i| ok(i)) {
        return Some(i);
    }
    let start = rng.usize(0..n);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

#[cfg(test)]
mod tests;
