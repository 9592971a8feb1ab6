//! The log directory through the binary and a fake QEMU: write failures are reported, one
//! invocation at a time holds it, only a vmunit log directory is used, its contents (never the
//! directory itself) rotate into `<dir>.old`, and each run's log is capped.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{FakeWorkspace, config_of, text};

/// `command` run by `sh` with a file size limit of `blocks` (SIGXFSZ ignored, so a write past
/// it fails with EFBIG as on a full disk).
fn with_file_size_limit(command: &Command, blocks: u32) -> Command {
    let mut limited = Command::new("/bin/sh");
    limited
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""))
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    if let Some(directory) = command.get_current_dir() {
        limited.current_dir(directory);
    }
    limited
}

#[test]
fn a_log_that_cannot_be_written_fails_the_invocation() {
    let workspace = FakeWorkspace::new(&config_of(&[("flood", "flood:1"), ("quiet", "pass")]));
    let output = with_file_size_limit(&workspace.runner(), 200).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("PASS quiet (2 tests)\n"), "{stdout}");
    assert!(
        stdout.contains("log incomplete: cannot write logs/flood.log"),
        "{stdout}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("vmunit: the logs are incomplete: cannot write logs/flood.log:"),
        "{stderr}"
    );
    assert_eq!(last.matches("flood.log").count(), 1, "{stderr}");
}

#[test]
fn records_that_cannot_be_written_fail_the_invocation() {
    let workspace = FakeWorkspace::new(&config_of(&[("first", "pass")]));
    // QEMU (this wrapper) takes the records' names first, as a full disk would refuse them.
    let wrapper = workspace.root().join("qemu-taking-the-records");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nmkdir -p logs/SUMMARY logs/results.json\nrm report.xml && mkdir report.xml\nexec {} \"$@\"\n",
            workspace.qemu().display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    let output = workspace
        .runner()
        .env("QEMU", &wrapper)
        .args(["--junit", "report.xml"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("PASS first (2 tests)\n"), "{stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot write logs/SUMMARY")
            && last.contains("cannot write logs/results.json")
            && last.contains("cannot write report.xml"),
        "{stderr}"
    );
}

/// Waits until `path` exists (a run started), for at most ten seconds.
fn wait_for(path: &std::path::Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_invocation_fails_at_once_naming_the_holder_or_waits() {
    let workspace = FakeWorkspace::new(&config_of(&[("slow", "sleep:5"), ("quick", "pass")]));
    let first = workspace
        .runner()
        .arg("slow")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&workspace.root().join("logs/slow.log"));
    let started = Instant::now();
    let second = workspace.runner().arg("quick").output().unwrap();
    let (stdout, stderr) = text(&second);
    // At once: well before the holder's five seconds are over.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(second.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("in use by vmunit pid {}", first.id()))
            && stderr.contains("--wait-for-lock"),
        "{stderr}"
    );
    // The holder's logs stay where they are.
    assert!(workspace.root().join("logs/slow.log").exists());
    assert!(!workspace.root().join("logs/quick.log").exists());

    let waiting = workspace
        .runner()
        .args(["--wait-for-lock", "quick"])
        .output()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("PASS slow"), "{stdout}");
    let (stdout, stderr) = text(&waiting);
    assert!(waiting.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("waiting for vmunit pid"), "{stderr}");
    // The waiting invocation rotated the holder's logs only once the holder was done.
    let old_summary = workspace.read("logs.old/SUMMARY");
    assert!(old_summary.contains("PASS slow"), "{old_summary}");
    assert!(workspace.read("logs.old/slow.log").contains("PASS slow"));
    assert!(workspace.read("logs/SUMMARY").contains("PASS quick"));
}

