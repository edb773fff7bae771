//! Messages between domains: `send` to a name or ID, `recv` from the mailbox.
//!
//! A message the host accepted sits in the receiver's persistent mailbox, so it
//! is delivered even if either side reboots in between; and exactly once: a
//! sender that a power cut rolls back sends again under the same message
//! numbers, which the receiver recognises (guest-sdk/README.md).

use std::time::Duration;

use abi::{DomainId, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, StatusCode};

use crate::status::{RecvError, SendError};
use crate::sys;
use crate::time::duration_to_ns;

/// Sends `message` to the domain called `name` (or with that ID in hex).
///
/// Never blocks: a full mailbox is [`SendError::MailboxFull`].
pub fn send(name: &str, message: &[u8]) -> Result<(), SendError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(SendError::InvalidName);
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(SendError::TooLarge);
    }
    match sys::send(name.as_bytes(), message) {
        code if code == StatusCode::Ok.code() => Ok(()),
        code => Err(SendError::from_code(code)),
    }
}

/// Sends `message` to the domain with ID `to`, e.g. to answer a request.
pub fn send_to(to: DomainId, message: &[u8]) -> Result<(), SendError> {
    send(&to.to_string(), message)
}

/// Receives the oldest message into `buffer`: its length and its sender.
///
/// Waits at most `timeout` (`None`: forever; `Some(Duration::ZERO)`: only
/// looks). A safe point: the host may checkpoint the domain while it waits.
pub fn recv(buffer: &mut [u8], timeout: Option<Duration>) -> Result<(usize, DomainId), RecvError> {
    let timeout_ns = timeout.map_or(-1, duration_to_ns);
    let mut from = [0u8; 16];
    let result = sys::recv(buffer, &mut from, timeout_ns);
    match usize::try_from(result) {
        Ok(len_bytes) if len_bytes <= buffer.len() => {
            Ok((len_bytes, DomainId::from_le_bytes(from)))
        }
        // A length past the buffer breaks the ABI; report it rather than
        // let the caller slice out of bounds.
        Ok(_) => Err(RecvError::Unexpected(result)),
        Err(_) => Err(RecvError::from_code(
            result.checked_neg().unwrap_or(i32::MAX),
        )),
    }
}
