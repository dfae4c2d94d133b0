//! Waiting for a backend slot: a pool's queue when every backend is at its
//! `max_connections`.
//!
//! Owns two halves. [`Queue`] is shared by every reactor (one per pool, kept
//! across reloads): how many sessions wait, bounded by the pool's
//! `queue.size`, and a `released` epoch that a session closing on a limited
//! backend bumps when someone waits. [`Waiting`] is a reactor's own FIFO of
//! its queued sessions; the reactor retries it, oldest first, whenever a
//! pool's epoch moved (another reactor wakes it through its `Waker`), after
//! one of its own sessions freed a slot, and on a [`RETRY_EVERY`] tick as a
//! safety net.
//!
//! A slot never goes unnoticed: a session enters the queue (counts itself,
//! SeqCst) and only then tries the backends once more, while a closing
//! session frees its slot (SeqCst) and only then reads the count. One of the
//! two sees the other. Order is FIFO per pool within a reactor; across
//! reactors the first to see the epoch wins the slot (docs/ARCHITECTURE.md,
//! "Limits and queueing").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a reactor with queued sessions retries them even if no slot
/// was announced.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(100);

/// A pool's queue as every reactor sees it.
#[derive(Debug, Default)]
pub struct Queue {
    /// Sessions waiting now, over all reactors (the `pool_queued` gauge).
    queued: AtomicUsize,
    /// Bumped when a slot frees while sessions wait.
    released: AtomicU64,
}

impl Queue {
    /// Takes a place if fewer than `size` sessions wait.
    pub fn enter(&self, size: usize) -> bool {
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < size).then_some(q + 1)
            })
            .is_ok()
    }

    pub fn leave(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A backend slot of this pool was freed (after the decrement); true if
    /// sessions wait, whose reactors should then be woken.
    pub fn slot_freed(&self) -> bool {
        if self.queued.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.released.fetch_add(1, Ordering::SeqCst);
        true
    }

    pub fn epoch(&self) -> u64 {
        self.released.load(Ordering::SeqCst)
    }
}

/// One queued session of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: usize,
    pub id: u64,
}

/// A reactor's queued sessions in arrival order, and the epochs of the
/// pools they wait for as last seen.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    order: VecDeque<Entry>,
    pools: Vec<(Arc<Queue>, u64)>,
    next_tick: Option<Instant>,
    /// A slot freed here (or a session joined): retry at the end of the turn.
    dirty: bool,
}

impl Waiting {
    pub(crate) fn push(&mut self, entry: Entry, queue: &Arc<Queue>, now: Instant) {
        if !self.pools.iter().any(|(q, _)| Arc::ptr_eq(q, queue)) {
            self.pools.push((Arc::clone(queue), queue.epoch()));
        }
        self.order.push_back(entry);
        self.next_tick.get_or_insert(now + RETRY_EVERY);
    }

    /// Something may have freed a slot: retry at the end of this turn.
    pub(crate) fn poke(&mut self) {
        if !self.order.is_empty() {
            self.dirty = true;
        }
    }

    /// Whether a retry pass is due: a slot was freed here, a pool's epoch
    /// moved, or the tick came. Records the epochs seen.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if self.order.is_empty() {
            return false;
        }
        let mut due = std::mem::take(&mut self.dirty) || self.next_tick.is_some_and(|t| now >= t);
        for (queue, seen) in &mut self.pools {
            let epoch = queue.epoch();
            if epoch != *seen {
                *seen = epoch;
                due = true;
            }
        }
        if due {
            self.next_tick = Some(now + RETRY_EVERY);
        }
        due
    }

    /// Takes the entries out for a retry pass, oldest first; the pass puts
    /// back the ones still waiting with [`Waiting::keep`], in order.
    pub(crate) fn take(&mut self) -> VecDeque<Entry> {
        std::mem::take(&mut self.order)
    }

    pub(crate) fn keep(&mut self, entry: Entry) {
        self.order.push_back(entry);
    }

    /// After a pass: forget pools nobody here waits for any more.
    pub(crate) fn settle(&mut self, still_waiting: impl Fn(&Arc<Queue>) -> bool) {
        if self.order.is_empty() {
            self.pools.clear();
            self.next_tick = None;
        } else {
            self.pools.retain(|(q, _)| still_waiting(q));
        }
    }

    /// When the poller must wake up for the next retry tick.
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        self.next_tick.filter(|_| !self.order.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_announces_slots_only_while_someone_waits() {
        let q = Queue::default();
        assert!(!q.slot_freed(), "nobody waits: nothing to announce");
        assert!(q.enter(2));
        assert!(q.enter(2));
        assert!(!q.enter(2), "full");
        assert!(!q.enter(0), "size 0 refuses at once");
        let before = q.epoch();
        assert!(q.slot_freed());
        assert_eq!(q.epoch(), before + 1);
        q.leave();
        q.leave();
        assert!(q.is_empty());
    }

    #[test]
    fn a_reactor_retries_when_an_epoch_moves_or_the_tick_comes() {
        let now = Instant::now();
        let q = Arc::new(Queue::default());
        let mut w = Waiting::default();
        assert!(!w.due(now));
        assert!(q.enter(10));
        w.push(Entry { key: 1, id: 1 }, &q, now);
        assert!(!w.due(now), "nothing happened yet");
        q.slot_freed();
        assert!(w.due(now), "another reactor freed a slot");
        assert!(!w.due(now), "seen");
        assert!(w.due(now + RETRY_EVERY), "tick");
        w.poke();
        assert!(w.due(now + RETRY_EVERY), "own close");
        let entries = w.take();
        assert_eq!(entries.len(), 1);
        w.settle(|_| false);
        assert!(w.next_tick().is_none());
    }
}
