//! Shared helpers for the integration tests: real backend servers on
//! loopback (TCP, and UDP echo servers in `udp`), client socket helpers,
//! the balancer process itself, a deterministic byte stream with a specified hash (FNV-1a 64), a strict
//! parser of the Prometheus text format, and for the status page a
//! headless browser, a fixture HTTP server and a reader for the DOM the
//! browser prints; TLS certificates, servers, clients and ClientHello
//! bytes for the routing tests (`tls`); a stand-in for systemd's notify
//! socket (`notify`); `skip` for tests that need an outside program.
//!
//! All of it is compiled into the one `end_to_end` test crate, which uses
//! every helper.

pub mod backend;
pub mod balancer;
pub mod browser;
pub mod chaos;
pub mod dom;
pub mod fixture_http;
pub mod holder;
pub mod http;
pub mod load;
pub mod logs;
pub mod net;
pub mod netns;
pub mod notify;
pub mod pattern;
pub mod prometheus;
pub mod proxy;
pub mod skip;
pub mod tls;
pub mod transfer;
pub mod udp;

pub use backend::Backend;
pub use balancer::{AccessLog, Balancer};
pub use logs::{is_transition, log_time, since, transition};
pub use net::*;
pub use pattern::{Fnv1a, Pattern};
