//! The `run_tests` script's freshness check: cargo runs only when an input of the runner changed.
//!
//! A copy of the script runs in a scratch workspace with a stand-in `cargo` on PATH that logs its
//! calls and "builds" a runner printing its arguments. One test function: the scenarios share
//! the scratch workspace and run in order.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// The stand-in cargo: logs its arguments; unless FAKE_CARGO_FAIL is set, writes a runner that
/// prints `runner` and its arguments.
const FAKE_CARGO: &str = r#"#!/bin/sh
echo "$*" >>"$FAKE_CARGO_LOG"
[ -z "$FAKE_CARGO_FAIL" ] || exit 101
mkdir -p "$CARGO_TARGET_DIR/runner"
printf '#!/bin/sh\necho runner "$@"\n' >"$CARGO_TARGET_DIR/runner/vmunit-runner"
chmod +x "$CARGO_TARGET_DIR/runner/vmunit-runner"
"#;

/// A scratch workspace holding a copy of run_tests and a stand-in cargo.
struct Workspace {
    directory: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let root = directory.path();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../run_tests");
        fs::copy(script, root.join("run_tests")).expect("copy run_tests");
        fs::write(root.join("Cargo.toml"), "[workspace]\n").expect("write Cargo.toml");
        fs::create_dir_all(root.join("runner/src")).expect("create runner/src");
        fs::write(root.join("runner/src/main.rs"), "fn main() {}\n").expect("write main.rs");
        fs::create_dir_all(root.join("tests-x86/msr/src")).expect("create a guest crate");
        fs::write(root.join("tests-x86/msr/src/main.rs"), "").expect("write a guest source");
        fs::create_dir_all(root.join("bin")).expect("create bin");
        let cargo = root.join("bin/cargo");
        fs::write(&cargo, FAKE_CARGO).expect("write the stand-in cargo");
        fs::set_permissions(&cargo, fs::Permissions::from_mode(0o755)).expect("make it executable");
        // Everything as if written a while ago, as a checked-out tree is.
        for file in [
            "Cargo.toml",
            "runner/src/main.rs",
            "runner/src",
            "runner",
            "tests-x86/msr/src/main.rs",
        ] {
            set_mtime(&root.join(file), SystemTime::now() - Duration::from_secs(100));
        }
        Workspace { directory }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.directory.path().join(relative)
    }

    /// Runs `./run_tests ARGUMENTS` with `environment` added.
    fn run(&self, arguments: &[&str], environment: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(self.path("run_tests"));
        command
            .args(arguments)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path("home"))
            .env("CARGO_TARGET_DIR", self.path("target"))
            .env("FAKE_CARGO_LOG", self.path("cargo.log"));
        for (name, value) in environment {
            command.env(name, value);
        }
        command.output().expect("run run_tests")
    }

    /// How many times cargo ran so far.
    fn builds(&self) -> usize {
        fs::read_to_string(self.path("cargo.log")).map_or(0, |log| log.lines().count())
    }

    /// Runs `./run_tests --list` and says whether it ran cargo; the runner must have run.
    fn built(&self, environment: &[(&str, &str)]) -> bool {
        let before = self.builds();
        let output = self.run(&["--list"], environment);
        assert!(output.status.success(), "run_tests failed: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "runner --list\n");
        self.builds() > before
    }

    /// Gives `file` a modification time just after the stamp's: an edit after the last build.
    fn touch_after_stamp(&self, file: &str) {
        std::thread::sleep(Duration::from_millis(20));
        let stamp = fs::metadata(self.path("target/runner/vmunit-runner.stamp"))
            .and_then(|metadata| metadata.modified())
            .expect("the stamp's time");
        set_mtime(&self.path(file), stamp + Duration::from_millis(1));
    }
}

fn set_mtime(path: &Path, time: SystemTime) {
    fs::File::open(path)
        .and_then(|file| file.set_modified(time))
        .expect("set the modification time");
}

#[test]
fn run_tests_builds_the_runner_only_when_an_input_changed() {
    let workspace = Workspace::new();
    assert!(workspace.built(&[]), "the first run builds the runner");
    assert_eq!(
        fs::read_to_string(workspace.path("cargo.log")).expect("the log"),
        "build -q --profile runner -p vmunit-runner\n"
    );
    assert!(!workspace.built(&[]), "an untouched tree is fresh: no cargo");
    assert!(!workspace.built(&[]), "and stays fresh");

    workspace.touch_after_stamp("runner/src/main.rs");
    assert!(workspace.built(&[]), "touching a runner source makes it stale");
    assert!(!workspace.built(&[]), "fresh again after the build");

    workspace.touch_after_stamp("tests-x86/msr/src/main.rs");
    assert!(workspace.built(&[]), "touching a guest source makes it stale");

    fs::write(workspace.path("runner/src/added.rs"), "").expect("add a file");
    set_mtime(
        &workspace.path("runner/src/added.rs"),
        SystemTime::now() - Duration::from_secs(100),
    );
    set_mtime(
        &workspace.path("runner/src"),
        SystemTime::now() - Duration::from_secs(100),
    );
    assert!(
        workspace.built(&[]),
        "adding a file makes it stale, whatever its time"
    );
    assert!(!workspace.built(&[]), "fresh again after the build");

    fs::remove_file(workspace.path("runner/src/added.rs")).expect("remove the file");
    set_mtime(
        &workspace.path("runner/src"),
        SystemTime::now() - Duration::from_secs(100),
    );
    assert!(workspace.built(&[]), "removing a file makes it stale");

    assert!(
        workspace.built(&[("RUSTFLAGS", "-Copt-level=0")]),
        "new RUSTFLAGS make it stale"
    );
    assert!(
        !workspace.built(&[("RUSTFLAGS", "-Copt-level=0")]),
        "and the same again is fresh"
    );
    assert!(workspace.built(&[]), "and back without them is stale");

    fs::remove_file(workspace.path("target/runner/vmunit-runner")).expect("remove the runner");
    assert!(workspace.built(&[]), "a missing runner is rebuilt");

    workspace.touch_after_stamp("Cargo.toml");
    let failed = workspace.run(&["--list"], &[("FAKE_CARGO_FAIL", "1")]);
    assert_eq!(failed.status.code(), Some(2), "a failed build: {failed:?}");
    assert!(
        failed.stdout.is_empty(),
        "the runner does not run after a failed build"
    );
    assert!(workspace.built(&[]), "a failed build leaves the stamp stale");
    assert!(!workspace.built(&[]), "fresh after the build that succeeded");
}
