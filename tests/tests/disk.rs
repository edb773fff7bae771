//! virtio-blk tests: disks are listed, written, flushed and land on the host.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tests::{ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, test_config};

const BLOCK_SIZE: usize = 4096;
const MIB: u64 = 1024 * 1024;

/// A directory removed when dropped, for disk files.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("amber-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    /// A blank (sparse) raw disk of `size_mib` MiB.
    fn blank_disk(&self, name: &str, size_mib: u64) -> Result<PathBuf> {
        let path = self.0.join(name);
        File::create(&path)
            .and_then(|file| file.set_len(size_mib * MIB))
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What kernel/src/diagnostics/selftest.rs writes: a title, then byte i = (i * 31 + 7) mod 256.
fn self_test_pattern() -> Vec<u8> {
    let mut block: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i * 31 + 7) as u8).collect();
    let title = b"Amber disk self-test block";
    block[..title.len()].copy_from_slice(title);
    block
}

fn last_block(path: &Path) -> Result<Vec<u8>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::End(-(BLOCK_SIZE as i64)))?;
    let mut block = vec![0; BLOCK_SIZE];
    file.read_exact(&mut block)?;
    Ok(block)
}

#[test]
fn two_blank_disks_are_listed_with_their_sizes() -> Result<()> {
    let directory = TempDir::new("disks-listed")?;
    let mut config = test_config()?;
    config.disks = vec![
        directory.blank_disk("a.img", 8)?,
        directory.blank_disk("b.img", 24)?,
    ];
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let answer = machine.run_command("disks")?;
    let listed: Vec<&String> = answer
        .iter()
        // The probe's log lines say the same after a timestamp.
        .filter(|line| line.starts_with("disk "))
        .collect();
    if listed.len() != 2 {
        bail!("expected two disks, got {answer:?}");
    }
    assert!(
        listed[0].starts_with("disk 0: 8 MiB at PCI 00:") && listed[0].ends_with("(2048 blocks)"),
        "{answer:?}"
    );
    assert!(
        listed[1].starts_with("disk 1: 24 MiB at PCI 00:") && listed[1].ends_with("(6144 blocks)"),
        "{answer:?}"
    );
    Ok(())
}

#[test]
fn the_disk_self_test_writes_through_to_the_host_file() -> Result<()> {
    let directory = TempDir::new("disk-self-test")?;
    let first = directory.blank_disk("first.img", 16)?;
    let second = directory.blank_disk("second.img", 4)?;
    let mut config = test_config()?;
    config.append = "test=disk".into();
    config.disks = vec![first.clone(), second.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect(
        "self-test disk: passed (2 disks, first has 4096 blocks)",
        BOOT_TIMEOUT,
    )?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    assert!(
        last_block(&first)? == self_test_pattern(),
        "the first disk's last block does not hold the self-test pattern"
    );
    assert!(
        last_block(&second)?.iter().all(|byte| *byte == 0),
        "the second disk was written"
    );
    Ok(())
}

#[test]
fn without_disks_the_kernel_boots_and_says_no_disks() -> Result<()> {
    let mut machine = Machine::boot(&test_config()?)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let answer = machine.run_command("disks")?;
    assert!(answer.iter().any(|line| line == "no disks"), "{answer:?}");
    Ok(())
}
