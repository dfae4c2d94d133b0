//! Health checks through the real binary against real loopback backends:
//! checks are on by default; active checks mark a backend down after `fall`
//! failures (each kind of failure with its reason) and up after `rise`
//! passes; client traffic marks a refusing or unanswering backend down at
//! once (`passive_failures`); send/expect checks and their escapes; checks
//! that hang time out without delaying others; `--no-health-check`;
//! fail-fast and fail-open when every backend is down; `initial_state:
//! "unknown"`; slow start after a backend comes back; and the rate and CPU
//! cost of checking 200 backends.
//!
//! Times of health transitions are taken from the balancer's own log
//! timestamps (wall clock), compared with `SystemTime::now()` taken by the
//! test at the event (kill, restart, switch), so polling delays of the test
//! do not count. Upper bounds allow a loaded 2-core CI machine 1 s of margin.

use crate::support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use support::*;

/// Margin on every upper time bound, for a loaded 2-core CI machine.
const MARGIN: Duration = Duration::from_secs(1);
/// The default jitter: each wait between checks is interval × 0.9..=1.1.
const JITTER: f64 = 0.1;

fn reserved() -> ReservedPort {
    ReservedPort::on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One short request to an identity backend: connect, read its name line,
/// close. Returns the client address (for the access log) and the line.
fn ask(lb: SocketAddr) -> Result<(SocketAddr, String), String> {
    let mut c = try_connect(lb).map_err(|e| format!("connect: {e}"))?;
    let client = c.local_addr().unwrap();
    let line = read_line(&mut c, Duration::from_secs(3)).map_err(|e| format!("{client}: {e}"))?;
    Ok((client, line))
}

/// One request to a PING backend: send `PING\r\n`, read the reply line.
fn ping(lb: SocketAddr) -> Result<(SocketAddr, String), String> {
    let mut c = try_connect(lb).map_err(|e| format!("connect: {e}"))?;
    let client = c.local_addr().unwrap();
    c.write_all(b"PING\r\n")
        .map_err(|e| format!("{client}: write: {e}"))?;
    let line = read_line(&mut c, Duration::from_secs(3)).map_err(|e| format!("{client}: {e}"))?;
    Ok((client, line))
}

/// A Redis-like backend: reads one line, answers `+PONG NAME\r\n` while
/// `healthy`, `-ERR\r\n` otherwise, then holds the connection until the
/// peer closes. Clients and health checks get the same treatment.
fn pinged(name: &'static str, healthy: Arc<AtomicBool>) -> Backend {
    Backend::spawn(move |mut s: TcpStream| {
        if read_line(&mut s, Duration::from_secs(5)).is_err() {
            return;
        }
        let reply = if healthy.load(Ordering::SeqCst) {
            format!("+PONG {name}\r\n")
        } else {
            "-ERR\r\n".to_string()
        };
        if s.write_all(reply.as_bytes()).is_ok() {
            support::backend::drain(&mut s);
        }
    })
}

/// Lines of `lb` containing `needle`.
fn lines_with(lb: &Balancer, needle: &str) -> Vec<String> {
    lb.logs()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

/// Waits for the first line containing `needle`; panics with the log at the
/// deadline.
fn expect_line(lb: &Balancer, needle: &str, within: Duration, what: &str) -> String {
    lb.wait_for_line(within, |l| l.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "{what}: no line containing {needle:?} within {within:?}; balancer printed:\n{}",
                lb.logs_joined()
            )
        })
}

/// The time the balancer wrote `line`.
fn stamp(line: &str) -> SystemTime {
    log_time(line).unwrap_or_else(|| panic!("no timestamp on {line:?}"))
}

/// `n × d`, scaled by `f`.
fn times(d: Duration, n: u32, f: f64) -> Duration {
    d.mul_f64(f64::from(n) * f)
}

