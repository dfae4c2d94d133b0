//! Zero-copy relay (`--zero-copy auto|on|off`): bulk transfers move through
//! kernel pipes with splice(2), byte for byte the same as through buffers;
//! `auto` leaves small exchanges on buffers; a pipe is held only while
//! bytes wait in it; a reset ends only its own session.

use crate::support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const MIB: u64 = 1024 * 1024;

fn balancer(mode: &str, backend: SocketAddr) -> Balancer {
    Balancer::builder(free_addr())
        .backend(backend)
        .opt("--zero-copy", mode)
        .start()
}

/// Pipe descriptors the process holds: a pipe lent to a flow, or kept in
/// its reactor's pool for the next one, is two.
fn pipe_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/PID/fd")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

fn exchange_and_check(lb: &Balancer, received: &std::sync::mpsc::Receiver<(u64, u64)>, len: u64) {
    let within = Duration::from_secs(60);
    let (sent, (got_len, got_hash)) = transfer::both_ways(lb.listen, 7, len, within);
    assert_eq!(got_len, len, "client received wrong byte count");
    assert_eq!(
        got_hash,
        Pattern::hash(8, len),
        "client received other bytes"
    );
    let (up_len, up_hash) = received
        .recv_timeout(within)
        .expect("backend reports what it received");
    assert_eq!(
        (up_len, up_hash),
        (len, sent),
        "backend received other bytes"
    );
    let a = lb.wait_access_log(Duration::from_secs(5), |a| a.bytes_in == len);
    assert_eq!(
        (a.bytes_in, a.bytes_out, a.end.as_str(), a.term.as_str()),
        (len, len, "done", "--"),
        "{}",
        a.line
    );
}

#[test]
fn every_mode_relays_32_mib_each_way_intact_and_counts_it_exactly() {
    for mode in ["off", "on", "auto"] {
        let (backend, received) = transfer::hashing_backend(8, 32 * MIB);
        let lb = balancer(mode, backend.addr());
        let start = Instant::now();
        exchange_and_check(&lb, &received, 32 * MIB);
        println!("zero-copy {mode}: 32 MiB each way in {:?}", start.elapsed());
    }
}

#[test]
fn bulk_transfers_take_pipes_in_auto_and_on_modes_and_never_in_off_mode() {
    for (mode, uses_pipes) in [("off", false), ("on", true), ("auto", true)] {
        let (backend, received) = transfer::hashing_backend(8, 8 * MIB);
        let lb = balancer(mode, backend.addr());
        let before = pipe_fds(lb.pid());
        exchange_and_check(&lb, &received, 8 * MIB);
        let after = pipe_fds(lb.pid());
        println!("zero-copy {mode}: pipe descriptors {before} -> {after}");
        if uses_pipes {
            assert!(after >= before + 2, "{mode}: no pipe was made");
        } else {
            assert_eq!(after, before, "{mode}: a pipe was made");
        }
    }
}

#[test]
fn in_auto_mode_small_request_reply_exchanges_stay_on_buffers() {
    let echo = Backend::echo();
    let lb = balancer("auto", echo.addr());
    let before = pipe_fds(lb.pid());
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(lb.listen)).collect();
    let mut reply = [0u8; 100];
    for round in 0..50u8 {
        for c in &mut clients {
            let request = [round; 100];
            c.write_all(&request).expect("send a request");
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("read timeout");
            c.read_exact(&mut reply).expect("read the reply");
            assert_eq!(reply, request, "echo changed the bytes");
        }
    }
    drop(clients);
    let after = pipe_fds(lb.pid());
    assert_eq!(after, before, "500 exchanges of 100 bytes took a pipe");
}

