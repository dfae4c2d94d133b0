//! A strict parser of the Prometheus text format (version 0.0.4), to check
//! what the metrics endpoint serves, and lookups into what it parsed.
//!
//! Stricter than Prometheus where our writer has no reason to differ: every
//! family needs a TYPE line before its samples, a family's lines (HELP and
//! TYPE first) must be together, counters may not be negative, histograms
//! need cumulative buckets in increasing `le` order ending with `+Inf`, a
//! `_sum` and a `_count` equal to the `+Inf` bucket, label names may not
//! start with `__`, values are decimal numbers or `NaN`/`+Inf`/`-Inf`
//! (not Go's other spellings), and lines have no leading or trailing
//! blanks. Every error starts with `line N: `.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Where it was, 1-based.
    pub line: usize,
}

impl Family {
    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && s.has(labels))
            .map(|s| s.value)
    }
}

impl Sample {
    /// Whether it has each of `labels` (and maybe others).
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// The family named `name` (for a histogram, without `_bucket` etc.).
pub fn family<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
    families.iter().find(|f| f.name == name)
}

/// The value of the sample `name` whose labels are exactly `labels`.
pub fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families.iter().find_map(|f| f.value(name, labels))
}

/// Every sample `name` that has at least `labels`, in order.
pub fn samples<'a>(
    families: &'a [Family],
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .filter(move |s| s.name == name && s.has(labels))
}

/// Parses a whole exposition, checking everything the module top says.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    // After the last newline comes "", or the unterminated last line.
    if lines.pop().is_some_and(|last| !last.is_empty()) {
        return err(lines.len() + 1, "no newline at the end of the last line");
    }
    let mut parser = Parser::default();
    for (i, line) in lines.iter().enumerate() {
        parser.line(i + 1, line)?;
    }
    parser.end_family()?;
    Ok(parser.families)
}

fn err<T>(line: usize, message: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("line {line}: {message}"))
}

/// What the parser knows of a family besides what `Family` shows.
#[derive(Default)]
struct Lines {
    kind: Option<Kind>,
    help: Option<usize>,
    type_: Option<usize>,
    first_sample: Option<usize>,
    last: usize,
}

#[derive(Default)]
struct Parser {
    families: Vec<Family>,
    /// Parallel to `families`.
    lines: Vec<Lines>,
    by_name: HashMap<String, usize>,
    /// Line of every (sample name, labels) seen.
    series: HashMap<(String, BTreeMap<String, String>), usize>,
    /// The family whose lines are being read.
    current: Option<usize>,
}