#[test]
fn killed_backend_is_marked_down_by_the_first_refused_client_connect_and_every_client_is_served() {
    let interval = ms(100);
    let (fall, rise) = (3, 2);
    let a = Backend::identity("a");
    let port = reserved();
    let b_addr = port.addr;
    let mut b = Some(Backend::identity_on(b_addr, "b"));
    let lb = Balancer::builder(free_addr())
        .backends(&[a.addr(), b_addr])
        .opt("--health-interval", "100ms")
        .opt("--fall", "3")
        .opt("--rise", "2")
        .start();
    let down = transition("default", b_addr, "DOWN");
    let up = transition("default", b_addr, "UP");

    // Sequential requests every 20 ms. The kill happens between two
    // requests of the same loop, so no request is half-way through the
    // dying backend's accept queue (that one would be reset, not retried).
    struct Request {
        client: SocketAddr,
        name: String,
        after_kill: bool,
    }
    let mut requests = Vec::new();
    let mut killed_at = None;
    for i in 0..60 {
        if i == 10 {
            drop(b.take());
            killed_at = Some(SystemTime::now());
        }
        let (client, name) = ask(lb.listen).unwrap_or_else(|e| {
            panic!(
                "request {i} failed ({e}); every client must be served; balancer printed:\n{}",
                lb.logs_joined()
            )
        });
        requests.push(Request {
            client,
            name,
            after_kill: killed_at.is_some(),
        });
        thread::sleep(ms(20));
    }
    let killed_at = killed_at.unwrap();

    let down_line = expect_line(
        &lb,
        &down,
        times(interval, fall, 1.0) + interval + MARGIN,
        "DOWN after kill",
    );
    let took = since(killed_at, stamp(&down_line));
    assert!(
        took <= times(interval, fall, 1.0) + interval + MARGIN,
        "marked down {took:?} after the kill: {down_line}"
    );
    assert!(
        down_line.contains("WARN"),
        "DOWN is logged at warn: {down_line}"
    );
    // With requests every 20 ms, client traffic finds the refusal before
    // the checks (3 × 100 ms) do.
    assert!(
        down_line.contains("DOWN: connect refused on client traffic (1/1)"),
        "the first refused client connect marks it down at once: {down_line}"
    );

    let before: Vec<&str> = requests[..10].iter().map(|r| r.name.as_str()).collect();
    assert!(
        before.contains(&"a\n") && before.contains(&"b\n"),
        "both backends serve before the kill: {before:?}"
    );
    let mut retried = Vec::new();
    for r in requests.iter().filter(|r| r.after_kill) {
        assert_eq!(r.name, "a\n", "only a can answer after the kill");
        let log = lb.access_log_for(r.client, Duration::from_secs(5));
        assert_eq!(log.backend, a.addr().to_string(), "{}", log.line);
        if log.attempts > 1 {
            retried.push(log.line);
        }
    }
    // Requests are sequential: the first one that meets the dead backend
    // is retried (attempts=2) and marks it down; nobody tries it after.
    assert!(
        retried.len() <= 1,
        "the dead backend was tried again after it was marked down:\n{}",
        retried.join("\n")
    );
    assert_eq!(
        lines_with(&lb, &down).len(),
        1,
        "one DOWN line per change (the checks that fail later must not log again):\n{}",
        lb.logs_joined()
    );

    // Restart on the same port: it comes back after `rise` passing checks,
    // and no client reaches it before it is logged UP.
    let restarted_at = SystemTime::now();
    let _b = Backend::identity_on(b_addr, "b");
    let deadline = Instant::now() + times(interval, rise, 1.0) + interval + MARGIN;
    let (mut after_up, mut b_after_up) = (0, 0);
    loop {
        let (_, name) = ask(lb.listen).unwrap_or_else(|e| panic!("after restart: {e}"));
        let is_up = !lines_with(&lb, &up).is_empty();
        if name == "b\n" && !is_up {
            // The state flips a moment before UP is logged.
            assert!(
                lb.wait_for_line(ms(200), |l| l.contains(&up)).is_some(),
                "a client reached the restarted backend before it was logged UP:\n{}",
                lb.logs_joined()
            );
        }
        if is_up {
            after_up += 1;
            b_after_up += usize::from(name == "b\n");
        }
        if after_up >= 10 || Instant::now() > deadline {
            break;
        }
        thread::sleep(ms(20));
    }
    let up_line = expect_line(&lb, &up, Duration::ZERO, "UP after restart");
    assert!(
        up_line.contains("UP: check passed (2/2)"),
        "comes back by rise=2 passing checks: {up_line}"
    );
    assert!(up_line.contains("INFO"), "UP is logged at info: {up_line}");
    let took = since(restarted_at, stamp(&up_line));
    // Two passing checks are at least one (jittered) interval apart.
    assert!(
        took >= times(interval, rise - 1, 1.0 - JITTER) - ms(5),
        "UP only {took:?} after the restart, sooner than rise={rise} checks allow: {up_line}"
    );
    assert!(
        took <= times(interval, rise, 1.0) + interval + MARGIN,
        "UP {took:?} after the restart: {up_line}"
    );
    assert!(
        b_after_up >= 3,
        "the restarted backend got {b_after_up} of {after_up} requests after coming UP"
    );
}

