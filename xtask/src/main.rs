//! `cargo xtask`: the command line over the xtask library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{app, bench, console, fuzz, host, image, kernel, migrate, run, soak, test};

/// Amber's build, run and test tool.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the kernel (target/amber/kernel.elf) and the apps.
    Build(kernel::BuildArgs),
    /// Build and boot Amber in QEMU with the console on this terminal.
    Run(run::RunArgs),
    /// Run every host test and the QEMU tests.
    Test(test::TestArgs),
    /// Build a bootable Limine ISO (needs LIMINE_DIR).
    Iso(kernel::IsoArgs),
    /// Create, inspect and verify domain images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Build wasm apps.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Run domains on this Linux host with the same vm and persist code.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Run benchmarks (never part of `test`).
    Bench(bench::BenchArgs),
    /// Run long randomised robustness tests.
    Soak(soak::SoakArgs),
    /// Run a cargo-fuzz target.
    Fuzz(fuzz::FuzzArgs),
    /// Move a domain between two QEMU instances.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Attach this terminal to a machine's console socket (B of `run --pair`).
    Console(console::ConsoleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => kernel::build_command(&args),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::test(&args),
        Command::Iso(args) => kernel::iso(&args),
        Command::Image(command) => image::run(command),
        Command::App(command) => app::run(command),
        Command::Host(command) => host::run(command),
        Command::Bench(args) => bench::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Migrate(command) => migrate::run(command),
        Command::Console(args) => console::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
