//! `balanciaga4 top` against a running balancer: `--once` prints a table
//! that agrees with `/stats`, the interactive view under a pseudo-terminal
//! quits on `q` and gives the terminal back, and an admin address nobody
//! answers on is an error that names it.

use crate::support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::balancer::{bin, run_to_completion};
use support::http::{get, post};
use support::*;

fn stats(admin: SocketAddr) -> Value {
    let response = get(admin, "/stats");
    assert_eq!(response.status, 200);
    serde_json::from_str(&response.body).expect("/stats is JSON")
}

/// The whitespace-separated cells of the `top --once` line that starts
/// with `first`.
fn row(out: &str, first: &str) -> Vec<String> {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row for {first} in:\n{out}"));
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn top_once_prints_each_backend_with_the_state_and_counts_stats_has() {
    let (a, b) = (Backend::echo(), Backend::echo());
    let admin = free_addr();
    let lb = Balancer::builder(free_addr())
        .backends(&[a.addr(), b.addr()])
        .opt("--admin", &admin.to_string())
        .start();
    for i in 0..10u64 {
        let mut s = connect(lb.listen);
        s.write_all(&Pattern::bytes(i, 500)).unwrap();
        read_exact_within(&mut s, 500, Duration::from_secs(5)).expect("echoed");
    }
    // Round robin: the 11th and 12th client land on a and b, and stay open.
    let held: Vec<_> = (0..2).map(|_| connect(lb.listen)).collect();
    let drain = format!("/backend/drain?pool=default&backend={}", b.addr());
    assert_eq!(post(admin, &drain).status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = stats(admin);
            s["listeners"][0]["active"] == 2 && s["listeners"][0]["accepted"] == 12
        }),
        "the held clients never showed as active"
    );

    let out = run_to_completion(
        &["top", "--admin", &admin.to_string(), "--once"],
        None,
        Duration::from_secs(10),
    );
    let stats = stats(admin);
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(out.status.success(), "{:?}: {text}", out.status);
    assert!(
        !text.contains('\x1b'),
        "escape sequences in --once: {text:?}"
    );
    assert!(text.starts_with("balanciaga4 "), "{text}");

    let listener = row(&text, "default");
    assert_eq!(listener[1], "tcp");
    assert_eq!(listener[3], stats["listeners"][0]["active"].to_string());
    assert_eq!(listener[6], "12");
    assert_eq!(listener[7], lb.listen.to_string());
    assert!(text.contains("POOL default  policy round-robin"), "{text}");

    let backends = stats["pools"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let mut total = 0;
    for (backend, state) in backends.iter().zip(["up", "drain"]) {
        let address = backend["address"].as_str().unwrap();
        let cells = row(&text, address);
        assert_eq!(cells.len(), 11, "{cells:?}");
        assert_eq!(cells[1], state, "{address}");
        assert_eq!(cells[1], backend["state"].as_str().unwrap());
        assert_eq!(cells[2], "1");
        assert_eq!(cells[3], "1", "{address}: one held client");
        assert_eq!(cells[3], backend["active"].to_string());
        assert_eq!(cells[8], "6", "{address}: round robin, half of 12");
        assert_eq!(cells[8], backend["connections"].to_string());
        let share = backend["share"].as_f64().unwrap() * 100.0;
        assert_eq!(cells[7], format!("{share:.1}%"));
        assert_eq!(cells[7], "50.0%");
        total += cells[8].parse::<u64>().unwrap();
    }
    assert_eq!(total, 12);
    drop(held);
}

#[test]
fn top_once_with_no_admin_listener_exits_1_and_names_the_address() {
    let nobody = free_addr();
    let out = run_to_completion(
        &["top", "--admin", &nobody.to_string(), "--once"],
        None,
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("admin at {nobody}")), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// A pseudo-terminal: the controller end for the test, the terminal end
/// for `top`'s stdin, stdout and stderr.
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut controller, mut terminal) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors; the other pointers may be null
    // or, for the size, point to a winsize we own.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and ours alone.
    unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

fn local_flags(terminal: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: tcgetattr fills a termios we own.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(terminal.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

/// Adds what arrives to `seen` until it contains `needle`; false if that
/// does not happen `within`.
fn read_until(
    rx: &mpsc::Receiver<Vec<u8>>,
    seen: &mut Vec<u8>,
    within: Duration,
    needle: &str,
) -> bool {
    let deadline = Instant::now() + within;
    while !String::from_utf8_lossy(seen).contains(needle) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(bytes) => seen.extend_from_slice(&bytes),
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn top_interactive_quits_on_q_and_restores_the_terminal() {
    let backend = Backend::echo();
    let admin = free_addr();
    let _lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--admin", &admin.to_string())
        .start();
    let (controller, terminal) = openpty();
    let cooked = local_flags(&terminal);
    assert_ne!(
        cooked & libc::ICANON,
        0,
        "a new pty starts in canonical mode"
    );
    let stdio = || Stdio::from(terminal.try_clone().unwrap());
    let mut child = Command::new(bin())
        .args(["top", "--admin", &admin.to_string(), "--interval", "200ms"])
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .expect("spawn top");

    // Everything top writes, as it comes.
    let mut reader = std::fs::File::from(controller.try_clone().unwrap());
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last process holding the terminal end is gone.
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    assert!(
        read_until(
            &rx,
            &mut seen,
            Duration::from_secs(10),
            &backend.addr().to_string()
        ),
        "the table never showed the backend"
    );
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("\x1b[?1049h\x1b[?25l"), "{text:?}");
    assert!(text.contains("\x1b[1mBACKEND"), "{text:?}");
    assert!(text.contains("\x1b[32mup"), "state not coloured: {text:?}");
    let raw = local_flags(&terminal);
    assert_eq!(raw & (libc::ICANON | libc::ECHO), 0, "not in raw mode");

    let mut writer = std::fs::File::from(controller.try_clone().unwrap());
    let pressed = Instant::now();
    writer.write_all(b"q").unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if pressed.elapsed() > Duration::from_secs(2) {
            let _ = child.kill();
            panic!("top still running 2 s after q");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    read_until(
        &rx,
        &mut seen,
        Duration::from_secs(2),
        "\x1b[?25h\x1b[?1049l",
    );
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        text.ends_with("\x1b[?25h\x1b[?1049l"),
        "did not end by showing the cursor and leaving the alternate screen: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    assert_eq!(
        local_flags(&terminal),
        cooked,
        "terminal modes not restored"
    );
}
