//! syscall: SYSCALL and SYSRET (kvm-unit-tests' syscall test, and more): EFER.SCE, what
//! SYSCALL loads from STAR, LSTAR and FMASK at CPL 0 and from CPL 3, SYSRET's return to CPL 3,
//! the single-step trap at the end of SYSRET, SYSRET at CPL 3, and a non-canonical return
//! address (SDM Vol. 2B SYSCALL/SYSRET; AMD APM Vol. 3).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use vmunit::arch::control::RFlags;
use vmunit::arch::cpuid::{Vendor, is_tcg, vendor};
use vmunit::arch::exceptions::{ExceptionFrame, selector, set_debug_handler};
use vmunit::arch::instructions::NON_CANONICAL_START;
use vmunit::arch::msr::{IA32_CSTAR, IA32_LSTAR, IA32_STAR, try_wrmsr_briefly};
use vmunit::arch::run_in_user_mode;
use vmunit::arch::syscall::{
    self, STAR_VALUE, compatibility_addresses, compatibility_entries, last_entry, set_sysret_target, syscall,
    traced_syscall, traced_syscall_return_address, try_compatibility_syscall,
    try_compatibility_traced_syscall, try_kernel_syscall, try_sysret,
};
use vmunit::environment::instruction_emulating_kvm;
use vmunit::{Vector, catch_exception, known_failure, prefix, report, report_skip};

vmunit::main!(main);

/// What FMASK clears, as Linux and kvm-unit-tests set it.
const MASK: u64 = RFlags::TRAP_FLAG.bits()
    | RFlags::DIRECTION_FLAG.bits()
    | RFlags::INTERRUPT_FLAG.bits()
    | RFlags::NESTED_TASK.bits()
    | RFlags::ALIGNMENT_CHECK.bits();

/// kvm_pvm: SYSRET raises #GP(0) at CPL 0, even to a canonical address (reproduce-sysret).
fn pvm() -> bool {
    instruction_emulating_kvm()
}

fn main(_args: &[&str]) {
    let intel = vendor() == Vendor::Intel;
    vmunit::report_info!("IF at start: {}", vmunit::arch::interrupts::are_enabled());
    check_disabled();
    report!(
        syscall::try_enable(MASK).is_ok(),
        "EFER.SCE, STAR, LSTAR and FMASK can be written"
    );
    check_kernel_syscall();
    check_user_syscall();
    check_single_step();
    check_sysret_rules(intel);
    check_compatibility_mode(intel);
    if !intel {
        check_compatibility_single_step();
    }
    check_msrs();
    report!(syscall::try_disable().is_ok(), "EFER.SCE can be cleared again");
}

/// With EFER.SCE clear, SYSCALL and SYSRET raise #UD at any privilege level.
fn check_disabled() {
    let _prefix = prefix("EFER.SCE clear");
    report!(syscall::try_disable().is_ok(), "EFER.SCE can be cleared");
    let kernel = try_kernel_syscall();
    report!(
        matches!(kernel, Err(e) if e.vector == Vector::UD),
        "SYSCALL at CPL 0 raises #UD (got {kernel:x?})"
    );
    if pvm() {
        report_skip!(
            "SYSCALL at CPL 3: kvm_pvm jumps to LSTAR (0) instead of raising #UD, and the kernel \
             then faults on port I/O (reproduce-syscall-disabled)"
        );
    } else {
        let user = run_in_user_mode(|| syscall(0, false));
        report!(
            matches!(user, Err(e) if e.vector == Vector::UD),
            "SYSCALL at CPL 3 raises #UD (got {user:x?})"
        );
    }
    // Under kvm_pvm SYSRET runs anyway: it reaches CPL 3 in kernel code, whose pages are not
    // user-accessible yet (no run_in_user_mode has run there), and the fetch fault is caught.
    let result = catch_exception(try_sysret);
    known_failure(
        pvm(),
        "kvm_pvm runs SYSRET with EFER.SCE clear (reproduce-sysret)",
        || {
            report!(
                matches!(result, Ok(Err(e)) if e.vector == Vector::UD),
                "SYSRET at CPL 0 raises #UD (got {result:x?})"
            );
        },
    );
}

