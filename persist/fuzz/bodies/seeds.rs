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

/// Seed for the `record` body: the metadata chain bytes of a real image
/// whose record has a trailer (a migration, message counts and an outbox).
pub fn record_seed() -> Vec<u8> {
    let mut image = source_image();
    let metadata = image.metadata_mut();
    metadata.migration = Some(persist::migrate::Migration::Outgoing {
        migration_id: 9,
        target: "fuzz-target".into(),
    });
    metadata.message_counts.sent = vec![(persist::DomainId(3), 2)];
    metadata.message_counts.accepted = vec![(persist::DomainId(3), 1)];
    metadata.outbox = vec![persist::StoredOutboxMessage {
        receiver: persist::DomainId(3),
        sequence: 2,
        bytes: b"hi".to_vec(),
    }];
    metadata.counters.fuel_used = 1_000_000;
    metadata.network = persist::NetworkRecord {
        listen: vec![6379],
        durable_replies: true,
        connections: vec![4, 6],
        nonblocking: vec![3, 6],
    };
    image.commit().expect("the seed record commits");
    let forge = super::forge::Forge::new(image.into_device().into_bytes());
    let slot = forge.newest_slot();
    let (mut block, _) = forge.pointer_at(slot, 48);
    let mut remaining = forge.u64_at(slot, 64) as usize;
    let mut bytes = Vec::new();
    // Each chain block: the next pointer, a payload length, the payload.
    while block != 0 && remaining > 0 {
        let chunk = forge.block(block).expect("the chain is inside the image");
        let len = (u32::from_le_bytes([chunk[16], chunk[17], chunk[18], chunk[19]]) as usize)
            .min(remaining);
        bytes.extend_from_slice(&chunk[24..24 + len]);
        remaining -= len;
        block = forge.pointer_at(block, 0).0;
    }
    bytes
}

/// Seed for the `archive` body: an archive of two apps, one listening.
pub fn archive_seed() -> Vec<u8> {
    let module = [7u8; 5000];
    persist::archive::encode(&[
        persist::archive::NewEntry {
            name: "first",
            module: &module,
            memory_pages: 1,
            memory_max_pages: 2,
            listen: &[6379, 80],
            durable_replies: true,
        },
        persist::archive::NewEntry {
            name: "second",
            module: b"\0asm\x01\0\0\0",
            memory_pages: 0,
            memory_max_pages: 16,
            listen: &[],
            durable_replies: false,
        },
    ])
    .expect("the seed archive encodes")
}

/// Seeds for the `image` (structured) body: a shape, then edits that
/// share a node, fan out, set a counter to its limit and mark blocks used.
pub fn structured_seeds() -> Vec<Vec<u8>> {
    vec![
        vec![3, 2, 0],
        vec![3, 2, 0, 5, 0, 200, 0, 6, 0, 0, 0],
        vec![1, 1, 1, 0, 0, 0, 4],
        vec![3, 2, 0, 1, 1, 0, 1, 6, 0, 0, 0],
        vec![0, 2, 0, 4, 0, 3, 0],
        vec![3, 1, 0, 0, 0, 1, 4, 2, 2, 5, 90],
    ]
}
