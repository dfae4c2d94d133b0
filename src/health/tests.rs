//! Health checks against real loopback sockets. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::entry::fresh;
use super::test_support::*;
use super::{spawn, Target};
use crate::backend::Backend;
use crate::config::{HealthConfig, InitialState, Protocol};

#[test]
fn listening_backend_passes_and_refused_port_fails() {
    let backends = fake(&[Behave::Accept]);
    let (_held, refused) = refusing();
    let h = health(ms(500), 1, 1);
    assert_eq!(reason(check_once(backends.addrs[0], &h)), "passed");
    assert_eq!(reason(check_once(refused, &h)), "connect refused");
}

#[test]
fn send_expect_passes_on_pong_and_fails_on_err_or_close_without_reply() {
    let backends = fake(&[
        Behave::Reply(b"+PONG\r\n"),
        Behave::Reply(b"-ERR unknown command\r\n"),
        Behave::ReadThenClose,
    ]);
    let h = HealthConfig {
        send: Some(b"PING\r\n".to_vec()),
        expect: Some(b"+PONG".to_vec()),
        ..health(ms(500), 1, 1)
    };
    assert_eq!(reason(check_once(backends.addrs[0], &h)), "passed");
    assert_eq!(
        reason(check_once(backends.addrs[1], &h)),
        "unexpected reply \"-ERR \""
    );
    assert_eq!(
        reason(check_once(backends.addrs[2], &h)),
        "connection closed before reply"
    );
}

#[test]
fn expect_only_checks_the_banner_and_quotes_a_wrong_one() {
    let backends = fake(&[
        Behave::Reply(b"SSH-2.0-OpenSSH_9.6\r\n"),
        Behave::Reply(b"HTTP/1.1 500 Internal Server Error\r\n"),
    ]);
    let ssh = HealthConfig {
        expect: Some(b"SSH-2.0-".to_vec()),
        ..health(ms(500), 1, 1)
    };
    assert_eq!(reason(check_once(backends.addrs[0], &ssh)), "passed");
    let http = HealthConfig {
        expect: Some(b"HTTP/1.1 200".to_vec()),
        ..ssh
    };
    assert_eq!(
        reason(check_once(backends.addrs[1], &http)),
        "unexpected reply \"HTTP/1.1 500\""
    );
}

#[test]
fn backend_is_set_down_after_fall_failures_and_up_after_rise_passes() {
    let (socket, addr) = refusing();
    let b = backend(addr);
    let running = Running::fixed(vec![target("web", &b, health(ms(20), 2, 3))]);
    let stats = running.stats("web", addr);
    assert!(wait_for(ms(2000), || !b.is_up()), "never marked down");
    assert!(
        n(&stats.failed) >= 3,
        "down after {} failures",
        n(&stats.failed)
    );
    assert_eq!(n(&stats.went_down), 1);
    socket.listen(128).expect("listen");
    let passed_before = n(&stats.passed);
    assert_eq!(passed_before, 0);
    assert!(wait_for(ms(2000), || b.is_up()), "never marked up again");
    assert!(
        n(&stats.passed) >= 2,
        "up after {} passes",
        n(&stats.passed)
    );
    assert_eq!(n(&stats.went_up), 1);
    drop(running);
}

#[test]
fn unknown_backend_is_down_until_its_first_pass_and_confirmed_down_after_fall() {
    let backends = fake(&[Behave::Accept]);
    let (_held, refused) = refusing();
    let good = backend(backends.addrs[0]);
    let bad = backend(refused);
    let h = HealthConfig {
        initial_state: InitialState::Unknown,
        ..health(ms(100), 3, 2)
    };
    let running = Running::fixed(vec![target("p", &good, h.clone()), target("p", &bad, h)]);
    let good_stats = running.stats("p", good.addr);
    let bad_stats = running.stats("p", bad.addr);
    assert!(!bad.is_up(), "unknown is not up");
    assert!(
        wait_for(ms(1000), || good.is_up()),
        "first pass brings it up"
    );
    assert_eq!(n(&good_stats.passed), 1, "up after its first pass");
    assert!(wait_for(ms(1000), || n(&bad_stats.went_down) == 1));
    assert_eq!(
        n(&bad_stats.failed),
        2,
        "confirmed down after fall failures"
    );
    assert!(!bad.is_up());
}

