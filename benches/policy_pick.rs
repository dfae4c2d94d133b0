//! Cost of one balancing decision, with 1, 2 and 8 threads picking from the
//! same pool at once (the shared round-robin cursor is the only contended
//! state). Run with `cargo bench --bench policy_pick`; prints ns per pick.

use std::sync::Arc;
use std::time::Instant;

use balanciaga4::config::PolicyKind;
use balanciaga4::policy::Policy;
use balanciaga4::policy::Tried;
use balanciaga4::registry::{Backend, Pool};

const PICKS_PER_THREAD: usize = 2_000_000;

fn pool(backends: usize) -> Arc<Pool> {
    Arc::new(Pool {
        name: Arc::from("bench"),
        policy: Policy::new(PolicyKind::RoundRobin),
        backends: (0..backends)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 10_000 + i)
                    .parse()
                    .expect("address");
                Arc::new(Backend::new(addr, 1))
            })
            .collect(),
    })
}

fn main() {
    for threads in [1, 2, 8] {
        let pool = pool(8);
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let mut sum = 0usize;
                    let tried = Tried::default();
                    for _ in 0..PICKS_PER_THREAD {
                        sum = sum.wrapping_add(pool.pick(&tried).unwrap_or(0));
                    }
                    sum
                })
            })
            .collect();
        let checksum: usize = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
        let elapsed = started.elapsed();
        let picks = (threads * PICKS_PER_THREAD) as f64;
        println!(
            "round-robin, 8 backends, {threads} threads: {:.1} ns/pick wall, {:.1} ns/pick per thread (checksum {checksum})",
            elapsed.as_nanos() as f64 / picks,
            elapsed.as_nanos() as f64 * threads as f64 / picks,
        );
    }
}
