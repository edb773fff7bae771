//! Migration between two in-memory disks: round trips, delta rounds, hostile
//! bytes, and power cuts on either side at every write and every message.

mod common;

use common::page;
use persist::migrate::{
    self, Ownership, Resolution, Source, SourceEvent, SourceStep, Target, TargetEvent, Verdict,
    WireMessage, wire,
};
use persist::{
    BlockDevice, DeviceError, Error, FaultPlan, FaultyDevice, Image, MemoryDevice, Metadata,
    NewDomain, PAGE_SIZE, StoredGlobal, StoredStatus, ValueType,
};
use proptest::prelude::*;

const MIGRATION: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0006;
const SOURCE_BLOCKS: u64 = 512;
const TARGET_BLOCKS: u64 = 512;
/// Pages the pretend domain touches (of the 64 its 4 wasm pages hold).
const PAGES: u64 = 40;

/// A module over three chunks, so chunking is exercised.
fn module() -> Vec<u8> {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend((0..20_000u32).map(|index| (index * 31 % 251) as u8));
    bytes
}

/// The source's image: a domain with pages, globals, a mailbox and a
/// network declaration.
fn source_device() -> MemoryDevice {
    let module = module();
    let mut image = Image::create(
        MemoryDevice::new(SOURCE_BLOCKS),
        NewDomain {
            id: persist::DomainId(0xc0ff_ee00_0000_0000_0000_0000_0000_0001),
            name: "counter",
            module: &module,
            memory_pages: 2,
            memory_max_pages: 4,
            args: vec!["counter".into()],
            env: vec!["MODE=test".into()],
            // The declaration travels with the metadata (and is compared
            // with it in every test here).
            network: persist::NetworkDeclaration {
                listen: vec![6379, 8080],
                durable_replies: true,
            },
        },
    )
    .unwrap();
    for page_index in 0..PAGES {
        if page_index % 5 != 3 {
            image.stage_page(page_index, &page(page_index)).unwrap();
        }
    }
    let metadata = image.metadata_mut();
    metadata.globals.push(StoredGlobal {
        index: 0,
        value_type: ValueType::I64,
        bits: 7,
    });
    metadata.mailbox.push(persist::StoredMessage {
        sender: persist::DomainId(9),
        bytes: b"hello".to_vec(),
    });
    // The sockets open at the commit travel too (as records: the
    // connections themselves read as reset after the move).
    metadata.network.connections = vec![5, 6];
    metadata.network.nonblocking = vec![3, 6];
    // Exactly-once numbering and the outbox travel with the domain (and the
    // receiver's count of message 9's sender is the one that made "hello"
    // new).
    metadata.message_counts = persist::MessageCounts {
        sent: vec![(persist::DomainId(9), 4)],
        accepted: vec![(persist::DomainId(9), 2), (persist::DomainId(11), 1)],
    };
    // Four messages sent took at least four units of fuel (persist's
    // validation holds a record to that).
    metadata.counters.fuel_used = 1_000;
    // The domain's log travels too.
    image.append_log(b"counter: started\n");
    image.commit().unwrap();
    // So does a named snapshot (the domain steps on from it).
    image.snapshot_create("at-start", 7).unwrap();
    image.into_device()
}

/// The domain runs a little and commits: pages change, appear and vanish.
fn domain_step<D: BlockDevice>(image: &mut Image<D>, step: u64) -> Result<(), Error> {
    for offset in 0..4 {
        let page_index = (step * 3 + offset) % PAGES;
        image.stage_page(page_index, &page(1000 * step + offset))?;
    }
    image.stage_page((step * 7 + 1) % PAGES, &[0; PAGE_SIZE])?;
    let metadata = image.metadata_mut();
    metadata.clock_ns += 1_000_000;
    metadata.counters.fuel_used += 500;
    if let Some(global) = metadata.globals.first_mut() {
        global.bits += step;
    }
    metadata.suspension = step.to_le_bytes().to_vec();
    metadata.message_counts.sent = vec![(persist::DomainId(9), 4 + step)];
    // Message 4 + step to domain 9 is not yet in 9's committed mailbox.
    metadata.outbox = vec![persist::StoredOutboxMessage {
        receiver: persist::DomainId(9),
        sequence: 4 + step,
        bytes: step.to_le_bytes().to_vec(),
    }];
    image.append_log(
        format!("counter: step {step}\n")
            .repeat(step as usize * 40)
            .as_bytes(),
    );
    image.commit()?;
    Ok(())
}

