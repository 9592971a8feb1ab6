//! The JUnit XML report (`--junit FILE`): one testcase per run, with its report lines and log
//! in system-out; a run with subtests also gets a suite of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{OutcomeKind, TestResult, Verdict};
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
    /// Each run's guest arguments, which select its subtests.
    arguments: HashMap<String, Vec<String>>,
    failures: Arc<WriteFailures>,
    /// The `--differential` suite, once the comparison arrived.
    differential: Option<Suite>,
}

impl JunitReporter {
    /// A reporter that writes to `path`; `arguments` are each run's guest arguments; a write
    /// error is noted in `failures`.
    pub fn new(
        path: &Path,
        arguments: HashMap<String, Vec<String>>,
        failures: &Arc<WriteFailures>,
    ) -> JunitReporter {
        JunitReporter {
            path: path.to_path_buf(),
            arguments,
            failures: Arc::clone(failures),
            differential: None,
        }
    }
}

impl Reporter for JunitReporter {
    fn event(&mut self, event: &Event<'_>) {
        if let Event::Differential { comparison } = *event {
            self.differential = Some(super::differential::junit_suite(comparison));
        }
        if let Event::Summary {
            results,
            interrupted: false,
            ..
        } = *event
            && let Err(error) =
                write_junit_suites(&self.path, results, &self.arguments, self.differential.take())
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

/// How one testcase ended.
#[derive(Debug)]
pub(crate) enum Status {
    /// It passed.
    Success,
    /// It was skipped, for this reason.
    Skipped(String),
    /// It failed.
    Failure {
        /// The reason.
        message: String,
        /// The outcome's kind (`fail`, `crash`, `timeout`, ...).
        kind: String,
        /// The notes under the failure, one a line.
        description: String,
    },
}

/// One `<testcase>`.
#[derive(Debug)]
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) classname: String,
    pub(crate) time: Option<Duration>,
    pub(crate) status: Status,
    pub(crate) out: String,
}

/// One `<testsuite>`: its cases and its `<properties>`.
#[derive(Debug)]
pub(crate) struct Suite {
    pub(crate) name: String,
    pub(crate) time: Option<Duration>,
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) cases: Vec<Case>,
}

impl Suite {
    fn failures(&self) -> usize {
        self.cases
            .iter()
            .filter(|case| matches!(case.status, Status::Failure { .. }))
            .count()
    }

    fn skipped(&self) -> usize {
        self.cases
            .iter()
            .filter(|case| matches!(case.status, Status::Skipped(_)))
            .count()
    }
}

/// Text as XML 1.0 allows it: the characters it forbids (most C0 controls, surrogates,
/// U+FFFE and U+FFFF) replaced by U+FFFD.
fn xml_text(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            '\t' | '\n' | '\r' => character,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => char::REPLACEMENT_CHARACTER,
            other => other,
        })
        .collect()
}

/// Seconds with millisecond precision, the form the schemas' time type takes.
fn seconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

/// Writes the JUnit XML report of `results` to `path`: one testcase per run, its report
/// lines and log in system-out, a failure or skipped element with the reason; the BENCH
/// measurements as properties of the suite (`bench.<run>.<name>`); and a suite per run with
/// subtests (see [`subtest_suite`]). `arguments` are each run's guest arguments, which
/// select its subtests. The XML is valid under the common JUnit schema (Jenkins/Ant
/// junit-10.xsd): `<testsuites>` carries name, tests, failures, errors and time only, and
/// properties live in suites.
pub fn write_junit(
    path: &Path,
    results: &[TestResult],
    arguments: &HashMap<String, Vec<String>>,
) -> std::io::Result<()> {
    write_junit_suites(path, results, arguments, None)
}

