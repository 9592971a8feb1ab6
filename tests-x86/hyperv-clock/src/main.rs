//! hyperv_clock: Hyper-V's reference TSC page (kvm-unit-tests' x86/hyperv_clock.c): enabled
//! through HV_X64_MSR_REFERENCE_TSC, a valid sequence, time from the page that follows
//! HV_X64_MSR_TIME_REF_COUNT (no drift out of two page readings around each MSR read), and
//! neither clock going backwards on any CPU, then disabled again.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vmunit::arch::cpuid::hypervisor_signature;
use vmunit::arch::hyperv::{self, HypervFeature, ReferenceTscPage, TICKS_PER_SECOND};
use vmunit::arch::instructions::rdtsc;
use vmunit::arch::msr::{HV_X64_MSR_REFERENCE_TSC, HV_X64_MSR_TIME_REF_COUNT, rdmsr, try_rdmsr};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpus};
use vmunit::{benchmark, report, report_info, report_skip};

vmunit::main!(main);

/// Whether each CPU's precision test passed, and how it failed.
static DRIFT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static MSR_WARP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static PAGE_WARP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static LOOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn main(_args: &[&str]) {
    if !hyperv::has(HypervFeature::TimeRefCount) || !hyperv::has(HypervFeature::ReferenceTsc) {
        report_skip!(
            "time reference counter is unsupported: no Hyper-V HV_MSR_TIME_REF_COUNT_AVAILABLE and HV_MSR_REFERENCE_TSC_AVAILABLE (hypervisor signature \"{}\")",
            hypervisor_signature().escape_ascii()
        );
        return;
    }
    let page = ReferenceTscPage::new().expect("a frame for the reference TSC page");
    report!(
        page.enable().is_ok(),
        "WRMSR HV_X64_MSR_REFERENCE_TSC enables the page"
    );
    let value = try_rdmsr(HV_X64_MSR_REFERENCE_TSC);
    report!(
        value == Ok(page.enabling_value()),
        "MSR value after enabling is {:#x} (got {value:x?})",
        page.enabling_value()
    );
    let shadow = page.read();
    report_info!(
        "sequence: {}, scale: {:#x}, offset: {}",
        shadow.sequence,
        shadow.scale,
        shadow.offset
    );
    if !shadow.valid() {
        // kvm-unit-tests runs hyperv_clock only where the host's clocksource is tsc
        // (`check = .../current_clocksource=tsc`): KVM keeps the page valid only with its
        // master clock, which needs a TSC clocksource on the host.
        report_skip!(
            "Reference TSC page not available: sequence {:#x} (KVM fills it only when the host's clocksource is tsc)",
            shadow.sequence
        );
        return;
    }

    // Two seconds of the reference counter, against the page's scale and offset.
    let reference1 = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
    let tsc1 = rdtsc();
    let ticks1 = shadow.ticks_at(tsc1);
    let mut reference2 = reference1;
    while reference2 < reference1 + 2 * TICKS_PER_SECOND {
        reference2 = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
    }
    let tsc2 = rdtsc();
    let ticks2 = shadow.ticks_at(tsc2);
    let (msr_delta, page_delta) = (reference2 - reference1, ticks2.wrapping_sub(ticks1));
    report_info!("refcnt {reference1}, TSC {tsc1:#x}, TSC reference {ticks1}");
    report_info!(
        "refcnt {reference2} (delta {msr_delta}), TSC {tsc2:#x}, TSC reference {ticks2} (delta {page_delta})"
    );
    // Both clocks count the same 100 ns ticks: over 2 s they agree to 0.1% (2 ms).
    report!(
        page_delta.abs_diff(msr_delta) <= 2 * TICKS_PER_SECOND / 1000,
        "the page's time and the counter advance alike over 2 s (page {page_delta}, MSR {msr_delta} ticks)"
    );

    let cpus = cpu_count();
    on_cpus(|| precision(&page));
    let mut pass = true;
    for cpu in 0..cpus {
        let drift = DRIFT[cpu].load(Ordering::SeqCst);
        let msr_warp = MSR_WARP[cpu].load(Ordering::SeqCst);
        let page_warp = PAGE_WARP[cpu].load(Ordering::SeqCst);
        report!(
            drift == 0,
            "CPU {cpu}: HV_X64_MSR_TIME_REF_COUNT lies between the page's readings before and after it ({drift} drifts)"
        );
        report!(
            !msr_warp,
            "CPU {cpu}: HV_X64_MSR_TIME_REF_COUNT never goes backwards"
        );
        report!(!page_warp, "CPU {cpu}: the TSC page's time never goes backwards");
        pass &= drift == 0 && !msr_warp && !page_warp;
    }
    report!(pass, "TSC reference precision test");

    on_cpus(|| performance(&page));
    let total: u64 = LOOPS
        .iter()
        .take(cpus)
        .map(|loops| loops.load(Ordering::SeqCst))
        .sum();
    benchmark::report("iterations_per_second", total / cpus as u64, "reads");

    report!(
        page.disable().is_ok(),
        "WRMSR HV_X64_MSR_REFERENCE_TSC = 0 disables the page"
    );
    let value = try_rdmsr(HV_X64_MSR_REFERENCE_TSC);
    report!(value == Ok(0), "MSR value after disabling is 0 (got {value:x?})");
}

/// kvm-unit-tests' `hv_clock_test`: for one second of reference time, each MSR read lies
/// between the page readings around it, and neither goes backwards.
fn precision(page: &ReferenceTscPage) {
    let cpu = cpu_index();
    let mut msr_previous = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
    let mut page_previous = page.now();
    let end = page_previous + TICKS_PER_SECOND;
    let mut drifts = 0;
    while page_previous < end {
        let page1 = page.now();
        let msr = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
        let page2 = page.now();
        if msr < page1 || msr > page2 {
            if drifts == 0 {
                report_info!("drift on CPU {cpu}: MSR value {msr}, acceptable [{page1}, {page2}]");
            }
            drifts += 1;
        }
        if msr < msr_previous {
            report_info!("warp on CPU {cpu}: MSR value {msr}, previous {msr_previous}");
            MSR_WARP[cpu].store(true, Ordering::SeqCst);
            break;
        }
        if page1 < page_previous {
            report_info!("warp on CPU {cpu}: TSC page value {page1}, previous {page_previous}");
            PAGE_WARP[cpu].store(true, Ordering::SeqCst);
            break;
        }
        page_previous = page1;
        msr_previous = msr;
    }
    DRIFT[cpu].store(drifts, Ordering::SeqCst);
}

/// kvm-unit-tests' `hv_perf_test`: page reads in one second of reference time.
fn performance(page: &ReferenceTscPage) {
    let end = page.now() + TICKS_PER_SECOND;
    let mut loops = 0;
    while page.now() < end {
        loops += 1;
    }
    LOOPS[cpu_index()].store(loops, Ordering::SeqCst);
}
