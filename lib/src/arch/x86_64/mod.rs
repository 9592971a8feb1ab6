//! The x86_64 architecture: PVH boot, COM1 console, GDT/IDT exceptions, 4-level paging and
//! isa-debug-exit, plus safe wrappers for the instructions tests exercise.

pub mod access;
pub mod acpi;
pub mod apic;
mod boot;
pub mod console;
pub mod control;
pub mod cpuid;
pub mod debug;
pub mod device;
pub mod exceptions;
pub mod exit;
pub mod fpu;
pub mod fw_cfg;
pub mod instructions;
pub mod interrupt_count;
pub mod ioapic;
pub mod mmu;
pub mod msr;
pub mod pmu;
pub mod probes;
pub mod smp;
pub mod start_info;
pub mod syscall;
pub mod testdev;
pub mod timer;

pub use exceptions::{
    Exception, ExceptionFrame, InterruptHandler, Vector, catch_exception, page_fault, run_in_user_mode,
    set_gate_present, set_gate_user_callable, set_interrupt_handler, trap_exceptions,
};
pub use instructions::{try_call, try_read, try_write};
/// Interrupt flag control: `enable`, `disable`, `are_enabled`, `without_interrupts`.
pub use x86_64::instructions::interrupts;

use start_info::BootInfo;

/// The first MiB holds firmware data and the PVH structures: never handed out.
const LOW_MEMORY_END: u64 = 1 << 20;
/// Page tables built at boot map physical memory up to here.
const MAPPED_MEMORY_END: u64 = 4 << 30;

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Called by the boot assembly in long mode, on the boot stack, with the PVH start info.
pub(crate) extern "C" fn rust_entry(start_info_address: u32) -> ! {
    exceptions::init_cpu(0);
    crate::console::init();
    // SAFETY: `start_info_address` is %ebx from the PVH entry, and nothing has written to
    // low memory yet.
    let boot = unsafe { BootInfo::read(start_info_address) };
    crate::environment::init(&boot.environment[..boot.environment_length]);
    let image = (&raw const __image_start as u64, &raw const __image_end as u64);
    let mut free = [(0, 0); start_info::MAX_MEMORY_MAP_ENTRIES * 2];
    let mut count = 0;
    for (start, end) in boot.ram() {
        let start = start.max(LOW_MEMORY_END);
        let end = end.min(MAPPED_MEMORY_END);
        // Cut the image out of the range.
        for (piece_start, piece_end) in [(start, end.min(image.0)), (start.max(image.1), end)] {
            if piece_start < piece_end && count < free.len() {
                free[count] = (piece_start, piece_end);
                count += 1;
            }
        }
    }
    crate::memory::init(&free[..count]);
    mmu::init();
    apic::enable();
    acpi::set_rsdp_hint(boot.rsdp_address);
    smp::init();
    crate::runtime::start(boot.command_line())
}
