//! Migration records in image metadata, and who owns a domain after a crash.
//!
//! The record travels in the metadata chain as a *trailer* after the
//! postcard-encoded metadata record, present only while a migration concerns
//! the image. Images without one are byte for byte what format version 1
//! always wrote, so every existing image stays readable; and code that knows
//! nothing of trailers (postcard ignores trailing bytes) still reads an image
//! that has one, where it finds the status [`StoredStatus::MovedAway`] and so never
//! runs a parked or handed-over copy.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::metadata::{Metadata, MetadataRecord, StoredStatus};

/// A migration's identity: chosen at random by the source, carried by every
/// record and by the messages that decide ownership.
pub type MigrationId = u128;

/// The longest peer name a record holds, in bytes.
pub const MAX_PEER_NAME_LEN: usize = 255;

/// How far an incoming copy got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncomingPhase {
    /// Still receiving: the copy is consistent but not the whole domain.
    Copying,
    /// The whole final state is durable here; parked until the source says
    /// it has given the domain up.
    Complete,
}

/// What a migration has made of this image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Migration {
    /// A copy arriving from `source` (the target's spare disk).
    Incoming {
        /// The migration.
        migration_id: MigrationId,
        /// The machine the domain comes from, as the transport names it.
        source: String,
        /// How far the copy got.
        phase: IncomingPhase,
        /// The status the domain had on the source, taken on at hand-over.
        resume_status: StoredStatus,
    },
    /// The domain was given to `target`: this copy is a tombstone that
    /// answers the target's questions and is never run again.
    Outgoing {
        /// The migration.
        migration_id: MigrationId,
        /// The machine the domain went to.
        target: String,
    },
}

/// Who may run the domain of an image, as far as this image can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership<'a> {
    /// No migration concerns the image: its status decides.
    Owner,
    /// An incoming copy that never completed. The source cannot have given
    /// the domain up (it does so only after a complete copy is durable), so
    /// the copy is discarded without asking.
    Incomplete {
        /// The migration.
        migration_id: MigrationId,
    },
    /// A complete incoming copy that must ask `source` before running.
    Parked {
        /// The migration.
        migration_id: MigrationId,
        /// Whom to ask.
        source: &'a str,
    },
    /// Given away: never run this copy.
    HandedOver {
        /// The migration.
        migration_id: MigrationId,
        /// Where the domain went.
        target: &'a str,
    },
}

/// Who may run the domain `metadata` describes.
pub fn ownership(metadata: &Metadata) -> Ownership<'_> {
    match &metadata.migration {
        None => Ownership::Owner,
        Some(Migration::Incoming {
            migration_id,
            phase: IncomingPhase::Copying,
            ..
        }) => Ownership::Incomplete {
            migration_id: *migration_id,
        },
        Some(Migration::Incoming {
            migration_id,
            source,
            phase: IncomingPhase::Complete,
            ..
        }) => Ownership::Parked {
            migration_id: *migration_id,
            source,
        },
        Some(Migration::Outgoing {
            migration_id,
            target,
        }) => Ownership::HandedOver {
            migration_id: *migration_id,
            target,
        },
    }
}

/// What follows the metadata record in the chain, present when any part
/// is: the migration (`Option<Migration>`), then the message counts and the
/// outbox when there are any, then the network record when it is not empty
/// (the parts before it are then all written, empty or not, so that each
/// part has one place). Parts are only ever added at the end, and old
/// readers ignore what they do not know (postcard ignores trailing bytes).
/// A record without a network is encoded byte for byte as before it had
/// one.
pub fn encode_record(record: &MetadataRecord) -> Result<Vec<u8>, Error> {
    let unencodable = |_| Error::InvalidMetadata {
        reason: "the metadata cannot be encoded",
    };
    let metadata = &record.metadata;
    let mut bytes = postcard::to_allocvec(record).map_err(unencodable)?;
    if let Some(migration) = &metadata.migration {
        check_migration(migration)?;
    }
    // The message counts, the outbox and the network record: the parts
    // after the migration.
    let has_later_parts = !metadata.message_counts.is_empty()
        || !metadata.outbox.is_empty()
        || !metadata.network.is_empty();
    if metadata.migration.is_some() || has_later_parts {
        bytes = postcard::to_extend(&metadata.migration, bytes).map_err(unencodable)?;
    }
    if has_later_parts {
        bytes = crate::metadata::encode_messaging(metadata, bytes, &[])?;
    }
    Ok(bytes)
}

