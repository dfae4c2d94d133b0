//! Process signals.
//!
//! Owns the signal thread (signal-hook): SIGTERM and SIGINT start a graceful
//! shutdown through `Control`; a second one exits at once. SIGHUP is caught
//! so it cannot kill the process; live reload hangs off it.

use std::io;
use std::sync::Arc;
use std::thread;

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::control::Control;

/// `reload` runs on this thread for each SIGHUP.
pub fn spawn(
    control: Arc<Control>,
    mut reload: impl FnMut() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = match signal {
                    SIGTERM => "SIGTERM",
                    SIGINT => "SIGINT",
                    _ => "SIGHUP",
                };
                if signal == SIGHUP {
                    info!("{name}: reloading the configuration");
                    reload();
                } else if control.request_shutdown() {
                    info!("{name}: stopped accepting, draining open sessions");
                } else {
                    warn!("{name} again: exiting now without draining");
                    std::process::exit(1);
                }
            }
        })
}
