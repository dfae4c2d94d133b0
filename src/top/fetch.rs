//! The one request `top` makes: `GET /stats` over a plain TCP connection,
//! with deadlines, parsed as JSON.
//!
//! Owns the socket for the length of one request; touches nothing else.
//! Every error names the admin address, since that is what the operator
//! typed and what is wrong (down, wrong port, a token it wants, not ours).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Largest reply read: far above what `/stats` writes for hundreds of
/// backends, and a bound against a peer that never stops.
const MAX_REPLY: usize = 16 << 20;

/// Fetches and parses `http://addr/stats`, all within `timeout`.
pub(crate) fn stats(
    addr: SocketAddr,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let fail = |what: String| format!("admin at {addr}: {what}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET /stats HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| fail(format!("cannot send the request: {e}")))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(format!("no complete answer within {timeout:?}")));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| fail(e.to_string()))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if reply.len() + n > MAX_REPLY => {
                return Err(fail(format!("answer larger than {MAX_REPLY} bytes")))
            }
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(format!("reading the answer: {e}"))),
        }
    }
    parse(&reply).map_err(fail)
}

/// A whole HTTP/1.1 response to `GET /stats`: 200 and a JSON body.
fn parse(reply: &[u8]) -> Result<Value, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(reply) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if reply.is_empty() => {
            return Err("closed the connection without answering".into())
        }
        Ok(httparse::Status::Partial) => return Err("incomplete HTTP answer".into()),
        Err(e) => {
            return Err(format!(
                "not an HTTP answer ({e}); is this the admin address?"
            ))
        }
    };
    let body = &reply[head_len..];
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = match length {
        Some(n) if n <= body.len() => &body[..n],
        Some(n) => {
            return Err(format!(
                "answer cut short ({} of {n} body bytes)",
                body.len()
            ))
        }
        None => body,
    };
    match response.code {
        Some(200) => {}
        Some(code) => {
            let why = String::from_utf8_lossy(body);
            let why = why.lines().next().unwrap_or("").trim();
            let hint = if code == 401 { " (give --token)" } else { "" };
            return Err(format!("HTTP {code} {why}{hint}"));
        }
        None => return Err("no status code".into()),
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("/stats is not valid JSON: {e}"))?;
    if !value.is_object() || !value["pools"].is_array() {
        return Err("/stats has no pools; is this a balanciaga4 admin listener?".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_200_with_stats_json_parses_and_anything_else_says_why() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"pools\": []}";
        assert!(parse(ok).is_ok());
        let denied = b"HTTP/1.1 401 Unauthorized\r\n\r\na valid bearer token is required\n";
        let e = parse(denied).unwrap_err();
        assert!(
            e.contains("HTTP 401 a valid bearer token is required (give --token)"),
            "{e}"
        );
        let e = parse(b"HTTP/1.1 200 OK\r\n\r\n{nope").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap_err();
        assert!(e.contains("not an HTTP answer"), "{e}");
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}").unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        assert!(parse(b"").unwrap_err().contains("without answering"));
    }
}