/// Decodes a metadata record and its trailer, if any: the bytes of a
/// metadata chain, from a disk or a migration, so nothing in them is
/// trusted (what decodes is then checked by [`crate::validate`]).
pub fn decode_record(bytes: &[u8]) -> Result<MetadataRecord, &'static str> {
    let (mut record, rest): (MetadataRecord, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|_| "undecodable metadata record")?;
    if !rest.is_empty() {
        let (migration, rest): (Option<Migration>, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|_| "undecodable migration trailer")?;
        record.metadata.migration = migration;
        if !rest.is_empty() {
            crate::metadata::decode_messaging(rest, &mut record.metadata)?;
        }
    }
    Ok(record)
}

fn check_migration(migration: &Migration) -> Result<(), Error> {
    let peer = match migration {
        Migration::Incoming { source, .. } => source,
        Migration::Outgoing { target, .. } => target,
    };
    if peer.len() > MAX_PEER_NAME_LEN {
        return Err(Error::InvalidMetadata {
            reason: "a migration peer name is longer than 255 bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{
        Counters, MessageCounts, ModuleRecord, NetworkRecord, StoredOutboxMessage, module_sha256,
    };
    use alloc::vec;

    fn record(migration: Option<Migration>) -> MetadataRecord {
        MetadataRecord {
            metadata: Metadata {
                id: abi::DomainId(9),
                name: "counter".into(),
                memory_pages: 1,
                memory_max_pages: 2,
                globals: vec![],
                status: StoredStatus::MovedAway,
                suspension: vec![],
                mailbox: vec![],
                clock_ns: 0,
                counters: Counters::default(),
                args: vec![],
                env: vec![],
                migration,
                message_counts: MessageCounts::default(),
                outbox: vec![],
                network: crate::metadata::NetworkRecord::default(),
            },
            module: ModuleRecord {
                sha256: module_sha256(b""),
                first_block: 2,
                first_crc: 0,
                len_bytes: 0,
            },
        }
    }

    #[test]
    fn a_record_without_migration_is_encoded_as_before() {
        let plain = record(None);
        let bytes = encode_record(&plain).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap());
        assert_eq!(decode_record(&bytes), Ok(plain));
    }

    #[test]
    fn the_trailer_round_trips_and_old_readers_skip_it() {
        let migrating = record(Some(Migration::Incoming {
            migration_id: 77,
            source: "a".into(),
            phase: IncomingPhase::Complete,
            resume_status: StoredStatus::Running,
        }));
        let bytes = encode_record(&migrating).unwrap();
        assert_eq!(decode_record(&bytes), Ok(migrating.clone()));
        // What a reader without trailers sees: the record, status MovedAway.
        let old: MetadataRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(old.metadata.status, StoredStatus::MovedAway);
        assert_eq!(old.metadata.migration, None);
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn message_counts_round_trip_with_and_without_a_migration() {
        let counts = MessageCounts {
            sent: vec![(abi::DomainId(5), 3)],
            accepted: vec![(abi::DomainId(6), 1), (abi::DomainId(7), u64::MAX)],
        };
        for migration in [
            None,
            Some(Migration::Outgoing {
                migration_id: 1,
                target: "b".into(),
            }),
        ] {
            let mut counted = record(migration);
            counted.metadata.message_counts = counts.clone();
            let bytes = encode_record(&counted).unwrap();
            assert_eq!(decode_record(&bytes), Ok(counted.clone()));
            // A reader that knows only migrations still reads the record.
            let (old, rest): (MetadataRecord, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
            assert_eq!(old.metadata.id, counted.metadata.id);
            let migration: Option<Migration> = postcard::from_bytes(rest).unwrap();
            assert_eq!(migration, counted.metadata.migration);
            assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn the_outbox_round_trips_and_count_only_readers_skip_it() {
        let mut sending = record(None);
        sending.metadata.message_counts.sent = vec![(abi::DomainId(5), 3)];
        sending.metadata.outbox = vec![
            StoredOutboxMessage {
                receiver: abi::DomainId(5),
                sequence: 2,
                bytes: vec![1, 2, 3],
            },
            StoredOutboxMessage {
                receiver: abi::DomainId(5),
                sequence: 3,
                bytes: vec![],
            },
        ];
        let bytes = encode_record(&sending).unwrap();
        assert_eq!(decode_record(&bytes), Ok(sending.clone()));
        // A reader that knows the counts but not the outbox.
        let (_, rest): (MetadataRecord, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
        let (_, rest): (Option<Migration>, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        let counts: MessageCounts = postcard::from_bytes(rest).unwrap();
        assert_eq!(counts, sending.metadata.message_counts);
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        // An outbox without counts still has its place after them.
        sending.metadata.message_counts = MessageCounts::default();
        let bytes = encode_record(&sending).unwrap();
        assert_eq!(decode_record(&bytes), Ok(sending));
    }

    fn network() -> NetworkRecord {
        NetworkRecord {
            listen: vec![6379, 80],
            durable_replies: true,
            connections: vec![5, 7],
            nonblocking: vec![3, 7],
        }
    }

    fn outbox() -> Vec<StoredOutboxMessage> {
        vec![StoredOutboxMessage {
            receiver: abi::DomainId(5),
            sequence: 3,
            bytes: vec![1, 2, 3],
        }]
    }

    #[test]
    fn messaging_without_a_network_is_encoded_as_before() {
        let mut sending = record(None);
        sending.metadata.message_counts.sent = vec![(abi::DomainId(5), 3)];
        sending.metadata.outbox = outbox();
        let bytes = encode_record(&sending).unwrap();
        // What code before the network record wrote: record, migration,
        // counts, outbox, and nothing after.
        let mut before = postcard::to_allocvec(&sending).unwrap();
        before = postcard::to_extend(&sending.metadata.migration, before).unwrap();
        before = postcard::to_extend(&sending.metadata.message_counts, before).unwrap();
        before = postcard::to_extend(&sending.metadata.outbox, before).unwrap();
        assert_eq!(bytes, before);
        assert_eq!(decode_record(&bytes), Ok(sending));
    }

    #[test]
    fn a_network_without_messaging_round_trips_after_an_empty_outbox() {
        let mut listening = record(None);
        listening.metadata.network = network();
        let bytes = encode_record(&listening).unwrap();
        assert_eq!(decode_record(&bytes), Ok(listening.clone()));
        // Every part before the network is written, empty, in its place.
        let (_, rest): (MetadataRecord, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
        let (migration, rest): (Option<Migration>, &[u8]) =
            postcard::take_from_bytes(rest).unwrap();
        assert_eq!(migration, None);
        let (counts, rest): (MessageCounts, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        assert!(counts.is_empty());
        let (outbox, rest): (Vec<StoredOutboxMessage>, &[u8]) =
            postcard::take_from_bytes(rest).unwrap();
        assert!(outbox.is_empty());
        assert_eq!(postcard::from_bytes::<NetworkRecord>(rest), Ok(network()));
        // A network record cut short is refused, never read as a smaller
        // one. (A cut between parts reads as the parts before it: the
        // chain's length and checksums are what catch those.)
        let network_start = bytes.len() - postcard::to_allocvec(&network()).unwrap().len();
        for len in network_start + 1..bytes.len() {
            assert!(decode_record(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn a_network_round_trips_with_everything_else_and_old_readers_skip_it() {
        let mut busy = record(Some(Migration::Outgoing {
            migration_id: 4,
            target: "b".into(),
        }));
        busy.metadata.message_counts.sent = vec![(abi::DomainId(5), 3)];
        busy.metadata.outbox = outbox();
        busy.metadata.network = network();
        let bytes = encode_record(&busy).unwrap();
        assert_eq!(decode_record(&bytes), Ok(busy.clone()));
        // A reader that knows the outbox but not the network.
        let (_, rest): (MetadataRecord, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
        let (_, rest): (Option<Migration>, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        let (_, rest): (MessageCounts, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        let old_outbox: Vec<StoredOutboxMessage> = postcard::from_bytes(rest).unwrap();
        assert_eq!(old_outbox, busy.metadata.outbox);
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        // Only durable replies declared: still a network part.
        let mut durable = record(None);
        durable.metadata.network.durable_replies = true;
        let bytes = encode_record(&durable).unwrap();
        assert_eq!(decode_record(&bytes), Ok(durable));
    }
}
