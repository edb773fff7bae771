//! `cargo xtask bench`: every performance figure against its baseline, one report.
//!
//! Each benchmark measures Amber and its baseline in the same run, several
//! times, and hands raw samples to a [`Collector`] as [`Record`]s: figures
//! for the table and points for the plots. The persist and vm benchmarks
//! are programs (`PACKAGE/examples/bench.rs`) that print one record per
//! line; the kernel one boots QEMU from xtask (`bench/kernel.rs`). The
//! report goes to target/amber/bench: report.md, report.json and one SVG
//! per plot that has data (`bench/plots.rs` lists the plots; those nobody
//! measured are listed as not measured yet).
//!
//! Adding a benchmark: a [`Benchmark`] variant, its line in
//! [`Benchmark::environment`] and an arm in [`run_one`] that feeds the
//! collector (points with an id from `plots::PLOTS` land in that plot).

mod collector;
mod host;
pub mod ipc;
pub mod ipc_host;
mod kernel;
mod kernel_work;
mod migrate;
mod net;
mod net_kernel;
pub mod plots;
pub mod record;
mod report;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

pub use collector::Collector;
pub use record::{BaselineRecord, FigureRecord, Goal, PointRecord, Record};
pub use report::Mode;

use crate::paths;
use crate::qemu::Accel;
use crate::tools::{self, Need};

/// A benchmark of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Benchmark {
    /// Commit cost against dirty pages and image size; commit throughput (issue 3).
    Persist,
    /// The vm against plain wasmi; host calls; checkpoints (issue 4).
    Vm,
    /// Resume time, CPU, checkpoints and page-in, in QEMU (issue 5).
    Kernel,
    /// Live migration between two linked QEMU instances (issue 6).
    Migrate,
    /// IPC round trip between two domains against a Linux pipe, host and
    /// QEMU (issue 7).
    Ipc,
    /// Amber's redis under the host runner against Debian's redis-server,
    /// with redis-benchmark on 127.0.0.1 (issue 17).
    Net,
}

