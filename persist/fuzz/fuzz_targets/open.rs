//! Fuzz target: arbitrary bytes as an image; open, read, verify, commit.

#![no_main]

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "each target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::image::open(data);
});
