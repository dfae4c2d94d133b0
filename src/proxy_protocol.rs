//! The PROXY protocol (HAProxy's specification, versions 1 and 2): the
//! header a load balancer puts in front of a connection's bytes to say who
//! the original client was.
//!
//! Owns the wire format only, sans-io: [`parse`] reads a header from the
//! bytes received so far and [`encode`] writes one into a caller's fixed
//! array. Neither allocates. Sessions use them when a listener has
//! `accept_proxy` (`Phase::ReadingProxy`, read in `session/proxy.rs`) or a pool has
//! `send_proxy`; UDP flows put a v2 header in front of each datagram.
//!
//! `parse` is strict: v1 must be exactly `PROXY TCP4|TCP6 SRC DST SPORT
//! DPORT\r\n` (single spaces, addresses of the family named, ports without
//! leading zeros) or `PROXY UNKNOWN...\r\n`, within 107 bytes; v2 must have
//! a known version, command and family, an address block of at least the
//! family's size, well-framed TLVs, and at most [`MAX_V2_LEN`] bytes after
//! its 16-byte preamble. It is incremental in the simplest way: call it
//! again with everything received so far; it says `Incomplete` only while
//! the bytes are a valid beginning of a header, and `Done` reports how many
//! bytes the header took, never more — what follows is the client's data.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, `\r\n` included (the specification's limit).
pub const MAX_V1_LEN: usize = 107;
/// Longest v2 address block and TLVs accepted (the header's length field):
/// addresses take at most 216 bytes (AF_UNIX), the rest is room for TLVs.
pub const MAX_V2_LEN: usize = 512;
/// Longest header [`parse`] accepts.
pub const MAX_HEADER_LEN: usize = 16 + MAX_V2_LEN;
/// Room [`encode`] needs: the longest v1 header (a v2 one takes at most 52).
pub const MAX_ENCODED_LEN: usize = MAX_V1_LEN;
/// The v2 TLV that carries the host name the client asked for (its TLS
/// server name), as HAProxy's `send-proxy-v2` sends it.
const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// Longest server name carried in an authority TLV.
pub const MAX_AUTHORITY_LEN: usize = 255;
/// Room [`encode_with_authority`] needs: the longest v2 header written (52
/// bytes, TCP over IPv6) and an authority TLV of the longest name, or the
/// longest v1 header, whichever is more.
pub const MAX_OUTGOING_LEN: usize = V2_PREAMBLE + 36 + 3 + MAX_AUTHORITY_LEN;

const V2_PREAMBLE: usize = 16;
const V1_PREFIX: &[u8] = b"PROXY ";

/// The protocol version, written `"v1"` or `"v2"` in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Human-readable text; TCP only.
    V1,
    /// Binary; TCP and UDP, and a LOCAL command for health checks.
    V2,
}

impl Version {
    /// Every version, in the order they are listed in messages and docs.
    pub const ALL: &'static [Version] = &[Version::V1, Version::V2];

    /// The name used in config files (`send_proxy`) and logs.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            _ => Err(format!(
                "{s:?} is not a PROXY protocol version (expected v1 or v2)"
            )),
        }
    }
}

/// The transport a header's addresses belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// v1 `TCP4`/`TCP6`, v2 `STREAM`.
    Tcp,
    /// v2 only.
    Udp,
}

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// v2 LOCAL: the sender's own connection (a health check); keep the
    /// real addresses.
    Local,
    /// v1 UNKNOWN, or v2 PROXY with an unspecified or AF_UNIX family: no
    /// usable addresses; keep the real ones.
    Unknown,
    /// The original client (`source`) and the address it connected to.
    Inet {
        /// Stream or datagram, as the header says (v1 is always TCP).
        transport: Transport,
        /// The client's address and port, as the sender saw it.
        source: SocketAddr,
        /// The address and port the client connected to, on the sender.
        destination: SocketAddr,
    },
}

/// A parsed PROXY header: what [`parse`] returns once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The version it was written in.
    pub version: Version,
    /// Who the connection is from, if the header says.
    pub addresses: Addresses,
}

