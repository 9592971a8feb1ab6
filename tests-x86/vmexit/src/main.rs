//! vmexit: kvm-unit-tests' vmexit microbenchmarks. Each argument names a benchmark (none: all
//! of them); each times an operation that exits to the hypervisor (CPUID, VMCALL, CR8, port
//! input and output, WBINVD and INVD, IPIs, the TSC-deadline timer, MSR, DR7, CR0 and CR4
//! writes, pci-testdev's MMIO and port triggers; and the PAUSE loops of a token passed round
//! the CPUs, for pause-loop exiting) and prints the TSC
//! cycles per operation as `BENCH: <name>=<cycles> cycles` (`vmunit::benchmark`). Unlike
//! kvm-unit-tests, every benchmark also checks that its operation really happened (CPUID
//! returned the vendor, the IPI handler ran once per IPI on the other CPU, the PM timer
//! advanced, VMCALL returned -KVM_ENOSYS or raised #UD, the PIC's ELCR read what was written
//! to it, ...), so a broken hypervisor FAILs. The mitigation-MSR benchmarks skip, saying which
//! CPUID or IA32_ARCH_CAPABILITIES bit is clear, where the MSR is not advertised.
//!
//! Batches double in size from 64 operations until one lasts 20 ms (kvm-unit-tests: 2^30
//! cycles), so a run takes at most about a second, also under TCG and kvm_pvm.
//! "Parallel" benchmarks run the batch on every CPU at once, as kvm-unit-tests does.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vmunit::arch::acpi::pm_timer;
use vmunit::arch::apic::{self, register};
use vmunit::arch::control::{
    Cr0Flags, Cr4Flags, read_cr0, read_cr4, read_cr8, try_write_cr0, try_write_cr4, write_cr8,
};
use vmunit::arch::cpuid::{Feature, cpuid, hypervisor_signature, vendor_string};
use vmunit::arch::debug::{dr7, read_dr7, write_dr7};
use vmunit::arch::exceptions::wait_for_interrupt;
use vmunit::arch::instructions::{
    HypercallInstruction, in_u8, in_u32, invd, kvm, out_u8, out_u16, out_u32, rdtsc, wbinvd,
};
use vmunit::arch::ioapic::{ELCR_MASTER, ELCR_MASTER_WRITABLE};
use vmunit::arch::msr::{self, try_rdmsr, try_wrmsr};
use vmunit::arch::probes::interrupt_window;
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpu, on_cpu_async, on_cpus};
use vmunit::arch::{interrupts, set_interrupt_handler};
use vmunit::benchmark::{self, Sample};
use vmunit::memory::{Protection, TestPage};
use vmunit::pci::testdev::{self, TestDevice, Trigger};
use vmunit::pci::{Bar, HostBridge, device, vendor};
use vmunit::{Vector, catch_exception, known_failure, prefix, report, report_fail, report_info, report_skip};

vmunit::main!(main);

/// The unit of every measurement: TSC ticks, which kvm-unit-tests calls cycles.
const UNIT: &str = "cycles";
/// A batch ends the doubling once it lasts this many milliseconds.
const BUDGET_MILLISECONDS: u64 = 20;
/// The first batch's size.
const FIRST_BATCH: u64 = 64;
/// The largest batch.
const MAXIMUM_BATCH: u64 = 1 << 18;
/// Milliseconds to wait for an interrupt that must come.
const PATIENCE_MILLISECONDS: u64 = 100;

/// The vector of the benchmarks' IPIs and timer interrupts (kvm-unit-tests' IPI_TEST_VECTOR).
const VECTOR: u8 = 0xb0;
/// A task priority whose class (0xf) holds `VECTOR` (class 0xb) pending.
const BLOCKING_PRIORITY: u32 = 0xf0;

/// KVM's answer to an unknown hypercall: -KVM_ENOSYS.
const KVM_UNKNOWN_HYPERCALL: u64 = kvm::failure(kvm::ENOSYS);
/// A port nothing decodes: reads return all ones (kvm-unit-tests' inl_from_qemu).
const UNASSIGNED_PORT: u16 = 0x1234;

/// A benchmark: its name (the argument that selects it) and its body, which checks the
/// operation and returns the sample to report (`None` when it skipped).
type Benchmark = (&'static str, fn(&'static str) -> Option<Sample>);

const BENCHMARKS: &[Benchmark] = &[
    ("cpuid", cpuid_benchmark),
    ("vmcall", hypercall_benchmark),
    ("wbinvd", cache_flush),
    ("invd", cache_flush),
    ("mov_from_cr8", mov_from_cr8),
    ("mov_to_cr8", mov_to_cr8),
    ("inl_from_pmtimer", inl_from_pmtimer),
    ("inl_from_qemu", inl_from_qemu),
    ("inl_from_kernel", inl_from_kernel),
    ("outl_to_kernel", outl_to_kernel),
    ("mov_dr", mov_dr),
    ("tscdeadline_immed", tsc_deadline),
    ("tscdeadline", tsc_deadline),
    ("self_ipi_sti_nop", self_ipi),
    ("self_ipi_sti_hlt", self_ipi),
    ("self_ipi_tpr", self_ipi),
    ("self_ipi_tpr_sti_nop", self_ipi),
    ("self_ipi_tpr_sti_hlt", self_ipi),
    ("x2apic_self_ipi_sti_nop", self_ipi),
    ("x2apic_self_ipi_sti_hlt", self_ipi),
    ("x2apic_self_ipi_tpr", self_ipi),
    ("x2apic_self_ipi_tpr_sti_nop", self_ipi),
    ("x2apic_self_ipi_tpr_sti_hlt", self_ipi),
    ("ipi", ipi),
    ("ipi_halt", ipi),
    ("ple_round_robin", ple_round_robin),
    ("wr_kernel_gs_base", wr_kernel_gs_base),
    ("wr_tsx_ctrl_msr", wr_tsx_ctrl_msr),
    ("wr_ibrs_msr", wr_ibrs_msr),
    ("wr_ibpb_msr", wr_ibpb_msr),
    ("wr_tsc_adjust_msr", tsc_adjust),
    ("rd_tsc_adjust_msr", tsc_adjust),
    ("toggle_cr0_wp", toggle_cr0_wp),
    ("toggle_cr4_pge", toggle_cr4_pge),
    ("pci-mem", pci_mem),
    ("pci-io", pci_io),
];

