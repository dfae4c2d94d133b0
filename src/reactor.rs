//! A reactor: one thread, one mio `Poll`, its listeners, sessions and flows.
//!
//! Owns the event loop of one worker: its listening sockets (one per
//! listener address, SO_REUSEPORT), the slab of TCP sessions, its UDP flows
//! (`udp::Relay`), the buffer pool and the timers. Each loop turn: wait for
//! events, hand each to its one handler (accept, a UDP listener's receive,
//! the session's `on_event`, a flow's replies), continue work that yielded
//! for fairness, fire due timers, pick up a newly published registry, and
//! honour a shutdown request. It reads the shared registry and control
//! flags once per turn and never blocks on I/O or holds a lock across it.
//!
//! Accepting checks the listener's admission (allow/deny, connection and
//! per-IP limits) before a session exists; on an `accept_proxy` listener
//! only its connection limit, the rest waiting for the client address in
//! the PROXY header. Refused clients are reset at once and counted, with
//! at most one log line a second per reason.
//! Sessions that find every backend full wait in the reactor's queue
//! (`queue::Waiting`), retried when a slot frees anywhere.
//!
//! A reload reaches a reactor as a new snapshot plus, for listeners it
//! added, sockets in the reactor's inbox: sockets whose listener (name and
//! address) a snapshot no longer has are closed, and sessions whose
//! backend or listener was removed get until the drain deadline to finish.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Poll, Waker};
use slab::Slab;

use crate::acl::unmapped;
use crate::admission::Admitted;
use crate::buffer::BufferPool;
use crate::control::Control;
use crate::limits;
use crate::listener::{Bound, Inbox, ListenSocket};
use crate::logging::{self, RateLimit};
use crate::metrics::counters::{Rejected, WorkerGauges};
use crate::queue::{self, Waiting};
use crate::registry::{Registry, Shared};
use crate::service::watchdog::Beat;
use crate::session::{Arrival, Ctx, End, Peer, Poller, Readiness, Session, Step};
use crate::splice::PipePool;
use crate::timer::Timers;
use crate::token::{self, Side, Target};
use crate::udp::{self, Inbound, Relay};

/// Connections accepted per listener per turn before other work runs.
const ACCEPT_BUDGET: usize = 64;
/// Pause after the process ran out of descriptors or memory on accept, so
/// a full backlog does not spin the CPU while sessions free descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Idle buffers a reactor keeps for reuse (× buffer size).
const BUFFERS_KEPT: usize = 256;
const EVENTS_PER_TURN: usize = 1024;
/// How often open sessions report their traffic to the counters.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Accept budgets spent on a closing listener's queue before closing it.
const BACKLOG_ROUNDS: usize = 64;

#[derive(Debug)]
struct Listening {
    bound: Bound,
    paused_until: Option<Instant>,
    /// Index of its listener in the current snapshot.
    route: usize,
}

/// Work left over from a turn because it used up its budget.
#[derive(Debug, Clone, Copy)]
enum Ready {
    /// Accept on a TCP listening socket, or read a UDP one.
    Listener(usize),
    Session(usize, u64),
    Flow(usize, u64),
}

/// One worker's event loop: built on the main thread by [`build_all`],
/// then moved to its own thread and [`run`](Reactor::run) there.
#[derive(Debug)]
pub struct Reactor {
    id: usize,
    poll: Poll,
    /// Keyed by the listener token's index.
    listeners: Slab<Listening>,
    inbox: Inbox,
    /// Sessions a reload left without their backend or listener, with the
    /// time they must be closed by.
    on_notice: Vec<(Instant, usize, u64)>,
    sessions: Slab<Session>,
    /// UDP flows, and the buffer their datagrams pass through.
    udp: Relay,
    buffers: BufferPool,
    pipes: PipePool,
    timers: Timers,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    epoch: u64,
    control: Arc<Control>,
    /// Stamped every loop turn, for the systemd watchdog.
    beat: Arc<Beat>,
    ready: Vec<Ready>,
    spare: Vec<Ready>,
    next_id: u64,
    drain_until: Option<Instant>,
    accept_errors: RateLimit,
    /// Warnings about clients closed for a bad PROXY header.
    proxy_warnings: RateLimit,
    rng: fastrand::Rng,
    /// Sessions this reactor may hold (its share of the descriptor limit).
    max_sessions: usize,
    /// Accepting stopped at `max_sessions`; resumes when a session closes.
    full: bool,
    gauges: Arc<WorkerGauges>,
    /// When open sessions next report their traffic to the counters.
    next_report: Instant,
    /// Sessions waiting for a backend slot, oldest first.
    waiting: Waiting,
    /// A session freed a backend slot that queued sessions wait for.
    slot_freed: bool,
    /// One log line a second per reason a client was refused at accept.
    refusals: [RateLimit; Rejected::ALL.len()],
}

