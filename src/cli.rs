//! Command line: what to run and with which configuration.
//!
//! Owns argument parsing and quick mode, which builds a `Config` from flags
//! (one listener, one pool) so that both modes meet the same validation and
//! the same engine. It touches nothing but its arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::acl::Cidr;
use crate::config::{
    available_workers, duration::parse_duration, parse_backend_address, parse_log_level,
    parse_syslog_flag, resolve_bind, resolve_host, AdminConfig, AllDown, BackendConfig, Config,
    Global, HealthConfig, ListenerConfig, ListenerLimits, PolicyKind, PoolConfig, Protocol,
    QueueConfig, Rate, Timeouts, UdpConfig, DEFAULT_PROXY_TIMEOUT,
};

/// The `--help` text: synopsis and every quick-mode flag.
pub const USAGE: &str = "\
balanciaga4 - a small, fast layer-4 (TCP and UDP) load balancer

Usage:
  balanciaga4 --config FILE            run with a RON configuration file
  balanciaga4 --check --config FILE    validate the file and exit (0 = valid)
  balanciaga4 --dump-config --config FILE
                                       print the file with every default filled
                                       in (as GET /config shows), or its errors
  balanciaga4 --listen ADDR --backend ADDR[,weight=N][,max=M][,backup] [--backend ...] [options]
  balanciaga4 top --admin ADDR [--token T] [--once] [--interval DUR]
                                       live table of a running balancer's listeners,
                                       pools and backends from its admin /stats
                                       (q quits; --once prints one table and exits,
                                       1 if the admin listener cannot be read)

Quick-mode options:
  --listen ADDR            address to accept clients on, e.g. 0.0.0.0:80, [::]:80
  --backend ADDR[,weight=N][,max=M][,backup]
                           a backend (repeat for each; weight defaults to 1;
                           max: most sessions at once, default no limit;
                           backup: used only while no other backend is up)
  --policy NAME            balancing policy (default round-robin)
  --workers N              reactor threads (default 0 = one per core)
  --log-level LEVEL        off, error, warn, info, debug, trace (default info)
  --connect-timeout DUR    backend connect timeout (default 3s)
  --idle-timeout DUR       close sessions silent this long (default 5m)
  --drain-timeout DUR      graceful shutdown deadline (default 10s)
  --retries N              other backends tried after a failed connect (default 3)
  --buffer-size BYTES      bytes per pooled buffer (default 16384)
  --no-access-log          no log line per closed connection
  --zero-copy MODE         auto, on, off: relay bulk transfers with splice(2)
                           through kernel pipes (default auto)
  --admin ADDR             serve /metrics, /stats, a status page and runtime
                           actions on ADDR, e.g. 127.0.0.1:9090 (default off)
  --access-log-file PATH   append access lines to PATH instead of stderr
                           (SIGUSR1 reopens it, for logrotate)
  --access-log-format key-value|json
                           access lines as key=value tokens (default) or
                           one JSON object per line
  --syslog TARGET[,OPTION=VALUE...]
                           also send logs to syslog, never waiting for it:
                           TARGET is a unix socket (/dev/log) or
                           udp://HOST:PORT; options format=rfc5424|rfc3164,
                           facility=NAME (daemon), tag=NAME (balanciaga4),
                           logs=both|process|access (both)

UDP (--udp: relay datagrams instead of TCP connections):
  --udp                    the listener receives UDP datagrams
  --udp-idle-timeout DUR   a flow silent this long ends (default 30s)
  --udp-responses N        a flow ends after N replies, e.g. 1 for DNS (0 = no limit)
  --udp-requests N         a flow takes N datagrams; the next starts a new flow
                           (1 = balance every datagram; 0 = no limit)
  --udp-key ip-port|ip     what makes a flow (default ip-port)
  --udp-max-flows N        most flows at once (default from the open-file limit)

