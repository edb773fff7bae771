//! `cargo xtask app`: build wasm apps into target/amber/apps.

use anyhow::Result;
use clap::Subcommand;

/// App subcommands (issue 4 builds them).
#[derive(Debug, Subcommand)]
pub enum AppCommand {}

pub fn run(command: AppCommand) -> Result<()> {
    match command {}
}
