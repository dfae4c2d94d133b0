//! The running configuration written back as a file: `GET /config` shows
//! runtime changes and `--check` accepts it; `--dump-config` fills in
//! every default and fails as `--check` does on a bad file.

use crate::support;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use support::balancer::{run_to_completion, TempDir};
use support::http::{exchange, get, post};
use support::*;

const RUN_LIMIT: Duration = Duration::from_secs(10);

/// Writes `contents` to a fresh temp dir as `name` and runs the binary
/// there with `flag --config NAME`.
fn run_on(flag: &str, name: &str, contents: &str) -> Output {
    let dir = TempDir::new("dump");
    dir.write(name, contents);
    run_to_completion(&[flag, "--config", name], Some(dir.path()), RUN_LIMIT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn authorized_get(admin: SocketAddr, target: &str, token: &str) -> support::http::HttpResponse {
    let raw = format!(
        "GET {target} HTTP/1.1\r\nHost: b4\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    exchange(admin, raw.as_bytes()).expect("admin answers")
}

#[test]
fn get_config_shows_an_added_backend_and_passes_check_without_the_token() {
    let a = Backend::identity("a");
    let added = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let lb = Balancer::with_config(
        &format!(
            r#"(
    listeners: [(name: "web", bind: "{listen}", pool: "web")],
    pools: [(name: "web", policy: "least-connections", backends: [(address: "{}", weight: 3)])],
    admin: (bind: "{admin}", token: "s3cret-token"),
)"#,
            a.addr()
        ),
        listen,
    );
    assert_eq!(get(admin, "/config").status, 401, "needs the token");
    let raw = format!(
        "POST /backend/add?pool=web&address={added}&weight=2 HTTP/1.1\r\nHost: b4\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 0\r\n\r\n"
    );
    let response = exchange(admin, raw.as_bytes()).expect("admin answers");
    assert_eq!(response.status, 200, "{}", response.body);

    let response = authorized_get(admin, "/config", "s3cret-token");
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.body;
    assert!(
        !body.contains("s3cret-token"),
        "the token is never shown:\n{body}"
    );
    assert!(body.starts_with("// admin.token is set"), "{body}");
    assert!(body.contains(&format!("address: \"{added}\"")), "{body}");
    assert!(body.contains("weight: 2"), "{body}");
    assert!(body.contains("policy: \"least-connections\""), "{body}");
    // Fed back to the binary: the admin bind is loopback, so the file is
    // valid without the token as it is.
    let checked = run_on("--check", "running.ron", &body);
    assert!(
        checked.status.success(),
        "{}\n{body}",
        text(&checked.stderr)
    );
    assert!(text(&checked.stdout).contains("running.ron: ok"));
    // And it is what runs: dumping it again gives the same text.
    let again = run_on("--dump-config", "running.ron", &body);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let without_note: String = body.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(text(&again.stdout), without_note);
    assert_eq!(post(admin, "/config").status, 405);
    drop(lb);
}

#[test]
fn dump_config_fills_in_every_default_and_passes_check() {
    let minimal = r#"(
    listeners: [(bind: "127.0.0.1:8080")],
    pools: [(backends: [(address: "127.0.0.1:9001")])],
)"#;
    let out = run_on("--dump-config", "minimal.ron", minimal);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dumped = text(&out.stdout);
    for default in [
        "connect: \"3s\"",
        "drain: \"10s\"",
        "policy: \"round-robin\"",
        "interval: \"2s\"",
        "when_all_down: \"fail-fast\"",
        "weight: 1",
    ] {
        assert!(dumped.contains(default), "{default} missing:\n{dumped}");
    }
    let checked = run_on("--check", "dumped.ron", &dumped);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
}

#[test]
fn dump_config_of_a_bad_file_fails_with_the_errors_check_gives() {
    let bad = r#"(
    timeouts: (connect: "soon"),
    listeners: [(bind: "127.0.0.1:8080", pool: "nowhere")],
    pools: [(backends: [(address: "127.0.0.1:9001")])],
)"#;
    let dumped = run_on("--dump-config", "bad.ron", bad);
    let checked = run_on("--check", "bad.ron", bad);
    assert_eq!(dumped.status.code(), Some(1));
    assert_eq!(checked.status.code(), Some(1));
    assert!(dumped.stdout.is_empty(), "{}", text(&dumped.stdout));
    let errors = text(&dumped.stderr);
    assert_eq!(errors, text(&checked.stderr));
    assert!(errors.contains("bad.ron: timeouts.connect"), "{errors}");
    assert!(errors.contains("bad.ron: listeners[0].pool"), "{errors}");
    let both = run_to_completion(
        &["--check", "--dump-config", "--config", "bad.ron"],
        None,
        RUN_LIMIT,
    );
    assert_eq!(both.status.code(), Some(2), "a usage error");
}
