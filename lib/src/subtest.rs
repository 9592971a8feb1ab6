//! Subtests: functions marked `#[vmunit::test]`, collected from the `vmunit_tests` link
//! section and run by `vmunit::subtests!()`, each under its own report prefix.
//!
//! Subtests run in the order they are declared. Arguments without `=` select subtests by name or glob (`*`, `?`), as kvm-unit-tests' vmx
//! tests do; `#[vmunit::test(ignore)]` ones run only when named. A subtest that faults
//! unexpectedly fails with the exception and the next one runs; `should_fault` ones pass only
//! if they fault (with the named vector).

use crate::arch::{Exception, catch_exception};
use crate::{prefix, report, report_fail, report_pass, report_skip, report_summary};

/// Whether a subtest is expected to fault.
#[derive(Clone, Copy)]
pub enum Fault {
    /// It must return normally.
    None,
    /// It must raise some exception.
    Any,
    /// It must raise an exception the predicate accepts; the text names it for messages.
    Matching(fn(&Exception) -> bool, &'static str),
}

/// One `#[vmunit::test]` function, as the attribute registers it.
pub struct Subtest {
    /// The function's name.
    pub name: &'static str,
    /// The source line it is declared on: subtests run in this order.
    pub line: usize,
    /// The function.
    pub function: fn(),
    /// `#[vmunit::test(ignore)]`: run only when named on the command line.
    pub ignore: bool,
    /// What the subtest must do.
    pub should_fault: Fault,
}

unsafe extern "C" {
    /// Bounds of the `vmunit_tests` section, defined by the linker script.
    static __start_vmunit_tests: u8;
    static __stop_vmunit_tests: u8;
}

/// Every registered subtest, in link order.
pub fn all() -> &'static [Subtest] {
    let start = (&raw const __start_vmunit_tests).cast::<Subtest>();
    let stop = (&raw const __stop_vmunit_tests).cast::<Subtest>();
    let count = (stop as usize - start as usize) / size_of::<Subtest>();
    // SAFETY: the section holds only `Subtest` statics placed by `#[vmunit::test]`, each
    // `size_of::<Subtest>()` long and aligned (its size is a multiple of its alignment), so
    // the range is an array of `count` of them that lives as long as the program.
    unsafe { core::slice::from_raw_parts(start, count) }
}

/// Runs the subtests that `args` select (all but the ignored ones when no argument names
/// any), between the optional suite `init` and `exit`; returns `report_summary()`'s code.
pub fn run_all(args: &[&str], init: Option<fn()>, exit: Option<fn()>) -> i32 {
    let patterns: alloc::vec::Vec<&str> = args.iter().copied().filter(|word| !word.contains('=')).collect();
    let mut subtests: alloc::vec::Vec<&Subtest> = all().iter().collect();
    // The linker orders the section by code unit, not by source: run them as declared.
    subtests.sort_by_key(|subtest| (subtest.line, subtest.name));
    for pattern in &patterns {
        if !subtests
            .iter()
            .any(|subtest| crate::args::glob_match(pattern, subtest.name))
        {
            report_fail!("argument {pattern:?} selects a subtest (none matches)");
        }
    }
    if let Some(init) = init {
        init();
    }
    for subtest in subtests {
        let named = patterns
            .iter()
            .any(|pattern| crate::args::glob_match(pattern, subtest.name));
        if !patterns.is_empty() && !named {
            continue;
        }
        let _prefix = prefix(subtest.name);
        if subtest.ignore && !named {
            report_skip!("ignored: name it on the command line to run it");
            continue;
        }
        let depth = crate::reporting::prefix_depth();
        let result = catch_exception(subtest.function);
        // A fault abandons the subtest's frames, and with them any prefix guard it held.
        crate::reporting::truncate_prefixes(depth);
        match (subtest.should_fault, result) {
            (Fault::None, Ok(())) => {}
            (Fault::None, Err(exception)) => {
                report_fail!("returns without an exception (got {exception})");
            }
            (Fault::Any, Err(exception)) => {
                report_pass!("faults, as expected ({exception})");
            }
            (Fault::Matching(accepts, name), Err(exception)) => {
                report!(
                    accepts(&exception),
                    "faults with {name}, as expected (got {exception})"
                );
            }
            (Fault::Any | Fault::Matching(..), Ok(())) => {
                report_fail!("faults, as expected (it returned)");
            }
        }
    }
    if let Some(exit) = exit {
        exit();
    }
    report_summary()
}
