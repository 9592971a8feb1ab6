//! Tests of the whole pipeline through `app`: selections, commands, environments, and runs of a
//! fake QEMU.

use std::time::Duration;

use super::*;
use crate::config::Accel;
use crate::error::ExitStatus;
use crate::execute::run::{command_for, merged_environment, self_contained_line};
use crate::options::Environment;
use crate::workspace;

/// Writes an executable shell script that stands in for QEMU; returns its path.
fn fake_qemu(directory: &std::path::Path, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = directory.join("fake-qemu");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn workspace_with(config: &str) -> (tempfile::TempDir, Options) {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    std::fs::write(root.join("unittests.toml"), config).unwrap();
    std::fs::write(root.join("Cargo.toml"), "").unwrap();
    std::fs::create_dir_all(root.join("tests-x86/xguest")).unwrap();
    std::fs::create_dir_all(root.join("tests-aarch64/aguest")).unwrap();
    let mut options = Options::new(root);
    options.build = false;
    (directory, options)
}

fn decisions(options: &Options) -> Vec<(String, String)> {
    make_plan(options)
        .unwrap()
        .runs
        .into_iter()
        .map(|planned| (planned.entry.name, format!("{:?}", planned.decision)))
        .collect()
}

#[test]
fn skip_decisions() {
    let (_directory, mut options) = workspace_with(
        r#"
[x]
file = "xguest"
[a]
file = "aguest"
[kvm-only]
file = "xguest"
accel = "kvm"
[manual]
file = "xguest"
groups = ["nodefault"]
"#,
    );
    options.accel = Some(Accel::Tcg);
    options.arch = Some(Arch::X86_64);
    let decisions = decisions(&options);
    assert_eq!(decisions[0].1, "Run { arch: X86_64, accel: Tcg }");
    assert_eq!(decisions[1].1, "Skip(\"aarch64 only\")");
    assert_eq!(decisions[2].1, "Skip(\"kvm only, but ACCEL=tcg\")");
    assert_eq!(decisions[3].1, "Nodefault");
    assert_eq!(list(&options).unwrap(), ["x", "a", "kvm-only"]);
    // `-l -v` lists the same runs, each with its image's subtests (none built here).
    let with_subtests = list_with_subtests(&options).unwrap();
    assert!(with_subtests.iter().all(|(_, subtests)| subtests.is_empty()));
    let names: Vec<String> = with_subtests.into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, list(&options).unwrap());
}

#[test]
fn every_run_of_a_shared_crate_is_checked() {
    // Runs that share a crate look it up once; each run's arch key is still checked, whatever
    // is selected, and a missing crate is an error for each run that names it.
    let (_directory, mut options) =
        workspace_with("[one]\nfile = \"xguest\"\n[two]\nfile = \"xguest\"\narch = \"aarch64\"\n");
    options.selection.names = vec!["one".to_owned()];
    let error = make_plan(&options).unwrap_err().to_string();
    assert!(
        error.contains("[two] arch: 'aarch64' disagrees with where the crate lives"),
        "{error}"
    );
    let (_directory, options) =
        workspace_with("[one]\nfile = \"xguest\"\n[two]\nfile = \"absent\"\n[three]\nfile = \"xguest\"\n");
    let error = make_plan(&options).unwrap_err().to_string();
    assert!(error.contains("[two] file: no guest crate 'absent'"), "{error}");
    let (_directory, options) =
        workspace_with("[one]\nfile = \"xguest\"\n[two]\nfile = \"aguest\"\n[three]\nfile = \"xguest\"\n");
    let decisions = decisions(&options);
    assert!(
        decisions[0].1.contains("X86_64") && decisions[2].1.contains("X86_64"),
        "{decisions:?}"
    );
    assert!(decisions[1].1.contains("Aarch64"), "{decisions:?}");
}

#[test]
fn guest_environment_layers() {
    let base = "ACCEL=tcg\nHOST_KERNEL=6.1\n";
    let table = [
        ("A".to_owned(), "1".to_owned()),
        ("B".to_owned(), "x y".to_owned()),
    ];
    let command_line = [
        ("A".to_owned(), "2".to_owned()),
        ("ACCEL".to_owned(), "kvm".to_owned()),
    ];
    assert_eq!(
        merged_environment(base, &[&table, &command_line]),
        "ACCEL=kvm\nHOST_KERNEL=6.1\nA=2\nB=x y\n"
    );
    assert_eq!(merged_environment(base, &[]), base);
}

