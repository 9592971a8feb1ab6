//! Memory: the global heap, the page-frame allocator, and [`TestPage`], a page that tests
//! may map, unmap and protect safely.
//!
//! Free RAM is split at boot: half feeds the heap (`alloc::vec::Vec`, `Box`, ...), half the
//! page-frame allocator, whose frames back page tables and test pages. Memory is identity
//! mapped, so a frame's physical address is also a usable pointer.

use core::sync::atomic::{AtomicU64, Ordering};

use buddy_system_allocator::{FrameAllocator, LockedHeap};

use crate::arch::{self, Exception};

/// The size of a page and of a frame.
pub const PAGE_SIZE: u64 = 4096;

/// Access rights of a mapped page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Protection {
    /// Writes are allowed.
    pub write: bool,
    /// Instruction fetches are allowed (where the CPU supports no-execute).
    pub execute: bool,
    /// User-mode (ring 3 / EL0) accesses are allowed.
    pub user: bool,
}

impl Protection {
    /// Read only, no execute.
    pub const READ_ONLY: Protection = Protection {
        write: false,
        execute: false,
        user: false,
    };
    /// Read and write, no execute.
    pub const READ_WRITE: Protection = Protection {
        write: true,
        execute: false,
        user: false,
    };
    /// Read and execute.
    pub const READ_EXECUTE: Protection = Protection {
        write: false,
        execute: true,
        user: false,
    };
    /// Everything, for the kernel.
    pub const READ_WRITE_EXECUTE: Protection = Protection {
        write: true,
        execute: true,
        user: false,
    };
    /// Read only, no execute, user-accessible.
    pub const USER_READ_ONLY: Protection = Protection {
        write: false,
        execute: false,
        user: true,
    };
    /// Read and write, no execute, user-accessible.
    pub const USER_READ_WRITE: Protection = Protection {
        write: true,
        execute: false,
        user: true,
    };
    /// Read and execute, user-accessible.
    pub const USER_READ_EXECUTE: Protection = Protection {
        write: false,
        execute: true,
        user: true,
    };
}

/// Heap blocks are powers of two up to 2^(32-1) bytes.
#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Frames are counted in pages; blocks up to 2^27 pages.
static FRAMES: spin::Mutex<Option<FrameAllocator<28>>> = spin::Mutex::new(None);

static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);
static FRAME_BYTES: AtomicU64 = AtomicU64::new(0);

/// Hands the free physical ranges `(start, end)` to the heap and the frame allocator.
pub(crate) fn init(free: &[(u64, u64)]) {
    let align_up = |value: u64| value.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let total: u64 = free
        .iter()
        .map(|&(start, end)| end.saturating_sub(align_up(start)))
        .sum();
    // Whole pages only: the frame allocator must not share a page with the heap.
    let mut heap_left = total / 2 / PAGE_SIZE * PAGE_SIZE;
    let mut allocator = FrameAllocator::new();
    let mut frame_ranges = heapless::Vec::<(u64, u64), 64>::new();
    for &(start, end) in free {
        let start = align_up(start);
        let end = end / PAGE_SIZE * PAGE_SIZE;
        if start >= end {
            continue;
        }
        let heap_end = (start + heap_left).min(end);
        if heap_end > start {
            // SAFETY: the range is free RAM (the caller excluded the image and firmware
            // data), identity mapped, and given to the heap exactly once.
            unsafe { HEAP.lock().add_to_heap(start as usize, heap_end as usize) };
            heap_left -= heap_end - start;
            HEAP_BYTES.fetch_add(heap_end - start, Ordering::Relaxed);
        }
        if end > heap_end {
            // Ranges beyond the capacity are left out.
            let _ = frame_ranges.push((heap_end, end));
        }
    }
    // Only now: the frame allocator's free lists live on the heap.
    for &(start, end) in &frame_ranges {
        allocator.add_frame((start / PAGE_SIZE) as usize, (end / PAGE_SIZE) as usize);
        FRAME_BYTES.fetch_add(end - start, Ordering::Relaxed);
    }
    *FRAMES.lock() = Some(allocator);
}

/// Allocates `count` physically contiguous frames; returns the first one's address.
pub fn allocate_frames(count: usize) -> Option<u64> {
    let frame = FRAMES.lock().as_mut()?.alloc(count)?;
    Some(frame as u64 * PAGE_SIZE)
}

/// Allocates one frame.
pub fn allocate_frame() -> Option<u64> {
    allocate_frames(1)
}

/// Returns frames from [`allocate_frames`].
pub fn free_frames(address: u64, count: usize) {
    if let Some(allocator) = FRAMES.lock().as_mut() {
        allocator.dealloc((address / PAGE_SIZE) as usize, count);
    }
}

