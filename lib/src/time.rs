//! Bounded waiting on the architecture's clock (the TSC, or the Arm generic timer), so that a
//! test whose interrupt or event never comes FAILs in bounded time instead of hanging.

use crate::arch::{interrupts, timer};

/// The clock ticks in `milliseconds` (at least that long where the frequency is a bound).
pub fn ticks_in(milliseconds: u64) -> u64 {
    timer::frequency().saturating_mul(milliseconds) / 1000
}

/// Waits until `condition` holds or `milliseconds` pass, with interrupts enabled so that
/// handlers can run, and returns `condition()`. The interrupt state is restored afterwards.
pub fn wait_until(milliseconds: u64, condition: impl Fn() -> bool) -> bool {
    let ticks = ticks_in(milliseconds);
    let were_enabled = interrupts::are_enabled();
    let start = timer::count();
    interrupts::enable();
    while !condition() && timer::count().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
    if !were_enabled {
        interrupts::disable();
    }
    condition()
}

/// Waits until `condition` holds or `milliseconds` pass, with the interrupt state unchanged
/// (to wait for an NMI, or for another CPU), and returns `condition()`.
pub fn spin_until(milliseconds: u64, condition: impl Fn() -> bool) -> bool {
    let ticks = ticks_in(milliseconds);
    let start = timer::count();
    while !condition() && timer::count().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
    condition()
}

/// Busy-waits for `milliseconds`, with the interrupt state unchanged.
pub fn delay(milliseconds: u64) {
    spin_until(milliseconds, || false);
}
