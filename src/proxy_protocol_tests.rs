//! Tests of the PROXY protocol parser and encoder: fixed vectors from the
//! specification, strictness, round trips for every address family, and
//! properties over arbitrary bytes and split reads.

use super::*;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn inet(transport: Transport, source: &str, destination: &str) -> Addresses {
    Addresses::Inet {
        transport,
        source: addr(source),
        destination: addr(destination),
    }
}

fn done(bytes: &[u8]) -> (Header, usize) {
    match parse(bytes) {
        Parsed::Done(header, used) => (header, used),
        other => panic!(
            "{:?}: expected a header, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn invalid(bytes: &[u8]) -> &'static str {
    match parse(bytes) {
        Parsed::Invalid(why) => why,
        other => panic!(
            "{:?}: expected Invalid, got {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn encoded(header: Header) -> Vec<u8> {
    let mut out = [0u8; MAX_ENCODED_LEN];
    let n = encode(&header, &mut out);
    out[..n].to_vec()
}

#[test]
fn v1_tcp4_from_the_specification_parses_and_leaves_the_payload() {
    let bytes = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    let (header, used) = done(bytes);
    assert_eq!(used, 47);
    assert_eq!(&bytes[used..], b"GET / HTTP/1.1\r\n");
    assert_eq!(
        header,
        Header {
            version: Version::V1,
            addresses: inet(Transport::Tcp, "192.168.0.1:56324", "192.168.0.11:443"),
        }
    );
}

#[test]
fn v1_tcp6_and_unknown_parse() {
    let (header, _) = done(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
    assert_eq!(
        header.endpoints(),
        Some((addr("[2001:db8::1]:65535"), addr("[::1]:0")))
    );
    let (header, used) = done(b"PROXY UNKNOWN\r\nxyz");
    assert_eq!((header.addresses, used), (Addresses::Unknown, 15));
    // Anything up to the CRLF is ignored after UNKNOWN.
    let (header, _) = done(b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n");
    assert_eq!(header.addresses, Addresses::Unknown);
}

#[test]
fn v1_longest_header_is_accepted_and_one_byte_more_is_not() {
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), MAX_V1_LEN);
    assert_eq!(done(longest).1, MAX_V1_LEN);
    let mut too_long = longest.to_vec();
    too_long.insert(14, b'f');
    assert_eq!(invalid(&too_long), "v1 header longer than 107 bytes");
    assert_eq!(parse(&too_long[..106]), Parsed::Incomplete);
}

#[test]
fn v1_is_strict() {
    let cases: &[&[u8]] = &[
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n", // no CR
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX", // CR without LF
        b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n", // double space
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n", // trailing space
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",   // missing port
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n", // extra field
        b"PROXY TCP4 ::1 ::1 1 2\r\n",                      // wrong family
        b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",              // wrong family
        b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n", // leading zero
        b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n", // leading zero
        b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n", // port range
        b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",  // sign
        b"PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n",  // sign
        b"PROXY UDP4 192.168.0.1 192.168.0.11 1 443\r\n",   // not in v1
        b"PROXY tcp4 192.168.0.1 192.168.0.11 1 443\r\n",   // case
        b"PROXY \r\n",
        b"PROXY\r\n",
        b"PROXYTCP4\r\n",
        b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n",
        b"PROXY UNKNOWN\x00\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",
    ];
    for case in cases {
        invalid(case);
    }
}

#[test]
fn garbage_is_refused_at_its_first_wrong_byte() {
    assert_eq!(parse(b"G"), Parsed::Invalid("no PROXY protocol header"));
    assert_eq!(parse(b"PROXX"), Parsed::Invalid("no PROXY protocol header"));
    assert_eq!(
        parse(b"\r\n\r\n\0\r\nQUIX"),
        Parsed::Invalid("no PROXY protocol header")
    );
    assert_eq!(parse(b""), Parsed::Incomplete);
    assert_eq!(parse(b"PROXY TCP4 1.2"), Parsed::Incomplete);
}

fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

const V4_BLOCK: [u8; 12] = [10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x01, 0xbb];

#[test]
fn v2_tcp4_with_tlvs_skips_them_and_leaves_the_payload() {
    let mut block = V4_BLOCK.to_vec();
    block.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]); // NOOP, 3 bytes
    block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // ALPN "h2"
    let mut bytes = v2(0x21, 0x11, &block);
    let header_len = bytes.len();
    bytes.extend_from_slice(b"payload");
    let (header, used) = done(&bytes);
    assert_eq!(used, header_len);
    assert_eq!(
        header.addresses,
        inet(Transport::Tcp, "10.0.0.1:12345", "10.0.0.2:443")
    );
}

#[test]
fn v2_local_and_unspec_keep_the_real_addresses() {
    let (header, used) = done(&v2(0x20, 0x00, &[]));
    assert_eq!((header.addresses, used), (Addresses::Local, 16));
    // LOCAL skips its block whatever the family says.
    let (header, used) = done(&v2(0x20, 0xff, &[1, 2, 3]));
    assert_eq!((header.addresses, used), (Addresses::Local, 19));
    let (header, _) = done(&v2(0x21, 0x00, &[4, 0, 1, 9]));
    assert_eq!(header.addresses, Addresses::Unknown);
    let (header, _) = done(&v2(0x21, 0x31, &[0; 216]));
    assert_eq!(header.addresses, Addresses::Unknown);
}

#[test]
fn v2_is_strict() {
    let mut long = v2(0x21, 0x11, &V4_BLOCK);
    long[14..16].copy_from_slice(&((MAX_V2_LEN + 1) as u16).to_be_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            v2(0x11, 0x11, &V4_BLOCK),
            "v2 header has a version other than 2",
        ),
        (
            v2(0x22, 0x11, &V4_BLOCK),
            "v2 command is neither LOCAL nor PROXY",
        ),
        (
            v2(0x21, 0x13, &V4_BLOCK),
            "v2 address family or transport is unknown",
        ),
        (
            v2(0x21, 0x41, &V4_BLOCK),
            "v2 address family or transport is unknown",
        ),
        (
            v2(0x21, 0x11, &V4_BLOCK[..11]),
            "v2 address block shorter than its family needs",
        ),
        (
            v2(0x21, 0x21, &[0; 35]),
            "v2 address block shorter than its family needs",
        ),
        (
            v2(0x21, 0x11, &[&V4_BLOCK[..], &[1, 0]].concat()),
            "v2 TLVs overrun the header",
        ),
        (
            v2(0x21, 0x11, &[&V4_BLOCK[..], &[1, 0, 2, 0]].concat()),
            "v2 TLVs overrun the header",
        ),
        (long, "v2 header longer than 528 bytes"),
    ];
    for (bytes, why) in cases {
        assert_eq!(parse(&bytes), Parsed::Invalid(why), "{bytes:?}");
    }
    // The longest accepted header.
    let mut block = V4_BLOCK.to_vec();
    block.extend_from_slice(&[0x04]);
    block.extend_from_slice(&((MAX_V2_LEN - 15) as u16).to_be_bytes());
    block.resize(MAX_V2_LEN, 0);
    assert_eq!(done(&v2(0x21, 0x11, &block)).1, MAX_HEADER_LEN);
}

#[test]
fn encoded_headers_match_the_specification_byte_for_byte() {
    let tcp4 = Header {
        version: Version::V1,
        addresses: inet(Transport::Tcp, "192.168.0.1:56324", "192.168.0.11:443"),
    };
    assert_eq!(
        encoded(tcp4),
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    );
    let v2_tcp4 = Header {
        version: Version::V2,
        addresses: inet(Transport::Tcp, "10.0.0.1:12345", "10.0.0.2:443"),
    };
    assert_eq!(encoded(v2_tcp4), v2(0x21, 0x11, &V4_BLOCK));
    let local = Header {
        version: Version::V2,
        addresses: Addresses::Local,
    };
    assert_eq!(encoded(local), v2(0x20, 0x00, &[]));
    let v1_local = Header {
        version: Version::V1,
        addresses: Addresses::Local,
    };
    assert_eq!(encoded(v1_local), b"PROXY UNKNOWN\r\n");
    // Mixed families become IPv4-mapped IPv6.
    let mixed = Header {
        version: Version::V1,
        addresses: inet(Transport::Tcp, "1.2.3.4:1", "[::1]:2"),
    };
    assert_eq!(encoded(mixed), b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n");
    let longest = Header {
        version: Version::V1,
        addresses: inet(
            Transport::Tcp,
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ),
    };
    assert_eq!(encoded(longest).len(), 104);
}

/// A header `encode` can write and `parse` gives back unchanged.
#[derive(Debug, Clone)]
struct Representable(Header);

fn arbitrary_ip(g: &mut Gen, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::arbitrary(g)))
    } else {
        IpAddr::V6(Ipv6Addr::from(u128::arbitrary(g)))
    }
}

