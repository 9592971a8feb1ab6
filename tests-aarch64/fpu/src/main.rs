//! fpu: the FP/SIMD register file (v0-v31, FPCR, FPSR) survives a synchronous exception (BRK,
//! resumed by the runtime), an IRQ whose handler itself uses SIMD registers, and work on
//! another CPU: while one CPU holds its values in the registers, the other (through `on_cpu`)
//! loads different values, takes a BRK and sends the first an IPI; then the roles swap. Each
//! CPU must keep its own values.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use vmunit::arch::ExceptionClass;
use vmunit::arch::gic::{self, SgiTarget};
use vmunit::arch::instructions::{FpEvent, FpState, fp_state_round_trip, set_fpcr, set_fpsr};
use vmunit::arch::registers::{fpcr, fpsr};
use vmunit::arch::smp::{cpu_count, cpu_index, on_cpu, on_cpu_async};
use vmunit::arch::timer;
use vmunit::{prefix, report, report_skip, report_summary, trap_exceptions};

vmunit::main!(main);

const SGI: u32 = 2;
/// FPCR.RMode = 0b11 (round towards zero) and FPCR.FZ: a value the runtime never sets.
const FPCR_PATTERN: u64 = fpcr::ROUND_TOWARD_ZERO | fpcr::FZ;
/// FPCR.RMode = 0b01 (towards +infinity) and FPCR.DN: the other CPU's value.
const FPCR_OTHER: u64 = fpcr::ROUND_TOWARD_PLUS_INFINITY | fpcr::DN;
/// FPSR.QC, IDC, OFC and IOC.
const FPSR_PATTERN: u64 = fpsr::QC | fpsr::IDC | fpsr::OFC | fpsr::IOC;
/// FPSR.QC, IXC, UFC and DZC: the other CPU's value.
const FPSR_OTHER: u64 = fpsr::QC | fpsr::IXC | fpsr::UFC | fpsr::DZC;
/// The FPCR bits this test sets (others may read as 0 where not implemented).
const FPCR_MASK: u64 = fpcr::RMODE | fpcr::FZ | fpcr::DN;
/// The FPSR bits this test sets.
const FPSR_MASK: u64 = fpsr::QC | fpsr::CUMULATIVE_FLAGS;

fn main(_arguments: &[&str]) -> i32 {
    {
        let _prefix = prefix("exception");
        let before = FpState::pattern(0x11, FPCR_PATTERN, FPSR_PATTERN);
        let (after, seen) = trap_exceptions(&[ExceptionClass::BreakpointInstruction], || {
            fp_state_round_trip(&before, FpEvent::Breakpoint)
        });
        report!(
            seen.len() == 1,
            "the BRK was taken and resumed once (got {})",
            seen.len()
        );
        check_state(&before, &after, "a BRK exception");
    }

    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return report_summary();
    }
    vmunit::arch::set_interrupt_handler(SGI, Some(simd_handler));
    gic::enable(SGI);
    {
        let _prefix = prefix("interrupt");
        let before = FpState::pattern(0x5a, FPCR_PATTERN, FPSR_PATTERN);
        let handled = HANDLED[0].load(Ordering::Acquire);
        gic::send_sgi(SGI, SgiTarget::Cpu(0));
        let after = fp_state_round_trip(&before, FpEvent::InterruptWindow);
        let count = HANDLED[0].load(Ordering::Acquire) - handled;
        report!(
            count == 1,
            "the SGI was handled inside the register round trip (got {count})"
        );
        check_state(&before, &after, "an IRQ whose handler uses SIMD");
    }

    let _prefix = prefix("cpu-switch");
    if cpu_count() < 2 {
        report_skip!(
            "the CPU switch needs 2 CPUs (got {}; run with smp >= 2)",
            cpu_count()
        );
        return report_summary();
    }
    on_cpu(1, set_up_cpu);
    report!(
        GIC_READY.load(Ordering::Acquire) == 1,
        "the GIC initialises on CPU 1"
    );
    for (holder, worker) in [(0, 1), (1, 0)] {
        let _prefix = prefix!("CPU {holder} holds, CPU {worker} works");
        LOADED.store(0, Ordering::Release);
        DONE.store(0, Ordering::Release);
        IPI_SEEN.store(0, Ordering::Release);
        HOLDER.store(holder as u32, Ordering::Release);
        if holder == 0 {
            on_cpu_async(worker, work);
            hold();
            // Wait for the worker to finish completely before the roles swap.
            on_cpu(worker, || {});
        } else {
            on_cpu_async(holder, hold);
            work();
            on_cpu(holder, || {});
        }
        let held = *RESULTS[0].lock();
        let worked = *RESULTS[1].lock();
        report!(
            DONE.load(Ordering::Acquire) == 1,
            "the worker ran while CPU {holder} held its registers (expected loaded 1 and done 1, got {} and {})",
            LOADED.load(Ordering::Acquire),
            DONE.load(Ordering::Acquire)
        );
        let seen = IPI_SEEN.load(Ordering::Acquire);
        report!(
            seen == 1,
            "CPU {holder} took the worker's IPI while holding its registers (expected 1, got {seen})"
        );
        match (held, worked) {
            (Some(held), Some(worked)) => {
                check_state(&holder_state(), &held, "another CPU's work and its IPI");
                check_state(&worker_state(), &worked, "a BRK, on the worker CPU");
            }
            _ => {
                report!(
                    false,
                    "both CPUs returned their registers (holder {}, worker {})",
                    held.is_some(),
                    worked.is_some()
                );
            }
        }
    }
    report_summary()
}

