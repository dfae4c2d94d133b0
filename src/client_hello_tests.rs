//! Tests of the ClientHello peek: hellos built here (TLS 1.3 shape, with or
//! without a name and ALPN, padded, with a post-quantum-sized key share)
//! and hellos captured from `openssl s_client`, cut at every length,
//! re-framed over many records, mutated, and arbitrary bytes.

use super::*;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

// Captured from OpenSSL 3.0 on loopback with a listener that only records:
// `openssl s_client -connect 127.0.0.1:PORT -servername x.example -alpn h2,http/1.1`
pub(crate) const OPENSSL_SNI_ALPN: &[u8] = &[
    0x16, 0x03, 0x01, 0x01, 0x48, 0x01, 0x00, 0x01, 0x44, 0x03, 0x03, 0x62, 0xc7, 0xfe, 0xf5, 0x6c,
    0xf7, 0xbb, 0x84, 0x48, 0x02, 0x78, 0xc6, 0xed, 0xba, 0xd2, 0x8f, 0xdb, 0x82, 0xe7, 0x48, 0xc4,
    0x4e, 0x37, 0xd4, 0x00, 0x41, 0x84, 0xa9, 0xc0, 0xe3, 0x5d, 0x20, 0x20, 0x86, 0x68, 0x47, 0x68,
    0xc0, 0xf3, 0xc6, 0xd3, 0x53, 0xf6, 0x7d, 0x90, 0x54, 0x65, 0x83, 0x33, 0x86, 0x90, 0x72, 0x7b,
    0xb6, 0xea, 0xc0, 0xe5, 0x7a, 0x75, 0xbc, 0x92, 0xc2, 0xeb, 0x87, 0xe3, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0xbd,
    0x00, 0x00, 0x00, 0x0e, 0x00, 0x0c, 0x00, 0x00, 0x09, 0x78, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70,
    0x6c, 0x65, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14,
    0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02,
    0x01, 0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c, 0x02, 0x68,
    0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17,
    0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07,
    0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01,
    0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02,
    0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01, 0x00, 0x2d, 0x00,
    0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0xdc, 0x66, 0x99,
    0xc9, 0x28, 0xef, 0x88, 0x2f, 0xa1, 0xaf, 0x78, 0xe3, 0x41, 0x11, 0xe7, 0xb6, 0xb0, 0x2c, 0xf3,
    0xf0, 0x7d, 0x9b, 0x07, 0xed, 0x9e, 0xc2, 0x57, 0x70, 0xd8, 0x14, 0xa4, 0x10,
];

// `openssl s_client ... -servername Upper.Example.COM. -tls1_2 -alpn http/1.1`
const OPENSSL_TLS12_UPPERCASE_DOT: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xe1, 0x01, 0x00, 0x00, 0xdd, 0x03, 0x03, 0xf5, 0xb0, 0x8e, 0x6a, 0x80,
    0xd5, 0x9e, 0xd8, 0xd4, 0xd3, 0xba, 0xaf, 0x85, 0x7e, 0xae, 0x0b, 0x9f, 0x31, 0xad, 0x98, 0x5a,
    0x4a, 0xda, 0xf2, 0xe3, 0xb6, 0x2d, 0x11, 0xa1, 0x0f, 0x61, 0x9e, 0x00, 0x00, 0x38, 0xc0, 0x2c,
    0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e,
    0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14,
    0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c,
    0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x7c, 0x00, 0x00, 0x00, 0x17, 0x00, 0x15,
    0x00, 0x00, 0x12, 0x55, 0x70, 0x70, 0x65, 0x72, 0x2e, 0x45, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
    0x2e, 0x43, 0x4f, 0x4d, 0x2e, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00,
    0x0c, 0x00, 0x0a, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x00, 0x23, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x0b, 0x00, 0x09, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31,
    0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03,
    0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04,
    0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02,
    0x04, 0x02, 0x05, 0x02, 0x06, 0x02,
];

