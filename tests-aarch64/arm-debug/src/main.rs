//! arm-debug: AArch64 self-hosted debug in kvm-unit-tests' arm/debug.c modes: `bp` (hardware
//! breakpoints on every DBGBCR/DBGBVR pair), `wp` (watchpoints on every DBGWCR/DBGWVR pair) and
//! `ss` (software step with MDSCR_EL1.SS and SPSR.SS), each with the enables that gate them:
//! the OS lock (OSLAR_EL1), MDSCR_EL1.MDE and KDE, PSTATE.D. `bp-migration`, `wp-migration`
//! and `ss-migration` migrate the VM where arm/debug.c does (group `migration`). Two more modes reproduce QEMU TCG
//! defects alone: `reproduce-os-lock`, `reproduce-step-after-debug-mask`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use vmunit::arch::debug::{
    self, DebugException, DebugExceptions, MatchLevel, Resume, WatchAccess, iss, mdscr, oslsr,
};
use vmunit::arch::exceptions::SPSR_D;
use vmunit::arch::registers::current_el;
use vmunit::arch::{Exception, ExceptionClass, run_in_user_mode};
use vmunit::{Migration, known_failure, prefix, report, report_info, report_skip, report_summary};

vmunit::main!(main);

fn main(arguments: &[&str]) -> i32 {
    if current_el() != 1 {
        report_skip!("the runtime runs at EL1 (it runs at EL{})", current_el());
        return report_summary();
    }
    match arguments.first().copied() {
        Some(mode @ ("bp" | "bp-migration")) => {
            let _prefix = prefix(mode);
            breakpoints(MigrationPoint::of(mode));
        }
        Some(mode @ ("wp" | "wp-migration")) => {
            let _prefix = prefix(mode);
            watchpoints(MigrationPoint::of(mode));
        }
        Some(mode @ ("ss" | "ss-migration")) => {
            let _prefix = prefix(mode);
            single_step(MigrationPoint::of(mode));
        }
        Some("reproduce-os-lock") => reproduce_os_lock(),
        Some("reproduce-step-after-debug-mask") => reproduce_step_after_debug_mask(),
        other => {
            report!(
                false,
                "a known mode (bp, wp, ss, their -migration variants, reproduce-*) was given (got {other:?})"
            );
        }
    }
    debug::reset_debug_state();
    report_summary()
}

/// QEMU's TCG generates debug exceptions with the OS lock set: its OS-lock test reads the
/// wrong bit of OSLSR_EL1 (`reproduce-arm-os-lock`).
const QEMU_OS_LOCK: &str = "QEMU TCG ignores the OS lock: target/arm/debug_helper.c arm_generate_debug_exceptions() \
     tests OSLSR_EL1 bit 0 (OSLM[0]), while oslar_write() keeps OSLK in bit 1";

/// QEMU's TCG takes a software step exception after the instruction that masked debug
/// exceptions (`reproduce-arm-step-after-debug-mask`).
const QEMU_STEP_AFTER_MASK: &str = "QEMU TCG steps past MSR DAIFSet: target/arm/tcg/translate-a64.c aarch64_tr_tb_stop() \
     raises the step exception (gen_step_complete_exception) whenever the TB began with stepping active, \
     without the CheckSoftwareStep() test of AArch64.GenerateDebugExceptions() (PSTATE.D) before the next instruction";

/// Whether a mode migrates the VM where kvm-unit-tests' arm/debug.c does (its `-migration`
/// modes: after the debug registers are programmed, before they are used).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MigrationPoint {
    /// The plain mode: no migration.
    None,
    /// Migrate once, then check the register counts.
    Migrate,
}

impl MigrationPoint {
    fn of(mode: &str) -> MigrationPoint {
        if mode.ends_with("-migration") {
            MigrationPoint::Migrate
        } else {
            MigrationPoint::None
        }
    }

    /// Migrates (once) when the mode says so; returns whether the VM moved.
    fn reached(self) -> bool {
        self == MigrationPoint::Migrate && vmunit::migrate_once() == Migration::Completed
    }
}

/// Whether the test runs under QEMU's TCG.
fn tcg() -> bool {
    vmunit::env("ACCEL") == Some("tcg")
}

/// MDSCR_EL1 with breakpoints and watchpoints enabled at EL1.
const BREAK_AND_WATCH: u64 = mdscr::KDE | mdscr::MDE;

