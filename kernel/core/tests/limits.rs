//! Hostile peers against the caps and deadlines: floods, silence, clashes.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::network::MemoryLink;
use common::{
    A, B, DOMAIN_ID, DomainState, Machine, NAME, Switch, domain_disk, domain_disk_as, run_to_quiet,
    run_until,
};
use kernel_core::migration::{CopyFate, Event, Limits, MigrationError};
use persist::migrate::{self, Refusal, Source, SourceStep, WireMessage};
use persist::{DomainId, Image, StoredStatus};

/// Limits whose deadlines a test reaches in a few thousand polls.
fn quick() -> Limits {
    Limits {
        incoming_silence_ns: 2_000_000_000,
        outgoing_silence_ns: 2_000_000_000,
        ..Limits::default()
    }
}

/// Machine A with the domain and machine B with one spare, both `limits`.
fn two_machines_with(limits: Limits) -> (Rc<RefCell<Switch>>, Machine, Machine, common::Disk) {
    let switch = Switch::new();
    let a = Machine::boot_with(&switch, A, vec![domain_disk()], limits);
    let spare = common::Disk::blank();
    let b = Machine::boot_with(&switch, B, vec![spare.clone()], limits);
    (switch, a, b, spare)
}

fn poll_for(machine: &mut Machine, polls: usize) {
    for _ in 0..polls {
        machine.idle(1_000_000);
        machine.poll();
    }
}

/// The messages a peer got back.
fn replies(peer: &mut MemoryLink) -> Vec<String> {
    peer.frames()
        .iter()
        .map(|frame| match WireMessage::decode(frame) {
            Ok(message) => format!("{message:?}"),
            Err(error) => format!("undecodable: {error}"),
        })
        .collect()
}

fn refused(reason: Refusal) -> String {
    format!("{:?}", WireMessage::Refused { reason })
}

/// Polls `a` and `b` in turn, each after a millisecond, until `is_done`
/// (checked after each poll, so the other has not polled since).
fn poll_until(
    a: &mut Machine,
    b: &mut Machine,
    is_done: impl Fn(&Machine, &Machine) -> bool,
) -> bool {
    for _ in 0..20_000 {
        a.idle(1_000_000);
        a.poll();
        if is_done(a, b) {
            return true;
        }
        b.idle(1_000_000);
        b.poll();
        if is_done(a, b) {
            return true;
        }
    }
    false
}

/// Where the domain `name` runs: on A, on B, on both.
fn runs_on(a: &Machine, b: &Machine, name: &str) -> (bool, bool) {
    (
        a.host.state_of(name) == Some(DomainState::Running),
        b.host.state_of(name) == Some(DomainState::Running),
    )
}

#[test]
fn three_hundred_connections_hold_at_most_the_cap_and_a_migration_goes_through_after() {
    let (switch, mut a, mut b, _spare) = two_machines_with(Limits::default());
    let cap = Limits::default().max_connections;
    let mut hostile: Vec<MemoryLink> = (0..300)
        .map(|_| Switch::dial(&switch, B, "10.6.6.6"))
        .collect();
    for _ in 0..12_000 {
        b.idle(1_000_000);
        b.poll();
        assert!(b.migrations.connections_held() <= cap);
    }
    // Twelve seconds: the first connections reached their deadline and
    // others took their place, at the cap all along, said once.
    assert_eq!(b.migrations.connections_held(), cap);
    assert!(!b.migrations.is_listening());
    let caps: Vec<&Event> = b
        .host
        .events
        .iter()
        .filter(|event| matches!(event, Event::ConnectionCap { .. }))
        .collect();
    assert_eq!(caps.len(), 1, "{:#?}", b.host.lines());
    assert!(b.host.has_said(
        "[migrate] peers hold 16 connections, the most this machine takes \
         (10.6.6.6 holds 16): not listening until one closes"
    ));
    let closed = hostile.iter().filter(|link| link.is_closed()).count();
    assert!(closed >= cap, "only {closed} closed at their deadline");
    // The peer goes away; a real migration then goes through.
    hostile.clear();
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);
    assert_eq!(
        runs_on(&a, &b, NAME),
        (false, true),
        "{:#?}",
        b.host.lines()
    );
    assert!(b.migrations.is_listening());
}

#[test]
fn a_machine_short_of_heap_stops_listening_and_listens_again_with_room() {
    let switch = Switch::new();
    let mut b = Machine::boot(&switch, B, vec![common::Disk::blank()]);
    b.host.heap_room_bytes = 1 << 20;
    poll_for(&mut b, 3);
    assert!(!b.migrations.is_listening());
    assert!(
        b.host
            .has_said("[migrate] only 0 KiB of heap free: not listening")
    );
    b.host.heap_room_bytes = 64 << 20;
    poll_for(&mut b, 3);
    assert!(b.migrations.is_listening());
}

