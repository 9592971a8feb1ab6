//! arm-selftest: the aarch64 runtime itself, in kvm-unit-tests' arm selftest modes:
//! `setup smp=N mem=M` (the device tree agrees with QEMU's -smp and -m; heap, pages),
//! `vectors-kernel` and `vectors-user` (exceptions at EL1 and from EL0, with ESR/ELR/FAR
//! checked, and an exception handler that skips the faulting instruction), `smp` (every CPU
//! runs and has the device tree's MPIDR), and `migration` (the guest goes on across live
//! migrations, group `migration`). The test runs at EL2 (VHE) where the machine enters there
//! (`virtualization=on`); the argument `el2` makes that an expectation (SKIP where the CPU has
//! no VHE).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vmunit::arch::device_tree::platform;
use vmunit::arch::exceptions::{FaultStatus, PSTATE_CHECKED, Registers};
use vmunit::arch::instructions::{
    CAPTURE_SVC_IMMEDIATE, RaisingInstruction, current_el, load, supervisor_call, try_breakpoint, try_load,
    try_read, try_supervisor_call, try_undefined_instruction, try_with_registers,
    try_with_registers_in_user_mode, undefined_instruction, undefined_instruction_resumable,
};
use vmunit::arch::mmu::UnbackedPage;
use vmunit::arch::registers::{
    HCR_EL2, ID_AA64DFR0_EL1, ID_AA64ISAR0_EL1, ID_AA64ISAR1_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1,
    ID_AA64MMFR2_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, MIDR_EL1, MPIDR_EL1, Readable, clidr_el1, ctr_el0,
    id_aa64isar2_el1, id_aa64zfr0_el1,
};
use vmunit::arch::smp::{
    CpuSet, MAX_CPUS, STACK_SIZE, cpu_count, cpu_index, current_mpidr, mpidr_of, on_cpu_mask,
    on_cpu_mask_async, on_cpus,
};
use vmunit::arch::{
    El2Boot, Exception, ExceptionClass, ExceptionContext, HCR_VHE, install_exception_handler, mmu,
    run_in_user_mode,
};
use vmunit::catch::Attempt;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Migration, args, prefix, report, report_info, report_skip};

vmunit::main!(main, el2);

fn main(arguments: &[&str]) {
    if arguments.contains(&"el2") {
        check_el2();
    }
    match arguments.first().copied() {
        Some("setup") => setup(arguments),
        Some("vectors-kernel") => vectors_kernel(),
        Some("vectors-user") => vectors_user(),
        Some("smp") => smp(),
        Some("migration") => migration(),
        Some("migration-continuous") => continuous_migration(),
        other => {
            report!(false, "a known mode was given (got {other:?})");
        }
    }
}

/// A translation fault at level 3: the page's descriptor is invalid.
const UNMAPPED_PAGE: Option<FaultStatus> = Some(FaultStatus::Translation { level: 3 });

/// Whether `exception` is a permission fault (at any level).
fn permission_fault(exception: &Exception) -> bool {
    matches!(exception.fault_status(), Some(FaultStatus::Permission { .. }))
}

/// The kernel's exception level as the boot chose it: EL2 with VHE, else EL1.
fn expected_el() -> u64 {
    if El2Boot::get() == El2Boot::Vhe { 2 } else { 1 }
}

/// The `el2` entries: the boot kept EL2 with VHE (SKIP where the CPU has none), and HCR_EL2
/// has E2H and TGE.
fn check_el2() {
    let _prefix = prefix("el2");
    let boot = El2Boot::get();
    match boot.reason_not_at_el2() {
        None => {
            report!(
                current_el() == 2,
                "the runtime runs at EL2 (CurrentEL.EL {})",
                current_el()
            );
            let hcr = HCR_EL2.get();
            report!(
                hcr & HCR_VHE == HCR_VHE,
                "HCR_EL2 has E2H, TGE and RW set (got {hcr:#x})"
            );
        }
        Some(reason) if boot == El2Boot::DroppedWithoutVhe => {
            report_skip!("the test asked for EL2 but runs at EL1: {reason}");
        }
        Some(reason) => {
            report!(false, "the kernel runs at EL2 ({boot:?}: {reason})");
        }
    }
}

