//! ping: times message round trips to pong and logs them for the benchmark.
//!
//! The timing side of the IPC benchmark (`cargo xtask bench --only ipc`,
//! xtask/src/bench_ipc.rs). Ping sends a message of [`MESSAGE_BYTES`] to
//! the domain named `pong`, waits for it to come back, checks it, and
//! times batches of [`ROUND_TRIPS_PER_BATCH`] round trips on the domain's
//! clock (`amber.now`). After a few warm-up round trips it runs batches
//! forever and logs one line per batch, with the batch's time:
//!
//! ```text
//! bench-result ipc batch=1 round-trips=5000 message-bytes=64 total-ns=N
//! ```
//!
//! Ping does not time its `send` apart: the scheduler runs pong before
//! ping's `send` returns, so that time would be most of the round trip.
//! Its `recv` never has to wait (the echo is there when pong's `send`
//! returns): the vm still commits it, as every receiver, once its sender
//! keeps half an outbox of messages for it (vm `outbox.rs`), so those
//! commits are part of the measured round trip.
//!
//! The benchmark reads as many batches as it wants and then stops the
//! machine; it takes the batch size and message size from the line, so
//! its Linux pipe baseline does the same work.

#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

/// The domain that echoes.
const PEER: &str = "pong";

/// The size of every message, both ways (the pipe baseline uses the same).
const MESSAGE_BYTES: usize = 64;

/// Round trips per logged batch: enough that every batch holds the
/// commits the vm asks for every 2,048 messages, so that a batch's time
/// per round trip includes its share of them.
const ROUND_TRIPS_PER_BATCH: usize = 5000;

/// Round trips before the first batch: the first messages page in code
/// and data, on both sides.
const WARM_UP_ROUND_TRIPS: usize = 10;

/// How long to wait for pong's answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often to try reaching pong (it may start after ping), and the pause
/// between tries.
const SEND_ATTEMPTS: u32 = 3000;
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(10);

fn main() {
    if let Err(error) = run() {
        amber::error!("ping failed: {error}");
        amber::exit(1);
    }
}

fn run() -> Result<(), PingError> {
    let mut pinger = Pinger {
        message: [0u8; MESSAGE_BYTES],
        reply: [0u8; MESSAGE_BYTES],
        sequence: 0,
    };
    for _ in 0..WARM_UP_ROUND_TRIPS {
        pinger.round_trip()?;
    }
    let mut batch: u64 = 0;
    loop {
        batch += 1;
        let began_ns = amber::now_ns();
        for _ in 0..ROUND_TRIPS_PER_BATCH {
            pinger.round_trip()?;
        }
        let total_ns = amber::now_ns().saturating_sub(began_ns);
        amber::info!(
            "bench-result ipc batch={batch} round-trips={ROUND_TRIPS_PER_BATCH} \
             message-bytes={MESSAGE_BYTES} total-ns={total_ns}"
        );
    }
}

struct Pinger {
    message: [u8; MESSAGE_BYTES],
    reply: [u8; MESSAGE_BYTES],
    /// Numbers the messages, so a stale or wrong echo is caught.
    sequence: u64,
}

impl Pinger {
    /// Sends the next message to pong and waits for it to come back.
    fn round_trip(&mut self) -> Result<(), PingError> {
        self.sequence += 1;
        self.message[..8].copy_from_slice(&self.sequence.to_le_bytes());
        for (index, byte) in self.message[8..].iter_mut().enumerate() {
            *byte = (self.sequence as u8).wrapping_add(index as u8);
        }
        self.send()?;
        let (len_bytes, _from) =
            amber::recv(&mut self.reply, Some(REPLY_TIMEOUT)).map_err(PingError::Receive)?;
        if self.reply[..len_bytes] != self.message {
            return Err(PingError::WrongEcho {
                sequence: self.sequence,
            });
        }
        Ok(())
    }

    /// Sends the current message, waiting for pong to exist.
    fn send(&self) -> Result<(), PingError> {
        let mut attempt = 1;
        loop {
            match amber::send(PEER, &self.message) {
                Ok(()) => return Ok(()),
                Err(amber::SendError::NoSuchDomain | amber::SendError::MailboxFull)
                    if attempt < SEND_ATTEMPTS =>
                {
                    attempt += 1;
                    amber::sleep(SEND_RETRY_PAUSE);
                }
                Err(error) => return Err(PingError::Send(error)),
            }
        }
    }
}

#[derive(Debug)]
enum PingError {
    Send(amber::SendError),
    Receive(amber::RecvError),
    WrongEcho { sequence: u64 },
}

impl fmt::Display for PingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(error) => write!(formatter, "sending to {PEER}: {error}"),
            Self::Receive(error) => write!(formatter, "waiting for {PEER}'s echo: {error}"),
            Self::WrongEcho { sequence } => {
                write!(
                    formatter,
                    "{PEER} echoed something else than message {sequence}"
                )
            }
        }
    }
}
