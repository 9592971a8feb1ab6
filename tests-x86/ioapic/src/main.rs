//! ioapic: the I/O APIC, checked as kvm-unit-tests' ioapic test does: the ID, version and
//! arbitration registers, redirection entries, edge- and level-triggered delivery (remote IRR
//! held until the EOI, coalescing, retriggering), masking, the local APIC's TMR after each kind,
//! and, with smp >= 2, physical and logical destinations, IRQs raised from CPU 1 and an entry
//! reprogrammed by its own handler; on QEMU's own I/O APIC (version 0x20) also its EOI register.
//! ISA IRQ lines are driven through QEMU's pc-testdev (`-device pc-testdev`); without it the
//! delivery checks SKIP. Every wait is bounded: an interrupt that never comes is a FAIL, never
//! a hang. With the argument `x2apic` every CPU runs its local APIC in x2APIC mode, as
//! kvm-unit-tests runs the test.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use vmunit::arch::apic::{self, register as local};
use vmunit::arch::cpuid::Feature;
use vmunit::arch::interrupts;
use vmunit::arch::ioapic::{
    self, DeliveryMode, DestinationMode, Polarity, RedirectionEntry, Trigger, register,
};
use vmunit::arch::smp::{cpu_count, cpu_index, on_cpu, on_cpu_async};
use vmunit::arch::{set_interrupt_handler, testdev};
use vmunit::environment::instruction_emulating_kvm;
use vmunit::time::{delay, wait_until};
use vmunit::{known_failure, report, report_info, report_kfail, report_skip, report_summary};

vmunit::main!(main);

/// The input most checks drive (ISA IRQ 14, as kvm-unit-tests uses).
const LINE: u8 = 0x0e;
/// A second input for simultaneous and reprogramming checks.
const OTHER_LINE: u8 = 0x0f;
/// The lower-priority input of the self-reprogramming check.
const LOW_LINE: u8 = 0x0d;

/// The version of QEMU's own (user-space) I/O APIC; KVM's in-kernel one is 0x11.
const QEMU_IOAPIC_VERSION: u8 = 0x20;

/// Why [`level_redelivered`] checks may fail: kvm_pvm's defect, named once when in force.
const LEVEL_REDELIVERED: &str = "kvm_pvm runs a level-triggered I/O APIC interrupt's handler \
     with remote IRR clear and delivers it again though the handler lowered the line, after \
     which remote IRR may stay set (reproduce-level-interrupt-redelivered): the checks that \
     count level-triggered interrupts or read their remote IRR report KFAIL there";

/// Whether the host is known to redeliver level-triggered interrupts and get their remote IRR
/// wrong ([`LEVEL_REDELIVERED`]); only the checks that count level-triggered interrupts or read
/// a level entry's remote IRR are KFAIL there, every other check stays a plain one.
fn level_redelivered() -> bool {
    instruction_emulating_kvm()
}

/// Milliseconds to wait for an interrupt that must come (the wait ends as soon as it has).
/// Under TCG with two vCPU threads on a loaded 2-CPU host, an interrupt to CPU 1 was measured
/// arriving more than 100 ms after its edge (ioapic-q35, load average 19: 1 run in 16 counted
/// it late); 1 s keeps a missing interrupt a failure.
const PATIENCE: u64 = 1000;
/// Milliseconds to wait for a serviced level entry's remote IRR to clear before the next check.
const REMOTE_IRR_WAIT: u64 = 100;
/// Milliseconds to wait for one that must not come, or for a second one after the first.
const SETTLE: u64 = 3;

/// Interrupts handled per vector.
static COUNTS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
/// Which CPUs handled an interrupt, per vector: bit n for CPU n. Per vector, so that a late
/// interrupt of an earlier check (kvm_pvm's redelivered level interrupt) is not taken for one
/// of the check under way.
static HANDLED_ON: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

fn handled(vector: u8) -> u32 {
    COUNTS[usize::from(vector)].load(Ordering::SeqCst)
}

/// Interrupts on one vector that make a storm: an input that never stops (a mask or an EOI
/// that does not work). The handler then lowers and masks the test's inputs, so that the test
/// goes on to FAIL instead of livelocking.
const STORM: u32 = 1000;

/// Counts the interrupt and the CPU it arrived on.
fn record(vector: u8) -> u32 {
    HANDLED_ON[usize::from(vector)].fetch_or(1 << cpu_index(), Ordering::SeqCst);
    let count = COUNTS[usize::from(vector)].fetch_add(1, Ordering::SeqCst) + 1;
    if count >= STORM {
        for line in [LINE, OTHER_LINE, LOW_LINE] {
            testdev::set_irq_line(line, false);
            ioapic::set_mask(line, true);
        }
    }
    count
}