#[test]
fn a_log_dir_that_is_a_file_is_refused_and_left_alone() {
    let workspace = FakeWorkspace::new(&config_of(&[("first", "pass")]));
    let root = workspace.root();
    std::fs::write(root.join("notes.txt"), "precious\n").unwrap();
    std::fs::write(root.join("notes.txt.old"), "also precious\n").unwrap();
    let output = workspace
        .runner()
        .args(["--log-dir", "notes.txt"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("notes.txt is not a directory"), "{stderr}");
    assert_eq!(workspace.read("notes.txt"), "precious\n");
    assert_eq!(workspace.read("notes.txt.old"), "also precious\n");
}

#[test]
fn a_log_dir_that_is_not_vmunits_is_refused_and_left_alone() {
    let workspace = FakeWorkspace::new(&config_of(&[("first", "pass")]));
    let root = workspace.root();
    std::fs::create_dir(root.join("photos")).unwrap();
    std::fs::write(root.join("photos/cat.jpg"), "meow").unwrap();
    let output = workspace.runner().args(["--log-dir", "photos"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("photos is not a vmunit log directory"),
        "{stderr}"
    );
    assert_eq!(workspace.read("photos/cat.jpg"), "meow");
    assert!(!root.join("photos.old").exists());
    assert!(!root.join("photos/first.log").exists());

    // Nor is a `<dir>.old` that is not the runner's emptied.
    std::fs::create_dir(root.join("fresh.old")).unwrap();
    std::fs::write(root.join("fresh.old/thesis.tex"), "chapter 1").unwrap();
    let output = workspace.runner().args(["--log-dir", "fresh"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("fresh.old is not a vmunit log directory"),
        "{stderr}"
    );
    assert_eq!(workspace.read("fresh.old/thesis.tex"), "chapter 1");
}

#[test]
fn an_empty_or_earlier_log_dir_is_adopted() {
    let workspace = FakeWorkspace::new(&config_of(&[("first", "pass")]));
    let root = workspace.root();
    std::fs::create_dir(root.join("empty")).unwrap();
    let output = workspace.runner().args(["--log-dir", "empty"]).output().unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(workspace.read("empty/first.log").contains("PASS first"));
    // A log directory written before the marker existed: only the runner's files.
    std::fs::create_dir(root.join("logs")).unwrap();
    std::fs::write(root.join("logs/SUMMARY"), "commit: none\n").unwrap();
    std::fs::write(root.join("logs/old-run.log"), "PASS old-run\n").unwrap();
    let output = workspace.runner().output().unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    assert_eq!(workspace.read("logs.old/old-run.log"), "PASS old-run\n");
}

#[test]
fn the_log_dir_itself_stays_put_and_only_the_runners_files_rotate() {
    let workspace = FakeWorkspace::new(&config_of(&[("first", "pass")]));
    let root = workspace.root();
    let output = workspace.runner().output().unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    // A mount point cannot be renamed: the directory stays (same inode), its files move.
    let inode = std::fs::metadata(root.join("logs")).unwrap().ino();
    std::fs::write(root.join("logs/README.mine"), "my notes").unwrap();
    let output = workspace.runner().output().unwrap();
    assert!(output.status.success(), "{:?}", text(&output));
    assert_eq!(std::fs::metadata(root.join("logs")).unwrap().ino(), inode);
    assert!(workspace.read("logs.old/first.log").contains("PASS first"));
    assert!(workspace.read("logs.old/SUMMARY").contains("PASS first"));
    assert!(workspace.read("logs/first.log").contains("PASS first"));
    assert_eq!(workspace.read("logs/README.mine"), "my notes");
    assert!(!root.join("logs.old/README.mine").exists());
}

#[test]
fn a_flooding_run_keeps_the_head_and_tail_of_its_log_and_says_so() {
    let workspace = FakeWorkspace::new(&config_of(&[("flood", "flood:1")]));
    let mut by_option = workspace.runner();
    by_option.args(["--log-limit", "64KiB"]);
    let mut by_environment = workspace.runner();
    by_environment.env("VMUNIT_LOG_LIMIT", "64KiB");
    for mut command in [by_option, by_environment] {
        let output = command.output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("PASS flood\n    log cut: "), "{stdout}");
        let log = workspace.read("logs/flood.log");
        assert!(log.len() < 80 * 1024, "{} bytes", log.len());
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].contains("-append flood:1"), "{}", lines[0]);
        assert_eq!(
            lines[1],
            "a line of flood, 64 bytes with its newline: 0123456789abcdefghi"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|line| line.starts_with("vmunit: log cut here: "))
                .count(),
            1,
            "{log}"
        );
        assert!(
            log.contains("PASS: survived\nEXIT: STATUS=1\nPASS flood\n    log cut: "),
            "{log}"
        );
    }
    let output = workspace.runner().args(["--log-limit", "lots"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{:?}", text(&output));
}
