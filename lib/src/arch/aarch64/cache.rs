//! aarch64 caches: the cache type (CTR_EL0) and level (CLIDR_EL1) registers, cache maintenance
//! by address to the point of unification, and [`CodePage`], a page of instructions that a
//! test rewrites and runs (self-modifying code, as JITs and loaders do).

use core::arch::asm;

use super::exceptions::{Exception, catch_exception};
use crate::memory::{PAGE_SIZE, Protection};

/// CTR_EL0.IDC: data cache cleaning to the PoU is not required for I/D coherence.
pub const CTR_IDC: u64 = 1 << 28;
/// CTR_EL0.DIC: instruction cache invalidation to the PoU is not required for I/D coherence.
pub const CTR_DIC: u64 = 1 << 29;

/// CTR_EL0, the cache type register.
pub fn cache_type() -> u64 {
    let value: u64;
    // SAFETY: reads a register that EL1 (and EL0 unless trapped) may read; no memory access.
    unsafe { asm!("mrs {value}, ctr_el0", value = out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CLIDR_EL1, the cache level ID register.
pub fn cache_levels() -> u64 {
    let value: u64;
    // SAFETY: reads an EL1 identification register; no memory access.
    unsafe {
        asm!("mrs {value}, clidr_el1", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The maintenance that makes instructions written as data visible to instruction fetches,
/// as CTR_EL0 and CLIDR_EL1 require it (kvm-unit-tests' arm/cache.c decides the same way).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Maintenance {
    /// DC CVAU (then DSB ISH) after the write: CTR_EL0.IDC is 0 and CLIDR_EL1 names a level
    /// of coherence (LoC) and a level of unification (LoUU or LoUIS).
    pub clean_data: bool,
    /// IC IVAU (then DSB ISH): CTR_EL0.DIC is 0.
    pub invalidate_instructions: bool,
}

impl Maintenance {
    /// Both steps, whatever the CPU says: always correct, never necessary to skip.
    pub const FULL: Maintenance = Maintenance {
        clean_data: true,
        invalidate_instructions: true,
    };
    /// Neither step: only DSB ISH and ISB after the write.
    pub const NONE: Maintenance = Maintenance {
        clean_data: false,
        invalidate_instructions: false,
    };

    /// The steps this CPU requires, from CTR_EL0 and CLIDR_EL1.
    pub fn required() -> Maintenance {
        let ctr = cache_type();
        let clidr = cache_levels();
        let level_of_coherence = (clidr >> 24) & 7;
        let unification_uniprocessor = (clidr >> 27) & 7;
        let unification_inner_shareable = (clidr >> 21) & 7;
        Maintenance {
            clean_data: ctr & CTR_IDC == 0
                && level_of_coherence != 0
                && (unification_uniprocessor != 0 || unification_inner_shareable != 0),
            invalidate_instructions: ctr & CTR_DIC == 0,
        }
    }
}

/// Encodes `movz w0, #value`.
pub const fn move_to_w0(value: u16) -> u32 {
    0x5280_0000 | (value as u32) << 5
}

/// Encodes `ret`.
pub const RET: u32 = 0xd65f_03c0;

/// A page of code: a frame mapped (identity) readable, writable and executable at EL1, which a
/// test fills with instructions and calls. Dropping it maps the frame back as data and frees it.
pub struct CodePage {
    frame: u64,
}

impl CodePage {
    /// Allocates a frame and maps it read-write-execute (at EL1 only).
    ///
    /// # Panics
    /// When no frame is left.
    pub fn new() -> CodePage {
        let frame = crate::memory::allocate_frame().expect("out of frames for a CodePage");
        // SAFETY: the frame is fresh from the allocator: nothing else refers to it, and its
        // identity mapping keeps the same physical address with normal memory attributes.
        unsafe { super::mmu::map_page(frame, frame, Protection::READ_WRITE_EXECUTE) };
        let page = CodePage { frame };
        for index in 0..(PAGE_SIZE as usize / 4) {
            page.write_instruction(index, RET);
        }
        page.synchronise(0, PAGE_SIZE as usize / 4, Maintenance::FULL);
        page
    }

    /// The page's address (its code starts there).
    pub fn address(&self) -> u64 {
        self.frame
    }

    /// Writes instruction word `word` at instruction `index` of the page, as data, with no
    /// cache maintenance (see [`CodePage::synchronise`]).
    pub fn write_instruction(&self, index: usize, word: u32) {
        assert!(
            index < PAGE_SIZE as usize / 4,
            "instruction {index} is outside the page"
        );
        let address = (self.frame + 4 * index as u64) as usize as *mut u32;
        // SAFETY: the word lies inside this page's frame, which this CodePage owns and no
        // Rust reference points into; it is aligned.
        unsafe { address.write_volatile(word) };
    }

    /// Makes the `count` instructions from `index` visible to instruction fetches with the
    /// steps of `maintenance`: DC CVAU of each line, DSB ISH, IC IVAU of each line, DSB ISH,
    /// ISB (the sequence of the Arm ARM, "Concurrent modification and execution of
    /// instructions"), leaving out the steps `maintenance` omits; DSB ISH and ISB always run.
    pub fn synchronise(&self, index: usize, count: usize, maintenance: Maintenance) {
        let ctr = cache_type();
        let data_line = 4u64 << ((ctr >> 16) & 0xf);
        let instruction_line = 4u64 << (ctr & 0xf);
        let start = self.frame + 4 * index as u64;
        let end = start + 4 * count as u64;
        if maintenance.clean_data {
            let mut line = start & !(data_line - 1);
            while line < end {
                clean_data_to_unification(line);
                line += data_line;
            }
            data_synchronisation_barrier_inner_shareable();
        }
        if maintenance.invalidate_instructions {
            let mut line = start & !(instruction_line - 1);
            while line < end {
                invalidate_instructions_to_unification(line);
                line += instruction_line;
            }
        }
        data_synchronisation_barrier_inner_shareable();
        super::instructions::isb();
    }

    /// Calls the code at instruction `index` and returns its w0 (the code must return with
    /// `ret`), or the exception its fetch or execution raised.
    pub fn call(&self, index: usize) -> Result<u32, Exception> {
        assert!(
            index < PAGE_SIZE as usize / 4,
            "instruction {index} is outside the page"
        );
        let target = self.frame + 4 * index as u64;
        catch_exception(|| {
            let result: u64;
            // SAFETY: the page holds code this CodePage wrote, by contract a function that
            // returns; the C ABI's clobbers are declared; a fault is caught.
            unsafe { asm!("blr {target}", target = in(reg) target, lateout("x0") result, clobber_abi("C")) };
            result as u32
        })
    }
}

impl Default for CodePage {
    fn default() -> Self {
        CodePage::new()
    }
}

impl Drop for CodePage {
    fn drop(&mut self) {
        // SAFETY: the frame is this CodePage's; mapping it back as plain data changes nothing
        // Rust code relies on (no code runs from it any more).
        unsafe { super::mmu::map_page(self.frame, self.frame, Protection::READ_WRITE) };
        crate::memory::free_frames(self.frame, 1);
    }
}

/// DC CVAU: cleans the data cache line of `address` to the point of unification.
fn clean_data_to_unification(address: u64) {
    // SAFETY: cache maintenance of a mapped line changes no memory contents.
    unsafe { asm!("dc cvau, {address}", address = in(reg) address, options(nostack, preserves_flags)) };
}

/// IC IVAU: invalidates the instruction cache line of `address` to the point of unification.
fn invalidate_instructions_to_unification(address: u64) {
    // SAFETY: invalidating instruction cache lines changes no memory contents.
    unsafe { asm!("ic ivau, {address}", address = in(reg) address, options(nostack, preserves_flags)) };
}

/// DSB ISH.
pub fn data_synchronisation_barrier_inner_shareable() {
    // SAFETY: a barrier; no memory contents change.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}
