//! `nettest`: raw TCP throughput between two Amber machines.
//!
//! One side listens, the other connects and sends a number of MiB, then
//! closes. Both print what they moved and how fast: the baseline a migration
//! over the same link is measured against. Each runs in the foreground,
//! polling the network itself without sleeping, so the numbers are the
//! stack's and not the main loop's tick; domains wait meanwhile. Every wait
//! has a deadline.
//!
//! The bytes follow a pattern (byte i is i mod 251, a prime, so no power-of-
//! two chunking hides a lost or repeated segment) that the receiver checks.

use alloc::vec::Vec;

use smoltcp::wire::Ipv4Address;

use crate::arch::timer;
use crate::net::{self, NetError, TcpConnection, TcpState};
use crate::println;

const MIB: u64 = 1024 * 1024;

/// The most a `nettest send` may move.
pub const MAX_MIB: u64 = 1024;

/// How long the listener waits for a connection, and the sender for its
/// connection to be accepted.
const CONNECT_TIMEOUT_NS: u64 = 60_000_000_000;

/// How long a transfer may go without progress before it is abandoned.
const STALL_TIMEOUT_NS: u64 = 20_000_000_000;

/// The pattern's period.
const PATTERN_PERIOD: usize = 251;

/// Bytes handed to the socket per call: a whole number of periods, so the
/// pattern buffer can be sliced at any phase.
const CHUNK_BYTES: usize = PATTERN_PERIOD * 64;

/// Why a `nettest` run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetTestError {
    Net(NetError),
    /// Nobody connected, or the connection was not accepted, in time.
    NoConnection,
    /// The peer refused or reset the connection.
    Reset,
    /// No progress for STALL_TIMEOUT_NS.
    Stalled {
        bytes: u64,
    },
    /// A received byte did not follow the pattern.
    Corrupted {
        offset: u64,
    },
}

impl core::fmt::Display for NetTestError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetTestError::Net(error) => write!(formatter, "{error}"),
            NetTestError::NoConnection => write!(
                formatter,
                "no connection within {} s",
                CONNECT_TIMEOUT_NS / 1_000_000_000
            ),
            NetTestError::Reset => write!(formatter, "the connection was refused or reset"),
            NetTestError::Stalled { bytes } => write!(
                formatter,
                "no progress for {} s after {bytes} bytes",
                STALL_TIMEOUT_NS / 1_000_000_000
            ),
            NetTestError::Corrupted { offset } => {
                write!(formatter, "byte {offset} does not follow the pattern")
            }
        }
    }
}

impl From<NetError> for NetTestError {
    fn from(error: NetError) -> NetTestError {
        NetTestError::Net(error)
    }
}

/// What one side moved, and in how long (from the connection being
/// established to the last byte acknowledged or the peer's close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed_ns: u64,
}

impl Transfer {
    /// `N MiB in X ms (Y MiB/s)`, N with two decimals unless whole.
    pub fn summary(&self) -> alloc::string::String {
        let elapsed_ms = self.elapsed_ns / 1_000_000;
        let hundredths_per_s = (u128::from(self.bytes) * 100 * 1_000_000_000)
            / (u128::from(self.elapsed_ns.max(1)) * u128::from(MIB));
        let size = if self.bytes.is_multiple_of(MIB) {
            alloc::format!("{}", self.bytes / MIB)
        } else {
            let hundredths = self.bytes * 100 / MIB;
            alloc::format!("{}.{:02}", hundredths / 100, hundredths % 100)
        };
        alloc::format!(
            "{size} MiB in {elapsed_ms} ms ({}.{:02} MiB/s)",
            hundredths_per_s / 100,
            hundredths_per_s % 100
        )
    }
}

/// Polls the network until `connection` is established.
fn wait_established(connection: &TcpConnection) -> Result<(), NetTestError> {
    let deadline_ns = timer::uptime_ns() + CONNECT_TIMEOUT_NS;
    let mut has_started = false;
    loop {
        net::poll();
        match connection.state() {
            TcpState::Established => return Ok(()),
            TcpState::Listen => {}
            TcpState::SynSent | TcpState::SynReceived => has_started = true,
            // A refused connect (RST) or a reset handshake falls back here.
            TcpState::Closed if has_started => return Err(NetTestError::Reset),
            _ => {}
        }
        if timer::uptime_ns() > deadline_ns {
            return Err(NetTestError::NoConnection);
        }
        core::hint::spin_loop();
    }
}

