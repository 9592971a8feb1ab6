//! pmu: the Performance Monitors Extension (PMUv3) in kvm-unit-tests' modes: `cycle-counter`
//! (PMCR, and PMCCNTR counting only while enabled, reset by PMCR.C) and
//! `pmu-event-introspection` (PMCEID0 lists the events the architecture requires). Without
//! a PMU every check is skipped, saying why.
#![no_std]
#![no_main]

use vmunit::arch::pmu::event::{CPU_CYCLES, INST_RETIRED, INST_SPEC, STALL_BACKEND, STALL_FRONTEND, SW_INCR};
use vmunit::arch::pmu::{self, CYCLE_COUNTER, PMCR_C, PMCR_E, PMCR_LC};
use vmunit::arch::registers::pmcr;
use vmunit::{report, report_info, report_skip, report_summary};

vmunit::main!(main);

fn main(arguments: &[&str]) -> i32 {
    if !pmu::present() {
        report_skip!("no PMUv3: ID_AA64DFR0_EL1.PMUVer is {:#x}", pmu::version());
        return report_summary();
    }
    let pmcr = pmu::pmcr();
    report_info!(
        "PMUVer {:#x}, PMCR_EL0 {pmcr:#x}: implementer {:#x}, {} event counters",
        pmu::version(),
        pmcr::implementer(pmcr),
        pmcr::event_counters(pmcr)
    );
    match arguments.first().copied() {
        Some("cycle-counter") => cycle_counter(),
        Some("pmu-event-introspection") => event_introspection(),
        other => {
            report!(false, "a known mode was given (got {other:?})");
        }
    }
    report_summary()
}

/// Some work for the counters to count.
fn busy_loop() {
    let mut value = 0u64;
    for index in 0..100_000u64 {
        value = core::hint::black_box(value.wrapping_mul(31).wrapping_add(index));
    }
    core::hint::black_box(value);
}

fn cycle_counter() {
    // PMCNTENSET_EL0 bits of counters PMCR_EL0.N and above are RAZ/WI.
    let counters = pmcr::event_counters(pmu::pmcr());
    pmu::set_counter_enables(u64::from(u32::MAX));
    let enabled = pmu::counter_enables() & 0xffff_ffff;
    pmu::set_counter_disables(u64::from(u32::MAX));
    let expected = CYCLE_COUNTER | ((1 << counters) - 1);
    report!(
        enabled == expected,
        "PMCNTENSET_EL0 has exactly PMCR_EL0.N = {counters} event counters and C ({enabled:#x}, expected {expected:#x})"
    );
    // Count at EL0 and EL1, not at EL2 (PMCCFILTR_EL0: P, U, NSH clear).
    pmu::set_cycle_filter(0);
    pmu::set_counter_enables(CYCLE_COUNTER);
    pmu::set_pmcr(PMCR_E | PMCR_C | PMCR_LC);
    report!(
        pmu::counter_enables() & CYCLE_COUNTER != 0,
        "PMCNTENSET_EL0.C reads back as set"
    );
    let first = pmu::cycle_counter();
    busy_loop();
    let second = pmu::cycle_counter();
    report!(
        second > first,
        "PMCCNTR_EL0 increases across a loop ({first} then {second})"
    );
    busy_loop();
    let third = pmu::cycle_counter();
    report!(third > second, "and keeps increasing ({second} then {third})");

    pmu::set_counter_disables(CYCLE_COUNTER);
    let stopped = pmu::cycle_counter();
    busy_loop();
    let still = pmu::cycle_counter();
    report!(
        still == stopped,
        "with PMCNTENCLR_EL0.C the counter stops ({stopped} then {still})"
    );
    pmu::set_counter_enables(CYCLE_COUNTER);
    pmu::set_pmcr(PMCR_LC);
    let disabled = pmu::cycle_counter();
    busy_loop();
    let after = pmu::cycle_counter();
    report!(
        after == disabled,
        "with PMCR_EL0.E clear the counter stops ({disabled} then {after})"
    );
    pmu::set_pmcr(PMCR_E | PMCR_C | PMCR_LC);
    let reset = pmu::cycle_counter();
    report!(
        reset < still,
        "PMCR_EL0.C resets the cycle counter ({still} before, {reset} after)"
    );
    pmu::set_pmcr(0);
    pmu::set_counter_disables(CYCLE_COUNTER);
}

/// The common events every PMUv3 must implement: SW_INCR, CPU_CYCLES, and INST_RETIRED or
/// INST_SPEC; from PMUv3p1 on also STALL_FRONTEND and STALL_BACKEND.
fn event_introspection() {
    let listed = |event| pmu::event_supported(event);
    report!(listed(SW_INCR), "PMCEID lists SW_INCR (0x00)");
    report!(listed(CPU_CYCLES), "PMCEID lists CPU_CYCLES (0x11)");
    report!(
        listed(INST_RETIRED) || listed(INST_SPEC),
        "PMCEID lists INST_RETIRED (0x08) or INST_SPEC (0x1b)"
    );
    if pmu::version() >= pmu::VERSION_3_1 {
        report!(
            listed(STALL_FRONTEND) && listed(STALL_BACKEND),
            "PMUv3p1 and later: PMCEID lists STALL_FRONTEND (0x23) and STALL_BACKEND (0x24)"
        );
    }
}