/// Counts the interrupt.
fn count(vector: u8) {
    record(vector);
}

/// Counts the interrupt and lowers [`LINE`] (a level-triggered source the handler serviced).
fn count_and_lower(vector: u8) {
    record(vector);
    testdev::set_irq_line(LINE, false);
}

/// Waits, interrupts enabled, until `vector` was handled `expected` times, then a little longer
/// for any extra one; returns the count.
fn wait_for(vector: u8, expected: u32) -> u32 {
    let _ = wait_until(PATIENCE, || handled(vector) >= expected);
    let _ = wait_until(SETTLE, || handled(vector) > expected);
    handled(vector)
}

/// Waits, interrupts enabled, for an interrupt on `vector` that must not come; returns the count.
fn settle(vector: u8) -> u32 {
    let _ = wait_until(SETTLE, || handled(vector) > 0);
    handled(vector)
}

fn main(args: &[&str]) -> i32 {
    ioapic::mask_legacy_pic();
    if args.contains(&"x2apic") {
        if !Feature::X2apic.supported() {
            report_skip!("x2APIC: CPUID.1:ECX[21] is clear");
            return report_summary();
        }
        let switched = apic::enable_x2apic_everywhere();
        report!(
            switched == cpu_count(),
            "every CPU switches to x2APIC mode ({switched} of {})",
            cpu_count()
        );
    }
    check_registers();
    check_redirection_entries();
    if !testdev::present() {
        report_skip!("interrupt delivery: no pc-testdev to raise IRQ lines (-device pc-testdev)");
        return report_summary();
    }
    let smp = cpu_count() >= 2;
    if !smp {
        report_skip!("destinations, IRQs from CPU 1 and self-reprogramming need smp >= 2");
    }
    // Edge-triggered interrupts first: kvm_pvm's defect below leaves the local APIC in a state
    // (vectors in service, remote IRR set) that would spill over into them.
    check_edge();
    check_simultaneous();
    check_edge_masking();
    {
        let _prefix = vmunit::prefix("TMR");
        check_trigger_mode(Trigger::Edge, false, || testdev::pulse_irq_line(LINE));
    }
    if smp {
        check_destinations(Trigger::Edge);
    }
    if level_redelivered() {
        report_info!("known failure here: {LEVEL_REDELIVERED}");
    }
    check_level();
    check_level_coalescing();
    check_end_of_interrupt_register();
    check_level_masking();
    check_trigger_mode_register();
    if smp {
        check_destinations(Trigger::Level);
        check_trigger_mode_register_smp();
        check_self_reprogramming();
    }
    report_summary()
}

fn check_registers() {
    let _prefix = vmunit::prefix("registers");
    let version = ioapic::read(register::VERSION);
    report_info!("I/O APIC version register {version:#x}");
    report!(
        matches!(version & 0xff, 0x11 | 0x20),
        "the version is 0x11 (82093AA) or 0x20 (with an EOI register) (got {version:#x})"
    );
    report!(
        ioapic::max_redirection_entry() >= 23,
        "there are at least 24 redirection entries (got {})",
        u32::from(ioapic::max_redirection_entry()) + 1
    );
    ioapic::write(register::VERSION, !version);
    let after = ioapic::read(register::VERSION);
    report!(
        after == version,
        "the version register is read-only (got {after:#x})"
    );

    let id = ioapic::read(register::ID);
    ioapic::write(register::ID, !id);
    let changed = id ^ ioapic::read(register::ID);
    report!(
        changed == ioapic::ID_MASK,
        "only bits 27:24 of the ID register are writable (changed {changed:#x})"
    );
    ioapic::write(register::ID, ioapic::ID_MASK);
    let arbitration = ioapic::read(register::ARBITRATION);
    report!(
        arbitration == ioapic::ID_MASK,
        "the arbitration ID follows the ID, {:#x} (got {arbitration:#x})",
        ioapic::ID_MASK
    );
    ioapic::write(register::ARBITRATION, 0);
    let arbitration = ioapic::read(register::ARBITRATION);
    report!(
        arbitration == ioapic::ID_MASK,
        "the arbitration register is read-only (got {arbitration:#x})"
    );
    ioapic::write(register::ID, id);
}

