//! Network namespaces for tests that need more than one host: created with
//! `ip netns`, entered per thread with setns(2), removed on drop. Only
//! addresses from 198.18.0.0/15 (set aside for network testing) are used,
//! and only inside these namespaces.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;

/// A named network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `NAME-PID` with its loopback up. `Err` says why it could not
    /// (not root, no `ip`, namespaces not allowed here).
    pub fn create(name: &str) -> Result<Netns, String> {
        let name = format!("{name}-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NAME sysctl -qw SETTING`.
    pub fn sysctl(&self, setting: &str) -> Result<(), String> {
        run(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-qw", setting],
        )
    }

    /// Runs `f` on a thread that lives in this namespace: sockets it
    /// creates (and threads it spawns) belong to the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on an open namespace descriptor; it changes only
            // the calling thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace")
    }
}

/// A value made inside a namespace (e.g. backends) that must also be
/// dropped there: a `Backend` wakes its own accept by connecting to its
/// address, which only answers inside. Drops even when a test panics.
pub struct Hosted<T: Send + 'static> {
    value: Option<T>,
    netns: String,
}

impl Netns {
    /// Runs `make` in this namespace and keeps what it returns until drop.
    pub fn host<T: Send + 'static>(&self, make: impl FnOnce() -> T + Send + 'static) -> Hosted<T> {
        Hosted {
            value: Some(self.run(make)),
            netns: self.name.clone(),
        }
    }
}

impl<T: Send + 'static> Drop for Hosted<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            let ns = Netns {
                name: self.netns.clone(),
            };
            ns.run(move || drop(value));
            // Not ours to delete: forget the temporary handle.
            std::mem::forget(ns);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A veth pair from `a` (interface `a_if`, address `a_addr`) to `b`.
pub fn link(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Result<(), String> {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    a.ip(&["addr", "add", a_addr, "dev", a_if])?;
    b.ip(&["addr", "add", b_addr, "dev", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
