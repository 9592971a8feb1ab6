//! The report stage: one typed event stream ([`Event`]) that every reporter consumes: the
//! console formats (plain, TAP, JSON lines, dry run), the per-run log's verdict, JUnit XML,
//! logs/SUMMARY and logs/results.json. The orchestrator fans each event out ([`Fanout`]).

pub mod differential;
pub mod dry_run;
pub mod json;
pub mod junit;
pub mod log;
pub mod plain;
pub mod results;
pub mod summary;
pub mod tap;

use std::sync::Mutex;

use crate::classify::{Outcome, TestResult, Totals, Verdict};
use crate::config::{Accel, Arch};
use crate::guest_line::ReportLine;

/// How many of the slowest runs the plain summary names.
pub const SLOWEST_SHOWN: usize = 3;

/// Something that happened during an invocation, in the order it happened.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Before the first run: `total` runs will be reported.
    Begin {
        /// How many.
        total: usize,
    },
    /// A line of the runner's own (such as `-v`'s command lines).
    Message {
        /// The line.
        text: &'a str,
    },
    /// A dry run's command line.
    DryRun {
        /// The QEMU command, shell-quoted.
        command: &'a str,
    },
    /// A run started.
    Started {
        /// The run's name.
        name: &'a str,
        /// Its guest's architecture.
        arch: Arch,
        /// Its accelerator.
        accel: Accel,
        /// Its QEMU command, shell-quoted.
        command: &'a str,
    },
    /// A running run's guest printed a report line.
    GuestLine {
        /// The run's name.
        name: &'a str,
        /// The line.
        line: &'a ReportLine,
    },
    /// A run finished (or was decided without running).
    Finished {
        /// Its result.
        result: &'a TestResult,
    },
    /// `--differential`: the comparison of the runs' two sides, after the last run and before
    /// the summary (not sent when interrupted).
    Differential {
        /// The comparison.
        comparison: &'a crate::differential::Comparison,
    },
    /// After the last run (or after an interruption: the runs that finished).
    Summary {
        /// Every reported result, in unittests.toml order.
        results: &'a [TestResult],
        /// Their counts.
        totals: Totals,
        /// The invocation was interrupted: the other runs did not finish.
        interrupted: bool,
    },
}

/// A consumer of the event stream.
pub trait Reporter: Send {
    /// Takes one event.
    fn event(&mut self, event: &Event<'_>);
}

/// Hands every event to each of its reporters in turn; shared between worker threads, one
/// event at a time.
pub struct Fanout {
    reporters: Mutex<Vec<Box<dyn Reporter>>>,
}

impl Fanout {
    /// A fan-out to `reporters`, in this order.
    pub fn new(reporters: Vec<Box<dyn Reporter>>) -> Fanout {
        Fanout {
            reporters: Mutex::new(reporters),
        }
    }

    /// Hands `event` to every reporter.
    pub fn send(&self, event: Event<'_>) {
        let mut reporters = self
            .reporters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for reporter in reporters.iter_mut() {
            reporter.event(&event);
        }
    }
}

/// The line printed for an interrupted invocation, whatever the format.
pub fn interrupted_line(totals: Totals) -> String {
    format!("{totals} (interrupted: the other runs did not finish)")
}

/// The report line, with the verdict coloured when asked.
pub fn display_line(name: &str, outcome: &Outcome, colour: bool) -> String {
    let line = outcome.report_line(name);
    if !colour {
        return line;
    }
    let code = match outcome.verdict() {
        Verdict::Pass => "32",
        Verdict::Fail => "31",
        Verdict::Skip => "33",
        Verdict::Interrupted => "35",
    };
    let verdict_length = outcome.verdict().to_string().len();
    format!(
        "\x1b[{code}m{}\x1b[0m{}",
        &line[..verdict_length],
        &line[verdict_length..]
    )
}

/// `slowest: msr 3.2s, cpuid 1.1s, tsc 0.9s`, from the runs that ran.
pub fn slowest_line(results: &[TestResult]) -> Option<String> {
    let mut ran: Vec<&TestResult> = results
        .iter()
        .filter(|result| !result.duration.is_zero())
        .collect();
    ran.sort_by_key(|result| std::cmp::Reverse(result.duration));
    let shown: Vec<String> = ran
        .iter()
        .take(SLOWEST_SHOWN)
        .map(|result| format!("{} {:.2}s", result.name, result.duration.as_secs_f64()))
        .collect();
    (!shown.is_empty()).then(|| format!("slowest: {}", shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn colour() {
        let outcome = Outcome::Fail { reason: "x".into() };
        assert_eq!(display_line("t", &outcome, false), "FAIL t (x)");
        assert_eq!(display_line("t", &outcome, true), "\x1b[31mFAIL\x1b[0m t (x)");
    }

    #[test]
    fn slowest() {
        let result = |name: &str, millis: u64| TestResult {
            duration: Duration::from_millis(millis),
            ..TestResult::not_run(name, Outcome::Pass { summary: None })
        };
        let results = [
            result("a", 100),
            result("b", 3000),
            result("c", 0),
            result("d", 200),
            result("e", 150),
        ];
        assert_eq!(
            slowest_line(&results).unwrap(),
            "slowest: b 3.00s, d 0.20s, e 0.15s"
        );
        assert_eq!(slowest_line(&results[2..3]), None);
    }
}