/// Bytes given to the heap and to the frame allocator at boot.
pub fn sizes() -> (u64, u64) {
    (
        HEAP_BYTES.load(Ordering::Relaxed),
        FRAME_BYTES.load(Ordering::Relaxed),
    )
}

/// Where [`TestPage`]s are mapped: a virtual range that the identity map leaves alone.
const TEST_WINDOW_START: u64 = 0x0000_0100_0000_0000;
/// The end of [`TestPage::new`]'s window (512 GiB), which [`TestPage::new_at`] stays out of.
const TEST_WINDOW_END: u64 = TEST_WINDOW_START + (1 << 39);
static NEXT_TEST_PAGE: AtomicU64 = AtomicU64::new(TEST_WINDOW_START);

/// A page owned by a test, mapped at its own virtual address, that the test may unmap,
/// remap and protect to provoke page faults, and access through fault-catching probes.
///
/// No Rust reference ever points into it, so changing its mapping cannot break memory
/// safety. Its frame stays reachable through the identity map at [`TestPage::frame`].
pub struct TestPage {
    address: u64,
    frame: u64,
}

impl TestPage {
    /// Allocates a zeroed frame and maps it read-write at a fresh virtual address.
    ///
    /// # Panics
    /// When no frame is left.
    pub fn new() -> TestPage {
        let frame = allocate_frame().expect("out of frames for a TestPage");
        // SAFETY: the frame is fresh from the allocator and identity mapped.
        unsafe { (frame as usize as *mut u8).write_bytes(0, PAGE_SIZE as usize) };
        let address = NEXT_TEST_PAGE.fetch_add(PAGE_SIZE, Ordering::Relaxed);
        let page = TestPage { address, frame };
        page.map(Protection::READ_WRITE);
        page
    }

    /// Allocates a zeroed frame and maps it read-write at `address`, a page-aligned virtual
    /// address that nothing maps yet (far above RAM, or in the 57-bit space of 5-level
    /// paging): the page then owns that address as [`TestPage::new`]'s pages own theirs.
    ///
    /// # Panics
    /// When `address` is not page aligned, is mapped already or lies in the window
    /// [`TestPage::new`] takes its addresses from, or no frame is left.
    pub fn new_at(address: u64) -> TestPage {
        assert!(
            address.is_multiple_of(PAGE_SIZE),
            "{address:#x} is not page aligned"
        );
        assert!(
            !(TEST_WINDOW_START..TEST_WINDOW_END).contains(&address),
            "{address:#x} lies in TestPage::new's window"
        );
        assert!(
            arch::mmu::translate(address).is_none(),
            "{address:#x} is mapped already: a TestPage needs an address of its own"
        );
        let frame = allocate_frame().expect("out of frames for a TestPage");
        // SAFETY: the frame is fresh from the allocator and identity mapped.
        unsafe { (frame as usize as *mut u8).write_bytes(0, PAGE_SIZE as usize) };
        let page = TestPage { address, frame };
        page.map(Protection::READ_WRITE);
        page
    }

    /// The page's virtual address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The page's frame (physical address, also identity mapped).
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Maps the page (again) with `protection`.
    pub fn map(&self, protection: Protection) {
        // SAFETY: the page's virtual address belongs to this TestPage alone and nothing
        // holds a reference into it.
        unsafe { arch::mmu::map_page(self.address, self.frame, protection) };
    }

    /// Unmaps the page; accesses then raise page faults.
    pub fn unmap(&self) {
        // SAFETY: as for `map`; later accesses go through fault-catching probes.
        unsafe { arch::mmu::unmap_page(self.address) };
    }

    /// Changes the page's protection.
    pub fn protect(&self, protection: Protection) {
        self.map(protection);
    }

    /// Reads the 64-bit word at `offset` through the page's mapping, or returns the exception
    /// the read raised.
    pub fn try_read(&self, offset: u64) -> Result<u64, Exception> {
        arch::try_read(self.word(offset))
    }

    /// Writes the 64-bit word at `offset` through the page's mapping, or returns the exception
    /// the write raised.
    pub fn try_write(&self, offset: u64, value: u64) -> Result<(), Exception> {
        // SAFETY: the address lies in this page, which no Rust object occupies.
        unsafe { arch::try_write(self.word(offset), value) }
    }

