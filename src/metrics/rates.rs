//! Rates per second over the last 1 s, 10 s or 60 s, from cumulative
//! totals (bytes, connections) sampled about once a second.
//!
//! Owns [`Rates`]: the times of the last [`KEEP`] records and each key's
//! totals at those times. It reads no clock and no shared state: the caller
//! (the admin thread) passes `now` and the totals it read, so tests drive it
//! with made-up instants. Memory stays bounded as backends come and go: a
//! key is forgotten once no kept record has it.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Records kept: a 60 s window at one record a second needs both ends.
pub(crate) const KEEP: usize = 61;

/// Recent totals per key, for rates over windows of up to about a minute.
#[derive(Debug)]
pub(crate) struct Rates<K> {
    /// When each kept record was made, oldest first.
    times: VecDeque<Instant>,
    /// Each key's `(time, total)` in the kept records that had it, oldest
    /// first. The key is stored once, not once per record.
    series: HashMap<K, VecDeque<(Instant, u64)>>,
}

impl<K> Default for Rates<K> {
    fn default() -> Self {
        Rates {
            times: VecDeque::with_capacity(KEEP + 1),
            series: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Rates<K> {
    /// Records each key's cumulative total at `now`. A record not later than
    /// the previous one is ignored, since no time passed for a rate; a key
    /// listed twice keeps its last total.
    pub(crate) fn record(&mut self, now: Instant, totals: impl IntoIterator<Item = (K, u64)>) {
        if self.times.back().is_some_and(|&last| now <= last) {
            return;
        }
        self.times.push_back(now);
        for (key, total) in totals {
            let series = self.series.entry(key).or_default();
            match series.back_mut() {
                Some(last) if last.0 == now => last.1 = total,
                _ => series.push_back((now, total)),
            }
        }
        if self.times.len() > KEEP {
            self.times.pop_front();
        }
        let Some(&oldest) = self.times.front() else {
            return;
        };
        self.series.retain(|_, series| {
            while series.front().is_some_and(|&(at, _)| at < oldest) {
                series.pop_front();
            }
            !series.is_empty()
        });
    }

    /// `key`'s increase per second over `window` before the latest record.
    ///
    /// The window starts at the key's newest sample at or before
    /// `now - window`, so that records a little less than a second apart
    /// still give a 1 s rate (over a bit more time); if the key has none
    /// that old (it appeared later, or `window` is longer than what is
    /// kept), at its first sample. The increase is divided by the actual
    /// time between the two samples. It is 0.0 for a key with fewer than
    /// two samples, one missing from the latest record (gone: it carries no
    /// traffic), or a total that went down (a counter that was reset).
    pub(crate) fn rate<Q>(&self, key: &Q, window: Duration) -> f64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (Some(&now), Some(series)) = (self.times.back(), self.series.get(key)) else {
            return 0.0;
        };
        let Some(&(last_at, last)) = series.back().filter(|(at, _)| *at == now) else {
            return 0.0;
        };
        let start = now
            .checked_sub(window)
            .and_then(|from| series.iter().rev().find(|(at, _)| *at <= from))
            .or(series.front());
        let Some(&(first_at, first)) = start else {
            return 0.0;
        };
        let secs = last_at.duration_since(first_at).as_secs_f64();
        match last.checked_sub(first) {
            Some(increase) if secs > 0.0 => increase as f64 / secs,
            _ => 0.0,
        }
    }

    /// How many keys are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const TEN: Duration = Duration::from_secs(10);
    const MINUTE: Duration = Duration::from_secs(60);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn fewer_than_two_samples_give_zero() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        assert_eq!(r.rate("a", SECOND), 0.0);
        r.record(t0, [("a", 100)]);
        assert_eq!(r.rate("a", SECOND), 0.0);
        assert_eq!(r.rate("b", SECOND), 0.0);
    }

    #[test]
    fn steady_counter_gives_its_rate_over_every_window() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        for s in 0..=100 {
            r.record(at(t0, s * 1000), [("a", 5 * s)]);
        }
        for window in [SECOND, TEN, MINUTE] {
            assert!(close(r.rate("a", window), 5.0), "{window:?}");
        }
    }

