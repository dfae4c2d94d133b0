//! Bytes go through intact, in both directions, with exact half-close, over
//! IPv4 and IPv6, for large transfers and for many sessions at once.

use crate::support;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn support_hash_and_pattern_are_the_specified_ones() {
    // FNV-1a 64 reference vectors.
    assert_eq!(Fnv1a::hash(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(Fnv1a::hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(Fnv1a::hash(b"foobar"), 0x8594_4171_f739_67e8);
    // The pattern does not depend on how it is chunked.
    let whole = Pattern::bytes(7, 1000);
    let mut p = Pattern::new(7);
    let mut pieces = Vec::new();
    for n in [1usize, 3, 8, 13, 64, 911] {
        let mut b = vec![0u8; n];
        p.fill(&mut b);
        pieces.extend_from_slice(&b);
    }
    assert_eq!(&pieces[..1000], &whole[..]);
    assert_eq!(Pattern::hash(7, 1000), Fnv1a::hash(&whole));
    assert_ne!(Pattern::bytes(8, 64), Pattern::bytes(7, 64));
}

#[test]
fn echo_round_trip_through_balancer() {
    let echo = Backend::echo();
    let lb = Balancer::quick(&[echo.addr()]);
    let mut c = connect(lb.listen);
    c.write_all(b"hello, balancer\n").unwrap();
    let got = read_exact_within(&mut c, 16, Duration::from_secs(5)).unwrap();
    assert_eq!(&got, b"hello, balancer\n");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(5)).unwrap(), b"");
}

#[test]
fn sixty_four_mib_each_way_at_once_arrives_intact() {
    const LEN: u64 = 64 * MIB;
    const CLIENT_SEED: u64 = 0xC11E;
    const BACKEND_SEED: u64 = 0xBAC0;
    let deadline = Duration::from_secs(60);
    let (backend, received) = transfer::hashing_backend(BACKEND_SEED, LEN);
    let lb = Balancer::quick(&[backend.addr()]);

    let start = Instant::now();
    let (sent_hash, (client_got_len, client_got_hash)) =
        transfer::both_ways(lb.listen, CLIENT_SEED, LEN, deadline);
    let (backend_got_len, backend_got_hash) = received
        .recv_timeout(deadline.saturating_sub(start.elapsed()))
        .expect("backend did not report what it received");
    let elapsed = start.elapsed();
    println!("64 MiB each way in {elapsed:?}");

    assert_eq!(sent_hash, Pattern::hash(CLIENT_SEED, LEN));
    assert_eq!(client_got_len, LEN, "client received wrong byte count");
    assert_eq!(
        client_got_hash,
        Pattern::hash(BACKEND_SEED, LEN),
        "client received corrupted data"
    );
    assert_eq!(backend_got_len, LEN, "backend received wrong byte count");
    assert_eq!(
        backend_got_hash, sent_hash,
        "backend received corrupted data"
    );
    assert!(elapsed < deadline, "took {elapsed:?}");

    let a = lb.wait_access_log(Duration::from_secs(5), |a| a.bytes_in == LEN);
    assert_eq!(
        (a.bytes_in, a.bytes_out, a.end.as_str()),
        (LEN, LEN, "done"),
        "{}",
        a.line
    );
}

#[test]
fn client_half_close_still_receives_full_reply() {
    const REQUEST: u64 = 100_000;
    const REPLY: u64 = 8 * MIB;
    // The backend reads the whole request up to EOF, and only then sends a
    // multi-MiB reply and closes.
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let tx = std::sync::Mutex::new(tx);
    let backend = Backend::spawn(move |mut s: std::net::TcpStream| {
        let tx = tx.lock().unwrap().clone();
        let Ok(got) = hash_to_eof(&mut s, Duration::from_secs(10)) else {
            return;
        };
        let _ = tx.send(got);
        let _ = write_pattern(&mut s, 2, REPLY);
    });
    let lb = Balancer::quick(&[backend.addr()]);

    let mut c = connect(lb.listen);
    let sent = write_pattern(&mut c, 1, REQUEST).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (len, hash) = hash_to_eof(&mut c, Duration::from_secs(20)).expect("reply after half-close");
    assert_eq!(len, REPLY, "reply length");
    assert_eq!(hash, Pattern::hash(2, REPLY), "reply content");
    let (req_len, req_hash) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("backend saw the request and EOF");
    assert_eq!((req_len, req_hash), (REQUEST, sent));
}

#[test]
fn backend_half_close_still_receives_full_upload() {
    const REPLY: u64 = 4 * MIB;
    const UPLOAD: u64 = 2 * MIB;
    // The backend sends its whole reply, shuts its write side, then reads
    // the client's upload to EOF and reports it on a channel.
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let tx = std::sync::Mutex::new(tx);
    let backend = Backend::spawn(move |mut s: std::net::TcpStream| {
        let tx = tx.lock().unwrap().clone();
        if write_pattern(&mut s, 3, REPLY).is_err() {
            return;
        }
        let _ = s.shutdown(Shutdown::Write);
        if let Ok(got) = hash_to_eof(&mut s, Duration::from_secs(10)) {
            let _ = tx.send(got);
        }
    });
    let lb = Balancer::quick(&[backend.addr()]);

    let mut c = connect(lb.listen);
    let (len, hash) =
        hash_to_eof(&mut c, Duration::from_secs(10)).expect("client sees reply then EOF");
    assert_eq!((len, hash), (REPLY, Pattern::hash(3, REPLY)));
    // The client saw EOF, but its own direction is still open.
    let sent = write_pattern(&mut c, 4, UPLOAD).expect("client can still send after seeing EOF");
    c.shutdown(Shutdown::Write).unwrap();
    let (up_len, up_hash) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("backend received the upload");
    assert_eq!(up_len, UPLOAD, "upload length");
    assert_eq!(up_hash, sent, "upload content");
    // Both directions ended: the balancer closes the client completely.
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(5)).unwrap(), b"");
}