// `openssl s_client ... -noservername`
const OPENSSL_NO_SNI: &[u8] = &[
    0x16, 0x03, 0x01, 0x01, 0x24, 0x01, 0x00, 0x01, 0x20, 0x03, 0x03, 0xdc, 0x23, 0x8b, 0x2c, 0xca,
    0x3d, 0x04, 0x02, 0x53, 0x5d, 0x1f, 0xaf, 0x84, 0xb3, 0x5d, 0x60, 0x60, 0xab, 0x74, 0x0c, 0xfc,
    0x43, 0x38, 0x77, 0x7b, 0x03, 0xd4, 0xa8, 0x77, 0x35, 0x73, 0xad, 0x20, 0xe5, 0xb8, 0xb4, 0x99,
    0xe7, 0xca, 0x5e, 0x1b, 0xda, 0x4c, 0x2d, 0x50, 0xe0, 0xff, 0xca, 0x8f, 0x52, 0x30, 0xb7, 0x39,
    0x30, 0xec, 0x99, 0xb8, 0xf9, 0x63, 0x5e, 0x41, 0xa2, 0x29, 0x10, 0xd0, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x99,
    0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d,
    0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03,
    0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d,
    0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09,
    0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01,
    0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09,
    0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00,
    0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0x4e, 0x11, 0x69, 0x7d, 0x22, 0x97, 0x14,
    0xf9, 0xc1, 0xd6, 0xde, 0x26, 0x04, 0x78, 0x6f, 0xcb, 0x5d, 0xfa, 0x93, 0xc4, 0x2f, 0x31, 0x5d,
    0xc7, 0x30, 0x5a, 0x34, 0x31, 0x21, 0x78, 0x58, 0x7f,
];

/// What a built hello carries besides the fixed TLS 1.3 extensions.
#[derive(Clone, Debug, Default)]
struct Spec {
    name: Option<Vec<u8>>,
    alpn: Vec<Vec<u8>>,
    /// Bytes of key exchange in the key_share entry (32 for X25519 alone,
    /// 1216 for X25519MLKEM768).
    key_share: usize,
    /// Bytes of a padding extension (RFC 7685), if any.
    padding: Option<usize>,
    /// An Encrypted Client Hello extension, which must be ignored.
    ech: bool,
    /// Whole extensions (type, length, data) added as they are.
    raw: Vec<Vec<u8>>,
}

fn vec8(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(bytes.len()).expect("vec8 length")];
    out.extend_from_slice(bytes);
    out
}

fn vec16(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("vec16 length");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend(vec16(data));
    out
}

fn server_name_extension(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let list: Vec<u8> = entries
        .iter()
        .flat_map(|&(kind, name)| [vec![kind], vec16(name)].concat())
        .collect();
    extension(0, &vec16(&list))
}

fn alpn_extension(protocols: &[Vec<u8>]) -> Vec<u8> {
    let list: Vec<u8> = protocols.iter().flat_map(|p| vec8(p)).collect();
    extension(16, &vec16(&list))
}

/// A handshake message around `body`.
fn handshake(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("u24 length").to_be_bytes();
    let mut out = vec![1, len[1], len[2], len[3]];
    out.extend_from_slice(body);
    out
}