impl Parser {
    fn line(&mut self, n: usize, line: &str) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        if line.contains('\r') {
            return err(n, "carriage return (lines end with \\n only)");
        }
        let Some(comment) = line.strip_prefix('#') else {
            return self.sample(n, line);
        };
        let (word, rest) = split_blank(comment.trim_start_matches([' ', '\t']));
        match word {
            "HELP" => self.help(n, rest),
            "TYPE" => self.type_(n, rest),
            _ => Ok(()), // a plain comment
        }
    }

    fn help(&mut self, n: usize, rest: &str) -> Result<(), String> {
        let (name, doc) = split_blank(rest.trim_start_matches([' ', '\t']));
        if !is_metric_name(name) {
            return err(n, format!("HELP: invalid metric name {name:?}"));
        }
        let mut help = String::new();
        let mut chars = doc.trim_start_matches([' ', '\t']).chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                help.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => help.push('\\'),
                Some('n') => help.push('\n'),
                other => return err(n, format!("HELP: bad escape {}", show(other))),
            }
        }
        let i = self.family_for(n, name)?;
        let at = &mut self.lines[i];
        if let Some(first) = at.help {
            return err(n, format!("second HELP for {name} (first at line {first})"));
        }
        if let Some(sample) = at.first_sample {
            return err(
                n,
                format!("HELP for {name} after its samples (line {sample})"),
            );
        }
        at.help = Some(n);
        self.families[i].help = Some(help);
        Ok(())
    }

    fn type_(&mut self, n: usize, rest: &str) -> Result<(), String> {
        let words: Vec<&str> = rest.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        let [name, kind] = words[..] else {
            return err(n, "TYPE needs a metric name and a type, nothing else");
        };
        if !is_metric_name(name) {
            return err(n, format!("TYPE: invalid metric name {name:?}"));
        }
        let kind = match kind {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return err(n, format!("TYPE: unknown type {kind:?}")),
        };
        let i = self.family_for(n, name)?;
        let at = &mut self.lines[i];
        if let Some(first) = at.type_ {
            return err(n, format!("second TYPE for {name} (first at line {first})"));
        }
        if let Some(sample) = at.first_sample {
            return err(
                n,
                format!("TYPE for {name} after its samples (line {sample})"),
            );
        }
        at.type_ = Some(n);
        at.kind = Some(kind);
        Ok(())
    }

    fn sample(&mut self, n: usize, line: &str) -> Result<(), String> {
        if line.ends_with([' ', '\t']) {
            return err(n, "trailing whitespace");
        }
        let (name, labels, value) = parse_sample(line).or_else(|e| err(n, e))?;
        let of = |p: &Parser, i: usize| fits(p.lines[i].kind, &p.families[i].name, &name);
        let i = match self.current.filter(|&c| of(self, c)) {
            Some(c) => c,
            None => {
                if let Some(i) = (0..self.families.len()).find(|&i| of(self, i)) {
                    return err(n, self.apart(i));
                }
                if let Some(&i) = self.by_name.get(&name) {
                    let kind = self.lines[i].kind.unwrap_or(Kind::Untyped);
                    return err(n, format!("{kind:?} {name} has no sample named {name}"));
                }
                self.family_for(n, &name)?
            }
        };
        let kind = self.lines[i].kind;
        if kind == Some(Kind::Counter) && (value.is_nan() || value < 0.0) {
            return err(n, format!("counter {name} is {value}: not a number >= 0"));
        }
        let le = labels.contains_key("le");
        let quantile = labels.contains_key("quantile");
        let family = &self.families[i].name;
        let main = match kind {
            Some(Kind::Histogram) => Some((format!("{family}_bucket"), "le", le)),
            Some(Kind::Summary) => Some((family.clone(), "quantile", quantile)),
            _ => None,
        };
        match main {
            Some((main, label, false)) if name == main => {
                return err(n, format!("{name} has no {label} label"));
            }
            Some((main, label, true)) if name != main => {
                return err(n, format!("{name} has an {label} label: only {main} may"));
            }
            _ => {}
        }
        let key = (name, labels);
        if let Some(first) = self.series.get(&key) {
            let (name, labels) = key;
            return err(
                n,
                format!("{} again (first at line {first})", series(&name, &labels)),
            );
        }
        self.series.insert(key.clone(), n);
        let (name, labels) = key;
        self.lines[i].first_sample.get_or_insert(n);
        self.lines[i].last = n;
        self.families[i].samples.push(Sample {
            name,
            labels,
            value,
            line: n,
        });
        Ok(())
    }

    /// The family `name`, which must be the current one or a new one.
    fn family_for(&mut self, n: usize, name: &str) -> Result<usize, String> {
        let i = match self.by_name.get(name) {
            Some(&i) if self.current == Some(i) => i,
            Some(&i) => return err(n, self.apart(i)),
            None => {
                self.end_family()?;
                let i = self.families.len();
                self.families.push(Family {
                    name: name.to_owned(),
                    help: None,
                    kind: Kind::Untyped,
                    samples: Vec::new(),
                });
                self.lines.push(Lines::default());
                self.by_name.insert(name.to_owned(), i);
                self.current = Some(i);
                i
            }
        };
        self.lines[i].last = n;
        Ok(i)
    }

    fn apart(&self, i: usize) -> String {
        format!(
            "a line of {} apart from its others (last at line {}): a family's lines must be together",
            self.families[i].name, self.lines[i].last
        )
    }

    /// Checks the current family as a whole, now that its lines ended.
    fn end_family(&mut self) -> Result<(), String> {
        let Some(i) = self.current.take() else {
            return Ok(());
        };
        let (family, lines) = (&mut self.families[i], &self.lines[i]);
        family.kind = match (lines.kind, lines.first_sample) {
            (Some(kind), _) => kind,
            (None, None) => Kind::Untyped,
            (None, Some(first)) => {
                return err(first, format!("{} has no TYPE line before it", family.name));
            }
        };
        match family.kind {
            Kind::Histogram => check_histogram(family),
            Kind::Summary => check_summary(family),
            _ => Ok(()),
        }
    }
}

