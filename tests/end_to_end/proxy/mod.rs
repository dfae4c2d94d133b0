//! The data path through the real binary: bytes relayed intact over TCP and
//! UDP, backend selection, backups and failover, routing by server name, faults, timeouts, limits and access
//! control, the PROXY protocol and the access log.

mod access_log;
mod access_log_json;
mod backpressure;
mod backup;
mod balancing;
mod ecmp;
mod failover;
mod faults;
mod fd_exhaustion;
mod idle_connections;
mod limits;
mod limits_acl;
mod policies;
mod proxy_protocol;
mod proxying;
mod routing;
mod timeouts;
mod udp;
mod zero_copy;
