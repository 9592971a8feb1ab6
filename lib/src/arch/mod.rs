//! The architecture layer: each architecture offers the same module names (boot, console,
//! exceptions, exit, mmu, smp, ...) and the generic runtime reaches them only through here.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

// The aarch64 probes under the `try_` names `memory::TestPage` uses, until the aarch64 rename
// (branch of the aarch64 helper) gives them those names; the lead drops this at the merge.
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::instructions::{
    probe_call as try_call, probe_read as try_read, probe_write as try_write,
};
