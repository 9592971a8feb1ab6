//! svm: kvm-unit-tests' svm test (x86/svm_tests.c), nested AMD SVM: each case sets up the VMCB
//! as a copy of the host (`vmcb_ident`), adds its intercepts, runs a Rust closure as the guest
//! with VMRUN and checks the #VMEXITs it gets, in kvm-unit-tests' order and under its names.
//! Arguments select cases as kvm-unit-tests' do: a name (spaces as underscores) or glob picks
//! it, `-name` leaves it out.
//!
//! Where CPUID offers NPT the guest runs with nested paging (an identity map of the first 4 GiB),
//! as kvm-unit-tests' svm does; `-cpu max,+svm,-npt` runs it without (its svm_no_npt).
//! Without SVM in CPUID (kvm_pvm, TCG without `+svm`) the test skips.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use vmunit::arch::control::{
    Cr0Flags, Cr4Flags, read_cr0, read_cr3, read_cr4, try_lmsw, try_write_cr0, try_write_cr4,
};
use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::cpuid::{Feature, cpuid};
use vmunit::arch::debug::{try_read_debug_register, try_write_debug_register};
use vmunit::arch::exceptions::wait_for_interrupt;
use vmunit::arch::instructions::{
    NON_CANONICAL_START, halt, in_u8, in_u16, in_u32, int3, out_u8, out_u16, raise_invalid_opcode, rdtsc,
    read_with_alignment_check, single_step_two_nops, try_divide, try_forced_emulation_nop, try_invpcid,
    try_rdpru, try_rdtscp, try_read, try_ud2, try_xsetbv,
};
use vmunit::arch::msr::{IA32_TSC, IA32_TSC_ADJUST, try_rdmsr, try_wrmsr};
use vmunit::arch::probes::{interrupt_window, try_fninit};
use vmunit::arch::svm::{
    EVENT_VALID, EventType, ExitCode, Intercept, IoPermissionMap, Svm, SvmFeature, Unavailable, clgi,
    event_injection, insb_loop, insb_loop_address, int_ctl, rdtsc_next_rip, rdtsc_probe, rsm, shadow_probe,
    shadow_probe_nops, single_step_probe, single_step_probe_addresses, stgi,
    try_overflow_in_compatibility_mode, vmmcall,
};
use vmunit::arch::{apic, interrupts, run_in_user_mode, set_interrupt_handler};
use vmunit::memory::TestPage;
use vmunit::trap_exceptions;
use vmunit::{
    Vector, args::test_wanted, known_failure, prefix, report, report_fail, report_info, report_skip,
};

mod cross_modified;
mod guest_state;
mod host_rflags;
mod init_intercept;
mod latency;
mod legacy_paging;
mod mode_switch;
mod msr_intercept;
mod unoffered;

vmunit::main!(main);

/// One of kvm-unit-tests' `svm_tests[]`: its name, why it cannot run here (if it cannot), and
/// its body, which starts from a reset VMCB.
struct Case {
    name: &'static str,
    unsupported: fn() -> Option<&'static str>,
    run: fn(&mut Svm),
}

/// A reproducer of one TCG defect: it runs only when an argument names it (unittests.toml's
/// `reproduce-svm-*` entries), and fails where the defect is.
struct Reproducer {
    name: &'static str,
    run: fn(&mut Svm),
}

fn always() -> Option<&'static str> {
    None
}

/// A case that runs wherever SVM does.
const fn case(name: &'static str, run: fn(&mut Svm)) -> Case {
    Case {
        name,
        unsupported: always,
        run,
    }
}

/// A reproducer entry.
const fn reproducer(name: &'static str, run: fn(&mut Svm)) -> Reproducer {
    Reproducer { name, run }
}

/// A case that needs what `unsupported` checks.
const fn case_if(name: &'static str, unsupported: fn() -> Option<&'static str>, run: fn(&mut Svm)) -> Case {
    Case {
        name,
        unsupported,
        run,
    }
}

/// kvm-unit-tests' fep_supported: the emulate variants need KVM's forced emulation prefix,
/// which raises #UD where it is not honoured (always under TCG).
fn forced_emulation() -> Option<&'static str> {
    try_forced_emulation_nop()
        .is_err()
        .then_some("KVM's forced emulation prefix raises #UD here (kvm-unit-tests' is_fep_available)")
}

fn next_rip_save() -> Option<&'static str> {
    (!SvmFeature::Nrips.supported()).then_some("CPUID.8000000AH:EDX[3] (NRIPS) is clear")
}

fn unadvertised_instructions() -> Option<&'static str> {
    let advertised = [
        Feature::Rdtscp,
        Feature::Skinit,
        Feature::Xsave,
        Feature::Rdpru,
        Feature::Invpcid,
    ]
    .iter()
    .any(|feature| feature.supported());
    advertised.then_some("RDTSCP, SKINIT, XSAVE, RDPRU and INVPCID must all be unadvertised (its own entry)")
}

fn pause_filter() -> Option<&'static str> {
    (!SvmFeature::PauseFilter.supported())
        .then_some("PAUSE filter not supported in the guest: CPUID.8000000AH:EDX[10] is clear")
}

fn two_cpus() -> Option<&'static str> {
    (vmunit::arch::smp::cpu_count() < 2).then_some("needs a second CPU")
}

fn virtual_gif() -> Option<&'static str> {
    (!SvmFeature::Vgif.supported()).then_some("CPUID.8000000AH:EDX[16] (VGIF) is clear")
}

fn tsc_adjust_msr() -> Option<&'static str> {
    (!Feature::TscAdjust.supported()).then_some("CPUID.7.0:EBX[1] (IA32_TSC_ADJUST) is clear")
}

static CASES: &[Case] = &[
    case("null", null),
    case("vmrun", vmrun),
    case("ioio", ioio),
    case("vmrun intercept check", vmrun_intercept_check),
    case("rsm", rsm_intercept),
    case("sel cr0 write intercept", sel_cr0_write_intercept),
    case_if(
        "sel cr0 write intercept emulate",
        forced_emulation,
        unoffered::not_ported,
    ),
    case(
        "sel cr0 write intercept priority",
        sel_cr0_write_intercept_priority,
    ),
    case_if(
        "sel cr0 write intercept priority emulate",
        forced_emulation,
        unoffered::not_ported,
    ),
    case("sel cr0 write nointercept", sel_cr0_write_nointercept),
    case_if(
        "sel cr0 write nointercept emulate",
        forced_emulation,
        unoffered::not_ported,
    ),
    case("sel cr0 lmsw intercept", sel_cr0_lmsw_intercept),
    case_if(
        "sel cr0 lmsw intercept emulate",
        forced_emulation,
        unoffered::not_ported,
    ),
    case("cr3 read intercept", cr3_read_intercept),
    case("cr3 read nointercept", cr3_read_nointercept),
    case_if(
        "cr3 read intercept emulate",
        two_cpus,
        cross_modified::cr3_read_intercept_emulate,
    ),
    case("dr intercept check", dr_intercept_check),
    case_if("next_rip", next_rip_save, next_rip),
    case("msr intercept check", msr_intercept::msr_intercept_check),
    case("mode_switch", mode_switch::mode_switch),
    case("asid_zero", asid_zero),
    case_if("tsc_adjust", tsc_adjust_msr, tsc_adjust),
    case("latency_run_exit", latency::latency_run_exit),
    case("latency_run_exit_clean", latency::latency_run_exit_clean),
    case("latency_svm_insn", latency::latency_svm_insn),
    case("exc_inject", exc_inject),
    case("pending_event", pending_event),
    case("pending_event_cli", pending_event_cli),
    case("interrupt", interrupt),
    case("nmi", nmi),
    case_if("nmi_hlt", two_cpus, nmi_hlt),
    case_if("vnmi", unoffered::virtual_nmi, unoffered::not_ported),
    case("virq_inject", virq_inject),
    case("virq_inject_within_shadow", virq_inject_within_shadow),
    case("reg_corruption", reg_corruption),
    case_if("svm_init_startup_test", two_cpus, svm_init_startup_test),
    case_if(
        "svm_init_intercept_test",
        two_cpus,
        init_intercept::svm_init_intercept_test,
    ),
    case("host_rflags", host_rflags::host_rflags),
    case_if("vgif", virtual_gif, vgif),
    case("svm_pae_test", legacy_paging::svm_pae_test),
    case("svm_pse_test", legacy_paging::svm_pse_test),
    case("svm_cr4_osxsave_test", svm_cr4_osxsave_test),
    case("svm_guest_state_test", guest_state::svm_guest_state_test),
    case("svm_vmrun_errata_test", svm_vmrun_errata_test),
    case("svm_vmload_vmsave", svm_vmload_vmsave),
    case("svm_test_singlestep", svm_test_singlestep),
    case("svm_no_nm_test", svm_no_nm_test),
    case("svm_exception_test", svm_exception_test),
    case_if(
        "svm_lbrv_test0",
        unoffered::last_branch_record,
        unoffered::not_ported,
    ),
    case_if(
        "svm_lbrv_test1",
        unoffered::last_branch_record,
        unoffered::not_ported,
    ),
    case_if(
        "svm_lbrv_test2",
        unoffered::last_branch_record,
        unoffered::not_ported,
    ),
    case_if(
        "svm_lbrv_test3",
        unoffered::last_branch_record,
        unoffered::not_ported,
    ),
    case_if(
        "svm_lbrv_nested_test1",
        unoffered::lbr_virtualization,
        unoffered::not_ported,
    ),
    case_if(
        "svm_lbrv_nested_test2",
        unoffered::lbr_virtualization,
        unoffered::not_ported,
    ),
    case_if(
        "svm_lbrv_nested_test3",
        unoffered::lbr_virtualization,
        unoffered::not_ported,
    ),
    case("svm_intr_intercept_mix_if", svm_intr_intercept_mix_if),
    case("svm_intr_intercept_mix_gif", svm_intr_intercept_mix_gif),
    case("svm_intr_intercept_mix_gif2", svm_intr_intercept_mix_gif2),
    case("svm_intr_intercept_mix_nmi", svm_intr_intercept_mix_nmi),
    case("svm_intr_intercept_mix_smi", svm_intr_intercept_mix_smi),
    case_if("svm_tsc_scale_test", unoffered::tsc_ratio, unoffered::not_ported),
    case_if(
        "svm_unsupported_instruction_intercept_test",
        unadvertised_instructions,
        svm_unsupported_instruction_intercept_test,
    ),
    case("svm_shutdown_intercept_test", svm_shutdown_intercept_test),
    case_if("pause_filter_test", pause_filter, pause_filter_test),
];

