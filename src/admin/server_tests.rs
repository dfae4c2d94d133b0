//! The admin server against real loopback sockets, and its request reader
//! without them. Every wait is bounded.

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::super::http::{Fill, Handler, Incoming, Request, Response};
use super::{AdminServer, ServerOptions};

/// The longest any single read or write in these tests may block.
const WAIT: Duration = Duration::from_secs(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Answers with a line describing the request, so tests see what the
/// handler was given.
fn echo() -> Handler {
    Arc::new(|r: &Request<'_>| {
        Response::text(
            200,
            format!(
                "{} {} ?{} host={} len={}",
                r.method,
                r.path,
                r.query,
                r.header("HOST").unwrap_or("-"),
                r.body.len()
            ),
        )
    })
}

fn start(handler: Handler, options: ServerOptions) -> AdminServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    AdminServer::start_with(addr, handler, options).expect("admin server starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Everything until the server closes (or resets, or a read times out).
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `request` whole, then reads the response. A write error is not
/// fatal: a server may answer before the request is in.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    let _ = stream.write_all(request);
    read_all(&mut stream)
}

fn status(raw: &[u8]) -> u16 {
    std::str::from_utf8(raw.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn split(raw: &[u8]) -> (String, &[u8]) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    (
        String::from_utf8_lossy(&raw[..at + 4]).into_owned(),
        &raw[at + 4..],
    )
}

fn body(raw: &[u8]) -> &[u8] {
    split(raw).1
}

/// The fields every response must carry, and a body as long as it says.
fn assert_framed(raw: &[u8]) {
    let (head, body) = split(raw);
    for field in [
        "Content-Type: ",
        "Cache-Control: no-store\r\n",
        "Connection: close\r\n",
    ] {
        assert!(head.contains(field), "{field:?} missing in {head:?}");
    }
    let length = format!("Content-Length: {}\r\n", body.len());
    assert!(head.contains(&length), "{length:?} missing in {head:?}");
}

#[test]
fn get_is_answered_with_the_handlers_body_and_exact_headers() {
    let handler: Handler =
        Arc::new(|_: &Request<'_>| Response::text(200, "hello\n").with_header("X-Admin", "yes"));
    let server = start(handler, ServerOptions::default());
    let raw = exchange(
        server.local_addr(),
        b"GET / HTTP/1.1\r\nHost: admin\r\n\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&raw),
        "HTTP/1.1 200 OK\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: 6\r\n\
         Cache-Control: no-store\r\n\
         Connection: close\r\n\
         X-Admin: yes\r\n\
         \r\n\
         hello\n"
    );
}

#[test]
fn query_is_split_from_the_path_and_headers_are_found_in_any_case() {
    let server = start(echo(), ServerOptions::default());
    let raw = exchange(
        server.local_addr(),
        b"GET /pools/web?backend=10.0.0.1:80&x= HTTP/1.1\r\nhost: admin\r\n\r\n",
    );
    assert_eq!(status(&raw), 200);
    assert_eq!(
        body(&raw),
        b"GET /pools/web ?backend=10.0.0.1:80&x= host=admin len=0"
    );
    let raw = exchange(server.local_addr(), b"GET /plain HTTP/1.0\r\n\r\n");
    assert_eq!(
        body(&raw),
        b"GET /plain ? host=- len=0",
        "HTTP/1.0 needs no Host"
    );
}

#[test]
fn post_body_is_delivered_exactly_up_to_the_limit() {
    let echo_body: Handler =
        Arc::new(|r: &Request<'_>| Response::new(200, "application/octet-stream", r.body));
    let options = ServerOptions::default();
    let server = start(echo_body, options.clone());
    // Binary, with what looks like a head's end inside it.
    let sent: Vec<u8> = (0..options.max_body)
        .map(|i| {
            if i % 100 < 4 {
                b"\r\n\r\n"[i % 4]
            } else {
                i as u8
            }
        })
        .collect();
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        sent.len()
    )
    .into_bytes();
    request.extend_from_slice(&sent);
    let raw = exchange(server.local_addr(), &request);
    assert_eq!(status(&raw), 200);
    assert_framed(&raw);
    assert!(body(&raw) == sent, "body changed on the way");
}

#[test]
fn request_written_one_byte_at_a_time_is_served() {
    let server = start(echo(), ServerOptions::default());
    let mut stream = connect(server.local_addr());
    let request = b"\r\nPOST /one?b=1 HTTP/1.1\r\nHost: slow\r\nContent-Length: 3\r\n\r\nabc";
    for byte in request {
        stream.write_all(&[*byte]).expect("write");
        thread::sleep(ms(1));
    }
    let raw = read_all(&mut stream);
    assert_eq!(body(&raw), b"POST /one ?b=1 host=slow len=3");
}

#[test]
fn head_request_gets_the_length_but_no_body() {
    let server = start(echo(), ServerOptions::default());
    let raw = exchange(server.local_addr(), b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n");
    let (head, body) = split(&raw);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 22\r\n"), "{head}");
    assert!(body.is_empty());
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = start(echo(), ServerOptions::default());
    let mut stream = connect(server.local_addr());
    let head = b"PUT /w HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    stream.write_all(head).expect("write head");
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").expect("write body");
    let raw = read_all(&mut stream);
    assert_eq!(body(&raw), b"PUT /w ? host=a len=5");
}

#[test]
fn handler_headers_that_would_break_framing_are_dropped() {
    let handler: Handler = Arc::new(|_: &Request<'_>| {
        Response::json(200, "{}")
            .with_header("X-Echo", "a\r\nSet-Cookie: evil=1")
            .with_header("content-length", "999")
            .with_header("Bad Name", "x")
            .with_header("X-Ok", "1")
    });
    let server = start(handler, ServerOptions::default());
    let raw = exchange(server.local_addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (head, body) = split(&raw);
    assert_framed(&raw);
    assert_eq!(body, b"{}");
    assert!(head.contains("\r\nX-Ok: 1\r\n"), "{head}");
    assert!(
        !head.contains("evil") && !head.contains("999") && !head.contains("Bad"),
        "{head}"
    );
}

#[test]
fn bad_requests_get_the_matching_4xx_or_5xx_and_never_reach_the_handler() {
    let handler: Handler = Arc::new(|r: &Request<'_>| panic!("handler called for {r:?}"));
    let server = start(handler, ServerOptions::default());
    let many_fields: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // TLS to a plain-text port: rejected at once, with no newline.
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), 400),
        (b"hello world\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(), 411),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: coffee\r\nContent-Length: 1\r\n\r\nx".to_vec(), 417),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\n".to_vec(), 413),
        (format!("GET / HTTP/1.1\r\nHost: a\r\n{many_fields}\r\n").into_bytes(), 431),
        // The client gave up half-way but may still read why.
        (b"GET / HTTP/1.1\r\nHost".to_vec(), 400),
    ];
    for (request, expected) in cases {
        let mut stream = connect(server.local_addr());
        stream.write_all(&request).expect("write");
        if expected == 400 && request.ends_with(b"Host") {
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
        }
        let raw = read_all(&mut stream);
        let shown = String::from_utf8_lossy(&request);
        assert_eq!(
            status(&raw),
            expected,
            "for {shown:?}: {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert_framed(&raw);
    }
}

#[test]
fn garbage_is_answered_400_and_the_next_client_is_served() {
    let server = start(echo(), ServerOptions::default());
    let raw = exchange(
        server.local_addr(),
        b"\x00\xff\xfe garbage \x01\x02\r\n\r\n",
    );
    assert_eq!(status(&raw), 400);
    assert_framed(&raw);
    let raw = exchange(
        server.local_addr(),
        b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(body(&raw), b"GET /next ? host=a len=0");
}

#[test]
fn a_100_kib_head_is_answered_431_and_the_connection_closed() {
    let server = start(echo(), ServerOptions::default());
    let mut request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    request.resize(request.len() + 100 * 1024, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let mut stream = connect(server.local_addr());
    stream.write_all(&request).expect("drained by the server");
    let raw = read_all(&mut stream);
    assert_eq!(status(&raw), 431);
    assert_framed(&raw);
    // read_all returned: the server closed its side.
    let raw = exchange(server.local_addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&raw), 200);
}

/// A reader handing out at most `chunk` bytes per read.
struct Trickle<'a> {
    data: Cursor<&'a [u8]>,
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.data.read(&mut buf[..n])
    }
}

/// Fills until the reader is done or the request is decided.
fn feed(data: &[u8], chunk: usize, options: &ServerOptions) -> (Incoming, Fill) {
    let mut incoming = Incoming::default();
    let mut reader = Trickle {
        data: Cursor::new(data),
        chunk,
    };
    loop {
        match incoming.fill(&mut reader, options).expect("in-memory read") {
            Fill::Partial | Fill::Continue => {}
            decided => return (incoming, decided),
        }
    }
}

#[test]
fn a_100_kib_head_never_grows_the_buffer_past_the_head_limit() {
    let options = ServerOptions::default();
    let mut request = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    request.resize(100 * 1024, b'a');
    for chunk in [1, 1000, 64 * 1024] {
        let (incoming, fill) = feed(&request, chunk, &options);
        assert_eq!(fill, Fill::Reject(431, "request header fields too large"));
        assert!(
            incoming.buf.capacity() <= options.max_head,
            "buffer of {} bytes for a head limit of {}",
            incoming.buf.capacity(),
            options.max_head
        );
        assert_eq!(incoming.filled, options.max_head, "read past the limit");
    }
}

#[test]
fn a_request_parses_the_same_whatever_the_read_sizes() {
    let options = ServerOptions::default();
    let request = b"\r\n\nPOST /p?q HTTP/1.1\nHost: a\r\nContent-Length: 4\n\nbodyEXTRA";
    for chunk in [1, 2, 3, 7, 4096] {
        let (incoming, fill) = feed(request, chunk, &options);
        assert_eq!(fill, Fill::Complete, "chunk {chunk}");
        let framed = incoming.framed.expect("framed");
        assert_eq!(&incoming.buf[framed.head_end..framed.end], b"body");
    }
}

#[test]
fn a_body_over_the_limit_is_answered_413() {
    let options = ServerOptions::default();
    let server = start(echo(), options.clone());
    let over = options.max_body + 1;
    let mut request =
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {over}\r\n\r\n").into_bytes();
    request.resize(request.len() + over, b'x');
    let raw = exchange(server.local_addr(), &request);
    assert_eq!(status(&raw), 413);
    assert_framed(&raw);
}

#[test]
fn a_stalled_client_gets_408_after_the_deadline_while_another_is_served() {
    let timeout = ms(500);
    let options = ServerOptions {
        request_timeout: timeout,
        ..ServerOptions::default()
    };
    let server = start(echo(), options);
    let began = Instant::now();
    let mut stalled = connect(server.local_addr());
    stalled
        .write_all(b"GET /slow HTTP/1.1\r\nHo")
        .expect("write");

    let raw = exchange(
        server.local_addr(),
        b"GET /quick HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(body(&raw), b"GET /quick ? host=a len=0");
    assert!(
        began.elapsed() < timeout,
        "served only after {:?}",
        began.elapsed()
    );

    let raw = read_all(&mut stalled);
    let waited = began.elapsed();
    assert_eq!(status(&raw), 408, "{:?}", String::from_utf8_lossy(&raw));
    assert_framed(&raw);
    assert!(
        waited >= timeout && waited < timeout + ms(1500),
        "408 after {waited:?}"
    );
}

#[test]
fn clients_beyond_the_limit_are_answered_503_at_once() {
    let options = ServerOptions {
        max_connections: 2,
        ..ServerOptions::default()
    };
    let server = start(echo(), options);
    let held: Vec<TcpStream> = (0..2).map(|_| connect(server.local_addr())).collect();
    let began = Instant::now();
    let raw = exchange(server.local_addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        raw.starts_with(b"HTTP/1.1 503 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(began.elapsed() < ms(1000));
    drop(held);
    assert!(
        served_within(server.local_addr(), WAIT),
        "not served after the others left"
    );
}

/// Retries a GET until it is answered 200 or `limit` passes: closed
/// connections are noticed on the server's next turn, not at once.
fn served_within(addr: SocketAddr, limit: Duration) -> bool {
    let began = Instant::now();
    while began.elapsed() < limit {
        if status(&exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 200 {
            return true;
        }
        thread::sleep(ms(20));
    }
    false
}

#[test]
fn two_hundred_connections_at_once_leave_the_server_responsive() {
    let server = start(echo(), ServerOptions::default());
    let addr = server.local_addr();
    let mut open: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
    // The slots are full: the last of them was turned away, promptly.
    let began = Instant::now();
    let mut last = open.pop().expect("200 connections");
    let raw = read_all(&mut last);
    assert!(
        raw.starts_with(b"HTTP/1.1 503 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        began.elapsed() < ms(1000),
        "503 after {:?}",
        began.elapsed()
    );
    drop(open);
    assert!(
        served_within(addr, WAIT),
        "not served after 200 connections closed"
    );
}

#[test]
fn stop_returns_within_a_second_with_clients_connected() {
    let server = start(echo(), ServerOptions::default());
    let addr = server.local_addr();
    let mut idle = connect(addr);
    let mut half = connect(addr);
    half.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    assert_eq!(
        status(&exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")),
        200
    );
    let began = Instant::now();
    server.stop();
    assert!(
        began.elapsed() < ms(1000),
        "stop took {:?}",
        began.elapsed()
    );
    assert!(read_all(&mut idle).is_empty(), "idle client not closed");
    assert!(
        read_all(&mut half).is_empty(),
        "half-sent client not closed"
    );
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}
