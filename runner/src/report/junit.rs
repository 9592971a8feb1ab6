//! The JUnit XML report (`--junit FILE`): one testcase per run, with its report lines and log
//! in system-out; a run with subtests also gets a suite of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{TestResult, Verdict};
use crate::guest_line::{Label, ReportLine};
use crate::logdir::WriteFailures;
use crate::report::{Event, Reporter};
use crate::workspace::shown;

/// How many bytes of a log's end go into the JUnit report's system-out.
pub const JUNIT_LOG_BYTES: u64 = 256 * 1024;

/// Writes the JUnit report when the invocation ends (not when it was interrupted).
#[derive(Debug)]
pub struct JunitReporter {
    path: PathBuf,
    failures: Arc<WriteFailures>,
}

impl JunitReporter {
    /// A reporter that writes to `path`; a write error is noted in `failures`.
    pub fn new(path: &Path, failures: &Arc<WriteFailures>) -> JunitReporter {
        JunitReporter {
            path: path.to_path_buf(),
            failures: Arc::clone(failures),
        }
    }
}

impl Reporter for JunitReporter {
    fn event(&mut self, event: &Event<'_>) {
        if let Event::Summary {
            results,
            interrupted: false,
            ..
        } = *event
            && let Err(error) = write_junit(&self.path, results)
        {
            self.failures.record(&self.path, &error);
        }
    }
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
            Verdict::Fail | Verdict::Interrupted => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(reason);
                status.set_type(result.outcome.kind().to_string());
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
            out.push_str(&format!("{line}\n"));
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
        let lines: Vec<&ReportLine> = result
            .report
            .iter()
            .filter(|line| line.text.starts_with(&prefix))
            .collect();
        let failed = lines
            .iter()
            .find(|line| matches!(line.label, Label::Fail | Label::UnexpectedPass));
        let status = if let Some(line) = failed {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(line.text.as_str());
            status
        } else if lines.is_empty() || lines.iter().all(|line| line.label == Label::Skip) {
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
        let out: String = lines.iter().map(|line| format!("{line}\n")).collect();
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
    use crate::classify::Outcome;

    #[test]
    fn junit_nests_subtests() {
        let directory = tempfile::tempdir().unwrap();
        let line = |label: Label, text: &str| ReportLine {
            label,
            text: text.into(),
        };
        let results = [TestResult {
            report: vec![
                line(Label::Pass, "first: holds"),
                line(Label::Fail, "second: breaks"),
                line(Label::Skip, "third: ignored"),
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
                report: vec![ReportLine {
                    label: Label::Fail,
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
