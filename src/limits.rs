//! Process resource limits.
//!
//! Owns raising the open-file limit at start and deriving from it how many
//! sessions the process can hold: every session costs two descriptors, and
//! accepting a client there is no descriptor left to connect for would only
//! turn a wait in the listen backlog into a dropped connection. It also
//! says when that is fewer than the listeners' `max_connections` allow, so
//! that an operator raises the limit instead of hunting silent refusals.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, Protocol};

/// The open-file limit `raise_open_files` left in force (0: not yet known).
static OPEN_FILES: AtomicU64 = AtomicU64::new(0);

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new value.
pub fn raise_open_files() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    OPEN_FILES.store(limit.rlim_cur, Ordering::Relaxed);
    Ok(limit.rlim_cur)
}

/// Errors that are this host's shortage (descriptors, memory, local
/// ports), not a peer's doing: an accept pauses, a health check has no
/// result, and no backend is blamed.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Descriptors kept back for everything that is not a session: standard
/// streams, the signal pipe, and a margin for the resolver and logs.
const RESERVED: u64 = 24;

/// Sessions each reactor may hold so that all of them together never run
/// the process out of descriptors. Each reactor also holds its poller, its
/// waker and one socket per listener address. A session takes two sockets,
/// and one in four may hold a pipe (two more) while it splices
/// (`pipes_per_reactor`): 2.5 descriptors a session.
pub fn sessions_per_reactor(open_files: u64, reactors: usize, listen_sockets: usize) -> usize {
    let reactors = reactors.max(1) as u64;
    let fixed = RESERVED + reactors * (2 + listen_sockets as u64);
    let total = open_files.saturating_sub(fixed) * 2 / 5;
    usize::try_from(total / reactors)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Sessions the TCP listeners' `max_connections` allow together; `None`
/// when no TCP listener sets one (nothing to compare with).
pub fn configured_sessions(config: &Config) -> Option<usize> {
    config
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Tcp)
        .filter_map(|l| l.limits.max_connections)
        .reduce(usize::saturating_add)
}

/// The warning to log when the open-file limit holds fewer sessions
/// (`capacity`, from [`sessions_per_reactor`] over every reactor) than the
/// listeners allow; `None` when it holds them all.
pub fn shortfall(open_files: u64, capacity: usize, allowed: Option<usize>) -> Option<String> {
    let allowed = allowed?;
    (capacity < allowed).then(|| {
        // Descriptors that would hold them all, at 2.5 each plus the fixed
        // ones the capacity was already short of: a figure to copy.
        let spare = open_files.saturating_sub(capacity as u64 * 5 / 2);
        let needed = (allowed as u64).saturating_mul(5).div_ceil(2) + spare;
        format!(
            "open file limit {open_files} allows at most ~{capacity} sessions, but listeners allow {allowed}: raise LimitNOFILE (ulimit -n) to at least {needed}"
        )
    })
}

/// Pipes a reactor may lend at once to spliced flows, as HAProxy's
/// default `maxpipes` (a quarter of the connections): bulk transfers are
/// few among many sessions, and a flow without a pipe uses a buffer.
pub fn pipes_per_reactor(sessions: usize) -> usize {
    (sessions / 4).max(1)
}

/// Flows a UDP listener may hold when its `max_flows` is not set: half of
/// the descriptors left after the fixed ones (a flow holds one socket),
/// leaving the other half to TCP sessions and other listeners.
pub fn default_max_flows() -> usize {
    let known = OPEN_FILES.load(Ordering::Relaxed);
    let limit = if known == 0 { 1024 } else { known };
    usize::try_from(limit.saturating_sub(RESERVED) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_limit_leaves_room_for_fixed_descriptors() {
        // 64 descriptors, one reactor with one listener: 64 - 24 - 3 = 37
        // for sessions at 2.5 each.
        assert_eq!(sessions_per_reactor(64, 1, 1), 14);
        assert_eq!(
            sessions_per_reactor(20_000, 2, 1),
            (20_000 - 24 - 6) * 2 / 5 / 2
        );
        assert_eq!(sessions_per_reactor(10, 4, 2), 1);
    }

    #[test]
    fn a_limit_holding_fewer_sessions_than_listeners_allow_is_reported() {
        let capacity = sessions_per_reactor(1024, 1, 1);
        assert_eq!(capacity, 398);
        let warning = shortfall(1024, capacity, Some(10_000)).expect("too low");
        assert!(
            warning.starts_with(
                "open file limit 1024 allows at most ~398 sessions, but listeners allow 10000: raise LimitNOFILE"
            ),
            "{warning}"
        );
        // 10000 sessions at 2.5 descriptors, plus the 27 fixed ones (and
        // the rounding) that 1024 already had to spare: enough, not more.
        assert!(warning.ends_with("to at least 25029"), "{warning}");
        assert_eq!(sessions_per_reactor(25_029, 1, 1), 10_000);
        assert_eq!(shortfall(1024, capacity, Some(capacity)), None);
        assert_eq!(shortfall(1024, capacity, None), None);
    }

    #[test]
    fn only_tcp_listeners_with_a_limit_are_summed() {
        let mut config: Config = Config::parse(
            r#"(listeners: [
                (name: "a", bind: "127.0.0.1:18001", max_connections: 10000),
                (name: "b", bind: "127.0.0.1:18002", max_connections: 500),
                (name: "c", bind: "127.0.0.1:18003"),
                (name: "d", bind: "127.0.0.1:18004", protocol: "udp"),
            ], pools: [(backends: [(address: "127.0.0.1:9001")])])"#,
            "t.ron",
        )
        .expect("valid config");
        assert_eq!(configured_sessions(&config), Some(10_500));
        config
            .listeners
            .retain(|l| l.limits.max_connections.is_none());
        assert_eq!(configured_sessions(&config), None);
    }

    #[test]
    fn sessions_and_their_pipes_fit_in_the_descriptors_left() {
        for open_files in [64, 256, 1024, 20_000, 1 << 20] {
            for reactors in 1..=4 {
                let sessions = sessions_per_reactor(open_files, reactors, 2) as u64;
                let pipes = pipes_per_reactor(sessions as usize) as u64;
                let fixed = RESERVED + reactors as u64 * 4;
                let used = fixed + reactors as u64 * (2 * sessions + 2 * pipes);
                assert!(
                    used <= open_files || sessions == 1,
                    "{open_files} files, {reactors} reactors: {used} used"
                );
            }
        }
    }
}
