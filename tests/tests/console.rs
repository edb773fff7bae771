//! The console: line editing, history, unknown commands, kill.

use anyhow::Result;
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, boot_with_arguments, domain_image, test_config, work_dir,
};

#[test]
fn lines_are_edited_with_cursor_keys_and_recalled_from_history() -> Result<()> {
    let mut machine = boot_with_arguments("")?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    // "uptme", Left twice, "i": "uptime".
    machine.send_line("uptme\x1b[D\x1b[Di")?;
    machine.expect("up ", ANSWER_TIMEOUT)?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    // Up recalls it.
    machine.send_line("\x1b[A")?;
    machine.expect("up ", ANSWER_TIMEOUT)?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    // Ctrl-A goes home: "x" lands before "help".
    machine.send_line("help\x01x")?;
    machine.expect(
        "unknown command 'xhelp': type 'help' for the list",
        ANSWER_TIMEOUT,
    )?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    // Ctrl-C drops a line; Backspace and Delete remove characters.
    machine.send_line("bogus\x03")?;
    machine.send_line("uptimee\x7f")?;
    machine.expect("up ", ANSWER_TIMEOUT)?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    machine.send_line("xuptime\x01\x1b[3~")?;
    machine.expect("up ", ANSWER_TIMEOUT)?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    let transcript = machine.transcript();
    assert!(!transcript.contains("'bogus"), "{transcript}");
    assert!(!transcript.contains("'uptimee'"), "{transcript}");
    Ok(())
}

#[test]
fn kill_ends_a_domain_for_good_and_says_so_for_unknown_names() -> Result<()> {
    let directory = work_dir("console-kill")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut config = test_config()?;
    config.disks = vec![counter.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[counter] count 3", BOOT_TIMEOUT)?;
    let answer = machine.run_command("kill counter")?;
    assert!(
        answer.iter().any(|line| line == "counter: killed"),
        "{answer:?}"
    );
    let answer = machine.run_command("kill nobody")?;
    assert!(
        answer
            .iter()
            .any(|line| line == "error: no domain named 'nobody' (see ps)"),
        "{answer:?}"
    );
    let table = machine.run_command("ps")?;
    assert!(
        table
            .iter()
            .any(|line| line.starts_with("counter ") && line.contains("killed")),
        "{table:?}"
    );
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    // Killed stays killed.
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let table = machine.run_command("ps")?;
    assert!(
        table
            .iter()
            .any(|line| line.starts_with("counter ") && line.contains("killed")),
        "{table:?}"
    );
    Ok(())
}
