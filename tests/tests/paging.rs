//! Demand paging under pressure: a domain larger than the machine's RAM.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tests::{ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, test_config, work_dir};

/// How long bigmem may take to write and check 512 MiB through 128 MiB of
/// RAM under TCG on a loaded machine (it takes well under a minute here).
const BIGMEM_TIMEOUT: Duration = Duration::from_secs(600);

/// The number after `label` in a `stats` line such as
/// `paging: 5 pages read in, 0 zero-filled, 7 evicted (3 written out)`.
fn paging_figure(lines: &[String], label: &str) -> Result<u64> {
    let line = lines
        .iter()
        .find(|line| line.starts_with("paging: "))
        .context("no paging line in stats")?;
    let before = line
        .split(label)
        .next()
        .filter(|before| before.len() < line.len())
        .with_context(|| format!("no {label:?} in {line:?}"))?;
    before
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|word| !word.is_empty())
        .context("no number")?
        .parse()
        .with_context(|| format!("bad figure before {label:?} in {line:?}"))
}

#[test]
fn a_domain_touching_512_mib_runs_and_verifies_under_128_mib_of_ram() -> Result<()> {
    let directory = work_dir("paging-bigmem")?;
    tests::build_apps()?;
    let image = xtask::image::new(&xtask::image::NewArgs {
        wasm: xtask::paths::apps_dir().join("bigmem.wasm"),
        name: "bigmem".into(),
        memory_max_mib: Some(640),
        size_mib: None,
        args: vec!["512".into()],
        env: Vec::new(),
        output: Some(directory.join("bigmem.img")),
        listen: Vec::new(),
        durable_replies: false,
    })?;
    let mut config = test_config()?;
    config.memory_mib = 128;
    config.disks = vec![image.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[bigmem] writing 512 MiB", BOOT_TIMEOUT)?;
    machine.expect("[bigmem] written 256 MiB", BIGMEM_TIMEOUT)?;
    machine.expect("[bigmem] verified 512 MiB", BIGMEM_TIMEOUT)?;
    let stats = machine.run_command("stats")?;
    let written_out = paging_figure(&stats, "written out")?;
    let read_in = paging_figure(&stats, "pages read in")?;
    // 512 MiB through at most ~90 MiB of frames: most pages went out dirty
    // and came back for the check.
    if written_out < 65_536 || read_in < 65_536 {
        bail!("too little paging for 512 MiB in 128 MiB: {stats:?}");
    }
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    // The image the pager and the commits wrote is sound.
    xtask::image::verify(&image)?;
    Ok(())
}
