//! The console's line editor: cursor keys, Emacs keys, history. No I/O.
//!
//! Bytes from a VT100-style terminal go in one at a time; what the
//! terminal must be sent back (echo, redraws) comes out as text, and a line
//! comes out when Enter is pressed. Keys: printable ASCII inserts at the
//! cursor; Backspace and Delete; Left/Right, Home/End (also Ctrl-B/F/A/E);
//! Up/Down walk the history (also Ctrl-P/N); Ctrl-U and Ctrl-K cut before
//! or after the cursor; Ctrl-C drops the line.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Lines remembered for Up and Down.
const HISTORY_LINES: usize = 64;

/// Where an escape sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// After `ESC [` or `ESC O`, with the digits so far.
    Sequence(u8),
}

/// One line being typed, and the lines typed before.
#[derive(Debug)]
pub struct LineEditor {
    prompt: &'static str,
    max_bytes: usize,
    line: Vec<u8>,
    cursor: usize,
    history: VecDeque<Vec<u8>>,
    /// The history entry shown, counted back from the newest.
    browsing: Option<usize>,
    /// The line being typed before browsing began.
    draft: Vec<u8>,
    escape: Escape,
}

impl LineEditor {
    /// An editor that shows `prompt` and takes lines of at most `max_bytes`.
    pub fn new(prompt: &'static str, max_bytes: usize) -> LineEditor {
        LineEditor {
            prompt,
            max_bytes,
            line: Vec::new(),
            cursor: 0,
            history: VecDeque::new(),
            browsing: None,
            draft: Vec::new(),
            escape: Escape::None,
        }
    }

