//! SVE (the Scalable Vector Extension): whether the CPU has it (ID_AA64PFR0_EL1.SVE,
//! ID_AA64ZFR0_EL1), the vector length (ZCR_EL1.LEN, RDVL) and the whole SVE register file
//! (Z0-Z31, P0-P15, FFR, with FPCR and FPSR) loaded, held and read back for state checks.
//!
//! The boot code enables SVE where the CPU has it (CPACR_EL1.ZEN, and CPTR_EL2.TZ clear with
//! ZCR_EL2.LEN = 0xf when entered at EL2) and sets ZCR_EL1.LEN = 0xf, the largest length. The
//! runtime itself never uses SVE, but its handlers use v0-v31 (and writing a V register zeroes
//! the rest of its Z register): so the exception vectors keep Z0-Z31, P0-P15 and FFR of the
//! interrupted code (the kernel's or EL0's, not a handler's) in a per-CPU area and load them
//! back on return, and SVE values survive exceptions and interrupts ([`Event::Breakpoint`],
//! [`Event::InterruptWindow`]). A handler must not change the vector length.

use core::arch::asm;

use aarch64_cpu::registers::{ID_AA64PFR0_EL1, Readable};

use core::sync::atomic::AtomicU32;

use super::console::SerialInputWait;
use super::instructions::Handoff;
use crate::mmio::DeviceWindow;

/// ID_AA64PFR0_EL1.SVE (bits 35:32): nonzero when SVE is implemented.
pub const ID_AA64PFR0_SVE_SHIFT: u32 = 32;
/// The largest vector length the architecture allows, in bytes (2048 bits).
pub const MAX_VECTOR_BYTES: usize = 256;
/// ZCR_ELx.LEN (bits 3:0): the requested vector length, in quadwords minus one.
pub const ZCR_LEN: u64 = 0xf;

/// ID_AA64ZFR0_EL1 fields: which SVE instructions beyond the base set are implemented.
pub mod zfr0 {
    /// SVEver (bits 3:0): 0 SVE, 1 SVE2, 2 SVE2.1.
    pub fn version(zfr0: u64) -> u64 {
        zfr0 & 0xf
    }

    /// AES (bits 7:4): 1 AESE/AESD..., 2 also PMULLB/PMULLT on 64-bit elements.
    pub fn aes(zfr0: u64) -> u64 {
        (zfr0 >> 4) & 0xf
    }

    /// BitPerm (bits 19:16).
    pub fn bit_permute(zfr0: u64) -> u64 {
        (zfr0 >> 16) & 0xf
    }

    /// BF16 (bits 23:20).
    pub fn bfloat16(zfr0: u64) -> u64 {
        (zfr0 >> 20) & 0xf
    }

    /// SHA3 (bits 35:32).
    pub fn sha3(zfr0: u64) -> u64 {
        (zfr0 >> 32) & 0xf
    }

    /// SM4 (bits 43:40).
    pub fn sm4(zfr0: u64) -> u64 {
        (zfr0 >> 40) & 0xf
    }

    /// I8MM (bits 47:44).
    pub fn int8_matrix_multiply(zfr0: u64) -> u64 {
        (zfr0 >> 44) & 0xf
    }

    /// F32MM (bits 55:52).
    pub fn float32_matrix_multiply(zfr0: u64) -> u64 {
        (zfr0 >> 52) & 0xf
    }

    /// F64MM (bits 59:56).
    pub fn float64_matrix_multiply(zfr0: u64) -> u64 {
        (zfr0 >> 56) & 0xf
    }
}

/// Whether the CPU implements SVE (ID_AA64PFR0_EL1.SVE nonzero).
pub fn supported() -> bool {
    (ID_AA64PFR0_EL1.get() >> ID_AA64PFR0_SVE_SHIFT) & 0xf != 0
}

