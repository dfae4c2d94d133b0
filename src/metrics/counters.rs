//! Runtime counters the data path updates and the admin side reads.
//!
//! Owns the per-backend and per-listener counters, each reactor's gauges
//! and the process-wide ones (reloads). None is touched per byte: sessions
//! count a connection once when it starts and report the bytes they moved
//! when they close and, while open, once a second from their reactor
//! (`Session::report_traffic`), so
//! a busy transfer costs a few relaxed atomic adds a second, not one per
//! read. UDP listeners count their datagrams once per batch a reactor
//! handles (up to 64 datagrams), and their flows once each as they open and
//! close. Readers sum them when scraped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::text::Histogram;

/// Traffic of one backend from client sessions (never health checks).
#[derive(Debug)]
pub struct BackendCounters {
    /// Sessions whose connect to this backend started, and UDP flows
    /// opened to it.
    pub connections: AtomicU64,
    /// Connects from client sessions that failed or timed out, and UDP
    /// datagrams met with an ICMP port unreachable.
    pub connect_failures_total: AtomicU64,
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
            connect_failures_total: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            connect_time: Histogram::connect_time(),
        }
    }
}

impl BackendCounters {
    /// Records one successful connect that took `elapsed` from start to
    /// established, in `connect_time`.
    pub fn connected_in(&self, elapsed: Duration) {
        self.connect_time.observe(elapsed);
    }

    /// Adds what a session or flow moved since it last reported: `totals`
    /// are its bytes sent and received so far, `reported` what it had
    /// reported (brought up to date).
    pub fn report(&self, totals: (u64, u64), reported: &mut (u64, u64)) {
        if totals != *reported {
            self.add_traffic(totals.0 - reported.0, totals.1 - reported.1);
            *reported = totals;
        }
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
    /// An `accept_proxy` listener's client sent no valid PROXY header in
    /// time.
    ProxyHeader,
    /// The client's address is denied (or not allowed) by the listener.
    Denied,
    /// The listener holds its `max_connections` already.
    ListenerFull,
    /// The client's address holds its `max_connections_per_ip` already.
    PerIpLimit,
    /// The client's address opened connections faster than `rate_per_ip`.
    RateLimited,
    /// The per-IP table is at its cap and this address is not in it.
    IpTableFull,
    /// Every backend was full and the pool's queue too (or it has none).
    QueueFull,
    /// Waited in the pool's queue for its whole `queue.timeout`.
    QueueTimeout,
}

impl Rejected {
    /// Every reason, in declaration order: `why as usize` indexes it.
    pub const ALL: [Rejected; 9] = [
        Rejected::NoBackend,
        Rejected::ProxyHeader,
        Rejected::Denied,
        Rejected::ListenerFull,
        Rejected::PerIpLimit,
        Rejected::RateLimited,
        Rejected::IpTableFull,
        Rejected::QueueFull,
        Rejected::QueueTimeout,
    ];

    /// The `reason` label in `/metrics` and the key in `/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::NoBackend => "no_backend",
            Rejected::ProxyHeader => "proxy_header",
            Rejected::Denied => "denied",
            Rejected::ListenerFull => "listener_full",
            Rejected::PerIpLimit => "per_ip_limit",
            Rejected::RateLimited => "rate_limited",
            Rejected::IpTableFull => "ip_table_full",
            Rejected::QueueFull => "queue_full",
            Rejected::QueueTimeout => "queue_timeout",
        }
    }
}

/// Clients of one listener; shared by every snapshot that has a listener
/// of this name, so it runs on across reloads.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Clients admitted at accept (the refused are counted by
    /// [`reject`](ListenerCounters::reject) instead). On an `accept_proxy`
    /// listener, counted before the PROXY header is read.
    pub accepted: AtomicU64,
    /// TCP connections open now, admitted and not yet closed, queued ones
    /// included: what `max_connections` is checked against.
    pub active: AtomicUsize,
    rejected: [AtomicU64; Rejected::ALL.len()],
    /// A UDP listener's flows and datagrams (zero for a TCP listener).
    pub udp: UdpCounters,
}

/// Why a UDP listener dropped a datagram instead of relaying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A new flow was refused: the listener holds `max_flows` already.
    MaxFlows,
    /// No backend of the pool could take a new flow.
    NoBackend,
    /// This host could not open a socket for a new flow (descriptors,
    /// memory, local ports).
    NoSocket,
    /// The backend's port is closed (ICMP port unreachable) and no other
    /// backend was left to try.
    Refused,
    /// A socket buffer was full: toward the backend or the client.
    Overflow,
    /// Any other send or receive error.
    Error,
    /// The client's address is denied (or not allowed) by the listener.
    Denied,
}

impl Dropped {
    /// Every reason, in declaration order: `why as usize` indexes it.
    pub const ALL: [Dropped; 7] = [
        Dropped::MaxFlows,
        Dropped::NoBackend,
        Dropped::NoSocket,
        Dropped::Refused,
        Dropped::Overflow,
        Dropped::Error,
        Dropped::Denied,
    ];

    /// The `reason` label in `/metrics` and the key in `/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::MaxFlows => "max_flows",
            Dropped::NoBackend => "no_backend",
            Dropped::NoSocket => "no_socket",
            Dropped::Refused => "refused",
            Dropped::Overflow => "overflow",
            Dropped::Error => "error",
            Dropped::Denied => "denied",
        }
    }
}

