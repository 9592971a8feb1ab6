//! What the runner prints while it runs: the plain kvm-unit-tests-style lines (coloured and
//! with a live progress line on a terminal), TAP version 13 (`--tap`), or one JSON object per
//! event (`--format json`); and the JUnit XML report (`--junit FILE`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::app::{TestResult, Totals};
use crate::outcome::{Outcome, Verdict};

/// How many guest report lines one run keeps for the structured outputs.
pub const MAX_REPORT_LINES: usize = 10_000;
/// How many bytes of a log's end go into the JUnit report's system-out.
pub const JUNIT_LOG_BYTES: u64 = 256 * 1024;
/// How many of the slowest runs the plain summary names.
pub const SLOWEST_SHOWN: usize = 3;

/// The output format (`--format`; `-t`/`--tap` is `--format tap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One kvm-unit-tests-style line per run and the totals.
    #[default]
    Plain,
    /// TAP version 13: a test point per run, the guest's report lines as a subtest.
    Tap,
    /// JSON lines: an object per event (run start, guest report line, run end, summary).
    Json,
}

/// The label of a guest report line (`PASS:`, `FAIL:`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// `PASS:`.
    Pass,
    /// `FAIL:`: an unexpected failure.
    Fail,
    /// `SKIP:`.
    Skip,
    /// `XFAIL:`: an expected failure.
    ExpectedFail,
    /// `XPASS:`: an unexpected pass (counted as a failure).
    UnexpectedPass,
    /// `KFAIL:`: a known failure, not counted as unexpected.
    KnownFail,
}

impl LineKind {
    const ALL: [LineKind; 6] = [
        LineKind::Pass,
        LineKind::Fail,
        LineKind::Skip,
        LineKind::ExpectedFail,
        LineKind::UnexpectedPass,
        LineKind::KnownFail,
    ];

    /// The label as the guest prints it.
    pub fn label(self) -> &'static str {
        match self {
            LineKind::Pass => "PASS",
            LineKind::Fail => "FAIL",
            LineKind::Skip => "SKIP",
            LineKind::ExpectedFail => "XFAIL",
            LineKind::UnexpectedPass => "XPASS",
            LineKind::KnownFail => "KFAIL",
        }
    }
}

/// One guest report line: its label and the text after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLine {
    /// The label.
    pub kind: LineKind,
    /// The text after `LABEL:`.
    pub text: String,
}

/// The report line in a serial line, if it is one.
pub fn parse_report_line(line: &str) -> Option<GuestLine> {
    let line = line.trim();
    LineKind::ALL.into_iter().find_map(|kind| {
        let text = line.strip_prefix(kind.label())?.strip_prefix(':')?;
        Some(GuestLine {
            kind,
            text: text.trim().to_owned(),
        })
    })
}

/// A stable name for an outcome's kind, for JSON and JUnit.
pub fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Pass { .. } => "pass",
        Outcome::Fail { .. } => "fail",
        Outcome::Skip { .. } => "skip",
        Outcome::Timeout { .. } => "timeout",
        Outcome::Crash { .. } => "crash",
        Outcome::HypervisorError { .. } => "hypervisor-error",
        Outcome::QemuError { .. } => "qemu-error",
    }
}

/// Whether colour is wanted: stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// A path as the user would type it: relative to the current directory when inside it.
pub fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|current| path.strip_prefix(current).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// Seconds with millisecond precision, for JSON.
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

#[derive(Default)]
struct State {
    /// TAP test points printed so far.
    points: usize,
    /// Runs finished (for the progress line).
    finished: usize,
    /// Runs to report (for the progress line).
    total: usize,
    /// Names of the runs in progress.
    running: Vec<String>,
    /// Whether a progress line is on the screen.
    progress_shown: bool,
}

/// Prints an invocation's events in one format; safe to share between worker threads.
pub struct Printer {
    silent: bool,
    format: Format,
    colour: bool,
    progress: bool,
    state: Mutex<State>,
}

