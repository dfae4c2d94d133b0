//! The Prometheus text exposition format (version 0.0.4), and the latency
//! histogram that is written in it.
//!
//! Owns [`Exposition`], a writer that appends families and samples to a
//! `String`, and [`Histogram`], bucket counters that event loops record into
//! with two relaxed atomic adds and no lock. It touches nothing else: the
//! caller decides what to write and in which order. Metric and label names
//! are constants of the code, so they are checked in debug builds only;
//! label values and HELP text can come from configuration (pool names,
//! addresses), so they are always escaped.

use std::collections::HashSet;
use std::fmt::{self, Write};
use std::iter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The Content-Type of a response in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of the connect-time buckets: from a loopback
/// connect to one that needed SYN retransmits.
pub const CONNECT_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A family's type, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (it restarts with the process).
    Counter,
    /// A level that goes up and down: open sessions, buffers in use.
    Gauge,
    /// Bucketed observations, written with [`Exposition::histogram`].
    Histogram,
}

impl Kind {
    /// The type's name on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value. Counts stay integers so that large ones print every
/// digit instead of a rounded float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count or level, written with every digit.
    Int(u64),
    /// Written in the shortest form that reads back exactly: an exponent
    /// outside `1e-6..1e15`, `NaN`, `+Inf` or `-Inf` when it is one.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            // Also turns -0 into 0.
            Value::Float(0.0) => f.write_str("0"),
            // Rust's plain form is the shortest that reads back exactly,
            // but it never uses an exponent: 1e-300 would be 300 digits.
            Value::Float(v) if (1e-6..1e15).contains(&v.abs()) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:e}"),
        }
    }
}

/// A scrape's body being written. Write each family with [`family`] and
/// then all of its samples, before the next family: the format wants a
/// family's lines together.
///
/// [`family`]: Exposition::family
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// Families started so far, so none gets a second header.
    started: HashSet<String>,
    /// The family being written, to catch samples written under another.
    current: Option<(String, Kind)>,
}

impl Exposition {
    /// An empty body, with no family started.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts the family `name` by writing its `# HELP` and `# TYPE` lines.
    /// Starting the family being written again writes nothing.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        debug_assert!(is_metric_name(name), "bad metric name {name:?}");
        if !self.started.insert(name.to_owned()) {
            debug_assert!(
                self.current.as_ref().is_some_and(|(n, _)| n == name),
                "family {name} is written in two places"
            );
            return;
        }
        self.current = Some((name.to_owned(), kind));
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        if !help.is_empty() {
            self.out.push(' ');
        }
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// Writes one sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        debug_assert!(self.belongs(name), "{name} is not in the current family");
        self.series(name, "", labels, None);
        self.value(value.into());
    }

    /// Writes one series of the current family, which must be the histogram
    /// `name`: cumulative `_bucket`s ending with `le="+Inf"`, then `_sum`
    /// (in seconds) and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &Snapshot) {
        debug_assert!(
            self.current
                .as_ref()
                .is_some_and(|(n, k)| n == name && *k == Kind::Histogram),
            "{name} is not the current family or not a histogram"
        );
        for (le, count) in snapshot.buckets() {
            self.series(name, "_bucket", labels, Some(le));
            self.value(Value::Int(count));
        }
        self.series(name, "_sum", labels, None);
        self.value(Value::Float(snapshot.sum().as_secs_f64()));
        self.series(name, "_count", labels, None);
        self.value(Value::Int(snapshot.count()));
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished body, to send with [`CONTENT_TYPE`].
    pub fn into_string(self) -> String {
        self.out
    }

    /// Writes `name` + `suffix` and the labels, up to the value.
    fn series(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], le: Option<f64>) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            let mut sep = '{';
            for &(label, value) in labels {
                debug_assert!(is_label_name(label), "bad label name {label:?}");
                debug_assert!(le.is_none() || label != "le", "le is the bucket's label");
                self.out.push(sep);
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
                sep = ',';
            }
            if let Some(le) = le {
                // A number's text never needs escaping.
                let _ = write!(self.out, "{sep}le=\"{}\"", Value::Float(le));
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }

    fn value(&mut self, value: Value) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "{value}");
    }

    fn belongs(&self, sample: &str) -> bool {
        match &self.current {
            None => false,
            Some((name, Kind::Histogram)) => sample
                .strip_prefix(name.as_str())
                .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count")),
            Some((name, _)) => sample == name,
        }
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// Counts of durations by bucket, recorded into from any thread without a
/// lock: an observation is two relaxed atomic adds. Threads adding to one
/// histogram still share its cache lines, so give each event loop its own
/// and add up their [`Snapshot`]s when scraping.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `bounds` in nanoseconds, what observations are compared with.
    limits: Box<[u64]>,
    /// Observations per bucket, not cumulative: `counts[i]` has those above
    /// bound i-1 and at most bound i; the last one, those above every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of every observation in nanoseconds: wraps after 584 years.
    sum_ns: AtomicU64,
}

