//! Properties of the Maglev table: determinism, minimal disruption, shares.

use super::*;
use crate::policy::hash::client_key;
use quickcheck::{QuickCheck, TestResult};
use std::net::{IpAddr, Ipv4Addr};

/// `n` distinct identities shaped like the ones the pool passes.
fn identities(n: usize, rng: &mut fastrand::Rng) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        seen.insert(format!(
            "10.{}.{}.{}:{}",
            rng.u8(..),
            rng.u8(..),
            rng.u8(1..255),
            rng.u16(1..)
        ));
    }
    let mut ids: Vec<String> = seen.into_iter().collect();
    rng.shuffle(&mut ids);
    ids
}

fn keys(count: usize, rng: &mut fastrand::Rng) -> Vec<u64> {
    (0..count).map(|_| rng.u64(..)).collect()
}

fn table(ids: &[String], weights: &[u32]) -> Maglev {
    let backends: Vec<(&str, u32)> = ids
        .iter()
        .map(String::as_str)
        .zip(weights.iter().copied())
        .collect();
    Maglev::new(&backends)
}

/// Identity of each key's backend, all backends usable.
fn owners<'a>(t: &Maglev, ids: &'a [String], keys: &[u64]) -> Vec<Option<&'a str>> {
    keys.iter()
        .map(|&k| t.pick(k, |_| true).map(|i| ids[i].as_str()))
        .collect()
}

fn all_slots(t: &Maglev) -> Vec<usize> {
    (0..t.m).filter_map(|s| t.slots.owner(s)).collect()
}

/// Pool size 2..50 from quickcheck's byte.
fn pool_size(n: u8) -> usize {
    2 + usize::from(n) % 48
}

fn check<A: quickcheck::Arbitrary + fmt::Debug>(tests: u64, prop: fn(u64, A) -> TestResult) {
    QuickCheck::new()
        .tests(tests)
        .quickcheck(prop as fn(u64, A) -> TestResult);
}

#[test]
fn table_sizes_are_increasing_primes_on_which_cubing_is_a_bijection() {
    for pair in TABLE_SIZES.windows(2) {
        assert!(pair[0] < pair[1]);
    }
    for &m in &TABLE_SIZES {
        assert!(
            (2..).take_while(|d| d * d <= m).all(|d| m % d != 0),
            "{m} is not prime"
        );
        assert_eq!(m % 3, 2, "cubing is not a bijection modulo {m}");
    }
}

#[test]
fn every_walk_visits_every_slot_once() {
    for m in [TABLE_SIZES[0], 1_031] {
        for id in ["10.0.0.1:80", "[2001:db8::1]:443", ""] {
            let mut walk = Walk::new(id, m);
            let mut seen = vec![false; m as usize];
            for _ in 0..m {
                let slot = walk.step() as usize;
                assert!(!seen[slot], "{id:?} visits slot {slot} twice modulo {m}");
                seen[slot] = true;
            }
        }
    }
}

#[test]
fn table_has_at_least_a_hundred_slots_per_backend() {
    assert_eq!(table_size_for(1), 65_537);
    assert_eq!(table_size_for(3), 65_537);
    assert_eq!(table_size_for(655), 65_537);
    assert_eq!(table_size_for(656), 131_111);
    assert_eq!(table_size_for(1_000), 131_111);
    assert_eq!(table_size_for(1_312), 262_151);
    assert_eq!(table_size_for(usize::MAX), 16_777_259);
    let ids: Vec<String> = (0..1_000)
        .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
        .collect();
    let t = table(&ids, &[1; 1_000]);
    assert!(t.table_size() >= 100_003);
    assert_eq!(t.table_size(), 131_111);
}

#[test]
fn empty_pool_and_all_zero_weights_pick_nothing() {
    let empty = Maglev::new(&[]);
    assert_eq!(empty.table_size(), 0);
    assert_eq!(empty.pick(42, |_| true), None);
    let zero = Maglev::new(&[("10.0.0.1:80", 0), ("10.0.0.2:80", 0)]);
    assert_eq!(zero.table_size(), 0);
    for key in [0, 1, u64::MAX] {
        assert_eq!(
            zero.pick(key, |_| panic!("asked about a weight-0 backend")),
            None
        );
    }
}

