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

fn errors(source: &str) -> Vec<String> {
    match Config::parse(source, "test.ron") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(e) => e.errors,
    }
}

/// The single error of `source`.
fn error(source: &str) -> String {
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
        global: (workers: 3, buffer_size: 4096, log_level: "DEBUG", access_log: false, retries: 0),
        timeouts: (connect: "500ms", idle: "1m30s", drain: "0s"),
        listeners: [(name: "a", bind: "127.0.0.1:8080", pool: "p")],
        pools: [(name: "p", policy: "round-robin", backends: [
            (address: "127.0.0.1:9001", weight: 0),
            (address: "[::1]:9002", weight: 5),
        ])],
    )"#,
    );
    let expected = Config {
        global: Global {
            workers: 3,
            buffer_size: 4096,
            log_level: LevelFilter::Debug,
            access_log: false,
            retries: 0,
        },
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            idle: Duration::from_secs(90),
            drain: Duration::ZERO,
        },
        listeners: vec![ListenerConfig {
            name: "a".into(),
            bind: "127.0.0.1:8080".into(),
            addresses: vec![v4([127, 0, 0, 1], 8080)],
            pool: "p".into(),
        }],
        pools: vec![PoolConfig {
            name: "p".into(),
            policy: PolicyKind::RoundRobin,
            backends: vec![
                BackendConfig {
                    address: v4([127, 0, 0, 1], 9001),
                    weight: 0,
                },
                BackendConfig {
                    address: SocketAddr::from((Ipv6Addr::LOCALHOST, 9002)),
                    weight: 5,
                },
            ],
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
    let addresses: Vec<SocketAddr> = demo.backends.iter().map(|b| b.address).collect();
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
         (did you mean \"weight\"? expected one of: address, weight)"
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
            (address: "10.0.0.1:80"), (address: "10.0.0.2:80"), (address: "10.0.0.x:80"),
        ])]"#,
    );
    let e = Config::parse(&source, "demo.ron").expect_err("bad address");
    assert_eq!(
        e.errors,
        [
            "demo.ron: pools[0].backends[2].address: \"10.0.0.x:80\" is not a socket address \
          (expected IP:PORT, e.g. 10.0.0.1:80)"
        ]
    );
}

#[test]
fn backend_address_without_port_or_with_host_name_is_an_error() {
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "10.0.0.1")])]"#,
    ));
    assert!(e.contains("\"10.0.0.1\" has no port"), "{e}");
    let e = error(&with_pools(
        r#"[(name: "web", backends: [(address: "db.local:5432")])]"#,
    ));
    assert!(
        e.contains("\"db.local:5432\" is not a socket address"),
        "{e}"
    );
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
    assert_eq!(
        parse_backend_address("127.0.0.1:9001"),
        Ok(v4([127, 0, 0, 1], 9001))
    );
    assert_eq!(
        parse_backend_address("10.0.0.x:80"),
        Err("\"10.0.0.x:80\" is not a socket address (expected IP:PORT, e.g. 10.0.0.1:80)".into())
    );
    assert_eq!(resolve_bind("0.0.0.0:80"), Ok(vec![v4([0, 0, 0, 0], 80)]));
}

#[test]
fn a_named_top_level_struct_is_accepted() {
    let config = parse(&format!("Config{MINIMAL}"));
    assert_eq!(config, parse(MINIMAL));
}
