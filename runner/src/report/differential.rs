//! The differential comparison in each output (`--differential`, see `crate::differential`):
//! plain lines (TAP prints them as comments), a JSON object, and a JUnit suite with a testcase
//! per compared run.

use serde::Serialize;

use crate::differential::{Comparison, Disagreement, Scope};

/// The plain lines of a comparison: a heading, each new disagreement, each declared one, the
/// runs not compared, and a count line.
pub fn plain_lines(comparison: &Comparison) -> Vec<String> {
    let mut lines = vec![format!(
        "differential ({}): {} runs compared, {} lines agree, {} new disagreements, {} declared, {} lines on one side only",
        sides_heading(comparison),
        comparison.compared.len(),
        comparison.agreed_lines,
        comparison.new.len(),
        comparison.declared.len(),
        comparison.one_sided.len()
    )];
    for (heading, list) in [("new", &comparison.new), ("declared", &comparison.declared)] {
        if list.is_empty() {
            continue;
        }
        lines.push(format!("{heading} disagreements:"));
        for disagreement in list {
            lines.extend(disagreement_lines(disagreement));
        }
    }
    lines.extend(one_sided_lines(comparison));
    for run in &comparison.not_compared {
        lines.push(format!("not compared: {} ({})", run.test, run.reason));
    }
    lines
}

/// What the comparison compared: `kvm vs tcg`, and `gicv3 vs gicv2` when aarch64 runs were.
fn sides_heading(comparison: &Comparison) -> String {
    let headings: Vec<String> = comparison
        .sides
        .values()
        .map(|sides| sides.join(" vs "))
        .collect();
    if headings.is_empty() {
        "nothing compared".to_owned()
    } else {
        headings.join("; ")
    }
}

/// The lines printed on one side only, a line per run: how many on each side, the first key
/// of each (every one is in the JSON object).
fn one_sided_lines(comparison: &Comparison) -> Vec<String> {
    let mut tests: Vec<&str> = Vec::new();
    for disagreement in &comparison.one_sided {
        if !tests.contains(&disagreement.test.as_str()) {
            tests.push(&disagreement.test);
        }
    }
    tests
        .iter()
        .map(|test| {
            let counts: Vec<String> = (0..2)
                .filter_map(|side| {
                    let present: Vec<&Disagreement> = comparison
                        .one_sided
                        .iter()
                        .filter(|each| {
                            each.test == *test && each.sides.get(side).is_some_and(|one| one.text.is_some())
                        })
                        .collect();
                    let first = present.first()?;
                    let label = &first.sides[side].side;
                    Some(format!("{label} {} ({})", present.len(), first.key))
                })
                .collect();
            format!("one side only: {test}: {}", counts.join(", "))
        })
        .collect()
}

/// A disagreement: its run and key, then a line per side (verdict, text, log).
fn disagreement_lines(disagreement: &Disagreement) -> Vec<String> {
    let occurrence = if disagreement.occurrence > 1 {
        format!(" [#{}]", disagreement.occurrence)
    } else {
        String::new()
    };
    let what = match disagreement.scope {
        Scope::Line => format!("{}: {}{occurrence}", disagreement.test, disagreement.key),
        Scope::Run => format!("{}: the run", disagreement.test),
    };
    let mut lines = vec![format!("  {what}")];
    for side in &disagreement.sides {
        let mut line = format!("    {}: {}", side.side, side.verdict);
        if let Some(text) = &side.text {
            line.push_str(&format!(" ({text})"));
        }
        if let Some(log) = &side.log {
            line.push_str(&format!("; log: {log}"));
        }
        lines.push(line);
    }
    lines
}

/// The `{"event":"differential", ...}` JSON object: the comparison's fields after `event`.
#[derive(Serialize)]
pub struct JsonObject<'a> {
    event: &'static str,
    #[serde(flatten)]
    comparison: &'a Comparison,
}

/// The JSON object of `comparison`.
pub fn json_object(comparison: &Comparison) -> JsonObject<'_> {
    JsonObject {
        event: "differential",
        comparison,
    }
}

/// The JUnit suite `differential`: a testcase per compared run (`<run>`, classname
/// `vmunit.differential`), failed when it has a new disagreement, with every disagreement of
/// the run in system-out; and a skipped testcase per run not compared.
pub(crate) fn junit_suite(comparison: &Comparison) -> super::junit::Suite {
    use super::junit::{Case, Status, Suite};
    let mut cases = Vec::new();
    for test in &comparison.compared {
        let of_test = |list: &[Disagreement]| -> Vec<Disagreement> {
            list.iter()
                .filter(|disagreement| disagreement.test == *test)
                .cloned()
                .collect()
        };
        let new = of_test(&comparison.new);
        let declared = of_test(&comparison.declared);
        let one_sided = of_test(&comparison.one_sided);
        let mut out = String::new();
        for (heading, list) in [
            ("new", &new),
            ("declared", &declared),
            ("one side only", &one_sided),
        ] {
            for disagreement in list {
                out.push_str(&format!("{heading}:\n"));
                for line in disagreement_lines(disagreement) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        let status = if new.is_empty() {
            Status::Success
        } else {
            Status::Failure {
                message: format!(
                    "{} new disagreements between {}",
                    new.len(),
                    new[0]
                        .sides
                        .iter()
                        .map(|side| side.side.as_str())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
                kind: "disagreement".to_owned(),
                description: new
                    .iter()
                    .map(|disagreement| disagreement.key.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        };
        cases.push(Case {
            name: test.clone(),
            classname: "vmunit.differential".to_owned(),
            time: None,
            status,
            out,
        });
    }
    for run in &comparison.not_compared {
        cases.push(Case {
            name: run.test.clone(),
            classname: "vmunit.differential".to_owned(),
            time: None,
            status: Status::Skipped(run.reason.clone()),
            out: String::new(),
        });
    }
    Suite {
        name: "differential".to_owned(),
        time: None,
        properties: Vec::new(),
        cases,
    }
}
