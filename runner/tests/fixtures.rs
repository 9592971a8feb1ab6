//! Integration tests: the fixture guests of unittests.toml (group selftest-negative) must be
//! classified as expected under the default accelerator and under TCG, and the command line must
//! fail cleanly on a broken config or a QEMU that exits at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use vmunit_runner::app;
use vmunit_runner::classify::Report;
use vmunit_runner::classify::{Outcome, Verdict};
use vmunit_runner::config::{Accel, Arch};
use vmunit_runner::options::{Environment, Options};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The runner binary with the runner's environment variables cleared.
fn runner() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmunit-runner"));
    for variable in ["QEMU", "ACCEL", "TIMEOUT", "MAX_SMP", "MACHINE", "MIGRATION"] {
        command.env_remove(variable);
    }
    command.current_dir(workspace());
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Builds (through the runner's own cargo step) and runs the selftest-negative fixtures.
/// The report, and the directory holding its logs (removed when dropped).
fn run_fixtures(accel: Option<Accel>) -> (Report, tempfile::TempDir) {
    let root = workspace();
    assert!(
        root.join("tests-x86/fixture/Cargo.toml").is_file(),
        "the fixture guest crate tests-x86/fixture does not exist: these tests cannot pass without it"
    );
    let logs = tempfile::tempdir().unwrap();
    let mut options = Options::new(&root);
    options.selection.groups = vec!["selftest-negative".to_owned()];
    options.accel = accel;
    options.jobs = 2;
    options.log_dir = logs.path().join("logs");
    options.environment = Environment::default();
    let report = app::run(&options).unwrap_or_else(|error| panic!("the runner failed: {error}"));
    (report, logs)
}

fn check(report: &Report, kvm: bool) {
    let outcome = |name: &str| {
        report
            .outcome(name)
            .unwrap_or_else(|| panic!("no result for {name} in {report:#?}"))
            .clone()
    };
    let expect = |name: &str, matches: fn(&Outcome) -> bool| {
        let found = outcome(name);
        assert!(matches(&found), "{name}: unexpected outcome {found:?}");
    };
    expect("fixture-pass", |outcome| matches!(outcome, Outcome::Pass { .. }));
    expect("fixture-fail", |outcome| matches!(outcome, Outcome::Fail { .. }));
    expect("fixture-skip", |outcome| matches!(outcome, Outcome::Skip { .. }));
    expect(
        "fixture-panic",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("panicked at") && reason.contains("on purpose")),
    );
    expect(
        "fixture-exception",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("#UD")),
    );
    expect(
        "fixture-triple-fault",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("triple fault")),
    );
    // An interrupt that never arrives: the guest's bounded wait ends in its own FAIL line.
    expect(
        "fixture-lost-interrupt",
        |outcome| matches!(outcome, Outcome::Fail { reason } if reason == "1 unexpected failures"),
    );
    // SMP bring-up: a missing CPU is a FAIL of smptest's count check.
    expect(
        "fixture-smp-missing-cpu",
        |outcome| matches!(outcome, Outcome::Fail { reason } if reason == "1 unexpected failures"),
    );
    expect("fixture-false-pass", |outcome| {
        matches!(outcome, Outcome::Fail { .. })
    });
    // The crash address is resolved against the image: the fixture's main is on the stack.
    let exception = report
        .results
        .iter()
        .find(|result| result.name == "fixture-exception")
        .unwrap();
    assert!(
        exception
            .notes
            .first()
            .is_some_and(|note| note.starts_with("at ") && note.contains(".rs:")),
        "{:?}",
        exception.notes
    );
    assert!(
        exception
            .notes
            .iter()
            .any(|note| note.contains("at main (tests-x86/fixture/src/main.rs:")),
        "{:?}",
        exception.notes
    );
    let log = std::fs::read_to_string(exception.log.as_ref().unwrap()).unwrap();
    assert!(
        log.ends_with(&format!("    {}\n", exception.notes.last().unwrap())),
        "{log}"
    );
    // Subtests: each way a subtest can end is reported on its own, and a fault in one does
    // not stop the next; a selection of the passing ones passes. Subtests borrow the suite
    // state (one that takes a type the init does not return fails), a parameterized one
    // reports each case under its name (a failing or faulting case does not stop the next),
    // and one that overruns its time bound fails.
    expect(
        "fixture-subtests",
        |outcome| matches!(outcome, Outcome::Fail { reason } if reason == "6 unexpected failures"),
    );
    let subtests = report
        .results
        .iter()
        .find(|result| result.name == "fixture-subtests")
        .unwrap();
    // The subtests the image declares, read from its names section, in the order they run.
    assert_eq!(
        subtests.subtests.first().map(String::as_str),
        Some("passes"),
        "{:?}",
        subtests.subtests
    );
    assert!(
        subtests.subtests.len() >= 13 && subtests.subtests.iter().any(|name| name == "overruns_time_bound"),
        "{:?}",
        subtests.subtests
    );
    let log = std::fs::read_to_string(subtests.log.as_ref().unwrap()).unwrap();
    let report_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(": ") && !line.starts_with("INFO"))
        .collect();
    for expected in [
        "PASS: passes: a check inside a subtest",
        "FAIL: faults_unexpectedly: returns without an exception (got #UD",
        "PASS: should_fault_any: faults, as expected (#UD",
        "PASS: should_fault_invalid_opcode: faults with UD, as expected (got #UD",
        "FAIL: should_fault_but_returns: faults, as expected (it returned)",
        "SKIP: ignored: ignored: name it on the command line to run it",
        "PASS: reads_suite_state: the suite's init ran before the subtest",
        "PASS: changes_suite_state: the subtest is the state's first visitor",
        "FAIL: takes_wrong_state: the suite's init returns the u32 this subtest takes (got fixture::Suite)",
        "PASS: parameterized: number 2: 2 is even",
        "FAIL: parameterized: number 3: 3 is even",
        "FAIL: parameterized: number 0: returns without an exception (got #UD",
        "PASS: parameterized: number 4: 4 is even",
        "PASS: parameterized_with_state: number 2: the case and the suite state arrive together",
        "PASS: within_time_bound: a quick check under a time bound",
        "PASS: overruns_time_bound: a check that passes, too late",
        "FAIL: overruns_time_bound: finishes within 20 ms (took ",
        "SUMMARY: 17 tests, 6 unexpected failures, 1 skipped",
    ] {
        assert!(
            report_lines.iter().any(|line| line.starts_with(expected)),
            "{expected:?} in {log}"
        );
    }
    // The suite exit gets the state back, with the subtests' change.
    assert!(
        log.lines()
            .any(|line| line == "INFO: tear_down: the suite state comes back with visits = 1"),
        "{log}"
    );
    expect(
        "fixture-subtests-selected",
        |outcome| matches!(outcome, Outcome::Pass { summary: Some(summary) } if summary == "3 tests"),
    );
    // A console script whose line never comes fails the run, though the guest passed.
    expect("fixture-console-timeout", |outcome| {
        matches!(outcome, Outcome::Fail { reason }
            if reason == "console script: expect step 1: QEMU ended before a line with \"a line that never comes\"")
    });
    assert_eq!(
        outcome("fixture-hang"),
        Outcome::Timeout {
            after: Duration::from_secs(2)
        }
    );
    let internal = report
        .results
        .iter()
        .find(|result| result.name == "fixture-kvm-internal-error")
        .unwrap();
    if kvm && vmunit_runner::environment::host_kvm_module() != "kvm_pvm" {
        // A KVM that runs SSE natively has no internal error to show.
        assert!(
            matches!(internal.outcome, Outcome::Pass { .. }),
            "{:?}",
            internal.outcome
        );
    } else if kvm {
        // kvm_pvm emulates ring-0 code and its emulator lacks SSE: QEMU pauses the VM.
        assert!(
            matches!(&internal.outcome, Outcome::HypervisorError { reason } if reason.contains("KVM internal error")),
            "{:?}",
            internal.outcome
        );
        assert!(
            internal.duration < Duration::from_secs(5),
            "took {:?}",
            internal.duration
        );
    } else {
        assert!(
            matches!(&internal.outcome, Outcome::Skip { reason } if reason.contains("kvm only")),
            "{:?}",
            internal.outcome
        );
    }
    // fixture-pass and fixture-subtests-selected, and fixture-kvm-internal-error where SSE runs.
    let expected_passes = if kvm && vmunit_runner::environment::host_kvm_module() != "kvm_pvm" {
        3
    } else {
        2
    };
    // The group also holds other architectures' fixtures (runner/tests/aarch64_fixtures.rs).
    let passed = report
        .results
        .iter()
        .filter(|result| result.name.starts_with("fixture-") && result.outcome.verdict() == Verdict::Pass)
        .count();
    assert_eq!(passed, expected_passes, "{report:#?}");
}

