//! Idle timeout: silent sessions are closed, sessions with traffic in
//! either direction are not.

use crate::support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn idle_timeout_closes_silent_session() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--idle-timeout", "500ms")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    c.write_all(b"x").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap(),
        b"x"
    );
    let silent_since = Instant::now();
    let (how, _, bytes) = wait_closed(&mut c, Duration::from_secs(3))
        .unwrap_or_else(|_| panic!("silent session still open after 3 s"));
    let elapsed = silent_since.elapsed();
    assert_eq!(bytes, 0);
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed <= Duration::from_millis(2000),
        "silent session closed ({how:?}) after {elapsed:?}, expected about 500 ms"
    );
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.end, "idle-timeout", "{}", a.line);
    assert_eq!((a.bytes_in, a.bytes_out), (1, 1), "{}", a.line);
    // The backend side was closed too.
    assert!(
        wait_until(Duration::from_secs(2), || echo.active() == 0),
        "backend connection left open"
    );
}

#[test]
fn idle_timeout_spares_session_with_client_traffic() {
    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--idle-timeout", "500ms")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        let b = [b'a' + (sent % 26) as u8];
        c.write_all(&b)
            .unwrap_or_else(|e| panic!("write after {:?}: {e}", start.elapsed()));
        let got = read_exact_within(&mut c, 1, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("echo after {:?}: {e}", start.elapsed()));
        assert_eq!(got, b);
        sent += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(sent >= 10, "only {sent} round trips");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"");
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.end, "done", "{}", a.line);
    assert_eq!((a.bytes_in, a.bytes_out), (sent, sent), "{}", a.line);
}

#[test]
fn idle_timeout_spares_session_with_backend_traffic_only() {
    // The client never writes; the backend trickles a byte every 100 ms for
    // 1.5 s. Traffic in either direction keeps the session alive.
    let backend = Backend::spawn(|mut s: TcpStream| {
        for i in 0..15u8 {
            if s.write_all(&[b'0' + i % 10]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--idle-timeout", "500ms")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    let got = read_to_eof(&mut c, Duration::from_secs(5)).expect("trickle then EOF");
    assert_eq!(got, b"012345678901234");
    drop(c);
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_ne!(a.end, "idle-timeout", "{}", a.line);
    assert_eq!(a.bytes_out, 15, "{}", a.line);
    assert!(
        (1400..5000).contains(&a.duration_ms),
        "a ~1.5 s session logged duration_ms={}: {}",
        a.duration_ms,
        a.line
    );
}

#[test]
fn idle_timeout_in_config_file_applies() {
    let echo = Backend::echo();
    let listen = free_addr();
    let ron = format!(
        r#"(
    timeouts: (idle: "300ms"),
    listeners: [(name: "l", bind: "{listen}", pool: "p")],
    pools: [(name: "p", backends: [(address: "{}")])],
)"#,
        echo.addr()
    );
    let lb = Balancer::with_config(&ron, listen);
    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    c.write_all(b"y").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 1, Duration::from_secs(2)).unwrap(),
        b"y"
    );
    let t = Instant::now();
    wait_closed(&mut c, Duration::from_secs(3)).unwrap_or_else(|_| panic!("still open after 3 s"));
    let elapsed = t.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_millis(1500),
        "closed after {elapsed:?}, expected about 300 ms"
    );
    assert_eq!(
        lb.access_log_for(client_addr, Duration::from_secs(5)).end,
        "idle-timeout"
    );
}
