//! Backends added and removed through the admin API while redis-benchmark
//! runs through the balancer against real redis-server backends: no
//! request fails, and every added backend serves some of them.

use crate::support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::http::post;
use support::skip::require_programs;
use support::*;

/// A redis-server on a loopback port, killed when dropped.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Redis {
        let addr = free_addr();
        let port = addr.port().to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = Redis { child, addr };
        assert!(
            wait_until(Duration::from_secs(10), || redis
                .command("PING")
                .starts_with("+PONG")),
            "redis-server on {addr} never answered PING"
        );
        redis
    }

    /// One inline command's reply, read until a complete line or bulk
    /// string arrived (empty if the server is not up yet).
    fn command(&self, command: &str) -> String {
        let Ok(mut s) = try_connect(self.addr) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("{command}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !complete(&reply) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// Calls of command `name` served so far (`INFO commandstats`).
    fn calls(&self, name: &str) -> u64 {
        let info = self.command("INFO commandstats");
        let key = format!("cmdstat_{name}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simple reply line, or a bulk string with all its bytes.
fn complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if reply.first() != Some(&b'$') {
        return true;
    }
    let len: usize = std::str::from_utf8(&reply[1..end])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    reply.len() >= end + 2 + len + 2
}

/// One bounded redis-benchmark run against `listen`, killed after 60 s.
fn benchmark(listen: SocketAddr) -> Output {
    let port = listen.port().to_string();
    let mut child = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-c", "8", "-n", "20000"])
        .args(["-t", "set,get,incr", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-benchmark");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("redis-benchmark output")
}

#[test]
fn adding_and_removing_redis_backends_under_redis_benchmark_fails_no_request() {
    if !require_programs(&["redis-server", "redis-benchmark"]) {
        return;
    }
    let redis = [Redis::start(), Redis::start(), Redis::start()];
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(
        &format!(
            r#"(
    global: (workers: 2, access_log: false),
    timeouts: (drain: "30s"),
    listeners: [(name: "redis", bind: "{listen}", pool: "redis")],
    pools: [(name: "redis", health: (interval: "200ms", send: "PING\r\n", expect: "+PONG"),
             backends: [(address: "{}")])],
    admin: (bind: "{admin}"),
)"#,
            redis[0].addr
        ),
        listen,
    );
    let [r1, r2, r3] = [redis[0].addr, redis[1].addr, redis[2].addr];
    // Each round's actions land while its benchmark runs.
    let rounds: [&[String]; 5] = [
        &[format!("/backend/add?pool=redis&address={r2}")],
        &[format!("/backend/remove?pool=redis&backend={r1}")],
        &[format!("/backend/add?pool=redis&address={r3}&weight=2")],
        &[
            format!("/backend/add?pool=redis&address={r1}"),
            format!("/backend/remove?pool=redis&backend={r2}"),
        ],
        &[],
    ];
    for (round, actions) in rounds.iter().enumerate() {
        let run = thread::spawn(move || benchmark(listen));
        thread::sleep(Duration::from_millis(150));
        for action in actions.iter() {
            let response = post(admin, action);
            assert_eq!(response.status, 200, "{action}: {}", response.body);
        }
        let out = run.join().expect("benchmark thread");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "round {round}: redis-benchmark failed ({}):\n{stdout}\n{stderr}\n{}",
            out.status,
            lb.logs_joined()
        );
        for text in [&stdout, &stderr] {
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("error") && !lower.contains("closed"),
                "round {round}: redis-benchmark reported a failure:\n{text}"
            );
        }
        let per_test = stdout
            .lines()
            .filter(|l| l.contains("requests per second"))
            .count();
        assert_eq!(per_test, 3, "round {round}: one line per test:\n{stdout}");
    }
    // The backends added at run time served requests of their own.
    for (name, r) in [("r2", &redis[1]), ("r3", &redis[2])] {
        assert!(r.calls("set") > 0, "{name} got no SET");
        assert!(r.calls("get") > 0, "{name} got no GET");
    }
}
