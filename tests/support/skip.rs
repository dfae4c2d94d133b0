//! Tests that need something from outside the project (a program such as
//! HAProxy or Chromium, root, a high open-file limit) and cannot have it.
//!
//! Under `CI=true` a missing dependency fails the test: CI installs them all
//! (`make test-deps`), so a test that would skip there is broken. Elsewhere
//! the test prints a notice, appends a line to `target/skipped-tests.txt`
//! (which `make test` empties first and sums up at the end), and returns.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The Debian package that provides each program the tests run.
const PACKAGES: &[(&str, &str)] = &[
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    (super::proxy::NGINX_STREAM_MODULE, "libnginx-mod-stream"),
    ("dnsmasq", "dnsmasq"),
    ("dig", "bind9-dnsutils"),
    ("ip", "iproute2"),
    ("sysctl", "procps"),
    ("chromium", "chromium"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
    ("logrotate", "logrotate"),
];

/// Where skips are recorded: `skipped-tests.txt` in Cargo's target
/// directory (the parent of the tests' own temporary directory).
pub fn record_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("skipped-tests.txt")
}

/// Whether every one of `programs` (names on `PATH`, or absolute paths) is
/// here. If not, the current test is skipped (see the module docs) and the
/// caller must return at once.
pub fn require_programs(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !super::proxy::installed(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let packages: Vec<&str> = missing.iter().map(|p| package_of(p)).collect();
    skip(
        &format!("{} not installed", missing.join(" and ")),
        &packages,
    );
    false
}

/// Skips the current test because of `reason`; `packages` are the Debian
/// packages that would let it run (empty when none would, e.g. "needs
/// root"). Under `CI=true` this panics instead.
pub fn skip(reason: &str, packages: &[&str]) {
    let test = std::thread::current()
        .name()
        .unwrap_or("an unnamed test")
        .to_string();
    let remedy = if packages.is_empty() {
        String::new()
    } else {
        format!(" (apt package: {})", packages.join(" "))
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason}{remedy}; under CI=true a test may not skip");
    }
    println!("SKIPPED {test}: {reason}{remedy}");
    let path = record_path();
    let line = format!("{test}: {reason}{remedy}\n");
    // One append per line: lines from parallel tests do not interleave.
    let recorded = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = recorded {
        println!("(could not record the skip in {}: {e})", path.display());
    }
}

fn package_of(program: &str) -> &str {
    PACKAGES
        .iter()
        .find(|(p, _)| *p == program)
        .map_or(program, |(_, package)| package)
}
