//! Differential mode (`--differential`): each selected x86 run under both accelerators, KVM and
//! TCG, and its report lines compared. A guest's report lines are architectural, so they should
//! read the same whichever accelerator runs it: a line whose verdict differs points at a defect
//! in one of them. The plan's runs are paired here ([`pair_plan`]), both sides run in the same
//! worker pool as any run, and once every run is classified [`compare`] pairs their report
//! lines; the reporters print the [`Comparison`] (the `Differential` event).
//!
//! Pairing rule: a report line's key is its text after the label, cut before the first
//! `" (got "`, or else without one trailing parenthesized group (`"... (DR6 0x4ff0)"`); those
//! hold values observed on the host, which may differ. Lines of a run with the same key are
//! paired in print order (the n-th with the n-th); the lines left are then paired the same
//! way by their key with every number masked (`0x1f`, `42`: an address or a count in the
//! text). A line with no partner on the other side is listed apart (its verdict there
//! `absent`), as new when it is an unexpected failure.

use serde::Serialize;

use crate::classify::{OutcomeKind, TestResult, Verdict};
use crate::config::{Accel, Arch};
use crate::error::AppError;
use crate::guest_line::Label;
use crate::options::Options;
use crate::plan::{self, Decision, Plan, PlannedRun};
use crate::workspace::shown;

/// The two accelerators compared, in the order they are shown.
pub const ACCELS: [Accel; 2] = [Accel::Kvm, Accel::Tcg];

/// Separates a run's name from the accelerator of its side (`msr@kvm`); no unittests.toml name
/// holds it, so a side's name never clashes with a run's.
pub const SIDE_SEPARATOR: char = '@';

/// What aarch64 runs are, in differential mode, and why.
pub const AARCH64_NOT_COMPARED: &str = "aarch64 runs under TCG only: run once, not compared \
     (another GIC version or CPU model changes the ID and GIC registers the guests report on, \
     so their lines may differ by design)";

/// The name of `name`'s side under `accel`: `name@kvm`.
pub fn side_name(name: &str, accel: Accel) -> String {
    format!("{name}{SIDE_SEPARATOR}{accel}")
}

/// The run a side's name belongs to (`msr@kvm` is `msr`); a name that is no side is itself.
pub fn run_of(name: &str) -> &str {
    name.split_once(SIDE_SEPARATOR).map_or(name, |(run, _)| run)
}

/// One run compared: its name and the names of its two sides, in [`ACCELS`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The unittests.toml run.
    pub name: String,
    /// The planned runs of each side.
    pub sides: [String; 2],
}

/// The pairs of a differential plan and what is not compared.
#[derive(Clone, Debug, Default)]
pub struct Pairs {
    /// The runs compared.
    pub pairs: Vec<Pair>,
    /// The runs run once and not compared, each with why.
    pub not_compared: Vec<(String, String)>,
}

/// Turns `plan` into a differential one: each x86 run becomes two, one per accelerator (each
/// side decided by the entry's skip rules under its accelerator, so an `accel =` or
/// `disabled_if` entry runs on one side only); aarch64 runs and runs skipped for their
/// architecture stay single. An error when an x86 run is selected and KVM is not usable.
pub fn pair_plan(options: &Options, plan: Plan) -> Result<(Plan, Pairs), AppError> {
    let mut pairs = Pairs::default();
    let mut runs = Vec::new();
    for item in plan.runs {
        let arch = match &item.decision {
            Decision::Nodefault => None,
            Decision::Run { arch, .. } => Some(*arch),
            Decision::Skip(_) => Some(item.entry.resolve_arch(&options.workspace, &plan.config)?),
        };
        let compared = arch == Some(Arch::X86_64) && options.arch.is_none_or(|wanted| wanted == Arch::X86_64);
        if !compared {
            if arch == Some(Arch::Aarch64) && matches!(item.decision, Decision::Run { .. }) {
                pairs
                    .not_compared
                    .push((item.entry.name.clone(), AARCH64_NOT_COMPARED.to_owned()));
            }
            runs.push(item);
            continue;
        }
        if !plan::kvm_usable() {
            return Err(AppError::Usage(format!(
                "--differential compares kvm with tcg, but /dev/kvm is not usable (selected x86 run: {}); \
                 select aarch64 runs only, or run on a KVM host",
                item.entry.name
            )));
        }
        let machine = plan::machine_for(options, &item.entry, Arch::X86_64).to_owned();
        let rules = plan::skip_rules(&item.entry, Some(&machine));
        let sides = ACCELS.map(|accel| side_name(&item.entry.name, accel));
        for accel in ACCELS {
            let decision = match rules.iter().find_map(|rule| rule.skips_here(accel)) {
                Some(reason) => Decision::Skip(reason),
                None => Decision::Run {
                    arch: Arch::X86_64,
                    accel,
                },
            };
            let mut entry = item.entry.clone();
            entry.name = side_name(&item.entry.name, accel);
            runs.push(PlannedRun {
                entry,
                explicit: item.explicit,
                decision,
            });
        }
        pairs.pairs.push(Pair {
            name: item.entry.name.clone(),
            sides,
        });
    }
    Ok((
        Plan {
            config: plan.config,
            runs,
        },
        pairs,
    ))
}