/// Everything a domain is, minus what differs by design between a source
/// and its copy (commit counts, migration records).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    metadata: Metadata,
    module: Vec<u8>,
    pages: Vec<(u64, Vec<u8>)>,
    log: Vec<u8>,
}

fn content<D: BlockDevice>(image: &mut Image<D>) -> Content {
    let mut metadata = image.metadata().clone();
    metadata.counters.commits = 0;
    metadata.migration = None;
    let module = image.module().unwrap();
    let mut pages = Vec::new();
    for page_index in image.stored_pages().unwrap() {
        let mut bytes = [0u8; PAGE_SIZE];
        image.read_page(page_index, &mut bytes).unwrap();
        pages.push((page_index, bytes.to_vec()));
    }
    Content {
        metadata,
        module,
        pages,
        log: image.log().unwrap(),
    }
}

/// How a scripted migration went.
#[derive(Debug, Default)]
struct Run {
    /// Messages delivered in either direction.
    delivered: usize,
    /// Page messages of each round.
    round_changes: Vec<u64>,
    /// The source's state as the final round began.
    final_content: Option<Content>,
    /// Events the source saw.
    events: Vec<SourceEvent>,
}

/// Why a scripted migration stopped early.
#[derive(Debug)]
enum Stop {
    /// The message budget ran out (the link and both machines went down).
    Cut,
    Migrate(migrate::Error),
    Image(Error),
}

impl From<migrate::Error> for Stop {
    fn from(error: migrate::Error) -> Self {
        Self::Migrate(error)
    }
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Self::Image(error)
    }
}

/// Migrates with two pre-copy delta rounds (the domain committing between
/// and during them), then the final round, delivering at most
/// `message_budget` messages. Lock-step: each reply is delivered at once.
fn drive<DS: BlockDevice, DT: BlockDevice>(
    source_image: &mut Image<DS>,
    target: &mut Target<DT>,
    message_budget: usize,
    run: &mut Run,
) -> Result<(), Stop> {
    let mut source = Source::new(source_image, MIGRATION, "machine-b")?;
    let mut message = Vec::new();
    let mut reply = Vec::new();
    let mut step = 0;
    loop {
        match source.poll(source_image, &mut message)? {
            SourceStep::Send => {
                if run.delivered == message_budget {
                    return Err(Stop::Cut);
                }
                run.delivered += 1;
                if source.round() == 1 && run.delivered.is_multiple_of(9) {
                    // The domain commits in the middle of a round.
                    step += 1;
                    domain_step(source_image, step)?;
                }
                match target.receive(&message, &mut reply)? {
                    TargetEvent::Nothing => {}
                    TargetEvent::Reply | TargetEvent::Parked | TargetEvent::Running => {
                        if run.delivered == message_budget {
                            return Err(Stop::Cut);
                        }
                        run.delivered += 1;
                        run.events.push(source.receive(source_image, &reply)?);
                    }
                    TargetEvent::Aborted => panic!("the target saw an abort nobody sent"),
                }
            }
            SourceStep::RoundSent { round, changes } => {
                run.round_changes.push(changes);
                step += 1;
                domain_step(source_image, step)?;
                if round < 2 {
                    source.begin_delta_round(source_image)?;
                } else {
                    // Paused at a safe point and committed (domain_step).
                    run.final_content = Some(content(source_image));
                    source.begin_final_round(source_image)?;
                }
            }
            SourceStep::AwaitingReply => panic!("lock-step delivery never waits"),
            SourceStep::Finished => return Ok(()),
            SourceStep::Aborted => panic!("nobody aborted"),
        }
    }
}