impl Header {
    /// The original client and destination, if the header names them.
    pub fn endpoints(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self.addresses {
            Addresses::Inet {
                source,
                destination,
                ..
            } => Some((source, destination)),
            Addresses::Local | Addresses::Unknown => None,
        }
    }
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning of a header: read more.
    Incomplete,
    /// A header, and how many bytes it took (what follows is payload).
    Done(Header, usize),
    /// Not a header (or one this parser refuses); the reason, for logs.
    Invalid(&'static str),
}

/// Reads a header (v1 or v2, told apart by the first byte) from the start
/// of `bytes`, everything received so far.
pub fn parse(bytes: &[u8]) -> Parsed {
    match bytes.first() {
        None => Parsed::Incomplete,
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Parsed::Invalid("no PROXY protocol header"),
    }
}

fn parse_v1(bytes: &[u8]) -> Parsed {
    let seen = bytes.len().min(V1_PREFIX.len());
    if bytes[..seen] != V1_PREFIX[..seen] {
        return Parsed::Invalid("no PROXY protocol header");
    }
    let window = &bytes[..bytes.len().min(MAX_V1_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if let Some(cr) = window.iter().position(|&b| b == b'\r') {
            // Only the last byte seen may be a CR still waiting for its LF.
            if cr + 1 < window.len() {
                return Parsed::Invalid("v1 header has a CR not followed by LF");
            }
        }
        if window.iter().any(|&b| !is_v1_char(b) && b != b'\r') {
            return Parsed::Invalid("v1 header has a byte that is not printable ASCII");
        }
        return if bytes.len() >= MAX_V1_LEN {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Parsed::Invalid("v1 header has an LF not preceded by CR");
    }
    let line = &window[V1_PREFIX.len().min(lf - 1)..lf - 1];
    match v1_addresses(line) {
        Ok(addresses) => Parsed::Done(
            Header {
                version: Version::V1,
                addresses,
            },
            lf + 1,
        ),
        Err(why) => Parsed::Invalid(why),
    }
}

fn is_v1_char(b: u8) -> bool {
    b == b' ' || b.is_ascii_graphic()
}

/// `line` is what follows `PROXY ` up to the `\r\n`.
fn v1_addresses(line: &[u8]) -> Result<Addresses, &'static str> {
    if line.iter().any(|&b| !is_v1_char(b)) {
        return Err("v1 header has a byte that is not printable ASCII");
    }
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // The specification: anything up to the CRLF is to be ignored.
        return Ok(Addresses::Unknown);
    }
    let mut fields = line.split(|&b| b == b' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err("v1 header does not have exactly 5 fields after PROXY");
    };
    let (source, destination) = match proto {
        b"TCP4" => (
            IpAddr::V4(v1_ip(src).ok_or("v1 TCP4 source is not an IPv4 address")?),
            IpAddr::V4(v1_ip(dst).ok_or("v1 TCP4 destination is not an IPv4 address")?),
        ),
        b"TCP6" => (
            IpAddr::V6(v1_ip(src).ok_or("v1 TCP6 source is not an IPv6 address")?),
            IpAddr::V6(v1_ip(dst).ok_or("v1 TCP6 destination is not an IPv6 address")?),
        ),
        _ => return Err("v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let sport = v1_port(sport).ok_or("v1 source port is not a number from 0 to 65535")?;
    let dport = v1_port(dport).ok_or("v1 destination port is not a number from 0 to 65535")?;
    Ok(Addresses::Inet {
        transport: Transport::Tcp,
        source: SocketAddr::new(source, sport),
        destination: SocketAddr::new(destination, dport),
    })
}

fn v1_ip<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// 0 to 65535 in decimal, without sign or leading zeros.
fn v1_port(text: &[u8]) -> Option<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.iter().all(u8::is_ascii_digit);
    if !digits || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    v1_ip::<u16>(text)
}

fn parse_v2(bytes: &[u8]) -> Parsed {
    let seen = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..seen] != V2_SIGNATURE[..seen] {
        return Parsed::Invalid("no PROXY protocol header");
    }
    if let Some(&ver_cmd) = bytes.get(12) {
        if ver_cmd >> 4 != 2 {
            return Parsed::Invalid("v2 header has a version other than 2");
        }
        if ver_cmd & 0x0f > 1 {
            return Parsed::Invalid("v2 command is neither LOCAL nor PROXY");
        }
    }
    let local = bytes.get(12).is_some_and(|&b| b & 0x0f == 0);
    if let Some(&family) = bytes.get(13) {
        if !local && address_len(family).is_none() {
            return Parsed::Invalid("v2 address family or transport is unknown");
        }
    }
    if bytes.len() < V2_PREAMBLE {
        return Parsed::Incomplete;
    }
    let family = bytes[13];
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > MAX_V2_LEN {
        return Parsed::Invalid("v2 header longer than 528 bytes");
    }
    let total = V2_PREAMBLE + len;
    if bytes.len() < total {
        return Parsed::Incomplete;
    }
    let block = &bytes[V2_PREAMBLE..total];
    let addresses = if local {
        // The block, family included, is to be skipped unread.
        Addresses::Local
    } else {
        let needed = address_len(family).unwrap_or(0);
        if block.len() < needed {
            return Parsed::Invalid("v2 address block shorter than its family needs");
        }
        if !tlvs_framed(&block[needed..]) {
            return Parsed::Invalid("v2 TLVs overrun the header");
        }
        v2_addresses(family, block)
    };
    Parsed::Done(
        Header {
            version: Version::V2,
            addresses,
        },
        total,
    )
}

/// Bytes of addresses the family takes, `None` for an unknown one.
fn address_len(family: u8) -> Option<usize> {
    match family {
        0x00 => Some(0),          // AF_UNSPEC
        0x11 | 0x12 => Some(12),  // IPv4 TCP, UDP
        0x21 | 0x22 => Some(36),  // IPv6 TCP, UDP
        0x31 | 0x32 => Some(216), // AF_UNIX stream, datagram
        _ => None,
    }
}

/// Each TLV is a type byte, a big-endian length and that many bytes.
fn tlvs_framed(mut tlvs: &[u8]) -> bool {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        let Some(rest) = tlvs.get(3 + len..) else {
            return false;
        };
        tlvs = rest;
    }
    true
}

