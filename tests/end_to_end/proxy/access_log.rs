//! The access log: one line per closed connection with HAProxy-style
//! termination codes, exact byte counts and connect time; off with
//! `--no-access-log`; in a file instead of stderr with `--access-log-file`.

use crate::support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use support::balancer::{bin, run_to_completion, TempDir};
use support::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// One round trip through an echo backend, then a clean close from the
/// client; returns the client's address.
fn echo_once(lb: &Balancer, payload: &[u8]) -> std::net::SocketAddr {
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    c.write_all(payload).unwrap();
    let echoed = read_exact_within(&mut c, payload.len(), Duration::from_secs(2)).unwrap();
    assert_eq!(echoed, payload);
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"");
    client
}

/// The access lines written to `path` so far.
fn file_logs(path: &Path) -> Vec<AccessLog> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(AccessLog::parse)
        .collect()
}

fn stderr_access_lines(lb: &Balancer) -> Vec<String> {
    lb.logs()
        .into_iter()
        .filter(|l| l.contains("conn client="))
        .collect()
}

#[test]
fn normal_close_is_logged_with_term_dashes_pool_and_a_small_connect_time() {
    let echo = Backend::echo();
    let lb = Balancer::quick(&[echo.addr()]);
    let client = echo_once(&lb, b"hello");
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("done", "--"),
        "{}",
        a.line
    );
    assert_eq!(
        (a.listener.as_str(), a.pool.as_str()),
        ("default", "default")
    );
    assert_eq!(a.backend, echo.addr().to_string(), "{}", a.line);
    assert_eq!(
        (a.bytes_in, a.bytes_out, a.attempts),
        (5, 5, 1),
        "{}",
        a.line
    );
    let connect_ms = a.connect_ms.expect("connected, so connect_ms is a number");
    assert!(
        connect_ms < 500,
        "loopback connect took {connect_ms} ms: {}",
        a.line
    );
    assert!(connect_ms <= a.duration_ms, "{}", a.line);
    let stamp = log_time(&a.line).expect("line starts with an RFC 3339 timestamp");
    assert!(
        since(stamp, std::time::SystemTime::now()) < LOG_WAIT,
        "{}",
        a.line
    );
}

#[test]
fn bytes_up_and_down_are_counted_exactly() {
    const UP: u64 = 123_457;
    const DOWN: u64 = 300_001;
    let backend = Backend::spawn(|mut s: TcpStream| {
        if hash_to_eof(&mut s, Duration::from_secs(5)).is_ok() {
            let _ = write_pattern(&mut s, 9, DOWN);
        }
    });
    let lb = Balancer::quick(&[backend.addr()]);
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    write_pattern(&mut c, 3, UP).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (got, _) = hash_to_eof(&mut c, Duration::from_secs(5)).unwrap();
    assert_eq!(got, DOWN);
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!((a.bytes_in, a.bytes_out), (UP, DOWN), "{}", a.line);
    assert_eq!(a.term, "--", "{}", a.line);
}

#[test]
fn client_reset_mid_stream_is_cd() {
    let echo = Backend::echo();
    let lb = Balancer::quick(&[echo.addr()]);
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    c.write_all(b"abc").unwrap();
    read_exact_within(&mut c, 3, Duration::from_secs(2)).unwrap();
    set_linger_zero(&c);
    drop(c);
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("client-reset", "CD"),
        "{}",
        a.line
    );
    assert_eq!((a.bytes_in, a.bytes_out), (3, 3), "{}", a.line);
}

#[test]
fn client_reset_after_its_own_fin_is_cl() {
    // The client finishes its direction with a FIN, then resets while the
    // backend (which got the FIN) still holds its direction open.
    let (tx, rx) = mpsc::channel::<()>();
    let tx = Mutex::new(tx);
    let backend = Backend::spawn(move |mut s: TcpStream| {
        let tx = tx.lock().unwrap().clone();
        if hash_to_eof(&mut s, Duration::from_secs(5)).is_ok() {
            let _ = tx.send(());
            // Keep this direction open (a read would only see EOF again).
            thread::sleep(Duration::from_secs(2));
        }
    });
    let lb = Balancer::quick(&[backend.addr()]);
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    c.write_all(b"x").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    rx.recv_timeout(Duration::from_secs(3))
        .expect("the backend got the client's FIN");
    set_linger_zero(&c);
    drop(c);
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("client-reset", "CL"),
        "{}",
        a.line
    );
}

#[test]
fn client_reset_while_connecting_is_cc() {
    let hole = BlackHole::new();
    let lb = Balancer::quick(&[hole.addr]);
    let c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    // Let the balancer accept it and start connecting.
    thread::sleep(Duration::from_millis(200));
    set_linger_zero(&c);
    drop(c);
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("client-reset", "CC"),
        "{}",
        a.line
    );
    assert_eq!(a.connect_ms, None, "{}", a.line);
}

