//! Log lines that never reached their destination, by sink.
//!
//! Owns one process-wide set of counters: `syslog` (queue full, daemon not
//! reading, socket missing or refusing) and `access_file` (a write to the
//! access log file failed). Whoever drops a line adds to it with one
//! relaxed atomic add; `/metrics` and `/stats` read it. Touches nothing
//! else.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lines dropped, by sink.
#[derive(Debug)]
pub struct LogDrops {
    syslog: AtomicU64,
    access_file: AtomicU64,
}

/// The process's counters.
pub static DROPPED: LogDrops = LogDrops {
    syslog: AtomicU64::new(0),
    access_file: AtomicU64::new(0),
};

impl LogDrops {
    /// `lines` more lines did not reach syslog.
    pub fn count_syslog(&self, lines: u64) {
        self.syslog.fetch_add(lines, Ordering::Relaxed);
    }

    /// `lines` more access lines could not be written to the file.
    pub fn count_access_file(&self, lines: u64) {
        self.access_file.fetch_add(lines, Ordering::Relaxed);
    }

    /// Each sink's name (the `sink` label) and its count so far.
    pub fn read(&self) -> [(&'static str, u64); 2] {
        [
            ("syslog", self.syslog.load(Ordering::Relaxed)),
            ("access_file", self.access_file.load(Ordering::Relaxed)),
        ]
    }
}
