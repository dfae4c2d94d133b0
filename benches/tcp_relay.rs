//! TCP relay cost: the same load against two loopback backends directly and
//! through the release binary of balanciaga4 (quick mode, one worker per
//! core, no access log), for keep-alive request/response, a new connection
//! per request, and bulk streams. Prints a markdown table with the ratio to
//! direct and balanciaga4's CPU time (user + system, all its threads) per
//! request, connection or MiB.
//!
//! `cargo bench --bench tcp_relay`; `BENCH_SECONDS=N` sets the measured
//! time of each run (default 3 s, after 0.5 s of warm-up). Everything runs
//! on 127.0.0.1, the backends and the load generator in this process.

#[path = "support/backend.rs"]
mod backend;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use backend::{free_port, Backend, CLOSE, KEEP_ALIVE, MESSAGE, SINK};

const BIN: &str = env!("CARGO_BIN_EXE_balanciaga4");
/// Connections of the keep-alive and new-connection scenarios, as wrk's
/// `-c50` in the HAProxy/nginx comparison.
const CONNECTIONS: usize = 50;
/// Two, as the cores: the load generator must not be the only bottleneck,
/// and more threads would only take turns on the same cores.
const CLIENT_THREADS: usize = 2;
/// Each backend thread holds one connection: room for all 50 on one backend.
const BACKEND_THREADS: usize = 64;
const WARM_UP: Duration = Duration::from_millis(500);
/// Lets the previous run's connections close before the next run starts.
const SETTLE: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;
/// A run gives up after this many failed connections rather than spin.
const MAX_ERRORS: u64 = 1_000;
/// Latencies are kept to the microsecond up to this; longer ones count here.
const MAX_LATENCY_US: usize = 100_000;

fn main() {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(3.0);
    let measure = Duration::from_secs_f64(seconds);
    let backends = [
        Backend::start(BACKEND_THREADS),
        Backend::start(BACKEND_THREADS),
    ];
    let direct: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let proxy = Proxy::start(&direct);
    let through = [proxy.listen];
    let bench = Bench {
        subjects: [(&direct, None), (&through, Some(proxy.child.id()))],
        backends: &backends,
        measure,
    };

    println!(
        "TCP relay, direct vs balanciaga4 ({seconds} s per run, 2 backends, {CLIENT_THREADS} client threads)\n"
    );
    println!("| scenario | direct | balanciaga4 | ratio | balanciaga4 CPU |");
    println!("|---|---:|---:|---:|---:|");

    let latency_bound: [(String, Client, &str); 2] = [
        (
            format!("keep-alive, {CONNECTIONS} connections"),
            keep_alive,
            "request",
        ),
        (
            format!("new connection per request, {CONNECTIONS} concurrent"),
            new_connections,
            "connection",
        ),
    ];
    for (scenario, client, unit) in latency_bound {
        let [d, b] = bench.compare(&scenario, CONNECTIONS, client);
        let per_second = format!("{scenario}, {unit}s/s");
        row(&per_second, d.rate(), b.rate(), &b.cpu_per(unit));
        latency_row(&format!("{scenario}, p99 latency"), &d, &b);
    }

    for streams in [1, 4] {
        let [d, b] = bench.compare("bulk", streams, bulk);
        let plural = if streams > 1 { "s" } else { "" };
        row(
            &format!("bulk, {streams} stream{plural}, MiB/s"),
            d.mib_per_second(),
            b.mib_per_second(),
            &b.cpu_per_mib(),
        );
    }
}

/// What a scenario runs on each client thread: its share of the
/// connections, until the window ends.
type Client = fn(&[SocketAddr], Window) -> Outcome;

struct Bench<'a> {
    /// Where clients connect, and the pid whose CPU time is measured:
    /// direct, then balanciaga4.
    subjects: [(&'a [SocketAddr], Option<u32>); 2],
    backends: &'a [Backend],
    measure: Duration,
}

impl Bench<'_> {
    /// One run of the scenario against each subject in turn.
    fn compare(&self, scenario: &str, connections: usize, client: Client) -> [Run; 2] {
        self.subjects.map(|(targets, pid)| {
            let window = Window::after(WARM_UP, self.measure);
            let clients = spread(targets, connections)
                .map(|mine| thread::spawn(move || client(&mine, window)))
                .collect();
            finish(scenario, clients, pid, self.backends, window)
        })
    }
}

