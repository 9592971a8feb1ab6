//! SYSCALL/SYSRET: the fast system-call MSRs (EFER.SCE, STAR, LSTAR, FMASK) and a kernel entry
//! that records what SYSCALL loaded, then returns to user mode with SYSRET.
//!
//! The entry runs on the caller's stack (SYSCALL switches none) with interrupts masked by
//! FMASK, stores into one global [`Entry`] record and returns `RAX + 1`; tests use it on one CPU
//! at a time. The GDT's 32-bit user code, user data and 64-bit user code selectors follow each
//! other (0x18, 0x20, 0x28), as SYSRET's `STAR[63:48]`, `+ 8` and `+ 16` require.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use super::exceptions::selector;
use super::msr::{
    EferFlags, IA32_CSTAR, IA32_EFER, IA32_FMASK, IA32_LSTAR, IA32_STAR, try_rdmsr, try_wrmsr,
    try_wrmsr_unrestricted,
};
use super::{Exception, catch_exception};

/// EFER.SCE: SYSCALL and SYSRET are enabled.
const EFER_SCE: u64 = EferFlags::SYSTEM_CALL_EXTENSIONS.bits();

/// The STAR value for the runtime's GDT: SYSCALL loads CS 0x08 and SS 0x10; SYSRET's 64-bit
/// form loads CS 0x18 + 16 = 0x2b and SS 0x18 + 8 = 0x23, its 32-bit form CS 0x1b (32-bit user
/// code) and the same SS (with RPL 3).
pub const STAR_VALUE: u64 =
    (((selector::USER_CODE32 & !3) as u64) << 48) | ((selector::KERNEL_CODE as u64) << 32);

const _: () = assert!(selector::USER_DATA & !3 == (selector::USER_CODE32 & !3) + 8);
const _: () = assert!(selector::USER_CODE & !3 == (selector::USER_CODE32 & !3) + 16);

/// What the kernel entry saw on its last SYSCALL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// RCX: the address after the SYSCALL.
    pub return_address: u64,
    /// R11: RFLAGS at the SYSCALL.
    pub saved_flags: u64,
    /// RFLAGS in the kernel, after FMASK.
    pub kernel_flags: u64,
    /// RSP in the kernel (SYSCALL does not switch stacks).
    pub stack_pointer: u64,
    /// CS in the kernel.
    pub code_segment: u16,
    /// SS in the kernel.
    pub stack_segment: u16,
    /// Padding, zero.
    pub reserved: u32,
    /// RAX at the SYSCALL: the call's value.
    pub value: u64,
    /// RDX at the SYSCALL: [`syscall`] puts RFLAGS there right before the SYSCALL, so that the
    /// entry's R11 can be checked even when SYSRET never returns.
    pub caller_flags: u64,
    /// RSI at the SYSCALL: [`syscall`] puts the address after the SYSCALL there, so that the
    /// entry's RCX can be checked even when SYSRET never returns.
    pub caller_return_address: u64,
}

const _: () = assert!(size_of::<Entry>() == 64);

