//! exceptions: every exception a test can raise is delivered with the right vector, error code
//! and RIP, and traps resume after their instruction.
//!
//! Expectations follow the Intel SDM (Vol. 3, chapter 6 and 17; Vol. 2 for each instruction's
//! exceptions), as kvm-unit-tests' eventinj, debug and emulator tests check them.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::fmt::Debug;

use vmunit::arch::control::{
    Cr0Flags, read_cr0, read_cr2, read_cr4, try_write_cr0, try_write_cr4, write_cr2,
};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::debug::dr6;
use vmunit::arch::exceptions::selector;
use vmunit::arch::instructions::{
    int1, int3, read, read_dr6, read_with_alignment_check, single_step_two_nops, software_interrupt,
    try_call_return, try_ud2, write_dr6,
};
use vmunit::arch::page_fault::{FETCH, PRESENT, RESERVED, USER, WRITE};
use vmunit::arch::probes;
use vmunit::arch::run_in_user_mode;
use vmunit::catch::Attempt;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Exception, Vector, known_failure, prefix, report, report_info, report_skip, trap_exceptions};

vmunit::main!(main);

/// A vector outside the exception range, for INT n.
const USER_VECTOR: Vector = Vector(32);

/// An address that is not canonical with 48-bit (and 57-bit) linear addresses.
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;
/// The first non-canonical address above the lower half of a 48-bit address space.
const NON_CANONICAL_LOW: u64 = 0x0000_8000_0000_0000;

/// Where the test runs, for the checks that some hypervisors are known to get wrong: those
/// report KFAIL there (FAIL anywhere else), or SKIP when they would stop the VM.
struct Host {
    /// CPUID leaf 0x40000000 says "TCGTCGTCGTCG": QEMU's TCG.
    tcg: bool,
    /// The runner's guest environment says the host's KVM is kvm_pvm.
    pvm: bool,
}

impl Host {
    fn detect() -> Host {
        Host {
            tcg: is_tcg(),
            pvm: vmunit::environment::instruction_emulating_kvm(),
        }
    }
}

/// The host (detected on each call: one CPUID and an environment lookup).
fn host() -> Host {
    Host::detect()
}

const PATTERN: u64 = 0x5a5a_0123_4567_89ab;

fn main(_args: &[&str]) {
    divide_error();
    debug();
    invalid_opcode();
    general_protection();
    stack_segment();
    page_fault();
    device_not_available();
    user_mode();
    // Last: checks that stop the VM (or hang the vCPU) on some hypervisors, skipped there
    // with the reason.
    if host().pvm {
        report_skip!(
            "#NM of WAIT with CR0.TS: this host's kvm_pvm stops the VM on it (KVM internal error; reproduce-wait-device-not-available)"
        );
    } else {
        wait_device_not_available();
    }
    if host().tcg {
        report_skip!(
            "#GP of reserved CR4 bits 15 and 63: QEMU 10.0's TCG answers with an SVM #VMEXIT(SVM_EXIT_ERR) outside SVM guest mode (helper_write_crN, target/i386/tcg/system/misc_helper.c) and the vCPU hangs (reproduce-cr4-reserved-bit-tcg)"
        );
    } else {
        let _prefix = prefix("#GP");
        let _inner = prefix("control registers");
        check_cr4_reserved_bit(15);
        check_cr4_reserved_bit(63);
    }
    if host().pvm {
        report_skip!(
            "#BP of INT3, INT n to vectors 0, 1, 3, 4, 6, 32, #DB of INT1: this host's kvm_pvm stops the VM on software interrupts (KVM internal error; reproduce-int3, reproduce-int-n)"
        );
    } else {
        breakpoint();
        software_interrupts();
        icebp();
    }
}

/// "#GP(0x28)" or "#UD": the exception as the SDM names it with its error code.
fn expected(vector: Vector, error_code: u64) -> String {
    if vector.has_error_code() {
        format!("{}({error_code:#x})", vector.name())
    } else {
        String::from(vector.name())
    }
}

/// What a probe did: the exception, or the value it returned.
fn outcome<T: Debug>(result: &Result<T, Exception>) -> String {
    match result {
        Ok(value) => format!("no exception, result {value:x?}"),
        Err(exception) => format!("{exception}"),
    }
}