impl Arbitrary for Representable {
    fn arbitrary(g: &mut Gen) -> Self {
        let v4 = bool::arbitrary(g);
        let endpoint = |g: &mut Gen| SocketAddr::new(arbitrary_ip(g, v4), u16::arbitrary(g));
        let source = endpoint(g);
        let destination = endpoint(g);
        let kind = u8::arbitrary(g) % 4;
        let header = if bool::arbitrary(g) {
            // v1: TCP4, TCP6 or UNKNOWN.
            let addresses = if kind == 0 {
                Addresses::Unknown
            } else {
                Addresses::Inet {
                    transport: Transport::Tcp,
                    source,
                    destination,
                }
            };
            Header {
                version: Version::V1,
                addresses,
            }
        } else {
            // v2: TCP or UDP over IPv4 or IPv6, LOCAL, UNSPEC.
            let addresses = match kind {
                0 => Addresses::Local,
                1 => Addresses::Unknown,
                2 => Addresses::Inet {
                    transport: Transport::Udp,
                    source,
                    destination,
                },
                _ => Addresses::Inet {
                    transport: Transport::Tcp,
                    source,
                    destination,
                },
            };
            Header {
                version: Version::V2,
                addresses,
            }
        };
        Representable(header)
    }
}

fn quickcheck<A: Arbitrary + std::fmt::Debug>(tests: u64, prop: fn(A) -> TestResult) {
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 10)
        .quickcheck(prop);
}

