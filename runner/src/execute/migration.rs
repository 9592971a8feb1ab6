//! Live migration in the middle of a run (kvm-unit-tests' scripts/arch-run.bash
//! `run_migration`): the runs of group `migration` start QEMU with a QMP socket in the log
//! directory's scratch area; when the guest asks (`MIGRATE: NOW`, the protocol's
//! [`MigrateLine`]), the runner starts a destination QEMU with the same command line and
//! `-incoming defer`, migrates over a Unix socket (QMP `migrate-incoming`, `migrate`, then
//! `query-migrate` until it completes, within [`MIGRATION_LIMIT`]), waits for the destination
//! to run, ends the source and sends the guest a byte on its serial input: the guest goes on
//! on the destination, whose serial output the runner reads from then on. Each QEMU has its
//! own serial pipes; the log holds their lines in order, with a `vmunit: migration N: ...`
//! line when each migration starts and ends.
//!
//! Every QEMU is started with `spawn_in_group`, so a timeout, Ctrl-C or the runner's death
//! leaves none behind; a migration that fails ends the run with the reason.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;
use vmunit_protocol::{GuestLine, MigrateLine};

use super::{
    CHANNEL_LINES, DRAIN_TIME, Event, ExecuteError, Execution, LineObserver, POLL_INTERVAL, Sinks,
    process_exit, pump, terminate,
};
use crate::config::TestEntry;
use crate::guest_line;
use crate::interrupt::{group_of, interrupted, release_group, spawn_in_group};
use crate::qemu::QemuCommand;
use crate::qmp::Qmp;
use crate::transcript::{ProcessExit, Stream, Transcript};

/// The group whose runs migrate on request.
pub const GROUP: &str = crate::config::MIGRATION_GROUP;
/// The guest environment line of a migration run (the guest's `vmunit::migration`).
pub const ENVIRONMENT: (&str, &str) = ("VMUNIT_MIGRATION", "yes");
/// The most one migration may take, from `migrate` to the destination running.
pub const MIGRATION_LIMIT: Duration = Duration::from_secs(60);
/// How long a QEMU gets to open its QMP socket.
const QMP_START_TIME: Duration = Duration::from_secs(20);
/// How often `query-migrate` is asked.
const QUERY_INTERVAL: Duration = Duration::from_millis(20);
/// The pause between continuous migrations.
const CONTINUOUS_GAP: Duration = Duration::from_millis(100);
/// How long the source gets to quit after the migration.
const QUIT_TIME: Duration = Duration::from_secs(5);
/// The scratch area of the log directory: one directory per run, removed after it.
pub const SCRATCH_DIRECTORY: &str = ".vmunit-scratch";
/// What QEMU allows in a Unix socket path (`sun_path` less its terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Whether `entry` migrates on request (group `migration` or `migrate = true`).
pub fn is_migration_run(entry: &TestEntry) -> bool {
    entry.is_migration_run()
}

/// The guest environment variable of `--migrate`: the guest's report path asks for one
/// migration right after the report line it names (`vmunit::migration`).
pub const AFTER_REPORT_KEY: &str = vmunit_protocol::MIGRATE_AFTER_REPORT_KEY;

/// How a run migrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A migration run (group `migration`, `migrate = true`): each time the guest asks.
    OnRequest,
    /// `--migrate` on another run: once, after the guest's report line `after` (the runtime
    /// asks); a guest that prints fewer report lines is not migrated, and not failed for it.
    Injected {
        /// The report line after which the guest asks.
        after: u32,
    },
}

/// How `entry` migrates given `--migrate`'s report line (`injected`): on request for a
/// migration run, injected for any other run under `--migrate`, else not at all. The plan
/// already skipped the runs `--migrate` cannot migrate (`plan::unmigratable`).
pub fn mode(entry: &TestEntry, injected: Option<u32>) -> Option<Mode> {
    if is_migration_run(entry) {
        Some(Mode::OnRequest)
    } else {
        injected.map(|after| Mode::Injected { after })
    }
}

