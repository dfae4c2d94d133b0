//! UDP load balancing: a reactor's flows and the path of a datagram.
//!
//! Owns, per reactor, the table of UDP flows (a slab, an index by client,
//! their idle timers) and the one 64 KiB buffer every datagram passes
//! through, so an idle flow holds no buffer and no datagram allocates.
//! Reading top to bottom follows a datagram: a listening socket is read
//! until `WouldBlock` (`Relay::receive`, at most 64 datagrams per turn);
//! each datagram finds its client's flow or opens one, which picks a
//! backend by the pool's policy and connects a socket to it (`open`); it is
//! sent on the flow's socket (`forward`); replies on that socket go back to
//! the client through the listening socket (`Relay::on_flow_event`); flows
//! end at their idle timeout or limits (`Relay::run_timers`, `close`).
//!
//! Datagram boundaries are kept: one `recv` is one `send`, never merged or
//! split; a pool with `send_proxy` gets a PROXY protocol v2 header at the
//! front of each datagram (written into room kept before it, no copy). A refused datagram (ICMP port unreachable on a flow's socket)
//! counts against the backend like a refused TCP connect. Shared state is
//! touched once per flow (active counts) or once per batch (the listener's
//! datagram counters), never per datagram. The flow lifecycle is drawn in
//! `flow.rs`.

mod flow;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry as PollRegistry};
use slab::Slab;
use socket2::{Domain, Socket, Type};

use crate::access_log;
use crate::limits;
use crate::logging::RateLimit;
use crate::metrics::counters::{Dropped, Tally};
use crate::policy::{Pick, Tried};
use crate::pool::Pool;
use crate::proxy_protocol;
use crate::registry::Listener;
use crate::timer::{Deadline, Timers};
use crate::token;

pub(crate) use flow::FlowEnd;
use flow::{Key, Ledger, Phase, UdpFlow};

/// Datagrams read from one socket per event before other work runs.
const BUDGET: usize = 64;
/// Timer entries an eviction looks at before giving up (and dropping the
/// newcomer's datagram): bounds its cost when this reactor's oldest flows
/// belong to other listeners.
const EVICTION_SCAN: usize = 64;
/// Stale timer entries tolerated before they are swept (× 32 bytes).
const STALE_TIMERS_KEPT: usize = 4096;
/// Largest datagram: an IPv6 UDP payload (65,527 bytes) fits, and an IPv4
/// one (65,507) too, so nothing is ever truncated.
const BUFFER_SIZE: usize = 64 * 1024;
/// Room kept in front of each client datagram for the PROXY protocol v2
/// header a `send_proxy` pool puts there (IPv6: 16 + 36 bytes), so the
/// header and the datagram leave in one `send` without a copy.
const HEADROOM: usize = 52;

/// What the relay borrows from its reactor while it handles an event.
#[derive(Debug)]
pub(crate) struct FlowCtx<'a> {
    pub poll: &'a PollRegistry,
    pub rng: &'a mut fastrand::Rng,
    pub now: Instant,
    /// Backends tried after the first one's port turned out closed.
    pub retries: u32,
    pub access_log: bool,
}

/// A reactor's listening UDP socket and the listener it serves.
#[derive(Debug)]
pub(crate) struct Inbound<'a> {
    /// The socket's index among the reactor's listening sockets.
    pub index: usize,
    pub socket: &'a Arc<UdpSocket>,
    pub listener: &'a Listener,
    pub pool: &'a Arc<Pool>,
    /// The socket's own address: the destination in PROXY headers.
    pub local: SocketAddr,
}

/// What the reactor must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowStep {
    Wait,
    /// The budget ran out with datagrams maybe left: call again next turn.
    Yield,
}

/// A reactor's UDP flows and the buffer datagrams pass through.
#[derive(Debug)]
pub(crate) struct Relay {
    flows: Flows,
    buf: Box<[u8]>,
}

/// The flow table, apart from the buffer so both can be borrowed at once.
#[derive(Debug)]
struct Flows {
    slab: Slab<UdpFlow>,
    index: HashMap<Key, usize>,
    timers: Timers,
    next_id: u64,
    warnings: RateLimit,
    /// Timer entries of other listeners' flows an eviction set aside;
    /// kept between evictions so none allocates.
    aside: Vec<Deadline>,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new()
    }
}

