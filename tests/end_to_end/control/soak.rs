//! Chaos soak: clients run short echo requests and long hashed transfers
//! while a seeded driver kills and restarts backends (on fixed ports),
//! drains and re-enables them through the admin API, and reloads the
//! configuration, alternating two files, five times a second.
//!
//! Every transfer that completes must be intact; every session that fails
//! must have had its backend killed while it was open; none may fail after
//! the last kill; none may outlive its timeouts; memory must return to its
//! level after warm-up; nothing may panic. `SOAK_SECONDS` sets the length
//! of the chaos (default 8; `make test-soak` runs 60), `SOAK_SEED` the
//! seed of the driver's fastrand (wyrand) generator.

use crate::support;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use support::chaos::{open_fds, write_atomically, Healthy, Killable};
use support::http::{get, post};
use support::*;

const BACKENDS: usize = 3;
const SHORT_CLIENTS: usize = 3;
const LONG_CLIENTS: usize = 2;
const LONG_LEN: u64 = 4 << 20;
const RELOAD_EVERY: Duration = Duration::from_millis(200);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a client operation may take before it counts as failed.
const CLIENT_DEADLINE: Duration = Duration::from_secs(20);
const DEFAULT_SEED: u64 = 0x5eed_0b4c;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// File A: round robin, equal weights. File B: least connections, the
/// first backend weighted 2. Same backends, so that a reload changes how
/// sessions are spread, not where they may go.
fn config(web: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], variant: bool) -> String {
    let (policy, first_weight) = if variant {
        ("least-connections", 2)
    } else {
        ("round-robin", 1)
    };
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let weight = if i == 0 { first_weight } else { 1 };
            format!("(address: \"{b}\", weight: {weight})")
        })
        .collect();
    format!(
        r#"(
    global: (workers: 2),
    timeouts: (connect: "1s", idle: "{}s", drain: "5s"),
    admin: (bind: "{admin}"),
    listeners: [(name: "web", bind: "{web}", pool: "p")],
    pools: [(name: "p", policy: "{policy}", health: (interval: "250ms"), backends: [{}])],
)"#,
        IDLE_TIMEOUT.as_secs(),
        list.join(", ")
    )
}

/// What one client session came to.
struct Outcome {
    client: SocketAddr,
    started: SystemTime,
    finished: SystemTime,
    /// Bytes verified each way, or what went wrong.
    result: Result<u64, String>,
}

/// One short request: a command line and 32 bytes, echoed exactly, then
/// FIN both ways.
fn short_request(web: SocketAddr, n: u64) -> Option<Outcome> {
    let started = SystemTime::now();
    let mut s = try_connect(web).ok()?;
    let client = s.local_addr().ok()?;
    let request = format!("request {n:>24}\n");
    let result = (|| {
        s.write_all(b"echo\n")
            .and_then(|_| s.write_all(request.as_bytes()))
            .map_err(|e| format!("write: {e}"))?;
        let echoed = read_exact_within(&mut s, request.len(), Duration::from_secs(5))
            .map_err(|e| format!("read: {e}"))?;
        if echoed != request.as_bytes() {
            return Err(format!("wrong echo {:?}", String::from_utf8_lossy(&echoed)));
        }
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        let rest = read_to_eof(&mut s, Duration::from_secs(5)).map_err(|e| format!("EOF: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after the echo", rest.len()));
        }
        Ok(request.len() as u64)
    })();
    Some(Outcome {
        client,
        started,
        finished: SystemTime::now(),
        result,
    })
}

fn long_transfer(web: SocketAddr, seed: u64) -> Outcome {
    let started = SystemTime::now();
    let h = Healthy::start(web, seed, LONG_LEN, Duration::from_millis(3));
    let client = h.client;
    let result = h.try_finish();
    Outcome {
        client,
        started,
        finished: SystemTime::now(),
        result,
    }
}

/// The faults the driver injected, in order.
#[derive(Default)]
struct Faults {
    /// Backend, when its kill began and when every connection was reset.
    kills: Vec<(SocketAddr, SystemTime, SystemTime)>,
    connections_reset: usize,
    drains: usize,
    reloads: usize,
}

