//! x86_64 MMU: the runtime's identity page tables and the page map/unmap/protect primitives.
//!
//! The boot trampoline identity maps physical memory from 0 to 4 GiB with 2 MiB pages; the
//! runtime keeps those tables and edits them with the x86_64 crate's types. Page 0 (null)
//! and the boot stack's guard page stay unmapped. Mapping, unmapping or protecting a 4 KiB
//! page inside a 2 MiB one splits it first.

use x86_64::PhysAddr;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags};

use crate::memory::{PAGE_SIZE, Protection};

const HUGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

unsafe extern "C" {
    static __boot_stack_guard: u8;
    static __image_start: u8;
    static __image_end: u8;
}

static USER_IMAGE: spin::Once<()> = spin::Once::new();

/// Makes the image's pages (code, data, BSS, stacks) accessible to user mode, once: sets the
/// USER bit in their entries and in the tables above them. SMEP and SMAP stay off, so the
/// kernel keeps its access too.
pub(crate) fn allow_user_access_to_image() {
    USER_IMAGE.call_once(|| {
        let _guard = PAGE_TABLE_LOCK.lock();
        let user = PageTableFlags::USER_ACCESSIBLE;
        let start = &raw const __image_start as u64;
        let end = &raw const __image_end as u64;
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            let [l4, l3, l2, l1] = indices(page);
            let mut current = root();
            for index in [l4, l3, l2] {
                let entry = &mut table(current)[index];
                if entry.is_unused() {
                    break;
                }
                if !entry.flags().contains(user) {
                    // Upper entries only widen access: their leaves decide.
                    entry.set_flags(entry.flags() | user);
                }
                if entry.flags().contains(PageTableFlags::HUGE_PAGE) {
                    break;
                }
                current = entry.addr().as_u64();
                if index == l2 {
                    let leaf = &mut table(current)[l1];
                    if !leaf.is_unused() && !leaf.flags().contains(user) {
                        leaf.set_flags(leaf.flags() | user);
                    }
                }
            }
        }
        x86_64::instructions::tlb::flush_all();
    });
}

/// Serialises every change to the page tables.
static PAGE_TABLE_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Allocates a zeroed page table; returns its physical (= virtual) address.
fn allocate_table() -> u64 {
    let address = crate::memory::allocate_frame().expect("out of memory for page tables");
    // SAFETY: the frame is fresh from the frame allocator, identity mapped and page aligned.
    unsafe { (address as usize as *mut PageTable).write_bytes(0, 1) };
    address
}

/// The page table at physical `address`.
fn table(address: u64) -> &'static mut PageTable {
    // SAFETY: page tables are frames the runtime allocated from identity-mapped RAM; every
    // caller holds the page table lock (or runs before anything else exists, in `init`), and
    // keeps the reference only for the duration of one walk.
    unsafe { &mut *(address as usize as *mut PageTable) }
}

/// The physical address of the active PML4.
fn root() -> u64 {
    Cr3::read().0.start_address().as_u64()
}

fn indices(virtual_address: u64) -> [usize; 4] {
    [39, 30, 21, 12].map(|shift| ((virtual_address >> shift) & 0x1ff) as usize)
}

/// Walks to the level-1 entry of `virtual_address`, creating tables and splitting 2 MiB and
/// 1 GiB pages on the way. Returns `None` only when `create` is false and a level is absent.
fn leaf_entry(root: u64, virtual_address: u64, create: bool) -> Option<&'static mut PageTableEntry> {
    let table_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE;
    let [l4, l3, l2, l1] = indices(virtual_address);
    let mut current = root;
    for (level, index) in [(4, l4), (3, l3), (2, l2)] {
        let entry = &mut table(current)[index];
        if entry.is_unused() {
            if !create {
                return None;
            }
            entry.set_addr(PhysAddr::new(allocate_table()), table_flags);
        } else if entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            // Split: the new table maps the same range with pages one level smaller.
            let size = if level == 3 { 1u64 << 30 } else { HUGE_PAGE_SIZE };
            let child_size = size / 512;
            let base = entry.addr().as_u64();
            let mut flags = entry.flags();
            if level == 2 {
                flags.remove(PageTableFlags::HUGE_PAGE);
            }
            let next = allocate_table();
            for (child_index, child) in table(next).iter_mut().enumerate() {
                child.set_addr(PhysAddr::new(base + child_index as u64 * child_size), flags);
            }
            let upper_flags = (entry.flags() - PageTableFlags::HUGE_PAGE) | table_flags;
            entry.set_addr(PhysAddr::new(next), upper_flags);
        }
        current = entry.addr().as_u64();
    }
    Some(&mut table(current)[l1])
}

