//! Listening sockets, TCP and UDP.
//!
//! Owns socket creation for listeners: every reactor gets its own socket per
//! listener address, all bound with SO_REUSEPORT so the kernel spreads new
//! connections (TCP) or client flows (UDP: by a hash of the client's address
//! and port, so one client keeps reaching the same reactor) across reactors
//! without a shared accept lock. `[::]` is bound
//! dual-stack so IPv4 clients reach it too. Binding happens on the main
//! thread before any reactor starts, so a port in use stops start-up with a
//! clear message instead of a half-running balancer; listeners a reload adds
//! are bound on the signal thread and handed to each reactor through its
//! `Inbox`, so a port in use fails that one listener, not a reactor. After
//! `global.user` has dropped root, a reload cannot bind a port below 1024
//! (without CAP_NET_BIND_SERVICE): that listener fails with a hint.
//! After a binary upgrade, start-up adopts the sockets the previous process
//! handed over (`upgrade::Inherited`) before binding any that are missing;
//! every socket is listed for the next upgrade while a `Bound` holds it.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mio::net::{TcpListener, UdpSocket};
use mio::unix::SourceFd;
use socket2::{Domain, Socket, Type};

use crate::config::Protocol;
use crate::registry::Listener;
use crate::upgrade::{Inherited, Kind, Listing};

/// The kernel caps this at net.core.somaxconn.
const BACKLOG: i32 = 4096;
/// Receive buffer asked for on UDP listening sockets, so a burst of
/// datagrams waits in the kernel instead of being dropped while the
/// reactor is busy (the kernel caps it at net.core.rmem_max).
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A listening socket of either kind.
#[derive(Debug)]
pub enum ListenSocket {
    /// Listening, with TCP_NODELAY set for the sockets it accepts.
    Tcp(TcpListener),
    /// Shared with the listener's flows, which send replies through it.
    Udp(Arc<UdpSocket>),
}

impl ListenSocket {
    /// The listener protocol this socket serves.
    pub fn protocol(&self) -> Protocol {
        match self {
            ListenSocket::Tcp(_) => Protocol::Tcp,
            ListenSocket::Udp(_) => Protocol::Udp,
        }
    }

    /// Registers the socket for readable events under `token`.
    pub fn register(&mut self, poll: &mio::Registry, token: mio::Token) -> io::Result<()> {
        let readable = mio::Interest::READABLE;
        match self {
            ListenSocket::Tcp(l) => poll.register(l, token, readable),
            // Shared, so registered by descriptor; flows only send on it.
            ListenSocket::Udp(u) => poll.register(&mut SourceFd(&u.as_raw_fd()), token, readable),
        }
    }

    /// The descriptor, still owned by the socket: what the upgrade listing
    /// hands to the next process.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            ListenSocket::Tcp(l) => l.as_raw_fd(),
            ListenSocket::Udp(u) => u.as_raw_fd(),
        }
    }

    /// A socket handed over by the previous process, already bound (and
    /// listening, for TCP).
    pub fn adopt(fd: OwnedFd, protocol: Protocol) -> io::Result<ListenSocket> {
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(match protocol {
            Protocol::Tcp => ListenSocket::Tcp(TcpListener::from_std(socket.into())),
            Protocol::Udp => ListenSocket::Udp(Arc::new(UdpSocket::from_std(socket.into()))),
        })
    }

    /// Stops its events on `poll`, as when the reactor stops accepting;
    /// the socket stays open until dropped.
    pub fn deregister(&mut self, poll: &mio::Registry) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => poll.deregister(l),
            ListenSocket::Udp(u) => poll.deregister(&mut SourceFd(&u.as_raw_fd())),
        }
    }
}

/// One listening socket owned by one reactor.
#[derive(Debug)]
pub struct Bound {
    /// Declared first so it is dropped, and the socket off the upgrade
    /// list, before the socket closes.
    _listing: Listing,
    /// Non-blocking, bound with SO_REUSEPORT next to the other reactors'
    /// sockets on the same address.
    pub socket: ListenSocket,
    /// The listener it belongs to, looked up by name in each snapshot.
    pub name: Arc<str>,
    /// The address it is bound to: one of its listener's `addresses`.
    pub addr: SocketAddr,
}

