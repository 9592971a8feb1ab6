//! The Performance Monitors Extension (PMUv3): its registers through `mrs`/`msr` (aarch64-cpu
//! lacks them), the cycle counter and the event counters (PMEVTYPER<n>/PMEVCNTR<n> and the
//! PMSELR-selected PMXEVTYPER/PMXEVCNTR), enables, overflow flags and interrupts, PMSWINC, the
//! common event numbers and PMCEID introspection, the overflow PPI from the device tree, and
//! hand-assembled loops of known length to count.
//!
//! PMU configuration changes only what the counters count and whether their overflow interrupt
//! is raised (an interrupt without a handler is counted and ended by the GIC dispatcher), so the
//! accessors are safe.

use core::arch::asm;

use aarch64_cpu::registers::{ID_AA64DFR0_EL1, Readable};

/// PMCR_EL0.E: enable the counters.
pub const PMCR_E: u64 = 1 << 0;
/// PMCR_EL0.P: reset the event counters (write-only, reads 0).
pub const PMCR_P: u64 = 1 << 1;
/// PMCR_EL0.C: reset the cycle counter (write-only, reads 0).
pub const PMCR_C: u64 = 1 << 2;
/// PMCR_EL0.D: the cycle counter counts every 64th cycle (RES0 where AArch32 is not
/// implemented at any EL).
pub const PMCR_D: u64 = 1 << 3;
/// PMCR_EL0.X: export events to an external monitor.
pub const PMCR_X: u64 = 1 << 4;
/// PMCR_EL0.DP: the cycle counter is disabled where event counting is prohibited.
pub const PMCR_DP: u64 = 1 << 5;
/// PMCR_EL0.LC: the cycle counter overflows at 64 bits.
pub const PMCR_LC: u64 = 1 << 6;
/// PMCR_EL0.LP (FEAT_PMUv3p5): the event counters overflow at 64 bits.
pub const PMCR_LP: u64 = 1 << 7;
/// PMCR_EL0 bits 7:0, the control bits; the rest (N, IDCODE, IMP) is read-only or RES0.
pub const PMCR_CONTROLS: u64 = 0xff;
/// The cycle counter's index in PMCNTEN*, PMOVS*, PMINTEN* and PMSELR.
pub const CYCLE_COUNTER_INDEX: u32 = 31;
/// PMCNTENSET_EL0.C: the cycle counter's enable bit (and its PMOVS*/PMINTEN* bit).
pub const CYCLE_COUNTER: u64 = 1 << CYCLE_COUNTER_INDEX;
/// The most event counters PMCR_EL0.N can announce.
pub const MAX_EVENT_COUNTERS: u32 = 31;
/// Every counter bit of the 32-bit PMCNTEN*, PMOVS*, PMINTEN* and PMSWINC registers.
pub const ALL_COUNTERS: u64 = 0xffff_ffff;

/// ID_AA64DFR0_EL1.PMUVer of PMUv3 (Armv8.0).
pub const VERSION_3: u64 = 0b0001;
/// ID_AA64DFR0_EL1.PMUVer of PMUv3 for Armv8.1 (PMUv3p1: 16-bit evtCount, STALL_* events).
pub const VERSION_3_1: u64 = 0b0100;
/// ID_AA64DFR0_EL1.PMUVer of PMUv3p4.
pub const VERSION_3_4: u64 = 0b0101;
/// ID_AA64DFR0_EL1.PMUVer of PMUv3p5 (64-bit event counters, PMCR_EL0.LP).
pub const VERSION_3_5: u64 = 0b0110;

/// The PMU overflow PPI of QEMU `virt` (PPI 7), used when the device tree has no PMU node.
const DEFAULT_INTID: u32 = 23;

