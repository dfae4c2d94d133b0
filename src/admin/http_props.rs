//! Properties of the admin request reader over generated input, read in
//! random chunk sizes: arbitrary bytes never panic and never make it read
//! or allocate past its limits; heads and bodies over the limits are
//! refused with 431 and 413; a well-formed request reaches the handler
//! with its path, query and body unchanged.

use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use super::{Fill, Handler, Incoming, Request, Response};
use crate::admin::ServerOptions;

/// Small limits, so that generated requests cross them often.
fn options(head: u16, body: u16) -> ServerOptions {
    ServerOptions {
        max_head: 64 + usize::from(head % 2048),
        max_body: usize::from(body % 4096),
        ..ServerOptions::default()
    }
}

/// Hands out the data in reads of the given sizes (cycling; 0 counts as 1).
struct Chunked<'a> {
    data: Cursor<&'a [u8]>,
    sizes: &'a [u8],
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self
            .sizes
            .get(self.next % self.sizes.len().max(1))
            .map_or(usize::MAX, |&s| usize::from(s).max(1));
        self.next += 1;
        let n = buf.len().min(size);
        self.data.read(&mut buf[..n])
    }
}

/// Reads until the request is decided or the data runs out, checking the
/// limits after every read.
fn feed(data: &[u8], sizes: &[u8], options: &ServerOptions) -> Result<(Incoming, Fill), String> {
    let mut incoming = Incoming::default();
    let mut reader = Chunked {
        data: Cursor::new(data),
        sizes,
        next: 0,
    };
    loop {
        let fill = incoming
            .fill(&mut reader, options)
            .map_err(|e| format!("in-memory read failed: {e}"))?;
        let limit = incoming
            .framed
            .map_or(options.max_head, |f| f.end.max(options.max_head));
        if incoming.filled > limit || incoming.buf.len() > limit {
            return Err(format!(
                "read {} bytes into a buffer of {} for a limit of {limit}",
                incoming.filled,
                incoming.buf.len()
            ));
        }
        if let Some(f) = incoming.framed {
            if f.end - f.head_end > options.max_body {
                return Err(format!("framed a body of {} bytes", f.end - f.head_end));
            }
        }
        match fill {
            Fill::Partial | Fill::Continue => {}
            decided => return Ok((incoming, decided)),
        }
    }
}

/// Answers with the method, path and query on lines of their own, then
/// the body.
fn echo() -> Handler {
    Arc::new(|r: &Request<'_>| {
        let mut body = format!("{}\n{}\n{}\n", r.method, r.path, r.query).into_bytes();
        body.extend_from_slice(r.body);
        Response::new(200, "application/octet-stream", body)
    })
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn check<A: Arbitrary + std::fmt::Debug>(tests: u64, prop: fn(A) -> TestResult) {
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 10)
        .quickcheck(prop);
}

/// A completed request is answered with a whole HTTP/1.1 response.
fn answered(incoming: &Incoming) -> bool {
    let out = incoming.respond(peer(), &echo());
    out.starts_with(b"HTTP/1.1 ") && out.windows(4).any(|w| w == b"\r\n\r\n")
}

#[test]
fn arbitrary_bytes_never_panic_nor_read_past_the_limits() {
    fn prop((data, sizes, head, body): (Vec<u8>, Vec<u8>, u16, u16)) -> TestResult {
        let options = options(head, body);
        match feed(&data, &sizes, &options) {
            Ok((incoming, Fill::Complete)) => TestResult::from_bool(answered(&incoming)),
            Ok(_) => TestResult::passed(),
            Err(why) => TestResult::error(why),
        }
    }
    check(3000, prop as fn(_) -> _);
}

/// Bytes a request line starts with, so that generated data gets past it.
const STARTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"POST /x?y HTTP/1.1\r\nHost: a\r\nContent-Length: ",
    b"HEAD / HTTP/1.0\r\n",
    b"\r\n\nGET /",
];

#[test]
fn near_requests_never_panic_nor_read_past_the_limits() {
    fn prop((start, tail, sizes, head, body): (u8, Vec<u8>, Vec<u8>, u16, u16)) -> TestResult {
        let options = options(head, body);
        let mut data = STARTS[usize::from(start) % STARTS.len()].to_vec();
        data.extend_from_slice(&tail);
        match feed(&data, &sizes, &options) {
            Ok((incoming, Fill::Complete)) => TestResult::from_bool(answered(&incoming)),
            Ok(_) => TestResult::passed(),
            Err(why) => TestResult::error(why),
        }
    }
    check(3000, prop as fn(_) -> _);
}

