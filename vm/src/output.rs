//! Guest output made safe for a shared console: escaped, per line, bounded.
//!
//! Every domain prints to the one console the operator reads, next to the
//! kernel's own lines and the prompt. Raw, a guest's bytes could pose as
//! any of them: a carriage return or an escape sequence rewrites what is on
//! the screen (another domain's line, a fake `amber> ` prompt), and a flood
//! of lines scrolls the others away. So the vm hands the platform only
//! lines that a terminal can show but not obey ([`escape_into`]), each
//! prefixed by the platform with the domain's own (escaped) name, and
//! bounds how much a domain prints: per call (`MAX_OUTPUT_BYTES_PER_CALL`
//! bytes and [`MAX_OUTPUT_LINES_PER_CALL`] lines) and per second
//! ([`OutputBudget`]), dropping the excess with one line that says how much.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::platform::{LogLevel, Platform, Stream};

/// The most lines one `log` or `fd_write` call prints: a longer `log` is
/// cut with a line saying so, `fd_write` writes up to the line break that
/// ends its 64th line (a short write). One call of 4,096 line breaks once
/// printed 4,097 lines.
pub const MAX_OUTPUT_LINES_PER_CALL: usize = 64;

/// The most lines a domain prints in a second; the rest of that second's
/// are dropped. The busiest apps print a few dozen (`life`: 34, `counter`:
/// 10).
pub const MAX_OUTPUT_LINES_PER_SECOND: u32 = 256;

/// The most bytes (as printed, escapes included) a domain prints in a
/// second: three times what a 115,200-baud serial line carries, and far
/// above any app's (`life` prints about 1,700).
pub const MAX_OUTPUT_BYTES_PER_SECOND: usize = 32 * 1024;

/// The length of the per-second window, in nanoseconds.
const WINDOW_NS: u64 = 1_000_000_000;

/// Appends `line` to `out` as text a terminal shows but cannot obey.
///
/// Valid UTF-8 passes through but for characters that control a terminal
/// or reorder what it shows: C0 controls but the tab, DEL and C1 controls
/// (`char::is_control`), the line and paragraph separators, and the bidi
/// embeddings, overrides and isolates (Unicode UAX #9), which could make a
/// line read as something else. Those and every byte that is not UTF-8 are
/// shown as `\xNN` (below 0x80 and invalid bytes) or `\u{NNNN}`, so the
/// operator sees what the guest sent and no byte of it acts. A line break
/// is never in `line`: callers split lines at `\n`.
pub fn escape_into(line: &[u8], out: &mut String) {
    for chunk in line.utf8_chunks() {
        for character in chunk.valid().chars() {
            if is_shown(character) {
                out.push(character);
            } else if let Ok(byte) = u8::try_from(character)
                && byte < 0x80
            {
                push_byte_escape(byte, out);
            } else {
                // Infallible: writing to a String.
                let _ = write!(out, "\\u{{{:x}}}", character as u32);
            }
        }
        for &byte in chunk.invalid() {
            push_byte_escape(byte, out);
        }
    }
}

/// How many bytes of `line` [`escape_into`] may escape, counted without
/// decoding: control bytes and every byte past ASCII (most of which pass
/// through, so this errs high), for charging before the work is done.
pub fn escapable_bytes(line: &[u8]) -> usize {
    line.iter()
        .filter(|&&byte| (byte < 0x20 && byte != b'\t' && byte != b'\n') || byte >= 0x7f)
        .count()
}

/// Appends `\xNN` for `byte`.
fn push_byte_escape(byte: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\x");
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// The index of the `count`-th line break (counting from 1) in `bytes`.
pub fn nth_line_break(bytes: &[u8], count: usize) -> Option<usize> {
    if count == 0 {
        return None;
    }
    bytes
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(count - 1)
        .map(|(index, _)| index)
}

/// How much of a `log` message one call prints: at most
/// `MAX_OUTPUT_BYTES_PER_CALL` bytes and [`MAX_OUTPUT_LINES_PER_CALL`]
/// lines (the line break that would start one more is where it is cut).
pub fn log_shown_len(message: &[u8]) -> usize {
    let message = &message[..message.len().min(abi::MAX_OUTPUT_BYTES_PER_CALL)];
    nth_line_break(message, MAX_OUTPUT_LINES_PER_CALL).unwrap_or(message.len())
}

/// Whether `character` is shown as itself.
fn is_shown(character: char) -> bool {
    let is_hazard = matches!(
        character,
        '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    );
    character == '\t' || !(character.is_control() || is_hazard)
}

/// Lines a domain's per-second budget dropped (their bytes as the guest
/// wrote them), reported in one line when the next second begins or the
/// domain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedOutput {
    pub lines: u64,
    pub len_bytes: u64,
}

impl fmt::Display for DroppedOutput {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "(output dropped: {} lines, {} bytes, over the limit of \
             {MAX_OUTPUT_LINES_PER_SECOND} lines or {MAX_OUTPUT_BYTES_PER_SECOND} bytes a second)",
            self.lines, self.len_bytes
        )
    }
}

