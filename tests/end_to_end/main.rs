//! The balancer end to end: the real binary (and, for backend admin states,
//! the engine in-process) between real clients and backends on loopback.
//!
//! One test crate, so that `cargo test` compiles the shared helpers once and
//! links one binary instead of one per topic: `proxy` holds the data path,
//! `control` the operation of a running balancer. Each module below them is
//! the tests of one topic; filter with its path, e.g.
//! `cargo test --test end_to_end proxy::policies::`.

mod control;
mod proxy;
#[path = "../support/mod.rs"]
mod support;
