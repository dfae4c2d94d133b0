//! Listening sockets.
//!
//! Owns socket creation for listeners: every reactor gets its own socket per
//! listener address, all bound with SO_REUSEPORT so the kernel spreads new
//! connections across reactors without a shared accept lock. `[::]` is bound
//! dual-stack so IPv4 clients reach it too. Binding happens on the main
//! thread before any reactor starts, so a port in use stops start-up with a
//! clear message instead of a half-running balancer.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::registry::Listener;

/// The kernel caps this at net.core.somaxconn.
const BACKLOG: i32 = 4096;

/// One listening socket owned by one reactor.
#[derive(Debug)]
pub struct Bound {
    pub socket: TcpListener,
    /// Index into the registry's listeners.
    pub listener: usize,
    pub addr: SocketAddr,
}

#[derive(Debug)]
pub struct BindError {
    pub listener: String,
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listener {}: cannot listen on {}: {}",
            self.listener, self.addr, self.error
        )
    }
}

impl std::error::Error for BindError {}

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux, BSDs),
    // which saves a system call per client.
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds every address of every listener once per reactor; the result holds
/// one list of sockets per reactor.
pub fn bind_all(listeners: &[Listener], reactors: usize) -> Result<Vec<Vec<Bound>>, BindError> {
    let mut all = Vec::with_capacity(reactors);
    for _ in 0..reactors {
        let mut mine = Vec::new();
        for (index, listener) in listeners.iter().enumerate() {
            for &addr in &listener.addresses {
                let socket = bind(addr).map_err(|error| BindError {
                    listener: listener.name.to_string(),
                    addr,
                    error,
                })?;
                mine.push(Bound {
                    socket,
                    listener: index,
                    addr,
                });
            }
        }
        all.push(mine);
    }
    Ok(all)
}
