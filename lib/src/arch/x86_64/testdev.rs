//! QEMU's `pc-testdev` (`-device pc-testdev`, hw/misc/pc-testdev.c): a scratch port to detect
//! it, ISA IRQ lines to raise and lower on demand (port 0x2000 + n), and the port that makes
//! the host drop a guest page from its mappings, so that the hypervisor's next access to it
//! (while delivering an event, say) takes a fault of its own. Without the device the ports
//! ignore writes.

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

/// pc-testdev's "pc-testdev-iomem" region: 64 KiB of MMIO at this physical address that reads
/// back what was written (kvm-unit-tests' `IORAM_BASE_PHYS`), so that the hypervisor must
/// emulate each access to it. It lies in `device::HOLE`, identity mapped.
pub const IOMEM: u64 = 0xff00_0000;
/// The size of [`IOMEM`]: 64 KiB.
pub const IOMEM_SIZE: u64 = 0x1_0000;

/// pc-testdev's 32-bit scratch register: it reads back what was written.
const DATA_PORT: u16 = 0xe0;
/// pc-testdev's IRQ lines: a byte written to `IRQ_PORT + n` sets or clears line n.
const IRQ_PORT: u16 = 0x2000;
/// The number of lines pc-testdev drives.
pub const LINES: u8 = 24;

/// Whether QEMU's `pc-testdev` is present: its scratch register reads back a written pattern
/// (an absent port reads all ones).
pub fn present() -> bool {
    const PATTERN: u32 = 0x5a17_c3e1;
    let mut port = Port::<u32>::new(DATA_PORT);
    // SAFETY: the scratch register only stores the value; without the device the write is
    // ignored.
    unsafe { port.write(PATTERN) };
    // SAFETY: reading the scratch register has no side effect; without the device it returns
    // all ones.
    unsafe { port.read() == PATTERN }
}

/// Sets (`asserted`) or clears ISA IRQ line `line` (below [`LINES`]) through
/// pc-testdev. Without the device nothing happens.
pub fn set_irq_line(line: u8, asserted: bool) {
    assert!(line < LINES, "pc-testdev drives lines 0 to 23, not {line}");
    let mut port = Port::<u8>::new(IRQ_PORT + u16::from(line));
    // SAFETY: the write sets an interrupt line's level; it touches no memory.
    unsafe { port.write(u8::from(asserted)) };
}

/// Raises and lowers ISA IRQ line `line`: one edge.
pub fn pulse_irq_line(line: u8) {
    set_irq_line(line, true);
    set_irq_line(line, false);
}
