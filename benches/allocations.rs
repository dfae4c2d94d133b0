//! Heap allocations of the TCP data path: allocations per new connection
//! (connect, one 100-byte round trip, close) and per round trip on a
//! keep-alive connection, through one in-process reactor started the way
//! `src/main.rs` starts it (quick mode, one worker, access log and health
//! checks off), in front of one in-process backend.
//!
//! A counting global allocator counts every allocation in the process, so
//! the load generator and the backend are written not to allocate once
//! running; the same loops straight to the backend are measured too and
//! subtracted. `cargo bench --bench allocations` prints a markdown table.
//!
//! To see where the balancer allocates, `ALLOC_TRACE=N` keeps the stacks
//! of the first N allocations of each measured run through it and prints
//! them grouped. Line numbers need debug info in the bench build:
//! `CARGO_PROFILE_BENCH_DEBUG=line-tables-only ALLOC_TRACE=50 cargo bench --bench allocations`.
//! Capturing stacks allocates and is slow, so do not read the table of such
//! a run.

#[path = "support/backend.rs"]
#[allow(dead_code)] // the sink is for the relay bench
mod backend;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use balanciaga4::cli::{self, Command, Source};
use balanciaga4::control::Control;
use balanciaga4::limits;
use balanciaga4::listener::{self, Mailboxes};
use balanciaga4::reactor;
use balanciaga4::registry::{Registry, Shared};

use backend::{free_port, Backend, CLOSE, KEEP_ALIVE, MESSAGE};

const WARM_UP_CONNECTIONS: u64 = 2_000;
const WARM_UP_ROUND_TRIPS: u64 = 20_000;
const CONNECTIONS: u64 = 5_000;
const ROUND_TRIPS: u64 = 50_000;
/// Lets the balancer finish closing the last sessions before counting stops.
const SETTLE: Duration = Duration::from_millis(200);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames printed of each kept stack, enough to reach the balancer's code
/// from inside a collection's growth.
const STACK_FRAMES: usize = 16;

#[global_allocator]
static COUNTING: Counting = Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Set while stacks are being kept (`ALLOC_TRACE`).
static TRACING: AtomicBool = AtomicBool::new(false);
/// Stacks still to keep in the current run.
static TRACES_LEFT: AtomicUsize = AtomicUsize::new(0);
static TRACES: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread is capturing a stack: its own allocations are not the
    /// data path's.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

