//! The library's top-level modules must not import each other in a circle.
//!
//! A cycle means no module in it can be read, tested or changed without the
//! others, and it is how a 3,000-line module grows. This test reads every
//! file of the library under `src/` (following `mod` declarations from
//! `src/lib.rs`, `#[path]` included), collects each `crate::a::…` path,
//! `use crate::{a, b::c}` groups included, and builds a graph whose nodes are
//! the top-level modules (`a`). Strongly connected components of more than
//! one module are cycles; each is printed with the files that make its edges.
//!
//! Run it alone with `cargo test --test module_graph -- --nocapture`.
//! Paths inside comments are ignored; test code (`#[cfg(test)]`) counts too,
//! since a test that needs a module's caller is the same tangle. `super::`
//! paths never leave a top-level module except from the crate root, so they
//! are not followed. Pure std, no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One library file and the module path it is compiled as (`["health", "probe"]`).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

/// Blanks comments (keeping newlines so line numbers hold) and leaves code
/// and string literals as they are; a `//` inside a string is not a comment.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        out.extend_from_slice(b"  ");
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        out.extend_from_slice(b"  ");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(blank(b[i]));
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string r"…" or r#"…"#: copy through to the closing quote
                // followed by as many hashes.
                let start = i;
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"'
                        && b[j + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&c| c == b'#')
                            .count()
                            == hashes
                    {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.extend_from_slice(&b[start..j.min(b.len())]);
                i = j;
            }
            b'"' => {
                out.push(b'"');
                i += 1;
                while i < b.len() {
                    let c = b[i];
                    out.push(c);
                    i += 1;
                    if c == b'\\' && i < b.len() {
                        out.push(b[i]);
                        i += 1;
                    } else if c == b'"' {
                        break;
                    }
                }
            }
            b'\'' => {
                // A char literal ('"', '\'', 'x') is copied whole so its quote
                // cannot open a string; otherwise this is a lifetime.
                let len = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(3)
                } else {
                    None
                };
                let len = len.unwrap_or(1);
                out.extend_from_slice(&b[i..i + len]);
                i += len;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8: only ASCII bytes are replaced")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `mod name;` declarations of a file, with the `#[path = "…"]` on them.
fn module_declarations(code: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut pending_path: Option<String> = None;
    for line in code.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#[path") {
            pending_path = rest.split('"').nth(1).map(str::to_owned);
            continue;
        }
        if line.starts_with("#[") {
            continue;
        }
        let decl = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        if let Some(rest) = decl.strip_prefix("mod ") {
            if let Some(name) = rest.strip_suffix(';') {
                found.push((name.trim().to_owned(), pending_path.take()));
            }
        }
        pending_path = None;
    }
    found
}

/// Every file of the library, reached from `src/lib.rs` as rustc would.
fn library_files(src: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut queue = vec![(src.join("lib.rs"), Vec::<String>::new())];
    while let Some((path, module)) = queue.pop() {
        let raw =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let text = strip_comments(&raw);
        // Children of `a.rs` or `a/mod.rs` live in `a/`; `#[path]` is
        // relative to the declaring file's directory (for non-mod.rs files,
        // rustc uses the file's own directory too when the attribute is on
        // a top-level `mod`).
        let dir = path.parent().expect("a file has a directory").to_path_buf();
        let is_dir_owner = matches!(
            path.file_name().and_then(|n| n.to_str()),
            Some("lib.rs") | Some("mod.rs")
        );
        let child_dir = if is_dir_owner {
            dir.clone()
        } else {
            dir.join(path.file_stem().expect("a .rs file has a stem"))
        };
        for (name, attr) in module_declarations(&text) {
            let child = match attr {
                Some(p) => dir.join(p),
                None if child_dir.join(format!("{name}.rs")).exists() => {
                    child_dir.join(format!("{name}.rs"))
                }
                None => child_dir.join(&name).join("mod.rs"),
            };
            let mut child_module = module.clone();
            child_module.push(name);
            queue.push((child, child_module));
        }
        files.push(SourceFile { path, module, text });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The paths named after each `crate::` (not `$crate::`): `crate::a::b` gives
/// `["a", "b"]`, `crate::{a::b, c}` gives both. Returned with their line.
fn crate_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut paths = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\n' {
            line += 1;
        }
        let starts_word = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == '$');
        if starts_word && chars[i..].starts_with(&['c', 'r', 'a', 't', 'e', ':', ':']) {
            let mut j = i + 7;
            let mut out = Vec::new();
            parse_tree(&chars, &mut j, Vec::new(), &mut out);
            paths.extend(out.into_iter().map(|p| (line, p)));
            // Newlines inside a group still count toward later line numbers.
            line += chars[i..j].iter().filter(|&&c| c == '\n').count();
            i = j;
            continue;
        }
        i += 1;
    }
    paths
}

