//! Reading the balancer's log lines: their timestamps and the health
//! transition lines (`pool P backend ADDR DOWN: reason (n/m)`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time a log line was written, from its leading RFC 3339 UTC timestamp
/// (`2026-11-27T08:48:25.331924673Z [INFO] ...`). The balancer stamps lines
/// with the wall clock, so compare with `SystemTime::now()` taken by the
/// test: that measures engine-side times without the test's polling delay.
pub fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Nanoseconds from the fraction, whatever its number of digits.
    let digits: String = frac.chars().take(9).collect();
    let nanos = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// `later - earlier`, negative differences as zero.
pub fn since(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// The start of a health transition line: `pool P backend ADDR DOWN: `
/// (`state` is `DOWN` or `UP`).
pub fn transition(pool: &str, backend: SocketAddr, state: &str) -> String {
    format!("pool {pool} backend {backend} {state}: ")
}

/// Whether `line` is any health transition line (for any backend).
pub fn is_transition(line: &str) -> bool {
    line.contains(" backend ") && (line.contains(" DOWN: ") || line.contains(" UP: "))
}
