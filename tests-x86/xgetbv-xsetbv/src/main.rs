//! xgetbv-xsetbv: a reproducer. With CR4.OSXSAVE set, XGETBV(0) reads XCR0 (x87 bit always
//! set) and XSETBV(0) takes valid values and raises #GP for invalid ones; with OSXSAVE clear
//! both raise #UD (SDM Vol. 1, 13.3; Vol. 2, XGETBV/XSETBV).
//!
//! Under this project's software KVM (kvm_pvm) XGETBV stops the VM with "KVM internal error
//! ... emulation failure": the runner reports a hypervisor error at once.
#![no_std]
#![no_main]

use vmunit::arch::instructions::{Register, has_feature, read_cr4, write_cr4_safe, xgetbv_safe, xsetbv_safe};
use vmunit::{Vector, report, report_skip, report_summary};

vmunit::main!(main);

/// CR4.OSXSAVE: XGETBV/XSETBV/XSAVE are enabled.
const CR4_OSXSAVE: u64 = 1 << 18;
/// XCR0 bits: x87 (must be 1), SSE, AVX.
const XCR0_X87: u64 = 1 << 0;
const XCR0_SSE: u64 = 1 << 1;
const XCR0_AVX: u64 = 1 << 2;

fn is(vector: Vector) -> impl Fn(&vmunit::Exception) -> bool {
    move |exception| exception.vector == vector
}

fn main(_args: &[&str]) -> i32 {
    if !has_feature(1, 0, Register::Ecx, 26) {
        report_skip!("CPUID.1:ECX[26] (XSAVE) is clear");
        return report_summary();
    }
    let cr4 = read_cr4();
    report!(
        write_cr4_safe(cr4 & !CR4_OSXSAVE).is_ok(),
        "CR4.OSXSAVE can be cleared"
    );
    let result = xgetbv_safe(0);
    report!(
        result.as_ref().is_err_and(is(Vector::UD)),
        "XGETBV with CR4.OSXSAVE clear raises #UD (got {result:x?})"
    );

    report!(
        write_cr4_safe(cr4 | CR4_OSXSAVE).is_ok(),
        "CR4.OSXSAVE can be set"
    );
    let xcr0 = xgetbv_safe(0);
    report!(
        matches!(xcr0, Ok(value) if value & XCR0_X87 != 0),
        "XGETBV(0) reads XCR0 with the x87 bit set (got {xcr0:x?})"
    );
    let original = xcr0.unwrap_or(XCR0_X87);
    let result = xsetbv_safe(0, 0);
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XSETBV(0, 0) raises #GP: x87 must stay set (got {result:x?})"
    );
    let result = xsetbv_safe(0, XCR0_X87 | XCR0_AVX);
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XSETBV(0) of AVX without SSE raises #GP (got {result:x?})"
    );
    let result = xsetbv_safe(0, XCR0_X87 | XCR0_SSE);
    report!(result.is_ok(), "XSETBV(0, x87|SSE) succeeds (got {result:x?})");
    let read = xgetbv_safe(0);
    report!(
        read == Ok(XCR0_X87 | XCR0_SSE),
        "XGETBV(0) reads back x87|SSE (got {read:x?})"
    );
    let result = xgetbv_safe(0x7fff_ffff);
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XGETBV of an unknown XCR raises #GP (got {result:x?})"
    );

    report!(
        xsetbv_safe(0, original).is_ok(),
        "XCR0 is restored to {original:#x}"
    );
    report!(write_cr4_safe(cr4).is_ok(), "CR4 is restored to {cr4:#x}");
    report_summary()
}
