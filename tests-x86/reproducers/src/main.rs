//! reproducers: one minimal subtest per known defect of this project's software KVM (kvm_pvm),
//! each the smallest check that shows it and each its own unittests.toml entry (group
//! `reproducers`), named after what it shows. Each passes where the architecture is followed
//! (TCG, or hardware KVM, unless a comment says otherwise) and shows the defect under kvm_pvm:
//! a FAIL line, or a "KVM internal error" that the runner reports as a hypervisor error.
//!
//! The `x2apic_*` subtests, and those whose comment names QEMU's TCG (the APIC page, relocation
//! and timer modes, IA32_TSC and IA32_TSC_AUX), show defects of QEMU's TCG instead: they fail
//! under TCG and pass under KVM. So do the subtests whose entry is named `reproduce-*-tcg` (each
//! names the QEMU source it shows).
//! `one_shot_timer_keeps_its_count_across_migration` shows a defect of QEMU's KVM APIC
//! migration (hw/i386/kvm/apic.c): it fails under KVM, any KVM module, and passes under TCG.
//!
//! The x86 SSE, XGETBV/XSETBV and CLWB defects have crates of their own (sse-instruction,
//! xgetbv-xsetbv, clwb).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use vmunit::arch::control::{Cr0Flags, Cr4Flags, RFlags, read_cr0, read_cr4, try_write_cr0, try_write_cr4};
use vmunit::arch::cpuid::{Feature, Vendor, vendor};
use vmunit::arch::device;
use vmunit::arch::instructions::{
    int3, rdtsc, rdtsc_ordered, read_dr6, read_with_alignment_check, software_interrupt, try_invpcid,
    try_rdtscp, write_dr6,
};
use vmunit::arch::interrupt_count::{count_interrupts, interrupt_count};
use vmunit::arch::linear_address::{BaseRegister, try_load_base_briefly};
use vmunit::arch::msr::{self, ApicBaseFlags, try_rdmsr, try_wrmsr, try_wrmsr_briefly};
use vmunit::arch::probes::{try_fninit, try_fwait, watched_store};
use vmunit::arch::protection_keys::try_rdpkru;
use vmunit::catch::Attempt;

use vmunit::arch::debug::{record_debug_exceptions, single_step_mov_ss};
use vmunit::arch::probes::interrupt_window;
use vmunit::arch::{access, apic, exceptions, ioapic, probes, syscall, testdev};
use vmunit::arch::{
    interrupted_address, run_in_user_mode, set_gate_present, set_gate_user_callable, set_interrupt_handler,
};
use vmunit::memory::TestPage;
use vmunit::{Vector, report, report_skip, trap_exceptions};

vmunit::subtests!();

/// INT3 delivers #BP through the IDT and resumes after it (kvm_pvm: KVM internal error).
#[vmunit::test]
fn int3_delivers_breakpoint() {
    let (after, traps) = trap_exceptions(&[Vector::BP], int3);
    report!(
        traps.len() == 1 && traps[0].rip == after,
        "INT3 raises one #BP that resumes at {after:#x} (got {traps:x?})"
    );
}

/// INT n to a vector above 31 enters its gate (kvm_pvm: KVM internal error).
#[vmunit::test]
fn int_n_enters_its_gate() {
    let (after, traps) = trap_exceptions(&[Vector(32)], software_interrupt::<32>);
    report!(
        traps.len() == 1 && traps[0].rip == after,
        "INT 32 enters vector 32 and resumes at {after:#x} (got {traps:x?})"
    );
}

/// RDTSCP raises #UD where CPUID does not advertise it (its entry hides it with -rdtscp;
/// kvm_pvm: KVM internal error).
#[vmunit::test]
fn unadvertised_rdtscp_raises_invalid_opcode() {
    if Feature::Rdtscp.supported() {
        report_skip!("RDTSCP is advertised (CPUID.80000001H:EDX[27]); run with -cpu ...,-rdtscp");
        return;
    }
    let result = try_rdtscp();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "RDTSCP unadvertised raises #UD (got {result:x?})"
    );
}

/// RDPKRU with CR4.PKE clear raises #UD, whether or not CPUID advertises PKU (kvm_pvm: KVM
/// internal error, an emulation failure on 0F 01 EE).
#[vmunit::test]
fn rdpkru_without_cr4_pke_raises_invalid_opcode() {
    let cr4 = read_cr4();
    if cr4 & Cr4Flags::PROTECTION_KEY_USER.bits() != 0 {
        report_skip!("CR4.PKE is set ({cr4:#x}): RDPKRU would run");
        return;
    }
    let result = try_rdpkru();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "RDPKRU with CR4.PKE clear raises #UD (got {result:x?})"
    );
}

/// WAIT with CR0.TS and CR0.MP set raises #NM (kvm_pvm: KVM internal error).
#[vmunit::test]
fn wait_with_task_switched_raises_device_not_available() {
    let cr0 = read_cr0();
    let _ = try_fninit();
    let set = try_write_cr0(cr0 | Cr0Flags::TASK_SWITCHED.bits() | Cr0Flags::MONITOR_COPROCESSOR.bits());
    let Attempt { result, address } = try_fwait();
    let restored = try_write_cr0(cr0);
    report!(
        set.is_ok()
            && restored.is_ok()
            && matches!(result, Err(exception) if exception.vector == Vector::NM && exception.rip == address),
        "WAIT with CR0.TS and MP raises #NM at {address:#x} (got {result:x?})"
    );
}

/// WRMSR of an invalid memory type (2) into IA32_PAT raises #GP (kvm_pvm accepts it).
#[vmunit::test]
fn pat_rejects_invalid_memory_types() {
    let Ok(original) = try_rdmsr(msr::IA32_PAT) else {
        report_skip!("IA32_PAT cannot be read");
        return;
    };
    let invalid = (original & !0xff) | 0x02;
    // Undone at once if taken: nothing maps or touches memory of that type meanwhile.
    let result = try_wrmsr_briefly(msr::IA32_PAT, invalid);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "WRMSR(IA32_PAT, {invalid:#x}) with memory type 2 raises #GP (got {result:x?})"
    );
}

/// WRMSR to IA32_TSC moves RDTSC to the written value (kvm_pvm stores it and RDTSC ignores
/// it; QEMU's TCG ignores the write altogether).
#[vmunit::test]
fn tsc_write_moves_rdtsc() {
    let before = rdtsc();
    let target = before.wrapping_add(1 << 40);
    let written = try_wrmsr(msr::IA32_TSC, target);
    let read = rdtsc();
    let _ = try_wrmsr(msr::IA32_TSC, before.wrapping_add(read.wrapping_sub(target)));
    report!(
        written.is_ok() && read.wrapping_sub(target) < 1 << 32,
        "after WRMSR(IA32_TSC, {target:#x}) RDTSC reads it plus a little (got {read:#x}, WRMSR {written:x?})"
    );
}

/// RDMSR of IA32_SPEC_CTRL raises #GP when CPUID advertises none of IBRS, STIBP or SSBD
/// (kvm_pvm reads it anyway).
#[vmunit::test]
fn unadvertised_spec_ctrl_raises_general_protection() {
    let advertised = Feature::SpecCtrl.supported()
        || Feature::IntelStibp.supported()
        || Feature::SpecCtrlSsbd.supported()
        || Feature::AmdIbrs.supported()
        || Feature::AmdStibp.supported()
        || Feature::AmdSsbd.supported();
    if advertised {
        report_skip!("CPUID advertises a SPEC_CTRL feature");
        return;
    }
    let result = try_rdmsr(msr::IA32_SPEC_CTRL);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "RDMSR(IA32_SPEC_CTRL) without the feature raises #GP (got {result:x?})"
    );
}