/// The record the entry writes (offsets fixed by `Entry`'s layout).
#[repr(transparent)]
struct Record(core::cell::UnsafeCell<Entry>);
// SAFETY: only the entry writes the record, and Rust reads it (volatile) only between SYSCALLs.
unsafe impl Sync for Record {}
#[unsafe(no_mangle)]
static VMUNIT_SYSCALL_ENTRY_RECORD: Record = Record(core::cell::UnsafeCell::new(Entry {
    return_address: 0,
    saved_flags: 0,
    kernel_flags: 0,
    stack_pointer: 0,
    code_segment: 0,
    stack_segment: 0,
    reserved: 0,
    value: 0,
    caller_flags: 0,
    caller_return_address: 0,
}));
/// How many SYSCALLs the entry took.
#[unsafe(no_mangle)]
static VMUNIT_SYSCALL_COUNT: AtomicU64 = AtomicU64::new(0);
/// When not zero, the address SYSRET returns to instead of RCX (to try non-canonical ones).
#[unsafe(no_mangle)]
static VMUNIT_SYSRET_TARGET: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.vmunit_syscall, "ax"
    /* Both entries' record: RCX, R11, RSP, CS, SS, RAX, RDX, RSI, then RFLAGS through the
       caller's stack (the kernel keeps its access to user pages: no SMAP). */
    .macro vmunit_record_syscall
        mov [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 40], rax
        mov [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 48], rdx
        mov [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 56], rsi
        mov [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 0], rcx
        mov [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 8], r11
        mov [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 24], rsp
        mov word ptr [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 32], cs
        mov word ptr [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 34], ss
        pushfq
        pop qword ptr [rip + VMUNIT_SYSCALL_ENTRY_RECORD + 16]
    .endm

    .global vmunit_syscall_entry
    vmunit_syscall_entry:
        vmunit_record_syscall
        lock inc qword ptr [rip + VMUNIT_SYSCALL_COUNT]
        cmp qword ptr [rip + VMUNIT_SYSRET_TARGET], 0
        je 2f
        mov rcx, [rip + VMUNIT_SYSRET_TARGET]
    2:
        inc rax
    .global vmunit_sysret_instruction
    vmunit_sysret_instruction:
        sysretq

    /* The CSTAR entry: SYSCALL from compatibility mode. It records like the LSTAR entry, then
       returns with the 32-bit SYSRET when asked, else ends the run with a #UD at
       vmunit_compatibility_entry_end (at CPL 0, which the catch around the run takes). */
    .global vmunit_compatibility_syscall_entry
    vmunit_compatibility_syscall_entry:
        vmunit_record_syscall
        lock inc qword ptr [rip + VMUNIT_COMPATIBILITY_SYSCALL_COUNT]
        cmp qword ptr [rip + VMUNIT_COMPATIBILITY_SYSRET], 0
        je 4f
        sysret
    4:
    .global vmunit_compatibility_entry_end
    vmunit_compatibility_entry_end:
        ud2

    /* 32-bit code for enter_compatibility_mode: SYSCALL, then a byte that is DEC EAX in
       compatibility mode but a REX.W prefix in 64-bit mode, then UD2: where the #UD comes
       tells which mode SYSRET returned to. */
    .code32
    .global vmunit_compatibility_code
    vmunit_compatibility_code:
        mov eax, 41
    .global vmunit_compatibility_syscall
    vmunit_compatibility_syscall:
        syscall
    .global vmunit_compatibility_after_syscall
    vmunit_compatibility_after_syscall:
        .byte 0x48
    .global vmunit_compatibility_ud2
    vmunit_compatibility_ud2:
        ud2

    /* The same with RFLAGS.TF set before the SYSCALL (kvm-unit-tests' syscall_tf_user32):
       FMASK clears it in the kernel, the 32-bit SYSRET sets it again from R11, and the
       single-step #DB comes at the end of SYSRET, in compatibility mode. */
    .global vmunit_compatibility_traced_code
    vmunit_compatibility_traced_code:
        mov eax, 41
        pushfd
        or dword ptr [esp], 0x100
        popfd
    .global vmunit_compatibility_traced_syscall
    vmunit_compatibility_traced_syscall:
        syscall
    .global vmunit_compatibility_traced_after_syscall
    vmunit_compatibility_traced_after_syscall:
        .byte 0x48
    .global vmunit_compatibility_traced_ud2
    vmunit_compatibility_traced_ud2:
        ud2
    .code64

    /* vmunit_traced_syscall(): SYSCALL with TF set by the POPF before it. */
    .global vmunit_traced_syscall
    vmunit_traced_syscall:
        pushfq
        or qword ptr [rsp], 0x100
        popfq
        syscall
    .global vmunit_traced_syscall_return
    vmunit_traced_syscall_return:
        nop
        pushfq
        and qword ptr [rsp], -0x101
        popfq
        ret
    "#
);

