//! Active health checks: one dedicated thread that checks every backend of
//! every pool on a timer and publishes up/down changes.
//!
//! Owns the `health` thread, its own mio `Poll` (never a reactor's), the
//! check schedule (one entry per (pool, backend address) with its rise/fall
//! state, jitter generator, reply buffer and the check in flight), and the
//! per-backend check counters ([`HealthStats`]), and what a check sends (a
//! PROXY header first to backends that expect one: [`Target::new`]). It
//! touches shared state in two ways only: it calls the `targets` function
//! it was given (which compares the registry's epoch and builds a list
//! only when it moved; no lock is held here across I/O), and it reads and
//! writes each backend's health flag (`Backend::is_up` / `set_up`, one
//! atomic). Checks are non-blocking and all in flight at once; the loop
//! sleeps in `poll` until the next deadline. The sans-io rise/fall machine
//! is in `state.rs`, one check's socket work in `probe.rs`, a backend's
//! schedule entry in `entry.rs`, the counters in `stats.rs`.

mod entry;
mod probe;
mod state;
mod stats;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Events, Poll, Token};

use crate::backend::Backend;
use crate::config::{HealthConfig, Protocol};
use crate::proxy_protocol::{self, Version};
use crate::service::watchdog::Beat;

use entry::{fresh, observe, BackendCheck};
pub use probe::Failure;
use probe::{Probe, Progress};
use stats::Key;
pub use stats::{CheckStats, HealthStats};

/// Longest the loop sleeps, so it notices `stop` and new targets promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How often the `targets` function is called at most.
const REFRESH_EVERY: Duration = Duration::from_millis(100);
/// Seed of the jitter generators' seeds: the ASCII bytes `hlthchck`.
pub const JITTER_SEED: u64 = u64::from_be_bytes(*b"hlthchck");

/// One backend to check, as the `targets` function returns it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name of the backend's pool: with the address, the key of its
    /// checker state and [`CheckStats`], and shown in the check's logs.
    pub pool: Arc<str>,
    /// The live backend, whose health the checker sets.
    pub backend: Arc<Backend>,
    /// The pool's `health` section: interval, timeout, rise and fall, what
    /// to send and expect.
    pub health: HealthConfig,
    /// How the backend is reached, and so checked.
    pub protocol: Protocol,
}

impl Target {
    /// Backend `backend` of pool `pool`, checked as `health` says over
    /// `protocol`. When the pool's backends read PROXY headers
    /// (`send_proxy`), a check that talks to them starts with one too, as
    /// they refuse anything else: a v2 LOCAL header (or v1 `UNKNOWN`),
    /// which tells the backend the connection is the balancer's own.
    pub fn new(
        pool: Arc<str>,
        backend: Arc<Backend>,
        mut health: HealthConfig,
        protocol: Protocol,
        send_proxy: Option<Version>,
    ) -> Target {
        let talks = health.send.is_some() || health.expect.is_some();
        if let Some(version) = send_proxy.filter(|_| talks) {
            let local = proxy_protocol::Header {
                version,
                addresses: proxy_protocol::Addresses::Local,
            };
            let mut header = [0; proxy_protocol::MAX_ENCODED_LEN];
            let n = proxy_protocol::encode(&local, &mut header);
            let mut send = header[..n].to_vec();
            send.extend_from_slice(health.send.as_deref().unwrap_or_default());
            health.send = Some(send);
        }
        Target {
            pool,
            backend,
            health,
            protocol,
        }
    }
}

/// Given the epoch of the targets the checker has (`None` at first), the
/// targets again with their epoch, or `None` if that epoch is still current.
type Targets = Box<dyn Fn(Option<u64>) -> Option<(u64, Vec<Target>)> + Send>;

/// Starts the checker thread. `targets` is called at most every 100 ms
/// with the epoch of the list the checker has; it returns `None` while that
/// is still current (without building anything) and otherwise the new list
/// and its epoch. `stop` ends the thread within 100 ms (or one interval,
/// if shorter).
pub fn spawn(
    targets: impl Fn(Option<u64>) -> Option<(u64, Vec<Target>)> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    spawn_with_stats(targets, stop, Arc::default(), Beat::detached("health"))
}

