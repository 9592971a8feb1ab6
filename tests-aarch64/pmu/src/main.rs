//! pmu: the Performance Monitors Extension (PMUv3) in kvm-unit-tests' arm/pmu.c modes (one per
//! `test_args`): `cycle-counter [cpi]` (PMCCNTR counting, back-to-back reads, known-length loops,
//! an exact cycles-per-instruction ratio under QEMU `-icount`), `pmu-event-introspection`,
//! `pmu-event-counter-config`, `pmu-basic-event-count [icount]`, `pmu-mem-access`,
//! `pmu-mem-access-reliability`, `pmu-sw-incr`, `pmu-chained-counters`, `pmu-chained-sw-incr`,
//! `pmu-chain-promotion` and `pmu-overflow-interrupt`, the event modes with 32-bit and 64-bit
//! (PMCR_EL0.LP) overflows, and `enable-pending-overflow`, the reproducer of QEMU's PMU
//! interrupt left alone by PMCR_EL0.E. A mode whose events the PMU does not implement SKIPs,
//! naming them.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use vmunit::arch::pmu::event::{
    CHAIN, CPU_CYCLES, INST_RETIRED, INST_SPEC, MEM_ACCESS, STALL_BACKEND, STALL_FRONTEND, SW_INCR,
};
use vmunit::arch::pmu::{self, ALL_COUNTERS, CYCLE_COUNTER, CYCLE_COUNTER_INDEX, evtyper};
use vmunit::arch::registers::pmcr;
use vmunit::arch::{gic, interrupts};
use vmunit::{prefix, report, report_info, report_kfail, report_skip, report_summary};

vmunit::main!(main);

/// kvm-unit-tests' loop lengths: COUNT memory accesses, MARGIN of slack, COUNT_INT for the
/// interrupt test, NR_SAMPLES per measurement.
const COUNT: u64 = 250;
const MARGIN: u64 = 100;
const COUNT_INT: u64 = 1000;
const SAMPLES: usize = 10;
/// A value 16 below a 32-bit overflow (kvm-unit-tests' PRE_OVERFLOW_32).
const PRE_OVERFLOW_32: u64 = 0xffff_fff0;
/// A value 16 below a 64-bit overflow.
const PRE_OVERFLOW_64: u64 = 0xffff_ffff_ffff_fff0;
const ALL_SET_32: u64 = 0xffff_ffff;

fn main(arguments: &[&str]) -> i32 {
    if !pmu::present() {
        report_skip!("no PMUv3: ID_AA64DFR0_EL1.PMUVer is {:#x}", pmu::version());
        return report_summary();
    }
    let value = pmu::pmcr();
    report_info!(
        "PMUVer {:#x}, PMCR_EL0 {value:#x}: implementer {:#x}, ID code {:#x}, {} event counters",
        pmu::version(),
        pmcr::implementer(value),
        pmcr::identification(value),
        pmu::event_counters()
    );
    let mode = arguments.first().copied().unwrap_or("");
    let option = arguments.get(1).copied();
    let _prefix = prefix(mode);
    match mode {
        "cycle-counter" => cycle_counter(option.and_then(|cpi| cpi.parse().ok()).unwrap_or(0)),
        "pmu-event-introspection" => event_introspection(),
        "pmu-event-counter-config" => event_counter_config(),
        "pmu-basic-event-count" => each_width(|width| basic_event_count(width, option == Some("icount"))),
        "pmu-mem-access" => each_width(mem_access),
        "pmu-mem-access-reliability" => each_width(mem_access_reliability),
        "pmu-sw-incr" => each_width(sw_incr),
        "pmu-chained-counters" => chained_counters(),
        "pmu-chained-sw-incr" => chained_sw_incr(),
        "pmu-chain-promotion" => chain_promotion(),
        "pmu-overflow-interrupt" => each_width(overflow_interrupt),
        "enable-pending-overflow" => enable_pending_overflow(),
        other => {
            report!(false, "a known mode was given (got {other:?})");
        }
    }
    pmu::reset();
    report_summary()
}

/// Where the event counters overflow: at 32 bits, or at 64 (PMCR_EL0.LP, FEAT_PMUv3p5).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    Bits32,
    Bits64,
}

impl Width {
    fn name(self) -> &'static str {
        match self {
            Width::Bits32 => "32-bit overflows",
            Width::Bits64 => "64-bit overflows",
        }
    }

    /// 16 below the overflow.
    fn pre_overflow(self) -> u64 {
        match self {
            Width::Bits32 => PRE_OVERFLOW_32,
            Width::Bits64 => PRE_OVERFLOW_64,
        }
    }

    /// The counter value just before the overflow.
    fn all_set(self) -> u64 {
        match self {
            Width::Bits32 => ALL_SET_32,
            Width::Bits64 => u64::MAX,
        }
    }

    /// PMCR_EL0.LP for this width.
    fn lp(self) -> u64 {
        match self {
            Width::Bits32 => 0,
            Width::Bits64 => pmcr::LP,
        }
    }
}

/// Runs `test` for 32-bit and then 64-bit overflows, each under its prefix; 64-bit overflows
/// SKIP without FEAT_PMUv3p5.
fn each_width(test: impl Fn(Width)) {
    for width in [Width::Bits32, Width::Bits64] {
        let _prefix = prefix(width.name());
        if width == Width::Bits64 && !pmu::has_64bit_event_counters() {
            report_skip!(
                "64-bit overflows need FEAT_PMUv3p5 (PMUVer {:#x} < {:#x})",
                pmu::version(),
                pmu::VERSION_3_5
            );
            continue;
        }
        test(width);
    }
}

/// The bits an event counter keeps: all 64 from PMUv3p5 on (even when it overflows at 32),
/// else 32 (kvm-unit-tests' pmevcntr_mask).
fn counter_mask() -> u64 {
    if pmu::has_64bit_event_counters() {
        u64::MAX
    } else {
        ALL_SET_32
    }
}

/// PMCR_EL0's read-only fields, to write back with the control bits (kvm-unit-tests' pmcr_ro).
fn fixed() -> u64 {
    pmcr::fixed_fields(pmu::pmcr())
}

