//! Process lifecycle: graceful shutdown on SIGTERM/SIGINT (listeners closed
//! at once, sessions drained until done or the deadline, exit 0), startup
//! failures, and access-log switching.

use crate::support;

use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::balancer::{is_ready_line, run_to_completion};
use support::*;

const CHUNK: usize = 4096;
const CHUNKS: usize = 20;

/// Trickles CHUNKS chunks of pattern 31 at 50 ms intervals (~1 s), then
/// closes.
fn trickle_backend() -> Backend {
    Backend::spawn(|mut s: TcpStream| {
        let data = Pattern::bytes(31, CHUNK * CHUNKS);
        for chunk in data.chunks(CHUNK) {
            if s.write_all(chunk).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    })
}

fn assert_refused(addr: std::net::SocketAddr, what: &str) {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("{what}: connect to {addr} should be refused, got error {e}"),
        Ok(_) => panic!("{what}: connect to {addr} succeeded; the listener is still open"),
    }
}

#[test]
fn sigterm_refuses_new_connections_and_drains_in_flight_transfer() {
    let backend = trickle_backend();
    let mut lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--drain-timeout", "5s")
        .start();

    let mut c = connect(lb.listen);
    let first = read_exact_within(&mut c, CHUNK, Duration::from_secs(3)).expect("first chunk");
    lb.signal(libc::SIGTERM);
    let signalled = Instant::now();

    // Listeners close at once.
    thread::sleep(Duration::from_millis(200));
    assert_refused(lb.listen, "200 ms after SIGTERM");
    assert!(
        lb.is_running(),
        "exited before the in-flight session finished"
    );

    // The in-flight transfer completes intact.
    let mut got = first;
    got.extend(
        read_to_eof(&mut c, Duration::from_secs(4)).expect("rest of the transfer after SIGTERM"),
    );
    assert_eq!(got.len(), CHUNK * CHUNKS, "transfer cut short");
    assert_eq!(
        Fnv1a::hash(&got),
        Pattern::hash(31, (CHUNK * CHUNKS) as u64),
        "transfer corrupted"
    );
    c.shutdown(Shutdown::Write).unwrap();
    drop(c);
    let session_done = Instant::now();

    // Exits 0 as soon as the last session ends, long before the 5 s drain.
    let status = lb
        .wait_exit(Duration::from_secs(4))
        .expect("did not exit after the last session ended");
    let exit_delay = session_done.elapsed();
    assert!(
        status.success(),
        "exit status {status}; printed:\n{}",
        lb.logs_joined()
    );
    assert!(
        exit_delay < Duration::from_millis(1500),
        "exited {exit_delay:?} after the last session ended ({:?} after SIGTERM)",
        signalled.elapsed()
    );
    let a = lb.wait_access_log(Duration::from_secs(1), |a| {
        a.bytes_out == (CHUNK * CHUNKS) as u64
    });
    assert_eq!(a.end, "done", "{}", a.line);
}

#[test]
fn drain_deadline_closes_lingering_session_and_exits_zero() {
    let echo = Backend::echo();
    let mut lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--drain-timeout", "500ms")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    c.write_all(b"ping").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 4, Duration::from_secs(2)).unwrap(),
        b"ping"
    );
    lb.signal(libc::SIGTERM);
    let signalled = Instant::now();

    // The session stays usable during the drain...
    thread::sleep(Duration::from_millis(150));
    c.write_all(b"pong").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 4, Duration::from_secs(1)).unwrap(),
        b"pong"
    );
    // ...and is closed at the deadline.
    let (how, _, _) = wait_closed(&mut c, Duration::from_secs(3))
        .unwrap_or_else(|_| panic!("session still open 3 s after SIGTERM"));
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(400) && closed_after < Duration::from_millis(2500),
        "session closed ({how:?}) {closed_after:?} after SIGTERM; drain deadline is 500 ms"
    );
    let status = lb
        .wait_exit(Duration::from_secs(3))
        .expect("did not exit after the drain deadline");
    assert!(
        status.success(),
        "exit status {status}; printed:\n{}",
        lb.logs_joined()
    );
    let a = lb.access_log_for(client_addr, Duration::from_secs(1));
    assert_eq!(a.end, "shutdown", "{}", a.line);
    assert_eq!((a.bytes_in, a.bytes_out), (8, 8), "{}", a.line);
}