#[test]
fn idle_backend_goes_down_after_fall_failed_checks_and_up_after_rise_passed_checks() {
    let interval = ms(100);
    let (fall, rise) = (3, 2);
    let a = Backend::identity("a");
    let port = reserved();
    let b_addr = port.addr;
    let b = Backend::identity_on(b_addr, "b");
    let lb = Balancer::builder(free_addr())
        .backends(&[a.addr(), b_addr])
        .opt("--health-interval", "100ms")
        .start();
    let down = transition("default", b_addr, "DOWN");
    let up = transition("default", b_addr, "UP");

    // Healthy backends are never logged.
    thread::sleep(ms(300));
    let transitions: Vec<String> = lb.logs().into_iter().filter(|l| is_transition(l)).collect();
    assert!(
        transitions.is_empty(),
        "healthy backends logged: {transitions:?}"
    );

    // No client traffic: only the checks can find it down.
    let killed_at = SystemTime::now();
    drop(b);
    let down_line = expect_line(
        &lb,
        &down,
        times(interval, fall, 1.0) + interval + MARGIN,
        "DOWN by checks",
    );
    assert!(
        down_line.contains(&format!(
            "pool default backend {b_addr} DOWN: connect refused (3/3)"
        )),
        "{down_line}"
    );
    assert!(down_line.contains("WARN"), "{down_line}");
    let took = since(killed_at, stamp(&down_line));
    // The first failing check can come at once; the third is two jittered
    // intervals later.
    assert!(
        took >= times(interval, fall - 1, 1.0 - JITTER) - ms(5),
        "DOWN {took:?} after the kill, sooner than fall={fall} checks allow"
    );
    assert!(
        took <= times(interval, fall, 1.0) + interval + MARGIN,
        "DOWN {took:?} after the kill"
    );
    // Down means no traffic: every client goes to a, first try.
    for _ in 0..4 {
        let (client, name) = ask(lb.listen).unwrap();
        assert_eq!(name, "a\n");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.attempts, 1, "a down backend is not tried: {}", log.line);
    }

    let restarted_at = SystemTime::now();
    let _b = Backend::identity_on(b_addr, "b");
    let up_line = expect_line(
        &lb,
        &up,
        times(interval, rise, 1.0) + interval + MARGIN,
        "UP by checks",
    );
    assert!(
        up_line.contains(&format!(
            "pool default backend {b_addr} UP: check passed (2/2)"
        )),
        "{up_line}"
    );
    assert!(up_line.contains("INFO"), "{up_line}");
    let took = since(restarted_at, stamp(&up_line));
    assert!(
        took >= times(interval, rise - 1, 1.0 - JITTER) - ms(5),
        "UP {took:?} after the restart, sooner than rise={rise} checks allow"
    );
    assert!(
        took <= times(interval, rise, 1.0) + interval + MARGIN,
        "UP {took:?} after the restart"
    );
    let names: Vec<String> = (0..6).map(|_| ask(lb.listen).unwrap().1).collect();
    assert!(
        names.iter().filter(|n| *n == "b\n").count() >= 2,
        "back in rotation: {names:?}"
    );
    assert_eq!(lines_with(&lb, &down).len(), 1, "{}", lb.logs_joined());
    assert_eq!(lines_with(&lb, &up).len(), 1, "{}", lb.logs_joined());
    let a_lines = lines_with(&lb, &format!("backend {} ", a.addr()));
    assert!(a_lines.is_empty(), "a never changes state: {a_lines:?}");
}

#[test]
fn send_expect_check_marks_a_wrong_reply_down_and_a_right_reply_up_again() {
    let interval = ms(100);
    let x_healthy = Arc::new(AtomicBool::new(false));
    let x = pinged("x", x_healthy.clone());
    let y = pinged("y", Arc::new(AtomicBool::new(true)));
    let lb = Balancer::builder(free_addr())
        .backends(&[x.addr(), y.addr()])
        .opt("--health-interval", "100ms")
        .opt("--health-send", r"PING\r\n")
        .opt("--health-expect", "+PONG")
        .start();
    let started = SystemTime::now();
    let x_down = transition("default", x.addr(), "DOWN");

    // x accepts connections but answers -ERR: down after 3 checks.
    let down_line = expect_line(&lb, &x_down, ms(400) + MARGIN, "x DOWN");
    assert!(
        down_line.contains("DOWN: unexpected reply"),
        "the reason names the wrong reply: {down_line}"
    );
    assert!(down_line.ends_with("(3/3)"), "{down_line}");
    assert!(
        since(started, stamp(&down_line)) <= ms(400) + MARGIN,
        "{down_line}"
    );
    for _ in 0..6 {
        let (client, reply) = ping(lb.listen).unwrap();
        assert_eq!(reply, "+PONG y\r\n", "a down backend gets no traffic");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(
            (log.backend.as_str(), log.attempts),
            (y.addr().to_string().as_str(), 1),
            "{}",
            log.line
        );
    }

    // Now x answers +PONG: up after 2 passing checks, then in rotation.
    let switched_at = SystemTime::now();
    x_healthy.store(true, Ordering::SeqCst);
    let up_line = expect_line(
        &lb,
        &transition("default", x.addr(), "UP"),
        ms(300) + MARGIN,
        "x UP",
    );
    assert!(up_line.contains("UP: check passed (2/2)"), "{up_line}");
    let took = since(switched_at, stamp(&up_line));
    // A check already in flight at the switch may count as the first pass.
    assert!(
        took >= times(interval, 1, 1.0 - JITTER) - ms(30),
        "UP {took:?} after the switch, sooner than rise=2 checks allow"
    );
    let replies: Vec<String> = (0..6).map(|_| ping(lb.listen).unwrap().1).collect();
    assert!(
        replies.iter().filter(|r| *r == "+PONG x\r\n").count() >= 2,
        "x back in rotation: {replies:?}"
    );
    let y_lines = lines_with(&lb, &format!("backend {} ", y.addr()));
    assert!(y_lines.is_empty(), "y never changes state: {y_lines:?}");
}

