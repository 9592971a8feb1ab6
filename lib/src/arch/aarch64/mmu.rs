//! aarch64 MMU: the runtime's identity map and the page map/unmap/protect primitives.
//!
//! The boot assembly maps 0..1 GiB as device memory and 1..4 GiB as normal memory with 1 GiB
//! blocks (4 KiB granule, 48-bit VA, TTBR0 only). [`init`] then gives the image's pages their
//! rights: the code read-only and executable at EL1 and EL0, the data read-write at both and
//! executable nowhere (so that [`run_in_user_mode`](super::run_in_user_mode) closures can run),
//! and unmaps page 0 so that null pointers fault, and the lowest page of every CPU's stacks
//! (guard pages, see exceptions.rs).
//!
//! Mapping a 4 KiB page inside a block splits the block first. Replacing a live block with a
//! table is a change of block size, which the architecture allows only through
//! break-before-make (invalid entry, TLB invalidation, then the table), or the TLB may hold
//! both and conflict. A break makes the whole block fault for a moment, so [`init`] splits, on
//! the boot CPU alone, every block that holds memory in use (the image, all RAM, page 0's
//! device block) down to 4 KiB pages, swapping each entry with the MMU briefly off (nothing
//! translates during the swap; the entry's cache line is cleaned and invalidated around the
//! uncached store). Later splits, of blocks outside RAM, use break-before-make.
//!
//! Devices outside the boot map's device gigabyte (PCIe's high ECAM and 64-bit window on
//! `virt`, hundreds of GiB up) are mapped by [`map_device`], identity as everything else, up to
//! the CPU's physical address range (48 bits at most, TCR_EL1.IPS).

use core::arch::{asm, global_asm};

use super::boot::{ATTRIBUTE_DEVICE, ATTRIBUTE_NORMAL, ATTRIBUTE_TAGGED_NORMAL};
use crate::memory::Protection;
use crate::mmio::{DeviceWindow, MapError};

const VALID: u64 = 1 << 0;
/// Table (levels 0-2) or page (level 3), as opposed to block.
const TABLE_OR_PAGE: u64 = 1 << 1;
const ATTRIBUTE_SHIFT: u64 = 2;
/// AP[1]: EL0 may access.
const AP_USER: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_READ_ONLY: u64 = 1 << 7;
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
const ENTRIES: usize = 512;
const BLOCK_2M: u64 = 2 << 20;

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __image_end: u8;
}

/// Serialises every change to the page tables.
static PAGE_TABLE_LOCK: spin::Mutex<()> = spin::Mutex::new(());

type Table = [u64; ENTRIES];

fn allocate_table() -> u64 {
    let address = crate::memory::allocate_frame().expect("out of memory for page tables");
    // SAFETY: the frame is fresh from the frame allocator, identity mapped and page aligned.
    unsafe { (address as usize as *mut Table).write_bytes(0, 1) };
    address
}

/// The table at physical `address`.
fn table(address: u64) -> &'static mut Table {
    // SAFETY: tables are the boot tables or frames the runtime allocated, identity mapped;
    // callers hold the page table lock (or run before other CPUs exist) and keep the
    // reference for one walk only.
    unsafe { &mut *(address as usize as *mut Table) }
}

fn root() -> u64 {
    use aarch64_cpu::registers::{Readable, TTBR0_EL1};
    TTBR0_EL1.get() & ADDRESS_MASK
}

fn indices(virtual_address: u64) -> [usize; 4] {
    [39, 30, 21, 12].map(|shift| ((virtual_address >> shift) & 0x1ff) as usize)
}

/// How a block is replaced by a table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Break-before-make: the block's range faults between the break and the make.
    BreakBeforeMake,
    /// With the MMU off on this CPU, the only one running (see [`init`]).
    MmuOff,
}

/// Walks to the level-3 entry of `virtual_address`, creating tables and splitting blocks on
/// the way. Returns `None` only when `create` is false and a level is absent.
fn leaf_entry(virtual_address: u64, create: bool) -> Option<&'static mut u64> {
    walk(virtual_address, create, Split::BreakBeforeMake)
}