fn check_redirection_entries() {
    let _prefix = vmunit::prefix("redirection");
    let last = ioapic::max_redirection_entry();
    let unmasked = (0..=last).find(|line| !ioapic::read_entry(*line).masked);
    report!(
        unmasked.is_none(),
        "every entry is masked after reset (first unmasked: {unmasked:?})"
    );
    let entry = RedirectionEntry {
        vector: 0x5a,
        delivery_mode: DeliveryMode::LowestPriority,
        destination_mode: DestinationMode::Logical,
        delivery_pending: false,
        polarity: Polarity::ActiveLow,
        remote_irr: false,
        trigger: Trigger::Level,
        masked: true,
        destination: 0xa5,
    };
    ioapic::write_entry(LINE, entry);
    let read = ioapic::read_entry(LINE);
    report!(
        read == entry,
        "every writable field reads back as written (got {read:x?})"
    );
    let flipped = RedirectionEntry {
        vector: 0xa5,
        delivery_mode: DeliveryMode::Fixed,
        destination_mode: DestinationMode::Physical,
        polarity: Polarity::ActiveHigh,
        trigger: Trigger::Edge,
        destination: 0x5a,
        ..entry
    };
    ioapic::write_entry(LINE, flipped);
    let read = ioapic::read_entry(LINE);
    report!(read == flipped, "and so does their complement (got {read:x?})");
    let mut read_only = flipped;
    read_only.remote_irr = true;
    read_only.delivery_pending = true;
    ioapic::write_entry(LINE, read_only);
    let read = ioapic::read_entry(LINE);
    report!(
        !read.remote_irr && !read.delivery_pending,
        "remote IRR and delivery status are read-only (got {read:x?})"
    );
    // Ones in the reserved bits 55:17 (the entry stays masked). The 82093AA datasheet calls
    // them reserved without saying what they read; QEMU's I/O APIC keeps them as written
    // (hw/intc/ioapic.c, ioapic_mem_write: IOAPIC_RW_BITS), and so does KVM's in-kernel one
    // (ioapic_write_indirect). What must hold: they change no field, and do not stick.
    let (low, high) = flipped.to_dwords();
    ioapic::write_entry_dwords(LINE, low | ioapic::RESERVED_LOW, high | ioapic::RESERVED_HIGH);
    let (low, high) = ioapic::read_entry_dwords(LINE);
    report_info!(
        "with ones written there, the reserved bits read {:#x} (low dword), {:#x} (high dword)",
        low & ioapic::RESERVED_LOW,
        high & ioapic::RESERVED_HIGH
    );
    let read = RedirectionEntry::from_dwords(low, high);
    report!(
        read == flipped,
        "ones written to the reserved bits 55:17 change no field (got {read:x?})"
    );
    ioapic::write_entry(LINE, flipped);
    let (low, high) = ioapic::read_entry_dwords(LINE);
    report!(
        high & ioapic::RESERVED_HIGH == 0,
        "written as zero again, the high dword's reserved bits 55:32 read as zero (got {high:#x})"
    );
    report!(
        low & ioapic::RESERVED_LOW == 0,
        "written as zero again, the low dword's reserved bits 31:17 read as zero (got {low:#x})"
    );
    let mut masked = RedirectionEntry::new(0x5a, Trigger::Edge);
    masked.masked = true;
    ioapic::write_entry(LINE, masked);
}

/// Whether the vector was in service (its ISR bit set) while its handler ran.
static IN_SERVICE_IN_HANDLER: AtomicBool = AtomicBool::new(false);

fn edge_handler(vector: u8) {
    IN_SERVICE_IN_HANDLER.store(apic::vector_bit(local::IN_SERVICE, vector), Ordering::SeqCst);
    count(vector);
}