#[test]
fn a_pipe_holds_bytes_for_a_reader_that_stopped_and_is_returned_when_it_reads_on() {
    // More than the kernel's socket buffers on both sides can take.
    const REPLY: u64 = 64 * MIB;
    let admin = free_addr();
    let backend = Backend::spawn(|mut s: TcpStream| {
        // Read the request first: closing with unread bytes would reset.
        let mut go = [0u8; 2];
        if s.read_exact(&mut go).is_ok() {
            let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
            let _ = write_pattern(&mut s, 9, REPLY);
        }
    });
    let lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--zero-copy", "on")
        .opt("--admin", &admin.to_string())
        .start();
    let gauge = |admin| {
        let body = http::get(admin, "/metrics").body;
        let families = prometheus::parse(&body).expect("metrics parse");
        prometheus::value(&families, "balanciaga4_pipes_in_use", &[])
    };
    let rss_before = lb.rss_kib();
    let mut c = connect(lb.listen);
    c.write_all(b"go").expect("send");
    // The client reads nothing: the reply fills the client's socket
    // buffers and then the pipe, where it waits.
    let held = wait_until(Duration::from_secs(5), || gauge(admin) == Some(1.0));
    assert!(
        held,
        "no pipe held for the stalled reader: {:?}",
        gauge(admin)
    );
    let rss_held = lb.rss_kib();
    let (len, hash) = hash_to_eof(&mut c, Duration::from_secs(30)).expect("read the reply");
    assert_eq!((len, hash), (REPLY, Pattern::hash(9, REPLY)));
    c.shutdown(Shutdown::Write).expect("FIN");
    let returned = wait_until(Duration::from_secs(5), || gauge(admin) == Some(0.0));
    assert!(returned, "the pipe was not given back");
    println!(
        "stalled 64 MiB reply: balancer RSS {rss_before} KiB before, {rss_held} KiB while held"
    );
    assert!(
        rss_held < rss_before + 1024,
        "the stalled bytes are the kernel's, not the balancer's: RSS {rss_before} -> {rss_held} KiB"
    );
}

#[test]
fn a_backend_reset_in_the_middle_of_a_spliced_transfer_ends_only_that_session() {
    const PART: u64 = 4 * MIB;
    const STEADY: u64 = 16 * MIB;
    // One backend, two behaviours, chosen by the client's first byte:
    // `R` gets 4 MiB and then a reset, anything else an echo.
    let backend = Backend::spawn(|mut s: TcpStream| {
        let mut first = [0u8; 1];
        if s.read_exact(&mut first).is_err() {
            return;
        }
        if first[0] == b'R' {
            let _ = write_pattern(&mut s, 3, PART);
            thread::sleep(Duration::from_millis(200));
            set_linger_zero(&s);
        } else {
            backend::echo_handler(s);
        }
    });
    let lb = balancer("on", backend.addr());

    let survivor = thread::spawn({
        let listen = lb.listen;
        move || {
            let mut c = connect(listen);
            c.write_all(b"S").expect("send the command");
            let mut w = c.try_clone().expect("clone");
            let writer = thread::spawn(move || {
                let sent = write_pattern(&mut w, 7, STEADY);
                let _ = w.shutdown(Shutdown::Write);
                sent
            });
            let got = hash_to_eof(&mut c, Duration::from_secs(60)).expect("echo to EOF");
            (writer.join().expect("writer").expect("write"), got)
        }
    });
    let mut c = connect(lb.listen);
    c.write_all(b"R").expect("send the command");
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let ended = loop {
        match c.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => got += n as u64,
            Err(_) => break "error",
        }
    };
    println!("client saw {ended} after {got} bytes");
    assert_eq!(ended, "error", "a reset must reach the client as a reset");
    assert!(got <= PART, "{got} bytes");
    let client = c.local_addr().expect("client address");
    let a = lb.access_log_for(client, Duration::from_secs(5));
    assert_eq!(a.end, "backend-reset", "{}", a.line);
    assert_eq!(a.term, "SD", "{}", a.line);

    let (sent, (len, hash)) = survivor.join().expect("the other session");
    assert_eq!(len, STEADY, "the other session lost bytes");
    assert_eq!(hash, sent, "the other session's echo changed");
}
