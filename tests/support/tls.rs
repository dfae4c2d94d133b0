//! TLS from the outside, for the routing tests: self-signed certificates
//! and `openssl s_server` backends made with the `openssl` command, TLS
//! ClientHello bytes built here (so a test controls every byte and how
//! they are framed and segmented), a backend that keeps what it receives,
//! and a reader for the PROXY v2 TLVs a routed pool sends.
//!
//! The hello builder is written apart from the balancer's parser on
//! purpose, so the two cannot share a misreading of RFC 8446.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::balancer::TempDir;
use super::net::localhost;

/// Whether `programs` are installed; if not, the test is skipped (or,
/// under `CI=true`, fails), and the caller must return at once.
pub fn tools_present(programs: &[&str]) -> bool {
    super::skip::require_programs(programs)
}

/// Runs `program args` to completion within `within`; panics with its
/// output if it fails or hangs.
pub fn run(program: &str, args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{program} {args:?} did not finish within {within:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// A self-signed certificate (ECDSA P-256) and its key, as files.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    /// Makes `DIR/CN.crt` and `DIR/CN.key` for `cn` with `names` as DNS
    /// subject alternative names.
    pub fn make(dir: &Path, cn: &str, names: &[&str]) -> Cert {
        let cert = dir.join(format!("{cn}.crt"));
        let key = dir.join(format!("{cn}.key"));
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let out = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                &format!("subjectAltName={}", san.join(",")),
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &cert.to_string_lossy(),
            ],
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cert { cert, key }
    }
}

/// `openssl s_server -www` on a loopback port the kernel picks, serving
/// one certificate; killed on drop. It handles one connection at a time.
pub struct TlsServer {
    child: Child,
    pub addr: SocketAddr,
}

impl TlsServer {
    pub fn start(cert: &Cert) -> TlsServer {
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        // It prints `ACCEPT 127.0.0.1:PORT` once it listens.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            // Keep reading so s_server never blocks on a full pipe.
            while let Some(Ok(line)) = lines.next() {
                if !sent {
                    if let Some(addr) = line.strip_prefix("ACCEPT ") {
                        sent = tx.send(addr.trim().to_string()).is_ok();
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("s_server printed no ACCEPT line within 10 s");
        TlsServer {
            child,
            addr: addr.parse().expect("s_server's address"),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a real TLS client saw: the subject CN of the certificate it got
/// (`None` if the handshake failed) and everything it printed.
#[derive(Debug)]
pub struct Answer {
    pub cn: Option<String>,
    pub output: String,
}

fn cn_after(text: &str, marker: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = &l[l.find(marker)? + marker.len()..];
        let rest = rest.trim_start_matches([' ', '=', ':']);
        let rest = rest.strip_prefix("CN")?.trim_start_matches([' ', '=']);
        Some(rest.split([',', '/']).next()?.trim().to_string())
    })
}

/// `curl -k --resolve NAME:PORT:127.0.0.1 https://NAME:PORT/`: a full
/// handshake with `name` as SNI and an HTTP request.
pub fn curl(name: &str, port: u16) -> Answer {
    let out = run(
        "curl",
        &[
            "-sk",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{certs}",
            "--resolve",
            &format!("{name}:{port}:127.0.0.1"),
            &format!("https://{name}:{port}/"),
        ],
        Duration::from_secs(20),
    );
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = out.status.success() && output.starts_with("200 ");
    Answer {
        cn: ok.then(|| cn_after(&output, "Subject:")).flatten(),
        output,
    }
}

/// `openssl s_client -connect 127.0.0.1:PORT [-servername NAME | -noservername]
/// [-alpn LIST]`, which closes after the handshake (stdin is empty).
pub fn s_client(port: u16, name: Option<&str>, alpn: Option<&str>) -> Answer {
    let connect = format!("127.0.0.1:{port}");
    let mut args = vec!["s_client", "-connect", &connect];
    match name {
        Some(n) => args.extend(["-servername", n]),
        None => args.push("-noservername"),
    }
    if let Some(a) = alpn {
        args.extend(["-alpn", a]);
    }
    let out = run("openssl", &args, Duration::from_secs(20));
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    Answer {
        cn: cn_after(&output, "subject="),
        output,
    }
}

/// The parts of a ClientHello a test chooses.
#[derive(Debug, Clone, Default)]
pub struct Hello<'a> {
    pub sni: Option<&'a str>,
    pub alpn: &'a [&'a str],
    /// Bytes of a padding extension (type 21), to make the hello large.
    pub padding: usize,
}

fn u16_be(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits 16 bits").to_be_bytes()
}

fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&u16_be(body.len()));
    out.extend_from_slice(body);
}

