//! TLS ClientHello peeking: the server name (SNI) and ALPN protocols a
//! client asks for, read from its first bytes without terminating TLS, so a
//! listener can route on them the way HAProxy's `req.ssl_sni` or nginx's
//! `ssl_preread` do.
//!
//! Owns the wire format of the client's first TLS flight only, sans-io:
//! [`peek`] takes every byte the client has sent so far and says whether to
//! wait for more, give up on routing by name, or route on the [`Hello`] it
//! read. It touches no socket, never allocates and never consumes anything:
//! the caller forwards all the bytes it peeked at, unchanged, to the backend
//! it picks, which does the real handshake.
//!
//! The ClientHello is a handshake message (type 1, a u24 length) carried in
//! one or more handshake records (content type 22, each with a 5-byte
//! header); RFC 8446 §5.1 lets a client cut the message anywhere between
//! records. `peek` is called again after every read, so it first walks only
//! the record headers to learn whether the whole message is in (at most
//! [`MAX_RECORDS`] steps) and parses the message once, when it is complete.
//! Only the fields that frame the extensions and the two extensions used
//! for routing are read; every length is checked against its container.

use std::fmt;

/// Longest ClientHello body (the handshake message's u24 length) read.
///
/// Real hellos are far smaller: about 0.5 KiB today, near 2 KiB with a
/// post-quantum key share (X25519MLKEM768), 4 KiB with the largest padding
/// seen in the wild. A longer one is [`Peek::TooLarge`]; the bound is what
/// keeps the bytes a caller must hold before deciding small.
pub const MAX_HELLO: usize = 16 * 1024;

/// Most handshake records the ClientHello may be split over.
///
/// TLS stacks send one record, two only when a hello outgrows a record's
/// 16 KiB, which [`MAX_HELLO`] already refuses. More than 64 is no client
/// but someone hiding the name from inspection or burning CPU, so it is
/// [`Peek::NotTls`], and the cap bounds the work of each call on the record
/// headers.
pub const MAX_RECORDS: usize = 64;

/// Most bytes `peek` may need before it decides: every record header of the
/// most fragmented hello allowed, plus the longest message. `peek` never
/// answers [`Peek::Incomplete`] for this many bytes, so a caller buffering
/// the client's first bytes needs no more room than this.
pub const MAX_PEEK_LEN: usize = MAX_RECORDS * RECORD_HEADER + HANDSHAKE_HEADER + MAX_HELLO;

/// Longest server name kept: a DNS name's limit, without its trailing dot.
pub const MAX_NAME_LEN: usize = 253;

/// Most ALPN protocols kept, in the client's order of preference.
pub const MAX_ALPN_PROTOCOLS: usize = 16;

/// Room for the ALPN protocols kept, one length byte each included.
pub const MAX_ALPN_BYTES: usize = 512;

const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// A record's payload limit (RFC 8446 §5.1, 2^14).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
/// The smallest body that frames: legacy_version, random, an empty session
/// id, one cipher suite, one compression method.
const MIN_HELLO: usize = 2 + 32 + 1 + 2 + 2 + 1 + 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const NAME_TYPE_HOST: u8 = 0;

/// What the bytes received so far say.
// `Hello` keeps its data inline to stay off the heap, so it is much larger
// than the other variants; a `Peek` lives on the caller's stack for the
// time of one decision, never in a collection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A valid beginning of a ClientHello: call again with more bytes.
    Incomplete,
    /// Not a TLS ClientHello this module can read, decided at the first byte
    /// that shows it: a first byte other than a handshake record (plain
    /// text, an SSLv2-style hello with its high bit set), a record version
    /// major other than 3, a first handshake message other than a
    /// ClientHello, a length that does not fit its container, or more than
    /// [`MAX_RECORDS`] records. The reason is for logs.
    NotTls(&'static str),
    /// The handshake header announces a body over [`MAX_HELLO`]. It may be
    /// TLS, but it is not read: the caller routes the connection to the
    /// listener's default pool, without a name.
    TooLarge,
    /// The whole ClientHello arrived and frames correctly.
    Hello(Hello),
}

