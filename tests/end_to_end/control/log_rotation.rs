//! Rotating the access log: the real `logrotate` renames the file and sends
//! SIGUSR1 while clients keep connecting; every connection's line is then
//! in exactly one of the files, whole. A reopen that fails keeps writing to
//! the file already open.

use crate::support;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::balancer::TempDir;
use support::skip::require_programs;
use support::*;

const CONNECTIONS: usize = 300;

/// One short connection through the echo backend; returns the client's
/// address, which its access line names.
fn one_connection(listen: SocketAddr) -> SocketAddr {
    let mut c = connect(listen);
    let me = c.local_addr().unwrap();
    c.write_all(b"ping").unwrap();
    let echoed = read_exact_within(&mut c, 4, Duration::from_secs(2)).unwrap();
    assert_eq!(echoed, b"ping");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"");
    me
}

/// Every file in `dir` whose name starts with `access.log` (the live one
/// and the rotated `access.log.N`), with its contents.
fn log_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("access.log"))
        })
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    files
}

fn line_count(dir: &Path) -> usize {
    log_files(dir).iter().map(|(_, t)| t.lines().count()).sum()
}

#[test]
fn logrotate_with_sigusr1_loses_no_line_and_splits_none_across_files() {
    if !require_programs(&["logrotate"]) {
        return;
    }
    let dir = TempDir::new("logrotate");
    let log = dir.path().join("access.log");
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--access-log-file", log.to_str().unwrap())
        .opt("--workers", "2")
        .start();
    let conf = dir.write(
        "logrotate.conf",
        &format!(
            "{} {{\n    rotate 50\n    nocompress\n    missingok\n    create 0640\n    postrotate\n        kill -USR1 {}\n    endscript\n}}\n",
            log.display(),
            lb.pid()
        ),
    );
    let state = dir.path().join("logrotate.state");

    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let listen = lb.listen;
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let clients: Vec<SocketAddr> = (0..CONNECTIONS)
                .map(|_| {
                    let c = one_connection(listen);
                    thread::sleep(Duration::from_millis(2));
                    c
                })
                .collect();
            done.store(true, Ordering::SeqCst);
            clients
        })
    };
    let mut rotations = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done.load(Ordering::SeqCst) && rotations < 8 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(80));
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf)
            .output()
            .expect("run logrotate");
        assert!(
            out.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rotations += 1;
    }
    let clients = load.join().expect("the client thread finished");
    assert!(
        rotations >= 3,
        "only {rotations} rotations ran during the load"
    );
    assert!(
        wait_until(Duration::from_secs(5), || line_count(dir.path())
            >= CONNECTIONS),
        "{} of {CONNECTIONS} lines written",
        line_count(dir.path())
    );
    // Lines still in flight would show as extras: give them a moment.
    thread::sleep(Duration::from_millis(200));

    let files = log_files(dir.path());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut files_with_lines = 0;
    for (path, text) in &files {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            path.display()
        );
        if !text.is_empty() {
            files_with_lines += 1;
        }
        for line in text.lines() {
            let a = AccessLog::parse(line)
                .unwrap_or_else(|| panic!("{}: not a whole line: {line:?}", path.display()));
            assert!(log_time(line).is_some(), "no timestamp: {line}");
            assert_eq!((a.end.as_str(), a.term.as_str()), ("done", "--"), "{line}");
            *seen.entry(a.client).or_default() += 1;
        }
    }
    for client in &clients {
        let n = seen.remove(&client.to_string()).unwrap_or(0);
        assert_eq!(n, 1, "client {client} has {n} lines");
    }
    assert!(seen.is_empty(), "lines of unknown clients: {seen:?}");
    assert!(
        files_with_lines >= 3,
        "{rotations} rotations but lines in only {files_with_lines} files"
    );
    let reopened = || {
        lb.logs()
            .iter()
            .filter(|l| l.contains("access log") && l.contains("reopened"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || reopened() == rotations),
        "{} reopens for {rotations} rotations:\n{}",
        reopened(),
        lb.logs_joined()
    );
}

#[test]
fn a_reopen_that_fails_names_the_path_and_keeps_writing_to_the_open_file() {
    let dir = TempDir::new("reopen-fails");
    let log = dir.path().join("access.log");
    let old = dir.path().join("access.log.old");
    let echo = Backend::echo();
    let mut lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--access-log-file", log.to_str().unwrap())
        .start();
    let before = one_connection(lb.listen);
    fs::rename(&log, &old).unwrap();
    // A directory where the file was: opening it for appending fails.
    fs::create_dir(&log).unwrap();
    lb.signal(libc::SIGUSR1);
    let error = lb.expect_line(
        Duration::from_secs(5),
        &format!("global.access_log_file: cannot reopen {}", log.display()),
    );
    assert!(error.contains("[ERROR]"), "{error}");
    let after = one_connection(lb.listen);
    let want = [before.to_string(), after.to_string()];
    let lines = || -> Vec<AccessLog> {
        fs::read_to_string(&old)
            .unwrap()
            .lines()
            .filter_map(AccessLog::parse)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || lines().len() >= 2),
        "{:?}",
        lines()
    );
    let clients: Vec<String> = lines().into_iter().map(|a| a.client).collect();
    assert_eq!(clients, want);
    assert!(lb.is_running());
}

#[test]
fn stderr_that_is_a_file_is_reopened_by_path_on_sigusr1() {
    let dir = TempDir::new("stderr-file");
    let log = dir.path().join("balanciaga4.log");
    let rotated = dir.path().join("balanciaga4.log.1");
    let echo = Backend::echo();
    let listen = free_addr();
    let child = Command::new(support::balancer::bin())
        .args(["--listen", &listen.to_string(), "--no-health-check"])
        .args(["--backend", &echo.addr().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn balanciaga4");
    let child = KillOnDrop(child);
    let text = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    let ready = wait_until(Duration::from_secs(10), || text(&log).contains("ready:"));
    let before = one_connection(listen);
    let logged = |p: &Path, c: SocketAddr| {
        text(p)
            .lines()
            .filter_map(AccessLog::parse)
            .any(|a| a.client == c.to_string())
    };
    let first_in_old = ready && wait_until(Duration::from_secs(5), || logged(&log, before));
    fs::rename(&log, &rotated).unwrap();
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGUSR1) };
    let reopened = wait_until(Duration::from_secs(5), || {
        text(&log).contains("process log") && text(&log).contains("reopened")
    });
    let after = one_connection(listen);
    let second_in_new = wait_until(Duration::from_secs(5), || logged(&log, after));
    drop(child);
    assert!(first_in_old, "before the rotation:\n{}", text(&rotated));
    assert!(reopened && second_in_new, "new file:\n{}", text(&log));
    assert!(!logged(&rotated, after), "{}", text(&rotated));
    assert!(!logged(&log, before), "{}", text(&log));
}

/// A child process killed (and reaped) when the test ends, failed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