/// WRMSR of IA32_PRED_CMD raises #GP when CPUID advertises no IBPB (kvm_pvm takes it; QEMU's
/// TCG drops it: `helper_wrmsr` has no case for it).
#[vmunit::test]
fn unadvertised_pred_cmd_write_raises_general_protection() {
    if Feature::SpecCtrl.supported() || Feature::AmdIbpb.supported() || Feature::Sbpb.supported() {
        report_skip!("CPUID advertises IBPB");
        return;
    }
    let result = try_wrmsr(msr::IA32_PRED_CMD, 1);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "WRMSR(IA32_PRED_CMD, 1) without IBPB raises #GP (got {result:x?})"
    );
}

/// WRMSR of IA32_FLUSH_CMD raises #GP when CPUID.7.0:EDX[28] (L1D_FLUSH) is clear (kvm_pvm
/// takes it; QEMU's TCG drops it: `helper_wrmsr` has no case for it).
#[vmunit::test]
fn unadvertised_flush_cmd_write_raises_general_protection() {
    if Feature::FlushL1d.supported() {
        report_skip!("CPUID advertises L1D_FLUSH");
        return;
    }
    let result = try_wrmsr(msr::IA32_FLUSH_CMD, 1);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "WRMSR(IA32_FLUSH_CMD, 1) without L1D_FLUSH raises #GP (got {result:x?})"
    );
}

/// RDMSR of an MSR index no processor has raises #GP (QEMU's TCG reads 0: `helper_rdmsr`,
/// target/i386/tcg/system/misc_helper.c, has no case for it, "XXX: exception?").
#[vmunit::test]
fn unknown_msr_raises_general_protection() {
    let index = 0x0000_2fff;
    let result = try_rdmsr(index);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "RDMSR({index:#x}) of a nonexistent MSR raises #GP (got {result:x?})"
    );
}

/// WRMSR of IA32_EFER with reserved bit 63 set raises #GP (QEMU's TCG masks the bit off and
/// takes the write: `helper_wrmsr`, target/i386/tcg/system/misc_helper.c, `update_mask`).
#[vmunit::test]
fn efer_reserved_bit_raises_general_protection() {
    let Ok(efer) = try_rdmsr(msr::IA32_EFER) else {
        report!(false, "RDMSR(IA32_EFER) succeeds");
        return;
    };
    let value = efer | 1 << 63;
    let result = try_wrmsr_briefly(msr::IA32_EFER, value);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "WRMSR(IA32_EFER, {value:#x}) with reserved bit 63 raises #GP (got {result:x?})"
    );
}

/// A data breakpoint (DR0, write, 8 bytes) fires after the watched store (kvm_pvm never fires).
#[vmunit::test]
fn data_breakpoint_fires() {
    write_dr6(0xffff_0ff0);
    let ((after, _), traps) = trap_exceptions(&[Vector::DB], || watched_store(0x5a5a));
    let dr6 = read_dr6();
    report!(
        traps.len() == 1 && traps[0].rip == after && dr6 & 1 != 0,
        "a store to the watched word raises one #DB after it with DR6.B0 (got {traps:x?}, DR6 {dr6:#x})"
    );
}

/// Setting CR4 bit 63 (reserved) raises #GP(0) (kvm_pvm drops bits 63:32).
#[vmunit::test]
fn cr4_high_bits_raise_general_protection() {
    let cr4 = read_cr4();
    let result = try_write_cr4(cr4 | 1 << 63);
    let after = read_cr4();
    if after != cr4 {
        let _ = try_write_cr4(cr4);
    }
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "setting reserved CR4 bit 63 raises #GP(0) (got {result:x?})"
    );
}

/// Setting CR4.PKE raises #GP(0) where CPUID does not advertise PKU (SDM Vol. 3, 2.5: the
/// bit is reserved then); kvm_pvm takes it, and CPUID's OSPKE turns on.
#[vmunit::test]
fn unadvertised_cr4_pke_raises_general_protection() {
    if Feature::Pku.supported() {
        report_skip!(
            "PKU is advertised (CPUID.7.0:ECX[3]), so CR4.PKE is not reserved; needs a CPU without PKU"
        );
        return;
    }
    let cr4 = read_cr4();
    let result = try_write_cr4(cr4 | Cr4Flags::PROTECTION_KEY_USER.bits());
    let after = read_cr4();
    if after != cr4 {
        let _ = try_write_cr4(cr4);
    }
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "setting CR4.PKE without PKU raises #GP(0) (got {result:x?}, CR4 then {after:#x})"
    );
}

/// Two words to read from, misaligned, in user mode.
static MISALIGNED: [u64; 2] = [0; 2];

/// At CPL 3 with RFLAGS.AC set but CR0.AM clear, a misaligned load raises nothing
/// (kvm_pvm raises #AC: the host's CR0.AM seems to apply).
#[vmunit::test]
fn alignment_check_needs_cr0_am() {
    let result = run_in_user_mode(|| read_with_alignment_check(MISALIGNED.as_ptr() as u64 + 1));
    report!(
        result.is_ok(),
        "with CR0.AM clear, a misaligned CPL-3 load with RFLAGS.AC works (got {result:x?})"
    );
}

/// At CPL 3 with CR0.AM and RFLAGS.AC set, a misaligned load raises #AC(0) (QEMU's x86 TCG
/// implements no alignment checking: the load completes).
#[vmunit::test]
fn alignment_check_raises_ac() {
    let cr0 = read_cr0();
    let set = try_write_cr0(cr0 | Cr0Flags::ALIGNMENT_MASK.bits());
    let result = run_in_user_mode(|| read_with_alignment_check(MISALIGNED.as_ptr() as u64 + 1));
    let restored = try_write_cr0(cr0);
    report!(
        set.is_ok()
            && restored.is_ok()
            && matches!(result, Err(exception) if exception.vector == Vector::AC && exception.error_code == 0),
        "with CR0.AM set, a misaligned CPL-3 load with RFLAGS.AC raises #AC(0) (got {result:x?})"
    );
}

/// INVPCID raises #UD where CPUID does not advertise it (its entry hides it with -invpcid;
/// kvm_pvm: KVM internal error).
#[vmunit::test]
fn unadvertised_invpcid_raises_invalid_opcode() {
    if Feature::Invpcid.supported() {
        report_skip!("INVPCID is advertised (CPUID.7.0:EBX[10]); run with -cpu ...,-invpcid");
        return;
    }
    let result = try_invpcid(2, 0, 0);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "INVPCID unadvertised raises #UD (got {result:x?})"
    );
}

/// NMIs sent to a CPU while its NMI handler runs leave one NMI pending, not two (SDM Vol. 3,
/// 6.7.1: the processor blocks NMIs until the handler's IRET; kvm_pvm delivers a third).
#[vmunit::test]
fn nmis_during_nmi_handler_leave_one_pending() {
    static NMIS: AtomicU32 = AtomicU32::new(0);
    set_interrupt_handler(
        Vector::NMI.0,
        Some(|_| {
            if NMIS.fetch_add(1, Ordering::SeqCst) == 0 {
                apic::send_nmi(apic::id());
                apic::send_nmi(apic::id());
            }
        }),
    );
    apic::send_nmi(apic::id());
    vmunit::time::delay(100);
    set_interrupt_handler(Vector::NMI.0, None);
    let received = NMIS.load(Ordering::SeqCst);
    report!(
        received == 2,
        "two NMIs sent from the NMI handler add one NMI after it: 2 in all (got {received})"
    );
}

