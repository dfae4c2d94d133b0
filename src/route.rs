//! The conditions of a listener's routes: which connections a route takes.
//!
//! Owns the server-name patterns (`alpha.example`, `*.alpha.example`), the
//! ALPN protocol names and the client address blocks of one route, their
//! strict parsing (errors are full messages quoting the text), the match
//! against one connection, and `covers`, which tells `--check` that a
//! later route can never match because an earlier one takes all it would.
//! It touches nothing: the registry pairs conditions with pools, and the
//! session asks them once per connection.
//!
//! A wildcard `*.a.example` matches names under `a.example` at any depth
//! (`x.a.example`, `x.y.a.example`), as nginx's `*.` names and HAProxy's
//! `-m end` do, but not `a.example` itself: a route says which backends
//! serve a domain's names, and deeper names belong to the same service.
//! (A certificate's wildcard covers one label; the backend, which holds
//! the certificate, still decides what it serves.)

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::acl::{unmapped, Cidr};

/// Longest DNS name, without the trailing dot.
const MAX_NAME: usize = 253;

/// A server-name pattern, lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    Exact(Box<str>),
    /// `*.a.example`, kept as its suffix `.a.example`.
    Suffix(Box<str>),
}

impl NamePattern {
    /// `name`, or `*.suffix`; compared case-insensitively, one trailing dot
    /// ignored.
    pub fn parse(text: &str) -> Result<NamePattern, String> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, base) = match name.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, name),
        };
        if !is_host_name(base) {
            return Err(format!(
                "{text:?} is not a server name (letters, digits, '-', '_' and dots, e.g. \"alpha.example\" or \"*.alpha.example\")"
            ));
        }
        Ok(match wildcard {
            true => NamePattern::Suffix(format!(".{base}").into()),
            false => NamePattern::Exact(base.into()),
        })
    }

    /// `name` must already be lowercase, without a trailing dot.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(exact) => **exact == *name,
            NamePattern::Suffix(suffix) => name.len() > suffix.len() && name.ends_with(&**suffix),
        }
    }

    /// Every name `other` matches, this one matches too.
    fn covers(&self, other: &NamePattern) -> bool {
        match (self, other) {
            (NamePattern::Exact(a), NamePattern::Exact(b)) => a == b,
            (NamePattern::Suffix(_), NamePattern::Exact(b)) => self.matches(b),
            (NamePattern::Suffix(a), NamePattern::Suffix(b)) => b.ends_with(&**a),
            (NamePattern::Exact(_), NamePattern::Suffix(_)) => false,
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamePattern::Exact(name) => f.write_str(name),
            NamePattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Labels of letters, digits, `-` and `_` (no label starting or ending
/// with `-`), joined by single dots.
pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What one connection says, as far as routes look at it.
#[derive(Debug, Clone, Copy)]
pub struct Said<'a> {
    /// The client, or the address its PROXY header gave; an IPv4-mapped
    /// address is matched as the IPv4 address it is.
    pub client: IpAddr,
    /// The server name of its TLS ClientHello, lowercase.
    pub sni: Option<&'a str>,
    /// The ALPN protocols its ClientHello offered.
    pub alpn: &'a [&'a [u8]],
}

/// One route's conditions; all that are given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub sni: Vec<NamePattern>,
    /// Protocol names; the route matches if the client offers any.
    pub alpn: Vec<Box<[u8]>>,
    pub source: Vec<Cidr>,
}

/// Which condition of a route is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// `sni`, `alpn` or `source`.
    pub field: &'static str,
    pub index: usize,
    pub message: String,
}

impl Conditions {
    /// Parses a route's lists, naming the first bad entry.
    pub fn parse(
        sni: &[String],
        alpn: &[String],
        source: &[String],
    ) -> Result<Conditions, ConditionError> {
        let error = |field, index, message| ConditionError {
            field,
            index,
            message,
        };
        let sni = sni
            .iter()
            .enumerate()
            .map(|(i, text)| NamePattern::parse(text).map_err(|m| error("sni", i, m)))
            .collect::<Result<_, _>>()?;
        let alpn = alpn
            .iter()
            .enumerate()
            .map(|(i, text)| match text.len() {
                1..=255 => Ok(text.as_bytes().into()),
                _ => Err(error(
                    "alpn",
                    i,
                    format!("{text:?} is not a protocol name (1 to 255 bytes, e.g. \"h2\")"),
                )),
            })
            .collect::<Result<_, _>>()?;
        let source = source
            .iter()
            .enumerate()
            .map(|(i, text)| Cidr::parse(text).map_err(|m| error("source", i, m)))
            .collect::<Result<_, _>>()?;
        Ok(Conditions { sni, alpn, source })
    }

