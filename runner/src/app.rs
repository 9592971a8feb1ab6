//! One invocation of the runner, stage by stage: the options (options.rs) become a plan
//! (plan.rs), whose guests are built (build.rs) and run under QEMU by a worker pool
//! (execute.rs), each run classified (classify.rs) and every step reported as an event to the
//! reporters (report/). This module only wires the stages together.

use std::sync::Arc;

use crate::build::{self, Images};
use crate::classify::{self, Outcome, Report, TestResult};
use crate::config::{Arch, Config};
use crate::differential;
use crate::error::AppError;
use crate::execute;
use crate::execute::pool::{self, Slot};
use crate::execute::run::{Progress, Ran, RunSetup};
use crate::logdir::{LogDirectory, WriteFailures};
use crate::options::{Format, Options, Resolved, qemu_program, resolve_environment};
use crate::plan::{self, Decision, Plan, PlannedRun};
use crate::qemu::{self, ArchProfile};
use crate::report::dry_run::DryRunReporter;
use crate::report::json::JsonReporter;
use crate::report::junit::{self, JunitReporter};
use crate::report::log::LogReporter;
use crate::report::plain::{PlainReporter, Reproduce};
use crate::report::results::{self, ResultsReporter};
use crate::report::summary::{self, SummaryReporter};
use crate::report::tap::TapReporter;
use crate::report::{Event, Fanout, Reporter};

/// The plan of `options`, reading the last run's failures for `--rerun-failed`.
pub fn make_plan(options: &Options) -> Result<Plan, AppError> {
    let failed = if options.rerun_failed && options.kernel.is_none() {
        Some(results::failed_last_time(&options.log_dir)?)
    } else {
        None
    };
    plan::plan(options, failed)
}

/// Runs the selection: the whole invocation except `-l`. Reports a line per run and the totals.
pub fn run(options: &Options) -> Result<Report, AppError> {
    // The commit SUMMARY and results.json name: `git rev-parse` takes a few milliseconds, spent
    // while the plan and the build check run rather than after them.
    let mut commit = PendingCommit((!options.dry_run).then(|| summary::query_commit(&options.workspace)));
    let resolved = resolve_environment(&options.environment)?;
    let (plan, pairs) = differential::plan_of(options, make_plan(options)?)?;
    if let Some(junit) = &options.junit {
        junit::check_writable(junit).map_err(AppError::Usage)?;
    }
    // Held until the invocation ends: no other invocation writes this log directory meanwhile.
    // Taken before the build, so that a second invocation fails at once.
    let log_directory = if options.dry_run {
        None
    } else {
        Some(LogDirectory::lock(&options.log_dir, options.wait_for_lock)?)
    };
    let images = if options.build && !options.dry_run {
        build::build_guests(&options.workspace, &plan, options.verbose)?
    } else {
        Images::default()
    };
    if let Some(directory) = &log_directory {
        execute::run::ensure_qemu(options, &programs(options, &plan))?;
        // Interrupted before any run: the last run's logs stay as they are.
        if execute::interrupted() {
            return Err(AppError::Interrupted);
        }
        directory.rotate()?;
    }
    let failures = Arc::new(WriteFailures::default());
    if options.rerun_failed && plan.runs.is_empty() {
        eprintln!("vmunit: --rerun-failed: no run failed last time");
    }
    let live = interactive(options, &plan);
    let commit = commit.take();
    let fanout = Fanout::new(reporters(options, &plan, live, &failures, commit));
    let reported = plan
        .runs
        .iter()
        .filter(|item| options.verbose || item.decision != Decision::Nodefault)
        .count();
    fanout.send(Event::Begin { total: reported });
    let slots = pool::run_all(
        &plan.runs,
        options.jobs,
        |item| run_planned(options, &resolved, &images, item, live, &fanout, &failures),
        |result| fanout.send(Event::Finished { result }),
    );
    // The runs an interruption kept from starting are in the records too (so that
    // `--rerun-failed` runs them), not in the console's stream.
    let results = plan
        .runs
        .iter()
        .zip(slots)
        .filter_map(|(item, slot)| match slot {
            Slot::Done(result) => Some(result),
            Slot::Nothing => None,
            Slot::NotStarted => not_started(options, item),
        })
        .collect();
    let mut report = Report {
        results,
        new_disagreements: 0,
    };
    let interrupted = execute::interrupted();
    if let Some(pairs) = pairs.filter(|_| !interrupted && !options.dry_run) {
        let comparison = differential::compare(&pairs, &report.results);
        fanout.send(Event::Differential {
            comparison: &comparison,
        });
        report.new_disagreements = comparison.new.len();
    }
    fanout.send(Event::Summary {
        results: &report.results,
        totals: report.totals(),
        interrupted,
    });
    if interrupted {
        return Err(AppError::Interrupted);
    }
    failures.check()?;
    Ok(report)
}