/// SYSCALL at CPL 0 with LSTAR at the next instruction (kvm-unit-tests' "MSR_*STAR eager
/// loading"): RCX, R11, CS and SS from STAR, and RFLAGS masked by FMASK.
fn check_kernel_syscall() {
    let _prefix = prefix("CPL 0");
    let entry = match try_kernel_syscall() {
        Ok(entry) => entry,
        Err(exception) => {
            report!(false, "SYSCALL at CPL 0 continues at LSTAR (got {exception:x?})");
            return;
        }
    };
    report!(
        entry.return_address == entry.next_instruction,
        "RCX holds the address after SYSCALL ({:#x}; got {:#x})",
        entry.next_instruction,
        entry.return_address
    );
    report!(
        entry.saved_flags & RFlags::DIRECTION_FLAG.bits() != 0,
        "R11 holds RFLAGS at SYSCALL, DF set (got {:#x})",
        entry.saved_flags
    );
    report!(
        entry.flags_after & MASK == 0,
        "RFLAGS after SYSCALL has FMASK's bits clear (got {:#x})",
        entry.flags_after
    );
    report!(
        entry.code_segment == selector::KERNEL_CODE,
        "CS is STAR[47:32] = {:#x} (got {:#x})",
        selector::KERNEL_CODE,
        entry.code_segment
    );
    report!(
        entry.stack_segment == selector::KERNEL_DATA,
        "SS is STAR[47:32] + 8 = {:#x} (got {:#x})",
        selector::KERNEL_DATA,
        entry.stack_segment
    );
}

/// SYSCALL from CPL 3 enters LSTAR at CPL 0; SYSRET returns to CPL 3 with RFLAGS from R11.
fn check_user_syscall() {
    let _prefix = prefix("CPL 3");
    let (_, count_before) = last_entry();
    let result = run_in_user_mode(|| syscall(41, true));
    let (entry, count) = last_entry();
    report!(
        count == count_before + 1,
        "the kernel entry ran once ({} SYSCALLs)",
        count - count_before
    );
    known_failure(
        pvm(),
        "kvm_pvm's SYSCALL from CPL 3 loads CS 0x33 and SS 0x2b, and leaves IF set \
         (reproduce-syscall-selectors)",
        || {
            report!(
                entry.code_segment == selector::KERNEL_CODE && entry.stack_segment == selector::KERNEL_DATA,
                "the entry runs with CS {:#x} and SS {:#x} (got {:#x}, {:#x})",
                selector::KERNEL_CODE,
                selector::KERNEL_DATA,
                entry.code_segment,
                entry.stack_segment
            );
            report!(
                entry.kernel_flags & MASK == 0,
                "the entry's RFLAGS has FMASK's bits clear (got {:#x})",
                entry.kernel_flags
            );
        },
    );
    report!(
        entry.saved_flags & RFlags::DIRECTION_FLAG.bits() != 0,
        "the entry's R11 has DF set, as at the SYSCALL (got {:#x})",
        entry.saved_flags
    );
    // What the entry saw does not depend on SYSRET: `syscall` hands it RFLAGS and the return
    // address in RDX and RSI.
    report!(entry.value == 41, "the entry sees RAX 41 (got {})", entry.value);
    report!(
        entry.return_address == entry.caller_return_address,
        "the entry's RCX is the address after SYSCALL ({:#x}; got {:#x})",
        entry.caller_return_address,
        entry.return_address
    );
    report!(
        entry.saved_flags == entry.caller_flags,
        "the entry's R11 is exactly RFLAGS at SYSCALL ({:#x}; got {:#x})",
        entry.caller_flags,
        entry.saved_flags
    );
    let returned = match result {
        Ok(returned) => returned,
        Err(exception) => {
            known_failure(
                pvm(),
                "kvm_pvm raises #GP(0) on SYSRET (reproduce-sysret)",
                || {
                    report!(
                        false,
                        "SYSCALL from CPL 3 returns through SYSRET (got {exception:x?})"
                    )
                },
            );
            return;
        }
    };
    report!(
        returned.value == 42,
        "RAX 41 comes back as 42, from the entry (got {})",
        returned.value
    );
    report!(
        returned.code_segment == selector::USER_CODE && returned.stack_segment == selector::USER_DATA,
        "SYSRET loads CS STAR[63:48] + 16 = {:#x} and SS STAR[63:48] + 8 = {:#x} (got {:#x}, {:#x})",
        selector::USER_CODE,
        selector::USER_DATA,
        returned.code_segment,
        returned.stack_segment
    );
    report!(
        returned.flags_after == returned.flags_before,
        "SYSRET restores RFLAGS from R11, DF set again ({:#x}; got {:#x})",
        returned.flags_before,
        returned.flags_after
    );
}

