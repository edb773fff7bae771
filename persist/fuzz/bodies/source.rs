//! Fuzz body: replies fed to a migration source of a small valid image.

use persist::migrate::{Source, SourceStep};
use persist::{Image, MemoryDevice, NewDomain, PAGE_SIZE};

use super::frames::{Ending, records, repaired};

/// Blocks of the source's disk.
pub const SOURCE_BLOCKS: u64 = 64;

/// The migration the source runs.
pub const MIGRATION_ID: u128 = 0xf0f0;

/// The source's image: a module, two pages and a mailbox message.
pub fn source_image() -> Image<MemoryDevice> {
    let mut image = Image::create(
        MemoryDevice::new(SOURCE_BLOCKS),
        NewDomain {
            id: persist::DomainId(0x5eed),
            name: "fuzzed",
            module: b"\0asm\x01\0\0\0",
            memory_pages: 1,
            memory_max_pages: 1,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .expect("the seed image fits its disk");
    for (page_index, byte) in [(0, 1u8), (5, 2)] {
        image
            .stage_page(page_index, &[byte; PAGE_SIZE])
            .expect("the seed pages fit");
    }
    image.metadata_mut().mailbox.push(persist::StoredMessage {
        sender: persist::DomainId(3),
        bytes: b"hello".to_vec(),
    });
    image.commit().expect("the seed image commits");
    image
}

/// Runs a source over [`source_image`], the way the kernel's outgoing side
/// does, taking each frame of `data` (see [`super::frames`]) as the
/// target's next reply. Each record's first byte says how many times the
/// source is polled before it reads that reply (its low seven bits) and
/// whether a parked target's query about the migration follows the reply
/// (its top bit). A failure aborts. Nothing may panic.
pub fn source(data: &[u8]) -> Ending {
    let mut image = source_image();
    let Ok(mut source) = Source::new(&mut image, MIGRATION_ID, "fuzz-target") else {
        return Ending::Refused;
    };
    let mut message = Vec::new();
    for record in records(data) {
        let (control, reply) = record.split_first().unwrap_or((&0, &[]));
        for _ in 0..control & 0x7f {
            match source.poll(&mut image, &mut message) {
                Ok(SourceStep::Send) => {}
                Ok(SourceStep::RoundSent { round, .. }) => {
                    let next = if round == 0 {
                        source.begin_delta_round(&mut image)
                    } else {
                        source.begin_final_round(&mut image)
                    };
                    if next.is_err() {
                        let _ = source.abort(&mut message);
                        return Ending::Refused;
                    }
                }
                Ok(SourceStep::AwaitingReply) => break,
                Ok(SourceStep::Finished) => return Ending::Completed,
                Ok(SourceStep::Aborted) => return Ending::Aborted,
                Err(_) => {
                    let _ = source.abort(&mut message);
                    return Ending::Refused;
                }
            }
        }
        if source.receive(&mut image, &repaired(reply)).is_err() {
            let _ = source.abort(&mut message);
            return Ending::Refused;
        }
        if control & 0x80 != 0 {
            let _ = source.answer(MIGRATION_ID);
        }
    }
    // The last reply may have finished it.
    match source.poll(&mut image, &mut message) {
        Ok(SourceStep::Finished) => Ending::Completed,
        _ => Ending::OutOfInput,
    }
}