static REPRODUCERS: &[Reproducer] = &[
    reproducer("reproduce_vmexit_invalid_code", reproduce_vmexit_invalid_code),
    reproducer("reproduce_lmsw_selective_cr0", reproduce_lmsw_selective_cr0),
    reproducer("reproduce_cr3_read_intercept", reproduce_cr3_read_intercept),
    reproducer(
        "reproduce_vmload_without_intercept",
        reproduce_vmload_without_intercept,
    ),
    reproducer("reproduce_failed_vmrun_state", reproduce_failed_vmrun_state),
    reproducer("reproduce_int3_intercept", reproduce_int3_intercept),
    reproducer(
        "reproduce_init_with_gif_clear",
        init_intercept::reproduce_init_with_gif_clear,
    ),
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
    report_info!(
        "SVM features (CPUID.8000000AH:EDX {:#x}): NPT {}, NRIPS {}, VGIF {}, VNMI {}, LBRV {}",
        cpuid(vmunit::arch::svm::SVM_FEATURE_LEAF, 0).edx,
        SvmFeature::Npt.supported(),
        SvmFeature::Nrips.supported(),
        SvmFeature::Vgif.supported(),
        SvmFeature::Vnmi.supported(),
        SvmFeature::Lbrv.supported()
    );
    let mut matched = 0;
    for case in CASES.iter().filter(|case| test_wanted(case.name, args)) {
        matched += 1;
        let _prefix = prefix(case.name);
        if let Some(reason) = (case.unsupported)() {
            report_skip!("{} (not supported: {reason})", case.name);
            continue;
        }
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

/// null: a guest that does nothing ends with its VMMCALL.
fn null(svm: &mut Svm) {
    let exit = svm.run_once(&|| {});
    report!(
        exit == ExitCode::Vmmcall,
        "an empty guest exits with VMMCALL (got {exit})"
    );
}

/// VMRUN in a guest that intercepts it (`reset` intercepts VMRUN).
#[allow(unsafe_code)]
fn guest_vmrun(address: u64) {
    // SAFETY: this runs as the guest, whose VMCB intercepts VMRUN: it exits to the host.
    unsafe { vmunit::arch::svm::vmrun_instruction(address) };
}

/// vmrun: VMRUN in the guest is intercepted.
fn vmrun(svm: &mut Svm) {
    let address = svm.vmcb_address();
    let exit = svm.run_once(&|| guest_vmrun(address));
    report!(
        exit == ExitCode::Vmrun,
        "VMRUN in the guest exits with VMRUN (got {exit})"
    );
}

/// One IOIO exit as the host saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct IoExit {
    port: u16,
    input: bool,
    size: u64,
}

/// The guest of `ioio` (kvm-unit-tests' `test_ioio`): each access checks the stage the host's
/// exits moved it to; returns the stage where it went wrong.
fn ioio_guest(io: &IoPermissionMap, stage: &AtomicI64) -> Result<(), i64> {
    let at = |expected: i64| {
        let now = stage.load(SeqCst);
        if now == expected { Ok(()) } else { Err(now) }
    };
    let only = |port: u16| io.set_byte(usize::from(port / 8), 1 << (port % 8));
    // Stage 0: nothing intercepted.
    in_u8(0x5000);
    out_u8(0x5000, 0);
    at(0)?;
    // Widths and directions at port 0.
    io.set_byte(0, 0xff);
    stage.fetch_add(1, SeqCst);
    in_u8(0);
    at(2)?;
    out_u16(0, 0);
    at(3)?;
    in_u32(0);
    at(4)?;
    // Low and high ports.
    only(0x5000);
    in_u8(0x5000);
    at(5)?;
    only(0x9000);
    in_u16(0x9000);
    at(6)?;
    // An access that only partly covers an intercepted port.
    only(0x5000);
    in_u32(0x4fff);
    at(7)?;
    // Across the map's first two pages: not intercepted, then intercepted.
    stage.fetch_add(1, SeqCst);
    in_u32(0x7fff);
    at(8)?;
    stage.fetch_add(1, SeqCst);
    io.set_byte(0x8000 / 8, 1 << (0x8000 % 8));
    in_u32(0x7fff);
    at(10)?;
    // At the top of the port space the bits past port 0xffff count, not port 0's.
    io.set_byte(0, 0);
    in_u32(0xffff);
    at(11)?;
    io.set_byte(0, 0xff);
    io.set_byte(8192, 0);
    in_u32(0xffff);
    stage.fetch_add(1, SeqCst);
    at(12)
}

/// ioio: the I/O permission map decides which IN/OUT exit, by port and width.
fn ioio(svm: &mut Svm) {
    let io = svm.io_permission_map();
    io.fill(0);
    io.set_byte(8192, 0xff);
    svm.set_intercept(Intercept::IoioProt);
    let stage = AtomicI64::new(0);
    let failed_at = AtomicI64::new(-1);
    let guest = || {
        if let Err(stage) = ioio_guest(io, &stage) {
            failed_at.store(stage, SeqCst);
        }
    };
    let mut exits = Vec::new();
    let mut next_rips_right = true;
    let last = svm.run(&guest, |exit| {
        if exit.code() != ExitCode::Ioio {
            return true;
        }
        stage.fetch_add(1, SeqCst);
        let control = &exit.vmcb().control;
        let info = control.exit_info_1;
        let seen = IoExit {
            port: (info >> 16) as u16,
            input: info & 1 != 0,
            size: (info >> 4) & 7,
        };
        // IN/OUT with DX: one byte, and an operand-size prefix for 16 bits.
        let length = if seen.size == 2 { 2 } else { 1 };
        next_rips_right &= control.exit_info_2 == exit.vmcb().save.rip + length;
        exits.push(seen);
        for port in u32::from(seen.port)..u32::from(seen.port) + seen.size as u32 {
            io.set_bit(port, false);
        }
        false
    });
    io.fill(0);
    let failed_at = failed_at.load(SeqCst);
    report!(
        last == ExitCode::Vmmcall && failed_at < 0,
        "each access the map intercepts exits with IOIO, each other passes (guest went wrong at stage {failed_at}; last exit {last})"
    );
    let expected = [
        (0, true, 1),
        (0, false, 2),
        (0, true, 4),
        (0x5000, true, 1),
        (0x9000, true, 2),
        (0x4fff, true, 4),
        (0x7fff, true, 4),
        (0xffff, true, 4),
    ]
    .map(|(port, input, size)| IoExit { port, input, size });
    report!(
        exits == expected,
        "EXITINFO1 names port, direction and size of each exit (got {exits:x?})"
    );
    report!(
        next_rips_right,
        "EXITINFO2 holds the RIP after the IN/OUT of each exit"
    );
}

/// The KFAIL reason of checks that EXITCODE is VMEXIT_INVALID (-1) in all 64 bits.
const INVALID_EXIT_CODE_DEFECT: &str = "QEMU's cpu_vmexit (target/i386/tcg/system/svm_helper.c) takes a 32-bit exit code: VMEXIT_INVALID reads 0xffffffff (reproduce-svm-vmexit-invalid-code)";

/// Checks a VMRUN that must fail: the guest did not run, EXITCODE is -1 in its low 32 bits
/// (as QEMU stores it), and all 64 (VMEXIT_INVALID).
fn report_vmrun_failed(svm: &Svm, exit: ExitCode, guest_ran: bool, what: &str) {
    let code = svm.vmcb().control.exit_code;
    report!(
        !guest_ran && code as u32 == u32::MAX,
        "VMRUN {what} fails: the guest does not run and EXITCODE's low 32 bits are all ones (got {code:#x}, guest ran: {guest_ran})"
    );
    known_failure(is_tcg(), INVALID_EXIT_CODE_DEFECT, || {
        report!(
            exit == ExitCode::Invalid,
            "VMRUN {what} exits with ERR (-1) (got {exit}, EXITCODE {code:#x})"
        )
    });
}

/// vmrun intercept check: VMRUN must intercept VMRUN, or it fails with VMEXIT_INVALID.
fn vmrun_intercept_check(svm: &mut Svm) {
    svm.clear_intercept(Intercept::Vmrun);
    let ran = AtomicBool::new(false);
    let exit = svm.run_once(&|| ran.store(true, SeqCst));
    report_vmrun_failed(
        svm,
        exit,
        ran.load(SeqCst),
        "of a VMCB without the VMRUN intercept",
    );
}

/// rsm: RSM is intercepted; without the intercept it raises #UD outside SMM (intercepted too).
fn rsm_intercept(svm: &mut Svm) {
    svm.set_intercept(Intercept::Rsm);
    svm.set_intercept(Intercept::Exception(Vector::UD.0));
    let mut exits = Vec::new();
    svm.run(&rsm, |exit| {
        exits.push(exit.code());
        if exits.len() == 1 && exit.code() == ExitCode::Rsm {
            exit.clear_intercept(Intercept::Rsm);
            return false;
        }
        true
    });
    report!(
        exits.first() == Some(&ExitCode::Rsm),
        "RSM in the guest exits with RSM (got {exits:?})"
    );
    report!(
        exits.get(1) == Some(&ExitCode::Exception(Vector::UD.0)),
        "RSM without its intercept raises #UD outside SMM, which exits with EXCP #UD (got {exits:?})"
    );
}

/// What a CR0 write in the guest must do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cr0Write {
    /// MOV to CR0 of `bit`.
    Mov(Cr0Flags),
    /// LMSW of `bit`.
    Lmsw(Cr0Flags),
}

/// kvm-unit-tests' `__test_cr0_write_bit`: the guest sets `write`'s bit in CR0 (after the host
/// cleared CR0.MP and CR0.CD); `expected` is its exit, VMMCALL when the write completes.
fn cr0_write_case(svm: &mut Svm, write: Cr0Write, non_selective: bool, expected: ExitCode) {
    let cr0 = svm.vmcb().save.cr0 & !(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::CACHE_DISABLE).bits();
    svm.set_guest_cr0(cr0);
    svm.set_intercept(Intercept::SelectiveCr0);
    if non_selective {
        svm.set_intercept(Intercept::CrWrite(0));
    }
    let written = AtomicU64::new(0);
    let completed = AtomicBool::new(false);
    let guest = || {
        let (value, result) = match write {
            Cr0Write::Mov(bit) => {
                let value = read_cr0() | bit.bits();
                written.store(value, SeqCst);
                (value, try_write_cr0(value))
            }
            Cr0Write::Lmsw(bit) => {
                let value = read_cr0() | bit.bits();
                written.store(value, SeqCst);
                (value, try_lmsw((value & 0xf) as u16))
            }
        };
        completed.store(result.is_ok() && read_cr0() == value, SeqCst);
    };
    let exit = svm.run_once(&guest);
    let guest_cr0 = svm.vmcb().save.cr0;
    let written = written.load(SeqCst);
    if expected == ExitCode::Vmmcall {
        report!(
            exit == expected && guest_cr0 == written && completed.load(SeqCst),
            "the CR0 write completes: exit {expected} with guest CR0 {written:#x} (got {exit}, CR0 {guest_cr0:#x})"
        );
    } else {
        report!(
            exit == expected && guest_cr0 != written && !completed.load(SeqCst),
            "the CR0 write of {written:#x} exits with {expected} before it takes effect (got {exit}, guest CR0 {guest_cr0:#x})"
        );
    }
}