/// The guest environment lines a run migrating in `mode` adds: [`ENVIRONMENT`] for a migration
/// run, [`AFTER_REPORT_KEY`] for `--migrate`.
pub fn environment(mode: Option<Mode>) -> Vec<(String, String)> {
    match mode {
        Some(Mode::OnRequest) => vec![(ENVIRONMENT.0.to_owned(), ENVIRONMENT.1.to_owned())],
        Some(Mode::Injected { after }) => vec![(AFTER_REPORT_KEY.to_owned(), after.to_string())],
        None => Vec::new(),
    }
}

/// The scratch directory of run `name` in the log directory `log_dir`.
pub fn scratch_directory(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(SCRATCH_DIRECTORY).join(name)
}

/// Why a migration run failed although its QEMU did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationFailure {
    /// A migration failed: the run failed, whatever the guest said.
    Failed(String),
    /// The guest ended without asking for a migration (nor saying `MIGRATE: SKIP`): fails a run
    /// that would otherwise pass.
    NeverAsked,
}

impl MigrationFailure {
    /// The reason, as the verdict says it.
    pub fn reason(&self) -> String {
        match self {
            MigrationFailure::Failed(reason) => format!("migration failed: {reason}"),
            MigrationFailure::NeverAsked => "migration failed: the guest never asked to migrate \
                                             (no MIGRATE: NOW, BEGIN or SKIP line)"
                .to_owned(),
        }
    }
}

/// One QEMU of the run: the source, or a destination.
struct Qemu {
    child: Child,
    group: i32,
    receiver: Receiver<Event>,
    readers: Vec<JoinHandle<()>>,
    /// Its pipes still open.
    open: usize,
    input: Option<ChildStdin>,
    qmp_path: PathBuf,
    qmp: Option<Qmp>,
}

impl Qemu {
    /// Starts `command` plus `extra` arguments, with serial input and output piped; `None`
    /// once the runner was interrupted.
    fn start(command: &QemuCommand, extra: &[String], qmp_path: PathBuf) -> std::io::Result<Option<Qemu>> {
        let mut process = Command::new(&command.program);
        process
            .args(&command.args)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Some(mut child) = spawn_in_group(&mut process)? else {
            return Ok(None);
        };
        let group = group_of(&child);
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
        Ok(Some(Qemu {
            input: child.stdin.take(),
            open: readers.len(),
            child,
            group,
            receiver,
            readers,
            qmp_path,
            qmp: None,
        }))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The QMP connection, made on first use.
    fn qmp(&mut self) -> Result<&mut Qmp, String> {
        if self.qmp.is_none() {
            let path = self.qmp_path.clone();
            let child = &mut self.child;
            let qmp = Qmp::connect(&path, Instant::now() + QMP_START_TIME, || {
                matches!(child.try_wait(), Ok(None))
            })
            .map_err(|error| error.to_string())?;
            self.qmp = Some(qmp);
        }
        self.qmp.as_mut().ok_or_else(|| "no QMP connection".to_owned())
    }

    /// Ends it: SIGTERM then SIGKILL to its group, reaps it and releases the group. Returns
    /// whether the runner was interrupted meanwhile.
    fn kill(mut self, recorder: &mut Recorder<'_>, state: &mut Requests) -> bool {
        terminate(&mut self.child, self.group);
        let _ = self.child.wait();
        self.finish(recorder, state)
    }

    /// After it exited: releases its group and records what is left of its output.
    fn finish(mut self, recorder: &mut Recorder<'_>, state: &mut Requests) -> bool {
        let stopped_by_interruption = release_group(self.group);
        let until = Instant::now() + DRAIN_TIME;
        while self.open > 0 {
            match self
                .receiver
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Line(stream, line)) => {
                    recorder.line(stream, &line, state);
                }
                Ok(Event::Closed) => self.open -= 1,
                Err(_) => break,
            }
        }
        if self.open == 0 {
            for reader in self.readers {
                let _ = reader.join();
            }
        }
        stopped_by_interruption
    }

    /// Records the lines waiting in its pipes, without blocking.
    fn drain(&mut self, recorder: &mut Recorder<'_>, state: &mut Requests) -> bool {
        let mut hypervisor_error = false;
        while let Ok(event) = self.receiver.try_recv() {
            match event {
                Event::Line(stream, line) => hypervisor_error |= recorder.line(stream, &line, state),
                Event::Closed => self.open -= 1,
            }
        }
        hypervisor_error
    }
}