/// [`write_junit`], with one more suite last (`--differential`'s).
fn write_junit_suites(
    path: &Path,
    results: &[TestResult],
    arguments: &HashMap<String, Vec<String>>,
    extra: Option<Suite>,
) -> std::io::Result<()> {
    let mut suite = Suite {
        name: "vmunit".into(),
        time: None,
        properties: Vec::new(),
        cases: Vec::new(),
    };
    let mut total = Duration::ZERO;
    for result in results {
        let reason = result.outcome.detail().unwrap_or_default();
        let status = match result.outcome.verdict() {
            Verdict::Pass => Status::Success,
            Verdict::Skip => Status::Skipped(reason),
            Verdict::Fail | Verdict::Interrupted => Status::Failure {
                message: reason,
                kind: result.outcome.kind().to_string(),
                description: result.notes.join("\n"),
            },
        };
        // Each BENCH measurement as a property: bench.<run>.<name> = "<value> <unit>".
        suite.properties.extend(
            result
                .benches
                .iter()
                .map(|bench| (bench.property_name(&result.name), bench.value_text())),
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
        suite.cases.push(Case {
            name: result.name.clone(),
            classname: "vmunit".into(),
            time: Some(result.duration),
            status,
            out,
        });
    }
    suite.time = Some(total);
    let mut suites = vec![suite];
    let no_arguments = Vec::new();
    for result in results.iter().filter(|result| !result.subtests.is_empty()) {
        let arguments = arguments.get(&result.name).unwrap_or(&no_arguments);
        if let Some(suite) = subtest_suite(result, arguments) {
            suites.push(suite);
        }
    }
    suites.extend(extra);
    std::fs::write(path, serialize(&suites, total)?)
}

/// The XML of `suites` under one `<testsuites>`.
fn serialize(suites: &[Suite], total: Duration) -> std::io::Result<Vec<u8>> {
    use quick_xml::Writer;
    use quick_xml::events::{BytesDecl, Event};
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 4);
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let tests: usize = suites.iter().map(|suite| suite.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    writer
        .create_element("testsuites")
        .with_attributes([
            ("name", "vmunit"),
            ("tests", &tests.to_string()),
            ("failures", &failures.to_string()),
            ("errors", "0"),
            ("time", &seconds(total)),
        ])
        .write_inner_content(|writer| {
            for suite in suites {
                let time = suite.time.map(seconds);
                let mut element = writer.create_element("testsuite").with_attributes([
                    ("name", suite.name.as_str()),
                    ("tests", &suite.cases.len().to_string()),
                    ("skipped", &suite.skipped().to_string()),
                    ("errors", "0"),
                    ("failures", &suite.failures().to_string()),
                ]);
                if let Some(time) = &time {
                    element = element.with_attribute(("time", time.as_str()));
                }
                element.write_inner_content(|writer| write_suite(writer, suite))?;
            }
            Ok(())
        })?;
    let mut bytes = writer.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

/// A suite's properties and testcases.
fn write_suite(writer: &mut quick_xml::Writer<Vec<u8>>, suite: &Suite) -> std::io::Result<()> {
    use quick_xml::events::BytesText;
    if !suite.properties.is_empty() {
        writer
            .create_element("properties")
            .write_inner_content(|writer| {
                for (name, value) in &suite.properties {
                    writer
                        .create_element("property")
                        .with_attributes([("name", xml_text(name).as_str()), ("value", &xml_text(value))])
                        .write_empty()?;
                }
                Ok(())
            })?;
    }
    for case in &suite.cases {
        let mut element = writer.create_element("testcase").with_attributes([
            ("name", xml_text(&case.name).as_str()),
            ("classname", &xml_text(&case.classname)),
        ]);
        if let Some(time) = case.time {
            element = element.with_attribute(("time", seconds(time).as_str()));
        }
        if matches!(case.status, Status::Success) && case.out.is_empty() {
            element.write_empty()?;
            continue;
        }
        element.write_inner_content(|writer| {
            match &case.status {
                Status::Success => {}
                Status::Skipped(message) => {
                    writer
                        .create_element("skipped")
                        .with_attribute(("message", xml_text(message).as_str()))
                        .write_empty()?;
                }
                Status::Failure {
                    message,
                    kind,
                    description,
                } => {
                    let failure = writer
                        .create_element("failure")
                        .with_attributes([("message", xml_text(message).as_str()), ("type", kind)]);
                    if description.is_empty() {
                        failure.write_empty()?;
                    } else {
                        failure.write_text_content(BytesText::new(&xml_text(description)))?;
                    }
                }
            }
            if !case.out.is_empty() {
                writer
                    .create_element("system-out")
                    .write_text_content(BytesText::new(&xml_text(&case.out)))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
/// Whether `subtest` is one that the guest `arguments` select: every one when no argument
/// names a subtest (arguments with `=` are settings), else those a glob argument matches.
fn selects(arguments: &[String], subtest: &str) -> bool {
    let mut patterns = arguments
        .iter()
        .filter(|argument| !argument.contains('='))
        .peekable();
    patterns.peek().is_none()
        || patterns.any(|pattern| {
            glob::Pattern::new(pattern).map_or(pattern == subtest, |glob| glob.matches(subtest))
        })
}

/// The JUnit suite of a run's subtests (`None` when none ran), one testcase per subtest that
/// the run's `arguments` selected and that ran, judged by the report lines under its prefix
/// (`subtest: ...`): failed if one of them did, skipped if all were, else passed (in a run
/// whose guest ran to its end, a subtest without a report line passed). When the run stopped the VM (a crash, timeout,
/// hypervisor or QEMU error), the subtest that was running (the first selected one after the
/// last that reported, else that one) is a failure with the run's reason, and the selected
/// subtests after it never ran and are left out.
fn subtest_suite(result: &TestResult, arguments: &[String]) -> Option<Suite> {
    let lines_of = |subtest: &str| -> Vec<&ReportLine> {
        let prefix = format!("{subtest}: ");
        result
            .report
            .iter()
            .filter(|line| line.text.starts_with(&prefix))
            .collect()
    };
    let selected: Vec<&String> = result
        .subtests
        .iter()
        .filter(|subtest| selects(arguments, subtest))
        .collect();
    let stopped = matches!(
        result.outcome.kind(),
        OutcomeKind::Timeout | OutcomeKind::Crash | OutcomeKind::HypervisorError | OutcomeKind::QemuError
    );
    // The guest ran to its end (its report lines say how each subtest fared).
    let finished = matches!(result.outcome.kind(), OutcomeKind::Pass | OutcomeKind::Fail);
    let last_reporting = selected.iter().rposition(|subtest| !lines_of(subtest).is_empty());
    let running = match last_reporting {
        _ if !stopped || selected.is_empty() => None,
        Some(index) if index + 1 < selected.len() => Some(index + 1),
        Some(index) => Some(index),
        None => Some(0),
    };
    let mut cases = Vec::new();
    for (index, subtest) in selected.iter().enumerate() {
        if running.is_some_and(|running| index > running) {
            break;
        }
        let lines = lines_of(subtest);
        let failed = lines
            .iter()
            .find(|line| matches!(line.label, Label::Fail | Label::UnexpectedPass));
        let status = if running == Some(index) {
            Status::Failure {
                message: format!(
                    "the VM stopped in this subtest: {}",
                    result.outcome.detail().unwrap_or_default()
                ),
                kind: result.outcome.kind().to_string(),
                description: result.notes.join("\n"),
            }
        } else if let Some(line) = failed {
            Status::Failure {
                message: line.text.clone(),
                kind: OutcomeKind::Fail.to_string(),
                description: String::new(),
            }
        } else if lines.is_empty() && !finished && running.is_none() {
            // A run skipped before its guest started ran no subtest; in a run that stopped,
            // those before the stop ran.
            continue;
        } else if !lines.is_empty() && lines.iter().all(|line| line.label == Label::Skip) {
            Status::Skipped(lines.last().map_or_else(String::new, |line| line.text.clone()))
        } else {
            Status::Success
        };
        cases.push(Case {
            name: (*subtest).clone(),
            classname: result.name.clone(),
            time: None,
            status,
            out: lines.iter().map(|line| format!("{line}\n")).collect(),
        });
    }
    (!cases.is_empty()).then(|| Suite {
        name: result.name.clone(),
        time: None,
        properties: Vec::new(),
        cases,
    })
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

    /// The constraints of the common JUnit schema (Jenkins/Ant junit-10.xsd) on `xml`: each
    /// element's allowed and required attributes, its allowed children, and the time format.
    /// Panics naming the first violation.
    fn check_junit_10(xml: &str) {
        use quick_xml::events::Event;
        let rules = |element: &str| -> (&[&str], &[&str], &[&str]) {
            match element {
                "testsuites" => (
                    &["name", "time", "tests", "failures", "errors"],
                    &[],
                    &["testsuite"],
                ),
                "testsuite" => (
                    &[
                        "name",
                        "tests",
                        "failures",
                        "errors",
                        "group",
                        "time",
                        "skipped",
                        "timestamp",
                        "hostname",
                        "id",
                        "package",
                        "file",
                        "log",
                        "url",
                    ],
                    &["name", "tests", "failures", "errors"],
                    &["testsuite", "properties", "testcase", "system-out", "system-err"],
                ),
                "properties" => (&[], &[], &["property"]),
                "property" => (&["name", "value"], &["name", "value"], &[]),
                "testcase" => (
                    &["name", "time", "classname", "group"],
                    &["name"],
                    &["skipped", "error", "failure", "system-out", "system-err"],
                ),
                "failure" | "error" | "skipped" => (&["type", "message"], &[], &[]),
                "system-out" | "system-err" => (&[], &[], &[]),
                other => panic!("<{other}> is no element of the schema: {xml}"),
            }
        };
        let time = |value: &str| {
            let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
            whole.bytes().all(|byte| byte.is_ascii_digit())
                && fraction.bytes().all(|byte| byte.is_ascii_digit())
        };
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut open: Vec<String> = Vec::new();
        loop {
            let (start, empty) = match reader.read_event().unwrap() {
                Event::Start(start) => (start, false),
                Event::Empty(start) => (start, true),
                Event::End(_) => {
                    open.pop();
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let name = String::from_utf8(start.name().as_ref().to_vec()).unwrap();
            match open.last() {
                Some(parent) => assert!(
                    rules(parent).2.contains(&name.as_str()),
                    "<{name}> in <{parent}>: {xml}"
                ),
                None => assert_eq!(name, "testsuites", "{xml}"),
            }
            let (allowed, required, _) = rules(&name);
            let mut seen = Vec::new();
            for attribute in start.attributes() {
                let attribute = attribute.unwrap();
                let key = String::from_utf8(attribute.key.as_ref().to_vec()).unwrap();
                assert!(allowed.contains(&key.as_str()), "<{name} {key}>: {xml}");
                if key == "time" {
                    let value = String::from_utf8_lossy(&attribute.value);
                    assert!(time(&value), "<{name} time=\"{value}\">: {xml}");
                }
                seen.push(key);
            }
            for key in required {
                assert!(seen.iter().any(|seen| seen == key), "<{name}> lacks {key}: {xml}");
            }
            if !empty {
                open.push(name);
            }
        }
    }

    fn line(label: Label, text: &str) -> ReportLine {
        ReportLine {
            label,
            text: text.into(),
        }
    }

    fn written(results: &[TestResult], arguments: &[(&str, &[&str])]) -> String {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("junit.xml");
        let arguments = arguments
            .iter()
            .map(|(name, words)| {
                (
                    name.to_string(),
                    words.iter().map(|word| word.to_string()).collect(),
                )
            })
            .collect();
        write_junit(&path, results, &arguments).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        check_junit_10(&xml);
        xml
    }

    #[test]
    fn junit_nests_subtests() {
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
        let xml = written(&results, &[]);
        assert!(
            xml.contains(r#"<testsuite name="t" tests="4" skipped="1" errors="0" failures="1">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<testcase name="first" classname="t">"#), "{xml}");
        assert!(
            xml.contains(r#"<failure message="second: breaks" type="fail"/>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<skipped message="third: ignored"/>"#), "{xml}");
        // The run finished, so the subtest without a report line ran and passed.
        assert!(
            xml.contains(r#"<testcase name="fourth" classname="t"/>"#),
            "{xml}"
        );
    }

    /// Only the subtests that were selected and ran are listed; the one that was running
    /// when the VM stopped is a failure, not skipped.
    #[test]
    fn junit_lists_the_subtests_that_ran() {
        let stopped = |report: Vec<ReportLine>| TestResult {
            report,
            subtests: vec!["alpha".into(), "beta".into(), "gamma".into()],
            ..TestResult::not_run(
                "r",
                Outcome::HypervisorError {
                    reason: "KVM internal error".into(),
                },
            )
        };
        // One subtest selected by argument, and it stopped the VM before any report line.
        let xml = written(&[stopped(Vec::new())], &[("r", &["beta", "verbose=1"])]);
        assert!(
            xml.contains(r#"<testsuite name="r" tests="1" skipped="0" errors="0" failures="1">"#),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<failure message="the VM stopped in this subtest: hypervisor error: KVM internal error" type="hypervisor-error"/>"#
            ),
            "{xml}"
        );
        assert!(!xml.contains("alpha") && !xml.contains("gamma"), "{xml}");
        // Every subtest selected: the first reported, the second stopped the VM, the third
        // never ran.
        let xml = written(&[stopped(vec![line(Label::Pass, "alpha: holds")])], &[]);
        assert!(
            xml.contains(r#"tests="2" skipped="0" errors="0" failures="1""#),
            "{xml}"
        );
        assert!(xml.contains(r#"<testcase name="beta" classname="r">"#), "{xml}");
        assert!(!xml.contains("gamma"), "{xml}");
        // No subtest ran (the run was skipped): no suite.
        let skipped = TestResult {
            subtests: vec!["alpha".into()],
            ..TestResult::not_run(
                "s",
                Outcome::Skip {
                    reason: "tcg only".into(),
                },
            )
        };
        let xml = written(&[skipped], &[]);
        assert_eq!(xml.matches("<testsuite ").count(), 1, "{xml}");
    }

    #[test]
    fn benches_in_junit_and_json() {
        let bench = |line: &str| crate::bench::parse_bench_line(line).unwrap().unwrap();
        let results = [TestResult {
            benches: vec![bench("BENCH: cpuid=1234 cycles"), bench("BENCH: ipi=2.5 ns")],
            ..TestResult::not_run("b", Outcome::Pass { summary: None })
        }];
        let xml = written(&results, &[]);
        assert!(
            xml.contains(
                "<properties>\n            <property name=\"bench.b.cpuid\" value=\"1234 cycles\"/>\n            \
                 <property name=\"bench.b.ipi\" value=\"2.5 ns\"/>\n        </properties>"
            ),
            "{xml}"
        );
        let without = [TestResult::not_run("p", Outcome::Pass { summary: None })];
        assert!(!written(&without, &[]).contains("<properties>"));
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
        let xml = written(&results, &[]);
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

    /// The `--differential` suite validates under the schema: a failed compared run (a new
    /// disagreement), a passed one, a skipped run not compared.
    #[test]
    fn junit_differential_suite() {
        use crate::differential::{Comparison, Disagreement, NotCompared, Scope, SideVerdict, Standing};
        let side = |label: &str, verdict: &str| SideVerdict {
            side: label.into(),
            verdict: verdict.into(),
            text: Some(format!("{verdict}: a < b")),
            log: Some(format!("logs/t@{label}.log")),
        };
        let comparison = Comparison {
            sides: [("x86_64".to_owned(), ["kvm".to_owned(), "tcg".to_owned()])].into(),
            compared: vec!["t".into(), "u".into()],
            agreed_lines: 3,
            new: vec![Disagreement {
                test: "t".into(),
                scope: Scope::Line,
                key: "a < b".into(),
                occurrence: 1,
                standing: Standing::New,
                sides: vec![side("kvm", "PASS"), side("tcg", "FAIL")],
            }],
            declared: Vec::new(),
            one_sided: Vec::new(),
            not_compared: vec![NotCompared {
                test: "arm".into(),
                reason: "aarch64".into(),
            }],
        };
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("junit.xml");
        let results = [TestResult::not_run("p", Outcome::Pass { summary: None })];
        let suite = crate::report::differential::junit_suite(&comparison);
        write_junit_suites(&path, &results, &HashMap::new(), Some(suite)).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        check_junit_10(&xml);
        assert!(
            xml.contains(
                "<testsuite name=\"differential\" tests=\"3\" skipped=\"1\" errors=\"0\" failures=\"1\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"u\" classname=\"vmunit.differential\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("tcg: FAIL (FAIL: a &lt; b); log: logs/t@tcg.log"),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"aarch64\"/>"), "{xml}");
    }
}
