//! sse-instruction: a reproducer. An SSE instruction (XORPS) executes once CR4.OSFXSR is set,
//! and raises #UD while it is clear (SDM Vol. 3, 2.5 and 13.1).
//!
//! Under this project's software KVM (kvm_pvm) the instruction stops the VM with "KVM
//! internal error ... emulation failure": the runner reports a hypervisor error at once.
#![no_std]
#![no_main]

use vmunit::arch::instructions::{Register, has_feature, read_cr4, sse_clear_xmm0, write_cr4_safe};
use vmunit::{Vector, report, report_skip, report_summary};

vmunit::main!(main);

/// CR4.OSFXSR: the OS supports FXSAVE/FXRSTOR and SSE.
const CR4_OSFXSR: u64 = 1 << 9;

fn main(_args: &[&str]) -> i32 {
    if !has_feature(1, 0, Register::Edx, 25) {
        report_skip!("CPUID.1:EDX[25] (SSE) is clear");
        return report_summary();
    }
    let cr4 = read_cr4();
    report!(
        write_cr4_safe(cr4 & !CR4_OSFXSR).is_ok(),
        "CR4.OSFXSR can be cleared"
    );
    let result = sse_clear_xmm0();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "XORPS with CR4.OSFXSR clear raises #UD (got {result:x?})"
    );
    report!(write_cr4_safe(cr4 | CR4_OSFXSR).is_ok(), "CR4.OSFXSR can be set");
    let result = sse_clear_xmm0();
    report!(
        result.is_ok(),
        "XORPS with CR4.OSFXSR set executes (got {result:x?})"
    );
    report!(write_cr4_safe(cr4).is_ok(), "CR4 is restored to {cr4:#x}");
    report_summary()
}