/// The plan stage of `--differential`: `plan` paired ([`pair_plan`]) when asked for, else as
/// it is (and no pairs).
pub fn plan_of(options: &Options, plan: Plan) -> Result<(Plan, Option<Pairs>), AppError> {
    if !options.differential {
        return Ok((plan, None));
    }
    let (plan, pairs) = pair_plan(options, plan)?;
    Ok((plan, Some(pairs)))
}

/// The key a report line is paired by (see the module's pairing rule).
pub fn pairing_key(text: &str) -> &str {
    if let Some(cut) = text.find(" (got ") {
        return text[..cut].trim_end();
    }
    let trimmed = text.trim_end();
    if trimmed.ends_with(')') {
        // The opening parenthesis that balances the last one.
        let mut depth = 0usize;
        for (index, character) in trimmed.char_indices().rev() {
            match character {
                ')' => depth += 1,
                '(' => {
                    depth -= 1;
                    if depth == 0 {
                        if index > 0 && trimmed[..index].ends_with(' ') {
                            return trimmed[..index].trim_end();
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    trimmed
}

/// Whether a disagreement is one the registry or the guest declares, or a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Declared: a KFAIL, XFAIL or SKIP on one side and no unexpected failure on the other, or
    /// a run that unittests.toml runs under one accelerator only.
    Declared,
    /// New: one side failed unexpectedly, or the two verdicts differ otherwise (`PASS`
    /// against nothing declared).
    New,
    /// A line printed under one accelerator only, and no unexpected failure: the guest took
    /// another path there (a CPU feature one CPU model lacks, a section skipped as a whole).
    /// Listed apart; no disagreement of verdicts.
    #[serde(rename = "one-sided")]
    OneSided,
}

/// What is compared: one report line, or the run as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A report line, by its key.
    Line,
    /// The run's outcome (or whether it ran at all).
    Run,
}

/// One side of a disagreement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SideVerdict {
    /// The accelerator.
    pub accel: String,
    /// The line's label (`PASS`, `FAIL`, ...) or `absent`; for the run, its outcome
    /// (`pass`, `fail`, `crash`, `skip`, ...).
    pub verdict: String,
    /// The whole line as the guest printed it (label included), or the run's detail.
    pub text: Option<String>,
    /// The side's log, when it ran.
    pub log: Option<String>,
}

/// Two sides that disagree.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Disagreement {
    /// The unittests.toml run.
    pub test: String,
    /// A line or the run.
    pub scope: Scope,
    /// The line's pairing key (for the run: its name).
    pub key: String,
    /// Which occurrence of the key, from 1 (lines with the same key pair in print order).
    pub occurrence: usize,
    /// Declared or new.
    pub standing: Standing,
    /// Each side, in [`ACCELS`] order.
    pub sides: Vec<SideVerdict>,
}

/// A run not compared, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotCompared {
    /// The run.
    pub test: String,
    /// Why.
    pub reason: String,
}

/// The differential stage's result: every disagreement, new ones apart from declared ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// The accelerators compared, in the order of each disagreement's sides.
    pub accels: Vec<String>,
    /// The runs compared.
    pub compared: Vec<String>,
    /// How many report lines were paired and agreed.
    pub agreed_lines: usize,
    /// New disagreements: each points at a defect of one accelerator (or of the test).
    pub new: Vec<Disagreement>,
    /// Disagreements unittests.toml or the guest declares.
    pub declared: Vec<Disagreement>,
    /// Lines printed under one accelerator only (without an unexpected failure).
    pub one_sided: Vec<Disagreement>,
    /// Runs not compared.
    pub not_compared: Vec<NotCompared>,
}

