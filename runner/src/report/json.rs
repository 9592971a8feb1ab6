//! JSON lines (`--format json`): one object per event, from `#[derive(Serialize)]` types. The
//! fields of each object are in alphabetical order.

use serde::Serialize;

use crate::bench::Bench;
use crate::classify::{OutcomeKind, TestResult, Verdict};
use crate::guest_line::Label;
use crate::report::{Event, Reporter};
use crate::workspace::shown;

/// The `event` field: which event an object is.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Message,
    Start,
    Report,
    End,
    Summary,
}

/// A line of the runner's own.
#[derive(Serialize)]
struct Message<'a> {
    event: Kind,
    text: &'a str,
}

/// A run started.
#[derive(Serialize)]
struct Start<'a> {
    accel: &'a str,
    arch: &'a str,
    command: &'a str,
    event: Kind,
    name: &'a str,
}

/// A guest report line.
#[derive(Serialize)]
struct Report<'a> {
    event: Kind,
    name: &'a str,
    #[serde(serialize_with = "label")]
    result: Label,
    text: &'a str,
}

/// A report line's label as the guest prints it.
fn label<S: serde::Serializer>(label: &Label, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(label.as_str())
}

/// A run finished.
#[derive(Serialize)]
struct End<'a> {
    benches: &'a [Bench],
    detail: Option<String>,
    duration_secs: f64,
    event: Kind,
    log: Option<String>,
    name: &'a str,
    notes: &'a [String],
    outcome: OutcomeKind,
    verdict: Verdict,
}

/// The totals; `interrupted` (present only when the invocation was interrupted) counts the
/// runs stopped or not started.
#[derive(Serialize)]
struct Summary {
    event: Kind,
    failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    interrupted: Option<usize>,
    passed: usize,
    skipped: usize,
}

/// Prints JSON lines.
#[derive(Debug, Default)]
pub struct JsonReporter;

fn print(object: &impl Serialize) {
    if let Ok(line) = serde_json::to_string(object) {
        println!("{line}");
    }
}

/// Seconds with millisecond precision.
fn seconds(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

fn end(result: &TestResult) -> End<'_> {
    End {
        benches: &result.benches,
        detail: result.outcome.detail(),
        duration_secs: seconds(result.duration),
        event: Kind::End,
        log: result.log.as_deref().map(shown),
        name: &result.name,
        notes: &result.notes,
        outcome: result.outcome.kind(),
        verdict: result.outcome.verdict(),
    }
}

impl Reporter for JsonReporter {
    fn event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Message { text } => print(&Message {
                event: Kind::Message,
                text,
            }),
            Event::Started {
                name,
                arch,
                accel,
                command,
            } => print(&Start {
                accel: accel.name(),
                arch: arch.name(),
                command,
                event: Kind::Start,
                name,
            }),
            Event::GuestLine { name, line } => print(&Report {
                event: Kind::Report,
                name,
                result: line.label,
                text: &line.text,
            }),
            Event::Finished { result } => print(&end(result)),
            Event::Summary {
                totals, interrupted, ..
            } => print(&Summary {
                event: Kind::Summary,
                failed: totals.failed,
                interrupted: interrupted.then_some(totals.interrupted),
                passed: totals.passed,
                skipped: totals.skipped,
            }),
            Event::Differential { comparison } => print(&super::differential::json_object(comparison)),
            Event::Begin { .. } | Event::DryRun { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Outcome;

    #[test]
    fn end_object() {
        let bench = crate::bench::parse_bench_line("BENCH: ipi=2.5 ns")
            .unwrap()
            .unwrap();
        let result = TestResult {
            benches: vec![bench],
            ..TestResult::not_run("b", Outcome::Skip { reason: "r".into() })
        };
        assert_eq!(
            serde_json::to_string(&end(&result)).unwrap(),
            r#"{"benches":[{"name":"ipi","value":2.5,"unit":"ns"}],"detail":"r","duration_secs":0.0,"event":"end","log":null,"name":"b","notes":[],"outcome":"skip","verdict":"SKIP"}"#
        );
    }
}
