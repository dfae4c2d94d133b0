//! HTTP/1.1 for the admin listener: what a request and a response are, and
//! how bytes become one and the other become bytes.
//!
//! Owns the request reader (`Incoming`: head and body limits, framing by
//! Content-Length, rejection of what the server does not speak) and the
//! response encoder. No sockets and no threads: `server` feeds it bytes and
//! writes what it returns, and tests drive it from memory.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, warn};

use super::server::ServerOptions;

/// Header fields a request may carry; more is answered 431.
const MAX_HEADERS: usize = 64;
/// While the head is this short it is parsed after every read, so garbage
/// is answered at once; beyond, only once a blank line has arrived, so a
/// client trickling bytes cannot make parsing cost quadratic.
const EARLY_PARSE: usize = 1024;
/// The first read buffer; it doubles up to the limit as a request needs.
const FIRST_READ: usize = 1024;

/// A complete request, as the handler sees it. It borrows the connection's
/// buffer; nothing in it is decoded (no percent-decoding of the path).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// As sent, case-sensitive (`GET`, `POST`, ...); any token httparse
    /// accepts, so handlers must refuse what they do not serve.
    pub method: &'a str,
    /// The request target up to `?`.
    pub path: &'a str,
    /// The request target after `?`; empty without one.
    pub query: &'a str,
    /// Header fields in the order received, names as sent.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Exactly Content-Length bytes (empty without one); never chunked.
    pub body: &'a [u8],
    /// The client's address, an IPv4-mapped one written as IPv4.
    pub peer: SocketAddr,
}

impl<'a> Request<'a> {
    /// The first field named `name` (any case), trimmed, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let (_, value) = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value)
            .ok()
            .map(|v| v.trim_matches([' ', '\t']))
    }
}

/// What the handler answers. The server adds Content-Length,
/// `Cache-Control: no-store` and `Connection: close`, and drops extra
/// headers that would contradict them or are not valid field lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// A final status, `200..=599`; anything else is sent as a 500.
    pub status: u16,
    /// The Content-Type field value; an invalid one is sent as
    /// `application/octet-stream`.
    pub content_type: &'static str,
    /// Not sent in answer to HEAD, though its length still is.
    pub body: Vec<u8>,
    /// Extra header fields (name, value), sent in this order.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A response with no extra header fields.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A `text/plain` UTF-8 response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// An `application/json` response; `body` must already be JSON.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "application/json", body)
    }

    /// A `text/html` UTF-8 response.
    pub fn html(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
    }

    /// Adds a header field. One the server sets itself (Content-Type,
    /// Content-Length, Transfer-Encoding, Connection, Cache-Control) or
    /// one that is not a valid field line is dropped when encoded.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Called on the admin thread for every complete request; it must not
