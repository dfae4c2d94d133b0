//! A backend for thousands of connections at once: one thread and one mio
//! `Poll` accept every connection, echo what it sends and hold it until
//! the peer closes, where `Backend` would spend a thread on each.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const LISTENER: Token = Token(usize::MAX);

pub struct Holder {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Holder {
    /// Listens on a free 127.0.0.1 port with a 4,096-deep backlog.
    pub fn start() -> Holder {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&SockAddr::from(super::localhost(0))).unwrap();
        sock.listen(4096).unwrap();
        sock.set_nonblocking(true).unwrap();
        let std_listener: std::net::TcpListener = sock.into();
        let addr = std_listener.local_addr().unwrap();
        let listener = TcpListener::from_std(std_listener);
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (open, stop) = (Arc::clone(&open), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("holder-{addr}"))
                .spawn(move || serve(listener, &open, &stop))
                .unwrap()
        };
        Holder {
            addr,
            open,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted and not yet closed.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut listener: TcpListener, open: &AtomicUsize, stop: &AtomicBool) {
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    let mut conns: Slab<TcpStream> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            if poll
                                .registry()
                                .register(&mut s, token, Interest::READABLE)
                                .is_ok()
                            {
                                entry.insert(s);
                                open.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            // Out of descriptors, or the client gave up:
                            // try again on the next event.
                            break;
                        }
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(s) = conns.get_mut(key) else {
                continue;
            };
            if !echo_available(s, &mut buf) {
                let mut s = conns.remove(key);
                let _ = poll.registry().deregister(&mut s);
                open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Echoes what is readable (small requests: a write that would block
/// drops the rest); false once the peer closed or failed.
fn echo_available(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match s.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if s.write(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