/// The handshake message, header included, of a ClientHello shaped like a
/// TLS 1.3 client's.
fn message(spec: &Spec) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([0x42; 32]); // random
    body.extend(vec8(&[0x17; 32])); // legacy_session_id, as for middlebox compatibility
    body.extend(vec16(&[0x13, 0x01, 0x13, 0x02, 0x13, 0x03]));
    body.extend(vec8(&[0]));
    let mut extensions = Vec::new();
    if let Some(name) = &spec.name {
        extensions.extend(server_name_extension(&[(0, name)]));
    }
    extensions.extend(extension(10, &vec16(&[0x11, 0xec, 0x00, 0x1d])));
    extensions.extend(extension(13, &vec16(&[0x08, 0x04, 0x04, 0x03])));
    extensions.extend(extension(43, &vec8(&[0x03, 0x04, 0x03, 0x03])));
    extensions.extend(extension(45, &vec8(&[1])));
    let share = [vec![0x11, 0xec], vec16(&vec![0x5a; spec.key_share])].concat();
    extensions.extend(extension(51, &vec16(&share)));
    if !spec.alpn.is_empty() {
        extensions.extend(alpn_extension(&spec.alpn));
    }
    if spec.ech {
        extensions.extend(extension(
            0xfe0d,
            &[0x00, 0x00, 0x01, 0x00, 0x01, 0x07, 0x00],
        ));
    }
    for raw in &spec.raw {
        extensions.extend_from_slice(raw);
    }
    if let Some(padding) = spec.padding {
        extensions.extend(extension(21, &vec![0; padding]));
    }
    body.extend(vec16(&extensions));
    handshake(&body)
}

/// `message` in handshake records, one per part between the `cuts`.
fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut cuts = cuts.to_vec();
    cuts.extend([0, message.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    for edge in cuts.windows(2) {
        let part = &message[edge[0]..edge[1]];
        out.extend([22, 3, 1]);
        out.extend(vec16(part));
    }
    out
}

fn built(spec: &Spec) -> Vec<u8> {
    records(&message(spec), &[])
}

fn hello(bytes: &[u8]) -> Hello {
    match peek(bytes) {
        Peek::Hello(hello) => hello,
        other => panic!("expected a hello, got {other:?}"),
    }
}

fn not_tls(bytes: &[u8]) -> &'static str {
    match peek(bytes) {
        Peek::NotTls(why) => why,
        other => panic!("expected NotTls, got {other:?}"),
    }
}

fn alpn(hello: &Hello) -> Vec<&[u8]> {
    hello.alpn().collect()
}

fn named(name: &str) -> Spec {
    Spec {
        name: Some(name.as_bytes().to_vec()),
        key_share: 32,
        ..Spec::default()
    }
}

fn assert_every_prefix_incomplete(bytes: &[u8]) {
    for len in 0..bytes.len() {
        assert_eq!(
            peek(&bytes[..len]),
            Peek::Incomplete,
            "prefix of {len} bytes"
        );
    }
}

/// What the server name must read as: labels of letters, digits, `-`
/// and `_`, lowercased, one trailing dot dropped.
fn normalised(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    is_host_name(name).then(|| String::from_utf8(name.to_ascii_lowercase()).expect("ascii"))
}

fn is_host_name(name: &[u8]) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(b))
        })
}

fn is_normalised(name: &str) -> bool {
    is_host_name(name.as_bytes()) && !name.bytes().any(|b| b.is_ascii_uppercase())
}

#[test]
fn reads_the_name_and_alpn_of_a_built_hello() {
    let spec = Spec {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..named("api.example.com")
    };
    let read = hello(&built(&spec));
    assert_eq!(read.server_name(), Some("api.example.com"));
    assert_eq!(alpn(&read), [&b"h2"[..], b"http/1.1"]);
    assert!(!read.alpn_truncated());
}

#[test]
fn reads_a_hello_captured_from_openssl() {
    let read = hello(OPENSSL_SNI_ALPN);
    assert_eq!(read.server_name(), Some("x.example"));
    assert_eq!(alpn(&read), [&b"h2"[..], b"http/1.1"]);
}

#[test]
fn lowercases_the_name_and_strips_one_trailing_dot() {
    let read = hello(&built(&named("WWW.Example.ORG.")));
    assert_eq!(read.server_name(), Some("www.example.org"));
    let read = hello(OPENSSL_TLS12_UPPERCASE_DOT);
    assert_eq!(read.server_name(), Some("upper.example.com"));
    assert_eq!(alpn(&read), [&b"http/1.1"[..]]);
}

