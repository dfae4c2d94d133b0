//! What health checking many backends costs, and whether the checks bunch.
//!
//! For each size N (default 1,000, 2,500 and 5,000), binds N listening
//! sockets on 127.0.0.1 (one port each; the open-file limit is raised to
//! its hard limit first), writes a configuration of one listener and one
//! pool of those N backends with `health: (interval: "2s")` (default
//! jitter 0.1, a TCP connect check), starts the release binary on it and
//! lets it run. The bench accepts every check connection and closes it at
//! once, noting when it arrived.
//!
//! - CPU: utime + stime of the balancer's thread named `health`
//!   (`/proc/PID/task/TID/stat`) and of the whole process, per 2 s window
//!   (one check interval) after the first interval; median and largest.
//! - Spread: check connections accepted per 100 ms bin over 10 s from the
//!   start of the third interval; the largest bin over the mean (1.0 =
//!   perfectly even; uniform random times give about 1.15 at 5,000).
//!
//! Run with `cargo bench --bench health_scale` after `cargo build --release`
//! (`BALANCIAGA4_BIN` names another binary; `HEALTH_SIZES=500,5000` and
//! `HEALTH_SECONDS=20` change the sizes and the time per size). Prints
//! markdown tables and writes `health.tsv` (per size) and `health_bins.tsv`
//! (the bins of the largest size) to `target/bench-scale/`.

use std::fmt::Write as _;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

const INTERVAL: Duration = Duration::from_secs(2);
const BIN: Duration = Duration::from_millis(100);
const SPREAD_WINDOW: Duration = Duration::from_secs(10);

fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime, in clock ticks, from a `stat` file's text.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces: the fields start after its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn health_thread(pid: u32) -> Option<PathBuf> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .flatten()
        .map(|t| t.path())
        .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "health"))
}

/// (health thread, whole process) CPU ticks so far.
fn sample(pid: u32, thread: &std::path::Path) -> Option<(u64, u64)> {
    let health = cpu_ticks(&std::fs::read_to_string(thread.join("stat")).ok()?)?;
    let process = cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some((health, process))
}