#[test]
fn fixtures_under_the_default_accelerator() {
    let kvm = vmunit_runner::plan::current_accel(None, Some(Arch::X86_64)) == Accel::Kvm;
    check(&run_fixtures(None).0, kvm);
}

#[test]
fn fixtures_under_tcg() {
    check(&run_fixtures(Some(Accel::Tcg)).0, false);
}

#[test]
fn broken_config_is_one_located_line_and_exit_2() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("unittests.toml");
    std::fs::write(
        &config,
        "[msr]\nfile = \"msr\"\n\n[cpuid]\nsmp = 2\nbogus = true\n",
    )
    .unwrap();
    for extra in [&["-l"][..], &["--no-build"][..]] {
        let output = runner()
            .arg("--config")
            .arg(&config)
            .args(extra)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let expected = format!("{}:6:1: [cpuid] bogus: unknown field `bogus`", config.display());
        assert!(stderr.starts_with(&expected), "{stderr}");
    }
    std::fs::write(&config, "[msr]\nsmp = 0\n").unwrap();
    let output = runner().arg("--config").arg(&config).arg("-l").output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("unittests.toml:2:7: [msr] smp: "), "{stderr}");
    // A range whose floor exceeds its cap: one line naming the file, line, entry and key.
    std::fs::write(&config, "[msr]\nfile = \"msr\"\nsmp = \"8-3\"\n").unwrap();
    let output = runner().arg("--config").arg(&config).arg("-l").output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let expected = format!(
        "{}:3:7: [msr] smp: invalid value: string \"8-3\"",
        config.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn unknown_test_name_is_exit_2() {
    let output = runner().args(["-l", "no-such-test*"]).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr.trim(), "vmunit: no test matches 'no-such-test*'");
}

