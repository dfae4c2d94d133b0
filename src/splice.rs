//! Zero-copy relay: bytes move socket → pipe → socket with splice(2) and
//! never enter user space.
//!
//! Owns the per-reactor pool of kernel pipes (`PipePool`) and the two
//! splice calls a flow makes with one (`Pipe::fill`, `Pipe::drain`). A
//! flow holds a pipe only while bytes are in it, as it holds a buffer, so
//! an idle session holds no descriptors beyond its two sockets. The pool
//! is single-threaded (one per reactor) and touches nothing else.
//!
//! Why a pipe: splice needs one end to be a pipe. Pages the kernel
//! received for the source socket are moved into the pipe by reference
//! and from there attached to the destination socket's send queue, which
//! saves the two copies (kernel → buffer → kernel) of `read` and `write`.
//! The price is one more system call per batch (the pipe must be filled
//! and drained separately) and two descriptors per pipe, so it pays for
//! bulk transfers, not for small exchanges: see `ZeroCopy::Auto`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes each pipe is asked to hold. The pages are the kernel's and are
/// taken only while data sits in the pipe.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// A pipe's size when the kernel will not grow it.
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// Empty pipes a reactor keeps for reuse instead of closing them.
const PIPES_KEPT: usize = 64;

/// A pipe pair and how many bytes sit in it.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What the kernel granted: `PIPE_SIZE`, or the default size.
    capacity: usize,
    pending: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A pipe of 64 KiB (the default) made the relay of one bulk stream
        // about 15% slower than 256 KiB on loopback; 1 MiB was slower again.
        // Past the per-user limit (fs.pipe-user-pages-soft) the kernel
        // refuses to grow a pipe: it then keeps the default size.
        // SAFETY: plain fcntl on a descriptor we own.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let capacity = usize::try_from(size).unwrap_or(DEFAULT_PIPE_SIZE);
        Ok(Pipe {
            read,
            write,
            capacity,
            pending: 0,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Moves what `src` has received, up to the room left in the pipe,
    /// into the pipe. `Ok(0)` is the source's EOF. A short count does not
    /// mean the socket is drained: the pipe runs out of slots first when
    /// the kernel holds the data in many small pieces.
    pub(crate) fn fill(&mut self, src: &impl AsRawFd) -> io::Result<usize> {
        let room = self.capacity.saturating_sub(self.pending);
        let n = splice(src.as_raw_fd(), self.write.as_raw_fd(), room)?;
        self.pending += n;
        Ok(n)
    }

    /// Moves bytes from the pipe to `dst`, as many as it takes.
    pub(crate) fn drain(&mut self, dst: &impl AsRawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), dst.as_raw_fd(), self.pending)?;
        self.pending -= n.min(self.pending);
        Ok(n)
    }
}