/// The identification registers read safely through `vmunit::arch::registers` and agree with
/// the level the kernel runs at.
fn check_identification() {
    report_info!(
        "MIDR_EL1 {:#x} MPIDR_EL1 {:#x} CTR_EL0 {:#x} CLIDR_EL1 {:#x}",
        MIDR_EL1.get(),
        MPIDR_EL1.get(),
        ctr_el0(),
        clidr_el1()
    );
    report_info!(
        "ID_AA64PFR0/1 {:#x} {:#x} DFR0 {:#x} ISAR0/1/2 {:#x} {:#x} {:#x} MMFR0/1/2 {:#x} {:#x} {:#x} ZFR0 {:#x}",
        ID_AA64PFR0_EL1.get(),
        ID_AA64PFR1_EL1.get(),
        ID_AA64DFR0_EL1.get(),
        ID_AA64ISAR0_EL1.get(),
        ID_AA64ISAR1_EL1.get(),
        id_aa64isar2_el1(),
        ID_AA64MMFR0_EL1.get(),
        ID_AA64MMFR1_EL1.get(),
        ID_AA64MMFR2_EL1.get(),
        id_aa64zfr0_el1()
    );
    let pfr0 = ID_AA64PFR0_EL1.get();
    let (el0, el1, el2) = (pfr0 & 0xf, (pfr0 >> 4) & 0xf, (pfr0 >> 8) & 0xf);
    report!(
        el0 != 0 && el1 != 0,
        "ID_AA64PFR0_EL1.EL0 and EL1 say AArch64 is implemented there (EL0 {el0}, EL1 {el1})"
    );
    if current_el() == 2 {
        let vh = ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VH);
        report!(
            el2 != 0 && vh != 0,
            "at EL2: ID_AA64PFR0_EL1.EL2 ({el2}) and ID_AA64MMFR1_EL1.VH ({vh}) are implemented"
        );
    }
    report!(
        ctr_el0() & (1 << 31) != 0,
        "CTR_EL0 bit 31 (RES1) is set ({:#x})",
        ctr_el0()
    );
    report!(
        MPIDR_EL1.get() & (1 << 31) != 0,
        "MPIDR_EL1 bit 31 (RES1) is set ({:#x})",
        MPIDR_EL1.get()
    );
}

