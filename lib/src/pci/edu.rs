//! QEMU's educational PCI device `edu` (hw/misc/edu.c), as kvm-unit-tests' lib/pci-edu.c
//! drives it: IDs 1234:11e8, one 1 MiB memory BAR (BAR 0) of 32-bit registers (64-bit for
//! the DMA ones), an MSI capability (one vector) and INTA.
//!
//! Registers: the identification (0x010000ed: major 1, minor 0, 0xed), a liveness register
//! that reads back the complement of what was written, a factorial computed by a device
//! thread (status bit 0 while busy), an interrupt status that a write to "raise" ORs bits
//! into and a write to "acknowledge" clears bits of (INTx follows it, or each raise sends an
//! MSI), and a DMA engine between bus addresses and the device's own 4 KiB buffer at device
//! address 0x40000: source, destination, count, then the command (start, direction, raise
//! interrupt 0x100 when done). The transfer happens 100 ms (QEMU virtual clock) after the
//! command, and the start bit clears then. Bus addresses are masked to 28 bits
//! (`dma_mask`). DMA needs the Command register's Bus Master bit.

use crate::mmio::DeviceWindow;

/// The register BAR's index.
pub const BAR: u8 = 0;
/// The register BAR's size.
pub const BAR_SIZE: u64 = 1 << 20;
/// The identification register's low byte.
pub const MAGIC: u8 = 0xed;
/// The device address of the DMA buffer.
pub const DMA_BUFFER: u64 = 0x40000;
/// The DMA buffer's size: the most one transfer moves.
pub const DMA_BUFFER_SIZE: u64 = 4096;
/// The interrupt status bit a finished factorial raises (with [`status::INTERRUPT_ON_FACTORIAL`]).
pub const FACTORIAL_INTERRUPT: u32 = 0x001;
/// The interrupt status bit a finished DMA raises (with [`command::INTERRUPT`]).
pub const DMA_INTERRUPT: u32 = 0x100;

/// Register offsets.
pub mod register {
    /// Identification, read-only: 0xRRrr00ed (major, minor).
    pub const IDENTIFICATION: u64 = 0x00;
    /// Liveness: reads the complement of the last value written.
    pub const LIVENESS: u64 = 0x04;
    /// Factorial: a write starts computing the written number's factorial; reads give it.
    pub const FACTORIAL: u64 = 0x08;
    /// Status (see [`status`](super::status)).
    pub const STATUS: u64 = 0x20;
    /// Interrupt status, read-only.
    pub const INTERRUPT_STATUS: u64 = 0x24;
    /// Interrupt raise: ORs the written bits into the status and signals the interrupt.
    pub const INTERRUPT_RAISE: u64 = 0x60;
    /// Interrupt acknowledge: clears the written bits (INTx drops when none is left).
    pub const INTERRUPT_ACKNOWLEDGE: u64 = 0x64;
    /// DMA source address, 64 bits.
    pub const DMA_SOURCE: u64 = 0x80;
    /// DMA destination address, 64 bits.
    pub const DMA_DESTINATION: u64 = 0x88;
    /// DMA byte count, 64 bits.
    pub const DMA_COUNT: u64 = 0x90;
    /// DMA command, 64 bits (see [`command`](super::command)).
    pub const DMA_COMMAND: u64 = 0x98;
}

/// Status register bits.
pub mod status {
    /// The factorial is being computed.
    pub const COMPUTING: u32 = 0x01;
    /// Raise interrupt [`FACTORIAL_INTERRUPT`](super::FACTORIAL_INTERRUPT) when it is done.
    pub const INTERRUPT_ON_FACTORIAL: u32 = 0x80;
}

/// DMA command bits.
pub mod command {
    /// Start (reads 1 until the transfer is done).
    pub const START: u32 = 0x1;
    /// Direction: from the device's buffer to the bus address (clear: to the buffer).
    pub const FROM_DEVICE: u32 = 0x2;
    /// Raise [`DMA_INTERRUPT`](super::DMA_INTERRUPT) when done.
    pub const INTERRUPT: u32 = 0x4;
}

/// An `edu` device through its mapped register BAR.
#[derive(Clone, Copy, Debug)]
pub struct Edu {
    registers: DeviceWindow,
}

impl Edu {
    /// The device whose BAR 0 is mapped at `registers` (at least the first 4 KiB).
    pub fn new(registers: DeviceWindow) -> Edu {
        Edu { registers }
    }

    /// The register window.
    pub fn registers(&self) -> DeviceWindow {
        self.registers
    }

    /// The identification register.
    pub fn identification(&self) -> u32 {
        self.registers.read_u32(register::IDENTIFICATION)
    }