impl Relay {
    pub(crate) fn new() -> Relay {
        Relay {
            flows: Flows {
                slab: Slab::new(),
                index: HashMap::new(),
                timers: Timers::new(),
                next_id: 0,
                warnings: RateLimit::default(),
                aside: Vec::new(),
            },
            buf: vec![0; HEADROOM + BUFFER_SIZE].into_boxed_slice(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.flows.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.flows.slab.is_empty()
    }

    /// Reads client datagrams from a listening socket and relays each to
    /// its flow's backend, until the socket is empty or the budget is spent.
    pub(crate) fn receive(&mut self, inbound: &Inbound<'_>, ctx: &mut FlowCtx<'_>) -> FlowStep {
        let mut tally = Tally::default();
        let mut step = FlowStep::Yield;
        for _ in 0..BUDGET {
            match inbound.socket.recv_from(&mut self.buf[HEADROOM..]) {
                Ok((n, client)) => {
                    let datagram = with_proxy_header(&mut self.buf, n, inbound, client);
                    self.flows
                        .forward(inbound, client, datagram, n, &mut tally, ctx)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    step = FlowStep::Wait;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Nothing a client can cause; the socket stays usable.
                    tally.drop(Dropped::Error);
                    self.flows.warn(ctx.now, || {
                        format!("listener {}: receive failed: {e}", inbound.listener.name)
                    });
                }
            }
        }
        inbound.listener.counters.udp.add(&mut tally);
        step
    }

    /// The one handler of a flow socket's events: relays the backend's
    /// replies to the client, ends the flow at its reply limit or on an
    /// error (a closed port counts against the backend).
    pub(crate) fn on_flow_event(&mut self, key: usize, ctx: &mut FlowCtx<'_>) -> FlowStep {
        let Some(flow) = self.flows.slab.get_mut(key) else {
            return FlowStep::Wait; // closed earlier in this turn
        };
        let mut tally = Tally::default();
        let mut outcome = Ok(FlowStep::Yield);
        for _ in 0..BUDGET {
            let n = match flow.socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    outcome = Ok(FlowStep::Wait);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    outcome = Err(failed(flow, &e));
                    break;
                }
            };
            if !flow.ledger.answered() {
                if let Some(b) = flow.pool.backends.get(flow.backend) {
                    b.record_connect_success();
                }
            }
            let relayed = match flow.reply_via.send_to(&self.buf[..n], flow.client) {
                Ok(_) => Some(n),
                Err(e) => {
                    tally.drop(dropped_on_send(&e));
                    None
                }
            };
            if let Some(n) = relayed {
                tally.down.add(n);
            }
            if flow.ledger.reply(relayed, ctx.now) {
                outcome = Err(FlowEnd::Responses);
                break;
            }
        }
        flow.counters.udp.add(&mut tally);
        match outcome {
            Ok(step) => step,
            Err(end) => {
                self.flows.close(key, end, ctx);
                FlowStep::Wait
            }
        }
    }

    /// The id of flow `key`, to tell a retry queued for it from one queued
    /// for an earlier flow in the same slot.
    pub(crate) fn flow_id(&self, key: usize) -> Option<u64> {
        self.flows.slab.get(key).map(|f| f.id)
    }

    /// Ends flows whose idle deadline passed; re-arms those that moved.
    pub(crate) fn run_timers(&mut self, ctx: &mut FlowCtx<'_>) {
        while let Some(entry) = self.flows.timers.pop_due(ctx.now) {
            let Some(flow) = self.flows.slab.get_mut(entry.key) else {
                continue;
            };
            if flow.id != entry.id || flow.timer_at != entry.at {
                continue; // stale: superseded by a later entry
            }
            let due = flow.ledger.idle_deadline();
            if due > ctx.now {
                flow.timer_at = due;
                self.flows.timers.arm(due, entry.key, entry.id);
            } else {
                self.flows.close(entry.key, FlowEnd::IdleTimeout, ctx);
            }
        }
    }

    /// How long the poller may sleep before a flow's deadline.
    pub(crate) fn next_deadline_in(&self, now: Instant) -> Option<std::time::Duration> {
        self.flows.timers.next_in(now)
    }

    /// After a reload: flows whose backend was removed take no more client
    /// datagrams (the next one is balanced anew) and end at their idle
    /// timeout, relaying the replies still coming.
    pub(crate) fn detach_retired(&mut self) {
        let Flows { slab, index, .. } = &mut self.flows;
        for (_, flow) in slab.iter_mut() {
            let retired = flow
                .pool
                .backends
                .get(flow.backend)
                .is_none_or(|b| b.is_retired());
            if retired && flow.phase == Phase::Open {
                flow.phase = Phase::Detached;
                index.remove(&flow.key);
            }
        }
    }

