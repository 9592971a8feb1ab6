//! timer: the Arm generic timer's EL1 virtual and physical timers, kvm-unit-tests' arm/timer.c
//! and more: the counter; per timer a busy-wait on CVAL (ISTATUS neither early nor late, the
//! interrupt delivered within the bound), the GIC's view of the timer's output line (low
//! before CVAL, high after, low again for ENABLE = 0 with no interrupt taken, low with IMASK),
//! the TVAL countdown, and wake-up from WFI. `test_args` "vtimer" or "ptimer" picks one timer
//! (kvm-unit-tests' arguments); without, both run.
#![no_std]
#![no_main]

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use vmunit::arch::El2Boot;
use vmunit::arch::device_tree::platform;
use vmunit::arch::gic;
use vmunit::arch::instructions::current_el;
use vmunit::arch::instructions::wait_for_interrupt_enabled;
use vmunit::arch::timer::{self, CTL_ENABLE, CTL_IMASK, CTL_ISTATUS, Timer};
use vmunit::time::{spin_until, wait_until};
use vmunit::{prefix, report, report_info, report_skip, report_summary};

vmunit::main!(main, el2);

/// The bounds on how late the timer may be, in milliseconds. Under KVM both are
/// kvm-unit-tests' 10 ms (arm/timer.c test_cval_10msec: the counter read once ISTATUS is seen
/// set, less CVAL, must be below 10 ms), as the timer is the host's hardware timer.
///
/// Under TCG QEMU raises the timer's output from a host timer callback on its main-loop
/// thread (target/arm/helper.c gt_recalc_timer, via arm_gt_vtimer_cb/arm_gt_ptimer_cb), which
/// competes for host CPUs with the vCPU threads, and the host may not run this vCPU's thread
/// at all for a while. Measured on this 2-CPU host (QEMU 10.0.2, 2026-12-06), `timer` and
/// `timer-gicv2` 10 times each (both timers: 40 samples per row), alone and while 1, 2 and 3
/// other QEMUs (a `spinlock` run on 2 vCPUs, in a loop) loaded the CPUs; the maximum, in ms:
///
/// | other QEMUs (load average) | ISTATUS seen (kvm-unit-tests' measure) | still clear while polling | handler not yet run while polling | WFI woken |
/// | --- | --- | --- | --- | --- |
/// | 0 (3) | 4.8 | 0.04 | 0.04 | 20.8 |
/// | 1 (3.5) | 28.1 | 11.2 | 11.2 | 5.7 |
/// | 2 (7) | 83.3 | 42.5 | 42.5 | 21.2 |
/// | 3 (9) | 89.2 | 23.5 | 23.5 | 68.8 |
///
/// Earlier measurements (see [`check_cval`]) saw ISTATUS first seen 145 ms after CVAL (still
/// clear at most 37 ms after it) with two other QEMUs, and a WFI woken 178 ms late with three
/// at a load average of 19. So
/// kvm-unit-tests' 10 ms would fail half the runs of a loaded host under TCG (22 of 40 at 2
/// other QEMUs): the TCG bounds are [`POLLED_LATENCY_TCG_MS`] and [`SCHEDULED_LATENCY_TCG_MS`].
///
/// The bound on what the guest saw late while it ran and polled (ISTATUS still clear, the
/// handler not yet run): a timer that fires late while the vCPU runs fails.
fn polled_latency_ms() -> u64 {
    if vmunit::env("ACCEL") == Some("kvm") {
        10
    } else {
        POLLED_LATENCY_TCG_MS
    }
}

/// Under TCG: 75 ms, 1.8 times the worst measured (42.5 ms; the old bound was 100 ms).
const POLLED_LATENCY_TCG_MS: u64 = 75;

/// The bound on a latency that also counts time in which the host did not run this vCPU:
/// kvm-unit-tests' own measure (the counter read after ISTATUS was seen) and the wake-up from
/// WFI (the guest sees nothing while it waits).
fn scheduled_latency_ms() -> u64 {
    if vmunit::env("ACCEL") == Some("kvm") {
        10
    } else {
        SCHEDULED_LATENCY_TCG_MS
    }
}

/// Under TCG: 250 ms, above the worst measured (178 ms at a load average of 19; the old WFI
/// bound was 500 ms) and well under the 1 s the waits give up after.
const SCHEDULED_LATENCY_TCG_MS: u64 = 250;