fn event_name(event: u32) -> &'static str {
    match event {
        SW_INCR => "SW_INCR",
        INST_RETIRED => "INST_RETIRED",
        CPU_CYCLES => "CPU_CYCLES",
        MEM_ACCESS => "MEM_ACCESS",
        INST_SPEC => "INST_SPEC",
        CHAIN => "CHAIN",
        STALL_FRONTEND => "STALL_FRONTEND",
        STALL_BACKEND => "STALL_BACKEND",
        _ => "an event",
    }
}

/// Where QEMU's TCG lacks `event` (target/arm/helper.c `pm_events[]`), for a SKIP's message.
fn tcg_note(event: u32) -> &'static str {
    if vmunit::environment::env("ACCEL") != Some("tcg") {
        return "";
    }
    match event {
        INST_RETIRED => "; QEMU TCG lists it only with -icount (target/arm/helper.c instructions_supported)",
        MEM_ACCESS | CHAIN => "; QEMU TCG has no such event (target/arm/helper.c pm_events[])",
        _ => "",
    }
}

/// Whether `counters` event counters exist and every event of `events` is implemented; if not
/// a SKIP says which is missing (kvm-unit-tests' satisfy_prerequisites).
fn prerequisites(events: &[u32], counters: u32) -> bool {
    if pmu::event_counters() < counters {
        report_skip!(
            "needs {counters} event counters, PMCR_EL0.N is {}",
            pmu::event_counters()
        );
        return false;
    }
    for &event in events {
        if !pmu::event_supported(event) {
            report_skip!(
                "{} ({event:#x}) is not implemented: PMCEID{}_EL0 bit {} is clear{}",
                event_name(event),
                event / 32,
                event % 32,
                tcg_note(event)
            );
            return false;
        }
    }
    true
}

/// Some work for the counters to count.
fn busy_loop() {
    let mut value = 0u64;
    for index in 0..100_000u64 {
        value = core::hint::black_box(value.wrapping_mul(31).wrapping_add(index));
    }
    core::hint::black_box(value);
}

fn cycle_counter(cpi: u64) {
    // PMCNTENSET_EL0 bits of counters PMCR_EL0.N and above are RAZ/WI.
    let counters = pmu::event_counters();
    pmu::set_counter_enables(ALL_COUNTERS);
    let enabled = pmu::counter_enables() & ALL_COUNTERS;
    pmu::set_counter_disables(ALL_COUNTERS);
    let expected = CYCLE_COUNTER | pmu::implemented_event_counters();
    report!(
        enabled == expected,
        "PMCNTENSET_EL0 has exactly PMCR_EL0.N = {counters} event counters and C ({enabled:#x}, expected {expected:#x})"
    );
    // Count at EL0 and EL1, not at EL2 (PMCCFILTR_EL0: P, U, NSH clear).
    pmu::set_cycle_filter(0);
    pmu::set_counter_enables(CYCLE_COUNTER);
    pmu::set_pmcr(pmcr::E | pmcr::C | pmcr::LC);
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
    pmu::set_pmcr(pmcr::LC);
    let disabled = pmu::cycle_counter();
    busy_loop();
    let after = pmu::cycle_counter();
    report!(
        after == disabled,
        "with PMCR_EL0.E clear the counter stops ({disabled} then {after})"
    );
    pmu::set_pmcr(pmcr::E | pmcr::C | pmcr::LC);
    let reset = pmu::cycle_counter();
    report!(
        reset < still,
        "PMCR_EL0.C resets the cycle counter ({still} before, {reset} after)"
    );
    pmu::set_pmcr(pmcr::LC);
    pmu::set_cycle_counter(0x1234_5678_9abc);
    let written = pmu::cycle_counter();
    report!(
        written == 0x1234_5678_9abc,
        "PMCCNTR_EL0 holds a 64-bit value written to it ({written:#x})"
    );

    cycles_increase();
    cycles_per_instruction(cpi);
}

/// kvm-unit-tests' check_cycles_increase: back-to-back PMCCNTR_EL0 reads strictly increase.
fn cycles_increase() {
    pmu::reset();
    pmu::set_counter_enables(CYCLE_COUNTER);
    pmu::set_cycle_filter(0);
    pmu::set_pmcr(fixed() | pmcr::LC | pmcr::C | pmcr::E);
    let mut samples = [0u64; SAMPLES + 1];
    for sample in samples.iter_mut() {
        *sample = pmu::cycle_counter();
    }
    pmu::set_pmcr(fixed() | pmcr::LC);
    let increasing = samples.windows(2).all(|pair| pair[0] < pair[1]);
    report!(
        increasing,
        "monotonically increasing cycle count: {SAMPLES} back-to-back reads ({} .. {})",
        samples[0],
        samples[SAMPLES]
    );
}

/// kvm-unit-tests' check_cpi: cycles over loops of 4, 36, ..., 292 instructions (PMCCNTR_EL0
/// written to 0, counting only inside the loop) are nonzero and fit in 32 bits; with `cpi`
/// given, each measurement is exactly instructions * cpi.
fn cycles_per_instruction(cpi: u64) {
    pmu::reset();
    pmu::set_counter_enables(CYCLE_COUNTER);
    pmu::set_cycle_filter(0);
    let control = fixed() | pmcr::LC | pmcr::C | pmcr::E;
    if cpi > 0 {
        report_info!("checking for exactly {cpi} cycles per instruction");
    }
    for instructions in (4..300u32).step_by(32) {
        let iterations = (instructions - 2) / 2;
        let (mut least, mut most, mut sum) = (u64::MAX, 0, 0);
        let mut all_exact = true;
        for _ in 0..SAMPLES {
            pmu::set_cycle_counter(0);
            pmu::precise_instructions_loop(iterations, control);
            let cycles = pmu::cycle_counter();
            least = least.min(cycles);
            most = most.max(cycles);
            sum += cycles;
            all_exact &= cycles == u64::from(instructions) * cpi;
        }
        let range = (least, most, sum / SAMPLES as u64);
        if cpi > 0 {
            report!(
                all_exact,
                "{instructions} instructions: {SAMPLES} samples of exactly {} cycles (min {}, max {}, average {})",
                u64::from(instructions) * cpi,
                range.0,
                range.1,
                range.2
            );
        } else {
            report!(
                least > 0 && most >> 32 == 0,
                "{instructions} instructions: {SAMPLES} samples, each nonzero and below 2^32 cycles (min {}, max {}, average {})",
                range.0,
                range.1,
                range.2
            );
        }
    }
}