/// An IRET inside the NMI handler ends NMI blocking (SDM Vol. 3, 6.7.1: NMIs are blocked
/// until the next IRET): an NMI sent from the handler arrives right after that IRET (an IRET
/// to the next instruction, its frame on a fresh page). kvm_pvm delivers it only after the
/// handler has returned.
#[vmunit::test]
fn iret_in_nmi_handler_unblocks_nmis() {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static AFTER_IRET: AtomicU64 = AtomicU64::new(0);
    static NESTED_AT: AtomicU64 = AtomicU64::new(0);
    set_interrupt_handler(
        Vector::NMI.0,
        Some(|_| {
            if RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
                apic::send_nmi(apic::id());
                let stack = TestPage::new();
                AFTER_IRET.store(probes::iret_on_flushed_stack(&stack), Ordering::SeqCst);
            } else {
                NESTED_AT.store(interrupted_address(), Ordering::SeqCst);
            }
        }),
    );
    exceptions::with_nmi_on_current_stack(|| {
        apic::send_nmi(apic::id());
        vmunit::time::delay(100);
    });
    set_interrupt_handler(Vector::NMI.0, None);
    let (after, at) = (
        AFTER_IRET.load(Ordering::SeqCst),
        NESTED_AT.load(Ordering::SeqCst),
    );
    report!(
        RUNS.load(Ordering::SeqCst) == 2 && at == after,
        "the NMI sent from the NMI handler arrives right after an IRET in it, at {after:#x} (got {at:#x}, {} runs)",
        RUNS.load(Ordering::SeqCst)
    );
}

/// A #PF while delivering #DE (its frame pushed onto a read-only stack) is delivered as a
/// #PF, not a #DF: a contributory exception followed by a #PF is handled serially (SDM Vol.
/// 3, 6.15, Table 6-5). The #PF handler, on its IST stack, makes the stack writable, and the
/// DIV's #DE then comes. kvm_pvm raises #DF at once.
#[vmunit::test]
fn page_fault_delivering_divide_error_is_not_double_fault() {
    let stack = TestPage::new();
    let (attempt, fault) =
        exceptions::with_read_only_stack_repaired(&stack, || probes::try_divide_by_zero_on_stack(&stack));
    report!(
        fault.is_some_and(|fault| fault.exception.vector == Vector::PF)
            && matches!(attempt.result, Err(exception) if exception.vector == Vector::DE),
        "DIV by zero on a read-only stack: #PF, then #DE (got #PF {:x?}, then {:x?})",
        fault.map(|fault| fault.exception),
        attempt.result
    );
}

/// SYSCALL at CPL 3 with EFER.SCE clear raises #UD (kvm_pvm enters LSTAR, here 0, and the VM
/// does not recover: the run crashes).
#[vmunit::test]
fn syscall_disabled_raises_invalid_opcode() {
    report!(syscall::try_disable().is_ok(), "EFER.SCE can be cleared");
    let result = run_in_user_mode(|| syscall::syscall(0, false));
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "SYSCALL at CPL 3 with EFER.SCE clear raises #UD (got {result:x?})"
    );
}

/// SYSCALL from CPL 3 and SYSRET back return the entry's RAX (kvm_pvm: #GP(0) at the SYSRET).
#[vmunit::test]
fn sysret_returns_to_user_mode() {
    report!(syscall::try_enable(1 << 9).is_ok(), "SYSCALL can be enabled");
    let result = run_in_user_mode(|| syscall::syscall(1, false).value);
    let _ = syscall::try_disable();
    report!(
        matches!(result, Ok(2)),
        "SYSCALL with RAX 1 comes back through SYSRET with RAX 2 (got {result:x?})"
    );
}

/// The SYSCALL entry runs with CS and SS from STAR and FMASK's IF clear (kvm_pvm: CS 0x33,
/// SS 0x2b, IF set).
#[vmunit::test]
fn syscall_loads_star_selectors() {
    report!(syscall::try_enable(1 << 9).is_ok(), "SYSCALL can be enabled");
    let _ = run_in_user_mode(|| syscall::syscall(1, false));
    let _ = syscall::try_disable();
    let (entry, _) = syscall::last_entry();
    report!(
        entry.code_segment == 0x08
            && entry.stack_segment == 0x10
            && entry.kernel_flags & RFlags::INTERRUPT_FLAG.bits() == 0,
        "the entry runs with CS 0x8, SS 0x10 and IF clear (got CS {:#x}, SS {:#x}, RFLAGS {:#x})",
        entry.code_segment,
        entry.stack_segment,
        entry.kernel_flags
    );
}

/// A self-IPI pending at STI is delivered after the instruction that follows STI, before CLI
/// (kvm_pvm: not in the window; only a later HLT or exit lets it in).
#[vmunit::test]
fn pending_interrupt_arrives_in_sti_window() {
    count_interrupts(0x40);
    apic::self_ipi(0x40);
    interrupt_window();
    let in_window = interrupt_count(0x40);
    let _ = vmunit::time::wait_until(100, || interrupt_count(0x40) > 0);
    set_interrupt_handler(0x40, None);
    report!(
        in_window == 1,
        "the pending self-IPI is delivered in STI; NOP; CLI (got {in_window}, then {} in all)",
        interrupt_count(0x40)
    );
}

/// An external interrupt through a not-present IDT gate raises #NP with EXT set in the
/// error code (SDM Vol. 3, 6.13; kvm_pvm and QEMU's TCG leave it clear).
#[vmunit::test]
fn external_interrupt_fault_sets_external_event_bit() {
    set_gate_present(0x40, false);
    apic::self_ipi(0x40);
    let result = vmunit::catch_exception(|| vmunit::time::wait_until(100, || false));
    set_gate_present(0x40, true);
    apic::end_of_interrupt();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::NP && exception.error_code == 0x40 << 3 | 2 | 1),
        "vector 0x40 through a not-present gate raises #NP(0x203: gate, IDT, EXT) (got {result:x?})"
    );
}

/// With TF set, MOV SS at CPL 0 holds the single-step #DB back until after the next
/// instruction (kvm_pvm delivers it right after MOV SS).
#[vmunit::test]
fn mov_ss_holds_back_single_step() {
    let (after, seen) = record_debug_exceptions(single_step_mov_ss);
    let after = after.unwrap_or([0; 5]);
    let first = seen.first().map(|exception| exception.rip);
    report!(
        first == Some(after[2]),
        "the first single-step #DB comes after the instruction after MOV SS, at {:#x} (MOV SS \
         ends at {:#x}; got {first:x?})",
        after[2],
        after[1]
    );
}

/// STAC and CLAC at CPL 0 set and clear RFLAGS.AC where SMAP is advertised (kvm_pvm: KVM
/// internal error, emulation failure).
#[vmunit::test]
fn stac_clac_toggle_alignment_check_flag() {
    if !Feature::Smap.supported() {
        report_skip!("SMAP is not advertised (CPUID.7.0:EBX[20]); run with -cpu ...,+smap");
        return;
    }
    let result = access::try_stac_clac();
    report!(
        result == Ok((true, false)),
        "STAC sets RFLAGS.AC and CLAC clears it (got {result:x?})"
    );
}

