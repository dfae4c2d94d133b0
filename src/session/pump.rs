//! The byte pump: one direction of a session, moving bytes from a source
//! socket to a destination socket until the source ends.
//!
//! Owns a direction's carrier (a pooled buffer, or a kernel pipe once
//! zero-copy applies), its byte counts and its `Open → Eof → Closed`
//! state. It is sans-io: it sees its two sockets only through `Stream`,
//! so the same code runs on mio sockets in the reactor and on simulated
//! sockets in the property tests (`pump_props`). It touches nothing but
//! the two streams and the reactor's buffer and pipe pools it is lent.
//!
//! The rules it keeps: read only into an empty buffer (a session never
//! holds more than one buffer per direction, and a full destination stops
//! reads from its source); stop at `WouldBlock`, at a short read or write,
//! or after `READ_BUDGET` reads; hand a buffer or pipe back as soon as it
//! is empty; pass the source's FIN on exactly once, after its last byte.

use std::io;

use crate::buffer::{Buffer, BufferPool};
use crate::config::ZeroCopy;
use crate::splice::{self, Pipe, PipePool};

/// Reads per direction per event before yielding to other sessions
/// (16 × 16 KiB buffers = 256 KiB), so one fast sender cannot starve the
/// reactor.
pub(crate) const READ_BUDGET: usize = 16;

/// What the pump needs of a socket. `Ok(0)` from `read` is the peer's FIN.
pub(crate) trait Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Sends a FIN: nothing more will be written.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Moves received bytes into `pipe` without copying them (splice).
    fn splice_into(&mut self, pipe: &mut Pipe) -> io::Result<usize>;
    /// Moves bytes out of `pipe` into this socket's send queue.
    fn splice_from(&mut self, pipe: &mut Pipe) -> io::Result<usize>;
}

impl Stream for mio::net::TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(self, buf)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn splice_into(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        pipe.fill(self)
    }

    fn splice_from(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        pipe.drain(self)
    }
}

/// What a direction moves bytes with: buffers, or pipes when zero-copy
/// applies. Lent by the reactor for one event.
#[derive(Debug)]
pub(crate) struct Carriers<'a> {
    pub buffers: &'a mut BufferPool,
    pub pipes: &'a mut PipePool,
    pub zero_copy: ZeroCopy,
}

/// Where a direction stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectionState {
    #[default]
    Open,
    /// The source sent FIN; flush what is buffered, then shut down writing.
    Eof,
    /// The destination's write side is shut down (or the session closes
    /// next and does it): nothing more to do.
    Closed,
}

/// What one call of `Direction::pump` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// Moved what it could; now waits for the source to become readable or
    /// the destination writable.
    Moved,
    /// Budget used up with the source possibly still readable.
    Yield,
    /// This direction has ended with a FIN passed on.
    Finished,
    ReadFailed,
    WriteFailed,
}

/// One direction of a session: client → backend or backend → client.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    /// Held only while bytes are in flight.
    buf: Option<Buffer>,
    /// Held instead of `buf` while spliced bytes are in flight.
    pipe: Option<Pipe>,
    /// A read once filled the whole buffer: a bulk transfer, which
    /// `ZeroCopy::Auto` moves to a pipe.
    bulk: bool,
    state: DirectionState,
    /// The source signalled FIN (an error ends the session before any
    /// read): a short read reaches its end.
    pub src_closing: bool,
    /// Bytes moved since the session last looked (activity for the idle
    /// timer).
    pub moved: bool,
    pub read: u64,
    pub written: u64,
}

impl Direction {
    pub(crate) fn state(&self) -> DirectionState {
        self.state
    }

