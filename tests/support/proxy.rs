//! The PROXY protocol from a backend's side, for tests: a TCP backend and a
//! UDP backend that read the header (v1 or v2) as a server behind the
//! balancer would and say what they read, and real HAProxy and nginx
//! processes for interoperability tests.
//!
//! The header reading here is written apart from the balancer's own
//! parser on purpose, so the two cannot share a misreading of the
//! specification.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::backend::{echo_handler, Backend};
use super::balancer::TempDir;
use super::net::{localhost, try_connect, wait_until};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads one PROXY header from `s`, no byte further, and describes it:
/// `v1 SRC DST`, `v1 UNKNOWN`, `v2 tcp SRC DST`, `v2 udp SRC DST`,
/// `v2 LOCAL` or `v2 UNSPEC`.
pub fn read_header(s: &mut TcpStream) -> Result<String, String> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first)
        .map_err(|e| format!("no header: {e}"))?;
    if first[0] == b'P' {
        let mut line = vec![first[0]];
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err("v1 line longer than 107 bytes".into());
            }
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .map_err(|e| format!("v1 cut short: {e}"))?;
            line.push(b[0]);
        }
        return describe_v1(&line[..line.len() - 2]);
    }
    let mut preamble = [0u8; 16];
    preamble[0] = first[0];
    s.read_exact(&mut preamble[1..])
        .map_err(|e| format!("v2 cut short: {e}"))?;
    let len = usize::from(u16::from_be_bytes([preamble[14], preamble[15]]));
    let mut block = vec![0u8; len];
    s.read_exact(&mut block)
        .map_err(|e| format!("v2 block cut short: {e}"))?;
    describe_v2(&preamble, &block)
}

/// Describes the v2 header at the front of a datagram; returns the
/// description and the payload after it.
pub fn split_datagram(datagram: &[u8]) -> Result<(String, &[u8]), String> {
    if datagram.len() < 16 {
        return Err(format!("{} bytes: no v2 header", datagram.len()));
    }
    let len = usize::from(u16::from_be_bytes([datagram[14], datagram[15]]));
    let end = 16 + len;
    if datagram.len() < end {
        return Err("v2 block longer than the datagram".into());
    }
    let preamble: &[u8; 16] = datagram[..16].try_into().expect("16 bytes");
    Ok((describe_v2(preamble, &datagram[16..end])?, &datagram[end..]))
}

fn describe_v1(line: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(line).map_err(|_| "v1 not ASCII".to_string())?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok("v1 UNKNOWN".into()),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |t: &str| -> Result<IpAddr, String> {
                let ip: IpAddr = t.parse().map_err(|_| format!("v1 bad address {t:?}"))?;
                if ip.is_ipv4() != (*proto == "TCP4") {
                    return Err(format!("v1 {proto} with address {t}"));
                }
                Ok(ip)
            };
            let port = |t: &str| t.parse::<u16>().map_err(|_| format!("v1 bad port {t:?}"));
            let source = SocketAddr::new(ip(src)?, port(sport)?);
            let destination = SocketAddr::new(ip(dst)?, port(dport)?);
            Ok(format!("v1 {source} {destination}"))
        }
        _ => Err(format!("v1 malformed: {text:?}")),
    }
}

