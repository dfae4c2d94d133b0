//! Address blocks (CIDR) and a listener's allow/deny lists.
//!
//! Owns the strict CIDR parser (`10.0.0.0/8`, `2001:db8::/32`, a bare
//! address meaning one host) and the membership test, nginx's semantics:
//! a client matching `deny` is refused whatever `allow` says; with a
//! non-empty `allow`, only clients matching it are admitted. An IPv4 client
//! reaching a dual-stack socket as `::ffff:a.b.c.d` is matched as the IPv4
//! address it is. The lists are short and read-only, so membership is a
//! linear scan with one mask-and-compare per block: no allocation, no lock.
//! Also owns [`unmapped`], the one rule for IPv4-mapped addresses. Pure:
//! imports nothing of the crate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// One address block: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    /// An IPv4 block.
    V4 {
        /// The network address as a big-endian integer, bits past `len`
        /// zero.
        net: u32,
        /// Prefix length, `0..=32`.
        len: u8,
    },
    /// An IPv6 block; never inside `::ffff:0:0/96` (IPv4-mapped blocks are
    /// refused by [`Cidr::parse`]).
    V6 {
        /// The network address as a big-endian integer, bits past `len`
        /// zero.
        net: u128,
        /// Prefix length, `0..=128`.
        len: u8,
    },
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare `ADDR` (a single host: `/32`, `/128`).
    /// Strict: no spaces, no signs, no leading zeros in the length, and no
    /// bits set past the prefix (`10.0.0.1/8` is refused with a hint
    /// rather than silently widened, since it is usually a typo for one of
    /// two different things). The error is a full message quoting `text`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let ip = IpAddr::from_str(addr).map_err(|_| {
            format!(
                "{text:?} is not an address block (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32)"
            )
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(digits) => parse_len(digits)
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        let cidr = match ip {
            IpAddr::V4(v4) => Cidr::V4 {
                net: u32::from(v4) & mask32(len),
                len,
            },
            IpAddr::V6(v6) => Cidr::V6 {
                net: u128::from(v6) & mask128(len),
                len,
            },
        };
        if cidr.network() != ip {
            return Err(format!(
                "{text:?} has bits set after the first {len}; write {cidr} for the block, or {ip} alone for one host"
            ));
        }
        if let Some(v4) = cidr.mapped_v4() {
            return Err(format!(
                "{text:?} is an IPv4-mapped block, which no client matches (IPv4 clients are compared as IPv4 addresses); write {v4}"
            ));
        }
        Ok(cidr)
    }

    /// A block inside `::ffff:0:0/96` as the IPv4 block it stands for.
    fn mapped_v4(&self) -> Option<Cidr> {
        match *self {
            Cidr::V6 { net, len } if len >= 96 && net >> 32 == 0xffff => Some(Cidr::V4 {
                net: net as u32,
                len: len - 96,
            }),
            _ => None,
        }
    }

    /// The first address of the block.
    pub fn network(&self) -> IpAddr {
        match *self {
            Cidr::V4 { net, .. } => Ipv4Addr::from(net).into(),
            Cidr::V6 { net, .. } => Ipv6Addr::from(net).into(),
        }
    }

    /// Whether `ip` (already unmapped, see [`unmapped`]) lies in the block.
    /// An IPv4 address never lies in an IPv6 block, nor the reverse.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Cidr::V4 { net, len }, IpAddr::V4(a)) => u32::from(a) & mask32(len) == net,
            (Cidr::V6 { net, len }, IpAddr::V6(a)) => u128::from(a) & mask128(len) == net,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cidr::V4 { len, .. } | Cidr::V6 { len, .. } => write!(f, "{}/{len}", self.network()),
        }
    }
}

/// `0`..`128` written plainly: ASCII digits, no sign, no leading zero.
fn parse_len(digits: &str) -> Option<u8> {
    let plain = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), alone or with a port,