#[test]
fn no_usable_backend_picks_nothing() {
    let mut rng = fastrand::Rng::with_seed(1);
    let ids = identities(20, &mut rng);
    let t = table(&ids, &[3; 20]);
    for key in keys(200, &mut rng) {
        assert_eq!(t.pick(key, |_| false), None);
    }
}

#[test]
fn weight_zero_backends_are_never_picked_nor_asked_about() {
    let mut rng = fastrand::Rng::with_seed(2);
    let ids = identities(12, &mut rng);
    let weights = [0, 1, 5, 0, 2, 0, 7, 1, 0, 3, 0, 1];
    let t = table(&ids, &weights);
    assert!(all_slots(&t).iter().all(|&b| weights[b] > 0));
    for key in keys(20_000, &mut rng) {
        // Fallback path too: a few backends down, differing per key.
        let down = key % 12;
        let picked = t.pick(key, |i| {
            assert!(weights[i] > 0, "asked about weight-0 backend {i}");
            i as u64 % 4 != down % 4
        });
        let picked = picked.expect("some positive-weight backend is usable");
        assert!(weights[picked] > 0);
    }
}

#[test]
fn a_single_usable_backend_is_found_even_when_probes_miss_it() {
    // One of 200 backends, 1/1991 of the table: its 800 probes miss it
    // two keys in three, and then the final scan must find it.
    let mut rng = fastrand::Rng::with_seed(3);
    let ids = identities(200, &mut rng);
    let mut weights = vec![10; 200];
    weights[137] = 1;
    let t = table(&ids, &weights);
    for key in keys(500, &mut rng) {
        assert_eq!(t.pick(key, |i| i == 137), Some(137));
    }
}

#[test]
fn extreme_weight_ratios_still_give_every_backend_a_slot() {
    let t = Maglev::new(&[("a", u32::MAX), ("b", 1), ("c", 1)]);
    let slots = all_slots(&t);
    assert_eq!(slots.len(), t.table_size());
    for b in 0..3 {
        assert!(slots.contains(&b), "backend {b} owns no slot");
    }
}

#[test]
fn reordering_the_configuration_changes_no_clients_backend_nor_fallback() {
    let mut rng = fastrand::Rng::with_seed(4);
    let ids = identities(30, &mut rng);
    // Three light backends are the only usable ones below: their 1% of
    // the table makes about a quarter of the fallbacks end in the scan.
    let weights: Vec<u32> = (0..30).map(|i| if i < 3 { 1 } else { 10 }).collect();
    let mut order: Vec<usize> = (0..30).collect();
    rng.shuffle(&mut order);
    let ids2: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
    let weights2: Vec<u32> = order.iter().map(|&i| weights[i]).collect();
    let (a, b) = (table(&ids, &weights), table(&ids2, &weights2));
    let by_id = |t: &Maglev, ids: &[String]| -> Vec<String> {
        all_slots(t).into_iter().map(|i| ids[i].clone()).collect()
    };
    assert_eq!(by_id(&a, &ids), by_id(&b, &ids2));
    let light = |id: &str| ids[..3].iter().any(|l| l == id);
    let (mut scanned, mut probed) = (0, 0);
    for key in keys(4_000, &mut rng) {
        let mut asked = 0;
        let x = a.pick(key, |i| {
            asked += 1;
            light(&ids[i])
        });
        let y = b.pick(key, |i| light(&ids2[i]));
        assert_eq!(x.map(|i| &ids[i]), y.map(|i| &ids2[i]), "key {key}");
        if asked > a.probes {
            scanned += 1;
        } else if asked > 1 {
            probed += 1;
        }
    }
    assert!(
        scanned > 100 && probed > 100,
        "{scanned} scans, {probed} probes"
    );
}

