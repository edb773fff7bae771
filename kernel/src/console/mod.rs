//! The serial console: a line editor and the commands behind `amber> `.
//!
//! The console never blocks: `Console::poll` takes whatever input is waiting,
//! so the main loop can run domains between keystrokes.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;

use crate::arch::{acpi, timer};
use crate::boot_info::BootInfo;
use crate::diagnostics::disk_bench;
use crate::diagnostics::nettest;
use crate::domains::{CommitTiming, DiskUse, Domains, RolledBack, Row, Started, Summary};
use crate::drivers::virtio_net::MacAddress;
use crate::drivers::{serial, virtio_blk};
use crate::memory::{frames, heap};
use crate::migration::Migrations;
use crate::net;
use crate::println;
use kernel_core::line_editor::LineEditor;
use kernel_core::migration::Decision;

mod logs;
mod snapshots;

const PROMPT: &str = "amber> ";
const MAX_LINE_BYTES: usize = 256;

/// What commands may touch.
#[derive(Debug)]
pub struct Context<'a> {
    pub info: &'a BootInfo,
    pub domains: &'a mut Domains,
    pub migrations: &'a mut Migrations,
}

struct Command {
    name: &'static str,
    usage: &'static str,
    help: &'static str,
    run: fn(&mut Context<'_>, &str),
}

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        usage: "help",
        help: "list the commands",
        run: help,
    },
    Command {
        name: "ps",
        usage: "ps",
        help: "the domains: name, id, disk, status, resident and stored pages, commits, fuel",
        run: ps,
    },
    Command {
        name: "stop",
        usage: "stop NAME",
        help: "commit a domain and stop it (it stays stopped across reboots)",
        run: stop,
    },
    Command {
        name: "start",
        usage: "start NAME",
        help: "resume a stopped domain, or retry a paused one's commit",
        run: start,
    },
    Command {
        name: "kill",
        usage: "kill NAME",
        help: "end a domain for good (its last state is committed; it never runs again)",
        run: kill,
    },
    Command {
        name: "spawn",
        usage: "spawn APP [NAME]",
        help: "a new domain of APP from the apps archive, on the first spare disk",
        run: spawn,
    },
    Command {
        name: "checkpoint",
        usage: "checkpoint [NAME]",
        help: "commit one domain, or all, now",
        run: checkpoint,
    },
    Command {
        name: "migrate",
        usage: "migrate NAME ADDRESS",
        help: "move a running domain to the machine at ADDRESS (IPv4), live",
        run: migrate,
    },
    Command {
        name: "decide",
        usage: "decide NAME run|discard",
        help: "settle a parked copy whose source never answers: run it here (only if the \
               source will never run it again) or discard it",
        run: decide,
    },
    Command {
        name: "rollback",
        usage: "rollback DISK | rollback NAME TAG",
        help: "open the intact older commit of a disk refused for a damaged newest one \
               (the damaged commit is discarded; the image records it), or run a domain \
               on from its snapshot TAG",
        run: rollback,
    },
    Command {
        name: "snapshot",
        usage: "snapshot NAME [TAG]",
        help: "keep the domain's state now as a named snapshot (copy on write, in its image)",
        run: snapshots::snapshot,
    },
    Command {
        name: "snapshots",
        usage: "snapshots NAME",
        help: "a domain's snapshots: id, tag, date, domain clock, pages, blocks only it holds",
        run: snapshots::snapshots,
    },
    Command {
        name: "fork",
        usage: "fork NAME NEW [TAG]",
        help: "a new domain NEW on a spare disk from NAME's state now, or its snapshot TAG \
               (new ID, empty mailbox, generation + 1)",
        run: snapshots::fork,
    },
    Command {
        name: "snapshot-delete",
        usage: "snapshot-delete NAME TAG",
        help: "forget a snapshot and free the blocks only it held",
        run: snapshots::snapshot_delete,
    },
    Command {
        name: "logs",
        usage: "logs NAME [-n N]",
        help: "the last N (20) lines of a domain's own log, kept in its image",
        run: logs::logs,
    },
    Command {
        name: "follow",
        usage: "follow all|none|NAME...",
        help: "whose output the console shows as it comes (all at boot); logs keep it all",
        run: logs::follow,
    },
    Command {
        name: "stats",
        usage: "stats",
        help: "totals: domains, fuel, uptime, memory",
        run: stats,
    },
    Command {
        name: "mem",
        usage: "mem",
        help: "physical memory, frames and heap",
        run: mem,
    },
    Command {
        name: "disks",
        usage: "disks",
        help: "the virtio-blk disks: size, PCI address, what each holds (refused: why)",
        run: disks,
    },
    Command {
        name: "diskbench",
        usage: "diskbench [MIB]",
        help: "raw virtio-blk figures on the first spare disk (reads MIB, default 64)",
        run: diskbench,
    },
    Command {
        name: "net",
        usage: "net",
        help: "the network card: MAC, IPv4 address, link, packets",
        run: net_status,
    },
    Command {
        name: "nettest",
        usage: "nettest listen PORT | send IP PORT MIB",
        help: "raw TCP throughput: receive one stream, or send MIB MiB",
        run: nettest,
    },
    Command {
        name: "uptime",
        usage: "uptime",
        help: "time since the kernel started",
        run: uptime,
    },
    Command {
        name: "shutdown",
        usage: "shutdown",
        help: "commit every domain, then power off",
        run: shutdown,
    },
];