/// Whether a line goes to the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Print,
    Drop,
}

/// A domain's output budget: at most [`MAX_OUTPUT_LINES_PER_SECOND`] lines
/// and [`MAX_OUTPUT_BYTES_PER_SECOND`] bytes in each window of a second
/// (which starts at the first line after the last window ended), and what
/// it dropped.
#[derive(Debug, Default)]
pub struct OutputBudget {
    window_start_ns: Option<u64>,
    lines: u32,
    len_bytes: usize,
    dropped: Option<DroppedOutput>,
}

impl OutputBudget {
    /// Whether a line of `len_bytes` (as printed) may be printed at
    /// `now_ns`. When a new window begins after lines were dropped, the
    /// first return holds what was dropped, for the caller to print before
    /// the line. A line refused is for the caller to count
    /// ([`OutputBudget::count_dropped`]).
    pub fn admit(&mut self, now_ns: u64, len_bytes: usize) -> (Option<DroppedOutput>, Admission) {
        let note = self.note_if_due(now_ns);
        if self.window_start_ns.is_none() {
            self.window_start_ns = Some(now_ns);
        }
        let lines = self.lines.saturating_add(1);
        let total = self.len_bytes.saturating_add(len_bytes);
        if lines > MAX_OUTPUT_LINES_PER_SECOND || total > MAX_OUTPUT_BYTES_PER_SECOND {
            return (note, Admission::Drop);
        }
        self.lines = lines;
        self.len_bytes = total;
        (note, Admission::Print)
    }

    /// Counts a dropped line of `len_bytes` as the guest wrote it.
    pub fn count_dropped(&mut self, len_bytes: usize) {
        let dropped = self.dropped.get_or_insert(DroppedOutput {
            lines: 0,
            len_bytes: 0,
        });
        dropped.lines = dropped.lines.saturating_add(1);
        dropped.len_bytes = dropped.len_bytes.saturating_add(len_bytes as u64);
    }

    /// Whether the window that `now_ns` is in has no room for a line left.
    pub fn is_spent(&self, now_ns: u64) -> bool {
        let is_current = self
            .window_start_ns
            .is_some_and(|start| now_ns.saturating_sub(start) < WINDOW_NS);
        is_current
            && (self.lines >= MAX_OUTPUT_LINES_PER_SECOND
                || self.len_bytes >= MAX_OUTPUT_BYTES_PER_SECOND)
    }

    /// Ends the window if a second has passed since it began, and returns
    /// what it dropped, if anything.
    pub fn note_if_due(&mut self, now_ns: u64) -> Option<DroppedOutput> {
        let start = self.window_start_ns?;
        if now_ns.saturating_sub(start) < WINDOW_NS {
            return None;
        }
        self.window_start_ns = None;
        self.lines = 0;
        self.len_bytes = 0;
        self.dropped.take()
    }

    /// What was dropped and not yet reported, whatever the time (the domain
    /// ends or stops).
    pub fn take_dropped(&mut self) -> Option<DroppedOutput> {
        self.dropped.take()
    }
}

/// One line of a domain's log: `text` after `label` (a level's, as
/// `warn: `), stamped with the domain clock `clock_ns` in seconds, and a
/// line break. `text` holds no line break.
pub fn log_line(clock_ns: u64, label: &str, text: &str) -> String {
    let seconds = clock_ns / 1_000_000_000;
    let millis = clock_ns % 1_000_000_000 / 1_000_000;
    let mut line = String::with_capacity(text.len() + 24);
    // Infallible: writing to a String.
    let _ = writeln!(line, "{seconds:>6}.{millis:03} {label}{text}");
    line
}

