//! The admin listener: a small HTTP/1.1 server on its own thread, for status
//! pages and runtime commands.
//!
//! `server` owns the socket, the `admin` thread and the HTTP framing, and
//! knows nothing about what it serves: it hands each complete request to a
//! [`Handler`] and writes back the [`Response`]. What the routes read or
//! change (the registry, control flags) is the handler's business.

pub mod server;

pub use server::{AdminError, AdminServer, Handler, Request, Response, ServerOptions};
