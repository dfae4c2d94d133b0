//! The Prometheus text format of `/metrics`: what a running balancer
//! serves is valid exposition text (HELP and TYPE for every family, metric
//! and label names by the grammar, label values escaped, checked line by
//! line here without the parser), its counters only grow while traffic
//! flows and end equal to the sessions and bytes clients sent. Then the
//! strict parser the metrics tests rely on: it reads back what the
//! library's writer produces, values and escapes intact, and rejects each
//! kind of malformed exposition with the line at fault.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use balanciaga4::metrics::text::{self, Exposition, Histogram, Snapshot, CONNECT_SECONDS};
use support::http::get;
use support::prometheus::{family, parse, samples, value, Family, Kind};
use support::*;

// ---- the balancer's own /metrics -----------------------------------------

/// A pool and listener name that needs every label escape: a quote, a
/// backslash (the file's `\\`) and a newline (`\n`).
const ODD_NAME: &str = r#"we\"b\\pool\nB"#;
/// `ODD_NAME` as the balancer reads it.
const ODD_NAME_READ: &str = "we\"b\\pool\nB";

/// A balancer with an admin listener: listener and pool `ODD_NAME` over
/// `backends`, checks off. Returns it and the admin address.
fn balancer_with_admin(backends: &[SocketAddr]) -> (Balancer, SocketAddr) {
    let (listen, admin) = (free_addr(), free_addr());
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("(address: \"{b}\")"))
        .collect();
    let ron = format!(
        r#"(
    listeners: [(name: "{ODD_NAME}", bind: "{listen}", pool: "{ODD_NAME}")],
    pools: [(name: "{ODD_NAME}", health: (enabled: false), backends: [{}])],
    admin: (bind: "{admin}"),
)"#,
        list.join(", ")
    );
    (Balancer::with_config(&ron, listen), admin)
}

fn scrape(admin: SocketAddr) -> String {
    let response = get(admin, "/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    !name.contains(':') && is_metric_name(name)
}

/// Splits `{k="v",...}` (without the braces) into pairs, unescaping the
/// values; `Err` on anything the text format does not allow.
fn labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a trailing backslash")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("the escape \\{other}")),
                },
                (_, '\n') => return Err("a raw newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        pairs.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(more) if !more.is_empty() => more,
            Some(_) => return Err("a trailing comma".into()),
            None if rest.is_empty() => rest,
            None => return Err(format!("{rest:?} after a label value")),
        };
    }
    Ok(pairs)
}

/// One sample line: series name, labels (unescaped) and value.
type Line = (String, Vec<(String, String)>, f64);

/// Checks `body` line by line against the text format (0.0.4), without
/// the parser: every family has one HELP and then one TYPE line before its
/// samples, names follow the grammar, samples belong to the family
/// announced last (`_bucket`, `_sum`, `_count` for histograms), label
/// values use only the three escapes, values are numbers. Returns the
/// sample lines.
fn check_lines(body: &str) -> Vec<Line> {
    assert!(body.ends_with('\n'), "no final newline");
    let mut help: HashMap<&str, usize> = HashMap::new();
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    let mut current: Option<(&str, &str)> = None;
    let mut series = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let at = |what: String| format!("line {}: {what}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(is_metric_name(name), "{}", at("HELP name".into()));
            assert!(
                help.insert(name, n).is_none(),
                "{}",
                at("second HELP".into())
            );
            assert!(
                !kinds.contains_key(name),
                "{}",
                at("HELP after TYPE".into())
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{}",
                at(format!("type {kind:?}"))
            );
            assert!(
                help.contains_key(name),
                "{}",
                at("TYPE without HELP".into())
            );
            assert!(
                kinds.insert(name, kind).is_none(),
                "{}",
                at("second TYPE".into())
            );
            current = Some((name, kind));
        } else {
            assert!(!line.starts_with('#'), "{}", at("a stray comment".into()));
            let (series_part, value) = line.rsplit_once(' ').expect("a value");
            let (name, label_text) = match series_part.split_once('{') {
                Some((name, rest)) => (
                    name,
                    rest.strip_suffix('}')
                        .unwrap_or_else(|| panic!("{}", at("no }".into()))),
                ),
                None => (series_part, ""),
            };
            assert!(is_metric_name(name), "{}", at("metric name".into()));
            let (family, kind) = current.unwrap_or_else(|| panic!("{}", at("no TYPE".into())));
            let suffixes: &[&str] = if kind == "histogram" {
                &["_bucket", "_sum", "_count"]
            } else {
                &[""]
            };
            assert!(
                suffixes
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family)),
                "{}",
                at(format!("not a sample of {family}"))
            );
            let pairs = labels(label_text).unwrap_or_else(|e| panic!("{}", at(e)));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{}", at("value".into())));
            series.push((name.to_string(), pairs, value));
        }
    }
    let typeless: Vec<&&str> = help.keys().filter(|h| !kinds.contains_key(**h)).collect();
    assert!(typeless.is_empty(), "HELP without TYPE: {typeless:?}");
    series
}

