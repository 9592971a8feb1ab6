//! fpu (kvm-unit-tests' arm/fpu.c, entry `fpu-context`): the FP/SIMD register file (v0-v31,
//! FPCR, FPSR) and the SVE register file (Z0-Z31, P0-P15, FFR) keep their values while another
//! CPU loads its own.
//!
//! "hypervisor" checks hold the values across WFIs with IRQs masked while the other CPU loads
//! different values (the SVE ones at another vector length) and sends an SGI: no exception is
//! taken and no runtime code runs, so the only thing that can save and restore the registers is
//! the hypervisor, which deschedules the waiting vCPU (under KVM: `kvm_vcpu_block`, the vCPU
//! thread put and its FP/SVE state saved, the other vCPU's loaded on that host CPU). The SVE
//! checks run at every vector length the CPU offers (ZCR_EL1.LEN 0..15), in both directions
//! (CPU 0 holds and CPU 1 works, then the reverse), as kvm-unit-tests' cpu0/cpu1 context
//! switches do (which run at 128 bits only).
//!
//! Each vector length is also held across an MMIO read of a register the VMM emulates
//! (virtio-mmio MagicValue), which takes the vCPU out to the VMM's userspace.
//!
//! "runtime" checks exercise the runtime's own save and restore: v0-v31, FPCR and FPSR survive
//! a synchronous exception (BRK, resumed by the runtime), an IRQ whose handler itself uses SIMD
//! registers, and another CPU's work with its IPI taken while the values are held; at every
//! SVE vector length, Z0-Z31 (all their bits), P0-P15 and FFR survive the BRK and the IRQ.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use vmunit::arch::ExceptionClass;
use vmunit::arch::console::SerialInputWait;
use vmunit::arch::gic::{self, SgiTarget};
use vmunit::arch::handoff::Exchange;
use vmunit::arch::instructions::{FpEvent, FpState, fp_state_round_trip, set_fpcr, set_fpsr};
use vmunit::arch::mmu::map_device;
use vmunit::arch::registers::{ID_AA64PFR0_EL1, Readable, fpcr, fpsr, zfr0};
use vmunit::arch::smp::{cpu_count, cpu_index};
use vmunit::arch::sve::{self, SveError, SveState};
use vmunit::arch::timer;
use vmunit::{known_failure, prefix, report, report_info, report_skip, report_summary, trap_exceptions};

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

fn main(arguments: &[&str]) -> i32 {
    if arguments.contains(&"migration") {
        migration_checks(arguments);
        return report_summary();
    }
    let runtime = prefix("runtime");
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

    let cpu_switch = prefix("cpu-switch");
    if cpu_count() < 2 {
        report_skip!(
            "the CPU switch needs 2 CPUs (got {}; run with smp >= 2)",
            cpu_count()
        );
        return report_summary();
    }
    report!(EXCHANGE.set_up_cpu(1), "the GIC initialises on CPU 1");
    runtime_cpu_switch();
    drop(cpu_switch);
    drop(runtime);

    {
        let _prefix = prefix("hypervisor");
        fp_descheduled();
    }
    let _prefix = prefix("sve");
    sve_checks(arguments);
    // The runtime's own exception path at each length (from here: the hand-offs' frames are
    // gone from the stack).
    if sve::supported() {
        for &length in sve::offered_vector_lengths().as_slice() {
            sve_runtime_checks(length);
        }
    }
    report_summary()
}

/// Each CPU in turn holds its values (IRQs unmasked between polls) while the other loads its
/// own, takes a BRK and sends the first an IPI.
fn runtime_cpu_switch() {
    for (holder, worker) in [(0, 1), (1, 0)] {
        let _prefix = prefix!("CPU {holder} holds, CPU {worker} works");
        // Both sides are waited for before the roles swap.
        EXCHANGE.run(holder, worker, hold, work);
        let held = *RESULTS[0].lock();
        let worked = *RESULTS[1].lock();
        // What each side saw of the other: the worker found the holder's values loaded
        // before its own load, and the holder's polls ended because the worker was done.
        let outcome = EXCHANGE.outcome();
        report!(
            outcome.worker_saw_loaded && outcome.holder_saw_done,
            "the worker ran while CPU {holder} held its registers (expected loaded 1 and done 1, got {} and {})",
            u8::from(outcome.worker_saw_loaded),
            u8::from(outcome.holder_saw_done)
        );
        let seen = u8::from(EXCHANGE.interrupt_seen());
        report!(
            seen == 1,
            "CPU {holder} took the worker's IPI while holding its registers (expected 1, got {seen})"
        );
        check_both(
            held,
            worked,
            "another CPU's work and its IPI",
            "a BRK, on the worker CPU",
        );
    }
}

