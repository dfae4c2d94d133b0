//! One UDP flow: a client (address and port, or address alone) bound to one
//! backend through a connected socket, until it ends.
//!
//! Owns the flow's state and its bookkeeping. The `Ledger` is the sans-io
//! core: it counts requests and replies against the listener's limits,
//! keeps the traffic totals and the time of the last datagram, and says
//! when the flow stops taking requests (`requests`), when it ends
//! (`responses`) and when its idle deadline is. `UdpFlow` adds the sockets
//! and who the flow is for. Lifecycle:
//!
//! ```text
//! first datagram ──► Open ──(requests reached, backend removed)──► Detached
//!                     │  takes the client's datagrams              │ relays replies only
//!                     └──(responses reached, idle, port unreachable, error)──┴──► closed
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::config::{FlowKey, UdpConfig};
use crate::metrics::counters::{ListenerCounters, Traffic};
use crate::pool::Pool;

/// What makes datagrams one flow: the reactor's listening socket they
/// arrived on and the client (its port zeroed with `key: "ip"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) listener: usize,
    pub(super) client: SocketAddr,
}

impl Key {
    pub(super) fn new(listener: usize, client: SocketAddr, kind: FlowKey) -> Key {
        let client = match kind {
            FlowKey::IpPort => client,
            FlowKey::Ip => SocketAddr::new(client.ip(), 0),
        };
        Key { listener, client }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// In the flow table: the client's datagrams go to this flow.
    Open,
    /// Out of the table (its request limit was reached, or a reload
    /// removed its backend): the client's next datagram opens a new flow,
    /// and this one only relays replies until it ends.
    Detached,
}

/// How a flow ended, as written in its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowEnd {
    /// The reply limit (`responses`) was reached.
    Responses,
    IdleTimeout,
    /// The backend's port is closed (ICMP port unreachable).
    Refused,
    /// Sending or receiving on the flow's socket failed otherwise.
    Error,
    /// A reload removed the listener.
    Removed,
    /// Ended to make room for a new client past `max_flows`: of this
    /// reactor's flows of the listener, it was the longest idle.
    Evicted,
    Shutdown,
}

impl FlowEnd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FlowEnd::Responses => "responses",
            FlowEnd::IdleTimeout => "idle-timeout",
            FlowEnd::Refused => "refused",
            FlowEnd::Error => "error",
            FlowEnd::Removed => "removed",
            FlowEnd::Evicted => "evicted",
            FlowEnd::Shutdown => "shutdown",
        }
    }
}

/// The sans-io core of a flow: counts against its limits and its times.
#[derive(Debug, Clone)]
pub(super) struct Ledger {
    idle_timeout: Duration,
    /// Replies that end the flow; 0: no limit.
    max_responses: u32,
    /// Requests after which the flow takes no more; 0: no limit.
    max_requests: u32,
    requests: u32,
    responses: u32,
    /// Client → backend, relayed.
    pub(super) up: Traffic,
    /// Backend → client, relayed.
    pub(super) down: Traffic,
    pub(super) started: Instant,
    last_active: Instant,
}

impl Ledger {
    pub(super) fn new(limits: &UdpConfig, now: Instant) -> Ledger {
        Ledger {
            idle_timeout: limits.idle_timeout,
            max_responses: limits.responses,
            max_requests: limits.requests,
            requests: 0,
            responses: 0,
            up: Traffic::default(),
            down: Traffic::default(),
            started: now,
            last_active: now,
        }
    }

    /// A client datagram of `bytes` went to the backend. True when that
    /// was the last request this flow takes.
    pub(super) fn request(&mut self, bytes: usize, now: Instant) -> bool {
        self.up.add(bytes);
        self.last_active = now;
        self.requests = self.requests.saturating_add(1);
        self.max_requests > 0 && self.requests >= self.max_requests
    }

    /// A reply came from the backend (`relayed` bytes to the client, or
    /// `None` if it could not be passed on). True when the flow must end.
    pub(super) fn reply(&mut self, relayed: Option<usize>, now: Instant) -> bool {
        if let Some(bytes) = relayed {
            self.down.add(bytes);
        }
        self.last_active = now;
        self.responses = self.responses.saturating_add(1);
        self.max_responses > 0 && self.responses >= self.max_responses
    }

    /// Whether any reply came yet.
    pub(super) fn answered(&self) -> bool {
        self.responses > 0
    }

