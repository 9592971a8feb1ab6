//! eventinj: event delivery, as kvm-unit-tests' eventinj test checks it: exceptions, software
//! and external interrupts delivered while the host has dropped the IDT and stack pages
//! (pc-testdev's flush port), the order of pending interrupts and of a software interrupt in
//! the STI shadow, TPR masking, #NP from a not-present gate, and a #DF when the stack is
//! unmapped during delivery (SDM Vol. 3, 6.12 and 6.15).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use vmunit::arch::apic::{self, register};
use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::instructions::{int3, software_interrupt, try_divide};
use vmunit::arch::probes::{
    interrupt_window, software_interrupt_in_interrupt_shadow, try_interrupt_window_on_stack,
};
use vmunit::arch::testdev::{flush_idt_page, flush_stack_page};
use vmunit::arch::{set_gate_present, set_interrupt_handler};
use vmunit::environment::instruction_emulating_kvm;
use vmunit::memory::TestPage;
use vmunit::{Vector, catch_exception, known_failure, report, report_skip, trap_exceptions};

vmunit::main!(main);

const LOW_VECTOR: u8 = 32;
const VECTOR: u8 = 33;
/// Priority class 3: above a task priority of class 2.
const HIGH_CLASS_VECTOR: u8 = 62;

/// The vectors handled, in order (at most 8 kept).
static ORDER: [AtomicU8; 8] = [const { AtomicU8::new(0) }; 8];
static HANDLED: AtomicUsize = AtomicUsize::new(0);

fn record(vector: u8) {
    let index = HANDLED.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = ORDER.get(index) {
        slot.store(vector, Ordering::SeqCst);
    }
}

fn handled() -> [u8; 8] {
    core::array::from_fn(|index| ORDER[index].load(Ordering::SeqCst))
}

fn reset() {
    HANDLED.store(0, Ordering::SeqCst);
    for slot in &ORDER {
        slot.store(0, Ordering::SeqCst);
    }
}

fn flush() {
    flush_idt_page();
    flush_stack_page();
}

fn main(_args: &[&str]) {
    // kvm_pvm stops the VM on INT3 and INT n (reproduce-int3, reproduce-int-n).
    let software_interrupts = !instruction_emulating_kvm();
    for vector in [LOW_VECTOR, VECTOR, HIGH_CLASS_VECTOR] {
        set_interrupt_handler(vector, Some(record));
    }
    check_exceptions(software_interrupts);
    check_external_interrupts();
    check_shadow_order(software_interrupts);
    check_task_priority();
    check_not_present_gate(software_interrupts);
    check_unmapped_stack();
}

/// A fault and a trap delivered through a flushed IDT page onto a flushed stack page.
fn check_exceptions(software_interrupts: bool) {
    flush();
    let result = try_divide(0, 1500, 0);
    report!(
        matches!(result, Err(e) if e.vector == Vector::DE),
        "#DE is delivered through a flushed IDT page (got {result:x?})"
    );
    if !software_interrupts {
        report_skip!("#BP and INT $33: kvm_pvm stops the VM on INT3 and INT n (reproduce-int3)");
        return;
    }
    flush();
    let (after, traps) = trap_exceptions(&[Vector::BP], int3);
    report!(
        traps.len() == 1 && traps[0].rip == after,
        "INT3 raises one #BP, delivered through a flushed IDT page, resuming at {after:#x} \
         (got {traps:x?})"
    );
    reset();
    flush();
    let after = software_interrupt::<VECTOR>();
    report!(
        HANDLED.load(Ordering::SeqCst) == 1 && handled()[0] == VECTOR,
        "INT $33 enters its handler once through a flushed IDT page, and resumes at {after:#x} \
         (got {:?})",
        &handled()[..HANDLED.load(Ordering::SeqCst).min(8)]
    );
}

/// Milliseconds to wait for an interrupt that must come.
const PATIENCE: u64 = 500;
/// Milliseconds to wait for one that must not come.
const SETTLE: u64 = 20;

/// kvm_pvm: a pending interrupt is not delivered in an STI; NOP; CLI window.
fn window_defect() -> bool {
    instruction_emulating_kvm()
}

/// Lets pending interrupts in until `count` were handled, or `PATIENCE` passes.
fn deliver(count: usize) -> bool {
    vmunit::time::wait_until(PATIENCE, || HANDLED.load(Ordering::SeqCst) >= count)
}

/// The vectors handled so far.
fn seen() -> ([u8; 8], usize) {
    (handled(), HANDLED.load(Ordering::SeqCst).min(8))
}

/// External interrupts (self-IPIs) through a flushed IDT page: one in the one-instruction
/// window after STI, then two pending ones, which come highest vector first.
fn check_external_interrupts() {
    reset();
    flush_idt_page();
    apic::self_ipi(VECTOR);
    interrupt_window();
    let (order, count) = seen();
    known_failure(
        window_defect(),
        "kvm_pvm delivers no interrupt in an STI; NOP; CLI window (reproduce-sti-window)",
        || {
            report!(
                order[..count] == [VECTOR],
                "a pending self-IPI on {VECTOR} is delivered, through a flushed IDT page, after \
                 the instruction that follows STI (got {:?})",
                &order[..count]
            );
        },
    );
    deliver(1);
    reset();
    flush_idt_page();
    apic::self_ipi(LOW_VECTOR);
    apic::self_ipi(VECTOR);
    deliver(2);
    let (order, count) = seen();
    report!(
        order[..count] == [VECTOR, LOW_VECTOR],
        "pending vectors {LOW_VECTOR} and {VECTOR} are both delivered, {VECTOR} first (got {:?})",
        &order[..count]
    );
}