fn check_edge() {
    let _prefix = vmunit::prefix("edge");
    const VECTOR: u8 = 0x76;
    handle_on_line(VECTOR, edge_handler, Trigger::Edge);
    testdev::pulse_irq_line(LINE);
    let got = wait_for(VECTOR, 1);
    report!(
        got == 1,
        "one pulse on IRQ {LINE} is one interrupt on {VECTOR:#x} (got {got})"
    );
    known_failure(
        instruction_emulating_kvm(),
        "kvm_pvm's local APIC does not show the vector being serviced in ISR \
         (reproduce-interrupt-in-service)",
        || {
            report!(
                IN_SERVICE_IN_HANDLER.load(Ordering::SeqCst),
                "the vector is in service (ISR) while its handler runs"
            )
        },
    );
    let entry = ioapic::read_entry(LINE);
    report!(
        !entry.remote_irr,
        "an edge-triggered entry never sets remote IRR (got {entry:x?})"
    );
    testdev::set_irq_line(LINE, true);
    let got = wait_for(VECTOR, 2);
    report!(got == 2, "a rising edge alone is an interrupt (got {got})");
    testdev::set_irq_line(LINE, true);
    let got = settle_more(VECTOR, 2);
    known_failure(
        ioapic::version() == QEMU_IOAPIC_VERSION,
        "QEMU's own I/O APIC (version 0x20) sends an edge-triggered interrupt on every write \
         of an asserted level, rising edge or not (hw/intc/ioapic.c, ioapic_set_irq: no edge \
         detection; reproduce-ioapic-edge-held-high); KVM's in-kernel one (ioapic-q35 under KVM) \
         runs this check as a plain one",
        || report!(got == 2, "a line held high sends no more interrupts (got {got})"),
    );
    let before = handled(VECTOR);
    testdev::set_irq_line(LINE, false);
    let got = settle_more(VECTOR, before);
    report!(
        got == before,
        "nor does its falling edge (got {got}, {before} before it)"
    );
}

/// Waits for an interrupt on `vector` beyond the `already` handled; returns the count.
fn settle_more(vector: u8, already: u32) -> u32 {
    let _ = wait_until(SETTLE, || handled(vector) > already);
    handled(vector)
}

/// Remote IRR of the level-triggered entry, as its handler saw it before the EOI.
static REMOTE_IRR_IN_HANDLER: AtomicBool = AtomicBool::new(false);
/// The local TMR bit of the vector, as the handler saw it.
static TRIGGER_MODE_IN_HANDLER: AtomicBool = AtomicBool::new(false);

fn level_handler(vector: u8) {
    REMOTE_IRR_IN_HANDLER.store(ioapic::read_entry(LINE).remote_irr, Ordering::SeqCst);
    TRIGGER_MODE_IN_HANDLER.store(ioapic::local_trigger_mode(vector), Ordering::SeqCst);
    count_and_lower(vector);
}

fn check_level() {
    let _prefix = vmunit::prefix("level");
    const VECTOR: u8 = 0x77;
    handle_on_line(VECTOR, level_handler, Trigger::Level);
    testdev::set_irq_line(LINE, true);
    let got = wait_for(VECTOR, 1);
    report_kfail!(
        level_redelivered(),
        got == 1,
        "a raised line is one interrupt on {VECTOR:#x} when the handler lowers it (got {got})"
    );
    report_kfail!(
        level_redelivered(),
        REMOTE_IRR_IN_HANDLER.load(Ordering::SeqCst),
        "remote IRR is set while the handler runs"
    );
    let entry = ioapic::read_entry(LINE);
    report_kfail!(
        level_redelivered(),
        !entry.remote_irr,
        "the EOI clears remote IRR (got {entry:x?})"
    );

    // With interrupts disabled the interrupt waits in the local APIC, and remote IRR with it.
    interrupts::disable();
    testdev::set_irq_line(LINE, true);
    delay(SETTLE);
    let entry = ioapic::read_entry(LINE);
    let requested = apic::vector_bit(local::REQUEST, VECTOR);
    report!(
        requested,
        "with IF clear the interrupt is pending in the local APIC's IRR"
    );
    report!(
        entry.remote_irr,
        "remote IRR is set from delivery until the EOI (got {entry:x?})"
    );
    let got = wait_for(VECTOR, 2);
    report_kfail!(
        level_redelivered(),
        got == 2,
        "enabling interrupts delivers it, once (got {got})"
    );
    let entry = ioapic::read_entry(LINE);
    report_kfail!(
        level_redelivered(),
        !entry.remote_irr,
        "and its EOI clears remote IRR (got {entry:x?})"
    );

    // kvm-unit-tests' sequential level interrupts: raised again after the first was handled.
    const SEQUENTIAL: u8 = 0x99;
    handle_on_line(SEQUENTIAL, count_and_lower, Trigger::Level);
    testdev::set_irq_line(LINE, true);
    let first = wait_for(SEQUENTIAL, 1);
    testdev::set_irq_line(LINE, true);
    let got = wait_for(SEQUENTIAL, 2);
    report_kfail!(
        level_redelivered(),
        first == 1 && got == 2,
        "a line raised twice, each after the previous interrupt, is two interrupts (got {first}, {got})"
    );
}

/// Two edges queued with interrupts disabled: the vectors in the order they were handled.
static ORDER: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static ORDER_NEXT: AtomicUsize = AtomicUsize::new(0);