/// While its handler runs, an interrupt's vector is in service: its ISR bit is set (kvm_pvm:
/// never, for any interrupt).
#[vmunit::test]
fn interrupt_in_service_during_handler() {
    static IN_SERVICE: AtomicU32 = AtomicU32::new(0);
    set_interrupt_handler(
        0x40,
        Some(|vector| {
            let bit = apic::vector_bit(apic::register::IN_SERVICE, vector);
            IN_SERVICE.store(1 + u32::from(bit), Ordering::SeqCst);
        }),
    );
    apic::self_ipi(0x40);
    let _ = vmunit::time::wait_until(100, || IN_SERVICE.load(Ordering::SeqCst) != 0);
    set_interrupt_handler(0x40, None);
    let seen = IN_SERVICE.load(Ordering::SeqCst);
    report!(
        seen == 2,
        "the self-IPI's handler sees ISR bit 0x40 set (0: no interrupt, 1: clear, 2: set; got {seen})"
    );
}

/// A level-triggered interrupt whose handler lowers the line before the EOI is delivered once,
/// with remote IRR set while its handler runs (kvm_pvm: remote IRR clear, a second delivery).
#[vmunit::test]
fn level_interrupt_lowered_before_eoi_comes_once() {
    const LINE: u8 = 14;
    static DELIVERIES: AtomicU32 = AtomicU32::new(0);
    static REMOTE_IRR: AtomicBool = AtomicBool::new(false);
    if !testdev::present() {
        report_skip!("no pc-testdev: run with -device pc-testdev");
        return;
    }
    ioapic::mask_legacy_pic();
    set_interrupt_handler(
        0x41,
        Some(|_| {
            REMOTE_IRR.store(ioapic::read_entry(LINE).remote_irr, Ordering::SeqCst);
            DELIVERIES.fetch_add(1, Ordering::SeqCst);
            testdev::set_irq_line(LINE, false);
        }),
    );
    ioapic::route(LINE, 0x41, ioapic::Trigger::Level);
    testdev::set_irq_line(LINE, true);
    let _ = vmunit::time::wait_until(100, || DELIVERIES.load(Ordering::SeqCst) > 1);
    let entry = ioapic::read_entry(LINE);
    ioapic::set_mask(LINE, true);
    set_interrupt_handler(0x41, None);
    let deliveries = DELIVERIES.load(Ordering::SeqCst);
    let in_handler = REMOTE_IRR.load(Ordering::SeqCst);
    report!(
        in_handler && deliveries == 1 && !entry.remote_irr,
        "the level interrupt on line {LINE} comes once, with remote IRR set in its handler and \
         cleared by its EOI (got {deliveries}; remote IRR in the handler {in_handler}, after {entry:x?})"
    );
}

/// INT n at CPL 3 through a gate of DPL 3 enters the handler and returns to user mode
/// (kvm_pvm raises #UD).
#[vmunit::test]
fn user_mode_software_interrupt_enters_gate() {
    count_interrupts(0x20);
    set_gate_user_callable(0x20, true);
    let result = run_in_user_mode(software_interrupt::<0x20>);
    set_gate_user_callable(0x20, false);
    set_interrupt_handler(0x20, None);
    let handled = interrupt_count(0x20);
    report!(
        result.is_ok() && handled == 1,
        "INT 0x20 at CPL 3 through a DPL-3 gate runs its handler once and returns (got {result:x?}, {handled} runs)"
    );
}

/// A TSC-deadline timer armed with a deadline already passed interrupts at once: before a
/// CPUID after the WRMSR ends (kvm-unit-tests' apic test checks it after a NOP; kvm_pvm: only
/// later). The lateness on kvm_pvm depends on when the host's timer runs, so a single try
/// sometimes comes in time: the reproducer arms the timer [`DEADLINE_TRIES`] times and needs
/// every interrupt on time.
#[vmunit::test]
fn passed_tsc_deadline_fires_at_once() {
    if !Feature::TscDeadlineTimer.supported() {
        report_skip!("TSC-deadline mode: CPUID.1:ECX[24] is clear; run with -cpu ...,+tsc-deadline");
        return;
    }
    count_interrupts(0x42);
    apic::write(apic::register::TIMER, apic::TIMER_TSC_DEADLINE | 0x42);
    let mut on_time = 0;
    let mut armed_every_time = true;
    for _ in 0..DEADLINE_TRIES {
        let before = interrupt_count(0x42);
        vmunit::arch::interrupts::enable();
        armed_every_time &= try_wrmsr(msr::IA32_TSC_DEADLINE, rdtsc()).is_ok();
        let _ = vmunit::arch::cpuid::cpuid(0, 0);
        let at_once = interrupt_count(0x42) - before;
        vmunit::arch::interrupts::disable();
        // A late interrupt still comes before the next try.
        let _ = vmunit::time::wait_until(100, || interrupt_count(0x42) > before);
        on_time += u32::from(at_once == 1);
    }
    apic::write(apic::register::TIMER, apic::MASKED);
    set_interrupt_handler(0x42, None);
    report!(
        armed_every_time && on_time == DEADLINE_TRIES,
        "each of {DEADLINE_TRIES} passed deadlines' interrupts has come by the end of the CPUID after its WRMSR (got {on_time} on time, {} in all)",
        interrupt_count(0x42)
    );
}

/// How often [`passed_tsc_deadline_fires_at_once`] arms a passed deadline.
const DEADLINE_TRIES: u32 = 20;

/// An armed one-shot APIC timer keeps its remaining count across a live migration (entry
/// `reproduce-apic-timer-migration`, groups `reproducers` and `migration`). QEMU with KVM's
/// in-kernel APIC: the destination's count is 0 and the interrupt comes at once, because
/// `kvm_put_apic_state` (hw/i386/kvm/apic.c) never sets TMCCT in the state it gives
/// KVM_SET_LAPIC, from which KVM's `kvm_apic_set_state` restarts the timer. Passes under TCG.
#[vmunit::test]
fn one_shot_timer_keeps_its_count_across_migration() {
    const VECTOR: u8 = 0xa2;
    // Two seconds at divide-by-16 on the 1 GHz APIC timer clock.
    const COUNT: u32 = 125_000_000;
    vmunit::arch::interrupts::disable();
    count_interrupts(VECTOR);
    apic::write(apic::register::TIMER_DIVIDE, 0b0011);
    apic::write(apic::register::TIMER, u32::from(VECTOR));
    apic::write(apic::register::TIMER_INITIAL_COUNT, COUNT);
    let before = apic::read(apic::register::TIMER_CURRENT_COUNT);
    let tsc_before = rdtsc();
    if vmunit::migrate() != vmunit::Migration::Completed {
        apic::write(apic::register::TIMER, apic::MASKED);
        return;
    }
    let after = apic::read(apic::register::TIMER_CURRENT_COUNT);
    let ticks = rdtsc().wrapping_sub(tsc_before);
    apic::write(apic::register::TIMER, apic::MASKED);
    apic::write(apic::register::TIMER_INITIAL_COUNT, 0);
    // The TSC runs at 1 GHz or faster: at most ticks / 16 counts went by.
    report!(
        u64::from(after) + ticks / 16 >= u64::from(before),
        "a one-shot count of {before} left before the migration runs down by at most {} in the {ticks} TSC ticks to the read after it (got {after} left)",
        ticks / 16
    );
    set_interrupt_handler(VECTOR, None);
}

