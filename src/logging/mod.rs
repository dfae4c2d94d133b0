//! Log output: simplelog lines on stderr, access lines on stderr or in a
//! file, batched per reactor turn, and a copy of either for syslog.
//!
//! Owns the process logger and the access log's destination. Threads write
//! whole lines to stderr, one write per line, except reactor threads, which
//! collect the lines of one loop turn (access lines, mostly) and write them
//! together when the turn ends: one system call per turn instead of one per
//! closed connection.
//!
//! To stderr, a batch is written out before it passes PIPE_BUF (4 KiB), so
//! each write stays atomic and lines from different threads never
//! interleave mid-line. To the access log file, a batch is one write (of up
//! to 64 KiB): the file is opened with O_APPEND and Linux serialises writes
//! to a regular file, so each batch lands whole at the end of the file and
//! no 4 KiB cap is needed there.
//!
//! Access lines bypass the `log` crate: they are formatted straight into
//! the thread's buffer, with the same `TIME [INFO] ` prefix as other lines
//! on stderr, or just `TIME ` in the file (which holds nothing else; a JSON
//! line carries its time inside). On stderr they are info lines and follow
//! `--log-level`; in a file they are written whatever the level.
//!
//! [`reopen`] (SIGUSR1, on the signal thread) opens the access log file's
//! path again and puts the new file under the descriptor the reactors write
//! to with one `dup2`, so no reactor waits or even notices: a batch written
//! before the swap lands whole in the old file, one written after it in the
//! new one. stderr is reopened the same way when it was a regular file at
//! start. With syslog configured (`syslog`), process records and access
//! lines are also queued for the syslog thread.
//!
//! Also owns the pace of repeating warnings: [`RateLimit`] for one thread,
//! [`SharedRateLimit`] across threads, and opens the access log file.
//! Touches its `syslog` sink and the drop
//! counter (`metrics::logs`), nothing else of the crate.

pub mod syslog;

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::LevelFilter;

use crate::metrics::logs::DROPPED;

/// Largest write that pipes guarantee not to interleave with other writers.
const PIPE_BUF: usize = 4096;
/// A reactor's access lines for the file are written early once this many
/// bytes wait, so one busy turn cannot grow the buffer without bound.
const FILE_BATCH: usize = 64 * 1024;

/// Where access lines go instead of stderr, when set, and its path (for
/// [`reopen`]).
static ACCESS_FILE: OnceLock<(File, PathBuf)> = OnceLock::new();
/// The regular file stderr was at start, if it was one.
static STDERR_FILE: OnceLock<PathBuf> = OnceLock::new();

struct Local {
    /// Lines for stderr.
    buf: Vec<u8>,
    /// Access lines for the file.
    access: Vec<u8>,
    batching: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            buf: Vec::new(),
            access: Vec::new(),
            batching: false,
        })
    };
}

/// Starts the logger: stderr, and syslog if `syslog::start` ran first and
/// takes process lines. Remembers stderr's path if it is a regular file,
/// for [`reopen`].
pub fn init(level: LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    let mut loggers: Vec<Box<dyn simplelog::SharedLogger>> =
        vec![simplelog::WriteLogger::new(level, config, Sink)];
    if let Some(copy) = syslog::process_logger(level) {
        loggers.push(Box::new(copy));
    }
    if let Err(e) = simplelog::CombinedLogger::init(loggers) {
        eprintln!("balanciaga4: cannot start logging: {e}");
    }
    if let Some(path) = stderr_file() {
        let _ = STDERR_FILE.set(path);
    }
}

/// From now on access lines go to `file` (opened for appending from
/// `path`) instead of stderr. Set once, before the reactors start; false if
/// it was set already.
pub fn send_access_lines_to(file: File, path: &Path) -> bool {
    ACCESS_FILE.set((file, path.to_path_buf())).is_ok()
}

