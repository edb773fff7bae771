//! After a reboot or reconnect: who runs the domain, and discarding copies.

use crate::BLOCK_SIZE;
use crate::device::BlockDevice;
use crate::image::Image;
use crate::metadata::{DomainId, Metadata};

use super::error::Error;
use super::record::{MigrationId, Ownership, ownership};
use super::target::take_ownership;
use super::wire::{Verdict, WireMessage};

/// What a parked copy does with the source's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The copy is now the owner (committed): run it per its status.
    Run,
    /// The source kept the domain: discard the copy ([`discard`]).
    Discard,
    /// No decision: stay parked and ask again later.
    StayParked,
}

/// The question a parked copy asks its source (`None` unless parked). The
/// source's name for the transport is in [`ownership`]'s answer.
pub fn query_for(metadata: &Metadata) -> Option<WireMessage<'static>> {
    match ownership(metadata) {
        Ownership::Parked { migration_id, .. } => Some(WireMessage::Query {
            migration_id,
            domain_id: metadata.id,
        }),
        _ => None,
    }
}

/// The source's answer to a query about `migration_id` of `domain_id`,
/// from the metadata of every image it has (a source with a migration in
/// flight asks [`super::Source::answer`] first).
///
/// Handed over only if an image of the domain holds the tombstone of
/// exactly this migration; aborted if an image of the domain exists
/// without it (the source never commits the hand-over except while that
/// migration is in flight, so it never will); unknown if no image of the
/// domain is here at all.
pub fn answer_query<'a>(
    images: impl IntoIterator<Item = &'a Metadata>,
    migration_id: MigrationId,
    domain_id: DomainId,
) -> Verdict {
    let mut verdict = Verdict::Unknown;
    for metadata in images {
        if metadata.id != domain_id {
            continue;
        }
        match ownership(metadata) {
            Ownership::HandedOver {
                migration_id: handed,
                ..
            } if handed == migration_id => return Verdict::HandedOver,
            _ => verdict = Verdict::Aborted,
        }
    }
    verdict
}

/// Applies the source's answer (an [`WireMessage::Answer`] frame) to a parked
/// copy: on hand-over it becomes the owner, durably, before this returns.
pub fn apply_answer<D: BlockDevice>(
    image: &mut Image<D>,
    frame: &[u8],
) -> Result<Resolution, Error> {
    let Ownership::Parked { migration_id, .. } = ownership(image.metadata()) else {
        return Err(Error::Unexpected {
            message: "answer",
            state: "the image is not parked",
        });
    };
    let message = WireMessage::decode(frame)?;
    let WireMessage::Answer {
        migration_id: answered,
        verdict,
    } = message
    else {
        return Err(Error::Unexpected {
            message: message.name(),
            state: "parked, waiting for an answer",
        });
    };
    if answered != migration_id {
        return Err(Error::WrongMigration {
            expected: migration_id,
            found: answered,
        });
    }
    match verdict {
        Verdict::HandedOver => {
            take_ownership(image)?;
            Ok(Resolution::Run)
        }
        Verdict::Aborted => Ok(Resolution::Discard),
        Verdict::Unknown => Ok(Resolution::StayParked),
    }
}

/// Blanks a copy that must not run: an incomplete incoming copy, a parked
/// one the source said it kept, or a tombstone whose target confirmed it
/// runs the domain. An image that owns its domain is refused
/// ([`Error::NotDiscardable`]). Returns the blank device.
///
/// The older superblock slot is zeroed (and flushed) before the newer one:
/// a power cut in between leaves the newest commit, never the older one,
/// which for a tombstone could still be the running domain.
pub fn discard<D: BlockDevice>(image: Image<D>) -> Result<D, Error> {
    if ownership(image.metadata()) == Ownership::Owner {
        return Err(Error::NotDiscardable);
    }
    let newest_slot = image.sequence() % 2;
    let mut device = image.into_device();
    let zero = [0u8; BLOCK_SIZE];
    device.write_block(1 - newest_slot, &zero)?;
    device.flush()?;
    device.write_block(newest_slot, &zero)?;
    device.flush()?;
    Ok(device)
}
