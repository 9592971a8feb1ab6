//! vmunit-runner library: configuration, command-line building, execution and classification of
//! guest test runs under QEMU, shared by the `vmunit-runner` binary and its integration tests.

/// `println!` for the runner: output to a stdout that was closed (`./run_tests | head`) is
/// dropped instead of panicking with a backtrace. Shadows std's in this crate and `main.rs`.
#[macro_export]
macro_rules! println {
    ($($argument:tt)*) => {
        $crate::write_line(&mut ::std::io::stdout(), format_args!($($argument)*))
    };
}

/// `eprintln!` for the runner: like [`println!`], for stderr.
#[macro_export]
macro_rules! eprintln {
    ($($argument:tt)*) => {
        $crate::write_line(&mut ::std::io::stderr(), format_args!($($argument)*))
    };
}

/// Writes one line, ignoring a closed stream (the reader went away; nothing is left to tell).
#[doc(hidden)]
pub fn write_line(stream: &mut impl std::io::Write, line: std::fmt::Arguments<'_>) {
    let _ = writeln!(stream, "{line}");
}

pub mod app;
pub mod config;
pub mod environment;
pub mod execute;
pub mod guests;
pub mod outcome;
pub mod output;
pub mod qemu;
pub mod select;
pub mod standalone;
pub mod subtests;
pub mod symbolise;
pub mod workspace;