fn setup(arguments: &[&str]) {
    let _prefix = prefix("setup");
    report!(
        current_el() == expected_el(),
        "the runtime runs at EL{} (CurrentEL.EL {}; boot {:?})",
        expected_el(),
        current_el(),
        El2Boot::get()
    );
    check_identification();
    let platform = platform();
    match args::value(arguments, "mem").and_then(|value| value.parse::<u64>().ok()) {
        Some(mebibytes) => report!(
            platform.memory_size() == mebibytes << 20,
            "the DTB's memory is mem={mebibytes} MiB (got {} bytes in {} ranges)",
            platform.memory_size(),
            platform.memory().len()
        ),
        None => report!(false, "a mem=<MiB> argument was given"),
    };
    match args::value(arguments, "smp").and_then(|value| value.parse::<usize>().ok()) {
        Some(cpus) => report!(
            platform.cpus_listed == cpus && cpu_count() == cpus.min(MAX_CPUS),
            "the DTB lists smp={cpus} CPUs (got {})",
            platform.cpus_listed
        ),
        None => report!(false, "an smp=<count> argument was given"),
    };
    report!(
        current_mpidr() == mpidr_of(0),
        "the boot CPU is the DTB's first CPU (MPIDR {:#x}, DTB {:#x})",
        current_mpidr(),
        mpidr_of(0)
    );
    // The runtime needs the DTB's UART to print at all; what can fail is that it is a PL011.
    let identification = vmunit::arch::console::uart_identification();
    report!(
        matches!(identification, Some((peripheral, cell))
            if peripheral & 0xf_ffff == 0x4_1011 && cell == 0xb105_f00d),
        "the DTB's UART at {:x?} identifies as a PL011: part 0x011, designer 0x41, PrimeCell ID \
         0xb105f00d (got {identification:x?})",
        platform.uart
    );
    report!(platform.psci.is_some(), "the DTB names a PSCI conduit");
    let accel = vmunit::env("ACCEL");
    report!(
        matches!(accel, Some("tcg" | "kvm")),
        "the runner's guest environment arrives through fw_cfg (ACCEL={accel:?})"
    );

    let numbers: alloc::vec::Vec<u64> = (0..10_000).collect();
    report!(
        numbers.iter().sum::<u64>() == 49_995_000,
        "a 10000-element Vec holds what was pushed"
    );

    let page = TestPage::new();
    report!(
        mmu::translate(page.address()) == Some(page.frame()),
        "a TestPage translates to its frame"
    );
    report!(
        page.try_write(8, 0x1234_5678).is_ok() && page.try_read(8) == Ok(0x1234_5678),
        "a TestPage reads back what was written"
    );
    page.protect(Protection::READ_ONLY);
    let write = page.try_write(16, 1);
    report!(
        matches!(write, Err(exception) if exception.class == ExceptionClass::DataAbort
            && exception.far == page.address() + 16
            && permission_fault(&exception)
            && exception.is_write()),
        "a write to a read-only page is a permission-fault write data abort at its address ({write:?})"
    );
    page.unmap();
    let read = page.try_read(0);
    report!(
        matches!(read, Err(exception) if exception.class == ExceptionClass::DataAbort
            && exception.far == page.address()
            && exception.fault_status() == UNMAPPED_PAGE),
        "a read of an unmapped page is a level-3 translation fault at its address ({read:?})"
    );
    report!(
        mmu::translate(page.address()).is_none(),
        "an unmapped page does not translate"
    );
    // RAM is split to pages at boot, so that no block holding memory in use is split later
    // (that would need break-before-make on live memory).
    let mut blocks = 0;
    let mut first_block = None;
    for &(start, end) in platform.memory() {
        for address in [start, start + (end - start) / 2, end - 4096] {
            if let Some((descriptor, level)) = mmu::descriptor(address)
                && level != 3
            {
                blocks += 1;
                first_block.get_or_insert((address, level, descriptor));
            }
        }
    }
    report!(
        blocks == 0,
        "RAM (first, middle, last page of each range) is mapped by 4 KiB pages ({blocks} by blocks, first \
         {first_block:x?})"
    );
    let guards: alloc::vec::Vec<u64> = vmunit::arch::exceptions::stack_guard_pages().take(2).collect();
    for (guard, which) in guards.iter().zip(["stack (SP_EL0)", "exception stack (SP_EL1)"]) {
        let read = try_read(*guard);
        report!(
            matches!(read, Err(exception) if exception.class == ExceptionClass::DataAbort
                && exception.far == *guard
                && exception.fault_status() == UNMAPPED_PAGE),
            "the guard page below CPU 0's {which} at {guard:#x} is unmapped: level-3 translation fault \
             (got {read:?})"
        );
        report!(
            mmu::translate(*guard + 4096).is_some(),
            "the page above that guard is mapped"
        );
    }
    let null = try_read(0);
    report!(
        matches!(null, Err(exception) if exception.class == ExceptionClass::DataAbort && exception.far == 0),
        "a null pointer read is a data abort at address 0 (got {null:?})"
    );
}

fn vectors_kernel() {
    let _prefix = prefix("vectors-kernel");
    let Attempt { result, address } = try_undefined_instruction();
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::Unknown
            && exception.elr == address && !exception.from_user),
        "UDF raises an EC 0x00 exception with ELR at the UDF ({address:#x}; got {result:?})"
    );
    let Attempt { result, address } = try_supervisor_call::<0x123>();
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::SupervisorCall
            && exception.immediate() == 0x123 && exception.elr == address),
        "SVC #0x123 raises SVC64 with its immediate and ELR after it ({address:#x}; got {result:?})"
    );
    let Attempt { result, address } = try_breakpoint::<0x42>();
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::BreakpointInstruction
            && exception.immediate() == 0x42 && exception.elr == address),
        "BRK #0x42 raises BRK64 with its immediate and ELR at the BRK ({address:#x}; got {result:?})"
    );
    let page = TestPage::new();
    page.unmap();
    let Attempt { result, address } = try_load(page.address() + 0x18);
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::DataAbort
            && exception.elr == address && exception.far == page.address() + 0x18
            && exception.fault_status() == UNMAPPED_PAGE),
        "a load from an unmapped page is a data abort with ELR at the load and FAR at the address ({address:#x}; got {result:?})"
    );
    check_registers();
    let inner = core::cell::Cell::new(None);
    let Attempt {
        result: outer,
        address,
    } = vmunit::arch::instructions::try_undefined_instruction_after(|| {
        inner.set(Some(try_undefined_instruction()));
    });
    let inner = inner.get();
    report!(
        matches!(inner, Some(Attempt { result: Err(exception), address })
            if exception.class == ExceptionClass::Unknown && exception.elr == address),
        "nested catch_exception: the inner catch returns its UDF's exception ({inner:?})"
    );
    report!(
        matches!(outer, Err(exception) if exception.class == ExceptionClass::Unknown
            && exception.elr == address),
        "nested catch_exception: the outer catch then catches its own UDF at {address:#x} ({outer:?})"
    );
    check_exception_handler();
}

