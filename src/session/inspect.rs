//! Routing a session: choosing its pool by what the connection says.
//!
//! On a listener with routes, the pool is chosen once the client is known
//! (at accept, or once its PROXY header is in): by address at once, or,
//! when some route looks at the TLS ClientHello, after peeking at it
//! (`Phase::Inspecting`). The peek reads the client's first bytes into its
//! client→backend buffer, where they stay to be relayed unchanged (and
//! replayed to the next backend if a connect fails), leaving room for an
//! outgoing PROXY header. A client that cannot be TLS goes to the default
//! pool as soon as its bytes show it; one that says nothing goes there at
//! `inspect_timeout`.
//!
//! Touches the session's client socket (reads only), its client→backend
//! buffer and the route table's counters.

use std::sync::Arc;

use super::phase::{Next, Phase};
use super::proxy::EarlyRead;
use super::socket::{Net, Socket};
use super::{Ctx, End, Routes, Session, Step};
use crate::client_hello::{self, Peek};
use crate::route::{Fallback, Said};

/// ALPN protocols compared per connection; a hello offering more is
/// matched on its first ones.
const MAX_ALPN: usize = client_hello::MAX_ALPN_PROTOCOLS;

/// How a session was routed, for the access log and an outgoing PROXY
/// header.
#[derive(Debug, Clone, Default)]
pub(super) struct Routed {
    /// The route taken; `None` when the listener's default pool was.
    pub route: Option<Arc<str>>,
    /// The server name the client asked for.
    pub sni: Option<Box<str>>,
}

impl<S: Socket> Session<S> {
    /// The client is known: route it by address, or start peeking at its
    /// hello, or, on a listener without routes, pick a backend at once.
    pub(super) fn begin<N: Net<Socket = S>>(
        &mut self,
        routes: Option<Arc<Routes>>,
        ctx: &mut Ctx<'_, N>,
    ) -> Step {
        match routes {
            None => {}
            Some(routes) if routes.inspect => {
                let step = self.transition(Next::Inspecting(routes), ctx);
                // Bytes that came with a PROXY header may hold the hello
                // already, and no readiness event will announce them again.
                if step == Step::Wait && self.up.buffered() > 0 {
                    return self.read_hello(ctx);
                }
                return step;
            }
            Some(routes) => {
                let said = Said {
                    client: self.peer.client.ip(),
                    sni: None,
                    alpn: &[],
                };
                self.take_route(&routes, Some(&said), Fallback::NoMatch);
            }
        }
        match self.transition(Next::Picking, ctx) {
            Step::Wait => self.seek_backend(ctx),
            step => step,
        }
    }

    /// Reads what the client sent until its ClientHello is complete or
    /// shows it will not be one, then routes the session.
    pub(super) fn read_hello<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        let Phase::Inspecting { routes, .. } = &self.phase else {
            return Step::Wait;
        };
        let routes = Arc::clone(routes);
        let why = loop {
            // Bytes sent along with a PROXY header may hold it all already.
            match client_hello::peek(self.up.buffer(ctx.buffers).pending()) {
                Peek::Incomplete => {}
                Peek::Hello(hello) => {
                    let mut offered = [&[][..]; MAX_ALPN];
                    let mut count = 0;
                    for (slot, protocol) in offered.iter_mut().zip(hello.alpn()) {
                        *slot = protocol;
                        count += 1;
                    }
                    let said = Said {
                        client: self.peer.client.ip(),
                        sni: hello.server_name(),
                        alpn: &offered[..count],
                    };
                    self.take_route(&routes, Some(&said), Fallback::NoMatch);
                    return self.after_hello(ctx);
                }
                Peek::NotTls(_) => break Fallback::NotTls,
                Peek::TooLarge => break Fallback::TooLarge,
            }
            match self.read_early(ctx.buffers) {
                EarlyRead::Read => {}
                EarlyRead::Blocked => return Step::Wait,
                EarlyRead::Full => break Fallback::TooLarge,
                // The pump reads the FIN again and passes it on.
                EarlyRead::Closed => break Fallback::Closed,
                EarlyRead::Failed(_) => return Step::Close(End::ClientReset),
            }
        };
        self.take_route(&routes, None, why);
        self.after_hello(ctx)
    }

    /// No complete hello within `inspect_timeout`: the default pool.
    pub(super) fn hello_timed_out<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        if let Phase::Inspecting { routes, .. } = &self.phase {
            let routes = Arc::clone(routes);
            self.take_route(&routes, None, Fallback::Timeout);
        }
        self.after_hello(ctx)
    }

    /// The peeked bytes go to whichever backend is connected, first.
    fn after_hello<N: Net<Socket = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        self.up.read += self.up.buffered() as u64;
        match self.transition(Next::Picking, ctx) {
            Step::Wait => self.seek_backend(ctx),
            step => step,
        }
    }

    /// Switches the session to the pool `said` routes it to (counted),
    /// keeping the route and server name for the log and PROXY header.
    fn take_route(&mut self, routes: &Routes, said: Option<&Said<'_>>, why: Fallback) {
        let (route, pool) = routes.decide(said, why);
        self.routed = Some(Routed {
            route: route.map(|r| Arc::clone(&r.name)),
            sni: said.and_then(|s| s.sni).map(Box::from),
        });
        self.pool = Arc::clone(pool);
    }
}