    /// The 64-bit word at `offset` of the page's frame, read through the identity map: what
    /// the page holds, whatever its own mapping allows.
    pub fn stored(&self, offset: u64) -> u64 {
        assert!(offset + 8 <= PAGE_SIZE, "the word does not fit in the page");
        // SAFETY: the word lies inside this page's frame, owned by this TestPage and identity
        // mapped; a volatile read, as the page is written through other mappings.
        unsafe { ((self.frame + offset) as usize as *const u64).read_volatile() }
    }

    /// Stores `code` at `offset` through the identity map (whatever the page's mapping).
    pub fn store_code(&self, offset: u64, code: &[u8]) {
        assert!(
            offset + code.len() as u64 <= PAGE_SIZE,
            "code does not fit in the page"
        );
        // SAFETY: the bytes lie inside this page's frame, owned by this TestPage.
        unsafe {
            core::ptr::copy_nonoverlapping(
                code.as_ptr(),
                (self.frame + offset) as usize as *mut u8,
                code.len(),
            )
        };
    }

    /// Calls the code at `offset` through the page's mapping, or returns the exception its
    /// fetch or execution raised.
    ///
    /// # Safety
    /// The code at `offset` (stored with `store_code`) must follow the C ABI and return.
    pub unsafe fn call(&self, offset: u64) -> Result<(), Exception> {
        // SAFETY: the caller guarantees the code returns; a fetch fault is caught.
        unsafe { arch::try_call(self.address + offset) }
    }

    fn word(&self, offset: u64) -> u64 {
        assert!(offset + 8 <= PAGE_SIZE, "offset {offset} is outside the page");
        self.address + offset
    }
}

impl Default for TestPage {
    fn default() -> Self {
        TestPage::new()
    }
}

impl Drop for TestPage {
    fn drop(&mut self) {
        self.unmap();
        free_frames(self.frame, 1);
    }
}

/// One zeroed frame that may be mapped at many consecutive virtual pages (aliases) of a window
/// of its own: kvm-unit-tests' rmap_chain maps one page at every address it can, which builds
/// long reverse-map chains in a shadow-paging hypervisor. As with [`TestPage`], no Rust
/// reference ever points into the frame, so mapping and unmapping aliases is safe; every
/// alias is unmapped and the frame freed on drop.
pub struct AliasedPage {
    window: u64,
    capacity: u64,
    frame: u64,
}

impl AliasedPage {
    /// Allocates a zeroed frame and reserves a window of `capacity` virtual pages for its
    /// aliases, none mapped yet.
    ///
    /// # Panics
    /// When no frame is left, or the window would leave [`TestPage::new`]'s range.
    pub fn new(capacity: u64) -> AliasedPage {
        let frame = allocate_frame().expect("out of frames for an AliasedPage");
        // SAFETY: the frame is fresh from the allocator and identity mapped.
        unsafe { (frame as usize as *mut u8).write_bytes(0, PAGE_SIZE as usize) };
        let window = NEXT_TEST_PAGE.fetch_add(capacity * PAGE_SIZE, Ordering::Relaxed);
        assert!(
            window + capacity * PAGE_SIZE <= TEST_WINDOW_END,
            "{capacity} aliases do not fit in the test window"
        );
        AliasedPage {
            window,
            capacity,
            frame,
        }
    }

    /// How many aliases the window holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The frame (physical address, also identity mapped).
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// The virtual address of alias `index`.
    ///
    /// # Panics
    /// When `index` is not below the capacity.
    pub fn address(&self, index: u64) -> u64 {
        assert!(
            index < self.capacity,
            "alias {index} is beyond the window of {}",
            self.capacity
        );
        self.window + index * PAGE_SIZE
    }

    /// Maps alias `index` to the frame, read-write.
    pub fn map(&self, index: u64) {
        // SAFETY: the address lies in this AliasedPage's own window and the frame is its own:
        // no Rust reference points into either.
        unsafe { arch::mmu::map_page(self.address(index), self.frame, Protection::READ_WRITE) };
    }

    /// Unmaps alias `index`; accesses through it then raise page faults.
    pub fn unmap(&self, index: u64) {
        // SAFETY: as for `map`; later accesses go through fault-catching probes.
        unsafe { arch::mmu::unmap_page(self.address(index)) };
    }

    /// Reads the 64-bit word at `offset` through alias `index`, or the exception.
    pub fn try_read(&self, index: u64, offset: u64) -> Result<u64, Exception> {
        arch::try_read(self.word(index, offset))
    }

    /// Writes the 64-bit word at `offset` through alias `index`, or returns the exception.
    pub fn try_write(&self, index: u64, offset: u64, value: u64) -> Result<(), Exception> {
        // SAFETY: the address lies in this AliasedPage's window, which no Rust object occupies.
        unsafe { arch::try_write(self.word(index, offset), value) }
    }