#[test]
fn sigint_on_idle_balancer_exits_zero_promptly() {
    let echo = Backend::echo();
    let mut lb = Balancer::quick(&[echo.addr()]);
    lb.signal(libc::SIGINT);
    let status = lb
        .wait_exit(Duration::from_secs(2))
        .expect("did not exit within 2 s of SIGINT");
    assert!(
        status.success(),
        "exit status {status}; printed:\n{}",
        lb.logs_joined()
    );
    assert_refused(lb.listen, "after exit");
}

#[test]
fn sigterm_with_several_workers_closes_every_listener() {
    // Several workers may each hold a listening socket: all must close.
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "4")
        .opt("--drain-timeout", "3s")
        .start();
    // Hold a session open so the process stays up while we probe.
    let mut held = connect(lb.listen);
    held.write_all(b"x").unwrap();
    assert_eq!(
        read_exact_within(&mut held, 1, Duration::from_secs(2)).unwrap(),
        b"x"
    );
    lb.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(200));
    for i in 0..20 {
        assert_refused(lb.listen, &format!("probe {i} after SIGTERM"));
    }
    assert_eq!(
        echo.accepted(),
        1,
        "a connection made after SIGTERM reached the backend"
    );
}

#[test]
fn listen_address_in_use_fails_fast_with_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let echo = Backend::echo();
    let backend = echo.addr().to_string();
    let out = run_to_completion(
        &["--listen", &addr, "--backend", &backend],
        None,
        Duration::from_secs(5),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started although {addr} is taken; stderr:\n{stderr}"
    );
    assert!(
        !stderr.lines().any(is_ready_line),
        "claimed to be ready:\n{stderr}"
    );
    let port = taken.local_addr().unwrap().port().to_string();
    assert!(
        stderr.contains(&port),
        "error does not name the address {addr}:\n{stderr}"
    );
}

#[test]
fn no_access_log_flag_suppresses_connection_lines() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .flag("--no-access-log")
        .start();
    for _ in 0..3 {
        let mut c = connect(lb.listen);
        c.write_all(b"abc").unwrap();
        assert_eq!(
            read_exact_within(&mut c, 3, Duration::from_secs(2)).unwrap(),
            b"abc"
        );
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"");
    }
    assert!(wait_until(Duration::from_secs(2), || echo.active() == 0));
    thread::sleep(Duration::from_millis(200));
    let lines: Vec<String> = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("conn client="))
        .collect();
    assert!(
        lines.is_empty(),
        "access log lines despite --no-access-log: {lines:?}"
    );
}

#[test]
fn access_log_has_one_line_per_connection_by_default() {
    let echo = Backend::echo();
    let lb = Balancer::quick(&[echo.addr()]);
    let mut clients = Vec::new();
    for i in 0..3u8 {
        let mut c = connect(lb.listen);
        clients.push(c.local_addr().unwrap().to_string());
        c.write_all(&[i]).unwrap();
        assert_eq!(
            read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap(),
            [i]
        );
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"");
    }
    assert!(wait_until(Duration::from_secs(3), || lb
        .access_logs()
        .len()
        >= 3));
    thread::sleep(Duration::from_millis(100));
    let logs = lb.access_logs();
    assert_eq!(logs.len(), 3, "{logs:#?}");
    for c in &clients {
        let mine: Vec<_> = logs.iter().filter(|a| &a.client == c).collect();
        assert_eq!(mine.len(), 1, "client {c}: {logs:#?}");
        assert_eq!(
            (mine[0].bytes_in, mine[0].bytes_out, mine[0].end.as_str()),
            (1, 1, "done")
        );
    }
}

#[test]
fn second_signal_exits_at_once_without_draining() {
    let echo = Backend::echo();
    let mut lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--drain-timeout", "30s")
        .start();
    let mut c = connect(lb.listen);
    c.write_all(b"z").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap(),
        b"z"
    );

    lb.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(200));
    assert!(
        lb.is_running(),
        "exited on the first signal with a session open"
    );
    lb.signal(libc::SIGINT);
    let second = Instant::now();
    lb.wait_exit(Duration::from_secs(2))
        .expect("did not exit within 2 s of the second signal");
    assert!(second.elapsed() < Duration::from_secs(2));
    // The process is gone, so the session is too.
    wait_closed(&mut c, Duration::from_secs(2))
        .unwrap_or_else(|_| panic!("session survived the process"));
}
