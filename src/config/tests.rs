//! Tests of the config module through its public entry points: parsing RON
//! text and files, defaults, and every error a user can meet, with the exact
//! wording they see. (Duration syntax and built-config checks are tested in
//! `duration.rs` and `validate.rs`.)

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

const DEMO: &str = include_str!("../../config/demo.ron");
const REFERENCE: &str = include_str!("../../config/balanciaga4.ron");

/// A valid config to which a test adds or changes one thing.
const MINIMAL: &str = r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
    pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])],
)"#;

fn parse(source: &str) -> Config {
    match Config::parse(source, "test.ron") {
        Ok(config) => config,
        Err(e) => panic!("expected the config to parse, got:\n{e}"),
    }
}

pub(super) fn errors(source: &str) -> Vec<String> {
    match Config::parse(source, "test.ron") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(e) => e.errors,
    }
}

/// The single error of `source`.
pub(super) fn error(source: &str) -> String {
    let mut all = errors(source);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

/// MINIMAL with its pools replaced by `pools`.
fn with_pools(pools: &str) -> String {
    format!(
        r#"( listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")], pools: {pools} )"#
    )
}

/// MINIMAL with its listeners replaced by `listeners`.
fn with_listeners(listeners: &str) -> String {
    format!(
        r#"( listeners: {listeners}, pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])] )"#
    )
}

/// MINIMAL plus a `global` or `timeouts` section.
fn with_section(section: &str) -> String {
    MINIMAL.replacen('(', &format!("( {section},"), 1)
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(a), port))
}

#[test]
fn defaults_apply_when_sections_and_fields_are_omitted() {
    let config = parse(MINIMAL);
    assert_eq!(config.global, Global::default());
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.global.buffer_size, 16384);
    assert_eq!(config.global.log_level, LevelFilter::Info);
    assert!(config.global.access_log);
    assert_eq!(config.global.retries, 3);
    assert_eq!(config.timeouts.connect, Duration::from_secs(3));
    assert_eq!(config.timeouts.idle, Duration::from_secs(300));
    assert_eq!(config.timeouts.drain, Duration::from_secs(10));
    let pool = &config.pools[0];
    assert_eq!(pool.policy, PolicyKind::RoundRobin);
    assert_eq!(pool.backends[0].weight, 1);
}

#[test]
fn workers_zero_becomes_one_per_core_and_other_counts_are_kept() {
    let config = parse(&with_section("global: (workers: 0)"));
    assert_eq!(config.global.workers, available_workers());
    assert!(config.global.workers >= 1);
    let config = parse(&with_section("global: (workers: 7)"));
    assert_eq!(config.global.workers, 7);
}

#[test]
fn omitted_names_default_to_the_bind_text_and_the_default_pool() {
    let config = parse(
        r#"( listeners: [(bind: "127.0.0.1:8080")],
             pools: [(backends: [(address: "127.0.0.1:9001")])] )"#,
    );
    assert_eq!(config.listeners[0].name, "127.0.0.1:8080");
    assert_eq!(config.listeners[0].pool, "default");
    assert_eq!(config.pools[0].name, "default");
}

#[test]
fn every_written_field_is_read() {
    let config = parse(
        r#"(
        global: (workers: 3, buffer_size: 4096, log_level: "DEBUG", access_log: false,
                 access_log_file: "/dev/null", access_log_format: "json", retries: 0,
                 zero_copy: "off",
                 syslog: (target: "udp://127.0.0.1:514", format: "rfc3164",
                               facility: "local3", tag: "lb", logs: "access")),
        timeouts: (connect: "500ms", idle: "1m30s", drain: "0s"),
        listeners: [(name: "a", bind: "127.0.0.1:8080", pool: "p")],
        pools: [(name: "p", policy: "round-robin", backends: [
            (address: "127.0.0.1:9001", weight: 0),
            (address: "[::1]:9002", weight: 5),
        ])],
    )"#,
    );
    let expected = Config {
        admin: None,
        global: Global {
            workers: 3,
            buffer_size: 4096,
            log_level: LevelFilter::Debug,
            access_log: false,
            access_log_file: Some("/dev/null".into()),
            access_log_format: AccessLogFormat::Json,
            syslog: Some(SyslogConfig {
                target: SyslogTarget::Udp("127.0.0.1:514".parse().unwrap()),
                format: SyslogFormat::Rfc3164,
                facility: 19,
                tag: "lb".into(),
                logs: SyslogLogs::Access,
            }),
            retries: 0,
            zero_copy: ZeroCopy::Off,
            user: None,
            group: None,
        },
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            idle: Duration::from_secs(90),
            drain: Duration::ZERO,
        },
        listeners: vec![ListenerConfig::tcp(
            "a",
            "127.0.0.1:8080",
            vec![v4([127, 0, 0, 1], 8080)],
            "p",
        )],
        pools: vec![PoolConfig {
            name: "p".into(),
            policy: PolicyKind::RoundRobin,
            backends: vec![
                BackendConfig::ip(v4([127, 0, 0, 1], 9001), 0),
                BackendConfig::ip(SocketAddr::from((Ipv6Addr::LOCALHOST, 9002)), 5),
            ],
            health: HealthConfig::default(),
            resolve_every: None,
            send_proxy: None,
            queue: Default::default(),
        }],
    };
    assert_eq!(config, expected);
}

#[test]
fn demo_config_parses_to_web_round_robin_over_alpha_and_beta() {
    let config = parse(DEMO);
    assert_eq!(config.listeners.len(), 1);
    let web = &config.listeners[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.addresses, [v4([127, 0, 0, 1], 8080)]);
    let demo = config.pool(&web.pool).expect("pool of the web listener");
    assert_eq!(demo.name, "demo");
    assert_eq!(demo.policy, PolicyKind::RoundRobin);
    let addresses: Vec<SocketAddr> = demo
        .backends
        .iter()
        .flat_map(|b| b.addresses.clone())
        .collect();
    assert_eq!(
        addresses,
        [v4([127, 0, 0, 1], 9001), v4([127, 0, 0, 1], 9002)]
    );
}

#[test]
fn reference_config_parses_and_shows_the_defaults() {
    let config = parse(REFERENCE);
    assert_eq!(config.global, Global::default());
    assert_eq!(config.timeouts, Timeouts::default());
    assert!(config.pool("web").is_some());
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("balanciaga4-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.ron");
    std::fs::write(&good, MINIMAL).expect("write good.ron");
    assert_eq!(Config::load(&good), Ok(parse(MINIMAL)));

    let bad = dir.join("bad.ron");
    std::fs::write(&bad, with_section("global: (workers: 5000)")).expect("write bad.ron");
    let e = Config::load(&bad).expect_err("workers: 5000 is refused");
    assert!(e.errors[0].starts_with(&format!("{}: global.workers: ", bad.display())));
    std::fs::remove_dir_all(&dir).expect("clean temp dir");
}

