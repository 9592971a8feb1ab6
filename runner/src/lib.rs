//! vmunit-runner library: configuration, command-line building, execution and classification of
//! guest test runs under QEMU, shared by the `vmunit-runner` binary and its integration tests.

/// `println!` for the runner: output to a stdout that was closed (`./run_tests | head`) is
/// dropped instead of ending the run. Shadows std's in this crate and `main.rs`.
#[macro_export]
macro_rules! println {
    ($($argument:tt)*) => {
        $crate::write_line(false, format_args!($($argument)*))
    };
}

/// `eprintln!` for the runner: like [`println!`], for stderr.
#[macro_export]
macro_rules! eprintln {
    ($($argument:tt)*) => {
        $crate::write_line(true, format_args!($($argument)*))
    };
}

/// The message std's printing panics with when the stream is closed; `main.rs` keeps the panic
/// hook quiet about it.
pub const CLOSED_STREAM_PANIC: &str = "failed printing to";

/// Writes one line through std's printing (so that test harnesses still capture it), and
/// drops it when the stream is closed: std panics then, and the panic ends here.
#[doc(hidden)]
pub fn write_line(to_stderr: bool, line: std::fmt::Arguments<'_>) {
    let print = std::panic::AssertUnwindSafe(|| {
        if to_stderr {
            ::std::eprintln!("{line}");
        } else {
            ::std::println!("{line}");
        }
    });
    let _ = std::panic::catch_unwind(print);
}

pub mod app;
pub mod bench;
pub mod build;
pub mod classify;
pub mod config;
pub mod differential;
pub mod environment;
pub mod error;
pub mod execute;
pub mod freshness;
pub mod guest_line;
pub mod interrupt;
pub mod logdir;
pub mod options;
pub mod plan;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod select;
pub mod standalone;
pub mod subtests;
pub mod symbolise;
pub mod transcript;
pub mod workspace;
