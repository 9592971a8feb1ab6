//! tsc: the time-stamp counter never goes backwards, RDTSCP reads it in order with RDTSC,
//! writes to IA32_TSC and IA32_TSC_ADJUST move it, and IA32_TSC_AUX reaches RDTSCP and RDPID.
//! With `migration` (entry `tsc-migration`): the TSC, IA32_TSC_ADJUST and TSC_AUX across a
//! live migration.
//!
//! QEMU's TCG implements neither IA32_TSC (MSR 0x10: reads 0, ignores writes) nor
//! IA32_TSC_ADJUST, and keeps bits 63:32 of TSC_AUX (target/i386/tcg/system/misc_helper.c):
//! those checks report KFAIL when CPUID leaf 0x40000000 says TCG, and FAIL anywhere else.
//! Reproducers: `reproduce-tsc-msr-read-tcg` (RDMSR reads 0, `helper_rdmsr`),
//! `reproduce-tsc-write` (the write does not move RDTSC, under TCG and kvm_pvm),
//! `reproduce-tsc-aux-reserved-bits-tcg` (TSC_AUX keeps bits 63:32, `helper_wrmsr`).
#![no_std]
#![no_main]

extern crate alloc;

use vmunit::arch::cpuid::{Feature, Vendor, is_tcg, vendor};
use vmunit::arch::instructions::{rdtsc, rdtsc_ordered, try_rdpid, try_rdtscp};
use vmunit::arch::msr::{self, try_rdmsr, try_wrmsr};
use vmunit::{Exception, Vector, prefix, report, report_info, report_kfail, report_skip, report_summary};

vmunit::main!(main);

/// How far the counter may run between a write and the read that checks it: 2^30 ticks, a
/// quarter second or more at today's TSC rates.
const TOLERANCE: u64 = 1 << 30;
/// kvm-unit-tests' test value for TSC writes and adjustments.
const BIG: u64 = 100_000_000_000;

/// What the test knows about where it runs.
struct Machine {
    intel: bool,
    /// CPUID leaf 0x40000000 says "TCGTCGTCGTCG": QEMU's TCG, whose gaps are known.
    tcg: bool,
    /// The runner says the host's KVM is kvm_pvm, which applies no offset to the guest's TSC:
    /// writes to IA32_TSC and IA32_TSC_ADJUST are stored but do not move RDTSC.
    pvm: bool,
}

fn main(args: &[&str]) -> i32 {
    let machine = Machine {
        intel: vendor() == Vendor::Intel,
        tcg: is_tcg(),
        pvm: vmunit::environment::instruction_emulating_kvm(),
    };
    report_info!("Intel vendor: {}, TCG signature: {}", machine.intel, machine.tcg);
    if args.contains(&"migration") {
        test_migration();
        return report_summary();
    }
    if args.contains(&"tsc_adjust") {
        // kvm-unit-tests' tsc_adjust entry: the TSC_ADJUST checks alone.
        test_tsc_adjust(&machine);
        return report_summary();
    }
    test_monotonic();
    test_rdtscp_order();
    // TSC_ADJUST first: it starts at 0 only until IA32_TSC is written.
    test_tsc_adjust(&machine);
    test_tsc_write(&machine);
    test_tsc_aux(&machine);
    report_summary()
}