/// A software interrupt in the STI shadow is delivered before a pending external interrupt.
fn check_shadow_order(software_interrupts: bool) {
    if !software_interrupts {
        report_skip!("INT $33 in the STI shadow: kvm_pvm stops the VM on INT n (reproduce-int-n)");
        return;
    }
    reset();
    flush();
    apic::self_ipi(LOW_VECTOR);
    software_interrupt_in_interrupt_shadow::<VECTOR>();
    deliver(2);
    let (order, count) = seen();
    report!(
        order[..count] == [VECTOR, LOW_VECTOR],
        "STI; INT $33 with vector {LOW_VECTOR} pending: INT $33 first, then {LOW_VECTOR} \
         (got {:?})",
        &order[..count]
    );
}

/// The task priority holds back interrupts of its class and below.
fn check_task_priority() {
    reset();
    flush_idt_page();
    apic::write(register::TASK_PRIORITY, 0xf0);
    apic::self_ipi(LOW_VECTOR);
    apic::self_ipi(HIGH_CLASS_VECTOR);
    let early = vmunit::time::wait_until(SETTLE, || HANDLED.load(Ordering::SeqCst) > 0);
    report!(
        !early,
        "TPR 0xf0 holds back vectors {LOW_VECTOR} and {HIGH_CLASS_VECTOR} (got {:?})",
        &seen().0[..seen().1]
    );
    apic::write(register::TASK_PRIORITY, 0x20);
    deliver(1);
    let _ = vmunit::time::wait_until(SETTLE, || HANDLED.load(Ordering::SeqCst) > 1);
    let (order, count) = seen();
    report!(
        order[..count] == [HIGH_CLASS_VECTOR],
        "TPR 0x20 lets {HIGH_CLASS_VECTOR} (class 3) through, not {LOW_VECTOR} (class 2) (got {:?})",
        &order[..count]
    );
    apic::write(register::TASK_PRIORITY, 0);
    deliver(2);
    let (order, count) = seen();
    report!(
        order[..count] == [HIGH_CLASS_VECTOR, LOW_VECTOR],
        "TPR 0 lets {LOW_VECTOR} through too (got {:?})",
        &order[..count]
    );
}

/// An interrupt through a not-present gate raises #NP with the gate's index, the IDT bit and,
/// for an external interrupt, the EXT bit in the error code. The interrupt was accepted (it
/// is in service) though its handler never ran.
fn check_not_present_gate(software_interrupts: bool) {
    let idt_gate = u64::from(VECTOR) << 3 | 2;
    reset();
    set_gate_present(VECTOR, false);
    flush();
    apic::self_ipi(VECTOR);
    let external = catch_exception(|| vmunit::time::wait_until(PATIENCE, || false));
    set_gate_present(VECTOR, true);
    let in_service = apic::vector_bit(register::IN_SERVICE, VECTOR);
    apic::end_of_interrupt();
    known_failure(
        is_tcg() || instruction_emulating_kvm(),
        "QEMU's TCG and kvm_pvm leave EXT clear in the error code of a fault during external \
         interrupt delivery (reproduce-external-event-bit)",
        || {
            report!(
                matches!(external, Err(e) if e.vector == Vector::NP && e.error_code == idt_gate | 1),
                "a self-IPI through a not-present gate raises #NP({:#x}: gate {VECTOR}, IDT, \
                 EXT) (got {external:x?})",
                idt_gate | 1
            );
        },
    );
    report!(
        in_service,
        "vector {VECTOR} is in service after the #NP: the APIC delivered it"
    );
    let again = vmunit::time::wait_until(SETTLE, || HANDLED.load(Ordering::SeqCst) > 0);
    report!(
        !again,
        "the interrupt is not delivered again once the gate is present (got {:?})",
        &seen().0[..seen().1]
    );
    if software_interrupts {
        set_gate_present(VECTOR, false);
        flush();
        let software = catch_exception(software_interrupt::<VECTOR>);
        set_gate_present(VECTOR, true);
        report!(
            matches!(software, Err(e) if e.vector == Vector::NP && e.error_code == idt_gate),
            "INT $33 through a not-present gate raises #NP({idt_gate:#x}: gate {VECTOR}, IDT) \
             (got {software:x?})"
        );
    }
}

/// An external interrupt delivered onto an unmapped stack: the push faults (#PF), the #PF's
/// push faults too, and the CPU raises #DF, delivered on the #DF's own IST stack.
fn check_unmapped_stack() {
    let page = TestPage::new();
    page.unmap();
    reset();
    apic::self_ipi(VECTOR);
    let result = try_interrupt_window_on_stack(page.address() + 2048, 100_000);
    report!(
        matches!(result, Err(e) if e.vector == Vector::DF && e.error_code == 0),
        "an interrupt delivered onto an unmapped stack ends in #DF(0) (got {result:x?})"
    );
    report!(
        HANDLED.load(Ordering::SeqCst) == 0,
        "its handler never runs ({} deliveries)",
        HANDLED.load(Ordering::SeqCst)
    );
    // The interrupt was accepted before its delivery failed.
    apic::end_of_interrupt();
}
