//! Building blocks of the metrics endpoint.
//!
//! Owns the Prometheus text format writer and the lock-free latency
//! histogram (`text`), and the 1 s / 10 s / 60 s rates derived from
//! cumulative totals (`rates`). Nothing here reads the registry, opens
//! sockets or starts threads: the code that collects the counters and serves
//! them calls into these pieces, so they can be tested without a balancer.

pub mod rates;
pub mod text;
