//! Integration tests: the aarch64 fixture guests of unittests.toml (tests-aarch64/arm-fixture,
//! group selftest-negative) must be classified as expected under TCG. The one Arm-specific
//! ending is PSCI SYSTEM_OFF without an EXIT line: QEMU exits with 0, which must never pass.

use std::path::{Path, PathBuf};

use vmunit_runner::app;
use vmunit_runner::classify::Outcome;
use vmunit_runner::config::{Accel, Arch};
use vmunit_runner::options::{Environment, Options};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn aarch64_fixtures_are_classified() {
    let root = workspace();
    assert!(
        root.join("tests-aarch64/arm-fixture/Cargo.toml").is_file(),
        "the fixture guest crate tests-aarch64/arm-fixture does not exist"
    );
    let logs = tempfile::tempdir().unwrap();
    let mut options = Options::new(&root);
    options.selection.groups = vec!["selftest-negative".to_owned()];
    options.arch = Some(Arch::Aarch64);
    options.accel = Some(Accel::Tcg);
    options.jobs = 2;
    options.log_dir = logs.path().join("logs");
    options.environment = Environment::default();
    let report = app::run(&options).unwrap_or_else(|error| panic!("the runner failed: {error}"));
    let expect = |name: &str, matches: fn(&Outcome) -> bool| {
        let found = report
            .outcome(name)
            .unwrap_or_else(|| panic!("no result for {name} in {report:#?}"));
        assert!(matches(found), "{name}: unexpected outcome {found:?}");
    };
    expect("arm-fixture-pass", |outcome| {
        matches!(outcome, Outcome::Pass { .. })
    });
    expect("arm-fixture-fail", |outcome| {
        matches!(outcome, Outcome::Fail { .. })
    });
    expect("arm-fixture-skip", |outcome| {
        matches!(outcome, Outcome::Skip { .. })
    });
    expect(
        "arm-fixture-panic",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("panicked at") && reason.contains("on purpose")),
    );
    expect(
        "arm-fixture-exception",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("UNKNOWN (EC 0x00)")),
    );
    expect("arm-fixture-hang", |outcome| {
        matches!(outcome, Outcome::Timeout { .. })
    });
    // The overflow faults on the guard page below the kernel stack (SP_EL0) and is reported
    // from the exception stack (SP_EL1): a crash, never a hang (Timeout).
    expect(
        "arm-fixture-stack-overflow",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("DABT_EL1")),
    );
    // Subtests judge `should_fault` by exception class, and a time bound, as on x86.
    expect(
        "arm-fixture-subtests",
        |outcome| matches!(outcome, Outcome::Fail { reason } if reason == "4 unexpected failures"),
    );
    let subtests = report
        .results
        .iter()
        .find(|result| result.name == "arm-fixture-subtests")
        .unwrap();
    let log = std::fs::read_to_string(subtests.log.as_ref().unwrap()).unwrap();
    for expected in [
        "PASS: passes: a check inside a subtest",
        "FAIL: faults_unexpectedly: returns without an exception (got UNKNOWN (EC 0x00)",
        "PASS: should_fault_any: faults, as expected (UNKNOWN (EC 0x00)",
        "PASS: should_fault_undefined: faults with Unknown, as expected (got UNKNOWN (EC 0x00)",
        "FAIL: should_fault_other_class: faults with DataAbort, as expected (got UNKNOWN (EC 0x00)",
        "FAIL: should_fault_but_returns: faults, as expected (it returned)",
        "FAIL: overruns_time_bound: finishes within 20 ms (took ",
        "SUMMARY: 7 tests, 4 unexpected failures",
    ] {
        assert!(
            log.lines().any(|line| line.starts_with(expected)),
            "{expected:?} in {log}"
        );
    }
    expect(
        "arm-fixture-psci-off-no-exit",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("no EXIT line")),
    );
    // Safe runtime functions refuse what would break the runtime: a GIC offset outside its
    // frame, a PSCI call that would start code through the plain (safe) interface.
    expect(
        "arm-fixture-gic-offset-outside",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("no 4-byte register of the distributor")),
    );
    expect(
        "arm-fixture-psci-entry-point-call",
        |outcome| matches!(outcome, Outcome::Crash { reason } if reason.contains("not a PSCI function without an entry point")),
    );
}
