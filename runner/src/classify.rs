//! The classify stage: outcomes of test runs and `classify`, the pure function that decides one
//! from QEMU's exit and the lines the guest and QEMU printed; the [`TestResult`] of a run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize as _;

use crate::bench::Bench;
use crate::config::format_duration;
use crate::error::ExitStatus;
use crate::execute::migration::MigrationFailure;
use crate::execute::run::Executed;
use crate::guest_line::ReportLine;
use crate::qemu::ExitMethod;
use crate::transcript::{ProcessExit, Transcript};
use crate::{subtests, symbolise};

/// Result codes a guest reports (in its EXIT line and, on x86, through isa-debug-exit).
pub use vmunit_protocol::GuestCode;

/// The result of one test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest passed.
    Pass {
        /// Its SUMMARY line, if it printed one.
        summary: Option<String>,
    },
    /// The guest reported failures (or printed FAIL lines).
    Fail {
        /// Why.
        reason: String,
    },
    /// Not run, or the guest skipped everything.
    Skip {
        /// Why.
        reason: String,
    },
    /// The run did not finish in time.
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// The guest aborted, triple-faulted, or QEMU died on a signal.
    Crash {
        /// Why.
        reason: String,
    },
    /// The hypervisor could not run the guest (QEMU paused it).
    HypervisorError {
        /// QEMU's error line.
        reason: String,
    },
    /// QEMU failed: it did not start, or its exit does not match the guest's EXIT line.
    QemuError {
        /// Why.
        reason: String,
    },
    /// The runner was interrupted (Ctrl-C, SIGTERM): the run was stopped, or never started.
    Interrupted {
        /// Which of the two.
        reason: String,
    },
}

/// The verdict an outcome counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Passed.
    Pass,
    /// Failed in any way.
    Fail,
    /// Skipped.
    Skip,
    /// Stopped or not started because the runner was interrupted: neither passed nor failed,
    /// and run again by `--rerun-failed`.
    Interrupted,
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(formatter)
    }
}

/// An outcome's kind without its details: a stable name for JSON, JUnit and results.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// [`Outcome::Pass`].
    Pass,
    /// [`Outcome::Fail`].
    Fail,
    /// [`Outcome::Skip`].
    Skip,
    /// [`Outcome::Timeout`].
    Timeout,
    /// [`Outcome::Crash`].
    Crash,
    /// [`Outcome::HypervisorError`].
    HypervisorError,
    /// [`Outcome::QemuError`].
    QemuError,
    /// [`Outcome::Interrupted`].
    Interrupted,
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(formatter)
    }
}

impl Outcome {
    /// The outcome's kind.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Pass { .. } => OutcomeKind::Pass,
            Outcome::Fail { .. } => OutcomeKind::Fail,
            Outcome::Skip { .. } => OutcomeKind::Skip,
            Outcome::Timeout { .. } => OutcomeKind::Timeout,
            Outcome::Crash { .. } => OutcomeKind::Crash,
            Outcome::HypervisorError { .. } => OutcomeKind::HypervisorError,
            Outcome::QemuError { .. } => OutcomeKind::QemuError,
            Outcome::Interrupted { .. } => OutcomeKind::Interrupted,
        }
    }

    /// What the outcome counts as: timeouts, crashes and errors are failures.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Pass { .. } => Verdict::Pass,
            Outcome::Skip { .. } => Verdict::Skip,
            Outcome::Interrupted { .. } => Verdict::Interrupted,
            _ => Verdict::Fail,
        }
    }

    /// The text shown in parentheses after the test name.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Pass { summary } => summary.clone(),
            Outcome::Fail { reason }
            | Outcome::Skip { reason }
            | Outcome::Crash { reason }
            | Outcome::Interrupted { reason } => Some(reason.clone()),
            Outcome::Timeout { after } => Some(format!("timeout; duration={}", format_duration(*after))),
            Outcome::HypervisorError { reason } => Some(format!("hypervisor error: {reason}")),
            Outcome::QemuError { reason } => Some(format!("QEMU error: {reason}")),
        }
    }

    /// A run the runner stopped because it was interrupted.
    pub fn interrupted_while_running() -> Outcome {
        Outcome::Interrupted {
            reason: "stopped: the runner was interrupted".to_owned(),
        }
    }

    /// A run that did not start because the runner was interrupted first.
    pub fn interrupted_before_start() -> Outcome {
        Outcome::Interrupted {
            reason: "not started: the runner was interrupted".to_owned(),
        }
    }

    /// The one-line report, kvm-unit-tests style: `PASS selftest (14 tests)`.
    pub fn report_line(&self, name: &str) -> String {
        match self.detail() {
            Some(detail) => format!("{} {name} ({detail})", self.verdict()),
            None => format!("{} {name}", self.verdict()),
        }
    }
}