/// How many SYSCALLs the CSTAR entry took.
#[unsafe(no_mangle)]
static VMUNIT_COMPATIBILITY_SYSCALL_COUNT: AtomicU64 = AtomicU64::new(0);
/// Not zero: the CSTAR entry returns with the 32-bit SYSRET.
#[unsafe(no_mangle)]
static VMUNIT_COMPATIBILITY_SYSRET: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    static vmunit_compatibility_syscall_entry: u8;
    static vmunit_compatibility_entry_end: u8;
    static vmunit_compatibility_code: u8;
    static vmunit_compatibility_syscall: u8;
    static vmunit_compatibility_after_syscall: u8;
    static vmunit_compatibility_ud2: u8;
    static vmunit_compatibility_traced_code: u8;
    static vmunit_compatibility_traced_after_syscall: u8;
    static vmunit_compatibility_traced_ud2: u8;
    static vmunit_syscall_entry: u8;
    static vmunit_sysret_instruction: u8;
    static vmunit_traced_syscall_return: u8;
    /// Clobbers RAX, RCX and R11 (SysV: RAX, RCX and R11 are caller-saved).
    fn vmunit_traced_syscall();
}

/// The kernel entry's address (for LSTAR).
pub fn entry_address() -> u64 {
    &raw const vmunit_syscall_entry as u64
}

/// The address of the entry's SYSRET instruction (where Intel CPUs raise #GP for a
/// non-canonical return address).
pub fn sysret_address() -> u64 {
    &raw const vmunit_sysret_instruction as u64
}

/// Sets EFER.SCE, STAR, LSTAR (the runtime's entry) and FMASK on this CPU.
pub fn try_enable(flags_mask: u64) -> Result<(), Exception> {
    // SAFETY: the runtime's own SYSCALL setup: its selectors, its entry, and a mask (any mask
    // is sound: the entry runs on the caller's stack and touches only its record).
    unsafe { try_wrmsr_unrestricted(IA32_STAR, STAR_VALUE)? };
    // SAFETY: as above.
    unsafe { try_wrmsr_unrestricted(IA32_LSTAR, entry_address())? };
    // SAFETY: as above.
    unsafe { try_wrmsr_unrestricted(IA32_FMASK, flags_mask)? };
    try_wrmsr(IA32_EFER, try_rdmsr(IA32_EFER)? | EFER_SCE)
}

/// Clears EFER.SCE on this CPU: SYSCALL and SYSRET raise #UD.
pub fn try_disable() -> Result<(), Exception> {
    try_wrmsr(IA32_EFER, try_rdmsr(IA32_EFER)? & !EFER_SCE)
}

/// The entry's record of the last SYSCALL, and how many it took.
pub fn last_entry() -> (Entry, u64) {
    // SAFETY: the record is written only by the entry, on this CPU, while this code is not
    // running; a volatile copy reads it whole.
    let entry = unsafe { core::ptr::read_volatile(VMUNIT_SYSCALL_ENTRY_RECORD.0.get()) };
    (entry, VMUNIT_SYSCALL_COUNT.load(Ordering::SeqCst))
}

/// Makes the entry's SYSRET return to `address` instead of RCX (0: RCX again).
pub fn set_sysret_target(address: u64) {
    VMUNIT_SYSRET_TARGET.store(address, Ordering::SeqCst);
}

/// What user-mode code saw around one SYSCALL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Return {
    /// RAX after SYSRET (the entry returns RAX + 1).
    pub value: u64,
    /// The address after the SYSCALL instruction.
    pub return_address: u64,
    /// RFLAGS right before the SYSCALL.
    pub flags_before: u64,
    /// RFLAGS after SYSRET.
    pub flags_after: u64,
    /// CS after SYSRET.
    pub code_segment: u16,
    /// SS after SYSRET.
    pub stack_segment: u16,
}

/// SYSCALL with RAX = `value` and RFLAGS.DF set as `direction` says (DF is cleared again
/// after), RFLAGS at the SYSCALL in RDX and the address after it in RSI (the entry records
/// both). Meant for user mode (`run_in_user_mode`); at CPL 0 it needs LSTAR to point at code
/// that returns without SYSRET (see [`try_kernel_syscall`]).
pub fn syscall(value: u64, direction: bool) -> Return {
    let (result, return_address, flags_before, flags_after, code_segment, stack_segment): (
        u64,
        u64,
        u64,
        u64,
        u16,
        u16,
    );
    // SAFETY: SYSCALL enters the runtime's entry, which touches only its record and returns to
    // the next instruction with SYSRET; RCX and R11 are declared clobbered, DF is cleared
    // before the block ends.
    unsafe {
        asm!(
            "test {direction}, {direction}",
            "jz 3f",
            "std",
            "3:",
            "pushfq",
            "pop rdx",
            "lea rsi, [rip + 4f]",
            "syscall",
            "4:",
            "pushfq",
            "pop {after}",
            "cld",
            "mov {cs:x}, cs",
            "mov {ss:x}, ss",
            direction = in(reg) u64::from(direction),
            out("rdx") flags_before,
            out("rsi") return_address,
            after = out(reg) flags_after,
            cs = out(reg) code_segment,
            ss = out(reg) stack_segment,
            inout("rax") value => result,
            out("rcx") _,
            out("r11") _,
        );
    }
    Return {
        value: result,
        return_address,
        flags_before,
        flags_after,
        code_segment,
        stack_segment,
    }
}

