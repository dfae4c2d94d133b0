//! systemd's notify protocol and watchdog, with a socket of the test's own
//! as `NOTIFY_SOCKET`: `READY=1` once the listener accepts, `RELOADING=1`
//! with `MONOTONIC_USEC=` then `READY=1` around every reload (applied or
//! refused), `STOPPING=1` on SIGTERM, `WATCHDOG=1` at least every half
//! period; a reactor or the health thread frozen with ptrace stops the
//! pings until it turns again; a binary upgrade hands the service, pings
//! included, to the new process without ever saying `STOPPING=1`.

use crate::support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::notify::{Notification, NotifySocket};
use support::*;

const WITHIN: Duration = Duration::from_secs(5);
/// `WATCHDOG_USEC` of these tests: pings are due every 500 ms at least.
const PERIOD_USEC: &str = "1000000";
const HALF_PERIOD: Duration = Duration::from_millis(500);

fn config(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"(
    global: (workers: 2),
    listeners: [(name: "web", bind: "{listen}", pool: "app")],
    pools: [(name: "app", backends: [(address: "{backend}")],
             health: (interval: "200ms"))],
)"#
    )
}

/// A balancer told to notify `notify`, with `env` set as well.
fn start(notify: &NotifySocket, backend: &Backend, env: &[(&str, &str)]) -> Balancer {
    let mut cmd = Command::new(support::balancer::bin());
    cmd.env("NOTIFY_SOCKET", notify.env_value())
        .envs(env.iter().copied());
    let listen = free_addr();
    Balancer::with_config_command(cmd, &config(listen, backend.addr()), listen)
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

fn echoes(listen: SocketAddr) {
    let mut client = connect(listen);
    client.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut client, WITHIN).unwrap(), "ping\n");
}

fn expect(notify: &NotifySocket, what: &str, pred: impl Fn(&Notification) -> bool) -> Notification {
    let seen = notify
        .until(WITHIN, |n| !n.says("WATCHDOG") && pred(n))
        .unwrap_or_else(|| panic!("no {what} within {WITHIN:?}"));
    seen.last().unwrap().clone()
}

/// Sends SIGHUP and returns the `RELOADING=1` and `READY=1` that answer it,
/// checking the reload's time lies between the signal and its answer.
fn reload(lb: &Balancer, notify: &NotifySocket) -> (Notification, Notification) {
    let before = monotonic_usec();
    lb.signal(libc::SIGHUP);
    let reloading = expect(notify, "RELOADING=1", |n| n.says("RELOADING"));
    let after = monotonic_usec();
    let at: u64 = reloading
        .get("MONOTONIC_USEC")
        .expect("MONOTONIC_USEC in the same datagram as RELOADING=1")
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&at),
        "MONOTONIC_USEC={at} not within the reload's {before}..={after}"
    );
    let ready = expect(notify, "READY=1 after the reload", |n| n.says("READY"));
    (reloading, ready)
}

#[test]
fn systemd_hears_ready_then_reloading_and_ready_for_every_reload_then_stopping() {
    let notify = NotifySocket::bind();
    let backend = Backend::echo();
    let mut lb = start(&notify, &backend, &[]);

    let ready = expect(&notify, "READY=1", |n| n.says("READY"));
    assert_eq!(ready.pid, lb.pid(), "READY=1 comes from the main process");
    let status = ready.get("STATUS").expect("a STATUS= line with READY=1");
    assert!(
        status.contains("1 listeners") && status.contains("2 workers"),
        "{status}"
    );
    echoes(lb.listen);

    let (_, applied) = reload(&lb, &notify);
    assert!(
        applied.get("STATUS").unwrap().contains("reloaded"),
        "{applied:?}"
    );
    echoes(lb.listen);

    std::fs::write(lb.config_path(), "(listeners: oops").unwrap();
    let (_, refused) = reload(&lb, &notify);
    let status = refused.get("STATUS").unwrap();
    assert!(status.contains("reload refused"), "{status}");
    echoes(lb.listen);

    lb.signal(libc::SIGTERM);
    let stopping = expect(&notify, "STOPPING=1", |n| n.says("STOPPING"));
    assert_eq!(stopping.pid, lb.pid());
    let status = lb.wait_exit(WITHIN).expect("exits after draining");
    assert!(status.success(), "{status}");
}

/// The gaps between successive `WATCHDOG=1` of `pid` in `seen`.
fn ping_gaps(seen: &[Notification], pid: i32) -> Vec<Duration> {
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|n| n.says("WATCHDOG") && n.pid == pid)
        .map(|n| n.at)
        .collect();
    pings.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn the_watchdog_is_pinged_at_least_every_half_period() {
    let notify = NotifySocket::bind();
    let backend = Backend::echo();
    let lb = start(&notify, &backend, &[("WATCHDOG_USEC", PERIOD_USEC)]);
    expect(&notify, "READY=1", |n| n.says("READY"));
    let seen = notify.collect(Duration::from_secs(3));
    let gaps = ping_gaps(&seen, lb.pid());
    assert!(gaps.len() >= 5, "only {} pings in 3 s", gaps.len() + 1);
    let longest = gaps.iter().max().unwrap();
    assert!(
        *longest <= HALF_PERIOD,
        "a gap of {longest:?} between pings; gaps {gaps:?}"
    );
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let notify = NotifySocket::bind();
    let backend = Backend::echo();
    let _lb = start(
        &notify,
        &backend,
        &[("WATCHDOG_USEC", PERIOD_USEC), ("WATCHDOG_PID", "1")],
    );
    expect(&notify, "READY=1", |n| n.says("READY"));
    let seen = notify.collect(Duration::from_millis(1500));
    assert!(
        !seen.iter().any(|n| n.says("WATCHDOG")),
        "pinged a watchdog for PID 1: {seen:?}"
    );
}

