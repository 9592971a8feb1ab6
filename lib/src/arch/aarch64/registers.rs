//! System registers for tests, in one place: aarch64-cpu's typed registers and their traits
//! (`MIDR_EL1.get()`, `SCTLR_EL1.is_set(SCTLR_EL1::C)`, `CPACR_EL1.read(CPACR_EL1::FPEN)`),
//! re-exported so that a test needs no dependency of its own, plus the runtime's `mrs`/`msr`
//! wrappers for the registers aarch64-cpu lacks (the GIC CPU interface's ICC_*, the PMU's PM* with
//! PMEVTYPER<n>/PMEVCNTR<n> by number,
//! FPCR, FPSR, CTR_EL0, CLIDR_EL1, ID_AA64ISAR2_EL1, ID_AA64MMFR3_EL1, MTE's GCR_EL1 and
//! RGSR_EL1, SVE's ZCR_EL1 and ID_AA64ZFR0_EL1, SME's ID_AA64SMFR0_EL1, SMIDR_EL1, SMCR_EL1 and
//! SVCR) and the named fields of those (with the MTE
//! fields of SCTLR_EL1 and TCR_EL1).
//!
//! Every identification register reads safely, at EL1 or at EL2 (and with no dependency in the
//! test's Cargo.toml): `MIDR_EL1.get()`, `MPIDR_EL1.get()`, `CurrentEL.get()` (or
//! [`current_el`]), `ID_AA64PFR0_EL1`, `ID_AA64PFR1_EL1`, `ID_AA64DFR0_EL1`, `ID_AA64ISAR0_EL1`,
//! `ID_AA64ISAR1_EL1`, [`id_aa64isar2_el1`], `ID_AA64MMFR0_EL1`, `ID_AA64MMFR1_EL1`,
//! `ID_AA64MMFR2_EL1`, [`id_aa64mmfr3_el1`], [`id_aa64zfr0_el1`], [`id_aa64smfr0_el1`], [`ctr_el0`] and
//! [`clidr_el1`]; the typed ones read fields by name (`ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VH)`).
//!
//! ```ignore
//! use vmunit::arch::registers::{MIDR_EL1, Readable, current_el, fpcr, set_fpcr};
//! let implementer = MIDR_EL1.read(MIDR_EL1::Implementer);
//! report!(current_el() == 1, "the runtime runs at EL1");
//! set_fpcr(fpcr::ROUND_TOWARD_ZERO | fpcr::FZ);
//! ```

pub use aarch64_cpu::registers::*;

pub use super::cache::{cache_levels, cache_levels as clidr_el1, cache_type, cache_type as ctr_el0};
pub use super::gic::{
    icc_bpr1, icc_ctlr, icc_igrpen1, icc_pmr, icc_sre, set_icc_bpr1, set_icc_ctlr, set_icc_igrpen1,
    set_icc_pmr, set_icc_sre,
};
pub use super::instructions::{current_el, fpcr, fpsr, set_fpcr, set_fpsr};
pub use super::mte::{gcr_el1, rgsr_el1, set_gcr_el1, set_rgsr_el1};
pub use super::pmu::{
    counter_disables, counter_enables, cycle_counter, cycle_filter, event_count, event_type,
    interrupt_disables, interrupt_enables, overflow_set, overflow_status, pmcr, select_counter,
    selected_counter, selected_event_count, selected_event_type, set_counter_disables, set_counter_enables,
    set_cycle_counter, set_cycle_filter, set_event_count, set_event_type, set_interrupt_disables,
    set_interrupt_enables, set_overflow_status, set_overflows, set_pmcr, set_selected_event_count,
    set_selected_event_type, software_increment,
};
pub use super::sme::{id_aa64smfr0_el1, smcr, smcr_el1, smfr0, smidr, smidr_el1, svcr};
pub use super::sve::{id_aa64zfr0_el1, zcr_el1, zfr0};

