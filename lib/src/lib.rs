//! vmunit: the guest runtime of vmunit's tiny test kernels.
//!
//! It boots the guest (PVH on x86_64), sets up a console, exceptions, page tables and a heap,
//! splits the command line into arguments and calls the test's `main`, registered with
//! [`main!`]. Tests report through kvm-unit-tests-compatible macros ([`report!`] and friends)
//! and end with [`report_summary`].
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use vmunit::{report, report_summary};
//! vmunit::main!(main);
//! fn main(_args: &[&str]) -> i32 {
//!     report!(1 + 1 == 2, "arithmetic works");
//!     report_summary()
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
pub use reporting::{
    __push_prefix, __report_info, __report_kind, PrefixGuard, known_failure, prefix, report_summary,
};
#[cfg(target_os = "none")]
pub use runtime::{args, exit};
/// Marks `fn name()` as a subtest (see [`subtests!`]): `#[vmunit::test]`,
/// `#[vmunit::test(ignore)]`, `#[vmunit::test(should_fault)]`, `#[vmunit::test(should_fault = PF)]`.
pub use vmunit_macros::test;

/// Makes the test run its `#[vmunit::test]` subtests: `vmunit::subtests!();`, or with a suite
/// set-up and tear-down, `vmunit::subtests!(init = set_up, exit = tear_down);`. Arguments
/// without `=` select subtests by name or glob; see `vmunit::subtest`.
#[macro_export]
macro_rules! subtests {
    () => {
        $crate::main!(__vmunit_run_subtests);
        fn __vmunit_run_subtests(args: &[&str]) -> i32 {
            $crate::subtest::run_all(args, None, None)
        }
    };
    (init = $init:path, exit = $exit:path $(,)?) => {
        $crate::main!(__vmunit_run_subtests);
        fn __vmunit_run_subtests(args: &[&str]) -> i32 {
            $crate::subtest::run_all(args, Some($init), Some($exit))
        }
    };
}

/// Registers the test's entry point: `vmunit::main!(main);` with `fn main(args: &[&str]) -> i32`.
///
/// The runtime calls it after boot with the words of the kernel command line (`-append`,
/// the runner's `test_args`) and exits with the code it returns, normally
/// [`report_summary()`]'s.
#[macro_export]
macro_rules! main {
    ($function:path) => {
        /// The runtime's hook into this test (see `vmunit::main!`).
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub fn vmunit_test_main(args: &[&str]) -> i32 {
            let main: fn(&[&str]) -> i32 = $function;
            main(args)
        }
    };
}