/// Whether a report line's label declares a difference: a known failure of the host, an
/// expected failure, or a check not made.
fn excuses(label: Label) -> bool {
    matches!(label, Label::KnownFail | Label::ExpectedFail | Label::Skip)
}

/// The run-level side of `result`.
fn run_side(accel: Accel, result: Option<&TestResult>) -> SideVerdict {
    SideVerdict {
        accel: accel.to_string(),
        verdict: result.map_or_else(|| "absent".to_owned(), |result| result.outcome.kind().to_string()),
        text: result.and_then(|result| result.outcome.detail()),
        log: result.and_then(|result| result.log.as_deref().map(shown)),
    }
}

/// The differential stage: compares each pair's classified sides in `results`.
pub fn compare(pairs: &Pairs, results: &[TestResult]) -> Comparison {
    let mut comparison = Comparison {
        accels: ACCELS.iter().map(ToString::to_string).collect(),
        not_compared: pairs
            .not_compared
            .iter()
            .map(|(test, reason)| NotCompared {
                test: test.clone(),
                reason: reason.clone(),
            })
            .collect(),
        ..Comparison::default()
    };
    for pair in &pairs.pairs {
        let sides = pair
            .sides
            .clone()
            .map(|side| results.iter().find(|result| result.name == side));
        let [Some(first), Some(second)] = sides else {
            // Interrupted before both sides ended: nothing to compare.
            comparison.not_compared.push(NotCompared {
                test: pair.name.clone(),
                reason: "a side did not finish".to_owned(),
            });
            continue;
        };
        comparison.compared.push(pair.name.clone());
        compare_pair(&pair.name, [first, second], &mut comparison);
    }
    comparison
}

fn push(comparison: &mut Comparison, disagreement: Disagreement) {
    match disagreement.standing {
        Standing::New => comparison.new.push(disagreement),
        Standing::Declared => comparison.declared.push(disagreement),
        Standing::OneSided => comparison.one_sided.push(disagreement),
    }
}

/// Compares one run's two sides: their outcomes, then their report lines.
fn compare_pair(name: &str, results: [&TestResult; 2], comparison: &mut Comparison) {
    let ran = results.map(|result| !(result.log.is_none() && result.outcome.verdict() == Verdict::Skip));
    if ran != [true, true] {
        if ran == [false, false] {
            return;
        }
        // Skipped before boot on one side: the plan's skip rules (accel =, disabled_if)
        // declare it.
        push(
            comparison,
            Disagreement {
                test: name.to_owned(),
                scope: Scope::Run,
                key: name.to_owned(),
                occurrence: 1,
                standing: Standing::Declared,
                sides: ACCELS
                    .iter()
                    .zip(results)
                    .map(|(accel, result)| run_side(*accel, Some(result)))
                    .collect(),
            },
        );
        return;
    }
    let count = |comparison: &Comparison| {
        comparison.new.len() + comparison.declared.len() + comparison.one_sided.len()
    };
    let before = count(comparison);
    compare_lines(name, results, comparison);
    let lines_disagree = count(comparison) > before;
    // The outcomes too, when the lines do not explain them: a side that did not end by the
    // guest's own verdict (a crash, a timeout, a hypervisor or QEMU error), or outcomes that
    // differ on the same lines (a SUMMARY or exit status the lines do not show).
    let kinds = results.map(|result| result.outcome.kind());
    let guest_verdict =
        |kind: OutcomeKind| matches!(kind, OutcomeKind::Pass | OutcomeKind::Fail | OutcomeKind::Skip);
    if kinds[0] != kinds[1] && (!lines_disagree || !kinds.iter().all(|kind| guest_verdict(*kind))) {
        let failed = results
            .iter()
            .any(|result| result.outcome.verdict() == Verdict::Fail);
        push(
            comparison,
            Disagreement {
                test: name.to_owned(),
                scope: Scope::Run,
                key: name.to_owned(),
                occurrence: 1,
                // A failed side is new; a run that skipped (its guest skipped everything) on
                // one side and passed on the other is declared by its SKIP lines.
                standing: if failed { Standing::New } else { Standing::Declared },
                sides: ACCELS
                    .iter()
                    .zip(results)
                    .map(|(accel, result)| run_side(*accel, Some(result)))
                    .collect(),
            },
        );
    }
}

