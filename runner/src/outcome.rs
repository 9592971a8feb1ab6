//! Outcomes of test runs and `classify`, the pure function that decides one from QEMU's exit and
//! the lines the guest and QEMU printed.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::config::format_duration;

/// How many of the most recent lines of each stream a transcript keeps.
pub const KEPT_LINES: usize = 200;
/// How many `FAIL:` lines a transcript keeps (it counts them all).
const KEPT_FAIL_LINES: usize = 10;

/// Result codes a guest reports (in its EXIT line and, on x86, through isa-debug-exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestCode {
    /// Every test passed (status 1).
    Pass,
    /// Some tests failed unexpectedly (status 3).
    Failures,
    /// Every test was skipped (status 77, as in kvm-unit-tests).
    AllSkipped,
    /// The guest aborted: a panic or an unexpected exception (status 127).
    Abort,
    /// Any other code.
    Other(u32),
}

impl GuestCode {
    /// Decodes a guest's result code.
    pub fn from_code(code: u32) -> GuestCode {
        match code {
            0 => GuestCode::Pass,
            1 => GuestCode::Failures,
            38 => GuestCode::AllSkipped,
            63 => GuestCode::Abort,
            other => GuestCode::Other(other),
        }
    }

    /// The guest's result code.
    pub fn code(self) -> u32 {
        match self {
            GuestCode::Pass => 0,
            GuestCode::Failures => 1,
            GuestCode::AllSkipped => 38,
            GuestCode::Abort => 63,
            GuestCode::Other(code) => code,
        }
    }

    /// The exit status it becomes: `(code << 1) | 1`, as isa-debug-exit and the EXIT line have it.
    pub fn status(self) -> u32 {
        (self.code() << 1) | 1
    }

    /// Decodes an exit status `(code << 1) | 1`; `None` for an even status, which no guest
    /// result produces.
    pub fn from_status(status: u32) -> Option<GuestCode> {
        (status & 1 == 1).then(|| GuestCode::from_code(status >> 1))
    }
}

/// How a guest's result reaches the runner, which decides how QEMU's exit status is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// The guest makes QEMU exit with the EXIT line's status (x86 isa-debug-exit, Arm
    /// semihosting): the two must agree.
    StatusDevice,
    /// The guest powers off (Arm PSCI SYSTEM_OFF): QEMU exits with 0 and the EXIT line alone
    /// carries the result.
    PowerOff,
    /// The guest exits through Arm semihosting when QEMU offers it (QEMU's status then equals
    /// the EXIT line's) and powers off otherwise (status 0; the EXIT line alone carries the
    /// result). A power-off without an EXIT line is never a pass.
    SemihostingOrPowerOff,
}

/// Which of QEMU's streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The guest's serial console (QEMU's stdout).
    Serial,
    /// QEMU's own messages.
    Stderr,
}

/// How the QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessExit {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal (not by the runner's timeout).
    Signaled(i32),
    /// The runner killed it when its timeout ran out.
    TimedOut(Duration),
}

/// Texts in QEMU's stderr that mean the hypervisor gave up on the guest (QEMU then pauses the VM).
const HYPERVISOR_ERROR_MARKERS: [&str; 4] = [
    "KVM internal error",
    "emulation failure",
    "kvm run failed",
    "KVM: entry failed",
];

/// What a run printed, reduced to what `classify` needs: the recent lines of each stream and
/// the lines that carry a status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    serial: VecDeque<String>,
    stderr: VecDeque<String>,
    exit_status: Option<u32>,
    summary: Option<String>,
    fail_lines: Vec<String>,
    fail_count: usize,
    last_skip: Option<String>,
    abort_line: Option<String>,
    hypervisor_error: Option<String>,
}

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Transcript {
        Transcript::default()
    }

    /// A transcript of these lines (serial lines first, then stderr lines).
    pub fn from_lines(serial: &[&str], stderr: &[&str]) -> Transcript {
        let mut transcript = Transcript::new();
        for line in serial {
            transcript.push(Stream::Serial, line);
        }
        for line in stderr {
            transcript.push(Stream::Stderr, line);
        }
        transcript
    }

    /// Adds one line. Returns true when the line reports a hypervisor error, upon which QEMU
    /// pauses the guest and must be killed.
    pub fn push(&mut self, stream: Stream, line: &str) -> bool {
        let line = line.trim_end_matches(['\r', '\n']);
        let kept = match stream {
            Stream::Serial => &mut self.serial,
            Stream::Stderr => &mut self.stderr,
        };
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line.to_owned());
        match stream {
            Stream::Serial => {
                self.note_serial(line);
                false
            }
            Stream::Stderr => {
                if self.hypervisor_error.is_none()
                    && HYPERVISOR_ERROR_MARKERS
                        .iter()
                        .any(|marker| line.contains(marker))
                {
                    self.hypervisor_error = Some(line.trim().to_owned());
                    return true;
                }
                false
            }
        }
    }

    fn note_serial(&mut self, line: &str) {
        let text = line.trim_start();
        if let Some(status) = text.strip_prefix("EXIT: STATUS=") {
            self.exit_status = status.trim().parse().ok();
        } else if let Some(summary) = text.strip_prefix("SUMMARY:") {
            self.summary = Some(summary.trim().to_owned());
        } else if text.starts_with("FAIL:") {
            self.fail_count += 1;
            if self.fail_lines.len() < KEPT_FAIL_LINES {
                self.fail_lines.push(text.to_owned());
            }
        } else if let Some(skip) = text.strip_prefix("SKIP:") {
            self.last_skip = Some(skip.trim().to_owned());
        }
        if self.abort_line.is_none()
            && (text.starts_with("ABORT:")
                || text.contains("Unhandled exception")
                || text.contains("panicked at"))
        {
            self.abort_line = Some(text.to_owned());
        }
    }

    /// The first `FAIL:` lines the guest printed (at most ten), whole.
    pub fn fail_lines(&self) -> &[String] {
        &self.fail_lines
    }

    /// The recent serial lines.
    pub fn serial_lines(&self) -> impl Iterator<Item = &str> {
        self.serial.iter().map(String::as_str)
    }

    /// The recent QEMU stderr lines.
    pub fn stderr_lines(&self) -> impl Iterator<Item = &str> {
        self.stderr.iter().map(String::as_str)
    }

    /// The hypervisor error line, if QEMU printed one.
    pub fn hypervisor_error(&self) -> Option<&str> {
        self.hypervisor_error.as_deref()
    }

    /// The status of the last `EXIT: STATUS=` line.
    pub fn exit_status(&self) -> Option<u32> {
        self.exit_status
    }

    /// The text of the last `SUMMARY:` line.
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }

    /// The count of unexpected failures the summary reports.
    fn unexpected_failures(&self) -> usize {
        self.summary_part("unexpected failure")
            .map_or(0, |(count, _)| count)
    }

    /// The `N <what>[s]` part of the summary, with its count.
    fn summary_part(&self, what: &str) -> Option<(usize, &str)> {
        self.summary
            .as_deref()?
            .split(',')
            .map(str::trim)
            .find_map(|part| {
                let (count, rest) = part.split_once(' ')?;
                let rest = rest.trim();
                if rest != what && rest.strip_suffix('s') != Some(what) {
                    return None;
                }
                Some((count.parse().ok()?, part))
            })
    }

    fn last_stderr(&self) -> Option<&str> {
        self.stderr
            .iter()
            .rev()
            .map(|line| line.trim())
            .find(|line| !line.is_empty())
    }
}

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
}