/// How far ahead the busy-wait and WFI timers are set (kvm-unit-tests: 10 ms).
const AHEAD_MS: u64 = 10;
/// How long a GIC state must hold to count as settled (kvm-unit-tests samples twice, 100 ms
/// apart, within 1 s).
const SETTLE_MS: u64 = 10;
/// How long the wait for a state or an interrupt lasts before it counts as missing.
const GIVE_UP_MS: u64 = 1000;

fn main(arguments: &[&str]) -> i32 {
    let frequency = timer::frequency();
    report!(frequency != 0, "CNTFRQ_EL0 is nonzero (got {frequency})");
    let first = timer::virtual_count();
    let increased = spin_until(GIVE_UP_MS, || timer::virtual_count() > first);
    report!(increased, "CNTVCT_EL0 increases (from {first})");
    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return report_summary();
    }
    if arguments.contains(&"el2") {
        match El2Boot::get().reason_not_at_el2() {
            None => {
                let (physical, virtual_intid) = platform().hypervisor_timer_interrupts();
                report!(
                    current_el() == 2 && physical.is_some() && virtual_intid.is_some(),
                    "at EL2, the DTB lists the EL2 physical and virtual timer PPIs (got {physical:?}, \
                     {virtual_intid:?})"
                );
                let el1 = platform().timer_interrupts();
                report!(
                    el1.is_none_or(|(el1_physical, el1_virtual)| {
                        ![el1_physical, el1_virtual].contains(&Timer::Physical.intid())
                            && ![el1_physical, el1_virtual].contains(&Timer::Virtual.intid())
                    }),
                    "the EL2 timers' PPIs ({}, {}) are not the EL1 timers' ({el1:?})",
                    Timer::Physical.intid(),
                    Timer::Virtual.intid()
                );
            }
            Some(reason) => {
                report_skip!("EL2 timers: the test runs at EL1: {reason}");
            }
        }
    }
    for timer in [Timer::Virtual, Timer::Physical] {
        report_info!(
            "{}: {}_* at EL{}, PPI INTID {}",
            timer.name(),
            timer.registers(),
            current_el(),
            timer.intid()
        );
    }
    let timers: [&str; 2] = [Timer::Virtual.name(), Timer::Physical.name()];
    let picked = arguments.iter().any(|word| timers.contains(word));
    let chosen = |name: &str| !picked || arguments.contains(&name);
    for timer in [Timer::Virtual, Timer::Physical] {
        if chosen(timer.name()) {
            check_timer(timer, frequency);
        }
    }
    report!(gic::unhandled() == 0, "no IRQ arrived without a handler");
    report_summary()
}

/// The timer count at which the last timer interrupt reached its handler.
static ARRIVED_AT: AtomicU64 = AtomicU64::new(0);

/// Notes the arrival time and masks the timer whose PPI fired, so that its level-triggered
/// interrupt goes away (kvm-unit-tests' irq_handler).
fn handler(intid: u32) {
    for timer in [Timer::Virtual, Timer::Physical] {
        if timer.intid() == intid {
            ARRIVED_AT.store(timer.count(), Ordering::Release);
            timer.set_control(CTL_ENABLE | CTL_IMASK);
        }
    }
}

/// What the GIC says of the timer's PPI on this CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LineState {
    Inactive,
    Pending,
    Active,
    PendingAndActive,
}

fn line_state(intid: u32) -> LineState {
    match (gic::is_pending(intid), gic::is_active(intid)) {
        (false, false) => LineState::Inactive,
        (true, false) => LineState::Pending,
        (false, true) => LineState::Active,
        (true, true) => LineState::PendingAndActive,
    }
}

/// Whether the PPI reaches `expected` within a second and still holds it [`SETTLE_MS`] later
/// (kvm-unit-tests' gic_timer_check_state); returns the last state seen.
fn settles_at(intid: u32, expected: LineState) -> (bool, LineState) {
    let reached = spin_until(GIVE_UP_MS, || line_state(intid) == expected);
    if !reached {
        return (false, line_state(intid));
    }
    let changed = spin_until(SETTLE_MS, || line_state(intid) != expected);
    (!changed, line_state(intid))
}

/// kvm-unit-tests' timer_pending: the timer is enabled and its condition is met.
fn condition_met(timer: Timer) -> bool {
    let control = timer.control();
    control & CTL_ENABLE != 0 && control & CTL_ISTATUS != 0
}

