//! TAP version 13 (`--tap`): a test point per run, the guest's report lines as a subtest, a
//! YAML block under a failure; an interrupted stream ends with `Bail out!`.

use std::fmt::Write as _;

use crate::classify::{TestResult, Verdict};
use crate::guest_line::{Label, ReportLine};
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
            Event::Differential { comparison } => {
                for line in super::differential::plain_lines(comparison) {
                    println!("# {line}");
                }
            }
            Event::DryRun { .. } | Event::Started { .. } | Event::GuestLine { .. } => {}
        }
    }
}

/// A TAP description or directive reason: `#` and `\` escaped as TAP wants, on one line.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('#', "\\#")
        .replace(['\n', '\r'], " ")
}

/// A YAML double-quoted scalar, with only the escapes that both YAML and Perl's YAMLish
/// reader (`prove`) decode: `\"`, `\\`, `\n`, `\t`, `\r` and `\xHH` for other controls.
fn quoted(text: &str) -> String {
    let mut scalar = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => scalar.push_str("\\\""),
            '\\' => scalar.push_str("\\\\"),
            '\n' => scalar.push_str("\\n"),
            '\t' => scalar.push_str("\\t"),
            '\r' => scalar.push_str("\\r"),
            control if control.is_control() => {
                let _ = write!(scalar, "\\x{:02x}", u32::from(control) & 0xff);
            }
            other => scalar.push(other),
        }
    }
    scalar.push('"');
    scalar
}

/// The guest's report lines as a subtest (Test::More's indented form, which TAP version 14
/// later standardised): its test points numbered from 1, INFO lines as comments, its plan last.
/// A run whose report has no test point (INFO lines only) has no subtest: the lines become
/// comments of the stream.
fn subtest(name: &str, report: &[ReportLine]) {
    let points = report.iter().filter(|line| line.label != Label::Info).count();
    if points == 0 {
        for line in report {
            println!("# {}", escape(&line.text));
        }
        return;
    }
    println!("    # Subtest: {}", escape(name));
    let mut point = 0;
    for line in report {
        let text = escape(&line.text);
        if line.label != Label::Info {
            point += 1;
        }
        match line.label {
            Label::Pass => println!("    ok {point} - {text}"),
            Label::Fail => println!("    not ok {point} - {text}"),
            Label::Skip => println!("    ok {point} - {text} # SKIP"),
            Label::ExpectedFail => println!("    not ok {point} - {text} # TODO expected failure (XFAIL)"),
            Label::KnownFail => println!("    not ok {point} - {text} # TODO known failure (KFAIL)"),
            Label::UnexpectedPass => println!("    not ok {point} - {text} (XPASS: unexpected pass)"),
            Label::Info => println!("    # {text}"),
        }
    }
    println!("    1..{points}");
}

/// One run: its subtest, then its test point; a failure has a YAML block whose values are
/// YAML scalars (the notes a sequence of them), never TAP-escaped.
fn test_point(number: usize, result: &TestResult) {
    subtest(&result.name, &result.report);
    let name = escape(&result.name);
    let detail = result.outcome.detail();
    match result.outcome.verdict() {
        Verdict::Pass => match detail {
            Some(detail) => println!("ok {number} - {name} ({})", escape(&detail)),
            None => println!("ok {number} - {name}"),
        },
        Verdict::Skip => println!(
            "ok {number} - {name} # SKIP {}",
            escape(&detail.unwrap_or_default())
        ),
        Verdict::Fail | Verdict::Interrupted => {
            println!("not ok {number} - {name}");
            println!("  ---");
            println!("  outcome: {}", result.outcome.kind());
            println!("  message: {}", quoted(&detail.unwrap_or_default()));
            // One scalar, a line per note: Perl's YAMLish reader takes a sequence item
            // such as `- "FAIL: x"` for a mapping.
            if !result.notes.is_empty() {
                println!("  notes: {}", quoted(&result.notes.join("\n")));
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
        assert_eq!(escape("a\\b\nc"), "a\\\\b c");
        assert_eq!(quoted("a \"b\""), "\"a \\\"b\\\"\"");
        assert_eq!(quoted("#UD\\\n\u{1b}"), "\"#UD\\\\\\n\\x1b\"");
    }
}
