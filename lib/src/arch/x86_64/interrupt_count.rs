//! Interrupt counters: a handler that only counts, per vector, for tests that need to know
//! how many interrupts arrived (IPIs, timer ticks) and nothing else about them.

use core::sync::atomic::{AtomicU32, Ordering};

use super::exceptions::set_interrupt_handler;

/// How many interrupts each vector's counting handler has seen.
static COUNTS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

fn counting_handler(vector: u8) {
    COUNTS[usize::from(vector)].fetch_add(1, Ordering::SeqCst);
}

/// Installs a handler that counts the interrupts of `vector` (on any CPU), and sets its count
/// to 0. The runtime signals the end of interrupt, as for any handler.
///
/// # Panics
/// For an exception vector (below 32) other than the NMI's, as `set_interrupt_handler`.
pub fn count_interrupts(vector: u8) {
    reset_interrupt_count(vector);
    set_interrupt_handler(vector, Some(counting_handler));
}

/// How many interrupts of `vector` the counting handler has seen since it was installed or
/// reset.
pub fn interrupt_count(vector: u8) -> u32 {
    COUNTS[usize::from(vector)].load(Ordering::SeqCst)
}

/// Sets the count of `vector` back to 0.
pub fn reset_interrupt_count(vector: u8) {
    COUNTS[usize::from(vector)].store(0, Ordering::SeqCst);
}
