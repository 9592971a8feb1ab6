//! The runtime's life cycle: the boot sequence both architectures share (console, environment,
//! memory, arguments, the test's `main`), `exit`, and the abort path shared by panics and
//! unexpected exceptions.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::Boot;
use crate::report::exit_code;
use vmunit_protocol::{AbortLine, ExitLine, GuestCode};

unsafe extern "Rust" {
    /// Defined by the test crate through `vmunit::main!`.
    fn vmunit_test_main(args: &[&str]) -> i32;
}

/// The longest command line kept, in bytes.
const COMMAND_LINE_CAPACITY: usize = 2048;

/// The command line, kept for the program's lifetime so that [`args`] can lend its words.
static COMMAND_LINE: spin::Once<heapless::String<COMMAND_LINE_CAPACITY>> = spin::Once::new();
static ARGUMENTS: spin::Once<crate::args::Arguments<'static>> = spin::Once::new();

/// The test's arguments (the words of `-append`), as `main` receives them: for code that
/// `main` does not call directly, such as `#[vmunit::test]` subtests.
pub fn args() -> &'static [&'static str] {
    ARGUMENTS.get().map_or(&[], |words| words.as_slice())
}

/// The boot sequence both architectures share, called by the architecture's `rust_entry`
/// once the machine is set up as far as `boot` describes: the console, the environment, the
/// heap and page frames, the architecture's own set-up that needs them, then the test's
/// `main` with the command line's words, and exit.
pub(crate) fn start(boot: &impl Boot) -> ! {
    crate::console::init();
    crate::environment::init(boot.environment());
    crate::memory::init(boot.free_memory());
    boot.start_machine();
    let line = COMMAND_LINE.call_once(|| {
        // Cut at a character boundary: the text must stay valid UTF-8.
        let command_line = boot.command_line();
        let mut length = command_line.len().min(COMMAND_LINE_CAPACITY);
        while !command_line.is_char_boundary(length) {
            length -= 1;
        }
        let mut text = heapless::String::new();
        // Cannot fail: `length` is at most the capacity.
        let _ = text.push_str(&command_line[..length]);
        text
    });
    let words = ARGUMENTS.call_once(|| crate::args::split(line));
    // SAFETY: `vmunit::main!` defines `vmunit_test_main` with exactly this signature; a test
    // crate without it fails to link.
    let code = unsafe { vmunit_test_main(words) };
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
    // `code` is in 0..=127 here.
    crate::println!("\n{}", ExitLine::of(GuestCode::from_code(code as u32)));
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
    crate::reporting::with_prefixes(|prefixes| {
        let reason = format_args!("{prefixes}{reason}");
        crate::println!("{}", AbortLine { reason });
    });
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
