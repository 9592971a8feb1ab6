//! The end of each run's log file: notes on malformed `BENCH:` lines, the verdict line and the
//! notes shown under it, appended when the run finishes.

use std::io::Write;

use crate::report::{Event, Reporter};

/// Appends a finished run's verdict to its log.
#[derive(Debug, Default)]
pub struct LogReporter;

impl Reporter for LogReporter {
    fn event(&mut self, event: &Event<'_>) {
        let Event::Finished { result } = *event else {
            return;
        };
        let Some(path) = &result.log else {
            return;
        };
        let Ok(file) = std::fs::OpenOptions::new().append(true).open(path) else {
            return;
        };
        let mut log = std::io::BufWriter::new(file);
        for note in &result.malformed_benches {
            let _ = writeln!(log, "vmunit: {note}");
        }
        let _ = writeln!(log, "{}", result.outcome.report_line(&result.name));
        for note in &result.notes {
            let _ = writeln!(log, "    {note}");
        }
        let _ = log.flush();
    }
}