/// `git rev-parse` running (see [`summary::query_commit`]); waited for when dropped, so that
/// git does not outlive an invocation that fails before it needs the commit.
struct PendingCommit(Option<std::io::Result<std::process::Child>>);

impl PendingCommit {
    /// The commit, once git answered (`None` when it was not asked).
    fn take(&mut self) -> Option<String> {
        let pending = self.0.take()?;
        Some(summary::commit_answered(
            pending.and_then(std::process::Child::wait_with_output),
        ))
    }
}

impl Drop for PendingCommit {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// The reporters of an invocation: its format on the console (none when quiet), then the
/// files (each run's log, JUnit, SUMMARY, results.json, their write errors collected in
/// `failures`); a dry run only prints. `commit` is the one checked out, when already known.
fn reporters(
    options: &Options,
    plan: &Plan,
    live: bool,
    failures: &Arc<WriteFailures>,
    commit: Option<String>,
) -> Vec<Box<dyn Reporter>> {
    if options.dry_run {
        return vec![Box::new(DryRunReporter)];
    }
    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    if !options.quiet {
        reporters.push(match options.format {
            Format::Plain => Box::new(PlainReporter::new(
                options.colour,
                options.progress && !live,
                Reproduce::of(options),
            )),
            Format::Tap => Box::new(TapReporter::default()),
            Format::Json => Box::new(JsonReporter),
        });
    }
    reporters.push(Box::new(LogReporter::new(failures)));
    if let Some(path) = &options.junit {
        let arguments = plan
            .runs
            .iter()
            .map(|item| (item.entry.name.clone(), item.entry.test_args.clone()))
            .collect();
        reporters.push(Box::new(JunitReporter::new(path, arguments, failures)));
    }
    let commit = commit.unwrap_or_else(|| summary::commit_of(&options.workspace));
    reporters.push(Box::new(SummaryReporter::new(
        &options.log_dir,
        &commit,
        failures,
    )));
    reporters.push(Box::new(ResultsReporter::new(
        &options.log_dir,
        &commit,
        failures,
    )));
    reporters
}

/// Interactive single-test mode (the guest's output echoed live): one test named explicitly,
/// or extra QEMU arguments given, in the plain format.
fn interactive(options: &Options, plan: &Plan) -> bool {
    let runnable = plan
        .runs
        .iter()
        .filter(|item| matches!(item.decision, Decision::Run { .. }))
        .count();
    let selected: Vec<&PlannedRun> = plan
        .runs
        .iter()
        .filter(|item| item.decision != Decision::Nodefault)
        .collect();
    let single_named = matches!(selected.as_slice(), [only] if only.explicit);
    runnable >= 1
        && (runnable == 1 || options.jobs == 1)
        && (single_named || !options.extra_qemu_args.is_empty())
        && options.format == Format::Plain
        && !options.quiet
}

/// The QEMU programs the plan's runs need.
fn programs(options: &Options, plan: &Plan) -> Vec<String> {
    let mut programs: Vec<String> = Vec::new();
    for item in &plan.runs {
        if let Decision::Run { arch, .. } = item.decision {
            let program = qemu_program(&options.environment, arch);
            if !programs.contains(&program) {
                programs.push(program);
            }
        }
    }
    programs
}

/// One planned run to its result (`None` when there is nothing to report).
fn run_planned(
    options: &Options,
    resolved: &Resolved,
    images: &Images,
    item: &PlannedRun,
    live: bool,
    fanout: &Fanout,
    failures: &WriteFailures,
) -> Option<TestResult> {
    let name = item.entry.name.as_str();
    let (arch, accel) = match &item.decision {
        Decision::Run { arch, accel } => (*arch, *accel),
        decision => {
            let reason = decision.skip_reason(options.verbose)?;
            return Some(TestResult::not_run(name, Outcome::Skip { reason }));
        }
    };
    let image = build::image_for(options, images, arch, &item.entry);
    let setup = RunSetup {
        options,
        resolved,
        entry: &item.entry,
        arch,
        accel,
        image: &image,
        live,
        failures,
    };
    let mut progress = |progress: Progress<'_>| match progress {
        Progress::Starting { command } if options.verbose => fanout.send(Event::Message { text: command }),
        Progress::Started { command } => fanout.send(Event::Started {
            name,
            arch,
            accel,
            command,
        }),
        Progress::Report(line) => fanout.send(Event::GuestLine { name, line }),
        Progress::MalformedBench(note) if options.verbose => fanout.send(Event::Message {
            text: &format!("{name}: {note}"),
        }),
        Progress::Starting { .. } | Progress::MalformedBench(_) => {}
    };
    match execute::run::run(&setup, &mut progress) {
        Ran::DryRun { command } => {
            fanout.send(Event::DryRun { command: &command });
            None
        }
        Ran::Skipped { reason } => Some(TestResult::not_run(name, Outcome::Skip { reason })),
        Ran::Unprepared { reason } => Some(TestResult::not_run(name, Outcome::QemuError { reason })),
        Ran::Interrupted => Some(TestResult::not_run(name, Outcome::interrupted_before_start())),
        Ran::Executed(executed) => Some(classify::result_of(
            name,
            *executed,
            ArchProfile::of(arch).exit_method,
            &image,
            &options.workspace,
        )),
    }
}