/// Parses `a::b::{c, d::e}` starting at `chars[*at]`, pushing each full path.
fn parse_tree(chars: &[char], at: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_ws = |at: &mut usize| {
        while *at < chars.len() && chars[*at].is_whitespace() {
            *at += 1;
        }
    };
    let mut path = prefix;
    loop {
        skip_ws(at);
        if *at < chars.len() && chars[*at] == '{' {
            *at += 1;
            loop {
                skip_ws(at);
                if *at >= chars.len() || chars[*at] == '}' {
                    *at += 1;
                    break;
                }
                parse_tree(chars, at, path.clone(), out);
                skip_ws(at);
                if *at < chars.len() && chars[*at] == ',' {
                    *at += 1;
                }
            }
            return;
        }
        let start = *at;
        while *at < chars.len() && is_ident(chars[*at]) {
            *at += 1;
        }
        if *at == start {
            break;
        }
        path.push(chars[start..*at].iter().collect());
        if chars[*at..].starts_with(&[':', ':']) {
            *at += 2;
        } else {
            break;
        }
    }
    // `as name` after a path in a group belongs to it; skip it.
    skip_ws(at);
    if chars[*at..].starts_with(&['a', 's', ' ']) {
        *at += 3;
        skip_ws(at);
        while *at < chars.len() && is_ident(chars[*at]) {
            *at += 1;
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// Tarjan's strongly connected components, iteratively.
fn strongly_connected(
    nodes: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Vec<String>> {
    let names: Vec<&String> = nodes.iter().collect();
    let index_of: BTreeMap<&String, usize> =
        names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let succ: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            edges
                .get(*n)
                .into_iter()
                .flatten()
                .filter_map(|m| index_of.get(m).copied())
                .collect()
        })
        .collect();
    let n = names.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut comps, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = succ[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(names[w].clone());
                    if w == v {
                        break;
                    }
                }
                comp.sort();
                comps.push(comp);
            }
        }
    }
    comps
}

#[test]
fn top_level_modules_import_each_other_in_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = library_files(&root.join("src"));
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .collect();

    // edge (from, to) → where it is made, for the report
    let mut sites: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = file.module.first() else {
            continue;
        };
        for (line, path) in crate_paths(&file.text) {
            let to = &path[0];
            if to == from || !modules.contains(to) {
                continue;
            }
            edges.entry(from.clone()).or_default().insert(to.clone());
            let rel = file.path.strip_prefix(root).unwrap_or(&file.path);
            sites
                .entry((from.clone(), to.clone()))
                .or_default()
                .insert(format!("{}:{line}", rel.display()));
        }
    }

    let cycles: Vec<Vec<String>> = strongly_connected(&modules, &edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    println!(
        "{} modules, {} edges, {} cycle(s)",
        modules.len(),
        edges.values().map(BTreeSet::len).sum::<usize>(),
        cycles.len()
    );
    for (k, cycle) in cycles.iter().enumerate() {
        println!(
            "cycle {} ({} modules): {}",
            k + 1,
            cycle.len(),
            cycle.join(", ")
        );
        let members: BTreeSet<&String> = cycle.iter().collect();
        for ((from, to), at) in &sites {
            if members.contains(from) && members.contains(to) {
                let at: Vec<&str> = at.iter().map(String::as_str).take(3).collect();
                println!("  {from} -> {to}  ({})", at.join(", "));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "{} import cycle(s) between top-level modules; run `cargo test --test module_graph -- --nocapture` for the edges",
        cycles.len()
    );
}