/// The measured part of a run: what finishes between `start` and `end`
/// counts; the clients stop at `end`.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warm_up: Duration, measure: Duration) -> Window {
        let start = Instant::now() + warm_up;
        Window {
            start,
            end: start + measure,
        }
    }

    fn counts(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// The balancer under test; killed when dropped, so a failed run leaves
/// no process behind.
struct Proxy {
    child: Child,
    listen: SocketAddr,
}

impl Proxy {
    fn start(backends: &[SocketAddr]) -> Proxy {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", &listen.to_string(), "--no-access-log"])
            .args(["--log-level", "warn"]);
        for b in backends {
            cmd.args(["--backend", &b.to_string()]);
        }
        // SAFETY: prctl only sets a flag of the new process. It makes the
        // kernel kill the balancer if this bench dies without unwinding
        // (Ctrl-C), which the Drop guard cannot cover.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let child = cmd.stdin(Stdio::null()).spawn().expect("start balanciaga4");
        let mut proxy = Proxy { child, listen };
        proxy.wait_ready();
        proxy
    }

    /// Waits until a request gets its reply through the balancer.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let request = [KEEP_ALIVE; MESSAGE];
        let mut reply = [0u8; MESSAGE];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("balanciaga4 exited at start: {status}");
            }
            let answered = TcpStream::connect(self.listen).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_millis(500)))?;
                s.write_all(&request)?;
                s.read_exact(&mut reply)
            });
            if answered.is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("balanciaga4 did not relay a request within 10 s");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of process `pid`, all its threads.
fn cpu_time(pid: u32) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = fields
        .get(11..13)
        .into_iter()
        .flatten()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 1000 / hz)
}

/// Splits `connections` over the client threads, each connection going to
/// the targets in turn.
fn spread(targets: &[SocketAddr], connections: usize) -> impl Iterator<Item = Vec<SocketAddr>> {
    let threads = CLIENT_THREADS.min(connections);
    let targets = targets.to_vec();
    (0..threads).map(move |t| {
        (t..connections)
            .step_by(threads)
            .map(|i| targets[i % targets.len()])
            .collect()
    })
}

/// Request latencies to the microsecond, without allocating per sample.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new() -> Latencies {
        Latencies(vec![0; MAX_LATENCY_US + 1])
    }

    fn record(&mut self, latency: Duration) {
        let us = usize::try_from(latency.as_micros()).unwrap_or(usize::MAX);
        self.0[us.min(MAX_LATENCY_US)] += 1;
    }

    fn add(&mut self, other: &Latencies) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    fn percentile_us(&self, p: f64) -> Option<usize> {
        let rank = (self.count() as f64 * p).ceil() as u64;
        let mut seen = 0;
        self.0.iter().position(|&n| {
            seen += n;
            seen >= rank.max(1)
        })
    }
}

/// What one client thread saw.
struct Outcome {
    latencies: Latencies,
    errors: u64,
}

/// One run of a scenario against one subject.
struct Run {
    latencies: Latencies,
    /// Bytes the sink backends received during the window.
    sunk: u64,
    seconds: f64,
    cpu: Option<Duration>,
}

