//! Headless Chromium for the status page tests: finds a browser on `PATH`
//! and runs it once per call, to print a page's DOM or to take a screenshot.
//!
//! Every run is bounded: the browser starts in a process group of its own,
//! and the whole group is killed after `RUN_TIMEOUT`, or as soon as the main
//! process exits (renderers and helpers do not outlive a run). Every run gets
//! a fresh profile, config and cache directory, removed afterwards, so runs
//! share no state and leave nothing in `$HOME`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest a single browser run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// How much virtual time a screenshot's page gets to load and poll.
pub const SCREENSHOT_BUDGET: Duration = Duration::from_millis(3000);

/// Program names tried in order; `B4_BROWSER` (a path or a name) goes first.
const CANDIDATES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// A headless-capable Chromium found on this machine.
#[derive(Debug, Clone)]
pub struct Browser {
    program: PathBuf,
    version: String,
}

/// The first browser that answers `--version`. `Err` holds the reason to
/// print when a test skips for want of one.
pub fn find() -> Result<Browser, String> {
    let from_env = std::env::var("B4_BROWSER").ok().filter(|v| !v.is_empty());
    let mut tried = Vec::new();
    for name in from_env
        .iter()
        .map(String::as_str)
        .chain(CANDIDATES.iter().copied())
    {
        let Some(program) = locate(name) else {
            tried.push(format!("{name}: not found"));
            continue;
        };
        // Ubuntu's `chromium-browser` can be a stub asking to install a snap:
        // only a program that reports a Chrome/Chromium version counts.
        match run(
            &program,
            &["--version".to_string()],
            &[],
            Duration::from_secs(20),
        ) {
            Ok(out) if out.status.success() && out.stdout.contains("Chrom") => {
                let version = out.stdout.trim().to_string();
                return Ok(Browser { program, version });
            }
            Ok(out) => tried.push(format!(
                "{}: --version said {:?} ({})",
                program.display(),
                out.stdout.trim(),
                out.status
            )),
            Err(e) => tried.push(format!("{}: {e}", program.display())),
        }
    }
    Err(format!(
        "no headless Chromium ({}); install one, e.g. `apt-get install chromium`",
        tried.join("; ")
    ))
}

impl Browser {
    /// `Chromium 131.0.6778.139 ...`, as the browser reports it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The browser's executable, for a test that drives it itself.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Loads `url`, lets the page run for `budget` of virtual time (timers
    /// fire as fast as the page allows; the clock stops while a request is
    /// in flight), then returns the serialized DOM.
    pub fn dump_dom(&self, url: &str, budget: Duration) -> Result<String, String> {
        let profile = TempDir::new("b4-browser")?;
        let mut args = self.common_args(&profile, budget);
        args.push("--dump-dom".into());
        args.push(url.into());
        let out = self.run_in(&profile, &args)?;
        if !out.status.success() || !out.stdout.contains("<html") {
            return Err(out.failure("--dump-dom"));
        }
        Ok(out.stdout)
    }

    /// Loads `url` in a `width` x `height` window, lets it run for
    /// `SCREENSHOT_BUDGET` of virtual time, and writes a PNG to `path`.
    pub fn screenshot(
        &self,
        url: &str,
        path: &Path,
        width: u32,
        height: u32,
    ) -> Result<(), String> {
        let path = std::env::current_dir()
            .map_err(|e| format!("current dir: {e}"))?
            .join(path);
        // A stale file from an earlier run must not pass for this one's.
        let _ = std::fs::remove_file(&path);
        let profile = TempDir::new("b4-browser")?;
        let mut args = self.common_args(&profile, SCREENSHOT_BUDGET);
        args.push(format!("--window-size={width},{height}"));
        args.push("--hide-scrollbars".into());
        args.push("--force-color-profile=srgb".into());
        args.push(format!("--screenshot={}", path.display()));
        args.push(url.into());
        let out = self.run_in(&profile, &args)?;
        let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if !out.status.success() || written == 0 {
            return Err(out.failure("--screenshot"));
        }
        Ok(())
    }

    fn common_args(&self, profile: &TempDir, budget: Duration) -> Vec<String> {
        vec![
            "--headless".into(),
            // Chromium refuses to run as root with its sandbox, and CI runs
            // as root. The pages loaded are the tests' own.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            // Containers often have a small /dev/shm.
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-breakpad".into(),
            "--mute-audio".into(),
            format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
            format!("--virtual-time-budget={}", budget.as_millis()),
        ]
    }