/// sel cr0 write intercept: MOV to CR0 that changes CR0.CD exits with CR0_SEL_WRITE.
fn sel_cr0_write_intercept(svm: &mut Svm) {
    cr0_write_case(
        svm,
        Cr0Write::Mov(Cr0Flags::CACHE_DISABLE),
        false,
        ExitCode::Cr0SelectiveWrite,
    );
}

/// sel cr0 write intercept priority: with the CR0 write intercept too, WRITE_CR0 wins.
fn sel_cr0_write_intercept_priority(svm: &mut Svm) {
    cr0_write_case(
        svm,
        Cr0Write::Mov(Cr0Flags::CACHE_DISABLE),
        true,
        ExitCode::WriteCr(0),
    );
}

/// sel cr0 write nointercept: MOV to CR0 that changes only CR0.MP passes the selective intercept.
fn sel_cr0_write_nointercept(svm: &mut Svm) {
    cr0_write_case(
        svm,
        Cr0Write::Mov(Cr0Flags::MONITOR_COPROCESSOR),
        false,
        ExitCode::Vmmcall,
    );
}

/// sel cr0 lmsw intercept: LMSW is intercepted by the selective CR0 intercept whatever it changes
/// (AMD APM Vol. 2, 15.9.1), even CR0.MP alone.
fn sel_cr0_lmsw_intercept(svm: &mut Svm) {
    known_failure(is_tcg(), LMSW_DEFECT, || reproduce_lmsw_selective_cr0(svm));
}

/// The KFAIL reason of the LMSW check.
const LMSW_DEFECT: &str = "QEMU's helper_write_crN (target/i386/tcg/system/misc_helper.c), which LMSW goes through, intercepts it like MOV to CR0, only when bits other than TS and MP change (reproduce-svm-lmsw-selective-cr0)";

/// The KFAIL reason of the CR3-read intercept checks.
pub(crate) const CR_READ_DEFECT: &str = "QEMU's decode_op (target/i386/tcg/decode-new.c.inc, X86_TYPE_C) adds the CR number to an intercept only when it is non-zero, and READ_CR0's is 0: MOV from CR3 is checked against the CR0-read intercept (reproduce-svm-cr3-read-intercept)";

/// cr3 read intercept: MOV from CR3 exits with READ_CR3 before it completes.
fn cr3_read_intercept(svm: &mut Svm) {
    svm.set_intercept(Intercept::CrRead(3));
    let read = AtomicU64::new(0);
    let exit = svm.run_once(&|| read.store(read_cr3(), SeqCst));
    known_failure(is_tcg(), CR_READ_DEFECT, || {
        report!(
            exit == ExitCode::ReadCr(3),
            "MOV from CR3 exits with READ_CR3 (got {exit})"
        );
        report!(
            read.load(SeqCst) == 0,
            "the guest did not get a value (got {:#x})",
            read.load(SeqCst)
        );
    });
}

/// cr3 read nointercept: without the intercept the guest reads the host's CR3.
fn cr3_read_nointercept(svm: &mut Svm) {
    let read = AtomicU64::new(0);
    let exit = svm.run_once(&|| read.store(read_cr3(), SeqCst));
    let (read, host) = (read.load(SeqCst), read_cr3());
    report!(
        exit == ExitCode::Vmmcall && read == host,
        "MOV from CR3 completes with the host's CR3 {host:#x} (got {exit}, CR3 {read:#x})"
    );
}

/// dr intercept check: each MOV from and to DR0-DR7 exits with its own READ_DRn/WRITE_DRn.
fn dr_intercept_check(svm: &mut Svm) {
    for index in 0..8 {
        svm.set_intercept(Intercept::DrRead(index));
        svm.set_intercept(Intercept::DrWrite(index));
    }
    let scratch = AtomicU64::new(u64::MAX);
    // Bit n: the read of DRn did not exit as READ_DRn; bit 8 + n: the write, as WRITE_DRn.
    let missed = AtomicU32::new(0);
    let guest = || {
        for index in 0..8u8 {
            let _ = try_read_debug_register(index);
            if scratch.load(SeqCst) != u64::from(index) {
                missed.fetch_or(1 << index, SeqCst);
            }
        }
        for index in 0..8u8 {
            let _ = try_write_debug_register(index, scratch.load(SeqCst));
            if scratch.load(SeqCst) != u64::from(16 + index) {
                missed.fetch_or(1 << (8 + index), SeqCst);
            }
        }
    };
    let last = svm.run(&guest, |exit| match exit.code() {
        ExitCode::ReadDr(n) => {
            scratch.store(u64::from(n), SeqCst);
            exit.skip_instruction();
            false
        }
        ExitCode::WriteDr(n) => {
            scratch.store(16 + u64::from(n), SeqCst);
            exit.skip_instruction();
            false
        }
        _ => true,
    });
    let missed = missed.load(SeqCst);
    report!(
        last == ExitCode::Vmmcall && missed == 0,
        "MOV from/to each of DR0-DR7 exits with READ_DRn/WRITE_DRn (missed reads {:#04x}, writes {:#04x}; last exit {last})",
        missed & 0xff,
        missed >> 8
    );
}

/// next_rip: an intercepted RDTSC saves the next instruction's RIP (NRIPS).
fn next_rip(svm: &mut Svm) {
    svm.set_intercept(Intercept::Rdtsc);
    let exit = svm.run_once(&|| {
        rdtsc_probe();
    });
    let (saved, expected) = (svm.vmcb().control.next_rip, rdtsc_next_rip());
    report!(
        exit == ExitCode::Rdtsc && saved == expected,
        "RDTSC exits with RDTSC and next_rip {expected:#x} (got {exit}, {saved:#x})"
    );
}

/// asid_zero: VMRUN with ASID 0 (the host's) fails with VMEXIT_INVALID.
fn asid_zero(svm: &mut Svm) {
    svm.set_asid(0);
    let ran = AtomicBool::new(false);
    let exit = svm.run_once(&|| {
        ran.store(true, SeqCst);
        vmmcall();
    });
    report_vmrun_failed(svm, exit, ran.load(SeqCst), "with ASID 0");
}

/// tsc_adjust: a guest write to the TSC moves IA32_TSC_ADJUST as a host write would, and the
/// TSC offset does not leak into it.
fn tsc_adjust(svm: &mut Svm) {
    const ADJUST: i64 = 1 << 32;
    const OFFSET: u64 = !0u64 << 48;
    svm.set_tsc_offset(OFFSET);
    let written = try_wrmsr(IA32_TSC_ADJUST, (-ADJUST) as u64);
    let before = try_rdmsr(IA32_TSC_ADJUST).map(|value| value as i64);
    let ok = AtomicBool::new(written.is_ok() && before == Ok(-ADJUST));
    let guest = || {
        let check = |condition: bool| {
            ok.fetch_and(condition, SeqCst);
        };
        check(try_rdmsr(IA32_TSC_ADJUST) == Ok((-ADJUST) as u64));
        let l1_tsc = rdtsc().wrapping_sub(OFFSET);
        check(try_wrmsr(IA32_TSC, l1_tsc.wrapping_sub(ADJUST as u64)).is_ok());
        check(try_rdmsr(IA32_TSC_ADJUST).is_ok_and(|adjust| (adjust as i64) <= -2 * ADJUST));
        let l1_tsc_end = rdtsc().wrapping_sub(OFFSET);
        check(l1_tsc_end.wrapping_add(ADJUST as u64).wrapping_sub(l1_tsc) < ADJUST as u64);
        let l1_tsc_msr = try_rdmsr(IA32_TSC).unwrap_or(0).wrapping_sub(OFFSET);
        check(l1_tsc_msr.wrapping_add(ADJUST as u64).wrapping_sub(l1_tsc) < ADJUST as u64);
    };
    let exit = svm.run_once(&guest);
    let after = try_rdmsr(IA32_TSC_ADJUST).map(|value| value as i64);
    let _ = try_wrmsr(IA32_TSC_ADJUST, 0);
    report!(
        exit == ExitCode::Vmmcall && ok.load(SeqCst) && after.is_ok_and(|adjust| adjust <= -2 * ADJUST),
        "the guest's TSC write lowers IA32_TSC_ADJUST by the same amount (exit {exit}, IA32_TSC_ADJUST {after:x?})"
    );
}

/// The KFAIL reason of checks that a failed VMRUN leaves the VMCB's guest state alone.
const FAILED_VMRUN_STATE_DEFECT: &str = "QEMU's helper_vmrun fails VMRUN through cpu_vmexit (target/i386/tcg/system/svm_helper.c), whose do_vmexit saves the CPU's state over the VMCB's guest state: RIP then points into the host (reproduce-svm-failed-vmrun-state)";

/// exc_inject: EVENTINJ of vector 2 as an exception fails VMRUN; of #DE, delivers it to the
/// guest once and clears EVENTINJ.V.
#[allow(unsafe_code)]
fn exc_inject(svm: &mut Svm) {
    let divide_errors = AtomicU64::new(u64::MAX);
    let guest = || {
        let ((), seen) = trap_exceptions(&[Vector::DE], || {
            vmmcall();
            vmmcall();
        });
        divide_errors.store(seen.len() as u64, SeqCst);
    };
    let mut exits = Vec::new();
    let mut valid_after_injection = None;
    let mut resume_at = 0;
    let mut rip_after_failure = None;
    let last = svm.run(&guest, |exit| {
        exits.push(exit.code());
        match exits.len() {
            1 if exit.code() == ExitCode::Vmmcall => {
                exit.skip_instruction();
                resume_at = exit.vmcb().save.rip;
                exit.set_event_inject(event_injection(Vector::NMI.0, EventType::Exception));
                false
            }
            2 if exit.vmcb().control.exit_code as u32 == u32::MAX => {
                rip_after_failure = Some(exit.vmcb().save.rip);
                // SAFETY: the guest resumes where it was before the failed VMRUN: after its
                // first VMMCALL (the failure may have overwritten the RIP: checked below).
                unsafe { exit.vmcb_mut().save.rip = resume_at };
                exit.set_event_inject(event_injection(Vector::DE.0, EventType::Exception));
                false
            }
            3 if exit.code() == ExitCode::Vmmcall => {
                valid_after_injection = Some(exit.vmcb().control.event_inject & EVENT_VALID != 0);
                exit.skip_instruction();
                false
            }
            _ => true,
        }
    });
    report!(
        exits.get(1).is_some_and(|exit| exit.raw() as u32 == u32::MAX),
        "EVENTINJ of vector 2 as an exception fails VMRUN with ERR (exits {exits:?})"
    );
    known_failure(is_tcg(), FAILED_VMRUN_STATE_DEFECT, || {
        report!(
            rip_after_failure == Some(resume_at),
            "the failed VMRUN leaves the guest's RIP {resume_at:#x} in the VMCB (got {rip_after_failure:x?})"
        )
    });
    let divide_errors = divide_errors.load(SeqCst);
    report!(
        last == ExitCode::Vmmcall && exits.len() == 4 && divide_errors == 1,
        "divide overflow exception injected: the guest takes one #DE (got {divide_errors}, exits {exits:?})"
    );
    report!(
        valid_after_injection == Some(false),
        "eventinj.VALID cleared (got {valid_after_injection:?})"
    );
}

