//! SME (the Scalable Matrix Extension): whether the CPU has it (ID_AA64PFR1_EL1.SME,
//! ID_AA64SMFR0_EL1, SMIDR_EL1), the streaming vector length (SMCR_EL1.LEN, RDSVL) and the
//! lengths offered, PSTATE.SM and PSTATE.ZA (SMSTART/SMSTOP, SVCR), and the SME register state
//! (the ZA array and the streaming Z0-Z31 and P0-P15) loaded, held and read back for state
//! checks, plus probes of what must trap (CPACR_EL1.SMEN clear, AdvSIMD in Streaming SVE mode,
//! ZA used while inactive).
//!
//! The boot code enables SME where the CPU has it (CPACR_EL1.SMEN, and CPTR_EL2.TSM clear with
//! SMCR_EL2.LEN = 0xf when entered at EL2) and sets SMCR_EL1.LEN = 0xf (the largest streaming
//! length; FA64 and EZT0 clear). Compiled Rust code uses AdvSIMD, which is illegal in Streaming
//! SVE mode: no function here returns with PSTATE.SM set, and the exception vectors leave that
//! mode (keeping the streaming Z and P, see `exceptions::ExtendedSave`) before any handler runs
//! and re-enter it on return. The runtime never touches ZA, so ZA needs no saving; PSTATE.ZA
//! may stay set across compiled code ([`enable_za`]).
//!
//! There is no x86 counterpart (AMX is another design, and the runtime does not offer it): SME
//! is aarch64's own module, as `sve` and `mte` are.

use core::arch::asm;

use aarch64_cpu::registers::{CPACR_EL1, ID_AA64PFR1_EL1, Readable, Writeable};
use alloc::vec;
use alloc::vec::Vec;

use super::boot::CPACR_SMEN;
use super::console::SerialInputWait;
use super::exceptions::{Exception, ExceptionClass};
use super::instructions::{Handoff, fpsr, isb, set_fpsr};
pub use super::sve::VectorLengths;

/// ID_AA64PFR1_EL1.SME (bits 27:24): 1 SME, 2 SME2; 0 not implemented.
pub const ID_AA64PFR1_SME_SHIFT: u32 = 24;
/// The largest streaming vector length the architecture allows, in bytes (2048 bits).
pub const MAX_STREAMING_VECTOR_BYTES: usize = 256;

/// ID_AA64SMFR0_EL1 fields: which SME instructions and modes are implemented.
pub mod smfr0 {
    /// FA64 (bit 63): the full A64 instruction set (AdvSIMD, FFR) is legal in Streaming SVE
    /// mode when SMCR_ELx.FA64 is set.
    pub fn full_a64(smfr0: u64) -> bool {
        smfr0 >> 63 != 0
    }

    /// SMEver (bits 59:56): 0 SME, 1 SME2, 2 SME2.1.
    pub fn version(smfr0: u64) -> u64 {
        (smfr0 >> 56) & 0xf
    }

    /// I16I64 (bits 55:52): 0xf when the 16-bit into 64-bit integer outer products are.
    pub fn int16_int64(smfr0: u64) -> u64 {
        (smfr0 >> 52) & 0xf
    }

    /// F64F64 (bit 48): the double-precision outer products.
    pub fn float64_float64(smfr0: u64) -> bool {
        (smfr0 >> 48) & 1 != 0
    }

    /// I8I32 (bits 39:36): 0xf when the 8-bit into 32-bit integer outer products are.
    pub fn int8_int32(smfr0: u64) -> u64 {
        (smfr0 >> 36) & 0xf
    }

    /// F16F32 (bit 35): half-precision into single-precision outer products.
    pub fn float16_float32(smfr0: u64) -> bool {
        (smfr0 >> 35) & 1 != 0
    }

    /// B16F32 (bit 34): BFloat16 into single-precision outer products.
    pub fn bfloat16_float32(smfr0: u64) -> bool {
        (smfr0 >> 34) & 1 != 0
    }

    /// F32F32 (bit 32): single-precision outer products (every SME implementation has them).
    pub fn float32_float32(smfr0: u64) -> bool {
        (smfr0 >> 32) & 1 != 0
    }
}

