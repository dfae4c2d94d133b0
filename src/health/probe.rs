//! One health check in flight: a non-blocking connect, an optional request
//! and an optional expected reply prefix, advanced on each readiness event.
//! Over UDP (a pool that serves UDP listeners only) a check is one datagram
//! of `send` and a reply datagram that starts with `expect` (any reply
//! without `expect`); an ICMP port unreachable fails it at once.
//!
//! The probe owns its socket only; the reply buffer (exactly
//! `expect.len()` bytes) belongs to the schedule entry and is reused by
//! every check of that backend, so a check allocates nothing.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use crate::config::Protocol;

/// Longest reply prefix quoted in a failure reason.
const QUOTED_REPLY: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Sending,
    Receiving,
}

/// Why a check failed.
#[derive(Debug)]
pub enum Failure {
    /// The connect was refused (TCP RST): nothing listens on the port.
    Refused,
    /// A UDP check's datagram met a closed port (ICMP port unreachable).
    Unreachable,
    /// The connect failed otherwise (unreachable, reset...).
    Connect(io::Error),
    /// Not complete within `health.timeout`; the phase says which step
    /// it was stuck in.
    TimedOut(Phase),
    /// Writing the `send` bytes (or PROXY header) failed.
    Send(io::Error),
    /// Reading the reply failed, a reset included.
    Read(io::Error),
    /// EOF before any reply byte.
    Closed,
    /// The reply diverged from `expect`, or ended before matching all of
    /// it; holds the quoted (escaped, at most 32 bytes) reply prefix.
    Unexpected(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("connect refused"),
            Failure::Unreachable => f.write_str("port unreachable"),
            Failure::Connect(e) => write!(f, "connect failed: {e}"),
            Failure::TimedOut(Phase::Connecting) => f.write_str("connect timed out"),
            Failure::TimedOut(Phase::Sending) => f.write_str("timed out sending the check"),
            Failure::TimedOut(Phase::Receiving) => f.write_str("timed out waiting for reply"),
            Failure::Send(e) => write!(f, "send failed: {e}"),
            Failure::Read(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                f.write_str("connection reset before reply")
            }
            Failure::Read(e) => write!(f, "reading reply failed: {e}"),
            Failure::Closed => f.write_str("connection closed before reply"),
            Failure::Unexpected(quoted) => write!(f, "unexpected reply \"{quoted}\""),
        }
    }
}

/// What a probe needs to know about the check (borrowed from the entry).
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec<'a> {
    pub send: Option<&'a [u8]>,
    pub expect: Option<&'a [u8]>,
}

#[derive(Debug)]
pub(super) struct Probe {
    conn: Conn,
    phase: Phase,
    /// Bytes of `send` written / reply bytes received so far.
    done: usize,
}

#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    /// Connected to the backend, so only its replies (and ICMP errors
    /// about it) arrive.
    Udp(UdpSocket),
}

pub(super) enum Progress {
    Pending,
    Pass,
    Fail(Failure),
}

impl Probe {
    /// Starts a connect and registers it under `token`. A connect that
    /// fails at once is `Err` (the caller tells local exhaustion apart).
    pub(super) fn start(
        addr: SocketAddr,
        protocol: Protocol,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Probe> {
        let both = Interest::READABLE | Interest::WRITABLE;
        let (conn, phase) = match protocol {
            Protocol::Tcp => {
                let mut stream = TcpStream::connect(addr)?;
                registry.register(&mut stream, token, both)?;
                (Conn::Tcp(stream), Phase::Connecting)
            }
            Protocol::Udp => {
                let mut socket = crate::udp::connected(addr)?;
                registry.register(&mut socket, token, both)?;
                (Conn::Udp(socket), Phase::Sending)
            }
        };
        Ok(Probe {
            conn,
            phase,
            done: 0,
        })
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    /// Moves the socket to another token (the schedule was rebuilt).
    pub(super) fn retoken(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let both = Interest::READABLE | Interest::WRITABLE;
        match &mut self.conn {
            Conn::Tcp(stream) => registry.reregister(stream, token, both),
            Conn::Udp(socket) => registry.reregister(socket, token, both),
        }
    }

    /// Advances as far as the socket allows. `reply` is `expect.len()`
    /// bytes long (empty without `expect`).
    pub(super) fn advance(&mut self, spec: Spec<'_>, reply: &mut [u8]) -> Progress {
        let stream = match &mut self.conn {
            Conn::Tcp(stream) => stream,
            Conn::Udp(socket) => return advance_udp(socket, &mut self.phase, spec, reply),
        };
        if self.phase == Phase::Connecting {
            match connected(stream) {
                Ok(true) => {
                    self.phase = Phase::Sending;
                    self.done = 0;
                }
                Ok(false) => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Progress::Fail(Failure::Refused)
                }
                Err(e) => return Progress::Fail(Failure::Connect(e)),
            }
        }
        if self.phase == Phase::Sending {
            let send = spec.send.unwrap_or_default();
            while self.done < send.len() {
                match stream.write(&send[self.done..]) {
                    Ok(0) => return Progress::Fail(Failure::Send(io::ErrorKind::WriteZero.into())),
                    Ok(n) => self.done += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Progress::Fail(Failure::Send(e)),
                }
            }
            if spec.expect.is_none() {
                return Progress::Pass;
            }
            self.phase = Phase::Receiving;
            self.done = 0;
        }
        let expect = spec.expect.unwrap_or_default();
        let reply = &mut reply[..expect.len()];
        while self.done < expect.len() {
            match stream.read(&mut reply[self.done..]) {
                Ok(0) if self.done == 0 => return Progress::Fail(Failure::Closed),
                Ok(0) => return Progress::Fail(Failure::Unexpected(quote(&reply[..self.done]))),
                Ok(n) => {
                    let end = self.done + n;
                    if reply[self.done..end] != expect[self.done..end] {
                        return Progress::Fail(Failure::Unexpected(quote(&reply[..end])));
                    }
                    self.done = end;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Progress::Fail(Failure::Read(e)),
            }
        }
        Progress::Pass
    }
}

/// Ok(true) once the handshake completed, Ok(false) while it is still under
/// way, Err when it failed.
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// A UDP check: `send` as one datagram, then one reply datagram that must
/// start with `expect`. `reply` is `expect.len()` bytes, so a longer reply
/// is read truncated (its prefix is all that matters) and a shorter one is
/// seen as such.
fn advance_udp(
    socket: &UdpSocket,
    phase: &mut Phase,
    spec: Spec<'_>,
    reply: &mut [u8],
) -> Progress {
    if *phase == Phase::Sending {
        loop {
            match socket.send(spec.send.unwrap_or_default()) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Progress::Fail(Failure::Unreachable)
                }
                Err(e) => return Progress::Fail(Failure::Send(e)),
            }
        }
        *phase = Phase::Receiving;
    }
    let expect = spec.expect.unwrap_or_default();
    let reply = &mut reply[..expect.len()];
    loop {
        match socket.recv(reply) {
            Ok(n) if n == expect.len() && reply[..] == *expect => return Progress::Pass,
            Ok(n) => return Progress::Fail(Failure::Unexpected(quote(&reply[..n]))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Progress::Fail(Failure::Unreachable)
            }
            Err(e) => return Progress::Fail(Failure::Read(e)),
        }
    }
}

/// The first bytes of a reply, escaped so a log line stays one printable line.
fn quote(reply: &[u8]) -> String {
    reply[..reply.len().min(QUOTED_REPLY)]
        .escape_ascii()
        .to_string()
}
