//! Draining and disabling backends, driven in-process through the library
//! (there is no admin API yet): the engine runs as `main` runs it (registry,
//! listeners, reactors on threads) with health checks off, so only the
//! test's `set_admin` calls change backend states. Clients and backends are
//! real loopback sockets; access lines go to an (unlinked) temp file.

use crate::support;

use std::fs::File;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use balanciaga4::backend::{Admin, Backend as EngineBackend, State};
use balanciaga4::config::Config;
use balanciaga4::control::Control;
use balanciaga4::listener;
use balanciaga4::reactor::Reactor;
use balanciaga4::registry::{Registry, Shared};

use support::*;

// ---- access log capture -------------------------------------------------

/// The access log every engine of this test binary writes to (the
/// destination is process-wide, as in `main`): a temp file, unlinked at once
/// so that nothing is left behind, read through a second handle.
fn access_log() -> &'static File {
    static READER: OnceLock<File> = OnceLock::new();
    READER.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "balanciaga4-admin-states-{}.log",
            std::process::id()
        ));
        let file = balanciaga4::logging::open_access_file(&path).expect("open the access log");
        let reader = File::open(&path).expect("open the access log for reading");
        std::fs::remove_file(&path).expect("unlink the access log");
        assert!(balanciaga4::logging::send_access_lines_to(file, &path));
        reader
    })
}

fn access_log_text() -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = access_log()
            .read_at(&mut buf, text.len() as u64)
            .expect("read the access log");
        if n == 0 {
            return String::from_utf8_lossy(&text).into_owned();
        }
        text.extend_from_slice(&buf[..n]);
    }
}

/// Where the access log ends now: lines of connections opened later are
/// past this point.
fn access_log_end() -> usize {
    access_log_text().len()
}