/// The 32-bit SYSRET returns to compatibility mode (kvm_pvm: to 64-bit mode). SYSCALL from
/// compatibility mode needs an AMD vendor (the entry runs with vendor=AuthenticAMD).
#[vmunit::test]
fn sysret_returns_to_compatibility_mode() {
    report!(syscall::try_enable(1 << 9).is_ok(), "SYSCALL can be enabled");
    let addresses = syscall::compatibility_addresses();
    let result = syscall::try_compatibility_syscall(true);
    let _ = syscall::try_disable();
    report!(
        matches!(result, Ok(e) if e.vector == Vector::UD && e.rip == addresses.compatibility_ud2),
        "the 32-bit SYSRET resumes the 32-bit code: #UD at {:#x}, not {:#x} (64-bit mode) (got {result:x?})",
        addresses.compatibility_ud2,
        addresses.after_syscall
    );
}

/// A SYSRET that loads RFLAGS.TF from R11 ends with a single-step #DB, before the next user
/// instruction (kvm-unit-tests' "syscall TF handling"; QEMU's TCG does so). Here the 32-bit
/// SYSRET of a SYSCALL made from compatibility mode with TF set (FMASK clears it in the
/// kernel); kvm_pvm delivers no #DB: the code after it runs with TF set and no trap.
#[vmunit::test]
fn sysret_with_trap_flag_single_steps() {
    static STEPS: AtomicU32 = AtomicU32::new(0);
    report!(
        syscall::try_enable(1 << 8 | 1 << 9).is_ok(),
        "SYSCALL can be enabled"
    );
    exceptions::set_debug_handler(Some(|frame| {
        STEPS.fetch_add(1, Ordering::SeqCst);
        frame.rflags &= !(1 << 8);
    }));
    let result = syscall::try_compatibility_traced_syscall();
    exceptions::set_debug_handler(None);
    let _ = syscall::try_disable();
    let steps = STEPS.load(Ordering::SeqCst);
    report!(
        steps >= 1,
        "the SYSRET that sets TF ends with a single-step #DB (got {steps} #DBs, then {result:x?})"
    );
}

/// Switches to x2APIC mode for the x2APIC reproducers (their entries run with +x2apic);
/// false, with a SKIP, where it cannot.
fn enter_x2apic() -> bool {
    if !Feature::X2apic.supported() {
        report_skip!("x2APIC: CPUID.1:ECX[21] is clear; run with -cpu ...,+x2apic");
        return false;
    }
    let switched = apic::try_enable_x2apic();
    report!(
        switched.is_ok(),
        "the APIC switches to x2APIC mode (got {switched:x?})"
    );
    switched.is_ok()
}

/// WRMSR to a read-only x2APIC register (the version register) raises #GP (SDM Vol. 3,
/// 11.12.1.2; QEMU's TCG ignores the write: hw/intc/apic.c `apic_register_write`).
#[vmunit::test]
fn x2apic_read_only_write_raises_general_protection() {
    if !enter_x2apic() {
        return;
    }
    let index = apic::msr_of(apic::register::VERSION);
    let result = try_wrmsr(index, 0);
    report!(
        matches!(result, Err(e) if e.vector == Vector::GP),
        "WRMSR({index:#x} version, 0) raises #GP (got {result:x?})"
    );
}

/// WRMSR of a value with bits 63:32 set to an x2APIC register other than the ICR raises #GP
/// (SDM Vol. 3, 11.12.1.2; QEMU's TCG takes the low half: hw/intc/apic.c).
#[vmunit::test]
fn x2apic_high_bits_raise_general_protection() {
    if !enter_x2apic() {
        return;
    }
    let index = apic::msr_of(apic::register::TASK_PRIORITY);
    let value = 1 << 32;
    let result = try_wrmsr(index, value);
    let _ = try_wrmsr(index, 0);
    report!(
        matches!(result, Err(e) if e.vector == Vector::GP),
        "WRMSR({index:#x} TPR, {value:#x}) raises #GP (got {result:x?})"
    );
}

/// RDMSR of the write-only x2APIC EOI register raises #GP (SDM Vol. 3, Table 11-6; QEMU's
/// TCG reads 0: hw/intc/apic.c `apic_register_read`).
#[vmunit::test]
fn x2apic_end_of_interrupt_read_raises_general_protection() {
    if !enter_x2apic() {
        return;
    }
    let index = apic::msr_of(apic::register::END_OF_INTERRUPT);
    let result = try_rdmsr(index);
    report!(
        matches!(result, Err(e) if e.vector == Vector::GP),
        "RDMSR({index:#x} EOI) raises #GP (got {result:x?})"
    );
}

/// The x2APIC ICR reads back all 64 bits written, the destination in bits 63:32 (QEMU's TCG
/// reads only bits 31:0: hw/intc/apic.c `apic_register_read` returns `icr[0]`).
#[vmunit::test]
fn x2apic_command_reads_back_destination() {
    if !enter_x2apic() {
        return;
    }
    let index = apic::msr_of(apic::register::COMMAND_LOW);
    // A fixed IPI on vector 0x40 to an x2APIC ID no CPU has: it goes nowhere.
    let value = (0xffff_fff0u64 << 32) | 0x40;
    let write = try_wrmsr(index, value);
    let read = try_rdmsr(index);
    report!(
        write.is_ok() && read == Ok(value),
        "WRMSR({index:#x} ICR, {value:#x}) reads back {value:#x} (WRMSR {write:x?}, read {read:x?})"
    );
}

/// The xAPIC-only APR and ICR-high offsets have no x2APIC MSR: RDMSR of 0x809 and 0x831 and
/// WRMSR of 0x809 raise #GP (SDM Vol. 3, Table 11-6; QEMU's TCG answers them:
/// hw/intc/apic.c).
#[vmunit::test]
fn x2apic_xapic_only_registers_raise_general_protection() {
    if !enter_x2apic() {
        return;
    }
    let arbitration = apic::msr_of(apic::register::ARBITRATION_PRIORITY);
    let command_high = apic::msr_of(apic::register::COMMAND_HIGH);
    let reads = [try_rdmsr(arbitration), try_rdmsr(command_high)];
    let write = try_wrmsr(arbitration, 0);
    report!(
        reads
            .iter()
            .all(|read| matches!(read, Err(e) if e.vector == Vector::GP))
            && matches!(write, Err(e) if e.vector == Vector::GP),
        "RDMSR({arbitration:#x} APR), RDMSR({command_high:#x} ICR high) and WRMSR({arbitration:#x}, 0) raise #GP (got {reads:x?}, {write:x?})"
    );
}

/// WRMSR of a value that is not canonical (bits 63:47 unequal, bits 63:56 too) to IA32_FS_BASE
/// raises #GP(0) (QEMU's TCG stores it: helper_wrmsr, target/i386/tcg/system/misc_helper.c).
#[vmunit::test]
fn noncanonical_fs_base_raises_general_protection() {
    let value = 0xaaaa_aaaa_aaaa_aaaa;
    let result = try_wrmsr_briefly(msr::IA32_FS_BASE, value);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "WRMSR IA32_FS_BASE <- {value:#x} raises #GP(0) (got {result:x?})"
    );
}

