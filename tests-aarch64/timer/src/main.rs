//! timer: the Arm generic timer's EL1 virtual and physical timers: the counter, CVAL and TVAL,
//! ENABLE/IMASK/ISTATUS, the PPI's pending state at the GIC, delivery through the GIC
//! within a bound, the TVAL countdown, and wake-up from WFI.
#![no_std]
#![no_main]

use vmunit::arch::gic;
use vmunit::arch::instructions::wait_for_interrupt_enabled;
use vmunit::arch::timer::{self, CTL_ENABLE, CTL_IMASK, CTL_ISTATUS, Timer};
use vmunit::{prefix, report, report_summary};

vmunit::main!(main);

fn main(_arguments: &[&str]) -> i32 {
    let frequency = timer::frequency();
    report!(frequency != 0, "CNTFRQ_EL0 is nonzero (got {frequency})");
    let first = timer::virtual_count();
    let mut second = first;
    for _ in 0..1_000_000 {
        second = timer::virtual_count();
        if second > first {
            break;
        }
    }
    report!(second > first, "CNTVCT_EL0 increases ({first} then {second})");
    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return report_summary();
    }
    for timer in [Timer::Virtual, Timer::Physical] {
        check_timer(timer, frequency);
    }
    report_summary()
}

/// Masks the timer whose PPI fired, so that its level-triggered interrupt goes away.
fn handler(intid: u32) {
    for timer in [Timer::Virtual, Timer::Physical] {
        if timer.intid() == intid {
            timer.set_control(CTL_ENABLE | CTL_IMASK);
        }
    }
}

fn check_timer(timer: Timer, frequency: u64) {
    let _prefix = prefix(timer.name());
    let intid = timer.intid();
    vmunit::arch::set_interrupt_handler(intid, Some(handler));
    gic::enable(intid);

    timer.set_control(0);
    timer.set_compare_value(timer.count() + 10 * frequency);
    timer.set_control(CTL_ENABLE | CTL_IMASK);
    report!(
        timer.control() & CTL_ISTATUS == 0,
        "ISTATUS is clear with CVAL 10 s ahead (CTL {:#x})",
        timer.control()
    );
    report!(!gic::is_pending(intid), "PPI {intid} is not pending at the GIC");

    timer.set_compare_value(timer.count());
    report!(
        timer.control() & CTL_ISTATUS != 0,
        "ISTATUS is set once CVAL has passed, even with IMASK (CTL {:#x})",
        timer.control()
    );
    report!(
        !gic::is_pending(intid),
        "with IMASK set, PPI {intid} is not pending"
    );
    timer.set_control(CTL_ENABLE);
    report!(
        gic::is_pending(intid),
        "with IMASK clear, PPI {intid} is pending at the GIC (IRQs masked at the CPU)"
    );
    let before = gic::delivered(0, intid);
    wait_for_interrupt_enabled();
    report!(
        gic::delivered(0, intid) == before + 1,
        "unmasking IRQs delivers the interrupt once (delivered {} times)",
        gic::delivered(0, intid) - before
    );
    report!(
        !gic::is_pending(intid) && timer.control() & CTL_IMASK != 0,
        "the handler masked the timer and the PPI is no longer pending"
    );

    timer.set_control(0);
    let ticks = (frequency / 100) as i32;
    timer.set_timer_value(ticks);
    let first = timer.timer_value();
    let mut second = first;
    for _ in 0..1_000_000 {
        second = timer.timer_value();
        if second < first {
            break;
        }
    }
    report!(
        first <= ticks && first > 0 && second < first,
        "TVAL counts down from {ticks} (read {first} then {second})"
    );

    // Wake from WFI: a 10 ms timer, IRQs unmasked only around WFI.
    let start = timer.count();
    let before = gic::delivered(0, intid);
    timer.set_timer_value(ticks);
    timer.set_control(CTL_ENABLE);
    let mut waits = 0;
    while gic::delivered(0, intid) == before && waits < 10_000 {
        wait_for_interrupt_enabled();
        waits += 1;
    }
    let elapsed = timer.count() - start;
    report!(
        gic::delivered(0, intid) == before + 1,
        "WFI wakes up for the timer's interrupt (after {waits} waits)"
    );
    report!(
        elapsed >= ticks as u64 && elapsed < frequency,
        "the interrupt came after 10 ms and within 1 s ({elapsed} ticks at {frequency} Hz)"
    );
    report!(
        timer.timer_value() < 0,
        "TVAL is negative once the timer has expired (got {})",
        timer.timer_value()
    );
    timer.set_control(0);
    gic::disable(intid);
    report!(gic::unhandled() == 0, "no IRQ arrived without a handler");
}