/// Decides the outcome of a run from how QEMU ended and what was printed.
pub fn classify(exit: ProcessExit, transcript: &Transcript, method: ExitMethod) -> Outcome {
    // Whatever QEMU printed, the runner stopped it: nothing can be judged.
    if exit == ProcessExit::Interrupted {
        return Outcome::interrupted_while_running();
    }
    if let Some(line) = transcript.hypervisor_error() {
        return Outcome::HypervisorError {
            reason: line.to_owned(),
        };
    }
    let status = match exit {
        ProcessExit::TimedOut(after) => return Outcome::Timeout { after },
        ProcessExit::Interrupted => return Outcome::interrupted_while_running(),
        ProcessExit::Signaled(signal) => {
            let name = nix::sys::signal::Signal::try_from(signal).map_or_else(
                |_| format!("signal {signal}"),
                |signal| signal.as_str().to_owned(),
            );
            return Outcome::Crash {
                reason: format!("terminated on {name}"),
            };
        }
        ProcessExit::Exited(status) => status,
    };
    let with_stderr = |message: String| match transcript.last_stderr() {
        Some(line) => format!("{message}: {line}"),
        None => message,
    };
    let reported = transcript.exit_status();
    let agrees = match (reported, method) {
        (Some(reported), ExitMethod::StatusDevice) => i64::from(reported) == i64::from(status),
        (Some(_), ExitMethod::PowerOff) => status == 0,
        (Some(reported), ExitMethod::SemihostingOrPowerOff) => {
            i64::from(reported) == i64::from(status) || status == 0
        }
        (None, _) => false,
    };
    match reported {
        Some(reported) if agrees => match GuestCode::from_status(reported) {
            Some(code) => decode(code, transcript),
            None => Outcome::QemuError {
                reason: with_stderr(format!("malformed EXIT line: STATUS={reported} is even")),
            },
        },
        Some(reported) => Outcome::QemuError {
            reason: with_stderr(format!(
                "EXIT line says STATUS={reported} but QEMU exited with status {status}"
            )),
        },
        None if let Some(machine) = transcript.stderr_lines().find_map(rejected_machine) => {
            Outcome::QemuError {
                reason: format!("QEMU rejected machine {machine}"),
            }
        }
        None if status == 0 => Outcome::Crash {
            reason: match method {
                ExitMethod::StatusDevice => {
                    "triple fault or reset: QEMU exited with status 0 and no EXIT line".to_owned()
                }
                ExitMethod::PowerOff | ExitMethod::SemihostingOrPowerOff => {
                    "reset or power-off: QEMU exited with status 0 and no EXIT line".to_owned()
                }
            },
        },
        None => Outcome::QemuError {
            reason: with_stderr(format!("QEMU exited with status {status} and no EXIT line")),
        },
    }
}

/// Why a run whose program exited with status 0, printed nothing and does not call itself QEMU
/// failed ([`Executed::not_qemu`]): no guest ran, so it is no triple fault.
pub const NOT_QEMU_REASON: &str =
    "QEMU exited with status 0 and printed nothing (its --version names no QEMU)";

