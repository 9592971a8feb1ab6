//! svm: kvm-unit-tests' svm test (x86/svm_tests.c), nested AMD SVM: each case sets up the VMCB
//! as a copy of the host (`vmcb_ident`), adds its intercepts, runs a Rust closure as the guest
//! with VMRUN and checks the #VMEXITs it gets, in kvm-unit-tests' order and under its names.
//! Arguments select cases as kvm-unit-tests' do: a name (spaces as underscores) or glob picks
//! it, `-name` leaves it out.
//!
//! No nested paging yet: the guest runs on the host's page tables (kvm-unit-tests' svm_no_npt).
//! Without SVM in CPUID (kvm_pvm, TCG without `+svm`) the test skips.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::SeqCst};

use vmunit::arch::control::{Cr0Flags, read_cr0, read_cr3, try_lmsw, try_write_cr0};
use vmunit::arch::cpuid::Feature;
use vmunit::arch::debug::{try_read_debug_register, try_write_debug_register};
use vmunit::arch::instructions::{in_u8, in_u16, in_u32, out_u8, out_u16, rdtsc};
use vmunit::arch::msr::{IA32_TSC, IA32_TSC_ADJUST, try_rdmsr, try_wrmsr};
use vmunit::arch::svm::{
    ExitCode, Intercept, IoPermissionMap, Svm, SvmFeature, Unavailable, rdtsc_next_rip, rdtsc_probe, rsm,
};
use vmunit::{Vector, args::glob_match, prefix, report, report_fail, report_info, report_skip};

vmunit::main!(main);

/// One of kvm-unit-tests' `svm_tests[]`: its name, why it cannot run here (if it cannot), and
/// its body, which starts from a reset VMCB.
struct Case {
    name: &'static str,
    unsupported: fn() -> Option<&'static str>,
    run: fn(&mut Svm),
}

fn always() -> Option<&'static str> {
    None
}

fn forced_emulation() -> Option<&'static str> {
    Some("needs KVM's forced emulation prefix")
}

fn next_rip_save() -> Option<&'static str> {
    (!SvmFeature::Nrips.supported()).then_some("CPUID.8000000AH:EDX[3] (NRIPS) is clear")
}

fn tsc_adjust_msr() -> Option<&'static str> {
    (!Feature::TscAdjust.supported()).then_some("CPUID.7.0:EBX[1] (IA32_TSC_ADJUST) is clear")
}

static CASES: &[Case] = &[
    Case { name: "null", unsupported: always, run: null },
    Case { name: "vmrun", unsupported: always, run: vmrun },
    Case { name: "ioio", unsupported: always, run: ioio },
    Case { name: "vmrun intercept check", unsupported: always, run: vmrun_intercept_check },
    Case { name: "rsm", unsupported: always, run: rsm_intercept },
    Case { name: "sel cr0 write intercept", unsupported: always, run: sel_cr0_write_intercept },
    Case { name: "sel cr0 write intercept emulate", unsupported: forced_emulation, run: unreachable_case },
    Case { name: "sel cr0 write intercept priority", unsupported: always, run: sel_cr0_write_intercept_priority },
    Case { name: "sel cr0 write intercept priority emulate", unsupported: forced_emulation, run: unreachable_case },
    Case { name: "sel cr0 write nointercept", unsupported: always, run: sel_cr0_write_nointercept },
    Case { name: "sel cr0 write nointercept emulate", unsupported: forced_emulation, run: unreachable_case },
    Case { name: "sel cr0 lmsw intercept", unsupported: always, run: sel_cr0_lmsw_intercept },
    Case { name: "sel cr0 lmsw intercept emulate", unsupported: forced_emulation, run: unreachable_case },
    Case { name: "cr3 read intercept", unsupported: always, run: cr3_read_intercept },
    Case { name: "cr3 read nointercept", unsupported: always, run: cr3_read_nointercept },
    Case { name: "dr intercept check", unsupported: always, run: dr_intercept_check },
    Case { name: "next_rip", unsupported: next_rip_save, run: next_rip },
    Case { name: "asid_zero", unsupported: always, run: asid_zero },
    Case { name: "tsc_adjust", unsupported: tsc_adjust_msr, run: tsc_adjust },
];