#[test]
fn session_still_open_at_the_shutdown_deadline_is_kd() {
    let echo = Backend::echo();
    let mut lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--drain-timeout", "200ms")
        .start();
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    c.write_all(b"k").unwrap();
    read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap();
    lb.signal(libc::SIGTERM);
    lb.wait_exit(LOG_WAIT)
        .expect("exited after the drain deadline");
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("shutdown", "KD"),
        "{}",
        a.line
    );
}

#[test]
fn backend_reset_is_sd() {
    let backend = Backend::spawn(|mut s: TcpStream| {
        let mut buf = [0u8; 4];
        if s.read_exact(&mut buf).is_ok() {
            set_linger_zero(&s);
        }
    });
    let lb = Balancer::quick(&[backend.addr()]);
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    c.write_all(b"ping").unwrap();
    wait_closed(&mut c, Duration::from_secs(2)).expect("client closed after the backend reset");
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("backend-reset", "SD"),
        "{}",
        a.line
    );
    assert_eq!(a.bytes_in, 4, "{}", a.line);
}

#[test]
fn idle_timeout_is_lowercase_cd() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--idle-timeout", "300ms")
        .start();
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    c.write_all(b"z").unwrap();
    read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap();
    wait_closed(&mut c, Duration::from_secs(3)).expect("closed by the idle timeout");
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("idle-timeout", "cD"),
        "{}",
        a.line
    );
}

#[test]
fn all_backends_refusing_is_sc_without_connect_time() {
    let dead1 = RefusingPort::new();
    let dead2 = RefusingPort::new();
    let lb = Balancer::quick(&[dead1.addr, dead2.addr]);
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    wait_closed(&mut c, Duration::from_secs(2)).expect("client closed promptly");
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("no-backend", "SC"),
        "{}",
        a.line
    );
    assert_eq!(
        (a.backend.as_str(), a.connect_ms),
        ("-", None),
        "{}",
        a.line
    );
    assert_eq!(a.attempts, 2, "{}", a.line);
}

#[test]
fn connect_timeout_on_the_last_attempt_is_lowercase_sc() {
    let hole = BlackHole::new();
    let lb = Balancer::builder(free_addr())
        .backend(hole.addr)
        .opt("--connect-timeout", "300ms")
        .start();
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    wait_closed(&mut c, Duration::from_secs(3)).expect("client closed after the connect timeout");
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(
        (a.end.as_str(), a.term.as_str()),
        ("no-backend", "sC"),
        "{}",
        a.line
    );
    assert_eq!(a.connect_ms, None, "{}", a.line);
    assert!(a.duration_ms >= 250, "{}", a.line);
}

#[test]
fn connect_time_counts_from_accept_through_failed_attempts() {
    let hole = BlackHole::new();
    let good = Backend::identity("good");
    let lb = Balancer::builder(free_addr())
        .backends(&[hole.addr, good.addr()])
        .opt("--connect-timeout", "300ms")
        .start();
    let mut c = connect(lb.listen);
    let client = c.local_addr().unwrap();
    assert_eq!(read_line(&mut c, Duration::from_secs(5)).unwrap(), "good\n");
    drop(c);
    let a = lb.access_log_for(client, LOG_WAIT);
    assert_eq!(a.attempts, 2, "{}", a.line);
    let connect_ms = a.connect_ms.expect("connected to the second backend");
    assert!((280..2500).contains(&connect_ms), "{}", a.line);
    assert!(connect_ms <= a.duration_ms, "{}", a.line);
}

#[test]
fn no_access_log_writes_no_line_to_stderr_or_to_the_file() {
    let dir = TempDir::new("alog-off");
    let path = dir.path().join("access.log");
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .flag("--no-access-log")
        .opt("--access-log-file", path.to_str().unwrap())
        .start();
    for _ in 0..3 {
        echo_once(&lb, b"abc");
    }
    assert!(wait_until(Duration::from_secs(2), || echo.active() == 0));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(stderr_access_lines(&lb), Vec::<String>::new());
    assert_eq!(fs::read_to_string(&path).unwrap(), "");
}

#[test]
fn access_log_file_gets_the_lines_and_stderr_does_not() {
    let dir = TempDir::new("alog-file");
    let path = dir.path().join("access.log");
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--access-log-file", path.to_str().unwrap())
        .start();
    let clients: Vec<String> = (0..3u8)
        .map(|i| echo_once(&lb, &[i; 7]).to_string())
        .collect();
    assert!(
        wait_until(LOG_WAIT, || file_logs(&path).len() >= 3),
        "file has {:?}",
        fs::read_to_string(&path)
    );
    let logs = file_logs(&path);
    assert_eq!(logs.len(), 3, "{logs:#?}");
    for (log, client) in logs.iter().zip(&clients) {
        assert_eq!(&log.client, client, "lines in close order");
        assert_eq!((log.bytes_in, log.term.as_str()), (7, "--"), "{}", log.line);
        // The file holds only access lines: a timestamp, then the line.
        assert!(log.line.split(' ').nth(1) == Some("conn"), "{}", log.line);
        assert!(log_time(&log.line).is_some(), "{}", log.line);
    }
    assert_eq!(stderr_access_lines(&lb), Vec::<String>::new());
}