/// The access line of the connection from `client` to `listener`, written
/// after `from` (an `access_log_end`), parsed; panics after `within`.
///
/// Every engine of the test binary writes to the one log, and a client port
/// is unique only among connections open at the same time, to the same
/// address: a line from another test's client (another listener) or from
/// an earlier connection that had the same port must not be taken for it.
fn access_log_for(listener: &str, client: SocketAddr, from: usize, within: Duration) -> AccessLog {
    let want = format!("client={client} listener={listener} ");
    let deadline = Instant::now() + within;
    loop {
        let text = access_log_text();
        let new = text.get(from..).unwrap_or_default();
        if let Some(line) = new.lines().find(|l| l.contains(&want)) {
            return AccessLog::parse(line).unwrap_or_else(|| panic!("unparsable: {line}"));
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {client} within {within:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

// ---- the engine, in-process --------------------------------------------

struct Engine {
    shared: Arc<Shared>,
    control: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
    listen: SocketAddr,
    /// The listener's name, unique to this engine (`admin-PORT`).
    listener: String,
}

impl Engine {
    /// One pool of `backends` (round robin, checks off, `when_all_down`)
    /// behind one listener, on two reactors, started the way `main`'s `run`
    /// starts them.
    fn start(backends: &[SocketAddr], when_all_down: &str) -> Engine {
        Engine::with_policy(backends, when_all_down, "round-robin")
    }

    fn with_policy(backends: &[SocketAddr], when_all_down: &str, policy: &str) -> Engine {
        access_log();
        let listen = free_addr();
        let name = format!("admin-{}", listen.port());
        let list: Vec<String> = backends
            .iter()
            .map(|a| format!("(address: \"{a}\")"))
            .collect();
        let ron = format!(
            r#"(
    global: (workers: 2, retries: 3),
    timeouts: (connect: "1s", drain: "1s"),
    listeners: [(name: "{name}", bind: "{listen}", pool: "p")],
    pools: [(name: "p", policy: "{policy}", backends: [{}], health: (enabled: false, when_all_down: "{when_all_down}"))],
)"#,
            list.join(", ")
        );
        let config = Config::parse(&ron, "test.ron").unwrap_or_else(|e| panic!("{e:?}"));
        let shared = Arc::new(Shared::new(Registry::build(&config)));
        let (registry, _) = shared.snapshot();
        let workers = config.global.workers.max(1);
        let bound = listener::bind_all(
            &registry.listeners,
            workers,
            &mut balanciaga4::upgrade::Inherited::default(),
        )
        .expect("bind");
        let control = Arc::new(Control::new());
        let (_mailboxes, inboxes) = listener::mailboxes(workers);
        let reactors: Vec<Reactor> = bound
            .into_iter()
            .zip(inboxes)
            .enumerate()
            .map(|(id, (sockets, inbox))| {
                Reactor::new(
                    id,
                    sockets,
                    inbox,
                    Arc::clone(&shared),
                    Arc::clone(&control),
                    config.global.buffer_size,
                    1000,
                )
                .expect("reactor")
            })
            .collect();
        let threads = reactors
            .into_iter()
            .enumerate()
            .map(|(id, r)| {
                thread::Builder::new()
                    .name(format!("reactor-{id}"))
                    .spawn(move || r.run())
                    .unwrap()
            })
            .collect();
        Engine {
            shared,
            control,
            threads,
            listen,
            listener: name,
        }
    }

    fn backend(&self, i: usize) -> Arc<EngineBackend> {
        Arc::clone(&self.shared.snapshot().0.pools[0].backends[i])
    }

    /// Clients the pool closed because no backend could take them.
    fn no_backend(&self) -> u64 {
        self.shared.snapshot().0.pools[0]
            .no_backend
            .load(std::sync::atomic::Ordering::SeqCst)
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
            } else if !thread::panicking() {
                panic!("a reactor did not stop within 5 s of shutdown");
            }
        }
    }
}

// ---- backends and clients ----------------------------------------------

/// Greets with `"{name}\n"`, then echoes until EOF.
fn named_echo(name: &str) -> Backend {
    let line = format!("{name}\n");
    Backend::spawn(move |mut s: TcpStream| {
        if s.write_all(line.as_bytes()).is_ok() {
            support::backend::echo_handler(s);
        }
    })
}

/// A client session: connected, greeted, still open.
struct Session {
    stream: TcpStream,
    client: SocketAddr,
    listener: String,
    /// The end of the access log before the session was opened.
    log_from: usize,
    name: String,
    sent: usize,
}

impl Session {
    fn open(engine: &Engine) -> Session {
        let log_from = access_log_end();
        let mut stream = connect(engine.listen);
        let client = stream.local_addr().unwrap();
        let name = read_line(&mut stream, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("{client}: no greeting: {e}"))
            .trim_end()
            .to_string();
        Session {
            stream,
            client,
            listener: engine.listener.clone(),
            log_from,
            name,
            sent: 0,
        }
    }

    /// One round trip through the session.
    fn echo(&mut self, what: &str) {
        let msg = format!("{what}\n");
        self.stream.write_all(msg.as_bytes()).unwrap();
        let got = read_line(&mut self.stream, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("{}: echo of {what:?}: {e}", self.client));
        assert_eq!(got, msg, "{}", self.client);
        self.sent += msg.len();
    }

    /// Half-close, read to EOF, and return the access line: a session
    /// that ends normally.
    fn finish(mut self) -> AccessLog {
        self.stream.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_eof(&mut self.stream, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("{}: no EOF: {e}", self.client));
        assert!(rest.is_empty(), "unexpected bytes {rest:?}");
        drop(self.stream);
        access_log_for(
            &self.listener,
            self.client,
            self.log_from,
            Duration::from_secs(5),
        )
    }
}

/// Names of the backends that greet `n` new sessions (each closed at once).
fn who_answers(engine: &Engine, n: usize) -> Vec<String> {
    (0..n).map(|_| Session::open(engine).name).collect()
}

fn index_of(name: &str) -> usize {
    match name {
        "a" => 0,
        "b" => 1,
        other => panic!("unknown backend {other:?}"),
    }
}

/// Drain or disable (per `admin`) the backend holding a live session: the
/// session carries on and ends normally, new sessions avoid the backend,
/// and re-enabling puts it back in rotation.
fn open_session_survives_and_new_sessions_avoid(admin: Admin, state: State) {
    let a = named_echo("a");
    let b = named_echo("b");
    let engine = Engine::start(&[a.addr(), b.addr()], "fail-fast");

    let mut long = Session::open(&engine);
    long.echo("before");
    let held = index_of(&long.name);
    let other = 1 - held;
    let backend = engine.backend(held);
    assert_eq!(backend.active(), 1, "the long session is counted");

    backend.set_admin(admin);
    assert_eq!(backend.state(), state);
    let names = who_answers(&engine, 6);
    let other_name = ["a", "b"][other];
    assert!(
        names.iter().all(|n| n == other_name),
        "new sessions reached the {} backend {}: {names:?}",
        state.as_str(),
        long.name
    );
    // The open session keeps working, and is still the only one there.
    long.echo("while");
    long.echo(&"x".repeat(10_000));
    assert_eq!(backend.active(), 1);

    let name = long.name.clone();
    let sent = long.sent;
    let log = long.finish();
    assert_eq!(log.end, "done", "{}", log.line);
    assert_eq!(log.backend, [a.addr(), b.addr()][held].to_string());
    assert_eq!(
        (log.bytes_in, log.bytes_out),
        (sent as u64, (sent + name.len() + 1) as u64),
        "{}",
        log.line
    );
    assert!(
        wait_until(Duration::from_secs(2), || backend.active() == 0),
        "the {} backend still counts {} sessions",
        state.as_str(),
        backend.active()
    );

    backend.set_admin(Admin::Enabled);
    assert_eq!(backend.state(), State::Up);
    let names = who_answers(&engine, 4);
    assert!(
        names.iter().filter(|n| **n == name).count() >= 2,
        "re-enabled backend {name} back in rotation: {names:?}"
    );
}

#[test]
fn drained_backend_keeps_its_open_session_and_gets_no_new_ones_until_enabled() {
    open_session_survives_and_new_sessions_avoid(Admin::Drain, State::Drain);
}

#[test]
fn disabled_backend_keeps_its_open_session_and_gets_no_new_ones_until_enabled() {
    open_session_survives_and_new_sessions_avoid(Admin::Disabled, State::Disabled);
}

#[test]
fn all_backends_drained_closes_new_clients_at_once_while_the_open_session_works() {
    all_drained("fail-fast");
}

#[test]
fn all_backends_drained_closes_new_clients_even_in_a_fail_open_pool() {
    // fail-open falls back on down backends, never on drained ones.
    all_drained("fail-open");
}

fn all_drained(when_all_down: &str) {
    let a = named_echo("a");
    let b = named_echo("b");
    let engine = Engine::start(&[a.addr(), b.addr()], when_all_down);
    let mut long = Session::open(&engine);
    long.echo("before");

    engine.backend(0).set_admin(Admin::Drain);
    engine.backend(1).set_admin(Admin::Drain);
    let refused_before = engine.no_backend();
    for _ in 0..3 {
        let log_from = access_log_end();
        let mut c = connect(engine.listen);
        let client = c.local_addr().unwrap();
        let (_, elapsed, bytes) = wait_closed(&mut c, Duration::from_secs(2))
            .unwrap_or_else(|n| panic!("client still open after 2 s ({n} bytes)"));
        assert_eq!(bytes, 0, "a drained backend greeted a new client");
        assert!(
            elapsed < Duration::from_millis(500),
            "closed after {elapsed:?}"
        );
        let log = access_log_for(&engine.listener, client, log_from, Duration::from_secs(5));
        assert_eq!(
            (log.end.as_str(), log.backend.as_str(), log.attempts),
            ("no-backend", "-", 0),
            "{}",
            log.line
        );
        long.echo("meanwhile");
    }
    assert_eq!(engine.no_backend() - refused_before, 3);
    // Draining is not a health failure: health stays up.
    assert!(engine.backend(0).is_up() && engine.backend(1).is_up());

    let log = long.finish();
    assert_eq!(log.end, "done", "{}", log.line);

    engine.backend(1).set_admin(Admin::Enabled);
    assert_eq!(who_answers(&engine, 3), ["b", "b", "b"]);
}

#[test]
fn drained_backend_gets_no_new_sessions_under_every_policy() {
    // Clients from 30 loopback addresses, so source-hash spreads them.
    let sources: Vec<std::net::IpAddr> = (0..30u8)
        .map(|i| std::net::IpAddr::from([127, 0, 0, 10 + i]))
        .collect();
    let greet = |listen: SocketAddr, source: std::net::IpAddr| {
        let mut s = connect_from(source, listen);
        read_line(&mut s, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("from {source}: {e}"))
            .trim_end()
            .to_string()
    };
    for policy in [
        "round-robin",
        "weighted-round-robin",
        "least-connections",
        "power-of-two",
        "random",
        "source-hash",
    ] {
        let backends = [named_echo("a"), named_echo("b"), named_echo("c")];
        let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
        let engine = Engine::with_policy(&addrs, "fail-fast", policy);
        let before: Vec<String> = sources.iter().map(|&ip| greet(engine.listen, ip)).collect();
        assert!(
            before.iter().any(|n| n == "b"),
            "{policy}: b gets no clients even when enabled: {before:?}"
        );
        engine.backend(1).set_admin(Admin::Drain);
        let drained: Vec<String> = sources.iter().map(|&ip| greet(engine.listen, ip)).collect();
        assert!(
            drained.iter().all(|n| n != "b"),
            "{policy}: new sessions reached the drained backend: {drained:?}"
        );
        if policy == "source-hash" {
            // Only the drained backend's clients move.
            for (was, now) in before.iter().zip(&drained) {
                assert!(
                    was == "b" || was == now,
                    "{policy}: {before:?} -> {drained:?}"
                );
            }
        }
        engine.backend(1).set_admin(Admin::Enabled);
        let after: Vec<String> = sources.iter().map(|&ip| greet(engine.listen, ip)).collect();
        assert!(
            after.iter().any(|n| n == "b"),
            "{policy}: the re-enabled backend gets no clients: {after:?}"
        );
        if policy == "source-hash" {
            assert_eq!(after, before, "{policy}: clients return to their backend");
        }
    }
}
