//! Domains' TCP from the host: the kernel's `test=tcp-echo` fake domain
//! listens on port 7 through the domains' network (kernel/src/net/
//! domain_sockets.rs), QEMU user networking forwards a free port of
//! 127.0.0.1 to it, and the test talks to it with std's TcpStream: a line
//! and a larger stream come back, then 1,000 clients at once must neither
//! exhaust the kernel's heap nor stop it answering the console and a fresh
//! client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::{flood, forwarded_machine};

/// The port the echo listens on in the guest (kernel diagnostics::tcp_echo).
const ECHO_PORT: u16 = 7;

/// Clients opened at once.
const FLOOD_CLIENTS: usize = 1000;

/// How long one echo may take on a loaded host under TCG.
const ECHO_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens a connection and has `payload` echoed; an error when it is not
/// (slirp takes every host connection and resets it when the guest does).
fn echo(address: SocketAddr, payload: &[u8]) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, ECHO_TIMEOUT)?;
    stream.set_read_timeout(Some(ECHO_TIMEOUT))?;
    stream.set_write_timeout(Some(ECHO_TIMEOUT))?;
    let writer = {
        let mut stream = stream.try_clone()?;
        let payload = payload.to_vec();
        std::thread::spawn(move || stream.write_all(&payload))
    };
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).context("reading the echo")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?
        .context("writing")?;
    if echoed != payload {
        bail!("the echo differs from what was sent");
    }
    Ok(())
}

/// `echo`, retried until `deadline` (the guest may still be busy with
/// earlier clients).
fn echo_until(address: SocketAddr, payload: &[u8], deadline: Instant) -> Result<()> {
    loop {
        match echo(address, payload) {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn the_host_reaches_a_listener_through_a_forward_and_a_flood_of_clients_leaves_it_serving()
-> Result<()> {
    let (mut machine, forwards) = forwarded_machine("test=tcp-echo", &[ECHO_PORT])?;
    if !machine
        .transcript()
        .contains("self-test tcp-echo: listening on port 7")
    {
        return Err(machine.failure("the echo did not start listening"));
    }
    let address = SocketAddr::from(([127, 0, 0, 1], forwards[0].host_port));

    let deadline = Instant::now() + Duration::from_secs(60);
    echo_until(address, b"hello, amber\n", deadline)
        .map_err(|error| machine.failure(&format!("echoing a line: {error:#}")))?;
    let stream: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
    echo(address, &stream)
        .map_err(|error| machine.failure(&format!("echoing 100 kB: {error:#}")))?;

    let flood_started = Instant::now();
    let mut clients = flood(address, FLOOD_CLIENTS);
    for client in &mut clients {
        let _ = client.write_all(b"x");
    }
    let opened = clients.len();
    // Some of them were served: the ones the echo holds answer.
    let mut answered = 0;
    for client in clients.iter_mut().take(8) {
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut byte = [0u8; 1];
        if client.read_exact(&mut byte).is_ok() && byte == *b"x" {
            answered += 1;
        }
    }
    eprintln!(
        "{opened} of {FLOOD_CLIENTS} clients opened in {:?}, {answered} of the first 8 answered",
        flood_started.elapsed()
    );
    // The console answers while they are open.
    let memory = machine.run_command("mem")?;
    if memory.is_empty() {
        return Err(machine.failure("`mem` printed nothing during the flood"));
    }
    drop(clients);

    let deadline = Instant::now() + Duration::from_secs(120);
    echo_until(address, b"still here\n", deadline)
        .map_err(|error| machine.failure(&format!("echoing after the flood: {error:#}")))?;
    let transcript = machine.transcript();
    if transcript.contains("out of memory") || transcript.contains("PANIC") {
        return Err(machine.failure("the kernel ran out of heap"));
    }
    let _ = machine.run_command("mem")?;
    Ok(())
}
