//! Rates per second over the last five minutes, in fixed buckets, for the
//! status page's charts.
//!
//! Owns [`History`]: per key, the rate of each of the last [`POINTS`] - 1
//! closed buckets of [`STEP`] and of the bucket still open. Like `rates`,
//! it reads no clock and no shared state: the caller (the `stats` thread)
//! passes `now` and the cumulative totals it read, about once a second. It
//! keeps a fixed number of numbers per key and forgets a key as soon as a
//! record lacks it (its backend or listener is gone), so memory follows the
//! configuration, not the uptime.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Width of one bucket.
pub(crate) const STEP: Duration = Duration::from_secs(5);
/// Points per key, the open bucket included: 60 x 5 s is five minutes.
pub(crate) const POINTS: usize = 60;

#[derive(Debug)]
struct Track {
    /// Rates of the closed buckets, oldest first; at most `POINTS - 1`.
    closed: VecDeque<f32>,
    /// The total when the open bucket started for this key, and when.
    start: (Instant, u64),
    /// The latest total, and when.
    last: (Instant, u64),
}

impl Track {
    fn rate(&self) -> f32 {
        let secs = self.last.0.duration_since(self.start.0).as_secs_f64();
        match self.last.1.checked_sub(self.start.1) {
            Some(increase) if secs > 0.0 => (increase as f64 / secs) as f32,
            // No time yet, or a counter that went down (reset): no rate.
            _ => 0.0,
        }
    }
}

/// Five minutes of rates per key.
#[derive(Debug)]
pub(crate) struct History<K> {
    /// When the open bucket started; `None` before the first record.
    opened: Option<Instant>,
    /// When the last record was made.
    last: Option<Instant>,
    tracks: HashMap<K, Track>,
}

impl<K> Default for History<K> {
    fn default() -> Self {
        History {
            opened: None,
            last: None,
            tracks: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> History<K> {
    /// Records each key's cumulative total at `now`, closing the open
    /// bucket first if `STEP` has passed since it opened. A record not
    /// later than the previous one is ignored; a key missing from it is
    /// forgotten.
    pub(crate) fn record(&mut self, now: Instant, totals: impl IntoIterator<Item = (K, u64)>) {
        if self.last.is_some_and(|last| now <= last) {
            return;
        }
        let opened = *self.opened.get_or_insert(now);
        if now.duration_since(opened) >= STEP {
            for track in self.tracks.values_mut() {
                let rate = track.rate();
                track.closed.push_back(rate);
                if track.closed.len() > POINTS - 1 {
                    track.closed.pop_front();
                }
                // What moved between the last record and this one belongs
                // to the new bucket.
                track.start = track.last;
            }
            self.opened = Some(now);
        }
        // Keys seen in this record get `now`; the others are then dropped.
        for (key, total) in totals {
            match self.tracks.get_mut(&key) {
                Some(track) => track.last = (now, total),
                // A key that appears later starts at its first total: no
                // rate until a second one.
                None => {
                    let start = (now, total);
                    self.tracks.insert(
                        key,
                        Track {
                            closed: VecDeque::with_capacity(POINTS - 1),
                            start,
                            last: start,
                        },
                    );
                }
            }
        }
        self.tracks.retain(|_, track| track.last.0 == now);
        self.last = Some(now);
    }

    /// `key`'s rates per second, oldest first, the open bucket last; empty
    /// for an unknown key. A key seen for less than five minutes has fewer
    /// than `POINTS`.
    pub(crate) fn points<Q>(&self, key: &Q) -> Vec<f32>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.tracks.get(key).map_or_else(Vec::new, |track| {
            let mut points = Vec::with_capacity(track.closed.len() + 1);
            points.extend(track.closed.iter().copied());
            points.push(track.rate());
            points
        })
    }

    /// How many keys are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tracks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_steady_counter_gives_its_rate_in_every_bucket() {
        let t0 = Instant::now();
        let mut h = History::default();
        for s in 0..=30u64 {
            h.record(at(t0, s * 1000), [("a", 7 * s)]);
        }
        let points = h.points("a");
        // 30 s: six closed buckets and the open one.
        assert_eq!(points.len(), 7);
        assert!(points.iter().all(|p| (p - 7.0).abs() < 1e-4), "{points:?}");
    }

    #[test]
    fn buckets_show_when_traffic_happened() {
        let t0 = Instant::now();
        let mut h = History::default();
        // Idle for 10 s, 100 a second for 10 s, idle again.
        let mut total = 0;
        for s in 0..=30u64 {
            if (10..20).contains(&s) {
                total += 100;
            }
            h.record(at(t0, s * 1000), [("a", total)]);
        }
        let points = h.points("a");
        assert_eq!(points.len(), 7);
        assert_eq!(points[0], 0.0);
        assert_eq!(points[1], 0.0);
        assert!(points[2] > 50.0 && points[3] > 50.0, "{points:?}");
        assert_eq!(points[5], 0.0);
        // Nothing lost at bucket edges: the rates add up to the total.
        let counted: f32 = points.iter().map(|p| p * 5.0).sum();
        assert!((counted - 1000.0).abs() < 1.0, "{points:?}");
    }

    #[test]
    fn keeps_five_minutes_and_forgets_keys_that_went_away() {
        let t0 = Instant::now();
        let mut h = History::default();
        for s in 0..2000u64 {
            let gone = (s < 100).then_some(("gone", s));
            h.record(at(t0, s * 1000), [("a", s)].into_iter().chain(gone));
            assert!(h.tracks.values().all(|t| t.closed.len() < POINTS));
        }
        assert_eq!(h.points("a").len(), POINTS);
        assert!(h.points("gone").is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_new_key_starts_empty_and_a_reset_counter_gives_zero() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(at(t0, 0), [("a", 500)]);
        assert_eq!(h.points("a"), vec![0.0]);
        h.record(at(t0, 1000), [("a", 10)]);
        assert_eq!(h.points("a"), vec![0.0]);
        h.record(at(t0, 1000), [("a", 999)]);
        h.record(at(t0, 500), [("a", 999)]);
        h.record(at(t0, 2000), [("a", 20)]);
        assert_eq!(h.points("a"), vec![0.0]);
        assert!(h.points("b").is_empty());
    }
}
