//! The runner under abuse, through the binary and a fake QEMU: a flood of output and invalid
//! UTF-8, QEMU dying on a signal, many parallel runs, and any unittests.toml content.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use support::{FakeWorkspace, config_of, text};
use vmunit_runner::config::{Config, ConfigError};

/// Peak resident memory of the runner allowed while it logs a 100 MiB flood.
const MEMORY_LIMIT_KIB: i64 = 64 * 1024;

#[test]
fn a_flood_of_output_keeps_memory_bounded_and_the_log_whole() {
    let workspace = FakeWorkspace::new(&config_of(&[("flood", "flood:100"), ("binary", "binary")]));
    // Uncapped, so that the whole flood goes through the log writer.
    let output = workspace.runner().args(["--log-limit", "0"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("PASS flood\n") && stdout.contains("PASS binary\n"),
        "{stdout}"
    );
    // The runner and its children were waited for: their peak memory is known.
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    assert!(
        usage.max_rss() < MEMORY_LIMIT_KIB,
        "peak memory {} KiB of some child of the test",
        usage.max_rss()
    );
    let log = std::fs::read(workspace.root().join("logs/flood.log")).unwrap();
    let flood_bytes = 100 * 1024 * 1024;
    // Every line arrived: the flood, the 1 MiB line (one line, its first 16 KiB kept) and the rest.
    assert!(log.len() > flood_bytes + 16 * 1024, "{} bytes", log.len());
    let text = String::from_utf8(log).unwrap();
    assert!(
        text.contains("x [vmunit: 1032192 more bytes of this line cut]\nPASS: survived\n"),
        "no note of the cut line"
    );
    let flood_lines = text
        .lines()
        .filter(|line| *line == "a line of flood, 64 bytes with its newline: 0123456789abcdefghi")
        .count();
    assert_eq!(flood_lines, flood_bytes / 64);
    assert!(
        text.ends_with("PASS: survived\nEXIT: STATUS=1\nPASS flood\n"),
        "{}",
        &text[text.len() - 200..]
    );
    let binary = workspace.read("logs/binary.log");
    assert!(
        binary.contains("PASS: bad \u{fffd}\u{fffd} bytes\n"),
        "{binary:?}"
    );
}

#[test]
fn the_transcript_stays_capped() {
    use vmunit_runner::execute::{Sinks, execute};
    use vmunit_runner::qemu::QemuCommand;
    use vmunit_runner::transcript::KEPT_LINES;
    let command = QemuCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "seq 1 200000; echo 'EXIT: STATUS=1'; exit 1".into()],
    };
    let mut log = Vec::new();
    let execution = execute(
        &command,
        None,
        Sinks {
            log: Some(&mut log),
            live: false,
            observer: None,
        },
    )
    .unwrap();
    let kept: Vec<&str> = execution.transcript.serial_lines().collect();
    assert_eq!(kept.len(), KEPT_LINES);
    assert_eq!(kept.last(), Some(&"EXIT: STATUS=1"));
    assert_eq!(execution.transcript.exit_status(), Some(1));
    assert_eq!(String::from_utf8(log).unwrap().lines().count(), 200_001);
}

#[test]
fn qemu_killed_by_a_signal_fails_naming_it() {
    let workspace = FakeWorkspace::new(&config_of(&[("crash", "signal")]));
    let output = workspace.runner().args(["--format", "json"]).output().unwrap();
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(r#""detail":"terminated on SIGSEGV""#), "{stdout}");
    assert!(stdout.contains(r#""outcome":"crash""#), "{stdout}");
    let output = workspace.runner().output().unwrap();
    let (stdout, _) = text(&output);
    assert!(
        stdout.starts_with("FAIL crash (terminated on SIGSEGV)\n"),
        "{stdout}"
    );
    assert!(
        workspace
            .read("logs/crash.log")
            .ends_with("PASS: before the crash\nFAIL crash (terminated on SIGSEGV)\n")
    );
}

#[test]
fn many_parallel_runs_are_each_reported_once_with_their_own_log() {
    let names: Vec<String> = (0..40).map(|index| format!("run{index:02}")).collect();
    let runs: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let mode = match index % 4 {
                0 => "fail".to_owned(),
                1 => "skip".to_owned(),
                _ => format!("tagged:{name}"),
            };
            (name.clone(), mode)
        })
        .collect();
    let pairs: Vec<(&str, &str)> = runs
        .iter()
        .map(|(name, mode)| (name.as_str(), mode.as_str()))
        .collect();
    let workspace = FakeWorkspace::new(&config_of(&pairs));
    let output = workspace.runner().args(["-j", "8"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let mut verdicts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        if let (Some(verdict @ ("PASS" | "FAIL" | "SKIP")), Some(name)) = (words.next(), words.next()) {
            verdicts.entry(name).or_default().push(verdict);
        }
    }
    assert_eq!(verdicts.len(), 40, "{stdout}");
    for (index, name) in names.iter().enumerate() {
        let expected = ["FAIL", "SKIP", "PASS", "PASS"][index % 4];
        assert_eq!(verdicts[name.as_str()], [expected], "{name}");
    }
    assert!(stdout.ends_with("20 passed, 10 failed, 10 skipped\n"), "{stdout}");
    for (name, mode) in &runs {
        let log = workspace.read(&format!("logs/{name}.log"));
        let lines: Vec<&str> = log.lines().collect();
        assert!(
            lines[0].contains(&format!("-append {mode} ")),
            "{name}: {}",
            lines[0]
        );
        if mode.starts_with("tagged:") {
            let expected: Vec<String> = (0..300).map(|line| format!("PASS: {name} line {line}")).collect();
            assert_eq!(lines[1..301], expected, "{name}: interleaved or lost lines");
            assert_eq!(lines[302], format!("PASS {name}"));
        }
    }
    let summary = workspace.read("logs/SUMMARY");
    assert_eq!(summary.lines().count(), 1 + 40 + 1);
}

/// Checks one loader result: Ok, or an error located at a line and column within `source`
/// that names the file, on one line.
fn check_loaded(source: &str) -> Result<(), TestCaseError> {
    match Config::parse(Path::new("unittests.toml"), source.to_owned()) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid {
            path,
            line,
            column,
            message,
        }) => {
            prop_assert_eq!(path, "unittests.toml");
            prop_assert!(line >= 1 && line <= source.split('\n').count().max(1));
            prop_assert!(column >= 1);
            prop_assert!(!message.is_empty() && !message.contains('\n'), "{:?}", message);
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("unexpected error {other:?}"))),
    }
}

