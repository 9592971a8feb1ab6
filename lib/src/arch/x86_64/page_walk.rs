//! A private 4-level paging hierarchy for page-walk tests (kvm-unit-tests' x86/access.c): one
//! PML4 slot of the runtime's page tables with its own PDPT, page directories and page tables,
//! whose entries a test sets bit by bit at every level (present, writable, user, accessed,
//! dirty, PS, NX, protection keys, reserved bits) to provoke every outcome of a walk.
//!
//! Containment: the slot is one the runtime does not use (the identity map is slot 0, test
//! pages slot 2); every entry the test writes names one of the sandbox's own tables, or, at
//! the leaf, the sandbox's own 2 MiB data block, which no Rust object occupies. The address
//! bits a test may add to an entry are reserved ones (from MAXPHYADDR to 51, and 20:13 of a
//! 2 MiB page), which make the walk fault instead of reaching other memory. So the walks a
//! test provokes can only fault or reach the sandbox's own frames, and the safe API here
//! cannot make them alias memory the runtime uses.

use core::arch::asm;

use x86_64::registers::model_specific::{Efer, EferFlags};

use super::exceptions::{Exception, catch_exception, run_in_user_mode};
use crate::memory::{PAGE_SIZE, allocate_frames, free_frames};

/// Bit 0 of a paging-structure entry: present.
pub const PRESENT: u64 = 1 << 0;
/// Bit 1: writes allowed.
pub const WRITABLE: u64 = 1 << 1;
/// Bit 2: user-mode accesses allowed.
pub const USER: u64 = 1 << 2;
/// Bit 5: accessed, set by the CPU on the walk.
pub const ACCESSED: u64 = 1 << 5;
/// Bit 6: dirty, set by the CPU on a write through a leaf.
pub const DIRTY: u64 = 1 << 6;
/// Bit 7 of a PDE (or PDPTE): the entry maps a large page.
pub const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Bit 63: no-execute (reserved while EFER.NXE is clear).
pub const NO_EXECUTE: u64 = 1 << 63;
/// The position of the protection key, bits 62:59 of a leaf entry.
pub const KEY_SHIFT: u32 = 59;
/// The address field of an entry, bits 51:12.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The size of the large page a PDE with PS maps.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

/// Page directories a sandbox owns.
pub const DIRECTORIES: usize = 2;
/// Page tables a sandbox owns.
pub const PAGE_TABLES: usize = 2;

/// Frames for the data block: twice the large page, to find an aligned 2 MiB inside.
const BLOCK_FRAMES: usize = 2 * (LARGE_PAGE_SIZE / PAGE_SIZE) as usize;

/// RET: what [`PagingSandbox::try_fetch`] calls.
const RETURN: u8 = 0xc3;

/// What a PDE points at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DirectoryTarget {
    /// One of the sandbox's page tables (0..[`PAGE_TABLES`]): a 4 KiB walk.
    Table(usize),
    /// The sandbox's 2 MiB data block, as a large page (PS set by [`PagingSandbox::set_pde`]).
    LargePage,
}

/// A privilege level for an access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Privilege {
    /// CPL 0.
    Supervisor,
    /// CPL 3, through `run_in_user_mode`.
    User,
}

/// How an access's instruction runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Emulation {
    /// As it is: the CPU (or the hypervisor's usual path) performs it.
    Native,
    /// Behind KVM's forced emulation prefix, through KVM's instruction emulator
    /// (`instructions::try_forced_emulation_nop` says whether the host honours it; elsewhere
    /// the access raises #UD).
    Forced,
}

/// A private paging hierarchy under one PML4 slot of the runtime's page tables.
pub struct PagingSandbox {
    slot: usize,
    /// The address of the slot's entry in the PML4 that was live at [`Self::new`] (read once:
    /// CR3 reads are emulated, costly instructions under some hypervisors).
    pml4e_address: u64,
    pdpt: u64,
    directories: [u64; DIRECTORIES],
    tables: [u64; PAGE_TABLES],
    /// The allocation holding the data block.
    allocation: u64,
    /// The 2 MiB aligned data block; its first frame is the 4 KiB page PTEs map.
    block: u64,
    /// The reserved address bits of an entry: MAXPHYADDR..=51.
    reserved_address_bits: u64,
}

/// Entry `slot` of the runtime's PML4.
fn pml4_entry(slot: usize) -> *mut u64 {
    ((super::control::read_cr3() & ADDRESS_MASK) + slot as u64 * 8) as usize as *mut u64
}

fn zeroed_frame() -> u64 {
    let frame = allocate_frames(1).expect("out of frames for the paging sandbox");
    // SAFETY: the frame is fresh from the allocator, identity mapped, page aligned.
    unsafe { (frame as usize as *mut u8).write_bytes(0, PAGE_SIZE as usize) };
    frame
}

