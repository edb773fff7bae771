//! Boot tests: the prompt, the console's answers, power-off and fatal reports.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, FAILURE_EXIT_STATUS, Machine, boot_with_arguments, test_config,
};

#[test]
fn boots_to_the_prompt_with_a_banner() -> Result<()> {
    let started = Instant::now();
    let mut machine = Machine::boot(&test_config()?)?;
    let banner = machine.expect("Amber ", BOOT_TIMEOUT)?;
    assert!(banner.contains("PVH boot"), "banner: {banner}");
    assert!(banner.contains("MiB usable RAM"), "banner: {banner}");
    assert!(banner.contains("booted in"), "banner: {banner}");
    machine.expect_prompt(BOOT_TIMEOUT)?;
    eprintln!(
        "boot to prompt: {:.0} ms (host wall clock)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The MiB figure in `memory: N MiB usable ...`.
fn usable_mib(lines: &[String]) -> Result<u64> {
    let line = lines
        .iter()
        .find(|line| line.starts_with("memory: "))
        .context("no 'memory:' line in the answer to mem")?;
    let figure = line
        .split_whitespace()
        .nth(1)
        .context("no figure after 'memory:'")?;
    figure
        .parse()
        .with_context(|| format!("bad figure in {line:?}"))
}

#[test]
fn mem_matches_the_memory_qemu_was_given() -> Result<()> {
    for memory_mib in [128, 384] {
        let mut config = test_config()?;
        config.memory_mib = memory_mib;
        let mut machine = Machine::boot(&config)?;
        machine.expect_prompt(BOOT_TIMEOUT)?;
        let answer = machine.run_command("mem")?;
        let usable = usable_mib(&answer)?;
        // The firmware keeps the low 640 KiB hole and a little at the top.
        let lowest = u64::from(memory_mib) - 4;
        if !(lowest..=u64::from(memory_mib)).contains(&usable) {
            bail!("-m {memory_mib}M but mem says {usable} MiB usable: {answer:?}");
        }
        let frames = answer
            .iter()
            .find(|line| line.starts_with("frames: "))
            .context("no frames line")?;
        assert!(frames.contains(" free of "), "{frames}");
        assert!(
            answer.iter().any(|line| line.starts_with("heap: ")),
            "no heap line: {answer:?}"
        );
    }
    Ok(())
}

#[test]
fn help_lists_the_commands_and_unknown_ones_are_refused() -> Result<()> {
    let mut machine = Machine::boot(&test_config()?)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let help = machine.run_command("help")?;
    for command in ["help", "mem", "shutdown"] {
        assert!(
            help.iter()
                .any(|line| line.trim_start().starts_with(command)),
            "help does not list {command}: {help:?}"
        );
    }
    let answer = machine.run_command("frobnicate now")?;
    assert_eq!(
        answer,
        ["unknown command 'frobnicate': type 'help' for the list"]
    );
    Ok(())
}

#[test]
fn shutdown_powers_off_with_success() -> Result<()> {
    let mut machine = Machine::boot(&test_config()?)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)
}

#[test]
fn a_page_fault_is_reported_and_stops_qemu_with_failure() -> Result<()> {
    let mut machine = boot_with_arguments("test=page-fault")?;
    let report = machine.expect("EXCEPTION: page fault (vector 14)", BOOT_TIMEOUT)?;
    assert!(report.contains("CR2 0xdeadb000"), "report: {report}");
    assert!(report.contains("RIP 0xffffffff8"), "report: {report}");
    assert!(report.contains("error code 0x0"), "report: {report}");
    machine.expect("amber: stopped by a fatal exception", ANSWER_TIMEOUT)?;
    machine.expect_exit(FAILURE_EXIT_STATUS, ANSWER_TIMEOUT)
}

#[test]
fn a_panic_is_reported_with_its_location_and_stops_qemu_with_failure() -> Result<()> {
    let mut machine = boot_with_arguments("test=panic")?;
    let report = machine.expect("PANIC: self-test panic requested", BOOT_TIMEOUT)?;
    assert!(
        report.contains("kernel/src/diagnostics/selftest.rs:"),
        "report: {report}"
    );
    machine.expect("amber: stopped by a panic", ANSWER_TIMEOUT)?;
    machine.expect_exit(FAILURE_EXIT_STATUS, ANSWER_TIMEOUT)
}

#[test]
fn interrupts_leave_sse_state_intact() -> Result<()> {
    let mut machine = boot_with_arguments("test=sse")?;
    let report = machine.expect("self-test sse: passed", BOOT_TIMEOUT)?;
    assert!(report.contains("timer interrupts"), "report: {report}");
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    Ok(())
}

#[test]
fn the_harness_reports_a_timeout_with_the_transcript() -> Result<()> {
    let mut machine = Machine::boot(&test_config()?)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let error = machine
        .expect("this text never appears", Duration::from_millis(300))
        .err()
        .context("expect found text that was never printed")?;
    let message = format!("{error:#}");
    assert!(message.contains("timed out"), "{message}");
    assert!(message.contains("----- transcript -----"), "{message}");
    assert!(message.contains("Amber "), "{message}");
    Ok(())
}