impl Printer {
    /// A printer for `format`; `colour` and `progress` only affect the plain format.
    pub fn new(format: Format, colour: bool, progress: bool) -> Printer {
        Printer {
            silent: false,
            format,
            colour: colour && format == Format::Plain,
            progress: progress && format == Format::Plain,
            state: Mutex::new(State::default()),
        }
    }

    /// A printer that prints nothing (for callers that read the results themselves).
    pub fn silent() -> Printer {
        Printer {
            silent: true,
            ..Printer::new(Format::Plain, false, false)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Before the first run: `total` runs will be reported.
    pub fn begin(&self, total: usize) {
        if self.silent {
            return;
        }
        self.state().total = total;
        if self.format == Format::Tap {
            println!("TAP version 13");
            println!("1..{total}");
        }
    }

    /// A line of the runner's own (such as `-v`'s command lines): as it is in plain form, a
    /// TAP comment, or a JSON `message` event.
    pub fn message(&self, text: &str) {
        if self.silent {
            return;
        }
        let mut state = self.state();
        self.clear_progress(&mut state);
        match self.format {
            Format::Plain => println!("{text}"),
            Format::Tap => println!("# {text}"),
            Format::Json => println!("{}", json!({"event": "message", "text": text})),
        }
        self.draw_progress(&mut state);
    }

    /// A run starts.
    pub fn started(&self, name: &str, arch: &str, accel: &str, command: &str) {
        if self.silent {
            return;
        }
        let mut state = self.state();
        state.running.push(name.to_owned());
        if self.format == Format::Json {
            println!(
                "{}",
                json!({"event": "start", "name": name, "arch": arch, "accel": accel, "command": command})
            );
        }
        self.clear_progress(&mut state);
        self.draw_progress(&mut state);
    }

    /// A guest report line of a running run (JSON only; the others show them at the end).
    pub fn report_line(&self, name: &str, line: &GuestLine) {
        if self.silent {
            return;
        }
        if self.format == Format::Json {
            let _state = self.state();
            println!(
                "{}",
                json!({"event": "report", "name": name, "result": line.kind.label(), "text": line.text})
            );
        }
    }

    /// A run finished (or was decided without running).
    pub fn finished(&self, result: &TestResult) {
        if self.silent {
            return;
        }
        let mut state = self.state();
        state.running.retain(|running| *running != result.name);
        state.finished += 1;
        self.clear_progress(&mut state);
        match self.format {
            Format::Plain => self.plain_result(result),
            Format::Tap => {
                state.points += 1;
                tap_result(state.points, result);
            }
            Format::Json => json_result(result),
        }
        let _ = std::io::stdout().flush();
        self.draw_progress(&mut state);
    }

    /// After the last run: the slowest runs and the totals (the plain totals line is last).
    pub fn end(&self, results: &[TestResult], totals: Totals) {
        if self.silent {
            return;
        }
        let mut state = self.state();
        self.clear_progress(&mut state);
        match self.format {
            Format::Plain => {
                if let Some(slowest) = slowest_line(results) {
                    println!("{slowest}");
                }
                println!("{totals}");
            }
            Format::Tap => {
                if let Some(slowest) = slowest_line(results) {
                    println!("# {slowest}");
                }
                println!("# {totals}");
            }
            Format::Json => println!(
                "{}",
                json!({"event": "summary", "passed": totals.passed, "failed": totals.failed,
                       "skipped": totals.skipped})
            ),
        }
    }

    fn plain_result(&self, result: &TestResult) {
        println!("{}", display_line(&result.name, &result.outcome, self.colour));
        for note in &result.notes {
            println!("    {note}");
        }
        if result.outcome.verdict() == Verdict::Fail {
            let log = result.log.as_deref().map(shown).unwrap_or_default();
            println!(
                "    log: {log}; reproduce alone with: ./run_tests {}",
                shlex::try_quote(&result.name).unwrap_or_default()
            );
        }
    }

    fn clear_progress(&self, state: &mut State) {
        if state.progress_shown {
            print!("\r\x1b[K");
            state.progress_shown = false;
        }
    }

    fn draw_progress(&self, state: &mut State) {
        if !self.progress || state.running.is_empty() {
            let _ = std::io::stdout().flush();
            return;
        }
        print!(
            "[{}/{}] running: {}",
            state.finished,
            state.total,
            state.running.join(", ")
        );
        let _ = std::io::stdout().flush();
        state.progress_shown = true;
    }
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
    };
    let verdict_length = outcome.verdict().to_string().len();
    format!(
        "\x1b[{code}m{}\x1b[0m{}",
        &line[..verdict_length],
        &line[verdict_length..]
    )
}

/// `slowest: msr 3.2s, cpuid 1.1s, tsc 0.9s`, from the runs that ran.
fn slowest_line(results: &[TestResult]) -> Option<String> {
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

/// TAP descriptions may not contain an unescaped `#`.
fn tap_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('#', "\\#")
}

fn tap_result(number: usize, result: &TestResult) {
    if !result.report.is_empty() {
        println!("    # Subtest: {}", tap_escape(&result.name));
        for (index, line) in result.report.iter().enumerate() {
            let text = tap_escape(&line.text);
            let point = index + 1;
            match line.kind {
                LineKind::Pass => println!("    ok {point} - {text}"),
                LineKind::Fail => println!("    not ok {point} - {text}"),
                LineKind::Skip => println!("    ok {point} - {text} # SKIP"),
                LineKind::ExpectedFail => {
                    println!("    not ok {point} - {text} # TODO expected failure (XFAIL)")
                }
                LineKind::KnownFail => println!("    not ok {point} - {text} # TODO known failure (KFAIL)"),
                LineKind::UnexpectedPass => println!("    not ok {point} - {text} (XPASS: unexpected pass)"),
            }
        }
        println!("    1..{}", result.report.len());
    }
    let name = tap_escape(&result.name);
    let detail = result.outcome.detail().map(|detail| tap_escape(&detail));
    match (result.outcome.verdict(), detail) {
        (Verdict::Pass, Some(detail)) => println!("ok {number} - {name} ({detail})"),
        (Verdict::Pass, None) => println!("ok {number} - {name}"),
        (Verdict::Skip, detail) => println!("ok {number} - {name} # SKIP {}", detail.unwrap_or_default()),
        (Verdict::Fail, detail) => {
            println!("not ok {number} - {name}");
            println!("  ---");
            println!("  outcome: {}", outcome_kind(&result.outcome));
            println!("  message: {}", json!(detail.unwrap_or_default()));
            for note in &result.notes {
                println!("  # {note}");
            }
            if let Some(log) = &result.log {
                println!("  log: {}", json!(shown(log)));
            }
            println!("  duration_ms: {}", result.duration.as_millis());
            println!("  ...");
        }
    }
}

fn json_result(result: &TestResult) {
    println!(
        "{}",
        json!({
            "event": "end",
            "name": result.name,
            "verdict": result.outcome.verdict().to_string(),
            "outcome": outcome_kind(&result.outcome),
            "detail": result.outcome.detail(),
            "duration_secs": seconds(result.duration),
            "log": result.log.as_deref().map(shown),
            "notes": result.notes,
            "benches": result.benches,
        })
    );
}

/// The end of a log file, at most `JUNIT_LOG_BYTES`, noting what was cut.
fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map_or(0, |metadata| metadata.len());
    let mut text = String::new();
    if length > JUNIT_LOG_BYTES {
        let _ = file.seek(SeekFrom::Start(length - JUNIT_LOG_BYTES));
        text.push_str(&format!(
            "[first {} bytes of {} cut]\n",
            length - JUNIT_LOG_BYTES,
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    let _ = file.take(JUNIT_LOG_BYTES).read_to_end(&mut bytes);
    text.push_str(&String::from_utf8_lossy(&bytes));
    text
}

/// Writes the JUnit XML report of `results` to `path`: one testcase per run, its report
/// lines and log in system-out, a failure or skipped element with the reason.
pub fn write_junit(path: &Path, results: &[TestResult]) -> std::io::Result<()> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("vmunit");
    let mut total = Duration::ZERO;
    for result in results {
        let reason = result.outcome.detail().unwrap_or_default();
        let status = match result.outcome.verdict() {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Skip => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(reason);
                status
            }
            Verdict::Fail => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(reason);
                status.set_type(outcome_kind(&result.outcome));
                if !result.notes.is_empty() {
                    status.set_description(result.notes.join("\n"));
                }
                status
            }
        };
        let mut case = TestCase::new(result.name.as_str(), status);
        case.set_classname("vmunit");
        case.set_time(result.duration);
        // Each BENCH measurement as a property: bench.<name> = "<value> <unit>".
        case.add_properties(
            result
                .benches
                .iter()
                .map(|bench| quick_junit::Property::new(bench.property_name(), bench.value_text())),
        );
        total += result.duration;
        let mut out = String::new();
        for line in &result.report {
            out.push_str(&format!("{}: {}\n", line.kind.label(), line.text));
        }
        if let Some(log) = &result.log {
            out.push_str(&format!("--- {} ---\n", shown(log)));
            out.push_str(&log_tail(log));
        }
        if !out.is_empty() {
            case.set_system_out_lossy(out.as_bytes());
        }
        suite.add_test_case(case);
    }
    suite.set_time(total);
    let mut report = Report::new("vmunit");
    report.add_test_suite(suite);
    // A run with subtests also gets a suite of its own: one testcase per subtest.
    for result in results.iter().filter(|result| !result.subtests.is_empty()) {
        report.add_test_suite(subtest_suite(result));
    }
    let text = report
        .to_string()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    std::fs::write(path, text)
}