/// What [`skip_undefined`] saw: calls, then ESR, ELR and x0 of the last call.
static HANDLED: AtomicUsize = AtomicUsize::new(0);
static HANDLED_ESR: AtomicU64 = AtomicU64::new(0);
static HANDLED_ELR: AtomicU64 = AtomicU64::new(0);
static HANDLED_X0: AtomicU64 = AtomicU64::new(0);

/// kvm-unit-tests' UNDEF handler: notes what it saw, adds one to x0 and skips the UDF (at the
/// kernel's level or at EL0).
#[allow(unsafe_code)]
fn skip_undefined(context: &mut ExceptionContext<'_>) {
    let registers = context.registers();
    HANDLED.fetch_add(1, Ordering::Relaxed);
    HANDLED_ESR.store(context.exception().esr, Ordering::Relaxed);
    HANDLED_ELR.store(registers.pc, Ordering::Relaxed);
    HANDLED_X0.store(registers.x[0], Ordering::Relaxed);
    HANDLED_FROM_USER.store(context.exception().from_user, Ordering::Relaxed);
    // SAFETY: the handler is installed only around `undefined_instruction_resumable`, whose
    // assembly takes x0 as an output of the UDF.
    unsafe { context.set_x(0, registers.x[0] + 1) };
    // SAFETY: and that assembly continues after its UDF.
    unsafe { context.skip_instruction() };
}

/// kvm-unit-tests' install_exception_handler(EL1H_SYNC, ESR_EL1_EC_UNKNOWN, ...): a handler
/// sees the saved frame and returns past the UDF with a changed x0; removed, the UDF is caught
/// as before.
fn check_exception_handler() {
    const VALUE: u64 = 0x5eed_0000_1234;
    let previous = install_exception_handler(ExceptionClass::Unknown, Some(skip_undefined));
    report!(previous.is_none(), "no handler was installed for EC 0x00 before");
    let (x0, address) = undefined_instruction_resumable(VALUE);
    install_exception_handler(ExceptionClass::Unknown, None);
    let calls = HANDLED.load(Ordering::Relaxed);
    let esr = HANDLED_ESR.load(Ordering::Relaxed);
    let elr = HANDLED_ELR.load(Ordering::Relaxed);
    let seen = HANDLED_X0.load(Ordering::Relaxed);
    report!(
        calls == 1 && ExceptionClass::of(esr) == ExceptionClass::Unknown,
        "handler: the UDF went to the EC 0x00 handler once (calls {calls}, ESR {esr:#x})"
    );
    report!(
        elr == address && seen == VALUE,
        "handler: its frame has ELR at the UDF and the x0 before it (ELR {elr:#x}, UDF {address:#x}, x0 \
         {seen:#x})"
    );
    report!(
        x0 == VALUE + 1,
        "handler: execution resumed after the UDF with the handler's x0 ({x0:#x}, expected {:#x})",
        VALUE + 1
    );
    let Attempt { result, address } = try_undefined_instruction();
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::Unknown && exception.elr == address)
            && HANDLED.load(Ordering::Relaxed) == 1,
        "handler: once removed, a UDF is caught again and the handler is not called ({result:?})"
    );
}

/// The first register where `seen` differs from `expected`, by name, with both values.
fn register_difference(expected: &Registers, seen: &Registers) -> Option<(String, u64, u64)> {
    let general = (0..31).map(|index| (format!("x{index}"), expected.x[index], seen.x[index]));
    let special = [
        ("SP".into(), expected.sp, seen.sp),
        ("PC".into(), expected.pc, seen.pc),
        ("PSTATE".into(), expected.pstate, seen.pstate & PSTATE_CHECKED),
    ];
    general
        .chain(special)
        .find(|(_, expected, seen)| expected != seen)
}

