//! Tier selection: backups take new sessions only while no primary can,
//! under every policy, with their own weights and Maglev table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::backend::Admin;

/// Backends `a`, `b`, … on ports 9000, 9001, …: `(weight, backup)` each.
fn pool_of(kind: PolicyKind, spec: &[(u32, bool)]) -> Pool {
    let backends = spec
        .iter()
        .enumerate()
        .map(|(i, &(weight, backup))| {
            let addr = format!("127.0.0.1:{}", 9000 + i).parse().expect("addr");
            Arc::new(Backend::new(addr, weight).backup(backup))
        })
        .collect();
    Pool::new("p", kind, backends, HealthConfig::default())
}

/// Two primaries `a`, `b` and two backups `c`, `d`, all of weight 1.
fn two_and_two(kind: PolicyKind) -> Pool {
    pool_of(kind, &[(1, false), (1, false), (1, true), (1, true)])
}

/// The backend's letter by port (9000 is `a`), whatever its index.
fn letter(pool: &Pool, index: usize) -> char {
    let port = pool.backends[index].addr.port();
    (b'a' + (port - 9000) as u8) as char
}

fn client(n: usize) -> IpAddr {
    IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8])
}

/// How many of `n` picks (from `n` different clients) each backend got,
/// `-` counting picks that found none.
fn counts(pool: &Pool, n: usize) -> BTreeMap<char, usize> {
    counts_with(pool, n, &Tried::default())
}

fn counts_with(pool: &Pool, n: usize, tried: &Tried) -> BTreeMap<char, usize> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = BTreeMap::new();
    for i in 0..n {
        let mut pick = Pick::new(client(i), tried, &mut rng, 0);
        let got = pool.pick(&mut pick).map_or('-', |k| letter(pool, k));
        *out.entry(got).or_default() += 1;
    }
    out
}

fn only(got: &BTreeMap<char, usize>, allowed: &str) -> bool {
    got.keys().all(|c| allowed.contains(*c))
}

#[test]
fn backups_take_sessions_only_while_no_primary_is_up_under_every_policy() {
    for &kind in PolicyKind::ALL {
        let pool = two_and_two(kind);
        let got = counts(&pool, 200);
        assert!(only(&got, "ab"), "{kind}: primaries up: {got:?}");
        assert!(got.len() == 2, "{kind}: both primaries serve: {got:?}");

        pool.backends[0].set_up(false);
        let got = counts(&pool, 200);
        assert_eq!(
            got.get(&'b'),
            Some(&200),
            "{kind}: one primary left: {got:?}"
        );

        pool.backends[1].set_up(false);
        let got = counts(&pool, 200);
        assert!(only(&got, "cd"), "{kind}: primaries down: {got:?}");
        assert!(got.len() == 2, "{kind}: both backups share: {got:?}");

        pool.backends[1].set_up(true);
        let got = counts(&pool, 200);
        assert_eq!(
            got.get(&'b'),
            Some(&200),
            "{kind}: a primary is back: {got:?}"
        );
    }
}

#[test]
fn drained_disabled_or_zero_weight_primaries_hand_over_to_backups() {
    for &kind in PolicyKind::ALL {
        let pool = two_and_two(kind);
        pool.backends[0].set_admin(Admin::Drain);
        pool.backends[1].set_admin(Admin::Disabled);
        let got = counts(&pool, 50);
        assert!(only(&got, "cd"), "{kind}: {got:?}");
        pool.backends[1].set_admin(Admin::Enabled);
        pool.backends[1].set_weight(0);
        let got = counts(&pool, 50);
        assert!(only(&got, "cd"), "{kind}: weight 0: {got:?}");
    }
}

#[test]
fn backups_skip_their_own_down_members_and_fail_fast_when_all_are_down() {
    for &kind in PolicyKind::ALL {
        let pool = two_and_two(kind);
        for b in &pool.backends[..3] {
            b.set_up(false);
        }
        let got = counts(&pool, 50);
        assert_eq!(got.get(&'d'), Some(&50), "{kind}: {got:?}");
        pool.backends[3].set_up(false);
        let got = counts(&pool, 10);
        assert_eq!(
            got.get(&'-'),
            Some(&10),
            "{kind}: all down, fail fast: {got:?}"
        );
    }
}

#[test]
fn fail_open_with_everything_down_tries_primaries_first_then_backups() {
    for &kind in PolicyKind::ALL {
        let mut pool = two_and_two(kind);
        pool.health.when_all_down = AllDown::FailOpen;
        for b in &pool.backends {
            b.set_up(false);
        }
        let got = counts(&pool, 50);
        assert!(only(&got, "ab"), "{kind}: {got:?}");
        pool.backends[0].set_admin(Admin::Disabled);
        pool.backends[1].set_admin(Admin::Drain);
        let got = counts(&pool, 50);
        assert!(
            only(&got, "cd"),
            "{kind}: primaries out by the operator: {got:?}"
        );
        // A backup that is up is not fail-open territory.
        pool.backends[2].set_up(true);
        let got = counts(&pool, 50);
        assert_eq!(got.get(&'c'), Some(&50), "{kind}: {got:?}");
    }
}

