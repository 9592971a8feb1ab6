//! la57: 5-level paging (CR4.LA57) and the canonical-address rule, as kvm-unit-tests' x86/la57
//! checks them: MOV to CR4 cannot change LA57 in 64-bit mode (#GP); registers that take a
//! linear address (GDTR, IDTR, TR and LDTR bases, the FS/GS/KERNEL_GS base, LSTAR and CSTAR
//! MSRs, IA32_DS_AREA, INVPCID's address) accept a 48-bit canonical value, a 57-bit canonical
//! one exactly when the CPU supports LA57 (whatever CR4.LA57 says), and never a value that is
//! not 57-bit canonical. Then, where CPUID.7.0:ECX[16] says LA57, it switches to 5-level
//! paging as kvm-unit-tests' `setup_5level_page_table` does and checks the walk: pages mapped
//! at 57-bit addresses beyond the 48-bit space, #PF (not #GP) for unmapped ones, #GP for
//! addresses that are not 57-bit canonical, LA57 stuck on, and the register checks again.
#![no_std]
#![no_main]

extern crate alloc;

use vmunit::arch::control::{Cr4Flags, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::{store_gdtr, store_idtr, try_invpcid};
use vmunit::arch::linear_address::{BaseRegister, is_canonical, try_load_base_briefly};
use vmunit::arch::mmu::{self, FiveLevelError};
use vmunit::arch::msr::{self, EferFlags, try_rdmsr, try_wrmsr, try_wrmsr_briefly};
use vmunit::arch::{page_fault, try_read};
use vmunit::memory::TestPage;
use vmunit::{
    Exception, Vector, known_failure, prefix, report, report_fail, report_info, report_skip, report_summary,
};

vmunit::main!(main);

/// kvm-unit-tests' `CANONICAL_48_VAL`: canonical with 48 bits (so with 57 too).
const CANONICAL_48: u64 = 0xffff_aaaa_aaaa_aaaa;
/// kvm-unit-tests' `CANONICAL_57_VAL`: canonical with 57 bits, not with 48.
const CANONICAL_57: u64 = 0xffaa_aaaa_aaaa_aaaa;
/// kvm-unit-tests' `NONCANONICAL`: canonical with neither.
const NONCANONICAL: u64 = 0xaaaa_aaaa_aaaa_aaaa;

/// A lower-half page beyond the 48-bit space: PML5 index 0xaa.
const LOWER_57: u64 = 0x00aa_aaaa_aaaa_a000;
/// An upper-half page beyond the 48-bit space: PML5 index 0x1aa.
const UPPER_57: u64 = 0xffaa_aaaa_aaaa_a000;
/// Next to [`LOWER_57`] but under another PML5 entry (index 0xab), which stays unmapped.
const NEIGHBOUR_57: u64 = 0x00ab_aaaa_aaaa_a000;
/// Bit 56 set with bits 63:57 clear: not canonical with 57 bits.
const BIT_56_ONLY: u64 = 0x0100_0000_0000_0000;

/// QEMU's TCG takes any value WRMSR writes to the segment-base and SYSCALL MSRs.
const TCG_MSR_UNCHECKED: &str = "QEMU's TCG stores a non-canonical value in the FS/GS/KERNEL_GS \
     base, LSTAR and CSTAR MSRs where the SDM's WRMSR says #GP(0): helper_wrmsr \
     (target/i386/tcg/system/misc_helper.c) assigns it unchecked; reproducer \
     reproduce-noncanonical-msr-tcg";

/// QEMU's TCG takes any base LGDT, LIDT, LTR and LLDT load.
const TCG_BASE_UNCHECKED: &str = "QEMU's TCG loads a non-canonical GDTR/IDTR base and TR/LDTR \
     descriptor base where #GP is due (the SDM's LTR/LLDT in 64-bit mode; Intel's 5-level \
     paging white paper for all four, which KVM's emulator follows: X86EMUL_F_DT_LOAD): LGDT/\
     LIDT in target/i386/tcg/translate.c and helper_ltr/helper_lldt \
     (target/i386/tcg/seg_helper.c) store the base unchecked; reproducer \
     reproduce-noncanonical-descriptor-base-tcg";

/// A word in the image, whose identity mapping must survive the switch to 5-level paging.
static IDENTITY_MARKER: u64 = 0;

/// A register that takes a linear address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Base(BaseRegister),
    Msr(u32),
}

