//! Two balancers with the same configuration behind the kernel's own ECMP
//! routing send each client to the same backend whichever of them receives
//! it (source-hash is deterministic across instances), and keep doing so
//! through the survivor when one balancer's route is withdrawn, as a
//! routing daemon would on its failure.
//!
//! Topology, built in network namespaces with 198.18.0.0/15 addresses:
//!
//! ```text
//! client 198.18.0.10-41 ─ router ─┬─ lb1 198.18.1.2 ─┐  (both hold the service
//!                       ECMP to   ├─ lb2 198.18.2.2 ─┤   address 198.19.0.1)
//!                       198.19.0.1└─ backends 198.18.3.11-13
//! ```

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use support::netns::{link, Netns};
use support::*;

const SERVICE: &str = "198.19.0.1:8080";
const CLIENTS: u8 = 32;
const CONNECTIONS_PER_CLIENT: usize = 8;

struct Lab {
    client: Netns,
    router: Netns,
    lb1: Netns,
    lb2: Netns,
    backends: Netns,
}

fn build() -> Result<Lab, String> {
    let lab = Lab {
        client: Netns::create("b4c")?,
        router: Netns::create("b4r")?,
        lb1: Netns::create("b4l1")?,
        lb2: Netns::create("b4l2")?,
        backends: Netns::create("b4be")?,
    };
    let r = &lab.router;
    link(&lab.client, "c0", "198.18.0.2/24", r, "r0", "198.18.0.1/24")?;
    link(&lab.lb1, "l0", "198.18.1.2/24", r, "r1", "198.18.1.1/24")?;
    link(&lab.lb2, "l0", "198.18.2.2/24", r, "r2", "198.18.2.1/24")?;
    link(
        &lab.backends,
        "b0",
        "198.18.3.2/24",
        r,
        "r3",
        "198.18.3.1/24",
    )?;
    for i in 0..CLIENTS {
        lab.client.ip(&[
            "addr",
            "add",
            &format!("198.18.0.{}/24", 10 + i),
            "dev",
            "c0",
        ])?;
    }
    for b in 11..=13 {
        lab.backends
            .ip(&["addr", "add", &format!("198.18.3.{b}/24"), "dev", "b0"])?;
    }
    for (ns, gateway) in [
        (&lab.client, "198.18.0.1"),
        (&lab.lb1, "198.18.1.1"),
        (&lab.lb2, "198.18.2.1"),
        (&lab.backends, "198.18.3.1"),
    ] {
        ns.ip(&["route", "add", "default", "via", gateway])?;
    }
    for lb in [&lab.lb1, &lab.lb2] {
        lb.ip(&["addr", "add", "198.19.0.1/32", "dev", "lo"])?;
    }
    r.sysctl("net.ipv4.ip_forward=1")?;
    // Hash on ports too, so one client's connections spread over both.
    r.sysctl("net.ipv4.fib_multipath_hash_policy=1")?;
    r.ip(&[
        "route",
        "add",
        "198.19.0.1/32",
        "nexthop",
        "via",
        "198.18.1.2",
        "nexthop",
        "via",
        "198.18.2.2",
    ])?;
    Ok(lab)
}

fn config() -> String {
    format!(
        r#"(
    global: (workers: 2),
    listeners: [(name: "service", bind: "{SERVICE}", pool: "app")],
    pools: [(name: "app", policy: "source-hash", backends: [
        (address: "198.18.3.11:8080"), (address: "198.18.3.12:8080"), (address: "198.18.3.13:8080"),
    ])],
)"#
    )
}

/// From each client address, `CONNECTIONS_PER_CLIENT` connections to the
/// service; returns the backend names each address was answered by.
fn round(lab: &Lab) -> BTreeMap<Ipv4Addr, BTreeSet<String>> {
    lab.client.run(|| {
        let service: SocketAddr = SERVICE.parse().expect("service address");
        let mut seen = BTreeMap::new();
        for i in 0..CLIENTS {
            let ip = Ipv4Addr::new(198, 18, 0, 10 + i);
            for _ in 0..CONNECTIONS_PER_CLIENT {
                let name = ask(ip, service).unwrap_or_else(|e| format!("error: {e}"));
                seen.entry(ip).or_insert_with(BTreeSet::new).insert(name);
            }
        }
        seen
    })
}