#[test]
fn syslog_section_defaults_and_bad_values_name_their_field() {
    let c = parse(&with_section("global: (syslog: ())"));
    let s = c.global.syslog.expect("syslog set");
    assert_eq!(s.target, SyslogTarget::Unix("/dev/log".into()));
    assert_eq!(
        (s.format, s.facility, s.logs),
        (SyslogFormat::Rfc5424, 3, SyslogLogs::Both)
    );
    assert_eq!(parse(&with_section("global: ()")).global.syslog, None);
    let cases = [
        (r#"syslog: (target: "log")"#, "global.syslog.target: "),
        (r#"syslog: (format: "5424")"#, "global.syslog.format: "),
        (
            r#"syslog: (facility: "local9")"#,
            "global.syslog.facility: ",
        ),
        (r#"syslog: (tag: "")"#, "global.syslog.tag: "),
        (r#"syslog: (logs: "none")"#, "global.syslog.logs: "),
        (r#"access_log_format: "text""#, "global.access_log_format: "),
    ];
    for (field, want) in cases {
        let e = error(&with_section(&format!("global: ({field})")));
        assert!(e.contains(want), "{field}: {e}");
    }
}

#[test]
fn access_log_file_must_not_be_empty() {
    // Whether it opens is checked by `preflight`, not here: parsing stays pure.
    parse(&with_section(
        r#"global: (access_log_file: "/nonexistent/balanciaga4/access.log")"#,
    ));
    let e = error(&with_section(r#"global: (access_log_file: "")"#));
    assert!(
        e.ends_with(
            "global.access_log_file: must not be empty (leave the field out to log to stderr)"
        ),
        "{e}"
    );
}

#[test]
fn user_and_group_are_kept_as_written() {
    let config = parse(&with_section(r#"global: (user: "root", group: "0")"#));
    assert_eq!(config.global.user.as_deref(), Some("root"));
    assert_eq!(config.global.group.as_deref(), Some("0"));
    assert_eq!(parse(MINIMAL).global.user, None);
    // A numeric id needs no passwd entry.
    parse(&with_section(r#"global: (user: "4000000001")"#));
}

#[test]
fn user_must_be_a_string() {
    // Whether the user and group exist is checked by `preflight`.
    parse(&with_section(r#"global: (user: "no-such-user-b4")"#));
    let e = error(&with_section(r#"global: (user: 65534)"#));
    assert!(
        e.contains("global.user: expected a string in double quotes, e.g. \"nobody\""),
        "{e}"
    );
}

#[test]
fn a_group_without_a_user_is_an_error() {
    let e = error(&with_section(r#"global: (group: "root")"#));
    assert!(
        e.starts_with("test.ron: global.group: is set without global.user"),
        "{e}"
    );
}

#[test]
fn unreadable_file_is_an_error_naming_the_file() {
    let e = Config::load(Path::new("/nonexistent/balanciaga4.ron")).expect_err("no such file");
    assert_eq!(e.errors.len(), 1);
    assert!(
        e.errors[0].starts_with("/nonexistent/balanciaga4.ron: cannot read the config file: "),
        "{e}"
    );
}

#[test]
fn unknown_field_is_an_error_naming_the_field() {
    let source = r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
    pools: [(name: "web", backends: [
        (address: "127.0.0.1:9001"),
        (address: "127.0.0.1:9002", wieght: 2),
    ])],
)"#;
    assert_eq!(
        error(source),
        "test.ron:5:37: pools[0].backends[1].wieght: unknown field \"wieght\" \
         (did you mean \"weight\"? expected one of: address, weight, max_connections, backup)"
    );
}

#[test]
fn unknown_fields_are_errors_in_every_section() {
    let cases = [
        (
            with_section("colour: 1"),
            "colour: unknown field \"colour\"",
        ),
        (
            with_section("global: (worker: 2)"),
            "global.worker: unknown field \"worker\" (did you mean \"workers\"?",
        ),
        (
            with_section("timeouts: (read: \"1s\")"),
            "timeouts.read: unknown field \"read\"",
        ),
        (
            with_listeners(r#"[(bind: "127.0.0.1:8080", pool: "web", tls: true)]"#),
            "listeners[0].tls: unknown field \"tls\"",
        ),
        (
            with_pools(r#"[(name: "web", backend: [])]"#),
            "pools[0].backend: unknown field \"backend\" (did you mean \"backends\"?",
        ),
    ];
    for (source, expected) in cases {
        let e = error(&source);
        assert!(e.contains(expected), "{e:?} should contain {expected:?}");
    }
}

#[test]
fn wrong_type_is_an_error_with_position_and_path() {
    let source = "(\n    global: (workers: \"four\"),\n)";
    assert_eq!(
        error(source),
        "test.ron:2:23: global.workers: expected a whole number (0 or more), e.g. 4"
    );
    let e = error(&with_section("global: (access_log: \"yes\")"));
    assert!(
        e.ends_with("global.access_log: expected true or false"),
        "{e}"
    );
    let e = error(&with_section("timeouts: (connect: 3)"));
    assert!(
        e.ends_with("timeouts.connect: expected a string in double quotes, e.g. \"3s\""),
        "{e}"
    );
    let e = error(&with_section("global: (retries: 99999999999)"));
    assert!(
        e.contains("global.retries: this number is too large"),
        "{e}"
    );
}

#[test]
fn syntax_error_reports_line_column_and_where_in_the_file() {
    let source = "(\n    listeners: [(bind: \"127.0.0.1:80\" pool: \"x\")],\n)";
    assert_eq!(
        error(source),
        "test.ron:2:39: listeners[0]: expected a comma (`,`) between two fields or list items"
    );
}

#[test]
fn trailing_characters_are_rejected() {
    let e = error(&format!("{MINIMAL}\nextra"));
    assert_eq!(
        e,
        "test.ron:5:1: unexpected text after the end of the config"
    );
}

#[test]
fn truncated_and_empty_files_are_explained() {
    let e = error("(\n    pools: [\n");
    assert!(
        e.starts_with("test.ron:3:1: pools: unexpected end of file"),
        "{e}"
    );
    assert_eq!(
        error("  \n"),
        "test.ron:1:1: the config file is empty; a config looks like ( listeners: [...], pools: [...] )"
    );
}

#[test]
fn missing_address_is_an_error() {
    let e = error(&with_pools(r#"[(name: "web", backends: [(weight: 2)])]"#));
    assert!(
        e.ends_with("pools[0].backends[0]: missing required field \"address\""),
        "{e}"
    );
    let e = error(&with_listeners(r#"[(name: "web", pool: "web")]"#));
    assert!(
        e.ends_with("listeners[0]: missing required field \"bind\""),
        "{e}"
    );
}

#[test]
fn malformed_backend_address_names_its_path() {
    let source = with_pools(
        r#"[(name: "web", backends: [
            (address: "10.0.0.1:80"), (address: "10.0.0.2:80"), (address: "10.0.0.3:http"),
        ])]"#,
    );
    let e = Config::parse(&source, "demo.ron").expect_err("bad address");
    assert_eq!(
        e.errors,
        [
            "demo.ron: pools[0].backends[2].address: \"10.0.0.3:http\" is not a socket address \
          (expected IP:PORT or HOST:PORT, e.g. 10.0.0.1:80 or db.internal:5432)"
        ]
    );
}

#[test]
fn backend_address_without_port_or_with_unknown_host_name_is_an_error() {
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "10.0.0.1")])]"#,
    ));
    assert!(e.contains("\"10.0.0.1\" has no port"), "{e}");
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "db.invalid:5432")])]"#,
    ));
    assert!(e.contains("\"db.invalid:5432\" does not resolve"), "{e}");
}

#[test]
fn a_malformed_value_causes_no_follow_on_errors() {
    // The only backend is malformed: no extra "port 0" or "no backends".
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "nope")])]"#,
    ));
    assert!(e.contains("pools[0].backends[0].address: \"nope\""), "{e}");
    // An unresolvable bind: no extra "resolves to no address".
    let e = error(&with_listeners(
        r#"[(bind: "nohost.invalid:80", pool: "web")]"#,
    ));
    assert!(e.contains("listeners[0].bind:"), "{e}");
}

#[test]
fn listener_pointing_at_an_undefined_pool_lists_the_defined_ones() {
    let source = r#"(
        listeners: [
            (name: "web", bind: "127.0.0.1:8080", pool: "web"),
            (name: "api", bind: "127.0.0.1:8081", pool: "api"),
        ],
        pools: [
            (name: "web", backends: [(address: "127.0.0.1:9001")]),
            (name: "db", backends: [(address: "127.0.0.1:5432")]),
        ],
    )"#;
    assert_eq!(
        error(source),
        "test.ron: listeners[1].pool: \"api\" is not a pool defined in pools (defined: web, db)"
    );
}