/// Checks that a probe faulted with `vector` and `error_code`, delivered with RIP at the
/// probed instruction `instruction` (a fault, so before the instruction executed).
fn check_fault<T: Debug>(what: &str, probe: Attempt<T>, vector: Vector, error_code: u64) {
    let Attempt {
        result,
        address: instruction,
    } = probe;
    let got = outcome(&result);
    report!(
        matches!(result, Err(e) if e.vector == vector && e.error_code == error_code),
        "{what} raises {} (got {got})",
        expected(vector, error_code)
    );
    report!(
        matches!(result, Err(e) if e.rip == instruction),
        "{what}: RIP of the {} is the faulting instruction {instruction:#x} (got {got})",
        vector.name()
    );
}

/// Checks that a probe did not fault.
fn check_no_fault<T: Debug>(what: &str, probe: Attempt<T>) {
    let got = outcome(&probe.result);
    report!(probe.result.is_ok(), "{what} raises no exception (got {got})");
}

/// Checks that `seen` holds exactly one trap with `vector`, delivered with RIP `after`.
fn check_single_trap(what: &str, seen: &[Exception], vector: Vector, after: u64) {
    report!(
        seen.len() == 1 && seen[0].vector == vector,
        "{what} raises exactly one {vector} (got {seen:x?})"
    );
    report!(
        seen.first().is_some_and(|e| e.rip == after),
        "{what}: the {} trap's RIP is the next instruction {after:#x}, where IRETQ resumed (got {seen:x?})",
        vector.name()
    );
}

fn divide_error() {
    let _prefix = prefix("#DE");
    check_fault("DIV by zero", probes::try_divide_unsigned(0, 1, 0), Vector::DE, 0);
    check_fault(
        "DIV of 2^64 by 1 (quotient overflow)",
        probes::try_divide_unsigned(1, 0, 1),
        Vector::DE,
        0,
    );
    check_fault(
        "DIV of 2^96 by 2^32 (quotient 2^64 overflows)",
        probes::try_divide_unsigned(1 << 32, 0, 1 << 32),
        Vector::DE,
        0,
    );
    check_fault("IDIV by zero", probes::try_divide_signed(0, 5, 0), Vector::DE, 0);
    check_fault(
        "IDIV of i64::MIN by -1 (quotient overflow)",
        probes::try_divide_signed(-1, i64::MIN as u64, -1),
        Vector::DE,
        0,
    );
    let dividend = (6u128 << 64) | 12345;
    let expected_result = ((dividend / 7) as u64, (dividend % 7) as u64);
    let result = probes::try_divide_unsigned(6, 12345, 7).result;
    report!(
        result == Ok(expected_result),
        "DIV of 6*2^64+12345 by 7 fits and gives {expected_result:?} (got {})",
        outcome(&result)
    );
    let result = probes::try_divide_signed(-1, -100i64 as u64, 7).result;
    report!(
        result == Ok((-14, -2)),
        "IDIV of -100 by 7 gives (-14, -2) (got {})",
        outcome(&result)
    );
}

