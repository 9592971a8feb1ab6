//! vmunit-runner's command line: parses options (clap), installs the Ctrl-C handler, and runs
//! the selected guest tests through the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmunit_runner::app;
use vmunit_runner::config::{self, Arch};
use vmunit_runner::error::{AppError, ExitStatus};
use vmunit_runner::execute;
use vmunit_runner::logdir::LogLimit;
use vmunit_runner::options::{self, Environment, Format, Kernel, Options, Shard};
use vmunit_runner::select::Selection;
use vmunit_runner::workspace;
use vmunit_runner::{eprintln, println};

const ENVIRONMENT_HELP: &str = "\
Environment variables:
  QEMU      QEMU binary to run instead of qemu-system-<arch>
  ACCEL     accelerator, kvm or tcg, with optional QEMU properties: tcg,thread=multi
            (default: kvm when /dev/kvm is usable, else tcg)
  TIMEOUT   timeout for every test, overriding unittests.toml (\"90s\", \"2m\"; 0 disables)
  MAX_SMP   CPU count for smp = \"max\" (brought into a \"MIN-MAX\" range) and upper bound
            for every smp value (default: nproc)
  MACHINE   QEMU machine type for every test (default: microvm on x86_64, virt on aarch64)
  MIGRATION yes: the same as --migrate (kvm-unit-tests' MIGRATION=yes; ignored by
            --standalone and --differential); no or empty: off
  NO_COLOR  when set and not empty, no colour even on a terminal
  VMUNIT_LOG_LIMIT  the same as --log-limit

Exit status: 0 all passed or skipped, 1 a test failed (or --differential found a new
disagreement), 2 usage, config or build error, logs that could not be written, or
--differential with x86 tests but no usable KVM, 130 interrupted.";

/// Builds the vmunit guest tests and runs them under QEMU, kvm-unit-tests style.
#[derive(Parser, Debug)]
#[command(name = "vmunit-runner", version, after_help = ENVIRONMENT_HELP)]
struct Cli {
    /// Tests to run: names or glob patterns from unittests.toml (default: all)
    #[arg(value_name = "TESTS")]
    tests: Vec<String>,

    /// Run up to N tests in parallel
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,

    /// Run only tests in GROUP (repeatable, or a comma-separated list)
    #[arg(short = 'g', long = "group", value_name = "GROUP", value_delimiter = ',')]
    groups: Vec<String>,

    /// Also run tests in group nodefault
    #[arg(short = 'a', long = "all")]
    all: bool,

    /// Print each QEMU command before it runs; show nodefault tests that were left out
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,

    /// List the selected tests and exit
    #[arg(short = 'l', long = "list")]
    list: bool,

    /// Dry run: print the QEMU command lines instead of running them
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,

    /// Accelerator to use, kvm or tcg, optionally with QEMU properties (tcg,thread=multi)
    /// [default: kvm when /dev/kvm is usable, else tcg]
    #[arg(long, env = "ACCEL", value_name = "ACCEL")]
    accel: Option<vmunit_runner::config::AccelSetting>,

    /// Run only guests of this architecture (others SKIP)
    #[arg(long, value_enum, value_name = "ARCH")]
    arch: Option<Arch>,

    /// Do not build the guests first
    #[arg(long)]
    no_build: bool,

    /// Read test runs from PATH instead of <workspace>/unittests.toml
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Write logs to DIR instead of <workspace>/logs (a new, empty or vmunit log directory)
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,

    /// When another run is using the log directory, wait for it instead of failing at once
    #[arg(long)]
    wait_for_lock: bool,

    /// Keep at most SIZE of each run's log (its head and tail), such as 16MiB or 500KB; 0
    /// keeps everything [default: 16MiB]
    #[arg(long, env = "VMUNIT_LOG_LIMIT", value_name = "SIZE")]
    log_limit: Option<LogLimit>,

    /// Write one standalone shell script per unittests.toml entry into DIR (guest image
    /// embedded, QEMU configuration baked in) and exit; the guests must be built
    #[arg(long, value_name = "DIR", conflicts_with_all = ["tests", "kernel", "list"])]
    standalone: Option<PathBuf>,

    /// Boot this ELF image on its own instead of unittests.toml's selection (settings come
    /// from the entry of the same name, if any); `cargo run` of a test crate uses this
    #[arg(long, value_name = "PATH", conflicts_with_all = ["tests", "groups", "all", "list"])]
    kernel: Option<PathBuf>,

    /// With --kernel: the guest's arguments, replacing the entry's test_args
    #[arg(long, value_name = "ARGS", requires = "kernel")]
    append: Option<String>,

    /// Run only part K of N of the selection (1 <= K <= N): every N-th run from the K-th
    #[arg(long, value_name = "K/N", conflicts_with = "kernel")]
    shard: Option<Shard>,

    /// Run the tests that failed or were interrupted in the last run (as recorded in
    /// <log-dir>/results.json)
    #[arg(long, conflicts_with_all = ["tests", "kernel"])]
    rerun_failed: bool,

    /// Print the most CPUs QEMU accepts for the machine (MACHINE, else the default) under the
    /// accelerator, and exit (details on stderr)
    #[arg(long, conflicts_with_all = ["tests", "kernel", "list", "dry_run"])]
    probe_maxsmp: bool,

    /// Accept a selection that matches no test (by default an error, exit 2) and run nothing
    #[arg(long)]
    allow_empty: bool,

    /// Output format: plain lines, TAP version 13, or JSON lines (one object per event)
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Plain)]
    format: Format,

    /// Print TAP version 13 (the same as --format tap)
    #[arg(short = 't', long = "tap", conflicts_with = "format")]
    tap: bool,

    /// Run each selected x86 test under both kvm and tcg (as NAME@kvm, NAME@tcg) and compare
    /// their report lines, pairing a line by its text up to " (got " (else without a trailing
    /// "(...)"), then with numbers masked; prints each line whose verdict differs, new ones
    /// apart from those a KFAIL/XFAIL/SKIP or an accel-only entry declares, and lines printed
    /// on one side only apart again (exit 1 on a new one; 2 when KVM is unusable). aarch64
    /// tests run under gic-version=3 and =2 instead (NAME@gicv3, NAME@gicv2), except those of
    /// groups gic/its, those whose machine names its GIC version and those with over 8 CPUs
    #[arg(long, conflicts_with_all = ["accel", "kernel", "rerun_failed", "probe_maxsmp", "standalone"])]
    differential: bool,

    /// Live-migrate every selected test once, right after its first report line (the guest's
    /// runtime asks at that point); tests in group migration migrate as they ask; tests that
    /// cannot migrate (migrate = false or a reason, an expect script, a QEMU test device whose
    /// state does not migrate) SKIP saying why; a test that prints no report line is not
    /// migrated, and not failed for it (README "Migration")
    #[arg(long, conflicts_with_all = ["differential", "standalone", "probe_maxsmp"])]
    migrate: bool,

    /// With --migrate: migrate after report line N instead of the first
    #[arg(long, value_name = "N", requires = "migrate",
          value_parser = clap::value_parser!(u32).range(1..))]
    migrate_after: Option<u32>,

    /// Also write a JUnit XML report to FILE
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,

    /// Add KEY=VALUE to every guest's environment file (repeatable; overrides the tables' env)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_variable)]
    guest_variables: Vec<(String, String)>,

    /// Extra QEMU arguments, appended to every command line (after --)
    #[arg(last = true, value_name = "EXTRA_QEMU_ARGS")]
    extra_qemu_args: Vec<String>,
}