/// What keeps an enabled breakpoint or watchpoint from firing at EL1: (what, MDSCR_EL1,
/// PSTATE.D, the OS lock set).
const GATES: [(&str, u64, DebugExceptions, bool); 4] = [
    ("PSTATE.D set", BREAK_AND_WATCH, DebugExceptions::Masked, false),
    (
        "MDSCR_EL1.KDE clear",
        mdscr::MDE,
        DebugExceptions::Unmasked,
        false,
    ),
    (
        "MDSCR_EL1.MDE clear",
        mdscr::KDE,
        DebugExceptions::Unmasked,
        false,
    ),
    (
        "the OS lock set",
        BREAK_AND_WATCH,
        DebugExceptions::Unmasked,
        true,
    ),
];

/// The ELRs of what was recorded, for messages.
fn return_addresses(seen: &[DebugException]) -> Vec<u64> {
    seen.iter().map(|record| record.exception.elr).collect()
}

/// Whether ESR is a debug exception's: the class, IL set and the "debug exception" status.
fn is_debug_syndrome(record: &DebugException, class: ExceptionClass) -> bool {
    record.exception.class == class
        && record.exception.esr & debug::ESR_IL != 0
        && record.iss() & iss::FAULT_STATUS_MASK == iss::DEBUG_FAULT_STATUS
        && !record.exception.from_user
}

/// Whether `outcome` is a debug exception of `class` taken from EL0 at `pc`.
fn is_user_debug_exception<T>(outcome: &Result<T, Exception>, class: ExceptionClass, pc: u64) -> bool {
    matches!(outcome, Err(exception) if exception.class == class
        && exception.from_user
        && exception.elr == pc
        && exception.esr & debug::ESR_IL != 0
        && exception.iss() & iss::FAULT_STATUS_MASK == iss::DEBUG_FAULT_STATUS)
}

/// OSLSR_EL1 says the OS lock is implemented, and OSLAR_EL1 locks and unlocks it; MDSCR_EL1
/// holds its enables (with PSTATE.D set, SS does not step the runtime).
fn debug_control_reads_back() {
    debug::set_mdscr(mdscr::SS | mdscr::KDE | mdscr::MDE);
    let enabled = debug::mdscr();
    debug::set_mdscr(0);
    let cleared = debug::mdscr();
    let bits = mdscr::SS | mdscr::KDE | mdscr::MDE;
    report!(
        enabled & bits == bits && cleared & bits == 0,
        "MDSCR_EL1 holds SS, KDE and MDE when written, and 0 after (read {enabled:#x}, then {cleared:#x})"
    );
    let status = debug::oslsr();
    report!(
        status & oslsr::OSLM_MASK == oslsr::OSLM_IMPLEMENTED && status & oslsr::OSLK == 0,
        "OSLSR_EL1 says the OS lock is implemented (OSLM 0b10) and unlocked after OSLAR_EL1 = 0 (OSLSR {status:#x})"
    );
    debug::set_os_lock(true);
    let locked = debug::oslsr();
    debug::set_os_lock(false);
    let unlocked = debug::oslsr();
    report!(
        locked & oslsr::OSLK != 0 && unlocked & oslsr::OSLK == 0,
        "OSLAR_EL1 = 1 sets OSLSR_EL1.OSLK, OSLAR_EL1 = 0 clears it (OSLSR {locked:#x}, then {unlocked:#x})"
    );
}

/// Runs the unmask sequence under the recorder; reports whether it completed.
fn record_unmask_sequence(debug_exceptions: DebugExceptions) -> Vec<DebugException> {
    let (result, seen) = debug::record_debug_exceptions(Resume::MaskDebugExceptions, || {
        debug::run_unmask_sequence(debug_exceptions)
    });
    if let Err(exception) = result {
        report!(
            false,
            "the breakpoint sequence runs to its end (ended by {exception})"
        );
    }
    seen
}

