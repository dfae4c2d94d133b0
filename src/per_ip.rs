//! Per client IP limits of a listener: concurrent connections and a
//! new-connection rate (token bucket), shared by every reactor.
//!
//! Owns the table of client addresses. The kernel spreads one client's
//! connections over every reactor's socket, so a per-reactor table would
//! let a client have N times its limit; the table is shared instead, split
//! into [`SHARDS`] parking_lot mutexes picked by the specified client hash
//! (`policy::hash::client_key`), so two reactors contend only when their
//! clients land in the same shard. It is touched once per accept and, when
//! a connection limit is set, once per close, each a short critical
//! section with no I/O.
//!
//! Memory is bounded: an entry is removed when its last connection closes
//! and its bucket is full again (swept lazily when a shard fills up), and a
//! shard holds at most `MAX_ENTRIES / SHARDS` addresses. At that cap, after
//! a sweep, a client whose address is not in the table is refused
//! (`ip_table_full`), as nginx's `limit_conn` refuses when its zone is
//! exhausted: admitting it untracked would let an attacker with many
//! addresses switch the limits off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::acl::unmapped;
use crate::metrics::counters::Rejected;
use crate::policy::hash::client_key;

/// Mutexes the table is split into.
pub(crate) const SHARDS: usize = 16;
/// Client addresses one listener tracks at most (about 64 bytes each).
pub(crate) const MAX_ENTRIES: usize = 65_536;

/// A token bucket in thousandths of a token, refilled by elapsed
/// milliseconds: integer arithmetic, so refills are exact and never drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub(crate) fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            milli: u64::from(burst) * 1000,
            at_ms: now_ms,
        }
    }

    /// Refills for the time since the last call (`per_second` tokens a
    /// second, at most `burst`), then takes one token if there is one.
    pub(crate) fn take(&mut self, per_second: u32, burst: u32, now_ms: u64) -> bool {
        self.refill(per_second, burst, now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Full again at `now_ms`: nothing would be lost by forgetting it.
    pub(crate) fn is_full(&mut self, per_second: u32, burst: u32, now_ms: u64) -> bool {
        self.refill(per_second, burst, now_ms);
        self.milli >= u64::from(burst) * 1000
    }

    fn refill(&mut self, per_second: u32, burst: u32, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let cap = u64::from(burst) * 1000;
        // per_second tokens a second = per_second thousandths a millisecond.
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(per_second)))
            .min(cap);
        self.at_ms = self.at_ms.max(now_ms);
    }
}

#[derive(Debug)]
struct IpUsage {
    connections: u32,
    bucket: Bucket,
}

/// The limits, atomics so that a reload can change them in place while
/// the counts of open connections carry on (0: that limit is off).
#[derive(Debug, Default)]
pub struct Limits {
    pub max_connections: AtomicU32,
    pub per_second: AtomicU32,
    pub burst: AtomicU32,
}

/// One listener's table; shared by every snapshot that has a listener of
/// this name, so counts survive reloads.
#[derive(Debug)]
pub struct PerIp {
    pub limits: Limits,
    shards: Vec<Mutex<HashMap<IpAddr, IpUsage>>>,
    shard_cap: usize,
}

impl Default for PerIp {
    fn default() -> Self {
        PerIp::with_capacity(MAX_ENTRIES)
    }
}

impl PerIp {
    /// A table of at most `entries` addresses (rounded to whole shards).
    pub fn with_capacity(entries: usize) -> PerIp {
        PerIp {
            limits: Limits::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_cap: (entries / SHARDS).max(1),
        }
    }

    /// Sets the limits (at start and at each reload).
    pub fn set(&self, max_connections: u32, per_second: u32, burst: u32) {
        let l = &self.limits;
        l.max_connections.store(max_connections, Ordering::Relaxed);
        l.per_second.store(per_second, Ordering::Relaxed);
        l.burst.store(burst, Ordering::Relaxed);
    }

