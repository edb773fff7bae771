//! Fuzz body: frames fed to a migration target over a memory spare disk.

use persist::MemoryDevice;
use persist::migrate::{Target, TargetEvent, refusal};

use super::frames::{Ending, records, repaired};

/// Blocks of the spare disk: room for a small domain's copy.
pub const SPARE_BLOCKS: u64 = 256;

/// Feeds every frame of `data` (see [`super::frames`]) to a target, the way
/// the kernel's incoming side does: an error refuses and discards the
/// copy, a hand-over is taken and its image verified. Nothing may panic.
pub fn target(data: &[u8]) -> Ending {
    let Ok(mut target) = Target::new(MemoryDevice::new(SPARE_BLOCKS), "fuzz-source") else {
        return Ending::Refused;
    };
    let mut reply = Vec::new();
    for record in records(data) {
        match target.receive(&repaired(record), &mut reply) {
            Ok(TargetEvent::Nothing | TargetEvent::Reply | TargetEvent::Parked) => {}
            Ok(TargetEvent::Running) => {
                if let Some(mut image) = target.into_image() {
                    let _ = image.verify();
                    let _ = image.module();
                }
                return Ending::Completed;
            }
            Ok(TargetEvent::Aborted) => {
                let _ = target.discard();
                return Ending::Aborted;
            }
            Err(error) => {
                let _ = refusal(&error, &mut reply);
                let _ = target.discard();
                return Ending::Refused;
            }
        }
    }
    Ending::OutOfInput
}
