//! A disk whose newest commit is damaged: refused in one line, rolled back by hand.
//!
//! counter runs and shuts down (its image then holds several commits), one
//! byte of its newest commit's metadata is flipped, and the next boot must
//! refuse that disk with one line naming the damaged and the intact commit
//! and the console command, boot hello beside it, and on `rollback N` run
//! counter again from the intact commit, with the rollback recorded in the
//! image.

use anyhow::{Context, Result, bail};
use tests::{ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, count_of, domain_image, test_config, work_dir};

const BLOCK_SIZE: usize = 4096;

/// Offsets in a superblock (persist's layout.rs): the sequence and the
/// metadata chain's first block.
const SEQUENCE: usize = 16;
const METADATA_BLOCK: usize = 48;

fn u64_at(bytes: &[u8], offset: usize) -> Result<u64> {
    let field = bytes
        .get(offset..offset + 8)
        .context("the image is shorter than a superblock")?;
    Ok(u64::from_le_bytes(field.try_into()?))
}

/// Flips a byte of the newest commit's metadata block; returns the
/// newest commit's sequence number.
fn damage_newest_commit(path: &std::path::Path) -> Result<u64> {
    let mut bytes = std::fs::read(path)?;
    let sequences = [
        u64_at(&bytes, SEQUENCE)?,
        u64_at(&bytes, BLOCK_SIZE + SEQUENCE)?,
    ];
    let newest_slot = usize::from(sequences[1] > sequences[0]);
    let block = u64_at(&bytes, newest_slot * BLOCK_SIZE + METADATA_BLOCK)? as usize;
    let byte = bytes
        .get_mut(block * BLOCK_SIZE + 100)
        .context("the metadata block lies past the end of the image")?;
    *byte ^= 0x10;
    std::fs::write(path, &bytes)?;
    Ok(sequences[newest_slot])
}

#[test]
fn a_damaged_newest_commit_is_refused_at_boot_and_rolled_back_from_the_console() -> Result<()> {
    let directory = work_dir("rollback")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let hello = domain_image(&directory, "hello", "hello")?;
    let mut config = test_config()?;
    config.disks = vec![counter.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[counter] count 5", BOOT_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    let damaged = damage_newest_commit(&counter)?;

    config.disks = vec![counter.clone(), hello];
    let mut machine = Machine::boot(&config)?;
    let refused = machine.expect(&format!("commit {damaged} is damaged"), BOOT_TIMEOUT)?;
    println!("boot: {refused}");
    let disk_index: usize = refused
        .split_once("disk ")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|number| number.parse().ok())
        .context("the refusal names no disk")?;
    for words in [
        "refused: ",
        "is intact",
        &format!("type 'rollback {disk_index}'"),
    ] {
        if !refused.contains(words) {
            bail!("the refusal line lacks {words:?}: {refused}");
        }
    }
    // The rest boots.
    machine.expect("[hello] exited(0)", BOOT_TIMEOUT)?;

    machine.send_line(&format!("rollback {disk_index}"))?;
    let answer = machine.expect(&format!("disk {disk_index}: rolled back"), ANSWER_TIMEOUT)?;
    println!("console: {answer}");
    if !answer.contains(&format!("commit {damaged} was damaged and is discarded")) {
        bail!("the rollback answer does not name the damaged commit: {answer}");
    }
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    let line = machine.expect("[counter] count ", ANSWER_TIMEOUT)?;
    count_of("counter", &line).context("unreadable count after the rollback")?;
    let table = machine.run_command("ps")?;
    if !table
        .iter()
        .any(|row| row.starts_with("counter") && row.contains("running"))
    {
        bail!("counter is not running after the rollback: {table:?}");
    }
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;

    let (_, record) = xtask::image::verify_with_record(&counter)?;
    let record = record.context("the image does not record the rollback")?;
    if record.damaged_sequence != damaged {
        bail!("the image records {record}, not commit {damaged}");
    }
    Ok(())
}
