//! Records no domain could have committed, refused at both doors.
//!
//! Issue 15's hostile case (h): a record whose outbox holds 2,001 messages
//! to a victim, numbered up to `u64::MAX - 1`, is refused when its image is
//! opened here and when a migration brings it in, and so is a record
//! within the outbox caps whose send count is impossible for its fuel; so
//! is a network record claiming sockets no domain can hold (issue 17).
//! vm/tests/forged_outbox.rs shows what the vm does with such a record if
//! it gets past these checks.

use persist::migrate::{self, Refusal, Source, SourceStep, Target, TargetEvent, WireMessage};
use persist::validate::MetadataError;
use persist::{
    DomainId, Error, Image, MemoryDevice, Metadata, NewDomain, StoredMessage, StoredOutboxMessage,
};

const VICTIM: DomainId = DomainId(2);
const FORGED: u64 = 2001;

fn image() -> Image<MemoryDevice> {
    let module = b"\0asm\x01\0\0\0".to_vec();
    // Room for a 2 MB record.
    Image::create(
        MemoryDevice::new(1024),
        NewDomain {
            id: DomainId(5),
            name: "forger",
            module: &module,
            memory_pages: 1,
            memory_max_pages: 1,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .unwrap()
}

/// 2,001 messages of 1 KiB to the victim, a count to match, fuel to match,
/// and a mailbox naming a forged sender.
fn forge_outbox(metadata: &mut Metadata) {
    let first = u64::MAX - FORGED;
    metadata.outbox = (0..FORGED)
        .map(|n| StoredOutboxMessage {
            receiver: VICTIM,
            sequence: first + n,
            bytes: vec![0; 1024],
        })
        .collect();
    metadata.message_counts.sent = vec![(VICTIM, u64::MAX - 1)];
    metadata.counters.fuel_used = u64::MAX;
    metadata.mailbox = vec![StoredMessage {
        sender: DomainId(6),
        bytes: b"forged".to_vec(),
    }];
}

fn outbox_refusal() -> MetadataError {
    MetadataError::OutboxTooLarge {
        receiver: VICTIM,
        messages: 257,
        len_bytes: 257 * 1024,
    }
}

/// Within the outbox caps, but 10 messages numbered up to `u64::MAX - 1`
/// with the fuel of a few thousand instructions.
fn forge_counts(metadata: &mut Metadata) {
    forge_outbox(metadata);
    metadata.outbox.drain(..FORGED as usize - 10);
    metadata.counters.fuel_used = 5_000;
}

fn count_refusal() -> MetadataError {
    MetadataError::SentPastFuel {
        sent_total: u64::MAX - 1,
        fuel_used: 5_000,
    }
}

/// A network record claiming a hundred thousand open connections, on
/// socket numbers that are the standard streams' and a listener's.
fn forge_network(metadata: &mut Metadata) {
    metadata.network.listen = vec![6379];
    metadata.network.connections = (0..100_000).collect();
    metadata.network.nonblocking = vec![1];
}

fn network_refusal() -> MetadataError {
    MetadataError::TooManyConnections { count: 100_000 }
}

/// Within the connection cap, a connection on the listener's socket.
fn forge_connection(metadata: &mut Metadata) {
    metadata.network.listen = vec![6379];
    metadata.network.connections = vec![3];
}

fn connection_refusal() -> MetadataError {
    MetadataError::ConnectionOutOfRange {
        socket: 3,
        first: 4,
        end: 68,
    }
}

#[test]
fn an_image_holding_a_forged_outbox_is_refused_when_opened() {
    for (forge, refusal) in [
        (forge_outbox as fn(&mut Metadata), outbox_refusal()),
        (forge_counts, count_refusal()),
        (forge_network, network_refusal()),
        (forge_connection, connection_refusal()),
    ] {
        let mut image = image();
        forge(image.metadata_mut());
        // Whoever wrote the image, this code refuses to run it. The forged
        // commit (2) is named, and so is the creation commit (1) beneath it.
        image.commit().unwrap();
        let error = Image::open(image.into_device()).unwrap_err();
        assert_eq!(error.damage(), &Error::MetadataRefused(refusal.clone()));
        assert!(
            matches!(
                error,
                Error::NewestCommitDamaged {
                    damaged_sequence: 2,
                    intact_sequence: 1,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("metadata refused"), "{error}");
    }
}

/// Runs a migration of `image` into a fresh target until the target
/// refuses a message, and returns its error and the refusal it sends.
fn migrate_in(image: &mut Image<MemoryDevice>) -> (migrate::Error, Refusal) {
    let mut target = Target::new(MemoryDevice::new(256), "machine-a").unwrap();
    let mut source = Source::new(image, 7, "machine-b").unwrap();
    let mut message = Vec::new();
    let mut reply = Vec::new();
    loop {
        match source.poll(image, &mut message).unwrap() {
            SourceStep::Send => match target.receive(&message, &mut reply) {
                Ok(TargetEvent::Nothing) => {}
                Ok(TargetEvent::Reply | TargetEvent::Parked | TargetEvent::Running) => {
                    source.receive(image, &reply).unwrap();
                }
                Ok(TargetEvent::Aborted) => panic!("nobody aborted"),
                Err(error) => {
                    migrate::refusal(&error, &mut reply).unwrap();
                    let Ok(WireMessage::Refused { reason }) = WireMessage::decode(&reply) else {
                        panic!("the refusal does not decode");
                    };
                    return (error, reason);
                }
            },
            step => panic!("the target took the forged record ({step:?})"),
        }
    }
}

#[test]
fn a_migration_carrying_a_forged_outbox_is_refused_before_anything_is_stored() {
    for (forge, refusal) in [
        (forge_outbox as fn(&mut Metadata), outbox_refusal()),
        (forge_counts, count_refusal()),
        (forge_network, network_refusal()),
        (forge_connection, connection_refusal()),
    ] {
        let mut image = image();
        // A hostile source: its record in memory, never committed.
        forge(image.metadata_mut());
        let (error, reason) = migrate_in(&mut image);
        assert_eq!(error, migrate::Error::MetadataRefused(refusal));
        assert_eq!(reason, Refusal::Protocol);
    }
}
