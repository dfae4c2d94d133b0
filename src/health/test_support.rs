//! Test helpers: loopback backends that behave in set ways, a checker on
//! its own thread, single probes and thread CPU time. Every wait is bounded.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::probe::{Failure, Probe, Progress, Spec};
use super::{CheckStats, Checker, HealthStats, Target};
use crate::backend::Backend;
use crate::config::HealthConfig;

/// One check that ended, as the checker saw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Record {
    pub index: usize,
    pub scheduled: Instant,
    pub started: Instant,
    pub ended: Instant,
    /// `None`: no result (local resource shortage).
    pub passed: Option<bool>,
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn backend(addr: SocketAddr) -> Arc<Backend> {
    Arc::new(Backend::new(addr, 1))
}

pub(super) fn health(interval: Duration, rise: u32, fall: u32) -> HealthConfig {
    HealthConfig {
        interval,
        timeout: interval,
        rise,
        fall,
        jitter: 0.0,
        ..HealthConfig::default()
    }
}

pub(super) fn target(pool: &str, backend: &Arc<Backend>, health: HealthConfig) -> Target {
    Target {
        pool: Arc::from(pool),
        backend: Arc::clone(backend),
        health,
        protocol: crate::config::Protocol::Tcp,
    }
}

/// Polls `cond` every millisecond until it holds or `limit` passes.
pub(super) fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(ms(1));
    }
    cond()
}

/// A port bound but not listening: connects to it are refused, and no
/// other test can take it while this is held.
pub(super) fn refusing() -> (socket2::Socket, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet");
    (socket, addr)
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Behave {
    /// Accept and close at once.
    Accept,
    /// Write this at once, then read until the peer closes.
    Reply(&'static [u8]),
    /// Read what the peer sent, then close without answering.
    ReadThenClose,
    /// Accept and hold the connection, never answering.
    Silent,
}

/// Backends on loopback served by one thread, stopped on drop.
pub(super) struct Fake {
    pub(super) addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub(super) fn fake(behaviours: &[Behave]) -> Fake {
    let poll = Poll::new().expect("poll");
    let mut listeners = Vec::new();
    for (i, _) in behaviours.iter().enumerate() {
        let mut l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)
            .expect("register");
        listeners.push(l);
    }
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let behaviours = behaviours.to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || serve(poll, listeners, behaviours, &flag));
    Fake {
        addrs,
        stop,
        handle: Some(handle),
    }
}

pub(super) fn serve(
    mut poll: Poll,
    listeners: Vec<TcpListener>,
    behaviours: Vec<Behave>,
    stop: &AtomicBool,
) {
    let n = listeners.len();
    let mut conns: Vec<Option<(TcpStream, Behave)>> = Vec::new();
    let mut events = Events::with_capacity(256);
    let end = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Acquire) && Instant::now() < end {
        if poll.poll(&mut events, Some(ms(10))).is_err() {
            continue;
        }
        for event in events.iter() {
            let t = event.token().0;
            if t < n {
                while let Ok((mut s, _)) = listeners[t].accept() {
                    let behave = behaviours[t];
                    match behave {
                        Behave::Accept => continue,
                        Behave::Reply(bytes) => {
                            let _ = s.write(bytes);
                        }
                        Behave::ReadThenClose | Behave::Silent => {}
                    }
                    let token = Token(n + conns.len());
                    if !matches!(behave, Behave::Silent) {
                        let _ = poll.registry().register(&mut s, token, Interest::READABLE);
                    }
                    conns.push(Some((s, behave)));
                }
            } else if let Some(slot) = conns.get_mut(t - n) {
                let mut buf = [0u8; 512];
                let close = match slot.as_mut() {
                    Some((s, behave)) => loop {
                        match s.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                break matches!(behave, Behave::ReadThenClose)
                            }
                            Err(_) => break true,
                        }
                    },
                    None => false,
                };
                if close {
                    *slot = None;
                }
            }
        }
    }
}

/// Runs one probe to its end on its own poll, the way the checker does.
pub(super) fn check_once(addr: SocketAddr, health: &HealthConfig) -> Result<(), Failure> {
    check_once_over(addr, crate::config::Protocol::Tcp, health)
}

/// [`check_once`] over `protocol`.
pub(super) fn check_once_over(
    addr: SocketAddr,
    protocol: crate::config::Protocol,
    health: &HealthConfig,
) -> Result<(), Failure> {
    let poll = Poll::new().expect("poll");
    let mut probe = match Probe::start(addr, protocol, poll.registry(), Token(0)) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(Failure::Refused),
        Err(e) => return Err(Failure::Connect(e)),
    };
    let mut poll = poll;
    let mut reply = vec![0; health.expect.as_ref().map_or(0, Vec::len)];
    let spec = Spec {
        send: health.send.as_deref(),
        expect: health.expect.as_deref(),
    };
    let deadline = Instant::now() + health.timeout;
    let mut events = Events::with_capacity(8);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::TimedOut(probe.phase()));
        }
        poll.poll(&mut events, Some(left)).expect("poll");
        if events.is_empty() {
            continue;
        }
        match probe.advance(spec, &mut reply) {
            Progress::Pending => {}
            Progress::Pass => return Ok(()),
            Progress::Fail(f) => return Err(f),
        }
    }
}

pub(super) fn reason(r: Result<(), Failure>) -> String {
    match r {
        Ok(()) => "passed".into(),
        Err(f) => f.to_string(),
    }
}

/// A checker on its own thread, stopped on `finish` or drop.
pub(super) struct Running {
    stop: Arc<AtomicBool>,
    pub(super) stats: Arc<HealthStats>,
    handle: Option<JoinHandle<(Checker, Duration)>>,
}

impl Running {
    pub(super) fn start(
        targets: impl Fn(Option<u64>) -> Option<(u64, Vec<Target>)> + Send + 'static,
    ) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(HealthStats::default());
        let checker =
            Checker::new(Box::new(targets), Arc::clone(&stop), Arc::clone(&stats)).expect("poll");
        let handle = std::thread::spawn(move || {
            let checker = checker.run();
            (checker, thread_cpu())
        });
        Running {
            stop,
            stats,
            handle: Some(handle),
        }
    }

    pub(super) fn fixed(targets: Vec<Target>) -> Running {
        Running::start(move |have| (have != Some(1)).then(|| (1, targets.clone())))
    }

    pub(super) fn stats(&self, pool: &str, addr: SocketAddr) -> Arc<CheckStats> {
        let mut found = None;
        wait_for(ms(500), || {
            found = self.stats.get(pool, addr);
            found.is_some()
        });
        found.expect("the checker lists the backend")
    }

    /// Stops the thread; its records and CPU time.
    pub(super) fn finish(mut self) -> (Vec<Record>, Duration) {
        self.stop.store(true, Ordering::Release);
        let handle = self.handle.take().expect("running");
        let (checker, cpu) = handle.join().expect("checker thread");
        (checker.done, cpu)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// CPU time (user + system) of the calling thread.
pub(super) fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

pub(super) fn n(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