    /// Writes `value` to the liveness register; returns what it reads back (the complement
    /// when the device lives).
    pub fn liveness(&self, value: u32) -> u32 {
        self.registers.write_u32(register::LIVENESS, value);
        self.registers.read_u32(register::LIVENESS)
    }

    /// kvm-unit-tests' `edu_check_alive`: the liveness register returns the complement.
    pub fn is_alive(&self, value: u32) -> bool {
        self.liveness(value) == !value
    }

    /// The status register.
    pub fn status(&self) -> u32 {
        self.registers.read_u32(register::STATUS)
    }

    /// Writes the status register (only [`status::INTERRUPT_ON_FACTORIAL`] is writable).
    pub fn set_status(&self, value: u32) {
        self.registers.write_u32(register::STATUS, value)
    }

    /// Starts computing `n!` (ignored while a computation runs).
    pub fn start_factorial(&self, n: u32) {
        self.registers.write_u32(register::FACTORIAL, n)
    }

    /// The factorial register (the result once [`status::COMPUTING`] is clear; wraps at 32 bits).
    pub fn factorial(&self) -> u32 {
        self.registers.read_u32(register::FACTORIAL)
    }

    /// Waits up to `milliseconds` for the computation to end; returns whether it did.
    pub fn wait_factorial(&self, milliseconds: u64) -> bool {
        crate::time::spin_until(milliseconds, || self.status() & status::COMPUTING == 0)
    }

    /// The interrupt status.
    pub fn interrupt_status(&self) -> u32 {
        self.registers.read_u32(register::INTERRUPT_STATUS)
    }

    /// Raises interrupt status `bits`: INTx goes up, or an MSI is sent.
    pub fn raise_interrupt(&self, bits: u32) {
        self.registers.write_u32(register::INTERRUPT_RAISE, bits)
    }

    /// Clears interrupt status `bits` (INTx goes down when none is left).
    pub fn acknowledge_interrupt(&self, bits: u32) {
        self.registers.write_u32(register::INTERRUPT_ACKNOWLEDGE, bits)
    }

    /// The DMA command register.
    pub fn dma_command(&self) -> u64 {
        self.registers.read_u64(register::DMA_COMMAND)
    }

    /// Whether a transfer is under way (the start bit still set).
    pub fn dma_busy(&self) -> bool {
        self.dma_command() & u64::from(command::START) != 0
    }

    /// Waits up to `milliseconds` for the transfer under way to end (the device moves the data
    /// 100 ms of virtual time after the command); returns whether it ended.
    pub fn wait_dma(&self, milliseconds: u64) -> bool {
        crate::time::spin_until(milliseconds, || !self.dma_busy())
    }

    /// Starts a transfer of `count` bytes from `bus_address` (what the device's requests
    /// carry: an IOVA behind an IOMMU) into its buffer at `offset`; with `interrupt`, raises
    /// [`DMA_INTERRUPT`] when done. The device only reads memory.
    ///
    /// # Panics
    /// When `offset + count` is beyond the device's buffer.
    pub fn start_dma_to_device(&self, bus_address: u64, offset: u64, count: u64, interrupt: bool) {
        assert!(offset + count <= DMA_BUFFER_SIZE, "beyond edu's DMA buffer");
        self.start_dma(bus_address, DMA_BUFFER + offset, count, 0, interrupt);
    }

    /// Starts a transfer of `count` bytes from the device's buffer at `offset` to
    /// `bus_address`: the device writes memory.
    ///
    /// # Safety
    /// Whatever `bus_address..+count` reaches (through the IOMMU translation in force, or as a
    /// physical address without one) must be memory that no Rust reference points into
    /// until the transfer ends (a `crate::memory::DmaBuffer`), or nothing (a blocked request).
    ///
    /// # Panics
    /// When `offset + count` is beyond the device's buffer.
    pub unsafe fn start_dma_from_device(&self, offset: u64, bus_address: u64, count: u64, interrupt: bool) {
        assert!(offset + count <= DMA_BUFFER_SIZE, "beyond edu's DMA buffer");
        self.start_dma(
            DMA_BUFFER + offset,
            bus_address,
            count,
            command::FROM_DEVICE,
            interrupt,
        );
    }

    fn start_dma(&self, source: u64, destination: u64, count: u64, direction: u32, interrupt: bool) {
        self.registers.write_u64(register::DMA_SOURCE, source);
        self.registers.write_u64(register::DMA_DESTINATION, destination);
        self.registers.write_u64(register::DMA_COUNT, count);
        let interrupt = if interrupt { command::INTERRUPT } else { 0 };
        self.registers
            .write_u32(register::DMA_COMMAND, command::START | direction | interrupt);
    }
}
