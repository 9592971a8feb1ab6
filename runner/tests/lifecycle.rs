//! The runner's processes over their whole life: QEMU dies with the runner even when the runner
//! is killed outright, a standalone script parses TIMEOUT exactly as the runner does, an
//! interrupted run is recorded as INTERRUPTED, and an interrupted build stops at once.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{FakeWorkspace, config_of, text};
use vmunit_runner::config::{Arch, Config, parse_duration};
use vmunit_runner::standalone;

/// Durations both the runner and the standalone scripts must judge alike.
const DURATIONS: &[&str] = &[
    "90",
    "90s",
    "2m",
    "1h",
    "1d",
    "1.5s",
    " 0.5s ",
    "0.0001m",
    "0",
    "0s",
    "0.0",
    "365d",
    "366d",
    "-0",
    "1e-12",
    "1e19",
    "0.0001",
    "0.0009s",
    ".5",
    "5.",
    "1.2.3",
    "inf",
    "+5",
    "3x",
    "",
    "s",
    "18446744073709551615",
    "31536000.001",
    "1.0019999999",
];

/// A standalone script for a run called `t` whose QEMU is the shell `qemu` script.
fn standalone_script(directory: &Path, qemu: &str) -> (PathBuf, PathBuf) {
    let config = Config::parse(
        Path::new("unittests.toml"),
        "[t]\nfile = \"xguest\"\narch = \"x86_64\"\n".to_owned(),
    )
    .unwrap();
    let script = directory.join("t");
    let bytes = standalone::script(&config.entries[0], Arch::X86_64, b"not an image").unwrap();
    std::fs::write(&script, bytes).unwrap();
    let fake = directory.join("qemu");
    std::fs::write(&fake, format!("#!/bin/sh\n{qemu}\n")).unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    (script, fake)
}

fn run_script(script: &Path, fake: &Path, timeout: &str) -> Output {
    Command::new("sh")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ACCEL", "tcg")
        .env("QEMU", fake)
        .env("TIMEOUT", timeout)
        .output()
        .unwrap()
}

#[test]
fn standalone_scripts_parse_timeout_like_the_runner() {
    let directory = tempfile::tempdir().unwrap();
    // A QEMU that ends at once, printing nothing: any accepted TIMEOUT gets that far.
    let (script, fake) = standalone_script(directory.path(), "exit 0");
    for text in DURATIONS {
        let output = run_script(&script, &fake, text);
        let (stdout, stderr) = text_of(&output);
        let last = stdout.lines().last().unwrap_or_default().to_owned();
        match parse_duration(text) {
            Ok(_) => assert!(
                output.status.code() == Some(1) && !last.contains("TIMEOUT"),
                "TIMEOUT={text:?}: the runner accepts it, the script says {last:?} {stderr}"
            ),
            // An empty TIMEOUT is the script's default.
            Err(_) if text.is_empty() => {}
            Err(error) => {
                assert_eq!(
                    output.status.code(),
                    Some(2),
                    "TIMEOUT={text:?}: {stdout}{stderr}"
                );
                assert_eq!(last, format!("FAIL t (TIMEOUT: {error})"), "TIMEOUT={text:?}");
            }
        }
    }
}

#[test]
fn standalone_scripts_time_out_below_a_second() {
    let directory = tempfile::tempdir().unwrap();
    let (script, fake) = standalone_script(directory.path(), "exec sleep 5");
    for (timeout, shown) in [("0.3", "0.3s"), ("0.005m", "0.3s")] {
        let started = Instant::now();
        let output = run_script(&script, &fake, timeout);
        let (stdout, stderr) = text_of(&output);
        assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stdout.ends_with(&format!("FAIL t (timeout; duration={shown})\n")),
            "{stdout}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}

fn text_of(output: &Output) -> (String, String) {
    text(output)
}

/// How many processes have exactly this command line.
fn processes(command_line: &str) -> usize {
    Command::new("pgrep")
        .args(["-x", "-f", command_line])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).lines().count())
        .unwrap_or(0)
}

/// Waits up to 10 s for `condition`.
fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Waits up to 10 s for the runner to exit.
fn wait_exit(runner: std::process::Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut runner = runner;
    while runner.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the runner did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    runner.wait_with_output().unwrap()
}