fn ordered(vector: u8) {
    let slot = ORDER_NEXT.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = ORDER.get(slot) {
        slot.store(u32::from(vector), Ordering::SeqCst);
    }
    record(vector);
}

fn check_simultaneous() {
    let _prefix = vmunit::prefix("simultaneous");
    const HIGH: u8 = 0x78;
    const LOW: u8 = 0x66;
    set_interrupt_handler(HIGH, Some(ordered));
    set_interrupt_handler(LOW, Some(ordered));
    route(LINE, HIGH, Trigger::Edge);
    route(OTHER_LINE, LOW, Trigger::Edge);
    interrupts::disable();
    testdev::pulse_irq_line(OTHER_LINE);
    testdev::pulse_irq_line(LINE);
    let _ = wait_for(HIGH, 1);
    let _ = wait_for(LOW, 1);
    let order = [ORDER[0].load(Ordering::SeqCst), ORDER[1].load(Ordering::SeqCst)];
    report!(
        handled(HIGH) == 1 && handled(LOW) == 1,
        "two edges on two inputs with IF clear are two interrupts (got {} on {HIGH:#x}, {} on {LOW:#x})",
        handled(HIGH),
        handled(LOW)
    );
    report!(
        order == [u32::from(HIGH), u32::from(LOW)],
        "the higher vector {HIGH:#x} is handled first, though its IRQ came second (got {order:x?})"
    );
    mask(OTHER_LINE);
}

/// Programs `line` afresh: lowered, then masked and edge-triggered (which clears a remote IRR
/// left set by an earlier check, as Linux expects of an I/O APIC and QEMU and KVM implement),
/// then routed to `vector` on CPU 0, so that each check starts from a clean input.
/// Installs `handler` on `vector` and routes [`LINE`] to it, as `trigger`.
fn handle_on_line(vector: u8, handler: fn(u8), trigger: Trigger) {
    set_interrupt_handler(vector, Some(handler));
    route(LINE, vector, trigger);
}

fn route(line: u8, vector: u8, trigger: Trigger) {
    testdev::set_irq_line(line, false);
    let mut quiet = RedirectionEntry::new(vector, Trigger::Edge);
    quiet.masked = true;
    ioapic::write_entry(line, quiet);
    ioapic::route(line, vector, trigger);
}

/// Masks `line`, keeping its entry.
fn mask(line: u8) {
    ioapic::set_mask(line, true);
}

fn coalescing_handler(vector: u8) {
    if record(vector) == 1 {
        // A new edge while remote IRR is set: no new interrupt.
        testdev::set_irq_line(LINE, false);
        testdev::set_irq_line(LINE, true);
    }
    testdev::set_irq_line(LINE, false);
}

fn retrigger_handler(vector: u8) {
    if record(vector) == 2 {
        testdev::set_irq_line(LINE, false);
    }
}

fn check_level_coalescing() {
    let _prefix = vmunit::prefix("level");
    const COALESCE: u8 = 0x98;
    handle_on_line(COALESCE, coalescing_handler, Trigger::Level);
    testdev::set_irq_line(LINE, true);
    let got = wait_for(COALESCE, 1);
    report_kfail!(
        level_redelivered(),
        got == 1,
        "a line lowered and raised again before the EOI is one interrupt (got {got})"
    );

    const RETRIGGER: u8 = 0x9a;
    handle_on_line(RETRIGGER, retrigger_handler, Trigger::Level);
    testdev::set_irq_line(LINE, true);
    let got = wait_for(RETRIGGER, 2);
    report_kfail!(
        level_redelivered(),
        got == 2,
        "a line still high at the EOI is delivered again, without masking (got {got})"
    );
}

/// Version 0x20's EOI register: a vector written to it clears remote IRR of the entries on
/// that vector, without the local APIC.
fn check_end_of_interrupt_register() {
    let _prefix = vmunit::prefix("EOI register");
    if ioapic::version() != QEMU_IOAPIC_VERSION {
        report_skip!(
            "the I/O APIC is version {:#x}: no EOI register",
            ioapic::version()
        );
        return;
    }
    const VECTOR: u8 = 0x9c;
    handle_on_line(VECTOR, count_and_lower, Trigger::Level);
    interrupts::disable();
    testdev::set_irq_line(LINE, true);
    delay(SETTLE);
    let before = ioapic::read_entry(LINE).remote_irr;
    testdev::set_irq_line(LINE, false);
    ioapic::end_of_interrupt(VECTOR ^ 1);
    let other = ioapic::read_entry(LINE).remote_irr;
    ioapic::end_of_interrupt(VECTOR);
    let after = ioapic::read_entry(LINE).remote_irr;
    report!(
        before && other && !after,
        "an EOI of {VECTOR:#x} clears remote IRR, one of another vector does not (got {before}, \
         {other}, {after})"
    );
    let got = wait_for(VECTOR, 1);
    report!(
        got == 1,
        "the interrupt waiting in the local APIC is still delivered, once (got {got})"
    );
}