#[test]
fn tables_built_apart_with_other_allocations_in_between_are_identical() {
    let mut rng = fastrand::Rng::with_seed(5);
    let ids = identities(40, &mut rng);
    let weights: Vec<u32> = (0..40).map(|_| rng.u32(1..=10)).collect();
    let first = table(&ids, &weights);
    // Unrelated state that differs run to run: randomly keyed hash maps,
    // heap churn, another thread building its own copy from new strings.
    let mut noise = std::collections::HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        noise.insert(id.clone(), vec![i; i]);
    }
    let copies: Vec<String> = noise.keys().cloned().collect();
    drop(copies);
    let (ids2, weights2) = (ids.clone(), weights.clone());
    let second = std::thread::spawn(move || table(&ids2, &weights2))
        .join()
        .expect("building thread");
    assert!(first == second);
    let ks = keys(5_000, &mut rng);
    assert_eq!(owners(&first, &ids, &ks), owners(&second, &ids, &ks));
}

#[test]
fn table_and_picks_are_pinned_across_releases() {
    // A change here moves sticky clients on every balancer in a fleet
    // that upgrades: treat it as a breaking change. The values were
    // computed by a separate straightforward implementation of the
    // documented algorithm (j³ by modular exponentiation, not by finite
    // differences), not by this code.
    let picks = |t: &Maglev, usable: &dyn Fn(usize) -> bool| -> Vec<usize> {
        (1..=12u8)
            .filter_map(|i| t.pick(client_key(Ipv4Addr::new(192, 0, 2, i).into()), usable))
            .collect()
    };
    let t = Maglev::new(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 2), ("10.0.0.3:80", 3)]);
    let bytes: Vec<u8> = all_slots(&t).iter().map(|&b| b as u8).collect();
    assert_eq!(hash64(&bytes, 0), 0xe17c_a369_8dfe_fa96);
    assert_eq!(picks(&t, &|_| true), [2, 0, 0, 2, 0, 2, 2, 1, 2, 0, 2, 1]);
    assert_eq!(picks(&t, &|b| b != 2), [1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 1]);
    // Only three light backends usable: clients 2 and 7 reach the scan.
    let ids: Vec<String> = (0..30).map(|i| format!("10.0.0.{i}:80")).collect();
    let weights: Vec<u32> = (0..30).map(|i| if i < 3 { 1 } else { 10 }).collect();
    let t = table(&ids, &weights);
    assert_eq!(picks(&t, &|b| b < 3), [0, 1, 2, 1, 0, 0, 0, 1, 1, 2, 1, 2]);
}

#[test]
fn four_byte_table_gives_the_same_picks_as_two_byte_table() {
    let mut rng = fastrand::Rng::with_seed(6);
    let ids = identities(25, &mut rng);
    let backends: Vec<(&str, u32)> = ids.iter().map(|id| (id.as_str(), rng.u32(0..5))).collect();
    let narrow = Maglev::build(&backends, false);
    let wide = Maglev::build(&backends, true);
    assert!(matches!(narrow.slots, Slots::Narrow(_)));
    assert!(matches!(wide.slots, Slots::Wide(_)));
    assert_eq!(all_slots(&narrow), all_slots(&wide));
    for key in keys(2_000, &mut rng) {
        let usable = |i: usize| !i.is_multiple_of(3);
        assert_eq!(narrow.pick(key, usable), wide.pick(key, usable));
    }
}

/// Share of `keys` per backend against the weight share.
fn assert_shares_follow_weights(weights: &[u32], seed: u64, key_count: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = identities(weights.len(), &mut rng);
    let t = table(&ids, weights);
    let mut counts = vec![0usize; weights.len()];
    for key in keys(key_count, &mut rng) {
        counts[t.pick(key, |_| true).expect("all usable")] += 1;
    }
    let total: u32 = weights.iter().sum();
    for (b, (&count, &w)) in counts.iter().zip(weights).enumerate() {
        let expected = key_count as f64 * f64::from(w) / f64::from(total);
        let ratio = count as f64 / expected;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "backend {b} of weight {w}: {count} keys, expected {expected:.0}"
        );
    }
}

#[test]
fn equal_weights_share_keys_equally() {
    assert_shares_follow_weights(&[1; 20], 7, 200_000);
    assert_shares_follow_weights(&[5; 3], 8, 100_000);
}