#[test]
fn check_that_gets_no_reply_times_out_and_marks_only_that_backend_down() {
    let interval = ms(300);
    let timeout = ms(200);
    let fall = 3;
    // Accepts, reads, never answers: the check hangs until its timeout.
    let mute = Backend::spawn(|mut s: TcpStream| {
        support::backend::drain(&mut s);
    });
    let good = pinged("good", Arc::new(AtomicBool::new(true)));
    let started = SystemTime::now();
    let lb = Balancer::builder(free_addr())
        .backends(&[mute.addr(), good.addr()])
        .opt("--health-interval", "300ms")
        .opt("--health-timeout", "200ms")
        .opt("--health-send", r"PING\r\n")
        .opt("--health-expect", "+PONG")
        .start();

    let bound = times(interval, fall, 1.0) + timeout + MARGIN;
    let down_line = expect_line(
        &lb,
        &transition("default", mute.addr(), "DOWN"),
        bound,
        "mute DOWN",
    );
    assert!(
        down_line.contains("DOWN: timed out waiting for reply (3/3)"),
        "{down_line}"
    );
    let took = since(started, stamp(&down_line));
    // Three checks that each wait the full timeout, two intervals apart.
    assert!(
        took >= times(interval, fall - 1, 1.0 - JITTER) + timeout - ms(5),
        "DOWN after {took:?}: sooner than {fall} checks waiting {timeout:?} each allow"
    );
    assert!(took <= bound, "DOWN after {took:?}");
    // A timed-out check is closed: checks of one backend never pile up.
    assert!(
        mute.max_active() <= 2,
        "{} check connections open at once on the mute backend",
        mute.max_active()
    );

    for _ in 0..5 {
        let (client, reply) = ping(lb.listen).unwrap();
        assert_eq!(reply, "+PONG good\r\n");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.attempts, 1, "{}", log.line);
    }
    // A full fall × interval more: the healthy backend stays up meanwhile.
    thread::sleep(times(interval, fall, 1.0));
    let good_lines = lines_with(&lb, &format!("backend {} ", good.addr()));
    assert!(
        good_lines.is_empty(),
        "the healthy backend changed state: {good_lines:?}"
    );
}

#[test]
fn each_kind_of_failed_check_is_logged_down_once_with_its_reason() {
    // One balancer, one backend per way a check can fail, and one that
    // passes. Interval = timeout = 100 ms, fall 3.
    let refusing = RefusingPort::new();
    let hole = BlackHole::new();
    let closes = Backend::spawn(|mut s: TcpStream| {
        // Read the check's request, then close: a clean FIN, no reply.
        let _ = read_line(&mut s, Duration::from_secs(5));
    });
    let wrong = pinged("wrong", Arc::new(AtomicBool::new(false)));
    let mute = Backend::spawn(|mut s: TcpStream| {
        support::backend::drain(&mut s);
    });
    let good = pinged("good", Arc::new(AtomicBool::new(true)));
    let started = SystemTime::now();
    let lb = Balancer::builder(free_addr())
        .backends(&[
            refusing.addr,
            hole.addr,
            closes.addr(),
            wrong.addr(),
            mute.addr(),
            good.addr(),
        ])
        .opt("--health-interval", "100ms")
        .opt("--health-send", r"PING\r\n")
        .opt("--health-expect", "+PONG")
        .start();

    let cases = [
        (refusing.addr, "connect refused (3/3)"),
        (hole.addr, "connect timed out (3/3)"),
        (closes.addr(), "connection closed before reply (3/3)"),
        (wrong.addr(), r#"unexpected reply "-ERR\r" (3/3)"#),
        (mute.addr(), "timed out waiting for reply (3/3)"),
    ];
    let bound = ms(400) + MARGIN;
    for (addr, reason) in cases {
        let line = expect_line(&lb, &transition("default", addr, "DOWN"), bound, reason);
        assert!(line.ends_with(reason), "expected {reason:?}: {line}");
        assert!(line.contains("WARN"), "{line}");
        assert!(since(started, stamp(&line)) <= bound, "{line}");
    }
    // Two more intervals: no repeated lines, and the good one stays up.
    thread::sleep(ms(200));
    for (addr, _) in cases {
        let lines = lines_with(&lb, &format!("backend {addr} "));
        assert_eq!(lines.len(), 1, "one line per change: {lines:?}");
    }
    let good_lines = lines_with(&lb, &format!("backend {} ", good.addr()));
    assert!(good_lines.is_empty(), "{good_lines:?}");
    let (client, reply) = ping(lb.listen).unwrap();
    assert_eq!(reply, "+PONG good\r\n");
    let log = lb.access_log_for(client, Duration::from_secs(5));
    assert_eq!(log.attempts, 1, "{}", log.line);
}

/// Waits up to `within` until every one of `backends` has been connected
/// to at least once.
fn wait_all_checked(backends: &Counting, within: Duration) -> bool {
    wait_until(within, || backends.snapshot().iter().all(|&n| n >= 1))
}

#[test]
fn checks_are_on_by_default_in_quick_mode_and_file_mode_every_two_seconds() {
    // Quick mode: `--rise 2` (the default) only keeps the test support from
    // adding --no-health-check; the other settings are the defaults. File
    // mode: no health section at all.
    let quick = Counting::new(1);
    let file = Counting::new(1);
    let started = Instant::now();
    let _lb_quick = Balancer::builder(free_addr())
        .backend(quick.addrs[0])
        .opt("--rise", "2")
        .start();
    let listen = free_addr();
    let ron = format!(
        r#"(
    listeners: [(bind: "{listen}")],
    pools: [(backends: [(address: "{}")])],
)"#,
        file.addrs[0]
    );
    let _lb_file = Balancer::with_config(&ron, listen);

    // The first check comes at a random point of the first 2 s interval.
    let within = Duration::from_millis(2200) + MARGIN;
    assert!(
        wait_all_checked(&quick, within),
        "quick mode: no check within {within:?}"
    );
    assert!(
        wait_all_checked(&file, within),
        "file mode: no check within {within:?}"
    );
    // At most one check per (jittered) 2 s interval so far.
    let elapsed = started.elapsed().as_secs_f64();
    let most = (elapsed / 1.8).ceil() as usize;
    for (mode, backends) in [("quick", &quick), ("file", &file)] {
        let n = backends.snapshot()[0];
        assert!(
            n <= most,
            "{mode} mode: {n} checks in {elapsed:.1} s; the default interval is 2 s"
        );
    }
}

