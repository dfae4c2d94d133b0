//! Applying a changed configuration file to the running balancer.
//!
//! Owns the decision of what a reload may change live and the building of
//! the next registry snapshot from the new file: pools, policies, backends
//! (added, removed, re-weighted), health settings, timeouts and retries
//! change for new sessions at once; listeners are added (bound here, on the
//! `reload` thread, then handed to every reactor) and removed (each reactor
//! closes its sockets when it sees the snapshot); what cannot change live
//! (workers, buffer size, log level, user and group) is reported as needing a restart and
//! otherwise left as it runs. It builds the snapshot outside the registry
//! lock, publishes it and wakes the reactors; a file that fails to load
//! changes nothing, and a listener that cannot bind is left as it was.
//!
//! Threads: SIGHUPs are applied on the `reload` thread ([`spawn_reloads`];
//! requests that arrive during a reload coalesce into one more), and
//! `resolve_every` look-ups on the `resolver` thread ([`spawn_resolver`]).
//! Neither holds a lock across a look-up: the running configuration's lock
//! is taken only to apply, and the registry's publishing lock only from
//! reading the current snapshot to publishing the next. It may touch the
//! running configuration, the registry (`Shared`), listening sockets and
//! the reactors' mailboxes and waker; never a session.
//!
//! Backends are matched by pool name and address: a kept backend is the
//! very same `Arc<Backend>` in the new snapshot (re-weighted in place), so
//! its counters, health and operator state carry over. A removed backend is
//! marked retired: sessions already open on it hold the old pool and may
//! finish until the drain deadline, when their reactor closes them.
//!
//! The file is the truth: runtime changes made by admin actions (backends
//! added or removed, weights, policies) that the new file does not repeat
//! are undone, each named in a warning; drain and disable, which a file
//! cannot express, stay with the kept backend.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use parking_lot::Mutex;

use crate::admission::Admission;
use crate::backend::Backend;
use crate::config::{resolve_host, Config, ConfigError, ListenerConfig};
use crate::control::Control;
use crate::listener::{self, Bound, Mailboxes};
use crate::metrics::events;
use crate::preflight;
use crate::registry::{Registry, Shared};
use crate::service;

/// What one reload changed, for its log lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Backends (addresses) new to their pool, matched by pool name and
    /// address; a host name counts each address it resolved to.
    pub added: usize,
    /// Backends no pool of the new file has: retired, their sessions on
    /// notice until the drain deadline.
    pub removed: usize,
    /// Kept backends whose weight changed.
    pub reweighted: usize,
    /// Backends that became backups, or primaries again.
    pub retiered: usize,
    /// New listeners that were bound, as `NAME on BIND`.
    pub listeners_added: Vec<String>,
    /// Listeners the new file no longer has, as `NAME on BIND`.
    pub listeners_removed: Vec<String>,
    /// Listeners left as they were because a new address could not be bound.
    pub listeners_failed: Vec<String>,
    /// Settings that only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// Runtime changes (admin actions) the new file does not keep, as
    /// `RuntimeChange`'s text: the file is the truth, so they are undone.
    pub dropped: Vec<String>,
}

/// Everything a reload touches: the file, what runs now, and where to
/// publish. Applying is serialised by the running configuration's lock.
pub struct Reloader {
    path: Option<PathBuf>,
    running: Mutex<Config>,
    shared: Arc<Shared>,
    control: Arc<Control>,
    mailboxes: Mailboxes,
    /// When each pool with `resolve_every` next looks its names up.
    lookups: Mutex<HashMap<String, Instant>>,
    /// Which pools have `resolve_every`, as of a registry epoch.
    names: Mutex<NamedPools>,
    resolve: Box<Lookup>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The look-up function has nothing to show.
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("mailboxes", &self.mailboxes)
            .finish_non_exhaustive()
    }
}

/// The pools with `resolve_every` (name, period, host names) of the running
/// configuration as it was at registry epoch `epoch`.
#[derive(Debug, Default)]
struct NamedPools {
    epoch: Option<u64>,
    pools: Vec<(String, Duration, Vec<String>)>,
}

impl NamedPools {
    fn of(running: &Config, epoch: u64) -> NamedPools {
        let pools = running
            .pools
            .iter()
            .filter_map(|p| {
                let every = p.resolve_every?;
                let mut hosts: Vec<String> = Vec::new();
                for host in p.backends.iter().filter_map(|b| b.host.as_ref()) {
                    if !hosts.contains(host) {
                        hosts.push(host.clone());
                    }
                }
                Some((p.name.clone(), every, hosts))
            })
            .collect();
        NamedPools {
            epoch: Some(epoch),
            pools,
        }
    }
}

