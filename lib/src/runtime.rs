//! The runtime's life cycle: calling the test's `main` after boot, `exit`, and the abort path
//! shared by panics and unexpected exceptions.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::report::exit_code;

unsafe extern "Rust" {
    /// Defined by the test crate through `vmunit::main!`.
    fn vmunit_test_main(args: &[&str]) -> i32;
}

/// Called by the architecture's boot code once the machine is set up.
pub(crate) fn start(command_line: &str) -> ! {
    let (words, count) = crate::args::split(command_line);
    // SAFETY: `vmunit::main!` defines `vmunit_test_main` with exactly this signature; a test
    // crate without it fails to link.
    let code = unsafe { vmunit_test_main(&words[..count]) };
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
