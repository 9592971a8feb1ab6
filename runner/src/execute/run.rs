//! The execute stage for one planned run: its QEMU command, guest environment file and log,
//! the QEMU process (through [`execute_interactive`]), and what the guest printed on the way.
//! The result is handed to `classify` as an [`Executed`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::{Bench, BenchCollector};
use crate::config::{Accel, Arch, TestEntry};
use crate::error::AppError;
use crate::execute::{ExecuteError, Execution, Sinks, execute_interactive, interrupted, migration};
use crate::guest_line::{ReportLine, SerialLine};
use crate::logdir::{RunLog, WriteFailures};
use crate::options::{Options, Resolved, qemu_program};
use crate::plan;
use crate::qemu::{self, ArchProfile, LaunchSpec, QemuCommand};
use crate::symbolise::CrashAddresses;
use crate::transcript::{ProcessExit, Stream};

/// How many guest report lines one run keeps for the structured outputs.
pub const MAX_REPORT_LINES: usize = 10_000;

/// Everything one run needs.
#[derive(Clone, Copy)]
pub struct RunSetup<'a> {
    /// The invocation's options.
    pub options: &'a Options,
    /// Its checked environment.
    pub resolved: &'a Resolved,
    /// The run's entry.
    pub entry: &'a TestEntry,
    /// The guest's architecture.
    pub arch: Arch,
    /// The accelerator.
    pub accel: Accel,
    /// The image it boots.
    pub image: &'a Path,
    /// Echo the guest's output as it arrives (interactive single-test mode).
    pub live: bool,
    /// Where a log that cannot be written is noted.
    pub failures: &'a WriteFailures,
}

/// What a run reports while it runs.
pub enum Progress<'a> {
    /// QEMU is about to start with this command line.
    Starting {
        /// The command, shell-quoted.
        command: &'a str,
    },
    /// QEMU started.
    Started {
        /// The command, shell-quoted.
        command: &'a str,
    },
    /// The guest printed a report line.
    Report(&'a ReportLine),
    /// The guest printed a malformed `BENCH:` line.
    MalformedBench(&'a str),
}

/// How far a run got.
pub enum Ran {
    /// A dry run: the command that would run.
    DryRun {
        /// The command, shell-quoted.
        command: String,
    },
    /// Not run, for this reason (the plan's decision once the image and QEMU are known).
    Skipped {
        /// Why.
        reason: String,
    },
    /// It could not be prepared, for this reason.
    Unprepared {
        /// Why.
        reason: String,
    },
    /// The runner was interrupted first.
    Interrupted,
    /// QEMU ran (or failed to start).
    Executed(Box<Executed>),
}

/// A run that got as far as starting QEMU.
pub struct Executed {
    /// The log file (the command line and every line QEMU printed).
    pub log: PathBuf,
    /// How QEMU ended, or why it did not start.
    pub execution: Result<Execution, ExecuteError>,
    /// The guest's report lines (at most [`MAX_REPORT_LINES`]).
    pub report: Vec<ReportLine>,
    /// Addresses in the guest's crash messages.
    pub crash_addresses: Vec<u64>,
    /// The measurements of its `BENCH:` lines.
    pub benches: Vec<Bench>,
    /// Notes on its malformed `BENCH:` lines.
    pub malformed_benches: Vec<String>,
    /// Notes on its log: cut (see [`RunLog`]), or not completely written.
    pub log_notes: Vec<String>,
    /// The program exited with status 0 having printed nothing, and its `--version` does not
    /// name QEMU: no guest ran.
    pub not_qemu: bool,
}

/// Runs one planned run: checks its image and devices, writes its environment file and log,
/// and runs QEMU.
pub fn run(setup: &RunSetup<'_>, progress: &mut dyn FnMut(Progress<'_>)) -> Ran {
    let RunSetup {
        options,
        resolved,
        entry,
        image,
        live,
        accel,
        failures,
        ..
    } = *setup;
    if !options.dry_run
        && let Some(reason) = plan::unmet_image(image)
    {
        return Ran::Skipped { reason };
    }
    let command = command_for(setup);
    let line = command.shell_line();
    let base = crate::environment::guest_environment(accel);
    let migration_mode = migration::mode(entry, options.migrate);
    let environment = merged_environment(
        &base,
        &[
            &migration::environment(migration_mode),
            &entry.env,
            &options.guest_variables,
        ],
    );
    let environment_file = environment_path(&options.log_dir, &entry.name);
    // What a user copies (`-n`, a log's first line) writes the environment file it names, so
    // that it works as printed: before the run, and after the log moved to logs.old/. The
    // runner's own HOST_TIME is taken afresh there (`date +%s`), as the runner takes it.
    let runner_time = base.lines().find(|line| {
        line.split_once('=')
            .is_some_and(|(key, _)| key == crate::environment::HOST_TIME)
    });
    let runnable = self_contained_line(&line, &environment_file, &environment, runner_time);
    if options.dry_run {
        return Ran::DryRun { command: runnable };
    }
    if let Some(reason) = plan::unmet_device_requirement(&entry.requires, &command.program) {
        return Ran::Skipped { reason };
    }
    progress(Progress::Starting { command: &line });
    let path = log_path(&options.log_dir, &entry.name);
    if let Err(error) = std::fs::write(&environment_file, &environment) {
        return Ran::Unprepared {
            reason: format!("cannot write the guest environment: {error}"),
        };
    }
    // RunLog keeps its first write error for `finish`; its writes themselves never fail.
    let mut log = RunLog::create(&path, options.log_limit);
    let _ = writeln!(log, "{runnable}");
    let timeout = entry.effective_timeout(resolved.timeout);
    progress(Progress::Started { command: &line });
    let mut report: Vec<ReportLine> = Vec::new();
    let mut crashes = CrashAddresses::default();
    let mut benches = BenchCollector::default();
    let mut observe = |_: Stream, _: &str, line: Option<&SerialLine<'_>>| {
        let Some(line) = line else {
            return;
        };
        crashes.observe(line.crash_address);
        if let Some(note) = benches.observe(line) {
            progress(Progress::MalformedBench(&note));
        }
        if report.len() >= MAX_REPORT_LINES {
            return;
        }
        if let Some(report_line) = line.report() {
            progress(Progress::Report(&report_line));
            report.push(report_line);
        }
    };
    let sinks = Sinks {
        log: Some(&mut log),
        live,
        observer: Some(&mut observe),
    };
    let execution = if let Some(mode) = migration_mode {
        let scratch = migration::scratch_directory(&options.log_dir, &entry.name);
        migration::execute_migration(&command, timeout, sinks, &scratch, mode)
    } else {
        execute_interactive(&command, timeout, sinks, &entry.expect)
    };
    let end = log.finish();
    let mut log_notes: Vec<String> = end.cut.iter().map(|cut| format!("log cut: {cut}")).collect();
    if let Some(error) = &end.error {
        log_notes.push(format!("log incomplete: {}", failures.record(&path, error)));
    }
    if matches!(execution, Err(ExecuteError::Interrupted)) {
        return Ran::Interrupted;
    }
    let not_qemu = matches!(&execution, Ok(ran) if ran.exit == ProcessExit::Exited(0) && ran.transcript.is_empty())
        && !qemu::names_itself_qemu(&command.program);
    Ran::Executed(Box::new(Executed {
        log: path,
        execution,
        report,
        crash_addresses: crashes.addresses().to_vec(),
        benches: benches.benches,
        malformed_benches: benches.malformed,
        log_notes,
        not_qemu,
    }))
}

