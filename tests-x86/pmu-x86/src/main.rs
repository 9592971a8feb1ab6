//! pmu: architectural performance monitoring (kvm-unit-tests' pmu test, SDM Vol. 3 ch. 21):
//! CPUID leaf 0xA, general-purpose counters counting instructions, branches and cycles over a
//! loop of known length, fixed counters, RDPMC and its #GP rules (CR4.PCE at CPL 3, counters
//! that do not exist), overflow status. Without a PMU (CPUID.0AH:EAX[7:0] = 0) the counters
//! do not exist: RDPMC and the counter MSRs raise #GP.
//!
//! `test_args = "lbr"` runs kvm-unit-tests' pmu_lbr instead ([`lbr`]), `"pebs"` its pmu_pebs
//! ([`pebs`]).
#![no_std]
#![no_main]

mod lbr;
mod pebs;

use vmunit::arch::control::{Cr4Flags, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::msr::{self, try_rdmsr, try_wrmsr};
use vmunit::arch::pmu::{
    BRANCHES, CORE_CYCLES, Capabilities, EVENT_ENABLE, EVENT_OS, EVENT_USR, Event, INSTRUCTIONS,
    LOOP_BRANCHES, LOOP_INSTRUCTIONS, RDPMC_FIXED, capabilities, count_loop, rdpmc, try_rdpmc,
};
use vmunit::arch::run_in_user_mode;
use vmunit::{Vector, known_failure, prefix, report, report_info, report_skip, report_summary};

vmunit::main!(main);

/// Iterations of the counted loop.
const ITERATIONS: u64 = 100_000;

fn main(args: &[&str]) -> i32 {
    if args.contains(&"lbr") {
        lbr::run();
        return report_summary();
    }
    if args.contains(&"pebs") {
        pebs::run();
        return report_summary();
    }
    let pmu = capabilities();
    report_info!("CPUID.0AH: {pmu:?}");
    check_rdpmc_rules(&pmu);
    if pmu.version == 0 {
        check_absent();
        report_skip!(
            "counting: CPUID.0AH:EAX[7:0] is 0, the CPU model has no architectural PMU (run under \
             KVM with enable_pmu=Y and -cpu host or max)"
        );
        return report_summary();
    }
    report!(
        pmu.counters >= 1,
        "at least one general-purpose counter ({})",
        pmu.counters
    );
    report!(
        (32..=64).contains(&pmu.counter_width),
        "the counters are 32 to 64 bits wide ({})",
        pmu.counter_width
    );
    for counter in 0..pmu.counters {
        let _prefix = prefix("PMC");
        for event in [INSTRUCTIONS, BRANCHES, CORE_CYCLES] {
            check_general_counter(&pmu, counter, event);
        }
    }
    check_fixed_counters(&pmu);
    check_overflow(&pmu);
    report_summary()
}

/// RDPMC of a counter that does not exist raises #GP(0); at CPL 3 it needs CR4.PCE.
fn check_rdpmc_rules(pmu: &Capabilities) {
    let _prefix = prefix("RDPMC");
    let missing = pmu.counters;
    let result = try_rdpmc(missing);
    known_failure(
        is_tcg(),
        "QEMU's TCG does not implement RDPMC: #UD for every counter",
        || {
            report!(
                matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0),
                "RDPMC of counter {missing}, which does not exist, raises #GP(0) (got {result:x?})"
            );
        },
    );
    let fixed = RDPMC_FIXED | pmu.fixed_counters;
    let result = try_rdpmc(fixed);
    known_failure(
        is_tcg(),
        "QEMU's TCG does not implement RDPMC: #UD for every counter",
        || {
            report!(
                matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0),
                "RDPMC of fixed counter {}, which does not exist, raises #GP(0) (got {result:x?})",
                pmu.fixed_counters
            );
        },
    );
    let cr4 = read_cr4();
    report!(
        try_write_cr4(cr4 & !Cr4Flags::PERFORMANCE_MONITOR_COUNTER.bits()).is_ok(),
        "CR4.PCE can be cleared"
    );
    let user = run_in_user_mode(|| rdpmc(0));
    report!(
        matches!(user, Err(e) if e.vector == Vector::GP && e.error_code == 0),
        "RDPMC at CPL 3 with CR4.PCE clear raises #GP(0) (got {user:x?})"
    );
    if pmu.counters > 0 {
        report!(
            try_write_cr4(cr4 | Cr4Flags::PERFORMANCE_MONITOR_COUNTER.bits()).is_ok(),
            "CR4.PCE can be set"
        );
        let user = run_in_user_mode(|| rdpmc(0));
        let kernel = try_rdpmc(0);
        report!(
            user.is_ok() && kernel.is_ok(),
            "with CR4.PCE set, RDPMC of counter 0 works at CPL 3 (got {user:x?}; at CPL 0 {kernel:x?})"
        );
    }
    report!(try_write_cr4(cr4).is_ok(), "CR4 is restored");
}

