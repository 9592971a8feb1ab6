//! svm_init_intercept_test: with the INIT intercept set, an INIT the guest sends to its own
//! CPU exits with INIT (kvm-unit-tests runs it on a CPU of its own, `.on_vcpu = 2`: the INIT
//! stays pending for the host, AMD APM Vol. 2, 15.17 and 15.13.2, and takes that CPU once GIF is
//! set again). Here CPU 1 runs the guest with the boot CPU's harness, the boot CPU reads the
//! #VMEXIT from the VMCB, and brings CPU 1 back with INIT and STARTUP.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::instructions::rdtsc;
use vmunit::arch::svm::{ExitCode, Intercept, Svm};
use vmunit::arch::{apic, smp};
use vmunit::{known_failure, report};

/// How long the boot CPU waits for CPU 1's run (TSC ticks; the INIT takes CPU 1 long before).
const WAIT: u64 = 500_000_000;

/// The guest sent its INIT.
static SENT: AtomicBool = AtomicBool::new(false);
/// CPU 1 turned SVM on.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The exit the host's `finished` saw on CPU 1, plus one (0: it never ran).
static HOST_SAW: AtomicU64 = AtomicU64::new(0);
/// CPU 1's run returned (the INIT never took it).
static RETURNED: AtomicBool = AtomicBool::new(false);

/// The QEMU defect the host-side check meets.
pub const INIT_WITH_GIF_CLEAR_DEFECT: &str = "QEMU's cpu_handle_interrupt (accel/tcg/cpu-exec.c; x86_cpu_exec_reset in target/i386/tcg/tcg-cpu.c after 10.0) takes a pending INIT whatever GIF is: after the INIT #VMEXIT the host is reset before it runs another instruction (reproduce-svm-init-with-gif-clear)";

/// The guest: an INIT IPI to its own APIC ID (kvm-unit-tests uses the self shorthand).
fn guest() {
    SENT.store(true, SeqCst);
    apic::send_init(apic::id());
}

/// What the run on CPU 1 showed.
struct Outcome {
    exit: ExitCode,
    host_saw: Option<ExitCode>,
    restarted: bool,
}

fn run_on_cpu_1(svm: &mut Svm) -> Outcome {
    SENT.store(false, SeqCst);
    ENABLED.store(false, SeqCst);
    HOST_SAW.store(0, SeqCst);
    RETURNED.store(false, SeqCst);
    svm.set_intercept(Intercept::Init);
    let address = svm as *mut Svm as usize;
    smp::on_cpu_async(1, move || {
        if vmunit::arch::svm::enable().is_err() {
            return;
        }
        ENABLED.store(true, SeqCst);
        #[allow(unsafe_code)]
        // SAFETY: the boot CPU lent this harness: it waits without touching it until this run
        // returned or this CPU was reset.
        let svm = unsafe { &mut *(address as *mut Svm) };
        #[allow(unsafe_code)]
        // SAFETY: the guest stores a flag and writes the APIC's ICR: it raises no exception,
        // and with GIF set only by VMRUN no interrupt is dispatched in it (V_INTR_MASKING).
        unsafe {
            svm.run_on_this_cpu(&guest, |exit| {
                HOST_SAW.store(exit.code().raw().wrapping_add(1), SeqCst);
                true
            })
        };
        RETURNED.store(true, SeqCst);
    });
    let start = rdtsc();
    while !RETURNED.load(SeqCst) && rdtsc().wrapping_sub(start) < WAIT {
        core::hint::spin_loop();
    }
    // CPU 1 is held in INIT (or its run returned) while the boot CPU reads what it left.
    let mut exit = ExitCode::Other(0);
    let reset = smp::reset_cpu(1, || exit = svm.vmcb().control.exit());
    let host_saw = match HOST_SAW.load(SeqCst) {
        0 => None,
        raw => Some(ExitCode::from_raw(raw.wrapping_sub(1))),
    };
    Outcome {
        exit,
        host_saw,
        restarted: reset.restarted,
    }
}

/// svm_init_intercept_test: the guest's INIT to its own CPU exits with INIT.
pub fn svm_init_intercept_test(svm: &mut Svm) {
    let outcome = run_on_cpu_1(svm);
    report!(
        ENABLED.load(SeqCst) && SENT.load(SeqCst),
        "the guest on CPU 1 sent an INIT to itself"
    );
    report!(
        outcome.exit == ExitCode::Init,
        "INIT to vcpu intercepted: the #VMEXIT is INIT (got {})",
        outcome.exit
    );
    known_failure(is_tcg(), INIT_WITH_GIF_CLEAR_DEFECT, || {
        report!(
            outcome.host_saw == Some(ExitCode::Init),
            "the intercepted INIT stays pending while GIF is clear: the host runs on after the #VMEXIT (saw {:?})",
            outcome.host_saw
        );
    });
    report!(
        outcome.restarted,
        "CPU 1 comes back online after INIT and STARTUP (its run returned: {})",
        RETURNED.load(SeqCst)
    );
}

/// reproduce-svm-init-with-gif-clear: after an INIT #VMEXIT, the host's code between the
/// #VMEXIT and STGI runs with GIF clear, which holds the INIT pending.
pub fn reproduce_init_with_gif_clear(svm: &mut Svm) {
    let outcome = run_on_cpu_1(svm);
    report!(
        outcome.exit == ExitCode::Init && outcome.host_saw == Some(ExitCode::Init),
        "after an INIT #VMEXIT the host runs on with GIF clear (exit {}, host saw {:?})",
        outcome.exit,
        outcome.host_saw
    );
}
