//! The domain itself: its ID, checkpoints, randomness and exit.

use abi::{DomainId, StatusCode};

use crate::status::CheckpointError;
use crate::sys;

/// This domain's ID.
pub fn self_id() -> DomainId {
    DomainId::from_le_bytes(sys::self_id())
}

/// This domain's generation: 0 for a domain made by `spawn` or `image new`,
/// N + 1 for a fork of a domain of generation N (console `fork`). It
/// changes under a running app at the moment it is forked, so an app that
/// must act differently as a fork (a new identity of its own, a fresh
/// random seed, telling its peers) compares it with the value it saw last.
pub fn generation() -> u64 {
    sys::generation() as u64
}

/// Commits the domain (memory, globals and where it is suspended) durably.
///
/// Returns once the commit is on disk, so what the app did before the call
/// survives any crash after it. The host also commits by itself every so often;
/// call this where an app must not lose work, e.g. before acknowledging it.
pub fn checkpoint() -> Result<(), CheckpointError> {
    match sys::checkpoint() {
        code if code == StatusCode::Ok.code() => Ok(()),
        code => Err(CheckpointError::from_code(code)),
    }
}

/// Fills `buffer` with random bytes from the host.
pub fn random(buffer: &mut [u8]) {
    sys::random(buffer);
}

/// Ends the domain with exit `code` (the host commits it first).
pub fn exit(code: i32) -> ! {
    sys::exit(code)
}
