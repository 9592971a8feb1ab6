//! smap: supervisor-mode access and execution prevention, like kvm-unit-tests' smap test and
//! the SMEP cases of its access test (SDM Vol. 3, 4.6 and 4.7). With CR4.SMAP set, a CPL-0
//! data access to a user page raises #PF unless RFLAGS.AC is set (STAC, or POPFQ); implicit
//! supervisor-mode accesses (here, a segment load reading an LDT on a user page) fault
//! whatever AC says; CR0.WP=0 lets an AC=1 write through a read-only user page. With CR4.SMEP
//! set, a CPL-0 fetch from a user page raises #PF with the I/D bit. Without the features,
//! setting the CR4 bits raises #GP(0) and STAC/CLAC raise #UD; at CPL 3 they always do.
//!
//! The test never enters user mode before the end: `run_in_user_mode` makes the runtime's
//! image user-accessible, after which SMAP or SMEP would lock the kernel out of itself.
#![no_std]
#![no_main]

use vmunit::arch::access::{
    AccessFlag, DATA_SEGMENT_DESCRIPTOR, stac_clac, try_call_with, try_load_fs_from_ldt, try_push_with,
    try_read_with, try_stac_clac, try_write_with,
};
use vmunit::arch::control::{Cr0Flags, Cr4Flags, read_cr0, read_cr4, try_write_cr0, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::{try_call_return, try_invlpg};

use vmunit::arch::page_fault::{self, FETCH, PRESENT, WRITE};
use vmunit::arch::run_in_user_mode;
use vmunit::environment::instruction_emulating_kvm;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Exception, Vector, known_failure, prefix, report, report_fail, report_info, report_skip};

vmunit::main!(main);

/// Why the checks that execute STAC or CLAC are skipped under kvm_pvm.
const KVM_PVM_STOPS: &str = "this host's kvm_pvm stops the VM on STAC and CLAC at CPL 0 (KVM internal error, emulation failure; reproduce-stac)";

/// How the test sets RFLAGS.AC: STAC, or POPFQ under kvm_pvm, which stops the VM on STAC
/// and CLAC at CPL 0 (its instruction emulator lacks them; at CPL 3 they raise #UD there).
fn access_flag_setter() -> AccessFlag {
    if instruction_emulating_kvm() {
        AccessFlag::SetByPopf
    } else {
        AccessFlag::Set
    }
}

fn is_gp0(result: &Result<(), Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0)
}

/// QEMU's TCG takes RFLAGS.AC for implicit supervisor accesses too.
const TCG_IMPLICIT_AC: &str = "QEMU's TCG lets RFLAGS.AC allow implicit supervisor accesses at CPL 0: \
     x86_mmu_index_kernel_pl (target/i386/cpu.c), the MMU index of cpu_mmu_index_kernel's \
     descriptor-table reads, picks MMU_KNOSMAP64_IDX whenever AC is set below CPL 3 \
     (reproduce-smap-implicit-access-tcg)";

/// kvm_pvm's guest CPUID ignores QEMU's CPU model.
const KVM_PVM_CPUID: &str = "kvm_pvm's guest CPUID shows the host's SMAP and SMEP whatever QEMU's -cpu says \
     (reproduce-cpuid-ignores-cpu-model)";

fn main(args: &[&str]) {
    match vmunit::args::value(args, "reproduce") {
        Some("implicit-access") => return reproduce_implicit_access(),
        Some("cpuid-model") => return reproduce_cpuid_model(),
        Some(other) => {
            report_fail!("no reproducer named {other}");
            return;
        }
        None => {}
    }
    let (smap, smep) = (Feature::Smap.supported(), Feature::Smep.supported());
    report_info!(
        "SMAP advertised: {smap}, SMEP advertised: {smep}, CR4 {:#x}",
        read_cr4()
    );
    if args.contains(&"disabled") {
        known_failure(instruction_emulating_kvm(), KVM_PVM_CPUID, reproduce_cpuid_model);
    }
    if smap {
        smap_enabled();
    } else {
        feature_missing("SMAP", Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits());
        if instruction_emulating_kvm() {
            report_skip!("SMAP not advertised: STAC raising #UD: {KVM_PVM_STOPS}");
        } else {
            let result = try_stac_clac();
            report!(
                matches!(result, Err(e) if e.vector == Vector::UD),
                "SMAP not advertised: STAC raises #UD (got {result:x?})"
            );
        }
    }
    if smep {
        smep_enabled(smap);
    } else {
        feature_missing("SMEP", Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits());
    }
    let result = run_in_user_mode(stac_clac);
    report!(
        matches!(result, Err(e) if e.vector == Vector::UD),
        "STAC at CPL 3 raises #UD (got {result:x?})"
    );
}

