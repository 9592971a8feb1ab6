//! smptest: every CPU QEMU created comes up and runs work (kvm-unit-tests' smptest): each
//! knows its own index and APIC ID, runs on its own stack, and catches its own exceptions; and
//! `on_cpu_mask` (kvm-unit-tests' `on_cpumask`) runs work on exactly the CPUs of a set.
//!
//! `cpus=N` (the entry's smp count) says how many CPUs must come up. test_args `migration`
//! (entry `smp-migration`) runs instead the live-migration checks of [`migration`].
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use vmunit::arch::acpi::madt;
use vmunit::arch::cpuid::cpuid;
use vmunit::arch::fw_cfg;
use vmunit::arch::instructions::try_divide;
use vmunit::arch::msr::{self, ApicBaseFlags, try_rdmsr};
use vmunit::arch::smp::{CpuSet, MAX_CPUS, apic_id_of, cpu_count, cpu_index, on_cpu, on_cpu_mask, on_cpus};
use vmunit::{Vector, prefix, report, report_info};

mod migration;

vmunit::main!(main);

/// The initial APIC ID (CPUID.1:EBX[31:24]) each CPU reported, plus one (0: none yet).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The index each CPU reported for itself, plus one.
static INDICES: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

fn main(args: &[&str]) {
    if args.contains(&"migration") {
        migration::checks();
        return;
    }
    let expected: usize = vmunit::args::value(args, "cpus")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    let count = cpu_count();
    report!(count == expected, "{expected} CPUs come up (got {count})");
    // CPU 0 is the CPU that runs main: the processor itself says it is the bootstrap one.
    let base = try_rdmsr(msr::IA32_APIC_BASE);
    report!(
        cpu_index() == 0 && matches!(base, Ok(base) if base & ApicBaseFlags::BSP.bits() != 0),
        "the boot CPU is CPU 0, with IA32_APIC_BASE.BSP set (got CPU {}, {base:x?})",
        cpu_index()
    );

    // Each CPU, one at a time, records who it is.
    for (cpu, reported_index) in INDICES.iter().enumerate().take(count) {
        on_cpu(cpu, || {
            let me = cpu_index();
            reported_index.store(me + 1, Ordering::SeqCst);
            APIC_IDS[me].store((cpuid(1, 0).ebx >> 24) + 1, Ordering::SeqCst);
        });
    }
    let apic_ids: [u32; MAX_CPUS] =
        core::array::from_fn(|cpu| APIC_IDS[cpu].load(Ordering::SeqCst).wrapping_sub(1));
    // The runtime derives a CPU's index from its stack, so the index alone proves nothing: the
    // CPU that ran the work must also be the one whose local APIC ID register CPU n read when
    // it came up (`apic_id_of`), as its CPUID says.
    let runners: [(usize, u32, u32); MAX_CPUS] = core::array::from_fn(|cpu| {
        (
            INDICES[cpu].load(Ordering::SeqCst).wrapping_sub(1),
            apic_ids[cpu],
            apic_id_of(cpu),
        )
    });
    let runners = &runners[..count];
    report!(
        runners
            .iter()
            .enumerate()
            .all(|(cpu, &(index, cpuid_id, started_id))| index == cpu && cpuid_id == started_id),
        "on_cpu(n, ..) runs on CPU n: its index, and its CPUID APIC ID is the APIC ID CPU n read at start-up (index, CPUID, start-up: {runners:?})"
    );
    let mut sorted = apic_ids;
    let seen = &mut sorted[..count];
    report!(
        seen.iter().all(|&id| id != u32::MAX),
        "every CPU reports its initial APIC ID (got {seen:?})"
    );
    seen.sort_unstable();
    report!(
        seen.windows(2).all(|pair| pair[0] != pair[1]),
        "the initial APIC IDs are distinct (got {seen:?})"
    );

    check_madt(&apic_ids[..count]);

    // All at once: every CPU adds its bit, and runs on a stack of its own.
    // The index is the stack's 64 KiB slot: each slot records the APIC ID (CPUID) of the CPU
    // that ran on it, which must be the CPU that slot belongs to, the one on_cpu found there.
    let bits = AtomicU64::new(0);
    let runs = AtomicUsize::new(0);
    let stack_owners: [AtomicU32; MAX_CPUS] = core::array::from_fn(|_| AtomicU32::new(u32::MAX));
    on_cpus(|| {
        bits.fetch_or(1 << cpu_index(), Ordering::SeqCst);
        runs.fetch_add(1, Ordering::SeqCst);
        stack_owners[cpu_index()].store(cpuid(1, 0).ebx >> 24, Ordering::SeqCst);
    });
    let all = (1u64 << count) - 1;
    report!(
        bits.load(Ordering::SeqCst) == all && runs.load(Ordering::SeqCst) == count,
        "on_cpus runs on every CPU once (bits {:#b}, {} runs)",
        bits.load(Ordering::SeqCst),
        runs.load(Ordering::SeqCst)
    );
    let owners: [u32; MAX_CPUS] = core::array::from_fn(|cpu| stack_owners[cpu].load(Ordering::SeqCst));
    report!(
        owners[..count] == apic_ids[..count],
        "every CPU runs on its own stack: stack slot n ran the CPU with CPU n's APIC ID (slots' APIC IDs {:?}, CPUs' {:?})",
        &owners[..count],
        &apic_ids[..count]
    );

    // Exceptions are caught on the CPU that raised them.
    let caught = AtomicUsize::new(0);
    on_cpus(|| {
        if matches!(try_divide(0, 1, 0), Err(exception) if exception.vector == Vector::DE) {
            caught.fetch_add(1, Ordering::SeqCst);
        }
    });
    report!(
        caught.load(Ordering::SeqCst) == count,
        "a #DE raised on each CPU at once is caught there ({} of {count})",
        caught.load(Ordering::SeqCst)
    );
    // A set of CPUs, with the caller (the even CPUs) and without it (the odd ones).
    let odd: CpuSet = (1..count).step_by(2).collect();
    let even: CpuSet = (0..count).step_by(2).collect();
    for cpus in [odd, even] {
        let bits = AtomicU64::new(0);
        let runs = AtomicUsize::new(0);
        on_cpu_mask(cpus, || {
            bits.fetch_or(1 << cpu_index(), Ordering::SeqCst);
            runs.fetch_add(1, Ordering::SeqCst);
        });
        report!(
            bits.load(Ordering::SeqCst) == cpus.bits() && runs.load(Ordering::SeqCst) == cpus.len(),
            "on_cpu_mask({cpus:?}) runs once on each CPU of the set, on no other (bits {:#b}, {} runs)",
            bits.load(Ordering::SeqCst),
            runs.load(Ordering::SeqCst)
        );
    }
}

