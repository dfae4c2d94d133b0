//! The admin request reader on arbitrary bytes, delivered in reads of the
//! size the first byte gives: never a panic, and a complete request is
//! answered with a whole HTTP/1.1 response.
#![no_main]

use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use balanciaga4::admin::http::{Fill, Handler, Incoming, Request, Response};
use balanciaga4::admin::ServerOptions;
use libfuzzer_sys::fuzz_target;

struct Chunked<'a> {
    data: Cursor<&'a [u8]>,
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.data.read(&mut buf[..n])
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    // Small limits, so that inputs of a few KiB cross them.
    let options = ServerOptions {
        max_head: 2048,
        max_body: 1024,
        ..ServerOptions::default()
    };
    let handler: Handler = Arc::new(|r: &Request<'_>| {
        Response::text(
            200,
            format!("{} {} ?{} {}", r.method, r.path, r.query, r.body.len()),
        )
    });
    let mut reader = Chunked {
        data: Cursor::new(data),
        chunk: usize::from(chunk).max(1),
    };
    let mut incoming = Incoming::default();
    loop {
        match incoming.fill(&mut reader, &options) {
            Ok(Fill::Partial | Fill::Continue) => {}
            Ok(Fill::Complete) => {
                let out = incoming.respond(SocketAddr::from(([127, 0, 0, 1], 1)), &handler);
                assert!(out.starts_with(b"HTTP/1.1 "));
                return;
            }
            Ok(Fill::Reject(status, _)) => {
                assert!((400..600).contains(&status));
                return;
            }
            Ok(Fill::Eof) | Err(_) => return,
        }
    }
});
