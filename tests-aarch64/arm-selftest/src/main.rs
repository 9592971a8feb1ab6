//! arm-selftest: the aarch64 runtime itself, in kvm-unit-tests' arm selftest modes:
//! `setup smp=N mem=M` (the device tree agrees with QEMU's -smp and -m; heap, pages),
//! `vectors-kernel` and `vectors-user` (exceptions at EL1 and from EL0, with ESR/ELR/FAR
//! checked), and `smp` (every CPU runs and has the device tree's MPIDR).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use vmunit::arch::device_tree::platform;
use vmunit::arch::exceptions::FaultStatus;
use vmunit::arch::instructions::{
    current_el, load, supervisor_call, try_breakpoint, try_load, try_read, try_supervisor_call,
    try_undefined_instruction, undefined_instruction,
};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, current_mpidr, mpidr_of, on_cpus};
use vmunit::arch::{Exception, ExceptionClass, mmu, run_in_user_mode};
use vmunit::catch::Attempt;
use vmunit::memory::{Protection, TestPage};
use vmunit::{args, prefix, report};

vmunit::main!(main);

fn main(arguments: &[&str]) {
    match arguments.first().copied() {
        Some("setup") => setup(arguments),
        Some("vectors-kernel") => vectors_kernel(),
        Some("vectors-user") => vectors_user(),
        Some("smp") => smp(),
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

fn setup(arguments: &[&str]) {
    let _prefix = prefix("setup");
    report!(
        current_el() == 1,
        "the runtime runs at EL1 (CurrentEL.EL {})",
        current_el()
    );
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
    report!(platform.uart.is_some(), "the DTB names a PL011 UART");
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
    let nested = vmunit::catch_exception(|| {
        let inner = try_undefined_instruction().result.is_err();
        undefined_instruction();
        inner
    });
    report!(
        matches!(nested, Err(exception) if exception.class == ExceptionClass::Unknown),
        "nested catch_exception: the inner catch returns and the outer one still catches"
    );
}

fn vectors_user() {
    let _prefix = prefix("vectors-user");
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
        "the page can be made user-accessible"
    );
    let result = run_in_user_mode(|| load(address));
    report!(result == Ok(99), "EL0 then reads it (got {result:?})");
}

static SEEN_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static RAN: AtomicUsize = AtomicUsize::new(0);

fn record(cpu: usize) {
    SEEN_MPIDR[cpu].store(current_mpidr(), Ordering::Release);
    RAN.fetch_add(1, Ordering::AcqRel);
}

fn smp() {
    let _prefix = prefix("smp");
    let count = cpu_count();
    report!(count >= 2, "there are at least 2 CPUs (got {count})");
    on_cpus(|| record(cpu_index()));
    report!(
        RAN.load(Ordering::Acquire) == count,
        "every CPU ran the function once ({} of {count})",
        RAN.load(Ordering::Acquire)
    );
    for (cpu, seen) in SEEN_MPIDR.iter().enumerate().take(count) {
        let seen = seen.load(Ordering::Acquire);
        report!(
            seen == mpidr_of(cpu),
            "CPU {cpu} has the DTB's MPIDR {:#x} (got {seen:#x})",
            mpidr_of(cpu)
        );
    }
    on_cpus(|| record(cpu_index()));
    report!(
        RAN.load(Ordering::Acquire) == 2 * count,
        "a second round runs on every CPU again ({} of {})",
        RAN.load(Ordering::Acquire),
        2 * count
    );
}
