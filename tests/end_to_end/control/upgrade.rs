//! Binary upgrades on SIGUSR2: three in a row under hundreds of new
//! connections a second and long paced transfers; upgrades that carry a
//! listener a reload added and change the worker count; one after
//! dropping root, keeping a port below 1024; and upgrades whose new
//! process cannot take over. Each generation is a child of the previous
//! one; this test process makes itself their subreaper, so it reads the
//! exit status of every generation and kills any left over.

use crate::support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use support::load::{paced_transfer, short_request, ShortClients, ShortTotals};
use support::udp::UdpBackend;
use support::*;

const UPGRADES: usize = 3;
const SHORT_CLIENTS: u64 = 3;
const LONG_TRANSFERS: u64 = 3;
const LONG_LEN: u64 = 8 << 20;
/// 128 chunks of 64 KiB, 40 ms apart: more than 5 s, across every upgrade.
const CHUNK_PAUSE: Duration = Duration::from_millis(40);

/// The first balancer and every generation upgrades started from it:
/// each process its log says was started (`as PID N`) is killed and
/// reaped on drop if still there, even those a failed test never learnt
/// had taken over; then the first one goes with its `Balancer`.
struct Generations {
    first: Balancer,
}

impl std::ops::Deref for Generations {
    type Target = Balancer;
    fn deref(&self) -> &Balancer {
        &self.first
    }
}

impl std::ops::DerefMut for Generations {
    fn deref_mut(&mut self) -> &mut Balancer {
        &mut self.first
    }
}

impl Drop for Generations {
    fn drop(&mut self) {
        for pid in self.first.logs().iter().filter_map(|l| started_pid(l)) {
            // Only a balancer (or what stands in for it): the PID of one
            // already reaped may have been reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = cmdline.starts_with(support::balancer::bin().as_bytes())
                || cmdline.windows(14).any(|w| w == b"broken-upgrade");
            if ours {
                // SAFETY: kill(2) on a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // Reaps it if it became this process's child; returns at once
            // otherwise.
            let _ = self.reap(pid, Duration::from_millis(if ours { 1000 } else { 0 }));
        }
    }
}

/// N in "upgrade: started BINARY as PID N, waiting ...".
fn started_pid(line: &str) -> Option<i32> {
    let rest = line.split("upgrade: started ").nth(1)?;
    rest.split(" as PID ")
        .nth(1)?
        .split(',')
        .next()?
        .parse()
        .ok()
}

impl Generations {
    fn new(first: Balancer) -> Generations {
        Generations { first }
    }

