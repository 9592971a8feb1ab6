//! x86_64 exit: QEMU's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=0x4`).
//!
//! Writing `code` makes QEMU exit with status `(code << 1) | 1`.

use x86_64::instructions::port::Port;

/// The I/O port of isa-debug-exit, as the runner configures it.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the VM with `code` (0..=127). If no exit device is present, halts forever with
/// interrupts off, which the runner reports as a timeout.
pub fn exit(code: u8) -> ! {
    let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: writing to isa-debug-exit has no effect on memory; it ends the VM.
    unsafe { port.write(u32::from(code)) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