#[test]
fn listener_without_pool_and_no_default_pool_gets_a_hint() {
    let e = error(&with_listeners(r#"[(bind: "127.0.0.1:8080")]"#));
    assert_eq!(
        e,
        "test.ron: listeners[0].pool: \"default\" is not a pool defined in pools (defined: web); \
         a listener without `pool` uses \"default\""
    );
}

#[test]
fn duplicate_listener_and_pool_names_are_errors() {
    let source = r#"(
        listeners: [
            (name: "web", bind: "127.0.0.1:8080", pool: "web"),
            (name: "web", bind: "127.0.0.1:8081", pool: "web"),
        ],
        pools: [
            (name: "web", backends: [(address: "127.0.0.1:9001")]),
            (name: "web", backends: [(address: "127.0.0.1:9002")]),
        ],
    )"#;
    assert_eq!(
        errors(source),
        [
            "test.ron: listeners[1].name: \"web\" is already the name of listeners[0]; names must be unique",
            "test.ron: pools[1].name: \"web\" is already the name of pools[0]; names must be unique",
        ]
    );
}

#[test]
fn duplicate_backend_address_in_a_pool_is_an_error() {
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "127.0.0.1:9001"), (address: "127.0.0.1:9001")])]"#,
    ));
    assert_eq!(
        e,
        "test.ron: pools[0].backends[1].address: 127.0.0.1:9001 is already listed as \
         pools[0].backends[0]; list it once and raise its weight instead"
    );
}

#[test]
fn the_same_backend_may_serve_two_pools() {
    let config = parse(
        r#"( listeners: [(bind: "127.0.0.1:8080", pool: "a"), (bind: "127.0.0.1:8081", pool: "b")],
             pools: [(name: "a", backends: [(address: "127.0.0.1:9001")]),
                     (name: "b", backends: [(address: "127.0.0.1:9001")])] )"#,
    );
    assert_eq!(config.pools.len(), 2);
}

#[test]
fn pool_without_backends_is_an_error() {
    for pools in [r#"[(name: "web", backends: [])]"#, r#"[(name: "web")]"#] {
        let e = error(&with_pools(pools));
        assert!(
            e.starts_with("test.ron: pools[0].backends: pool \"web\" has no backends"),
            "{e}"
        );
    }
}

#[test]
fn pool_whose_every_weight_is_zero_is_an_error() {
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "127.0.0.1:9001", weight: 0), (address: "127.0.0.1:9002", weight: 0)])]"#,
    ));
    assert!(
        e.starts_with("test.ron: pools[0].backends: every backend of pool \"web\" has weight 0"),
        "{e}"
    );
}

#[test]
fn backend_backup_flag_is_read_and_defaults_to_primary() {
    let config = parse(&with_pools(
        r#"[(name: "web", backends: [(address: "127.0.0.1:9001"), (address: "127.0.0.1:9002", backup: true)])]"#,
    ));
    let backup: Vec<bool> = config.pools[0].backends.iter().map(|b| b.backup).collect();
    assert_eq!(backup, [false, true]);
}

#[test]
fn pool_whose_every_backend_is_a_backup_is_an_error() {
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "127.0.0.1:9001", backup: true)])]"#,
    ));
    assert!(
        e.starts_with(
            "test.ron: pools[0].backends: every backend of pool \"web\" has backup: true"
        ),
        "{e}"
    );
}

#[test]
fn unresolvable_bind_is_an_error() {
    let e = error(&with_listeners(
        r#"[(bind: "nohost.invalid:80", pool: "web")]"#,
    ));
    assert!(
        e.starts_with("test.ron: listeners[0].bind: \"nohost.invalid:80\" does not resolve: "),
        "{e}"
    );
}