/// The vector the pending-event cases send themselves.
const PENDING_VECTOR: u8 = 0xf1;
/// Whether the pending-event interrupt reached its handler.
static PENDING_FIRED: AtomicBool = AtomicBool::new(false);

fn pending_handler(_vector: u8) {
    PENDING_FIRED.store(true, SeqCst);
}

/// Sends this CPU `PENDING_VECTOR` with interrupts off, so it stays pending.
fn send_pending_interrupt() {
    interrupts::disable();
    report!(
        apic::self_ipi(PENDING_VECTOR),
        "the self IPI on vector {PENDING_VECTOR:#x} is sent"
    );
}

/// pending_event: an interrupt pending at VMRUN with the INTR intercept exits before the guest
/// runs; the host takes it; the guest then runs.
fn pending_event(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(PENDING_VECTOR, Some(pending_handler));
    PENDING_FIRED.store(false, SeqCst);
    svm.set_intercept(Intercept::Intr);
    svm.set_int_ctl(int_ctl::V_INTR_MASKING);
    send_pending_interrupt();
    let guest_ran = AtomicBool::new(false);
    let mut stage = 0;
    let mut observed = Vec::new();
    svm.run(&|| guest_ran.store(true, SeqCst), |exit| {
        stage += 1;
        match stage {
            1 => {
                let ran = guest_ran.load(SeqCst);
                exit.clear_intercept(Intercept::Intr);
                exit.set_int_ctl(0);
                interrupt_window();
                observed.push((exit.code(), ran, PENDING_FIRED.load(SeqCst)));
                exit.code() != ExitCode::Intr
            }
            _ => {
                observed.push((exit.code(), guest_ran.load(SeqCst), PENDING_FIRED.load(SeqCst)));
                true
            }
        }
    });
    set_interrupt_handler(PENDING_VECTOR, None);
    report!(
        observed
            .first()
            .is_some_and(|&(exit, ran, _)| exit == ExitCode::Intr && !ran),
        "the pending interrupt exits with INTR before the guest runs (got {observed:?}: exit, guest ran, host took it)"
    );
    report!(
        observed.first().is_some_and(|&(_, _, fired)| fired),
        "the host takes the pending interrupt in its interrupt window"
    );
    report!(
        observed
            .get(1)
            .is_some_and(|&(exit, ran, _)| exit == ExitCode::Vmmcall && ran),
        "with nothing pending the guest runs to its VMMCALL (got {observed:?})"
    );
}

/// pending_event_cli: without V_INTR_MASKING the guest's RFLAGS.IF masks the pending interrupt
/// and its STI takes it; with V_INTR_MASKING and the host's IF clear, it stays pending for the
/// host.
fn pending_event_cli(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(PENDING_VECTOR, Some(pending_handler));
    PENDING_FIRED.store(false, SeqCst);
    svm.set_host_interrupts(false);
    send_pending_interrupt();
    // Bit 0: taken while the guest's IF was clear; bit 1: not taken in the guest's window;
    // bit 2: taken in the guest's window with V_INTR_MASKING.
    let guest_wrong = AtomicU32::new(0);
    let guest = || {
        if PENDING_FIRED.load(SeqCst) {
            guest_wrong.fetch_or(1, SeqCst);
        }
        interrupt_window();
        if !PENDING_FIRED.load(SeqCst) {
            guest_wrong.fetch_or(2, SeqCst);
        }
        vmmcall();
        interrupt_window();
        if PENDING_FIRED.load(SeqCst) {
            guest_wrong.fetch_or(4, SeqCst);
        }
    };
    let mut exits = Vec::new();
    let mut host_took_it = false;
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        if exit.code() != ExitCode::Vmmcall {
            return true;
        }
        exit.skip_instruction();
        if exits.len() == 1 {
            PENDING_FIRED.store(false, SeqCst);
            exit.set_int_ctl(int_ctl::V_INTR_MASKING);
            send_pending_interrupt();
            return false;
        }
        if exits.len() == 2 {
            let taken_by_guest = PENDING_FIRED.load(SeqCst);
            interrupt_window();
            host_took_it = !taken_by_guest && PENDING_FIRED.load(SeqCst);
        }
        true
    });
    svm.set_host_interrupts(true);
    set_interrupt_handler(PENDING_VECTOR, None);
    let guest_wrong = guest_wrong.load(SeqCst);
    report!(
        guest_wrong & 1 == 0,
        "IRQ should NOT be delivered while IRQs disabled"
    );
    report!(
        guest_wrong & 2 == 0,
        "IRQ should be delivered after enabling IRQs"
    );
    report!(
        guest_wrong & 4 == 0 && host_took_it && exits == [ExitCode::Vmmcall, ExitCode::Vmmcall],
        "with V_INTR_MASKING and the host's IF clear the interrupt waits for the host (exits {exits:?})"
    );
}

/// Whether the NMI handler ran.
static NMI_FIRED: AtomicBool = AtomicBool::new(false);

fn nmi_handler(_vector: u8) {
    NMI_FIRED.store(true, SeqCst);
}

/// nmi: an NMI in the guest without the NMI intercept is the guest's; with it, an exit.
fn nmi(svm: &mut Svm) {
    set_interrupt_handler(Vector::NMI.0, Some(nmi_handler));
    NMI_FIRED.store(false, SeqCst);
    let own_id = apic::id();
    let direct = AtomicBool::new(false);
    let after_intercept = AtomicBool::new(false);
    let guest = || {
        apic::send_nmi(own_id);
        direct.store(NMI_FIRED.load(SeqCst), SeqCst);
        vmmcall();
        NMI_FIRED.store(false, SeqCst);
        apic::send_nmi(own_id);
        after_intercept.store(NMI_FIRED.load(SeqCst), SeqCst);
    };
    let mut exits = Vec::new();
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        match exits.len() {
            1 if exit.code() == ExitCode::Vmmcall => {
                exit.skip_instruction();
                exit.set_intercept(Intercept::Nmi);
                false
            }
            2 if exit.code() == ExitCode::Nmi => false,
            _ => true,
        }
    });
    set_interrupt_handler(Vector::NMI.0, None);
    report!(direct.load(SeqCst), "direct NMI while running guest");
    report!(
        exits.get(1) == Some(&ExitCode::Nmi),
        "NMI intercept while running guest (exits {exits:?})"
    );
    report!(
        after_intercept.load(SeqCst) && exits.get(2) == Some(&ExitCode::Vmmcall),
        "intercepted pending NMI delivered to the host before the guest resumes (exits {exits:?})"
    );
}

/// vgif: with V_GIF_ENABLED, the guest's STGI and CLGI set and clear V_GIF.
fn vgif(svm: &mut Svm) {
    let guest = || {
        vmmcall();
        stgi();
        vmmcall();
        clgi();
        vmmcall();
    };
    let mut exits = Vec::new();
    let mut after_stgi = None;
    let mut after_clgi = None;
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        if exit.code() != ExitCode::Vmmcall {
            return true;
        }
        let v_gif = exit.vmcb().control.int_ctl & int_ctl::V_GIF != 0;
        exit.skip_instruction();
        match exits.len() {
            1 => {
                exit.set_int_ctl(exit.vmcb().control.int_ctl | int_ctl::V_GIF_ENABLED);
                false
            }
            2 => {
                after_stgi = Some(v_gif);
                false
            }
            _ => {
                after_clgi = Some(v_gif);
                exit.set_int_ctl(exit.vmcb().control.int_ctl & !int_ctl::V_GIF_ENABLED);
                true
            }
        }
    });
    report!(after_stgi == Some(true), "STGI set VGIF bit (exits {exits:?})");
    report!(
        after_clgi == Some(false),
        "CLGI cleared VGIF bit (exits {exits:?})"
    );
}

/// The KFAIL reason of VMLOAD/VMSAVE exits without their intercepts.
const VMLOAD_DEFECT: &str = "QEMU's virtual_vm_load_save_enabled (target/i386/tcg/system/svm_helper.c) exits with VMLOAD/VMSAVE whenever nested paging is off, intercepted or not (reproduce-svm-vmload-without-intercept)";

/// VMLOAD then VMSAVE of the guest's own VMCB.
#[allow(unsafe_code)]
fn guest_vmload_vmsave(address: u64) {
    // SAFETY: the VMCB is the one `reset` filled with the host's (and so the guest's) FS, GS,
    // TR, LDTR and MSRs by VMSAVE: loading it changes nothing.
    unsafe { vmunit::arch::svm::vmload_instruction(address) };
    // SAFETY: saving them into the same VMCB rewrites the same values.
    unsafe { vmunit::arch::svm::vmsave_instruction(address) };
}

/// svm_vmload_vmsave: VMLOAD and VMSAVE exit exactly when intercepted.
fn svm_vmload_vmsave(svm: &mut Svm) {
    let address = svm.vmcb_address();
    let steps: [(Option<Intercept>, Option<Intercept>, ExitCode); 8] = [
        (None, None, ExitCode::Vmmcall),
        (Some(Intercept::Vmload), None, ExitCode::Vmload),
        (Some(Intercept::Vmsave), Some(Intercept::Vmload), ExitCode::Vmsave),
        (None, Some(Intercept::Vmsave), ExitCode::Vmmcall),
        (Some(Intercept::Vmload), None, ExitCode::Vmload),
        (None, Some(Intercept::Vmload), ExitCode::Vmmcall),
        (Some(Intercept::Vmsave), None, ExitCode::Vmsave),
        (None, Some(Intercept::Vmsave), ExitCode::Vmmcall),
    ];
    svm.clear_intercept(Intercept::Vmload);
    svm.clear_intercept(Intercept::Vmsave);
    let nested_paging = svm.nested_paging();
    for (set, clear, expected) in &steps {
        if let Some(intercept) = clear {
            svm.clear_intercept(*intercept);
        }
        if let Some(intercept) = set {
            svm.set_intercept(*intercept);
        }
        let exit = svm.run_once(&|| guest_vmload_vmsave(address));
        known_failure(
            is_tcg() && !nested_paging && *expected != ExitCode::Vmload,
            VMLOAD_DEFECT,
            || {
                report!(
                    exit == *expected,
                    "Test VMLOAD/VMSAVE intercept: Expected {expected} #VMEXIT (got {exit})"
                )
            },
        );
    }
}

/// svm_no_nm_test: with CR0.TS and CR0.EM clear in the guest, an x87 instruction raises no #NM.
fn svm_no_nm_test(svm: &mut Svm) {
    let ts = Cr0Flags::TASK_SWITCHED.bits();
    let em = Cr0Flags::EMULATE_COPROCESSOR.bits();
    report!(try_write_cr0(read_cr0() & !ts).is_ok(), "the host clears CR0.TS");
    svm.set_guest_cr0(svm.vmcb().save.cr0 & !(ts | em));
    let result = AtomicBool::new(false);
    let exit = svm.run_once(&|| result.store(try_fninit().result.is_ok(), SeqCst));
    report!(
        exit == ExitCode::Vmmcall && result.load(SeqCst),
        "fninit with CR0.TS and CR0.EM unset no #NM exception (got {exit})"
    );
}

