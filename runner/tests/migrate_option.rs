//! `--migrate` (and `MIGRATION=yes`, README "Migration") with the real QEMU under TCG and the
//! x86 fixture guest: any test migrates once, after its report line N, and the log shows the
//! migration; a test with fewer report lines is not migrated and not failed for it; a run that
//! cannot migrate skips saying why; `migrate = true` makes a migration run; a bad `migrate`
//! value is a one-line config error.

mod project;

use std::path::Path;
use std::process::Output;

use project::runner;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn log(logs: &Path, name: &str) -> String {
    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default()
}

/// `--migrate` migrates a passing and a failing test once, right after their first report
/// line: the verdicts stay what the guest says (a migration hides no failure) and each log
/// shows the request, the migration and the guest going on on the destination.
#[test]
fn migrate_injects_one_migration_after_the_first_report_line() {
    let directory = tempfile::tempdir().unwrap();
    let logs = directory.path().join("logs");
    let output = runner(&logs)
        .args(["--migrate", "fixture-pass", "fixture-fail"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("PASS fixture-pass (2 tests)"), "{all}");
    assert!(all.contains("FAIL fixture-fail"), "{all}");
    for name in ["fixture-pass", "fixture-fail"] {
        let log = log(&logs, name);
        assert!(log.contains("VMUNIT_MIGRATE_AFTER_REPORT=1"), "{log}");
        let first = log.find("PASS: a check that holds").expect("first report");
        let request = log.find("MIGRATE: NOW").expect("a migration request");
        let completed = log.find("vmunit: migration 1: completed").expect("a migration");
        let info = log
            .find("INFO: migrated after report line 1 (VMUNIT_MIGRATE_AFTER_REPORT)")
            .expect("the guest's note");
        assert!(
            first < request && request < completed && completed < info,
            "{log}"
        );
        assert_eq!(log.matches("MIGRATE: NOW").count(), 1, "{log}");
        assert!(!log.contains("migration 2:"), "{log}");
    }
    assert!(
        !logs.join(".vmunit-scratch").exists(),
        "the scratch area was not removed"
    );
}

/// `MIGRATION=yes` is `--migrate`; `--migrate-after N` past the guest's last report line
/// migrates nothing and the run keeps its verdict, with a note saying it was not migrated.
#[test]
fn migration_yes_and_a_test_that_never_reaches_its_report_line() {
    let directory = tempfile::tempdir().unwrap();
    let logs = directory.path().join("logs");
    let output = runner(&logs)
        .env("MIGRATION", "yes")
        .arg("fixture-pass")
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(log(&logs, "fixture-pass").contains("vmunit: migration 1: completed"));

    let logs = directory.path().join("logs-after");
    let output = runner(&logs)
        .args(["--migrate", "--migrate-after", "3", "fixture-pass"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("PASS fixture-pass (2 tests)"), "{all}");
    assert!(
        all.contains("--migrate: not migrated: the guest printed fewer than 3 report lines"),
        "{all}"
    );
    let log = log(&logs, "fixture-pass");
    assert!(!log.contains("MIGRATE: NOW"), "{log}");
    assert!(log.contains("VMUNIT_MIGRATE_AFTER_REPORT=3"), "{log}");

    // A guest that panics before any report line keeps its verdict: not migrated, not failed
    // for that (it fails for its panic).
    let output = runner(&logs)
        .args(["--migrate", "fixture-panic"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("FAIL fixture-panic"), "{all}");
    assert!(!all.contains("migration failed"), "{all}");
    assert!(
        all.contains("--migrate: not migrated: the guest printed no report line"),
        "{all}"
    );

    let output = runner(&logs)
        .env("MIGRATION", "sometimes")
        .arg("fixture-pass")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("MIGRATION: 'sometimes' is neither yes nor no"));
}

/// In a table of its own: a run with `migrate = "reason"` or `migrate = false`, or with an
/// expect script, skips under `--migrate` saying why (and runs without it); `migrate = true`
/// makes the selftest's migration mode a migration run.
#[test]
fn unmigratable_runs_skip_and_migrate_true_makes_a_migration_run() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("unittests.toml");
    std::fs::write(
        &config,
        "[reasoned]\nfile = \"fixture\"\ntest_args = \"pass\"\n\
         migrate = \"its device has no migration support\"\n\
         [plain-false]\nfile = \"fixture\"\ntest_args = \"pass\"\nmigrate = false\n\
         [scripted]\nfile = \"fixture\"\ntest_args = \"pass\"\n\
         expect = [{ expect = \"SUMMARY\" }]\n\
         [keyed]\nfile = \"selftest\"\ntest_args = \"migration\"\nmigrate = true\ntimeout = 60\n",
    )
    .unwrap();
    let logs = directory.path().join("logs");
    let output = runner(&logs)
        .arg("--config")
        .arg(&config)
        .arg("--migrate")
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("SKIP reasoned (--migrate: cannot migrate: its device has no migration support)"),
        "{all}"
    );
    assert!(
        all.contains("SKIP plain-false (--migrate: cannot migrate: migrate = false)"),
        "{all}"
    );
    assert!(
        all.contains("SKIP scripted (--migrate: cannot migrate: its expect script drives the console"),
        "{all}"
    );
    assert!(all.contains("PASS keyed"), "{all}");
    let keyed = log(&logs, "keyed");
    assert!(keyed.contains("VMUNIT_MIGRATION=yes"), "{keyed}");
    assert!(keyed.contains("vmunit: migration 1: completed"), "{keyed}");
    assert!(!keyed.contains("VMUNIT_MIGRATE_AFTER_REPORT"), "{keyed}");

    // Without --migrate they run as ever.
    let logs = directory.path().join("logs-plain");
    let output = runner(&logs)
        .arg("--config")
        .arg(&config)
        .args(["reasoned", "plain-false"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("PASS reasoned") && all.contains("PASS plain-false"),
        "{all}"
    );
    assert!(!log(&logs, "reasoned").contains("MIGRATE"));
}

/// A bad `migrate` value stops the runner with one line naming the file, line, table and key,
/// and exit status 2.
#[test]
fn a_bad_migrate_value_is_a_one_line_config_error() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("unittests.toml");
    for (body, expected) in [
        (
            "[a]\nfile = \"fixture\"\nmigrate = 1\n",
            ":3:11: [a] migrate: invalid type: integer `1`, expected true, false, or a one-line reason",
        ),
        (
            "[a]\nfile = \"fixture\"\nmigrate = \"\"\n",
            ":3:11: [a] migrate: invalid value: string \"\", expected true, false, or a one-line reason",
        ),
        (
            "[a]\nfile = \"fixture\"\ngroups = [\"migration\"]\nmigrate = false\n",
            ":4:11: [a] migrate: the run is in group `migration`",
        ),
    ] {
        std::fs::write(&config, body).unwrap();
        let output = runner(&directory.path().join("logs"))
            .arg("--config")
            .arg(&config)
            .args(["--no-build", "-n"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{body}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&config.display().to_string()) && stderr.contains(expected),
            "{body}: {stderr}"
        );
    }
}

/// Continuous migration whose guest says `END` at once (one round under TCG takes
/// milliseconds): the runner answers `END` only after one migration at least completed since
/// `BEGIN`, as the protocol promises the guest.
#[test]
fn end_is_answered_after_one_continuous_migration_at_least() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("unittests.toml");
    std::fs::write(
        &config,
        "[quick]\nfile = \"selftest\"\ntest_args = \"migration-continuous rounds=1\"\n\
         migrate = true\ntimeout = 60\n",
    )
    .unwrap();
    let logs = directory.path().join("logs");
    let output = runner(&logs)
        .arg("--config")
        .arg(&config)
        .arg("quick")
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let log = log(&logs, "quick");
    let begin = log.find("MIGRATE: BEGIN").expect("BEGIN");
    let completed = log.find("vmunit: migration 1: completed").expect("a migration");
    let done = log
        .find("Continuous migration complete")
        .expect("the guest went on");
    assert!(begin < completed && completed < done, "{log}");
}