fn check_timer(timer: Timer, frequency: u64) {
    let _prefix = prefix(timer.name());
    let intid = timer.intid();
    vmunit::arch::set_interrupt_handler(intid, Some(handler));
    gic::enable(intid);
    let ticks_per_ms = frequency / 1000;
    check_cval(timer, intid, ticks_per_ms);
    check_output_line(timer, intid);
    check_tval(timer, intid, ticks_per_ms);
    timer.set_control(0);
    gic::disable(intid);
    vmunit::arch::set_interrupt_handler(intid, None);
}

/// Iterations of the pause between two polls of the timer's registers (some 10 us under TCG,
/// nothing next to the latency bound).
const POLL_PAUSE: u32 = 10_000;

/// A pause between two polls that reads no system register. Under TCG QEMU reads the timer's
/// registers (ARM_CP_IO) holding its big lock (target/arm/tcg/op_helper.c
/// `HELPER(get_cp_reg64)`), and its main loop needs that lock to run the timer's callback
/// (`arm_gt_vtimer_cb`/`arm_gt_ptimer_cb` raising ISTATUS and the PPI): a vCPU polling back
/// to back starves it on a loaded host.
fn pause() {
    for _ in 0..POLL_PAUSE {
        core::hint::spin_loop();
    }
}

/// kvm-unit-tests' test_timer_cval: CVAL 10 ms ahead, busy-wait for ISTATUS with IRQs on.
///
/// kvm-unit-tests' latency check takes the counter value after the first poll that found
/// ISTATUS set: that also counts time in which the host did not run this vCPU's thread at all
/// and nothing could be seen, so it has [`scheduled_latency_ms`]. The polled checks bound what
/// the guest saw late: the last counter value read just before a poll still found ISTATUS
/// clear (or the handler not yet run), with [`polled_latency_ms`]. Measured under TCG on this 2-CPU host with two
/// other QEMU loops running, 20 runs each: polling back to back and taking the count after
/// ISTATUS was seen, 3 runs FAILed (ISTATUS still clear while polling 127-183 ms after CVAL);
/// with the pause and this measure none did (still clear at most 37 ms after CVAL, while the
/// first count after it was seen reached 145 ms). A timer that is late while the vCPU runs
/// and polls still fails.
fn check_cval(timer: Timer, intid: u32, ticks_per_ms: u64) {
    timer.set_control(0);
    let before = gic::delivered(0, intid);
    let deadline = timer.count() + AHEAD_MS * ticks_per_ms;
    // The counter read before the last poll that found ISTATUS clear, and the one before the
    // last poll that found the handler not yet run.
    let last_clear = Cell::new(0);
    let last_undelivered = Cell::new(0);
    let poll = |now: u64| {
        if gic::delivered(0, intid) == before {
            last_undelivered.set(now);
        }
    };
    timer.set_compare_value(deadline);
    timer.set_control(CTL_ENABLE);
    let fired = wait_until(GIVE_UP_MS + AHEAD_MS, || {
        let now = timer.count();
        poll(now);
        let met = condition_met(timer);
        if !met {
            last_clear.set(now);
            pause();
        }
        met
    });
    let seen = timer.count();
    let late = seen as i64 - deadline as i64;
    let clear_late = last_clear.get() as i64 - deadline as i64;
    report_info!(
        "ISTATUS seen {} us after CVAL, last seen clear {} us after it",
        late * 1000 / ticks_per_ms as i64,
        clear_late * 1000 / ticks_per_ms as i64
    );
    report!(
        fired && late >= 0,
        "ISTATUS is not set before CVAL (seen {late} ticks after it)"
    );
    report!(
        fired && late < (scheduled_latency_ms() * ticks_per_ms) as i64,
        "latency within {} ms: ISTATUS seen set {late} ticks after CVAL",
        scheduled_latency_ms()
    );
    report!(
        fired && clear_late < (polled_latency_ms() * ticks_per_ms) as i64,
        "ISTATUS set within {} ms of CVAL while this CPU polled (still clear {clear_late} ticks after CVAL)",
        polled_latency_ms()
    );
    let delivered = wait_until(GIVE_UP_MS, || {
        poll(timer.count());
        let delivered = gic::delivered(0, intid) > before;
        if !delivered {
            pause();
        }
        delivered
    });
    let arrived = ARRIVED_AT.load(Ordering::Acquire);
    let delay = arrived as i64 - deadline as i64;
    let undelivered_late = last_undelivered.get() as i64 - deadline as i64;
    report!(
        delivered && gic::delivered(0, intid) == before + 1,
        "interrupt received once (delivered {} times)",
        gic::delivered(0, intid) - before
    );
    report!(
        delivered && delay >= 0 && undelivered_late < (polled_latency_ms() * ticks_per_ms) as i64,
        "the interrupt reached its handler within {} ms of CVAL, not before (not yet {undelivered_late} ticks after CVAL, \
         handler at {delay})",
        polled_latency_ms()
    );
    // The handler set IMASK: the condition still holds (ISTATUS) but the output line is low.
    let (settled, state) = settles_at(intid, LineState::Inactive);
    report!(
        timer.control() & (CTL_ISTATUS | CTL_IMASK) == CTL_ISTATUS | CTL_IMASK && settled,
        "after IMASK, ISTATUS stays set and the PPI is neither pending nor active (CTL {:#x}, {state:?})",
        timer.control()
    );
    timer.set_control(0);
}

