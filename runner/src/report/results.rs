//! `<log_dir>/results.json`: the record of an invocation's results, written when it ends and
//! read by the next `--rerun-failed`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bench::Bench;
use crate::classify::{OutcomeKind, Verdict};
use crate::error::AppError;
use crate::logdir::WriteFailures;
use crate::report::{Event, Reporter};
use crate::workspace::shown;

/// The file name of the results record in the log directory.
pub use crate::logdir::RESULTS_FILE;

/// The record of a run's results.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResultsRecord {
    /// The commit tested, or "none".
    pub commit: String,
    /// One per run reported.
    pub results: Vec<RecordedResult>,
}

/// One run's result in the record.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedResult {
    /// The run's name.
    pub name: String,
    /// PASS, FAIL, SKIP or INTERRUPTED.
    pub verdict: Verdict,
    /// The outcome's kind.
    pub outcome: OutcomeKind,
    /// Wall time QEMU ran.
    pub duration_secs: f64,
    /// The run's `BENCH:` measurements (absent when it printed none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub benches: Vec<Bench>,
}

/// Writes results.json when the invocation ends (also when it was interrupted).
#[derive(Debug)]
pub struct ResultsReporter {
    log_dir: PathBuf,
    commit: String,
    failures: Arc<WriteFailures>,
}

impl ResultsReporter {
    /// A reporter that writes into `log_dir`, naming `commit`; a write error is noted in
    /// `failures`.
    pub fn new(log_dir: &Path, commit: &str, failures: &Arc<WriteFailures>) -> ResultsReporter {
        ResultsReporter {
            log_dir: log_dir.to_path_buf(),
            commit: commit.to_owned(),
            failures: Arc::clone(failures),
        }
    }
}

impl Reporter for ResultsReporter {
    fn event(&mut self, event: &Event<'_>) {
        let Event::Summary { results, .. } = *event else {
            return;
        };
        let record = ResultsRecord {
            commit: self.commit.clone(),
            results: results
                .iter()
                .map(|result| RecordedResult {
                    name: result.name.clone(),
                    verdict: result.outcome.verdict(),
                    outcome: result.outcome.kind(),
                    duration_secs: result.duration.as_secs_f64(),
                    benches: result.benches.clone(),
                })
                .collect(),
        };
        let path = self.log_dir.join(RESULTS_FILE);
        let written = serde_json::to_string_pretty(&record)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&path, json + "\n"));
        if let Err(error) = written {
            self.failures.record(&path, &error);
        }
    }
}

/// The names of the runs that failed or were interrupted (stopped, or not started) in the run
/// that wrote `<log_dir>/results.json`.
pub fn failed_last_time(log_dir: &Path) -> Result<Vec<String>, AppError> {
    let path = log_dir.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        AppError::Usage(format!(
            "--rerun-failed: cannot read the last run's results {}: {error}",
            shown(&path)
        ))
    })?;
    let record: ResultsRecord = serde_json::from_str(&text)
        .map_err(|error| AppError::Usage(format!("--rerun-failed: {}: {error}", shown(&path))))?;
    Ok(record
        .results
        .into_iter()
        .filter(|result| matches!(result.verdict, Verdict::Fail | Verdict::Interrupted))
        .map(|result| result.name)
        .collect())
}