/// Every counter series (and histogram bucket, sum and count) by name and
/// labels, with its value.
fn counters(families: &[Family]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for f in families {
        if matches!(f.kind, Kind::Counter | Kind::Histogram) {
            for s in &f.samples {
                out.insert(format!("{}{:?}", s.name, s.labels), s.value);
            }
        }
    }
    out
}

#[test]
fn the_balancers_metrics_are_valid_exposition_text_with_escaped_labels() {
    let echo = Backend::echo();
    let (lb, admin) = balancer_with_admin(&[echo.addr()]);
    let mut s = connect(lb.listen);
    s.write_all(b"ping").unwrap();
    assert_eq!(
        read_exact_within(&mut s, 4, Duration::from_secs(5)).unwrap(),
        b"ping"
    );
    drop(s);
    let body = scrape(admin);
    let series = check_lines(&body);
    assert!(series.len() > 10, "only {} samples:\n{body}", series.len());
    // The odd name comes back whole from every label that carries it, and
    // is written with the escapes.
    let pool_labels: Vec<&String> = series
        .iter()
        .flat_map(|(_, pairs, _)| pairs)
        .filter(|(k, _)| k == "pool" || k == "listener")
        .map(|(_, v)| v)
        .collect();
    assert!(
        !pool_labels.is_empty(),
        "no pool or listener labels:\n{body}"
    );
    assert!(
        pool_labels.iter().all(|v| *v == ODD_NAME_READ),
        "{pool_labels:?}"
    );
    assert!(
        body.contains(r#"pool="we\"b\\pool\nB""#),
        "the pool label is not escaped as the format says:\n{body}"
    );
    // The strict parser agrees.
    parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
}

#[test]
fn counters_only_grow_while_traffic_flows_and_end_equal_to_what_clients_sent() {
    const BYTES: usize = 1000;
    let backends = [Backend::echo(), Backend::echo()];
    let (lb, admin) = balancer_with_admin(&[backends[0].addr(), backends[1].addr()]);
    let stop = Arc::new(AtomicBool::new(false));
    let listen = lb.listen;
    let traffic = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut sessions = 0u64;
            // Bounded by count as well as by the stop flag.
            while !stop.load(Ordering::SeqCst) && sessions < 5_000 {
                let mut s = connect(listen);
                let payload = Pattern::bytes(sessions, BYTES);
                s.write_all(&payload).unwrap();
                let echoed = read_exact_within(&mut s, BYTES, Duration::from_secs(5)).unwrap();
                assert_eq!(echoed, payload);
                sessions += 1;
            }
            sessions
        })
    };
    let parsed = |body: &str| parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    thread::sleep(Duration::from_millis(200));
    let first = counters(&parsed(&scrape(admin)));
    thread::sleep(Duration::from_millis(300));
    let second = counters(&parsed(&scrape(admin)));
    stop.store(true, Ordering::SeqCst);
    let sessions = traffic.join().expect("traffic thread");
    for (series, before) in &first {
        let after = second
            .get(series)
            .unwrap_or_else(|| panic!("{series} gone from the second scrape"));
        assert!(after >= before, "{series} went from {before} to {after}");
    }
    let grew = first.iter().filter(|(k, v)| second[*k] > **v).count();
    assert!(
        grew > 0,
        "no counter moved while traffic flowed: {second:?}"
    );

    // Once every session closed, the counters are what the clients did.
    let total = |families: &[Family], name: &str| -> f64 {
        samples(families, name, &[]).map(|s| s.value).sum()
    };
    let n = sessions as f64;
    let bytes = (sessions as usize * BYTES) as f64;
    let settled = wait_until(Duration::from_secs(5), || {
        let m = parsed(&scrape(admin));
        total(&m, "balanciaga4_backend_bytes_received_total") == bytes
            && total(&m, "balanciaga4_listener_active_connections") == 0.0
    });
    let m = parsed(&scrape(admin));
    assert!(
        settled,
        "counters never settled at {bytes} bytes: {:?}",
        counters(&m)
    );
    assert_eq!(total(&m, "balanciaga4_listener_accepted_total"), n);
    assert_eq!(total(&m, "balanciaga4_backend_connections_total"), n);
    assert_eq!(total(&m, "balanciaga4_backend_bytes_sent_total"), bytes);
    assert_eq!(total(&m, "balanciaga4_backend_connect_seconds_count"), n);
    println!("{sessions} sessions of {BYTES} bytes each way");
}