/// ID_AA64ZFR0_EL1 (RAZ without SVE: the register is in the ID space either way).
pub fn id_aa64zfr0_el1() -> u64 {
    let value: u64;
    // SAFETY: an ID register read, defined at EL1 whether or not SVE is implemented.
    unsafe {
        asm!("mrs {value}, S3_0_C0_C4_4", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// ZCR_EL1, or `None` without SVE (the register is then UNDEFINED).
pub fn zcr_el1() -> Option<u64> {
    if !supported() {
        return None;
    }
    let value: u64;
    // SAFETY: SVE is implemented and the boot code set CPACR_EL1.ZEN, so EL1 reads ZCR_EL1.
    unsafe {
        asm!("mrs {value}, S3_0_C1_C2_0", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    Some(value)
}

/// The current vector length in bytes (RDVL), or `None` without SVE.
pub fn vector_length() -> Option<usize> {
    if !supported() {
        return None;
    }
    let value: u64;
    // SAFETY: SVE is implemented and enabled; RDVL only reads the vector length.
    unsafe {
        asm!(".arch_extension sve", "rdvl {value}, #1", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    Some(value as usize)
}

/// Writes ZCR_EL1.LEN = `quadwords` - 1 (other fields 0) and returns the vector length in bytes
/// the CPU then runs with: the largest it offers that is at most `quadwords` × 16 bytes. `None`
/// without SVE or for `quadwords` outside 1..=16. The runtime never keeps SVE values, so a
/// change of length (which makes the Z and P registers' contents UNKNOWN) cannot break it.
pub fn set_vector_length(quadwords: usize) -> Option<usize> {
    if !supported() || !(1..=16).contains(&quadwords) {
        return None;
    }
    // SAFETY: SVE is implemented and enabled; ZCR_EL1 only sets the vector length of SVE
    // instructions, which the runtime and compiled Rust code never use.
    unsafe {
        asm!(
            "msr S3_0_C1_C2_0, {value}",
            "isb",
            value = in(reg) (quadwords as u64 - 1) & ZCR_LEN,
            options(nomem, nostack, preserves_flags)
        )
    };
    vector_length()
}

/// The vector lengths (bytes) the CPU offers, ascending: the distinct lengths ZCR_EL1.LEN =
/// 0..=15 give. ZCR_EL1 is left with LEN = 0xf. Empty without SVE.
pub fn offered_vector_lengths() -> VectorLengths {
    VectorLengths::offered(set_vector_length)
}

/// A set of vector lengths in bytes (at most 16, ascending as found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorLengths {
    lengths: [usize; 16],
    count: usize,
}

impl VectorLengths {
    /// No lengths.
    pub(crate) fn empty() -> VectorLengths {
        VectorLengths {
            lengths: [0; 16],
            count: 0,
        }
    }

    /// The distinct lengths `set(quadwords)` gives for `quadwords` = 1..=16 (a LEN field of
    /// 0..=15), which is then left at 16 (LEN 0xf).
    pub(crate) fn offered(mut set: impl FnMut(usize) -> Option<usize>) -> VectorLengths {
        let mut lengths = VectorLengths::empty();
        for quadwords in 1..=16 {
            if let Some(length) = set(quadwords) {
                lengths.insert(length);
            }
        }
        set(16);
        lengths
    }

    /// Whether the lengths are exactly those of `bits`, a comma-separated list of lengths in
    /// bits (a test's `sve-lengths=` or `sme-lengths=`), in any order.
    pub fn are_bits(&self, bits: &str) -> bool {
        let mut count = 0;
        let mut listed = true;
        for word in bits.split(',') {
            count += 1;
            listed &= word
                .parse::<usize>()
                .is_ok_and(|length_bits| self.as_slice().contains(&(length_bits / 8)));
        }
        listed && count == self.count
    }

    /// Adds `length` unless it is there already (or 16 are).
    pub(crate) fn insert(&mut self, length: usize) {
        if !self.as_slice().contains(&length) && self.count < self.lengths.len() {
            self.lengths[self.count] = length;
            self.count += 1;
        }
    }

    /// The lengths, in bytes.
    pub fn as_slice(&self) -> &[usize] {
        &self.lengths[..self.count]
    }
}

/// One register of the SVE state (what [`SveState::first_difference`] names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SveRegister {
    /// Z0-Z31.
    Z(u8),
    /// P0-P15.
    P(u8),
    /// The first-fault register.
    Ffr,
    /// FPCR (the bits `fpcr_mask` covers).
    Fpcr,
    /// FPSR (the bits `fpsr_mask` covers).
    Fpsr,
}

/// The SVE register file at one vector length: Z0-Z31 and P0-P15 packed as `STR` (vector and
/// predicate, `MUL VL`) stores them, FFR, FPCR and FPSR. Room for the largest length.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SveState {
    /// The vector length in bytes the state is for.
    pub vector_length: usize,
    /// Z0..Z31, `vector_length` bytes each.
    pub z: [u8; 32 * MAX_VECTOR_BYTES],
    /// P0..P15, `vector_length / 8` bytes each.
    pub p: [u8; 16 * MAX_VECTOR_BYTES / 8],
    /// FFR, `vector_length / 8` bytes.
    pub ffr: [u8; MAX_VECTOR_BYTES / 8],
    /// FPCR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
}

impl SveState {
    /// A state for `vector_length` bytes whose Z and P bytes are distinct functions of `seed`
    /// and of their position (registers differ from each other and from other seeds), and whose
    /// FFR is a monotonic predicate (WRFFR of any other value leaves FFR UNPREDICTABLE): its
    /// lowest `1 + seed % (8 × vector_length / 8)` bits set.
    pub fn pattern(seed: u8, vector_length: usize, fpcr: u64, fpsr: u64) -> SveState {
        let byte = |index: usize, salt: u8| {
            ((index as u32).wrapping_mul(7) ^ ((index >> 8) as u32).wrapping_mul(13)) as u8 ^ seed ^ salt
        };
        let predicate_bytes = vector_length / 8;
        let ffr_bits = 1 + seed as usize % (predicate_bytes * 8).max(1);
        SveState {
            vector_length,
            z: core::array::from_fn(|index| {
                if index < 32 * vector_length {
                    byte(index, 0)
                } else {
                    0
                }
            }),
            p: core::array::from_fn(|index| {
                if index < 16 * predicate_bytes {
                    byte(index, 0x5a)
                } else {
                    0
                }
            }),
            ffr: core::array::from_fn(|index| {
                let low = index * 8;
                if low + 8 <= ffr_bits {
                    0xff
                } else if low < ffr_bits {
                    (1u8 << (ffr_bits - low)) - 1
                } else {
                    0
                }
            }),
            fpcr,
            fpsr,
        }
    }

    /// The first register that differs from `other`'s (FPCR and FPSR compared under the
    /// masks), or `None`.
    pub fn first_difference(&self, other: &SveState, fpcr_mask: u64, fpsr_mask: u64) -> Option<SveRegister> {
        let length = self.vector_length;
        let predicate = length / 8;
        if let Some(byte) = (0..32 * length).position(|index| self.z[index] != other.z[index]) {
            return Some(SveRegister::Z((byte / length) as u8));
        }
        if let Some(byte) = (0..16 * predicate).position(|index| self.p[index] != other.p[index]) {
            return Some(SveRegister::P((byte / predicate) as u8));
        }
        if self.ffr[..predicate] != other.ffr[..predicate] {
            return Some(SveRegister::Ffr);
        }
        if self.fpcr & fpcr_mask != other.fpcr & fpcr_mask {
            return Some(SveRegister::Fpcr);
        }
        if self.fpsr & fpsr_mask != other.fpsr & fpsr_mask {
            return Some(SveRegister::Fpsr);
        }
        None
    }

    /// The first 16 bytes of Z register `register` as two little-endian words (high, low).
    pub fn z_low_quadword(&self, register: usize) -> (u64, u64) {
        let start = register * self.vector_length;
        let word =
            |offset: usize| u64::from_le_bytes(core::array::from_fn(|index| self.z[start + offset + index]));
        (word(8), word(0))
    }
}

/// What [`sve_state_round_trip`] does while the registers hold the state.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Nothing: the registers are stored back at once.
    Nothing,
    /// `brk #0x77`, which `trap_exceptions` records and resumes after: the runtime's exception
    /// entry and return run while the registers hold the state.
    Breakpoint,
    /// A pending IRQ, taken while IRQs are briefly unmasked (then masked again): the
    /// runtime's IRQ path (and the handler, which may use v0-v31) runs.
    InterruptWindow,
    /// The wait of [`Handoff`]: WFIs with IRQs masked, no exception taken.
    Descheduled(Handoff<'a>),
    /// One 32-bit read of `window` at `offset` (aligned, inside the window), its value stored to
    /// `value`: with a register the VMM emulates, the vCPU leaves the guest for the VMM's
    /// userspace (under KVM: KVM_RUN returns, the vCPU is put and its FP/SVE state saved).
    DeviceRead {
        /// The mapped device registers.
        window: &'a DeviceWindow,
        /// The register's offset in the window.
        offset: u64,
        /// Receives the value read.
        value: &'a AtomicU32,
    },
    /// A wait, no exception taken, until the console UART holds a byte from the host (left in
    /// its receive FIFO): the registers are held across a live migration whose answer is that
    /// byte ([`crate::migration::migrate_holding`]).
    SerialInput(SerialInputWait),
}

/// Why [`sve_state_round_trip`] did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SveError {
    /// The CPU has no SVE.
    NotSupported,
    /// The CPU does not offer the state's vector length (the length it gave instead).
    VectorLength(Option<usize>),
    /// A [`Event::DeviceRead`] offset that is unaligned or outside its window.
    DeviceOffset(u64),
}

/// Sets the vector length to `state.vector_length`, loads FFR, P0-P15, Z0-Z31, FPCR and FPSR
/// from `state`, lets `event` happen, and returns the registers as they are afterwards (FPCR
/// and FPSR are then restored; the vector length stays `state.vector_length`).
pub fn sve_state_round_trip(state: &SveState, event: Event<'_>) -> Result<SveState, SveError> {
    if !supported() {
        return Err(SveError::NotSupported);
    }
    let length = state.vector_length;
    if !length.is_multiple_of(16) || set_vector_length(length / 16) != Some(length) {
        return Err(SveError::VectorLength(vector_length()));
    }
    let mut out = SveState {
        vector_length: length,
        z: [0; 32 * MAX_VECTOR_BYTES],
        p: [0; 16 * MAX_VECTOR_BYTES / 8],
        ffr: [0; MAX_VECTOR_BYTES / 8],
        fpcr: 0,
        fpsr: 0,
    };
    // `deadline` carries the device register's address and `waits` the value's for DeviceRead.
    let (wait, loaded, done, deadline, waits) = match event {
        Event::Breakpoint => (
            3u64,
            core::ptr::null(),
            core::ptr::null(),
            0,
            core::ptr::null_mut(),
        ),
        Event::InterruptWindow => (
            4u64,
            core::ptr::null(),
            core::ptr::null(),
            0,
            core::ptr::null_mut(),
        ),
        Event::Nothing => (
            0u64,
            core::ptr::null(),
            core::ptr::null(),
            0,
            core::ptr::null_mut(),
        ),
        Event::Descheduled(handoff) => (
            1,
            handoff.loaded.as_ptr().cast_const(),
            handoff.done.as_ptr().cast_const(),
            handoff.deadline,
            handoff.waits.as_ptr().cast::<u8>(),
        ),
        Event::SerialInput(wait) => (
            5,
            core::ptr::null(),
            core::ptr::null(),
            wait.flags_address(),
            core::ptr::null_mut(),
        ),
        Event::DeviceRead {
            window,
            offset,
            value,
        } => {
            let register = window
                .window(offset, 4)
                .filter(|register| register.base().is_multiple_of(4))
                .ok_or(SveError::DeviceOffset(offset))?;
            (
                2,
                core::ptr::null(),
                core::ptr::null(),
                register.base(),
                value.as_ptr().cast::<u8>(),
            )
        }
    };
    let fpcr_after: u64;
    let fpsr_after: u64;
    // SAFETY: SVE is implemented, enabled and at `length`, so the loads and stores (MUL VL)
    // stay inside `state`'s and `out`'s arrays (32 × length, 16 × length / 8 and length / 8
    // bytes, each within its array's size); `loaded`, `done` and `waits` are live atomics
    // accessed with atomic instructions (Descheduled only); SerialInput reads the PL011's
    // flag register (aligned, identity mapped device memory, no side effect); DeviceRead loads an aligned word
    // inside a mapped device window (as `DeviceWindow::read_u32` does) and stores it to a live
    // AtomicU32 (an aligned single-copy atomic store); Z0-Z31 (clobbering v0-v31) are
    // declared clobbered, P0-P15 and FFR are used by no compiled code; FPCR, FPSR and DAIF are
    // restored; the only exceptions taken while the values are held are Breakpoint's BRK
    // (resumed after by `trap_exceptions`, as the caller must arrange) and InterruptWindow's
    // IRQ, whose handler returns; the vectors keep Z, P and FFR across both.
    unsafe {
        asm!(
            ".arch_extension sve",
            "mrs {saved_fpcr}, fpcr",
            "mrs {saved_fpsr}, fpsr",
            "msr fpcr, {fpcr_pattern}",
            "msr fpsr, {fpsr_pattern}",
            "ldr p0, [{ffr_in}]",
            "wrffr p0.b",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "ldr p\\n, [{p_in}, #\\n, mul vl]",
            ".endr",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "ldr z\\n, [{z_in}, #\\n, mul vl]",
            ".endr",
            "cbz {wait}, 3f",
            "cmp {wait}, #3",
            "b.eq 6f",
            "cmp {wait}, #4",
            "b.eq 7f",
            "cmp {wait}, #5",
            "b.eq 9f",
            "cmp {wait}, #2",
            "b.ne 5f",
            // DeviceRead: one 32-bit load of the register, its value stored.
            "ldr {scratch:w}, [{deadline}]",
            "str {scratch:w}, [{waits}]",
            "b 3f",
            // SerialInput: the UART flag register read until RXFE clears.
            "9: ldr {scratch:w}, [{deadline}]",
            "tst {scratch:w}, #{receive_empty}",
            "b.ne 9b",
            "b 3f",
            // Breakpoint: resumed after by `trap_exceptions`.
            "6: brk #0x77",
            "b 3f",
            // InterruptWindow: IRQs unmasked for one ISB, masked again.
            "7: msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            "b 3f",
            // Descheduled: IRQs masked, `wait` counts the WFIs, `saved_daif` keeps DAIF.
            "5: mrs {saved_daif}, daif",
            "msr daifset, #2",
            "mov {wait}, #0",
            "mov {scratch:w}, #1",
            "stlr {scratch:w}, [{loaded}]",
            "1: ldar {scratch:w}, [{done}]",
            "cbnz {scratch:w}, 2f",
            "isb",
            "mrs {scratch}, cntvct_el0",
            "cmp {scratch}, {deadline}",
            "b.hs 2f",
            "wfi",
            "add {wait}, {wait}, #1",
            "b 1b",
            "2: stlr {wait}, [{waits}]",
            "3:",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
            "str z\\n, [{z_out}, #\\n, mul vl]",
            ".endr",
            ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            "str p\\n, [{p_out}, #\\n, mul vl]",
            ".endr",
            "rdffr p0.b",
            "str p0, [{ffr_out}]",
            "cbz {loaded}, 4f",
            "msr daif, {saved_daif}",
            "4: mrs {fpcr}, fpcr",
            "mrs {fpsr}, fpsr",
            "msr fpcr, {saved_fpcr}",
            "msr fpsr, {saved_fpsr}",
            saved_fpcr = out(reg) _,
            saved_fpsr = out(reg) _,
            saved_daif = out(reg) _,
            fpcr_pattern = in(reg) state.fpcr,
            fpsr_pattern = in(reg) state.fpsr,
            z_in = in(reg) state.z.as_ptr(),
            p_in = in(reg) state.p.as_ptr(),
            ffr_in = in(reg) state.ffr.as_ptr(),
            z_out = in(reg) out.z.as_mut_ptr(),
            p_out = in(reg) out.p.as_mut_ptr(),
            ffr_out = in(reg) out.ffr.as_mut_ptr(),
            wait = inout(reg) wait => _,
            loaded = in(reg) loaded,
            done = in(reg) done,
            deadline = in(reg) deadline,
            waits = in(reg) waits,
            scratch = out(reg) _,
            receive_empty = const SerialInputWait::RECEIVE_EMPTY,
            fpcr = out(reg) fpcr_after,
            fpsr = out(reg) fpsr_after,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
            out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
            out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
        )
    };
    out.fpcr = fpcr_after;
    out.fpsr = fpsr_after;
    Ok(out)
}