/// as the IPv4 address it is: how an IPv4 client of a dual-stack socket
/// arrives. The one place this is decided, for ACLs, per-IP limits, the
/// admin permission check and the addresses sessions and flows log.
pub fn unmapped<A: MaybeMapped>(addr: A) -> A {
    addr.unmapped()
}

/// An address that may be IPv4-mapped: `IpAddr` or `SocketAddr`.
pub trait MaybeMapped: Copy {
    /// `self` with an IPv4-mapped IPv6 address replaced by its IPv4
    /// address; any other address unchanged. See [`unmapped`].
    fn unmapped(self) -> Self;
}

impl MaybeMapped for IpAddr {
    fn unmapped(self) -> IpAddr {
        match self {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(self, IpAddr::V4),
            v4 => v4,
        }
    }
}

impl MaybeMapped for SocketAddr {
    /// A real IPv6 address keeps its scope id and flow info.
    fn unmapped(self) -> SocketAddr {
        match self {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), v6.port()),
                None => self,
            },
            v4 => v4,
        }
    }
}

/// A listener's `allow` and `deny` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// If non-empty, only clients in one of these blocks are admitted.
    pub allow: Vec<Cidr>,
    /// Clients in any of these blocks are refused, even if `allow` lists
    /// them.
    pub deny: Vec<Cidr>,
}

