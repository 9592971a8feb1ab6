//! The report macros' runtime side: the global tally and prefix chain, printed on the console.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::report::{Counts, Kind, Label, Prefixes, ReportLine, Tally, exit_code_of};

static TALLY: Tally = Tally::new();
static PREFIXES: spin::Mutex<Prefixes> = spin::Mutex::new(Prefixes::new());

/// Set inside `known_failure(true, ..)`: failing reports count as known failures.
static KNOWN_FAILURE: AtomicBool = AtomicBool::new(false);

/// Prints one report line and counts it; returns whether it counts as good.
#[doc(hidden)]
pub fn report(kind: Kind, message: fmt::Arguments<'_>) -> bool {
    let kind = match kind {
        Kind::Fail if KNOWN_FAILURE.load(Ordering::Relaxed) => Kind::KnownFail,
        other => other,
    };
    {
        let prefixes = PREFIXES.lock();
        let text = format_args!("{}{message}", prefixes.as_str());
        crate::println!(
            "{}",
            ReportLine {
                label: kind.label(),
                text
            }
        );
    }
    let reports = TALLY.record(kind);
    // A safe point for the one migration of the runner's `--migrate` (the prefix lock is free).
    crate::migration::after_report(reports);
    kind.is_ok()
}

/// Prints an `INFO:` line under the current prefixes.
#[doc(hidden)]
pub fn info(message: fmt::Arguments<'_>) {
    let prefixes = PREFIXES.lock();
    let text = format_args!("{}{message}", prefixes.as_str());
    crate::println!(
        "{}",
        ReportLine {
            label: Label::Info,
            text
        }
    );
}

/// The current prefix chain, for messages printed outside the report macros.
pub(crate) fn with_prefixes<R>(function: impl FnOnce(&str) -> R) -> R {
    match PREFIXES.try_lock() {
        Some(prefixes) => function(prefixes.as_str()),
        None => function(""),
    }
}

/// The length of the prefix chain, to restore with [`truncate_prefixes`].
pub(crate) fn prefix_depth() -> usize {
    PREFIXES.lock().as_str().len()
}

/// Cuts the prefix chain back to `depth` (a length [`prefix_depth`] returned).
pub(crate) fn truncate_prefixes(depth: usize) {
    let mut prefixes = PREFIXES.lock();
    while prefixes.as_str().len() > depth {
        prefixes.pop();
    }
}

/// The counts so far.
pub(crate) fn counts() -> Counts {
    TALLY.counts()
}

/// Runs `checks` with a known hypervisor defect in force when `known` holds: their failing
/// reports print `KFAIL` (not counted as unexpected) instead of `FAIL`, and an `INFO:` line
/// gives `reason` first. Passing reports stay `PASS`, so a fixed hypervisor shows at once.
///
/// `known_failure(tcg, "QEMU's TCG executes INTO in 64-bit mode", || check_into())`
pub fn known_failure<R>(known: bool, reason: &str, checks: impl FnOnce() -> R) -> R {
    if !known {
        return checks();
    }
    info(format_args!("known failure here: {reason}"));
    let outer = KNOWN_FAILURE.swap(true, Ordering::Relaxed);
    let result = checks();
    KNOWN_FAILURE.store(outer, Ordering::Relaxed);
    result
}

/// Pops its prefix when dropped; returned by [`prefix`] and [`prefix!`](crate::prefix!).
#[must_use = "the prefix is popped when the guard is dropped"]
pub struct PrefixGuard(());

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        PREFIXES.lock().pop();
    }
}

/// Pushes a formatted report prefix until the guard drops (see [`prefix!`](crate::prefix!)).
#[doc(hidden)]
pub fn push_prefix(prefix: fmt::Arguments<'_>) -> PrefixGuard {
    PREFIXES.lock().push(prefix);
    PrefixGuard(())
}

/// Pushes `name` as a report prefix (`PASS: name: ...`) until the guard drops.
pub fn prefix(name: &str) -> PrefixGuard {
    push_prefix(format_args!("{name}"))
}

/// Prints `SUMMARY: ...` and returns the exit code for it: 0 when nothing failed
/// unexpectedly, 1 otherwise, and 38 (so that QEMU's status is 77) when all was skipped.
pub fn report_summary() -> i32 {
    let counts = TALLY.counts();
    crate::println!("{counts}");
    exit_code_of(&counts)
}

/// Reports `PASS` when the condition holds, `FAIL` otherwise; returns the condition.
///
/// `report!(value == 3, "value is 3 (got {value})")`
#[macro_export]
macro_rules! report {
    ($condition:expr, $($message:tt)+) => {
        $crate::__report_kind($crate::report::Kind::of($condition, false, false), format_args!($($message)+))
    };
}

/// Reports a `PASS` line.
#[macro_export]
macro_rules! report_pass {
    ($($message:tt)+) => { $crate::__report_kind($crate::report::Kind::Pass, format_args!($($message)+)) };
}

/// Reports a `FAIL` line.
#[macro_export]
macro_rules! report_fail {
    ($($message:tt)+) => { $crate::__report_kind($crate::report::Kind::Fail, format_args!($($message)+)) };
}

/// Reports a check that is expected to fail when `expected_to_fail` holds: `XFAIL` when it
/// fails then (not counted as unexpected), `XPASS` when it passes then (unexpected).
#[macro_export]
macro_rules! report_xfail {
    ($expected_to_fail:expr, $condition:expr, $($message:tt)+) => {
        $crate::__report_kind(
            $crate::report::Kind::of($condition, $expected_to_fail, false),
            format_args!($($message)+),
        )
    };
}

/// Reports a check with a known failure (a known hypervisor bug) when `known_failure`
/// holds: `KFAIL` when it fails then, not counted as unexpected; `PASS` when it passes.
#[macro_export]
macro_rules! report_kfail {
    ($known_failure:expr, $condition:expr, $($message:tt)+) => {
        $crate::__report_kind(
            $crate::report::Kind::of($condition, false, $known_failure),
            format_args!($($message)+),
        )
    };
}

/// Reports a `SKIP` line, with the reason as message.
#[macro_export]
macro_rules! report_skip {
    ($($message:tt)+) => { $crate::__report_kind($crate::report::Kind::Skip, format_args!($($message)+)) };
}

/// Prints an `INFO:` line; it does not count as a test.
#[macro_export]
macro_rules! report_info {
    ($($message:tt)+) => { $crate::__report_info(format_args!($($message)+)) };
}

/// Pushes a formatted report prefix until the returned guard drops:
/// `let _prefix = prefix!("MSR {:#x}", index);`
#[macro_export]
macro_rules! prefix {
    ($($name:tt)+) => { $crate::__push_prefix(format_args!($($name)+)) };
}

#[doc(hidden)]
pub use {info as __report_info, push_prefix as __push_prefix, report as __report_kind};