fn breakpoints(migration: MigrationPoint) {
    let count = debug::breakpoint_count();
    let all_breakpoints = count;
    let context = debug::context_breakpoint_count();
    report!(
        (2..=16).contains(&count) && context <= count,
        "ID_AA64DFR0_EL1: {count} breakpoints (2-16), {context} of them context-aware (DebugVer {})",
        debug::debug_version()
    );
    debug::reset_debug_state();
    debug_control_reads_back();
    let targets = debug::unmask_sequence_addresses();
    let count = count.min(targets.len());

    // Each pair holds what was written.
    for (index, &target) in targets.iter().enumerate().take(count) {
        debug::set_breakpoint(index, target);
        let (control, value) = (debug::dbgbcr(index), debug::dbgbvr(index));
        report!(
            control == debug::breakpoint_control() && value == target,
            "DBGBCR{index}_EL1/DBGBVR{index}_EL1 read back {:#x}/{target:#x} (got {control:#x}/{value:#x})",
            debug::breakpoint_control()
        );
        debug::clear_breakpoint(index);
    }

    // Each breakpoint alone fires once, at its own instruction.
    for index in 0..count {
        debug::reset_debug_state();
        let target = targets[count - 1 - index];
        debug::set_breakpoint(index, target);
        debug::set_mdscr(BREAK_AND_WATCH);
        let seen = record_unmask_sequence(DebugExceptions::Unmasked);
        report!(
            seen.len() == 1
                && seen[0].exception.elr == target
                && is_debug_syndrome(&seen[0], ExceptionClass::Breakpoint),
            "breakpoint {index} alone fires once, at {target:#x}, as BREAKPT_EL1 with IFSC 0x22 (got {:x?})",
            seen.as_slice()
        );
    }

    // What keeps an enabled breakpoint from firing.
    for (what, mdscr, debug_exceptions, os_lock) in GATES {
        debug::reset_debug_state();
        debug::set_breakpoint(0, targets[0]);
        debug::set_mdscr(mdscr);
        debug::set_os_lock(os_lock);
        let seen = record_unmask_sequence(debug_exceptions);
        debug::set_os_lock(false);
        known_failure(os_lock && tcg(), QEMU_OS_LOCK, || {
            report!(
                seen.is_empty(),
                "with {what}, breakpoint 0 on the sequence's first instruction does not fire (fired at {:x?})",
                return_addresses(&seen)
            )
        });
    }
    debug::reset_debug_state();
    debug::set_dbgbvr(0, targets[0]);
    debug::set_dbgbcr(0, debug::breakpoint_control() & !debug::dbgbcr::E);
    debug::set_mdscr(BREAK_AND_WATCH);
    let seen = record_unmask_sequence(DebugExceptions::Unmasked);
    report!(
        seen.is_empty(),
        "a breakpoint with DBGBCR.E clear does not fire (fired at {:x?})",
        return_addresses(&seen)
    );

    // EL0 breakpoints (PMC 0b10) go to EL1, where neither KDE nor PSTATE.D gates them; they
    // end the user-mode run with their exception.
    let nops = debug::nops_addresses();
    debug::reset_debug_state();
    debug::set_breakpoint_at(0, nops[1], MatchLevel::El0);
    debug::set_mdscr(mdscr::MDE);
    let outcome = run_in_user_mode(debug::run_nops);
    report!(
        is_user_debug_exception(&outcome, ExceptionClass::BreakpointLower, nops[1]),
        "an EL0 breakpoint (PMC 0b10) on {:#x} fires in user mode as BREAKPT_EL0 with IFSC 0x22, MDSCR_EL1.KDE clear (got {outcome:?})",
        nops[1]
    );
    debug::set_breakpoint_at(0, targets[0], MatchLevel::El0);
    debug::set_mdscr(BREAK_AND_WATCH);
    let seen = record_unmask_sequence(DebugExceptions::Unmasked);
    report!(
        seen.is_empty(),
        "an EL0 breakpoint (PMC 0b10) does not fire at EL1 (fired at {:x?})",
        return_addresses(&seen)
    );
    debug::set_breakpoint(0, nops[1]);
    let outcome = run_in_user_mode(debug::run_nops);
    report!(
        outcome.is_ok(),
        "an EL1 breakpoint (PMC 0b01) does not fire in user mode (got {outcome:?})"
    );

    // kvm-unit-tests' check: every breakpoint on consecutive instructions, each fires in turn.
    debug::reset_debug_state();
    for (index, &target) in targets.iter().enumerate().take(count) {
        debug::set_breakpoint(index, target);
    }
    debug::set_mdscr(BREAK_AND_WATCH);
    // kvm-unit-tests' bp-migration migrates here and then checks that BRPs is unchanged; the
    // breakpoints programmed before it must fire after it.
    if migration.reached() {
        let brps = debug::breakpoint_count();
        report!(
            brps == all_breakpoints,
            "brps match after migrate (BRPs {all_breakpoints}, got {brps})"
        );
    }
    let seen = record_unmask_sequence(DebugExceptions::Unmasked);
    for (index, &target) in targets.iter().enumerate().take(count) {
        let got = seen.get(index).map(|record| record.exception.elr);
        report!(
            got == Some(target),
            "hw breakpoint: {index} (at {target:#x}, got {got:x?})"
        );
    }
    report!(
        seen.len() == count,
        "{count} breakpoints fire {count} times in all (got {})",
        seen.len()
    );
}