/// SYSCALL with RFLAGS.TF set by POPF just before it, for user mode. With TF in FMASK no #DB
/// comes at the end of SYSCALL; SYSRET restores TF from R11, so a single-step #DB comes at
/// the end of SYSRET, at [`traced_syscall_return_address`]. Should it not come, TF is cleared
/// one instruction later, after a #DB there.
pub fn traced_syscall() {
    // SAFETY: the routine sets TF only around its SYSCALL and clears it again; the #DB it
    // causes is caught by the enclosing `run_in_user_mode`. It clobbers RAX, RCX and R11.
    unsafe { vmunit_traced_syscall() };
}

/// Where SYSRET returns to in [`traced_syscall`].
pub fn traced_syscall_return_address() -> u64 {
    &raw const vmunit_traced_syscall_return as u64
}

/// SYSRET at the current privilege level with RCX the next instruction and R11 the current
/// RFLAGS: at CPL 3 it raises #GP(0); with EFER.SCE clear, #UD.
pub fn try_sysret() -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: SYSRET faults at CPL 3 and with SCE clear; were it to complete at CPL 0,
        // it would continue at CPL 3 at the next instruction with the same flags (the
        // image's pages are user-accessible once user mode has run).
        unsafe {
            asm!(
                "pushfq",
                "pop r11",
                "lea rcx, [rip + 5f]",
                "sysretq",
                "5:",
                out("rcx") _,
                out("r11") _,
            );
        }
    })
}

/// What a SYSCALL at CPL 0 loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSyscall {
    /// RCX: the address after the SYSCALL.
    pub return_address: u64,
    /// The address of the instruction after the SYSCALL (also its target).
    pub next_instruction: u64,
    /// R11: RFLAGS at the SYSCALL.
    pub saved_flags: u64,
    /// RFLAGS after it (FMASK applied).
    pub flags_after: u64,
    /// CS after it (`STAR[47:32]`).
    pub code_segment: u16,
    /// SS after it (`STAR[47:32] + 8`).
    pub stack_segment: u16,
}

/// SYSCALL at CPL 0 with LSTAR pointing at the next instruction (kvm-unit-tests' "lazy load"
/// check) and RFLAGS.DF set: returns what it loaded, or its exception (#UD with SCE clear).
/// LSTAR is restored after.
pub fn try_kernel_syscall() -> Result<KernelSyscall, Exception> {
    let saved_lstar = try_rdmsr(IA32_LSTAR)?;
    let result = catch_exception(|| {
        let (return_address, next_instruction, saved_flags, flags_after, code_segment, stack_segment): (
            u64,
            u64,
            u64,
            u64,
            u16,
            u16,
        );
        // SAFETY: LSTAR is pointed at the instruction after SYSCALL, so it continues in
        // place at CPL 0 with the runtime's own selectors (STAR_VALUE) and FMASK applied; DF
        // is cleared again. RAX, RCX, RDX and R11 are declared clobbered.
        unsafe {
            asm!(
                "lea rax, [rip + 6f]",
                "mov {next}, rax",
                "mov rdx, rax",
                "shr rdx, 32",
                "mov ecx, {lstar}",
                "wrmsr",
                "std",
                "syscall",
                "6:",
                "pushfq",
                "pop {after}",
                "cld",
                "mov {cs:x}, cs",
                "mov {ss:x}, ss",
                lstar = const IA32_LSTAR,
                next = out(reg) next_instruction,
                after = out(reg) flags_after,
                cs = out(reg) code_segment,
                ss = out(reg) stack_segment,
                out("rax") _,
                out("rdx") _,
                out("rcx") return_address,
                out("r11") saved_flags,
            );
        }
        KernelSyscall {
            return_address,
            next_instruction,
            saved_flags,
            flags_after,
            code_segment,
            stack_segment,
        }
    });
    // SAFETY: LSTAR gets back the value it held before.
    unsafe { try_wrmsr_unrestricted(IA32_LSTAR, saved_lstar)? };
    result
}

