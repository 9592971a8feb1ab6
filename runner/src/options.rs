//! The first stage: everything one invocation was asked to do ([`Options`]), read from the
//! command line (main.rs) and the runner's environment variables, checked.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Accel, Arch, parse_duration};
use crate::error::AppError;
use crate::logdir::LogLimit;
use crate::qemu::ArchProfile;
use crate::select::Selection;
use crate::workspace;

/// The output format (`--format`; `-t`/`--tap` is `--format tap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One kvm-unit-tests-style line per run and the totals.
    #[default]
    Plain,
    /// TAP version 13: a test point per run, the guest's report lines as a subtest.
    Tap,
    /// JSON lines: an object per event (run start, guest report line, run end, summary).
    Json,
}

/// Whether colour is wanted: stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

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
    /// `MIGRATION`: `yes` is `--migrate` (kvm-unit-tests' `MIGRATION=yes`).
    pub migration: Option<String>,
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
            migration: read("MIGRATION"),
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
    /// Where logs go (the previous invocation's files move to `<dir>.old`).
    pub log_dir: PathBuf,
    /// Wait for another invocation using the log directory instead of failing at once.
    pub wait_for_lock: bool,
    /// How much of each run's log is kept.
    pub log_limit: LogLimit,
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
    /// A selection that matches no run is accepted (`--allow-empty`) instead of an error.
    pub allow_empty: bool,
    /// Print nothing: the caller reads the returned report (the libtest harness).
    pub quiet: bool,
    /// Run each x86 run under both accelerators and compare their report lines
    /// (`--differential`, see `differential`).
    pub differential: bool,
    /// `--migrate`: migrate every run that is not a migration run once, after its report line
    /// N (this value); runs that cannot migrate are skipped (`plan::unmigratable`).
    pub migrate: Option<u32>,
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
    pub fn name(&self) -> String {
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
            wait_for_lock: false,
            log_limit: LogLimit::default(),
            environment: Environment::default(),
            kernel: None,
            guest_variables: Vec::new(),
            format: Format::Plain,
            junit: None,
            colour: false,
            progress: false,
            shard: None,
            rerun_failed: false,
            allow_empty: false,
            quiet: false,
            differential: false,
            migrate: None,
        }
    }
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

/// The QEMU program that runs guests of `arch`: `QEMU`, else `qemu-system-<arch>`. The one
/// place the program is decided; resolved once per override and architecture.
pub fn qemu_program(environment: &Environment, arch: Arch) -> String {
    static PROGRAMS: Mutex<BTreeMap<(Option<String>, Arch), String>> = Mutex::new(BTreeMap::new());
    let mut programs = PROGRAMS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    programs
        .entry((environment.qemu.clone(), arch))
        .or_insert_with(|| {
            environment
                .qemu
                .clone()
                .unwrap_or_else(|| ArchProfile::of(arch).default_program())
        })
        .clone()
}

/// Settings from the environment, checked.
pub struct Resolved {
    /// `TIMEOUT`, parsed.
    pub timeout: Option<Duration>,
    /// `MAX_SMP`, parsed.
    pub max_smp: Option<u32>,
    /// The host's CPU count.
    pub host_cpus: u32,
}

/// Checks the runner's environment variables.
pub fn resolve_environment(environment: &Environment) -> Result<Resolved, AppError> {
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
