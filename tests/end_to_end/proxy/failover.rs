//! Connect failures are retried on the next backend; when nothing works the
//! client is closed promptly; resets propagate promptly.

use crate::support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn refused_backend_is_skipped_and_next_backend_serves_client() {
    let dead = RefusingPort::new();
    let good = Backend::identity("good");
    let lb = Balancer::builder(free_addr())
        .backends(&[dead.addr, good.addr()])
        .start();

    for round in 0..4 {
        let mut c = connect(lb.listen);
        let client_addr = c.local_addr().unwrap();
        let started = Instant::now();
        let line = read_line(&mut c, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(line, "good\n", "round {round}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "failover took {:?}",
            started.elapsed()
        );
        drop(c);
        let a = lb.access_log_for(client_addr, Duration::from_secs(5));
        assert_eq!(a.backend, good.addr().to_string(), "{}", a.line);
        assert!(a.attempts <= 2, "{}", a.line);
        if round == 0 {
            // The very first connection goes to b0 (dead) first.
            assert_eq!(
                a.attempts, 2,
                "first connection tries the dead backend first: {}",
                a.line
            );
        }
    }
    assert_eq!(good.accepted(), 4);
}

#[test]
fn all_backends_down_closes_client_promptly_with_no_backend() {
    let dead1 = RefusingPort::new();
    let dead2 = RefusingPort::new();
    let lb = Balancer::builder(free_addr())
        .backends(&[dead1.addr, dead2.addr])
        .opt("--retries", "3")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    let (how, elapsed, bytes) = wait_closed(&mut c, Duration::from_secs(2))
        .unwrap_or_else(|n| panic!("client still open after 2 s ({n} bytes read)"));
    assert_eq!(bytes, 0, "no data expected, closed by {how:?}");
    assert!(elapsed < Duration::from_secs(2), "closed after {elapsed:?}");

    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.end, "no-backend", "{}", a.line);
    assert_eq!(a.backend, "-", "{}", a.line);
    // Never the same backend twice for one client, even with retries left.
    assert_eq!(a.attempts, 2, "{}", a.line);
    assert_eq!((a.bytes_in, a.bytes_out), (0, 0), "{}", a.line);
}

#[test]
fn retries_zero_gives_up_after_first_refused_backend() {
    let dead = RefusingPort::new();
    let good = Backend::identity("good");
    let lb = Balancer::builder(free_addr())
        .backends(&[dead.addr, good.addr()])
        .opt("--retries", "0")
        .start();

    // First connection: cursor at b0 (dead), no retry allowed.
    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    let (_, _, bytes) = wait_closed(&mut c, Duration::from_secs(2)).expect("closed promptly");
    assert_eq!(bytes, 0);
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(
        (a.end.as_str(), a.attempts),
        ("no-backend", 1),
        "{}",
        a.line
    );
    assert_eq!(good.accepted(), 0);

    // Second connection: cursor at b1 (good).
    let mut c = connect(lb.listen);
    assert_eq!(read_line(&mut c, Duration::from_secs(3)).unwrap(), "good\n");
}

#[test]
fn connect_timeout_moves_on_to_next_backend() {
    let hole = BlackHole::new();
    let good = Backend::identity("good");
    let lb = Balancer::builder(free_addr())
        .backends(&[hole.addr, good.addr()])
        .opt("--connect-timeout", "300ms")
        .start();

    let started = Instant::now();
    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    let line = read_line(&mut c, Duration::from_secs(5)).expect("served by the good backend");
    let elapsed = started.elapsed();
    assert_eq!(line, "good\n");
    assert!(
        elapsed >= Duration::from_millis(280) && elapsed < Duration::from_millis(2500),
        "served after {elapsed:?}; expected about the 300 ms connect timeout"
    );
    drop(c);
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(
        (a.backend, a.attempts),
        (good.addr().to_string(), 2),
        "{}",
        a.line
    );
}

#[test]
fn connect_timeout_on_only_backend_closes_client_with_no_backend() {
    let hole = BlackHole::new();
    let lb = Balancer::builder(free_addr())
        .backend(hole.addr)
        .opt("--connect-timeout", "300ms")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    let (_, elapsed, bytes) = wait_closed(&mut c, Duration::from_secs(3))
        .unwrap_or_else(|_| panic!("client still open after 3 s"));
    assert_eq!(bytes, 0);
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(2500),
        "closed after {elapsed:?}"
    );
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(
        (a.end.as_str(), a.attempts, a.backend.as_str()),
        ("no-backend", 1, "-"),
        "{}",
        a.line
    );
}

