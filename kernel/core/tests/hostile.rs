//! Peers that lie: oversized frames, garbage, messages out of order, aborts.

mod common;

use common::{A, B, DOMAIN_ID, DomainState, Machine, NAME, Switch, domain_disk, two_machines};
use kernel_core::migration::{
    CopyFate, Event, FrameError, MAX_FRAME_BYTES, MigrationError, RefusalReason,
};
use persist::Image;
use persist::migrate::{self, Refusal, Source, SourceStep, Verdict, WireMessage};

/// A machine with one spare disk, and the switch to reach it.
fn target() -> (
    std::rc::Rc<std::cell::RefCell<Switch>>,
    Machine,
    common::Disk,
) {
    let switch = Switch::new();
    let spare = common::Disk::blank();
    let machine = Machine::boot(&switch, B, vec![spare.clone()]);
    (switch, machine, spare)
}

fn poll_for_a_while(machine: &mut Machine) {
    for _ in 0..50 {
        machine.idle(1_000_000);
        machine.poll();
    }
}

/// The messages a peer got back.
fn replies(peer: &mut common::network::MemoryLink) -> Vec<String> {
    peer.frames()
        .iter()
        .map(|frame| match WireMessage::decode(frame) {
            Ok(message) => format!("{message:?}"),
            Err(error) => format!("undecodable: {error}"),
        })
        .collect()
}

#[test]
fn a_frame_longer_than_the_maximum_is_refused_before_it_is_buffered() {
    let (switch, mut b, spare) = target();
    let mut peer = Switch::dial(&switch, B, "10.6.6.6");
    peer.send_raw(&(MAX_FRAME_BYTES as u32 + 1).to_le_bytes());
    poll_for_a_while(&mut b);
    assert!(b.host.events.iter().any(|event| matches!(
        event,
        Event::BadConnection {
            error: FrameError::TooLong { length_bytes },
            ..
        } if *length_bytes == MAX_FRAME_BYTES + 1
    )));
    assert!(peer.is_closed(), "the connection stays open");
    assert!(!b.migrations.is_busy());
    assert_eq!(b.host.spares.len(), 1);
    assert!(spare.is_blank());
}

#[test]
fn garbage_as_the_first_message_is_refused_and_the_spare_comes_back_blank() {
    let (switch, mut b, spare) = target();
    let mut peer = Switch::dial(&switch, B, "10.6.6.6");
    let garbage: Vec<u8> = (0..300u32).map(|index| (index * 97 % 256) as u8).collect();
    peer.send_frame(&garbage);
    poll_for_a_while(&mut b);
    assert_eq!(
        replies(&mut peer),
        [format!(
            "{:?}",
            WireMessage::Refused {
                reason: Refusal::Protocol
            }
        )]
    );
    assert!(
        b.host.events.iter().any(|event| matches!(
            event,
            Event::IncomingFailed {
                reason: MigrationError::Protocol(migrate::Error::BadMagic),
                copy: CopyFate::Blank,
                ..
            }
        )),
        "{:#?}",
        b.host.lines()
    );
    assert!(!b.migrations.is_busy());
    assert_eq!(b.host.spares.len(), 1);
    assert!(spare.is_blank());
    assert!(b.host.domains.is_empty());
}

#[test]
fn a_message_out_of_order_is_refused() {
    let (switch, mut b, spare) = target();
    let mut peer = Switch::dial(&switch, B, "10.6.6.6");
    let mut message = Vec::new();
    WireMessage::HandOver { migration_id: 7 }
        .encode(&mut message)
        .unwrap();
    peer.send_frame(&message);
    poll_for_a_while(&mut b);
    assert_eq!(
        replies(&mut peer),
        [format!(
            "{:?}",
            WireMessage::Refused {
                reason: Refusal::Protocol
            }
        )]
    );
    assert!(b.host.events.iter().any(|event| matches!(
        event,
        Event::IncomingFailed {
            reason: MigrationError::Protocol(migrate::Error::Unexpected { .. }),
            ..
        }
    )));
    assert_eq!(b.host.spares.len(), 1);
    assert!(spare.is_blank() && b.host.domains.is_empty() && b.host.parked.is_empty());
}

/// Sends what `source` produces to `peer` until the round is sent.
fn send_round(
    source: &mut Source,
    image: &mut Image<common::Disk>,
    peer: &mut common::network::MemoryLink,
) {
    let mut message = Vec::new();
    loop {
        match source.poll(image, &mut message).unwrap() {
            SourceStep::Send => peer.send_frame(&message),
            SourceStep::RoundSent { .. } | SourceStep::AwaitingReply => return,
            step => panic!("unexpected {step:?}"),
        }
    }
}

#[test]
fn a_source_that_aborts_mid_round_gets_its_spare_disk_blanked() {
    let (switch, mut b, spare) = target();
    let mut peer = Switch::dial(&switch, B, A);
    let mut image = Image::open(domain_disk()).unwrap();
    let mut source = Source::new(&mut image, 0x77, B).unwrap();
    send_round(&mut source, &mut image, &mut peer);
    poll_for_a_while(&mut b);
    assert!(
        b.host
            .has_said("[migrate] incoming migration from 10.0.0.1")
    );
    assert!(b.migrations.is_busy());
    let mut abort = Vec::new();
    source.abort(&mut abort).unwrap();
    peer.send_frame(&abort);
    poll_for_a_while(&mut b);
    assert!(
        b.host.events.iter().any(|event| matches!(
            event,
            Event::IncomingFailed {
                reason: MigrationError::PeerAborted { .. },
                copy: CopyFate::Blank,
                ..
            }
        )),
        "{:#?}",
        b.host.lines()
    );
    assert!(
        b.host
            .has_said("[migrate] incoming from 10.0.0.1: 10.0.0.1 aborted the migration")
    );
    assert_eq!(b.host.spares.len(), 1);
    assert!(spare.is_blank() && b.host.domains.is_empty() && b.host.parked.is_empty());
}