/// `command_line` (a QEMU command that reads the guest environment from `environment_file`)
/// preceded by the shell commands that write `environment` to that file. The line equal to
/// `runner_time` (the runner's own `HOST_TIME=...`, not one a table or `--env` set) is
/// written as `"HOST_TIME=$(date +%s)"`, so that a rerun tells the guest the time it runs at.
pub fn self_contained_line(
    command_line: &str,
    environment_file: &Path,
    environment: &str,
    runner_time: Option<&str>,
) -> String {
    // The paths as the QEMU command names them.
    let file = qemu::quote(&environment_file.display().to_string());
    let directory = environment_file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map_or_else(
            || ".".to_owned(),
            |parent| qemu::quote(&parent.display().to_string()),
        );
    let lines: Vec<String> = environment
        .lines()
        .map(|line| {
            if Some(line) == runner_time {
                format!("\"{}=$(date +%s)\"", crate::environment::HOST_TIME)
            } else {
                qemu::quote(line)
            }
        })
        .collect();
    // The marker makes the directory the line creates one the runner accepts as its log
    // directory afterwards (crate::logdir).
    let marker = crate::logdir::MARKER_FILE;
    format!(
        "mkdir -p {directory} && : > {directory}/{marker} && printf '%s\\n' {} > {file} && {command_line}",
        lines.join(" ")
    )
}

/// The guest environment: the runner's variables (`environment::guest_environment`), then the
/// table's `env`, then `--env`; a later value of a key replaces an earlier one in place.
pub fn merged_environment(base: &str, layers: &[&[(String, String)]]) -> String {
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
pub fn command_for(setup: &RunSetup<'_>) -> QemuCommand {
    let RunSetup {
        options,
        resolved,
        entry,
        arch,
        accel,
        image,
        ..
    } = *setup;
    let profile = ArchProfile::of(arch);
    let machine = plan::machine_for(options, entry, arch);
    let qboot = Path::new(qemu::QBOOT_PATH);
    let environment_file = environment_path(&options.log_dir, &entry.name);
    qemu::build_command(&LaunchSpec {
        profile,
        program: qemu_program(&options.environment, arch),
        machine,
        accel,
        accel_properties: options.accel_properties.as_deref(),
        smp: entry.smp.resolve(resolved.max_smp, resolved.host_cpus),
        image,
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

/// Makes sure every QEMU binary needed exists, installing QEMU once when possible.
pub fn ensure_qemu(options: &Options, programs: &[String]) -> Result<(), AppError> {
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
            if !installed && interrupted() {
                return Err(AppError::Interrupted);
            }
            return Err(AppError::QemuMissing(still.clone()));
        }
        return Ok(());
    }
    Err(AppError::QemuMissing((*first).clone()))
}

/// The log file name of a run: unique, as run names are (`config::check_name`) and the
/// `--kernel` run's name is a file name.
pub fn log_path(directory: &Path, name: &str) -> PathBuf {
    directory.join(format!("{name}.log"))
}