/// Where watchpoint `index` watches in the per-watchpoint checks: byte 3 of doubleword `index`
/// (of the 8 in the watched buffer).
fn watched_byte(index: usize) -> usize {
    8 * (index % 8) + 3
}

/// Runs `access` under the recorder; reports whether it completed.
fn record_access<R>(access: impl FnOnce() -> R) -> (Option<R>, Vec<DebugException>) {
    let (result, seen) = debug::record_debug_exceptions(Resume::MaskDebugExceptions, access);
    if let Err(exception) = &result {
        report!(false, "the watched access completes (ended by {exception})");
    }
    (result.ok(), seen)
}

/// Whether `seen` is one watchpoint exception at `pc` for `address`, a write or not.
fn is_watchpoint(seen: &[DebugException], pc: u64, address: u64, write: bool) -> bool {
    match seen {
        [record] => {
            is_debug_syndrome(record, ExceptionClass::Watchpoint)
                && record.exception.elr == pc
                && record.exception.far == address
                && (record.iss() & iss::WRITE_NOT_READ != 0) == write
                && record.iss() & iss::CACHE_MAINTENANCE == 0
        }
        _ => false,
    }
}

fn watchpoints(migration: MigrationPoint) {
    let count = debug::watchpoint_count();
    let all_watchpoints = count;
    report!(
        (2..=16).contains(&count),
        "ID_AA64DFR0_EL1: {count} watchpoints (2-16)"
    );
    debug::reset_debug_state();
    debug_control_reads_back();

    // Each pair holds what was written.
    for index in 0..count {
        let address = debug::watched_address(watched_byte(index));
        let (value, control) = debug::watchpoint_registers(address, 1, WatchAccess::LoadOrStore);
        debug::set_watchpoint(index, address, 1, WatchAccess::LoadOrStore);
        let (got_control, got_value) = (debug::dbgwcr(index), debug::dbgwvr(index));
        report!(
            got_control == control && got_value == value,
            "DBGWCR{index}_EL1/DBGWVR{index}_EL1 read back {control:#x}/{value:#x} (got {got_control:#x}/{got_value:#x})"
        );
        debug::clear_watchpoint(index);
    }

    // Each watchpoint alone fires on a store to its byte, before the store, which completes
    // when resumed.
    for index in 0..count {
        debug::reset_debug_state();
        let offset = watched_byte(index);
        let address = debug::watched_address(offset);
        debug::store_watched(offset, 1, 0, DebugExceptions::Masked);
        debug::set_watchpoint(index, address, 1, WatchAccess::LoadOrStore);
        debug::set_mdscr(BREAK_AND_WATCH);
        let value = 0x40 + index as u64;
        let (pc, seen) = record_access(|| debug::store_watched(offset, 1, value, DebugExceptions::Unmasked));
        debug::set_mdscr(0);
        let (stored, _) = debug::load_watched(offset, 1, DebugExceptions::Masked);
        report!(
            pc.is_some_and(|pc| is_watchpoint(&seen, pc, address, true)) && stored == value,
            "watchpoint {index} alone fires once on a byte store to {address:#x} (WATCHPT_EL1, ELR at the STRB, FAR, WnR 1, DFSC 0x22), then the store completes (stored {stored:#x}; got {:x?})",
            seen.as_slice()
        );
    }

    // Loads, access kinds, byte selection and wider accesses, on watchpoint 0.
    let offset = watched_byte(0);
    let address = debug::watched_address(offset);
    debug::reset_debug_state();
    debug::set_watchpoint(0, address, 1, WatchAccess::LoadOrStore);
    debug::set_mdscr(BREAK_AND_WATCH);
    let (outcome, seen) = record_access(|| debug::load_watched(offset, 1, DebugExceptions::Unmasked));
    report!(
        outcome.is_some_and(|(_, pc)| is_watchpoint(&seen, pc, address, false)),
        "a byte load from {address:#x} fires the load/store watchpoint with WnR 0 (got {:x?})",
        seen.as_slice()
    );
    let aligned = address & !7;
    let (pc, seen) = record_access(|| {
        debug::store_watched(offset & !7, 8, 0x1122_3344_5566_7788, DebugExceptions::Unmasked)
    });
    let far = seen.first().map(|record| record.exception.far);
    report!(
        pc.is_some_and(|pc| seen.len() == 1
            && seen[0].exception.class == ExceptionClass::Watchpoint
            && seen[0].exception.elr == pc)
            && far.is_some_and(|far| (aligned..aligned + 8).contains(&far)),
        "a doubleword store over the watched byte fires it, FAR within the store's 8 bytes from {aligned:#x} (got {:x?})",
        seen.as_slice()
    );
    let (_, seen) = record_access(|| debug::store_watched(offset - 1, 1, 0, DebugExceptions::Unmasked));
    report!(
        seen.is_empty(),
        "a store to the byte below the watched one (BAS selects one byte) does not fire (got {:x?})",
        seen.as_slice()
    );
    debug::set_watchpoint(0, address, 1, WatchAccess::Store);
    let (_, seen) = record_access(|| debug::load_watched(offset, 1, DebugExceptions::Unmasked));
    report!(
        seen.is_empty(),
        "a load does not fire a store-only watchpoint (LSC 0b10) (got {:x?})",
        seen.as_slice()
    );
    debug::set_watchpoint(0, address, 1, WatchAccess::Load);
    let (pc, seen) = record_access(|| debug::store_watched(offset, 1, 0, DebugExceptions::Unmasked));
    let (_, loads) = record_access(|| debug::load_watched(offset, 1, DebugExceptions::Unmasked));
    report!(
        pc.is_some() && seen.is_empty() && loads.len() == 1,
        "a load-only watchpoint (LSC 0b01) ignores the store and fires on the load (got {} and {})",
        seen.len(),
        loads.len()
    );

    // What keeps an enabled watchpoint from firing.
    for (what, mdscr, debug_exceptions, os_lock) in GATES {
        debug::reset_debug_state();
        debug::set_watchpoint(0, address, 1, WatchAccess::LoadOrStore);
        debug::set_mdscr(mdscr);
        debug::set_os_lock(os_lock);
        let (_, seen) = record_access(|| debug::store_watched(offset, 1, 0, debug_exceptions));
        debug::set_os_lock(false);
        known_failure(os_lock && tcg(), QEMU_OS_LOCK, || {
            report!(
                seen.is_empty(),
                "with {what}, a store to the watched byte does not fire (got {:x?})",
                seen.as_slice()
            )
        });
    }

    debug::reset_debug_state();
    let (value, control) = debug::watchpoint_registers(address, 1, WatchAccess::LoadOrStore);
    debug::set_dbgwvr(0, value);
    debug::set_dbgwcr(0, control & !debug::dbgwcr::E);
    debug::set_mdscr(BREAK_AND_WATCH);
    let (_, seen) = record_access(|| debug::store_watched(offset, 1, 0, DebugExceptions::Unmasked));
    report!(
        seen.is_empty(),
        "a watchpoint with DBGWCR.E clear does not fire (got {:x?})",
        seen.as_slice()
    );

    // EL0 accesses: a PAC 0b10 watchpoint fires on them (to EL1, whatever KDE and PSTATE.D),
    // a PAC 0b01 one does not.
    debug::reset_debug_state();
    debug::set_watchpoint_at(0, address, 1, WatchAccess::LoadOrStore, MatchLevel::El0);
    debug::set_mdscr(mdscr::MDE);
    let mut pc = 0;
    let outcome = run_in_user_mode(|| debug::store_watched(offset, 1, 0x5a, DebugExceptions::Masked));
    if let Err(exception) = outcome {
        pc = exception.elr;
    }
    report!(
        matches!(outcome, Err(exception) if exception.class == ExceptionClass::WatchpointLower
            && exception.from_user
            && exception.far == address
            && exception.iss() & iss::WRITE_NOT_READ != 0
            && exception.iss() & iss::FAULT_STATUS_MASK == iss::DEBUG_FAULT_STATUS),
        "an EL0 watchpoint (PAC 0b10) fires on a user-mode store as WATCHPT_EL0 with FAR {address:#x} and WnR 1, MDSCR_EL1.KDE clear (got {outcome:?})"
    );
    debug::set_watchpoint(0, address, 1, WatchAccess::LoadOrStore);
    let outcome = run_in_user_mode(|| debug::store_watched(offset, 1, 0xa5, DebugExceptions::Masked));
    debug::set_mdscr(0);
    let (stored, _) = debug::load_watched(offset, 1, DebugExceptions::Masked);
    report!(
        outcome.is_ok_and(|address| address == pc) && stored == 0xa5,
        "an EL1 watchpoint (PAC 0b01) does not fire on the same user-mode store, which completes (stored {stored:#x}; got {outcome:x?})"
    );

    // kvm-unit-tests' check: watchpoint i on byte i, a store to each byte in turn.
    debug::reset_debug_state();
    for index in 0..count {
        debug::store_watched(index, 1, 0xff, DebugExceptions::Masked);
        debug::set_watchpoint(index, debug::watched_address(index), 1, WatchAccess::LoadOrStore);
    }
    debug::set_mdscr(BREAK_AND_WATCH);
    // kvm-unit-tests' wp-migration migrates here and then checks that WRPs is unchanged; the
    // watchpoints programmed before it must fire after it.
    if migration.reached() {
        let wrps = debug::watchpoint_count();
        report!(
            wrps == all_watchpoints,
            "wrps match after migrate (WRPs {all_watchpoints}, got {wrps})"
        );
    }
    let (_, seen) = record_access(|| {
        for index in 0..count {
            debug::store_watched(index, 1, index as u64, DebugExceptions::Unmasked);
        }
    });
    debug::set_mdscr(0);
    for index in 0..count {
        let address = debug::watched_address(index);
        let far = seen.get(index).map(|record| record.exception.far);
        report!(
            far == Some(address),
            "watchpoint received: {index} (FAR {address:#x}, got {far:x?})"
        );
        let (data, _) = debug::load_watched(index, 1, DebugExceptions::Masked);
        report!(data == index as u64, "watchpoint data: {index} (got {data:#x})");
    }
}

