//! The build stage: the guest crates of the planned runs, built with cargo before they run
//! (`--no-build` skips this). Its messages go to stderr, never into the output stream: on a
//! terminal a progress line (the crates cargo compiled so far), elsewhere one plain line per
//! stage, and with `-v` cargo's own output and command line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::config::{Arch, TestEntry};
use crate::error::{AppError, BuildError};
use crate::freshness::{self, Snapshot};
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

/// One line of cargo's JSON messages: only what locates an artifact and tells progress.
#[derive(serde::Deserialize)]
struct CargoMessage {
    reason: String,
    #[serde(default)]
    target: Option<CargoTarget>,
    #[serde(default)]
    executable: Option<PathBuf>,
    /// The artifact was up to date (not compiled by this build).
    #[serde(default)]
    fresh: bool,
}

#[derive(serde::Deserialize)]
struct CargoTarget {
    name: String,
}

/// The executables in cargo's JSON messages (`compiler-artifact`), by target name;
/// `compiled` is told the name of every crate compiled (not fresh) as its message arrives.
fn executables(messages: impl BufRead, compiled: &mut dyn FnMut(&str)) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<CargoMessage>(&line).ok())
        .filter(|message| message.reason == "compiler-artifact")
        .inspect(|message| {
            if let (false, Some(target)) = (message.fresh, &message.target) {
                compiled(&target.name);
            }
        })
        .filter_map(|message| Some((message.target?.name, message.executable?)))
        .collect()
}

/// The cargo program: `CARGO` (set when cargo runs the runner), else `cargo`.
fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// How the build stage shows its progress on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildProgress {
    /// `-v`: cargo's command line and cargo's own output.
    Verbose,
    /// stderr is a terminal: a progress line, redrawn per crate and cleared at the end.
    Terminal,
    /// Anything else (CI, a file): one plain line per stage.
    Lines,
}

impl BuildProgress {
    /// The progress of this invocation: `-v`, else whether stderr is a terminal.
    pub fn current(verbose: bool) -> BuildProgress {
        if verbose {
            BuildProgress::Verbose
        } else if std::io::stderr().is_terminal() {
            BuildProgress::Terminal
        } else {
            BuildProgress::Lines
        }
    }
}

/// The progress line of a build stage after `count` compiled crates, the last `last`.
fn progress_line(arch: Arch, count: usize, last: &str) -> String {
    format!("vmunit: building the {arch} guests: {count} crates compiled, last {last}")
}

/// The cargo command that builds `files` for `arch`, run from the workspace root.
pub fn build_command(workspace: &Path, arch: Arch, files: &[&str], verbose: bool) -> Command {
    build_command_with(&cargo_program(), workspace, arch, files, verbose)
}

fn build_command_with(cargo: &str, workspace: &Path, arch: Arch, files: &[&str], verbose: bool) -> Command {
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
    build_with(&cargo_program(), workspace, arch, files, verbose)
}