    fn run_in(&self, dir: &TempDir, args: &[String]) -> Result<Output, String> {
        // Chromium writes crash-report settings under $XDG_CONFIG_HOME even
        // with --user-data-dir: keep those in the run's directory too.
        let env = [
            ("XDG_CONFIG_HOME", dir.path().join("config")),
            ("XDG_CACHE_HOME", dir.path().join("cache")),
        ];
        run(&self.program, args, &env, RUN_TIMEOUT)
    }
}

/// What a finished run printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    /// An error message with the exit status and the end of stderr.
    fn failure(&self, what: &str) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!(
            "browser {what} failed ({}); stderr ends with:\n{tail}",
            self.status
        )
    }
}

/// `name` if it is a path to a file, else the first match on `PATH`.
fn locate(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `program` in a new process group and waits at most `timeout`. When
/// the main process ends (or the time is up), whatever is left of its group
/// is killed before the main process is reaped: until then it is a zombie,
/// so its id, which is also the group's, cannot be reused by anyone else.
fn run(
    program: &Path,
    args: &[String],
    env: &[(&str, PathBuf)],
    timeout: Duration,
) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());

    let deadline = Instant::now() + timeout;
    let exited = loop {
        if has_exited(&child) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: plain syscall; the group is the one this function created.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", program.display()))?;
    // The pipes close once the whole group is gone; a helper that left the
    // group could hold them open, so do not wait for ever.
    let stdout = stdout
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let stderr = stderr
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    if !exited {
        return Err(format!(
            "{} killed after {} s without finishing",
            program.display(),
            timeout.as_secs()
        ));
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Whether the child has exited, without reaping it (`WNOWAIT`).
fn has_exited(child: &Child) -> bool {
    // SAFETY: `info` is a plain C struct that waitid fills in; zeroed is a
    // valid value for it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        // With WNOHANG, a child still running leaves si_pid at 0. An error
        // (no such child) counts as exited, so the caller stops waiting.
        rc != 0 || info.si_pid() != 0
    }
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
fn collect<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        // A leftover from an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What `png_is_not_blank` read from a PNG's chunks (no pixels decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngInfo {
    pub width: u32,
    pub height: u32,
    /// Total size of the compressed image data (all IDAT chunks).
    pub image_data_bytes: u64,
}

/// Reads the header and sums the compressed image data of a PNG file.
pub fn png_info(path: &Path) -> Result<PngInfo, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return Err(format!("{} is not a PNG", path.display()));
    }
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = SIGNATURE.len();
    let mut size = None;
    let mut image_data_bytes = 0u64;
    while at + 8 <= bytes.len() {
        let len = be32(at).unwrap() as usize;
        let kind = &bytes[at + 4..at + 8];
        if at + 12 + len > bytes.len() {
            return Err(format!("{}: truncated {:?} chunk", path.display(), kind));
        }
        match kind {
            b"IHDR" => size = Some((be32(at + 8).unwrap(), be32(at + 12).unwrap())),
            b"IDAT" => image_data_bytes += len as u64,
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let (width, height) = size.ok_or_else(|| format!("{}: no IHDR chunk", path.display()))?;
    Ok(PngInfo {
        width,
        height,
        image_data_bytes,
    })
}

/// Compressed image bytes per 1,000 pixels above which a screenshot is taken
/// to show something. Deflate compresses at best about 1032:1, so a 1280x800
/// image of one colour still needs ~4 bytes per 1,000 pixels; Chromium 156
/// writes a blank page at that size in 4.5 (4,633 bytes), and the status
/// page with the fixture data in 114 (116,441 bytes). 20 leaves a wide margin
/// on both sides. `screenshot_of_the_page_is_not_blank_and_a_blank_page_is`
/// checks both sides with the browser at hand.
const NOT_BLANK_BYTES_PER_KILOPIXEL: u64 = 20;

/// Whether a screenshot shows more than a blank page, judged without
/// decoding pixels (that needs inflate, and this crate takes no dependency
/// for it): a page of one colour compresses to almost nothing, text and
/// tables do not. See `NOT_BLANK_BYTES_PER_KILOPIXEL`.
pub fn png_is_not_blank(path: &Path) -> Result<bool, String> {
    let info = png_info(path)?;
    let kilopixels = (u64::from(info.width) * u64::from(info.height)).div_ceil(1000);
    if kilopixels == 0 {
        return Ok(false);
    }
    Ok(info.image_data_bytes > NOT_BLANK_BYTES_PER_KILOPIXEL * kilopixels)
}
