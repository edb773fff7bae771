//! An HTTP/1.1 server on port 8080: httpd-core's site over `amber::net`.
//!
//! One thread serves every client through `amber::net::serve` (a `poll`
//! loop), with keep-alive and pipelining. The site's visit counter and
//! notes are plain fields in the domain's linear memory, persistent with
//! no code for it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use amber::net::{Flow, ServerLimits, Service, TcpListener, serve};
use httpd_core::{Connection, Limits, Site};

/// The port the image declares (Cargo.toml, `[package.metadata.amber]`).
const PORT: u16 = 8080;

#[derive(Debug)]
struct Httpd {
    site: Site,
}

impl Service for Httpd {
    type Session = Connection;

    fn open(&mut self) -> Connection {
        Connection::new(Limits::default())
    }

    fn receive(&mut self, connection: &mut Connection, bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        match connection.receive(bytes, &mut self.site, out) {
            httpd_core::Flow::KeepOpen => Flow::KeepOpen,
            httpd_core::Flow::Close => Flow::Close,
        }
    }
}

fn main() -> ExitCode {
    let listener = match TcpListener::bind(PORT) {
        Ok(listener) => listener,
        Err(error) => {
            amber::error!("httpd: cannot listen on port {PORT}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut httpd = Httpd { site: Site::new() };
    amber::info!("httpd ready on port {PORT}");
    match serve(&listener, &mut httpd, ServerLimits::default()) {
        Ok(never) => match never {},
        Err(error) => {
            amber::error!("httpd: serving port {PORT} failed: {error}");
            ExitCode::FAILURE
        }
    }
}