/// What a look-up of one host name gave.
type Answer = Result<Vec<SocketAddr>, String>;

/// A host name lookup: `HOST:PORT` to addresses, or a full error message.
type Lookup = dyn Fn(&str) -> Result<Vec<SocketAddr>, String> + Send + Sync;

impl Reloader {
    /// A reloader for a balancer started from `path` (`None` in quick
    /// mode: SIGHUP then has nothing to re-read) running `running`, which
    /// publishes to `shared` and hands new sockets to `mailboxes`.
    pub fn new(
        path: Option<PathBuf>,
        running: Config,
        shared: Arc<Shared>,
        control: Arc<Control>,
        mailboxes: Mailboxes,
    ) -> Reloader {
        Reloader {
            path,
            running: Mutex::new(running),
            shared,
            control,
            mailboxes,
            lookups: Mutex::new(HashMap::new()),
            names: Mutex::new(NamedPools::default()),
            resolve: Box::new(resolve_host),
        }
    }

    /// The same with another name lookup than the system's (for tests).
    pub fn with_resolver(
        mut self,
        resolve: impl Fn(&str) -> Result<Vec<SocketAddr>, String> + Send + Sync + 'static,
    ) -> Reloader {
        self.resolve = Box::new(resolve);
        self
    }

    /// What SIGHUP does (on the `reload` thread): re-read the file the
    /// balancer was started with and apply it; in quick mode there is no
    /// file to re-read. Look-ups and host checks run with no lock held; the
    /// running configuration is locked only to apply, which binds and
    /// publishes but looks nothing up.
    pub fn reload_file(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            warn!("started without --config: there is no file to reload");
            return Err("started without --config: there is no file to reload".into());
        };
        let known = self.running.lock().clone();
        let resolve = |host: &str| (self.resolve)(host).or_else(|e| last_good(&known, host, e));
        let origin = path.display().to_string();
        let loaded = Config::load_with(path, &resolve)
            .and_then(|next| preflight::check(&next, Some(&origin)).map(|()| next));
        match loaded {
            Ok(next) => {
                let mut running = self.running.lock();
                let applied = self.apply(&running, next, &origin);
                *running = applied;
                self.shared
                    .counters
                    .reloads_applied
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed(path, &e);
                Err(e.to_string())
            }
        }
    }

    /// Looks up again the backend host names of pools whose `resolve_every`
    /// is due, and applies the running configuration with the new answers
    /// if any changed. A name that fails keeps its last good answer. The
    /// look-ups run with no lock held, so a slow resolver holds up neither
    /// a reload nor anything else. Nothing is looked up while no pool uses
    /// `resolve_every`, and which pools do is read again only after a
    /// publish moved the registry's epoch.
    pub fn refresh_names(&self, now: Instant) {
        let due = self.due_names(now);
        if due.is_empty() {
            return;
        }
        let answers: Vec<(&str, &str, Answer)> = due
            .iter()
            .flat_map(|(pool, hosts)| hosts.iter().map(move |host| (pool.as_str(), host.as_str())))
            .map(|(pool, host)| (pool, host, (self.resolve)(host)))
            .collect();
        let mut running = self.running.lock();
        let mut next = running.clone();
        let mut changed = Vec::new();
        for (name, host, answer) in answers {
            // A reload meanwhile may have removed the pool or the name.
            let Some(pool) = next.pools.iter_mut().find(|p| p.name == name) else {
                continue;
            };
            let named = pool
                .backends
                .iter_mut()
                .filter(|b| b.host.as_deref() == Some(host));
            for backend in named {
                match &answer {
                    Ok(addresses) => {
                        let mut addresses = addresses.clone();
                        let mut was = backend.addresses.clone();
                        addresses.sort_unstable();
                        was.sort_unstable();
                        if addresses != was {
                            changed.push(format!(
                                "pool {name} backend {host}: {was:?} → {addresses:?}"
                            ));
                            backend.addresses = addresses;
                        }
                    }
                    Err(e) => warn!(
                        "pool {name}: {e}; keeping the last good answer {:?}",
                        backend.addresses
                    ),
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        for change in &changed {
            info!("{change}");
        }
        match next.validate() {
            Ok(()) => *running = self.apply(&running, next, "re-resolved host names"),
            Err(e) => warn!("new host name answers not applied:\n{e}"),
        }
    }

    /// The pools whose names are due for a look-up at `now`, each with its
    /// host names, and their next look-up scheduled. Which pools have
    /// `resolve_every` is read from the running configuration only when
    /// the registry's epoch moved (every reload publishes), not each tick.
    fn due_names(&self, now: Instant) -> Vec<(String, Vec<String>)> {
        let epoch = self.shared.epoch();
        let mut names = self.names.lock();
        if names.epoch != Some(epoch) {
            let running = self.running.lock();
            *names = NamedPools::of(&running, epoch);
        }
        if names.pools.is_empty() {
            return Vec::new();
        }
        let mut lookups = self.lookups.lock();
        names
            .pools
            .iter()
            .filter_map(|(pool, every, hosts)| {
                let due = lookups.entry(pool.clone()).or_insert(now + *every);
                if *due > now {
                    return None;
                }
                *due = now + *every;
                Some((pool.clone(), hosts.clone()))
            })
            .collect()
    }

    fn failed(&self, path: &Path, e: &ConfigError) {
        let failures = 1 + self
            .shared
            .counters
            .reloads_failed
            .fetch_add(1, Ordering::Relaxed);
        error!(
            "reload of {} failed, the running configuration stays ({failures} failed reloads so far):\n{e}",
            path.display()
        );
        events::record(format!(
            "reload of {} failed; the running configuration stays",
            path.display()
        ));
    }

    /// Applies `next`, logs what changed (naming `source`), and returns
    /// what now runs.
    fn apply(&self, running: &Config, next: Config, source: &str) -> Config {
        let (next, changes) = apply(running, next, &self.shared, &self.mailboxes);
        self.control.wake_all();
        crate::access_log::set_format(next.global.access_log_format);
        events::record(format!(
            "reloaded {source}: backends {} added, {} removed, {} re-weighted",
            changes.added, changes.removed, changes.reweighted
        ));
        info!(
            "reloaded {source}: {} pools; backends {} added, {} removed, {} re-weighted",
            next.pools.len(),
            changes.added,
            changes.removed,
            changes.reweighted
        );
        if changes.retiered > 0 {
            info!(
                "reload of {source}: {} backends moved between primary and backup",
                changes.retiered
            );
        }
        for listener in &changes.listeners_added {
            info!("reload of {source}: listener {listener} added");
        }
        for listener in &changes.listeners_removed {
            info!("reload of {source}: listener {listener} removed; its open sessions may finish");
        }
        for failure in &changes.listeners_failed {
            error!("reload of {source}: {failure}");
        }
        for change in &changes.dropped {
            warn!("reload of {source}: runtime change dropped, the file says otherwise: {change}");
        }
        for setting in &changes.needs_restart {
            warn!(
                "reload of {source}: {setting} needs a restart; still running with the old value"
            );
        }
        next
    }
}

/// Hands SIGHUPs to the `reload` thread, so that the signal thread never
/// waits on a look-up or a bind (a SIGTERM must not queue behind a slow
/// resolver). Requests coalesce: one may wait while a reload applies, and
/// any more that arrive meanwhile join it, so the file is read once more
/// after the reload in progress, as it is by then: the last edit always
/// gets applied, and a burst of SIGHUPs costs at most two reloads.
#[derive(Debug)]
pub struct ReloadTrigger {
    pending: SyncSender<()>,
}

impl ReloadTrigger {
    /// Asks for a reload; returns at once.
    pub fn request(&self) {
        match self.pending.try_send(()) {
            Ok(()) => {}
            Err(TrySendError::Full(())) => {
                debug!("a reload is already pending; it will read the file as it is then");
            }
            Err(TrySendError::Disconnected(())) => {
                error!("the reload thread is gone; the configuration is not reloaded");
            }
        }
    }
}

/// Starts the `reload` thread, which applies each reload `ReloadTrigger`
/// requests, one at a time, until the trigger is dropped.
pub fn spawn_reloads(reloader: Arc<Reloader>) -> std::io::Result<ReloadTrigger> {
    let (pending, requests) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            while requests.recv().is_ok() {
                service::reloading();
                let status = match reloader.reload_file() {
                    Ok(()) => "configuration reloaded; serving".to_owned(),
                    Err(why) => {
                        format!("reload refused, still serving the previous configuration: {why}")
                    }
                };
                service::reloaded(&status);
            }
        })?;
    Ok(ReloadTrigger { pending })
}