/// A fault to inject or undo: at most one backend is out (killed or
/// drained) at a time, so that every client has somewhere to go; a new
/// fault waits until the balancer sees every backend up again (health
/// checks take a few rounds to trust a restarted backend).
fn step(
    rng: &mut fastrand::Rng,
    backends: &mut [Killable],
    drained: &mut Option<usize>,
    admin: SocketAddr,
    faults: &mut Faults,
) {
    let out = backends.iter().position(|b| !b.is_up());
    match (out, *drained) {
        (Some(i), _) => backends[i].start(),
        (None, Some(i)) => {
            set_admin(admin, backends[i].addr, "enable");
            *drained = None;
        }
        (None, None) if !all_up(admin, backends.len()) => {}
        (None, None) => {
            let i = rng.usize(..backends.len());
            if rng.bool() {
                let began = SystemTime::now();
                faults.connections_reset += backends[i].kill();
                faults
                    .kills
                    .push((backends[i].addr, began, SystemTime::now()));
            } else {
                set_admin(admin, backends[i].addr, "drain");
                *drained = Some(i);
                faults.drains += 1;
            }
        }
    }
}

fn set_admin(admin: SocketAddr, backend: SocketAddr, action: &str) {
    let r = post(
        admin,
        &format!("/backend/{action}?pool=p&backend={backend}"),
    );
    assert_eq!(r.status, 200, "{action} {backend}: {}", r.body);
}

/// Whether the balancer's `/stats` shows all `n` backends up.
fn all_up(admin: SocketAddr, n: usize) -> bool {
    let stats: serde_json::Value =
        serde_json::from_str(&get(admin, "/stats").body).expect("stats JSON");
    (0..n).all(|i| stats["pools"][0]["backends"][i]["state"] == "up")
}

/// Start and end of a session from its access-log line.
fn session_span(a: &AccessLog) -> Option<(SystemTime, SystemTime)> {
    let end = log_time(&a.line)?;
    Some((end - Duration::from_millis(a.duration_ms), end))
}

