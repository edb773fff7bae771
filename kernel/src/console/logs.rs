//! The log commands: `logs NAME [-n N]` and `follow all|none|NAME...`.

use alloc::string::String;
use alloc::vec::Vec;

use super::Context;
use crate::domains::platform::{self, Follow};
use crate::println;

/// Lines `logs` shows unless told otherwise.
const DEFAULT_LINES: usize = 20;

pub(super) fn logs(context: &mut Context<'_>, arguments: &str) {
    let words: Vec<&str> = arguments.split_whitespace().collect();
    let (name, count) = match words.as_slice() {
        [name] => (*name, DEFAULT_LINES),
        [name, "-n", count] | ["-n", count, name] => match count.parse::<usize>() {
            Ok(count) => (*name, count),
            Err(_) => {
                println!("error: '{count}' is not a number of lines");
                return;
            }
        },
        _ => {
            println!("usage: logs NAME [-n N]");
            return;
        }
    };
    let log = match context.domains.log_of(name) {
        Ok(log) => log,
        Err(error) => {
            println!("error: {error}");
            return;
        }
    };
    let (shown, total) = persist::last_lines(&log, count);
    if total == 0 {
        println!("{name}: its log is empty");
        return;
    }
    let shown_count = total.min(count);
    println!(
        "{name}: the last {shown_count} of {total} lines in its log (domain clock in seconds):"
    );
    // An image is anyone's to write: its log is escaped again as shown.
    let mut text = String::new();
    for line in shown.split(|&byte| byte == b'\n') {
        if line.is_empty() {
            continue;
        }
        text.clear();
        vm::escape_into(line, &mut text);
        println!("{text}");
    }
}

pub(super) fn follow(_context: &mut Context<'_>, arguments: &str) {
    let words: Vec<&str> = arguments.split_whitespace().collect();
    let follow = match words.as_slice() {
        [] => {
            println!("usage: follow all | none | NAME...");
            return;
        }
        ["all"] => Follow::All,
        ["none"] => Follow::None,
        names => Follow::Only(
            names
                .iter()
                .map(|name| platform::shown_name(name))
                .collect(),
        ),
    };
    println!("the console now shows {follow} as it comes; logs NAME shows any domain's log");
    platform::set_follow(follow);
}