#[test]
fn hanging_checks_of_twenty_backends_do_not_delay_the_checks_of_another() {
    // Twenty backends that never answer hold each of their checks for the
    // whole 100 ms timeout. Checks run concurrently, so the healthy
    // backend is still checked every 100 ms; one at a time, it would be
    // checked about every 2 s.
    let mutes: Vec<Backend> = (0..20)
        .map(|_| {
            Backend::spawn(|mut s: TcpStream| {
                support::backend::drain(&mut s);
            })
        })
        .collect();
    let good = pinged("good", Arc::new(AtomicBool::new(true)));
    let mut addrs: Vec<SocketAddr> = mutes.iter().map(Backend::addr).collect();
    addrs.push(good.addr());
    let lb = Balancer::builder(free_addr())
        .backends(&addrs)
        .opt("--health-interval", "100ms")
        .opt("--health-send", r"PING\r\n")
        .opt("--health-expect", "+PONG")
        .start();

    // No client traffic: every connection the good backend accepts is a
    // check.
    thread::sleep(ms(200));
    let (n0, t0) = (good.accepted(), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (n1, wall) = (good.accepted(), t0.elapsed());
    let expected = wall.as_secs_f64() / 0.1;
    let got = (n1 - n0) as f64;
    assert!(
        got >= expected * 0.6 && got <= expected * 1.4,
        "the healthy backend was checked {got} times in {wall:?} (expected about {expected:.0})"
    );
    let good_lines = lines_with(&lb, &format!("backend {} ", good.addr()));
    assert!(good_lines.is_empty(), "{good_lines:?}");
    for m in &mutes {
        expect_line(
            &lb,
            &transition("default", m.addr(), "DOWN"),
            MARGIN,
            "every mute backend DOWN",
        );
    }
}

#[test]
fn health_send_escapes_reach_the_backend_as_the_bytes_they_stand_for() {
    // `--health-send` takes \r \n \t \\ and \xHH escapes: `\\` is one
    // backslash, `\x41` the byte 0x41.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Mutex::new(tx);
    let backend = Backend::spawn(move |mut s: TcpStream| {
        if let Ok(line) = read_line(&mut s, Duration::from_secs(5)) {
            let _ = tx.lock().unwrap().send(line.into_bytes());
        }
    });
    let _lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--health-interval", "100ms")
        .opt("--health-send", r"a\\b\tc\x41\r\n")
        .start();
    let got = rx
        .recv_timeout(ms(100) + MARGIN)
        .expect("a check within one interval");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "a\\b\tcA\r\n",
        "bytes the check sent for --health-send 'a\\\\b\\tc\\x41\\r\\n'"
    );
}

#[test]
fn no_health_check_never_marks_a_refusing_backend_down_and_clients_are_served_by_retrying() {
    let dead = RefusingPort::new();
    let good = Backend::identity("good");
    let lb = Balancer::builder(free_addr())
        .backends(&[dead.addr, good.addr()])
        .opt("--health-interval", "100ms")
        .flag("--no-health-check")
        .start();

    // Six requests over 600 ms: more than fall × interval.
    let mut retried = 0;
    for i in 0..6 {
        let (client, name) = ask(lb.listen).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(name, "good\n");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.backend, good.addr().to_string(), "{}", log.line);
        assert!(log.attempts <= 2, "{}", log.line);
        retried += usize::from(log.attempts == 2);
        thread::sleep(ms(100));
    }
    // Round robin keeps choosing the dead backend: it is never taken out.
    assert!(
        retried >= 3,
        "only {retried} of 6 clients met the refusing backend; it must stay in rotation"
    );
    let transitions: Vec<String> = lb.logs().into_iter().filter(|l| is_transition(l)).collect();
    assert!(
        transitions.is_empty(),
        "nothing is marked down or up without health checks: {transitions:?}"
    );
}

#[test]
fn client_connect_that_times_out_marks_the_backend_down_at_once_and_is_retried_elsewhere() {
    // Checks every 1 s with fall 3 need 2 s or more to find the black hole;
    // the first client whose connect times out finds it at once.
    let hole = BlackHole::new();
    let good = Backend::identity("good");
    let lb = Balancer::builder(free_addr())
        .backends(&[hole.addr, good.addr()])
        .opt("--connect-timeout", "300ms")
        .opt("--health-interval", "1s")
        .start();
    let down = transition("default", hole.addr, "DOWN");

    let mut timed_out = None;
    for i in 0..4 {
        let (client, name) = ask(lb.listen).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(name, "good\n");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        if log.attempts == 2 {
            timed_out = Some(log);
            break;
        }
    }
    let timed_out = timed_out.expect("round robin sends one of the first clients to the hole");
    assert!(
        timed_out.duration_ms >= 250,
        "the retry came after the connect timeout: {}",
        timed_out.line
    );
    let line = expect_line(&lb, &down, Duration::from_secs(1), "passive DOWN");
    assert!(
        line.contains("DOWN: connect timed out on client traffic (1/1)"),
        "{line}"
    );
    assert!(line.contains("WARN"), "{line}");
    // Nobody waits for the hole's connect timeout any more.
    for _ in 0..4 {
        let started = Instant::now();
        let (client, name) = ask(lb.listen).unwrap();
        assert_eq!(name, "good\n");
        assert!(
            started.elapsed() < ms(250),
            "served after {:?}: the down backend was tried again",
            started.elapsed()
        );
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.attempts, 1, "{}", log.line);
    }
    assert_eq!(lines_with(&lb, &down).len(), 1, "{}", lb.logs_joined());
}

