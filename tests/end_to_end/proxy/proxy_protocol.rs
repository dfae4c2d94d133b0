//! The PROXY protocol through the real binary: `send_proxy` headers reach
//! backends with the right addresses (IPv4, IPv6, UDP), `accept_proxy`
//! listeners take the client address from the header (source-hash, access
//! log) and close clients whose header is bad or late, and real HAProxy
//! and nginx understand us and we them.
//!
//! Tests that need HAProxy or nginx skip when the program is missing, and
//! fail under `CI=true` (see `support::skip`; `make test-deps` installs them).

use crate::support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::net::{read_line, wait_closed, ReservedPort};
use support::proxy::{self, header_echo, header_echo_on, send_at_once, Daemon, UdpHeaderEcho};
use support::{
    connect, connect_from, free_addr, http, localhost, localhost_v6, prometheus, Backend, Balancer,
};

const WITHIN: Duration = Duration::from_secs(5);

/// The next line the peer sends, without its newline.
fn line(s: &mut std::net::TcpStream) -> String {
    let text = read_line(s, WITHIN).expect("a line");
    text.trim_end_matches('\n').to_string()
}

fn free_addr_v6() -> SocketAddr {
    let reserved = ReservedPort::on(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let addr = reserved.addr;
    std::mem::forget(reserved);
    localhost_v6(addr.port())
}

/// Sends `hello` through a balancer in front of a header-reading backend
/// and returns the line the backend wrote about the header.
fn header_seen_through(from: SocketAddr) -> (String, SocketAddr) {
    let mut client = connect(from);
    let local = client.local_addr().unwrap();
    client.write_all(b"hello\n").unwrap();
    let seen = line(&mut client);
    let echoed = line(&mut client);
    assert_eq!(echoed, "hello", "payload after the header");
    (seen, local)
}

#[test]
fn send_proxy_v1_and_v2_tell_the_backend_the_client_and_listener_over_ipv4() {
    let backend = header_echo();
    for (version, want) in [("v1", "v1"), ("v2", "v2 tcp")] {
        let lb = Balancer::builder(free_addr())
            .backend(backend.addr())
            .opt("--send-proxy", version)
            .start();
        let (seen, client) = header_seen_through(lb.listen);
        assert_eq!(seen, format!("{want} {client} {}", lb.listen));
    }
}

#[test]
fn send_proxy_v1_and_v2_tell_the_backend_the_client_and_listener_over_ipv6() {
    let backend = header_echo_on(localhost_v6(0));
    for (version, want) in [("v1", "v1"), ("v2", "v2 tcp")] {
        let lb = Balancer::builder(free_addr_v6())
            .backend(backend.addr())
            .opt("--send-proxy", version)
            .start();
        let (seen, client) = header_seen_through(lb.listen);
        assert!(client.is_ipv6());
        assert_eq!(seen, format!("{want} {client} {}", lb.listen));
    }
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_sent_as_ipv4() {
    let backend = header_echo();
    let port = support::net::free_dual_stack_port();
    let _lb = Balancer::builder(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .backend(backend.addr())
        .opt("--send-proxy", "v1")
        .start();
    let (seen, client) = header_seen_through(localhost(port));
    assert_eq!(seen, format!("v1 {client} 127.0.0.1:{port}"));
}

#[test]
fn send_proxy_v2_puts_a_udp_header_in_front_of_each_datagram() {
    let backend = UdpHeaderEcho::start();
    let lb = Balancer::builder(free_addr())
        .backend(backend.addr)
        .flag("--udp")
        .opt("--send-proxy", "v2")
        .start();
    let socket = support::udp::client(lb.listen);
    let client = socket.local_addr().unwrap();
    for payload in [&b"first"[..], b"", b"third datagram"] {
        let reply = support::udp::exchange(&socket, payload, WITHIN).expect("a reply");
        let want = [
            format!("v2 udp {client} {}|", lb.listen).as_bytes(),
            payload,
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&want)
        );
    }
}

/// A header-reading backend behind an `accept_proxy` listener that may
/// also send a header of its own.
fn accepting(send: Option<&str>, extra: &[(&str, &str)]) -> (Balancer, Backend) {
    let backend = if send.is_some() {
        header_echo()
    } else {
        Backend::echo()
    };
    let mut builder = Balancer::builder(free_addr())
        .backend(backend.addr())
        .flag("--accept-proxy");
    if let Some(version) = send {
        builder = builder.opt("--send-proxy", version);
    }
    for (flag, value) in extra {
        builder = builder.opt(flag, value);
    }
    (builder.start(), backend)
}

#[test]
fn payload_in_the_same_segment_as_the_header_is_relayed_intact_and_logged_for_the_header_client() {
    let (lb, _backend) = accepting(None, &[]);
    let mut client = connect(lb.listen);
    let mut first = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n".to_vec();
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    first.extend_from_slice(&payload);
    send_at_once(&mut client, &first).unwrap();
    let mut echoed = vec![0u8; payload.len()];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, payload);
    // More data after the first segment flows as usual.
    client.write_all(b"more").unwrap();
    let mut more = [0u8; 4];
    client.read_exact(&mut more).unwrap();
    assert_eq!(&more, b"more");
    drop(client);
    let line = lb.wait_access_log(WITHIN, |a| a.client == "203.0.113.7:40000");
    assert_eq!(line.bytes_in, payload.len() as u64 + 4, "{}", line.line);
    assert_eq!(line.end, "done", "{}", line.line);
}

#[test]
fn a_v2_header_split_over_many_writes_is_read_and_local_keeps_the_real_client() {
    let (lb, _backend) = accepting(None, &[]);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    header.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).octets());
    header.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50]);
    let mut client = connect(lb.listen);
    for byte in &header {
        client.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    client.write_all(b"split").unwrap();
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"split");
    drop(client);
    lb.wait_access_log(WITHIN, |a| a.client == "[2001:db8::7]:8080");

    let mut local = connect(lb.listen);
    let real = local.local_addr().unwrap();
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    bytes.extend_from_slice(b"hi");
    send_at_once(&mut local, &bytes).unwrap();
    let mut echoed = [0u8; 2];
    local.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hi");
    drop(local);
    lb.access_log_for(real, WITHIN);
}