/// What a ClientHello asks for, owned in fixed inline storage.
///
/// The server name is the first `host_name` of the `server_name` extension,
/// lowercased and without one trailing dot, so it compares directly with a
/// configured name. A name that is not a host name once so normalised
/// (empty, longer than [`MAX_NAME_LEN`], an empty label as in `a..b` or
/// `.a`, or a byte other than an ASCII letter, digit, `-`, `_` or the dots
/// between labels) is kept as no name at all: routing then treats the
/// client like one that sent no SNI. Only the outer hello is read: with
/// Encrypted Client Hello the outer (public) name is the one routed on, as
/// the backend holding the ECH key expects.
///
/// ALPN protocols are kept in the client's order up to
/// [`MAX_ALPN_PROTOCOLS`] names or [`MAX_ALPN_BYTES`] bytes; at the first
/// that does not fit the rest are dropped, so what is kept is always the
/// start of the client's list, and [`Hello::alpn_truncated`] says so.
#[derive(Clone, Copy)]
pub struct Hello {
    name: [u8; MAX_NAME_LEN],
    name_len: u8,
    // Each protocol as its length byte followed by its bytes.
    alpn: [u8; MAX_ALPN_BYTES],
    alpn_len: u16,
    alpn_count: u8,
    alpn_truncated: bool,
}

impl Hello {
    const EMPTY: Hello = Hello {
        name: [0; MAX_NAME_LEN],
        name_len: 0,
        alpn: [0; MAX_ALPN_BYTES],
        alpn_len: 0,
        alpn_count: 0,
        alpn_truncated: false,
    };

    /// The server name, lowercase and without a trailing dot; `None` when
    /// the client sent none or one that is not a host name.
    pub fn server_name(&self) -> Option<&str> {
        let name = self.name.get(..usize::from(self.name_len))?;
        // Only ASCII is ever stored, so this always succeeds.
        std::str::from_utf8(name).ok().filter(|n| !n.is_empty())
    }

    /// The ALPN protocols kept, in the client's order of preference.
    pub fn alpn(&self) -> impl Iterator<Item = &[u8]> + Clone + '_ {
        let mut rest = self
            .alpn
            .get(..usize::from(self.alpn_len))
            .unwrap_or_default();
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (protocol, tail) = tail.split_at_checked(usize::from(len))?;
            rest = tail;
            Some(protocol)
        })
    }

    /// Whether the client offered more ALPN protocols than were kept.
    pub fn alpn_truncated(&self) -> bool {
        self.alpn_truncated
    }

    /// Keeps `raw` as the server name if it is a host name once normalised.
    fn set_name(&mut self, raw: &[u8]) {
        let raw = raw.strip_suffix(b".").unwrap_or(raw);
        let Ok(len) = u8::try_from(raw.len()) else {
            return;
        };
        if raw.len() > MAX_NAME_LEN {
            return;
        }
        // Starts as if after a dot, so a name may not begin with one.
        let mut after_dot = true;
        for (slot, &byte) in self.name.iter_mut().zip(raw) {
            let byte = byte.to_ascii_lowercase();
            let fits = match byte {
                b'.' => !after_dot,
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => true,
                _ => false,
            };
            if !fits {
                return;
            }
            after_dot = byte == b'.';
            *slot = byte;
        }
        // An empty name, or one that still ends in a dot, has an empty label.
        if !after_dot {
            self.name_len = len;
        }
    }

    /// Appends one protocol unless the storage is full; once one does not
    /// fit, none after it is kept, so the list stays a prefix of the client's.
    fn push_alpn(&mut self, protocol: &[u8]) {
        if self.alpn_truncated {
            return;
        }
        let at = usize::from(self.alpn_len);
        let end = at + 1 + protocol.len();
        let room = usize::from(self.alpn_count) < MAX_ALPN_PROTOCOLS;
        let (true, Ok(len), Ok(new_len), Some((first, rest))) = (
            room,
            u8::try_from(protocol.len()),
            u16::try_from(end),
            self.alpn
                .get_mut(at..end)
                .and_then(|slot| slot.split_first_mut()),
        ) else {
            self.alpn_truncated = true;
            return;
        };
        *first = len;
        rest.copy_from_slice(protocol);
        self.alpn_len = new_len;
        self.alpn_count += 1;
    }
}

// Compares what was read, not the unused storage.
impl PartialEq for Hello {
    fn eq(&self, other: &Hello) -> bool {
        self.server_name() == other.server_name()
            && self.alpn().eq(other.alpn())
            && self.alpn_truncated == other.alpn_truncated
    }
}