/// Without the feature, its CR4 bit is reserved: #GP(0).
fn feature_missing(name: &str, bit: u64) {
    let _prefix = prefix!("{name} not advertised");
    if is_tcg() {
        report_skip!(
            "setting CR4.{name}: QEMU's TCG hangs on a reserved CR4 bit (an SVM #VMEXIT outside SVM guest mode: helper_write_crN, target/i386/tcg/system/misc_helper.c; reproduce-cr4-reserved-bit-tcg)"
        );
        return;
    }
    let cr4 = read_cr4();
    let result = try_write_cr4(cr4 | bit);
    if result.is_ok() {
        let _ = try_write_cr4(cr4);
    }
    report!(
        is_gp0(&result),
        "setting CR4.{name} raises #GP(0) (got {result:x?})"
    );
}

/// Sets or clears `bit` in CR4; returns whether CR4 then reads back as asked.
fn try_set_cr4_bit(bit: u64, set: bool) -> Result<bool, Exception> {
    let cr4 = read_cr4();
    try_write_cr4(if set { cr4 | bit } else { cr4 & !bit })?;
    Ok((read_cr4() & bit != 0) == set)
}

fn smap_enabled() {
    let _prefix = prefix("SMAP");
    let data = TestPage::new();
    data.map(Protection::USER_READ_WRITE);
    let kernel = TestPage::new();
    let ldt = TestPage::new();
    ldt.map(Protection::USER_READ_WRITE);
    let read_only = TestPage::new();
    read_only.map(Protection::USER_READ_ONLY);
    let code = TestPage::new();
    code.map(Protection::USER_READ_EXECUTE);
    let user = data.address();

    let set_flag = access_flag_setter();
    if set_flag == AccessFlag::Set {
        let flags = try_stac_clac();
        report!(
            flags == Ok((true, false)),
            "STAC sets RFLAGS.AC and CLAC clears it (got {flags:x?})"
        );
    } else {
        report_skip!("STAC/CLAC at CPL 0 (AC is set with POPFQ instead): {KVM_PVM_STOPS}");
    }
    let setup = data
        .try_write(0, 42)
        .and_then(|()| ldt.try_write(8, DATA_SEGMENT_DESCRIPTOR));
    report!(
        setup.is_ok(),
        "with SMAP clear, CPL 0 writes user pages (got {setup:x?})"
    );
    let load = try_load_fs_from_ldt(&ldt, 2, 1, AccessFlag::Clear);
    report!(
        load.is_ok(),
        "with SMAP clear, FS loads from an LDT on a user page (got {load:x?})"
    );

    let set = try_set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits(), true);
    report!(set == Ok(true), "CR4.SMAP can be set (got {set:x?})");
    if set.is_err() {
        return;
    }
    let own = kernel.try_write(0, 7).and_then(|()| kernel.try_read(0));
    report!(
        own == Ok(7),
        "a supervisor page is still read and written with AC clear (got {own:x?})"
    );
    let read = try_read_with(AccessFlag::Clear, &data, 0);
    report!(
        page_fault::raised(&read, user, PRESENT),
        "a read of a user page with AC clear raises #PF (P, supervisor read) (got {read:x?})"
    );
    let read = try_read_with(set_flag, &data, 0);
    report!(
        read == Ok(42),
        "a read of a user page with AC set works (got {read:x?})"
    );
    let read = try_read_with(AccessFlag::SetByPopf, &data, 0);
    report!(
        read == Ok(42),
        "a read of a user page with AC set by POPFQ works (got {read:x?})"
    );
    let write = try_write_with(AccessFlag::Clear, &data, 0, 43);
    let after = try_read_with(set_flag, &data, 0);
    report!(
        page_fault::raised(&write, user, PRESENT | WRITE) && after == Ok(42),
        "a write to a user page with AC clear raises #PF (P|W) and stores nothing (got {write:x?}, then {after:x?})"
    );
    let write = try_write_with(set_flag, &data, 0, 44);
    let after = try_read_with(set_flag, &data, 0);
    report!(
        write.is_ok() && after == Ok(44),
        "a write to a user page with AC set works (got {write:x?}, then {after:x?})"
    );
    let fetch = try_call_return(&code, 0);
    report!(
        fetch.is_ok(),
        "SMAP does not stop a CPL-0 fetch from a user page, AC clear (got {fetch:x?})"
    );

    let descriptor = ldt.address() + 8;
    let load = try_load_fs_from_ldt(&ldt, 2, 1, AccessFlag::Clear);
    report!(
        page_fault::raised(&load, descriptor, PRESENT),
        "loading FS from an LDT on a user page, AC clear, raises #PF (P) (got {load:x?})"
    );
    known_failure(is_tcg(), TCG_IMPLICIT_AC, || {
        implicit_access_with_access_flag(&ldt, set_flag)
    });

    for invalidate in [false, true] {
        accesses_with_and_without_invlpg(&data, &kernel, &code, invalidate);
    }

    write_protect_off(&read_only);

    let cleared = try_set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits(), false);
    let read = try_read_with(AccessFlag::Clear, &data, 0);
    report!(
        cleared == Ok(true) && read == Ok(44),
        "with CR4.SMAP clear again, a user page is read with AC clear (got {cleared:x?}, {read:x?})"
    );
}

