//! The worker pool: runs up to `jobs` items at once, in order of the list, and keeps the
//! results in that order. Stops taking items once the runner is interrupted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::interrupt::interrupted;

/// What became of one item.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<Output> {
    /// Its work returned this.
    Done(Output),
    /// Its work returned nothing to report.
    Nothing,
    /// It was not started: the runner was interrupted first.
    NotStarted,
}

/// Runs `work` on every item, `jobs` at a time; `finished` sees each result as it arrives
/// (also the results of work that was under way when the runner was interrupted). Returns what
/// became of each item, in the items' order; no item is started after an interruption.
pub fn run_all<Item: Sync, Output: Send>(
    items: &[Item],
    jobs: usize,
    work: impl Fn(&Item) -> Option<Output> + Sync,
    finished: impl Fn(&Output) + Sync,
) -> Vec<Slot<Output>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Slot<Output>>> = Mutex::new(items.iter().map(|_| Slot::NotStarted).collect());
    let worker = || {
        loop {
            let index = next.fetch_add(1, Ordering::SeqCst);
            let Some(item) = items.get(index) else {
                break;
            };
            if interrupted() {
                break;
            }
            let slot = match work(item) {
                Some(output) => {
                    finished(&output);
                    Slot::Done(output)
                }
                None => Slot::Nothing,
            };
            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = slot;
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
}