#[test]
fn random_weights_share_keys_in_proportion() {
    let mut rng = fastrand::Rng::with_seed(9);
    let weights: Vec<u32> = (0..20).map(|_| rng.u32(1..=10)).collect();
    assert_shares_follow_weights(&weights, 10, 400_000);
}

#[test]
fn table_shares_match_weights_within_a_slot_or_two() {
    let mut rng = fastrand::Rng::with_seed(11);
    for n in [2, 7, 50, 300] {
        let ids = identities(n, &mut rng);
        let weights: Vec<u32> = (0..n).map(|_| rng.u32(1..=10)).collect();
        let t = table(&ids, &weights);
        let mut counts = vec![0u64; n];
        for b in all_slots(&t) {
            counts[b] += 1;
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        for (b, &count) in counts.iter().enumerate() {
            let exact = t.m as f64 * f64::from(weights[b]) / total as f64;
            assert!(
                (count as f64 - exact).abs() <= 2.0,
                "n={n}: backend {b} owns {count} slots, weight share {exact:.1}"
            );
        }
    }
}

#[test]
fn real_client_addresses_spread_by_weight() {
    // Sequential addresses of one /16, as behind a NAT pool.
    let weights = [1, 2, 3, 4];
    let ids = identities(4, &mut fastrand::Rng::with_seed(12));
    let t = table(&ids, &weights);
    let mut counts = [0usize; 4];
    for n in 0..65_536u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a_01_00_00 | n));
        counts[t.pick(client_key(ip), |_| true).expect("all usable")] += 1;
    }
    for (b, &count) in counts.iter().enumerate() {
        let expected = 65_536.0 * f64::from(weights[b]) / 10.0;
        let ratio = count as f64 / expected;
        assert!((0.95..=1.05).contains(&ratio), "backend {b}: {count} keys");
    }
}

#[test]
fn clients_of_a_down_backend_spread_over_the_others_by_weight() {
    let mut rng = fastrand::Rng::with_seed(13);
    let ids = identities(10, &mut rng);
    let weights = [4, 1, 2, 3, 4, 5, 6, 7, 8, 10];
    let t = table(&ids, &weights);
    let down = 0;
    let mut counts = [0usize; 10];
    let mut moved = 0usize;
    for key in keys(400_000, &mut rng) {
        if t.pick(key, |_| true) == Some(down) {
            counts[t.pick(key, |i| i != down).expect("others usable")] += 1;
            moved += 1;
        }
    }
    let others: u32 = weights.iter().sum::<u32>() - weights[down];
    for b in 1..10 {
        let expected = moved as f64 * f64::from(weights[b]) / f64::from(others);
        let ratio = counts[b] as f64 / expected;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "backend {b} of weight {}: took {} of {moved}, expected {expected:.0}",
            weights[b],
            counts[b]
        );
    }
}

fn same_inputs_give_same_picks(seed: u64, n: u8) -> TestResult {
    let n = pool_size(n);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = identities(n, &mut rng);
    let weights: Vec<u32> = (0..n).map(|_| rng.u32(0..=10)).collect();
    let (a, b) = (table(&ids, &weights), table(&ids.clone(), &weights.clone()));
    let down = rng.usize(..n);
    let same = keys(1_000, &mut rng).into_iter().all(|k| {
        a.pick(k, |_| true) == b.pick(k, |_| true)
            && a.pick(k, |i| i != down) == b.pick(k, |i| i != down)
    });
    TestResult::from_bool(same && a == b)
}

#[test]
fn independently_built_tables_agree_on_every_key() {
    check(15, same_inputs_give_same_picks as fn(u64, u8) -> TestResult);
}

fn only_a_down_backends_keys_move(seed: u64, n: u8) -> TestResult {
    let n = pool_size(n);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = identities(n, &mut rng);
    let weights: Vec<u32> = (0..n).map(|_| rng.u32(1..=10)).collect();
    let t = table(&ids, &weights);
    let down = rng.usize(..n);
    for key in keys(2_000, &mut rng) {
        let before = t.pick(key, |_| true);
        let after = t.pick(key, |i| i != down);
        let ok = match before {
            Some(b) if b == down => after.is_some_and(|a| a != down),
            other => after == other,
        };
        if !ok {
            return TestResult::error(format!("key {key}: {before:?} -> {after:?}"));
        }
    }
    TestResult::passed()
}