/// Without a PMU, the version-2 MSRs do not exist. (KVM reads IA32_PERFEVTSEL0/1 and
/// IA32_PMC0/1 as 0 and ignores writes even without a PMU, on purpose, for guests that touch
/// them unconditionally; those are not checked.)
fn check_absent() {
    let _prefix = prefix("no PMU");
    known_failure(
        is_tcg(),
        "QEMU's TCG raises no #GP for MSRs it does not implement",
        || {
            for (name, msr) in [
                ("IA32_PERF_GLOBAL_CTRL", msr::IA32_PERF_GLOBAL_CTRL),
                ("IA32_FIXED_CTR0", msr::IA32_FIXED_CTR0),
            ] {
                let read = try_rdmsr(msr);
                report!(
                    matches!(read, Err(e) if e.vector == Vector::GP),
                    "RDMSR({name}) raises #GP (got {read:x?})"
                );
            }
        },
    );
}

/// Counts `event` on `counter` over the loop; returns the count, or the exception that stopped
/// programming it.
fn try_count_event(counter: u32, event: Event, version: u32) -> Result<u64, vmunit::Exception> {
    let select = msr::IA32_PERFEVTSEL0 + counter;
    let counter_msr = msr::IA32_PMC0 + counter;
    try_wrmsr(select, 0)?;
    try_wrmsr(counter_msr, 0)?;
    if version >= 2 {
        try_wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 1 << counter)?;
    }
    try_wrmsr(select, event.select | EVENT_USR | EVENT_OS | EVENT_ENABLE)?;
    count_loop(ITERATIONS);
    try_wrmsr(select, 0)?;
    if version >= 2 {
        try_wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 0)?;
    }
    let count = try_rdmsr(counter_msr)?;
    let fast = try_rdpmc(counter)?;
    if fast != count {
        report!(
            false,
            "RDPMC({counter}) reads what RDMSR(PMC{counter}) reads ({count}; got {fast})"
        );
    }
    Ok(count)
}

fn check_general_counter(pmu: &Capabilities, counter: u32, event: Event) {
    if !pmu.has(event) {
        report_skip!(
            "{} on PMC{counter}: CPUID.0AH:EBX says it is not available",
            event.name
        );
        return;
    }
    let result = try_count_event(counter, event, pmu.version);
    let (low, high) = match event.select {
        0xc0 => (
            ITERATIONS * LOOP_INSTRUCTIONS,
            ITERATIONS * LOOP_INSTRUCTIONS * 11 / 10 + 100,
        ),
        0xc4 => (
            ITERATIONS * LOOP_BRANCHES,
            ITERATIONS * LOOP_BRANCHES * 11 / 10 + 100,
        ),
        // Core cycles: kvm-unit-tests' pmu bounds them by the loop's length too, 1 to 50
        // cycles per iteration (its iterations are longer: 10 instructions to these 4).
        _ => (ITERATIONS, ITERATIONS * 50),
    };
    report!(
        matches!(result, Ok(count) if (low..=high).contains(&count)),
        "PMC{counter} counts {} over the loop: {low} to {high} (got {result:x?})",
        event.name
    );
}