    #[test]
    fn each_window_counts_only_its_own_span() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        // 10 a second for 50 s, then idle.
        for s in 0..=55 {
            r.record(at(t0, s * 1000), [("a", 10 * s.min(50))]);
        }
        assert_eq!(r.rate("a", SECOND), 0.0);
        assert!(close(r.rate("a", TEN), 50.0 / 10.0));
        // Only 55 s kept so far: the whole of it.
        assert!(close(r.rate("a", MINUTE), 500.0 / 55.0));
    }

    #[test]
    fn a_key_that_appeared_later_starts_at_its_first_sample() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        for s in 0..=15 {
            let b = (s >= 10).then_some(("b", 100 + 3 * s));
            r.record(at(t0, s * 1000), [("a", s)].into_iter().chain(b));
        }
        assert!(close(r.rate("b", MINUTE), 3.0));
        assert!(close(r.rate("b", SECOND), 3.0));
        assert!(close(r.rate("a", MINUTE), 1.0));
    }

    #[test]
    fn uneven_records_divide_by_the_time_actually_elapsed() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.record(at(t0, 0), [("a", 0)]);
        r.record(at(t0, 900), [("a", 90)]);
        r.record(at(t0, 1800), [("a", 180)]);
        // Records 0.9 s apart: 1 s back from 1.8 s is 0.8 s, and the newest
        // sample by then is the one at 0.
        assert!(close(r.rate("a", SECOND), 180.0 / 1.8));
        r.record(at(t0, 3000), [("a", 300)]);
        // 1 s back from 3.0 s is 2.0 s: the window starts at 1.8 s.
        assert!(close(r.rate("a", SECOND), 120.0 / 1.2));
    }

    #[test]
    fn a_counter_that_went_down_gives_zero_not_a_negative_rate() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.record(at(t0, 0), [("a", 1000)]);
        r.record(at(t0, 1000), [("a", 10)]);
        assert_eq!(r.rate("a", SECOND), 0.0);
        assert_eq!(r.rate("a", MINUTE), 0.0);
    }

    #[test]
    fn a_key_missing_from_the_latest_record_has_no_rate() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.record(at(t0, 0), [("a", 0), ("b", 0)]);
        r.record(at(t0, 1000), [("a", 10), ("b", 10)]);
        r.record(at(t0, 2000), [("a", 20)]);
        assert_eq!(r.rate("b", TEN), 0.0);
        // Back again: its total kept counting meanwhile.
        r.record(at(t0, 3000), [("a", 30), ("b", 30)]);
        assert!(close(r.rate("b", SECOND), 20.0 / 2.0));
        assert!(close(r.rate("b", TEN), 10.0));
    }

    #[test]
    fn keeps_61_records_and_forgets_keys_none_of_them_has() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        for s in 0..200u64 {
            let gone = (s < 10).then_some(("gone".to_string(), s));
            r.record(
                at(t0, s * 1000),
                [("a".to_string(), s)].into_iter().chain(gone),
            );
            assert!(r.times.len() <= KEEP);
            assert!(r.series.values().all(|series| series.len() <= KEEP));
        }
        assert_eq!(r.times.len(), KEEP);
        assert_eq!(r.len(), 1);
        assert!(close(r.rate("a", MINUTE), 1.0));
        // Longer than what is kept: over all of it.
        assert!(close(r.rate("a", 10 * MINUTE), 1.0));
    }

    #[test]
    fn a_record_no_later_than_the_last_is_ignored_and_duplicates_keep_the_last() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.record(at(t0, 1000), [("a", 0)]);
        r.record(at(t0, 1000), [("a", 999)]);
        r.record(at(t0, 500), [("a", 999)]);
        r.record(at(t0, 2000), [("a", 7), ("a", 5)]);
        assert!(close(r.rate("a", SECOND), 5.0));
        assert_eq!(r.times.len(), 2);
    }
}