    /// Reads the 64-bit word at `offset` of the frame through the identity map.
    pub fn read_frame(&self, offset: u64) -> u64 {
        assert!(offset + 8 <= PAGE_SIZE, "offset {offset} is outside the page");
        // SAFETY: the word lies in this AliasedPage's frame, identity mapped.
        unsafe { ((self.frame + offset) as usize as *const u64).read_volatile() }
    }

    /// Writes the 64-bit word at `offset` of the frame through the identity map.
    pub fn write_frame(&self, offset: u64, value: u64) {
        assert!(offset + 8 <= PAGE_SIZE, "offset {offset} is outside the page");
        // SAFETY: the word lies in this AliasedPage's frame, identity mapped.
        unsafe { ((self.frame + offset) as usize as *mut u64).write_volatile(value) }
    }

    fn word(&self, index: u64, offset: u64) -> u64 {
        assert!(offset + 8 <= PAGE_SIZE, "offset {offset} is outside the page");
        self.address(index) + offset
    }
}

impl Drop for AliasedPage {
    fn drop(&mut self) {
        for index in 0..self.capacity {
            self.unmap(index);
        }
        free_frames(self.frame, 1);
    }
}

/// Physically contiguous, zeroed frames for a device to read and write by DMA (and for
/// tables a device such as an IOMMU reads). No Rust reference ever points into them: they are
/// read and written only through volatile accesses, so a device may write them at any time.
/// Their frames are never returned to the allocator, so a device that still holds their
/// address can never write memory that Rust reuses.
#[derive(Debug)]
pub struct DmaBuffer {
    address: u64,
    size: u64,
}

impl DmaBuffer {
    /// `pages` fresh zeroed frames (at least one).
    ///
    /// # Panics
    /// When no such run of frames is left.
    pub fn new(pages: usize) -> DmaBuffer {
        let pages = pages.max(1);
        let address = allocate_frames(pages).expect("out of frames for a DmaBuffer");
        let size = pages as u64 * PAGE_SIZE;
        // SAFETY: the frames are fresh from the allocator and identity mapped.
        unsafe { (address as usize as *mut u8).write_bytes(0, size as usize) };
        DmaBuffer { address, size }
    }

    /// The physical address of the first byte.
    pub fn physical_address(&self) -> u64 {
        self.address
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn pointer(&self, offset: u64, width: u64) -> usize {
        assert!(
            offset.checked_add(width).is_some_and(|end| end <= self.size) && offset.is_multiple_of(width),
            "DmaBuffer access at {offset:#x} (+{width}) outside the {:#x} bytes or misaligned",
            self.size
        );
        (self.address + offset) as usize
    }

    /// Reads the byte at `offset`.
    pub fn read_u8(&self, offset: u64) -> u8 {
        // SAFETY: inside the buffer, which only volatile accesses touch.
        unsafe { (self.pointer(offset, 1) as *const u8).read_volatile() }
    }

    /// Reads the 32-bit value at `offset` (aligned).
    pub fn read_u32(&self, offset: u64) -> u32 {
        // SAFETY: inside the buffer and aligned; only volatile accesses touch it.
        unsafe { (self.pointer(offset, 4) as *const u32).read_volatile() }
    }

    /// Reads the 64-bit value at `offset` (aligned).
    pub fn read_u64(&self, offset: u64) -> u64 {
        // SAFETY: inside the buffer and aligned; only volatile accesses touch it.
        unsafe { (self.pointer(offset, 8) as *const u64).read_volatile() }
    }

    /// Writes the byte at `offset`.
    pub fn write_u8(&self, offset: u64, value: u8) {
        // SAFETY: inside the buffer, which no Rust reference points into.
        unsafe { (self.pointer(offset, 1) as *mut u8).write_volatile(value) }
    }

    /// Writes the 32-bit value at `offset` (aligned).
    pub fn write_u32(&self, offset: u64, value: u32) {
        // SAFETY: inside the buffer and aligned; no Rust reference points into it.
        unsafe { (self.pointer(offset, 4) as *mut u32).write_volatile(value) }
    }

    /// Writes the 64-bit value at `offset` (aligned).
    pub fn write_u64(&self, offset: u64, value: u64) {
        // SAFETY: inside the buffer and aligned; no Rust reference points into it.
        unsafe { (self.pointer(offset, 8) as *mut u64).write_volatile(value) }
    }

    /// Sets every byte to `value`.
    pub fn fill(&self, value: u8) {
        for offset in 0..self.size {
            self.write_u8(offset, value);
        }
    }
}