/// The common events every PMUv3 must implement: SW_INCR, CPU_CYCLES, and INST_RETIRED or
/// INST_SPEC; from PMUv3p1 on also STALL_FRONTEND and STALL_BACKEND.
fn event_introspection() {
    if pmu::event_counters() == 0 {
        report_skip!("no event counter (PMCR_EL0.N is 0)");
        return;
    }
    let listed = pmu::event_supported;
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
    let (pmceid0, pmceid1) = pmu::common_event_identification();
    report_info!("PMCEID0_EL0 {pmceid0:#x}, PMCEID1_EL0 {pmceid1:#x}");
}

/// The evtCount field's mask for this PMU version.
fn event_field() -> u64 {
    if pmu::version() >= pmu::VERSION_3_1 {
        evtyper::EVENT
    } else {
        evtyper::EVENT_PMUV3
    }
}

/// kvm-unit-tests' test_event_counter_config, for every implemented counter: PMSELR_EL0 selects
/// the PMEVTYPER<n>/PMEVCNTR<n> that PMXEVTYPER/PMXEVCNTR reach, both ways; an unimplemented
/// common event reads back as written and counts nothing.
fn event_counter_config() {
    let counters = pmu::event_counters();
    if counters == 0 {
        report_skip!("no event counter (PMCR_EL0.N is 0)");
        return;
    }
    pmu::reset();
    // kvm-unit-tests' check on counter 0: 0xEA (an event outside the common range) through
    // PMXEVTYPER, 0xdeadbeef through PMXEVCNTR.
    pmu::select_counter(0);
    pmu::set_selected_event_type(0xea);
    pmu::set_selected_event_count(0xdead_beef);
    report!(
        pmu::event_type(0) & 0xfff == 0xea,
        "PMSELR/PMXEVTYPER/PMEVTYPERn: 0xea written through PMXEVTYPER_EL0 reads back from PMEVTYPER0_EL0 ({:#x})",
        pmu::event_type(0)
    );
    report!(
        pmu::event_count(0) == 0xdead_beef,
        "PMSELR/PMXEVCNTR/PMEVCNTRn: 0xdeadbeef written through PMXEVCNTR_EL0 reads back from PMEVCNTR0_EL0 ({:#x})",
        pmu::event_count(0)
    );
    let (mut selects, mut indirect_types, mut direct_types, mut indirect_counts, mut direct_counts) =
        (true, true, true, true, true);
    for counter in 0..counters {
        let event = u64::from(counter) + 1;
        let value = 0x1000 * u64::from(counter) + 0x55;
        pmu::select_counter(u64::from(counter));
        selects &= pmu::selected_counter() & 0x1f == u64::from(counter);
        pmu::set_selected_event_type(event | evtyper::U);
        indirect_types &= pmu::event_type(counter) & (event_field() | evtyper::U) == event | evtyper::U;
        pmu::set_event_type(counter, event + 0x10);
        direct_types &= pmu::selected_event_type() & event_field() == event + 0x10;
        pmu::set_selected_event_count(value);
        indirect_counts &= pmu::event_count(counter) & ALL_SET_32 == value;
        pmu::set_event_count(counter, value + 1);
        direct_counts &= pmu::selected_event_count() & ALL_SET_32 == value + 1;
    }
    report!(
        selects,
        "PMSELR_EL0.SEL reads back each of the {counters} counters"
    );
    report!(
        indirect_types,
        "PMXEVTYPER_EL0 writes reach PMEVTYPER<n>_EL0 of the selected counter, each of {counters}"
    );
    report!(
        direct_types,
        "PMEVTYPER<n>_EL0 writes read back through PMXEVTYPER_EL0, each of {counters}"
    );
    report!(
        indirect_counts,
        "PMXEVCNTR_EL0 writes reach PMEVCNTR<n>_EL0 of the selected counter, each of {counters}"
    );
    report!(
        direct_counts,
        "PMEVCNTR<n>_EL0 writes read back through PMXEVCNTR_EL0, each of {counters}"
    );
    // PMSELR_EL0.SEL = 31 makes PMXEVTYPER_EL0 the cycle counter's filter, PMCCFILTR_EL0.
    pmu::select_counter(u64::from(CYCLE_COUNTER_INDEX));
    pmu::set_selected_event_type(evtyper::U);
    let filter = pmu::cycle_filter();
    pmu::set_cycle_filter(0);
    report!(
        filter & evtyper::U != 0 && pmu::selected_event_type() & evtyper::U == 0,
        "with PMSELR_EL0.SEL = 31, PMXEVTYPER_EL0 is PMCCFILTR_EL0 (U written reads {filter:#x})"
    );

    // An unimplemented common event within 0x00..=0x3f.
    let Some(unsupported) = (0..=pmu::event::LAST_COMMON).find(|&event| !pmu::event_supported(event)) else {
        report_skip!("pmevtyper: all events within [0x0, 0x3f] are implemented");
        return;
    };
    pmu::select_counter(0);
    pmu::set_selected_event_type(u64::from(unsupported));
    pmu::set_selected_event_count(u64::from(unsupported));
    let _ = pmu::selected_event_count();
    report!(
        pmu::selected_event_count() == u64::from(unsupported),
        "read of a counter programmed with unimplemented event {unsupported:#x}"
    );
    report!(
        pmu::selected_event_type() & event_field() == u64::from(unsupported),
        "evtCount keeps the unimplemented event {unsupported:#x} written to it"
    );
    pmu::set_counter_enables(1);
    pmu::precise_instructions_loop(100, fixed() | pmcr::E);
    let after = pmu::event_count(0);
    pmu::set_counter_disables(1);
    report!(
        after == u64::from(unsupported),
        "a counter of unimplemented event {unsupported:#x} counts nothing over a loop (reads {after:#x})"
    );
}