/// A simulated socket's side of splice: it moves bytes into and out of a
/// real pipe with plain `write` and `read`, so that the simulation runs the
/// same pipe bookkeeping as the relay.
#[cfg(test)]
impl Pipe {
    /// Bytes moved in and not yet out.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Bytes the pipe can still take.
    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.pending)
    }

    /// Writes `bytes` into the pipe, as a splice from a socket would.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: the descriptor is open while `self` lives and the pointer
        // and length describe `bytes`.
        let n = unsafe { libc::write(self.write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        self.pending += n;
        Ok(n)
    }

    /// Reads up to `out.len()` bytes out of the pipe, as a splice to a
    /// socket would.
    pub(crate) fn pull(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the descriptor is open while `self` lives and the pointer
        // and length describe `out`.
        let n = unsafe { libc::read(self.read.as_raw_fd(), out.as_mut_ptr().cast(), out.len()) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        self.pending -= n.min(self.pending);
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both descriptors are open for the duration of the call (the
    // caller borrows their owners) and null offsets mean "current position",
    // which sockets and pipes require.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One reactor's pipes: a free list and a cap on how many are out at once.
#[derive(Debug)]
pub(crate) struct PipePool {
    free: Vec<Pipe>,
    in_use: usize,
    max: usize,
    /// Set when the kernel refused splice on a socket (EINVAL, ENOSYS):
    /// every flow then stays on buffers.
    unsupported: bool,
}

impl PipePool {
    /// A pool that lends at most `max` pipes at once (0: never).
    pub(crate) fn new(max: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            in_use: 0,
            max,
            unsupported: false,
        }
    }

    /// Whether `take` may succeed: zero-copy is possible here and the cap
    /// is not reached.
    pub(crate) fn available(&self) -> bool {
        !self.unsupported && self.in_use < self.max
    }

    /// A pipe from the free list or a new one; `None` when at the cap, when
    /// splice is unsupported, or when the process is out of descriptors
    /// (the flow then uses a buffer, which needs none).
    pub(crate) fn take(&mut self) -> Option<Pipe> {
        if !self.available() {
            return None;
        }
        let pipe = match self.free.pop() {
            Some(pipe) => pipe,
            None => Pipe::new().ok()?,
        };
        self.in_use += 1;
        Some(pipe)
    }

    /// Takes back a pipe. One that still holds bytes is closed, dropping
    /// them: they belonged to a session that has ended.
    pub(crate) fn put(&mut self, pipe: Pipe) {
        self.in_use = self.in_use.saturating_sub(1);
        if pipe.is_empty() && self.free.len() < PIPES_KEPT {
            self.free.push(pipe);
        }
    }

    /// The kernel cannot splice these sockets: stop trying.
    pub(crate) fn mark_unsupported(&mut self) {
        self.unsupported = true;
    }

    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }
}

/// Whether a splice error means splice cannot work here at all, as opposed
/// to this connection failing.
pub(crate) fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (b, _) = listener.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn bytes_spliced_from_one_socket_arrive_whole_on_another() {
        let (mut sender, source) = connected_pair();
        let (destination, mut receiver) = connected_pair();
        source.set_nonblocking(true).expect("nonblocking");
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let payload = payload.clone();
            std::thread::spawn(move || {
                sender.write_all(&payload).expect("send");
            })
        };
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut pool = PipePool::new(1);
        let mut pipe = pool.take().expect("a pipe");
        assert!(pool.take().is_none(), "the cap is one pipe");
        let mut received = Vec::with_capacity(payload.len());
        let mut chunk = vec![0; 65536];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while received.len() < payload.len() && std::time::Instant::now() < deadline {
            match pipe.fill(&source) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("fill: {e}"),
            }
            while !pipe.is_empty() {
                pipe.drain(&destination).expect("drain");
            }
            receiver
                .set_nonblocking(true)
                .expect("receiver nonblocking");
            while let Ok(n @ 1..) = receiver.read(&mut chunk) {
                received.extend_from_slice(&chunk[..n]);
            }
            receiver.set_nonblocking(false).expect("receiver blocking");
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.join().expect("writer");
        assert_eq!(received.len(), payload.len());
        assert!(received == payload, "bytes changed on the way");
        pool.put(pipe);
        assert_eq!(pool.in_use(), 0);
        assert!(pool.take().is_some(), "an empty pipe is reused");
    }

    #[test]
    fn a_pipe_returned_with_bytes_in_it_is_not_reused() {
        let (mut sender, source) = connected_pair();
        sender.write_all(b"left over").expect("send");
        source.set_nonblocking(true).expect("nonblocking");
        let mut pool = PipePool::new(2);
        let mut pipe = pool.take().expect("a pipe");
        let mut moved = 0;
        for _ in 0..100 {
            match pipe.fill(&source) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("fill: {e}"),
            }
            if moved == 9 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pipe.pending(), 9);
        pool.put(pipe);
        assert!(pool.free.is_empty(), "a dirty pipe is closed, not kept");
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_pool_marked_unsupported_lends_nothing() {
        let mut pool = PipePool::new(8);
        pool.mark_unsupported();
        assert!(!pool.available());
        assert!(pool.take().is_none());
        assert!(is_unsupported(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!is_unsupported(&io::Error::from_raw_os_error(
            libc::ECONNRESET
        )));
    }
}
