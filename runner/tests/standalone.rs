//! Standalone tests: scripts written by `--standalone` run away from the repository, with no
//! cargo on PATH, print the runner's verdict lines and statuses, and refuse a corrupt image.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmunit_runner::config::Config;
use vmunit_runner::standalone;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the x86 fixture guest and writes standalone scripts for two of its runs.
fn scripts(directory: &Path) -> PathBuf {
    let root = workspace();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "x86_64-unknown-none",
            "-p",
            "fixture",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "building the fixture guest failed");
    let config_path = directory.join("unittests.toml");
    std::fs::write(
        &config_path,
        "[fixture-pass]\nfile = \"fixture\"\ntest_args = \"pass\"\n\n\
         [fixture-fail]\nfile = \"fixture\"\ntest_args = \"fail\"\n\n\
         [fixture-tcg-only]\nfile = \"fixture\"\ntest_args = \"pass\"\naccel = \"tcg\"\n\n\
         [fixture-disabled]\nfile = \"fixture\"\ndisabled = \"broken on purpose\"\n\n\
         [fixture-disabled-under-tcg]\nfile = \"fixture\"\ntest_args = \"pass\"\ndisabled_if = { accel = \"tcg\" }\n",
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let output = directory.join("standalone");
    let written = standalone::write_all(&root, &config, &output).unwrap();
    assert_eq!(written.len(), 5);
    output
}

/// Runs a script from a directory outside the repository, with PATH stripped of cargo.
fn run(script: &Path, environment: &[(&str, &str)]) -> Output {
    let mut command = Command::new("sh");
    command
        .arg(script)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(environment.iter().copied());
    command.output().unwrap()
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn standalone_scripts_run_anywhere_and_judge_like_the_runner() {
    let temporary = tempfile::tempdir().unwrap();
    let scripts = scripts(temporary.path());
    // Copy two scripts somewhere else entirely: they must carry everything they need.
    let away = tempfile::tempdir().unwrap();
    for name in [
        "fixture-pass",
        "fixture-fail",
        "fixture-tcg-only",
        "fixture-disabled",
        "fixture-disabled-under-tcg",
    ] {
        std::fs::copy(scripts.join(name), away.path().join(name)).unwrap();
    }

    let passed = run(&away.path().join("fixture-pass"), &[("ACCEL", "tcg")]);
    assert_eq!(passed.status.code(), Some(0), "{passed:?}");
    assert_eq!(last_line(&passed), "PASS fixture-pass (2 tests)");
    assert!(String::from_utf8_lossy(&passed.stdout).contains("PASS: a check that holds"));

    let failed = run(&away.path().join("fixture-fail"), &[("ACCEL", "tcg")]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert_eq!(last_line(&failed), "FAIL fixture-fail (1 unexpected failures)");

    let skipped = run(&away.path().join("fixture-tcg-only"), &[("ACCEL", "kvm")]);
    assert_eq!(skipped.status.code(), Some(0), "{skipped:?}");
    assert_eq!(
        last_line(&skipped),
        "SKIP fixture-tcg-only (tcg only, but ACCEL=kvm)"
    );

    let disabled = run(&away.path().join("fixture-disabled"), &[("ACCEL", "tcg")]);
    assert_eq!(disabled.status.code(), Some(0), "{disabled:?}");
    assert_eq!(
        last_line(&disabled),
        "SKIP fixture-disabled (disabled: broken on purpose)"
    );
    let disabled_here = run(
        &away.path().join("fixture-disabled-under-tcg"),
        &[("ACCEL", "tcg")],
    );
    assert_eq!(
        last_line(&disabled_here),
        "SKIP fixture-disabled-under-tcg (disabled if accel = tcg)"
    );
    let enabled_there = run(
        &away.path().join("fixture-disabled-under-tcg"),
        &[("ACCEL", "kvm"), ("QEMU", "/bin/false")],
    );
    assert!(
        !last_line(&enabled_there).starts_with("SKIP"),
        "{enabled_there:?}"
    );

    let no_qemu = run(
        &away.path().join("fixture-pass"),
        &[("ACCEL", "tcg"), ("QEMU", "/nonexistent/qemu")],
    );
    assert_eq!(no_qemu.status.code(), Some(2), "{no_qemu:?}");
    assert!(last_line(&no_qemu).starts_with("FAIL fixture-pass (/nonexistent/qemu not found"));
}

#[test]
fn a_corrupt_embedded_image_is_refused() {
    let temporary = tempfile::tempdir().unwrap();
    let scripts = scripts(temporary.path());
    let script = scripts.join("fixture-pass");
    let mut bytes = std::fs::read(&script).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    std::fs::write(&script, bytes).unwrap();
    let output = run(&script, &[("ACCEL", "tcg")]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        last_line(&output),
        "FAIL fixture-pass (the embedded image is corrupt (SHA-256 mismatch): copy the file again)"
    );
}

/// The runner and the standalone scripts judge every fake-QEMU fixture alike: the same verdict,
/// and the same reason where the runner gives one.
#[test]
fn the_runner_and_the_standalone_scripts_agree_on_every_fixture() {
    let modes = [
        "pass",
        "fail",
        "skip",
        "binary",
        "signal",
        "longfail",
        "silent",
        "nomachine",
    ];
    let runs: Vec<(String, &str)> = modes
        .iter()
        .map(|mode| (format!("fixture-{mode}"), *mode))
        .collect();
    let named: Vec<(&str, &str)> = runs.iter().map(|(name, mode)| (name.as_str(), *mode)).collect();
    let workspace = support::FakeWorkspace::new(&support::config_of(&named));
    let output = workspace.runner().output().unwrap();
    let (stdout, stderr) = support::text(&output);
    let config = Config::load(&workspace.root().join("unittests.toml")).unwrap();
    let directory = workspace.root().join("standalone");
    standalone::write_all(workspace.root(), &config, &directory).unwrap();
    let qemu = workspace.qemu().display().to_string();
    for (name, _) in &runs {
        let runner_line = stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}{stderr}"));
        let script = run(&directory.join(name), &[("ACCEL", "tcg"), ("QEMU", &qemu)]);
        let script_line = last_line(&script);
        let verdict = |line: &str| line.split_whitespace().next().unwrap_or("").to_owned();
        assert_eq!(
            verdict(runner_line),
            verdict(&script_line),
            "{name}: the runner says {runner_line:?}, the script {script_line:?}"
        );
        if let Some((_, reason)) = runner_line.split_once(" (") {
            let reason = reason.trim_end_matches(')');
            let reason = reason.strip_prefix("QEMU error: ").unwrap_or(reason);
            assert!(
                script_line.contains(reason) || name == "fixture-signal",
                "{name}: the runner says {runner_line:?}, the script {script_line:?}"
            );
        }
    }
}
