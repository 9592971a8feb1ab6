//! Every unittests.toml entry as its own test case, for `cargo test --test guests` and
//! `cargo nextest run --test guests` (libtest-mimic, `harness = false`).
//!
//! Under cargo test, guests boot only when asked: `VMUNIT_GUESTS=1`, or
//! `--ignored`/`--include-ignored`. Otherwise every case is listed and reported as ignored,
//! never as passed, so that `cargo test -p vmunit-runner` stays quick. Under nextest the cases
//! are tests like any other (.config/nextest.toml: `--profile quick` leaves them out). Listing never builds or boots anything; the
//! guests of the cases to run are built once, before the first runs. A run the runner skips
//! (wrong accelerator or architecture, disabled, a missing requirement, a missing image) is
//! ignored with the reason; nodefault runs are ignored unless run with `--include-ignored`.
//! Under nextest, which has no run-time skip, a run that skips only once booted fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use vmunit_runner::app;
use vmunit_runner::classify::Verdict;
use vmunit_runner::config::Accel;
use vmunit_runner::options::{Environment, Options};

/// The variable that turns booting on.
const ENABLE_VARIABLE: &str = "VMUNIT_GUESTS";
/// Set by cargo-nextest in the test processes it runs.
const NEXTEST_VARIABLE: &str = "NEXTEST_RUN_ID";
/// Set by cargo-nextest both when it lists a binary's tests and when it runs them.
const NEXTEST_LISTING_VARIABLE: &str = "NEXTEST";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runner crate lives in the workspace")
        .to_path_buf()
}

fn options() -> Result<Options, String> {
    let root = workspace();
    let mut options = Options::new(&root);
    options.environment = Environment::from_process();
    options.accel = match std::env::var("ACCEL") {
        Ok(accel) if !accel.is_empty() => Some(
            accel
                .parse::<Accel>()
                .map_err(|error| format!("ACCEL: {error}"))?,
        ),
        _ => None,
    };
    options.selection.all = true;
    options.quiet = true;
    options.build = false;
    Ok(options)
}

/// Runs one case through the runner, its logs in `<target>/vmunit-guests/<name>/`.
fn run_case(options: &Options, name: &str, build_error: Option<&str>) -> Result<Completion, Failed> {
    if let Some(error) = build_error {
        return Err(format!("the guests did not build: {error}").into());
    }
    let mut options = options.clone();
    options.selection.names = vec![glob::Pattern::escape(name)];
    options.log_dir = vmunit_runner::workspace::target_directory(&options.workspace)
        .join("vmunit-guests")
        .join(name.replace(['/', '\\'], "_"));
    let report = app::run(&options).map_err(|error| Failed::from(error.to_string()))?;
    let result = report
        .results
        .into_iter()
        .find(|result| result.name == name)
        .ok_or_else(|| Failed::from(format!("the runner reported no result for {name}")))?;
    let line = result.outcome.report_line(name);
    match result.outcome.verdict() {
        Verdict::Pass => Ok(Completion::Completed),
        // nextest has no run-time skip: a test that exits 0 counts as passed there, so a run
        // skipped only once booted (the guest skipped everything, or its image is missing) fails
        // under nextest rather than pass.
        Verdict::Skip if std::env::var_os(NEXTEST_VARIABLE).is_some() => Err(format!(
            "{line}\n    skipped at run time, which nextest cannot show: counted as a failure, not a pass"
        )
        .into()),
        Verdict::Skip => Ok(Completion::ignored_with(
            result.outcome.detail().unwrap_or_default(),
        )),
        Verdict::Fail | Verdict::Interrupted => {
            let mut message = line;
            for note in &result.notes {
                message.push_str(&format!("\n    {note}"));
            }
            if let Some(log) = &result.log {
                message.push_str(&format!("\n    log: {}", vmunit_runner::workspace::shown(log)));
            }
            message.push_str(&format!(
                "\n    reproduce alone with: {}",
                vmunit_runner::report::plain::Reproduce::of(&options).line(name, None, None)
            ));
            Err(message.into())
        }
    }
}

fn main() {
    let arguments = Arguments::from_args();
    // nextest users choose what runs through nextest itself (.config/nextest.toml): there
    // the cases are listed and run like any other test.
    let enabled = std::env::var(ENABLE_VARIABLE).is_ok_and(|value| value == "1")
        || std::env::var_os(NEXTEST_LISTING_VARIABLE).is_some();
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("guests: {error}");
            std::process::exit(2);
        }
    };
    let cases = match vmunit_runner::plan::cases(&options) {
        Ok(cases) => cases,
        Err(error) => {
            eprintln!("guests: {error}");
            std::process::exit(2);
        }
    };
    let shared = Arc::new(options.clone());
    let build_error: Arc<std::sync::OnceLock<Option<String>>> = Arc::new(std::sync::OnceLock::new());
    let trials: Vec<Trial> = cases
        .iter()
        .map(|case| {
            let options = Arc::clone(&shared);
            let build_error = Arc::clone(&build_error);
            let name = case.name.clone();
            Trial::ignorable_test(case.name.clone(), move || {
                run_case(&options, &name, build_error.get().and_then(Option::as_deref))
            })
            .with_ignored_flag(!enabled || case.nodefault || case.skip.is_some())
        })
        .collect();
    if !arguments.list {
        // Build the guests of the cases that will run, once, before any of them boots.
        let to_run: Vec<String> = trials
            .iter()
            .filter(|trial| !arguments.is_filtered_out(trial) && !arguments.is_ignored(trial))
            .map(|trial| trial.name().to_owned())
            .collect();
        let result = if to_run.is_empty() {
            Ok(())
        } else {
            app::build_runs(&options, &to_run)
        };
        let _ = build_error.set(result.err().map(|error| error.to_string()));
        if !enabled && to_run.is_empty() && !arguments.ignored && !arguments.include_ignored {
            eprintln!(
                "guests: every case is ignored; set {ENABLE_VARIABLE}=1 (or pass --ignored) to boot them"
            );
        }
    }
    libtest_mimic::run(&arguments, trials).exit();
}
