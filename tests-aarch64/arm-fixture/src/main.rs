//! arm-fixture: an aarch64 guest whose outcome is chosen by its first argument, so that the
//! framework's own tests can check that the runner classifies every kind of ending correctly.
//!
//! pass, fail, skip, panic, exception (an undefined instruction), hang, and psci-off-no-exit
//! (PSCI SYSTEM_OFF without an EXIT line: QEMU exits with 0, which must never read as a pass).
#![no_std]
#![no_main]

use vmunit::arch::exit::power_off;
use vmunit::arch::instructions::{raise_undefined_instruction, wait_for_interrupt};
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
            raise_undefined_instruction();
            report_summary()
        }
        "hang" => loop {
            wait_for_interrupt();
        },
        "psci-off-no-exit" => {
            report!(
                true,
                "a check that holds, then the VM powers off without an EXIT line"
            );
            power_off()
        }
        other => {
            println!("arm-fixture: unknown mode {other:?}");
            vmunit::exit(1)
        }
    }
}
