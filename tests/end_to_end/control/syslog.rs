//! Syslog output: receivers on a unix datagram socket and on UDP parse
//! every datagram as RFC 5424 (or RFC 3164) with the balancer's own pid,
//! host name and tag, for process lines and access lines; a daemon that
//! never reads slows no connection, and every line it could not take is
//! counted in /metrics and /stats.

use crate::support;

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::balancer::TempDir;
use support::http::get;
use support::prometheus;
use support::*;

const WAIT: Duration = Duration::from_secs(5);

/// One short connection through the echo backend; returns the client's
/// address.
fn one_connection(listen: SocketAddr) -> SocketAddr {
    let mut c = connect(listen);
    let me = c.local_addr().unwrap();
    c.write_all(b"ping").unwrap();
    assert_eq!(
        read_exact_within(&mut c, 4, Duration::from_secs(2)).unwrap(),
        b"ping"
    );
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c, Duration::from_secs(2)).unwrap(), b"");
    me
}

/// A syslog daemon on a unix datagram socket in a temporary directory.
struct UnixReceiver {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
}

impl UnixReceiver {
    fn bind() -> UnixReceiver {
        let dir = TempDir::new("syslog");
        let path = dir.path().join("log.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        UnixReceiver {
            socket,
            path,
            _dir: dir,
        }
    }

    fn target(&self) -> String {
        self.path.to_str().unwrap().to_string()
    }
}

/// A quick-mode balancer over `echo` with `--syslog syslog` and `extra`
/// flags with values.
fn start(echo: &Backend, syslog: &str, extra: &[(&str, &str)]) -> Balancer {
    let mut b = Balancer::builder(free_addr())
        .backend(echo.addr())
        .opt("--syslog", syslog);
    for (flag, value) in extra {
        b = b.opt(flag, value);
    }
    b.start()
}

/// Reads datagrams with `recv` into `got` until `done(got)` or `within`
/// passes; false on the deadline.
fn receive_until(
    got: &mut Vec<String>,
    within: Duration,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<usize>,
    done: impl Fn(&[String]) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    while !done(got) {
        if Instant::now() >= deadline {
            return false;
        }
        match recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 datagram")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("receive: {e}"),
        }
    }
    true
}

/// An RFC 5424 message, every header field checked for its syntax.
#[derive(Debug)]
struct Rfc5424 {
    pri: u32,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    msg: String,
}

