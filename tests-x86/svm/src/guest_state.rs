//! svm_guest_state_test: VMRUN's consistency checks of the guest state (reserved bits of EFER,
//! CR0, CR3, CR4, DR6 and DR7, illegal combinations, the NPF and VMLOAD-canonicalization parts).

use vmunit::arch::control::{Cr0Flags, Cr4Flags};
use vmunit::arch::cpuid::cpuid;
use vmunit::arch::msr::EferFlags;
use vmunit::arch::probes::physical_address_bits;
use vmunit::arch::svm::{ExitCode, Intercept, LoadedBase, Svm, Vmcb};
use vmunit::report;

/// Whether `exit` is VMRUN's failure, ERR: its low 32 bits all ones (QEMU stores 0xffffffff;
/// that EXITCODE is -1 in all 64 bits is `vmrun intercept check`'s and `asid_zero`'s check).
pub(crate) fn is_error(exit: ExitCode) -> bool {
    exit.raw() as u32 == u32::MAX
}

/// Runs an empty guest from a reset VMCB that `edit` changed: VMRUN's consistency checks.
#[allow(unsafe_code)]
fn run_with_state(svm: &mut Svm, edit: impl FnOnce(&mut Vmcb)) -> ExitCode {
    svm.reset();
    // SAFETY: `edit` sets guest state that VMRUN must refuse, or state the empty guest runs
    // with anyway (segment and table bases, cache bits, bitmap addresses); a host that wrongly
    // accepts bad state runs the guest into a fault at worst, which triple-faults into the
    // SHUTDOWN intercept `reset` sets.
    edit(unsafe { svm.vmcb_mut() });
    svm.run_once(&|| {})
}

/// kvm-unit-tests' `SVM_TEST_REG_RESERVED_BITS` and `SVM_TEST_CR_RESERVED_BITS`: for every
/// `step`-th bit from `start` to `end` that `reserved` holds, VMRUN with it set in the register
/// `field` picks must end as `expected` says (`None`: ERR).
fn reserved_bits(
    svm: &mut Svm,
    name: &str,
    (start, end, step): (u32, u32, usize),
    reserved: u64,
    field: fn(&mut Vmcb) -> &mut u64,
    expected: Option<ExitCode>,
) {
    for bit in (start..=end).step_by(step).filter(|bit| reserved & 1 << bit != 0) {
        let mut value = 0;
        let exit = run_with_state(svm, |vmcb| {
            let register = field(vmcb);
            *register |= 1 << bit;
            value = *register;
        });
        let good = match expected {
            None => is_error(exit),
            Some(code) => exit == code,
        };
        let wanted = expected.map_or("ERR".into(), |code| alloc::format!("{code}"));
        report!(
            good,
            "Test {name}{end}:{start}: {value:x}, wanted exit {wanted}, got {exit}"
        );
    }
}

/// EFER bits that must be zero: 63:16 and 9.
const EFER_RESERVED: u64 = 0xffff_ffff_ffff_0200;
const CR0_RESERVED: u64 = 0xffff_ffff_0000_0000;
const CR3_LONG_MBZ: u64 = 0xfff0_0000_0000_0000;
const CR3_LONG_RESERVED: u64 = 0xfe7;
const CR3_PAE_LEGACY_RESERVED: u64 = 0x7;
const CR4_LEGACY_RESERVED: u64 = 0xfe08_e000;
const CR4_RESERVED: u64 = 0xffff_ffff_fe08_e000;
const DR6_RESERVED: u64 = 0xffff_ffff_ffff_1ff0;
const DR7_RESERVED: u64 = 0xffff_ffff_0000_cc00;