PROXY protocol (HAProxy's; tells backends who the client was):
  --send-proxy v1|v2       write a PROXY header to each backend connection
                           (v2 also in front of each UDP datagram)
  --accept-proxy           clients (an upstream balancer) must start with a
                           PROXY header; its client address is used
  --proxy-timeout DUR      time a client has to send its header (default 3s)

Access control and limits (default: none):
  --allow CIDR             admit only clients in CIDR (repeat), e.g. 10.0.0.0/8
  --deny CIDR              refuse clients in CIDR (repeat); deny wins over allow
  --max-connections N      most client connections the listener holds
  --max-per-ip N           most connections from one client address
  --rate-per-ip N[,burst=M]
                           new connections a second from one address (burst: N)
  --queue N                sessions that may wait when every backend is at its
                           max (default 0: refuse at once)
  --queue-timeout DUR      longest wait in the queue (default 5s)

Health checks (on by default: a TCP connect to every backend):
  --health-interval DUR    time between checks of a backend (default 2s)
  --health-timeout DUR     a check's deadline (default: the interval)
  --rise N / --fall N      passes to come up (default 2) / failures to go down (3)
  --health-send TEXT       bytes to send after connecting (\\r \\n \\xHH escapes)
  --health-expect TEXT     the reply must start with this
  --fail-open              all backends down: try them anyway (default: close)
  --slow-start DUR         a backend back up ramps to its full share over DUR
  --no-health-check        no active checks (and no passive marking down)

  -h, --help               show this help
  -V, --version            show the version

Durations are written like 500ms, 3s, 1m, 1h. Signals: SIGTERM/SIGINT drain
open sessions and exit; a second one exits at once. SIGHUP re-reads the
--config file and applies it to new connections (a bad file changes nothing).
SIGUSR2 starts the binary again, hands it the listening sockets and drains.
SIGUSR1 reopens the access log file (and stderr, if it is a file), for
logrotate without copytruncate.
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `-h`/`--help`: print [`USAGE`] and exit.
    Help,
    /// `-V`/`--version`: print the version and exit.
    Version,
    /// Run (or with `check`, only validate) the given configuration.
    Run {
        /// Where the configuration comes from.
        source: Source,
        /// `--check`: validate (and run the host checks) then exit,
        /// binding nothing.
        check: bool,
    },
    /// `--dump-config`: validate as `--check` does, then print the
    /// configuration with every default written out.
    DumpConfig {
        /// Where the configuration comes from.
        source: Source,
    },
    /// `top ...`: show a running balancer's `/stats` as a live table.
    Top(crate::top::Options),
}

/// Where the configuration comes from: a file or quick-mode flags, never
/// both.
#[derive(Debug)]
pub enum Source {
    /// `--config FILE`, as given (relative to the working directory); also
    /// what SIGHUP re-reads.
    File(PathBuf),
    /// Built from quick-mode flags, not yet validated; nothing to reload.
    Quick(Box<Config>),
}

/// A malformed command line; the message names the flag.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Debug, Default)]
struct Quick {
    listen: Option<String>,
    backends: Vec<String>,
    global: Global,
    timeouts: Timeouts,
    policy: Option<PolicyKind>,
    health: HealthConfig,
    /// `--health-timeout`; otherwise the timeout follows the interval.
    health_timeout: Option<std::time::Duration>,
    admin: Option<AdminConfig>,
    protocol: Protocol,
    udp: UdpConfig,
    send_proxy: Option<crate::proxy_protocol::Version>,
    accept_proxy: bool,
    proxy_timeout: Option<std::time::Duration>,
    limits: ListenerLimits,
    queue: QueueConfig,
    used: bool,
}