#[test]
fn full_primaries_mean_waiting_not_backups() {
    for &kind in PolicyKind::ALL {
        let pool = two_and_two(kind);
        for b in &pool.backends[..2] {
            b.set_max_connections(1);
            assert!(b.try_acquire());
        }
        let got = counts(&pool, 20);
        assert_eq!(got.get(&'-'), Some(&20), "{kind}: {got:?}");
        assert!(pool.full_backends_left(&Tried::default()), "{kind}");
        // Once no primary is up, full backups are the ones to wait for.
        for b in &pool.backends {
            b.set_max_connections(1);
        }
        assert!(pool.backends[2].try_acquire() && pool.backends[3].try_acquire());
        pool.backends[0].set_up(false);
        pool.backends[1].set_up(false);
        assert!(pool.full_backends_left(&Tried::default()), "{kind}");
        pool.backends[2].set_up(false);
        pool.backends[3].set_up(false);
        assert!(!pool.full_backends_left(&Tried::default()), "{kind}");
    }
}

#[test]
fn a_retry_goes_to_backups_only_once_no_primary_is_up() {
    for &kind in PolicyKind::ALL {
        let pool = two_and_two(kind);
        let mut tried = Tried::default();
        tried.insert(0, 4);
        tried.insert(1, 4);
        // Failed on both primaries, which are still up: nothing is left.
        let got = counts_with(&pool, 10, &tried);
        assert_eq!(got.get(&'-'), Some(&10), "{kind}: {got:?}");
        // Passive detection marked them down: the backups take the retry,
        // and one that failed this client too is skipped.
        pool.backends[0].set_up(false);
        pool.backends[1].set_up(false);
        tried.insert(2, 4);
        let got = counts_with(&pool, 20, &tried);
        assert_eq!(got.get(&'d'), Some(&20), "{kind}: {got:?}");
    }
}

#[test]
fn backups_are_weighted_among_themselves() {
    let pool = pool_of(
        PolicyKind::WeightedRoundRobin,
        &[(5, false), (3, true), (1, true)],
    );
    pool.backends[0].set_up(false);
    let tried = Tried::default();
    let mut rng = fastrand::Rng::with_seed(1);
    let sequence: String = (0..8)
        .map(|_| {
            let mut pick = Pick::new(client(1), &tried, &mut rng, 0);
            pool.pick(&mut pick).map_or('-', |k| letter(&pool, k))
        })
        .collect();
    // Smooth weighted round robin over the backups alone: 3, 1.
    assert_eq!(sequence, "bbcbbbcb");
}

#[test]
fn source_hash_backups_have_their_own_table_and_leave_the_primaries_alone() {
    let with = two_and_two(PolicyKind::SourceHash);
    let without = pool_of(PolicyKind::SourceHash, &[(1, false), (1, false)]);
    // Backups alone, on the same addresses as in `with`.
    let backups_only = Pool::new(
        "p",
        PolicyKind::SourceHash,
        with.backends[2..].to_vec(),
        HealthConfig::default(),
    );
    let tried = Tried::default();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut pick_in = |pool: &Pool, n: usize| {
        let mut pick = Pick::new(client(n), &tried, &mut rng, 0);
        pool.pick(&mut pick).map(|k| pool.backends[k].addr)
    };
    for n in 0..300 {
        assert_eq!(pick_in(&with, n), pick_in(&without, n), "client {n}");
    }
    with.backends[0].set_up(false);
    with.backends[1].set_up(false);
    let mut seen = std::collections::HashSet::new();
    for n in 0..300 {
        let got = pick_in(&with, n);
        assert_eq!(got, pick_in(&backups_only, n), "client {n}");
        assert_eq!(got, pick_in(&with, n), "client {n} sticks");
        seen.insert(got);
    }
    assert_eq!(seen.len(), 2, "both backups get clients");
}

#[test]
fn backups_are_listed_after_the_primaries_in_configuration_order() {
    let pool = pool_of(
        PolicyKind::RoundRobin,
        &[(1, true), (1, false), (1, true), (1, false)],
    );
    let order: String = (0..4).map(|i| letter(&pool, i)).collect();
    assert_eq!(order, "bdac");
    let backups: Vec<bool> = (0..5).map(|i| pool.is_backup(i)).collect();
    assert_eq!(backups, [false, false, true, true, false]);
    let got = counts(&pool, 20);
    assert_eq!(got, BTreeMap::from([('b', 10), ('d', 10)]));
}

#[test]
fn a_pool_of_backups_only_serves_from_its_backups() {
    let pool = pool_of(PolicyKind::RoundRobin, &[(1, true), (1, true)]);
    let got = counts(&pool, 20);
    assert_eq!(got, BTreeMap::from([('a', 10), ('b', 10)]));
}

#[test]
fn another_policy_keeps_the_tiers() {
    let pool = two_and_two(PolicyKind::RoundRobin).with_policy(PolicyKind::LeastConnections);
    assert!(only(&counts(&pool, 20), "ab"));
    pool.backends[0].set_up(false);
    pool.backends[1].set_up(false);
    assert!(only(&counts(&pool, 20), "cd"));
}