/// kvm-unit-tests' `test_wanted`: with no positive filter every case runs; `-glob` excludes.
fn wanted(name: &str, filters: &[&str]) -> bool {
    let clean: alloc::string::String = name.chars().map(|c| if c == ' ' { '_' } else { c }).collect();
    let mut positive = false;
    let mut matched = false;
    for filter in filters.iter().filter(|filter| !filter.contains('=')) {
        if let Some(excluded) = filter.strip_prefix('-') {
            if glob_match(excluded, &clean) {
                return false;
            }
        } else {
            positive = true;
            matched |= glob_match(filter, &clean);
        }
    }
    !positive || matched
}

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
        "SVM features: NPT {}, NRIPS {}, VGIF {}, VNMI {}, LBRV {}",
        SvmFeature::Npt.supported(),
        SvmFeature::Nrips.supported(),
        SvmFeature::Vgif.supported(),
        SvmFeature::Vnmi.supported(),
        SvmFeature::Lbrv.supported()
    );
    let mut matched = 0;
    for case in CASES.iter().filter(|case| wanted(case.name, args)) {
        matched += 1;
        let _prefix = prefix(case.name);
        if let Some(reason) = (case.unsupported)() {
            report_skip!("{} (not supported: {reason})", case.name);
            continue;
        }
        svm.reset();
        (case.run)(&mut svm);
    }
    if matched == 0 {
        report_fail!("command line didn't match any tests!");
    }
}

fn unreachable_case(_svm: &mut Svm) {
    unreachable!("an unsupported case does not run");
}

/// null: a guest that does nothing ends with its VMMCALL.
fn null(svm: &mut Svm) {
    let exit = svm.run_once(&|| {});
    report!(exit == ExitCode::Vmmcall, "an empty guest exits with VMMCALL (got {exit})");
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
    report!(exit == ExitCode::Vmrun, "VMRUN in the guest exits with VMRUN (got {exit})");
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
    report!(exits == expected, "EXITINFO1 names port, direction and size of each exit (got {exits:x?})");
    report!(next_rips_right, "EXITINFO2 holds the RIP after the IN/OUT of each exit");
}

/// vmrun intercept check: VMRUN must intercept VMRUN, or it fails with VMEXIT_INVALID.
fn vmrun_intercept_check(svm: &mut Svm) {
    svm.clear_intercept(Intercept::Vmrun);
    let exit = svm.run_once(&|| {});
    report!(exit == ExitCode::Invalid, "VMRUN of a VMCB without the VMRUN intercept exits with ERR (got {exit})");
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
    report!(exits.first() == Some(&ExitCode::Rsm), "RSM in the guest exits with RSM (got {exits:?})");
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
    cr0_write_case(svm, Cr0Write::Mov(Cr0Flags::CACHE_DISABLE), false, ExitCode::Cr0SelectiveWrite);
}

/// sel cr0 write intercept priority: with the CR0 write intercept too, WRITE_CR0 wins.
fn sel_cr0_write_intercept_priority(svm: &mut Svm) {
    cr0_write_case(svm, Cr0Write::Mov(Cr0Flags::CACHE_DISABLE), true, ExitCode::WriteCr(0));
}

/// sel cr0 write nointercept: MOV to CR0 that changes only CR0.MP passes the selective intercept.
fn sel_cr0_write_nointercept(svm: &mut Svm) {
    cr0_write_case(svm, Cr0Write::Mov(Cr0Flags::MONITOR_COPROCESSOR), false, ExitCode::Vmmcall);
}

/// sel cr0 lmsw intercept: LMSW is intercepted by the selective CR0 intercept whatever it changes
/// (AMD APM Vol. 2, 15.9.1), even CR0.MP alone.
fn sel_cr0_lmsw_intercept(svm: &mut Svm) {
    cr0_write_case(svm, Cr0Write::Lmsw(Cr0Flags::MONITOR_COPROCESSOR), false, ExitCode::Cr0SelectiveWrite);
}

/// cr3 read intercept: MOV from CR3 exits with READ_CR3 before it completes.
fn cr3_read_intercept(svm: &mut Svm) {
    svm.set_intercept(Intercept::CrRead(3));
    let read = AtomicU64::new(0);
    let exit = svm.run_once(&|| read.store(read_cr3(), SeqCst));
    report!(exit == ExitCode::ReadCr(3), "MOV from CR3 exits with READ_CR3 (got {exit})");
    report!(read.load(SeqCst) == 0, "the guest did not get a value (got {:#x})", read.load(SeqCst));
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
    let exit = svm.run_once(&|| vmunit::arch::svm::vmmcall());
    report!(exit == ExitCode::Invalid, "VMRUN with ASID 0 exits with ERR (got {exit})");
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