/// A listener address that could not be bound or adopted; its message
/// names the listener and, for low ports, hints at privileges.
#[derive(Debug)]
pub struct BindError {
    /// Name of the listener the address belongs to.
    pub listener: String,
    /// The address that failed.
    pub addr: SocketAddr,
    /// `" (udp)"` for a UDP listener, empty for TCP.
    pub protocol_suffix: &'static str,
    /// What socket, bind or listen said (in use, permission denied...).
    pub error: io::Error,
}

impl Bound {
    /// Wraps a bound `socket` of listener `name` and lists it for the next
    /// binary upgrade for as long as it lives.
    pub fn new(socket: ListenSocket, name: Arc<str>, addr: SocketAddr) -> Bound {
        Bound {
            _listing: Listing::new(Kind::of(socket.protocol()), addr, socket.raw_fd()),
            socket,
            name,
            addr,
        }
    }
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listener {}: cannot listen on {}{}: {}",
            self.listener, self.addr, self.protocol_suffix, self.error
        )?;
        if self.error.kind() == io::ErrorKind::PermissionDenied && self.addr.port() < 1024 {
            // After global.user dropped root, or started without it.
            f.write_str(
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; once the balancer has dropped privileges, add such a listener with a restart)",
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for BindError {}

/// A socket on `addr` of the kind `protocol` listens with.
pub fn bind(addr: SocketAddr, protocol: Protocol) -> io::Result<ListenSocket> {
    let kind = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    match protocol {
        Protocol::Tcp => {
            // Accepted sockets inherit TCP_NODELAY from the listener (Linux,
            // BSDs), which saves a system call per client.
            socket.set_nodelay(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            Ok(ListenSocket::Tcp(TcpListener::from_std(socket.into())))
        }
        Protocol::Udp => {
            // Best effort: a smaller buffer still works, it only drops sooner.
            let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
            socket.bind(&addr.into())?;
            Ok(ListenSocket::Udp(Arc::new(UdpSocket::from_std(
                socket.into(),
            ))))
        }
    }
}

/// Binds every address of every listener once per reactor; the result holds
/// one list of sockets per reactor. Sockets `inherited` has for an address
/// are adopted first and spread over the reactors (several on one reactor
/// if the previous process ran more); only the missing ones are bound.
pub fn bind_all(
    listeners: &[Listener],
    reactors: usize,
    inherited: &mut Inherited,
) -> Result<Vec<Vec<Bound>>, BindError> {
    let mut all: Vec<Vec<Bound>> = (0..reactors).map(|_| Vec::new()).collect();
    for listener in listeners {
        for &addr in &listener.addresses {
            let protocol = listener.protocol;
            let error = |error| BindError {
                listener: listener.name.to_string(),
                addr,
                protocol_suffix: suffix(protocol),
                error,
            };
            let mut sockets = inherited
                .take(Kind::of(protocol), addr)
                .into_iter()
                .map(|fd| ListenSocket::adopt(fd, protocol).map_err(&error))
                .map(|socket| socket.map(|s| Bound::new(s, Arc::clone(&listener.name), addr)))
                .collect::<Result<Vec<_>, _>>()?;
            let missing = reactors.saturating_sub(sockets.len());
            sockets.extend(bind_each(&listener.name, addr, protocol, missing)?);
            for (i, bound) in sockets.into_iter().enumerate() {
                all[i % reactors].push(bound);
            }
        }
    }
    Ok(all)
}

fn suffix(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "",
        Protocol::Udp => " (udp)",
    }
}

/// One socket on `addr` for each of `reactors` reactors.
pub fn bind_each(
    name: &Arc<str>,
    addr: SocketAddr,
    protocol: Protocol,
    reactors: usize,
) -> Result<Vec<Bound>, BindError> {
    (0..reactors)
        .map(|_| {
            let socket = bind(addr, protocol).map_err(|error| BindError {
                listener: name.to_string(),
                addr,
                protocol_suffix: suffix(protocol),
                error,
            })?;
            Ok(Bound::new(socket, Arc::clone(name), addr))
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
    /// How many reactors there are: sockets to bind per new address.
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
