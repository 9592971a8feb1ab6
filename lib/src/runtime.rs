//! The runtime's life cycle: calling the test's `main` after boot, `exit`, and the abort path
//! shared by panics and unexpected exceptions.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::report::exit_code;

unsafe extern "Rust" {
    /// Defined by the test crate through `vmunit::main!`.
    fn vmunit_test_main(args: &[&str]) -> i32;
}

/// The command line, kept for the program's lifetime so that [`args`] can lend its words.
struct CommandLine {
    text: [u8; CommandLine::CAPACITY],
    length: usize,
}

impl CommandLine {
    const CAPACITY: usize = 2048;

    fn text(&self) -> &str {
        core::str::from_utf8(&self.text[..self.length]).unwrap_or("")
    }
}

static COMMAND_LINE: spin::Once<CommandLine> = spin::Once::new();
static ARGUMENTS: spin::Once<([&'static str; crate::args::MAX_ARGS], usize)> = spin::Once::new();

/// The test's arguments (the words of `-append`), as `main` receives them: for code that
/// `main` does not call directly, such as `#[vmunit::test]` subtests.
pub fn args() -> &'static [&'static str] {
    match ARGUMENTS.get() {
        Some((words, count)) => &words[..*count],
        None => &[],
    }
}

/// Called by the architecture's boot code once the machine is set up.
pub(crate) fn start(command_line: &str) -> ! {
    let line = COMMAND_LINE.call_once(|| {
        // Cut at a character boundary: the text must stay valid UTF-8.
        let mut length = command_line.len().min(CommandLine::CAPACITY);
        while !command_line.is_char_boundary(length) {
            length -= 1;
        }
        let mut text = [0; CommandLine::CAPACITY];
        text[..length].copy_from_slice(&command_line.as_bytes()[..length]);
        CommandLine { text, length }
    });
    let (words, count) = ARGUMENTS.call_once(|| crate::args::split(line.text()));
    // SAFETY: `vmunit::main!` defines `vmunit_test_main` with exactly this signature; a test
    // crate without it fails to link.
    let code = unsafe { vmunit_test_main(&words[..*count]) };
    exit(code)
}

/// Ends the test with `code` (kvm-unit-tests' `exit()`): prints `EXIT: STATUS=<(code << 1) | 1>`,
/// the form kvm-unit-tests' scripts read, then stops the VM so that QEMU exits with that
/// status. Codes outside 0..=127 cannot be passed through QEMU and become 1 (failure).
pub fn exit(code: i32) -> ! {
    let code = if (0..=127).contains(&code) {
        code
    } else {
        crate::println!("INFO: exit code {code} is outside 0..=127; exiting with 1");
        exit_code::FAIL
    };
    crate::println!("\nEXIT: STATUS={}", (code << 1) | 1);
    crate::arch::exit::exit(code as u8)
}

static ABORTING: AtomicBool = AtomicBool::new(false);

/// Ends the test after something unrecoverable: prints `ABORT: <prefixes><reason>` and the
/// summary, and exits with kvm-unit-tests' abort code (QEMU status 127).
pub(crate) fn abort(reason: fmt::Arguments<'_>) -> ! {
    if ABORTING.swap(true, Ordering::SeqCst) {
        // A fault or panic while aborting: printing may be what is broken.
        crate::arch::exit::exit(exit_code::ABORT as u8);
    }
    crate::console::emergency_unlock();
    crate::reporting::with_prefixes(|prefixes| crate::println!("ABORT: {prefixes}{reason}"));
    crate::println!("{}", crate::reporting::counts());
    exit(exit_code::ABORT)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::console::emergency_unlock();
    match info.location() {
        Some(location) => abort(format_args!("panicked at {location}: {}", info.message())),
        None => abort(format_args!("panicked: {}", info.message())),
    }
}