/// The addresses of the compatibility-mode routine and of the CSTAR entry's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompatibilityAddresses {
    /// The 32-bit SYSCALL (where Intel CPUs raise #UD in compatibility mode).
    pub syscall: u64,
    /// The byte after it: RCX on entry, and where a 64-bit-mode return's #UD comes (REX.W UD2).
    pub after_syscall: u64,
    /// The UD2 a return to compatibility mode reaches (after DEC EAX).
    pub compatibility_ud2: u64,
    /// The CSTAR entry's closing UD2 (at CPL 0).
    pub entry_end: u64,
    /// The CSTAR entry.
    pub entry: u64,
    /// [`try_compatibility_traced_syscall`]'s instruction after its SYSCALL: where SYSRET
    /// returns and the single-step #DB comes.
    pub traced_after_syscall: u64,
    /// [`try_compatibility_traced_syscall`]'s UD2 that a return to compatibility mode reaches.
    pub traced_ud2: u64,
}

/// See [`CompatibilityAddresses`].
pub fn compatibility_addresses() -> CompatibilityAddresses {
    CompatibilityAddresses {
        syscall: &raw const vmunit_compatibility_syscall as u64,
        after_syscall: &raw const vmunit_compatibility_after_syscall as u64,
        compatibility_ud2: &raw const vmunit_compatibility_ud2 as u64,
        entry_end: &raw const vmunit_compatibility_entry_end as u64,
        entry: &raw const vmunit_compatibility_syscall_entry as u64,
        traced_after_syscall: &raw const vmunit_compatibility_traced_after_syscall as u64,
        traced_ud2: &raw const vmunit_compatibility_traced_ud2 as u64,
    }
}

/// How many SYSCALLs the CSTAR entry has taken.
pub fn compatibility_entries() -> u64 {
    VMUNIT_COMPATIBILITY_SYSCALL_COUNT.load(Ordering::SeqCst)
}

/// Runs a SYSCALL from compatibility mode (CPL 3, 32-bit code) with CSTAR at the runtime's
/// CSTAR entry, which returns with the 32-bit SYSRET when `sysret` is set, and returns the
/// exception that ended the run (see [`CompatibilityAddresses`] for where each comes from).
/// SYSCALL must be enabled ([`try_enable`]).
pub fn try_compatibility_syscall(sysret: bool) -> Result<Exception, Exception> {
    // SAFETY: CSTAR points at the runtime's compatibility-mode entry.
    unsafe { try_wrmsr_unrestricted(IA32_CSTAR, compatibility_addresses().entry)? };
    VMUNIT_COMPATIBILITY_SYSRET.store(u64::from(sysret), Ordering::SeqCst);
    Ok(super::exceptions::enter_compatibility_mode(
        &raw const vmunit_compatibility_code as u64,
    ))
}

/// kvm-unit-tests' "syscall TF handling" in compatibility mode: sets RFLAGS.TF in 32-bit
/// code at CPL 3, then SYSCALL; the CSTAR entry returns with the 32-bit SYSRET (R11 has TF).
/// A #DB handler ([`super::exceptions::set_debug_handler`]) sees the single-step traps and
/// may clear TF; the run ends with the exception that it does not resume from, returned.
/// SYSCALL must be enabled ([`try_enable`]), with TF in FMASK for kvm-unit-tests' check.
pub fn try_compatibility_traced_syscall() -> Result<Exception, Exception> {
    // SAFETY: CSTAR points at the runtime's compatibility-mode entry.
    unsafe { try_wrmsr_unrestricted(IA32_CSTAR, compatibility_addresses().entry)? };
    VMUNIT_COMPATIBILITY_SYSRET.store(1, Ordering::SeqCst);
    Ok(super::exceptions::enter_compatibility_mode(
        &raw const vmunit_compatibility_traced_code as u64,
    ))
}
