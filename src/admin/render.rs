//! `/metrics` and `/stats`: the same [`View`] as Prometheus text and as
//! JSON; `/history`: the last five minutes of its rates, for charts.
//!
//! Owns the metric names, their help texts and the JSON layout the status
//! page reads (docs/ADMIN.md documents both). Pure functions of their
//! inputs: nothing here reads shared state.

use serde_json::{json, Map, Value};

use super::view::{BackendRow, PoolRow, Sampler, Series, UdpRow, View, WINDOWS};
use crate::metrics::events::Event;
use crate::metrics::text::{Exposition, Kind};

/// The Prometheus text exposition (format 0.0.4).
pub(crate) fn prometheus(view: &View) -> String {
    let mut out = Exposition::new();
    let process: [(&str, &str, Kind, f64); 5] = [
        (
            "balanciaga4_uptime_seconds",
            "Seconds since the process started.",
            Kind::Gauge,
            view.uptime.as_secs_f64(),
        ),
        (
            "balanciaga4_buffers_in_use",
            "Pooled buffers holding bytes in flight, all workers.",
            Kind::Gauge,
            view.buffers_in_use as f64,
        ),
        (
            "balanciaga4_pipes_in_use",
            "Kernel pipes lent to flows relaying with splice(2), all workers.",
            Kind::Gauge,
            view.pipes_in_use as f64,
        ),
        (
            "balanciaga4_snapshot_stall_max_seconds",
            "Longest a worker paused to take in a new snapshot (reload, admin action) since start.",
            Kind::Gauge,
            view.snapshot_stall_max.as_secs_f64(),
        ),
        (
            "balanciaga4_sessions_closed_at_deadline_total",
            "Sessions closed at the drain deadline after a reload removed their backend or listener.",
            Kind::Counter,
            view.closed_at_deadline as f64,
        ),
    ];
    for (name, help, kind, value) in process {
        out.family(name, help, kind);
        out.sample(name, &[], value);
    }
    out.family(
        "balanciaga4_reloads_total",
        "Configuration reloads, by result.",
        Kind::Counter,
    );
    out.sample(
        "balanciaga4_reloads_total",
        &[("result", "ok")],
        view.reloads_ok,
    );
    out.sample(
        "balanciaga4_reloads_total",
        &[("result", "failed")],
        view.reloads_failed,
    );
    out.family(
        "balanciaga4_log_lines_dropped_total",
        "Log lines that never reached their sink (syslog, access_file).",
        Kind::Counter,
    );
    for (sink, dropped) in view.log_lines_dropped {
        out.sample(
            "balanciaga4_log_lines_dropped_total",
            &[("sink", sink)],
            dropped,
        );
    }
    listeners(&mut out, view);
    udp_listeners(&mut out, view);
    backends(&mut out, view);
    out.into_string()
}

fn listeners(out: &mut Exposition, view: &View) {
    let name = "balanciaga4_listener_accepted_total";
    out.family(name, "Client connections accepted.", Kind::Counter);
    for l in &view.listeners {
        out.sample(name, &[("listener", &l.name)], l.accepted);
    }
    let name = "balanciaga4_listener_active_connections";
    out.family(name, "Client connections open now.", Kind::Gauge);
    for l in &view.listeners {
        out.sample(name, &[("listener", &l.name)], l.active);
    }
    let name = "balanciaga4_listener_rejected_total";
    out.family(
        name,
        "Client connections closed without being served, by reason.",
        Kind::Counter,
    );
    for l in &view.listeners {
        for (reason, n) in &l.rejected {
            out.sample(name, &[("listener", &l.name), ("reason", reason)], *n);
        }
    }
    let routed = || {
        view.listeners
            .iter()
            .filter_map(|l| l.routes.as_ref().map(|r| (&*l.name, r)))
    };
    let name = "balanciaga4_route_connections_total";
    out.family(
        name,
        "Client connections a route sent to its pool.",
        Kind::Counter,
    );
    for (listener, routes) in routed() {
        for r in &routes.routes {
            let labels = [
                ("listener", listener),
                ("route", &*r.name),
                ("pool", &*r.pool),
            ];
            out.sample(name, &labels, r.connections);
        }
    }
    let name = "balanciaga4_route_defaulted_total";
    out.family(
        name,
        "Client connections of a listener with routes sent to its own pool, by reason.",
        Kind::Counter,
    );
    for (listener, routes) in routed() {
        for (reason, n) in &routes.defaulted {
            out.sample(name, &[("listener", listener), ("reason", reason)], *n);
        }
    }
}

