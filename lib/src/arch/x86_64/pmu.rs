//! The architectural performance monitoring of Intel's SDM Vol. 3, chapter 21: what CPUID leaf
//! 0xA advertises, the counter MSRs' bits (their numbers are in `msr`), RDPMC, and a loop of
//! known length to count.

use core::arch::asm;

use super::cpuid::cpuid;
use super::exceptions::{Exception, catch_exception};

/// PERFEVTSEL bits: count at CPL > 0, at CPL 0, and enable.
pub const EVENT_USR: u64 = 1 << 16;
/// Count at CPL 0.
pub const EVENT_OS: u64 = 1 << 17;
/// Enable the counter.
pub const EVENT_ENABLE: u64 = 1 << 22;
/// RDPMC's ECX bit 30: read a fixed counter.
pub const RDPMC_FIXED: u32 = 1 << 30;

/// An architectural event: its event select and unit mask, and its bit in CPUID.0AH:EBX
/// (set: not available).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// A name for reports.
    pub name: &'static str,
    /// Event select (bits 7:0) and unit mask (bits 15:8) of PERFEVTSEL.
    pub select: u64,
    /// Its bit in CPUID.0AH:EBX.
    pub unavailable_bit: u32,
}

/// UnHalted Core Cycles.
pub const CORE_CYCLES: Event = Event {
    name: "core cycles",
    select: 0x3c,
    unavailable_bit: 0,
};
/// Instructions Retired.
pub const INSTRUCTIONS: Event = Event {
    name: "instructions retired",
    select: 0xc0,
    unavailable_bit: 1,
};
/// Branch Instructions Retired.
pub const BRANCHES: Event = Event {
    name: "branch instructions retired",
    select: 0xc4,
    unavailable_bit: 5,
};

/// What CPUID leaf 0xA says about the PMU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The architectural PMU version (0: none).
    pub version: u32,
    /// General-purpose counters per logical processor.
    pub counters: u32,
    /// Their width in bits.
    pub counter_width: u32,
    /// How many bits of `unavailable` are meaningful.
    pub event_vector_length: u32,
    /// Architectural events that are not available (a set bit each, CPUID.0AH:EBX).
    pub unavailable: u32,
    /// Fixed-function counters (version 2 and later).
    pub fixed_counters: u32,
    /// Their width in bits.
    pub fixed_width: u32,
}

impl Capabilities {
    /// Whether `event` is available.
    pub fn has(&self, event: Event) -> bool {
        event.unavailable_bit < self.event_vector_length
            && self.unavailable & (1 << event.unavailable_bit) == 0
    }
}

/// CPUID leaf 0xA (all zero where the leaf is beyond CPUID's maximum).
pub fn capabilities() -> Capabilities {
    if cpuid(0, 0).eax < 0xa {
        return Capabilities::default();
    }
    let leaf = cpuid(0xa, 0);
    let version = leaf.eax & 0xff;
    Capabilities {
        version,
        counters: (leaf.eax >> 8) & 0xff,
        counter_width: (leaf.eax >> 16) & 0xff,
        event_vector_length: (leaf.eax >> 24) & 0xff,
        unavailable: leaf.ebx,
        fixed_counters: if version >= 2 { leaf.edx & 0x1f } else { 0 },
        fixed_width: if version >= 2 { (leaf.edx >> 5) & 0xff } else { 0 },
    }
}

/// RDPMC of counter `index` (ECX): #GP(0) for a counter that does not exist, or at CPL 3 with
/// CR4.PCE clear.
pub fn try_rdpmc(index: u32) -> Result<u64, Exception> {
    catch_exception(|| rdpmc(index))
}

/// RDPMC without catching a fault: for user mode (`run_in_user_mode` catches instead).
pub fn rdpmc(index: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDPMC only reads a counter; it faults without side effects.
    unsafe { asm!("rdpmc", in("ecx") index, out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// The loop [`count_loop`] runs: how many instructions and branches it retires per iteration.
pub const LOOP_INSTRUCTIONS: u64 = 4;
/// Branches per iteration of [`count_loop`].
pub const LOOP_BRANCHES: u64 = 1;

/// Runs a loop of `iterations` iterations of [`LOOP_INSTRUCTIONS`] instructions (NOP, NOP,
/// DEC, JNZ), one of them a branch.
pub fn count_loop(iterations: u64) {
    // SAFETY: the loop only changes its counter register and the flags.
    unsafe {
        asm!(
            "2:",
            "nop",
            "nop",
            "dec {count}",
            "jnz 2b",
            count = inout(reg) iterations.max(1) => _,
            options(nomem, nostack),
        )
    };
}

/// IA32_PERF_GLOBAL_STATUS bit 62: the DS buffer (PEBS or BTS) reached its interrupt threshold.
pub const GLOBAL_STATUS_BUFFER_OVERFLOW: u64 = 1 << 62;

/// What IA32_PERF_CAPABILITIES (`msr::IA32_PERF_CAPABILITIES`) says, as kvm-unit-tests'
/// lib/x86/pmu.h reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfCapabilities {
    /// The raw value.
    pub raw: u64,
}

impl PerfCapabilities {
    /// The LBR record format, bits 5:0 (0x3f: architectural LBRs; kvm-unit-tests'
    /// `pmu_lbr_version`, 0 meaning none only when PDCM is set).
    pub const fn lbr_format(self) -> u64 {
        self.raw & 0x3f
    }

    /// The PEBS record format, bits 11:8 (kvm-unit-tests' `pmu_pebs_format`).
    pub const fn pebs_format(self) -> u64 {
        (self.raw >> 8) & 0xf
    }

    /// Bit 13: the counters take full-width writes through IA32_A_PMCx.
    pub const fn full_width_writes(self) -> bool {
        self.raw & (1 << 13) != 0
    }

    /// Bit 14: PEBS baseline (adaptive PEBS, MSR_PEBS_DATA_CFG).
    pub const fn pebs_baseline(self) -> bool {
        self.raw & (1 << 14) != 0
    }

    /// Bit 17: timed PEBS (the record format field shrinks to bits 31:0).
    pub const fn pebs_timing_info(self) -> bool {
        self.raw & (1 << 17) != 0
    }
}

/// IA32_PERF_CAPABILITIES, where CPUID.1:ECX[15] (PDCM) says it exists (`None` elsewhere, or
/// when RDMSR faults).
pub fn perf_capabilities() -> Option<PerfCapabilities> {
    if !super::cpuid::Feature::Pdcm.supported() {
        return None;
    }
    super::msr::try_rdmsr(super::msr::IA32_PERF_CAPABILITIES)
        .ok()
        .map(|raw| PerfCapabilities { raw })
}
