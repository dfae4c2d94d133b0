//! Where the logs go besides stderr: the access line's format
//! (`global.access_log_format`) and syslog (`global.syslog`).
//!
//! Owns these settings' public types, their file schema ([`RawSyslog`]) and
//! their conversion from text, which quick mode's `--access-log-format` and
//! `--syslog` share. A `udp://HOST:PORT` target's host name is looked up
//! with the resolver the caller passes. Touches nothing else.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// How an access line is written (`global.access_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// `conn client=... end=done term=--`: one `key=value` token per field.
    #[default]
    KeyValue,
    /// One JSON object per line, numbers typed as numbers.
    Json,
}

impl AccessLogFormat {
    /// The name written in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AccessLogFormat::KeyValue => "key-value",
            AccessLogFormat::Json => "json",
        }
    }
}

impl fmt::Display for AccessLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AccessLogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "key-value" => Ok(AccessLogFormat::KeyValue),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err(format!(
                "{text:?} is not an access log format (expected key-value or json)"
            )),
        }
    }
}

/// The `global.syslog` section: a copy of the process log, the access log
/// or both sent to a syslog daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Where datagrams go.
    pub target: SyslogTarget,
    /// The message's framing.
    pub format: SyslogFormat,
    /// The facility code, 0 (kern) to 23 (local7); `daemon` (3) by default.
    pub facility: u8,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub tag: String,
    /// Which logs are copied.
    pub logs: SyslogLogs,
}

/// Where syslog datagrams go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A unix datagram socket, `/dev/log` by default.
    Unix(PathBuf),
    /// `udp://HOST:PORT`, resolved once when the configuration is loaded.
    Udp(SocketAddr),
}

impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogTarget::Unix(path) => write!(f, "{}", path.display()),
            SyslogTarget::Udp(addr) => write!(f, "udp://{addr}"),
        }
    }
}

/// The syslog message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFormat {
    /// `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`.
    #[default]
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss [HOST ]TAG[PID]: MSG`, for busybox syslogd and
    /// older daemons.
    Rfc3164,
}

impl SyslogFormat {
    /// The name written in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SyslogFormat::Rfc5424 => "rfc5424",
            SyslogFormat::Rfc3164 => "rfc3164",
        }
    }
}

/// Which logs syslog receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogLogs {
    /// Process log lines and access lines.
    #[default]
    Both,
    /// Process log lines only.
    Process,
    /// Access lines only.
    Access,
}

impl SyslogLogs {
    /// The name written in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SyslogLogs::Both => "both",
            SyslogLogs::Process => "process",
            SyslogLogs::Access => "access",
        }
    }

    /// Process log lines go to syslog.
    pub fn process(self) -> bool {
        self != SyslogLogs::Access
    }

    /// Access lines go to syslog.
    pub fn access(self) -> bool {
        self != SyslogLogs::Process
    }
}

/// Facility names in code order (RFC 5424 table 1); `local0`..`local7`
/// are codes 16 to 23.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The file schema of `global.syslog`; every field may be left out.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename = "Syslog", deny_unknown_fields, default)]
pub(super) struct RawSyslog {
    pub(super) target: String,
    pub(super) format: String,
    pub(super) facility: String,
    pub(super) tag: String,
    pub(super) logs: String,
}

impl Default for RawSyslog {
    fn default() -> Self {
        RawSyslog {
            target: "/dev/log".into(),
            format: "rfc5424".into(),
            facility: "daemon".into(),
            tag: "balanciaga4".into(),
            logs: "both".into(),
        }
    }
}

/// Reads the section written without `Some(...)`, as `udp` and `health`
/// are, so that `None` means "not written".
pub(super) fn present_section<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawSyslog>, D::Error> {
    RawSyslog::deserialize(deserializer).map(Some)
}

impl RawSyslog {
    /// The section that reads back as `config`.
    pub(super) fn from_config(config: &SyslogConfig) -> RawSyslog {
        RawSyslog {
            target: config.target.to_string(),
            format: config.format.name().into(),
            facility: FACILITIES
                .get(usize::from(config.facility))
                .map_or_else(|| config.facility.to_string(), |f| (*f).to_string()),
            tag: config.tag.clone(),
            logs: config.logs.name().into(),
        }
    }
}

/// Converts the raw section; an error names the field (`target`, `format`,
/// `facility`, `tag` or `logs`) and says what is wrong. `resolve` looks up
/// a `udp://` target's `HOST:PORT`.
pub(super) fn convert(
    raw: &RawSyslog,
    resolve: super::Resolver<'_>,
) -> Result<SyslogConfig, (&'static str, String)> {
    let target = parse_target(&raw.target, resolve).map_err(|e| ("target", e))?;
    let format = match raw.format.as_str() {
        "rfc5424" => SyslogFormat::Rfc5424,
        "rfc3164" => SyslogFormat::Rfc3164,
        other => {
            return Err((
                "format",
                format!("{other:?} is not a syslog format (expected rfc5424 or rfc3164)"),
            ))
        }
    };
    let facility = FACILITIES
        .iter()
        .position(|f| *f == raw.facility)
        .ok_or_else(|| {
            (
                "facility",
                format!(
                    "{:?} is not a syslog facility (expected one of {})",
                    raw.facility,
                    FACILITIES.join(", ")
                ),
            )
        })?;
    let tag_ok = !raw.tag.is_empty()
        && raw.tag.len() <= 32
        && raw
            .tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b':'));
    if !tag_ok {
        return Err((
            "tag",
            format!(
                "{:?} is not a syslog tag (1 to 32 printable ASCII characters, no space, `[`, `]` or `:`)",
                raw.tag
            ),
        ));
    }
    let logs = match raw.logs.as_str() {
        "both" => SyslogLogs::Both,
        "process" => SyslogLogs::Process,
        "access" => SyslogLogs::Access,
        other => {
            return Err((
                "logs",
                format!("{other:?} is not a choice of logs (expected both, process or access)"),
            ))
        }
    };
    Ok(SyslogConfig {
        target,
        format,
        facility: facility as u8,
        tag: raw.tag.clone(),
        logs,
    })
}

