//! Human-readable durations: "500ms", "3s", "1m30s", "1.5s", "2h".
//!
//! This file owns the duration syntax used in config files (and available to
//! the CLI): [`parse_duration`] turns text into a [`Duration`] and
//! [`format_duration`] turns a [`Duration`] back into text that
//! [`parse_duration`] reads as exactly the same value.
//!
//! Syntax: one or more `NUMBER UNIT` parts, e.g. `1h30m` or `1m 30s`.
//! NUMBER is decimal digits with an optional fraction (`1.5`, `.5`), UNIT is
//! one of `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`. A lone `0` is also
//! accepted. Negative values, a missing unit ("3") and values that do not fit
//! a [`Duration`] are rejected.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units from largest to smallest: (suffix, nanoseconds). `format_duration`
/// uses them in this order, except `d` (it writes `48h` rather than `2d`).
const UNITS: &[(&str, u128)] = &[
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
];

/// The unit list as shown in error messages.
const UNIT_NAMES: &str = "ns, us, ms, s, m, h or d";

/// Parses a human-written duration such as `"500ms"`, `"3s"`, `"1m30s"` or
/// `"1.5s"`.
///
/// The error says what is wrong without repeating the input, so callers can
/// prefix it with the field name and value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    if text.starts_with('-') {
        return Err("durations cannot be negative".to_string());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }

    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (whole, fraction, after_number) = split_number(rest)?;
        let after_spaces = after_number.trim_start();
        let unit_len = after_spaces
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after_spaces.len());
        let unit = &after_spaces[..unit_len];
        if unit.is_empty() {
            let number = &rest[..rest.len() - after_number.len()];
            return Err(format!(
                "the number {number} has no unit (write e.g. {number}s or {number}ms; units are {UNIT_NAMES})"
            ));
        }
        let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} (units are {UNIT_NAMES})"));
        };
        let part = part_nanos(whole, fraction, unit_nanos)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = after_spaces[unit_len..].trim_start();
    }
    nanos_to_duration(total)
}

/// Formats a duration so that [`parse_duration`] gives back exactly `d`:
/// `1h30m`, `1s500ms`, `250us`, and `0s` for zero.
pub fn format_duration(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for &(name, unit_nanos) in UNITS
        .iter()
        .filter(|(name, _)| !matches!(*name, "d" | "µs"))
    {
        let count = nanos / unit_nanos;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            nanos %= unit_nanos;
        }
    }
    out
}

/// Splits the leading `DIGITS[.DIGITS]` off `s`; returns (whole digits,
/// fraction digits, rest).
fn split_number(s: &str) -> Result<(&str, &str, &str), String> {
    let whole_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let whole = &s[..whole_len];
    let mut rest = &s[whole_len..];
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let len = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        fraction = &after_dot[..len];
        rest = &after_dot[len..];
    }
    if rest.starts_with('.') {
        return Err(format!(
            "unexpected \".\" in {:?}",
            &s[..s.len() - rest.len() + 1]
        ));
    }
    if whole.is_empty() && fraction.is_empty() {
        let found: String = s.chars().take_while(|c| !c.is_whitespace()).collect();
        return Err(format!("expected a number before {found:?}"));
    }
    Ok((whole, fraction, rest))
}

/// Nanoseconds in `WHOLE.FRACTION` units of `unit_nanos` each. Digits finer
/// than a nanosecond are dropped.
fn part_nanos(whole: &str, fraction: &str, unit_nanos: u128) -> Result<u128, String> {
    let mut nanos: u128 = 0;
    for digit in whole.bytes() {
        nanos = nanos
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    nanos = nanos.checked_mul(unit_nanos).ok_or_else(too_large)?;
    // The fraction is worth FRACTION * unit / 10^len, truncated to whole
    // nanoseconds. 24 digits are far finer than a nanosecond of the largest
    // unit and keep the product within u128.
    let fraction = &fraction[..fraction.len().min(24)];
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for digit in fraction.bytes() {
        numerator = numerator * 10 + u128::from(digit - b'0');
        denominator *= 10;
    }
    nanos
        .checked_add(numerator * unit_nanos / denominator)
        .ok_or_else(too_large)
}

fn nanos_to_duration(nanos: u128) -> Result<Duration, String> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    // The remainder is below 10^9 and so always fits in a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| too_large())?;
    Ok(Duration::new(secs, subsec))
}

