//! What a listener checks when it accepts a client, before any backend is
//! touched: its allow/deny lists, its connection limit, and the per client
//! IP limits.
//!
//! Owns the order of the checks, cheapest first: the address lists (no
//! shared state), the listener's count of open connections (one atomic),
//! then the shared per-IP table (one shard lock). An `accept_proxy`
//! listener checks its connection limit at accept and the rest once the
//! PROXY header gives the client's address (`Admitted::pending`). A
//! listener with none of these has no `Admission` at all, so its accept path costs one branch on
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
    /// The per-IP table and the address counted in it: released under
    /// exactly that address, whatever the session calls its client later.
    per_ip: Option<(Arc<PerIp>, IpAddr)>,
    /// An `accept_proxy` listener's client checks, left for the address
    /// the PROXY header gives.
    pending: Option<Arc<Admission>>,
}

impl Admitted {
    /// Admitted at accept for the listener's `max_connections` only; the
    /// client checks of `admission` wait for the PROXY header.
    pub fn pending(admission: Arc<Admission>) -> Admitted {
        Admitted {
            per_ip: None,
            pending: Some(admission),
        }
    }

    /// The client checks still to run, if any (once).
    pub fn take_pending(&mut self) -> Option<Arc<Admission>> {
        self.pending.take()
    }

    /// The connection closed (or was never opened after all).
    pub fn release(&mut self) {
        if let Some((table, ip)) = self.per_ip.take() {
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
    /// `now_ms` is `timer::millis(now)`.
    pub fn admit(
        &self,
        ip: IpAddr,
        counters: &ListenerCounters,
        now_ms: u64,
    ) -> Result<Admitted, Rejected> {
        if !self.acl.is_empty() && !self.acl.admits(ip) {
            return Err(Rejected::Denied);
        }
        self.reserve(counters)?;
        self.count_ip(ip, now_ms).inspect_err(|_| {
            counters.active.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// The listener's own limit only: counts the connection in
    /// `counters.active` unless it holds `max_connections` already. For
    /// `accept_proxy` listeners, whose clients are known only later.
    pub fn reserve(&self, counters: &ListenerCounters) -> Result<(), Rejected> {
        let max = self.max_connections;
        counters
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| Rejected::ListenerFull)
    }

    /// Whether anything depends on the client's address: allow/deny or
    /// the per-IP table.
    pub fn checks_client(&self) -> bool {
        !self.acl.is_empty() || self.per_ip.is_some()
    }

    /// The checks on the client's address (allow/deny, per-IP limits) for
    /// a connection `reserve` counted already; the caller keeps the
    /// `Admitted` to release at close.
    pub fn admit_client(&self, ip: IpAddr, now_ms: u64) -> Result<Admitted, Rejected> {
        if !self.acl.is_empty() && !self.acl.admits(ip) {
            return Err(Rejected::Denied);
        }
        self.count_ip(ip, now_ms)
    }

    fn count_ip(&self, ip: IpAddr, now_ms: u64) -> Result<Admitted, Rejected> {
        let Some(table) = &self.per_ip else {
            return Ok(Admitted::default());
        };
        table.admit(ip, now_ms)?;
        Ok(Admitted {
            per_ip: Some((Arc::clone(table), ip)),
            pending: None,
        })
    }
}