/// kvm-unit-tests' "syscall TF handling": TF set before SYSCALL is cleared by FMASK, so no #DB
/// comes in the kernel; SYSRET loads TF from R11, and the single-step #DB comes at its end, in
/// user mode, before the next user instruction.
fn check_single_step() {
    let (_, count_before) = last_entry();
    let result = run_in_user_mode(traced_syscall);
    let (_, count) = last_entry();
    let expected = traced_syscall_return_address();
    report!(
        count == count_before + 1,
        "TF: the SYSCALL reaches the entry without a #DB on the way ({} SYSCALLs)",
        count - count_before
    );
    known_failure(
        pvm(),
        "kvm_pvm raises #GP(0) on SYSRET (reproduce-sysret)",
        || {
            report!(
                matches!(result, Err(e) if e.vector == Vector::DB && e.rip == expected),
                "TF: the single-step #DB comes at the end of SYSRET, at {expected:#x} (got {result:x?})"
            );
        },
    );
}

/// SYSRET is privileged, and a non-canonical return address faults: at CPL 0 on Intel
/// (#GP(0) at the SYSRET), at CPL 3 on AMD (the fetch at the new address faults).
fn check_sysret_rules(intel: bool) {
    let at_user = run_in_user_mode(try_sysret);
    report!(
        matches!(at_user, Err(e) if e.vector == Vector::GP && e.error_code == 0),
        "SYSRET at CPL 3 raises #GP(0) (got {at_user:x?})"
    );
    set_sysret_target(NON_CANONICAL_START);
    let result = run_in_user_mode(|| syscall(0, false));
    set_sysret_target(0);
    let sysret_address = syscall::sysret_address();
    if intel {
        known_failure(
            is_tcg(),
            "QEMU's TCG follows AMD here, whatever the vendor (target/i386/tcg/seg_helper.c helper_sysret checks no address; reproduce-sysret-noncanonical-intel-tcg)",
            || {
                report!(
                    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0 && e.rip == sysret_address),
                    "Intel: SYSRET to non-canonical {NON_CANONICAL_START:#x} raises #GP(0) at CPL 0, at the SYSRET ({sysret_address:#x}; got {result:x?})"
                );
            },
        );
    } else {
        known_failure(
            pvm(),
            "kvm_pvm raises #GP(0) on SYSRET (reproduce-sysret)",
            || {
                report!(
                    matches!(result, Err(e) if e.rip != sysret_address && matches!(e.vector, Vector::GP | Vector::PF)),
                    "AMD: SYSRET to non-canonical {NON_CANONICAL_START:#x} completes and the fetch there faults at CPL 3 (got {result:x?})"
                );
            },
        );
    }
}

/// SYSCALL from compatibility mode (32-bit code at CPL 3): AMD CPUs enter CSTAR, Intel ones
/// raise #UD (kvm-unit-tests runs its syscall test as an AMD CPU for this path); the 32-bit
/// SYSRET returns to compatibility mode.
fn check_compatibility_mode(intel: bool) {
    let _prefix = prefix("compatibility mode");
    let addresses = compatibility_addresses();
    let before = compatibility_entries();
    let result = try_compatibility_syscall(false);
    let entered = compatibility_entries() - before;
    let (entry, _) = last_entry();
    if intel {
        // SDM Vol. 2B, SYSCALL: #UD "if not in 64-bit mode" (CS.L = 0). QEMU's TCG decodes it
        // so since 10.0 (target/i386/tcg/decode-new.c.inc, the o64_intel check).
        report!(
            matches!(result, Ok(e) if e.vector == Vector::UD && e.rip == addresses.syscall) && entered == 0,
            "Intel: SYSCALL in compatibility mode raises #UD at {:#x} (got {result:x?}, {entered} CSTAR entries)",
            addresses.syscall
        );
        return;
    }
    report!(
        matches!(result, Ok(e) if e.vector == Vector::UD && e.rip == addresses.entry_end) && entered == 1,
        "AMD: SYSCALL in compatibility mode enters CSTAR once (got {result:x?}, {entered} entries)"
    );
    report!(
        entry.return_address == addresses.after_syscall
            && entry.code_segment == selector::KERNEL_CODE
            && entry.stack_segment == selector::KERNEL_DATA,
        "the CSTAR entry has RCX {:#x} (after the SYSCALL), CS {:#x} and SS {:#x} (got {:#x}, {:#x}, {:#x})",
        addresses.after_syscall,
        selector::KERNEL_CODE,
        selector::KERNEL_DATA,
        entry.return_address,
        entry.code_segment,
        entry.stack_segment
    );

    let result = try_compatibility_syscall(true);
    known_failure(
        pvm(),
        "kvm_pvm's 32-bit SYSRET returns to 64-bit mode (reproduce-sysret-compatibility)",
        || {
            report!(
                matches!(result, Ok(e) if e.vector == Vector::UD && e.rip == addresses.compatibility_ud2),
                "the 32-bit SYSRET returns to compatibility mode: DEC EAX runs, then UD2 at {:#x} (got {result:x?}; {:#x} would be 64-bit mode)",
                addresses.compatibility_ud2,
                addresses.after_syscall
            );
        },
    );
}