/// The one check of QEMU's TCG defect: with CR4.SMAP set, an implicit supervisor access (the
/// LDT descriptor read of a segment load) to a user page faults even with RFLAGS.AC set.
fn implicit_access_with_access_flag(ldt: &TestPage, set_flag: AccessFlag) {
    let descriptor = ldt.address() + 8;
    let load = try_load_fs_from_ldt(ldt, 2, 1, set_flag);
    report!(
        page_fault::raised(&load, descriptor, PRESENT),
        "loading FS from an LDT on a user page with AC set still raises #PF: an implicit access (got {load:x?})"
    );
}

/// `reproduce=implicit-access`: that check alone, with no knowledge of the host (CR4.SMAP set
/// for it and cleared after).
fn reproduce_implicit_access() {
    let _prefix = prefix("reproduce");
    if !Feature::Smap.supported() {
        report_skip!("SMAP is not advertised");
        return;
    }
    let ldt = TestPage::new();
    ldt.map(Protection::USER_READ_WRITE);
    let setup = ldt.try_write(8, DATA_SEGMENT_DESCRIPTOR);
    let bit = Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits();
    let set = try_set_cr4_bit(bit, true);
    if setup.is_err() || set != Ok(true) {
        report_fail!("setting up the LDT page and CR4.SMAP failed ({setup:x?}, {set:x?})");
        return;
    }
    implicit_access_with_access_flag(&ldt, access_flag_setter());
    let _ = try_set_cr4_bit(bit, false);
}

/// `reproduce=cpuid-model` (run with `-cpu ...,-smap,-smep`), and the `disabled` run's first
/// check: CPUID follows QEMU's CPU model.
fn reproduce_cpuid_model() {
    report!(
        !Feature::Smap.supported() && !Feature::Smep.supported(),
        "CPUID.7.0:EBX advertises neither SMAP nor SMEP, as -cpu ...,-smap,-smep asks"
    );
}

/// SMAP with CR0.WP clear (kvm-unit-tests' check_smap_nowp): AC still guards reads, and an
/// AC=1 write goes through a read-only user page, which CR0.WP=1 forbids.
fn write_protect_off(page: &TestPage) {
    let set_flag = access_flag_setter();
    let _prefix = prefix("CR0.WP");
    let address = page.address();
    let cr0 = read_cr0();
    let _ = try_set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits(), false);
    let off = try_write_cr0(cr0 & !Cr0Flags::WRITE_PROTECT.bits());
    let write = try_write_with(AccessFlag::Clear, page, 0, 0x99);
    report!(
        off.is_ok() && write.is_ok(),
        "with SMAP and WP clear, CPL 0 writes a read-only user page, AC clear (got {off:x?}, {write:x?})"
    );
    let _ = try_set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION.bits(), true);
    let read = try_read_with(AccessFlag::Clear, page, 0);
    report!(
        page_fault::raised(&read, address, PRESENT),
        "with SMAP set and WP clear, a read of a read-only user page with AC clear raises #PF (got {read:x?})"
    );
    let write = try_write_with(set_flag, page, 0, 0x9a);
    let after = try_read_with(set_flag, page, 0);
    report!(
        write.is_ok() && after == Ok(0x9a),
        "with SMAP set and WP clear, a write to a read-only user page with AC set works (got {write:x?}, then {after:x?})"
    );
    let on = try_write_cr0(cr0);
    let write = try_write_with(set_flag, page, 0, 0x9b);
    report!(
        on.is_ok() && page_fault::raised(&write, address, PRESENT | WRITE),
        "with SMAP and WP set, a write to a read-only user page with AC set raises #PF (P|W) (got {write:x?})"
    );
}