/// LGDT of a base that is not canonical raises #GP(0) (QEMU's TCG loads it: LGDT in
/// target/i386/tcg/translate.c stores the base unchecked).
#[vmunit::test]
fn noncanonical_gdt_base_raises_general_protection() {
    let base = 0xaaaa_aaaa_aaaa_aaaa;
    let result = try_load_base_briefly(BaseRegister::Gdtr, base);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "LGDT with base {base:#x} raises #GP(0) (got {result:x?})"
    );
}

/// RDPMC of a counter that does not exist raises #GP(0) (QEMU's TCG raises #UD for every
/// counter: helper_rdpmc, target/i386/tcg/misc_helper.c, "currently unimplemented"; the KFAILs of
/// `pmu` and `vmware_backdoors`).
#[vmunit::test]
fn rdpmc_of_missing_counter_raises_general_protection() {
    let counter = 0xfff;
    let result = vmunit::arch::pmu::try_rdpmc(counter);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "RDPMC of counter {counter:#x}, which does not exist, raises #GP(0) (got {result:x?})"
    );
}

/// The xAPIC page stops answering while IA32_APIC_BASE.EN is clear (SDM Vol. 3, 11.4.3: a
/// disabled local APIC is as if absent): all ones written to VERSION and TPR read back as all
/// ones, nothing there. QEMU's TCG keeps the page answering (hw/intc/apic.c: `apic_mem_read`
/// and `apic_mem_write` serve the "apic-msi" region whatever IA32_APIC_BASE's EN and EXTD
/// say; the same shows in x2APIC mode). Passes under KVM.
#[vmunit::test]
fn disabled_apic_page_does_not_answer() {
    let Ok(original) = try_rdmsr(msr::IA32_APIC_BASE) else {
        report!(false, "IA32_APIC_BASE can be read");
        return;
    };
    let modes = ApicBaseFlags::LAPIC_ENABLE.bits() | ApicBaseFlags::X2APIC_ENABLE.bits();
    let disabled = apic::try_write_base(original & !modes);
    device::write_u32(apic::BASE + apic::register::VERSION, u32::MAX);
    device::write_u32(apic::BASE + apic::register::TASK_PRIORITY, u32::MAX);
    let read = (
        device::read_u32(apic::BASE + apic::register::VERSION),
        device::read_u32(apic::BASE + apic::register::TASK_PRIORITY),
    );
    let _ = apic::try_write_base(original);
    apic::resynchronize();
    apic::write(apic::register::TASK_PRIORITY, 0);
    report!(
        disabled.is_ok() && read == (u32::MAX, u32::MAX),
        "with the APIC disabled, VERSION and TPR at {:#x} read the all ones written (got {read:x?}, WRMSR {disabled:x?})",
        apic::BASE
    );
}

/// The local APIC moves where IA32_APIC_BASE says (SDM Vol. 3, 11.4.5): enabled at
/// 0xfed40000, its VERSION register reads there. QEMU's TCG takes the new base but leaves its
/// "apic-msi" region at 0xfee00000 (hw/intc/apic.c `apic_set_base` stores the base; nothing
/// maps the region anew). Passes under KVM.
#[vmunit::test]
fn apic_relocates() {
    const ALTERNATE_BASE: u64 = 0xfed4_0000;
    let Ok(original) = try_rdmsr(msr::IA32_APIC_BASE) else {
        report!(false, "IA32_APIC_BASE can be read");
        return;
    };
    let version = apic::read(apic::register::VERSION);
    let modes = ApicBaseFlags::LAPIC_ENABLE.bits() | ApicBaseFlags::X2APIC_ENABLE.bits();
    let _ = apic::try_write_base(original & !modes);
    let moved =
        apic::try_write_base(ALTERNATE_BASE | ApicBaseFlags::BSP.bits() | ApicBaseFlags::LAPIC_ENABLE.bits());
    let relocated = device::read_u32(ALTERNATE_BASE + apic::register::VERSION);
    let _ = apic::try_write_base(original & !modes);
    let _ = apic::try_write_base(original);
    apic::resynchronize();
    report!(
        moved.is_ok() && relocated == version,
        "moved to {ALTERNATE_BASE:#x}, the APIC's VERSION {version:#x} reads there (got {relocated:#x}, WRMSR {moved:x?})"
    );
}

/// About 33 ms of LVT timer count at the 1 GHz APIC timer clock of QEMU and KVM (divide by 1).
const TIMER_COUNT: u32 = 0x200_0000;

/// Starts the masked LVT timer counting down from [`TIMER_COUNT`], periodic or one-shot.
fn start_masked_timer(periodic: bool) {
    apic::write(apic::register::TIMER_DIVIDE, 0b1011);
    set_masked_timer_mode(periodic);
    apic::write(apic::register::TIMER_INITIAL_COUNT, TIMER_COUNT);
}

/// Switches the masked LVT timer between periodic and one-shot mode.
fn set_masked_timer_mode(periodic: bool) {
    let mode = if periodic { apic::TIMER_PERIODIC } else { 0 };
    apic::write(apic::register::TIMER, apic::MASKED | mode);
}

/// Stops the LVT timer.
fn stop_timer() {
    apic::write(apic::register::TIMER, apic::MASKED);
    apic::write(apic::register::TIMER_INITIAL_COUNT, 0);
}

/// An expired one-shot LVT timer switched to periodic mode stays at 0 (SDM Vol. 3, 11.5.4: a
/// mode change does not restart the count; kvm-unit-tests' "apic change mode"). QEMU's TCG
/// restarts it: `apic_get_current_count` (hw/intc/apic.c) computes the count from the time of
/// the initial-count write in the mode of the moment. Passes under KVM.
#[vmunit::test]
fn expired_one_shot_switched_to_periodic_stays_at_zero() {
    start_masked_timer(false);
    let expired = vmunit::time::spin_until(500, || apic::read(apic::register::TIMER_CURRENT_COUNT) == 0);
    set_masked_timer_mode(true);
    let after = apic::read(apic::register::TIMER_CURRENT_COUNT);
    stop_timer();
    report!(
        expired && after == 0,
        "an expired one-shot count switched to periodic stays at 0 (expired {expired}, got {after:#x})"
    );
}

/// A periodic LVT timer switched to one-shot mode in the middle of its count, after its first
/// period, goes on counting from where it was (SDM Vol. 3, 11.5.4; kvm-unit-tests' "apic
/// change mode"). QEMU's TCG ends it at once: `apic_get_current_count` (hw/intc/apic.c) takes
/// the time since the initial-count write, more than one count, as expired in one-shot mode.
/// Passes under KVM.
#[vmunit::test]
fn periodic_switched_to_one_shot_keeps_its_count() {
    let in_middle = |count: u32| (TIMER_COUNT / 4..=TIMER_COUNT / 2).contains(&count);
    start_masked_timer(true);
    // Past the first period, then into the middle of a later one.
    vmunit::time::delay(50);
    let reached =
        vmunit::time::spin_until(500, || in_middle(apic::read(apic::register::TIMER_CURRENT_COUNT)));
    let before = apic::read(apic::register::TIMER_CURRENT_COUNT);
    set_masked_timer_mode(false);
    let after = apic::read(apic::register::TIMER_CURRENT_COUNT);
    stop_timer();
    report!(
        reached && after != 0 && after <= before,
        "a periodic count switched to one-shot after its first period goes on from {before:#x} (got {after:#x}, middle reached {reached})"
    );
}

