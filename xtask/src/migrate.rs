//! `cargo xtask migrate offline`: a stopped domain moves between two QEMU runs.
//!
//! Machine A boots with the domain's image, runs it a little, stops it
//! (`stop NAME`: a final commit and the status stopped) and shuts down. The
//! image file is copied to machine B's disk directory, and B boots with it:
//! the domain shows as stopped until `start NAME`, then goes on from where
//! it stopped on A. The two instances run one after the other, each driven
//! through its serial console with a deadline on every answer; QEMU is
//! killed on every path out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::machine::{ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine};
use crate::qemu::{Accel, Console, QemuConfig};
use crate::{app, image, kernel, paths, tools};

/// Migration subcommands.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Stop a domain on instance A, copy its image, start it on instance B.
    Offline(OfflineArgs),
}

/// `migrate offline`.
#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// The app to migrate (a fresh image of it is made for A).
    #[arg(long, default_value = "counter")]
    pub domain: String,
    /// Lines of the domain's output to wait for on each machine.
    #[arg(long, default_value_t = 5)]
    pub lines: usize,
    /// Accelerator for both instances (default: TCG, which boots fastest on
    /// nested virtualisation and needs nothing).
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: Accel,
}

pub fn run(command: MigrateCommand) -> Result<()> {
    match command {
        MigrateCommand::Offline(args) => offline(&args).map(|report| {
            println!("{report}");
        }),
    }
}

/// What an offline migration saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineReport {
    /// The domain's last output line on A.
    pub last_line_on_a: String,
    /// Its first output line on B.
    pub first_line_on_b: String,
}

impl std::fmt::Display for OfflineReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "migrated: last on A {:?}, first on B {:?}",
            self.last_line_on_a, self.first_line_on_b
        )
    }
}

/// Runs the whole offline round and checks the domain went on where it
/// stopped (for output ending in a number, exactly the next number).
pub fn offline(args: &OfflineArgs) -> Result<OfflineReport> {
    tools::make_sure_of(&tools::EVERYTHING)?;
    let name = args.domain.as_str();
    let kernel = kernel::build_kernel()?;
    let work = work_dir();
    let (dir_a, dir_b) = (work.join("a"), work.join("b"));
    for directory in [&dir_a, &dir_b] {
        if directory.exists() {
            std::fs::remove_dir_all(directory)
                .with_context(|| format!("clearing {}", directory.display()))?;
        }
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
    }
    let wasm = app::build_apps(&[name])?
        .into_iter()
        .next()
        .context("the app build returned no module")?;
    let image_a = image::new(&image::NewArgs {
        wasm,
        name: name.to_string(),
        memory_max_mib: None,
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(dir_a.join(format!("{name}.img"))),
        listen: Vec::new(),
        durable_replies: false,
    })?;
    let config = |disk: &Path| QemuConfig {
        kernel: kernel.clone(),
        memory_mib: 256,
        append: String::new(),
        accel: args.accel,
        console: Console::Stdio,
        disks: vec![disk.to_path_buf()],
        disk_options: std::collections::BTreeMap::new(),
        net: None,
        user_net: None,
        cluster_secret: None,
        nbd_disks: Vec::new(),
    };
    let prefix = format!("[{name}] ");

    eprintln!("migrate: booting A with {}", image_a.display());
    let mut machine_a = Machine::boot_named("A", &config(&image_a))?;
    for _ in 0..args.lines {
        machine_a.expect(&prefix, BOOT_TIMEOUT)?;
    }
    machine_a.send_line(&format!("stop {name}"))?;
    machine_a.expect(&format!("{name}: stopped"), ANSWER_TIMEOUT)?;
    let last_line_on_a = machine_a
        .last_line_with(&prefix)
        .map(|line| from_prefix(&line, &prefix))
        .context("A printed nothing before the stop")?;
    eprintln!("migrate: A stopped {name} after {last_line_on_a:?}; shutting A down");
    machine_a.send_line("shutdown")?;
    machine_a.expect_exit(0, ANSWER_TIMEOUT)?;

    let image_b = dir_b.join(format!("{name}.img"));
    std::fs::copy(&image_a, &image_b)
        .with_context(|| format!("copying {} to {}", image_a.display(), image_b.display()))?;
    eprintln!(
        "migrate: copied the image to {}; booting B",
        image_b.display()
    );

    let mut machine_b = Machine::boot_named("B", &config(&image_b))?;
    machine_b.expect_prompt(BOOT_TIMEOUT)?;
    machine_b.send_line("ps")?;
    let row = machine_b.expect_line_starting(name, ANSWER_TIMEOUT)?;
    if !row.contains("stopped") {
        bail!(machine_b.failure(&format!("{name} is not stopped on B: {row:?}")));
    }
    if machine_b.last_line_with(&prefix).is_some() {
        bail!(machine_b.failure(&format!("{name} ran on B before `start`")));
    }
    eprintln!("migrate: B shows {name} stopped; starting it");
    machine_b.send_line(&format!("start {name}"))?;
    // Domain output may follow the prompt on the same line.
    let first_line_on_b = from_prefix(&machine_b.expect(&prefix, ANSWER_TIMEOUT)?, &prefix);
    for _ in 1..args.lines {
        machine_b.expect(&prefix, ANSWER_TIMEOUT)?;
    }
    if let (Some(last), Some(first)) = (
        trailing_number(&last_line_on_a),
        trailing_number(&first_line_on_b),
    ) && first != last + 1
    {
        bail!(machine_b.failure(&format!(
            "{name} stopped at {last} on A and went on at {first} on B (wanted {})",
            last + 1
        )));
    }
    eprintln!("migrate: B goes on with {first_line_on_b:?}; shutting B down");
    machine_b.send_line("shutdown")?;
    machine_b.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(OfflineReport {
        last_line_on_a,
        first_line_on_b,
    })
}

/// `line` from the first `prefix` on (`amber> [counter] count 6` gives
/// `[counter] count 6`).
fn from_prefix(line: &str, prefix: &str) -> String {
    line.find(prefix)
        .map_or(line, |start| &line[start..])
        .trim_end()
        .to_string()
}

/// The number a line ends with (`[counter] count 41` gives 41).
pub fn trailing_number(line: &str) -> Option<u64> {
    line.split_whitespace().last()?.parse().ok()
}

/// Where `migrate offline` keeps A's and B's disks.
pub fn work_dir() -> PathBuf {
    paths::amber_dir().join("migrate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_numbers_are_read_from_counter_lines() {
        assert_eq!(trailing_number("[counter] count 41"), Some(41));
        assert_eq!(trailing_number("[hello] Hello from Amber!"), None);
        assert_eq!(trailing_number(""), None);
        assert_eq!(
            from_prefix("amber> [counter] count 6", "[counter] "),
            "[counter] count 6"
        );
    }
}