/// The JUnit suite of a run's subtests: each subtest's report lines are those under its
/// prefix (`subtest: ...`); it failed if one of them did, and was skipped if all were.
fn subtest_suite(result: &TestResult) -> quick_junit::TestSuite {
    use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(result.name.as_str());
    for subtest in &result.subtests {
        let prefix = format!("{subtest}: ");
        let lines: Vec<&GuestLine> = result
            .report
            .iter()
            .filter(|line| line.text.starts_with(&prefix))
            .collect();
        let failed = lines
            .iter()
            .find(|line| matches!(line.kind, LineKind::Fail | LineKind::UnexpectedPass));
        let status = if let Some(line) = failed {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(line.text.as_str());
            status
        } else if lines.is_empty() || lines.iter().all(|line| line.kind == LineKind::Skip) {
            // No line at all: not selected, or the run ended before it.
            let mut status = TestCaseStatus::skipped();
            status.set_message(if lines.is_empty() {
                "no report line"
            } else {
                "skipped"
            });
            status
        } else {
            TestCaseStatus::success()
        };
        let mut case = TestCase::new(subtest.as_str(), status);
        case.set_classname(result.name.as_str());
        let out: String = lines
            .iter()
            .map(|line| format!("{}: {}\n", line.kind.label(), line.text))
            .collect();
        if !out.is_empty() {
            case.set_system_out_lossy(out.as_bytes());
        }
        suite.add_test_case(case);
    }
    suite
}