fn mask_in_handler(vector: u8) {
    record(vector);
    mask(LINE);
}

fn check_edge_masking() {
    let _prefix = vmunit::prefix("mask");
    const EDGE: u8 = 0x81;
    handle_on_line(EDGE, count_and_lower, Trigger::Edge);
    mask(LINE);
    testdev::pulse_irq_line(LINE);
    let got = settle(EDGE);
    report!(got == 0, "a masked edge input sends nothing (got {got})");
    ioapic::set_mask(LINE, false);
    testdev::set_irq_line(LINE, true);
    let got = wait_for(EDGE, 1);
    report!(got == 1, "unmasked, its next edge is one interrupt (got {got})");
}

fn check_level_masking() {
    let _prefix = vmunit::prefix("mask");
    const LEVEL: u8 = 0x82;
    handle_on_line(LEVEL, count_and_lower, Trigger::Level);
    mask(LINE);
    testdev::set_irq_line(LINE, true);
    let got = settle(LEVEL);
    report!(
        got == 0,
        "a masked level input held high sends nothing (got {got})"
    );
    let entry = ioapic::read_entry(LINE);
    ioapic::set_mask(LINE, false);
    let got = wait_for(LEVEL, 1);
    report_kfail!(
        level_redelivered(),
        got == 1,
        "unmasking it delivers the pending level, once (got {got}; before unmasking {entry:x?})"
    );

    const RETRIGGER: u8 = 0x83;
    handle_on_line(RETRIGGER, mask_in_handler, Trigger::Level);
    testdev::set_irq_line(LINE, true);
    let first = wait_for(RETRIGGER, 1);
    report_kfail!(
        level_redelivered(),
        first == 1,
        "a level interrupt whose handler masks the input comes once (got {first})"
    );
    ioapic::set_mask(LINE, false);
    let got = wait_for(RETRIGGER, 2);
    report_kfail!(
        level_redelivered(),
        got == 2,
        "unmasking the still-high line after the EOI delivers it again (got {got})"
    );
    testdev::set_irq_line(LINE, false);
    ioapic::set_mask(LINE, false);
}

/// The TMR bit of the vector in its handler: -1 before any interrupt.
static TRIGGER_MODE_SEEN: AtomicU32 = AtomicU32::new(u32::MAX);

fn trigger_mode_handler(vector: u8) {
    TRIGGER_MODE_SEEN.store(u32::from(ioapic::local_trigger_mode(vector)), Ordering::SeqCst);
    count_and_lower(vector);
}

const TRIGGER_MODE_VECTOR: u8 = 0x79;

/// One interrupt on [`TRIGGER_MODE_VECTOR`] of kind `trigger` raised by `raise`; reports the
/// TMR before it (`expected_before`) and in its handler.
fn check_trigger_mode(trigger: Trigger, expected_before: bool, raise: impl FnOnce()) {
    let vector = TRIGGER_MODE_VECTOR;
    handle_on_line(vector, trigger_mode_handler, trigger);
    TRIGGER_MODE_SEEN.store(u32::MAX, Ordering::SeqCst);
    let before = ioapic::local_trigger_mode(vector);
    let already = handled(vector);
    raise();
    let got = wait_for(vector, already + 1) - already;
    let seen = TRIGGER_MODE_SEEN.load(Ordering::SeqCst);
    let level = trigger == Trigger::Level;
    report!(
        before == expected_before && seen == u32::from(level),
        "{trigger:?}: TMR is {} before and {} in the handler (got {}, {})",
        u32::from(expected_before),
        u32::from(level),
        u32::from(before),
        seen as i32
    );
    report_kfail!(
        level && level_redelivered(),
        got == 1,
        "{trigger:?}: the interrupt comes once (got {got})"
    );
    let _ = wait_until(REMOTE_IRR_WAIT, || !ioapic::read_entry(LINE).remote_irr);
}

fn check_trigger_mode_register() {
    let _prefix = vmunit::prefix("TMR");
    check_trigger_mode(Trigger::Level, false, || testdev::set_irq_line(LINE, true));
    check_trigger_mode(Trigger::Level, true, || testdev::set_irq_line(LINE, true));
    check_trigger_mode(Trigger::Edge, true, || testdev::pulse_irq_line(LINE));
}

