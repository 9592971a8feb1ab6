//! A QMP client (QEMU's JSON machine protocol over a Unix socket), just what migration needs:
//! connect and negotiate capabilities, run a command and wait for its answer, skipping
//! asynchronous events. Every message is JSON, read and written with serde_json.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one command may take to answer.
const ANSWER_TIME: Duration = Duration::from_secs(10);
/// How often to retry connecting while QEMU creates its socket.
const CONNECT_INTERVAL: Duration = Duration::from_millis(10);

/// What went wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// QEMU answered the command with an error.
    #[error("QMP {command}: {class}: {description}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        description: String,
    },
    /// QEMU said something that is not QMP.
    #[error("QMP {path}: unexpected message: {message}")]
    Protocol {
        /// The socket.
        path: String,
        /// What it said.
        message: String,
    },
}

/// A negotiated QMP connection.
pub struct Qmp {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the QMP socket at `path`, retrying until `until` while `alive()` holds (QEMU
    /// creates the socket as it starts), and negotiates capabilities.
    pub fn connect(path: &Path, until: Instant, mut alive: impl FnMut() -> bool) -> Result<Qmp, QmpError> {
        let name = path.display().to_string();
        let io_error = |source| QmpError::Io {
            path: name.clone(),
            source,
        };
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() >= until || !alive() => return Err(io_error(error)),
                Err(_) => thread::sleep(CONNECT_INTERVAL),
            }
        };
        stream.set_read_timeout(Some(ANSWER_TIME)).map_err(io_error)?;
        let writer = stream.try_clone().map_err(io_error)?;
        let mut qmp = Qmp {
            path: name.clone(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.receive()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                path: name,
                message: greeting.to_string(),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Reads one message.
    fn receive(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).map_err(|source| QmpError::Io {
            path: self.path.clone(),
            source,
        })?;
        if read == 0 {
            return Err(QmpError::Io {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "QEMU closed the connection"),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
            message: line.trim_end().to_owned(),
        })
    }

    /// Runs `command` (with `arguments`) and returns its `return` value; events that arrive
    /// meanwhile are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut message = json!({ "execute": command });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let text = format!("{message}\n");
        self.writer
            .write_all(text.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let mut answer = self.receive()?;
            if let Some(value) = answer.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = answer.get("error") {
                let field = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: field("class"),
                    description: field("desc"),
                });
            }
            if answer.get("event").is_none() {
                return Err(QmpError::Protocol {
                    path: self.path.clone(),
                    message: answer.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU on a socket: greets, then answers each command with the next of `answers`.
    fn serve(
        answers: Vec<&'static str>,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        thread::JoinHandle<Vec<Value>>,
    ) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writeln!(writer, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(serde_json::from_str(&line).unwrap());
                writeln!(writer, "{answer}").unwrap();
            }
            seen
        });
        (directory, path, server)
    }

    #[test]
    fn commands_get_their_answers_past_events() {
        let (_directory, path, server) = serve(vec![
            r#"{"return": {}}"#,
            "{\"event\": \"STOP\", \"timestamp\": {}}\n{\"return\": {\"status\": \"completed\"}}",
            r#"{"error": {"class": "GenericError", "desc": "no such thing"}}"#,
        ]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut qmp = Qmp::connect(&path, deadline, || true).unwrap();
        let status = qmp.execute("query-migrate", None).unwrap();
        assert_eq!(status["status"], "completed");
        let error = qmp
            .execute("migrate", Some(json!({ "uri": "unix:/x" })))
            .unwrap_err();
        assert_eq!(error.to_string(), "QMP migrate: GenericError: no such thing");
        let seen = server.join().unwrap();
        assert_eq!(seen[0], json!({ "execute": "qmp_capabilities" }));
        assert_eq!(
            seen[2],
            json!({ "execute": "migrate", "arguments": { "uri": "unix:/x" } })
        );
    }

    #[test]
    fn a_missing_socket_gives_up_when_qemu_is_gone() {
        let directory = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let result = Qmp::connect(
            &directory.path().join("none.sock"),
            Instant::now() + Duration::from_secs(30),
            || false,
        );
        assert!(matches!(result, Err(QmpError::Io { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
