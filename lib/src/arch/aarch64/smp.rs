//! aarch64 CPUs: identity (TPIDR_EL1 holds the CPU index), bring-up of secondary CPUs through
//! PSCI CPU_ON, and running closures on them ([`on_cpu`], [`on_cpus`], [`on_cpu_async`]).
//!
//! CPU indexes follow the device tree's `/cpus` order; index 0 is the boot CPU. A secondary
//! CPU, once started, waits (WFE) for work posted by [`on_cpu`] (started on demand) and
//! reports completion (SEV).

use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{MPIDR_EL1, Readable, TPIDR_EL1};

use super::psci::{self, Status};

/// How many CPUs the runtime supports (link.ld reserves a stack for each), like
/// kvm-unit-tests' NR_CPUS: QEMU `virt` with a GICv3 has room for far more, and the runner's
/// `MAX_SMP` (the `smp = "max"` count) is what a run asks for. CPUs the device tree lists
/// beyond this are counted (`Platform::cpus_listed`) but never started.
pub const MAX_CPUS: usize = 64;
/// Each CPU's stack size (SP_EL0, the kernel's), its lowest page an unmapped guard.
pub const STACK_SIZE: usize = 64 * 1024;
/// Each CPU's exception stack size (SP_EL1), its lowest page an unmapped guard.
pub const EXCEPTION_STACK_SIZE: usize = 16 * 1024;

/// The MPIDR affinity fields (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

#[allow(clippy::declare_interior_mutable_const)]
const NOT_ONLINE: AtomicBool = AtomicBool::new(false);
static ONLINE: [AtomicBool; MAX_CPUS] = [NOT_ONLINE; MAX_CPUS];

/// The index of the running CPU in per-CPU tables (0: the boot CPU).
pub fn cpu_index() -> usize {
    TPIDR_EL1.get() as usize % MAX_CPUS
}

/// How many CPUs the device tree lists (at most [`MAX_CPUS`]).
pub fn cpu_count() -> usize {
    super::device_tree::platform().mpidrs().len()
}

/// The MPIDR affinity of CPU `cpu`, from the device tree (0 for a CPU it does not list).
pub fn mpidr_of(cpu: usize) -> u64 {
    super::device_tree::platform()
        .mpidrs()
        .get(cpu)
        .copied()
        .unwrap_or(0)
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
    crate::work::serve(cpu)
}

/// Starts CPU `cpu` through PSCI CPU_ON if it is not online, and waits until it runs.
/// Returns the CPU_ON status (SUCCESS when it was started or already online).
///
/// # Panics
/// For a CPU the device tree does not list.
pub fn start_cpu(cpu: usize) -> Status {
    if is_online(cpu) {
        return Status::Success;
    }
    let status = cpu_on(cpu);
    if status != Status::Success {
        return status;
    }
    while !ONLINE[cpu].load(Ordering::Acquire) {
        aarch64_cpu::asm::wfe();
    }
    Status::Success
}

/// Calls PSCI CPU_ON for CPU `cpu` at the runtime's secondary entry, whatever the runtime
/// believes of the CPU, and returns PSCI's status without waiting for the CPU to run: SUCCESS
/// when PSCI started it (it then comes online and serves `on_cpu` work, see
/// [`wait_until_online`]), ALREADY_ON or ON_PENDING when it is on or being started. Several
/// CPUs may race this for one target: PSCI starts it once.
///
/// # Panics
/// For a CPU the device tree does not list, or CPU 0 (the boot CPU, which runs the test).
pub fn cpu_on(cpu: usize) -> Status {
    assert!(
        cpu < cpu_count(),
        "CPU {cpu} does not exist ({} CPUs)",
        cpu_count()
    );
    assert!(cpu != 0, "CPU 0 runs the test");
    let entry = secondary_entry_point();
    // SAFETY: the runtime's secondary entry, given the CPU's own index, sets up the MMU,
    // vectors and that CPU's own stacks, which nothing else uses while it is off; when the CPU
    // is on (or being started), PSCI refuses and starts nothing.
    unsafe { psci::cpu_on(mpidr_of(cpu), entry, cpu as u64) }
}

/// Waits up to `milliseconds` of counter time for CPU `cpu` to come online (after a
/// [`cpu_on`] that succeeded); returns whether it did.
pub fn wait_until_online(cpu: usize, milliseconds: u64) -> bool {
    crate::time::spin_until(milliseconds, || is_online(cpu))
}

/// The address where secondary CPUs enter the runtime: the CPU_ON entry point of
/// [`start_cpu`], which expects the CPU's index as its context.
pub fn secondary_entry_point() -> u64 {
    &raw const super::boot::vmunit_secondary_entry as u64
}

pub use crate::work::{Barrier, CpuSet, on_cpu, on_cpu_async, on_cpu_mask, on_cpu_mask_async, on_cpus};

/// Starts CPU `cpu` if needed, before work is posted to it.
///
/// # Panics
/// When PSCI CPU_ON fails.
pub(crate) fn make_ready(cpu: usize) {
    let status = start_cpu(cpu);
    assert!(
        status == Status::Success,
        "PSCI CPU_ON of CPU {cpu} failed with {}",
        status.code()
    );
}

/// What a CPU does while it waits for work or for a job to finish: WFE.
pub(crate) fn idle() {
    aarch64_cpu::asm::wfe();
}

/// Wakes CPUs waiting in [`idle`]: SEV.
pub(crate) fn wake() {
    aarch64_cpu::asm::sev();
}

/// Turns the calling secondary CPU off with PSCI CPU_OFF; returns the status if that fails.
pub fn cpu_off(cpu: usize) -> Status {
    ONLINE[cpu].store(false, Ordering::Release);
    // The job that called this does not return: free the mailbox for the next start.
    crate::work::abandon(cpu);
    let status = psci::cpu_off();
    ONLINE[cpu].store(true, Ordering::Release);
    status
}