#[inline]
fn read_entry(table: u64, index: usize) -> u64 {
    assert!(index < 512, "entry index {index} is outside a table");
    // SAFETY: `table` is one of the sandbox's own table frames (identity mapped); the CPU may
    // write A/D bits concurrently, so the read is volatile.
    unsafe { ((table + index as u64 * 8) as usize as *const u64).read_volatile() }
}

#[inline]
fn write_entry(table: u64, index: usize, value: u64) {
    assert!(index < 512, "entry index {index} is outside a table");
    // SAFETY: as in `read_entry`; callers checked that `value` only reaches sandbox frames.
    unsafe { ((table + index as u64 * 8) as usize as *mut u64).write_volatile(value) };
}

impl PagingSandbox {
    /// Claims PML4 slot `slot` (256..=511: the upper half, which the runtime leaves empty),
    /// with a zeroed PDPT, [`DIRECTORIES`] page directories, [`PAGE_TABLES`] page tables and
    /// a 2 MiB data block. The slot's PML4 entry stays clear until [`Self::set_pml4e`].
    ///
    /// # Panics
    /// When the slot is outside 256..=511 or already in use, or when memory runs out.
    pub fn new(slot: usize) -> PagingSandbox {
        assert!(
            (256..512).contains(&slot),
            "PML4 slot {slot} is not in the upper half"
        );
        let pml4e_address = pml4_entry(slot) as u64;
        // SAFETY: the PML4 is the runtime's, identity mapped; reading one entry.
        let current = unsafe { (pml4e_address as *const u64).read_volatile() };
        assert!(current == 0, "PML4 slot {slot} is in use ({current:#x})");
        let pdpt = zeroed_frame();
        let directories = [(); DIRECTORIES].map(|_| zeroed_frame());
        let tables = [(); PAGE_TABLES].map(|_| zeroed_frame());
        let allocation = allocate_frames(BLOCK_FRAMES).expect("out of frames for the data block");
        let block = allocation.next_multiple_of(LARGE_PAGE_SIZE);
        let width = super::probes::physical_address_bits().min(52);
        let reserved_address_bits = ADDRESS_MASK & !((1u64 << width) - 1);
        PagingSandbox {
            slot,
            pml4e_address,
            pdpt,
            directories,
            tables,
            allocation,
            block,
            reserved_address_bits,
        }
    }

    /// The linear address that PDPT entry `pdpt_index`, PDE `directory_index` and PTE
    /// `table_index` translate (plus `offset`).
    #[inline]
    pub fn address(&self, pdpt_index: usize, directory_index: usize, table_index: usize) -> u64 {
        let raw = (self.slot as u64) << 39
            | (pdpt_index as u64 & 511) << 30
            | (directory_index as u64 & 511) << 21
            | (table_index as u64 & 511) << 12;
        // Sign-extend bit 47: upper-half slots give canonical addresses.
        ((raw << 16) as i64 >> 16) as u64
    }

    /// The physical address of the data page PTEs map (the first 4 KiB of the block).
    #[inline]
    pub fn data_frame(&self) -> u64 {
        self.block
    }

    /// The reserved address bits of an entry on this CPU (MAXPHYADDR to 51).
    #[inline]
    pub fn reserved_address_bits(&self) -> u64 {
        self.reserved_address_bits
    }

    #[inline]
    fn check_attributes(&self, attributes: u64, large: bool) {
        let mut allowed = self.reserved_address_bits;
        if large {
            // Bits 20:13 of a 2 MiB PDE are reserved (bit 12 is PAT).
            allowed |= 0x1f_e000;
        }
        let address = attributes & ADDRESS_MASK;
        assert!(
            address & !allowed == 0,
            "entry attributes {attributes:#x} name address bits {:#x} that are not reserved",
            address & !allowed
        );
    }

    /// The PML4 entry of the slot.
    #[inline]
    pub fn pml4e(&self) -> u64 {
        // SAFETY: the runtime's PML4, identity mapped; the slot is the sandbox's.
        unsafe { (self.pml4e_address as *const u64).read_volatile() }
    }

    /// Points the slot's PML4 entry at the sandbox's PDPT with `attributes` (bits outside
    /// 51:12: P, W, U, A, NX ...; or reserved address bits).
    #[inline]
    pub fn set_pml4e(&self, attributes: u64) {
        self.check_attributes(attributes, false);
        // SAFETY: the slot is the sandbox's (checked free in `new`); it names the sandbox's PDPT.
        unsafe { (self.pml4e_address as *mut u64).write_volatile(self.pdpt | attributes) };
    }