fn too_large() -> String {
    "it is too large to be a duration".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn accepts_the_forms_humans_write() {
        let table: &[(&str, Duration)] = &[
            ("500ms", ms(500)),
            ("3s", Duration::from_secs(3)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("1m 30s", Duration::from_secs(90)),
            (" 10s ", Duration::from_secs(10)),
            ("1.5s", ms(1500)),
            ("0.25s", ms(250)),
            (".5s", ms(500)),
            ("1.5m", Duration::from_secs(90)),
            ("0.5d", Duration::from_secs(43_200)),
            ("1.1h", Duration::from_secs(3_960)),
            ("2.5ms", Duration::from_micros(2500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (text, expected) in table {
            assert_eq!(parse_duration(text), Ok(*expected), "parsing {text:?}");
        }
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("3", "no unit"),
            ("1m30", "no unit"),
            ("3 parsecs", "unknown unit \"parsecs\""),
            ("3S", "unknown unit \"S\""),
            ("-3s", "negative"),
            ("s", "expected a number"),
            ("1..5s", "unexpected \".\""),
            ("1.5.s", "unexpected \".\""),
            ("1s.", "expected a number"),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("18446744073709551616s", "too large"),
            ("300000000000000000h", "too large"),
        ];
        for (text, key_words) in table {
            match parse_duration(text) {
                Ok(d) => panic!("{text:?} parsed as {d:?}"),
                Err(message) => assert!(
                    message.contains(key_words),
                    "error for {text:?} was {message:?}, expected it to mention {key_words:?}"
                ),
            }
        }
    }

    #[test]
    fn the_largest_duration_parses() {
        let max = Duration::MAX;
        assert_eq!(parse_duration(&format_duration(max)), Ok(max));
    }

    #[test]
    fn formats_compactly_from_largest_unit() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(ms(500)), "500ms");
        assert_eq!(format_duration(ms(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400)), "48h");
        assert_eq!(format_duration(Duration::from_nanos(1_001)), "1us1ns");
    }

    quickcheck! {
        fn format_then_parse_gives_back_the_same_duration(secs: u64, nanos: u32) -> bool {
            let d = Duration::new(secs, nanos % 1_000_000_000);
            parse_duration(&format_duration(d)) == Ok(d)
        }

        fn small_durations_round_trip(millis: u32) -> bool {
            let d = ms(u64::from(millis));
            parse_duration(&format_duration(d)) == Ok(d)
        }
    }

    /// Runs `prop` on `tests` generated cases.
    fn check<A: quickcheck::Arbitrary + std::fmt::Debug>(tests: u64, prop: fn(A) -> bool) {
        quickcheck::QuickCheck::new().tests(tests).quickcheck(prop);
    }

    #[test]
    fn arbitrary_text_never_panics_and_errors_say_why() {
        fn prop(text: String) -> bool {
            parse_duration(&text).map_or_else(|e| is_clear(&e), |_| true)
        }
        check(2000, prop as fn(_) -> _);
    }

    #[test]
    fn near_miss_text_never_panics_and_errors_say_why() {
        fn prop(pieces: Vec<u8>) -> bool {
            // Digits, dots, signs, spaces and unit letters, so that most
            // inputs get past the first character.
            const PIECES: &[&str] = &[
                "0",
                "1",
                "7",
                "9",
                ".",
                "-",
                "+",
                " ",
                "\t",
                "ns",
                "us",
                "µs",
                "ms",
                "s",
                "m",
                "h",
                "d",
                "x",
                "99999999999999999999",
                "e3",
            ];
            let text: String = pieces
                .iter()
                .take(12)
                .map(|&p| PIECES[usize::from(p) % PIECES.len()])
                .collect();
            parse_duration(&text).map_or_else(|e| is_clear(&e), |_| true)
        }
        check(5000, prop as fn(_) -> _);
    }

    #[test]
    fn parts_in_any_units_add_up() {
        fn prop(parts: Vec<(u16, u8, bool)>) -> bool {
            let mut text = String::new();
            let mut total: u128 = 0;
            for &(count, unit, space) in parts.iter().take(8) {
                let (name, nanos) = UNITS[usize::from(unit) % UNITS.len()];
                text.push_str(&format!("{count}{}{name}", if space { " " } else { "" }));
                if space {
                    text.push(' ');
                }
                total += u128::from(count) * nanos;
            }
            // At most 8 parts of 65535 days: always within a Duration.
            text.is_empty() || parse_duration(&text).is_ok_and(|d| d.as_nanos() == total)
        }
        check(2000, prop as fn(_) -> _);
    }

    /// An error names one of the reasons a duration is refused, and is
    /// short enough to follow a field name and value on one line.
    fn is_clear(message: &str) -> bool {
        let reasons = [
            "it is empty",
            "cannot be negative",
            "has no unit",
            "unknown unit",
            "expected a number",
            "unexpected \".\"",
            "too large",
        ];
        reasons.iter().any(|r| message.contains(r)) && !message.contains('\n')
    }
}
