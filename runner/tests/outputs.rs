//! The runner's output formats, through the binary and a fake QEMU: the plain lines and
//! summary, TAP version 13, JSON lines and JUnit XML.

mod support;

use support::{FakeWorkspace, config_of, text};

fn workspace() -> FakeWorkspace {
    FakeWorkspace::new(&format!(
        "{}[off]\nfile = \"xguest\"\ndisabled = \"not today\"\n",
        config_of(&[
            ("good", "pass"),
            ("bad", "fail"),
            ("empty", "skip"),
            ("slow", "sleep:0.3")
        ])
    ))
}

#[test]
fn plain_ends_with_slowest_then_totals() {
    let workspace = workspace();
    let output = workspace.runner().args(["-j", "2"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"2 passed, 1 failed, 2 skipped"), "{stdout}");
    let slowest = lines[lines.len() - 2];
    assert!(slowest.starts_with("slowest: slow 0."), "{stdout}");
    assert_eq!(slowest.matches(", ").count(), 2, "{slowest}");
    assert!(stdout.contains("SKIP off (disabled: not today)\n"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "colour without a terminal: {stdout}");
}

#[test]
fn tap() {
    let workspace = workspace();
    let output = workspace.runner().arg("--tap").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let expected_start = "TAP version 13\n1..5\n    # Subtest: good\n    ok 1 - first check\n    \
                          ok 2 - second \\# check\n    1..2\nok 1 - good (2 tests)\n    # Subtest: bad\n    \
                          ok 1 - a check that holds\n    not ok 2 - a check that fails\n    1..2\nnot ok 2 - bad\n  ---\n  \
                          outcome: fail\n  message: \"1 unexpected failures\"\n  \
                          notes: \"FAIL: a check that fails\"\n  log: ";
    assert!(stdout.starts_with(expected_start), "{stdout}");
    assert!(
        stdout.contains("    ok 1 - nothing to do # SKIP\n    1..1\nok 3 - empty # SKIP nothing to do\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok 5 - off # SKIP disabled: not today\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("# 2 passed, 1 failed, 2 skipped\n"), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("ok ") || line.starts_with("not ok "))
            .count(),
        5
    );
}

#[test]
fn json_events() {
    let workspace = workspace();
    let output = workspace
        .runner()
        .args(["--format", "json", "-j", "2"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let events = support::json_events(&stdout);
    let of = |name: &str, event: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|value| value["name"] == name && value["event"] == event)
            .collect()
    };
    assert_eq!(of("bad", "start").len(), 1);
    let reports = of("bad", "report");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1]["result"], "FAIL");
    assert_eq!(reports[1]["text"], "a check that fails");
    let end = of("bad", "end");
    assert_eq!(end[0]["verdict"], "FAIL");
    assert_eq!(end[0]["outcome"], "fail");
    assert!(end[0]["duration_secs"].as_f64().unwrap() > 0.0);
    let position = |wanted: &serde_json::Value| events.iter().position(|value| value == wanted).unwrap();
    assert!(position(of("bad", "start")[0]) < position(reports[0]));
    assert!(position(reports[1]) < position(end[0]));
    assert!(of("off", "start").is_empty());
    assert_eq!(of("off", "end")[0]["outcome"], "skip");
    assert!(!events.iter().any(|value| value["event"] == "message"));
    let output = workspace
        .runner()
        .args(["--format", "json", "-v", "good"])
        .output()
        .unwrap();
    let (stdout, _) = text(&output);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "message", "{stdout}");
    assert!(
        first["text"].as_str().unwrap().contains(" -append pass "),
        "{stdout}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(
        (
            summary["passed"].as_u64(),
            summary["failed"].as_u64(),
            summary["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
}

#[test]
fn junit_file() {
    let workspace = workspace();
    let path = workspace.root().join("out/junit.xml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let output = workspace.runner().arg("--junit").arg(&path).output().unwrap();
    let (stdout, _) = text(&output);
    assert!(stdout.ends_with("2 passed, 1 failed, 2 skipped\n"), "{stdout}");
    let xml = std::fs::read_to_string(&path).unwrap();
    // The common JUnit schema (junit-10.xsd) allows no `skipped` on <testsuites>.
    assert!(
        xml.contains("<testsuites name=\"vmunit\" tests=\"5\" failures=\"1\" errors=\"0\" time=\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testsuite name=\"vmunit\" tests=\"5\" skipped=\"2\" errors=\"0\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"1 unexpected failures\" type=\"fail\""),
        "{xml}"
    );
    assert!(xml.contains("<skipped message=\"disabled: not today\""), "{xml}");
    assert!(xml.contains("FAIL: a check that fails\n--- "), "{xml}");
    let output = workspace
        .runner()
        .args(["--junit", "/nonexistent/dir/j.xml"])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("vmunit: cannot write /nonexistent/dir/j.xml"),
        "{stderr}"
    );
}

/// Runs the runner on a pseudo-terminal (util-linux `script`), returning what the terminal got.
fn on_terminal(workspace: &FakeWorkspace, no_colour: bool) -> String {
    let command = workspace.runner();
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.extend(["-j".into(), "2".into()]);
    let line = shlex::try_join(words.iter().map(String::as_str)).unwrap();
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .current_dir(workspace.root());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    if no_colour {
        script.env("NO_COLOR", "1");
    }
    let output = script.output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn colour_and_progress_only_on_a_terminal() {
    assert!(
        std::path::Path::new("/usr/bin/script").exists(),
        "util-linux's script is needed to test terminal output"
    );
    let workspace = workspace();
    let screen = on_terminal(&workspace, false);
    assert!(
        screen.contains("\x1b[32mPASS\x1b[0m good (2 tests)"),
        "{screen:?}"
    );
    assert!(screen.contains("\x1b[31mFAIL\x1b[0m bad"), "{screen:?}");
    assert!(screen.contains("] running: "), "no progress line: {screen:?}");
    // No progress line is left on the last line, which is the plain totals.
    assert!(screen.contains("\nslowest: slow 0.3"), "{screen:?}");
    let last = screen.trim_end().rsplit('\n').next().unwrap();
    assert_eq!(
        last.trim_end_matches('\r'),
        "2 passed, 1 failed, 2 skipped",
        "{screen:?}"
    );
    let screen = on_terminal(&workspace, true);
    assert!(!screen.contains("\x1b[3"), "NO_COLOR ignored: {screen:?}");
    assert!(screen.contains("PASS good (2 tests)"), "{screen:?}");
}

/// `BENCH:` lines reach the JSON `end` event, the JUnit properties and results.json; they
/// count as no test, and a malformed one is noted in the log and under `-v`, not fatal.
#[test]
fn bench_lines_reach_json_junit_and_results() {
    let workspace = FakeWorkspace::new(&config_of(&[("measured", "bench"), ("good", "pass")]));
    let junit = workspace.root().join("junit.xml");
    let output = workspace
        .runner()
        .args(["--format", "json", "--junit"])
        .arg(&junit)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let events = support::json_events(&stdout);
    let end = |name: &str| {
        events
            .iter()
            .find(|event| event["event"] == "end" && event["name"] == name)
            .unwrap_or_else(|| panic!("no end event of {name}: {stdout}"))
    };
    assert_eq!(end("measured")["verdict"], "PASS", "{stdout}");
    assert_eq!(end("measured")["detail"], "1 tests", "{stdout}");
    assert_eq!(
        end("measured")["benches"],
        serde_json::json!([
            {"name": "cpuid", "value": 1234, "unit": "cycles"},
            {"name": "ipi", "value": 56.5, "unit": "ns"}
        ]),
        "{stdout}"
    );
    assert_eq!(end("good")["benches"], serde_json::json!([]), "{stdout}");
    // BENCH lines are no report lines.
    let reports = events
        .iter()
        .filter(|event| event["event"] == "report" && event["name"] == "measured")
        .count();
    assert_eq!(reports, 1, "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<property name="bench.measured.cpuid" value="1234 cycles"/>"#)
            && xml.contains(r#"<property name="bench.measured.ipi" value="56.5 ns"/>"#),
        "{xml}"
    );
    assert_eq!(xml.matches("<property ").count(), 2, "{xml}");
    let results: serde_json::Value = serde_json::from_str(&workspace.read("logs/results.json")).unwrap();
    let recorded = |name: &str| {
        results["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|result| result["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(recorded("measured")["benches"][1]["value"], 56.5, "{results}");
    assert!(recorded("good").get("benches").is_none(), "{results}");
    let log = workspace.read("logs/measured.log");
    assert!(
        log.contains(
            "vmunit: malformed BENCH line (no `=` between name and value): BENCH: broken 1 cycles\n"
        ),
        "{log}"
    );
    // -v shows the malformed line as it comes; the plain output counts one test.
    let output = workspace.runner().args(["-v", "measured"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "measured: malformed BENCH line (no `=` between name and value): BENCH: broken 1 cycles\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("PASS measured (1 tests)\n"), "{stdout}");
    // --rerun-failed still reads a results.json with benches.
    let output = workspace.runner().arg("--rerun-failed").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
}

/// A fake cargo: reports every `-p CRATE` as a compiled executable (the workspace's empty
/// image) on stdout, as `--message-format=json-render-diagnostics` does, and talks on stderr.
const FAKE_CARGO: &str = r#"#!/bin/sh
echo '   Compiling a guest' >&2
while [ $# -gt 0 ]; do
    if [ "$1" = -p ]; then
        printf '{"reason":"compiler-artifact","target":{"name":"%s"},"executable":"%s/target/x86_64-unknown-none/release/%s","fresh":false}\n' "$2" "$PWD" "$2"
    fi
    shift
done
printf '{"reason":"build-finished","success":true}\n'
"#;

/// The runner of `workspace` with the build stage on, through the fake cargo.
fn building_runner(workspace: &FakeWorkspace) -> std::process::Command {
    let cargo = workspace.root().join("cargo");
    std::fs::write(&cargo, FAKE_CARGO).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&cargo)
        .status()
        .unwrap();
    let mut command = workspace.building_runner();
    command.env("CARGO", &cargo);
    command
}

#[test]
fn build_messages_stay_out_of_the_streams() {
    let workspace = FakeWorkspace::new(&config_of(&[("good", "pass")]));
    for format in [&["--format", "json"][..], &["-t"]] {
        // Each format builds: without the stamp of the last build, cargo runs again.
        let _ = std::fs::remove_dir_all(workspace.root().join("target/vmunit-stamps"));
        let output = building_runner(&workspace)
            .arg("-v")
            .args(format)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        let first = stdout.lines().next().unwrap_or("");
        if format[0] == "-t" {
            assert!(first.starts_with("TAP version"), "{stdout}");
            assert!(
                stdout
                    .lines()
                    .all(|line| !line.contains("cargo") || line.starts_with('#')),
                "{stdout}"
            );
        } else {
            for line in stdout.lines() {
                assert!(
                    serde_json::from_str::<serde_json::Value>(line).is_ok(),
                    "not JSON: {line:?}\n{stdout}"
                );
            }
        }
        assert!(stderr.contains("--message-format"), "{stderr}");
        assert!(stderr.contains("   Compiling a guest"), "{stderr}");
    }
}

#[test]
fn the_build_says_what_it_does_in_ci() {
    let workspace = FakeWorkspace::new(&config_of(&[("good", "pass")]));
    // Not a terminal: one plain line per build stage, on stderr.
    let output = building_runner(&workspace).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line == "vmunit: building the x86_64 guests (1 crate)"),
        "{stderr}"
    );
    assert!(stdout.starts_with("PASS good"), "{stdout}");
}

/// Runs a copied command line with sh from the workspace root, the way a user would.
fn run_copied(workspace: &FakeWorkspace, line: &str) -> (Option<i32>, String) {
    let output = std::process::Command::new("sh")
        .args(["-c", line])
        .current_dir(workspace.root())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), format!("{stdout}{stderr}"))
}

#[test]
fn copied_command_lines_work_as_printed() {
    let workspace = FakeWorkspace::new(&config_of(&[("env", "showenv")]));
    // -n writes nothing, yet the line it prints runs.
    let output = workspace.runner().args(["-n", "env"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(!workspace.root().join("logs/env.env").exists());
    let line = stdout.lines().next().unwrap();
    let (status, printed) = run_copied(&workspace, line);
    assert_eq!(status, Some(1), "{line}: {printed}");
    assert!(printed.contains("PASS: environment ACCEL=tcg"), "{printed}");

    // A log moved to logs.old/ still reruns its own run, with its own environment.
    let output = workspace
        .runner()
        .args(["--env", "MARK=first", "env"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    let output = workspace.runner().arg("env").output().unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    let old_log = workspace.read("logs.old/env.log");
    let line = old_log.lines().next().unwrap();
    let (status, printed) = run_copied(&workspace, line);
    assert_eq!(status, Some(1), "{line}: {printed}");
    assert!(printed.contains("PASS: environment MARK=first"), "{printed}");
}

#[test]
fn the_reproduce_line_reproduces_the_run() {
    let workspace = FakeWorkspace::new(&config_of(&[("bad", "fail")]));
    let output = workspace
        .runner()
        .env("MACHINE", "q35")
        .args([
            "--accel",
            "tcg,thread=single",
            "--env",
            "K=v w",
            "bad",
            "--",
            "-d",
            "int",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&output);
    let line = stdout
        .lines()
        .find_map(|line| line.split_once("reproduce alone with: "))
        .map(|(_, command)| command.to_owned())
        .unwrap_or_else(|| panic!("{stdout}"));
    let qemu = workspace.qemu().display().to_string();
    assert_eq!(
        line,
        format!("QEMU={qemu} MACHINE=q35 ./run_tests bad --accel tcg,thread=single --env 'K=v w' -- -d int")
    );
    // With the accelerator from ACCEL, the run's own is named.
    let output = workspace.runner().arg("bad").output().unwrap();
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains(&format!(
            "reproduce alone with: QEMU={qemu} ./run_tests bad --accel tcg\n"
        )),
        "{stdout}"
    );
}

#[test]
fn a_fresh_clone_says_it_builds_the_runner() {
    // A fake cargo on PATH that records its arguments; an empty target directory is a fresh clone.
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = scratch.path().join("cargo-arguments");
    std::fs::write(
        bin.join("cargo"),
        format!("#!/bin/sh\necho \"$*\" > {}\n", record.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("cargo"))
        .status()
        .unwrap();
    let run_tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("run_tests");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let output = std::process::Command::new(&run_tests)
        .arg("--version")
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", scratch.path().join("target"))
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(
        stderr.lines().next(),
        Some("run_tests: building the runner first (once; this takes a minute)"),
        "{stderr}"
    );
    // Not a terminal: cargo stays quiet, the line above says what happens.
    let arguments = std::fs::read_to_string(&record).unwrap();
    assert!(arguments.starts_with("build -q --profile runner"), "{arguments}");
}

/// Reads a TAP stream on stdin with Perl's TAP::Parser (what `prove` uses): a line per test
/// point and YAML block, the parse errors, and the counts; each indented subtest is parsed the
/// same way on its own, as a nested TAP stream.
const TAP_PARSER_CHECK: &str = r#"
use strict;
use warnings;
use TAP::Parser;
sub check {
    my ($label, $text) = @_;
    my $parser = TAP::Parser->new({ tap => $text });
    my @subtest;
    while (my $result = $parser->next) {
        if ($result->is_unknown && $result->raw =~ /^    (.*)$/) {
            push @subtest, $1;
            next;
        }
        print "$label: unknown line: ", $result->raw, "\n" if $result->is_unknown;
        if ($result->is_test) {
            if (@subtest) {
                check("subtest " . $result->number, "TAP version 13\n" . join("\n", @subtest) . "\n");
                @subtest = ();
            }
            printf "%s: %s %d %s%s%s\n", $label, ($result->is_ok ? "ok" : "not ok"), $result->number,
                $result->description, ($result->has_skip ? " [skip]" : ""), ($result->has_todo ? " [todo]" : "");
        }
        if ($result->is_yaml) {
            my $data = $result->data;
            for my $key (sort keys %$data) {
                my $value = ref $data->{$key} ? join(" | ", @{ $data->{$key} }) : $data->{$key};
                print "$label: yaml $key: $value\n";
            }
        }
    }
    print "$label: parse error: $_\n" for $parser->parse_errors;
    printf "%s: version %s, plan %s, %d run, %d failed, good plan %s\n", $label, $parser->version,
        $parser->plan, $parser->tests_run, scalar($parser->failed), $parser->is_good_plan ? "yes" : "no";
}
check("top", do { local $/; <STDIN> });
"#;

/// Reads a TAP stream on stdin with tap.py (`pip install tap.py[yaml]`): a line per test
/// point and failure message, then the counts of its loader's tests (a stream that breaks one
/// of its rules, such as a wrong plan, gets an extra, failing one).
const TAP_PY_CHECK: &str = r#"
import sys, unittest
from tap.parser import Parser
from tap.loader import Loader
from tap.rules import Rules
text = sys.stdin.read()
for line in Parser().parse_text(text):
    if line.category == "test":
        flags = (" [skip]" if line.skip else "") + (" [todo]" if line.todo else "")
        print(f"tap.py: {'ok' if line.ok else 'not ok'} {line.number} {line.description}{flags}")
        if line.yaml_block is not None:
            print(f"tap.py: yaml message: {line.yaml_block['message']}")
suite = unittest.TestSuite()
Loader()._load_lines("stream", Parser().parse_text(text), suite, Rules("stream", suite))
result = unittest.TestResult()
suite.run(result)
print(f"tap.py: {result.testsRun} run, {len(result.failures) + len(result.errors)} failed, {len(result.skipped)} skipped")
"#;

/// The fake QEMU plus two modes: `abort` (an exception whose message has a `#`) and `info`
/// (INFO lines between the checks).
const MORE_MODES: &str = r#"#!/bin/sh
case "$*" in
*'-append abort'*) echo 'PASS: before the fault'; echo 'ABORT: Unhandled exception 6 #UD at ip 0x1000'; echo 'EXIT: STATUS=127'; exit 127;;
*'-append info'*) echo 'INFO: starting'; echo 'PASS: one'; echo 'INFO: between'; echo 'PASS: two'; echo 'SUMMARY: 2 tests'; echo 'EXIT: STATUS=1'; exit 1;;
esac
exec "$(dirname "$0")/qemu-base" "$@"
"#;

/// The TAP stream parses cleanly in Perl's TAP::Parser, subtests included, with the right
/// counts, the failed runs as failures and their YAML (escapes decoded) as data.
#[test]
fn tap_parses_in_perl_tap_parser() {
    let available = std::process::Command::new("perl")
        .args(["-MTAP::Parser", "-e", "1"])
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        eprintln!("skipped: perl with TAP::Parser is not installed");
        return;
    }
    let workspace = FakeWorkspace::new(&format!(
        "{}[off]\nfile = \"xguest\"\ndisabled = \"not today\"\n",
        config_of(&[
            ("good", "pass"),
            ("bad", "fail"),
            ("empty", "skip"),
            ("crash", "abort"),
            ("informed", "info"),
        ])
    ));
    std::fs::rename(workspace.qemu(), workspace.root().join("qemu-base")).unwrap();
    std::fs::write(workspace.qemu(), MORE_MODES).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(workspace.qemu())
        .status()
        .unwrap();
    let output = workspace.runner().arg("--tap").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let parsed = pipe(&["perl", "-e", TAP_PARSER_CHECK], &stdout);
    let context = format!("TAP:\n{stdout}\nTAP::Parser:\n{parsed}");
    assert!(
        !parsed.contains("parse error") && !parsed.contains("unknown line"),
        "{context}"
    );
    assert!(
        parsed.contains("top: version 13, plan 1..6, 6 run, 2 failed, good plan yes"),
        "{context}"
    );
    for expected in [
        "top: ok 1 - good (2 tests)",
        "top: not ok 2 - bad",
        "top: yaml message: 1 unexpected failures",
        "top: yaml notes: FAIL: a check that fails",
        "top: ok 3 - empty [skip]",
        "top: not ok 4 - crash",
        "top: yaml message: ABORT: Unhandled exception 6 #UD at ip 0x1000",
        "top: ok 6 - off [skip]",
        "subtest 1: ok 2 - second \\# check",
        "subtest 1: version 13, plan 1..2, 2 run, 0 failed, good plan yes",
        "subtest 2: not ok 2 - a check that fails",
        "subtest 2: version 13, plan 1..2, 2 run, 1 failed, good plan yes",
        "subtest 5: version 13, plan 1..2, 2 run, 0 failed, good plan yes",
    ] {
        assert!(parsed.contains(&format!("{expected}\n")), "{expected}: {context}");
    }
    let tap_py = std::process::Command::new("python3")
        .args(["-c", "import tap.parser, yaml, more_itertools"])
        .status()
        .is_ok_and(|status| status.success());
    if !tap_py {
        eprintln!("tap.py not checked: python3 with tap.py[yaml] is not installed");
        return;
    }
    let parsed = pipe(&["python3", "-c", TAP_PY_CHECK], &stdout);
    let context = format!("TAP:\n{stdout}\ntap.py:\n{parsed}");
    for expected in [
        "tap.py: ok 1 - good (2 tests)",
        "tap.py: not ok 2 - bad",
        "tap.py: yaml message: 1 unexpected failures",
        "tap.py: ok 3 - empty [skip]",
        "tap.py: yaml message: ABORT: Unhandled exception 6 #UD at ip 0x1000",
        "tap.py: ok 6 - off [skip]",
        "tap.py: 6 run, 2 failed, 2 skipped",
    ] {
        assert!(parsed.contains(&format!("{expected}\n")), "{expected}: {context}");
    }
}

/// What `command` prints with `input` on its stdin.
fn pipe(command: &[&str], input: &str) -> String {
    let mut child = std::process::Command::new(command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}