/// Samples the subject's CPU and the sinks at the window's edges while the
/// clients run, then gathers what the clients saw.
fn finish(
    scenario: &str,
    clients: Vec<thread::JoinHandle<Outcome>>,
    pid: Option<u32>,
    backends: &[Backend],
    window: Window,
) -> Run {
    let sunk = || -> u64 {
        backends
            .iter()
            .map(|b| b.sunk.load(Ordering::Relaxed))
            .sum()
    };
    thread::sleep(window.start.saturating_duration_since(Instant::now()));
    let (cpu_before, sunk_before) = (pid.map(cpu_time), sunk());
    thread::sleep(window.end.saturating_duration_since(Instant::now()));
    let (cpu_after, sunk_after) = (pid.map(cpu_time), sunk());
    let mut latencies = Latencies::new();
    let mut errors = 0;
    for client in clients {
        let outcome = client.join().expect("a client thread panicked");
        latencies.add(&outcome.latencies);
        errors += outcome.errors;
    }
    let subject = if pid.is_some() {
        "balanciaga4"
    } else {
        "direct"
    };
    if errors > 0 {
        eprintln!("{scenario}, {subject}: {errors} connections failed");
    }
    thread::sleep(SETTLE);
    Run {
        latencies,
        sunk: sunk_after - sunk_before,
        seconds: (window.end - window.start).as_secs_f64(),
        cpu: cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
    }
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.count() as f64 / self.seconds
    }

    fn mib(&self) -> f64 {
        self.sunk as f64 / (1024.0 * 1024.0)
    }

    fn mib_per_second(&self) -> f64 {
        self.mib() / self.seconds
    }

    fn cpu_per(&self, unit: &str) -> String {
        let count = self.latencies.count().max(1) as f64;
        self.cpu.map_or(String::new(), |cpu| {
            format!("{:.1} µs/{unit}", cpu.as_secs_f64() * 1e6 / count)
        })
    }

    fn cpu_per_mib(&self) -> String {
        self.cpu.map_or(String::new(), |cpu| {
            format!(
                "{:.0} µs/MiB",
                cpu.as_secs_f64() * 1e6 / self.mib().max(1.0)
            )
        })
    }
}

fn row(scenario: &str, direct: f64, balanciaga4: f64, cpu: &str) {
    let ratio = balanciaga4 / direct.max(f64::MIN_POSITIVE);
    println!("| {scenario} | {direct:.0} | {balanciaga4:.0} | {ratio:.2} | {cpu} |");
}

fn latency_row(scenario: &str, direct: &Run, balanciaga4: &Run) {
    let p99 = |run: &Run| run.latencies.percentile_us(0.99);
    let shown = |us: Option<usize>| match us {
        Some(us) if us >= MAX_LATENCY_US => format!("≥ {} ms", MAX_LATENCY_US / 1000),
        Some(us) => format!("{us} µs"),
        None => "n/a".into(),
    };
    let ratio = match (p99(direct), p99(balanciaga4)) {
        (Some(d), Some(b)) => format!("{:.2}", b as f64 / d.max(1) as f64),
        _ => "n/a".into(),
    };
    println!(
        "| {scenario} (lower is better) | {} | {} | {ratio} | |",
        shown(p99(direct)),
        shown(p99(balanciaga4))
    );
}

/// A connection of the keep-alive scenario: one request in flight.
struct KeepAlive {
    stream: mio::net::TcpStream,
    sent: Instant,
    got: usize,
}

const KEEP_ALIVE_REQUEST: [u8; MESSAGE] = [KEEP_ALIVE; MESSAGE];

impl KeepAlive {
    fn open(target: SocketAddr) -> io::Result<KeepAlive> {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut conn = KeepAlive {
            stream: mio::net::TcpStream::from_std(stream),
            sent: Instant::now(),
            got: 0,
        };
        conn.send()?;
        Ok(conn)
    }

    /// A 100-byte write to a socket with nothing unsent always fits, so
    /// a short one means the connection is broken.
    fn send(&mut self) -> io::Result<()> {
        self.sent = Instant::now();
        match self.stream.write(&KEEP_ALIVE_REQUEST)? {
            MESSAGE => Ok(()),
            _ => Err(io::ErrorKind::WriteZero.into()),
        }
    }