fn debug() {
    let _prefix = prefix("#DB");
    {
        let _prefix = prefix("single-step");
        write_dr6(dr6::ACTIVE_LOW);
        let (after, seen) = trap_exceptions(&[Vector::DB], single_step_two_nops);
        let dr6 = read_dr6();
        // Traps after NOP, NOP, PUSHFQ, AND, and the POPFQ that clears TF (TF set by a
        // POPFQ takes effect after the next instruction).
        report!(
            seen.len() == 5 && seen.iter().all(|e| e.vector == Vector::DB),
            "TF over NOP, NOP, PUSHFQ, AND, POPFQ raises five #DB (got {seen:x?})"
        );
        for (index, address) in after.iter().enumerate() {
            report!(
                seen.get(index).is_some_and(|e| e.rip == *address),
                "single-step trap {index} resumes after NOP {index} at {address:#x} (got {:x?})",
                seen.get(index).map(|e| e.rip)
            );
        }
        report!(dr6 & dr6::BS != 0, "single-step sets DR6.BS (DR6 {dr6:#x})");
        report!(
            dr6 & dr6::BREAKPOINTS == 0,
            "single-step sets none of DR6.B0-B3 (DR6 {dr6:#x})"
        );
    }
    {
        let _prefix = prefix("single-step over CPUID");
        write_dr6(dr6::ACTIVE_LOW);
        let (after, seen) = trap_exceptions(&[Vector::DB], probes::single_step_with_cpuid);
        let dr6 = read_dr6();
        report!(
            seen.len() == after.len() && seen.iter().all(|e| e.vector == Vector::DB),
            "TF over NOP, XOR, CPUID, PUSHFQ, AND, POPFQ raises six #DB (got {seen:x?})"
        );
        let names = ["NOP", "XOR", "CPUID", "PUSHFQ", "AND", "POPFQ"];
        for ((index, address), name) in after.iter().enumerate().zip(names) {
            report!(
                seen.get(index).is_some_and(|e| e.rip == *address),
                "single-step trap {index} is delivered after {name} at {address:#x} (got {:x?})",
                seen.get(index).map(|e| e.rip)
            );
        }
        report!(dr6 & dr6::BS != 0, "single-step sets DR6.BS (DR6 {dr6:#x})");
    }
    {
        let _prefix = prefix("data breakpoint");
        write_dr6(dr6::ACTIVE_LOW);
        let ((after, stored), seen) = trap_exceptions(&[Vector::DB], || probes::watched_store(PATTERN));
        let dr6 = read_dr6();
        report!(
            stored == PATTERN,
            "the watched store completed (read {stored:#x})"
        );
        known_failure(
            host().pvm,
            "this host's kvm_pvm never fires data breakpoints (reproduce-data-breakpoint)",
            || {
                check_single_trap("a store to the word DR0 watches", &seen, Vector::DB, after);
                report!(
                    dr6 & dr6::B0 != 0 && dr6 & dr6::BS == 0,
                    "the data breakpoint sets DR6.B0 and not BS (DR6 {dr6:#x})"
                );
            },
        );
    }
    {
        let _prefix = prefix("instruction breakpoint");
        write_dr6(dr6::ACTIVE_LOW);
        let probe = probes::try_instruction_breakpoint();
        let dr6 = read_dr6();
        check_fault("executing the instruction DR0 points at", probe, Vector::DB, 0);
        report!(
            dr6 & dr6::B0 != 0,
            "the instruction breakpoint sets DR6.B0 (DR6 {dr6:#x})"
        );
    }
    write_dr6(dr6::ACTIVE_LOW);
}

fn icebp() {
    let _prefix = prefix("#DB");
    let _inner = prefix("INT1");
    write_dr6(dr6::ACTIVE_LOW);
    let (after, seen) = trap_exceptions(&[Vector::DB], int1);
    let dr6 = read_dr6();
    write_dr6(dr6::ACTIVE_LOW);
    check_single_trap("INT1 (ICEBP)", &seen, Vector::DB, after);
    report!(
        dr6 & (dr6::BREAKPOINTS | dr6::BD | dr6::BS | dr6::BT) == 0,
        "INT1 sets none of DR6's B0-B3, BD, BS, BT (DR6 {dr6:#x})"
    );
}

fn breakpoint() {
    let _prefix = prefix("#BP");
    let (after, seen) = trap_exceptions(&[Vector::BP], int3);
    check_single_trap("INT3", &seen, Vector::BP, after);
    let (after, seen) = trap_exceptions(&[Vector::BP], || {
        let first = int3();
        let second = int3();
        (first, second)
    });
    report!(
        seen.len() == 2 && seen[0].rip == after.0 && seen[1].rip == after.1,
        "two INT3 in a row trap twice, each resuming after itself at {after:x?} (got {seen:x?})"
    );
}

