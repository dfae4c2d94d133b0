//! Checks of a valid configuration against this host.
//!
//! Owns the checks that touch the system, kept out of `config` so that
//! parsing and validation stay pure (no file opened, no user database read):
//! `global.access_log_file` must open for appending (it is created if
//! missing, as `nginx -t` does), and `global.user` and `global.group` must
//! exist on this host. Start-up, `--check` and every reload run them after
//! the file validated, and report problems exactly as validation does:
//! `FILE: global.access_log_file: cannot open …`. It may open the access
//! log file (`logging::open_access_file`) and read the user and group databases
//! (`privileges::resolve`); nothing else.

use crate::config::{Config, ConfigError};
use crate::logging;
use crate::privileges;

/// Runs every host check on `config`; each problem names its field, after
/// `origin` (the file name) when there is one.
pub fn check(config: &Config, origin: Option<&str>) -> Result<(), ConfigError> {
    let global = &config.global;
    let mut issues: Vec<(&str, String)> = Vec::new();
    // An empty path is refused by validation, with its own message.
    if let Some(path) = global
        .access_log_file
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        if let Err(e) = logging::open_access_file(path) {
            let message = format!("cannot open {} for appending: {e}", path.display());
            issues.push(("global.access_log_file", message));
        }
    }
    if let Some(user) = &global.user {
        if let Err((field, message)) = privileges::resolve(user, global.group.as_deref()) {
            issues.push((field, message));
        }
    }
    if issues.is_empty() {
        return Ok(());
    }
    let errors = issues
        .into_iter()
        .map(|(field, message)| match origin {
            Some(origin) => format!("{origin}: {field}: {message}"),
            None => format!("{field}: {message}"),
        })
        .collect();
    Err(ConfigError { errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single error `global` gets from `check`, with `test.ron` as origin.
    fn error(global: &str) -> String {
        let source = format!(
            r#"( global: {global},
                 listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
                 pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])] )"#
        );
        let config = Config::parse(&source, "test.ron").expect("valid config");
        let mut errors = check(&config, Some("test.ron"))
            .expect_err("a host problem")
            .errors;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    #[test]
    fn access_log_file_that_cannot_be_opened_is_an_error_naming_the_field() {
        assert_eq!(
            error(r#"(access_log_file: "/nonexistent/balanciaga4/access.log")"#),
            "test.ron: global.access_log_file: cannot open /nonexistent/balanciaga4/access.log for appending: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn unknown_user_or_group_is_an_error_naming_the_field() {
        assert_eq!(
            error(r#"(user: "no-such-user-b4")"#),
            "test.ron: global.user: \"no-such-user-b4\" is not a user on this host (no passwd entry)"
        );
        assert_eq!(
            error(r#"(user: "root", group: "no-such-group-b4")"#),
            "test.ron: global.group: \"no-such-group-b4\" is not a group on this host (no group entry)"
        );
        let e = error(r#"(user: "")"#);
        assert!(
            e.starts_with("test.ron: global.user: must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn known_users_numeric_ids_and_openable_files_pass() {
        let config = Config::parse(
            r#"( global: (user: "root", group: "0", access_log_file: "/dev/null"),
                 listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
                 pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])] )"#,
            "test.ron",
        )
        .expect("valid config");
        assert_eq!(check(&config, None), Ok(()));
        // A numeric id needs no passwd entry.
        let mut config = config;
        config.global.user = Some("4000000001".into());
        config.global.group = None;
        assert_eq!(check(&config, None), Ok(()));
    }

    #[test]
    fn without_an_origin_messages_start_with_the_field() {
        let mut config = Config::parse(
            r#"( listeners: [(name: "web", bind: "127.0.0.1:8080", pool: "web")],
                 pools: [(name: "web", backends: [(address: "127.0.0.1:9001")])] )"#,
            "test.ron",
        )
        .expect("valid config");
        config.global.user = Some("no-such-user-b4".into());
        let e = check(&config, None).expect_err("unknown user");
        assert!(e.errors[0].starts_with("global.user: "), "{e}");
    }
}
