//! The snapshot commands: `snapshot`, `snapshots`, `rollback NAME TAG`,
//! `snapshot-delete`, and `fork`.

use alloc::format;

use super::{Context, answer};

/// Refuses a snapshot command on a domain a migration is sending: its
/// image must change only by its own commits until the migration ends.
fn is_refused_while_migrating(context: &Context<'_>, name: &str) -> bool {
    let is_sending = context.migrations.is_sending(name);
    if is_sending {
        println!("error: {name} is migrating to another machine: try again once that ends");
    }
    is_sending
}
use crate::domains::{Forked, RolledBackTo, SnapshotTaken};
use crate::println;

pub(super) fn snapshot(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    let (Some(name), tag, None) = (words.next(), words.next(), words.next()) else {
        println!("usage: snapshot NAME [TAG]");
        return;
    };
    if is_refused_while_migrating(context, name) {
        return;
    }
    answer(
        context.domains.snapshot(name, tag),
        |taken: SnapshotTaken| {
            format!(
                "{name}: snapshot {} '{}' taken at domain clock {} s (commit {}, {} us)",
                taken.id,
                taken.tag,
                persist::clock_text(taken.clock_ns),
                taken.sequence,
                taken.elapsed_us
            )
        },
    );
}

pub(super) fn snapshots(context: &mut Context<'_>, arguments: &str) {
    let Some(name) = super::one_name("snapshots", arguments) else {
        return;
    };
    match context.domains.snapshots(name) {
        Ok(list) => print_table(&persist::table_text(&list)),
        Err(error) => println!("error: {error}"),
    }
}

/// `rollback NAME TAG` (the console's `rollback` takes a disk number for
/// a damaged commit, or this).
pub(super) fn rollback_to(context: &mut Context<'_>, name: &str, tag: &str) {
    if is_refused_while_migrating(context, name) {
        return;
    }
    answer(
        context.domains.roll_back_to(name, tag),
        |rolled: RolledBackTo| {
            format!(
                "{name}: rolled back to snapshot '{}' (domain clock {} s), committed as commit {}; \
             its mailbox, outbox and message numbers are kept, its connections reset; now {}",
                rolled.tag,
                persist::clock_text(rolled.clock_ns),
                rolled.sequence,
                rolled.state
            )
        },
    );
}

pub(super) fn snapshot_delete(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    let (Some(name), Some(tag), None) = (words.next(), words.next(), words.next()) else {
        println!("usage: snapshot-delete NAME TAG");
        return;
    };
    if is_refused_while_migrating(context, name) {
        return;
    }
    answer(context.domains.snapshot_delete(name, tag), |sequence| {
        format!("{name}: snapshot '{tag}' deleted (commit {sequence})")
    });
}

pub(super) fn fork(context: &mut Context<'_>, arguments: &str) {
    let mut words = arguments.split_whitespace();
    let (Some(name), Some(new), tag, None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        println!("usage: fork NAME NEW [TAG]");
        return;
    };
    if is_refused_while_migrating(context, name) {
        return;
    }
    answer(context.domains.fork(name, new, tag), |forked: Forked| {
        let from = tag.map_or(format!("{name}'s state now"), |tag| {
            format!("{name}'s snapshot '{tag}'")
        });
        let mut text = format!(
            "{}: forked from {from} on disk {} (id {:032x}, generation {}, {} pages copied \
             in {} us); now {}",
            forked.name,
            forked.disk_index,
            forked.id.0,
            forked.generation,
            forked.pages,
            forked.elapsed_us,
            forked.state
        );
        if forked.stopped_for_ports {
            text.push_str(&format!(
                "\nnote: {name} holds the ports {} declares: stop {name}, then start {}",
                forked.name, forked.name
            ));
        }
        text
    });
}

fn print_table(text: &str) {
    for line in text.lines() {
        println!("{line}");
    }
}