#[test]
fn listing_and_dry_run() {
    let output = runner().args(["-l", "-g", "selftest-negative"]).output().unwrap();
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    let config = vmunit_runner::config::Config::load(&workspace().join("unittests.toml")).unwrap();
    let negative: Vec<&str> = config
        .entries
        .iter()
        .filter(|entry| entry.in_group("selftest-negative"))
        .map(|entry| entry.name.as_str())
        .collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), negative);
    let output = runner().arg("-l").output().unwrap();
    let (stdout, _) = text(&output);
    assert!(
        !stdout.contains("fixture-"),
        "nodefault runs are listed: {stdout}"
    );

    let output = runner()
        .args(["-n", "--accel", "tcg", "selftest", "--", "-d", "int"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    if workspace().join("tests-x86/selftest").is_dir() {
        let line = stdout.lines().next().unwrap_or_default();
        // The line writes the environment file it names first, so that it runs as printed.
        assert!(line.starts_with("mkdir -p "), "{stdout}");
        assert!(line.contains(" && qemu-system-x86_64 -nodefaults"), "{stdout}");
        assert!(
            line.contains("-accel tcg") && line.contains("-append 'selftest-arg1 key=value'"),
            "{line}"
        );
        assert!(line.ends_with(" -d int"), "{line}");
    }
}

#[test]
fn qemu_that_exits_1_at_once_is_never_a_pass() {
    // A workspace of its own with one guest image, so no real guest needs to build.
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    std::fs::write(root.join("Cargo.toml"), "").unwrap();
    std::fs::write(
        root.join("unittests.toml"),
        "[fake-pass]\nfile = \"fake\"\ntest_args = \"pass\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("tests-x86/fake")).unwrap();
    let image = root.join("target/x86_64-unknown-none/release/fake");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, "").unwrap();
    let fake = root.join("qemu");
    std::fs::write(&fake, "#!/bin/sh\necho 'qemu: unsupported option' >&2\nexit 1\n").unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    for program in [fake.as_path(), Path::new("/bin/false")] {
        let output = runner()
            .current_dir(root)
            .env_remove("CARGO_TARGET_DIR")
            .env("QEMU", program)
            .args(["--no-build", "--accel", "tcg", "fake-pass"])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stdout.contains("FAIL fake-pass (QEMU error: QEMU exited with status 1 and no EXIT line"),
            "{stdout}"
        );
        assert!(stdout.contains("./run_tests fake-pass"), "{stdout}");
        assert!(stdout.ends_with("0 passed, 1 failed, 0 skipped\n"), "{stdout}");
        let log = std::fs::read_to_string(root.join("logs/fake-pass.log")).unwrap();
        let first = log.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!(" && {} -nodefaults", program.display())),
            "{log}"
        );
    }
}
