//! Plain std Rust serving HTTP through WASI: std::net on the host's fd 3.
//!
//! No guest-sdk: an ordinary `wasm32-wasip1` program. The host opens the
//! image's declared listener for it as fd 3 (as wasmtime's `--tcplisten`
//! does) and sets `LISTEN_FDS`; std's `TcpListener` accepts on it
//! (`sock_accept`) and its streams read and write with `fd_read` and
//! `fd_write`. Clients are served one at a time, each within a deadline,
//! so one that stalls cannot hold the server for long. The visit counter
//! is a local in `main`: the domain's commits keep it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The fd of the first declared listener (`abi::FIRST_LISTENER_FD`).
const LISTENER_FD: i32 = 3;

/// The most bytes of a request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// How long one client may take to send its request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// How long to wait between reads of a client with nothing to read yet.
const READ_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Why a client got no answer.
#[derive(Debug)]
enum ClientError {
    Io(std::io::Error),
    TooSlow,
    HeadTooLong,
    EndedEarly,
}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> ClientError {
        ClientError::Io(error)
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(formatter, "{error}"),
            Self::TooSlow => write!(formatter, "no request within {REQUEST_DEADLINE:?}"),
            Self::HeadTooLong => write!(formatter, "a request head over {MAX_HEAD_BYTES} bytes"),
            Self::EndedEarly => formatter.write_str("the stream ended before the request"),
        }
    }
}

/// The host's listener, if it says it handed one over.
fn listener() -> Option<TcpListener> {
    let count: u32 = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    if count == 0 {
        return None;
    }
    adopt_listener()
}

#[cfg(target_os = "wasi")]
fn adopt_listener() -> Option<TcpListener> {
    use std::os::fd::FromRawFd;

    #[expect(
        unsafe_code,
        reason = "std has no safe way to adopt an fd the host preopened"
    )]
    // SAFETY: LISTEN_FDS says the host opened a listener at fd 3 for this
    // program, and nothing else in it opens, uses or closes fd 3, so the
    // TcpListener owns it alone.
    let listener = unsafe { TcpListener::from_raw_fd(LISTENER_FD) };
    Some(listener)
}

/// Off WASI (the apps workspace's lint build for wasm32-unknown-unknown)
/// there are no preopened fds.
#[cfg(not(target_os = "wasi"))]
fn adopt_listener() -> Option<TcpListener> {
    None
}

/// Reads the request head (up to the blank line), within the deadline.
fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, ClientError> {
    stream.set_nonblocking(true)?;
    let started = Instant::now();
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return Err(ClientError::HeadTooLong);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ClientError::EndedEarly),
            Ok(count) => head.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if started.elapsed() > REQUEST_DEADLINE {
                    return Err(ClientError::TooSlow);
                }
                std::thread::sleep(READ_POLL_INTERVAL);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(head)
}

/// Writes all of `bytes` to a nonblocking stream, within the deadline.
fn write_all(stream: &mut TcpStream, mut bytes: &[u8]) -> Result<(), ClientError> {
    let started = Instant::now();
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ClientError::EndedEarly),
            Ok(count) => bytes = &bytes[count..],
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if started.elapsed() > REQUEST_DEADLINE {
                    return Err(ClientError::TooSlow);
                }
                std::thread::sleep(READ_POLL_INTERVAL);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// The reply to a request head: the greeting with `visits`, or 404.
fn reply(head: &[u8], visits: u64) -> (Vec<u8>, bool) {
    let is_root = head.starts_with(b"GET / ") || head.starts_with(b"HEAD / ");
    let (status, body) = if is_root {
        (
            "200 OK",
            format!("Hello from plain std Rust on Amber! Visit number {visits}.\n"),
        )
    } else {
        ("404 Not Found", "not found\n".to_owned())
    };
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head.starts_with(b"HEAD ") {
        bytes.extend_from_slice(body.as_bytes());
    }
    (bytes, is_root)
}

fn serve(stream: &mut TcpStream, visits: &mut u64) -> Result<(), ClientError> {
    let head = read_head(stream)?;
    let (bytes, is_visit) = reply(&head, *visits + 1);
    if is_visit {
        *visits += 1;
    }
    write_all(stream, &bytes)?;
    // The reply is whole; a peer that is gone already makes this fail.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let Some(listener) = listener() else {
        eprintln!("webstd: no listener (LISTEN_FDS unset or 0): declare a port in the image");
        return std::process::ExitCode::FAILURE;
    };
    println!("webstd ready on fd {LISTENER_FD}");
    let mut visits: u64 = 0;
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if let Err(error) = serve(&mut stream, &mut visits) {
                    eprintln!("webstd: a client got no answer: {error}");
                }
            }
            Err(error) => {
                eprintln!("webstd: accept failed: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
}
