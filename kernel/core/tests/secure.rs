//! Strangers on the secure link: no secret, another secret, plaintext, replay.

mod common;

use common::secure::{cluster_secret, secure_initiator, stranger_secret};
use common::{
    A, B, DomainState, Machine, NAME, Switch, domain_disk, run_to_quiet, two_machines_on,
};
use kernel_core::migration::{Event, Framed, LinkError, StartError};
use persist::migrate::WireMessage;

fn poll_for_a_while(machine: &mut Machine) {
    for _ in 0..50 {
        machine.idle(1_000_000);
        machine.poll();
    }
}

const REFUSED: &str = "migration: refused a connection from 10.6.6.6: the peer does not hold \
                       this cluster's secret, or replayed an old exchange";

#[test]
fn a_peer_with_another_secret_is_refused_and_changes_nothing() {
    let switch = Switch::secure(cluster_secret());
    let spare = common::Disk::blank();
    let mut b = Machine::boot(&switch, B, vec![spare.clone()]);
    let link = Switch::dial(&switch, B, "10.6.6.6");
    let mut peer = Framed::new(secure_initiator(link, &stranger_secret()));
    let mut begin = Vec::new();
    WireMessage::HandOver { migration_id: 7 }
        .encode(&mut begin)
        .unwrap();
    peer.queue(&begin);
    for _ in 0..50 {
        let _ = peer.flush();
        b.idle(1_000_000);
        b.poll();
    }
    assert!(
        b.host.lines().iter().any(|line| line == REFUSED),
        "{:#?}",
        b.host.lines()
    );
    assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
    assert_eq!(b.host.spares.len(), 1);
    assert!(spare.is_blank());
    assert!(!b.migrations.is_busy());
}

#[test]
fn a_peer_speaking_plaintext_frames_is_refused() {
    let switch = Switch::secure(cluster_secret());
    let spare = common::Disk::blank();
    let mut b = Machine::boot(&switch, B, vec![spare.clone()]);
    let mut peer = Switch::dial(&switch, B, "10.6.6.6");
    let mut query = Vec::new();
    WireMessage::Query {
        migration_id: 1,
        domain_id: common::DOMAIN_ID,
    }
    .encode(&mut query)
    .unwrap();
    peer.send_frame(&query);
    poll_for_a_while(&mut b);
    assert!(b.host.events.iter().any(|event| matches!(
        event,
        Event::BadConnection { peer, .. } if peer == "10.6.6.6"
    )));
    assert!(
        b.host.lines().iter().any(|line| line == REFUSED),
        "{:#?}",
        b.host.lines()
    );
    assert!(peer.frames().is_empty(), "a stranger got an answer");
    assert_eq!(b.host.spares.len(), 1);
}

#[test]
fn a_machine_without_a_secret_neither_starts_nor_accepts_a_migration() {
    let switch = Switch::secure(cluster_secret());
    let mut a = Machine::boot_with_secret(&switch, A, vec![domain_disk()], None);
    let error = a.migrations.start(&mut a.host, NAME, B).unwrap_err();
    assert!(matches!(error, StartError::Unreachable { .. }));
    assert!(
        error
            .to_string()
            .contains("this machine has no cluster secret"),
        "{error}"
    );
    // It does not listen: a connection to it is never taken.
    let peer = Switch::dial(&switch, A, "10.6.6.6");
    poll_for_a_while(&mut a);
    assert!(!a.migrations.is_busy());
    assert!(a.host.events.is_empty(), "{:#?}", a.host.lines());
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Running));
    drop(peer);
}

#[test]
fn a_replayed_migration_is_refused_and_nothing_runs() {
    let switch = Switch::secure(cluster_secret());
    let (_switch, mut a, mut b, _spare) = two_machines_on(switch.clone());
    switch.borrow_mut().is_next_recorded = true;
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
    let recorded = switch.borrow().pipes[0].borrow().recorded.clone().unwrap();
    // Side 1 is the target's end: what the source sent it.
    let sent_by_source = &recorded[1];
    assert!(sent_by_source.len() > 100_000);

    let spare = common::Disk::blank();
    let mut c = Machine::boot(&switch, "10.0.0.3", vec![spare.clone()]);
    let mut replay = Switch::dial(&switch, "10.0.0.3", "10.6.6.6");
    replay.send_raw(sent_by_source);
    poll_for_a_while(&mut c);
    assert!(
        c.host.lines().iter().any(|line| line == REFUSED),
        "{:#?}",
        c.host.lines()
    );
    assert!(c.host.events.iter().any(|event| matches!(
        event,
        Event::BadConnection {
            error: kernel_core::migration::FrameError::Link(LinkError::NotInCluster),
            ..
        }
    )));
    assert!(c.host.domains.is_empty() && c.host.parked.is_empty());
    assert_eq!(c.host.spares.len(), 1);
    assert!(spare.is_blank());
}
