//! The balancer process under test: start it, wait for its `ready` log
//! line, keep draining its stderr into a shared Vec, signal it, and parse
//! its access log.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The balancer binary under test: `BALANCIAGA4_BIN` when set (`make test`
/// builds the binary with the release profile it ships with, and the tests
/// with a faster one), else the one Cargo built beside the tests.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var("BALANCIAGA4_BIN") {
        Ok(path) if !path.is_empty() => {
            assert!(
                Path::new(&path).is_file(),
                "BALANCIAGA4_BIN={path}: no such file (build it first: cargo build --release)"
            );
            path
        }
        _ => env!("CARGO_BIN_EXE_balanciaga4").to_string(),
    })
}

/// How long the binary gets to log `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A unique, empty temporary directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "balanciaga4-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `contents` to `name` inside the dir; returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Run the binary to completion (for --check, --help, ...), with a deadline.
pub fn run_to_completion(args: &[&str], cwd: Option<&Path>, within: Duration) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("spawn balanciaga4");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("balanciaga4 {args:?} did not exit within {within:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Builder for a quick-mode balancer (`--listen` + `--backend`...).
pub struct Builder {
    listen: SocketAddr,
    args: Vec<String>,
    fd_limit: Option<u64>,
    env: Vec<(String, String)>,
}

impl Builder {
    pub fn backend(mut self, addr: SocketAddr) -> Self {
        self.args.push("--backend".into());
        self.args.push(addr.to_string());
        self
    }

    pub fn backends(mut self, addrs: &[SocketAddr]) -> Self {
        for a in addrs {
            self = self.backend(*a);
        }
        self
    }

    /// `--backend ADDR,weight=N`.
    pub fn weighted_backend(mut self, addr: SocketAddr, weight: u32) -> Self {
        self.args.push("--backend".into());
        self.args.push(format!("{addr},weight={weight}"));
        self
    }

    /// A flag with a value, e.g. `.opt("--workers", "2")`.
    pub fn opt(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    pub fn flag(mut self, flag: &str) -> Self {
        self.args.push(flag.into());
        self
    }

    /// Starts the process with `key` set to `value` in its environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the process with RLIMIT_NOFILE (soft and hard) set to `n`, so
    /// the balancer cannot raise it and runs out of descriptors early.
    pub fn fd_limit(mut self, n: u64) -> Self {
        self.fd_limit = Some(n);
        self
    }

    /// Starts the balancer. Health checks connect to every backend on their
    /// own schedule, which would add connections to the counts and turn
    /// refusing test backends down mid-test; so a test that says nothing
    /// about health gets `--no-health-check`, and one that gives any health
    /// flag gets checks as configured.
    pub fn start(self) -> Balancer {
        let mut args = vec!["--listen".to_string(), self.listen.to_string()];
        let mentions_health = self.args.iter().any(|a| {
            a.starts_with("--health")
                || matches!(
                    a.as_str(),
                    "--rise" | "--fall" | "--fail-open" | "--no-health-check"
                )
        });
        if !mentions_health {
            args.push("--no-health-check".into());
        }
        args.extend(self.args);
        let mut cmd = Command::new(bin());
        cmd.envs(self.env);
        if let Some(n) = self.fd_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `limit`,
            // which the closure owns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Balancer::start_args(cmd, args, self.listen, None)
    }
}

/// A running balancer. Killed (SIGKILL) on drop if still running.
pub struct Balancer {
    child: Child,
    /// The (first) listen address.
    pub listen: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
    _dir: Option<TempDir>,
}

impl Balancer {
    /// Quick mode on `listen`; add backends and options with the builder.
    pub fn builder(listen: SocketAddr) -> Builder {
        Builder {
            listen,
            args: Vec::new(),
            fd_limit: None,
            env: Vec::new(),
        }
    }

    /// Quick mode with default options on a free loopback port.
    pub fn quick(backends: &[SocketAddr]) -> Balancer {
        Self::builder(super::net::free_addr())
            .backends(backends)
            .start()
    }

    /// File mode: write `ron` to a temp file and start `--config FILE`.
    /// `listen` is the address tests connect to (one of the listeners).
    pub fn with_config(ron: &str, listen: SocketAddr) -> Balancer {
        Self::with_config_using(Command::new(bin()), ron, listen)
    }

    /// `with_config`, inside network namespace `netns` (`ip netns exec`
    /// execs the balancer in its own place, so `pid` is the balancer's).
    pub fn with_config_in(netns: &str, ron: &str, listen: SocketAddr) -> Balancer {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, bin()]);
        Self::with_config_using(cmd, ron, listen)
    }

    /// `with_config`, started by `cmd`: its program and first arguments,
    /// the balancer's own (`--config FILE`) appended; e.g. with variables
    /// set, or a shell that sets some and execs the balancer.
    pub fn with_config_command(cmd: Command, ron: &str, listen: SocketAddr) -> Balancer {
        Self::with_config_using(cmd, ron, listen)
    }

    fn with_config_using(cmd: Command, ron: &str, listen: SocketAddr) -> Balancer {
        let dir = TempDir::new("config");
        let path = dir.write("balanciaga4.ron", ron);
        let args = vec!["--config".to_string(), path.to_string_lossy().into_owned()];
        Self::start_args(cmd, args, listen, Some(dir))
    }

    /// The configuration file of a balancer started `with_config`, for a
    /// test to rewrite before sending SIGHUP.
    pub fn config_path(&self) -> PathBuf {
        self._dir
            .as_ref()
            .map(|d| d.path().join("balanciaga4.ron"))
            .expect("started with_config")
    }

    fn start_args(
        mut cmd: Command,
        args: Vec<String>,
        listen: SocketAddr,
        dir: Option<TempDir>,
    ) -> Balancer {
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn balanciaga4");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let stderr_thread = {
            let lines = lines.clone();
            thread::spawn(move || collect_lines(stderr, lines))
        };
        let stdout = child.stdout.take().unwrap();
        let stdout_thread = {
            let lines = lines.clone();
            thread::spawn(move || collect_lines(stdout, lines))
        };
        let mut b = Balancer {
            child,
            listen,
            lines,
            stderr_thread: Some(stderr_thread),
            stdout_thread: Some(stdout_thread),
            status: None,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if b.logs().iter().any(|l| is_ready_line(l)) {
                return b;
            }
            if let Some(st) = b.child.try_wait().unwrap() {
                b.status = Some(st);
                b.join_output(Duration::from_secs(2));
                panic!(
                    "balanciaga4 {args:?} exited with {st} before logging `ready`; it printed:\n{}",
                    b.logs().join("\n")
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "balanciaga4 {args:?} did not log `ready` within {READY_TIMEOUT:?}; it printed:\n{}",
                    b.logs().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything printed so far (stderr and stdout lines, ANSI escapes
    /// stripped).
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn logs_joined(&self) -> String {
        self.logs().join("\n")
    }

    /// Wait until a printed line satisfies `pred`; returns it, or None at
    /// the deadline.
    pub fn wait_for_line(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a printed line containing `needle` and returns it; panics
    /// with everything printed at the deadline. Wait for the very line a
    /// test asserts on: lines logged together (a reload's summary and what
    /// it changed) are not printed at the same instant.
    pub fn expect_line(&self, within: Duration, needle: &str) -> String {
        self.wait_for_line(within, |l| l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no line containing {needle:?} within {within:?}; balancer printed:\n{}",
                    self.logs_joined()
                )
            })
    }

    /// All access-log lines parsed so far.
    pub fn access_logs(&self) -> Vec<AccessLog> {
        self.logs()
            .iter()
            .filter_map(|l| AccessLog::parse(l))
            .collect()
    }

    /// Wait for an access-log entry satisfying `pred`; panics with the full
    /// log at the deadline.
    pub fn wait_access_log(
        &self,
        within: Duration,
        pred: impl Fn(&AccessLog) -> bool,
    ) -> AccessLog {
        let deadline = Instant::now() + within;
        loop {
            if let Some(a) = self.access_logs().into_iter().find(|a| pred(a)) {
                return a;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no matching access-log line within {within:?}; balancer printed:\n{}",
                    self.logs_joined()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The access-log entry for the connection from `client` (the client
    /// socket's local address). Select a session's line this way, never by
    /// listener, backend or order: other connections of the test (probes,
    /// earlier clients) have lines too, and may end first.
    pub fn access_log_for(&self, client: SocketAddr, within: Duration) -> AccessLog {
        let want = client.to_string();
        self.wait_access_log(within, |a| a.client == want)
    }

    /// Rewrites the configuration file with `contents`, sends SIGHUP and
    /// waits for the new "reloaded" line.
    pub fn reload_with(&self, contents: &str) {
        let before = self.logs().len();
        fs::write(self.config_path(), contents).unwrap();
        self.signal(libc::SIGHUP);
        let done = self.wait_for_line(Duration::from_secs(5), |l| {
            l.contains("reloaded") && !self.logs()[..before].iter().any(|old| old == l)
        });
        assert!(done.is_some(), "no reload line:\n{}", self.logs_joined());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Wait for the process to exit (and its output to be fully collected).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.status = Some(st);
                self.join_output(Duration::from_secs(2));
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().unwrap().is_none()
    }

    fn join_output(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        for t in [self.stderr_thread.take(), self.stdout_thread.take()]
            .into_iter()
            .flatten()
        {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    /// Resident set size in KiB, from /proc/PID/status (VmRSS).
    /// User + system CPU time the process has used, from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line, in clock ticks.
        let rest = stat.rsplit_once(") ").expect("stat format").1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a log line announces readiness: it contains the word `ready`
/// (not merely as part of another word such as "already").
pub fn is_ready_line(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| w == "ready")
}

fn collect_lines<R: Read>(r: R, lines: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = strip_ansi(&String::from_utf8_lossy(&buf));
                lines.lock().unwrap().push(line.trim_end().to_string());
            }
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// One access-log line (on stderr after `TIME [INFO] `, in a file after
/// `TIME `):
/// `conn client=IP:PORT listener=NAME pool=NAME backend=IP:PORT|-
/// bytes_in=N bytes_out=N connect_ms=N|- duration_ms=N attempts=N
/// end=REASON term=XX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub client: String,
    pub listener: String,
    pub pool: String,
    /// `-` when no backend was connected.
    pub backend: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `None` (`-`) when no backend connection was established.
    pub connect_ms: Option<u64>,
    pub duration_ms: u64,
    pub attempts: u64,
    pub end: String,
    /// HAProxy-style termination code, e.g. `--`, `CD`, `sC`.
    pub term: String,
    pub line: String,
}

impl AccessLog {
    pub fn parse(line: &str) -> Option<AccessLog> {
        let start = line.find("conn client=")?;
        let mut client = None;
        let mut listener = None;
        let mut pool = None;
        let mut backend = None;
        let mut bytes_in = None;
        let mut bytes_out = None;
        let mut connect_ms = None;
        let mut duration_ms = None;
        let mut attempts = None;
        let mut end = None;
        let mut term = None;
        for tok in line[start + "conn ".len()..].split_whitespace() {
            let Some((k, v)) = tok.split_once('=') else {
                continue;
            };
            match k {
                "client" => client = Some(v.to_string()),
                "listener" => listener = Some(v.to_string()),
                "pool" => pool = Some(v.to_string()),
                "backend" => backend = Some(v.to_string()),
                "bytes_in" => bytes_in = v.parse().ok(),
                "bytes_out" => bytes_out = v.parse().ok(),
                "connect_ms" => {
                    connect_ms = match v {
                        "-" => Some(None),
                        ms => ms.parse().ok().map(Some),
                    }
                }
                "duration_ms" => duration_ms = v.parse().ok(),
                "attempts" => attempts = v.parse().ok(),
                "end" => end = Some(v.to_string()),
                "term" => term = Some(v.to_string()),
                _ => {}
            }
        }
        Some(AccessLog {
            client: client?,
            listener: listener?,
            pool: pool?,
            backend: backend?,
            bytes_in: bytes_in?,
            bytes_out: bytes_out?,
            connect_ms: connect_ms?,
            duration_ms: duration_ms?,
            attempts: attempts?,
            end: end?,
            term: term?,
            line: line.to_string(),
        })
    }
}