/// kvm-unit-tests' test_basic_event_count: CPU_CYCLES on counter 0 from 16 below the overflow,
/// INST_RETIRED on counter 1 from 0, over a 20-iteration loop; the enable, overflow and
/// interrupt-enable registers keep only implemented counters. With `exact` (QEMU `-icount
/// shift=0`), INST_RETIRED counts the loop's instructions exactly, and CPU_CYCLES as many.
fn basic_event_count(width: Width, exact: bool) {
    if !prerequisites(&[CPU_CYCLES, INST_RETIRED], 2) {
        return;
    }
    let pre_overflow = width.pre_overflow();
    let implemented = pmu::implemented_event_counters();
    let unimplemented = !(CYCLE_COUNTER | implemented) & ALL_COUNTERS;
    pmu::count_event(0, CPU_CYCLES);
    pmu::count_event(1, INST_RETIRED);

    pmu::set_counter_disables(ALL_COUNTERS);
    report!(
        pmu::counter_disables() == 0 && pmu::counter_enables() == 0,
        "pmcntenclr: disable all counters"
    );
    pmu::set_pmcr(fixed() | pmcr::LC | pmcr::C | pmcr::P | width.lp());
    let value = pmu::pmcr();
    report!(
        value == fixed() | pmcr::LC | width.lp(),
        "pmcr: reset counters (PMCR_EL0 {value:#x}: P and C read as 0, LC{} kept)",
        if width == Width::Bits64 { " and LP" } else { "" }
    );
    pmu::set_event_count(0, pre_overflow);
    report!(
        pmu::event_count(0) == pre_overflow,
        "counter #0 preset to pre-overflow value {pre_overflow:#x}"
    );
    report!(pmu::event_count(1) == 0, "counter #1 is 0 after PMCR_EL0.P");
    pmu::set_counter_enables(implemented | unimplemented);
    report!(
        pmu::counter_enables() == pmu::counter_disables() && pmu::counter_enables() == implemented,
        "pmcntenset: enabled implemented_counters ({:#x}, expected {implemented:#x})",
        pmu::counter_enables()
    );
    pmu::set_counter_disables(!0x3 & ALL_COUNTERS);
    report!(
        pmu::counter_enables() == pmu::counter_disables() && pmu::counter_enables() == 0x3,
        "pmcntenset: just enabled #0 and #1"
    );
    pmu::set_overflow_status(ALL_COUNTERS);
    report!(pmu::overflow_status() == 0, "check overflow reg is 0");
    pmu::set_interrupt_disables(ALL_COUNTERS);
    report!(
        pmu::interrupt_disables() == 0,
        "pmintenclr_el1=0, all interrupts disabled"
    );
    pmu::set_interrupt_enables(implemented | unimplemented);
    report!(
        pmu::interrupt_enables() == implemented,
        "overflow interrupts enabled on all implemented counters ({:#x})",
        pmu::interrupt_enables()
    );
    // IRQs stay masked and the GIC uninitialised: the overflow is only flagged.
    pmu::set_interrupt_disables(ALL_COUNTERS);
    pmu::set_overflows(ALL_COUNTERS);
    let flags = pmu::overflow_set();
    pmu::set_overflow_status(ALL_COUNTERS);
    report!(
        flags == implemented | CYCLE_COUNTER && pmu::overflow_status() == 0,
        "PMOVSSET_EL0 sets the flags of implemented counters only ({flags:#x}), PMOVSCLR_EL0 clears them"
    );

    const ITERATIONS: u32 = 20;
    pmu::precise_instructions_loop(ITERATIONS, fixed() | pmcr::E | width.lp());
    let (cycles_value, instructions) = (pmu::event_count(0), pmu::event_count(1));
    let cycles = cycles_value.wrapping_sub(pre_overflow) & counter_mask();
    report_info!(
        "counter #0 is {cycles_value:#x} (CPU_CYCLES), counter #1 is {instructions:#x} (INST_RETIRED)"
    );
    report!(
        pmu::overflow_status() == 0x1,
        "check overflow happened on #0 only (PMOVSCLR_EL0 {:#x})",
        pmu::overflow_status()
    );
    let expected = pmu::precise_loop_instructions(ITERATIONS);
    if exact {
        report!(
            instructions == expected,
            "INST_RETIRED counted the loop's {expected} instructions exactly (got {instructions})"
        );
        report!(
            cycles == expected,
            "CPU_CYCLES counted one cycle per instruction under -icount shift=0 ({cycles}, expected {expected}); the counter kept {} bits past the 32-bit overflow",
            if pmu::has_64bit_event_counters() { 64 } else { 32 }
        );
    } else {
        report!(
            (2 * u64::from(ITERATIONS)..=expected + MARGIN).contains(&instructions),
            "INST_RETIRED counted the loop's {expected} instructions within {MARGIN} (got {instructions})"
        );
        report!(
            (16..=u64::from(u32::MAX)).contains(&cycles),
            "CPU_CYCLES counted past the overflow: {cycles} cycles (the counter keeps {} bits)",
            if pmu::has_64bit_event_counters() { 64 } else { 32 }
        );
    }
}

/// kvm-unit-tests' test_mem_access: MEM_ACCESS on counters 0 and 1 over 20 loads.
fn mem_access(width: Width) {
    if !prerequisites(&[MEM_ACCESS, MEM_ACCESS], 2) {
        return;
    }
    let data = core::hint::black_box(0u64);
    pmu::reset();
    pmu::count_event(0, MEM_ACCESS);
    pmu::count_event(1, MEM_ACCESS);
    pmu::set_counter_enables(0x3);
    pmu::memory_access_loop(&data, 20, fixed() | pmcr::E | width.lp());
    let (first, second) = (pmu::event_count(0), pmu::event_count(1));
    report_info!("counter #0 is {first:#x} (MEM_ACCESS), counter #1 is {second:#x} (MEM_ACCESS)");
    // A core may count more than the 20 loads.
    report!(
        first == second && first >= 20 && pmu::overflow_status() == 0,
        "Ran 20 mem accesses ({first} and {second} counted, PMOVSCLR_EL0 {:#x})",
        pmu::overflow_status()
    );

    pmu::reset();
    pmu::set_event_count(0, width.pre_overflow());
    pmu::set_event_count(1, width.pre_overflow());
    pmu::set_counter_enables(0x3);
    pmu::memory_access_loop(&data, 20, fixed() | pmcr::E | width.lp());
    report!(
        pmu::overflow_status() == 0x3,
        "Ran 20 mem accesses with expected overflows on both counters (PMOVSCLR_EL0 {:#x}, #0 {:#x}, #1 {:#x})",
        pmu::overflow_status(),
        pmu::event_count(0),
        pmu::event_count(1)
    );
}