type UdpValue = fn(&UdpRow) -> u64;
/// A family with one sample per direction: its name, help and the value
/// for `in` and for `out`.
type PerDirection<'a> = (&'a str, &'a str, [(&'a str, UdpValue); 2]);

/// The flows and datagrams of UDP listeners (no samples without one).
fn udp_listeners(out: &mut Exposition, view: &View) {
    let udp = || {
        view.listeners
            .iter()
            .filter_map(|l| l.udp.as_ref().map(|u| (&*l.name, u)))
    };
    let flows: [(&str, &str, Kind, UdpValue); 4] = [
        (
            "balanciaga4_udp_flows_active",
            "UDP flows open now.",
            Kind::Gauge,
            |u| u.flows_active as u64,
        ),
        (
            "balanciaga4_udp_flows_total",
            "UDP flows opened.",
            Kind::Counter,
            |u| u.flows_total,
        ),
        (
            "balanciaga4_udp_flows_evicted_total",
            "UDP flows ended to make room for a new client past max_flows.",
            Kind::Counter,
            |u| u.flows_evicted,
        ),
        (
            "balanciaga4_udp_max_flows",
            "Most UDP flows the listener holds at once.",
            Kind::Gauge,
            |u| u.max_flows as u64,
        ),
    ];
    for (name, help, kind, value) in flows {
        out.family(name, help, kind);
        for (l, u) in udp() {
            out.sample(name, &[("listener", l)], value(u));
        }
    }
    let directions: [PerDirection<'_>; 2] = [
        (
            "balanciaga4_udp_datagrams_total",
            "UDP datagrams relayed, by direction (in: client to backend, out: backend to client).",
            [("in", |u| u.datagrams_in), ("out", |u| u.datagrams_out)],
        ),
        (
            "balanciaga4_udp_bytes_total",
            "UDP payload bytes relayed, by direction (in: client to backend, out: backend to client).",
            [("in", |u| u.bytes_in), ("out", |u| u.bytes_out)],
        ),
    ];
    for (name, help, each) in directions {
        out.family(name, help, Kind::Counter);
        for (l, u) in udp() {
            for (direction, value) in each {
                out.sample(name, &[("listener", l), ("direction", direction)], value(u));
            }
        }
    }
    let name = "balanciaga4_udp_dropped_total";
    out.family(
        name,
        "UDP datagrams dropped instead of relayed, by reason.",
        Kind::Counter,
    );
    for (l, u) in udp() {
        for (reason, n) in &u.dropped {
            out.sample(name, &[("listener", l), ("reason", reason)], *n);
        }
    }
}

type BackendValue = fn(&BackendRow) -> f64;
type PoolValue = fn(&PoolRow) -> u64;

