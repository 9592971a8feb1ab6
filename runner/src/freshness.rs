//! A cheap freshness check in front of `cargo build`: a stamp file remembers the build's inputs.
//!
//! cargo's own up-to-date check of the guests costs about 75 ms even when nothing changed; a scan
//! of the workspace's few hundred source files costs about a millisecond. The build stage takes
//! a [`Snapshot`] of the inputs before it runs cargo, skips cargo when the snapshot matches the
//! stamp of the last successful build, and records the snapshot after a successful build:
//!
//! ```no_run
//! # use std::path::Path;
//! use vmunit_runner::freshness::{self, Snapshot};
//! # let (workspace, stamp) = (Path::new("."), Path::new("target/guests-x86_64.stamp"));
//! let snapshot = Snapshot::scan(&freshness::workspace_inputs(workspace), "x86_64: msr apic")?;
//! if !snapshot.is_recorded_in(stamp) {
//!     // cargo build --release --target x86_64-unknown-none -p msr -p apic
//!     snapshot.record(stamp)?;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The snapshot is a digest of every input file's and directory's path, size and modification
//! time, plus a key (what is built: architecture, packages, the environment that steers cargo).
//! Any added, removed, touched or replaced file changes it, in either direction of time. Taking
//! it before the build means a file saved while cargo runs leaves the stamp stale.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// The first line of a stamp file: a stamp of another format is stale.
const STAMP_HEADER: &str = "vmunit freshness stamp 1";

/// Environment variables that change what cargo builds; their values belong in a snapshot's key
/// (see [`environment_key`]). Prefixes end with `_`.
const STEERING_VARIABLES: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTUP_TOOLCHAIN",
    "CARGO_BUILD_",
    "CARGO_PROFILE_",
    "CARGO_TARGET_",
];

/// The inputs of a build in `workspace`: the crates' sources and manifests, cargo's
/// configuration and lock file, and the toolchain (rust-toolchain.toml, and rustup's record of
/// installed toolchain versions and overrides when rustup is in use). Paths that do not exist
/// are kept: one appearing later makes a snapshot stale.
pub fn workspace_inputs(workspace: &Path) -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "rust-toolchain.toml",
        "rust-toolchain",
        "lib",
        "protocol",
        "runner",
        "tests-x86",
        "tests-aarch64",
    ]
    .iter()
    .map(|name| workspace.join(name))
    .collect();
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".rustup")));
    if let Some(rustup_home) = rustup_home {
        inputs.push(rustup_home.join("update-hashes"));
        inputs.push(rustup_home.join("settings.toml"));
    }
    inputs
}

/// The values of the environment variables that steer cargo (RUSTFLAGS, CARGO_PROFILE_*, ...),
/// one `NAME=value` line each, sorted: a part of a snapshot's key.
pub fn environment_key() -> String {
    let mut lines: Vec<String> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            let steering = STEERING_VARIABLES.iter().any(|variable| {
                if variable.ends_with('_') {
                    name.starts_with(variable)
                } else {
                    name == *variable
                }
            });
            steering.then(|| format!("{name}={}", value.to_string_lossy()))
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The state of a build's inputs at one moment: a digest of the key and of every input's path,
/// size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Hexadecimal SHA-256 of the key and the inputs' entries.
    digest: String,
    /// How many files and directories the scan saw (kept in the stamp for a reader).
    entries: usize,
}