/// kvm-unit-tests' check_und, check_svc and check_pabt: every register a handler sees (x0-x30,
/// SP, PC, PSTATE's NZCV, DAIF and mode) is what the code had just before the instruction,
/// with the PC the architecture defines (and x30 from BLR for the instruction abort).
fn check_registers() {
    let capture = try_with_registers(RaisingInstruction::ReadEl3SystemRegister);
    let before = capture.before;
    report!(
        matches!(capture.result, Err(exception) if exception.class == ExceptionClass::Unknown
            && exception.elr == before.pc),
        "und: MRS of SCTLR_EL3 at EL{} raises EC 0x00 with ELR at the MRS ({:#x}; got {:?})",
        current_el(),
        before.pc,
        capture.result
    );
    let difference = register_difference(&before, &capture.handler);
    report!(
        capture.result.is_err() && difference.is_none(),
        "und: the handler sees x0-x30, SP, PC and PSTATE as they were (first difference: {difference:x?})"
    );

    let capture = try_with_registers(RaisingInstruction::SupervisorCall);
    let mut expected = capture.before;
    expected.pc += 4;
    report!(
        matches!(capture.result, Err(exception) if exception.class == ExceptionClass::SupervisorCall
            && exception.immediate() == CAPTURE_SVC_IMMEDIATE && exception.elr == expected.pc),
        "svc: SVC #{CAPTURE_SVC_IMMEDIATE} raises SVC64 with its immediate, ELR after it ({:#x}; got {:?})",
        expected.pc,
        capture.result
    );
    let difference = register_difference(&expected, &capture.handler);
    report!(
        capture.result.is_err() && difference.is_none(),
        "svc: the handler sees x0-x30, SP, PSTATE as they were, PC after the SVC (first difference: \
         {difference:x?})"
    );

    let Some(page) = UnbackedPage::new() else {
        report_skip!("pabt: no physical page past RAM is free of devices");
        return;
    };
    let capture = try_with_registers(RaisingInstruction::BranchToUnbacked(&page));
    let mut expected = capture.before;
    expected.x[30] = expected.pc + 4;
    expected.pc = expected.x[9];
    report!(
        matches!(capture.result, Err(exception) if exception.class == ExceptionClass::InstructionAbort
            && exception.elr == page.address() && exception.far == page.address()
            && exception.fault_status() == Some(FaultStatus::ExternalAbort)),
        "pabt: a fetch from {:#x} (physical {:#x}, past RAM) is an external-abort instruction abort \
         with ELR and FAR there (got {:?})",
        page.address(),
        page.physical(),
        capture.result
    );
    let difference = register_difference(&expected, &capture.handler);
    report!(
        capture.result.is_err() && difference.is_none(),
        "pabt: the handler sees the registers as they were, x30 after the BLR, PC at the target \
         (first difference: {difference:x?})"
    );
}

/// kvm-unit-tests' vectors-user check_und and check_svc: the same register compare from EL0.
fn check_user_registers() {
    let capture = try_with_registers_in_user_mode(RaisingInstruction::ReadEl3SystemRegister);
    let before = capture.before;
    report!(
        matches!(capture.result, Err(exception) if exception.class == ExceptionClass::Unknown
            && exception.from_user && exception.elr == before.pc),
        "und: MRS of SCTLR_EL3 at EL0 raises EC 0x00 from EL0 with ELR at the MRS ({:#x}; got {:?})",
        before.pc,
        capture.result
    );
    let difference = register_difference(&before, &capture.handler);
    report!(
        capture.result.is_err() && difference.is_none(),
        "und: the handler sees EL0's x0-x30, SP_EL0, PC and PSTATE as they were (first difference: \
         {difference:x?})"
    );
    let capture = try_with_registers_in_user_mode(RaisingInstruction::SupervisorCall);
    let mut expected = capture.before;
    expected.pc += 4;
    report!(
        matches!(capture.result, Err(exception) if exception.class == ExceptionClass::SupervisorCall
            && exception.from_user && exception.immediate() == CAPTURE_SVC_IMMEDIATE
            && exception.elr == expected.pc),
        "svc: SVC #{CAPTURE_SVC_IMMEDIATE} at EL0 raises SVC64 from EL0, ELR after it ({:#x}; got {:?})",
        expected.pc,
        capture.result
    );
    let difference = register_difference(&expected, &capture.handler);
    report!(
        capture.result.is_err() && difference.is_none(),
        "svc: the handler sees EL0's registers as they were, PC after the SVC (first difference: \
         {difference:x?})"
    );
}