fn main(args: &[&str]) {
    let mut selected: Vec<&Benchmark> = Vec::new();
    for arg in args {
        match BENCHMARKS.iter().find(|(name, _)| name == arg) {
            Some(benchmark) => selected.push(benchmark),
            None => {
                report_fail!("argument {arg:?} names a benchmark of this test");
            }
        }
    }
    if args.is_empty() {
        selected.extend(BENCHMARKS);
    }
    for (name, run) in selected {
        let sample = {
            let _prefix = prefix(name);
            run(name)
        };
        if let Some(sample) = sample {
            benchmark::report_sample(name, sample, UNIT);
        }
    }
}

/// Errors the CPUs counted in the current batch of a parallel benchmark.
static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Times `operation(iterations)` (which returns how many of its iterations went wrong) in
/// batches on every CPU at once; returns the last batch and its error count.
fn measure_parallel(operation: impl Fn(u64) -> u64 + Sync) -> (Sample, u64) {
    let sample = benchmark::measure(BUDGET_MILLISECONDS, FIRST_BATCH, MAXIMUM_BATCH, |iterations| {
        ERRORS.store(0, Ordering::SeqCst);
        on_cpus(|| {
            ERRORS.fetch_add(operation(iterations), Ordering::SeqCst);
        });
    });
    (sample, ERRORS.load(Ordering::SeqCst))
}

/// Times `batch(iterations)` on this CPU.
fn measure(batch: impl FnMut(u64)) -> Sample {
    benchmark::measure(BUDGET_MILLISECONDS, FIRST_BATCH, MAXIMUM_BATCH, batch)
}

/// The TSC ticks to wait for an interrupt that must come.
fn patience() -> u64 {
    vmunit::time::ticks_in(PATIENCE_MILLISECONDS)
}

