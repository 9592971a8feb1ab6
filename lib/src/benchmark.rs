//! Microbenchmark reporting: `BENCH: name=value unit` lines that the runner collects.
//!
//! A benchmark reports each measurement twice: a human line, `INFO: <prefixes><name>: <value>
//! <unit>` (kvm-unit-tests' vmexit prints `cpuid 1234`), and a machine line that the runner
//! parses out of the serial output and puts in its JSON, JUnit and results.json outputs:
//!
//! ```text
//! BENCH: cpuid=1234 cycles
//! ```
//!
//! The line's grammar is the wire protocol's (`vmunit_protocol::BenchLine`, which the runner
//! parses it with); [`report`] makes any name and unit valid for it (another character of the
//! name becomes `_`, an empty name `unnamed`, an empty unit `count`). Report prefixes are not
//! part of the name.
//!
//! `BENCH` lines are not report lines: they count as neither PASS nor FAIL. A benchmark that
//! also checks that the measured operation really happened does so with ordinary `report!`
//! lines.
//!
//! [`measure`] runs an operation in batches that double in size until a batch lasts long
//! enough, as kvm-unit-tests' vmexit does, and returns the last batch's size and duration in
//! ticks of the architecture's clock (the TSC on x86_64, the generic timer on aarch64).

pub use vmunit_protocol::{DEFAULT_UNIT, Measurement, UNNAMED, is_name_character, is_unit_character};

/// The label that starts a machine line.
pub const LABEL: &str = vmunit_protocol::BenchLine::<&str>::LABEL;

/// One batch of a benchmark: how many iterations ran and how many clock ticks they took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Iterations in the batch.
    pub iterations: u64,
    /// Clock ticks the batch took.
    pub ticks: u64,
}

impl Sample {
    /// Ticks per iteration, rounded to the nearest (0 for an empty batch).
    pub fn per_iteration(&self) -> u64 {
        per_iteration(self.ticks, self.iterations)
    }
}

/// `total / iterations`, rounded to the nearest; 0 when `iterations` is 0.
pub fn per_iteration(total: u64, iterations: u64) -> u64 {
    if iterations == 0 {
        return 0;
    }
    let quotient = total / iterations;
    let remainder = total % iterations;
    if remainder >= iterations - remainder {
        quotient + 1
    } else {
        quotient
    }
}

/// The batch sizes [`measure`] tries: `first`, doubled each time, up to `maximum`.
pub fn batch_sizes(first: u64, maximum: u64) -> impl Iterator<Item = u64> {
    let first = first.max(1);
    core::iter::successors(Some(first), move |&size| {
        size.checked_mul(2).filter(|&next| next <= maximum)
    })
}

/// Runs `batch(iterations)` (which should run the operation `iterations` times) in batches
/// of `first`, `2 * first`, ... iterations until one lasts at least `budget_ticks` or has
/// `maximum` iterations, timing each with `clock`; returns the last batch. The caller checks
/// after it that the operation happened as often as the sample says (counters reset at the
/// start of each batch).
pub fn measure_with(
    clock: impl Fn() -> u64,
    budget_ticks: u64,
    first: u64,
    maximum: u64,
    mut batch: impl FnMut(u64),
) -> Sample {
    let mut sample = Sample {
        iterations: 0,
        ticks: 0,
    };
    for iterations in batch_sizes(first, maximum) {
        let start = clock();
        batch(iterations);
        let ticks = clock().wrapping_sub(start);
        sample = Sample { iterations, ticks };
        if ticks >= budget_ticks {
            break;
        }
    }
    sample
}

/// [`measure_with`] on the architecture's clock, with a budget of `milliseconds` per batch.
#[cfg(target_os = "none")]
pub fn measure(milliseconds: u64, first: u64, maximum: u64, batch: impl FnMut(u64)) -> Sample {
    measure_with(
        crate::arch::timer::count,
        crate::time::ticks_in(milliseconds),
        first,
        maximum,
        batch,
    )
}

/// Reports one measurement: the human `INFO:` line (under the current report prefixes) and
/// the machine `BENCH: name=value unit` line. It is not a test: it counts as nothing.
#[cfg(target_os = "none")]
pub fn report(name: &str, value: u64, unit: &str) {
    crate::reporting::info(format_args!("{name}: {value} {unit}"));
    crate::println!("{}", Measurement { name, value, unit });
}

/// Reports a sample's ticks per iteration (see [`report`]), with its batch size on the human
/// line; returns the value reported.
#[cfg(target_os = "none")]
pub fn report_sample(name: &str, sample: Sample, unit: &str) -> u64 {
    let value = sample.per_iteration();
    crate::reporting::info(format_args!(
        "{name}: {value} {unit} per iteration ({} iterations in {} {unit})",
        sample.iterations, sample.ticks
    ));
    crate::println!("{}", Measurement { name, value, unit });
    value
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;
    use std::vec::Vec;

    use super::*;

    fn line(name: &str, value: u64, unit: &str) -> std::string::String {
        format!("{}", Measurement { name, value, unit })
    }

    #[test]
    fn machine_line() {
        assert_eq!(line("cpuid", 1234, "cycles"), "BENCH: cpuid=1234 cycles");
        assert_eq!(line("ipi/halt", 0, "ns"), "BENCH: ipi/halt=0 ns");
        assert_eq!(
            line("a b=c\u{e9}", u64::MAX, "per op"),
            "BENCH: a_b_c_=18446744073709551615 per_op"
        );
        assert_eq!(line("", 7, ""), "BENCH: unnamed=7 count");
    }

    #[test]
    fn rounding() {
        assert_eq!(per_iteration(10, 4), 3);
        assert_eq!(per_iteration(9, 4), 2);
        assert_eq!(per_iteration(u64::MAX, 1), u64::MAX);
        assert_eq!(per_iteration(u64::MAX, u64::MAX), 1);
        assert_eq!(per_iteration(5, 0), 0);
        assert_eq!(
            Sample {
                iterations: 3,
                ticks: 100
            }
            .per_iteration(),
            33
        );
    }

    #[test]
    fn batches_double_up_to_the_maximum() {
        assert_eq!(batch_sizes(64, 512).collect::<Vec<_>>(), [64, 128, 256, 512]);
        assert_eq!(batch_sizes(64, 600).collect::<Vec<_>>(), [64, 128, 256, 512]);
        assert_eq!(batch_sizes(0, 3).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(batch_sizes(u64::MAX, u64::MAX).count(), 1);
    }

    #[test]
    fn measure_stops_at_the_budget() {
        // A clock that advances 10 ticks per iteration run.
        let now = core::cell::Cell::new(0u64);
        let mut batches = Vec::new();
        let sample = measure_with(
            || now.get(),
            300,
            8,
            1 << 20,
            |iterations| {
                batches.push(iterations);
                now.set(now.get() + 10 * iterations);
            },
        );
        assert_eq!(batches, [8, 16, 32]);
        assert_eq!(
            sample,
            Sample {
                iterations: 32,
                ticks: 320
            }
        );
        // The maximum ends it when the budget is never reached.
        let sample = measure_with(|| now.get(), u64::MAX, 8, 20, |_| {});
        assert_eq!(
            sample,
            Sample {
                iterations: 16,
                ticks: 0
            }
        );
    }
}
