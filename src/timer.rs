//! Per-reactor deadlines for sessions (connect timeout, idle timeout).
//!
//! Owns a min-heap of `(deadline, slab key, session id)`. Resetting an idle
//! timer on every read would cost a heap operation per read, so entries are
//! lazy: a session keeps one live entry and records its deadline; when the
//! entry fires the reactor recomputes the session's real deadline and
//! re-arms if activity pushed it later. Entries whose session is gone or
//! whose deadline no longer matches are stale and dropped when popped.
//!
//! Also owns the process clock in milliseconds ([`millis`]), a time that
//! fits in an atomic (slow start, per-IP rates, the pace of warnings).
//! Pure: no lock, no I/O, nothing else of the crate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds from a process-wide origin (set the first time this is
/// called) to `at`: a time that fits in an atomic.
pub(crate) fn millis(at: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    pub at: Instant,
    pub key: usize,
    pub id: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers::default()
    }

    pub(crate) fn arm(&mut self, at: Instant, key: usize, id: u64) {
        self.heap.push(Reverse(Deadline { at, key, id }));
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Removes and returns the earliest entry, due or not.
    pub(crate) fn pop_earliest(&mut self) -> Option<Deadline> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// How long the poller may sleep before the next entry is due.
    pub(crate) fn next_in(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse(e)| e.at.saturating_duration_since(now))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries `keep` says are live: for owners that end
    /// long before their entries fire (short UDP flows), so stale entries
    /// do not pile up.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Deadline) -> bool) {
        self.heap.retain(|Reverse(e)| keep(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_in_deadline_order_and_not_before() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.arm(t0 + Duration::from_millis(30), 1, 10);
        timers.arm(t0 + Duration::from_millis(10), 2, 20);
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.next_in(t0), Some(Duration::from_millis(10)));
        let now = t0 + Duration::from_millis(40);
        assert_eq!(timers.pop_due(now).map(|e| e.key), Some(2));
        assert_eq!(timers.pop_due(now).map(|e| e.key), Some(1));
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn retain_drops_stale_entries_and_keeps_the_order_of_the_rest() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for key in 0..10 {
            timers.arm(t0 + Duration::from_millis(100 - key as u64), key, 0);
        }
        timers.retain(|e| e.key % 3 == 0);
        assert_eq!(timers.len(), 4);
        let later = t0 + Duration::from_secs(1);
        let order: Vec<usize> =
            std::iter::from_fn(|| timers.pop_due(later).map(|e| e.key)).collect();
        assert_eq!(order, [9, 6, 3, 0]);
    }
}
