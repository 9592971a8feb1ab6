//! Control-flow enforcement (CET, SDM Vol. 1, chapter 18): the user-mode sequences that
//! kvm-unit-tests' x86/cet.c runs to provoke control-protection exceptions (#CP), and their
//! error codes. The CET MSRs are in `msr` (IA32_U_CET, IA32_PL3_SSP, ...), CR4.CET is
//! `Cr4Flags::CONTROL_FLOW_ENFORCEMENT`, the shadow-stack page mapping `mmu::map_shadow_stack`.

use core::arch::asm;

/// A #CP error code (bits 14:0; bit 15 says "in an enclave").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlProtection {
    /// 1: a near RET whose return address differs from the shadow stack's.
    NearReturn,
    /// 2: a far RET (or IRET) whose CS:LIP differs from the shadow stack's.
    FarReturn,
    /// 3: an indirect CALL or JMP whose target is not an ENDBRANCH.
    EndBranch,
    /// 4: RSTORSSP with a bad restore token.
    RestoreSsp,
    /// 5: SETSSBSY with a bad supervisor shadow-stack token.
    SetSsBusy,
    /// Any other code.
    Other(u64),
}

impl ControlProtection {
    /// The error code's meaning.
    pub const fn from_error_code(code: u64) -> ControlProtection {
        match code & 0x7fff {
            1 => ControlProtection::NearReturn,
            2 => ControlProtection::FarReturn,
            3 => ControlProtection::EndBranch,
            4 => ControlProtection::RestoreSsp,
            5 => ControlProtection::SetSsBusy,
            _ => ControlProtection::Other(code),
        }
    }
}

/// RDSSPQ: the shadow-stack pointer, or 0 where shadow stacks are off at this CPL (RDSSP is
/// then a NOP, SDM Vol. 2, RDSSPD/RDSSPQ). Without CET it is a NOP too (a reserved-NOP
/// encoding).
pub fn read_shadow_stack_pointer() -> u64 {
    let mut ssp: u64 = 0;
    // SAFETY: RDSSPQ only writes RAX, or nothing.
    unsafe {
        asm!(".byte 0xf3, 0x48, 0x0f, 0x1e, 0xc8", inout("rax") ssp, options(nomem, nostack, preserves_flags))
    };
    ssp
}

/// A near CALL whose callee overwrites its return address on the ordinary stack and returns:
/// with shadow stacks on, the RET raises #CP([`ControlProtection::NearReturn`]) (kvm-unit-tests'
/// `cet_shstk_func`); without, it returns to the address written, just after, and the
/// function returns normally. Never catches: for `run_in_user_mode`.
pub fn tampered_near_return() {
    // SAFETY: the CALL pushes one return address and the RET pops it: the stack is balanced
    // whichever of the two addresses the RET goes to (the UD2 is the original one, never run).
    unsafe {
        asm!(
            "lea {target}, [rip + 3f]",
            "call 2f",
            "ud2",
            "2:",
            "mov qword ptr [rsp], {target}",
            "ret",
            "3:",
            target = out(reg) _,
        )
    };
}

/// A far CALL (m16:32, the current CS) whose callee moves its return address past the UD2 after
/// the CALL and returns with a 32-bit far RET: with shadow stacks on,
/// #CP([`ControlProtection::FarReturn`]) (kvm-unit-tests' `cet_shstk_far_ret`, which skips a
/// NOP); without, it returns past the UD2 (a return to the original address would raise #UD).
/// `None` (nothing run) when the code lies above 4 GiB, out of a 32-bit offset's reach. Never
/// catches: for `run_in_user_mode`.
pub fn tampered_far_return() -> Option<()> {
    let target: u64;
    // SAFETY: only computes an address.
    unsafe { asm!("lea {}, [rip + 2f]", "2:", out(reg) target, options(nomem, nostack, preserves_flags)) };
    if target > u64::from(u32::MAX) - 4096 {
        return None;
    }
    // SAFETY: the far CALL pushes CS and EIP (8 bytes) and the 32-bit far RET pops them; the
    // 8-byte far pointer is popped after. The original return address holds a UD2, which a
    // RET that ignored the tampering would run (#UD, caught by the caller's catch).
    unsafe {
        asm!(
            "lea {scratch}, [rip + 3f]",
            "sub rsp, 8",
            "mov dword ptr [rsp], {scratch:e}",
            "mov {scratch:x}, cs",
            "mov word ptr [rsp + 4], {scratch:x}",
            "call fword ptr [rsp]",
            "ud2",
            "add rsp, 8",
            "jmp 4f",
            "3:",
            "add qword ptr [rsp], 2",
            "retf",
            "4:",
            scratch = out(reg) _,
        )
    };
    Some(())
}

/// An indirect JMP to an instruction that is not ENDBR64: with indirect-branch tracking on,
/// #CP([`ControlProtection::EndBranch`]) at the target (kvm-unit-tests' `cet_ibt_func`);
/// without, nothing. Never catches: for `run_in_user_mode`.
pub fn indirect_jump_without_end_branch() {
    // SAFETY: jumps to the next instruction of the same block.
    unsafe {
        asm!(
            "lea {target}, [rip + 2f]",
            "jmp {target}",
            "2:",
            "nop",
            target = out(reg) _,
            options(nomem, nostack),
        )
    };
}