/// The guest's requests seen so far, and what the runner owes it.
#[derive(Debug, Default)]
struct Requests {
    /// A `NOW` is waiting for its migration.
    now: bool,
    /// Between `BEGIN` and the byte that answers `END`.
    continuous: bool,
    /// An `END` is waiting for its byte.
    end: bool,
    /// The guest asked for a migration or said it would not.
    asked: bool,
    /// Migrations completed since the last `BEGIN`: `END` is answered after one at least.
    since_begin: usize,
}

impl Requests {
    fn observe(&mut self, request: MigrateLine) {
        self.asked = true;
        match request {
            MigrateLine::Now => self.now = true,
            MigrateLine::Begin => {
                self.continuous = true;
                self.since_begin = 0;
            }
            // A repeated END (the guest says it again until answered) counts once.
            MigrateLine::End if self.continuous => self.end = true,
            MigrateLine::End => {}
            MigrateLine::Skip => {}
        }
    }
}

/// Where a run's lines go: the sinks and the transcript.
struct Recorder<'a> {
    log: Option<&'a mut dyn Write>,
    live: bool,
    observer: Option<&'a mut LineObserver<'a>>,
    transcript: Transcript,
}

impl Recorder<'_> {
    /// Records one line; returns whether it reports a hypervisor error (QEMU must stop).
    fn line(&mut self, stream: Stream, line: &str, requests: &mut Requests) -> bool {
        if let Some(log) = self.log.as_mut() {
            let _ = writeln!(log, "{line}");
        }
        let parsed = (stream == Stream::Serial).then(|| guest_line::parse(line));
        if let Some(GuestLine::Migrate(request)) = parsed.as_ref().map(|parsed| parsed.kind) {
            requests.observe(request);
        }
        if let Some(observer) = self.observer.as_mut() {
            observer(stream, line, parsed.as_ref());
        }
        if self.live {
            match stream {
                Stream::Serial => println!("{line}"),
                Stream::Stderr => eprintln!("{line}"),
            }
        }
        self.transcript.push_parsed(stream, line, parsed.as_ref())
    }

    /// A line of the runner's own in the log (and on stderr when live), not in the transcript.
    fn note(&mut self, text: &str) {
        if let Some(log) = self.log.as_mut() {
            let _ = writeln!(log, "vmunit: {text}");
        }
        if self.live {
            eprintln!("vmunit: {text}");
        }
    }
}

/// Why a migration did not complete.
enum Stop {
    Failed(String),
    TimedOut,
    Interrupted,
}

/// The QMP arguments that give a QEMU its socket.
fn qmp_arguments(path: &Path) -> Vec<String> {
    vec![
        "-qmp".to_owned(),
        format!("unix:{},server=on,wait=off", path.display()),
    ]
}

/// Checks that a socket path fits `sun_path`.
fn socket_path(path: PathBuf) -> Result<PathBuf, String> {
    let length = path.as_os_str().len();
    if length > SOCKET_PATH_MAX {
        return Err(format!(
            "the socket path {} is {length} bytes, more than a Unix socket allows ({SOCKET_PATH_MAX}): \
             use a shorter --log-dir",
            path.display()
        ));
    }
    Ok(path)
}

/// Runs `command` as a migration run: like `execute`, migrating the VM each time the guest
/// asks. `scratch` is the run's scratch directory (created here, removed at the end).
pub fn execute_migration(
    command: &QemuCommand,
    timeout: Option<Duration>,
    sinks: Sinks<'_>,
    scratch: &Path,
    mode: Mode,
) -> Result<Execution, ExecuteError> {
    let result = execute_in(command, timeout, sinks, scratch, mode);
    let _ = fs::remove_dir_all(scratch);
    // The scratch area itself goes when it is empty (another run may still use it).
    if let Some(area) = scratch.parent() {
        let _ = fs::remove_dir(area);
    }
    result
}

