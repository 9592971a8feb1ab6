//! cet: kvm-unit-tests' cet. With CR4.CET set: user-mode shadow stacks (IA32_U_CET.SH_STK_EN,
//! IA32_PL3_SSP pointing at the top of a shadow-stack page) make a RET to a tampered return
//! address raise #CP with error code 1 (near RET) or 2 (far RET), and IA32_PL3_SSP refuses an
//! address that is not 4-byte aligned (#GP); user-mode indirect-branch tracking
//! (IA32_U_CET.ENDBR_EN) makes an indirect JMP to an instruction other than ENDBR64 raise #CP
//! with error code 3. Where neither is advertised (CPUID.7.0:ECX[7] SHSTK, CPUID.7.0:EDX[20]
//! IBT), what the SDM says of that is checked: CR4.CET is reserved (#GP) and the CET MSRs do
//! not exist (#GP), and the sequences that would raise #CP run as ordinary code. Not the
//! forced-emulation checks (KVM's force_emulation_prefix).
#![no_std]
#![no_main]

use vmunit::arch::cet::{
    ControlProtection, indirect_jump_without_end_branch, read_shadow_stack_pointer, tampered_far_return,
    tampered_near_return,
};
use vmunit::arch::control::{Cr0Flags, Cr4Flags, read_cr0, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::mmu::map_shadow_stack;
use vmunit::arch::msr::{
    CET_ENDBR_EN, CET_NO_TRACK_EN, CET_SH_STK_EN, CET_WAIT_FOR_ENDBRANCH, IA32_PL3_SSP, IA32_S_CET,
    IA32_U_CET, try_rdmsr, try_wrmsr,
};
use vmunit::arch::run_in_user_mode;
use vmunit::memory::{PAGE_SIZE, Protection, TestPage};
use vmunit::{Exception, Vector, known_failure, report, report_info, report_skip};

vmunit::main!(main);

fn is_control_protection(
    result: &Result<impl core::fmt::Debug, Exception>,
    expected: ControlProtection,
) -> bool {
    matches!(result, Err(e) if e.vector == Vector::CP && ControlProtection::from_error_code(e.error_code) == expected)
}

fn main(_args: &[&str]) {
    let cet = Cr4Flags::CONTROL_FLOW_ENFORCEMENT.bits();
    if !Feature::Shstk.supported() && !Feature::Ibt.supported() {
        report_skip!(
            "No CET features supported: {} (SHSTK) and {} (IBT) are clear",
            Feature::Shstk.bit(),
            Feature::Ibt.bit()
        );
        unadvertised(cet);
        unprotected();
        return;
    }
    report!(
        read_cr0() & Cr0Flags::WRITE_PROTECT.bits() != 0,
        "CR0.WP is set, as CR4.CET requires"
    );
    let enabled = try_write_cr4(read_cr4() | cet);
    report!(
        enabled.is_ok() && read_cr4() & cet != 0,
        "CR4.CET can be set (got {enabled:x?})"
    );
    shadow_stack();
    indirect_branch_tracking();
    let cleared = try_write_cr4(read_cr4() & !cet);
    let user = try_wrmsr(IA32_U_CET, 0);
    report!(
        cleared.is_ok() && user.is_ok(),
        "CR4.CET and IA32_U_CET cleared again ({cleared:x?}, {user:x?})"
    );
}

/// Neither feature advertised: CR4.CET is a reserved bit and the CET MSRs do not exist.
fn unadvertised(cet: u64) {
    if is_tcg() {
        report_skip!(
            "#GP(0) of MOV to CR4 with CET, a reserved bit without CET: QEMU 10.0's TCG hangs the vCPU on a reserved CR4 bit (helper_write_crN, target/i386/tcg/system/misc_helper.c: reproduce-cr4-reserved-bit-tcg)"
        );
    } else {
        let result = try_write_cr4(read_cr4() | cet);
        report!(
            matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0) && read_cr4() & cet == 0,
            "setting CR4.CET without CET raises #GP(0) (got {result:x?})"
        );
    }
    for (name, index) in [
        ("IA32_U_CET", IA32_U_CET),
        ("IA32_S_CET", IA32_S_CET),
        ("IA32_PL3_SSP", IA32_PL3_SSP),
    ] {
        let read = try_rdmsr(index);
        known_failure(
            is_tcg(),
            "QEMU's TCG reads unknown MSRs as 0 without #GP (helper_rdmsr, target/i386/tcg/system/misc_helper.c; msr's nonexistent checks)",
            || {
                report!(
                    matches!(read, Err(e) if e.vector == Vector::GP),
                    "RDMSR of {name} ({index:#x}) without CET raises #GP (got {read:x?})"
                )
            },
        );
    }
}