impl Histogram {
    /// A histogram with buckets ending at `bounds` seconds, plus `+Inf`.
    ///
    /// # Panics
    ///
    /// If `bounds` are not positive, finite and strictly increasing: they are
    /// constants of the code, not input.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.iter().all(|b| b.is_finite() && *b > 0.0)
                && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must be positive, finite and increasing: {bounds:?}"
        );
        Histogram {
            bounds,
            limits: bounds.iter().map(|b| (b * 1e9).round() as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// A histogram of connect times ([`CONNECT_SECONDS`]).
    pub fn connect_time() -> Histogram {
        Histogram::new(CONNECT_SECONDS)
    }

    /// The buckets' upper bounds in seconds, without the final `+Inf`.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Records one duration in the first bucket whose bound is at least
    /// `elapsed` (`+Inf` past the last), and adds it to the sum.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // A bucket holds what is at most its bound (`le`).
        let bucket = self.limits.partition_point(|&limit| limit < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far. Observations made meanwhile may be in the sum and
    /// not yet in a bucket, or the other way round; the buckets and the
    /// count always agree, since the count is their total.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A [`Histogram`]'s counts at one moment, or the sum of several.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    bounds: &'static [f64],
    /// Per bucket, not cumulative, as in `Histogram::counts`.
    counts: Vec<u64>,
    sum_ns: u64,
}

impl Snapshot {
    /// No observations, in buckets ending at `bounds`: where a sum starts.
    pub fn empty(bounds: &'static [f64]) -> Snapshot {
        Snapshot {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_ns: 0,
        }
    }

    /// The sum of `parts`, which must all have buckets ending at `bounds`.
    pub fn total<'a>(
        bounds: &'static [f64],
        parts: impl IntoIterator<Item = &'a Snapshot>,
    ) -> Result<Snapshot, MismatchedBounds> {
        let mut total = Snapshot::empty(bounds);
        for part in parts {
            total.add(part)?;
        }
        Ok(total)
    }

    /// Adds `other`'s counts to these; both must have the same bounds.
    pub fn add(&mut self, other: &Snapshot) -> Result<(), MismatchedBounds> {
        if self.bounds != other.bounds {
            return Err(MismatchedBounds);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.wrapping_add(*theirs);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
        Ok(())
    }

    /// Observations in all buckets, `+Inf` included: the `_count` sample.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |n, c| n.wrapping_add(*c))
    }

    /// All observations added up, to the nanosecond: the `_sum` sample.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// `(le, cumulative count)` per bucket in seconds, the last `le` being
    /// infinity.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let cumulative = self.counts.iter().scan(0u64, |n, c| {
            *n = n.wrapping_add(*c);
            Some(*n)
        });
        (self.bounds.iter().copied())
            .chain(iter::once(f64::INFINITY))
            .zip(cumulative)
    }
}

/// Snapshots with different bucket bounds cannot be added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MismatchedBounds;

impl fmt::Display for MismatchedBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("histogram snapshots with different bucket bounds")
    }
}