/// Opens the access log file's path (and stderr's, if it was a regular
/// file) again, for log rotation: called on the signal thread, it may wait
/// on the file system but no reactor waits on it. A path that cannot be
/// opened is logged as an error naming it, and its lines keep going to
/// the file already open.
pub fn reopen() {
    if let Some((file, path)) = ACCESS_FILE.get() {
        match open_access_file(path).and_then(|new| replace(file.as_raw_fd(), &new))
        {
            Ok(()) => log::info!("access log {} reopened", path.display()),
            Err(e) => log::error!(
                "global.access_log_file: cannot reopen {}: {e}; still writing to the file open before",
                path.display()
            ),
        }
    }
    if let Some(path) = STDERR_FILE.get() {
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path);
        match opened.and_then(|new| replace(libc::STDERR_FILENO, &new)) {
            Ok(()) => log::info!("process log {} reopened", path.display()),
            Err(e) => log::error!(
                "process log (stderr) {}: cannot reopen: {e}; still writing to the file open before",
                path.display()
            ),
        }
    }
}

/// Puts `new`'s file under descriptor `fd`, atomically: a write on `fd`
/// goes wholly to the old file or wholly to the new one. The access log
/// keeps its close-on-exec flag (dup2 would clear it, and a binary upgrade
/// would hand the file to the new process); stderr is inherited as before.
fn replace(fd: i32, new: &File) -> io::Result<()> {
    let flags = if fd == libc::STDERR_FILENO {
        0
    } else {
        libc::O_CLOEXEC
    };
    // SAFETY: both descriptors are open; `fd` stays owned by its `File`
    // (or is stderr), which from now on refers to the new file.
    if unsafe { libc::dup3(new.as_raw_fd(), fd, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The path of the regular file stderr is, if it is one (a supervisor's
/// `2>>file`), checked to be the same file as the descriptor.
fn stderr_file() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::read_link("/proc/self/fd/2").ok()?;
    let by_path = std::fs::metadata(&path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success, which is checked before reading.
    if unsafe { libc::fstat(libc::STDERR_FILENO, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    let same = by_path.dev() == st.st_dev && by_path.ino() == st.st_ino;
    (by_path.is_file() && same).then_some(path)
}

/// From now on this thread's lines wait for `flush_batch`.
pub fn batch_this_thread() {
    LOCAL.with(|l| l.borrow_mut().batching = true);
}

/// Writes the lines this thread has collected.
pub fn flush_batch() {
    LOCAL.with(|l| {
        let l = &mut *l.borrow_mut();
        write_out(&mut l.buf);
        write_file(&mut l.access);
    });
}

/// Writes one access line: the timestamp (on stderr, and in the file when
/// `timed`) and on stderr the level, then what `body` appends, then a
/// newline; and queues what `body` appends for syslog if it takes access
/// lines, whatever the level.
pub fn access(timed: bool, body: impl Fn(&mut Vec<u8>)) {
    if syslog::takes_access() {
        syslog::access(&body);
    }
    let to_file = ACCESS_FILE.get().is_some();
    if !to_file && log::max_level() < LevelFilter::Info {
        return;
    }
    LOCAL.with(|l| {
        let l = &mut *l.borrow_mut();
        let out = if to_file { &mut l.access } else { &mut l.buf };
        let start = out.len();
        if !to_file {
            write_time(out, SystemTime::now());
            out.extend_from_slice(b" [INFO] ");
        } else if timed {
            write_time(out, SystemTime::now());
            out.push(b' ');
        }
        body(out);
        out.push(b'\n');
        if !l.batching {
            write_out(&mut l.buf);
            write_file(&mut l.access);
        } else if to_file {
            if l.access.len() >= FILE_BATCH {
                write_file(&mut l.access);
            }
        } else if l.buf.len() > PIPE_BUF && start > 0 {
            // Send what came before this line; it starts the next batch.
            let _ = io::stderr().lock().write_all(&l.buf[..start]);
            l.buf.drain(..start);
        }
    });
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        // Nowhere to report a failure to write the log itself.
        let _ = io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// One write of the batch to the access log file. Lines that cannot be
/// written are dropped, and the failure said on stderr once a minute.
fn write_file(buf: &mut Vec<u8>) {
    let Some((file, _)) = ACCESS_FILE.get().filter(|_| !buf.is_empty()) else {
        return;
    };
    let mut file = file;
    if let Err(e) = file.write_all(buf) {
        // A short write may have landed part of the batch; count it all.
        let lines = buf.iter().filter(|&&b| b == b'\n').count();
        DROPPED.count_access_file(lines as u64);
        static LAST_REPORT: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LAST_REPORT.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 60)
            && LAST_REPORT
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut line = Vec::new();
            write_time(&mut line, SystemTime::now());
            let _ = writeln!(
                line,
                " [ERROR] access log file: cannot write, access lines are lost: {e}"
            );
            let _ = io::stderr().lock().write_all(&line);
        }
    }
    buf.clear();
}

/// `2026-11-27T08:48:25.331924673Z`: RFC 3339 in UTC, the fraction
/// without trailing zeros (none when zero), as simplelog writes its lines.
pub(crate) fn write_time(out: &mut Vec<u8>, at: SystemTime) {
    write_time_precision(out, at, 9);
}

/// [`write_time`] with at most `digits` (1 to 9) digits of fraction: RFC
/// 5424 allows six.
pub(crate) fn write_time_precision(out: &mut Vec<u8>, at: SystemTime, digits: u32) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, of_day / 3600, 2);
    out.push(b':');
    push_digits(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_digits(out, of_day % 60, 2);
    let digits = digits.clamp(1, 9);
    let mut nanos = u64::from(since.subsec_nanos()) / 10u64.pow(9 - digits);
    if nanos != 0 {
        let mut width = digits as usize;
        while nanos.is_multiple_of(10) {
            nanos /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_digits(out, nanos, width);
    }
    out.push(b'Z');
}

/// `value` in exactly `width` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let at = out.len();
    out.resize(at + width, b'0');
    for slot in out[at..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month and day of the `days`th day after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for dates from 1970 on).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
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

/// At most one log line per second over every thread sharing it: whichever
/// gets there first logs, the others stay quiet. Lock-free, for warnings
/// any reactor may hit (a pool with no backend left); `now_ms` is
/// `timer::millis`.
#[derive(Debug, Default)]
pub struct SharedRateLimit {
    /// When a line was last allowed; 0: never.
    last_ms: AtomicU64,
}

impl SharedRateLimit {
    /// Whether the caller may log now: true for the first caller of each
    /// second (`now_ms` at least 1000 after the last allowed one), false
    /// for every other, including a racing caller that lost.
    pub fn allow(&self, now_ms: u64) -> bool {
        let now_ms = now_ms.max(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms < last + 1000 {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Opens (creating it if missing) the file `global.access_log_file` names,
/// for appending: at start-up, on `--check` and on each reopen.
pub fn open_access_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_rate_limit_allows_one_line_a_second() {
        let limit = SharedRateLimit::default();
        assert!(limit.allow(0), "the first line is always allowed");
        assert!(!limit.allow(999));
        assert!(limit.allow(1001));
        assert!(!limit.allow(1500));
        assert!(limit.allow(2001));
    }

    fn time(secs: u64, nanos: u32) -> String {
        let mut out = Vec::new();
        write_time(&mut out, UNIX_EPOCH + Duration::new(secs, nanos));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_like_simplelog_writes_them() {
        assert_eq!(time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(time(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(time(951_868_799, 500_000_000), "2000-02-29T23:59:59.5Z");
        assert_eq!(
            time(1_795_769_305, 331_924_673),
            "2026-11-27T08:48:25.331924673Z"
        );
        assert_eq!(time(4_102_444_800, 1_000), "2100-01-01T00:00:00.000001Z");
    }
}