/// kvm-unit-tests' list, in its order (the SYSENTER MSRs are left out as there).
const TARGETS: [(&str, Target); 9] = [
    ("GDTR base", Target::Base(BaseRegister::Gdtr)),
    ("IDTR base", Target::Base(BaseRegister::Idtr)),
    ("TR base", Target::Base(BaseRegister::Tr)),
    ("LDTR base", Target::Base(BaseRegister::Ldtr)),
    ("IA32_FS_BASE", Target::Msr(msr::IA32_FS_BASE)),
    ("IA32_GS_BASE", Target::Msr(msr::IA32_GS_BASE)),
    ("IA32_KERNEL_GS_BASE", Target::Msr(msr::IA32_KERNEL_GS_BASE)),
    ("IA32_CSTAR", Target::Msr(msr::IA32_CSTAR)),
    ("IA32_LSTAR", Target::Msr(msr::IA32_LSTAR)),
];

impl Target {
    /// What the register holds now, where it can be read.
    fn read(self) -> Option<u64> {
        match self {
            Target::Base(BaseRegister::Gdtr) => Some(store_gdtr().1),
            Target::Base(BaseRegister::Idtr) => Some(store_idtr().1),
            Target::Base(_) => None,
            Target::Msr(index) => try_rdmsr(index).ok(),
        }
    }

    /// Loads `value` and puts the old value back at once: the value read back meanwhile
    /// (where it can be read), or the exception.
    fn try_write_briefly(self, value: u64) -> Result<Option<u64>, Exception> {
        match self {
            Target::Base(register) => try_load_base_briefly(register, value),
            Target::Msr(index) => try_wrmsr_briefly(index, value).map(Some),
        }
    }
}

fn is_gp<T>(result: &Result<T, Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP)
}

fn is_pf_at<T>(result: &Result<T, Exception>, address: u64) -> bool {
    matches!(result, Err(e) if e.vector == Vector::PF && e.fault_address() == Some(address)
        && e.syndrome() & page_fault::PRESENT == 0)
}

/// kvm-unit-tests' `test_register_write`: the write succeeds or raises #GP as expected, and
/// the register then holds the new value, or still the old one.
///
/// `known` names a host defect that makes this one write succeed where #GP is due: it turns
/// that report (and only it) into a known failure.
fn check_write(name: &str, target: Target, value: u64, expect_success: bool, known: Option<&str>) {
    let old = target.read();
    let result = target.try_write_briefly(value);
    let expected = if expect_success { "succeeds" } else { "raises #GP" };
    let as_expected = if expect_success {
        result.is_ok()
    } else {
        is_gp(&result)
    };
    known_failure(known.is_some(), known.unwrap_or(""), || {
        report!(as_expected, "{name} <- {value:#x} {expected} (got {result:x?})")
    });
    if as_expected {
        match (result, old) {
            (Ok(Some(seen)), _) => {
                report!(seen == value, "{name} held {value:#x} (read {seen:#x})");
            }
            (Err(_), Some(old)) => {
                let now = target.read();
                report!(now == Some(old), "{name} kept {old:#x} (read {now:x?})");
            }
            _ => {}
        }
    }
}

/// kvm-unit-tests' `test_register`: 48-bit canonical always, 57-bit canonical with LA57,
/// never a value that is not 57-bit canonical.
///
/// `tcg_unchecked` is the evidence for a register QEMU's TCG loads unchecked (the
/// non-canonical write's known failure under TCG); `None` for the others.
fn check_register(name: &str, target: Target, la57: bool, tcg_unchecked: Option<&str>) {
    check_write(name, target, CANONICAL_48, true, None);
    check_write(name, target, CANONICAL_57, la57, None);
    let known = tcg_unchecked.filter(|_| is_tcg());
    check_write(name, target, NONCANONICAL, false, known);
}

