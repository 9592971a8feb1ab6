//! The console: `print!`/`println!` onto the architecture's serial port, one lock per call so
//! that lines from several CPUs stay whole.

use core::fmt::{self, Write};

use crate::arch::console::Console;

static CONSOLE: spin::Mutex<Console> = spin::Mutex::new(Console::new());

/// Initialises the serial port; output before this is dropped.
pub(crate) fn init() {
    CONSOLE.lock().init();
}

/// Writes formatted text under the console lock.
#[doc(hidden)]
pub fn print(arguments: fmt::Arguments<'_>) {
    // A write error only means the port is absent; there is nowhere else to report it.
    let _ = CONSOLE.lock().write_fmt(arguments);
}

/// A byte the host sent to the console (the serial port's input), if one is waiting.
pub fn read_byte() -> Option<u8> {
    CONSOLE.lock().read_byte()
}

/// Reads one line of console input into `line` (without the `\r\n` or `\n`), polling until
/// it ends, the buffer is full, or `give_up()` says to stop; returns the bytes read, or `None`
/// when it gave up with no line.
pub fn read_line(line: &mut [u8], mut give_up: impl FnMut() -> bool) -> Option<usize> {
    let mut length = 0;
    while length < line.len() {
        match read_byte() {
            Some(b'\n') => return Some(length),
            Some(b'\r') => {}
            Some(byte) => {
                line[length] = byte;
                length += 1;
            }
            None if give_up() => return None,
            None => core::hint::spin_loop(),
        }
    }
    Some(length)
}

/// Frees the console lock if the code that an exception or panic interrupted held it, so
/// that the report of what went wrong can be printed. Only for the abort path.
pub(crate) fn emergency_unlock() {
    if CONSOLE.is_locked() {
        // SAFETY: only called on the way to ending the VM: the interrupted holder never
        // resumes, so no two writers use the port at once.
        unsafe { CONSOLE.force_unlock() };
    }
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => { $crate::console::print(format_args!($($argument)*)) };
}

/// Prints a line to the guest console; the line is written whole.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($argument:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($argument)*))) };
}
