//! How the configuration's size shows in the balancer's costs: a pick per
//! policy against the pool's size (2 to 10,000 backends), the Maglev
//! table's size, memory and build time, and building, publishing and
//! reloading a snapshot of many pools (10 to 3,000 pools of 10 backends,
//! and 100 of 100).
//!
//! Run with `cargo bench --bench scale` (`make bench-scale` also plots the
//! results). Every figure is the median of several timed repetitions after
//! a warm-up, on one thread. Prints markdown tables and writes the data,
//! tab-separated, to `target/bench-scale/` (`pick.tsv`, `pick_build.tsv`,
//! `maglev.tsv`, `snapshot.tsv`) for `benches/scale/plot.gp`.
//! `SCALE_QUICK=1` takes fewer repetitions (a smoke run).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balanciaga4::backend::Backend;
use balanciaga4::config::{Config, HealthConfig, PolicyKind};
use balanciaga4::listener;
use balanciaga4::policy::{Maglev, Pick, Tried};
use balanciaga4::pool::Pool;
use balanciaga4::registry::{Registry, Shared};
use balanciaga4::reload;

/// Pool sizes of the pick curve.
const POOL_SIZES: [usize; 5] = [2, 10, 100, 1_000, 10_000];
/// Pool sizes of the Maglev table: the pick curve's and both sides of the
/// first size step (655 × 100 slots fit the smallest table, 656 do not).
const MAGLEV_SIZES: [usize; 7] = [2, 10, 100, 655, 656, 1_000, 10_000];
/// (pools, backends per pool, policy) of the snapshot curve.
const SNAPSHOTS: [(usize, usize, PolicyKind); 7] = [
    (10, 10, PolicyKind::RoundRobin),
    (100, 10, PolicyKind::RoundRobin),
    (1_000, 10, PolicyKind::RoundRobin),
    (3_000, 10, PolicyKind::RoundRobin),
    (100, 100, PolicyKind::RoundRobin),
    (100, 10, PolicyKind::SourceHash),
    (1_000, 10, PolicyKind::SourceHash),
];

/// Weights 1 to 10 with a few heavy backends (100), fixed by `seed`.
fn weight(rng: &mut fastrand::Rng) -> u32 {
    if rng.u32(0..20) == 0 {
        100
    } else {
        rng.u32(1..=10)
    }
}

fn backends(n: usize) -> Vec<Arc<Backend>> {
    let mut rng = fastrand::Rng::with_seed(11);
    (0..n)
        .map(|i| {
            let addr = format!("10.{}.{}.{}:80", i / 65_536, i / 256 % 256, i % 256)
                .parse()
                .expect("address");
            let b = Arc::new(Backend::new(addr, weight(&mut rng)));
            // Every backend busy: least-connections cannot stop early at an idle one.
            b.active.store(rng.usize(1..=100), Ordering::Relaxed);
            b
        })
        .collect()
}

fn pool(kind: PolicyKind, backends: Vec<Arc<Backend>>) -> Pool {
    Pool::new("bench", kind, backends, HealthConfig::default())
}

