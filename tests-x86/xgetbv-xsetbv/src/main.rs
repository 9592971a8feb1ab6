//! xgetbv-xsetbv: a reproducer. With CR4.OSXSAVE set, XGETBV(0) reads XCR0 (x87 bit always
//! set) and XSETBV(0) takes valid values and raises #GP for invalid ones; with OSXSAVE clear
//! both raise #UD (SDM Vol. 1, 13.3; Vol. 2, XGETBV/XSETBV).
//!
//! Under this project's software KVM (kvm_pvm) XGETBV stops the VM with "KVM internal error
//! ... emulation failure": the runner reports a hypervisor error at once.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, XCr0Flags, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::Feature;
use vmunit::arch::instructions::{try_xgetbv, try_xsetbv};
use vmunit::{Vector, report, report_skip, report_summary};

vmunit::main!(main);

fn is(vector: Vector) -> impl Fn(&vmunit::Exception) -> bool {
    move |exception| exception.vector == vector
}

fn main(_args: &[&str]) -> i32 {
    if !Feature::Xsave.supported() {
        report_skip!("CPUID.1:ECX[26] (XSAVE) is clear");
        return report_summary();
    }
    let cr4 = read_cr4();
    report!(
        try_write_cr4(cr4 & !Cr4Flags::OSXSAVE.bits()).is_ok(),
        "CR4.OSXSAVE can be cleared"
    );
    let result = try_xgetbv(0);
    report!(
        result.as_ref().is_err_and(is(Vector::UD)),
        "XGETBV with CR4.OSXSAVE clear raises #UD (got {result:x?})"
    );
    let result = try_xsetbv(0, XCr0Flags::X87.bits() | XCr0Flags::SSE.bits());
    report!(
        result.as_ref().is_err_and(is(Vector::UD)),
        "XSETBV with CR4.OSXSAVE clear raises #UD (got {result:x?})"
    );

    report!(
        try_write_cr4(cr4 | Cr4Flags::OSXSAVE.bits()).is_ok(),
        "CR4.OSXSAVE can be set"
    );
    let xcr0 = try_xgetbv(0);
    report!(
        matches!(xcr0, Ok(value) if value & XCr0Flags::X87.bits() != 0),
        "XGETBV(0) reads XCR0 with the x87 bit set (got {xcr0:x?})"
    );
    let original = xcr0.unwrap_or(XCr0Flags::X87.bits());
    let result = try_xsetbv(0, 0);
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XSETBV(0, 0) raises #GP: x87 must stay set (got {result:x?})"
    );
    let result = try_xsetbv(0, XCr0Flags::X87.bits() | XCr0Flags::AVX.bits());
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XSETBV(0) of AVX without SSE raises #GP (got {result:x?})"
    );
    let result = try_xsetbv(0, XCr0Flags::X87.bits() | XCr0Flags::SSE.bits());
    report!(result.is_ok(), "XSETBV(0, x87|SSE) succeeds (got {result:x?})");
    let read = try_xgetbv(0);
    report!(
        read == Ok(XCr0Flags::X87.bits() | XCr0Flags::SSE.bits()),
        "XGETBV(0) reads back x87|SSE (got {read:x?})"
    );
    let result = try_xgetbv(0x7fff_ffff);
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XGETBV of an unknown XCR raises #GP (got {result:x?})"
    );
    let result = try_xsetbv(0x7fff_ffff, XCr0Flags::X87.bits());
    report!(
        result.as_ref().is_err_and(is(Vector::GP)),
        "XSETBV of an unknown XCR raises #GP (got {result:x?})"
    );

    report!(
        try_xsetbv(0, original).is_ok(),
        "XCR0 is restored to {original:#x}"
    );
    report!(try_write_cr4(cr4).is_ok(), "CR4 is restored to {cr4:#x}");
    report_summary()
}
