//! Model-specific registers: one table of the MSR numbers the runtime and the tests use (SDM
//! Vol. 4 names), RDMSR/WRMSR that catch their #GP, and which MSRs the runtime owns.
//!
//! The runtime relies on a few MSRs staying as it set them (long mode and NX in EFER, the
//! APIC's mode and base, the page attribute table, the SYSCALL entry). [`try_wrmsr`] refuses
//! to change those; [`try_wrmsr_unrestricted`] is the `unsafe` poke for tests that must.

use core::arch::asm;

use super::exceptions::{Exception, catch_exception};

pub use x86_64::registers::model_specific::{ApicBaseFlags, EferFlags};

/// IA32_TIME_STAMP_COUNTER: the TSC.
pub const IA32_TSC: u32 = 0x10;
/// IA32_APIC_BASE: the local APIC's base address and mode ([`ApicBaseFlags`]).
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_ADJUST: the offset added to the TSC.
pub const IA32_TSC_ADJUST: u32 = 0x3b;
/// IA32_SPEC_CTRL: IBRS (bit 0), STIBP (bit 1), SSBD (bit 2).
pub const IA32_SPEC_CTRL: u32 = 0x48;
/// IA32_SPEC_CTRL.IBRS (bit 0): indirect branch restricted speculation.
pub const SPEC_CTRL_IBRS: u64 = 1 << 0;
/// IA32_PRED_CMD: write-only; bit 0 is IBPB.
pub const IA32_PRED_CMD: u32 = 0x49;
/// IA32_PRED_CMD.IBPB (bit 0): an indirect branch prediction barrier, a command.
pub const PRED_CMD_IBPB: u64 = 1 << 0;
/// IA32_PMC0: general-purpose counter 0; counter `n` is `IA32_PMC0 + n`.
pub const IA32_PMC0: u32 = 0xc1;
/// IA32_ARCH_CAPABILITIES: read-only enumeration of capabilities (CPUID.7.0:EDX[29]).
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10a;
/// IA32_ARCH_CAPABILITIES.TSX_CTRL (bit 7): IA32_TSX_CTRL exists.
pub const ARCH_CAPABILITIES_TSX_CTRL: u64 = 1 << 7;
/// IA32_FLUSH_CMD: write-only; bit 0 is L1D_FLUSH.
pub const IA32_FLUSH_CMD: u32 = 0x10b;
/// IA32_TSX_CTRL: the TSX controls, where IA32_ARCH_CAPABILITIES.TSX_CTRL says it exists.
pub const IA32_TSX_CTRL: u32 = 0x122;
/// IA32_TSX_CTRL.RTM_DISABLE (bit 0): every XBEGIN aborts.
pub const TSX_CTRL_RTM_DISABLE: u64 = 1 << 0;
/// IA32_TSX_CTRL.TSX_CPUID_CLEAR (bit 1): CPUID reports neither RTM nor HLE.
pub const TSX_CTRL_CPUID_CLEAR: u64 = 1 << 1;
/// IA32_SYSENTER_CS.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_MCG_CAP: machine-check capabilities; bits 7:0 count the banks.
pub const IA32_MCG_CAP: u32 = 0x179;
/// MSR_LBR_SELECT: which branches the LBR stack records (model-specific, Nehalem and later).
pub const MSR_LBR_SELECT: u32 = 0x1c8;
/// MSR_LASTBRANCH_TOS: the LBR stack's top-of-stack index (model-specific).
pub const MSR_LBR_TOS: u32 = 0x1c9;
/// MSR_LASTBRANCH_0_FROM_IP on Core 2 (entry `n` at `+ n`; kvm-unit-tests' MSR_LBR_CORE_FROM).
pub const MSR_LBR_CORE_FROM: u32 = 0x40;
/// MSR_LASTBRANCH_0_TO_IP on Core 2 (entry `n` at `+ n`).
pub const MSR_LBR_CORE_TO: u32 = 0x60;
/// MSR_LASTBRANCH_0_FROM_IP from Nehalem on (entry `n` at `+ n`; MSR_LBR_NHM_FROM).
pub const MSR_LBR_NHM_FROM: u32 = 0x680;
/// MSR_LASTBRANCH_0_TO_IP from Nehalem on (entry `n` at `+ n`).
pub const MSR_LBR_NHM_TO: u32 = 0x6c0;
/// The largest LBR stack kvm-unit-tests probes (its MAX_NUM_LBR_ENTRY).
pub const MAX_LBR_ENTRIES: u32 = 32;
/// IA32_PERFEVTSEL0: counter 0's event select; counter `n`'s is `IA32_PERFEVTSEL0 + n`.
pub const IA32_PERFEVTSEL0: u32 = 0x186;
/// IA32_MISC_ENABLE.
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_MISC_ENABLE bit 12: processor event-based sampling is unavailable (read-only).
pub const MISC_ENABLE_PEBS_UNAVAILABLE: u64 = 1 << 12;
/// IA32_DEBUGCTL (AMD's DebugCtl): bit 0 ([`DEBUGCTL_LBR`]) records the last branch.
pub const IA32_DEBUGCTL: u32 = 0x1d9;
/// IA32_DEBUGCTL.LBR: last-branch recording into LastBranchFromIP/LastBranchToIP.
pub const DEBUGCTL_LBR: u64 = 1;
/// IA32_PAT: the page attribute table.
pub const IA32_PAT: u32 = 0x277;
/// IA32_FIXED_CTR0; fixed counter `n` is `IA32_FIXED_CTR0 + n`.
pub const IA32_FIXED_CTR0: u32 = 0x309;
/// IA32_FIXED_CTR_CTRL: four bits per fixed counter (OS, USR, AnyThread, PMI).
pub const IA32_FIXED_CTR_CTRL: u32 = 0x38d;
/// IA32_PERF_GLOBAL_STATUS: overflow bits (PMCs at 0.., fixed counters at 32..).
pub const IA32_PERF_GLOBAL_STATUS: u32 = 0x38e;
/// IA32_PERF_GLOBAL_CTRL: enable bits (PMCs at 0.., fixed counters at 32..).
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38f;
/// IA32_PERF_GLOBAL_OVF_CTRL: writing 1s clears IA32_PERF_GLOBAL_STATUS bits.
pub const IA32_PERF_GLOBAL_OVF_CTRL: u32 = 0x390;
/// IA32_PEBS_ENABLE: which counters write PEBS records (GP counters at 0.., fixed at 32..).
pub const IA32_PEBS_ENABLE: u32 = 0x3f1;
/// MSR_PEBS_DATA_CFG: the groups an adaptive PEBS record holds (PEBS baseline).
pub const MSR_PEBS_DATA_CFG: u32 = 0x3f2;
/// IA32_PERF_CAPABILITIES: the PMU's read-only capabilities, where CPUID.1:ECX[15] (PDCM) says
/// it exists: LBR format in bits 5:0, PEBS record format in bits 11:8, full-width counter
/// writes in bit 13, PEBS baseline in bit 14 (`super::pmu::PerfCapabilities` decodes them).
pub const IA32_PERF_CAPABILITIES: u32 = 0x345;
/// IA32_MC0_CTL: machine-check bank 0's control; bank `n`'s registers start at
/// `IA32_MC0_CTL + 4 * n`.
pub const IA32_MC0_CTL: u32 = 0x400;
/// IA32_A_PMC0: general-purpose counter 0 taking full-width writes (where
/// IA32_PERF_CAPABILITIES bit 13 says so); counter `n` is `IA32_A_PMC0 + n`.
pub const IA32_A_PMC0: u32 = 0x4c1;
/// IA32_DS_AREA: the linear address of the debug-store save area (CPUID.1:EDX[21]).
pub const IA32_DS_AREA: u32 = 0x600;
/// IA32_RTIT_CTL: Intel PT's control; ADDRn_CFG, the use of address range `n`, is the 4-bit
/// field at bit `32 + 4 * n` (1: a filter range).
pub const IA32_RTIT_CTL: u32 = 0x570;