/// Every frame a source sends for a migration of the domain on `disk`
/// with a pre-copy round and a final round, as the target would get them,
/// each with its message's name.
fn frames_of_a_migration(disk: common::Disk) -> Vec<(&'static str, Vec<u8>)> {
    let mut image = Image::open(disk).unwrap();
    let mut source = Source::new(&mut image, 0x77, B).unwrap();
    let mut frames = Vec::new();
    let mut message = Vec::new();
    let mut is_final = false;
    loop {
        match source.poll(&mut image, &mut message).unwrap() {
            SourceStep::Send => {
                let name = WireMessage::decode(&message).unwrap().name();
                frames.push((name, message.clone()));
            }
            SourceStep::RoundSent { .. } if !is_final => {
                source.begin_final_round(&mut image).unwrap();
                is_final = true;
            }
            SourceStep::RoundSent { .. } | SourceStep::AwaitingReply => return frames,
            step => panic!("unexpected {step:?}"),
        }
    }
}

/// The index just past the `count`th frame called `name`.
fn after(frames: &[(&str, Vec<u8>)], name: &str, count: usize) -> usize {
    frames
        .iter()
        .enumerate()
        .filter(|(_, (found, _))| *found == name)
        .nth(count - 1)
        .map(|(index, _)| index + 1)
        .unwrap_or_else(|| panic!("fewer than {count} {name} frames"))
}

#[test]
fn a_source_that_goes_silent_in_any_phase_frees_every_slot_on_the_target() {
    // A long argument makes the metadata span chunks, for a cut inside it.
    let long = vec!["x".repeat(20_000)];
    let frames = frames_of_a_migration(domain_disk_as(
        NAME,
        DOMAIN_ID,
        StoredStatus::Running,
        long.clone(),
    ));
    let cuts = [
        ("before Begin", 0),
        ("mid-module", after(&frames, "module chunk", 1)),
        ("mid-metadata", after(&frames, "metadata chunk", 1)),
        ("mid-pages", after(&frames, "page", 10)),
        ("after the final round", frames.len()),
    ];
    for (phase, cut) in cuts {
        let switch = Switch::new();
        let spare = common::Disk::blank();
        let mut b = Machine::boot_with(&switch, B, vec![spare.clone()], quick());
        let mut peer = Switch::dial(&switch, B, "10.6.6.6");
        for (_, frame) in &frames[..cut] {
            peer.send_frame(frame);
        }
        poll_for(&mut b, 15_000);
        assert!(peer.is_closed(), "{phase}: the connection stays open");
        assert!(b.host.domains.is_empty(), "{phase}: a domain runs");
        assert_eq!(b.migrations.connections_held(), 0, "{phase}");
        if cut == 0 {
            assert_eq!(b.host.spares.len(), 1, "{phase}");
            continue;
        }
        let fate = b.host.events.iter().find_map(|event| match event {
            Event::IncomingFailed {
                reason: MigrationError::Silent { .. },
                copy,
                ..
            } => Some(copy.clone()),
            _ => None,
        });
        if cut == frames.len() {
            // Complete and durable: only the source's word may decide it.
            assert_eq!(
                fate,
                Some(CopyFate::Parked),
                "{phase}: {:#?}",
                b.host.lines()
            );
            assert_eq!(b.host.parked.len(), 1, "{phase}");
        } else {
            assert_eq!(
                fate,
                Some(CopyFate::Blank),
                "{phase}: {:#?}",
                b.host.lines()
            );
            assert_eq!(b.host.spares.len(), 1, "{phase}");
            assert!(spare.is_blank(), "{phase}");
            assert!(b.host.parked.is_empty(), "{phase}");
        }
        assert!(
            b.host
                .has_said("[migrate] incoming from 10.6.6.6: 10.6.6.6 said nothing for 2 s")
        );
    }
}

/// Which event on A makes B go silent (stop polling).
#[derive(Debug, Clone, Copy)]
enum SilentFrom {
    /// B has begun receiving: the pre-copy rounds.
    PreCopy,
    /// A paused the domain for the final round.
    FinalRound,
    /// B said its copy is durable: A hands the domain over.
    HandOver,
}