    /// Waits for `pid`, a process this one reaps, to exit; its exit code.
    fn reap(&mut self, pid: i32, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status of a child we reap.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if rc < 0 || Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Orphaned descendants become this process's children, not init's.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

fn config(
    web: SocketAddr,
    dns: SocketAddr,
    admin: SocketAddr,
    tcp: SocketAddr,
    udp: SocketAddr,
) -> String {
    format!(
        r#"(
    global: (workers: 2, access_log: false),
    timeouts: (drain: "30s"),
    admin: (bind: "{admin}"),
    listeners: [
        (name: "web", bind: "{web}", pool: "tcp"),
        (name: "dns", bind: "{dns}", pool: "udp", protocol: "udp"),
    ],
    pools: [
        (name: "tcp", health: (enabled: false), backends: [(address: "{tcp}")]),
        (name: "udp", health: (enabled: false), backends: [(address: "{udp}")]),
    ],
)"#
    )
}

/// The PID in the `nth` (0-based) "handed over to PID N" line.
fn handed_over_to(lb: &Balancer, nth: usize) -> i32 {
    let found = wait_until(Duration::from_secs(15), || {
        lb.logs()
            .iter()
            .filter(|l| l.contains("handed over to PID"))
            .count()
            > nth
    });
    assert!(
        found,
        "upgrade {nth} did not hand over:\n{}",
        lb.logs_joined()
    );
    let line = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("handed over to PID"))
        .nth(nth)
        .unwrap();
    let pid = line.split("PID ").nth(1).and_then(|r| r.split(';').next());
    pid.and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID in {line:?}"))
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// A fresh UDP client's round trip, with the retries a UDP client makes: a
/// datagram the old process read as it handed over loses its reply, since
/// its flows end then, as on SIGTERM. Returns the datagrams lost.
fn udp_round_trip(dns: SocketAddr, payload: &[u8]) -> usize {
    let client = support::udp::client(dns);
    for lost in 0..3 {
        if let Ok(back) = support::udp::exchange(&client, payload, Duration::from_secs(1)) {
            assert_eq!(back, payload);
            return lost;
        }
    }
    panic!("no UDP reply in 3 tries");
}

#[test]
fn three_upgrades_under_load_refuse_nothing_and_old_processes_exit_cleanly() {
    become_subreaper();
    let echo = Backend::echo();
    let udp_echo = UdpBackend::echo();
    let (web, dns, admin) = (free_addr(), free_addr(), free_addr());
    let mut lb = Generations::new(Balancer::with_config(
        &config(web, dns, admin, echo.addr(), udp_echo.addr()),
        web,
    ));
    let first = lb.pid();
    short_request(web, 0).expect("warm-up request");
    let mut udp_lost = udp_round_trip(dns, b"before");

    let short = ShortClients::start(web, SHORT_CLIENTS, Duration::from_millis(3));
    let long: Vec<_> = (0..LONG_TRANSFERS)
        .map(|seed| thread::spawn(move || paced_transfer(web, 500 + seed, LONG_LEN, CHUNK_PAUSE)))
        .collect();

    let started = Instant::now();
    let mut current = first;
    let mut pids = vec![first];
    for nth in 0..UPGRADES {
        thread::sleep(Duration::from_millis(800));
        signal(current, libc::SIGUSR2);
        current = handed_over_to(&lb, nth);
        pids.push(current);
        udp_lost += udp_round_trip(dns, format!("after upgrade {nth}").as_bytes());
        let stats = support::http::get(admin, "/stats");
        assert_eq!(stats.status, 200, "admin after upgrade {nth}");
    }
    thread::sleep(Duration::from_millis(800));
    let upgrade_time = started.elapsed();
    // The first generation still relays the long transfers it accepted.
    assert!(
        lb.is_running(),
        "generation 1 exited before its sessions ended"
    );
    let ShortTotals {
        attempted,
        served,
        failures,
    } = short.stop();
    let long_results: Vec<Result<u64, String>> = long
        .into_iter()
        .map(|t| t.join().expect("transfer thread"))
        .collect();
    let rate = served as f64 / upgrade_time.as_secs_f64();
    let verified: u64 = long_results.iter().filter_map(|r| r.as_ref().ok()).sum();
    println!(
        "generations {pids:?}: {attempted} short connections attempted, {} failed, {served} served in {upgrade_time:?} ({rate:.0}/s); {verified} transfer bytes verified",
        failures.len()
    );
    assert!(failures.is_empty(), "failed connections: {failures:?}");
    assert!(rate > 100.0, "only {rate:.0} connections/s");
    for (i, r) in long_results.iter().enumerate() {
        assert!(r.is_ok(), "long transfer {i}: {r:?}");
    }

    let first_exit = lb.wait_exit(Duration::from_secs(30));
    assert_eq!(
        first_exit.and_then(|s| s.code()),
        Some(0),
        "generation 1 ({first})"
    );
    let mut exits = vec![(first, first_exit.and_then(|s| s.code()))];
    for &pid in &pids[1..UPGRADES] {
        let code = lb.reap(pid, Duration::from_secs(30));
        exits.push((pid, code));
        assert_eq!(code, Some(0), "generation {pid}");
    }
    println!("old generations exited (PID, code): {exits:?}; UDP datagrams retried: {udp_lost}");
    let logs = lb.logs_joined();
    for &pid in &pids[..UPGRADES] {
        assert!(
            logs.contains(&format!("took over 5 listening sockets from PID {pid}")),
            "no take-over from {pid}:\n{logs}"
        );
    }
    assert!(!logs.contains("panicked"), "{logs}");

    // The last generation serves, then stops like any other.
    short_request(web, 1).expect("request to the last generation");
    udp_round_trip(dns, b"last");
    let mut check = connect(web);
    check.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    check.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    drop(check);
    signal(current, libc::SIGTERM);
    assert_eq!(
        lb.reap(current, Duration::from_secs(30)),
        Some(0),
        "last generation"
    );
}

/// A script standing in for the new binary: it runs the real one with a
/// description naming a descriptor that is not open, after `delay`.
fn broken_binary(dir: &Path, delay: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("broken-upgrade");
    let script = format!(
        "#!/bin/sh\nsleep {delay}\nBALANCIAGA4_INHERITED='tcp:127.0.0.1:1=999' exec '{}' \"$@\"\n",
        support::balancer::bin()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn an_upgrade_whose_binary_cannot_start_leaves_the_old_process_serving() {
    let echo = Backend::echo();
    let web = free_addr();
    let mut lb = Generations::new(
        Balancer::builder(web)
            .backend(echo.addr())
            .opt("--workers", "2")
            .env("BALANCIAGA4_UPGRADE_BINARY", "/bin/false")
            .start(),
    );
    lb.signal(libc::SIGUSR2);
    let why = lb.wait_for_line(Duration::from_secs(5), |l| l.contains("still serving"));
    let why = why.unwrap_or_else(|| panic!("no failure logged:\n{}", lb.logs_joined()));
    assert!(
        why.contains("without confirming") || why.contains("exited"),
        "{why}"
    );
    assert!(lb.is_running());
    short_request(web, 1).expect("the old process still serves");
}

#[test]
fn an_upgrade_with_a_bad_socket_description_is_refused_and_a_second_request_ignored() {
    let dir = support::balancer::TempDir::new("upgrade");
    let script = broken_binary(dir.path(), "0.5");
    let echo = Backend::echo();
    let web = free_addr();
    let mut lb = Generations::new(
        Balancer::builder(web)
            .backend(echo.addr())
            .opt("--workers", "2")
            .env("BALANCIAGA4_UPGRADE_BINARY", &script.to_string_lossy())
            .start(),
    );
    lb.signal(libc::SIGUSR2);
    thread::sleep(Duration::from_millis(100));
    lb.signal(libc::SIGUSR2);
    let why = lb.wait_for_line(Duration::from_secs(5), |l| l.contains("still serving"));
    let why = why.unwrap_or_else(|| panic!("no failure logged:\n{}", lb.logs_joined()));
    lb.expect_line(Duration::from_secs(5), "one is under way already; ignored");
    // The new process says why.
    lb.expect_line(Duration::from_secs(5), "descriptor 999");
    assert!(
        why.contains("without confirming") || why.contains("exited"),
        "{why}"
    );
    assert!(lb.is_running());
    for n in 0..20 {
        short_request(web, n).expect("the old process still serves");
    }
}

/// `workers` reactors, listener `web` and, with `side`, a second one.
fn file(workers: usize, web: SocketAddr, side: Option<SocketAddr>, backend: SocketAddr) -> String {
    let side = side.map_or(String::new(), |side| {
        format!(r#"(name: "side", bind: "{side}", pool: "p"),"#)
    });
    format!(
        r#"(
    global: (workers: {workers}, access_log: false),
    timeouts: (drain: "30s"),
    listeners: [(name: "web", bind: "{web}", pool: "p"), {side}],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{backend}")])],
)"#
    )
}

#[test]
fn upgrades_hand_over_listeners_a_reload_added_and_follow_the_new_worker_count() {
    become_subreaper();
    let echo = Backend::echo();
    let (web, side) = (free_addr(), free_addr());
    let ron = file(2, web, None, echo.addr());
    let mut lb = Generations::new(Balancer::with_config(&ron, web));
    let path = lb.config_path();
    let short = ShortClients::start(web, 2, Duration::from_millis(3));

    // A listener added by a reload is on the list like the others.
    lb.reload_with(&file(2, web, Some(side), echo.addr()));
    short_request(side, 1).expect("side after the reload");

    // One worker: it takes both sockets of each address.
    std::fs::write(&path, file(1, web, Some(side), echo.addr())).unwrap();
    lb.signal(libc::SIGUSR2);
    let second = handed_over_to(&lb, 0);
    for n in 0..20 {
        short_request(side, n).expect("side after the first upgrade");
    }

    // Three workers and no side: two sockets adopted, one bound, side's
    // closed.
    std::fs::write(&path, file(3, web, None, echo.addr())).unwrap();
    signal(second, libc::SIGUSR2);
    let third = handed_over_to(&lb, 1);
    thread::sleep(Duration::from_millis(500));
    let totals = short.stop();
    println!(
        "generations {:?}: {} short connections attempted, {} failed",
        [lb.pid(), second, third],
        totals.attempted,
        totals.failures.len()
    );
    assert!(totals.failures.is_empty(), "{:?}", totals.failures);

    assert_eq!(
        lb.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(lb.reap(second, Duration::from_secs(30)), Some(0));
    let logs = lb.logs_joined();
    let first = lb.pid();
    assert!(
        logs.contains(&format!("took over 4 listening sockets from PID {first}")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("took over 2 listening sockets from PID {second}")),
        "{logs}"
    );
    assert!(
        logs.contains("closed 2 inherited listening sockets the configuration no longer has"),
        "{logs}"
    );
    assert!(try_connect(side).is_err(), "side still accepts");
    // Every socket on web has a reactor behind it: none hangs.
    for n in 0..100 {
        short_request(web, n).expect("web on three workers");
    }
    signal(third, libc::SIGTERM);
    assert_eq!(lb.reap(third, Duration::from_secs(30)), Some(0));
}

/// The effective uid of `pid`, from /proc/PID/status.
fn euid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    uid.and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .expect("a Uid line")
}

#[test]
fn after_dropping_root_an_upgrade_keeps_a_port_below_1024() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        support::skip::skip("dropping privileges needs the test to run as root", &[]);
        return;
    }
    become_subreaper();
    let echo = Backend::echo();
    let low = (600..1000)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .find(|addr| std::net::TcpListener::bind(addr).is_ok())
        .expect("a free port below 1024");
    let ron = format!(
        r#"(
    global: (user: "nobody", workers: 2, access_log: false),
    listeners: [(name: "low", bind: "{low}", pool: "p")],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{}")])],
)"#,
        echo.addr()
    );
    let mut lb = Generations::new(Balancer::with_config(&ron, low));
    let first_uid = euid(lb.pid());
    assert_ne!(first_uid, 0, "the first process did not drop root");
    lb.signal(libc::SIGUSR2);
    let second = handed_over_to(&lb, 0);
    assert_eq!(
        euid(second),
        first_uid,
        "the new process runs as the same user"
    );
    lb.expect_line(
        Duration::from_secs(5),
        &format!("took over 2 listening sockets from PID {}", lb.pid()),
    );
    lb.expect_line(Duration::from_secs(5), "(started as it)");
    for n in 0..20 {
        short_request(low, n).expect("the port below 1024 after the upgrade");
    }
    assert_eq!(
        lb.wait_exit(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    signal(second, libc::SIGTERM);
    assert_eq!(lb.reap(second, Duration::from_secs(30)), Some(0));
}

#[test]
fn a_new_process_that_never_confirms_is_killed_and_the_old_one_serves_on() {
    let dir = support::balancer::TempDir::new("upgrade");
    let script = dir.path().join("silent-upgrade");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(&script, mode).unwrap();
    }
    let echo = Backend::echo();
    let web = free_addr();
    let lb = Generations::new(
        Balancer::builder(web)
            .backend(echo.addr())
            .env("BALANCIAGA4_UPGRADE_BINARY", &script.to_string_lossy())
            .start(),
    );
    let started = Instant::now();
    lb.signal(libc::SIGUSR2);
    let why = lb.wait_for_line(Duration::from_secs(15), |l| l.contains("still serving"));
    let why = why.unwrap_or_else(|| panic!("no failure logged:\n{}", lb.logs_joined()));
    println!("after {:?}: {why}", started.elapsed());
    assert!(
        why.contains("did not confirm within 10s; killed it"),
        "{why}"
    );
    let pid = started_pid(&lb.logs_joined()).expect("the silent process's PID");
    assert!(
        wait_until(Duration::from_secs(2), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the silent process {pid} is still there"
    );
    for n in 0..20 {
        short_request(web, n).expect("the old process still serves");
    }
}