#[test]
fn access_log_counts_bytes_in_and_out_exactly() {
    const UP: u64 = 12_345;
    const DOWN: u64 = 54_321;
    let backend = Backend::spawn(|mut s: std::net::TcpStream| {
        if hash_to_eof(&mut s, Duration::from_secs(5)).is_ok() {
            let _ = write_pattern(&mut s, 6, DOWN);
        }
    });
    let listen = free_addr();
    let ron = format!(
        r#"(
    listeners: [(name: "front", bind: "{listen}", pool: "p")],
    pools: [(name: "p", backends: [(address: "{}")])],
)"#,
        backend.addr()
    );
    let lb = Balancer::with_config(&ron, listen);

    let mut c = connect(lb.listen);
    let client_addr = c.local_addr().unwrap();
    write_pattern(&mut c, 5, UP).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (len, _) = hash_to_eof(&mut c, Duration::from_secs(5)).unwrap();
    assert_eq!(len, DOWN);
    drop(c);

    let a = lb.access_log_for(client_addr, Duration::from_secs(5));
    assert_eq!(a.listener, "front", "{}", a.line);
    assert_eq!(a.backend, backend.addr().to_string(), "{}", a.line);
    assert_eq!(
        a.bytes_in, UP,
        "bytes_in is what the client sent: {}",
        a.line
    );
    assert_eq!(
        a.bytes_out, DOWN,
        "bytes_out is what the client received: {}",
        a.line
    );
    assert_eq!(a.attempts, 1, "{}", a.line);
    assert_eq!(a.end, "done", "{}", a.line);
    assert!(a.duration_ms < 5_000, "{}", a.line);
}

#[test]
fn ipv6_and_ipv4_clients_share_a_dual_stack_listener() {
    let echo = Backend::echo();
    let port = free_dual_stack_port();
    let listen = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let lb = Balancer::builder(listen).backend(echo.addr()).start();

    for (i, addr) in [localhost_v6(port), localhost(port)]
        .into_iter()
        .enumerate()
    {
        let mut c = connect(addr);
        let msg = format!("hello over {addr} #{i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let got = read_exact_within(&mut c, msg.len(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("echo via {addr}: {e}"));
        assert_eq!(got, msg.as_bytes());
    }
    assert_eq!(echo.accepted(), 2);
    // The IPv6 client shows up as such in the access log.
    lb.wait_access_log(Duration::from_secs(5), |a| a.client.starts_with("[::1]:"));
}

#[test]
fn dual_stack_listener_logs_ipv4_client_as_plain_ipv4() {
    // The access log's client=IP:PORT is the client's address as the client
    // knows it: 127.0.0.1:PORT, not the IPv4-mapped [::ffff:127.0.0.1]:PORT.
    let echo = Backend::echo();
    let port = free_dual_stack_port();
    let lb = Balancer::builder(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .backend(echo.addr())
        .start();
    let mut c = connect(localhost(port));
    let client_addr = c.local_addr().unwrap();
    c.write_all(b"v4").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 2, Duration::from_secs(5)).unwrap(),
        b"v4"
    );
    drop(c);
    let a = lb.wait_access_log(Duration::from_secs(5), |a| {
        a.client.ends_with(&format!(":{}", client_addr.port()))
    });
    assert_eq!(a.client, client_addr.to_string(), "{}", a.line);
}

#[test]
fn ipv6_backend_is_reachable_from_ipv4_listener() {
    let echo = Backend::echo_on(localhost_v6(0));
    let lb = Balancer::quick(&[echo.addr()]);
    let mut c = connect(lb.listen);
    c.write_all(b"v4 to v6\n").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 9, Duration::from_secs(5)).unwrap(),
        b"v4 to v6\n"
    );
    let want = echo.addr().to_string();
    drop(c);
    lb.wait_access_log(Duration::from_secs(5), |a| a.backend == want);
}