impl Acl {
    /// No list: every client is admitted (and nothing need be checked).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Deny wins; then, if there is an allow list, the client must be in it.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, Arbitrary, Gen};

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_unmap_with_or_without_a_port() {
        assert_eq!(unmapped(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(unmapped(ip("2001:db8::1")), ip("2001:db8::1"));
        let sock = |t: &str| t.parse::<SocketAddr>().unwrap();
        assert_eq!(unmapped(sock("[::ffff:10.0.0.1]:80")), sock("10.0.0.1:80"));
        assert_eq!(unmapped(sock("[fe80::1%2]:80")), sock("[fe80::1%2]:80"));
        assert_eq!(unmapped(sock("10.0.0.1:80")), sock("10.0.0.1:80"));
    }

    #[test]
    fn blocks_and_bare_addresses_parse_and_print_back() {
        for text in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "127.0.0.5/32",
            "::1/128",
            "::/0",
            "2001:db8::/32",
            "fe80::/10",
        ] {
            assert_eq!(cidr(text).to_string(), text);
        }
        assert_eq!(cidr("127.0.0.5").to_string(), "127.0.0.5/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
    }

    #[test]
    fn malformed_blocks_are_refused_with_the_reason() {
        let cases = [
            ("10.0.0.0/33", "prefix length must be 0..=32"),
            ("::/129", "prefix length must be 0..=128"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0/08", "prefix length"),
            ("10.0.0.0/ 8", "prefix length"),
            ("10.0.0.0/8/8", "prefix length"),
            (
                "10.0.0.1/8",
                "write 10.0.0.0/8 for the block, or 10.0.0.1 alone",
            ),
            ("2001:db8::1/32", "write 2001:db8::/32"),
            ("10.0.0/8", "not an address block"),
            ("010.0.0.0/8", "not an address block"),
            ("", "not an address block"),
            (" 10.0.0.0/8", "not an address block"),
            ("localhost/8", "not an address block"),
            ("[::1]/128", "not an address block"),
        ];
        for (text, want) in cases {
            let e = Cidr::parse(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn deny_wins_over_allow_and_an_allow_list_admits_only_its_blocks() {
        let acl = Acl {
            allow: vec![cidr("10.0.0.0/8"), cidr("::1/128")],
            deny: vec![cidr("10.0.0.5/32")],
        };
        assert!(acl.admits(ip("10.1.2.3")));
        assert!(!acl.admits(ip("10.0.0.5")));
        assert!(!acl.admits(ip("192.0.2.1")));
        assert!(acl.admits(ip("::1")));
        assert!(!acl.admits(ip("::2")));
        let deny_only = Acl {
            allow: vec![],
            deny: vec![cidr("127.0.0.5/32")],
        };
        assert!(deny_only.admits(ip("127.0.0.6")));
        assert!(!deny_only.admits(ip("127.0.0.5")));
        assert!(Acl::default().admits(ip("203.0.113.9")));
    }

    #[test]
    fn mapped_ipv6_clients_match_ipv4_rules_and_only_those() {
        let acl = Acl {
            allow: vec![],
            deny: vec![cidr("127.0.0.5/32")],
        };
        assert!(!acl.admits(ip("::ffff:127.0.0.5")));
        assert!(acl.admits(ip("::ffff:127.0.0.6")));
        // An IPv6 rule does not catch an IPv4 client, nor the reverse.
        let v6 = Acl {
            allow: vec![cidr("::/0")],
            deny: vec![],
        };
        assert!(!v6.admits(ip("::ffff:10.0.0.1")));
        assert!(!v6.admits(ip("10.0.0.1")));
        assert!(v6.admits(ip("2001:db8::1")));
    }

    #[derive(Debug, Clone)]
    struct Block(IpAddr, u8);

    impl Arbitrary for Block {
        fn arbitrary(g: &mut Gen) -> Block {
            if bool::arbitrary(g) {
                Block(
                    Ipv4Addr::from(u32::arbitrary(g)).into(),
                    u8::arbitrary(g) % 33,
                )
            } else {
                Block(
                    Ipv6Addr::from(u128::arbitrary(g)).into(),
                    u8::arbitrary(g) % 129,
                )
            }
        }
    }

    /// Membership the slow way: compare the first `len` bits one by one.
    fn reference_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> Vec<bool> {
            let bytes = match a {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            bytes
                .iter()
                .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
                .collect()
        };
        net.is_ipv4() == ip.is_ipv4()
            && bits(net)[..usize::from(len)] == bits(ip)[..usize::from(len)]
    }

    quickcheck! {
        fn the_parser_never_panics(text: String) -> bool {
            let _ = Cidr::parse(&text);
            true
        }

        fn the_parser_never_panics_on_near_misses(block: Block, suffix: String) -> bool {
            let _ = Cidr::parse(&format!("{}/{}{suffix}", block.0, block.1));
            let _ = Cidr::parse(&format!("{}{suffix}", block.0));
            true
        }

        fn masked_blocks_round_trip(block: Block) -> bool {
            let Block(addr, len) = block;
            let masked: IpAddr = match addr {
                IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) & mask32(len)).into(),
                IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) & mask128(len)).into(),
            };
            let text = format!("{masked}/{len}");
            Cidr::parse(&text).is_ok_and(|c| c.to_string() == text)
                && (masked == addr || Cidr::parse(&format!("{addr}/{len}")).is_err())
        }

        fn membership_agrees_with_the_bit_by_bit_reference(block: Block, probe: Block, near: bool) -> bool {
            let Block(addr, len) = block;
            let Ok(c) = Cidr::parse(&format!("{}/{len}", match addr {
                IpAddr::V4(a) => IpAddr::from(Ipv4Addr::from(u32::from(a) & mask32(len))),
                IpAddr::V6(a) => IpAddr::from(Ipv6Addr::from(u128::from(a) & mask128(len))),
            })) else {
                return false;
            };
            // Half the probes share the block's leading bits, so that
            // members are tried as often as strangers.
            let ip = match (near, c.network(), probe.0) {
                (true, IpAddr::V4(n), IpAddr::V4(p)) => {
                    let keep = u32::from(n) & mask32(probe.1 % 33);
                    IpAddr::from(Ipv4Addr::from(keep | (u32::from(p) & !mask32(probe.1 % 33))))
                }
                (true, IpAddr::V6(n), IpAddr::V6(p)) => {
                    let keep = u128::from(n) & mask128(probe.1);
                    IpAddr::from(Ipv6Addr::from(keep | (u128::from(p) & !mask128(probe.1))))
                }
                (_, _, p) => p,
            };
            c.contains(ip) == reference_contains(c.network(), len, ip)
        }
    }

    /// The block `block` names once its host bits are cleared.
    fn masked(block: &Block) -> Cidr {
        let Block(addr, len) = *block;
        let text = match addr {
            IpAddr::V4(a) => format!("{}/{len}", Ipv4Addr::from(u32::from(a) & mask32(len))),
            IpAddr::V6(a) => format!("{}/{len}", Ipv6Addr::from(u128::from(a) & mask128(len))),
        };
        cidr(&text)
    }

    fn check<A: Arbitrary + std::fmt::Debug>(tests: u64, prop: fn(A) -> bool) {
        quickcheck::QuickCheck::new().tests(tests).quickcheck(prop);
    }

    #[test]
    fn a_block_holds_its_first_and_last_address_and_not_the_neighbours() {
        fn prop(block: Block) -> bool {
            let c = masked(&block);
            let (first, last, before, after): (IpAddr, IpAddr, Option<IpAddr>, Option<IpAddr>) =
                match c {
                    Cidr::V4 { net, len } => {
                        let last = net | !mask32(len);
                        (
                            Ipv4Addr::from(net).into(),
                            Ipv4Addr::from(last).into(),
                            net.checked_sub(1).map(|a| Ipv4Addr::from(a).into()),
                            last.checked_add(1).map(|a| Ipv4Addr::from(a).into()),
                        )
                    }
                    Cidr::V6 { net, len } => {
                        let last = net | !mask128(len);
                        (
                            Ipv6Addr::from(net).into(),
                            Ipv6Addr::from(last).into(),
                            net.checked_sub(1).map(|a| Ipv6Addr::from(a).into()),
                            last.checked_add(1).map(|a| Ipv6Addr::from(a).into()),
                        )
                    }
                };
            c.network() == first
                && c.contains(first)
                && c.contains(last)
                && before.is_none_or(|a| !c.contains(a))
                && after.is_none_or(|a| !c.contains(a))
        }
        check(5000, prop as fn(_) -> _);
    }

    #[test]
    fn a_mapped_client_is_judged_as_its_ipv4_address_by_every_rule() {
        fn prop((block, client, deny): (Block, u32, bool)) -> bool {
            let c = masked(&block);
            let rules = if deny {
                Acl {
                    allow: vec![],
                    deny: vec![c],
                }
            } else {
                Acl {
                    allow: vec![c],
                    deny: vec![],
                }
            };
            let v4 = Ipv4Addr::from(client);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            // The block itself holds the mapped form only if it is an IPv6
            // block written that way; the list unmaps first.
            rules.admits(mapped) == rules.admits(IpAddr::V4(v4))
                && !matches!(c, Cidr::V4 { .. } if c.contains(mapped))
        }
        check(5000, prop as fn(_) -> _);
    }

    /// Lists unmap clients before matching, so a rule written in the mapped
    /// form (`::ffff:10.0.0.0/104`) could match no client: it is refused,
    /// naming the IPv4 block it stands for.
    #[test]
    fn a_mapped_block_is_refused_naming_the_ipv4_block_it_means() {
        fn prop((client, len): (u32, u8)) -> bool {
            let len = 96 + len % 33;
            let v4 = Ipv4Addr::from(client);
            let net = u128::from(v4.to_ipv6_mapped()) & mask128(len);
            let text = format!("{}/{len}", Ipv6Addr::from(net));
            let meant = Cidr::V4 {
                net: u32::from(v4) & mask32(len - 96),
                len: len - 96,
            };
            Cidr::parse(&text).is_err_and(|e| e.ends_with(&format!("; write {meant}")))
        }
        check(2000, prop as fn(_) -> _);
    }
}
