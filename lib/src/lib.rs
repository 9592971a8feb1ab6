//! vmunit: the guest runtime of vmunit's tiny test kernels.
//!
//! It boots the guest (PVH on x86_64), sets up a console, exceptions, page tables and a heap,
//! splits the command line into arguments and calls the test's `main`, registered with
//! [`main!`]. Tests report through kvm-unit-tests-compatible macros ([`report!`] and friends);
//! when `main` returns, the runtime prints the summary ([`report_summary`]) and exits.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! vmunit::main!(main);
//! fn main(_args: &[&str]) {
//!     vmunit::report!(1 + 1 == 2, "arithmetic works");
//! }
//! ```
//!
//! Only the reporting logic ([`report`]), argument splitting ([`args`]) and the benchmark
//! format ([`benchmark`]) build on the host,
//! where they are unit tested; everything else exists on bare-metal targets only.

#![no_std]
#![allow(unsafe_code)] // The runtime is where the unsafe code lives; test crates deny it.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
extern crate alloc;

pub mod args;
pub mod benchmark;
pub mod report;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod catch;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod environment;
#[cfg(target_os = "none")]
pub mod memory;
#[cfg(target_os = "none")]
pub mod migration;
#[cfg(target_os = "none")]
pub mod mmio;
#[cfg(target_os = "none")]
pub mod pci;
#[cfg(target_os = "none")]
mod reporting;
#[cfg(target_os = "none")]
pub mod runtime;
#[cfg(target_os = "none")]
pub mod subtest;
#[cfg(target_os = "none")]
pub mod time;
#[cfg(target_os = "none")]
mod work;

#[cfg(target_os = "none")]
pub use arch::{Exception, Vector, catch_exception, trap_exceptions};
#[cfg(target_os = "none")]
pub use environment::env;
#[cfg(target_os = "none")]
pub use migration::{
    Migration, begin_continuous_migration, end_continuous_migration, migrate, migrate_holding, migrate_once,
    migrate_quiet, migrate_skip,
};
#[cfg(target_os = "none")]
pub use reporting::{
    __push_prefix, __report_info, __report_kind, PrefixGuard, known_failure, prefix, report_summary,
};
#[cfg(target_os = "none")]
pub use runtime::{args, exit};
/// Marks a function as a subtest (see [`subtests!`] and [`subtest`]):
///
/// - `#[vmunit::test] fn name()`, or `fn name(state: &State)` / `(state: &mut State)` to
///   borrow the suite state that `subtests!(init = ..)` made;
/// - `#[vmunit::test(ignore)]`: runs only when named on the command line;
/// - `#[vmunit::test(should_fault)]`, `#[vmunit::test(should_fault = PF)]`: passes only if it
///   faults (with that `vmunit::Vector`: an exception class on aarch64, e.g. `UNKNOWN`);
/// - `#[vmunit::test(cases = TABLE)] fn name(case: &Case)` (or `(state: &State, case: &Case)`):
///   runs once per element of `TABLE` (an array or slice), each under a prefix that is the
///   case's `Display`;
/// - `#[vmunit::test(timeout_ms = 500)]`: FAILs if it (each case) takes longer than that.
///
/// Options combine: `#[vmunit::test(cases = SIZES, timeout_ms = 100)]`.
pub use vmunit_macros::test;

/// Makes the test run its `#[vmunit::test]` subtests, as its `main`:
///
/// - `vmunit::subtests!();`
/// - `vmunit::subtests!(init = set_up);` with `fn set_up() -> State`: subtests may take
///   `&State` or `&mut State`;
/// - `vmunit::subtests!(init = set_up, exit = tear_down);` with also `fn tear_down(State)`
///   (or `fn tear_down()` when `set_up` returns nothing), called after the last subtest.
///
/// Arguments without `=` select subtests by name or glob; see [`subtest`].
#[macro_export]
macro_rules! subtests {
    () => {
        $crate::subtests!(init = __vmunit_no_state);
        fn __vmunit_no_state() {}
    };
    (init = $init:path $(,)?) => {
        $crate::subtests!(init = $init, exit = ::core::mem::drop);
    };
    (init = $init:path, exit = $exit:path $(,)?) => {
        $crate::main!(__vmunit_run_subtests);
        fn __vmunit_run_subtests(args: &[&str]) -> i32 {
            $crate::subtest::run(args, $init, $exit)
        }
    };
}

/// Registers the test's entry point: `vmunit::main!(main);` with `fn main(args: &[&str])`.
///
/// The runtime calls it after boot with the words of the kernel command line (`-append`,
/// the runner's `test_args`). A `main` that returns nothing ends with [`report_summary()`]'s
/// code; one that returns an `i32` (often `report_summary()` itself) exits with that code
/// (see [`Termination`]).
///
/// `vmunit::main!(main, el2);` (aarch64) states that the test runs at EL2 where the machine
/// enters the kernel there (`-M virt,virtualization=on`) and the CPU has VHE: the kernel then
/// stays at EL2 with HCR_EL2.{E2H, TGE} = {1, 1}, as kvm-unit-tests does. Without `el2` the
/// boot drops to EL1. `vmunit::arch::El2Boot::get()` says which happened, and why.
#[macro_export]
macro_rules! main {
    ($function:path) => {
        $crate::main!(@entry $function, 0);
    };
    ($function:path, el2) => {
        $crate::main!(@entry $function, 1);
    };
    (@entry $function:path, $el2:literal) => {
        /// The runtime's hook into this test (see `vmunit::main!`).
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub fn vmunit_test_main(args: &[&str]) -> i32 {
            let main: fn(&[&str]) -> _ = $function;
            $crate::Termination::exit_code(main(args))
        }

        /// The test's choice of exception level, read by the aarch64 boot code before any Rust
        /// runs: 1 stays at EL2 (with VHE) when entered there, 0 drops to EL1.
        #[allow(unsafe_code, non_upper_case_globals)]
        #[unsafe(no_mangle)]
        #[used]
        pub static vmunit_el2_choice: u8 = $el2;
    };
}

/// What a test's `main` (see [`main!`]) may return.
#[cfg(target_os = "none")]
pub trait Termination {
    /// The code the test exits with.
    fn exit_code(self) -> i32;
}

/// Nothing: the test ends with [`report_summary()`]'s code, from the reports it made.
#[cfg(target_os = "none")]
impl Termination for () {
    fn exit_code(self) -> i32 {
        report_summary()
    }
}

/// An exit code, normally `report_summary()`'s.
#[cfg(target_os = "none")]
impl Termination for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}
