//! Steering the reactors from outside: shutdown requests and wake-ups.
//!
//! Owns the flags the signal thread (and later, reload and admin actions)
//! sets, one mio `Waker` per reactor so a sleeping reactor notices at
//! once, and the workers' heartbeats the systemd watchdog reads. Reactors
//! only read these flags, once per loop turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::Waker;
use parking_lot::Mutex;

use crate::service::watchdog::Heartbeats;

/// Shared by the signal thread, the reload and admin sides and every
/// reactor, as `Arc<Control>`.
#[derive(Debug, Default)]
pub struct Control {
    shutdown: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
    beats: Arc<Heartbeats>,
}

impl Control {
    /// No shutdown requested, no reactor registered yet.
    pub fn new() -> Control {
        Control::default()
    }

    /// Registers a reactor's waker, so that requests wake it at once; each
    /// reactor adds its own when it starts.
    pub fn add_waker(&self, waker: Arc<Waker>) {
        self.wakers.lock().push(waker);
    }

    /// Every worker's heartbeat: each reactor adds its own when it is
    /// built, the health thread its own when it starts.
    pub fn heartbeats(&self) -> &Arc<Heartbeats> {
        &self.beats
    }

    /// Asks every reactor to stop accepting and drain. Returns false if a
    /// shutdown was already under way.
    pub fn request_shutdown(&self) -> bool {
        let first = !self.shutdown.swap(true, Ordering::AcqRel);
        self.wake_all();
        first
    }

    /// Whether a shutdown was asked for: reactors then stop accepting and
    /// drain. Never goes back to false.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Makes every reactor run a loop turn (e.g. to pick up a new registry).
    pub fn wake_all(&self) {
        for waker in self.wakers.lock().iter() {
            if let Err(e) = waker.wake() {
                log::warn!("cannot wake a reactor: {e}");
            }
        }
    }
}
