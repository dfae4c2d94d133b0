//! Exact behaviour of each policy, driven directly (no sockets).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;
use crate::backend::{Admin, Backend};

fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let addr = format!("127.0.0.1:{}", 9000 + i).parse().expect("addr");
            Arc::new(Backend::new(addr, w))
        })
        .collect()
}

/// `n` picks from one client with nothing tried, as letters a, b, c, …
fn sequence(policy: &Policy, b: &[Arc<Backend>], n: usize) -> String {
    let tried = Tried::default();
    let mut rng = fastrand::Rng::with_seed(1);
    (0..n)
        .map(|_| {
            let mut pick = Pick {
                client: "10.0.0.1".parse().expect("ip"),
                tried: &tried,
                rng: &mut rng,
                ignore_health: false,
                now_ms: 0,
                slow_start_ms: 0,
            };
            policy
                .pick(b, &mut pick)
                .map_or('-', |i| (b'a' + i as u8) as char)
        })
        .collect()
}

#[test]
fn round_robin_cycles_in_configuration_order() {
    let b = backends(&[1, 1, 1]);
    let p = Policy::new(PolicyKind::RoundRobin, &b);
    assert_eq!(sequence(&p, &b, 7), "abcabca");
}

#[test]
fn round_robin_skips_down_draining_and_zero_weight_backends() {
    let b = backends(&[1, 0, 1, 1]);
    b[2].set_up(false);
    let p = Policy::new(PolicyKind::RoundRobin, &b);
    assert_eq!(sequence(&p, &b, 4), "adad");
    b[3].set_admin(Admin::Drain);
    assert_eq!(sequence(&p, &b, 3), "aaa");
    b[0].set_up(false);
    assert_eq!(sequence(&p, &b, 2), "--", "nothing eligible: fail fast");
}

#[test]
fn every_policy_skips_tried_backends_and_fails_when_all_are_tried() {
    let b = backends(&[1, 2, 3]);
    for &kind in PolicyKind::ALL {
        let p = Policy::new(kind, &b);
        let mut tried = Tried::default();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut pick = Pick {
                client: "10.9.8.7".parse().expect("ip"),
                tried: &tried,
                rng: &mut rng,
                ignore_health: false,
                now_ms: 0,
                slow_start_ms: 0,
            };
            let i = p.pick(&b, &mut pick).expect("an untried backend is left");
            assert!(!seen.contains(&i), "{kind}: picked {i} twice");
            seen.push(i);
            tried.insert(i, b.len());
        }
        let mut pick = Pick {
            client: "10.9.8.7".parse().expect("ip"),
            tried: &tried,
            rng: &mut rng,
            ignore_health: false,
            now_ms: 0,
            slow_start_ms: 0,
        };
        assert_eq!(p.pick(&b, &mut pick), None, "{kind}");
    }
}

#[test]
fn weighted_round_robin_follows_the_smooth_sequence() {
    for (weights, want) in [
        (&[5, 1, 1][..], "aabacaa"),
        (&[1, 1, 1][..], "abcabc"),
        (&[2, 1][..], "abaaba"),
        (&[1, 2, 3][..], "cbacbc"),
        (&[3, 0, 1][..], "aacaaac"),
    ] {
        let b = backends(weights);
        let p = Policy::new(PolicyKind::WeightedRoundRobin, &b);
        assert_eq!(sequence(&p, &b, want.len()), want, "weights {weights:?}");
    }
}

#[test]
fn least_connections_prefers_the_least_loaded_relative_to_weight() {
    let b = backends(&[1, 1, 2]);
    b[0].active.store(3, Ordering::Relaxed);
    b[1].active.store(1, Ordering::Relaxed);
    b[2].active.store(3, Ordering::Relaxed); // 1.5 per weight unit
    let p = Policy::new(PolicyKind::LeastConnections, &b);
    assert_eq!(sequence(&p, &b, 3), "bbb");
    b[1].active.store(2, Ordering::Relaxed); // b: 2/1, c: 3/2
    assert_eq!(sequence(&p, &b, 2), "cc");
}

#[test]
fn least_connections_breaks_ties_in_turn() {
    let b = backends(&[1, 1, 1]);
    let p = Policy::new(PolicyKind::LeastConnections, &b);
    assert_eq!(sequence(&p, &b, 6), "abcabc");
}

/// Counts of `picks` picks per backend.
fn distribution(kind: PolicyKind, b: &[Arc<Backend>], picks: usize, seed: u64) -> Vec<usize> {
    let p = Policy::new(kind, b);
    let tried = Tried::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts = vec![0; b.len()];
    for _ in 0..picks {
        let mut pick = Pick {
            client: IpAddr::from([10, 0, 0, 1]),
            tried: &tried,
            rng: &mut rng,
            ignore_health: false,
            now_ms: 0,
            slow_start_ms: 0,
        };
        counts[p.pick(b, &mut pick).expect("eligible")] += 1;
    }
    counts
}