#[test]
fn a_backend_going_down_moves_only_its_own_keys() {
    check(
        25,
        only_a_down_backends_keys_move as fn(u64, u8) -> TestResult,
    );
}

fn trying_in_preference_order_visits_each_backend_once(seed: u64, n: u8) -> TestResult {
    let n = pool_size(n);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = identities(n, &mut rng);
    let weights: Vec<u32> = (0..n).map(|_| rng.u32(0..=3)).collect();
    let t = table(&ids, &weights);
    let pickable = weights.iter().filter(|&&w| w > 0).count();
    for key in keys(20, &mut rng) {
        let mut tried = vec![false; n];
        let mut order = Vec::new();
        while let Some(b) = t.pick(key, |i| !tried[i]) {
            if tried[b] {
                return TestResult::error(format!("{b} picked twice"));
            }
            tried[b] = true;
            order.push(b);
        }
        if order.len() != pickable {
            return TestResult::error(format!("visited {order:?}"));
        }
        // The preference order is a property of the key alone.
        let mut again = vec![false; n];
        for &b in &order {
            if t.pick(key, |i| !again[i]) != Some(b) {
                return TestResult::error("preference order not repeatable".to_string());
            }
            again[b] = true;
        }
    }
    TestResult::passed()
}

#[test]
fn retries_walk_each_keys_own_preference_order_through_every_backend() {
    check(
        20,
        trying_in_preference_order_visits_each_backend_once as fn(u64, u8) -> TestResult,
    );
}

/// Fraction of `keys` whose backend identity differs between tables.
fn moved_fraction(
    (a, a_ids): (&Maglev, &[String]),
    (b, b_ids): (&Maglev, &[String]),
    keys: &[u64],
    only_from: impl Fn(&str) -> bool,
) -> (f64, usize) {
    let before = owners(a, a_ids, keys);
    let after = owners(b, b_ids, keys);
    let mut considered = 0usize;
    let mut moved = 0usize;
    for (x, y) in before.iter().zip(&after) {
        if let Some(x) = x {
            if only_from(x) {
                considered += 1;
                moved += usize::from(Some(*x) != *y);
            }
        }
    }
    (moved as f64 / considered.max(1) as f64, considered)
}

fn removing_a_backend_moves_its_keys_and_few_others(seed: u64, n: u8) -> TestResult {
    let n = pool_size(n);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = identities(n, &mut rng);
    let weights: Vec<u32> = (0..n).map(|_| rng.u32(1..=10)).collect();
    let gone = rng.usize(..n);
    let (mut ids2, mut weights2) = (ids.clone(), weights.clone());
    ids2.remove(gone);
    weights2.remove(gone);
    let (before, after) = (table(&ids, &weights), table(&ids2, &weights2));
    let ks = keys(4_000, &mut rng);
    let gone_id = ids[gone].as_str();
    let (its_moved, _) = moved_fraction((&before, &ids), (&after, &ids2), &ks, |id| id == gone_id);
    let (others_moved, _) =
        moved_fraction((&before, &ids), (&after, &ids2), &ks, |id| id != gone_id);
    if its_moved < 1.0 || others_moved > 0.03 {
        return TestResult::error(format!(
            "n={n}: {its_moved:.3} of the removed backend's keys and \
             {others_moved:.3} of the others' moved"
        ));
    }
    TestResult::passed()
}

#[test]
fn removing_a_backend_moves_all_its_keys_and_at_most_3_percent_of_others() {
    check(
        20,
        removing_a_backend_moves_its_keys_and_few_others as fn(u64, u8) -> TestResult,
    );
}