/// Parses the arguments, without the program name. `--flag=value` and
/// `--flag value` are both accepted; `--help` and `--version` end parsing
/// where they appear, ignoring what follows.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    let mut config: Option<PathBuf> = None;
    let mut check = false;
    let mut dump = false;
    let mut quick = Quick::default();
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "top") {
        args.next();
        return crate::top::parse(args)
            .map(Command::Top)
            .map_err(UsageError);
    }
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8")))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, UsageError> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| UsageError(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--check" => check = true,
            "--dump-config" => dump = true,
            "--config" | "-c" => config = Some(PathBuf::from(value()?)),
            "--listen" => quick.listen = Some(value()?),
            "--admin" => {
                let v = value()?;
                let bind = resolve_bind(&v).map_err(|e| UsageError(format!("--admin: {e}")))?[0];
                quick.admin = Some(AdminConfig { bind, token: None });
            }
            "--backend" => quick.backends.push(value()?),
            "--policy" => {
                let v = value()?;
                let policy = v
                    .parse()
                    .map_err(|e| UsageError(format!("--policy: {e}")))?;
                quick.policy = Some(policy);
            }
            "--workers" => quick.global.workers = number(&flag, &value()?)?,
            "--retries" => quick.global.retries = number(&flag, &value()?)?,
            "--buffer-size" => quick.global.buffer_size = number(&flag, &value()?)?,
            "--log-level" => {
                let v = value()?;
                quick.global.log_level =
                    parse_log_level(&v).map_err(|e| UsageError(format!("--log-level: {e}")))?;
            }
            "--no-access-log" => quick.global.access_log = false,
            "--zero-copy" => {
                quick.global.zero_copy = value()?
                    .parse()
                    .map_err(|e| UsageError(format!("--zero-copy: {e}")))?;
            }
            "--access-log-file" => quick.global.access_log_file = Some(PathBuf::from(value()?)),
            "--access-log-format" => {
                quick.global.access_log_format = value()?
                    .parse()
                    .map_err(|e| UsageError(format!("--access-log-format: {e}")))?;
            }
            "--syslog" => {
                let v = value()?;
                let syslog = parse_syslog_flag(&v, &resolve_host)
                    .map_err(|e| UsageError(format!("--syslog: {e}")))?;
                quick.global.syslog = Some(syslog);
            }
            "--connect-timeout" => quick.timeouts.connect = duration(&flag, &value()?)?,
            "--idle-timeout" => quick.timeouts.idle = duration(&flag, &value()?)?,
            "--drain-timeout" => quick.timeouts.drain = duration(&flag, &value()?)?,
            "--no-health-check" => quick.health.enabled = false,
            "--health-interval" => quick.health.interval = duration(&flag, &value()?)?,
            "--health-timeout" => quick.health_timeout = Some(duration(&flag, &value()?)?),
            "--rise" => quick.health.rise = number(&flag, &value()?)?,
            "--fall" => quick.health.fall = number(&flag, &value()?)?,
            "--health-send" => quick.health.send = Some(unescape(&value()?)),
            "--health-expect" => quick.health.expect = Some(unescape(&value()?)),
            "--fail-open" => quick.health.when_all_down = AllDown::FailOpen,
            "--slow-start" => quick.health.slow_start = duration(&flag, &value()?)?,
            "--udp" => quick.protocol = Protocol::Udp,
            "--udp-idle-timeout" => quick.udp.idle_timeout = duration(&flag, &value()?)?,
            "--udp-responses" => quick.udp.responses = number(&flag, &value()?)?,
            "--udp-requests" => quick.udp.requests = number(&flag, &value()?)?,
            "--udp-max-flows" => quick.udp.max_flows = Some(number(&flag, &value()?)?),
            "--send-proxy" => {
                let v = value()?;
                let version = v
                    .parse()
                    .map_err(|e| UsageError(format!("--send-proxy: {e}")))?;
                quick.send_proxy = Some(version);
            }
            "--accept-proxy" => quick.accept_proxy = true,
            "--proxy-timeout" => quick.proxy_timeout = Some(duration(&flag, &value()?)?),
            "--udp-key" => {
                let v = value()?;
                quick.udp.key = v
                    .parse()
                    .map_err(|e| UsageError(format!("--udp-key: {e}")))?;
            }
            "--allow" => quick.limits.acl.allow.push(cidr(&flag, &value()?)?),
            "--deny" => quick.limits.acl.deny.push(cidr(&flag, &value()?)?),
            "--max-connections" => quick.limits.max_connections = Some(number(&flag, &value()?)?),
            "--max-per-ip" => quick.limits.max_connections_per_ip = Some(number(&flag, &value()?)?),
            "--rate-per-ip" => quick.limits.rate_per_ip = Some(rate(&value()?)?),
            "--queue" => quick.queue.size = number(&flag, &value()?)?,
            "--queue-timeout" => quick.queue.timeout = duration(&flag, &value()?)?,
            other => {
                return Err(UsageError(format!(
                    "unknown argument {other:?} (see --help)"
                )))
            }
        }
        if !matches!(
            flag.as_str(),
            "--check" | "--dump-config" | "--config" | "-c"
        ) {
            quick.used = true;
        }
    }
    let source = match (config, quick.used) {
        (Some(_), true) => {
            return Err(UsageError(
                "--config cannot be combined with quick-mode flags".into(),
            ))
        }
        (Some(path), false) => Source::File(path),
        (None, _) => Source::Quick(Box::new(quick.into_config()?)),
    };
    match (dump, check) {
        (true, true) => Err(UsageError(
            "--dump-config already checks; give one of --check and --dump-config".into(),
        )),
        (true, false) => Ok(Command::DumpConfig { source }),
        (false, _) => Ok(Command::Run { source, check }),
    }
}