fn describe_v2(preamble: &[u8; 16], block: &[u8]) -> Result<String, String> {
    if &preamble[..12] != V2_SIGNATURE {
        return Err(format!("not a PROXY header: {preamble:?}"));
    }
    match preamble[12] {
        0x20 => return Ok("v2 LOCAL".into()),
        0x21 => {}
        other => return Err(format!("v2 bad version/command {other:#x}")),
    }
    let transport = match preamble[13] & 0x0f {
        1 => "tcp",
        2 => "udp",
        _ => return Ok("v2 UNSPEC".into()),
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let (source, destination) = match preamble[13] >> 4 {
        1 if block.len() >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        2 if block.len() >= 36 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = block[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        _ => {
            return Err(format!(
                "v2 family {:#x} with {} bytes",
                preamble[13],
                block.len()
            ))
        }
    };
    Ok(format!("v2 {transport} {source} {destination}"))
}

/// A TCP backend that reads the PROXY header, writes what it read as a
/// line (or `error: ...` and closes), then echoes everything else.
pub fn header_echo() -> Backend {
    header_echo_on(localhost(0))
}

pub fn header_echo_on(bind: SocketAddr) -> Backend {
    Backend::spawn_on(bind, |mut s| match read_header(&mut s) {
        Ok(seen) => {
            if s.write_all(format!("{seen}\n").as_bytes()).is_ok() {
                echo_handler(s);
            }
        }
        Err(e) => {
            let _ = s.write_all(format!("error: {e}\n").as_bytes());
        }
    })
}

/// A UDP backend answering each datagram with what its v2 header said,
/// `|`, and the payload after it.
pub struct UdpHeaderEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpHeaderEcho {
    pub fn start() -> UdpHeaderEcho {
        let socket = UdpSocket::bind(localhost(0)).expect("bind UDP backend");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let reply = match split_datagram(&buf[..n]) {
                        Ok((seen, payload)) => [format!("{seen}|").as_bytes(), payload].concat(),
                        Err(e) => format!("error: {e}").into_bytes(),
                    };
                    let _ = socket.send_to(&reply, from);
                }
            })
        };
        UdpHeaderEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpHeaderEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `program` is on PATH (or an absolute path that exists).
pub fn installed(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A real server process (HAProxy, nginx) with its configuration in a
/// temporary directory; killed on drop.
pub struct Daemon {
    child: Child,
    name: &'static str,
    dir: TempDir,
}

impl Daemon {
    /// HAProxy in the foreground with `config`; ready once `wait_for`
    /// accepts connections.
    pub fn haproxy(config: &str, wait_for: SocketAddr) -> Daemon {
        let dir = TempDir::new("haproxy");
        let path = dir.write("haproxy.cfg", config);
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file(&dir)))
            .spawn()
            .expect("start haproxy");
        Daemon::ready(child, "haproxy", dir, wait_for)
    }

    /// nginx in the foreground (no master process) with `config`, which
    /// may use `{dir}` for the temporary directory's path.
    pub fn nginx(config: &str, wait_for: SocketAddr) -> Daemon {
        let dir = TempDir::new("nginx");
        let text = config.replace("{dir}", &dir.path().to_string_lossy());
        let path = dir.write("nginx.conf", &text);
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file(&dir)))
            .spawn()
            .expect("start nginx");
        Daemon::ready(child, "nginx", dir, wait_for)
    }

    fn ready(child: Child, name: &'static str, dir: TempDir, addr: SocketAddr) -> Daemon {
        let mut daemon = Daemon { child, name, dir };
        let up = wait_until(Duration::from_secs(10), || {
            try_connect(addr).is_ok() || daemon.child.try_wait().ok().flatten().is_some()
        });
        if !up || daemon.child.try_wait().ok().flatten().is_some() {
            panic!(
                "{name} did not start listening on {addr}; it printed:\n{}",
                daemon.output()
            );
        }
        daemon
    }

    /// What the process printed (and nginx's error log).
    pub fn output(&self) -> String {
        let read = |file: &str| fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        format!("{}: {}{}", self.name, read("output.log"), read("error.log"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(dir: &TempDir) -> fs::File {
    fs::File::create(dir.path().join("output.log")).expect("create log file")
}

/// The stream module's shared object, where Debian puts it.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Writes `bytes` in one `write` call, so header and payload leave in one
/// segment.
pub fn send_at_once(s: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let n = s.write(bytes)?;
    assert_eq!(n, bytes.len(), "a short write would split the segment");
    Ok(())
}
