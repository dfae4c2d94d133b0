//! Host names of backends: looked up again on reload and every
//! `resolve_every`, keeping the last good answer when a lookup fails; and
//! how reloads meet each other (SIGHUPs coalesce) and admin actions (each
//! lands wholly before or after a reload).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Reloader;
use crate::config::{Config, PolicyKind};
use crate::control::Control;
use crate::listener;
use crate::registry::{Registry, Shared};

type Answers = Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const FILE: &str = r#"(
    listeners: [(name: "web", bind: "127.0.0.1:18080", pool: "db")],
    pools: [(name: "db", resolve_every: "10s", health: (enabled: false),
             backends: [(address: "db.test:5432"), (address: "10.0.0.9:5432")])],
)"#;

struct Fixture {
    reloader: Arc<Reloader>,
    shared: Arc<Shared>,
    answers: Answers,
    /// How long each look-up takes, in ms.
    lookup_ms: Arc<AtomicU64>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A reloader over `FILE`, whose DNS answers come from `answers`.
fn fixture(tag: &str) -> Fixture {
    let answers: Answers = Arc::new(Mutex::new(HashMap::from([(
        "db.test:5432".to_string(),
        vec![addr("10.0.0.1:5432"), addr("10.0.0.2:5432")],
    )])));
    let lookup_ms = Arc::new(AtomicU64::new(0));
    let lookup = {
        let answers = Arc::clone(&answers);
        let lookup_ms = Arc::clone(&lookup_ms);
        move |host: &str| {
            thread::sleep(Duration::from_millis(lookup_ms.load(Ordering::Relaxed)));
            answers
                .lock()
                .get(host)
                .cloned()
                .ok_or_else(|| format!("{host:?} does not resolve"))
        }
    };
    let dir = std::env::temp_dir().join(format!("b4-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("b4.ron");
    std::fs::write(&path, FILE).expect("write config");
    let config = Config::load_with(&path, &lookup).expect("valid config");
    let shared = Arc::new(Shared::new(Registry::build(&config)));
    let (mailboxes, _inboxes) = listener::mailboxes(1);
    let reloader = Arc::new(
        Reloader::new(
            Some(path),
            config,
            Arc::clone(&shared),
            Arc::new(Control::new()),
            mailboxes,
        )
        .with_resolver(lookup),
    );
    Fixture {
        reloader,
        shared,
        answers,
        lookup_ms,
        dir,
    }
}

fn backends(shared: &Shared) -> Vec<SocketAddr> {
    let (registry, _) = shared.snapshot();
    let mut all: Vec<SocketAddr> = registry.pools[0].backends.iter().map(|b| b.addr).collect();
    all.sort_unstable();
    all
}

#[test]
fn every_address_of_a_name_is_a_backend() {
    let f = fixture("every");
    assert_eq!(
        backends(&f.shared),
        [
            addr("10.0.0.1:5432"),
            addr("10.0.0.2:5432"),
            addr("10.0.0.9:5432")
        ]
    );
}

#[test]
fn resolve_every_applies_a_changed_answer_when_due_and_not_before() {
    let f = fixture("every-due");
    let start = Instant::now();
    f.reloader.refresh_names(start); // schedules the first lookup
    f.answers.lock().insert(
        "db.test:5432".into(),
        vec![addr("10.0.0.2:5432"), addr("10.0.0.3:5432")],
    );
    f.reloader.refresh_names(start + Duration::from_secs(5));
    assert!(
        backends(&f.shared).contains(&addr("10.0.0.1:5432")),
        "not due yet"
    );

    let (before, _) = f.shared.snapshot();
    let kept = Arc::clone(&before.pools[0].backends[1]);
    f.reloader.refresh_names(start + Duration::from_secs(10));
    assert_eq!(
        backends(&f.shared),
        [
            addr("10.0.0.2:5432"),
            addr("10.0.0.3:5432"),
            addr("10.0.0.9:5432")
        ]
    );
    // The address in both answers is the same backend, counters and all;
    // the one that left is retired so its sessions get a deadline.
    let (after, _) = f.shared.snapshot();
    assert!(after.pools[0]
        .backends
        .iter()
        .any(|b| Arc::ptr_eq(b, &kept)));
    assert!(before.pools[0].backends[0].is_retired());
}

#[test]
fn a_failed_lookup_keeps_the_last_good_answer_on_schedule_and_on_reload() {
    let f = fixture("last-good");
    let start = Instant::now();
    f.reloader.refresh_names(start);
    f.answers.lock().clear();
    let (_, epoch) = f.shared.snapshot();
    f.reloader.refresh_names(start + Duration::from_secs(10));
    assert_eq!(f.shared.snapshot().1, epoch, "nothing to publish");

    assert_eq!(f.reloader.reload_file(), Ok(()));
    assert_eq!(
        backends(&f.shared),
        [
            addr("10.0.0.1:5432"),
            addr("10.0.0.2:5432"),
            addr("10.0.0.9:5432")
        ]
    );
    let counters = &f.shared.counters;
    assert_eq!(counters.reloads_applied.load(Ordering::Relaxed), 1);
    assert_eq!(counters.reloads_failed.load(Ordering::Relaxed), 0);
}

#[test]
fn a_name_never_resolved_fails_the_reload_and_changes_nothing() {
    let f = fixture("never");
    let path = f.dir.join("b4.ron");
    std::fs::write(&path, FILE.replace("10.0.0.9:5432", "new.test:5432")).expect("rewrite");
    let (_, epoch) = f.shared.snapshot();
    let refused = f.reloader.reload_file().unwrap_err();
    assert!(refused.contains("new.test"), "{refused}");
    assert_eq!(f.shared.snapshot().1, epoch);
    let failed = f.shared.counters.reloads_failed.load(Ordering::Relaxed);
    assert_eq!(failed, 1);
}

#[test]
fn a_change_of_user_or_group_needs_a_restart_and_keeps_the_running_identity() {
    let fx = fixture("identity");
    let mut running = fx.reloader.running.lock().clone();
    running.global.user = Some("root".into());
    let mut next = running.clone();
    next.global.user = Some("nobody".into());
    next.global.group = Some("nogroup".into());
    assert_eq!(
        super::needs_restart(&running, &next),
        [
            "global.user (root → nobody)",
            "global.group (unset → nogroup)"
        ]
    );
    let kept = super::still_running(&running, next);
    assert_eq!(kept.global.user.as_deref(), Some("root"));
    assert_eq!(kept.global.group, None);
}

#[test]
fn sighups_during_a_reload_coalesce_into_one_more_reload() {
    let f = fixture("coalesce");
    f.lookup_ms.store(300, Ordering::Relaxed);
    let applied = || f.shared.counters.reloads_applied.load(Ordering::Relaxed);
    let trigger = super::spawn_reloads(Arc::clone(&f.reloader)).expect("reload thread");
    let asked = Instant::now();
    trigger.request();
    assert!(
        asked.elapsed() < Duration::from_millis(50),
        "the caller (the signal thread) never waits for the reload"
    );
    thread::sleep(Duration::from_millis(100)); // the first is in its look-up
    for _ in 0..5 {
        trigger.request();
    }
    let end = Instant::now() + Duration::from_secs(5);
    while applied() < 2 && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(700)); // time for a third, if any
    assert_eq!(
        applied(),
        2,
        "one reload, then one more for the five asked meanwhile"
    );
}

#[test]
fn the_resolver_skips_everything_while_no_pool_uses_resolve_every() {
    let f = fixture("no-every");
    f.lookup_ms.store(1000, Ordering::Relaxed);
    let mut running = f.reloader.running.lock();
    running.pools[0].resolve_every = None;
    drop(running);
    let asked = Instant::now();
    let start = Instant::now();
    for s in 0..3 {
        f.reloader
            .refresh_names(start + Duration::from_secs(10 * s));
    }
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "nothing looked up"
    );
}

#[test]
fn the_resolver_holds_no_lock_across_a_look_up() {
    let f = fixture("no-lock");
    let start = Instant::now();
    f.reloader.refresh_names(start); // schedules the first look-up
    f.lookup_ms.store(500, Ordering::Relaxed);
    let resolver = {
        let reloader = Arc::clone(&f.reloader);
        thread::spawn(move || reloader.refresh_names(start + Duration::from_secs(10)))
    };
    thread::sleep(Duration::from_millis(100)); // inside the slow look-up
    let waited = Instant::now();
    drop(f.reloader.running.lock());
    f.shared
        .set_policy("db", PolicyKind::Random)
        .expect("pool exists");
    assert!(
        waited.elapsed() < Duration::from_millis(200),
        "the running configuration and the registry stay free"
    );
    resolver.join().expect("resolver");
}

/// A reload of an unchanged file (weights 1 and 1, smooth weighted round
/// robin) races an admin action that gives the first backend weight 3,
/// many times. Whichever publishes last wins wholly: the picker of the
/// published pool was built for the weight the backend has, and that is
/// 1 (the reload came second and restated the file) or 3 (the action came
/// second). Never the action's weight with the reload's picker.
#[test]
fn an_admin_weight_racing_a_reload_is_never_half_undone() {
    let config = Config::parse(
        r#"(listeners: [(name: "web", bind: "127.0.0.1:18082", pool: "p")],
            pools: [(name: "p", policy: "weighted-round-robin", health: (enabled: false),
                     backends: [(address: "10.0.0.1:80", weight: 1),
                                (address: "10.0.0.2:80", weight: 1)])])"#,
        "race.ron",
    )
    .expect("valid config");
    let (mailboxes, _inboxes) = listener::mailboxes(1);
    let mut outcomes = [0; 2];
    for round in 0..300 {
        let shared = Arc::new(Shared::new(Registry::build(&config)));
        let start = Arc::new(Barrier::new(2));
        let admin = {
            let (shared, start) = (Arc::clone(&shared), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                shared
                    .set_weight("p", addr("10.0.0.1:80"), 3)
                    .expect("pool and backend exist");
            })
        };
        start.wait();
        super::apply(&config, config.clone(), &shared, &mailboxes);
        admin.join().expect("admin thread");
        let (registry, _) = shared.snapshot();
        let pool = &registry.pools[0];
        let weight = pool.backends[0].weight();
        let rebuilt = crate::policy::Policy::new(pool.policy.kind(), &pool.backends);
        assert_eq!(
            picks(&pool.policy, pool),
            picks(&rebuilt, pool),
            "round {round}: the published picker is not for weight {weight}"
        );
        outcomes[usize::from(weight == 3)] += 1;
    }
    println!("reload last: {}, admin last: {}", outcomes[0], outcomes[1]);
}

