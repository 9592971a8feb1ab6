//! aarch64 exit: Arm semihosting's SYS_EXIT_EXTENDED, else PSCI SYSTEM_OFF.
//!
//! Semihosting (QEMU's `-semihosting`) makes QEMU exit with the status `(code << 1) | 1`, as
//! isa-debug-exit does on x86. Without it (and under KVM) the semihosting HLT is an undefined
//! instruction, which is caught; then SYSTEM_OFF makes QEMU exit with 0 whatever the result,
//! and the `EXIT: STATUS=` line that `runtime::exit` prints carries the result alone.
//!
//! Trying semihosting and catching its failure needs no word from the runner, and works the
//! same when a test is run by hand without `-semihosting`.

use core::arch::asm;

/// The semihosting operation SYS_EXIT_EXTENDED.
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// ADP_Stopped_ApplicationExit: the reason that makes the second word the exit code.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Ends the VM with `code` (0..=127): QEMU's status is `(code << 1) | 1` under semihosting and
/// 0 after SYSTEM_OFF. If neither stops the VM, waits forever with interrupts masked (the
/// runner reports a timeout).
pub fn exit(code: u8) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, (u64::from(code) << 1) | 1];
    // An undefined-instruction exception here means no semihosting: fall through to PSCI.
    let _ = super::exceptions::catch_exception(|| {
        // SAFETY: HLT #0xF000 is the A64 semihosting call, which QEMU with `-semihosting`
        // handles by exiting; it reads the two-word block and writes nothing. Without
        // semihosting it raises an exception, which is caught.
        unsafe {
            asm!("hlt #0xf000", in("x0") SYS_EXIT_EXTENDED, in("x1") block.as_ptr(), options(nostack, readonly))
        };
    });
    power_off()
}

/// Powers the VM off through PSCI without printing anything (QEMU exits with 0).
pub fn power_off() -> ! {
    super::psci::system_off();
    loop {
        super::instructions::disable_interrupts();
        super::instructions::wait_for_interrupt();
    }
}
