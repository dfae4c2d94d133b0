//! Demo HTTP/1.1 backend for trying Balanciaga4 by hand (`make run`) and in CI.
//!
//! `demo_backend --listen 127.0.0.1:9001 --name alpha` answers every request
//! with `200 OK`, `X-Backend: alpha` and the body `alpha\n`, so a
//! `curl http://127.0.0.1:8080/` through the balancer shows which backend
//! served it. Std only, one thread per connection; keep-alive and
//! `Connection: close` work, read/write timeouts stop a silent client from
//! holding a thread forever, and malformed input gets `400 Bad Request` and a
//! close. Request bodies (`Content-Length`) are read and discarded; chunked
//! bodies are not supported (400).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use std::{env, process, thread};

const USAGE: &str = "usage: demo_backend --listen ADDR --name NAME";
/// Longest a client may stay silent (or refuse to read) before we hang up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the request line plus headers.
const MAX_HEAD_BYTES: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;

fn main() {
    let (listen, name) = parse_args(env::args().skip(1)).unwrap_or_else(|msg| {
        eprintln!("demo_backend: {msg}\n{USAGE}");
        process::exit(2);
    });
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("demo_backend: cannot listen on {listen}: {e}");
        process::exit(1);
    });
    let addr = listener.local_addr().map_or(listen, |a| a.to_string());
    eprintln!("demo_backend {name} listening on {addr}");

    let name: Arc<str> = name.into();
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let name = Arc::clone(&name);
                // If no thread can be made, the stream is dropped (closed).
                let _ = thread::Builder::new().spawn(move || serve(stream, &name));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                eprintln!("demo_backend: accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(String, String), String> {
    let (mut listen, mut name) = (None, None);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--listen" => &mut listen,
            "--name" => &mut name,
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        };
        *slot = Some(args.next().ok_or(format!("{arg} needs a value"))?);
    }
    let listen = listen.ok_or("--listen is required")?;
    let name = name.ok_or("--name is required")?;
    // The name goes into a header, so keep it to visible ASCII.
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--name `{name}` must be visible ASCII without spaces"
        ));
    }
    Ok((listen, name))
}

/// Serves requests on one connection until the client leaves, goes silent,
/// asks to close or sends something we cannot parse.
fn serve(stream: TcpStream, name: &str) {
    // Failures to set options or to write only mean the client is gone.
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    loop {
        let (status, body, req) = match read_request(&mut reader) {
            Ok(req) => ("200 OK", format!("{name}\n"), req),
            Err(Fail::BadRequest) => {
                let req = Request {
                    head_only: false,
                    keep_alive: false,
                };
                ("400 Bad Request", "bad request\n".to_string(), req)
            }
            Err(Fail::Gone) => return,
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Backend: {name}\r\nConnection: {}\r\n\r\n{}",
            body.len(),
            if req.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
            if req.head_only { "" } else { &body },
        );
        let stream = reader.get_mut();
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if !req.keep_alive {
            // Send our FIN, then drain briefly so that unread input does not
            // make the kernel answer with an RST that could eat the reply.
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = io::copy(&mut reader.take(64 * 1024), &mut io::sink());
            return;
        }
    }
}

/// What the connection loop needs to know about a parsed request.
struct Request {
    head_only: bool,
    keep_alive: bool,
}

enum Fail {
    /// Malformed or unsupported request: answer 400 and close.
    BadRequest,
    /// EOF, timeout or I/O error: nothing to answer, just close.
    Gone,
}

/// Reads one request head and discards its body, if any.
fn read_request<R: BufRead>(reader: &mut R) -> Result<Request, Fail> {
    let mut head = reader.by_ref().take(MAX_HEAD_BYTES);
    let mut line = String::new();
    // Empty lines before the request line are allowed (RFC 9112, 2.2).
    while line.is_empty() {
        read_line(&mut head, &mut line)?;
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Fail::BadRequest);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(Fail::BadRequest);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(Fail::BadRequest),
    };
    let head_only = method == "HEAD";

    let (mut close, mut keep_alive, mut body_len) = (false, false, None);
    for count in 0.. {
        read_line(&mut head, &mut line)?;
        if line.is_empty() {
            break;
        }
        let Some((field, value)) = line.split_once(':') else {
            return Err(Fail::BadRequest);
        };
        if count == MAX_HEADERS || field.is_empty() || field.contains([' ', '\t']) {
            return Err(Fail::BadRequest);
        }
        let value = value.trim();
        if field.eq_ignore_ascii_case("content-length") {
            let len = value.parse::<u64>().map_err(|_| Fail::BadRequest)?;
            if !value.bytes().all(|b| b.is_ascii_digit()) || body_len.is_some_and(|l| l != len) {
                return Err(Fail::BadRequest);
            }
            body_len = Some(len);
        } else if field.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Fail::BadRequest);
        } else if field.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        }
    }

    let len = body_len.unwrap_or(0);
    match io::copy(&mut reader.by_ref().take(len), &mut io::sink()) {
        Ok(n) if n == len => {}
        _ => return Err(Fail::Gone),
    }
    let keep_alive = !close && (http11 || keep_alive);
    Ok(Request {
        head_only,
        keep_alive,
    })
}

/// Reads one line of the request head into `line`, without its CRLF or LF.
fn read_line<R: BufRead>(head: &mut io::Take<R>, line: &mut String) -> Result<(), Fail> {
    let mut buf = Vec::new();
    match head.read_until(b'\n', &mut buf) {
        Ok(_) if buf.ends_with(b"\n") => {}
        // The head hit its size limit: refuse. Otherwise EOF or timeout.
        Ok(_) if head.limit() == 0 => return Err(Fail::BadRequest),
        _ => return Err(Fail::Gone),
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    *line = String::from_utf8(buf).map_err(|_| Fail::BadRequest)?;
    Ok(())
}