fn software_interrupts() {
    let _prefix = prefix("INT n");
    let (after, seen) = trap_exceptions(&[Vector::DE], software_interrupt::<0>);
    check_single_trap("INT 0", &seen, Vector::DE, after);
    let (after, seen) = trap_exceptions(&[Vector::DB], software_interrupt::<1>);
    check_single_trap("INT 1 (CD 01)", &seen, Vector::DB, after);
    let (after, seen) = trap_exceptions(&[Vector::BP], software_interrupt::<3>);
    check_single_trap("INT 3 (CD 03)", &seen, Vector::BP, after);
    let (after, seen) = trap_exceptions(&[Vector::OF], software_interrupt::<4>);
    check_single_trap("INT 4", &seen, Vector::OF, after);
    let (after, seen) = trap_exceptions(&[Vector::UD], software_interrupt::<6>);
    check_single_trap("INT 6 (a software #UD is a trap)", &seen, Vector::UD, after);
    let (after, seen) = trap_exceptions(&[USER_VECTOR], software_interrupt::<32>);
    check_single_trap("INT 32", &seen, USER_VECTOR, after);
}

fn invalid_opcode() {
    let _prefix = prefix("#UD");
    check_fault("UD2", try_ud2(), Vector::UD, 0);
    check_fault("LOCK NOP", probes::try_locked_nop(), Vector::UD, 0);
    known_failure(
        host().tcg,
        "QEMU's TCG executes INTO in 64-bit mode instead of raising #UD (target/i386/tcg/decode-new.c.inc: X86_OP_ENTRY0(INTO) lacks chk(i64); reproduce-into-64-bit-tcg)",
        || {
            check_fault(
                "INTO (invalid in 64-bit mode)",
                probes::try_into_opcode(),
                Vector::UD,
                0,
            );
        },
    );
    check_fault("MOV from CR1", probes::try_read_cr1(), Vector::UD, 0);
}

fn general_protection() {
    let _prefix = prefix("#GP");
    {
        let _prefix = prefix("segments");
        let limit = probes::gdt_limit();
        let first_beyond = (limit + 1).next_multiple_of(8);
        report_info!("GDT limit {limit:#x}");
        check_fault(
            &format!("MOV FS, {first_beyond:#x} (first selector beyond the GDT limit)"),
            probes::try_load_fs(first_beyond),
            Vector::GP,
            u64::from(first_beyond),
        );
        check_fault(
            "MOV FS, 0x1000 (beyond the GDT limit)",
            probes::try_load_fs(0x1000),
            Vector::GP,
            0x1000,
        );
        check_fault(
            "MOV FS, 0x1003 (RPL is not part of the error code)",
            probes::try_load_fs(0x1003),
            Vector::GP,
            0x1000,
        );
        check_fault(
            "MOV FS, the TSS (a system segment)",
            probes::try_load_fs(selector::TSS),
            Vector::GP,
            u64::from(selector::TSS),
        );
        check_no_fault("MOV FS, 0 (null)", probes::try_load_fs(0));
        check_no_fault("MOV FS, 3 (null with RPL 3)", probes::try_load_fs(3));
        check_no_fault("MOV FS, 0x10 (kernel data)", probes::try_load_fs(0x10));
        check_no_fault("MOV FS, 0x08 (readable code)", probes::try_load_fs(0x08));
        check_no_fault(
            "MOV SS, 0 at CPL 0 (null SS is legal in 64-bit mode)",
            probes::try_load_ss(0),
        );
        known_failure(
            host().tcg,
            "QEMU's TCG loads a null SS selector whose RPL differs from CPL 0 without #GP (target/i386/tcg/seg_helper.c helper_load_seg checks a null SS's RPL only at CPL 3; reproduce-null-ss-rpl-tcg)",
            || {
                check_fault(
                    "MOV SS, 3 at CPL 0 (null with RPL != CPL)",
                    probes::try_load_ss(3),
                    Vector::GP,
                    0,
                );
            },
        );
        check_fault(
            "MOV SS, 0x13 (RPL 3 != CPL 0)",
            probes::try_load_ss(0x13),
            Vector::GP,
            0x10,
        );
        check_fault(
            "MOV SS, user data (DPL 3 != CPL 0)",
            probes::try_load_ss(selector::USER_DATA),
            Vector::GP,
            u64::from(selector::USER_DATA & !3),
        );
        check_fault(
            "MOV SS, 0x08 (code is not writable data)",
            probes::try_load_ss(0x08),
            Vector::GP,
            0x08,
        );
        check_fault(
            "MOV SS, the TSS",
            probes::try_load_ss(selector::TSS),
            Vector::GP,
            u64::from(selector::TSS),
        );
    }
    {
        let _prefix = prefix("control registers");
        let cr0 = read_cr0();
        let host = host();
        for (value, what, known, reason) in [
            (
                cr0 | (1 << 63),
                "setting reserved CR0 bit 63",
                host.tcg || host.pvm,
                "QEMU's TCG (helper_write_crN, target/i386/tcg/system/misc_helper.c) and this host's kvm_pvm drop CR0 bits 63:32 instead of raising #GP(0) (reproduce-cr0-high-bit)",
            ),
            (
                (cr0 | Cr0Flags::NOT_WRITE_THROUGH.bits()) & !Cr0Flags::CACHE_DISABLE.bits(),
                "setting CR0.NW with CD clear",
                host.tcg,
                "QEMU's TCG accepts CR0.NW=1 with CD=0 (helper_write_crN checks no CR0 bit; reproduce-cr0-nw-tcg)",
            ),
        ] {
            let result = try_write_cr0(value);
            let after = read_cr0();
            if after != cr0 {
                let _ = try_write_cr0(cr0);
            }
            known_failure(known, reason, || {
                report!(
                    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0) && after == cr0,
                    "{what} raises #GP(0) and leaves CR0 {cr0:#x} (got {}, CR0 {after:#x})",
                    outcome(&result)
                )
            });
        }
    }
    {
        let _prefix = prefix("non-canonical");
        check_fault(
            &format!("reading non-canonical {NON_CANONICAL:#x}"),
            probes::try_load(NON_CANONICAL),
            Vector::GP,
            0,
        );
        check_fault(
            &format!("reading non-canonical {NON_CANONICAL_LOW:#x}"),
            probes::try_load(NON_CANONICAL_LOW),
            Vector::GP,
            0,
        );
        // Only #PF loads CR2 (SDM Vol. 3, 6.15, interrupt 13).
        const MARKER: u64 = 0xdeca_fbad_0000;
        write_cr2(MARKER);
        let _ = probes::try_load(NON_CANONICAL);
        let cr2 = read_cr2();
        known_failure(
            host().tcg,
            "QEMU's TCG loads CR2 with the address of a non-canonical access's #GP (target/i386/tcg/system/excp_helper.c x86_cpu_tlb_fill; reproduce-general-protection-cr2-tcg)",
            || {
                report!(
                    cr2 == MARKER,
                    "a #GP for a non-canonical read leaves CR2 ({MARKER:#x}) alone (got {cr2:#x})"
                );
            },
        );
    }
}

