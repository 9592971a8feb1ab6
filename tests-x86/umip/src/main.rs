//! umip: User-Mode Instruction Prevention (kvm-unit-tests' umip test): with CR4.UMIP set,
//! SGDT, SIDT, SLDT, SMSW and STR raise #GP(0) at CPL 3, while at CPL 0, and at CPL 3 with
//! UMIP clear, they run (SDM Vol. 3, 2.5); MOV from CR0 raises #GP(0) at CPL 3 either way.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, read_cr0, read_cr4, try_write_cr4};
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
    let cr4 = read_cr4();
    {
        // kvm-unit-tests runs the UMIP-clear half whether or not UMIP exists.
        let _prefix = prefix("UMIP clear");
        check_cpl0();
        for (name, function) in INSTRUCTIONS {
            let result = run_in_user_mode(function);
            report!(result.is_ok(), "{name} at CPL 3 runs (got {result:x?})");
        }
        check_mov_from_cr0_at_cpl3();
    }
    if !Feature::Umip.supported() {
        report_skip!("UMIP set: CPUID.7.0:ECX[2] is clear");
        return report_summary();
    }
    let set = try_write_cr4(cr4 | Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION.bits());
    report!(set.is_ok(), "CR4.UMIP can be set (got {set:x?})");
    {
        let _prefix = prefix("UMIP set");
        check_cpl0();
        for (name, function) in INSTRUCTIONS {
            let result = run_in_user_mode(function);
            report!(
                matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0),
                "{name} at CPL 3 raises #GP(0) (got {result:x?})"
            );
        }
        check_mov_from_cr0_at_cpl3();
    }
    report!(try_write_cr4(cr4).is_ok(), "CR4 is restored to {cr4:#x}");
    report_summary()
}

/// At CPL 0 the five instructions run whatever CR4.UMIP says, and store what the CPU holds:
/// the runtime's GDT and IDT, no LDT, CR0's low 16 bits, the runtime's TSS selector.
fn check_cpl0() {
    let (limit, base) = store_gdtr();
    report!(
        limit > 0 && base != 0,
        "SGDT at CPL 0 runs (limit {limit:#x}, base {base:#x})"
    );
    let (limit, base) = store_idtr();
    report!(
        limit == 256 * 16 - 1 && base != 0,
        "SIDT at CPL 0 runs: 256 16-byte gates (limit {limit:#x}, base {base:#x})"
    );
    let ldtr = store_ldtr();
    report!(ldtr == 0, "SLDT at CPL 0 runs: no LDT (got {ldtr:#x})");
    let status = store_machine_status();
    let cr0 = read_cr0();
    report!(
        status & 0xffff == cr0 & 0xffff,
        "SMSW at CPL 0 runs and stores CR0[15:0] {:#x} (got {status:#x})",
        cr0 & 0xffff
    );
    let task = store_task_register();
    report!(task != 0, "STR at CPL 0 runs (TR {task:#x})");
}

/// MOV from CR0 is privileged: #GP(0) at CPL 3, with or without UMIP.
fn check_mov_from_cr0_at_cpl3() {
    let result = run_in_user_mode(read_cr0);
    report!(
        matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0),
        "MOV from CR0 at CPL 3 raises #GP(0) (got {result:x?})"
    );
}
