//! systemd's watchdog: `WATCHDOG=1` only while every worker makes progress.
//!
//! Owns the heartbeats, one [`Beat`] per reactor and one for the health
//! thread, and the `watchdog` thread. Each worker stamps its beat once per
//! loop turn (a relaxed store, no lock). The thread wakes the reactors
//! every quarter period, so an idle one turns too, and pings only if no
//! beat is older than half the period. A worker stuck in a loop or a
//! system call stops the pings, and systemd restarts the service after
//! `WatchdogSec`. It wakes the reactors through the function it is given
//! (`Control::wake_all`) and touches nothing else.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::Mutex;

use crate::config::duration::format_duration;

/// The watchdog period systemd sets, in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog is for; absent means the main process.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// The shortest pause between checks, whatever the period.
const MIN_TICK: Duration = Duration::from_millis(50);
/// The least staleness that counts as a hang: the health thread turns at
/// least every 100 ms, a woken reactor within microseconds.
const MIN_ALLOWED: Duration = Duration::from_millis(250);

/// One worker's last loop turn.
#[derive(Debug)]
pub struct Beat {
    name: String,
    origin: Instant,
    /// Milliseconds after `origin`, plus one: zero means "never turned".
    last: AtomicU64,
    /// An exited worker is not waited for.
    retired: AtomicBool,
}

impl Beat {
    /// A beat no watchdog reads (tests, threads outside `Heartbeats`).
    pub fn detached(name: &str) -> Arc<Beat> {
        Arc::new(Beat::new(name.to_owned(), Instant::now()))
    }

    fn new(name: String, origin: Instant) -> Beat {
        Beat {
            name,
            origin,
            last: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// The worker turned its loop at `now`.
    pub fn touch(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.last.store(
            u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
    }

    /// The worker has exited; its silence is not a hang.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// How long ago the worker last turned, `None` if never (or retired).
    fn age(&self, now: Instant) -> Option<Duration> {
        if self.retired.load(Ordering::Acquire) {
            return Some(Duration::ZERO);
        }
        let last = self.last.load(Ordering::Relaxed).checked_sub(1)?;
        let at = self.origin + Duration::from_millis(last);
        Some(now.saturating_duration_since(at))
    }
}

/// Every worker's beat.
#[derive(Debug)]
pub struct Heartbeats {
    origin: Instant,
    beats: Mutex<Vec<Arc<Beat>>>,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats {
            origin: Instant::now(),
            beats: Mutex::new(Vec::new()),
        }
    }
}

impl Heartbeats {
    /// A new beat for the worker `name`, watched from now on.
    pub fn add(&self, name: String) -> Arc<Beat> {
        let beat = Arc::new(Beat::new(name, self.origin));
        self.beats.lock().push(Arc::clone(&beat));
        beat
    }

    /// Waits until every worker has turned its loop once; false if one
    /// has not within `within`.
    pub fn wait_started(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let now = Instant::now();
            if self.beats.lock().iter().all(|b| b.age(now).is_some()) {
                return true;
            }
            if now >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Names of the workers whose last turn is older than `allowed`.
    fn stalled(&self, now: Instant, allowed: Duration) -> Vec<Stalled> {
        self.beats
            .lock()
            .iter()
            .filter_map(|b| match b.age(now) {
                Some(age) if age <= allowed => None,
                age => Some(Stalled {
                    name: b.name.clone(),
                    age,
                }),
            })
            .collect()
    }
}

struct Stalled {
    name: String,
    age: Option<Duration>,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.age {
            Some(age) => write!(f, "{} (silent {})", self.name, format_duration(age)),
            None => write!(f, "{} (never ran)", self.name),
        }
    }
}

/// The watchdog period asked of this process: `WATCHDOG_USEC`, unless
/// `WATCHDOG_PID` names another process (then the watchdog is not ours).
pub fn period_from_env() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC).ok()?;
    let pid = std::env::var(WATCHDOG_PID).ok();
    period_for(&usec, pid.as_deref(), std::process::id())
}

fn period_for(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(usec) if usec > 0 => Some(Duration::from_micros(usec)),
        _ => {
            warn!("{WATCHDOG_USEC}={usec:?} is not a positive number of microseconds; no watchdog pings");
            None
        }
    }
}

/// Starts the `watchdog` thread for `period`. It runs until the process
/// exits: systemd stops watching once the unit stops, and a worker that
/// exited during a drain has retired its beat.
pub fn spawn(
    period: Duration,
    beats: Arc<Heartbeats>,
    wake: impl Fn() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let tick = (period / 4).max(MIN_TICK);
    let allowed = (period / 2).max(MIN_ALLOWED);
    info!(
        "systemd watchdog every {}: pinging every {} while no worker is silent for {}",
        format_duration(period),
        format_duration(tick),
        format_duration(allowed)
    );
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut stalled_before = false;
            loop {
                wake();
                thread::sleep(tick);
                let stalled = beats.stalled(Instant::now(), allowed);
                if stalled.is_empty() {
                    super::tell("WATCHDOG=1\n");
                    if stalled_before {
                        info!("watchdog: every worker turns again; pinging systemd again");
                    }
                } else if !stalled_before {
                    let names: Vec<String> = stalled.iter().map(ToString::to_string).collect();
                    error!(
                        "watchdog: {} made no progress; no more pings, so systemd restarts the service",
                        names.join(", ")
                    );
                }
                stalled_before = !stalled.is_empty();
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_ours_unless_another_pid_is_named() {
        assert_eq!(
            period_for("10000000", None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            period_for("2000000", Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(period_for("2000000", Some("8"), 7), None);
        assert_eq!(period_for("0", None, 7), None);
        assert_eq!(period_for("soon", None, 7), None);
    }

    #[test]
    fn a_worker_is_stalled_once_its_last_turn_is_older_than_allowed() {
        let beats = Heartbeats::default();
        let a = beats.add("reactor-0".into());
        let b = beats.add("health".into());
        let start = Instant::now();
        assert_eq!(beats.stalled(start, Duration::from_secs(1)).len(), 2);
        assert!(!beats.wait_started(Duration::ZERO));
        a.touch(start);
        b.touch(start + Duration::from_secs(2));
        assert!(beats.wait_started(Duration::ZERO));
        let stalled = beats.stalled(start + Duration::from_millis(2500), Duration::from_secs(1));
        let names: Vec<&str> = stalled.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["reactor-0"]);
        assert!(stalled[0].to_string().starts_with("reactor-0 (silent 2"));
        a.retire();
        assert!(beats
            .stalled(start + Duration::from_secs(60), Duration::from_secs(100))
            .is_empty());
    }
}