/// The verdict an outcome counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Pass,
    /// Failed in any way.
    Fail,
    /// Skipped.
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

impl Outcome {
    /// What the outcome counts as: timeouts, crashes and errors are failures.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Pass { .. } => Verdict::Pass,
            Outcome::Skip { .. } => Verdict::Skip,
            _ => Verdict::Fail,
        }
    }

    /// The text shown in parentheses after the test name.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Pass { summary } => summary.clone(),
            Outcome::Fail { reason } | Outcome::Skip { reason } | Outcome::Crash { reason } => {
                Some(reason.clone())
            }
            Outcome::Timeout { after } => Some(format!("timeout; duration={}", format_duration(*after))),
            Outcome::HypervisorError { reason } => Some(format!("hypervisor error: {reason}")),
            Outcome::QemuError { reason } => Some(format!("QEMU error: {reason}")),
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
    if let Some(line) = transcript.hypervisor_error() {
        return Outcome::HypervisorError {
            reason: line.to_owned(),
        };
    }
    let status = match exit {
        ProcessExit::TimedOut(after) => return Outcome::Timeout { after },
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
        None if status == 0 => Outcome::Crash {
            reason: "triple fault or reset: QEMU exited with status 0 and no EXIT line".to_owned(),
        },
        None => Outcome::QemuError {
            reason: with_stderr(format!("QEMU exited with status {status} and no EXIT line")),
        },
    }
}

/// The outcome for a guest result the process exit confirmed.
fn decode(code: GuestCode, transcript: &Transcript) -> Outcome {
    let printed_failures = || {
        (transcript.fail_count > 0).then(|| {
            let first = transcript.fail_lines.first().map_or("", String::as_str);
            format!(
                "exit code {} but {} FAIL line{} printed: {first}",
                code.code(),
                transcript.fail_count,
                if transcript.fail_count == 1 { "" } else { "s" }
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
                .summary_part("unexpected failure")
                .map(|(_, part)| part.to_owned())
                .or_else(|| transcript.summary().map(str::to_owned))
                .or_else(|| transcript.fail_lines.first().cloned())
                .unwrap_or_else(|| "unexpected failures".to_owned());
            Outcome::Fail { reason }
        }
        GuestCode::AllSkipped => match printed_failures() {
            Some(reason) => Outcome::Fail { reason },
            None => Outcome::Skip {
                reason: transcript
                    .last_skip
                    .clone()
                    .unwrap_or_else(|| "all skipped".to_owned()),
            },
        },
        GuestCode::Abort => Outcome::Crash {
            reason: transcript
                .abort_line
                .clone()
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

    const DEVICE: ExitMethod = ExitMethod::StatusDevice;

    fn run(status: i32, serial: &[&str], stderr: &[&str]) -> Outcome {
        classify(
            ProcessExit::Exited(status),
            &Transcript::from_lines(serial, stderr),
            DEVICE,
        )
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
            classify(ProcessExit::Exited(0), &Transcript::new(), method),
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
    fn transcript_is_bounded() {
        let mut transcript = Transcript::new();
        for index in 0..1000 {
            transcript.push(Stream::Serial, &format!("FAIL: {index}"));
            transcript.push(Stream::Stderr, "noise");
        }
        assert_eq!(transcript.serial_lines().count(), KEPT_LINES);
        assert_eq!(transcript.stderr_lines().count(), KEPT_LINES);
        assert_eq!(transcript.fail_count, 1000);
        assert_eq!(transcript.fail_lines.len(), KEPT_FAIL_LINES);
        assert_eq!(transcript.serial_lines().last(), Some("FAIL: 999"));
    }

    #[test]
    fn last_exit_line_wins() {
        assert_eq!(
            run(3, &["EXIT: STATUS=1", "EXIT: STATUS=3"], &[]).verdict(),
            Verdict::Fail
        );
    }
}