/// The lines a domain printed since its last commit, for its log.
///
/// Every line the console prints is also kept here, as
/// `SECONDS.MILLIS LEVEL: TEXT` on the domain's clock, until the next
/// commit hands them to the storage (`crate::Storage::stage_log`), which
/// keeps the domain's last 64 KiB or so in its image (persist's `log`
/// module). Bounded like the image's log: the oldest whole lines go first.
#[derive(Debug, Default)]
pub struct UnsavedLog {
    bytes: Vec<u8>,
}

impl UnsavedLog {
    /// Adds one printed line, stamped with the domain clock `clock_ns`.
    fn push(&mut self, clock_ns: u64, stream: Stream, text: &str) {
        let label = match stream {
            Stream::Log(level) => level.label(),
            Stream::Stdout | Stream::Stderr => "",
        };
        self.bytes
            .extend_from_slice(log_line(clock_ns, label, text).as_bytes());
        crate::storage::keep_newest_lines(&mut self.bytes);
    }

    /// The lines kept, oldest first.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the lines kept, leaving none.
    pub fn take(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.bytes)
    }
}

/// A domain's way to the console: its escaped name, its budget, and the
/// lines for its log.
#[derive(Debug)]
pub struct GuestConsole {
    /// The domain's name as printed (names come from images, which anyone
    /// may write, so they are escaped like output).
    shown_name: String,
    budget: OutputBudget,
    /// The domain clock at `platform_origin_ns` of the platform's clock.
    clock_origin_ns: u64,
    platform_origin_ns: u64,
    pub(crate) log: UnsavedLog,
}

/// Who wrote a line: the guest (within its budget) or the vm about the
/// guest (trap reasons, redeliveries: never dropped, but escaped too, since
/// they may quote the guest, as a trap naming an import does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Guest,
    Host,
}

impl GuestConsole {
    /// The console of domain `name`, whose clock read `clock_origin_ns`
    /// when the platform's read `platform_origin_ns`.
    pub fn new(name: &str, clock_origin_ns: u64, platform_origin_ns: u64) -> Self {
        let mut shown_name = String::new();
        escape_into(name.as_bytes(), &mut shown_name);
        Self {
            shown_name,
            budget: OutputBudget::default(),
            clock_origin_ns,
            platform_origin_ns,
            log: UnsavedLog::default(),
        }
    }

    /// Prints `text` and keeps it for the log.
    fn emit(&mut self, platform: &dyn Platform, now_ns: u64, stream: Stream, text: &str) {
        platform.output(&self.shown_name, stream, text);
        let clock_ns = self
            .clock_origin_ns
            .saturating_add(now_ns.saturating_sub(self.platform_origin_ns));
        self.log.push(clock_ns, stream, text);
    }

    /// Prints one line (without its line break) on `stream`.
    pub fn print(&mut self, platform: &dyn Platform, writer: Writer, stream: Stream, line: &[u8]) {
        let now_ns = platform.monotonic_ns();
        if writer == Writer::Guest && self.budget.is_spent(now_ns) {
            // Not worth escaping.
            self.budget.count_dropped(line.len());
            return;
        }
        let mut text = String::with_capacity(line.len());
        escape_into(line, &mut text);
        if writer == Writer::Host {
            self.emit(platform, now_ns, stream, &text);
            return;
        }
        let (note, admission) = self.budget.admit(now_ns, text.len());
        if let Some(dropped) = note {
            self.print_dropped(platform, now_ns, dropped);
        }
        match admission {
            Admission::Print => self.emit(platform, now_ns, stream, &text),
            Admission::Drop => self.budget.count_dropped(line.len()),
        }
    }

    /// Prints the line about dropped output once its second has passed
    /// (called at every slice, so it comes even if the domain goes quiet).
    pub fn report_due(&mut self, platform: &dyn Platform) {
        // Most slices: nothing dropped, no clock read.
        if self.budget.dropped.is_none() {
            return;
        }
        let now_ns = platform.monotonic_ns();
        if let Some(dropped) = self.budget.note_if_due(now_ns) {
            self.print_dropped(platform, now_ns, dropped);
        }
    }

    /// Prints the line about dropped output now (the domain ends or stops).
    pub fn report_now(&mut self, platform: &dyn Platform) {
        if let Some(dropped) = self.budget.take_dropped() {
            self.print_dropped(platform, platform.monotonic_ns(), dropped);
        }
    }

