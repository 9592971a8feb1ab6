//! One invocation of the runner: select runs, decide skips, build guests, run QEMU (in
//! parallel), print kvm-unit-tests-style result lines and totals, and write logs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::bench::{Bench, BenchCollector};
use crate::config::{Accel, Arch, Config, ConfigError, Requirement, TestEntry, parse_duration};
use crate::execute::{self, ExecuteError, Sinks};
use crate::guests::{self, BuildError};
use crate::outcome::{Outcome, Stream, Verdict, classify};
use crate::output::{self, Format, GuestLine, Printer, shown};
use crate::qemu::{self, ArchProfile, LaunchSpec, QemuCommand};
use crate::select::{Choice, SelectError, Selection};
use crate::symbolise::{self, CrashAddresses};
use crate::workspace;

/// The runner's own environment variables, read once so tests can supply their own.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `QEMU`: the QEMU binary to use instead of `qemu-system-<arch>`.
    pub qemu: Option<String>,
    /// `TIMEOUT`: overrides every run's timeout; 0 disables timeouts.
    pub timeout: Option<String>,
    /// `MAX_SMP`: the CPU count for `smp = "max"` and the cap on every count.
    pub max_smp: Option<String>,
    /// `MACHINE`: overrides every run's machine type.
    pub machine: Option<String>,
}

impl Environment {
    /// The values of this process's environment (empty values count as unset).
    pub fn from_process() -> Environment {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Environment {
            qemu: read("QEMU"),
            timeout: read("TIMEOUT"),
            max_smp: read("MAX_SMP"),
            machine: read("MACHINE"),
        }
    }
}

/// Everything one invocation was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The workspace root (holds tests-x86/, tests-aarch64/, target/).
    pub workspace: PathBuf,
    /// The unittests.toml to read.
    pub config: PathBuf,
    /// Which runs.
    pub selection: Selection,
    /// How many runs at once (at least 1).
    pub jobs: usize,
    /// Print each QEMU command before it runs, show nodefault skips, let cargo speak.
    pub verbose: bool,
    /// Print commands instead of running them.
    pub dry_run: bool,
    /// The accelerator (`--accel` / `ACCEL`); else kvm when usable, else tcg.
    pub accel: Option<Accel>,
    /// QEMU properties of the accelerator (`ACCEL=tcg,thread=multi`), if any.
    pub accel_properties: Option<String>,
    /// Run only guests of this architecture; others SKIP.
    pub arch: Option<Arch>,
    /// Build the guests first.
    pub build: bool,
    /// Arguments after `--`, appended to every QEMU command line.
    pub extra_qemu_args: Vec<String>,
    /// Where logs go (the previous content moves to `<dir>.old`).
    pub log_dir: PathBuf,
    /// The runner's environment variables.
    pub environment: Environment,
    /// Run this one image instead of unittests.toml's selection (`--kernel`).
    pub kernel: Option<Kernel>,
    /// Guest environment variables from `--env KEY=VALUE`, after the tables' `env`.
    pub guest_variables: Vec<(String, String)>,
    /// The output format.
    pub format: Format,
    /// Where to write a JUnit XML report, if anywhere.
    pub junit: Option<PathBuf>,
    /// Colour the verdicts (plain format).
    pub colour: bool,
    /// Show a live progress line (plain format).
    pub progress: bool,
    /// Run only this part of the selection.
    pub shard: Option<Shard>,
    /// Select the runs that failed in the last run (from `<log_dir>/results.json`).
    pub rerun_failed: bool,
    /// Print nothing: the caller reads the returned report (the libtest harness).
    pub quiet: bool,
}

/// An image to run on its own (`--kernel`, used by `cargo run` through scripts/cargo-runner).
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The ELF image.
    pub image: PathBuf,
    /// Its architecture, from the ELF header.
    pub arch: Arch,
    /// Guest arguments replacing the entry's `test_args`, if given.
    pub append: Option<String>,
}

/// ELF `e_machine` values of the guest architectures.
const ELF_MACHINE_X86_64: u16 = 62;
const ELF_MACHINE_AARCH64: u16 = 183;

impl Kernel {
    /// Describes `image`, reading its architecture from the ELF header.
    pub fn new(image: &Path, append: Option<String>) -> Result<Kernel, AppError> {
        let header = std::fs::read(image)
            .map_err(|error| AppError::Usage(format!("cannot read {}: {error}", image.display())))?;
        let machine = header
            .get(..20)
            .filter(|header| header.starts_with(b"\x7fELF"))
            .map(|header| u16::from_le_bytes([header[18], header[19]]));
        let arch = match machine {
            Some(ELF_MACHINE_X86_64) => Arch::X86_64,
            Some(ELF_MACHINE_AARCH64) => Arch::Aarch64,
            _ => {
                return Err(AppError::Usage(format!(
                    "{} is not an x86_64 or aarch64 ELF image",
                    image.display()
                )));
            }
        };
        Ok(Kernel {
            image: image.to_path_buf(),
            arch,
            append,
        })
    }

    /// The run's name: the image's file name.
    fn name(&self) -> String {
        self.image
            .file_name()
            .map_or_else(|| "kernel".to_owned(), |name| name.to_string_lossy().into_owned())
    }
}

impl Options {
    /// Defaults for a workspace: its unittests.toml, logs/, one job, build first.
    pub fn new(workspace: &Path) -> Options {
        Options {
            workspace: workspace.to_path_buf(),
            config: workspace.join(workspace::CONFIG_FILE),
            selection: Selection::default(),
            jobs: 1,
            verbose: false,
            dry_run: false,
            accel: None,
            accel_properties: None,
            arch: None,
            build: true,
            extra_qemu_args: Vec::new(),
            log_dir: workspace.join("logs"),
            environment: Environment::default(),
            kernel: None,
            guest_variables: Vec::new(),
            format: Format::Plain,
            junit: None,
            colour: false,
            progress: false,
            shard: None,
            rerun_failed: false,
            quiet: false,
        }
    }
}