#[test]
fn random_follows_weights_within_statistical_bounds() {
    let b = backends(&[1, 2, 3, 4]);
    let n = 100_000;
    let counts = distribution(PolicyKind::Random, &b, n, 42);
    for (i, &c) in counts.iter().enumerate() {
        let expected = n as f64 * (i + 1) as f64 / 10.0;
        // Binomial standard deviation is under 160 here; 5 sigma.
        assert!(
            (c as f64 - expected).abs() < 800.0,
            "backend {i}: {c} vs {expected}"
        );
    }
}

#[test]
fn power_of_two_with_equal_load_spreads_evenly() {
    let b = backends(&[1, 1, 1, 1]);
    let n = 40_000;
    let counts = distribution(PolicyKind::PowerOfTwo, &b, n, 9);
    for (i, &c) in counts.iter().enumerate() {
        assert!((c as f64 - 10_000.0).abs() < 600.0, "backend {i}: {c}");
    }
}

#[test]
fn power_of_two_avoids_the_most_loaded_backend() {
    let b = backends(&[1, 1, 1, 1]);
    b[0].active.store(100, Ordering::Relaxed);
    let counts = distribution(PolicyKind::PowerOfTwo, &b, 10_000, 5);
    // The loaded one wins only if drawn with... nothing: any other is less loaded.
    assert_eq!(counts[0], 0, "{counts:?}");
}

#[test]
fn source_hash_sends_a_client_to_the_same_backend_every_time() {
    let b = backends(&[1, 1, 1, 1, 1]);
    let p = Policy::new(PolicyKind::SourceHash, &b);
    let tried = Tried::default();
    let mut rng = fastrand::Rng::with_seed(1);
    for last in 1..=50u8 {
        let client = IpAddr::from([192, 168, 7, last]);
        let pick = |rng: &mut fastrand::Rng| {
            p.pick(
                &b,
                &mut Pick {
                    client,
                    tried: &tried,
                    rng,
                    ignore_health: false,
                    now_ms: 0,
                    slow_start_ms: 0,
                },
            )
        };
        let first = pick(&mut rng);
        assert!(first.is_some());
        for _ in 0..5 {
            assert_eq!(pick(&mut rng), first, "client {client}");
        }
    }
}

/// Picks per backend with `slow_start_ms`, `elapsed_ms` after `b[ramping]`
/// came back up.
fn ramped_counts(
    kind: PolicyKind,
    b: &[Arc<Backend>],
    elapsed_ms: u64,
    picks: usize,
) -> Vec<usize> {
    let p = Policy::new(kind, b);
    let tried = Tried::default();
    let mut rng = fastrand::Rng::with_seed(21);
    let now_ms = crate::timer::millis(std::time::Instant::now()) + elapsed_ms;
    let mut counts = vec![0; b.len()];
    for _ in 0..picks {
        let mut pick = Pick {
            client: IpAddr::from([10, 0, 0, 2]),
            tried: &tried,
            rng: &mut rng,
            ignore_health: false,
            now_ms,
            slow_start_ms: 10_000,
        };
        counts[p.pick(b, &mut pick).expect("eligible")] += 1;
    }
    counts
}

#[test]
fn slow_start_gives_a_returning_backend_a_growing_share() {
    let b = backends(&[1, 1]);
    b[1].set_up(false);
    b[1].set_up(true);
    for kind in [
        PolicyKind::RoundRobin,
        PolicyKind::Random,
        PolicyKind::LeastConnections,
    ] {
        // A quarter of the way in it may be picked in a quarter of the
        // picks: its share is well below its usual half (an eighth to a
        // fifth, depending on how the policy moves on when it is skipped).
        let early = ramped_counts(kind, &b, 2_500, 20_000);
        let share = early[1] as f64 / 20_000.0;
        assert!(
            (0.10..0.23).contains(&share),
            "{kind}: share {share} at 25%"
        );
        // Slow start over: its full half again.
        let late = ramped_counts(kind, &b, 10_500, 20_000);
        let share = late[1] as f64 / 20_000.0;
        assert!((0.45..0.55).contains(&share), "{kind}: share {share} after");
    }
}

#[test]
fn slow_start_never_leaves_a_pool_without_a_backend() {
    let b = backends(&[1]);
    b[0].set_up(false);
    b[0].set_up(true);
    let counts = ramped_counts(PolicyKind::RoundRobin, &b, 1, 1_000);
    assert_eq!(counts, vec![1_000]);
}

#[test]
fn slow_start_leaves_source_hash_sticky() {
    let b = backends(&[1, 1]);
    b[1].set_up(false);
    b[1].set_up(true);
    let counts = ramped_counts(PolicyKind::SourceHash, &b, 100, 1_000);
    assert!(
        counts.contains(&1_000),
        "one client, one backend: {counts:?}"
    );
}