/// The line being typed, with its editor and history.
#[derive(Debug)]
pub struct Console {
    editor: LineEditor,
}

impl Default for Console {
    fn default() -> Console {
        Console::new()
    }
}

impl Console {
    pub fn new() -> Console {
        Console {
            editor: LineEditor::new(PROMPT, MAX_LINE_BYTES),
        }
    }

    /// Prints the prompt.
    pub fn prompt(&self) {
        serial::print_echo(format_args!("{PROMPT}"));
    }

    /// Takes the input waiting on the serial port, echoing it through the
    /// line editor; returns a line once Enter is pressed.
    pub fn poll(&mut self) -> Option<String> {
        let mut echo = String::new();
        let mut line = None;
        while let Some(byte) = serial::try_read_byte() {
            line = self.editor.feed(byte, &mut echo);
            if line.is_some() {
                break;
            }
        }
        if !echo.is_empty() {
            serial::print_echo(format_args!("{echo}"));
        }
        // Output printed while a line is typed draws it again below.
        let mut drawn = String::new();
        if line.is_none() && self.editor.is_typing() {
            self.editor.draw(&mut drawn);
        }
        serial::set_typed_line(&drawn);
        line
    }
}

/// Runs one command line.
pub fn execute(context: &mut Context<'_>, line: &str) {
    let text = line.trim();
    if text.is_empty() {
        return;
    }
    let (name, arguments) = text.split_once(' ').unwrap_or((text, ""));
    match COMMANDS.iter().find(|command| command.name == name) {
        Some(command) => (command.run)(context, arguments.trim()),
        None => println!("unknown command '{name}': type 'help' for the list"),
    }
}

fn help(_context: &mut Context<'_>, _arguments: &str) {
    for command in COMMANDS {
        println!("  {:<18} {}", command.usage, command.help);
    }
}

/// The one NAME argument of `command`, or a usage line.
fn one_name<'a>(command: &str, arguments: &'a str) -> Option<&'a str> {
    let mut words = arguments.split_whitespace();
    match (words.next(), words.next()) {
        (Some(name), None) => Some(name),
        _ => {
            println!("usage: {command} NAME");
            None
        }
    }
}

/// An operation's answer: its success line, or `error: ` and why.
fn answer<T, E: core::fmt::Display>(result: Result<T, E>, say: impl FnOnce(T) -> String) {
    match result {
        Ok(value) => println!("{}", say(value)),
        Err(error) => println!("error: {error}"),
    }
}

