//! debug: the x86 debug facilities, like kvm-unit-tests' debug test (SDM Vol. 3, chapter 19):
//! DR0-DR7, instruction and data breakpoints, RF, single-stepping with TF across POPF and
//! the STI and MOV SS interrupt shadows, ICEBP, general detection (DR7.GD), DR4/DR5 aliasing
//! and the #GP and #UD of MOV DR.
//!
//! With `migration` (entry `debug-migration`, group `migration`): the debug registers and their
//! breakpoints across a live migration instead (module `migration`).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use vmunit::arch::apic::{self, register};
use vmunit::arch::control::{Cr4Flags, RFlags, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::debug::{
    DebugException, ShadowedInstruction, breakpoint_targets, call_breakpoint_target,
    call_breakpoint_target_with_resume_flag, dr6, dr7, general_detect_read_dr7, general_detect_write_dr0,
    icebp, load_watched, locked_compare_exchange_watched, mov_ss_from_watched_then, read_dr7,
    record_debug_exceptions, single_step_basic, single_step_cpuid, single_step_emulated_instructions,
    single_step_mov_ss, single_step_mov_ss_general_detect, single_step_mov_ss_icebp, single_step_sti,
    single_step_sti_hlt, store_watched, try_read_debug_register, try_write_debug_register, watched_address,
};
use vmunit::arch::exceptions::selector;
use vmunit::arch::interrupt_count::{count_interrupts, interrupt_count};

use vmunit::arch::{run_in_user_mode, trap_exceptions};
use vmunit::environment::instruction_emulating_kvm;
use vmunit::{Vector, known_failure, prefix, report, report_info, report_skip};

mod migration;

vmunit::main!(main);

/// DR6 after a single-step trap from a clear DR6.
const SINGLE_STEP: u64 = dr6::ACTIVE_LOW | dr6::BS;
/// Why data-breakpoint checks are known failures on this project's host.
const NO_DATA_BREAKPOINTS: &str =
    "this host's kvm_pvm never fires data breakpoints (reproduce-data-breakpoint)";
/// Why ICEBP and INT n are skipped on this project's host.
const NO_SOFTWARE_INTERRUPTS: &str =
    "this host's kvm_pvm stops the VM on INT1 (ICEBP), INT n and INT3 (KVM internal error, reproduce-int3)";

/// Why single-stepping MOV SS at CPL 0 is a known failure on this project's host.
const PVM_MOV_SS_SHADOW: &str = "this host's kvm_pvm delivers the single-step #DB right after a CPL-0 MOV SS \
     instead of after the next instruction (at CPL 3 it holds it back; reproduce-mov-ss-single-step)";
/// Why data breakpoints in the MOV SS shadow are known failures under TCG.
const TCG_MOV_SS_DATA_BREAKPOINT: &str = "QEMU's TCG delivers a data breakpoint's #DB right after MOV SS instead of \
     after the next instruction (bpt_helper.c, breakpoint_handler: FIXME; reproduce-mov-ss-data-breakpoint-tcg)";

fn main(args: &[&str]) {
    if args.contains(&"migration") {
        migration::run();
        return;
    }
    // First, before anything writes a debug register.
    initial_values();
    registers();
    aliases();
    general_detect();
    instruction_breakpoints();
    single_step();
    single_step_in_user_mode();
    data_breakpoints();
    software_debug_exceptions();
    bus_lock();
    clear_dr6();
}

/// Clears DR6's condition bits (writing 1 to its active-low bits).
fn clear_dr6() {
    let _ = try_write_debug_register(6, dr6::ACTIVE_LOW);
}

/// Turns every breakpoint off.
fn disable_breakpoints() {
    let _ = try_write_debug_register(7, dr7::FIXED_1);
}

/// DRn, or 0xdead when reading it faults (which the checks then show).
fn dr(index: u8) -> u64 {
    try_read_debug_register(index).unwrap_or(0xdead)
}

fn initial_values() {
    let _prefix = prefix("reset");
    let dr6 = try_read_debug_register(6);
    let dr7 = try_read_debug_register(7);
    report!(
        dr6 == Ok(dr6::ACTIVE_LOW),
        "DR6 is {:#x} at reset (got {dr6:x?})",
        dr6::ACTIVE_LOW
    );
    report!(
        dr7 == Ok(dr7::FIXED_1),
        "DR7 is {:#x} at reset (got {dr7:x?})",
        dr7::FIXED_1
    );
    for index in 0..4 {
        let value = try_read_debug_register(index);
        report!(value == Ok(0), "DR{index} is 0 at reset (got {value:x?})");
    }
}

fn registers() {
    let _prefix = prefix("MOV DR");
    let values = [
        0x0000_7fff_1234_5670,
        0xffff_8000_0000_1001,
        0x0000_0000_dead_bee2,
        0xffff_ffff_ffff_fff3,
    ];
    for (index, value) in (0u8..).zip(values) {
        let written = try_write_debug_register(index, value);
        let read = try_read_debug_register(index);
        report!(
            written.is_ok() && read == Ok(value),
            "DR{index} holds {value:#x} (wrote {written:x?}, read {read:x?})"
        );
    }
    for index in 0..4 {
        let _ = try_write_debug_register(index, 0);
    }

    // DR6: the condition bits are writable, the reserved bits read as 1.
    let rtm = Feature::Rtm.supported();
    let bus_lock_detect = Feature::BusLockDetect.supported();
    let mut zero = dr6::ACTIVE_LOW;
    if rtm {
        zero &= !(1 << 16);
    }
    if bus_lock_detect {
        zero &= !(1 << 11);
    }
    let _ = try_write_debug_register(6, 0);
    report!(
        dr(6) == zero,
        "DR6 written 0 reads {zero:#x}: reserved bits read 1 (got {:#x})",
        dr(6)
    );
    let conditions = dr6::BREAKPOINTS | dr6::BD | dr6::BS | dr6::BT;
    let _ = try_write_debug_register(6, conditions);
    report!(
        dr(6) == zero | conditions,
        "DR6's B0-B3, BD, BS, BT are writable (got {:#x})",
        dr(6)
    );
    clear_dr6();
    report!(dr(6) == dr6::ACTIVE_LOW, "DR6 can be cleared (got {:#x})", dr(6));

    // DR7: bit 10 reads 1; the enable bits and condition fields are writable.
    let _ = try_write_debug_register(7, 0);
    report!(
        dr(7) == dr7::FIXED_1,
        "DR7 written 0 reads {:#x} (got {:#x})",
        dr7::FIXED_1,
        dr(7)
    );
    for value in [
        dr7::FIXED_1 | 0xffff_0000,
        dr7::FIXED_1 | 0x3ff,
        dr7::FIXED_1 | dr7::GD,
    ] {
        let _ = try_write_debug_register(7, value);
        let read = try_read_debug_register(7);
        if value & dr7::GD != 0 {
            // Reading DR7 with GD set is a general-detect #DB (and clears GD).
            report!(
                matches!(read, Err(exception) if exception.vector == Vector::DB),
                "MOV from DR7 with DR7.GD set raises #DB (got {read:x?})"
            );
        } else {
            report!(read == Ok(value), "DR7 holds {value:#x} (got {read:x?})");
        }
        disable_breakpoints();
    }
    clear_dr6();

    // Bits 63:32 of DR6 and DR7 are reserved: writing 1s there is #GP(0).
    for (index, value) in [
        (6u8, dr6::ACTIVE_LOW | 1 << 32),
        (6, dr6::ACTIVE_LOW | 1 << 63),
        (7, dr7::FIXED_1 | 1 << 32),
        (7, dr7::FIXED_1 | 1 << 63),
    ] {
        let before = dr(index);
        let written = try_write_debug_register(index, value);
        let after = dr(index);
        report!(
            matches!(written, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0)
                && after == before,
            "writing {value:#x} to DR{index} raises #GP(0) and leaves DR{index} at {before:#x} (got {written:x?}, DR{index} {after:#x})"
        );
    }

    let user = run_in_user_mode(read_dr7);
    report!(
        matches!(user, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "MOV from DR7 at CPL 3 raises #GP(0) (got {user:x?})"
    );
}

fn aliases() {
    let _prefix = prefix("DR4/DR5");
    let cr4 = read_cr4();
    let cleared = try_write_cr4(cr4 & !Cr4Flags::DEBUGGING_EXTENSIONS.bits());
    report!(cleared.is_ok(), "CR4.DE can be cleared (got {cleared:x?})");
    let status = dr6::ACTIVE_LOW | dr6::BS | dr6::B1;
    let control = dr7::FIXED_1 | dr7::condition(0, dr7::WRITE, 4);
    for (alias, target, value) in [(4, 6, status), (5, 7, control)] {
        let written = try_write_debug_register(alias, value);
        report!(
            written.is_ok() && dr(target) == value,
            "with CR4.DE clear, writing DR{alias} writes DR{target} (wrote {written:x?}, DR{target} {:#x})",
            dr(target)
        );
        let read = try_read_debug_register(alias);
        report!(
            read == Ok(value),
            "with CR4.DE clear, DR{alias} reads DR{target}'s {value:#x} (got {read:x?})"
        );
    }
    disable_breakpoints();

    let set = try_write_cr4(cr4 | Cr4Flags::DEBUGGING_EXTENSIONS.bits());
    report!(set.is_ok(), "CR4.DE can be set (got {set:x?})");
    let undefined =
        |result: Result<(), vmunit::Exception>| matches!(result, Err(e) if e.vector == Vector::UD);
    for index in [4, 5] {
        let read = try_read_debug_register(index).map(|_| ());
        report!(
            undefined(read),
            "with CR4.DE set, MOV from DR{index} raises #UD (got {read:x?})"
        );
        let before = (dr(6), dr(7));
        let written = try_write_debug_register(index, dr6::ACTIVE_LOW | dr6::B0);
        report!(
            undefined(written) && (dr(6), dr(7)) == before,
            "with CR4.DE set, MOV to DR{index} raises #UD and writes nothing (got {written:x?})"
        );
    }
    let restored = try_write_cr4(cr4);
    report!(
        restored.is_ok(),
        "CR4 is restored to {cr4:#x} (got {restored:x?})"
    );
    clear_dr6();
}

/// Reports that `seen` holds exactly the #DBs `expected` lists, as (RIP, DR6, where), in
/// order: one line per sequence, with the addresses and DR6 values only when they differ (the
/// serial console is slow under KVM).
fn check_debug_exceptions(what: &str, seen: &[DebugException], expected: &[(u64, u64, &str)]) {
    let got: Vec<(u64, u64)> = seen.iter().map(|e| (e.rip, e.dr6)).collect();
    let wanted: Vec<(u64, u64)> = expected.iter().map(|&(rip, dr6, _)| (rip, dr6)).collect();
    let places = if expected.is_empty() {
        String::from("no #DB")
    } else {
        let names: Vec<&str> = expected.iter().map(|&(_, _, place)| place).collect();
        alloc::format!("#DB {}", names.join("; "))
    };
    let details = if got == wanted {
        String::new()
    } else {
        alloc::format!(" (expected (RIP, DR6) {wanted:x?}, got {got:x?})")
    };
    report!(got == wanted, "{what}: {places}{details}");
}

fn general_detect() {
    let _prefix = prefix("DR7.GD");
    clear_dr6();
    let ((value, address), seen) = match record_debug_exceptions(general_detect_read_dr7) {
        (Ok(result), seen) => (result, seen),
        (Err(exception), _) => {
            report!(false, "reading DR7 with GD set ends in {exception}");
            return;
        }
    };
    check_debug_exceptions(
        "MOV from DR7",
        &seen,
        &[(
            address,
            dr6::ACTIVE_LOW | dr6::BD,
            "before the MOV (a fault), DR6.BD",
        )],
    );
    report!(
        value == dr7::FIXED_1,
        "the #DB clears DR7.GD: the resumed MOV reads {:#x} (got {value:#x})",
        dr7::FIXED_1
    );
    clear_dr6();
    let target = 0x0000_7fff_0000_1230;
    let (address, seen) = record_debug_exceptions(|| general_detect_write_dr0(target));
    let address = address.unwrap_or(0);
    check_debug_exceptions(
        "MOV to DR0",
        &seen,
        &[(
            address,
            dr6::ACTIVE_LOW | dr6::BD,
            "before the MOV (a fault), DR6.BD",
        )],
    );
    report!(dr(0) == target, "the resumed MOV writes DR0 (got {:#x})", dr(0));
    let _ = try_write_debug_register(0, 0);
    disable_breakpoints();
    clear_dr6();
}

fn instruction_breakpoints() {
    let _prefix = prefix("instruction breakpoint");
    let [first, second] = breakpoint_targets();

    // As in debug.c: DR2, globally enabled.
    let _ = try_write_debug_register(2, first);
    let _ = try_write_debug_register(7, dr7::FIXED_1 | dr7::global(2));
    let (_, seen) = record_debug_exceptions(call_breakpoint_target);
    disable_breakpoints();
    check_debug_exceptions(
        "G2",
        &seen,
        &[(first, dr6::ACTIVE_LOW | dr6::B2, "before the instruction, DR6.B2")],
    );
    report!(
        seen.first()
            .is_some_and(|e| e.rflags & RFlags::RESUME_FLAG.bits() == 0),
        "the CPU does not set RF in the RFLAGS it pushes for an instruction breakpoint (got {:x?})",
        seen.first().map(|e| e.rflags)
    );

    // DR6.B0-B3 are reported afresh; BS, set by software, is left alone.
    let _ = try_write_debug_register(6, dr6::ACTIVE_LOW | dr6::BS | dr6::B1);
    let _ = try_write_debug_register(7, dr7::FIXED_1 | dr7::global(2));
    let (_, seen) = record_debug_exceptions(call_breakpoint_target);
    disable_breakpoints();
    check_debug_exceptions(
        "G2 with DR6.BS and B1 set",
        &seen,
        &[(
            first,
            dr6::ACTIVE_LOW | dr6::BS | dr6::B2,
            "DR6.B2, B1 cleared, BS kept",
        )],
    );

    // Each of DR0-DR3, locally enabled, on the second instruction.
    for index in 0..4u8 {
        clear_dr6();
        let _ = try_write_debug_register(index, second);
        let _ = try_write_debug_register(7, dr7::FIXED_1 | dr7::local(u32::from(index)));
        let (_, seen) = record_debug_exceptions(call_breakpoint_target);
        disable_breakpoints();
        let _ = try_write_debug_register(index, 0);
        check_debug_exceptions(
            &alloc::format!("L{index}"),
            &seen,
            &[(
                second,
                dr6::ACTIVE_LOW | 1 << index,
                "before the instruction, its B bit alone",
            )],
        );
    }

    // Not enabled: no #DB.
    clear_dr6();
    let _ = try_write_debug_register(1, first);
    let _ = try_write_debug_register(7, dr7::FIXED_1 | dr7::condition(1, dr7::EXECUTE, 1));
    let (_, seen) = record_debug_exceptions(call_breakpoint_target);
    disable_breakpoints();
    check_debug_exceptions("DR1 with L1 and G1 clear", &seen, &[]);

    // RF: entered by IRETQ with RF set, the first instruction runs without its breakpoint;
    // RF is then cleared, and the second instruction's breakpoint fires.
    clear_dr6();
    let _ = try_write_debug_register(0, first);
    let _ = try_write_debug_register(1, second);
    let _ = try_write_debug_register(7, dr7::FIXED_1 | dr7::local(0) | dr7::local(1));
    let (_, seen) = record_debug_exceptions(call_breakpoint_target_with_resume_flag);
    disable_breakpoints();
    check_debug_exceptions(
        "IRETQ with RF to DR0's instruction, then DR1's",
        &seen,
        &[(
            second,
            dr6::ACTIVE_LOW | dr6::B1,
            "at DR1's instruction only, DR6.B1",
        )],
    );
    let _ = try_write_debug_register(0, 0);
    let _ = try_write_debug_register(1, 0);
    clear_dr6();
}

/// Runs a single-step sequence under the recorder from a clear DR6.
fn step<const N: usize>(sequence: impl FnOnce() -> [u64; N]) -> ([u64; N], Vec<DebugException>) {
    clear_dr6();
    let (after, seen) = record_debug_exceptions(sequence);
    clear_dr6();
    (after.unwrap_or([0; N]), seen)
}

/// The expected single-step traps after each of `after[from..]`.
fn steps<'a>(after: &[u64], from: usize, names: &[&'a str]) -> Vec<(u64, u64, &'a str)> {
    after[from..]
        .iter()
        .zip(names)
        .map(|(&rip, &name)| (rip, SINGLE_STEP, name))
        .collect()
}