/// IA32_RTIT_ADDR0_A: the start of Intel PT's first address range; range `n` has its A (start)
/// MSR at `IA32_RTIT_ADDR0_A + 2 * n` and its B (end) MSR right after.
pub const IA32_RTIT_ADDR0_A: u32 = 0x580;

/// How many Intel PT address ranges the CPU has: CPUID.(0x14,1):EAX[2:0], 0 without Intel PT
/// (CPUID.7.0:EBX[25]).
pub fn rtit_address_ranges() -> u32 {
    if !super::cpuid::Feature::IntelPt.supported() {
        return 0;
    }
    super::cpuid::cpuid(0x14, 1).eax & 0x7
}

/// IA32_U_CET: user-mode CET controls ([`CET_SH_STK_EN`], [`CET_ENDBR_EN`], ...).
pub const IA32_U_CET: u32 = 0x6a0;
/// IA32_S_CET: supervisor-mode CET controls (the same bits as IA32_U_CET).
pub const IA32_S_CET: u32 = 0x6a2;
/// IA32_PL3_SSP: the shadow-stack pointer loaded on a return to CPL 3 (4-byte aligned, or
/// WRMSR raises #GP).
pub const IA32_PL3_SSP: u32 = 0x6a7;
/// IA32_U_CET/IA32_S_CET.SH_STK_EN (bit 0): shadow stacks on.
pub const CET_SH_STK_EN: u64 = 1 << 0;
/// IA32_U_CET/IA32_S_CET.ENDBR_EN (bit 2): indirect-branch tracking on.
pub const CET_ENDBR_EN: u64 = 1 << 2;
/// IA32_U_CET/IA32_S_CET.NO_TRACK_EN (bit 4): the NOTRACK prefix is honoured.
pub const CET_NO_TRACK_EN: u64 = 1 << 4;
/// IA32_U_CET/IA32_S_CET.TRACKER (bit 11): the IBT tracker is in WAIT_FOR_ENDBRANCH.
pub const CET_WAIT_FOR_ENDBRANCH: u64 = 1 << 11;
/// IA32_TSC_DEADLINE: the local APIC timer's deadline in TSC-deadline mode.
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_PKRS: the protection-key rights for supervisor pages (CR4.PKS), two bits per key
/// (AD at `2 * key`, WD at `2 * key + 1`) in bits 31:0; bits 63:32 are reserved.
pub const IA32_PKRS: u32 = 0x6e1;
/// The first x2APIC register: APIC register `offset` is MSR `IA32_X2APIC_BASE + offset / 16`.
pub const IA32_X2APIC_BASE: u32 = 0x800;
/// IA32_X2APIC_SELF_IPI: the x2APIC SELF IPI register (no xAPIC counterpart).
pub const IA32_X2APIC_SELF_IPI: u32 = 0x83f;
/// HV_X64_MSR_GUEST_OS_ID: the guest's identity; the hypercall page can be enabled only once
/// it is not 0 (Hyper-V TLFS 3.13).
pub const HV_X64_MSR_GUEST_OS_ID: u32 = 0x4000_0000;
/// HV_X64_MSR_HYPERCALL: the hypercall page's frame in bits 63:12, enable in bit 0.
pub const HV_X64_MSR_HYPERCALL: u32 = 0x4000_0001;
/// HV_X64_MSR_VP_INDEX: this virtual processor's index.
pub const HV_X64_MSR_VP_INDEX: u32 = 0x4000_0002;
/// HV_X64_MSR_VP_RUNTIME: this virtual processor's run time, in 100 ns units.
pub const HV_X64_MSR_VP_RUNTIME: u32 = 0x4000_0010;
/// HV_X64_MSR_TIME_REF_COUNT: the partition reference counter, in 100 ns units.
pub const HV_X64_MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
/// HV_X64_MSR_REFERENCE_TSC: the reference TSC page's frame in bits 63:12, enable in bit 0.
pub const HV_X64_MSR_REFERENCE_TSC: u32 = 0x4000_0021;
/// HV_X64_MSR_SCONTROL: the SynIC's enable (bit 0).
pub const HV_X64_MSR_SCONTROL: u32 = 0x4000_0080;
/// HV_X64_MSR_SVERSION: the SynIC's version (read-only, 1).
pub const HV_X64_MSR_SVERSION: u32 = 0x4000_0081;
/// HV_X64_MSR_SIEFP: the SynIC event flags page's frame in bits 63:12, enable in bit 0.
pub const HV_X64_MSR_SIEFP: u32 = 0x4000_0082;
/// HV_X64_MSR_SIMP: the SynIC message page's frame in bits 63:12, enable in bit 0.
pub const HV_X64_MSR_SIMP: u32 = 0x4000_0083;
/// HV_X64_MSR_EOM: end of message (write-only): the hypervisor may deliver the next pending
/// message.
pub const HV_X64_MSR_EOM: u32 = 0x4000_0084;
/// HV_X64_MSR_SINT0: synthetic interrupt source 0; SINTx is `HV_X64_MSR_SINT0 + x` (x < 16).
pub const HV_X64_MSR_SINT0: u32 = 0x4000_0090;
/// HV_X64_MSR_STIMER0_CONFIG: synthetic timer 0's configuration; timer `n`'s is
/// `HV_X64_MSR_STIMER0_CONFIG + 2 * n` (n < 4).
pub const HV_X64_MSR_STIMER0_CONFIG: u32 = 0x4000_00b0;
/// HV_X64_MSR_STIMER0_COUNT: synthetic timer 0's expiration time or period (100 ns units);
/// timer `n`'s is `HV_X64_MSR_STIMER0_COUNT + 2 * n`.
pub const HV_X64_MSR_STIMER0_COUNT: u32 = 0x4000_00b1;
/// MSR_KVM_WALL_CLOCK: the original kvmclock wall clock ([`KVM_FEATURE_CLOCKSOURCE`]).
///
/// [`KVM_FEATURE_CLOCKSOURCE`]: super::kvmclock::KvmFeature::ClockSource
pub const MSR_KVM_WALL_CLOCK: u32 = 0x11;
/// MSR_KVM_SYSTEM_TIME: the original kvmclock per-CPU time area.
pub const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
/// MSR_KVM_WALL_CLOCK_NEW: writing a guest-physical address makes KVM store the wall clock
/// at boot there (`pvclock_wall_clock`; KVM_FEATURE_CLOCKSOURCE2).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// MSR_KVM_SYSTEM_TIME_NEW: this CPU's `pvclock_vcpu_time_info` area (guest-physical address,
/// enable in bit 0), which KVM keeps up to date (KVM_FEATURE_CLOCKSOURCE2).
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// IA32_EFER: extended features ([`EferFlags`]).
pub const IA32_EFER: u32 = 0xc000_0080;
/// IA32_STAR: SYSCALL's CS in bits 47:32, SYSRET's selector base in bits 63:48.
pub const IA32_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: the 64-bit SYSCALL entry point.
pub const IA32_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: the compatibility-mode SYSCALL entry point (AMD).
pub const IA32_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: the RFLAGS bits SYSCALL clears.
pub const IA32_FMASK: u32 = 0xc000_0084;
/// IA32_FS_BASE.
pub const IA32_FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE.
pub const IA32_GS_BASE: u32 = 0xc000_0101;
/// IA32_KERNEL_GS_BASE: the value SWAPGS exchanges with IA32_GS_BASE.
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TSC_AUX: the value RDTSCP and RDPID return.
pub const IA32_TSC_AUX: u32 = 0xc000_0103;