/// One label set's `_bucket`s, `_sum` and `_count`.
#[derive(Default)]
struct Group<'a> {
    /// Without `le` and `quantile`.
    labels: BTreeMap<String, String>,
    first: usize,
    buckets: Vec<(f64, &'a Sample)>,
    sum: Option<&'a Sample>,
    count: Option<&'a Sample>,
}

fn check_histogram(family: &Family) -> Result<(), String> {
    let name = &family.name;
    for g in groups(family)? {
        let series = series(name, &g.labels);
        let Some(&(last_le, last)) = g.buckets.last() else {
            return err(g.first, format!("{series} has no buckets"));
        };
        let mut prev: Option<(f64, f64)> = None;
        for &(le, s) in &g.buckets {
            if s.value.is_nan() || s.value < 0.0 {
                return err(s.line, format!("bucket count {} is not >= 0", s.value));
            }
            if let Some((prev_le, prev_count)) = prev {
                if le <= prev_le {
                    return err(
                        s.line,
                        format!("le {le} does not follow {prev_le}: le must increase"),
                    );
                }
                if s.value < prev_count {
                    return err(
                        s.line,
                        format!(
                            "le {le} has {} < {prev_count} below it: not cumulative",
                            s.value
                        ),
                    );
                }
            }
            prev = Some((le, s.value));
        }
        if last_le != f64::INFINITY {
            return err(last.line, format!("{series} has no le=\"+Inf\" bucket"));
        }
        let Some(count) = g.count else {
            return err(g.first, format!("{series} has no {name}_count"));
        };
        if count.value != last.value {
            return err(
                count.line,
                format!(
                    "{name}_count is {} but the +Inf bucket (line {}) is {}",
                    count.value, last.line, last.value
                ),
            );
        }
        if g.sum.is_none() {
            return err(g.first, format!("{series} has no {name}_sum"));
        }
    }
    Ok(())
}

fn check_summary(family: &Family) -> Result<(), String> {
    let name = &family.name;
    for g in groups(family)? {
        let series = series(name, &g.labels);
        if g.count.is_none() || g.sum.is_none() {
            return err(
                g.first,
                format!("{series} needs both {name}_sum and {name}_count"),
            );
        }
    }
    Ok(())
}

