//! Access lines as JSON (`--access-log-format json`,
//! `global.access_log_format`): one object per line that serde_json
//! parses, with typed values equal to what the test sent; for UDP flows
//! too; and a reload switches the format of the lines that follow.

use crate::support;

use std::fs;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::balancer::TempDir;
use support::udp::{client, exchange, UdpBackend};
use support::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// Every line of `path` parsed as JSON; a line that is not JSON fails.
fn json_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn line_for(path: &Path, client: SocketAddr) -> Value {
    let ours = |v: &Value| v["client_port"] == u64::from(client.port());
    assert!(
        wait_until(LOG_WAIT, || json_lines(path).iter().any(ours)),
        "no line for {client}: {:?}",
        fs::read_to_string(path)
    );
    json_lines(path).into_iter().find(ours).unwrap()
}

#[test]
fn json_lines_parse_and_carry_exact_typed_values() {
    const UP: u64 = 54_321;
    const DOWN: u64 = 123_457;
    let backend = Backend::spawn(|mut s: TcpStream| {
        if hash_to_eof(&mut s, Duration::from_secs(5)).is_ok() {
            let _ = write_pattern(&mut s, 5, DOWN);
        }
    });
    let dir = TempDir::new("alog-json");
    let path = dir.path().join("access.log");
    let lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--access-log-file", path.to_str().unwrap())
        .opt("--access-log-format", "json")
        .start();
    let mut c = connect(lb.listen);
    let me = c.local_addr().unwrap();
    write_pattern(&mut c, 2, UP).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(hash_to_eof(&mut c, Duration::from_secs(5)).unwrap().0, DOWN);
    let v = line_for(&path, me);
    assert_eq!(v["event"], "conn");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["listener"], "default");
    assert_eq!(v["pool"], "default");
    assert_eq!(v["backend"], backend.addr().ip().to_string());
    assert_eq!(
        v["backend_port"].as_u64(),
        Some(u64::from(backend.addr().port()))
    );
    assert_eq!(v["backup"], false);
    assert_eq!(
        (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
        (Some(UP), Some(DOWN))
    );
    let connect_ms = v["connect_ms"].as_u64().expect("connect_ms is a number");
    let duration_ms = v["duration_ms"].as_u64().expect("duration_ms is a number");
    assert!(connect_ms <= duration_ms && duration_ms < 10_000, "{v}");
    assert_eq!(v["attempts"].as_u64(), Some(1));
    assert_eq!(
        (v["end"].as_str(), v["term"].as_str()),
        (Some("done"), Some("--"))
    );
    assert!(v.get("route").is_none(), "no routes, no route field: {v}");
    let stamp = v["time"].as_str().expect("time is a string");
    let at = log_time(stamp).expect("time is RFC 3339 UTC");
    assert!(since(at, SystemTime::now()) < LOG_WAIT, "{stamp}");
}

#[test]
fn a_backend_that_refuses_gives_nulls_not_dashes() {
    let refusing = free_addr();
    let dir = TempDir::new("alog-json-null");
    let path = dir.path().join("access.log");
    let lb = Balancer::builder(free_addr())
        .backend(refusing)
        .opt("--retries", "0")
        .opt("--access-log-file", path.to_str().unwrap())
        .opt("--access-log-format", "json")
        .start();
    let mut c = connect(lb.listen);
    let me = c.local_addr().unwrap();
    let _ = c.write_all(b"x");
    let _ = read_to_eof(&mut c, Duration::from_secs(3));
    let v = line_for(&path, me);
    assert_eq!(
        (v["end"].as_str(), v["term"].as_str()),
        (Some("no-backend"), Some("SC"))
    );
    assert!(
        v["connect_ms"].is_null() && v["backend"].is_null() && v["backend_port"].is_null(),
        "{v}"
    );
}

#[test]
fn a_udp_flow_line_is_json_with_datagram_counts() {
    let echo = UdpBackend::echo();
    let dir = TempDir::new("alog-json-udp");
    let path = dir.path().join("access.log");
    let lb = Balancer::builder(free_addr())
        .backend(echo.addr())
        .flag("--udp")
        .opt("--udp-responses", "1")
        .opt("--access-log-file", path.to_str().unwrap())
        .opt("--access-log-format", "json")
        .start();
    let socket = client(lb.listen);
    let me = socket.local_addr().unwrap();
    assert_eq!(exchange(&socket, b"hello", LOG_WAIT).unwrap(), b"hello");
    let v = line_for(&path, me);
    assert_eq!(v["event"], "flow");
    assert_eq!(
        (
            v["datagrams_in"].as_u64(),
            v["datagrams_out"].as_u64(),
            v["bytes_in"].as_u64(),
            v["bytes_out"].as_u64()
        ),
        (Some(1), Some(1), Some(5), Some(5)),
        "{v}"
    );
    assert_eq!(v["end"], "responses");
    assert_eq!(
        v["backend_port"].as_u64(),
        Some(u64::from(echo.addr().port()))
    );
}

fn config(listen: SocketAddr, backend: SocketAddr, log: &Path, global: &str) -> String {
    format!(
        r#"(
    global: (access_log_file: "{}"{global}),
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(name: "web", health: (enabled: false), backends: [(address: "{backend}")])],
)"#,
        log.display()
    )
}

fn echo_once(listen: SocketAddr) -> SocketAddr {
    let mut c = connect(listen);
    let me = c.local_addr().unwrap();
    c.write_all(b"abc").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"abc");
    me
}

#[test]
fn a_reload_switches_the_format_and_says_syslog_needs_a_restart() {
    let echo = Backend::echo();
    let dir = TempDir::new("alog-json-reload");
    let path = dir.path().join("access.log");
    let listen = free_addr();
    let lb = Balancer::with_config(&config(listen, echo.addr(), &path, ""), listen);
    let first = echo_once(listen);
    let lines = || fs::read_to_string(&path).unwrap_or_default();
    assert!(wait_until(LOG_WAIT, || lines().lines().count() == 1));
    let kv = lines();
    assert!(
        AccessLog::parse(&kv).is_some_and(|a| a.client == first.to_string()),
        "{kv}"
    );
    lb.reload_with(&config(
        listen,
        echo.addr(),
        &path,
        r#", access_log_format: "json", syslog: ()"#,
    ));
    lb.expect_line(LOG_WAIT, "global.syslog needs a restart");
    let second = echo_once(listen);
    assert!(wait_until(LOG_WAIT, || lines().lines().count() == 2));
    let text = lines();
    let last = text.lines().nth(1).unwrap();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["client_port"].as_u64(), Some(u64::from(second.port())));
    assert!(
        !lb.logs_joined()
            .contains("access_log_format needs a restart"),
        "{}",
        lb.logs_joined()
    );
}