    pub fn is_empty(&self) -> bool {
        self.sni.is_empty() && self.alpn.is_empty() && self.source.is_empty()
    }

    /// Deciding needs the ClientHello (not only the client's address).
    pub fn needs_hello(&self) -> bool {
        !self.sni.is_empty() || !self.alpn.is_empty()
    }

    pub fn matches(&self, said: &Said<'_>) -> bool {
        let client = unmapped(said.client);
        let sni = self.sni.is_empty()
            || said
                .sni
                .is_some_and(|name| self.sni.iter().any(|p| p.matches(name)));
        let alpn = self.alpn.is_empty()
            || said
                .alpn
                .iter()
                .any(|offered| self.alpn.iter().any(|p| **p == **offered));
        let source = self.source.is_empty() || self.source.iter().any(|b| b.contains(client));
        sni && alpn && source
    }

    /// Every connection `later` matches, this route matches too, so a
    /// `later` route listed after it can never be taken.
    pub fn covers(&self, later: &Conditions) -> bool {
        fn all_covered<T>(mine: &[T], theirs: &[T], covers: impl Fn(&T, &T) -> bool) -> bool {
            mine.is_empty()
                || (!theirs.is_empty() && theirs.iter().all(|t| mine.iter().any(|m| covers(m, t))))
        }
        all_covered(&self.sni, &later.sni, NamePattern::covers)
            && all_covered(&self.alpn, &later.alpn, |a, b| a == b)
            && all_covered(&self.source, &later.source, block_covers)
    }
}

/// Every address in `inner` lies in `outer`.
fn block_covers(outer: &Cidr, inner: &Cidr) -> bool {
    match (*outer, *inner) {
        (Cidr::V4 { len: a, .. }, Cidr::V4 { len: b, .. })
        | (Cidr::V6 { len: a, .. }, Cidr::V6 { len: b, .. }) => {
            a <= b && outer.contains(inner.network())
        }
        _ => false,
    }
}

/// Why a connection went to its listener's default pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Its hello (or its address) matched no route.
    NoMatch,
    /// Its first bytes are not a TLS handshake.
    NotTls,
    /// Its hello is larger than the peek reads.
    TooLarge,
    /// No complete hello within `inspect_timeout`.
    Timeout,
    /// It closed before its hello was complete.
    Closed,
}

impl Fallback {
    pub const ALL: [Fallback; 5] = [
        Fallback::NoMatch,
        Fallback::NotTls,
        Fallback::TooLarge,
        Fallback::Timeout,
        Fallback::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NoMatch => "no_match",
            Fallback::NotTls => "not_tls",
            Fallback::TooLarge => "too_large",
            Fallback::Timeout => "timeout",
            Fallback::Closed => "closed",
        }
    }
}

/// Connections a listener sent to its default pool, by reason; shared by
/// every snapshot of the listener, so the counts run on across reloads.
#[derive(Debug, Default)]
pub struct Defaulted([AtomicU64; Fallback::ALL.len()]);

impl Defaulted {
    pub fn count(&self, why: Fallback) {
        self.0[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Fallback) -> u64 {
        self.0[why as usize].load(Ordering::Relaxed)
    }
}

/// One route: its conditions and where it leads (`T` is the registry's
/// pool).
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// As written, or its position (`"0"`, `"1"`...) when unnamed.
    pub name: Arc<str>,
    pub conditions: Conditions,
    pub target: T,
    /// Connections it took; carried across reloads by route name.
    pub taken: Arc<AtomicU64>,
}

/// A listener's routes, in order, and its default.
#[derive(Debug, Clone)]
pub struct Table<T> {
    pub routes: Vec<Route<T>>,
    pub default: T,
    /// Some route looks at the ClientHello: connections are read before
    /// they are connected anywhere.
    pub inspect: bool,
    /// Longest wait for a complete ClientHello.
    pub inspect_timeout: Duration,
    pub defaulted: Arc<Defaulted>,
}

impl<T> Table<T> {
    /// The first route whose conditions hold.
    pub fn find(&self, said: &Said<'_>) -> Option<&Route<T>> {
        self.routes.iter().find(|r| r.conditions.matches(said))
    }