#[test]
fn removing_one_of_a_thousand_backends_moves_under_3_percent_of_the_others_keys() {
    let mut rng = fastrand::Rng::with_seed(15);
    let ids = identities(1_000, &mut rng);
    let weights: Vec<u32> = (0..1_000).map(|_| rng.u32(1..=10)).collect();
    let gone = rng.usize(..1_000);
    let (mut ids2, mut weights2) = (ids.clone(), weights.clone());
    ids2.remove(gone);
    weights2.remove(gone);
    let (before, after) = (table(&ids, &weights), table(&ids2, &weights2));
    let ks = keys(50_000, &mut rng);
    let gone_id = ids[gone].as_str();
    let (others_moved, _) =
        moved_fraction((&before, &ids), (&after, &ids2), &ks, |id| id != gone_id);
    assert!(
        others_moved < 0.03,
        "{others_moved:.4} of the others' keys moved"
    );
}

fn adding_a_backend_moves_about_its_share(seed: u64, (n, equal): (u8, bool)) -> TestResult {
    let n = pool_size(n);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids = identities(n + 1, &mut rng);
    let weights: Vec<u32> = (0..=n)
        .map(|_| if equal { 1 } else { rng.u32(1..=10) })
        .collect();
    let added = rng.usize(..=n);
    let (mut ids_before, mut weights_before) = (ids.clone(), weights.clone());
    ids_before.remove(added);
    weights_before.remove(added);
    let (before, after) = (table(&ids_before, &weights_before), table(&ids, &weights));
    let ks = keys(4_000, &mut rng);
    let (moved, _) = moved_fraction((&before, &ids_before), (&after, &ids), &ks, |_| true);
    let share = f64::from(weights[added]) / f64::from(weights.iter().sum::<u32>());
    if equal && (share - 1.0 / (n as f64 + 1.0)).abs() > 1e-9 {
        return TestResult::error("equal weights, unequal share".to_string());
    }
    if moved > share + 0.03 {
        return TestResult::error(format!(
            "n={n}: {moved:.3} of keys moved, new backend's share {share:.3}"
        ));
    }
    TestResult::passed()
}

#[test]
fn adding_a_backend_moves_at_most_its_share_plus_3_percent_of_keys() {
    check(
        20,
        adding_a_backend_moves_about_its_share as fn(u64, (u8, bool)) -> TestResult,
    );
}

/// Build and pick timings; run with
/// `cargo test --release -- --ignored --nocapture pick_and_build_timings`.
#[test]
#[ignore = "timing report, meaningful only in a release build"]
fn pick_and_build_timings() {
    use std::hint::black_box;
    use std::time::Instant;
    let mut rng = fastrand::Rng::with_seed(14);
    let ks = keys(1 << 20, &mut rng);
    for n in [3usize, 100, 1_000] {
        let ids = identities(n, &mut rng);
        let weights: Vec<u32> = (0..n).map(|_| rng.u32(1..=10)).collect();
        let started = Instant::now();
        let builds = 10;
        let mut t = table(&ids, &weights);
        for _ in 1..builds {
            t = black_box(table(&ids, &weights));
        }
        let build = started.elapsed() / builds;
        let per_pick = |usable: &dyn Fn(usize) -> bool| {
            let rounds = 5;
            let started = Instant::now();
            let mut sum = 0usize;
            for _ in 0..rounds {
                for &k in &ks {
                    sum = sum.wrapping_add(t.pick(black_box(k), usable).unwrap_or(0));
                }
            }
            black_box(sum);
            started.elapsed().as_nanos() as f64 / (rounds * ks.len()) as f64
        };
        let all_up = per_pick(&|_| true);
        let one_down = per_pick(&|i| i != 0);
        let half_down = per_pick(&|i| i % 2 == 0);
        println!(
            "{n:>5} backends: M = {:>7}, build {build:>10.2?}, pick {all_up:.1} ns \
             (one down {one_down:.1} ns, half down {half_down:.1} ns)",
            t.table_size()
        );
    }
    let ips: Vec<IpAddr> = ks
        .iter()
        .map(|&k| IpAddr::V4(Ipv4Addr::from(k as u32)))
        .collect();
    let started = Instant::now();
    let mut sum = 0u64;
    for &ip in &ips {
        sum = sum.wrapping_add(client_key(black_box(ip)));
    }
    black_box(sum);
    println!(
        "client_key(IPv4): {:.1} ns",
        started.elapsed().as_nanos() as f64 / ips.len() as f64
    );
}