/// Eight picks of `policy` over `pool`'s backends, as backend indexes.
fn picks(policy: &crate::policy::Policy, pool: &crate::pool::Pool) -> Vec<Option<usize>> {
    let tried = crate::policy::Tried::default();
    let mut rng = fastrand::Rng::with_seed(1);
    let client = "192.0.2.1".parse().expect("ip");
    (0..8)
        .map(|_| {
            policy.pick(
                &pool.backends,
                &mut crate::policy::Pick::new(client, &tried, &mut rng, 0),
            )
        })
        .collect()
}

/// A reload that makes a primary a backup (and back) keeps the backend
/// itself, so its sessions, counters and health stay; the new pool's
/// tiers follow the flag.
#[test]
fn a_backup_flag_changed_by_reload_keeps_the_backend_and_moves_its_tier() {
    let file = |backup: bool| {
        Config::parse(
            &format!(
                r#"(listeners: [(name: "web", bind: "127.0.0.1:18083", pool: "p")],
                    pools: [(name: "p", health: (enabled: false),
                             backends: [(address: "10.0.0.1:80", backup: {backup}),
                                        (address: "10.0.0.2:80")])])"#
            ),
            "tiers.ron",
        )
        .expect("valid config")
    };
    let (primary, backup) = (file(false), file(true));
    let (mailboxes, _inboxes) = listener::mailboxes(1);
    let shared = Arc::new(Shared::new(Registry::build(&primary)));
    let (before, _) = shared.snapshot();
    let first = Arc::clone(&before.pools[0].backends[0]);
    assert!(first.try_acquire());
    first.set_up(false);

    let (_, changes) = super::apply(&primary, backup.clone(), &shared, &mailboxes);
    assert_eq!(
        (changes.retiered, changes.added, changes.removed),
        (1, 0, 0)
    );
    let (after, _) = shared.snapshot();
    let pool = &after.pools[0];
    let moved = pool
        .backends
        .iter()
        .position(|b| b.addr == addr("10.0.0.1:80"))
        .expect("kept");
    assert!(Arc::ptr_eq(&pool.backends[moved], &first), "same backend");
    assert!(pool.is_backup(moved) && first.is_backup());
    assert_eq!((first.active(), first.is_up()), (1, false));
    first.set_up(true);
    let tried = crate::policy::Tried::default();
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..4 {
        let mut pick =
            crate::policy::Pick::new("192.0.2.1".parse().expect("ip"), &tried, &mut rng, 0);
        let chosen = pool.pick(&mut pick).map(|i| pool.backends[i].addr);
        assert_eq!(chosen, Some(addr("10.0.0.2:80")), "the primary only");
    }

    let (_, changes) = super::apply(&backup, primary, &shared, &mailboxes);
    assert_eq!(changes.retiered, 1);
    assert!(!first.is_backup());
}