impl Quick {
    fn into_config(self) -> Result<Config, UsageError> {
        let listen = self.listen.ok_or_else(|| {
            UsageError("--listen ADDR or --config FILE is required (see --help)".into())
        })?;
        if self.backends.is_empty() {
            return Err(UsageError("at least one --backend ADDR is required".into()));
        }
        if self.protocol == Protocol::Tcp && self.udp != UdpConfig::default() {
            return Err(UsageError("--udp-* options need --udp".into()));
        }
        if self.proxy_timeout.is_some() && !self.accept_proxy {
            return Err(UsageError("--proxy-timeout needs --accept-proxy".into()));
        }
        let accept_proxy = self
            .accept_proxy
            .then(|| self.proxy_timeout.unwrap_or(DEFAULT_PROXY_TIMEOUT));
        let addresses = resolve_bind(&listen).map_err(|e| UsageError(format!("--listen: {e}")))?;
        let backends = self
            .backends
            .iter()
            .map(|b| backend(b))
            .collect::<Result<Vec<_>, _>>()?;
        if backends.iter().all(|b| b.backup) {
            return Err(UsageError(
                "every --backend has the backup option, so none is a primary; remove ,backup from at least one".into(),
            ));
        }
        let mut global = self.global;
        if global.workers == 0 {
            global.workers = available_workers();
        }
        Ok(Config {
            global,
            admin: self.admin,
            timeouts: self.timeouts,
            listeners: vec![ListenerConfig {
                protocol: self.protocol,
                udp: self.udp,
                accept_proxy,
                limits: self.limits,
                ..ListenerConfig::tcp("default", &listen, addresses, "default")
            }],
            pools: vec![PoolConfig {
                name: "default".into(),
                policy: self.policy.unwrap_or(PolicyKind::RoundRobin),
                backends,
                health: HealthConfig {
                    timeout: self.health_timeout.unwrap_or(self.health.interval),
                    ..self.health
                },
                resolve_every: None,
                send_proxy: self.send_proxy,
                queue: self.queue,
            }],
        })
    }
}

/// `ADDR`, then any of `,weight=N`, `,max=M` and `,backup`.
fn backend(spec: &str) -> Result<BackendConfig, UsageError> {
    let mut parts = spec.split(',');
    let addr = parts.next().unwrap_or_default();
    let (addresses, host) = parse_backend_address(addr, &resolve_host)
        .map_err(|e| UsageError(format!("--backend {spec:?}: {e}")))?;
    let mut weight = 1;
    let mut max_connections = None;
    let mut backup = false;
    for option in parts {
        match option.split_once('=') {
            Some(("weight", w)) => weight = number("--backend weight", w)?,
            Some(("max", m)) => max_connections = Some(number("--backend max", m)?),
            None if option == "backup" => backup = true,
            _ => {
                return Err(UsageError(format!(
                    "--backend {spec:?}: unknown option {option:?} (expected weight=N, max=M or backup)"
                )))
            }
        }
    }
    Ok(BackendConfig {
        addresses,
        host,
        weight,
        max_connections,
        backup,
    })
}

