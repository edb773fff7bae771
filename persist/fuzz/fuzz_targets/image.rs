//! Fuzz target: structured image edits, re-signed, then open, rollback, commit.

#![no_main]

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "each target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::image::structured(data);
});
