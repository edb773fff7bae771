//! The serial console: a line editor and the commands behind `amber> `.

use alloc::string::String;

use crate::arch::{acpi, cpu, timer};
use crate::boot_info::BootInfo;
use crate::drivers::{serial, virtio_blk};
use crate::memory::{frames, heap};
use crate::{print, println};

const PROMPT: &str = "amber> ";
const MAX_LINE_BYTES: usize = 256;

struct Command {
    name: &'static str,
    help: &'static str,
    run: fn(&BootInfo, &str),
}

const COMMANDS: &[Command] = &[
    Command {
        name: "help",
        help: "list the commands",
        run: help,
    },
    Command {
        name: "mem",
        help: "physical memory, frames and heap",
        run: mem,
    },
    Command {
        name: "disks",
        help: "the virtio-blk disks: size and PCI address",
        run: disks,
    },
    Command {
        name: "uptime",
        help: "time since the kernel started",
        run: uptime,
    },
    Command {
        name: "shutdown",
        help: "power off cleanly",
        run: shutdown,
    },
];

/// Runs the console forever.
pub fn run(info: &BootInfo) -> ! {
    let mut line = String::new();
    loop {
        print!("{PROMPT}");
        read_line(&mut line);
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let (name, arguments) = text.split_once(' ').unwrap_or((text, ""));
        match COMMANDS.iter().find(|command| command.name == name) {
            Some(command) => (command.run)(info, arguments.trim()),
            None => println!("unknown command '{name}': type 'help' for the list"),
        }
    }
}

/// Reads one line with echo and backspace, sleeping between keystrokes.
fn read_line(line: &mut String) {
    line.clear();
    loop {
        let Some(byte) = serial::try_read_byte() else {
            cpu::wait_for_interrupt();
            continue;
        };
        match byte {
            b'\r' | b'\n' => {
                println!();
                return;
            }
            // Backspace and delete.
            0x08 | 0x7f => {
                if line.pop().is_some() {
                    print!("\x08 \x08");
                }
            }
            // Printable ASCII only: control sequences (arrows...) are dropped.
            0x20..=0x7e if line.len() < MAX_LINE_BYTES => {
                line.push(char::from(byte));
                print!("{}", char::from(byte));
            }
            _ => {}
        }
    }
}

fn help(_info: &BootInfo, _arguments: &str) {
    for command in COMMANDS {
        println!("  {:<10} {}", command.name, command.help);
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn mem(info: &BootInfo, _arguments: &str) {
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
}

fn disks(_info: &BootInfo, _arguments: &str) {
    let disks = virtio_blk::known_disks();
    if disks.is_empty() {
        println!("no disks");
    }
    for disk in disks {
        println!("{disk} ({} blocks)", disk.block_count);
    }
}

fn uptime(_info: &BootInfo, _arguments: &str) {
    let uptime_ms = timer::uptime_ns() / 1_000_000;
    println!("up {}.{:03} s", uptime_ms / 1000, uptime_ms % 1000);
}

fn shutdown(info: &BootInfo, _arguments: &str) {
    println!("amber: powering off");
    let error = acpi::power_off(info.rsdp_physical);
    println!("shutdown failed: {error}");
}