/// Sets reserved CR4 bit `bit`: #GP(0), and CR4 keeps its value.
fn check_cr4_reserved_bit(bit: u32) {
    let cr4 = read_cr4();
    let result = try_write_cr4(cr4 | (1 << bit));
    let after = read_cr4();
    if after != cr4 {
        let _ = try_write_cr4(cr4);
    }
    let known = bit >= 32 && host().pvm;
    known_failure(
        known,
        "this host's kvm_pvm drops CR4 bits 63:32 instead of raising #GP(0) (reproduce-cr4-high-bits)",
        || {
            report!(
                matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0) && after == cr4,
                "setting reserved CR4 bit {bit} raises #GP(0) and leaves CR4 {cr4:#x} (got {}, CR4 {after:#x})",
                outcome(&result)
            )
        },
    );
}

fn stack_segment() {
    let _prefix = prefix("#SS");
    let reason = "QEMU's TCG raises #GP(0), not #SS(0), for a non-canonical RBP-based access (target/i386/tcg/system/excp_helper.c get_physical_address; reproduce-noncanonical-stack-tcg)";
    known_failure(host().tcg, reason, stack_segment_checks);
}

fn stack_segment_checks() {
    check_fault(
        &format!("reading non-canonical {NON_CANONICAL:#x} through RBP"),
        probes::try_stack_read(NON_CANONICAL),
        Vector::SS,
        0,
    );
    check_fault(
        &format!("reading non-canonical {NON_CANONICAL_LOW:#x} through RBP"),
        probes::try_stack_read(NON_CANONICAL_LOW),
        Vector::SS,
        0,
    );
}

