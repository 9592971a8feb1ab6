//! The aarch64 architecture: ELF boot on QEMU `virt` (EL1; EL2 with VHE where the test asks, else
//! dropped to EL1), the device
//! tree, the PL011 console, VBAR_EL1 exceptions and EL0 runs, the 4-level MMU, PSCI (SMP and
//! exit), MTE, SVE, SME (and the two-CPU register hand-off their tests share), the GIC (v2 or v3), the generic timer and self-hosted debug (breakpoints,
//! watchpoints, software step), plus safe wrappers for the instructions tests exercise.

mod boot;
pub mod cache;
pub mod console;
pub mod debug;
pub mod device_tree;
pub mod exceptions;
pub mod exit;
pub mod fw_cfg;
pub mod gic;
pub mod handoff;
pub mod instructions;
pub mod mmu;
pub mod mte;
pub mod pci;
pub mod pmu;
pub mod psci;
pub mod registers;
pub mod sme;
pub mod smp;
pub mod sve;
pub mod timer;

pub use boot::{El2Boot, HCR_VHE};
pub use exceptions::{
    DebugFrame, DebugHandler, Exception, ExceptionClass, ExceptionContext, ExceptionFrame, ExceptionHandler,
    FaultStatus, Vector, catch_exception, install_exception_handler, run_in_user_mode, set_debug_handler,
    trap_exceptions,
};
pub use gic::{InterruptHandler, InterruptNumber, set_interrupt_handler};
pub use instructions::{try_call, try_read, try_write};

/// IRQ masking under the names x86_64 uses (`enable`, `disable`, `are_enabled`).
pub mod interrupts {
    pub use super::instructions::{disable_interrupts as disable, enable_interrupts as enable};

    /// Whether IRQs are unmasked.
    pub fn are_enabled() -> bool {
        !super::instructions::interrupts_masked()
    }
}
