//! svm_pae_test and svm_pse_test: VMRUN into a 32-bit guest (legacy protected mode) with PAE
//! or two-level paging, through identity tables of 2 MiB or 4 MiB pages that map the low
//! 4 GiB. VMRUN ignores CR3's ignored bits and refuses its reserved ones; PAE's PDPTEs come
//! from memory at CR3, where their ignored bits do nothing and their reserved bits fault in
//! the guest's walk through the PDPTE the guest uses; without nested paging VMRUN may also
//! refuse them (kvm-unit-tests expects that, as KVM loads the PDPTEs there; AMD's APM names
//! no PDPTE check among VMRUN's consistency checks).

use vmunit::arch::probes::physical_address_bits;
use vmunit::arch::svm::{ExitCode, Intercept, LegacyPaging, Svm};
use vmunit::memory::DmaBuffer;
use vmunit::{Vector, prefix, report};

/// Present, writable, page size: a large-page leaf.
const LEAF: u64 = 0x83;
/// Present.
const PRESENT: u64 = 1;

/// The tables of one paging mode, and the guest's CR3.
struct Tables {
    /// The PDPT (PAE) or the page directory (two-level).
    top: DmaBuffer,
    /// PAE's four page directories (kept allocated).
    _directories: Option<DmaBuffer>,
}

impl Tables {
    /// Two-level: one page directory of 1024 4 MiB pages.
    fn two_level() -> Tables {
        let top = DmaBuffer::new(1);
        for index in 0..1024u64 {
            top.write_u32(index * 4, ((index << 22) | LEAF) as u32);
        }
        Tables {
            top,
            _directories: None,
        }
    }

    /// PAE: a PDPT whose four entries point at page directories of 512 2 MiB pages.
    fn pae() -> Tables {
        let top = DmaBuffer::new(1);
        let directories = DmaBuffer::new(4);
        for pdpte in 0..4u64 {
            for index in 0..512u64 {
                let offset = pdpte * 4096 + index * 8;
                directories.write_u64(offset, (pdpte << 30) | (index << 21) | LEAF);
            }
            top.write_u64(
                pdpte * 8,
                (directories.physical_address() + pdpte * 4096) | PRESENT,
            );
        }
        Tables {
            top,
            _directories: Some(directories),
        }
    }

    fn cr3(&self) -> u64 {
        self.top.physical_address()
    }
}

/// Whether `exit` is VMRUN's failure.
fn is_error(exit: ExitCode) -> bool {
    crate::guest_state::is_error(exit)
}

/// One VMRUN of the 32-bit guest from a reset VMCB, with #PF intercepted.
#[allow(unsafe_code)]
fn run(svm: &mut Svm, paging: LegacyPaging, cr3: u64) -> ExitCode {
    svm.reset();
    svm.set_intercept(Intercept::Exception(Vector::PF.0));
    // SAFETY: `cr3` is the address of identity tables of `paging`'s format that map the code
    // (in the low 4 GiB) onto itself, with at most ignored bits or bits VMRUN refuses set in
    // CR3, or ignored or reserved bits set in one PDPTE (a reserved bit faults in the walk).
    unsafe { svm.run_legacy_hypercall(paging, cr3) }
}

/// The reserved bits of CR3 above the physical-address width.
fn reserved_cr3_bits() -> core::ops::RangeInclusive<u32> {
    physical_address_bits()..=63
}

/// The CR3 checks of both tests: the clean tables run to VMMCALL, each of CR3's `ignored`
/// bits changes nothing, and each bit above the physical-address width makes VMRUN fail.
fn cr3_checks(svm: &mut Svm, paging: LegacyPaging, cr3: u64, ignored: impl Iterator<Item = u32>) {
    let exit = run(svm, paging, cr3);
    report!(
        exit == ExitCode::Vmmcall,
        "VM-entry succeeded (exit {exit}, wanted VMMCALL)"
    );
    for bit in ignored {
        let exit = run(svm, paging, cr3 | 1 << bit);
        report!(
            exit == ExitCode::Vmmcall,
            "CR3 ignored bit, bit = {:x} (exit {exit}, wanted VMMCALL)",
            1u64 << bit
        );
    }
    for bit in reserved_cr3_bits() {
        let exit = run(svm, paging, cr3 | 1 << bit);
        report!(
            is_error(exit),
            "CR3 reserved bit, bit = {:x} (exit {exit}, wanted ERR)",
            1u64 << bit
        );
    }
}

/// svm_pae_test: VMRUN with PAE paging loads the PDPTEs from memory at CR3.
pub fn svm_pae_test(svm: &mut Svm) {
    svm.set_host_interrupts(false);
    let tables = Tables::pae();
    let cr3 = tables.cr3();
    cr3_checks(svm, LegacyPaging::Pae, cr3, 0..=4);
    let nested = svm.nested_paging();
    for index in 0..4u64 {
        let _prefix = prefix(&alloc::format!("PDPTE{index}"));
        let original = tables.top.read_u64(index * 8);
        // The guest's walk goes through PDPTE0 alone (its code is in the first GiB): a
        // reserved bit there faults in the walk, in the others it is never seen. Without nested
        // paging VMRUN may load and check the PDPTEs as well (KVM does, in nested_svm_load_cr3
        // -> load_pdptrs, an SDM rule for MOV to CR3), so ERR is right there too; AMD's APM
        // names no PDPTE check among VMRUN's consistency checks (vol. 2, 15.5.1), so it is not
        // the only right outcome, as kvm-unit-tests' svm_pae_test has it.
        let walk = if index == 0 {
            ExitCode::Exception(Vector::PF.0)
        } else {
            ExitCode::Vmmcall
        };
        let wanted_name = if nested {
            alloc::format!("{walk}")
        } else {
            alloc::format!("ERR or {walk}")
        };
        for bit in 52..=62 {
            tables.top.write_u64(index * 8, original | 1 << bit);
            let exit = run(svm, LegacyPaging::Pae, cr3);
            report!(
                exit == walk || (!nested && is_error(exit)),
                "reserved bit, bit = {:x} (exit {exit}, wanted {wanted_name})",
                1u64 << bit
            );
        }
        for bit in 9..=11 {
            tables.top.write_u64(index * 8, original | 1 << bit);
            let exit = run(svm, LegacyPaging::Pae, cr3);
            report!(
                exit == ExitCode::Vmmcall,
                "ignored bit, bit = {:x} (exit {exit}, wanted VMMCALL)",
                1u64 << bit
            );
        }
        tables.top.write_u64(index * 8, original);
    }
    svm.set_host_interrupts(true);
}

/// svm_pse_test: VMRUN with two-level paging succeeds; CR3 bits 2:0 and 11:5 are ignored, the
/// bits above the physical-address width refused.
pub fn svm_pse_test(svm: &mut Svm) {
    svm.set_host_interrupts(false);
    let tables = Tables::two_level();
    cr3_checks(
        svm,
        LegacyPaging::TwoLevel,
        tables.cr3(),
        (0..=11).filter(|bit| *bit != 3 && *bit != 4),
    );
    svm.set_host_interrupts(true);
}
