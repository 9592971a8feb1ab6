//! Why an invocation stops before reporting results ([`AppError`]), and the runner's exit
//! statuses ([`ExitStatus`]).

use crate::config::{Arch, ConfigError};
use crate::select::SelectError;

/// A failed guest build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// cargo could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The cargo binary.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The toolchain lacks the guest target's standard library and it could not be added.
    #[error(
        "the Rust target {target} is not installed ({why}); run `rustup target add {target}` (scripts/install-deps does)"
    )]
    MissingTarget {
        /// The target triple.
        target: &'static str,
        /// Why it could not be added.
        why: String,
    },
    /// The runner was interrupted (Ctrl-C, SIGTERM): cargo was stopped, or not started.
    #[error("interrupted")]
    Interrupted,
    /// cargo reported an error (its messages were printed).
    #[error("building the {arch} guests failed: {command} exited with {status}")]
    Failed {
        /// The architecture being built.
        arch: Arch,
        /// The cargo command, shell-quoted.
        command: String,
        /// cargo's exit status.
        status: std::process::ExitStatus,
    },
}

/// Why an invocation stopped before reporting results.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// unittests.toml is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A test name matched nothing, or a pattern is bad.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// A bad option or environment value.
    #[error("{0}")]
    Usage(String),
    /// A guest failed to build.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// QEMU is not installed.
    #[error("{0} not found; run scripts/install-deps (as root) to install QEMU")]
    QemuMissing(String),
    /// The log directory is unusable, or logs or records could not be written.
    #[error("{0}")]
    Io(String),
    /// Ctrl-C (or SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

impl AppError {
    /// The runner's exit status for this error: interrupted, else a usage or config error.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            AppError::Interrupted => ExitStatus::Interrupted,
            _ => ExitStatus::UsageOrConfigError,
        }
    }
}

/// The runner's exit statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Every run passed or was skipped (or nothing ran: `--list`, `--standalone`, ...).
    Success = 0,
    /// A run failed.
    TestsFailed = 1,
    /// A bad option, environment value or unittests.toml, a build error, or logs or records
    /// that could not be written.
    UsageOrConfigError = 2,
    /// Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        std::process::ExitCode::from(status as u8)
    }
}
