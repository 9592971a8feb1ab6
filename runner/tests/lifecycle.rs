//! The runner's processes over their whole life: QEMU dies with the runner even when the runner
//! is killed outright, a standalone script parses TIMEOUT exactly as the runner does, an
//! interrupted run is recorded as INTERRUPTED, and an interrupted build stops at once.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::text;
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