/// svm_shutdown_intercept_test: a guest exception through an unmapped IDT triple-faults, which
/// the SHUTDOWN intercept turns into an exit.
#[allow(unsafe_code)]
fn svm_shutdown_intercept_test(svm: &mut Svm) {
    let page = TestPage::new();
    page.unmap();
    // SAFETY: only the guest's IDTR changes, to a page that faults on every access: any guest
    // exception becomes a triple fault, which `reset`'s SHUTDOWN intercept turns into an exit
    // (and the guest's closure raises one at once).
    unsafe { svm.vmcb_mut().save.idtr.base = page.address() };
    let exit = svm.run_once(&raise_invalid_opcode);
    report!(
        exit == ExitCode::Shutdown,
        "shutdown test passed: UD2 with an unmapped IDT exits with SHUTDOWN (got {exit})"
    );
}

/// The TCG defect behind the `ERR` checks: EXITCODE of a failed VMRUN is -1 in 64 bits.
fn reproduce_vmexit_invalid_code(svm: &mut Svm) {
    svm.clear_intercept(Intercept::Vmrun);
    svm.run_once(&|| {});
    let code = svm.vmcb().control.exit_code;
    report!(
        code == u64::MAX,
        "a VMRUN that fails stores VMEXIT_INVALID, -1 in all 64 bits of EXITCODE (got {code:#x})"
    );
}

/// The TCG defect behind `sel cr0 lmsw intercept`: LMSW always exits with the selective CR0
/// intercept.
fn reproduce_lmsw_selective_cr0(svm: &mut Svm) {
    cr0_write_case(
        svm,
        Cr0Write::Lmsw(Cr0Flags::MONITOR_COPROCESSOR),
        false,
        ExitCode::Cr0SelectiveWrite,
    );
}

/// The TCG defect behind `cr3 read intercept`: the CR0-read intercept alone does not catch MOV
/// from CR3.
fn reproduce_cr3_read_intercept(svm: &mut Svm) {
    svm.set_intercept(Intercept::CrRead(0));
    let exit = svm.run_once(&|| {
        read_cr3();
    });
    report!(
        exit == ExitCode::Vmmcall,
        "with only the CR0-read intercept, MOV from CR3 completes (got {exit})"
    );
}

/// The TCG defect behind `svm_vmload_vmsave`: without nested paging and without their
/// intercepts, VMLOAD and VMSAVE in the guest complete.
fn reproduce_vmload_without_intercept(svm: &mut Svm) {
    let address = svm.vmcb_address();
    svm.clear_intercept(Intercept::Vmload);
    svm.clear_intercept(Intercept::Vmsave);
    let exit = svm.run_once(&|| guest_vmload_vmsave(address));
    report!(
        exit == ExitCode::Vmmcall,
        "VMLOAD and VMSAVE without their intercepts complete in the guest (got {exit})"
    );
}

/// The TCG defect behind exc_inject's RIP check: a VMRUN that fails its checks leaves the
/// VMCB's guest state as it was.
fn reproduce_failed_vmrun_state(svm: &mut Svm) {
    svm.set_asid(0);
    let guest = || {};
    svm.run_once(&guest);
    let (rip, entry) = (svm.vmcb().save.rip, vmunit::arch::svm::entry_point(&guest));
    report!(
        rip == entry,
        "a VMRUN with ASID 0 fails and leaves the VMCB's RIP at the guest's entry {entry:#x} (got {rip:#x})"
    );
}

/// Whether the virtual interrupt reached the guest's handler.
static VIRQ_FIRED: AtomicBool = AtomicBool::new(false);
/// The vector of the virtual interrupt.
const VIRQ_VECTOR: u8 = 0xf1;

fn virq_handler(_vector: u8) {
    VIRQ_FIRED.store(true, SeqCst);
}

/// virq_inject: V_IRQ injects a virtual interrupt the guest takes when its IF allows; the
/// VINTR intercept exits first; a V_INTR_PRIO below V_TPR holds it (and its VINTR).
fn virq_inject(svm: &mut Svm) {
    set_interrupt_handler(VIRQ_VECTOR, Some(virq_handler));
    VIRQ_FIRED.store(false, SeqCst);
    let highest = int_ctl::V_INTR_MASKING | int_ctl::V_IRQ | 0xf << int_ctl::V_INTR_PRIO_SHIFT;
    svm.set_int_ctl(highest);
    svm.set_int_vector(VIRQ_VECTOR);
    // Bit n: the guest's check n failed.
    let guest_wrong = AtomicU32::new(0);
    let check = |bit: u32, good: bool| {
        if !good {
            guest_wrong.fetch_or(1 << bit, SeqCst);
        }
    };
    let guest = || {
        check(0, !VIRQ_FIRED.load(SeqCst));
        interrupt_window();
        check(1, VIRQ_FIRED.load(SeqCst));
        vmmcall();
        check(2, !VIRQ_FIRED.load(SeqCst));
        interrupt_window();
        check(3, VIRQ_FIRED.load(SeqCst));
        vmmcall();
        interrupt_window();
        check(4, !VIRQ_FIRED.load(SeqCst));
        vmmcall();
        vmmcall();
    };
    let mut exits = Vec::new();
    let mut v_irq_after_firing = None;
    let mut fired_before_vintr = None;
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        let stage = exits.len();
        let expected = if stage == 2 {
            ExitCode::Vintr
        } else {
            ExitCode::Vmmcall
        };
        if exit.code() != expected {
            return true;
        }
        if expected == ExitCode::Vmmcall {
            exit.skip_instruction();
        }
        match stage {
            1 => {
                v_irq_after_firing = Some(exit.vmcb().control.int_ctl & int_ctl::V_IRQ != 0);
                VIRQ_FIRED.store(false, SeqCst);
                exit.set_intercept(Intercept::Vintr);
                exit.set_int_ctl(highest);
            }
            2 => {
                fired_before_vintr = Some(VIRQ_FIRED.load(SeqCst));
                exit.clear_intercept(Intercept::Vintr);
            }
            3 => {
                VIRQ_FIRED.store(false, SeqCst);
                // A lower priority than the guest's TPR.
                exit.set_int_ctl(
                    int_ctl::V_INTR_MASKING | int_ctl::V_IRQ | 0x8 << int_ctl::V_INTR_PRIO_SHIFT | 0xa,
                );
            }
            4 => exit.set_intercept(Intercept::Vintr),
            _ => {}
        }
        stage == 5
    });
    set_interrupt_handler(VIRQ_VECTOR, None);
    let guest_wrong = guest_wrong.load(SeqCst);
    report!(guest_wrong & 1 == 0, "virtual IRQ blocked after L2 cli");
    report!(guest_wrong & 2 == 0, "virtual IRQ fired after L2 sti");
    report!(
        v_irq_after_firing == Some(false),
        "V_IRQ cleared on VMEXIT after firing (got {v_irq_after_firing:?})"
    );
    report!(
        exits.get(1) == Some(&ExitCode::Vintr) && fired_before_vintr == Some(false),
        "the VINTR intercept exits with VINTR before the virtual IRQ fires (exits {exits:?})"
    );
    report!(guest_wrong & 4 == 0, "intercepted VINTR blocked after L2 cli");
    report!(guest_wrong & 8 == 0, "intercepted VINTR fired after L2 sti");
    report!(
        guest_wrong & 16 == 0,
        "virtual IRQ blocked V_IRQ_PRIO less than V_TPR"
    );
    report!(
        exits.len() == 5
            && exits
                .iter()
                .enumerate()
                .all(|(index, exit)| (index == 1) == (*exit == ExitCode::Vintr)),
        "INTERCEPT_VINTR ignored while V_INTR_PRIO < V_TPR: the guest ends with VMMCALLs (exits {exits:?})"
    );
}

/// The APIC timer's vector in `interrupt`.
const TIMER_VECTOR: u8 = 222;
/// Whether the timer interrupt reached its handler.
static TIMER_FIRED: AtomicBool = AtomicBool::new(false);

fn timer_handler(_vector: u8) {
    TIMER_FIRED.store(true, SeqCst);
}

/// Starts the APIC timer, periodic, with an initial count of `count` (divide by 1).
fn start_timer(count: u32) {
    apic::write(apic::register::TIMER_DIVIDE, 0b1011);
    apic::write(
        apic::register::TIMER,
        apic::TIMER_PERIODIC | u32::from(TIMER_VECTOR),
    );
    apic::write(apic::register::TIMER_INITIAL_COUNT, count);
}

fn stop_timer() {
    apic::write(apic::register::TIMER_INITIAL_COUNT, 0);
}

/// Spins up to ten million times for the timer interrupt; whether it came.
fn spin_for_timer() -> bool {
    for _ in 0..10_000_000 {
        if TIMER_FIRED.load(SeqCst) {
            return true;
        }
        core::hint::spin_loop();
    }
    TIMER_FIRED.load(SeqCst)
}

/// interrupt: an APIC timer interrupt reaches the guest directly (without the INTR intercept)
/// or exits with INTR (with it and V_INTR_MASKING), spinning or halted.
fn interrupt(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(TIMER_VECTOR, Some(timer_handler));
    TIMER_FIRED.store(false, SeqCst);
    let guest_wrong = AtomicU32::new(0);
    let delays = [AtomicU64::new(0), AtomicU64::new(0)];
    let check = |bit: u32, good: bool| {
        if !good {
            guest_wrong.fetch_or(1 << bit, SeqCst);
        }
    };
    let guest = || {
        start_timer(1000);
        interrupts::enable();
        check(0, spin_for_timer());
        stop_timer();
        interrupts::disable();
        vmmcall();
        TIMER_FIRED.store(false, SeqCst);
        start_timer(1000);
        check(1, spin_for_timer());
        interrupts::enable();
        stop_timer();
        interrupts::disable();
        TIMER_FIRED.store(false, SeqCst);
        let start = rdtsc();
        start_timer(1_000_000);
        wait_for_interrupt();
        check(2, TIMER_FIRED.load(SeqCst));
        delays[0].store(rdtsc() - start, SeqCst);
        stop_timer();
        vmmcall();
        TIMER_FIRED.store(false, SeqCst);
        let start = rdtsc();
        start_timer(1_000_000);
        halt();
        check(3, TIMER_FIRED.load(SeqCst));
        delays[1].store(rdtsc() - start, SeqCst);
        stop_timer();
        apic::write(apic::register::TIMER, apic::MASKED);
    };
    let mut exits = Vec::new();
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        let stage = exits.len();
        let expected = if stage % 2 == 0 && stage < 5 {
            ExitCode::Intr
        } else {
            ExitCode::Vmmcall
        };
        if exit.code() != expected {
            return true;
        }
        match stage {
            1 | 3 => {
                exit.skip_instruction();
                exit.set_intercept(Intercept::Intr);
                exit.set_int_ctl(int_ctl::V_INTR_MASKING);
            }
            2 | 4 => {
                interrupt_window();
                exit.clear_intercept(Intercept::Intr);
                exit.set_int_ctl(0);
            }
            _ => {}
        }
        stage == 5
    });
    stop_timer();
    apic::write(apic::register::TIMER, apic::MASKED);
    // A last tick may still be pending: take it while the handler is there.
    interrupt_window();
    set_interrupt_handler(TIMER_VECTOR, None);
    let guest_wrong = guest_wrong.load(SeqCst);
    let delays = delays.map(|delay| delay.load(SeqCst));
    let expected_exits = [
        ExitCode::Vmmcall,
        ExitCode::Intr,
        ExitCode::Vmmcall,
        ExitCode::Intr,
        ExitCode::Vmmcall,
    ];
    report!(guest_wrong & 1 == 0, "direct interrupt while running guest");
    report!(guest_wrong & 2 == 0, "intercepted interrupt while running guest");
    report!(guest_wrong & 4 == 0, "direct interrupt + hlt");
    report!(
        delays[0] > 10000,
        "IRQ arrived after expected delay ({} TSC cycles)",
        delays[0]
    );
    report!(guest_wrong & 8 == 0, "intercepted interrupt + hlt");
    report!(
        delays[1] > 10000,
        "IRQ arrived after expected delay ({} TSC cycles)",
        delays[1]
    );
    report!(
        exits == expected_exits,
        "the exits alternate VMMCALL and INTR (got {exits:?})"
    );
}