/// An address block for `--allow` or `--deny`.
fn cidr(flag: &str, value: &str) -> Result<Cidr, UsageError> {
    Cidr::parse(value).map_err(|e| UsageError(format!("{flag}: {e}")))
}

/// `N` or `N,burst=M` for `--rate-per-ip`.
fn rate(spec: &str) -> Result<Rate, UsageError> {
    let (per_second, burst) = match spec.split_once(',') {
        None => (spec, None),
        Some((n, option)) => match option.split_once('=') {
            Some(("burst", m)) => (n, Some(m)),
            _ => {
                return Err(UsageError(format!(
                    "--rate-per-ip {spec:?}: unknown option {option:?} (expected burst=M)"
                )))
            }
        },
    };
    let per_second = number("--rate-per-ip", per_second)?;
    let burst = match burst {
        Some(m) => number("--rate-per-ip burst", m)?,
        None => per_second,
    };
    Ok(Rate { per_second, burst })
}

/// `\r`, `\n`, `\t`, `\\` and `\xHH` as in RON strings, so a check can be
/// written on the command line as in a file: `--health-send 'PING\r\n'`.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let digits = hex.len() == 2 && hex.iter().all(u8::is_ascii_hexdigit);
                match std::str::from_utf8(&hex)
                    .ok()
                    .filter(|_| digits)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => out.push(v),
                    None => {
                        out.extend_from_slice(b"\\x");
                        out.extend_from_slice(&hex);
                    }
                }
            }
            Some(other) => out.extend_from_slice(&[b'\\', other]),
            None => out.push(b'\\'),
        }
    }
    out
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, UsageError> {
    value
        .parse()
        .map_err(|_| UsageError(format!("{flag}: {value:?} is not a valid number")))
}

