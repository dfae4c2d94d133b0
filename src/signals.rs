//! Process signals.
//!
//! Owns the signal thread (signal-hook): SIGTERM and SIGINT start a graceful
//! shutdown through `Control`; a second one exits at once. SIGHUP is caught
//! so it cannot kill the process; live reload hangs off it, applied on the
//! `reload` thread (`reload::spawn_reloads`). SIGUSR2 starts a binary
//! upgrade (`upgrade`), which waits on a thread of its own. SIGUSR1 reopens
//! the log files (`logging::reopen`), for logrotate. Nothing here blocks
//! for long, so a SIGTERM is always answered at once; it touches only
//! `Control` and the three callbacks it is given.

use std::io;
use std::sync::Arc;
use std::thread;

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::control::Control;

/// `reload` is called on this thread for each SIGHUP, `upgrade` for each
/// SIGUSR2; both must return promptly (they hand the waiting to a thread).
/// `reopen` is called for each SIGUSR1; it opens files, nothing slower.
pub fn spawn(
    control: Arc<Control>,
    mut reload: impl FnMut() + Send + 'static,
    mut upgrade: impl FnMut() + Send + 'static,
    mut reopen: impl FnMut() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2, SIGUSR1])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = match signal {
                    SIGTERM => "SIGTERM",
                    SIGINT => "SIGINT",
                    SIGUSR2 => "SIGUSR2",
                    SIGUSR1 => "SIGUSR1",
                    _ => "SIGHUP",
                };
                if signal == SIGHUP {
                    info!("{name}: reloading the configuration");
                    reload();
                } else if signal == SIGUSR1 {
                    reopen();
                } else if signal == SIGUSR2 {
                    info!("{name}: upgrading the binary");
                    upgrade();
                } else if !control.shutdown_requested() {
                    // Said before the request: with no session to drain,
                    // the process may exit before this thread runs again.
                    crate::service::stopping();
                    info!("{name}: stopped accepting, draining open sessions");
                    control.request_shutdown();
                } else {
                    warn!("{name} again: exiting now without draining");
                    std::process::exit(1);
                }
            }
        })
}
