//! Fuzz target: replies fed to a migration source of a small valid image.

#![no_main]

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "each target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::source::source(data);
});