fn execute_in(
    command: &QemuCommand,
    timeout: Option<Duration>,
    sinks: Sinks<'_>,
    scratch: &Path,
    mode: Mode,
) -> Result<Execution, ExecuteError> {
    let Sinks { log, live, observer } = sinks;
    let mut recorder = Recorder {
        log,
        live,
        observer,
        transcript: Transcript::new(),
    };
    let spawn_error = |source| ExecuteError::Spawn {
        program: command.program.clone(),
        source,
    };
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch).map_err(spawn_error)?;
    let source_qmp = socket_path(scratch.join("qmp-0.sock"))
        .map_err(|reason| spawn_error(std::io::Error::other(reason)))?;
    let start = Instant::now();
    let mut current = Qemu::start(command, &qmp_arguments(&source_qmp), source_qmp)
        .map_err(spawn_error)?
        .ok_or(ExecuteError::Interrupted)?;
    recorder.note(&match mode {
        Mode::OnRequest => format!(
            "migration run: QMP at {}; the guest migrates on MIGRATE: NOW",
            current.qmp_path.display()
        ),
        Mode::Injected { after } => format!(
            "--migrate: QMP at {}; the guest migrates once, after its report line {after} \
             ({AFTER_REPORT_KEY}={after})",
            current.qmp_path.display()
        ),
    });
    let deadline = timeout.map(|timeout| start + timeout);
    let mut requests = Requests::default();
    let mut failure: Option<MigrationFailure> = None;
    let mut killed: Option<Option<Duration>> = None;
    let mut drain_until: Option<Instant> = None;
    let mut migrations = 0usize;
    let mut stopped_by_interruption = false;
    let stop_current = |current: &mut Qemu, drain_until: &mut Option<Instant>| {
        terminate(&mut current.child, current.group);
        *drain_until = Some(Instant::now() + DRAIN_TIME);
    };
    loop {
        if killed.is_none() {
            // What the guest waits for: a migration (asked, or the next continuous one), or the
            // byte that answers END after the continuous migrations (one at least).
            let migrate =
                requests.now || (requests.continuous && (!requests.end || requests.since_begin == 0));
            if migrate {
                migrations += 1;
                match migrate_once(
                    command,
                    &mut current,
                    migrations,
                    scratch,
                    deadline,
                    &mut recorder,
                    &mut requests,
                ) {
                    Ok(destination) => {
                        requests.since_begin += 1;
                        stopped_by_interruption |= std::mem::replace(&mut current, destination)
                            .finish_after_quit(&mut recorder, &mut requests);
                        recorder.note(&format!(
                            "migration {migrations}: the guest runs on the destination"
                        ));
                        if requests.now {
                            requests.now = false;
                            send_key(&mut current, &mut recorder);
                        } else {
                            // Continuous: the guest runs a moment on the destination before
                            // the next migration starts.
                            thread::sleep(CONTINUOUS_GAP);
                            current.drain(&mut recorder, &mut requests);
                        }
                    }
                    Err(Stop::Failed(reason)) => {
                        recorder.note(&format!("migration {migrations}: failed: {reason}"));
                        failure = Some(MigrationFailure::Failed(reason));
                        stop_current(&mut current, &mut drain_until);
                        killed = Some(None);
                    }
                    Err(Stop::TimedOut) => {
                        recorder.note(&format!("migration {migrations}: stopped by the run's timeout"));
                        stop_current(&mut current, &mut drain_until);
                        killed = Some(timeout);
                    }
                    Err(Stop::Interrupted) => {
                        stop_current(&mut current, &mut drain_until);
                        killed = Some(None);
                    }
                }
                continue;
            }
            if requests.end {
                requests.end = false;
                requests.continuous = false;
                send_key(&mut current, &mut recorder);
            }
        }
        if current.open == 0 {
            break;
        }
        let event = match drain_until.or(deadline) {
            Some(until) => current
                .receiver
                .recv_timeout(until.saturating_duration_since(Instant::now())),
            None => current
                .receiver
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Line(stream, line)) => {
                if recorder.line(stream, &line, &mut requests) && killed.is_none() {
                    stop_current(&mut current, &mut drain_until);
                    killed = Some(None);
                }
            }
            Ok(Event::Closed) => current.open -= 1,
            Err(RecvTimeoutError::Timeout) if killed.is_none() => {
                stop_current(&mut current, &mut drain_until);
                killed = Some(timeout);
            }
            Err(_) => break,
        }
    }
    // Reap the QEMU that ran last, still under the timeout.
    let status = loop {
        match current.child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if killed.is_none() && deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                terminate(&mut current.child, current.group);
                killed = Some(timeout);
            }
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(_) => break None,
        }
    };
    let duration = start.elapsed();
    stopped_by_interruption |= current.finish(&mut recorder, &mut requests);
    let exit = match killed {
        _ if stopped_by_interruption => ProcessExit::Interrupted,
        Some(Some(after)) => ProcessExit::TimedOut(after),
        _ => process_exit(status),
    };
    let mut migration_note = None;
    if failure.is_none() && !requests.asked {
        match mode {
            Mode::OnRequest => {
                recorder.note("the guest asked for no migration");
                failure = Some(MigrationFailure::NeverAsked);
            }
            Mode::Injected { after } => {
                let note = if after == 1 {
                    "--migrate: not migrated: the guest printed no report line".to_owned()
                } else {
                    format!("--migrate: not migrated: the guest printed fewer than {after} report lines")
                };
                recorder.note(&note);
                migration_note = Some(note);
            }
        }
    }
    Ok(Execution {
        exit,
        transcript: recorder.transcript,
        duration,
        script_failure: None,
        migration_failure: failure,
        migration_note,
    })
}

