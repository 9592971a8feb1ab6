//! `--differential` through the binary and a fake QEMU whose guests print what the accelerator
//! (`-accel`) makes them: runs that agree, a line that passes under kvm and fails under tcg, a
//! KFAIL under kvm only, and a run unittests.toml keeps to kvm; in the plain, JSON and JUnit
//! outputs.

mod support;

use support::{FakeWorkspace, json_events, text};

/// A fake QEMU acting on `-append MODE` and `-accel ACCEL`: `agree` prints the same checks
/// under both (with observed values that differ), `differ` a check that fails under tcg,
/// `known` a KFAIL under kvm and a PASS under tcg.
const ACCEL_QEMU: &str = r#"#!/bin/sh
mode=none
accel=none
initrd=''
while [ $# -gt 0 ]; do
    if [ "$1" = "-append" ]; then mode=$2; fi
    if [ "$1" = "-accel" ]; then accel=$2; fi
    if [ "$1" = "-initrd" ]; then initrd=$2; fi
    shift
done
case "$mode:$accel" in
agree:*) echo "PASS: first (got $accel)"; echo 'PASS: second'; echo 'EXIT: STATUS=1'; exit 1;;
differ:kvm) echo 'PASS: same'; echo 'PASS: flag holds'; echo 'EXIT: STATUS=1'; exit 1;;
differ:tcg) echo 'PASS: same'; echo 'FAIL: flag holds (got 0)'; echo 'EXIT: STATUS=3'; exit 3;;
known:kvm) echo 'KFAIL: erratum bit reads 0 (got 1)'; echo 'EXIT: STATUS=1'; exit 1;;
known:tcg) echo 'PASS: erratum bit reads 0 (got 0)'; echo 'EXIT: STATUS=1'; exit 1;;
*) echo "fake-qemu: unknown mode $mode:$accel" >&2; exit 1;;
esac
"#;

const CONFIG: &str = "\
[agree]\nfile = \"xguest\"\ntest_args = \"agree\"\n\
[differ]\nfile = \"xguest\"\ntest_args = \"differ\"\n\
[known]\nfile = \"xguest\"\ntest_args = \"known\"\n\
[kvmonly]\nfile = \"xguest\"\ntest_args = \"agree\"\naccel = \"kvm\"\n";

fn workspace() -> FakeWorkspace {
    let workspace = FakeWorkspace::new(CONFIG);
    std::fs::write(workspace.qemu(), ACCEL_QEMU).unwrap();
    workspace
}

/// The runner with `--differential` (and no `ACCEL`, which it refuses).
fn differential(workspace: &FakeWorkspace) -> std::process::Command {
    let mut command = workspace.runner();
    command.env_remove("ACCEL").arg("--differential");
    command
}

/// Whether KVM is usable here; when it is not, `--differential` must say so and exit 2.
fn kvm_here(workspace: &FakeWorkspace) -> bool {
    if vmunit_runner::qemu::kvm_usable() {
        return true;
    }
    let output = differential(workspace).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--differential compares kvm with tcg, but /dev/kvm is not usable"),
        "{stderr}"
    );
    false
}

#[test]
fn runs_that_agree_show_no_disagreement() {
    let workspace = workspace();
    if !kvm_here(&workspace) {
        return;
    }
    let output = differential(&workspace).arg("agree").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("PASS agree@kvm"), "{stdout}");
    assert!(stdout.contains("PASS agree@tcg"), "{stdout}");
    assert!(
        stdout.contains(
            "differential (kvm vs tcg): 1 runs compared, 2 lines agree, 0 new disagreements, 0 declared, 0 lines on one side only"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("disagreements:"), "{stdout}");
    assert!(workspace.root().join("logs/agree@kvm.log").is_file());
    assert!(workspace.root().join("logs/agree@tcg.log").is_file());
}

#[test]
fn a_new_disagreement_is_listed_apart_from_declared_ones() {
    let workspace = workspace();
    if !kvm_here(&workspace) {
        return;
    }
    let output = differential(&workspace).args(["-j", "2"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let section = &stdout[stdout.find("differential (").expect(&stdout)..];
    assert!(
        section.starts_with(
            "differential (kvm vs tcg): 4 runs compared, 3 lines agree, 1 new disagreements, 2 declared, 0 lines on one side only\n\
             new disagreements:\n  \
             differ: flag holds\n    \
             kvm: PASS (PASS: flag holds); log: logs/differ@kvm.log\n    \
             tcg: FAIL (FAIL: flag holds (got 0)); log: logs/differ@tcg.log\n\
             declared disagreements:\n  \
             known: erratum bit reads 0\n    \
             kvm: KFAIL (KFAIL: erratum bit reads 0 (got 1)); log: logs/known@kvm.log\n    \
             tcg: PASS (PASS: erratum bit reads 0 (got 0)); log: logs/known@tcg.log\n  \
             kvmonly: the run\n    \
             kvm: pass; log: logs/kvmonly@kvm.log\n    \
             tcg: skip (kvm only, but ACCEL=tcg)\n"
        ),
        "{section}"
    );
    // The failed side is reproduced by its run's name and accelerator.
    assert!(stdout.contains("/run_tests differ --accel tcg\n"), "{stdout}");
}

#[test]
fn json_and_junit_carry_the_comparison() {
    let workspace = workspace();
    if !kvm_here(&workspace) {
        return;
    }
    let junit = workspace.root().join("junit.xml");
    let output = differential(&workspace)
        .args(["--format", "json", "--junit"])
        .arg(&junit)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let events = json_events(&stdout);
    let position = |kind: &str| {
        events
            .iter()
            .position(|event| event["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event: {stdout}"))
    };
    // The comparison comes after the last run and before the summary.
    assert_eq!(position("differential") + 1, position("summary"), "{stdout}");
    let comparison = &events[position("differential")];
    assert_eq!(comparison["accels"], serde_json::json!(["kvm", "tcg"]));
    assert_eq!(
        comparison["compared"],
        serde_json::json!(["agree", "differ", "known", "kvmonly"])
    );
    assert_eq!(
        comparison["new"],
        serde_json::json!([{
            "test": "differ",
            "scope": "line",
            "key": "flag holds",
            "occurrence": 1,
            "standing": "new",
            "sides": [
                {"accel": "kvm", "verdict": "PASS", "text": "PASS: flag holds", "log": "logs/differ@kvm.log"},
                {"accel": "tcg", "verdict": "FAIL", "text": "FAIL: flag holds (got 0)", "log": "logs/differ@tcg.log"},
            ],
        }])
    );
    let declared: Vec<&str> = comparison["declared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|each| each["test"].as_str().unwrap())
        .collect();
    assert_eq!(declared, ["known", "kvmonly"]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(
            "<testsuite name=\"differential\" tests=\"4\" skipped=\"0\" errors=\"0\" failures=\"1\">"
        ),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"1 new disagreements between kvm and tcg\" type=\"disagreement\">flag holds</failure>"),
        "{xml}"
    );
    // The totals of <testsuites> count the differential suite's cases too.
    assert!(
        xml.contains("<testsuites name=\"vmunit\" tests=\"12\" failures=\"2\""),
        "{xml}"
    );
}

#[test]
fn differential_refuses_an_accelerator() {
    let workspace = workspace();
    let output = workspace
        .runner()
        .args(["--differential", "--accel", "tcg"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
