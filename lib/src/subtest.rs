//! Subtests: functions marked `#[vmunit::test]`, collected from the `vmunit_tests` link
//! section and run by `vmunit::subtests!()`, each under its own report prefix.
//!
//! Subtests run in the order they are declared. Arguments without `=` select subtests by name
//! or glob (`*`, `?`), as kvm-unit-tests' vmx tests do; `#[vmunit::test(ignore)]` ones run
//! only when named. A subtest that faults unexpectedly fails with the exception and the next
//! one runs; `should_fault` ones pass only if they fault (with the named vector, or on
//! aarch64 exception class).
//!
//! A suite may have an `init` function, whose result every subtest can borrow (`&State` or
//! `&mut State` as its first parameter), and an `exit` function that gets the state back
//! after the last subtest (KUnit's suite init and exit). `#[vmunit::test(cases = TABLE)]`
//! runs the function once per element of `TABLE`, each under a prefix of its own (the
//! element's `Display`), as KUnit's parameterized cases do. `#[vmunit::test(timeout_ms = N)]`
//! bounds a subtest's (or each case's) time: one that returns later than that FAILs. The
//! bound is measured on the architecture's clock when the subtest returns, as the runtime has
//! no interrupt to pre-empt it with: a subtest that never returns is ended by the runner's
//! timeout of the whole test.

use core::any::Any;
use core::fmt::Display;

use crate::arch::{Exception, Vector, catch_exception, timer};
use crate::{prefix, report, report_fail, report_pass, report_skip, report_summary};

/// Whether a subtest is expected to fault.
#[derive(Clone, Copy)]
pub enum Fault {
    /// It must return normally.
    None,
    /// It must raise some exception.
    Any,
    /// It must raise an exception of this vector (x86) or exception class (aarch64); the
    /// text names it for messages.
    Vector(Vector, &'static str),
}

/// The function that runs a subtest: `#[vmunit::test]` generates it around the marked
/// function. It gets the suite's state (see [`Harness::state`]) and the [`Harness`] that runs
/// the marked function once, or once per case.
pub type Body = fn(&mut dyn Any, &Harness<'_>);

/// One `#[vmunit::test]` function, as the attribute registers it.
pub struct Subtest {
    /// The function's name.
    pub name: &'static str,
    /// The source line it is declared on: subtests run in this order.
    pub line: usize,
    /// Runs the function (see [`Body`]).
    pub body: Body,
    /// `#[vmunit::test(ignore)]`: run only when named on the command line.
    pub ignore: bool,
    /// What the subtest must do.
    pub should_fault: Fault,
    /// `#[vmunit::test(timeout_ms = N)]`: the time it may take, in milliseconds.
    pub timeout_milliseconds: Option<u64>,
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

/// Runs a subtest's function under its expectations: the exception it must (not) raise, and
/// its time bound. [`Body`] functions get one.
pub struct Harness<'a> {
    subtest: &'a Subtest,
    /// The type the suite's init returns.
    state_type: &'static str,
}

impl Harness<'_> {
    /// The suite state `state` as the `State` the subtest takes, or `None` after a FAIL that
    /// names both types when the suite's init returned another type (or there is no init).
    pub fn state<'a, State: Any>(&self, state: &'a mut dyn Any) -> Option<&'a mut State> {
        let found = state.downcast_mut::<State>();
        if found.is_none() {
            report_fail!(
                "the suite's init returns the {} this subtest takes (got {})",
                core::any::type_name::<State>(),
                self.state_type
            );
        }
        found
    }

    /// Runs `function`, the whole subtest.
    pub fn run(&self, function: impl FnOnce()) {
        self.judge(function);
    }

    /// Runs `function` as the case `case` of a parameterized subtest, under its own prefix.
    pub fn run_case(&self, case: &dyn Display, function: impl FnOnce()) {
        let _prefix = crate::prefix!("{case}");
        self.judge(function);
    }

    fn judge(&self, function: impl FnOnce()) {
        let depth = crate::reporting::prefix_depth();
        let start = timer::count();
        let result = catch_exception(function);
        let elapsed = timer::count().wrapping_sub(start);
        // A fault abandons the subtest's frames, and with them any prefix guard it held.
        crate::reporting::truncate_prefixes(depth);
        judge_fault(self.subtest.should_fault, result);
        if let Some(bound) = self.subtest.timeout_milliseconds {
            let milliseconds = elapsed.saturating_mul(1000) / timer::frequency().max(1);
            if milliseconds > bound {
                report_fail!("finishes within {bound} ms (took {milliseconds} ms)");
            }
        }
    }
}

