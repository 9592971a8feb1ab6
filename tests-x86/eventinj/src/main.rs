//! eventinj: event delivery, as kvm-unit-tests' eventinj test checks it: exceptions, software
//! and external interrupts delivered while the host has dropped the IDT and stack pages
//! (pc-testdev's flush port), the order of pending interrupts and of a software interrupt in
//! the STI shadow, TPR masking, #NP from a not-present gate, and a #DF when the stack is
//! unmapped during delivery (SDM Vol. 3, 6.12 and 6.15).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use vmunit::arch::apic::{self, register};
use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::exceptions::{
    RepairedPageFault, exception_return_address, with_nmi_on_current_stack, with_read_only_stack_repaired,
};
use vmunit::arch::instructions::{int3, software_interrupt, try_divide};
use vmunit::arch::mmu::with_stack_on_page_table;
use vmunit::arch::probes::{
    interrupt_window, iret_on_flushed_stack, software_interrupt_in_interrupt_shadow,
    try_divide_by_zero_on_stack, try_interrupt_window_on_stack, try_software_interrupt_on_stack,
    try_software_interrupt_with_stack_pointer,
};
use vmunit::arch::testdev::{flush_idt_page, flush_page, flush_stack_page};
use vmunit::arch::{Exception, page_fault};
use vmunit::arch::{interrupted_address, set_gate_present, set_interrupt_handler};
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
    check_nmi();
    check_nmi_iret();
    check_read_only_stack(software_interrupts);
    check_page_table_stack(software_interrupts);
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
         interrupt delivery (TCG: target/i386/tcg/seg_helper.c do_interrupt64 raises \
         #NP(vector * 8 + 2); reproduce-external-event-bit)",
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

/// NMI handler runs so far.
static NMI_RUNS: AtomicUsize = AtomicUsize::new(0);
/// Set while the first NMI handler run waits with a nested NMI sent.
static IN_FIRST_NMI: AtomicBool = AtomicBool::new(false);
/// Whether the second run began while the first was still waiting.
static NESTED_INSIDE: AtomicBool = AtomicBool::new(false);
/// Where the second NMI arrived.
static NESTED_AT: AtomicU64 = AtomicU64::new(0);
/// Where the first run's IRET to itself (`iret_on_flushed_stack`) returned to.
static AFTER_IRET: AtomicU64 = AtomicU64::new(0);

/// Sends an NMI to this CPU.
fn self_nmi() -> bool {
    apic::send_nmi(apic::id())
}

/// The second run of either NMI handler: records where the nested NMI came in.
fn nested_nmi() {
    NESTED_INSIDE.store(IN_FIRST_NMI.load(Ordering::SeqCst), Ordering::SeqCst);
    NESTED_AT.store(interrupted_address(), Ordering::SeqCst);
}

/// kvm-unit-tests' `nmi_isr`: the first run sends a nested NMI to itself and waits a while;
/// NMIs are blocked until its IRET, so the nested one must come after that IRET completes.
fn nmi_handler(_vector: u8) {
    if NMI_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        IN_FIRST_NMI.store(true, Ordering::SeqCst);
        self_nmi();
        let _ = vmunit::time::wait_until(SETTLE, || NMI_RUNS.load(Ordering::SeqCst) > 1);
        IN_FIRST_NMI.store(false, Ordering::SeqCst);
    } else {
        nested_nmi();
    }
}

/// kvm-unit-tests' `nmi_iret_isr`: the first run sends a nested NMI to itself, then IRETs to
/// its own next instruction from a frame on a fresh page the host has just dropped (so the
/// IRET faults in the hypervisor). That IRET unblocks NMIs: the nested one arrives right
/// after it, still inside this handler.
fn nmi_iret_handler(_vector: u8) {
    if NMI_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        self_nmi();
        let stack = TestPage::new();
        AFTER_IRET.store(iret_on_flushed_stack(&stack), Ordering::SeqCst);
    } else {
        nested_nmi();
    }
}

fn reset_nmi() {
    NMI_RUNS.store(0, Ordering::SeqCst);
    IN_FIRST_NMI.store(false, Ordering::SeqCst);
    NESTED_INSIDE.store(false, Ordering::SeqCst);
    NESTED_AT.store(0, Ordering::SeqCst);
    AFTER_IRET.store(0, Ordering::SeqCst);
}

