//! pmu_lbr (`test_args = "lbr"`): kvm-unit-tests' pmu_lbr. On Intel with a PMU, PDCM and an LBR
//! format in IA32_PERF_CAPABILITIES: the LBR stack's FROM/TO MSRs are found (Core 2's at 0x40/
//! 0x60 or Nehalem's at 0x680/0x6c0), at least one entry exists, and after a branchy loop with
//! IA32_DEBUGCTL.LBR set every entry holds a FROM and a TO address. Each missing piece SKIPs
//! with kvm-unit-tests' reason.

use vmunit::arch::cpuid::{Feature, Vendor, vendor};
use vmunit::arch::msr::{
    DEBUGCTL_LBR, IA32_DEBUGCTL, MAX_LBR_ENTRIES, MSR_LBR_CORE_FROM, MSR_LBR_CORE_TO, MSR_LBR_NHM_FROM,
    MSR_LBR_NHM_TO, MSR_LBR_SELECT, MSR_LBR_TOS, try_rdmsr, try_wrmsr,
};
use vmunit::arch::pmu::{capabilities, count_loop, perf_capabilities};
use vmunit::{report, report_info, report_skip};

/// Whether entry `index` of the stack at `from`/`to` can be written (kvm-unit-tests'
/// `test_init_lbr_from_exception`, inverted).
fn entry_exists(from: u32, to: u32, index: u32) -> bool {
    try_wrmsr(from + index, 0).is_ok() && try_wrmsr(to + index, 0).is_ok()
}

pub fn run() {
    if vendor() != Vendor::Intel {
        report_skip!(
            "PMU_LBR test is for intel CPU's only (the CPU vendor is {:?})",
            vendor()
        );
        return;
    }
    let pmu = capabilities();
    if pmu.version == 0 {
        report_skip!("No pmu is detected! (CPUID.0AH:EAX[7:0] is 0)");
        return;
    }
    let Some(perf) = perf_capabilities() else {
        report_skip!(
            "Perfmon/Debug Capabilities MSR isn't supported: {} (PDCM) is clear",
            Feature::Pdcm.bit()
        );
        return;
    };
    if perf.lbr_format() == 0 {
        report_skip!("(Architectural) LBR is not supported: IA32_PERF_CAPABILITIES[5:0] is 0 ({perf:x?})");
        return;
    }
    report_info!("PMU version {}, LBR format {:#x}", pmu.version, perf.lbr_format());

    let (from, to) = if entry_exists(MSR_LBR_CORE_FROM, MSR_LBR_CORE_TO, 0) {
        (MSR_LBR_CORE_FROM, MSR_LBR_CORE_TO)
    } else {
        (MSR_LBR_NHM_FROM, MSR_LBR_NHM_TO)
    };
    if !entry_exists(from, to, 0) {
        report_skip!(
            "LBR on this platform is not supported! (neither FROM/TO pair at 0x40/0x60 nor 0x680/0x6c0 takes a write)"
        );
        return;
    }
    let select = try_wrmsr(MSR_LBR_SELECT, 0);
    let top = try_wrmsr(MSR_LBR_TOS, 0);
    report_info!("LBR_SELECT <- 0: {select:x?}; LBR_TOS <- 0: {top:x?}");
    let entries = (0..MAX_LBR_ENTRIES)
        .find(|&index| !entry_exists(from, to, index))
        .unwrap_or(MAX_LBR_ENTRIES);
    // At least 1 by construction (entry 0 took a write above; kvm-unit-tests' report of it
    // cannot fail either): information, not a check.
    report_info!("guest LBR entries: {entries} at FROM {from:#x}, TO {to:#x}");

    let enabled = try_wrmsr(IA32_DEBUGCTL, DEBUGCTL_LBR);
    count_loop(100_000);
    let disabled = try_wrmsr(IA32_DEBUGCTL, 0);
    let empty = (0..entries).find(|&index| {
        !matches!((try_rdmsr(from + index), try_rdmsr(to + index)), (Ok(f), Ok(t)) if f != 0 && t != 0)
    });
    report!(
        enabled.is_ok() && disabled.is_ok() && empty.is_none(),
        "The guest LBR FROM_IP/TO_IP values are good: all {entries} entries set after a branchy loop (first empty: {empty:?}; DEBUGCTL writes {enabled:x?}, {disabled:x?})"
    );
}