    /// Reads replies until the socket is drained, sending the next
    /// request after each.
    fn pump(&mut self, buf: &mut [u8], window: &Window, seen: &mut Latencies) -> io::Result<()> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.got += n;
                    while self.got >= MESSAGE {
                        self.got -= MESSAGE;
                        let now = Instant::now();
                        if window.counts(now) {
                            seen.record(now - self.sent);
                        }
                        self.send()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn poll_once(poll: &mut Poll, events: &mut Events) {
    if let Err(e) = poll.poll(events, Some(Duration::from_millis(20))) {
        if e.kind() != io::ErrorKind::Interrupted {
            panic!("poll: {e}");
        }
    }
}

/// Keeps one request in flight on each connection to `targets` until the
/// window ends.
fn keep_alive(targets: &[SocketAddr], window: Window) -> Outcome {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(64);
    let mut seen = Latencies::new();
    let mut errors = 0;
    let mut conns: Vec<Option<KeepAlive>> = Vec::with_capacity(targets.len());
    for (i, &target) in targets.iter().enumerate() {
        let conn = KeepAlive::open(target).and_then(|mut c| {
            poll.registry()
                .register(&mut c.stream, Token(i), Interest::READABLE)?;
            Ok(c)
        });
        errors += u64::from(conn.is_err());
        conns.push(conn.ok());
    }
    let mut buf = [0u8; 4096];
    while Instant::now() < window.end && conns.iter().any(Option::is_some) {
        poll_once(&mut poll, &mut events);
        for event in events.iter() {
            let slot = &mut conns[event.token().0];
            if let Some(conn) = slot {
                if conn.pump(&mut buf, &window, &mut seen).is_err() {
                    errors += 1;
                    *slot = None;
                }
            }
        }
    }
    Outcome {
        latencies: seen,
        errors,
    }
}

/// One try of the new-connection scenario: connect, send a request, read
/// the reply until the backend closes.
struct Attempt {
    stream: mio::net::TcpStream,
    started: Instant,
    sent: bool,
    got: usize,
}

const CLOSE_REQUEST: [u8; MESSAGE] = [CLOSE; MESSAGE];

impl Attempt {
    fn open(target: SocketAddr, poll: &Poll, token: Token) -> io::Result<Attempt> {
        let started = Instant::now();
        let mut stream = mio::net::TcpStream::connect(target)?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Attempt {
            stream,
            started,
            sent: false,
            got: 0,
        })
    }

    /// `Ok(true)` once the whole reply and the backend's close are in.
    fn advance(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.sent {
            // mio's connect recipe: an error, or connected once the peer
            // address is known.
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            match self.stream.peer_addr() {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            if self.stream.write(&CLOSE_REQUEST)? != MESSAGE {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent = true;
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) if self.got == MESSAGE => return Ok(true),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs one connect-request-close loop per entry of `targets` until the
/// window ends, each new connection going to the next target.
fn new_connections(targets: &[SocketAddr], window: Window) -> Outcome {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(64);
    let mut seen = Latencies::new();
    let mut errors = 0;
    let mut next = 0;
    let mut open = |poll: &Poll, i: usize| {
        next += 1;
        Attempt::open(targets[next % targets.len()], poll, Token(i)).ok()
    };
    let mut slots: Vec<Option<Attempt>> = (0..targets.len()).map(|i| open(&poll, i)).collect();
    errors += slots.iter().filter(|s| s.is_none()).count() as u64;
    let mut buf = [0u8; 4096];
    while Instant::now() < window.end && errors < MAX_ERRORS {
        poll_once(&mut poll, &mut events);
        for event in events.iter() {
            let i = event.token().0;
            let Some(attempt) = &mut slots[i] else {
                continue;
            };
            match attempt.advance(&mut buf) {
                Ok(false) => continue,
                Ok(true) => {
                    let now = Instant::now();
                    if window.counts(now) {
                        seen.record(now - attempt.started);
                    }
                }
                Err(_) => errors += 1,
            }
            // Closed before the next one opens, so a slot holds one socket.
            slots[i] = None;
            slots[i] = open(&poll, i);
            errors += u64::from(slots[i].is_none());
        }
    }
    Outcome {
        latencies: seen,
        errors,
    }
}

/// Streams to a sink on each of `targets` (one thread each, blocking
/// writes) until the window ends; the sinks count what arrives.
fn bulk(targets: &[SocketAddr], window: Window) -> Outcome {
    let streams: Vec<_> = targets
        .iter()
        .map(|&target| thread::spawn(move || stream_to_sink(target, window)))
        .collect();
    let errors = streams
        .into_iter()
        .map(|s| s.join().map_or(1, |r| u64::from(r.is_err())))
        .sum();
    Outcome {
        latencies: Latencies::new(),
        errors,
    }
}

fn stream_to_sink(target: SocketAddr, window: Window) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
    // A stalled relay ends the stream instead of outliving the window.
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let chunk = vec![SINK; CHUNK];
    while Instant::now() < window.end {
        stream.write_all(&chunk)?;
    }
    Ok(())
}