/// kvm-unit-tests' test_mem_access_reliability: 100 runs of COUNT loads from MARGIN + COUNT
/// below the overflow never overflow; every run counts at least COUNT.
fn mem_access_reliability(width: Width) {
    if !prerequisites(&[MEM_ACCESS], 1) {
        return;
    }
    let data = core::hint::black_box(0u64);
    let pre_overflow2 = width.all_set() - COUNT - MARGIN;
    let (mut least, mut most, mut overflow) = (u64::MAX, 0, false);
    pmu::reset();
    pmu::count_event(0, MEM_ACCESS);
    for _ in 0..100 {
        pmu::reset();
        pmu::set_event_count(0, pre_overflow2);
        pmu::set_counter_enables(0x1);
        pmu::memory_access_loop(&data, COUNT, fixed() | pmcr::E | width.lp());
        let value = pmu::event_count(0);
        let events = value.wrapping_sub(pre_overflow2) & counter_mask();
        overflow |= value < pre_overflow2;
        least = least.min(events);
        most = most.max(events);
    }
    report_info!("min {least}, max {most}, expected {COUNT}, acceptable margin {MARGIN}");
    report!(
        !overflow,
        "mem_access count is reliable (no overflow in 100 runs)"
    );
    report!(
        least >= COUNT,
        "every run counted at least its {COUNT} loads (min {least})"
    );
}

/// kvm-unit-tests' test_sw_incr: PMSWINC_EL0 does nothing with PMCR_EL0.E clear; with it set,
/// 100 increments reach counter 0 (from 16 below the overflow: it overflows) and counter 1;
/// a disabled counter or one counting another event ignores them.
fn sw_incr(width: Width) {
    if !prerequisites(&[SW_INCR, SW_INCR], 2) {
        return;
    }
    let pre_overflow = width.pre_overflow();
    let expected0 = pre_overflow.wrapping_add(100) & counter_mask();
    pmu::reset();
    pmu::count_event(0, SW_INCR);
    pmu::count_event(1, SW_INCR);
    pmu::set_counter_enables(0x3);
    pmu::set_event_count(0, pre_overflow);
    for _ in 0..100 {
        pmu::software_increment(0x1);
    }
    vmunit::arch::instructions::isb();
    report!(
        pmu::event_count(0) == pre_overflow,
        "PWSYNC does not increment if PMCR.E is unset ({:#x})",
        pmu::event_count(0)
    );

    pmu::reset();
    pmu::set_event_count(0, pre_overflow);
    pmu::set_counter_enables(0x3);
    let third = pmu::event_counters() >= 3;
    if third {
        // Counter 2 counts SW_INCR but is not enabled: its PMSWINC_EL0 bit does nothing.
        pmu::count_event(2, SW_INCR);
        pmu::set_event_count(2, 0);
    }
    pmu::set_pmcr(fixed() | pmcr::E | width.lp());
    for _ in 0..100 {
        pmu::software_increment(if third { 0x7 } else { 0x3 });
    }
    vmunit::arch::instructions::isb();
    let (first, second) = (pmu::event_count(0), pmu::event_count(1));
    report!(
        first == expected0,
        "counter #0 after + 100 SW_INCR ({first:#x}, expected {expected0:#x})"
    );
    report!(second == 100, "counter #1 after + 100 SW_INCR ({second})");
    report!(
        pmu::overflow_status() == 0x1,
        "overflow on counter #0 after 100 SW_INCR (PMOVSCLR_EL0 {:#x})",
        pmu::overflow_status()
    );
    if third {
        report!(
            pmu::event_count(2) == 0,
            "a disabled SW_INCR counter (#2) ignores PMSWINC_EL0 ({})",
            pmu::event_count(2)
        );
    }
    // A counter counting another event ignores its PMSWINC_EL0 bit: counter 1 now counts an
    // unimplemented common event, which never happens.
    if let Some(other) = (0x01..=pmu::event::LAST_COMMON).find(|&event| !pmu::event_supported(event)) {
        pmu::set_event_count(1, 0);
        pmu::count_event(1, other);
        for _ in 0..10 {
            pmu::software_increment(0x2);
        }
        vmunit::arch::instructions::isb();
        report!(
            pmu::event_count(1) == 0,
            "a counter of event {other:#x}, not SW_INCR, ignores PMSWINC_EL0 ({})",
            pmu::event_count(1)
        );
    }
    pmu::set_pmcr(fixed());
}

/// Enables the odd counter of a chained pair first, then the even one.
fn enable_chain_counter(even: u32) {
    pmu::set_counter_enables(1 << (even + 1));
    pmu::set_counter_enables(1 << even);
}

/// Disables the even counter of a chained pair first, then the odd one.
fn disable_chain_counter(even: u32) {
    pmu::set_counter_disables(1 << even);
    pmu::set_counter_disables(1 << (even + 1));
}

/// kvm-unit-tests' test_chained_counters: CPU_CYCLES on counter 0 overflowing into a CHAIN
/// counter 1, which increments, and wraps with both overflow flags.
fn chained_counters() {
    let _prefix = prefix(Width::Bits32.name());
    if !prerequisites(&[CPU_CYCLES, CHAIN], 2) {
        return;
    }
    let all_set = counter_mask();
    pmu::reset();
    pmu::count_event(0, CPU_CYCLES);
    pmu::count_event(1, CHAIN);
    pmu::set_event_count(0, PRE_OVERFLOW_32);
    enable_chain_counter(0);
    pmu::precise_instructions_loop(22, fixed() | pmcr::E);
    report!(
        pmu::event_count(1) == 1,
        "CHAIN counter #1 incremented ({})",
        pmu::event_count(1)
    );
    report!(
        pmu::overflow_status() == 0x1,
        "overflow recorded for chained incr #1 ({:#x})",
        pmu::overflow_status()
    );

    pmu::reset();
    pmu::set_event_count(0, PRE_OVERFLOW_32);
    pmu::set_event_count(1, 0x1);
    enable_chain_counter(0);
    pmu::precise_instructions_loop(22, fixed() | pmcr::E);
    report!(
        pmu::event_count(1) == 2,
        "CHAIN counter #1 set to 2 ({})",
        pmu::event_count(1)
    );
    report!(
        pmu::overflow_status() == 0x1,
        "overflow recorded for chained incr #2 ({:#x})",
        pmu::overflow_status()
    );

    pmu::set_event_count(0, PRE_OVERFLOW_32);
    pmu::set_event_count(1, all_set);
    pmu::precise_instructions_loop(22, fixed() | pmcr::E);
    report!(
        pmu::event_count(1) == 0,
        "CHAIN counter #1 wrapped ({:#x})",
        pmu::event_count(1)
    );
    report!(
        pmu::overflow_status() == 0x3,
        "overflow on even and odd counters ({:#x})",
        pmu::overflow_status()
    );
}

