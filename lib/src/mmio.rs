//! Device memory windows: a region the MMU maps as device memory, and its bounds-checked
//! volatile accessors. `arch::mmu::map_device(physical, size)` makes one.

use core::fmt;

/// Why a device region could not be mapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// The size is 0, or the region wraps around the address space.
    Empty,
    /// The region reaches beyond what the MMU can map: the CPU's physical address range
    /// (aarch64 ID_AA64MMFR0_EL1.PARange, capped at the runtime's 48 bits).
    BeyondAddressRange {
        /// The first address the MMU cannot map.
        limit: u64,
    },
    /// The region overlaps RAM, which the runtime maps as normal memory and Rust owns.
    Ram,
    /// The region overlaps a device the runtime drives itself (the console UART, the interrupt
    /// controller): writes through a window could break the runtime.
    RuntimeDevice,
    /// The region includes page 0, which the runtime keeps unmapped so that null pointers
    /// fault.
    NullPage,
    /// This architecture's runtime cannot map device regions yet.
    Unsupported,
}

impl fmt::Display for MapError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Empty => write!(formatter, "empty or wrapping region"),
            MapError::BeyondAddressRange { limit } => {
                write!(formatter, "beyond the mappable address range (limit {limit:#x})")
            }
            MapError::Ram => write!(formatter, "overlaps RAM"),
            MapError::RuntimeDevice => write!(formatter, "overlaps a device the runtime drives"),
            MapError::NullPage => write!(formatter, "includes page 0 (null pointers must fault)"),
            MapError::Unsupported => write!(formatter, "device mapping unsupported on this architecture"),
        }
    }
}

/// A mapped device region: `size` bytes at virtual address `base` (the runtime identity maps,
/// so `base` is also the physical address). Accesses are volatile, of exactly the width the
/// method names, and panic when they fall outside the window or are misaligned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeviceWindow {
    base: u64,
    size: u64,
}

impl DeviceWindow {
    /// A window on `size` bytes at `base`.
    ///
    /// # Safety
    /// `[base, base + size)` must be mapped as device memory for as long as any copy of the
    /// window is used, and accesses there must not touch memory Rust owns.
    pub(crate) unsafe fn new(base: u64, size: u64) -> DeviceWindow {
        DeviceWindow { base, size }
    }

    /// The window's first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The window's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The part of this window of `size` bytes at `offset`, if it lies inside.
    pub fn window(&self, offset: u64, size: u64) -> Option<DeviceWindow> {
        let end = offset.checked_add(size)?;
        (size > 0 && end <= self.size).then_some(DeviceWindow {
            base: self.base + offset,
            size,
        })
    }

    /// The address of a `width`-byte access at `offset`, after the bounds and alignment checks.
    fn address(&self, offset: u64, width: u64) -> usize {
        assert!(
            offset.checked_add(width).is_some_and(|end| end <= self.size),
            "device window access at {offset:#x} (+{width}) outside the {:#x}-byte window at {:#x}",
            self.size,
            self.base
        );
        assert!(
            (self.base + offset).is_multiple_of(width),
            "misaligned {width}-byte device access at {:#x}",
            self.base + offset
        );
        (self.base + offset) as usize
    }

    /// Reads the byte at `offset`.
    pub fn read_u8(&self, offset: u64) -> u8 {
        let address = self.address(offset, 1);
        // SAFETY: inside the window, which `new`'s contract keeps mapped as device memory.
        unsafe { (address as *const u8).read_volatile() }
    }

    /// Reads the 16-bit little-endian value at `offset`.
    pub fn read_u16(&self, offset: u64) -> u16 {
        let address = self.address(offset, 2);
        // SAFETY: inside the window and aligned, see `read_u8`.
        unsafe { (address as *const u16).read_volatile() }
    }

    /// Reads the 32-bit value at `offset`.
    pub fn read_u32(&self, offset: u64) -> u32 {
        let address = self.address(offset, 4);
        // SAFETY: inside the window and aligned, see `read_u8`.
        unsafe { (address as *const u32).read_volatile() }
    }

    /// Reads the 64-bit value at `offset`.
    pub fn read_u64(&self, offset: u64) -> u64 {
        let address = self.address(offset, 8);
        // SAFETY: inside the window and aligned, see `read_u8`.
        unsafe { (address as *const u64).read_volatile() }
    }

    /// Writes the byte at `offset`.
    pub fn write_u8(&self, offset: u64, value: u8) {
        let address = self.address(offset, 1);
        // SAFETY: inside the window, device memory that no Rust object lives in (`new`).
        unsafe { (address as *mut u8).write_volatile(value) }
    }

    /// Writes the 16-bit value at `offset`.
    pub fn write_u16(&self, offset: u64, value: u16) {
        let address = self.address(offset, 2);
        // SAFETY: inside the window and aligned, see `write_u8`.
        unsafe { (address as *mut u16).write_volatile(value) }
    }

    /// Writes the 32-bit value at `offset`.
    pub fn write_u32(&self, offset: u64, value: u32) {
        let address = self.address(offset, 4);
        // SAFETY: inside the window and aligned, see `write_u8`.
        unsafe { (address as *mut u32).write_volatile(value) }
    }

    /// Writes the 64-bit value at `offset`.
    pub fn write_u64(&self, offset: u64, value: u64) {
        let address = self.address(offset, 8);
        // SAFETY: inside the window and aligned, see `write_u8`.
        unsafe { (address as *mut u64).write_volatile(value) }
    }
}
