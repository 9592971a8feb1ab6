//! aarch64 self-hosted debug (Arm ARM D2, "AArch64 Self-hosted Debug"): the breakpoint and
//! watchpoint register pairs by index, MDSCR_EL1, the OS lock, a recorder of debug exceptions,
//! and the instruction sequences that kvm-unit-tests' arm/debug.c runs under breakpoints,
//! watchpoints and single step.
//!
//! Why the register writes are safe: the runtime runs EL1 code with PSTATE.D set (boot masks
//! DAIF, exception entry sets D, `catch_exception` restores the DAIF of its call), so a
//! breakpoint, watchpoint or software step exception from EL1 can only be taken inside the
//! assembly sequences below that unmask D ([`DebugExceptions::Unmasked`], the step sequence),
//! which mask it again before they return. From EL0 (`run_in_user_mode`) D does not mask them: a breakpoint or watchpoint enabled for
//! EL0 (PMC/PAC bit 1), or MDSCR_EL1.SS, ends the user-mode run with its exception, as any
//! other exception does. Only [`DebugFrame::set_return_address`] can break the runtime, and it
//! is `unsafe`.
//!
//! ```ignore
//! use vmunit::arch::debug::{self, DebugExceptions, Resume, mdscr};
//! debug::reset_debug_state();
//! debug::set_breakpoint(0, debug::unmask_sequence_addresses()[0]);
//! debug::set_mdscr(mdscr::KDE | mdscr::MDE);
//! let (_, seen) = debug::record_debug_exceptions(Resume::MaskDebugExceptions, || {
//!     debug::run_unmask_sequence(DebugExceptions::Unmasked)
//! });
//! ```

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;

use aarch64_cpu::registers::{ID_AA64DFR0_EL1, Readable};

use super::exceptions::{DebugFrame, Exception, ExceptionClass, catch_exception, set_debug_handler};

/// MDSCR_EL1 bits (Arm ARM, D24 register descriptions).
pub mod mdscr {
    /// SS: software step enable.
    pub const SS: u64 = 1 << 0;
    /// TDCC: trap EL0 accesses to the debug communication channel.
    pub const TDCC: u64 = 1 << 12;
    /// KDE: local (kernel) debug enable, debug exceptions taken to the level they come from.
    pub const KDE: u64 = 1 << 13;
    /// MDE: monitor debug events, the enable of breakpoints and watchpoints.
    pub const MDE: u64 = 1 << 15;
}

/// OSLSR_EL1 bits (Arm ARM, D24 register descriptions).
pub mod oslsr {
    /// OSLK: the OS lock is locked.
    pub const OSLK: u64 = 1 << 1;
    /// OSLM (bits 3 and 0): 0b10, "OS lock implemented", is bit 3 set and bit 0 clear.
    pub const OSLM_MASK: u64 = 0b1001;
    /// OSLM = 0b10: the OS lock is implemented (the only value Armv8-A permits).
    pub const OSLM_IMPLEMENTED: u64 = 0b1000;
}

/// `DBGBCR<n>_EL1` fields (Arm ARM, D24 register descriptions).
pub mod dbgbcr {
    /// E: the breakpoint is enabled.
    pub const E: u64 = 1 << 0;
    /// PMC = 0b01 (bits 2:1), with HMC and SSC 0: match at EL1.
    pub const PMC_EL1: u64 = 0b01 << 1;
    /// PMC = 0b10: match at EL0.
    pub const PMC_EL0: u64 = 0b10 << 1;
    /// BAS = 0b1111 (bits 8:5): the whole A64 instruction, the one value for AArch64 code.
    pub const BAS_A64: u64 = 0b1111 << 5;
    /// BT (bits 23:20) = 0b0000: unlinked instruction address match (the value 0 selects it).
    pub const BT_UNLINKED_ADDRESS: u64 = 0;
}

/// `DBGWCR<n>_EL1` fields (Arm ARM, D24 register descriptions).
pub mod dbgwcr {
    /// E: the watchpoint is enabled.
    pub const E: u64 = 1 << 0;
    /// PAC = 0b01 (bits 2:1), with HMC and SSC 0: match accesses made at EL1.
    pub const PAC_EL1: u64 = 0b01 << 1;
    /// PAC = 0b10: match accesses made at EL0 (or by LDTR/STTR at EL1).
    pub const PAC_EL0: u64 = 0b10 << 1;
    /// LSC = 0b01 (bits 4:3): match loads.
    pub const LSC_LOAD: u64 = 0b01 << 3;
    /// LSC = 0b10: match stores.
    pub const LSC_STORE: u64 = 0b10 << 3;