    /// PDPT entry `index`.
    #[inline]
    pub fn pdpte(&self, index: usize) -> u64 {
        read_entry(self.pdpt, index)
    }

    /// Points PDPT entry `index` at page directory `directory` with `attributes`.
    ///
    /// # Panics
    /// When `attributes` has PS (1 GiB pages are not offered) or non-reserved address bits.
    #[inline]
    pub fn set_pdpte(&self, index: usize, directory: usize, attributes: u64) {
        assert!(attributes & PAGE_SIZE_BIT == 0, "the sandbox maps no 1 GiB pages");
        self.check_attributes(attributes, false);
        write_entry(self.pdpt, index, self.directories[directory] | attributes);
    }

    /// PDE `index` of page directory `directory`.
    #[inline]
    pub fn pde(&self, directory: usize, index: usize) -> u64 {
        read_entry(self.directories[directory], index)
    }

    /// Points PDE `index` of `directory` at `target` with `attributes` (PS is set for a large
    /// page and must not be set otherwise).
    #[inline]
    pub fn set_pde(&self, directory: usize, index: usize, target: DirectoryTarget, attributes: u64) {
        let value = match target {
            DirectoryTarget::Table(table) => {
                assert!(attributes & PAGE_SIZE_BIT == 0, "PS in a PDE that names a table");
                self.check_attributes(attributes, false);
                self.tables[table] | attributes
            }
            DirectoryTarget::LargePage => {
                self.check_attributes(attributes, true);
                self.block | attributes | PAGE_SIZE_BIT
            }
        };
        write_entry(self.directories[directory], index, value);
    }

    /// PTE `index` of page table `table`.
    #[inline]
    pub fn pte(&self, table: usize, index: usize) -> u64 {
        read_entry(self.tables[table], index)
    }

    /// Points PTE `index` of `table` at the data page with `attributes`.
    #[inline]
    pub fn set_pte(&self, table: usize, index: usize, attributes: u64) {
        assert!(
            attributes & PAGE_SIZE_BIT == 0,
            "bit 7 of a PTE is PAT: not offered"
        );
        self.check_attributes(attributes, false);
        write_entry(self.tables[table], index, self.block | attributes);
    }

    /// The frame of page directory `directory`: the address a PDPTE naming it holds (for
    /// tests that compare whole entries).
    #[inline]
    pub fn directory_frame(&self, directory: usize) -> u64 {
        self.directories[directory]
    }

    /// The frame of page table `table`.
    #[inline]
    pub fn table_frame(&self, table: usize) -> u64 {
        self.tables[table]
    }

    /// The frame of the sandbox's PDPT.
    #[inline]
    pub fn pdpt_frame(&self) -> u64 {
        self.pdpt
    }

    #[inline]
    fn check_address(&self, address: u64) {
        let slot = ((address >> 39) & 511) as usize;
        assert!(
            slot == self.slot && address == self.address(0, 0, 0) + (address & ((1 << 39) - 1)),
            "address {address:#x} is outside the sandbox's slot {}",
            self.slot
        );
    }

    /// INVLPG of `address` (inside the sandbox).
    #[inline]
    pub fn invalidate(&self, address: u64) {
        self.check_address(address);
        // SAFETY: INVLPG only drops translations; the sandbox's are rebuilt from its tables.
        unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
    }

    /// The 64-bit word at `offset` of the data block, through the identity map.
    #[inline]
    pub fn data(&self, offset: u64) -> u64 {
        assert!(
            offset + 8 <= LARGE_PAGE_SIZE,
            "offset {offset} is outside the data block"
        );
        // SAFETY: the word lies in the sandbox's data block, which no Rust object occupies.
        unsafe { ((self.block + offset) as usize as *const u64).read_volatile() }
    }

    /// Stores `value` at `offset` of the data block, through the identity map.
    #[inline]
    pub fn set_data(&self, offset: u64, value: u64) {
        assert!(
            offset + 8 <= LARGE_PAGE_SIZE,
            "offset {offset} is outside the data block"
        );
        // SAFETY: as in `data`.
        unsafe { ((self.block + offset) as usize as *mut u64).write_volatile(value) };
    }

    /// Reads the word at `address` (inside the sandbox) at `privilege`: the value, or the
    /// exception (#PF with its error code and CR2).
    #[inline]
    pub fn try_read(&self, address: u64, privilege: Privilege) -> Result<u64, Exception> {
        self.try_read_with(address, privilege, Emulation::Native)
    }