/// svm_guest_state_test: VMRUN's consistency checks of the guest state (AMD APM Vol. 2,
/// 15.5.1): EFER, CR0, CR3, CR4, DR6/DR7 and the permission maps' addresses, and the segment
/// and table bases VMRUN takes as they are.
pub(crate) fn svm_guest_state_test(svm: &mut Svm) {
    let efer_svme = EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits();
    let lme = EferFlags::LONG_MODE_ENABLE.bits();
    let (pg, pe, cd, nw) = (
        Cr0Flags::PAGING.bits(),
        Cr0Flags::PROTECTED_MODE_ENABLE.bits(),
        Cr0Flags::CACHE_DISABLE.bits(),
        Cr0Flags::NOT_WRITE_THROUGH.bits(),
    );
    let pae = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
    // EFER.
    let exit = run_with_state(svm, |_| {});
    report!(
        exit == ExitCode::Vmmcall,
        "EFER.SVME set: VMRUN runs the guest (got {exit})"
    );
    let exit = run_with_state(svm, |vmcb| vmcb.save.efer &= !efer_svme);
    report!(
        is_error(exit),
        "EFER.SVME clear: VMRUN fails with ERR (got {exit})"
    );
    reserved_bits(
        svm,
        "EFER ",
        (8, 9, 1),
        EFER_RESERVED,
        |vmcb| &mut vmcb.save.efer,
        None,
    );
    reserved_bits(
        svm,
        "EFER ",
        (16, 63, 4),
        EFER_RESERVED,
        |vmcb| &mut vmcb.save.efer,
        None,
    );
    let exit = run_with_state(svm, |vmcb| {
        vmcb.save.efer |= lme;
        vmcb.save.cr0 |= pg | pe;
        vmcb.save.cr4 &= !pae;
    });
    report!(
        is_error(exit),
        "EFER.LME=1, CR0.PG=1 and CR4.PAE=0: ERR (got {exit})"
    );
    let exit = run_with_state(svm, |vmcb| {
        vmcb.save.efer |= lme;
        vmcb.save.cr0 = (vmcb.save.cr0 | pg) & !pe;
        vmcb.save.cr4 |= pae;
    });
    report!(
        is_error(exit),
        "EFER.LME=1, CR0.PG=1 and CR0.PE=0: ERR (got {exit})"
    );
    let exit = run_with_state(svm, |vmcb| {
        vmcb.save.efer |= lme;
        vmcb.save.cr0 |= pg | pe;
        vmcb.save.cr4 |= pae;
        vmcb.save.cs.attributes |= vmunit::arch::svm::attributes::L | vmunit::arch::svm::attributes::DB;
    });
    report!(
        is_error(exit),
        "EFER.LME=1, CR0.PG=1, CR4.PAE=1, CS.L=1 and CS.D=1: ERR (got {exit})"
    );
    // CR0.
    for (set, clear, error, name) in [
        (cd, nw, false, "CD=1,NW=0"),
        (cd | nw, 0, false, "CD=1,NW=1"),
        (0, cd | nw, false, "CD=0,NW=0"),
        (nw, cd, true, "CD=0,NW=1"),
    ] {
        let mut value = 0;
        let exit = run_with_state(svm, |vmcb| {
            vmcb.save.cr0 = (vmcb.save.cr0 | set) & !clear;
            value = vmcb.save.cr0;
        });
        let good = if error {
            is_error(exit)
        } else {
            exit == ExitCode::Vmmcall
        };
        report!(good, "Test CR0 {name}: {value:x} (got {exit})");
    }
    reserved_bits(
        svm,
        "CR0 ",
        (32, 63, 4),
        CR0_RESERVED,
        |vmcb| &mut vmcb.save.cr0,
        None,
    );
    // CR3: bits 63:52 must be zero in long mode.
    reserved_bits(
        svm,
        "CR3 ",
        (0, 63, 1),
        CR3_LONG_MBZ,
        |vmcb| &mut vmcb.save.cr3,
        None,
    );
    let exit = run_with_state(svm, |vmcb| vmcb.save.cr3 &= !CR3_LONG_MBZ);
    report!(
        exit == ExitCode::Vmmcall,
        "Test CR3 63:0 without its MBZ bits runs the guest (got {exit})"
    );
    // CR3's other reserved bits are not checked by VMRUN: with nothing mapped in the nested page
    // table, the guest's first fetch is a nested page fault.
    if svm.set_nested_mapping_present(false) {
        reserved_bits(
            svm,
            "CR3 (PCIDE=0) ",
            (0, 11, 1),
            CR3_LONG_RESERVED,
            |vmcb| &mut vmcb.save.cr3,
            Some(ExitCode::NestedPageFault),
        );
        reserved_bits(
            svm,
            "CR3 (PAE) ",
            (0, 2, 1),
            CR3_PAE_LEGACY_RESERVED,
            |vmcb| &mut vmcb.save.cr3,
            Some(ExitCode::NestedPageFault),
        );
        svm.set_nested_mapping_present(true);
    }
    // CR4: legacy-mode reserved bits with EFER.LME clear, then long mode's.
    for bit in (12..=31).filter(|bit| CR4_LEGACY_RESERVED & 1 << bit != 0) {
        let exit = run_with_state(svm, |vmcb| {
            vmcb.save.efer &= !lme;
            vmcb.save.cr4 |= 1 << bit;
        });
        report!(
            is_error(exit),
            "Test CR4 31:12 bit {bit} with EFER.LME=0: ERR (got {exit})"
        );
    }
    reserved_bits(
        svm,
        "CR4 ",
        (12, 31, 1),
        CR4_RESERVED,
        |vmcb| &mut vmcb.save.cr4,
        None,
    );
    reserved_bits(
        svm,
        "CR4 ",
        (32, 63, 4),
        CR4_RESERVED,
        |vmcb| &mut vmcb.save.cr4,
        None,
    );
    // DR6 and DR7: bits 63:32 must be zero.
    reserved_bits(
        svm,
        "DR6 ",
        (32, 63, 4),
        DR6_RESERVED,
        |vmcb| &mut vmcb.save.dr6,
        None,
    );
    reserved_bits(
        svm,
        "DR7 ",
        (32, 63, 4),
        DR7_RESERVED,
        |vmcb| &mut vmcb.save.dr7,
        None,
    );
    // The permission maps must end below the physical-address limit (VMRUN ignores bits 11:0).
    let limit = 1u64 << physical_address_bits();
    let page = vmunit::memory::PAGE_SIZE;
    let msrpm = svm.vmcb().control.msrpm_base_pa & !0xfff;
    let iopm = svm.vmcb().control.iopm_base_pa & !0x7ff;
    for (address, error) in [
        (limit - 2 * page, true),
        (limit - 2 * page + 1, true),
        (limit - page, true),
        (msrpm, false),
        (msrpm | 0xfff, false),
    ] {
        let exit = run_with_state(svm, |vmcb| {
            vmcb.control.set_intercept(Intercept::MsrProt);
            vmcb.control.msrpm_base_pa = address;
        });
        let good = if error {
            is_error(exit)
        } else {
            exit == ExitCode::Vmmcall
        };
        report!(good, "Test MSRPM address: {address:x} (got {exit})");
    }
    for (address, error) in [
        (limit - 4 * page, false),
        (limit - 3 * page, false),
        (limit - 2 * page - 2, false),
        (limit - 2 * page, true),
        (limit - page, true),
        (iopm, false),
        (iopm | 0xfff, false),
    ] {
        let exit = run_with_state(svm, |vmcb| {
            vmcb.control.set_intercept(Intercept::IoioProt);
            vmcb.control.iopm_base_pa = address;
        });
        let good = if error {
            is_error(exit)
        } else {
            exit == ExitCode::Vmmcall
        };
        report!(good, "Test IOPM address: {address:x} (got {exit})");
    }
    // VMLOAD makes non-canonical bases canonical (checked in the host, which VMLOADs them).
    // Canonical means for the CPU's virtual-address width (CPUID.80000008H:EAX[15:8], 57 with
    // LA57), as kvm-unit-tests' is_canonical has it.
    let width = match cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        true => (cpuid(0x8000_0008, 0).eax >> 8) & 0xff,
        false => 48,
    };
    let low = (1u64 << width) - 1;
    let is_canonical = |address: u64| {
        let shift = 64 - width;
        ((address << shift) as i64 >> shift) as u64 == address
    };
    for which in [
        LoadedBase::Fs,
        LoadedBase::Gs,
        LoadedBase::Ldtr,
        LoadedBase::Tr,
        LoadedBase::KernelGs,
    ] {
        let base = (0x1234_5678_9000 & low) | (0xaaaa_aaaa_aaaa_aaaa & !low);
        let saved = svm.vmload_vmsave_base(which, base);
        report!(
            !is_canonical(base) && is_canonical(saved),
            "Test {which:?}.base for canonical form: {saved:x} (VMLOAD of {base:x}, {width}-bit addresses)"
        );
    }
    // VMRUN takes non-canonical segment and table bases as they are.
    let noncanonical = |base: u64| (base & low) | (0xaaaa_aaaa_aaaa_aaaa & !low);
    for (name, field) in [
        (
            "ES",
            (|vmcb: &mut Vmcb| &mut vmcb.save.es.base) as fn(&mut Vmcb) -> &mut u64,
        ),
        ("CS", |vmcb| &mut vmcb.save.cs.base),
        ("SS", |vmcb| &mut vmcb.save.ss.base),
        ("DS", |vmcb| &mut vmcb.save.ds.base),
        ("GDTR", |vmcb| &mut vmcb.save.gdtr.base),
        ("IDTR", |vmcb| &mut vmcb.save.idtr.base),
    ] {
        let exit = run_with_state(svm, |vmcb| {
            let base = field(vmcb);
            *base = noncanonical(*base);
        });
        report!(
            exit == ExitCode::Vmmcall,
            "Successful VMRUN with noncanonical {name}.base (got {exit})"
        );
    }
}
