//! Fuzz target: the wire decoder on arbitrary bytes, and round trips.

#![no_main]

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "each target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bodies::wire::wire(data);
});