impl std::error::Error for MismatchedBounds {}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: impl Into<Value>) -> String {
        v.into().to_string()
    }

    #[test]
    fn integers_print_every_digit_and_floats_print_short() {
        assert_eq!(text(0u64), "0");
        assert_eq!(text(u64::MAX), "18446744073709551615");
        assert_eq!(text(3.0), "3");
        assert_eq!(text(-0.0), "0");
        assert_eq!(text(0.25), "0.25");
        assert_eq!(text(0.0005), "0.0005");
        assert_eq!(text(-12.5), "-12.5");
        assert_eq!(text(1.5e-9), "1.5e-9");
        assert_eq!(text(2e20), "2e20");
        assert_eq!(text(f64::NAN), "NaN");
        assert_eq!(text(f64::INFINITY), "+Inf");
        assert_eq!(text(f64::NEG_INFINITY), "-Inf");
        for v in [0.1 + 0.2, 1.0 / 3.0, 1.5e-9, 2e20, 123_456.789] {
            assert_eq!(text(v).parse::<f64>(), Ok(v), "{v} does not read back");
        }
    }

    #[test]
    fn header_is_written_once_and_samples_follow_it() {
        let mut e = Exposition::new();
        e.family("b4_up", "1 when the backend takes traffic.", Kind::Gauge);
        e.family("b4_up", "1 when the backend takes traffic.", Kind::Gauge);
        e.sample("b4_up", &[], 1u64);
        e.sample(
            "b4_up",
            &[("pool", "web"), ("backend", "10.0.0.1:80")],
            0u64,
        );
        assert_eq!(
            e.as_str(),
            "# HELP b4_up 1 when the backend takes traffic.\n\
             # TYPE b4_up gauge\n\
             b4_up 1\n\
             b4_up{pool=\"web\",backend=\"10.0.0.1:80\"} 0\n"
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut e = Exposition::new();
        e.family("b4_x", "x", Kind::Counter);
        e.sample("b4_x", &[("pool", "a\\b\"c\nd")], 7u64);
        assert!(
            e.as_str().ends_with("b4_x{pool=\"a\\\\b\\\"c\\nd\"} 7\n"),
            "{}",
            e.as_str()
        );
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut e = Exposition::new();
        e.family("b4_x", "a \"b\"\\c\nd", Kind::Counter);
        assert!(
            e.as_str().starts_with("# HELP b4_x a \"b\"\\\\c\\nd\n"),
            "{}",
            e.as_str()
        );
    }

    #[test]
    fn histogram_writes_cumulative_buckets_ending_with_inf_then_sum_and_count() {
        static BOUNDS: &[f64] = &[0.001, 0.5, 1.0];
        let h = Histogram::new(BOUNDS);
        for ms in [0, 1, 2, 500, 700, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut e = Exposition::new();
        e.family("b4_connect_seconds", "Connect time.", Kind::Histogram);
        e.histogram("b4_connect_seconds", &[("pool", "p")], &h.snapshot());
        let body = e.as_str().split_once("histogram\n").map(|(_, b)| b);
        assert_eq!(
            body,
            Some(
                "b4_connect_seconds_bucket{pool=\"p\",le=\"0.001\"} 2\n\
                 b4_connect_seconds_bucket{pool=\"p\",le=\"0.5\"} 4\n\
                 b4_connect_seconds_bucket{pool=\"p\",le=\"1\"} 5\n\
                 b4_connect_seconds_bucket{pool=\"p\",le=\"+Inf\"} 6\n\
                 b4_connect_seconds_sum{pool=\"p\"} 61.203\n\
                 b4_connect_seconds_count{pool=\"p\"} 6\n"
            )
        );
    }

    #[test]
    fn an_observation_on_a_bound_counts_in_that_bucket() {
        let h = Histogram::connect_time();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_nanos(500_001));
        h.observe(Duration::MAX);
        let buckets: Vec<_> = h.snapshot().buckets().collect();
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[1], (0.001, 2));
        assert_eq!(buckets[CONNECT_SECONDS.len()], (f64::INFINITY, 3));
        assert_eq!(buckets.len(), CONNECT_SECONDS.len() + 1);
    }

    #[test]
    fn snapshots_of_histograms_recorded_from_several_threads_add_up() {
        let shared = Histogram::connect_time();
        let own: Vec<_> = (0..4).map(|_| Histogram::connect_time()).collect();
        std::thread::scope(|s| {
            for (i, mine) in own.iter().enumerate() {
                let shared = &shared;
                s.spawn(move || {
                    for n in 0..1000u64 {
                        let d = Duration::from_micros(n * (i as u64 + 1));
                        mine.observe(d);
                        shared.observe(d);
                    }
                });
            }
        });
        let parts: Vec<_> = own.iter().map(Histogram::snapshot).collect();
        let total = Snapshot::total(CONNECT_SECONDS, &parts);
        assert_eq!(total.as_ref().map(Snapshot::count), Ok(4000));
        assert_eq!(total, Ok(shared.snapshot()));
        // Sum of n * (i + 1) µs over n < 1000 and i < 4.
        assert_eq!(shared.snapshot().sum(), Duration::from_micros(499_500 * 10));
    }

    #[test]
    fn snapshots_with_other_bounds_are_not_added() {
        static OTHER: &[f64] = &[1.0];
        let mut total = Snapshot::empty(CONNECT_SECONDS);
        let other = Histogram::new(OTHER).snapshot();
        assert_eq!(total.add(&other), Err(MismatchedBounds));
        assert_eq!(total, Snapshot::empty(CONNECT_SECONDS));
    }
}