/// unittests.toml-shaped text: tables with known and unknown keys and values of any type.
fn config_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "file",
        "arch",
        "smp",
        "qemu_params",
        "test_args",
        "groups",
        "accel",
        "timeout",
        "machine",
        "requires",
        "disabled",
        "disabled_if",
        "env",
        "bogus",
    ]);
    let value = prop::sample::select(vec![
        "\"x86_64\"",
        "\"aarch64\"",
        "\"max\"",
        "\"3-8\"",
        "\"8-3\"",
        "0",
        "-1",
        "4",
        "1e3",
        "true",
        "\"90s\"",
        "\"2m\"",
        "\"soon\"",
        "[\"kvm\", \"root\"]",
        "[\"device:pci-testdev\"]",
        "[\"x2apic\"]",
        "[1, 2]",
        "{ accel = \"tcg\" }",
        "{ }",
        "{ cpu = 1 }",
        "{ FOO = \"bar\" }",
        "{ \"1X\" = \"y\" }",
        "\"-device 'a b\"",
        "\"é\"",
        "[",
        "\"unterminated",
        "{ accel = \"kvm\", machine = \"pc\" }",
    ]);
    let line = prop_oneof![
        (key, value).prop_map(|(key, value)| format!("{key} = {value}")),
        "[a-z\\-]{1,8}".prop_map(|name| format!("[{name}]")),
        Just("[dup]".to_owned()),
        ".{0,12}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_loads_or_fails_located(source in any::<String>()) {
        check_loaded(&source)?;
    }

    #[test]
    fn config_shaped_text_loads_or_fails_located(source in config_like()) {
        check_loaded(&source)?;
    }
}

/// Ctrl-C during a parallel run: the runner kills every QEMU process group, prints the
/// totals of what finished, and exits 130.
#[test]
fn interrupting_a_parallel_run_leaves_no_qemu_behind() {
    // A sleep length no other process on the machine uses, to find leftovers by.
    let marker = "sleep:37.25";
    let workspace = FakeWorkspace::new(&config_of(&[
        ("quick", "pass"),
        ("slow-a", marker),
        ("slow-b", marker),
    ]));
    let mut runner = workspace
        .runner()
        .args(["-j", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let leftovers = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 37.25"])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).lines().count())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while leftovers() < 2 && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(leftovers(), 2, "both slow runs should be running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = runner.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner did not exit after Ctrl-C"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let output = runner.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(status.code(), Some(130), "{stdout}{stderr}");
    assert!(stdout.contains("PASS quick (2 tests)\n"), "{stdout}");
    assert!(
        stdout.ends_with("1 passed, 0 failed, 0 skipped (interrupted: the other runs did not finish)\n"),
        "{stdout}"
    );
    assert!(stderr.contains("vmunit: interrupted"), "{stderr}");
    assert_eq!(leftovers(), 0, "QEMU processes outlived the runner");
}

/// A reader that goes away (`./run_tests | head`): the runner neither panics nor loses its
/// exit status.
#[test]
fn a_closed_stdout_is_no_panic() {
    let workspace = FakeWorkspace::new(&config_of(&[("first", "pass"), ("second", "fail")]));
    let mut runner = workspace
        .runner()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(runner.stdout.take());
    let output = runner.wait_with_output().unwrap();
    let (_, stderr) = text(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.code(),
        Some(1),
        "the failed run still decides the status: {stderr}"
    );
}