#[test]
fn backend_reset_closes_client_promptly() {
    let backend = Backend::spawn(|mut s: TcpStream| {
        let mut buf = [0u8; 4];
        if s.read_exact(&mut buf).is_ok() {
            set_linger_zero(&s);
            // Dropping with SO_LINGER 0 sends RST.
        }
    });
    let lb = Balancer::quick(&[backend.addr()]);

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    c.write_all(b"ping").unwrap();
    let (how, elapsed, _) = wait_closed(&mut c, Duration::from_secs(2))
        .unwrap_or_else(|_| panic!("client still open 2 s after backend reset"));
    assert!(
        elapsed < Duration::from_secs(1),
        "client closed after {elapsed:?} ({how:?})"
    );
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.end, "backend-reset", "{}", a.line);
    assert_eq!(a.bytes_in, 4, "{}", a.line);
}

#[test]
fn client_reset_closes_backend_promptly() {
    let (tx, rx) = mpsc::channel::<(Duration, bool)>();
    let tx = Mutex::new(tx);
    let backend = Backend::spawn(move |mut s: TcpStream| {
        let tx = tx.lock().unwrap().clone();
        let _ = s.write_all(b"hi\n");
        let mut buf = [0u8; 1024];
        let start = Instant::now();
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        // Closed = EOF or a connection error, not a read timeout.
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        let _ = tx.send((start.elapsed(), closed));
    });
    let lb = Balancer::quick(&[backend.addr()]);

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    assert_eq!(read_line(&mut c, Duration::from_secs(3)).unwrap(), "hi\n");
    set_linger_zero(&c);
    drop(c);
    let (elapsed, closed) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("backend handler report");
    assert!(
        closed,
        "backend connection still open 3 s after the client reset"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "backend closed {elapsed:?} after the client reset"
    );
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.end, "client-reset", "{}", a.line);
    assert_eq!(a.bytes_out, 3, "{}", a.line);
}

#[test]
fn backend_that_closes_immediately_gives_client_eof() {
    // Connect succeeds but the backend closes at once: that is a served
    // (empty) session, not a failover.
    let backend = Backend::spawn(|s: TcpStream| {
        let _ = s.shutdown(Shutdown::Both);
    });
    let lb = Balancer::quick(&[backend.addr()]);
    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(3)).unwrap(), b"");
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(
        (a.attempts, a.backend),
        (1, backend.addr().to_string()),
        "{}",
        a.line
    );
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn request_and_fin_sent_while_connecting_reach_the_fallback_backend() {
    // The client sends its whole request and FIN at once, while the
    // balancer is still waiting on a backend that never answers. After the
    // connect timeout the fallback backend gets the request and the EOF, and
    // its reply reaches the client.
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let tx = Mutex::new(tx);
    let good = Backend::spawn(move |mut s: TcpStream| {
        let tx = tx.lock().unwrap().clone();
        if let Ok(got) = hash_to_eof(&mut s, Duration::from_secs(5)) {
            let _ = tx.send(got);
            let _ = s.write_all(b"got it\n");
        }
    });
    let hole = BlackHole::new();
    let lb = Balancer::builder(free_addr())
        .backends(&[hole.addr, good.addr()])
        .opt("--connect-timeout", "300ms")
        .start();

    let mut c = connect(lb.listen);
    let sent = write_pattern(&mut c, 41, 50_000).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let reply = read_to_eof(&mut c, Duration::from_secs(5)).expect("reply after failover");
    assert_eq!(reply, b"got it\n");
    let (len, hash) = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("fallback backend report");
    assert_eq!(
        (len, hash),
        (50_000, sent),
        "request sent during the connect phase was not delivered intact"
    );
}

#[test]
fn all_down_with_many_backends_tries_each_backend_exactly_once() {
    // 70 refusing backends and more retries than backends: every backend is
    // tried once and none twice ("never a backend it already tried").
    let dead: Vec<RefusingPort> = (0..70).map(|_| RefusingPort::new()).collect();
    let addrs: Vec<_> = dead.iter().map(|d| d.addr).collect();
    let lb = Balancer::builder(free_addr())
        .backends(&addrs)
        .opt("--retries", "100")
        .start();

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    wait_closed(&mut c, Duration::from_secs(2))
        .unwrap_or_else(|_| panic!("client still open after 2 s"));
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.end, "no-backend", "{}", a.line);
    assert_eq!(
        a.attempts, 70,
        "each of the 70 backends must be tried exactly once: {}",
        a.line
    );
}

#[test]
fn client_reset_while_connecting_abandons_the_connect_promptly() {
    // The only backend never completes the handshake (default 3 s connect
    // timeout). A client that resets meanwhile must not keep its session
    // (and the pending backend connect) alive until the connect timeout.
    let hole = BlackHole::new();
    let lb = Balancer::builder(free_addr()).backend(hole.addr).start();

    let c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    // Let the balancer accept it and start connecting.
    thread::sleep(Duration::from_millis(200));
    set_linger_zero(&c);
    drop(c);
    let reset_at = Instant::now();
    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    let logged_after = reset_at.elapsed();
    assert!(
        logged_after < Duration::from_millis(1500),
        "session of a client that reset was closed only {logged_after:?} later: {}",
        a.line
    );
    assert_eq!(a.end, "client-reset", "{}", a.line);
}
