//! The bodies of kernel-core's fuzz targets, shared with `cargo test`.
//!
//! Each target under `fuzz_targets/` calls one of these, and
//! kernel/core/tests/fuzz_bodies.rs runs each over random and mutated
//! inputs, so CI exercises them without cargo-fuzz. Both include the
//! migration tests' fakes (kernel/core/tests/common) as `crate::common`,
//! and persist's fuzz bodies for their frame repair and seeds.

pub mod incoming;
#[path = "../../../../persist/fuzz/bodies/mod.rs"]
pub mod persist_bodies;