/// Keeps re-resolving host names (`resolve_every`) until shutdown, on a
/// thread of its own: lookups block, and must not hold up a reload. The
/// same thread frees the snapshots the reactors have let go of.
pub fn spawn_resolver(reloader: Arc<Reloader>) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("resolver".into())
        .spawn(move || {
            while !reloader.control.shutdown_requested() {
                thread::sleep(Duration::from_millis(250));
                reloader.refresh_names(Instant::now());
                // Snapshots the reactors let go of since are freed here,
                // off their threads.
                reloader.shared.free_replaced();
            }
        })
}

/// When a backend host name fails to resolve on reload, the addresses it
/// had in the running configuration, if any.
fn last_good(running: &Config, host: &str, error: String) -> Result<Vec<SocketAddr>, String> {
    let Some(known) = running
        .pools
        .iter()
        .flat_map(|p| &p.backends)
        .find(|b| b.host.as_deref() == Some(host))
    else {
        return Err(error);
    };
    warn!(
        "{error}; keeping the last good answer {:?}",
        known.addresses
    );
    Ok(known.addresses.clone())
}

/// Binds new listening sockets, builds the snapshot for `next` on top of
/// what runs now, publishes, and hands the sockets to the reactors.
/// Returns what now runs (settings that need a restart and listeners that
/// could not be bound keep their running values) and what changed.
///
/// Binding and building happen before the publishing lock is taken; the
/// carry-over from the current snapshot and the publish happen under it
/// (`Shared::update`), so an admin action lands wholly before this reload
/// (whose file then restates weights and policies) or wholly after it.
pub fn apply(
    running: &Config,
    mut next: Config,
    shared: &Shared,
    mailboxes: &Mailboxes,
) -> (Config, Changes) {
    let mut changes = Changes {
        needs_restart: needs_restart(running, &next),
        ..Changes::default()
    };
    let sockets = bind_new_listeners(running, &mut next, mailboxes.reactors(), &mut changes);
    let mut fresh = Registry::build(&next);
    let next = still_running(running, next);
    fresh.applied = Arc::new(next.clone());
    let Ok(()) = shared.update(|current| {
        changes.dropped = current
            .runtime_changes()
            .iter()
            .filter(|change| !change.kept_by(&next))
            .map(ToString::to_string)
            .collect();
        Ok::<_, Infallible>(carry_over(current, fresh, &next, &mut changes))
    });
    // After publishing: a reactor that receives a socket already has a
    // snapshot that names its listener.
    for each_reactor in sockets {
        mailboxes.deliver(each_reactor);
    }
    (next, changes)
}