    /// Reads the word at `address` (inside the sandbox) at `privilege`, the load run as
    /// `emulation` says: the value, or the exception.
    #[inline]
    pub fn try_read_with(
        &self,
        address: u64,
        privilege: Privilege,
        emulation: Emulation,
    ) -> Result<u64, Exception> {
        self.check_address(address);
        let read = move || match emulation {
            Emulation::Native => super::instructions::read(address),
            Emulation::Forced => super::instructions::read_emulated(address),
        };
        match privilege {
            Privilege::Supervisor => catch_exception(read),
            Privilege::User => run_in_user_mode(read),
        }
    }

    /// Writes `value` at `address` (inside the sandbox) at `privilege`, or returns the
    /// exception.
    #[inline]
    pub fn try_write(&self, address: u64, value: u64, privilege: Privilege) -> Result<(), Exception> {
        self.try_write_with(address, value, privilege, Emulation::Native)
    }

    /// Writes `value` at `address` (inside the sandbox) at `privilege`, the store run as
    /// `emulation` says, or returns the exception.
    #[inline]
    pub fn try_write_with(
        &self,
        address: u64,
        value: u64,
        privilege: Privilege,
        emulation: Emulation,
    ) -> Result<(), Exception> {
        self.check_address(address);
        let write = move || match emulation {
            // SAFETY: every walk from the sandbox's slot faults or reaches the sandbox's data
            // block, which no Rust object occupies; a fault goes to the enclosing catch.
            Emulation::Native => unsafe {
                asm!("mov qword ptr [{}], {}", in(reg) address, in(reg) value, options(nostack))
            },
            // SAFETY: as above; the prefix raises #UD where it is not honoured, which the
            // enclosing catch receives too.
            Emulation::Forced => unsafe {
                asm!(
                    super::instructions::forced_emulation_prefix!(),
                    "mov qword ptr [{}], {}",
                    in(reg) address,
                    in(reg) value,
                    options(nostack)
                )
            },
        };
        match privilege {
            Privilege::Supervisor => catch_exception(write),
            Privilege::User => run_in_user_mode(write),
        }
    }

    /// Stores RET at the start of the data page and of every 4 KiB of the data block, then
    /// calls `address` (page aligned, inside the sandbox) at `privilege`: `Ok`, or the
    /// exception the fetch raised.
    ///
    /// # Panics
    /// When `address` is not page aligned.
    #[inline]
    pub fn try_fetch(&self, address: u64, privilege: Privilege) -> Result<(), Exception> {
        self.check_address(address);
        assert!(
            address.is_multiple_of(PAGE_SIZE),
            "fetches start at a page boundary"
        );
        let page = (address / PAGE_SIZE) % (LARGE_PAGE_SIZE / PAGE_SIZE);
        for offset in [0, page * PAGE_SIZE] {
            let byte = (self.block + offset) as usize as *mut u8;
            // SAFETY: the byte lies in the sandbox's data block, which no Rust object occupies.
            let current = unsafe { byte.read_volatile() };
            // Stored only when it is not RET already: under TCG any store to a page with
            // translated code (the RET a previous fetch ran) throws that translation away.
            if current != RETURN {
                // SAFETY: as above.
                unsafe { byte.write_volatile(RETURN) };
            }
        }
        let call = move || {
            // SAFETY: every walk from the sandbox's slot faults or reaches a page of the data
            // block whose first byte is RET (stored above): a C-ABI function that returns.
            unsafe { asm!("call {}", in(reg) address, clobber_abi("C")) };
        };
        match privilege {
            Privilege::Supervisor => catch_exception(call),
            Privilege::User => run_in_user_mode(call),
        }
    }
}

impl Drop for PagingSandbox {
    fn drop(&mut self) {
        // SAFETY: the slot is the sandbox's; clearing it detaches the hierarchy.
        unsafe { (self.pml4e_address as *mut u64).write_volatile(0) };
        x86_64::instructions::tlb::flush_all();
        free_frames(self.pdpt, 1);
        for frame in self.directories.iter().chain(&self.tables) {
            free_frames(*frame, 1);
        }
        free_frames(self.allocation, BLOCK_FRAMES);
    }
}

/// Sets or clears EFER.NXE. While it is clear, bit 63 of a paging-structure entry is reserved:
/// the runtime's own mappings (image, heap, stacks, page tables) never set it, so they keep
/// working; only test pages mapped without execute (`TestPage`, the sandbox) then fault with
/// RSVD, which their probes catch. Returns the exception (#GP without NX support).
pub fn try_set_no_execute_enable(enable: bool) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: only NXE changes (LME/LMA stay); no mapping the runtime relies on has NX
        // set (mmu.rs sets it only for pages mapped without execute, which are test pages).
        unsafe {
            Efer::update(|flags| flags.set(EferFlags::NO_EXECUTE_ENABLE, enable));
        }
    })
}

/// Whether EFER.NXE is set.
pub fn no_execute_enabled() -> bool {
    Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
}