/// kvm-unit-tests' test_chained_sw_incr: SW_INCR on counter 0 overflowing into a CHAIN
/// counter 1, then that counter overflowing too.
fn chained_sw_incr() {
    let _prefix = prefix(Width::Bits32.name());
    if !prerequisites(&[SW_INCR, CHAIN], 2) {
        return;
    }
    let expected0 = PRE_OVERFLOW_32.wrapping_add(100) & counter_mask();
    let expected1 = (ALL_SET_32 + 1) & counter_mask();
    pmu::reset();
    pmu::count_event(0, SW_INCR);
    pmu::count_event(1, CHAIN);
    enable_chain_counter(0);
    pmu::set_event_count(0, PRE_OVERFLOW_32);
    pmu::set_pmcr(fixed() | pmcr::E);
    for _ in 0..100 {
        pmu::software_increment(0x1);
    }
    vmunit::arch::instructions::isb();
    report!(
        pmu::overflow_status() == 0x1 && pmu::event_count(1) == 1,
        "overflow and chain counter incremented after 100 SW_INCR/CHAIN (PMOVSCLR_EL0 {:#x}, #0 {:#x}, #1 {:#x})",
        pmu::overflow_status(),
        pmu::event_count(0),
        pmu::event_count(1)
    );

    pmu::reset();
    pmu::set_event_count(0, PRE_OVERFLOW_32);
    pmu::set_event_count(1, ALL_SET_32);
    enable_chain_counter(0);
    pmu::set_pmcr(fixed() | pmcr::E);
    for _ in 0..100 {
        pmu::software_increment(0x1);
    }
    vmunit::arch::instructions::isb();
    report!(
        pmu::overflow_status() == 0x3 && pmu::event_count(0) == expected0 && pmu::event_count(1) == expected1,
        "expected overflows and values after 100 SW_INCR/CHAIN (PMOVSCLR_EL0 {:#x}, #0 {:#x}, #1 {:#x})",
        pmu::overflow_status(),
        pmu::event_count(0),
        pmu::event_count(1)
    );
    pmu::set_pmcr(fixed());
}

fn print_registers(when: &str) {
    report_info!(
        "{when}: #1 {:#x} #0 {:#x} overflow {:#x}",
        pmu::event_count(1),
        pmu::event_count(0),
        pmu::overflow_status()
    );
}

/// kvm-unit-tests' test_chain_promotion: a MEM_ACCESS counter 0 and a CHAIN counter 1 enabled
/// and disabled in turn, and turned from 32-bit counters into a chained pair and back.
fn chain_promotion() {
    let _prefix = prefix(Width::Bits32.name());
    if !prerequisites(&[MEM_ACCESS, CHAIN], 2) {
        return;
    }
    let data = core::hint::black_box(0u64);
    let pre_overflow2 = ALL_SET_32 - COUNT - MARGIN;
    let run = |data: &u64| pmu::memory_access_loop(data, COUNT, fixed() | pmcr::E);
    {
        let _prefix = prefix("subtest1");
        pmu::reset();
        pmu::count_event(0, MEM_ACCESS);
        pmu::count_event(1, CHAIN);
        pmu::set_counter_enables(0x2);
        run(&data);
        print_registers("post");
        report!(
            pmu::event_count(0) == 0,
            "chain counter not counting if even counter is disabled"
        );
    }
    {
        let _prefix = prefix("subtest2");
        pmu::reset();
        pmu::set_event_count(0, PRE_OVERFLOW_32);
        pmu::set_counter_enables(0x1);
        run(&data);
        print_registers("post");
        report!(
            pmu::event_count(1) == 0 && pmu::overflow_status() == 0x1,
            "odd counter did not increment on overflow if disabled"
        );
    }
    {
        let _prefix = prefix("subtest3");
        pmu::reset();
        pmu::set_event_count(0, pre_overflow2);
        enable_chain_counter(0);
        run(&data);
        print_registers("after 1st loop");
        disable_chain_counter(0);
        pmu::set_counter_enables(0x1);
        run(&data);
        print_registers("after 2nd loop");
        report!(
            pmu::overflow_status() == 0x1,
            "should have triggered an overflow on #0"
        );
        report!(
            pmu::event_count(1) == 0,
            "CHAIN counter #1 shouldn't have incremented"
        );
    }
    {
        let _prefix = prefix("subtest4");
        pmu::reset();
        pmu::set_counter_enables(0x1);
        pmu::set_event_count(0, pre_overflow2);
        run(&data);
        print_registers("after 1st loop");
        pmu::set_counter_disables(0x1);
        enable_chain_counter(0);
        run(&data);
        print_registers("after 2nd loop");
        report!(
            pmu::event_count(1) == 1 && pmu::overflow_status() == 0x1,
            "CHAIN counter enabled: CHAIN counter was incremented and overflow"
        );
    }
    {
        let _prefix = prefix("subtest5");
        pmu::reset();
        pmu::count_event(0, MEM_ACCESS);
        pmu::count_event(1, CPU_CYCLES);
        pmu::set_counter_enables(0x3);
        pmu::set_event_count(0, pre_overflow2);
        run(&data);
        print_registers("after 1st loop");
        pmu::set_counter_disables(0x3);
        pmu::count_event(1, CHAIN);
        pmu::set_event_count(1, 0);
        enable_chain_counter(0);
        run(&data);
        print_registers("after 2nd loop");
        report!(
            pmu::event_count(1) == 1 && pmu::overflow_status() == 0x1,
            "32b->64b: CHAIN counter incremented and overflow"
        );
    }
    {
        let _prefix = prefix("subtest6");
        pmu::reset();
        pmu::count_event(0, MEM_ACCESS);
        pmu::count_event(1, CHAIN);
        pmu::set_event_count(0, pre_overflow2);
        enable_chain_counter(0);
        run(&data);
        print_registers("after 1st loop");
        disable_chain_counter(0);
        pmu::count_event(1, CPU_CYCLES);
        pmu::set_counter_enables(0x3);
        run(&data);
        print_registers("after 2nd loop");
        report!(pmu::overflow_status() == 0x1, "overflow is expected on counter 0");
    }
}

