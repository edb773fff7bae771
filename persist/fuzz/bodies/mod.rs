//! The bodies of persist's fuzz targets, shared with `cargo test`.
//!
//! Each target under `fuzz_targets/` calls one of these, and
//! persist/tests/fuzz_bodies.rs runs each over random and mutated inputs,
//! so CI exercises them without cargo-fuzz.

pub mod archive;
pub mod forge;
pub mod frames;
pub mod image;
pub mod record;
pub mod seeds;
pub mod source;
pub mod target;
pub mod wire;