#[test]
fn every_representable_header_round_trips_followed_by_any_payload() {
    fn prop((header, payload): (Representable, Vec<u8>)) -> TestResult {
        let mut bytes = encoded(header.0);
        let len = bytes.len();
        bytes.extend_from_slice(&payload);
        TestResult::from_bool(parse(&bytes) == Parsed::Done(header.0, len))
    }
    quickcheck(2000, prop as fn(_) -> _);
}

#[test]
fn a_header_split_anywhere_is_incomplete_until_its_last_byte() {
    fn prop(header: Representable) -> TestResult {
        let bytes = encoded(header.0);
        let ok = (0..bytes.len()).all(|cut| parse(&bytes[..cut]) == Parsed::Incomplete)
            && parse(&bytes) == Parsed::Done(header.0, bytes.len());
        TestResult::from_bool(ok)
    }
    quickcheck(1000, prop as fn(_) -> _);
}

#[test]
fn arbitrary_bytes_never_panic_nor_claim_more_than_given() {
    fn prop(bytes: Vec<u8>) -> TestResult {
        TestResult::from_bool(match parse(&bytes) {
            Parsed::Done(_, used) => used <= bytes.len() && used > 0,
            Parsed::Incomplete => bytes.len() < MAX_HEADER_LEN,
            Parsed::Invalid(_) => true,
        })
    }
    quickcheck(5000, prop as fn(_) -> _);
}