/// One connection from `ip`: the backend's name line.
fn ask(ip: Ipv4Addr, service: SocketAddr) -> std::io::Result<String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::from((ip, 0)).into())?;
    socket.connect_timeout(&service.into(), Duration::from_secs(3))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let _ = stream.write_all(b"bye");
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Access-log lines of `lb` per client address.
fn clients_seen(lb: &Balancer) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for a in lb.access_logs() {
        let ip = a
            .client
            .rsplit_once(':')
            .map_or(a.client.clone(), |(ip, _)| ip.to_string());
        *seen.entry(ip).or_insert(0) += 1;
    }
    seen
}

#[test]
fn two_balancers_behind_ecmp_send_each_client_to_one_backend_and_the_survivor_keeps_it() {
    if !support::skip::require_programs(&["ip", "sysctl"]) {
        return;
    }
    let lab = match build() {
        Ok(lab) => lab,
        Err(why) => {
            support::skip::skip(&format!("cannot build the network namespaces: {why}"), &[]);
            return;
        }
    };
    let _backends = lab.backends.host(|| {
        (11..=13)
            .map(|b| {
                let addr = SocketAddr::from(([198, 18, 3, b], 8080));
                Backend::identity_on(addr, &format!("backend-{b}"))
            })
            .collect::<Vec<_>>()
    });
    let service: SocketAddr = SERVICE.parse().expect("service address");
    let lb1 = Balancer::with_config_in(&lab.lb1.name, &config(), service);
    let lb2 = Balancer::with_config_in(&lab.lb2.name, &config(), service);

    let before = round(&lab);
    let total = usize::from(CLIENTS) * CONNECTIONS_PER_CLIENT;
    let via = |lb: &Balancer| {
        wait_until(Duration::from_secs(3), || {
            clients_seen(&lb1).values().sum::<usize>() + clients_seen(&lb2).values().sum::<usize>()
                >= total
        });
        clients_seen(lb)
    };
    let (seen1, seen2) = (via(&lb1), via(&lb2));
    let both = seen1.keys().filter(|ip| seen2.contains_key(*ip)).count();
    println!(
        "{CLIENTS} clients × {CONNECTIONS_PER_CLIENT} connections: lb1 took {}, lb2 took {}; {both} clients reached both",
        seen1.values().sum::<usize>(),
        seen2.values().sum::<usize>()
    );
    assert!(
        !seen1.is_empty() && !seen2.is_empty(),
        "ECMP sent everything to one balancer"
    );
    assert!(
        both >= usize::from(CLIENTS) / 4,
        "only {both} clients reached both balancers: the test would prove little"
    );
    let mut mapping = BTreeMap::new();
    for (ip, names) in &before {
        assert_eq!(
            names.len(),
            1,
            "client {ip} reached several backends: {names:?}"
        );
        let name = names.iter().next().expect("one name").clone();
        assert!(name.starts_with("backend-"), "client {ip}: {name}");
        mapping.insert(*ip, name);
    }
    let used: BTreeSet<_> = mapping.values().collect();
    assert!(used.len() >= 2, "every client on one backend: {used:?}");

    // lb1 fails; its route is withdrawn, as BIRD or ExaBGP would.
    lab.router
        .ip(&["route", "replace", "198.19.0.1/32", "via", "198.18.2.2"])
        .expect("withdraw lb1's route");
    let lb1_before = clients_seen(&lb1).values().sum::<usize>();
    let after = round(&lab);
    let unchanged = after
        .iter()
        .filter(|(ip, names)| names.len() == 1 && names.iter().next() == mapping.get(*ip))
        .count();
    println!(
        "after withdrawing lb1: {unchanged}/{CLIENTS} clients on the same backend as before ({:.2})",
        unchanged as f64 / f64::from(CLIENTS)
    );
    assert_eq!(
        clients_seen(&lb1).values().sum::<usize>(),
        lb1_before,
        "lb1 still received connections after its route was withdrawn"
    );
    assert_eq!(unchanged, usize::from(CLIENTS), "{after:?}");
}
