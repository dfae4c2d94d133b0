//! Balanciaga4: a small, fast layer-4 (TCP and UDP) load balancer.
//!
//! The data path, accept → pick → connect → pump → close, lives in
//! `session`, that of UDP datagrams in `udp`; `reactor` runs the event loops that drive it; `registry`
//! (the published snapshot of `pool`s of `backend`s) and `policy` decide
//! where sessions go; `config` and `cli` say what to run.
//! docs/ARCHITECTURE.md explains how the pieces fit.

// Runtime input and I/O errors are handled, never unwrapped: a panic would
// take down every session of the process. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(
    missing_debug_implementations,
    missing_docs,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod access_log;
pub mod acl;
pub mod admin;
pub(crate) mod admission;
pub mod backend;
pub(crate) mod buffer;
pub mod cli;
pub mod client_hello;
pub mod config;
pub mod control;
pub mod health;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;
pub(crate) mod per_ip;
pub mod policy;
pub mod pool;
pub mod preflight;
pub mod privileges;
pub mod proxy_protocol;
pub(crate) mod queue;
pub mod reactor;
pub mod registry;
pub mod reload;
pub(crate) mod route;
pub mod service;
pub(crate) mod session;
pub mod signals;
pub(crate) mod splice;
pub(crate) mod timer;
pub(crate) mod token;
pub mod top;
pub(crate) mod udp;
pub mod upgrade;