/// Sends the guest the byte that says its migration completed.
fn send_key(current: &mut Qemu, recorder: &mut Recorder<'_>) {
    let sent = current
        .input
        .as_mut()
        .map(|input| input.write_all(b"\n").and_then(|()| input.flush()));
    if let Some(Err(error)) = sent {
        recorder.note(&format!("cannot send the guest its key: {error}"));
    }
}

impl Qemu {
    /// The source after a completed migration: asks it to quit, waits (then kills), records the
    /// rest of its output and releases its group.
    fn finish_after_quit(mut self, recorder: &mut Recorder<'_>, state: &mut Requests) -> bool {
        if let Some(qmp) = self.qmp.as_mut() {
            let _ = qmp.execute("quit", None);
        }
        let until = Instant::now() + QUIT_TIME;
        while Instant::now() < until && self.alive() {
            self.drain(recorder, state);
            thread::sleep(POLL_INTERVAL);
        }
        if self.alive() {
            return self.kill(recorder, state);
        }
        let _ = self.child.wait();
        self.finish(recorder, state)
    }
}

/// Migrates the VM of `source` to a new destination QEMU (the `index`th migration) and returns
/// the destination, running.
fn migrate_once(
    command: &QemuCommand,
    source: &mut Qemu,
    index: usize,
    scratch: &Path,
    deadline: Option<Instant>,
    recorder: &mut Recorder<'_>,
    requests: &mut Requests,
) -> Result<Qemu, Stop> {
    let started = Instant::now();
    let qmp_path = socket_path(scratch.join(format!("qmp-{index}.sock"))).map_err(Stop::Failed)?;
    let stream_path = socket_path(scratch.join(format!("stream-{index}.sock"))).map_err(Stop::Failed)?;
    let uri = format!("unix:{}", stream_path.display());
    let mut extra = qmp_arguments(&qmp_path);
    extra.extend(["-incoming".to_owned(), "defer".to_owned()]);
    recorder.note(&format!(
        "migration {index}: started: destination QEMU with -incoming defer, stream {uri}"
    ));
    let mut destination = match Qemu::start(command, &extra, qmp_path) {
        Ok(Some(destination)) => destination,
        Ok(None) => return Err(Stop::Interrupted),
        Err(error) => {
            return Err(Stop::Failed(format!(
                "cannot start the destination QEMU {}: {error}",
                command.program
            )));
        }
    };
    match migrate_to(
        source,
        &mut destination,
        &uri,
        started,
        deadline,
        recorder,
        requests,
    ) {
        Ok(()) => {
            recorder.note(&format!(
                "migration {index}: completed in {:.2}s",
                started.elapsed().as_secs_f64()
            ));
            Ok(destination)
        }
        Err(stop) => {
            // Nothing of the destination is left; what it said is in the log.
            destination.kill(recorder, requests);
            Err(stop)
        }
    }
}

