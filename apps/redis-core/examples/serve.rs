//! Serves a [`Store`] on 127.0.0.1 from the host, one thread per client:
//! `cargo run -p redis-core --example serve --target x86_64-unknown-linux-gnu -- PORT`,
//! then `redis-cli -p PORT`. What Amber's `redis` app does inside a
//! domain, with the host's sockets; for trying the command set with real
//! clients.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use redis_core::{Limits, Reply, Store, parse_command};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn serve(mut stream: TcpStream, store: &Mutex<Store>) -> std::io::Result<()> {
    let limits = Limits::default();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let count = stream.read(&mut chunk)?;
        if count == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..count]);
        let mut out = Vec::new();
        let mut used = 0;
        let mut close = false;
        while !close {
            match parse_command(&buffer[used..], &limits) {
                Ok(None) => break,
                Ok(Some((command, taken))) => {
                    used += taken;
                    if command.is_empty() {
                        continue;
                    }
                    let outcome = match store.lock() {
                        Ok(mut store) => store.execute(&command, now_ms()),
                        Err(_) => return Ok(()),
                    };
                    outcome.reply.encode(&mut out);
                    close = outcome.close;
                }
                Err(error) => {
                    Reply::error(format!("Protocol error: {error}")).encode(&mut out);
                    close = true;
                }
            }
        }
        buffer.drain(..used);
        stream.write_all(&out)?;
        if close {
            return Ok(());
        }
    }
}

fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "6390".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("redis-core: serving on 127.0.0.1:{port}");
    let store = Arc::new(Mutex::new(Store::default()));
    for stream in listener.incoming() {
        let stream = stream?;
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            if let Err(error) = serve(stream, &store) {
                eprintln!("redis-core: a client's connection failed: {error}");
            }
        });
    }
    Ok(())
}
