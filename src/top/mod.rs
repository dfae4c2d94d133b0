//! `balanciaga4 top`: a live table of a running balancer's listeners, pools
//! and backends in the terminal, read from its admin listener's `/stats`.
//!
//! Owns its command line, the terminal while it runs (raw mode through
//! termios so one `q` quits, the alternate screen, the cursor) and a
//! thread that fetches `/stats` every interval; `fetch` makes the request
//! and `table` lays the reply out. It touches nothing of a running
//! balancer but that HTTP endpoint. The terminal is restored on every way
//! out: `q`, Ctrl-C, SIGINT/SIGTERM/SIGHUP, an error, and a panic.

mod fetch;
mod table;
mod terminal;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::duration::parse_duration;
use table::Previous;
use terminal::Terminal;

/// How long one fetch may take; less than a second, so that an admin
/// listener that stopped answering shows as an error within one refresh.
const FETCH_TIMEOUT: Duration = Duration::from_millis(900);
/// Width used when stdout is not a terminal and `COLUMNS` says nothing.
const DEFAULT_WIDTH: usize = 160;

/// `balanciaga4 top` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The admin address as given, for messages.
    pub admin: String,
    /// The address it resolved to.
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Print one table without escape sequences and exit.
    pub once: bool,
    /// Time between refreshes.
    pub interval: Duration,
}

/// Parses the arguments after `top`; errors name the flag.
pub fn parse<I: Iterator<Item = std::ffi::OsString>>(args: I) -> Result<Options, String> {
    let mut admin = None;
    let mut token = None;
    let mut once = false;
    let mut interval = Duration::from_secs(1);
    let mut args = args.map(|a| {
        a.into_string()
            .unwrap_or_else(|a| a.to_string_lossy().into_owned())
    });
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("top: {flag} needs a value"))
        };
        match flag.as_str() {
            "--admin" => admin = Some(value()?),
            "--token" => token = Some(value()?).filter(|t: &String| !t.is_empty()),
            "--once" => once = true,
            "--interval" => {
                let v = value()?;
                interval = parse_duration(&v)
                    .ok()
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or_else(|| {
                        format!("top: --interval {v:?}: give a duration of at least 100ms, e.g. 2s")
                    })?;
            }
            other => return Err(format!("top: unknown argument {other:?} (see --help)")),
        }
    }
    let admin = admin
        .ok_or_else(|| "top: --admin ADDR is required, e.g. --admin 127.0.0.1:9090".to_string())?;
    let addr = admin
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("top: --admin {admin:?}: not an address (HOST:PORT)"))?;
    Ok(Options {
        admin,
        addr,
        token,
        once,
        interval,
    })
}

/// Runs `top`: 0 when the operator quits (or `--once` printed), 1 when
/// `--once` could not read `/stats`.
pub fn run(options: &Options) -> ExitCode {
    if options.once {
        return once(options);
    }
    match live(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("balanciaga4 top: {e}");
            ExitCode::from(1)
        }
    }
}

fn once(options: &Options) -> ExitCode {
    match fetch::stats(
        options.addr,
        options.token.as_deref(),
        FETCH_TIMEOUT.max(Duration::from_secs(3)),
    ) {
        Ok(stats) => {
            let width = terminal::width().unwrap_or(DEFAULT_WIDTH);
            let text = table::render(
                &stats,
                &options.admin,
                &mut Previous::default(),
                Instant::now(),
                width,
                false,
            );
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("balanciaga4 top: {e}");
            ExitCode::from(1)
        }
    }
}

/// The interactive loop: redraw on every fetch and on a resize, quit on
/// `q`, Ctrl-C or a signal.
fn live(options: &Options) -> std::io::Result<()> {
    let quit = Arc::new(AtomicBool::new(false));
    let resized = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&quit))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGWINCH, Arc::clone(&resized))?;
    let results = spawn_fetcher(options.clone())?;
    let mut term = Terminal::open()?;
    let mut previous = Previous::default();
    term.draw(&format!(
        "balanciaga4 top: waiting for {} ...\n",
        options.admin
    ))?;
    let mut last = None;
    while !quit.load(Ordering::Relaxed) {
        if term.quit_key(Duration::from_millis(100))? {
            break;
        }
        // A resize redraws the last answer at the new width.
        let mut redraw = resized.swap(false, Ordering::Relaxed);
        while let Ok(result) = results.try_recv() {
            last = Some(result);
            redraw = true;
        }
        if !redraw {
            continue;
        }
        let screen = match &last {
            None => continue,
            Some(Ok(stats)) => {
                let width = terminal::width().unwrap_or(DEFAULT_WIDTH);
                let now = Instant::now();
                let colour = term.colour();
                let table = table::render(stats, &options.admin, &mut previous, now, width, colour);
                format!("{table}\nq quits\n")
            }
            Some(Err(e)) => format!(
                "balanciaga4 top: {e}\nretrying every {:?}; q quits\n",
                options.interval
            ),
        };
        term.draw(&screen)?;
    }
    term.close()
}

/// A thread that fetches `/stats` every interval until the receiver is
/// gone; the interactive loop never waits on the network.
fn spawn_fetcher(
    options: Options,
) -> std::io::Result<mpsc::Receiver<Result<serde_json::Value, String>>> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("top-fetch".into())
        .spawn(move || loop {
            let started = Instant::now();
            let result = fetch::stats(options.addr, options.token.as_deref(), FETCH_TIMEOUT);
            if tx.send(result).is_err() {
                return;
            }
            thread::sleep(options.interval.saturating_sub(started.elapsed()));
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(list: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        list.iter()
            .map(|a| a.into())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn options_parse_and_mistakes_name_the_flag() {
        let o = parse(args(&[
            "--admin",
            "127.0.0.1:9090",
            "--once",
            "--interval=2s",
            "--token",
            "t",
        ]))
        .unwrap();
        assert_eq!(o.addr.to_string(), "127.0.0.1:9090");
        assert!(o.once);
        assert_eq!(o.interval.as_secs(), 2);
        assert_eq!(o.token.as_deref(), Some("t"));
        let e = |list: &[&str]| parse(args(list)).unwrap_err();
        assert!(e(&[]).contains("--admin ADDR is required"));
        assert!(e(&["--admin", "nowhere"]).contains("--admin \"nowhere\""));
        assert!(
            e(&["--admin", "127.0.0.1:1", "--interval", "10ms"]).contains("--interval \"10ms\"")
        );
        assert!(e(&["--admin", "127.0.0.1:1", "--bogus"]).contains("unknown argument \"--bogus\""));
        assert!(e(&["--admin"]).contains("--admin needs a value"));
    }
}
