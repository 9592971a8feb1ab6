//! Standalone tests: scripts written by `--standalone` run away from the repository, with no
//! cargo on PATH, print the runner's verdict lines and statuses, refuse a corrupt image, and
//! migrate migration runs (and any run under `MIGRATION=yes`) with QEMU and the shell alone.

mod support;

use std::os::unix::fs::PermissionsExt;
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

/// Builds the guest crate `package` for `target` (release), as the standalone scripts embed it.
fn build_guest(root: &Path, target: &str, package: &str) {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "-q", "--release", "--target", target, "-p", package])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building the guest {package} for {target} failed"
    );
}

/// Builds the x86 fixture guest and writes standalone scripts for two of its runs.
fn scripts(directory: &Path) -> PathBuf {
    let root = workspace();
    build_guest(&root, "x86_64-unknown-none", "fixture");
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

/// An aarch64 script runs where the runner would: its environment file reaches the guest
/// (no placeholder is left in its QEMU arguments) and, on a host of another architecture,
/// it picks TCG even where /dev/kvm is usable.
#[test]
fn an_aarch64_script_runs_on_any_host() {
    let root = workspace();
    build_guest(&root, "aarch64-unknown-none", "arm-fixture");
    let temporary = tempfile::tempdir().unwrap();
    let config_path = temporary.path().join("unittests.toml");
    std::fs::write(
        &config_path,
        "[arm-fixture-pass]\nfile = \"arm-fixture\"\ntest_args = \"pass\"\n",
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let output = temporary.path().join("standalone");
    standalone::write_all(&root, &config, &output).unwrap();
    let script = output.join("arm-fixture-pass");
    let text = String::from_utf8_lossy(&std::fs::read(&script).unwrap()).into_owned();
    let header = &text[..text.find("\nexit 2\n").expect("the header's last line")];
    assert!(
        !header.contains("@VMUNIT_"),
        "a placeholder is left in the script"
    );
    // No ACCEL: the script chooses, as the runner does.
    let passed = run(&script, &[]);
    assert_eq!(passed.status.code(), Some(0), "{passed:?}");
    assert_eq!(
        last_line(&passed),
        "PASS arm-fixture-pass (2 tests)",
        "{passed:?}"
    );
    let passed = run(&script, &[("ACCEL", "tcg")]);
    assert_eq!(
        last_line(&passed),
        "PASS arm-fixture-pass (2 tests)",
        "{passed:?}"
    );
}

/// Runs `vmunit-run-all` installed beside `tests/`, returning (status, stdout, stderr).
fn run_all(installed: &Path, arguments: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new("sh")
        .arg(installed.join("vmunit-run-all"))
        .args(arguments)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ACCEL", "tcg")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `vmunit-run-all` selects like ./run_tests (the default set, `-a`, `-g`, names and globs)
/// and keeps the logs of the tests that failed.
#[test]
fn run_all_selects_like_the_runner_and_keeps_failed_logs() {
    let root = workspace();
    build_guest(&root, "x86_64-unknown-none", "fixture");
    let installed = tempfile::tempdir().unwrap();
    let config_path = installed.path().join("unittests.toml");
    std::fs::write(
        &config_path,
        "[fixture-pass]\nfile = \"fixture\"\ntest_args = \"pass\"\ngroups = [\"smoke\"]\n\n\
         [fixture-skip]\nfile = \"fixture\"\ntest_args = \"skip\"\n\n\
         [fixture-fail]\nfile = \"fixture\"\ntest_args = \"fail\"\ngroups = [\"nodefault\", \"negative\"]\n",
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    standalone::write_all(&root, &config, &installed.path().join("tests")).unwrap();
    std::fs::copy(
        root.join("scripts/vmunit-run-all"),
        installed.path().join("vmunit-run-all"),
    )
    .unwrap();

    // The default set leaves the nodefault failure out.
    let (status, stdout, stderr) = run_all(installed.path(), &["-j", "2"]);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "PASS fixture-pass (2 tests)\nSKIP fixture-skip (nothing to test here, on purpose)\n1 passed, 0 failed, 1 skipped\n",
        "{stderr}"
    );
    assert!(!stderr.contains("logs"), "{stderr}");
    // -g runs a group, nodefault members included; the failed test's log is kept.
    let (status, stdout, stderr) = run_all(installed.path(), &["-g", "negative"]);
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("FAIL fixture-fail (1 unexpected failures)\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("\n0 passed, 1 failed, 0 skipped\n"), "{stdout}");
    let logs = stderr
        .lines()
        .find_map(|line| line.strip_prefix("vmunit-run-all: the logs of the failed tests are in "))
        .unwrap_or_else(|| panic!("no log directory named: {stderr}"));
    let log = std::fs::read_to_string(Path::new(logs).join("fixture-fail.log")).unwrap();
    assert!(log.contains("FAIL: "), "{log}");
    std::fs::remove_dir_all(logs).unwrap();
    // -a adds the nodefault tests; a name runs its test even if nodefault; globs select.
    let (status, stdout, _) = run_all(installed.path(), &["-a"]);
    assert_eq!(status, Some(1));
    assert!(stdout.ends_with("1 passed, 1 failed, 1 skipped\n"), "{stdout}");
    let (_, stdout, stderr) = run_all(installed.path(), &["fixture-fail", "fixture-p*"]);
    assert!(stdout.ends_with("1 passed, 1 failed, 0 skipped\n"), "{stdout}");
    if let Some(logs) = stderr.split("are in ").nth(1) {
        let _ = std::fs::remove_dir_all(logs.trim());
    }
    let (status, _, stderr) = run_all(installed.path(), &["-g", "smoke", "fixture-skip"]);
    assert_eq!(
        status,
        Some(2),
        "a name and a group that intersect to nothing: {stderr}"
    );
    let (status, _, stderr) = run_all(installed.path(), &["nosuch"]);
    assert_eq!(status, Some(2), "{stderr}");
}

/// A script decides `disabled_if` conditions where it runs, any of an array: the accelerator,
/// and the KVM module of the host it runs on.
#[test]
fn scripts_decide_kvm_module_errata_where_they_run() {
    let root = workspace();
    build_guest(&root, "x86_64-unknown-none", "fixture");
    let temporary = tempfile::tempdir().unwrap();
    let config_path = temporary.path().join("unittests.toml");
    std::fs::write(
        &config_path,
        "[fixture-erratum]\nfile = \"fixture\"\ntest_args = \"pass\"\n\
         disabled_if = [{ accel = \"tcg\" }, { kvm_module = \"kvm_pvm\" }]\n",
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let output = temporary.path().join("standalone");
    standalone::write_all(&root, &config, &output).unwrap();
    let script = output.join("fixture-erratum");
    let under_tcg = run(&script, &[("ACCEL", "tcg")]);
    assert_eq!(
        last_line(&under_tcg),
        "SKIP fixture-erratum (disabled if accel = tcg)",
        "{under_tcg:?}"
    );
    let under_kvm = run(&script, &[("ACCEL", "kvm"), ("QEMU", "/bin/false")]);
    if Path::new("/sys/module/kvm_pvm").is_dir() {
        assert_eq!(
            last_line(&under_kvm),
            "SKIP fixture-erratum (disabled if kvm_module = kvm_pvm)",
            "{under_kvm:?}"
        );
    } else {
        assert!(!last_line(&under_kvm).starts_with("SKIP"), "{under_kvm:?}");
    }
}

/// Builds the x86 selftest and fixture guests and writes scripts for migration runs: the
/// selftest's migration modes (group `migration`, and `migrate = true`), and fixture runs for
/// `MIGRATION=yes`, one of which cannot migrate.
fn migration_scripts(directory: &Path) -> PathBuf {
    let root = workspace();
    build_guest(&root, "x86_64-unknown-none", "fixture");
    build_guest(&root, "x86_64-unknown-none", "selftest");
    let config_path = directory.join("unittests.toml");
    std::fs::write(
        &config_path,
        "[selftest-migration]\nfile = \"selftest\"\ntest_args = \"migration\"\ntimeout = 60\n\
         groups = [\"migration\"]\n\n\
         [continuous]\nfile = \"selftest\"\ntest_args = \"migration-continuous rounds=2\"\n\
         timeout = 60\nmigrate = true\n\n\
         [fixture-pass]\nfile = \"fixture\"\ntest_args = \"pass\"\n\n\
         [fixture-nomig]\nfile = \"fixture\"\ntest_args = \"pass\"\nmigrate = \"no migration here\"\n",
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    let output = directory.join("standalone");
    standalone::write_all(&root, &config, &output).unwrap();
    output
}

/// The QEMU processes whose command line mentions `needle`.
fn qemus_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(command_line) = std::fs::read(entry.path().join("cmdline")) {
            let command_line = String::from_utf8_lossy(&command_line).replace('\0', " ");
            if command_line.contains(needle) && command_line.contains("qemu-system") {
                found.push(command_line);
            }
        }
    }
    found
}

/// A migration run's script migrates as the runner does, with QEMU and the shell alone: each
/// `MIGRATE: NOW` migrates the VM to a new QEMU (the log shows each), continuous migration
/// ends on `END`, `MIGRATION=yes` migrates any other run once after its first report line
/// and skips one that cannot migrate; no QEMU and no temporary file is left.
#[test]
fn standalone_migration_scripts_migrate() {
    let temporary = tempfile::tempdir().unwrap();
    let scripts = migration_scripts(temporary.path());
    let scratch = temporary.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let tmpdir = scratch.to_str().unwrap();

    let migrated = run(
        &scripts.join("selftest-migration"),
        &[("ACCEL", "tcg"), ("TMPDIR", tmpdir)],
    );
    let stdout = String::from_utf8_lossy(&migrated.stdout);
    assert_eq!(migrated.status.code(), Some(0), "{migrated:?}");
    assert_eq!(last_line(&migrated), "PASS selftest-migration (9 tests)");
    assert_eq!(stdout.matches("MIGRATE: NOW").count(), 8, "{stdout}");
    for index in 1..=8 {
        assert!(
            stdout.contains(&format!("vmunit: migration {index}: completed in")),
            "{stdout}"
        );
    }

    let continuous = run(
        &scripts.join("continuous"),
        &[("ACCEL", "tcg"), ("TMPDIR", tmpdir)],
    );
    let stdout = String::from_utf8_lossy(&continuous.stdout);
    assert_eq!(continuous.status.code(), Some(0), "{continuous:?}");
    assert!(
        stdout.contains("MIGRATE: BEGIN") && stdout.contains("MIGRATE: END"),
        "{stdout}"
    );
    assert!(stdout.contains("vmunit: migration 1: completed in"), "{stdout}");

    let injected = run(
        &scripts.join("fixture-pass"),
        &[("ACCEL", "tcg"), ("TMPDIR", tmpdir), ("MIGRATION", "yes")],
    );
    let stdout = String::from_utf8_lossy(&injected.stdout);
    assert_eq!(
        last_line(&injected),
        "PASS fixture-pass (2 tests)",
        "{injected:?}"
    );
    let request = stdout.find("MIGRATE: NOW").expect("a migration");
    assert!(stdout[..request].contains("PASS: a check that holds"), "{stdout}");
    assert!(stdout.contains("vmunit: migration 1: completed in"), "{stdout}");
    assert!(stdout.contains("INFO: migrated after report line 1"), "{stdout}");
    // Without MIGRATION the same script does not migrate.
    let plain = run(
        &scripts.join("fixture-pass"),
        &[("ACCEL", "tcg"), ("TMPDIR", tmpdir)],
    );
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("MIGRATE"),
        "{plain:?}"
    );

    let ruled_out = run(
        &scripts.join("fixture-nomig"),
        &[("ACCEL", "tcg"), ("TMPDIR", tmpdir), ("MIGRATION", "yes")],
    );
    assert_eq!(ruled_out.status.code(), Some(0), "{ruled_out:?}");
    assert_eq!(
        last_line(&ruled_out),
        "SKIP fixture-nomig (--migrate: cannot migrate: no migration here)"
    );
    assert!(qemus_mentioning(tmpdir).is_empty());
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "temporary files left"
    );
}

/// A QEMU wrapper in `directory`: the real QEMU, plus `extra` for a destination (`-incoming`).
fn destination_wrapper(directory: &Path, extra: &str) -> PathBuf {
    let path = directory.join("qemu");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nextra=''\ncase \" $* \" in *' -incoming '*) extra='{extra}' ;; esac\n\
             exec qemu-system-x86_64 \"$@\" $extra\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A destination that refuses the stream (more memory than the source) fails the script with
/// the reason; a script killed while a migration waits for a destination that never runs
/// (`-S`) leaves no QEMU behind.
#[test]
fn standalone_migration_failures_leave_no_qemu() {
    let temporary = tempfile::tempdir().unwrap();
    let scripts = migration_scripts(temporary.path());
    let scratch = temporary.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let tmpdir = scratch.to_str().unwrap();

    let refusing = destination_wrapper(temporary.path(), "-m 256");
    let refused = run(
        &scripts.join("selftest-migration"),
        &[
            ("ACCEL", "tcg"),
            ("TMPDIR", tmpdir),
            ("QEMU", refusing.to_str().unwrap()),
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        last_line(&refused).starts_with("FAIL selftest-migration (migration failed: "),
        "{refused:?}"
    );
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("vmunit: migration 1: failed: "),
        "{refused:?}"
    );
    assert!(qemus_mentioning(tmpdir).is_empty());

    let stopped = destination_wrapper(temporary.path(), "-S");
    let mut child = Command::new("sh")
        .arg(scripts.join("selftest-migration"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ACCEL", "tcg")
        .env("TMPDIR", tmpdir)
        .env("QEMU", &stopped)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while qemus_mentioning(tmpdir).len() < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no migration started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let killed = std::time::Instant::now();
    while !qemus_mentioning(tmpdir).is_empty() {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(10),
            "QEMUs left behind: {:?}",
            qemus_mentioning(tmpdir)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