impl Eq for Hello {}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Alpn<'a>(&'a Hello);
        impl fmt::Debug for Alpn<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.alpn().map(String::from_utf8_lossy))
                    .finish()
            }
        }
        f.debug_struct("Hello")
            .field("server_name", &self.server_name())
            .field("alpn", &Alpn(self))
            .field("alpn_truncated", &self.alpn_truncated)
            .finish()
    }
}

/// Reads the ClientHello at the start of `buf`, everything the client has
/// sent so far. Call again with more bytes while it answers
/// [`Peek::Incomplete`]; bytes after the ClientHello are ignored.
pub fn peek(buf: &[u8]) -> Peek {
    match frame(buf) {
        Framing::Incomplete => Peek::Incomplete,
        Framing::NotTls(why) => Peek::NotTls(why),
        Framing::TooLarge => Peek::TooLarge,
        Framing::Complete { body_len, records } => {
            let read = if records == 1 {
                let start = RECORD_HEADER + HANDSHAKE_HEADER;
                match buf.get(start..start + body_len) {
                    Some(body) => parse_body(body),
                    None => Err("inconsistent record framing"),
                }
            } else {
                parse_fragmented(buf, body_len)
            };
            match read {
                Ok(hello) => Peek::Hello(hello),
                Err(why) => Peek::NotTls(why),
            }
        }
    }
}

/// What the record headers alone say.
enum Framing {
    Incomplete,
    NotTls(&'static str),
    TooLarge,
    /// The whole message is in; its body is `body_len` bytes long.
    Complete {
        body_len: usize,
        records: usize,
    },
}

/// Walks the record headers, and the handshake header inside the first
/// payload bytes, until they show the whole message is in or cannot be a
/// ClientHello. Looks at no byte of the body, so a slowly growing buffer
/// costs at most [`MAX_RECORDS`] steps a call.
fn frame(buf: &[u8]) -> Framing {
    let mut handshake_header = [0u8; HANDSHAKE_HEADER];
    // Message bytes, handshake header included, in the records walked.
    let mut got = 0;
    let mut records = 0;
    let mut pos = 0;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(&content_type) = rest.first() else {
            return Framing::Incomplete;
        };
        if records == MAX_RECORDS {
            return Framing::NotTls("ClientHello split over too many records");
        }
        if content_type != CONTENT_HANDSHAKE {
            return Framing::NotTls(if pos > 0 {
                "record other than handshake inside the ClientHello"
            } else if content_type & 0x80 != 0 {
                "SSLv2-style hello"
            } else {
                "not a TLS handshake record"
            });
        }
        match rest.get(1) {
            None => return Framing::Incomplete,
            Some(3) => {}
            // The minor version is not checked: clients write 1 (TLS 1.0)
            // there for compatibility, and servers ignore it.
            Some(_) => return Framing::NotTls("record version major is not 3"),
        }
        let (Some(&high), Some(&low)) = (rest.get(3), rest.get(4)) else {
            return Framing::Incomplete;
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        if len == 0 {
            return Framing::NotTls("empty handshake record");
        }
        if len > MAX_RECORD_PAYLOAD {
            return Framing::NotTls("record longer than 16 KiB");
        }
        records += 1;
        let payload = rest.get(RECORD_HEADER..).unwrap_or_default();
        let payload = payload.get(..len).unwrap_or(payload);

        for (slot, &byte) in handshake_header.iter_mut().skip(got).zip(payload) {
            *slot = byte;
        }
        got += payload.len();
        if got >= 1 && handshake_header[0] != HANDSHAKE_CLIENT_HELLO {
            return Framing::NotTls("first handshake message is not a ClientHello");
        }
        if got >= HANDSHAKE_HEADER {
            let [_, a, b, c] = handshake_header;
            let body_len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if body_len > MAX_HELLO {
                return Framing::TooLarge;
            }
            if body_len < MIN_HELLO {
                return Framing::NotTls("ClientHello too short");
            }
            if got >= HANDSHAKE_HEADER + body_len {
                return Framing::Complete { body_len, records };
            }
        }
        if payload.len() < len {
            return Framing::Incomplete;
        }
        pos += RECORD_HEADER + len;
    }
}

/// Joins the payloads of the records `frame` walked into one body on the
/// stack and parses it. A function of its own so the single-record path,
/// the usual one, does not reserve the 16 KiB.
#[inline(never)]
fn parse_fragmented(buf: &[u8], body_len: usize) -> Result<Hello, &'static str> {
    let mut message = [0u8; HANDSHAKE_HEADER + MAX_HELLO];
    let total = HANDSHAKE_HEADER + body_len;
    let mut filled = 0;
    let mut pos = 0;
    while filled < total {
        // `frame` checked these headers; a miss here would be a bug, so it
        // ends in an error rather than a panic.
        let Some(&[high, low]) = buf.get(pos + 3..pos + RECORD_HEADER) else {
            return Err("inconsistent record framing");
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        let take = len.min(total - filled);
        let start = pos + RECORD_HEADER;
        let (Some(to), Some(from)) = (
            message.get_mut(filled..filled + take),
            buf.get(start..start + take),
        ) else {
            return Err("inconsistent record framing");
        };
        to.copy_from_slice(from);
        filled += take;
        pos = start + len;
    }
    match message.get(HANDSHAKE_HEADER..total) {
        Some(body) => parse_body(body),
        None => Err("inconsistent record framing"),
    }
}

/// Parses a whole ClientHello body (after the handshake header).
fn parse_body(body: &[u8]) -> Result<Hello, &'static str> {
    let mut hello = Cursor(body);
    let [major, _] = hello.u16()?.to_be_bytes();
    if major != 3 {
        return Err("ClientHello version major is not 3");
    }
    hello.take(32)?; // random
    if hello.vec8()?.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = hello.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("malformed cipher suite list");
    }
    if hello.vec8()?.is_empty() {
        return Err("no compression method");
    }
    let mut read = Hello::EMPTY;
    // Extensions are optional before TLS 1.3: a hello may end here.
    if hello.is_empty() {
        return Ok(read);
    }
    let mut extensions = Cursor(hello.vec16()?);
    if !hello.is_empty() {
        return Err("bytes after the extensions");
    }
    let (mut seen_name, mut seen_alpn) = (false, false);
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        // A second copy could route on one name while the backend reads
        // the other; TLS stacks refuse duplicates, and so does this.
        match kind {
            EXT_SERVER_NAME if seen_name => return Err("two server_name extensions"),
            EXT_SERVER_NAME => {
                seen_name = true;
                if let Some(name) = first_host_name(data)? {
                    read.set_name(name);
                }
            }
            EXT_ALPN if seen_alpn => return Err("two ALPN extensions"),
            EXT_ALPN => {
                seen_alpn = true;
                read_alpn(data, &mut read)?;
            }
            _ => {}
        }
    }
    Ok(read)
}