/// QEMU `virt`'s first virtio-mmio transport, a device the VMM emulates in userspace.
const VIRTIO_MMIO: u64 = 0x0a00_0000;
/// virtio-mmio MagicValue (offset 0): "virt" little-endian.
const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// The holder's values: what it loads and must read back.
fn holder_state() -> FpState {
    FpState::pattern(0xa5, FPCR_PATTERN, FPSR_PATTERN)
}

/// The worker's values, different in every byte and bit field from the holder's.
fn worker_state() -> FpState {
    FpState::pattern(0x3c, FPCR_OTHER, FPSR_OTHER)
}

/// The holder's and the worker's registers as they returned them, each checked against its
/// values across its event.
fn check_both(held: Option<FpState>, worked: Option<FpState>, holder_event: &str, worker_event: &str) {
    match (held, worked) {
        (Some(held), Some(worked)) => {
            check_state(&holder_state(), &held, holder_event);
            check_state(&worker_state(), &worked, worker_event);
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
/// The hand-off between the two CPUs (its worker signals with `SGI`).
static EXCHANGE: Exchange = Exchange::new(SGI);
/// SGIs handled, per CPU.
static HANDLED: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];

/// A second of polls (at least), so that a lost worker cannot hang the test.
fn polls() -> u64 {
    1 << 26
}

/// The holder: loads its values, waits with IRQs unmasked for the worker, reads them back.
fn hold() {
    *RESULTS[0].lock() = None;
    let after = EXCHANGE.hold(|| {
        fp_state_round_trip(
            &holder_state(),
            FpEvent::Handshake {
                loaded: EXCHANGE.loaded(),
                done: EXCHANGE.done(),
                polls: polls(),
            },
        )
    });
    *RESULTS[0].lock() = Some(after);
}

/// The worker: waits until the holder holds its values, runs its own round trip with a BRK,
/// sends the holder an SGI and waits until the holder took it.
fn work() {
    *RESULTS[1].lock() = None;
    let deadline = timer::virtual_count() + 5 * timer::frequency();
    let (after, _) = EXCHANGE.work(|| {
        trap_exceptions(&[ExceptionClass::BreakpointInstruction], || {
            fp_state_round_trip(&worker_state(), FpEvent::Breakpoint)
        })
    });
    *RESULTS[1].lock() = Some(after);
    gic::send_sgi(SGI, SgiTarget::Cpu(EXCHANGE.holder()));
    while !EXCHANGE.interrupt_seen() && timer::virtual_count() < deadline {
        core::hint::spin_loop();
    }
    EXCHANGE.done().store(1, Ordering::Release);
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
    EXCHANGE.interrupt_taken(cpu);
}

/// The FP/SIMD state each role returned in the hypervisor checks: 0 the holder, 1 the worker.
static FP_RESULTS: [spin::Mutex<Option<FpState>>; 2] = [const { spin::Mutex::new(None) }; 2];
/// The SVE state each role returned: 0 the holder, 1 the worker.
static SVE_RESULTS: [spin::Mutex<Option<Result<SveState, SveError>>>; 2] =
    [const { spin::Mutex::new(None) }; 2];
/// The holder's vector length (bytes) read after its wait.
static HOLDER_LENGTH_AFTER: AtomicUsize = AtomicUsize::new(0);

/// v0-v31, FPCR and FPSR held across WFIs with IRQs masked on one CPU while the other loads
/// its own values: both directions.
fn fp_descheduled() {
    for (holder, worker) in [(0, 1), (1, 0)] {
        let _prefix = prefix!("CPU {holder} waits, CPU {worker} loads");
        *FP_RESULTS[0].lock() = None;
        *FP_RESULTS[1].lock() = None;
        EXCHANGE.run(
            holder,
            worker,
            || {
                let after = EXCHANGE.hold_descheduled(|handoff| {
                    fp_state_round_trip(&holder_state(), FpEvent::Descheduled(handoff))
                });
                *FP_RESULTS[0].lock() = Some(after);
            },
            || {
                let after =
                    EXCHANGE.work_then_signal(|| fp_state_round_trip(&worker_state(), FpEvent::Nothing));
                *FP_RESULTS[1].lock() = Some(after);
            },
        );
        EXCHANGE.report(holder, worker);
        let held = *FP_RESULTS[0].lock();
        let worked = *FP_RESULTS[1].lock();
        check_both(held, worked, "a descheduled wait", "a load and store");
    }
}

/// A seed for the SVE patterns of one vector length and role, distinct for every pair.
fn sve_seed(length: usize, worker: bool) -> u8 {
    ((length / 16) as u8).wrapping_mul(17) ^ if worker { 0xc3 } else { 0x29 }
}

/// The SVE checks: the ID fields, the vector lengths ZCR_EL1.LEN offers, then the register file
/// at each of them held across a descheduled wait while the other CPU works at another length.
/// Never inlined: its frame (several SVE states) is gone before [`sve_runtime_checks`] runs.
#[inline(never)]
fn sve_checks(arguments: &[&str]) {
    let pfr0 = ID_AA64PFR0_EL1.get();
    if !sve::supported() {
        report_skip!("the CPU has no SVE (ID_AA64PFR0_EL1 {pfr0:#x}: SVE, bits 35:32, is 0)");
        return;
    }
    let zfr0 = sve::id_aa64zfr0_el1();
    report_info!(
        "ID_AA64PFR0_EL1.SVE {}, ID_AA64ZFR0_EL1 {zfr0:#x} (SVEver {}), ZCR_EL1 at boot {:#x}",
        (pfr0 >> sve::ID_AA64PFR0_SVE_SHIFT) & 0xf,
        zfr0::version(zfr0),
        sve::zcr_el1().unwrap_or(0)
    );
    let boot_length = sve::vector_length().unwrap_or(0);

    // The length each ZCR_EL1.LEN gives: at most (LEN + 1) x 128 bits, never shorter for a
    // larger LEN, 128 bits for LEN 0 (every SVE CPU offers it).
    let mut by_len = [0usize; 16];
    for (len, length) in by_len.iter_mut().enumerate() {
        *length = sve::set_vector_length(len + 1).unwrap_or(0);
    }
    let offered = sve::offered_vector_lengths();
    let lengths = offered.as_slice();
    let bits = |bytes: usize| bytes * 8;
    report!(
        by_len[0] == 16,
        "ZCR_EL1.LEN 0 gives 128-bit vectors (got {} bits)",
        bits(by_len[0])
    );
    let bounded = by_len
        .iter()
        .enumerate()
        .all(|(len, length)| length.is_multiple_of(16) && *length <= (len + 1) * 16);
    let monotonic = by_len.windows(2).all(|pair| pair[0] <= pair[1]);
    report!(
        bounded && monotonic,
        "ZCR_EL1.LEN n gives a multiple of 128 bits, at most (n + 1) x 128, never less than for n - 1 (got {:?} bytes)",
        by_len
    );
    let largest = lengths.iter().copied().max().unwrap_or(0);
    report!(
        boot_length == largest,
        "the boot code's ZCR_EL1.LEN 0xf gives the largest length, {} bits (got {})",
        bits(largest),
        bits(boot_length)
    );
    let powers_offered = (0..5)
        .map(|shift| 16usize << shift)
        .filter(|length| *length <= largest)
        .all(|length| lengths.contains(&length));
    report!(
        powers_offered,
        "every power-of-two length up to the largest is offered (offered {:?} bytes)",
        lengths
    );
    if let Some(expected) = arguments
        .iter()
        .find_map(|argument| argument.strip_prefix("sve-lengths="))
    {
        report!(
            offered.are_bits(expected),
            "the offered lengths are the test_args' {expected} bits (offered {:?} bytes)",
            lengths
        );
    }

    // Each length also across an MMIO read the VMM emulates (virtio-mmio MagicValue): the
    // vCPU leaves for the VMM's userspace and comes back.
    match map_device(VIRTIO_MMIO, 0x1000) {
        Ok(window) => {
            for &length in lengths {
                let _prefix = prefix!("{} bits", bits(length));
                let value = AtomicU32::new(0);
                let state =
                    SveState::pattern(sve_seed(length, false) ^ 0x77, length, FPCR_PATTERN, FPSR_PATTERN);
                let after = sve::sve_state_round_trip(
                    &state,
                    sve::Event::DeviceRead {
                        window: &window,
                        offset: 0,
                        value: &value,
                    },
                );
                let read = value.load(Ordering::Acquire);
                report!(
                    read == VIRTIO_MAGIC,
                    "the held MMIO read of virtio-mmio MagicValue returned {VIRTIO_MAGIC:#x} (got {read:#x})"
                );
                check_sve(&state, Some(&after), "an MMIO read the VMM emulates");
            }
        }
        Err(problem) => {
            report!(false, "the virtio-mmio page maps ({problem:?})");
        }
    }

    for (index, &length) in lengths.iter().enumerate() {
        // The worker runs at another length (the next offered one) when there is one.
        let worker_length = lengths[(index + 1) % lengths.len()];
        for (holder, worker) in [(0, 1), (1, 0)] {
            let _length = prefix!("{} bits", bits(length));
            let _prefix = prefix!(
                "CPU {holder} waits, CPU {worker} loads at {} bits",
                bits(worker_length)
            );
            *SVE_RESULTS[0].lock() = None;
            *SVE_RESULTS[1].lock() = None;
            HOLDER_LENGTH_AFTER.store(0, Ordering::Release);
            EXCHANGE.run(
                holder,
                worker,
                move || {
                    let state =
                        SveState::pattern(sve_seed(length, false), length, FPCR_PATTERN, FPSR_PATTERN);
                    let after = EXCHANGE.hold_descheduled(|handoff| {
                        sve::sve_state_round_trip(&state, sve::Event::Descheduled(handoff))
                    });
                    HOLDER_LENGTH_AFTER.store(sve::vector_length().unwrap_or(0), Ordering::Release);
                    *SVE_RESULTS[0].lock() = Some(after);
                },
                move || {
                    let state = SveState::pattern(
                        sve_seed(worker_length, true),
                        worker_length,
                        FPCR_OTHER,
                        FPSR_OTHER,
                    );
                    let after =
                        EXCHANGE.work_then_signal(|| sve::sve_state_round_trip(&state, sve::Event::Nothing));
                    *SVE_RESULTS[1].lock() = Some(after);
                },
            );
            EXCHANGE.report(holder, worker);
            let after = HOLDER_LENGTH_AFTER.load(Ordering::Acquire);
            report!(
                after == length,
                "CPU {holder}'s vector length stays {} bits (got {})",
                bits(length),
                bits(after)
            );
            let expected = SveState::pattern(sve_seed(length, false), length, FPCR_PATTERN, FPSR_PATTERN);
            check_sve(&expected, SVE_RESULTS[0].lock().as_ref(), "a descheduled wait");
            let expected = SveState::pattern(
                sve_seed(worker_length, true),
                worker_length,
                FPCR_OTHER,
                FPSR_OTHER,
            );
            check_sve(&expected, SVE_RESULTS[1].lock().as_ref(), "a load and store");
        }
    }
}

/// Z, P and FFR at `length` held across the runtime's own exception path: a BRK and an IRQ
/// whose handler uses v0-v31 (which zeroes the rest of each Z it writes). Its own frame, so
/// that its states leave the stack before the hand-offs.
#[inline(never)]
fn sve_runtime_checks(length: usize) {
    let bits = |bytes: usize| bytes * 8;
    let _prefix = prefix!("runtime {} bits", bits(length));
    let state = SveState::pattern(sve_seed(length, false) ^ 0x33, length, FPCR_PATTERN, FPSR_PATTERN);
    let (after, seen) = trap_exceptions(&[ExceptionClass::BreakpointInstruction], || {
        sve::sve_state_round_trip(&state, sve::Event::Breakpoint)
    });
    report!(
        seen.len() == 1,
        "the BRK was taken and resumed once (got {})",
        seen.len()
    );
    check_sve(&state, Some(&after), "a BRK exception");
    drop(after);
    let handled = HANDLED[0].load(Ordering::Acquire);
    gic::send_sgi(SGI, SgiTarget::Cpu(0));
    let after = sve::sve_state_round_trip(&state, sve::Event::InterruptWindow);
    let count = HANDLED[0].load(Ordering::Acquire) - handled;
    report!(
        count == 1,
        "the SGI was handled inside the register round trip (got {count})"
    );
    check_sve(&state, Some(&after), "an IRQ whose handler uses SIMD");
}

fn check_sve(expected: &SveState, got: Option<&Result<SveState, SveError>>, event: &str) {
    match got {
        Some(Ok(got)) => {
            let difference = expected.first_difference(got, FPCR_MASK, FPSR_MASK);
            let first = difference.map(|register| match register {
                sve::SveRegister::Z(number) => {
                    let length = expected.vector_length;
                    let start = number as usize * length;
                    let byte = (start..start + length).find(|index| expected.z[*index] != got.z[*index]);
                    let (expected_high, expected_low) = expected.z_low_quadword(number as usize);
                    let (got_high, got_low) = got.z_low_quadword(number as usize);
                    report_info!(
                        "z{number}: first differing byte {:?}; low 128 bits expected {expected_high:016x}_{expected_low:016x}, got {got_high:016x}_{got_low:016x}",
                        byte.map(|index| index - start)
                    );
                    register
                }
                other => other,
            });
            report!(
                first.is_none(),
                "Z0-Z31, P0-P15, FFR, FPCR and FPSR hold their values across {event} (first differing: {first:?})"
            );
        }
        Some(Err(problem)) => {
            report!(false, "the SVE round trip ran ({problem:?})");
        }
        None => {
            report!(false, "the CPU returned its SVE registers");
        }
    }
}

/// The FP/SIMD and SVE register files across live migrations (test_args `migration`).
fn migration_checks(arguments: &[&str]) {
    let _prefix = prefix("migration");
    let Some(wait) = SerialInputWait::console() else {
        report!(
            false,
            "the device tree names the console UART the migration wait polls"
        );
        vmunit::migrate_skip();
        return;
    };
    {
        let _prefix = prefix("fp");
        let state = FpState::pattern(0x6b, FPCR_PATTERN, FPSR_PATTERN);
        match vmunit::migrate_holding(|| fp_state_round_trip(&state, FpEvent::SerialInput(wait))) {
            Ok(after) => check_state(&state, &after, "a live migration"),
            // Not a migration run: the SKIP line says so.
            Err(_) => return,
        }
    }
    if !sve::supported() {
        report_skip!(
            "the CPU has no SVE (ID_AA64PFR0_EL1 {:#x}): no SVE registers to migrate",
            ID_AA64PFR0_EL1.get()
        );
        return;
    }
    let reproduce = arguments.contains(&"reproduce-sve-high-bits");
    let boot_length = sve::vector_length().unwrap_or(0);
    // The largest offered length that QEMU's migration stream carries whole and that is not
    // the boot code's (so that ZCR_EL1.LEN set back to the boot value is caught).
    let migrated_whole = sve::offered_vector_lengths()
        .as_slice()
        .iter()
        .copied()
        .filter(|length| *length < boot_length && *length <= QEMU_MIGRATED_Z_BYTES)
        .max();
    // Under TCG, Z bits 1024 and up are a known failure (not in the reproducer).
    let known = tcg() && !reproduce;
    if !reproduce && let Some(length) = migrated_whole {
        sve_migration(wait, length, boot_length, known);
    }
    // The boot code's length, the largest.
    sve_migration(wait, boot_length, boot_length, known);
}

/// The bytes of each Z register QEMU's migration stream carries: target/arm/machine.c's
/// `vmstate_zreg_hi_reg` sends `VMSTATE_UINT64_SUB_ARRAY(d, ARMVectorReg, 2, ARM_MAX_VQ - 2)`,
/// words 2 to 15 of the 32 in `ARMVectorReg.d` (the low two go with `cpu/vfp`): bits 0-1023.
const QEMU_MIGRATED_Z_BYTES: usize = 128;
/// The known failure the bits above [`QEMU_MIGRATED_Z_BYTES`] meet under TCG.
const QEMU_SVE_HIGH_BITS: &str = "QEMU's migration stream carries Z bits 0-1023 only (target/arm/machine.c, vmstate_zreg_hi_reg: \
     VMSTATE_UINT64_SUB_ARRAY(d, ARMVectorReg, 2, ARM_MAX_VQ - 2) where 2 * ARM_MAX_VQ - 2 words are due); \
     reproducer: reproduce-sve-migration-high-bits";

fn tcg() -> bool {
    vmunit::env("ACCEL") == Some("tcg")
}

/// Z0-Z31, P0-P15, FFR, FPCR and FPSR at `length`, and ZCR_EL1.LEN, across a live migration.
/// Its own frame for the SVE states.
#[inline(never)]
fn sve_migration(wait: SerialInputWait, length: usize, boot_length: usize, known: bool) {
    let bits = |bytes: usize| bytes * 8;
    let _prefix = prefix!("sve {} bits", bits(length));
    let len = (length / 16).saturating_sub(1);
    report_info!(
        "held at ZCR_EL1.LEN {len} (the boot code's length is {} bits)",
        bits(boot_length)
    );
    let state = SveState::pattern(0x4d ^ len as u8, length, FPCR_PATTERN, FPSR_PATTERN);
    let Ok(after) =
        vmunit::migrate_holding(|| sve::sve_state_round_trip(&state, sve::Event::SerialInput(wait)))
    else {
        return;
    };
    // Read before anything sets the length again: the round trip leaves it at `length`.
    let zcr = sve::zcr_el1().unwrap_or(u64::MAX);
    let length_after = sve::vector_length().unwrap_or(0);
    report!(
        zcr & sve::ZCR_LEN == len as u64,
        "ZCR_EL1.LEN keeps {len} across a live migration (ZCR_EL1 {zcr:#x})"
    );
    report!(
        length_after == length,
        "the vector length stays {} bits across a live migration (got {})",
        bits(length),
        bits(length_after)
    );
    let mut after = after;
    if length <= QEMU_MIGRATED_Z_BYTES {
        check_sve(&state, Some(&after), "a live migration");
        return;
    }
    let Ok(got) = after.as_mut() else {
        check_sve(&state, Some(&after), "a live migration");
        return;
    };
    // The bits above 1023 of each Z first; then they are set to the expected ones (in place: the
    // stack holds two states at most) for the check of bits 0-1023, P, FFR, FPCR and FPSR.
    let high_difference = (0..32).find(|register| {
        let range = register * length + QEMU_MIGRATED_Z_BYTES..(register + 1) * length;
        state.z[range.clone()] != got.z[range]
    });
    for register in 0..32 {
        let range = register * length + QEMU_MIGRATED_Z_BYTES..(register + 1) * length;
        got.z[range.clone()].copy_from_slice(&state.z[range]);
    }
    check_sve(&state, Some(&after), "a live migration (Z bits 0-1023)");
    known_failure(known, QEMU_SVE_HIGH_BITS, || {
        report!(
            high_difference.is_none(),
            "Z0-Z31 bits 1024-{} hold their values across a live migration (first differing: {:?})",
            bits(length) - 1,
            high_difference.map(|register| sve::SveRegister::Z(register as u8))
        );
    });
}
