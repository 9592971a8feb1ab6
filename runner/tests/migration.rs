//! Migration runs (group `migration`, README "Migration") with the real QEMU and the x86
//! selftest guest in its `migration` mode: a destination that refuses the migration stream or
//! that cannot start fails the run with the reason, a timeout during a migration leaves no QEMU
//! behind, and a guest that asks for a migration outside a migration run skips.

mod project;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use project::runner;

/// A QEMU wrapper: the real QEMU for the source; for a destination (`-incoming`), `destination`
/// (shell words run before the real QEMU with the same arguments plus `"$extra"`).
fn wrapper(directory: &Path, destination: &str) -> PathBuf {
    let path = directory.join("qemu");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nextra=''\ncase \" $* \" in *' -incoming '*) {destination} ;; esac\n\
             exec qemu-system-x86_64 \"$@\" $extra\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The processes whose command line mentions `needle` (the run's temporary directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|byte| byte.is_ascii_digit())
        {
            continue;
        }
        if let Ok(command_line) = std::fs::read(entry.path().join("cmdline")) {
            let command_line = String::from_utf8_lossy(&command_line).replace('\0', " ");
            if command_line.contains(needle) && command_line.contains("qemu") {
                found.push(command_line);
            }
        }
    }
    found
}

/// Runs `selftest-migration` with QEMU `qemu` and `TIMEOUT`; returns the output and the log.
fn migration_run(directory: &Path, qemu: &Path, timeout: &str) -> (Output, String) {
    let logs = directory.join("logs");
    let output = runner(&logs)
        .env("QEMU", qemu)
        .env("TIMEOUT", timeout)
        .arg("selftest-migration")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(logs.join("selftest-migration.log")).unwrap_or_default();
    (output, log)
}

fn assert_no_qemu_left(directory: &Path) {
    let left = processes_mentioning(&directory.display().to_string());
    assert!(left.is_empty(), "QEMUs left behind: {left:?}");
    assert!(
        !directory.join("logs/.vmunit-scratch").exists(),
        "the scratch area was not removed"
    );
}

/// A destination with more memory than the source refuses the stream (its RAM block has
/// another size): the run fails with the reason, and no QEMU is left.
#[test]
fn a_destination_that_refuses_the_stream_fails_the_run() {
    let directory = tempfile::tempdir().unwrap();
    let qemu = wrapper(directory.path(), "extra='-m 256'");
    let (output, log) = migration_run(directory.path(), &qemu, "60");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}\n{log}");
    assert!(
        stdout.contains("FAIL selftest-migration (migration failed: the destination QEMU exited"),
        "{stdout}\n{log}"
    );
    assert!(log.contains("vmunit: migration 1: started"), "{log}");
    assert!(log.contains("vmunit: migration 1: failed:"), "{log}");
    assert!(!log.contains("migration 1: completed"), "{log}");
    assert_no_qemu_left(directory.path());
}

/// A destination QEMU that exits at once fails the run with the reason.
#[test]
fn a_destination_that_cannot_start_fails_the_run() {
    let directory = tempfile::tempdir().unwrap();
    let qemu = wrapper(directory.path(), "echo 'destination: no way' >&2; exit 1");
    let (output, log) = migration_run(directory.path(), &qemu, "60");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}\n{log}");
    assert!(
        stdout.contains("migration failed: the destination QEMU exited (status 1)"),
        "{stdout}\n{log}"
    );
    assert!(log.contains("destination: no way"), "{log}");
    assert_no_qemu_left(directory.path());
}

/// A destination that never runs the VM (`-S`): the run's timeout ends the migration, with a
/// timeout verdict, and neither QEMU is left.
#[test]
fn a_timeout_during_a_migration_leaves_no_qemu() {
    let directory = tempfile::tempdir().unwrap();
    let qemu = wrapper(directory.path(), "extra='-S'");
    let (output, log) = migration_run(directory.path(), &qemu, "4");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}\n{log}");
    assert!(
        stdout.contains("FAIL selftest-migration (timeout"),
        "{stdout}\n{log}"
    );
    assert!(
        log.contains("vmunit: migration 1: stopped by the run's timeout"),
        "{log}"
    );
    assert_no_qemu_left(directory.path());
}

/// The same guest outside a migration run (an entry of no `migration` group): its request
/// reports SKIP and it never waits; the run skips.
#[test]
fn a_request_outside_a_migration_run_skips() {
    let directory = tempfile::tempdir().unwrap();
    let logs = directory.path().join("logs");
    let config = directory.path().join("unittests.toml");
    std::fs::write(
        &config,
        "[migration-outside]\nfile = \"selftest\"\ntest_args = \"migration\"\ntimeout = 60\n",
    )
    .unwrap();
    let output = runner(&logs)
        .arg("--config")
        .arg(&config)
        .arg("migration-outside")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("SKIP migration-outside"), "{stdout}");
    let log = std::fs::read_to_string(logs.join("migration-outside.log")).unwrap();
    assert!(
        log.contains("SKIP: migration: migration requested, but this is not a migration run"),
        "{log}"
    );
    assert!(!log.contains("MIGRATE: NOW"), "{log}");
    assert!(!log.contains("vmunit: migration"), "{log}");
}

/// The runner killed outright (SIGKILL) while a migration waits for a destination that never
/// runs: both QEMUs die with it (PDEATHSIG and the guard reach the destination too).
#[test]
fn a_killed_runner_leaves_no_qemu_mid_migration() {
    let directory = tempfile::tempdir().unwrap();
    let qemu = wrapper(directory.path(), "extra='-S'");
    let logs = directory.path().join("logs");
    let mut child = runner(&logs)
        .env("QEMU", &qemu)
        .env("TIMEOUT", "60")
        .arg("selftest-migration")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let needle = directory.path().display().to_string();
    let started = std::time::Instant::now();
    // Both QEMUs run: the source and the destination of the first migration.
    while processes_mentioning(&needle).len() < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no migration started: {:?}",
            std::fs::read_to_string(logs.join("selftest-migration.log"))
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = std::time::Instant::now();
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(10),
            "QEMUs left behind: {:?}",
            processes_mentioning(&needle)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