#[test]
fn passively_marked_down_backend_returns_only_after_rise_passes() {
    let backends = fake(&[Behave::Accept]);
    let b = backend(backends.addrs[0]);
    let running = Running::fixed(vec![target("p", &b, health(ms(20), 3, 1))]);
    let stats = running.stats("p", b.addr);
    assert!(wait_for(ms(1000), || n(&stats.passed) >= 1));
    b.set_up(false); // what a reactor does after failed client connects
    let marked_at = n(&stats.passed);
    assert!(wait_for(ms(1000), || b.is_up()), "never came back");
    let passes = n(&stats.passed) - marked_at;
    assert!(passes >= 3, "back after {passes} passes");
    assert_eq!(n(&stats.went_up), 1);
}

#[test]
fn hung_backend_fails_at_its_timeout_while_a_healthy_one_keeps_passing() {
    let backends = fake(&[Behave::Silent, Behave::Reply(b"+PONG\r\n")]);
    let (interval, timeout) = (ms(50), ms(40));
    let h = HealthConfig {
        timeout,
        send: Some(b"PING\r\n".to_vec()),
        expect: Some(b"+PONG".to_vec()),
        ..health(interval, 1, 1)
    };
    let hung = backend(backends.addrs[0]);
    let healthy = backend(backends.addrs[1]);
    let running = Running::fixed(vec![
        target("p", &hung, h.clone()),
        target("p", &healthy, h),
    ]);
    std::thread::sleep(ms(700));
    assert!(!hung.is_up());
    assert!(healthy.is_up());
    let (records, _) = running.finish();
    let (hung_checks, healthy_checks): (Vec<Record>, Vec<Record>) =
        records.iter().partition(|r| r.index == 0);
    assert!(hung_checks.len() >= 8, "{} hung checks", hung_checks.len());
    for r in &hung_checks {
        assert_eq!(r.passed, Some(false));
        let took = r.ended - r.started;
        assert!(
            took >= timeout && took < timeout + ms(15),
            "a hung check took {took:?}, timeout {timeout:?}"
        );
    }
    assert!(
        healthy_checks.len() >= 10,
        "{} healthy checks",
        healthy_checks.len()
    );
    for pair in healthy_checks.windows(2) {
        assert_eq!(pair[1].passed, Some(true));
        assert!(pair[1].started - pair[1].scheduled < ms(10), "{pair:?}");
        let gap = pair[1].started - pair[0].started;
        assert!(gap > ms(40) && gap < ms(60), "healthy checks {gap:?} apart");
    }
}

#[test]
fn two_hundred_backends_every_100ms_are_checked_on_time_with_modest_cpu() {
    let backends = fake(&[Behave::Accept; 200]);
    let list: Vec<Arc<Backend>> = backends.addrs.iter().map(|a| backend(*a)).collect();
    let h = HealthConfig {
        jitter: 0.1,
        ..health(ms(100), 2, 3)
    };
    let targets: Vec<Target> = list.iter().map(|b| target("big", b, h.clone())).collect();
    let started = Instant::now();
    let running = Running::fixed(targets);
    std::thread::sleep(ms(2000));
    let (records, cpu) = running.finish();
    let wall = started.elapsed();
    let mut late: Vec<Duration> = records.iter().map(|r| r.started - r.scheduled).collect();
    late.sort();
    let p99 = late[late.len() * 99 / 100];
    let failed = records.iter().filter(|r| r.passed != Some(true)).count();
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "{} checks, {failed} not passed, lateness p50 {:?} p99 {p99:?} max {:?}, checker CPU {cpu:?} in {wall:?} ({:.1}% of one core)",
        records.len(),
        late[late.len() / 2],
        late[late.len() - 1],
        share * 100.0
    );
    assert!(records.len() >= 200 * 15, "only {} checks", records.len());
    assert_eq!(failed, 0);
    assert!(p99 < ms(50), "p99 lateness {p99:?}");
    assert!(share < 0.5, "checker used {:.1}% of a core", share * 100.0);
    assert!(list.iter().all(|b| b.is_up()));
}