    /// When the flow ends if nothing more moves.
    pub(super) fn idle_deadline(&self) -> Instant {
        self.last_active + self.idle_timeout
    }
}

/// A live flow: its ledger, its socket toward the backend, where replies
/// go and through which socket.
#[derive(Debug)]
pub(super) struct UdpFlow {
    /// Unique per reactor, so stale timers and retries are recognised.
    pub(super) id: u64,
    pub(super) key: Key,
    pub(super) phase: Phase,
    /// Connected to the backend: it receives only that backend's replies,
    /// and ICMP errors for them show up on it.
    pub(super) socket: UdpSocket,
    /// The listening socket the client wrote to; replies leave through it
    /// so that they come from the address the client sent to.
    pub(super) reply_via: Arc<UdpSocket>,
    /// Where replies go: the client's address, or with `key: "ip"` the
    /// port it last sent from.
    pub(super) client: SocketAddr,
    pub(super) listener: Arc<str>,
    pub(super) counters: Arc<ListenerCounters>,
    pub(super) pool: Arc<Pool>,
    pub(super) backend: usize,
    pub(super) ledger: Ledger,
    /// Deadline of this flow's live timer entry.
    pub(super) timer_at: Instant,
    /// Bytes sent to and received from the backend already added to its
    /// counters.
    pub(super) reported: (u64, u64),
}

impl UdpFlow {
    /// Adds the bytes moved since the last report to the backend's
    /// counters; at close and, while open, once a second.
    pub(super) fn report_traffic(&mut self) {
        let totals = (self.ledger.up.bytes, self.ledger.down.bytes);
        if let Some(b) = self.pool.backends.get(self.backend) {
            b.counters.report(totals, &mut self.reported);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u32, responses: u32) -> UdpConfig {
        UdpConfig {
            requests,
            responses,
            idle_timeout: Duration::from_secs(30),
            ..UdpConfig::default()
        }
    }

    #[test]
    fn without_limits_a_flow_takes_every_request_and_reply() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&limits(0, 0), t0);
        for i in 0..1000 {
            assert!(!ledger.request(10, t0));
            assert!(!ledger.reply(Some(i), t0));
        }
        assert_eq!(ledger.up.datagrams, 1000);
        assert_eq!(ledger.up.bytes, 10_000);
        assert_eq!(ledger.down.datagrams, 1000);
    }

    #[test]
    fn one_response_ends_a_dns_style_flow_at_its_first_reply() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&limits(0, 1), t0);
        assert!(!ledger.answered());
        assert!(!ledger.request(40, t0));
        assert!(ledger.reply(Some(120), t0));
        assert!(ledger.answered());
    }

    #[test]
    fn the_request_limit_says_when_the_flow_stops_taking_datagrams() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&limits(3, 0), t0);
        assert!(!ledger.request(1, t0));
        assert!(!ledger.request(1, t0));
        assert!(ledger.request(1, t0));
    }

    #[test]
    fn a_reply_that_could_not_be_relayed_counts_toward_the_limit_but_not_the_traffic() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&limits(0, 2), t0);
        assert!(!ledger.reply(None, t0));
        assert_eq!(ledger.down, Traffic::default());
        assert!(ledger.reply(Some(5), t0));
        assert_eq!(ledger.down.bytes, 5);
    }

    #[test]
    fn every_datagram_either_way_pushes_the_idle_deadline() {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&limits(0, 0), t0);
        assert_eq!(ledger.idle_deadline(), t0 + Duration::from_secs(30));
        let t1 = t0 + Duration::from_secs(10);
        ledger.request(1, t1);
        assert_eq!(ledger.idle_deadline(), t1 + Duration::from_secs(30));
        let t2 = t1 + Duration::from_secs(5);
        ledger.reply(Some(1), t2);
        assert_eq!(ledger.idle_deadline(), t2 + Duration::from_secs(30));
    }

    #[test]
    fn with_key_ip_every_port_of_a_client_is_one_flow() {
        let a: SocketAddr = "10.0.0.1:5000".parse().expect("address");
        let b: SocketAddr = "10.0.0.1:5001".parse().expect("address");
        assert_eq!(Key::new(1, a, FlowKey::Ip), Key::new(1, b, FlowKey::Ip));
        assert_ne!(
            Key::new(1, a, FlowKey::IpPort),
            Key::new(1, b, FlowKey::IpPort)
        );
        assert_ne!(Key::new(1, a, FlowKey::Ip), Key::new(2, a, FlowKey::Ip));
    }
}
