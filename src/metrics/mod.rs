//! What the balancer counts, and the building blocks to show it.
//!
//! Owns the counters the data path updates (`counters`), the list of
//! recent state changes (`events`), the Prometheus text format writer and
//! the lock-free latency histogram (`text`), the count of log lines
//! dropped (`logs`), and the 1 s / 10 s / 60 s rates derived from
//! cumulative totals (`rates`), and five minutes of them in 5 s buckets
//! for charts (`history`). Nothing here opens
//! sockets or starts threads; the admin listener reads and serves it.

pub mod counters;
pub(crate) mod events;
pub(crate) mod history;
pub mod logs;
pub(crate) mod rates;
pub mod text;
