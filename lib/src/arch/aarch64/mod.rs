//! The aarch64 architecture: ELF boot on QEMU `virt` (EL1, or EL2 dropped to EL1), the device
//! tree, the PL011 console, VBAR_EL1 exceptions and EL0 runs, the 4-level MMU, PSCI (SMP and
//! exit), GICv3 and the generic timer, plus safe wrappers for the instructions tests exercise.

mod boot;
pub mod cache;
pub mod console;
pub mod device_tree;
pub mod exceptions;
pub mod exit;
pub mod fw_cfg;
pub mod gic;
pub mod instructions;
pub mod mmu;
pub mod pmu;
pub mod psci;
pub mod smp;
pub mod timer;

pub use exceptions::{
    Exception, ExceptionClass, ExceptionFrame, FaultStatus, Vector, catch_exception, run_in_user_mode,
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

unsafe extern "C" {
    static __image_end: u8;
}

/// The fw_cfg file the runner puts the guest environment in (see runner/src/qemu.rs).
const ENVIRONMENT_FILE: &str = "opt/vmunit/environment";
/// The most environment bytes read from fw_cfg.
const ENVIRONMENT_CAPACITY: usize = 4096;

/// Called by the boot assembly with the MMU on, on the boot CPU's stack, with x0 from QEMU.
pub(crate) extern "C" fn rust_entry(x0: u64) -> ! {
    exceptions::init();
    let platform = match device_tree::init(x0) {
        Ok(platform) => platform,
        Err(problem) => early_failure(problem),
    };
    crate::console::init();
    if platform.uart.is_none() {
        early_failure("the DTB names no arm,pl011 UART");
    }
    if let Some((start, end)) = platform.initrd {
        // SAFETY: QEMU loaded the initrd (the runner's environment) at this RAM range, which
        // nothing has written yet; it is identity mapped.
        let bytes =
            unsafe { core::slice::from_raw_parts(start as usize as *const u8, (end - start) as usize) };
        crate::environment::init(bytes);
    } else if let Some(device) = fw_cfg::FwCfg::find() {
        let mut buffer = [0; ENVIRONMENT_CAPACITY];
        if let Some(length) = device.read_file(ENVIRONMENT_FILE, &mut buffer) {
            crate::environment::init(&buffer[..length]);
        }
    }
    // RAM below the image's end holds the DTB and the image; the initrd was copied above.
    let image_end = &raw const __image_end as u64;
    let mut free = [(0, 0); device_tree::MAX_MEMORY_RANGES];
    for (slot, &(start, end)) in free.iter_mut().zip(platform.memory()) {
        *slot = (start.max(image_end), end);
    }
    crate::memory::init(&free[..platform.memory_count]);
    mmu::init();
    crate::runtime::start(platform.bootargs())
}

/// Before the console works there is no way to report anything: this ends the VM. With the
/// console up (the DTB was found), the reason is printed first.
fn early_failure(problem: &str) -> ! {
    // The PL011 of `virt` is at this address even when the DTB is missing.
    const VIRT_PL011: u64 = 0x0900_0000;
    for byte in "ABORT: boot: ".bytes().chain(problem.bytes()).chain(*b"\r\n") {
        // SAFETY: a byte to the `virt` PL011's data register, device-mapped by the boot tables;
        // if the machine has no UART there the write is ignored by QEMU.
        unsafe { (VIRT_PL011 as usize as *mut u32).write_volatile(u32::from(byte)) };
    }
    exit::power_off()
}