/// Checks a #PF outcome: the error code and the faulting address in CR2.
fn check_page_fault<T: Debug>(what: &str, result: Result<T, Exception>, error_code: u64, address: u64) {
    check_page_fault_known(what, result, error_code, address, false, "");
}

/// As [`check_page_fault`], with a known defect of the host in force (`known`, `reason`) on
/// the error code's check only: CR2 is checked as a plain check.
fn check_page_fault_known<T: Debug>(
    what: &str,
    result: Result<T, Exception>,
    error_code: u64,
    address: u64,
    known: bool,
    reason: &str,
) {
    let got = outcome(&result);
    known_failure(known, reason, || {
        report!(
            matches!(result, Err(e) if e.vector == Vector::PF && e.error_code == error_code),
            "{what} raises #PF({error_code:#x}) (got {got})"
        )
    });
    report!(
        matches!(result, Err(e) if e.vector == Vector::PF && e.address == address),
        "{what}: CR2 is the faulting address {address:#x} (got {got})"
    );
}

fn page_fault() {
    let _prefix = prefix("#PF");
    let no_execute = Feature::Nx.supported();
    report_info!(
        "NX {}",
        if no_execute {
            "supported, EFER.NXE set"
        } else {
            "not supported"
        }
    );
    let page = TestPage::new();
    let base = page.address();
    {
        let _prefix = prefix("not present");
        let written = page.try_write(8, PATTERN);
        report!(
            written.is_ok(),
            "writing the mapped page works (got {})",
            outcome(&written)
        );
        page.unmap();
        check_page_fault("reading the unmapped page", page.try_read(8), 0, base + 8);
        check_page_fault(
            "writing the unmapped page",
            page.try_write(0x10, 1),
            WRITE,
            base + 0x10,
        );
        // The fix-up a kernel does: map the page, and the access succeeds.
        page.map(Protection::READ_WRITE);
        let read = page.try_read(8);
        report!(
            read == Ok(PATTERN),
            "after mapping the page back, reading it returns the word written before ({PATTERN:#x}, got {})",
            outcome(&read)
        );
        let written = page.try_write(0x10, 2);
        report!(
            written.is_ok(),
            "after mapping the page back, writing it works (got {})",
            outcome(&written)
        );
    }
    {
        let _prefix = prefix("read-only");
        page.protect(Protection::READ_ONLY);
        let read = page.try_read(8);
        report!(
            read == Ok(PATTERN),
            "reading the read-only page works (got {})",
            outcome(&read)
        );
        check_page_fault(
            "writing the read-only page with CR0.WP set",
            page.try_write(8, 0),
            PRESENT | WRITE,
            base + 8,
        );
        let read = page.try_read(8);
        report!(
            read == Ok(PATTERN),
            "the faulting write changed nothing (got {})",
            outcome(&read)
        );
        let cr0 = read_cr0();
        report!(
            cr0 & Cr0Flags::WRITE_PROTECT.bits() != 0,
            "the runtime runs with CR0.WP set (CR0 {cr0:#x})"
        );
        let cleared = try_write_cr0(cr0 & !Cr0Flags::WRITE_PROTECT.bits());
        let written = page.try_write(8, !PATTERN);
        let restored = try_write_cr0(cr0);
        report!(
            cleared.is_ok() && restored.is_ok() && read_cr0() == cr0,
            "clearing and restoring CR0.WP works (got {}, {})",
            outcome(&cleared),
            outcome(&restored)
        );
        let read = page.try_read(8);
        report!(
            written.is_ok() && read == Ok(!PATTERN),
            "with CR0.WP clear, a supervisor write to the read-only page succeeds (got {}, read {})",
            outcome(&written),
            outcome(&read)
        );
        check_page_fault(
            "writing the read-only page with CR0.WP set again",
            page.try_write(8, 0),
            PRESENT | WRITE,
            base + 8,
        );
        page.protect(Protection::READ_WRITE);
    }
    {
        let _prefix = prefix("fetch");
        page.map(Protection::READ_EXECUTE);
        let called = try_call_return(&page, 0);
        report!(
            called.is_ok(),
            "calling a RET in an executable page works (got {})",
            outcome(&called)
        );
        page.unmap();
        let fetch = if no_execute { FETCH } else { 0 };
        let result = try_call_return(&page, 0);
        check_page_fault("fetching from the unmapped page", result, fetch, base);
        report!(
            matches!(result, Err(e) if e.rip == base),
            "the fetch fault's RIP is the call target {base:#x} (got {})",
            outcome(&result)
        );
        if no_execute {
            page.map(Protection::READ_WRITE);
            check_page_fault(
                "fetching from a present no-execute page",
                try_call_return(&page, 0),
                PRESENT | FETCH,
                base,
            );
        } else {
            report_skip!("fetching from a no-execute page: the CPU has no NX");
        }
        page.map(Protection::READ_EXECUTE);
        let called = try_call_return(&page, 0);
        report!(
            called.is_ok(),
            "after making the page executable again the call works (got {})",
            outcome(&called)
        );
    }
    {
        let _prefix = prefix("reserved bit");
        let bits = probes::physical_address_bits();
        if bits <= 51 {
            page.map(Protection::READ_WRITE);
            probes::set_reserved_address_bit(&page, bits);
            let reason = "QEMU's TCG leaves P clear in the error code of a reserved-bit #PF (reproduce-reserved-bit-error-code-tcg)";
            let tcg = host().tcg;
            check_page_fault_known(
                &format!("reading through a PTE with address bit {bits} (beyond MAXPHYADDR) set"),
                page.try_read(8),
                PRESENT | RESERVED,
                base + 8,
                tcg,
                reason,
            );
            check_page_fault_known(
                &format!("writing through a PTE with address bit {bits} set"),
                page.try_write(8, 0),
                PRESENT | WRITE | RESERVED,
                base + 8,
                tcg,
                reason,
            );
            if no_execute {
                check_page_fault_known(
                    &format!("fetching through a PTE with address bit {bits} set"),
                    try_call_return(&page, 0),
                    PRESENT | RESERVED | FETCH,
                    base,
                    tcg,
                    reason,
                );
            }
            page.map(Protection::READ_WRITE);
            let read = page.try_read(8);
            report!(
                read == Ok(!PATTERN),
                "after rewriting the PTE, reading the page works (got {})",
                outcome(&read)
            );
        } else {
            report_skip!("reserved address bits: MAXPHYADDR is {bits}, no address bit is reserved");
        }
    }
}

