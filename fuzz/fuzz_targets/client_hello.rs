//! TLS ClientHello peeks on arbitrary bytes: never a panic, never
//! `Incomplete` past the most a hello may take, and a hello read has a
//! normalised host name (or none) and no empty ALPN name; every prefix of
//! bytes that read as a hello is `Incomplete`.
#![no_main]

use balanciaga4::client_hello::{peek, Peek, MAX_NAME_LEN, MAX_PEEK_LEN};
use libfuzzer_sys::fuzz_target;

/// A non-empty run of lowercase letters, digits, `-` and `_`.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

fuzz_target!(|data: &[u8]| {
    match peek(data) {
        Peek::Incomplete => assert!(data.len() < MAX_PEEK_LEN),
        Peek::NotTls(why) => assert!(!why.is_empty()),
        Peek::TooLarge => {}
        Peek::Hello(hello) => {
            if let Some(name) = hello.server_name() {
                assert!(name.len() <= MAX_NAME_LEN);
                assert!(name.split('.').all(is_label), "{name:?}");
            }
            assert!(hello.alpn().all(|protocol| !protocol.is_empty()));
            // The hello ends somewhere inside `data`; whatever came before
            // that point was a valid beginning.
            let end = (0..data.len())
                .find(|&len| peek(&data[..len]) != Peek::Incomplete)
                .unwrap_or(data.len());
            assert_eq!(peek(&data[..end]), Peek::Hello(hello));
        }
    }
});
