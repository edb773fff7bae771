//! Whole migrations between two fake machines: links that close, power cuts.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{
    A, B, DomainState, Machine, NAME, Switch, pages, run_to_quiet, run_until, two_machines_on,
};
use kernel_core::migration::{CopyFate, DecideError, Decision, Event, MigrationError, StartError};
use persist::migrate::{self, Ownership};
use persist::{Image, StoredStatus};

/// Which links a test's machines speak over: every test here runs over
/// both, the plaintext frames and the secure link the kernel uses.
#[derive(Debug, Clone, Copy)]
enum Links {
    Plain,
    Secure,
}

impl Links {
    /// A switch whose machines speak over these links.
    fn switch(self) -> Rc<RefCell<Switch>> {
        match self {
            Links::Plain => Switch::new(),
            Links::Secure => Switch::secure(common::secure::cluster_secret()),
        }
    }

    /// Whether a link cut after `budget_bytes` still delivers the first
    /// message: a plain link delivers the first frame's bytes as they come,
    /// a secure one nothing of a record until all of it (up to 64 KiB, the
    /// module's first bytes with it) has arrived, after its handshake.
    fn delivers_begin_within(self, budget_bytes: usize) -> bool {
        match self {
            Links::Plain => budget_bytes > 10,
            Links::Secure => budget_bytes > 3_000,
        }
    }
}

/// A test per link for each of these functions, in modules `plain` and
/// `secure`.
macro_rules! on_both_links {
    ($($name:ident),* $(,)?) => {
        mod plain {
            $(#[test]
            fn $name() {
                super::$name(super::Links::Plain);
            })*
        }
        mod secure {
            $(#[test]
            fn $name() {
                super::$name(super::Links::Secure);
            })*
        }
    };
}

on_both_links!(
    a_migration_moves_the_pages_and_the_domain_runs_on_the_target,
    starting_checks_the_domain_and_the_address,
    a_link_that_closes_before_the_hand_over_leaves_the_domain_on_the_source,
    a_link_that_closes_after_the_hand_over_parks_the_copy_until_the_source_answers_run,
    a_copy_parked_before_the_hand_over_is_discarded_when_the_source_answers,
    a_copy_whose_source_does_not_know_it_stays_parked,
    a_parked_copy_whose_source_is_down_waits,
    a_power_cut_of_the_target_disk_never_runs_the_domain_twice,
    a_domain_goes_back_on_the_disk_of_its_tombstone,
    an_operator_runs_a_parked_copy_whose_source_is_gone,
    an_operator_discards_a_parked_copy,
);

fn a_migration_moves_the_pages_and_the_domain_runs_on_the_target(links: Links) {
    let (_switch, mut a, mut b, _spare) = two_machines_on(links.switch());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);

    assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
    assert!(b.host.spares.is_empty() && b.host.parked.is_empty());
    // Compiled while the pages arrived, so adopting did not compile again.
    assert_eq!(b.host.adopted_compiled, [true]);

    let source = &mut a.host.domains[0].image;
    assert_eq!(source.metadata().status, StoredStatus::MovedAway);
    assert!(matches!(
        migrate::ownership(source.metadata()),
        Ownership::HandedOver { target: B, .. }
    ));
    let expected = pages(source);
    let copy = &mut b.host.domains[0].image;
    assert_eq!(migrate::ownership(copy.metadata()), Ownership::Owner);
    assert_eq!(copy.metadata().status, StoredStatus::Running);
    assert_eq!(pages(copy), expected);

    // The lines the QEMU tests and the benchmark read.
    assert!(a.host.has_said("[migrate] counter -> 10.0.0.2: migration "));
    assert!(a.host.has_said("[migrate] counter: round 0 sent, 40 pages"));
    assert!(
        a.host
            .has_said("[migrate] counter: paused; final round of ")
    );
    assert!(
        a.host
            .has_said("[migrate] counter: handed over to 10.0.0.2 (committed here as moved)")
    );
    assert!(a.host.has_said("[migrate] counter: moved to 10.0.0.2 in "));
    assert!(
        b.host
            .has_said("[migrate] incoming migration from 10.0.0.1")
    );
    assert!(
        b.host
            .has_said("[migrate] incoming from 10.0.0.1: copy complete and durable")
    );
    assert!(
        b.host
            .has_said("[migrate] counter arrived from 10.0.0.1 in ")
    );
    let moved = a
        .host
        .lines()
        .into_iter()
        .find(|line| line.contains("moved to"));
    let moved = moved.unwrap_or_default();
    assert!(moved.contains(" KiB sent, downtime "), "{moved}");
}

