//! spinlock: mutual exclusion across CPUs. Every CPU increments one counter many times, under
//! a `spin::Mutex` (exclusive load/store pairs) with a separate read and write of the value,
//! and through an atomic add: no increment may be lost.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use vmunit::arch::smp::{cpu_count, on_cpus};
use vmunit::{report, report_skip, report_summary};

vmunit::main!(main);

const ROUNDS: u64 = 20_000;

static LOCKED: spin::Mutex<u64> = spin::Mutex::new(0);
static ATOMIC: AtomicU64 = AtomicU64::new(0);

fn work() {
    for _ in 0..ROUNDS {
        let mut value = LOCKED.lock();
        // A separate read and write: another CPU inside the lock at the same time loses one.
        let seen = core::hint::black_box(*value);
        *value = seen + 1;
        drop(value);
        ATOMIC.fetch_add(1, Ordering::Relaxed);
    }
}

fn main(_arguments: &[&str]) -> i32 {
    let cpus = cpu_count() as u64;
    if cpus < 2 {
        report_skip!("mutual exclusion needs -smp 2 or more");
        return report_summary();
    }
    on_cpus(work);
    let locked = *LOCKED.lock();
    report!(
        locked == cpus * ROUNDS,
        "{cpus} CPUs x {ROUNDS} increments under a spin lock lose none (got {locked})"
    );
    let atomic = ATOMIC.load(Ordering::Acquire);
    report!(
        atomic == cpus * ROUNDS,
        "{cpus} CPUs x {ROUNDS} atomic adds lose none (got {atomic})"
    );
    report_summary()
}
