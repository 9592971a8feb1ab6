//! tsx-ctrl: kvm-unit-tests' tsx-ctrl. IA32_TSX_CTRL (0x122, where IA32_ARCH_CAPABILITIES bit 7
//! says it exists) resets to 0 with transactions committing; TSX_CPUID_CLEAR (bit 1) hides RTM
//! and HLE from CPUID and clearing it shows RTM again; RTM_DISABLE (bit 0) makes every XBEGIN
//! abort, and clearing it lets transactions commit again. Needs RTM, IA32_ARCH_CAPABILITIES and
//! its TSX_CTRL bit, each checked in kvm-unit-tests' order and SKIPped with its reason; without
//! RTM, XBEGIN raises #UD (SDM Vol. 2, XBEGIN).
#![no_std]
#![no_main]

use vmunit::arch::cpuid::Feature;
use vmunit::arch::msr::{
    ARCH_CAPABILITIES_TSX_CTRL, IA32_ARCH_CAPABILITIES, IA32_TSX_CTRL, TSX_CTRL_CPUID_CLEAR,
    TSX_CTRL_RTM_DISABLE, try_rdmsr, try_wrmsr,
};
use vmunit::arch::tsx::{try_any_transaction_commits, try_transaction};
use vmunit::{Vector, report, report_info, report_skip};

vmunit::main!(main);

/// kvm-unit-tests' attempts per "does a transaction commit" question.
const ATTEMPTS: u32 = 100;

fn main(_args: &[&str]) {
    if !Feature::Rtm.supported() {
        let result = try_transaction();
        report!(
            matches!(result, Err(e) if e.vector == Vector::UD),
            "XBEGIN raises #UD where {} (RTM) is clear (got {result:x?})",
            Feature::Rtm.bit()
        );
        report_skip!("TSX not available: {} (RTM) is clear", Feature::Rtm.bit());
        return;
    }
    if !Feature::ArchCapabilities.supported() {
        report_skip!(
            "ARCH_CAPABILITIES not available: {} is clear",
            Feature::ArchCapabilities.bit()
        );
        return;
    }
    let capabilities = try_rdmsr(IA32_ARCH_CAPABILITIES);
    report_info!("IA32_ARCH_CAPABILITIES: {capabilities:x?}");
    if !matches!(capabilities, Ok(value) if value & ARCH_CAPABILITIES_TSX_CTRL != 0) {
        report_skip!("TSX_CTRL not available: IA32_ARCH_CAPABILITIES bit 7 is clear ({capabilities:x?})");
        return;
    }

    let reset = try_rdmsr(IA32_TSX_CTRL);
    report!(matches!(reset, Ok(0)), "TSX_CTRL should be 0 (got {reset:x?})");
    let commits = try_any_transaction_commits(ATTEMPTS);
    report!(
        matches!(commits, Ok(true)),
        "Transactions do not abort: one of {ATTEMPTS} XBEGIN/XEND commits (got {commits:x?})"
    );

    let written = try_wrmsr(IA32_TSX_CTRL, TSX_CTRL_CPUID_CLEAR);
    report!(
        written.is_ok(),
        "WRMSR of TSX_CPUID_CLEAR to IA32_TSX_CTRL succeeds (got {written:x?})"
    );
    report!(
        !Feature::Rtm.supported(),
        "TSX_CTRL hides RTM: {} is clear",
        Feature::Rtm.bit()
    );
    report!(
        !Feature::Hle.supported(),
        "TSX_CTRL hides HLE: {} is clear",
        Feature::Hle.bit()
    );

    // Microcode may hide HLE for good: only RTM must come back.
    let written = try_wrmsr(IA32_TSX_CTRL, 0);
    report!(
        written.is_ok() && Feature::Rtm.supported(),
        "TSX_CTRL=0 unhides RTM: {} is set (WRMSR: {written:x?})",
        Feature::Rtm.bit()
    );

    let written = try_wrmsr(IA32_TSX_CTRL, TSX_CTRL_RTM_DISABLE);
    let commits = try_any_transaction_commits(ATTEMPTS);
    report!(
        written.is_ok() && matches!(commits, Ok(false)),
        "TSX_CTRL causes transactions to abort: none of {ATTEMPTS} commits with RTM_DISABLE (WRMSR: {written:x?}, got {commits:x?})"
    );
    let read_back = try_rdmsr(IA32_TSX_CTRL);
    report!(
        matches!(read_back, Ok(value) if value == TSX_CTRL_RTM_DISABLE),
        "IA32_TSX_CTRL reads back RTM_DISABLE (got {read_back:x?})"
    );

    let written = try_wrmsr(IA32_TSX_CTRL, 0);
    let commits = try_any_transaction_commits(ATTEMPTS);
    report!(
        written.is_ok() && matches!(commits, Ok(true)),
        "TSX_CTRL=0 causes transactions to succeed (WRMSR: {written:x?}, got {commits:x?})"
    );
}
