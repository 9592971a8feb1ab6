//! TAP version 13 (`--tap`): a test point per run, the guest's report lines as a subtest, a
//! YAML block under a failure; an interrupted stream ends with `Bail out!`.

use crate::classify::{TestResult, Verdict};
use crate::guest_line::Label;
use crate::report::{Event, Reporter, interrupted_line, slowest_line};
use crate::workspace::shown;

/// Prints TAP version 13.
#[derive(Debug, Default)]
pub struct TapReporter {
    /// Test points printed so far.
    points: usize,
}

impl Reporter for TapReporter {
    fn event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Begin { total } => {
                println!("TAP version 13");
                println!("1..{total}");
            }
            Event::Message { text } => println!("# {text}"),
            Event::Finished { result } => {
                self.points += 1;
                test_point(self.points, result);
            }
            Event::Summary {
                results,
                totals,
                interrupted,
            } => {
                // TAP's own way to end a stream early: what follows the plan's last point
                // did not run.
                if interrupted {
                    println!("# {}", interrupted_line(totals));
                    println!("Bail out! interrupted");
                    return;
                }
                if let Some(slowest) = slowest_line(results) {
                    println!("# {slowest}");
                }
                println!("# {totals}");
            }
            Event::DryRun { .. } | Event::Started { .. } | Event::GuestLine { .. } => {}
        }
    }
}

/// TAP descriptions may not contain an unescaped `#`.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('#', "\\#")
}

/// A YAML scalar: a JSON string is one.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn test_point(number: usize, result: &TestResult) {
    if !result.report.is_empty() {
        println!("    # Subtest: {}", escape(&result.name));
        for (index, line) in result.report.iter().enumerate() {
            let text = escape(&line.text);
            let point = index + 1;
            match line.label {
                Label::Pass => println!("    ok {point} - {text}"),
                Label::Fail => println!("    not ok {point} - {text}"),
                Label::Skip => println!("    ok {point} - {text} # SKIP"),
                Label::ExpectedFail => {
                    println!("    not ok {point} - {text} # TODO expected failure (XFAIL)")
                }
                Label::KnownFail => println!("    not ok {point} - {text} # TODO known failure (KFAIL)"),
                Label::UnexpectedPass => println!("    not ok {point} - {text} (XPASS: unexpected pass)"),
                Label::Info => println!("    # {text}"),
            }
        }
        println!("    1..{}", result.report.len());
    }
    let name = escape(&result.name);
    let detail = result.outcome.detail().map(|detail| escape(&detail));
    match (result.outcome.verdict(), detail) {
        (Verdict::Pass, Some(detail)) => println!("ok {number} - {name} ({detail})"),
        (Verdict::Pass, None) => println!("ok {number} - {name}"),
        (Verdict::Skip, detail) => println!("ok {number} - {name} # SKIP {}", detail.unwrap_or_default()),
        (Verdict::Fail | Verdict::Interrupted, detail) => {
            println!("not ok {number} - {name}");
            println!("  ---");
            println!("  outcome: {}", result.outcome.kind());
            println!("  message: {}", quoted(&detail.unwrap_or_default()));
            for note in &result.notes {
                println!("  # {note}");
            }
            if let Some(log) = &result.log {
                println!("  log: {}", quoted(&shown(log)));
            }
            println!("  duration_ms: {}", result.duration.as_millis());
            println!("  ...");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape("a # b"), "a \\# b");
        assert_eq!(quoted("a \"b\""), "\"a \\\"b\\\"\"");
    }
}
