//! What `top` shows: `/stats` as plain-text tables of listeners, pools and
//! backends, fitted to a width.
//!
//! Owns the layout and the rates it must derive itself: `/stats` carries
//! 1 s rates for connections and bytes, and where one is missing (an older
//! balancer) the rate comes from this total and the previous fetch's.
//! Pure apart from that memory: no I/O, no clock (the caller passes `now`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde_json::Value;

/// ANSI colour per backend state (only used on a terminal).
fn state_colour(state: &str) -> &'static str {
    match state {
        "up" => "\x1b[32m",
        "down" => "\x1b[31m",
        "drain" => "\x1b[33m",
        _ => "\x1b[90m",
    }
}
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";
/// The narrowest a name column is cut to.
const MIN_NAME: usize = 8;

/// Totals of the previous fetch, for rates `/stats` does not carry.
#[derive(Debug, Default)]
pub(crate) struct Previous {
    totals: HashMap<String, (Instant, u64)>,
}

impl Previous {
    /// `given` when `/stats` had the rate; else the increase of `total`
    /// since the last call with this key, per second (0 on the first call,
    /// or when the total went down).
    fn rate(&mut self, key: String, given: Option<f64>, total: u64, now: Instant) -> f64 {
        let before = self.totals.insert(key, (now, total));
        if let Some(rate) = given {
            return rate;
        }
        match before {
            Some((at, old)) if now > at && total >= old => {
                (total - old) as f64 / now.duration_since(at).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// One table: headers, which columns are numbers (right-aligned), rows of
/// cells with an optional colour.
struct Table {
    headers: Vec<&'static str>,
    numeric: Vec<bool>,
    rows: Vec<Vec<(String, Option<&'static str>)>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            numeric: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// Writes the table in `width` columns: the first (names) column is cut
    /// to fit, then whole lines are.
    fn write(&self, out: &mut String, width: usize, colour: bool) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, (text, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(text.chars().count());
            }
        }
        let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        if total > width {
            widths[0] = widths[0]
                .saturating_sub(total - width)
                .max(MIN_NAME.min(widths[0]));
        }
        let header: Vec<(String, Option<&str>)> = self
            .headers
            .iter()
            .map(|h| ((*h).to_string(), None))
            .collect();
        for (i, row) in std::iter::once(&header).chain(&self.rows).enumerate() {
            let mut line = String::new();
            let mut shown = 0;
            for (c, (text, paint)) in row.iter().enumerate() {
                let cell = fit(text, widths[c], self.numeric[c]);
                let gap = if c == 0 { "" } else { "  " };
                let room = width.saturating_sub(shown + gap.len());
                if room == 0 {
                    break;
                }
                let cell: String = cell.chars().take(room).collect();
                shown += gap.len() + cell.chars().count();
                line.push_str(gap);
                match paint {
                    Some(p) if colour => {
                        let _ = write!(line, "{p}{cell}{RESET}");
                    }
                    _ => line.push_str(&cell),
                }
            }
            let line = line.trim_end();
            if i == 0 && colour {
                let _ = writeln!(out, "{BOLD}{line}{RESET}");
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// `text` padded to `width`, or cut with a final `~` when longer.
fn fit(text: &str, width: usize, right: bool) -> String {
    let len = text.chars().count();
    if len > width {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('~');
        return cut;
    }
    if right {
        format!("{text:>width$}")
    } else {
        format!("{text:<width$}")
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// A rate as `12.3`.
fn per_second(rate: f64) -> String {
    format!("{rate:.1}")
}

/// Bytes a second in decimal units without a space: `950B`, `1.2kB`.
pub(crate) fn bytes(rate: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = rate.max(0.0);
    let mut unit = 0;
    while value >= 999.95 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0}B")
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{}s", s % 60),
        (0, 0, _) => format!("{m}m{}s", s % 60),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h{m}m"),
    }
}

/// The whole screen for one `/stats` reply: a title line, the listeners,
/// then each pool and its backends.
pub(crate) fn render(
    stats: &Value,
    admin: &str,
    previous: &mut Previous,
    now: Instant,
    width: usize,
    colour: bool,
) -> String {
    let mut out = String::new();
    let title = format!(
        "balanciaga4 {} at {admin}  uptime {}  reloads {} ok {} failed",
        s(&stats["version"]),
        uptime(stats["uptime_seconds"].as_f64().unwrap_or(0.0)),
        u(&stats["reloads"]["ok"]),
        u(&stats["reloads"]["failed"]),
    );
    let title: String = title.chars().take(width).collect();
    let _ = writeln!(out, "{title}\n");
    let mut listeners = Table::new(&[
        ("LISTENER", false),
        ("PROTO", false),
        ("POOL", false),
        ("ACTIVE", true),
        ("CONN/S", true),
        ("BYTES/S", true),
        ("ACCEPTED", true),
        ("ADDRESSES", false),
    ]);
    for l in stats["listeners"].as_array().into_iter().flatten() {
        let name = s(&l["name"]);
        let one = &l["rates"]["1s"];
        let udp_bytes = u(&l["udp"]["bytes"]["in"]) + u(&l["udp"]["bytes"]["out"]);
        let conns = previous.rate(
            format!("l/{name}/c"),
            one["connections"].as_f64(),
            u(&l["accepted"]),
            now,
        );
        let bytes_rate =
            previous.rate(format!("l/{name}/b"), one["bytes"].as_f64(), udp_bytes, now);
        let addresses: Vec<&str> = l["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        listeners.rows.push(vec![
            (name.to_string(), None),
            (s(&l["protocol"]).to_string(), None),
            (s(&l["pool"]).to_string(), None),
            (u(&l["active"]).to_string(), None),
            (per_second(conns), None),
            (bytes(bytes_rate), None),
            (u(&l["accepted"]).to_string(), None),
            (addresses.join(","), None),
        ]);
    }
    listeners.write(&mut out, width, colour);
    for p in stats["pools"].as_array().into_iter().flatten() {
        let pool = s(&p["name"]);
        let line = format!(
            "\nPOOL {pool}  policy {}  queued {}  no-backend {}",
            s(&p["policy"]),
            u(&p["queued"]),
            u(&p["no_backend"])
        );
        let line: String = line.chars().take(width + 1).collect();
        let _ = writeln!(out, "{line}");
        backends(p, pool, previous, now).write(&mut out, width, colour);
    }
    out
}

fn backends(pool: &Value, name: &str, previous: &mut Previous, now: Instant) -> Table {
    let mut table = Table::new(&[
        ("BACKEND", false),
        ("STATE", false),
        ("WEIGHT", true),
        ("ACTIVE", true),
        ("CONN/S", true),
        ("IN/S", true),
        ("OUT/S", true),
        ("SHARE", true),
        ("CONNS", true),
        ("FAILS", true),
        ("CHECKS", true),
    ]);
    for b in pool["backends"].as_array().into_iter().flatten() {
        let addr = s(&b["address"]);
        let one = &b["rates"]["1s"];
        let mut rate = |what: &str, total: &Value| {
            previous.rate(
                format!("b/{name}/{addr}/{what}"),
                one[what].as_f64(),
                u(total),
                now,
            )
        };
        let conns = rate("connections", &b["connections"]);
        let sent = rate("bytes_sent", &b["bytes_sent"]);
        let received = rate("bytes_received", &b["bytes_received"]);
        let state = s(&b["state"]);
        let shown = if b["backup"].as_bool() == Some(true) {
            format!("{state}/backup")
        } else {
            state.to_string()
        };
        table.rows.push(vec![
            (addr.to_string(), None),
            (shown, Some(state_colour(state))),
            (u(&b["weight"]).to_string(), None),
            (u(&b["active"]).to_string(), None),
            (per_second(conns), None),
            (bytes(sent), None),
            (bytes(received), None),
            (
                format!("{:.1}%", b["share"].as_f64().unwrap_or(0.0) * 100.0),
                None,
            ),
            (u(&b["connections"]).to_string(), None),
            (u(&b["connect_failures"]).to_string(), None),
            (
                format!("{}/{}", u(&b["checks"]["ok"]), u(&b["checks"]["failed"])),
                None,
            ),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats() -> Value {
        json!({
            "version": "0.1.0", "uptime_seconds": 75.0, "reloads": {"ok": 1, "failed": 0},
            "listeners": [{"name": "web", "protocol": "tcp", "pool": "web", "active": 3,
                           "accepted": 40, "addresses": ["127.0.0.1:8080"],
                           "rates": {"1s": {"connections": 2.5, "bytes": 2500.0}}}],
            "pools": [{"name": "web", "policy": "round-robin", "queued": 0, "no_backend": 0,
                "backends": [
                    {"address": "127.0.0.1:9001", "state": "up", "weight": 1, "active": 2,
                     "connections": 30, "connect_failures": 1, "share": 0.75,
                     "bytes_sent": 10, "bytes_received": 20, "checks": {"ok": 5, "failed": 0},
                     "rates": {"1s": {"connections": 2.0, "bytes_sent": 100.0, "bytes_received": 1500.0}}},
                    {"address": "a-very-long-backend-host-name.example:9002", "state": "drain",
                     "backup": true, "weight": 2, "active": 1, "connections": 10, "share": 0.25,
                     "bytes_sent": 0, "bytes_received": 0}
                ]}]
        })
    }

    #[test]
    fn tables_show_every_backend_with_state_rates_and_share() {
        let out = render(
            &stats(),
            "127.0.0.1:9090",
            &mut Previous::default(),
            Instant::now(),
            200,
            false,
        );
        assert!(
            out.starts_with("balanciaga4 0.1.0 at 127.0.0.1:9090  uptime 1m15s"),
            "{out}"
        );
        let row = |needle: &str| -> Vec<String> {
            let line = out
                .lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle}: {out}"));
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(
            row("web "),
            [
                "web",
                "tcp",
                "web",
                "3",
                "2.5",
                "2.5kB",
                "40",
                "127.0.0.1:8080"
            ]
        );
        assert_eq!(
            row("127.0.0.1:9001"),
            [
                "127.0.0.1:9001",
                "up",
                "1",
                "2",
                "2.0",
                "100B",
                "1.5kB",
                "75.0%",
                "30",
                "1",
                "5/0"
            ]
        );
        assert_eq!(row("a-very")[1], "drain/backup");
        assert!(!out.contains('\x1b'));
    }

    #[test]
    fn narrow_terminals_cut_names_and_lines_and_colour_only_the_state() {
        let out = render(
            &stats(),
            "x",
            &mut Previous::default(),
            Instant::now(),
            90,
            true,
        );
        for line in out.lines() {
            let visible = line.replace(BOLD, "").replace(RESET, "");
            let visible = ["\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[90m"]
                .iter()
                .fold(visible, |v, c| v.replace(c, ""));
            assert!(visible.chars().count() <= 90, "{visible:?}");
        }
        assert!(out.contains("\na-very-lo~  \x1b[33mdrain/backup"), "{out}");
        assert!(out.contains("\x1b[1mBACKEND "), "{out}");
    }

    #[test]
    fn missing_rates_come_from_successive_totals() {
        let mut previous = Previous::default();
        let t0 = Instant::now();
        assert_eq!(previous.rate("k".into(), None, 100, t0), 0.0);
        let t1 = t0 + std::time::Duration::from_secs(2);
        assert_eq!(previous.rate("k".into(), None, 300, t1), 100.0);
        assert_eq!(previous.rate("k".into(), Some(7.0), 400, t1), 7.0);
        assert_eq!(bytes(999.0), "999B");
        assert_eq!(bytes(1_234_567.0), "1.2MB");
    }
}