    /// Admits a new connection from `ip` or says why not. An admitted
    /// connection must be [`release`](PerIp::release)d when it closes.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Result<(), Rejected> {
        let ip = unmapped(ip);
        let max = self.limits.max_connections.load(Ordering::Relaxed);
        let per_second = self.limits.per_second.load(Ordering::Relaxed);
        let burst = self.limits.burst.load(Ordering::Relaxed);
        let mut shard = self.shard(ip).lock();
        if !shard.contains_key(&ip) && shard.len() >= self.shard_cap {
            shard.retain(|_, e| e.connections > 0 || !e.bucket.is_full(per_second, burst, now_ms));
            if shard.len() >= self.shard_cap {
                return Err(Rejected::IpTableFull);
            }
        }
        let entry = shard.entry(ip).or_insert_with(|| IpUsage {
            connections: 0,
            bucket: Bucket::full(burst, now_ms),
        });
        if max > 0 && entry.connections >= max {
            return Err(Rejected::PerIpLimit);
        }
        if per_second > 0 && !entry.bucket.take(per_second, burst, now_ms) {
            return Err(Rejected::RateLimited);
        }
        entry.connections += 1;
        Ok(())
    }

    /// A connection `admit` let in has closed. The entry goes when nothing
    /// is left to remember: no connection, and no rate limit to keep (a
    /// rate-limited entry goes at the next sweep once its bucket is full).
    pub fn release(&self, ip: IpAddr) {
        let ip = unmapped(ip);
        let mut shard = self.shard(ip).lock();
        if let Some(entry) = shard.get_mut(&ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && self.limits.per_second.load(Ordering::Relaxed) == 0 {
                shard.remove(&ip);
            }
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open connections from `ip`, as counted.
    pub fn connections(&self, ip: IpAddr) -> u32 {
        let ip = unmapped(ip);
        self.shard(ip).lock().get(&ip).map_or(0, |e| e.connections)
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, IpUsage>> {
        &self.shards[(client_key(ip) % SHARDS as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let mut b = Bucket::full(4, 0);
        assert!((0..4).all(|_| b.take(2, 4, 0)));
        assert!(!b.take(2, 4, 0), "burst spent");
        assert!(!b.take(2, 4, 499), "half a token after 499 ms at 2/s");
        assert!(b.take(2, 4, 500), "one token after 500 ms at 2/s");
        assert!(!b.take(2, 4, 500));
        // Never more than the burst, however long it waited.
        assert!(b.is_full(2, 4, 1_000_000));
        assert!((0..4).all(|_| b.take(2, 4, 1_000_000)));
        assert!(!b.take(2, 4, 1_000_000));
        // A clock that goes back refills nothing.
        assert!(!b.take(2, 4, 10));
    }

    #[test]
    fn the_connection_limit_counts_per_address_and_frees_on_release() {
        let t = PerIp::default();
        t.set(2, 0, 0);
        assert_eq!(t.admit(ip(1), 0), Ok(()));
        assert_eq!(t.admit(ip(1), 0), Ok(()));
        assert_eq!(t.admit(ip(1), 0), Err(Rejected::PerIpLimit));
        assert_eq!(t.admit(ip(2), 0), Ok(()), "another address is not affected");
        t.release(ip(1));
        assert_eq!(t.admit(ip(1), 0), Ok(()));
        for _ in 0..2 {
            t.release(ip(1));
        }
        t.release(ip(2));
        assert!(t.is_empty(), "entries go with their last connection");
    }

    #[test]
    fn mapped_addresses_share_the_entry_of_their_ipv4_address() {
        let t = PerIp::default();
        t.set(1, 0, 0);
        let v4: IpAddr = "127.0.0.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        assert_eq!(t.admit(v4, 0), Ok(()));
        assert_eq!(t.admit(mapped, 0), Err(Rejected::PerIpLimit));
    }

    #[test]
    fn a_full_table_sweeps_idle_entries_then_refuses_new_addresses() {
        let t = PerIp::with_capacity(SHARDS); // one address per shard
        t.set(0, 1, 1);
        let held: Vec<IpAddr> = (0..400)
            .map(ip)
            .filter(|&a| t.admit(a, 0).is_ok())
            .collect();
        assert_eq!(held.len(), SHARDS, "one address per shard");
        let stranger = ip(1000);
        assert_eq!(t.admit(stranger, 0), Err(Rejected::IpTableFull));
        for &a in &held {
            t.release(a);
        }
        // Closed, but their buckets are still empty: still remembered.
        assert_eq!(t.admit(stranger, 0), Err(Rejected::IpTableFull));
        // A second later every bucket is full again: swept, room made.
        assert_eq!(t.admit(stranger, 1000), Ok(()));
        assert!(t.len() <= SHARDS);
    }

    quickcheck! {
        fn admitted_rate_never_exceeds_burst_plus_rate_times_time(gaps: Vec<u16>, rate: u8, burst: u8) -> bool {
            let (rate, burst) = (u32::from(rate % 50) + 1, u32::from(burst % 50) + 1);
            let mut b = Bucket::full(burst, 0);
            let mut now = 0u64;
            let mut admitted = 0u64;
            for gap in gaps {
                now += u64::from(gap % 200);
                admitted += u64::from(b.take(rate, burst, now));
            }
            admitted <= u64::from(burst) + now * u64::from(rate) / 1000
        }
    }
}