/// The machine type a QEMU stderr line says QEMU does not know
/// (`qemu-system-x86_64: unsupported machine type: "nosuch"`).
fn rejected_machine(line: &str) -> Option<&str> {
    let (_, machine) = line.split_once("unsupported machine type: ")?;
    Some(machine.trim().trim_matches('"'))
}

/// How many of a failed run's `FAIL:` lines are shown under its verdict.
const SHOWN_FAIL_LINES: usize = 3;

/// The result of one run.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// The run's name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Wall time QEMU ran (zero when not run).
    pub duration: Duration,
    /// Its log file, when QEMU ran.
    pub log: Option<PathBuf>,
    /// The guest's report lines (at most `execute::run::MAX_REPORT_LINES`).
    pub report: Vec<ReportLine>,
    /// Lines shown under the result line, such as a crash's symbolised address.
    pub notes: Vec<String>,
    /// The `#[vmunit::test]` subtests its image declares, in the order they run.
    pub subtests: Vec<String>,
    /// The measurements of its `BENCH:` lines, in the order printed (see `bench`).
    pub benches: Vec<Bench>,
    /// Notes on its malformed `BENCH:` lines, for its log.
    pub malformed_benches: Vec<String>,
}

impl TestResult {
    /// The result of a run decided without running QEMU.
    pub fn not_run(name: &str, outcome: Outcome) -> TestResult {
        TestResult {
            name: name.to_owned(),
            outcome,
            duration: Duration::ZERO,
            log: None,
            report: Vec::new(),
            notes: Vec::new(),
            subtests: Vec::new(),
            benches: Vec::new(),
            malformed_benches: Vec::new(),
        }
    }
}

/// The result of a run that got as far as starting QEMU: its outcome, and notes on a failure
/// (the guest's first `FAIL:` lines, a crash's symbolised addresses in `image`).
pub fn result_of(
    name: &str,
    executed: Executed,
    method: ExitMethod,
    image: &Path,
    workspace: &Path,
) -> TestResult {
    // The first failing report lines, shown under a FAIL so that it says what failed.
    let mut failure_lines: Vec<String> = Vec::new();
    let mut migration_note = None;
    let (outcome, duration) = match executed.execution {
        Ok(execution) => {
            failure_lines = execution
                .transcript
                .fail_lines()
                .iter()
                .take(SHOWN_FAIL_LINES)
                .cloned()
                .collect();
            let outcome = if executed.not_qemu {
                Outcome::QemuError {
                    reason: NOT_QEMU_REASON.to_owned(),
                }
            } else {
                classify(execution.exit, &execution.transcript, method)
            };
            // A failed console script fails the run; a run that failed anyway keeps its reason.
            let outcome = match execution.script_failure {
                Some(failure) if outcome.verdict() != Verdict::Fail => Outcome::Fail {
                    reason: format!("console script: {failure}"),
                },
                _ => outcome,
            };
            let outcome = migration_outcome(outcome, execution.migration_failure);
            migration_note = execution.migration_note;
            (outcome, execution.duration)
        }
        Err(error) => (
            Outcome::QemuError {
                reason: error.to_string(),
            },
            Duration::ZERO,
        ),
    };
    let mut notes = if outcome.verdict() == Verdict::Fail && !executed.crash_addresses.is_empty() {
        symbolise::notes(image, &executed.crash_addresses, workspace)
    } else {
        Vec::new()
    };
    if outcome.verdict() == Verdict::Fail {
        notes.extend(failure_lines);
    }
    notes.extend(migration_note);
    notes.extend(executed.log_notes);
    TestResult {
        name: name.to_owned(),
        outcome,
        duration,
        log: Some(executed.log),
        report: executed.report,
        notes,
        subtests: subtests::names(image).unwrap_or_default(),
        benches: executed.benches,
        malformed_benches: executed.malformed_benches,
    }
}

