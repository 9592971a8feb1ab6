//! Running one QEMU process: spawn it in its own process group (killed with the runner, see
//! `interrupt`), read its stdout (the guest's
//! serial console) and stderr as lines, log them, enforce the timeout, kill QEMU at once on a
//! hypervisor error, and kill every running QEMU on Ctrl-C.

pub mod migration;
pub mod pool;
pub mod run;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::Step;
use crate::guest_line::{self, SerialLine};
use crate::interrupt::{group_of, release_group, signal_group, spawn_in_group};
pub use crate::interrupt::{interrupt_all, interrupted};
use crate::qemu::QemuCommand;
use crate::transcript::{ProcessExit, Stream, Transcript};

/// Longest line kept whole; a longer line keeps this many bytes and a note of the rest.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// How many lines may wait between the pipe readers and the run's loop.
const CHANNEL_LINES: usize = 1024;
/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_millis(500);
/// How long to keep reading output after QEMU was killed.
const DRAIN_TIME: Duration = Duration::from_millis(500);
/// How often to poll a child that closed its pipes but has not exited.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What went wrong starting QEMU.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// The runner was interrupted, so nothing more is started.
    #[error("interrupted")]
    Interrupted,
}

/// A callback that sees every line of a run as it arrives.
pub type LineObserver<'a> = dyn FnMut(Stream, &str, Option<&SerialLine<'_>>) + 'a;

/// Where a run's lines go besides the transcript.
pub struct Sinks<'a> {
    /// The log file, if any: every line, in arrival order.
    pub log: Option<&'a mut dyn Write>,
    /// Echo serial lines to stdout and QEMU's stderr lines to stderr as they arrive.
    pub live: bool,
    /// Called with every line as it arrives.
    pub observer: Option<&'a mut LineObserver<'a>>,
}

/// How one QEMU run went.
#[derive(Debug)]
pub struct Execution {
    /// How QEMU ended.
    pub exit: ProcessExit,
    /// What it printed.
    pub transcript: Transcript,
    /// Wall time from spawn to exit.
    pub duration: Duration,
    /// Why the `expect` script failed, if it did (the run then failed, whatever QEMU said).
    pub script_failure: Option<String>,
    /// Why a migration run failed (`migration`), if it did.
    pub migration_failure: Option<migration::MigrationFailure>,
    /// A note on a `--migrate` run that did not fail for its migration (not migrated).
    pub migration_note: Option<String>,
}

enum Event {
    Line(Stream, String),
    Closed,
}

/// Runs `command` to completion (or timeout, or hypervisor error), stdin from /dev/null.
pub fn execute(
    command: &QemuCommand,
    timeout: Option<Duration>,
    sinks: Sinks<'_>,
) -> Result<Execution, ExecuteError> {
    execute_interactive(command, timeout, sinks, &[])
}

/// Where an `expect` script stands during a run.
struct Script<'a> {
    steps: &'a [Step],
    /// The step being carried out.
    next: usize,
    /// When the current `expect` step gives up.
    step_deadline: Option<Instant>,
    input: Option<ChildStdin>,
    failure: Option<String>,
}

impl Script<'_> {
    /// Sends every `send` step from the current one on, up to the next `expect`, and starts
    /// that step's clock.
    fn advance(&mut self) {
        while let Some(step) = self.steps.get(self.next) {
            match step {
                Step::Send(text) => {
                    let sent = self
                        .input
                        .as_mut()
                        .map(|input| input.write_all(text.as_bytes()).and_then(|()| input.flush()));
                    if let Some(Err(error)) = sent {
                        self.failure = Some(format!(
                            "step {}: sending {text:?} failed: {error}",
                            self.next + 1
                        ));
                        return;
                    }
                    self.next += 1;
                }
                Step::Expect { timeout, .. } => {
                    self.step_deadline = Some(Instant::now() + *timeout);
                    return;
                }
            }
        }
        // Done: the guest's input ends here.
        self.step_deadline = None;
        self.input = None;
    }

    /// Checks a serial line against the current `expect` step.
    fn saw(&mut self, line: &str) {
        if let Some(Step::Expect { text, .. }) = self.steps.get(self.next)
            && line.contains(text.as_str())
        {
            self.next += 1;
            self.advance();
        }
    }

    /// The current step timed out.
    fn timed_out(&mut self) {
        if let Some(Step::Expect { text, timeout }) = self.steps.get(self.next) {
            self.failure = Some(format!(
                "expect step {}: no line with {text:?} within {}s",
                self.next + 1,
                timeout.as_secs_f64()
            ));
        }
        self.step_deadline = None;
    }

    /// After the run: a step still waiting is a failure too.
    fn finish(&mut self) {
        if self.failure.is_none()
            && let Some(Step::Expect { text, .. }) = self.steps.get(self.next)
        {
            self.failure = Some(format!(
                "expect step {}: QEMU ended before a line with {text:?}",
                self.next + 1
            ));
        }
    }
}

