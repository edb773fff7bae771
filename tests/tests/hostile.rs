//! Hostile guests end alone, each with one clear line; the others run on.
//!
//! The modules are apps/hostile/*.wat (its README lists them). Each boot
//! runs the `counter` app beside several of them and checks that every
//! hostile domain gets exactly one console line naming it and why it ended
//! (or, for a disk that cannot run, one `disk N: refused:` line), that
//! counter keeps counting all along, that `ps` still answers, and that
//! `shutdown` powers off cleanly.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, domain_image, last_count, test_config, work_dir,
};
use vm::MAX_MODULE_BYTES;
use xtask::image::NewArgs;

/// How many counts counter must add to show it is still making progress.
const MINIMUM_PROGRESS: u64 = 10;

/// How long counter may take for them. It counts every 100 ms, so alone it
/// needs about a second; the margin is for a loaded machine under TCG (the
/// QEMU tests run in parallel on few cores), never for the domains under
/// test, which would stop it for good, not slow it down.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);

/// A hostile app and the status line it must end with.
struct Case {
    name: &'static str,
    /// What follows `[name] ` on the one line that reports the end.
    ending: &'static str,
}

const fn case(name: &'static str, ending: &'static str) -> Case {
    Case { name, ending }
}

/// Guests that trap (or, for float_edges, must not) in their first slices.
const TRAPS: [Case; 15] = [
    case(
        "oob_load",
        "error: trapped: wasm trap: out of bounds memory access",
    ),
    case(
        "oob_store",
        "error: trapped: wasm trap: out of bounds memory access",
    ),
    case(
        "unreachable",
        "error: trapped: wasm trap: wasm `unreachable` instruction executed",
    ),
    case(
        "deep_recursion",
        "error: trapped: wasm trap: call stack exhausted",
    ),
    case(
        "wrong_indirect_type",
        "error: trapped: wasm trap: indirect call type mismatch",
    ),
    case(
        "indirect_null",
        "error: trapped: wasm trap: indirect call to an uninitialized table element",
    ),
    case(
        "div_zero",
        "error: trapped: wasm trap: integer divide by zero",
    ),
    case(
        "div_overflow",
        "error: trapped: wasm trap: integer overflow",
    ),
    case(
        "trunc_nan",
        "error: trapped: wasm trap: invalid conversion to integer",
    ),
    case(
        "trunc_infinity",
        "error: trapped: wasm trap: integer overflow",
    ),
    case(
        "bad_log",
        "error: trapped: log: pointer 0x10 with length 2147483647 lies outside the 65536-byte memory",
    ),
    case(
        "bad_fd_write",
        "error: trapped: fd_write: pointer 0xfffffff0 with length 256 lies outside the 65536-byte memory",
    ),
    case(
        "bad_iovec_count",
        "error: trapped: fd_write: pointer 0x10000 with length 4 lies outside the 65536-byte memory",
    ),
    case(
        "bad_recv",
        "error: trapped: recv: pointer 0x0 with length 2147483647 lies outside the 65536-byte memory",
    ),
    case("float_edges", "exited(0)"),
];

/// The .wat file of hostile app `name`, assembled.
fn hostile_module(name: &str) -> Result<Vec<u8>> {
    let path = xtask::paths::workspace_root()
        .join("apps")
        .join("hostile")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).with_context(|| format!("assembling {}", path.display()))
}

/// `image new` of `module` as domain `name` in `directory`.
fn module_image(directory: &Path, name: &str, module: &[u8]) -> Result<PathBuf> {
    let wasm = directory.join(format!("{name}.wasm"));
    std::fs::write(&wasm, module).with_context(|| format!("writing {}", wasm.display()))?;
    xtask::image::new(&NewArgs {
        wasm,
        name: name.into(),
        memory_max_mib: None,
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(directory.join(format!("{name}.img"))),
        listen: Vec::new(),
        durable_replies: false,
    })
}

/// An image of hostile app `name`; the domain has the same name.
fn hostile_image(directory: &Path, name: &str) -> Result<PathBuf> {
    module_image(directory, name, &hostile_module(name)?)
}