#[test]
fn accept_proxy_and_send_proxy_pass_the_original_client_on() {
    for version in ["v1", "v2"] {
        let (lb, _backend) = accepting(Some(version), &[]);
        let mut client = connect(lb.listen);
        send_at_once(
            &mut client,
            b"PROXY TCP4 198.51.100.9 192.0.2.1 5555 443\r\nhello\n",
        )
        .unwrap();
        let seen = line(&mut client);
        let prefix = if version == "v1" { "v1" } else { "v2 tcp" };
        assert_eq!(seen, format!("{prefix} 198.51.100.9:5555 192.0.2.1:443"));
        assert_eq!(line(&mut client), "hello");
        drop(client);
        lb.wait_access_log(WITHIN, |a| a.client == "198.51.100.9:5555");
    }
}

fn rejected(admin: SocketAddr) -> f64 {
    rejected_for(admin, "proxy_header")
}

fn rejected_for(admin: SocketAddr, reason: &str) -> f64 {
    let body = http::get(admin, "/metrics").body;
    let families = prometheus::parse(&body).expect("valid metrics");
    prometheus::value(
        &families,
        "balanciaga4_listener_rejected_total",
        &[("listener", "default"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[test]
fn garbage_and_slow_headers_are_closed_within_the_timeout_while_others_are_served() {
    let admin = free_addr();
    let (lb, _backend) = accepting(
        None,
        &[
            ("--proxy-timeout", "600ms"),
            ("--admin", &admin.to_string()),
        ],
    );
    // Garbage: closed at once, nothing relayed.
    let mut garbage = connect(lb.listen);
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (_, took, got) = wait_closed(&mut garbage, WITHIN).expect("garbage closed");
    assert_eq!(got, 0);
    assert!(took < Duration::from_millis(500), "took {took:?}");

    // A slow, partial header: closed at the timeout; others go on meanwhile.
    let started = Instant::now();
    let mut slow = connect(lb.listen);
    slow.write_all(b"PROXY TCP4 192.0.2.").unwrap();
    for i in 0..3 {
        let mut good = connect(lb.listen);
        let first = format!("PROXY TCP4 192.0.2.{i} 192.0.2.100 1000 80\r\nping {i}\n");
        send_at_once(&mut good, first.as_bytes()).unwrap();
        assert_eq!(line(&mut good), format!("ping {i}"));
    }
    let (_, _, got) = wait_closed(&mut slow, WITHIN).expect("slow client closed");
    let took = started.elapsed();
    assert_eq!(got, 0);
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );

    // A client that closes mid-header, and one that never sends a byte.
    let mut cut = connect(lb.listen);
    cut.write_all(b"\r\n\r\n\0\r\n").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    wait_closed(&mut cut, WITHIN).expect("cut client closed");
    let mut silent = connect(lb.listen);
    wait_closed(&mut silent, WITHIN).expect("silent client closed");

    assert!(
        support::net::wait_until(WITHIN, || rejected(admin) == 4.0),
        "rejected: {}",
        rejected(admin)
    );
    // Said in the log, at most once a second per worker.
    let warned = lb
        .logs()
        .iter()
        .filter(|l| l.contains("closed: ") && l.contains("similar messages not logged"))
        .count();
    assert!(warned >= 1, "{}", lb.logs_joined());
    // Rejected clients are not sessions: no access lines for them.
    let lines = lb.access_logs();
    assert_eq!(lines.len(), 3, "{lines:#?}");
}

/// A connection to an `accept_proxy` listener whose v1 header names
/// `client` (every connection really comes from 127.0.0.1).
fn proxied(listen: SocketAddr, client: &str, port: u16) -> std::net::TcpStream {
    let mut c = connect(listen);
    let header = format!("PROXY TCP4 {client} 192.0.2.1 {port} 443\r\n");
    send_at_once(&mut c, header.as_bytes()).unwrap();
    c
}

/// Echoes one line through `c`: true if served.
fn echoes(c: &mut std::net::TcpStream, text: &str) -> bool {
    if c.write_all(format!("{text}\n").as_bytes()).is_err() {
        return false;
    }
    read_line(c, WITHIN).is_ok_and(|l| l == format!("{text}\n"))
}

#[test]
fn behind_accept_proxy_deny_and_per_ip_limits_apply_to_the_header_address() {
    let admin = free_addr();
    let (lb, backend) = accepting(
        None,
        &[
            ("--deny", "203.0.113.66"),
            ("--max-per-ip", "2"),
            ("--admin", &admin.to_string()),
        ],
    );
    // The real peer (127.0.0.1) is not denied: another header client is
    // served, and the denied one is reset after its header, unserved.
    let mut first = proxied(lb.listen, "198.51.100.1", 1000);
    assert!(echoes(&mut first, "first"));
    let mut denied = proxied(lb.listen, "203.0.113.66", 1001);
    let _ = denied.write_all(b"never\n");
    let (_, _, got) = wait_closed(&mut denied, WITHIN).expect("denied client closed");
    assert_eq!(got, 0, "nothing relayed for a denied client");
    assert_eq!(rejected_for(admin, "denied"), 1.0);
    assert_eq!(
        backend.accepted(),
        1,
        "a denied client never reaches a backend"
    );

    // Per-IP counts header addresses: two from .2 are held (three from
    // 127.0.0.1 in all, over the limit if the peer were counted)...
    let mut held: Vec<_> = (0..2)
        .map(|i| proxied(lb.listen, "198.51.100.2", 2000 + i))
        .collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert!(echoes(c, &format!("held {i}")), "connection {i} of .2");
    }
    // ...the third from .2 is refused, while .3 is served.
    let mut third = proxied(lb.listen, "198.51.100.2", 2002);
    let _ = third.write_all(b"never\n");
    let (_, _, got) = wait_closed(&mut third, WITHIN).expect("third from .2 closed");
    assert_eq!(got, 0);
    assert_eq!(rejected_for(admin, "per_ip_limit"), 1.0);
    let mut other = proxied(lb.listen, "198.51.100.3", 3000);
    assert!(
        echoes(&mut other, "other"),
        "another header address is not limited"
    );

    // A close releases the entry it was counted under: .2 gets in again.
    drop(held.pop());
    let again = support::net::wait_until(WITHIN, || {
        let mut c = proxied(lb.listen, "198.51.100.2", 2003);
        echoes(&mut c, "again")
    });
    assert!(again, "a closed connection frees its header address's slot");
    assert_eq!(rejected_for(admin, "denied"), 1.0);
    // Refused clients are counted, never access-logged.
    drop((first, held, other));
    let refused_lines = lb
        .access_logs()
        .iter()
        .filter(|a| a.client.starts_with("203.0.113.66:"))
        .count();
    assert_eq!(refused_lines, 0);
}

/// A balancer file with two listeners on one source-hash pool of three
/// identity backends: `direct` takes clients as they come, `proxied`
/// expects HAProxy's PROXY v2 headers.
fn source_hash_config(direct: SocketAddr, proxied: SocketAddr, backends: &[Backend]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("(address: \"{}\")", b.addr()))
        .collect();
    format!(
        r#"(
    global: (workers: 2),
    listeners: [
        (name: "direct", bind: "{direct}", pool: "web"),
        (name: "proxied", bind: "{proxied}", pool: "web", accept_proxy: true),
    ],
    pools: [(name: "web", policy: "source-hash", health: (enabled: false), backends: [{}])],
)"#,
        list.join(", ")
    )
}