/// [`leaf_entry`], splitting blocks the `split` way.
fn walk(virtual_address: u64, create: bool, split: Split) -> Option<&'static mut u64> {
    let [l0, l1, l2, l3] = indices(virtual_address);
    let mut current = root();
    for (level, index) in [(0u32, l0), (1, l1), (2, l2)] {
        let entry = &mut table(current)[index];
        if *entry & VALID == 0 {
            if !create {
                return None;
            }
            *entry = allocate_table() | VALID | TABLE_OR_PAGE;
        } else if *entry & TABLE_OR_PAGE == 0 {
            split_block(entry, level, virtual_address, split);
        }
        current = *entry & ADDRESS_MASK;
    }
    Some(&mut table(current)[l3])
}

/// Replaces the level-`level` block `entry` (which maps `virtual_address`) by a table that
/// maps the same range with the same attributes, in entries one level smaller.
fn split_block(entry: &mut u64, level: u32, virtual_address: u64, split: Split) {
    let child_size = 1u64 << (12 + 9 * (2 - level));
    let attributes = *entry & !ADDRESS_MASK & !(VALID | TABLE_OR_PAGE);
    let child_type = if level == 2 { VALID | TABLE_OR_PAGE } else { VALID };
    let base = *entry & ADDRESS_MASK;
    let next = allocate_table();
    for (child_index, child) in table(next).iter_mut().enumerate() {
        *child = (base + child_index as u64 * child_size) | attributes | child_type;
    }
    barrier_after_table_write();
    let block_address = virtual_address & !((child_size << 9) - 1);
    replace_block(entry, next | VALID | TABLE_OR_PAGE, block_address, split);
}

/// Replaces the block descriptor `entry` (mapping `block_address`) by `table`, see [`Split`].
fn replace_block(entry: &mut u64, table: u64, block_address: u64, split: Split) {
    match split {
        Split::BreakBeforeMake => {
            *entry = 0;
            flush(block_address);
            *entry = table;
            barrier_after_table_write();
        }
        Split::MmuOff => {
            // SAFETY: only the boot CPU runs (init); `entry` is a live descriptor, written with
            // the MMU off by assembly that touches no other memory; the table it installs maps
            // the same addresses with the same attributes, so nothing Rust sees changes.
            unsafe { vmunit_replace_entry_mmu_off(&raw mut *entry, table) };
        }
    }
}

global_asm!(
    r#"
    .section .text.vmunit_replace_entry_mmu_off, "ax"
    /* x0: a page table entry's address; x1: its new value. Writes it with the MMU off, IRQs
     * masked, with no stack use: nothing is translated while the descriptor changes. */
    .global vmunit_replace_entry_mmu_off
    vmunit_replace_entry_mmu_off:
        mrs x4, daif
        msr daifset, #0xf
        dc civac, x0                    /* the line's latest data to memory, no cached copy */
        dsb sy
        mrs x2, sctlr_el1
        bic x3, x2, #1                  /* SCTLR_EL1.M */
        msr sctlr_el1, x3
        isb
        str x1, [x0]                    /* uncached: straight to memory */
        dsb sy
        dc ivac, x0                     /* drop a copy speculation may have refilled */
        dsb sy
        tlbi vmalle1
        dsb nsh
        isb
        msr sctlr_el1, x2
        isb
        msr daif, x4
        ret
    "#
);

unsafe extern "C" {
    /// See the assembly above.
    fn vmunit_replace_entry_mmu_off(entry: *mut u64, value: u64);
}