/// WRMSR to the x2APIC SELF IPI register with reserved bits 31:8 set raises #GP (SDM Vol. 3,
/// 11.12.11). QEMU's TCG sends the IPI (hw/intc/apic.c `apic_register_write`: SELF IPI takes
/// the vector, nothing checks the rest). Passes under KVM.
#[vmunit::test]
fn x2apic_self_ipi_reserved_bits_raise_general_protection() {
    const VECTOR: u8 = 0x40;
    if !enter_x2apic() {
        return;
    }
    count_interrupts(VECTOR);
    let result = try_wrmsr(msr::IA32_X2APIC_SELF_IPI, 0x100 | u64::from(VECTOR));
    let _ = vmunit::time::wait_until(50, || interrupt_count(VECTOR) > 0);
    set_interrupt_handler(VECTOR, None);
    report!(
        matches!(result, Err(e) if e.vector == Vector::GP),
        "WRMSR({:#x} SELF IPI, {:#x}) with reserved bits 31:8 set raises #GP (got {result:x?}, {} interrupts)",
        msr::IA32_X2APIC_SELF_IPI,
        0x100 | u64::from(VECTOR),
        interrupt_count(VECTOR)
    );
}

/// RDMSR of IA32_TSC reads the time-stamp counter (SDM Vol. 3, 18.17): between the fenced
/// RDTSCs around it. QEMU's TCG reads 0 (target/i386/tcg/system/misc_helper.c `helper_rdmsr`
/// has no IA32_TSC case). Passes under KVM.
#[vmunit::test]
fn tsc_msr_reads_the_counter() {
    let before = rdtsc_ordered();
    let read = try_rdmsr(msr::IA32_TSC);
    let after = rdtsc_ordered();
    report!(
        matches!(read, Ok(value) if before <= value && value <= after),
        "RDMSR(IA32_TSC) lies between the RDTSCs around it, {before:#x}..={after:#x} (got {read:x?})"
    );
}

/// WRMSR to IA32_TSC_AUX with bits 63:32 set raises #GP on Intel (SDM Vol. 4: they are
/// reserved); AMD processors may drop them instead. QEMU's TCG keeps them
/// (target/i386/tcg/system/misc_helper.c `helper_wrmsr` stores the value whole). Passes
/// under KVM. Needs RDTSCP or RDPID (TSC_AUX exists with either).
#[vmunit::test]
fn tsc_aux_reserved_bits_raise_general_protection() {
    if !Feature::Rdtscp.supported() && !Feature::Rdpid.supported() {
        report_skip!("neither RDTSCP nor RDPID is advertised: no IA32_TSC_AUX");
        return;
    }
    let value = 0x1234_5678;
    let high = value | 1 << 40;
    let original = try_rdmsr(msr::IA32_TSC_AUX).unwrap_or(0);
    let _ = try_wrmsr(msr::IA32_TSC_AUX, value);
    let result = try_wrmsr(msr::IA32_TSC_AUX, high);
    let read = try_rdmsr(msr::IA32_TSC_AUX);
    let _ = try_wrmsr(msr::IA32_TSC_AUX, original);
    let gp = matches!(result, Err(e) if e.vector == Vector::GP);
    if vendor() == Vendor::Intel {
        report!(
            gp,
            "WRMSR(IA32_TSC_AUX, {high:#x}) raises #GP: bits 63:32 are reserved (got {result:x?})"
        );
    } else {
        report!(
            gp || read == Ok(value),
            "WRMSR(IA32_TSC_AUX, {high:#x}) raises #GP or drops the reserved bits 63:32 (WRMSR {result:x?}, read {read:x?})"
        );
    }
}

/// An edge-triggered I/O APIC input held high sends no more interrupts when the line is set
/// high again (82093AA: an edge is a low-to-high transition). QEMU's own I/O APIC (version
/// 0x20: TCG, or KVM without its in-kernel irqchip) sends one for every write of an asserted
/// level (hw/intc/ioapic.c `ioapic_set_irq`: no edge detection). KVM's in-kernel I/O APIC
/// (version 0x11) passes.
#[vmunit::test]
fn edge_input_held_high_sends_once() {
    const LINE: u8 = 14;
    const VECTOR: u8 = 0x76;
    if !testdev::present() {
        report_skip!("no pc-testdev: run with -device pc-testdev");
        return;
    }
    ioapic::mask_legacy_pic();
    count_interrupts(VECTOR);
    testdev::set_irq_line(LINE, false);
    ioapic::route(LINE, VECTOR, ioapic::Trigger::Edge);
    testdev::set_irq_line(LINE, true);
    let first = vmunit::time::wait_until(500, || interrupt_count(VECTOR) >= 1);
    testdev::set_irq_line(LINE, true);
    let _ = vmunit::time::wait_until(50, || interrupt_count(VECTOR) > 1);
    let deliveries = interrupt_count(VECTOR);
    testdev::set_irq_line(LINE, false);
    ioapic::set_mask(LINE, true);
    set_interrupt_handler(VECTOR, None);
    report!(
        first && deliveries == 1,
        "line {LINE}'s rising edge is one interrupt, and setting it high again sends none (got {deliveries}, I/O APIC version {:#x})",
        ioapic::version()
    );
}

/// INTO (0xCE) is invalid in 64-bit mode: #UD (SDM Vol. 2, INTO). QEMU 10.0's TCG executes it:
/// its one-byte opcode table (target/i386/tcg/decode-new.c.inc) has `X86_OP_ENTRY0(INTO)`
/// without `chk(i64)`.
#[vmunit::test]
fn into_in_64_bit_mode_raises_invalid_opcode() {
    let result = probes::try_into_opcode().result;
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD),
        "INTO in 64-bit mode raises #UD (got {result:x?})"
    );
}

/// MOV SS of a null selector with RPL 3 at CPL 0 raises #GP(0): in 64-bit mode a null SS is
/// legal only with RPL = CPL (SDM Vol. 2, MOV). QEMU 10.0's TCG loads it
/// (target/i386/tcg/seg_helper.c `helper_load_seg`: its null-selector case checks RPL only
/// at CPL 3).
#[vmunit::test]
fn null_ss_with_rpl_raises_general_protection() {
    let result = probes::try_load_ss(3).result;
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "MOV SS, 3 at CPL 0 raises #GP(0) (got {result:x?})"
    );
}

/// Setting CR0 bit 63 (reserved) raises #GP(0) (SDM Vol. 3, 2.5). QEMU 10.0's TCG
/// (target/i386/tcg/system/misc_helper.c `helper_write_crN` -> `cpu_x86_update_cr0`) and
/// kvm_pvm drop the bit instead.
#[vmunit::test]
fn cr0_high_bit_raises_general_protection() {
    let cr0 = read_cr0();
    let result = try_write_cr0(cr0 | 1 << 63);
    let after = read_cr0();
    if after != cr0 {
        let _ = try_write_cr0(cr0);
    }
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "setting CR0 bit 63 raises #GP(0) (got {result:x?}, CR0 {after:#x})"
    );
}