fn a_domain_goes_back_on_the_disk_of_its_tombstone(links: Links) {
    let (_switch, mut a, mut b, _spare) = two_machines_on(links.switch());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);
    assert!(a.host.spares.is_empty(), "A's one disk holds the tombstone");

    b.migrations.start(&mut b.host, NAME, A).unwrap();
    run_to_quiet(&mut a, &mut b);
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Running));
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Moved));
    assert_eq!(
        a.host.domains.len(),
        1,
        "the tombstone made way for the domain"
    );
    let expected = pages(&mut b.host.domains[0].image);
    let back = &mut a.host.domains[0].image;
    assert_eq!(migrate::ownership(back.metadata()), Ownership::Owner);
    assert_eq!(pages(back), expected);
    assert!(
        a.host
            .has_said("[migrate] counter arrived from 10.0.0.2 in ")
    );
}

fn starting_checks_the_domain_and_the_address(links: Links) {
    let (_switch, mut a, _b, _spare) = two_machines_on(links.switch());
    assert_eq!(
        a.migrations.start(&mut a.host, NAME, "machine-b"),
        Err(StartError::NotAnAddress {
            address: "machine-b".into()
        })
    );
    assert_eq!(
        a.migrations.start(&mut a.host, "nobody", B),
        Err(StartError::NotRunning {
            name: "nobody".into()
        })
    );
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    let again = a.migrations.start(&mut a.host, NAME, B);
    assert_eq!(
        again.map_err(|error| error.to_string()),
        Err("counter is migrating already".into())
    );
}

fn a_link_that_closes_before_the_hand_over_leaves_the_domain_on_the_source(links: Links) {
    for budget_bytes in [10, 3_000, 40_000, 120_000] {
        let (switch, mut a, mut b, spare) = two_machines_on(links.switch());
        switch.borrow_mut().next_budget_bytes = Some(budget_bytes);
        a.migrations.start(&mut a.host, NAME, B).unwrap();
        run_to_quiet(&mut a, &mut b);

        assert_eq!(
            a.host.state_of(NAME),
            Some(DomainState::Running),
            "{budget_bytes}"
        );
        let image = &a.host.domains[0].image;
        assert_eq!(migrate::ownership(image.metadata()), Ownership::Owner);
        assert!(a.host.has_said("[migrate] counter: failed: "));
        assert!(
            a.host
                .lines()
                .iter()
                .any(|line| line.ends_with("; the domain stays here"))
        );
        // The target gives the spare disk back, blank.
        assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
        if budget_bytes > 10 {
            assert_eq!(
                b.host.spares.len(),
                1,
                "{budget_bytes}: {:?}",
                b.host.lines()
            );
        }
        if links.delivers_begin_within(budget_bytes) {
            assert!(b.host.events.iter().any(|event| matches!(
                event,
                Event::IncomingFailed {
                    copy: CopyFate::Blank,
                    ..
                }
            )));
        }
        assert!(spare.is_blank());
    }
}

/// Which side of a migration an event is awaited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

/// Starts migrating from `a` to `b` and cuts the link once `a` has handed
/// the domain over, before `b` hears of it.
fn migrate_and_cut_after_the_hand_over(
    switch: &std::rc::Rc<std::cell::RefCell<Switch>>,
    a: &mut Machine,
    b: &mut Machine,
) {
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    cut_after(switch, a, b, Side::Source, |event| {
        matches!(event, Event::HandedOver { .. })
    });
}

/// Polls until `a` (the source) or `b` (the target), as `side` says,
/// reports an event `is_it` matches, then resets the migration's link
/// before the other side polls.
fn cut_after(
    switch: &std::rc::Rc<std::cell::RefCell<Switch>>,
    a: &mut Machine,
    b: &mut Machine,
    side: Side,
    is_it: impl Fn(&Event) -> bool,
) {
    for _ in 0..20_000 {
        a.idle(1_000_000);
        a.poll();
        if side == Side::Source && a.host.events.iter().any(&is_it) {
            break;
        }
        b.idle(1_000_000);
        b.poll();
        if side == Side::Target && b.host.events.iter().any(&is_it) {
            break;
        }
    }
    assert!(
        a.host.events.iter().chain(&b.host.events).any(&is_it),
        "no such event: A {:#?} B {:#?}",
        a.host.lines(),
        b.host.lines()
    );
    switch.borrow().pipes[0].borrow_mut().reset();
}

