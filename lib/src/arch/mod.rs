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
