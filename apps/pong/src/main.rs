//! pong: sends every message it receives back to its sender, unchanged.
//!
//! The echo of the IPC benchmark (`cargo xtask bench --only ipc`): ping
//! sends, pong answers, ping times the round trip. Pong does nothing else,
//! so a round trip is two deliveries and the two wake-ups around them.

#![forbid(unsafe_code)]

use std::time::Duration;

/// How long to keep trying when the sender's mailbox is full.
const RETRY_PAUSE: Duration = Duration::from_millis(1);

fn main() {
    let mut buffer = vec![0u8; amber::MAX_MESSAGE_BYTES];
    amber::info!("pong ready");
    loop {
        let (len_bytes, from) = match amber::recv(&mut buffer, None) {
            Ok(received) => received,
            Err(error) => {
                amber::warn!("recv failed: {error}");
                continue;
            }
        };
        loop {
            match amber::send_to(from, &buffer[..len_bytes]) {
                Ok(()) => break,
                // Ping empties its mailbox as it goes: wait for room.
                Err(amber::SendError::MailboxFull) => amber::sleep(RETRY_PAUSE),
                Err(error) => {
                    amber::warn!("could not answer {from}: {error}");
                    break;
                }
            }
        }
    }
}