    /// Moves bytes from `src` to `dst` until the source has nothing more,
    /// the destination cannot take more, or the budget is spent. Bytes go
    /// through a pipe instead (`pump_spliced`) once zero-copy applies and
    /// the buffer is empty, so that they stay in order. `last` says the
    /// other direction has ended already: the session closes next and its
    /// close sends this direction's FIN.
    pub(crate) fn pump(
        &mut self,
        src: &mut impl Stream,
        dst: &mut impl Stream,
        carriers: &mut Carriers<'_>,
        last: bool,
    ) -> Pumped {
        let mut budget = READ_BUDGET;
        if self.pipe.is_some() {
            if let Some(pumped) = self.pump_spliced(src, dst, carriers.pipes, last, budget) {
                return pumped;
            }
        }
        let mut src_drained = false;
        loop {
            if let Some(buf) = self.buf.as_mut() {
                while !buf.is_empty() {
                    let pending = buf.pending();
                    match dst.write(pending) {
                        Ok(0) => return Pumped::WriteFailed,
                        Ok(n) => {
                            let partial = n < pending.len();
                            buf.consume(n);
                            self.written += n as u64;
                            self.moved = true;
                            // A short write means the socket buffer is full;
                            // the kernel signals writable again when it drains.
                            if partial {
                                return Pumped::Moved;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pumped::Moved,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Pumped::WriteFailed,
                    }
                }
            }
            match self.state {
                DirectionState::Open => {}
                DirectionState::Eof => {
                    self.release(carriers.buffers);
                    return self.finish(dst, last);
                }
                DirectionState::Closed => return Pumped::Finished,
            }
            if src_drained {
                self.release(carriers.buffers);
                return Pumped::Moved;
            }
            if budget == 0 {
                self.release(carriers.buffers);
                return Pumped::Yield;
            }
            if self.wants_pipe(carriers) {
                self.pipe = carriers.pipes.take();
                if self.pipe.is_some() {
                    self.release(carriers.buffers);
                    let spliced = self.pump_spliced(src, dst, carriers.pipes, last, budget);
                    if let Some(pumped) = spliced {
                        return pumped;
                    }
                }
            }
            budget -= 1;
            let buf = self.buf.get_or_insert_with(|| carriers.buffers.take());
            let space = buf.space();
            let wanted = space.len();
            match src.read(space) {
                Ok(0) => self.state = DirectionState::Eof,
                Ok(n) => {
                    buf.filled(n);
                    self.read += n as u64;
                    self.moved = true;
                    self.bulk |= n == wanted;
                    // A short read emptied the socket: new data raises a new
                    // edge, so another read would only return WouldBlock.
                    // After a signalled FIN nothing more can arrive, so the
                    // short read has reached the end: the read that would
                    // return 0 is saved (one per connection that closes).
                    if n < wanted {
                        match self.src_closing {
                            true => self.state = DirectionState::Eof,
                            false => src_drained = true,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => src_drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pumped::ReadFailed,
            }
        }
    }

    /// The pump through `self.pipe`, which must be held: drains the pipe
    /// into `dst`, refills it from `src`, until one of them would block.
    /// Unlike a buffer read, a short splice does not mean the source is
    /// drained (the pipe may have run out of slots), so it reads on until
    /// WouldBlock. `None` when the kernel cannot splice these sockets (the
    /// pipe was empty: the caller goes on with a buffer, losing nothing).
    fn pump_spliced(
        &mut self,
        src: &mut impl Stream,
        dst: &mut impl Stream,
        pipes: &mut PipePool,
        last: bool,
        mut budget: usize,
    ) -> Option<Pumped> {
        let pumped = loop {
            let pipe = self.pipe.as_mut()?;
            while !pipe.is_empty() {
                match dst.splice_from(pipe) {
                    Ok(0) => return Some(Pumped::WriteFailed),
                    Ok(n) => {
                        self.written += n as u64;
                        self.moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Some(Pumped::Moved);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Some(Pumped::WriteFailed),
                }
            }
            match self.state {
                DirectionState::Open => {}
                DirectionState::Eof => break self.finish(dst, last),
                DirectionState::Closed => break Pumped::Finished,
            }
            if budget == 0 {
                break Pumped::Yield;
            }
            budget -= 1;
            match src.splice_into(pipe) {
                Ok(0) => self.state = DirectionState::Eof,
                Ok(n) => {
                    self.read += n as u64;
                    self.moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Pumped::Moved,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if splice::is_unsupported(&e) => {
                    pipes.mark_unsupported();
                    self.release_pipe(pipes);
                    return None;
                }
                Err(_) => return Some(Pumped::ReadFailed),
            }
        };
        // The pipe is empty here: back to the pool until the next bytes.
        self.release_pipe(pipes);
        Some(pumped)
    }

    /// The source has ended and everything it sent is out: pass the FIN on.
    fn finish(&mut self, dst: &mut impl Stream, last: bool) -> Pumped {
        // When the other direction has ended too, the session closes next
        // and its close sends this FIN itself. ENOTCONN means the peer is
        // gone; the other direction finds out.
        if !last {
            let _ = dst.shutdown_write();
        }
        self.state = DirectionState::Closed;
        Pumped::Finished
    }

    /// Whether the next bytes should go through a pipe: zero-copy applies
    /// to this direction and a pipe could be had.
    fn wants_pipe(&self, carriers: &Carriers<'_>) -> bool {
        let wanted = match carriers.zero_copy {
            ZeroCopy::On => true,
            ZeroCopy::Auto => self.bulk,
            ZeroCopy::Off => false,
        };
        wanted && carriers.pipes.available()
    }

    /// Holding bytes the destination has not taken yet: the direction
    /// waits for the destination to become writable, not for the source.
    pub(crate) fn is_blocked(&self) -> bool {
        self.buf.as_ref().is_some_and(|b| !b.is_empty())
            || self.pipe.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// The buffer to put bytes in before the pump sends them (a PROXY
    /// header, or payload read along with an incoming one).
    pub(crate) fn buffer(&mut self, buffers: &mut BufferPool) -> &mut Buffer {
        self.buf.get_or_insert_with(|| buffers.take())
    }

    /// Bytes waiting in the buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.pending().len())
    }

    /// Returns the buffer and the pipe, dropping any bytes still in them.
    pub(crate) fn discard(&mut self, carriers: &mut Carriers<'_>) {
        if let Some(b) = self.buf.take() {
            carriers.buffers.put(b);
        }
        if let Some(p) = self.pipe.take() {
            carriers.pipes.put(p);
        }
    }

    /// Returns the buffer to the pool if it holds nothing.
    pub(crate) fn release(&mut self, buffers: &mut BufferPool) {
        if self.buf.as_ref().is_some_and(Buffer::is_empty) {
            if let Some(b) = self.buf.take() {
                buffers.put(b);
            }
        }
    }

    /// Returns the pipe to the pool if it holds nothing.
    fn release_pipe(&mut self, pipes: &mut PipePool) {
        if self.pipe.as_ref().is_some_and(Pipe::is_empty) {
            if let Some(p) = self.pipe.take() {
                pipes.put(p);
            }
        }
    }
}
