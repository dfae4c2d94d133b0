//! Runtime counters the data path updates and the admin side reads.
//!
//! Owns the per-backend and per-listener counters and each reactor's
//! gauges. None is touched per byte: sessions count a connection once when
//! it starts and report the bytes they moved when they close and, while
//! open, once a second from their reactor (`Session::report_traffic`), so
//! a busy transfer costs a few relaxed atomic adds a second, not one per
//! read. Readers sum them when scraped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::text::Histogram;

/// Traffic of one backend from client sessions (never health checks).
#[derive(Debug)]
pub struct BackendCounters {
    /// Sessions whose connect to this backend started.
    pub connections: AtomicU64,
    /// Connects from client sessions that failed or timed out.
    pub connect_failures: AtomicU64,
    /// Bytes written to the backend (client → backend).
    pub bytes_sent: AtomicU64,
    /// Bytes read from the backend (backend → client).
    pub bytes_received: AtomicU64,
    /// Time from connect start to established, per successful connect.
    pub connect_time: Histogram,
}

impl Default for BackendCounters {
    fn default() -> Self {
        BackendCounters {
            connections: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            connect_time: Histogram::connect_time(),
        }
    }
}

impl BackendCounters {
    pub fn connected_in(&self, elapsed: Duration) {
        self.connect_time.observe(elapsed);
    }

    /// Adds bytes moved since the session last reported.
    pub fn add_traffic(&self, sent: u64, received: u64) {
        if sent > 0 {
            self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        }
        if received > 0 {
            self.bytes_received.fetch_add(received, Ordering::Relaxed);
        }
    }
}

/// Why a listener closed a client without serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No backend of the pool could be connected to.
    NoBackend,
}

impl Rejected {
    pub const ALL: [Rejected; 1] = [Rejected::NoBackend];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::NoBackend => "no_backend",
        }
    }
}

/// Clients of one listener; shared by every snapshot that has a listener
/// of this name, so it runs on across reloads.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub accepted: AtomicU64,
    pub active: AtomicUsize,
    rejected: [AtomicU64; Rejected::ALL.len()],
}

impl ListenerCounters {
    pub fn reject(&self, why: Rejected) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, why: Rejected) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }
}

/// What one reactor reports about itself, written by that reactor only
/// (once per loop turn), so it never bounces between cores.
#[derive(Debug, Default)]
pub struct WorkerGauges {
    pub buffers_in_use: AtomicUsize,
    pub sessions: AtomicUsize,
}
