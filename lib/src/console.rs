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
