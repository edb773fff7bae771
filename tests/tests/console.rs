//! The console: line editing, history, unknown commands, kill, and a line
//! typed while a domain prints.

use anyhow::Result;
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, boot_with_arguments, counts, domain_image, test_config,
    work_dir,
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
    // `decide` settles parked copies only, and says so of anything else.
    let answer = machine.run_command("decide counter run")?;
    assert!(
        answer
            .iter()
            .any(|line| line == "error: no copy of 'counter' is parked here"),
        "{answer:?}"
    );
    let answer = machine.run_command("decide counter maybe")?;
    assert!(
        answer
            .iter()
            .any(|line| line == "usage: decide NAME run|discard"),
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

/// `run --pair` puts machine B's console on a Unix socket in the user's
/// private directory: the directory is mode 0700, and a client connecting
/// to the socket (as `cargo xtask console` does) gets the prompt and
/// answers.
#[test]
fn a_unix_socket_console_is_private_and_answers() -> Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    let directory = xtask::private::private_dir()?;
    let mode = std::fs::metadata(&directory)?.permissions().mode();
    anyhow::ensure!(
        mode & 0o777 == 0o700,
        "{} has mode {mode:o}",
        directory.display()
    );
    let socket = directory.join(xtask::paths::unique_name("console-test", "sock"));
    let mut config = test_config()?;
    config.console = tests::Console::UnixSocket(socket.clone());
    let machine = Machine::boot(&config)?;
    // QEMU creates the socket while it starts.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut stream = loop {
        match UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(error) if Instant::now() >= deadline => {
                return Err(
                    machine.failure(&format!("connecting to {}: {error}", socket.display()))
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut asked = false;
    while !seen.contains("NAME") {
        if Instant::now() >= deadline {
            return Err(machine.failure(&format!("no `ps` header on the socket: {seen:?}")));
        }
        // The prompt may have gone out before the client connected: Enter
        // brings a new one, then `ps` asks.
        if !asked {
            stream.write_all(b"\r")?;
        }
        if !asked && seen.contains("amber> ") {
            stream.write_all(b"ps\r")?;
            asked = true;
        }
        match stream.read(&mut buffer) {
            Ok(count) => seen.push_str(&String::from_utf8_lossy(&buffer[..count])),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(error.into()),
        }
    }
    drop(machine);
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

#[test]
fn a_command_typed_while_counter_prints_is_drawn_again_below_and_answered() -> Result<()> {
    let directory = work_dir("console-typing")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut config = test_config()?;
    config.disks = vec![counter];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[counter] count 3", BOOT_TIMEOUT)?;
    // Half a command, then counter prints three times before the rest.
    machine.type_text("upt")?;
    let typed_at = machine.transcript().len();
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    while counts("counter", &machine.transcript()[typed_at..]).len() < 3 {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("counter stopped printing while a line was typed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    machine.send_line("ime")?;
    let answer = machine.expect("up ", ANSWER_TIMEOUT)?;
    let transcript = machine.transcript();
    let typing = &transcript[typed_at..];
    // Each line counter printed meanwhile cleared the input line first and
    // drew the prompt and "upt" again below itself.
    // (The transcript drops carriage returns.)
    let redrawn = typing.matches("\x1b[K[counter] count ").count();
    let drawn_again = typing.matches("\n\x1b[Kamber> upt\x1b[K").count();
    println!(
        "{redrawn} lines printed over the input, which was drawn again {drawn_again} times; answer {answer:?}"
    );
    if redrawn < 3 || drawn_again < 3 {
        anyhow::bail!("the typed line was not drawn again below the output: {typing:?}");
    }
    if !answer.trim_start_matches(['\r', '\n']).starts_with("up ") {
        anyhow::bail!("the answer is not on a clean line: {answer:?}");
    }
    Ok(())
}
