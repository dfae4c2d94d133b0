//! The query string of an admin request, decoded.
//!
//! Owns percent-decoding (`%3A` is `:`, `+` is a space, as HTML forms and
//! `curl --data-urlencode` send them) and the lookup of a parameter by
//! name. Pure: no I/O, no state beyond the decoded pairs; `routes` uses it
//! to read action parameters. A bad escape or a value that is not UTF-8 is
//! an error naming the parameter, so the action is refused with 400 and
//! nothing changes.

/// `a=1&b=2`, names and values percent-decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes every `name=value` pair of `raw` (the request target after
    /// `?`). A pair without `=` has an empty value; empty pairs (`a=1&&b=2`)
    /// are skipped. The error names the parameter and what is wrong.
    pub(crate) fn parse(raw: &str) -> Result<Query, String> {
        let mut pairs = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|e| format!("query parameter {name:?}: {e}"))?;
            let value = decode(value).map_err(|e| format!("{name}=: {e}"))?;
            pairs.push((name, value));
        }
        Ok(Query { pairs })
    }

    /// The first value of parameter `name`, decoded.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decodes `text`, `+` standing for a space.
pub(crate) fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape = bytes.get(i + 1..i + 3);
                let byte = escape
                    .and_then(|e| Some(hex(e[0])? << 4 | hex(e[1])?))
                    .ok_or_else(|| {
                        let shown = String::from_utf8_lossy(&bytes[i..bytes.len().min(i + 3)]);
                        format!("bad percent escape {shown:?} (expected % and two hex digits)")
                    })?;
                out.push(byte);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "decodes to bytes that are not UTF-8".to_string())
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, Query};

    #[test]
    fn escapes_decode_in_either_case_and_plus_is_a_space() {
        assert_eq!(decode("127.0.0.1%3A9001").as_deref(), Ok("127.0.0.1:9001"));
        assert_eq!(decode("%5B%3a%3A1%5d%3A80").as_deref(), Ok("[::1]:80"));
        assert_eq!(decode("a+b%2Bc").as_deref(), Ok("a b+c"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Ok("café"));
        assert_eq!(decode("").as_deref(), Ok(""));
        assert_eq!(decode("plain-name_1.2").as_deref(), Ok("plain-name_1.2"));
    }

    #[test]
    fn bad_escapes_and_non_utf8_are_refused() {
        for bad in ["%", "%4", "abc%", "%G1", "%1g", "x%zz"] {
            let e = decode(bad).unwrap_err();
            assert!(e.contains("bad percent escape"), "{bad}: {e}");
        }
        assert!(decode("%FF").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn parameters_are_found_by_decoded_name_and_errors_name_them() {
        let q =
            Query::parse("pool=web&backend=10.0.0.1%3A80&&flag&weight=3&weight=4").expect("valid");
        assert_eq!(q.get("pool"), Some("web"));
        assert_eq!(q.get("backend"), Some("10.0.0.1:80"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("weight"), Some("3"), "the first one wins");
        assert_eq!(q.get("missing"), None);
        let e = Query::parse("pool=web&backend=10.0.0.1%3").unwrap_err();
        assert!(e.starts_with("backend=: bad percent escape"), "{e}");
        assert_eq!(Query::parse("").expect("empty"), Query::default());
    }
}