/// One reactor per worker: worker `id` gets `bound[id]`, the sockets bound
/// for it, and `inboxes[id]`, where reloads deliver the ones they add.
pub fn build_all(
    bound: Vec<Vec<Bound>>,
    inboxes: Vec<Inbox>,
    shared: &Arc<Shared>,
    control: &Arc<Control>,
    buffer_size: usize,
    max_sessions: usize,
) -> io::Result<Vec<Reactor>> {
    bound
        .into_iter()
        .zip(inboxes)
        .enumerate()
        .map(|(id, (sockets, inbox))| {
            let (shared, control) = (Arc::clone(shared), Arc::clone(control));
            Reactor::new(
                id,
                sockets,
                inbox,
                shared,
                control,
                buffer_size,
                max_sessions,
            )
        })
        .collect()
}

impl Reactor {
    /// Sets up the poller and registers the listeners; runs on the main
    /// thread so failures surface before start-up completes.
    pub fn new(
        id: usize,
        bound: Vec<Bound>,
        inbox: Inbox,
        shared: Arc<Shared>,
        control: Arc<Control>,
        buffer_size: usize,
        max_sessions: usize,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), token::WAKER)?;
        control.add_waker(Arc::new(waker));
        let beat = control.heartbeats().add(format!("reactor-{id}"));
        let (registry, epoch) = shared.snapshot();
        let gauges = shared.add_worker();
        let mut listeners = Slab::with_capacity(bound.len());
        for b in bound {
            let route = route(&registry, &b)
                .ok_or_else(|| io::Error::other(format!("no listener named {}", b.name)))?;
            adopt(&poll, &mut listeners, b, route)?;
        }
        Ok(Reactor {
            id,
            poll,
            listeners,
            inbox,
            on_notice: Vec::new(),
            sessions: Slab::new(),
            udp: Relay::new(),
            buffers: BufferPool::new(buffer_size, BUFFERS_KEPT),
            pipes: PipePool::new(crate::limits::pipes_per_reactor(max_sessions)),
            timers: Timers::new(),
            shared,
            registry,
            epoch,
            control,
            beat,
            ready: Vec::new(),
            spare: Vec::new(),
            next_id: 0,
            drain_until: None,
            accept_errors: RateLimit::default(),
            proxy_warnings: RateLimit::default(),
            rng: fastrand::Rng::new(),
            max_sessions,
            full: false,
            gauges,
            next_report: Instant::now() + REPORT_EVERY,
            waiting: Waiting::default(),
            slot_freed: false,
            refusals: Default::default(),
        })
    }

    /// Runs until shutdown has drained every session (or its deadline).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        logging::batch_this_thread();
        self.beat.touch(Instant::now());
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("reactor {}: poll failed, stopping: {e}", self.id);
                break;
            }
            let now = Instant::now();
            self.beat.touch(now);
            // Before the events: a client accepted in this turn must see a
            // registry published while this reactor slept.
            self.refresh_registry(now);
            for event in events.iter() {
                match token::decode(event.token()) {
                    Target::Waker => {} // flags are read below, every turn
                    Target::Listener(index) => {
                        self.on_listener(index, now);
                    }
                    Target::Session(key, side) => self.on_session_event(key, side, event, now),
                    Target::Flow(key) => self.on_flow_event(key, now),
                }
            }
            self.run_ready(now);
            self.run_timers(now);
            self.run_queue(now);
            self.close_overdue(now);
            self.resume_paused_listeners(now);
            self.report(now);
            let running = self.keep_running(now);
            logging::flush_batch();
            if !running {
                break;
            }
        }
        self.beat.retire();
        debug!("reactor {}: stopped", self.id);
        logging::flush_batch();
    }

    /// Splits the reactor into its sessions and what a session may borrow.
    fn parts(&mut self, now: Instant) -> (&mut Slab<Session>, Ctx<'_>) {
        let ctx = Ctx {
            net: Poller(self.poll.registry()),
            buffers: &mut self.buffers,
            pipes: &mut self.pipes,
            timers: &mut self.timers,
            settings: &self.registry.settings,
            rng: &mut self.rng,
            proxy_warnings: &mut self.proxy_warnings,
            now,
            slot_freed: &mut self.slot_freed,
        };
        (&mut self.sessions, ctx)
    }

    /// Splits the reactor into its UDP relay and what the relay borrows.
    fn udp_ctx(&mut self, now: Instant) -> (&mut Relay, udp::FlowCtx<'_>) {
        let ctx = relay_ctx(&self.poll, &mut self.rng, &self.registry, now);
        (&mut self.udp, ctx)
    }

    /// A listening socket is readable: accept clients (TCP) or relay
    /// datagrams (UDP), up to a budget; true if it stopped at the budget
    /// (more may be waiting, and a retry is queued).
    fn on_listener(&mut self, index: usize, now: Instant) -> bool {
        match self.listeners.get(index).map(|l| &l.bound.socket) {
            None => false, // stale event or retry for a closed listener
            Some(ListenSocket::Tcp(_)) => self.accept(index, now),
            Some(ListenSocket::Udp(_)) => self.receive(index, now),
        }
    }

    fn receive(&mut self, index: usize, now: Instant) -> bool {
        let listening = &self.listeners[index];
        let ListenSocket::Udp(socket) = &listening.bound.socket else {
            return false;
        };
        let listener = &self.registry.listeners[listening.route];
        let inbound = Inbound {
            index,
            socket,
            listener,
            pool: &self.registry.pools[listener.pool],
            local: unmapped(listening.bound.addr),
        };
        let mut ctx = relay_ctx(&self.poll, &mut self.rng, &self.registry, now);
        let more = self.udp.receive(&inbound, &mut ctx) == udp::FlowStep::Yield;
        if more {
            self.ready.push(Ready::Listener(index));
        }
        more
    }

    fn on_flow_event(&mut self, key: usize, now: Instant) {
        let (relay, mut ctx) = self.udp_ctx(now);
        if relay.on_flow_event(key, &mut ctx) == udp::FlowStep::Yield {
            if let Some(id) = self.udp.flow_id(key) {
                self.ready.push(Ready::Flow(key, id));
            }
        }
    }

    /// Accepts up to a budget of clients on a TCP listening socket.
    fn accept(&mut self, index: usize, now: Instant) -> bool {
        let Some(listening) = self.listeners.get(index) else {
            return false;
        };
        if listening.paused_until.is_some_and(|t| t > now) {
            return false;
        }
        for _ in 0..ACCEPT_BUDGET {
            if self.sessions.len() >= self.max_sessions {
                // Clients wait in the listen backlog rather than being
                // accepted without a descriptor left for their backend.
                self.full = true;
                if let Some(suppressed) = self.accept_errors.allow(now) {
                    warn!(
                        "reactor {}: session limit {} reached (open file limit); accepting again when sessions close ({suppressed} similar messages not logged)",
                        self.id, self.max_sessions
                    );
                }
                return false;
            }
            let accepted = match &self.listeners[index].bound.socket {
                ListenSocket::Tcp(socket) => socket.accept(),
                ListenSocket::Udp(_) => return false,
            };
            match accepted {
                Ok((stream, client)) => self.open(index, stream, unmapped(client), now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if limits::is_local_exhaustion(&e) => {
                    self.listeners[index].paused_until = Some(now + ACCEPT_BACKOFF);
                    if let Some(suppressed) = self.accept_errors.allow(now) {
                        let addr = self.listeners[index].bound.addr;
                        warn!(
                            "reactor {}: listener on {addr} cannot accept: {e}; pausing accepts {}ms ({suppressed} similar errors not logged)",
                            self.id,
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    return false;
                }
                // The client gave up before we accepted it; nothing to do.
                Err(e) => debug!("reactor {}: accept failed: {e}", self.id),
            }
        }
        self.ready.push(Ready::Listener(index));
        true
    }

    fn open(&mut self, index: usize, stream: TcpStream, client: SocketAddr, now: Instant) {
        let listener = &self.registry.listeners[self.listeners[index].route];
        let counters = Arc::clone(&listener.counters);
        let accept_proxy = listener.accept_proxy;
        let admitted = match &listener.admission {
            None => {
                counters.active.fetch_add(1, Ordering::Relaxed);
                Default::default()
            }
            // The client that matters is the one the PROXY header names:
            // only the listener's own limit is checked now, the rest once
            // the header is in (`Session::on_proxy_header`).
            Some(admission) if accept_proxy.is_some() => match admission.reserve(&counters) {
                Ok(()) if admission.checks_client() => Admitted::pending(Arc::clone(admission)),
                Ok(()) => Default::default(),
                Err(why) => return self.refuse(stream, client, index, why, now),
            },
            Some(admission) => {
                match admission.admit(client.ip(), &counters, crate::timer::millis(now)) {
                    Ok(admitted) => admitted,
                    Err(why) => return self.refuse(stream, client, index, why, now),
                }
            }
        };
        let pool = Arc::clone(&self.registry.pools[listener.pool]);
        let listener_routes = listener.routes.clone();
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            client,
            listener: Arc::clone(&listener.name),
            counters: Arc::clone(&counters),
            admitted,
        };
        self.next_id += 1;
        let id = self.next_id;
        let ctx = &mut Ctx {
            net: Poller(self.poll.registry()),
            buffers: &mut self.buffers,
            pipes: &mut self.pipes,
            timers: &mut self.timers,
            settings: &self.registry.settings,
            rng: &mut self.rng,
            proxy_warnings: &mut self.proxy_warnings,
            now,
            slot_freed: &mut self.slot_freed,
        };
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        let arrival = Arrival {
            peer,
            pool,
            accept_proxy,
            routes: listener_routes,
        };
        match Session::open(key, id, stream, arrival, ctx) {
            Ok(session) => {
                let queued = session.is_queued().then(|| Arc::clone(session.queue()));
                entry.insert(session);
                if let Some(queue) = queued {
                    self.waiting.push(queue::Entry { key, id }, &queue, now);
                }
            }
            Err(End::NoBackend) => counters.reject(Rejected::NoBackend),
            Err(_) => {}
        }
    }

    /// Closes a client the listener's admission refused, with a reset
    /// (nothing to flush, and no TIME_WAIT left here), counts it, and says
    /// so at most once a second per reason: a flood cannot fill the disk.
    fn refuse(
        &mut self,
        stream: TcpStream,
        client: SocketAddr,
        index: usize,
        why: Rejected,
        now: Instant,
    ) {
        // Counted first: whoever sees the reset sees the count.
        let listener = &self.registry.listeners[self.listeners[index].route];
        listener.counters.reject(why);
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
        let name = Arc::clone(&listener.name);
        self.log_refusal(&name, client, why, now);
    }

    /// Says why a client was refused, at most once a second per reason.
    fn log_refusal(&mut self, listener: &str, client: SocketAddr, why: Rejected, now: Instant) {
        let Some(suppressed) = self.refusals[why as usize].allow(now) else {
            return;
        };
        let text = match why {
            Rejected::Denied => "address denied by allow/deny",
            Rejected::ListenerFull => "listener at max_connections",
            Rejected::PerIpLimit => "address at max_connections_per_ip",
            Rejected::RateLimited => "address over rate_per_ip",
            Rejected::IpTableFull => "per-IP table full",
            _ => "refused",
        };
        let line = format!(
            "reactor {}: listener {listener}: refused {client}: {text} ({suppressed} similar not logged)",
            self.id
        );
        // Clients outside the lists are expected traffic, not news.
        if why == Rejected::Denied {
            debug!("{line}");
        } else {
            info!("{line}");
        }
    }

    /// Queued sessions try the backends again, oldest first, when a slot
    /// may have freed; per pool, the first one still without a slot stops
    /// that pool's pass, so nobody overtakes it.
    fn run_queue(&mut self, now: Instant) {
        if std::mem::take(&mut self.slot_freed) {
            self.control.wake_all();
            self.waiting.poke();
        }
        if !self.waiting.due(now) {
            return;
        }
        let mut blocked: Vec<Arc<queue::Queue>> = Vec::new();
        for entry in self.waiting.take() {
            let (sessions, mut ctx) = self.parts(now);
            let Some(session) = sessions
                .get_mut(entry.key)
                .filter(|s| s.id() == entry.id && s.is_queued())
            else {
                continue; // closed, or timed out, since it queued
            };
            if blocked.iter().any(|q| Arc::ptr_eq(q, session.queue())) {
                self.waiting.keep(entry);
                continue;
            }
            let step = session.dequeue(&mut ctx);
            if step == Step::Queued {
                blocked.push(Arc::clone(session.queue()));
                self.waiting.keep(entry);
                continue;
            }
            self.after(entry.key, step, now);
        }
        self.waiting
            .settle(|q| blocked.iter().any(|b| Arc::ptr_eq(b, q)));
        // Sessions that just closed or failed over may have freed slots.
        if std::mem::take(&mut self.slot_freed) {
            self.control.wake_all();
        }
    }

    fn on_session_event(&mut self, key: usize, side: Side, event: &Event, now: Instant) {
        let (sessions, mut ctx) = self.parts(now);
        let Some(session) = sessions.get_mut(key) else {
            return; // the session closed earlier in this turn
        };
        let step = session.on_event(side, Readiness::of(event), &mut ctx);
        self.after(key, step, now);
    }

    fn after(&mut self, key: usize, step: Step, now: Instant) {
        match step {
            Step::Wait => {}
            Step::Yield => {
                if let Some(s) = self.sessions.get(key) {
                    self.ready.push(Ready::Session(key, s.id()));
                }
            }
            Step::Queued => {
                if let Some(s) = self.sessions.get(key) {
                    let queue = Arc::clone(s.queue());
                    self.waiting
                        .push(queue::Entry { key, id: s.id() }, &queue, now);
                }
            }
            Step::Close(end) => self.close(key, end, now),
        }
    }

    fn close(&mut self, key: usize, end: End, now: Instant) {
        let (sessions, mut ctx) = self.parts(now);
        if let Some(session) = sessions.try_remove(key) {
            // Refused once its PROXY header named the client: said like a
            // refusal at accept.
            let refused = match end {
                End::Refused(why) => Some((session.listener_name(), session.client(), why)),
                _ => None,
            };
            session.close(end, &mut ctx);
            if let Some((listener, client, why)) = refused {
                self.log_refusal(&listener, client, why, now);
            }
        }
        if self.full && self.sessions.len() < self.max_sessions {
            self.full = false;
            for (index, _) in &self.listeners {
                self.ready.push(Ready::Listener(index));
            }
        }
    }

    fn run_ready(&mut self, now: Instant) {
        let mut batch = std::mem::take(&mut self.spare);
        std::mem::swap(&mut batch, &mut self.ready);
        for ready in batch.drain(..) {
            match ready {
                Ready::Listener(index) => {
                    self.on_listener(index, now);
                }
                Ready::Flow(key, id) => {
                    if self.udp.flow_id(key) == Some(id) {
                        self.on_flow_event(key, now);
                    }
                }
                Ready::Session(key, id) => {
                    let (sessions, mut ctx) = self.parts(now);
                    let Some(session) = sessions.get_mut(key).filter(|s| s.id() == id) else {
                        continue;
                    };
                    let step = session.resume(&mut ctx);
                    self.after(key, step, now);
                }
            }
        }
        self.spare = batch;
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(entry) = self.timers.pop_due(now) {
            let (sessions, mut ctx) = self.parts(now);
            let Some(session) = sessions.get_mut(entry.key).filter(|s| s.id() == entry.id) else {
                continue;
            };
            let step = session.on_timer(entry.at, &mut ctx);
            self.after(entry.key, step, now);
        }
        let (relay, mut ctx) = self.udp_ctx(now);
        relay.run_timers(&mut ctx);
    }

    fn resume_paused_listeners(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.paused_until.is_some_and(|t| t <= now))
            .map(|(index, _)| index)
            .collect();
        for index in due {
            self.listeners[index].paused_until = None;
            self.accept(index, now);
        }
    }

    /// Once a second: open sessions add the bytes they moved to their
    /// backend's counters (so long transfers show as throughput), and this
    /// reactor's gauges are brought up to date.
    fn report(&mut self, now: Instant) {
        if now < self.next_report {
            return;
        }
        self.next_report = now + REPORT_EVERY;
        for (_, session) in &mut self.sessions {
            session.report_traffic();
        }
        self.udp.report_traffic();
        let gauges = &self.gauges;
        gauges
            .buffers_in_use
            .store(self.buffers.in_use(), Ordering::Relaxed);
        gauges
            .pipes_in_use
            .store(self.pipes.in_use(), Ordering::Relaxed);
        gauges
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
        gauges.flows.store(self.udp.len(), Ordering::Relaxed);
    }

    /// Picks up a newly published snapshot and sockets of new listeners.
    fn refresh_registry(&mut self, now: Instant) {
        if self.shared.epoch() != self.epoch {
            let (next, epoch) = self.shared.snapshot();
            self.close_listeners_missing_from(&next, now);
            let previous = std::mem::replace(&mut self.registry, next);
            self.epoch = epoch;
            for (_, l) in &mut self.listeners {
                // Every remaining socket's listener is in the snapshot.
                l.route = route(&self.registry, &l.bound).unwrap_or(l.route);
            }
            self.put_orphans_on_notice(now);
            self.udp.detach_retired();
            // `Shared` keeps the old snapshot until no reader has it, so
            // this only lets go of it; measured with the rest of the pause
            // (`now` is this turn's start).
            drop(previous);
            self.gauges.note_snapshot_stall(now.elapsed());
        }
        // Sent after the snapshot that names them was published, so the
        // current one is at least that new.
        while let Ok(bound) = self.inbox.try_recv() {
            if self.drain_until.is_some() {
                continue; // shutting down: the socket closes here
            }
            let name = format!("listener {} on {}", bound.name, bound.addr);
            match route(&self.registry, &bound) {
                None => debug!("reactor {}: {name} was removed before it started", self.id),
                Some(route) => match adopt(&self.poll, &mut self.listeners, bound, route) {
                    Ok(index) => {
                        debug!("reactor {}: {name} accepting", self.id);
                        self.ready.push(Ready::Listener(index));
                    }
                    Err(e) => error!("reactor {}: {name} cannot start: {e}", self.id),
                },
            }
        }
    }

    /// Closes the sockets of listeners `next` no longer has, after taking
    /// in the clients already queued on them (the kernel would reset those).
    /// A UDP listener's flows end with it.
    fn close_listeners_missing_from(&mut self, next: &Registry, now: Instant) {
        let gone: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, l)| route(next, &l.bound).is_none())
            .map(|(index, _)| index)
            .collect();
        for index in gone {
            for _ in 0..BACKLOG_ROUNDS {
                if !self.accept(index, now) {
                    break;
                }
            }
            let (relay, mut ctx) = self.udp_ctx(now);
            relay.close_listener(index, &mut ctx);
            let mut l = self.listeners.remove(index);
            let _ = l.bound.socket.deregister(self.poll.registry());
            info!(
                "reactor {}: listener {} on {} closed by reload",
                self.id, l.bound.name, l.bound.addr
            );
        }
    }

    /// Gives sessions whose backend or listener a reload removed until the
    /// drain deadline; they may finish before it.
    fn put_orphans_on_notice(&mut self, now: Instant) {
        let deadline = now + self.registry.settings.drain_timeout;
        let listeners = &self.registry.listeners;
        let mut added = 0;
        for (key, session) in &mut self.sessions {
            let orphan = session.backend_retired()
                || !listeners.iter().any(|l| *l.name == *session.listener());
            if orphan && session.take_notice() {
                self.on_notice.push((deadline, key, session.id()));
                added += 1;
            }
        }
        if added > 0 {
            info!(
                "reactor {}: {added} sessions on removed backends or listeners have {}ms to finish",
                self.id,
                self.registry.settings.drain_timeout.as_millis()
            );
        }
    }

    /// Closes sessions on notice whose deadline passed.
    fn close_overdue(&mut self, now: Instant) {
        if self.on_notice.iter().all(|&(at, _, _)| at > now) {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.on_notice)
            .into_iter()
            .partition::<Vec<_>, _>(|&(at, _, _)| at <= now);
        self.on_notice = waiting;
        self.on_notice
            .retain(|&(_, key, id)| self.sessions.get(key).is_some_and(|s| s.id() == id));
        let mut closed = 0;
        for (_, key, id) in due {
            if self.sessions.get(key).is_some_and(|s| s.id() == id) {
                self.close(key, End::Removed, now);
                closed += 1;
            }
        }
        if closed > 0 {
            self.shared.count_closed_at_deadline(closed);
            warn!(
                "reactor {}: drain deadline passed, closed {closed} sessions on removed backends or listeners",
                self.id
            );
        }
    }

    /// Starts draining on a shutdown request; false once this reactor is done.
    fn keep_running(&mut self, now: Instant) -> bool {
        if self.drain_until.is_none() && self.control.shutdown_requested() {
            self.drain_until = Some(now + self.registry.settings.drain_timeout);
            for mut l in self.listeners.drain() {
                let _ = l.bound.socket.deregister(self.poll.registry());
            }
            let (relay, mut ctx) = self.udp_ctx(now);
            relay.close_all(&mut ctx);
            if !self.sessions.is_empty() {
                info!(
                    "reactor {}: stopped accepting, draining {} sessions",
                    self.id,
                    self.sessions.len()
                );
            }
        }
        match self.drain_until {
            None => true,
            Some(_) if self.sessions.is_empty() => false,
            Some(deadline) if now >= deadline => {
                let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
                warn!(
                    "reactor {}: drain deadline passed, closing {} sessions",
                    self.id,
                    keys.len()
                );
                for key in keys {
                    self.close(key, End::Shutdown, now);
                }
                false
            }
            Some(_) => true,
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let paused = self.listeners.iter().filter_map(|(_, l)| l.paused_until);
        let drain = self.drain_until.into_iter();
        let notice = self.on_notice.iter().map(|&(at, _, _)| at);
        // Reports are due only while something can change the figures.
        let queue = self.waiting.next_tick().into_iter();
        let report = (!self.sessions.is_empty()
            || !self.udp.is_empty()
            || self.gauges.sessions.load(Ordering::Relaxed) > 0
            || self.gauges.flows.load(Ordering::Relaxed) > 0)
            .then_some(self.next_report);
        paused
            .chain(drain)
            .chain(notice)
            .chain(queue)
            .chain(report)
            .map(|t| t.saturating_duration_since(now))
            .chain(self.timers.next_in(now))
            .chain(self.udp.next_deadline_in(now))
            .min()
    }
}

