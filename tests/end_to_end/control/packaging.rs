//! What `make install` and `make deb` ship (`dist/`): the man page documents
//! every flag `--help` lists, renders without warnings, and the files the
//! install target stages (unit, man page, example configuration, log
//! directory) fit together and pass the real binary's `--check`.
//!
//! Runs `make install-files` (everything but the binary, so no build) into
//! a temporary DESTDIR, `groff` on the man page and the balancer itself;
//! touches nothing outside its temporary directories.

use crate::support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::balancer::{run_to_completion, TempDir};
use support::skip::require_programs;

const RUN_LIMIT: Duration = Duration::from_secs(10);
/// `timeout(1)`'s limit for make and groff, in seconds.
const TOOL_LIMIT_SECS: &str = "60";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn man_page_source() -> String {
    fs::read_to_string(repo().join("dist/balanciaga4.8")).expect("read dist/balanciaga4.8")
}

/// Runs `program args` in the repository under `timeout`, so a hung tool
/// fails the test instead of holding it.
fn run_tool(program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(TOOL_LIMIT_SECS)
        .arg(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// `make install-files PREFIX=prefix DESTDIR=dest`, which must succeed.
fn install_files(dest: &Path, prefix: &str) {
    let destdir = format!("DESTDIR={}", dest.display());
    let prefix = format!("PREFIX={prefix}");
    let out = run_tool(
        "make",
        &["--no-print-directory", "install-files", &destdir, &prefix],
    );
    assert!(
        out.status.success(),
        "make install-files failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The flags of `--help`: every word that starts with `-` and a letter, or
/// `--` and a letter (so "layer-4" or a lone "-" are not flags).
fn flags_in(help: &str) -> BTreeSet<String> {
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| {
            let rest = word.strip_prefix("--").or_else(|| word.strip_prefix('-'));
            rest.is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()))
        })
        .map(str::to_string)
        .collect()
}

/// The man page as text a reader searches: roff's `\-` is a hyphen and
/// font changes (`\fB`, `\fR`...) are dropped.
fn roff_to_text(roff: &str) -> String {
    let mut text = String::with_capacity(roff.len());
    let mut chars = roff.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => text.push('-'),
            Some('f') => {
                chars.next();
            }
            Some(other) => {
                text.push('\\');
                text.push(other);
            }
            None => text.push('\\'),
        }
    }
    text
}

/// Whether `flag` appears in `text` as a whole word, not as the start of a
/// longer flag (`--udp` inside `--udp-key` does not count).
fn mentions(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + flag.len()..].chars().next();
        let part_of_word =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        !part_of_word(before) && !part_of_word(after)
    })
}

#[test]
fn every_flag_in_help_is_documented_in_the_man_page() {
    let out = run_to_completion(&["--help"], None, RUN_LIMIT);
    assert!(out.status.success(), "--help exited with {}", out.status);
    let help = String::from_utf8_lossy(&out.stdout);
    let flags = flags_in(&help);
    // The parse itself must work: today's --help lists over forty flags.
    assert!(
        flags.len() >= 40 && flags.contains("--config") && flags.contains("-V"),
        "found only {flags:?} in --help"
    );
    let man = roff_to_text(&man_page_source());
    let missing: Vec<&String> = flags.iter().filter(|f| !mentions(&man, f)).collect();
    assert!(
        missing.is_empty(),
        "dist/balanciaga4.8 does not document {missing:?} from --help"
    );
}

#[test]
fn the_man_page_renders_without_warnings() {
    if !require_programs(&["groff"]) {
        return;
    }
    let out = run_tool("groff", &["-man", "-ww", "-z", "dist/balanciaga4.8"]);
    assert!(out.status.success(), "groff exited with {}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "groff -man -ww warned about dist/balanciaga4.8"
    );
}

#[test]
fn the_example_config_make_install_puts_in_etc_passes_check_and_logs_into_the_installed_log_dir() {
    if !require_programs(&["make", "gzip"]) {
        return;
    }
    let dest = TempDir::new("install");
    install_files(dest.path(), "/usr");
    let config = dest.path().join("etc/balanciaga4/balanciaga4.ron");
    let log_dir = dest.path().join("var/log/balanciaga4");
    assert!(
        log_dir.is_dir(),
        "make install made no {}",
        log_dir.display()
    );
    let installed = fs::read_to_string(&config).expect("the installed example config");
    assert!(
        installed.contains("\"/var/log/balanciaga4/access.log\""),
        "the example config does not log to /var/log/balanciaga4/access.log"
    );
    // The same file, with its log moved into the staged tree: --check must
    // then create the access log in the directory make install made.
    let staged_log = format!("\"{}/", log_dir.display());
    fs::write(
        &config,
        installed.replace("\"/var/log/balanciaga4/", &staged_log),
    )
    .expect("rewrite the log path");
    let config_arg = config.to_str().expect("a UTF-8 temp path");
    let out = run_to_completion(&["--check", "--config", config_arg], None, RUN_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "--check failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!("{config_arg}: ok")
    );
    assert!(
        log_dir.join("access.log").is_file(),
        "--check did not open the access log in {}",
        log_dir.display()
    );
}

/// The installed unit and the paths it names, for one PREFIX.
fn staged_unit(dest: &Path, prefix: &str, unit_dir: &str) -> (PathBuf, String) {
    install_files(dest, prefix);
    let unit = dest.join(unit_dir).join("balanciaga4.service");
    let text = fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("PREFIX={prefix}: no unit at {}: {e}", unit.display()));
    (unit, text)
}

#[test]
fn make_install_substitutes_the_prefix_into_the_unit_and_gzips_the_man_page() {
    if !require_programs(&["make", "gzip"]) {
        return;
    }
    for (prefix, unit_dir) in [
        ("/usr", "lib/systemd/system"),
        ("/usr/local", "usr/local/lib/systemd/system"),
    ] {
        let dest = TempDir::new("install");
        let (unit, text) = staged_unit(dest.path(), prefix, unit_dir);
        assert!(
            !text.contains('@'),
            "{} keeps a placeholder",
            unit.display()
        );
        let exec_start = format!(
            "\nExecStart={prefix}/sbin/balanciaga4 --config /etc/balanciaga4/balanciaga4.ron\n"
        );
        assert!(text.contains(&exec_start), "PREFIX={prefix}: {text}");
        let reloads: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ExecReload="))
            .collect();
        assert_eq!(
            reloads,
            [
                format!(
                    "ExecReload={prefix}/sbin/balanciaga4 --check --config /etc/balanciaga4/balanciaga4.ron"
                )
                .as_str(),
                "ExecReload=/bin/kill -HUP $MAINPID",
            ],
            "PREFIX={prefix}: reload must check, then signal"
        );
        let man = dest
            .path()
            .join(prefix.trim_start_matches('/'))
            .join("share/man/man8/balanciaga4.8.gz");
        let man_arg = man.to_str().expect("a UTF-8 temp path");
        let unzipped = run_tool("gzip", &["-dc", man_arg]);
        assert!(unzipped.status.success(), "gzip -dc {man_arg} failed");
        assert_eq!(
            String::from_utf8_lossy(&unzipped.stdout),
            man_page_source(),
            "{man_arg} is not dist/balanciaga4.8"
        );
    }
}