fn backends(out: &mut Exposition, view: &View) {
    let families: [(&str, &str, Kind, BackendValue); 9] = [
        (
            "balanciaga4_backend_connections_total",
            "Client sessions sent to the backend (connects started), and UDP flows.",
            Kind::Counter,
            |b| b.connections as f64,
        ),
        (
            "balanciaga4_backend_active_connections",
            "Client sessions connecting or connected to the backend now, and open UDP flows.",
            Kind::Gauge,
            |b| b.active as f64,
        ),
        (
            "balanciaga4_backend_connect_failures_total",
            "Connects from client sessions that failed or timed out, and UDP datagrams met with a closed port.",
            Kind::Counter,
            |b| b.connect_failures as f64,
        ),
        (
            "balanciaga4_backend_bytes_sent_total",
            "Bytes sent to the backend (client to backend).",
            Kind::Counter,
            |b| b.bytes_sent as f64,
        ),
        (
            "balanciaga4_backend_bytes_received_total",
            "Bytes received from the backend (backend to client).",
            Kind::Counter,
            |b| b.bytes_received as f64,
        ),
        (
            "balanciaga4_backend_up",
            "1 if the backend is up by health, 0 if down.",
            Kind::Gauge,
            |b| f64::from(u8::from(b.up)),
        ),
        (
            "balanciaga4_backend_weight",
            "The backend's weight now.",
            Kind::Gauge,
            |b| f64::from(b.weight),
        ),
        (
            "balanciaga4_backend_backup",
            "1 if the backend is a backup (new sessions only while no primary of its pool is up), 0 if a primary.",
            Kind::Gauge,
            |b| f64::from(u8::from(b.backup)),
        ),
        (
            "balanciaga4_backend_max_connections",
            "Most sessions the backend takes at once (0: no limit).",
            Kind::Gauge,
            |b| b.max_connections as f64,
        ),
    ];
    for (name, help, kind, value) in families {
        out.family(name, help, kind);
        for p in &view.pools {
            for b in &p.backends {
                let addr = b.addr.to_string();
                out.sample(name, &[("pool", &p.name), ("backend", &addr)], value(b));
            }
        }
    }
    let name = "balanciaga4_health_checks_total";
    out.family(name, "Active health checks, by result.", Kind::Counter);
    for p in &view.pools {
        for b in &p.backends {
            let addr = b.addr.to_string();
            for (result, n) in [("passed", b.checks_passed), ("failed", b.checks_failed)] {
                out.sample(
                    name,
                    &[("pool", &p.name), ("backend", &addr), ("result", result)],
                    n,
                );
            }
        }
    }
    let name = "balanciaga4_backend_connect_seconds";
    out.family(
        name,
        "Time from connect start to established, per successful connect.",
        Kind::Histogram,
    );
    for p in &view.pools {
        for b in &p.backends {
            let addr = b.addr.to_string();
            out.histogram(
                name,
                &[("pool", &p.name), ("backend", &addr)],
                &b.connect_time,
            );
        }
    }
    let pools: [(&str, &str, Kind, PoolValue); 2] = [
        (
            "balanciaga4_pool_no_backend_total",
            "Clients closed because no backend of the pool could take them.",
            Kind::Counter,
            |p| p.no_backend,
        ),
        (
            "balanciaga4_pool_queued",
            "Sessions waiting in the pool's queue for a backend slot.",
            Kind::Gauge,
            |p| p.queued as u64,
        ),
    ];
    for (name, help, kind, value) in pools {
        out.family(name, help, kind);
        for p in &view.pools {
            out.sample(name, &[("pool", &p.name)], value(p));
        }
    }
}

