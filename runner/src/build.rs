//! The build stage: the guest crates of the planned runs, built with cargo before they run
//! (`--no-build` skips this).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Arch, TestEntry};
use crate::error::{AppError, BuildError};
use crate::interrupt::interrupted;
use crate::options::Options;
use crate::plan::{Decision, Plan};
use crate::workspace;

/// The cargo command that builds `files` for `arch`, run from the workspace root.
pub fn build_command(workspace: &Path, arch: Arch, files: &[&str], verbose: bool) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", arch.target()]);
    for file in files {
        command.args(["-p", file]);
    }
    if !verbose {
        command.arg("--quiet");
    }
    command
}

/// Builds the guest crates `files` for `arch`; cargo's messages go to the terminal.
pub fn build(workspace: &Path, arch: Arch, files: &[&str], verbose: bool) -> Result<(), BuildError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut command = build_command(workspace, arch, files, verbose);
    let line = describe(&command);
    if verbose {
        println!("{line}");
    }
    let status = command.status().map_err(|source| BuildError::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            arch,
            command: line,
            status,
        })
    }
}

fn describe(command: &Command) -> String {
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect();
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// Builds the guests that will run, grouped by architecture.
pub fn build_guests(workspace: &Path, plan: &Plan, verbose: bool) -> Result<(), AppError> {
    let mut by_arch: BTreeMap<Arch, Vec<&str>> = BTreeMap::new();
    for item in &plan.runs {
        if let Decision::Run { arch, .. } = item.decision {
            let files = by_arch.entry(arch).or_default();
            if !files.contains(&item.entry.file.as_str()) {
                files.push(&item.entry.file);
            }
        }
    }
    for (arch, files) in by_arch {
        if let Err(error) = build(workspace, arch, &files, verbose) {
            return Err(if interrupted() {
                AppError::Interrupted
            } else {
                error.into()
            });
        }
    }
    Ok(())
}

/// The image a run boots: `--kernel`'s, else the guest crate's release build.
pub fn image_for(options: &Options, arch: Arch, entry: &TestEntry) -> PathBuf {
    match &options.kernel {
        Some(kernel) => kernel.image.clone(),
        None => workspace::image_path(&options.workspace, arch, &entry.file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let command = build_command(Path::new("/w"), Arch::X86_64, &["fixture", "msr"], false);
        let args: Vec<_> = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "build",
                "--release",
                "--target",
                "x86_64-unknown-none",
                "-p",
                "fixture",
                "-p",
                "msr",
                "--quiet"
            ]
        );
        assert_eq!(command.get_current_dir(), Some(Path::new("/w")));
        let command = build_command(Path::new("/w"), Arch::Aarch64, &["gic"], true);
        let args: Vec<_> = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "build",
                "--release",
                "--target",
                "aarch64-unknown-none",
                "-p",
                "gic"
            ]
        );
    }
}