/// [`spawn`], keeping the check counters in `stats` and stamping `beat`
/// every loop turn (at least every 100 ms) for the systemd watchdog.
pub fn spawn_with_stats(
    targets: impl Fn(Option<u64>) -> Option<(u64, Vec<Target>)> + Send + 'static,
    stop: Arc<AtomicBool>,
    stats: Arc<HealthStats>,
    beat: Arc<Beat>,
) -> io::Result<JoinHandle<()>> {
    let mut checker = Checker::new(Box::new(targets), stop, stats)?;
    checker.beat = beat;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            checker.run();
        })
}

struct Checker {
    poll: Poll,
    targets: Targets,
    stop: Arc<AtomicBool>,
    stats: Arc<HealthStats>,
    epoch: Option<u64>,
    next_refresh: Instant,
    entries: Vec<BackendCheck>,
    /// (due, entry index, entry seq), earliest first.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    max_sleep: Duration,
    /// Stamped every loop turn, for the systemd watchdog.
    beat: Arc<Beat>,
    /// Every check that ended (tests only).
    #[cfg(test)]
    done: Vec<test_support::Record>,
}

impl Checker {
    fn new(targets: Targets, stop: Arc<AtomicBool>, stats: Arc<HealthStats>) -> io::Result<Self> {
        Ok(Checker {
            poll: Poll::new()?,
            targets,
            stop,
            stats,
            epoch: None,
            next_refresh: Instant::now(),
            entries: Vec::new(),
            timers: BinaryHeap::new(),
            max_sleep: MAX_SLEEP,
            beat: Beat::detached("health"),
            #[cfg(test)]
            done: Vec::new(),
        })
    }