/// A migrates to B, which stops polling (goes silent) at `from` until A
/// has given up, then comes back: the domain runs on exactly one machine.
fn a_target_silent_from(from: SilentFrom) -> (Machine, Machine, common::Disk) {
    let (_switch, mut a, mut b, spare) = two_machines_with(quick());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    let is_silent = |a: &Machine, b: &Machine| match from {
        SilentFrom::PreCopy => b.host.has_said("[migrate] incoming migration from"),
        SilentFrom::FinalRound => a.host.has_said("[migrate] counter: paused"),
        SilentFrom::HandOver => b
            .host
            .has_said("[migrate] incoming from 10.0.0.1: copy complete"),
    };
    assert!(poll_until(&mut a, &mut b, is_silent), "{from:?}");
    let gave_up = |a: &Machine| !a.migrations.is_busy();
    for _ in 0..5_000 {
        if gave_up(&a) {
            break;
        }
        a.idle(1_000_000);
        a.poll();
    }
    assert!(gave_up(&a), "{from:?}: A still waits {:#?}", a.host.lines());
    assert!(
        a.host.has_said("[migrate] counter: ")
            && a.host
                .lines()
                .iter()
                .any(|line| line.contains("10.0.0.2 said nothing for 2 s")),
        "{from:?}: {:#?}",
        a.host.lines()
    );
    run_until(&mut a, &mut b, 20_000, |a, b| {
        !a.migrations.is_busy() && !b.migrations.is_busy() && b.host.parked.is_empty()
    });
    (a, b, spare)
}

#[test]
fn a_target_silent_before_the_pause_leaves_the_domain_running_on_the_source() {
    let (a, b, spare) = a_target_silent_from(SilentFrom::PreCopy);
    assert_eq!(runs_on(&a, &b, NAME), (true, false));
    assert!(
        a.host
            .lines()
            .iter()
            .any(|line| line.ends_with("; the domain stays here"))
    );
    assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
    assert!(spare.is_blank());
}

#[test]
fn a_target_silent_after_the_pause_gets_the_domain_resumed_on_the_source() {
    let (a, b, spare) = a_target_silent_from(SilentFrom::FinalRound);
    assert_eq!(
        runs_on(&a, &b, NAME),
        (true, false),
        "{:#?}",
        b.host.lines()
    );
    assert_eq!(
        migrate::ownership(a.host.domain(NAME).unwrap().image.metadata()),
        migrate::Ownership::Owner
    );
    assert!(
        a.host
            .has_said("[migrate] counter: failed: 10.0.0.2 said nothing for 2 s")
    );
    assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
    assert!(spare.is_blank());
}

#[test]
fn a_target_silent_after_the_hand_over_gets_the_domain_and_the_source_ends() {
    let (a, b, _spare) = a_target_silent_from(SilentFrom::HandOver);
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
    assert_eq!(
        b.host.state_of(NAME),
        Some(DomainState::Running),
        "{:#?}",
        b.host.lines()
    );
    assert!(a.host.has_said(
        "[migrate] counter: handed over to 10.0.0.2, then: 10.0.0.2 said nothing for 2 s"
    ));
}

#[test]
fn a_module_of_64_mib_is_refused_at_begin() {
    let switch = Switch::new();
    let spare = common::Disk::blank();
    let mut b = Machine::boot(&switch, B, vec![spare.clone()]);
    let mut peer = Switch::dial(&switch, B, "10.6.6.6");
    let mut message = Vec::new();
    WireMessage::Begin {
        migration_id: 7,
        domain_id: DomainId(7),
        module_len_bytes: 64 << 20,
        module_sha256: [0; 32],
    }
    .encode(&mut message)
    .unwrap();
    peer.send_frame(&message);
    let chunk = vec![0u8; migrate::wire::CHUNK_LEN_BYTES];
    for index in 0..8u64 {
        message.clear();
        WireMessage::ModuleChunk {
            offset: index * chunk.len() as u64,
            bytes: &chunk,
        }
        .encode(&mut message)
        .unwrap();
        peer.send_frame(&message);
    }
    poll_for(&mut b, 50);
    assert_eq!(replies(&mut peer), [refused(Refusal::TooLarge)]);
    assert!(peer.is_closed());
    assert!(
        b.host.events.iter().any(|event| matches!(
            event,
            Event::IncomingFailed {
                reason: MigrationError::Protocol(migrate::Error::TooLarge {
                    what: "module",
                    len_bytes,
                    max_bytes,
                }),
                copy: CopyFate::Blank,
                ..
            } if *len_bytes == 64 << 20 && *max_bytes == migrate::MAX_MODULE_LEN_BYTES
        )),
        "{:#?}",
        b.host.lines()
    );
    assert_eq!(migrate::MAX_MODULE_LEN_BYTES, 8 << 20, "the vm's bound");
    assert!(spare.is_blank() && b.host.spares.len() == 1);
    assert!(!b.migrations.is_busy());
}

