//! UDP request/reply throughput: the same clients against two echo
//! backends directly, through balanciaga4, and through nginx's stream
//! module proxying UDP (when nginx is installed), for small and
//! MTU-sized datagrams.
//!
//! `cargo bench --bench udp_throughput` (after `--`: `--seconds N`,
//! `--sizes 64,1400`, `--clients N`, `--window N`, `--rounds N`). Prints a
//! markdown table: round trips a second (each is one datagram each way
//! through the proxy), the ratio to direct, datagrams lost, the proxy's CPU
//! time per round trip, and how that CPU time split between its threads
//! (the busiest thread's share: with few flows, the kernel's
//! `SO_REUSEPORT` hash may put them all on one worker). With `--rounds`
//! the subjects take turns, round after round, so a slow minute of the
//! machine hits all of them. Everything runs on 127.0.0.1 and stops by
//! itself.
//!
//! The default load is many pipelined flows (64 clients, 8 datagrams in
//! flight each); `--clients 4 --window 1` is the few-flows ping-pong an
//! outside request/reply client makes.

use std::fs;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

const BIN: &str = env!("CARGO_BIN_EXE_balanciaga4");
const NGINX_STREAM: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// Client threads (each owns an equal share of the client sockets).
const THREADS: usize = 2;
const WARM_UP: Duration = Duration::from_millis(500);
/// A socket with no reply for this long has lost its window: refill it.
const STALL: Duration = Duration::from_millis(50);

struct Options {
    seconds: u64,
    sizes: Vec<usize>,
    clients: usize,
    /// Datagrams each client keeps in flight.
    window: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 5,
        sizes: vec![64, 1400],
        clients: 64,
        window: 8,
        rounds: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => o.seconds = value().parse().unwrap_or(o.seconds),
            "--clients" => o.clients = value().parse().unwrap_or(o.clients),
            "--window" => o.window = value().parse().unwrap_or(o.window).max(1),
            "--rounds" => o.rounds = value().parse().unwrap_or(o.rounds).max(1),
            "--sizes" => o.sizes = value().split(',').filter_map(|s| s.parse().ok()).collect(),
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// Socket buffers of the backends and clients, so that the load
/// generator's own sockets do not drop what is in flight (the kernel caps
/// it at net.core.rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;

fn udp_socket(bind: SocketAddr) -> UdpSocket {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&bind.into()).expect("bind");
    s.into()
}

/// An echo server on its own thread until `stop`.
fn echo_backend(stop: &Arc<AtomicBool>) -> SocketAddr {
    let socket = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)));
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let addr = socket.local_addr().expect("address");
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
    addr
}

/// A proxy under test: its process and where clients send.
struct Subject {
    name: &'static str,
    child: Option<Child>,
    targets: Vec<SocketAddr>,
    _dir: Option<TempDir>,
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: kill(2) on our own child's pid; SIGTERM lets nginx
            // stop its workers too.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    // Bound and dropped: a UDP port nothing else on this quiet machine
    // is about to take.
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn balanciaga4(backends: &[SocketAddr]) -> Subject {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", &listen.to_string(), "--udp", "--workers", "2"])
        .args(["--no-access-log", "--log-level", "warn"]);
    for b in backends {
        cmd.args(["--backend", &b.to_string()]);
    }
    let child = cmd.stdin(Stdio::null()).spawn().expect("start balanciaga4");
    ready(Subject {
        name: "balanciaga4",
        child: Some(child),
        targets: vec![listen],
        _dir: None,
    })
}

fn nginx(backends: &[SocketAddr]) -> Option<Subject> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| fs::metadata(p).is_ok())?;
    if fs::metadata(NGINX_STREAM).is_err() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("b4-udp-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).ok()?;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let servers: String = backends.iter().map(|b| format!("server {b}; ")).collect();
    // Like balanciaga4: 2 workers, one SO_REUSEPORT socket each, round
    // robin, no log per session.
    let conf = format!(
        "load_module {NGINX_STREAM};\n\
         daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         stream {{\n  upstream backends {{ {servers}}}\n  \
         server {{ listen {listen} udp reuseport; proxy_pass backends; proxy_timeout 30s; }}\n}}\n",
        d = dir.display()
    );
    fs::write(dir.join("nginx.conf"), conf).ok()?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    Some(ready(Subject {
        name: "nginx",
        child: Some(child),
        targets: vec![listen],
        _dir: Some(TempDir(dir)),
    }))
}

/// Waits until the subject echoes a datagram.
fn ready(subject: Subject) -> Subject {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 16];
    while Instant::now() < deadline {
        let _ = probe.send_to(b"ready?", subject.targets[0]);
        if probe.recv_from(&mut buf).is_ok() {
            return subject;
        }
    }
    panic!("{} did not answer within 10 s", subject.name);
}

/// User + system CPU time of `pid` and its children (nginx workers).
/// CPU ticks of each thread of process `pid` and of its children (nginx's
/// workers are processes), named `comm/tid`.
fn thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut pids = vec![pid.to_string()];
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split_whitespace().nth(1));
        if ppid == Some(pid.to_string().as_str()) {
            pids.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let mut out = Vec::new();
    for p in pids {
        for task in fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 12 {
                let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
                let tid = task.file_name().to_string_lossy().into_owned();
                out.push((format!("{}/{tid}", name.trim()), ticks));
            }
        }
    }
    out
}