/// Without CET, the sequences that provoke #CP run as ordinary code: a RET goes where the
/// ordinary stack says, an indirect JMP needs no ENDBR64, RDSSP is a NOP.
fn unprotected() {
    let near = run_in_user_mode(tampered_near_return);
    report!(
        near.is_ok(),
        "without shadow stacks, a near RET to a tampered return address goes there, not to the UD2 after the CALL (got {near:x?})"
    );
    let far = run_in_user_mode(tampered_far_return);
    report!(
        matches!(far, Ok(Some(()))),
        "without shadow stacks, a 32-bit far RET to a tampered return address goes there, not to the UD2 after the far CALL (got {far:x?})"
    );
    let jump = run_in_user_mode(indirect_jump_without_end_branch);
    report!(
        jump.is_ok(),
        "without IBT, an indirect JMP to a non-ENDBR64 runs on (got {jump:x?})"
    );
    let ssp = run_in_user_mode(read_shadow_stack_pointer);
    report!(
        matches!(ssp, Ok(0)),
        "without shadow stacks, RDSSP is a NOP and leaves its register 0 (got {ssp:x?})"
    );
}

fn shadow_stack() {
    if !Feature::Shstk.supported() {
        report_skip!("SHSTK not supported: {} is clear", Feature::Shstk.bit());
        return;
    }
    let stack = TestPage::new();
    map_shadow_stack(&stack);
    let top = stack.address() + PAGE_SIZE;
    let enabled = try_wrmsr(IA32_U_CET, CET_SH_STK_EN);
    report!(
        enabled.is_ok(),
        "IA32_U_CET.SH_STK_EN can be set (got {enabled:x?})"
    );

    let pointed = try_wrmsr(IA32_PL3_SSP, top);
    let ssp = run_in_user_mode(read_shadow_stack_pointer);
    report!(
        pointed.is_ok() && matches!(ssp, Ok(value) if value > stack.address() && value <= top),
        "RDSSP at CPL 3 reads an SSP in the shadow-stack page {:#x}.. (IA32_PL3_SSP {top:#x}: {pointed:x?}; got {ssp:x?})",
        stack.address()
    );

    let _ = try_wrmsr(IA32_PL3_SSP, top);
    let near = run_in_user_mode(tampered_near_return);
    report!(
        is_control_protection(&near, ControlProtection::NearReturn),
        "NEAR RET shadow-stack protection test: a tampered return address raises #CP(1) (got {near:x?})"
    );

    let _ = try_wrmsr(IA32_PL3_SSP, top);
    let far = run_in_user_mode(tampered_far_return);
    if matches!(far, Ok(None)) {
        report_skip!(
            "FAR RET shadow-stack protection test: the code lies above 4 GiB, beyond an m16:32 far pointer"
        );
    } else {
        report!(
            is_control_protection(&far, ControlProtection::FarReturn),
            "FAR RET shadow-stack protection test: a tampered far return address raises #CP(2) (got {far:x?})"
        );
    }

    // A software write to a shadow-stack page faults: #PF with the SS bit (6) in the error code.
    let write = stack.try_write(0, 1);
    report_info!("a plain write to the shadow-stack page: {write:x?}");
    report!(
        matches!(write, Err(e) if e.vector == Vector::PF && e.error_code & 3 == 3),
        "a plain write to the shadow-stack page raises #PF(P, W) (got {write:x?})"
    );

    let misaligned = try_wrmsr(IA32_PL3_SSP, 0x1);
    report!(
        matches!(misaligned, Err(e) if e.vector == Vector::GP),
        "MSR_IA32_PL3_SSP alignment test: WRMSR of 0x1 raises #GP (got {misaligned:x?})"
    );
    let _ = try_wrmsr(IA32_U_CET, 0);
    let _ = try_wrmsr(IA32_PL3_SSP, 0);
    stack.map(Protection::READ_WRITE);
}

fn indirect_branch_tracking() {
    if !Feature::Ibt.supported() {
        report_skip!("IBT not supported: {} is clear", Feature::Ibt.bit());
        return;
    }
    let enabled = try_wrmsr(IA32_U_CET, CET_ENDBR_EN | CET_NO_TRACK_EN);
    report!(
        enabled.is_ok(),
        "IA32_U_CET.ENDBR_EN and NO_TRACK_EN can be set (got {enabled:x?})"
    );
    let jump = run_in_user_mode(indirect_jump_without_end_branch);
    report!(
        is_control_protection(&jump, ControlProtection::EndBranch),
        "Indirect-branch tracking test: an indirect JMP to a non-ENDBR64 raises #CP(3) (got {jump:x?})"
    );
    // kvm-unit-tests' fixup: the tracker is left in WAIT_FOR_ENDBRANCH; put it back to IDLE.
    if let Ok(value) = try_rdmsr(IA32_U_CET)
        && value & CET_WAIT_FOR_ENDBRANCH != 0
    {
        report_info!("IA32_U_CET {value:#x}: tracker left in WAIT_FOR_ENDBRANCH, set back to IDLE");
        let _ = try_wrmsr(IA32_U_CET, value & !CET_WAIT_FOR_ENDBRANCH);
    }
    let _ = try_wrmsr(IA32_U_CET, 0);
}