fn single_step(migration: MigrationPoint) {
    let steps = debug::step_sequence_addresses();
    debug::reset_debug_state();
    debug_control_reads_back();

    // kvm-unit-tests' check, and the whole sequence.
    debug::set_mdscr(mdscr::KDE | mdscr::SS);
    // kvm-unit-tests' ss-migration migrates here: MDSCR_EL1.SS set before, the steps after.
    if migration.reached() {
        let kept = debug::mdscr() & (mdscr::KDE | mdscr::SS | mdscr::MDE);
        report!(
            kept == mdscr::KDE | mdscr::SS,
            "MDSCR_EL1 keeps KDE and SS (and MDE clear) across the migration (got {kept:#x})"
        );
    }
    let (result, seen) = debug::record_debug_exceptions(Resume::Step, debug::run_step_sequence);
    debug::set_mdscr(0);
    report!(
        result.is_ok(),
        "the stepped sequence runs to its end (got {result:?})"
    );
    let first = seen.first().map(|record| record.exception.elr);
    report!(
        first == Some(steps[0]),
        "single step (first step at {:#x}, got {first:x?})",
        steps[0]
    );
    // The steps up to the MSR DAIFSet, #8 that masks them; what comes after it is checked
    // apart (QEMU steps past it).
    let (stepped, after) = seen.split_at(seen.len().min(steps.len()));
    let addresses = return_addresses(stepped);
    report!(
        addresses.as_slice() == steps.as_slice(),
        "steps come before the first instruction and after each instruction, over a taken branch, up to MSR DAIFSet: ELRs {steps:x?} (got {addresses:x?})"
    );
    report!(
        seen.iter()
            .all(|record| is_debug_syndrome(record, ExceptionClass::SoftwareStep)),
        "each is SOFTSTP_EL1 with IFSC 0x22 (got {:x?})",
        seen.as_slice()
    );
    let syndromes: Vec<(bool, bool)> = stepped
        .iter()
        .map(|record| {
            (
                record.iss() & iss::STEP_ISV != 0,
                record.iss() & iss::STEP_EXCLUSIVE != 0,
            )
        })
        .collect();
    let expected: Vec<(bool, bool)> = (0..steps.len())
        .map(|index| (index != 0, index == debug::STEP_AFTER_EXCLUSIVE_LOAD))
        .collect();
    report!(
        syndromes == expected,
        "ISS.ISV is 0 for the step taken before any instruction stepped, then 1; EX is 1 only after LDXR: (ISV, EX) {expected:?} (got {syndromes:?})"
    );
    report!(
        stepped.iter().all(|record| record.spsr & SPSR_D == 0),
        "each step interrupted code with PSTATE.D clear (SPSRs {:x?})",
        stepped.iter().map(|record| record.spsr).collect::<Vec<u64>>()
    );
    known_failure(tcg(), QEMU_STEP_AFTER_MASK, || {
        report!(
            after.is_empty(),
            "no step exception follows MSR DAIFSet, #8: debug exceptions are masked then (got {:x?})",
            after
        )
    });

    // User mode: entered by ERET with SPSR.SS 0 while MDSCR_EL1.SS is set, the step state is
    // active-pending at EL0 (steps from EL0 go to EL1, whatever KDE), so the step exception
    // comes before the first EL0 instruction.
    debug::reset_debug_state();
    debug::set_mdscr(mdscr::SS);
    let outcome = run_in_user_mode(debug::run_nops);
    debug::set_mdscr(0);
    report!(
        matches!(outcome, Err(exception) if exception.class == ExceptionClass::SoftwareStepLower
            && exception.from_user
            && exception.iss() & iss::STEP_ISV == 0
            && exception.iss() & iss::FAULT_STATUS_MASK == iss::DEBUG_FAULT_STATUS),
        "with MDSCR_EL1.SS set, user mode takes SOFTSTP_EL0 before its first instruction, ISV 0 (got {outcome:?})"
    );

    // What keeps stepping off.
    let gates: [(&str, u64, bool); 3] = [
        ("MDSCR_EL1.KDE clear", mdscr::SS, false),
        ("MDSCR_EL1.SS clear", mdscr::KDE, false),
        ("the OS lock set", mdscr::KDE | mdscr::SS, true),
    ];
    for (what, mdscr, os_lock) in gates {
        debug::reset_debug_state();
        debug::set_mdscr(mdscr);
        debug::set_os_lock(os_lock);
        let (result, seen) = debug::record_debug_exceptions(Resume::Step, debug::run_step_sequence);
        debug::set_mdscr(0);
        debug::set_os_lock(false);
        known_failure(os_lock && tcg(), QEMU_OS_LOCK, || {
            report!(
                result.is_ok() && seen.is_empty(),
                "with {what}, the sequence runs unstepped (stepped at {:x?})",
                return_addresses(&seen)
            )
        });
    }
    report_info!("MDSCR_EL1 {:#x} after the steps", debug::mdscr());
}