#[test]
fn thousand_concurrent_sessions_all_complete() {
    const THREADS: usize = 10;
    const PER_THREAD: usize = 100;
    const SESSIONS: usize = THREADS * PER_THREAD;
    let limit = raise_fd_limit(4 * SESSIONS as u64 + 256);
    assert!(
        limit >= 2 * SESSIONS as u64 + 100,
        "fd limit too low: {limit}"
    );

    let echo = Backend::echo();
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--workers", "2")
        .start();
    let listen = lb.listen;
    let start = Instant::now();
    let deadline = Duration::from_secs(60);

    // Phase 1: every thread opens its connections and sends a distinct
    // request on each. Phase 2 (after all are open): read every reply.
    let opened = Arc::new(Barrier::new(THREADS + 1));
    let verified = Arc::new(Barrier::new(THREADS + 1));
    let release = Arc::new(Barrier::new(THREADS + 1));
    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    for t in 0..THREADS {
        let opened = opened.clone();
        let verified = verified.clone();
        let release = release.clone();
        let tx = tx.clone();
        thread::spawn(move || {
            let mut conns = Vec::with_capacity(PER_THREAD);
            let mut err = None;
            let thread_deadline = start + Duration::from_secs(40);
            let left = || {
                thread_deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            };
            for i in 0..PER_THREAD {
                if Instant::now() >= thread_deadline {
                    err.get_or_insert(format!("deadline passed before connect {t}/{i}"));
                    break;
                }
                match try_connect(listen) {
                    Ok(mut c) => {
                        let payload = session_payload(t, i);
                        if let Err(e) = c.write_all(&payload) {
                            err.get_or_insert(format!("write {t}/{i}: {e}"));
                        }
                        conns.push((i, c, payload));
                    }
                    Err(e) => {
                        err.get_or_insert(format!("connect {t}/{i}: {e}"));
                    }
                }
            }
            opened.wait();
            let mut ok = 0;
            for (i, c, payload) in conns.iter_mut() {
                match read_exact_within(c, payload.len(), left()) {
                    Ok(got) if got == *payload => ok += 1,
                    Ok(_) => {
                        err.get_or_insert(format!("session {t}/{i}: wrong echo"));
                    }
                    Err(e) => {
                        err.get_or_insert(format!("session {t}/{i}: {e}"));
                    }
                }
            }
            // Keep everything open until every thread has verified and the
            // main thread has counted the open backend connections.
            verified.wait();
            release.wait();
            let _ = tx.send(match err {
                None => Ok(ok),
                Some(e) => Err(e),
            });
            drop(conns);
        });
    }
    drop(tx);
    opened.wait();
    verified.wait();
    let held_open = echo.active();
    release.wait();
    let mut total = 0;
    let mut errors = Vec::new();
    for _ in 0..THREADS {
        match rx.recv_timeout(deadline.saturating_sub(start.elapsed())) {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("client thread did not report: {e}")),
        }
    }
    let elapsed = start.elapsed();
    println!("{SESSIONS} sessions in {elapsed:?}; {held_open} backend connections open at once");
    assert!(
        errors.is_empty(),
        "{} failures, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(total, SESSIONS);
    assert!(
        held_open >= SESSIONS && echo.max_active() >= SESSIONS,
        "all sessions must be open at the same time: {held_open} open at the barrier, max {}",
        echo.max_active()
    );
    assert!(elapsed < deadline, "took {elapsed:?}");
    // And they all get logged as finished normally.
    assert!(
        wait_until(Duration::from_secs(20), || lb
            .access_logs()
            .iter()
            .filter(|a| a.end == "done")
            .count()
            >= SESSIONS),
        "expected {SESSIONS} end=done access-log lines, got {}",
        lb.access_logs().iter().filter(|a| a.end == "done").count()
    );
}

fn session_payload(t: usize, i: usize) -> Vec<u8> {
    let mut p = format!("session {t:02}/{i:03}:").into_bytes();
    p.extend(Pattern::bytes(
        (t * 1000 + i) as u64,
        200 + (t * 7 + i) % 300,
    ));
    p
}

#[test]
fn unread_client_bytes_are_not_lost_when_backend_replies_first() {
    // The backend greets before reading; the client's request is already in
    // flight. Both must arrive.
    let backend = Backend::spawn(|mut s: std::net::TcpStream| {
        let _ = s.write_all(b"220 hello\n");
        let mut req = [0u8; 5];
        if s.read_exact(&mut req).is_ok() && &req == b"QUIT\n" {
            let _ = s.write_all(b"221 bye\n");
        }
    });
    let lb = Balancer::quick(&[backend.addr()]);
    let mut c = connect(lb.listen);
    c.write_all(b"QUIT\n").unwrap();
    let got = read_to_eof(&mut c, Duration::from_secs(5)).unwrap();
    assert_eq!(got, b"220 hello\n221 bye\n");
}
