//! The strict Prometheus text parser the metrics tests rely on: it reads
//! back what the library's writer produces, values and escapes intact, and
//! rejects each kind of malformed exposition with the line at fault.

use crate::support;

use std::time::Duration;

use balanciaga4::metrics::text::{self, Exposition, Histogram, Snapshot, CONNECT_SECONDS};
use support::prometheus::{family, parse, samples, value, Kind};

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
