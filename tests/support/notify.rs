//! A stand-in for systemd's notify socket: a datagram socket the balancer
//! is pointed at with `NOTIFY_SOCKET`, which reads each sender's PID from
//! the kernel's credentials (`SO_PASSCRED`), as systemd does to tell the
//! main process from others.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::balancer::TempDir;

/// One datagram: who sent it, when it arrived, and its `KEY=value` lines.
#[derive(Debug, Clone)]
pub struct Notification {
    pub pid: i32,
    pub at: Instant,
    pub text: String,
}

impl Notification {
    /// The value of `key`, if the datagram has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    /// Whether the datagram says `key=1`.
    pub fn says(&self, key: &str) -> bool {
        self.get(key) == Some("1")
    }
}

pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from `on`.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn env_value(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The next datagram, waiting at most `within`.
    pub fn recv(&self, within: Duration) -> Option<Notification> {
        let timeout = within.max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut data = [0u8; 4096];
        let mut control = [0u64; 16]; // aligned room for one ucred message
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below
        // outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes into the buffers `msg` points at.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "recvmsg: {e}"
            );
            return None;
        }
        let at = Instant::now();
        let mut pid = 0;
        // SAFETY: walks the control messages recvmsg wrote into `control`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    pid = cred.pid;
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Some(Notification {
            pid,
            at,
            text: String::from_utf8_lossy(&data[..n as usize]).into_owned(),
        })
    }

    /// Every datagram until the first that `pred` accepts (included), or
    /// `None` if none does within `within`.
    pub fn until(
        &self,
        within: Duration,
        pred: impl Fn(&Notification) -> bool,
    ) -> Option<Vec<Notification>> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let n = self.recv(left)?;
            let done = pred(&n);
            seen.push(n);
            if done {
                return Some(seen);
            }
        }
    }

    /// Every datagram that arrives within `span`.
    pub fn collect(&self, span: Duration) -> Vec<Notification> {
        let deadline = Instant::now() + span;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(n) => seen.push(n),
                None => break,
            }
        }
        seen
    }
}