/// Why an invocation stopped before reporting results.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// unittests.toml is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A test name matched nothing, or a pattern is bad.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// A bad option or environment value.
    #[error("{0}")]
    Usage(String),
    /// A guest failed to build.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// QEMU is not installed.
    #[error("{0} not found; run scripts/install-deps (as root) to install QEMU")]
    QemuMissing(String),
    /// Logs could not be written.
    #[error("{0}")]
    Io(String),
    /// Ctrl-C (or SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

impl AppError {
    /// The runner's exit status for this error: 130 when interrupted, else 2.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Interrupted => 130,
            _ => 2,
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// The run's name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Wall time QEMU ran (zero when not run).
    pub duration: Duration,
    /// Its log file, when QEMU ran.
    pub log: Option<PathBuf>,
    /// The guest's report lines (at most `output::MAX_REPORT_LINES`).
    pub report: Vec<GuestLine>,
    /// Lines shown under the result line, such as a crash's symbolised address.
    pub notes: Vec<String>,
    /// The `#[vmunit::test]` subtests its image declares, in the order they run.
    pub subtests: Vec<String>,
    /// The measurements of its `BENCH:` lines, in the order printed (see `bench`).
    pub benches: Vec<Bench>,
}

impl TestResult {
    /// The result of a run decided without running QEMU.
    pub fn not_run(name: &str, outcome: Outcome) -> TestResult {
        TestResult {
            name: name.to_owned(),
            outcome,
            duration: Duration::ZERO,
            log: None,
            report: Vec::new(),
            notes: Vec::new(),
            subtests: Vec::new(),
            benches: Vec::new(),
        }
    }
}

/// Pass/fail/skip counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Passed runs.
    pub passed: usize,
    /// Failed runs (including timeouts, crashes and errors).
    pub failed: usize,
    /// Skipped runs.
    pub skipped: usize,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// The results of an invocation, in unittests.toml order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One per run reported.
    pub results: Vec<TestResult>,
}

impl Report {
    /// Counts by verdict.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for result in &self.results {
            match result.outcome.verdict() {
                Verdict::Pass => totals.passed += 1,
                Verdict::Fail => totals.failed += 1,
                Verdict::Skip => totals.skipped += 1,
            }
        }
        totals
    }

    /// 0 when everything passed or skipped, 1 on any failure.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.totals().failed > 0)
    }

    /// The outcome of the run called `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|result| result.name == name)
            .map(|result| &result.outcome)
    }
}

/// What to do with one selected run.
#[derive(Clone, Debug)]
enum Decision {
    /// Report it as skipped.
    Skip(String),
    /// nodefault and not asked for: mention only with -v.
    Nodefault,
    /// Run it.
    Run { arch: Arch, accel: Accel },
}

#[derive(Clone, Debug)]
struct Planned {
    entry: TestEntry,
    explicit: bool,
    decision: Decision,
}

/// Settings from the environment, checked.
struct Resolved {
    timeout: Option<Duration>,
    max_smp: Option<u32>,
    host_cpus: u32,
}

fn resolve_environment(environment: &Environment) -> Result<Resolved, AppError> {
    let timeout = environment
        .timeout
        .as_deref()
        .map(|text| parse_duration(text).map_err(|error| AppError::Usage(format!("TIMEOUT: {error}"))))
        .transpose()?;
    let max_smp = environment
        .max_smp
        .as_deref()
        .map(|text| match text.trim().parse::<u32>() {
            Ok(count) if count >= 1 => Ok(count),
            _ => Err(AppError::Usage(format!(
                "MAX_SMP: '{text}' is not an integer >= 1"
            ))),
        })
        .transpose()?;
    let host_cpus =
        std::thread::available_parallelism().map_or(1, |count| u32::try_from(count.get()).unwrap_or(1));
    Ok(Resolved {
        timeout,
        max_smp,
        host_cpus,
    })
}

fn kvm_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(qemu::kvm_usable)
}

/// The accelerator a guest of `arch` runs with: the one asked for, else kvm when the guest
/// matches the host and /dev/kvm is usable, else tcg.
pub fn current_accel(requested: Option<Accel>, arch: Option<Arch>) -> Accel {
    requested.unwrap_or_else(|| {
        let native = arch.or_else(Arch::host) == Arch::host();
        if native && kvm_usable() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    })
}

/// Loads the config and decides what happens to each selected run (before building).
fn plan(options: &Options) -> Result<(Config, Vec<Planned>), AppError> {
    let config = Config::load(&options.config)?;
    if let Some(kernel) = &options.kernel {
        return Ok((config.clone(), vec![plan_kernel(options, &config, kernel)]));
    }
    let mut selection = options.selection.clone();
    if options.rerun_failed {
        let failed = failed_last_time(&options.log_dir)?;
        let failed: Vec<String> = failed
            .into_iter()
            .filter(|name| config.entries.iter().any(|entry| entry.name == *name))
            .collect();
        if failed.is_empty() {
            return Ok((config, Vec::new()));
        }
        selection.names = failed.iter().map(|name| glob::Pattern::escape(name)).collect();
        selection.all = true;
    }
    let choices = selection.choose(&config.entries)?;
    let mut planned = Vec::new();
    for (entry, choice) in config.entries.iter().zip(choices) {
        // Every entry's arch is checked, so a wrong one is found whatever is selected.
        let arch = entry.resolve_arch(&options.workspace, &config)?;
        let explicit = match choice {
            Choice::Excluded => continue,
            Choice::Nodefault => {
                planned.push(Planned {
                    entry: entry.clone(),
                    explicit: false,
                    decision: Decision::Nodefault,
                });
                continue;
            }
            // Runs chosen by --rerun-failed are not named by the user: no interactive mode.
            Choice::Selected { explicit } => explicit && !options.rerun_failed,
        };
        let accel = current_accel(options.accel, arch);
        let machine = arch.map(|arch| machine_for(options, entry, arch));
        let decision = match arch {
            Some(arch) if options.arch.is_some_and(|wanted| wanted != arch) => {
                Decision::Skip(format!("{arch} only"))
            }
            _ if entry.disabled.is_some() => Decision::Skip(format!(
                "disabled: {}",
                entry.disabled.as_deref().unwrap_or_default()
            )),
            Some(_)
                if entry
                    .disabled_if
                    .as_ref()
                    .is_some_and(|condition| condition.holds(accel, machine.unwrap_or_default())) =>
            {
                Decision::Skip(format!(
                    "disabled if {}",
                    entry
                        .disabled_if
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ))
            }
            _ if entry.accel.is_some_and(|only| only != accel) => Decision::Skip(format!(
                "{} only, but ACCEL={accel}",
                entry.accel.map_or("", Accel::name)
            )),
            _ if let Some(reason) = unmet_host_requirement(&entry.requires, accel) => Decision::Skip(reason),
            Some(arch) if workspace::crate_directory(&options.workspace, arch, &entry.file).is_dir() => {
                Decision::Run { arch, accel }
            }
            _ => Decision::Skip(format!("Test file '{}' not found", entry.file)),
        };
        planned.push(Planned {
            entry: entry.clone(),
            explicit,
            decision,
        });
    }
    if let Some(shard) = options.shard {
        planned = shard.select(planned, |item| matches!(item.decision, Decision::Nodefault));
    }
    Ok((config, planned))
}