/// `nettest listen PORT`: accepts one connection, reads until the peer
/// closes, and checks the pattern.
pub fn listen(port: u16) -> Result<Transfer, NetTestError> {
    let connection = TcpConnection::listen(port)?;
    println!("nettest: listening on port {port}");
    wait_established(&connection)?;
    if let Some(remote) = connection.remote() {
        println!("nettest: connection from {remote}");
    }
    let start_ns = timer::uptime_ns();
    let mut last_progress_ns = start_ns;
    let mut buffer = alloc::vec![0u8; CHUNK_BYTES];
    let mut bytes: u64 = 0;
    loop {
        net::poll();
        let count = match connection.receive(&mut buffer) {
            Ok(count) => count,
            Err(NetError::Finished) => break,
            Err(error) => return Err(error.into()),
        };
        let now_ns = timer::uptime_ns();
        if count > 0 {
            check_pattern(bytes, &buffer[..count])?;
            bytes += count as u64;
            last_progress_ns = now_ns;
        } else if connection.state() == TcpState::Closed {
            return Err(NetTestError::Reset);
        } else if now_ns - last_progress_ns > STALL_TIMEOUT_NS {
            return Err(NetTestError::Stalled { bytes });
        }
    }
    let elapsed_ns = timer::uptime_ns() - start_ns;
    connection.close();
    Ok(Transfer { bytes, elapsed_ns })
}

/// `nettest send IP PORT MIB`: connects, sends `mib` MiB of the pattern and
/// waits until the peer has acknowledged all of it.
pub fn send(address: Ipv4Address, port: u16, mib: u64) -> Result<Transfer, NetTestError> {
    let connection = TcpConnection::connect(address, port)?;
    wait_established(&connection)?;
    let total = mib * MIB;
    // Two chunks of pattern, so any phase has a whole chunk after it.
    let pattern: Vec<u8> = (0..2 * CHUNK_BYTES)
        .map(|index| (index % PATTERN_PERIOD) as u8)
        .collect();
    let start_ns = timer::uptime_ns();
    let mut last_progress_ns = start_ns;
    let mut bytes: u64 = 0;
    let mut last_unacknowledged = usize::MAX;
    loop {
        net::poll();
        let now_ns = timer::uptime_ns();
        if bytes < total {
            let phase = (bytes % PATTERN_PERIOD as u64) as usize;
            let length = (total - bytes).min(CHUNK_BYTES as u64) as usize;
            let count = connection.send(&pattern[phase..phase + length])?;
            if count > 0 {
                bytes += count as u64;
                last_progress_ns = now_ns;
                continue;
            }
        } else {
            let unacknowledged = connection.unacknowledged_bytes();
            if unacknowledged == 0 {
                break;
            }
            if unacknowledged < last_unacknowledged {
                last_unacknowledged = unacknowledged;
                last_progress_ns = now_ns;
            }
        }
        if connection.state() == TcpState::Closed {
            return Err(NetTestError::Reset);
        }
        if now_ns - last_progress_ns > STALL_TIMEOUT_NS {
            return Err(NetTestError::Stalled { bytes });
        }
    }
    let elapsed_ns = timer::uptime_ns() - start_ns;
    // Dropping the connection sends the FIN that ends the listener's count.
    connection.close();
    Ok(Transfer { bytes, elapsed_ns })
}

/// Checks that `bytes`, starting at stream offset `offset`, follow the pattern.
fn check_pattern(offset: u64, bytes: &[u8]) -> Result<(), NetTestError> {
    let mut expected = (offset % PATTERN_PERIOD as u64) as usize;
    for (index, &byte) in bytes.iter().enumerate() {
        if usize::from(byte) != expected {
            return Err(NetTestError::Corrupted {
                offset: offset + index as u64,
            });
        }
        expected += 1;
        if expected == PATTERN_PERIOD {
            expected = 0;
        }
    }
    Ok(())
}