fn parse_target(text: &str, resolve: super::Resolver<'_>) -> Result<SyslogTarget, String> {
    if let Some(host_port) = text.strip_prefix("udp://") {
        let addrs = resolve(host_port)?;
        return addrs
            .first()
            .map(|a| SyslogTarget::Udp(*a))
            .ok_or_else(|| format!("{host_port:?} resolves to no address"));
    }
    if text.starts_with('/') {
        return Ok(SyslogTarget::Unix(PathBuf::from(text)));
    }
    Err(format!(
        "{text:?} is not a syslog target (expected the absolute path of a unix datagram socket such as /dev/log, or udp://HOST:PORT)"
    ))
}

/// Quick mode's `--syslog TARGET[,format=F][,facility=F][,tag=T][,logs=L]`
/// as the raw section; an error names the option.
pub(super) fn raw_from_flag(text: &str) -> Result<RawSyslog, String> {
    let mut parts = text.split(',');
    let mut raw = RawSyslog::default();
    if let Some(target) = parts.next().filter(|t| !t.is_empty()) {
        raw.target = target.to_string();
    }
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        let slot = match key {
            "format" => &mut raw.format,
            "facility" => &mut raw.facility,
            "tag" => &mut raw.tag,
            "logs" => &mut raw.logs,
            _ => {
                return Err(format!(
                    "unknown option {key:?} (expected format, facility, tag or logs)"
                ))
            }
        };
        *slot = value.to_string();
    }
    Ok(raw)
}

/// `--syslog`'s value, converted; an error is a full message naming the
/// option at fault.
pub fn parse_syslog_flag(text: &str, resolve: super::Resolver<'_>) -> Result<SyslogConfig, String> {
    let raw = raw_from_flag(text)?;
    convert(&raw, resolve).map_err(|(field, e)| format!("{field}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(host: &str) -> Result<Vec<SocketAddr>, String> {
        host.parse::<SocketAddr>()
            .map(|a| vec![a])
            .map_err(|_| format!("cannot resolve {host:?}"))
    }

    #[test]
    fn defaults_are_dev_log_rfc5424_daemon_both() {
        let c = convert(&RawSyslog::default(), &no_dns).unwrap();
        assert_eq!(c.target, SyslogTarget::Unix("/dev/log".into()));
        assert_eq!(
            (c.format, c.facility, c.tag.as_str(), c.logs),
            (SyslogFormat::Rfc5424, 3, "balanciaga4", SyslogLogs::Both)
        );
    }

    #[test]
    fn flag_options_override_the_defaults() {
        let c = parse_syslog_flag(
            "udp://127.0.0.1:514,format=rfc3164,facility=local7,tag=lb1,logs=access",
            &no_dns,
        )
        .unwrap();
        assert_eq!(
            c.target,
            SyslogTarget::Udp("127.0.0.1:514".parse().unwrap())
        );
        assert_eq!(
            (c.format, c.facility, c.tag.as_str(), c.logs),
            (SyslogFormat::Rfc3164, 23, "lb1", SyslogLogs::Access)
        );
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            ("dev/log", "target: "),
            ("/dev/log,format=rfc5425", "format: "),
            ("/dev/log,facility=local8", "facility: "),
            ("/dev/log,tag=two words", "tag: "),
            ("/dev/log,logs=all", "logs: "),
            ("udp://nowhere:514", "target: "),
            ("/dev/log,color=red", "unknown option \"color\""),
        ];
        for (flag, want) in cases {
            let e = parse_syslog_flag(flag, &no_dns).unwrap_err();
            assert!(e.starts_with(want), "{flag}: {e}");
        }
    }

    #[test]
    fn access_log_formats_parse_by_name() {
        assert_eq!("json".parse(), Ok(AccessLogFormat::Json));
        assert_eq!("key-value".parse(), Ok(AccessLogFormat::KeyValue));
        let e = "JSON".parse::<AccessLogFormat>().unwrap_err();
        assert!(e.contains("key-value or json"), "{e}");
    }
}