fn barrier_after_table_write() {
    // SAFETY: a barrier: makes table writes visible to the walker; touches no Rust memory.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

fn flush(virtual_address: u64) {
    // SAFETY: orders the table write before the TLB invalidation of this one page on every
    // CPU, then waits for it; no Rust-visible memory changes.
    unsafe {
        asm!("dsb ishst", "tlbi vaae1is, {page}", "dsb ish", "isb",
             page = in(reg) (virtual_address >> 12) & 0xfff_ffff_ffff, options(nostack, preserves_flags))
    };
}

/// The page descriptor bits (without address) of normal memory with `protection`.
fn leaf_bits(protection: Protection) -> u64 {
    leaf_bits_with(ATTRIBUTE_NORMAL, protection)
}

/// The page descriptor bits (without address) of the MAIR index `attribute` with `protection`.
fn leaf_bits_with(attribute: u64, protection: Protection) -> u64 {
    let mut bits = VALID | TABLE_OR_PAGE | attribute << ATTRIBUTE_SHIFT | INNER_SHAREABLE | ACCESS_FLAG;
    if protection.user {
        bits |= AP_USER;
    }
    if !protection.write {
        bits |= AP_READ_ONLY;
    }
    // A page EL0 may write is never executable at EL1 (the architecture implies PXN too).
    if !protection.execute || (protection.user && protection.write) {
        bits |= PXN;
    }
    if !(protection.execute && protection.user) {
        bits |= UXN;
    }
    bits
}

/// Whether a descriptor maps device memory.
pub fn is_device(descriptor: u64) -> bool {
    (descriptor >> ATTRIBUTE_SHIFT) & 7 == ATTRIBUTE_DEVICE
}

/// The memory attribute a descriptor selects: the MAIR_EL1 byte its AttrIndx (bits 4:2)
/// names (0xff normal write-back, 0xf0 Tagged Normal, 0x00 Device-nGnRnE here).
pub fn memory_attribute(descriptor: u64) -> u8 {
    use aarch64_cpu::registers::{MAIR_EL1, Readable};
    let index = (descriptor >> ATTRIBUTE_SHIFT) & 7;
    (MAIR_EL1.get() >> (8 * index)) as u8
}

/// Gives the image's pages their rights (see the module documentation).
pub(crate) fn init() {
    let _guard = PAGE_TABLE_LOCK.lock();
    let start = &raw const __image_start as u64;
    let text_end = &raw const __text_end as u64;
    let end = &raw const __image_end as u64;
    let code = Protection {
        write: false,
        execute: true,
        user: true,
    };
    let data = Protection {
        write: true,
        execute: false,
        user: true,
    };
    let live = |address| walk(address, true, Split::MmuOff).expect("creating tables never fails");
    // All mapped RAM to 4 KiB pages, 2 MiB at a time (a walk splits one 2 MiB block); RAM
    // that the boot tables leave unmapped stays so.
    for &(ram_start, ram_end) in super::device_tree::platform().memory() {
        let mut address = ram_start & !(BLOCK_2M - 1);
        while address < ram_end {
            walk(address, false, Split::MmuOff);
            address += BLOCK_2M;
        }
    }
    for page in (start..end).step_by(4096) {
        let protection = if page < text_end { code } else { data };
        *live(page) = page | leaf_bits(protection);
    }
    // Page 0 (flash on `virt`, which the runtime never uses) stays unmapped: null pointers fault.
    *live(0) = 0;
    // The lowest page of every CPU's kernel and exception stack: overflows fault there.
    for guard in super::exceptions::stack_guard_pages() {
        *live(guard) = 0;
    }
    // SAFETY: invalidates every TLB entry of this CPU (the only one running), after the
    // table writes; no Rust-visible memory changes.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Maps the 4 KiB page at `virtual_address` to the frame at `physical_address`.
///
/// # Safety
/// Nothing may hold a reference into the page's old contents, and the new mapping must not
/// alias memory that Rust code owns, unless the caller accounts for that.
pub unsafe fn map_page(virtual_address: u64, physical_address: u64, protection: Protection) {
    let _guard = PAGE_TABLE_LOCK.lock();
    let entry = leaf_entry(virtual_address, true).expect("creating tables never fails");
    *entry = (physical_address & ADDRESS_MASK) | leaf_bits(protection);
    flush(virtual_address);
}

/// Maps the 4 KiB page at `virtual_address` to the frame at `physical_address` as Tagged Normal
/// memory (MAIR 0xF0): with tag checking on, its accesses are checked against the frame's
/// allocation tags (see `mte`).
///
/// # Safety
/// As for [`map_page`]; moreover no Rust object may live in the page, since with tag checking
/// on an access through an untagged pointer faults (or sets TFSR_EL1); the CPU must have
/// FEAT_MTE2, without which the attribute is reserved.
pub unsafe fn map_tagged_page(virtual_address: u64, physical_address: u64, protection: Protection) {
    let _guard = PAGE_TABLE_LOCK.lock();
    let entry = leaf_entry(virtual_address, true).expect("creating tables never fails");
    *entry = (physical_address & ADDRESS_MASK) | leaf_bits_with(ATTRIBUTE_TAGGED_NORMAL, protection);
    flush(virtual_address);
}

/// Unmaps the 4 KiB page at `virtual_address`; returns the physical address it mapped.
///
/// # Safety
/// Nothing may access the page afterwards except to observe the fault.
pub unsafe fn unmap_page(virtual_address: u64) -> Option<u64> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let entry = leaf_entry(virtual_address, false)?;
    let physical = (*entry & VALID != 0).then_some(*entry & ADDRESS_MASK);
    *entry = 0;
    flush(virtual_address);
    physical
}

/// Changes the protection of the mapped 4 KiB page at `virtual_address`.
///
/// # Safety
/// Code that relies on the old permissions (writes through `&mut`, say) must not run on it.
pub unsafe fn protect_page(virtual_address: u64, protection: Protection) -> bool {
    let _guard = PAGE_TABLE_LOCK.lock();
    let Some(entry) = leaf_entry(virtual_address, false) else {
        return false;
    };
    if *entry & VALID == 0 {
        return false;
    }
    *entry = (*entry & ADDRESS_MASK) | leaf_bits(protection);
    flush(virtual_address);
    true
}

/// The descriptor that maps `virtual_address` and its level (0..=3), if it is mapped.
pub fn descriptor(virtual_address: u64) -> Option<(u64, u32)> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let mut current = root();
    for (level, index) in indices(virtual_address).into_iter().enumerate() {
        let entry = table(current)[index];
        if entry & VALID == 0 {
            return None;
        }
        if level == 3 || entry & TABLE_OR_PAGE == 0 {
            return Some((entry, level as u32));
        }
        current = entry & ADDRESS_MASK;
    }
    None
}

