//! The command line: `--check` validation with precise error messages,
//! `--help`, `--version`, and usage errors.

use crate::support;

use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

use support::balancer::{is_ready_line, run_to_completion, TempDir};

const RUN_LIMIT: Duration = Duration::from_secs(10);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `name` with `contents` in a fresh temp dir and runs
/// `--check --config NAME` from that dir (so messages name `NAME`).
fn check(name: &str, contents: &str) -> Output {
    let dir = TempDir::new("check");
    dir.write(name, contents);
    run_to_completion(&["--check", "--config", name], Some(dir.path()), RUN_LIMIT)
}

/// Lines of stderr that name the file.
fn error_lines<'a>(err: &'a str, file: &str) -> Vec<&'a str> {
    let prefix = format!("{file}:");
    err.lines().filter(|l| l.contains(&prefix)).collect()
}

/// Parses `FILE:LINE:COL:` at the start of the part of `line` that begins
/// with `FILE:`; returns (LINE, COL).
fn line_col(line: &str, file: &str) -> Option<(u32, u32)> {
    let rest = &line[line.find(&format!("{file}:"))? + file.len() + 1..];
    let mut parts = rest.splitn(3, ':');
    let l = parts.next()?.trim().parse().ok()?;
    let c = parts.next()?.trim().parse().ok()?;
    Some((l, c))
}

const GOOD: &str = r#"(
    global: (workers: 2, buffer_size: 16384, log_level: "info", access_log: true, retries: 3),
    timeouts: (connect: "3s", idle: "5m", drain: "10s"),
    listeners: [
        (name: "web", bind: "127.0.0.1:8080", pool: "web"),
        (name: "api", bind: "[::]:8081", pool: "api"),
    ],
    pools: [
        (name: "web", policy: "round-robin", backends: [(address: "127.0.0.1:9001"), (address: "127.0.0.1:9002", weight: 2)]),
        (name: "api", backends: [(address: "[::1]:9003")]),
    ],
)
"#;

#[test]
fn check_accepts_good_config() {
    let out = check("good.ron", GOOD);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("good.ron") && all.contains("ok"),
        "expected `good.ron: ok`, got:\n{all}"
    );
}

#[test]
fn check_accepts_minimal_config_with_defaults() {
    let out = check(
        "minimal.ron",
        r#"(
    listeners: [(name: "l", bind: "127.0.0.1:1", pool: "p")],
    pools: [(name: "p", backends: [(address: "127.0.0.1:2")])],
)"#,
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
}

#[test]
fn check_only_validates_and_does_not_bind() {
    // The listener's address is in use: validation must not try to bind it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = format!(
        r#"(
    listeners: [(name: "l", bind: "{addr}", pool: "p")],
    pools: [(name: "p", backends: [(address: "127.0.0.1:9")])],
)"#
    );
    let out = check("inuse.ron", &cfg);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
}

#[test]
fn check_reports_syntax_error_with_line_and_column() {
    // Line 4 lacks the comma after `name: "web"`.
    let cfg = r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
    pools: [
        (name: "web" backends: [(address: "127.0.0.1:9001")]),
    ],
)
"#;
    let out = check("syntax.ron", cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    let lines = error_lines(&err, "syntax.ron");
    assert!(!lines.is_empty(), "no error naming syntax.ron:\n{err}");
    let (line, col) = lines
        .iter()
        .find_map(|l| line_col(l, "syntax.ron"))
        .unwrap_or_else(|| panic!("no `syntax.ron:LINE:COL:` in:\n{err}"));
    assert_eq!(line, 4, "wrong line in:\n{err}");
    assert!(col >= 9, "implausible column {col} in:\n{err}");
}

#[test]
fn check_reports_unknown_field_with_its_path() {
    let cfg = r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
    pools: [(name: "web", backends: [
        (address: "127.0.0.1:9001"),
        (address: "127.0.0.1:9002", wieght: 2),
    ])],
)
"#;
    let out = check("typo.ron", cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    let lines = error_lines(&err, "typo.ron");
    let line = lines
        .iter()
        .find(|l| l.contains("wieght"))
        .unwrap_or_else(|| panic!("no error mentioning `wieght`:\n{err}"));
    assert!(
        line.contains("pools[0].backends[1]"),
        "error does not name the path pools[0].backends[1]: {line}"
    );
    let (l, _) = line_col(line, "typo.ron").unwrap_or_else(|| panic!("no LINE:COL in {line}"));
    assert_eq!(l, 5, "wrong line: {line}");
}

#[test]
fn check_reports_bad_backend_address_with_its_path() {
    let cfg = r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
    pools: [(name: "web", backends: [
        (address: "127.0.0.1:9001"),
        (address: "127.0.0.1:9002"),
        (address: "10.0.0.3:http"),
    ])],
)
"#;
    let out = check("bad.ron", cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    let lines = error_lines(&err, "bad.ron");
    assert!(
        lines.iter().any(|l| l.contains("pools[0].backends[2].address") && l.contains("10.0.0.3:http")),
        "expected `bad.ron: pools[0].backends[2].address: \"10.0.0.3:http\" is not a socket address`, got:\n{err}"
    );
    assert_eq!(lines.len(), 1, "only one error expected:\n{err}");
}

