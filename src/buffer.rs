//! Pooled fixed-size byte buffers for the byte pump.
//!
//! Owns the per-reactor free list of buffers. A session checks a buffer out
//! only while bytes are in flight in one direction and gives it back as soon
//! as that direction is drained, so an idle connection holds no buffer at
//! all. The pool is single-threaded (one per reactor): no locks, no atomics.

/// A byte queue over one pooled allocation: bytes are appended at `end` by
/// reads and consumed from `start` by writes.
#[derive(Debug)]
pub(crate) struct Buffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// Bytes read but not yet written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free space at the tail; compacts first when the head has been
    /// consumed so that a partially written buffer can still be refilled.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Records `n` bytes written into `space()`.
    pub(crate) fn filled(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len(), "buffer overfilled");
        self.end += n;
    }

    /// Puts `bytes` in front of the pending ones (a PROXY header before
    /// client bytes read with the incoming one), moving those when the
    /// head has no room. False, changing nothing, if both do not fit.
    pub(crate) fn prepend(&mut self, bytes: &[u8]) -> bool {
        let n = bytes.len();
        let pending = self.end - self.start;
        if pending + n > self.data.len() {
            return false;
        }
        if self.start < n {
            self.data.copy_within(self.start..self.end, n);
            self.start = n;
            self.end = n + pending;
        }
        self.start -= n;
        self.data[self.start..self.start + n].copy_from_slice(bytes);
        true
    }

    /// Records `n` bytes of `pending()` as delivered.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end, "consumed more than pending");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

/// Free list of equally sized buffers, owned by one reactor thread.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<Box<[u8]>>,
    size: usize,
    keep: usize,
    in_use: usize,
}

impl BufferPool {
    /// `keep` bounds how many idle buffers the pool retains after a burst, so
    /// memory returns to the allocator once traffic calms down.
    pub(crate) fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool {
            free: Vec::with_capacity(keep),
            size,
            keep,
            in_use: 0,
        }
    }

    pub(crate) fn take(&mut self) -> Buffer {
        self.in_use += 1;
        let data = self
            .free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice());
        Buffer {
            data,
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn put(&mut self, buffer: Buffer) {
        self.in_use -= 1;
        if self.free.len() < self.keep && buffer.data.len() == self.size {
            self.free.push(buffer.data);
        }
    }

    /// Buffers currently checked out by sessions.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_refills_after_partial_consume_without_losing_bytes() {
        let mut pool = BufferPool::new(8, 4);
        let mut b = pool.take();
        b.space()[..8].copy_from_slice(b"abcdefgh");
        b.filled(8);
        b.consume(5);
        assert_eq!(b.pending(), b"fgh");
        let space = b.space();
        assert_eq!(space.len(), 5);
        space[..2].copy_from_slice(b"ij");
        b.filled(2);
        assert_eq!(b.pending(), b"fghij");
        pool.put(b);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn prepend_puts_bytes_before_pending_ones_and_refuses_what_cannot_fit() {
        let mut pool = BufferPool::new(8, 4);
        let mut b = pool.take();
        b.space()[..4].copy_from_slice(b"abcd");
        b.filled(4);
        b.consume(2);
        assert!(b.prepend(b"X"), "room at the head");
        assert_eq!(b.pending(), b"Xcd");
        assert!(b.prepend(b"0123"), "pending bytes move right");
        assert_eq!(b.pending(), b"0123Xcd");
        assert!(!b.prepend(b"yz"));
        assert_eq!(b.pending(), b"0123Xcd");
        assert!(b.prepend(b"y"));
        assert_eq!(b.pending(), b"y0123Xcd");
        pool.put(b);
    }

    #[test]
    fn pool_reuses_returned_buffers_up_to_its_keep_limit() {
        let mut pool = BufferPool::new(16, 1);
        let a = pool.take();
        let b = pool.take();
        assert_eq!(pool.in_use(), 2);
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.free.len(), 1);
        let c = pool.take();
        assert!(c.is_empty());
        assert_eq!(pool.free.len(), 0);
    }
}