fn name_from(client: &mut std::net::TcpStream) -> String {
    line(client)
}

#[test]
fn behind_haproxy_source_hash_and_the_access_log_use_the_original_client() {
    if !support::skip::require_programs(&["haproxy"]) {
        return;
    }
    let backends: Vec<Backend> = ["a", "b", "c"]
        .iter()
        .map(|n| Backend::identity(n))
        .collect();
    let (direct, proxied, front) = (free_addr(), free_addr(), free_addr());
    let lb = Balancer::with_config(&source_hash_config(direct, proxied, &backends), proxied);
    let haproxy = Daemon::haproxy(
        &format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend front\n    bind {front}\n    default_backend lb\n\
             backend lb\n    server balanciaga4 {proxied} send-proxy-v2\n"
        ),
        front,
    );
    let mut seen_names = std::collections::HashSet::new();
    for i in 1..=12u8 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 10, i, 2 * i));
        let mut via_haproxy = connect_from(source, front);
        let original = via_haproxy.local_addr().unwrap();
        let name = name_from(&mut via_haproxy);
        let mut straight = connect_from(source, direct);
        assert_eq!(
            name,
            name_from(&mut straight),
            "client {source}: through HAProxy and directly ({})",
            haproxy.output()
        );
        seen_names.insert(name);
        drop(via_haproxy);
        let line = lb.access_log_for(original, WITHIN);
        assert_eq!(line.listener, "proxied");
    }
    assert!(
        seen_names.len() >= 2,
        "12 clients all hashed to {seen_names:?}"
    );
}

