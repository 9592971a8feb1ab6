//! The log directory (`logs/`, `--log-dir`): recognised by a marker file, held by one
//! invocation at a time (a lock file naming its pid), its runner-written files rotated into
//! `<dir>.old` (the directory itself stays, so it may be a mount point); each run's log capped
//! ([`RunLog`]); and the files that could not be written, collected ([`WriteFailures`]).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytesize::ByteSize;

use crate::error::AppError;
use crate::workspace::shown;

/// The file that marks a directory as a vmunit log directory.
pub const MARKER_FILE: &str = ".vmunit-log-directory";
/// The file an invocation locks while it uses the directory; it holds that invocation's pid.
pub const LOCK_FILE: &str = ".vmunit-lock";
/// The machine-readable record of an invocation's results (report/results.rs writes it).
pub const RESULTS_FILE: &str = "results.json";
/// The invocation's records in the directory, besides each run's `.log` and `.env` files.
pub const RECORD_FILES: [&str; 2] = ["SUMMARY", RESULTS_FILE];
/// How much of each run's log is kept when nothing else is asked for.
pub const DEFAULT_LOG_LIMIT: u64 = 16 * 1024 * 1024;
/// The most of a cut log's end that is kept (in memory until the run ends).
pub const MAXIMUM_TAIL: u64 = 1024 * 1024;

/// How much of each run's log is kept (`--log-limit`, `VMUNIT_LOG_LIMIT`): a size such as
/// `16MiB` or `500KB`, or `0` for everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimit(Option<u64>);

impl LogLimit {
    /// No cap: every byte is written.
    pub const UNLIMITED: LogLimit = LogLimit(None);

    /// The cap in bytes, if any.
    pub fn bytes(self) -> Option<u64> {
        self.0
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit(Some(DEFAULT_LOG_LIMIT))
    }
}

impl std::str::FromStr for LogLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let size: ByteSize = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as 16MiB, 500KB or 0 (no cap)"))?;
        Ok(LogLimit((size.as_u64() != 0).then_some(size.as_u64())))
    }
}

impl std::fmt::Display for LogLimit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(bytes) => write!(formatter, "{}", ByteSize(bytes).display().iec()),
            None => formatter.write_str("0"),
        }
    }
}

/// The log directory of a running invocation: while this lives, the directory is locked.
#[derive(Debug)]
pub struct LogDirectory {
    path: PathBuf,
    /// Holds the lock (released when the file is closed).
    _lock: File,
}

impl LogDirectory {
    /// Makes `path` this invocation's log directory: refuses one that exists and is not a
    /// vmunit log directory, creates it (with its marker) when missing, and locks it (waiting
    /// for the holder when `wait`, else failing at once naming it). Nothing in it moves yet
    /// (see [`LogDirectory::rotate`]).
    pub fn lock(path: &Path, wait: bool) -> Result<LogDirectory, AppError> {
        prepare(path)?;
        let lock = lock(path, wait)?;
        Ok(LogDirectory {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Moves the previous invocation's files into `<path>.old`, replacing the runner's files
    /// there (refusing a `<path>.old` that is not a vmunit log directory).
    pub fn rotate(&self) -> Result<(), AppError> {
        rotate(&self.path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What is found at a would-be log directory.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing.
    Missing,
    /// A vmunit log directory: marked, empty, or holding only the runner's files (written by a
    /// runner older than the marker).
    Vmunit,
    /// Something that is not a directory.
    NotDirectory,
    /// A directory with other things in it.
    Foreign,
}

fn io_error(what: &str, path: &Path, error: &io::Error) -> AppError {
    AppError::Io(format!("cannot {what} {}: {error}", shown(path)))
}

/// Whether the runner writes files called `name` into a log directory.
fn is_runner_file_name(name: &str) -> bool {
    RECORD_FILES.contains(&name) || name.ends_with(".log") || name.ends_with(".env")
}

/// The runner's files in `directory`: regular files with the names it writes.
fn runner_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let is_file = entry.file_type()?.is_file();
        if is_file && entry.file_name().to_str().is_some_and(is_runner_file_name) {
            files.push(entry.path());
        }
    }
    Ok(files)
}

fn inspect(path: &Path) -> io::Result<Found> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(error) => return Err(error),
    };
    if !metadata.is_dir() {
        return Ok(Found::NotDirectory);
    }
    if path.join(MARKER_FILE).is_file() {
        return Ok(Found::Vmunit);
    }
    let mut entries = 0;
    let mut records = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if !entry.file_type()?.is_file() || !is_runner_file_name(name) {
            return Ok(Found::Foreign);
        }
        entries += 1;
        records += usize::from(RECORD_FILES.contains(&name));
    }
    Ok(if entries == 0 || records > 0 {
        Found::Vmunit
    } else {
        Found::Foreign
    })
}