fn a_link_that_closes_after_the_hand_over_parks_the_copy_until_the_source_answers_run(
    links: Links,
) {
    let (switch, mut a, mut b, _spare) = two_machines_on(links.switch());
    migrate_and_cut_after_the_hand_over(&switch, &mut a, &mut b);
    // Both sides notice; nobody runs the domain while the copy is parked.
    run_until(&mut a, &mut b, 20_000, |a, b| {
        !a.migrations.is_busy() && !b.host.parked.is_empty()
    });
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
    assert!(a.host.events.iter().any(|event| matches!(
        event,
        Event::FailedAfterHandOver {
            reason: MigrationError::Receive(_),
            ..
        }
    )));
    assert!(b.host.domains.is_empty());
    assert_eq!(b.host.parked.len(), 1);
    assert!(b.host.lines().iter().any(|line| line.ends_with(
        "the complete copy stays parked until 10.0.0.1 says whether it handed the domain over"
    )));

    // The parked copy asks; the source's tombstone says it was handed over.
    let is_resolved = run_until(&mut a, &mut b, 20_000, |_, b| b.host.parked.is_empty());
    assert!(is_resolved, "{:#?}", b.host.lines());
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
    assert!(a.host.has_said("[migrate] 10.0.0.2 asked about migration "));
    assert!(
        a.host
            .lines()
            .iter()
            .any(|line| line.ends_with(": HandedOver"))
    );
    assert!(
        b.host
            .has_said("[migrate] 10.0.0.1 handed counter over: it runs here")
    );
    // Adopted without a compiled module: the question's path compiles it.
    assert_eq!(b.host.adopted_compiled, [false]);
}

fn a_copy_parked_before_the_hand_over_is_discarded_when_the_source_answers(links: Links) {
    let (switch, mut a, mut b, spare) = two_machines_on(links.switch());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    // B's copy is durable, but A never hears so: A keeps the domain.
    cut_after(&switch, &mut a, &mut b, Side::Target, |event| {
        matches!(event, Event::CopyDurable { .. })
    });
    run_until(&mut a, &mut b, 20_000, |a, b| {
        !a.migrations.is_busy() && b.host.parked.is_empty() && !b.migrations.is_busy()
    });
    assert_eq!(a.host.state_of(NAME), Some(DomainState::Running));
    assert_eq!(
        migrate::ownership(a.host.domains[0].image.metadata()),
        Ownership::Owner
    );
    assert!(
        a.host
            .lines()
            .iter()
            .any(|line| line.ends_with(": Aborted"))
    );
    assert!(
        b.host
            .has_said("[migrate] 10.0.0.1 kept counter: the copy here is discarded")
    );
    assert!(b.host.domains.is_empty() && b.host.parked.is_empty());
    assert_eq!(b.host.spares.len(), 1);
    assert!(spare.is_blank());
}

fn a_copy_whose_source_does_not_know_it_stays_parked(links: Links) {
    let (switch, mut a, mut b, _spare) = two_machines_on(links.switch());
    migrate_and_cut_after_the_hand_over(&switch, &mut a, &mut b);
    run_until(&mut a, &mut b, 20_000, |a, b| {
        !a.migrations.is_busy() && !b.host.parked.is_empty()
    });
    // A comes back with a blank disk: it knows nothing of the domain.
    switch.borrow_mut().take_down(A);
    drop(a);
    let mut a = Machine::boot(&switch, A, vec![common::Disk::blank()]);
    run_until(&mut a, &mut b, 8_000, |_, _| false);
    assert_eq!(b.host.parked.len(), 1);
    assert!(b.host.domains.is_empty());
    assert!(
        a.host
            .lines()
            .iter()
            .any(|line| line.ends_with(": Unknown"))
    );
    assert!(
        b.host
            .events
            .iter()
            .any(|event| matches!(event, Event::StaysParked { .. }))
    );
    // It asks again a few seconds later, and goes on waiting.
    let asked = a
        .host
        .events
        .iter()
        .filter(|event| matches!(event, Event::Asked { .. }));
    assert!(asked.count() >= 2);
}

fn a_parked_copy_whose_source_is_down_waits(links: Links) {
    let (switch, mut a, mut b, _spare) = two_machines_on(links.switch());
    migrate_and_cut_after_the_hand_over(&switch, &mut a, &mut b);
    switch.borrow_mut().take_down(A);
    for _ in 0..8_000 {
        b.idle(1_000_000);
        b.poll();
    }
    assert_eq!(b.host.parked.len(), 1);
    assert!(b.host.domains.is_empty());
    assert!(
        b.host
            .events
            .iter()
            .any(|event| matches!(event, Event::AskFailed { .. }))
    );
}

/// B with a copy parked after the hand-over, and A down for good.
fn parked_with_the_source_gone(links: Links) -> (Machine, Rc<RefCell<Switch>>) {
    let (switch, mut a, mut b, _spare) = two_machines_on(links.switch());
    migrate_and_cut_after_the_hand_over(&switch, &mut a, &mut b);
    switch.borrow_mut().take_down(A);
    for _ in 0..4_000 {
        b.idle(1_000_000);
        b.poll();
    }
    assert_eq!(b.host.parked.len(), 1);
    let nobody = b.migrations.decide(&mut b.host, "nobody", Decision::Run);
    assert_eq!(
        nobody,
        Err(DecideError::NotParked {
            name: "nobody".into()
        })
    );
    (b, switch)
}