/// Where there is an ACPI MADT (pc, q35), the runtime counted the CPUs in it: it lists as many
/// enabled processors as fw_cfg says QEMU created, the boot CPU first, and every CPU's APIC ID.
fn check_madt(apic_ids: &[u32]) {
    let Some(madt) = madt() else {
        report_info!("no ACPI MADT (microvm without ACPI): the CPU count came from fw_cfg");
        return;
    };
    let _prefix = prefix("MADT");
    let created = usize::from(fw_cfg::read_u16(fw_cfg::CPU_COUNT));
    report!(
        madt.processor_count == created,
        "it lists as many enabled processors as fw_cfg's CPU count, {created} (got {})",
        madt.processor_count
    );
    let listed = &madt.processors[..madt.processor_count.min(madt.processors.len())];
    report!(
        listed.first().map(|processor| processor.apic_id) == apic_ids.first().copied(),
        "its first processor is the boot CPU, APIC ID {:?} (got {:?})",
        apic_ids.first(),
        listed.first()
    );
    report!(
        apic_ids
            .iter()
            .all(|id| listed.iter().any(|processor| processor.apic_id == *id)),
        "every running CPU's APIC ID is listed (CPUs {apic_ids:?}, MADT {listed:?})"
    );
    report!(
        madt.local_apic_address == 0xfee0_0000,
        "the local APIC is at 0xfee00000 (got {:#x})",
        madt.local_apic_address
    );
    report!(
        madt.io_apic_count >= 1,
        "it lists an I/O APIC ({:x?})",
        &madt.io_apics[..madt.io_apic_count.min(madt.io_apics.len())]
    );
}