fn vectors_user() {
    let _prefix = prefix("vectors-user");
    check_user_registers();
    let result = run_in_user_mode(|| core::hint::black_box(6) * 7);
    report!(
        result == Ok(42),
        "a closure runs at EL0 and returns its value (got {result:?})"
    );
    let result = run_in_user_mode(undefined_instruction);
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::Unknown && exception.from_user),
        "UDF at EL0 raises EC 0x00 taken from EL0 (got {result:?})"
    );
    let result = run_in_user_mode(supervisor_call);
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::SupervisorCall
            && exception.from_user && exception.immediate() == 0),
        "SVC #0 at EL0 raises SVC64 from EL0 (got {result:?})"
    );
    let page = TestPage::new();
    page.unmap();
    let address = page.address();
    let result = run_in_user_mode(|| load(address));
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::DataAbortLower
            && exception.far == address && exception.fault_status() == UNMAPPED_PAGE),
        "a load from an unmapped page at EL0 is a lower-EL data abort at its address (got {result:?})"
    );
    let kernel_page = TestPage::new();
    let address = kernel_page.address();
    let result = run_in_user_mode(|| load(address));
    report!(
        matches!(result, Err(exception) if exception.class == ExceptionClass::DataAbortLower
            && exception.far == address && permission_fault(&exception)),
        "a load from an EL1-only page at EL0 is a permission fault (got {result:?})"
    );
    kernel_page.protect(Protection {
        write: true,
        execute: false,
        user: true,
    });
    report!(
        kernel_page.try_write(0, 99).is_ok(),
        "after protect(user, write) the kernel still writes the page"
    );
    let result = run_in_user_mode(|| load(address));
    report!(result == Ok(99), "EL0 then reads it (got {result:?})");
    check_user_exception_handler();
}

/// Whether the last exception [`skip_undefined`] saw came from EL0.
static HANDLED_FROM_USER: AtomicBool = AtomicBool::new(false);

/// The EC 0x00 handler takes a UDF from EL0 too (kvm-unit-tests' EL0_SYNC_64 handlers), and the
/// EL0 run continues after it.
fn check_user_exception_handler() {
    const VALUE: u64 = 0x0e10_0000_0042;
    let calls = HANDLED.load(Ordering::Relaxed);
    install_exception_handler(ExceptionClass::Unknown, Some(skip_undefined));
    let result = run_in_user_mode(|| undefined_instruction_resumable(VALUE));
    install_exception_handler(ExceptionClass::Unknown, None);
    let elr = HANDLED_ELR.load(Ordering::Relaxed);
    report!(
        HANDLED.load(Ordering::Relaxed) == calls + 1 && HANDLED_FROM_USER.load(Ordering::Relaxed),
        "handler: a UDF at EL0 went to the EC 0x00 handler once, taken from EL0"
    );
    report!(
        matches!(result, Ok((x0, address)) if x0 == VALUE + 1 && address == elr),
        "handler: the EL0 run resumed after its UDF with the handler's x0 (got {result:x?}, ELR {elr:#x})"
    );
}

/// What each CPU recorded: its MPIDR affinity, its stack pointer, and how often it ran.
static SEEN_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static SEEN_STACK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static RUNS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Each CPU's CurrentEL.EL, as it saw it.
static SEEN_EL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn record() {
    let cpu = cpu_index();
    let marker = 0u64;
    SEEN_MPIDR[cpu].store(current_mpidr(), Ordering::Release);
    SEEN_EL[cpu].store(current_el(), Ordering::Release);
    SEEN_STACK[cpu].store(core::hint::black_box(&raw const marker) as u64, Ordering::Release);
    RUNS[cpu].fetch_add(1, Ordering::AcqRel);
}