#[test]
fn a_hello_without_server_name_has_no_name() {
    let spec = Spec {
        alpn: vec![b"h2".to_vec()],
        ..Spec::default()
    };
    let read = hello(&built(&spec));
    assert_eq!(read.server_name(), None);
    assert_eq!(alpn(&read), [&b"h2"[..]]);
    let read = hello(OPENSSL_NO_SNI);
    assert_eq!(read.server_name(), None);
    assert_eq!(read.alpn().count(), 0);
}

#[test]
fn a_hello_without_alpn_has_no_protocols() {
    let read = hello(&built(&named("x.example")));
    assert_eq!(read.server_name(), Some("x.example"));
    assert_eq!(read.alpn().count(), 0);
    assert!(!read.alpn_truncated());
}

#[test]
fn a_hello_without_extensions_is_read() {
    let mut body = vec![3, 0];
    body.extend([0; 32]);
    body.extend([0, 0, 2, 0, 0x2f, 1, 0]);
    let read = hello(&records(&handshake(&body), &[]));
    assert_eq!(read.server_name(), None);
    assert_eq!(read.alpn().count(), 0);
}

#[test]
fn names_that_are_not_host_names_count_as_no_name() {
    let long = "a".repeat(254);
    let longer = "b".repeat(300);
    for name in [
        "",
        ".",
        "a b",
        "ex\0ample",
        "caf\u{e9}.example",
        "x/y",
        "a:443",
        &long,
        &longer,
    ] {
        let read = hello(&built(&named(name)));
        assert_eq!(read.server_name(), None, "{name:?}");
    }
    let longest = "c".repeat(MAX_NAME_LEN);
    let read = hello(&built(&named(&longest)));
    assert_eq!(read.server_name(), Some(longest.as_str()));
    let read = hello(&built(&named(&format!("{longest}."))));
    assert_eq!(read.server_name(), Some(longest.as_str()));
    let read = hello(&built(&named("_acme-challenge.x-1.example")));
    assert_eq!(read.server_name(), Some("_acme-challenge.x-1.example"));
}

#[test]
fn the_first_host_name_is_kept() {
    let spec = Spec {
        raw: vec![server_name_extension(&[
            (7, b"other-type.example"),
            (0, b"first.example"),
            (0, b"second.example"),
        ])],
        ..Spec::default()
    };
    assert_eq!(hello(&built(&spec)).server_name(), Some("first.example"));
}

#[test]
fn the_outer_name_is_read_when_the_hello_carries_ech() {
    let spec = Spec {
        ech: true,
        ..named("public.example")
    };
    assert_eq!(hello(&built(&spec)).server_name(), Some("public.example"));
}

#[test]
fn large_hellos_are_read() {
    for (key_share, padding) in [
        (1216, None),
        (2048, None),
        (32, Some(4096)),
        (2048, Some(8000)),
    ] {
        let spec = Spec {
            key_share,
            padding,
            alpn: vec![b"h2".to_vec()],
            ..named("big.example")
        };
        let bytes = built(&spec);
        let read = hello(&bytes);
        assert_eq!(read.server_name(), Some("big.example"));
        assert_eq!(alpn(&read), [&b"h2"[..]]);
        assert_every_prefix_incomplete(&bytes);
    }
}