    /// Runs until `stop` is set; returns itself so tests can inspect it.
    fn run(mut self) -> Self {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            self.beat.touch(now);
            self.refresh(now);
            self.fire_due(now);
            let sleep = self
                .timers
                .peek()
                .map_or(self.max_sleep, |Reverse((at, _, _))| {
                    at.saturating_duration_since(Instant::now())
                });
            if let Err(e) = self.poll.poll(&mut events, Some(sleep.min(self.max_sleep))) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("health checks: poll failed, stopping checks: {e}");
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                self.on_event(event.token().0, now);
            }
        }
        self.beat.retire();
        debug!("health checks: stopped");
        self
    }

    fn refresh(&mut self, now: Instant) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + REFRESH_EVERY;
        if let Some((epoch, targets)) = (self.targets)(self.epoch) {
            if self.epoch != Some(epoch) {
                self.epoch = Some(epoch);
                self.rebuild(targets, now);
            }
        }
    }

    /// Builds the schedule for a new target list, carrying each backend's
    /// state, timer and check in flight over by (pool, address).
    fn rebuild(&mut self, targets: Vec<Target>, now: Instant) {
        let mut old: HashMap<Key, BackendCheck> = self
            .entries
            .drain(..)
            .map(|e| ((Arc::clone(&e.pool), e.backend.addr), e))
            .collect();
        let all_stats = Arc::clone(&self.stats);
        let mut stats = all_stats.rows.lock();
        let mut kept = HashMap::with_capacity(targets.len());
        for target in targets {
            let key = (Arc::clone(&target.pool), target.backend.addr);
            let carried = old.remove(&key);
            if !target.health.enabled {
                if let Some(e) = carried.filter(|e| !e.machine.is_up()) {
                    // Checks turned off: nothing would ever bring it back.
                    target.backend.set_up(true);
                    info!(
                        "pool {} backend {} UP: health checks turned off",
                        e.pool, e.backend.addr
                    );
                }
                continue;
            }
            let index = self.entries.len();
            let entry_stats = Arc::clone(stats.entry(key.clone()).or_default());
            let entry = match carried {
                Some(e) => self.carry(e, target, index, now),
                None => fresh(target, entry_stats, now),
            };
            kept.insert(key, ());
            self.entries.push(entry);
        }
        stats.retain(|key, _| kept.contains_key(key));
        drop(stats);
        // Entries left in `old` are gone from the configuration; dropping
        // them closes their sockets.
        self.timers.clear();
        self.max_sleep = MAX_SLEEP;
        for (index, e) in self.entries.iter().enumerate() {
            self.timers.push(Reverse((e.due(), index, e.seq)));
            self.max_sleep = self.max_sleep.min(e.health.interval);
        }
    }

    fn carry(
        &self,
        mut e: BackendCheck,
        target: Target,
        index: usize,
        now: Instant,
    ) -> BackendCheck {
        if !Arc::ptr_eq(&e.backend, &target.backend) {
            // A new `Backend` for the same address: give it our verdict.
            target.backend.set_up(e.machine.is_up());
        }
        let expect_len = target.health.expect.as_ref().map_or(0, Vec::len);
        if expect_len != e.reply.len()
            || target.health.send != e.health.send
            || target.protocol != e.protocol
        {
            e.probe = None; // the check in flight is of the old kind
            e.reply = vec![0; expect_len].into_boxed_slice();
            e.scheduled = e.scheduled.min(now);
        }
        e.machine
            .set_thresholds(target.health.rise, target.health.fall);
        e.backend = target.backend;
        e.health = target.health;
        e.protocol = target.protocol;
        if let Some((probe, _)) = e.probe.as_mut() {
            if let Err(err) = probe.retoken(self.poll.registry(), Token(index)) {
                debug!("health checks: re-registering a check failed: {err}");
                e.probe = None;
                e.scheduled = now;
            }
        }
        e.seq += 1;
        e
    }

    fn fire_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, index, seq))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries.get_mut(index).filter(|e| e.seq == seq) else {
                continue; // stale: the check ended early or was rescheduled
            };
            match e.probe.as_ref() {
                Some((probe, _)) => {
                    let failure = Failure::TimedOut(probe.phase());
                    self.finish(index, Some(Err(failure)), now);
                }
                None => self.start(index, now),
            }
        }
    }

    fn start(&mut self, index: usize, now: Instant) {
        let e = &mut self.entries[index];
        #[cfg(test)]
        {
            e.started = now;
        }
        match Probe::start(
            e.backend.addr,
            e.protocol,
            self.poll.registry(),
            Token(index),
        ) {
            Ok(probe) => {
                e.probe = Some((probe, now + e.health.timeout));
                e.seq += 1;
                self.timers.push(Reverse((e.due(), index, e.seq)));
            }
            Err(err) if crate::limits::is_local_exhaustion(&err) => {
                // Our shortage, not the backend's: no result this time.
                warn!(
                    "pool {} backend {}: cannot start a health check: {err}",
                    e.pool, e.backend.addr
                );
                self.finish(index, None, now);
            }
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                self.finish(index, Some(Err(Failure::Refused)), now);
            }
            Err(err) => self.finish(index, Some(Err(Failure::Connect(err))), now),
        }
    }

    fn on_event(&mut self, index: usize, now: Instant) {
        let Some(e) = self.entries.get_mut(index) else {
            return;
        };
        match e.advance() {
            Progress::Pending => {}
            Progress::Pass => self.finish(index, Some(Ok(())), now),
            Progress::Fail(failure) => self.finish(index, Some(Err(failure)), now),
        }
    }

    /// Ends the current check (`None`: it produced no result), applies the
    /// result and schedules the next check.
    fn finish(&mut self, index: usize, result: Option<Result<(), Failure>>, now: Instant) {
        let e = &mut self.entries[index];
        e.probe = None; // closing the socket also removes it from the poll
        #[cfg(test)]
        self.done.push(test_support::Record {
            index,
            scheduled: e.scheduled,
            started: e.started,
            ended: now,
            passed: result.as_ref().map(Result::is_ok),
        });
        if let Some(result) = result {
            observe(e, result);
        }
        let next = e.scheduled + e.next_wait();
        e.scheduled = next.max(now);
        e.seq += 1;
        self.timers.push(Reverse((e.scheduled, index, e.seq)));
    }
}