/// Reports how a subtest (or case) that must fault as `expected` ended.
fn judge_fault(expected: Fault, result: Result<(), Exception>) {
    match (expected, result) {
        (Fault::None, Ok(())) => {}
        (Fault::None, Err(exception)) => {
            report_fail!("returns without an exception (got {exception})");
        }
        (Fault::Any, Err(exception)) => {
            report_pass!("faults, as expected ({exception})");
        }
        (Fault::Vector(vector, name), Err(exception)) => {
            report!(
                vector_of(&exception) == vector,
                "faults with {name}, as expected (got {exception})"
            );
        }
        (Fault::Any | Fault::Vector(..), Ok(())) => {
            report_fail!("faults, as expected (it returned)");
        }
    }
}

/// The exception's kind: the x86 vector, the aarch64 exception class (the arch contract's
/// `Exception::kind`).
fn vector_of(exception: &Exception) -> Vector {
    exception.kind()
}

/// Runs the subtests that `args` select (all but the ignored ones when no argument names
/// any), between the optional suite `init` and `exit` hooks of the old form (no state);
/// returns `report_summary()`'s code.
pub fn run_all(args: &[&str], init: Option<fn()>, exit: Option<fn()>) -> i32 {
    run(
        args,
        || {
            if let Some(init) = init {
                init();
            }
        },
        || {
            if let Some(exit) = exit {
                exit();
            }
        },
    )
}

/// A suite's exit function: `fn(State)`, which gets the state back, or `fn()` for a suite
/// without state. `Form` tells the two apart ([`TakesState`] or [`TakesNothing`]), so that
/// both implementations can exist.
pub trait SuiteExit<State, Form> {
    /// Calls the function, with the state if it takes it.
    fn finish(self, state: State);
}

/// The [`SuiteExit`] form `fn(State)`.
pub struct TakesState;

/// The [`SuiteExit`] form `fn()`, for a suite whose init returns `()`.
pub struct TakesNothing;

impl<State, Function: FnOnce(State)> SuiteExit<State, TakesState> for Function {
    fn finish(self, state: State) {
        self(state);
    }
}

impl<Function: FnOnce()> SuiteExit<(), TakesNothing> for Function {
    fn finish(self, (): ()) {
        self();
    }
}

/// Runs the subtests that `args` select (all but the ignored ones when no argument names
/// any): first `init`, whose result every subtest may borrow, then the subtests, then `exit`
/// with the state (see [`SuiteExit`]); returns `report_summary()`'s code.
pub fn run<State: Any, Form>(
    args: &[&str],
    init: impl FnOnce() -> State,
    exit: impl SuiteExit<State, Form>,
) -> i32 {
    let patterns: alloc::vec::Vec<&str> = args.iter().copied().filter(|word| !word.contains('=')).collect();
    let mut subtests: alloc::vec::Vec<&Subtest> = all().iter().collect();
    // The linker orders the section by code unit, not by source: run them as declared. An
    // insertion sort: a test declares tens of subtests, and core's sorts add kilobytes of code
    // to every image.
    let key = |subtest: &Subtest| (subtest.line, subtest.name);
    for index in 1..subtests.len() {
        let mut position = index;
        while position > 0 && key(subtests[position - 1]) > key(subtests[position]) {
            subtests.swap(position - 1, position);
            position -= 1;
        }
    }
    for pattern in &patterns {
        if !subtests
            .iter()
            .any(|subtest| crate::args::glob_match(pattern, subtest.name))
        {
            report_fail!("argument {pattern:?} selects a subtest (none matches)");
        }
    }
    let mut state = init();
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
        let harness = Harness {
            subtest,
            state_type: core::any::type_name::<State>(),
        };
        (subtest.body)(&mut state, &harness);
    }
    exit.finish(state);
    report_summary()
}