fn ps(context: &mut Context<'_>, _arguments: &str) {
    println!(
        "{:<12} {:<8} {:<5} {:<20} {:>9} {:>7} {:>8} {:>14}",
        "NAME", "ID", "DISK", "STATUS", "RESIDENT", "STORED", "COMMITS", "FUEL"
    );
    for row in context.domains.rows() {
        println!("{}", ps_line(&row));
    }
}

/// One `ps` line: a domain with its figures, or a parked copy or refused
/// disk with what is known of it.
fn ps_line(row: &Row) -> String {
    let name = if row.name.is_empty() { "-" } else { &row.name };
    let id = row
        .id_prefix
        .map_or_else(|| String::from("-"), |id| format!("{id:08x}"));
    let status = format!("{}", row.state);
    match &row.usage {
        Some(usage) => format!(
            "{:<12} {:<8} {:<5} {:<20} {:>9} {:>7} {:>8} {:>14}",
            name,
            id,
            row.disk_index,
            status,
            usage.resident_pages,
            usage
                .stored_pages
                .map_or_else(|| String::from("-"), |pages| format!("{pages}")),
            usage.commits,
            usage.fuel_used
        ),
        None => format!(
            "{:<12} {:<8} {:<5} {:<20}",
            name, id, row.disk_index, status
        ),
    }
}

fn stop(context: &mut Context<'_>, arguments: &str) {
    if let Some(name) = one_name("stop", arguments) {
        answer(context.domains.stop(name), |()| {
            format!("{name}: stopped (state committed)")
        });
    }
}

fn start(context: &mut Context<'_>, arguments: &str) {
    if let Some(name) = one_name("start", arguments) {
        answer(context.domains.start(name), |started| match started {
            Started::Resumed => format!("{name}: started"),
            Started::Unpaused => format!("{name}: committed and running again"),
        });
    }
}

fn spawn(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    let (Some(app), name, None) = (words.next(), words.next(), words.next()) else {
        let apps = context.domains.app_names();
        if apps.is_empty() {
            println!("usage: spawn APP [NAME] (no apps archive disk)");
        } else {
            println!("usage: spawn APP [NAME]; apps: {}", apps.join(", "));
        }
        return;
    };
    answer(context.domains.spawn(app, name), |spawned| {
        let mut text = format!(
            "{}: spawned from {} on disk {}",
            spawned.name, spawned.app, spawned.disk_index
        );
        if let Some(small) = spawned.small_disk {
            text.push_str(&format!(
                "\nnote: disk {} has {} MiB, less than the {} MiB a commit of all of \
                 {}'s memory may need; {} pauses if the disk fills",
                spawned.disk_index, small.disk_mib, small.wanted_mib, spawned.name, spawned.name
            ));
        }
        text
    });
}

fn checkpoint(context: &mut Context<'_>, arguments: &str) {
    let Some(name) = arguments.split_whitespace().next() else {
        let report = context.domains.checkpoint_every_domain();
        println!(
            "{} of {} domains committed now, the others at their next safe point",
            report.committed, report.asked
        );
        for (name, error) in &report.failures {
            println!("{name}: checkpoint failed: {error}");
        }
        return;
    };
    answer(context.domains.checkpoint(name), |timing| match timing {
        CommitTiming::Now => format!("{name}: committed"),
        CommitTiming::AtNextSafePoint => format!("{name}: will commit at its next safe point"),
    });
}

fn kill(context: &mut Context<'_>, arguments: &str) {
    if let Some(name) = one_name("kill", arguments) {
        answer(context.domains.kill(name), |()| format!("{name}: killed"));
    }
}

fn migrate(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    let (Some(name), Some(address), None) = (words.next(), words.next(), words.next()) else {
        println!("usage: migrate NAME ADDRESS");
        return;
    };
    answer(
        context.migrations.start(context.domains, name, address),
        |()| format!("{name}: migrating to {address}"),
    );
}