/// LSTAR and CSTAR hold canonical addresses only; STAR takes the runtime's value. Each write
/// is undone at once (`try_wrmsr_briefly`), so no SYSCALL can run through a changed MSR.
fn check_msrs() {
    known_failure(
        is_tcg(),
        "QEMU's TCG stores non-canonical LSTAR and CSTAR (helper_wrmsr, target/i386/tcg/system/misc_helper.c; reproduce-noncanonical-msr-tcg)",
        || {
            for (name, msr) in [("LSTAR", IA32_LSTAR), ("CSTAR", IA32_CSTAR)] {
                let result = try_wrmsr_briefly(msr, NON_CANONICAL_START);
                report!(
                    matches!(result, Err(e) if e.vector == Vector::GP),
                    "WRMSR({name}, {NON_CANONICAL_START:#x}) raises #GP (got {result:x?})"
                );
            }
        },
    );
    let result = try_wrmsr_briefly(IA32_STAR, STAR_VALUE);
    report!(
        result == Ok(STAR_VALUE),
        "WRMSR(STAR, {STAR_VALUE:#x}) works and reads back (got {result:x?})"
    );
}

/// Single-step #DBs seen by [`record_single_step`], and the first one's RIP and CS.
static SINGLE_STEPS: AtomicU64 = AtomicU64::new(0);
static FIRST_STEP_RIP: AtomicU64 = AtomicU64::new(0);
static FIRST_STEP_CS: AtomicU64 = AtomicU64::new(0);

/// kvm-unit-tests' `handle_db`: records where the #DB came (RIP, CS) and clears TF.
fn record_single_step(frame: &mut ExceptionFrame) {
    if SINGLE_STEPS.fetch_add(1, Ordering::SeqCst) == 0 {
        FIRST_STEP_RIP.store(frame.rip, Ordering::SeqCst);
        FIRST_STEP_CS.store(frame.cs, Ordering::SeqCst);
    }
    frame.rflags &= !RFlags::TRAP_FLAG.bits();
}

/// kvm-unit-tests' "syscall TF handling" (its 32-bit form, which KVM emulates on Intel hosts;
/// AMD only, as SYSCALL is #UD in compatibility mode on Intel): TF set in 32-bit code at CPL 3
/// before SYSCALL is cleared by FMASK, so no #DB comes in the kernel; the 32-bit SYSRET loads
/// TF from R11 and the single-step #DB comes at its end, with the 32-bit user CS.
fn check_compatibility_single_step() {
    let _prefix = prefix("compatibility mode TF");
    let addresses = compatibility_addresses();
    SINGLE_STEPS.store(0, Ordering::SeqCst);
    let before = compatibility_entries();
    set_debug_handler(Some(record_single_step));
    let result = try_compatibility_traced_syscall();
    set_debug_handler(None);
    let entered = compatibility_entries() - before;
    let (entry, _) = last_entry();
    let (steps, rip, cs) = (
        SINGLE_STEPS.load(Ordering::SeqCst),
        FIRST_STEP_RIP.load(Ordering::SeqCst),
        FIRST_STEP_CS.load(Ordering::SeqCst),
    );
    let trap_flag = RFlags::TRAP_FLAG.bits();
    report!(
        entered == 1 && entry.saved_flags & trap_flag != 0 && entry.kernel_flags & trap_flag == 0,
        "the SYSCALL enters CSTAR once with TF in R11 and TF clear by FMASK (got {entered} entries, R11 {:#x}, RFLAGS {:#x})",
        entry.saved_flags,
        entry.kernel_flags
    );
    known_failure(
        pvm(),
        "kvm_pvm's 32-bit SYSRET returns to 64-bit mode (reproduce-sysret-compatibility) and \
         raises no single-step #DB at its end though it sets TF (reproduce-sysret-single-step)",
        || {
            report!(
                steps >= 1 && rip == addresses.traced_after_syscall && cs == u64::from(selector::USER_CODE32),
                "the first single-step #DB comes at the end of the 32-bit SYSRET, at {:#x} with CS {:#x} (got {steps} #DBs, the first at {rip:#x} with CS {cs:#x})",
                addresses.traced_after_syscall,
                selector::USER_CODE32
            );
            report!(
                matches!(result, Ok(e) if e.vector == Vector::UD && e.rip == addresses.traced_ud2),
                "with TF cleared by the #DB handler, the 32-bit code runs on to its UD2 at {:#x} (got {result:x?})",
                addresses.traced_ud2
            );
        },
    );
}