#[test]
fn a_second_migration_while_one_comes_in_is_refused() {
    let (switch, mut b, _spare) = target();
    let mut first = Switch::dial(&switch, B, A);
    let mut image = Image::open(domain_disk()).unwrap();
    let mut source = Source::new(&mut image, 0x77, B).unwrap();
    send_round(&mut source, &mut image, &mut first);
    poll_for_a_while(&mut b);
    let mut second = Switch::dial(&switch, B, "10.0.0.3");
    let mut other = Image::open(domain_disk()).unwrap();
    let mut other_source = Source::new(&mut other, 0x78, B).unwrap();
    send_round(&mut other_source, &mut other, &mut second);
    poll_for_a_while(&mut b);
    assert!(b.host.events.iter().any(|event| matches!(
        event,
        Event::Refused { peer, reason: RefusalReason::Busy } if peer == "10.0.0.3"
    )));
    assert!(second.is_closed());
    assert!(b.migrations.is_busy(), "the first migration goes on");
}

#[test]
fn a_migration_with_no_spare_disk_is_refused() {
    let switch = Switch::new();
    let mut b = Machine::boot(&switch, B, Vec::new());
    let mut peer = Switch::dial(&switch, B, A);
    let mut image = Image::open(domain_disk()).unwrap();
    let mut source = Source::new(&mut image, 0x77, B).unwrap();
    send_round(&mut source, &mut image, &mut peer);
    poll_for_a_while(&mut b);
    assert!(b.host.has_said(
        "[migrate] refused a migration from 10.0.0.1: no spare disk to receive a domain on"
    ));
    assert!(peer.is_closed());
}

/// Asks `machine` about a migration and returns the answer it sent.
fn ask(
    switch: &std::rc::Rc<std::cell::RefCell<Switch>>,
    machine: &mut Machine,
    query: WireMessage<'_>,
) -> Vec<String> {
    let mut peer = Switch::dial(switch, &machine.address, "10.9.9.9");
    let mut message = Vec::new();
    query.encode(&mut message).unwrap();
    peer.send_frame(&message);
    poll_for_a_while(machine);
    assert!(peer.is_closed(), "the answered connection stays open");
    replies(&mut peer)
}

#[test]
fn a_query_is_answered_from_the_images_here() {
    let (switch, mut a, _b, _spare) = two_machines();
    // A domain this machine has never heard of.
    let unknown = ask(
        &switch,
        &mut a,
        WireMessage::Query {
            migration_id: 1,
            domain_id: persist::DomainId(99),
        },
    );
    assert_eq!(
        unknown,
        [format!(
            "{:?}",
            WireMessage::Answer {
                migration_id: 1,
                verdict: Verdict::Unknown
            }
        )]
    );
    // A migration of a domain that is here and was never handed over.
    let aborted = ask(
        &switch,
        &mut a,
        WireMessage::Query {
            migration_id: 2,
            domain_id: DOMAIN_ID,
        },
    );
    assert_eq!(
        aborted,
        [format!(
            "{:?}",
            WireMessage::Answer {
                migration_id: 2,
                verdict: Verdict::Aborted
            }
        )]
    );
    assert!(a.host.has_said("[migrate] 10.9.9.9 asked about migration "));
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Running));
}

#[test]
fn a_query_about_a_migration_in_flight_aborts_it() {
    let (switch, mut a, mut b, _spare) = two_machines();
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    for _ in 0..3 {
        a.idle(1_000_000);
        a.poll();
        b.idle(1_000_000);
        b.poll();
    }
    let migration_id = a.started_migration_id();
    let answer = ask(
        &switch,
        &mut a,
        WireMessage::Query {
            migration_id,
            domain_id: DOMAIN_ID,
        },
    );
    assert_eq!(
        answer,
        [format!(
            "{:?}",
            WireMessage::Answer {
                migration_id,
                verdict: Verdict::Aborted
            }
        )]
    );
    common::run_to_quiet(&mut a, &mut b);
    // Answered "aborted", the migration can never hand the domain over.
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Running));
    assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
    assert_eq!(b.host.spares.len(), 1);
}

#[test]
fn a_peer_that_never_speaks_is_dropped_at_the_deadline() {
    let (switch, mut b, _spare) = target();
    let peer = Switch::dial(&switch, B, "10.6.6.6");
    b.poll();
    assert!(b.migrations.is_busy());
    b.idle(11_000_000_000);
    b.poll();
    assert!(!b.migrations.is_busy());
    assert!(peer.is_closed());
}

#[test]
fn a_module_that_does_not_compile_is_compiled_again_when_adopted() {
    let (_switch, mut a, mut b, _spare) = two_machines();
    b.host.is_compile_failing = true;
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    common::run_to_quiet(&mut a, &mut b);
    assert!(b.host.has_said(
        "[migrate] incoming from 10.0.0.1: cannot compile: the module does not validate"
    ));
    assert_eq!(b.host.adopted_compiled, [false]);
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
}
