//! Fuzz target: the apps archive on arbitrary bytes, raw and re-signed.

#![no_main]

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "each target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::archive::archive(data);
});
