//! An HTTP/1.1 server's core: bounded request parsing, keep-alive, a site.
//!
//! Plain Rust without I/O: [`Connection`] turns the bytes a client sent
//! into the bytes to send back, through any [`Handler`]; [`Site`] is the
//! one Amber's `httpd` app serves (a page with a visit counter and a small
//! JSON API over notes). Nothing here persists anything: on Amber the
//! site's fields live in the domain's persistent memory. Its tests run on
//! the host (`cargo test -p httpd-core --target x86_64-unknown-linux-gnu`).

#![forbid(unsafe_code)]

mod connection;
pub mod http;
mod site;

pub use connection::{Connection, Flow, Handler};
pub use http::{HttpError, Limits, Request, Response, parse_request};
pub use site::{Note, Site};
