//! Finding the vmunit workspace (the directory holding unittests.toml) and paths inside it.

use std::path::{Path, PathBuf};

use crate::config::Arch;

/// The name of the test-run table file at the workspace root.
pub const CONFIG_FILE: &str = "unittests.toml";

/// The workspace root: the nearest ancestor of `start` with unittests.toml and Cargo.toml.
pub fn locate_from(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|directory| directory.join(CONFIG_FILE).is_file() && directory.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// The workspace root, searched from the current directory, then from the runner's own
/// executable, then from where this crate was compiled.
pub fn locate() -> Option<PathBuf> {
    let current = std::env::current_dir().ok();
    let executable = std::env::current_exe().ok();
    current
        .as_deref()
        .and_then(locate_from)
        .or_else(|| executable.as_deref().and_then(locate_from))
        .or_else(|| locate_from(Path::new(env!("CARGO_MANIFEST_DIR"))))
}

/// Cargo's target directory for the workspace (`CARGO_TARGET_DIR` if set).
pub fn target_directory(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(directory) if !directory.is_empty() => workspace.join(directory),
        _ => workspace.join("target"),
    }
}

/// Where cargo puts the release image of guest `file` for `arch`.
pub fn image_path(workspace: &Path, arch: Arch, file: &str) -> PathBuf {
    target_directory(workspace)
        .join(arch.target())
        .join("release")
        .join(file)
}

/// The directory of guest crate `file` for `arch`.
pub fn crate_directory(workspace: &Path, arch: Arch, file: &str) -> PathBuf {
    workspace.join(arch.test_directory()).join(file)
}

/// A path as the user would type it: relative to the current directory when inside it.
pub fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|current| path.strip_prefix(current).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_workspace() {
        let root = locate_from(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(root.join(CONFIG_FILE).is_file());
        assert!(locate().is_some());
        assert!(locate_from(Path::new("/")).is_none());
    }

    #[test]
    fn paths() {
        let root = Path::new("/w");
        assert_eq!(
            crate_directory(root, Arch::X86_64, "msr"),
            Path::new("/w/tests-x86/msr")
        );
        assert_eq!(
            crate_directory(root, Arch::Aarch64, "gic"),
            Path::new("/w/tests-aarch64/gic")
        );
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(
                image_path(root, Arch::X86_64, "msr"),
                Path::new("/w/target/x86_64-unknown-none/release/msr")
            );
        }
    }
}