    fn print_dropped(&mut self, platform: &dyn Platform, now_ns: u64, dropped: DroppedOutput) {
        let line = alloc::format!("{dropped}");
        self.emit(platform, now_ns, Stream::Log(LogLevel::Warn), &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn escaped(bytes: &[u8]) -> String {
        let mut out = String::new();
        escape_into(bytes, &mut out);
        out
    }

    #[test]
    fn printable_text_and_tabs_pass_through() {
        assert_eq!(escaped(b"count 42\tok"), "count 42\tok");
        assert_eq!(escaped("grüße, 世界 ✓".as_bytes()), "grüße, 世界 ✓");
    }

    #[test]
    fn escape_sequences_and_carriage_returns_are_shown_not_obeyed() {
        // Clear the screen, move home, fake a prompt in colour.
        let hostile = b"\x1b[2J\x1b[H\x1b[32mamber> \x1b[0m";
        let shown = escaped(hostile);
        assert_eq!(shown, "\\x1b[2J\\x1b[H\\x1b[32mamber> \\x1b[0m");
        assert!(!shown.bytes().any(|byte| byte < 0x20 || byte == 0x7f));
        // A lone CR would overwrite the line's start, backspace its end.
        assert_eq!(escaped(b"[counter] count 9\r"), "[counter] count 9\\x0d");
        assert_eq!(escaped(b"ok\x08\x08no"), "ok\\x08\\x08no");
        assert_eq!(escaped(b"\0\x07\x7f"), "\\x00\\x07\\x7f");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        // U+009B is CSI on terminals that take 8-bit controls.
        assert_eq!(escaped("a\u{9b}2J".as_bytes()), "a\\u{9b}2J");
        assert_eq!(escaped("x\u{202e}txt.exe".as_bytes()), "x\\u{202e}txt.exe");
        assert_eq!(escaped("a\u{2028}b".as_bytes()), "a\\u{2028}b");
    }

    #[test]
    fn invalid_utf8_is_shown_byte_by_byte() {
        assert_eq!(escaped(b"ok \xff\xfe end"), "ok \\xff\\xfe end");
        // A sequence cut short, then a raw C1 byte that is not UTF-8.
        assert_eq!(escaped(b"\xe4\xb8 \x9b[2J"), "\\xe4\\xb8 \\x9b[2J");
    }

    extern crate std;

    /// A platform whose clock moves only when told, recording what is printed.
    #[derive(Default)]
    struct Recorder {
        now_ns: core::sync::atomic::AtomicU64,
        lines: std::sync::Mutex<Vec<String>>,
    }

    impl Recorder {
        fn advance_ns(&self, ns: u64) {
            self.now_ns
                .fetch_add(ns, core::sync::atomic::Ordering::SeqCst);
        }

        fn lines(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }
    }

    impl Platform for Recorder {
        fn monotonic_ns(&self) -> u64 {
            self.now_ns.load(core::sync::atomic::Ordering::SeqCst)
        }
        fn realtime_ns(&self) -> u64 {
            0
        }
        fn fill_random(&self, _bytes: &mut [u8]) {}
        fn output(&self, domain_name: &str, _stream: Stream, line: &str) {
            let line = alloc::format!("[{domain_name}] {line}");
            self.lines.lock().unwrap().push(line);
        }
    }

    #[test]
    fn a_hostile_name_is_escaped_in_every_prefix() {
        let recorder = Recorder::default();
        let mut console = GuestConsole::new("evil\x1b[2K\r[counter]", 0, 0);
        console.print(&recorder, Writer::Guest, Stream::Stdout, b"hi");
        assert_eq!(recorder.lines(), ["[evil\\x1b[2K\\x0d[counter]] hi"]);
    }

    #[test]
    fn a_flood_is_cut_at_the_budget_with_one_line_saying_how_much() {
        let recorder = Recorder::default();
        let mut console = GuestConsole::new("flood", 0, 0);
        let total = MAX_OUTPUT_LINES_PER_SECOND as usize + 1_000;
        for _ in 0..total {
            console.print(&recorder, Writer::Guest, Stream::Stdout, b"spam");
        }
        // The vm's own lines are never dropped.
        console.print(&recorder, Writer::Host, Stream::Stdout, b"trapped: x");
        assert_eq!(
            recorder.lines().len(),
            MAX_OUTPUT_LINES_PER_SECOND as usize + 1
        );
        console.report_due(&recorder);
        assert_eq!(
            recorder.lines().len(),
            257,
            "no report before the second ends"
        );
        recorder.advance_ns(WINDOW_NS);
        console.report_due(&recorder);
        console.report_due(&recorder);
        let lines = recorder.lines();
        assert_eq!(lines.len(), 258, "one report");
        assert_eq!(
            lines[257],
            "[flood] (output dropped: 1000 lines, 4000 bytes, over the limit of \
             256 lines or 32768 bytes a second)"
        );
        // The next second has a full budget again.
        console.print(&recorder, Writer::Guest, Stream::Stdout, b"again");
        assert_eq!(recorder.lines()[258], "[flood] again");
    }

    #[test]
    fn printed_lines_are_kept_for_the_log_on_the_domain_clock() {
        let recorder = Recorder::default();
        recorder.advance_ns(5_000_000_000);
        // The domain's clock read 12.25 s when the platform's read 5 s.
        let mut console = GuestConsole::new("c", 12_250_000_000, 5_000_000_000);
        recorder.advance_ns(1_500_000_000);
        console.print(&recorder, Writer::Guest, Stream::Stdout, b"count 1");
        let error = Stream::Log(LogLevel::Error);
        console.print(&recorder, Writer::Host, error, b"trapped: \x1b[2J");
        assert_eq!(
            String::from_utf8(console.log.take()).unwrap(),
            "    13.750 count 1\n    13.750 error: trapped: \\x1b[2J\n"
        );
        assert!(console.log.bytes().is_empty());
        // Lines over the budget are not kept; the line saying so is.
        recorder.advance_ns(WINDOW_NS);
        for _ in 0..MAX_OUTPUT_LINES_PER_SECOND + 10 {
            console.print(&recorder, Writer::Guest, Stream::Stdout, b"spam");
        }
        recorder.advance_ns(WINDOW_NS);
        console.report_due(&recorder);
        let kept = String::from_utf8(console.log.take()).unwrap();
        assert_eq!(
            kept.lines().count(),
            MAX_OUTPUT_LINES_PER_SECOND as usize + 1
        );
        assert!(kept.ends_with(
            "warn: (output dropped: 10 lines, 40 bytes, over the limit of \
                                256 lines or 32768 bytes a second)\n"
        ));
        // Kept to the image log's capacity, oldest whole lines first out.
        for index in 0..20_000u32 {
            recorder.advance_ns(WINDOW_NS);
            let line = alloc::format!("line {index} of a long run of lines");
            console.print(&recorder, Writer::Guest, Stream::Stdout, line.as_bytes());
        }
        let kept = console.log.bytes();
        assert!(kept.len() <= persist::LOG_CAPACITY_BYTES);
        assert!(kept.len() > persist::LOG_CAPACITY_BYTES - 100);
        let kept = core::str::from_utf8(kept).unwrap();
        assert!(
            kept.lines().all(|line| line.contains(" line ")),
            "a cut line"
        );
        assert!(kept.ends_with("line 19999 of a long run of lines\n"));
    }

    #[test]
    fn bytes_are_budgeted_as_printed_and_the_report_comes_at_the_end() {
        let recorder = Recorder::default();
        let mut console = GuestConsole::new("esc", 0, 0);
        // 4,096 ESC bytes print as 16,384: two such lines fill the budget.
        let line = [0x1bu8; 4096];
        for _ in 0..3 {
            console.print(&recorder, Writer::Guest, Stream::Stdout, &line);
        }
        let lines = recorder.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), "[esc] ".len() + 4 * 4096);
        console.report_now(&recorder);
        assert_eq!(
            recorder.lines()[2],
            "[esc] (output dropped: 1 lines, 4096 bytes, over the limit of \
             256 lines or 32768 bytes a second)"
        );
        console.report_now(&recorder);
        assert_eq!(recorder.lines().len(), 3);
    }

    #[test]
    fn a_new_window_starts_at_the_first_line_after_the_last_one_ended() {
        let mut budget = OutputBudget::default();
        for _ in 0..MAX_OUTPUT_LINES_PER_SECOND {
            assert_eq!(budget.admit(0, 1), (None, Admission::Print));
        }
        assert_eq!(budget.admit(999_999_999, 1), (None, Admission::Drop));
        budget.count_dropped(1);
        let (note, admission) = budget.admit(WINDOW_NS, 1);
        assert_eq!(
            note,
            Some(DroppedOutput {
                lines: 1,
                len_bytes: 1
            })
        );
        assert_eq!(admission, Admission::Print);
    }
}