/// Makes sure `path` is a marked vmunit log directory, creating it when missing.
fn prepare(path: &Path) -> Result<(), AppError> {
    match inspect(path).map_err(|error| io_error("read", path, &error))? {
        Found::Missing => {
            std::fs::create_dir_all(path).map_err(|error| io_error("create", path, &error))?;
        }
        Found::Vmunit => {}
        Found::NotDirectory => {
            return Err(AppError::Usage(format!(
                "log directory {} is not a directory; name a new or empty directory",
                shown(path)
            )));
        }
        Found::Foreign => {
            return Err(AppError::Usage(format!(
                "log directory {} is not a vmunit log directory (it has no {MARKER_FILE} and holds \
                 other files); name a new or empty directory",
                shown(path)
            )));
        }
    }
    let marker = path.join(MARKER_FILE);
    if !marker.is_file() {
        std::fs::write(
            &marker,
            "This directory holds vmunit's logs; the runner rotates its files.\n",
        )
        .map_err(|error| io_error("write", &marker, &error))?;
    }
    Ok(())
}

/// Locks `directory`'s lock file and writes this process's pid into it.
fn lock(directory: &Path, wait: bool) -> Result<File, AppError> {
    let path = directory.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| io_error("open", &path, &error))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = holder(&mut file);
            if !wait {
                return Err(AppError::Usage(format!(
                    "log directory {} is in use by vmunit pid {holder}; wait for it to finish, or \
                     pass --wait-for-lock",
                    shown(directory)
                )));
            }
            crate::eprintln!(
                "vmunit: waiting for vmunit pid {holder}, which is using {}",
                shown(directory)
            );
            file.lock().map_err(|error| io_error("lock", &path, &error))?;
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(io_error("lock", &path, &error)),
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    written.map_err(|error| io_error("write", &path, &error))?;
    Ok(file)
}

/// The pid written in a held lock file, or "unknown" (the holder has not written it yet).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let pid = text.trim();
    if pid.is_empty() {
        "unknown".to_owned()
    } else {
        pid.to_owned()
    }
}

/// `<directory>.old`.
pub fn old_directory(directory: &Path) -> PathBuf {
    let mut old = directory.as_os_str().to_owned();
    old.push(".old");
    PathBuf::from(old)
}

/// Moves the runner's files of `directory` into `<directory>.old`, replacing the runner's files
/// there; everything else stays where it is.
fn rotate(directory: &Path) -> Result<(), AppError> {
    let old = old_directory(directory);
    prepare(&old)?;
    for file in runner_files(&old).map_err(|error| io_error("read", &old, &error))? {
        std::fs::remove_file(&file).map_err(|error| io_error("remove", &file, &error))?;
    }
    for file in runner_files(directory).map_err(|error| io_error("read", directory, &error))? {
        let Some(name) = file.file_name() else {
            continue;
        };
        let target = old.join(name);
        move_file(&file, &target).map_err(|error| io_error("move", &file, &error))?;
    }
    Ok(())
}

/// Renames `from` to `to`, copying across file systems (a log directory that is a mount point).
fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}

/// The files of the log directory that could not be written during an invocation, each with
/// its first error.
#[derive(Debug, Default)]
pub struct WriteFailures {
    failures: Mutex<Vec<(PathBuf, String)>>,
}

/// How many failures the error line names.
const FAILURES_NAMED: usize = 3;

impl WriteFailures {
    /// Notes that `path` could not be written (once per file), and returns the note.
    pub fn record(&self, path: &Path, error: &io::Error) -> String {
        let note = format!("cannot write {}: {error}", shown(path));
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !failures.iter().any(|(failed, _)| failed == path) {
            failures.push((path.to_path_buf(), note.clone()));
        }
        note
    }

    /// An error naming the failures, if there were any.
    pub fn check(&self) -> Result<(), AppError> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.is_empty() {
            return Ok(());
        }
        let notes: Vec<&str> = failures.iter().map(|(_, note)| note.as_str()).collect();
        let mut named = notes[..notes.len().min(FAILURES_NAMED)].join("; ");
        if failures.len() > FAILURES_NAMED {
            named.push_str(&format!("; and {} more", failures.len() - FAILURES_NAMED));
        }
        Err(AppError::Io(format!("the logs are incomplete: {named}")))
    }
}