#[test]
fn a_migration_copies_every_page_and_hands_over() {
    let mut source_image = Image::open(source_device()).unwrap();
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "machine-a").unwrap();
    let mut run = Run::default();
    drive(&mut source_image, &mut target, usize::MAX, &mut run).unwrap();
    assert_eq!(
        run.events.last(),
        Some(&SourceEvent::TargetRunning),
        "{:?}",
        run.events
    );
    assert!(run.events.contains(&SourceEvent::HandedOver));

    let mut copy = target.into_image().expect("the target runs the domain");
    copy.verify().unwrap();
    assert_eq!(migrate::ownership(copy.metadata()), Ownership::Owner);
    assert_eq!(copy.metadata().status, StoredStatus::Running);
    let expected = run.final_content.unwrap();
    assert_eq!(content(&mut copy), expected);
    // The copy survives a reopen, unchanged.
    let mut copy = Image::open(copy.into_device()).unwrap();
    assert_eq!(content(&mut copy), expected);

    // The source keeps a tombstone that never runs and answers queries.
    source_image.verify().unwrap();
    let source_image = Image::open(source_image.into_device()).unwrap();
    assert_eq!(source_image.metadata().status, StoredStatus::MovedAway);
    assert_eq!(
        migrate::ownership(source_image.metadata()),
        Ownership::HandedOver {
            migration_id: MIGRATION,
            target: "machine-b"
        }
    );
    let id = source_image.metadata().id;
    assert_eq!(
        migrate::answer_query([source_image.metadata()], MIGRATION, id),
        Verdict::HandedOver
    );
    assert_eq!(
        migrate::answer_query([source_image.metadata()], MIGRATION + 1, id),
        Verdict::Aborted
    );
    assert_eq!(
        migrate::answer_query([copy.metadata()], MIGRATION, persist::DomainId(id.0 + 1)),
        Verdict::Unknown
    );
    // A tombstone may go once the target runs; it then reads as blank.
    let blank = migrate::discard(source_image).unwrap();
    assert_eq!(Image::open(blank).unwrap_err(), Error::NotAnImage);
    // A runnable image may not be discarded.
    assert!(matches!(
        migrate::discard(copy),
        Err(migrate::Error::NotDiscardable)
    ));
}

/// The state of snapshot `tag` of the image on `device`, applied on a
/// copy of it (the image itself is left as it is).
fn snapshot_content(device: &MemoryDevice, tag: &str) -> Content {
    let mut image = Image::open(MemoryDevice::from_bytes(device.as_bytes().to_vec())).unwrap();
    image.snapshot_apply(tag).unwrap();
    let mut content = content(&mut image);
    // The live state's own record of where it is differs by design.
    content.metadata.status = StoredStatus::Running;
    content
}

#[test]
fn named_snapshots_travel_with_the_domain_sharing_the_live_pages() {
    let mut source_image = Image::open(source_device()).unwrap();
    source_image.snapshot_delete("at-start").unwrap();
    source_image.snapshot_create("first", 1_000).unwrap();
    domain_step(&mut source_image, 50).unwrap();
    source_image.snapshot_create("second", 2_000).unwrap();
    domain_step(&mut source_image, 60).unwrap();
    let source_list = source_image.snapshots().unwrap();
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "machine-a").unwrap();
    let mut run = Run::default();
    drive(&mut source_image, &mut target, usize::MAX, &mut run).unwrap();
    assert_eq!(run.events.last(), Some(&SourceEvent::TargetRunning));

    let mut copy = target.into_image().expect("the target runs the domain");
    copy.verify().unwrap();
    assert_eq!(content(&mut copy), run.final_content.unwrap());
    let copy_list = copy.snapshots().unwrap();
    let summary = |list: &[persist::SnapshotInfo]| -> Vec<_> {
        list.iter()
            .map(|info| {
                (
                    info.tag.clone(),
                    info.created,
                    info.clock_ns,
                    info.pages_stored,
                )
            })
            .collect()
    };
    assert_eq!(summary(&copy_list), summary(&source_list));
    // Each snapshot is the same state on both machines.
    let copy_device = MemoryDevice::from_bytes(copy.device().as_bytes().to_vec());
    for tag in ["first", "second"] {
        assert_eq!(
            snapshot_content(&copy_device, tag),
            snapshot_content(source_image.device(), tag),
            "snapshot {tag}"
        );
    }
    // Pages a snapshot shares with the live state are shared on the copy
    // too: it takes about the blocks the source does (its snapshots' page
    // maps are built anew, and pages two snapshots share but the live
    // state does not are copied once each), not a copy per state.
    let (copy_blocks, source_blocks) = (copy.stats().blocks_used, source_image.stats().blocks_used);
    assert!(
        copy_blocks <= source_blocks + 16,
        "the copy takes {copy_blocks} blocks, the source {source_blocks}"
    );
    // The copy survives a reopen with its snapshots, and a rollback on it
    // goes back to the state the source had.
    let mut copy = Image::open(copy.into_device()).unwrap();
    assert_eq!(summary(&copy.snapshots().unwrap()), summary(&source_list));
    copy.snapshot_apply("first").unwrap();
    copy.verify().unwrap();
}

