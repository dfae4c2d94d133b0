//! What a session needs of its sockets and of the poller, as traits, so
//! that the session runs on mio sockets in a reactor and on simulated ones
//! in the deterministic simulation (`sim`).
//!
//! Owns the translation from mio's types (`Event`, `TcpStream`, the poll
//! `Registry`) to `Readiness`, `Socket` and `Net`; nothing else in the
//! session names mio.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::pump::Stream;

/// What one poll event says about one socket. The flags are hints (mio's
/// contract): the truth is what `read` and `write` then return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer sent FIN.
    pub read_closed: bool,
    pub write_closed: bool,
    pub error: bool,
}

impl Readiness {
    pub(crate) fn of(event: &Event) -> Readiness {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
            error: event.is_error(),
        }
    }

    /// Worth a read: data, or a FIN to read as EOF.
    pub(crate) fn can_read(self) -> bool {
        self.readable || self.read_closed
    }

    /// Worth a write: room, or a hang-up the write will report.
    pub(crate) fn can_write(self) -> bool {
        self.writable || self.write_closed
    }
}

/// A connected (or connecting) TCP socket, as a session uses it.
pub(crate) trait Socket: Stream {
    /// `None` while a non-blocking connect is still in progress.
    fn connect_result(&self) -> Option<io::Result<()>>;
    /// The socket holds a pending error (a reset, or a failed connect).
    fn has_error(&self) -> bool;
    /// Sends small writes at once (the backend side; clients inherit it
    /// from the listening socket).
    fn set_nodelay(&self);
    /// Makes the coming close send RST instead of FIN, so the peer cannot
    /// mistake a truncated stream for a complete one.
    fn abort_on_close(&self);
    /// The address the client connected to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The poller and the network, as a session sees them.
pub(crate) trait Net {
    type Socket: Socket;
    /// Registers an accepted client for readable and writable edges.
    fn register(&mut self, socket: &mut Self::Socket, token: Token) -> io::Result<()>;
    /// Starts a non-blocking connect and registers the new socket.
    fn connect(&mut self, addr: SocketAddr, token: Token) -> io::Result<Self::Socket>;
}

/// The reactor's poll registry: real sockets.
#[derive(Debug)]
pub(crate) struct Poller<'a>(pub &'a mio::Registry);

impl Net for Poller<'_> {
    type Socket = TcpStream;

    fn register(&mut self, socket: &mut TcpStream, token: Token) -> io::Result<()> {
        self.0
            .register(socket, token, Interest::READABLE | Interest::WRITABLE)
    }

    fn connect(&mut self, addr: SocketAddr, token: Token) -> io::Result<TcpStream> {
        let mut socket = TcpStream::connect(addr)?;
        self.register(&mut socket, token)?;
        Ok(socket)
    }
}

impl Socket for TcpStream {
    fn connect_result(&self) -> Option<io::Result<()>> {
        match self.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(e)),
            Ok(None) => {}
        }
        match self.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn has_error(&self) -> bool {
        !matches!(self.take_error(), Ok(None))
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }

    fn abort_on_close(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }
}