fn decide(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    let decision = match (words.next(), words.next(), words.next()) {
        (Some(name), Some("run"), None) => (name, Decision::Run),
        (Some(name), Some("discard"), None) => (name, Decision::Discard),
        _ => {
            println!("usage: decide NAME run|discard");
            return;
        }
    };
    let (name, decision) = decision;
    if let Err(error) = context.migrations.decide(context.domains, name, decision) {
        println!("error: {error}");
    }
}

fn rollback(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(name), Some(tag), None) => snapshots::rollback_to(context, name, tag),
        (Some(disk), None, None) if let Ok(disk_index) = disk.parse::<usize>() => {
            answer(context.domains.roll_back(disk_index), |rolled| {
                rollback_line(disk_index, &rolled)
            });
        }
        _ => println!(
            "usage: rollback DISK (a disk number, as ps shows it) | rollback NAME TAG \
             (a snapshot, as snapshots NAME shows them)"
        ),
    }
}

fn rollback_line(disk_index: usize, rolled: &RolledBack) -> String {
    let what = match &rolled.record {
        Some(record) => format!(
            "commit {} was damaged and is discarded; {} is back at commit {}'s state",
            record.damaged_sequence, rolled.name, record.restored_sequence
        ),
        None => format!("{} is back at an older commit", rolled.name),
    };
    format!(
        "disk {disk_index}: rolled back: {what}, committed as commit {} with the rollback \
         recorded; now {}",
        rolled.sequence, rolled.state
    )
}

fn stats(context: &mut Context<'_>, arguments: &str) {
    println!("{}", summary_line(&context.domains.summary()));
    uptime(context, arguments);
    mem(context, arguments);
}