// ---- the parser ------------------------------------------------------------

/// Asserts that `text` is rejected by a message about `line` saying `what`.
fn rejected(text: &str, line: usize, what: &str) {
    match parse(text) {
        Ok(families) => panic!("accepted {text:?} as {families:?}"),
        Err(e) => {
            assert!(
                e.starts_with(&format!("line {line}: ")),
                "not line {line}: {e}"
            );
            assert!(e.contains(what), "{e:?} does not say {what:?}");
        }
    }
}

#[test]
fn writer_output_parses_and_values_round_trip() {
    let floats = [0.1 + 0.2, 1.5e-9, -3.25, 2e20, 1.0 / 3.0];
    let mut e = Exposition::new();
    e.family(
        "b4_connections_total",
        "Connections accepted.",
        text::Kind::Counter,
    );
    e.sample("b4_connections_total", &[("listener", "web")], 42u64);
    e.sample("b4_connections_total", &[("listener", "db")], 1u64 << 53);
    e.family("b4_ratio", "Some measurements.", text::Kind::Gauge);
    for (i, v) in floats.iter().enumerate() {
        e.sample("b4_ratio", &[("i", &i.to_string())], *v);
    }
    e.sample("b4_ratio", &[("i", "nan")], f64::NAN);
    e.sample("b4_ratio", &[("i", "inf")], f64::INFINITY);
    e.sample("b4_ratio", &[("i", "-inf")], f64::NEG_INFINITY);
    e.family("b4_up", "", text::Kind::Gauge);
    e.sample("b4_up", &[], 1u64);

    let families = parse(e.as_str()).unwrap_or_else(|err| panic!("{err}\n{}", e.as_str()));
    let names: Vec<_> = families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    assert_eq!(
        names,
        [
            ("b4_connections_total", Kind::Counter),
            ("b4_ratio", Kind::Gauge),
            ("b4_up", Kind::Gauge)
        ]
    );
    let connections = family(&families, "b4_connections_total");
    assert_eq!(
        connections.and_then(|f| f.help.as_deref()),
        Some("Connections accepted.")
    );
    assert_eq!(
        family(&families, "b4_up").and_then(|f| f.help.as_deref()),
        Some("")
    );
    let total = |l| value(&families, "b4_connections_total", &[("listener", l)]);
    assert_eq!(total("web"), Some(42.0));
    assert_eq!(total("db"), Some(9_007_199_254_740_992.0));
    for (i, v) in floats.iter().enumerate() {
        assert_eq!(
            value(&families, "b4_ratio", &[("i", &i.to_string())]),
            Some(*v)
        );
    }
    assert!(value(&families, "b4_ratio", &[("i", "nan")]).is_some_and(f64::is_nan));
    assert_eq!(
        value(&families, "b4_ratio", &[("i", "inf")]),
        Some(f64::INFINITY)
    );
    assert_eq!(
        value(&families, "b4_ratio", &[("i", "-inf")]),
        Some(f64::NEG_INFINITY)
    );
    assert_eq!(value(&families, "b4_up", &[]), Some(1.0));
    // Labels must match exactly, not just include the ones asked for.
    assert_eq!(value(&families, "b4_connections_total", &[]), None);
}

#[test]
fn escaped_label_values_and_help_round_trip() {
    let odd = [
        "a\\b",
        "say \"hi\"",
        "two\nlines",
        "{x=\"1\",y}",
        "ünïcödé",
        "",
        "\\n",
    ];
    let help = "Backslash \\, quote \", newline\nand \\n literally.";
    let mut e = Exposition::new();
    e.family("b4_odd", help, text::Kind::Gauge);
    for (i, v) in odd.iter().enumerate() {
        e.sample("b4_odd", &[("pool", v), ("i", &i.to_string())], i as u64);
    }
    let families = parse(e.as_str()).unwrap_or_else(|err| panic!("{err}\n{}", e.as_str()));
    assert_eq!(
        family(&families, "b4_odd").and_then(|f| f.help.as_deref()),
        Some(help)
    );
    for (i, v) in odd.iter().enumerate() {
        let found = value(&families, "b4_odd", &[("pool", v), ("i", &i.to_string())]);
        assert_eq!(found, Some(i as f64), "label value {v:?}");
    }
}