/// Common event numbers (the Arm ARM's PMU event list) that tests count or look up.
pub mod event {
    /// SW_INCR: software increment (a write of 1 to the counter's PMSWINC_EL0 bit).
    pub const SW_INCR: u32 = 0x00;
    /// INST_RETIRED: instructions architecturally executed.
    pub const INST_RETIRED: u32 = 0x08;
    /// CPU_CYCLES: cycles.
    pub const CPU_CYCLES: u32 = 0x11;
    /// MEM_ACCESS: data memory accesses.
    pub const MEM_ACCESS: u32 = 0x13;
    /// INST_SPEC: instructions speculatively executed.
    pub const INST_SPEC: u32 = 0x1b;
    /// CHAIN: an odd counter counts the overflows of the even counter below it (a 64-bit pair).
    pub const CHAIN: u32 = 0x1e;
    /// STALL_FRONTEND: no operation issued for want of instructions.
    pub const STALL_FRONTEND: u32 = 0x23;
    /// STALL_BACKEND: no operation issued for want of resources.
    pub const STALL_BACKEND: u32 = 0x24;
    /// The last common event PMCEID0/1's low halves describe (0x00..=0x3f).
    pub const LAST_COMMON: u32 = 0x3f;
    /// The first extended common event PMCEID0/1's high halves describe (0x4000..=0x403f).
    pub const FIRST_EXTENDED_COMMON: u32 = 0x4000;
}

/// PMEVTYPER<n>_EL0 (and PMXEVTYPER_EL0) fields.
pub mod evtyper {
    /// P (bit 31): do not count at EL1.
    pub const P: u64 = 1 << 31;
    /// U (bit 30): do not count at EL0.
    pub const U: u64 = 1 << 30;
    /// NSK (bit 29): with P, how non-secure EL1 counts.
    pub const NSK: u64 = 1 << 29;
    /// NSU (bit 28): with U, how non-secure EL0 counts.
    pub const NSU: u64 = 1 << 28;
    /// NSH (bit 27): count at EL2.
    pub const NSH: u64 = 1 << 27;
    /// evtCount (bits 15:0 from PMUv3p1, 9:0 before): the event.
    pub const EVENT: u64 = 0xffff;
    /// evtCount in PMUv3 before PMUv3p1 (bits 9:0).
    pub const EVENT_PMUV3: u64 = 0x3ff;
}

/// ID_AA64DFR0_EL1.PMUVer: 0 means no PMU, 0xf an IMPLEMENTATION DEFINED one.
pub fn version() -> u64 {
    (ID_AA64DFR0_EL1.get() >> 8) & 0xf
}

/// Whether an architected PMU (PMUv3) is present.
pub fn present() -> bool {
    !matches!(version(), 0 | 0xf)
}

/// Whether the event counters can overflow at 64 bits (FEAT_PMUv3p5, PMCR_EL0.LP). From
/// PMUv3p5 on every event counter is 64 bits wide whatever LP says.
pub fn has_64bit_event_counters() -> bool {
    present() && version() >= VERSION_3_5
}

/// The INTID of the PMU's overflow PPI (from the device tree's `arm,armv8-pmuv3` node).
pub fn interrupt() -> u32 {
    super::device_tree::platform()
        .pmu_interrupt()
        .unwrap_or(DEFAULT_INTID)
}

/// How many event counters there are (PMCR_EL0.N).
pub fn event_counters() -> u32 {
    ((pmcr() >> 11) & 0x1f) as u32
}

/// The bits of the implemented event counters, 0..N (without the cycle counter).
pub fn implemented_event_counters() -> u64 {
    (1 << event_counters()) - 1
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

        #[doc = concat!("Writes ", $doc, ", then an ISB.")]
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
    "PMCNTENSET_EL0 (reads the enables, a write sets the bits written)"
);
system_register!(
    counter_disables,
    set_counter_disables,
    "pmcntenclr_el0",
    "PMCNTENCLR_EL0 (reads the enables, a write clears the bits written)"
);
system_register!(cycle_filter, set_cycle_filter, "pmccfiltr_el0", "PMCCFILTR_EL0");
system_register!(
    overflow_status,
    set_overflow_status,
    "pmovsclr_el0",
    "PMOVSCLR_EL0 (reads the overflow flags, a write clears the bits written)"
);
system_register!(
    overflow_set,
    set_overflows,
    "pmovsset_el0",
    "PMOVSSET_EL0 (reads the overflow flags, a write sets the bits written)"
);
system_register!(
    interrupt_enables,
    set_interrupt_enables,
    "pmintenset_el1",
    "PMINTENSET_EL1 (reads the overflow interrupt enables, a write sets the bits written)"
);
system_register!(
    interrupt_disables,
    set_interrupt_disables,
    "pmintenclr_el1",
    "PMINTENCLR_EL1 (reads the overflow interrupt enables, a write clears the bits written)"
);
system_register!(
    selected_counter,
    select_counter,
    "pmselr_el0",
    "PMSELR_EL0 (SEL: the counter PMXEVTYPER/PMXEVCNTR reach; 31 is the cycle counter)"
);
system_register!(
    selected_event_type,
    set_selected_event_type,
    "pmxevtyper_el0",
    "PMXEVTYPER_EL0 (PMEVTYPER<n> of the counter PMSELR_EL0 selects, or PMCCFILTR_EL0)"
);
system_register!(
    selected_event_count,
    set_selected_event_count,
    "pmxevcntr_el0",
    "PMXEVCNTR_EL0 (PMEVCNTR<n> of the counter PMSELR_EL0 selects)"
);

