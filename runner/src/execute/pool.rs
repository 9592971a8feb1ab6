//! The worker pool: runs up to `jobs` items at once, in order of the list, and keeps the
//! results in that order. Stops taking items once the runner is interrupted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::interrupt::interrupted;

/// Runs `work` on every item, `jobs` at a time; `finished` sees each result as it arrives
/// (never after an interruption). Returns the results in the items' order; items whose work
/// returned `None`, and those not run because of an interruption, have none.
pub fn run_all<Item: Sync, Output: Send>(
    items: &[Item],
    jobs: usize,
    work: impl Fn(&Item) -> Option<Output> + Sync,
    finished: impl Fn(&Output) + Sync,
) -> Vec<Output> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Output>>> = Mutex::new(items.iter().map(|_| None).collect());
    let worker = || {
        loop {
            let index = next.fetch_add(1, Ordering::SeqCst);
            let Some(item) = items.get(index) else {
                break;
            };
            if interrupted() {
                break;
            }
            let Some(output) = work(item) else { continue };
            if interrupted() {
                break;
            }
            finished(&output);
            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = Some(output);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..jobs.max(1).min(items.len().max(1)) {
            scope.spawn(worker);
        }
        worker();
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}