/// `key` with every number masked (`0x1f`, `42` become `#`), for the second pairing stage.
pub fn masked_key(key: &str) -> String {
    let mut masked = String::with_capacity(key.len());
    let mut characters = key.chars().peekable();
    while let Some(character) = characters.next() {
        if !character.is_ascii_digit() {
            masked.push(character);
            continue;
        }
        let hex = character == '0' && characters.peek() == Some(&'x');
        if hex {
            characters.next();
        }
        while characters.peek().is_some_and(|next| {
            if hex {
                next.is_ascii_hexdigit() || *next == '_'
            } else {
                next.is_ascii_digit()
            }
        }) {
            characters.next();
        }
        masked.push('#');
    }
    masked
}

/// The occurrence of each line's key among the lines before it with the same key, from 1.
fn occurrences<K: std::hash::Hash + Eq>(keys: impl Iterator<Item = K>) -> Vec<usize> {
    let mut seen: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    keys.map(|key| {
        let count = seen.entry(key).or_default();
        *count += 1;
        *count
    })
    .collect()
}

/// Pairs the lines of two sides: first by (key, occurrence), then the lines left by (masked
/// key, occurrence among the lines left). Returns each first-side line's partner.
fn partners(keys: [&[&str]; 2]) -> Vec<Option<usize>> {
    let mut partner: Vec<Option<usize>> = vec![None; keys[0].len()];
    let mut taken = vec![false; keys[1].len()];
    for stage in 0..2 {
        let stage_key = |key: &str| {
            if stage == 0 {
                key.to_owned()
            } else {
                masked_key(key)
            }
        };
        let left = |side: usize, paired: &dyn Fn(usize) -> bool| -> Vec<(usize, String)> {
            (0..keys[side].len())
                .filter(|index| !paired(*index))
                .map(|index| (index, stage_key(keys[side][index])))
                .collect()
        };
        let first = left(0, &|index| partner[index].is_some());
        let second = left(1, &|index| taken[index]);
        let second_occurrences = occurrences(second.iter().map(|(_, key)| key.as_str()));
        let index: std::collections::HashMap<(&str, usize), usize> = second
            .iter()
            .zip(second_occurrences)
            .map(|((line, key), occurrence)| ((key.as_str(), occurrence), *line))
            .collect();
        let first_occurrences = occurrences(first.iter().map(|(_, key)| key.as_str()));
        for ((line, key), occurrence) in first.iter().zip(first_occurrences) {
            if let Some(other) = index.get(&(key.as_str(), occurrence)) {
                partner[*line] = Some(*other);
                taken[*other] = true;
            }
        }
    }
    partner
}

