//! aarch64 CPUs: identity (TPIDR_EL1 holds the CPU index), bring-up of secondary CPUs through
//! PSCI CPU_ON, and running functions on them ([`on_cpu`], [`on_cpus`]).
//!
//! CPU indexes follow the device tree's `/cpus` order; index 0 is the boot CPU. A secondary
//! CPU, once started, waits (WFE) for work posted by [`on_cpu`] and reports completion.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aarch64_cpu::registers::{MPIDR_EL1, Readable, TPIDR_EL1};

use super::psci;

/// How many CPUs the runtime supports (link.ld reserves a stack for each).
pub const MAX_CPUS: usize = 8;
/// Each CPU's stack size (SP_EL0, the kernel's), its lowest page an unmapped guard.
pub const STACK_SIZE: usize = 64 * 1024;
/// Each CPU's exception stack size (SP_EL1), its lowest page an unmapped guard.
pub const EXCEPTION_STACK_SIZE: usize = 16 * 1024;

/// The MPIDR affinity fields (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

#[allow(clippy::declare_interior_mutable_const)]
const NOT_ONLINE: AtomicBool = AtomicBool::new(false);
static ONLINE: [AtomicBool; MAX_CPUS] = [NOT_ONLINE; MAX_CPUS];
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicUsize = AtomicUsize::new(0);
/// Per CPU: the `fn(usize)` to run next, 0 when idle.
static WORK: [AtomicUsize; MAX_CPUS] = [ZERO; MAX_CPUS];
/// Per CPU: how many functions it completed.
static COMPLETED: [AtomicUsize; MAX_CPUS] = [ZERO; MAX_CPUS];

/// The index of the running CPU in per-CPU tables (0: the boot CPU).
pub fn cpu_index() -> usize {
    TPIDR_EL1.get() as usize % MAX_CPUS
}

/// How many CPUs the device tree lists (at most [`MAX_CPUS`]).
pub fn cpu_count() -> usize {
    super::device_tree::platform().cpu_count
}

/// The MPIDR affinity of CPU `cpu`, from the device tree.
pub fn mpidr_of(cpu: usize) -> u64 {
    super::device_tree::platform().cpu_mpidrs[cpu]
}

/// The running CPU's MPIDR_EL1 affinity fields.
pub fn current_mpidr() -> u64 {
    MPIDR_EL1.get() & MPIDR_AFFINITY_MASK
}

/// Whether CPU `cpu` has started and not gone off through [`cpu_off`].
pub fn is_online(cpu: usize) -> bool {
    cpu == 0 || ONLINE[cpu].load(Ordering::Acquire)
}

/// Called by the boot assembly on a secondary CPU, on its own stack, MMU on.
pub(crate) extern "C" fn secondary_entry(cpu: usize) -> ! {
    super::exceptions::init();
    ONLINE[cpu].store(true, Ordering::Release);
    aarch64_cpu::asm::sev();
    loop {
        let work = WORK[cpu].load(Ordering::Acquire);
        if work == 0 {
            aarch64_cpu::asm::wfe();
            continue;
        }
        // SAFETY: nonzero values are stored by `post` from a `fn(usize)`.
        let function: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(work) };
        function(cpu);
        WORK[cpu].store(0, Ordering::Release);
        COMPLETED[cpu].fetch_add(1, Ordering::AcqRel);
        aarch64_cpu::asm::sev();
    }
}

/// Starts CPU `cpu` through PSCI CPU_ON if it is not online, and waits until it runs.
/// Returns the CPU_ON status (0 when it was started or already online).
///
/// # Panics
/// For a CPU the device tree does not list.
pub fn start_cpu(cpu: usize) -> i64 {
    assert!(
        cpu < cpu_count(),
        "CPU {cpu} does not exist ({} CPUs)",
        cpu_count()
    );
    if is_online(cpu) {
        return 0;
    }
    let entry = &raw const super::boot::vmunit_secondary_entry as u64;
    let status = psci::cpu_on(mpidr_of(cpu), entry, cpu as u64);
    if status != psci::status::SUCCESS {
        return status;
    }
    while !ONLINE[cpu].load(Ordering::Acquire) {
        aarch64_cpu::asm::wfe();
    }
    0
}

fn post(cpu: usize, function: fn(usize)) -> usize {
    let status = start_cpu(cpu);
    assert!(status == 0, "PSCI CPU_ON of CPU {cpu} failed with {status}");
    while WORK[cpu].load(Ordering::Acquire) != 0 {
        aarch64_cpu::asm::wfe();
    }
    let before = COMPLETED[cpu].load(Ordering::Acquire);
    WORK[cpu].store(function as usize, Ordering::Release);
    aarch64_cpu::asm::sev();
    before
}

fn wait(cpu: usize, before: usize) {
    while COMPLETED[cpu].load(Ordering::Acquire) == before {
        aarch64_cpu::asm::wfe();
    }
}

/// Runs `function(cpu)` on CPU `cpu` (starting it if needed) and waits for it to return.
pub fn on_cpu(cpu: usize, function: fn(usize)) {
    if cpu == cpu_index() {
        function(cpu);
        return;
    }
    let before = post(cpu, function);
    wait(cpu, before);
}

/// Posts `function(cpu)` to CPU `cpu` (starting it if needed) without waiting for it: for
/// functions that do not return, such as [`cpu_off`].
pub fn on_cpu_async(cpu: usize, function: fn(usize)) {
    post(cpu, function);
}

/// Runs `function(cpu)` on every CPU, the calling one included, and waits for all of them.
pub fn on_cpus(function: fn(usize)) {
    let me = cpu_index();
    let mut before = [0; MAX_CPUS];
    for (cpu, count) in before.iter_mut().enumerate().take(cpu_count()) {
        if cpu != me {
            *count = post(cpu, function);
        }
    }
    function(me);
    for (cpu, &count) in before.iter().enumerate().take(cpu_count()) {
        if cpu != me {
            wait(cpu, count);
        }
    }
}

/// Turns the calling secondary CPU off with PSCI CPU_OFF; returns the status if that fails.
pub fn cpu_off(cpu: usize) -> i64 {
    ONLINE[cpu].store(false, Ordering::Release);
    WORK[cpu].store(0, Ordering::Release);
    let status = psci::cpu_off();
    ONLINE[cpu].store(true, Ordering::Release);
    status
}