/// Across a live migration (entry `tsc-migration`, group `migration`): the counter does not go
/// backwards, IA32_TSC_ADJUST keeps what the guest wrote to it (where CPUID offers it), and
/// IA32_TSC_AUX keeps its value, read by RDMSR and by RDTSCP.
fn test_migration() {
    let _prefix = prefix("migration");
    const AUX: u64 = 0x5a5a_1234;
    /// Written to IA32_TSC_ADJUST before the migration: the TSC moves ahead by it (SDM
    /// 18.17.3), about 80 s at 1 GHz, far from anything a reset or a lost write would leave.
    const ADJUST: u64 = 0x12_3456_789a;
    let rdtscp = Feature::Rdtscp.supported();
    if rdtscp && try_wrmsr(msr::IA32_TSC_AUX, AUX).is_err() {
        report!(false, "IA32_TSC_AUX takes {AUX:#x} before the migration");
    }
    let tsc_adjust = Feature::TscAdjust.supported();
    if tsc_adjust {
        let written = try_wrmsr(msr::IA32_TSC_ADJUST, ADJUST);
        let read = try_rdmsr(msr::IA32_TSC_ADJUST);
        report!(
            written.is_ok() && read == Ok(ADJUST),
            "before the migration IA32_TSC_ADJUST takes {ADJUST:#x} (WRMSR {written:x?}, read {read:x?})"
        );
    }
    let before = rdtsc_ordered();
    if vmunit::migrate() != vmunit::Migration::Completed {
        return;
    }
    let after = rdtsc_ordered();
    report!(
        after > before,
        "the TSC goes on from where it was: {before:#x} before the migration, {after:#x} after"
    );
    let (first, second) = (rdtsc_ordered(), rdtsc_ordered());
    report!(
        after <= first && first < second,
        "on the destination the TSC keeps increasing ({after:#x}, {first:#x}, {second:#x})"
    );
    if tsc_adjust {
        let read = try_rdmsr(msr::IA32_TSC_ADJUST);
        report!(
            read == Ok(ADJUST),
            "IA32_TSC_ADJUST keeps {ADJUST:#x} across the migration (got {read:x?})"
        );
    } else {
        report_skip!(
            "IA32_TSC_ADJUST is not advertised (CPUID.7.0:EBX[1]): not checked across the migration"
        );
    }
    if !rdtscp {
        report_skip!("no RDTSCP: IA32_TSC_AUX not checked");
        return;
    }
    let aux = try_rdmsr(msr::IA32_TSC_AUX);
    report!(
        aux == Ok(AUX),
        "IA32_TSC_AUX keeps {AUX:#x} across the migration (got {aux:x?})"
    );
    let read = try_rdtscp().map(|(_, auxiliary)| auxiliary);
    report!(
        read == Ok(AUX as u32),
        "RDTSCP returns TSC_AUX {AUX:#x} after the migration (got {read:x?})"
    );
}

/// Many back-to-back RDTSCs never go backwards, and the counter moves.
fn test_monotonic() {
    let _prefix = prefix("RDTSC");
    const READS: u32 = 100_000;
    let first = rdtsc();
    let mut previous = first;
    let mut backwards = 0;
    let mut worst = 0;
    for _ in 0..READS {
        let now = rdtsc();
        if now < previous {
            backwards += 1;
            worst = worst.max(previous - now);
        }
        previous = now;
    }
    report!(
        backwards == 0,
        "{READS} consecutive RDTSCs never go backwards (went back {backwards} times, by up to {worst:#x})"
    );
    report!(
        previous > first,
        "the TSC advances over {READS} reads (from {first:#x} to {previous:#x})"
    );
    let (start, end) = (rdtsc_ordered(), rdtsc_ordered());
    report!(
        end > start,
        "two LFENCE-ordered RDTSCs increase ({start:#x} then {end:#x})"
    );
}

/// RDTSCP waits for earlier instructions, so fenced RDTSCs around it bracket its value.
fn test_rdtscp_order() {
    let _prefix = prefix("RDTSCP");
    if !Feature::Rdtscp.supported() {
        report_skip!("RDTSCP is not advertised (CPUID.80000001H:EDX[27])");
        return;
    }
    const ROUNDS: u32 = 10_000;
    let mut failure = None;
    for _ in 0..ROUNDS {
        let before = rdtsc_ordered();
        let during = try_rdtscp();
        let after = rdtsc_ordered();
        match during {
            Ok((value, _)) if before <= value && value <= after => {}
            _ => {
                failure = Some((before, during, after));
                break;
            }
        }
    }
    let got =
        failure.map(|(before, during, after)| alloc::format!(" (got {before:#x}, {during:x?}, {after:#x})"));
    report!(
        failure.is_none(),
        "in {ROUNDS} rounds RDTSCP lies between the fenced RDTSCs before and after it{}",
        got.unwrap_or_default()
    );
}

/// Writes IA32_TSC (up to three tries, in case something stalls the guest between the write
/// and the read); returns the first RDTSC after the write that took, or the last one.
fn try_write_tsc(value: u64) -> Result<u64, Exception> {
    let mut read = 0;
    for _ in 0..3 {
        try_wrmsr(msr::IA32_TSC, value)?;
        read = rdtsc();
        if read.wrapping_sub(value) < TOLERANCE {
            break;
        }
    }
    Ok(read)
}