#[test]
fn chaos_soak_loses_no_byte_and_fails_only_sessions_whose_backend_was_killed() {
    let seconds = env_u64("SOAK_SECONDS", 8);
    let seed = env_u64("SOAK_SEED", DEFAULT_SEED);
    println!("soak: {seconds} s of chaos, seed {seed:#x} (SOAK_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let reserved: Vec<ReservedPort> = (0..BACKENDS)
        .map(|_| ReservedPort::on(IpAddr::V4(Ipv4Addr::LOCALHOST)))
        .collect();
    let addrs: Vec<SocketAddr> = reserved.iter().map(|r| r.addr).collect();
    let mut backends: Vec<Killable> = addrs.iter().map(|a| Killable::new(*a)).collect();
    for b in &mut backends {
        b.start();
    }
    let (web, admin) = (free_addr(), free_addr());
    let configs = [
        config(web, admin, &addrs, false),
        config(web, admin, &addrs, true),
    ];
    let lb = Balancer::with_config(&configs[0], web);
    let path = lb.config_path();
    let fds_idle = open_fds(lb.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let clients: Vec<_> = (0..SHORT_CLIENTS + LONG_CLIENTS)
        .map(|c| {
            let (stop, outcomes) = (Arc::clone(&stop), Arc::clone(&outcomes));
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let outcome = if c < SHORT_CLIENTS {
                        let o = short_request(web, n);
                        thread::sleep(Duration::from_millis(2));
                        o
                    } else {
                        Some(long_transfer(web, (c as u64) << 32 | n))
                    };
                    let Some(o) = outcome else {
                        panic!("client {c} could not connect to the balancer");
                    };
                    outcomes.lock().unwrap().push(o);
                }
            })
        })
        .collect();

    // Warm-up: a second of traffic with no faults.
    thread::sleep(Duration::from_secs(1));
    let rss_warm = lb.rss_kib();

    let mut faults = Faults::default();
    let mut drained = None;
    let chaos_start = Instant::now();
    let mut next_reload = Instant::now();
    let mut next_fault = Instant::now() + Duration::from_millis(rng.u64(100..400));
    while chaos_start.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        if now >= next_reload {
            faults.reloads += 1;
            write_atomically(&path, &configs[faults.reloads % 2]);
            lb.signal(libc::SIGHUP);
            next_reload = now + RELOAD_EVERY;
        }
        if now >= next_fault {
            step(&mut rng, &mut backends, &mut drained, admin, &mut faults);
            next_fault = now + Duration::from_millis(rng.u64(100..400));
        }
        thread::sleep(Duration::from_millis(10));
    }
    // Everything back, then a quiet second in which nothing may fail.
    for b in &mut backends {
        b.start();
    }
    if let Some(i) = drained {
        set_admin(admin, addrs[i], "enable");
    }
    let chaos_end = SystemTime::now();
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let stopped = Instant::now();

    // No session outlives its timeouts: once the clients are done, every
    // session is gone within the idle timeout.
    let released = wait_until(IDLE_TIMEOUT + Duration::from_secs(1), || {
        open_fds(lb.pid()) <= fds_idle + 8
    });
    let fds_end = open_fds(lb.pid());
    assert!(
        released,
        "{fds_end} descriptors open {:?} after the clients stopped (idle: {fds_idle})",
        stopped.elapsed()
    );
    thread::sleep(Duration::from_millis(200));
    let rss_end = lb.rss_kib();

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let logs = lb.logs();
    // Ports are reused over thousands of sessions: a client's session is
    // the one of its address whose span overlaps the client's own.
    let mut by_client: HashMap<String, Vec<AccessLog>> = HashMap::new();
    for a in logs.iter().filter_map(|l| AccessLog::parse(l)) {
        by_client.entry(a.client.clone()).or_default().push(a);
    }
    let slack = Duration::from_millis(50);
    let session_of = |o: &Outcome| -> Option<(AccessLog, SystemTime, SystemTime)> {
        by_client.get(&o.client.to_string())?.iter().find_map(|a| {
            let (start, end) = session_span(a)?;
            (start <= o.finished + slack && end + slack >= o.started)
                .then(|| (a.clone(), start, end))
        })
    };
    let last_kill = faults.kills.last().map(|&(_, _, t)| t);
    let mut verified = 0u64;
    let mut failed = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(bytes) => verified += bytes,
            Err(e) => failed.push((o, e)),
        }
    }
    let mut unexplained = Vec::new();
    for (o, e) in &failed {
        let entry = session_of(o);
        let explained = entry.as_ref().and_then(|(a, start, end)| {
            faults
                .kills
                .iter()
                .any(|&(backend, began, done)| {
                    backend.to_string() == a.backend
                        && done + slack >= *start
                        && began <= *end + slack
                })
                .then_some(())
        });
        if explained.is_none() {
            unexplained.push(format!(
                "{} ({e}): {}",
                o.client,
                entry
                    .as_ref()
                    .map_or("no access-log line", |(a, _, _)| a.line.as_str())
            ));
        }
    }
    let failed_after_last_kill = failed
        .iter()
        .filter(|(o, _)| last_kill.is_some_and(|k| o.started > k))
        .count();
    let longest = by_client
        .values()
        .flatten()
        .map(|a| a.duration_ms)
        .max()
        .unwrap_or(0);
    let panics = logs.iter().filter(|l| l.contains("panicked")).count();
    let longs = outcomes.iter().filter(|o| o.result == Ok(LONG_LEN)).count();
    println!(
        "soak: {} sessions ({longs} long transfers intact), {} backend kills ({} connections reset), \
         {} drains, {} reloads; {:.1} MiB verified each way; {} failed, {} of them with no kill of their backend while open (lost); \
         longest session {longest} ms; VmRSS {rss_warm} KiB after warm-up, \
         {rss_end} KiB at the end; descriptors {fds_idle} idle, {fds_end} at the end",
        outcomes.len(),
        faults.kills.len(),
        faults.connections_reset,
        faults.drains,
        faults.reloads,
        verified as f64 / (1 << 20) as f64,
        failed.len(),
        unexplained.len()
    );
    assert!(
        unexplained.is_empty(),
        "sessions failed with no kill of their backend while they were open:\n{}\nkills: {:?}",
        unexplained.join("\n"),
        faults.kills
    );
    assert_eq!(
        failed_after_last_kill, 0,
        "sessions started after the last kill failed"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.started > chaos_end && o.result.is_ok()),
        "no session ran in the quiet second after the chaos"
    );
    assert!(longs > 0, "no long transfer completed");
    assert!(
        longest <= CLIENT_DEADLINE.as_millis() as u64,
        "a session lasted {longest} ms"
    );
    assert!(
        rss_end <= rss_warm + 4 * 1024,
        "VmRSS {rss_end} KiB at the end, {rss_warm} KiB after warm-up"
    );
    assert_eq!(panics, 0, "the balancer panicked:\n{}", lb.logs_joined());
}
