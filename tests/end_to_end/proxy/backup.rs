//! Backup backends through the real binary against real loopback backends:
//! while a primary is up the backup gets no client; with every primary
//! down it serves every new client; once a primary is back new clients go
//! to it alone, while a session opened on the backup stays open and keeps
//! relaying. Counts come from the backends themselves (health checks,
//! which send nothing, are not counted); every wait is on a condition
//! seen in `/stats`, with a deadline.

use crate::support;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::http::get;
use support::prometheus;
use support::*;

/// Bounded requests per phase.
const REQUESTS: usize = 20;
/// Deadline for a health change to show, on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(10);

/// A backend that answers a client's first line with its name and then
/// echoes, counting the clients it answered.
struct Server {
    backend: Backend,
    served: Arc<AtomicUsize>,
}

impl Server {
    fn on(bind: SocketAddr, name: &'static str) -> Server {
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let backend = Backend::spawn_on(bind, move |mut s: TcpStream| {
            // Long enough for a session held across every phase.
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
            if read_line(&mut s, Duration::from_secs(60)).is_err() {
                return; // a health check: connect and close
            }
            counter.fetch_add(1, Ordering::SeqCst);
            if s.write_all(format!("{name}\n").as_bytes()).is_ok() {
                support::backend::echo_handler(s);
            }
        });
        Server { backend, served }
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr()
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn reserved() -> ReservedPort {
    ReservedPort::on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Opens a session and reads which backend answered it.
fn open(lb: SocketAddr) -> io::Result<(TcpStream, String)> {
    let mut c = try_connect(lb)?;
    c.write_all(b"who\n")?;
    let name = read_line(&mut c, Duration::from_secs(5))?;
    Ok((c, name.trim_end().to_string()))
}

/// `REQUESTS` short sessions, one after the other: who answered each.
fn ask_many(lb: SocketAddr) -> Vec<String> {
    (0..REQUESTS)
        .map(|i| open(lb).unwrap_or_else(|e| panic!("request {i}: {e}")).1)
        .collect()
}

/// One line through a held session, echoed back.
fn relay(session: &mut TcpStream, line: &str) {
    session
        .write_all(line.as_bytes())
        .expect("write on the held session");
    let back = read_line(session, Duration::from_secs(5)).expect("echo on the held session");
    assert_eq!(back, line);
}

fn stats(admin: SocketAddr) -> Value {
    let response = get(admin, "/stats");
    assert_eq!(response.status, 200);
    serde_json::from_str(&response.body).expect("/stats is JSON")
}

/// The `/stats` entry of `backend` in pool `pool`.
fn backend_stats(admin: SocketAddr, pool: &str, backend: SocketAddr) -> Value {
    let all = stats(admin);
    let pools = all["pools"].as_array().expect("pools").clone();
    let pool = pools
        .into_iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool}"));
    let address = backend.to_string();
    pool["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["address"] == address.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no backend {address}"))
}

/// Waits until every backend of `states` shows its state in `/stats`.
fn wait_states(lb: &Balancer, admin: SocketAddr, pool: &str, states: &[(SocketAddr, &str)]) {
    let reached = wait_until(SETTLE, || {
        states
            .iter()
            .all(|&(b, state)| backend_stats(admin, pool, b)["state"] == state)
    });
    assert!(
        reached,
        "states {states:?} not reached within {SETTLE:?}; balancer printed:\n{}",
        lb.logs_joined()
    );
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[test]
fn backup_serves_only_while_both_primaries_are_down_and_keeps_its_session_after() {
    let (p1_port, p2_port) = (reserved(), reserved());
    let (p1_addr, p2_addr) = (p1_port.addr, p2_port.addr);
    let mut p1 = Some(Server::on(p1_addr, "p1"));
    let mut p2 = Some(Server::on(p2_addr, "p2"));
    let backup = Server::on(localhost(0), "backup");
    let backup_addr = backup.addr();
    let (listen, admin) = (free_addr(), free_addr());
    let file = format!(
        r#"(
    listeners: [(name: "web", bind: "{listen}", pool: "p")],
    pools: [(name: "p", policy: "round-robin",
             health: (interval: "200ms", timeout: "200ms", rise: 1, fall: 1),
             backends: [(address: "{p1_addr}"), (address: "{backup_addr}", backup: true),
                        (address: "{p2_addr}")])],
    admin: (bind: "{admin}"),
)"#
    );
    let lb = Balancer::with_config(&file, listen);

    // Visible as a backup in /stats and /metrics; primaries are not.
    for (b, is_backup) in [(p1_addr, false), (p2_addr, false), (backup_addr, true)] {
        assert_eq!(backend_stats(admin, "p", b)["backup"], is_backup, "{b}");
        let m = prometheus::parse(&get(admin, "/metrics").body).expect("metrics");
        let labels = [("pool", "p"), ("backend", &*b.to_string())];
        let gauge = prometheus::value(&m, "balanciaga4_backend_backup", &labels);
        assert_eq!(gauge, Some(f64::from(u8::from(is_backup))), "{b}");
    }
    wait_states(
        &lb,
        admin,
        "p",
        &[(p1_addr, "up"), (p2_addr, "up"), (backup_addr, "up")],
    );

    // Primaries up: the backup gets no client.
    let names = ask_many(lb.listen);
    assert_eq!(
        count(&names, "p1") + count(&names, "p2"),
        REQUESTS,
        "{names:?}"
    );
    assert!(
        count(&names, "p1") > 0 && count(&names, "p2") > 0,
        "{names:?}"
    );
    assert_eq!(backup.served(), 0);

    // Both primaries down: the backup serves every new client.
    drop(p1.take());
    drop(p2.take());
    wait_states(&lb, admin, "p", &[(p1_addr, "down"), (p2_addr, "down")]);
    let names = ask_many(lb.listen);
    assert_eq!(count(&names, "backup"), REQUESTS, "{names:?}");
    assert_eq!(backup.served(), REQUESTS);

    // A session that stays on the backup across the primary's return.
    let (mut held, name) = open(lb.listen).expect("held session");
    assert_eq!(name, "backup");
    relay(&mut held, "before the primary is back\n");

    p1 = Some(Server::on(p1_addr, "p1"));
    wait_states(&lb, admin, "p", &[(p1_addr, "up")]);
    relay(&mut held, "while the primary is back\n");
    let names = ask_many(lb.listen);
    assert_eq!(count(&names, "p1"), REQUESTS, "{names:?}");
    assert_eq!(backup.served(), REQUESTS + 1, "only the held session");
    assert_eq!(p1.as_ref().map(Server::served), Some(REQUESTS));

    relay(&mut held, "after new clients went to the primary\n");
    let only_held = wait_until(SETTLE, || {
        backend_stats(admin, "p", backup_addr)["active"] == 1
    });
    assert!(only_held, "the backup keeps exactly the held session");
    held.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let rest = read_to_eof(&mut held, Duration::from_secs(5)).expect("backup closes after us");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn quick_mode_backend_backup_option_stands_in_for_a_dead_primary() {
    let primary_port = reserved();
    let primary_addr = primary_port.addr;
    let mut primary = Some(Server::on(primary_addr, "primary"));
    let backup = Server::on(localhost(0), "backup");
    let backup_addr = backup.addr();
    let admin = free_addr();
    let lb = Balancer::builder(free_addr())
        .backend(primary_addr)
        .opt("--backend", &format!("{backup_addr},backup,weight=2"))
        .opt("--health-interval", "200ms")
        .opt("--rise", "1")
        .opt("--fall", "1")
        .opt("--admin", &admin.to_string())
        .start();
    wait_states(
        &lb,
        admin,
        "default",
        &[(primary_addr, "up"), (backup_addr, "up")],
    );
    assert_eq!(backend_stats(admin, "default", backup_addr)["backup"], true);
    assert_eq!(backend_stats(admin, "default", backup_addr)["weight"], 2);

    let names = ask_many(lb.listen);
    assert_eq!(count(&names, "primary"), REQUESTS, "{names:?}");
    assert_eq!(backup.served(), 0);

    drop(primary.take());
    wait_states(&lb, admin, "default", &[(primary_addr, "down")]);
    let names = ask_many(lb.listen);
    assert_eq!(count(&names, "backup"), REQUESTS, "{names:?}");
    assert_eq!(backup.served(), REQUESTS);
}