/// The outcome of a migration run: a failed migration fails it (unless the runner was
/// interrupted), whatever the guest said; a guest that never asked for one fails it only if it
/// would otherwise pass.
fn migration_outcome(outcome: Outcome, failure: Option<MigrationFailure>) -> Outcome {
    match failure {
        Some(failure @ MigrationFailure::Failed(_)) if outcome.verdict() != Verdict::Interrupted => {
            Outcome::Fail {
                reason: failure.reason(),
            }
        }
        Some(failure @ MigrationFailure::NeverAsked) if outcome.verdict() == Verdict::Pass => Outcome::Fail {
            reason: failure.reason(),
        },
        _ => outcome,
    }
}

/// Pass/fail/skip counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Passed runs.
    pub passed: usize,
    /// Failed runs (including timeouts, crashes and errors).
    pub failed: usize,
    /// Skipped runs.
    pub skipped: usize,
    /// Runs stopped or not started because the runner was interrupted (not in the line the
    /// totals print as: an interrupted invocation says so after it).
    pub interrupted: usize,
}

impl fmt::Display for Totals {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// The results of an invocation, in unittests.toml order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One per run reported.
    pub results: Vec<TestResult>,
    /// How many new disagreements `--differential` found between the runs' two sides (0
    /// without it).
    pub new_disagreements: usize,
}

impl Report {
    /// Counts by verdict.
    pub fn totals(&self) -> Totals {
        totals(&self.results)
    }

    /// [`ExitStatus::Success`] when everything passed or skipped (and `--differential` found
    /// no new disagreement), else [`ExitStatus::TestsFailed`].
    pub fn exit_status(&self) -> ExitStatus {
        if self.totals().failed > 0 || self.new_disagreements > 0 {
            ExitStatus::TestsFailed
        } else {
            ExitStatus::Success
        }
    }

    /// The outcome of the run called `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|result| result.name == name)
            .map(|result| &result.outcome)
    }
}

/// Counts `results` by verdict.
pub fn totals(results: &[TestResult]) -> Totals {
    let mut totals = Totals::default();
    for result in results {
        match result.outcome.verdict() {
            Verdict::Pass => totals.passed += 1,
            Verdict::Fail => totals.failed += 1,
            Verdict::Skip => totals.skipped += 1,
            Verdict::Interrupted => totals.interrupted += 1,
        }
    }
    totals
}

