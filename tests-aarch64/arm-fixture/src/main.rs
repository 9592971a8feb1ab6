//! arm-fixture: an aarch64 guest whose outcome is chosen by its first argument, so that the
//! framework's own tests can check that the runner classifies every kind of ending correctly.
//!
//! pass, fail, skip, panic, exception (an undefined instruction), hang, psci-off-no-exit
//! (PSCI SYSTEM_OFF without an EXIT line: QEMU exits with 0, which must never read as a pass),
//! stack-overflow (unbounded recursion runs into the stack's guard page: the runtime must
//! report it, from its separate exception stack, and end the test rather than hang), and
//! subtests (`#[vmunit::test]` functions: `should_fault` judged by exception class, and a
//! time bound, as on x86).
//! gic-offset-outside and psci-entry-point-call check that the safe GIC and PSCI functions
//! refuse what would write outside the GIC's registers or start code: a panic, not a write.
#![no_std]
#![no_main]

use vmunit::arch::exit::power_off;
use vmunit::arch::instructions::{undefined_instruction, wait_for_interrupt};
use vmunit::arch::smp::mpidr_of;
use vmunit::arch::{gic, psci};
use vmunit::{println, report, report_skip, report_summary};

vmunit::main!(main);

fn main(args: &[&str]) -> i32 {
    match args.first().copied().unwrap_or("") {
        "pass" => {
            report!(true, "a check that holds");
            report!(
                args.len() == 1,
                "the fixture got exactly one argument (got {})",
                args.len()
            );
            report_summary()
        }
        "fail" => {
            report!(true, "a check that holds");
            report!(false, "a check that fails on purpose");
            report_summary()
        }
        "skip" => {
            report_skip!("nothing to test here, on purpose");
            report_summary()
        }
        "panic" => panic!("the fixture panics on purpose"),
        "exception" => {
            undefined_instruction();
            report_summary()
        }
        "hang" => loop {
            wait_for_interrupt();
        },
        "stack-overflow" => {
            report!(recurse(0) > 0, "unbounded recursion returned");
            report_summary()
        }
        "subtests" => vmunit::subtest::run_all(&args[1..], None, None),
        "psci-off-no-exit" => {
            report!(
                true,
                "a check that holds, then the VM powers off without an EXIT line"
            );
            power_off()
        }
        "gic-offset-outside" => {
            report!(gic::init().is_ok(), "the GIC initialises");
            // The first byte past the distributor's frame: refused, never written.
            gic::distributor_write(gic::distributor_frame_size(), 0);
            report!(false, "a distributor write outside its frame was refused");
            report_summary()
        }
        "psci-entry-point-call" => {
            // CPU_ON of CPU 1 at address 0 through the safe call: refused, never made.
            let result = psci::call(psci::function::CPU_ON, mpidr_of(1), 0, 1);
            report!(
                false,
                "a safe PSCI call with an entry point was refused (got {result})"
            );
            report_summary()
        }
        other => {
            println!("arm-fixture: unknown mode {other:?}");
            vmunit::exit(1)
        }
    }
}

/// A subtest that passes.
#[vmunit::test]
fn passes() {
    report!(true, "a check inside a subtest");
}

/// A subtest that faults where it should not: it fails, and the next subtest still runs.
#[vmunit::test]
fn faults_unexpectedly() {
    undefined_instruction();
}

/// A subtest that must fault, and does.
#[vmunit::test(should_fault)]
fn should_fault_any() {
    undefined_instruction();
}

/// A subtest that must fault with an undefined instruction (class Unknown), and does.
#[vmunit::test(should_fault = Unknown)]
fn should_fault_undefined() {
    undefined_instruction();
}

/// A subtest that must fault with a data abort but raises another class: it fails.
#[vmunit::test(should_fault = DataAbort)]
fn should_fault_other_class() {
    undefined_instruction();
}

/// A subtest that must fault but returns: it fails.
#[vmunit::test(should_fault)]
fn should_fault_but_returns() {}

/// A subtest that overruns its time bound: it fails.
#[vmunit::test(timeout_ms = 20)]
fn overruns_time_bound() {
    vmunit::time::delay(200);
}

/// Recurses without end, 1 KiB of stack per call, until the stack overflows.
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth as u8; 1024]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(frame[depth as usize % 1024])
}
