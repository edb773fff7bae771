//! Fuzz target: arbitrary bytes from a peer to a machine's migration listener.

#![no_main]

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports, reason = "the target uses part of the fakes")]
mod common;

#[path = "../bodies/mod.rs"]
#[allow(dead_code, reason = "the target uses one body")]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bodies::incoming::incoming(data);
});
