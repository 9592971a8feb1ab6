//! rdpru: kvm-unit-tests' rdpru test. RDPRU (AMD APM Vol. 3) raises #UD at CPL 0 and 3 where
//! CPUID.80000008H:EBX[4] is clear; where it is set, it reads MPERF (ECX 0) and APERF (ECX 1)
//! with CF set, both counting up, and returns 0 with CF clear for a register beyond the largest
//! (CPUID.80000008H:EDX[31:16]). Neither KVM nor QEMU's TCG offers it, so the #UD side runs.
//!
//! This project's kvm_pvm stops the VM on RDPRU ("KVM internal error ... emulation
//! failure") instead of raising #UD: the instruction is skipped there unless the argument
//! `force` asks for it (the reproducer entry `reproduce-rdpru-unadvertised`).
#![no_std]
#![no_main]

use vmunit::arch::cpuid::{Feature, cpuid};
use vmunit::arch::instructions::{rdpru, try_rdpru};
use vmunit::arch::run_in_user_mode;
use vmunit::catch::Attempt;
use vmunit::{Vector, report, report_skip};

vmunit::main!(main);

/// RDPRU's register numbers.
const MPERF: u32 = 0;
const APERF: u32 = 1;

fn main(args: &[&str]) {
    if Feature::Rdpru.supported() {
        advertised();
    } else if vmunit::environment::instruction_emulating_kvm() && !args.contains(&"force") {
        report_skip!(
            "unadvertised RDPRU not executed: this host's kvm_pvm stops the VM on it (KVM internal error) instead of raising #UD; see reproduce-rdpru-unadvertised"
        );
    } else {
        for register in [MPERF, APERF, 2] {
            let Attempt { result, address } = try_rdpru(register);
            report!(
                matches!(result, Err(e) if e.vector == Vector::UD && e.rip == address),
                "RDPRU with ECX={register} raises #UD at {address:#x} where CPUID.80000008H:EBX[4] is clear (got {result:x?})"
            );
        }
        let result = run_in_user_mode(|| rdpru(MPERF));
        report!(
            matches!(result, Err(e) if e.vector == Vector::UD),
            "RDPRU at CPL 3 raises #UD too (got {result:x?})"
        );
    }
}

/// RDPRU reads MPERF and APERF, which count up; a register beyond the largest reads 0.
fn advertised() {
    for (name, register) in [("MPERF", MPERF), ("APERF", APERF)] {
        let first = try_rdpru(register).result;
        let second = try_rdpru(register).result;
        report!(
            matches!((first, second), (Ok((a, true)), Ok((b, true))) if b > a),
            "RDPRU reads {name} with CF set, and it counts up (got {first:x?}, then {second:x?})"
        );
    }
    let largest = cpuid(0x8000_0008, 0).edx >> 16;
    let beyond = largest + 1;
    let result = try_rdpru(beyond).result;
    report!(
        result == Ok((0, false)),
        "RDPRU of register {beyond}, beyond the largest ({largest}), returns 0 with CF clear (got {result:x?})"
    );
}
