//! x86_64 MMU: the runtime's identity page tables and the page map/unmap/protect primitives.
//!
//! The boot trampoline identity maps physical memory from 0 to 4 GiB with 2 MiB pages; the
//! runtime keeps those tables and edits them with the x86_64 crate's types. Page 0 (null)
//! and the boot stack's guard page stay unmapped. Mapping, unmapping or protecting a 4 KiB
//! page inside a 2 MiB one splits it first. A test can switch a CPU to 5-level paging
//! ([`enable_five_level_paging`]); the walks follow CR4.LA57 ([`paging_levels`]).

use x86_64::PhysAddr;
use x86_64::registers::control::{Cr3, Cr4Flags};
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
            let mut current = root();
            for (level, index) in indices(page) {
                let entry = &mut table(current)[index];
                if entry.is_unused() {
                    break;
                }
                if !entry.flags().contains(user) {
                    // Upper entries only widen access: their leaves decide.
                    entry.set_flags(entry.flags() | user);
                }
                if level == 1 || entry.flags().contains(PageTableFlags::HUGE_PAGE) {
                    break;
                }
                current = entry.addr().as_u64();
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

/// The physical address of the active root table: the PML5 with 5-level paging, else the PML4.
fn root() -> u64 {
    Cr3::read().0.start_address().as_u64()
}

/// The number of paging levels this CPU walks: 5 with CR4.LA57 (57-bit linear addresses, a
/// PML5 at the root), else 4 (48-bit linear addresses, a PML4 at the root). The runtime boots
/// with 4; [`enable_five_level_paging`] switches to 5.
pub fn paging_levels() -> u32 {
    if super::control::read_cr4() & Cr4Flags::L5_PAGING.bits() != 0 {
        5
    } else {
        4
    }
}

/// The bits of a linear address that paging translates: 57 with 5-level paging, else 48.
pub fn linear_address_bits() -> u32 {
    12 + 9 * paging_levels()
}

/// The table index of `virtual_address` at each level, from the root's level down to 1.
fn indices(virtual_address: u64) -> impl Iterator<Item = (u32, usize)> {
    (1..=paging_levels()).rev().map(move |level| {
        (
            level,
            ((virtual_address >> (12 + 9 * (level - 1))) & 0x1ff) as usize,
        )
    })
}

/// Walks to the level-1 entry of `virtual_address`, creating tables and splitting 2 MiB and
/// 1 GiB pages on the way. Returns `None` only when `create` is false and a level is absent.
fn leaf_entry(root: u64, virtual_address: u64, create: bool) -> Option<&'static mut PageTableEntry> {
    let table_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE;
    let mut current = root;
    for (level, index) in indices(virtual_address) {
        if level == 1 {
            return Some(&mut table(current)[index]);
        }
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
    unreachable!("every walk ends at level 1")
}

fn flush(virtual_address: u64) {
    // Raw INVLPG rather than the x86_64 crate's `flush`: its `VirtAddr` refuses addresses
    // that are not 48-bit canonical, which 5-level paging maps.
    // SAFETY: INVLPG only drops TLB entries; it never faults, whatever the address.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) virtual_address, options(nostack, preserves_flags)) };
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

/// Maps `page` as a CET shadow-stack page: present, user, read-only and dirty (with CR4.CET,
/// the "impossible" R/W=0, D=1 combination that makes a page a shadow stack, SDM Vol. 1,
/// section 18.2; without it, an ordinary read-only page), never executable.
/// [`TestPage::map`](crate::memory::TestPage::map) maps it as an ordinary page again.
pub fn map_shadow_stack(page: &crate::memory::TestPage) {
    let _guard = PAGE_TABLE_LOCK.lock();
    let entry = leaf_entry(root(), page.address(), true).expect("creating tables never fails");
    let mut flags = PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE | PageTableFlags::DIRTY;
    if super::cpuid::Feature::Nx.supported() {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    // The page's address belongs to the TestPage alone and no Rust reference points into it,
    // as for TestPage::map.
    entry.set_addr(PhysAddr::new(page.frame()), flags);
    flush(page.address());
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

/// The leaf entry (4 KiB or larger) that maps `virtual_address` and its level (1 for a 4 KiB
/// page, 2 for 2 MiB, 3 for 1 GiB), if it is mapped. Only reads the tables: no split.
fn leaf(virtual_address: u64) -> Option<(PageTableEntry, u32)> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let mut current = root();
    for (level, index) in indices(virtual_address) {
        let entry = &table(current)[index];
        if entry.is_unused() || !entry.flags().contains(PageTableFlags::PRESENT) {
            return None;
        }
        if level == 1 || entry.flags().contains(PageTableFlags::HUGE_PAGE) {
            return Some((entry.clone(), level));
        }
        current = entry.addr().as_u64();
    }
    None
}

/// The protection key (bits 62:59 of the leaf entry, 4 KiB or larger) of the page that maps
/// `virtual_address`, if it is mapped. Only reads the tables, as [`translate`] does.
pub fn page_key(virtual_address: u64) -> Option<u8> {
    leaf(virtual_address).map(|(entry, _)| ((entry.flags().bits() & KEY_MASK) >> KEY_SHIFT) as u8)
}

/// Whether the page that maps `virtual_address` is uncached (its leaf entry, 4 KiB or larger,
/// has PCD and PWT set, as [`map_device`] makes it), if it is mapped.
pub fn is_uncached(virtual_address: u64) -> Option<bool> {
    leaf(virtual_address).map(|(entry, _)| {
        entry
            .flags()
            .contains(PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH)
    })
}

/// The physical address `virtual_address` translates to, if it is mapped.
pub fn translate(virtual_address: u64) -> Option<u64> {
    leaf(virtual_address).map(|(entry, level)| {
        let size = 1u64 << (12 + 9 * (level - 1));
        entry.addr().as_u64() + (virtual_address & (size - 1))
    })
}

/// The physical addresses of the page tables a walk of `virtual_address` reads, from the root
/// down to the table that holds its leaf entry (or the last present one).
pub fn walk_tables(virtual_address: u64) -> heapless::Vec<u64, 5> {
    let _guard = PAGE_TABLE_LOCK.lock();
    let mut tables = heapless::Vec::new();
    let mut current = root();
    for (level, index) in indices(virtual_address) {
        // At most five levels: the push cannot fail.
        let _ = tables.push(current);
        let entry = &table(current)[index];
        if level == 1
            || entry.is_unused()
            || !entry.flags().contains(PageTableFlags::PRESENT)
            || entry.flags().contains(PageTableFlags::HUGE_PAGE)
        {
            break;
        }
        current = entry.addr().as_u64();
    }
    tables
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
    let table_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    let mut current = root();
    let mut through_tables = true;
    let mut l2 = 0;
    for (level, index) in indices(address) {
        if level == 2 {
            l2 = index;
            break;
        }
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

/// Why [`enable_five_level_paging`] left 4-level paging on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiveLevelError {
    /// CPUID.7.0:ECX[16] (LA57) is clear: CR4.LA57 cannot be set.
    NotSupported,
    /// CR4.PCIDE is set: clearing CR0.PG, which the switch must do, would raise #GP.
    PcidEnabled,
}

/// Switches this CPU to 5-level paging (CR4.LA57), as kvm-unit-tests' `setup_5level_page_table`
/// does: CR4.LA57 can change only while paging is off, so the switch leaves long mode for a
/// moment. A new PML5 takes the place of the PML4 in CR3: its entry 0 points at the PML4 (and
/// entry 511 too when the PML4 maps anything in the upper half), so every 48-bit canonical
/// address translates as before. The rest of the 57-bit space starts unmapped; [`map_page`]
/// and the other primitives walk five levels from then on. Returns at once when 5-level
/// paging is already on. Other CPUs keep 4-level paging on the same PML4.
///
/// The switch runs with interrupts off on a temporary GDT with a 32-bit code segment: a far
/// return into 32-bit code, CR0.PG off (EFER.LMA clears), CR3 to the PML5, CR4.LA57 on, CR0.PG
/// on (EFER.LMA sets again), a far jump back to 64-bit code, and the runtime's GDT again.
///
/// # Safety
/// No NMI (or machine check) may reach this CPU during the call: between clearing and setting
/// CR0.PG the CPU is in 32-bit protected mode, where the 64-bit IDT means nothing. Nothing in
/// the runtime sends NMIs; a test that does must not call this meanwhile. The stack must lie
/// below 4 GiB (every stack the runtime hands out does).
pub unsafe fn enable_five_level_paging() -> Result<(), FiveLevelError> {
    if paging_levels() == 5 {
        return Ok(());
    }
    if !super::cpuid::Feature::La57.supported() {
        return Err(FiveLevelError::NotSupported);
    }
    if super::control::read_cr4() & Cr4Flags::PCID.bits() != 0 {
        return Err(FiveLevelError::PcidEnabled);
    }
    let _guard = PAGE_TABLE_LOCK.lock();
    let pml4 = root();
    let pml5 = allocate_table();
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE;
    table(pml5)[0].set_addr(PhysAddr::new(pml4), flags);
    if table(pml4).iter().skip(256).any(|entry| !entry.is_unused()) {
        table(pml5)[511].set_addr(PhysAddr::new(pml4), flags);
    }
    assert!(
        pml5 < 1 << 32,
        "the PML5 must lie below 4 GiB for 32-bit MOV to CR3"
    );
    super::interrupts::without_interrupts(|| {
        // SAFETY: the PML5 maps every address the runtime uses as the PML4 did; the code and
        // the stack are identity mapped below 4 GiB, so they stay reachable with paging off;
        // interrupts are off and the caller keeps NMIs away; CR4.PCIDE is clear, so clearing
        // CR0.PG does not fault. The routine restores the runtime's GDT, CS and SS.
        unsafe { vmunit_switch_to_five_level(pml5) }
    });
    Ok(())
}

unsafe extern "C" {
    /// The mode switch of [`enable_five_level_paging`], with the PML5's physical address.
    fn vmunit_switch_to_five_level(pml5: u64);
}

const _: () = assert!(super::exceptions::selector::KERNEL_CODE == 0x08);
const _: () = assert!(super::exceptions::selector::KERNEL_DATA == 0x10);

// The temporary GDT: the runtime's selectors 0x08 (64-bit code) and 0x10 (data), plus 0x18, a
// ring-0 32-bit code segment, which the runtime's GDT lacks. Accessed bits are preset, so the
// CPU never writes to it.
core::arch::global_asm!(
    r#"
    .section .data.vmunit_switch_gdt, "aw"
    .balign 16
    vmunit_switch_gdt:
        .quad 0
        .quad 0x00af9b000000ffff    /* 0x08: 64-bit ring-0 code */
        .quad 0x00cf93000000ffff    /* 0x10: ring-0 data */
        .quad 0x00cf9b000000ffff    /* 0x18: 32-bit ring-0 code */
    vmunit_switch_gdt_end:
    .balign 2
    vmunit_switch_gdt_pointer:
        .word vmunit_switch_gdt_end - vmunit_switch_gdt - 1
        .quad vmunit_switch_gdt

    .section .text.vmunit_switch_to_five_level, "ax"
    .code64
    .global vmunit_switch_to_five_level
    vmunit_switch_to_five_level:
        sub $16, %rsp
        sgdt (%rsp)                     /* the runtime's GDTR, restored below */
        lgdt vmunit_switch_gdt_pointer(%rip)
        mov $0x10, %eax
        mov %eax, %ss
        pushq $0x18
        lea 1f(%rip), %rax
        pushq %rax
        lretq
    .code32
    1:  mov %cr0, %eax
        btr $31, %eax
        mov %eax, %cr0                  /* CR0.PG off: the CPU leaves long mode */
        mov %edi, %cr3                  /* the PML5 */
        mov %cr4, %eax
        bts $12, %eax
        mov %eax, %cr4                  /* CR4.LA57 */
        mov %cr0, %eax
        bts $31, %eax
        mov %eax, %cr0                  /* CR0.PG on: long mode again, compatibility mode */
        ljmp $0x08, $2f
    .code64
    2:  mov %esp, %esp                  /* 32-bit code left the upper halves undefined */
        lgdt (%rsp)
        mov $0x10, %eax
        mov %eax, %ss
        pushq $0x08
        lea 3f(%rip), %rax
        pushq %rax
        lretq
    3:  add $16, %rsp
        ret
    "#,
    options(att_syntax)
);

/// Candidate 2 MiB regions for [`with_stack_on_page_table`]: far above RAM and the device
/// windows, each with no page table of its own yet.
const PAGE_TABLE_STACK_REGIONS: [u64; 4] = [
    0x0000_3f00_0000_0000,
    0x0000_3f00_0020_0000,
    0x0000_3f80_0000_0000,
    0x0000_3f80_0020_0000,
];

/// kvm-unit-tests' eventinj "int 33 with shadowed stack": maps a fresh page at the start of
/// an unused 2 MiB region, so that a new level-1 table holds its entry alone, and runs
/// `function` with the top of that table page (identity mapped) to use as a stack: an event
/// delivered there pushes into a live page table (which a shadow-paging hypervisor
/// write-protects). Afterwards the table's other entries (the stack's garbage) are cleared
/// and the TLB flushed. Returns `function`'s result and whether the table's entry for the
/// fresh page still mapped it, present and writable, after `function`.
///
/// # Panics
/// When no candidate region is free, or no frame is left.
pub fn with_stack_on_page_table<R>(function: impl FnOnce(u64) -> R) -> (R, bool) {
    let root = root();
    let address = PAGE_TABLE_STACK_REGIONS
        .into_iter()
        .find(|&region| {
            let _guard = PAGE_TABLE_LOCK.lock();
            leaf_entry(root, region, false).is_none()
        })
        .expect("a free 2 MiB region for a page-table stack");
    let frame = crate::memory::allocate_frame().expect("a frame for the page-table stack test");
    // SAFETY: the address is in a region nothing maps (checked above), so it belongs to this
    // function alone; the frame is fresh.
    unsafe { map_page(address, frame, Protection::READ_WRITE) };
    let table_page = {
        let _guard = PAGE_TABLE_LOCK.lock();
        let entry = leaf_entry(root, address, false).expect("the page was just mapped");
        core::ptr::from_mut(entry) as u64 & !(PAGE_SIZE - 1)
    };
    let result = function(table_page + PAGE_SIZE);
    let intact = {
        let _guard = PAGE_TABLE_LOCK.lock();
        let entries = table(table_page);
        let entry = &entries[0];
        let intact = entry.addr().as_u64() == frame
            && entry
                .flags()
                .contains(PageTableFlags::PRESENT | PageTableFlags::WRITABLE);
        for entry in entries.iter_mut().skip(1) {
            entry.set_unused();
        }
        entries[0].set_unused();
        intact
    };
    let (cr3, flags) = Cr3::read_raw();
    // SAFETY: reloading CR3 with its own value only flushes the TLB (the garbage entries the
    // stack left were cleared above).
    unsafe { Cr3::write_raw(cr3, flags) };
    crate::memory::free_frames(frame, 1);
    (result, intact)
}