/// The record of a planned run that an interruption kept from starting: interrupted if it
/// would have run, else what the plan decided (`None` when that is not reported).
fn not_started(options: &Options, item: &PlannedRun) -> Option<TestResult> {
    let name = item.entry.name.as_str();
    match &item.decision {
        Decision::Run { .. } => Some(TestResult::not_run(name, Outcome::interrupted_before_start())),
        decision => {
            let reason = decision.skip_reason(options.verbose)?;
            Some(TestResult::not_run(name, Outcome::Skip { reason }))
        }
    }
}

/// Builds the guests of the runs called `names` (once, grouped by architecture).
pub fn build_runs(options: &Options, names: &[String]) -> Result<(), AppError> {
    let mut plan = make_plan(options)?;
    plan.runs.retain(|item| names.contains(&item.entry.name));
    build::build_guests(&options.workspace, &plan, options.verbose).map(drop)
}

/// The names of the runs a selection would run (for `-l`; no image is read).
pub fn list(options: &Options) -> Result<Vec<String>, AppError> {
    Ok(make_plan(options)?
        .runs
        .into_iter()
        .filter(|planned| planned.decision != Decision::Nodefault)
        .map(|planned| planned.entry.name)
        .collect())
}

/// The runs a selection would run, each with the `#[vmunit::test]` subtests its image
/// declares (read from the ELF; empty when the image is not built or declares none).
pub fn list_with_subtests(options: &Options) -> Result<Vec<(String, Vec<String>)>, AppError> {
    let plan = make_plan(options)?;
    Ok(plan
        .runs
        .into_iter()
        .filter(|planned| planned.decision != Decision::Nodefault)
        .map(|planned| {
            let subtests = match planned.decision {
                Decision::Run { arch, .. } => crate::subtests::names(&build::image_for(
                    options,
                    &Images::default(),
                    arch,
                    &planned.entry,
                ))
                .unwrap_or_default(),
                _ => Vec::new(),
            };
            (planned.entry.name, subtests)
        })
        .collect())
}

/// `--probe-maxsmp`: the most CPUs QEMU accepts for the machine (`MACHINE`, else the
/// architecture's default) under the accelerator, and a sentence on where the number comes from.
pub fn probe_max_smp(options: &Options) -> Result<(u32, String), AppError> {
    let arch = options.arch.or_else(Arch::host).unwrap_or(Arch::X86_64);
    let profile = ArchProfile::of(arch);
    let accel = plan::current_accel(options.accel, Some(arch));
    let machine = options
        .environment
        .machine
        .as_deref()
        .unwrap_or(profile.default_machine);
    let program = qemu_program(&options.environment, arch);
    execute::run::ensure_qemu(options, std::slice::from_ref(&program))?;
    let limits = qemu::probe_smp_limits(&program, profile, machine, accel).map_err(AppError::Usage)?;
    let maximum = limits
        .maximum()
        .ok_or_else(|| AppError::Usage(format!("{program} named no CPU limit")))?;
    let mut detail = format!(
        "machine {machine} under {accel}: QEMU accepts at most {maximum} CPUs (machine limit {}",
        limits.machine.unwrap_or(maximum)
    );
    if let Some(kvm) = limits.kvm_maximum {
        detail.push_str(&format!(", KVM limit {kvm}"));
    }
    if let Some(recommended) = limits.kvm_recommended {
        detail.push_str(&format!(", KVM recommends at most {recommended}"));
    }
    detail.push(')');
    Ok((maximum, detail))
}

/// `--standalone DIR`: a script per unittests.toml entry; returns the scripts written.
pub fn standalone(
    options: &Options,
    directory: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, AppError> {
    let config = Config::load(&options.config)?;
    crate::standalone::write_all(&options.workspace, &config, directory)
        .map_err(|error| AppError::Usage(error.to_string()))
}

#[cfg(test)]
mod tests;
