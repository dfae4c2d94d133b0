//! The terminal while `top` runs: raw input (no echo, no line buffering,
//! Ctrl-C as a key) through termios, the alternate screen, a hidden
//! cursor, and its size through TIOCGWINSZ.
//!
//! Owns the saved terminal settings and puts them back when [`Terminal`]
//! is closed or dropped, and from a panic hook (release builds abort on
//! panic, so no destructor would run). Touches only stdin and stdout.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;

const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Ctrl-C read as a byte, since raw mode turns off the signal it makes.
const CTRL_C: u8 = 3;

/// The settings stdin had before raw mode, for the panic hook.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Columns of the terminal on stdout, or `COLUMNS`, if any.
pub(super) fn width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a winsize into the zeroed struct we own.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_col > 0 {
        return Some(usize::from(size.ws_col));
    }
    std::env::var("COLUMNS")
        .ok()?
        .parse()
        .ok()
        .filter(|w| *w > 0)
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only reads the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

fn restore(saved: &libc::termios) {
    // SAFETY: tcsetattr reads a termios that tcgetattr filled in.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, saved) };
}

/// The terminal in `top`'s hands; restored when closed or dropped.
#[derive(Debug)]
pub(super) struct Terminal {
    /// Stdin is a terminal put in raw mode (else keys are not read).
    raw: bool,
    colour: bool,
    open: bool,
}

impl Terminal {
    pub(super) fn open() -> io::Result<Terminal> {
        let raw = is_tty(libc::STDIN_FILENO);
        if raw {
            // SAFETY: tcgetattr fills the zeroed termios we own.
            let mut saved: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let first = *SAVED.get_or_init(|| saved);
            let previous_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = io::stdout().write_all(LEAVE.as_bytes());
                let _ = io::stdout().flush();
                restore(&first);
                previous_hook(info);
            }));
            let mut raw_mode = saved;
            // Keys one by one, unechoed; Ctrl-C arrives as a byte. Output
            // processing stays on, so "\n" still starts a new line.
            raw_mode.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            raw_mode.c_iflag &= !(libc::IXON | libc::ICRNL);
            raw_mode.c_cc[libc::VMIN] = 1;
            raw_mode.c_cc[libc::VTIME] = 0;
            // SAFETY: as above, with a copy we changed.
            if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &raw_mode) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let term = Terminal {
            raw,
            colour: is_tty(libc::STDOUT_FILENO),
            open: true,
        };
        let mut out = io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(term)
    }

    pub(super) fn colour(&self) -> bool {
        self.colour
    }

    /// Waits up to `wait` for a key; true for `q`, `Q` or Ctrl-C, or when
    /// stdin is closed.
    pub(super) fn quit_key(&mut self, wait: Duration) -> io::Result<bool> {
        if !self.raw {
            std::thread::sleep(wait);
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if n == 0 {
            return Ok(false);
        }
        let mut keys = [0u8; 64];
        // SAFETY: reads into the buffer we own, at most its length.
        let got = unsafe { libc::read(libc::STDIN_FILENO, keys.as_mut_ptr().cast(), keys.len()) };
        match got {
            0 => Ok(true),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            n => Ok(keys[..n as usize]
                .iter()
                .any(|k| matches!(*k, b'q' | b'Q' | CTRL_C))),
        }
    }

    /// Replaces the screen with `text`: home, each line cleared to its end,
    /// the rest of the screen cleared, in one write.
    pub(super) fn draw(&mut self, text: &str) -> io::Result<()> {
        let mut frame = String::with_capacity(text.len() + 256);
        frame.push_str("\x1b[H");
        for line in text.lines() {
            frame.push_str(line);
            frame.push_str("\x1b[K\n");
        }
        frame.push_str("\x1b[J");
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()
    }

    /// Restores the terminal; an error here is the only one reported.
    pub(super) fn close(mut self) -> io::Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> io::Result<()> {
        if !std::mem::replace(&mut self.open, false) {
            return Ok(());
        }
        if self.raw {
            if let Some(saved) = SAVED.get() {
                restore(saved);
            }
        }
        let mut out = io::stdout().lock();
        out.write_all(LEAVE.as_bytes())?;
        out.flush()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}