/// `timeout -s KILL ./run_tests`: the runner dies at once, and so does every QEMU it started,
/// the leader of each process group (which QEMU is) and what it started in turn.
#[test]
fn qemu_dies_with_a_killed_runner() {
    let workspace = FakeWorkspace::new(&config_of(&[("leader", "pass"), ("family", "pass")]));
    // A QEMU that becomes a sleep itself (the group's leader), or leaves one in its group.
    std::fs::write(
        workspace.qemu(),
        "#!/bin/sh\ncase \"$*\" in *family*) sleep 41.5 & wait ;; *) exec sleep 41.25 ;; esac\n",
    )
    .unwrap();
    let runner = workspace
        .runner()
        .args(["-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("both QEMUs running", || {
        processes("sleep 41.25") == 1 && processes("sleep 41.5") == 1
    });
    signal(&runner, nix::sys::signal::Signal::SIGKILL);
    let output = wait_exit(runner);
    assert_eq!(output.status.code(), None);
    wait_for("no QEMU left behind", || {
        processes("sleep 41.25") == 0 && processes("sleep 41.5") == 0
    });
}

/// A value that would overflow the deadline is refused when the options are read.
#[test]
fn a_huge_timeout_is_a_usage_error() {
    let workspace = FakeWorkspace::new(&config_of(&[("t", "pass")]));
    for (value, message) in [
        ("1e19", "vmunit: TIMEOUT: invalid duration '1e19'"),
        (
            "18446744073709551615",
            "vmunit: TIMEOUT: duration '18446744073709551615' is too long",
        ),
        ("1e-12", "vmunit: TIMEOUT: invalid duration '1e-12'"),
        ("-0", "vmunit: TIMEOUT: invalid duration '-0'"),
    ] {
        let output = workspace.runner().env("TIMEOUT", value).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{value}: {stdout}{stderr}");
        assert!(stderr.starts_with(message), "{value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Starts the runner on a quick run and two slow ones, interrupts it once both slow ones run,
/// and returns its output.
fn interrupted_run(workspace: &FakeWorkspace, arguments: &[&str], marker: &str) -> Output {
    let runner = workspace
        .runner()
        .args(arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the slow runs running", || {
        processes(&format!("sleep {marker}")) == 2
    });
    signal(&runner, nix::sys::signal::Signal::SIGTERM);
    wait_exit(runner)
}

/// An interrupted run is recorded as INTERRUPTED (log, SUMMARY, results.json), and so is one
/// the interruption kept from starting; `--rerun-failed` runs them again.
#[test]
fn interrupted_runs_are_recorded_and_rerun() {
    let marker = "43.25";
    let mode = format!("sleep:{marker}");
    let workspace = FakeWorkspace::new(&config_of(&[
        ("quick", "pass"),
        ("slow-a", &mode),
        ("slow-b", &mode),
        ("later", "pass"),
    ]));
    let output = interrupted_run(&workspace, &["-j", "2"], marker);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stdout.contains("INTERRUPTED slow-a (stopped: the runner was interrupted)\n"),
        "{stdout}"
    );
    assert!(
        workspace
            .read("logs/slow-a.log")
            .ends_with("INTERRUPTED slow-a (stopped: the runner was interrupted)\n"),
        "{}",
        workspace.read("logs/slow-a.log")
    );
    let summary = workspace.read("logs/SUMMARY");
    for line in [
        "PASS quick (2 tests)\n",
        "INTERRUPTED slow-b (stopped: the runner was interrupted)\n",
        "INTERRUPTED later (not started: the runner was interrupted)\n",
        "1 passed, 0 failed, 0 skipped (interrupted: the other runs did not finish)\n",
    ] {
        assert!(summary.contains(line), "{line}: {summary}");
    }
    let results: serde_json::Value = serde_json::from_str(&workspace.read("logs/results.json")).unwrap();
    let verdicts: Vec<(String, String)> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| {
            (
                result["name"].as_str().unwrap().to_owned(),
                result["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("quick", "PASS"),
        ("slow-a", "INTERRUPTED"),
        ("slow-b", "INTERRUPTED"),
        ("later", "INTERRUPTED"),
    ];
    assert_eq!(
        verdicts,
        expected.map(|(name, verdict)| (name.to_owned(), verdict.to_owned()))
    );
    // The rerun: the three that did not finish (the slow ones quick this time).
    std::fs::write(
        workspace.root().join("unittests.toml"),
        config_of(&[
            ("quick", "pass"),
            ("slow-a", "pass"),
            ("slow-b", "pass"),
            ("later", "pass"),
        ]),
    )
    .unwrap();
    let output = workspace.runner().arg("--rerun-failed").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with("3 passed, 0 failed, 0 skipped\n"), "{stdout}");
    assert!(!stdout.contains("PASS quick"), "{stdout}");
}

/// The machine-readable streams end with their own summary when interrupted: a JSON object,
/// and TAP's `Bail out!`.
#[test]
fn interrupted_streams_end_well_formed() {
    let marker = "43.5";
    let mode = format!("sleep:{marker}");
    let workspace = FakeWorkspace::new(&config_of(&[
        ("quick", "pass"),
        ("slow-a", &mode),
        ("slow-b", &mode),
    ]));
    let output = interrupted_run(&workspace, &["-j", "3", "--format", "json"], marker);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(130), "{stdout}{stderr}");
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|error| panic!("{line:?}: {error}"));
    }
    assert!(
        stdout
            .ends_with("{\"event\":\"summary\",\"failed\":0,\"interrupted\":2,\"passed\":1,\"skipped\":0}\n"),
        "{stdout}"
    );
    let output = interrupted_run(&workspace, &["-j", "3", "--tap"], marker);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stdout.ends_with(
            "# 1 passed, 0 failed, 0 skipped (interrupted: the other runs did not finish)\nBail out! interrupted\n"
        ),
        "{stdout}"
    );
    for line in stdout.lines() {
        assert!(
            line.is_empty()
                || ["TAP version", "1..", "ok ", "not ok ", "#", " ", "Bail out!"]
                    .iter()
                    .any(|start| line.starts_with(start)),
            "not TAP: {line:?}"
        );
    }
}

