//! Host names of backends: looked up again on reload and every
//! `resolve_every`, keeping the last good answer when a lookup fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Reloader;
use crate::config::Config;
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
    reloader: Reloader,
    shared: Arc<Shared>,
    answers: Answers,
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
    let lookup = {
        let answers = Arc::clone(&answers);
        move |host: &str| {
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
    let reloader = Reloader::new(
        Some(path),
        config,
        Arc::clone(&shared),
        Arc::new(Control::new()),
        mailboxes,
    )
    .with_resolver(lookup);
    Fixture {
        reloader,
        shared,
        answers,
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

    f.reloader.reload_file();
    assert_eq!(
        backends(&f.shared),
        [
            addr("10.0.0.1:5432"),
            addr("10.0.0.2:5432"),
            addr("10.0.0.9:5432")
        ]
    );
    let counters = &f.shared.counters;
    assert_eq!(
        counters
            .reloads_applied
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        counters
            .reloads_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_name_never_resolved_fails_the_reload_and_changes_nothing() {
    let f = fixture("never");
    let path = f.dir.join("b4.ron");
    std::fs::write(&path, FILE.replace("10.0.0.9:5432", "new.test:5432")).expect("rewrite");
    let (_, epoch) = f.shared.snapshot();
    f.reloader.reload_file();
    assert_eq!(f.shared.snapshot().1, epoch);
    let failed = f
        .shared
        .counters
        .reloads_failed
        .load(std::sync::atomic::Ordering::Relaxed);
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