/// Runs `command` like [`execute`], feeding its serial input from an `expect` script: `send`
/// steps are written to QEMU's stdin (`-serial stdio`), `expect` steps wait for a serial line.
/// A step that times out kills QEMU and fails the run.
pub fn execute_interactive(
    command: &QemuCommand,
    timeout: Option<Duration>,
    sinks: Sinks<'_>,
    steps: &[Step],
) -> Result<Execution, ExecuteError> {
    let Sinks {
        mut log,
        live,
        mut observer,
    } = sinks;
    let mut process = Command::new(&command.program);
    process
        .args(&command.args)
        .stdin(if steps.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = spawn_in_group(&mut process)
        .map_err(|source| ExecuteError::Spawn {
            program: command.program.clone(),
            source,
        })?
        .ok_or(ExecuteError::Interrupted)?;
    let group = group_of(&child);

    // Bounded, so that a guest printing faster than the log is written blocks in its pipe
    // instead of filling the runner's memory.
    let (sender, receiver) = mpsc::sync_channel(CHANNEL_LINES);
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let sender = sender.clone();
        readers.push(thread::spawn(move || pump(stdout, Stream::Serial, &sender)));
    }
    if let Some(stderr) = child.stderr.take() {
        let sender = sender.clone();
        readers.push(thread::spawn(move || pump(stderr, Stream::Stderr, &sender)));
    }
    drop(sender);

    let deadline = timeout.map(|timeout| start + timeout);
    let mut script = Script {
        steps,
        next: 0,
        step_deadline: None,
        input: child.stdin.take(),
        failure: None,
    };
    script.advance();
    let mut transcript = Transcript::new();
    let mut open = readers.len();
    let mut killed: Option<Option<Duration>> = None;
    let mut drain_until: Option<Instant> = None;
    let mut record = |stream: Stream, line: &str, transcript: &mut Transcript| {
        if let Some(log) = log.as_mut() {
            // A log that cannot be written must not stop the run.
            let _ = writeln!(log, "{line}");
        }
        // A serial line is parsed here, once, for the observer and the transcript.
        let parsed = (stream == Stream::Serial).then(|| guest_line::parse(line));
        if let Some(observer) = observer.as_mut() {
            observer(stream, line, parsed.as_ref());
        }
        if live {
            match stream {
                Stream::Serial => println!("{line}"),
                Stream::Stderr => eprintln!("{line}"),
            }
        }
        transcript.push_parsed(stream, line, parsed.as_ref())
    };
    while open > 0 {
        let wait_until = match (drain_until.or(deadline), script.step_deadline) {
            (Some(run), Some(step)) => Some(run.min(step)),
            (run, step) => run.or(step),
        };
        let event = match wait_until {
            Some(until) => receiver.recv_timeout(until.saturating_duration_since(Instant::now())),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Line(stream, line)) => {
                if stream == Stream::Serial {
                    script.saw(&line);
                }
                if record(stream, &line, &mut transcript) && killed.is_none() {
                    terminate(&mut child, group);
                    killed = Some(None);
                    drain_until = Some(Instant::now() + DRAIN_TIME);
                }
            }
            Ok(Event::Closed) => open -= 1,
            Err(RecvTimeoutError::Timeout)
                if killed.is_none() && script.step_deadline.is_some_and(|step| Instant::now() >= step) =>
            {
                script.timed_out();
                terminate(&mut child, group);
                killed = Some(None);
                drain_until = Some(Instant::now() + DRAIN_TIME);
            }
            Err(RecvTimeoutError::Timeout) if killed.is_none() => {
                terminate(&mut child, group);
                killed = Some(timeout);
                drain_until = Some(Instant::now() + DRAIN_TIME);
            }
            Err(_) => break,
        }
    }
    // Both pipes are closed (or we stopped draining): reap QEMU, still under the timeout.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if killed.is_none() && deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                terminate(&mut child, group);
                killed = Some(timeout);
            }
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(_) => break None,
        }
    };
    let duration = start.elapsed();
    // Stragglers in QEMU's group, if any, go too; then the group is no longer ours.
    let stopped_by_interruption = release_group(group);
    if drain_until.is_none() {
        for reader in readers {
            let _ = reader.join();
        }
    }
    while let Ok(Event::Line(stream, line)) = receiver.try_recv() {
        record(stream, &line, &mut transcript);
    }

    let exit = match killed {
        _ if stopped_by_interruption => ProcessExit::Interrupted,
        Some(Some(after)) => ProcessExit::TimedOut(after),
        _ => process_exit(status),
    };
    script.finish();
    Ok(Execution {
        exit,
        transcript,
        duration,
        script_failure: script.failure,
        migration_failure: None,
        migration_note: None,
    })
}