/// Writes PMSWINC_EL0: each event counter whose bit is set and that counts SW_INCR (enabled,
/// with PMCR_EL0.E) increments by one.
pub fn software_increment(counters: u64) {
    // SAFETY: a software increment changes only PMU counters.
    unsafe { asm!("msr pmswinc_el0, {}", in(reg) counters, options(nomem, nostack)) };
}

macro_rules! numbered_registers {
    ($($number:literal),+) => {
        /// Reads PMEVCNTR<counter>_EL0.
        ///
        /// # Panics
        /// For a counter number of 31 or more.
        pub fn event_count(counter: u32) -> u64 {
            let value: u64;
            match counter {
                $(
                    // SAFETY: reading a PMU register has no side effect.
                    $number => unsafe {
                        asm!(concat!("mrs {}, pmevcntr", stringify!($number), "_el0"), out(reg) value, options(nomem, nostack))
                    },
                )+
                _ => panic!("there is no event counter {counter}"),
            }
            value
        }

        /// Writes PMEVCNTR<counter>_EL0, then an ISB.
        ///
        /// # Panics
        /// For a counter number of 31 or more.
        pub fn set_event_count(counter: u32, value: u64) {
            match counter {
                $(
                    // SAFETY: PMU configuration changes only what the counters count.
                    $number => unsafe {
                        asm!(concat!("msr pmevcntr", stringify!($number), "_el0, {}"), "isb", in(reg) value, options(nomem, nostack))
                    },
                )+
                _ => panic!("there is no event counter {counter}"),
            }
        }

        /// Reads PMEVTYPER<counter>_EL0.
        ///
        /// # Panics
        /// For a counter number of 31 or more.
        pub fn event_type(counter: u32) -> u64 {
            let value: u64;
            match counter {
                $(
                    // SAFETY: reading a PMU register has no side effect.
                    $number => unsafe {
                        asm!(concat!("mrs {}, pmevtyper", stringify!($number), "_el0"), out(reg) value, options(nomem, nostack))
                    },
                )+
                _ => panic!("there is no event counter {counter}"),
            }
            value
        }

        /// Writes PMEVTYPER<counter>_EL0 (an event number and [`evtyper`] filter bits), then
        /// an ISB.
        ///
        /// # Panics
        /// For a counter number of 31 or more.
        pub fn set_event_type(counter: u32, value: u64) {
            match counter {
                $(
                    // SAFETY: PMU configuration changes only what the counters count.
                    $number => unsafe {
                        asm!(concat!("msr pmevtyper", stringify!($number), "_el0, {}"), "isb", in(reg) value, options(nomem, nostack))
                    },
                )+
                _ => panic!("there is no event counter {counter}"),
            }
        }
    };
}

numbered_registers!(
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
    29, 30
);

/// Counts `event` in event counter `counter` at EL1 (this runtime's level) and not at EL0
/// (PMEVTYPER<n>_EL0.U), as kvm-unit-tests' PMEVTYPER_EXCLUDE_EL0 does; NSH too when the
/// runtime runs at EL2.
pub fn count_event(counter: u32, event: u32) {
    let el2 = if super::instructions::current_el() == 2 {
        evtyper::NSH
    } else {
        0
    };
    set_event_type(counter, u64::from(event) | evtyper::U | el2);
}