    /// BAS (bits 12:5): which bytes of the doubleword at DBGWVR are watched (bit i: byte i).
    pub const fn byte_select(bytes: u8) -> u64 {
        (bytes as u64) << 5
    }
}

/// ESR_EL1.IL (bit 25): a 32-bit instruction; set in the ESR of every breakpoint, watchpoint and
/// software step exception.
pub const ESR_IL: u64 = 1 << 25;

/// ESR_EL1.ISS bits of debug exceptions.
pub mod iss {
    /// The fault status code of a breakpoint, watchpoint or step: "debug exception" (0b100010).
    pub const DEBUG_FAULT_STATUS: u64 = 0b10_0010;
    /// The fault status field (bits 5:0).
    pub const FAULT_STATUS_MASK: u64 = 0x3f;
    /// WnR (bit 6) of a watchpoint: the access was a write.
    pub const WRITE_NOT_READ: u64 = 1 << 6;
    /// CM (bit 8) of a watchpoint: a cache maintenance instruction.
    pub const CACHE_MAINTENANCE: u64 = 1 << 8;
    /// ISV (bit 24) of a software step: EX is valid (an instruction was stepped).
    pub const STEP_ISV: u64 = 1 << 24;
    /// EX (bit 6) of a software step: the stepped instruction was a load-exclusive.
    pub const STEP_EXCLUSIVE: u64 = 1 << 6;
}

/// ID_AA64DFR0_EL1.DebugVer (bits 3:0): 6 is Armv8.0 debug, higher values later versions.
pub fn debug_version() -> u64 {
    ID_AA64DFR0_EL1.get() & 0xf
}

/// How many breakpoint pairs (DBGBCR/DBGBVR) there are: ID_AA64DFR0_EL1.BRPs (bits 15:12) + 1.
pub fn breakpoint_count() -> usize {
    ((ID_AA64DFR0_EL1.get() >> 12) & 0xf) as usize + 1
}

/// How many watchpoint pairs (DBGWCR/DBGWVR) there are: ID_AA64DFR0_EL1.WRPs (bits 23:20) + 1.
pub fn watchpoint_count() -> usize {
    ((ID_AA64DFR0_EL1.get() >> 20) & 0xf) as usize + 1
}

/// How many of the breakpoints are context-aware: ID_AA64DFR0_EL1.CTX_CMPs (bits 31:28) + 1.
pub fn context_breakpoint_count() -> usize {
    ((ID_AA64DFR0_EL1.get() >> 28) & 0xf) as usize + 1
}

/// Expands to a match of `$index` (0-15) that runs `$one!("<n>", arguments...)`.
macro_rules! by_index {
    ($index:expr, $one:ident!($($arguments:tt)*)) => {
        match $index {
            0 => $one!("0", $($arguments)*),
            1 => $one!("1", $($arguments)*),
            2 => $one!("2", $($arguments)*),
            3 => $one!("3", $($arguments)*),
            4 => $one!("4", $($arguments)*),
            5 => $one!("5", $($arguments)*),
            6 => $one!("6", $($arguments)*),
            7 => $one!("7", $($arguments)*),
            8 => $one!("8", $($arguments)*),
            9 => $one!("9", $($arguments)*),
            10 => $one!("10", $($arguments)*),
            11 => $one!("11", $($arguments)*),
            12 => $one!("12", $($arguments)*),
            13 => $one!("13", $($arguments)*),
            14 => $one!("14", $($arguments)*),
            15 => $one!("15", $($arguments)*),
            index => unreachable!("there is no debug register pair {index}"),
        }
    };
}

