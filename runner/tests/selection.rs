//! Choosing runs across invocations, through the binary and a fake QEMU: `--shard K/N`,
//! `--rerun-failed`, selections that match nothing and entries that name no crate.

mod support;

use std::collections::BTreeSet;

use support::{FakeWorkspace, config_of, text};

fn names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .nth(1)
                .filter(|_| line.starts_with(['P', 'F', 'S']))
        })
        .filter(|name| !name.ends_with(':'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn shards_split_the_selection_once() {
    let runs: Vec<(String, &str)> = (0..7).map(|index| (format!("t{index}"), "pass")).collect();
    let runs: Vec<(&str, &str)> = runs.iter().map(|(name, mode)| (name.as_str(), *mode)).collect();
    let workspace = FakeWorkspace::new(&format!(
        "{}[manual]\nfile = \"xguest\"\ngroups = [\"nodefault\"]\n",
        config_of(&runs)
    ));
    let mut seen = Vec::new();
    for index in 1..=3 {
        let shard = format!("{index}/3");
        let listed = workspace
            .runner()
            .args(["-l", "--shard", &shard])
            .output()
            .unwrap();
        let (listed, _) = text(&listed);
        let output = workspace.runner().args(["--shard", &shard]).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        let ran = names(&stdout);
        assert_eq!(ran, listed.lines().collect::<Vec<_>>(), "{stdout}");
        assert!(
            stdout.ends_with(&format!("{} passed, 0 failed, 0 skipped\n", ran.len())),
            "{stdout}"
        );
        seen.extend(ran);
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(unique.len(), 7, "{seen:?}");
    for bad in ["0/2", "3/2", "x"] {
        let output = workspace.runner().args(["--shard", bad]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn rerun_failed_runs_what_failed() {
    let workspace = FakeWorkspace::new(&format!(
        "{}[manual-bad]\nfile = \"xguest\"\ntest_args = \"fail\"\ngroups = [\"nodefault\"]\n",
        config_of(&[
            ("good", "pass"),
            ("bad", "fail"),
            ("crash", "signal"),
            ("empty", "skip")
        ])
    ));
    let output = workspace.runner().arg("--rerun-failed").output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("vmunit: --rerun-failed: cannot read the last run's results"),
        "{stderr}"
    );

    let output = workspace.runner().args(["-a", "-j", "2"]).output().unwrap();
    let (stdout, _) = text(&output);
    assert!(stdout.ends_with("1 passed, 3 failed, 1 skipped\n"), "{stdout}");
    let record: serde_json::Value = serde_json::from_str(&workspace.read("logs/results.json")).unwrap();
    assert_eq!(record["results"].as_array().unwrap().len(), 5);

    let output = workspace
        .runner()
        .args(["--rerun-failed", "-l"])
        .output()
        .unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(stdout, "bad\ncrash\nmanual-bad\n");
    let output = workspace.runner().arg("--rerun-failed").output().unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(names(&stdout), ["bad", "crash", "manual-bad"], "{stdout}");
    assert!(stdout.ends_with("0 passed, 3 failed, 0 skipped\n"), "{stdout}");

    // Once they pass, nothing is left to rerun.
    std::fs::write(
        workspace.root().join("unittests.toml"),
        config_of(&[("good", "pass"), ("bad", "pass")]),
    )
    .unwrap();
    let output = workspace.runner().arg("--rerun-failed").output().unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(names(&stdout), ["bad"], "{stdout}");
    let output = workspace.runner().arg("--rerun-failed").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success());
    assert_eq!(stdout, "0 passed, 0 failed, 0 skipped\n");
    assert_eq!(stderr, "vmunit: --rerun-failed: no run failed last time\n");
}

#[test]
fn probe_maxsmp_reads_qemus_limits() {
    let workspace = FakeWorkspace::new(&config_of(&[("good", "pass")]));
    let probe = workspace.root().join("probe-qemu");
    std::fs::write(
        &probe,
        "#!/bin/sh\ncase \"$*\" in\n*'-smp 1000000 '*) echo \"qemu: Invalid SMP CPUs 1000000. The max CPUs supported by machine 'pc-q35-10.0' is 4096\" >&2; exit 1;;\n\
         *'-accel kvm'*'-smp 4096 '*) echo 'qemu: -accel kvm: Number of SMP cpus requested (4096) exceeds the maximum cpus supported by KVM (710)' >&2; exit 1;;\n\
         esac\necho \"unexpected: $*\" >&2; exit 1\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&probe)
        .status()
        .unwrap();
    for (accel, expected, detail) in [
        (
            "tcg",
            "4096\n",
            "machine q35 under tcg: QEMU accepts at most 4096 CPUs (machine limit 4096)",
        ),
        (
            "kvm",
            "710\n",
            "QEMU accepts at most 710 CPUs (machine limit 4096, KVM limit 710)",
        ),
    ] {
        let output = workspace
            .runner()
            .env("QEMU", &probe)
            .env("MACHINE", "q35")
            .args(["--probe-maxsmp", "--accel", accel])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(stdout, expected);
        assert!(stderr.contains(detail), "{stderr}");
    }
    let output = workspace
        .runner()
        .env("QEMU", "/bin/false")
        .arg("--probe-maxsmp")
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("vmunit: /bin/false did not name the CPU limit"),
        "{stderr}"
    );
}

/// Runs the runner with `arguments`; returns its exit status and stderr.
fn status_and_stderr(workspace: &FakeWorkspace, arguments: &[&str]) -> (Option<i32>, String, String) {
    let output = workspace.runner().args(arguments).output().unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}

#[test]
fn a_selection_that_matches_nothing_is_an_error_unless_allowed() {
    let workspace = FakeWorkspace::new(&format!(
        "{}[other]\nfile = \"xguest\"\ntest_args = \"pass\"\ngroups = [\"g2\"]\n",
        "[one]\nfile = \"xguest\"\ntest_args = \"pass\"\ngroups = [\"g1\"]\n"
    ));
    for arguments in [
        &["-g", "nosuchgroup"][..],
        &["-g", "g1", "other"],
        &["-l", "-g", "nosuchgroup"],
    ] {
        let (status, stdout, stderr) = status_and_stderr(&workspace, arguments);
        assert_eq!(status, Some(2), "{arguments:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{arguments:?}: {stderr}");
        assert!(stderr.starts_with("vmunit: no test selected: "), "{stderr}");
        assert_eq!(stdout, "", "{arguments:?}");
    }
    let (status, stdout, stderr) = status_and_stderr(&workspace, &["-g", "nosuchgroup", "--allow-empty"]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "0 passed, 0 failed, 0 skipped\n");

    // An empty unittests.toml.
    std::fs::write(workspace.root().join("unittests.toml"), "").unwrap();
    let (status, _, stderr) = status_and_stderr(&workspace, &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("vmunit: no test selected: the default selection matches nothing in"),
        "{stderr}"
    );

    // --rerun-failed whose failed runs are gone from unittests.toml.
    std::fs::write(
        workspace.root().join("unittests.toml"),
        config_of(&[("bad", "fail")]),
    )
    .unwrap();
    let (status, _, _) = status_and_stderr(&workspace, &[]);
    assert_eq!(status, Some(1));
    std::fs::write(
        workspace.root().join("unittests.toml"),
        config_of(&[("good", "pass")]),
    )
    .unwrap();
    let (status, _, stderr) = status_and_stderr(&workspace, &["--rerun-failed"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("vmunit: --rerun-failed: none of the runs that failed last time (bad)"),
        "{stderr}"
    );
}

#[test]
fn an_entry_naming_a_missing_crate_is_a_configuration_error() {
    let workspace = FakeWorkspace::new(&format!(
        "{}[gone]\nfile = \"nosuchcrate\"\n",
        config_of(&[("good", "pass")])
    ));
    let (status, stdout, stderr) = status_and_stderr(&workspace, &["good"]);
    assert_eq!(status, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.ends_with(
            "unittests.toml:5:8: [gone] file: no guest crate 'nosuchcrate' in tests-x86/ or tests-aarch64/\n"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