/// Reproducer: with the OS lock set, an enabled EL1 breakpoint must not fire (Arm ARM
/// pseudocode `AArch64.GenerateDebugExceptionsFrom`: OSLSR_EL1.OSLK == 1 returns FALSE).
fn reproduce_os_lock() {
    debug::reset_debug_state();
    let target = debug::unmask_sequence_addresses()[0];
    debug::set_breakpoint(0, target);
    debug::set_mdscr(BREAK_AND_WATCH);
    debug::set_os_lock(true);
    let locked = debug::oslsr();
    let seen = record_unmask_sequence(DebugExceptions::Unmasked);
    debug::set_os_lock(false);
    report!(
        locked & oslsr::OSLK != 0 && seen.is_empty(),
        "with the OS lock set (OSLSR_EL1 {locked:#x}), breakpoint 0 at {target:#x} does not fire (fired at {:x?})",
        return_addresses(&seen)
    );
}

/// Reproducer: after a stepped MSR DAIFSet, #8 sets PSTATE.D, no software step exception is
/// taken (Arm ARM pseudocode `CheckSoftwareStep`: the step is active-pending only where
/// `AArch64.GenerateDebugExceptions()`, which PSTATE.D makes FALSE at the same level).
fn reproduce_step_after_debug_mask() {
    debug::reset_debug_state();
    debug::set_mdscr(mdscr::KDE | mdscr::SS);
    let (_, seen) = debug::record_debug_exceptions(Resume::Step, debug::run_step_sequence);
    debug::set_mdscr(0);
    let masked: Vec<DebugException> = seen
        .into_iter()
        .filter(|record| record.spsr & SPSR_D != 0)
        .collect();
    report!(
        masked.is_empty(),
        "no software step exception interrupts code with PSTATE.D set (got {masked:x?})"
    );
}
