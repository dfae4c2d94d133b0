//! A minimal HTTP/1.1 client for the admin listener: one request per
//! connection, the whole response read to EOF within a deadline.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::net::{read_to_eof, try_connect};

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines as written, e.g. `Content-Type: text/plain`.
    pub headers: Vec<String>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` as is and parses what comes back.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Result<HttpResponse, String> {
    let mut s = try_connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let bytes = read_to_eof(&mut s, Duration::from_secs(10)).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok(HttpResponse {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    })
}

pub fn request(addr: SocketAddr, method: &str, target: &str, extra: &str) -> HttpResponse {
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    );
    exchange(addr, raw.as_bytes()).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

pub fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    request(addr, "GET", target, "")
}

pub fn post(addr: SocketAddr, target: &str) -> HttpResponse {
    request(addr, "POST", target, "")
}
