//! tally: receives numbers from `numbers` and checks they come once, in order.
//!
//! Every message must hold the number after the last one (they come from
//! one sender through a first-in first-out mailbox), so a lost message shows
//! as a gap and a repeated one as a step back; either is printed as
//! `out of order: expected N, got M`. Every hundredth number prints
//! `N in order`. `expected` is a local of this loop, committed with the
//! mailbox it was computed from.

#![forbid(unsafe_code)]

/// Numbers received between two commits of its own (numbers commits every
/// 7th: the two fall out of step, so power cuts find either one ahead).
const CHECKPOINT_EVERY: u64 = 11;

fn main() {
    let mut buffer = [0u8; 64];
    let mut expected: u64 = 1;
    loop {
        let length = match amber::recv(&mut buffer, None) {
            Ok((length, _from)) => length,
            Err(error) => {
                amber::error!("receiving: {error}");
                amber::exit(1);
            }
        };
        let Ok(bytes) = <[u8; 8]>::try_from(&buffer[..length]) else {
            amber::error!("a message of {length} bytes is not a number");
            continue;
        };
        let number = u64::from_le_bytes(bytes);
        if number != expected {
            amber::error!("out of order: expected {expected}, got {number}");
        }
        if number.is_multiple_of(100) {
            amber::info!("{number} in order");
        }
        expected = number + 1;
        if number.is_multiple_of(CHECKPOINT_EVERY)
            && let Err(error) = amber::checkpoint()
        {
            amber::warn!("checkpoint: {error}");
        }
    }
}
