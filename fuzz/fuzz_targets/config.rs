//! The config loader on arbitrary text: a config or errors, never a panic,
//! and every error starts with the file name it was given.
//!
//! Backend host names go to a resolver that knows none; listener and admin
//! binds that name a host still go to the system resolver, and an
//! `access_log_file` is opened for appending, so run this in a scratch
//! checkout (`make fuzz` does it from fuzz/).
#![no_main]

use std::net::SocketAddr;

use balanciaga4::config::Config;
use libfuzzer_sys::fuzz_target;

fn no_dns(host: &str) -> Result<Vec<SocketAddr>, String> {
    Err(format!("{host:?} does not resolve: no such host"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::parse_with(&text, "fuzz.ron", &no_dns) {
        assert!(!e.errors.is_empty(), "an error without a message");
        for message in &e.errors {
            assert!(message.starts_with("fuzz.ron:"), "{message:?}");
        }
    }
});