impl Counting {
    fn note(counter: &AtomicU64, bytes: usize) {
        if TRACING.load(Ordering::Relaxed) && !keep_stack() {
            return;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Keeps this allocation's stack while any are left to keep; false for
/// the allocations the capture itself makes.
fn keep_stack() -> bool {
    CAPTURING
        .try_with(|capturing| {
            if capturing.get() {
                return false;
            }
            capturing.set(true);
            let left = TRACES_LEFT
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if left.is_ok() {
                let stack = Backtrace::force_capture();
                if let Ok(mut traces) = TRACES.lock() {
                    traces.push(stack);
                }
            }
            capturing.set(false);
            true
        })
        .unwrap_or(false)
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counting touches only atomics and, when tracing, a const-initialised
// thread-local flag, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::note(&ALLOCATIONS, layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::note(&ALLOCATIONS, layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::note(&REALLOCATIONS, new_size.saturating_sub(layout.size()));
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    allocations: u64,
    reallocations: u64,
    bytes: u64,
}

impl Counts {
    fn now() -> Counts {
        Counts {
            allocations: ALLOCATIONS.load(Ordering::SeqCst),
            reallocations: REALLOCATIONS.load(Ordering::SeqCst),
            bytes: BYTES.load(Ordering::SeqCst),
        }
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            allocations: self.allocations - before.allocations,
            reallocations: self.reallocations - before.reallocations,
            bytes: self.bytes - before.bytes,
        }
    }
}

/// The balancer's engine in this process: one reactor thread.
struct Engine {
    listen: SocketAddr,
    control: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
    /// Held as `run()` holds them (in its reloader) for the engine's life.
    _mailboxes: Mailboxes,
}

impl Engine {
    /// Quick mode from flags, then the start-up of `src/main.rs` `run()`
    /// without what the data path does not use (health checks, reloads,
    /// signals, admin listener, logging).
    fn start(backend: SocketAddr) -> Engine {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let flags = [
            "--listen",
            &listen.to_string(),
            "--backend",
            &backend.to_string(),
            "--workers",
            "1",
            "--no-access-log",
            "--no-health-check",
        ];
        let Ok(Command::Run {
            source: Source::Quick(config),
            ..
        }) = cli::parse(flags.map(OsString::from))
        else {
            panic!("the quick-mode flags were not accepted");
        };
        config.validate().expect("a valid configuration");

        let open_files = limits::raise_open_files().unwrap_or(1024);
        let shared = Arc::new(Shared::new(Registry::build(&config)));
        let (registry, _) = shared.snapshot();
        let workers = config.global.workers.max(1);
        let bound = listener::bind_all(
            &registry.listeners,
            workers,
            &mut balanciaga4::upgrade::Inherited::default(),
        )
        .expect("listen");
        let listen_sockets = bound.first().map_or(0, Vec::len);
        let max_sessions = limits::sessions_per_reactor(open_files, workers, listen_sockets);
        let control = Arc::new(Control::new());
        let (mailboxes, inboxes) = listener::mailboxes(workers);
        let buffer_size = config.global.buffer_size;
        let reactors =
            reactor::build_all(bound, inboxes, &shared, &control, buffer_size, max_sessions)
                .expect("reactors");
        let threads = reactors
            .into_iter()
            .enumerate()
            .map(|(id, reactor)| {
                thread::Builder::new()
                    .name(format!("reactor-{id}"))
                    .spawn(move || reactor.run())
                    .expect("reactor thread")
            })
            .collect();
        Engine {
            listen,
            control,
            threads,
            _mailboxes: mailboxes,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.control.request_shutdown();
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// `count` times: connect, send a request, read the reply until the
/// backend closes. Allocates nothing.
fn new_connections(target: SocketAddr, count: u64) {
    let request = [CLOSE; MESSAGE];
    let mut reply = [0u8; MESSAGE + 1];
    for _ in 0..count {
        let mut stream = TcpStream::connect(target).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.write_all(&request).expect("request");
        let got = read_until_closed(&mut stream, &mut reply).expect("reply");
        assert_eq!(got, MESSAGE, "reply length");
    }
}

fn read_until_closed(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    loop {
        match stream.read(&mut buf[got..])? {
            0 => return Ok(got),
            n => got += n,
        }
        if got == buf.len() {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

/// A connection that sends a request and waits for its reply, `count`
/// times. Allocates nothing after it is open.
struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    fn open(target: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(target).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        KeepAlive { stream }
    }

    fn round_trips(&mut self, count: u64) {
        let request = [KEEP_ALIVE; MESSAGE];
        let mut reply = [0u8; MESSAGE];
        for _ in 0..count {
            self.stream.write_all(&request).expect("request");
            self.stream.read_exact(&mut reply).expect("reply");
        }
    }
}

/// What `work` allocates in the whole process, closes included.
fn count(trace: bool, work: impl FnOnce()) -> Counts {
    let before = Counts::now();
    TRACING.store(trace, Ordering::SeqCst);
    work();
    thread::sleep(SETTLE);
    TRACING.store(false, Ordering::SeqCst);
    Counts::now().since(before)
}

struct Measured {
    connections: Counts,
    round_trips: Counts,
}

fn measure(target: SocketAddr, trace: bool) -> Measured {
    new_connections(target, WARM_UP_CONNECTIONS);
    let mut conn = KeepAlive::open(target);
    conn.round_trips(WARM_UP_ROUND_TRIPS);
    thread::sleep(SETTLE);
    let connections = count(trace, || new_connections(target, CONNECTIONS));
    let round_trips = count(trace, || conn.round_trips(ROUND_TRIPS));
    Measured {
        connections,
        round_trips,
    }
}

fn main() {
    let traces: usize = std::env::var("ALLOC_TRACE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let backend = Backend::start(4);
    let direct = measure(backend.addr, false);
    let engine = Engine::start(backend.addr);
    TRACES_LEFT.store(traces, Ordering::SeqCst);
    let through = measure(engine.listen, traces > 0);
    TRACES_LEFT.store(0, Ordering::SeqCst);
    drop(engine);

    println!(
        "Heap allocations on the TCP data path (1 worker, access log off, {MESSAGE}-byte requests and replies)\n"
    );
    println!("| per | subject | count | allocations each (total) | reallocations each (total) | bytes each |");
    println!("|---|---|---:|---:|---:|---:|");
    let rows = [
        (
            "new connection",
            CONNECTIONS,
            direct.connections,
            through.connections,
        ),
        (
            "keep-alive round trip",
            ROUND_TRIPS,
            direct.round_trips,
            through.round_trips,
        ),
    ];
    for (per, n, direct, through) in rows {
        let own = Counts {
            allocations: through.allocations.saturating_sub(direct.allocations),
            reallocations: through.reallocations.saturating_sub(direct.reallocations),
            bytes: through.bytes.saturating_sub(direct.bytes),
        };
        for (subject, c) in [
            ("direct (load generator and backend)", direct),
            ("through balanciaga4", through),
            ("balanciaga4 alone (difference)", own),
        ] {
            let each = |v: u64| v as f64 / n as f64;
            println!(
                "| {per} | {subject} | {n} | {:.2} ({}) | {:.2} ({}) | {:.1} |",
                each(c.allocations),
                c.allocations,
                each(c.reallocations),
                c.reallocations,
                each(c.bytes)
            );
        }
    }
    if traces > 0 {
        print_stacks();
    }
}

/// The kept stacks, the same ones counted together, most frequent first,
/// from the caller of the allocator on.
fn print_stacks() {
    let traces = std::mem::take(&mut *TRACES.lock().expect("traces"));
    let mut grouped: HashMap<String, usize> = HashMap::new();
    for trace in &traces {
        let text = trace.to_string();
        // A frame is its numbered line and the `at file:line` lines after it.
        let mut frames: Vec<String> = Vec::new();
        for line in text.lines() {
            match frames.last_mut() {
                Some(frame) if line.trim_start().starts_with("at ") => {
                    frame.push('\n');
                    frame.push_str(line);
                }
                _ => frames.push(line.to_string()),
            }
        }
        let entry = frames
            .iter()
            .rposition(|f| f.contains("__rust_alloc") || f.contains("__rust_realloc"))
            .map_or(0, |i| i + 1);
        let caller = frames[entry.min(frames.len())..]
            .iter()
            .take(STACK_FRAMES)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        *grouped.entry(caller).or_default() += 1;
    }
    let mut grouped: Vec<_> = grouped.into_iter().collect();
    grouped.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    println!(
        "\n{} allocation stacks kept, {} distinct:",
        traces.len(),
        grouped.len()
    );
    for (stack, n) in grouped {
        println!("\n{n} ×\n{stack}");
    }
}