/// IA32_TSC: the counter takes a written value, forward or backward, and counts on from it.
fn test_tsc_write(machine: &Machine) {
    let _prefix = prefix("IA32_TSC");
    let before = rdtsc_ordered();
    let read = try_rdmsr(msr::IA32_TSC);
    let after = rdtsc_ordered();
    report_kfail!(
        machine.tcg,
        matches!(read, Ok(value) if before <= value && value <= after),
        "RDMSR(IA32_TSC) lies between the RDTSCs around it, {before:#x}..={after:#x} (got {read:x?})"
    );
    let start = rdtsc();
    // Far ahead, then back by far more than the tolerance, twice: a write that does not
    // take leaves the counter far from each target.
    let targets = [start.wrapping_add(1 << 40), start.wrapping_add(1 << 39), BIG];
    for target in targets {
        match try_write_tsc(target) {
            Ok(read) => {
                report_kfail!(
                    machine.tcg || machine.pvm,
                    read.wrapping_sub(target) < TOLERANCE,
                    "after WRMSR(IA32_TSC, {target:#x}) RDTSC reads it plus less than {TOLERANCE:#x} (got {read:#x})"
                );
                let later = [rdtsc(), rdtsc(), rdtsc()];
                report!(
                    read <= later[0] && later[0] <= later[1] && later[1] <= later[2],
                    "the TSC keeps increasing after the write (got {read:#x}, then {later:x?})"
                );
            }
            Err(exception) => {
                report!(
                    false,
                    "WRMSR(IA32_TSC, {target:#x}) succeeds (got {})",
                    exception.vector
                );
            }
        }
    }
    // Leave the counter about where it would have been without the writes.
    let elapsed = rdtsc().wrapping_sub(BIG);
    if elapsed < TOLERANCE * 4 {
        let _ = try_wrmsr(msr::IA32_TSC, start.wrapping_add(elapsed));
    }
}

/// IA32_TSC_ADJUST (CPUID.7.0:EBX[1]): adding to it moves the TSC by the same amount, and a
/// write to IA32_TSC adds the TSC's change to it (SDM 18.17.3).
fn test_tsc_adjust(machine: &Machine) {
    let _prefix = prefix("TSC_ADJUST");
    if !Feature::TscAdjust.supported() {
        report_skip!("IA32_TSC_ADJUST is not advertised (CPUID.7.0:EBX[1])");
        return;
    }
    let initial = try_rdmsr(msr::IA32_TSC_ADJUST);
    report!(
        initial == Ok(0),
        "IA32_TSC_ADJUST is 0 before anything wrote the TSC (got {initial:x?})"
    );
    let Ok(initial) = initial else { return };

    let before = rdtsc_ordered();
    let written = try_wrmsr(msr::IA32_TSC_ADJUST, initial.wrapping_add(BIG));
    let after = rdtsc_ordered();
    let read = try_rdmsr(msr::IA32_TSC_ADJUST);
    report!(
        written.is_ok() && read == Ok(initial.wrapping_add(BIG)),
        "IA32_TSC_ADJUST reads back {:#x} after it was written (WRMSR {written:x?}, read {read:x?})",
        initial.wrapping_add(BIG)
    );
    let jump = after.wrapping_sub(before);
    report_kfail!(
        machine.tcg || machine.pvm,
        (BIG..BIG + TOLERANCE).contains(&jump),
        "adding {BIG:#x} to IA32_TSC_ADJUST moves the TSC ahead by that much (moved {jump:#x})"
    );

    let before = rdtsc_ordered();
    let _ = try_wrmsr(msr::IA32_TSC_ADJUST, initial);
    let after = rdtsc_ordered();
    let read = try_rdmsr(msr::IA32_TSC_ADJUST);
    report!(
        read == Ok(initial),
        "IA32_TSC_ADJUST reads back {initial:#x} after it was written back (got {read:x?})"
    );
    let jump = before.wrapping_sub(after);
    report_kfail!(
        machine.tcg || machine.pvm,
        (BIG - TOLERANCE..=BIG).contains(&jump),
        "taking {BIG:#x} off IA32_TSC_ADJUST again moves the TSC back by that much, less the time between (moved back {jump:#x})"
    );

    // kvm-unit-tests' tsc_adjust.c: with TSC_ADJUST at 0, a write of BIG to IA32_TSC leaves
    // the internal count (TSC minus the adjustment it took) past the earlier RDTSC, and the
    // TSC at or past BIG.
    let before = rdtsc_ordered();
    let written = try_wrmsr(msr::IA32_TSC, BIG);
    let after = rdtsc_ordered();
    let adjust = try_rdmsr(msr::IA32_TSC_ADJUST).unwrap_or(0);
    report_kfail!(
        machine.tcg,
        written.is_ok() && before <= BIG.wrapping_sub(adjust),
        "after WRMSR(IA32_TSC, {BIG:#x}) the internal TSC ({BIG:#x} - TSC_ADJUST {adjust:#x}) is not behind the RDTSC before it ({before:#x})"
    );
    report_kfail!(
        machine.tcg || machine.pvm,
        after >= BIG,
        "after WRMSR(IA32_TSC, {BIG:#x}) RDTSC reads at least that (got {after:#x})"
    );
    let _ = try_wrmsr(msr::IA32_TSC_ADJUST, initial);

    // A write to IA32_TSC changes TSC_ADJUST by the same delta.
    let adjust_before = try_rdmsr(msr::IA32_TSC_ADJUST).unwrap_or(0);
    let tsc_before = rdtsc_ordered();
    let target = tsc_before.wrapping_add(BIG);
    let _ = try_wrmsr(msr::IA32_TSC, target);
    let adjust_after = try_rdmsr(msr::IA32_TSC_ADJUST).unwrap_or(0);
    let delta = adjust_after.wrapping_sub(adjust_before);
    report_kfail!(
        machine.tcg,
        delta <= BIG && BIG - delta < TOLERANCE,
        "WRMSR(IA32_TSC) {BIG:#x} ahead adds about {BIG:#x} to IA32_TSC_ADJUST (added {delta:#x})"
    );
    // Undo: the counter goes back by BIG, and so does the adjustment.
    let now = rdtsc();
    let _ = try_wrmsr(msr::IA32_TSC, now.wrapping_sub(BIG));
    let restored = try_rdmsr(msr::IA32_TSC_ADJUST);
    report_info!("IA32_TSC_ADJUST after undoing the TSC write: {restored:x?}");
}

