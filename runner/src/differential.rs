//! Differential mode (`--differential`): each selected run twice, on two sides that should not
//! change what its guest reports, and the report lines of the two compared. An x86 run's sides
//! are the accelerators, KVM and TCG; an aarch64 run's are the two GIC versions of the `virt`
//! machine (its tests that do not test the GIC itself: a timer, PSCI or a debug exception must
//! behave the same through either interrupt controller). A guest's report lines are
//! architectural, so a line whose verdict differs points at a defect on one side. The plan's
//! runs are paired here ([`pair_plan`]), both sides run in the same worker pool as any run,
//! and once every run is classified [`compare`] pairs their report lines; the reporters print
//! the [`Comparison`] (the `Differential` event).
//!
//! Pairing rule: a report line's key is its text after the label, cut before the first
//! `" (got "`, or else without one trailing parenthesized group (`"... (DR6 0x4ff0)"`); those
//! hold values observed on the host, which may differ. Lines of a run with the same key are
//! paired in print order (the n-th with the n-th); the lines left are then paired the same
//! way by their key with every number masked (`0x1f`, `42`: an address or a count in the
//! text). A line with no partner on the other side is listed apart (its verdict there
//! `absent`), as new when it is an unexpected failure.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::classify::{OutcomeKind, TestResult, Verdict};
use crate::config::{Accel, Arch, TestEntry};
use crate::error::AppError;
use crate::guest_line::Label;
use crate::options::{self, Options};
use crate::plan::{self, Decision, Plan, PlannedRun};
use crate::workspace::shown;

/// One side of a compared run: what it changes from the run as unittests.toml describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side {
    /// Its name in output, and after [`SIDE_SEPARATOR`] in its planned run's name.
    pub label: &'static str,
    /// The accelerator it runs under, when the side is an accelerator (x86); else the plan's.
    pub accel: Option<Accel>,
    /// The `gic-version` of its `virt` machine, when the side is a GIC version (aarch64).
    pub gic_version: Option<u8>,
}

/// An x86 run's sides: the two accelerators, in the order they are shown.
pub const X86_64_SIDES: [Side; 2] = [
    Side {
        label: "kvm",
        accel: Some(Accel::Kvm),
        gic_version: None,
    },
    Side {
        label: "tcg",
        accel: Some(Accel::Tcg),
        gic_version: None,
    },
];

/// An aarch64 run's sides: the `virt` machine with a GICv3 (the runner's default) and with a
/// GICv2, in the order they are shown.
pub const AARCH64_SIDES: [Side; 2] = [
    Side {
        label: "gicv3",
        accel: None,
        gic_version: Some(3),
    },
    Side {
        label: "gicv2",
        accel: None,
        gic_version: Some(2),
    },
];

/// The sides of an `arch` run.
pub fn sides_of(arch: Arch) -> [Side; 2] {
    match arch {
        Arch::X86_64 => X86_64_SIDES,
        Arch::Aarch64 => AARCH64_SIDES,
    }
}

/// Separates a run's name from its side (`msr@kvm`, `timer@gicv2`); no unittests.toml name
/// holds it, so a side's name never clashes with a run's.
pub const SIDE_SEPARATOR: char = '@';

/// The groups whose aarch64 runs test the GIC itself: their lines name its registers and
/// differ by design between versions (and an ITS needs a GICv3).
pub const GIC_GROUPS: [&str; 2] = ["gic", "its"];

/// The most CPUs a GICv2 serves (IHI0048B: eight CPU interfaces).
pub const GICV2_MAX_CPUS: u32 = 8;

/// The name of `name`'s side labelled `label`: `name@kvm`.
pub fn side_name(name: &str, label: &str) -> String {
    format!("{name}{SIDE_SEPARATOR}{label}")
}

/// The run a side's name belongs to (`msr@kvm` is `msr`); a name that is no side is itself.
pub fn run_of(name: &str) -> &str {
    name.split_once(SIDE_SEPARATOR).map_or(name, |(run, _)| run)
}

/// The side a side's name names (`timer@gicv2` is [`AARCH64_SIDES`]' second), if any.
pub fn side_of(name: &str) -> Option<Side> {
    let (_, label) = name.split_once(SIDE_SEPARATOR)?;
    X86_64_SIDES
        .into_iter()
        .chain(AARCH64_SIDES)
        .find(|side| side.label == label)
}

/// `machine` with its `gic-version` property set to `version` (replaced, or appended).
pub fn with_gic_version(machine: &str, version: u8) -> String {
    let mut found = false;
    let mut parts: Vec<String> = machine
        .split(',')
        .map(|part| {
            if part.starts_with("gic-version=") {
                found = true;
                format!("gic-version={version}")
            } else {
                part.to_owned()
            }
        })
        .collect();
    if !found {
        parts.push(format!("gic-version={version}"));
    }
    parts.join(",")
}