/// kvm-unit-tests' `__test_canonical_checks` (without forced emulation, which this runtime
/// has no prefix for).
fn canonical_checks(la57: bool) {
    for (name, target) in TARGETS {
        let tcg_unchecked = match target {
            Target::Base(_) => TCG_BASE_UNCHECKED,
            Target::Msr(_) => TCG_MSR_UNCHECKED,
        };
        check_register(name, target, la57, Some(tcg_unchecked));
    }
    report_skip!(
        "IA32_SYSENTER_ESP/EIP: canonical only on Intel, and KVM skips the check for \
         cross-vendor migration (kvm-unit-tests skips them too)"
    );
    if Feature::Ds.supported() {
        check_register("IA32_DS_AREA", Target::Msr(msr::IA32_DS_AREA), la57, None);
    } else {
        report_skip!("IA32_DS_AREA: CPUID.1:EDX[21] (DS) is clear");
    }
    if Feature::IntelPt.supported() {
        // kvm-unit-tests: each address range CPUID.(0x14,1):EAX[2:0] counts has an A and a B
        // MSR, written with that range configured as a filter in IA32_RTIT_CTL (ADDRn_CFG = 1)
        // and tracing off.
        for range in 0..msr::rtit_address_ranges() {
            if let Err(exception) = try_wrmsr(msr::IA32_RTIT_CTL, 1 << (32 + 4 * range)) {
                report_fail!("IA32_RTIT_CTL with ADDR{range}_CFG = 1 raised {exception}");
            }
            let start = msr::IA32_RTIT_ADDR0_A + 2 * range;
            for (bound, index) in [("A", start), ("B", start + 1)] {
                let name = alloc::format!("IA32_RTIT_ADDR{range}_{bound}");
                check_register(&name, Target::Msr(index), la57, None);
            }
        }
        let _ = try_wrmsr(msr::IA32_RTIT_CTL, 0);
    } else {
        report_skip!("IA32_RTIT_ADDRn_A/B: CPUID.7.0:EBX[25] (Intel PT) is clear");
    }
    if Feature::Invpcid.supported() {
        invpcid_checks(la57);
    } else {
        report_skip!("INVPCID type 0: CPUID.7.0:EBX[10] (INVPCID) is clear");
    }
}

/// kvm-unit-tests' `test_invpcid`: INVPCID type 0 (one address) takes a 48-bit canonical
/// address, a 57-bit canonical one with LA57, and raises #GP for one that is neither.
fn invpcid_checks(la57: bool) {
    let cr4 = read_cr4();
    let pcid = Feature::Pcid.supported() && try_write_cr4(cr4 | Cr4Flags::PCID.bits()).is_ok();
    let context = if pcid { 10 } else { 0 };
    for (address, expect_success) in [(CANONICAL_48, true), (CANONICAL_57, la57), (NONCANONICAL, false)] {
        let result = try_invpcid(0, context, address);
        let as_expected = if expect_success {
            result.is_ok()
        } else {
            is_gp(&result)
        };
        report!(
            as_expected,
            "INVPCID type 0 for PCID {context} at {address:#x} {} (got {result:x?})",
            if expect_success { "succeeds" } else { "raises #GP" }
        );
    }
    if pcid {
        let _ = try_write_cr4(cr4);
    }
}

/// The CR4.LA57 check of kvm-unit-tests' `main`: in 64-bit mode MOV to CR4 cannot change it.
fn check_la57_stuck(five_level: bool) {
    let cr4 = read_cr4();
    let flipped = cr4 ^ Cr4Flags::L5_PAGING.bits();
    let result = try_write_cr4(flipped);
    let change = if five_level { "clearing" } else { "setting" };
    report!(
        is_gp(&result),
        "{change} CR4.LA57 in 64-bit mode raises #GP (got {result:x?})"
    );
    let now = read_cr4();
    report!(now == cr4, "CR4 stays {cr4:#x} (reads {now:#x})");
    let same = try_write_cr4(cr4);
    report!(
        same.is_ok(),
        "MOV to CR4 of its own value succeeds (got {same:x?})"
    );
}

/// Data accesses in 4-level paging: 48-bit canonical is the rule, so a 57-bit-only address
/// raises #GP.
fn four_level_accesses() {
    for address in [LOWER_57, UPPER_57] {
        let result = try_read(address);
        report!(
            is_gp(&result),
            "read of {address:#x} (57-bit canonical only) raises #GP (got {result:x?})"
        );
    }
}

