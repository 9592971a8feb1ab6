//! The runner in the project's own workspace, for the tests that boot its real guests under
//! TCG (migration runs and `--migrate`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The project's workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The runner in the project's workspace under TCG, its environment variables cleared,
/// logging into `logs`.
pub fn runner(logs: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmunit-runner"));
    for variable in ["QEMU", "ACCEL", "TIMEOUT", "MAX_SMP", "MACHINE", "MIGRATION"] {
        command.env_remove(variable);
    }
    command
        .current_dir(workspace())
        .args(["--accel", "tcg", "--log-dir"])
        .arg(logs);
    command
}
