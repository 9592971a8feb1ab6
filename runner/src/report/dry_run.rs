//! The dry run's reporter (`-n`): the QEMU command of every run and the skipped runs' lines,
//! whatever the format.

use crate::classify::Verdict;
use crate::report::{Event, Reporter, display_line, interrupted_line};

/// Prints a dry run.
#[derive(Debug, Default)]
pub struct DryRunReporter;

impl Reporter for DryRunReporter {
    fn event(&mut self, event: &Event<'_>) {
        match *event {
            Event::DryRun { command } => println!("{command}"),
            Event::Finished { result } if result.outcome.verdict() == Verdict::Skip => {
                println!("{}", display_line(&result.name, &result.outcome, false));
            }
            Event::Summary {
                totals,
                interrupted: true,
                ..
            } => println!("{}", interrupted_line(totals)),
            _ => {}
        }
    }
}