/// ID_AA64ISAR2_EL1 (instruction set attribute register 2; S3_0_C0_C6_2), which aarch64-cpu
/// lacks. RAZ where the CPU predates it (the ID space is defined in full).
pub fn id_aa64isar2_el1() -> u64 {
    let value: u64;
    // SAFETY: an ID register read, defined at EL1 and EL2 (reserved ID registers are RAZ); no
    // memory access.
    unsafe {
        core::arch::asm!("mrs {value}, S3_0_C0_C6_2", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// ID_AA64MMFR3_EL1 (memory model feature register 3; S3_0_C0_C7_3), which aarch64-cpu lacks.
/// RAZ where the CPU predates it.
pub fn id_aa64mmfr3_el1() -> u64 {
    let value: u64;
    // SAFETY: as `id_aa64isar2_el1`: a read of the ID space, RAZ where unallocated.
    unsafe {
        core::arch::asm!("mrs {value}, S3_0_C0_C7_3", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// FPCR fields.
pub mod fpcr {
    /// RMode (bits 23:22): the rounding mode.
    pub const RMODE: u64 = 3 << 22;
    /// RMode = 0b00: round to nearest (the reset value).
    pub const ROUND_TO_NEAREST: u64 = 0;
    /// RMode = 0b01: round towards plus infinity.
    pub const ROUND_TOWARD_PLUS_INFINITY: u64 = 1 << 22;
    /// RMode = 0b10: round towards minus infinity.
    pub const ROUND_TOWARD_MINUS_INFINITY: u64 = 2 << 22;
    /// RMode = 0b11: round towards zero.
    pub const ROUND_TOWARD_ZERO: u64 = 3 << 22;
    /// FZ: flush denormals to zero.
    pub const FZ: u64 = 1 << 24;
    /// DN: default NaN.
    pub const DN: u64 = 1 << 25;
    /// AHP: alternative half-precision format.
    pub const AHP: u64 = 1 << 26;
}

/// FPSR fields: the cumulative exception flags and QC.
pub mod fpsr {
    /// IOC: invalid operation.
    pub const IOC: u64 = 1 << 0;
    /// DZC: division by zero.
    pub const DZC: u64 = 1 << 1;
    /// OFC: overflow.
    pub const OFC: u64 = 1 << 2;
    /// UFC: underflow.
    pub const UFC: u64 = 1 << 3;
    /// IXC: inexact.
    pub const IXC: u64 = 1 << 4;
    /// IDC: input denormal.
    pub const IDC: u64 = 1 << 7;
    /// QC: cumulative saturation (Advanced SIMD).
    pub const QC: u64 = 1 << 27;
    /// Every cumulative floating-point exception flag (IOC, DZC, OFC, UFC, IXC, IDC).
    pub const CUMULATIVE_FLAGS: u64 = IOC | DZC | OFC | UFC | IXC | IDC;
}

/// CTR_EL0 fields (the cache type register, [`cache_type`]).
pub mod ctr {
    pub use super::super::cache::{CTR_DIC as DIC, CTR_IDC as IDC};

    /// The smallest instruction cache line, in bytes (IminLine, bits 3:0, is log2 of words).
    pub fn instruction_line_bytes(ctr: u64) -> u64 {
        4 << (ctr & 0xf)
    }

    /// The smallest data cache line, in bytes (DminLine, bits 19:16, is log2 of words).
    pub fn data_line_bytes(ctr: u64) -> u64 {
        4 << ((ctr >> 16) & 0xf)
    }
}

/// CLIDR_EL1 fields (the cache level register, [`cache_levels`]).
pub mod clidr {
    /// LoUU (bits 29:27): the level of unification, uniprocessor.
    pub fn level_of_unification_uniprocessor(clidr: u64) -> u64 {
        (clidr >> 27) & 7
    }

    /// LoC (bits 26:24): the level of coherence.
    pub fn level_of_coherence(clidr: u64) -> u64 {
        (clidr >> 24) & 7
    }

    /// LoUIS (bits 23:21): the level of unification, inner shareable.
    pub fn level_of_unification_inner_shareable(clidr: u64) -> u64 {
        (clidr >> 21) & 7
    }
}

/// PMCR_EL0 fields.
pub mod pmcr {
    pub use super::super::pmu::{
        PMCR_C as C, PMCR_CONTROLS as CONTROLS, PMCR_D as D, PMCR_DP as DP, PMCR_E as E, PMCR_LC as LC,
        PMCR_LP as LP, PMCR_P as P, PMCR_X as X,
    };

    /// The fields above the control bits (N, IDCODE, IMP and RES0), which writes keep.
    pub fn fixed_fields(pmcr: u64) -> u64 {
        pmcr & !CONTROLS
    }

    /// N (bits 15:11): how many event counters are implemented.
    pub fn event_counters(pmcr: u64) -> u64 {
        (pmcr >> 11) & 0x1f
    }

    /// IDCODE (bits 23:16): the implementer's identification code.
    pub fn identification(pmcr: u64) -> u64 {
        (pmcr >> 16) & 0xff
    }

    /// IMP (bits 31:24): the implementer code.
    pub fn implementer(pmcr: u64) -> u64 {
        (pmcr >> 24) & 0xff
    }
}

/// SCTLR_EL1's MTE fields (aarch64-cpu lacks them).
pub mod sctlr {
    /// ATA (bit 43): allocation tag access at EL1 (IRG, STG, LDG, ... act on tags).
    pub const ATA: u64 = 1 << 43;
    /// ATA0 (bit 42): allocation tag access at EL0.
    pub const ATA0: u64 = 1 << 42;
    /// TCF (bits 41:40): the EL1 tag check fault mode (`mte::TagCheckMode`).
    pub const TCF: u64 = 3 << TCF_SHIFT;
    /// Where TCF starts.
    pub const TCF_SHIFT: u32 = 40;
    /// TCF0 (bits 39:38): the EL0 tag check fault mode.
    pub const TCF0: u64 = 3 << TCF0_SHIFT;
    /// Where TCF0 starts.
    pub const TCF0_SHIFT: u32 = 38;
}

/// TCR_EL1's top-byte and MTE fields (aarch64-cpu names TBI0/TBI1 but not TCMA0/TCMA1).
pub mod tcr {
    /// TBI0 (bit 37): the top byte of lower-range addresses is ignored in translation.
    pub const TBI0: u64 = 1 << 37;
    /// TBI1 (bit 38): the same for upper-range addresses.
    pub const TBI1: u64 = 1 << 38;
    /// TCMA0 (bit 57): lower-range pointers with logical tag 0b0000 are not tag checked.
    pub const TCMA0: u64 = 1 << 57;
    /// TCMA1 (bit 58): upper-range pointers with logical tag 0b1111 are not tag checked.
    pub const TCMA1: u64 = 1 << 58;
}

/// TFSR_EL1 and TFSRE0_EL1 fields (`mte::tag_fault_status`, `mte::user_tag_fault_status`).
pub mod tfsr {
    /// TF0 (bit 0): an asynchronous tag check fault at EL1 on a lower-range address.
    pub const TF0: u64 = 1 << 0;
    /// TF1 (bit 1): the same on an upper-range address.
    pub const TF1: u64 = 1 << 1;
}

/// GCR_EL1 fields (`mte::gcr_el1`).
pub mod gcr {
    /// Exclude (bits 15:0): bit n set, IRG never makes tag n.
    pub const EXCLUDE: u64 = 0xffff;
    /// RRND (bit 16): IRG's tags are implementation-defined random rather than RGSR_EL1's
    /// pseudo-random sequence.
    pub const RRND: u64 = 1 << 16;
}

/// RGSR_EL1 fields (`mte::rgsr_el1`).
pub mod rgsr {
    /// TAG (bits 3:0): the tag IRG last made (with GCR_EL1.RRND clear).
    pub const TAG: u64 = 0xf;
    /// SEED (bits 23:8): the pseudo-random generator's state.
    pub const SEED: u64 = 0xffff << SEED_SHIFT;
    /// Where SEED starts.
    pub const SEED_SHIFT: u32 = 8;
}

/// ICC_PMR_EL1: the priority mask that lets every priority through.
pub const ICC_PMR_ALLOW_ALL: u64 = 0xff;