fn summary_line(summary: &Summary) -> String {
    format!(
        "domains: {} running, {} ended, {} stopped, {} paused; spare disks: {}; fuel used: {}; \
         checkpoint every {} ms",
        summary.running,
        summary.ended,
        summary.stopped,
        summary.paused,
        summary.spares,
        summary.fuel_used,
        summary.checkpoint_interval_ms
    )
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn mem(context: &mut Context<'_>, _arguments: &str) {
    let info = context.info;
    let usable = info.usable_bytes();
    let frame_stats = frames::with(|allocator| allocator.stats());
    let heap_stats = heap::stats();
    println!(
        "memory: {} MiB usable ({} KiB) in {} map entries",
        usable / MIB,
        usable / KIB,
        info.regions().len()
    );
    println!(
        "frames: {} free of {} ({} MiB free)",
        frame_stats.free_frames,
        frame_stats.total_frames,
        frame_stats.free_frames * frames::FRAME_BYTES / MIB
    );
    println!(
        "heap: {} KiB used of {} MiB",
        heap_stats.allocated_bytes / KIB,
        heap_stats.size_bytes / MIB
    );
    let paged = &crate::memory::pager::STATS;
    println!(
        "paging: {} pages read in, {} zero-filled, {} evicted ({} written out)",
        paged.pages_read.load(Ordering::Relaxed),
        paged.pages_zeroed.load(Ordering::Relaxed),
        paged.pages_evicted.load(Ordering::Relaxed),
        paged.pages_written_out.load(Ordering::Relaxed)
    );
}

/// Each disk on one line, then what it holds on the next (indented), and
/// why it is out of service if it is.
fn disks(context: &mut Context<'_>, _arguments: &str) {
    let disks = virtio_blk::known_disks();
    if disks.is_empty() {
        println!("no disks");
    }
    for disk in disks {
        println!("{disk} ({} blocks)", disk.block_count);
        let holds = match context.domains.disk_use(disk.index) {
            DiskUse::Entry { name, state } if name.is_empty() => format!("{state}"),
            DiskUse::Entry { name, state } => format!("{name}: {state}"),
            DiskUse::Spare => String::from("spare (blank)"),
            DiskUse::AppsArchive => String::from("apps archive"),
            DiskUse::Unused => String::from("unused"),
        };
        match virtio_blk::failure_of(disk.index) {
            Some(failure) => println!("  {holds}; out of service: {failure}"),
            None => println!("  {holds}"),
        }
    }
}

fn diskbench(context: &mut Context<'_>, arguments: &str) {
    let read_mib = match arguments.split_whitespace().next() {
        None => 64,
        Some(word) => match word.parse::<u64>() {
            Ok(mib) if mib > 0 => mib,
            _ => {
                println!("usage: diskbench [MIB] (MIB a positive whole number)");
                return;
            }
        },
    };
    let Some(disk) = context.domains.first_spare() else {
        println!("error: diskbench needs a spare (blank) disk");
        return;
    };
    let index = disk.info().index;
    match disk_bench::run(disk, read_mib) {
        Ok(figures) => println!(
            "diskbench disk {index}: read {} KiB in 4 KiB requests in {} us ({} MiB/s); \
             write+flush twice: {} us (median of 64)",
            figures.read_bytes / KIB,
            figures.read_ns / 1000,
            figures.read_mib_per_s(),
            figures.commit_floor_ns / 1000
        ),
        Err(error) => println!("error: diskbench disk {index}: {error}"),
    }
}

fn net_status(_context: &mut Context<'_>, _arguments: &str) {
    let Some(status) = net::status() else {
        println!("no network card");
        return;
    };
    println!(
        "net: MAC {} at PCI {}, IPv4 {}/{}, link {} at boot",
        MacAddress(status.nic.mac),
        status.nic.location,
        status.address,
        status.prefix_len,
        status.nic.link_at_probe
    );
    let counters = status.counters;
    println!(
        "packets: {} received ({} bytes), {} sent ({} bytes), {} errors",
        counters.received_packets,
        counters.received_bytes,
        counters.sent_packets,
        counters.sent_bytes,
        counters.errors
    );
}

const NETTEST_USAGE: &str = "usage: nettest listen PORT | nettest send IP PORT MIB";

fn nettest(_context: &mut Context<'_>, arguments: &str) {
    let words: alloc::vec::Vec<&str> = arguments.split_whitespace().collect();
    match words.as_slice() {
        ["listen", port] => {
            let Ok(port) = port.parse::<u16>() else {
                println!("{NETTEST_USAGE}");
                return;
            };
            match nettest::listen(port) {
                Ok(transfer) => {
                    println!("nettest: {} bytes, all in the pattern", transfer.bytes);
                    println!("received {}", transfer.summary());
                }
                Err(error) => println!("nettest: {error}"),
            }
        }
        ["send", address, port, mib] => {
            let (Ok(address), Ok(port), Ok(mib)) =
                (address.parse(), port.parse::<u16>(), mib.parse::<u64>())
            else {
                println!("{NETTEST_USAGE}");
                return;
            };
            if !(1..=nettest::MAX_MIB).contains(&mib) {
                println!("nettest: MIB must be 1 to {}", nettest::MAX_MIB);
                return;
            }
            match nettest::send(address, port, mib) {
                Ok(transfer) => println!("sent {}", transfer.summary()),
                Err(error) => println!("nettest: {error}"),
            }
        }
        _ => println!("{NETTEST_USAGE}"),
    }
}

fn uptime(_context: &mut Context<'_>, _arguments: &str) {
    let uptime_ms = timer::uptime_ns() / 1_000_000;
    println!("up {}.{:03} s", uptime_ms / 1000, uptime_ms % 1000);
}

fn shutdown(context: &mut Context<'_>, _arguments: &str) {
    let lost = context.domains.commit_for_shutdown();
    for name in &lost {
        let name = crate::domains::platform::shown_name(name);
        println!("[{name}] did not reach a safe point: its last periodic commit stays");
    }
    println!("amber: powering off");
    let error = acpi::power_off(context.info.rsdp_physical);
    println!("shutdown failed: {error}");
}
