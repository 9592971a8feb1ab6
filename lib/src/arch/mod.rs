//! The architecture layer: what each architecture provides, in one place, and the one `cfg`
//! that picks the architecture. The generic runtime reaches the architectures only through
//! the names below.
//!
//! # The contract
//!
//! Both `x86_64/` and `aarch64/` hold the same file names for the same roles: `boot.rs` (the
//! entry assembly and `rust_entry`), `console.rs`, `exceptions.rs`, `exit.rs`, `fw_cfg.rs`,
//! `instructions.rs`, `mmu.rs`, `pci.rs`, `pmu.rs`, `smp.rs`, `timer.rs`; the rest is what only one
//! architecture has (APIC and ACPI; GIC, PSCI, the device tree, MTE, SVE and SME with their two-CPU register `handoff`: x86 has no
//! counterpart of those, and the runtime offers none). Both have a `debug.rs`,
//! but not a shared API: x86's debug registers (DR0-DR7, #DB, RFLAGS.TF) and aarch64's
//! self-hosted debug (DBGBCR/DBGWCR pairs, MDSCR_EL1, the OS lock, PSTATE.D and SS) differ in
//! every operation, so each is its architecture's own module. Each architecture exports,
//! at `vmunit::arch`:
//!
//! - **Exceptions**: `Exception`, what a test sees of one, with the accessors
//!   [`Exception::kind`] (a `Vector`: the x86 vector, the aarch64 exception class, so that
//!   `#[vmunit::test(should_fault = PF)]` and `should_fault = DataAbort` read alike),
//!   [`Exception::syndrome`] (error code, ESR), [`Exception::return_address`] (RIP, ELR),
//!   [`Exception::fault_address`] (CR2 of a #PF, FAR of an abort) and
//!   [`Exception::from_user_mode`] (CPL 3, EL0); `ExceptionFrame`, the saved registers;
//!   [`catch_exception`] and [`trap_exceptions`] (shared code in `crate::catch`) and
//!   [`run_in_user_mode`].
//! - **Probes** that catch what they raise, named `try_<op>`: [`try_read`], [`try_write`],
//!   [`try_call`] (behind `memory::TestPage`).
//! - **Interrupts**: [`set_interrupt_handler`]`(number, Some(handler))`, one signature on both:
//!   an [`InterruptNumber`] (x86 vector, GIC INTID) and an [`InterruptHandler`], a
//!   `fn(InterruptNumber)`; and `interrupts::{enable, disable, are_enabled}`.
//! - **Boot**: `boot.rs` sets the machine up as far as the generic runtime needs, then calls
//!   `crate::runtime::start` with a `Boot`: the console, heap, environment, arguments,
//!   `main` and exit are generic.
//! - **Modules**: `console`, `exit`, `mmu`, `smp` (`MAX_CPUS`, `cpu_index`, `cpu_count`,
//!   `on_cpus`, `Barrier`), `timer` (`count`, `frequency`), `instructions`.
//! - **Devices**: [`mmu::map_device`]`(physical, size)`, a device-memory window
//!   (`crate::mmio::DeviceWindow`) on any physical region but RAM and the runtime's own
//!   devices; [`pci::host_bridge`], the host bridge the firmware describes, for the
//!   generic `crate::pci`, and [`pci::config_port_read`]/[`pci::config_port_write`], the
//!   port mechanism of configuration space (x86's 0xCF8/0xCFC; aarch64 has none).
//!
//! The compiler checks the signatures of this list below, for the architecture being built.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

/// What an architecture's boot code hands [`crate::runtime::start`]: the machine as found at
/// boot, and the architecture's own set-up once memory works.
pub(crate) trait Boot {
    /// The kernel command line (QEMU's `-append`).
    fn command_line(&self) -> &str;
    /// The runner's `KEY=VALUE` environment, as the boot code found it (empty when none).
    fn environment(&self) -> &[u8];
    /// Free RAM `(start, end)` for the heap and the page-frame allocator: not the image, nor
    /// what firmware or the boot structures still use.
    fn free_memory(&self) -> &[(u64, u64)];
    /// Sets up what needs the heap and page frames: the page tables, interrupt controllers,
    /// other CPUs.
    fn start_machine(&self);
}

// The contract's signatures, checked for the architecture being built.
const _: fn(&Exception) -> Vector = Exception::kind;
const _: fn(&Exception) -> u64 = Exception::syndrome;
const _: fn(&Exception) -> u64 = Exception::return_address;
const _: fn(&Exception) -> Option<u64> = Exception::fault_address;
const _: fn(&Exception) -> bool = Exception::from_user_mode;
const _: fn(InterruptNumber, Option<InterruptHandler>) = set_interrupt_handler;
const _: fn(u64) -> Result<u64, Exception> = try_read;
const _: unsafe fn(u64, u64) -> Result<(), Exception> = try_write;
const _: unsafe fn(u64) -> Result<(), Exception> = try_call;
const _: fn() -> bool = interrupts::are_enabled;
const _: fn() = interrupts::enable;
const _: fn() = interrupts::disable;
const _: fn() -> usize = smp::cpu_index;
const _: fn() -> usize = smp::cpu_count;
const _: usize = smp::MAX_CPUS;
const _: fn(usize) -> smp::Barrier = smp::Barrier::new;
const _: fn() -> u64 = timer::count;
const _: fn() -> u64 = timer::frequency;
const _: fn(u8) -> ! = exit::exit;
const _: fn(u64, u64) -> Result<crate::mmio::DeviceWindow, crate::mmio::MapError> = mmu::map_device;
const _: fn() -> Option<crate::pci::HostBridgeDescription> = pci::host_bridge;
const _: fn(crate::pci::Address, u8, u8) -> u32 = pci::config_port_read;
const _: fn(crate::pci::Address, u8, u8, u32) = pci::config_port_write;

/// Checks at compile time that `catch_exception` and `run_in_user_mode` have the contract's
/// generic shapes.
#[allow(dead_code)]
fn contract_of_closures() {
    let _: Result<u8, Exception> = catch_exception(|| 0u8);
    let _: Result<u8, Exception> = run_in_user_mode(|| 0u8);
    let _: (u8, alloc::vec::Vec<Exception>) = trap_exceptions(&[], || 0u8);
}