    /// Ends every flow of listening socket `index` (closed by a reload):
    /// their replies could no longer leave from the client's address.
    pub(crate) fn close_listener(&mut self, index: usize, ctx: &mut FlowCtx<'_>) {
        self.close_where(|f| f.key.listener == index, FlowEnd::Removed, ctx);
    }

    /// Ends every flow (shutdown: a datagram protocol has nothing to drain).
    pub(crate) fn close_all(&mut self, ctx: &mut FlowCtx<'_>) {
        self.close_where(|_| true, FlowEnd::Shutdown, ctx);
    }

    fn close_where(
        &mut self,
        which: impl Fn(&UdpFlow) -> bool,
        end: FlowEnd,
        ctx: &mut FlowCtx<'_>,
    ) {
        let keys: Vec<usize> = self
            .flows
            .slab
            .iter()
            .filter(|(_, f)| which(f))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.flows.close(key, end, ctx);
        }
    }

    /// Once a second: flows add the bytes they moved to their backend's
    /// counters, so long-lived flows show as throughput; and the timer
    /// entries of flows that ended early (a DNS flow lives a millisecond,
    /// its entry would wait out the idle timeout) are dropped once they
    /// outnumber the live flows.
    pub(crate) fn report_traffic(&mut self) {
        let Flows { slab, timers, .. } = &mut self.flows;
        for (_, flow) in slab.iter_mut() {
            flow.report_traffic();
        }
        if timers.len() > 2 * slab.len() + STALE_TIMERS_KEPT {
            timers.retain(|e| {
                slab.get(e.key)
                    .is_some_and(|f| f.id == e.id && f.timer_at == e.at)
            });
        }
    }
}

