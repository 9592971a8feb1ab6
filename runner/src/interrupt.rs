//! Interruption (Ctrl-C, SIGTERM): the process groups of the running QEMUs, killed together,
//! and the flag every stage checks before starting more work.

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long QEMU gets to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_millis(500);

/// The process groups of running QEMUs, and whether the runner was interrupted.
pub(crate) struct Registry {
    /// Whether `interrupt_all` was called.
    pub(crate) interrupted: bool,
    /// The process groups of the running QEMUs.
    pub(crate) groups: Vec<i32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    interrupted: false,
    groups: Vec::new(),
});

/// The registry, locked.
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills every running QEMU process group (SIGTERM, then SIGKILL) and stops new ones from
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