/// Overflow interrupts per counter, and the counters that had one, as the handler saw them.
static INTERRUPTS: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];
static OVERFLOWED: AtomicU32 = AtomicU32::new(0);

/// The PMU PPI's handler: records and clears every overflow flag (kvm-unit-tests' irq_handler).
fn overflow_handler(_intid: u32) {
    let overflows = pmu::overflow_status() & ALL_COUNTERS;
    for (counter, count) in INTERRUPTS.iter().enumerate() {
        if overflows & (1 << counter) != 0 {
            count.fetch_add(1, Ordering::AcqRel);
        }
    }
    OVERFLOWED.fetch_or(overflows as u32, Ordering::AcqRel);
    pmu::set_overflow_status(ALL_COUNTERS);
}

fn reset_statistics() {
    for count in &INTERRUPTS {
        count.store(0, Ordering::Release);
    }
    OVERFLOWED.store(0, Ordering::Release);
}

/// Whether exactly the counters of `expected` had an interrupt, one each, and no IRQ came
/// without a handler (kvm-unit-tests' expect_interrupts); `what` shows what was seen.
fn interrupts_were(expected: u32, unhandled_before: u32) -> (bool, impl core::fmt::Display) {
    struct Seen(u32, [u32; 2], u32);
    impl core::fmt::Display for Seen {
        fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(
                formatter,
                "overflowed {:#x}, #0 {} and #1 {} interrupts, {} unexpected",
                self.0, self.1[0], self.1[1], self.2
            )
        }
    }
    let overflowed = OVERFLOWED.load(Ordering::Acquire);
    let unexpected = gic::unhandled() - unhandled_before;
    let once_each = (0..32)
        .all(|counter| expected & (1 << counter) == 0 || INTERRUPTS[counter].load(Ordering::Acquire) == 1);
    let seen = Seen(
        overflowed,
        [
            INTERRUPTS[0].load(Ordering::Acquire),
            INTERRUPTS[1].load(Ordering::Acquire),
        ],
        unexpected,
    );
    (overflowed == expected && once_each && unexpected == 0, seen)
}

/// kvm-unit-tests' test_overflow_interrupt: counter 0 counting memory accesses and counter 1
/// SW_INCR, both from 16 below the overflow: no interrupt while PMINTENSET_EL1 is clear, one
/// each once it is set, handled through the GIC; then counter 1 as CHAIN. Without MEM_ACCESS,
/// counter 0 counts INST_RETIRED over the same loop (4 instructions per load), which the
/// interrupt checks need no less.
fn overflow_interrupt(width: Width) {
    let counted = if pmu::event_supported(MEM_ACCESS) {
        MEM_ACCESS
    } else {
        INST_RETIRED
    };
    if !prerequisites(&[counted, SW_INCR], 2) {
        return;
    }
    if counted != MEM_ACCESS {
        report_info!(
            "MEM_ACCESS is not implemented{}: counter #0 counts INST_RETIRED instead",
            tcg_note(MEM_ACCESS)
        );
    }
    let pre_overflow = width.pre_overflow();
    let all_set = counter_mask();
    let data = core::hint::black_box(0u64);
    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return;
    }
    let intid = pmu::interrupt();
    report_info!("the PMU's overflow interrupt is INTID {intid}");
    vmunit::arch::set_interrupt_handler(intid, Some(overflow_handler));
    gic::enable(intid);
    interrupts::enable();
    let unhandled = gic::unhandled();

    pmu::reset();
    reset_statistics();
    pmu::count_event(0, counted);
    pmu::count_event(1, SW_INCR);
    pmu::set_counter_enables(0x3);
    pmu::set_event_count(0, pre_overflow);
    pmu::set_event_count(1, pre_overflow);
    // PMINTENSET_EL1 is clear.
    pmu::memory_access_loop(&data, COUNT_INT, fixed() | pmcr::E | width.lp());
    let (quiet, seen) = interrupts_were(0, unhandled);
    report!(quiet, "no overflow interrupt after preset ({seen})");
    let flagged = pmu::overflow_status();
    report!(
        flagged == 0x1,
        "yet counter #0's overflow is flagged (PMOVSCLR_EL0 {flagged:#x})"
    );
    pmu::set_pmcr(fixed() | pmcr::E | width.lp());
    for _ in 0..100 {
        pmu::software_increment(0x2);
    }
    vmunit::arch::instructions::isb();
    pmu::set_pmcr(fixed());
    let (quiet, seen) = interrupts_were(0, unhandled);
    report!(quiet, "no overflow interrupt after counting ({seen})");

    // PMINTENSET_EL1 set for every counter.
    reset_statistics();
    pmu::set_event_count(0, pre_overflow);
    pmu::set_event_count(1, pre_overflow);
    pmu::set_overflow_status(ALL_COUNTERS);
    pmu::set_interrupt_enables(ALL_COUNTERS);
    pmu::memory_access_loop(&data, COUNT_INT, fixed() | pmcr::E | width.lp());
    pmu::set_pmcr(fixed() | pmcr::E | width.lp());
    for _ in 0..100 {
        pmu::software_increment(0x3);
    }
    pmu::memory_access_loop(&data, COUNT_INT, fixed());
    let (both, seen) = interrupts_were(0x3, unhandled);
    report!(both, "overflow interrupts expected on #0 and #1 ({seen})");
    report!(
        pmu::overflow_status() == 0,
        "the handler cleared the overflow flags (PMOVSCLR_EL0 {:#x})",
        pmu::overflow_status()
    );

    // Counter 1 as CHAIN: with 32-bit overflows counter 0's overflow increments it.
    reset_statistics();
    pmu::count_event(1, CHAIN);
    pmu::set_event_count(0, pre_overflow);
    pmu::memory_access_loop(&data, COUNT_INT, fixed() | pmcr::E | width.lp());
    let (even, seen) = interrupts_were(0x1, unhandled);
    report!(even, "expect overflow interrupt ({seen})");

    reset_statistics();
    pmu::set_event_count(0, pre_overflow);
    pmu::set_event_count(1, all_set);
    pmu::memory_access_loop(&data, COUNT_INT, fixed() | pmcr::E | width.lp());
    match width {
        Width::Bits64 => {
            let (even, seen) = interrupts_were(0x1, unhandled);
            report!(even, "expect overflow interrupt on even counter ({seen})");
            report!(
                pmu::event_count(1) == all_set,
                "Odd counter did not change ({:#x}): CHAIN does not count with PMCR_EL0.LP",
                pmu::event_count(1)
            );
        }
        Width::Bits32 if !pmu::event_supported(CHAIN) => {
            report_skip!(
                "promotion to 64 bits needs CHAIN ({CHAIN:#x}), not implemented{}",
                tcg_note(CHAIN)
            );
        }
        Width::Bits32 => {
            let (both, seen) = interrupts_were(0x3, unhandled);
            report!(both, "expect overflow interrupt on even and odd counter ({seen})");
            report!(
                pmu::event_count(1) != all_set,
                "Odd counter wrapped ({:#x})",
                pmu::event_count(1)
            );
        }
    }
    software_overflow_interrupt(&data, unhandled);
    cycle_counter_overflow_interrupt(width, &data, unhandled);
    interrupts::disable();
    pmu::reset();
    gic::disable(intid);
}

