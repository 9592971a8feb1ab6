//! Device memory for tests: the MMIO hole below 4 GiB (local and I/O APICs, HPET, pc-testdev's
//! iomem at 0xff000000) and two windows of virtual pages, one in the lower half of the address
//! space and one in the upper (supervisor) half, where a test maps device frames or fresh RAM
//! frames side by side. No Rust object lives in any of them, so volatile accesses there are
//! safe functions; an access to an unmapped page faults like any other.

use core::ops::Range;

use crate::memory::{PAGE_SIZE, Protection, allocate_frame};

/// The MMIO hole below 4 GiB, identity mapped; never RAM on QEMU's machines.
pub const HOLE: Range<u64> = 0xfe00_0000..0x1_0000_0000;
/// The device window's first page.
pub const WINDOW: u64 = 0x0000_0200_0000_0000;
/// How many pages the window has (and the upper window too).
pub const WINDOW_PAGES: u64 = 64;
/// The upper window's first page: an upper-half address (bits 63:47 set, so canonical under
/// 4-level paging), which linear-address masking treats as a supervisor pointer.
pub const UPPER_WINDOW: u64 = 0xffff_fe00_0000_0000;

/// What a window page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A page of the MMIO hole, at this physical address.
    Device(u64),
    /// A fresh zeroed RAM frame, owned by the window from then on.
    Ram,
}

fn in_window(address: u64, size: u64) -> bool {
    [WINDOW, UPPER_WINDOW].into_iter().any(|start| {
        address >= start
            && address
                .checked_add(size)
                .is_some_and(|end| end <= start + WINDOW_PAGES * PAGE_SIZE)
    })
}

fn in_hole(address: u64, size: u64) -> bool {
    address >= HOLE.start && address.checked_add(size).is_some_and(|end| end <= HOLE.end)
}

/// Maps window page `index` (below [`WINDOW_PAGES`]) onto `backing` with `protection`;
/// returns its virtual address.
///
/// # Panics
/// For an index beyond the window, a device address outside [`HOLE`] or not page-aligned,
/// or when no frame is left.
pub fn map(index: u64, backing: Backing, protection: Protection) -> u64 {
    map_in(WINDOW, index, backing, protection)
}

/// Maps upper-window page `index` (below [`WINDOW_PAGES`]) onto `backing` with `protection`;
/// returns its virtual address, in the upper half.
///
/// # Panics
/// As [`map`].
pub fn map_upper(index: u64, backing: Backing, protection: Protection) -> u64 {
    map_in(UPPER_WINDOW, index, backing, protection)
}

fn map_in(window: u64, index: u64, backing: Backing, protection: Protection) -> u64 {
    assert!(
        index < WINDOW_PAGES,
        "window page {index} is beyond the {WINDOW_PAGES} pages"
    );
    let physical = match backing {
        Backing::Device(address) => {
            assert!(
                in_hole(address, PAGE_SIZE) && address.is_multiple_of(PAGE_SIZE),
                "{address:#x} is not a page of the MMIO hole"
            );
            address
        }
        Backing::Ram => {
            let frame = allocate_frame().expect("out of frames for the device window");
            // SAFETY: the frame is fresh from the allocator and identity mapped.
            unsafe { (frame as usize as *mut u8).write_bytes(0, PAGE_SIZE as usize) };
            frame
        }
    };
    let address = window + index * PAGE_SIZE;
    // SAFETY: the window holds no Rust object, and what it shows is device memory or a frame
    // no one else owns.
    unsafe { super::mmu::map_page(address, physical, protection) };
    address
}

/// Unmaps window page `index`: accesses to it raise #PF.
///
/// # Panics
/// For an index beyond the window.
pub fn unmap(index: u64) {
    assert!(
        index < WINDOW_PAGES,
        "window page {index} is beyond the {WINDOW_PAGES} pages"
    );
    // SAFETY: no Rust object lives in the window.
    unsafe { super::mmu::unmap_page(WINDOW + index * PAGE_SIZE) };
}

/// Unmaps upper-window page `index`: accesses to it raise #PF.
///
/// # Panics
/// For an index beyond the window.
pub fn unmap_upper(index: u64) {
    assert!(
        index < WINDOW_PAGES,
        "window page {index} is beyond the {WINDOW_PAGES} pages"
    );
    // SAFETY: no Rust object lives in the window.
    unsafe { super::mmu::unmap_page(UPPER_WINDOW + index * PAGE_SIZE) };
}

/// Whether the `size` bytes at `address` lie in the MMIO hole or in a device window, where
/// no Rust object lives (a range that wraps around the address space does not).
pub fn is_device_memory(address: u64, size: u64) -> bool {
    in_hole(address, size) || in_window(address, size)
}

/// `address`, once checked that its `size` bytes lie in the MMIO hole or the device window,
/// where no Rust object lives: for raw instructions that access memory there.
///
/// # Panics
/// For a range elsewhere.
pub fn checked(address: u64, size: u64) -> u64 {
    assert!(
        is_device_memory(address, size),
        "{address:#x} is neither in the MMIO hole nor in the device window"
    );
    address
}

macro_rules! accessors {
    ($($read:ident, $write:ident, $type:ty;)+) => {$(
        #[doc = concat!("Reads the `", stringify!($type), "` at `address` (in [`HOLE`] or the window) with one load.")]
        ///
        /// # Panics
        /// For an address elsewhere.
        pub fn $read(address: u64) -> $type {
            let address = checked(address, size_of::<$type>() as u64);
            // SAFETY: device memory or window pages hold no Rust object; a fault on an
            // unmapped page is an exception like any other.
            unsafe { (address as usize as *const $type).read_volatile() }
        }

        #[doc = concat!("Writes the `", stringify!($type), "` at `address` (in [`HOLE`] or the window) with one store.")]
        ///
        /// # Panics
        /// For an address elsewhere.
        pub fn $write(address: u64, value: $type) {
            let address = checked(address, size_of::<$type>() as u64);
            // SAFETY: as for the read: no Rust object lives there.
            unsafe { (address as usize as *mut $type).write_volatile(value) };
        }
    )+};
}

accessors! {
    read_u8, write_u8, u8;
    read_u32, write_u32, u32;
    read_u64, write_u64, u64;
}
