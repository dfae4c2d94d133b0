//! The admin listener: a small HTTP/1.1 server on its own thread, for the
//! status page, metrics and runtime actions.
//!
//! `server` owns the socket and the `admin` thread, and `http` the framing
//! of requests and responses; neither knows what it serves: each complete
//! request goes to a [`Handler`], whose [`Response`] is written back. `routes` decides what each
//! request gets; `view` reads the counters and keeps rates; `render` writes
//! them as Prometheus text and JSON. A `stats` thread records totals once
//! a second for the rates. Nothing here runs on a reactor thread.

pub mod http;
pub(crate) mod query;
pub(crate) mod render;
pub(crate) mod routes;
pub mod server;
pub(crate) mod view;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use http::{Handler, Request, Response};
pub use server::{AdminError, AdminServer, ServerOptions};

use crate::config::AdminConfig;
use crate::control::Control;
use crate::health::HealthStats;
use crate::registry::Shared;
use routes::Routes;
use view::{Sampler, View};

/// Starts the admin listener, on `inherited` if the previous process
/// handed it over, and the thread that samples rates.
pub fn start(
    config: &AdminConfig,
    inherited: Option<OwnedFd>,
    shared: Arc<Shared>,
    health: Arc<HealthStats>,
    control: Arc<Control>,
) -> Result<AdminServer, AdminError> {
    let sampler = Arc::new(Mutex::new(Sampler::default()));
    let routes = Routes {
        shared: Arc::clone(&shared),
        health: Arc::clone(&health),
        sampler: Arc::clone(&sampler),
        token: config.token.clone(),
    };
    let handler: Handler = Arc::new(move |r: &Request<'_>| routes.handle(r));
    let server = match inherited {
        Some(fd) => AdminServer::adopt(fd, handler)?,
        None => AdminServer::start(config.bind, handler)?,
    };
    thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            while !control.shutdown_requested() {
                let view = View::read(&shared, &health);
                sampler.lock().record(Instant::now(), &view);
                thread::sleep(Duration::from_secs(1));
            }
        })
        .map_err(AdminError::Start)?;
    Ok(server)
}
