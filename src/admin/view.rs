//! One consistent reading of every counter, and the rates over time.
//!
//! Owns [`View`], read from the current registry snapshot, the health
//! checker's counters and the reactors' gauges without holding any lock
//! across the reading, and [`Sampler`], which records the totals once a
//! second so that `/stats` can give rates over 1 s, 10 s and 60 s and
//! `/history` the last five minutes of them. Both renderings (`/metrics`,
//! `/stats`) read the same `View`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::config::Protocol;
use crate::health::HealthStats;
use crate::metrics::counters::{Dropped, Rejected, UdpCounters};
use crate::metrics::history::History;
use crate::metrics::rates::Rates;
use crate::metrics::text::Snapshot;
use crate::registry::{Routes, Shared};
use crate::route::Fallback;

#[derive(Debug)]
pub(crate) struct View {
    pub uptime: Duration,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub closed_at_deadline: u64,
    pub buffers_in_use: usize,
    pub pipes_in_use: usize,
    /// The longest any worker took to take in a new snapshot.
    pub snapshot_stall_max: Duration,
    /// Log lines that never reached their sink, by sink.
    pub log_lines_dropped: [(&'static str, u64); 2],
    pub listeners: Vec<ListenerRow>,
    pub pools: Vec<PoolRow>,
}

#[derive(Debug)]
pub(crate) struct ListenerRow {
    pub name: Arc<str>,
    pub addresses: Vec<SocketAddr>,
    pub pool: Arc<str>,
    pub accepted: u64,
    pub active: usize,
    pub rejected: Vec<(&'static str, u64)>,
    pub protocol: Protocol,
    /// A UDP listener's flows and datagrams.
    pub udp: Option<UdpRow>,
    /// A listener with routes: each route and what it took.
    pub routes: Option<RoutesRow>,
}

#[derive(Debug)]
pub(crate) struct RoutesRow {
    pub inspect_timeout: Duration,
    pub routes: Vec<RouteRow>,
    /// Connections sent to the listener's pool, by reason.
    pub defaulted: Vec<(&'static str, u64)>,
}

#[derive(Debug)]
pub(crate) struct RouteRow {
    pub name: Arc<str>,
    pub pool: Arc<str>,
    pub sni: Vec<String>,
    pub alpn: Vec<String>,
    pub source: Vec<String>,
    pub connections: u64,
}

impl RoutesRow {
    fn read(routes: &Routes) -> RoutesRow {
        let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>();
        RoutesRow {
            inspect_timeout: routes.inspect_timeout,
            routes: routes
                .routes
                .iter()
                .map(|r| RouteRow {
                    name: Arc::clone(&r.name),
                    pool: Arc::clone(&r.target.name),
                    sni: list(&mut r.conditions.sni.iter().map(ToString::to_string)),
                    alpn: list(
                        &mut r
                            .conditions
                            .alpn
                            .iter()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                    ),
                    source: list(&mut r.conditions.source.iter().map(ToString::to_string)),
                    connections: r.taken.load(Ordering::Relaxed),
                })
                .collect(),
            defaulted: Fallback::ALL
                .iter()
                .map(|why| (why.as_str(), routes.defaulted.get(*why)))
                .collect(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct UdpRow {
    pub flows_active: usize,
    pub flows_total: u64,
    pub flows_evicted: u64,
    pub max_flows: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped: Vec<(&'static str, u64)>,
}

impl UdpRow {
    fn read(c: &UdpCounters, max_flows: usize) -> UdpRow {
        UdpRow {
            flows_active: c.flows_active.load(Ordering::Relaxed),
            flows_total: c.flows_total.load(Ordering::Relaxed),
            flows_evicted: c.flows_evicted.load(Ordering::Relaxed),
            max_flows,
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: c.datagrams_out.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            dropped: Dropped::ALL
                .iter()
                .map(|d| (d.as_str(), c.dropped(*d)))
                .collect(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct PoolRow {
    pub name: Arc<str>,
    pub policy: String,
    pub no_backend: u64,
    /// Sessions waiting in the pool's queue now, all workers.
    pub queued: usize,
    pub backends: Vec<BackendRow>,
}

#[derive(Debug)]
pub(crate) struct BackendRow {
    pub addr: SocketAddr,
    pub state: &'static str,
    pub up: bool,
    pub weight: u32,
    /// Takes new sessions only while no primary of its pool can.
    pub backup: bool,
    /// 0: no limit.
    pub max_connections: usize,
    pub active: usize,
    pub connections: u64,
    pub connect_failures: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub connect_time: Snapshot,
}

impl BackendRow {
    fn read(b: &Backend, pool: &str, health: &HealthStats) -> BackendRow {
        let checks = health.get(pool, b.addr);
        let checks = |f: fn(&crate::health::CheckStats) -> u64| checks.as_deref().map_or(0, f);
        let c = &b.counters;
        BackendRow {
            addr: b.addr,
            state: b.state().as_str(),
            up: b.is_up(),
            weight: b.weight(),
            backup: b.is_backup(),
            max_connections: b.max_connections(),
            active: b.active(),
            connections: c.connections.load(Ordering::Relaxed),
            connect_failures: c.connect_failures_total.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            checks_passed: checks(|s| s.passed.load(Ordering::Relaxed)),
            checks_failed: checks(|s| s.failed.load(Ordering::Relaxed)),
            connect_time: c.connect_time.snapshot(),
        }
    }
}

impl View {
    pub(crate) fn read(shared: &Shared, health: &HealthStats) -> View {
        let (registry, _) = shared.snapshot();
        let counters = &shared.counters;
        let listeners = registry
            .listeners
            .iter()
            .map(|l| ListenerRow {
                name: Arc::clone(&l.name),
                addresses: l.addresses.clone(),
                pool: Arc::clone(&registry.pools[l.pool].name),
                accepted: l.counters.accepted.load(Ordering::Relaxed),
                active: l.counters.active.load(Ordering::Relaxed),
                rejected: Rejected::ALL
                    .iter()
                    .map(|r| (r.as_str(), l.counters.rejected(*r)))
                    .collect(),
                protocol: l.protocol,
                udp: (l.protocol == Protocol::Udp)
                    .then(|| UdpRow::read(&l.counters.udp, l.max_flows)),
                routes: l.routes.as_deref().map(RoutesRow::read),
            })
            .collect();
        let pools = registry
            .pools
            .iter()
            .map(|p| PoolRow {
                name: Arc::clone(&p.name),
                policy: p.policy.kind().to_string(),
                no_backend: p.no_backend.load(Ordering::Relaxed),
                queued: p.waiting.len(),
                backends: p
                    .backends
                    .iter()
                    .map(|b| BackendRow::read(b, &p.name, health))
                    .collect(),
            })
            .collect();
        let mut pools: Vec<PoolRow> = pools;
        // Removed backends whose sessions are still open are shown too,
        // so an operator can watch a removal drain.
        for (pool, backend) in shared.retiring() {
            let row = BackendRow::read(&backend, &pool, health);
            match pools.iter_mut().find(|p| p.name == pool) {
                // Added again meanwhile: one series per pool and address.
                Some(p) if p.backends.iter().any(|b| b.addr == row.addr) => {}
                Some(p) => p.backends.push(row),
                None => pools.push(PoolRow {
                    name: pool,
                    policy: "removed".into(),
                    no_backend: 0,
                    queued: 0,
                    backends: vec![row],
                }),
            }
        }
        View {
            uptime: shared.uptime(),
            reloads_ok: counters.reloads_applied.load(Ordering::Relaxed),
            reloads_failed: counters.reloads_failed.load(Ordering::Relaxed),
            closed_at_deadline: counters.closed_at_deadline.load(Ordering::Relaxed),
            buffers_in_use: shared
                .workers()
                .iter()
                .map(|w| w.buffers_in_use.load(Ordering::Relaxed))
                .sum(),
            pipes_in_use: shared
                .workers()
                .iter()
                .map(|w| w.pipes_in_use.load(Ordering::Relaxed))
                .sum(),
            snapshot_stall_max: Duration::from_nanos(
                shared
                    .workers()
                    .iter()
                    .map(|w| w.snapshot_stall_max_ns.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0),
            ),
            log_lines_dropped: crate::metrics::logs::DROPPED.read(),
            listeners,
            pools,
        }
    }
}

impl View {
    /// Bytes relayed both ways for a listener: a UDP listener counts its
    /// own; TCP bytes are counted per backend, so a TCP listener's are
    /// those of its pool (shared with any other listener of that pool).
    pub(crate) fn bytes_of(&self, listener: &ListenerRow) -> u64 {
        if let Some(udp) = &listener.udp {
            return udp.bytes_in + udp.bytes_out;
        }
        self.pools
            .iter()
            .filter(|p| p.name == listener.pool)
            .flat_map(|p| &p.backends)
            .map(|b| b.bytes_sent + b.bytes_received)
            .sum()
    }
}

impl PoolRow {
    /// A backend's share of the connections its pool has made.
    pub(crate) fn share(&self, backend: &BackendRow) -> f64 {
        let total: u64 = self.backends.iter().map(|b| b.connections).sum();
        if total == 0 {
            0.0
        } else {
            backend.connections as f64 / total as f64
        }
    }
}

/// What a rate is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Series {
    ListenerConnections(Arc<str>),
    /// Bytes both ways: a UDP listener's own, a TCP listener's pool's.
    ListenerBytes(Arc<str>),
    BackendConnections(Arc<str>, SocketAddr),
    BytesSent(Arc<str>, SocketAddr),
    BytesReceived(Arc<str>, SocketAddr),
}

/// Totals recorded about once a second, for rates and their history.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    rates: Rates<Series>,
    history: History<Series>,
}

pub(crate) const WINDOWS: [(&str, Duration); 3] = [
    ("1s", Duration::from_secs(1)),
    ("10s", Duration::from_secs(10)),
    ("60s", Duration::from_secs(60)),
];

impl Sampler {
    pub(crate) fn record(&mut self, now: Instant, view: &View) {
        let listeners = view.listeners.iter().flat_map(|l| {
            [
                (Series::ListenerConnections(Arc::clone(&l.name)), l.accepted),
                (Series::ListenerBytes(Arc::clone(&l.name)), view.bytes_of(l)),
            ]
        });
        let backends = view.pools.iter().flat_map(|p| {
            p.backends.iter().flat_map(move |b| {
                [
                    (
                        Series::BackendConnections(Arc::clone(&p.name), b.addr),
                        b.connections,
                    ),
                    (Series::BytesSent(Arc::clone(&p.name), b.addr), b.bytes_sent),
                    (
                        Series::BytesReceived(Arc::clone(&p.name), b.addr),
                        b.bytes_received,
                    ),
                ]
            })
        });
        let totals: Vec<(Series, u64)> = listeners.chain(backends).collect();
        self.history.record(now, totals.iter().cloned());
        self.rates.record(now, totals);
    }

    pub(crate) fn rate(&self, series: &Series, window: Duration) -> f64 {
        self.rates.rate(series, window)
    }

    /// The series' rates over the last five minutes, in 5 s buckets, to
    /// a thousandth (what a chart can show; shorter JSON).
    pub(crate) fn history(&self, series: &Series) -> Vec<f64> {
        let points = self.history.points(series);
        points
            .into_iter()
            .map(|p| (f64::from(p) * 1000.0).round() / 1000.0)
            .collect()
    }
}
