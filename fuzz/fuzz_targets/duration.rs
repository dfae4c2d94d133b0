//! Duration text: parses or says why not; what parses formats back to the
//! same value.
#![no_main]

use balanciaga4::config::duration::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration(text) {
        Ok(d) => assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text:?}"),
        Err(message) => assert!(!message.is_empty(), "{text:?}"),
    }
});
