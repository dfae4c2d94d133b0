//! CIDR text: parses or says why not; a block holds its own network
//! address and prints as text that parses back to it.
#![no_main]

use balanciaga4::acl::Cidr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(block) = Cidr::parse(text) {
        assert!(block.contains(block.network()), "{text:?}");
        assert_eq!(Cidr::parse(&block.to_string()), Ok(block), "{text:?}");
    }
});
