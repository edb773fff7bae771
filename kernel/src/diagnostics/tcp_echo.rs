//! `test=tcp-echo`: a fake domain that listens on [`ECHO_PORT`] through the
//! domains' network ([`crate::net::domain_sockets`]) and echoes what each
//! client sends, polled by the main loop beside the console and the real
//! domains. The QEMU test forwards a host port to it over user networking
//! and floods it with clients.

use alloc::vec::Vec;

use spin::Mutex;
use vm::DomainId;
use vm::net::{ConnectionId, NetError, Network};

use crate::net::domain_sockets::NETWORK;

/// The port the echo listens on.
pub const ECHO_PORT: u16 = 7;

/// The fake domain's ID: no image has it (IDs are random 128-bit numbers).
const ECHO_DOMAIN: DomainId = DomainId(0xec40_ec40_ec40_ec40_ec40_ec40_ec40_ec40);

/// Bytes moved per connection per poll at most.
const CHUNK_BYTES: usize = 2048;

struct Echo {
    /// Each connection with the bytes read but not yet written back.
    connections: Vec<(ConnectionId, Vec<u8>)>,
    accepted: u64,
}

static ECHO: Mutex<Option<Echo>> = Mutex::new(None);

/// Starts listening; says so (the test waits for the line).
pub fn start() {
    match NETWORK.listen(ECHO_DOMAIN, ECHO_PORT) {
        Ok(()) => {
            log::info!("self-test tcp-echo: listening on port {ECHO_PORT}");
            *ECHO.lock() = Some(Echo {
                connections: Vec::new(),
                accepted: 0,
            });
        }
        Err(error) => log::error!("self-test tcp-echo: listening on port {ECHO_PORT}: {error}"),
    }
}

/// Accepts waiting clients and moves bytes; returns whether anything moved.
pub fn poll() -> bool {
    let mut guard = ECHO.lock();
    let Some(echo) = guard.as_mut() else {
        return false;
    };
    let mut is_busy = false;
    loop {
        match NETWORK.accept(ECHO_DOMAIN, ECHO_PORT) {
            Ok(connection) => {
                echo.connections.push((connection, Vec::new()));
                echo.accepted += 1;
                if echo.accepted.is_multiple_of(100) {
                    log::info!("self-test tcp-echo: {} connections accepted", echo.accepted);
                }
                is_busy = true;
            }
            Err(NetError::WouldBlock | NetError::LimitReached) => break,
            Err(error) => {
                log::error!("self-test tcp-echo: accepting: {error}");
                break;
            }
        }
    }
    let mut buffer = [0u8; CHUNK_BYTES];
    echo.connections.retain_mut(|(connection, pending)| {
        if pending.is_empty() {
            match NETWORK.read(*connection, &mut buffer) {
                Ok(0) => {
                    NETWORK.close(*connection);
                    return false;
                }
                Ok(count) => {
                    pending.extend_from_slice(&buffer[..count]);
                    is_busy = true;
                }
                Err(NetError::WouldBlock) => return true,
                Err(_) => {
                    NETWORK.close(*connection);
                    return false;
                }
            }
        }
        match NETWORK.write(*connection, pending) {
            Ok(count) => {
                pending.drain(..count);
                is_busy = true;
                true
            }
            Err(NetError::WouldBlock) => true,
            Err(_) => {
                NETWORK.close(*connection);
                false
            }
        }
    });
    is_busy
}