/// Characters a request target may hold unescaped.
const TARGET: &[u8] = b"abcxyzABCXYZ0123456789-._~!$&'()*+,;=:@%/";

fn target_text(g: &mut Gen, extra: &[u8]) -> String {
    let len = usize::arbitrary(g) % 40;
    (0..len)
        .map(|_| {
            let pick = usize::arbitrary(g) % (TARGET.len() + extra.len());
            char::from(
                *TARGET
                    .get(pick)
                    .unwrap_or_else(|| &extra[pick - TARGET.len()]),
            )
        })
        .collect()
}

/// A request the reader must accept, and what the handler must see.
#[derive(Debug, Clone)]
struct WellFormed {
    method: &'static str,
    path: String,
    query: Option<String>,
    body: Vec<u8>,
    sizes: Vec<u8>,
}

impl Arbitrary for WellFormed {
    fn arbitrary(g: &mut Gen) -> WellFormed {
        let method = *g
            .choose(&["GET", "POST", "PUT", "DELETE"])
            .unwrap_or(&"GET");
        let body = if method == "GET" {
            Vec::new()
        } else {
            Vec::arbitrary(g)
        };
        WellFormed {
            method,
            path: format!("/{}", target_text(g, b"")),
            query: bool::arbitrary(g).then(|| target_text(g, b"?")),
            body,
            sizes: Vec::arbitrary(g),
        }
    }
}

impl WellFormed {
    fn bytes(&self) -> Vec<u8> {
        let query = self
            .query
            .as_ref()
            .map_or(String::new(), |q| format!("?{q}"));
        let mut bytes = format!(
            "{} {}{query} HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\n\r\n",
            self.method,
            self.path,
            self.body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[test]
fn a_well_formed_request_reaches_the_handler_unchanged() {
    fn prop(request: WellFormed) -> TestResult {
        let options = ServerOptions::default();
        let (incoming, fill) = match feed(&request.bytes(), &request.sizes, &options) {
            Ok(decided) => decided,
            Err(why) => return TestResult::error(why),
        };
        if fill != Fill::Complete {
            return TestResult::error(format!("read as {fill:?}"));
        }
        let out = incoming.respond(peer(), &echo());
        let mut seen = format!(
            "{}\n{}\n{}\n",
            request.method,
            request.path,
            request.query.as_deref().unwrap_or("")
        )
        .into_bytes();
        seen.extend_from_slice(&request.body);
        TestResult::from_bool(out.starts_with(b"HTTP/1.1 200 ") && out.ends_with(&seen))
    }
    check(2000, prop as fn(_) -> _);
}

#[test]
fn a_head_over_the_limit_is_refused_with_431() {
    fn prop((head, padding, sizes): (u16, u16, Vec<u8>)) -> TestResult {
        let options = options(head, 0);
        let mut data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        data.resize(options.max_head + 1 + usize::from(padding % 512), b'p');
        data.extend_from_slice(b"\r\n\r\n");
        match feed(&data, &sizes, &options) {
            Ok((_, Fill::Reject(431, _))) => TestResult::passed(),
            Ok((_, fill)) => TestResult::error(format!("read as {fill:?}")),
            Err(why) => TestResult::error(why),
        }
    }
    check(1000, prop as fn(_) -> _);
}

#[test]
fn a_body_over_the_limit_is_refused_with_413_before_it_is_read() {
    fn prop((body, over, sizes): (u16, u16, Vec<u8>)) -> TestResult {
        let options = options(0, body);
        let length = options.max_body + 1 + usize::from(over);
        let mut data =
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\n").into_bytes();
        data.resize(data.len() + length, b'b');
        match feed(&data, &sizes, &options) {
            Ok((incoming, Fill::Reject(413, _))) if incoming.filled <= options.max_head => {
                TestResult::passed()
            }
            Ok((incoming, fill)) => {
                TestResult::error(format!("read as {fill:?} after {} bytes", incoming.filled))
            }
            Err(why) => TestResult::error(why),
        }
    }
    check(1000, prop as fn(_) -> _);
}