fn check_fixed_counters(pmu: &Capabilities) {
    if pmu.version < 2 || pmu.fixed_counters == 0 {
        report_skip!("fixed counters: PMU version {} has none", pmu.version);
        return;
    }
    let _prefix = prefix("fixed counter 0");
    let result = (|| {
        try_wrmsr(msr::IA32_FIXED_CTR0, 0)?;
        try_wrmsr(msr::IA32_FIXED_CTR_CTRL, 0b0011)?; // OS and USR for fixed counter 0
        try_wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 1 << 32)?;
        count_loop(ITERATIONS);
        try_wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 0)?;
        try_wrmsr(msr::IA32_FIXED_CTR_CTRL, 0)?;
        Ok::<_, vmunit::Exception>((try_rdmsr(msr::IA32_FIXED_CTR0)?, try_rdpmc(RDPMC_FIXED)?))
    })();
    let low = ITERATIONS * LOOP_INSTRUCTIONS;
    let high = low * 11 / 10 + 100;
    report!(
        matches!(result, Ok((count, _)) if (low..=high).contains(&count)),
        "it counts instructions retired over the loop: {low} to {high} (got {result:x?})"
    );
    report!(
        matches!(result, Ok((count, fast)) if count == fast),
        "RDPMC(1 << 30) reads what RDMSR(IA32_FIXED_CTR0) reads (got {result:x?})"
    );
}

/// A counter started just below its top overflows, and IA32_PERF_GLOBAL_STATUS says so until
/// the bit is cleared through IA32_PERF_GLOBAL_OVF_CTRL.
fn check_overflow(pmu: &Capabilities) {
    if pmu.version < 2 || !pmu.has(INSTRUCTIONS) {
        report_skip!(
            "overflow status: PMU version {} has no global status",
            pmu.version
        );
        return;
    }
    let _prefix = prefix("overflow");
    let width_mask = if pmu.counter_width >= 64 {
        u64::MAX
    } else {
        (1 << pmu.counter_width) - 1
    };
    let result = (|| {
        try_wrmsr(msr::IA32_PERF_GLOBAL_OVF_CTRL, 1)?;
        try_wrmsr(msr::IA32_PERFEVTSEL0, 0)?;
        // Legacy PMC writes sign-extend bit 31: -1000 is the counter's top minus 999.
        try_wrmsr(msr::IA32_PMC0, 0u64.wrapping_sub(1000) & 0xffff_ffff)?;
        try_wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 1)?;
        try_wrmsr(
            msr::IA32_PERFEVTSEL0,
            INSTRUCTIONS.select | EVENT_OS | EVENT_ENABLE,
        )?;
        count_loop(ITERATIONS);
        try_wrmsr(msr::IA32_PERFEVTSEL0, 0)?;
        try_wrmsr(msr::IA32_PERF_GLOBAL_CTRL, 0)?;
        let status = try_rdmsr(msr::IA32_PERF_GLOBAL_STATUS)?;
        let count = try_rdmsr(msr::IA32_PMC0)? & width_mask;
        try_wrmsr(msr::IA32_PERF_GLOBAL_OVF_CTRL, 1)?;
        Ok::<_, vmunit::Exception>((status, count, try_rdmsr(msr::IA32_PERF_GLOBAL_STATUS)?))
    })();
    report!(
        matches!(result, Ok((status, _, _)) if status & 1 != 0),
        "PMC0 started 1000 below its top sets GLOBAL_STATUS bit 0 (got {result:x?})"
    );
    report!(
        matches!(result, Ok((_, count, _)) if count < ITERATIONS * LOOP_INSTRUCTIONS * 11 / 10),
        "and wraps around to a small count (got {result:x?})"
    );
    report!(
        matches!(result, Ok((_, _, cleared)) if cleared & 1 == 0),
        "GLOBAL_OVF_CTRL bit 0 clears it (got {result:x?})"
    );
}