fn smep_enabled(smap: bool) {
    let _prefix = prefix("SMEP");
    let user_code = TestPage::new();
    user_code.map(Protection::USER_READ_EXECUTE);
    let kernel_code = TestPage::new();
    kernel_code.map(Protection::READ_EXECUTE);
    let data = TestPage::new();
    data.map(Protection::USER_READ_WRITE);
    let address = user_code.address();

    let fetch = try_call_return(&user_code, 0);
    report!(
        fetch.is_ok(),
        "with SMEP clear, CPL 0 runs code on a user page (got {fetch:x?})"
    );
    let set = try_set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits(), true);
    report!(set == Ok(true), "CR4.SMEP can be set (got {set:x?})");
    if set.is_err() {
        return;
    }
    let fetch = try_call_return(&kernel_code, 0);
    report!(
        fetch.is_ok(),
        "CPL 0 still runs code on a supervisor page (got {fetch:x?})"
    );
    let fetch = try_call_return(&user_code, 0);
    report!(
        page_fault::raised(&fetch, address, PRESENT | FETCH) && matches!(fetch, Err(e) if e.rip == address),
        "a CPL-0 fetch from a user page raises #PF (P|I/D) at that address (got {fetch:x?})"
    );
    if smap {
        let fetch = try_call_with(access_flag_setter(), &user_code, 0);
        report!(
            page_fault::raised(&fetch, address, PRESENT | FETCH),
            "with AC set the fetch still raises #PF: AC does not matter to SMEP (got {fetch:x?})"
        );
    }
    let read = data.try_write(0, 5).and_then(|()| data.try_read(0));
    report!(
        read == Ok(5),
        "SMEP does not stop CPL-0 data accesses to a user page (SMAP clear) (got {read:x?})"
    );
    let cleared = try_set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits(), false);
    let fetch = try_call_return(&user_code, 0);
    report!(
        cleared == Ok(true) && fetch.is_ok(),
        "with CR4.SMEP clear again, CPL 0 runs code on a user page (got {cleared:x?}, {fetch:x?})"
    );
}

/// kvm-unit-tests' smap loop, run twice: the second time (`invalidate`) with INVLPG of the
/// page before each access, so that the checks run on fresh TLB entries too. CR4.SMAP is set.
/// A supervisor page is written; a user page is read and written with AC set and faults with
/// AC clear; a PUSH onto a stack in a user page works with AC set and faults with AC clear;
/// code on a user page still runs.
fn accesses_with_and_without_invlpg(data: &TestPage, kernel: &TestPage, code: &TestPage, invalidate: bool) {
    let _prefix = prefix(if invalidate {
        "with INVLPG"
    } else {
        "without INVLPG"
    });
    let set_flag = access_flag_setter();
    let stack = TestPage::new();
    stack.map(Protection::USER_READ_WRITE);
    let flush = |page: &TestPage| {
        if invalidate {
            let _ = try_invlpg(page.address());
        }
    };
    flush(kernel);
    let own = kernel.try_write(8, 42).and_then(|()| kernel.try_read(8));
    report!(own == Ok(42), "a write to a supervisor page works (got {own:x?})");
    let _ = try_write_with(set_flag, data, 8, 42);
    flush(data);
    let read = try_read_with(set_flag, data, 8);
    report!(
        read == Ok(42),
        "a read from a user page with AC=1 works (got {read:x?})"
    );
    flush(data);
    let read = try_read_with(AccessFlag::Clear, data, 8);
    report!(
        page_fault::raised(&read, data.address() + 8, PRESENT),
        "a read from a user page with AC=0 raises #PF (P) (got {read:x?})"
    );
    flush(data);
    let write = try_write_with(set_flag, data, 8, 43);
    let after = try_read_with(set_flag, data, 8);
    report!(
        write.is_ok() && after == Ok(43),
        "a write to a user page with AC=1 works (got {write:x?}, then {after:x?})"
    );
    flush(data);
    let write = try_write_with(AccessFlag::Clear, data, 8, 44);
    let after = try_read_with(set_flag, data, 8);
    report!(
        page_fault::raised(&write, data.address() + 8, PRESENT | WRITE) && after == Ok(43),
        "a write to a user page with AC=0 raises #PF (P|W) and stores nothing (got {write:x?}, then {after:x?})"
    );
    let top = 0x800;
    let slot = stack.address() + top - 8;
    let _ = try_write_with(set_flag, &stack, top - 8, u64::MAX);
    flush(&stack);
    let push = try_push_with(set_flag, &stack, top, 44);
    let after = try_read_with(set_flag, &stack, top - 8);
    report!(
        push.is_ok() && after == Ok(44),
        "a PUSH onto a user-page stack with AC=1 works (got {push:x?}, then {after:x?})"
    );
    flush(&stack);
    let push = try_push_with(AccessFlag::Clear, &stack, top, 45);
    let after = try_read_with(set_flag, &stack, top - 8);
    report!(
        page_fault::raised(&push, slot, PRESENT | WRITE) && after == Ok(44),
        "a PUSH onto a user-page stack with AC=0 raises #PF (P|W) at {slot:#x} and stores nothing (got {push:x?}, then {after:x?})"
    );
    flush(code);
    let fetch = try_call_return(code, 0);
    report!(
        fetch.is_ok(),
        "code on a user page runs with AC=0: SMAP does not cover fetches (got {fetch:x?})"
    );
}