#[test]
fn check_reports_undefined_pool() {
    let cfg = r#"(
    listeners: [(name: "front", bind: "127.0.0.1:8080", pool: "api")],
    pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])],
)
"#;
    let out = check("nopool.ron", cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        error_lines(&err, "nopool.ron")
            .iter()
            .any(|l| l.contains("listeners[0].pool") && l.contains("\"api\"")),
        "expected `nopool.ron: listeners[0].pool: \"api\" is not a pool`, got:\n{err}"
    );
}

#[test]
fn check_reports_bad_duration() {
    let cfg = r#"(
    timeouts: (connect: "3 parsecs"),
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
    pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])],
)
"#;
    let out = check("dur.ron", cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        error_lines(&err, "dur.ron")
            .iter()
            .any(|l| l.contains("timeouts.connect") && l.contains("3 parsecs")),
        "expected `dur.ron: timeouts.connect: \"3 parsecs\" is not a duration`, got:\n{err}"
    );
}

#[test]
fn check_reports_every_semantic_error_at_once() {
    let cfg = r#"(
    global: (log_level: "loud"),
    timeouts: (idle: "forever"),
    listeners: [
        (name: "web", bind: "127.0.0.1:8080", pool: "web"),
        (name: "api", bind: "127.0.0.1:8081", pool: "nope"),
    ],
    pools: [
        (name: "web", policy: "round-robin", backends: [(address: "127.0.0.1:9001"), (address: "localhost-ish")]),
        (name: "web", backends: [(address: "127.0.0.1:9002")]),
        (name: "empty", backends: []),
        (name: "odd", policy: "random-walk", backends: [(address: "127.0.0.1:9003")]),
    ],
)
"#;
    let out = check("multi.ron", cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    let lines = error_lines(&err, "multi.ron");
    let has = |what: &str, parts: &[&str]| {
        assert!(
            lines.iter().any(|l| parts.iter().all(|p| l.contains(p))),
            "missing the {what} error (a line containing {parts:?}); stderr:\n{err}"
        );
    };
    has("log level", &["global.log_level", "loud"]);
    has("duration", &["timeouts.idle", "forever"]);
    has("undefined pool", &["listeners[1].pool", "nope"]);
    has(
        "address",
        &["pools[0].backends[1].address", "localhost-ish"],
    );
    has("duplicate name", &["pools[1].name", "web"]);
    has("empty backends", &["pools[2].backends"]);
    has("policy", &["pools[3].policy", "random-walk"]);
    assert!(
        lines.len() >= 7,
        "expected at least 7 errors, got {}:\n{err}",
        lines.len()
    );
}

#[test]
fn quick_mode_admin_off_loopback_is_refused_for_want_of_a_token() {
    let out = run_to_completion(
        &[
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--admin",
            "0.0.0.0:9090",
            "--check",
        ],
        None,
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "stdout:\n{}", stdout(&out));
    assert!(
        stderr(&out).starts_with(
            "admin.token: is required when the admin listener binds 0.0.0.0:9090, which is not a loopback address"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_on_missing_file_fails() {
    let dir = TempDir::new("check-missing");
    let out = run_to_completion(
        &["--check", "--config", "absent.ron"],
        Some(dir.path()),
        RUN_LIMIT,
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "missing file accepted:\n{err}");
    assert!(
        err.contains("absent.ron"),
        "error does not name the file:\n{err}"
    );
}

#[test]
fn help_prints_usage_and_exits_zero() {
    let out = run_to_completion(&["--help"], None, RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("--listen") && text.contains("--config"),
        "usage on stdout lacks --listen/--config:\n{text}"
    );
}

#[test]
fn version_prints_name_and_version() {
    let out = run_to_completion(&["--version"], None, RUN_LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert!(
        stdout(&out).contains("balanciaga4 0.1.0"),
        "stdout: {:?}",
        stdout(&out)
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run_to_completion(
        &[
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--frobnicate",
        ],
        None,
        RUN_LIMIT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("--frobnicate"),
        "message does not name the flag:\n{err}"
    );
    assert!(!err.lines().any(is_ready_line), "started anyway:\n{err}");
}

#[test]
fn missing_flag_value_is_a_usage_error() {
    let out = run_to_completion(&["--backend", "127.0.0.1:2", "--listen"], None, RUN_LIMIT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("--listen"),
        "message does not name the flag:\n{err}"
    );
}

#[test]
fn unknown_policy_flag_value_is_a_usage_error() {
    let out = run_to_completion(
        &[
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--policy",
            "least-magic",
        ],
        None,
        RUN_LIMIT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("--policy") && err.contains("least-magic"),
        "message does not name the flag and value:\n{err}"
    );
}