fn check_trigger_mode_register_smp() {
    let _prefix = vmunit::prefix("TMR, IRQ raised by CPU 1");
    let from_cpu_1 = |raise: fn()| {
        move || {
            on_cpu_async(1, move || {
                delay(1);
                raise();
            })
        }
    };
    check_trigger_mode(Trigger::Edge, false, from_cpu_1(|| testdev::pulse_irq_line(LINE)));
    check_trigger_mode(
        Trigger::Level,
        false,
        from_cpu_1(|| testdev::set_irq_line(LINE, true)),
    );
    check_trigger_mode(
        Trigger::Level,
        true,
        from_cpu_1(|| testdev::set_irq_line(LINE, true)),
    );
    check_trigger_mode(Trigger::Edge, true, from_cpu_1(|| testdev::pulse_irq_line(LINE)));
}

/// Set while CPU 1 listens for interrupts.
static LISTENING: AtomicBool = AtomicBool::new(false);
/// Set to end CPU 1's listening.
static STOP_LISTENING: AtomicBool = AtomicBool::new(false);

/// Has CPU 1 listen with interrupts enabled until told to stop (bounded).
fn listen_on_cpu_1() {
    STOP_LISTENING.store(false, Ordering::SeqCst);
    LISTENING.store(false, Ordering::SeqCst);
    on_cpu_async(1, || {
        LISTENING.store(true, Ordering::SeqCst);
        let _ = wait_until(4 * PATIENCE, || STOP_LISTENING.load(Ordering::SeqCst));
        LISTENING.store(false, Ordering::SeqCst);
    });
    let _ = wait_until(PATIENCE, || LISTENING.load(Ordering::SeqCst));
}

fn stop_listening() {
    STOP_LISTENING.store(true, Ordering::SeqCst);
    let _ = wait_until(PATIENCE, || !LISTENING.load(Ordering::SeqCst));
}

/// Sends an interrupt through `entry` (an edge, or a level its handler lowers) with CPU 1
/// listening; returns how many arrived and the set of CPUs (bit n: CPU n) that handled them.
fn deliver_to(entry: RedirectionEntry, expected: u32) -> (u32, usize) {
    set_interrupt_handler(entry.vector, Some(count_and_lower));
    HANDLED_ON[usize::from(entry.vector)].store(0, Ordering::SeqCst);
    let already = handled(entry.vector);
    listen_on_cpu_1();
    ioapic::write_entry(LINE, entry);
    match entry.trigger {
        Trigger::Edge => testdev::pulse_irq_line(LINE),
        Trigger::Level => testdev::set_irq_line(LINE, true),
    }
    wait_for(entry.vector, already + expected);
    stop_listening();
    let _ = wait_until(REMOTE_IRR_WAIT, || !ioapic::read_entry(LINE).remote_irr);
    // An input no CPU answered is still high: lower it, masked, for the checks that follow.
    ioapic::write_entry(
        LINE,
        RedirectionEntry {
            masked: true,
            ..entry
        },
    );
    testdev::set_irq_line(LINE, false);
    // Counted with the CPUs, after the same wait: one that came late counts in both.
    (
        handled(entry.vector) - already,
        HANDLED_ON[usize::from(entry.vector)].load(Ordering::SeqCst),
    )
}