/// The outcome for a guest result the process exit confirmed.
fn decode(code: GuestCode, transcript: &Transcript) -> Outcome {
    let printed_failures = || {
        (transcript.fail_count() > 0).then(|| {
            let first = transcript.fail_lines().first().map_or("", String::as_str);
            format!(
                "exit code {} but {} FAIL line{} printed: {first}",
                code.code(),
                transcript.fail_count(),
                if transcript.fail_count() == 1 { "" } else { "s" }
            )
        })
    };
    match code {
        GuestCode::Pass => {
            if let Some(reason) = printed_failures() {
                Outcome::Fail { reason }
            } else if transcript.unexpected_failures() > 0 {
                Outcome::Fail {
                    reason: format!(
                        "exit code 0 but SUMMARY: {}",
                        transcript.summary().unwrap_or_default()
                    ),
                }
            } else {
                Outcome::Pass {
                    summary: transcript.summary().map(str::to_owned),
                }
            }
        }
        GuestCode::Failures => {
            let reason = transcript
                .unexpected_failures_part()
                .or_else(|| transcript.summary().map(str::to_owned))
                .or_else(|| transcript.fail_lines().first().cloned())
                .unwrap_or_else(|| "unexpected failures".to_owned());
            Outcome::Fail { reason }
        }
        GuestCode::AllSkipped => match printed_failures() {
            Some(reason) => Outcome::Fail { reason },
            None => Outcome::Skip {
                reason: transcript.last_skip().unwrap_or("all skipped").to_owned(),
            },
        },
        GuestCode::Abort => Outcome::Crash {
            reason: transcript
                .abort_line()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("aborted (exit code {})", code.code())),
        },
        GuestCode::Other(other) => Outcome::Fail {
            reason: format!("exit code {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::Stream;

    const DEVICE: ExitMethod = ExitMethod::StatusDevice;

    fn run(status: i32, serial: &[&str], stderr: &[&str]) -> Outcome {
        classify(
            ProcessExit::Exited(status),
            &Transcript::from_lines(serial, stderr),
            DEVICE,
        )
    }

    #[test]
    fn migration_failures() {
        let reason = "the destination QEMU exited (status 1)".to_owned();
        let failed = migration_outcome(
            run(1, &["EXIT: STATUS=1"], &[]),
            Some(MigrationFailure::Failed(reason)),
        );
        assert_eq!(
            failed.detail().as_deref(),
            Some("migration failed: the destination QEMU exited (status 1)")
        );
        assert_eq!(failed.verdict(), Verdict::Fail);
        // A guest that never asked fails a run that would pass, and leaves a skip or a failure.
        let never = || Some(MigrationFailure::NeverAsked);
        assert_eq!(
            migration_outcome(run(1, &["EXIT: STATUS=1"], &[]), never()).verdict(),
            Verdict::Fail
        );
        assert_eq!(
            migration_outcome(run(77, &["SKIP: x", "EXIT: STATUS=77"], &[]), never()).verdict(),
            Verdict::Skip
        );
        let failing = run(3, &["FAIL: x", "EXIT: STATUS=3"], &[]);
        assert_eq!(migration_outcome(failing.clone(), never()), failing);
        assert_eq!(migration_outcome(failing.clone(), None), failing);
    }

    #[test]
    fn guest_codes() {
        assert_eq!(GuestCode::Pass.status(), 1);
        assert_eq!(GuestCode::Failures.status(), 3);
        assert_eq!(GuestCode::AllSkipped.status(), 77);
        assert_eq!(GuestCode::Abort.status(), 127);
        assert_eq!(GuestCode::from_status(77), Some(GuestCode::AllSkipped));
        assert_eq!(GuestCode::from_status(9), Some(GuestCode::Other(4)));
        assert_eq!(GuestCode::from_status(0), None);
    }

    #[test]
    fn pass() {
        let outcome = run(
            1,
            &["PASS: one", "PASS: two", "SUMMARY: 2 tests", "EXIT: STATUS=1"],
            &[],
        );
        assert_eq!(
            outcome,
            Outcome::Pass {
                summary: Some("2 tests".into())
            }
        );
        assert_eq!(outcome.report_line("selftest"), "PASS selftest (2 tests)");
        assert_eq!(run(1, &["EXIT: STATUS=1\r"], &[]).report_line("x"), "PASS x");
    }

    #[test]
    fn pass_with_fail_line_is_fail() {
        let outcome = run(
            1,
            &["PASS: a", "FAIL: b", "SUMMARY: 2 tests", "EXIT: STATUS=1"],
            &[],
        );
        assert_eq!(outcome.verdict(), Verdict::Fail);
        assert_eq!(
            outcome,
            Outcome::Fail {
                reason: "exit code 0 but 1 FAIL line printed: FAIL: b".into()
            }
        );
    }

    #[test]
    fn pass_with_unexpected_failures_in_summary_is_fail() {
        let outcome = run(
            1,
            &["SUMMARY: 3 tests, 1 unexpected failures", "EXIT: STATUS=1"],
            &[],
        );
        assert_eq!(outcome.verdict(), Verdict::Fail);
        let outcome = run(
            1,
            &["SUMMARY: 3 tests, 1 unexpected failure", "EXIT: STATUS=1"],
            &[],
        );
        assert_eq!(outcome.verdict(), Verdict::Fail);
        let outcome = run(
            1,
            &["SUMMARY: 3 tests, 1 known failures, 1 skipped", "EXIT: STATUS=1"],
            &[],
        );
        assert_eq!(outcome.verdict(), Verdict::Pass);
    }

    #[test]
    fn failures() {
        let serial = [
            "PASS: a",
            "FAIL: b",
            "FAIL: c",
            "SUMMARY: 14 tests, 2 unexpected failures, 1 skipped",
            "EXIT: STATUS=3",
        ];
        let outcome = run(3, &serial, &[]);
        assert_eq!(
            outcome,
            Outcome::Fail {
                reason: "2 unexpected failures".into()
            }
        );
        assert_eq!(outcome.report_line("msr"), "FAIL msr (2 unexpected failures)");
        let outcome = run(3, &["FAIL: b", "EXIT: STATUS=3"], &[]);
        assert_eq!(
            outcome,
            Outcome::Fail {
                reason: "FAIL: b".into()
            }
        );
        assert_eq!(
            run(3, &["EXIT: STATUS=3"], &[]),
            Outcome::Fail {
                reason: "unexpected failures".into()
            }
        );
    }

    #[test]
    fn skipped() {
        let outcome = run(
            77,
            &[
                "SKIP: no pmu",
                "SKIP: x86_64 only",
                "SUMMARY: 0 tests, 2 skipped",
                "EXIT: STATUS=77",
            ],
            &[],
        );
        assert_eq!(
            outcome,
            Outcome::Skip {
                reason: "x86_64 only".into()
            }
        );
        assert_eq!(outcome.report_line("pmu"), "SKIP pmu (x86_64 only)");
        assert_eq!(
            run(77, &["EXIT: STATUS=77"], &[]),
            Outcome::Skip {
                reason: "all skipped".into()
            }
        );
        assert_eq!(
            run(77, &["FAIL: x", "EXIT: STATUS=77"], &[]).verdict(),
            Verdict::Fail
        );
    }

    #[test]
    fn abort() {
        let outcome = run(
            127,
            &[
                "PASS: a",
                "panicked at src/main.rs:3:5: boom",
                "ABORT: panic",
                "EXIT: STATUS=127",
            ],
            &[],
        );
        assert_eq!(
            outcome,
            Outcome::Crash {
                reason: "panicked at src/main.rs:3:5: boom".into()
            }
        );
        let outcome = run(
            127,
            &["Unhandled exception 14 #PF at rip=0x1234", "EXIT: STATUS=127"],
            &[],
        );
        assert_eq!(
            outcome,
            Outcome::Crash {
                reason: "Unhandled exception 14 #PF at rip=0x1234".into()
            }
        );
        assert_eq!(
            run(127, &["EXIT: STATUS=127"], &[]),
            Outcome::Crash {
                reason: "aborted (exit code 63)".into()
            }
        );
    }

    #[test]
    fn other_code() {
        assert_eq!(
            run(9, &["EXIT: STATUS=9"], &[]),
            Outcome::Fail {
                reason: "exit code 4".into()
            }
        );
    }

    #[test]
    fn status_zero_without_exit_line_is_a_crash() {
        let outcome = run(0, &["PASS: a"], &[]);
        assert_eq!(
            outcome,
            Outcome::Crash {
                reason: "triple fault or reset: QEMU exited with status 0 and no EXIT line".into()
            }
        );
        assert_eq!(outcome.verdict(), Verdict::Fail);
    }

    #[test]
    fn precise_messages_for_qemu_that_never_ran_a_guest() {
        // MACHINE=nosuch
        let outcome = run(
            1,
            &[],
            &[
                "qemu-system-x86_64: unsupported machine type: \"nosuch\"",
                "Use -machine help to list supported machines",
            ],
        );
        assert_eq!(
            outcome,
            Outcome::QemuError {
                reason: "QEMU rejected machine nosuch".into()
            }
        );
        // A triple fault before the first line (QEMU=/bin/true is told apart by the execute
        // stage, which asks the program's --version: `Executed::not_qemu`).
        let outcome = run(0, &[], &[]);
        assert!(matches!(outcome, Outcome::Crash { ref reason } if reason.starts_with("triple fault")));
        // aarch64 has no triple faults.
        let outcome = classify(
            ProcessExit::Exited(0),
            &Transcript::from_lines(&["PASS: a"], &[]),
            ExitMethod::SemihostingOrPowerOff,
        );
        assert_eq!(
            outcome,
            Outcome::Crash {
                reason: "reset or power-off: QEMU exited with status 0 and no EXIT line".into()
            }
        );
    }

    #[test]
    fn qemu_failing_to_start_is_a_qemu_error() {
        let outcome = run(1, &[], &["qemu-system-x86_64: -foo: invalid option"]);
        assert_eq!(
            outcome,
            Outcome::QemuError {
                reason:
                    "QEMU exited with status 1 and no EXIT line: qemu-system-x86_64: -foo: invalid option"
                        .into()
            }
        );
        assert_eq!(run(1, &[], &[]).verdict(), Verdict::Fail);
        assert_eq!(
            run(1, &["PASS: a", "SUMMARY: 1 tests"], &[]).verdict(),
            Verdict::Fail
        );
        assert!(matches!(run(2, &[], &[]), Outcome::QemuError { .. }));
    }

    #[test]
    fn exit_line_disagreeing_with_status_is_a_qemu_error() {
        let outcome = run(1, &["EXIT: STATUS=3"], &["oops"]);
        assert_eq!(
            outcome,
            Outcome::QemuError {
                reason: "EXIT line says STATUS=3 but QEMU exited with status 1: oops".into()
            }
        );
        assert!(matches!(
            run(0, &["EXIT: STATUS=1"], &[]),
            Outcome::QemuError { .. }
        ));
        assert!(matches!(
            run(4, &["EXIT: STATUS=4"], &[]),
            Outcome::QemuError { .. }
        ));
    }

    #[test]
    fn interrupted_runs_are_neither_passed_nor_failed() {
        // Whatever the guest printed (QEMU exits 0 on SIGTERM), a run the runner stopped is
        // INTERRUPTED, never "triple fault or reset".
        let mut transcript = Transcript::new();
        transcript.push(Stream::Serial, "PASS: a");
        transcript.push(Stream::Serial, "EXIT: STATUS=1");
        let outcome = classify(ProcessExit::Interrupted, &transcript, DEVICE);
        assert_eq!(outcome, Outcome::interrupted_while_running());
        assert_eq!(outcome.verdict(), Verdict::Interrupted);
        assert_eq!(outcome.kind(), OutcomeKind::Interrupted);
        assert_eq!(
            outcome.report_line("t"),
            "INTERRUPTED t (stopped: the runner was interrupted)"
        );
        let results = [
            TestResult::not_run("a", Outcome::Pass { summary: None }),
            TestResult::not_run("b", Outcome::interrupted_before_start()),
        ];
        let counted = totals(&results);
        assert_eq!((counted.passed, counted.failed, counted.interrupted), (1, 0, 1));
        assert_eq!(counted.to_string(), "1 passed, 0 failed, 0 skipped");
    }

    #[test]
    fn hypervisor_error() {
        let stderr = [
            "KVM internal error. Suberror: 1",
            "extra data[0]: 0x0",
            "emulation failure",
            "RAX=0",
        ];
        let mut transcript = Transcript::new();
        assert!(!transcript.push(Stream::Serial, "PASS: a"));
        assert!(transcript.push(Stream::Stderr, stderr[0]));
        assert!(!transcript.push(Stream::Stderr, stderr[2]));
        let expected = Outcome::HypervisorError {
            reason: "KVM internal error. Suberror: 1".into(),
        };
        assert_eq!(classify(ProcessExit::Signaled(15), &transcript, DEVICE), expected);
        assert_eq!(
            classify(ProcessExit::TimedOut(Duration::from_secs(1)), &transcript, DEVICE),
            expected
        );
        assert_eq!(run(0, &[], &["emulation failure"]).verdict(), Verdict::Fail);
        assert!(matches!(
            run(1, &["EXIT: STATUS=1"], &["emulation failure"]),
            Outcome::HypervisorError { .. }
        ));
        // The guest's own serial output never counts as a hypervisor error.
        assert_eq!(
            run(1, &["INFO: KVM internal error", "EXIT: STATUS=1"], &[]).verdict(),
            Verdict::Pass
        );
    }

    #[test]
    fn timeout() {
        let outcome = classify(
            ProcessExit::TimedOut(Duration::from_secs(2)),
            &Transcript::new(),
            DEVICE,
        );
        assert_eq!(
            outcome,
            Outcome::Timeout {
                after: Duration::from_secs(2)
            }
        );
        assert_eq!(
            outcome.report_line("fixture-hang"),
            "FAIL fixture-hang (timeout; duration=2s)"
        );
    }

    #[test]
    fn signals() {
        let outcome = classify(
            ProcessExit::Signaled(9),
            &Transcript::from_lines(&["EXIT: STATUS=1"], &[]),
            DEVICE,
        );
        assert_eq!(
            outcome,
            Outcome::Crash {
                reason: "terminated on SIGKILL".into()
            }
        );
        assert_eq!(outcome.verdict(), Verdict::Fail);
    }

    #[test]
    fn power_off_method() {
        let method = ExitMethod::PowerOff;
        let transcript = Transcript::from_lines(&["SUMMARY: 1 tests", "EXIT: STATUS=1"], &[]);
        assert_eq!(
            classify(ProcessExit::Exited(0), &transcript, method).verdict(),
            Verdict::Pass
        );
        let transcript = Transcript::from_lines(&["EXIT: STATUS=3"], &[]);
        assert_eq!(
            classify(ProcessExit::Exited(0), &transcript, method).verdict(),
            Verdict::Fail
        );
        assert!(matches!(
            classify(
                ProcessExit::Exited(0),
                &Transcript::from_lines(&["PASS: a"], &[]),
                method
            ),
            Outcome::Crash { .. }
        ));
        let transcript = Transcript::from_lines(&["EXIT: STATUS=1"], &[]);
        assert!(matches!(
            classify(ProcessExit::Exited(1), &transcript, method),
            Outcome::QemuError { .. }
        ));
    }

    #[test]
    fn semihosting_or_power_off_method() {
        let method = ExitMethod::SemihostingOrPowerOff;
        let passed = Transcript::from_lines(&["SUMMARY: 1 tests", "EXIT: STATUS=1"], &[]);
        for status in [1, 0] {
            assert_eq!(
                classify(ProcessExit::Exited(status), &passed, method).verdict(),
                Verdict::Pass,
                "status {status}"
            );
        }
        let failed = Transcript::from_lines(&["FAIL: x", "EXIT: STATUS=3"], &[]);
        for status in [3, 0] {
            assert_eq!(
                classify(ProcessExit::Exited(status), &failed, method).verdict(),
                Verdict::Fail
            );
        }
        // PSCI SYSTEM_OFF with no EXIT line: QEMU exits with 0, never a pass.
        let silent = Transcript::from_lines(&["PASS: a"], &[]);
        assert!(matches!(
            classify(ProcessExit::Exited(0), &silent, method),
            Outcome::Crash { .. }
        ));
        assert!(matches!(
            classify(ProcessExit::Exited(3), &passed, method),
            Outcome::QemuError { .. }
        ));
    }

    #[test]
    fn last_exit_line_wins() {
        assert_eq!(
            run(3, &["EXIT: STATUS=1", "EXIT: STATUS=3"], &[]).verdict(),
            Verdict::Fail
        );
    }
}