#[test]
fn access_lines_in_a_file_are_written_whatever_the_log_level() {
    // At --log-level warn there is no `ready` line to wait for: wait until
    // the listener accepts instead.
    let dir = TempDir::new("alog-level");
    let path = dir.path().join("access.log");
    let echo = Backend::echo();
    let listen = free_addr();
    let mut child = KillOnDrop(
        Command::new(bin())
            .args(["--listen", &listen.to_string()])
            .args(["--backend", &echo.addr().to_string()])
            .args(["--access-log-file", path.to_str().unwrap()])
            .args(["--log-level", "warn", "--no-health-check"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn balanciaga4"),
    );
    assert!(
        wait_until(LOG_WAIT, || try_connect(listen).is_ok()),
        "not accepting on {listen}"
    );
    let mut c = connect(listen);
    let client = c.local_addr().unwrap().to_string();
    c.write_all(b"q").unwrap();
    read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap();
    drop(c);
    assert!(
        wait_until(LOG_WAIT, || file_logs(&path)
            .iter()
            .any(|a| a.client == client)),
        "no line for {client} in {:?}",
        fs::read_to_string(&path)
    );
    assert!(child.0.try_wait().unwrap().is_none(), "balancer exited");
}

/// A balancer started by hand, killed at the end of the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn access_log_file_that_cannot_be_opened_fails_check_naming_the_field() {
    let dir = TempDir::new("alog-check");
    let ron = r#"(
    global: (access_log_file: "/nonexistent-b4-dir/access.log"),
    listeners: [(bind: "127.0.0.1:18099")],
    pools: [(backends: [(address: "127.0.0.1:9")])],
)"#;
    let config = dir.write("b4.ron", ron);
    let out = run_to_completion(
        &["--check", "--config", config.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--check passed:\n{stderr}");
    assert!(
        stderr.contains("global.access_log_file: cannot open /nonexistent-b4-dir/access.log"),
        "{stderr}"
    );

    let out = run_to_completion(
        &[
            "--listen",
            "127.0.0.1:18099",
            "--backend",
            "127.0.0.1:9",
            "--access-log-file",
            "/nonexistent-b4-dir/access.log",
        ],
        None,
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started:\n{stderr}");
    assert!(stderr.contains("global.access_log_file"), "{stderr}");
}

#[test]
fn access_log_file_in_the_config_is_created_and_a_reload_cannot_move_it() {
    let dir = TempDir::new("alog-reload");
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log");
    let echo = Backend::echo();
    let listen = free_addr();
    let ron = |file: &Path| {
        format!(
            r#"(
    global: (workers: 1, access_log_file: "{}"),
    listeners: [(name: "front", bind: "{listen}", pool: "back")],
    pools: [(name: "back", backends: [(address: "{}")], health: (enabled: false))],
)"#,
            file.display(),
            echo.addr()
        )
    };
    let lb = Balancer::with_config(&ron(&first), listen);
    assert!(first.exists(), "the access log file was not created");
    let client = echo_once(&lb, b"one").to_string();
    assert!(wait_until(LOG_WAIT, || file_logs(&first).iter().any(|a| a
        .client
        == client
        && a.listener == "front"
        && a.pool == "back")));

    fs::write(lb.config_path(), ron(&second)).unwrap();
    lb.signal(libc::SIGHUP);
    lb.wait_for_line(LOG_WAIT, |l| {
        l.contains("global.access_log_file") && l.contains("needs a restart")
    })
    .unwrap_or_else(|| panic!("no restart warning:\n{}", lb.logs_joined()));
    let client = echo_once(&lb, b"two").to_string();
    assert!(wait_until(LOG_WAIT, || file_logs(&first)
        .iter()
        .any(|a| a.client == client)));
    assert!(file_logs(&second).is_empty());
}

#[test]
fn many_closes_in_one_burst_each_get_exactly_one_whole_line() {
    // Enough lines to pass the 4 KiB stderr batch limit within a few loop
    // turns: each line must still arrive whole and exactly once.
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "1")
        .start();
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut open = Vec::new();
    for _ in 0..100 {
        let mut c = connect(lb.listen);
        c.write_all(b"b").unwrap();
        read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap();
        clients.push(c.local_addr().unwrap().to_string());
        open.push(c);
    }
    for c in &open {
        set_linger_zero(c);
    }
    drop(open);
    assert!(
        wait_until(LOG_WAIT, || lb.access_logs().len() >= 100),
        "{} lines after {:?}",
        lb.access_logs().len(),
        started.elapsed()
    );
    let logs = lb.access_logs();
    for client in &clients {
        let mine = logs.iter().filter(|a| &a.client == client).count();
        assert_eq!(mine, 1, "client {client}");
    }
    let torn: Vec<String> = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("conn ") && AccessLog::parse(l).is_none())
        .collect();
    assert!(torn.is_empty(), "torn access lines: {torn:#?}");
}