/// How writing a run's log went.
#[derive(Debug, Default)]
pub struct LogEnd {
    /// How much of the middle was left out, when the log was cut.
    pub cut: Option<Cut>,
    /// The first write error, if any (the log stops there).
    pub error: Option<io::Error>,
}

/// What a cut log left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Lines left out.
    pub lines: u64,
    /// Bytes left out.
    pub bytes: u64,
    /// The cap.
    pub limit: LogLimit,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} lines ({}) of output left out of the middle (--log-limit {})",
            self.lines,
            ByteSize(self.bytes).display().iec(),
            self.limit
        )
    }
}

/// One run's log file, capped: its first lines up to the cap less the tail, then its last
/// lines (up to half the cap, at most [`MAXIMUM_TAIL`]), with a line between saying what was
/// left out. Takes bytes through [`Write`] and cuts only between lines. A write error is
/// kept (see [`RunLog::finish`]) and ends the writing, never the run.
#[derive(Debug)]
pub struct RunLog {
    file: Option<BufWriter<File>>,
    limit: LogLimit,
    head_room: u64,
    tail_room: u64,
    head_closed: bool,
    tail: VecDeque<Vec<u8>>,
    tail_bytes: u64,
    left_out_lines: u64,
    left_out_bytes: u64,
    pending: Vec<u8>,
    error: Option<io::Error>,
}

impl RunLog {
    /// Creates the log at `path` (the error, if it cannot, is kept for [`RunLog::finish`]).
    pub fn create(path: &Path, limit: LogLimit) -> RunLog {
        let (file, error) = match File::create(path) {
            Ok(file) => (Some(BufWriter::new(file)), None),
            Err(error) => (None, Some(error)),
        };
        let tail_room = limit.bytes().map_or(0, |bytes| (bytes / 2).min(MAXIMUM_TAIL));
        RunLog {
            file,
            limit,
            head_room: limit.bytes().map_or(u64::MAX, |bytes| bytes - tail_room),
            tail_room,
            head_closed: false,
            tail: VecDeque::new(),
            tail_bytes: 0,
            left_out_lines: 0,
            left_out_bytes: 0,
            pending: Vec::new(),
            error,
        }
    }

    fn write_out(&mut self, bytes: &[u8]) {
        if let Some(file) = self.file.as_mut()
            && let Err(error) = file.write_all(bytes)
        {
            self.error = Some(error);
            self.file = None;
        }
    }

    /// One whole line, its newline included.
    fn line(&mut self, line: Vec<u8>) {
        let length = line.len() as u64;
        if !self.head_closed && length <= self.head_room {
            self.head_room -= length;
            self.write_out(&line);
            return;
        }
        self.head_closed = true;
        self.tail_bytes += length;
        self.tail.push_back(line);
        while self.tail_bytes > self.tail_room {
            let Some(dropped) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= dropped.len() as u64;
            self.left_out_lines += 1;
            self.left_out_bytes += dropped.len() as u64;
        }
    }

    /// Writes the kept tail and flushes: how it went.
    pub fn finish(mut self) -> LogEnd {
        if !self.pending.is_empty() {
            let mut line = std::mem::take(&mut self.pending);
            line.push(b'\n');
            self.line(line);
        }
        let cut = (self.left_out_lines > 0).then_some(Cut {
            lines: self.left_out_lines,
            bytes: self.left_out_bytes,
            limit: self.limit,
        });
        if let Some(cut) = cut {
            self.write_out(format!("vmunit: log cut here: {cut}\n").as_bytes());
        }
        while let Some(line) = self.tail.pop_front() {
            self.write_out(&line);
        }
        if let Some(file) = self.file.as_mut()
            && let Err(error) = file.flush()
        {
            self.error = Some(error);
        }
        LogEnd {
            cut,
            error: self.error,
        }
    }
}

impl Write for RunLog {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let rest = self.pending.split_off(end + 1);
            let line = std::mem::replace(&mut self.pending, rest);
            self.line(line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(limit: &str, lines: usize) -> (String, LogEnd) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("run.log");
        let mut log = RunLog::create(&path, limit.parse().unwrap());
        for index in 0..lines {
            writeln!(log, "line {index:04} of the run").unwrap();
        }
        let end = log.finish();
        (std::fs::read_to_string(&path).unwrap(), end)
    }