/// The addresses of a PROXY command's block (long enough for `family`).
fn v2_addresses(family: u8, block: &[u8]) -> Addresses {
    let transport = if family & 0x0f == 2 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let (source, destination) = match family >> 4 {
        1 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        _ => return Addresses::Unknown,
    };
    Addresses::Inet {
        transport,
        source,
        destination,
    }
}

/// Writes `header` into `out`; returns its length. v1 cannot say LOCAL
/// nor UDP: both are written `PROXY UNKNOWN`. A source and destination of
/// different families are written as IPv6 (IPv4-mapped).
pub fn encode(header: &Header, out: &mut [u8; MAX_ENCODED_LEN]) -> usize {
    match header.version {
        Version::V1 => encode_v1(header.addresses, out),
        Version::V2 => encode_v2(header.addresses, out),
    }
}

/// `encode`, plus, for a v2 header, a `PP2_TYPE_AUTHORITY` TLV naming
/// `authority` (a TLS server name), so the backend learns it without TLS.
/// v1 has no TLVs: the name is left out. A name longer than
/// `MAX_AUTHORITY_LEN` is left out too (no valid host name is).
pub fn encode_with_authority(
    header: &Header,
    authority: Option<&[u8]>,
    out: &mut [u8; MAX_OUTGOING_LEN],
) -> usize {
    let mut base = [0; MAX_ENCODED_LEN];
    let mut n = encode(header, &mut base);
    out[..n].copy_from_slice(&base[..n]);
    let name = authority.filter(|name| name.len() <= MAX_AUTHORITY_LEN);
    if let (Version::V2, Some(name)) = (header.version, name) {
        out[n] = PP2_TYPE_AUTHORITY;
        out[n + 1..n + 3].copy_from_slice(&(name.len() as u16).to_be_bytes());
        out[n + 3..n + 3 + name.len()].copy_from_slice(name);
        n += 3 + name.len();
        let len = (n - V2_PREAMBLE) as u16;
        out[14..16].copy_from_slice(&len.to_be_bytes());
    }
    n
}

fn encode_v1(addresses: Addresses, out: &mut [u8; MAX_ENCODED_LEN]) -> usize {
    let total = out.len();
    let mut cursor: &mut [u8] = out;
    // The longest line (TCP6, 104 bytes) fits, so writing cannot fail.
    let _ = match same_family(addresses) {
        Some((Transport::Tcp, source, destination)) => {
            let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            write!(
                cursor,
                "PROXY {proto} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
        }
        _ => cursor.write_all(b"PROXY UNKNOWN\r\n"),
    };
    total - cursor.len()
}

fn encode_v2(addresses: Addresses, out: &mut [u8; MAX_ENCODED_LEN]) -> usize {
    out[..12].copy_from_slice(&V2_SIGNATURE);
    let (command, family, len) = match same_family(addresses) {
        None if addresses == Addresses::Local => (0x20, 0x00, 0),
        None => (0x21, 0x00, 0),
        Some((transport, source, destination)) => {
            let udp = u8::from(transport == Transport::Udp);
            let block = &mut out[V2_PREAMBLE..];
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    block[..4].copy_from_slice(&s.octets());
                    block[4..8].copy_from_slice(&d.octets());
                    block[8..10].copy_from_slice(&source.port().to_be_bytes());
                    block[10..12].copy_from_slice(&destination.port().to_be_bytes());
                    (0x21, 0x11 + udp, 12)
                }
                (s, d) => {
                    block[..16].copy_from_slice(&v6(s).octets());
                    block[16..32].copy_from_slice(&v6(d).octets());
                    block[32..34].copy_from_slice(&source.port().to_be_bytes());
                    block[34..36].copy_from_slice(&destination.port().to_be_bytes());
                    (0x21, 0x21 + udp, 36)
                }
            }
        }
    };
    out[12] = command;
    out[13] = family;
    out[14..16].copy_from_slice(&(len as u16).to_be_bytes());
    V2_PREAMBLE + len
}

/// The transport and endpoints of an `Inet` header, with the two
/// addresses brought to one family (IPv4-mapped IPv6 if they differ).
fn same_family(addresses: Addresses) -> Option<(Transport, SocketAddr, SocketAddr)> {
    let Addresses::Inet {
        transport,
        source,
        destination,
    } = addresses
    else {
        return None;
    };
    if source.is_ipv4() == destination.is_ipv4() {
        return Some((transport, source, destination));
    }
    let mapped = |a: SocketAddr| SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port());
    Some((transport, mapped(source), mapped(destination)))
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
