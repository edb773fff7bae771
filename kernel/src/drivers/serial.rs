//! COM1: the console and log output, and the emergency writer for fatal paths.

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};
use x86_64::instructions::interrupts;

/// COM1's I/O base on every PC.
const COM1_PORT: u16 = 0x3f8;

static COM1: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

fn open_com1() -> Option<Uart16550<PioBackend>> {
    // SAFETY: 0x3f8..0x400 are COM1's registers on every PC; the kernel owns
    // the device (a second handle exists only in EmergencyWriter, used when
    // the first can no longer be).
    unsafe { Uart16550::new_port(COM1_PORT) }.ok()
}

/// Sets COM1 up (8-N-1, FIFO on, no interrupts: the console polls it).
pub fn init() {
    let mut uart = open_com1();
    if let Some(device) = uart.as_mut() {
        // A machine without COM1 still boots; it just has no console.
        if device.init(Config::default()).is_err() {
            uart = None;
        }
    }
    interrupts::without_interrupts(|| *COM1.lock() = uart);
}

/// Writes text, turning "\n" into "\r\n" for terminals in raw mode.
fn write_text(uart: &mut Uart16550<PioBackend>, text: &str) {
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            uart.send_bytes_exact(b"\r\n");
        }
        uart.send_bytes_exact(line.as_bytes());
    }
}

/// Bytes sent with interrupts off and the port's lock held: one 16550
/// FIFO's worth, 1.4 ms at 115,200 baud (a 4 KiB line is 355 ms).
const CHUNK_BYTES: usize = 16;

/// Held by a `print` from its first chunk to its last.
static LINE: Mutex<()> = Mutex::new(());

/// Gathers text into chunks of [`CHUNK_BYTES`], turning "\n" into "\r\n"
/// for terminals in raw mode, and sends each chunk as it fills.
struct ChunkedWriter {
    chunk: [u8; CHUNK_BYTES],
    len: usize,
}

impl ChunkedWriter {
    fn new() -> Self {
        Self {
            chunk: [0; CHUNK_BYTES],
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.len == CHUNK_BYTES {
            self.send();
        }
        self.chunk[self.len] = byte;
        self.len += 1;
    }

    /// Adds bytes as they are (no line-end translation).
    fn push_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.push(byte);
        }
    }

    /// Sends the chunk gathered so far: interrupts are off, and the port's
    /// lock held, for this chunk only.
    fn send(&mut self) {
        let chunk = &self.chunk[..self.len];
        interrupts::without_interrupts(|| {
            if let Some(uart) = COM1.lock().as_mut() {
                uart.send_bytes_exact(chunk);
            }
        });
        self.len = 0;
    }
}

impl Write for ChunkedWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if byte == b'\n' {
                self.push(b'\r');
            }
            self.push(byte);
        }
        Ok(())
    }
}

/// The most bytes of the console's drawn input line kept for redrawing
/// (the prompt, a line of at most 256 bytes, and the cursor's escapes).
const TYPED_BYTES: usize = 512;

/// The line the console shows while the user types (the prompt and the
/// input, as the line editor draws it); `len` 0 when nothing is typed.
struct TypedLine {
    bytes: [u8; TYPED_BYTES],
    len: usize,
}

static TYPED: Mutex<TypedLine> = Mutex::new(TypedLine {
    bytes: [0; TYPED_BYTES],
    len: 0,
});

/// Says what the console's input line looks like now (`drawn`: the line
/// editor's drawing of the prompt and the input), or that nothing is
/// typed (`""`). While something is typed, every [`print`] first clears
/// that line and draws it again below its own text, so output arriving
/// while the user types never garbles the line being typed.
pub fn set_typed_line(drawn: &str) {
    interrupts::without_interrupts(|| {
        let mut typed = TYPED.lock();
        let len = drawn.len().min(TYPED_BYTES);
        typed.bytes[..len].copy_from_slice(&drawn.as_bytes()[..len]);
        typed.len = len;
    });
}

/// Prints formatted text to COM1, a chunk of [`CHUNK_BYTES`] at a time.
/// While the console's user is typing, the input line is cleared first
/// and drawn again after the text (see [`set_typed_line`]); the console's
/// own echo goes through [`print_echo`] instead.
///
/// Interrupts are off only while one chunk goes out, never for a whole
/// line: the timer's tick then waits for at most 16 bytes, however long
/// the line (guest output can be 4 KiB a line). Each chunk takes the
/// port's lock with interrupts off, so a handler can never wait for a lock
/// its own CPU holds.
///
/// A line stays whole against other writers as far as it can: the text is
/// sent in order by one writer holding `LINE` from its first chunk to its
/// last, so another `print` (another CPU's, if the kernel ever has more
/// than one) waits for the line to end. `LINE` is held with interrupts on,
/// so a handler must not wait for it (the code it interrupted cannot end
/// its line before the handler returns): a `print` that finds it held
/// prints without it, and its text lands between two chunks of the line it
/// interrupted, the one case where lines interleave. No handler prints
/// today (fatal paths use [`EmergencyWriter`], which takes neither lock).
pub fn print(arguments: fmt::Arguments<'_>) {
    let _line = LINE.try_lock();
    let mut typed = [0u8; TYPED_BYTES];
    let typed_len = interrupts::without_interrupts(|| {
        let line = TYPED.lock();
        typed[..line.len].copy_from_slice(&line.bytes[..line.len]);
        line.len
    });
    let mut writer = ChunkedWriter::new();
    if typed_len > 0 {
        // Back to the start of the input line, and clear it.
        writer.push_bytes(b"\r\x1b[K");
    }
    let _ = writer.write_fmt(arguments);
    if typed_len > 0 {
        // The erase, a no-op on the fresh line, keeps the prompt drawn
        // again from starting a line for a reader that drops carriage
        // returns (the QEMU test driver): only a new prompt does.
        writer.push_bytes(b"\x1b[K");
        writer.push_bytes(&typed[..typed_len]);
    }
    writer.send();
}

/// Prints the console's own echo of what the user types (no redraw).
pub fn print_echo(arguments: fmt::Arguments<'_>) {
    let _line = LINE.try_lock();
    let mut writer = ChunkedWriter::new();
    let _ = writer.write_fmt(arguments);
    writer.send();
}

/// Reads one byte from COM1 if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    interrupts::without_interrupts(|| COM1.lock().as_mut()?.try_receive_byte().ok())
}

/// A writer for panics and fatal exceptions: it does not take the console
/// lock, which the failing code may hold. Output may interleave with a line
/// cut short; that is the price of always getting the report out.
pub struct EmergencyWriter(Option<Uart16550<PioBackend>>);

impl EmergencyWriter {
    pub fn new() -> EmergencyWriter {
        EmergencyWriter(open_com1())
    }
}

impl fmt::Debug for EmergencyWriter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("EmergencyWriter")
    }
}

impl Default for EmergencyWriter {
    fn default() -> Self {
        EmergencyWriter::new()
    }
}

impl Write for EmergencyWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if let Some(uart) = self.0.as_mut() {
            write_text(uart, text);
        }
        Ok(())
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => {
        $crate::drivers::serial::print(format_args!($($argument)*))
    };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($argument:tt)*) => {
        $crate::drivers::serial::print(format_args!("{}\n", format_args!($($argument)*)))
    };
}