#[test]
fn reload_carries_state_over_to_a_new_backend_at_the_same_address() {
    let (_held, refused) = refusing();
    let first = backend(refused);
    let h = health(ms(20), 2, 1);
    let current = Arc::new(Mutex::new((1u64, vec![target("p", &first, h.clone())])));
    let source = Arc::clone(&current);
    let running = Running::start(move |have| {
        let (epoch, targets) = source.lock().clone();
        (have != Some(epoch)).then_some((epoch, targets))
    });
    assert!(wait_for(ms(1000), || !first.is_up()));
    let stats = running.stats("p", refused);
    let second = backend(refused);
    assert!(second.is_up());
    *current.lock() = (2, vec![target("p", &second, h)]);
    assert!(
        wait_for(ms(300), || !second.is_up()),
        "the new backend gets the carried verdict"
    );
    assert_eq!(n(&stats.went_down), 1, "no second fall: counters carried");
    *current.lock() = (3, Vec::new());
    assert!(wait_for(ms(300), || running.stats.rows().is_empty()));
}

#[test]
fn stop_ends_the_thread_promptly() {
    let backends = fake(&[Behave::Accept]);
    let b = backend(backends.addrs[0]);
    let h = health(Duration::from_secs(10), 2, 3);
    let targets = vec![target("p", &b, h)];
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn(
        move |have| (have != Some(1)).then(|| (1, targets.clone())),
        Arc::clone(&stop),
    )
    .expect("spawn");
    std::thread::sleep(ms(50));
    let asked = Instant::now();
    stop.store(true, Ordering::Release);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = handle.join();
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_ok(),
        "never stopped"
    );
    assert!(
        asked.elapsed() < ms(150),
        "stopped after {:?}",
        asked.elapsed()
    );
}

#[test]
fn jitter_and_first_check_are_reproducible_per_backend() {
    let now = Instant::now();
    let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
    let t = target("web", &backend(addr), health(ms(1000), 2, 3));
    let a = fresh(t.clone(), Arc::default(), now);
    let b = fresh(t.clone(), Arc::default(), now);
    assert_eq!(a.scheduled, b.scheduled);
    let other = target("api", &backend(addr), health(ms(1000), 2, 3));
    assert_ne!(fresh(other, Arc::default(), now).scheduled, a.scheduled);
    let jittery = Target {
        health: HealthConfig {
            jitter: 0.5,
            ..t.health.clone()
        },
        ..t
    };
    let mut e = fresh(jittery.clone(), Arc::default(), now);
    let waits: Vec<Duration> = (0..1000).map(|_| e.next_wait()).collect();
    for wait in &waits {
        assert!(*wait >= ms(500) && *wait <= ms(1500), "{wait:?}");
    }
    // With jitter 0.5 each wait is uniform in [500, 1500] ms. Without any
    // jitter they would all be 1000 ms, which the range above allows; so
    // the waits must also spread over the range. The generator is seeded
    // per backend, so this is deterministic; the bounds still hold for
    // any seed but with negligible odds: no wait below 600 ms (or above
    // 1400 ms) in 1000 has probability 0.9^1000 < 1e-45, and a mean off
    // 1000 ms by 100 ms or more, by Hoeffding, at most
    // 2 exp(-2 * 1000 * 100^2 / 1000^2) = 4e-9.
    let min = waits.iter().min().copied().unwrap_or_default();
    let max = waits.iter().max().copied().unwrap_or_default();
    assert!(min < ms(600) && max > ms(1400), "waits {min:?}..{max:?}");
    let mean = waits.iter().sum::<Duration>() / 1000;
    assert!(mean > ms(900) && mean < ms(1100), "mean wait {mean:?}");
    // Reproducible: the same backend's entry draws the same waits.
    let mut again = fresh(jittery, Arc::default(), now);
    let replay: Vec<Duration> = (0..1000).map(|_| again.next_wait()).collect();
    assert_eq!(replay, waits);
}

#[test]
fn without_jitter_every_check_waits_exactly_the_interval() {
    let addr: SocketAddr = "10.0.0.1:80".parse().expect("addr");
    let t = target("web", &backend(addr), health(ms(1000), 2, 3));
    assert_eq!(t.health.jitter, 0.0);
    let mut e = fresh(t, Arc::default(), Instant::now());
    for _ in 0..100 {
        assert_eq!(e.next_wait(), ms(1000));
    }
}