/// The holder's values: what it loads and must read back.
fn holder_state() -> FpState {
    FpState::pattern(0xa5, FPCR_PATTERN, FPSR_PATTERN)
}

/// The worker's values, different in every byte and bit field from the holder's.
fn worker_state() -> FpState {
    FpState::pattern(0x3c, FPCR_OTHER, FPSR_OTHER)
}

fn check_state(expected: &FpState, got: &FpState, event: &str) {
    let difference = expected.first_vector_difference(got);
    report!(
        difference.is_none(),
        "v0-v31 hold their values across {event} (first differing register: {difference:?})"
    );
    report!(
        got.fpcr & FPCR_MASK == expected.fpcr,
        "FPCR keeps {:#x} across {event} (got {:#x})",
        expected.fpcr,
        got.fpcr
    );
    report!(
        got.fpsr & FPSR_MASK == expected.fpsr,
        "FPSR keeps {:#x} across {event} (got {:#x})",
        expected.fpsr,
        got.fpsr
    );
}

/// The state each role returned: index 0 the holder, 1 the worker.
static RESULTS: [spin::Mutex<Option<FpState>>; 2] = [const { spin::Mutex::new(None) }; 2];
/// Set by the holder once its registers hold its values.
static LOADED: AtomicU32 = AtomicU32::new(0);
/// Set by the worker once it ran and the holder took its IPI.
static DONE: AtomicU32 = AtomicU32::new(0);
/// Set when the holder's handler ran for the worker's SGI.
static IPI_SEEN: AtomicU32 = AtomicU32::new(0);
/// The holder's CPU index.
static HOLDER: AtomicU32 = AtomicU32::new(0);
/// Set when CPU 1's GIC interface is ready.
static GIC_READY: AtomicU32 = AtomicU32::new(0);
/// SGIs handled, per CPU.
static HANDLED: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];

fn set_up_cpu() {
    if gic::init().is_ok() {
        gic::enable(SGI);
        GIC_READY.store(1, Ordering::Release);
    }
}

/// A second of polls (at least), so that a lost worker cannot hang the test.
fn polls() -> u64 {
    1 << 26
}

/// The holder: loads its values, waits with IRQs unmasked for the worker, reads them back.
fn hold() {
    *RESULTS[0].lock() = None;
    let after = fp_state_round_trip(
        &holder_state(),
        FpEvent::Handshake {
            loaded: &LOADED,
            done: &DONE,
            polls: polls(),
        },
    );
    *RESULTS[0].lock() = Some(after);
}

/// The worker: waits until the holder holds its values, runs its own round trip with a BRK,
/// sends the holder an SGI and waits until the holder took it.
fn work() {
    *RESULTS[1].lock() = None;
    let deadline = timer::virtual_count() + 5 * timer::frequency();
    while LOADED.load(Ordering::Acquire) == 0 && timer::virtual_count() < deadline {
        core::hint::spin_loop();
    }
    let (after, _) = trap_exceptions(&[ExceptionClass::BreakpointInstruction], || {
        fp_state_round_trip(&worker_state(), FpEvent::Breakpoint)
    });
    *RESULTS[1].lock() = Some(after);
    let holder = HOLDER.load(Ordering::Acquire) as usize;
    gic::send_sgi(SGI, SgiTarget::Cpu(holder));
    while IPI_SEEN.load(Ordering::Acquire) == 0 && timer::virtual_count() < deadline {
        core::hint::spin_loop();
    }
    DONE.store(1, Ordering::Release);
}

/// An IRQ handler that works the SIMD registers hard (the compiler vectorises this), then
/// overwrites all of v0-v31 and leaves FPCR and FPSR changed.
fn simd_handler(_intid: u32) {
    let mut values = core::hint::black_box([1.25f64; 64]);
    for (index, value) in values.iter_mut().enumerate() {
        *value = *value * index as f64 + 0.5;
    }
    let copy = core::hint::black_box(values);
    core::hint::black_box(copy.iter().sum::<f64>());
    // Every vector register, FPCR and FPSR get other values.
    fp_state_round_trip(
        &FpState::pattern(0xff, 0, fpsr::CUMULATIVE_FLAGS),
        FpEvent::Nothing,
    );
    set_fpcr(0);
    set_fpsr(fpsr::CUMULATIVE_FLAGS);
    let cpu = cpu_index();
    if let Some(count) = HANDLED.get(cpu) {
        count.fetch_add(1, Ordering::AcqRel);
    }
    if cpu == HOLDER.load(Ordering::Acquire) as usize {
        IPI_SEEN.store(1, Ordering::Release);
    }
}