/// Checks that `seen` holds exactly a single-step #DB (DR6.BS) after each instruction from
/// `after[1]` on, named by `names`.
fn check_single_steps(what: &str, seen: &[DebugException], after: &[u64], names: &[&str]) {
    check_debug_exceptions(what, seen, &steps(after, 1, names));
}

const TIMER_VECTOR: u8 = 0xee;

fn single_step() {
    let _prefix = prefix("single-step");
    let (after, seen) = step(single_step_basic);
    check_single_steps(
        "TF set by POPFQ (DR6.BS each)",
        &seen,
        &after,
        &[
            "after AND (not after POPFQ)",
            "after PUSH",
            "after the POPFQ clearing TF",
        ],
    );

    let (after, seen) = step(single_step_emulated_instructions);
    check_single_steps(
        "emulated instructions (DR6.BS each)",
        &seen,
        &after,
        &[
            "after AND",
            "after PUSH",
            "after XOR",
            "after CPUID",
            "after MOV",
            "after IN",
            "after POPFQ",
        ],
    );

    let (after, seen) = step(single_step_sti);
    check_single_steps(
        "STI shadow (DR6.BS each)",
        &seen,
        &after,
        &[
            "after STI (not held back)",
            "after AND",
            "after PUSH",
            "after POPFQ",
        ],
    );

    let pvm = instruction_emulating_kvm();
    let (after, seen) = step(single_step_mov_ss);
    known_failure(pvm, PVM_MOV_SS_SHADOW, || {
        check_debug_exceptions(
            "MOV SS shadow (DR6.BS each)",
            &seen,
            &steps(
                &after,
                2,
                &["after AND (none after MOV SS)", "after PUSH", "after POPFQ"],
            ),
        );
    });

    if pvm {
        report_skip!("MOV SS shadow and ICEBP: {NO_SOFTWARE_INTERRUPTS}");
    } else {
        let (after, seen) = step(single_step_mov_ss_icebp);
        let mut expected = Vec::from([
            (after[2], dr6::ACTIVE_LOW, "after the first ICEBP, without BS"),
            (after[3], dr6::ACTIVE_LOW, "after the second ICEBP, without BS"),
        ]);
        expected.extend(steps(&after, 4, &["after AND", "after PUSH", "after POPFQ"]));
        check_debug_exceptions("MOV SS shadow and ICEBP (then DR6.BS)", &seen, &expected);
    }

    let (after, seen) = step(single_step_mov_ss_general_detect);
    let mut expected = Vec::from([(
        after[1],
        dr6::ACTIVE_LOW | dr6::BD,
        "before the MOV to DR6 (general detect, not held back)",
    )]);
    expected.extend(steps(
        &after,
        2,
        &["after the MOV to DR6", "after AND", "after PUSH", "after POPFQ"],
    ));
    // There, the early single-step #DB clears GD, so no general-detect #DB follows.
    known_failure(pvm, PVM_MOV_SS_SHADOW, || {
        check_debug_exceptions("MOV SS shadow and DR7.GD (then DR6.BS)", &seen, &expected);
    });
    report!(
        dr(7) == dr7::FIXED_1,
        "the general-detect #DB cleared DR7.GD (DR7 {:#x})",
        dr(7)
    );
    disable_breakpoints();

    // STI;HLT: a periodic APIC timer ends the HLT.
    count_interrupts(TIMER_VECTOR);
    apic::write(register::TIMER_DIVIDE, 0xb); // divide by 1
    apic::write(register::TIMER, apic::TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    apic::write(register::TIMER_INITIAL_COUNT, 2_000_000);
    let (after, seen) = step(single_step_sti_hlt);
    apic::write(register::TIMER, apic::MASKED);
    apic::write(register::TIMER_INITIAL_COUNT, 0);
    // Whether the HLT waits for the interrupt or ends with the single-step trap is not
    // checked (debug.c does not either); the timer makes sure it ends.
    let ticks = interrupt_count(TIMER_VECTOR);
    report_info!("STI;HLT: {ticks} APIC timer interrupts during the sequence");
    check_single_steps(
        "STI;HLT (DR6.BS each)",
        &seen,
        &after,
        &["after STI", "after HLT", "after AND", "after PUSH", "after POPFQ"],
    );
}

fn single_step_in_user_mode() {
    let _prefix = prefix("single-step at CPL 3");
    let in_user_mode = |seen: &[DebugException]| {
        report!(
            !seen.is_empty() && seen.iter().all(|e| e.cs & 3 == 3),
            "every #DB interrupted CPL 3 (CS {:x?})",
            seen.iter().map(|e| e.cs).collect::<Vec<_>>()
        );
    };
    let (after, seen) = step(|| run_in_user_mode(single_step_basic).unwrap_or([0; 4]));
    check_single_steps(
        "TF set by POPFQ (DR6.BS each)",
        &seen,
        &after,
        &["after AND", "after PUSH", "after POPFQ"],
    );
    in_user_mode(&seen);

    let (after, seen) = step(|| run_in_user_mode(single_step_cpuid).unwrap_or([0; 6]));
    check_single_steps(
        "CPUID (DR6.BS each)",
        &seen,
        &after,
        &[
            "after AND",
            "after PUSH",
            "after XOR",
            "after CPUID",
            "after POPFQ",
        ],
    );
    in_user_mode(&seen);

    let (after, seen) = step(|| run_in_user_mode(single_step_mov_ss).unwrap_or([0; 5]));
    check_debug_exceptions(
        "MOV SS shadow (DR6.BS each)",
        &seen,
        &steps(
            &after,
            2,
            &["after AND (none after MOV SS)", "after PUSH", "after POPFQ"],
        ),
    );
    in_user_mode(&seen);

    if instruction_emulating_kvm() {
        report_skip!("MOV SS shadow and ICEBP: {NO_SOFTWARE_INTERRUPTS}");
    } else {
        let (after, seen) = step(|| run_in_user_mode(single_step_mov_ss_icebp).unwrap_or([0; 7]));
        let mut expected = Vec::from([
            (after[2], dr6::ACTIVE_LOW, "after the first ICEBP, without BS"),
            (after[3], dr6::ACTIVE_LOW, "after the second ICEBP, without BS"),
        ]);
        expected.extend(steps(&after, 4, &["after AND", "after PUSH", "after POPFQ"]));
        check_debug_exceptions("MOV SS shadow and ICEBP (then DR6.BS)", &seen, &expected);
        in_user_mode(&seen);
    }
}

/// The byte of the watched buffer where the data breakpoints below start (8-byte aligned).
const WATCH: usize = 16;

/// Arms breakpoint `index` on `bytes` bytes at `address` for `condition`, runs `access`
/// under the recorder, disarms, and returns the access's result and the #DBs.
fn watch<R>(
    index: u8,
    address: u64,
    condition: u64,
    bytes: u64,
    access: impl FnOnce() -> R,
) -> (R, Vec<DebugException>) {
    let _ = try_write_debug_register(index, address);
    let _ = try_write_debug_register(
        7,
        dr7::FIXED_1 | dr7::local(u32::from(index)) | dr7::condition(u32::from(index), condition, bytes),
    );
    let (result, seen) = record_debug_exceptions(access);
    disable_breakpoints();
    let _ = try_write_debug_register(index, 0);
    (result.expect("the access does not fault"), seen)
}

fn data_breakpoints() {
    let _prefix = prefix("data breakpoint");
    let pvm = instruction_emulating_kvm();
    for (index, bytes) in (0u8..).zip([1usize, 2, 4, 8]) {
        let _prefix = prefix!("DR{index} {bytes}-byte");
        let start = watched_address(WATCH);
        let hit = dr6::ACTIVE_LOW | 1 << index;
        let length = bytes as u64;
        let last = WATCH + bytes - 1;
        // Accesses that must not fire.
        let (_, seen) = watch(index, start, dr7::WRITE, length, || {
            store_watched(WATCH + bytes, 1, 0)
        });
        check_debug_exceptions(
            &alloc::format!("a store to the byte after it (+{bytes})"),
            &seen,
            &[],
        );
        let (_, seen) = watch(index, start, dr7::WRITE, length, || {
            store_watched(WATCH - 1, 1, 0)
        });
        check_debug_exceptions("a store to the byte before it (-1)", &seen, &[]);
        let (_, seen) = watch(index, start, dr7::WRITE, length, || load_watched(WATCH, bytes));
        check_debug_exceptions("a load, with R/W = write only", &seen, &[]);

        // Accesses that must fire: a trap after the access, with the breakpoint's B bit.
        clear_dr6();
        let last_byte = watch(index, start, dr7::WRITE, length, || store_watched(last, 1, 0x5a));
        clear_dr6();
        let overlap = watch(index, start, dr7::WRITE, length, || {
            store_watched(WATCH - 4, 8, 0)
        });
        clear_dr6();
        let ((_, load_after), load_seen) =
            watch(index, start, dr7::READ_WRITE, length, || load_watched(last, 1));
        clear_dr6();
        known_failure(pvm, NO_DATA_BREAKPOINTS, || {
            check_debug_exceptions(
                &alloc::format!("a store to its last byte (+{})", bytes - 1),
                &last_byte.1,
                &[(last_byte.0, hit, "after the store (a trap), its B bit")],
            );
            check_debug_exceptions(
                "an 8-byte store that overlaps its first byte",
                &overlap.1,
                &[(overlap.0, hit, "after the store, its B bit")],
            );
            check_debug_exceptions(
                "a load of its last byte, with R/W = read/write",
                &load_seen,
                &[(load_after, hit, "after the load, its B bit")],
            );
        });

        if bytes > 1 {
            // An unaligned DRn: the SDM (Vol. 3, 19.2.5) says the CPU masks the address bits
            // below the length, but also that "unaligned data or I/O breakpoint addresses do
            // not yield valid results". What happens is shown, not checked (QEMU's TCG
            // watches DRn..DRn+LEN-1, target/i386/tcg/system/bpt_helper.c).
            let unaligned = start + length - 1;
            let (_, seen) = watch(index, unaligned, dr7::WRITE, length, || {
                store_watched(WATCH, 1, 0)
            });
            clear_dr6();
            let (_, past) = watch(index, unaligned, dr7::WRITE, length, || {
                store_watched(WATCH + bytes, 1, 0)
            });
            clear_dr6();
            report_info!(
                "DR{index} = start + {} (unaligned, undefined): a store to the aligned start \
                 raised {} #DB, a store past the aligned range {}",
                bytes - 1,
                seen.len(),
                past.len()
            );
        }
    }

    // As debug.c: a data breakpoint leaves a BS that software set, and sets only B1.
    let _prefix = prefix("DR1 4-byte");
    let mut results = Vec::new();
    for preset in [dr6::BS, 0] {
        let _ = try_write_debug_register(6, dr6::ACTIVE_LOW | preset);
        let (after, seen) = watch(1, watched_address(WATCH), dr7::WRITE, 4, || {
            store_watched(WATCH, 4, 42)
        });
        results.push((preset, after, seen));
    }
    clear_dr6();
    known_failure(pvm, NO_DATA_BREAKPOINTS, || {
        for (preset, after, seen) in &results {
            check_debug_exceptions(
                if *preset != 0 {
                    "with DR6.BS set"
                } else {
                    "with DR6 clear"
                },
                seen,
                &[(
                    *after,
                    dr6::ACTIVE_LOW | preset | dr6::B1,
                    "after the store, B1 (and BS as set)",
                )],
            );
        }
    });
}

fn software_debug_exceptions() {
    let _prefix = prefix("ICEBP");
    if instruction_emulating_kvm() {
        report_skip!("ICEBP and MOV SS with INT1, INT 1 and INT3: {NO_SOFTWARE_INTERRUPTS}");
        return;
    }
    clear_dr6();
    let (after, seen) = record_debug_exceptions(icebp);
    let after = after.unwrap_or(0);
    check_debug_exceptions(
        "alone",
        &seen,
        &[(after, dr6::ACTIVE_LOW, "after it, no DR6 condition bit")],
    );
    clear_dr6();

    // MOV SS loads SS from a word a read/write breakpoint watches: that #DB is held back by
    // the MOV SS shadow, so none is delivered between MOV SS and the next instruction, and
    // the delayed one must be neither lost nor doubled by the exception that instruction
    // raises (debug.c's "MOV SS + watchpoint + ICEBP / int $1 / INT3").
    let _prefix = prefix("MOV SS from a watched word");
    let tcg = is_tcg();
    store_watched(0, 2, u64::from(selector::KERNEL_DATA));
    let watched = watched_address(0);
    let list = |seen: &[DebugException]| seen.iter().map(|e| (e.rip, e.dr6)).collect::<Vec<_>>();
    let ((after_mov, after), seen) = watch(0, watched, dr7::READ_WRITE, 4, || {
        mov_ss_from_watched_then(ShadowedInstruction::Icebp)
    });
    known_failure(tcg, TCG_MOV_SS_DATA_BREAKPOINT, || {
        report!(
            seen.len() == 1 && seen[0].rip == after,
            "then ICEBP: one #DB, after the ICEBP at {after:#x}, none after MOV SS at {after_mov:#x} (got {:x?})",
            list(&seen)
        );
    });
    clear_dr6();
    let ((after_mov, after), seen) = watch(0, watched, dr7::READ_WRITE, 4, || {
        mov_ss_from_watched_then(ShadowedInstruction::Int1)
    });
    known_failure(tcg, TCG_MOV_SS_DATA_BREAKPOINT, || {
        report!(
            seen.len() == 2 && seen.iter().any(|e| e.rip == after) && seen.iter().all(|e| e.rip != after_mov),
            "then INT 1: two #DB (INT 1 returning to {after:#x}, and the data breakpoint), none after MOV SS at {after_mov:#x} (got {:x?})",
            list(&seen)
        );
    });
    clear_dr6();
    let (((after_mov, after), breakpoints), seen) = watch(0, watched, dr7::READ_WRITE, 4, || {
        trap_exceptions(&[Vector::BP], || {
            mov_ss_from_watched_then(ShadowedInstruction::Int3)
        })
    });
    known_failure(tcg, TCG_MOV_SS_DATA_BREAKPOINT, || {
        report!(
            seen.len() == 1
                && seen[0].rip != after_mov
                && breakpoints.len() == 1
                && breakpoints[0].rip == after,
            "then INT3: one #BP after the INT3 at {after:#x} and one #DB, not after MOV SS at {after_mov:#x} (got #DB {:x?}, #BP {:x?})",
            list(&seen),
            breakpoints.iter().map(|e| e.rip).collect::<Vec<_>>()
        );
    });
    clear_dr6();
}

fn bus_lock() {
    let _prefix = prefix("split lock");
    // A LOCK CMPXCHG across a cache line (a bus lock) raises neither #AC nor #DB while split
    // lock detection and bus lock detection are off, at CPL 0 and at CPL 3.
    const MAGIC: u64 = 0xdead_beef_dead_beef;
    const OFFSET: usize = 60;
    store_watched(OFFSET, 8, 0);
    let (found, seen) = record_debug_exceptions(|| locked_compare_exchange_watched(OFFSET, 0, MAGIC));
    let (value, _) = load_watched(OFFSET, 8);
    report!(
        found == Ok(0) && seen.is_empty() && value == MAGIC,
        "at CPL 0: no exception, the value is swapped (got {found:x?}, {} #DB, value {value:#x})",
        seen.len()
    );
    let (found, seen) = record_debug_exceptions(|| {
        run_in_user_mode(|| locked_compare_exchange_watched(OFFSET, MAGIC, !MAGIC))
    });
    let (value, _) = load_watched(OFFSET, 8);
    report!(
        found == Ok(Ok(MAGIC)) && seen.is_empty() && value == !MAGIC,
        "at CPL 3: no exception, the value is swapped (got {found:x?}, {} #DB, value {value:#x})",
        seen.len()
    );
}
