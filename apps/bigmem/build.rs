//! bigmem needs more than the 64 MiB maximum every app is linked with
//! (apps/.cargo/config.toml): a later `--max-memory` wins in wasm-ld.

fn main() {
    println!("cargo::rustc-link-arg-bins=--max-memory=1073741824");
}