/// The family's samples by label set without `le` and `quantile`, in order
/// of first appearance. Bucket bounds and quantiles are parsed here.
fn groups(family: &Family) -> Result<Vec<Group<'_>>, String> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for s in &family.samples {
        let mut labels = s.labels.clone();
        let le = labels.remove("le");
        let quantile = labels.remove("quantile");
        let at = match groups.iter().position(|g| g.labels == labels) {
            Some(at) => at,
            None => {
                groups.push(Group {
                    labels,
                    first: s.line,
                    ..Group::default()
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        let suffix = &s.name[family.name.len()..];
        match (suffix, le, quantile) {
            ("_sum", _, _) => g.sum = Some(s),
            ("_count", _, _) => g.count = Some(s),
            ("_bucket", Some(le), _) => match parse_value(&le) {
                Ok(bound) if !bound.is_nan() => g.buckets.push((bound, s)),
                _ => return err(s.line, format!("le {le:?} is not a number")),
            },
            (_, _, Some(q)) => match parse_value(&q) {
                Ok(q) if (0.0..=1.0).contains(&q) => {}
                _ => return err(s.line, format!("quantile {q:?} is not in [0, 1]")),
            },
            _ => {}
        }
    }
    Ok(groups)
}

/// Whether a sample named `sample` is one of family `name`'s, given its
/// type (an unknown type is taken as untyped).
fn fits(kind: Option<Kind>, name: &str, sample: &str) -> bool {
    let suffix = sample.strip_prefix(name);
    match kind {
        Some(Kind::Histogram) => matches!(suffix, Some("_bucket" | "_sum" | "_count")),
        Some(Kind::Summary) => matches!(suffix, Some("" | "_sum" | "_count")),
        _ => suffix == Some(""),
    }
}

/// `name{labels} value [timestamp]`, the timestamp being dropped.
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let end = line.find([' ', '\t', '{']).unwrap_or(line.len());
    let name = &line[..end];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    let words: Vec<&str> = rest.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    if !rest.starts_with([' ', '\t']) || words.is_empty() {
        return Err(format!(
            "{name}: expected a blank and a value, found {rest:?}"
        ));
    }
    let value = parse_value(words[0])?;
    match words[1..] {
        [] => {}
        [stamp] if stamp.parse::<i64>().is_ok() && !stamp.starts_with('+') => {}
        _ => {
            return Err(format!(
                "{name}: {:?} after the value",
                words[1..].join(" ")
            ))
        }
    }
    Ok((name.to_owned(), labels, value))
}

/// Reads labels up to and including the `}`; returns what follows.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let end = rest.find(['=', ',', '}', '"', ' ']).unwrap_or(rest.len());
        let label = &rest[..end];
        if !is_label_name(label) {
            return Err(format!("invalid label name {label:?}"));
        }
        rest = rest[end..]
            .strip_prefix('=')
            .ok_or_else(|| format!("label {label}: expected ="))?;
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {label}: value not in double quotes"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        loop {
            match chars.next() {
                None => return Err(format!("label {label}: value has no closing quote")),
                Some((i, '"')) => {
                    rest = &rest[i + 1..];
                    break;
                }
                Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("label {label}: bad escape {}", show(other))),
                },
                Some((_, c)) => value.push(c),
            }
        }
        if labels.insert(label.to_owned(), value).is_some() {
            return Err(format!("label {label} given twice"));
        }
        // A comma may also end the list: `{a="1",}`.
        match rest.strip_prefix(',') {
            Some(after) => rest = after,
            None if rest.starts_with('}') => {}
            None => return Err(format!("label {label}: expected , or }} after the value")),
        }
    }
}

/// A decimal float, or `NaN`, `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => return Ok(f64::NAN),
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() || digits(int))
                && (frac.is_empty() || digits(frac))
                && int.len() + frac.len() > 0
        }
        None => digits(mantissa),
    };
    match s.parse::<f64>() {
        Ok(v) if mantissa_ok && exponent.is_none_or(digits) => Ok(v),
        _ => Err(format!("invalid value {s:?}")),
    }
}

fn split_blank(s: &str) -> (&str, &str) {
    s.split_once([' ', '\t']).unwrap_or((s, ""))
}

/// An escape sequence for messages: `\t`, or `\` if the line ended.
fn show(c: Option<char>) -> String {
    match c {
        None => "\\ at the end of the line".to_owned(),
        Some(c) if c.is_control() => format!("\\{}", c.escape_debug()),
        Some(c) => format!("\\{c}"),
    }
}

/// `name{a="1",b="2"}` for messages.
fn series(name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = name.to_owned();
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}{k}={v:?}");
        }
        out.push('}');
    }
    out
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label name; `__` starts names Prometheus reserves for itself.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}