/// block for long, as every other admin client waits meanwhile.
pub type Handler = Arc<dyn Fn(&Request<'_>) -> Response + Send + Sync>;

/// A request as it arrives: the bytes read so far and, once the head has
/// been parsed, where the body ends. Reads from any `Read`, so tests can
/// drive it without sockets (and so can fuzz targets, from outside the
/// crate: `fill` until decided, then `respond`).
#[derive(Debug, Default)]
pub struct Incoming {
    /// Zeroed up to its length when grown; `filled` bytes are the request.
    pub(super) buf: Vec<u8>,
    pub(super) filled: usize,
    /// After empty lines before the request line, which are ignored.
    start: usize,
    /// The blank line ending the head is searched for from here.
    scanned: usize,
    pub(super) framed: Option<Framed>,
}

impl Incoming {
    /// Nothing has arrived yet.
    pub(super) fn is_empty(&self) -> bool {
        self.filled == 0
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Framed {
    pub(super) head_end: usize,
    pub(super) end: usize,
}

/// Where a request stands after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// More bytes are needed; read again when the socket is readable.
    Partial,
    /// The head is in and the client waits for 100 Continue to send the body.
    Continue,
    /// The whole request is in: [`Incoming::respond`] may be called.
    Complete,
    /// Refused before the handler sees it: answer with this status and
    /// reason, then close.
    Reject(u16, &'static str),
    /// The client closed its side before the request was complete.
    Eof,
}

/// A 4xx/5xx answer to a request the handler never sees.
type Reject = (u16, &'static str);

const HEAD_TOO_LARGE: Reject = (431, "request header fields too large");

impl Incoming {
    /// Reads once, never past what the request may still use.
    pub fn fill(&mut self, src: &mut impl Read, options: &ServerOptions) -> io::Result<Fill> {
        let limit = self.framed.map_or(options.max_head, |f| f.end);
        if self.filled >= limit {
            // Only with a zero head limit: a read into no room would look
            // like the end of the stream.
            return Ok(Fill::Reject(HEAD_TOO_LARGE.0, HEAD_TOO_LARGE.1));
        }
        if self.filled == self.buf.len() {
            let grown = limit.min(self.buf.len().max(FIRST_READ / 2) * 2);
            self.buf.reserve_exact(grown - self.buf.len());
            self.buf.resize(grown, 0);
        }
        let room = limit.min(self.buf.len());
        let n = src.read(&mut self.buf[self.filled..room])?;
        if n == 0 {
            return Ok(Fill::Eof);
        }
        self.filled += n;
        Ok(self.advance(options))
    }

    pub(super) fn advance(&mut self, options: &ServerOptions) -> Fill {
        if let Some(f) = self.framed {
            return if self.filled >= f.end {
                Fill::Complete
            } else {
                Fill::Partial
            };
        }
        while self.start < self.filled && matches!(self.buf[self.start], b'\r' | b'\n') {
            self.start += 1;
        }
        let blank = self.blank_line_arrived();
        let head = &self.buf[self.start..self.filled];
        let parsed = if blank || head.len() <= EARLY_PARSE {
            parse_head(head, options)
        } else {
            Ok(None)
        };
        match parsed {
            Err((status, why)) => Fill::Reject(status, why),
            Ok(Some((len, framing))) => {
                let head_end = self.start + len;
                let end = head_end + framing.body;
                self.framed = Some(Framed { head_end, end });
                if self.filled >= end {
                    Fill::Complete
                } else if framing.expect_continue {
                    Fill::Continue
                } else {
                    Fill::Partial
                }
            }
            // The first line was not empty, so a blank line ends the head.
            Ok(None) if blank => Fill::Reject(400, "malformed request head"),
            Ok(None) if self.filled >= options.max_head => {
                Fill::Reject(HEAD_TOO_LARGE.0, HEAD_TOO_LARGE.1)
            }
            Ok(None) => Fill::Partial,
        }
    }

    /// Whether the bytes read since the last call completed a blank line
    /// (`\n\n` or `\n\r\n`) after the request line.
    fn blank_line_arrived(&mut self) -> bool {
        let from = self.scanned.saturating_sub(2).max(self.start);
        self.scanned = self.filled;
        let window = &self.buf[from..self.filled];
        window
            .windows(2)
            .enumerate()
            .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && window.get(i + 2) == Some(&b'\n')))
    }

    /// Calls the handler with the complete request; returns the encoded
    /// response.
    pub fn respond(&self, peer: SocketAddr, handler: &Handler) -> Vec<u8> {
        let bad = || encode(Response::text(400, "malformed request\n"), false);
        let Some(f) = self.framed else {
            return bad();
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        // Parsed once before; parsing again is cheaper than keeping offsets.
        let (Ok(httparse::Status::Complete(_)), Some(method), Some(target)) = (
            req.parse(&self.buf[self.start..f.head_end]),
            req.method,
            req.path,
        ) else {
            return bad();
        };
        let mut fields: [(&str, &[u8]); MAX_HEADERS] = [("", &[]); MAX_HEADERS];
        for (field, h) in fields.iter_mut().zip(req.headers.iter()) {
            *field = (h.name, h.value);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method,
            path,
            query,
            headers: &fields[..req.headers.len()],
            body: &self.buf[f.head_end..f.end],
            peer,
        };
        let response = handler(&request);
        debug!("admin: {peer}: {method} {path} {}", response.status);
        encode(response, method == "HEAD")
    }
}

/// How the body of a parsed head is framed.
struct Framing {
    body: usize,
    expect_continue: bool,
}

/// `Ok(None)` while the head is incomplete.
fn parse_head(head: &[u8], options: &ServerOptions) -> Result<Option<(usize, Framing)>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some((len, framing(&req, options)?))),
        Err(e) => Err(parse_error(e, head)),
    }
}

