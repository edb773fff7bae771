//! Fuzz target: decode_record on arbitrary bytes, validate, round trips.

#![no_main]

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "each target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::record::record(data);
});