fn device_not_available() {
    let _prefix = prefix("#NM");
    let cr0 = read_cr0();
    let restore = || {
        let restored = try_write_cr0(cr0);
        restored.is_ok() && read_cr0() == cr0
    };
    report!(
        cr0 & (Cr0Flags::TASK_SWITCHED.bits() | Cr0Flags::EMULATE_COPROCESSOR.bits()) == 0,
        "the runtime runs with CR0.TS and CR0.EM clear (CR0 {cr0:#x})"
    );
    check_no_fault("FNINIT with CR0.TS clear", probes::try_fninit());

    let set = try_write_cr0(cr0 | Cr0Flags::TASK_SWITCHED.bits());
    let probe = probes::try_fninit();
    report!(
        set.is_ok() && restore(),
        "setting and clearing CR0.TS works (got {})",
        outcome(&set)
    );
    check_fault("FNINIT with CR0.TS set", probe, Vector::NM, 0);
    check_no_fault("FNINIT after clearing CR0.TS", probes::try_fninit());

    let set = try_write_cr0((cr0 | Cr0Flags::EMULATE_COPROCESSOR.bits()) & !Cr0Flags::TASK_SWITCHED.bits());
    let probe = probes::try_fninit();
    report!(
        set.is_ok() && restore(),
        "setting and clearing CR0.EM works (got {})",
        outcome(&set)
    );
    check_fault("FNINIT with CR0.EM set", probe, Vector::NM, 0);

    report!(
        read_cr0() == cr0,
        "CR0 is back to {cr0:#x} (got {:#x})",
        read_cr0()
    );
}

