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
    assert_eq!(comparison["sides"], serde_json::json!({"x86_64": ["kvm", "tcg"]}));
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
                {"side": "kvm", "verdict": "PASS", "text": "PASS: flag holds", "log": "logs/differ@kvm.log"},
                {"side": "tcg", "verdict": "FAIL", "text": "FAIL: flag holds (got 0)", "log": "logs/differ@tcg.log"},
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

/// A fake QEMU acting on `-machine`: `timer` fires under a GICv3 and not under a GICv2.
const GIC_QEMU: &str = r#"#!/bin/sh
mode=none
machine=none
while [ $# -gt 0 ]; do
    if [ "$1" = "-append" ]; then mode=$2; fi
    if [ "$1" = "-machine" ]; then machine=$2; fi
    shift
done
case "$mode:$machine" in
timer:*gic-version=3*) echo 'PASS: timer fires'; echo 'EXIT: STATUS=1'; exit 1;;
timer:*gic-version=2*) echo 'FAIL: timer fires'; echo 'EXIT: STATUS=3'; exit 3;;
agree:*) echo "PASS: machine $machine"; echo 'EXIT: STATUS=1'; exit 1;;
*) echo "fake-qemu: unknown mode $mode:$machine" >&2; exit 1;;
esac
"#;

/// aarch64 runs are compared across the `virt` machine's GIC versions, except those of the GIC
/// itself, those whose machine names its version and those with more CPUs than a GICv2 serves;
/// no KVM is needed for them.
#[test]
fn aarch64_runs_compare_gic_versions() {
    let workspace = FakeWorkspace::new(
        "[timer]\nfile = \"aguest\"\ntest_args = \"timer\"\n\
         [mte]\nfile = \"aguest\"\ntest_args = \"agree\"\nmachine = \"virt,mte=on\"\n\
         [gic-ipi]\nfile = \"aguest\"\ntest_args = \"agree\"\ngroups = [\"gic\"]\n\
         [pinned]\nfile = \"aguest\"\ntest_args = \"agree\"\nmachine = \"virt,gic-version=2\"\n\
         [wide]\nfile = \"aguest\"\ntest_args = \"agree\"\nsmp = 9\n",
    );
    std::fs::create_dir_all(workspace.root().join("tests-aarch64/aguest")).unwrap();
    let image = workspace
        .root()
        .join("target/aarch64-unknown-none/release/aguest");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, "").unwrap();
    std::fs::write(workspace.qemu(), GIC_QEMU).unwrap();
    let output = differential(&workspace).env("MAX_SMP", "16").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let section = &stdout[stdout.find("differential (").expect(&stdout)..];
    assert!(
        section.starts_with(
            "differential (gicv3 vs gicv2): 2 runs compared, 1 lines agree, 1 new disagreements, 0 declared, 0 lines on one side only\n\
             new disagreements:\n  \
             timer: timer fires\n    \
             gicv3: PASS (PASS: timer fires); log: logs/timer@gicv3.log\n    \
             gicv2: FAIL (FAIL: timer fires); log: logs/timer@gicv2.log\n"
        ),
        "{section}"
    );
    // The machine keeps its other properties.
    assert!(
        workspace
            .read("logs/mte@gicv2.log")
            .contains("virt,mte=on,gic-version=2")
    );
    for (run, reason) in [
        ("gic-ipi", "group gic: the test is of the GIC itself"),
        ("pinned", "its machine names its GIC version"),
        ("wide", "9 CPUs: a GICv2 serves at most 8"),
    ] {
        assert!(
            section.contains(&format!("not compared: {run} ({reason}")),
            "{section}"
        );
        assert!(stdout.contains(&format!("PASS {run}")), "{stdout}");
    }
    // The failed side is reproduced with its machine.
    assert!(
        stdout.contains("MACHINE=virt,gic-version=2 ") && stdout.contains("/run_tests timer --accel tcg\n"),
        "{stdout}"
    );
}
