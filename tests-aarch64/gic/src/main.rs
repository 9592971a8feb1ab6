//! gic: the GICv3 in kvm-unit-tests' gic modes: `ipi` (SGIs to self, to one other CPU and to
//! all others, each delivered exactly where sent), `active` (the pending → active → inactive
//! life cycle of an SGI, and the priority mask), `mmio` (read-only distributor registers and
//! the implemented priority bits).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use vmunit::arch::gic::{self, SgiTarget, distributor};
use vmunit::arch::instructions::wait_for_interrupt_enabled;
use vmunit::arch::registers::ICC_PMR_ALLOW_ALL;
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpu_async, on_cpus};
use vmunit::arch::timer;
use vmunit::{prefix, report, report_skip, report_summary};

vmunit::main!(main);

/// The SGI the tests send.
const SGI: u32 = 1;

fn main(arguments: &[&str]) -> i32 {
    if let Err(problem) = gic::init() {
        report!(false, "the GICv3 initialises: {problem}");
        return report_summary();
    }
    match arguments.first().copied() {
        Some("ipi") => ipi(),
        Some("active") => active(),
        Some("mmio") => mmio(),
        other => {
            report!(false, "a known mode was given (got {other:?})");
        }
    }
    report_summary()
}

fn nothing(_intid: u32) {}

static RECEIVED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn setup_cpu(cpu: usize) {
    let ok = gic::init().is_ok();
    gic::enable_private(SGI);
    READY[cpu].store(ok, Ordering::Release);
}

/// On a secondary CPU: waits (IRQs unmasked around WFI) for one SGI, for at most 1 s.
fn receive(cpu: usize) {
    let before = gic::delivered(cpu, SGI);
    let deadline = timer::virtual_count() + timer::frequency();
    READY[cpu].store(true, Ordering::Release);
    while gic::delivered(cpu, SGI) == before && timer::virtual_count() < deadline {
        wait_for_interrupt_enabled();
    }
    RECEIVED[cpu].store(gic::delivered(cpu, SGI) > before, Ordering::Release);
}

fn post_receivers(cpus: &[usize]) {
    for &cpu in cpus {
        READY[cpu].store(false, Ordering::Release);
        RECEIVED[cpu].store(false, Ordering::Release);
        on_cpu_async(cpu, move || receive(cpu));
    }
    for &cpu in cpus {
        while !READY[cpu].load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
}

fn wait_received(cpu: usize) -> bool {
    let deadline = timer::virtual_count() + 2 * timer::frequency();
    while !RECEIVED[cpu].load(Ordering::Acquire) && timer::virtual_count() < deadline {
        core::hint::spin_loop();
    }
    RECEIVED[cpu].load(Ordering::Acquire)
}

fn ipi() {
    vmunit::arch::set_interrupt_handler(SGI, Some(nothing));
    gic::enable_private(SGI);
    {
        let _prefix = prefix("self");
        let before = gic::delivered(0, SGI);
        gic::send_sgi(SGI, SgiTarget::Cpu(0));
        wait_for_interrupt_enabled();
        let count = gic::delivered(0, SGI) - before;
        report!(count == 1, "an SGI to self is delivered once (got {count})");
    }
    if cpu_count() < 2 {
        report_skip!("IPIs to other CPUs need -smp 2 or more");
        return;
    }
    on_cpus(|| setup_cpu(cpu_index()));
    let all_ready = (1..cpu_count()).all(|cpu| READY[cpu].load(Ordering::Acquire));
    report!(
        all_ready,
        "every CPU's redistributor and CPU interface initialise"
    );
    {
        let _prefix = prefix("target");
        let before = gic::delivered(0, SGI);
        post_receivers(&[1]);
        gic::send_sgi(SGI, SgiTarget::Cpu(1));
        report!(wait_received(1), "an SGI to CPU 1 reaches CPU 1");
        report!(
            gic::delivered(0, SGI) == before && !gic::is_pending(SGI),
            "the sender did not receive it"
        );
    }
    {
        let _prefix = prefix("broadcast");
        let others: [usize; MAX_CPUS] = core::array::from_fn(|index| index + 1);
        let others = &others[..cpu_count() - 1];
        let before = gic::delivered(0, SGI);
        post_receivers(others);
        gic::send_sgi(SGI, SgiTarget::AllButSelf);
        let reached = others.iter().filter(|&&cpu| wait_received(cpu)).count();
        report!(
            reached == others.len(),
            "an SGI to all but self reaches every other CPU ({reached} of {})",
            others.len()
        );
        report!(
            gic::delivered(0, SGI) == before && !gic::is_pending(SGI),
            "the sender did not receive it"
        );
    }
    report!(gic::unhandled() == 0, "no IRQ arrived without a handler");
}

fn active() {
    gic::enable_private(SGI);
    gic::send_sgi(SGI, SgiTarget::Cpu(0));
    report!(
        gic::is_pending(SGI),
        "a sent SGI is pending while IRQs are masked"
    );
    report!(!gic::is_active(SGI), "and not active");
    gic::set_icc_pmr(0);
    let masked = gic::acknowledge();
    report!(
        masked == gic::SPURIOUS,
        "with ICC_PMR_EL1 = 0 the SGI is not acknowledged (IAR {masked})"
    );
    gic::set_icc_pmr(ICC_PMR_ALLOW_ALL);
    let intid = gic::acknowledge();
    report!(intid == SGI, "ICC_IAR1_EL1 acknowledges SGI {SGI} (got {intid})");
    report!(
        gic::is_active(SGI) && !gic::is_pending(SGI),
        "an acknowledged SGI is active and no longer pending"
    );
    let again = gic::acknowledge();
    report!(
        again == gic::SPURIOUS,
        "nothing else is pending: a second acknowledge is spurious (IAR {again})"
    );
    gic::end_of_interrupt(intid);
    report!(
        !gic::is_active(SGI) && !gic::is_pending(SGI),
        "after EOI the SGI is inactive"
    );
    gic::disable_private(SGI);
}

fn mmio() {
    for (name, offset) in [
        ("GICD_TYPER", distributor::TYPER),
        ("GICD_IIDR", distributor::IIDR),
    ] {
        let value = gic::distributor_read(offset);
        gic::distributor_write(offset, !value);
        let after = gic::distributor_read(offset);
        report!(
            after == value,
            "{name} is read-only ({value:#x}, after writing: {after:#x})"
        );
    }
    let pidr2 = gic::distributor_read(distributor::PIDR2);
    report!(
        distributor::architecture_revision(pidr2) == 3,
        "GICD_PIDR2.ArchRev says GICv3 (PIDR2 {pidr2:#x})"
    );
    let typer = gic::distributor_read(distributor::TYPER);
    let lines = distributor::interrupt_lines(typer);
    report!(lines > 32, "GICD_TYPER.ITLinesNumber gives SPIs ({lines} INTIDs)");
    // The first SPI's priority byte: write all ones, read the implemented bits back.
    let offset = distributor::IPRIORITYR + distributor::FIRST_SPI;
    let saved = gic::distributor_read_byte(offset);
    gic::distributor_write_byte(offset, 0xff);
    let implemented = gic::distributor_read_byte(offset);
    report!(
        implemented.leading_ones() >= 4 && implemented.leading_ones() + implemented.trailing_zeros() == 8,
        "priority bits are implemented from the top, at least 4 ({implemented:#010b})"
    );
    gic::distributor_write_byte(offset, 0);
    let zero = gic::distributor_read_byte(offset);
    report!(zero == 0, "priority 0 reads back as 0 (got {zero:#x})");
    gic::distributor_write_byte(offset, saved);
}
