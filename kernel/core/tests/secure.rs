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

/// (c) A stranger who knows the migration ID (it travelled in clear before
/// the link was encrypted) asks about it while it is in flight: before,
/// that aborted the migration; now the stranger gets nothing and the
/// migration completes.
#[test]
fn a_forged_query_does_not_abort_a_migration_in_flight() {
    let switch = Switch::secure(cluster_secret());
    let (_switch, mut a, mut b, _spare) = two_machines_on(switch.clone());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    for _ in 0..5 {
        a.idle(1_000_000);
        a.poll();
        b.idle(1_000_000);
        b.poll();
    }
    let migration_id = a.started_migration_id();
    for secret in [Some(stranger_secret()), None] {
        let link = Switch::dial(&switch, A, "10.6.6.6");
        let mut query = Vec::new();
        WireMessage::Query {
            migration_id,
            domain_id: common::DOMAIN_ID,
        }
        .encode(&mut query)
        .unwrap();
        match secret {
            Some(secret) => {
                let mut peer = Framed::new(secure_initiator(link, &secret));
                peer.queue(&query);
                for _ in 0..20 {
                    let _ = peer.flush();
                    a.idle(1_000_000);
                    a.poll();
                }
                assert!(matches!(peer.next_frame(), Err(_) | Ok(None)));
            }
            None => {
                let mut peer = link;
                peer.send_frame(&query);
                for _ in 0..20 {
                    a.idle(1_000_000);
                    a.poll();
                }
                assert!(peer.frames().is_empty(), "a stranger got an answer");
            }
        }
    }
    run_to_quiet(&mut a, &mut b);
    assert!(
        !a.host.has_said("asked about migration"),
        "{:#?}",
        a.host.lines()
    );
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
}

/// (c) A parked copy asks its source; a stranger answering in the source's
/// place ("aborted": discard your copy, which would lose the domain, since
/// the source has handed it over) changes nothing: the copy stays parked,
/// and the real source's answer later runs it.
#[test]
fn a_forged_answer_leaves_a_parked_copy_parked() {
    let switch = Switch::secure(cluster_secret());
    let (_switch, mut a, mut b, _spare) = two_machines_on(switch.clone());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    let migration_id = a.started_migration_id();
    // Cut the link once A has handed over, before B hears of it.
    for _ in 0..20_000 {
        a.idle(1_000_000);
        a.poll();
        if a.host
            .events
            .iter()
            .any(|event| matches!(event, Event::HandedOver { .. }))
        {
            break;
        }
        b.idle(1_000_000);
        b.poll();
    }
    switch.borrow().pipes[0].borrow_mut().reset();
    for _ in 0..200 {
        a.idle(1_000_000);
        a.poll();
        b.idle(1_000_000);
        b.poll();
        if b.host.parked.len() == 1 && !a.migrations.is_busy() {
            break;
        }
    }
    assert_eq!(b.host.parked.len(), 1, "{:#?}", b.host.lines());

    // Only B runs now: its question to A is taken by the stranger.
    let mut forged = None;
    for _ in 0..100 {
        b.idle(100_000_000);
        b.poll();
        if let Some((link, _)) = Switch::intercept(&switch, A) {
            forged = Some(link);
            break;
        }
    }
    let link = forged.expect("the parked copy asked its source");
    let mut stranger = Framed::new(common::secure::secure_responder(link, &stranger_secret()));
    let mut answer = Vec::new();
    WireMessage::Answer {
        migration_id,
        verdict: persist::migrate::Verdict::Aborted,
    }
    .encode(&mut answer)
    .unwrap();
    stranger.queue(&answer);
    for _ in 0..50 {
        let _ = stranger.flush();
        let _ = stranger.next_frame();
        b.idle(100_000_000);
        b.poll();
    }
    assert_eq!(b.host.parked.len(), 1, "{:#?}", b.host.lines());
    assert!(b.host.domains.is_empty());
    assert!(!b.host.has_said("kept counter"), "{:#?}", b.host.lines());

    // The real source answers next time: the copy runs.
    let is_resolved = common::run_until(&mut a, &mut b, 20_000, |_, b| b.host.parked.is_empty());
    assert!(is_resolved, "{:#?}", b.host.lines());
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
}