/// Parses `--env KEY=VALUE`.
fn parse_variable(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    config::check_variable(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

fn main() -> ExitCode {
    // A reader that goes away (`./run_tests | head`) makes std's printing panic; `write_line`
    // catches that panic, and this hook keeps it from printing a message and backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if !message.starts_with(vmunit_runner::CLOSED_STREAM_PANIC) {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(status) => status.into(),
        Err(error) => {
            if execute::interrupted() || matches!(error, AppError::Interrupted) {
                eprintln!("vmunit: interrupted");
                return ExitStatus::Interrupted.into();
            }
            eprintln!("{}", message(&error));
            error.exit_status().into()
        }
    }
}

/// The one line printed for an error: config errors start with file:line:col.
fn message(error: &AppError) -> String {
    match error {
        AppError::Config(error) => error.to_string(),
        other => format!("vmunit: {other}"),
    }
}

fn run(cli: Cli) -> Result<ExitStatus, AppError> {
    let workspace = workspace::locate()
        .or_else(|| {
            cli.config
                .as_deref()
                .and_then(|config| config.parent())
                .map(PathBuf::from)
        })
        .ok_or_else(|| {
            AppError::Usage(format!(
                "cannot find the workspace: no {} here or above",
                workspace::CONFIG_FILE
            ))
        })?;
    let mut options = Options::new(&workspace);
    if let Some(config) = cli.config {
        options.config = config;
    }
    if let Some(log_dir) = cli.log_dir {
        options.log_dir = log_dir;
    }
    options.wait_for_lock = cli.wait_for_lock;
    if let Some(limit) = cli.log_limit {
        options.log_limit = limit;
    }
    options.selection = Selection {
        names: cli.tests,
        groups: cli.groups,
        all: cli.all,
    };
    options.jobs = usize::from(cli.jobs);
    options.verbose = cli.verbose;
    options.dry_run = cli.dry_run;
    options.accel = cli.accel.as_ref().map(|setting| setting.accel);
    options.accel_properties = cli.accel.and_then(|setting| setting.properties);
    options.arch = cli.arch;
    options.build = !cli.no_build;
    options.extra_qemu_args = cli.extra_qemu_args;
    options.environment = Environment::from_process();
    options.guest_variables = cli.guest_variables;
    options.format = if cli.tap { Format::Tap } else { cli.format };
    options.junit = cli.junit;
    options.shard = cli.shard;
    options.rerun_failed = cli.rerun_failed;
    options.allow_empty = cli.allow_empty;
    options.differential = cli.differential;
    options.migrate = match options.environment.migration.as_deref() {
        _ if cli.migrate => Some(cli.migrate_after.unwrap_or(1)),
        Some("yes") if !cli.differential && cli.standalone.is_none() => Some(1),
        None | Some("no" | "yes") => None,
        Some(other) => {
            return Err(AppError::Usage(format!(
                "MIGRATION: '{other}' is neither yes nor no"
            )));
        }
    };
    options.colour = options::colour_wanted();
    options.progress = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if let Some(directory) = &cli.standalone {
        let written = app::standalone(&options, directory)?;
        println!(
            "wrote {} standalone tests to {}",
            written.len(),
            directory.display()
        );
        return Ok(ExitStatus::Success);
    }
    if let Some(image) = &cli.kernel {
        options.kernel = Some(Kernel::new(image, cli.append.clone())?);
        options.build = false;
    }

    if cli.probe_maxsmp {
        let (maximum, detail) = app::probe_max_smp(&options)?;
        eprintln!("vmunit: {detail}");
        println!("{maximum}");
        return Ok(ExitStatus::Success);
    }
    if cli.list {
        // With -v, each run's subtests (read from its image) follow it, indented; without,
        // no image is read.
        if !options.verbose {
            for name in app::list(&options)? {
                println!("{name}");
            }
            return Ok(ExitStatus::Success);
        }
        for (name, subtests) in app::list_with_subtests(&options)? {
            println!("{name}");
            for subtest in subtests {
                println!("    {subtest}");
            }
        }
        return Ok(ExitStatus::Success);
    }
    if let Err(error) = ctrlc::set_handler(execute::interrupt_all) {
        eprintln!("vmunit: cannot install the Ctrl-C handler: {error}");
    }
    let report = app::run(&options)?;
    Ok(report.exit_status())
}
