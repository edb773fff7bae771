//! The IPC benchmark's host part, release-built (xtask/src/bench/ipc_host.rs).
//!
//! `bench_ipc_host DIRECTORY PING_WASM PONG_WASM BATCHES` prints the records
//! of `cargo xtask bench --only ipc`'s host figures;
//! `bench_ipc_host --pipe-echo BYTES` is the child end of the pipe baseline.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use xtask::bench::ipc_host::{self, PIPE_ECHO_ARGUMENT};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.as_slice() {
        [flag, bytes] if flag == PIPE_ECHO_ARGUMENT => {
            let bytes = bytes
                .parse()
                .with_context(|| format!("{bytes:?} is not a message size"))?;
            ipc_host::pipe_echo(bytes)
        }
        [directory, ping, pong, batches] => {
            let batches = batches
                .parse()
                .with_context(|| format!("{batches:?} is not a number of batches"))?;
            ipc_host::run(
                &PathBuf::from(directory),
                &PathBuf::from(ping),
                &PathBuf::from(pong),
                batches,
            )
        }
        _ => bail!(
            "usage: bench_ipc_host DIRECTORY PING_WASM PONG_WASM BATCHES \
             | bench_ipc_host {PIPE_ECHO_ARGUMENT} BYTES"
        ),
    }
}