fn an_operator_runs_a_parked_copy_whose_source_is_gone(links: Links) {
    let (mut b, _switch) = parked_with_the_source_gone(links);
    b.migrations
        .decide(&mut b.host, NAME, Decision::Run)
        .unwrap();
    assert!(b.host.parked.is_empty());
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
    let image = &b.host.domains[0].image;
    assert_eq!(migrate::ownership(image.metadata()), Ownership::Owner);
    assert!(b.host.has_said(
        "[migrate] counter: the operator decided for 10.0.0.1, which does not answer: it \
         runs here"
    ));
    // Questions go on no more, and nothing undoes the decision.
    for _ in 0..4_000 {
        b.idle(1_000_000);
        b.poll();
    }
    assert_eq!(b.host.domains.len(), 1);
    assert_eq!(b.host.state_of(NAME), Some(DomainState::Running));
}

fn an_operator_discards_a_parked_copy(links: Links) {
    let (mut b, _switch) = parked_with_the_source_gone(links);
    b.migrations
        .decide(&mut b.host, NAME, Decision::Discard)
        .unwrap();
    assert!(b.host.parked.is_empty() && b.host.domains.is_empty());
    assert_eq!(b.host.spares.len(), 1, "the copy's disk is a spare again");
    assert!(b.host.has_said(
        "[migrate] counter: the operator decided 10.0.0.1 keeps it: the copy here is \
         discarded"
    ));
}

/// Cuts the power of B's spare disk after `writes` writes, reboots B, and
/// lets the machines settle: the domain then runs on exactly one of them.
fn power_cut_of_the_target(links: Links, writes: u64, seed: u64) {
    let (switch, mut a, mut b, spare) = two_machines_on(links.switch());
    spare.power_off_after(writes);
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_until(&mut a, &mut b, 20_000, |a, b| {
        !a.migrations.is_busy() && !b.migrations.is_busy()
    });
    let runs_on_a = a.host.state_of(NAME) == Some(DomainState::Running);
    let runs_on_b = b.host.state_of(NAME) == Some(DomainState::Running);
    assert!(!(runs_on_a && runs_on_b), "{writes}: both run the domain");
    if !spare.is_powered_off() {
        // The cut came after the migration: it moved.
        assert!(runs_on_b && !runs_on_a, "{writes}");
        return;
    }
    // B reboots from what its disk kept.
    switch.borrow_mut().take_down(B);
    drop(b);
    let disk = spare.reboot(seed);
    let mut b = Machine::boot(&switch, B, vec![disk.clone()]);
    let is_settled = run_until(&mut a, &mut b, 20_000, |a, b| {
        b.host.parked.is_empty() && !a.migrations.is_busy() && !b.migrations.is_busy()
    });
    assert!(is_settled, "{writes}: {:#?}", b.host.lines());
    let runs_on_a = a.host.state_of(NAME) == Some(DomainState::Running);
    let runs_on_b = b.host.state_of(NAME) == Some(DomainState::Running);
    assert!(
        runs_on_a != runs_on_b,
        "{writes}/{seed}: runs on A {runs_on_a}, on B {runs_on_b}\nA {:#?}\nB {:#?}",
        a.host.lines(),
        b.host.lines()
    );
    if runs_on_a {
        // A kept it: its image owns the domain, and B's disk is blank again.
        let image = &a.host.domains[0].image;
        assert_eq!(migrate::ownership(image.metadata()), Ownership::Owner);
        assert!(disk.is_blank(), "{writes}/{seed}: B kept a copy");
        assert_eq!(b.host.spares.len(), 1);
    } else {
        assert_eq!(a.host.state_of(NAME), Some(DomainState::Moved));
        let mut copy = Image::open(disk).expect("B's copy opens");
        assert_eq!(migrate::ownership(copy.metadata()), Ownership::Owner);
        assert!(!pages(&mut copy).is_empty());
    }
}

fn a_power_cut_of_the_target_disk_never_runs_the_domain_twice(links: Links) {
    // A clean migration, to know how many writes it takes.
    let (_switch, mut a, mut b, spare) = two_machines_on(links.switch());
    a.migrations.start(&mut a.host, NAME, B).unwrap();
    run_to_quiet(&mut a, &mut b);
    let total = spare.write_count();
    assert!(total > 40, "only {total} writes");
    let mut points: Vec<u64> = (0..total).step_by((total as usize / 12).max(1)).collect();
    points.extend([1, 2, total - 2, total - 1, total]);
    for (seed, writes) in points.into_iter().enumerate() {
        power_cut_of_the_target(links, writes, seed as u64);
    }
}