/// kvm-unit-tests' "NMI" check: a self-NMI delivered through a flushed IDT page runs its
/// handler; a nested NMI sent from that handler is held until the handler's IRET completes,
/// then delivered (once) at the interrupted code, not at the IRET.
fn check_nmi() {
    let _prefix = vmunit::prefix("NMI");
    reset_nmi();
    set_interrupt_handler(Vector::NMI.0, Some(nmi_handler));
    flush_idt_page();
    let sent = self_nmi();
    interrupt_window();
    let _ = vmunit::time::wait_until(PATIENCE, || NMI_RUNS.load(Ordering::SeqCst) >= 2);
    let _ = vmunit::time::wait_until(SETTLE, || NMI_RUNS.load(Ordering::SeqCst) > 2);
    set_interrupt_handler(Vector::NMI.0, None);
    let runs = NMI_RUNS.load(Ordering::SeqCst);
    report!(
        sent && runs >= 1,
        "a self-NMI is delivered through a flushed IDT page (sent {sent}, {runs} handler runs)"
    );
    report!(
        runs == 2 && !NESTED_INSIDE.load(Ordering::SeqCst),
        "the NMI sent from the NMI handler is delivered once, after the handler (got {runs} runs, \
         nested inside the handler: {})",
        NESTED_INSIDE.load(Ordering::SeqCst)
    );
    let at = NESTED_AT.load(Ordering::SeqCst);
    let iret = exception_return_address();
    report!(
        at != 0 && at != iret,
        "the nested NMI arrives after the handler's IRET ({iret:#x}) completed (got {at:#x})"
    );
}

/// kvm-unit-tests' "NMI" check with `nmi_iret_isr`: inside the NMI handler, an IRET whose
/// frame lies on a flushed page unblocks NMIs, and the nested NMI sent before it arrives
/// right after that IRET.
fn check_nmi_iret() {
    let _prefix = vmunit::prefix("NMI IRET");
    reset_nmi();
    set_interrupt_handler(Vector::NMI.0, Some(nmi_iret_handler));
    let sent = with_nmi_on_current_stack(|| {
        let sent = self_nmi();
        interrupt_window();
        let _ = vmunit::time::wait_until(PATIENCE, || NMI_RUNS.load(Ordering::SeqCst) >= 2);
        let _ = vmunit::time::wait_until(SETTLE, || NMI_RUNS.load(Ordering::SeqCst) > 2);
        sent
    });
    set_interrupt_handler(Vector::NMI.0, None);
    let runs = NMI_RUNS.load(Ordering::SeqCst);
    report!(
        sent && runs == 2,
        "the NMI handler runs, and the NMI it sends itself is delivered once (got {runs} runs)"
    );
    let (at, after) = (
        NESTED_AT.load(Ordering::SeqCst),
        AFTER_IRET.load(Ordering::SeqCst),
    );
    known_failure(
        instruction_emulating_kvm(),
        "kvm_pvm keeps NMIs blocked across an IRET inside the NMI handler: the pending NMI \
         comes only after the handler's own IRET (reproduce-nmi-iret-unblock)",
        || {
            report!(
                at != 0 && at == after,
                "an IRET on a flushed stack inside the handler unblocks NMIs: the nested NMI \
                 arrives right after it, at {after:#x} (got {at:#x})"
            );
        },
    );
}

/// The checks of a #PF that an event's delivery onto the read-only `stack` raised, and that
/// the runtime's alternate-stack #PF handler repaired: a write to a present page, in `stack`,
/// at the instruction `at` whose event was being delivered, handled on the #PF IST stack.
fn report_repaired_fault(fault: Option<RepairedPageFault>, stack: &TestPage, at: u64, event: &str) {
    let expected = page_fault::PRESENT | page_fault::WRITE;
    report!(
        matches!(fault, Some(f) if f.exception.vector == Vector::PF
            && f.exception.error_code == expected
            && f.exception.address & !0xfff == stack.address()
            && f.exception.rip == at),
        "{event}'s push onto the read-only stack raises #PF({expected:#x}) in page {:#x} at \
         {at:#x} (got {:x?})",
        stack.address(),
        fault.map(|f| f.exception)
    );
    report!(
        fault.is_some_and(|f| f.on_page_fault_stack),
        "the #PF is delivered on its alternate (IST) stack, whose handler makes the stack \
         writable (got {fault:x?})"
    );
}

