//! smptest: every CPU QEMU created comes up and runs work (kvm-unit-tests' smptest): each
//! knows its own index and APIC ID, runs on its own stack, and catches its own exceptions.
//!
//! `cpus=N` (the entry's smp count) says how many CPUs must come up.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use vmunit::arch::instructions::{cpuid, divide};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpu, on_cpus};
use vmunit::{Vector, report, report_summary};

vmunit::main!(main);

/// The initial APIC ID (CPUID.1:EBX[31:24]) each CPU reported, plus one (0: none yet).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The index each CPU reported for itself, plus one.
static INDICES: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

fn main(args: &[&str]) -> i32 {
    let expected: usize = vmunit::args::value(args, "cpus")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    let count = cpu_count();
    report!(count == expected, "{expected} CPUs come up (got {count})");
    report!(cpu_index() == 0, "the boot CPU is CPU 0 (got {})", cpu_index());

    // Each CPU, one at a time, records who it is.
    for (cpu, reported_index) in INDICES.iter().enumerate().take(count) {
        on_cpu(cpu, || {
            let me = cpu_index();
            reported_index.store(me + 1, Ordering::SeqCst);
            APIC_IDS[me].store((cpuid(1, 0).ebx >> 24) + 1, Ordering::SeqCst);
        });
    }
    let indices_right = (0..count).all(|cpu| INDICES[cpu].load(Ordering::SeqCst) == cpu + 1);
    report!(
        indices_right,
        "on_cpu(n, ..) runs on CPU n, which knows its index"
    );
    let mut apic_ids: [u32; MAX_CPUS] = core::array::from_fn(|cpu| APIC_IDS[cpu].load(Ordering::SeqCst));
    let seen = &mut apic_ids[..count];
    report!(
        seen.iter().all(|&id| id != 0),
        "every CPU reports its initial APIC ID (got {seen:?})"
    );
    seen.sort_unstable();
    report!(
        seen.windows(2).all(|pair| pair[0] != pair[1]),
        "the initial APIC IDs are distinct (got {seen:?})"
    );

    // All at once: every CPU adds its bit, and runs on a stack of its own.
    let bits = AtomicU64::new(0);
    let stacks: [AtomicU64; MAX_CPUS] = core::array::from_fn(|_| AtomicU64::new(0));
    on_cpus(|| {
        let marker = 0u64;
        bits.fetch_or(1 << cpu_index(), Ordering::SeqCst);
        stacks[cpu_index()].store(&raw const marker as u64, Ordering::SeqCst);
    });
    let all = (1u64 << count) - 1;
    report!(
        bits.load(Ordering::SeqCst) == all,
        "on_cpus runs on every CPU once (bits {:#b})",
        bits.load(Ordering::SeqCst)
    );
    let mut slots: [u64; MAX_CPUS] = core::array::from_fn(|cpu| stacks[cpu].load(Ordering::SeqCst) >> 16);
    let slots = &mut slots[..count];
    slots.sort_unstable();
    report!(
        slots.windows(2).all(|pair| pair[0] != pair[1]),
        "every CPU runs on its own stack (64 KiB slots {slots:x?})"
    );

    // Exceptions are caught on the CPU that raised them.
    let caught = AtomicUsize::new(0);
    on_cpus(|| {
        if matches!(divide(0, 1, 0), Err(exception) if exception.vector == Vector::DE) {
            caught.fetch_add(1, Ordering::SeqCst);
        }
    });
    report!(
        caught.load(Ordering::SeqCst) == count,
        "a #DE raised on each CPU at once is caught there ({} of {count})",
        caught.load(Ordering::SeqCst)
    );
    report_summary()
}