/// The busiest thread's share of the CPU time the threads used between
/// two `thread_cpu` readings, with its name.
fn busiest_share(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    let used: Vec<(&str, u64)> = after
        .iter()
        .map(|(name, t)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, t)| *t);
            (name.as_str(), t.saturating_sub(was))
        })
        .collect();
    let total: u64 = used.iter().map(|(_, t)| t).sum();
    match used.iter().max_by_key(|(_, t)| *t) {
        Some((name, t)) if total > 0 => format!("{name} {:.0}%", *t as f64 * 100.0 / total as f64),
        _ => "n/a".into(),
    }
}

fn tree_cpu(pid: u32) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut ticks = 0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let own = head.split(' ').next() == Some(&pid.to_string());
        if (own || f.get(1) == Some(&pid.to_string().as_str())) && f.len() > 12 {
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 1000 / hz)
}

struct Load {
    round_trips: u64,
    lost: u64,
    elapsed: Duration,
}

/// `clients` sockets, each keeping `window` datagrams of `size` bytes in
/// flight to its target; counts replies during the measured period.
fn load(
    targets: &[SocketAddr],
    clients: usize,
    window: usize,
    size: usize,
    measure: Duration,
) -> Load {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mine: Vec<SocketAddr> = (0..clients.div_ceil(THREADS))
                .filter(|i| t + i * THREADS < clients)
                .map(|i| targets[(t + i * THREADS) % targets.len()])
                .collect();
            let (counting, stop) = (Arc::clone(&counting), Arc::clone(&stop));
            let (done, lost) = (Arc::clone(&done), Arc::clone(&lost));
            thread::spawn(move || client_loop(&mine, size, window, &counting, &stop, &done, &lost))
        })
        .collect();
    thread::sleep(WARM_UP);
    counting.store(true, Ordering::SeqCst);
    let started = Instant::now();
    thread::sleep(measure);
    counting.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    Load {
        round_trips: done.load(Ordering::SeqCst),
        lost: lost.load(Ordering::SeqCst),
        elapsed,
    }
}

fn client_loop(
    targets: &[SocketAddr],
    size: usize,
    window: usize,
    counting: &AtomicBool,
    stop: &AtomicBool,
    done: &AtomicU64,
    lost: &AtomicU64,
) {
    let mut poll = Poll::new().expect("poll");
    let payload = vec![0x5a; size];
    let mut sockets: Vec<(mio::net::UdpSocket, usize, Instant)> = targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let std = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)));
            std.set_nonblocking(true).expect("non-blocking");
            let mut s = mio::net::UdpSocket::from_std(std);
            s.connect(*target).expect("connect");
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)
                .expect("register");
            (s, 0, Instant::now())
        })
        .collect();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 65536];
    let (mut my_done, mut my_lost) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (s, in_flight, last) in &mut sockets {
            if *in_flight > 0 && now - *last > STALL {
                if counting.load(Ordering::Relaxed) {
                    my_lost += *in_flight as u64;
                }
                *in_flight = 0;
            }
            while *in_flight < window && s.send(&payload).is_ok() {
                *in_flight += 1;
                *last = now;
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(STALL)) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        let counted = counting.load(Ordering::Relaxed);
        for event in events.iter() {
            let (s, in_flight, last) = &mut sockets[event.token().0];
            while let Ok(n) = s.recv(&mut buf) {
                debug_assert_eq!(n, size);
                *in_flight = in_flight.saturating_sub(1);
                *last = Instant::now();
                if counted {
                    my_done += 1;
                }
                if s.send(&payload).is_ok() {
                    *in_flight += 1;
                }
            }
        }
    }
    done.fetch_add(my_done, Ordering::SeqCst);
    lost.fetch_add(my_lost, Ordering::SeqCst);
}

fn main() {
    let o = options();
    let stop = Arc::new(AtomicBool::new(false));
    let backends = [echo_backend(&stop), echo_backend(&stop)];
    let measure = Duration::from_secs(o.seconds);
    println!(
        "UDP echo, {} clients × {} datagrams in flight, {THREADS} client threads, {} s per run, {} rounds, 2 echo backends\n",
        o.clients, o.window, o.seconds, o.rounds
    );
    println!("| size | round | subject | round trips/s | vs direct | lost | proxy CPU µs per round trip | busiest proxy thread |");
    println!("|---|---|---|---|---|---|---|---|");
    for &size in &o.sizes {
        let direct = Subject {
            name: "direct",
            child: None,
            targets: backends.to_vec(),
            _dir: None,
        };
        let mut subjects = vec![direct, balanciaga4(&backends)];
        match nginx(&backends) {
            Some(n) => subjects.push(n),
            None => eprintln!("nginx with the stream module not found: skipping it"),
        }
        for round in 1..=o.rounds {
            let mut base = None;
            for subject in &subjects {
                let pid = subject.child.as_ref().map(Child::id);
                let cpu_before = pid.map(tree_cpu);
                let threads_before = pid.map(thread_cpu);
                let run = load(&subject.targets, o.clients, o.window, size, measure);
                let cpu = pid.zip(cpu_before).map(|(p, b)| tree_cpu(p) - b);
                let busiest = pid.zip(threads_before).map_or("n/a".to_string(), |(p, b)| {
                    busiest_share(&b, &thread_cpu(p))
                });
                let rate = run.round_trips as f64 / run.elapsed.as_secs_f64();
                let base = *base.get_or_insert(rate);
                let cpu_per = cpu.map_or("n/a".to_string(), |c| {
                    format!(
                        "{:.2}",
                        c.as_secs_f64() * 1e6 / run.round_trips.max(1) as f64
                    )
                });
                println!(
                    "| {size} B | {round} | {} | {rate:.0} | {:.2} | {} | {cpu_per} | {busiest} |",
                    subject.name,
                    rate / base,
                    run.lost
                );
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
}