/// svm_cr4_osxsave_test: a guest that clears CR4.OSXSAVE leaves the host's, and the host's
/// CPUID.1:ECX.OSXSAVE, set.
fn svm_cr4_osxsave_test(svm: &mut Svm) {
    if !Feature::Xsave.supported() {
        report_skip!("XSAVE not detected");
        return;
    }
    let osxsave = Cr4Flags::OSXSAVE.bits();
    let original = read_cr4();
    if original & osxsave == 0 {
        report!(
            try_write_cr4(original | osxsave).is_ok(),
            "the host sets CR4.OSXSAVE"
        );
        svm.set_guest_cr4(svm.vmcb().save.cr4 | osxsave);
    }
    report!(
        Feature::Osxsave.supported(),
        "CPUID.01H:ECX.XSAVE set before VMRUN"
    );
    let exit = svm.run_once(&|| {
        let _ = try_write_cr4(read_cr4() & !osxsave);
    });
    report!(
        exit == ExitCode::Vmmcall,
        "svm_cr4_osxsave_test_guest finished with VMMCALL (got {exit})"
    );
    report!(
        Feature::Osxsave.supported(),
        "CPUID.01H:ECX.XSAVE set after VMRUN"
    );
    report!(read_cr4() & osxsave != 0, "the host's CR4.OSXSAVE is still set");
    let _ = try_write_cr4(original);
}

/// svm_test_singlestep: RFLAGS.TF loaded by VMRUN traps after the first guest instruction,
/// not before it; an intercepted VMMCALL with TF set does not trap.
fn svm_test_singlestep(svm: &mut Svm) {
    let (second, end) = single_step_probe_addresses();
    svm.set_intercept(Intercept::Exception(Vector::DB.0));
    let mut exits = Vec::new();
    svm.run(&single_step_probe, |exit| {
        exits.push((exit.code(), exit.vmcb().save.rip));
        match (exits.len(), exit.code()) {
            (1 | 3, ExitCode::Vmmcall) => {
                exit.skip_instruction();
                exit.set_guest_trap_flag(true);
                false
            }
            (2, ExitCode::Exception(1)) => {
                exit.set_guest_trap_flag(false);
                false
            }
            (4, ExitCode::Vmmcall) => {
                exit.skip_instruction();
                false
            }
            (5, ExitCode::Vmmcall) => {
                exit.set_guest_trap_flag(false);
                exit.skip_instruction();
                false
            }
            _ => true,
        }
    });
    let debug = ExitCode::Exception(Vector::DB.0);
    report!(
        exits.get(1) == Some(&(debug, second)),
        "Test EFLAGS.TF on VMRUN: trap expected after completion of first guest instruction, at {second:#x} (exits {exits:x?})"
    );
    report!(
        exits.get(3).is_some_and(|&(exit, _)| exit == ExitCode::Vmmcall),
        "Test EFLAGS.TF on VMRUN: trap not expected before an intercepted VMMCALL (exits {exits:x?})"
    );
    report!(
        exits.get(4) == Some(&(ExitCode::Vmmcall, end))
            && exits.get(5).is_some_and(|&(exit, _)| exit == ExitCode::Vmmcall),
        "Test EFLAGS.TF on VMRUN: guest execution completion at {end:#x} (exits {exits:x?})"
    );
}

/// How a case of `svm_exception_test` raises its exception in the guest.
#[derive(Clone, Copy)]
enum Raise {
    NonCanonicalGp,
    Ud,
    De,
    SingleStepDb,
    Bp,
    /// A misaligned load at CPL 3 with CR0.AM and RFLAGS.AC (kvm-unit-tests' svm_l2_ac_test).
    UserAc,
    /// INTO with OF set in 32-bit code (kvm-unit-tests' generate_of).
    Of,
    Cr0TsNm,
    Cr0EmNm,
}

/// Two words to load from, misaligned, at CPL 3 (the image is user-accessible).
static ALIGNMENT_TARGET: [u64; 2] = [0x0123_4567_89ab_cdef; 2];

impl Raise {
    fn vector(self) -> Vector {
        match self {
            Raise::NonCanonicalGp => Vector::GP,
            Raise::Ud => Vector::UD,
            Raise::De => Vector::DE,
            Raise::SingleStepDb => Vector::DB,
            Raise::Bp => Vector::BP,
            Raise::UserAc => Vector::AC,
            Raise::Of => Vector::OF,
            Raise::Cr0TsNm | Raise::Cr0EmNm => Vector::NM,
        }
    }

    /// Raises the exception and returns the one the guest's handler saw. `code32` is the
    /// guest's 32-bit code segment (for [`Raise::Of`]).
    fn raise(self, code32: u16) -> Option<Vector> {
        let ts = Cr0Flags::TASK_SWITCHED.bits();
        let em = Cr0Flags::EMULATE_COPROCESSOR.bits();
        let x87 = |cr0: u64| {
            let original = read_cr0();
            let _ = try_write_cr0(cr0);
            let result = try_fninit().result;
            let _ = try_write_cr0(original);
            result.err().map(|exception| exception.vector)
        };
        match self {
            Raise::NonCanonicalGp => try_read(NON_CANONICAL_START)
                .err()
                .map(|exception| exception.vector),
            Raise::Ud => try_ud2().result.err().map(|exception| exception.vector),
            Raise::De => try_divide(0, 0, 0).err().map(|exception| exception.vector),
            Raise::SingleStepDb => {
                let (_, seen) = trap_exceptions(&[Vector::DB], single_step_two_nops);
                seen.first().map(|exception| exception.vector)
            }
            Raise::Bp => {
                let (_, seen) = trap_exceptions(&[Vector::BP], int3);
                seen.first().map(|exception| exception.vector)
            }
            Raise::UserAc => {
                let original = read_cr0();
                let _ = try_write_cr0(original | Cr0Flags::ALIGNMENT_MASK.bits());
                let misaligned = ALIGNMENT_TARGET.as_ptr() as u64 + 4;
                let result = run_in_user_mode(|| read_with_alignment_check(misaligned));
                let _ = try_write_cr0(original);
                result.err().map(|exception| exception.vector)
            }
            Raise::Of => Some(try_overflow_in_compatibility_mode(code32).vector),
            Raise::Cr0TsNm => x87((read_cr0() & !em) | ts),
            Raise::Cr0EmNm => x87((read_cr0() & !ts) | em),
        }
    }
}

/// The KFAIL reason of the #BP and #OF intercept checks.
const INT3_DEFECT: &str = "QEMU delivers INT3 and INTO (helper_into, target/i386/tcg/misc_helper.c) as software interrupts, which raise_interrupt2 (target/i386/tcg/excp_helper.c) checks against the INTn intercept, not the #BP or #OF exception intercept (reproduce-svm-int3-intercept)";

/// The KFAIL reason of the #AC checks.
const ALIGNMENT_CHECK_DEFECT: &str = "QEMU's x86 TCG (target/i386/tcg) implements no alignment checking: a misaligned CPL-3 load with CR0.AM and RFLAGS.AC raises no #AC (reproduce-tcg-alignment-check)";

/// svm_exception_test: each exception is the guest's own without its intercept, and exits with
/// EXCP_n with it. #AC comes from a CPL-3 load in the guest, #OF from INTO in a 32-bit code
/// segment of the guest's own GDT.
fn svm_exception_test(svm: &mut Svm) {
    for raise in [
        Raise::NonCanonicalGp,
        Raise::Ud,
        Raise::De,
        Raise::SingleStepDb,
        Raise::Bp,
        Raise::UserAc,
        Raise::Of,
        Raise::Cr0TsNm,
        Raise::Cr0EmNm,
    ] {
        let vector = raise.vector();
        let seen = AtomicU32::new(u32::MAX);
        svm.reset();
        let code32 = svm.give_guest_code32_segment();
        let exit = svm.run_once(&|| {
            seen.store(
                raise.raise(code32).map_or(u32::MAX - 1, |seen| u32::from(seen.0)),
                SeqCst,
            )
        });
        let seen = seen.load(SeqCst);
        let seen_name = match seen {
            u32::MAX => alloc::string::String::from("the guest did not finish"),
            value if value == u32::MAX - 1 => alloc::string::String::from("no exception"),
            value => alloc::format!("vector {value:#x}"),
        };
        known_failure(is_tcg() && vector == Vector::AC, ALIGNMENT_CHECK_DEFECT, || {
            report!(
                seen == u32::from(vector.0),
                "Handling {} in L2's exception handler (saw {seen_name})",
                vector.name()
            );
        });
        report!(
            exit == ExitCode::Vmmcall,
            "{} handled by L2 (got {exit})",
            vector.name()
        );
        svm.reset();
        let code32 = svm.give_guest_code32_segment();
        svm.set_intercept(Intercept::Exception(vector.0));
        let exit = svm.run_once(&|| {
            raise.raise(code32);
        });
        let defect = match vector {
            Vector::BP | Vector::OF => Some(INT3_DEFECT),
            Vector::AC => Some(ALIGNMENT_CHECK_DEFECT),
            _ => None,
        };
        known_failure(is_tcg() && defect.is_some(), defect.unwrap_or_default(), || {
            report!(
                exit == ExitCode::Exception(vector.0),
                "{} handled by L1 (got {exit})",
                vector.name()
            )
        });
    }
}