/// The steps of one migration, from the destination's socket to the destination running.
fn migrate_to(
    source: &mut Qemu,
    destination: &mut Qemu,
    uri: &str,
    started: Instant,
    deadline: Option<Instant>,
    recorder: &mut Recorder<'_>,
    requests: &mut Requests,
) -> Result<(), Stop> {
    let dead_destination = |destination: &mut Qemu| match destination.child.try_wait() {
        Ok(Some(status)) => Some(format!(
            "the destination QEMU exited ({}) before the VM ran on it; its stderr is in the log",
            describe(process_exit(Some(status)))
        )),
        _ => None,
    };
    let qmp_failure = |destination: &mut Qemu, what: &str, error: String| {
        thread::sleep(DRAIN_TIME.min(Duration::from_millis(100)));
        Stop::Failed(dead_destination(destination).unwrap_or_else(|| format!("{what}: {error}")))
    };
    if let Err(error) = destination.qmp().and_then(|qmp| {
        qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .map_err(|error| error.to_string())
    }) {
        destination.drain(recorder, requests);
        return Err(qmp_failure(
            destination,
            "the destination refused the incoming migration",
            error,
        ));
    }
    if let Err(error) = source.qmp().and_then(|qmp| {
        qmp.execute("migrate", Some(json!({ "uri": uri })))
            .map_err(|error| error.to_string())
    }) {
        return Err(Stop::Failed(format!("the source refused to migrate: {error}")));
    }
    // The source's progress, then the destination's state.
    let mut source_done = false;
    loop {
        thread::sleep(QUERY_INTERVAL);
        source.drain(recorder, requests);
        destination.drain(recorder, requests);
        if interrupted() {
            return Err(Stop::Interrupted);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(Stop::TimedOut);
        }
        if started.elapsed() >= MIGRATION_LIMIT {
            return Err(Stop::Failed(format!(
                "not completed within {}s",
                MIGRATION_LIMIT.as_secs()
            )));
        }
        if let Some(reason) = dead_destination(destination) {
            destination.drain(recorder, requests);
            return Err(Stop::Failed(reason));
        }
        if !source_done {
            let status = source
                .qmp()
                .and_then(|qmp| {
                    qmp.execute("query-migrate", None)
                        .map_err(|error| error.to_string())
                })
                .map_err(|error| Stop::Failed(format!("query-migrate on the source: {error}")))?;
            match status["status"].as_str().unwrap_or("") {
                "completed" => source_done = true,
                "failed" | "cancelled" => {
                    let why = status["error-desc"].as_str().unwrap_or("no description");
                    thread::sleep(Duration::from_millis(100));
                    destination.drain(recorder, requests);
                    return Err(Stop::Failed(dead_destination(destination).unwrap_or_else(|| {
                        format!("the source says {}: {why}", status["status"])
                    })));
                }
                _ => continue,
            }
        }
        let state = destination.qmp().and_then(|qmp| {
            qmp.execute("query-status", None)
                .map_err(|error| error.to_string())
        });
        match state {
            Ok(state) if state["status"] == "running" => return Ok(()),
            Ok(_) => {}
            Err(error) => {
                return Err(Stop::Failed(
                    dead_destination(destination)
                        .unwrap_or_else(|| format!("query-status on the destination: {error}")),
                ));
            }
        }
    }
}

/// A process exit in words.
fn describe(exit: ProcessExit) -> String {
    match exit {
        ProcessExit::Exited(code) => format!("status {code}"),
        ProcessExit::Signaled(signal) => format!("signal {signal}"),
        other => format!("{other:?}"),
    }
}