impl Snapshot {
    /// Scans `inputs` (files or directories, walked recursively without following symbolic
    /// links to directories; missing paths count as absent) under `key`, which names what is
    /// built.
    pub fn scan(inputs: &[PathBuf], key: &str) -> io::Result<Snapshot> {
        let mut hasher = Sha256::new();
        hasher.update(key.as_bytes());
        hasher.update([0]);
        let mut entries = 0;
        for input in inputs {
            entries += scan_path(input, &mut hasher)?;
        }
        let digest = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Snapshot { digest, entries })
    }

    /// Whether `stamp` holds this snapshot, i.e. nothing changed since the build that wrote it.
    /// A missing or unreadable stamp, or one in another format, does not.
    pub fn is_recorded_in(&self, stamp: &Path) -> bool {
        let Ok(text) = fs::read_to_string(stamp) else {
            return false;
        };
        let mut lines = text.lines();
        lines.next() == Some(STAMP_HEADER) && lines.next() == Some(self.digest.as_str())
    }

    /// Writes this snapshot to `stamp` (creating its directory), replacing it atomically; call it
    /// after a successful build with the snapshot taken before the build.
    pub fn record(&self, stamp: &Path) -> io::Result<()> {
        if let Some(directory) = stamp.parent() {
            fs::create_dir_all(directory)?;
        }
        let mut name = stamp.as_os_str().to_owned();
        name.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(name);
        let text = format!("{STAMP_HEADER}\n{}\n{} inputs\n", self.digest, self.entries);
        fs::write(&temporary, text)?;
        fs::rename(&temporary, stamp).inspect_err(|_| {
            let _ = fs::remove_file(&temporary);
        })
    }
}

/// Whether `stamp` records the current state of `inputs` under `key`; any error reading the
/// inputs counts as stale.
pub fn fresh(stamp: &Path, inputs: &[PathBuf], key: &str) -> bool {
    Snapshot::scan(inputs, key).is_ok_and(|snapshot| snapshot.is_recorded_in(stamp))
}

/// Scans the state of `inputs` under `key` now and records it in `stamp`. Prefer taking the
/// [`Snapshot`] before the build and recording it after: a file saved during the build then
/// leaves the stamp stale.
pub fn record(stamp: &Path, inputs: &[PathBuf], key: &str) -> io::Result<()> {
    Snapshot::scan(inputs, key)?.record(stamp)
}

