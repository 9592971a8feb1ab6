//! sse-instruction: a reproducer. An SSE instruction (XORPS) executes once CR4.OSFXSR is set,
//! and raises #UD while it is clear (SDM Vol. 3, 2.5 and 13.1).
//!
//! Under this project's software KVM (kvm_pvm) the instruction stops the VM with "KVM
//! internal error ... emulation failure": the runner reports a hypervisor error at once.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::Feature;
use vmunit::arch::instructions::try_sse_clear_xmm0;
use vmunit::{Vector, report, report_skip, report_summary};

vmunit::main!(main);

fn main(_args: &[&str]) -> i32 {
    if !Feature::Sse.supported() {
        report_skip!("CPUID.1:EDX[25] (SSE) is clear");
        return report_summary();
    }
    let cr4 = read_cr4();
    report!(
        try_write_cr4(cr4 & !Cr4Flags::OSFXSR.bits()).is_ok(),
        "CR4.OSFXSR can be cleared"
    );
    let result = try_sse_clear_xmm0();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "XORPS with CR4.OSFXSR clear raises #UD (got {result:x?})"
    );
    report!(
        try_write_cr4(cr4 | Cr4Flags::OSFXSR.bits()).is_ok(),
        "CR4.OSFXSR can be set"
    );
    let result = try_sse_clear_xmm0();
    report!(
        result.is_ok(),
        "XORPS with CR4.OSFXSR set executes (got {result:x?})"
    );
    report!(try_write_cr4(cr4).is_ok(), "CR4 is restored to {cr4:#x}");
    report_summary()
}