impl Hello<'_> {
    /// The handshake message (type 1, 24-bit length, body): a TLS 1.3
    /// ClientHello as a browser sends it, with X25519 key share.
    pub fn message(&self) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = self.sni {
            let mut entry = vec![0u8];
            entry.extend_from_slice(&u16_be(name.len()));
            entry.extend_from_slice(name.as_bytes());
            let mut body = u16_be(entry.len()).to_vec();
            body.extend_from_slice(&entry);
            extension(&mut exts, 0, &body);
        }
        extension(&mut exts, 10, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
        extension(&mut exts, 13, &[0, 4, 0x04, 0x03, 0x08, 0x04]);
        if !self.alpn.is_empty() {
            let mut list = Vec::new();
            for p in self.alpn {
                list.push(u8::try_from(p.len()).expect("ALPN up to 255 bytes"));
                list.extend_from_slice(p.as_bytes());
            }
            let mut body = u16_be(list.len()).to_vec();
            body.extend_from_slice(&list);
            extension(&mut exts, 16, &body);
        }
        extension(&mut exts, 43, &[4, 0x03, 0x04, 0x03, 0x03]);
        let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
        share.extend((0..32u8).map(|i| i.wrapping_mul(7)));
        extension(&mut exts, 51, &share);
        if self.padding > 0 {
            extension(&mut exts, 21, &vec![0u8; self.padding]);
        }
        let mut body = vec![0x03, 0x03];
        body.extend((0..32u8).map(|i| i ^ 0x5a)); // random
        body.push(32);
        body.extend((0..32u8).map(|i| i.wrapping_add(100))); // session id
        body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b]);
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&u16_be(exts.len()));
        body.extend_from_slice(&exts);
        let len = u32::try_from(body.len()).expect("small").to_be_bytes();
        let mut msg = vec![1, len[1], len[2], len[3]];
        msg.extend_from_slice(&body);
        msg
    }

    /// The hello in one handshake record (or as many records of at most
    /// 16 KiB as it needs).
    pub fn record(&self) -> Vec<u8> {
        records(&self.message(), &[])
    }
}

/// `message` framed as handshake records, cut before each offset in
/// `cuts` (and every 16 KiB).
pub fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(message.len());
    for end in bounds {
        while start < end {
            let stop = end.min(start + 16384);
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&u16_be(stop - start));
            out.extend_from_slice(&message[start..stop]);
            start = stop;
        }
    }
    out
}

/// What a capturing backend received on one connection, complete once the
/// client side closed.
pub type Captures = Arc<Mutex<Vec<Vec<u8>>>>;

/// A backend that writes `"{name}\n"` on accept and keeps every byte it
/// receives until EOF (or its read timeout), one entry per connection.
pub fn capture(name: &str) -> (Backend, Captures) {
    let seen: Captures = Arc::default();
    let line = format!("{name}\n");
    let kept = Arc::clone(&seen);
    let backend = Backend::spawn_on(localhost(0), move |mut s: TcpStream| {
        let _ = s.write_all(line.as_bytes());
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        kept.lock().unwrap().push(got);
    });
    (backend, seen)
}

/// A PROXY v2 TLV: its type and value.
pub type Tlv = (u8, Vec<u8>);

/// A PROXY v2 header at the front of `bytes`: its TLVs and the length of
/// the whole header.
pub fn v2_tlvs(bytes: &[u8]) -> Result<(Vec<Tlv>, usize), String> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    if bytes.len() < 16 || &bytes[..12] != SIGNATURE {
        return Err(format!(
            "no v2 signature in {:?}",
            &bytes[..bytes.len().min(16)]
        ));
    }
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let end = 16 + len;
    if bytes.len() < end {
        return Err(format!("v2 block of {len} bytes cut short"));
    }
    let addresses = match bytes[13] >> 4 {
        1 => 12,
        2 => 36,
        0 => 0,
        f => return Err(format!("v2 family {f}")),
    };
    let mut at = 16 + addresses;
    let mut tlvs = Vec::new();
    while at < end {
        if at + 3 > end {
            return Err("TLV header cut short".into());
        }
        let kind = bytes[at];
        let n = usize::from(u16::from_be_bytes([bytes[at + 1], bytes[at + 2]]));
        if at + 3 + n > end {
            return Err(format!("TLV {kind:#x} of {n} bytes runs past the header"));
        }
        tlvs.push((kind, bytes[at + 3..at + 3 + n].to_vec()));
        at += 3 + n;
    }
    Ok((tlvs, end))
}

/// A temporary directory with the certificates of the routing tests.
pub struct CertDir {
    pub dir: TempDir,
}

impl CertDir {
    pub fn new() -> CertDir {
        CertDir {
            dir: TempDir::new("certs"),
        }
    }

    pub fn make(&self, cn: &str, names: &[&str]) -> Cert {
        Cert::make(self.dir.path(), cn, names)
    }
}

impl Default for CertDir {
    fn default() -> Self {
        Self::new()
    }
}