impl Flows {
    /// Sends one client datagram to its flow's backend, opening the flow
    /// first if the client has none. A closed backend port found on the way
    /// moves the datagram to another backend, as a refused TCP connect does.
    /// `data` is what goes to the backend: the client's `payload` bytes,
    /// after a PROXY header if the pool sends one.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        inbound: &Inbound<'_>,
        client: SocketAddr,
        data: &[u8],
        payload: usize,
        tally: &mut Tally,
        ctx: &mut FlowCtx<'_>,
    ) {
        let key = Key::new(inbound.index, client, inbound.listener.udp.key);
        let mut tried = Tried::default();
        let mut attempts = 0;
        let max_attempts = ctx.retries.saturating_add(1);
        loop {
            let slot = match self.index.get(&key) {
                Some(&slot) => slot,
                None => match self.open(inbound, key, client, &mut tried, &mut attempts, ctx) {
                    Ok(slot) => slot,
                    Err(why) => {
                        tally.drop(why);
                        self.warn_drop(inbound, client, why, ctx.now);
                        return;
                    }
                },
            };
            let flow = &mut self.slab[slot];
            flow.client = client; // with key "ip", replies follow the latest port
            match flow.socket.send(data) {
                Ok(_) => {
                    tally.up.add(payload);
                    if flow.ledger.request(payload, ctx.now) {
                        flow.phase = Phase::Detached;
                        self.index.remove(&key);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // The port unreachable of an earlier datagram: this
                    // backend is gone; try this one on another.
                    tried.insert(flow.backend, flow.pool.backends.len());
                    let end = failed(flow, &e);
                    self.close(slot, end, ctx);
                    if attempts >= max_attempts {
                        tally.drop(Dropped::Refused);
                        return;
                    }
                }
                Err(e) => {
                    let why = dropped_on_send(&e);
                    tally.drop(why);
                    self.warn_drop(inbound, client, why, ctx.now);
                    return;
                }
            }
        }
    }

    /// Opens a flow for `client`: checks the listener's flow limit, picks a
    /// backend (skipping `tried`), connects a socket to it and registers it.
    fn open(
        &mut self,
        inbound: &Inbound<'_>,
        key: Key,
        client: SocketAddr,
        tried: &mut Tried,
        attempts: &mut u32,
        ctx: &mut FlowCtx<'_>,
    ) -> Result<usize, Dropped> {
        let listener = inbound.listener;
        let pool = inbound.pool;
        let counters = &listener.counters.udp;
        if let Some(admission) = &listener.admission {
            if !admission.acl.admits(client.ip()) {
                return Err(Dropped::Denied);
            }
        }
        if counters.flows_active.load(Ordering::Relaxed) >= listener.max_flows {
            // A flood of new client ports must not lock out every new
            // client while stale flows wait out their idle timeout.
            if !self.evict_idlest(inbound.index, ctx) {
                return Err(Dropped::MaxFlows);
            }
            counters.flows_evicted.fetch_add(1, Ordering::Relaxed);
        }
        let max_attempts = ctx.retries.saturating_add(1);
        while *attempts < max_attempts {
            let now_ms = crate::timer::millis(ctx.now);
            let mut pick = Pick::new(client.ip(), tried, ctx.rng, now_ms);
            let Some(index) = pool.pick(&mut pick) else {
                pool.count_no_backend(ctx.now);
                return Err(Dropped::NoBackend);
            };
            tried.insert(index, pool.backends.len());
            *attempts += 1;
            let backend = &pool.backends[index];
            // Flows count toward the backend's max_connections too.
            if !backend.try_acquire() {
                continue;
            }
            let entry = self.slab.vacant_entry();
            let slot = entry.key();
            let socket = match connect(backend.addr, ctx.poll, token::flow(slot)) {
                Ok(socket) => socket,
                Err(e) if limits::is_local_exhaustion(&e) => {
                    pool.release(index);
                    return Err(Dropped::NoSocket);
                }
                Err(e) => {
                    pool.release(index);
                    debug!(
                        "listener {} client {client}: cannot reach backend {}: {e}",
                        listener.name, backend.addr
                    );
                    pool.note_failure(index, &e);
                    continue;
                }
            };
            backend.counters.connections.fetch_add(1, Ordering::Relaxed);
            counters.flows_active.fetch_add(1, Ordering::Relaxed);
            counters.flows_total.fetch_add(1, Ordering::Relaxed);
            self.next_id += 1;
            let ledger = Ledger::new(&listener.udp, ctx.now);
            let timer_at = ledger.idle_deadline();
            self.timers.arm(timer_at, slot, self.next_id);
            entry.insert(UdpFlow {
                id: self.next_id,
                key,
                phase: Phase::Open,
                socket,
                reply_via: Arc::clone(inbound.socket),
                client,
                listener: Arc::clone(&listener.name),
                counters: Arc::clone(&listener.counters),
                pool: Arc::clone(pool),
                backend: index,
                ledger,
                timer_at,
                reported: (0, 0),
            });
            self.index.insert(key, slot);
            return Ok(slot);
        }
        Err(Dropped::NoBackend)
    }

    /// Makes room for a new flow on listening socket `listener`: ends the
    /// flow of that socket whose idle deadline comes first, that is the
    /// longest idle. Timer entries are lazy, so an entry is trusted only
    /// once its flow's real deadline matches it; a moved one is re-armed,
    /// as `run_timers` would, and a stale one dropped. False if this
    /// reactor has no such flow among the first `EVICTION_SCAN` entries.
    fn evict_idlest(&mut self, listener: usize, ctx: &FlowCtx<'_>) -> bool {
        let mut found = None;
        for _ in 0..EVICTION_SCAN {
            let Some(entry) = self.timers.pop_earliest() else {
                break;
            };
            let Some(flow) = self.slab.get_mut(entry.key) else {
                continue;
            };
            if flow.id != entry.id || flow.timer_at != entry.at {
                continue;
            }
            let due = flow.ledger.idle_deadline();
            if due > entry.at {
                flow.timer_at = due;
                self.timers.arm(due, entry.key, entry.id);
            } else if flow.key.listener != listener {
                self.aside.push(entry);
            } else {
                found = Some(entry.key);
                break;
            }
        }
        for e in self.aside.drain(..) {
            self.timers.arm(e.at, e.key, e.id);
        }
        match found {
            Some(slot) => {
                self.close(slot, FlowEnd::Evicted, ctx);
                true
            }
            None => false,
        }
    }

    /// Ends flow `slot`: its socket closes (leaving the poller), counts go
    /// down, and one line is logged.
    fn close(&mut self, slot: usize, end: FlowEnd, ctx: &FlowCtx<'_>) {
        let Some(mut flow) = self.slab.try_remove(slot) else {
            return;
        };
        if flow.phase == Phase::Open && self.index.get(&flow.key) == Some(&slot) {
            self.index.remove(&flow.key);
        }
        flow.report_traffic();
        flow.counters
            .udp
            .flows_active
            .fetch_sub(1, Ordering::Relaxed);
        let backend = flow.pool.backends.get(flow.backend);
        if let Some(b) = backend {
            b.active.fetch_sub(1, Ordering::Relaxed);
        }
        if !ctx.access_log {
            return;
        }
        let l = &flow.ledger;
        access_log::log_flow(&access_log::FlowRecord {
            client: flow.client,
            listener: &flow.listener,
            backend: backend.map(|b| b.addr),
            datagrams_in: l.up.datagrams,
            datagrams_out: l.down.datagrams,
            bytes_in: l.up.bytes,
            bytes_out: l.down.bytes,
            duration: ctx.now.saturating_duration_since(l.started),
            end: end.as_str(),
        });
    }

    /// Says why datagrams are dropped, at most once a second per reactor.
    fn warn_drop(&mut self, inbound: &Inbound<'_>, client: SocketAddr, why: Dropped, now: Instant) {
        let reason = match why {
            // The pool warns about these itself, once a second.
            Dropped::NoBackend | Dropped::Refused => return,
            // Expected traffic from outsiders: counted, not logged.
            Dropped::Denied => return,
            Dropped::MaxFlows => format!(
                "{} flows open, the listener's max_flows",
                inbound.listener.max_flows
            ),
            Dropped::NoSocket => "no socket left for a new flow (open-file limit?)".into(),
            Dropped::Overflow => "a socket buffer is full".into(),
            Dropped::Error => "send failed".into(),
        };
        self.warn(now, || {
            format!(
                "listener {}: dropping datagrams from {client}: {reason}",
                inbound.listener.name
            )
        });
    }

    fn warn(&mut self, now: Instant, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.warnings.allow(now) {
            warn!("{} ({suppressed} similar messages not logged)", line());
        }
    }
}

