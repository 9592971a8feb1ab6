//! umip: User-Mode Instruction Prevention (kvm-unit-tests' umip test): with CR4.UMIP set,
//! SGDT, SIDT, SLDT, SMSW and STR raise #GP(0) at CPL 3, while at CPL 0, and at CPL 3 with
//! UMIP clear, they run (SDM Vol. 3, 2.5).
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::Feature;
use vmunit::arch::instructions::{
    store_gdtr, store_idtr, store_ldtr, store_machine_status, store_task_register,
};
use vmunit::arch::run_in_user_mode;
use vmunit::{Vector, prefix, report, report_skip, report_summary};

vmunit::main!(main);

/// The instructions UMIP covers, each as a function to run at CPL 3.
const INSTRUCTIONS: [(&str, fn()); 5] = [
    ("SGDT", || {
        let _ = store_gdtr();
    }),
    ("SIDT", || {
        let _ = store_idtr();
    }),
    ("SLDT", || {
        let _ = store_ldtr();
    }),
    ("SMSW", || {
        let _ = store_machine_status();
    }),
    ("STR", || {
        let _ = store_task_register();
    }),
];

fn main(_args: &[&str]) -> i32 {
    if !Feature::Umip.supported() {
        report_skip!("UMIP: CPUID.7.0:ECX[2] is clear");
        return report_summary();
    }
    let cr4 = read_cr4();
    {
        let _prefix = prefix("UMIP clear");
        for (name, function) in INSTRUCTIONS {
            let result = run_in_user_mode(function);
            report!(result.is_ok(), "{name} at CPL 3 runs (got {result:x?})");
        }
    }
    let set = try_write_cr4(cr4 | Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION.bits());
    report!(set.is_ok(), "CR4.UMIP can be set (got {set:x?})");
    {
        let _prefix = prefix("UMIP set");
        let (limit, _) = store_gdtr();
        report!(limit > 0, "SGDT at CPL 0 still runs (GDT limit {limit:#x})");
        report!(store_task_register() != 0, "STR at CPL 0 still runs");
        for (name, function) in INSTRUCTIONS {
            let result = run_in_user_mode(function);
            report!(
                matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0),
                "{name} at CPL 3 raises #GP(0) (got {result:x?})"
            );
        }
    }
    report!(try_write_cr4(cr4).is_ok(), "CR4 is restored to {cr4:#x}");
    report_summary()
}
