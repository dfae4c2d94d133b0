//! A TCP listener's routes: `routes` and `inspect_timeout`.
//!
//! This file owns their schema, defaults, conversion from the file's text
//! (each condition parsed by `crate::route`, errors naming the entry) and
//! their semantic checks: a route needs a condition and a defined pool, a
//! UDP listener has none, and a route that an earlier one always takes
//! first is a mistake. Documented for users in docs/CONFIG.md and
//! config/balanciaga4.ron.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::plain;

use super::duration::parse_duration;
use super::validate::{self, Issue};
use super::{Config, Protocol};
use crate::route::Conditions;

/// Longest wait for a ClientHello before the default pool is taken.
pub const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One route as written.
#[derive(Deserialize, Serialize)]
#[serde(rename = "Route", deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default, deserialize_with = "super::raw::present")]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "plain")]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) sni: Vec<String>,
    #[serde(default)]
    pub(super) alpn: Vec<String>,
    #[serde(default)]
    pub(super) source: Vec<String>,
    pub(super) pool: String,
}

/// One route of a listener: where connections matching `conditions` go.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// As written, or the route's position (`"0"`, `"1"`...).
    pub name: String,
    /// Its `sni`, `alpn` and `source` lists, all of which must hold; empty
    /// (and reported) when one did not parse.
    pub conditions: Conditions,
    /// Name of the pool that gets the connections it matches; validation
    /// ensures it is defined.
    pub pool: String,
    /// A condition did not parse (and was reported): its checks are moot.
    pub invalid: bool,
}

/// A listener's routes and how long it waits for a ClientHello.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Tried in order, the first match wins; empty: every connection goes
    /// to the listener's `pool`. Always empty on a UDP listener.
    pub routes: Vec<RouteConfig>,
    /// Longest wait for a complete ClientHello, 1ms to 1h; then the
    /// connection goes to the listener's `pool`. Unused unless a route
    /// looks at `sni` or `alpn`.
    pub inspect_timeout: Duration,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            routes: Vec::new(),
            inspect_timeout: DEFAULT_INSPECT_TIMEOUT,
        }
    }
}

impl Routing {
    /// Connections are read before connecting: some route looks at the
    /// ClientHello.
    pub fn inspects(&self) -> bool {
        self.routes.iter().any(|r| r.conditions.needs_hello())
    }
}

/// Listener `i`'s `routes` and `inspect_timeout` as written.
pub(super) fn convert(
    i: usize,
    raw: Vec<RawRoute>,
    inspect_timeout: Option<String>,
    issues: &mut Vec<Issue>,
) -> Routing {
    let routes = raw
        .into_iter()
        .enumerate()
        .map(|(r, route)| {
            let parsed = Conditions::parse(&route.sni, &route.alpn, &route.source);
            if let Err(e) = &parsed {
                let path = format!("listeners[{i}].routes[{r}].{}[{}]", e.field, e.index);
                issues.push(Issue::new(path, e.message.clone()));
            }
            RouteConfig {
                name: route.name.unwrap_or_else(|| r.to_string()),
                invalid: parsed.is_err(),
                conditions: parsed.unwrap_or_default(),
                pool: route.pool,
            }
        })
        .collect();
    let inspect_timeout = match inspect_timeout {
        None => DEFAULT_INSPECT_TIMEOUT,
        Some(text) => parse_duration(&text)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
            .unwrap_or_else(|| {
                issues.push(Issue::new(
                    format!("listeners[{i}].inspect_timeout"),
                    format!("{text:?} is not a duration from 1ms to 1h (examples: 500ms, 5s)"),
                ));
                DEFAULT_INSPECT_TIMEOUT
            }),
    };
    Routing {
        routes,
        inspect_timeout,
    }
}

