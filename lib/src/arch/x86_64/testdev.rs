//! QEMU's `pc-testdev` (`-device pc-testdev`, hw/misc/pc-testdev.c): the port that makes the
//! host drop a guest page from its mappings, so that the hypervisor's next access to it (while
//! delivering an event, say) takes a fault of its own. Without the device the port ignores
//! writes, and the test runs without the flush.

use x86_64::instructions::port::Port;

/// The port that flushes the page holding the 32-bit physical address written to it.
const FLUSH_PORT: u16 = 0xe4;

/// Asks the host to drop the page at `physical` (identity-mapped: a virtual address below
/// 4 GiB is its physical address) from its mappings.
pub fn flush_page(physical: u64) {
    let mut port = Port::<u32>::new(FLUSH_PORT);
    // SAFETY: writing to the test device's flush port only changes host mappings, never guest
    // memory; without the device the write is ignored.
    unsafe { port.write(physical as u32) };
}

/// Flushes the page of the IDT.
pub fn flush_idt_page() {
    let (_, base) = super::instructions::store_idtr();
    flush_page(base);
}

/// Flushes the page of the current stack.
pub fn flush_stack_page() {
    let marker = 0u8;
    flush_page(core::hint::black_box(&raw const marker) as u64);
}