fn printable(field: &str, max: usize) -> bool {
    !field.is_empty() && field.len() <= max && field.bytes().all(|b| b.is_ascii_graphic())
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, with a
/// RFC 3339 UTC timestamp of at most six fraction digits close to now, and
/// no structured data (`-`).
fn parse_5424(datagram: &str) -> Result<Rfc5424, String> {
    let err = |what: &str| format!("{what} in {datagram:?}");
    let rest = datagram.strip_prefix('<').ok_or_else(|| err("no <"))?;
    let (pri, rest) = rest.split_once('>').ok_or_else(|| err("no >"))?;
    let pri: u32 = pri.parse().map_err(|_| err("PRI not a number"))?;
    if pri > 191 {
        return Err(err("PRI over 191"));
    }
    let rest = rest
        .strip_prefix("1 ")
        .ok_or_else(|| err("version not 1"))?;
    let mut parts = rest.splitn(7, ' ');
    let mut next = || parts.next().unwrap_or("");
    let (stamp, hostname, app, procid, msgid, sd, msg) =
        (next(), next(), next(), next(), next(), next(), next());
    let at = log_time(stamp).ok_or_else(|| err("timestamp not RFC 3339 UTC"))?;
    let fraction = stamp
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('Z').len());
    if fraction > 6 || since(at, SystemTime::now()) > Duration::from_secs(60) {
        return Err(err(
            "timestamp with more than 6 fraction digits or not recent",
        ));
    }
    let fields_ok = printable(hostname, 255)
        && printable(app, 48)
        && printable(procid, 128)
        && printable(msgid, 32);
    if !fields_ok || sd != "-" || msg.is_empty() {
        return Err(err("bad HOSTNAME, APP-NAME, PROCID, MSGID, SD or MSG"));
    }
    Ok(Rfc5424 {
        pri,
        hostname: hostname.into(),
        app: app.into(),
        procid: procid.into(),
        msgid: msgid.into(),
        msg: msg.into(),
    })
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn access_line_of(parsed: &[Rfc5424], client: SocketAddr) -> Option<&Rfc5424> {
    let want = client.to_string();
    parsed
        .iter()
        .find(|m| m.msgid == "access" && AccessLog::parse(&m.msg).is_some_and(|a| a.client == want))
}

#[test]
fn rfc5424_on_a_unix_socket_carries_process_lines_and_access_lines() {
    let receiver = UnixReceiver::bind();
    let echo = Backend::echo();
    let lb = start(&echo, &receiver.target(), &[]);
    let client = one_connection(lb.listen);
    let mut got = Vec::new();
    let complete = receive_until(
        &mut got,
        WAIT,
        |b| receiver.socket.recv(b),
        |got| {
            let parsed: Vec<Rfc5424> = got.iter().filter_map(|d| parse_5424(d).ok()).collect();
            access_line_of(&parsed, client).is_some()
                && parsed.iter().any(|m| m.msg.starts_with("ready: "))
        },
    );
    assert!(complete, "no ready line or no access line in {got:#?}");
    let parsed: Vec<Rfc5424> = got
        .iter()
        .map(|d| parse_5424(d).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let pid = lb.pid().to_string();
    for m in &parsed {
        assert_eq!(
            (m.hostname.as_str(), m.app.as_str(), m.procid.as_str()),
            (this_host().as_str(), "balanciaga4", pid.as_str()),
            "{m:?}"
        );
        // daemon (3): error 27, warn 28, info 30, debug 31.
        assert!([27, 28, 30, 31].contains(&m.pri), "{m:?}");
        assert!(["log", "access"].contains(&m.msgid.as_str()), "{m:?}");
    }
    let ready = parsed
        .iter()
        .find(|m| m.msg.starts_with("ready: "))
        .unwrap();
    assert_eq!((ready.pri, ready.msgid.as_str()), (30, "log"));
    let access = access_line_of(&parsed, client).unwrap();
    assert_eq!(access.pri, 30, "access lines are info: {access:?}");
    let a = AccessLog::parse(&access.msg).unwrap();
    assert_eq!((a.bytes_in, a.bytes_out, a.term.as_str()), (4, 4, "--"));
    assert!(
        log_time(&access.msg).is_none(),
        "the header carries the time, not the message: {}",
        access.msg
    );
}

#[test]
fn rfc5424_over_udp_sends_json_access_lines_only_with_its_facility_and_tag() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let target = format!(
        "udp://{},facility=local0,tag=edge,logs=access",
        receiver.local_addr().unwrap()
    );
    let echo = Backend::echo();
    let lb = start(&echo, &target, &[("--access-log-format", "json")]);
    let client = one_connection(lb.listen);
    let json_of = |d: &String| -> Option<Value> {
        let m = parse_5424(d).ok()?;
        serde_json::from_str(&m.msg).ok()
    };
    let ours = |v: &Value| v["client_port"] == u64::from(client.port());
    let mut got = Vec::new();
    let complete = receive_until(
        &mut got,
        WAIT,
        |b| receiver.recv(b),
        |got| got.iter().filter_map(json_of).any(|v| ours(&v)),
    );
    assert!(complete, "no access line for {client} in {got:#?}");
    // Anything the process logged meanwhile would have come first.
    for d in &got {
        let m = parse_5424(d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.pri, m.app.as_str(), m.msgid.as_str()),
            (16 * 8 + 6, "edge", "access"),
            "{m:?}"
        );
        assert_eq!(m.procid, lb.pid().to_string());
    }
    let v = got.iter().filter_map(json_of).find(ours).unwrap();
    assert_eq!(v["event"], "conn");
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(
        (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(v["backend_port"], u64::from(echo.addr().port()));
}

#[test]
fn rfc3164_on_a_unix_socket_is_what_syslog3_writes_and_takes_process_lines_only() {
    let receiver = UnixReceiver::bind();
    let echo = Backend::echo();
    let syslog = format!("{},format=rfc3164,logs=process", receiver.target());
    let lb = start(&echo, &syslog, &[]);
    let client = one_connection(lb.listen);
    lb.access_log_for(client, WAIT);
    let mut got = Vec::new();
    let complete = receive_until(
        &mut got,
        WAIT,
        |b| receiver.socket.recv(b),
        |got| got.iter().any(|d| d.contains("]: ready: ")),
    );
    assert!(complete, "no ready line in {got:#?}");
    // The access line was written (stderr has it); give a copy time to come.
    receive_until(
        &mut got,
        Duration::from_millis(300),
        |b| receiver.socket.recv(b),
        |_| false,
    );
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let tag = format!("balanciaga4[{}]: ", lb.pid());
    for d in &got {
        // <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG
        let (pri, rest) = d[1..].split_once('>').unwrap_or_else(|| panic!("{d:?}"));
        assert!(d.starts_with('<') && [27, 28, 30, 31].contains(&pri.parse::<u32>().unwrap()));
        let (stamp, rest) = rest.split_at(15);
        let b = stamp.as_bytes();
        assert!(MONTHS.contains(&&stamp[..3]), "{d:?}");
        assert!(b[3] == b' ' && (b[4] == b' ' || b[4].is_ascii_digit()) && b[5].is_ascii_digit());
        assert!(stamp[7..].bytes().enumerate().all(|(i, c)| if i % 3 == 2 {
            c == b':'
        } else {
            c.is_ascii_digit()
        }));
        let msg = rest
            .strip_prefix(' ')
            .and_then(|r| r.strip_prefix(tag.as_str()))
            .unwrap_or_else(|| panic!("no host name, then {tag:?}: {d:?}"));
        assert!(!msg.is_empty() && !msg.contains("conn client="), "{d:?}");
    }
}

fn dropped(admin: SocketAddr) -> u64 {
    let response = get(admin, "/metrics");
    let families = prometheus::parse(&response.body).unwrap_or_else(|e| panic!("{e}"));
    let family = prometheus::family(&families, "balanciaga4_log_lines_dropped_total")
        .expect("the family is always there");
    assert_eq!(family.kind, prometheus::Kind::Counter);
    assert!(family.help.is_some());
    prometheus::value(
        &families,
        "balanciaga4_log_lines_dropped_total",
        &[("sink", "syslog")],
    )
    .expect("a syslog sample") as u64
}

#[test]
fn a_daemon_that_never_reads_slows_no_connection_and_every_line_is_received_or_counted() {
    const CONNECTIONS: usize = 400;
    let receiver = UnixReceiver::bind();
    receiver.socket.set_nonblocking(true).unwrap();
    let admin = free_addr();
    let echo = Backend::echo();
    let syslog = format!("{},logs=access", receiver.target());
    let lb = start(&echo, &syslog, &[("--admin", &admin.to_string())]);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..CONNECTIONS {
        let t = Instant::now();
        one_connection(lb.listen);
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20) && slowest < Duration::from_secs(1),
        "{CONNECTIONS} connections took {took:?}, the slowest {slowest:?}"
    );
    // Once every line is either in the socket or counted, the two add up;
    // reading lets the syslog thread send what it still holds.
    let mut received = 0u64;
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lost = dropped(admin);
    assert!(lost > 0, "nothing dropped with a daemon that never reads");
    loop {
        while let Ok(n) = receiver.socket.recv(&mut buf) {
            let d = std::str::from_utf8(&buf[..n]).unwrap();
            let m = parse_5424(d).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.msgid, "access", "{m:?}");
            received += 1;
        }
        lost = dropped(admin);
        if received + lost >= CONNECTIONS as u64 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        (received + lost, lost > 0),
        (CONNECTIONS as u64, true),
        "{received} received, {lost} dropped"
    );
    let stats: Value = serde_json::from_str(&get(admin, "/stats").body).unwrap();
    assert_eq!(stats["log_lines_dropped"]["syslog"].as_u64(), Some(lost));
    assert_eq!(stats["log_lines_dropped"]["access_file"].as_u64(), Some(0));
}

#[test]
fn a_missing_socket_drops_and_counts_lines_then_is_connected_once_it_exists() {
    let dir = TempDir::new("syslog-late");
    let path = dir.path().join("log.sock");
    let admin = free_addr();
    let echo = Backend::echo();
    let syslog = format!("{},logs=access", path.display());
    let lb = start(&echo, &syslog, &[("--admin", &admin.to_string())]);
    one_connection(lb.listen);
    assert!(
        wait_until(WAIT, || dropped(admin) >= 1),
        "a line for a missing socket is counted"
    );
    lb.expect_line(
        WAIT,
        &format!("syslog {}: lines are dropped", path.display()),
    );
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // The balancer tries again a second after the failure.
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut client = one_connection(lb.listen);
    while Instant::now() < deadline {
        let found = receive_until(
            &mut got,
            Duration::from_millis(300),
            |b| socket.recv(b),
            |got| {
                let parsed: Vec<Rfc5424> = got.iter().filter_map(|d| parse_5424(d).ok()).collect();
                access_line_of(&parsed, client).is_some()
            },
        );
        if found {
            return;
        }
        client = one_connection(lb.listen);
    }
    panic!("no access line reached the socket once it existed: {got:#?}");
}
