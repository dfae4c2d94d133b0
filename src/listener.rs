//! Listening sockets.
//!
//! Owns socket creation for listeners: every reactor gets its own socket per
//! listener address, all bound with SO_REUSEPORT so the kernel spreads new
//! connections across reactors without a shared accept lock. `[::]` is bound
//! dual-stack so IPv4 clients reach it too. Binding happens on the main
//! thread before any reactor starts, so a port in use stops start-up with a
//! clear message instead of a half-running balancer; listeners a reload adds
//! are bound on the signal thread and handed to each reactor through its
//! `Inbox`, so a port in use fails that one listener, not a reactor.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::registry::Listener;

/// The kernel caps this at net.core.somaxconn.
const BACKLOG: i32 = 4096;

/// One listening socket owned by one reactor.
#[derive(Debug)]
pub struct Bound {
    pub socket: TcpListener,
    /// The listener it belongs to, looked up by name in each snapshot.
    pub name: Arc<str>,
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
    let mut all: Vec<Vec<Bound>> = (0..reactors).map(|_| Vec::new()).collect();
    for listener in listeners {
        for &addr in &listener.addresses {
            for (mine, bound) in all
                .iter_mut()
                .zip(bind_each(&listener.name, addr, reactors)?)
            {
                mine.push(bound);
            }
        }
    }
    Ok(all)
}

/// One socket on `addr` for each of `reactors` reactors.
pub fn bind_each(
    name: &Arc<str>,
    addr: SocketAddr,
    reactors: usize,
) -> Result<Vec<Bound>, BindError> {
    (0..reactors)
        .map(|_| {
            let socket = bind(addr).map_err(|error| BindError {
                listener: name.to_string(),
                addr,
                error,
            })?;
            Ok(Bound {
                socket,
                name: Arc::clone(name),
                addr,
            })
        })
        .collect()
}

/// Where a reactor receives listening sockets bound after it started.
pub type Inbox = Receiver<Bound>;

/// The sending ends of every reactor's `Inbox`, in reactor order.
#[derive(Debug)]
pub struct Mailboxes(Vec<Sender<Bound>>);

/// One inbox per reactor and the mailboxes that feed them.
pub fn mailboxes(reactors: usize) -> (Mailboxes, Vec<Inbox>) {
    let (senders, inboxes) = (0..reactors).map(|_| mpsc::channel()).unzip();
    (Mailboxes(senders), inboxes)
}

impl Mailboxes {
    pub fn reactors(&self) -> usize {
        self.0.len()
    }

    /// Hands socket `i` of `sockets` to reactor `i`. A reactor that has
    /// stopped drops nothing on the floor: its socket is closed here.
    pub fn deliver(&self, sockets: Vec<Bound>) {
        for (sender, bound) in self.0.iter().zip(sockets) {
            let _ = sender.send(bound);
        }
    }
}
