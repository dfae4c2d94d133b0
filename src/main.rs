//! The `balanciaga4` command: parse arguments, validate the configuration,
//! then start one reactor thread per worker and wait for them to drain.

// Runtime input and I/O errors are handled, never unwrapped: a panic would
// take down every session of the process. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use log::{error, info, warn};

use balanciaga4::cli::{self, Command, Source, USAGE};
use balanciaga4::config::{duration::format_duration, Config, Protocol};
use balanciaga4::control::Control;
use balanciaga4::health::HealthStats;
use balanciaga4::preflight;
use balanciaga4::privileges::{self, Dropped};
use balanciaga4::reactor;
use balanciaga4::registry::{Registry, Shared};
use balanciaga4::reload::{self, Reloader};
use balanciaga4::upgrade::{Inherited, Upgrader};
use balanciaga4::{access_log, admin, health, limits, listener, logging, service, signals};

/// How long start-up waits for every worker's first loop turn before
/// telling systemd it is ready.
const STARTED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("balanciaga4: {e}");
            return ExitCode::from(2);
        }
    };
    let (source, check, dump) = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("balanciaga4 {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run { source, check } => (source, check, false),
        Command::DumpConfig { source } => (source, true, true),
        Command::Top(options) => return balanciaga4::top::run(&options),
    };
    let (config, origin, path) = match source {
        Source::File(path) => (Config::load(&path), path.display().to_string(), Some(path)),
        Source::Quick(config) => (
            config.validate().map(|()| *config),
            "command line".into(),
            None,
        ),
    };
    // Validation is pure; what the file asks of this host is checked next.
    let host_origin = path.is_some().then_some(origin.as_str());
    let config = config.and_then(|c| preflight::check(&c, host_origin).map(|()| c));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if dump {
        return match config.dump() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{origin}: {e}");
                ExitCode::from(1)
            }
        };
    }
    if check {
        println!("{origin}: ok");
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &config.global.access_log_file {
        // The host checks opened it already; this fails only if that changed since.
        match logging::open_access_file(path) {
            Ok(file) => {
                logging::send_access_lines_to(file, path);
            }
            Err(e) => {
                eprintln!(
                    "{origin}: global.access_log_file: cannot open {}: {e}",
                    path.display()
                );
                return ExitCode::from(1);
            }
        }
    }
    access_log::set_format(config.global.access_log_format);
    if let Some(target) = &config.global.syslog {
        if let Err(e) = logging::syslog::start(target) {
            eprintln!("{origin}: global.syslog: cannot start: {e}");
            return ExitCode::from(1);
        }
    }
    logging::init(config.global.log_level);
    match run(&config, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(config: &Config, path: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    // Before anything binds: sockets a previous process handed over are
    // adopted instead of bound. The binary's path is read now, before an
    // upgrade could replace the file.
    let mut inherited = Inherited::from_env()?;
    let control = Arc::new(Control::new());
    let upgrader = Arc::new(Upgrader::new(Arc::clone(&control))?);
    let open_files = limits::raise_open_files().unwrap_or_else(|e| {
        warn!("cannot raise the open file limit: {e}");
        1024
    });
    let shared = Arc::new(Shared::new(Registry::build(config)));
    let (registry, _) = shared.snapshot();
    log_summary(config);
    let workers = config.global.workers.max(1);
    let bound = listener::bind_all(&registry.listeners, workers, &mut inherited)?;
    // Inherited sockets may leave one worker with more than the others.
    let listen_sockets = bound.iter().map(Vec::len).max().unwrap_or(0);
    let max_sessions = limits::sessions_per_reactor(open_files, workers, listen_sockets);
    info!(
        "open file limit {open_files}: at most {} sessions ({max_sessions} per worker)",
        max_sessions * workers
    );
    let allowed = limits::configured_sessions(config);
    if let Some(warning) = limits::shortfall(open_files, max_sessions * workers, allowed) {
        warn!("{warning}");
    }
    let checks = Arc::new(HealthStats::default());
    // Bound before the privileges go: it may be on a port below 1024.
    let admin = match &config.admin {
        Some(admin) => {
            let server = admin::start(
                admin,
                inherited.take_admin(admin.bind),
                Arc::clone(&shared),
                Arc::clone(&checks),
                Arc::clone(&control),
            )?;
            info!(
                "admin listener on http://{}/ (metrics at /metrics, stats at /stats)",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    // Once the new process serves the admin socket, this one lets go.
    let admin = Arc::new(parking_lot::Mutex::new(admin));
    {
        let admin = Arc::clone(&admin);
        upgrader.on_handover(move || drop(admin.lock().take()));
    }
    drop_privileges(config)?;
    let (mailboxes, inboxes) = listener::mailboxes(workers);
    let buffer_size = config.global.buffer_size;
    let reactors =
        reactor::build_all(bound, inboxes, &shared, &control, buffer_size, max_sessions)?;
    let reloader = Arc::new(Reloader::new(
        path,
        config.clone(),
        Arc::clone(&shared),
        Arc::clone(&control),
        mailboxes,
    ));
    reload::spawn_resolver(Arc::clone(&reloader))?;
    let reloads = reload::spawn_reloads(reloader)?;
    signals::spawn(
        Arc::clone(&control),
        move || reloads.request(),
        move || upgrader.start(),
        logging::reopen,
    )?;
    let stop_checks = Arc::new(AtomicBool::new(false));
    health::spawn_with_stats(
        health_targets(Arc::clone(&shared)),
        Arc::clone(&stop_checks),
        checks,
        control.heartbeats().add("health".into()),
    )?;
    let mut threads = Vec::with_capacity(workers);
    for (id, reactor) in reactors.into_iter().enumerate() {
        let handle = thread::Builder::new()
            .name(format!("reactor-{id}"))
            .spawn(move || reactor.run())?;
        threads.push(handle);
    }
    // Every reactor has turned its loop once: its listeners accept.
    if !control.heartbeats().wait_started(STARTED_WITHIN) {
        warn!("a worker has not started within {STARTED_WITHIN:?}; saying ready anyway");
    }
    let status = format!(
        "serving {} listeners, {} pools, {workers} workers",
        registry.listeners.len(),
        registry.pools.len()
    );
    info!("ready: {status}");
    // A binary upgrade's new process is not the main one until the old
    // one says so (MAINPID=); the service is ready all along.
    if !inherited.confirm() {
        service::ready(&status);
    }
    if let Some(period) = service::watchdog::period_from_env() {
        let wake = Arc::clone(&control);
        service::watchdog::spawn(period, Arc::clone(control.heartbeats()), move || {
            wake.wake_all()
        })?;
    }
    for handle in threads {
        if handle.join().is_err() {
            error!("a reactor thread panicked");
        }
    }
    stop_checks.store(true, Ordering::Relaxed);
    info!("all sessions closed, exiting");
    drop(admin.lock().take());
    Ok(())
}

/// Switches to `global.user` and `global.group` once every socket is bound
/// and the access log is open; an error stops the start. Without them, a
/// root process says that it keeps running as root.
fn drop_privileges(config: &Config) -> Result<(), String> {
    let Some(user) = &config.global.user else {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            info!("running as root; set global.user to drop privileges after binding");
        }
        return Ok(());
    };
    let who = privileges::resolve(user, config.global.group.as_deref())
        .map_err(|(field, e)| format!("{field}: {e}"))?;
    if let Some(path) = &config.global.access_log_file {
        // Reloads check the file again, by then as `who`: a file the
        // balancer created as root is handed over. Devices are left alone.
        let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
        // SAFETY: geteuid has no preconditions.
        if regular && unsafe { libc::geteuid() } == 0 && who.uid != 0 {
            if let Err(e) = std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid)) {
                warn!(
                    "access log {}: cannot hand it to {who}: {e}",
                    path.display()
                );
            }
        }
    }
    let how = privileges::drop_to(&who).map_err(|e| format!("global.user: {e}"))?;
    match how {
        Dropped::Switched => info!("running as {who}"),
        Dropped::AlreadyThere => info!("running as {who} (started as it)"),
    }
    Ok(())
}

/// What the health thread checks: every backend of every pool of the
/// current snapshot, read without holding the registry lock afterwards;
/// nothing is built while the epoch the checker has is still current.
fn health_targets(
    shared: Arc<Shared>,
) -> impl Fn(Option<u64>) -> Option<(u64, Vec<health::Target>)> + Send {
    move |have| {
        if have == Some(shared.epoch()) {
            return None;
        }
        let (registry, epoch) = shared.snapshot();
        let targets = registry
            .pools
            .iter()
            .flat_map(|pool| {
                pool.backends.iter().map(|backend| {
                    health::Target::new(
                        Arc::clone(&pool.name),
                        Arc::clone(backend),
                        pool.health.clone(),
                        pool.protocol,
                        pool.send_proxy,
                    )
                })
            })
            .collect();
        Some((epoch, targets))
    }
}

fn log_summary(config: &Config) {
    for l in &config.listeners {
        let addrs: Vec<String> = l.addresses.iter().map(|a| a.to_string()).collect();
        let udp = match l.protocol {
            Protocol::Tcp => String::new(),
            Protocol::Udp => format!(
                " (udp: idle timeout {}, responses {}, requests {}, key {}, max flows {})",
                format_duration(l.udp.idle_timeout),
                l.udp.responses,
                l.udp.requests,
                l.udp.key,
                l.udp.max_flows.unwrap_or_else(limits::default_max_flows)
            ),
        };
        info!(
            "listener {} on {}{udp} -> pool {}",
            l.name,
            addrs.join(", "),
            l.pool
        );
    }
    for p in &config.pools {
        let backends: Vec<String> = p
            .backends
            .iter()
            .map(|b| {
                let backup = if b.backup { ", backup" } else { "" };
                match &b.host {
                    Some(host) => {
                        format!("{host} = {:?} (weight {}{backup})", b.addresses, b.weight)
                    }
                    None => format!("{} (weight {}{backup})", b.label(), b.weight),
                }
            })
            .collect();
        info!("pool {} ({}): {}", p.name, p.policy, backends.join(", "));
        if config.pool_protocol(&p.name) == Protocol::Udp
            && p.health.enabled
            && p.health.send.is_none()
        {
            info!(
                "pool {}: UDP backends are checked only with health.send; no checks, no passive detection",
                p.name
            );
        }
    }
    if let Some(path) = &config.global.access_log_file {
        info!("access log: appending to {}", path.display());
    }
    if let Some(s) = &config.global.syslog {
        info!(
            "syslog: {} logs to {} ({}, facility {}, tag {})",
            s.logs.name(),
            s.target,
            s.format.name(),
            s.facility,
            s.tag
        );
    }
    let t = &config.timeouts;
    info!(
        "{} workers, {} byte buffers, timeouts connect {} idle {} drain {}, {} retries",
        config.global.workers,
        config.global.buffer_size,
        format_duration(t.connect),
        format_duration(t.idle),
        format_duration(t.drain),
        config.global.retries
    );
}
