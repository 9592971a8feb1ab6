//! kvm-unit-tests' svm cases for features QEMU's TCG does not offer (vnmi, the LBR and LBR
//! virtualization cases, tsc_scale): each skips, as kvm-unit-tests' do through its
//! `supported()` checks, with the CPUID bit (or the facility) that is missing and where TCG
//! leaves it out. Their bodies are not ported yet: where the feature is there, they SKIP saying
//! so (nothing was checked, and no defect of the hypervisor was found: a FAIL would claim one);
//! the README's svm row lists them as not yet ported.

use vmunit::arch::msr::{DEBUGCTL_LBR, IA32_DEBUGCTL, try_rdmsr, try_wrmsr};
use vmunit::arch::svm::{Svm, SvmFeature};
use vmunit::report_skip;

/// Why a case needing `feature` cannot run (its CPUID.8000000AH:EDX bit is clear), or `None`.
fn missing(feature: SvmFeature, reason: &'static str) -> Option<&'static str> {
    (!feature.supported()).then_some(reason)
}

/// Where TCG's SVM feature bits come from, for the reasons below.
macro_rules! clear_under_tcg {
    ($bit:literal) => {
        concat!(
            "CPUID.8000000AH:EDX",
            $bit,
            " is clear (QEMU's TCG_SVM_FEATURES in target/i386/cpu.c hold NPT, VGIF and SVME_ADDR_CHK only)"
        )
    };
}

/// vnmi: needs virtual NMI.
pub fn virtual_nmi() -> Option<&'static str> {
    missing(SvmFeature::Vnmi, clear_under_tcg!("[25] (VNMI)"))
}

/// svm_lbrv_nested_test1-3: need LBR virtualization.
pub fn lbr_virtualization() -> Option<&'static str> {
    missing(SvmFeature::Lbrv, clear_under_tcg!("[1] (LBRV)"))
}

/// svm_tsc_scale_test: needs the TSC ratio MSR.
pub fn tsc_ratio() -> Option<&'static str> {
    missing(SvmFeature::TscRateMsr, clear_under_tcg!("[4] (TSC ratio MSR)"))
}

/// svm_lbrv_test0-3 check the host's own last-branch record (kvm-unit-tests runs them without
/// a `supported()` check, as AMD CPUs with SVM have it): they need DEBUGCTL.LBR to stick.
pub fn last_branch_record() -> Option<&'static str> {
    let before = try_rdmsr(IA32_DEBUGCTL).unwrap_or(0);
    let sticks = try_wrmsr(IA32_DEBUGCTL, before | DEBUGCTL_LBR).is_ok()
        && try_rdmsr(IA32_DEBUGCTL).is_ok_and(|value| value & DEBUGCTL_LBR != 0);
    let _ = try_wrmsr(IA32_DEBUGCTL, before);
    (!sticks).then_some(
        "DEBUGCTL.LBR reads back clear: no last-branch record (QEMU's TCG helper_wrmsr in target/i386/tcg/system/misc_helper.c ignores IA32_DEBUGCTL)",
    )
}

/// The body of a case whose feature is there but which is not ported yet: a SKIP that says
/// the feature is offered and vmunit does not check it yet.
pub fn not_ported(_svm: &mut Svm) {
    report_skip!("the feature is offered here, but vmunit has not ported this case yet: nothing was checked");
}
