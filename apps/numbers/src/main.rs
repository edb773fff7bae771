//! numbers: sends 1, 2, 3, ... to another domain (`tally`), one a message.
//!
//! It pauses [`PAUSE`] after each send and commits after every
//! [`CHECKPOINT_EVERY`]th, at its own pace (tally commits at another). The
//! next number is a local of this loop: after a power cut the vm resumes
//! the loop from the last commit, which may be behind what the receiver
//! already accepted, so numbers are sent again, and the host's message
//! numbering drops them; or the receiver's last commit may be behind it,
//! and the host delivers again what numbers' committed outbox still holds.
//! Either way tally sees each number exactly once
//! (tests/tests/message_power_cut.rs).

#![forbid(unsafe_code)]

use std::time::Duration;

use amber::SendError;

/// Who receives the numbers.
const RECEIVER: &str = "tally";

/// The pause after each send: a safe point where the kernel commits.
const PAUSE: Duration = Duration::from_millis(10);

/// Numbers sent between two commits of its own.
const CHECKPOINT_EVERY: u64 = 7;

fn main() {
    let mut next: u64 = 1;
    loop {
        match amber::send(RECEIVER, &next.to_le_bytes()) {
            Ok(()) => {
                if next.is_multiple_of(100) {
                    amber::info!("sent {next}");
                }
                next += 1;
                if next.is_multiple_of(CHECKPOINT_EVERY)
                    && let Err(error) = amber::checkpoint()
                {
                    amber::warn!("checkpoint: {error}");
                }
            }
            // The receiver is busy or not up yet: try again shortly.
            Err(SendError::MailboxFull | SendError::NoSuchDomain) => {
                amber::sleep(Duration::from_millis(50));
            }
            Err(error) => {
                amber::error!("sending {next} to {RECEIVER}: {error}");
                amber::exit(1);
            }
        }
        amber::sleep(PAUSE);
    }
}