fn flush(virtual_address: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(virtual_address));
}

fn leaf_flags(protection: Protection) -> PageTableFlags {
    let mut flags = PageTableFlags::PRESENT;
    if protection.write {
        flags |= PageTableFlags::WRITABLE;
    }
    if protection.user {
        flags |= PageTableFlags::USER_ACCESSIBLE;
    }
    if !protection.execute && super::cpuid::Feature::Nx.supported() {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    flags
}

/// Takes over the boot trampoline's identity map (0..4 GiB in 2 MiB pages) and punches the
/// runtime's holes into it: page 0, so that null pointers fault, and the boot stack's guard
/// page. Walking to those pages splits their 2 MiB blocks into 4 KiB pages.
///
/// The tables are edited in place rather than rebuilt: under shadow paging (software KVM)
/// a CR3 switch throws the shadow away and every later first touch of a page traps, which
/// made a rebuild cost about 30 ms of a 250 ms boot.
pub(crate) fn init() {
    if super::cpuid::Feature::Nx.supported() {
        // SAFETY: NXE only gives meaning to bit 63 of page table entries, which the runtime
        // sets only when NX is supported.
        unsafe { Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    let _guard = PAGE_TABLE_LOCK.lock();
    for hole in [0, &raw const __boot_stack_guard as u64] {
        if let Some(entry) = leaf_entry(root(), hole, false) {
            entry.set_unused();
            flush(hole);
        }
    }
}

/// Maps the 4 KiB page at `virtual_address` to the frame at `physical_address`.
///
/// # Safety
/// Nothing may hold a reference into the page's old contents, and the new mapping must not
/// alias memory that Rust code owns, unless the caller accounts for that.
pub unsafe fn map_page(virtual_address: u64, physical_address: u64, protection: Protection) {
    let _guard = PAGE_TABLE_LOCK.lock();
    let entry = leaf_entry(root(), virtual_address, true).expect("creating tables never fails");
    entry.set_addr(PhysAddr::new(physical_address), leaf_flags(protection));
    flush(virtual_address);
}

/// Unmaps the 4 KiB page at `virtual_address`; returns the physical address it mapped.
///
/// # Safety
/// Nothing may access the page afterwards except to observe the page fault.
pub unsafe fn unmap_page(virtual_address: u64) -> Option<u64> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let entry = leaf_entry(root(), virtual_address, false)?;
    let physical = (!entry.is_unused()).then(|| entry.addr().as_u64());
    entry.set_unused();
    flush(virtual_address);
    physical
}

/// Changes the protection of the mapped 4 KiB page at `virtual_address`.
///
/// # Safety
/// Code that relies on the old permissions (writes through `&mut`, say) must not run on it.
pub unsafe fn protect_page(virtual_address: u64, protection: Protection) -> bool {
    let _guard = PAGE_TABLE_LOCK.lock();
    let Some(entry) = leaf_entry(root(), virtual_address, false) else {
        return false;
    };
    if entry.is_unused() {
        return false;
    }
    let physical = entry.addr();
    entry.set_addr(physical, leaf_flags(protection));
    flush(virtual_address);
    true
}

/// Bits 62:59 of a 4-level paging leaf entry: the page's protection key.
const KEY_SHIFT: u32 = 59;
const KEY_MASK: u64 = 0xf << KEY_SHIFT;

/// Sets bits 62:59, the protection key, of the mapped 4 KiB page at `virtual_address` to
/// `key` (0..=15) and invalidates its TLB entry; returns false when the page is not mapped.
/// The key counts only while CR4.PKE (user pages) or CR4.PKS (supervisor pages) is set;
/// [`map_page`] and [`protect_page`] write entries with key 0.
///
/// # Safety
/// The runtime's pages must keep key 0, whose rights in PKRU and IA32_PKRS the runtime keeps
/// open: a page the runtime uses with another key could be locked out by a rights register
/// the tests may change.
///
/// # Panics
/// When `key` is above 15.
pub unsafe fn set_page_key(virtual_address: u64, key: u8) -> bool {
    assert!(key <= 15, "protection key {key} is not in 0..=15");
    let _guard = PAGE_TABLE_LOCK.lock();
    let Some(entry) = leaf_entry(root(), virtual_address, false) else {
        return false;
    };
    if entry.is_unused() {
        return false;
    }
    let flags =
        PageTableFlags::from_bits_retain((entry.flags().bits() & !KEY_MASK) | u64::from(key) << KEY_SHIFT);
    let physical = entry.addr();
    entry.set_addr(physical, flags);
    flush(virtual_address);
    true
}

/// The protection key (bits 62:59 of the leaf entry, 4 KiB or larger) of the page that maps
/// `virtual_address`, if it is mapped. Only reads the tables, as [`translate`] does.
pub fn page_key(virtual_address: u64) -> Option<u8> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let [l4, l3, l2, l1] = indices(virtual_address);
    let mut current = root();
    for (level, index) in [(4, l4), (3, l3), (2, l2), (1, l1)] {
        let entry = &table(current)[index];
        if entry.is_unused() || !entry.flags().contains(PageTableFlags::PRESENT) {
            return None;
        }
        if level == 1 || entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            return Some(((entry.flags().bits() & KEY_MASK) >> KEY_SHIFT) as u8);
        }
        current = entry.addr().as_u64();
    }
    None
}

