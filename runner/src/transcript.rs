//! What a QEMU run printed, as the execute stage hands it to `classify`: the recent lines of
//! each stream and the lines that carry a status.

use std::collections::VecDeque;
use std::time::Duration;

use vmunit_protocol::Summary;

use crate::guest_line::{self, GuestLine, Label, SerialLine};

/// How many of the most recent lines of each stream a transcript keeps.
pub const KEPT_LINES: usize = 200;
/// How many `FAIL:` lines a transcript keeps (it counts them all).
const KEPT_FAIL_LINES: usize = 10;

/// Which of QEMU's streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The guest's serial console (QEMU's stdout).
    Serial,
    /// QEMU's own messages.
    Stderr,
}

/// How the QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessExit {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal (not by the runner's timeout).
    Signaled(i32),
    /// The runner killed it when its timeout ran out.
    TimedOut(Duration),
    /// The runner was interrupted (Ctrl-C, SIGTERM) while it ran, and stopped it.
    Interrupted,
}

/// Texts in QEMU's stderr that mean the hypervisor gave up on the guest (QEMU then pauses the VM).
const HYPERVISOR_ERROR_MARKERS: [&str; 4] = [
    "KVM internal error",
    "emulation failure",
    "kvm run failed",
    "KVM: entry failed",
];

/// What a run printed, reduced to what `classify` needs: the recent lines of each stream and
/// the lines that carry a status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    serial: VecDeque<String>,
    stderr: VecDeque<String>,
    exit_status: Option<u32>,
    summary: Option<String>,
    counts: Option<Summary>,
    fail_lines: Vec<String>,
    fail_count: usize,
    last_skip: Option<String>,
    abort_line: Option<String>,
    hypervisor_error: Option<String>,
}

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Transcript {
        Transcript::default()
    }

    /// A transcript of these lines (serial lines first, then stderr lines).
    pub fn from_lines(serial: &[&str], stderr: &[&str]) -> Transcript {
        let mut transcript = Transcript::new();
        for line in serial {
            transcript.push(Stream::Serial, line);
        }
        for line in stderr {
            transcript.push(Stream::Stderr, line);
        }
        transcript
    }

    /// Adds one line. Returns true when the line reports a hypervisor error, upon which QEMU
    /// pauses the guest and must be killed.
    pub fn push(&mut self, stream: Stream, line: &str) -> bool {
        let parsed = (stream == Stream::Serial).then(|| guest_line::parse(line));
        self.push_parsed(stream, line, parsed.as_ref())
    }

    /// Adds one line, a serial line already parsed (`parsed`, which [`Transcript::push`]
    /// otherwise does).
    pub fn push_parsed(&mut self, stream: Stream, line: &str, parsed: Option<&SerialLine<'_>>) -> bool {
        let line = line.trim_end_matches(['\r', '\n']);
        let kept = match stream {
            Stream::Serial => &mut self.serial,
            Stream::Stderr => &mut self.stderr,
        };
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line.to_owned());
        match stream {
            Stream::Serial => {
                match parsed {
                    Some(parsed) => self.note_serial(parsed),
                    None => self.note_serial(&guest_line::parse(line)),
                }
                false
            }
            Stream::Stderr => {
                if self.hypervisor_error.is_none()
                    && HYPERVISOR_ERROR_MARKERS
                        .iter()
                        .any(|marker| line.contains(marker))
                {
                    self.hypervisor_error = Some(line.trim().to_owned());
                    return true;
                }
                false
            }
        }
    }

    /// Notes what a parsed serial line says.
    fn note_serial(&mut self, line: &SerialLine<'_>) {
        match line.kind {
            GuestLine::Exit(exit) => self.exit_status = Some(exit.status),
            GuestLine::Summary(summary) => {
                self.summary = line.summary_text().map(str::to_owned);
                self.counts = Some(summary);
            }
            GuestLine::MalformedSummary(_) => {
                self.summary = line.summary_text().map(str::to_owned);
                self.counts = None;
            }
            GuestLine::Report(report) if report.label == Label::Fail => {
                self.fail_count += 1;
                if self.fail_lines.len() < KEPT_FAIL_LINES {
                    self.fail_lines.push(line.text.to_owned());
                }
            }
            GuestLine::Report(report) if report.label == Label::Skip => {
                self.last_skip = Some(report.text.to_owned());
            }
            _ => {}
        }
        if self.abort_line.is_none() && line.aborted {
            self.abort_line = Some(line.text.to_owned());
        }
    }

    /// The first `FAIL:` lines the guest printed (at most ten), whole.
    pub fn fail_lines(&self) -> &[String] {
        &self.fail_lines
    }

    /// The recent serial lines.
    pub fn serial_lines(&self) -> impl Iterator<Item = &str> {
        self.serial.iter().map(String::as_str)
    }

    /// The recent QEMU stderr lines.
    pub fn stderr_lines(&self) -> impl Iterator<Item = &str> {
        self.stderr.iter().map(String::as_str)
    }

    /// The hypervisor error line, if QEMU printed one.
    pub fn hypervisor_error(&self) -> Option<&str> {
        self.hypervisor_error.as_deref()
    }

    /// The status of the last `EXIT: STATUS=` line.
    pub fn exit_status(&self) -> Option<u32> {
        self.exit_status
    }

    /// The text of the last `SUMMARY:` line.
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }

    /// How many `FAIL:` lines the guest printed.
    pub fn fail_count(&self) -> usize {
        self.fail_count
    }

    /// The text of the last `SKIP:` line.
    pub fn last_skip(&self) -> Option<&str> {
        self.last_skip.as_deref()
    }

    /// The first line that says the guest aborted (`ABORT:`, an unhandled exception, a panic).
    pub fn abort_line(&self) -> Option<&str> {
        self.abort_line.as_deref()
    }

    /// The count of unexpected failures the summary reports.
    pub fn unexpected_failures(&self) -> u32 {
        self.counts.map_or(0, |counts| counts.failures)
    }

    /// The summary's unexpected failures, as `N unexpected failures`, when there are any.
    pub fn unexpected_failures_part(&self) -> Option<String> {
        let failures = self.unexpected_failures();
        (failures > 0).then(|| format!("{failures} unexpected failures"))
    }

    /// Whether QEMU printed nothing at all, on either stream.
    pub fn is_empty(&self) -> bool {
        self.serial.is_empty() && self.stderr.is_empty()
    }

    /// The last QEMU stderr line that is not blank.
    pub fn last_stderr(&self) -> Option<&str> {
        self.stderr
            .iter()
            .rev()
            .map(|line| line.trim())
            .find(|line| !line.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_is_bounded() {
        let mut transcript = Transcript::new();
        for index in 0..1000 {
            transcript.push(Stream::Serial, &format!("FAIL: {index}"));
            transcript.push(Stream::Stderr, "noise");
        }
        assert_eq!(transcript.serial_lines().count(), KEPT_LINES);
        assert_eq!(transcript.stderr_lines().count(), KEPT_LINES);
        assert_eq!(transcript.fail_count(), 1000);
        assert_eq!(transcript.fail_lines.len(), KEPT_FAIL_LINES);
        assert_eq!(transcript.serial_lines().last(), Some("FAIL: 999"));
    }
}