/// The physical address `virtual_address` translates to, if it is mapped.
pub fn translate(virtual_address: u64) -> Option<u64> {
    let (entry, level) = descriptor(virtual_address)?;
    let size = 1u64 << (12 + 9 * (3 - level));
    Some((entry & ADDRESS_MASK & !(size - 1)) + (virtual_address & (size - 1)))
}

/// The bits (without address) of an EL1-only, never-executable Device-nGnRnE block descriptor;
/// a page descriptor adds [`TABLE_OR_PAGE`].
const DEVICE_BLOCK: u64 = VALID | ATTRIBUTE_DEVICE << ATTRIBUTE_SHIFT | ACCESS_FLAG | PXN | UXN;

/// The first physical address the runtime's MMU cannot reach: the CPU's PARange, capped at the
/// 48 bits that TCR_EL1.IPS and the 48-bit identity map use (see boot.rs).
pub fn physical_address_limit() -> u64 {
    use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable};
    let bits = match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    };
    1 << bits
}

/// Maps `size` bytes of device registers at `physical` as Device-nGnRnE memory, EL1 only and
/// never executable, at the same virtual address (the identity map reaches the whole physical
/// address range, above 4 GiB too: PCIe's high ECAM and 64-bit MMIO window on QEMU `virt`),
/// and returns the window to access them through.
///
/// Unmapped parts get the largest blocks that fit (1 GiB, 2 MiB, then 4 KiB pages); parts the
/// boot map already maps as device memory are kept; parts it maps as normal memory (the
/// 1..4 GiB blocks beyond RAM) are remapped break-before-make. Refuses RAM, page 0 (kept
/// unmapped for null pointers) and the devices the runtime drives (the UART, the GIC), see
/// [`MapError`].
pub fn map_device(physical: u64, size: u64) -> Result<DeviceWindow, MapError> {
    let end = physical
        .checked_add(size)
        .filter(|_| size > 0)
        .ok_or(MapError::Empty)?;
    if physical < PAGE {
        return Err(MapError::NullPage);
    }
    let limit = physical_address_limit();
    if end > limit {
        return Err(MapError::BeyondAddressRange { limit });
    }
    let overlaps = |(start, length): (u64, u64)| physical < start.saturating_add(length) && start < end;
    let platform = super::device_tree::platform();
    if platform
        .memory()
        .iter()
        .any(|&(start, ram_end)| overlaps((start, ram_end - start)))
    {
        return Err(MapError::Ram);
    }
    let uart = platform.uart.map(|base| (base, 0x1000));
    let gic = platform.gic.into_iter().flat_map(|gic| {
        let distributor_size = if gic.version == 3 { 0x1_0000 } else { 0x1000 };
        [
            (gic.distributor, distributor_size),
            (gic.redistributor, gic.redistributor_size),
        ]
    });
    if uart.into_iter().chain(gic).any(overlaps) {
        return Err(MapError::RuntimeDevice);
    }
    let _guard = PAGE_TABLE_LOCK.lock();
    let mut address = physical & !(PAGE - 1);
    while address < end {
        address += map_device_at(address, end);
    }
    // SAFETY: every page of [physical, end) is now identity mapped as device memory, and
    // stays so: the runtime changes mappings only through unsafe functions whose callers
    // answer for the pages they touch. The region is neither RAM nor a runtime device.
    Ok(unsafe { DeviceWindow::new(physical, size) })
}

