//! `cargo xtask console`: this terminal on a machine's Unix-socket console.
//!
//! `cargo xtask run --pair` puts machine B's serial console on a Unix socket
//! in the user's private directory ([`crate::private::private_dir`]); this
//! command connects to it and copies lines both ways until either side
//! closes (Ctrl-D here, or B powering off). The terminal stays in its usual
//! line mode, so a line is sent when Enter is pressed, which is what the
//! kernel's line editor waits for anyway.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{Context, Result};
use clap::Args;

use crate::private;

/// `console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The console's socket (default: machine B's of `cargo xtask run --pair`).
    pub socket: Option<PathBuf>,
}

/// Where `run --pair` puts machine B's console.
pub fn pair_b_socket() -> Result<PathBuf> {
    Ok(private::private_dir()?.join("pair-b-console.sock"))
}

pub fn run(args: &ConsoleArgs) -> Result<()> {
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => pair_b_socket()?,
    };
    attach(&socket)
}

/// Copies this process's stdin to the console at `socket` and the console
/// to stdout, until the machine closes the socket or stdin ends.
pub fn attach(socket: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the console at {} (is `cargo xtask run --pair` running?)",
            socket.display()
        )
    })?;
    let mut to_machine = stream.try_clone().context("cloning the console socket")?;
    eprintln!(
        "console {}: Ctrl-D leaves (the machine runs on)",
        socket.display()
    );
    // Keyboard to machine on its own thread; it ends with stdin, and then
    // shuts the socket so the copy below ends too.
    thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(count) => {
                    if to_machine.write_all(&buffer[..count]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_machine.shutdown(std::net::Shutdown::Both);
    });
    let mut from_machine = stream;
    let mut stdout = std::io::stdout();
    let mut buffer = [0u8; 4096];
    loop {
        match from_machine.read(&mut buffer) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(count) => {
                stdout
                    .write_all(&buffer[..count])
                    .and_then(|()| stdout.flush())
                    .context("writing the console to stdout")?;
            }
        }
    }
}
