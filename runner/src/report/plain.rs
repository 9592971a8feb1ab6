//! The plain format: one kvm-unit-tests-style line per run (coloured on a terminal), a live
//! progress line, the slowest runs and the totals.

use std::io::Write;

use crate::classify::{TestResult, Verdict};
use crate::report::{Event, Reporter, display_line, interrupted_line, slowest_line};
use crate::workspace::shown;

/// Prints the plain format.
#[derive(Debug, Default)]
pub struct PlainReporter {
    /// Colour the verdicts.
    colour: bool,
    /// Show a live progress line.
    progress: bool,
    /// Runs finished.
    finished: usize,
    /// Runs to report.
    total: usize,
    /// Names of the runs in progress.
    running: Vec<String>,
    /// Whether a progress line is on the screen.
    progress_shown: bool,
}

impl PlainReporter {
    /// A plain reporter; `colour` colours the verdicts, `progress` shows a progress line.
    pub fn new(colour: bool, progress: bool) -> PlainReporter {
        PlainReporter {
            colour,
            progress,
            ..PlainReporter::default()
        }
    }

    fn result(&self, result: &TestResult) {
        println!("{}", display_line(&result.name, &result.outcome, self.colour));
        for note in &result.notes {
            println!("    {note}");
        }
        if result.outcome.verdict() == Verdict::Fail {
            let log = result.log.as_deref().map(shown).unwrap_or_default();
            println!(
                "    log: {log}; reproduce alone with: ./run_tests {}",
                shlex::try_quote(&result.name).unwrap_or_default()
            );
        }
    }

    fn clear_progress(&mut self) {
        if self.progress_shown {
            print!("\r\x1b[K");
            self.progress_shown = false;
        }
    }

    fn draw_progress(&mut self) {
        if !self.progress || self.running.is_empty() {
            let _ = std::io::stdout().flush();
            return;
        }
        print!(
            "[{}/{}] running: {}",
            self.finished,
            self.total,
            self.running.join(", ")
        );
        let _ = std::io::stdout().flush();
        self.progress_shown = true;
    }
}

impl Reporter for PlainReporter {
    fn event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Begin { total } => self.total = total,
            Event::Message { text } => {
                self.clear_progress();
                println!("{text}");
                self.draw_progress();
            }
            Event::Started { name, .. } => {
                self.running.push(name.to_owned());
                self.clear_progress();
                self.draw_progress();
            }
            Event::Finished { result } => {
                self.running.retain(|running| *running != result.name);
                self.finished += 1;
                self.clear_progress();
                self.result(result);
                let _ = std::io::stdout().flush();
                self.draw_progress();
            }
            Event::Summary {
                results,
                totals,
                interrupted,
            } => {
                self.clear_progress();
                if interrupted {
                    println!("{}", interrupted_line(totals));
                    return;
                }
                if let Some(slowest) = slowest_line(results) {
                    println!("{slowest}");
                }
                println!("{totals}");
            }
            Event::DryRun { .. } | Event::GuestLine { .. } => {}
        }
    }
}
