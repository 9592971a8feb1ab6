//! QEMU's `pci-testdev` (hw/misc/pci-testdev.c), as kvm-unit-tests' lib/pci-testdev.c drives
//! it: IDs 1b36:0005, class "other"; BAR 0 a 4 KiB memory BAR and BAR 1 a 256-byte I/O BAR,
//! each holding the same little protocol; with `membar=SIZE`, BAR 2 a 64-bit prefetchable
//! memory BAR (an empty region: nothing answers in it).
//!
//! The protocol: writing a test number `n` to byte 0 selects the BAR's test `n` (0..3; other
//! numbers select none, and then every byte reads 0). The selected test's header reads back:
//! byte 0 its index among all six tests (BAR 0's are 0..3, BAR 1's 3..6), byte 1 the access
//! width (1), bytes 4..8 the trigger offset, byte 8 the data byte, bytes 12..16 the count of
//! writes the device saw at the trigger offset since the selection, bytes 16.. the test's
//! name, NUL-terminated. A write of the access width at the trigger offset counts, with the
//! data byte for the `datamatch` test, any data for the others. The two `eventfd` tests also
//! register an ioeventfd on the trigger offset: where the accelerator or QEMU signals it, the
//! write never reaches the device and the count stays 0; kvm-unit-tests accepts 0 or all.

use heapless::String;

use crate::mmio::DeviceWindow;

/// The memory BAR's index.
pub const MEMORY_BAR: u8 = 0;
/// The I/O BAR's index.
pub const IO_BAR: u8 = 1;
/// The optional 64-bit memory BAR's index (`-device pci-testdev,membar=SIZE`).
pub const MEMBAR: u8 = 2;
/// The memory BAR's size: two 2 KiB halves (the header, then the trigger offsets).
pub const MEMORY_BAR_SIZE: u64 = 4096;
/// The I/O BAR's size.
pub const IO_BAR_SIZE: u64 = 256;

/// The memory BAR's tests, in test-number order.
pub const MEMORY_TESTS: [&str; 3] = [
    "mmio-no-eventfd",
    "mmio-wildcard-eventfd",
    "mmio-datamatch-eventfd",
];
/// The I/O BAR's tests, in test-number order.
pub const IO_TESTS: [&str; 3] = [
    "portio-no-eventfd",
    "portio-wildcard-eventfd",
    "portio-datamatch-eventfd",
];

/// Header offsets.
pub mod offset {
    /// The test number (write: select; read: the index among all tests).
    pub const TEST: u64 = 0;
    /// The access width, 8 bits.
    pub const WIDTH: u64 = 1;
    /// The trigger offset, 32 bits.
    pub const TRIGGER: u64 = 4;
    /// The data byte.
    pub const DATA: u64 = 8;
    /// The count, 32 bits.
    pub const COUNT: u64 = 12;
    /// The name, NUL-terminated.
    pub const NAME: u64 = 16;
}

/// Which of a test's trigger semantics it has, from its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trigger {
    /// No ioeventfd: every write counts.
    NoEventfd,
    /// An ioeventfd for any data.
    WildcardEventfd,
    /// An ioeventfd, and the device's count, for the data byte only.
    DatamatchEventfd,
}

impl Trigger {
    /// The semantics a test name says.
    pub fn of_name(name: &str) -> Option<Trigger> {
        if name.ends_with("-no-eventfd") {
            Some(Trigger::NoEventfd)
        } else if name.ends_with("-wildcard-eventfd") {
            Some(Trigger::WildcardEventfd)
        } else if name.ends_with("-datamatch-eventfd") {
            Some(Trigger::DatamatchEventfd)
        } else {
            None
        }
    }
}

/// One BAR of a pci-testdev (memory or I/O: the same protocol) through its device window.
#[derive(Clone, Copy, Debug)]
pub struct TestDevice {
    window: DeviceWindow,
}

impl TestDevice {
    /// The protocol on `window` (the mapped memory BAR, or the I/O BAR through the host
    /// bridge's memory-mapped I/O window).
    pub fn new(window: DeviceWindow) -> TestDevice {
        TestDevice { window }
    }

    /// The window.
    pub fn window(&self) -> DeviceWindow {
        self.window
    }

    /// Selects test `number` (resets its count).
    pub fn select(&self, number: u8) {
        self.window.write_u8(offset::TEST, number)
    }

    /// Byte 0: the selected test's index among all tests.
    pub fn index(&self) -> u8 {
        self.window.read_u8(offset::TEST)
    }

    /// The access width.
    pub fn width(&self) -> u8 {
        self.window.read_u8(offset::WIDTH)
    }

    /// The trigger offset.
    pub fn trigger_offset(&self) -> u32 {
        self.window.read_u32(offset::TRIGGER)
    }

    /// The data byte (read as the 32-bit word kvm-unit-tests reads: data and padding).
    pub fn data(&self) -> u32 {
        self.window.read_u32(offset::DATA)
    }

    /// The count.
    pub fn count(&self) -> u32 {
        self.window.read_u32(offset::COUNT)
    }

    /// The name, up to its NUL (at most 32 bytes; bytes that are not ASCII read as '?').
    pub fn name(&self) -> String<32> {
        let mut name = String::new();
        for index in 0..32 {
            let byte = self.window.read_u8(offset::NAME + index);
            if byte == 0 {
                break;
            }
            let _ = name.push(if byte.is_ascii() { byte as char } else { '?' });
        }
        name
    }

    /// Writes `value` at `offset` with an access of `width` bytes (1, 2 or 4).
    pub fn write(&self, offset: u64, width: u8, value: u32) {
        match width {
            1 => self.window.write_u8(offset, value as u8),
            2 => self.window.write_u16(offset, value as u16),
            _ => self.window.write_u32(offset, value),
        }
    }
}
