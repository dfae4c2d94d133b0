//! The PROXY protocol at both ends of a session: the header an
//! `accept_proxy` listener reads before anything else, and the header a
//! `send_proxy` pool gets in front of the client's bytes.
//!
//! Touches the session's client socket (reads only), its client→backend
//! buffer (which holds payload read along with the incoming header, and
//! the outgoing header) and its listener's admission and counters.

use std::io;

use log::warn;

use super::phase::Phase;
use super::socket::{Net, Socket};
use super::{Ctx, End, Session, Step};
use crate::acl::unmapped;
use crate::buffer::BufferPool;
use crate::proxy_protocol::{self, Addresses, Header, Parsed, Transport, Version};

/// What one read of a client's first bytes came to.
pub(super) enum EarlyRead {
    /// Bytes were added to the buffer.
    Read,
    /// The buffer has no room left but what an outgoing header needs.
    Full,
    /// The client sent FIN.
    Closed,
    /// Nothing more to read until the next readable edge.
    Blocked,
    Failed(io::Error),
}

/// Why no PROXY header could be read.
enum ProxyError {
    Parse(&'static str),
    Closed,
    Io(io::Error),
}

impl<S: Socket> Session<S> {
    /// Reads what the client sent so far into the client→backend buffer
    /// and looks for a complete PROXY header in it. Bytes after the header
    /// are the client's first payload and stay in the buffer. Reads leave
    /// room for the outgoing header `send_proxy` puts in front of them.
    pub(super) fn read_proxy<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        let outcome = loop {
            match self.read_early(ctx.buffers) {
                EarlyRead::Read => {}
                EarlyRead::Blocked => return Step::Wait,
                // Cannot happen: the smallest buffer holds the longest
                // header accepted and the longest written.
                EarlyRead::Full => break Err(ProxyError::Parse("header too long for the buffer")),
                EarlyRead::Closed => break Err(ProxyError::Closed),
                EarlyRead::Failed(e) => break Err(ProxyError::Io(e)),
            }
            let buf = self.up.buffer(ctx.buffers);
            match proxy_protocol::parse(buf.pending()) {
                Parsed::Incomplete => {}
                Parsed::Invalid(why) => break Err(ProxyError::Parse(why)),
                Parsed::Done(header, used) => {
                    buf.consume(used);
                    break Ok(header);
                }
            }
        };
        match outcome {
            Ok(header) => self.on_proxy_header(header, ctx),
            Err(ProxyError::Parse(why)) => self.reject_proxy(why, ctx),
            Err(ProxyError::Closed) => {
                self.reject_proxy("closed before a complete PROXY header", ctx)
            }
            Err(ProxyError::Io(e)) => self.reject_proxy(e, ctx),
        }
    }

    /// One read of the client's first bytes (a PROXY header, a ClientHello)
    /// into its client→backend buffer, leaving room for the outgoing
    /// header `send_proxy` puts in front of them (with a server name).
    /// An interrupted read is retried.
    pub(super) fn read_early(&mut self, buffers: &mut BufferPool) -> EarlyRead {
        let buf = self.up.buffer(buffers);
        loop {
            let space = buf.space();
            let room = space.len().saturating_sub(proxy_protocol::MAX_OUTGOING_LEN);
            if room == 0 {
                return EarlyRead::Full;
            }
            return match self.client.read(&mut space[..room]) {
                Ok(0) => EarlyRead::Closed,
                Ok(n) => {
                    buf.filled(n);
                    EarlyRead::Read
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => EarlyRead::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => EarlyRead::Failed(e),
            };
        }
    }

    /// The header is in: its client (unless LOCAL or UNKNOWN) becomes this
    /// session's client for the pick, the logs and an outgoing header.
    fn on_proxy_header<N: Net<Socket = S>>(
        &mut self,
        header: Header,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        if let Some((source, destination)) = header.endpoints() {
            self.peer.client = unmapped(source);
            self.destination = Some(unmapped(destination));
        }
        // The listener's client checks, deferred from accept to this
        // address; the per-IP entry is counted (and later released) under
        // exactly the address checked here.
        if let Some(admission) = self.peer.admitted.take_pending() {
            let now_ms = crate::timer::millis(ctx.now);
            match admission.admit_client(self.peer.client.ip(), now_ms) {
                Ok(admitted) => self.peer.admitted = admitted,
                Err(why) => return Step::Close(End::Refused(why)),
            }
        }
        let routes = match &mut self.phase {
            Phase::ReadingProxy { routes, .. } => routes.take(),
            _ => None,
        };
        // Bytes that came with the header are counted here, unless a hello
        // inspection follows: it counts them with the rest of the hello.
        if !routes.as_ref().is_some_and(|r| r.inspect) {
            self.up.read += self.up.buffered() as u64;
        }
        self.up.release(ctx.buffers);
        let step = self.begin(routes, ctx);
        if step == Step::Close(End::NoBackend) {
            self.peer
                .counters
                .reject(crate::metrics::counters::Rejected::NoBackend);
        }
        step
    }

    /// Closes a client that sent no valid PROXY header: counted, and said
    /// at most once a second per reactor (a scan or a misconfigured
    /// upstream would otherwise flood the log).
    pub(super) fn reject_proxy<N>(
        &mut self,
        why: impl std::fmt::Display,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        if let Some(suppressed) = ctx.proxy_warnings.allow(ctx.now) {
            warn!(
                "listener {} client {}: closed: {why} ({suppressed} similar messages not logged)",
                self.peer.listener, self.peer.client
            );
        }
        Step::Close(End::ProxyHeader)
    }

    /// Puts this session's PROXY header in front of the client's bytes,
    /// into the buffer they are sent from. Reads while waiting for an
    /// incoming header left room for it.
    pub(super) fn queue_proxy_header<N>(&mut self, version: Version, ctx: &mut Ctx<'_, N>) {
        let destination = self
            .destination
            .or_else(|| self.client.local_addr().ok().map(unmapped));
        let addresses = match destination {
            Some(destination) => Addresses::Inet {
                transport: Transport::Tcp,
                source: self.peer.client,
                destination,
            },
            None => Addresses::Unknown,
        };
        let mut header = [0; proxy_protocol::MAX_OUTGOING_LEN];
        let sni = self.routed.as_ref().and_then(|r| r.sni.as_deref());
        let header_fields = Header { version, addresses };
        let n = proxy_protocol::encode_with_authority(
            &header_fields,
            sni.map(str::as_bytes),
            &mut header,
        );
        let fits = self.up.buffer(ctx.buffers).prepend(&header[..n]);
        debug_assert!(fits, "no room for the PROXY header");
    }
}