/// PMCEID0_EL0 and PMCEID1_EL0: the implemented common events.
pub fn common_event_identification() -> (u64, u64) {
    let (low, high): (u64, u64);
    // SAFETY: reading PMCEID0_EL0 and PMCEID1_EL0 has no side effect.
    unsafe {
        asm!("mrs {}, pmceid0_el0", "mrs {}, pmceid1_el0", out(reg) low, out(reg) high, options(nomem, nostack))
    };
    (low, high)
}

/// Whether common event `event` (0x0..=0x3f, or extended 0x4000..=0x403f) is implemented: the
/// low halves of PMCEID0_EL0 (events 0..=31) and PMCEID1_EL0 (32..=63), or their high halves
/// for the extended range. Any other number is not a common event: false.
pub fn event_supported(event: u32) -> bool {
    let (pmceid0, pmceid1) = common_event_identification();
    let bits = match event {
        0..=event::LAST_COMMON => (pmceid0 & 0xffff_ffff) | (pmceid1 & 0xffff_ffff) << 32,
        event::FIRST_EXTENDED_COMMON..=0x403f => (pmceid0 >> 32) | (pmceid1 >> 32) << 32,
        _ => return false,
    };
    bits & (1 << (event & 0x3f)) != 0
}

/// kvm-unit-tests' pmu_reset: PMCR_EL0 with E clear, LC set and the cycle and event counters
/// reset (P, C); every counter disabled, every overflow flag and overflow interrupt enable
/// cleared.
pub fn reset() {
    set_pmcr((pmcr() & !PMCR_CONTROLS) | PMCR_LC | PMCR_C | PMCR_P);
    set_counter_disables(ALL_COUNTERS);
    set_overflow_status(ALL_COUNTERS);
    set_interrupt_disables(ALL_COUNTERS);
}

/// Writes `pmcr` to PMCR_EL0, runs `iterations` (at least 1) turns of a two-instruction loop
/// (SUBS, B.GT), then writes 0 to PMCR_EL0 (counting stops). Between the two PMCR_EL0 writes,
/// both included, run exactly 2 + 2 * iterations instructions: ISB, the loop, MSR PMCR_EL0
/// (kvm-unit-tests' precise_instrs_loop).
pub fn precise_instructions_loop(iterations: u32, pmcr: u64) {
    let iterations = iterations.max(1);
    // SAFETY: PMCR_EL0 writes change only what the counters count; the loop touches only its
    // own register and the flags.
    unsafe {
        asm!(
            "msr pmcr_el0, {pmcr}",
            "isb",
            "1:",
            "subs {counter:w}, {counter:w}, #1",
            "b.gt 1b",
            "msr pmcr_el0, xzr",
            "isb",
            pmcr = in(reg) pmcr,
            counter = inout(reg) iterations => _,
            options(nomem, nostack),
        )
    };
}

/// The instructions [`precise_instructions_loop`] runs with counting enabled for `iterations`.
pub fn precise_loop_instructions(iterations: u32) -> u64 {
    2 + 2 * u64::from(iterations.max(1))
}

/// Writes `pmcr` to PMCR_EL0, loads `data` `iterations` (at least 1) times in a loop of four
/// instructions (SUB, LDR, CMP, B.GT) between DSBs, then writes 0 to PMCR_EL0
/// (kvm-unit-tests' mem_access_loop): exactly `iterations` data loads while counting.
pub fn memory_access_loop(data: &u64, iterations: u64, pmcr: u64) {
    let iterations = iterations.max(1);
    // SAFETY: `data` is a valid reference to read; PMCR_EL0 writes change only what the
    // counters count.
    unsafe {
        asm!(
            "dsb ish",
            "msr pmcr_el0, {pmcr}",
            "isb",
            "dsb ish",
            "1:",
            "sub {counter}, {counter}, #1",
            "ldr {scratch}, [{address}]",
            "cmp {counter}, #0",
            "b.gt 1b",
            "dsb ish",
            "msr pmcr_el0, xzr",
            "isb",
            pmcr = in(reg) pmcr,
            address = in(reg) data as *const u64,
            counter = inout(reg) iterations => _,
            scratch = out(reg) _,
            options(nostack, readonly),
        )
    };
}
