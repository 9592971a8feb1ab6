//! @NAME@: what this test checks, in one line (every file's first line says what it is).
#![no_std] // A guest kernel has no operating system, hence no std.
#![no_main] // The runtime boots the machine and calls the function main! names.

use vmunit::report; // kvm-unit-tests' reporting API, and more: see README.md.

vmunit::main!(main); // Registers `main` as this test's entry point.

/// Runs the checks. `args` are the words of the unittests.toml entry's `test_args`. When it
/// returns, the runtime prints the SUMMARY line and exits with 0 (pass), 1 (fail) or 77 (skip).
fn main(args: &[&str]) {
    // One report line per check; the message says what is expected, and `{..}` what was seen.
    report!(!args.contains(&"fail"), "no argument asks this check to fail (got {args:?})");
}
