//! What a listener checks when it accepts a client, before any backend is
//! touched: its allow/deny lists, its connection limit, and the per client
//! IP limits.
//!
//! Owns the order of the checks, cheapest first: the address lists (no
//! shared state), the listener's count of open connections (one atomic),
//! then the shared per-IP table (one shard lock). A listener with none of
//! these has no `Admission` at all, so its accept path costs one branch on
//! `None`: no lock, no hash.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::acl::Acl;
use crate::config::ListenerLimits;
use crate::metrics::counters::{ListenerCounters, Rejected};
use crate::per_ip::PerIp;

#[derive(Debug)]
pub struct Admission {
    pub acl: Acl,
    /// 0: no limit.
    pub max_connections: usize,
    /// The shared table, when a per-IP limit is set.
    pub per_ip: Option<Arc<PerIp>>,
}

/// What an admitted connection must give back when it closes.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    pub per_ip: Option<Arc<PerIp>>,
}

impl Admitted {
    /// The connection closed (or was never opened after all).
    pub fn release(&self, ip: IpAddr) {
        if let Some(table) = &self.per_ip {
            table.release(ip);
        }
    }
}

impl Admission {
    /// `None` when `limits` asks for nothing. A per-IP table is taken over
    /// from `previous` (the listener of the same name in the snapshot
    /// before a reload), so counts of open connections carry on.
    pub fn build(limits: &ListenerLimits, previous: Option<&Admission>) -> Option<Arc<Admission>> {
        if limits.is_empty() {
            return None;
        }
        let per_ip = limits.per_ip().then(|| {
            let table = previous.and_then(|p| p.per_ip.clone()).unwrap_or_default();
            let rate = limits.rate_per_ip;
            table.set(
                limits.max_connections_per_ip.unwrap_or(0),
                rate.map_or(0, |r| r.per_second),
                rate.map_or(0, |r| r.burst),
            );
            table
        });
        Some(Arc::new(Admission {
            acl: limits.acl.clone(),
            max_connections: limits.max_connections.unwrap_or(0),
            per_ip,
        }))
    }

    /// Admits `ip` and counts it in `counters.active`, or says why not.
    /// `now_ms` is `registry::millis(now)`.
    pub fn admit(
        &self,
        ip: IpAddr,
        counters: &ListenerCounters,
        now_ms: u64,
    ) -> Result<Admitted, Rejected> {
        if !self.acl.is_empty() && !self.acl.admits(ip) {
            return Err(Rejected::Denied);
        }
        let max = self.max_connections;
        let reserved = counters
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (max == 0 || n < max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(Rejected::ListenerFull);
        }
        if let Some(table) = &self.per_ip {
            if let Err(why) = table.admit(ip, now_ms) {
                counters.active.fetch_sub(1, Ordering::Relaxed);
                return Err(why);
            }
        }
        Ok(Admitted {
            per_ip: self.per_ip.clone(),
        })
    }
}