#[test]
fn a_target_with_little_heap_refuses_cleanly_and_the_source_runs_on() {
    let limits = Limits {
        heap_margin_bytes: 0,
        connection_heap_bytes: 1024,
        ..Limits::default()
    };
    let (_switch, mut a, mut b, spare) = two_machines_with(limits);
    // Room for a connection, not for the 20 KB module.
    b.host.heap_room_bytes = 10_000;
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);
    assert_eq!(runs_on(&a, &b, NAME), (true, false));
    assert!(a.host.has_said(
        "[migrate] migration of counter refused by 10.0.0.2: its heap has no room for the \
         domain now; the domain stays here"
    ));
    assert!(
        b.host
            .has_said("[migrate] incoming from 10.0.0.1: no heap room for module")
    );
    assert!(spare.is_blank() && b.host.parked.is_empty() && b.host.spares.len() == 1);
}

/// A migrates counter to a B that has `other` already; returns both.
fn migrate_to_a_machine_with(other: common::Disk) -> (Machine, Machine, common::Disk) {
    let switch = Switch::new();
    let mut a = Machine::boot(&switch, A, vec![domain_disk()]);
    let spare = common::Disk::blank();
    let mut b = Machine::boot(&switch, B, vec![other, spare.clone()]);
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);
    (a, b, spare)
}

/// The clash was refused before `Durable`: A runs counter, B parks nothing
/// and blanked its spare, both said why.
fn assert_refused_before_durable(a: &Machine, b: &Machine, spare: &common::Disk, words: &str) {
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Running));
    assert!(
        a.host.has_said(&format!(
            "[migrate] migration of counter refused by 10.0.0.2: {words}; the domain stays here"
        )),
        "{:#?}",
        a.host.lines()
    );
    assert!(
        !b.host
            .has_said("[migrate] incoming from 10.0.0.1: copy complete")
    );
    assert!(b.host.events.iter().any(|event| matches!(
        event,
        Event::IncomingFailed {
            reason: MigrationError::Clash { .. },
            copy: CopyFate::Blank,
            ..
        }
    )));
    assert!(b.host.parked.is_empty());
    assert!(spare.is_blank() && b.host.spares.len() == 1);
}

#[test]
fn a_domain_whose_name_the_target_has_running_is_refused_before_durable() {
    let other_id = DomainId(0x0e);
    let other = domain_disk_as(NAME, other_id, StoredStatus::Running, Vec::new());
    let (a, b, spare) = migrate_to_a_machine_with(other);
    assert_refused_before_durable(&a, &b, &spare, "it has a domain named counter already");
    assert!(b.host.has_said(
        "[migrate] incoming from 10.0.0.1: refused counter: a domain named counter is here \
         already (running)"
    ));
    let here = b.host.domain(NAME).unwrap();
    assert_eq!(here.image.metadata().id, other_id);
    assert_eq!(here.state, DomainState::Running);
}

#[test]
fn a_domain_whose_id_the_target_has_stopped_is_refused_before_durable() {
    let other = domain_disk_as("other", DOMAIN_ID, StoredStatus::Stopped, Vec::new());
    let (a, b, spare) = migrate_to_a_machine_with(other);
    assert_refused_before_durable(&a, &b, &spare, "it has a domain with counter's ID already");
    assert!(b.host.has_said(
        "[migrate] incoming from 10.0.0.1: refused counter: a domain with that ID is here \
         already (other, stopped)"
    ));
    assert_eq!(b.host.state_of("other"), Some(DomainState::Stopped));
}

#[test]
fn a_name_taken_during_the_migration_is_refused_before_durable() {
    let (_switch, mut a, mut b, spare) = two_machines_with(Limits::default());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    assert!(run_until(&mut a, &mut b, 20_000, |a, _| a
        .host
        .has_said("[migrate] counter: round 1 sent")));
    // An operator spawns a domain called counter on B meanwhile.
    let taken = domain_disk_as(NAME, DomainId(0x0f), StoredStatus::Running, Vec::new());
    let image = Image::open(taken).unwrap();
    migrate_host_adopt(&mut b, image);
    run_to_quiet(&mut a, &mut b);
    assert_refused_before_durable(&a, &b, &spare, "it has a domain named counter already");
}

/// Runs `image`'s domain on `machine` as a spawn would.
fn migrate_host_adopt(machine: &mut Machine, image: Image<common::Disk>) {
    use kernel_core::migration::MigrationHost;
    machine.host.adopt(image, None).unwrap();
}