#[test]
fn passive_failures_two_marks_down_only_at_the_second_consecutive_refused_client_connect() {
    // File mode, checks every 2 s (fall 3: 4 s or more to go down by
    // checks), so every change within this test is passive detection's.
    let dead = RefusingPort::new();
    let good = Backend::identity("good");
    let listen = free_addr();
    let ron = format!(
        r#"(
    global: (workers: 2),
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(
        name: "web",
        backends: [(address: "{}"), (address: "{}")],
        health: (interval: "2s", passive_failures: 2),
    )],
)"#,
        dead.addr,
        good.addr()
    );
    let lb = Balancer::with_config(&ron, listen);
    let down = transition("web", dead.addr, "DOWN");

    // Each client's access line is written with (or after) any DOWN line
    // its failed connect caused, so the log is checked after each one.
    let mut refused = 0;
    let mut after_down = 0;
    for i in 0..12 {
        let (client, name) = ask(lb.listen).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(name, "good\n");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        let downs = lines_with(&lb, &down);
        if refused >= 2 {
            after_down += 1;
            assert_eq!(
                log.attempts, 1,
                "tried after it was marked down: {}",
                log.line
            );
            if after_down >= 3 {
                break;
            }
            continue;
        }
        refused += usize::from(log.attempts == 2);
        match refused {
            0 | 1 => assert!(
                downs.is_empty(),
                "marked down after {refused} refused client connect(s): {downs:?}"
            ),
            _ => {
                assert_eq!(downs.len(), 1, "{downs:?}");
                assert!(
                    downs[0].contains("DOWN: connect refused on client traffic (2/2)"),
                    "{}",
                    downs[0]
                );
            }
        }
    }
    assert_eq!(
        refused, 2,
        "two refused client connects needed to mark it down"
    );
    assert!(after_down >= 3, "only {after_down} clients after the DOWN");
}

/// Two identity backends that fail a `+PONG` check (they greet with their
/// name), and a balancer that has marked both down.
fn all_marked_down(fail_open: bool) -> (Backend, Backend, Balancer) {
    let a = Backend::identity("a");
    let b = Backend::identity("b");
    let mut builder = Balancer::builder(free_addr())
        .backends(&[a.addr(), b.addr()])
        .opt("--health-interval", "100ms")
        .opt("--health-send", r"PING\r\n")
        .opt("--health-expect", "+PONG");
    if fail_open {
        builder = builder.flag("--fail-open");
    }
    let lb = builder.start();
    for addr in [a.addr(), b.addr()] {
        let line = expect_line(
            &lb,
            &transition("default", addr, "DOWN"),
            ms(400) + MARGIN,
            "DOWN",
        );
        assert!(line.contains("unexpected reply"), "{line}");
    }
    (a, b, lb)
}

#[test]
fn all_backends_down_fail_fast_closes_new_clients_at_once_with_no_backend() {
    let (_a, _b, lb) = all_marked_down(false);
    for _ in 0..3 {
        let mut c = connect(lb.listen);
        let client = c.local_addr().unwrap();
        let (_, elapsed, bytes) = wait_closed(&mut c, Duration::from_secs(2))
            .unwrap_or_else(|n| panic!("client still open after 2 s ({n} bytes)"));
        assert_eq!(bytes, 0, "no backend may serve it");
        assert!(elapsed < ms(500), "closed only after {elapsed:?}");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(
            (log.end.as_str(), log.backend.as_str()),
            ("no-backend", "-"),
            "{}",
            log.line
        );
        assert_eq!(
            log.attempts, 0,
            "fail-fast tries no down backend: {}",
            log.line
        );
    }
    // Three clients closed within well under a second: one warning, which
    // names the pool and the backends' states; not one per client.
    let warnings: Vec<String> = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("no backend can take new clients"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("[WARN]")
            && warnings[0].contains("pool default")
            && warnings[0].contains(" down"),
        "{}",
        warnings[0]
    );
}

#[test]
fn all_backends_down_fail_open_still_serves_clients_through_down_backends() {
    let (a, b, lb) = all_marked_down(true);
    let mut names = Vec::new();
    for _ in 0..4 {
        let (client, name) = ask(lb.listen).unwrap_or_else(|e| {
            panic!(
                "fail-open must still serve: {e}; balancer printed:\n{}",
                lb.logs_joined()
            )
        });
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.end, "done", "{}", log.line);
        assert_eq!(log.attempts, 1, "{}", log.line);
        assert!(
            log.backend == a.addr().to_string() || log.backend == b.addr().to_string(),
            "{}",
            log.line
        );
        names.push(name);
    }
    assert!(
        names.contains(&"a\n".to_string()) && names.contains(&"b\n".to_string()),
        "fail-open still balances over the down backends: {names:?}"
    );
}