#[test]
fn haproxy_behind_us_reads_our_v1_and_v2_headers() {
    if !support::skip::require_programs(&["haproxy"]) {
        return;
    }
    // balanciaga4 --send-proxy → HAProxy (accept-proxy) → send-proxy-v2 →
    // a backend that says which client HAProxy passed on.
    let backend = header_echo();
    let haproxy_at = free_addr();
    let _haproxy = Daemon::haproxy(
        &format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend front\n    bind {haproxy_at} accept-proxy\n    default_backend echo\n\
             backend echo\n    server echo {} send-proxy-v2\n",
            backend.addr()
        ),
        haproxy_at,
    );
    for version in ["v1", "v2"] {
        let lb = Balancer::builder(free_addr())
            .backend(haproxy_at)
            .opt("--send-proxy", version)
            .start();
        let source = IpAddr::V4(Ipv4Addr::new(127, 20, 0, 9));
        let mut client = connect_from(source, lb.listen);
        let local = client.local_addr().unwrap();
        client.write_all(b"hello\n").unwrap();
        let seen = line(&mut client);
        assert_eq!(seen, format!("v2 tcp {local} {}", lb.listen), "{version}");
        assert_eq!(line(&mut client), "hello");
    }
}

#[test]
fn nginx_behind_us_reads_our_v1_and_v2_headers_over_ipv4_and_ipv6() {
    if !support::skip::require_programs(&["nginx", proxy::NGINX_STREAM_MODULE]) {
        return;
    }
    let (v4, v6) = (free_addr(), free_addr_v6());
    let _nginx = Daemon::nginx(
        &format!(
            "load_module {};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {{dir}}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             stream {{ server {{ listen {v4} proxy_protocol; listen {v6} proxy_protocol;\n\
             return \"$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n\"; }} }}\n",
            proxy::NGINX_STREAM_MODULE
        ),
        v4,
    );
    for (listen, nginx) in [(free_addr(), v4), (free_addr_v6(), v6)] {
        for version in ["v1", "v2"] {
            let lb = Balancer::builder(listen)
                .backend(nginx)
                .opt("--send-proxy", version)
                .start();
            let mut client = connect(lb.listen);
            let local = client.local_addr().unwrap();
            let seen = line(&mut client);
            let want = format!(
                "{} {} {} {}",
                local.ip(),
                local.port(),
                lb.listen.ip(),
                lb.listen.port()
            );
            assert_eq!(seen, want, "{version} on {listen}");
        }
    }
}

#[test]
fn health_checks_of_a_send_proxy_pool_start_with_a_local_header() {
    let backend = header_echo();
    let lb = Balancer::builder(free_addr())
        .backend(backend.addr())
        .opt("--send-proxy", "v2")
        .opt("--health-interval", "100ms")
        .opt("--fall", "1")
        .opt("--health-send", "PING\\r\\n")
        .opt("--health-expect", "v2 LOCAL\\nPING")
        .start();
    // Checks pass (the backend read a LOCAL header, then the request);
    // a check without the header would get "error: ..." and fail.
    assert!(
        support::net::wait_until(Duration::from_secs(5), || backend.accepted() >= 3),
        "checks ran: {}",
        backend.accepted()
    );
    assert!(
        !lb.logs().iter().any(|l| l.contains(" DOWN")),
        "{}",
        lb.logs_joined()
    );
    let (seen, client) = header_seen_through(lb.listen);
    assert_eq!(seen, format!("v2 tcp {client} {}", lb.listen));
}