/// Migrates `name` from `source` to `b` and cuts the link (the last one
/// made) once `source` has handed it over: B parks the copy.
fn park_on(switch: &Rc<RefCell<Switch>>, source: &mut Machine, b: &mut Machine, name: &str) {
    let parked = b.host.parked.len();
    source.migrations.start(&mut source.host, name, B).unwrap();
    let pipe = switch.borrow().pipes.len() - 1;
    let handed_over = poll_until(source, b, |source, _| {
        source
            .host
            .has_said(&format!("[migrate] {name}: handed over to 10.0.0.2"))
    });
    assert!(handed_over, "{:#?}", source.host.lines());
    switch.borrow().pipes[pipe].borrow_mut().reset();
    let is_parked = run_until(source, b, 20_000, |source, b| {
        !source.migrations.is_busy() && b.host.parked.len() == parked + 1
    });
    assert!(is_parked, "{:#?}", b.host.lines());
}

#[test]
fn every_parked_copy_is_asked_in_turn_and_both_are_resolved() {
    let switch = Switch::new();
    let other_id = DomainId(0x0d);
    let mut a = Machine::boot(
        &switch,
        A,
        vec![
            domain_disk(),
            domain_disk_as("other", other_id, StoredStatus::Running, Vec::new()),
        ],
    );
    let mut b = Machine::boot(
        &switch,
        B,
        vec![common::Disk::blank(), common::Disk::blank()],
    );
    park_on(&switch, &mut a, &mut b, NAME);
    park_on(&switch, &mut a, &mut b, "other");
    let is_resolved = run_until(&mut a, &mut b, 20_000, |_, b| b.host.parked.is_empty());
    assert!(is_resolved, "{:#?}", b.host.lines());
    assert_eq!(runs_on(&a, &b, NAME), (false, true));
    assert_eq!(runs_on(&a, &b, "other"), (false, true));
}

#[test]
fn a_parked_copy_whose_source_never_answers_does_not_block_the_next() {
    let switch = Switch::new();
    let c_address = "10.0.0.3";
    let mut c = Machine::boot(
        &switch,
        c_address,
        vec![domain_disk_as(
            "other",
            DomainId(0x0d),
            StoredStatus::Running,
            Vec::new(),
        )],
    );
    let mut a = Machine::boot(&switch, A, vec![domain_disk()]);
    let mut b = Machine::boot(
        &switch,
        B,
        vec![common::Disk::blank(), common::Disk::blank()],
    );
    // C's copy is parked first, then C goes away for good.
    park_on(&switch, &mut c, &mut b, "other");
    switch.borrow_mut().take_down(c_address);
    drop(c);
    park_on(&switch, &mut a, &mut b, NAME);
    let is_resolved = run_until(&mut a, &mut b, 20_000, |_, b| {
        b.host.state_of(NAME) == Some(DomainState::Running)
    });
    assert!(is_resolved, "{:#?}", b.host.lines());
    assert_eq!(b.host.parked.len(), 1, "C's copy waits for C");
    assert!(
        b.host
            .has_said("[migrate] 10.0.0.1 handed counter over: it runs here")
    );
}

#[test]
fn a_final_metadata_that_renames_the_domain_is_refused() {
    let switch = Switch::new();
    let spare = common::Disk::blank();
    let mut b = Machine::boot(&switch, B, vec![spare.clone()]);
    let mut peer = Switch::dial(&switch, B, A);
    let mut image = Image::open(domain_disk()).unwrap();
    let mut source = Source::new(&mut image, 0x77, B).unwrap();
    let mut message = Vec::new();
    let mut is_final = false;
    loop {
        match source.poll(&mut image, &mut message).unwrap() {
            SourceStep::Send => peer.send_frame(&message),
            SourceStep::RoundSent { .. } if !is_final => {
                // The source lies: the final round names another domain.
                image.metadata_mut().name = "impostor".into();
                image.commit().unwrap();
                source.begin_final_round(&mut image).unwrap();
                is_final = true;
            }
            SourceStep::RoundSent { .. } | SourceStep::AwaitingReply => break,
            step => panic!("unexpected {step:?}"),
        }
    }
    poll_for(&mut b, 50);
    let replies = replies(&mut peer);
    assert_eq!(
        replies.last(),
        Some(&refused(Refusal::Protocol)),
        "{replies:?}"
    );
    assert!(b.host.has_said(
        "[migrate] incoming from 10.0.0.1: bad metadata received: the final metadata names \
         the domain otherwise; the spare disk is blank again"
    ));
    assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
    assert!(spare.is_blank());
}
