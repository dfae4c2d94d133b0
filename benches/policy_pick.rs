//! Cost of one balancing decision for every policy, with 3, 100 and 1,000
//! backends, on one thread and on 8 threads picking from the same pool at
//! once (the shared cursors and active counters are the only shared state).
//! Run with `cargo bench --bench policy_pick`; prints ns per pick: for one
//! thread, its time per pick; for 8 threads, wall time over all their picks
//! (machine throughput, so on 2 cores no contention shows as about half the
//! one-thread figure, and a contention collapse as a figure far above it).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use balanciaga4::backend::Backend;
use balanciaga4::config::{HealthConfig, PolicyKind};
use balanciaga4::policy::{Pick, Tried};
use balanciaga4::pool::Pool;

const PICKS_PER_THREAD: usize = 1_000_000;

fn pool(kind: PolicyKind, backends: usize) -> Arc<Pool> {
    let mut rng = fastrand::Rng::with_seed(11);
    let backends: Vec<Arc<Backend>> = (0..backends)
        .map(|i| {
            let addr = format!("10.{}.{}.1:80", i / 256, i % 256)
                .parse()
                .expect("address");
            let b = Arc::new(Backend::new(addr, rng.u32(1..=10)));
            // Every backend busy: least-connections cannot stop early at an idle one.
            b.active.store(rng.usize(1..=100), Ordering::Relaxed);
            b
        })
        .collect();
    Arc::new(Pool::new("bench", kind, backends, HealthConfig::default()))
}

/// Wall-clock nanoseconds per pick, over all threads' picks.
fn run(pool: &Arc<Pool>, threads: usize) -> f64 {
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let pool = Arc::clone(pool);
            std::thread::spawn(move || {
                let tried = Tried::default();
                let mut rng = fastrand::Rng::with_seed(t as u64);
                let mut sum = 0usize;
                for n in 0..PICKS_PER_THREAD as u32 {
                    let client = IpAddr::from(n.to_be_bytes());
                    let mut pick = Pick::new(client, &tried, &mut rng, 0);
                    sum = sum.wrapping_add(pool.pick(&mut pick).unwrap_or(0));
                }
                sum
            })
        })
        .collect();
    let checksum: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    std::hint::black_box(checksum);
    started.elapsed().as_nanos() as f64 / (threads * PICKS_PER_THREAD) as f64
}

fn main() {
    println!(
        "Policy pick cost, {PICKS_PER_THREAD} picks per thread, random weights 1-10, 1-100 sessions per backend\n"
    );
    println!(
        "| policy | backends | ns/pick, 1 thread | ns/pick, 8 threads (wall / all picks) | build |"
    );
    println!("|---|---:|---:|---:|---:|");
    for &kind in PolicyKind::ALL {
        for backends in [3, 100, 1000] {
            let built = Instant::now();
            let pool = pool(kind, backends);
            let build_ms = built.elapsed().as_secs_f64() * 1000.0;
            let one = run(&pool, 1);
            let eight = run(&pool, 8);
            println!("| {kind} | {backends} | {one:.1} | {eight:.1} | {build_ms:.1} ms |");
        }
    }
}