/// SIGTERM while the guests build: cargo is stopped at once, the runner exits 130, and the
/// last run's logs stay where they are.
#[test]
fn interrupting_the_build_stops_cargo_and_keeps_the_logs() {
    let workspace = FakeWorkspace::new(&config_of(&[("t", "pass")]));
    let cargo = workspace.root().join("fake-cargo");
    std::fs::write(&cargo, "#!/bin/sh\nsleep 44.25\n").unwrap();
    Command::new("chmod").arg("+x").arg(&cargo).status().unwrap();
    std::fs::create_dir_all(workspace.root().join("logs")).unwrap();
    // The last run's log directory: marked as vmunit's (vmunit_runner::logdir).
    std::fs::write(workspace.root().join("logs/.vmunit-log-directory"), "").unwrap();
    std::fs::write(workspace.root().join("logs/t.log"), "the last run\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmunit-runner"));
    command
        .current_dir(workspace.root())
        .env("QEMU", workspace.qemu())
        .env("ACCEL", "tcg")
        .env("CARGO", &cargo)
        .env_remove("TIMEOUT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let runner = command.spawn().unwrap();
    wait_for("cargo running", || processes("sleep 44.25") == 1);
    let started = Instant::now();
    signal(&runner, nix::sys::signal::Signal::SIGTERM);
    let output = wait_exit(runner);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(stderr.contains("vmunit: interrupted"), "{stderr}");
    assert_eq!(workspace.read("logs/t.log"), "the last run\n");
    assert!(!workspace.root().join("logs.old").exists());
    wait_for("cargo stopped", || processes("sleep 44.25") == 0);
}

/// A standalone script killed outright takes its QEMU and its watchdog along (where setpriv
/// can ask for that: util-linux).
#[test]
fn qemu_dies_with_a_killed_standalone_script() {
    let setpriv = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !setpriv {
        eprintln!("no setpriv with --pdeathsig here: nothing to check");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let (script, fake) = standalone_script(directory.path(), "exec sleep 45.25");
    let child = Command::new("sh")
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ACCEL", "tcg")
        .env("QEMU", &fake)
        .env("TIMEOUT", "47.5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("QEMU and the watchdog running", || {
        processes("sleep 45.25") == 1 && processes("sleep 47.5") == 1
    });
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_exit(child);
    wait_for("no QEMU or watchdog left behind", || {
        processes("sleep 45.25") == 0 && processes("sleep 47.5") == 0
    });
}