/// Semantic checks of every listener's routes (files and configs built in
/// code alike).
pub(super) fn check(config: &Config, issues: &mut Vec<Issue>) {
    for (i, listener) in config.listeners.iter().enumerate() {
        let routes = &listener.routing.routes;
        if listener.protocol == Protocol::Udp && !routes.is_empty() {
            issues.push(Issue::new(
                format!("listeners[{i}].routes"),
                "routes are for TCP listeners: a UDP listener sends every datagram to its pool",
            ));
            continue;
        }
        let mut names: Vec<&str> = Vec::new();
        for (r, route) in routes.iter().enumerate() {
            let at = |field: &str| format!("listeners[{i}].routes[{r}]{field}");
            if names.contains(&route.name.as_str()) {
                issues.push(Issue::new(
                    at(".name"),
                    format!(
                        "{:?} names two routes of this listener; names must be unique",
                        route.name
                    ),
                ));
            }
            names.push(&route.name);
            if config.pool(&route.pool).is_none() {
                issues.push(Issue::new(
                    at(".pool"),
                    validate::unknown_pool(&route.pool, config),
                ));
            }
            if route.invalid {
                continue;
            }
            if route.conditions.is_empty() {
                issues.push(Issue::new(
                    at(""),
                    "has no condition: give sni, alpn or source (a route that takes every connection is the listener's pool)",
                ));
                continue;
            }
            let shadow = routes[..r].iter().position(|earlier| {
                !earlier.invalid
                    && !earlier.conditions.is_empty()
                    && earlier.conditions.covers(&route.conditions)
            });
            if let Some(e) = shadow {
                issues.push(Issue::new(
                    at(""),
                    format!(
                        "can never match: routes[{e}] ({:?}) takes every connection it would; put it first or remove it",
                        routes[e].name
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::error as one_error;
    use crate::config::Config;

    /// A TLS listener with `routes` and pools alpha, beta and web.
    fn with_routes(routes: &str) -> String {
        format!(
            r#"(
    listeners: [(name: "tls", bind: "127.0.0.1:8443", pool: "web", routes: {routes})],
    pools: [
        (name: "web", backends: [(address: "127.0.0.1:9001")]),
        (name: "alpha", backends: [(address: "127.0.0.1:9002")]),
        (name: "beta", backends: [(address: "127.0.0.1:9003")]),
    ],
)"#
        )
    }

    #[test]
    fn routes_parse_with_names_defaulting_to_their_position() {
        let source = with_routes(
            r#"[(sni: ["Alpha.Example."], pool: "alpha"), (name: "acme", alpn: ["acme-tls/1"], source: ["10.0.0.0/8"], pool: "beta")]"#,
        );
        let config = Config::parse(&source, "test.ron").expect("valid");
        let routing = &config.listeners[0].routing;
        assert_eq!(routing.routes[0].name, "0");
        assert_eq!(routing.routes[1].name, "acme");
        assert_eq!(
            routing.routes[0].conditions.sni[0].to_string(),
            "alpha.example"
        );
        assert!(routing.inspects());
        assert_eq!(routing.inspect_timeout, super::DEFAULT_INSPECT_TIMEOUT);
    }

    #[test]
    fn a_route_to_an_unknown_pool_is_named_by_its_path() {
        let e = one_error(&with_routes(r#"[(sni: ["a.example"], pool: "gamma")]"#));
        assert!(e.contains("listeners[0].routes[0].pool"), "{e}");
        assert!(e.contains("gamma") && e.contains("alpha"), "{e}");
    }

    #[test]
    fn a_route_without_conditions_is_refused() {
        let e = one_error(&with_routes(r#"[(pool: "alpha")]"#));
        assert!(
            e.contains("listeners[0].routes[0]: has no condition"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_name_protocol_or_block_names_its_entry() {
        let e = one_error(&with_routes(
            r#"[(sni: ["ok.example", "bad name"], pool: "alpha")]"#,
        ));
        assert!(e.contains("listeners[0].routes[0].sni[1]"), "{e}");
        let e = one_error(&with_routes(r#"[(source: ["10.0.0.1/8"], pool: "alpha")]"#));
        assert!(e.contains("listeners[0].routes[0].source[0]"), "{e}");
        let e = one_error(&with_routes(r#"[(alpn: [""], pool: "alpha")]"#));
        assert!(e.contains("listeners[0].routes[0].alpn[0]"), "{e}");
    }

    #[test]
    fn a_route_an_earlier_one_always_takes_is_refused() {
        let e = one_error(&with_routes(
            r#"[(sni: ["*.example"], pool: "alpha"), (sni: ["api.example"], source: ["192.0.2.0/24"], pool: "beta")]"#,
        ));
        assert!(
            e.contains("listeners[0].routes[1]: can never match: routes[0]"),
            "{e}"
        );
        // The narrower route first is fine.
        let ok = with_routes(
            r#"[(sni: ["api.example"], source: ["192.0.2.0/24"], pool: "beta"), (sni: ["*.example"], pool: "alpha")]"#,
        );
        Config::parse(&ok, "test.ron").expect("valid");
    }

    #[test]
    fn repeated_route_names_and_routes_on_udp_are_refused() {
        let e = one_error(&with_routes(
            r#"[(name: "x", sni: ["a.example"], pool: "alpha"), (name: "x", sni: ["b.example"], pool: "beta")]"#,
        ));
        assert!(e.contains("listeners[0].routes[1].name"), "{e}");
        let udp = with_routes(r#"[(source: ["10.0.0.0/8"], pool: "alpha")]"#).replace(
            r#"pool: "web", routes"#,
            r#"pool: "web", protocol: "udp", routes"#,
        );
        let e = one_error(&udp);
        assert!(
            e.contains("listeners[0].routes: routes are for TCP listeners"),
            "{e}"
        );
    }

    #[test]
    fn inspect_timeout_must_be_a_sensible_duration() {
        let source = with_routes(r#"[(sni: ["a.example"], pool: "alpha")]"#)
            .replace(r#"routes:"#, r#"inspect_timeout: "0s", routes:"#);
        let e = one_error(&source);
        assert!(e.contains("listeners[0].inspect_timeout"), "{e}");
    }
}