#[test]
fn every_prefix_of_a_valid_hello_is_incomplete() {
    let spec = Spec {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        padding: Some(200),
        ..named("x.example")
    };
    let message = message(&spec);
    for bytes in [
        OPENSSL_SNI_ALPN.to_vec(),
        OPENSSL_TLS12_UPPERCASE_DOT.to_vec(),
        OPENSSL_NO_SNI.to_vec(),
        records(&message, &[]),
        // Cut inside the handshake header, then anywhere.
        records(&message, &[1, 2, 3, 5, 40, 41, 300]),
    ] {
        hello(&bytes);
        assert_every_prefix_incomplete(&bytes);
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut bytes = OPENSSL_SNI_ALPN.to_vec();
    bytes.extend([23, 3, 3, 0, 4, 1, 2, 3, 4]);
    assert_eq!(hello(&bytes).server_name(), Some("x.example"));
    // Also when the last record carries more than the message.
    let mut message = message(&named("x.example"));
    message.extend([2, 0, 0, 0]);
    assert_eq!(
        hello(&records(&message, &[])).server_name(),
        Some("x.example")
    );
}

#[test]
fn plain_http_is_not_tls_at_the_first_byte() {
    assert_eq!(not_tls(b"G"), "not a TLS handshake record");
    not_tls(b"GET / HTTP/1.1\r\nHost: x.example\r\n\r\n");
    not_tls(b"SSH-2.0-OpenSSH_9.6\r\n");
}

#[test]
fn an_sslv2_hello_is_not_tls_at_the_first_byte() {
    assert_eq!(not_tls(&[0x80]), "SSLv2-style hello");
    not_tls(&[
        0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
    ]);
}

#[test]
fn a_record_version_major_other_than_3_is_not_tls() {
    assert_eq!(peek(&[22]), Peek::Incomplete);
    assert_eq!(not_tls(&[22, 2]), "record version major is not 3");
    assert_eq!(not_tls(&[22, 4, 1]), "record version major is not 3");
}

#[test]
fn a_first_handshake_message_other_than_client_hello_is_not_tls() {
    assert_eq!(peek(&[22, 3, 1, 0, 80]), Peek::Incomplete);
    let why = not_tls(&[22, 3, 1, 0, 80, 2]);
    assert_eq!(why, "first handshake message is not a ClientHello");
}

#[test]
fn an_oversized_hello_is_too_large_as_soon_as_its_header_shows_it() {
    // Body of MAX_HELLO + 1 bytes, announced in the handshake header.
    let header = [22, 3, 1, 0x40, 0x00, 1, 0x00, 0x40, 0x01];
    assert_eq!(peek(&header[..8]), Peek::Incomplete);
    assert_eq!(peek(&header), Peek::TooLarge);
    // Also when the header itself is split over records: decided at the
    // byte that completes it, the first payload byte of the fourth record.
    let split = records(&[1, 0x00, 0x40, 0x01, 0], &[1, 2, 3]);
    let decided = 3 * (RECORD_HEADER + 1) + RECORD_HEADER + 1;
    assert_eq!(peek(&split[..decided - 1]), Peek::Incomplete);
    assert_eq!(peek(&split[..decided]), Peek::TooLarge);
}

#[test]
fn a_hello_of_exactly_the_bound_is_read_and_one_byte_more_is_too_large() {
    let fill = |target: usize| {
        let bare = message(&named("edge.example")).len() - HANDSHAKE_HEADER;
        // The padding extension's own 4 bytes of type and length.
        Spec {
            padding: Some(target - bare - 4),
            ..named("edge.example")
        }
    };
    let message_at_bound = message(&fill(MAX_HELLO));
    assert_eq!(message_at_bound.len(), HANDSHAKE_HEADER + MAX_HELLO);
    // Over one record's 16 KiB: two records, as a client would send it.
    let bytes = records(&message_at_bound, &[MAX_RECORD_PAYLOAD]);
    assert_eq!(hello(&bytes).server_name(), Some("edge.example"));
    assert!(bytes.len() <= MAX_PEEK_LEN);
    let over = records(&message(&fill(MAX_HELLO + 1)), &[MAX_RECORD_PAYLOAD]);
    assert_eq!(
        peek(&over[..RECORD_HEADER + HANDSHAKE_HEADER]),
        Peek::TooLarge
    );
}

#[test]
fn a_hello_over_more_than_64_records_is_not_tls() {
    let spec = Spec {
        padding: Some(100),
        ..named("frag.example")
    };
    let message = message(&spec);
    let cuts: Vec<usize> = (1..MAX_RECORDS).collect();
    let bytes = records(&message, &cuts);
    assert_eq!(hello(&bytes).server_name(), Some("frag.example"));
    assert_every_prefix_incomplete(&bytes);
    let cuts: Vec<usize> = (1..=MAX_RECORDS).collect();
    let bytes = records(&message, &cuts);
    let sixty_four = (RECORD_HEADER + 1) * MAX_RECORDS;
    assert_eq!(peek(&bytes[..sixty_four]), Peek::Incomplete);
    let why = not_tls(&bytes[..=sixty_four]);
    assert_eq!(why, "ClientHello split over too many records");
}

#[test]
fn a_record_of_another_type_inside_the_hello_is_not_tls() {
    let message = message(&named("x.example"));
    let mut bytes = records(&message[..50], &[]);
    bytes.push(21); // alert
    assert_eq!(
        not_tls(&bytes),
        "record other than handshake inside the ClientHello"
    );
}

#[test]
fn empty_and_overlong_records_are_not_tls() {
    assert_eq!(not_tls(&[22, 3, 1, 0, 0]), "empty handshake record");
    assert_eq!(
        not_tls(&[22, 3, 1, 0x40, 0x01]),
        "record longer than 16 KiB"
    );
    let message = message(&named("x.example"));
    let mut bytes = records(&message[..50], &[]);
    bytes.extend([22, 3, 1, 0, 0]);
    assert_eq!(not_tls(&bytes), "empty handshake record");
}

#[test]
fn a_body_shorter_than_any_hello_is_not_tls() {
    assert_eq!(
        not_tls(&[22, 3, 1, 0, 10, 1, 0, 0, 6]),
        "ClientHello too short"
    );
}

#[test]
fn lengths_that_do_not_fit_their_container_are_not_tls() {
    let overrun = |data: &[u8]| {
        let spec = Spec {
            raw: vec![data.to_vec()],
            ..Spec::default()
        };
        not_tls(&built(&spec))
    };
    // A server name list longer than its extension.
    overrun(&[0, 0, 0, 5, 0, 9, 0, 0, 2]);
    // A host name longer than its list.
    overrun(&extension(0, &vec16(&[0, 0, 9, b'a'])));
    // Bytes after the server name list.
    overrun(&extension(0, &[vec16(&[0, 0, 1, b'a']), vec![0]].concat()));
    // An ALPN name longer than its list.
    overrun(&extension(16, &vec16(&[5, b'h', b'2'])));
    // An extension longer than the extensions block.
    overrun(&[0xaa, 0xaa, 0xff, 0xff, 0]);
    // Empty lists.
    overrun(&extension(0, &vec16(&[])));
    overrun(&extension(16, &vec16(&[])));
    overrun(&extension(0, &[]));

    // Bytes after the extensions block, inside the message.
    let mut message = message(&named("x.example"));
    message.push(0);
    let len = u32::try_from(message.len() - HANDSHAKE_HEADER).expect("len");
    message[1..HANDSHAKE_HEADER].copy_from_slice(&len.to_be_bytes()[1..]);
    assert_eq!(
        not_tls(&records(&message, &[])),
        "bytes after the extensions"
    );
}

#[test]
fn malformed_fixed_fields_are_not_tls() {
    let fields = |session_id: &[u8], suites: &[u8], compression: &[u8]| {
        let mut body = vec![3, 3];
        body.extend([0; 32]);
        body.extend(vec8(session_id));
        body.extend(vec16(suites));
        body.extend(vec8(compression));
        body.extend(vec16(&[]));
        records(&handshake(&body), &[])
    };
    hello(&fields(&[1; 32], &[0x13, 0x01], &[0]));
    assert_eq!(
        not_tls(&fields(&[1; 33], &[0x13, 0x01], &[0])),
        "session id longer than 32 bytes"
    );
    assert_eq!(
        not_tls(&fields(&[], &[0x13, 0x01, 0x13], &[0])),
        "malformed cipher suite list"
    );
    assert_eq!(
        not_tls(&fields(&[], &[0x13, 0x01], &[])),
        "no compression method"
    );
}

#[test]
fn duplicate_extensions_read_for_routing_are_not_tls() {
    let twice = Spec {
        raw: vec![server_name_extension(&[(0, b"other.example")])],
        ..named("x.example")
    };
    assert_eq!(not_tls(&built(&twice)), "two server_name extensions");
    let twice = Spec {
        alpn: vec![b"h2".to_vec()],
        raw: vec![alpn_extension(&[b"http/1.1".to_vec()])],
        ..Spec::default()
    };
    assert_eq!(not_tls(&built(&twice)), "two ALPN extensions");
}

#[test]
fn an_empty_alpn_protocol_name_is_not_tls() {
    let spec = Spec {
        alpn: vec![b"h2".to_vec(), Vec::new()],
        ..Spec::default()
    };
    assert_eq!(not_tls(&built(&spec)), "empty ALPN protocol name");
}

#[test]
fn alpn_beyond_the_storage_keeps_the_first_protocols() {
    let many: Vec<Vec<u8>> = (0..20).map(|i| format!("p{i:02}").into_bytes()).collect();
    let read = hello(&built(&Spec {
        alpn: many.clone(),
        ..Spec::default()
    }));
    assert_eq!(
        alpn(&read),
        many[..MAX_ALPN_PROTOCOLS]
            .iter()
            .map(Vec::as_slice)
            .collect::<Vec<_>>()
    );
    assert!(read.alpn_truncated());

    // Two names of 255 bytes fill the 512 bytes; nothing after them is kept,
    // not even a name short enough to fit elsewhere.
    let long = vec![vec![b'a'; 255], vec![b'b'; 255], vec![b'c'], vec![b'd']];
    let read = hello(&built(&Spec {
        alpn: long.clone(),
        ..Spec::default()
    }));
    assert_eq!(alpn(&read), [&long[0][..], &long[1][..]]);
    assert!(read.alpn_truncated());

    let exact: Vec<Vec<u8>> = (0..MAX_ALPN_PROTOCOLS).map(|_| vec![b'x'; 31]).collect();
    let read = hello(&built(&Spec {
        alpn: exact.clone(),
        ..Spec::default()
    }));
    assert_eq!(read.alpn().count(), MAX_ALPN_PROTOCOLS);
    assert!(!read.alpn_truncated());
}

/// A valid hello (random name, ALPN list, key share and padding) and the
/// places its message is cut into records.
#[derive(Clone, Debug)]
struct Fragmented {
    spec: Spec,
    cuts: Vec<u32>,
}

impl Arbitrary for Fragmented {
    fn arbitrary(g: &mut Gen) -> Self {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._";
        let below = |g: &mut Gen, n: usize| usize::arbitrary(g) % n;
        let name = (below(g, 8) != 0).then(|| {
            let len = if below(g, 8) == 0 {
                240 + below(g, 20)
            } else {
                1 + below(g, 40)
            };
            let mut name: Vec<u8> = (0..len).map(|_| *g.choose(CHARS).expect("chars")).collect();
            if bool::arbitrary(g) {
                name.push(b'.');
            }
            name
        });
        // At most 12 names of at most 40 bytes: always within the storage.
        let alpn = (0..below(g, 13))
            .map(|_| (0..1 + below(g, 40)).map(|_| u8::arbitrary(g)).collect())
            .collect();
        let spec = Spec {
            name,
            alpn,
            key_share: *g.choose(&[32, 1216, 2048]).expect("sizes"),
            padding: bool::arbitrary(g).then(|| below(g, 5000)),
            ech: bool::arbitrary(g),
            raw: Vec::new(),
        };
        // At most MAX_RECORDS - 1 cuts: at most MAX_RECORDS records.
        let cuts = (0..below(g, MAX_RECORDS))
            .map(|_| u32::arbitrary(g))
            .collect();
        Fragmented { spec, cuts }
    }
}

#[test]
fn refragmented_hellos_read_the_same_and_every_prefix_is_incomplete() {
    fn prop(case: Fragmented) -> TestResult {
        let message = message(&case.spec);
        let one = hello(&records(&message, &[]));
        let expected_name = case.spec.name.as_deref().and_then(normalised);
        if one.server_name() != expected_name.as_deref() {
            return TestResult::error(format!(
                "name {:?}, wanted {expected_name:?}",
                one.server_name()
            ));
        }
        if !one.alpn().eq(case.spec.alpn.iter().map(Vec::as_slice)) || one.alpn_truncated() {
            return TestResult::error(format!("ALPN {one:?}, wanted {:?}", case.spec.alpn));
        }
        let cuts: Vec<usize> = case
            .cuts
            .iter()
            .map(|&cut| 1 + usize::try_from(cut).expect("u32") % (message.len() - 1))
            .collect();
        let stream = records(&message, &cuts);
        if peek(&stream) != Peek::Hello(one) {
            return TestResult::error(format!("cut at {cuts:?}: {:?}", peek(&stream)));
        }
        for len in 0..stream.len() {
            if peek(&stream[..len]) != Peek::Incomplete {
                return TestResult::error(format!("cut at {cuts:?}, prefix {len}"));
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(Fragmented) -> TestResult);
}

/// What every answer must respect, whatever the input.
fn sound(bytes: &[u8]) -> TestResult {
    match peek(bytes) {
        Peek::Incomplete if bytes.len() >= MAX_PEEK_LEN => {
            TestResult::error(format!("Incomplete at {} bytes", bytes.len()))
        }
        Peek::Hello(hello) => match hello.server_name() {
            Some(name) if !is_normalised(name) => TestResult::error(format!("name {name:?}")),
            _ if hello.alpn().any(<[u8]>::is_empty) => TestResult::error("empty ALPN name"),
            _ => TestResult::passed(),
        },
        Peek::NotTls("") => TestResult::error("NotTls without a reason"),
        _ => TestResult::passed(),
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_any_hello_has_a_valid_name() {
    fn prop(bytes: Vec<u8>) -> TestResult {
        sound(&bytes)
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(Vec<u8>) -> TestResult);
}

/// Arbitrary bytes as long as a real hello's body.
#[derive(Clone, Debug)]
struct Body(Vec<u8>);

impl Arbitrary for Body {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = MIN_HELLO + usize::arbitrary(g) % 600;
        Body((0..len).map(|_| u8::arbitrary(g)).collect())
    }
}

#[test]
fn arbitrary_bodies_behind_a_client_hello_header_never_panic() {
    fn prop((body, records_of): (Body, u8)) -> TestResult {
        // Framed well, so the bytes reach the body parser.
        let message = handshake(&body.0);
        let step = 1 + usize::from(records_of) % 16;
        let cuts: Vec<usize> = (step..message.len())
            .step_by(step.max(message.len() / 60))
            .collect();
        sound(&records(&message, &cuts))
    }
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn((Body, u8)) -> TestResult);
}

#[test]
fn mutated_hellos_never_panic() {
    fn prop((case, flips): (Fragmented, Vec<(u16, u8)>)) -> TestResult {
        let mut bytes = records(&message(&case.spec), &[]);
        for (at, byte) in flips {
            let at = usize::from(at) % bytes.len();
            bytes[at] = byte;
        }
        sound(&bytes)
    }
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn((Fragmented, Vec<(u16, u8)>)) -> TestResult);
}