#[test]
fn arbitrary_bytes_after_a_signature_never_panic_nor_overrun() {
    // Random bytes rarely start with a signature; these always do, so the
    // fields after it get exercised.
    fn prop((v2_sig, tail): (bool, Vec<u8>)) -> TestResult {
        let mut bytes = if v2_sig {
            V2_SIGNATURE.to_vec()
        } else {
            b"PROXY ".to_vec()
        };
        bytes.extend_from_slice(&tail);
        let result = parse(&bytes);
        let ok = match result {
            Parsed::Done(_, used) => used <= bytes.len(),
            Parsed::Incomplete => bytes.len() < MAX_HEADER_LEN,
            Parsed::Invalid(_) => true,
        };
        // A prefix of the same bytes never says more than the whole.
        let prefix_ok = (0..bytes.len()).all(|cut| match parse(&bytes[..cut]) {
            Parsed::Done(_, used) => used <= cut && result == parse(&bytes[..cut.max(used)]),
            _ => true,
        });
        TestResult::from_bool(ok && prefix_ok)
    }
    quickcheck(3000, prop as fn(_) -> _);
}

#[test]
fn mutated_headers_never_panic_and_valid_results_stay_within_the_input() {
    fn prop((header, at, byte): (Representable, usize, u8)) -> TestResult {
        let mut bytes = encoded(header.0);
        let at = at % bytes.len();
        bytes[at] = byte;
        TestResult::from_bool(match parse(&bytes) {
            Parsed::Done(_, used) => used <= bytes.len(),
            _ => true,
        })
    }
    quickcheck(3000, prop as fn(_) -> _);
}

#[test]
fn bytes_that_leave_both_signatures_are_invalid_at_once() {
    fn prop((start, at, byte, tail): (bool, usize, u8, Vec<u8>)) -> TestResult {
        // A signature with one byte changed within its first `len` bytes,
        // then anything: no header can start that way, however much
        // follows.
        let signature: &[u8] = if start { &V2_SIGNATURE } else { V1_PREFIX };
        let at = at % signature.len();
        if byte == signature[at] {
            return TestResult::discard();
        }
        let mut bytes = signature[..at].to_vec();
        bytes.push(byte);
        bytes.extend_from_slice(&tail);
        let other_start = (at == 0) && (byte == b'P' || byte == b'\r');
        if other_start {
            return TestResult::discard();
        }
        TestResult::from_bool(matches!(parse(&bytes), Parsed::Invalid(_)))
    }
    quickcheck(3000, prop as fn(_) -> _);
}

#[test]
fn bytes_not_starting_like_a_header_are_invalid() {
    fn prop((first, tail): (u8, Vec<u8>)) -> TestResult {
        if first == b'P' || first == b'\r' {
            return TestResult::discard();
        }
        let mut bytes = vec![first];
        bytes.extend_from_slice(&tail);
        TestResult::from_bool(parse(&bytes) == Parsed::Invalid("no PROXY protocol header"))
    }
    quickcheck(3000, prop as fn(_) -> _);
}

#[test]
fn a_v2_header_with_an_authority_tlv_parses_to_the_same_addresses_and_length() {
    let header = Header {
        version: Version::V2,
        addresses: Addresses::Inet {
            transport: Transport::Tcp,
            source: "[2001:db8::1]:40000".parse().expect("addr"),
            destination: "[2001:db8::2]:443".parse().expect("addr"),
        },
    };
    let name = [b'a'; MAX_AUTHORITY_LEN];
    let mut out = [0; MAX_OUTGOING_LEN];
    let n = encode_with_authority(&header, Some(&name), &mut out);
    assert_eq!(
        n, MAX_OUTGOING_LEN,
        "the longest header fills the room exactly"
    );
    let tlv = &out[n - 3 - name.len()..n];
    assert_eq!(tlv[..3], [0x02, 0x00, 0xff]);
    assert_eq!(parse(&out[..n]), Parsed::Done(header, n));
    let v1 = Header {
        version: Version::V1,
        ..header
    };
    let n1 = encode_with_authority(&v1, Some(b"alpha.example"), &mut out);
    assert!(out[..n1].starts_with(b"PROXY TCP6 "), "v1 carries no name");
}
