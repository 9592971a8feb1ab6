//! The end of each run's log file: notes on malformed `BENCH:` lines, the verdict line and the
//! notes shown under it, appended when the run finishes.

use std::io::Write;
use std::sync::Arc;

use crate::logdir::WriteFailures;
use crate::report::{Event, Reporter};

/// Appends a finished run's verdict to its log.
#[derive(Debug)]
pub struct LogReporter {
    failures: Arc<WriteFailures>,
}

impl LogReporter {
    /// A reporter that notes the logs it cannot write in `failures`.
    pub fn new(failures: &Arc<WriteFailures>) -> LogReporter {
        LogReporter {
            failures: Arc::clone(failures),
        }
    }
}

impl Reporter for LogReporter {
    fn event(&mut self, event: &Event<'_>) {
        let Event::Finished { result } = *event else {
            return;
        };
        let Some(path) = &result.log else {
            return;
        };
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|file| {
                let mut log = std::io::BufWriter::new(file);
                for note in &result.malformed_benches {
                    writeln!(log, "vmunit: {note}")?;
                }
                writeln!(log, "{}", result.outcome.report_line(&result.name))?;
                for note in &result.notes {
                    writeln!(log, "    {note}")?;
                }
                log.flush()
            });
        if let Err(error) = appended {
            self.failures.record(path, &error);
        }
    }
}