#[test]
fn a_reload_undoes_and_names_the_runtime_changes_its_file_does_not_repeat() {
    let file = |extra: &str| {
        format!(
            r#"(listeners: [(name: "web", bind: "127.0.0.1:18081", pool: "p")],
                pools: [(name: "p", health: (enabled: false), backends: [
                    (address: "10.0.0.1:80"), (address: "10.0.0.2:80"){extra}])])"#
        )
    };
    let running = Config::parse(&file(""), "a.ron").expect("valid");
    let shared = Shared::new(Registry::build(&running));
    let (mailboxes, _inboxes) = listener::mailboxes(1);
    let new = crate::registry::NewBackend {
        addr: addr("10.0.0.3:80"),
        weight: 1,
        backup: false,
    };
    shared.add_backend("p", new).expect("added");
    shared
        .set_weight("p", addr("10.0.0.1:80"), 5)
        .expect("weight");
    shared.set_policy("p", PolicyKind::Random).expect("policy");
    shared
        .set_admin("p", addr("10.0.0.2:80"), crate::backend::Admin::Drain)
        .expect("drain");

    // The new file lists the added backend, so only the others are undone.
    let next = Config::parse(&file(r#", (address: "10.0.0.3:80")"#), "b.ron").expect("valid");
    let (applied, changes) = super::apply(&running, next, &shared, &mailboxes);
    assert_eq!(
        changes.dropped,
        [
            "pool p policy random",
            "pool p backend 10.0.0.1:80 weight 5"
        ]
    );
    let (now, _) = shared.snapshot();
    assert!(now.runtime_changes().is_empty(), "the file is the truth");
    assert_eq!(*now.applied, applied);
    assert_eq!(now.pools[0].backends[0].weight(), 1);
    assert_eq!(now.pools[0].policy.kind(), PolicyKind::RoundRobin);
    assert_eq!(
        now.pools[0].backends[1].state(),
        crate::backend::State::Drain
    );
    assert_eq!(backends(&shared).len(), 3);
}