fn duration(flag: &str, value: &str) -> Result<std::time::Duration, UsageError> {
    parse_duration(value).map_err(|e| UsageError(format!("{flag}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessLogFormat, ZeroCopy};

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn quick_config(cmd: Result<Command, UsageError>) -> Box<Config> {
        match cmd.expect("valid") {
            Command::Run {
                source: Source::Quick(config),
                ..
            } => config,
            other => panic!("expected quick run, got {other:?}"),
        }
    }

    #[test]
    fn quick_mode_builds_one_listener_and_one_pool() {
        let cmd = run(&[
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--backend=127.0.0.1:9002,weight=3",
            "--idle-timeout",
            "2s",
        ])
        .expect("valid");
        let Command::Run {
            source: Source::Quick(config),
            check: false,
        } = cmd
        else {
            panic!("expected quick run, got {cmd:?}");
        };
        assert_eq!(
            config.listeners[0].addresses,
            vec!["127.0.0.1:8080".parse().unwrap()]
        );
        assert_eq!(config.pools[0].backends[1].weight, 3);
        assert_eq!(config.timeouts.idle, std::time::Duration::from_secs(2));
        assert!(config.global.workers >= 1);
    }

    #[test]
    fn check_bytes_on_the_command_line_take_ron_style_escapes() {
        assert_eq!(unescape(r"PING\r\n"), b"PING\r\n");
        assert_eq!(unescape(r"a\\b\tc\x41"), b"a\\b\tcA");
        // Not an escape: kept as written.
        assert_eq!(unescape(r"\x4"), br"\x4");
        assert_eq!(unescape(r"\x+f"), br"\x+f");
        assert_eq!(unescape(r"\q"), br"\q");
        assert_eq!(unescape("end\\"), b"end\\");
    }

    #[test]
    fn malformed_flags_are_usage_errors_naming_the_flag() {
        let e = run(&["--listen", "127.0.0.1:1", "--backend", "nope"]).unwrap_err();
        assert!(e.0.contains("--backend \"nope\""), "{e}");
        let e = run(&["--frobnicate"]).unwrap_err();
        assert!(e.0.contains("--frobnicate"), "{e}");
        let e = run(&["--listen"]).unwrap_err();
        assert!(e.0.contains("--listen needs a value"), "{e}");
        let e = run(&["--config", "x.ron", "--listen", "127.0.0.1:1"]).unwrap_err();
        assert!(e.0.contains("cannot be combined"), "{e}");
        let udp_without_udp = ["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2"];
        let e = run(&[&udp_without_udp[..], &["--udp-responses", "1"]].concat()).unwrap_err();
        assert!(e.0.contains("--udp-* options need --udp"), "{e}");
        let e = run(&[&udp_without_udp[..], &["--udp", "--udp-key", "port"]].concat()).unwrap_err();
        assert!(e.0.contains("--udp-key: \"port\" is not a flow key"), "{e}");
    }

    #[test]
    fn quick_mode_log_flags_set_the_format_and_syslog() {
        let base = ["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2"];
        let extra = [
            "--access-log-format",
            "json",
            "--syslog",
            "udp://127.0.0.1:514,logs=access,format=rfc3164",
        ];
        let Ok(Command::Run {
            source: Source::Quick(c),
            ..
        }) = run(&[&base[..], &extra[..]].concat())
        else {
            panic!("expected a quick run");
        };
        assert_eq!(c.global.access_log_format, AccessLogFormat::Json);
        let syslog = c.global.syslog.expect("--syslog sets global.syslog");
        assert_eq!(syslog.logs, crate::config::SyslogLogs::Access);
        assert_eq!(syslog.format, crate::config::SyslogFormat::Rfc3164);
        let e = run(&[&base[..], &["--access-log-format", "xml"]].concat()).unwrap_err();
        assert!(e.0.starts_with("--access-log-format: \"xml\""), "{e}");
        let e = run(&[&base[..], &["--syslog", "/dev/log,facility=mars"]].concat()).unwrap_err();
        assert!(e.0.starts_with("--syslog: facility: \"mars\""), "{e}");
    }

    #[test]
    fn quick_mode_proxy_flags_set_the_listener_and_the_pool() {
        let base = ["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2"];
        let config = |extra: &[&str]| match run(&[&base[..], extra].concat()) {
            Ok(Command::Run {
                source: Source::Quick(config),
                ..
            }) => config,
            other => panic!("expected quick run, got {other:?}"),
        };
        let c = config(&["--send-proxy", "v2", "--accept-proxy"]);
        assert_eq!(
            c.pools[0].send_proxy,
            Some(crate::proxy_protocol::Version::V2)
        );
        assert_eq!(c.listeners[0].accept_proxy, Some(DEFAULT_PROXY_TIMEOUT));
        let c = config(&["--accept-proxy", "--proxy-timeout", "500ms"]);
        assert_eq!(c.pools[0].send_proxy, None);
        let half_second = std::time::Duration::from_millis(500);
        assert_eq!(c.listeners[0].accept_proxy, Some(half_second));
        let e = run(&[&base[..], &["--send-proxy", "v3"]].concat()).unwrap_err();
        assert!(
            e.0.contains("--send-proxy: \"v3\" is not a PROXY protocol version"),
            "{e}"
        );
        let e = run(&[&base[..], &["--proxy-timeout", "1s"]].concat()).unwrap_err();
        assert!(e.0.contains("--proxy-timeout needs --accept-proxy"), "{e}");
    }

    #[test]
    fn zero_copy_flag_sets_the_mode_and_refuses_others() {
        let base = ["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2"];
        let mode = |extra: &[&str]| match run(&[&base[..], extra].concat()) {
            Ok(Command::Run {
                source: Source::Quick(config),
                ..
            }) => config.global.zero_copy,
            other => panic!("expected quick run, got {other:?}"),
        };
        assert_eq!(mode(&[]), ZeroCopy::Auto);
        assert_eq!(mode(&["--zero-copy", "off"]), ZeroCopy::Off);
        assert_eq!(mode(&["--zero-copy", "on"]), ZeroCopy::On);
        let e = run(&[&base[..], &["--zero-copy", "yes"]].concat()).unwrap_err();
        assert!(
            e.0.contains("--zero-copy: \"yes\" is not a zero-copy mode"),
            "{e}"
        );
    }

    #[test]
    fn quick_mode_udp_flags_build_a_udp_listener() {
        let cmd = run(&[
            "--listen",
            "127.0.0.1:5353",
            "--backend",
            "127.0.0.1:53",
            "--udp",
            "--udp-responses",
            "1",
            "--udp-idle-timeout",
            "2s",
            "--udp-key",
            "ip",
            "--udp-max-flows",
            "10",
        ]);
        let config = quick_config(cmd);
        let l = &config.listeners[0];
        assert_eq!(l.protocol, Protocol::Udp);
        assert_eq!(l.udp.responses, 1);
        assert_eq!(l.udp.idle_timeout, std::time::Duration::from_secs(2));
        assert_eq!(l.udp.key, crate::config::FlowKey::Ip);
        assert_eq!(l.udp.max_flows, Some(10));
    }

    #[test]
    fn quick_mode_limit_flags_build_the_listener_and_pool_limits() {
        let cmd = run(&[
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001,weight=2,max=10",
            "--allow",
            "10.0.0.0/8",
            "--deny",
            "10.0.0.5",
            "--max-connections",
            "100",
            "--max-per-ip",
            "4",
            "--rate-per-ip",
            "20,burst=40",
            "--queue",
            "50",
            "--queue-timeout",
            "2s",
        ]);
        let config = quick_config(cmd);
        let l = &config.listeners[0].limits;
        assert_eq!(l.acl.allow[0].to_string(), "10.0.0.0/8");
        assert_eq!(l.acl.deny[0].to_string(), "10.0.0.5/32");
        assert_eq!(l.max_connections, Some(100));
        assert_eq!(l.max_connections_per_ip, Some(4));
        assert_eq!(
            l.rate_per_ip,
            Some(Rate {
                per_second: 20,
                burst: 40
            })
        );
        let pool = &config.pools[0];
        assert_eq!(pool.backends[0].weight, 2);
        assert_eq!(pool.backends[0].max_connections, Some(10));
        assert_eq!(pool.queue.size, 50);
        assert_eq!(pool.queue.timeout, std::time::Duration::from_secs(2));
        let e = run(&["--deny", "10.0.0.0/33"]).unwrap_err();
        assert!(
            e.0.contains("--deny: \"10.0.0.0/33\": prefix length"),
            "{e}"
        );
        let e = run(&["--rate-per-ip", "5,brust=2"]).unwrap_err();
        assert!(e.0.contains("unknown option \"brust=2\""), "{e}");
    }

    #[test]
    fn backend_backup_option_combines_with_weight_and_max() {
        let cmd = run(&[
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "127.0.0.1:9001",
            "--backend",
            "127.0.0.1:9002,backup,weight=2,max=5",
            "--backend",
            "127.0.0.1:9003,backup",
        ]);
        let pool = &quick_config(cmd).pools[0];
        let backup: Vec<bool> = pool.backends.iter().map(|b| b.backup).collect();
        assert_eq!(backup, [false, true, true]);
        assert_eq!(pool.backends[1].weight, 2);
        assert_eq!(pool.backends[1].max_connections, Some(5));
        let only_backups = ["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2,backup"];
        let e = run(&only_backups).unwrap_err();
        assert!(e.0.contains("every --backend has the backup option"), "{e}");
        let e = run(&[
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2,backup=1",
        ])
        .unwrap_err();
        assert!(e.0.contains("expected weight=N, max=M or backup"), "{e}");
    }
}