/// The CPUs whose run count is not `expected`, with their counts.
fn wrong_runs(count: usize, expected: usize) -> Vec<(usize, usize)> {
    (0..count)
        .map(|cpu| (cpu, RUNS[cpu].load(Ordering::Acquire)))
        .filter(|&(_, runs)| runs != expected)
        .collect()
}

fn smp() {
    let _prefix = prefix("smp");
    let platform = platform();
    let count = cpu_count();
    vmunit::report_info!(
        "PSCI {}.{} through {:?}; {count} CPUs",
        vmunit::arch::psci::version().0,
        vmunit::arch::psci::version().1,
        vmunit::arch::psci::conduit()
    );
    report!(count >= 2, "there are at least 2 CPUs (got {count})");
    report!(
        platform.cpus_listed == count,
        "the runtime uses every CPU the DTB lists ({count} of {}, MAX_CPUS {MAX_CPUS})",
        platform.cpus_listed
    );
    on_cpus(record);
    // Each CPU counts under its own index (TPIDR_EL1): a job run twice, on the wrong CPU, or
    // on a CPU whose index is wrong shows here.
    let wrong = wrong_runs(count, 1);
    report!(
        wrong.is_empty(),
        "on_cpus ran the function once on each CPU index (CPUs with another count: {wrong:?})"
    );
    let wrong: Vec<(usize, u64)> = (0..count)
        .map(|cpu| (cpu, SEEN_EL[cpu].load(Ordering::Acquire)))
        .filter(|&(_, level)| level != expected_el())
        .collect();
    report!(
        wrong.is_empty(),
        "every CPU runs at EL{} as the boot CPU does (CPUs elsewhere: {wrong:?})",
        expected_el()
    );
    let wrong: Vec<(usize, u64)> = (0..count)
        .map(|cpu| (cpu, SEEN_MPIDR[cpu].load(Ordering::Acquire)))
        .filter(|&(cpu, seen)| seen != mpidr_of(cpu))
        .collect();
    report!(
        wrong.is_empty(),
        "MPIDR test on all CPUs: each CPU's MPIDR_EL1 is the DTB's for its index (wrong: {wrong:x?})"
    );
    // The kernel stacks follow the guard pages, one STACK_SIZE apart: each CPU's own.
    let guards: Vec<u64> = vmunit::arch::exceptions::stack_guard_pages().step_by(2).collect();
    let wrong: Vec<(usize, u64)> = (0..count)
        .map(|cpu| (cpu, SEEN_STACK[cpu].load(Ordering::Acquire)))
        .filter(|&(cpu, stack)| !(guards[cpu] + 4096..guards[cpu] + STACK_SIZE as u64).contains(&stack))
        .collect();
    report!(
        wrong.is_empty(),
        "each CPU runs on its own stack (CPUs outside theirs: {wrong:x?})"
    );
    on_cpus(record);
    let wrong = wrong_runs(count, 2);
    report!(
        wrong.is_empty(),
        "a second round runs once more on each CPU (CPUs with another count: {wrong:?})"
    );
    cpu_masks(count);
}

/// Runs per CPU of the `on_cpu_mask` checks.
static MASK_RUNS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

fn count_mask_run() {
    MASK_RUNS[cpu_index()].fetch_add(1, Ordering::AcqRel);
}

/// The CPUs (of `count`) whose `MASK_RUNS` is not 1 inside `cpus` and 0 outside, with their
/// counts; clears the counts.
fn wrong_mask_runs(count: usize, cpus: CpuSet) -> Vec<(usize, usize)> {
    (0..count)
        .map(|cpu| (cpu, MASK_RUNS[cpu].swap(0, Ordering::AcqRel)))
        .filter(|&(cpu, runs)| runs != usize::from(cpus.contains(cpu)))
        .collect()
}