/// Compares the report lines of one run's two sides.
fn compare_lines(name: &str, results: [&TestResult; 2], comparison: &mut Comparison) {
    let keys = results.map(|result| {
        result
            .report
            .iter()
            .map(|line| pairing_key(&line.text))
            .collect::<Vec<&str>>()
    });
    let keyed_occurrences = [
        occurrences(keys[0].iter().copied()),
        occurrences(keys[1].iter().copied()),
    ];
    let partner = partners([&keys[0], &keys[1]]);
    let mut pairs: Vec<[Option<usize>; 2]> = partner
        .iter()
        .enumerate()
        .map(|(line, other)| [Some(line), *other])
        .collect();
    let taken: Vec<usize> = partner.iter().flatten().copied().collect();
    pairs.extend(
        (0..keys[1].len())
            .filter(|line| !taken.contains(line))
            .map(|line| [None, Some(line)]),
    );
    for pair in pairs {
        let lines = [0, 1].map(|side| pair[side].map(|index| &results[side].report[index]));
        let labels = lines.map(|line| line.map(|line| line.label));
        if labels[0] == labels[1] {
            comparison.agreed_lines += 1;
            continue;
        }
        let failed = labels.iter().flatten().any(|label| label.is_unexpected_failure());
        let excused = labels.iter().flatten().any(|label| excuses(*label));
        let standing = if failed {
            Standing::New
        } else if labels.contains(&None) {
            Standing::OneSided
        } else if excused {
            Standing::Declared
        } else {
            Standing::New
        };
        let sides = ACCELS
            .iter()
            .zip(lines)
            .zip(results)
            .map(|((accel, line), result)| SideVerdict {
                accel: accel.to_string(),
                verdict: line.map_or_else(|| "absent".to_owned(), |line| line.label.to_string()),
                text: line.map(ToString::to_string),
                log: result.log.as_deref().map(shown),
            })
            .collect();
        let side = usize::from(pair[0].is_none());
        let index = pair[side].unwrap_or_default();
        push(
            comparison,
            Disagreement {
                test: name.to_owned(),
                scope: Scope::Line,
                key: keys[side][index].to_owned(),
                occurrence: keyed_occurrences[side][index],
                standing,
                sides,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::classify::Outcome;
    use crate::guest_line::ReportLine;

    fn line(label: Label, text: &str) -> ReportLine {
        ReportLine {
            label,
            text: text.to_owned(),
        }
    }

    fn ran(name: &str, lines: Vec<ReportLine>) -> TestResult {
        TestResult {
            log: Some(PathBuf::from(format!("logs/{name}.log"))),
            report: lines,
            ..TestResult::not_run(name, Outcome::Pass { summary: None })
        }
    }

    fn pairs() -> Pairs {
        Pairs {
            pairs: vec![Pair {
                name: "t".into(),
                sides: ["t@kvm".into(), "t@tcg".into()],
            }],
            not_compared: Vec::new(),
        }
    }

    #[test]
    fn keys_drop_observed_values() {
        assert_eq!(pairing_key("CR4.DE can be set (got Ok(()))"), "CR4.DE can be set");
        assert_eq!(
            pairing_key("single-step sets DR6.BS (DR6 0x4ff0)"),
            "single-step sets DR6.BS"
        );
        assert_eq!(pairing_key("RDMSR(EFER) succeeds"), "RDMSR(EFER) succeeds");
        assert_eq!(pairing_key("a (b (c)) d (x (y))"), "a (b (c)) d");
        assert_eq!(pairing_key("(only)"), "(only)");
        assert_eq!(pairing_key("x (got 1) then (2)"), "x");
    }

    #[test]
    fn agreeing_runs_have_no_disagreement() {
        let lines = vec![line(Label::Pass, "a (got 1)"), line(Label::Pass, "b")];
        let mut other = lines.clone();
        other[0].text = "a (got 2)".into();
        let comparison = compare(&pairs(), &[ran("t@kvm", lines), ran("t@tcg", other)]);
        assert_eq!(comparison.compared, ["t"]);
        assert_eq!(comparison.agreed_lines, 2);
        assert!(comparison.new.is_empty() && comparison.declared.is_empty());
    }

    #[test]
    fn pass_against_fail_is_new_and_kfail_declared() {
        let kvm = vec![
            line(Label::Pass, "a"),
            line(Label::KnownFail, "b (got 3)"),
            line(Label::Pass, "c"),
            line(Label::Pass, "c"),
        ];
        let tcg = vec![
            line(Label::Fail, "a"),
            line(Label::Pass, "b (got 4)"),
            line(Label::Pass, "c"),
            line(Label::Skip, "d"),
        ];
        let comparison = compare(&pairs(), &[ran("t@kvm", kvm), ran("t@tcg", tcg)]);
        let summary = |list: &[Disagreement]| -> Vec<(String, usize, Vec<String>)> {
            list.iter()
                .map(|each| {
                    (
                        each.key.clone(),
                        each.occurrence,
                        each.sides.iter().map(|side| side.verdict.clone()).collect(),
                    )
                })
                .collect()
        };
        assert_eq!(
            summary(&comparison.new),
            [("a".into(), 1, vec!["PASS".into(), "FAIL".into()])]
        );
        assert_eq!(
            summary(&comparison.declared),
            [("b".into(), 1, vec!["KFAIL".into(), "PASS".into()])]
        );
        assert_eq!(
            summary(&comparison.one_sided),
            [
                ("c".into(), 2, vec!["PASS".into(), "absent".into()]),
                ("d".into(), 1, vec!["absent".into(), "SKIP".into()]),
            ]
        );
        assert_eq!(comparison.agreed_lines, 1);
        assert_eq!(comparison.new[0].sides[1].log.as_deref(), Some("logs/t@tcg.log"));
        assert_eq!(comparison.new[0].sides[1].text.as_deref(), Some("FAIL: a"));
        let printed = crate::report::differential::plain_lines(&comparison).join("\n");
        assert!(printed.contains("  t: a\n    kvm: PASS (PASS: a); log: logs/t@kvm.log\n    tcg: FAIL (FAIL: a); log: logs/t@tcg.log"), "{printed}");
        assert!(
            printed.contains("one side only: t: kvm 1 (c), tcg 1 (d)"),
            "{printed}"
        );
    }

    #[test]
    fn a_run_on_one_side_only_is_declared() {
        let skipped = TestResult::not_run(
            "t@tcg",
            Outcome::Skip {
                reason: "kvm only, but ACCEL=tcg".into(),
            },
        );
        let comparison = compare(&pairs(), &[ran("t@kvm", vec![line(Label::Pass, "a")]), skipped]);
        assert!(comparison.new.is_empty());
        assert_eq!(comparison.declared.len(), 1);
        assert_eq!(comparison.declared[0].scope, Scope::Run);
        assert_eq!(comparison.declared[0].sides[1].verdict, "skip");
    }

    #[test]
    fn a_crash_on_one_side_is_new() {
        let mut crashed = ran("t@tcg", Vec::new());
        crashed.outcome = Outcome::Timeout {
            after: std::time::Duration::from_secs(1),
        };
        let comparison = compare(&pairs(), &[ran("t@kvm", vec![line(Label::Pass, "a")]), crashed]);
        assert_eq!(comparison.new.len(), 1);
        assert_eq!(comparison.new[0].scope, Scope::Run);
        assert_eq!(comparison.new[0].sides[1].verdict, "timeout");
        assert_eq!(comparison.one_sided.len(), 1);
        // A failure the lines explain is not listed again for the run.
        let mut failed = ran("t@tcg", vec![line(Label::Fail, "a")]);
        failed.outcome = Outcome::Fail { reason: "x".into() };
        let comparison = compare(&pairs(), &[ran("t@kvm", vec![line(Label::Pass, "a")]), failed]);
        assert_eq!(comparison.new.len(), 1);
        assert_eq!(comparison.new[0].scope, Scope::Line);
    }

    /// Lines whose text holds a value of the host pair by their masked key, in order.
    #[test]
    fn numbers_are_masked_in_the_second_stage() {
        assert_eq!(
            masked_key("RDTSC in 0x1e2f..=0x1e3f, 12 ticks"),
            "RDTSC in #..=#, # ticks"
        );
        let kvm = vec![
            line(Label::Pass, "MC0 0x400 ok"),
            line(Label::Pass, "TSC between 0x10..=0x20"),
        ];
        let tcg = vec![
            line(Label::Pass, "MC0 0x400 ok"),
            line(Label::Fail, "TSC between 0x30..=0x40"),
        ];
        let comparison = compare(&pairs(), &[ran("t@kvm", kvm), ran("t@tcg", tcg)]);
        assert_eq!(comparison.agreed_lines, 1);
        assert_eq!(comparison.new.len(), 1);
        assert_eq!(comparison.new[0].key, "TSC between 0x10..=0x20");
        assert_eq!(
            comparison.new[0].sides[1].text.as_deref(),
            Some("FAIL: TSC between 0x30..=0x40")
        );
        assert!(comparison.one_sided.is_empty());
    }

    #[test]
    fn side_names() {
        assert_eq!(side_name("msr", Accel::Kvm), "msr@kvm");
        assert_eq!(run_of("msr@tcg"), "msr");
        assert_eq!(run_of("msr"), "msr");
    }
}