/// An image holding `module` byte for byte, past every check `image new`
/// makes: what a tampered or foreign disk could hold.
fn raw_image(directory: &Path, name: &str, module: &[u8]) -> Result<PathBuf> {
    let path = directory.join(format!("{name}.img"));
    let blocks = 1024 + (module.len() as u64).div_ceil(4000);
    let device = persist::FileDevice::create(&path, blocks)
        .map_err(|error| anyhow!("creating {}: {error}", path.display()))?;
    persist::Image::create(
        device,
        persist::NewDomain {
            id: persist::DomainId::from_le_bytes(*b"hostile raw disk"),
            name,
            module,
            memory_pages: 1,
            memory_max_pages: 16,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .map_err(|error| anyhow!("writing {}: {error}", path.display()))?;
    Ok(path)
}

/// Periodic checkpoints only once a minute: every commit waits for the
/// host to flush the image, which on a busy host stalls the whole (polling)
/// kernel for a while, and the cases here need no periodic commits.
const FEW_CHECKPOINTS: &str = "checkpoint-ms=60000";

fn boot(disks: &[PathBuf]) -> Result<Machine> {
    let mut config = test_config()?;
    config.append = FEW_CHECKPOINTS.into();
    config.disks = disks.to_vec();
    Machine::boot(&config)
}

/// Waits until every line in `lines` has appeared in full.
fn wait_for_lines(machine: &Machine, lines: &[String], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let transcript = machine.transcript();
        let missing: Vec<&String> = lines
            .iter()
            .filter(|wanted| !transcript.lines().any(|line| line == wanted.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "after {} s still missing {missing:?}\n----- transcript -----\n{transcript}",
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The lines that report how `name` ended (trapped or exited).
fn ending_lines<'a>(transcript: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("[{name}] ");
    transcript
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter(|line| line.contains("trapped") || line.contains("exited"))
        .collect()
}

/// Checks that `name` got exactly one line reporting how it ended, and
/// that it is `[name] ending`.
fn check_one_ending_line(transcript: &str, name: &str, ending: &str) -> Result<()> {
    let endings = ending_lines(transcript, name);
    if endings != [format!("[{name}] {ending}")] {
        bail!("{name}: wanted one line `[{name}] {ending}`, got {endings:?}");
    }
    Ok(())
}

/// Waits for counter to add `MINIMUM_PROGRESS` counts to its last one;
/// returns the count reached.
fn check_counter_progresses(machine: &Machine) -> Result<u64> {
    let before =
        last_count("counter", &machine.transcript()).context("counter has not counted yet")?;
    let started = Instant::now();
    loop {
        let now =
            last_count("counter", &machine.transcript()).context("counter stopped printing")?;
        if now >= before + MINIMUM_PROGRESS {
            eprintln!(
                "counter went from {before} to {now} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(now);
        }
        if started.elapsed() >= PROGRESS_DEADLINE {
            bail!(
                "counter went from {before} to only {now} in {} s\n----- transcript -----\n{}",
                PROGRESS_DEADLINE.as_secs(),
                machine.transcript()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Column `column` of `ps` in the row of `name`.
fn ps_cell(table: &[String], name: &str, column: &str) -> Result<String> {
    let header = table
        .iter()
        .find(|line| line.starts_with("NAME "))
        .context("no ps header")?;
    let index = header
        .split_whitespace()
        .position(|word| word == column)
        .with_context(|| format!("no {column} column"))?;
    let row = table
        .iter()
        .find(|line| line.split_whitespace().next() == Some(name))
        .with_context(|| format!("no row for {name} in {table:?}"))?;
    // Only the last column (FUEL) is read past STATUS, whose text may hold
    // spaces when a domain trapped: count columns from the end there.
    let words: Vec<&str> = row.split_whitespace().collect();
    let columns = header.split_whitespace().count();
    let word = if index + 1 == columns {
        words.last().copied()
    } else {
        words.get(index).copied()
    };
    word.map(String::from)
        .with_context(|| format!("short row {row:?}"))
}

/// Shuts the machine down and checks that QEMU exits with status 0.
fn shut_down(machine: &mut Machine) -> Result<()> {
    machine.send_line("shutdown")?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)
}

fn check_no_panic(machine: &Machine) -> Result<()> {
    let transcript = machine.transcript();
    if transcript.contains("panic") || transcript.contains("EXCEPTION") {
        bail!("the kernel faulted:\n{transcript}");
    }
    Ok(())
}

#[test]
fn traps_end_only_their_own_domain_with_one_line_each() -> Result<()> {
    let directory = work_dir("hostile-traps")?;
    let mut disks = vec![domain_image(&directory, "counter", "counter")?];
    for case in &TRAPS {
        disks.push(hostile_image(&directory, case.name)?);
    }
    let started = Instant::now();
    let mut machine = boot(&disks)?;
    let mut wanted: Vec<String> = TRAPS
        .iter()
        .map(|case| format!("[{}] {}", case.name, case.ending))
        .collect();
    wanted.push("[float_edges] float edges: all 20 checks passed".into());
    wanted.push("[bad_iovec_count] writing 2^31-1 iovecs...".into());
    machine.expect_prompt(BOOT_TIMEOUT)?;
    wait_for_lines(&machine, &wanted, BOOT_TIMEOUT)?;
    check_counter_progresses(&machine)?;
    let table = machine.run_command("ps")?;
    assert_eq!(
        ps_cell(&table, "counter", "STATUS")?,
        "running",
        "{table:?}"
    );
    for case in &TRAPS {
        let status = ps_cell(&table, case.name, "STATUS")?;
        assert!(case.ending.contains(&status), "{}: {table:?}", case.name);
    }
    shut_down(&mut machine)?;
    let transcript = machine.transcript();
    for case in &TRAPS {
        check_one_ending_line(&transcript, case.name, case.ending)?;
    }
    check_no_panic(&machine)?;
    eprintln!("traps boot took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Bytes that are no wasm module at all.
const NOT_WASM: &[u8] = b"#!/bin/sh\necho this is not a wasm module\n";

/// A module importing a memory of 65,537 pages, one more than a 32-bit
/// memory may have (Wasm spec 3.2.5, memory types): the header, then an
/// import section with env.memory and limits {min: 65537} (LEB128 81 80 04).
const MEMORY_BEYOND_LIMIT: &[u8] = &[
    0x00, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x02, 0x11, 0x01, // import section, 17 bytes, one import
    0x03, b'e', b'n', b'v', 0x06, b'm', b'e', b'm', b'o', b'r', b'y', //
    0x02, 0x00, 0x81, 0x80, 0x04, // memory, no maximum, 65537 pages
];

/// A valid module whose data segment holds `data_bytes` bytes.
fn module_with_data(data_bytes: usize) -> Result<Vec<u8>> {
    let data = "a".repeat(data_bytes);
    let text = format!(
        r#"(module
            (import "env" "memory" (memory 256 256))
            (data (i32.const 0) "{data}")
            (func (export "_start")))"#
    );
    wat::parse_str(&text).context("assembling a module with a large data segment")
}

/// A valid module of `count` empty functions (4 bytes each): small, but
/// compiling a million of them once took more than the kernel heap.
fn many_functions(count: usize) -> Result<Vec<u8>> {
    let text = format!(
        r#"(module (import "env" "memory" (memory 1 1)) {} (func (export "_start")))"#,
        "(func)".repeat(count)
    );
    wat::parse_str(&text).context("assembling a module of many functions")
}

/// A disk that cannot run and the start of the reason the kernel gives.
struct Refused {
    name: &'static str,
    image: PathBuf,
    reason: String,
}

/// Checks for exactly one `disk N: refused: REASON...` line per refusal.
fn check_refusals(transcript: &str, refused: &[(usize, &Refused)]) -> Result<()> {
    for (disk, refusal) in refused {
        let prefix = format!("disk {disk}: refused: ");
        let lines: Vec<&str> = transcript
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .collect();
        let is_right =
            lines.len() == 1 && lines[0][prefix.len()..].starts_with(refusal.reason.as_str());
        if !is_right {
            bail!(
                "{} (disk {disk}): wanted one line `{prefix}{}...`, got {lines:?}",
                refusal.name,
                refusal.reason
            );
        }
    }
    Ok(())
}

/// Checks what `fake_output` printed: no control byte in any of its lines,
/// its flood cut at the per-second budget with a line saying so.
fn check_fake_output(transcript: &str) -> Result<()> {
    let lines: Vec<&str> = transcript
        .lines()
        .filter(|line| line.starts_with("[fake_output] "))
        .collect();
    if let Some(line) = lines
        .iter()
        .find(|line| line.chars().any(|character| character.is_control()))
    {
        bail!("fake_output printed a control character: {line:?}");
    }
    // Its fake prompt stays behind its name: the test driver, which waits
    // for the prompt at the start of a line, never took it for the real one.
    if !lines.contains(&"[fake_output] amber> ps") {
        bail!("fake_output's fake prompt is missing or not behind its name: {lines:?}");
    }
    let spam = lines
        .iter()
        .filter(|line| **line == "[fake_output] spam")
        .count();
    let limit = vm::MAX_OUTPUT_LINES_PER_SECOND as usize;
    let notes = lines
        .iter()
        .filter(|line| line.starts_with("[fake_output] warn: (output dropped: "))
        .count();
    // The flood takes well under a second, but a loaded host may split it
    // across two of the budget's windows.
    if spam == 0 || spam > 2 * limit || notes == 0 || notes > 2 {
        bail!("fake_output: {spam} flood lines, {notes} notes: {lines:?}");
    }
    let shown: Vec<&&str> = lines
        .iter()
        .filter(|line| !line.ends_with("] ") && **line != "[fake_output] spam")
        .collect();
    eprintln!("fake_output printed {spam} flood lines, and: {shown:#?}");
    Ok(())
}

/// At least how long `ps` is watched for the endless loop's fuel to grow.
const FUEL_WINDOW: Duration = Duration::from_secs(2);

#[test]
fn runaway_guests_are_contained_and_bad_modules_refused() -> Result<()> {
    let directory = work_dir("hostile-resources")?;
    let mut disks = vec![domain_image(&directory, "counter", "counter")?];
    for name in [
        "endless_loop",
        "grow_bomb",
        "message_flood",
        "big_log",
        "fake_output",
    ] {
        disks.push(hostile_image(&directory, name)?);
    }
    let unreachable = hostile_module("unreachable")?;
    let refusals = [
        Refused {
            name: "not_wasm",
            image: raw_image(&directory, "not_wasm", NOT_WASM)?,
            reason: "invalid wasm module: ".into(),
        },
        Refused {
            name: "truncated",
            image: raw_image(
                &directory,
                "truncated",
                &unreachable[..unreachable.len() / 2],
            )?,
            reason: "invalid wasm module: ".into(),
        },
        Refused {
            name: "memory_beyond_limit",
            image: raw_image(&directory, "memory_beyond_limit", MEMORY_BEYOND_LIMIT)?,
            reason: "invalid wasm module: ".into(),
        },
        Refused {
            name: "module_over_limit",
            image: raw_image(
                &directory,
                "module_over_limit",
                &vec![0; MAX_MODULE_BYTES + 1],
            )?,
            reason: format!(
                "the module is {} bytes, more than the {MAX_MODULE_BYTES} a domain's module may have",
                MAX_MODULE_BYTES + 1
            ),
        },
        Refused {
            name: "many_functions",
            // `image new` refuses it (vm::check_module), as the kernel does.
            image: raw_image(&directory, "many_functions", &many_functions(999_000)?)?,
            reason: "invalid wasm module: the Wasm modules exceeds the limit of 10000 functions"
                .into(),
        },
        Refused {
            name: "data_out_of_bounds",
            image: hostile_image(&directory, "data_out_of_bounds")?,
            reason: "instantiation failed: ".into(),
        },
    ];
    let mut refused = Vec::new();
    for refusal in &refusals {
        refused.push((disks.len(), refusal));
        disks.push(refusal.image.clone());
    }
    let started = Instant::now();
    let mut machine = boot(&disks)?;
    let wanted = [
        "[endless_loop] spinning forever without host calls",
        "[grow_bomb] memory.grow refused at 1024 pages; all 1024 pages intact",
        "[grow_bomb] exited(0)",
        "[message_flood] flood: 4 accepted, then mailbox full; too large and no such domain refused",
        "[message_flood] exited(0)",
        "[big_log] (log message cut: 16773120 more bytes)",
        "[big_log] exited(0)",
        // Shown, not obeyed: no byte of it moves the cursor or colours.
        "[fake_output] \\x1b[2K\\x0d[counter] count 999999\\x1b[1A\\x08\\x7f",
        "[fake_output] (log message cut: 4033 more bytes)",
        "[fake_output] exited(0)",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("[big_log] {}", "x".repeat(4096))])
    .collect::<Vec<_>>();
    machine.expect_prompt(BOOT_TIMEOUT)?;
    wait_for_lines(&machine, &wanted, 2 * BOOT_TIMEOUT)?;
    // The loop never calls the host: only fuel preempts it. It must stay
    // running and keep burning fuel while counter keeps counting.
    let between_ps = Instant::now();
    let before = machine.run_command("ps")?;
    let count_before = check_counter_progresses(&machine)?;
    thread::sleep(FUEL_WINDOW);
    let after = machine.run_command("ps")?;
    let fuel_seconds = between_ps.elapsed().as_secs_f64();
    for table in [&before, &after] {
        assert_eq!(
            ps_cell(table, "endless_loop", "STATUS")?,
            "running",
            "{table:?}"
        );
        assert_eq!(ps_cell(table, "counter", "STATUS")?, "running", "{table:?}");
    }
    let fuel =
        |table: &[String]| -> Result<u64> { Ok(ps_cell(table, "endless_loop", "FUEL")?.parse()?) };
    let (fuel_before, fuel_after) = (fuel(&before)?, fuel(&after)?);
    if fuel_after <= fuel_before {
        bail!("endless_loop burnt no fuel: {fuel_before} then {fuel_after}");
    }
    let count_after = check_counter_progresses(&machine)?;
    assert!(count_after > count_before);
    let transcript = machine.transcript();
    check_refusals(&transcript, &refused)?;
    check_one_ending_line(&transcript, "grow_bomb", "exited(0)")?;
    check_one_ending_line(&transcript, "message_flood", "exited(0)")?;
    check_one_ending_line(&transcript, "big_log", "exited(0)")?;
    check_one_ending_line(&transcript, "fake_output", "exited(0)")?;
    check_fake_output(&transcript)?;
    // Shutdown cannot commit a loop that never reaches a safe point; it says
    // so and powers off anyway.
    machine.send_line("shutdown")?;
    machine.expect(
        "[endless_loop] did not reach a safe point: its last periodic commit stays",
        ANSWER_TIMEOUT,
    )?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    let transcript = machine.transcript();
    let endings = ending_lines(&transcript, "endless_loop");
    assert!(endings.is_empty(), "endless_loop ended: {endings:?}");
    check_no_panic(&machine)?;
    eprintln!(
        "resources boot: endless_loop burnt {} fuel in {fuel_seconds:.1} s beside counter; took {:.1} s",
        fuel_after - fuel_before,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn image_new_refuses_what_cannot_be_a_domain() -> Result<()> {
    let directory = work_dir("hostile-image-new")?;
    let oversized = module_with_data(MAX_MODULE_BYTES)?;
    let too_large = format!("bytes, more than the {MAX_MODULE_BYTES} a domain's module may have");
    for (name, module, reason) in [
        ("not_wasm", NOT_WASM, "is not a module Amber can run"),
        (
            "memory_beyond_limit",
            MEMORY_BEYOND_LIMIT,
            "is not a module Amber can run",
        ),
        (
            "module_over_limit",
            oversized.as_slice(),
            too_large.as_str(),
        ),
    ] {
        let error = module_image(&directory, name, module)
            .err()
            .with_context(|| format!("image new accepted {name}"))?;
        let message = format!("{error:#}");
        assert!(message.contains(reason), "{name}: {message}");
    }
    Ok(())
}

#[test]
fn a_module_the_heap_has_no_room_for_is_refused_on_a_small_machine() -> Result<()> {
    // 48 MiB of RAM leaves the kernel a heap of about 11 MiB: a module just
    // under the 8 MiB limit would need several times that to load.
    let directory = work_dir("hostile-small-machine")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let near_limit = module_image(
        &directory,
        "near_limit",
        &module_with_data(MAX_MODULE_BYTES - 1024)?,
    )?;
    let mut config = test_config()?;
    config.append = FEW_CHECKPOINTS.into();
    config.memory_mib = 48;
    config.disks = vec![counter, near_limit];
    let mut machine = Machine::boot(&config)?;
    let line = machine.expect("disk 1: refused: ", BOOT_TIMEOUT)?;
    assert!(
        line.contains("-byte module needs about ") && line.contains(" KiB of kernel heap; "),
        "{line}"
    );
    machine.expect_prompt(BOOT_TIMEOUT)?;
    machine.expect("[counter] count 2", ANSWER_TIMEOUT)?;
    check_counter_progresses(&machine)?;
    shut_down(&mut machine)?;
    check_no_panic(&machine)
}