/// The TCG defect behind svm_exception_test's #BP check: INT3 exits with the #BP intercept.
fn reproduce_int3_intercept(svm: &mut Svm) {
    svm.set_intercept(Intercept::Exception(Vector::BP.0));
    // Where the intercept fails, the guest takes its own #BP and ends with VMMCALL.
    let exit = svm.run_once(&|| {
        trap_exceptions(&[Vector::BP], int3);
    });
    report!(
        exit == ExitCode::Exception(Vector::BP.0),
        "INT3 with the #BP intercept exits with EXCP #BP (got {exit})"
    );
}

/// The vector of the intr_intercept_mix cases.
const MIX_VECTOR: u8 = 0x55;
/// How many MIX_VECTOR interrupts and NMIs the host's handlers took.
static MIX_INTERRUPTS: AtomicU32 = AtomicU32::new(0);
static MIX_NMIS: AtomicU32 = AtomicU32::new(0);

fn mix_interrupt_handler(_vector: u8) {
    MIX_INTERRUPTS.fetch_add(1, SeqCst);
}

fn mix_nmi_handler(_vector: u8) {
    MIX_NMIS.fetch_add(1, SeqCst);
}

/// STI, then a few instructions: the interrupt window opens after the one after STI.
fn sti_nop() {
    interrupts::enable();
    core::hint::spin_loop();
}

/// kvm-unit-tests' `svm_intr_intercept_mix_run_guest`: the guest (which checks its own "No
/// interrupt expected" and must not get past the point where the event exits) ends with
/// `expected`; the event waits for the host, which takes exactly one in its interrupt
/// window (for a maskable interrupt: held by the host's IF until then; an NMI is taken as soon
/// as the harness's STGI sets GIF), and the guest's RFLAGS.IF is set.
fn intr_intercept_mix_run(
    svm: &mut Svm,
    counter: &AtomicU32,
    expected: ExitCode,
    guest: &dyn Fn(&AtomicBool, &AtomicBool),
) {
    counter.store(0, SeqCst);
    let early = AtomicBool::new(false);
    let reached = AtomicBool::new(false);
    let mut before_window = None;
    let mut guest_if = false;
    let exit = svm.run(&|| guest(&early, &reached), |exit| {
        before_window = Some(counter.load(SeqCst));
        guest_if = exit.vmcb().save.rflags & 1 << 9 != 0;
        interrupt_window();
        true
    });
    report!(
        !early.load(SeqCst),
        "No interrupt expected in the guest before it opens its window"
    );
    report!(!reached.load(SeqCst), "the guest does not get past its window");
    if expected == ExitCode::Intr {
        report!(
            before_window == Some(0),
            "No interrupt expected in the host before its window (got {before_window:?})"
        );
    }
    report!(
        counter.load(SeqCst) == 1,
        "Interrupt is expected: the host takes one (got {})",
        counter.load(SeqCst)
    );
    report!(exit == expected, "Wanted VM-Exit reason {expected}, got {exit}");
    report!(guest_if, "Guest should have EFLAGS.IF set now");
}

/// Sends the pending interrupt of the mix cases to this CPU.
fn mix_self_ipi() {
    apic::self_ipi(MIX_VECTOR);
}

/// svm_intr_intercept_mix_if: with the INTR intercept and a pending interrupt, setting
/// RFLAGS.IF in the guest is enough to exit.
fn svm_intr_intercept_mix_if(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(MIX_VECTOR, Some(mix_interrupt_handler));
    svm.set_intercept(Intercept::Intr);
    svm.set_guest_interrupt_flag(false);
    interrupts::disable();
    mix_self_ipi();
    intr_intercept_mix_run(svm, &MIX_INTERRUPTS, ExitCode::Intr, &|early, reached| {
        early.store(MIX_INTERRUPTS.load(SeqCst) != 0, SeqCst);
        sti_nop();
        reached.store(true, SeqCst);
    });
    set_interrupt_handler(MIX_VECTOR, None);
}

/// svm_intr_intercept_mix_gif: a guest that clears GIF and sets IF does not exit; its STGI
/// then does.
fn svm_intr_intercept_mix_gif(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(MIX_VECTOR, Some(mix_interrupt_handler));
    svm.set_intercept(Intercept::Intr);
    svm.set_guest_interrupt_flag(false);
    interrupts::disable();
    mix_self_ipi();
    intr_intercept_mix_run(svm, &MIX_INTERRUPTS, ExitCode::Intr, &|early, reached| {
        let mut seen = MIX_INTERRUPTS.load(SeqCst) != 0;
        clgi();
        sti_nop();
        seen |= MIX_INTERRUPTS.load(SeqCst) != 0;
        early.store(seen, SeqCst);
        stgi();
        reached.store(true, SeqCst);
    });
    set_interrupt_handler(MIX_VECTOR, None);
}

/// svm_intr_intercept_mix_gif2: an interrupt the guest sends itself with GIF clear exits at
/// its STGI.
fn svm_intr_intercept_mix_gif2(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(MIX_VECTOR, Some(mix_interrupt_handler));
    svm.set_intercept(Intercept::Intr);
    svm.set_guest_interrupt_flag(true);
    intr_intercept_mix_run(svm, &MIX_INTERRUPTS, ExitCode::Intr, &|early, reached| {
        let mut seen = MIX_INTERRUPTS.load(SeqCst) != 0;
        clgi();
        mix_self_ipi();
        seen |= MIX_INTERRUPTS.load(SeqCst) != 0;
        early.store(seen, SeqCst);
        stgi();
        reached.store(true, SeqCst);
    });
    set_interrupt_handler(MIX_VECTOR, None);
}

/// svm_intr_intercept_mix_smi: an SMI the guest sends itself with GIF clear (STI does not
/// matter) exits with SMI at its STGI (kvm-unit-tests cannot count SMIs either: the host takes
/// the SMI that stays pending through a handler that only resumes).
fn svm_intr_intercept_mix_smi(svm: &mut Svm) {
    vmunit::arch::svm::install_resuming_smi_handler();
    svm.set_intercept(Intercept::Smi);
    let at_stgi = AtomicBool::new(false);
    let reached = AtomicBool::new(false);
    let exit = svm.run_once(&|| {
        clgi();
        apic::send_smi(apic::id());
        sti_nop();
        at_stgi.store(true, SeqCst);
        stgi();
        reached.store(true, SeqCst);
    });
    report!(
        at_stgi.load(SeqCst),
        "with GIF clear the SMI waits: the guest gets to its STGI"
    );
    report!(!reached.load(SeqCst), "the guest does not get past its STGI");
    report!(exit == ExitCode::Smi, "Wanted VM-Exit reason SMI, got {exit}");
}

/// svm_intr_intercept_mix_nmi: an NMI the guest sends itself with GIF clear (CLI and STI do not
/// matter) exits with NMI at its STGI.
fn svm_intr_intercept_mix_nmi(svm: &mut Svm) {
    set_interrupt_handler(Vector::NMI.0, Some(mix_nmi_handler));
    svm.set_intercept(Intercept::Nmi);
    svm.set_guest_interrupt_flag(true);
    let own_id = apic::id();
    intr_intercept_mix_run(svm, &MIX_NMIS, ExitCode::Nmi, &|early, reached| {
        let mut seen = MIX_NMIS.load(SeqCst) != 0;
        interrupts::disable();
        clgi();
        apic::send_nmi(own_id);
        sti_nop();
        seen |= MIX_NMIS.load(SeqCst) != 0;
        early.store(seen, SeqCst);
        stgi();
        reached.store(true, SeqCst);
    });
    set_interrupt_handler(Vector::NMI.0, None);
}

/// svm_vmrun_errata_test: VMSAVE to any page of memory raises no #GP (an erratum checked the
/// address against reserved regions such as the SMM area first).
#[allow(unsafe_code)]
fn svm_vmrun_errata_test(_svm: &mut Svm) {
    let mut pages = Vec::new();
    let mut faulted = None;
    while let Some(page) = vmunit::memory::allocate_frame() {
        // SAFETY: the frame is fresh from the frame allocator and nothing else uses it: VMSAVE
        // writes only into it.
        let result = vmunit::catch_exception(|| unsafe { vmunit::arch::svm::vmsave_instruction(page) });
        pages.push(page);
        if let Err(exception) = result {
            faulted = Some((page, exception.vector));
            break;
        }
    }
    let count = pages.len();
    for page in pages {
        vmunit::memory::free_frames(page, 1);
    }
    report!(
        faulted.is_none() && count > 0,
        "All guest memory tested, no bug found: VMSAVE to each of {count} free pages (fault: {faulted:x?})"
    );
}

/// How long CPU 1 waits before each NMI of `nmi_hlt`, in TSC cycles.
const NMI_DELAY: u64 = 100_000_000;
/// nmi_hlt's stage: the guest sets 1 before its first HLT, 2 before its second, 3 at the end.
static NMI_HLT_STAGE: AtomicU32 = AtomicU32::new(0);

/// nmi_hlt: an NMI from CPU 1 wakes the guest's HLT, directly or through the NMI intercept.
fn nmi_hlt(svm: &mut Svm) {
    set_interrupt_handler(Vector::NMI.0, Some(nmi_handler));
    NMI_FIRED.store(false, SeqCst);
    NMI_HLT_STAGE.store(0, SeqCst);
    let own_id = apic::id();
    vmunit::arch::smp::on_cpu_async(1, move || {
        for stage in [1, 2] {
            while NMI_HLT_STAGE.load(SeqCst) != stage {
                core::hint::spin_loop();
            }
            let start = rdtsc();
            while rdtsc().wrapping_sub(start) < NMI_DELAY {
                core::hint::spin_loop();
            }
            apic::send_nmi(own_id);
        }
    });
    let direct = AtomicBool::new(false);
    let intercepted = AtomicBool::new(false);
    let delays = [AtomicU64::new(0), AtomicU64::new(0)];
    let guest = || {
        let start = rdtsc();
        NMI_HLT_STAGE.store(1, SeqCst);
        halt();
        direct.store(NMI_FIRED.load(SeqCst), SeqCst);
        delays[0].store(rdtsc().wrapping_sub(start), SeqCst);
        NMI_FIRED.store(false, SeqCst);
        vmmcall();
        let start = rdtsc();
        NMI_HLT_STAGE.store(2, SeqCst);
        halt();
        intercepted.store(NMI_FIRED.load(SeqCst), SeqCst);
        delays[1].store(rdtsc().wrapping_sub(start), SeqCst);
        NMI_HLT_STAGE.store(3, SeqCst);
    };
    let mut exits = Vec::new();
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        match (exits.len(), exit.code()) {
            (1, ExitCode::Vmmcall) => {
                exit.skip_instruction();
                exit.set_intercept(Intercept::Nmi);
                false
            }
            (2, ExitCode::Nmi) => false,
            _ => true,
        }
    });
    set_interrupt_handler(Vector::NMI.0, None);
    let delays = delays.map(|delay| delay.load(SeqCst));
    report!(direct.load(SeqCst), "direct NMI + hlt");
    report!(
        delays[0] > NMI_DELAY,
        "direct NMI after expected delay ({} cycles)",
        delays[0]
    );
    report!(
        exits.get(1) == Some(&ExitCode::Nmi),
        "NMI intercept while running guest (exits {exits:?})"
    );
    report!(intercepted.load(SeqCst), "intercepted NMI + hlt");
    report!(
        delays[1] > NMI_DELAY,
        "intercepted NMI after expected delay ({} cycles)",
        delays[1]
    );
    report!(
        NMI_HLT_STAGE.load(SeqCst) == 3 && exits.get(2) == Some(&ExitCode::Vmmcall),
        "the guest ends with VMMCALL (exits {exits:?})"
    );
}