/// The JSON the status page polls; the layout is documented in
/// docs/ADMIN.md.
pub(crate) fn stats(view: &View, sampler: &Sampler, events: &[Event]) -> Vec<u8> {
    let rates = |series: &[(&str, Series)]| -> Value {
        let mut windows = Map::new();
        for (label, window) in WINDOWS {
            let mut each = Map::new();
            for (name, s) in series {
                each.insert((*name).into(), json!(sampler.rate(s, window)));
            }
            windows.insert(label.into(), Value::Object(each));
        }
        Value::Object(windows)
    };
    let listeners: Vec<Value> = view
        .listeners
        .iter()
        .map(|l| {
            let rejected: Map<String, Value> = l
                .rejected
                .iter()
                .map(|(reason, n)| ((*reason).to_string(), json!(n)))
                .collect();
            let udp = l.udp.as_ref().map(|u| {
                let dropped: Map<String, Value> = u
                    .dropped
                    .iter()
                    .map(|(reason, n)| ((*reason).to_string(), json!(n)))
                    .collect();
                json!({
                    "flows_active": u.flows_active,
                    "flows_total": u.flows_total,
                    "flows_evicted": u.flows_evicted,
                    "max_flows": u.max_flows,
                    "datagrams": {"in": u.datagrams_in, "out": u.datagrams_out},
                    "bytes": {"in": u.bytes_in, "out": u.bytes_out},
                    "dropped": dropped,
                })
            });
            let routes = l.routes.as_ref().map(|r| {
                let defaulted: Map<String, Value> = r
                    .defaulted
                    .iter()
                    .map(|(reason, n)| ((*reason).to_string(), json!(n)))
                    .collect();
                let list: Vec<Value> = r
                    .routes
                    .iter()
                    .map(|route| {
                        json!({
                            "name": &*route.name,
                            "pool": &*route.pool,
                            "sni": route.sni,
                            "alpn": route.alpn,
                            "source": route.source,
                            "connections": route.connections,
                        })
                    })
                    .collect();
                json!({
                    "inspect_timeout_ms": r.inspect_timeout.as_millis() as u64,
                    "routes": list,
                    "defaulted": defaulted,
                })
            });
            json!({
                "name": &*l.name,
                "protocol": l.protocol.name(),
                "udp": udp,
                "routes": routes,
                "addresses": l.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "pool": &*l.pool,
                "accepted": l.accepted,
                "active": l.active,
                "rejected": rejected,
                "rates": rates(&[
                    ("connections", Series::ListenerConnections(l.name.clone())),
                    ("bytes", Series::ListenerBytes(l.name.clone())),
                ]),
            })
        })
        .collect();
    let pools = per_pool(
        view,
        |p, b| {
            let key = |f: fn(_, _) -> Series| f(p.name.clone(), b.addr);
            json!({
                "address": b.addr.to_string(),
                "state": b.state,
                "weight": b.weight,
                "backup": b.backup,
                "max_connections": b.max_connections,
                "active": b.active,
                "connections": b.connections,
                "connect_failures": b.connect_failures,
                "bytes_sent": b.bytes_sent,
                "bytes_received": b.bytes_received,
                "share": p.share(b),
                "checks": {"ok": b.checks_passed, "failed": b.checks_failed},
                "rates": rates(&[
                    ("connections", key(Series::BackendConnections)),
                    ("bytes_sent", key(Series::BytesSent)),
                    ("bytes_received", key(Series::BytesReceived)),
                ]),
            })
        },
        |p, backends| {
            json!({
                "name": &*p.name,
                "policy": p.policy,
                "no_backend": p.no_backend,
                "queued": p.queued,
                "backends": backends,
            })
        },
    );
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({"unix_ms": e.unix_ms, "message": e.message}))
        .collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": view.uptime.as_secs_f64(),
        "reloads": {"ok": view.reloads_ok, "failed": view.reloads_failed},
        "buffers_in_use": view.buffers_in_use,
        "pipes_in_use": view.pipes_in_use,
        "snapshot_stall_max_us": view.snapshot_stall_max.as_micros(),
        "log_lines_dropped": view
            .log_lines_dropped
            .iter()
            .map(|(sink, n)| (sink.to_string(), Value::from(*n)))
            .collect::<serde_json::Map<String, Value>>(),
        "listeners": listeners,
        "pools": pools,
        "events": events,
    });
    let mut out = body.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// The JSON of `GET /history`: per listener and per backend, rates per
/// second in 5 s buckets over the last five minutes, oldest first, the
/// bucket still filling last; and whether actions need a token, so the
/// status page knows whether to ask for one. The layout is documented in
/// docs/ADMIN.md.
pub(crate) fn history(view: &View, sampler: &Sampler, token: bool) -> Vec<u8> {
    let listeners: Vec<Value> = view
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": &*l.name,
                "connections": sampler.history(&Series::ListenerConnections(l.name.clone())),
                "bytes": sampler.history(&Series::ListenerBytes(l.name.clone())),
            })
        })
        .collect();
    let pools = per_pool(
        view,
        |p, b| {
            let points = |f: fn(_, _) -> Series| sampler.history(&f(p.name.clone(), b.addr));
            json!({
                "address": b.addr.to_string(),
                "connections": points(Series::BackendConnections),
                "bytes_sent": points(Series::BytesSent),
                "bytes_received": points(Series::BytesReceived),
            })
        },
        |p, backends| json!({"name": &*p.name, "backends": backends}),
    );
    let body = json!({
        "step_seconds": crate::metrics::history::STEP.as_secs(),
        "points": crate::metrics::history::POINTS,
        "actions": if token { "token" } else { "loopback" },
        "listeners": listeners,
        "pools": pools,
    });
    let mut out = body.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Each pool as `pool(p, its backends as backend(p, b))`.
fn per_pool(
    view: &View,
    backend: impl Fn(&PoolRow, &BackendRow) -> Value,
    pool: impl Fn(&PoolRow, Vec<Value>) -> Value,
) -> Vec<Value> {
    view.pools
        .iter()
        .map(|p| pool(p, p.backends.iter().map(|b| backend(p, b)).collect()))
        .collect()
}