/// A thread of another process, stopped with ptrace (and only it: the
/// other threads run on) until dropped.
struct Frozen {
    tid: i32,
}

impl Frozen {
    fn thread_named(pid: i32, name: &str) -> Frozen {
        let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
            .unwrap_or_else(|| panic!("no thread {name} in PID {pid}"));
        // SAFETY: ptrace on a thread of a process this test started; SEIZE
        // then INTERRUPT stops that one thread, and waitpid(__WALL) waits
        // for the stop.
        unsafe {
            let rc = libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0);
            assert_eq!(
                rc,
                0,
                "PTRACE_SEIZE {tid}: {}",
                std::io::Error::last_os_error()
            );
            let rc = libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0);
            assert_eq!(
                rc,
                0,
                "PTRACE_INTERRUPT {tid}: {}",
                std::io::Error::last_os_error()
            );
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        }
        Frozen { tid }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: the thread is in a ptrace stop, traced by this thread.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, 0, 0) };
    }
}

/// Freezes `thread`, then checks the pings stop (for longer than the
/// period, so systemd would restart the service) and the log names it;
/// once thawed, pings come again.
fn freezing_stops_the_pings(lb: &Balancer, notify: &NotifySocket, thread: &str) {
    let log_before = lb.logs().len();
    let frozen = Frozen::thread_named(lb.pid(), thread);
    let at = Instant::now();
    let seen = notify.collect(Duration::from_secs(2));
    let late: Vec<Duration> = seen
        .iter()
        .filter(|n| n.says("WATCHDOG"))
        .map(|n| n.at - at)
        .filter(|after| *after > HALF_PERIOD + Duration::from_millis(300))
        .collect();
    assert!(
        late.is_empty(),
        "pings went on {late:?} after {thread} froze"
    );
    let line = lb.wait_for_line(WITHIN, |l| l.contains("watchdog:") && l.contains(thread));
    assert!(
        line.is_some(),
        "no watchdog line about {thread}:\n{}",
        lb.logs()[log_before..].join("\n")
    );
    drop(frozen);
    let again = notify.until(Duration::from_secs(2), |n| n.says("WATCHDOG"));
    assert!(again.is_some(), "no ping after {thread} thawed");
}

#[test]
fn a_frozen_reactor_or_health_thread_stops_the_watchdog_pings_until_it_turns_again() {
    let notify = NotifySocket::bind();
    let backend = Backend::echo();
    let lb = start(&notify, &backend, &[("WATCHDOG_USEC", PERIOD_USEC)]);
    expect(&notify, "READY=1", |n| n.says("READY"));
    assert!(notify.until(WITHIN, |n| n.says("WATCHDOG")).is_some());

    freezing_stops_the_pings(&lb, &notify, "reactor-1");
    // Thawed, it serves again.
    echoes(lb.listen);
    freezing_stops_the_pings(&lb, &notify, "health");
    echoes(lb.listen);
}

#[test]
fn an_upgrade_hands_the_service_and_its_watchdog_to_the_new_process_without_stopping() {
    let notify = NotifySocket::bind();
    let backend = Backend::echo();
    // systemd sets WATCHDOG_PID to the main process: the shell's PID,
    // which exec gives the balancer.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
        support::balancer::bin(),
    ])
    .env("NOTIFY_SOCKET", notify.env_value())
    .env("WATCHDOG_USEC", PERIOD_USEC);
    let listen = free_addr();
    let old = Balancer::with_config_command(cmd, &config(listen, backend.addr()), listen);
    let ready = expect(&notify, "READY=1", |n| n.says("READY"));
    assert_eq!(ready.pid, old.pid());
    assert!(notify
        .until(WITHIN, |n| n.says("WATCHDOG") && n.pid == old.pid())
        .is_some());

    old.signal(libc::SIGUSR2);
    let handover = expect(&notify, "MAINPID=", |n| n.get("MAINPID").is_some());
    assert_eq!(
        handover.pid,
        old.pid(),
        "the old main process names the new one"
    );
    let new: i32 = handover.get("MAINPID").unwrap().parse().unwrap();
    assert_ne!(new, old.pid());
    let _reap = KillOnDrop(new);

    let seen = notify.collect(Duration::from_secs(2));
    assert!(
        !seen.iter().any(|n| n.says("STOPPING")),
        "STOPPING=1 during an upgrade would stop the service: {seen:?}"
    );
    assert!(
        seen.iter().all(|n| n.pid == new),
        "after the handover only PID {new} speaks: {seen:?}"
    );
    let gaps = ping_gaps(&seen, new);
    assert!(gaps.len() >= 2, "the new process pings: {seen:?}");
    assert!(gaps.iter().all(|g| *g <= HALF_PERIOD), "{gaps:?}");
    echoes(listen);

    // SAFETY: kill(2) on the new balancer, which this test started.
    unsafe { libc::kill(new, libc::SIGTERM) };
    let stopping = expect(&notify, "STOPPING=1", |n| n.says("STOPPING"));
    assert_eq!(stopping.pid, new);
}

/// Kills and reaps (if this process reaps it) a process on drop.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) and a non-blocking waitpid on a process this
        // test started.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.0, &mut status, libc::WNOHANG);
        }
    }
}