/// Accepts and closes every connection on `listeners` until `stop`, noting
/// each accept's time since `t0`.
fn accept_all(
    listeners: Vec<TcpListener>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<Duration>>>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut sockets = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.into_iter().enumerate() {
        l.set_nonblocking(true)?;
        let mut l = mio::net::TcpListener::from_std(l);
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)?;
        sockets.push(l);
    }
    let mut events = Events::with_capacity(1024);
    let mut local = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let Some(l) = sockets.get(event.token().0) else {
                continue;
            };
            loop {
                match l.accept() {
                    Ok((stream, _)) => {
                        local.push(t0.elapsed());
                        drop(stream);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if local.len() > 4096 {
            arrivals.lock().expect("arrivals").append(&mut local);
        }
    }
    arrivals.lock().expect("arrivals").append(&mut local);
    Ok(())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(listen: u16, backends: &[SocketAddr]) -> String {
    let mut text = format!(
        "(\n    global: (workers: 1, log_level: \"warn\", access_log: false),\n    \
         listeners: [(name: \"front\", bind: \"127.0.0.1:{listen}\", pool: \"many\")],\n    \
         pools: [(\n        name: \"many\",\n        health: (interval: \"2s\"),\n        backends: [\n"
    );
    for b in backends {
        let _ = writeln!(text, "            (address: \"{b}\"),");
    }
    text.push_str("        ],\n    )],\n)\n");
    text
}

struct Outcome {
    backends: usize,
    checks_per_s: f64,
    health_cpu: Vec<f64>,
    process_cpu: Vec<f64>,
    bins: Vec<u32>,
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(
    binary: &std::path::Path,
    n: usize,
    seconds: u64,
    dir: &std::path::Path,
) -> io::Result<Outcome> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<_>>()?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<_>>()?;
    let path = dir.join(format!("health-{n}.ron"));
    std::fs::write(&path, config(free_port()?, &addrs))?;

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let acceptor = {
        let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
        std::thread::spawn(move || accept_all(listeners, t0, stop, arrivals))
    };
    let child = Command::new(binary)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()?;
    let running = Running(child);
    let pid = running.0.id();
    let thread = loop {
        if let Some(t) = health_thread(pid) {
            break t;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(io::Error::other("no thread named health after 5 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let started = t0.elapsed();
    // The first checks fall at random points of the first interval; measure
    // from the end of it, one interval per window.
    std::thread::sleep(INTERVAL);
    let ticks = clock_ticks();
    let mut health_cpu = Vec::new();
    let mut process_cpu = Vec::new();
    let mut last = sample(pid, &thread).ok_or_else(|| io::Error::other("cannot read /proc"))?;
    let mut at = Instant::now();
    let windows = (seconds.saturating_sub(INTERVAL.as_secs()) / INTERVAL.as_secs()).max(1);
    for _ in 0..windows {
        std::thread::sleep(INTERVAL);
        let now = sample(pid, &thread).ok_or_else(|| io::Error::other("balancer exited"))?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        health_cpu.push((now.0 - last.0) as f64 / ticks / secs * 100.0);
        process_cpu.push((now.1 - last.1) as f64 / ticks / secs * 100.0);
        last = now;
    }
    drop(running);
    stop.store(true, Ordering::Relaxed);
    acceptor
        .join()
        .map_err(|_| io::Error::other("acceptor panicked"))??;

    // From the second interval on: the first checks fall uniformly in the
    // first interval, and the jitter of the second round blurs its edge.
    let from = started + 2 * INTERVAL;
    let to = from + SPREAD_WINDOW;
    let arrivals = arrivals.lock().expect("arrivals");
    let mut bins = vec![0u32; (SPREAD_WINDOW.as_millis() / BIN.as_millis()) as usize];
    let mut counted = 0usize;
    for &t in arrivals.iter().filter(|&&t| t >= from && t < to) {
        let bin = ((t - from).as_millis() / BIN.as_millis()) as usize;
        if let Some(b) = bins.get_mut(bin) {
            *b += 1;
            counted += 1;
        }
    }
    Ok(Outcome {
        backends: n,
        checks_per_s: counted as f64 / SPREAD_WINDOW.as_secs_f64(),
        health_cpu,
        process_cpu,
        bins,
    })
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = std::env::var_os("BALANCIAGA4_BIN")
        .map_or_else(|| root.join("target/release/balanciaga4"), PathBuf::from);
    if !binary.exists() {
        eprintln!(
            "{} not found: run cargo build --release first",
            binary.display()
        );
        std::process::exit(1);
    }
    let sizes: Vec<usize> = std::env::var("HEALTH_SIZES")
        .unwrap_or_else(|_| "1000,2500,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds: u64 = std::env::var("HEALTH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        // The spread window must fit after the first interval.
        .max((2 * INTERVAL + SPREAD_WINDOW).as_secs());
    let fds = raise_fd_limit();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dir = target.join("bench-scale");
    std::fs::create_dir_all(&dir).expect("create target/bench-scale");

    println!(
        "### Health checking: one pool of N loopback backends, TCP connect checks every 2 s (jitter 0.1), {seconds} s per size, open-file limit {fds}\n"
    );
    println!("| backends | checks/s (expected N/2) | health thread CPU %, median [max] of 2 s windows | whole process CPU % | µs of health CPU per check | largest 100 ms bin ÷ mean | smallest ÷ mean |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut tsv = String::from(
        "backends\tchecks_per_s\thealth_cpu_pct\thealth_cpu_max_pct\tprocess_cpu_pct\tus_per_check\tbin_max_over_mean\tbin_min_over_mean\n",
    );
    let mut last_bins = Vec::new();
    for n in sizes {
        let outcome = match run(&binary, n, seconds, &dir) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("{n} backends: {e}");
                std::process::exit(1);
            }
        };
        let health = median(&outcome.health_cpu);
        let health_max = outcome.health_cpu.iter().copied().fold(0.0, f64::max);
        let process = median(&outcome.process_cpu);
        let per_check = health / 100.0 * 1e6 / outcome.checks_per_s.max(1.0);
        let mean =
            outcome.bins.iter().map(|&b| f64::from(b)).sum::<f64>() / outcome.bins.len() as f64;
        let max = f64::from(outcome.bins.iter().copied().max().unwrap_or(0)) / mean.max(1e-9);
        let min = f64::from(outcome.bins.iter().copied().min().unwrap_or(0)) / mean.max(1e-9);
        println!(
            "| {} | {:.0} | {health:.1} [{health_max:.1}] | {process:.1} | {per_check:.1} | {max:.2} | {min:.2} |",
            outcome.backends, outcome.checks_per_s
        );
        let _ = writeln!(
            tsv,
            "{}\t{:.1}\t{health:.2}\t{health_max:.2}\t{process:.2}\t{per_check:.2}\t{max:.3}\t{min:.3}",
            outcome.backends, outcome.checks_per_s
        );
        last_bins = outcome.bins;
    }
    let mut bins_tsv = String::from("ms\tchecks\n");
    for (i, b) in last_bins.iter().enumerate() {
        let _ = writeln!(bins_tsv, "{}\t{b}", i as u128 * BIN.as_millis());
    }
    for (name, text) in [("health.tsv", &tsv), ("health_bins.tsv", &bins_tsv)] {
        if let Err(e) = std::fs::write(dir.join(name), text) {
            eprintln!("cannot write {name}: {e}");
        }
    }
    println!("\ndata: {}", dir.display());
}