/// Physical and logical (flat model) destinations with CPU 1 as the target, as kvm-unit-tests
/// checks them with level-triggered entries (and here with edge-triggered ones too).
fn check_destinations(trigger: Trigger) {
    let _prefix = vmunit::prefix!("{trigger:?} destination");
    let target = AtomicU32::new(0);
    on_cpu(1, || target.store(apic::id(), Ordering::SeqCst));
    let target = target.load(Ordering::SeqCst) as u8;
    let first_vector = match trigger {
        Trigger::Edge => 0x85,
        Trigger::Level => 0x8a,
    };

    let mut entry = RedirectionEntry::new(first_vector, trigger);
    entry.destination = target;
    let redelivered = trigger == Trigger::Level && level_redelivered();
    let (got, cpus) = deliver_to(entry, 1);
    report!(
        cpus == 0b10,
        "physical destination {target} reaches CPU 1 only (got CPUs {cpus:#b})"
    );
    report_kfail!(
        redelivered,
        got == 1,
        "physical destination {target}: one interrupt (got {got})"
    );

    // CPU n answers to logical destination bit n: in xAPIC mode once the flat model and the
    // LDRs say so; in x2APIC mode by its read-only LDR (cluster 0, bit n for APIC ID n), which
    // the I/O APIC's 8-bit destination matches as cluster 0.
    if !apic::x2apic_mode() {
        for cpu in 0..2 {
            on_cpu(cpu, || {
                apic::write(local::DESTINATION_FORMAT, 0xffff_ffff);
                apic::write(local::LOGICAL_DESTINATION, 1 << (24 + cpu_index()));
            });
        }
    } else {
        let ldr = AtomicU32::new(0);
        on_cpu(1, || {
            ldr.store(apic::read(local::LOGICAL_DESTINATION), Ordering::SeqCst)
        });
        let ldr = ldr.load(Ordering::SeqCst);
        report!(
            ldr == 0b10,
            "CPU 1's x2APIC LDR is cluster 0, bit 1 (got {ldr:#x})"
        );
    }
    entry.destination_mode = DestinationMode::Logical;
    for (offset, destination, expected, cpus_expected) in
        [(1, 0b10, 1, 0b10), (2, 0b11, 2, 0b11), (3, 0b100, 0, 0)]
    {
        entry.vector = first_vector + offset;
        entry.destination = destination;
        let (got, cpus) = deliver_to(entry, expected);
        report!(
            cpus == cpus_expected,
            "logical destination {destination:#05b} reaches CPUs {cpus_expected:#b} (got CPUs \
             {cpus:#b})"
        );
        report_kfail!(
            redelivered,
            got == expected,
            "logical destination {destination:#05b}: {expected} interrupts, one per CPU (got {got})"
        );
    }
}

const SELF_LOW: u8 = 0x64;
const SELF_HIGH: u8 = 0x84;
/// Remote IRR of each input after its line was lowered in the low handler.
static REMOTE_IRR_BEFORE_MOVE: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];
/// Whether the high handler ran after the low one had finished.
static HIGH_AFTER_LOW: AtomicBool = AtomicBool::new(false);

/// Lowers `line`, notes its remote IRR, and moves its entry to APIC ID 1 (high dword only).
fn move_away(line: u8, slot: usize) {
    testdev::set_irq_line(line, false);
    REMOTE_IRR_BEFORE_MOVE[slot].store(ioapic::read_entry(line).remote_irr, Ordering::SeqCst);
    ioapic::write_destination(line, 1);
}

fn self_low_handler(vector: u8) {
    // Raise the higher-priority IRQ first, then reroute both inputs away from this CPU: the
    // EOIs of both vectors must still clear their entries' remote IRR.
    testdev::set_irq_line(LINE, true);
    move_away(LINE, 0);
    move_away(LOW_LINE, 1);
    record(vector);
}

fn self_high_handler(vector: u8) {
    HIGH_AFTER_LOW.store(handled(SELF_LOW) == 1, Ordering::SeqCst);
    record(vector);
}

fn check_self_reprogramming() {
    let _prefix = vmunit::prefix("reprogrammed by its handler");
    set_interrupt_handler(SELF_LOW, Some(self_low_handler));
    set_interrupt_handler(SELF_HIGH, Some(self_high_handler));
    route(LOW_LINE, SELF_LOW, Trigger::Level);
    route(LINE, SELF_HIGH, Trigger::Level);
    testdev::set_irq_line(LOW_LINE, true);
    let _ = wait_for(SELF_LOW, 1);
    let _ = wait_for(SELF_HIGH, 1);
    report_kfail!(
        level_redelivered(),
        REMOTE_IRR_BEFORE_MOVE
            .iter()
            .all(|flag| flag.load(Ordering::SeqCst)),
        "remote IRR of both inputs is set when the handler reroutes them (got {:?})",
        REMOTE_IRR_BEFORE_MOVE
    );
    report!(
        HIGH_AFTER_LOW.load(Ordering::SeqCst),
        "the higher vector waits for the handler's IRET (IF clear in the handler)"
    );
    let high = ioapic::read_entry(LINE);
    report_kfail!(
        level_redelivered(),
        handled(SELF_HIGH) == 1 && !high.remote_irr,
        "the higher vector comes once, and its EOI clears remote IRR though the entry moved (got {}, {high:x?})",
        handled(SELF_HIGH)
    );
    let low = ioapic::read_entry(LOW_LINE);
    report_kfail!(
        level_redelivered(),
        handled(SELF_LOW) == 1 && !low.remote_irr,
        "the lower vector came once, and its EOI cleared remote IRR though the entry moved (got {}, {low:x?})",
        handled(SELF_LOW)
    );
    mask(LINE);
    mask(LOW_LINE);
}
