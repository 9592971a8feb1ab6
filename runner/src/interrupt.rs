//! Interruption (Ctrl-C, SIGTERM) and the lifetime of the runner's children: the process
//! groups of the running QEMUs (and of cargo while it builds), killed together, and the flag
//! every stage checks before starting more work.
//!
//! No child outlives the runner, even when the runner is killed outright (SIGKILL): each child
//! leads its own process group and gets SIGKILL when the runner dies (`PR_SET_PDEATHSIG`), and a
//! guard process (a shell reading the runner's pipe) kills whatever is left in those groups
//! when the pipe closes, that is when the runner is gone.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpid, getppid};

/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// The guard: reads `+GROUP` and `-GROUP` lines (a group started, a group ended) and, at the
/// end of its input (the runner is gone), kills the groups still listed. It ignores the
/// terminal's signals: the runner decides what happens on Ctrl-C.
const GUARD_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
groups=' '
while read -r line; do
    case $line in
        +*) groups="$groups${line#+} " ;;
        -*) group=${line#-}
            case $groups in *" $group "*) groups="${groups%%" $group "*} ${groups#*" $group "}" ;; esac ;;
    esac
done
for group in $groups; do kill -KILL "-$group" 2>/dev/null; done
exit 0"#;

/// The process groups of the runner's children, and whether the runner was interrupted.
pub(crate) struct Registry {
    /// Whether `interrupt_all` was called.
    pub(crate) interrupted: bool,
    /// The process groups of the running children.
    pub(crate) groups: Vec<i32>,
    /// The guard's input, once a child was started (`None` if it could not be started).
    guard: Option<ChildStdin>,
    /// Whether starting the guard was tried.
    guard_tried: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    interrupted: false,
    groups: Vec::new(),
    guard: None,
    guard_tried: false,
});

/// The registry, locked.
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Tells the guard `line`; a guard that went away is not asked again.
    fn tell_guard(&mut self, line: &str) {
        if let Some(guard) = self.guard.as_mut()
            && writeln!(guard, "{line}").and_then(|()| guard.flush()).is_err()
        {
            self.guard = None;
        }
    }

    /// Starts the guard the first time a child is started.
    fn start_guard(&mut self) {
        if self.guard_tried {
            return;
        }
        self.guard_tried = true;
        let guard = Command::new("/bin/sh")
            .args(["-c", GUARD_SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: the terminal's Ctrl-C goes to the runner, not to it.
            .process_group(0)
            .spawn();
        // Without a guard, PR_SET_PDEATHSIG still ends each group's leader.
        self.guard = guard.ok().and_then(|mut guard| guard.stdin.take());
    }
}

/// Spawns `command` as the leader of a new process group, to be killed when the runner is
/// interrupted or dies, and registers the group; `None` (nothing spawned) once the runner was
/// interrupted. Call [`release_group`] when the child ended.
pub(crate) fn spawn_in_group(command: &mut Command) -> io::Result<Option<Child>> {
    let parent = getpid();
    command.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // async-signal-safe system calls prctl(2) and getppid(2), allocating nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The runner may have died before the request took effect.
            if getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::errno::Errno::ESRCH as i32));
            }
            Ok(())
        });
    }
    let mut registry = registry();
    if registry.interrupted {
        return Ok(None);
    }
    registry.start_guard();
    let child = command.spawn()?;
    let group = group_of(&child);
    registry.groups.push(group);
    registry.tell_guard(&format!("+{group}"));
    Ok(Some(child))
}

/// Forgets a group started by [`spawn_in_group`] whose leader was reaped, first killing
/// whatever is left in it. Returns whether the runner was interrupted while the group was
/// registered (so the child was stopped by the interruption, or ended as it came).
pub(crate) fn release_group(group: i32) -> bool {
    signal_group(group, Signal::SIGKILL);
    let mut registry = registry();
    let was_registered = registry.groups.contains(&group);
    registry.groups.retain(|running| *running != group);
    registry.tell_guard(&format!("-{group}"));
    was_registered && registry.interrupted
}

/// The process group a child started by [`spawn_in_group`] leads.
pub(crate) fn group_of(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap_or(i32::MAX)
}

/// Kills every running child's process group (SIGTERM, then SIGKILL) and stops new ones from
/// starting. For the Ctrl-C handler.
pub fn interrupt_all() {
    let groups = {
        let mut registry = registry();
        registry.interrupted = true;
        registry.groups.clone()
    };
    for group in &groups {
        signal_group(*group, Signal::SIGTERM);
    }
    if !groups.is_empty() {
        thread::sleep(TERMINATE_GRACE);
        for group in &groups {
            signal_group(*group, Signal::SIGKILL);
        }
    }
}

/// Whether `interrupt_all` was called.
pub fn interrupted() -> bool {
    registry().interrupted
}

/// Sends `signal` to a process group.
pub(crate) fn signal_group(group: i32, signal: Signal) {
    // The group may already be gone; nothing to do then.
    let _ = killpg(Pid::from_raw(group), signal);
}
