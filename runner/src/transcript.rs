//! What a QEMU run printed, as the execute stage hands it to `classify`: the recent lines of
//! each stream and the lines that carry a status.

use std::collections::VecDeque;
use std::time::Duration;

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
                self.note_serial(line);
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

    fn note_serial(&mut self, line: &str) {
        let text = line.trim_start();
        if let Some(status) = text.strip_prefix("EXIT: STATUS=") {
            self.exit_status = status.trim().parse().ok();
        } else if let Some(summary) = text.strip_prefix("SUMMARY:") {
            self.summary = Some(summary.trim().to_owned());
        } else if text.starts_with("FAIL:") {
            self.fail_count += 1;
            if self.fail_lines.len() < KEPT_FAIL_LINES {
                self.fail_lines.push(text.to_owned());
            }
        } else if let Some(skip) = text.strip_prefix("SKIP:") {
            self.last_skip = Some(skip.trim().to_owned());
        }
        if self.abort_line.is_none()
            && (text.starts_with("ABORT:")
                || text.contains("Unhandled exception")
                || text.contains("panicked at"))
        {
            self.abort_line = Some(text.to_owned());
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
    pub fn unexpected_failures(&self) -> usize {
        self.summary_part("unexpected failure")
            .map_or(0, |(count, _)| count)
    }

    /// The `N <what>[s]` part of the summary, with its count.
    pub fn summary_part(&self, what: &str) -> Option<(usize, &str)> {
        self.summary
            .as_deref()?
            .split(',')
            .map(str::trim)
            .find_map(|part| {
                let (count, rest) = part.split_once(' ')?;
                let rest = rest.trim();
                if rest != what && rest.strip_suffix('s') != Some(what) {
                    return None;
                }
                Some((count.parse().ok()?, part))
            })
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