#[test]
fn unknown_initial_state_sends_no_traffic_until_the_first_passing_check() {
    // The backend answers checks `-ERR` until switched; clients (who send
    // `HELLO`) get `served`. fall: 100 keeps it from being marked down in
    // the meantime, so its first passing check is what brings it up.
    let healthy = Arc::new(AtomicBool::new(false));
    let backend = {
        let healthy = healthy.clone();
        Backend::spawn(move |mut s: TcpStream| {
            let Ok(line) = read_line(&mut s, Duration::from_secs(5)) else {
                return;
            };
            let reply = match (line.as_str(), healthy.load(Ordering::SeqCst)) {
                ("PING\r\n", true) => "+PONG\r\n",
                ("PING\r\n", false) => "-ERR\r\n",
                _ => "served\n",
            };
            if s.write_all(reply.as_bytes()).is_ok() {
                support::backend::drain(&mut s);
            }
        })
    };
    let listen = free_addr();
    let ron = format!(
        r#"(
    global: (workers: 2),
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(
        name: "web",
        backends: [(address: "{}")],
        health: (
            interval: "100ms",
            send: "PING\r\n",
            expect: "+PONG",
            initial_state: "unknown",
            fall: 100,
        ),
    )],
)"#,
        backend.addr()
    );
    let lb = Balancer::with_config(&ron, listen);
    let hello = |lb: &Balancer| {
        let mut c = connect(lb.listen);
        let client = c.local_addr().unwrap();
        c.write_all(b"HELLO\n").unwrap();
        (client, c)
    };

    // From the start and across several failing checks: no traffic.
    for _ in 0..4 {
        let (client, mut c) = hello(&lb);
        let (_, elapsed, bytes) = wait_closed(&mut c, Duration::from_secs(2))
            .unwrap_or_else(|n| panic!("client still open after 2 s ({n} bytes)"));
        assert_eq!(bytes, 0, "an unknown backend got traffic");
        assert!(elapsed < ms(500), "closed only after {elapsed:?}");
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.end, "no-backend", "{}", log.line);
        thread::sleep(ms(80));
    }
    let up = transition("web", backend.addr(), "UP");
    assert!(lines_with(&lb, &up).is_empty(), "{}", lb.logs_joined());

    let switched_at = SystemTime::now();
    healthy.store(true, Ordering::SeqCst);
    let up_line = expect_line(&lb, &up, ms(200) + MARGIN, "UP by the first pass");
    assert!(
        up_line.contains("UP: check passed (1/1)"),
        "one passing check brings an unknown backend up: {up_line}"
    );
    assert!(
        since(switched_at, stamp(&up_line)) <= ms(200) + MARGIN,
        "{up_line}"
    );
    for _ in 0..3 {
        let (client, mut c) = hello(&lb);
        assert_eq!(
            read_line(&mut c, Duration::from_secs(3)).unwrap(),
            "served\n"
        );
        drop(c);
        let log = lb.access_log_for(client, Duration::from_secs(5));
        assert_eq!(log.backend, backend.addr().to_string(), "{}", log.line);
    }
}

/// Many loopback listeners served by one thread that accepts, counts and
/// drops each connection.
struct Counting {
    addrs: Vec<SocketAddr>,
    counts: Arc<Vec<AtomicUsize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Counting {
    fn new(n: usize) -> Counting {
        use mio::net::TcpListener;
        use mio::{Events, Interest, Poll, Token};
        let mut poll = Poll::new().unwrap();
        let mut listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind(localhost(0)).expect("bind a counting backend"))
            .collect();
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(i), Interest::READABLE)
                .unwrap();
        }
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            thread::spawn(move || {
                let mut events = Events::with_capacity(1024);
                while !stop.load(Ordering::SeqCst) {
                    if poll.poll(&mut events, Some(ms(50))).is_err() {
                        continue;
                    }
                    for e in events.iter() {
                        let i = e.token().0;
                        // Edge-triggered: accept until the queue is empty.
                        while let Ok((s, _)) = listeners[i].accept() {
                            counts[i].fetch_add(1, Ordering::SeqCst);
                            drop(s);
                        }
                    }
                }
            })
        };
        Counting {
            addrs,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<usize> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn two_hundred_backends_are_each_checked_every_interval_at_low_cpu() {
    raise_fd_limit(4096);
    let n = 200;
    let interval = ms(100);
    let backends = Counting::new(n);
    let listen = free_addr();
    let list: Vec<String> = backends
        .addrs
        .iter()
        .map(|a| format!("(address: \"{a}\")"))
        .collect();
    let ron = format!(
        r#"(
    global: (workers: 1, access_log: false),
    listeners: [(name: "many", bind: "{listen}", pool: "many")],
    pools: [(name: "many", backends: [{}], health: (interval: "100ms"))],
)"#,
        list.join(", ")
    );
    let lb = Balancer::with_config(&ron, listen);

    // Let the checks settle into their rhythm, then measure 2 s.
    thread::sleep(ms(500));
    let (c0, cpu0, t0) = (backends.snapshot(), lb.cpu_time(), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let (c1, cpu1, t1) = (backends.snapshot(), lb.cpu_time(), Instant::now());
    let wall = t1 - t0;
    let expected = wall.as_secs_f64() / interval.as_secs_f64();

    let per: Vec<usize> = c1.iter().zip(&c0).map(|(b, a)| b - a).collect();
    let off: Vec<(SocketAddr, usize)> = backends
        .addrs
        .iter()
        .zip(&per)
        .filter(|(_, &k)| (k as f64) < expected * 0.5 || (k as f64) > expected * 1.5)
        .map(|(a, &k)| (*a, k))
        .collect();
    assert!(
        off.is_empty(),
        "expected about {expected:.0} checks per backend in {wall:?}; {} backends were off: {off:?}",
        off.len()
    );
    let total: usize = per.iter().sum();
    let want = expected * n as f64;
    assert!(
        (total as f64) >= want * 0.7 && (total as f64) <= want * 1.3,
        "{total} checks in {wall:?}, expected about {want:.0}"
    );
    let cpu = (cpu1 - cpu0).as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "200 backends at {interval:?}: {total} checks in {wall:?}, balancer CPU {:.1}% of a core",
        cpu * 100.0
    );
    assert!(
        cpu < 0.30,
        "checking {n} backends every {interval:?} used {:.1}% of a core",
        cpu * 100.0
    );
    let transitions: Vec<String> = lb.logs().into_iter().filter(|l| is_transition(l)).collect();
    assert!(
        transitions.is_empty(),
        "healthy backends changed state: {transitions:?}"
    );
}

