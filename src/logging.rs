//! Log output: simplelog lines on stderr, batched per reactor turn.
//!
//! Owns the process logger. Threads write whole lines to stderr, one write
//! per line, except reactor threads, which collect the lines of one loop turn
//! (access lines, mostly) and write them together when the turn ends: one
//! system call per turn instead of one per closed connection. A batch is
//! written out before it passes PIPE_BUF (4 KiB), so each write stays atomic
//! and lines from different threads never interleave mid-line.

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use log::LevelFilter;

/// Largest write that pipes guarantee not to interleave with other writers.
const PIPE_BUF: usize = 4096;

struct Local {
    buf: Vec<u8>,
    batching: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            buf: Vec::new(),
            batching: false,
        })
    };
}

pub fn init(level: LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    if let Err(e) = simplelog::WriteLogger::init(level, config, Sink) {
        eprintln!("balanciaga4: cannot start logging: {e}");
    }
}

/// From now on this thread's lines wait for `flush_batch`.
pub fn batch_this_thread() {
    LOCAL.with(|l| l.borrow_mut().batching = true);
}

/// Writes the lines this thread has collected.
pub fn flush_batch() {
    LOCAL.with(|l| write_out(&mut l.borrow_mut().buf));
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        // Nowhere to report a failure to write the log itself.
        let _ = io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// The writer simplelog writes into (under its own lock); it sees each line
/// in pieces, the last one ending in a newline.
struct Sink;

impl Write for Sink {
    fn write(&mut self, piece: &[u8]) -> io::Result<usize> {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.batching && l.buf.len() + piece.len() > PIPE_BUF {
                // Keep the batch whole-lined: send the complete lines, keep
                // the start of the current one.
                let cut = l.buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let _ = io::stderr().lock().write_all(&l.buf[..cut]);
                l.buf.drain(..cut);
            }
            l.buf.extend_from_slice(piece);
            if !l.batching && piece.ends_with(b"\n") {
                write_out(&mut l.buf);
            }
        });
        Ok(piece.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        flush_batch();
        Ok(())
    }
}

/// At most one log line per second for a repeating error.
#[derive(Debug, Default)]
pub struct RateLimit {
    next: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since last time)` when a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + Duration::from_secs(1));
        Some(std::mem::take(&mut self.suppressed))
    }
}