/// WAIT with CR0.TS: #NM only when CR0.MP is set too.
fn wait_device_not_available() {
    let _prefix = prefix("#NM");
    let cr0 = read_cr0();
    let restore = || {
        let restored = try_write_cr0(cr0);
        restored.is_ok() && read_cr0() == cr0
    };
    let set = try_write_cr0(cr0 | Cr0Flags::TASK_SWITCHED.bits() | Cr0Flags::MONITOR_COPROCESSOR.bits());
    let probe = probes::try_fwait();
    report!(
        set.is_ok() && restore(),
        "setting CR0.TS and CR0.MP works (got {})",
        outcome(&set)
    );
    check_fault("WAIT with CR0.TS and CR0.MP set", probe, Vector::NM, 0);

    let set = try_write_cr0((cr0 | Cr0Flags::TASK_SWITCHED.bits()) & !Cr0Flags::MONITOR_COPROCESSOR.bits());
    let probe = probes::try_fwait();
    report!(
        set.is_ok() && restore(),
        "setting CR0.TS with CR0.MP clear works (got {})",
        outcome(&set)
    );
    check_no_fault("WAIT with CR0.TS set but CR0.MP clear", probe);
    report!(
        read_cr0() == cr0,
        "CR0 is back to {cr0:#x} (got {:#x})",
        read_cr0()
    );
}

/// Two words to read from, misaligned, at CPL 3 (the image is user-accessible).
static ALIGNMENT_TARGET: [u64; 2] = [0x0123_4567_89ab_cdef; 2];

/// Exceptions from ring 3: #AC (CR0.AM with RFLAGS.AC, a misaligned load) and the USER bit
/// of #PF.
fn user_mode() {
    {
        let _prefix = prefix("#AC");
        let misaligned = ALIGNMENT_TARGET.as_ptr() as u64 + 1;
        let cr0 = read_cr0();
        let without = run_in_user_mode(|| read_with_alignment_check(misaligned));
        let reason = "this host's kvm_pvm raises #AC with the guest's CR0.AM clear (reproduce-alignment-check-without-cr0-am)";
        known_failure(host().pvm, reason, || {
            report!(
                without.is_ok(),
                "with CR0.AM clear, a misaligned load with RFLAGS.AC at CPL 3 works (got {without:x?})"
            )
        });
        let set = try_write_cr0(cr0 | Cr0Flags::ALIGNMENT_MASK.bits());
        let with = run_in_user_mode(|| read_with_alignment_check(misaligned));
        let restored = try_write_cr0(cr0);
        known_failure(
            host().tcg,
            "QEMU's x86 TCG implements no alignment checking (reproduce-tcg-alignment-check)",
            || {
                report!(
                    set.is_ok()
                        && restored.is_ok()
                        && matches!(with, Err(e) if e.vector == Vector::AC && e.error_code == 0),
                    "with CR0.AM set, a misaligned load with RFLAGS.AC at CPL 3 raises #AC(0) (got {with:x?})"
                )
            },
        );
        let aligned = run_in_user_mode(|| read_with_alignment_check(ALIGNMENT_TARGET.as_ptr() as u64));
        report!(
            matches!(aligned, Ok(value) if value == ALIGNMENT_TARGET[0]),
            "an aligned load with RFLAGS.AC at CPL 3 raises nothing and reads {:#x} (got {aligned:x?})",
            ALIGNMENT_TARGET[0]
        );
    }
    {
        let _prefix = prefix("#PF");
        let _user = prefix("user");
        let page = TestPage::new();
        let target = page.address() + 8;
        let supervisor = run_in_user_mode(|| read(target));
        report!(
            matches!(supervisor, Err(e) if e.vector == Vector::PF && e.error_code & (PRESENT | USER | WRITE | FETCH) == PRESENT | USER && e.address == page.address() + 8),
            "a CPL-3 read of a supervisor page raises #PF with P and U set (got {supervisor:x?})"
        );
        page.map(Protection {
            write: true,
            execute: false,
            user: true,
        });
        let allowed = run_in_user_mode(|| read(target));
        report!(
            allowed.is_ok(),
            "a CPL-3 read of a user page works (got {allowed:x?})"
        );
        page.unmap();
        let unmapped = run_in_user_mode(|| read(target));
        report!(
            matches!(unmapped, Err(e) if e.vector == Vector::PF && e.error_code & (PRESENT | USER) == USER),
            "a CPL-3 read of an unmapped page raises #PF with U set and P clear (got {unmapped:x?})"
        );
    }
}