/// kvm-unit-tests' "DE PF exceptions" and "NP PF exceptions": an exception delivered onto a
/// read-only stack (page just flushed from the host's mappings, IDT page too) raises #PF in
/// its delivery; the #PF handler, on its own stack, makes the page writable and returns; the
/// faulting instruction runs again and the exception is delivered this time.
fn check_read_only_stack(software_interrupts: bool) {
    let _prefix = vmunit::prefix("read-only stack");
    let stack = TestPage::new();
    let (attempt, fault) = with_read_only_stack_repaired(&stack, || {
        flush_page(stack.frame());
        flush_idt_page();
        try_divide_by_zero_on_stack(&stack)
    });
    known_failure(
        instruction_emulating_kvm(),
        "kvm_pvm raises #DF for a #PF while delivering #DE onto a read-only stack, where a \
         contributory exception then a #PF are handled serially (SDM Vol. 3, Table 6-5; \
         reproduce-page-fault-delivering-divide-error)",
        || {
            report_repaired_fault(fault, &stack, attempt.address, "#DE");
            report!(
                is(&attempt.result, Vector::DE, 0) && at(&attempt.result, attempt.address),
                "then DIV runs again and #DE is delivered at {:#x} (got {:x?})",
                attempt.address,
                attempt.result
            );
        },
    );

    if !software_interrupts {
        report_skip!(
            "#NP from INT $33 onto a read-only stack: kvm_pvm stops the VM on INT n (reproduce-int-n)"
        );
        return;
    }
    let idt_gate = u64::from(VECTOR) << 3 | 2;
    set_gate_present(VECTOR, false);
    let (attempt, fault) = with_read_only_stack_repaired(&stack, || {
        flush_idt_page();
        flush_page(stack.frame());
        try_software_interrupt_on_stack::<VECTOR>(&stack)
    });
    set_gate_present(VECTOR, true);
    report_repaired_fault(fault, &stack, attempt.address, "#NP");
    report!(
        is(&attempt.result, Vector::NP, idt_gate) && at(&attempt.result, attempt.address),
        "then INT $33 runs again and #NP({idt_gate:#x}) is delivered at {:#x} (got {:x?})",
        attempt.address,
        attempt.result
    );
}

/// Whether `result` is exception `vector` with `error_code`.
fn is(result: &Result<(), Exception>, vector: Vector, error_code: u64) -> bool {
    matches!(result, Err(e) if e.vector == vector && e.error_code == error_code)
}

/// Whether `result`'s exception was delivered with RIP `address`.
fn at(result: &Result<(), Exception>, address: u64) -> bool {
    matches!(result, Err(e) if e.rip == address)
}

/// kvm-unit-tests' "int 33 with shadowed stack", with a self-IPI on vector 33 (delivered under
/// every host here; INT n stops kvm_pvm's VM): the interrupt is delivered onto a stack that
/// is also a live page table (the level-1 table mapping a fresh page), which a shadow-paging
/// hypervisor write-protects. The handler runs once, and the table's entry survives.
fn check_page_table_stack(software_interrupts: bool) {
    let _prefix = vmunit::prefix("page-table stack");
    reset();
    apic::self_ipi(VECTOR);
    let (result, intact) = with_stack_on_page_table(|top| try_interrupt_window_on_stack(top, 100_000));
    let (order, count) = seen();
    report!(
        result.is_ok() && order[..count] == [VECTOR],
        "a self-IPI on {VECTOR} delivered onto a stack that is also a live page table runs its \
         handler once (got {result:x?}, {:?})",
        &order[..count]
    );
    report!(
        intact,
        "the page table's entry for its own page still maps it after the delivery"
    );
    if !software_interrupts {
        report_skip!("INT $33 on a page-table stack: kvm_pvm stops the VM on INT n (reproduce-int-n)");
        return;
    }
    reset();
    let (attempt, intact) = with_stack_on_page_table(try_software_interrupt_with_stack_pointer::<VECTOR>);
    let (order, count) = seen();
    report!(
        attempt.result.is_ok() && order[..count] == [VECTOR] && intact,
        "INT $33 on a stack that is also a live page table runs its handler once, the table's \
         own entry intact (got {:x?}, {:?}, intact {intact})",
        attempt.result,
        &order[..count]
    );
}