/// The bits of MSR `index` the runtime relies on (0 for an MSR it does not own): EFER's long
/// mode and no-execute bits, all of IA32_APIC_BASE (the APIC's mode and base, recorded per
/// CPU), IA32_PAT (the memory types of every mapping), the SYSCALL MSRs (STAR, LSTAR,
/// CSTAR, FMASK: the kernel entry user mode reaches) and IA32_PKRS's rights for key 0, the
/// key of every page the runtime itself uses (with CR4.PKS set, AD or WD there would lock
/// the kernel out of its own memory). Also all of the MSRs that give the hypervisor a
/// guest-physical address to write to (kvmclock's time and wall clock areas, Hyper-V's
/// hypercall, reference TSC, SynIC message and event flags pages): an address of the
/// runtime's own memory would let the hypervisor overwrite it. The `kvmclock` and `hyperv`
/// modules write them with frames of their own.
pub fn owned_bits(index: u32) -> u64 {
    match index {
        MSR_KVM_WALL_CLOCK
        | MSR_KVM_SYSTEM_TIME
        | MSR_KVM_WALL_CLOCK_NEW
        | MSR_KVM_SYSTEM_TIME_NEW
        | HV_X64_MSR_HYPERCALL
        | HV_X64_MSR_REFERENCE_TSC
        | HV_X64_MSR_SIEFP
        | HV_X64_MSR_SIMP => u64::MAX,
        IA32_EFER => {
            (EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE | EferFlags::NO_EXECUTE_ENABLE).bits()
        }
        IA32_APIC_BASE | IA32_PAT | IA32_STAR | IA32_LSTAR | IA32_CSTAR | IA32_FMASK => u64::MAX,
        IA32_PKRS => 0b11,
        _ => 0,
    }
}