const PAGE: u64 = 4096;

/// Maps device memory at `address` (page aligned, below `end`) on the way to `end`, with the
/// largest block that fits; returns how many bytes from `address` on are now device memory.
/// The caller holds the page table lock.
fn map_device_at(address: u64, end: u64) -> u64 {
    let [l0, l1, l2, l3] = indices(address);
    let mut current = root();
    for (level, index) in [(0u32, l0), (1, l1), (2, l2)] {
        let entry = &mut table(current)[index];
        let size = 1u64 << (12 + 9 * (3 - level));
        let offset = address & (size - 1);
        if *entry & VALID == 0 {
            if level > 0 && offset == 0 && end - address >= size {
                // An invalid entry has no TLB entries to invalidate: the block is made directly.
                *entry = address | DEVICE_BLOCK;
                barrier_after_table_write();
                return size;
            }
            *entry = allocate_table() | VALID | TABLE_OR_PAGE;
            barrier_after_table_write();
        } else if *entry & TABLE_OR_PAGE == 0 {
            if is_device(*entry) && *entry & ADDRESS_MASK == address - offset {
                return size - offset;
            }
            // A normal-memory block: init split every block that holds RAM, so this one holds
            // none and may fault for a moment.
            split_block(entry, level, address, Split::BreakBeforeMake);
        }
        current = *entry & ADDRESS_MASK;
    }
    let entry = &mut table(current)[l3];
    let wanted = address | DEVICE_BLOCK | TABLE_OR_PAGE;
    if *entry != wanted {
        if *entry & VALID != 0 {
            // A change of memory type: break before make.
            *entry = 0;
            flush(address);
        }
        *entry = wanted;
        flush(address);
    }
    PAGE
}

/// A page mapped readable and executable at EL1 onto a physical page with nothing behind it:
/// the first page past the end of the highest RAM range, kvm-unit-tests' selftest guess (RAM
/// could have been larger there, so on `virt` no device sits there). Fetches and loads there
/// raise a synchronous external abort; no code can run there.
pub struct UnbackedPage {
    page: crate::memory::TestPage,
    physical: u64,
}

impl UnbackedPage {
    /// Maps a fresh test page's address onto the page past the end of RAM; `None` when the
    /// device tree names a device (UART, fw_cfg) at or above that address.
    pub fn new() -> Option<UnbackedPage> {
        let platform = super::device_tree::platform();
        let end = platform.memory().iter().map(|&(_, end)| end).max()?;
        let physical = (end + 4095) & !4095;
        if [platform.uart, platform.fw_cfg]
            .into_iter()
            .flatten()
            .any(|device| device >= physical)
        {
            return None;
        }
        let page = crate::memory::TestPage::new();
        // SAFETY: the virtual page is the test page's own (no reference points into it), and
        // the physical page is past RAM, where no Rust-owned memory lives.
        unsafe { map_page(page.address(), physical, Protection::READ_EXECUTE) };
        Some(UnbackedPage { page, physical })
    }

    /// The page's virtual address.
    pub fn address(&self) -> u64 {
        self.page.address()
    }

    /// The physical address it maps, past the end of RAM.
    pub fn physical(&self) -> u64 {
        self.physical
    }
}