/// Whether the page that maps `virtual_address` is uncached (its leaf entry, 4 KiB or larger,
/// has PCD and PWT set, as [`map_device`] makes it), if it is mapped.
pub fn is_uncached(virtual_address: u64) -> Option<bool> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let [l4, l3, l2, l1] = indices(virtual_address);
    let mut current = root();
    for (level, index) in [(4, l4), (3, l3), (2, l2), (1, l1)] {
        let entry = &table(current)[index];
        if entry.is_unused() || !entry.flags().contains(PageTableFlags::PRESENT) {
            return None;
        }
        if level == 1 || entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            return Some(
                entry
                    .flags()
                    .contains(PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH),
            );
        }
        current = entry.addr().as_u64();
    }
    None
}

/// The physical address `virtual_address` translates to, if it is mapped.
pub fn translate(virtual_address: u64) -> Option<u64> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let [l4, l3, l2, l1] = indices(virtual_address);
    let mut current = root();
    for (level, index) in [(4, l4), (3, l3), (2, l2), (1, l1)] {
        let entry = &table(current)[index];
        if entry.is_unused() || !entry.flags().contains(PageTableFlags::PRESENT) {
            return None;
        }
        if level == 1 || entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            let size = 1u64 << (12 + 9 * (level - 1));
            return Some(entry.addr().as_u64() + (virtual_address & (size - 1)));
        }
        current = entry.addr().as_u64();
    }
    None
}

/// RAM as the boot memory map gave it (`(start, end)` pairs), which [`map_device`] refuses.
static RAM: spin::Once<heapless::Vec<(u64, u64), { super::start_info::MAX_MEMORY_MAP_ENTRIES }>> =
    spin::Once::new();

/// Records the RAM ranges of the boot memory map, once, for [`map_device`].
pub(crate) fn set_ram(ranges: impl Iterator<Item = (u64, u64)>) {
    RAM.call_once(|| ranges.collect());
}

/// The first MiB holds firmware data (BIOS areas, ACPI pointers, the PVH structures) that the
/// runtime reads through the write-back identity map: never a device region.
const FIRMWARE_END: u64 = 1 << 20;

/// The device pages the runtime drives itself: the local APIC and the I/O APIC.
const RUNTIME_DEVICES: [(u64, u64); 2] = [(super::apic::BASE, 0x1000), (super::ioapic::BASE, 0x1000)];