#[test]
fn copied_command_lines_take_the_host_time_afresh() {
    let file = std::path::Path::new("logs/t.env");
    // The runner's own HOST_TIME becomes `date +%s` in the line a user copies...
    let line = self_contained_line(
        "qemu",
        file,
        "ACCEL=tcg\nHOST_TIME=1700000000\n",
        Some("HOST_TIME=1700000000"),
    );
    assert!(
        line.contains(r#"printf '%s\n' ACCEL=tcg "HOST_TIME=$(date +%s)" > logs/t.env && qemu"#),
        "{line}"
    );
    // ...and one a table or --env set stays as given.
    let line = self_contained_line("qemu", file, "HOST_TIME=5\n", Some("HOST_TIME=1700000000"));
    assert!(line.contains("printf '%s\\n' HOST_TIME=5 >"), "{line}");
    // Written by a shell, the line gives the guest the host's present time.
    let directory = tempfile::tempdir().unwrap();
    let environment = directory.path().join("t.env");
    let line = self_contained_line("true", &environment, "HOST_TIME=1\n", Some("HOST_TIME=1"));
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&environment).unwrap();
    let seconds: u64 = written
        .trim()
        .strip_prefix("HOST_TIME=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds >= crate::environment::host_time() - 5, "{written}");
}

#[test]
fn device_requirements_ask_qemu() {
    let (directory, mut options) = workspace_with(
        "[has]\nfile = \"xguest\"\nrequires = [\"device:pci-testdev\"]\nenv = { T = \"table\" }\n\
         [lacks]\nfile = \"xguest\"\nrequires = [\"device:no-such-device\"]\n",
    );
    let image = workspace::image_path(directory.path(), Arch::X86_64, "xguest");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, "").unwrap();
    let fake = fake_qemu(
        directory.path(),
        "#!/bin/sh\ncase \"$*\" in *'-device help'*) echo 'name \"pci-testdev\", bus PCI'; exit 0;; esac\n\
         echo 'EXIT: STATUS=1'; exit 1\n",
    );
    options.environment.qemu = Some(fake.clone());
    options.accel = Some(Accel::Tcg);
    options.guest_variables = vec![("CLI".into(), "yes".into())];
    let report = run(&options).unwrap();
    assert_eq!(report.outcome("has"), Some(&Outcome::Pass { summary: None }));
    assert_eq!(
        report.outcome("lacks"),
        Some(&Outcome::Skip {
            reason: format!("requires device no-such-device, which {fake} lacks")
        })
    );
    let environment = std::fs::read_to_string(directory.path().join("logs/has.env")).unwrap();
    assert!(environment.starts_with("ACCEL=tcg\n"), "{environment}");
    assert!(environment.ends_with("T=table\nCLI=yes\n"), "{environment}");
}

#[test]
fn environment_values() {
    let environment = Environment {
        timeout: Some("2m".into()),
        max_smp: Some("3".into()),
        ..Environment::default()
    };
    let resolved = resolve_environment(&environment).unwrap();
    assert_eq!(resolved.timeout, Some(Duration::from_secs(120)));
    assert_eq!(resolved.max_smp, Some(3));
    for bad in [
        Environment {
            timeout: Some("x".into()),
            ..Environment::default()
        },
        Environment {
            max_smp: Some("0".into()),
            ..Environment::default()
        },
    ] {
        assert!(matches!(resolve_environment(&bad), Err(AppError::Usage(_))));
    }
}

#[test]
fn commands_honour_environment() {
    let (_directory, mut options) =
        workspace_with("[x]\nfile = \"xguest\"\nsmp = \"max\"\nmachine = \"pc\"\nqemu_params = \"-m 64\"\n");
    options.environment = Environment {
        qemu: Some("/opt/qemu".into()),
        machine: Some("microvm".into()),
        max_smp: Some("2".into()),
        ..Environment::default()
    };
    options.extra_qemu_args = vec!["-d".into(), "int".into()];
    let resolved = resolve_environment(&options.environment).unwrap();
    let plan = make_plan(&options).unwrap();
    let image = build::image_for(&options, &Images::default(), Arch::X86_64, &plan.runs[0].entry);
    let command = command_for(&RunSetup {
        options: &options,
        resolved: &resolved,
        entry: &plan.runs[0].entry,
        arch: Arch::X86_64,
        accel: Accel::Tcg,
        image: &image,
        live: false,
        failures: &crate::logdir::WriteFailures::default(),
    });
    let line = command.shell_line();
    assert!(
        line.starts_with("/opt/qemu -nodefaults -display none -no-reboot -machine microvm ")
            && line.contains(" -accel tcg "),
        "{line}"
    );
    assert!(line.contains("-smp 2 "), "{line}");
    assert!(line.ends_with("-m 64 -d int"), "{line}");
}