/// A UDP server on its own thread answering each datagram with `reply`
/// (or not at all), for as long as the returned flag stays false.
fn udp_server(reply: Option<&'static [u8]>) -> (SocketAddr, Arc<AtomicBool>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(ms(20))).expect("read timeout");
    let addr = socket.local_addr().expect("address");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !done.load(Ordering::SeqCst) {
            if let (Ok((_, from)), Some(reply)) = (socket.recv_from(&mut buf), reply) {
                let _ = socket.send_to(reply, from);
            }
        }
    });
    (addr, stop)
}

#[test]
fn a_udp_check_passes_on_a_reply_with_the_expected_prefix_and_fails_otherwise() {
    use crate::config::Protocol::Udp;
    let h = HealthConfig {
        send: Some(b"PING".to_vec()),
        expect: Some(b"PONG".to_vec()),
        ..health(ms(300), 1, 1)
    };
    let (good, stop_good) = udp_server(Some(b"PONG and more"));
    let (short, stop_short) = udp_server(Some(b"PO"));
    let (wrong, stop_wrong) = udp_server(Some(b"NOPE"));
    let (silent, stop_silent) = udp_server(None);
    assert_eq!(reason(check_once_over(good, Udp, &h)), "passed");
    assert_eq!(
        reason(check_once_over(short, Udp, &h)),
        "unexpected reply \"PO\""
    );
    assert_eq!(
        reason(check_once_over(wrong, Udp, &h)),
        "unexpected reply \"NOPE\""
    );
    assert_eq!(
        reason(check_once_over(silent, Udp, &h)),
        "timed out waiting for reply"
    );
    let any_reply = HealthConfig { expect: None, ..h };
    assert_eq!(reason(check_once_over(wrong, Udp, &any_reply)), "passed");
    for stop in [stop_good, stop_short, stop_wrong, stop_silent] {
        stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_udp_check_to_a_closed_port_fails_as_port_unreachable() {
    let h = HealthConfig {
        send: Some(b"PING".to_vec()),
        ..health(ms(1000), 1, 1)
    };
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a port");
    // Nothing listens there now; the ICMP error ends the check at once.
    let started = Instant::now();
    assert_eq!(
        reason(check_once_over(closed, crate::config::Protocol::Udp, &h)),
        "port unreachable"
    );
    assert!(started.elapsed() < ms(500));
}

#[test]
fn checks_of_proxy_reading_backends_start_with_a_local_header() {
    let b = backend("127.0.0.1:9".parse().expect("addr"));
    let talking = HealthConfig {
        send: Some(b"PING\r\n".to_vec()),
        ..HealthConfig::default()
    };
    let v2 = Some(crate::proxy_protocol::Version::V2);
    let t = Target::new(
        Arc::from("p"),
        Arc::clone(&b),
        talking.clone(),
        Protocol::Tcp,
        v2,
    );
    let send = t.health.send.expect("send");
    assert!(
        send.starts_with(b"\r\n\r\n\0\r\nQUIT\n"),
        "v2 signature first"
    );
    assert!(send.ends_with(b"PING\r\n"), "then what the pool sends");
    // A plain connect check says nothing, so it needs no header; nor does
    // a backend that reads none.
    let silent = Target::new(
        Arc::from("p"),
        Arc::clone(&b),
        HealthConfig::default(),
        Protocol::Tcp,
        v2,
    );
    assert_eq!(silent.health.send, None);
    let plain = Target::new(Arc::from("p"), b, talking, Protocol::Tcp, None);
    assert_eq!(plain.health.send.as_deref(), Some(&b"PING\r\n"[..]));
}

#[test]
fn targets_are_asked_with_the_epoch_the_checker_has_and_built_once() {
    let b = backend("127.0.0.1:9".parse().expect("addr"));
    let h = HealthConfig {
        enabled: false,
        ..health(ms(20), 1, 1)
    };
    let built = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&built);
    let running = Running::start(move |have| {
        seen.lock().push(have);
        (have != Some(7)).then(|| (7, vec![target("p", &b, h.clone())]))
    });
    assert!(wait_for(ms(1000), || built.lock().len() >= 3));
    drop(running);
    let asked = built.lock().clone();
    assert_eq!(asked[0], None, "nothing at first");
    assert!(asked[1..].iter().all(|e| *e == Some(7)), "{asked:?}");
}