fn parse_error(e: httparse::Error, head: &[u8]) -> Reject {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => (431, "too many header fields"),
        // httparse says Version for any bad third word; only a real
        // HTTP version is worth a 505.
        E::Version if head.windows(6).any(|w| w == b" HTTP/") => {
            (505, "only HTTP/1.0 and HTTP/1.1 are served")
        }
        E::HeaderName => (400, "invalid header name"),
        E::HeaderValue => (400, "invalid header value"),
        E::NewLine => (400, "invalid line ending"),
        _ => (400, "malformed request line"),
    }
}

fn framing(req: &httparse::Request<'_, '_>, options: &ServerOptions) -> Result<Framing, Reject> {
    let http11 = req.version == Some(1);
    let mut length: Option<usize> = None;
    let mut hosts = 0;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = trim(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map_or(&[][..], trim);
            return Err(if last.eq_ignore_ascii_case(b"chunked") {
                (
                    411,
                    "chunked request bodies are not supported; send Content-Length",
                )
            } else {
                (501, "unsupported Transfer-Encoding")
            });
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value, options.max_body)?;
            if length.is_some_and(|l| l != n) {
                return Err((400, "conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err((417, "unsupported Expect"));
            }
            expect_continue = http11;
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one before.
    if hosts > 1 || (http11 && hosts == 0) {
        return Err((400, "an HTTP/1.1 request needs exactly one Host header"));
    }
    let body = length.unwrap_or(0);
    Ok(Framing {
        body,
        expect_continue: expect_continue && body > 0,
    })
}

/// Digits only (`usize::from_str` would take a sign); saturates, so any
/// huge value is "too large", not "malformed".
fn content_length(value: &[u8], max: usize) -> Result<usize, Reject> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err((400, "invalid Content-Length"));
    }
    let n = value.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    if n > max {
        return Err((413, "request body too large"));
    }
    Ok(n)
}

fn trim(v: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_space(b)).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// Serializes a response; `head_only` for HEAD requests, whose answer
/// says how long the body would be without sending it.
pub(super) fn encode(response: Response, head_only: bool) -> Vec<u8> {
    let mut response = response;
    // 1xx would promise a second response; only final statuses are sent.
    if !(200..=599).contains(&response.status) {
        warn!(
            "admin: handler answered status {}; sending 500",
            response.status
        );
        response = Response::text(500, "invalid status from the admin handler\n");
    }
    let content_type = if is_field_value(response.content_type) {
        response.content_type
    } else {
        warn!(
            "admin: invalid Content-Type {:?} dropped",
            response.content_type
        );
        "application/octet-stream"
    };
    let status = response.status;
    let mut head = String::with_capacity(192);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        reason(status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        if is_token(name) && !is_framing(name) && is_field_value(value) {
            let _ = write!(head, "{name}: {value}\r\n");
        } else {
            warn!("admin: response header {name:?} dropped");
        }
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Fields the server sets itself, which a handler must not contradict.
fn is_framing(name: &str) -> bool {
    [
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "cache-control",
    ]
    .iter()
    .any(|f| name.eq_ignore_ascii_case(f))
}

/// No control characters but tab: a value with CR or LF would let input
/// echoed into a header add fields of its own.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
#[path = "http_props.rs"]
mod props;