fn process_exit(status: Option<ExitStatus>) -> ProcessExit {
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ProcessExit::Exited(code),
            (None, Some(signal)) => ProcessExit::Signaled(signal),
            (None, None) => ProcessExit::Exited(-1),
        },
        None => ProcessExit::Exited(-1),
    }
}

/// SIGTERM to the group, SIGKILL if the leader is still alive after a grace period.
fn terminate(child: &mut Child, group: i32) {
    signal_group(group, Signal::SIGTERM);
    let give_up = Instant::now() + TERMINATE_GRACE;
    while Instant::now() < give_up {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
    signal_group(group, Signal::SIGKILL);
}

/// Reads `stream` as lines (lossy UTF-8) into `sender`. A line is a line however long: an
/// overlong one keeps its first `MAX_LINE_BYTES` bytes and a note of how much was cut, and the
/// rest of it is read and dropped, never taken for the start of a new line.
fn pump(stream: impl Read, which: Stream, sender: &mpsc::SyncSender<Event>) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match read_line_bounded(&mut reader, &mut buffer, MAX_LINE_BYTES) {
            Ok(None) | Err(_) => break,
            Ok(Some(cut)) => {
                let line = String::from_utf8_lossy(&buffer);
                let mut line = line.trim_end_matches(['\n', '\r']).to_owned();
                if cut > 0 {
                    line.push_str(&format!(" [vmunit: {cut} more bytes of this line cut]"));
                }
                if sender.send(Event::Line(which, line)).is_err() {
                    break;
                }
            }
        }
    }
    let _ = sender.send(Event::Closed);
}