#[test]
fn delta_rounds_send_only_the_pages_that_changed() {
    let mut source_image = Image::open(source_device()).unwrap();
    let stored = source_image.stats().pages_stored;
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "machine-a").unwrap();
    let mut source = Source::new(&mut source_image, MIGRATION, "machine-b").unwrap();
    let mut message = Vec::new();
    let mut reply = Vec::new();
    let mut pump = |source: &mut Source, image: &mut Image<MemoryDevice>| -> SourceStep {
        loop {
            let step = source.poll(image, &mut message).unwrap();
            if step != SourceStep::Send {
                return step;
            }
            if target.receive(&message, &mut reply).unwrap() != TargetEvent::Nothing {
                source.receive(image, &reply).unwrap();
            }
        }
    };
    assert_eq!(
        pump(&mut source, &mut source_image),
        SourceStep::RoundSent {
            round: 0,
            changes: stored
        }
    );
    // Nothing committed since: an empty delta.
    assert_eq!(source.begin_delta_round(&mut source_image).unwrap(), 0);
    pump(&mut source, &mut source_image);
    // Two pages rewritten, one removed, one new: four changes.
    source_image.stage_page(0, &page(500)).unwrap();
    source_image.stage_page(1, &page(501)).unwrap();
    source_image.stage_page(2, &[0; PAGE_SIZE]).unwrap();
    source_image.stage_page(3, &page(503)).unwrap();
    source_image.commit().unwrap();
    // Rewriting a page with its own bytes still moves it (copy-on-write),
    // so it counts; a page staged but not committed does not.
    source_image.stage_page(4, &page(504)).unwrap();
    assert_eq!(source.begin_delta_round(&mut source_image).unwrap(), 4);
    assert_eq!(
        pump(&mut source, &mut source_image),
        SourceStep::RoundSent {
            round: 2,
            changes: 4
        }
    );
    // The final round refuses uncommitted pages, then goes once committed.
    assert!(source.begin_final_round(&mut source_image).is_err());
    source_image.commit().unwrap();
    assert_eq!(source.begin_final_round(&mut source_image).unwrap(), 1);
    assert_eq!(pump(&mut source, &mut source_image), SourceStep::Finished);
}

#[test]
fn a_commit_during_the_final_round_is_refused_and_the_source_keeps_the_domain() {
    let mut source_image = Image::open(source_device()).unwrap();
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "machine-a").unwrap();
    let mut source = Source::new(&mut source_image, MIGRATION, "machine-b").unwrap();
    let mut message = Vec::new();
    let mut reply = Vec::new();
    while source.poll(&mut source_image, &mut message).unwrap() == SourceStep::Send {
        target.receive(&message, &mut reply).unwrap();
    }
    domain_step(&mut source_image, 1).unwrap();
    source.begin_final_round(&mut source_image).unwrap();
    // The first message (metadata) goes; then the domain wrongly commits.
    assert_eq!(
        source.poll(&mut source_image, &mut message).unwrap(),
        SourceStep::Send
    );
    domain_step(&mut source_image, 2).unwrap();
    let error = loop {
        match source.poll(&mut source_image, &mut message) {
            Ok(SourceStep::Send) => {}
            Ok(other) => panic!("went on to {other:?}"),
            Err(error) => break error,
        }
    };
    assert_eq!(error, migrate::Error::CommittedDuringFinalRound);
    source.abort(&mut message).unwrap();
    assert_eq!(
        target.receive(&message, &mut reply).unwrap(),
        TargetEvent::Aborted
    );
    let blank = target.discard().unwrap().unwrap();
    assert_eq!(Image::open(blank).unwrap_err(), Error::NotAnImage);
    assert_eq!(
        migrate::ownership(source_image.metadata()),
        Ownership::Owner
    );
}