/// Adds `path` (and, for a directory, everything under it, in name order) to `hasher`; returns
/// how many entries it added. A missing path adds nothing.
fn scan_path(path: &Path, hasher: &mut Sha256) -> io::Result<usize> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    // A symbolic link (say to the toolchain's binaries) counts as what it points to, but is not
    // walked into when it is a directory.
    let followed = if metadata.is_symlink() {
        fs::metadata(path).unwrap_or(metadata.clone())
    } else {
        metadata.clone()
    };
    let modified = followed
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.update(path.as_os_str().as_encoded_bytes());
    hasher.update(format!("\0{}\0{modified}\n", followed.len()).as_bytes());
    let mut entries = 1;
    if metadata.is_dir() {
        let mut children = fs::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<io::Result<Vec<PathBuf>>>()?;
        children.sort();
        for child in children {
            entries += scan_path(&child, hasher)?;
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A workspace-like tree: a manifest and one crate with one source file.
    fn tree() -> (tempfile::TempDir, Vec<PathBuf>, PathBuf) {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let root = directory.path();
        fs::write(root.join("Cargo.toml"), "[workspace]\n").expect("write Cargo.toml");
        fs::create_dir_all(root.join("runner/src")).expect("create runner/src");
        fs::write(root.join("runner/src/main.rs"), "fn main() {}\n").expect("write main.rs");
        let inputs = workspace_inputs(root);
        let stamp = root.join("target/runner.stamp");
        (directory, inputs, stamp)
    }

    /// Sets `file`'s modification time `seconds` after its current one, so that the test does
    /// not depend on the file system's timestamp granularity.
    fn shift_mtime(file: &Path, seconds: i64) {
        let modified = fs::metadata(file)
            .and_then(|metadata| metadata.modified())
            .expect("mtime");
        let shifted = if seconds >= 0 {
            modified + Duration::from_secs(seconds.unsigned_abs())
        } else {
            modified - Duration::from_secs(seconds.unsigned_abs())
        };
        fs::File::options()
            .write(true)
            .open(file)
            .and_then(|handle| handle.set_modified(shifted))
            .expect("set the modification time");
    }

    #[test]
    fn an_untouched_tree_is_fresh() {
        let (_directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "key").expect("record");
        assert!(fresh(&stamp, &inputs, "key"), "nothing changed since the stamp");
        assert!(fresh(&stamp, &inputs, "key"), "checking changes nothing");
    }

    #[test]
    fn without_a_stamp_everything_is_stale() {
        let (_directory, inputs, stamp) = tree();
        assert!(!fresh(&stamp, &inputs, "key"));
        fs::create_dir_all(stamp.parent().expect("a parent")).expect("create target");
        fs::write(&stamp, "not a stamp\n").expect("write a foreign stamp");
        assert!(
            !fresh(&stamp, &inputs, "key"),
            "a stamp of another format is stale"
        );
    }

    #[test]
    fn touching_a_source_file_makes_it_stale() {
        let (directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "key").expect("record");
        shift_mtime(&directory.path().join("runner/src/main.rs"), 1);
        assert!(!fresh(&stamp, &inputs, "key"), "a newer source file");
    }

    #[test]
    fn an_older_file_in_place_of_a_source_makes_it_stale() {
        let (directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "key").expect("record");
        shift_mtime(&directory.path().join("runner/src/main.rs"), -3600);
        assert!(
            !fresh(&stamp, &inputs, "key"),
            "a source file restored with an older time"
        );
    }

    #[test]
    fn adding_a_file_makes_it_stale() {
        let (directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "key").expect("record");
        let added = directory.path().join("runner/src/added.rs");
        fs::write(&added, "").expect("add a file");
        assert!(!fresh(&stamp, &inputs, "key"), "an added source file");
    }

    #[test]
    fn adding_a_crate_makes_it_stale() {
        let (directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "key").expect("record");
        fs::create_dir_all(directory.path().join("tests-x86/new-test/src")).expect("add a test crate");
        assert!(
            !fresh(&stamp, &inputs, "key"),
            "a new tests-x86/ (absent when recorded)"
        );
    }

    #[test]
    fn removing_a_file_makes_it_stale() {
        let (directory, inputs, stamp) = tree();
        fs::write(directory.path().join("runner/src/old.rs"), "").expect("write a file");
        record(&stamp, &inputs, "key").expect("record");
        fs::remove_file(directory.path().join("runner/src/old.rs")).expect("remove it");
        assert!(!fresh(&stamp, &inputs, "key"), "a removed source file");
    }

    #[test]
    fn another_key_is_stale() {
        let (_directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "x86_64: msr").expect("record");
        assert!(!fresh(&stamp, &inputs, "x86_64: msr apic"), "another package set");
    }

    #[test]
    fn a_file_saved_during_the_build_leaves_the_stamp_stale() {
        let (directory, inputs, stamp) = tree();
        let snapshot = Snapshot::scan(&inputs, "key").expect("scan before the build");
        // The build runs; meanwhile the user saves a source file.
        let source = directory.path().join("runner/src/main.rs");
        fs::write(&source, "fn main() { println!(\"edited\"); }\n").expect("edit");
        shift_mtime(&source, 1);
        snapshot.record(&stamp).expect("record after the build");
        assert!(!fresh(&stamp, &inputs, "key"), "the edit is not in the build");
    }

    #[test]
    fn the_stamp_is_outside_the_inputs_and_replaced_whole() {
        let (_directory, inputs, stamp) = tree();
        record(&stamp, &inputs, "key").expect("record");
        record(&stamp, &inputs, "key").expect("record again");
        let leftovers: Vec<_> = fs::read_dir(stamp.parent().expect("a parent"))
            .expect("list target")
            .filter_map(Result::ok)
            .filter(|entry| entry.path() != stamp)
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
        let text = fs::read_to_string(&stamp).expect("read the stamp");
        assert!(text.starts_with(STAMP_HEADER), "{text}");
        assert!(fresh(&stamp, &inputs, "key"));
    }

    #[test]
    fn the_environment_key_names_only_steering_variables() {
        let key = environment_key();
        for line in key.lines() {
            let name = line.split('=').next().unwrap_or_default();
            assert!(
                STEERING_VARIABLES
                    .iter()
                    .any(|variable| name == *variable
                        || (variable.ends_with('_') && name.starts_with(variable))),
                "{name} does not steer cargo"
            );
        }
    }
}