    #[test]
    fn a_log_under_the_cap_is_whole() {
        let (text, end) = log_of("1KiB", 10);
        assert_eq!(text.lines().count(), 10);
        assert!(end.cut.is_none() && end.error.is_none());
        let (text, end) = log_of("0", 10_000);
        assert_eq!(text.lines().count(), 10_000);
        assert!(end.cut.is_none());
    }

    #[test]
    fn a_long_log_keeps_its_head_and_tail() {
        // 18-byte lines; a 1 KiB cap keeps 512 bytes of head (28 lines) and of tail (28 lines).
        let (text, end) = log_of("1KiB", 1000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "line 0000 of the run");
        assert_eq!(*lines.last().unwrap(), "line 0999 of the run");
        let cut = end.cut.unwrap();
        assert_eq!(lines.len() as u64, 1000 - cut.lines + 1);
        let marker = lines
            .iter()
            .position(|line| line.starts_with("vmunit: log cut here: "))
            .unwrap();
        assert_eq!(lines[marker], format!("vmunit: log cut here: {cut}"));
        assert!(text.len() <= 1024 + lines[marker].len() + 1, "{}", text.len());
        assert!(
            cut.to_string()
                .ends_with(" of output left out of the middle (--log-limit 1.0 KiB)"),
            "{cut}"
        );
    }

    #[test]
    fn each_file_that_failed_is_named_once() {
        let failures = WriteFailures::default();
        assert!(failures.check().is_ok());
        let full = io::Error::from_raw_os_error(28);
        for path in [
            "logs/a.log",
            "logs/a.log",
            "logs/b.log",
            "logs/c.log",
            "logs/d.log",
        ] {
            failures.record(Path::new(path), &full);
        }
        let message = failures.check().unwrap_err().to_string();
        assert!(
            message.starts_with("the logs are incomplete: cannot write logs/a.log: "),
            "{message}"
        );
        assert_eq!(message.matches("logs/a.log").count(), 1, "{message}");
        assert!(message.ends_with("; and 1 more"), "{message}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("0".parse::<LogLimit>().unwrap(), LogLimit::UNLIMITED);
        assert_eq!("64KiB".parse::<LogLimit>().unwrap().bytes(), Some(65536));
        assert_eq!("2MB".parse::<LogLimit>().unwrap().bytes(), Some(2_000_000));
        assert!("lots".parse::<LogLimit>().is_err());
    }

    #[test]
    fn a_write_error_is_kept() {
        let mut log = RunLog::create(Path::new("/dev/full"), LogLimit::default());
        writeln!(log, "{}", "x".repeat(100_000)).unwrap();
        let end = log.finish();
        assert_eq!(end.error.map(|error| error.raw_os_error()), Some(Some(28)));
    }

    /// A tmpfs mounted for a test, unmounted when dropped.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn a_mount_point_rotates_across_file_systems() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "vmunit-test"])
            .arg(&logs)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (not root?)");
            return;
        }
        let _mount = Mount(logs.clone());
        LogDirectory::lock(&logs, false).unwrap().rotate().unwrap();
        std::fs::write(logs.join("a.log"), "a").unwrap();
        LogDirectory::lock(&logs, false).unwrap().rotate().unwrap();
        let old = root.path().join("logs.old");
        assert_eq!(std::fs::read_to_string(old.join("a.log")).unwrap(), "a");
        assert!(!logs.join("a.log").exists());
    }

    #[test]
    fn rotation_moves_only_the_runners_files_and_keeps_the_directory() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        LogDirectory::lock(&logs, false).unwrap().rotate().unwrap();
        std::fs::write(logs.join("a.log"), "a").unwrap();
        std::fs::write(logs.join("SUMMARY"), "s").unwrap();
        std::fs::write(logs.join("mine.txt"), "mine").unwrap();
        let inode = std::fs::metadata(&logs).unwrap().ino();
        let taken = LogDirectory::lock(&logs, false).unwrap();
        assert_eq!(taken.path(), logs);
        assert!(logs.join("a.log").exists(), "moved before rotate");
        taken.rotate().unwrap();
        assert_eq!(std::fs::metadata(&logs).unwrap().ino(), inode);
        let old = root.path().join("logs.old");
        assert_eq!(std::fs::read_to_string(old.join("a.log")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(old.join("SUMMARY")).unwrap(), "s");
        assert!(!logs.join("a.log").exists());
        assert_eq!(std::fs::read_to_string(logs.join("mine.txt")).unwrap(), "mine");
        // Held: a second taker is refused, naming this process.
        let refused = LogDirectory::lock(&logs, false).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
    }
}