/// `fresh` with what must outlive a reload taken from `current`: listener
/// counters and per-IP tables, pool counters and queues, and every kept
/// backend's very `Arc` (re-weighted in place); backends `fresh` lacks are
/// retired. Counts what changed in `changes`.
fn carry_over(
    current: &Registry,
    mut fresh: Registry,
    next: &Config,
    changes: &mut Changes,
) -> Registry {
    // Route tables share the fresh pools' `Arc`s, which are changed in
    // place below: they are linked again at the end.
    for listener in &mut fresh.listeners {
        listener.routes = None;
    }
    for listener in &mut fresh.listeners {
        if let Some(previous) = current.listeners.iter().find(|l| l.name == listener.name) {
            listener.counters = Arc::clone(&previous.counters);
            // Open connections stay counted in the per-IP table they were
            // admitted by; only the limits change.
            if let Some(config) = next.listeners.iter().find(|l| *l.name == *listener.name) {
                listener.admission =
                    Admission::build(&config.limits, previous.admission.as_deref());
            }
        }
    }
    let old: HashMap<(&str, SocketAddr), &Arc<Backend>> = current
        .pools
        .iter()
        .flat_map(|p| p.backends.iter().map(move |b| ((&*p.name, b.addr), b)))
        .collect();
    let mut kept = HashSet::new();
    for pool in &mut fresh.pools {
        let Some(pool) = Arc::get_mut(pool) else {
            continue; // just built: never shared yet
        };
        if let Some(previous) = current.pools.iter().find(|p| p.name == pool.name) {
            pool.carry_counters_from(previous);
        }
        for backend in &mut pool.backends {
            match old.get(&(&*pool.name, backend.addr)) {
                Some(previous) => {
                    // The picker was built from the new weights; the backend
                    // keeps its identity, so counters and sessions stay with it.
                    if previous.weight() != backend.weight() {
                        previous.set_weight(backend.weight());
                        changes.reweighted += 1;
                    }
                    previous.set_max_connections(backend.max_connections());
                    // The pool's tiers were built from the new flag too.
                    if previous.set_backup(backend.is_backup()) {
                        changes.retiered += 1;
                    }
                    *backend = Arc::clone(previous);
                    kept.insert(Arc::as_ptr(previous));
                }
                None => changes.added += 1,
            }
        }
    }
    for backend in old.values() {
        if !kept.contains(&Arc::as_ptr(backend)) {
            backend.retire();
        }
    }
    changes.removed = old.len() - kept.len();
    fresh.link_routes(next, Some(current));
    fresh
}