/// kvm-unit-tests' `on_cpumask` / `on_cpumask_async`: a function runs on exactly the CPUs of a
/// set, the caller's own included only when it is in the set.
fn cpu_masks(count: usize) {
    // The odd CPUs (without the caller, CPU 0), then the even ones (with it).
    let odd: CpuSet = (1..count).step_by(2).collect();
    let even: CpuSet = (0..count).step_by(2).collect();
    report!(
        odd.len() + even.len() == count
            && odd.intersection(even).is_empty()
            && odd.union(even) == CpuSet::all(),
        "CpuSet: odd {odd:?} and even {even:?} split all {:?}",
        CpuSet::all()
    );
    for cpus in [odd, even] {
        on_cpu_mask(cpus, count_mask_run);
        let wrong = wrong_mask_runs(count, cpus);
        report!(
            wrong.is_empty(),
            "on_cpu_mask({cpus:?}) ran once on each CPU of the set and on no other (wrong counts: {wrong:?})"
        );
    }
    // Asynchronously: returns before the others have run; they run it once each.
    for cpus in [odd, even] {
        on_cpu_mask_async(cpus, count_mask_run);
        let arrived = vmunit::time::spin_until(1000, || {
            cpus.iter().all(|cpu| MASK_RUNS[cpu].load(Ordering::Acquire) >= 1)
        });
        // Time for a CPU outside the set that wrongly got the job to run it.
        vmunit::time::delay(20);
        let wrong = wrong_mask_runs(count, cpus);
        report!(
            arrived && wrong.is_empty(),
            "on_cpu_mask_async({cpus:?}) ran once on each CPU of the set and on no other (wrong counts: {wrong:?})"
        );
    }
}

/// kvm-unit-tests' selftest-migration (arm/selftest.c `migration`, common/selftest-migration.c):
/// the VM migrates [`MIGRATIONS`] times; after each migration the guest goes on with its memory
/// intact.
fn migration() {
    let _prefix = prefix("migration");
    let pattern: Vec<u64> = (0..PATTERN_WORDS).map(|index| pattern_word(index, 0)).collect();
    let mut completed = 0;
    for round in 1..=MIGRATIONS {
        match vmunit::migrate_quiet() {
            Migration::Completed => {}
            // Not a migration run: the SKIP line says so, and there is nothing to check.
            Migration::NotMigrationRun => return,
            Migration::AlreadyMigrated => break,
        }
        completed = round;
        let difference = first_difference(&pattern, 0);
        report!(
            difference.is_none(),
            "after migration {round}: the guest runs on with its {} KiB pattern intact (first difference at word {difference:?})",
            PATTERN_WORDS * 8 / 1024
        );
    }
    report!(
        completed == MIGRATIONS,
        "the guest went on after each of {MIGRATIONS} migrations (completed {completed})"
    );
}

/// Continuous migration (kvm-unit-tests' `migrate_begin_continuous`): the runner migrates
/// while the guest rewrites and checks its memory, round after round.
fn continuous_migration() {
    let _prefix = prefix("migration-continuous");
    let mut buffer: Vec<u64> = (0..PATTERN_WORDS).map(|index| pattern_word(index, 0)).collect();
    if vmunit::begin_continuous_migration() != Migration::Completed {
        return;
    }
    let mut broken = None;
    for round in 1..=CONTINUOUS_ROUNDS {
        for (index, word) in buffer.iter_mut().enumerate() {
            *word = pattern_word(index, round);
        }
        if let Some(index) = first_difference(&buffer, round) {
            broken.get_or_insert((round, index));
        }
    }
    let ended = vmunit::end_continuous_migration();
    report!(
        ended == Migration::Completed && broken.is_none(),
        "{CONTINUOUS_ROUNDS} rounds of rewriting memory under continuous migration read back (first broken round and word: {broken:?})"
    );
    let difference = first_difference(&buffer, CONTINUOUS_ROUNDS);
    report!(
        difference.is_none(),
        "after continuous migration: the last round's pattern is intact (first difference at word {difference:?})"
    );
}

/// How many times `migration` migrates one by one (kvm-unit-tests does 15 on arm, 30 elsewhere).
const MIGRATIONS: usize = 8;
/// How many rounds the guest rewrites its pattern under continuous migration.
const CONTINUOUS_ROUNDS: u64 = 64;
/// The pattern's size in words: 1 MiB.
const PATTERN_WORDS: usize = 128 * 1024;

/// Word `index` of round `round`'s pattern: differs by word and by round.
fn pattern_word(index: usize, round: u64) -> u64 {
    (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_mul(0xd1b5_4a32_d192_ed03)
}

/// The first word of `buffer` that is not round `round`'s pattern.
fn first_difference(buffer: &[u64], round: u64) -> Option<usize> {
    buffer
        .iter()
        .enumerate()
        .position(|(index, word)| *word != pattern_word(index, round))
}