/// The index in `registry` of the listener `bound` belongs to: same name
/// and protocol, and the address still one of its addresses.
fn route(registry: &Registry, bound: &Bound) -> Option<usize> {
    registry.listeners.iter().position(|l| {
        *l.name == *bound.name
            && l.protocol == bound.socket.protocol()
            && l.addresses.contains(&bound.addr)
    })
}

/// What the UDP relay borrows from a reactor's parts while it works.
fn relay_ctx<'a>(
    poll: &'a Poll,
    rng: &'a mut fastrand::Rng,
    registry: &Registry,
    now: Instant,
) -> udp::FlowCtx<'a> {
    udp::FlowCtx {
        poll: poll.registry(),
        rng,
        now,
        retries: registry.settings.retries,
        access_log: registry.settings.access_log,
    }
}

/// Registers a listening socket under a listener token; returns its index.
fn adopt(
    poll: &Poll,
    listeners: &mut Slab<Listening>,
    mut bound: Bound,
    route: usize,
) -> io::Result<usize> {
    let entry = listeners.vacant_entry();
    let index = entry.key();
    if index >= token::MAX_LISTENERS {
        return Err(io::Error::other("too many listening sockets"));
    }
    bound
        .socket
        .register(poll.registry(), token::listener(index))?;
    entry.insert(Listening {
        bound,
        paused_until: None,
        route,
    });
    Ok(index)
}