/// Binds, once per reactor, every listener address `next` has that is not
/// running yet. A listener with an address that cannot be bound is rolled
/// back in `next`: a new one is dropped, a changed one keeps its running
/// addresses. Returns the sockets, one `Vec` per address, each holding one
/// socket per reactor.
fn bind_new_listeners(
    running: &Config,
    next: &mut Config,
    reactors: usize,
    changes: &mut Changes,
) -> Vec<Vec<Bound>> {
    let mut sockets = Vec::new();
    let mut rolled_back: Vec<(String, Option<ListenerConfig>)> = Vec::new();
    for l in &next.listeners {
        let was = running.listeners.iter().find(|r| r.name == l.name);
        let name: Arc<str> = Arc::from(l.name.as_str());
        let mut bound = Vec::new();
        let mut failure = None;
        for &addr in &l.addresses {
            if was.is_some_and(|r| r.protocol == l.protocol && r.addresses.contains(&addr)) {
                continue;
            }
            match listener::bind_each(&name, addr, l.protocol, reactors) {
                Ok(each) => bound.push(each),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            // Dropping what was bound closes it again.
            Some(e) => {
                let kept = match was {
                    Some(r) => format!("keeps running on {}", r.bind),
                    None => "not added".into(),
                };
                changes
                    .listeners_failed
                    .push(format!("{e}; listener {kept}"));
                rolled_back.push((l.name.clone(), was.cloned()));
            }
            None => {
                if was.is_none() {
                    changes
                        .listeners_added
                        .push(format!("{} on {}", l.name, l.bind));
                }
                sockets.extend(bound);
            }
        }
    }
    for (name, was) in rolled_back {
        let position = next.listeners.iter().position(|l| l.name == name);
        match (position, was) {
            (Some(i), Some(was)) => {
                let pool = std::mem::take(&mut next.listeners[i].pool);
                next.listeners[i] = ListenerConfig { pool, ..was };
            }
            (Some(i), None) => {
                next.listeners.remove(i);
            }
            (None, _) => {}
        }
    }
    for r in &running.listeners {
        if !next.listeners.iter().any(|l| l.name == r.name) {
            changes
                .listeners_removed
                .push(format!("{} on {}", r.name, r.bind));
        }
    }
    sockets
}

/// What runs after `next` was applied: its live settings, and the running
/// values of the ones that need a restart, so that the next reload still
/// reports them.
fn still_running(running: &Config, mut next: Config) -> Config {
    next.global.workers = running.global.workers;
    next.global.buffer_size = running.global.buffer_size;
    next.global.log_level = running.global.log_level;
    next.admin.clone_from(&running.admin);
    next.global.access_log_file = running.global.access_log_file.clone();
    next.global.user.clone_from(&running.global.user);
    next.global.group.clone_from(&running.global.group);
    next.global.syslog.clone_from(&running.global.syslog);
    next
}

fn needs_restart(running: &Config, next: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if running.global.workers != next.global.workers {
        out.push(format!(
            "global.workers ({} → {})",
            running.global.workers, next.global.workers
        ));
    }
    if running.global.buffer_size != next.global.buffer_size {
        out.push(format!(
            "global.buffer_size ({} → {})",
            running.global.buffer_size, next.global.buffer_size
        ));
    }
    if running.global.log_level != next.global.log_level {
        out.push(format!(
            "global.log_level ({} → {})",
            running.global.log_level, next.global.log_level
        ));
    }
    if running.global.access_log_file != next.global.access_log_file {
        let name = |file: &Option<std::path::PathBuf>| match file {
            Some(path) => path.display().to_string(),
            None => "stderr".to_string(),
        };
        out.push(format!(
            "global.access_log_file ({} → {})",
            name(&running.global.access_log_file),
            name(&next.global.access_log_file)
        ));
    }
    if running.admin != next.admin {
        out.push("admin".into());
    }
    if running.global.syslog != next.global.syslog {
        out.push("global.syslog".into());
    }
    // Privileges are dropped once, at start: going back is impossible, and
    // another user is only had by starting again as root.
    for (field, was, now) in [
        ("user", &running.global.user, &next.global.user),
        ("group", &running.global.group, &next.global.group),
    ] {
        if was != now {
            let name = |id: &Option<String>| id.clone().unwrap_or_else(|| "unset".into());
            out.push(format!("global.{field} ({} → {})", name(was), name(now)));
        }
    }
    out
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
