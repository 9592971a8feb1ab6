//! latency_run_exit(_clean) and latency_svm_insn: kvm-unit-tests' latency measurements of
//! VMRUN/#VMEXIT round trips and of VMLOAD, VMSAVE, STGI and CLGI (`BENCH:` lines).

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use vmunit::arch::instructions::rdtsc;
use vmunit::arch::interrupts;
use vmunit::arch::msr::{
    IA32_CSTAR, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_LSTAR, IA32_STAR, IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP, try_rdmsr,
};
use vmunit::arch::svm::{ExitCode, Svm, VMCB_CLEAN_ALL, clgi, stgi, vmmcall};
use vmunit::{report, report_info};

/// How many round trips the latency cases time: kvm-unit-tests' one million would take a
/// minute under TCG.
const LATENCY_RUNS: u64 = 10_000;

/// Maximum, minimum and sum of a latency, in TSC cycles.
struct Latency {
    maximum: AtomicU64,
    minimum: AtomicU64,
    sum: AtomicU64,
}

impl Latency {
    const fn new() -> Latency {
        Latency {
            maximum: AtomicU64::new(0),
            minimum: AtomicU64::new(u64::MAX),
            sum: AtomicU64::new(0),
        }
    }

    fn add(&self, cycles: u64) {
        self.maximum.fetch_max(cycles, SeqCst);
        self.minimum.fetch_min(cycles, SeqCst);
        self.sum.fetch_add(cycles, SeqCst);
    }

    /// The INFO line with maximum, minimum and average (kvm-unit-tests' line), and the average
    /// as the BENCH line `case.operation`.
    fn report(&self, case: &str, name: &str, runs: u64) {
        let average = self.sum.load(SeqCst) / runs;
        report_info!(
            "Latency {name}: max: {} min: {} avg: {average}",
            self.maximum.load(SeqCst),
            self.minimum.load(SeqCst),
        );
        vmunit::benchmark::report(
            &alloc::format!("{case}.{}", name.to_lowercase()),
            average,
            "cycles",
        );
    }
}

/// kvm-unit-tests' latency_run_exit(_clean): the guest times each VMRUN from the host's last
/// TSC read, the host each #VMEXIT from the guest's, over LATENCY_RUNS VMMCALLs.
fn latency(svm: &mut Svm, clean: bool) {
    let start = AtomicU64::new(rdtsc());
    let run = Latency::new();
    let exit_latency = Latency::new();
    let guest = || {
        loop {
            run.add(rdtsc().wrapping_sub(start.load(SeqCst)));
            start.store(rdtsc(), SeqCst);
            vmmcall();
        }
    };
    let mut runs = 0;
    let mut other = None;
    svm.run(&guest, |exit| {
        exit_latency.add(rdtsc().wrapping_sub(start.load(SeqCst)));
        if exit.code() != ExitCode::Vmmcall {
            other = Some(exit.code());
            return true;
        }
        exit.skip_instruction();
        if clean {
            exit.set_clean(VMCB_CLEAN_ALL);
        }
        runs += 1;
        start.store(rdtsc(), SeqCst);
        runs == LATENCY_RUNS
    });
    report!(
        runs == LATENCY_RUNS && other.is_none(),
        "{LATENCY_RUNS} VMRUN/VMMCALL round trips (did {runs}; other exit {other:?})"
    );
    let case = if clean {
        "latency_run_exit_clean"
    } else {
        "latency_run_exit"
    };
    run.report(case, "VMRUN", runs.max(1));
    exit_latency.report(case, "VMEXIT", runs.max(1));
}

pub(crate) fn latency_run_exit(svm: &mut Svm) {
    latency(svm, false);
}

pub(crate) fn latency_run_exit_clean(svm: &mut Svm) {
    latency(svm, true);
}

/// latency_svm_insn: VMLOAD, VMSAVE, STGI and CLGI in the host, each timed LATENCY_RUNS times.
#[allow(unsafe_code)]
pub(crate) fn latency_svm_insn(svm: &mut Svm) {
    let address = svm.vmcb_address();
    let [load, save, set, clear] = [Latency::new(), Latency::new(), Latency::new(), Latency::new()];
    let time = |latency: &Latency, operation: &dyn Fn()| {
        let start = rdtsc();
        operation();
        latency.add(rdtsc().wrapping_sub(start));
    };
    // The state VMLOAD and VMSAVE move: as `reset` saved the host's own, it must survive.
    let moved = [
        IA32_STAR,
        IA32_LSTAR,
        IA32_CSTAR,
        IA32_KERNEL_GS_BASE,
        IA32_FS_BASE,
        IA32_GS_BASE,
        IA32_SYSENTER_CS,
        IA32_SYSENTER_ESP,
    ];
    let read_moved = || moved.map(|msr| try_rdmsr(msr).ok());
    let before = read_moved();
    interrupts::disable();
    for _ in 0..LATENCY_RUNS {
        // SAFETY: `reset` saved the host's own FS, GS, TR, LDTR and MSRs into this VMCB:
        // loading them changes nothing.
        time(&load, &|| unsafe {
            vmunit::arch::svm::vmload_instruction(address)
        });
        // SAFETY: saving them into the same VMCB rewrites the same values.
        time(&save, &|| unsafe {
            vmunit::arch::svm::vmsave_instruction(address)
        });
        time(&set, &stgi);
        time(&clear, &clgi);
    }
    stgi();
    let after = read_moved();
    let changed = moved
        .iter()
        .zip(before.iter().zip(after.iter()))
        .find(|(_, (before, after))| before != after);
    report!(
        changed.is_none(),
        "{LATENCY_RUNS} rounds of VMLOAD, VMSAVE, STGI and CLGI completed, the host's STAR, LSTAR, \
         CSTAR, KernelGSbase, FS/GS base and SYSENTER MSRs unchanged (first changed: {changed:x?})"
    );
    for (latency, name) in [
        (&load, "VMLOAD"),
        (&save, "VMSAVE"),
        (&set, "STGI"),
        (&clear, "CLGI"),
    ] {
        latency.report("latency_svm_insn", name, LATENCY_RUNS);
    }
}
