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

struct LockedWriter<'a>(&'a mut Uart16550<PioBackend>);

impl Write for LockedWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_text(self.0, text);
        Ok(())
    }
}

/// Prints formatted text to COM1. Interrupts are off while the port is held,
/// so a handler can never wait for a lock its own CPU holds.
pub fn print(arguments: fmt::Arguments<'_>) {
    interrupts::without_interrupts(|| {
        if let Some(uart) = COM1.lock().as_mut() {
            let _ = LockedWriter(uart).write_fmt(arguments);
        }
    });
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