/// kvm-unit-tests' test_timer_pending: the GIC's view of the timer's output line, with the
/// PPI disabled at the GIC so that no handler changes the timer.
fn check_output_line(timer: Timer, intid: u32) {
    let now = timer.count();
    gic::disable(intid);
    timer.set_compare_value(now + 10 * timer::frequency());
    timer.set_control(CTL_ENABLE);
    let (settled, state) = settles_at(intid, LineState::Inactive);
    report!(
        !condition_met(timer) && settled,
        "not pending before: CVAL 10 s ahead, ISTATUS clear and the PPI inactive (CTL {:#x}, {state:?})",
        timer.control()
    );
    timer.set_compare_value(now.wrapping_sub(1));
    let (settled, state) = settles_at(intid, LineState::Pending);
    report!(
        condition_met(timer) && settled,
        "interrupt signal pending: CVAL passed, ISTATUS set and the PPI pending (CTL {:#x}, {state:?})",
        timer.control()
    );
    let before = gic::delivered(0, intid);
    timer.set_control(0);
    gic::enable(intid);
    // IRQs unmasked for a while: a PPI still pending would be taken now.
    wait_until(SETTLE_MS, || false);
    report!(
        gic::delivered(0, intid) == before,
        "no interrupt when timer is disabled (delivered {} times)",
        gic::delivered(0, intid) - before
    );
    let (settled, state) = settles_at(intid, LineState::Inactive);
    report!(
        !condition_met(timer) && settled,
        "interrupt signal no longer pending: ENABLE = 0 lowers the line (CTL {:#x}, {state:?})",
        timer.control()
    );
    timer.set_compare_value(now.wrapping_sub(1));
    timer.set_control(CTL_ENABLE | CTL_IMASK);
    let (settled, state) = settles_at(intid, LineState::Inactive);
    report!(
        condition_met(timer) && settled,
        "interrupt signal not pending: with IMASK, ISTATUS set and the PPI inactive (CTL {:#x}, {state:?})",
        timer.control()
    );
    timer.set_control(0);
}

/// kvm-unit-tests' test_timer_tval: TVAL 10 ms ahead, then WFI until the interrupt.
fn check_tval(timer: Timer, intid: u32, ticks_per_ms: u64) {
    let ticks = (AHEAD_MS * ticks_per_ms) as i32;
    timer.set_timer_value(ticks);
    let first = timer.timer_value();
    let counted_down = spin_until(GIVE_UP_MS, || timer.timer_value() < first);
    report!(
        first <= ticks && first > 0 && counted_down,
        "TVAL counts down from {ticks} (read {first} then {})",
        timer.timer_value()
    );

    let before = gic::delivered(0, intid);
    timer.set_timer_value(ticks);
    let deadline = timer.compare_value();
    timer.set_control(CTL_ENABLE);
    let start = timer.count();
    let mut waits = 0;
    while gic::delivered(0, intid) == before && timer.count() - start < GIVE_UP_MS * ticks_per_ms {
        wait_for_interrupt_enabled();
        waits += 1;
    }
    report!(
        gic::delivered(0, intid) == before + 1,
        "interrupt received after TVAL/WFI (after {waits} waits)"
    );
    let left = timer.timer_value();
    report!(left <= 0, "timer has expired: TVAL is {left}");
    let delay = ARRIVED_AT.load(Ordering::Acquire) as i64 - deadline as i64;
    report!(
        delay >= 0 && delay < (scheduled_latency_ms() * ticks_per_ms) as i64,
        "WFI woke for the interrupt within {} ms of the deadline, not before ({delay} ticks)",
        scheduled_latency_ms()
    );
    timer.set_control(0);
}
