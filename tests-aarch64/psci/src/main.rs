//! psci: the PSCI firmware interface (QEMU's): version, PSCI_FEATURES, an invalid function,
//! and with two or more CPUs CPU_ON, AFFINITY_INFO, CPU_OFF and CPU_ON of a CPU already on.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicUsize, Ordering};

use vmunit::arch::psci::{self, AffinityState, Status};
use vmunit::arch::smp::{cpu_count, cpu_index, cpu_off, mpidr_of, on_cpu, on_cpu_async, start_cpu};
use vmunit::arch::timer;
use vmunit::{report, report_skip};

vmunit::main!(main);

/// A function number in the PSCI range that PSCI does not define.
const UNDEFINED_FUNCTION: u32 = 0x8400_001f;
/// An MPIDR affinity no CPU of QEMU `virt` has.
const NO_SUCH_MPIDR: u64 = 0xff_ff00;

fn main(_arguments: &[&str]) {
    let (major, minor) = psci::version();
    report!(
        major == 1 || (major, minor) == (0, 2),
        "PSCI_VERSION is 0.2 or 1.x (got {major}.{minor})"
    );
    let result = Status::from_code(psci::call(UNDEFINED_FUNCTION, 0, 0, 0));
    report!(
        result == Status::NotSupported,
        "an undefined function id returns NOT_SUPPORTED (got {result})"
    );
    if major >= 1 {
        let features = psci::features(psci::function::CPU_ON);
        report!(
            features.is_ok(),
            "PSCI_FEATURES says CPU_ON is implemented (got {features:?})"
        );
        let features = psci::features(UNDEFINED_FUNCTION);
        report!(
            features == Err(Status::NotSupported),
            "PSCI_FEATURES of an undefined function is NOT_SUPPORTED (got {features:?})"
        );
    }
    let result = psci::affinity_info(mpidr_of(0));
    report!(
        result == Ok(AffinityState::On),
        "AFFINITY_INFO of the boot CPU is ON (got {result:?})"
    );
    if cpu_count() < 2 {
        report_skip!("CPU_ON and CPU_OFF need -smp 2 or more");
    } else {
        cpu_on_off();
    }
}

static RAN_ON: AtomicUsize = AtomicUsize::new(usize::MAX);

fn record() {
    RAN_ON.store(cpu_index(), Ordering::Release);
}

fn turn_off() {
    cpu_off(cpu_index());
}

/// Polls AFFINITY_INFO of `mpidr` until it is `wanted` or a second of counter time passed.
fn wait_for_affinity(mpidr: u64, wanted: AffinityState) -> Result<AffinityState, Status> {
    let deadline = timer::virtual_count() + timer::frequency();
    loop {
        let state = psci::affinity_info(mpidr);
        if state == Ok(wanted) || timer::virtual_count() > deadline {
            return state;
        }
    }
}

fn cpu_on_off() {
    let mpidr = mpidr_of(1);
    let state = psci::affinity_info(mpidr);
    report!(
        state == Ok(AffinityState::Off),
        "AFFINITY_INFO of CPU 1 before CPU_ON is OFF (got {state:?})"
    );
    let result = start_cpu(1);
    report!(
        result == Status::Success,
        "CPU_ON of CPU 1 succeeds (got {result})"
    );
    on_cpu(1, record);
    report!(
        RAN_ON.load(Ordering::Acquire) == 1,
        "CPU 1 runs a function after CPU_ON"
    );
    let state = psci::affinity_info(mpidr);
    report!(
        state == Ok(AffinityState::On),
        "AFFINITY_INFO of CPU 1 is ON (got {state:?})"
    );
    let entry = vmunit::arch::smp::secondary_entry_point();
    #[allow(unsafe_code)]
    // SAFETY: CPU 1 is on: PSCI refuses with ALREADY_ON and starts nothing (were it to start
    // it, the entry is the runtime's own, with CPU 1's index).
    let result = unsafe { psci::cpu_on(mpidr, entry, 1) };
    report!(
        result == Status::AlreadyOn,
        "CPU_ON of a CPU that is on returns ALREADY_ON (got {result})"
    );
    #[allow(unsafe_code)]
    // SAFETY: no CPU has this MPIDR: PSCI refuses with INVALID_PARAMETERS and starts nothing.
    let result = unsafe { psci::cpu_on(NO_SUCH_MPIDR, entry, 0) };
    report!(
        result == Status::InvalidParameters,
        "CPU_ON of an MPIDR with no CPU returns INVALID_PARAMETERS (got {result})"
    );
    on_cpu_async(1, turn_off);
    let state = wait_for_affinity(mpidr, AffinityState::Off);
    report!(
        state == Ok(AffinityState::Off),
        "after CPU_OFF, AFFINITY_INFO of CPU 1 is OFF (got {state:?})"
    );
    RAN_ON.store(usize::MAX, Ordering::Release);
    let result = start_cpu(1);
    report!(
        result == Status::Success,
        "CPU_ON of CPU 1 again succeeds (got {result})"
    );
    on_cpu(1, record);
    report!(
        RAN_ON.load(Ordering::Acquire) == 1,
        "CPU 1 runs a function after the second CPU_ON"
    );
}