/// RDMSR of `index`: its value, or the exception (#GP for a nonexistent MSR). kvm-unit-tests'
/// `rdmsr_safe`.
pub fn try_rdmsr(index: u32) -> Result<u64, Exception> {
    catch_exception(|| rdmsr(index))
}

/// RDMSR of `index`, without catching: a #GP goes to the enclosing `catch_exception` or
/// `run_in_user_mode`, or ends the test.
pub fn rdmsr(index: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDMSR only reads a register; a fault is caught by the caller's catch or ends
    // the test.
    unsafe { asm!("rdmsr", in("ecx") index, out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// WRMSR of `value` to `index`, or the exception (#GP for reserved bits, non-canonical
/// addresses or nonexistent MSRs). kvm-unit-tests' `wrmsr_safe`.
///
/// # Panics
/// When the write would change bits the runtime owns ([`owned_bits`]); writing back their
/// current value is allowed. Tests that must change them use [`try_wrmsr_unrestricted`].
pub fn try_wrmsr(index: u32, value: u64) -> Result<(), Exception> {
    let owned = owned_bits(index);
    if owned != 0 {
        let current = try_rdmsr(index)?;
        assert!(
            (current ^ value) & owned == 0,
            "WRMSR {index:#x} <- {value:#x} would change bits {owned:#x} the runtime owns (it holds {current:#x})"
        );
    }
    // SAFETY: the write keeps every bit the runtime relies on.
    unsafe { try_wrmsr_unrestricted(index, value) }
}

/// WRMSR of `value` to any MSR `index`, even one whose bits the runtime owns, then RDMSR and
/// WRMSR of the original value, all in one instruction sequence with interrupts off: returns
/// what the MSR read back while it held `value`, or the exception the first WRMSR raised (or
/// RDMSR, for a write-only MSR). Nothing runs while the MSR holds `value`, so a test can check
/// how the CPU takes a value the runtime could not live with (EFER, PAT, the SYSCALL MSRs)
/// without `unsafe`. The caller checks with [`try_rdmsr`] that the original came back if it
/// cares: a restore that faults is not reported here.
pub fn try_wrmsr_briefly(index: u32, value: u64) -> Result<u64, Exception> {
    let original = try_rdmsr(index)?;
    let enabled = super::interrupts::are_enabled();
    super::interrupts::disable();
    let result = catch_exception(|| {
        let (low, high): (u32, u32);
        // SAFETY: MSR `index` holds `value` only between the first and the last WRMSR, with
        // interrupts off and no memory access in between (so no page walk sees a changed EFER
        // or PAT, and no SYSCALL runs); the last WRMSR puts back the value read above. A fault
        // of the first WRMSR is caught before the MSR changed.
        unsafe {
            asm!(
                "wrmsr",
                "rdmsr",
                "mov {low:e}, eax",
                "mov {high:e}, edx",
                "mov eax, {original_low:e}",
                "mov edx, {original_high:e}",
                "wrmsr",
                in("ecx") index,
                inout("eax") value as u32 => _,
                inout("edx") (value >> 32) as u32 => _,
                original_low = in(reg) original as u32,
                original_high = in(reg) (original >> 32) as u32,
                low = out(reg) low,
                high = out(reg) high,
                options(nomem, nostack),
            )
        };
        (u64::from(high) << 32) | u64::from(low)
    });
    if enabled {
        super::interrupts::enable();
    }
    result
}

/// WRMSR of `value` to any MSR `index`, or the exception: the raw poke.
///
/// # Safety
/// A write that does not fault must keep the runtime's [`owned_bits`] of the MSR as they were,
/// or restore them before anything relies on them: EFER.LME/NXE (long mode, the page tables'
/// NX bits), IA32_APIC_BASE (the runtime's APIC accesses and per-CPU mode record), IA32_PAT
/// (memory types) and the SYSCALL MSRs (no SYSCALL may run while they point elsewhere).
pub unsafe fn try_wrmsr_unrestricted(index: u32, value: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: WRMSR changes CPU state, not memory the compiler knows about; the caller
        // keeps what the runtime relies on; a fault is caught.
        unsafe {
            asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32,
                 options(nostack))
        };
    })
}
