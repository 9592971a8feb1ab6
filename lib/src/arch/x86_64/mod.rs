//! The x86_64 architecture: PVH boot, COM1 console, GDT/IDT exceptions, 4-level paging (5-level
//! on request) and isa-debug-exit, plus safe wrappers for the instructions tests exercise.

pub mod access;
pub mod acpi;
pub mod apic;
mod boot;
pub mod cet;
pub mod console;
pub mod control;
pub mod cpuid;
pub mod debug;
pub mod device;
pub mod exceptions;
pub mod exit;
pub mod fpu;
pub mod fw_cfg;
pub mod hyperv;
pub mod instructions;
pub mod intel_iommu;
pub mod interrupt_count;
pub mod ioapic;
pub mod kvmclock;
pub mod lam;
pub mod linear_address;
pub mod mmu;
pub mod msr;
pub mod page_walk;
pub mod pci;
pub mod pmu;
pub mod probes;
pub mod protection_keys;
pub mod realmode;
pub mod smp;
pub mod start_info;
pub mod svm;
pub mod syscall;
pub mod testdev;
pub mod timer;
pub mod tsx;
pub mod vmware;

pub use exceptions::{
    Exception, ExceptionFrame, InterruptHandler, InterruptNumber, Vector, catch_exception,
    interrupted_address, page_fault, run_in_user_mode, set_gate_present, set_gate_user_callable,
    set_interrupt_handler, trap_exceptions,
};
pub use instructions::{try_call, try_read, try_write};
/// Interrupt flag control: `enable`, `disable`, `are_enabled`, `without_interrupts`.
pub use x86_64::instructions::interrupts;

/// Page tables built at boot map physical memory up to here.
const MAPPED_MEMORY_END: u64 = 4 << 30;
