//! The Performance Monitors Extension (PMUv3) registers the pmu test uses, through `mrs`/`msr`
//! (aarch64-cpu lacks them).

use core::arch::asm;

use aarch64_cpu::registers::{ID_AA64DFR0_EL1, Readable};

/// PMCR_EL0.E: enable the counters.
pub const PMCR_E: u64 = 1 << 0;
/// PMCR_EL0.P: reset the event counters.
pub const PMCR_P: u64 = 1 << 1;
/// PMCR_EL0.C: reset the cycle counter.
pub const PMCR_C: u64 = 1 << 2;
/// PMCR_EL0.LC: the cycle counter overflows at 64 bits.
pub const PMCR_LC: u64 = 1 << 6;
/// PMCNTENSET_EL0.C: the cycle counter's enable bit.
pub const CYCLE_COUNTER: u64 = 1 << 31;

/// ID_AA64DFR0_EL1.PMUVer of PMUv3 for Armv8.1 (PMUv3p1).
pub const VERSION_3_1: u64 = 0b0100;

/// Common event numbers (the Arm ARM's PMU event list) that tests count or look up.
pub mod event {
    /// SW_INCR: software increment.
    pub const SW_INCR: u32 = 0x00;
    /// INST_RETIRED: instructions architecturally executed.
    pub const INST_RETIRED: u32 = 0x08;
    /// CPU_CYCLES: cycles.
    pub const CPU_CYCLES: u32 = 0x11;
    /// INST_SPEC: instructions speculatively executed.
    pub const INST_SPEC: u32 = 0x1b;
    /// STALL_FRONTEND: no operation issued for want of instructions.
    pub const STALL_FRONTEND: u32 = 0x23;
    /// STALL_BACKEND: no operation issued for want of resources.
    pub const STALL_BACKEND: u32 = 0x24;
}

/// ID_AA64DFR0_EL1.PMUVer: 0 means no PMU, 0xf an IMPLEMENTATION DEFINED one.
pub fn version() -> u64 {
    (ID_AA64DFR0_EL1.get() >> 8) & 0xf
}

/// Whether an architected PMU (PMUv3) is present.
pub fn present() -> bool {
    !matches!(version(), 0 | 0xf)
}

macro_rules! system_register {
    ($read:ident, $write:ident, $name:literal, $doc:literal) => {
        #[doc = concat!("Reads ", $doc, ".")]
        pub fn $read() -> u64 {
            let value: u64;
            // SAFETY: reading a PMU register has no side effect; the caller checked `present`.
            unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack)) };
            value
        }

        #[doc = concat!("Writes ", $doc, ".")]
        pub fn $write(value: u64) {
            // SAFETY: PMU configuration changes only what the counters count.
            unsafe { asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) value, options(nomem, nostack)) };
        }
    };
}

system_register!(pmcr, set_pmcr, "pmcr_el0", "PMCR_EL0");
system_register!(cycle_counter, set_cycle_counter, "pmccntr_el0", "PMCCNTR_EL0");
system_register!(
    counter_enables,
    set_counter_enables,
    "pmcntenset_el0",
    "PMCNTENSET_EL0"
);
system_register!(
    counter_disables,
    set_counter_disables,
    "pmcntenclr_el0",
    "PMCNTENCLR_EL0"
);
system_register!(cycle_filter, set_cycle_filter, "pmccfiltr_el0", "PMCCFILTR_EL0");
system_register!(
    overflow_status,
    set_overflow_status,
    "pmovsclr_el0",
    "PMOVSCLR_EL0"
);

/// Whether common event `event` (0..=63) is implemented, from PMCEID0_EL0 (events 0..=31)
/// and PMCEID1_EL0 (32..=63).
pub fn event_supported(event: u32) -> bool {
    let (low, high): (u64, u64);
    // SAFETY: reading PMCEID0_EL0 and PMCEID1_EL0 has no side effect.
    unsafe {
        asm!("mrs {}, pmceid0_el0", "mrs {}, pmceid1_el0", out(reg) low, out(reg) high, options(nomem, nostack))
    };
    let bits = (low & 0xffff_ffff) | (high & 0xffff_ffff) << 32;
    event < 64 && bits & (1 << event) != 0
}
