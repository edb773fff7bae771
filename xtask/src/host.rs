//! `cargo xtask host`: run domains on Linux with the same vm and persist code.

use anyhow::Result;
use clap::Subcommand;

/// Host runner subcommands (issue 4 builds them).
#[derive(Debug, Subcommand)]
pub enum HostCommand {}

pub fn run(command: HostCommand) -> Result<()> {
    match command {}
}