/// MRS of `<prefix><n>_el1`.
macro_rules! read_one {
    ($n:literal, $prefix:literal) => {{
        let value: u64;
        // SAFETY: reading a debug register has no side effect; the caller checked the index
        // against ID_AA64DFR0_EL1, so the register exists.
        unsafe {
            asm!(concat!("mrs {}, ", $prefix, $n, "_el1"), out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

/// MSR of `<prefix><n>_el1`, then ISB.
macro_rules! write_one {
    ($n:literal, $prefix:literal, $value:expr) => {{
        // SAFETY: the register exists (the caller checked the index); a breakpoint or
        // watchpoint it enables fires only where debug exceptions are unmasked (see the module
        // documentation), and then goes through the usual dispatch.
        unsafe { asm!(concat!("msr ", $prefix, $n, "_el1, {}"), "isb", in(reg) $value, options(nostack, preserves_flags)) };
    }};
}

fn check_breakpoint(index: usize) {
    let count = breakpoint_count();
    assert!(
        index < count,
        "breakpoint {index} does not exist: there are {count}"
    );
}

fn check_watchpoint(index: usize) {
    let count = watchpoint_count();
    assert!(
        index < count,
        "watchpoint {index} does not exist: there are {count}"
    );
}

/// `DBGBCR<index>_EL1`.
///
/// # Panics
/// For an index of no implemented breakpoint.
pub fn dbgbcr(index: usize) -> u64 {
    check_breakpoint(index);
    by_index!(index, read_one!("dbgbcr"))
}

/// `DBGBVR<index>_EL1`.
///
/// # Panics
/// For an index of no implemented breakpoint.
pub fn dbgbvr(index: usize) -> u64 {
    check_breakpoint(index);
    by_index!(index, read_one!("dbgbvr"))
}

/// `DBGWCR<index>_EL1`.
///
/// # Panics
/// For an index of no implemented watchpoint.
pub fn dbgwcr(index: usize) -> u64 {
    check_watchpoint(index);
    by_index!(index, read_one!("dbgwcr"))
}

/// `DBGWVR<index>_EL1`.
///
/// # Panics
/// For an index of no implemented watchpoint.
pub fn dbgwvr(index: usize) -> u64 {
    check_watchpoint(index);
    by_index!(index, read_one!("dbgwvr"))
}

/// Writes `DBGBCR<index>_EL1` (then ISB).
///
/// # Panics
/// For an index of no implemented breakpoint.
pub fn set_dbgbcr(index: usize, value: u64) {
    check_breakpoint(index);
    by_index!(index, write_one!("dbgbcr", value))
}

/// Writes `DBGBVR<index>_EL1` (then ISB).
///
/// # Panics
/// For an index of no implemented breakpoint.
pub fn set_dbgbvr(index: usize, value: u64) {
    check_breakpoint(index);
    by_index!(index, write_one!("dbgbvr", value))
}

/// Writes `DBGWCR<index>_EL1` (then ISB).
///
/// # Panics
/// For an index of no implemented watchpoint.
pub fn set_dbgwcr(index: usize, value: u64) {
    check_watchpoint(index);
    by_index!(index, write_one!("dbgwcr", value))
}

/// Writes `DBGWVR<index>_EL1` (then ISB).
///
/// # Panics
/// For an index of no implemented watchpoint.
pub fn set_dbgwvr(index: usize, value: u64) {
    check_watchpoint(index);
    by_index!(index, write_one!("dbgwvr", value))
}

/// MDSCR_EL1.
pub fn mdscr() -> u64 {
    let value: u64;
    // SAFETY: reading MDSCR_EL1 at EL1 has no side effect.
    unsafe { asm!("mrs {}, mdscr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes MDSCR_EL1 (then ISB): [`mdscr::MDE`] enables breakpoints and watchpoints,
/// [`mdscr::KDE`] debug exceptions at EL1 (where PSTATE.D is clear), [`mdscr::SS`] software step.
pub fn set_mdscr(value: u64) {
    // SAFETY: see the module documentation: the debug exceptions this enables come only where
    // PSTATE.D is clear (the sequences below) or from EL0, whose runs catch them.
    unsafe { asm!("msr mdscr_el1, {}", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// OSLSR_EL1, the OS lock status.
pub fn oslsr() -> u64 {
    let value: u64;
    // SAFETY: reading OSLSR_EL1 at EL1 has no side effect.
    unsafe { asm!("mrs {}, oslsr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Locks (`true`) or unlocks the OS lock through OSLAR_EL1 (then ISB). While it is locked, no
/// breakpoint, watchpoint or software step exception is generated (Arm ARM pseudocode
/// `AArch64.GenerateDebugExceptionsFrom`).
pub fn set_os_lock(locked: bool) {
    // SAFETY: the OS lock only disables debug exceptions.
    unsafe { asm!("msr oslar_el1, {}", "isb", in(reg) u64::from(locked), options(nostack, preserves_flags)) };
}

/// Clears the OS double lock (OSDLR_EL1.DLK; RAZ/WI without FEAT_DoubleLock, then ISB).
pub fn clear_os_double_lock() {
    // SAFETY: clearing the double lock only lets debug exceptions be generated.
    unsafe { asm!("msr osdlr_el1, xzr", "isb", options(nostack, preserves_flags)) };
}

/// kvm-unit-tests' `reset_debug_state`: the OS double lock and OS lock cleared, MDSCR_EL1 0,
/// every breakpoint and watchpoint pair 0.
pub fn reset_debug_state() {
    clear_os_double_lock();
    set_os_lock(false);
    set_mdscr(0);
    for index in 0..breakpoint_count() {
        set_dbgbvr(index, 0);
        set_dbgbcr(index, 0);
    }
    for index in 0..watchpoint_count() {
        set_dbgwvr(index, 0);
        set_dbgwcr(index, 0);
    }
}

/// The exception level a breakpoint or watchpoint matches at (DBGBCR.PMC, DBGWCR.PAC, with HMC
/// and SSC 0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MatchLevel {
    /// EL1 only (0b01).
    El1,
    /// EL0 only (0b10).
    El0,
}

impl MatchLevel {
    /// The PMC/PAC field (bits 2:1, the same in both registers).
    const fn field(self) -> u64 {
        match self {
            MatchLevel::El1 => dbgbcr::PMC_EL1,
            MatchLevel::El0 => dbgbcr::PMC_EL0,
        }
    }
}

/// Makes breakpoint `index` an unlinked EL1 instruction breakpoint on `address` (4-aligned):
/// DBGBVR = address, DBGBCR = E | PMC EL1 | BAS 0b1111.
///
/// # Panics
/// For an index of no implemented breakpoint, or a misaligned address.
pub fn set_breakpoint(index: usize, address: u64) {
    set_breakpoint_at(index, address, MatchLevel::El1);
}

/// Makes breakpoint `index` an unlinked instruction breakpoint on `address` (4-aligned) for
/// code at `level`.
///
/// # Panics
/// For an index of no implemented breakpoint, or a misaligned address.
pub fn set_breakpoint_at(index: usize, address: u64, level: MatchLevel) {
    assert!(
        address.is_multiple_of(4),
        "an A64 instruction breakpoint needs a 4-aligned address"
    );
    set_dbgbvr(index, address);
    set_dbgbcr(index, breakpoint_control_at(level));
}

/// The DBGBCR value [`set_breakpoint`] writes.
pub const fn breakpoint_control() -> u64 {
    breakpoint_control_at(MatchLevel::El1)
}

/// The DBGBCR value [`set_breakpoint_at`] writes for `level`.
pub const fn breakpoint_control_at(level: MatchLevel) -> u64 {
    dbgbcr::E | level.field() | dbgbcr::BAS_A64 | dbgbcr::BT_UNLINKED_ADDRESS
}

/// Disables breakpoint `index` and clears its value register.
pub fn clear_breakpoint(index: usize) {
    set_dbgbcr(index, 0);
    set_dbgbvr(index, 0);
}

/// Which accesses a watchpoint matches (DBGWCR.LSC).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WatchAccess {
    /// Loads only.
    Load,
    /// Stores only.
    Store,
    /// Loads and stores.
    LoadOrStore,
}

impl WatchAccess {
    fn field(self) -> u64 {
        match self {
            WatchAccess::Load => dbgwcr::LSC_LOAD,
            WatchAccess::Store => dbgwcr::LSC_STORE,
            WatchAccess::LoadOrStore => dbgwcr::LSC_LOAD | dbgwcr::LSC_STORE,
        }
    }
}

/// The DBGWVR and DBGWCR values of an EL1 watchpoint on `bytes` bytes at `address`.
///
/// # Panics
/// For 0 or more than 8 bytes, or bytes that cross a doubleword boundary.
pub fn watchpoint_registers(address: u64, bytes: u64, access: WatchAccess) -> (u64, u64) {
    watchpoint_registers_at(address, bytes, access, MatchLevel::El1)
}

/// The DBGWVR and DBGWCR values of a watchpoint on `bytes` bytes at `address` for accesses
/// made at `level`.
///
/// # Panics
/// As [`watchpoint_registers`].
pub fn watchpoint_registers_at(
    address: u64,
    bytes: u64,
    access: WatchAccess,
    level: MatchLevel,
) -> (u64, u64) {
    let offset = address & 7;
    assert!(
        (1..=8).contains(&bytes) && offset + bytes <= 8,
        "a byte-select watchpoint covers 1-8 bytes of one doubleword"
    );
    let select = (((1u32 << bytes) - 1) << offset) as u8;
    (
        address & !7,
        dbgwcr::E | level.field() | access.field() | dbgwcr::byte_select(select),
    )
}

/// Makes watchpoint `index` an EL1 watchpoint on the `bytes` bytes at `address` (within one
/// doubleword) for `access`.
///
/// # Panics
/// For an index of no implemented watchpoint, or bytes [`watchpoint_registers`] refuses.
pub fn set_watchpoint(index: usize, address: u64, bytes: u64, access: WatchAccess) {
    set_watchpoint_at(index, address, bytes, access, MatchLevel::El1);
}

/// Makes watchpoint `index` a watchpoint on the `bytes` bytes at `address` (within one
/// doubleword) for `access` made at `level`.
///
/// # Panics
/// As [`set_watchpoint`].
pub fn set_watchpoint_at(index: usize, address: u64, bytes: u64, access: WatchAccess, level: MatchLevel) {
    let (value, control) = watchpoint_registers_at(address, bytes, access, level);
    set_dbgwvr(index, value);
    set_dbgwcr(index, control);
}

/// Disables watchpoint `index` and clears its value register.
pub fn clear_watchpoint(index: usize) {
    set_dbgwcr(index, 0);
    set_dbgwvr(index, 0);
}

/// How a recorded debug exception resumes (what kvm-unit-tests' handlers do).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resume {
    /// With PSTATE.D set (arm/debug.c's breakpoint and watchpoint handlers): the instruction
    /// runs without firing again, until code unmasks debug exceptions.
    MaskDebugExceptions,
    /// With PSTATE.SS set (arm/debug.c's single-step handler): one more instruction is
    /// stepped.
    Step,
}

/// One debug exception as [`record_debug_exceptions`] saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DebugException {
    /// The exception: class, ESR, ELR, FAR.
    pub exception: Exception,
    /// SPSR_EL1 as the exception saved it (the interrupted PSTATE, SS and D included).
    pub spsr: u64,
}

impl DebugException {
    /// ISS (ESR bits 24:0).
    pub fn iss(&self) -> u64 {
        self.exception.iss()
    }
}

/// The most debug exceptions one [`record_debug_exceptions`] records; at the last it clears
/// MDSCR_EL1 and resumes with debug exceptions masked, so that a runaway sequence ends.
pub const CAPACITY: usize = 32;

/// Whether a recorder is active (they do not nest).
static RECORDING: AtomicBool = AtomicBool::new(false);
/// The active recorder's [`Resume`] (0: mask, 1: step).
static RESUME: AtomicU8 = AtomicU8::new(0);
/// How many debug exceptions the active recorder saw (may exceed [`CAPACITY`]).
static RECORDED: AtomicUsize = AtomicUsize::new(0);
/// ESR, ELR, FAR, SPSR and from-EL0 of each recorded exception.
static RECORDS: [[AtomicU64; 5]; CAPACITY] = [const { [const { AtomicU64::new(0) }; 5] }; CAPACITY];

/// The recording [`super::exceptions::DebugHandler`].
fn record_debug_exception(frame: &mut DebugFrame<'_>) {
    let exception = frame.exception();
    let index = RECORDED.fetch_add(1, Ordering::AcqRel);
    if let Some(record) = RECORDS.get(index) {
        let values = [
            exception.esr,
            exception.elr,
            exception.far,
            frame.spsr(),
            u64::from(exception.from_user),
        ];
        for (slot, value) in record.iter().zip(values) {
            slot.store(value, Ordering::Relaxed);
        }
    }
    if index + 1 >= CAPACITY {
        set_mdscr(0);
        frame.set_step_on_return(false);
        frame.mask_debug_exceptions_on_return();
        return;
    }
    if RESUME.load(Ordering::Relaxed) == 1 {
        frame.set_step_on_return(true);
    } else {
        frame.mask_debug_exceptions_on_return();
    }
}

/// Runs `function` with a debug-exception handler that records each breakpoint, watchpoint and
/// software step exception (up to [`CAPACITY`]) and resumes as `resume` says; other exceptions
/// are handled as usual. Returns the closure's result, or the exception that ended it (as
/// `catch_exception`), and the debug exceptions in the order they came.
///
/// # Panics
/// When called from inside another `record_debug_exceptions`.
pub fn record_debug_exceptions<R>(
    resume: Resume,
    function: impl FnOnce() -> R,
) -> (Result<R, Exception>, Vec<DebugException>) {
    assert!(
        !RECORDING.swap(true, Ordering::AcqRel),
        "record_debug_exceptions does not nest"
    );
    RECORDED.store(0, Ordering::Release);
    RESUME.store(u8::from(resume == Resume::Step), Ordering::Release);
    set_debug_handler(Some(record_debug_exception));
    let result = catch_exception(function);
    set_debug_handler(None);
    let count = RECORDED.load(Ordering::Acquire).min(CAPACITY);
    let seen = RECORDS[..count]
        .iter()
        .map(|record| {
            let esr = record[0].load(Ordering::Relaxed);
            DebugException {
                exception: Exception {
                    class: ExceptionClass::of(esr),
                    esr,
                    elr: record[1].load(Ordering::Relaxed),
                    far: record[2].load(Ordering::Relaxed),
                    from_user: record[4].load(Ordering::Relaxed) != 0,
                },
                spsr: record[3].load(Ordering::Relaxed),
            }
        })
        .collect();
    RECORDING.store(false, Ordering::Release);
    (result, seen)
}

/// Whether a sequence below runs with debug exceptions unmasked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DebugExceptions {
    /// PSTATE.D is cleared before the instructions under test.
    Unmasked,
    /// PSTATE.D is left as it is for the (first) instruction under test: set in the runtime's
    /// EL1 code. The watched accesses then touch no DAIF bit, so they also run at EL0 (under
    /// `run_in_user_mode`), where D does not mask the debug exceptions, which go to EL1.
    Masked,
}

/// The number of `MSR DAIFClr, #8` instructions of the unmask sequence.
pub const UNMASK_SEQUENCE_LENGTH: usize = 16;

global_asm!(
    r#"
    .section .text.vmunit_debug_sequences, "ax"
    .balign 64
    /* Unmasks debug exceptions, then runs the sequence. */
    .global vmunit_debug_unmasked_entry
    vmunit_debug_unmasked_entry:
        msr daifclr, #8
        b vmunit_debug_unmask_sequence
    /* Runs the sequence with debug exceptions masked: its first instruction unmasks them. */
    .global vmunit_debug_masked_entry
    vmunit_debug_masked_entry:
        nop
    /* kvm-unit-tests' hw_bp0: 16 MSR DAIFClr, #8. A breakpoint on one fires (where D is
     * clear), the handler resumes with D set, the instruction runs and clears D again, and
     * the breakpoint on the next one can fire. */
    .global vmunit_debug_unmask_sequence
    vmunit_debug_unmask_sequence:
        .rept 16
        msr daifclr, #8
        .endr
        msr daifset, #8
        ret

    /* Two NOPs and RET: a breakpoint target for EL0 code too (it touches no DAIF bit). */
    .balign 16
    .global vmunit_debug_nops
    vmunit_debug_nops:
        nop
        nop
        ret

    /* x0: a doubleword for LDXR. Steps MRS, ADD, a taken branch, LDXR, CLREX, MSR DAIFSet;
     * clobbers x1, x2. */
    .balign 64
    .global vmunit_debug_step_sequence
    vmunit_debug_step_sequence:
        msr daifclr, #8
    .global vmunit_debug_step_0
    vmunit_debug_step_0:
        mrs x1, esr_el1
        add x1, x1, #1
        b vmunit_debug_step_3
        udf #0
    .global vmunit_debug_step_3
    vmunit_debug_step_3:
        ldxr x2, [x0]
        clrex
    .global vmunit_debug_step_5
    vmunit_debug_step_5:
        msr daifset, #8
        ret
    "#,
);

unsafe extern "C" {
    static vmunit_debug_unmasked_entry: u8;
    static vmunit_debug_masked_entry: u8;
    static vmunit_debug_unmask_sequence: u8;
    static vmunit_debug_step_sequence: u8;
    static vmunit_debug_nops: u8;
    static vmunit_debug_step_0: u8;
    static vmunit_debug_step_3: u8;
    static vmunit_debug_step_5: u8;
}

/// The addresses of the 16 `MSR DAIFClr, #8` of the unmask sequence, in order: breakpoint
/// targets.
pub fn unmask_sequence_addresses() -> [u64; UNMASK_SEQUENCE_LENGTH] {
    let start = &raw const vmunit_debug_unmask_sequence as u64;
    core::array::from_fn(|index| start + 4 * index as u64)
}

/// Runs the unmask sequence (kvm-unit-tests' `hw_bp0`): with [`DebugExceptions::Unmasked`] D is
/// clear from its first instruction on; with [`DebugExceptions::Masked`] the first instruction
/// runs with D set (and clears it). Debug exceptions are masked again when it returns. Run it
/// under [`record_debug_exceptions`] with [`Resume::MaskDebugExceptions`].
pub fn run_unmask_sequence(debug_exceptions: DebugExceptions) {
    match debug_exceptions {
        // SAFETY: the sequence changes PSTATE.D only, and masks it again before its RET; its
        // breakpoint exceptions resume in it (the recorder) or end the closure.
        DebugExceptions::Unmasked => unsafe {
            asm!("bl {entry}", entry = sym vmunit_debug_unmasked_entry, out("x30") _, options(nomem, nostack))
        },
        // SAFETY: as above.
        DebugExceptions::Masked => unsafe {
            asm!("bl {entry}", entry = sym vmunit_debug_masked_entry, out("x30") _, options(nomem, nostack))
        },
    }
}

/// The addresses of the two NOPs of [`run_nops`].
pub fn nops_addresses() -> [u64; 2] {
    let start = &raw const vmunit_debug_nops as u64;
    [start, start + 4]
}

/// Calls a routine of two NOPs and RET, which touches no register but x30 and no DAIF bit: a
/// breakpoint target at EL0 (under `run_in_user_mode`) as at EL1.
pub fn run_nops() {
    // SAFETY: the routine runs two NOPs and returns; BL clobbers x30 (declared).
    unsafe { asm!("bl {entry}", entry = sym vmunit_debug_nops, out("x30") _, options(nomem, nostack)) };
}

/// The addresses at which [`run_step_sequence`] is expected to take a software step exception
/// with MDSCR_EL1.SS and KDE set: before its first instruction (MRS ESR_EL1; the step state is
/// active-pending once D is clear), then after each stepped instruction: ADD, a taken branch
/// `B` (over a UDF), its target LDXR, CLREX, and the MSR DAIFSet, #8 that masks the steps.
pub fn step_sequence_addresses() -> [u64; 6] {
    let first = &raw const vmunit_debug_step_0 as u64;
    let target = &raw const vmunit_debug_step_3 as u64;
    [
        first,
        first + 4,
        first + 8,
        target,
        target + 4,
        &raw const vmunit_debug_step_5 as u64,
    ]
}

/// The index in [`step_sequence_addresses`] of the step exception that follows the LDXR
/// (ESR.ISS.EX set).
pub const STEP_AFTER_EXCLUSIVE_LOAD: usize = 4;

/// The doubleword the step sequence's LDXR reads.
static EXCLUSIVE_TARGET: AtomicU64 = AtomicU64::new(0);

/// Runs the step sequence: unmasks debug exceptions, then MRS ESR_EL1, ADD, B (over a UDF),
/// LDXR, CLREX, MSR DAIFSet, #8. Run it under [`record_debug_exceptions`] with
/// [`Resume::Step`] after setting MDSCR_EL1.SS and KDE.
pub fn run_step_sequence() {
    // SAFETY: the sequence clobbers x1, x2 and x30 (declared), reads EXCLUSIVE_TARGET with an
    // exclusive load (as atomics may be read) and clears the monitor; it masks debug
    // exceptions again before its RET. Step exceptions resume in it (the recorder).
    unsafe {
        asm!(
            "bl {entry}",
            entry = sym vmunit_debug_step_sequence,
            in("x0") EXCLUSIVE_TARGET.as_ptr(),
            out("x1") _, out("x2") _, out("x30") _,
            options(nostack, readonly),
        )
    };
}

/// The buffer watchpoints watch: 64 bytes on a 64-byte boundary, accessed only by the assembly
/// below (so never while Rust code holds a reference into it).
#[repr(C, align(64))]
struct Watched(UnsafeCell<[u8; WATCHED_SIZE]>);
/// The watched buffer's size.
pub const WATCHED_SIZE: usize = 64;
// SAFETY: the bytes are only accessed by single instructions in assembly.
unsafe impl Sync for Watched {}
static WATCHED: Watched = Watched(UnsafeCell::new([0; WATCHED_SIZE]));

/// The address of byte `offset` of the watched buffer (64-byte aligned at offset 0).
pub fn watched_address(offset: usize) -> u64 {
    WATCHED.0.get() as u64 + offset as u64
}

fn watched_pointer(offset: usize, size: usize) -> *mut u8 {
    assert!(
        matches!(size, 1 | 2 | 4 | 8) && offset + size <= WATCHED_SIZE && offset.is_multiple_of(size),
        "{size} bytes at offset {offset} are not an aligned access inside the watched buffer"
    );
    WATCHED.0.get().cast::<u8>().wrapping_add(offset)
}

/// Stores the low `size` bytes (1, 2, 4 or 8) of `value` at byte `offset` (a multiple of
/// `size`) of the watched buffer with one STR, debug exceptions unmasked around it or not;
/// returns the STR's address (a watchpoint's ELR). Run it under [`record_debug_exceptions`]
/// with [`Resume::MaskDebugExceptions`] where a watchpoint may fire: the store then completes
/// when it is resumed.
///
/// # Panics
/// For another size, or an access that leaves the buffer or is misaligned.
pub fn store_watched(offset: usize, size: usize, value: u64, debug_exceptions: DebugExceptions) -> u64 {
    let pointer = watched_pointer(offset, size);
    /// ADR of the store, the unmask, the given store, the mask (or NOPs).
    macro_rules! store {
        ($unmask:literal, $instruction:literal, $mask:literal) => {{
            let address: u64;
            // SAFETY: the store stays inside WATCHED, which only single instructions access;
            // PSTATE.D is set again after it; a watchpoint exception resumes at the store.
            unsafe {
                asm!("adr {a}, 2f", $unmask, concat!("2: ", $instruction), $mask,
                     p = in(reg) pointer, v = in(reg) value, a = out(reg) address, options(nostack))
            };
            address
        }};
    }
    match (debug_exceptions, size) {
        (DebugExceptions::Unmasked, 1) => store!("msr daifclr, #8", "strb {v:w}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Unmasked, 2) => store!("msr daifclr, #8", "strh {v:w}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Unmasked, 4) => store!("msr daifclr, #8", "str {v:w}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Unmasked, _) => store!("msr daifclr, #8", "str {v}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Masked, 1) => store!("nop", "strb {v:w}, [{p}]", "nop"),
        (DebugExceptions::Masked, 2) => store!("nop", "strh {v:w}, [{p}]", "nop"),
        (DebugExceptions::Masked, 4) => store!("nop", "str {v:w}, [{p}]", "nop"),
        (DebugExceptions::Masked, _) => store!("nop", "str {v}, [{p}]", "nop"),
    }
}

/// Loads `size` bytes (1, 2, 4 or 8) from byte `offset` (a multiple of `size`) of the watched
/// buffer with one LDR, debug exceptions unmasked around it or not; returns the value
/// (zero-extended) and the LDR's address. See [`store_watched`].
///
/// # Panics
/// For another size, or an access that leaves the buffer or is misaligned.
pub fn load_watched(offset: usize, size: usize, debug_exceptions: DebugExceptions) -> (u64, u64) {
    let pointer = watched_pointer(offset, size);
    /// ADR of the load, the unmask, the given load, the mask (or NOPs).
    macro_rules! load {
        ($unmask:literal, $instruction:literal, $mask:literal) => {{
            let (value, address): (u64, u64);
            // SAFETY: the load stays inside WATCHED, which only single instructions access;
            // PSTATE.D is set again after it; a watchpoint exception resumes at the load.
            unsafe {
                asm!("adr {a}, 2f", $unmask, concat!("2: ", $instruction), $mask,
                     p = in(reg) pointer, v = out(reg) value, a = out(reg) address, options(nostack, readonly))
            };
            (value, address)
        }};
    }
    match (debug_exceptions, size) {
        (DebugExceptions::Unmasked, 1) => load!("msr daifclr, #8", "ldrb {v:w}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Unmasked, 2) => load!("msr daifclr, #8", "ldrh {v:w}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Unmasked, 4) => load!("msr daifclr, #8", "ldr {v:w}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Unmasked, _) => load!("msr daifclr, #8", "ldr {v}, [{p}]", "msr daifset, #8"),
        (DebugExceptions::Masked, 1) => load!("nop", "ldrb {v:w}, [{p}]", "nop"),
        (DebugExceptions::Masked, 2) => load!("nop", "ldrh {v:w}, [{p}]", "nop"),
        (DebugExceptions::Masked, 4) => load!("nop", "ldr {v:w}, [{p}]", "nop"),
        (DebugExceptions::Masked, _) => load!("nop", "ldr {v}, [{p}]", "nop"),
    }
}