/// One of N deterministic parts of the selected runs (`--shard K/N`): the K-th of every N
/// runs in unittests.toml order, counting the runs the selection reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which part, from 1.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{text}' is not K/N with 1 <= K <= N");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = index.trim().parse().map_err(|_| bad())?;
        let count: usize = count.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Keeps this shard's items. Items `quiet` says are not reported (nodefault runs, shown
    /// only with -v) do not count, and stay in shard 1 only, so every shard reports a disjoint
    /// part and together they report everything once.
    fn select<T>(self, items: Vec<T>, quiet: impl Fn(&T) -> bool) -> Vec<T> {
        let mut position = 0;
        items
            .into_iter()
            .filter(|item| {
                if quiet(item) {
                    return self.index == 1;
                }
                position += 1;
                (position - 1) % self.count == self.index - 1
            })
            .collect()
    }
}

/// The record of a run's results, `<log_dir>/results.json`, that `--rerun-failed` reads.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ResultsRecord {
    /// The commit tested, or "none".
    commit: String,
    /// One per run reported.
    results: Vec<RecordedResult>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RecordedResult {
    name: String,
    /// PASS, FAIL or SKIP.
    verdict: String,
    /// The outcome's kind (`output::outcome_kind`).
    outcome: String,
    duration_secs: f64,
    /// The run's `BENCH:` measurements (absent when it printed none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    benches: Vec<Bench>,
}

/// The file name of the results record in the log directory.
pub const RESULTS_FILE: &str = "results.json";

/// The names of the runs that failed in the run that wrote `<log_dir>/results.json`.
fn failed_last_time(log_dir: &Path) -> Result<Vec<String>, AppError> {
    let path = log_dir.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        AppError::Usage(format!(
            "--rerun-failed: cannot read the last run's results {}: {error}",
            shown(&path)
        ))
    })?;
    let record: ResultsRecord = serde_json::from_str(&text)
        .map_err(|error| AppError::Usage(format!("--rerun-failed: {}: {error}", shown(&path))))?;
    Ok(record
        .results
        .into_iter()
        .filter(|result| result.verdict == Verdict::Fail.to_string())
        .map(|result| result.name)
        .collect())
}

/// The one run of `--kernel`: the unittests.toml entry of the same name supplies smp,
/// qemu_params, test_args and the rest when there is one.
fn plan_kernel(options: &Options, config: &Config, kernel: &Kernel) -> Planned {
    let name = kernel.name();
    let mut entry = config
        .entries
        .iter()
        .find(|entry| entry.name == name)
        .cloned()
        .unwrap_or_else(|| TestEntry::ad_hoc(&name));
    if let Some(append) = &kernel.append {
        entry.test_args = append.split_whitespace().map(str::to_owned).collect();
    }
    let accel = current_accel(options.accel, Some(kernel.arch));
    Planned {
        entry,
        explicit: true,
        decision: Decision::Run {
            arch: kernel.arch,
            accel,
        },
    }
}

/// The image a run boots: `--kernel`'s, else the guest crate's release build.
fn image_for(options: &Options, arch: Arch, entry: &TestEntry) -> PathBuf {
    match &options.kernel {
        Some(kernel) => kernel.image.clone(),
        None => workspace::image_path(&options.workspace, arch, &entry.file),
    }
}

/// One unittests.toml entry as a test case of the libtest harness (runner/tests/guests.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The run's name.
    pub name: String,
    /// Why it would be skipped, decided without booting anything (arch, accel, disabled,
    /// requires, missing crate; devices ask QEMU once); `None` when it would run.
    pub skip: Option<String>,
    /// In group nodefault: run only when asked for by name.
    pub nodefault: bool,
}

/// Every entry of the config as a case, in file order, cheaply (nothing is built or booted).
pub fn cases(options: &Options) -> Result<Vec<Case>, AppError> {
    let mut everything = options.clone();
    everything.selection = Selection {
        all: true,
        ..Selection::default()
    };
    everything.shard = None;
    everything.rerun_failed = false;
    let (_, planned) = plan(&everything)?;
    Ok(planned
        .into_iter()
        .map(|item| Case {
            nodefault: item.entry.in_group(crate::select::NODEFAULT_GROUP),
            skip: match item.decision {
                Decision::Skip(reason) => Some(reason),
                // Devices too, so that a harness that cannot skip at run time lists them.
                Decision::Run { arch, .. } => unmet_device_requirement(
                    &item.entry.requires,
                    &options
                        .environment
                        .qemu
                        .clone()
                        .unwrap_or_else(|| ArchProfile::of(arch).default_program()),
                ),
                Decision::Nodefault => None,
            },
            name: item.entry.name,
        })
        .collect())
}

