//! The scheduler keeps the embedder's handle with each domain it runs.

mod common;

use common::*;
use vm::{DomainStatus, Error, Scheduler, SchedulerEvent, new_engine};

/// Exits at once.
const EXIT: &str = r#"(module
    (import "env" "memory" (memory 1 1))
    (func (export "_start")))"#;

/// Loops forever without a host call.
const BUSY: &str = r#"(module
    (import "env" "memory" (memory 1 1))
    (func (export "_start") (loop $forever (br $forever))))"#;

#[test]
fn handles_travel_with_their_domains_through_lookups_removals_and_events() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut scheduler: Scheduler<u32> = Scheduler::new(10_000);
    scheduler
        .add(open(&engine, &platform, "first", 1, BUSY).unwrap(), 10)
        .unwrap();
    scheduler
        .add(open(&engine, &platform, "second", 2, BUSY).unwrap(), 20)
        .unwrap();
    scheduler
        .add(open(&engine, &platform, "third", 3, EXIT).unwrap(), 30)
        .unwrap();
    assert_eq!(scheduler.len(), 3);

    // A duplicate name is refused and leaves the others as they were.
    let duplicate = open(&engine, &platform, "second", 4, BUSY).unwrap();
    assert!(matches!(
        scheduler.add(duplicate, 40),
        Err(Error::DuplicateDomain(name)) if name == "second"
    ));
    assert_eq!(scheduler.len(), 3);

    let (handle, domain) = scheduler.find("second").unwrap();
    assert_eq!((*handle, domain.name()), (20, "second"));

    // Removing one from the middle keeps every other pairing.
    let (handle, removed) = scheduler.remove("second").unwrap();
    assert_eq!((handle, removed.name()), (20, "second"));
    let pairs: Vec<(u32, String)> = scheduler
        .iter()
        .map(|(handle, domain)| (*handle, domain.name().to_string()))
        .collect();
    assert_eq!(pairs, [(10, "first".into()), (30, "third".into())]);

    // An event names the domain's handle.
    let events = scheduler.run_round();
    assert_eq!(
        events,
        [SchedulerEvent::Halted {
            handle: 30,
            name: "third".into(),
            status: DomainStatus::Exited(0),
        }]
    );

    // Handles given back with the domains, in order.
    let handles: Vec<u32> = scheduler
        .into_domains()
        .into_iter()
        .map(|(handle, _)| handle)
        .collect();
    assert_eq!(handles, [10, 30]);
}
