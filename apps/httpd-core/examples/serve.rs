//! Serves a [`Site`] on 127.0.0.1 from the host, one thread per client:
//! `cargo run -p httpd-core --example serve --target x86_64-unknown-linux-gnu -- PORT`,
//! then `curl http://127.0.0.1:PORT/`. What Amber's `httpd` app does inside
//! a domain, with the host's sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use httpd_core::{Connection, Flow, Handler, Request, Response, Site};

/// The shared site, one request at a time.
struct Shared(Arc<Mutex<Site>>);

impl Handler for Shared {
    fn handle(&mut self, request: &Request) -> Response {
        match self.0.lock() {
            Ok(mut site) => site.handle(request),
            Err(_) => Response::empty(500),
        }
    }
}

fn serve(mut stream: TcpStream, mut site: Shared) -> std::io::Result<()> {
    let mut connection = Connection::default();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let count = stream.read(&mut chunk)?;
        if count == 0 {
            return Ok(());
        }
        let mut out = Vec::new();
        let flow = connection.receive(&chunk[..count], &mut site, &mut out);
        stream.write_all(&out)?;
        if flow == Flow::Close {
            return Ok(());
        }
    }
}

fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("httpd-core: serving on http://127.0.0.1:{port}/");
    let site = Arc::new(Mutex::new(Site::new()));
    for stream in listener.incoming() {
        let site = Shared(Arc::clone(&site));
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, site) {
                eprintln!("httpd-core: a client's connection failed: {error}");
            }
        });
    }
    Ok(())
}