/// One run compared: its name and the names of its two sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The unittests.toml run.
    pub name: String,
    /// What each side is, in the order shown.
    pub labels: [&'static str; 2],
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

/// Why an aarch64 run that runs is not compared across GIC versions, if it is not.
fn aarch64_not_compared(options: &Options, entry: &TestEntry, cpus: u32) -> Option<String> {
    if options.environment.machine.is_some() {
        return Some("MACHINE names the machine of every run, so no GIC version is compared".to_owned());
    }
    if let Some(group) = entry
        .groups
        .iter()
        .find(|group| GIC_GROUPS.contains(&group.as_str()))
    {
        return Some(format!(
            "group {group}: the test is of the GIC itself, whose registers differ by version"
        ));
    }
    if entry
        .machine
        .as_deref()
        .is_some_and(|machine| machine.split(',').any(|part| part.starts_with("gic-version=")))
    {
        return Some("its machine names its GIC version".to_owned());
    }
    if cpus > GICV2_MAX_CPUS {
        return Some(format!("{cpus} CPUs: a GICv2 serves at most {GICV2_MAX_CPUS}"));
    }
    None
}

/// Turns `plan` into a differential one: each compared run becomes two, one per side (each
/// side decided by the entry's skip rules on that side, so an `accel =` or `disabled_if` entry
/// runs on one side only); runs not compared stay single, listed with why. An error when an
/// x86 run is selected and KVM is not usable.
pub fn pair_plan(options: &Options, plan: Plan) -> Result<(Plan, Pairs), AppError> {
    let resolved = options::resolve_environment(&options.environment)?;
    let mut pairs = Pairs::default();
    let mut runs = Vec::new();
    for item in plan.runs {
        let arch = match &item.decision {
            Decision::Nodefault => None,
            Decision::Run { arch, .. } => Some(*arch),
            Decision::Skip(_) => Some(item.entry.resolve_arch(&options.workspace, &plan.config)?),
        };
        let Some(arch) = arch.filter(|arch| options.arch.is_none_or(|wanted| wanted == *arch)) else {
            runs.push(item);
            continue;
        };
        if arch == Arch::Aarch64 {
            let Decision::Run { .. } = item.decision else {
                runs.push(item);
                continue;
            };
            let cpus = item.entry.smp.resolve(resolved.max_smp, resolved.host_cpus);
            if let Some(reason) = aarch64_not_compared(options, &item.entry, cpus) {
                pairs.not_compared.push((item.entry.name.clone(), reason));
                runs.push(item);
                continue;
            }
        } else if !plan::kvm_usable() {
            return Err(AppError::Usage(format!(
                "--differential compares kvm with tcg, but /dev/kvm is not usable (selected x86 run: {}); \
                 select aarch64 runs only, or run on a KVM host",
                item.entry.name
            )));
        }
        let base_machine = plan::machine_for(options, &item.entry, arch).to_owned();
        let sides = sides_of(arch);
        for side in sides {
            let mut entry = item.entry.clone();
            entry.name = side_name(&item.entry.name, side.label);
            let machine = match side.gic_version {
                Some(version) => {
                    let machine = with_gic_version(&base_machine, version);
                    entry.machine = Some(machine.clone());
                    machine
                }
                None => base_machine.clone(),
            };
            let rules = plan::skip_rules(&item.entry, Some(&machine));
            let decision = match side.accel {
                Some(accel) => match rules.iter().find_map(|rule| rule.skips_here(accel)) {
                    Some(reason) => Decision::Skip(reason),
                    None => Decision::Run { arch, accel },
                },
                // The plan decided this run under its accelerator; the side keeps that.
                None => match &item.decision {
                    Decision::Run { accel, .. } => {
                        match rules.iter().find_map(|rule| rule.skips_here(*accel)) {
                            Some(reason) => Decision::Skip(reason),
                            None => item.decision.clone(),
                        }
                    }
                    other => other.clone(),
                },
            };
            runs.push(PlannedRun {
                entry,
                explicit: item.explicit,
                decision,
            });
        }
        pairs.pairs.push(Pair {
            name: item.entry.name.clone(),
            labels: sides.map(|side| side.label),
            sides: sides.map(|side| side_name(&item.entry.name, side.label)),
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
    /// The side: its accelerator (`kvm`, `tcg`) or GIC version (`gicv3`, `gicv2`).
    pub side: String,
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
    /// Each side, in its pair's order ([`X86_64_SIDES`], [`AARCH64_SIDES`]).
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
    /// The sides compared, by architecture (`x86_64`: `kvm`, `tcg`), in the order of each
    /// disagreement's sides; only architectures with a compared run.
    pub sides: BTreeMap<String, [String; 2]>,
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
fn run_side(label: &str, result: Option<&TestResult>) -> SideVerdict {
    SideVerdict {
        side: label.to_owned(),
        verdict: result.map_or_else(|| "absent".to_owned(), |result| result.outcome.kind().to_string()),
        text: result.and_then(|result| result.outcome.detail()),
        log: result.and_then(|result| result.log.as_deref().map(shown)),
    }
}

/// The differential stage: compares each pair's classified sides in `results`.
pub fn compare(pairs: &Pairs, results: &[TestResult]) -> Comparison {
    let mut comparison = Comparison {
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
        let arch = if pair.labels == X86_64_SIDES.map(|side| side.label) {
            Arch::X86_64
        } else {
            Arch::Aarch64
        };
        comparison
            .sides
            .insert(arch.to_string(), pair.labels.map(str::to_owned));
        comparison.compared.push(pair.name.clone());
        compare_pair(&pair.name, pair.labels, [first, second], &mut comparison);
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
fn compare_pair(name: &str, labels: [&str; 2], results: [&TestResult; 2], comparison: &mut Comparison) {
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
                sides: labels
                    .iter()
                    .zip(results)
                    .map(|(label, result)| run_side(label, Some(result)))
                    .collect(),
            },
        );
        return;
    }
    let count = |comparison: &Comparison| {
        comparison.new.len() + comparison.declared.len() + comparison.one_sided.len()
    };
    let before = count(comparison);
    compare_lines(name, labels, results, comparison);
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
                sides: labels
                    .iter()
                    .zip(results)
                    .map(|(label, result)| run_side(label, Some(result)))
                    .collect(),
            },
        );
    }
}

/// `key` with every number masked (`0x1f`, `42`, `-7` become `#`), for the second pairing stage.
pub fn masked_key(key: &str) -> String {
    let mut masked = String::with_capacity(key.len());
    let mut characters = key.chars().peekable();
    while let Some(mut character) = characters.next() {
        // A sign belongs to its number (`-3206469 ticks` against `533925 ticks`).
        if character == '-' && characters.peek().is_some_and(char::is_ascii_digit) {
            character = characters.next().unwrap_or(character);
        }
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
fn compare_lines(name: &str, side_labels: [&str; 2], results: [&TestResult; 2], comparison: &mut Comparison) {
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
        let sides = side_labels
            .iter()
            .zip(lines)
            .zip(results)
            .map(|((label, line), result)| SideVerdict {
                side: (*label).to_owned(),
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
                labels: ["kvm", "tcg"],
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
        assert_eq!(
            masked_key("clear -3206469 ticks after"),
            masked_key("clear 533925 ticks after")
        );
        assert_eq!(masked_key("x-y - 3"), "x-y - #");
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
        assert_eq!(side_name("msr", "kvm"), "msr@kvm");
        assert_eq!(run_of("msr@tcg"), "msr");
        assert_eq!(run_of("msr"), "msr");
        assert_eq!(side_of("timer@gicv2"), Some(AARCH64_SIDES[1]));
        assert_eq!(side_of("msr@kvm"), Some(X86_64_SIDES[0]));
        assert_eq!(side_of("msr"), None);
    }

    #[test]
    fn gic_version_replaced_or_appended() {
        assert_eq!(with_gic_version("virt,gic-version=3", 2), "virt,gic-version=2");
        assert_eq!(
            with_gic_version("virt,gic-version=3,mte=on", 2),
            "virt,gic-version=2,mte=on"
        );
        assert_eq!(
            with_gic_version("virt,virtualization=on", 2),
            "virt,virtualization=on,gic-version=2"
        );
    }

    /// An aarch64 pair shows its GIC versions as its sides.
    #[test]
    fn aarch64_sides_are_gic_versions() {
        let pairs = Pairs {
            pairs: vec![Pair {
                name: "t".into(),
                labels: AARCH64_SIDES.map(|side| side.label),
                sides: ["t@gicv3".into(), "t@gicv2".into()],
            }],
            not_compared: Vec::new(),
        };
        let comparison = compare(
            &pairs,
            &[
                ran("t@gicv3", vec![line(Label::Pass, "timer fires")]),
                ran("t@gicv2", vec![line(Label::Fail, "timer fires")]),
            ],
        );
        assert_eq!(comparison.sides["aarch64"], ["gicv3", "gicv2"]);
        assert_eq!(comparison.new.len(), 1);
        assert_eq!(comparison.new[0].sides[1].side, "gicv2");
        let printed = crate::report::differential::plain_lines(&comparison).join("\n");
        assert!(
            printed.starts_with("differential (gicv3 vs gicv2): 1 runs compared"),
            "{printed}"
        );
    }
}