#[test]
fn unknown_name_is_an_error() {
    let (_directory, mut options) = workspace_with("[x]\nfile = \"xguest\"\n");
    options.selection.names = vec!["nope".into()];
    let error = run(&options).unwrap_err();
    assert_eq!(error.to_string(), "no test matches 'nope'");
    assert_eq!(error.exit_status(), ExitStatus::UsageOrConfigError);
}

#[test]
fn totals_and_exit_codes() {
    let result = |outcome: Outcome| TestResult::not_run("t", outcome);
    let report = Report {
        results: vec![
            result(Outcome::Pass { summary: None }),
            result(Outcome::Skip { reason: "x".into() }),
            result(Outcome::Timeout {
                after: Duration::from_secs(1),
            }),
            result(Outcome::HypervisorError { reason: "x".into() }),
        ],
        new_disagreements: 0,
    };
    assert_eq!(report.totals().to_string(), "1 passed, 2 failed, 1 skipped");
    assert_eq!(report.exit_status(), ExitStatus::TestsFailed);
    let mut report = Report {
        results: vec![result(Outcome::Skip { reason: "x".into() })],
        new_disagreements: 0,
    };
    assert_eq!(report.exit_status(), ExitStatus::Success);
    // A new disagreement of `--differential` fails the invocation, though every run passed.
    report.new_disagreements = 1;
    assert_eq!(report.exit_status(), ExitStatus::TestsFailed);
    assert_eq!(AppError::Interrupted.exit_status(), ExitStatus::Interrupted);
}

#[test]
fn fake_qemu_end_to_end() {
    let (directory, mut options) = workspace_with(
        "[good]\nfile = \"xguest\"\ntest_args = \"pass\"\n[bad]\nfile = \"xguest\"\ntest_args = \"x\"\n",
    );
    let image = workspace::image_path(directory.path(), Arch::X86_64, "xguest");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, "").unwrap();
    // A fake QEMU: passes when -append says "pass", else fails to start like a bad option.
    let fake = fake_qemu(
        directory.path(),
        "#!/bin/sh\ncase \"$*\" in *'-append pass'*) echo 'SUMMARY: 1 tests'; echo 'EXIT: STATUS=1'; exit 1;; esac\n\
         echo 'fake-qemu: bad option' >&2; exit 1\n",
    );
    options.environment.qemu = Some(fake.clone());
    options.accel = Some(Accel::Tcg);
    options.jobs = 2;
    let report = run(&options).unwrap();
    assert_eq!(
        report.outcome("good"),
        Some(&Outcome::Pass {
            summary: Some("1 tests".into())
        })
    );
    assert!(matches!(report.outcome("bad"), Some(Outcome::QemuError { .. })));
    assert_eq!(report.exit_status(), ExitStatus::TestsFailed);
    let log = std::fs::read_to_string(directory.path().join("logs/bad.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // The command writes the environment file it names, then runs QEMU.
    assert!(lines[0].starts_with("mkdir -p "), "{log}");
    assert!(lines[0].contains(&format!(" && {fake} -nodefaults")), "{log}");
    assert!(lines[0].contains(" -append x -initrd "), "{log}");
    assert!(lines[0].ends_with("logs/bad.env"), "{log}");
    let environment = std::fs::read_to_string(directory.path().join("logs/bad.env")).unwrap();
    assert!(environment.starts_with("ACCEL=tcg\n"), "{environment}");
    assert_eq!(lines[1], "fake-qemu: bad option");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("FAIL bad (QEMU error: QEMU exited with status 1"),
        "{log}"
    );
    let summary = std::fs::read_to_string(directory.path().join("logs/SUMMARY")).unwrap();
    assert!(
        summary.starts_with("commit: ") && summary.ends_with("1 passed, 1 failed, 0 skipped\n"),
        "{summary}"
    );
    // A second run keeps the first one's logs in logs.old.
    run(&options).unwrap();
    assert!(directory.path().join("logs.old/bad.log").is_file());
}
