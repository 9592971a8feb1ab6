//! The build stage: the guest crates of the planned runs, built with cargo before they run
//! (`--no-build` skips this).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::{Arch, TestEntry};
use crate::error::{AppError, BuildError};
use crate::interrupt::{group_of, interrupted, release_group, spawn_in_group};
use crate::options::Options;
use crate::plan::{Decision, Plan};
use crate::workspace;

/// cargo's messages as JSON lines on stdout (where the artifacts are), its diagnostics still
/// rendered for people on stderr.
const MESSAGE_FORMAT: &str = "--message-format=json-render-diagnostics";

/// Where the guest images are: what cargo reported for the crates this invocation built.
#[derive(Clone, Debug, Default)]
pub struct Images {
    built: BTreeMap<(Arch, String), PathBuf>,
}

impl Images {
    /// The image of the guest crate `file` for `arch`: the executable cargo reported when this
    /// invocation built it, else (`--no-build`, `--list`, `--standalone`) where cargo puts it.
    pub fn image(&self, workspace: &Path, arch: Arch, file: &str) -> PathBuf {
        self.built
            .get(&(arch, file.to_owned()))
            .cloned()
            .unwrap_or_else(|| workspace::image_path(workspace, arch, file))
    }
}

/// One line of cargo's JSON messages: only what locates an artifact.
#[derive(serde::Deserialize)]
struct CargoMessage {
    reason: String,
    #[serde(default)]
    target: Option<CargoTarget>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct CargoTarget {
    name: String,
}

/// The executables in cargo's JSON messages (`compiler-artifact`), by target name.
fn executables(messages: impl BufRead) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<CargoMessage>(&line).ok())
        .filter(|message| message.reason == "compiler-artifact")
        .filter_map(|message| Some((message.target?.name, message.executable?)))
        .collect()
}

/// The cargo command that builds `files` for `arch`, run from the workspace root.
pub fn build_command(workspace: &Path, arch: Arch, files: &[&str], verbose: bool) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", arch.target()])
        .arg(MESSAGE_FORMAT);
    for file in files {
        command.args(["-p", file]);
    }
    if !verbose {
        command.arg("--quiet");
    }
    command
}

/// Builds the guest crates `files` for `arch`; cargo's diagnostics go to the terminal.
/// Returns the executables cargo built, by target name.
pub fn build(
    workspace: &Path,
    arch: Arch,
    files: &[&str],
    verbose: bool,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut command = build_command(workspace, arch, files, verbose);
    let line = describe(&command);
    if verbose {
        println!("{line}");
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let spawn_error = |source| BuildError::Spawn {
        program: program.clone(),
        source,
    };
    // In its own process group, which an interruption (Ctrl-C, SIGTERM) stops at once and
    // which dies with the runner; the runner forwards the terminal's Ctrl-C to it.
    let Some(mut child) = spawn_in_group(command.stdout(Stdio::piped())).map_err(spawn_error)? else {
        return Err(BuildError::Interrupted);
    };
    let group = group_of(&child);
    let built = child
        .stdout
        .take()
        .map(|stdout| executables(BufReader::new(stdout)))
        .unwrap_or_default();
    let status = child.wait().map_err(spawn_error);
    if release_group(group) {
        return Err(BuildError::Interrupted);
    }
    let status = status?;
    if status.success() {
        Ok(built)
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

/// Builds the guests that will run, grouped by architecture; returns where their images are.
/// An interruption (Ctrl-C, SIGTERM) stops cargo and returns [`AppError::Interrupted`].
pub fn build_guests(workspace: &Path, plan: &Plan, verbose: bool) -> Result<Images, AppError> {
    let mut images = Images::default();
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
        match build(workspace, arch, &files, verbose) {
            Ok(built) => images
                .built
                .extend(built.into_iter().map(|(name, path)| ((arch, name), path))),
            Err(BuildError::Interrupted) => return Err(AppError::Interrupted),
            Err(_) if interrupted() => return Err(AppError::Interrupted),
            Err(error) => return Err(error.into()),
        }
    }
    if interrupted() {
        return Err(AppError::Interrupted);
    }
    Ok(images)
}

/// The image a run boots: `--kernel`'s, else the guest crate's release build.
pub fn image_for(options: &Options, images: &Images, arch: Arch, entry: &TestEntry) -> PathBuf {
    match &options.kernel {
        Some(kernel) => kernel.image.clone(),
        None => images.image(&options.workspace, arch, &entry.file),
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
                MESSAGE_FORMAT,
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
                MESSAGE_FORMAT,
                "-p",
                "gic"
            ]
        );
    }

    #[test]
    fn images_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"vmunit","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"msr","kind":["bin"]},"executable":"/t/custom/msr"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\nnot json\n"
        );
        let built = executables(messages.as_bytes());
        assert_eq!(built, [("msr".to_owned(), PathBuf::from("/t/custom/msr"))]);
        let mut images = Images::default();
        images
            .built
            .extend(built.into_iter().map(|(name, path)| ((Arch::X86_64, name), path)));
        let workspace = Path::new("/w");
        assert_eq!(
            images.image(workspace, Arch::X86_64, "msr"),
            Path::new("/t/custom/msr")
        );
        assert_eq!(
            images.image(workspace, Arch::X86_64, "cpuid"),
            workspace::image_path(workspace, Arch::X86_64, "cpuid")
        );
        assert_eq!(
            images.image(workspace, Arch::Aarch64, "msr"),
            workspace::image_path(workspace, Arch::Aarch64, "msr")
        );
    }
}