/// SMCR_ELx fields ([`smcr_el1`]).
pub mod smcr {
    /// LEN (bits 3:0): the requested streaming vector length, in quadwords minus one.
    pub const LEN: u64 = 0xf;
    /// EZT0 (bit 30, SME2): ZT0 accesses do not trap.
    pub const EZT0: u64 = 1 << 30;
    /// FA64 (bit 31): the full A64 instruction set is legal in Streaming SVE mode.
    pub const FA64: u64 = 1 << 31;
}

/// SVCR fields ([`svcr`]): the PSTATE.SM and PSTATE.ZA bits.
pub mod svcr {
    /// SM (bit 0): Streaming SVE mode.
    pub const SM: u64 = 1 << 0;
    /// ZA (bit 1): ZA storage is active.
    pub const ZA: u64 = 1 << 1;
}

/// SMIDR_EL1 fields ([`smidr_el1`]).
pub mod smidr {
    /// Implementer (bits 31:24), as MIDR_EL1's.
    pub fn implementer(smidr: u64) -> u64 {
        (smidr >> 24) & 0xff
    }

    /// Revision (bits 23:16).
    pub fn revision(smidr: u64) -> u64 {
        (smidr >> 16) & 0xff
    }

    /// SMPS (bit 15): streaming execution priority is supported (SMPRI_EL1).
    pub fn priority_supported(smidr: u64) -> bool {
        (smidr >> 15) & 1 != 0
    }

    /// Affinity (bits 11:0): which PEs share a streaming execution unit.
    pub fn affinity(smidr: u64) -> u64 {
        smidr & 0xfff
    }
}

/// Why an SME trap (EC 0x1d, [`ExceptionClass::SmeAccess`]) was taken: ESR ISS.SMTC (bits 2:0),
/// as the Arm ARM's ESR_ELx ISS encoding for that class numbers them (QEMU's
/// `SMEExceptionType` in target/arm/syndrome.h has the same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmeTrap {
    /// 0b000: SME disabled by CPACR_EL1.SMEN (or CPTR_ELx).
    Disabled,
    /// 0b001: an instruction that is illegal in Streaming SVE mode (AdvSIMD, FFR without FA64).
    IllegalInStreamingMode,
    /// 0b010: an instruction that needs Streaming SVE mode run outside it (an SME outer product).
    NotStreaming,
    /// 0b011: ZA accessed while PSTATE.ZA is 0.
    ZaInactive,
    /// 0b100: ZT0 accessed while SMCR_ELx.EZT0 is 0 (SME2).
    Zt0Disabled,
    /// Any other SMTC value.
    Other(u8),
}

impl SmeTrap {
    /// The SMTC of an SME trap; `None` for other exception classes.
    pub fn of(exception: &Exception) -> Option<SmeTrap> {
        (exception.class == ExceptionClass::SmeAccess).then_some(match exception.esr & 7 {
            0 => SmeTrap::Disabled,
            1 => SmeTrap::IllegalInStreamingMode,
            2 => SmeTrap::NotStreaming,
            3 => SmeTrap::ZaInactive,
            4 => SmeTrap::Zt0Disabled,
            other => SmeTrap::Other(other as u8),
        })
    }
}

/// Whether the CPU implements SME (ID_AA64PFR1_EL1.SME nonzero).
pub fn supported() -> bool {
    (ID_AA64PFR1_EL1.get() >> ID_AA64PFR1_SME_SHIFT) & 0xf != 0
}