struct Plan {
    reps: usize,
    batch_target: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var_os("SCALE_QUICK").is_some() {
            Plan {
                reps: 3,
                batch_target: Duration::from_millis(5),
            }
        } else {
            Plan {
                reps: 9,
                batch_target: Duration::from_millis(20),
            }
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median nanoseconds per call of `f`: a warm-up that also sizes the batch
/// to about `plan.batch_target`, then `plan.reps` timed batches.
fn per_call(plan: &Plan, mut f: impl FnMut(u32) -> usize) -> f64 {
    let mut sum = 0usize;
    let mut batch: u32 = 16;
    loop {
        let started = Instant::now();
        for n in 0..batch {
            sum = sum.wrapping_add(f(n));
        }
        if started.elapsed() >= plan.batch_target / 4 || batch >= 1 << 28 {
            let per = started.elapsed().as_nanos() as f64 / f64::from(batch);
            let wanted = plan.batch_target.as_nanos() as f64 / per.max(0.1);
            batch = (wanted as u32).clamp(16, 1 << 28);
            break;
        }
        batch *= 2;
    }
    let times = (0..plan.reps)
        .map(|_| {
            let started = Instant::now();
            for n in 0..batch {
                sum = sum.wrapping_add(f(n));
            }
            started.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    std::hint::black_box(sum);
    median(times)
}

/// Median milliseconds of `f` over `reps` runs after one warm-up run.
fn per_run<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    std::hint::black_box(f());
    let times = (0..reps)
        .map(|_| {
            let started = Instant::now();
            let out = f();
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            drop(std::hint::black_box(out));
            ms
        })
        .collect();
    median(times)
}

fn picks(plan: &Plan, out: &Path) {
    println!(
        "### Pick cost against pool size (ns per pick, one thread, median of {} batches)\n",
        plan.reps
    );
    let kinds = PolicyKind::ALL;
    let mut table = String::from("| backends |");
    let mut sep = String::from("|---:|");
    for kind in kinds {
        let _ = write!(table, " {kind} |");
        sep.push_str("---:|");
    }
    println!("{table}\n{sep}");
    let mut tsv = String::from("backends");
    let mut build_tsv = String::from("backends");
    for kind in kinds {
        let _ = write!(tsv, "\t{kind}");
        let _ = write!(build_tsv, "\t{kind}");
    }
    tsv.push('\n');
    build_tsv.push('\n');
    let mut builds = Vec::new();
    for n in POOL_SIZES {
        let members = backends(n);
        let mut row = format!("| {n} |");
        let _ = write!(tsv, "{n}");
        let mut build_row = Vec::new();
        for &kind in kinds {
            let reps = if n >= 10_000 { 3 } else { plan.reps };
            let build_ms = per_run(reps, || pool(kind, members.clone()));
            build_row.push(build_ms);
            let pool = pool(kind, members.clone());
            let tried = Tried::default();
            let mut rng = fastrand::Rng::with_seed(7);
            let ns = per_call(plan, |i| {
                let client = IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes());
                let mut pick = Pick::new(client, &tried, &mut rng, 0);
                pool.pick(&mut pick).unwrap_or(0)
            });
            let _ = write!(row, " {ns:.1} |");
            let _ = write!(tsv, "\t{ns:.2}");
        }
        println!("{row}");
        tsv.push('\n');
        let _ = write!(build_tsv, "{n}");
        for ms in &build_row {
            let _ = write!(build_tsv, "\t{ms:.4}");
        }
        build_tsv.push('\n');
        builds.push((n, build_row));
    }
    println!("\n### Pool build time against pool size (ms: backends list and picker, median)\n");
    println!("{table}\n{sep}");
    for (n, row) in builds {
        let cells: String = row.iter().map(|ms| format!(" {ms:.3} |")).collect();
        println!("| {n} |{cells}");
    }
    println!();
    write(out, "pick.tsv", &tsv);
    write(out, "pick_build.tsv", &build_tsv);
}

fn maglev(plan: &Plan, out: &Path) {
    println!("### Maglev table (source-hash) against pool size\n");
    println!("| backends | table size M | slots per backend | table memory | build (ms, median) |");
    println!("|---:|---:|---:|---:|---:|");
    let mut tsv = String::from("backends\ttable_size\tslots_per_backend\ttable_bytes\tbuild_ms\n");
    let mut rng = fastrand::Rng::with_seed(5);
    for n in MAGLEV_SIZES {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("10.{}.{}.{}:80", i / 65_536, i / 256 % 256, i % 256))
            .collect();
        let members: Vec<(&str, u32)> = ids
            .iter()
            .map(|id| (id.as_str(), weight(&mut rng)))
            .collect();
        let reps = if n >= 10_000 { 3 } else { plan.reps.min(5) };
        let build_ms = per_run(reps, || Maglev::new(&members));
        let m = Maglev::new(&members).table_size();
        // Two bytes a slot while backend indices fit in a u16, then four,
        // plus the u32 population order.
        let slot_bytes = if n <= 65_536 { 2 } else { 4 };
        let bytes = m * slot_bytes + n * 4;
        let per = m as f64 / n as f64;
        println!(
            "| {n} | {m} | {per:.0} | {:.0} KiB | {build_ms:.2} |",
            bytes as f64 / 1024.0
        );
        let _ = writeln!(tsv, "{n}\t{m}\t{per:.1}\t{bytes}\t{build_ms:.3}");
    }
    println!();
    write(out, "maglev.tsv", &tsv);
}

/// A configuration file of `pools` pools of `per_pool` backends each, one
/// TCP listener per pool, every backend on its own loopback address.
fn config_text(pools: usize, per_pool: usize, policy: PolicyKind) -> String {
    let mut text = String::from("(\n    listeners: [\n");
    for p in 0..pools {
        let _ = writeln!(
            text,
            "        (name: \"l{p}\", bind: \"127.0.0.1:{}\", pool: \"p{p}\"),",
            20_000 + p
        );
    }
    text.push_str("    ],\n    pools: [\n");
    let mut rng = fastrand::Rng::with_seed(3);
    for p in 0..pools {
        let _ = writeln!(
            text,
            "        (name: \"p{p}\", policy: \"{policy}\", backends: ["
        );
        for b in 0..per_pool {
            let k = p * per_pool + b;
            let _ = writeln!(
                text,
                "            (address: \"10.{}.{}.{}:8080\", weight: {}),",
                k / 65_536,
                k / 256 % 256,
                k % 256,
                weight(&mut rng)
            );
        }
        text.push_str("        ]),\n");
    }
    text.push_str("    ],\n)\n");
    text
}

fn snapshots(plan: &Plan, out: &Path) {
    println!("### Snapshot of many pools: parse, build, publish, identical reload (ms, median)\n");
    println!("| pools × backends | policy | RON size | parse + validate | Registry::build | Shared::publish | reload apply (identical) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut tsv = String::from(
        "pools\tper_pool\tpolicy\tron_bytes\tparse_ms\tbuild_ms\tpublish_ms\tapply_ms\n",
    );
    let (mailboxes, _inboxes) = listener::mailboxes(2);
    for (pools, per_pool, policy) in SNAPSHOTS {
        let text = config_text(pools, per_pool, policy);
        let config = Config::parse(&text, "scale.ron").expect("generated config is valid");
        let reps = if pools * per_pool >= 10_000 {
            3
        } else {
            plan.reps.min(5)
        };
        let parse_ms = per_run(reps, || Config::parse(&text, "scale.ron").expect("valid"));
        let build_ms = per_run(reps, || Registry::build(&config));
        let shared = Shared::new(Registry::build(&config));
        // Publishing alone: the swap and the bookkeeping of backends that
        // left; each run publishes a snapshot built beforehand.
        let mut ready: Vec<Registry> = (0..=reps).map(|_| Registry::build(&config)).collect();
        let publish_ms = per_run(reps, || {
            let next = ready.pop().expect("one built per run");
            shared.publish(next);
        });
        drop(ready);
        let apply_ms = per_run(reps, || {
            reload::apply(&config, config.clone(), &shared, &mailboxes)
        });
        println!(
            "| {pools} × {per_pool} | {policy} | {:.1} MiB | {parse_ms:.1} | {build_ms:.1} | {publish_ms:.2} | {apply_ms:.1} |",
            text.len() as f64 / (1024.0 * 1024.0)
        );
        let _ = writeln!(
            tsv,
            "{pools}\t{per_pool}\t{policy}\t{}\t{parse_ms:.3}\t{build_ms:.3}\t{publish_ms:.4}\t{apply_ms:.3}",
            text.len()
        );
    }
    println!();
    write(out, "snapshot.tsv", &tsv);
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

fn out_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("bench-scale");
    std::fs::create_dir_all(&dir).expect("create target/bench-scale");
    dir
}

fn main() {
    let plan = Plan::from_env();
    let out = out_dir();
    // Only the part named on the command line (pick, maglev, snapshot), or all.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    if wants("pick") {
        picks(&plan, &out);
    }
    if wants("maglev") {
        maglev(&plan, &out);
    }
    if wants("snapshot") {
        snapshots(&plan, &out);
    }
    println!("data: {}", out.display());
}