    /// Where a connection goes, counted: its route and target, or the
    /// default (`None` for the route) with `why`.
    pub fn decide(&self, said: Option<&Said<'_>>, why: Fallback) -> (Option<&Route<T>>, &T) {
        match said.and_then(|said| self.find(said)) {
            Some(route) => {
                route.taken.fetch_add(1, Ordering::Relaxed);
                (Some(route), &route.target)
            }
            None => {
                self.defaulted.count(why);
                (None, &self.default)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(sni: &[&str], alpn: &[&str], source: &[&str]) -> Conditions {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Conditions::parse(&owned(sni), &owned(alpn), &owned(source)).expect("valid")
    }

    fn said<'a>(client: &str, sni: Option<&'a str>, alpn: &'a [&'a [u8]]) -> Said<'a> {
        Said {
            client: client.parse().expect("ip"),
            sni,
            alpn,
        }
    }

    #[test]
    fn names_compare_case_insensitively_without_a_trailing_dot() {
        let c = conditions(&["Alpha.Example."], &[], &[]);
        assert!(c.matches(&said("127.0.0.1", Some("alpha.example"), &[])));
        assert!(!c.matches(&said("127.0.0.1", Some("beta.example"), &[])));
        assert!(
            !c.matches(&said("127.0.0.1", None, &[])),
            "no SNI matches no sni condition"
        );
    }

    #[test]
    fn a_wildcard_matches_names_below_it_at_any_depth_but_not_itself() {
        let c = conditions(&["*.a.example"], &[], &[]);
        assert!(c.matches(&said("127.0.0.1", Some("x.a.example"), &[])));
        assert!(c.matches(&said("127.0.0.1", Some("x.y.a.example"), &[])));
        assert!(!c.matches(&said("127.0.0.1", Some("a.example"), &[])));
        assert!(!c.matches(&said("127.0.0.1", Some("xa.example"), &[])));
    }

    #[test]
    fn all_given_conditions_must_hold() {
        let c = conditions(&["api.example"], &["h2"], &["192.0.2.0/24"]);
        assert!(c.matches(&said(
            "192.0.2.7",
            Some("api.example"),
            &[b"http/1.1", b"h2"]
        )));
        assert!(!c.matches(&said("198.51.100.7", Some("api.example"), &[b"h2"])));
        assert!(!c.matches(&said("192.0.2.7", Some("api.example"), &[b"http/1.1"])));
        assert!(!c.matches(&said("192.0.2.7", None, &[b"h2"])));
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_matches_ipv4_blocks() {
        let c = conditions(&[], &[], &["10.0.0.0/8"]);
        assert!(c.matches(&said("::ffff:10.1.2.3", None, &[])));
    }

    #[test]
    fn bad_entries_are_named_by_field_and_index() {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = Conditions::parse(&owned(&["ok.example", "bad name"]), &[], &[]).expect_err("bad");
        assert_eq!((e.field, e.index), ("sni", 1));
        let e = Conditions::parse(&[], &owned(&[""]), &[]).expect_err("bad");
        assert_eq!((e.field, e.index), ("alpn", 0));
        let e = Conditions::parse(&[], &[], &owned(&["10.0.0.1/8"])).expect_err("bad");
        assert_eq!((e.field, e.index), ("source", 0));
        for bad in ["", "*", "*.", "a..b", "-.", "x.*.example", "a b"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_earlier_route_covers_a_later_one_only_when_it_takes_all_it_would() {
        let wide = conditions(&["*.example"], &[], &[]);
        assert!(wide.covers(&conditions(&["a.example", "*.b.example"], &[], &[])));
        assert!(wide.covers(&conditions(&["a.example"], &["h2"], &["10.0.0.0/8"])));
        assert!(!wide.covers(&conditions(&["example"], &[], &[])));
        assert!(
            !wide.covers(&conditions(&[], &["h2"], &[])),
            "a route without sni is not covered by one with"
        );
        let net = conditions(&[], &[], &["10.0.0.0/8"]);
        assert!(net.covers(&conditions(&[], &[], &["10.1.0.0/16"])));
        assert!(!net.covers(&conditions(&[], &[], &["10.0.0.0/7"])));
        assert!(!net.covers(&conditions(&[], &[], &["fd00::/8"])));
        let exact = conditions(&["a.example"], &[], &[]);
        assert!(!exact.covers(&conditions(&["*.a.example"], &[], &[])));
    }
}
