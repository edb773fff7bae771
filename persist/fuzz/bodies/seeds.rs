//! Seed inputs for the `target` and `source` bodies: a real migration.

use persist::MemoryDevice;
use persist::migrate::{Source, SourceStep, Target, TargetEvent};

use super::frames::record_of;
use super::source::{MIGRATION_ID, source_image};
use super::target::SPARE_BLOCKS;

/// Migrates [`source_image`] into a target lock-step, two rounds and the
/// final one, and returns the inputs that replay it: every frame the
/// target received (for the `target` body) and every reply the source
/// received, each after the number of polls before it (for `source`).
pub fn migration_inputs() -> (Vec<u8>, Vec<u8>) {
    let mut image = source_image();
    let mut target =
        Target::new(MemoryDevice::new(SPARE_BLOCKS), "fuzz-source").expect("a spare disk");
    let mut source = Source::new(&mut image, MIGRATION_ID, "fuzz-target").expect("a source");
    let (mut to_target, mut to_source) = (Vec::new(), Vec::new());
    let (mut message, mut reply) = (Vec::new(), Vec::new());
    let mut polls = 0u8;
    loop {
        // Seven bits of a record's first byte count polls (source.rs).
        polls = polls.saturating_add(1).min(0x7f);
        match source
            .poll(&mut image, &mut message)
            .expect("the source polls")
        {
            SourceStep::Send => {
                record_of(&[], &message, &mut to_target);
                match target
                    .receive(&message, &mut reply)
                    .expect("the target takes it")
                {
                    TargetEvent::Nothing => {}
                    TargetEvent::Reply | TargetEvent::Parked | TargetEvent::Running => {
                        record_of(&[polls], &reply, &mut to_source);
                        polls = 0;
                        source
                            .receive(&mut image, &reply)
                            .expect("the source takes the reply");
                    }
                    TargetEvent::Aborted => panic!("nobody aborted"),
                }
            }
            SourceStep::RoundSent { round, .. } => {
                let next = if round == 0 {
                    source.begin_delta_round(&mut image)
                } else {
                    source.begin_final_round(&mut image)
                };
                next.expect("the next round begins");
            }
            SourceStep::AwaitingReply => panic!("lock-step delivery never waits"),
            SourceStep::Finished => return (to_target, to_source),
            SourceStep::Aborted => panic!("nobody aborted"),
        }
    }
}
