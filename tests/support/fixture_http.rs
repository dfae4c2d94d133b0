//! A tiny HTTP/1.1 server standing in for the admin listener in the status
//! page tests: `GET /` answers the status page, `GET /stats` a canned reply
//! the test chooses (and may change), `GET /history` five minutes of rates
//! for the same listeners and backends (`tests/fixtures/history.json`),
//! anything else 404. One thread per
//! connection and one request per connection (`Connection: close`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::net::localhost;

/// The page the admin listener serves, as built into the balancer.
pub const STATUS_PAGE: &str = include_str!("../../src/admin/status.html");

/// What `GET /history` answers: charts for `tests/fixtures/stats.json`.
const HISTORY: &str = include_str!("../fixtures/history.json");

/// Largest request head read; browsers send well under 2 KiB.
const MAX_HEAD: usize = 16 * 1024;

/// How long an idle connection is kept (browsers open spare ones).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `GET /stats` answers.
#[derive(Debug, Clone)]
pub enum StatsReply {
    /// 200 with this JSON body.
    Json(String),
    /// This status with a short text body.
    Status(u16),
}

#[derive(Debug)]
struct Shared {
    stats: Mutex<StatsReply>,
    /// Paths of the requests answered, in order.
    requests: Mutex<Vec<String>>,
}

/// The server; dropping it stops the accept loop.
pub struct FixtureHttp {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FixtureHttp {
    /// Listens on 127.0.0.1 (a free port) and serves until dropped.
    pub fn serve(stats: StatsReply) -> FixtureHttp {
        let listener = TcpListener::bind(localhost(0)).expect("fixture http bind");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            stats: Mutex::new(stats),
            requests: Mutex::new(Vec::new()),
        });
        let accept_thread = {
            let (stop, shared) = (stop.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("fixture-http-{addr}"))
                .spawn(move || accept_loop(listener, stop, shared))
                .unwrap()
        };
        FixtureHttp {
            addr,
            stop,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:PORT/`, where the page is.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// How many requests for `path` were answered.
    pub fn requests(&self, path: &str) -> usize {
        let requests = self.shared.requests.lock().unwrap();
        requests.iter().filter(|p| *p == path).count()
    }
}

impl Drop for FixtureHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, shared: Arc<Shared>) {
    loop {
        let res = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match res {
            Ok((stream, _)) => {
                let shared = shared.clone();
                thread::spawn(move || {
                    let _ = handle(stream, &shared);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("fixture http accept error: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn handle(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        return Ok(()); // A spare connection closed unused.
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_string();
    shared.requests.lock().unwrap().push(path.clone());

    let (status, content_type, body) = match (method, path.as_str()) {
        ("GET", "/") => (200, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
        ("GET", "/stats") => match shared.stats.lock().unwrap().clone() {
            StatsReply::Json(json) => (200, "application/json", json),
            StatsReply::Status(code) => (code, "text/plain", format!("fixture status {code}\n")),
        },
        ("GET", "/history") => (200, "application/json", HISTORY.to_string()),
        ("GET", _) => (404, "text/plain", "not found\n".to_string()),
        _ => (405, "text/plain", "method not allowed\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(reply.as_bytes())?;
    stream.flush()
}

/// The request head up to the blank line; `None` if the peer closed first.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