#[test]
fn bind_without_port_or_with_port_zero_is_an_error() {
    for bind in ["127.0.0.1", "localhost", "[::1]", "::1"] {
        let e = error(&with_listeners(&format!(
            r#"[(bind: "{bind}", pool: "web")]"#
        )));
        assert!(
            e.starts_with(&format!(
                "test.ron: listeners[0].bind: \"{bind}\" has no port"
            )),
            "{e}"
        );
    }
    let e = error(&with_listeners(r#"[(bind: "127.0.0.1:0", pool: "web")]"#));
    assert!(
        e.starts_with("test.ron: listeners[0].bind: \"127.0.0.1:0\" has port 0"),
        "{e}"
    );
    let e = error(&with_listeners(r#"[(bind: "::1:80", pool: "web")]"#));
    assert!(e.contains("has no port"), "{e}");
    let e = error(&with_listeners(r#"[(bind: "fe80::1:x:80", pool: "web")]"#));
    assert!(e.contains("write IPv6 addresses in brackets"), "{e}");
    let e = error(&with_listeners(
        r#"[(bind: "127.0.0.1:http", pool: "web")]"#,
    ));
    assert!(e.contains("does not end in a port number"), "{e}");
}

#[test]
fn dual_stack_bind_stays_one_address() {
    let config = parse(&with_listeners(r#"[(bind: "[::]:8080", pool: "web")]"#));
    assert_eq!(
        config.listeners[0].addresses,
        [SocketAddr::from((Ipv6Addr::UNSPECIFIED, 8080))]
    );
    assert_eq!(config.listeners[0].bind, "[::]:8080");
}

#[test]
fn localhost_bind_resolves_to_every_address_including_127_0_0_1() {
    let config = parse(&with_listeners(
        r#"[(bind: "localhost:8080", pool: "web")]"#,
    ));
    let addresses = &config.listeners[0].addresses;
    assert!(
        addresses.contains(&v4([127, 0, 0, 1], 8080)),
        "{addresses:?}"
    );
    assert!(addresses
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 8080));
    let mut unique = addresses.clone();
    unique.dedup();
    assert_eq!(&unique, addresses, "no duplicates");
    assert_eq!(resolve_bind("localhost:8080").as_ref(), Ok(addresses));
}

#[test]
fn two_listeners_on_the_same_address_is_an_error() {
    let e = error(&with_listeners(
        r#"[(name: "a", bind: "127.0.0.1:8080", pool: "web"), (name: "b", bind: "127.0.0.1:8080", pool: "web")]"#,
    ));
    assert!(
        e.starts_with(
            "test.ron: listeners[1].bind: 127.0.0.1:8080 is already bound by listeners[0] (\"a\")"
        ),
        "{e}"
    );
}

#[test]
fn malformed_duration_is_an_error_with_examples() {
    let e = error(&with_section(r#"timeouts: (connect: "3 parsecs")"#));
    assert_eq!(
        e,
        "test.ron: timeouts.connect: \"3 parsecs\" is not a duration (examples: 500ms, 3s, 1m): \
         unknown unit \"parsecs\" (units are ns, us, ms, s, m, h or d)"
    );
    for bad in ["", "3", "-1s", "99999999999999999999h"] {
        let e = error(&with_section(&format!(r#"timeouts: (idle: "{bad}")"#)));
        assert!(
            e.starts_with(&format!(
                "test.ron: timeouts.idle: \"{bad}\" is not a duration (examples: 500ms, 3s, 1m): "
            )),
            "{e}"
        );
    }
}

#[test]
fn zero_connect_or_idle_timeout_is_an_error_but_zero_drain_is_allowed() {
    let source = with_section(r#"timeouts: (connect: "0s", idle: "0ms", drain: "0s")"#);
    let all = errors(&source);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].starts_with("test.ron: timeouts.connect: must be more than zero"));
    assert!(all[1].starts_with("test.ron: timeouts.idle: must be more than zero"));
}

#[test]
fn unknown_log_level_is_an_error() {
    assert_eq!(
        error(&with_section(r#"global: (log_level: "verbose")"#)),
        "test.ron: global.log_level: \"verbose\" is not a log level \
         (expected off, error, warn, info, debug or trace)"
    );
}

#[test]
fn unknown_policy_is_an_error_listing_the_policies() {
    let e = error(&with_pools(
        r#"[(name: "web", policy: "fastest", backends: [(address: "127.0.0.1:9001")])]"#,
    ));
    assert_eq!(
        e,
        "test.ron: pools[0].policy: \"fastest\" is not a load-balancing policy \
         (expected one of: round-robin, weighted-round-robin, least-connections, power-of-two, random, source-hash)"
    );
}

#[test]
fn no_listeners_is_an_error() {
    let e = error(&with_listeners("[]"));
    assert!(
        e.starts_with("test.ron: listeners: no listeners are defined"),
        "{e}"
    );
    let all = errors("()");
    assert!(all[0].starts_with("test.ron: listeners: no listeners are defined"));
    assert!(all[1].starts_with("test.ron: pools: no pools are defined"));
}

#[test]
fn workers_and_buffer_size_out_of_range_are_errors() {
    let e = error(&with_section("global: (workers: 1025)"));
    assert!(
        e.starts_with("test.ron: global.workers: 1025 is more than the maximum of 1024"),
        "{e}"
    );
    parse(&with_section("global: (workers: 1024)"));
    for size in [0, 1023, 16 * 1024 * 1024 + 1] {
        let e = error(&with_section(&format!("global: (buffer_size: {size})")));
        assert!(
            e.starts_with(&format!(
                "test.ron: global.buffer_size: {size} bytes is out of range (expected 1024 to 16777216"
            )),
            "{e}"
        );
    }
}

#[test]
fn several_errors_are_reported_at_once_in_file_order() {
    let source = r#"(
        pools: [
            (name: "web", policy: "fastest", backends: [
                (address: "10.0.0.x:80"),
                (address: "10.0.0.1:80"),
                (address: "10.0.0.1:80"),
            ]),
            (name: "db", backends: []),
        ],
        listeners: [
            (name: "web", bind: "127.0.0.1", pool: "web"),
            (name: "api", bind: "127.0.0.1:8081", pool: "api"),
        ],
        timeouts: (connect: "3 parsecs", idle: "0s"),
        global: (log_level: "verbose", workers: 5000),
    )"#;
    let all = errors(source);
    let paths: Vec<&str> = all
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "global.workers",
            "global.log_level",
            "timeouts.connect",
            "timeouts.idle",
            "listeners[0].bind",
            "listeners[1].pool",
            "pools[0].policy",
            "pools[0].backends[0].address",
            "pools[0].backends[2].address",
            "pools[1].backends",
        ],
        "{all:#?}"
    );
}

#[test]
fn validate_on_a_built_config_gives_the_same_paths_without_a_file_name() {
    let mut config = parse(MINIMAL);
    assert_eq!(config.validate(), Ok(()));
    config.listeners[0].pool = "api".into();
    config.pools[0].backends.clear();
    let e = config.validate().expect_err("two problems");
    assert_eq!(
        e.errors,
        [
            "listeners[0].pool: \"api\" is not a pool defined in pools (defined: web)",
            "pools[0].backends: pool \"web\" has no backends; add at least one, e.g. backends: [(address: \"127.0.0.1:9001\")]",
        ]
    );
}

#[test]
fn config_error_displays_one_error_per_line() {
    let e = ConfigError {
        errors: vec!["a.ron: first".into(), "a.ron: second".into()],
    };
    assert_eq!(e.to_string(), "a.ron: first\na.ron: second");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("second"));
}

#[test]
fn policy_names_round_trip_and_errors_list_the_names() {
    for policy in PolicyKind::ALL {
        assert_eq!(policy.to_string().parse::<PolicyKind>(), Ok(*policy));
    }
    assert_eq!(
        "round-robin".parse::<PolicyKind>(),
        Ok(PolicyKind::RoundRobin)
    );
    assert_eq!(PolicyKind::RoundRobin.to_string(), "round-robin");
    let e = "RoundRobin"
        .parse::<PolicyKind>()
        .expect_err("not kebab-case");
    assert_eq!(
        e,
        "\"RoundRobin\" is not a load-balancing policy (expected one of: round-robin, weighted-round-robin, least-connections, power-of-two, random, source-hash)"
    );
}

#[test]
fn pool_finds_a_pool_by_name() {
    let config = parse(MINIMAL);
    assert_eq!(config.pool("web").map(|p| p.name.as_str()), Some("web"));
    assert!(config.pool("nope").is_none());
}

#[test]
fn cli_helpers_share_the_file_messages() {
    assert_eq!(parse_log_level("Trace"), Ok(LevelFilter::Trace));
    assert!(parse_log_level("loud").is_err());
    let nowhere = |host: &str| Err(format!("{host:?} does not resolve"));
    assert_eq!(
        parse_backend_address("127.0.0.1:9001", &nowhere),
        Ok((vec![v4([127, 0, 0, 1], 9001)], None))
    );
    assert_eq!(
        parse_backend_address("10.0.0.x:80", &nowhere),
        Err("\"10.0.0.x:80\" does not resolve".into())
    );
    assert_eq!(
        parse_backend_address("not an address", &nowhere),
        Err("\"not an address\" is not a socket address (expected IP:PORT or HOST:PORT, e.g. 10.0.0.1:80 or db.internal:5432)".into())
    );
    assert_eq!(resolve_bind("0.0.0.0:80"), Ok(vec![v4([0, 0, 0, 0], 80)]));
}

#[test]
fn a_named_top_level_struct_is_accepted() {
    let config = parse(&format!("Config{MINIMAL}"));
    assert_eq!(config, parse(MINIMAL));
}

/// MINIMAL with `health: (FIELDS)` in its pool.
fn with_health(fields: &str) -> String {
    with_pools(&format!(
        r#"[(name: "web", backends: [(address: "127.0.0.1:9001")], health: ({fields}))]"#
    ))
}

/// The health settings of the first pool of `source`.
fn health_of(source: &str) -> HealthConfig {
    parse(source).pools[0].health.clone()
}

#[test]
fn health_defaults_apply_when_the_section_or_its_fields_are_omitted() {
    let defaults = HealthConfig {
        enabled: true,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        rise: 2,
        fall: 3,
        jitter: 0.1,
        send: None,
        expect: None,
        initial_state: InitialState::Up,
        passive_failures: 1,
        when_all_down: AllDown::FailFast,
        slow_start: Duration::ZERO,
    };
    assert_eq!(HealthConfig::default(), defaults);
    assert_eq!(health_of(MINIMAL), defaults);
    assert_eq!(health_of(&with_health("")), defaults);
}

#[test]
fn every_health_field_is_read() {
    let health = health_of(&with_health(
        r#"enabled: false, interval: "10s", timeout: "1500ms", rise: 1, fall: 100,
           jitter: 0.5, send: "PING\r\n", expect: "+PONG", initial_state: "unknown",
           passive_failures: 0, when_all_down: "fail-open", slow_start: "30s""#,
    ));
    assert_eq!(
        health,
        HealthConfig {
            enabled: false,
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(1500),
            rise: 1,
            fall: 100,
            jitter: 0.5,
            send: Some(b"PING\r\n".to_vec()),
            expect: Some(b"+PONG".to_vec()),
            initial_state: InitialState::Unknown,
            passive_failures: 0,
            when_all_down: AllDown::FailOpen,
            slow_start: Duration::from_secs(30),
        }
    );
    assert_eq!(health_of(&with_health("jitter: 0")).jitter, 0.0);
}

#[test]
fn health_timeout_defaults_to_the_interval() {
    let health = health_of(&with_health(r#"interval: "30s""#));
    assert_eq!(health.interval, Duration::from_secs(30));
    assert_eq!(health.timeout, Duration::from_secs(30));
    let health = health_of(&with_health(r#"interval: "500ms", timeout: "500ms""#));
    assert_eq!(health.timeout, Duration::from_millis(500));
}

#[test]
fn send_and_expect_escapes_become_the_right_bytes() {
    let health = health_of(&with_health(
        r#"send: "GET /health HTTP/1.0\r\n\r\n", expect: "\x00\x7f\x80\xff\t\"\\\0\u{e9}""#,
    ));
    assert_eq!(
        health.send.as_deref(),
        Some(&b"GET /health HTTP/1.0\r\n\r\n"[..])
    );
    assert_eq!(
        health.expect.as_deref(),
        Some(&[0x00, 0x7f, 0x80, 0xff, b'\t', b'"', b'\\', 0, 0xe9][..])
    );
    // expect without send: a banner check.
    let health = health_of(&with_health(r#"expect: "SSH-2.0-""#));
    assert_eq!(health.send, None);
    assert_eq!(health.expect.as_deref(), Some(&b"SSH-2.0-"[..]));
}

#[test]
fn a_character_that_is_not_a_byte_is_an_error() {
    assert_eq!(
        error(&with_health(r#"send: "€""#)),
        "test.ron: pools[0].health.send: '€' (U+20AC) is not a byte; each character must be \
         from U+0000 to U+00FF: write bytes as \\xNN escapes, e.g. \\xe2\\x82\\xac for the UTF-8 of \"€\""
    );
}

#[test]
fn each_health_range_error_names_its_path() {
    let cases = [
        (r#"interval: "0s""#, "interval: must be more than zero (e.g. 2s)"),
        (
            r#"interval: "1h1s""#,
            "interval: 1h1s is longer than the maximum of 1h",
        ),
        (
            r#"timeout: "0s""#,
            "timeout: must be more than zero (e.g. 1s); omit it to use the interval",
        ),
        (
            r#"interval: "1s", timeout: "1s1ms""#,
            "timeout: 1s1ms is longer than the interval (1s); a check must end before the next one starts",
        ),
        (
            r#"interval: "2h""#,
            "interval: 2h is longer than the maximum of 1h",
        ),
        (
            r#"interval: "2h", timeout: "2s""#,
            "interval: 2h is longer than the maximum of 1h",
        ),
        (
            "rise: 0",
            "rise: 0 is out of range (expected 1 to 100 consecutive checks)",
        ),
        (
            "fall: 101",
            "fall: 101 is out of range (expected 1 to 100 consecutive checks)",
        ),
        (
            "jitter: 0.51",
            "jitter: 0.51 is out of range (expected 0.0 to 0.5, a fraction of the interval)",
        ),
        (
            "jitter: -0.1",
            "jitter: -0.1 is out of range (expected 0.0 to 0.5, a fraction of the interval)",
        ),
        (
            r#"expect: """#,
            "expect: must not be empty; omit it to accept any reply (or none)",
        ),
        (
            r#"initial_state: "down""#,
            "initial_state: \"down\" is not an initial state (expected one of: up, unknown)",
        ),
        (
            r#"when_all_down: "fail-closed""#,
            "when_all_down: \"fail-closed\" is not a when_all_down choice (expected one of: fail-fast, fail-open)",
        ),
        (
            r#"interval: "2 fortnights""#,
            "interval: \"2 fortnights\" is not a duration (examples: 500ms, 2s, 1m): unknown unit \"fortnights\" (units are ns, us, ms, s, m, h or d)",
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(
            error(&with_health(fields)),
            format!("test.ron: pools[0].health.{expected}"),
            "for health: ({fields})"
        );
    }
    // A 2h timeout is over the maximum even when the interval is too.
    let all = errors(&with_health(r#"interval: "2h", timeout: "3h""#));
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[1]
        .starts_with("test.ron: pools[0].health.timeout: 3h is longer than the maximum of 1h"));
}

#[test]
fn send_and_expect_of_more_than_4096_bytes_are_errors() {
    let ok = "x".repeat(4096);
    let health = health_of(&with_health(&format!(r#"send: "{ok}", expect: "{ok}""#)));
    assert_eq!(health.send.map(|b| b.len()), Some(4096));
    let long = "x".repeat(4097);
    let all = errors(&with_health(&format!(
        r#"send: "{long}", expect: "{long}""#
    )));
    assert_eq!(
        all,
        [
            "test.ron: pools[0].health.send: 4097 bytes is more than the maximum of 4096",
            "test.ron: pools[0].health.expect: 4097 bytes is more than the maximum of 4096",
        ]
    );
}

#[test]
fn a_malformed_interval_causes_no_follow_on_timeout_error() {
    for fields in [r#"interval: "x""#, r#"interval: "x", timeout: "5s""#] {
        let e = error(&with_health(fields));
        assert!(
            e.starts_with("test.ron: pools[0].health.interval: \"x\" is not a duration"),
            "{e}"
        );
    }
}

#[test]
fn health_errors_are_all_reported_in_field_order() {
    let all = errors(&with_health(
        r#"when_all_down: "x", initial_state: "x", jitter: 1.0, fall: 0, rise: 0,
           timeout: "0s", interval: "0s", expect: """#,
    ));
    let paths: Vec<&str> = all
        .iter()
        .map(|e| e.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "pools[0].health.interval",
            "pools[0].health.timeout",
            "pools[0].health.rise",
            "pools[0].health.fall",
            "pools[0].health.jitter",
            "pools[0].health.expect",
            "pools[0].health.initial_state",
            "pools[0].health.when_all_down",
        ],
        "{all:#?}"
    );
}

#[test]
fn health_type_and_unknown_field_errors_name_the_path() {
    let e = error(&with_health("rise: \"2\""));
    assert!(
        e.ends_with("pools[0].health.rise: expected a whole number (0 or more), e.g. 4"),
        "{e}"
    );
    let e = error(&with_health("interval: 2"));
    assert!(
        e.ends_with("pools[0].health.interval: expected a string in double quotes, e.g. \"2s\""),
        "{e}"
    );
    let e = error(&with_health("jitter: \"0.1\""));
    assert!(
        e.ends_with("pools[0].health.jitter: expected a number, e.g. 0.1"),
        "{e}"
    );
    let e = error(&with_health("enabled: 1"));
    assert!(
        e.ends_with("pools[0].health.enabled: expected true or false"),
        "{e}"
    );
    let e = error(&with_health("intervl: \"2s\""));
    assert!(
        e.contains("pools[0].health.intervl: unknown field \"intervl\" (did you mean \"interval\"? expected one of: enabled, interval, timeout, rise, fall, jitter, send, expect, initial_state, passive_failures, when_all_down, slow_start)"),
        "{e}"
    );
}

#[test]
fn validate_checks_health_on_a_built_config() {
    let mut config = parse(MINIMAL);
    let health = &mut config.pools[0].health;
    health.interval = Duration::from_secs(1);
    health.timeout = Duration::from_secs(2);
    health.rise = 0;
    health.jitter = f64::NAN;
    health.expect = Some(Vec::new());
    health.send = Some(vec![0; MAX_PROBE_BYTES + 1]);
    let e = config.validate().expect_err("five problems");
    assert_eq!(
        e.errors,
        [
            "pools[0].health.timeout: 2s is longer than the interval (1s); a check must end before the next one starts",
            "pools[0].health.rise: 0 is out of range (expected 1 to 100 consecutive checks)",
            "pools[0].health.jitter: NaN is out of range (expected 0.0 to 0.5, a fraction of the interval)",
            "pools[0].health.send: 4097 bytes is more than the maximum of 4096",
            "pools[0].health.expect: must not be empty; omit it to accept any reply (or none)",
        ]
    );
    config.pools[0].health = HealthConfig {
        interval: MAX_HEALTH_INTERVAL,
        timeout: MAX_HEALTH_INTERVAL,
        rise: MAX_RISE_FALL,
        fall: 1,
        jitter: MAX_JITTER,
        ..HealthConfig::default()
    };
    assert_eq!(config.validate(), Ok(()));
    config.pools[0].health.jitter = f64::INFINITY;
    assert_eq!(config.validate().map_err(|e| e.errors.len()), Err(1));
}

#[test]
fn health_choice_names_round_trip_and_errors_list_the_names() {
    for state in InitialState::ALL {
        assert_eq!(state.to_string().parse::<InitialState>(), Ok(*state));
    }
    for choice in AllDown::ALL {
        assert_eq!(choice.to_string().parse::<AllDown>(), Ok(*choice));
    }
    assert_eq!(InitialState::Unknown.to_string(), "unknown");
    assert_eq!(AllDown::FailOpen.to_string(), "fail-open");
    assert_eq!("fail-fast".parse::<AllDown>(), Ok(AllDown::FailFast));
    assert_eq!(
        "Up".parse::<InitialState>(),
        Err("\"Up\" is not an initial state (expected one of: up, unknown)".to_string())
    );
}

#[test]
fn reference_config_health_section_shows_the_defaults() {
    let config = parse(REFERENCE);
    let web = config.pool("web").expect("web pool");
    assert_eq!(web.health, HealthConfig::default());
}

/// Answers for a fixed set of names, as a DNS server would.
fn fake_dns(host: &str) -> Result<Vec<SocketAddr>, String> {
    match host {
        "db.internal:5432" => Ok(vec![v4([10, 0, 0, 1], 5432), v4([10, 0, 0, 2], 5432)]),
        "other.internal:5432" => Ok(vec![v4([10, 0, 0, 2], 5432)]),
        _ => Err(format!("{host:?} does not resolve: no such host")),
    }
}

fn pool_with(backends: &str, extra: &str) -> String {
    format!(
        r#"(listeners: [(bind: "127.0.0.1:8080", pool: "p")],
            pools: [(name: "p", {extra} backends: [{backends}])])"#
    )
}

#[test]
fn a_backend_host_name_stands_for_every_address_it_resolves_to() {
    let source = pool_with(
        r#"(address: "db.internal:5432", weight: 3), (address: "10.0.0.9:5432")"#,
        r#"resolve_every: "30s","#,
    );
    let config = raw::parse(&source, "f.ron", &fake_dns).expect("valid");
    let pool = &config.pools[0];
    assert_eq!(pool.resolve_every, Some(Duration::from_secs(30)));
    assert_eq!(
        pool.backends[0],
        BackendConfig {
            addresses: vec![v4([10, 0, 0, 1], 5432), v4([10, 0, 0, 2], 5432)],
            host: Some("db.internal:5432".into()),
            weight: 3,
            max_connections: None,
            backup: false,
        }
    );
    assert_eq!(
        pool.backends[1],
        BackendConfig::ip(v4([10, 0, 0, 9], 5432), 1)
    );
}

#[test]
fn a_backend_name_that_does_not_resolve_or_overlaps_another_is_an_error_naming_the_field() {
    let source = pool_with(r#"(address: "nowhere.internal:80")"#, "");
    let errors = raw::parse(&source, "f.ron", &fake_dns).unwrap_err().errors;
    assert_eq!(
        errors,
        ["f.ron: pools[0].backends[0].address: \"nowhere.internal:80\" does not resolve: no such host"]
    );
    let source = pool_with(
        r#"(address: "db.internal:5432"), (address: "other.internal:5432")"#,
        "",
    );
    let errors = raw::parse(&source, "f.ron", &fake_dns).unwrap_err().errors;
    assert_eq!(
        errors,
        ["f.ron: pools[0].backends[1].address: other.internal:5432 (resolved to 10.0.0.2:5432) is already listed as pools[0].backends[0]; list it once and raise its weight instead"]
    );
    let source = pool_with(r#"(address: "10.0.0.1:80")"#, r#"resolve_every: "soon","#);
    let errors = raw::parse(&source, "f.ron", &fake_dns).unwrap_err().errors;
    assert!(
        errors[0].starts_with("f.ron: pools[0].resolve_every: \"soon\" is not a duration"),
        "{errors:?}"
    );
}

#[test]
fn admin_section_binds_an_address_with_an_optional_token() {
    let config = parse(&MINIMAL.replace(
        "pools:",
        r#"admin: (bind: "127.0.0.1:9090", token: "s3cret"), pools:"#,
    ));
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            bind: v4([127, 0, 0, 1], 9090),
            token: Some("s3cret".into()),
        })
    );
    assert_eq!(parse(MINIMAL).admin, None, "off unless set");
    let e = error(&MINIMAL.replace("pools:", r#"admin: (bind: "127.0.0.1:0"), pools:"#));
    assert!(e.contains("admin.bind: \"127.0.0.1:0\" has port 0"), "{e}");
    let e = error(&MINIMAL.replace("pools:", r#"admin: (token: "x"), pools:"#));
    assert!(
        e.contains("admin.bind: a token is set but no bind address"),
        "{e}"
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    for bind in ["0.0.0.0:9090", "[::]:9090", "10.0.0.1:9090"] {
        let e = error(&MINIMAL.replace("pools:", &format!(r#"admin: (bind: "{bind}"), pools:"#)));
        assert!(
            e.starts_with(&format!(
                "test.ron: admin.token: is required when the admin listener binds {}, which is not a loopback address",
                bind.parse::<SocketAddr>().expect("address")
            )),
            "{e}"
        );
    }
    for bind in [
        "127.0.0.1:9090",
        "127.0.0.2:9090",
        "[::1]:9090",
        "[::ffff:127.0.0.1]:9090",
    ] {
        parse(&MINIMAL.replace("pools:", &format!(r#"admin: (bind: "{bind}"), pools:"#)));
    }
    parse(&MINIMAL.replace(
        "pools:",
        r#"admin: (bind: "0.0.0.0:9090", token: "s3cret"), pools:"#,
    ));
}

#[test]
fn a_udp_listener_reads_its_udp_section_and_defaults_the_rest() {
    let config = parse(&with_listeners(
        r#"[(name: "dns", bind: "127.0.0.1:5353", pool: "web", protocol: "udp",
             udp: (idle_timeout: "10s", responses: 1, key: "ip", max_flows: 500))]"#,
    ));
    let l = &config.listeners[0];
    assert_eq!(l.protocol, Protocol::Udp);
    assert_eq!(
        l.udp,
        UdpConfig {
            idle_timeout: Duration::from_secs(10),
            responses: 1,
            requests: 0,
            key: FlowKey::Ip,
            max_flows: Some(500),
        }
    );
    let tcp = parse(MINIMAL);
    assert_eq!(tcp.listeners[0].protocol, Protocol::Tcp);
    let bare = parse(&with_listeners(
        r#"[(bind: "127.0.0.1:5353", pool: "web", protocol: "udp")]"#,
    ));
    assert_eq!(bare.listeners[0].udp, UdpConfig::default());
    assert_eq!(bare.pool_protocol("web"), Protocol::Udp);
    assert_eq!(tcp.pool_protocol("web"), Protocol::Tcp);
}

#[test]
fn a_tcp_and_a_udp_listener_may_share_an_address_but_two_udp_ones_may_not() {
    let shared = parse(&with_listeners(
        r#"[(name: "a", bind: "127.0.0.1:53", pool: "web"),
            (name: "b", bind: "127.0.0.1:53", pool: "web", protocol: "udp")]"#,
    ));
    assert_eq!(shared.listeners.len(), 2);
    assert_eq!(shared.pool_protocol("web"), Protocol::Tcp, "mixed: TCP");
    let e = error(&with_listeners(
        r#"[(name: "a", bind: "127.0.0.1:53", pool: "web", protocol: "udp"),
            (name: "b", bind: "127.0.0.1:53", pool: "web", protocol: "udp")]"#,
    ));
    assert!(
        e.ends_with("each address can have only one udp listener"),
        "{e}"
    );
}

#[test]
fn bad_protocol_and_udp_values_are_errors_naming_their_fields() {
    let all = errors(&with_listeners(
        r#"[(name: "a", bind: "127.0.0.1:1", pool: "web", protocol: "sctp"),
            (name: "b", bind: "127.0.0.1:2", pool: "web", protocol: "udp",
             udp: (idle_timeout: "soon", key: "port")),
            (name: "c", bind: "127.0.0.1:3", pool: "web", protocol: "udp",
             udp: (idle_timeout: "0s", max_flows: 0)),
            (name: "d", bind: "127.0.0.1:4", pool: "web", udp: (responses: 1))]"#,
    ));
    assert_eq!(
        all,
        [
            "test.ron: listeners[0].protocol: \"sctp\" is not a protocol (expected one of: tcp, udp)",
            "test.ron: listeners[1].udp.idle_timeout: \"soon\" is not a duration (examples: 500ms, 30s, 1m): expected a number before \"soon\"",
            "test.ron: listeners[1].udp.key: \"port\" is not a flow key (expected one of: ip-port, ip)",
            "test.ron: listeners[2].udp.idle_timeout: must be more than zero (e.g. 30s); a zero timeout would end every flow at once",
            "test.ron: listeners[2].udp.max_flows: must be at least 1; leave it out for the default (from the open-file limit)",
            "test.ron: listeners[3].udp: is only for listeners with protocol: \"udp\"; remove it or add protocol: \"udp\"",
        ]
    );
    let e = error(&with_listeners(
        r#"[(bind: "127.0.0.1:1", pool: "web", protocol: "udp", udp: (idle: "1s"))]"#,
    ));
    assert!(
        e.contains("listeners[0].udp.idle: unknown field \"idle\""),
        "{e}"
    );
}

#[test]
fn a_udp_only_pool_cannot_expect_a_reply_it_sends_nothing_for() {
    let e = error(
        r#"( listeners: [(bind: "127.0.0.1:53", pool: "dns", protocol: "udp")],
             pools: [(name: "dns", health: (expect: "ok"), backends: [(address: "127.0.0.1:5353")])] )"#,
    );
    assert!(
        e.starts_with("test.ron: pools[0].health.expect: needs send"),
        "{e}"
    );
}

#[test]
fn proxy_protocol_settings_are_read_with_their_defaults() {
    let config = parse(
        r#"( listeners: [(name: "a", bind: "127.0.0.1:1", pool: "web", accept_proxy: true),
                         (name: "b", bind: "127.0.0.1:2", pool: "web", accept_proxy: true, proxy_timeout: "250ms"),
                         (name: "c", bind: "127.0.0.1:3", pool: "web")],
             pools: [(name: "web", send_proxy: "v2", backends: [(address: "127.0.0.1:9001")])] )"#,
    );
    let accept: Vec<_> = config.listeners.iter().map(|l| l.accept_proxy).collect();
    assert_eq!(
        accept,
        [
            Some(Duration::from_secs(3)),
            Some(Duration::from_millis(250)),
            None
        ]
    );
    assert_eq!(
        config.pools[0].send_proxy,
        Some(crate::proxy_protocol::Version::V2)
    );
    assert_eq!(parse(MINIMAL).pools[0].send_proxy, None);
}

#[test]
fn bad_proxy_protocol_settings_are_errors_naming_their_fields() {
    let all = errors(
        r#"( listeners: [(name: "a", bind: "127.0.0.1:1", pool: "web", proxy_timeout: "1s"),
                         (name: "b", bind: "127.0.0.1:2", pool: "web", accept_proxy: true, proxy_timeout: "0s"),
                         (name: "c", bind: "127.0.0.1:3", pool: "web", accept_proxy: true, proxy_timeout: "soon"),
                         (name: "d", bind: "127.0.0.1:4", pool: "dns", protocol: "udp", accept_proxy: true)],
             pools: [(name: "web", send_proxy: "v3", backends: [(address: "127.0.0.1:9001")]),
                     (name: "dns", send_proxy: "v1", backends: [(address: "127.0.0.1:9002")])] )"#,
    );
    assert_eq!(
        all,
        [
            "test.ron: listeners[0].proxy_timeout: is only used with accept_proxy: true; remove it or add accept_proxy: true",
            "test.ron: listeners[1].proxy_timeout: must be more than zero (e.g. 3s); a zero timeout would close every connection",
            "test.ron: listeners[2].proxy_timeout: \"soon\" is not a duration (examples: 500ms, 3s): expected a number before \"soon\"",
            "test.ron: listeners[3].accept_proxy: is for TCP listeners only (PROXY headers on UDP are not accepted)",
            "test.ron: pools[0].send_proxy: \"v3\" is not a PROXY protocol version (expected v1 or v2)",
            "test.ron: pools[1].send_proxy: \"v1\" cannot carry UDP, and UDP listener \"d\" uses this pool; use \"v2\"",
        ]
    );
}

#[test]
fn access_lists_and_limits_are_read_from_listeners_pools_and_backends() {
    let config = parse(
        r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web",
        allow: ["10.0.0.0/8", "::1/128"], deny: ["10.0.0.5"],
        max_connections: 1000, max_connections_per_ip: 10,
        rate_per_ip: (per_second: 20, burst: 40))],
    pools: [(name: "web", backends: [(address: "127.0.0.1:9001", max_connections: 50)],
        queue: (size: 100, timeout: "2s"))],
)"#,
    );
    let limits = &config.listeners[0].limits;
    let blocks = |v: &[crate::acl::Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(blocks(&limits.acl.allow), ["10.0.0.0/8", "::1/128"]);
    assert_eq!(blocks(&limits.acl.deny), ["10.0.0.5/32"]);
    assert_eq!(limits.max_connections, Some(1000));
    assert_eq!(limits.max_connections_per_ip, Some(10));
    assert_eq!(
        limits.rate_per_ip,
        Some(Rate {
            per_second: 20,
            burst: 40
        })
    );
    let pool = &config.pools[0];
    assert_eq!(pool.backends[0].max_connections, Some(50));
    assert_eq!(pool.queue.size, 100);
    assert_eq!(pool.queue.timeout, Duration::from_secs(2));
    // Without them: no limits, and a burst defaults to the rate.
    let plain = parse(MINIMAL);
    assert!(plain.listeners[0].limits.is_empty());
    assert_eq!(plain.pools[0].queue, QueueConfig::default());
    let rate = parse(&with_listeners(
        r#"[(name: "web", bind: "127.0.0.1:8080", pool: "web", rate_per_ip: (per_second: 5))]"#,
    ));
    assert_eq!(
        rate.listeners[0].limits.rate_per_ip.map(|r| r.burst),
        Some(5)
    );
}

#[test]
fn bad_address_blocks_and_limits_are_errors_naming_the_field() {
    let all = errors(
        r#"(
    listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web",
        allow: ["10.0.0.1/8"], deny: ["127.0.0.5/32", "10.0.0.0/33"],
        max_connections: 0, rate_per_ip: (per_second: 0, burst: 0)),
      (name: "dns", bind: "127.0.0.1:5353", pool: "web", protocol: "udp", max_connections_per_ip: 3)],
    pools: [(name: "web", backends: [(address: "127.0.0.1:9001", max_connections: 0)],
        queue: (timeout: "0s"))],
)"#,
    );
    let want = [
        "test.ron: listeners[0].allow[0]: \"10.0.0.1/8\" has bits set after the first 8; write 10.0.0.0/8 for the block, or 10.0.0.1 alone for one host",
        "test.ron: listeners[0].deny[1]: \"10.0.0.0/33\": prefix length must be 0..=32",
        "test.ron: listeners[0].max_connections: must be at least 1; leave it out for no limit",
        "test.ron: listeners[0].rate_per_ip.per_second: must be at least 1; leave rate_per_ip out for no limit",
        "test.ron: listeners[0].rate_per_ip.burst: must be at least 1 (it defaults to per_second)",
        "test.ron: listeners[1].max_connections_per_ip: is for TCP listeners; a UDP listener limits flows with udp.max_flows",
        "test.ron: pools[0].backends[0].max_connections: must be at least 1; leave it out for no limit",
        "test.ron: pools[0].queue.timeout: must be more than zero (e.g. 5s); use size: 0 to refuse at once instead",
    ];
    assert_eq!(all, want);
}

#[test]
fn zero_copy_is_auto_unless_the_file_says_on_or_off() {
    assert_eq!(parse(MINIMAL).global.zero_copy, ZeroCopy::Auto);
    for (text, mode) in [
        ("on", ZeroCopy::On),
        ("off", ZeroCopy::Off),
        ("auto", ZeroCopy::Auto),
    ] {
        let config = parse(&with_section(&format!("global: (zero_copy: {text:?})")));
        assert_eq!(config.global.zero_copy, mode);
    }
    let e = error(&with_section("global: (zero_copy: \"splice\")"));
    assert!(
        e.ends_with(
            "global.zero_copy: \"splice\" is not a zero-copy mode (expected auto, on or off)"
        ),
        "{e}"
    );
    let e = error(&with_section("global: (zero_copy: true)"));
    assert!(
        e.ends_with("global.zero_copy: expected a string in double quotes, e.g. \"auto\""),
        "{e}"
    );
}

#[test]
fn resolve_every_outside_a_second_to_a_day_is_refused() {
    for text in ["0s", "500ms", "25h", "107000000000000d"] {
        let e = error(&with_pools(&format!(
            r#"[(name: "web", resolve_every: "{text}", backends: [(address: "127.0.0.1:9001")])]"#
        )));
        assert!(e.contains("pools[0].resolve_every"), "{text}: {e}");
    }
}

#[test]
fn an_admin_listener_on_a_tcp_listeners_address_is_refused() {
    let e = error(&with_section(r#"admin: (bind: "127.0.0.1:8080")"#));
    assert!(
        e.contains("admin.bind") && e.contains("listeners[0]"),
        "{e}"
    );
    let wildcard = MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080");
    let e = error(&wildcard.replacen('(', r#"( admin: (bind: "127.0.0.1:8080"),"#, 1));
    assert!(e.contains("admin.bind"), "{e}");
}