/// A flag set through PMOVSSET_EL0 raises the overflow interrupt as an overflow does, and
/// only while PMCR_EL0.E is set (the Arm ARM's CheckForPMUOverflow: E, PMINTENSET<n> and
/// PMOVSSET<n>).
fn software_overflow_interrupt(data: &u64, unhandled: u32) {
    pmu::reset();
    reset_statistics();
    pmu::set_interrupt_enables(0x1);
    pmu::set_overflows(0x1);
    pmu::memory_access_loop(data, COUNT_INT, fixed());
    let (quiet, seen) = interrupts_were(0, unhandled);
    report!(
        quiet && pmu::overflow_status() == 0x1,
        "PMOVSSET_EL0 sets #0's flag ({:#x}) but with PMCR_EL0.E clear raises no interrupt ({seen})",
        pmu::overflow_status()
    );
    pmu::memory_access_loop(data, COUNT_INT, fixed() | pmcr::E);
    let (once, seen) = interrupts_were(0x1, unhandled);
    report_kfail!(
        enable_defect(),
        once,
        "with PMCR_EL0.E set the flag raises one interrupt ({seen}){}",
        if enable_defect() { ENABLE_DEFECT } else { "" }
    );
}

/// Whether QEMU's TCG leaves the overflow interrupt line as it was when PMCR_EL0.E changes:
/// QEMU 10.0's target/arm/helper.c pmcr_write never calls pmu_update_irq, which alone
/// computes the line (E && PMINTENSET & PMOVSSET); PMOVSSET/PMOVSCLR/PMINTEN writes and
/// overflows do.
fn enable_defect() -> bool {
    vmunit::environment::env("ACCEL") == Some("tcg")
}

const ENABLE_DEFECT: &str = "; QEMU TCG does not re-evaluate the PMU interrupt when PMCR_EL0.E \
    changes (target/arm/helper.c pmcr_write lacks pmu_update_irq); see \
    reproduce-pmu-enable-pending-overflow";

/// The reproducer: an overflow flag and its interrupt enable set while PMCR_EL0.E is clear;
/// setting E must raise the interrupt (the Arm ARM's CheckForPMUOverflow), with no
/// known-failure allowance.
fn enable_pending_overflow() {
    if !prerequisites(&[], 1) {
        return;
    }
    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return;
    }
    let intid = pmu::interrupt();
    vmunit::arch::set_interrupt_handler(intid, Some(overflow_handler));
    gic::enable(intid);
    interrupts::enable();
    let unhandled = gic::unhandled();
    let data = core::hint::black_box(0u64);
    pmu::reset();
    reset_statistics();
    pmu::set_interrupt_enables(0x1);
    pmu::set_overflows(0x1);
    pmu::set_pmcr(fixed() | pmcr::E);
    pmu::memory_access_loop(&data, COUNT_INT, fixed() | pmcr::E);
    let (once, seen) = interrupts_were(0x1, unhandled);
    report!(
        once,
        "PMOVSSET_EL0.P0 and PMINTENSET_EL1.P0 set with PMCR_EL0.E clear: setting E raises the overflow interrupt once ({seen})"
    );
    interrupts::disable();
    pmu::reset();
    gic::disable(intid);
}

/// The cycle counter overflows too: from 16 below its overflow (at 64 bits with PMCR_EL0.LC,
/// else at 32) a loop sets PMOVS bit 31 and, with PMINTENSET_EL1.C, interrupts.
fn cycle_counter_overflow_interrupt(width: Width, data: &u64, unhandled: u32) {
    let long = match width {
        Width::Bits32 => 0,
        Width::Bits64 => pmcr::LC,
    };
    pmu::reset();
    reset_statistics();
    pmu::set_pmcr(fixed() | long);
    if pmu::pmcr() & pmcr::LC != long {
        report_skip!("PMCR_EL0.LC is fixed at {}", pmu::pmcr() & pmcr::LC != 0);
        return;
    }
    pmu::set_cycle_filter(0);
    pmu::set_cycle_counter(width.pre_overflow());
    pmu::set_counter_enables(CYCLE_COUNTER);
    pmu::set_interrupt_enables(CYCLE_COUNTER);
    pmu::memory_access_loop(data, COUNT_INT, fixed() | pmcr::E | long);
    let seen_cycle = INTERRUPTS[CYCLE_COUNTER_INDEX as usize].load(Ordering::Acquire);
    let (cycle, seen) = interrupts_were(CYCLE_COUNTER as u32, unhandled);
    report!(
        cycle && seen_cycle == 1,
        "PMCCNTR_EL0 from {:#x} overflows once with an interrupt on bit 31 ({seen}, {seen_cycle} on C)",
        width.pre_overflow()
    );
}
