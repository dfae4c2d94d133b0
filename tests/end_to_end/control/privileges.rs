//! Dropping root: started as root with `global.user`, the balancer binds
//! a port below 1024 and the admin listener, then every one of its threads
//! runs as that user, and it still relays bytes and answers the admin API.
//! Without root it refuses to become another user, and a user that does
//! not exist fails `--check` naming the field. The tests that need root
//! say so and pass without checking anything when run without it.

use crate::support;

use std::ffi::CStr;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use support::balancer::{bin, run_to_completion, TempDir};
use support::http::get;
use support::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `nobody` from the passwd database.
fn nobody() -> (u32, u32) {
    let name: &CStr = c"nobody";
    // SAFETY: getpwnam returns null or an entry valid until the next call
    // on this thread, read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "this host has no user nobody");
    // SAFETY: checked non-null above.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// A loopback address on a free port below 1024.
fn free_low_addr() -> SocketAddr {
    (600..1000)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .find(|addr| TcpListener::bind(addr).is_ok())
        .expect("a free port below 1024")
}

/// The `Uid:`, `Gid:` and `Groups:` lines of every thread of `pid`.
fn thread_ids(pid: i32) -> Vec<(String, [String; 3])> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    tasks
        .map(|task| {
            let task = task.expect("task entry").path();
            let status = std::fs::read_to_string(task.join("status")).expect("task status");
            let line = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in {}", task.display()))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            (
                name.trim().to_string(),
                [line("Uid:"), line("Gid:"), line("Groups:")],
            )
        })
        .collect()
}

fn echoes(listen: SocketAddr, payload: &[u8]) -> bool {
    let mut client = connect(listen);
    client.write_all(payload).is_ok()
        && read_exact_within(&mut client, payload.len(), Duration::from_secs(5))
            .is_ok_and(|got| got == payload)
}

fn config(
    user: &str,
    listeners: &[(&str, SocketAddr)],
    backend: SocketAddr,
    admin: SocketAddr,
) -> String {
    let listeners: Vec<String> = listeners
        .iter()
        .map(|(name, addr)| format!(r#"(name: "{name}", bind: "{addr}", pool: "p")"#))
        .collect();
    format!(
        r#"(
    global: (user: "{user}", workers: 2),
    listeners: [{}],
    pools: [(name: "p", health: (enabled: false), backends: [(address: "{backend}")])],
    admin: (bind: "{admin}"),
)"#,
        listeners.join(", ")
    )
}

#[test]
fn started_as_root_every_thread_runs_as_nobody_and_still_serves_a_low_port() {
    if !is_root() {
        support::skip::skip("dropping privileges needs the test to run as root", &[]);
        return;
    }
    let (uid, gid) = nobody();
    let echo = Backend::echo();
    let (low, high, admin) = (free_low_addr(), free_addr(), free_addr());
    let file = config(
        "nobody",
        &[("low", low), ("high", high)],
        echo.addr(),
        admin,
    );
    let lb = Balancer::with_config(&file, low);
    let announced = lb
        .logs()
        .into_iter()
        .find(|l| l.contains("running as user nobody"))
        .unwrap_or_else(|| panic!("no privilege line:\n{}", lb.logs_joined()));
    assert!(
        announced.contains(&format!("user nobody (uid {uid}), group ")),
        "{announced}"
    );
    assert!(announced.ends_with(&format!("(gid {gid})")), "{announced}");

    let threads = thread_ids(lb.pid());
    // Main, two reactors, signals, resolver, health, admin and stats.
    assert!(threads.len() >= 6, "{threads:?}");
    let want = [
        format!("{uid} {uid} {uid} {uid}"),
        format!("{gid} {gid} {gid} {gid}"),
        gid.to_string(),
    ];
    for (name, ids) in &threads {
        assert_eq!(ids, &want, "thread {name} keeps other ids");
    }

    assert!(echoes(low, b"through a port below 1024\n"));
    assert!(echoes(high, b"and through the other listener\n"));
    assert_eq!(get(admin, "/metrics").status, 200);

    // A reload can neither bind another port below 1024 nor change user:
    // both are reported, and what runs keeps serving.
    let again = free_low_addr();
    lb.reload_with(&config(
        "root",
        &[("low", low), ("high", high), ("again", again)],
        echo.addr(),
        admin,
    ));
    let refused = lb.wait_for_line(Duration::from_secs(2), |l| {
        l.contains(&format!("listener again: cannot listen on {again}"))
    });
    let refused = refused.unwrap_or_else(|| panic!("no bind error:\n{}", lb.logs_joined()));
    assert!(
        refused.contains("need root or CAP_NET_BIND_SERVICE"),
        "{refused}"
    );
    lb.expect_line(
        Duration::from_secs(2),
        "global.user (nobody → root) needs a restart",
    );
    assert!(echoes(low, b"still serving\n"));
    for (name, ids) in thread_ids(lb.pid()) {
        assert_eq!(ids, want, "thread {name} after the reload");
    }
}

#[test]
fn without_root_it_refuses_to_run_as_another_user() {
    if !is_root() {
        support::skip::skip(
            "starting the balancer as a user other than root needs root",
            &[],
        );
        return;
    }
    let dir = TempDir::new("privileges");
    let echo = Backend::echo();
    let file = dir.write(
        "b4.ron",
        &config("root", &[("web", free_addr())], echo.addr(), free_addr()),
    );
    let (uid, gid) = nobody();
    // Readable by nobody, who cannot become root.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let output = Command::new(bin())
        .args(["--config", &file.to_string_lossy()])
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run the balancer as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "global.user: cannot switch to user root (uid 0), group root (gid 0): running as uid {uid} gid {gid}, not root"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("ready"), "{stderr}");
}

#[test]
fn a_user_that_does_not_exist_fails_check_naming_the_field() {
    let dir = TempDir::new("privileges-check");
    let file = dir.write(
        "b4.ron",
        &config(
            "no-such-user-b4",
            &[("web", free_addr())],
            free_addr(),
            free_addr(),
        ),
    );
    let path = file.to_string_lossy();
    let output = run_to_completion(
        &["--check", "--config", &path],
        None,
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{path}: global.user: \"no-such-user-b4\" is not a user on this host (no passwd entry)"
        )
    );
}
