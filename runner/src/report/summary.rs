//! `<log_dir>/SUMMARY`: the commit tested, a verdict line per run and the totals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::logdir::WriteFailures;
use crate::report::{Event, Reporter, interrupted_line};

/// Writes SUMMARY when the invocation ends (also when it was interrupted).
#[derive(Debug)]
pub struct SummaryReporter {
    log_dir: PathBuf,
    commit: String,
    failures: Arc<WriteFailures>,
}

impl SummaryReporter {
    /// A reporter that writes into `log_dir`, naming `commit` (see [`commit_of`]); a write
    /// error is noted in `failures`.
    pub fn new(log_dir: &Path, commit: &str, failures: &Arc<WriteFailures>) -> SummaryReporter {
        SummaryReporter {
            log_dir: log_dir.to_path_buf(),
            commit: commit.to_owned(),
            failures: Arc::clone(failures),
        }
    }
}

impl Reporter for SummaryReporter {
    fn event(&mut self, event: &Event<'_>) {
        let Event::Summary {
            results,
            totals,
            interrupted,
        } = *event
        else {
            return;
        };
        let mut text = format!("commit: {}\n", self.commit);
        for result in results {
            text.push_str(&result.outcome.report_line(&result.name));
            text.push('\n');
        }
        if interrupted {
            text.push_str(&format!("{}\n", interrupted_line(totals)));
        } else {
            text.push_str(&format!("{totals}\n"));
        }
        let path = self.log_dir.join("SUMMARY");
        if let Err(error) = std::fs::write(&path, text) {
            self.failures.record(&path, &error);
        }
    }
}

/// The commit checked out in `workspace`, or "none".
pub fn commit_of(workspace: &Path) -> String {
    commit_answered(query_commit(workspace).and_then(std::process::Child::wait_with_output))
}

/// Starts `git rev-parse` on the commit checked out in `workspace` (its answer, to
/// [`commit_answered`], is [`commit_of`]'s), so that the caller can work while git does.
pub fn query_commit(workspace: &Path) -> std::io::Result<std::process::Child> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
}

/// The commit in the output of [`query_commit`]'s git, or "none".
pub fn commit_answered(output: std::io::Result<std::process::Output>) -> String {
    output
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "none".to_owned())
}