fn build_with(
    cargo: &str,
    workspace: &Path,
    arch: Arch,
    files: &[&str],
    verbose: bool,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let progress = BuildProgress::current(verbose);
    let mut command = build_command_with(cargo, workspace, arch, files, verbose);
    let line = describe(&command);
    match progress {
        BuildProgress::Verbose => crate::eprintln!("{line}"),
        BuildProgress::Lines => crate::eprintln!(
            "vmunit: building the {arch} guests ({} {})",
            files.len(),
            if files.len() == 1 { "crate" } else { "crates" }
        ),
        BuildProgress::Terminal => {
            // Shown at once, then redrawn as crates are compiled; cleared when cargo is done.
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "vmunit: building the {arch} guests");
            let _ = stderr.flush();
        }
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
    let mut count = 0;
    let mut compiled = |name: &str| {
        count += 1;
        if progress == BuildProgress::Terminal {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K{}", progress_line(arch, count, name));
            let _ = stderr.flush();
        }
    };
    let built = child
        .stdout
        .take()
        .map(|stdout| executables(BufReader::new(stdout), &mut compiled))
        .unwrap_or_default();
    if progress == BuildProgress::Terminal {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
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
        match build_unless_fresh(&cargo_program(), workspace, arch, &files, verbose) {
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

/// The stamp of the last successful build of `files` for `arch` (see [`freshness`]), one per
/// architecture and set of crates, under the target directory.
fn stamp_path(workspace: &Path, arch: Arch, files: &[&str]) -> PathBuf {
    let mut sorted = files.to_vec();
    sorted.sort_unstable();
    let digest = Sha256::digest(sorted.join(" ").as_bytes());
    let name: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    workspace::target_directory(workspace)
        .join("vmunit-stamps")
        .join(format!("guests-{arch}-{name}.stamp"))
}

/// The images a build reported, kept beside its stamp: the fresh path reads them back rather
/// than guessing cargo's layout.
fn images_path(stamp: &Path) -> PathBuf {
    stamp.with_extension("images.json")
}

/// The images recorded beside `stamp`, when there is one for each of `files` and it exists.
fn recorded_images(stamp: &Path, files: &[&str]) -> Option<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(images_path(stamp)).ok()?;
    let images: Vec<(String, PathBuf)> = serde_json::from_str(&text).ok()?;
    let complete = files
        .iter()
        .all(|file| images.iter().any(|(name, path)| name == file && path.is_file()));
    complete.then_some(images)
}

/// [`build`], unless nothing that goes into the build changed since the last successful build
/// of the same crates: then cargo's own up-to-date check (about 75 ms) is skipped, and the
/// images come from that build's record. A snapshot of the inputs is taken before cargo runs,
/// so that a file saved during the build leaves the stamp stale.
fn build_unless_fresh(
    cargo: &str,
    workspace: &Path,
    arch: Arch,
    files: &[&str],
    verbose: bool,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let stamp = stamp_path(workspace, arch, files);
    let key = format!(
        "{arch}: {}\ncargo={cargo}\n{}",
        files.join(" "),
        freshness::environment_key()
    );
    let snapshot = Snapshot::scan(&freshness::workspace_inputs(workspace), &key).ok();
    if let Some(snapshot) = &snapshot
        && snapshot.is_recorded_in(&stamp)
        && let Some(images) = recorded_images(&stamp, files)
    {
        if verbose {
            eprintln!(
                "vmunit: the {arch} guests are up to date ({})",
                workspace::shown(&stamp)
            );
        }
        return Ok(images);
    }
    ensure_target(workspace, arch, "rustc", "rustup")?;
    let built = build_with(cargo, workspace, arch, files, verbose)?;
    if let Some(snapshot) = snapshot
        && let Ok(json) = serde_json::to_string(&built)
        && std::fs::create_dir_all(stamp.parent().unwrap_or(workspace)).is_ok()
        && std::fs::write(images_path(&stamp), json).is_ok()
    {
        // A stamp that cannot be written only costs the next run cargo's check.
        let _ = snapshot.record(&stamp);
    }
    Ok(built)
}

/// Makes sure the toolchain that builds in `workspace` has the standard library of `arch`'s
/// target, adding it with rustup when it is missing. rustup adds a toolchain file's targets
/// only when it installs the toolchain itself, so a machine whose stable toolchain came first
/// lacks them ("can't find crate for `core`"). Runs only when the guests are built.
fn ensure_target(workspace: &Path, arch: Arch, rustc: &str, rustup: &str) -> Result<(), BuildError> {
    let target = arch.target();
    let output = Command::new(rustc)
        .current_dir(workspace)
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output();
    let Some(sysroot) = output
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
    else {
        // No rustc to ask: cargo's own error will say what is wrong.
        return Ok(());
    };
    let library = sysroot.join("lib/rustlib").join(target).join("lib");
    if library.is_dir() {
        return Ok(());
    }
    crate::eprintln!("vmunit: adding the Rust target {target} (rustup target add {target})");
    let missing = |why: String| BuildError::MissingTarget { target, why };
    let status = Command::new(rustup)
        .current_dir(workspace)
        .args(["target", "add", target])
        .stdout(Stdio::null())
        .status()
        .map_err(|error| missing(format!("cannot run {rustup}: {error}")))?;
    if !status.success() {
        return Err(missing(format!("{rustup} target add exited with {status}")));
    }
    if !library.is_dir() {
        return Err(missing(format!("{} is still missing", library.display())));
    }
    Ok(())
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

    /// A fake cargo that counts its calls in `calls` and reports `image` as the executable of
    /// the crate `msr`.
    fn fake_cargo(directory: &Path, image: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let script = directory.join("fake-cargo");
        let calls = directory.join("calls");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho x >> '{}'\n\
                 echo '{{\"reason\":\"compiler-artifact\",\"target\":{{\"name\":\"msr\"}},\"executable\":\"{}\"}}'\n",
                calls.display(),
                image.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script.display().to_string()
    }

    /// Writes an executable shell script `name` into `directory`.
    fn script(directory: &Path, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[test]
    fn a_missing_guest_target_is_added_or_named() {
        let directory = tempfile::tempdir().unwrap();
        let sysroot = directory.path().join("sysroot");
        let library = sysroot.join("lib/rustlib/x86_64-unknown-none/lib");
        let rustc = script(
            directory.path(),
            "rustc",
            &format!("#!/bin/sh\necho '{}'\n", sysroot.display()),
        );
        // No rustup: the error names the command that adds the target.
        let error = ensure_target(directory.path(), Arch::X86_64, &rustc, "/nonexistent/rustup").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("run `rustup target add x86_64-unknown-none`"),
            "{error}"
        );
        // A rustup that fails.
        let failing = script(directory.path(), "failing-rustup", "#!/bin/sh\nexit 1\n");
        assert!(ensure_target(directory.path(), Arch::X86_64, &rustc, &failing).is_err());
        // A rustup that adds it: the build goes on.
        let rustup = script(
            directory.path(),
            "rustup",
            &format!(
                "#!/bin/sh\n[ \"$*\" = 'target add x86_64-unknown-none' ] && mkdir -p '{}'\n",
                library.display()
            ),
        );
        ensure_target(directory.path(), Arch::X86_64, &rustc, &rustup).unwrap();
        assert!(library.is_dir());
        // Present: rustup is not asked.
        ensure_target(directory.path(), Arch::X86_64, &rustc, "/nonexistent/rustup").unwrap();
    }

    #[test]
    fn cargo_runs_only_when_an_input_changed() {
        let directory = tempfile::tempdir().unwrap();
        let workspace = directory.path().join("workspace");
        std::fs::create_dir_all(workspace.join("lib/src")).unwrap();
        std::fs::write(workspace.join("lib/src/lib.rs"), "// one").unwrap();
        let image = directory.path().join("msr-image");
        std::fs::write(&image, "ELF").unwrap();
        let cargo = fake_cargo(directory.path(), &image);
        let calls =
            || std::fs::read_to_string(directory.path().join("calls")).map_or(0, |text| text.lines().count());
        let build = || build_unless_fresh(&cargo, &workspace, Arch::X86_64, &["msr"], false).unwrap();
        let expected = vec![("msr".to_owned(), image.clone())];
        assert_eq!(build(), expected);
        assert_eq!(calls(), 1);
        // Nothing changed: the images come from the record, cargo does not run.
        assert_eq!(build(), expected);
        assert_eq!(calls(), 1);
        // Another crate set has a stamp of its own.
        build_unless_fresh(&cargo, &workspace, Arch::X86_64, &["msr", "apic"], false).unwrap();
        assert_eq!(calls(), 2);
        // A changed source (its size), an added file, a removed image: cargo runs again.
        std::fs::write(workspace.join("lib/src/lib.rs"), "// two!").unwrap();
        build();
        assert_eq!(calls(), 3);
        std::fs::write(workspace.join("lib/src/new.rs"), "").unwrap();
        build();
        assert_eq!(calls(), 4);
        build();
        assert_eq!(calls(), 4);
        std::fs::remove_file(&image).unwrap();
        build();
        assert_eq!(calls(), 5);
    }

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
            r#"{"reason":"compiler-artifact","target":{"name":"fresh","kind":["lib"]},"fresh":true}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"msr","kind":["bin"]},"executable":"/t/custom/msr"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\nnot json\n"
        );
        let mut compiled = Vec::new();
        let built = executables(messages.as_bytes(), &mut |name| compiled.push(name.to_owned()));
        assert_eq!(compiled, ["vmunit", "msr"]);
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
