//! The fuzz targets' bodies over random and mutated inputs, without cargo-fuzz.
//!
//! persist/fuzz/fuzz_targets/* call the functions in persist/fuzz/bodies;
//! so does this test, over a few hundred inputs each, so CI compiles and
//! exercises every body. `cargo xtask fuzz TARGET` runs the same bodies
//! under libFuzzer, from the seeds `bodies::seeds` makes.

#[path = "../fuzz/bodies/mod.rs"]
#[allow(
    dead_code,
    reason = "the hostile-image tests use the rest of the forge"
)]
mod bodies;

use bodies::frames::Ending;
use bodies::image::Outcome;
use persist::migrate::{Refusal, RoundKind, Verdict, WireMessage};
use persist::{DomainId, PAGE_SIZE};
use proptest::prelude::*;

/// A small deterministic random source (xorshift64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// `input` with a few random changes: bytes flipped, set or removed, a run
/// copied elsewhere, or the end cut off.
fn mutated(input: &[u8], random: &mut Random) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..=random.below(4) {
        if bytes.is_empty() {
            bytes.push(random.next() as u8);
            continue;
        }
        let at = random.below(bytes.len());
        match random.below(5) {
            0 => bytes[at] ^= 1 << random.below(8),
            1 => bytes[at] = random.next() as u8,
            2 => {
                bytes.remove(at);
            }
            3 => {
                let len = random.below(64).min(bytes.len() - at);
                let run = bytes[at..at + len].to_vec();
                let to = random.below(bytes.len());
                bytes.splice(to..to, run);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// One message of every kind, encoded.
fn every_kind() -> Vec<Vec<u8>> {
    let page = [7u8; PAGE_SIZE];
    let messages = [
        WireMessage::Begin {
            migration_id: 1,
            domain_id: DomainId(2),
            module_len_bytes: 3,
            module_sha256: [4; 32],
        },
        WireMessage::ModuleChunk {
            offset: 5,
            bytes: b"module",
        },
        WireMessage::MetadataChunk {
            total_len_bytes: 100,
            offset: 6,
            bytes: b"metadata",
        },
        WireMessage::Page {
            page_index: 7,
            bytes: &page,
            crc: persist::crc32c(&page),
        },
        WireMessage::PageRemoved { page_index: 8 },
        WireMessage::EndRound {
            round: 1,
            kind: RoundKind::Final,
            changes: 2,
            pages_stored: 3,
            pages_digest: 4,
        },
        WireMessage::HandOver { migration_id: 9 },
        WireMessage::Abort { migration_id: 10 },
        WireMessage::RoundReceived { round: 11 },
        WireMessage::Durable { migration_id: 12 },
        WireMessage::Running { migration_id: 13 },
        WireMessage::Refused {
            reason: Refusal::Storage,
        },
        WireMessage::Query {
            migration_id: 14,
            domain_id: DomainId(15),
        },
        WireMessage::Answer {
            migration_id: 16,
            verdict: Verdict::Unknown,
        },
    ];
    messages
        .iter()
        .map(|message| {
            let mut frame = Vec::new();
            message.encode(&mut frame).unwrap();
            frame
        })
        .collect()
}

#[test]
fn the_wire_body_takes_every_kind_and_its_mutations() {
    let mut random = Random(0x5eed_0001);
    for frame in every_kind() {
        bodies::wire::wire(&frame);
        for _ in 0..50 {
            let mutant = mutated(&frame, &mut random);
            bodies::wire::wire(&mutant);
            // With its checksum repaired, a mutant reaches the field checks.
            bodies::wire::wire(&bodies::frames::repaired(&mutant[6.min(mutant.len())..]));
        }
    }
}

#[test]
fn the_seeds_replay_a_whole_migration_through_the_bodies() {
    let (to_target, to_source) = bodies::seeds::migration_inputs();
    assert!(bodies::frames::records(&to_target).count() > 5);
    assert!(bodies::frames::records(&to_source).count() >= 3);
    assert_eq!(bodies::target::target(&to_target), Ending::Completed);
    // kernel-core's incoming body takes the same frames, prefixed.
    let prefixed = bodies::frames::prefixed(1, &to_target);
    let records: Vec<&[u8]> = bodies::frames::records(&prefixed).collect();
    assert!(records.iter().all(|record| record[0] == 1));
    assert_eq!(records.len(), bodies::frames::records(&to_target).count());
    assert_eq!(bodies::source::source(&to_source), Ending::Completed);
}

#[test]
fn the_target_body_takes_mutated_migrations() {
    let (to_target, _) = bodies::seeds::migration_inputs();
    let mut random = Random(0x5eed_0002);
    let mut endings = Vec::new();
    for _ in 0..300 {
        endings.push(bodies::target::target(&mutated(&to_target, &mut random)));
    }
    // Mutants both fail and get through: the bodies reach deep states.
    assert!(endings.contains(&Ending::Refused), "{endings:?}");
    assert!(endings.iter().any(|ending| *ending != Ending::Refused));
}

#[test]
fn the_source_body_takes_mutated_replies() {
    let (_, to_source) = bodies::seeds::migration_inputs();
    let mut random = Random(0x5eed_0003);
    let mut endings = Vec::new();
    for _ in 0..300 {
        endings.push(bodies::source::source(&mutated(&to_source, &mut random)));
    }
    assert!(endings.contains(&Ending::Refused), "{endings:?}");
    assert!(endings.iter().any(|ending| *ending != Ending::Refused));
}

#[test]
fn the_open_body_takes_real_images_and_their_mutations() {
    let mut random = Random(0x5eed_0004);
    let mut opened = 0;
    for shape in [[0, 2, 0], [3, 1, 1], [2, 2, 0]] {
        let image = bodies::image::base_image(shape);
        assert_eq!(bodies::image::open(&image), Outcome::Opened);
        for _ in 0..40 {
            if bodies::image::open(&mutated(&image, &mut random)) == Outcome::Opened {
                opened += 1;
            }
        }
    }
    assert!(opened > 0);
}

/// Which of the checks a hostile image meets an outcome shows.
fn check_reached(outcome: &Outcome) -> Option<&'static str> {
    let Outcome::Refused(error) = outcome else {
        return None;
    };
    let text = error.damage().to_string();
    [
        "not a tree",
        "past the domain's memory maximum",
        "at its limit",
        "page count disagrees",
        "marked free",
    ]
    .into_iter()
    .find(|check| text.contains(check))
}

#[test]
fn the_structured_image_body_reaches_shared_nodes_and_extreme_counters() {
    let mut random = Random(0x5eed_0005);
    let mut reached = std::collections::BTreeMap::new();
    let mut outcomes = Vec::new();
    for seed in bodies::seeds::structured_seeds() {
        outcomes.push(bodies::image::structured(&seed));
    }
    for _ in 0..300 {
        let len = 3 + 4 * (1 + random.below(6));
        let script: Vec<u8> = (0..len).map(|_| random.next() as u8).collect();
        outcomes.push(bodies::image::structured(&script));
    }
    for outcome in &outcomes {
        if let Some(check) = check_reached(outcome) {
            *reached.entry(check).or_insert(0) += 1;
        }
    }
    // Past the CRCs, into every structure check, and some still open.
    for check in [
        "not a tree",
        "past the domain's memory maximum",
        "at its limit",
    ] {
        assert!(
            reached.contains_key(check),
            "never reached {check:?}: {reached:?}"
        );
    }
    assert!(outcomes.contains(&Outcome::Opened));
}

#[test]
fn the_record_body_takes_a_real_record_and_its_mutations() {
    let seed = bodies::seeds::record_seed();
    assert!(bodies::record::record(&seed), "the seed record decodes");
    let mut random = Random(0x5eed_0006);
    let mut decoded = 0;
    for _ in 0..500 {
        decoded += usize::from(bodies::record::record(&mutated(&seed, &mut random)));
    }
    assert!(decoded > 0, "no mutant decodes");
}

#[test]
fn the_archive_body_takes_a_real_archive_and_its_mutations() {
    let seed = bodies::seeds::archive_seed();
    assert_eq!(
        bodies::archive::archive(&seed),
        2,
        "raw and re-signed both open"
    );
    let mut random = Random(0x5eed_0007);
    let mut opened = 0;
    for _ in 0..300 {
        opened += bodies::archive::archive(&mutated(&seed, &mut random));
    }
    assert!(opened > 0, "no mutant opens");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_body_takes_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        bodies::wire::wire(&data);
        let _ = bodies::target::target(&data);
        let _ = bodies::source::source(&data);
        let _ = bodies::image::open(&data);
        let _ = bodies::image::structured(&data);
        let _ = bodies::record::record(&data);
        let _ = bodies::archive::archive(&data);
    }
}
