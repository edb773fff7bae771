//! tcpping: connects out over TCP once a second and says what answered.
//!
//! It pings 169.254.0.2:6379: redis on machine B of a `cargo xtask run
//! --pair` (or of two linked test machines). Each second it connects,
//! sends a RESP `PING` (redis answers `+PONG`), and logs the first line of
//! the answer, or why there was none. A domain needs no declaration to
//! connect out; only listening is declared.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use amber::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(5);

const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
const PORT: u16 = 6379;

fn main() {
    let (address, port) = (ADDRESS, PORT);
    amber::info!("pinging {address}:{port} every second");
    loop {
        match ping(address, port) {
            Ok(line) => amber::info!("reply {line} from {address}:{port}"),
            Err(why) => amber::warn!("no reply from {address}:{port}: {why}"),
        }
        amber::sleep(Duration::from_secs(1));
    }
}

/// One connection: PING, and the first line of the answer.
fn ping(address: Ipv4Addr, port: u16) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(address, port, TIMEOUT)
        .map_err(|error| format!("connect: {error}"))?;
    stream.set_read_timeout(Some(TIMEOUT));
    stream.set_write_timeout(Some(TIMEOUT));
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n")
        .map_err(|error| format!("write: {error}"))?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 64];
    while !answer.contains(&b'\n') && answer.len() < 256 {
        let read = stream
            .read(&mut buffer)
            .map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let line = answer.split(|&byte| byte == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line).trim_end().to_string();
    if line.is_empty() {
        return Err("the peer closed without answering".into());
    }
    Ok(line)
}