#[test]
fn a_parked_copy_that_lost_the_hand_over_asks_and_runs() {
    let mut spare = MemoryDevice::new(TARGET_BLOCKS);
    let mut source_image = Image::open(source_device()).unwrap();
    let mut target = Target::new(&mut spare, "machine-a").unwrap();
    let mut source = Source::new(&mut source_image, MIGRATION, "machine-b").unwrap();
    let mut message = Vec::new();
    let mut reply = Vec::new();
    let event = loop {
        match source.poll(&mut source_image, &mut message).unwrap() {
            SourceStep::Send => match target.receive(&message, &mut reply).unwrap() {
                TargetEvent::Nothing => {}
                TargetEvent::Reply => {
                    source.receive(&mut source_image, &reply).unwrap();
                }
                event => break event,
            },
            SourceStep::RoundSent { .. } => {
                source.begin_final_round(&mut source_image).unwrap();
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(event, TargetEvent::Parked);
    // The target reboots here: `Durable` is in `reply`, not yet delivered.
    drop(target);
    let mut parked = Image::open(&mut spare).unwrap();
    let query = migrate::query_for(parked.metadata()).expect("parked copies ask");
    let WireMessage::Query {
        migration_id,
        domain_id,
    } = query
    else {
        panic!("{query:?}");
    };
    let mut answer = Vec::new();
    let mut answer_with = |verdict, parked: &mut Image<&mut MemoryDevice>| {
        WireMessage::Answer {
            migration_id,
            verdict,
        }
        .encode(&mut answer)
        .unwrap();
        migrate::apply_answer(parked, &answer).unwrap()
    };
    // The source never got `Durable`: it still owns the domain, and would
    // answer so from its image alone.
    let verdict = migrate::answer_query([source_image.metadata()], migration_id, domain_id);
    assert_eq!(verdict, Verdict::Aborted);
    assert_eq!(answer_with(verdict, &mut parked), Resolution::Discard);
    // Had `Durable` arrived, the source would have committed its tombstone,
    // and then the parked copy runs.
    assert_eq!(
        source.receive(&mut source_image, &reply).unwrap(),
        SourceEvent::HandedOver
    );
    assert_eq!(source.answer(migration_id), Verdict::HandedOver);
    let source_image = Image::open(source_image.into_device()).unwrap();
    let verdict = migrate::answer_query([source_image.metadata()], migration_id, domain_id);
    assert_eq!(verdict, Verdict::HandedOver);
    assert_eq!(answer_with(verdict, &mut parked), Resolution::Run);
    assert_eq!(parked.metadata().status, StoredStatus::Running);
    assert_eq!(migrate::ownership(parked.metadata()), Ownership::Owner);
}

#[test]
fn a_target_gives_up_its_image_only_once_parked() {
    let mut spare = MemoryDevice::new(TARGET_BLOCKS);
    let mut source_image = Image::open(source_device()).unwrap();
    let mut target = Target::new(&mut spare, "machine-a").unwrap();
    let mut source = Source::new(&mut source_image, MIGRATION, "machine-b").unwrap();
    let mut message = Vec::new();
    let mut reply = Vec::new();
    source.poll(&mut source_image, &mut message).unwrap();
    target.receive(&message, &mut reply).unwrap();
    // Mid-copy: no image to keep.
    let mut target = target
        .into_parked()
        .expect_err("a copy in progress is not parked");
    let event = loop {
        match source.poll(&mut source_image, &mut message).unwrap() {
            SourceStep::Send => match target.receive(&message, &mut reply).unwrap() {
                TargetEvent::Nothing => {}
                TargetEvent::Reply => {
                    source.receive(&mut source_image, &reply).unwrap();
                }
                event => break event,
            },
            SourceStep::RoundSent { .. } => {
                source.begin_final_round(&mut source_image).unwrap();
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(event, TargetEvent::Parked);
    let parked = target.into_parked().expect("a parked copy is kept");
    assert!(matches!(
        migrate::ownership(parked.metadata()),
        Ownership::Parked { .. }
    ));
}

#[test]
fn a_source_asked_in_flight_aborts_and_never_hands_over() {
    let mut source_image = Image::open(source_device()).unwrap();
    let mut source = Source::new(&mut source_image, MIGRATION, "machine-b").unwrap();
    assert_eq!(source.answer(MIGRATION), Verdict::Aborted);
    let mut message = Vec::new();
    assert_eq!(
        source.poll(&mut source_image, &mut message).unwrap(),
        SourceStep::Aborted
    );
    let mut durable = Vec::new();
    WireMessage::Durable {
        migration_id: MIGRATION,
    }
    .encode(&mut durable)
    .unwrap();
    assert!(source.receive(&mut source_image, &durable).is_err());
    assert_eq!(
        migrate::ownership(source_image.metadata()),
        Ownership::Owner
    );
}

/// After both machines reboot: who runs the domain. Panics if the answer
/// is not exactly one, or if a running copy is not the source's final
/// state.
fn resolve_after_reboot(
    source_disk: MemoryDevice,
    target_disk: MemoryDevice,
    final_content: Option<&Content>,
    what: &str,
) -> Side {
    let mut source_image = Image::open(source_disk)
        .unwrap_or_else(|error| panic!("{what}: the source image does not open: {error}"));
    source_image.verify().unwrap();
    let source_owns = match migrate::ownership(source_image.metadata()) {
        Ownership::Owner => true,
        Ownership::HandedOver { migration_id, .. } => {
            assert_eq!(migration_id, MIGRATION, "{what}");
            false
        }
        other => panic!("{what}: the source image is {other:?}"),
    };
    if source_owns {
        assert_eq!(
            source_image.metadata().status,
            StoredStatus::Running,
            "{what}"
        );
    }
    let target_owns = match Image::open(target_disk) {
        Err(Error::NotAnImage | Error::NoValidSuperblock) => false,
        Err(error) => panic!("{what}: the spare disk is damaged: {error}"),
        Ok(mut copy) => {
            copy.verify().unwrap();
            match migrate::ownership(copy.metadata()) {
                Ownership::Owner => {
                    check_copy(&mut copy, final_content, what);
                    true
                }
                Ownership::Incomplete { .. } => {
                    let blank = migrate::discard(copy).unwrap();
                    assert_eq!(Image::open(blank).unwrap_err(), Error::NotAnImage);
                    false
                }
                Ownership::Parked {
                    migration_id,
                    source,
                } => {
                    assert_eq!(source, "machine-a");
                    let domain_id = copy.metadata().id;
                    let verdict =
                        migrate::answer_query([source_image.metadata()], migration_id, domain_id);
                    let mut answer = Vec::new();
                    WireMessage::Answer {
                        migration_id,
                        verdict,
                    }
                    .encode(&mut answer)
                    .unwrap();
                    match migrate::apply_answer(&mut copy, &answer).unwrap() {
                        Resolution::Run => {
                            let mut copy = Image::open(copy.into_device()).unwrap();
                            assert_eq!(migrate::ownership(copy.metadata()), Ownership::Owner);
                            check_copy(&mut copy, final_content, what);
                            true
                        }
                        Resolution::Discard => {
                            migrate::discard(copy).unwrap();
                            false
                        }
                        Resolution::StayParked => panic!("{what}: the source does not know"),
                    }
                }
                Ownership::HandedOver { .. } => panic!("{what}: a tombstone on the spare disk"),
            }
        }
    };
    match (source_owns, target_owns) {
        (true, false) => Side::Source,
        (false, true) => Side::Target,
        (true, true) => panic!("{what}: both sides would run the domain"),
        (false, false) => panic!("{what}: the domain is lost"),
    }
}

fn check_copy<D: BlockDevice>(copy: &mut Image<D>, final_content: Option<&Content>, what: &str) {
    assert_eq!(copy.metadata().status, StoredStatus::Running, "{what}");
    let expected = final_content.expect("a copy ran before the final round");
    assert!(content(copy) == *expected, "{what}: the copy differs");
    let tags: Vec<String> = copy.snapshot_tags().map(String::from).collect();
    assert_eq!(tags, ["at-start"], "{what}: the copy's snapshots");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

/// Where the power goes out.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The source's disk loses power after this many writes.
    SourceWrites(u64),
    /// The target's disk loses power after this many writes.
    TargetWrites(u64),
    /// Both machines go down after this many messages.
    Messages(usize),
}

/// Runs one migration with `cut`, then power-cuts both disks (`seed`
/// decides which unflushed writes survive) and resolves.
fn migrate_with_cut(cut: Cut, seed: u64, final_content: &Content) -> Side {
    let plan = |writes| FaultPlan {
        power_off_after_writes: Some(writes),
        ..FaultPlan::default()
    };
    let (source_plan, target_plan, budget) = match cut {
        Cut::SourceWrites(writes) => (plan(writes), FaultPlan::default(), usize::MAX),
        Cut::TargetWrites(writes) => (FaultPlan::default(), plan(writes), usize::MAX),
        Cut::Messages(count) => (FaultPlan::default(), FaultPlan::default(), count),
    };
    let mut source_disk = FaultyDevice::new(source_device(), source_plan);
    let mut target_disk = FaultyDevice::new(MemoryDevice::new(TARGET_BLOCKS), target_plan);
    let mut run = Run::default();
    {
        let mut source_image = Image::open(&mut source_disk).unwrap();
        let mut target = Target::new(&mut target_disk, "machine-a").unwrap();
        match drive(&mut source_image, &mut target, budget, &mut run) {
            Ok(()) | Err(Stop::Cut) => {}
            Err(Stop::Image(Error::Device(DeviceError::PoweredOff))) => {}
            Err(Stop::Migrate(migrate::Error::Image(Error::Device(DeviceError::PoweredOff)))) => {}
            Err(other) => panic!("{cut:?}: the migration failed for another reason: {other:?}"),
        }
    }
    let what = format!("{cut:?}, seed {seed}");
    resolve_after_reboot(
        source_disk.power_cut(seed).unwrap(),
        target_disk.power_cut(seed.rotate_left(17)).unwrap(),
        Some(final_content),
        &what,
    )
}

/// Counts of a migration without faults: writes on each side, messages.
fn fault_free_run() -> (u64, u64, usize, Content) {
    let mut source_disk = FaultyDevice::new(source_device(), FaultPlan::default());
    let mut target_disk = FaultyDevice::new(MemoryDevice::new(TARGET_BLOCKS), FaultPlan::default());
    let mut run = Run::default();
    {
        let mut source_image = Image::open(&mut source_disk).unwrap();
        let mut target = Target::new(&mut target_disk, "machine-a").unwrap();
        drive(&mut source_image, &mut target, usize::MAX, &mut run).unwrap();
    }
    let final_content = run.final_content.expect("the final round ran");
    (
        source_disk.write_count(),
        target_disk.write_count(),
        run.delivered,
        final_content,
    )
}

#[test]
fn a_power_cut_at_every_write_and_message_leaves_exactly_one_owner() {
    let (source_writes, target_writes, messages, final_content) = fault_free_run();
    let mut cuts = Vec::new();
    cuts.extend((0..=source_writes).map(Cut::SourceWrites));
    cuts.extend((0..=target_writes).map(Cut::TargetWrites));
    cuts.extend((0..=messages).map(Cut::Messages));
    let mut owners = [0usize; 2];
    for (index, cut) in cuts.iter().enumerate() {
        for seed in [index as u64, 0xfeed_0000 + index as u64] {
            let side = migrate_with_cut(*cut, seed, &final_content);
            owners[usize::from(side == Side::Target)] += 1;
        }
    }
    // Both outcomes happen: early cuts keep the domain at the source, late
    // ones find it at the target.
    eprintln!(
        "{} cuts ({source_writes} source writes, {target_writes} target writes, {messages} messages): source kept it {} times, target took it {} times",
        cuts.len(),
        owners[0],
        owners[1]
    );
    assert!(owners[0] > 0 && owners[1] > 0, "{owners:?}");
    // Without any cut the target owns it.
    assert_eq!(
        migrate_with_cut(Cut::Messages(usize::MAX), 1, &final_content),
        Side::Target
    );
}

/// `message` as a frame.
fn encode(message: WireMessage<'_>) -> Vec<u8> {
    let mut frame = Vec::new();
    message.encode(&mut frame).unwrap();
    frame
}

/// What [`migrate_tampered`] delivers instead of a message, if anything.
type Tamper = dyn FnMut(&WireMessage<'_>) -> Option<Vec<u8>>;

/// Migrates (one pre-copy round, then the final one) with `tamper` given
/// every message the source sends: what it returns is delivered instead.
/// Returns the target's error, if it refused, and whether the source
/// handed the domain over.
fn migrate_tampered(tamper: &mut Tamper) -> (Option<migrate::Error>, bool) {
    let mut image = Image::open(source_device()).unwrap();
    let mut source = Source::new(&mut image, MIGRATION, "b").unwrap();
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "a").unwrap();
    let mut message = Vec::new();
    let mut reply = Vec::new();
    let mut handed_over = false;
    loop {
        match source.poll(&mut image, &mut message).unwrap() {
            SourceStep::Send => {
                let decoded = WireMessage::decode(&message).unwrap();
                let frame = tamper(&decoded).unwrap_or_else(|| message.clone());
                match target.receive(&frame, &mut reply) {
                    Ok(TargetEvent::Nothing) => {}
                    Ok(_) => {
                        let event = source.receive(&mut image, &reply).unwrap();
                        handed_over |= event == SourceEvent::HandedOver;
                    }
                    Err(error) => return (Some(error), handed_over),
                }
            }
            SourceStep::RoundSent { .. } => {
                source.begin_final_round(&mut image).unwrap();
            }
            SourceStep::Finished => return (None, handed_over),
            step => panic!("unexpected {step:?}"),
        }
    }
}

/// A peer's snapshot messages are checked like the rest: a page the live
/// state lacks, pages out of order, a wrong digest, a descriptor over its
/// bound, or a snapshot outside the final round are refused before the
/// hand-over, so the domain stays with the source.
#[test]
fn hostile_snapshot_messages_are_refused_before_the_hand_over() {
    let (error, handed_over) = migrate_tampered(&mut |_| None);
    assert!(error.is_none() && handed_over, "{error:?}");
    let mut shared_seen = 0;
    let cases: Vec<(&str, Box<Tamper>)> = vec![
        (
            "a page the live state lacks",
            Box::new(|message| match message {
                WireMessage::SnapshotPageShared { .. } => {
                    Some(encode(WireMessage::SnapshotPageShared { page_index: 3 }))
                }
                _ => None,
            }),
        ),
        (
            "pages out of order",
            Box::new(move |message| match message {
                WireMessage::SnapshotPageShared { .. } => {
                    shared_seen += 1;
                    (shared_seen == 2)
                        .then(|| encode(WireMessage::SnapshotPageShared { page_index: 0 }))
                }
                _ => None,
            }),
        ),
        (
            "a wrong digest",
            Box::new(|message| match message {
                WireMessage::SnapshotEnd { pages_stored, .. } => {
                    Some(encode(WireMessage::SnapshotEnd {
                        pages_stored: *pages_stored,
                        pages_digest: 1,
                    }))
                }
                _ => None,
            }),
        ),
        (
            "a descriptor over its bound",
            Box::new(|message| match message {
                WireMessage::SnapshotChunk { bytes, .. } => {
                    Some(encode(WireMessage::SnapshotChunk {
                        total_len_bytes: u64::MAX,
                        offset: 0,
                        bytes,
                    }))
                }
                _ => None,
            }),
        ),
        (
            "a snapshot before the final round",
            Box::new(|message| match message {
                WireMessage::EndRound { round: 0, .. } => {
                    Some(encode(WireMessage::SnapshotPageShared { page_index: 0 }))
                }
                _ => None,
            }),
        ),
    ];
    for (what, mut tamper) in cases {
        let (error, handed_over) = migrate_tampered(&mut *tamper);
        assert!(!handed_over, "{what}: handed over");
        let error = error.unwrap_or_else(|| panic!("{what}: accepted"));
        println!("{what}: {error}");
    }
}

/// A frame with a valid header and checksum around `payload`, so random
/// payloads reach the field parsers.
fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = b"AMIG".to_vec();
    frame.extend_from_slice(&wire::WIRE_VERSION.to_le_bytes());
    frame.push(kind);
    frame.push(0);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut checked = frame.clone();
    checked.extend_from_slice(payload);
    let crc = {
        const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
        CRC.checksum(&checked)
    };
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes, and random payloads in valid frames, give typed errors
    /// or valid messages: never a panic, on either side.
    #[test]
    fn hostile_messages_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        kind in 0u8..24,
        payload in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut spare = MemoryDevice::new(64);
        let mut reply = Vec::new();
        for frame in [bytes.clone(), framed(kind, &payload)] {
            let _ = WireMessage::decode(&frame);
            let _ = wire::message_len(&frame);
            let mut target = Target::new(&mut spare, "a").unwrap();
            let _ = target.receive(&frame, &mut reply);
            let mut image = Image::open(source_device()).unwrap();
            let mut source = Source::new(&mut image, 1, "b").unwrap();
            let _ = source.receive(&mut image, &frame);
        }
    }

    /// A valid stream, then one random message: a typed error or a valid
    /// step, and the target never claims the domain without a hand-over.
    #[test]
    fn a_target_fed_a_valid_prefix_and_garbage_stays_parked_or_fails(
        prefix_len in 0usize..20,
        kind in 1u8..18,
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut image = Image::open(source_device()).unwrap();
        let mut source = Source::new(&mut image, 1, "b").unwrap();
        let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "a").unwrap();
        let mut message = Vec::new();
        let mut reply = Vec::new();
        for _ in 0..prefix_len {
            if source.poll(&mut image, &mut message).unwrap() != SourceStep::Send {
                break;
            }
            target.receive(&message, &mut reply).unwrap();
        }
        let event = target.receive(&framed(kind, &payload), &mut reply);
        prop_assert!(!matches!(event, Ok(TargetEvent::Running)));
    }
}

#[test]
fn an_oversized_module_or_metadata_is_refused() {
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "a").unwrap();
    let mut frame = Vec::new();
    let mut reply = Vec::new();
    WireMessage::Begin {
        migration_id: 1,
        domain_id: persist::DomainId(2),
        module_len_bytes: u64::MAX,
        module_sha256: [0; 32],
    }
    .encode(&mut frame)
    .unwrap();
    assert!(matches!(
        target.receive(&frame, &mut reply),
        Err(migrate::Error::TooLarge { .. })
    ));
    let mut target = Target::new(MemoryDevice::new(TARGET_BLOCKS), "a").unwrap();
    WireMessage::Begin {
        migration_id: 1,
        domain_id: persist::DomainId(2),
        module_len_bytes: 0,
        module_sha256: persist::module_sha256(b""),
    }
    .encode(&mut frame)
    .unwrap();
    target.receive(&frame, &mut reply).unwrap();
    WireMessage::MetadataChunk {
        total_len_bytes: u64::MAX,
        offset: 0,
        bytes: b"",
    }
    .encode(&mut frame)
    .unwrap();
    assert!(matches!(
        target.receive(&frame, &mut reply),
        Err(migrate::Error::TooLarge { .. })
    ));
}