/// The first physical address beyond the CPU's range: CPUID.80000008H:EAX[7:0] bits (36 when
/// the leaf is absent), capped at 47 bits, which the identity map can reach with canonical
/// lower-half addresses.
pub fn physical_address_limit() -> u64 {
    let bits = if super::cpuid::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        super::cpuid::cpuid(0x8000_0008, 0).eax & 0xff
    } else {
        36
    };
    1u64 << bits.clamp(32, 47)
}

/// The page attributes of a device page: present, writable, uncached (PCD and PWT select the
/// PAT entry 3, UC, under the reset PAT), never executable.
fn device_flags() -> PageTableFlags {
    let mut flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::NO_CACHE
        | PageTableFlags::WRITE_THROUGH;
    if super::cpuid::Feature::Nx.supported() {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    flags
}

/// Maps the device region `[physical, physical + size)` uncached, identity as everything else
/// (below 4 GiB the boot map's write-back pages become uncached; above 4 GiB new tables are
/// made), up to the CPU's physical address range. Refuses page 0, the first MiB (firmware
/// data), RAM and the local and I/O APIC pages the runtime drives.
pub fn map_device(physical: u64, size: u64) -> Result<crate::mmio::DeviceWindow, crate::mmio::MapError> {
    use crate::mmio::MapError;
    let end = physical
        .checked_add(size)
        .filter(|_| size > 0)
        .ok_or(MapError::Empty)?;
    if physical < PAGE_SIZE {
        return Err(MapError::NullPage);
    }
    let limit = physical_address_limit();
    if end > limit {
        return Err(MapError::BeyondAddressRange { limit });
    }
    let overlaps = |&(start, region_end): &(u64, u64)| physical < region_end && start < end;
    if physical < FIRMWARE_END || RAM.get().is_some_and(|ram| ram.iter().any(overlaps)) {
        return Err(MapError::Ram);
    }
    if RUNTIME_DEVICES
        .iter()
        .map(|&(base, length)| (base, base + length))
        .any(|region| overlaps(&region))
    {
        return Err(MapError::RuntimeDevice);
    }
    let _guard = PAGE_TABLE_LOCK.lock();
    let mut address = physical & !(PAGE_SIZE - 1);
    while address < end {
        address += map_device_at(address, end);
    }
    // SAFETY: every page of [physical, end) is now identity mapped uncached, and stays so: the
    // runtime changes mappings only through unsafe functions whose callers answer for the
    // pages they touch. The region is neither RAM nor a device the runtime drives.
    Ok(unsafe { crate::mmio::DeviceWindow::new(physical, size) })
}

/// Maps device memory at `address` (page aligned, below `end`) with the largest page that
/// fits (a whole 2 MiB page when the region covers it, else 4 KiB pages, splitting on the
/// way); returns how many bytes from `address` on are now uncached. Holds the lock.
fn map_device_at(address: u64, end: u64) -> u64 {
    let [l4, l3, l2, _] = indices(address);
    let table_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    let mut current = root();
    let mut through_tables = true;
    for index in [l4, l3] {
        let entry = &mut table(current)[index];
        if entry.is_unused() {
            entry.set_addr(PhysAddr::new(allocate_table()), table_flags);
        } else if entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            // A 1 GiB page: `leaf_entry` below splits it.
            through_tables = false;
            break;
        }
        current = entry.addr().as_u64();
    }
    let covers_block = address.is_multiple_of(HUGE_PAGE_SIZE) && end - address >= HUGE_PAGE_SIZE;
    let level2 = &mut table(current)[l2];
    if through_tables
        && covers_block
        && (level2.is_unused() || level2.flags().contains(PageTableFlags::HUGE_PAGE))
    {
        level2.set_addr(PhysAddr::new(address), device_flags() | PageTableFlags::HUGE_PAGE);
        for page in (address..address + HUGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
            flush(page);
        }
        return HUGE_PAGE_SIZE;
    }
    let entry = leaf_entry(root(), address, true).expect("creating tables never fails");
    entry.set_addr(PhysAddr::new(address), device_flags());
    flush(address);
    PAGE_SIZE
}
