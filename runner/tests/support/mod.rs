//! Shared by the runner's integration tests: a throwaway workspace whose guests are empty
//! files and whose QEMU is a shell script that behaves as the guest's arguments say.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fake QEMU: acts on the word after `-append`.
/// `pass`, `fail`, `skip`: report lines and the matching exit; `sleep:<seconds>`: pass after a
/// pause; `flood:<MiB>`: that many MiB of 64-byte lines and a 1 MiB line, then pass;
/// `tagged:<tag>`: 300 report lines naming the tag; `binary`: invalid UTF-8 then pass;
/// `signal`: QEMU kills itself with SIGSEGV; `lines:<count>`: numbered report lines then pass;
/// `bench`: a report line, two BENCH measurements and a malformed BENCH line, then pass;
/// `longfail`: a 16 KiB line with `FAIL:` after its first 16384 bytes, then pass; `silent`:
/// exit 0 having printed nothing (`QEMU=/bin/true`); `nomachine`: QEMU's message for an
/// unknown machine type, exit 1; `showenv`: a report line per line of the guest environment
/// file (`-initrd`), then pass. Like QEMU, it fails when the `-initrd` file is missing.
pub const FAKE_QEMU: &str = r#"#!/bin/sh
case "$*" in *'-device help'*) echo 'name "pci-testdev", bus PCI'; exit 0;; esac
mode=none
initrd=''
while [ $# -gt 0 ]; do
    if [ "$1" = "-append" ]; then mode=$2; fi
    if [ "$1" = "-initrd" ]; then initrd=$2; fi
    shift
done
if [ -n "$initrd" ] && [ ! -r "$initrd" ]; then echo "qemu: could not load initial ram disk '$initrd'" >&2; exit 1; fi
case "$mode" in
pass) echo 'PASS: first check'; echo 'PASS: second # check'; echo 'SUMMARY: 2 tests'; echo 'EXIT: STATUS=1'; exit 1;;
fail) echo 'PASS: a check that holds'; echo 'FAIL: a check that fails'; echo 'SUMMARY: 2 tests, 1 unexpected failures'; echo 'EXIT: STATUS=3'; exit 3;;
skip) echo 'SKIP: nothing to do'; echo 'SUMMARY: 1 tests, 1 skipped'; echo 'EXIT: STATUS=77'; exit 77;;
sleep:*) sleep "${mode#sleep:}"; echo 'PASS: slept'; echo 'EXIT: STATUS=1'; exit 1;;
flood:*) yes 'a line of flood, 64 bytes with its newline: 0123456789abcdefghi' | head -c "$((${mode#flood:} * 1048576))"; head -c 1048576 /dev/zero | tr '\0' 'x'; echo; echo 'PASS: survived'; echo 'EXIT: STATUS=1'; exit 1;;
tagged:*) tag=${mode#tagged:}; i=0; while [ $i -lt 300 ]; do echo "PASS: $tag line $i"; i=$((i + 1)); done; echo 'EXIT: STATUS=1'; exit 1;;
binary) printf 'PASS: bad \377\376 bytes\n\377\000\001\n'; echo 'EXIT: STATUS=1'; exit 1;;
signal) echo 'PASS: before the crash'; kill -SEGV $$;;
bench) echo 'PASS: cpuid returned the vendor'; echo 'INFO: cpuid: 1234 cycles'; echo 'BENCH: cpuid=1234 cycles'; echo 'BENCH: ipi=56.5 ns'; echo 'BENCH: broken 1 cycles'; echo 'SUMMARY: 1 tests'; echo 'EXIT: STATUS=1'; exit 1;;
longfail) head -c 16384 /dev/zero | tr '\0' 'x'; echo 'FAIL: after 16 KiB on the same line'; echo 'PASS: a'; echo 'SUMMARY: 1 tests'; echo 'EXIT: STATUS=1'; exit 1;;
silent) exit 0;;
showenv) while IFS= read -r line; do echo "PASS: environment $line"; done < "$initrd"; echo 'EXIT: STATUS=1'; exit 1;;
nomachine) echo 'qemu-system-x86_64: unsupported machine type: "nosuch"' >&2; echo 'Use -machine help to list supported machines' >&2; exit 1;;
lines:*) i=0; while [ $i -lt "${mode#lines:}" ]; do echo "PASS: line $i of $mode"; i=$((i + 1)); done; echo 'EXIT: STATUS=1'; exit 1;;
*) echo "fake-qemu: unknown mode $mode" >&2; exit 1;;
esac
"#;

/// A workspace with one guest crate (`xguest`, an empty image) and the fake QEMU.
pub struct FakeWorkspace {
    /// Keeps the directory alive.
    pub directory: tempfile::TempDir,
}

impl FakeWorkspace {
    /// A workspace whose unittests.toml is `config`; every table should use `file = "xguest"`.
    pub fn new(config: &str) -> FakeWorkspace {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::write(root.join("Cargo.toml"), "").unwrap();
        std::fs::write(root.join("unittests.toml"), config).unwrap();
        std::fs::create_dir_all(root.join("tests-x86/xguest")).unwrap();
        let image = root.join("target/x86_64-unknown-none/release/xguest");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, "").unwrap();
        std::fs::write(root.join("qemu"), FAKE_QEMU).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(root.join("qemu"))
            .status()
            .unwrap();
        FakeWorkspace { directory }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.directory.path()
    }

    /// The fake QEMU's path.
    pub fn qemu(&self) -> PathBuf {
        self.root().join("qemu")
    }

    /// The runner binary in this workspace: fake QEMU, TCG, no build, clean environment.
    pub fn runner(&self) -> Command {
        let mut command = self.building_runner();
        command.arg("--no-build");
        command
    }

    /// [`Self::runner`] with the build stage on (the caller supplies a `CARGO`).
    pub fn building_runner(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vmunit-runner"));
        for variable in [
            "QEMU",
            "ACCEL",
            "TIMEOUT",
            "MAX_SMP",
            "MACHINE",
            "MIGRATION",
            "NO_COLOR",
            "CARGO_TARGET_DIR",
        ] {
            command.env_remove(variable);
        }
        command
            .current_dir(self.root())
            .env("QEMU", self.qemu())
            .env("ACCEL", "tcg");
        command
    }

    /// Reads a file of the workspace.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
    }
}

/// A config of tables named `name`, each running `xguest` with its mode.
pub fn config_of(runs: &[(&str, &str)]) -> String {
    runs.iter()
        .map(|(name, mode)| format!("[{name}]\nfile = \"xguest\"\ntest_args = \"{mode}\"\n"))
        .collect()
}

/// The JSON events of `--format json` output, one per line; panics on a line that is not JSON.
#[allow(dead_code, reason = "not every test file reads JSON output")]
pub fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

/// stdout and stderr as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