/// Reads one line, up to its newline (or the end of the stream), keeping at most `limit` bytes
/// of its text (without the newline) in `buffer` and dropping the rest. Returns how many bytes were dropped,
/// or `None` at the end of the stream.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<usize>> {
    let mut read_any = false;
    let mut cut = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(cut));
        }
        read_any = true;
        let (taken, done) = match available.iter().position(|byte| *byte == b'\n') {
            Some(index) => (index + 1, true),
            None => (available.len(), false),
        };
        // The newline ends the line and is not part of its text.
        let length = taken - usize::from(done);
        let kept = length.min(limit.saturating_sub(buffer.len()));
        buffer.extend_from_slice(&available[..kept]);
        cut += length - kept;
        reader.consume(taken);
        if done {
            return Ok(Some(cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Outcome, Verdict, classify};
    use crate::qemu::ExitMethod;

    fn shell(script: &str) -> QemuCommand {
        QemuCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    fn run(script: &str, timeout: Option<Duration>) -> (Execution, Vec<u8>) {
        let mut log = Vec::new();
        let execution = execute(
            &shell(script),
            timeout,
            Sinks {
                log: Some(&mut log),
                live: false,
                observer: None,
            },
        )
        .unwrap();
        (execution, log)
    }

    #[test]
    fn bounded_lines_are_never_split() {
        let mut reader = io::Cursor::new(b"ab\ncdefgh\n\nxyzFAIL: hidden\nlast".to_vec());
        let mut lines = Vec::new();
        loop {
            let mut buffer = Vec::new();
            let Some(cut) = read_line_bounded(&mut reader, &mut buffer, 4).unwrap() else {
                break;
            };
            lines.push((String::from_utf8(buffer).unwrap(), cut));
        }
        let expected = [("ab", 0), ("cdef", 2), ("", 0), ("xyzF", 11), ("last", 0)];
        let expected: Vec<(String, usize)> = expected
            .iter()
            .map(|(text, cut)| ((*text).to_owned(), *cut))
            .collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn an_overlong_line_is_one_line() {
        let (execution, log) = run(
            "head -c 20000 /dev/zero | tr '\\0' 'x'; echo 'FAIL: after 20000 bytes'; \
             echo 'EXIT: STATUS=1'; exit 1",
            None,
        );
        assert_eq!(execution.transcript.fail_count(), 0);
        let lines: Vec<&str> = execution.transcript.serial_lines().collect();
        assert_eq!(lines.len(), 2, "{}", lines.len());
        assert!(
            lines[0].ends_with(" [vmunit: 3639 more bytes of this line cut]"),
            "{}",
            &lines[0][MAX_LINE_BYTES - 10..]
        );
        assert_eq!(String::from_utf8(log).unwrap().lines().count(), 2);
    }

    #[test]
    fn pass_through_a_fake_qemu() {
        let (execution, log) = run(
            "echo 'PASS: a'; echo 'SUMMARY: 1 tests'; echo 'warn' >&2; echo 'EXIT: STATUS=1'; exit 1",
            None,
        );
        assert_eq!(execution.exit, ProcessExit::Exited(1));
        let outcome = classify(execution.exit, &execution.transcript, ExitMethod::StatusDevice);
        assert_eq!(
            outcome,
            Outcome::Pass {
                summary: Some("1 tests".into())
            }
        );
        let log = String::from_utf8(log).unwrap();
        assert!(
            log.contains("PASS: a\n") && log.contains("warn\n") && log.contains("EXIT: STATUS=1\n"),
            "{log}"
        );
    }

    #[test]
    fn qemu_that_fails_to_start_is_never_a_pass() {
        for program in ["/bin/false", "/usr/bin/false"] {
            if std::path::Path::new(program).exists() {
                let command = QemuCommand {
                    program: program.into(),
                    args: vec!["-kernel".into(), "x".into()],
                };
                let execution = execute(
                    &command,
                    None,
                    Sinks {
                        log: None,
                        live: false,
                        observer: None,
                    },
                )
                .unwrap();
                let outcome = classify(execution.exit, &execution.transcript, ExitMethod::StatusDevice);
                assert!(matches!(outcome, Outcome::QemuError { .. }), "{outcome:?}");
            }
        }
        let (execution, _) = run("echo 'qemu: -foo: invalid option' >&2; exit 1", None);
        let outcome = classify(execution.exit, &execution.transcript, ExitMethod::StatusDevice);
        assert!(
            matches!(outcome, Outcome::QemuError { ref reason } if reason.contains("invalid option")),
            "{outcome:?}"
        );
    }

    #[test]
    fn missing_program() {
        let command = QemuCommand {
            program: "/nonexistent/qemu".into(),
            args: Vec::new(),
        };
        assert!(matches!(
            execute(
                &command,
                None,
                Sinks {
                    log: None,
                    live: false,
                    observer: None,
                }
            ),
            Err(ExecuteError::Spawn { .. })
        ));
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().display().to_string();
        // A grandchild that would write the marker file if it outlived the kill.
        let script = format!("(sleep 2; echo alive > {path}) & echo started; sleep 30");
        let (execution, _) = run(&script, Some(Duration::from_millis(300)));
        assert_eq!(execution.exit, ProcessExit::TimedOut(Duration::from_millis(300)));
        assert!(
            execution.duration < Duration::from_secs(2),
            "{:?}",
            execution.duration
        );
        assert_eq!(
            execution.transcript.serial_lines().collect::<Vec<_>>(),
            ["started"]
        );
        thread::sleep(Duration::from_millis(2500));
        assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "");
    }

    #[test]
    fn hypervisor_error_kills_at_once() {
        let script = "echo 'PASS: a'; echo 'KVM internal error. Suberror: 1' >&2; echo 'emulation failure' >&2; \
                      trap '' TERM; sleep 60";
        let (execution, log) = run(script, Some(Duration::from_secs(60)));
        assert!(
            execution.duration < Duration::from_secs(2),
            "{:?}",
            execution.duration
        );
        let outcome = classify(execution.exit, &execution.transcript, ExitMethod::StatusDevice);
        assert_eq!(
            outcome,
            Outcome::HypervisorError {
                reason: "KVM internal error. Suberror: 1".into()
            }
        );
        let log = String::from_utf8(log).unwrap();
        assert!(log.contains("KVM internal error"), "{log}");
    }

    #[test]
    fn signals_are_crashes() {
        let (execution, _) = run("kill -SEGV $$", None);
        assert_eq!(execution.exit, ProcessExit::Signaled(11));
        let outcome = classify(execution.exit, &execution.transcript, ExitMethod::StatusDevice);
        assert_eq!(outcome.report_line("t"), "FAIL t (terminated on SIGSEGV)");
        assert_eq!(outcome.verdict(), Verdict::Fail);
    }

    #[test]
    fn long_and_binary_output() {
        let (execution, log) = run(
            "head -c 40000 /dev/zero | tr '\\0' 'x'; printf '\\377\\n'; exit 0",
            None,
        );
        assert_eq!(execution.exit, ProcessExit::Exited(0));
        assert_eq!(execution.transcript.serial_lines().count(), 1);
        assert!(log.len() > MAX_LINE_BYTES);
    }
}