/// The first `host_name` of a `server_name` extension (RFC 6066 §3); the
/// whole list is framed even past it.
fn first_host_name(data: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut data = Cursor(data);
    let mut list = Cursor(data.vec16()?);
    if !data.is_empty() {
        return Err("bytes after the server name list");
    }
    if list.is_empty() {
        return Err("empty server name list");
    }
    let mut first = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == NAME_TYPE_HOST && first.is_none() {
            first = Some(name);
        }
    }
    Ok(first)
}

/// The protocol names of an ALPN extension (RFC 7301 §3.1).
fn read_alpn(data: &[u8], hello: &mut Hello) -> Result<(), &'static str> {
    let mut data = Cursor(data);
    let mut list = Cursor(data.vec16()?);
    if !data.is_empty() {
        return Err("bytes after the ALPN list");
    }
    if list.is_empty() {
        return Err("empty ALPN list");
    }
    while !list.is_empty() {
        let protocol = list.vec8()?;
        if protocol.is_empty() {
            return Err("empty ALPN protocol name");
        }
        hello.push_alpn(protocol);
    }
    Ok(())
}

/// Reads big-endian fields off the front of a slice; a field longer than
/// what is left is an error, never a panic.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    const SHORT: &'static str = "length runs past its container";

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let (field, rest) = self.0.split_at_checked(n).ok_or(Self::SHORT)?;
        self.0 = rest;
        Ok(field)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        let (&byte, rest) = self.0.split_first().ok_or(Self::SHORT)?;
        self.0 = rest;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    /// A field behind a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A field behind a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
pub(crate) mod tests;