impl Benchmark {
    fn name(self) -> &'static str {
        match self {
            Benchmark::Persist => "persist",
            Benchmark::Vm => "vm",
            Benchmark::Kernel => "kernel",
            Benchmark::Migrate => "migrate",
            Benchmark::Ipc => "ipc",
            Benchmark::Net => "net",
        }
    }

    /// What it needs from this machine: the host benchmarks only the
    /// workspace toolchain; the kernel one QEMU and the kernel's toolchain
    /// too (its domains are wat modules); migrate and ipc also build apps.
    fn needs(self) -> &'static [Need] {
        match self {
            Benchmark::Persist | Benchmark::Vm => &[Need::WorkspaceToolchain],
            // The host runner is this program; the redis app needs wasm-opt.
            Benchmark::Net => &[Need::WorkspaceToolchain, Need::Binaryen],
            Benchmark::Kernel => &[Need::Qemu, Need::WorkspaceToolchain, Need::KernelToolchain],
            Benchmark::Migrate | Benchmark::Ipc => &tools::EVERYTHING,
        }
    }

    /// Where its figures are measured, until the benchmark says more.
    fn environment(self) -> &'static str {
        match self {
            // The IPC benchmark measures the host first, then QEMU.
            Benchmark::Persist | Benchmark::Vm | Benchmark::Ipc => "host, release build",
            Benchmark::Kernel | Benchmark::Migrate => "QEMU",
            Benchmark::Net => "host, 127.0.0.1",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run only this benchmark (repeatable); all of them by default.
    #[arg(long, value_enum)]
    pub only: Vec<Benchmark>,
    /// Same as `--only BENCHMARK` (the older form `cargo xtask bench vm`).
    #[arg(value_enum)]
    pub benchmark: Option<Benchmark>,
    /// One repetition of smaller workloads: checks that every benchmark
    /// still runs (CI), measures nothing worth quoting.
    #[arg(long)]
    pub quick: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let mode = if args.quick { Mode::Quick } else { Mode::Full };
    let requested: Vec<Benchmark> = args.only.iter().copied().chain(args.benchmark).collect();
    let selected: Vec<Benchmark> = Benchmark::value_variants()
        .iter()
        .copied()
        .filter(|benchmark| requested.is_empty() || requested.contains(benchmark))
        .collect();
    let needs: Vec<Need> = selected
        .iter()
        .flat_map(|benchmark| benchmark.needs().iter().copied())
        .collect();
    tools::make_sure_of(&needs)?;
    let directory = paths::bench_dir();
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;

    // Before the benchmarks, so the load average is the machine's, not ours.
    let host = host::Host::detect();
    let mut collector = Collector::new(mode);
    let mut runs = Vec::new();
    for (index, benchmark) in selected.iter().enumerate() {
        let started = Instant::now();
        collector.begin(
            benchmark.name(),
            benchmark.environment(),
            index + 1,
            selected.len(),
        );
        let result = run_one(*benchmark, &mut collector);
        collector.finish_line();
        if let Err(error) = &result {
            eprintln!(
                "error: the {} benchmark failed: {error:#}",
                benchmark.name()
            );
        }
        runs.push(report::BenchmarkRun {
            name: benchmark.name().into(),
            environment: collector.environment().into(),
            seconds: started.elapsed().as_secs_f64(),
            error: result.err().map(|error| format!("{error:#}")),
        });
    }

    let plots = plots::draw_all(&collector.series, &directory)?;
    let report = report::Report {
        date_utc: host::now_utc(),
        commit: host::commit(),
        mode,
        machine: host,
        benchmarks: runs,
        figures: std::mem::take(&mut collector.figures),
        series: std::mem::take(&mut collector.series),
        plots,
    };
    report.write(&directory)?;
    println!();
    print!("{}", report.table());
    println!();
    println!("report: {}", directory.join("report.md").display());
    for plot in &report.plots {
        match &plot.file {
            Some(file) => println!("plot:   {}", directory.join(file).display()),
            None => println!("plot:   {}: not measured yet", plot.title),
        }
    }
    let failed: Vec<&str> = report
        .benchmarks
        .iter()
        .filter(|run| run.error.is_some())
        .map(|run| run.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_one(benchmark: Benchmark, collector: &mut Collector) -> Result<()> {
    match benchmark {
        Benchmark::Persist => run_bench_example("persist", collector),
        Benchmark::Vm => run_bench_example("vm", collector),
        Benchmark::Kernel => crate::bench::kernel::run(collector),
        Benchmark::Migrate => crate::bench::migrate::run(collector),
        Benchmark::Ipc => crate::bench::ipc::run(collector),
        Benchmark::Net => crate::bench::net::run(collector),
    }
}

/// What every QEMU benchmark starts with: the kernel built, its own
/// directory `target/amber/bench/NAME`, and the accelerator probed and
/// added to the collector's environment with `machine` (e.g. "256 MiB").
pub fn prepare_qemu(
    collector: &mut Collector,
    name: &str,
    machine: &str,
) -> Result<(PathBuf, PathBuf, Accel)> {
    collector.step("building the kernel");
    let kernel_elf = crate::kernel::build_kernel()?;
    let directory = paths::bench_dir().join(name);
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    collector.step("probing KVM");
    let accel = Accel::default_for_run(&kernel_elf);
    let accel_name = match accel {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG",
    };
    collector.set_environment(format!(
        "{} {accel_name}, {machine}",
        collector.environment()
    ));
    Ok((kernel_elf, directory, accel))
}

/// Builds `PACKAGE/examples/bench.rs` with `--release` and collects the
/// records it prints. Release in quick mode too: the xtask itself is a dev
/// build, where workspace members are at opt-level 1, and unoptimised
/// wasmi loses its tail calls and overflows the stack on a long loop. Its
/// argument is target/amber/bench/PACKAGE, for images and files on the
/// real disk.
fn run_bench_example(package: &str, collector: &mut Collector) -> Result<()> {
    let mut arguments = vec![paths::bench_dir().join(package).into_os_string()];
    if collector.mode() == Mode::Quick {
        arguments.push("--quick".into());
    }
    run_release_example(package, "bench", &arguments, collector)
}

/// Builds xtask itself with `--release` and returns the program: the host
/// runner a benchmark measures. The running xtask is a dev build, whose
/// wasmi, instantiated in xtask at opt-level 1, interprets a third as fast
/// (redis SET 6,800 against 19,300 requests/s on the development machine).
pub fn release_xtask(collector: &mut Collector) -> Result<PathBuf> {
    collector.step("building the host runner (release)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--bin",
            "xtask",
        ])
        .current_dir(paths::workspace_root())
        .stdin(Stdio::null())
        .status()
        .context("running cargo build for the release host runner")?;
    if !status.success() {
        bail!("cargo build --release -p xtask exited with {status}");
    }
    let program = paths::workspace_root()
        .join("target")
        .join("release")
        .join(format!("xtask{}", std::env::consts::EXE_SUFFIX));
    if !program.is_file() {
        bail!("the release build left no {}", program.display());
    }
    Ok(program)
}

/// Builds `PACKAGE/examples/EXAMPLE.rs` with `--release`, runs it with
/// `arguments` and collects the records it prints (see [`run_bench_example`]).
pub fn run_release_example(
    package: &str,
    example: &str,
    arguments: &[OsString],
    collector: &mut Collector,
) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        package,
        "--example",
        example,
        "--",
    ]);
    command.args(arguments);
    // "the vm benchmark", "the bench_ipc_host benchmark".
    let package = if example == "bench" { package } else { example };
    collector.step(format!("building the {package} benchmark"));
    let mut child = command
        .current_dir(paths::workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo for the {package} benchmark"))?;
    let stdout = child
        .stdout
        .take()
        .context("the benchmark's standard output")?;
    let mut failure = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("reading the {package} benchmark's output"))?;
        match record::parse_line(&line) {
            None => collector.print_text(&line),
            Some(Ok(record)) => {
                if let Err(error) = collector.record(record) {
                    failure.get_or_insert(error);
                }
            }
            Some(Err(error)) => {
                failure.get_or_insert(anyhow::anyhow!("bad record {line:?}: {error}"));
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for the {package} benchmark"))?;
    if !status.success() {
        bail!("the {package} benchmark exited with {status}");
    }
    failure.map_or(Ok(()), Err)
}