/// Datagrams and bytes one way, as a reactor tallies them during a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams relayed.
    pub datagrams: u64,
    /// Their payload bytes (no IP or UDP headers).
    pub bytes: u64,
}

impl Traffic {
    /// Counts one relayed datagram of `bytes` payload bytes.
    pub fn add(&mut self, bytes: usize) {
        self.datagrams += 1;
        self.bytes += bytes as u64;
    }
}

/// What a reactor tallies for one listener during one batch, then adds to
/// the shared counters at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Client → backend.
    pub up: Traffic,
    /// Backend → client.
    pub down: Traffic,
    /// Datagrams dropped, indexed by `Dropped as usize`.
    pub dropped: [u64; Dropped::ALL.len()],
}

impl Tally {
    /// Counts one datagram dropped for `why`.
    pub fn drop(&mut self, why: Dropped) {
        self.dropped[why as usize] += 1;
    }
}

/// A UDP listener's flows and datagrams, over all reactors.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Flows open now: what `max_flows` is checked against.
    pub flows_active: AtomicUsize,
    /// Flows opened since the listener first appeared.
    pub flows_total: AtomicU64,
    /// Flows ended to make room for a new client past `max_flows`.
    pub flows_evicted: AtomicU64,
    /// Client datagrams relayed to a backend.
    pub datagrams_in: AtomicU64,
    /// Backend datagrams relayed back to a client.
    pub datagrams_out: AtomicU64,
    /// Payload bytes of `datagrams_in`.
    pub bytes_in: AtomicU64,
    /// Payload bytes of `datagrams_out`.
    pub bytes_out: AtomicU64,
    dropped: [AtomicU64; Dropped::ALL.len()],
}

impl UdpCounters {
    /// Adds a batch's tally and clears it; touches only what moved.
    pub fn add(&self, tally: &mut Tally) {
        let pairs = [
            (&self.datagrams_in, tally.up.datagrams),
            (&self.bytes_in, tally.up.bytes),
            (&self.datagrams_out, tally.down.datagrams),
            (&self.bytes_out, tally.down.bytes),
        ];
        for (counter, n) in pairs {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        for (counter, &n) in self.dropped.iter().zip(&tally.dropped) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        *tally = Tally::default();
    }

    /// Datagrams dropped for `why` so far.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }
}

impl ListenerCounters {
    /// Counts one client closed without being served, for `why`.
    pub fn reject(&self, why: Rejected) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Clients closed unserved for `why` so far.
    pub fn rejected(&self, why: Rejected) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }
}

/// What one reactor reports about itself, written by that reactor only
/// (once per loop turn), so it never bounces between cores.
#[derive(Debug, Default)]
pub struct WorkerGauges {
    /// I/O buffers lent out of the reactor's pool (each `buffer_size`
    /// bytes).
    pub buffers_in_use: AtomicUsize,
    /// Pipes lent to spliced flows.
    pub pipes_in_use: AtomicUsize,
    /// TCP sessions the reactor holds, from accept to close.
    pub sessions: AtomicUsize,
    /// UDP flows the reactor holds.
    pub flows: AtomicUsize,
    /// The longest the reactor took to take in a new snapshot (a reload
    /// or an admin action), in nanoseconds: the pause its clients saw.
    pub snapshot_stall_max_ns: AtomicU64,
}

impl WorkerGauges {
    /// Records a snapshot taken in over `took`, if it is the longest yet.
    pub fn note_snapshot_stall(&self, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.snapshot_stall_max_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// Process-wide events, counted for operators: reloads and the sessions
/// they closed at the drain deadline.
#[derive(Debug, Default)]
pub struct ProcessCounters {
    /// SIGHUP reloads whose file loaded and was applied (a listener that
    /// could not be bound rolls back alone and still counts).
    pub reloads_applied: AtomicU64,
    /// SIGHUP reloads whose file failed to read, parse or validate; the
    /// running configuration stayed.
    pub reloads_failed: AtomicU64,
    /// Sessions closed at the drain deadline after a reload removed their
    /// backend or listener.
    pub closed_at_deadline: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_tally_is_added_once_and_cleared() {
        let counters = UdpCounters::default();
        let mut tally = Tally::default();
        tally.up.add(100);
        tally.up.add(20);
        tally.down.add(7);
        tally.drop(Dropped::MaxFlows);
        tally.drop(Dropped::MaxFlows);
        tally.drop(Dropped::Overflow);
        counters.add(&mut tally);
        assert_eq!(tally, Tally::default());
        assert_eq!(counters.datagrams_in.load(Ordering::Relaxed), 2);
        assert_eq!(counters.bytes_in.load(Ordering::Relaxed), 120);
        assert_eq!(counters.datagrams_out.load(Ordering::Relaxed), 1);
        assert_eq!(counters.bytes_out.load(Ordering::Relaxed), 7);
        assert_eq!(counters.dropped(Dropped::MaxFlows), 2);
        assert_eq!(counters.dropped(Dropped::Overflow), 1);
        assert_eq!(counters.dropped(Dropped::Error), 0);
    }
}
