//! A page in headless Chromium driven like a user would: type into a
//! field, press a button, read what the page shows. It speaks the Chrome
//! DevTools Protocol over `--remote-debugging-pipe` (JSON messages ended by
//! a NUL byte on descriptors 3 and 4), so it needs no WebSocket client.
//!
//! Every call is bounded (`CALL_TIMEOUT`); the browser runs in its own
//! process group with a fresh profile, killed as a whole on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::browser::TempDir;

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Page {
    child: Child,
    to_browser: File,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new and ours alone.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Page {
    /// Starts `program` headless and opens `url` in a new tab.
    pub fn open(program: &Path, url: &str) -> Result<Page, String> {
        let profile = TempDir::new("b4-cdp")?;
        let (child_reads, we_write) = pipe();
        let (we_read, child_writes) = pipe();
        let (r, w) = (child_reads.as_raw_fd(), child_writes.as_raw_fd());
        let mut command = Command::new(program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--remote-debugging-pipe",
                "--window-size=1600,900",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .arg("about:blank")
            .env("XDG_CONFIG_HOME", profile.path().join("config"))
            .env("XDG_CACHE_HOME", profile.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and
        // exec. The copies above 10 cannot be 3 or 4, so dup2 always makes a
        // new descriptor, without close-on-exec.
        unsafe {
            command.pre_exec(move || {
                let (r, w) = (
                    libc::fcntl(r, libc::F_DUPFD, 10),
                    libc::fcntl(w, libc::F_DUPFD, 10),
                );
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", program.display()))?;
        drop((child_reads, child_writes));
        let (tx, from_browser) = mpsc::channel();
        let mut reader = File::from(we_read);
        thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(m) = serde_json::from_slice::<Value>(&message[..end]) {
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut page = Page {
            child,
            to_browser: File::from(we_write),
            from_browser,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].clone();
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        page.session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_string();
        page.call("Page.navigate", json!({"url": url}))?;
        page.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(10),
        )?;
        Ok(page)
    }

    /// Sends one command (to the page once attached) and waits for its
    /// answer, passing over events.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("{method}: write to the browser: {e}"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from_browser
                .recv_timeout(left)
                .map_err(|_| format!("{method}: no answer within {CALL_TIMEOUT:?}"))?;
            if reply["id"] != id {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params)?;
        if let Some(thrown) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {thrown}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 50 ms until it is truthy; its value.
    pub fn wait_for(&mut self, expression: &str, within: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression)?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(format!("{expression} still {value} after {within:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The middle of the element `selector` matches, scrolled into view.
    fn centre(&mut self, selector: &str) -> Result<(f64, f64), String> {
        let quoted = serde_json::to_string(selector).unwrap();
        let rect = self.eval(&format!(
            "(() => {{ const e = document.querySelector({quoted}); if (!e) return null; \
             e.scrollIntoView({{block: 'center', inline: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ))?;
        match (rect[0].as_f64(), rect[1].as_f64()) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(format!("nothing matches {selector}")),
        }
    }

    /// A left click in the middle of the element, as a mouse would make it.
    pub fn click(&mut self, selector: &str) -> Result<(), String> {
        let (x, y) = self.centre(selector)?;
        for kind in ["mousePressed", "mouseReleased"] {
            let params = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
            self.call("Input.dispatchMouseEvent", params)?;
        }
        Ok(())
    }

    /// Clicks the field, types `text` into it and presses Enter.
    pub fn type_into(&mut self, selector: &str, text: &str) -> Result<(), String> {
        self.click(selector)?;
        self.call("Input.insertText", json!({"text": text}))?;
        for kind in ["keyDown", "keyUp"] {
            let params = json!({"type": kind, "key": "Enter", "code": "Enter",
                                "windowsVirtualKeyCode": 13, "text": "\r"});
            self.call("Input.dispatchKeyEvent", params)?;
        }
        Ok(())
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the group is the one this browser was started in.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