/// ID_AA64SMFR0_EL1 (S3_0_C0_C4_5; RAZ without SME: the register is in the ID space either way).
pub fn id_aa64smfr0_el1() -> u64 {
    let value: u64;
    // SAFETY: an ID register read, defined at EL1 and EL2 whether or not SME is implemented.
    unsafe {
        asm!("mrs {value}, S3_0_C0_C4_5", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// SMIDR_EL1 (S3_1_C0_C0_6), or `None` without SME (the register is then UNDEFINED).
pub fn smidr_el1() -> Option<u64> {
    if !supported() {
        return None;
    }
    let value: u64;
    // SAFETY: SME is implemented, so SMIDR_EL1 is; an identification read.
    unsafe {
        asm!("mrs {value}, S3_1_C0_C0_6", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    Some(value)
}

/// SMCR_EL1 (S3_0_C1_C2_6), or `None` without SME.
pub fn smcr_el1() -> Option<u64> {
    if !supported() {
        return None;
    }
    let value: u64;
    // SAFETY: SME is implemented and the boot code set CPACR_EL1.SMEN, so EL1 reads SMCR_EL1.
    unsafe {
        asm!("mrs {value}, S3_0_C1_C2_6", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    Some(value)
}

/// SVCR (S3_3_C4_C2_2: PSTATE.SM and PSTATE.ZA, [`svcr`]), or `None` without SME.
pub fn svcr() -> Option<u64> {
    if !supported() {
        return None;
    }
    let value: u64;
    // SAFETY: SME is implemented and enabled; SVCR reads PSTATE.SM and PSTATE.ZA.
    unsafe {
        asm!("mrs {value}, S3_3_C4_C2_2", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    Some(value)
}

/// The current streaming vector length in bytes (RDSVL, which runs outside Streaming SVE mode
/// too), or `None` without SME.
pub fn streaming_vector_length() -> Option<usize> {
    if !supported() {
        return None;
    }
    let value: u64;
    // SAFETY: SME is implemented and enabled; RDSVL only reads the streaming vector length.
    unsafe {
        asm!(".arch_extension sme", "rdsvl {value}, #1", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    Some(value as usize)
}

/// Writes SMCR_EL1.LEN = `quadwords` - 1 (FA64 and EZT0 kept) and returns the streaming vector
/// length in bytes the CPU then runs with: the largest it offers that is at most `quadwords` ×
/// 16 bytes (or its smallest, when none is). `None` without SME or for `quadwords` outside
/// 1..=16. The runtime keeps no streaming values and never uses ZA, so a change of length
/// (which makes ZA and the streaming registers UNKNOWN) cannot break it.
pub fn set_streaming_vector_length(quadwords: usize) -> Option<usize> {
    let smcr = smcr_el1()?;
    if !(1..=16).contains(&quadwords) {
        return None;
    }
    let value = (smcr & !smcr::LEN) | ((quadwords as u64 - 1) & smcr::LEN);
    // SAFETY: SME is implemented and enabled; SMCR_EL1.LEN only sets the streaming vector
    // length, which no compiled code depends on (FA64 and EZT0 are kept).
    unsafe {
        asm!("msr S3_0_C1_C2_6, {value}", "isb", value = in(reg) value, options(nomem, nostack, preserves_flags))
    };
    streaming_vector_length()
}

/// The streaming vector lengths (bytes) the CPU offers, ascending: the distinct lengths
/// SMCR_EL1.LEN = 0..=15 give. SMCR_EL1 is left with LEN = 0xf. Empty without SME.
pub fn offered_streaming_vector_lengths() -> VectorLengths {
    VectorLengths::offered(set_streaming_vector_length)
}

/// Turns ZA storage on (SMSTART ZA: PSTATE.ZA set; ZA is zeroed when it was off). Returns
/// `false` without SME. Compiled code never uses ZA, so it may stay on.
pub fn enable_za() -> bool {
    if !supported() {
        return false;
    }
    let saved = fpsr();
    // SAFETY: SME is implemented and enabled; SMSTART ZA changes only PSTATE.ZA and ZA, which
    // no compiled code uses.
    unsafe {
        asm!(
            ".arch_extension sme",
            "smstart za",
            options(nomem, nostack, preserves_flags)
        )
    };
    set_fpsr(saved);
    true
}

/// Turns ZA storage off (SMSTOP ZA: PSTATE.ZA clear, ZA's contents lost). Returns `false`
/// without SME.
pub fn disable_za() -> bool {
    if !supported() {
        return false;
    }
    // SAFETY: as `enable_za`.
    unsafe {
        asm!(
            ".arch_extension sme",
            "smstop za",
            options(nomem, nostack, preserves_flags)
        )
    };
    true
}

/// SVCR read at each step of a walk through the modes: in Streaming SVE mode alone, with ZA
/// too, ZA alone, and neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcrWalk {
    /// Before (the walk starts from SMSTOP: neither).
    pub before: u64,
    /// After SMSTART SM.
    pub streaming: u64,
    /// After SMSTART ZA as well.
    pub streaming_and_za: u64,
    /// After SMSTOP SM (ZA stays).
    pub za: u64,
    /// After SMSTOP ZA.
    pub after: u64,
    /// After SMSTART (both at once).
    pub both_at_once: u64,
    /// After SMSTOP (both at once).
    pub neither: u64,
}

/// Walks PSTATE.SM and PSTATE.ZA through every combination with SMSTART/SMSTOP, reading SVCR
/// at each step ([`SvcrWalk`]); both end clear. `None` without SME.
pub fn svcr_walk() -> Option<SvcrWalk> {
    if !supported() {
        return None;
    }
    let saved = fpsr();
    let mut walk = [0u64; 7];
    // SAFETY: SME is implemented and enabled; in Streaming SVE mode only SVCR reads and the
    // SMSTART/SMSTOP forms run (legal there); the block ends with SM and ZA clear; v0-v31 (the
    // Z registers SMSTART SM and SMSTOP SM zero) are declared clobbered; FPSR is restored
    // after.
    unsafe {
        asm!(
            ".arch_extension sme",
            "smstop",
            "mrs {t0}, S3_3_C4_C2_2",
            "smstart sm",
            "mrs {t1}, S3_3_C4_C2_2",
            "smstart za",
            "mrs {t2}, S3_3_C4_C2_2",
            "smstop sm",
            "mrs {t3}, S3_3_C4_C2_2",
            "smstop za",
            "mrs {t4}, S3_3_C4_C2_2",
            "smstart",
            "mrs {t5}, S3_3_C4_C2_2",
            "smstop",
            "mrs {t6}, S3_3_C4_C2_2",
            t0 = out(reg) walk[0],
            t1 = out(reg) walk[1],
            t2 = out(reg) walk[2],
            t3 = out(reg) walk[3],
            t4 = out(reg) walk[4],
            t5 = out(reg) walk[5],
            t6 = out(reg) walk[6],
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
            out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
            out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        )
    };
    set_fpsr(saved);
    Some(SvcrWalk {
        before: walk[0],
        streaming: walk[1],
        streaming_and_za: walk[2],
        za: walk[3],
        after: walk[4],
        both_at_once: walk[5],
        neither: walk[6],
    })
}

/// Loads `fill` into ZA (which must hold SVL × SVL bytes at the current streaming vector
/// length), turns ZA off and on again, and returns ZA as it then reads (it must be all
/// zeros). ZA ends off. `None` without SME or for a `fill` of another size.
pub fn za_after_reenable(fill: &[u8]) -> Option<Vec<u8>> {
    let length = streaming_vector_length()?;
    if fill.len() != length * length {
        return None;
    }
    let mut out = vec![0u8; length * length];
    let saved = fpsr();
    // SAFETY: SME is implemented and enabled, at streaming length `length`; the loops load and
    // store `length` rows of `length` bytes, inside `fill` and `out`; ZA is used by no compiled
    // code; no Streaming SVE mode; FPSR is restored after.
    unsafe {
        asm!(
            ".arch_extension sme",
            "smstart za",
            "mov w12, #0",
            "1: ldr za[w12, 0], [{input}]",
            "add {input}, {input}, {length}",
            "add w12, w12, #1",
            "cmp x12, {length}",
            "b.lo 1b",
            "smstop za",
            "smstart za",
            "mov w12, #0",
            "2: str za[w12, 0], [{output}]",
            "add {output}, {output}, {length}",
            "add w12, w12, #1",
            "cmp x12, {length}",
            "b.lo 2b",
            "smstop za",
            input = inout(reg) fill.as_ptr() => _,
            output = inout(reg) out.as_mut_ptr() => _,
            length = in(reg) length as u64,
            out("x12") _,
            options(nostack),
        )
    };
    set_fpsr(saved);
    Some(out)
}

/// One register of the SME state (what [`SmeState::first_difference`] names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmeRegister {
    /// The streaming Z0-Z31.
    Z(u8),
    /// The streaming P0-P15.
    P(u8),
    /// A horizontal slice (row) of the ZA array, by its number (0..SVL bytes).
    ZaRow(u16),
}

/// The SME register state at one streaming vector length: the streaming Z0-Z31 and P0-P15 packed
/// as `STR` (`MUL VL`) stores them, and the ZA array row by row.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SmeState {
    /// The streaming vector length in bytes the state is for.
    pub vector_length: usize,
    /// Z0..Z31, `vector_length` bytes each.
    pub z: Vec<u8>,
    /// P0..P15, `vector_length / 8` bytes each.
    pub p: Vec<u8>,
    /// ZA: `vector_length` rows of `vector_length` bytes.
    pub za: Vec<u8>,
}

impl SmeState {
    /// A state for `vector_length` bytes whose bytes are distinct functions of `seed` and of
    /// their position (registers and ZA rows differ from each other and from other seeds).
    pub fn pattern(seed: u8, vector_length: usize) -> SmeState {
        let byte = |index: usize, salt: u8| {
            ((index as u32).wrapping_mul(7)
                ^ ((index >> 8) as u32).wrapping_mul(13)
                ^ ((index >> 16) as u32).wrapping_mul(29)) as u8
                ^ seed
                ^ salt
        };
        SmeState {
            vector_length,
            z: (0..32 * vector_length).map(|index| byte(index, 0)).collect(),
            p: (0..2 * vector_length).map(|index| byte(index, 0x5a)).collect(),
            za: (0..vector_length * vector_length)
                .map(|index| byte(index, 0xa5))
                .collect(),
        }
    }

    /// A state of zeros (what SMSTART leaves).
    pub fn zeros(vector_length: usize) -> SmeState {
        SmeState {
            vector_length,
            z: vec![0; 32 * vector_length],
            p: vec![0; 2 * vector_length],
            za: vec![0; vector_length * vector_length],
        }
    }

    /// The first register (or ZA row) that differs from `other`'s, or `None` (`Some` for
    /// states of different lengths: their first Z register).
    pub fn first_difference(&self, other: &SmeState) -> Option<SmeRegister> {
        let length = self.vector_length;
        if length != other.vector_length {
            return Some(SmeRegister::Z(0));
        }
        if let Some(byte) = self
            .z
            .iter()
            .zip(&other.z)
            .position(|(mine, theirs)| mine != theirs)
        {
            return Some(SmeRegister::Z((byte / length) as u8));
        }
        if let Some(byte) = self
            .p
            .iter()
            .zip(&other.p)
            .position(|(mine, theirs)| mine != theirs)
        {
            return Some(SmeRegister::P((byte / (length / 8)) as u8));
        }
        self.za
            .iter()
            .zip(&other.za)
            .position(|(mine, theirs)| mine != theirs)
            .map(|byte| SmeRegister::ZaRow((byte / length) as u16))
    }
}

/// What [`sme_state_round_trip`] does while the registers hold the state (in Streaming SVE
/// mode, ZA on).
#[derive(Clone, Copy, Debug)]
pub enum SmeEvent<'a> {
    /// Nothing: the registers are stored back at once.
    Nothing,
    /// `brk #0x78`, which `trap_exceptions` records and resumes after: the vector leaves
    /// Streaming SVE mode for the handler and re-enters it on return.
    Breakpoint,
    /// A pending IRQ, taken while IRQs are briefly unmasked (then masked again).
    InterruptWindow,
    /// The wait of [`Handoff`]: WFIs with IRQs masked, no exception taken, so only the
    /// hypervisor can change the registers.
    Descheduled(Handoff<'a>),
    /// A wait, no exception taken, until the console UART holds a byte from the host (left in
    /// its receive FIFO), in Streaming SVE mode with ZA on: the registers and SVCR are held
    /// across a live migration whose answer is that byte ([`crate::migration::migrate_holding`]).
    SerialInput(SerialInputWait),
}

/// What [`sme_state_round_trip`] read back.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SmeRoundTrip {
    /// The registers after the event.
    pub state: SmeState,
    /// SVCR once the state was loaded (SM and ZA expected set).
    pub svcr_loaded: u64,
    /// SVCR after the event, before the stores.
    pub svcr_after_event: u64,
    /// SVCR after the closing SMSTOP (expected 0).
    pub svcr_after: u64,
}

/// Why [`sme_state_round_trip`] did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmeError {
    /// The CPU has no SME.
    NotSupported,
    /// The CPU does not offer the state's streaming vector length (the length it gave instead),
    /// or the state's arrays do not match it.
    VectorLength(Option<usize>),
}

/// Sets the streaming vector length to `state.vector_length`, enters Streaming SVE mode with ZA
/// on (SMSTART), loads ZA, P0-P15 and Z0-Z31 from `state`, lets `event` happen, stores them
/// back, and leaves both (SMSTOP). FPSR (which SMSTART and SMSTOP reset) is restored; the
/// streaming vector length stays `state.vector_length`.
pub fn sme_state_round_trip(state: &SmeState, event: SmeEvent<'_>) -> Result<SmeRoundTrip, SmeError> {
    if !supported() {
        return Err(SmeError::NotSupported);
    }
    let length = state.vector_length;
    if !length.is_multiple_of(16)
        || set_streaming_vector_length(length / 16) != Some(length)
        || state.z.len() != 32 * length
        || state.p.len() != 2 * length
        || state.za.len() != length * length
    {
        return Err(SmeError::VectorLength(streaming_vector_length()));
    }
    let mut out = SmeState::zeros(length);
    let (mode, loaded, done, deadline, waits) = match event {
        SmeEvent::Nothing => (
            0u64,
            core::ptr::null(),
            core::ptr::null(),
            0,
            core::ptr::null_mut(),
        ),
        SmeEvent::Breakpoint => (1, core::ptr::null(), core::ptr::null(), 0, core::ptr::null_mut()),
        SmeEvent::InterruptWindow => (2, core::ptr::null(), core::ptr::null(), 0, core::ptr::null_mut()),
        SmeEvent::Descheduled(handoff) => (
            3,
            handoff.loaded.as_ptr().cast_const(),
            handoff.done.as_ptr().cast_const(),
            handoff.deadline,
            handoff.waits.as_ptr(),
        ),
        SmeEvent::SerialInput(wait) => (
            4,
            core::ptr::null(),
            core::ptr::null(),
            wait.flags_address(),
            core::ptr::null_mut(),
        ),
    };
    let saved_fpsr = fpsr();
    let svcr_loaded: u64;
    let svcr_after_event: u64;
    let svcr_after: u64;
    // SAFETY: SME is implemented, enabled and at streaming length `length`, so the ZA loops
    // (`length` rows of `length` bytes) and the Z and P loads and stores (MUL VL) stay inside
    // `state`'s and `out`'s vectors, whose sizes were checked (or made) above; in Streaming
    // SVE mode only SME, SVE, integer and system instructions run (no AdvSIMD); `loaded`,
    // `done` and `waits` are live atomics accessed with atomic instructions (Descheduled
    // only); SerialInput reads the PL011's flag register (aligned, identity mapped device
    // memory, no side effect); DAIF is restored after the Descheduled wait; Z0-Z31 (clobbering v0-v31) are
    // declared clobbered, P0-P15, FFR and ZA are used by no compiled code; the block ends with
    // SMSTOP (SM and ZA clear) and FPSR is restored after; the only exceptions taken while the
    // values are held are Breakpoint's BRK (resumed after by `trap_exceptions`, as the caller
    // must arrange) and InterruptWindow's IRQ, whose handler returns, and the vectors leave and
    // re-enter Streaming SVE mode around both.
    unsafe {
        asm!(
            ".arch_extension sme",
            ".arch_extension sve",
            "smstart",
            "mrs {svcr_loaded}, S3_3_C4_C2_2",
            "mov w12, #0",
            "mov {cursor}, {za_in}",
            "1: ldr za[w12, 0], [{cursor}]",
            "add {cursor}, {cursor}, {length}",
            "add w12, w12, #1",
            "cmp x12, {length}",
            "b.lo 1b",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "ldr p\\n, [{p_in}, #\\n, mul vl]",
            ".endr",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "ldr z\\n, [{z_in}, #\\n, mul vl]",
            ".endr",
            "cmp {mode}, #1",
            "b.lo 3f",
            "b.eq 4f",
            "cmp {mode}, #2",
            "b.eq 5f",
            "cmp {mode}, #4",
            "b.eq 9f",
            // Descheduled: IRQs masked, `cursor` counts the WFIs, `saved_daif` keeps DAIF.
            "mrs {saved_daif}, daif",
            "msr daifset, #2",
            "mov {cursor}, #0",
            "mov {scratch:w}, #1",
            "stlr {scratch:w}, [{loaded}]",
            "6: ldar {scratch:w}, [{done}]",
            "cbnz {scratch:w}, 7f",
            "isb",
            "mrs {scratch}, cntvct_el0",
            "cmp {scratch}, {deadline}",
            "b.hs 7f",
            "wfi",
            "add {cursor}, {cursor}, #1",
            "b 6b",
            "7: stlr {cursor}, [{waits}]",
            "msr daif, {saved_daif}",
            "b 3f",
            "4: brk #0x78",
            "b 3f",
            "5: msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            "b 3f",
            // SerialInput: the UART flag register read until RXFE clears.
            "9: ldr {scratch:w}, [{deadline}]",
            "tst {scratch:w}, #{receive_empty}",
            "b.ne 9b",
            "3: mrs {svcr_after_event}, S3_3_C4_C2_2",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "str z\\n, [{z_out}, #\\n, mul vl]",
            ".endr",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "str p\\n, [{p_out}, #\\n, mul vl]",
            ".endr",
            "mov w12, #0",
            "mov {cursor}, {za_out}",
            "8: str za[w12, 0], [{cursor}]",
            "add {cursor}, {cursor}, {length}",
            "add w12, w12, #1",
            "cmp x12, {length}",
            "b.lo 8b",
            "smstop",
            "mrs {svcr_after}, S3_3_C4_C2_2",
            z_in = in(reg) state.z.as_ptr(),
            p_in = in(reg) state.p.as_ptr(),
            za_in = in(reg) state.za.as_ptr(),
            z_out = in(reg) out.z.as_mut_ptr(),
            p_out = in(reg) out.p.as_mut_ptr(),
            za_out = in(reg) out.za.as_mut_ptr(),
            length = in(reg) length as u64,
            mode = in(reg) mode,
            loaded = in(reg) loaded,
            done = in(reg) done,
            deadline = in(reg) deadline,
            waits = in(reg) waits,
            cursor = out(reg) _,
            scratch = out(reg) _,
            receive_empty = const SerialInputWait::RECEIVE_EMPTY,
            saved_daif = out(reg) _,
            svcr_loaded = out(reg) svcr_loaded,
            svcr_after_event = out(reg) svcr_after_event,
            svcr_after = out(reg) svcr_after,
            out("x12") _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
            out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
            out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
        )
    };
    set_fpsr(saved_fpsr);
    Ok(SmeRoundTrip {
        state: out,
        svcr_loaded,
        svcr_after_event,
        svcr_after,
    })
}

/// An instruction [`try_probe`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// SMSTART SM (enter Streaming SVE mode).
    StartStreaming,
    /// SMSTART ZA (turn ZA on).
    EnableZa,
    /// RDSVL (read the streaming vector length).
    ReadStreamingVectorLength,
    /// MRS of SVCR.
    ReadSvcr,
    /// MRS of SMCR_EL1.
    ReadSmcr,
    /// ZERO {ZA}.
    ZeroZa,
    /// An AdvSIMD ADD (v31.16b): illegal in Streaming SVE mode without SMCR_EL1.FA64.
    AdvancedSimdAdd,
    /// An SVE ADD (z31.b): legal in Streaming SVE mode.
    SveAdd,
    /// FMOPA za0.s (an SME outer product into ZA): needs Streaming SVE mode and ZA.
    OuterProduct,
}

impl Probe {
    /// The instruction's assembly.
    pub fn assembly(self) -> &'static str {
        match self {
            Probe::StartStreaming => "smstart sm",
            Probe::EnableZa => "smstart za",
            Probe::ReadStreamingVectorLength => "rdsvl x9, #1",
            Probe::ReadSvcr => "mrs x9, svcr",
            Probe::ReadSmcr => "mrs x9, smcr_el1",
            Probe::ZeroZa => "zero {za}",
            Probe::AdvancedSimdAdd => "add v31.16b, v31.16b, v31.16b",
            Probe::SveAdd => "add z31.b, z31.b, z31.b",
            Probe::OuterProduct => "fmopa za0.s, p0/m, p0/m, z0.s, z0.s",
        }
    }

    fn index(self) -> u64 {
        self as u64
    }
}

/// The state [`try_probe`] runs a [`Probe`] in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// CPACR_EL1.SMEN = 0b00: SME trapped at EL1 and EL0 (SM and ZA clear).
    SmeDisabled = 0,
    /// Streaming SVE mode (SMSTART SM), ZA off.
    Streaming = 1,
    /// Neither Streaming SVE mode nor ZA (SMSTOP).
    ZaInactive = 2,
    /// ZA on (SMSTART ZA), not in Streaming SVE mode.
    ZaActive = 3,
    /// Streaming SVE mode and ZA (SMSTART).
    StreamingWithZa = 4,
}

/// Runs `setup`, then `probe`, then writes `cpacr` back to CPACR_EL1 and leaves Streaming SVE
/// mode and ZA (SMSTOP), under `catch_exception`; afterwards (the probe trapped or not)
/// CPACR_EL1 is `cpacr` again, SM and ZA are clear and FPSR is restored.
fn run_probe(setup: ProbeState, probe: Probe, cpacr: u64) -> Result<(), Exception> {
    let saved_fpsr = fpsr();
    let result = super::catch_exception(|| {
        // SAFETY: `setup` and `probe` are SME, SVE, AdvSIMD or system instructions whose only
        // effects are on PSTATE.SM/ZA, ZA, x9 and v31/z31 (declared clobbered); the block
        // then restores CPACR_EL1 (which the caller saved: enabling SME again) and SMSTOP
        // leaves Streaming SVE mode and ZA, so compiled code never runs in that mode. A trap
        // ends the closure: `catch_exception` resumes the caller, the vector having left
        // Streaming SVE mode (the dispatcher does not re-enter it for a recovery).
        unsafe {
            asm!(
                ".arch_extension sme",
                ".arch_extension sve",
                "cmp {setup}, #1",
                "b.lo 20f",
                "b.ne 21f",
                "smstart sm",
                "b 20f",
                "21: cmp {setup}, #2",
                "b.ne 22f",
                "smstop",
                "b 20f",
                "22: cmp {setup}, #3",
                "b.ne 23f",
                "smstart za",
                "b 20f",
                "23: smstart",
                "20: cmp {probe}, #0",
                "b.ne 10f",
                "smstart sm",
                "b 19f",
                "10: cmp {probe}, #1",
                "b.ne 11f",
                "smstart za",
                "b 19f",
                "11: cmp {probe}, #2",
                "b.ne 12f",
                "rdsvl x9, #1",
                "b 19f",
                "12: cmp {probe}, #3",
                "b.ne 13f",
                "mrs x9, S3_3_C4_C2_2",
                "b 19f",
                "13: cmp {probe}, #4",
                "b.ne 14f",
                "mrs x9, S3_0_C1_C2_6",
                "b 19f",
                "14: cmp {probe}, #5",
                "b.ne 15f",
                "zero {{za}}",
                "b 19f",
                "15: cmp {probe}, #6",
                "b.ne 16f",
                "add v31.16b, v31.16b, v31.16b",
                "b 19f",
                "16: cmp {probe}, #7",
                "b.ne 17f",
                "add z31.b, z31.b, z31.b",
                "b 19f",
                "17: fmopa za0.s, p0/m, p0/m, z0.s, z0.s",
                "19: msr cpacr_el1, {cpacr}",
                "isb",
                "smstop",
                setup = in(reg) setup as u64,
                probe = in(reg) probe.index(),
                cpacr = in(reg) cpacr,
                out("x9") _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
                out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
                out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
                out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                options(nostack),
            )
        }
    });
    CPACR_EL1.set(cpacr);
    isb();
    // SAFETY: SME is enabled again (CPACR_EL1 restored); SMSTOP only clears PSTATE.SM and ZA
    // (a probe that trapped may have left ZA on).
    unsafe { asm!(".arch_extension sme", "smstop", out("v0") _, options(nomem, nostack, preserves_flags)) };
    set_fpsr(saved_fpsr);
    result
}

/// Runs `probe` in `state` under `catch_exception` and returns the exception it raised, or
/// `Ok` when it ran: SME trapped ([`ProbeState::SmeDisabled`], CPACR_EL1.SMEN = 0b00, restored
/// after), in Streaming SVE mode, with ZA off or on. SM and ZA end clear (whatever ZA held is
/// lost). `None` without SME.
pub fn try_probe(state: ProbeState, probe: Probe) -> Option<Result<(), Exception>> {
    if !supported() {
        return None;
    }
    let cpacr = CPACR_EL1.get();
    if state == ProbeState::SmeDisabled {
        CPACR_EL1.set(cpacr & !CPACR_SMEN);
        isb();
    }
    Some(run_probe(state, probe, cpacr))
}