/// Data accesses in 5-level paging: pages beyond the 48-bit space map and unmap, unmapped
/// ones raise #PF, addresses that are not 57-bit canonical raise #GP.
fn five_level_accesses() {
    for address in [LOWER_57, UPPER_57, NEIGHBOUR_57] {
        let result = try_read(address);
        report!(
            is_pf_at(&result, address),
            "read of unmapped {address:#x} raises a not-present #PF with CR2 = it (got {result:x?})"
        );
    }
    for address in [NONCANONICAL, BIT_56_ONLY] {
        let result = try_read(address);
        report!(
            is_gp(&result),
            "read of {address:#x} (not 57-bit canonical) raises #GP (got {result:x?})"
        );
    }
    for (address, value) in [(LOWER_57, 0x5a5a_0001_u64), (UPPER_57, 0x5a5a_0002)] {
        let page = TestPage::new_at(address);
        let frame = page.frame();
        // The runtime's walk of the tables it just wrote: a precondition; the CPU's walk is
        // judged by the write through the frame below.
        let translated = mmu::translate(address);
        if translated != Some(frame) {
            report_fail!("{address:#x} does not translate to its frame {frame:#x} (got {translated:x?})");
        }
        let written = page.try_write(8, value);
        let through_frame = try_read(frame + 8);
        report!(
            written.is_ok() && through_frame == Ok(value),
            "a write to {:#x} lands in the frame (write {written:x?}, frame reads {through_frame:x?})",
            address + 8
        );
        let read = page.try_read(8);
        report!(
            read == Ok(value),
            "a read of {:#x} sees it (got {read:x?})",
            address + 8
        );
        page.unmap();
        let result = try_read(address + 8);
        report!(
            is_pf_at(&result, address + 8),
            "after unmapping, a read of {:#x} raises a not-present #PF (got {result:x?})",
            address + 8
        );
    }
    let neighbour = try_read(NEIGHBOUR_57);
    report!(
        is_pf_at(&neighbour, NEIGHBOUR_57),
        "{NEIGHBOUR_57:#x}, under the next PML5 entry, stayed unmapped (got {neighbour:x?})"
    );
}

fn main(_args: &[&str]) -> i32 {
    let la57 = Feature::La57.supported();
    report_info!("CPUID.7.0:ECX[16] LA57: {la57}");
    {
        let _prefix = prefix("4-level");
        let levels = mmu::paging_levels();
        let cr4 = read_cr4();
        report!(
            levels == 4 && cr4 & Cr4Flags::L5_PAGING.bits() == 0,
            "boot leaves 4-level paging on: CR4.LA57 clear (CR4 {cr4:#x}, {levels} levels)"
        );
        check_la57_stuck(false);
        // The test's own constants, not the CPU: a precondition, no report when it holds.
        if !(is_canonical(CANONICAL_57, 57)
            && !is_canonical(CANONICAL_57, 48)
            && !is_canonical(NONCANONICAL, 57))
        {
            report_fail!("the test values are not canonical as their names say");
        }
        four_level_accesses();
        canonical_checks(la57);
    }
    if !la57 {
        report_skip!(
            "5-level paging: CPUID.7.0:ECX[16] (LA57) is clear, so CR4.LA57 cannot be set \
             (the 5-level half did not run)"
        );
        return report_summary();
    }
    // SAFETY: this test sends no NMIs and runs on one CPU; its stack is the runtime's.
    #[allow(unsafe_code)]
    let switched = unsafe { mmu::enable_five_level_paging() };
    report!(switched.is_ok(), "switch to 5-level paging (got {switched:?})");
    if let Err(error) = switched {
        let reason = match error {
            FiveLevelError::NotSupported => "LA57 is not supported",
            FiveLevelError::PcidEnabled => "CR4.PCIDE is set",
        };
        report_skip!("5-level paging checks: the switch did not happen ({reason})");
        return report_summary();
    }
    let _prefix = prefix("5-level");
    let levels = mmu::paging_levels();
    let cr4 = read_cr4();
    let efer = EferFlags::from_bits_retain(try_rdmsr(msr::IA32_EFER).unwrap_or(0));
    report!(
        levels == 5 && mmu::linear_address_bits() == 57 && cr4 & Cr4Flags::L5_PAGING.bits() != 0,
        "CR4.LA57 is set: 5 levels, 57-bit linear addresses (CR4 {cr4:#x}, {levels} levels)"
    );
    report!(
        efer.contains(EferFlags::LONG_MODE_ACTIVE),
        "back in long mode: EFER.LMA set (EFER {:#x})",
        efer.bits()
    );
    let here = &raw const IDENTITY_MARKER as u64;
    // The runtime's own walk of its tables, not the CPU's: a precondition, no report when it
    // holds (the CPU's use of the map is every access after the switch).
    let translated = mmu::translate(here);
    if translated != Some(here) {
        report_fail!("the identity map does not hold: {here:#x} -> {translated:x?}");
    }
    check_la57_stuck(true);
    five_level_accesses();
    canonical_checks(la57);
    report_summary()
}
