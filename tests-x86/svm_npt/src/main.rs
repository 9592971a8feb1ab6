//! svm_npt: kvm-unit-tests' svm_npt (x86/svm_npt.c), nested paging under nested SVM: a guest
//! access through a nested page table entry that is not present, read-only, supervisor-only,
//! no-execute or has reserved bits set exits with a nested page fault, whose EXITINFO1 holds
//! the #PF error code and which translation faulted (the final one, or one of the guest's own
//! page-table walk) and whose EXITINFO2 holds the faulting guest-physical address. The guest
//! shares the host's page tables, so its walk runs through nested paging too.
//!
//! Arguments select cases by name (globs, `-name` leaves one out), as kvm-unit-tests' do.
//! Without SVM or without NPT in CPUID the test skips.
#![no_std]
#![no_main]

use vmunit::arch::apic;
use vmunit::arch::control::{Cr4Flags, read_cr3, read_cr4, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::rdtsc;
use vmunit::arch::mmu::{translate, walk_tables};
use vmunit::arch::msr::{EferFlags, IA32_EFER, try_rdmsr};
use vmunit::arch::probes::physical_address_bits;
use vmunit::arch::svm::{ExitCode, NestedLevel, Svm, Unavailable, nested_entry, nested_fault};
use vmunit::memory::TestPage;
use vmunit::{args::test_wanted, known_failure, prefix, report, report_fail, report_skip};

vmunit::main!(main);

/// One of kvm-unit-tests' `npt_tests[]`.
struct Case {
    name: &'static str,
    run: fn(&mut Svm),
}

static CASES: &[Case] = &[
    Case {
        name: "npt_nx",
        run: npt_nx,
    },
    Case {
        name: "npt_np",
        run: npt_np,
    },
    Case {
        name: "npt_us",
        run: npt_us,
    },
    Case {
        name: "npt_rw",
        run: npt_rw,
    },
    Case {
        name: "npt_rw_pfwalk",
        run: npt_rw_pfwalk,
    },
    Case {
        name: "npt_l1mmio",
        run: npt_l1mmio,
    },
    Case {
        name: "npt_rw_l1mmio",
        run: npt_rw_l1mmio,
    },
    Case {
        name: "svm_npt_rsvd_bits_test",
        run: svm_npt_rsvd_bits_test,
    },
];

/// Reproducers of TCG defects: they run only when an argument names them.
static REPRODUCERS: &[Case] = &[
    Case {
        name: "reproduce_pml4e_bit8",
        run: reproduce_pml4e_bit8,
    },
    Case {
        name: "reproduce_reserved_present",
        run: reproduce_reserved_present,
    },
    Case {
        name: "reproduce_fetch_smep",
        run: reproduce_fetch_smep,
    },
];

fn main(args: &[&str]) {
    let mut svm = match Svm::new() {
        Ok(svm) => svm,
        Err(Unavailable::NotSupported) => {
            report_skip!("SVM not available: CPUID.80000001H:ECX[2] is clear");
            return;
        }
        Err(error) => {
            report_fail!("SVM is advertised but cannot be turned on: {error:?}");
            return;
        }
    };
    if !svm.nested_paging() {
        report_skip!("NPT not supported: CPUID.8000000AH:EDX[0] is clear");
        return;
    }
    let mut matched = 0;
    for case in CASES.iter().filter(|case| test_wanted(case.name, args)) {
        matched += 1;
        let _prefix = prefix(case.name);
        svm.reset();
        (case.run)(&mut svm);
    }
    for reproducer in REPRODUCERS
        .iter()
        .filter(|reproducer| args.contains(&reproducer.name))
    {
        matched += 1;
        let _prefix = prefix(reproducer.name);
        svm.reset();
        (reproducer.run)(&mut svm);
    }
    if matched == 0 {
        report_fail!("command line didn't match any tests!");
    }
}

/// The guest-physical (= host-physical) address of `virtual_address`.
fn physical(virtual_address: u64) -> u64 {
    translate(virtual_address).expect("the runtime maps what the guest touches")
}

/// Reports that the exit was a nested page fault with `info_1` in EXITINFO1 and `address` in
/// EXITINFO2.
fn report_nested_fault(svm: &Svm, exit: ExitCode, info_1: u64, address: u64, what: &str) {
    let control = &svm.vmcb().control;
    report!(
        exit == ExitCode::NestedPageFault && control.exit_info_1 == info_1,
        "{what}: #NPF with EXITINFO1 {info_1:#x} (got {exit}, EXITINFO1 {:#x})",
        control.exit_info_1
    );
    report!(
        exit == ExitCode::NestedPageFault && control.exit_info_2 == address,
        "{what}: EXITINFO2 is the faulting guest-physical address {address:#x} (got {:#x})",
        control.exit_info_2
    );
}

/// npt_nx: the guest's first fetch from a page whose nested entry is NX faults (the host's
/// EFER.NXE gives NX its meaning; the guest's EFER.NXE, cleared, does not matter).
fn npt_nx(svm: &mut Svm) {
    let host_nx = try_rdmsr(IA32_EFER).unwrap_or(0) & EferFlags::NO_EXECUTE_ENABLE.bits() != 0;
    if !host_nx {
        report_skip!("the host's EFER.NXE is clear (CPUID.80000001H:EDX[20] is clear)");
        return;
    }
    let guest = || {};
    let entry = physical(Svm::guest_entry_address(&guest));
    svm.set_guest_no_execute(false);
    svm.update_nested_permissions(entry, NestedLevel::Table, nested_entry::NO_EXECUTE, 0);
    let exit = svm.run_once(&guest);
    svm.update_nested_permissions(entry, NestedLevel::Table, 0, nested_entry::NO_EXECUTE);
    use nested_fault::*;
    report_nested_fault(
        svm,
        exit,
        FINAL_TRANSLATION | FETCH | USER | PRESENT,
        entry,
        "fetch from an NX nested page",
    );
}

/// Runs a guest that reads (or writes) `page` with `clear` taken from its nested entry, and
/// checks the nested page fault.
fn data_access_fault(svm: &mut Svm, page: &TestPage, write: bool, clear: u64, info_1: u64, what: &str) {
    let frame = page.frame();
    svm.update_nested_permissions(frame, NestedLevel::Table, 0, clear);
    let exit = svm.run_once(&|| {
        let _ = if write {
            page.try_write(0, 0)
        } else {
            page.try_read(0).map(|_| ())
        };
    });
    svm.update_nested_permissions(frame, NestedLevel::Table, clear, 0);
    report_nested_fault(svm, exit, info_1, frame, what);
}

/// npt_np: a read of a page whose nested entry is not present.
fn npt_np(svm: &mut Svm) {
    let page = TestPage::new();
    use nested_fault::*;
    data_access_fault(
        svm,
        &page,
        false,
        nested_entry::PRESENT,
        FINAL_TRANSLATION | USER,
        "read of a not-present nested page",
    );
}

/// npt_us: a read of a page whose nested entry is supervisor-only (nested accesses are user).
fn npt_us(svm: &mut Svm) {
    let page = TestPage::new();
    use nested_fault::*;
    data_access_fault(
        svm,
        &page,
        false,
        nested_entry::USER,
        FINAL_TRANSLATION | USER | PRESENT,
        "read of a supervisor nested page",
    );
}

/// npt_rw: a write to a page whose nested entry is read-only.
fn npt_rw(svm: &mut Svm) {
    let page = TestPage::new();
    use nested_fault::*;
    data_access_fault(
        svm,
        &page,
        true,
        nested_entry::WRITABLE,
        FINAL_TRANSLATION | USER | WRITE | PRESENT,
        "write to a read-only nested page",
    );
}

/// The guest's page-table root (CR3 without its flag bits).
fn page_table_root() -> u64 {
    read_cr3() & 0x000f_ffff_ffff_f000
}

/// npt_rw_pfwalk: the guest's root page table in a read-only nested page: its first walk
/// (which may set accessed bits: nested walks of guest tables count as writes) faults.
fn npt_rw_pfwalk(svm: &mut Svm) {
    let root = page_table_root();
    svm.update_nested_permissions(root, NestedLevel::Table, 0, nested_entry::WRITABLE);
    let exit = svm.run_once(&|| {});
    svm.update_nested_permissions(root, NestedLevel::Table, nested_entry::WRITABLE, 0);
    use nested_fault::*;
    report_nested_fault(
        svm,
        exit,
        PAGE_TABLE_WALK | USER | WRITE | PRESENT,
        root,
        "guest page walk through a read-only nested page",
    );
}

/// APIC register offsets the MMIO cases use.
const APIC_VERSION: u64 = 0x30;
const APIC_TASK_PRIORITY: u64 = 0x80;
/// The xAPIC's MMIO base.
const APIC_BASE: u64 = 0xfee0_0000;

/// npt_l1mmio: the guest reads the APIC's version register twice through the nested map of
/// the host's APIC page and sees what the host sees.
fn npt_l1mmio(svm: &mut Svm) {
    if apic::x2apic_mode() {
        report_skip!("the APIC is in x2APIC mode: no MMIO");
        return;
    }
    let first = core::sync::atomic::AtomicU32::new(0);
    let second = core::sync::atomic::AtomicU32::new(0);
    let exit = svm.run_once(&|| {
        first.store(apic::read(APIC_VERSION), core::sync::atomic::Ordering::SeqCst);
        second.store(apic::read(APIC_VERSION), core::sync::atomic::Ordering::SeqCst);
    });
    let host = apic::read(APIC_VERSION);
    let (first, second) = (first.into_inner(), second.into_inner());
    report!(
        exit == ExitCode::Vmmcall && first == host && second == host,
        "the guest reads the APIC version {host:#x} through nested paging (got {first:#x}, {second:#x}; exit {exit})"
    );
}

/// npt_rw_l1mmio: a write to the APIC page through a read-only nested entry faults.
fn npt_rw_l1mmio(svm: &mut Svm) {
    if apic::x2apic_mode() {
        report_skip!("the APIC is in x2APIC mode: no MMIO");
        return;
    }
    let address = APIC_BASE + APIC_TASK_PRIORITY;
    svm.update_nested_permissions(address, NestedLevel::Table, 0, nested_entry::WRITABLE);
    let exit = svm.run_once(&|| apic::write(APIC_TASK_PRIORITY, apic::read(APIC_TASK_PRIORITY)));
    svm.update_nested_permissions(address, NestedLevel::Table, nested_entry::WRITABLE, 0);
    use nested_fault::*;
    report_nested_fault(
        svm,
        exit,
        FINAL_TRANSLATION | USER | WRITE | PRESENT,
        address,
        "write to the APIC through a read-only nested page",
    );
}

/// Bits `high`..=`low` of a varying value (RDTSC), retried until some are set; 0 after five
/// tries (kvm-unit-tests' `get_random_bits`).
fn random_bits(high: u32, low: u32) -> u64 {
    let mask = (u64::MAX >> (63 - high)) & !((1u64 << low) - 1);
    (0..5)
        .map(|_| (rdtsc() << low) & mask)
        .find(|bits| *bits != 0)
        .unwrap_or(0)
}

/// The size of what one nested entry of `level` maps.
fn level_size(level: NestedLevel) -> u64 {
    match level {
        NestedLevel::Pml4 => 1 << 39,
        NestedLevel::Pdpt => 1 << 30,
        NestedLevel::Directory => 1 << 21,
        NestedLevel::Table => 1 << 12,
    }
}

/// The paging state of one round: the host's EFER.NXE and CR4.SMEP, the guest's.
#[derive(Clone, Copy, Debug)]
struct Modes {
    host_nx: bool,
    host_smep: bool,
    guest_nx: bool,
    guest_smep: bool,
}

/// svm_npt_rsvd_bits_test: reserved bits in the nested PTE, PDE, PDPE and PML4E that map the
/// guest's code, under every combination of host and guest EFER.NXE and CR4.SMEP.
fn svm_npt_rsvd_bits_test(svm: &mut Svm) {
    let maximum = physical_address_bits();
    if maximum >= 52 {
        report_skip!("MAXPHYADDR {maximum}: 4 KiB entries have no reserved address bits");
    } else {
        rsvd_bits_rounds(svm, NestedLevel::Table, random_bits(51, maximum));
    }
    rsvd_bits_rounds(
        svm,
        NestedLevel::Directory,
        random_bits(20, 13) | nested_entry::LARGE_PAGE,
    );
    let gigabyte_bits = if Feature::Gbpages.supported() {
        random_bits(29, 13)
    } else {
        0
    };
    rsvd_bits_rounds(svm, NestedLevel::Pdpt, nested_entry::LARGE_PAGE | gigabyte_bits);
    rsvd_bits_rounds(svm, NestedLevel::Pml4, 1 << 8);
}

/// The KFAIL reason of bit 8 of a nested PML4E.
const PML4E_BIT8_DEFECT: &str = "QEMU's mmu_translate (target/i386/tcg/system/excp_helper.c) checks only rsvd_mask and PS in a PML4E, not bit 8, which AMD reserves in non-leaf PML4Es and PDPEs (reproduce-svm-npt-pml4e-bit8)";

/// The sixteen rounds of one entry: with the host's EFER.NXE clear, NX itself is the reserved
/// bit; with it set, `reserved`.
fn rsvd_bits_rounds(svm: &mut Svm, level: NestedLevel, reserved: u64) {
    if reserved == 0 {
        report_skip!("{level:?}: reserved bits are not valid (RDTSC gave none)");
        return;
    }
    for round in 0..16u32 {
        let modes = Modes {
            host_nx: round & 1 != 0,
            host_smep: round & 2 != 0,
            guest_nx: round & 4 != 0,
            guest_smep: round & 8 != 0,
        };
        let bits = if modes.host_nx {
            reserved
        } else {
            nested_entry::NO_EXECUTE
        };
        rsvd_bits_round(svm, level, bits, modes);
    }
}

/// One round: sets `bits` in the nested entry of `level` that maps the guest's code, runs the
/// guest, and checks the reserved-bit nested fault: on the guest's own page walk where the
/// entry maps one of the guest's page tables too, else on the final translation of its fetch.
#[allow(unsafe_code)]
fn rsvd_bits_round(svm: &mut Svm, level: NestedLevel, bits: u64, modes: Modes) {
    if !Feature::Nx.supported() {
        report_skip!("NX not supported: the host's EFER.NXE cannot be toggled");
        return;
    }
    if (modes.host_smep || modes.guest_smep) && !Feature::Smep.supported() {
        report_skip!("SMEP not supported ({modes:?})");
        return;
    }
    let guest = || {};
    let code_virtual = Svm::guest_entry_address(&guest);
    let code = physical(code_virtual);
    let size = level_size(level);
    let region = code & !(size - 1)..(code & !(size - 1)) + size;
    let walk = walk_tables(code_virtual)
        .iter()
        .any(|table| region.contains(table));

    let smep = Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits();
    let guest_cr4 = svm.vmcb().save.cr4;
    svm.set_guest_no_execute(modes.guest_nx);
    svm.set_guest_cr4(if modes.guest_smep {
        guest_cr4 | smep
    } else {
        guest_cr4 & !smep
    });
    let original = svm.nested_entry(code, level).expect("nested paging is on");
    // SAFETY: a reserved bit makes the nested walk fault before it maps anything; on a CPU that
    // ignored these bits the entry would map the guest's code region onto another host region
    // within the identity-mapped first 4 GiB, which the guest can reach anyway; the entry is put
    // back before anything else runs as the guest.
    unsafe { svm.write_nested_entry(code, level, original | bits) };
    let exit = run_with_host_modes(svm, &guest, modes.host_nx, modes.host_smep);
    // SAFETY: the original entry.
    unsafe { svm.write_nested_entry(code, level, original) };
    svm.set_guest_cr4(guest_cr4);
    svm.set_guest_no_execute(true);

    use nested_fault::*;
    let expected = if walk {
        PAGE_TABLE_WALK | RESERVED | USER | WRITE | PRESENT
    } else if modes.host_nx || modes.host_smep {
        FINAL_TRANSLATION | RESERVED | USER | PRESENT | FETCH
    } else {
        FINAL_TRANSLATION | RESERVED | USER | PRESENT
    };
    let control = &svm.vmcb().control;
    let info = control.exit_info_1;
    let address = control.exit_info_2;
    let stage = if walk {
        "guest page walk"
    } else {
        "final translation"
    };
    // Bit 8 of a PML4E (the host's EFER.NXE set) is missed by TCG altogether.
    let bit8 = is_tcg() && level == NestedLevel::Pml4 && modes.host_nx;
    known_failure(bit8, PML4E_BIT8_DEFECT, || {
        report!(
            exit == ExitCode::NestedPageFault,
            "{level:?} reserved bits {bits:#x}: #NPF (got {exit}) {modes:?}"
        );
        // The host's SMEP without its NXE: TCG leaves I/D out of a fetch's nested fault.
        let fetch_smep = is_tcg() && !walk && modes.host_smep && !modes.host_nx;
        known_failure(fetch_smep, FETCH_SMEP_DEFECT, || {
            report!(
                info & !PRESENT == expected & !PRESENT,
                "{level:?} reserved bits {bits:#x}: EXITINFO1 {:#x} but for P ({stage}) (got {info:#x}, EXITINFO2 {address:#x}) {modes:?}",
                expected & !PRESENT
            )
        });
        known_failure(is_tcg(), RESERVED_PRESENT_DEFECT, || {
            report!(
                info & PRESENT != 0,
                "{level:?} reserved bits {bits:#x}: EXITINFO1 has P, as every reserved-bit fault (got {info:#x}) {modes:?}"
            )
        });
    });
}

/// The KFAIL reason of the P bit of reserved-bit faults.
const RESERVED_PRESENT_DEFECT: &str = "QEMU's mmu_translate (target/i386/tcg/system/excp_helper.c, do_fault_rsvd) sets only RSVD in the error code of a reserved-bit fault, not P (reproduce-svm-npt-reserved-present)";

/// The KFAIL reason of I/D in a fetch's nested fault with the host's CR4.SMEP and EFER.NXE clear.
const FETCH_SMEP_DEFECT: &str = "QEMU's helper_vmrun (target/i386/tcg/system/svm_helper.c) keeps only PG_MODE_SVM_MASK (bits 14:0) of the host's paging mode in nested_pg_mode, dropping PG_MODE_SMEP, so mmu_translate sets I/D in a nested fault of a fetch only with the host's NXE (reproduce-svm-npt-fetch-smep)";

/// VMRUN of `guest` with the host's EFER.NXE and CR4.SMEP as given (kvm-unit-tests' rounds write
/// them before VMRUN: nested paging uses the host's paging mode), both put back after the exit.
#[allow(unsafe_code)]
fn run_with_host_modes<G: Fn()>(svm: &mut Svm, guest: &G, host_nx: bool, host_smep: bool) -> ExitCode {
    let host_cr4 = read_cr4();
    let smep = Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits();
    let efer = try_rdmsr(IA32_EFER).expect("EFER exists");
    let nxe = EferFlags::NO_EXECUTE_ENABLE.bits();
    let enabled = vmunit::arch::interrupts::are_enabled();
    vmunit::arch::interrupts::disable();
    let _ = try_write_cr4(if host_smep {
        host_cr4 | smep
    } else {
        host_cr4 & !smep
    });
    // SAFETY: with the host's EFER.NXE clear, the NX bits of the runtime's page tables are
    // reserved: nothing the host touches until it is set again (the harness's VMCB, stack and
    // registers, all in the boot identity map, which has no NX bits) uses them, and interrupts
    // are off throughout.
    let _ = unsafe {
        vmunit::arch::msr::try_wrmsr_unrestricted(IA32_EFER, if host_nx { efer | nxe } else { efer & !nxe })
    };
    let exit = svm.run_once(guest);
    // SAFETY: puts EFER back as it was.
    let _ = unsafe { vmunit::arch::msr::try_wrmsr_unrestricted(IA32_EFER, efer) };
    let _ = try_write_cr4(host_cr4);
    if enabled {
        vmunit::arch::interrupts::enable();
    }
    exit
}

/// Reproducer: a reserved bit (above MAXPHYADDR) in the nested PTE of a page the guest reads
/// makes a nested page fault whose error code has both RSVD and P.
#[allow(unsafe_code)]
fn reproduce_reserved_present(svm: &mut Svm) {
    let page = TestPage::new();
    let frame = page.frame();
    let bit = 1u64 << (physical_address_bits().min(51));
    let original = svm
        .nested_entry(frame, NestedLevel::Table)
        .expect("nested paging is on");
    // SAFETY: a reserved address bit faults, or (ignored) maps the page where it was.
    unsafe { svm.write_nested_entry(frame, NestedLevel::Table, original | bit) };
    let exit = svm.run_once(&|| {
        let _ = page.try_read(0);
    });
    // SAFETY: the original entry.
    unsafe { svm.write_nested_entry(frame, NestedLevel::Table, original) };
    let info = svm.vmcb().control.exit_info_1;
    use nested_fault::*;
    report!(
        exit == ExitCode::NestedPageFault && info == FINAL_TRANSLATION | RESERVED | USER | PRESENT,
        "a reserved bit {bit:#x} in a nested PTE: #NPF with EXITINFO1 {:#x} (got {exit}, EXITINFO1 {info:#x})",
        FINAL_TRANSLATION | RESERVED | USER | PRESENT
    );
}

/// Reproducer: with the host's CR4.SMEP set and EFER.NXE clear, the guest's first fetch from a
/// page whose nested PTE is not present makes a nested page fault with I/D.
fn reproduce_fetch_smep(svm: &mut Svm) {
    if !Feature::Smep.supported() {
        report_skip!("SMEP not supported");
        return;
    }
    let guest = || {};
    let code = physical(Svm::guest_entry_address(&guest));
    svm.update_nested_permissions(code, NestedLevel::Table, 0, nested_entry::PRESENT);
    let exit = run_with_host_modes(svm, &guest, false, true);
    svm.update_nested_permissions(code, NestedLevel::Table, nested_entry::PRESENT, 0);
    let info = svm.vmcb().control.exit_info_1;
    use nested_fault::*;
    report!(
        exit == ExitCode::NestedPageFault && info == FINAL_TRANSLATION | USER | FETCH,
        "a fetch through a not-present nested PTE, host SMEP on and NXE off: #NPF with EXITINFO1 {:#x} (got {exit}, EXITINFO1 {info:#x})",
        FINAL_TRANSLATION | USER | FETCH
    );
}

/// Reproducer: bit 8 of the nested PML4E that maps the guest, which AMD reserves in non-leaf
/// PML4Es, must make the guest's first access exit with a reserved-bit nested page fault.
#[allow(unsafe_code)]
fn reproduce_pml4e_bit8(svm: &mut Svm) {
    let guest = || {};
    let code = physical(Svm::guest_entry_address(&guest));
    let original = svm
        .nested_entry(code, NestedLevel::Pml4)
        .expect("nested paging is on");
    // SAFETY: bit 8 either faults or is ignored; ignored, the entry maps what it did.
    unsafe { svm.write_nested_entry(code, NestedLevel::Pml4, original | 1 << 8) };
    let exit = svm.run_once(&guest);
    // SAFETY: the original entry.
    unsafe { svm.write_nested_entry(code, NestedLevel::Pml4, original) };
    let info = svm.vmcb().control.exit_info_1;
    report!(
        exit == ExitCode::NestedPageFault && info & nested_fault::RESERVED != 0,
        "bit 8 of a nested PML4E is reserved: #NPF with RSV (got {exit}, EXITINFO1 {info:#x})"
    );
}
