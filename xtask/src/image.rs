//! `cargo xtask image`: create, inspect and verify domain images.

use anyhow::Result;
use clap::Subcommand;

/// Image subcommands (issue 3 builds them).
#[derive(Debug, Subcommand)]
pub enum ImageCommand {}

pub fn run(command: ImageCommand) -> Result<()> {
    match command {}
}