/// The datagram of `n` bytes received at `HEADROOM` in `buf`, with the
/// pool's PROXY protocol v2 header (client, listener address, UDP) right
/// in front of it when the pool has `send_proxy`. Only v2 can say UDP;
/// configuration refuses v1 for pools that serve UDP listeners.
fn with_proxy_header<'a>(
    buf: &'a mut [u8],
    n: usize,
    inbound: &Inbound<'_>,
    client: SocketAddr,
) -> &'a [u8] {
    let Some(version) = inbound.pool.send_proxy else {
        return &buf[HEADROOM..HEADROOM + n];
    };
    let header = proxy_protocol::Header {
        version,
        addresses: proxy_protocol::Addresses::Inet {
            transport: proxy_protocol::Transport::Udp,
            source: crate::acl::unmapped(client),
            destination: inbound.local,
        },
    };
    let mut encoded = [0; proxy_protocol::MAX_ENCODED_LEN];
    let len = proxy_protocol::encode(&header, &mut encoded).min(HEADROOM);
    let start = HEADROOM - len;
    buf[start..HEADROOM].copy_from_slice(&encoded[..len]);
    &buf[start..HEADROOM + n]
}

/// Counts a failed flow socket against its backend when the backend is at
/// fault (a closed port) and says how the flow ends.
fn failed(flow: &UdpFlow, error: &io::Error) -> FlowEnd {
    debug!(
        "listener {} client {}: backend {}: {error}",
        flow.listener,
        flow.client,
        flow.pool
            .backends
            .get(flow.backend)
            .map_or_else(|| "-".to_string(), |b| b.addr.to_string())
    );
    flow.pool.note_failure(flow.backend, error);
    if error.kind() == io::ErrorKind::ConnectionRefused {
        FlowEnd::Refused
    } else {
        FlowEnd::Error
    }
}

/// Why a send that failed dropped its datagram.
fn dropped_on_send(error: &io::Error) -> Dropped {
    if error.kind() == io::ErrorKind::WouldBlock || error.raw_os_error() == Some(libc::ENOBUFS) {
        Dropped::Overflow
    } else {
        Dropped::Error
    }
}

/// A non-blocking UDP socket connected to `backend` and registered for
/// replies: three system calls (socket, connect, epoll_ctl).
fn connect(backend: SocketAddr, poll: &PollRegistry, token: mio::Token) -> io::Result<UdpSocket> {
    let mut socket = connected(backend)?;
    poll.register(&mut socket, token, Interest::READABLE)?;
    Ok(socket)
}

/// A non-blocking UDP socket connected to `peer`, so that it receives only
/// the peer's datagrams and the ICMP errors about them; the kernel picks
/// the local address and port at connect. Health checks use it too.
pub(crate) fn connected(peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(peer),
        Type::DGRAM.nonblocking().cloexec(),
        None,
    )?;
    socket.connect(&peer.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}