#[test]
fn writer_histograms_parse_with_cumulative_buckets_sum_and_count() {
    let reactors = [Histogram::connect_time(), Histogram::connect_time()];
    for (i, ms) in [0u64, 1, 3, 40, 40, 900, 7000].iter().enumerate() {
        reactors[i % 2].observe(Duration::from_millis(*ms));
    }
    let parts: Vec<_> = reactors.iter().map(Histogram::snapshot).collect();
    let web = Snapshot::total(CONNECT_SECONDS, &parts).unwrap_or_else(|e| panic!("{e}"));
    let db = Snapshot::empty(CONNECT_SECONDS);
    let mut e = Exposition::new();
    e.family(
        "b4_connect_seconds",
        "Time to connect.",
        text::Kind::Histogram,
    );
    e.histogram("b4_connect_seconds", &[("pool", "web")], &web);
    e.histogram("b4_connect_seconds", &[("pool", "db")], &db);

    let families = parse(e.as_str()).unwrap_or_else(|err| panic!("{err}\n{}", e.as_str()));
    assert_eq!(
        family(&families, "b4_connect_seconds").map(|f| f.kind),
        Some(Kind::Histogram)
    );
    let bucket = |le| {
        value(
            &families,
            "b4_connect_seconds_bucket",
            &[("pool", "web"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.0005"), Some(1.0));
    assert_eq!(bucket("0.001"), Some(2.0));
    assert_eq!(bucket("0.005"), Some(3.0));
    assert_eq!(bucket("0.05"), Some(5.0));
    assert_eq!(bucket("1"), Some(6.0));
    assert_eq!(bucket("5"), Some(6.0));
    assert_eq!(bucket("+Inf"), Some(7.0));
    let les: Vec<_> = samples(&families, "b4_connect_seconds_bucket", &[("pool", "db")])
        .map(|s| s.label("le").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(les.len(), CONNECT_SECONDS.len() + 1);
    assert_eq!(les.last().map(String::as_str), Some("+Inf"));
    let web_sum = value(&families, "b4_connect_seconds_sum", &[("pool", "web")]);
    assert!(
        web_sum.is_some_and(|s| (s - 7.984).abs() < 1e-9),
        "{web_sum:?}"
    );
    assert_eq!(
        value(&families, "b4_connect_seconds_count", &[("pool", "web")]),
        Some(7.0)
    );
    assert_eq!(
        value(&families, "b4_connect_seconds_count", &[("pool", "db")]),
        Some(0.0)
    );
}

#[test]
fn spec_forms_the_writer_does_not_use_are_accepted() {
    let text = "# a plain comment\n\
                \n\
                # TYPE x untyped\n\
                # HELP x Help after type.\n\
                x{a=\"1\",} 1 1700000000000\n\
                x{} 2e3\n\
                x{b=\"2\"}\t-.5\n";
    let families = parse(text).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(family(&families, "x").map(|f| f.kind), Some(Kind::Untyped));
    assert_eq!(value(&families, "x", &[("a", "1")]), Some(1.0));
    assert_eq!(value(&families, "x", &[]), Some(2000.0));
    assert_eq!(value(&families, "x", &[("b", "2")]), Some(-0.5));
    assert_eq!(parse(""), Ok(Vec::new()));
}

#[test]
fn a_sample_without_a_type_line_before_it_is_rejected() {
    rejected("# HELP x Help.\nx 1\n# TYPE y gauge\ny 1\n", 2, "no TYPE");
    rejected("# TYPE y gauge\ny 1\nx 1\n", 3, "no TYPE");
}

#[test]
fn a_second_help_for_a_family_is_rejected() {
    rejected(
        "# HELP x One.\n# TYPE x gauge\n# HELP x Two.\nx 1\n",
        3,
        "second HELP",
    );
}

#[test]
fn a_second_type_for_a_family_is_rejected() {
    rejected("# TYPE x gauge\n# TYPE x gauge\nx 1\n", 2, "second TYPE");
}

#[test]
fn a_type_after_the_family_samples_is_rejected() {
    rejected(
        "x 1\n# TYPE x gauge\n",
        2,
        "TYPE for x after its samples (line 1)",
    );
    rejected(
        "# TYPE x gauge\nx 1\n# HELP x Late.\n",
        3,
        "HELP for x after its samples",
    );
}

#[test]
fn interleaved_families_are_rejected() {
    let samples = "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n";
    rejected(
        samples,
        5,
        "a line of a apart from its others (last at line 2)",
    );
    let help = "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# HELP a Late.\n";
    rejected(help, 5, "a line of a apart");
    let histogram = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n\
                     # TYPE g gauge\ng 1\nh_count{p=\"x\"} 0\n";
    rejected(
        histogram,
        7,
        "a line of h apart from its others (last at line 4)",
    );
}

#[test]
fn invalid_metric_names_are_rejected() {
    rejected("# TYPE 1x gauge\n", 1, "invalid metric name \"1x\"");
    rejected(
        "# TYPE a gauge\na 1\na-b 1\n",
        3,
        "invalid metric name \"a-b\"",
    );
    rejected("# TYPE a gauge\n a 1\n", 2, "invalid metric name \"\"");
    rejected("# HELP a.b Dots.\n", 1, "invalid metric name \"a.b\"");
}

#[test]
fn invalid_label_names_are_rejected() {
    rejected(
        "# TYPE a gauge\na{1x=\"1\"} 1\n",
        2,
        "invalid label name \"1x\"",
    );
    rejected(
        "# TYPE a gauge\na{x-y=\"1\"} 1\n",
        2,
        "invalid label name \"x-y\"",
    );
    rejected(
        "# TYPE a gauge\na{__name__=\"a\"} 1\n",
        2,
        "invalid label name \"__name__\"",
    );
    rejected(
        "# TYPE a gauge\na{=\"1\"} 1\n",
        2,
        "invalid label name \"\"",
    );
    rejected(
        "# TYPE a gauge\na{x=\"1\",,} 1\n",
        2,
        "invalid label name \"\"",
    );
}

#[test]
fn bad_escapes_are_rejected() {
    rejected("# TYPE a gauge\na{x=\"\\t\"} 1\n", 2, "bad escape \\t");
    rejected("# TYPE a gauge\na{x=\"\\\"} 1\n", 2, "no closing quote");
    // In HELP only backslash and newline are escaped.
    rejected("# HELP a Say \\\"hi\\\".\n", 1, "HELP: bad escape \\\"");
    rejected(
        "# HELP a Ends in \\\n",
        1,
        "HELP: bad escape \\ at the end of the line",
    );
}

#[test]
fn unquoted_label_values_are_rejected() {
    rejected(
        "# TYPE a gauge\na{x=1} 1\n",
        2,
        "label x: value not in double quotes",
    );
    rejected(
        "# TYPE a gauge\na{x='1'} 1\n",
        2,
        "label x: value not in double quotes",
    );
}

#[test]
fn duplicate_label_names_are_rejected() {
    rejected(
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",
        2,
        "label x given twice",
    );
}

#[test]
fn duplicate_series_are_rejected() {
    let text = "# TYPE a gauge\na{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n";
    rejected(text, 3, "a{x=\"1\",y=\"2\"} again (first at line 2)");
    rejected("# TYPE a gauge\na 1\na 1\n", 3, "a again (first at line 2)");
}

#[test]
fn a_histogram_without_an_inf_bucket_is_rejected() {
    let text = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\n\
                h_sum 1.5\nh_count 2\n";
    rejected(text, 3, "h has no le=\"+Inf\" bucket");
}

#[test]
fn a_histogram_with_buckets_that_are_not_cumulative_is_rejected() {
    let text = "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\n\
                h_bucket{le=\"+Inf\"} 5\nh_sum 1.5\nh_count 5\n";
    rejected(text, 3, "not cumulative");
    let unordered = "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n\
                     h_bucket{le=\"+Inf\"} 1\nh_sum 1.5\nh_count 1\n";
    rejected(unordered, 3, "le must increase");
}

#[test]
fn a_histogram_whose_count_differs_from_its_inf_bucket_is_rejected() {
    let text =
        "# TYPE h histogram\nh_bucket{p=\"a\",le=\"1\"} 1\nh_bucket{p=\"a\",le=\"+Inf\"} 2\n\
                h_sum{p=\"a\"} 1.5\nh_count{p=\"a\"} 3\n";
    rejected(text, 5, "h_count is 3 but the +Inf bucket (line 3) is 2");
    let missing = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\n";
    rejected(missing, 2, "h has no h_count");
}

#[test]
fn a_negative_counter_is_rejected() {
    rejected(
        "# TYPE c counter\nc 1\nc{x=\"1\"} -1\n",
        3,
        "counter c is -1",
    );
    rejected("# TYPE c counter\nc NaN\n", 2, "counter c is NaN");
}

#[test]
fn a_missing_trailing_newline_is_rejected() {
    rejected("# TYPE a gauge\na 1", 2, "no newline at the end");
}
