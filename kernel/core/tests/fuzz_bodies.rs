//! The fuzz targets' bodies over random and mutated inputs, without cargo-fuzz.
//!
//! kernel/core/fuzz/fuzz_targets/* call the functions in
//! kernel/core/fuzz/bodies; so does this test, over a few hundred inputs,
//! so CI compiles and exercises every body. `cargo xtask fuzz incoming`
//! runs the same body under libFuzzer.

#[allow(unused_imports, reason = "this test uses part of the fakes")]
mod common;

#[path = "../fuzz/bodies/mod.rs"]
#[allow(dead_code, reason = "the test uses the incoming body and the seeds")]
mod bodies;

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

/// A real migration's frames as the incoming body's input: every record
/// framed (first byte 1).
fn seed() -> Vec<u8> {
    let (to_target, _) = bodies::persist_bodies::seeds::migration_inputs();
    bodies::persist_bodies::frames::prefixed(1, &to_target)
}

#[test]
fn the_incoming_body_takes_a_real_migration_and_its_mutations() {
    let seed = seed();
    // The whole migration goes through: the machine runs the domain.
    assert_eq!(bodies::incoming::incoming(&seed), 1);
    let mut random = Random(0x5eed_0004);
    for _ in 0..200 {
        let mut input = seed.clone();
        for _ in 0..=random.below(4) {
            let at = random.below(input.len());
            match random.below(3) {
                0 => input[at] ^= 1 << random.below(8),
                1 => input[at] = random.next() as u8,
                _ => input.truncate(at.max(1)),
            }
        }
        let _ = bodies::incoming::incoming(&input);
    }
}

#[test]
fn the_incoming_body_takes_random_bytes() {
    let mut random = Random(0x5eed_0005);
    for _ in 0..200 {
        let len = random.below(3_000);
        let input: Vec<u8> = (0..len).map(|_| random.next() as u8).collect();
        let _ = bodies::incoming::incoming(&input);
    }
}