/// svm_init_startup_test: a CPU with SVM enabled comes back from INIT and STARTUP.
fn svm_init_startup_test(_svm: &mut Svm) {
    let enabled = AtomicBool::new(false);
    vmunit::arch::smp::on_cpu(1, || enabled.store(vmunit::arch::svm::enable().is_ok(), SeqCst));
    report!(
        enabled.load(SeqCst),
        "CPU 1 turns SVM on (EFER.SVME, VM_HSAVE_PA)"
    );
    let reset = vmunit::arch::smp::reset_cpu(1, || {});
    report!(
        reset.init_sent && reset.startup_sent && reset.restarted,
        "CPU 1 comes back online after INIT and STARTUP ({reset:?})"
    );
}

/// An instruction of svm_unsupported_instruction_intercept_test: its name, intercept, exit
/// and a guest that runs it.
type UnadvertisedInstruction = (&'static str, Intercept, ExitCode, fn());

/// SKINIT in a guest where it is intercepted or unadvertised.
#[allow(unsafe_code)]
fn guest_skinit() {
    // SAFETY: the case intercepts SKINIT and #UD: it exits either way.
    unsafe { vmunit::arch::svm::skinit_instruction() };
}

/// svm_unsupported_instruction_intercept_test: an instruction CPUID does not advertise raises
/// #UD in the guest even where its intercept is set, and the intercept stays set in the VMCB.
fn svm_unsupported_instruction_intercept_test(svm: &mut Svm) {
    let instructions: [UnadvertisedInstruction; 5] = [
        ("RDTSCP", Intercept::Rdtscp, ExitCode::Rdtscp, || {
            let _ = try_rdtscp();
        }),
        ("SKINIT", Intercept::Skinit, ExitCode::Skinit, guest_skinit),
        ("XSETBV", Intercept::Xsetbv, ExitCode::Xsetbv, || {
            let _ = try_xsetbv(0, 0);
        }),
        ("RDPRU", Intercept::Rdpru, ExitCode::Rdpru, || {
            let _ = try_rdpru(0);
        }),
        ("INVPCID", Intercept::Invpcid, ExitCode::Invpcid, || {
            let _ = try_invpcid(0, 0, 0);
        }),
    ];
    for (name, intercept, own_exit, instruction) in instructions {
        svm.reset();
        svm.set_intercept(Intercept::Exception(Vector::UD.0));
        svm.set_intercept(intercept);
        let exit = svm.run_once(&instruction);
        if intercept == Intercept::Skinit {
            // SKINIT raises #UD only with EFER.SVME clear (AMD APM Vol. 3, SKINIT), and a guest
            // runs with it set (VMRUN requires it): its intercept applies. kvm-unit-tests
            // expects #UD because KVM drops intercepts of what the guest's CPUID lacks.
            report!(
                exit == own_exit,
                "SKINIT with EFER.SVME set is valid without CPUID's SKINIT bit: it exits with {own_exit} (got {exit})"
            );
        } else {
            report!(
                exit == ExitCode::Exception(Vector::UD.0),
                "UD Exception injected: {name} exits with EXCP #UD, not {own_exit} (got {exit})"
            );
        }
        report!(
            svm.vmcb().control.has_intercept(intercept),
            "{name} intercept bit not cleared"
        );
    }
}

/// How many timer interrupts reg_corruption waits for: kvm-unit-tests' 10000 would take four
/// minutes under TCG, where the guest gets about 40 a second (every INSB of its loop leaves
/// the translated code for QEMU's I/O path).
const REG_CORRUPTION_INTERRUPT_COUNT: u32 = 200;

/// How many timer interrupts reached the host in reg_corruption.
static REG_CORRUPTION_INTERRUPTS: AtomicU32 = AtomicU32::new(0);

fn reg_corruption_handler(_vector: u8) {
    REG_CORRUPTION_INTERRUPTS.fetch_add(1, SeqCst);
}

/// reg_corruption: the guest loops over INSB (not intercepted) while intercepted APIC timer
/// interrupts exit it; an exit whose RIP is the INSB must find the INSB not yet done (its
/// byte still 0xAA), or the VMCB holds stale registers (Linux commit b6162e82aef1).
fn reg_corruption(svm: &mut Svm) {
    apic::enable();
    set_interrupt_handler(TIMER_VECTOR, Some(reg_corruption_handler));
    REG_CORRUPTION_INTERRUPTS.store(0, SeqCst);
    svm.set_int_ctl(int_ctl::V_INTR_MASKING);
    svm.set_intercept(Intercept::Intr);
    // A period of 100000 counts rather than kvm-unit-tests' 1000: QEMU's timer callbacks for a
    // period of about a microsecond starve TCG's vCPU on a loaded host.
    start_timer(100_000);
    let byte = AtomicU8::new(0xaa);
    let insb = insb_loop_address();
    let mut corrupted_after = None;
    let mut other_exit = None;
    svm.run(&|| insb_loop(&byte), |exit| {
        if REG_CORRUPTION_INTERRUPTS.load(SeqCst) >= REG_CORRUPTION_INTERRUPT_COUNT {
            return true;
        }
        if exit.code() != ExitCode::Intr {
            other_exit = Some(exit.code());
            return true;
        }
        let at_insb = exit.vmcb().save.rip == insb;
        interrupt_window();
        if at_insb && byte.load(SeqCst) != 0xaa {
            corrupted_after = Some(REG_CORRUPTION_INTERRUPTS.load(SeqCst));
            return true;
        }
        false
    });
    stop_timer();
    apic::write(apic::register::TIMER, apic::MASKED);
    // A last tick may still be pending: take it while the handler is there.
    interrupt_window();
    set_interrupt_handler(TIMER_VECTOR, None);
    let interrupts = REG_CORRUPTION_INTERRUPTS.load(SeqCst);
    report!(
        corrupted_after.is_none() && other_exit.is_none() && interrupts >= REG_CORRUPTION_INTERRUPT_COUNT,
        "No RIP corruption detected after {interrupts} timer interrupts (corruption after {corrupted_after:?}, other exit {other_exit:?})"
    );
}

/// The virtual interrupt's vector, for `trap_exceptions`.
static VIRQ_VECTORS: [Vector; 1] = [Vector(VIRQ_VECTOR)];

/// virq_inject_within_shadow: a virtual interrupt pending at VMRUN into an interrupt shadow is
/// taken after the shadowed instruction (its RIP the second NOP), and V_IRQ and the shadow are
/// clear at the next exit.
fn virq_inject_within_shadow(svm: &mut Svm) {
    let taken_at = AtomicU64::new(0);
    let guest = || {
        let ((), seen) = trap_exceptions(&VIRQ_VECTORS, shadow_probe);
        taken_at.store(seen.first().map_or(0, |interrupt| interrupt.rip), SeqCst);
    };
    let mut exits = Vec::new();
    let mut after = None;
    svm.run(&guest, |exit| {
        exits.push(exit.code());
        if exit.code() != ExitCode::Vmmcall {
            return true;
        }
        exit.skip_instruction();
        match exits.len() {
            1 => {
                exit.set_int_ctl(
                    int_ctl::V_INTR_MASKING | int_ctl::V_IRQ | 0xf << int_ctl::V_INTR_PRIO_SHIFT,
                );
                exit.set_int_vector(VIRQ_VECTOR);
                exit.set_interrupt_shadow(true);
                exit.set_guest_interrupt_flag(true);
                false
            }
            2 => {
                let control = &exit.vmcb().control;
                after = Some((control.int_ctl & int_ctl::V_IRQ != 0, control.int_state & 1 != 0));
                exit.set_guest_interrupt_flag(false);
                false
            }
            _ => true,
        }
    });
    let expected = shadow_probe_nops() + 1;
    let taken_at = taken_at.load(SeqCst);
    report!(
        exits.len() == 3 && exits.iter().all(|exit| *exit == ExitCode::Vmmcall),
        "VMEXIT due to vmmcall (exits {exits:?})"
    );
    report!(
        taken_at == expected,
        "V_IRQ fired after the shadowed NOP, at {expected:#x} (got {taken_at:#x})"
    );
    report!(
        after.is_some_and(|(v_irq, _)| !v_irq),
        "V_IRQ cleared on VMEXIT after firing (V_IRQ, shadow: {after:?})"
    );
    report!(
        after.is_some_and(|(_, shadow)| !shadow),
        "Interrupt shadow cleared (V_IRQ, shadow: {after:?})"
    );
}

/// One run of pause_filter_test: the guest executes `pauses` PAUSEs, and when `wait` is not zero
/// a loop of `wait` iterations and `pauses` PAUSEs again, with the PAUSE intercept and the
/// filter count and threshold given. The filter makes the intercept exit once the count of
/// PAUSEs reaches it; a gap between PAUSEs longer than the threshold (in cycles) restarts the
/// count.
fn pause_filter_run(svm: &mut Svm, pauses: u32, count: u16, wait: u32, threshold: u16) {
    svm.set_intercept(Intercept::Pause);
    svm.set_pause_filter(count, threshold);
    let exit = svm.run_once(&|| {
        for _ in 0..pauses {
            core::hint::spin_loop();
        }
        if wait == 0 {
            return;
        }
        for index in 0..wait {
            core::hint::black_box(index);
        }
        for _ in 0..pauses {
            core::hint::spin_loop();
        }
    });
    let what =
        alloc::format!("{pauses} PAUSEs, filter count {count}, {wait} loops between, threshold {threshold}");
    if u32::from(count) <= pauses || wait < u32::from(threshold) {
        report!(
            exit == ExitCode::Pause,
            "expected PAUSE vmexit ({what}; got {exit})"
        );
    } else {
        report!(
            exit == ExitCode::Vmmcall,
            "no expected PAUSE vmexit ({what}; got {exit})"
        );
    }
}

/// pause_filter_test: the PAUSE filter count and threshold.
fn pause_filter_test(svm: &mut Svm) {
    // Filter count below the number of PAUSEs: an exit.
    pause_filter_run(svm, 10, 9, 0, 0);
    // Filter count above it: no exit.
    svm.reset();
    pause_filter_run(svm, 20, 21, 0, 0);
    if !SvmFeature::PauseFilterThreshold.supported() {
        report_skip!("PAUSE threshold not supported in the guest: CPUID.8000000AH:EDX[12] is clear");
        return;
    }
    // A gap longer than the threshold restarts the count: no exit.
    svm.reset();
    pause_filter_run(svm, 20, 21, 1000, 10);
    // A gap shorter than the threshold keeps counting: an exit.
    svm.reset();
    pause_filter_run(svm, 20, 21, 10, 1000);
}