/// A JUnit target path checked to be writable before anything runs.
pub fn check_writable(path: &Path) -> Result<PathBuf, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|_| path.to_path_buf())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        assert_eq!(
            parse_report_line("PASS: msr: EFER"),
            Some(GuestLine {
                kind: LineKind::Pass,
                text: "msr: EFER".into()
            })
        );
        assert_eq!(
            parse_report_line("  XFAIL: a").map(|line| line.kind),
            Some(LineKind::ExpectedFail)
        );
        assert_eq!(
            parse_report_line("KFAIL: b").map(|line| line.kind),
            Some(LineKind::KnownFail)
        );
        assert_eq!(parse_report_line("PASS selftest (3 tests)"), None);
        assert_eq!(parse_report_line("SUMMARY: 3 tests"), None);
        assert_eq!(parse_report_line("PASSED: x"), None);
    }

    #[test]
    fn colour_and_escapes() {
        let outcome = Outcome::Fail { reason: "x".into() };
        assert_eq!(display_line("t", &outcome, false), "FAIL t (x)");
        assert_eq!(display_line("t", &outcome, true), "\x1b[31mFAIL\x1b[0m t (x)");
        assert_eq!(tap_escape("a # b"), "a \\# b");
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

    #[test]
    fn junit_nests_subtests() {
        let directory = tempfile::tempdir().unwrap();
        let line = |kind: LineKind, text: &str| GuestLine {
            kind,
            text: text.into(),
        };
        let results = [TestResult {
            report: vec![
                line(LineKind::Pass, "first: holds"),
                line(LineKind::Fail, "second: breaks"),
                line(LineKind::Skip, "third: ignored"),
            ],
            subtests: vec!["first".into(), "second".into(), "third".into(), "fourth".into()],
            ..TestResult::not_run(
                "t",
                Outcome::Fail {
                    reason: "1 unexpected failures".into(),
                },
            )
        }];
        let path = directory.path().join("junit.xml");
        write_junit(&path, &results).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(
            xml.contains(r#"<testsuite name="t" tests="4" skipped="2" errors="0" failures="1">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<testcase name="first" classname="t">"#), "{xml}");
        assert!(xml.contains(r#"<failure message="second: breaks""#), "{xml}");
        assert!(xml.contains(r#"<skipped message="no report line""#), "{xml}");
    }

    #[test]
    fn benches_in_junit_and_json() {
        let directory = tempfile::tempdir().unwrap();
        let bench = |line: &str| crate::bench::parse_bench_line(line).unwrap().unwrap();
        let results = [TestResult {
            benches: vec![bench("BENCH: cpuid=1234 cycles"), bench("BENCH: ipi=2.5 ns")],
            ..TestResult::not_run("b", Outcome::Pass { summary: None })
        }];
        let path = directory.path().join("junit.xml");
        write_junit(&path, &results).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(
            xml.contains(
                "<properties>\n                <property name=\"bench.cpuid\" value=\"1234 cycles\"/>\n                \
                 <property name=\"bench.ipi\" value=\"2.5 ns\"/>\n            </properties>"
            ),
            "{xml}"
        );
        let without = [TestResult::not_run("p", Outcome::Pass { summary: None })];
        write_junit(&path, &without).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("<properties>"));
    }

    #[test]
    fn junit() {
        let directory = tempfile::tempdir().unwrap();
        let log = directory.path().join("f.log");
        std::fs::write(&log, "qemu ...\nFAIL: x < y\n").unwrap();
        let results = [
            TestResult {
                report: vec![GuestLine {
                    kind: LineKind::Fail,
                    text: "x < y".into(),
                }],
                log: Some(log),
                duration: Duration::from_millis(1500),
                ..TestResult::not_run(
                    "f",
                    Outcome::Fail {
                        reason: "1 unexpected failures".into(),
                    },
                )
            },
            TestResult::not_run(
                "s",
                Outcome::Skip {
                    reason: "kvm only".into(),
                },
            ),
            TestResult::not_run("p", Outcome::Pass { summary: None }),
        ];
        let path = directory.path().join("junit.xml");
        write_junit(&path, &results).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(
            xml.contains("tests=\"3\"") && xml.contains("failures=\"1\"") && xml.contains("skipped=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"f\" classname=\"vmunit\" time=\"1.500\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"1 unexpected failures\" type=\"fail\""),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"kvm only\""), "{xml}");
        assert!(xml.contains("FAIL: x &lt; y"), "{xml}");
    }
}
