//! PROXY protocol headers on arbitrary bytes: never a panic, never more
//! bytes claimed than given, and a header read encodes to bytes that read
//! back as the same header.
#![no_main]

use balanciaga4::proxy_protocol::{encode, parse, Parsed, MAX_ENCODED_LEN, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Done(header, used) => {
            assert!(used > 0 && used <= data.len());
            let mut out = [0u8; MAX_ENCODED_LEN];
            let n = encode(&header, &mut out);
            assert_eq!(parse(&out[..n]), Parsed::Done(header, n));
        }
        Parsed::Incomplete => assert!(data.len() < MAX_HEADER_LEN),
        Parsed::Invalid(why) => assert!(!why.is_empty()),
    }
});