/// Spins until `counter` exceeds `value` or the patience runs out; returns whether it did.
fn wait_past(counter: &AtomicU64, value: u64) -> bool {
    let start = rdtsc();
    let patience = patience();
    while counter.load(Ordering::SeqCst) <= value {
        if rdtsc().wrapping_sub(start) > patience {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn cpuid_benchmark(_name: &str) -> Option<Sample> {
    let expected = cpuid(0, 0);
    let vendor = vendor_string();
    let shown = core::str::from_utf8(&vendor).unwrap_or("?");
    report!(
        vendor.iter().all(u8::is_ascii_graphic),
        "the vendor string of CPUID.0 is printable (got {vendor:x?})"
    );
    report!(
        expected.eax >= 1,
        "CPUID.0:EAX, the highest basic leaf, is at least 1 (got {:#x})",
        expected.eax
    );
    let (sample, errors) =
        measure_parallel(|iterations| (0..iterations).filter(|_| cpuid(0, 0) != expected).count() as u64);
    report!(
        errors == 0,
        "each of {} CPUID.0 on {} CPUs returns vendor {shown} and leaf {:#x} (got {errors} different)",
        sample.iterations * cpu_count() as u64,
        cpu_count(),
        expected.eax
    );
    Some(sample)
}

/// How the hypercalls of a batch ended.
static HYPERCALL_ENOSYS: AtomicU64 = AtomicU64::new(0);
static HYPERCALL_UNDEFINED: AtomicU64 = AtomicU64::new(0);

fn hypercall_benchmark(_name: &str) -> Option<Sample> {
    let vendor = vendor_string();
    let amd = vendor == *b"AuthenticAMD" || vendor == *b"HygonGenuine";
    let hypercall = if amd {
        HypercallInstruction::Vmmcall
    } else {
        HypercallInstruction::Vmcall
    };
    let instruction = hypercall.name();
    if vmunit::environment::instruction_emulating_kvm() {
        report_skip!(
            "kvm_pvm never completes {instruction}: the vCPU stays on it, so the VM hangs (reproduce-hypercall)"
        );
        return None;
    }
    let signature = hypervisor_signature();
    let kvm = signature == *b"KVMKVMKVM\0\0\0";
    let tcg = signature == *b"TCGTCGTCGTCG";
    let other = AtomicU64::new(0);
    let sample = benchmark::measure(BUDGET_MILLISECONDS, FIRST_BATCH, MAXIMUM_BATCH, |iterations| {
        HYPERCALL_ENOSYS.store(0, Ordering::SeqCst);
        HYPERCALL_UNDEFINED.store(0, Ordering::SeqCst);
        other.store(0, Ordering::SeqCst);
        on_cpus(|| {
            for _ in 0..iterations {
                let counter = match catch_exception(|| hypercall.call(0)) {
                    Ok(KVM_UNKNOWN_HYPERCALL) => &HYPERCALL_ENOSYS,
                    Err(exception) if exception.vector == Vector::UD => &HYPERCALL_UNDEFINED,
                    _ => &other,
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
    });
    let total = sample.iterations * cpu_count() as u64;
    let enosys = HYPERCALL_ENOSYS.load(Ordering::SeqCst);
    let undefined = HYPERCALL_UNDEFINED.load(Ordering::SeqCst);
    let errors = other.load(Ordering::SeqCst);
    let got = alloc::format!("{enosys} -KVM_ENOSYS, {undefined} #UD, {errors} other");
    if kvm {
        report!(
            enosys == total,
            "under KVM, {instruction} of hypercall 0 (none) returns -KVM_ENOSYS in RAX every time (got {got})"
        );
    } else if tcg {
        report!(
            undefined == total,
            "under TCG, {instruction} raises #UD every time (no hypervisor handles it) (got {got})"
        );
    } else {
        report!(
            enosys + undefined == total,
            "{instruction} returns -KVM_ENOSYS or raises #UD every time (got {got})"
        );
    }
    Some(sample)
}

/// One slot per CPU for the WBINVD and INVD benchmarks' stores.
static STORES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// kvm-unit-tests' wbinvd and invd: the instruction on every CPU, each time right after a
/// store to that CPU's slot, which must read back after it. WBINVD writes the store back;
/// INVD would drop it on bare metal, but a hypervisor never lets a guest discard the host's
/// caches: KVM skips INVD (`kvm_emulate_invd`, arch/x86/kvm/x86.c), QEMU's TCG models no
/// cache.
fn cache_flush(name: &str) -> Option<Sample> {
    let write_back = name == "wbinvd";
    let (sample, errors) = measure_parallel(|iterations| {
        let slot = &STORES[cpu_index()];
        let mut lost = 0;
        for index in 1..=iterations {
            slot.store(index, Ordering::SeqCst);
            if write_back {
                wbinvd();
            } else {
                invalidate_without_write_back();
            }
            lost += u64::from(slot.load(Ordering::SeqCst) != index);
        }
        lost
    });
    let instruction = if write_back { "WBINVD" } else { "INVD" };
    report!(
        errors == 0,
        "each of {} {instruction} on {} CPUs completes and keeps the store made just before it (got {errors} lost)",
        sample.iterations,
        cpu_count()
    );
    Some(sample)
}

/// INVD, in a guest only.
#[allow(unsafe_code)]
fn invalidate_without_write_back() {
    // SAFETY: the test runs in a virtual machine (KVM or QEMU's TCG), whose hypervisor never
    // passes INVD to the hardware (see `cache_flush`); the store it would lose is what the
    // benchmark checks.
    unsafe { invd() };
}

fn mov_from_cr8(_name: &str) -> Option<Sample> {
    let (sample, errors) = measure_parallel(|iterations| {
        apic::write(register::TASK_PRIORITY, 0x50);
        let wrong = (0..iterations).filter(|_| read_cr8() != 5).count() as u64;
        apic::write(register::TASK_PRIORITY, 0);
        wrong
    });
    report!(
        errors == 0,
        "with the APIC's TPR at 0x50, each of {} MOV from CR8 reads 5, TPR[7:4] (got {errors} other values)",
        sample.iterations
    );
    report!(
        read_cr8() == 0,
        "CR8 reads 0 once TPR is 0 again (got {})",
        read_cr8()
    );
    Some(sample)
}

fn mov_to_cr8(_name: &str) -> Option<Sample> {
    let (sample, errors) = measure_parallel(|iterations| {
        for index in 0..iterations {
            write_cr8(index & 0xf);
        }
        let last = (iterations - 1) & 0xf;
        let priority = u64::from(apic::read(register::TASK_PRIORITY));
        let read_back = read_cr8();
        write_cr8(0);
        u64::from(priority >> 4 != last || read_back != last)
    });
    report!(
        errors == 0,
        "after {} MOV to CR8 on each CPU, the last value written shows in CR8 and in TPR[7:4] (got {errors} CPUs where not)",
        sample.iterations
    );
    report!(
        apic::read(register::TASK_PRIORITY) == 0,
        "MOV of 0 to CR8 clears the APIC's TPR (got {:#x})",
        apic::read(register::TASK_PRIORITY)
    );
    Some(sample)
}

fn inl_from_pmtimer(_name: &str) -> Option<Sample> {
    let Some(timer) = pm_timer() else {
        report_skip!("no ACPI PM timer in the FADT (it needs machine q35 or pc)");
        return None;
    };
    vmunit::report_info!(
        "PM timer port is {:#x} ({} bits)",
        timer.port,
        if timer.mask == u32::MAX { 32 } else { 24 }
    );
    let (sample, errors) = measure_parallel(|iterations| {
        let first = in_u32(timer.port) & timer.mask;
        let mut previous = first;
        let mut backwards = 0;
        for _ in 0..iterations {
            let value = in_u32(timer.port) & timer.mask;
            if value.wrapping_sub(previous) & timer.mask > timer.mask / 2 {
                backwards += 1;
            }
            previous = value;
        }
        // 3.58 MHz: the timer moves at least once in the microseconds a batch takes.
        backwards + u64::from(previous == first)
    });
    report!(
        errors == 0,
        "the PM timer only counts up across each CPU's {} reads, and moves (got {errors} backward steps or standstills)",
        sample.iterations
    );
    Some(sample)
}

fn inl_from_qemu(_name: &str) -> Option<Sample> {
    let (sample, errors) = measure_parallel(|iterations| {
        (0..iterations)
            .filter(|_| in_u32(UNASSIGNED_PORT) != u32::MAX)
            .count() as u64
    });
    report!(
        errors == 0,
        "each of {} reads of the unassigned port {UNASSIGNED_PORT:#x} returns all ones (got {errors} other values)",
        sample.iterations
    );
    Some(sample)
}

/// The ELCR value the port benchmarks write: IRQs 3, 5 and 7 level-triggered (not COM1's IRQ
/// 4; the PIC's inputs stay masked, so no interrupt comes of it).
const ELCR_PATTERN: u8 = 0xa8;

/// kvm-unit-tests' inl_from_kernel: IN of the master PIC's ELCR (port 0x4d0), which KVM's
/// in-kernel PIC answers without leaving the kernel (QEMU's i8259 under TCG). Each read must
/// return the value written before the batch; a write of all ones reads back as only the
/// writable bits (IRQs 0-2 are always edge-triggered).
fn inl_from_kernel(_name: &str) -> Option<Sample> {
    let original = in_u8(ELCR_MASTER);
    report_info!("ELCR1 (port {ELCR_MASTER:#x}) holds {original:#04x}");
    out_u8(ELCR_MASTER, ELCR_PATTERN);
    let (sample, errors) = measure_parallel(|iterations| {
        (0..iterations)
            .filter(|_| in_u8(ELCR_MASTER) != ELCR_PATTERN)
            .count() as u64
    });
    report!(
        errors == 0,
        "each of {} reads of ELCR1 on {} CPUs returns the {ELCR_PATTERN:#04x} written (got {errors} other values)",
        sample.iterations,
        cpu_count()
    );
    out_u8(ELCR_MASTER, 0xff);
    let masked = in_u8(ELCR_MASTER);
    report!(
        masked == ELCR_MASTER_WRITABLE,
        "ELCR1 written with 0xff reads {ELCR_MASTER_WRITABLE:#04x}: IRQs 0-2 stay edge-triggered (got {masked:#04x})"
    );
    out_u8(ELCR_MASTER, original);
    let restored = in_u8(ELCR_MASTER);
    report!(
        restored == original,
        "ELCR1 takes its value {original:#04x} back (got {restored:#04x})"
    );
    Some(sample)
}

/// kvm-unit-tests' outl_to_kernel: OUT of 0 to the master PIC's ELCR (port 0x4d0), served
/// by KVM's in-kernel PIC. With the pattern written before the batch, ELCR1 reads 0 after
/// it: the writes reached the device.
fn outl_to_kernel(_name: &str) -> Option<Sample> {
    let original = in_u8(ELCR_MASTER);
    report_info!("ELCR1 (port {ELCR_MASTER:#x}) holds {original:#04x}");
    let mut before = 0;
    let mut after = 0;
    let sample = measure(|iterations| {
        out_u8(ELCR_MASTER, ELCR_PATTERN);
        before = in_u8(ELCR_MASTER);
        on_cpus(|| {
            for _ in 0..iterations {
                out_u8(ELCR_MASTER, 0);
            }
        });
        after = in_u8(ELCR_MASTER);
    });
    let total = sample.iterations * cpu_count() as u64;
    report!(
        before == ELCR_PATTERN && after == 0,
        "ELCR1 holds the {ELCR_PATTERN:#04x} written, then 0 after {total} writes of 0 on {} CPUs (got {before:#04x}, then {after:#04x})",
        cpu_count()
    );
    out_u8(ELCR_MASTER, original);
    Some(sample)
}

fn mov_dr(_name: &str) -> Option<Sample> {
    let (sample, errors) = measure_parallel(|iterations| {
        for index in 0..iterations {
            write_dr7(dr7::FIXED_1 | if index % 2 == 1 { dr7::LOCAL_EXACT } else { 0 });
        }
        let expected = dr7::FIXED_1
            | if (iterations - 1) % 2 == 1 {
                dr7::LOCAL_EXACT
            } else {
                0
            };
        let read_back = read_dr7();
        write_dr7(dr7::FIXED_1);
        u64::from(read_back != expected)
    });
    report!(
        errors == 0,
        "after {} MOV to DR7 toggling LE on each CPU, DR7 reads the last value (got {errors} CPUs where not)",
        sample.iterations
    );
    Some(sample)
}

/// Interrupts of `VECTOR` handled, and those handled before their TSC deadline.
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static EARLY_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// The TSC deadline armed last.
static DEADLINE: AtomicU64 = AtomicU64::new(0);
/// Interrupts handled on a CPU other than the IPI's target.
static WRONG_CPU: AtomicU64 = AtomicU64::new(0);

fn count_interrupt(_vector: u8) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn count_timer_interrupt(_vector: u8) {
    if rdtsc() < DEADLINE.load(Ordering::SeqCst) {
        EARLY_INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    }
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn tsc_deadline(name: &str) -> Option<Sample> {
    if !Feature::TscDeadlineTimer.supported() {
        report_skip!("no TSC-deadline timer: CPUID.1:ECX[24] is clear");
        return None;
    }
    let immediate = name == "tscdeadline_immed";
    // kvm-unit-tests: 3000 cycles ahead, or the present (already passed once written).
    let ahead = if immediate { 0 } else { 3000 };
    set_interrupt_handler(VECTOR, Some(count_timer_interrupt));
    apic::write(register::TIMER, apic::TIMER_TSC_DEADLINE | u32::from(VECTOR));
    let missing = AtomicU64::new(0);
    let faults = AtomicU64::new(0);
    interrupts::enable();
    let sample = measure(|iterations| {
        INTERRUPTS.store(0, Ordering::SeqCst);
        EARLY_INTERRUPTS.store(0, Ordering::SeqCst);
        missing.store(0, Ordering::SeqCst);
        faults.store(0, Ordering::SeqCst);
        for index in 0..iterations {
            let deadline = rdtsc() + ahead;
            DEADLINE.store(deadline, Ordering::SeqCst);
            if try_wrmsr(msr::IA32_TSC_DEADLINE, deadline).is_err() {
                faults.fetch_add(1, Ordering::SeqCst);
            }
            if !wait_past(&INTERRUPTS, index) {
                missing.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    });
    interrupts::disable();
    let cleared = try_rdmsr(msr::IA32_TSC_DEADLINE);
    apic::write(register::TIMER, apic::MASKED);
    set_interrupt_handler(VECTOR, None);
    let fired = INTERRUPTS.load(Ordering::SeqCst);
    report!(
        faults.load(Ordering::SeqCst) == 0,
        "WRMSR to IA32_TSC_DEADLINE succeeds (got {} #GP)",
        faults.load(Ordering::SeqCst)
    );
    report!(
        missing.load(Ordering::SeqCst) == 0 && fired == sample.iterations,
        "each of {} deadlines {ahead} cycles ahead fires its interrupt, once (got {fired})",
        sample.iterations
    );
    report!(
        EARLY_INTERRUPTS.load(Ordering::SeqCst) == 0,
        "no interrupt comes before its deadline (got {} early)",
        EARLY_INTERRUPTS.load(Ordering::SeqCst)
    );
    report!(
        matches!(cleared, Ok(0)),
        "the timer clears IA32_TSC_DEADLINE when it fires (got {cleared:x?})"
    );
    Some(sample)
}

/// How a self-IPI benchmark opens the way for its interrupt.
#[derive(Clone, Copy)]
struct SelfIpiVariant {
    /// Sent with interrupts disabled, then STI; NOP (or STI; HLT with `halt`).
    window: bool,
    /// The window is STI; HLT.
    halt: bool,
    /// Sent with the task priority blocking it, then the priority lowered.
    priority: bool,
    /// Through the x2APIC SELF IPI register.
    x2apic: bool,
}

fn self_ipi(name: &str) -> Option<Sample> {
    let variant = SelfIpiVariant {
        window: name.contains("sti"),
        halt: name.ends_with("hlt"),
        priority: name.contains("tpr"),
        x2apic: name.starts_with("x2apic"),
    };
    if variant.x2apic {
        if !Feature::X2apic.supported() {
            report_skip!("no x2APIC: CPUID.1:ECX[21] is clear");
            return None;
        }
        let enabled = apic::try_enable_x2apic();
        report!(
            enabled.is_ok(),
            "the APIC switches to x2APIC mode (got {enabled:x?})"
        );
        if enabled.is_err() {
            return None;
        }
    }
    set_interrupt_handler(VECTOR, Some(count_interrupt));
    let early = AtomicU64::new(0);
    let wrong = AtomicU64::new(0);
    if !variant.window {
        interrupts::enable();
    }
    let held_by = match (variant.window, variant.priority) {
        (true, true) => "interrupts disabled and TPR 0xf0",
        (true, false) => "interrupts disabled",
        (false, _) => "TPR 0xf0",
    };
    // Once, untimed: the self-IPI stays pending for a while (with VM exits and many
    // instructions for the hypervisor to deliver it in), then comes once allowed.
    INTERRUPTS.store(0, Ordering::SeqCst);
    if variant.priority {
        apic::write(register::TASK_PRIORITY, BLOCKING_PRIORITY);
    }
    apic::self_ipi(VECTOR);
    vmunit::time::delay(1);
    let _ = apic::read(register::ID);
    let held = INTERRUPTS.load(Ordering::SeqCst);
    apic::write(register::TASK_PRIORITY, 0);
    let delivered = vmunit::time::wait_until(PATIENCE_MILLISECONDS, || INTERRUPTS.load(Ordering::SeqCst) > 0);
    if variant.window {
        interrupts::disable();
    }
    report!(
        held == 0,
        "a self-IPI stays pending for 1 ms while {held_by} (got {held} delivered)"
    );
    report!(
        delivered && INTERRUPTS.load(Ordering::SeqCst) == 1,
        "it is delivered once interrupts are enabled and TPR is 0 (got {})",
        INTERRUPTS.load(Ordering::SeqCst)
    );
    let sample = measure(|iterations| {
        INTERRUPTS.store(0, Ordering::SeqCst);
        early.store(0, Ordering::SeqCst);
        wrong.store(0, Ordering::SeqCst);
        for _ in 0..iterations {
            let before = INTERRUPTS.load(Ordering::SeqCst);
            if variant.priority {
                apic::write(register::TASK_PRIORITY, BLOCKING_PRIORITY);
            }
            apic::self_ipi(VECTOR);
            if INTERRUPTS.load(Ordering::SeqCst) != before {
                early.fetch_add(1, Ordering::SeqCst);
            }
            if variant.priority {
                apic::write(register::TASK_PRIORITY, 0);
            }
            if variant.halt {
                wait_for_interrupt();
            } else if variant.window {
                interrupt_window();
            } else if !wait_past(&INTERRUPTS, before) {
                // Interrupts are on: the lowered priority lets it in at once.
                wrong.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if INTERRUPTS.load(Ordering::SeqCst) != before + 1 {
                wrong.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    interrupts::disable();
    set_interrupt_handler(VECTOR, None);
    let opened_by = match (variant.window, variant.halt, variant.priority) {
        (true, true, _) => "STI; HLT",
        (true, false, _) => "STI; NOP",
        (false, _, _) => "lowering TPR",
    };
    report!(
        early.load(Ordering::SeqCst) == 0,
        "each of {} self-IPIs waits while {held_by} (got {} delivered at once)",
        sample.iterations,
        early.load(Ordering::SeqCst)
    );
    // kvm_pvm re-evaluates pending interrupts only on a VM exit: STI; NOP exits nowhere
    // (STI; HLT and the TPR write do), so the interrupt waits for a later exit.
    let window_missed = vmunit::environment::instruction_emulating_kvm() && variant.window && !variant.halt;
    known_failure(
        window_missed,
        "kvm_pvm does not deliver a pending interrupt in the window STI opens (STI; NOP; CLI; \
         reproduce-sti-window)",
        || {
            report!(
                wrong.load(Ordering::SeqCst) == 0 && INTERRUPTS.load(Ordering::SeqCst) == sample.iterations,
                "each self-IPI is delivered once, by {opened_by} (got {} interrupts, {} iterations wrong)",
                INTERRUPTS.load(Ordering::SeqCst),
                wrong.load(Ordering::SeqCst)
            )
        },
    );
    if variant.x2apic {
        let back = apic::try_return_to_xapic();
        report!(back.is_ok(), "the APIC returns to xAPIC mode (got {back:x?})");
    }
    Some(sample)
}

/// Tells CPU 1's IPI loop to end.
static STOP: AtomicBool = AtomicBool::new(false);
/// CPU 1's loop is running.
static SERVING: AtomicBool = AtomicBool::new(false);

fn count_remote_interrupt(_vector: u8) {
    if cpu_index() != 1 {
        WRONG_CPU.fetch_add(1, Ordering::SeqCst);
    }
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn ipi(name: &str) -> Option<Sample> {
    if cpu_count() < 2 {
        report_skip!("an IPI needs a second CPU (smp = 2; got {} CPU)", cpu_count());
        return None;
    }
    let halt = name == "ipi_halt";
    let destination = AtomicU64::new(0);
    on_cpu(1, || destination.store(u64::from(apic::id()), Ordering::SeqCst));
    let destination = destination.load(Ordering::SeqCst) as u32;
    set_interrupt_handler(VECTOR, Some(count_remote_interrupt));
    STOP.store(false, Ordering::SeqCst);
    SERVING.store(false, Ordering::SeqCst);
    on_cpu_async(1, move || {
        SERVING.store(true, Ordering::SeqCst);
        if halt {
            while !STOP.load(Ordering::SeqCst) {
                wait_for_interrupt();
            }
        } else {
            interrupts::enable();
            while !STOP.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            interrupts::disable();
        }
        SERVING.store(false, Ordering::SeqCst);
    });
    while !SERVING.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    let missing = AtomicU64::new(0);
    let unsent = AtomicU64::new(0);
    let sample = measure(|iterations| {
        INTERRUPTS.store(0, Ordering::SeqCst);
        WRONG_CPU.store(0, Ordering::SeqCst);
        missing.store(0, Ordering::SeqCst);
        unsent.store(0, Ordering::SeqCst);
        for index in 0..iterations {
            if !apic::send_ipi(destination, VECTOR) {
                unsent.fetch_add(1, Ordering::SeqCst);
            }
            if !wait_past(&INTERRUPTS, index) {
                missing.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if halt {
                // As kvm-unit-tests: give CPU 1 time to halt again.
                let start = rdtsc();
                while rdtsc().wrapping_sub(start) < 2000 {
                    core::hint::spin_loop();
                }
            }
        }
    });
    let handled = INTERRUPTS.load(Ordering::SeqCst);
    let wrong_cpu = WRONG_CPU.load(Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    // Wake a halted CPU 1 so that it sees STOP (its loop runs the handler once more).
    let start = rdtsc();
    while SERVING.load(Ordering::SeqCst) && rdtsc().wrapping_sub(start) < patience() {
        if halt {
            apic::send_ipi(destination, VECTOR);
        }
        core::hint::spin_loop();
    }
    let stopped = !SERVING.load(Ordering::SeqCst);
    set_interrupt_handler(VECTOR, None);
    let where_ = if halt { "halted" } else { "running" };
    report!(
        unsent.load(Ordering::SeqCst) == 0,
        "the APIC sends each IPI (got {} stuck)",
        unsent.load(Ordering::SeqCst)
    );
    report!(
        missing.load(Ordering::SeqCst) == 0 && handled == sample.iterations,
        "each of {} IPIs to the {where_} CPU 1 runs its handler once (got {handled})",
        sample.iterations
    );
    report!(
        wrong_cpu == 0,
        "every IPI is handled on CPU 1 (got {wrong_cpu} elsewhere)"
    );
    report!(stopped, "CPU 1 leaves its IPI loop when told");
    Some(sample)
}

/// A CPU's place in the token ring of `ple_round_robin`, alone in its cache line.
#[repr(align(64))]
struct Turn {
    /// Tokens passed to this CPU so far.
    received: AtomicU64,
    /// Tokens this CPU has taken (and passed on).
    taken: AtomicU64,
}

static TURNS: [Turn; MAX_CPUS] = [const {
    Turn {
        received: AtomicU64::new(0),
        taken: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Milliseconds a CPU waits for the token before it gives up (a vCPU the host deschedules
/// holds it up, so more than the interrupt patience).
const TOKEN_PATIENCE_MILLISECONDS: u64 = 1000;

/// kvm-unit-tests' ple_round_robin: a token goes round the CPUs; each waits for it in a
/// PAUSE loop (`core::hint::spin_loop`), which is what pause-loop exiting (PLE, AMD's PAUSE
/// filter) catches, then passes it to the next CPU. Each operation is one turn. Every CPU must
/// take the token once per iteration, and none may wait in vain.
fn ple_round_robin(_name: &str) -> Option<Sample> {
    let cpus = cpu_count();
    let stalls = AtomicU64::new(0);
    let mut wrong_counts = 0;
    let sample = benchmark::measure(BUDGET_MILLISECONDS, FIRST_BATCH, MAXIMUM_BATCH, |iterations| {
        for turn in &TURNS {
            turn.received.store(0, Ordering::SeqCst);
            turn.taken.store(0, Ordering::SeqCst);
        }
        stalls.store(0, Ordering::SeqCst);
        // CPU 0 holds the token first.
        TURNS[0].received.store(1, Ordering::SeqCst);
        let patience = vmunit::time::ticks_in(TOKEN_PATIENCE_MILLISECONDS);
        on_cpus(|| {
            let me = cpu_index();
            let turn = &TURNS[me];
            let next = &TURNS[(me + 1) % cpus];
            for _ in 0..iterations {
                let taken = turn.taken.load(Ordering::SeqCst);
                let start = rdtsc();
                let mut spins = 0u32;
                while turn.received.load(Ordering::SeqCst) == taken {
                    core::hint::spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(256) && rdtsc().wrapping_sub(start) > patience {
                        stalls.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                turn.taken.store(taken + 1, Ordering::SeqCst);
                next.received.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Each CPU took `iterations` tokens and received as many (CPU 0 one more: its first).
        wrong_counts = (0..cpus)
            .filter(|&cpu| {
                let expected_received = iterations + u64::from(cpu == 0);
                TURNS[cpu].taken.load(Ordering::SeqCst) != iterations
                    || TURNS[cpu].received.load(Ordering::SeqCst) != expected_received
            })
            .count();
    });
    report!(
        stalls.load(Ordering::SeqCst) == 0,
        "no CPU waits {TOKEN_PATIENCE_MILLISECONDS} ms for the token in vain (got {} stalls)",
        stalls.load(Ordering::SeqCst)
    );
    // The counts are the loop's own bookkeeping: they can differ only where a CPU gave up,
    // which the stall check above judges. Information, not a check.
    report_info!(
        "the token went {} times round {cpus} CPUs ({wrong_counts} CPUs with other counts)",
        sample.iterations
    );
    Some(sample)
}

fn wr_kernel_gs_base(_name: &str) -> Option<Sample> {
    let (sample, errors) = measure_parallel(|iterations| {
        let mut faults = 0;
        for index in 0..iterations {
            faults += u64::from(try_wrmsr(msr::IA32_KERNEL_GS_BASE, index << 12).is_err());
        }
        let read_back = try_rdmsr(msr::IA32_KERNEL_GS_BASE);
        let _ = try_wrmsr(msr::IA32_KERNEL_GS_BASE, 0);
        faults + u64::from(read_back != Ok((iterations - 1) << 12))
    });
    report!(
        errors == 0,
        "{} WRMSRs to IA32_KERNEL_GS_BASE succeed and it reads the last value (got {errors} faults or mismatches)",
        sample.iterations
    );
    Some(sample)
}

/// kvm-unit-tests' wr_tsx_ctrl_msr: WRMSR of 0 to IA32_TSX_CTRL (TSX enabled, RTM and HLE in
/// CPUID), where IA32_ARCH_CAPABILITIES.TSX_CTRL says it exists (kvm-unit-tests' `has_tsx_ctrl`).
fn wr_tsx_ctrl_msr(_name: &str) -> Option<Sample> {
    if !Feature::ArchCapabilities.supported() {
        report_skip!(
            "no IA32_ARCH_CAPABILITIES: {} is clear, so no IA32_TSX_CTRL",
            Feature::ArchCapabilities.bit()
        );
        return None;
    }
    let capabilities = try_rdmsr(msr::IA32_ARCH_CAPABILITIES);
    if !matches!(capabilities, Ok(value) if value & msr::ARCH_CAPABILITIES_TSX_CTRL != 0) {
        report_skip!(
            "no IA32_TSX_CTRL: IA32_ARCH_CAPABILITIES bit 7 (TSX_CTRL) is clear (got {capabilities:x?})"
        );
        return None;
    }
    let original = try_rdmsr(msr::IA32_TSX_CTRL);
    report_info!("IA32_TSX_CTRL holds {original:x?}");
    let (sample, errors) = measure_parallel(|iterations| {
        let faults = (0..iterations)
            .filter(|_| try_wrmsr(msr::IA32_TSX_CTRL, 0).is_err())
            .count() as u64;
        faults + u64::from(try_rdmsr(msr::IA32_TSX_CTRL) != Ok(0))
    });
    report!(
        errors == 0,
        "each of {} WRMSR of 0 to IA32_TSX_CTRL succeeds and it reads 0 (got {errors} faults or other values)",
        sample.iterations
    );
    if let Ok(value) = original {
        on_cpus(|| {
            let _ = try_wrmsr(msr::IA32_TSX_CTRL, value);
        });
    }
    Some(sample)
}

/// kvm-unit-tests' wr_ibrs_msr: IA32_SPEC_CTRL.IBRS set and cleared, where CPUID.7.0:EDX[26]
/// advertises it (kvm-unit-tests' `has_spec_ctrl`); after each pair SPEC_CTRL reads 0.
fn wr_ibrs_msr(_name: &str) -> Option<Sample> {
    if !Feature::SpecCtrl.supported() {
        report_skip!(
            "no IA32_SPEC_CTRL.IBRS: {} (SPEC_CTRL) is clear",
            Feature::SpecCtrl.bit()
        );
        return None;
    }
    let set = try_wrmsr(msr::IA32_SPEC_CTRL, msr::SPEC_CTRL_IBRS);
    let read_set = try_rdmsr(msr::IA32_SPEC_CTRL);
    let _ = try_wrmsr(msr::IA32_SPEC_CTRL, 0);
    report!(
        set.is_ok() && matches!(read_set, Ok(value) if value & msr::SPEC_CTRL_IBRS != 0),
        "WRMSR of IBRS to IA32_SPEC_CTRL succeeds and IBRS reads back set (got {set:x?}, {read_set:x?})"
    );
    let (sample, errors) = measure_parallel(|iterations| {
        let faults = (0..iterations)
            .filter(|_| {
                try_wrmsr(msr::IA32_SPEC_CTRL, msr::SPEC_CTRL_IBRS).is_err()
                    || try_wrmsr(msr::IA32_SPEC_CTRL, 0).is_err()
            })
            .count() as u64;
        faults + u64::from(try_rdmsr(msr::IA32_SPEC_CTRL) != Ok(0))
    });
    report!(
        errors == 0,
        "each of {} pairs of WRMSR (IBRS, then 0) to IA32_SPEC_CTRL succeeds and it reads 0 (got {errors} faults or other values)",
        sample.iterations
    );
    Some(sample)
}

/// kvm-unit-tests' wr_ibpb_msr: the IBPB command written to IA32_PRED_CMD, where
/// CPUID.7.0:EDX[26] (Intel) or CPUID.80000008H:EBX[12] (AMD) advertises it (kvm-unit-tests'
/// `has_ibpb`). PRED_CMD is a write-only command: each write must succeed.
fn wr_ibpb_msr(_name: &str) -> Option<Sample> {
    if !Feature::SpecCtrl.supported() && !Feature::AmdIbpb.supported() {
        report_skip!(
            "no IBPB: {} (SPEC_CTRL) and {} (AMD_IBPB) are clear",
            Feature::SpecCtrl.bit(),
            Feature::AmdIbpb.bit()
        );
        return None;
    }
    let (sample, errors) = measure_parallel(|iterations| {
        (0..iterations)
            .filter(|_| try_wrmsr(msr::IA32_PRED_CMD, msr::PRED_CMD_IBPB).is_err())
            .count() as u64
    });
    report!(
        errors == 0,
        "each of {} WRMSR of IBPB to IA32_PRED_CMD succeeds (got {errors} faults)",
        sample.iterations
    );
    Some(sample)
}

fn tsc_adjust(name: &str) -> Option<Sample> {
    if !Feature::TscAdjust.supported() {
        report_skip!("no IA32_TSC_ADJUST: CPUID.7.0:EBX[1] is clear");
        return None;
    }
    let write = name.starts_with("wr");
    let (sample, errors) = measure_parallel(|iterations| {
        let mut wrong = u64::from(try_wrmsr(msr::IA32_TSC_ADJUST, 0).is_err());
        for _ in 0..iterations {
            wrong += if write {
                u64::from(try_wrmsr(msr::IA32_TSC_ADJUST, 0).is_err())
            } else {
                u64::from(try_rdmsr(msr::IA32_TSC_ADJUST) != Ok(0))
            };
        }
        wrong + u64::from(try_rdmsr(msr::IA32_TSC_ADJUST) != Ok(0))
    });
    let operation = if write { "WRMSR of 0 to" } else { "RDMSR of" };
    report!(
        errors == 0,
        "each of {} {operation} IA32_TSC_ADJUST succeeds and it reads 0 (got {errors} faults or other values)",
        sample.iterations
    );
    Some(sample)
}

fn toggle_cr0_wp(_name: &str) -> Option<Sample> {
    let original = read_cr0();
    let (sample, errors) = measure_parallel(|iterations| {
        let mut wrong = 0;
        for _ in 0..iterations {
            let cleared = try_write_cr0(original & !Cr0Flags::WRITE_PROTECT.bits());
            wrong += u64::from(cleared.is_err() || read_cr0() & Cr0Flags::WRITE_PROTECT.bits() != 0);
            let set = try_write_cr0(original | Cr0Flags::WRITE_PROTECT.bits());
            wrong += u64::from(set.is_err() || read_cr0() & Cr0Flags::WRITE_PROTECT.bits() == 0);
        }
        let _ = try_write_cr0(original);
        wrong
    });
    report!(
        errors == 0,
        "{} toggles of CR0.WP on each CPU read back as written (got {errors} wrong)",
        sample.iterations
    );
    // What WP does: supervisor writes to a read-only page fault only with it set.
    let page = TestPage::new();
    page.protect(Protection::READ_ONLY);
    let _ = try_write_cr0(original & !Cr0Flags::WRITE_PROTECT.bits());
    let without = page.try_write(0, 1);
    let _ = try_write_cr0(original | Cr0Flags::WRITE_PROTECT.bits());
    let with = page.try_write(0, 2);
    let _ = try_write_cr0(original);
    report!(
        without.is_ok(),
        "with CR0.WP clear, a supervisor write to a read-only page succeeds (got {without:x?})"
    );
    report!(
        matches!(with, Err(exception) if exception.vector == Vector::PF),
        "with CR0.WP set, it raises #PF (got {with:x?})"
    );
    Some(sample)
}

fn toggle_cr4_pge(_name: &str) -> Option<Sample> {
    let original = read_cr4();
    let (sample, errors) = measure_parallel(|iterations| {
        let mut wrong = 0;
        for _ in 0..iterations {
            let flipped = try_write_cr4(original ^ Cr4Flags::PAGE_GLOBAL.bits());
            wrong += u64::from(flipped.is_err() || read_cr4() != original ^ Cr4Flags::PAGE_GLOBAL.bits());
            let restored = try_write_cr4(original);
            wrong += u64::from(restored.is_err() || read_cr4() != original);
        }
        wrong
    });
    report!(
        errors == 0,
        "{} toggles of CR4.PGE (from {}) on each CPU read back as written (got {errors} wrong)",
        sample.iterations,
        if original & Cr4Flags::PAGE_GLOBAL.bits() != 0 {
            "set"
        } else {
            "clear"
        }
    );
    Some(sample)
}

/// pci-testdev's BARs, assigned from q35's ECAM host bridge (kvm-unit-tests' `pci_testdev`
/// lookup); `None`, with a SKIP, without the device.
fn testdev_bars() -> Option<Vec<Bar>> {
    let mut bridge = match HostBridge::probe() {
        Ok(bridge) => bridge,
        Err(error) => {
            report_skip!("no PCI host bridge ({error:?}): run on q35");
            return None;
        }
    };
    let Some(function) = bridge.find(vendor::RED_HAT, device::RED_HAT_TEST) else {
        report_skip!("no pci-testdev ('-device pci-testdev')");
        return None;
    };
    match bridge.assign_bars(&function) {
        Ok(bars) => Some(bars),
        Err(error) => {
            report!(false, "pci-testdev's BARs get addresses ({error:?})");
            None
        }
    }
}

/// Times one pci-testdev test: `write(offset, width, data)` at its trigger, and checks the
/// device's count: every write, or none for the eventfd tests where an ioeventfd took them
/// (kvm-unit-tests accepts both). Reports the BENCH line `<benchmark>:<test name>`.
fn pci_trigger(benchmark: &str, test: &str, count: impl Fn() -> u32, write: impl Fn()) {
    let mut total = 0u64;
    let sample = measure(|iterations| {
        for _ in 0..iterations {
            write();
        }
        total += iterations;
    });
    let counted = u64::from(count());
    let trigger = Trigger::of_name(test);
    let expected_all = counted == total;
    let eventfd_took_them = counted == 0
        && matches!(
            trigger,
            Some(Trigger::WildcardEventfd | Trigger::DatamatchEventfd)
        );
    report!(
        trigger.is_some() && (expected_all || eventfd_took_them),
        "{test}: the device counted {counted} of {total} writes (all, or none where an ioeventfd takes them)"
    );
    benchmark::report_sample(&format!("{benchmark}:{test}"), sample, UNIT);
}

/// kvm-unit-tests' pci-mem: each test of pci-testdev's memory BAR, writes to its trigger.
fn pci_mem(name: &str) -> Option<Sample> {
    let bars = testdev_bars()?;
    let Some(bar) = bars.iter().find(|bar| bar.probe.index == testdev::MEMORY_BAR) else {
        report!(false, "pci-testdev has its memory BAR");
        return None;
    };
    let window = match HostBridge::probe().map(|bridge| bridge.map_bar(bar)) {
        Ok(Ok(window)) => window,
        other => {
            report!(false, "pci-testdev's memory BAR maps ({other:?})");
            return None;
        }
    };
    let device = TestDevice::new(window);
    for number in 0..testdev::MEMORY_TESTS.len() as u8 {
        device.select(number);
        let (width, data, offset) = (device.width(), device.data(), u64::from(device.trigger_offset()));
        let test = device.name();
        if !matches!(width, 1 | 2 | 4) || offset + u64::from(width) > testdev::MEMORY_BAR_SIZE {
            report!(
                false,
                "test {number} ({test}) has width 1, 2 or 4 and a trigger in the BAR (width {width}, offset {offset:#x})"
            );
            continue;
        }
        pci_trigger(
            name,
            &test,
            || device.count(),
            || device.write(offset, width, data),
        );
    }
    None
}

/// kvm-unit-tests' pci-io: each test of pci-testdev's I/O BAR, OUTs to its trigger port.
fn pci_io(name: &str) -> Option<Sample> {
    let bars = testdev_bars()?;
    let Some(bar) = bars.iter().find(|bar| bar.probe.index == testdev::IO_BAR) else {
        report!(false, "pci-testdev has its I/O BAR");
        return None;
    };
    let Ok(base) = u16::try_from(bar.cpu_address) else {
        report!(
            false,
            "pci-testdev's I/O BAR is in I/O space (got {:#x})",
            bar.cpu_address
        );
        return None;
    };
    let port = |offset: u64| base + offset as u16;
    for number in 0..testdev::IO_TESTS.len() as u8 {
        out_u8(port(testdev::offset::TEST), number);
        let width = in_u8(port(testdev::offset::WIDTH));
        let data = in_u32(port(testdev::offset::DATA));
        let offset = u64::from(in_u32(port(testdev::offset::TRIGGER)));
        let mut test = alloc::string::String::new();
        for index in 0..32 {
            match in_u8(port(testdev::offset::NAME + index)) {
                0 => break,
                byte => test.push(if byte.is_ascii() { byte as char } else { '?' }),
            }
        }
        if !matches!(width, 1 | 2 | 4) || offset + u64::from(width) > testdev::IO_BAR_SIZE {
            report!(
                false,
                "test {number} ({test}) has width 1, 2 or 4 and a trigger in the BAR (width {width}, offset {offset:#x})"
            );
            continue;
        }
        let trigger = port(offset);
        pci_trigger(
            name,
            &test,
            || in_u32(port(testdev::offset::COUNT)),
            || match width {
                1 => out_u8(trigger, data as u8),
                2 => out_u16(trigger, data as u16),
                _ => out_u32(trigger, data),
            },
        );
    }
    None
}