/// Setting CR0.NW with CD clear raises #GP(0) (SDM Vol. 3, 2.5 and MOV CR). QEMU 10.0's TCG
/// takes it (`helper_write_crN` checks nothing for CR0).
#[vmunit::test]
fn cr0_nw_without_cd_raises_general_protection() {
    let cr0 = read_cr0();
    let value = (cr0 | Cr0Flags::NOT_WRITE_THROUGH.bits()) & !Cr0Flags::CACHE_DISABLE.bits();
    let result = try_write_cr0(value);
    let after = read_cr0();
    if after != cr0 {
        let _ = try_write_cr0(cr0);
    }
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "setting CR0.NW with CD clear raises #GP(0) (got {result:x?}, CR0 {after:#x})"
    );
}

/// A #GP for a non-canonical load leaves CR2 alone: only #PF loads it (SDM Vol. 3, 6.15,
/// interrupt 13). QEMU 10.0's TCG writes the address there (target/i386/tcg/system/
/// excp_helper.c `x86_cpu_tlb_fill` sets CR2 for every fault its page walk reports).
#[vmunit::test]
fn general_protection_leaves_cr2() {
    const MARKER: u64 = 0xdeca_fbad_0000;
    vmunit::arch::control::write_cr2(MARKER);
    let _ = probes::try_load(1 << 63);
    let cr2 = vmunit::arch::control::read_cr2();
    report!(
        cr2 == MARKER,
        "a non-canonical load's #GP leaves CR2 {MARKER:#x} (got {cr2:#x})"
    );
}

/// A non-canonical access through RBP (the SS segment) raises #SS(0), not #GP (SDM Vol. 3,
/// 6.15, interrupt 12). QEMU 10.0's TCG raises #GP(0) for every non-canonical address
/// (target/i386/tcg/system/excp_helper.c, `get_physical_address`).
#[vmunit::test]
fn noncanonical_stack_access_raises_stack_fault() {
    let result = probes::try_stack_read(1 << 63).result;
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::SS && exception.error_code == 0),
        "a read of non-canonical 0x8000000000000000 through RBP raises #SS(0) (got {result:x?})"
    );
}

/// CLFLUSH of an unmapped page raises #PF like a byte load (SDM Vol. 2, CLFLUSH). QEMU 10.0's
/// TCG never translates its address (target/i386/tcg: decoded as a no-op, `gen_nop_modrm`).
#[vmunit::test]
fn clflush_of_unmapped_page_raises_page_fault() {
    use vmunit::arch::instructions::{MemoryInstruction, try_memory_instruction};
    if !MemoryInstruction::Clflush.advertised() {
        report_skip!("CLFLUSH is not advertised");
        return;
    }
    let page = TestPage::new();
    let target = page.address() + 0x40;
    page.unmap();
    let result = try_memory_instruction(MemoryInstruction::Clflush, target as *const u8).result;
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::PF && exception.address == target),
        "CLFLUSH of unmapped {target:#x} raises #PF there (got {result:x?})"
    );
}

/// Setting CR4.PCIDE where CPUID.1:ECX[17] (PCID) is clear raises #GP (SDM Vol. 3, 2.5).
/// QEMU 10.0's TCG takes it: `helper_write_crN` checks CR4 against `cr4_reserved_bits`
/// (target/i386/cpu.h), which leaves PCIDE out.
#[vmunit::test]
fn unadvertised_cr4_pcide_raises_general_protection() {
    if Feature::Pcid.supported() {
        report_skip!("CPUID advertises PCID");
        return;
    }
    let cr4 = read_cr4();
    let result = try_write_cr4(cr4 | Cr4Flags::PCID.bits());
    if result.is_ok() {
        let _ = try_write_cr4(cr4);
    }
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "setting CR4.PCIDE without PCID raises #GP (got {result:x?})"
    );
}

/// On an Intel CPU, SYSRET to a non-canonical RCX raises #GP(0) at CPL 0 (SDM Vol. 2,
/// SYSRET). QEMU 10.0's TCG follows AMD whatever the vendor: `helper_sysret`
/// (target/i386/tcg/seg_helper.c) checks no address, and the fetch at CPL 3 faults.
#[vmunit::test]
fn intel_sysret_to_noncanonical_raises_general_protection() {
    use vmunit::arch::cpuid::{Vendor, vendor};
    use vmunit::arch::instructions::NON_CANONICAL_START;
    if vendor() != Vendor::Intel {
        report_skip!("the vendor is not GenuineIntel");
        return;
    }
    report!(syscall::try_enable(1 << 9).is_ok(), "SYSCALL can be enabled");
    syscall::set_sysret_target(NON_CANONICAL_START);
    let result = run_in_user_mode(|| syscall::syscall(0, false));
    syscall::set_sysret_target(0);
    let _ = syscall::try_disable();
    let sysret = syscall::sysret_address();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.rip == sysret),
        "SYSRET to {NON_CANONICAL_START:#x} raises #GP(0) at the SYSRET {sysret:#x} (got {result:x?})"
    );
}

/// A read/write breakpoint on the word MOV SS loads SS from is held back by the MOV SS shadow:
/// the one #DB comes after the next instruction (ICEBP here), none right after MOV SS (SDM
/// Vol. 3, 6.8.3; kvm-unit-tests' debug.c "MOV SS + watchpoint + ICEBP"). QEMU 10.0's TCG
/// delivers it right after MOV SS (target/i386/tcg/system/bpt_helper.c `breakpoint_handler`:
/// FIXME). Skipped under kvm_pvm, which stops the VM on ICEBP (reproduce-int3) and never fires
/// data breakpoints (reproduce-data-breakpoint).
#[vmunit::test]
fn mov_ss_holds_back_data_breakpoint() {
    use vmunit::arch::debug::{
        ShadowedInstruction, dr6, dr7, mov_ss_from_watched_then, store_watched, try_write_debug_register,
        watched_address,
    };
    if vmunit::environment::instruction_emulating_kvm() {
        report_skip!("kvm_pvm stops the VM on ICEBP (reproduce-int3)");
        return;
    }
    store_watched(0, 2, u64::from(exceptions::selector::KERNEL_DATA));
    let _ = try_write_debug_register(6, dr6::ACTIVE_LOW);
    let _ = try_write_debug_register(0, watched_address(0));
    let _ = try_write_debug_register(
        7,
        dr7::FIXED_1 | dr7::local(0) | dr7::condition(0, dr7::READ_WRITE, 4),
    );
    let (result, seen) = record_debug_exceptions(|| mov_ss_from_watched_then(ShadowedInstruction::Icebp));
    let _ = try_write_debug_register(7, dr7::FIXED_1);
    let _ = try_write_debug_register(0, 0);
    report!(
        matches!(result, Ok((_, after)) if seen.len() == 1 && seen[0].rip == after),
        "MOV SS from a watched word, then ICEBP: one #DB, after the ICEBP (got {result:x?}, #DBs {seen:x?})"
    );
}

/// RDMSR of IA32_TSC_AUX raises #GP where CPUID advertises neither RDTSCP nor RDPID (the SDM
/// lists the MSR only with them). QEMU 10.0's TCG reads it anyway: `helper_rdmsr`
/// (target/i386/tcg/system/misc_helper.c) checks no feature for MSR_TSC_AUX.
#[vmunit::test]
fn unadvertised_tsc_aux_raises_general_protection() {
    if Feature::Rdtscp.supported() || Feature::Rdpid.supported() {
        report_skip!("CPUID advertises RDTSCP or RDPID");
        return;
    }
    let result = try_rdmsr(msr::IA32_TSC_AUX);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP),
        "RDMSR(IA32_TSC_AUX) without RDTSCP and RDPID raises #GP (got {result:x?})"
    );
}