/// IA32_TSC_AUX reaches RDTSCP's ECX and RDPID; bits 63:32 are reserved.
fn test_tsc_aux(machine: &Machine) {
    let _prefix = prefix("TSC_AUX");
    let rdtscp = Feature::Rdtscp.supported();
    let rdpid = Feature::Rdpid.supported();
    if !rdtscp && !rdpid {
        report_skip!("neither RDTSCP (CPUID.80000001H:EDX[27]) nor RDPID (CPUID.7.0:ECX[22]) is advertised");
        return;
    }
    let original = try_rdmsr(msr::IA32_TSC_AUX).unwrap_or(0);
    for value in [0u64, 10, 0x100, 0x8000_0001, 0xffff_ffff] {
        let written = try_wrmsr(msr::IA32_TSC_AUX, value);
        if let Err(exception) = written {
            report!(
                false,
                "WRMSR(TSC_AUX, {value:#x}) succeeds (got {})",
                exception.vector
            );
            continue;
        }
        if rdtscp {
            let result = try_rdtscp();
            report!(
                matches!(result, Ok((_, aux)) if u64::from(aux) == value),
                "RDTSCP returns TSC_AUX {value:#x} in ECX (got {result:x?})"
            );
        }
        if rdpid {
            let result = try_rdpid();
            report!(
                matches!(result, Ok(aux) if aux == value),
                "RDPID returns TSC_AUX {value:#x}, zero-extended (got {result:x?})"
            );
        }
    }
    // Bits 63:32 are reserved: Intel raises #GP; AMD processors ignore them (read as 0),
    // so for AMD either is right as long as the upper half does not stick.
    let value = 0x1234_5678;
    let _ = try_wrmsr(msr::IA32_TSC_AUX, value);
    let high = value | (1 << 40);
    let result = try_wrmsr(msr::IA32_TSC_AUX, high);
    let read = try_rdmsr(msr::IA32_TSC_AUX);
    let gp = matches!(
        result,
        Err(Exception {
            vector: Vector::GP,
            ..
        })
    );
    if machine.intel {
        report_kfail!(
            machine.tcg,
            gp,
            "WRMSR(TSC_AUX, {high:#x}) raises #GP: bits 63:32 are reserved (got {result:x?})"
        );
    } else {
        report_kfail!(
            machine.tcg,
            gp || read == Ok(value),
            "WRMSR(TSC_AUX, {high:#x}) raises #GP or drops the reserved bits 63:32 on AMD (WRMSR {result:x?}, read {read:x?})"
        );
    }
    let _ = try_wrmsr(msr::IA32_TSC_AUX, original);
}