    /// Takes one input byte; writes what the terminal must show to `echo`,
    /// and returns the line when Enter completes it.
    pub fn feed(&mut self, byte: u8, echo: &mut String) -> Option<String> {
        match self.escape {
            Escape::Start => {
                self.escape = match byte {
                    b'[' | b'O' => Escape::Sequence(0),
                    _ => Escape::None,
                };
                return None;
            }
            Escape::Sequence(number) => {
                if byte.is_ascii_digit() {
                    let digit = byte - b'0';
                    self.escape = Escape::Sequence(number.saturating_mul(10).saturating_add(digit));
                } else {
                    self.escape = Escape::None;
                    self.escape_key(byte, number, echo);
                }
                return None;
            }
            Escape::None => {}
        }
        match byte {
            b'\r' | b'\n' => return Some(self.enter(echo)),
            0x1b => self.escape = Escape::Start,
            0x08 | 0x7f if self.cursor > 0 => {
                self.cursor -= 1;
                self.line.remove(self.cursor);
                self.redraw(echo);
            }
            0x01 => self.move_to(0, echo),
            0x05 => self.move_to(self.line.len(), echo),
            0x02 => self.move_to(self.cursor.saturating_sub(1), echo),
            0x06 => self.move_to((self.cursor + 1).min(self.line.len()), echo),
            0x10 => self.history_back(echo),
            0x0e => self.history_forward(echo),
            0x15 => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
                self.redraw(echo);
            }
            0x0b => {
                self.line.truncate(self.cursor);
                self.redraw(echo);
            }
            0x03 => {
                echo.push_str("^C\n");
                echo.push_str(self.prompt);
                self.line.clear();
                self.cursor = 0;
                self.browsing = None;
            }
            0x20..=0x7e if self.line.len() < self.max_bytes => {
                self.line.insert(self.cursor, byte);
                self.cursor += 1;
                if self.cursor == self.line.len() {
                    echo.push(char::from(byte));
                } else {
                    self.redraw(echo);
                }
            }
            _ => {}
        }
        None
    }

    fn escape_key(&mut self, key: u8, number: u8, echo: &mut String) {
        match (key, number) {
            (b'A', _) => self.history_back(echo),
            (b'B', _) => self.history_forward(echo),
            (b'C', _) => self.move_to((self.cursor + 1).min(self.line.len()), echo),
            (b'D', _) => self.move_to(self.cursor.saturating_sub(1), echo),
            (b'H', _) | (b'~', 1 | 7) => self.move_to(0, echo),
            (b'F', _) | (b'~', 4 | 8) => self.move_to(self.line.len(), echo),
            (b'~', 3) if self.cursor < self.line.len() => {
                self.line.remove(self.cursor);
                self.redraw(echo);
            }
            _ => {}
        }
    }

    fn enter(&mut self, echo: &mut String) -> String {
        echo.push('\n');
        let line = core::mem::take(&mut self.line);
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        let is_new =
            !line.iter().all(u8::is_ascii_whitespace) && self.history.back() != Some(&line);
        if is_new {
            if self.history.len() == HISTORY_LINES {
                self.history.pop_front();
            }
            self.history.push_back(line.clone());
        }
        // Only printable ASCII ever enters the line.
        line.into_iter().map(char::from).collect()
    }

    fn history_back(&mut self, echo: &mut String) {
        let back = self.browsing.map_or(0, |back| back + 1);
        if back >= self.history.len() {
            return;
        }
        if self.browsing.is_none() {
            self.draft = core::mem::take(&mut self.line);
        }
        self.show_history(back, echo);
    }

    fn history_forward(&mut self, echo: &mut String) {
        match self.browsing {
            None => {}
            Some(0) => {
                self.browsing = None;
                self.line = core::mem::take(&mut self.draft);
                self.cursor = self.line.len();
                self.redraw(echo);
            }
            Some(back) => self.show_history(back - 1, echo),
        }
    }

    fn show_history(&mut self, back: usize, echo: &mut String) {
        let Some(entry) = self
            .history
            .len()
            .checked_sub(back + 1)
            .and_then(|index| self.history.get(index))
        else {
            return;
        };
        self.line = entry.clone();
        self.cursor = self.line.len();
        self.browsing = Some(back);
        self.redraw(echo);
    }

    fn move_to(&mut self, cursor: usize, echo: &mut String) {
        if cursor != self.cursor {
            self.cursor = cursor;
            self.redraw(echo);
        }
    }

    /// Whether a line is being typed (something is on it).
    pub fn is_typing(&self) -> bool {
        !self.line.is_empty()
    }

    /// Writes to `out` what draws the prompt and the line being typed again
    /// from the start of the terminal's line, with the cursor where it was:
    /// the console shows it again below output that arrived meanwhile.
    pub fn draw(&self, out: &mut String) {
        self.redraw(out);
    }

    /// Rewrites the prompt and line, clears the rest, puts the cursor back.
    fn redraw(&self, echo: &mut String) {
        echo.push('\r');
        echo.push_str(self.prompt);
        self.line
            .iter()
            .for_each(|&byte| echo.push(char::from(byte)));
        echo.push_str("\x1b[K");
        let after = self.line.len() - self.cursor;
        if after > 0 {
            let _ = write!(echo, "\x1b[{after}D");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_being_typed_is_drawn_again_with_its_cursor() {
        let mut editor = LineEditor::new(PROMPT, 256);
        assert!(!editor.is_typing());
        feed(&mut editor, b"psx\x1b[D");
        assert!(editor.is_typing());
        let mut drawn = String::new();
        editor.draw(&mut drawn);
        assert_eq!(drawn, "\r> psx\x1b[K\x1b[1D");
        feed(&mut editor, b"\r");
        assert!(!editor.is_typing());
    }

    const PROMPT: &str = "> ";

    /// Feeds `bytes`; returns the echo and the lines completed.
    fn feed(editor: &mut LineEditor, bytes: &[u8]) -> (String, Vec<String>) {
        let mut echo = String::new();
        let lines = bytes
            .iter()
            .filter_map(|&byte| editor.feed(byte, &mut echo))
            .collect();
        (echo, lines)
    }

    fn typed(bytes: &[u8]) -> String {
        let mut editor = LineEditor::new(PROMPT, 256);
        let (_, mut lines) = feed(&mut editor, bytes);
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.remove(0)
    }

    #[test]
    fn printable_input_is_echoed_and_enter_ends_the_line() {
        let mut editor = LineEditor::new(PROMPT, 256);
        let (echo, lines) = feed(&mut editor, b"ps -a");
        assert_eq!(echo, "ps -a");
        assert!(lines.is_empty());
        let (echo, lines) = feed(&mut editor, b"\r");
        assert_eq!(echo, "\n");
        assert_eq!(lines, ["ps -a"]);
        assert_eq!(typed(b"x\n"), "x");
    }

    #[test]
    fn backspace_and_delete_remove_around_the_cursor() {
        assert_eq!(typed(b"helo\x7fp\r"), "help");
        assert_eq!(typed(b"ab\x08\x08\x08c\r"), "c");
        // Left twice, then Delete removes the character under the cursor.
        assert_eq!(typed(b"abcd\x1b[D\x1b[D\x1b[3~\r"), "abd");
        let mut editor = LineEditor::new(PROMPT, 256);
        let (echo, _) = feed(&mut editor, b"ab\x7f");
        assert_eq!(echo, "ab\r> a\x1b[K");
    }

    #[test]
    fn the_cursor_moves_left_and_right_and_typing_inserts_there() {
        assert_eq!(typed(b"acd\x1b[D\x1b[D\x1b[Db\x1b[C\x1b[Cx\r"), "bacxd");
        assert_eq!(typed(b"ac\x02b\x06\x06d\r"), "abcd");
        // Left stops at the start, Right at the end.
        assert_eq!(typed(b"b\x1b[D\x1b[D\x1b[Da\x1b[C\x1b[C\x1b[Cc\r"), "abc");
        let mut editor = LineEditor::new(PROMPT, 256);
        let (echo, _) = feed(&mut editor, b"abc\x1b[D\x1b[D");
        assert!(echo.ends_with("\r> abc\x1b[K\x1b[2D"), "{echo:?}");
    }

    #[test]
    fn home_and_end_jump_to_the_ends_of_the_line() {
        assert_eq!(typed(b"bc\x1b[Ha\x1b[Fd\r"), "abcd");
        assert_eq!(typed(b"bc\x01a\x05d\r"), "abcd");
        assert_eq!(typed(b"bc\x1b[1~a\x1b[4~d\r"), "abcd");
        assert_eq!(typed(b"bc\x1b[7~a\x1b[8~d\r"), "abcd");
        assert_eq!(typed(b"bc\x1bOHa\x1bOFd\r"), "abcd");
    }

    #[test]
    fn ctrl_u_and_ctrl_k_cut_before_and_after_the_cursor() {
        assert_eq!(
            typed(b"wrong right\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x15\r"),
            "right"
        );
        assert_eq!(
            typed(b"keep drop\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x0b\r"),
            "keep"
        );
    }

    #[test]
    fn ctrl_c_drops_the_line_and_shows_a_fresh_prompt() {
        let mut editor = LineEditor::new(PROMPT, 256);
        let (echo, lines) = feed(&mut editor, b"oops\x03");
        assert_eq!(echo, "oops^C\n> ");
        assert!(lines.is_empty());
        let (_, lines) = feed(&mut editor, b"ok\r");
        assert_eq!(lines, ["ok"]);
    }

    #[test]
    fn up_and_down_walk_the_history_and_bring_back_the_draft() {
        let mut editor = LineEditor::new(PROMPT, 256);
        feed(&mut editor, b"first\rsecond\r");
        let (_, lines) = feed(&mut editor, b"dra\x1b[A\x1b[A\r");
        assert_eq!(lines, ["first"]);
        // The history is now first, second, first: Up stops at the oldest.
        let (_, lines) = feed(&mut editor, b"\x1b[A\x1b[A\r");
        assert_eq!(lines, ["second"]);
        let (_, lines) = feed(&mut editor, b"\x1b[A\x1b[A\x1b[A\x1b[A\x1b[A\x1b[A\x1b[B\r");
        assert_eq!(lines, ["second"], "up stops at the oldest line");
        // Down past the newest line brings back what was being typed.
        let (echo, lines) = feed(&mut editor, b"draft\x10\x0e\x0e\r");
        assert_eq!(lines, ["draft"]);
        assert_eq!(echo, "draft\r> second\x1b[K\r> draft\x1b[K\n");
        // Down with nothing browsed does nothing.
        assert_eq!(typed(b"x\x1b[B\r"), "x");
    }

    #[test]
    fn history_keeps_no_blank_lines_no_repeats_and_at_most_its_size() {
        let mut editor = LineEditor::new(PROMPT, 256);
        feed(&mut editor, b"same\rsame\r   \r\r");
        assert_eq!(editor.history.len(), 1);
        for index in 0..(HISTORY_LINES + 10) {
            let line = alloc::format!("line {index}\r");
            feed(&mut editor, line.as_bytes());
        }
        assert_eq!(editor.history.len(), HISTORY_LINES);
        assert_eq!(
            editor.history.front().map(Vec::as_slice),
            Some(&b"line 10"[..])
        );
    }

    #[test]
    fn lines_stop_at_their_limit_and_control_bytes_are_ignored() {
        let mut editor = LineEditor::new(PROMPT, 4);
        let (_, lines) = feed(&mut editor, b"abcdef\r");
        assert_eq!(lines, ["abcd"]);
        assert_eq!(typed(b"a\x00\x07\x1b[Zb\xffc\r"), "abc");
    }
}
