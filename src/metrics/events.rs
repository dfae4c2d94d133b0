//! Recent state changes (backends up or down, reloads, admin actions), for
//! the status page.
//!
//! Owns one process-wide bounded list: whoever logs such a change also
//! records it here. Recording takes a short mutex; changes are rare (a few
//! a second at most), never per connection.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Changes kept; older ones are dropped.
const KEPT: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub message: String,
}

static EVENTS: Mutex<VecDeque<Event>> = Mutex::new(VecDeque::new());

pub(crate) fn record(message: impl Into<String>) {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut events = EVENTS.lock();
    if events.len() == KEPT {
        events.pop_front();
    }
    events.push_back(Event {
        unix_ms,
        message: message.into(),
    });
}

/// The kept changes, oldest first.
pub(crate) fn recent() -> Vec<Event> {
    EVENTS.lock().iter().cloned().collect()
}
