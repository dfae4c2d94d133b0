//! A deterministic pseudo-random byte stream and a byte hash, both fully
//! specified so that expected values never depend on std's hasher.

/// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a {
    state: u64,
    len: u64,
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    pub const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Fnv1a {
            state: Self::OFFSET,
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.state;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.state = h;
        self.len += bytes.len() as u64;
    }

    pub fn finish(&self) -> u64 {
        self.state
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    // Clippy's len_without_is_empty wants it beside `len`; no test needs it.
    #[allow(dead_code)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn hash(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::new();
        h.update(bytes);
        h.finish()
    }
}

/// xorshift64* byte stream. The bytes produced depend only on the seed and
/// the position, never on how the caller chunks its `fill` calls.
#[derive(Clone, Debug)]
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        // Never let the xorshift state be zero.
        let state = seed ^ 0x9e37_79b9_7f4a_7c15;
        Pattern {
            state: if state == 0 { 1 } else { state },
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() && self.used < 8 {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        while buf.len() - i >= 8 {
            let w = self.next_word().to_le_bytes();
            buf[i..i + 8].copy_from_slice(&w);
            i += 8;
        }
        if i < buf.len() {
            self.word = self.next_word().to_le_bytes();
            self.used = 0;
            while i < buf.len() {
                buf[i] = self.word[self.used];
                self.used += 1;
                i += 1;
            }
        }
    }

    /// The first `len` bytes of the stream for `seed`.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        Pattern::new(seed).fill(&mut v);
        v
    }

    /// FNV-1a of the first `len` bytes of the stream for `seed`.
    pub fn hash(seed: u64, len: u64) -> u64 {
        let mut p = Pattern::new(seed);
        let mut h = Fnv1a::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            p.fill(&mut buf[..n]);
            h.update(&buf[..n]);
            left -= n as u64;
        }
        h.finish()
    }
}