/// Builds the guests of the runs called `names` (once, grouped by architecture).
pub fn build_runs(options: &Options, names: &[String]) -> Result<(), AppError> {
    let (_, planned) = plan(options)?;
    let wanted: Vec<Planned> = planned
        .into_iter()
        .filter(|item| names.contains(&item.entry.name))
        .collect();
    build_guests(options, &wanted)
}

/// The names of the runs a selection would run (for `-l`).
pub fn list(options: &Options) -> Result<Vec<String>, AppError> {
    Ok(list_with_subtests(options)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The runs a selection would run, each with the `#[vmunit::test]` subtests its image
/// declares (read from the ELF; empty when the image is not built or declares none).
pub fn list_with_subtests(options: &Options) -> Result<Vec<(String, Vec<String>)>, AppError> {
    let (_, planned) = plan(options)?;
    Ok(planned
        .into_iter()
        .filter(|planned| !matches!(planned.decision, Decision::Nodefault))
        .map(|planned| {
            let subtests = match planned.decision {
                Decision::Run { arch, .. } => {
                    crate::subtests::names(&image_for(options, arch, &planned.entry)).unwrap_or_default()
                }
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
    let accel = current_accel(options.accel, Some(arch));
    let machine = options
        .environment
        .machine
        .as_deref()
        .unwrap_or(profile.default_machine);
    let program = options
        .environment
        .qemu
        .clone()
        .unwrap_or_else(|| profile.default_program());
    ensure_qemu(options, std::slice::from_ref(&program))?;
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

/// The machine type of a run: `MACHINE`, else the table's, else the architecture's default.
fn machine_for<'a>(options: &'a Options, entry: &'a TestEntry, arch: Arch) -> &'a str {
    options
        .environment
        .machine
        .as_deref()
        .or(entry.machine.as_deref())
        .unwrap_or(ArchProfile::of(arch).default_machine)
}

/// The first of `requires` that the host lacks and that needs no QEMU to check (`kvm`,
/// `root`), as a skip reason.
fn unmet_host_requirement(requires: &[Requirement], accel: Accel) -> Option<String> {
    requires.iter().find_map(|requirement| match requirement {
        Requirement::Kvm if accel != Accel::Kvm => Some(format!("requires kvm, but ACCEL={accel}")),
        Requirement::Kvm if !kvm_usable() => Some("requires kvm, but /dev/kvm is not usable".to_owned()),
        Requirement::Root if !nix::unistd::geteuid().is_root() => {
            Some("requires root, but the runner is not root".to_owned())
        }
        _ => None,
    })
}

/// The first device of `requires` that `program` lacks, as a skip reason. QEMU is asked once
/// per program and run (`-device help`).
fn unmet_device_requirement(requires: &[Requirement], program: &str) -> Option<String> {
    requires.iter().find_map(|requirement| {
        let Requirement::Device(device) = requirement else {
            return None;
        };
        match qemu::devices(program) {
            Ok(devices) if devices.contains(device) => None,
            Ok(_) => Some(format!("requires device {device}, which {program} lacks")),
            Err(error) => Some(format!("requires device {device}, but {error}")),
        }
    })
}

/// The guest environment: the runner's variables (`environment::guest_environment`), then the
/// table's `env`, then `--env`; a later value of a key replaces an earlier one in place.
fn merged_environment(base: &str, layers: &[&[(String, String)]]) -> String {
    let mut pairs: Vec<(String, String)> = base
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    for (key, value) in layers.iter().flat_map(|layer| layer.iter()) {
        match pairs.iter_mut().find(|(existing, _)| existing == key) {
            Some(pair) => pair.1.clone_from(value),
            None => pairs.push((key.clone(), value.clone())),
        }
    }
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect()
}

/// The QEMU command of one run.
fn command_for(
    options: &Options,
    resolved: &Resolved,
    entry: &TestEntry,
    arch: Arch,
    accel: Accel,
) -> QemuCommand {
    let profile = ArchProfile::of(arch);
    let machine = machine_for(options, entry, arch);
    let image = image_for(options, arch, entry);
    let qboot = Path::new(qemu::QBOOT_PATH);
    let environment_file = environment_path(&options.log_dir, &entry.name);
    qemu::build_command(&LaunchSpec {
        profile,
        program: options
            .environment
            .qemu
            .clone()
            .unwrap_or_else(|| profile.default_program()),
        machine,
        accel,
        accel_properties: options.accel_properties.as_deref(),
        smp: entry.smp.resolve(resolved.max_smp, resolved.host_cpus),
        image: &image,
        test_args: &entry.test_args,
        qemu_params: &entry.qemu_params,
        extra_args: &options.extra_qemu_args,
        qboot: qboot.is_file().then(|| qboot.to_path_buf()),
        environment_file: Some(&environment_file),
    })
}

/// Where a run's guest environment file is written: beside its log, so the command line in
/// the log can be rerun by hand.
fn environment_path(directory: &Path, name: &str) -> PathBuf {
    directory.join(format!("{name}.env"))
}

/// Builds the guests that will run, grouped by architecture.
fn build_guests(options: &Options, planned: &[Planned]) -> Result<(), AppError> {
    let mut by_arch: BTreeMap<Arch, Vec<&str>> = BTreeMap::new();
    for item in planned {
        if let Decision::Run { arch, .. } = item.decision {
            let files = by_arch.entry(arch).or_default();
            if !files.contains(&item.entry.file.as_str()) {
                files.push(&item.entry.file);
            }
        }
    }
    for (arch, files) in by_arch {
        if let Err(error) = guests::build(&options.workspace, arch, &files, options.verbose) {
            return Err(if execute::interrupted() {
                AppError::Interrupted
            } else {
                error.into()
            });
        }
    }
    Ok(())
}

/// Makes sure every QEMU binary needed exists, installing QEMU once when possible.
fn ensure_qemu(options: &Options, programs: &[String]) -> Result<(), AppError> {
    let missing: Vec<&String> = programs
        .iter()
        .filter(|program| !qemu::program_exists(program))
        .collect();
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let installer = options.workspace.join("scripts/install-deps");
    let can_install = options.environment.qemu.is_none()
        && nix::unistd::geteuid().is_root()
        && qemu::program_exists("apt-get")
        && installer.is_file();
    if can_install {
        eprintln!("vmunit: {first} not found; running scripts/install-deps");
        let installed = Command::new(&installer)
            .status()
            .is_ok_and(|status| status.success());
        if let Some(still) = programs.iter().find(|program| !qemu::program_exists(program)) {
            if !installed && execute::interrupted() {
                return Err(AppError::Interrupted);
            }
            return Err(AppError::QemuMissing(still.clone()));
        }
        return Ok(());
    }
    Err(AppError::QemuMissing((*first).clone()))
}

/// Moves `dir` to `<dir>.old` (replacing that) and creates it anew.
fn rotate_logs(directory: &Path) -> Result<(), AppError> {
    let io_error = |what: &str, path: &Path, error: std::io::Error| {
        AppError::Io(format!("cannot {what} {}: {error}", path.display()))
    };
    if directory.exists() {
        let mut old = directory.as_os_str().to_owned();
        old.push(".old");
        let old = PathBuf::from(old);
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|error| io_error("remove", &old, error))?;
        }
        std::fs::rename(directory, &old).map_err(|error| io_error("move", directory, error))?;
    }
    std::fs::create_dir_all(directory).map_err(|error| io_error("create", directory, error))
}

/// The log file name of a run.
fn log_path(directory: &Path, name: &str) -> PathBuf {
    directory.join(format!("{}.log", name.replace(['/', '\\'], "_")))
}

/// How many of a failed run's `FAIL:` lines are shown under its verdict.
const SHOWN_FAIL_LINES: usize = 3;

/// Runs one planned run to its result.
fn run_one(
    options: &Options,
    resolved: &Resolved,
    item: &Planned,
    arch: Arch,
    accel: Accel,
    live: bool,
    printer: &Printer,
) -> Option<TestResult> {
    let entry = &item.entry;
    let image = image_for(options, arch, entry);
    if !options.dry_run && !image.is_file() {
        let reason = format!("Test file '{}' not found", shown(&image));
        return Some(TestResult::not_run(&entry.name, Outcome::Skip { reason }));
    }
    let command = command_for(options, resolved, entry, arch, accel);
    let line = command.shell_line();
    if options.dry_run {
        println!("{line}");
        return None;
    }
    if let Some(reason) = unmet_device_requirement(&entry.requires, &command.program) {
        return Some(TestResult::not_run(&entry.name, Outcome::Skip { reason }));
    }
    if options.verbose {
        printer.message(&line);
    }
    let path = log_path(&options.log_dir, &entry.name);
    let environment = merged_environment(
        &crate::environment::guest_environment(accel),
        &[&entry.env, &options.guest_variables],
    );
    if let Err(error) = std::fs::write(environment_path(&options.log_dir, &entry.name), environment) {
        let outcome = Outcome::QemuError {
            reason: format!("cannot write the guest environment: {error}"),
        };
        return Some(TestResult::not_run(&entry.name, outcome));
    }
    let mut log = File::create(&path).ok().map(BufWriter::new);
    if let Some(log) = log.as_mut() {
        let _ = writeln!(log, "{line}");
    }
    let timeout = entry.effective_timeout(resolved.timeout);
    printer.started(&entry.name, arch.name(), accel.name(), &line);
    let mut report: Vec<GuestLine> = Vec::new();
    let mut crashes = CrashAddresses::default();
    let mut benches = BenchCollector::default();
    let mut observe = |stream: Stream, text: &str| {
        if stream != Stream::Serial {
            return;
        }
        crashes.observe(text);
        if let Some(note) = benches.observe(text)
            && options.verbose
        {
            printer.message(&format!("{}: {note}", entry.name));
        }
        if report.len() >= output::MAX_REPORT_LINES {
            return;
        }
        if let Some(guest_line) = output::parse_report_line(text) {
            printer.report_line(&entry.name, &guest_line);
            report.push(guest_line);
        }
    };
    let sinks = Sinks {
        log: log.as_mut().map(|log| log as &mut dyn Write),
        live,
        observer: Some(&mut observe),
    };
    // The first failing report lines, shown under a FAIL so that it says what failed.
    let mut failure_lines: Vec<String> = Vec::new();
    let (outcome, duration) = match execute::execute_interactive(&command, timeout, sinks, &entry.expect) {
        Ok(execution) => {
            failure_lines = execution
                .transcript
                .fail_lines()
                .iter()
                .take(SHOWN_FAIL_LINES)
                .cloned()
                .collect();
            let method = ArchProfile::of(arch).exit_method;
            let outcome = classify(execution.exit, &execution.transcript, method);
            // A failed console script fails the run; a run that failed anyway keeps its reason.
            let outcome = match execution.script_failure {
                Some(failure) if outcome.verdict() != Verdict::Fail => Outcome::Fail {
                    reason: format!("console script: {failure}"),
                },
                _ => outcome,
            };
            (outcome, execution.duration)
        }
        Err(ExecuteError::Interrupted) => return None,
        Err(error @ ExecuteError::Spawn { .. }) => (
            Outcome::QemuError {
                reason: error.to_string(),
            },
            Duration::ZERO,
        ),
    };
    let mut notes = if outcome.verdict() == Verdict::Fail && !crashes.addresses().is_empty() {
        symbolise::notes(&image, crashes.addresses(), &options.workspace)
    } else {
        Vec::new()
    };
    if outcome.verdict() == Verdict::Fail {
        notes.extend(failure_lines);
    }
    if let Some(mut log) = log {
        for note in &benches.malformed {
            let _ = writeln!(log, "vmunit: {note}");
        }
        let _ = writeln!(log, "{}", outcome.report_line(&entry.name));
        for note in &notes {
            let _ = writeln!(log, "    {note}");
        }
        let _ = log.flush();
    }
    Some(TestResult {
        name: entry.name.clone(),
        outcome,
        duration,
        log: Some(path),
        report,
        notes,
        subtests: crate::subtests::names(&image).unwrap_or_default(),
        benches: benches.benches,
    })
}

/// The selected runs' result in a dry run: skips are shown, runs print their command.
fn dry_run_line(result: &TestResult) {
    if result.outcome.verdict() == Verdict::Skip {
        println!("{}", output::display_line(&result.name, &result.outcome, false));
    }
}

/// Runs the selection: the whole invocation except `-l`. Prints a line per run and the totals.
pub fn run(options: &Options) -> Result<Report, AppError> {
    let resolved = resolve_environment(&options.environment)?;
    let (_, planned) = plan(options)?;
    if let Some(junit) = &options.junit {
        output::check_writable(junit).map_err(AppError::Usage)?;
    }
    if options.build && !options.dry_run {
        build_guests(options, &planned)?;
    }
    if !options.dry_run {
        let mut programs: Vec<String> = Vec::new();
        for item in &planned {
            if let Decision::Run { arch, .. } = item.decision {
                let program = options
                    .environment
                    .qemu
                    .clone()
                    .unwrap_or_else(|| ArchProfile::of(arch).default_program());
                if !programs.contains(&program) {
                    programs.push(program);
                }
            }
        }
        ensure_qemu(options, &programs)?;
        rotate_logs(&options.log_dir)?;
    }

    if options.rerun_failed && planned.is_empty() {
        eprintln!("vmunit: --rerun-failed: no run failed last time");
    }
    let runnable = planned
        .iter()
        .filter(|item| matches!(item.decision, Decision::Run { .. }))
        .count();
    // Interactive single-test mode: one test named explicitly, or extra QEMU arguments given.
    let selected: Vec<&Planned> = planned
        .iter()
        .filter(|item| !matches!(item.decision, Decision::Nodefault))
        .collect();
    let single_named = matches!(selected.as_slice(), [only] if only.explicit);
    let live = runnable >= 1
        && (runnable == 1 || options.jobs == 1)
        && (single_named || !options.extra_qemu_args.is_empty())
        && options.format == Format::Plain
        && !options.quiet;
    let printer = if options.quiet {
        Printer::silent()
    } else {
        Printer::new(options.format, options.colour, options.progress && !live)
    };
    if !options.dry_run {
        let reported = if options.verbose {
            planned.len()
        } else {
            selected.len()
        };
        printer.begin(reported);
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TestResult>>> = Mutex::new(vec![None; planned.len()]);
    let worker = || {
        loop {
            let index = next.fetch_add(1, Ordering::SeqCst);
            let Some(item) = planned.get(index) else {
                break;
            };
            if execute::interrupted() {
                break;
            }
            let result = match &item.decision {
                Decision::Nodefault if options.verbose => Some(TestResult::not_run(
                    &item.entry.name,
                    Outcome::Skip {
                        reason: "test marked as manual run only".to_owned(),
                    },
                )),
                Decision::Nodefault => None,
                Decision::Skip(reason) => Some(TestResult::not_run(
                    &item.entry.name,
                    Outcome::Skip {
                        reason: reason.clone(),
                    },
                )),
                Decision::Run { arch, accel } => {
                    run_one(options, &resolved, item, *arch, *accel, live, &printer)
                }
            };
            let Some(result) = result else { continue };
            if execute::interrupted() {
                break;
            }
            if options.dry_run {
                dry_run_line(&result);
            } else {
                printer.finished(&result);
            }
            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..options.jobs.max(1).min(planned.len().max(1)) {
            scope.spawn(worker);
        }
        worker();
    });
    let report = Report {
        results: results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .into_iter()
            .flatten()
            .collect(),
    };
    if execute::interrupted() {
        // A partial summary: the runs that finished before the interruption.
        let totals = report.totals();
        println!("{totals} (interrupted: the other runs did not finish)");
        write_summary(options, &report, totals);
        return Err(AppError::Interrupted);
    }
    if options.dry_run {
        return Ok(report);
    }
    let totals = report.totals();
    if let Some(junit) = &options.junit
        && let Err(error) = output::write_junit(junit, &report.results)
    {
        eprintln!("vmunit: cannot write {}: {error}", junit.display());
    }
    write_summary(options, &report, totals);
    printer.end(&report.results, totals);
    Ok(report)
}

/// Writes `<log_dir>/SUMMARY`: the commit tested and the results.
fn write_summary(options: &Options, report: &Report, totals: Totals) {
    let commit = Command::new("git")
        .arg("-C")
        .arg(&options.workspace)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "none".to_owned());
    let mut text = format!("commit: {commit}\n");
    for result in &report.results {
        text.push_str(&result.outcome.report_line(&result.name));
        text.push('\n');
    }
    text.push_str(&format!("{totals}\n"));
    let _ = std::fs::write(options.log_dir.join("SUMMARY"), text);
    let record = ResultsRecord {
        commit,
        results: report
            .results
            .iter()
            .map(|result| RecordedResult {
                name: result.name.clone(),
                verdict: result.outcome.verdict().to_string(),
                outcome: output::outcome_kind(&result.outcome).to_owned(),
                duration_secs: result.duration.as_secs_f64(),
                benches: result.benches.clone(),
            })
            .collect(),
    };
    if let Ok(json) = serde_json::to_string_pretty(&record) {
        let _ = std::fs::write(options.log_dir.join(RESULTS_FILE), json + "\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes an executable shell script that stands in for QEMU; returns its path.
    fn fake_qemu(directory: &std::path::Path, script: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = directory.join("fake-qemu");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    fn workspace_with(config: &str) -> (tempfile::TempDir, Options) {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::write(root.join("unittests.toml"), config).unwrap();
        std::fs::write(root.join("Cargo.toml"), "").unwrap();
        std::fs::create_dir_all(root.join("tests-x86/xguest")).unwrap();
        std::fs::create_dir_all(root.join("tests-aarch64/aguest")).unwrap();
        let mut options = Options::new(root);
        options.build = false;
        (directory, options)
    }

    fn decisions(options: &Options) -> Vec<(String, String)> {
        plan(options)
            .unwrap()
            .1
            .into_iter()
            .map(|planned| (planned.entry.name, format!("{:?}", planned.decision)))
            .collect()
    }

    #[test]
    fn skip_decisions() {
        let (_directory, mut options) = workspace_with(
            r#"
[x]
file = "xguest"
[a]
file = "aguest"
[kvm-only]
file = "xguest"
accel = "kvm"
[missing]
[manual]
file = "xguest"
groups = ["nodefault"]
"#,
        );
        options.accel = Some(Accel::Tcg);
        options.arch = Some(Arch::X86_64);
        let decisions = decisions(&options);
        assert_eq!(decisions[0].1, "Run { arch: X86_64, accel: Tcg }");
        assert_eq!(decisions[1].1, "Skip(\"aarch64 only\")");
        assert_eq!(decisions[2].1, "Skip(\"kvm only, but ACCEL=tcg\")");
        assert_eq!(decisions[3].1, "Skip(\"Test file 'missing' not found\")");
        assert_eq!(decisions[4].1, "Nodefault");
        assert_eq!(list(&options).unwrap(), ["x", "a", "kvm-only", "missing"]);
    }

    #[test]
    fn disabled_and_required() {
        let (_directory, mut options) = workspace_with(
            r#"
[off]
file = "xguest"
disabled = "flaky"
[off-tcg]
file = "xguest"
disabled_if = { accel = "tcg" }
[off-kvm]
file = "xguest"
disabled_if = { accel = "kvm" }
[off-microvm]
file = "xguest"
disabled_if = { machine = "microvm" }
[needs-kvm]
file = "xguest"
requires = ["kvm"]
[needs-device]
file = "xguest"
requires = ["device:pci-testdev"]
"#,
        );
        options.accel = Some(Accel::Tcg);
        // On q35 first: the x86 default, microvm, is what off-microvm names.
        options.environment.machine = Some("q35".into());
        let first = decisions(&options);
        let run = "Run { arch: X86_64, accel: Tcg }";
        assert_eq!(first[0].1, "Skip(\"disabled: flaky\")");
        assert_eq!(first[1].1, "Skip(\"disabled if accel = tcg\")");
        assert_eq!(first[2].1, run);
        assert_eq!(first[3].1, run);
        assert_eq!(first[4].1, "Skip(\"requires kvm, but ACCEL=tcg\")");
        // Devices are checked against QEMU just before the run, not while planning.
        assert_eq!(first[5].1, run);
        options.environment.machine = Some("microvm".into());
        assert_eq!(
            decisions(&options)[3].1,
            "Skip(\"disabled if machine = microvm\")"
        );
    }

    #[test]
    fn shards() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1", "a/b", "1/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let items: Vec<i32> = (1..=8).collect();
        let quiet = |item: &i32| *item == 4;
        let parts: Vec<Vec<i32>> = (1..=3)
            .map(|index| Shard { index, count: 3 }.select(items.clone(), quiet))
            .collect();
        assert_eq!(parts, [vec![1, 4, 5, 8], vec![2, 6], vec![3, 7]]);
    }

    #[test]
    fn cases_for_the_harness() {
        let (_directory, mut options) = workspace_with(
            "[x]\nfile = \"xguest\"\n[off]\nfile = \"xguest\"\ndisabled = \"no\"\n\
             [manual]\nfile = \"xguest\"\ngroups = [\"nodefault\"]\n",
        );
        options.accel = Some(Accel::Tcg);
        options.selection.names = vec!["x".into()];
        let cases = cases(&options).unwrap();
        let case = |name: &str, skip: Option<&str>, nodefault: bool| Case {
            name: name.into(),
            skip: skip.map(str::to_owned),
            nodefault,
        };
        assert_eq!(
            cases,
            [
                case("x", None, false),
                case("off", Some("disabled: no"), false),
                case("manual", None, true)
            ]
        );
    }

    #[test]
    fn guest_environment_layers() {
        let base = "ACCEL=tcg\nHOST_KERNEL=6.1\n";
        let table = [
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x y".to_owned()),
        ];
        let command_line = [
            ("A".to_owned(), "2".to_owned()),
            ("ACCEL".to_owned(), "kvm".to_owned()),
        ];
        assert_eq!(
            merged_environment(base, &[&table, &command_line]),
            "ACCEL=kvm\nHOST_KERNEL=6.1\nA=2\nB=x y\n"
        );
        assert_eq!(merged_environment(base, &[]), base);
    }

    #[test]
    fn device_requirements_ask_qemu() {
        let (directory, mut options) = workspace_with(
            "[has]\nfile = \"xguest\"\nrequires = [\"device:pci-testdev\"]\nenv = { T = \"table\" }\n\
             [lacks]\nfile = \"xguest\"\nrequires = [\"device:no-such-device\"]\n",
        );
        let image = workspace::image_path(directory.path(), Arch::X86_64, "xguest");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, "").unwrap();
        let fake = fake_qemu(
            directory.path(),
            "#!/bin/sh\ncase \"$*\" in *'-device help'*) echo 'name \"pci-testdev\", bus PCI'; exit 0;; esac\n\
             echo 'EXIT: STATUS=1'; exit 1\n",
        );
        options.environment.qemu = Some(fake.clone());
        options.accel = Some(Accel::Tcg);
        options.guest_variables = vec![("CLI".into(), "yes".into())];
        let report = run(&options).unwrap();
        assert_eq!(report.outcome("has"), Some(&Outcome::Pass { summary: None }));
        assert_eq!(
            report.outcome("lacks"),
            Some(&Outcome::Skip {
                reason: format!("requires device no-such-device, which {fake} lacks")
            })
        );
        let environment = std::fs::read_to_string(directory.path().join("logs/has.env")).unwrap();
        assert!(environment.starts_with("ACCEL=tcg\n"), "{environment}");
        assert!(environment.ends_with("T=table\nCLI=yes\n"), "{environment}");
    }

    #[test]
    fn arch_mismatch_is_a_config_error() {
        let (_directory, options) =
            workspace_with("[ok]\nfile = \"xguest\"\n[bad]\nfile = \"xguest\"\narch = \"aarch64\"\n");
        let error = plan(&options).unwrap_err();
        assert!(matches!(error, AppError::Config(_)));
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains(":5:8: [bad] arch:"), "{error}");
    }

    #[test]
    fn environment_values() {
        let environment = Environment {
            timeout: Some("2m".into()),
            max_smp: Some("3".into()),
            ..Environment::default()
        };
        let resolved = resolve_environment(&environment).unwrap();
        assert_eq!(resolved.timeout, Some(Duration::from_secs(120)));
        assert_eq!(resolved.max_smp, Some(3));
        for bad in [
            Environment {
                timeout: Some("x".into()),
                ..Environment::default()
            },
            Environment {
                max_smp: Some("0".into()),
                ..Environment::default()
            },
        ] {
            assert!(matches!(resolve_environment(&bad), Err(AppError::Usage(_))));
        }
    }

    #[test]
    fn commands_honour_environment() {
        let (_directory, mut options) = workspace_with(
            "[x]\nfile = \"xguest\"\nsmp = \"max\"\nmachine = \"pc\"\nqemu_params = \"-m 64\"\n",
        );
        options.environment = Environment {
            qemu: Some("/opt/qemu".into()),
            machine: Some("microvm".into()),
            max_smp: Some("2".into()),
            ..Environment::default()
        };
        options.extra_qemu_args = vec!["-d".into(), "int".into()];
        let resolved = resolve_environment(&options.environment).unwrap();
        let (_, planned) = plan(&options).unwrap();
        let command = command_for(&options, &resolved, &planned[0].entry, Arch::X86_64, Accel::Tcg);
        let line = command.shell_line();
        assert!(
            line.starts_with("/opt/qemu -nodefaults -display none -no-reboot -machine microvm ")
                && line.contains(" -accel tcg "),
            "{line}"
        );
        assert!(line.contains("-smp 2 "), "{line}");
        assert!(line.ends_with("-m 64 -d int"), "{line}");
    }

    #[test]
    fn unknown_name_is_an_error() {
        let (_directory, mut options) = workspace_with("[x]\nfile = \"xguest\"\n");
        options.selection.names = vec!["nope".into()];
        let error = run(&options).unwrap_err();
        assert_eq!(error.to_string(), "no test matches 'nope'");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn totals_and_exit_codes() {
        let result = |outcome: Outcome| TestResult::not_run("t", outcome);
        let report = Report {
            results: vec![
                result(Outcome::Pass { summary: None }),
                result(Outcome::Skip { reason: "x".into() }),
                result(Outcome::Timeout {
                    after: Duration::from_secs(1),
                }),
                result(Outcome::HypervisorError { reason: "x".into() }),
            ],
        };
        assert_eq!(report.totals().to_string(), "1 passed, 2 failed, 1 skipped");
        assert_eq!(report.exit_code(), 1);
        let report = Report {
            results: vec![result(Outcome::Skip { reason: "x".into() })],
        };
        assert_eq!(report.exit_code(), 0);
        assert_eq!(AppError::Interrupted.exit_code(), 130);
    }

    #[test]
    fn fake_qemu_end_to_end() {
        let (directory, mut options) = workspace_with(
            "[good]\nfile = \"xguest\"\ntest_args = \"pass\"\n[bad]\nfile = \"xguest\"\ntest_args = \"x\"\n",
        );
        let image = workspace::image_path(directory.path(), Arch::X86_64, "xguest");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, "").unwrap();
        // A fake QEMU: passes when -append says "pass", else fails to start like a bad option.
        let fake = fake_qemu(
            directory.path(),
            "#!/bin/sh\ncase \"$*\" in *'-append pass'*) echo 'SUMMARY: 1 tests'; echo 'EXIT: STATUS=1'; exit 1;; esac\n\
             echo 'fake-qemu: bad option' >&2; exit 1\n",
        );
        options.environment.qemu = Some(fake.clone());
        options.accel = Some(Accel::Tcg);
        options.jobs = 2;
        let report = run(&options).unwrap();
        assert_eq!(
            report.outcome("good"),
            Some(&Outcome::Pass {
                summary: Some("1 tests".into())
            })
        );
        assert!(matches!(report.outcome("bad"), Some(Outcome::QemuError { .. })));
        assert_eq!(report.exit_code(), 1);
        let log = std::fs::read_to_string(directory.path().join("logs/bad.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].starts_with(&format!("{fake} -nodefaults")), "{log}");
        assert!(lines[0].contains(" -append x -initrd "), "{log}");
        assert!(lines[0].ends_with("logs/bad.env"), "{log}");
        let environment = std::fs::read_to_string(directory.path().join("logs/bad.env")).unwrap();
        assert!(environment.starts_with("ACCEL=tcg\n"), "{environment}");
        assert_eq!(lines[1], "fake-qemu: bad option");
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("FAIL bad (QEMU error: QEMU exited with status 1"),
            "{log}"
        );
        let summary = std::fs::read_to_string(directory.path().join("logs/SUMMARY")).unwrap();
        assert!(
            summary.starts_with("commit: ") && summary.ends_with("1 passed, 1 failed, 0 skipped\n"),
            "{summary}"
        );
        // A second run keeps the first one's logs in logs.old.
        run(&options).unwrap();
        assert!(directory.path().join("logs.old/bad.log").is_file());
    }
}
