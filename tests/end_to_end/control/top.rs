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
    // Both are placed before b is drained, so that the drain cannot move one.
    let held: Vec<_> = (0..2).map(|_| connect(lb.listen)).collect();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = stats(admin);
            let backends = s["pools"][0]["backends"].as_array().unwrap().clone();
            s["listeners"][0]["accepted"] == 12 && backends.iter().all(|b| b["active"] == 1)
        }),
        "the held clients never showed as active, one on each backend"
    );
    let drain = format!("/backend/drain?pool=default&backend={}", b.addr());
    assert_eq!(post(admin, &drain).status, 200);
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

/// `top` running on a pseudo-terminal, and what it has written so far.
struct InPty {
    child: std::process::Child,
    controller: OwnedFd,
    terminal: OwnedFd,
    /// The terminal's local modes before `top` started.
    cooked: libc::tcflag_t,
    output: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl InPty {
    fn start(admin: SocketAddr) -> InPty {
        let (controller, terminal) = openpty();
        let cooked = local_flags(&terminal);
        assert_ne!(
            cooked & libc::ICANON,
            0,
            "a new pty starts in canonical mode"
        );
        let stdio = || Stdio::from(terminal.try_clone().unwrap());
        let child = Command::new(bin())
            .args(["top", "--admin", &admin.to_string(), "--interval", "200ms"])
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .expect("spawn top");
        let mut reader = std::fs::File::from(controller.try_clone().unwrap());
        let (tx, output) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last process holding the terminal end is gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        InPty {
            child,
            controller,
            terminal,
            cooked,
            output,
            seen: Vec::new(),
        }
    }

    /// Everything written so far once it contains `needle`; panics after
    /// `within`.
    fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(needle) {
                return text;
            }
            match self
                .output
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(bytes) => self.seen.extend_from_slice(&bytes),
                Err(_) => panic!("{needle:?} never written; top wrote {text:?}"),
            }
        }
    }

    /// Presses `q`; checks that top exits 0 within 2 s and gives the
    /// terminal back as it found it.
    fn quit(mut self) {
        let mut writer = std::fs::File::from(self.controller.try_clone().unwrap());
        let pressed = Instant::now();
        writer.write_all(b"q").unwrap();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if pressed.elapsed() > Duration::from_secs(2) {
                let _ = self.child.kill();
                panic!("top still running 2 s after q");
            }
            thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{status:?}");
        let text = self.wait_for(LEAVE, Duration::from_secs(2));
        assert!(
            text.ends_with(LEAVE),
            "did not end by showing the cursor and leaving the alternate screen: {:?}",
            &text[text.len().saturating_sub(200)..]
        );
        assert_eq!(
            local_flags(&self.terminal),
            self.cooked,
            "terminal modes not restored"
        );
    }
}

/// What `top` writes last: show the cursor, leave the alternate screen.
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

#[test]
fn top_interactive_quits_on_q_and_restores_the_terminal() {
    let backend = Backend::echo();
    let admin = free_addr();
    let _lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--admin", &admin.to_string())
        .start();
    let mut top = InPty::start(admin);
    let text = top.wait_for(&backend.addr().to_string(), Duration::from_secs(10));
    assert!(text.starts_with("\x1b[?1049h\x1b[?25l"), "{text:?}");
    assert!(text.contains("\x1b[1mBACKEND"), "{text:?}");
    assert!(text.contains("\x1b[32mup"), "state not coloured: {text:?}");
    let raw = local_flags(&top.terminal);
    assert_eq!(raw & (libc::ICANON | libc::ECHO), 0, "not in raw mode");
    top.quit();
}

#[test]
fn top_interactive_shows_an_unreachable_admin_keeps_retrying_and_still_quits() {
    let nobody = free_addr();
    let mut top = InPty::start(nobody);
    let error = format!("admin at {nobody}: cannot connect");
    let first = top.wait_for(&error, Duration::from_secs(10));
    let tries = |text: &str| text.matches(&error).count();
    top.wait_for("retrying every 200ms", Duration::from_secs(1));
    // Still retrying: the error is drawn again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tries(&String::from_utf8_lossy(&top.seen)) <= tries(&first) && Instant::now() < deadline {
        if let Ok(bytes) = top.output.recv_timeout(Duration::from_millis(100)) {
            top.seen.extend_from_slice(&bytes);
        }
    }
    assert!(
        tries(&String::from_utf8_lossy(&top.seen)) > tries(&first),
        "no retry"
    );
    top.quit();
}