#[test]
fn with_slow_start_a_backend_back_up_gets_a_share_of_new_sessions_growing_over_the_period() {
    // Round robin over a and b with `--slow-start 4s`. b fails its checks,
    // then passes again; from its UP line, two clients open sessions one
    // after another for the whole period, and each notes when it connected
    // and who answered.
    //
    // While b ramps up (ramp r = elapsed / 4 s), round robin offers b every
    // other pick, or again at once after b was passed over (the cursor
    // moved past b to a), and b takes an offered pick when a fresh uniform
    // draw is below r. So whatever happened before, a session goes to b
    // with probability at most r, and b takes each offer independently
    // with probability at least r.
    // - In the first second, r <= 0.3 (0.25, plus 0.2 s of slack for the
    //   accept and the UP line coming after the switch): b's count of n
    //   sessions is at most Binomial(n, 0.3). Hoeffding: a share above
    //   0.3 + sqrt(ln(1e7) / 2n) has probability < 1e-7.
    // - From 2 s to 4 s, r >= 0.5, and at least half of the n sessions are
    //   offers to b (every pick that does not go to b follows an offer b
    //   took); b takes at least Binomial(n/2, 0.5) of them. Hoeffding: a
    //   share below (0.5 - sqrt(ln(1e7) / n)) / 2 has probability < 1e-7.
    // Without slow start b gets exactly half from the start, which fails
    // the first bound once n >= 120; the test asks for 200.
    const PERIOD: Duration = Duration::from_secs(4);
    let a = pinged("a", Arc::new(AtomicBool::new(true)));
    let b_healthy = Arc::new(AtomicBool::new(true));
    let b = pinged("b", b_healthy.clone());
    let lb = Balancer::builder(free_addr())
        .backends(&[a.addr(), b.addr()])
        .opt("--health-interval", "50ms")
        .opt("--rise", "1")
        .opt("--fall", "1")
        .opt("--health-send", r"PING\r\n")
        .opt("--health-expect", "+PONG")
        .opt("--slow-start", "4s")
        .start();
    b_healthy.store(false, Ordering::SeqCst);
    expect_line(
        &lb,
        &transition("default", b.addr(), "DOWN"),
        ms(200) + MARGIN,
        "b DOWN",
    );
    b_healthy.store(true, Ordering::SeqCst);
    let up = stamp(&expect_line(
        &lb,
        &transition("default", b.addr(), "UP"),
        ms(200) + MARGIN,
        "b UP",
    ));

    let listen = lb.listen;
    let clients: Vec<JoinHandle<Vec<(Duration, String)>>> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut seen = Vec::new();
                // Bounded by time, and by count in case the clock jumps.
                for _ in 0..1_000_000 {
                    let at = since(up, SystemTime::now());
                    if at >= PERIOD {
                        break;
                    }
                    let (_, line) = ping(listen).unwrap_or_else(|e| panic!("{e}"));
                    seen.push((at, line.trim_end().to_string()));
                }
                seen
            })
        })
        .collect();
    let seen: Vec<(Duration, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    let share_of_b = |from: Duration, to: Duration| {
        let window: Vec<&String> = seen
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, name)| name)
            .collect();
        let to_b = window.iter().filter(|n| **n == "+PONG b").count();
        (to_b as f64 / window.len().max(1) as f64, window.len())
    };
    let margin = |n: usize| (1e7_f64.ln() / (2.0 * n as f64)).sqrt();
    let (early, n_early) = share_of_b(Duration::ZERO, Duration::from_secs(1));
    let (late, n_late) = share_of_b(Duration::from_secs(2), PERIOD);
    println!("slow start: b's share {early:.3} of {n_early} sessions in the first second, {late:.3} of {n_late} from 2 s to 4 s");
    assert!(
        n_early >= 200 && n_late >= 200,
        "too few sessions to tell: {n_early} in the first second, {n_late} from 2 s to 4 s"
    );
    assert!(
        early <= 0.3 + margin(n_early),
        "b got {early:.3} of the {n_early} sessions in its first second back up"
    );
    let floor = (0.5 - (2.0 * margin(n_late) * margin(n_late)).sqrt()) / 2.0;
    assert!(
        late >= floor,
        "b got {late:.3} of the {n_late} sessions from 2 s to 4 s after it came back (at least {floor:.3} expected)"
    );
    assert!(
        late > early,
        "b's share did not grow: {early:.3} then {late:.3}"
    );
}
