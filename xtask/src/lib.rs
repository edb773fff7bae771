//! Amber's build, run and test tool, and the library the QEMU tests drive.

#![forbid(unsafe_code)]

pub mod app;
pub mod archive;
pub mod bench;
pub mod console;
pub mod fuzz;
pub mod gateway;
pub mod host;
pub mod image;
pub mod kernel;
pub mod machine;
pub mod migrate;
pub mod paths;
pub mod private;
pub mod qemu;
pub mod run;
pub mod snapshot;
pub mod soak;
pub mod test;
pub mod tools;
pub mod wasm_rewrite;
