//! hello: ordinary std Rust on WASI, with no Amber-specific code at all.

#![forbid(unsafe_code)]

fn main() {
    println!("Hello from Amber!");
    eprintln!("hello on stderr");
}
