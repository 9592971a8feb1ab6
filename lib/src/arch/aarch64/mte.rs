//! The Memory Tagging Extension (FEAT_MTE, MTE2, MTE3): detection, the tag checking mode,
//! tag instructions (IRG, STG, LDG) and TFSR_EL1, and [`TaggedPage`], a page of Tagged Normal
//! memory whose accesses tests make through tagged pointers.
//!
//! Tag checks apply only to Tagged Normal memory (MAIR attribute 0xF0), and the runtime maps
//! nothing of its own that way: only [`TaggedPage`]s, which no Rust object occupies and which
//! are accessed through fault-catching probes (or, at EL0, inside `run_in_user_mode`). That is
//! why changing SCTLR_EL1's MTE fields (ATA, ATA0, TCF, TCF0), TCR_EL1's (TBI0, TCMA0) and
//! PSTATE.TCO is safe here: whatever the mode, the runtime's own accesses are never tag
//! checked, and the runtime never uses pointers whose top byte is not zero, so top-byte-ignore
//! changes nothing for it. A raw write of either register (which could
//! turn the MMU off) stays out of the API. Mapping other memory as tagged is
//! [`mmu::map_tagged_page`](super::mmu::map_tagged_page), an `unsafe fn`.
//!
//! These settings are per CPU; the functions act on the calling CPU.

use core::arch::asm;

use aarch64_cpu::registers::{ID_AA64PFR1_EL1, Readable, SCTLR_EL1, TCR_EL1, Writeable};

pub use super::boot::MAIR_TAGGED_NORMAL;
use super::registers::{sctlr, tcr};
use crate::catch::Attempt;
use crate::memory::{PAGE_SIZE, Protection, TestPage};

/// The tag granule: each 16 bytes of Tagged Normal memory have one 4-bit allocation tag.
pub const GRANULE: u64 = 16;
/// Where a pointer holds its logical tag: bits 59:56.
pub const TAG_SHIFT: u32 = 56;
/// The logical tag bits of a pointer.
pub const TAG_MASK: u64 = 0xf << TAG_SHIFT;

/// How much of MTE the CPU implements: ID_AA64PFR1_EL1.MTE (bits 11:8).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    /// 0b0000: no MTE.
    Absent,
    /// 0b0001 FEAT_MTE: the tag instructions at EL0 only, no tag storage or checks (QEMU's
    /// `-cpu max` without `-machine mte=on`).
    InstructionsOnly,
    /// 0b0010 FEAT_MTE2: tag storage, synchronous and asynchronous tag checks.
    Full,
    /// 0b0011 FEAT_MTE3: FEAT_MTE2 plus asymmetric tag checks (TCF = 0b11).
    Asymmetric,
}

impl Level {
    /// The level of an ID_AA64PFR1_EL1.MTE value (reserved values above 3 count as 3).
    pub fn from_field(field: u64) -> Level {
        match field {
            0 => Level::Absent,
            1 => Level::InstructionsOnly,
            2 => Level::Full,
            _ => Level::Asymmetric,
        }
    }
}

/// ID_AA64PFR1_EL1.MTE as read.
pub fn field() -> u64 {
    ID_AA64PFR1_EL1.read(ID_AA64PFR1_EL1::MTE)
}

/// This CPU's MTE level.
pub fn level() -> Level {
    Level::from_field(field())
}

/// What a Tag Check Fault does at EL1: SCTLR_EL1.TCF (bits 41:40).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TagCheckMode {
    /// 0b00: tag check faults have no effect.
    Ignored,
    /// 0b01: a synchronous exception (a data abort, DFSC 0b010001).
    Synchronous,
    /// 0b10: accumulated in TFSR_EL1, no exception.
    Asynchronous,
    /// 0b11 (FEAT_MTE3): synchronous on reads, accumulated in TFSR_EL1 on writes.
    Asymmetric,
}

impl TagCheckMode {
    /// The TCF field value.
    pub fn field(self) -> u64 {
        match self {
            TagCheckMode::Ignored => 0,
            TagCheckMode::Synchronous => 1,
            TagCheckMode::Asynchronous => 2,
            TagCheckMode::Asymmetric => 3,
        }
    }

    /// The mode of a TCF field value.
    pub fn from_field(field: u64) -> TagCheckMode {
        match field & 3 {
            0 => TagCheckMode::Ignored,
            1 => TagCheckMode::Synchronous,
            2 => TagCheckMode::Asynchronous,
            _ => TagCheckMode::Asymmetric,
        }
    }

    /// The MTE level the mode needs.
    pub fn required_level(self) -> Level {
        match self {
            TagCheckMode::Asymmetric => Level::Asymmetric,
            _ => Level::Full,
        }
    }
}

/// Reads SCTLR_EL1, applies `change` to it, writes it back and synchronises.
fn update_sctlr(change: impl FnOnce(u64) -> u64) {
    SCTLR_EL1.set(change(SCTLR_EL1.get()));
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Reads TCR_EL1, applies `change`, writes it back, and drops this CPU's TLB entries (which
/// may cache TCR fields such as TBI).
fn update_tcr(change: impl FnOnce(u64) -> u64) {
    TCR_EL1.set(change(TCR_EL1.get()));
    // SAFETY: a context synchronisation and a local TLB invalidation: no memory changes.
    unsafe {
        asm!(
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Prepares this CPU for tag checks at EL1, as kvm-unit-tests' `mte_init` does: allocation
/// tag access on (SCTLR_EL1.ATA, so that IRG, STG and LDG work), top byte ignore for the
/// lower address range (TCR_EL1.TBI0, so that tagged pointers translate), and no "match all"
/// tag (TCR_EL1.TCMA0 clear, so that pointers with tag 0 are checked too), and PSTATE.TCO
/// clear (exception entry sets it, ERET restores it from SPSR; the boot state is not relied
/// on). The mode stays
/// what it was ([`set_tag_check_mode`]). Safe: see the module documentation.
///
/// # Panics
/// When the CPU lacks FEAT_MTE2.
pub fn enable() {
    assert!(level() >= Level::Full, "MTE tag checks need FEAT_MTE2");
    update_sctlr(|value| value | sctlr::ATA);
    update_tcr(|value| (value | tcr::TBI0) & !tcr::TCMA0);
    set_tag_check_override(false);
}

/// Sets or clears PSTATE.TCO (tag check override): while set, loads and stores are not tag
/// checked, whatever the mode.
pub fn set_tag_check_override(enabled: bool) {
    if enabled {
        // SAFETY: PSTATE.TCO only turns tag checks off; the runtime's own accesses are never
        // checked either way (see the module documentation).
        unsafe {
            asm!(
                ".arch_extension memtag",
                "msr tco, #1",
                options(nostack, preserves_flags)
            )
        };
    } else {
        // SAFETY: as above, turning them back on.
        unsafe {
            asm!(
                ".arch_extension memtag",
                "msr tco, #0",
                options(nostack, preserves_flags)
            )
        };
    }
}

/// Whether PSTATE.TCO is set.
pub fn tag_check_override() -> bool {
    let value: u64;
    // SAFETY: reads PSTATE.TCO (bit 25 of the result).
    unsafe {
        asm!(".arch_extension memtag", "mrs {value}, tco", value = out(reg) value,
             options(nomem, nostack, preserves_flags))
    };
    value & (1 << 25) != 0
}

/// Turns allocation tag access at EL1 (SCTLR_EL1.ATA) on or off: off, IRG makes tag 0, LDG
/// reads 0, STG changes nothing, and no EL1 access is tag checked (Arm ARM,
/// AArch64.AccessIsTagChecked).
pub fn set_tag_access(enabled: bool) {
    update_sctlr(|value| {
        if enabled {
            value | sctlr::ATA
        } else {
            value & !sctlr::ATA
        }
    });
}

/// Turns allocation tag access at EL0 (SCTLR_EL1.ATA0) on or off. Like ATA for EL1, it also
/// gates EL0's tag checks: without it every EL0 access is unchecked (Arm ARM,
/// AArch64.AccessIsTagChecked).
pub fn set_user_tag_access(enabled: bool) {
    update_sctlr(|value| {
        if enabled {
            value | sctlr::ATA0
        } else {
            value & !sctlr::ATA0
        }
    });
}

/// Sets TCR_EL1.TCMA0: when on, accesses through pointers with logical tag 0 (in the lower
/// address range) are not tag checked.
pub fn set_match_all(enabled: bool) {
    update_tcr(|value| {
        if enabled {
            value | tcr::TCMA0
        } else {
            value & !tcr::TCMA0
        }
    });
}

/// Sets the EL1 tag checking mode (SCTLR_EL1.TCF), then clears TFSR_EL1, as kvm-unit-tests'
/// `mte_set_tcf` does. EL0's mode (TCF0, 0 from boot) stays as it was.
///
/// # Panics
/// When the CPU lacks the level the mode needs ([`TagCheckMode::required_level`]).
pub fn set_tag_check_mode(mode: TagCheckMode) {
    assert_level(mode);
    update_sctlr(|value| (value & !sctlr::TCF) | mode.field() << sctlr::TCF_SHIFT);
    clear_tag_fault_status();
}

/// Sets the EL0 tag checking mode (SCTLR_EL1.TCF0), then clears TFSRE0_EL1. Safe: EL0 code
/// (`run_in_user_mode`) uses only untagged memory of its own.
///
/// # Panics
/// When the CPU lacks the level the mode needs ([`TagCheckMode::required_level`]).
pub fn set_user_tag_check_mode(mode: TagCheckMode) {
    assert_level(mode);
    update_sctlr(|value| (value & !sctlr::TCF0) | mode.field() << sctlr::TCF0_SHIFT);
    clear_user_tag_fault_status();
}

fn assert_level(mode: TagCheckMode) {
    assert!(
        level() >= mode.required_level(),
        "tag check mode {mode:?} needs MTE level {:?}",
        mode.required_level()
    );
}

/// The EL1 tag checking mode (SCTLR_EL1.TCF) as read back.
pub fn tag_check_mode() -> TagCheckMode {
    TagCheckMode::from_field((SCTLR_EL1.get() & sctlr::TCF) >> sctlr::TCF_SHIFT)
}

/// The EL0 tag checking mode (SCTLR_EL1.TCF0) as read back.
pub fn user_tag_check_mode() -> TagCheckMode {
    TagCheckMode::from_field((SCTLR_EL1.get() & sctlr::TCF0) >> sctlr::TCF0_SHIFT)
}

/// TFSR_EL1 (S3_0_C5_C6_0): the accumulated asynchronous tag check faults of EL1
/// ([`tfsr::TF0`](super::registers::tfsr::TF0) for the lower address range,
/// [`tfsr::TF1`](super::registers::tfsr::TF1) the upper one). Waits for this CPU's earlier
/// accesses first (DSB, ISB), so that their faults show.
pub fn tag_fault_status() -> u64 {
    let value: u64;
    // SAFETY: barriers and a register read; no memory changes.
    unsafe {
        asm!("dsb nsh", "isb", "mrs {value}, S3_0_C5_C6_0",
             value = out(reg) value, options(nostack, preserves_flags))
    };
    value
}

/// Clears TFSR_EL1.
pub fn clear_tag_fault_status() {
    // SAFETY: TFSR_EL1 only records tag check faults; the runtime does not rely on it.
    unsafe { asm!("msr S3_0_C5_C6_0, xzr", "isb", options(nostack, preserves_flags)) };
}

/// [`tag_fault_status`], then clears it (kvm-unit-tests' `get_clear_tfsr`).
pub fn take_tag_fault_status() -> u64 {
    let value = tag_fault_status();
    clear_tag_fault_status();
    value
}

/// TFSRE0_EL1 (S3_0_C5_C6_1): the accumulated asynchronous tag check faults of EL0 (same
/// fields as TFSR_EL1), after a DSB and ISB.
pub fn user_tag_fault_status() -> u64 {
    let value: u64;
    // SAFETY: barriers and a register read; no memory changes.
    unsafe {
        asm!("dsb nsh", "isb", "mrs {value}, S3_0_C5_C6_1",
             value = out(reg) value, options(nostack, preserves_flags))
    };
    value
}

/// Clears TFSRE0_EL1.
pub fn clear_user_tag_fault_status() {
    // SAFETY: TFSRE0_EL1 only records EL0's tag check faults; the runtime does not rely on it.
    unsafe { asm!("msr S3_0_C5_C6_1, xzr", "isb", options(nostack, preserves_flags)) };
}

/// [`user_tag_fault_status`], then clears it.
pub fn take_user_tag_fault_status() -> u64 {
    let value = user_tag_fault_status();
    clear_user_tag_fault_status();
    value
}

/// GCR_EL1 (S3_0_C1_C0_6): the tags IRG excludes ([`super::registers::gcr`]).
pub fn gcr_el1() -> u64 {
    let value: u64;
    // SAFETY: a register read.
    unsafe {
        asm!("mrs {value}, S3_0_C1_C0_6", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes GCR_EL1. Safe: it only steers IRG.
pub fn set_gcr_el1(value: u64) {
    // SAFETY: GCR_EL1 only affects the tags IRG generates.
    unsafe {
        asm!("msr S3_0_C1_C0_6, {value}", "isb", value = in(reg) value, options(nostack, preserves_flags))
    };
}

/// RGSR_EL1 (S3_0_C1_C0_5): IRG's pseudo-random generator state ([`super::registers::rgsr`]).
pub fn rgsr_el1() -> u64 {
    let value: u64;
    // SAFETY: a register read.
    unsafe {
        asm!("mrs {value}, S3_0_C1_C0_5", value = out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes RGSR_EL1. Safe: it only steers IRG.
pub fn set_rgsr_el1(value: u64) {
    // SAFETY: RGSR_EL1 only affects the tags IRG generates.
    unsafe {
        asm!("msr S3_0_C1_C0_5, {value}", "isb", value = in(reg) value, options(nostack, preserves_flags))
    };
}

/// `address` with logical tag `tag` (bits 59:56).
pub const fn with_tag(address: u64, tag: u8) -> u64 {
    (address & !TAG_MASK) | ((tag as u64 & 0xf) << TAG_SHIFT)
}

/// The logical tag of a pointer (bits 59:56).
pub const fn tag_of(address: u64) -> u8 {
    ((address & TAG_MASK) >> TAG_SHIFT) as u8
}

/// IRG: `address` with a random tag that neither GCR_EL1.Exclude nor `exclude` (a 16-bit
/// mask, bit n excludes tag n) contains; tag 0 when all are excluded or tag access is off.
pub fn insert_random_tag(address: u64, exclude: u16) -> u64 {
    let tagged: u64;
    // SAFETY: IRG computes a value from registers (and updates RGSR_EL1); no memory access.
    unsafe {
        asm!(".arch_extension memtag", "irg {tagged}, {address}, {exclude}",
             tagged = lateout(reg) tagged, address = in(reg) address, exclude = in(reg) exclude as u64,
             options(nomem, nostack, preserves_flags))
    };
    tagged
}

/// A page of Tagged Normal memory (MAIR 0xF0), mapped at its own virtual address, accessed
/// only through tagged pointers by fault-catching probes (no Rust reference points into it).
/// Its allocation tags are whatever its frame had until the test sets them.
pub struct TaggedPage {
    page: TestPage,
}

impl TaggedPage {
    /// Allocates a zeroed page and maps it read-write as Tagged Normal memory; `None` when the
    /// CPU lacks FEAT_MTE2 (no tag storage, and attribute 0xF0 is reserved).
    ///
    /// # Panics
    /// When no frame is left.
    pub fn new() -> Option<TaggedPage> {
        if level() < Level::Full {
            return None;
        }
        let page = TestPage::new();
        // SAFETY: the page's virtual address and frame belong to this TestPage alone, which
        // no Rust reference points into; the CPU has FEAT_MTE2.
        unsafe { super::mmu::map_tagged_page(page.address(), page.frame(), Protection::READ_WRITE) };
        Some(TaggedPage { page })
    }

    /// Lets EL0 read and write the page too (`run_in_user_mode` closures, with [`load`] and
    /// [`store`]).
    ///
    /// [`load`]: TaggedPage::load
    /// [`store`]: TaggedPage::store
    pub fn share_with_user_mode(&self) {
        let protection = Protection {
            user: true,
            ..Protection::READ_WRITE
        };
        // SAFETY: as in `new`; EL0 access changes nothing for Rust code.
        unsafe { super::mmu::map_tagged_page(self.address(), self.frame(), protection) };
    }

    /// The page's (untagged) virtual address.
    pub fn address(&self) -> u64 {
        self.page.address()
    }

    /// The page's frame (its physical address, identity mapped as untagged normal memory).
    pub fn frame(&self) -> u64 {
        self.page.frame()
    }

    /// The pointer to `offset` with logical tag `tag`.
    ///
    /// # Panics
    /// When `offset` is outside the page.
    pub fn pointer(&self, tag: u8, offset: u64) -> u64 {
        assert!(offset < PAGE_SIZE, "offset {offset} is outside the page");
        with_tag(self.address() + offset, tag)
    }

    /// STG: sets the allocation tag of the granule that holds `offset` to `tag`.
    pub fn set_tag(&self, offset: u64, tag: u8) {
        let pointer = self.pointer(tag, offset & !(GRANULE - 1));
        // SAFETY: the granule lies in this page, mapped writable, which no Rust object
        // occupies; STG writes its allocation tag only.
        unsafe {
            asm!(".arch_extension memtag", "stg {pointer}, [{pointer}]", pointer = in(reg) pointer,
                 options(nostack, preserves_flags))
        };
    }

    /// STG over the whole page: every granule's allocation tag becomes `tag`.
    pub fn set_tags(&self, tag: u8) {
        for offset in (0..PAGE_SIZE).step_by(GRANULE as usize) {
            self.set_tag(offset, tag);
        }
    }

    /// LDG: the allocation tag of the granule that holds `offset`.
    pub fn tag(&self, offset: u64) -> u8 {
        let mut pointer = self.pointer(0, offset);
        // SAFETY: LDG reads the allocation tag of a granule of this mapped page into the tag
        // bits of the register; no Rust-visible memory is read.
        unsafe {
            asm!(".arch_extension memtag", "ldg {pointer}, [{pointer}]", pointer = inout(reg) pointer,
                 options(nostack, preserves_flags, readonly))
        };
        tag_of(pointer)
    }

    /// Reads the 64-bit word at `offset` through a pointer with logical tag `tag`: the value or
    /// the exception (a Tag Check Fault when synchronous checks are on and the tags differ),
    /// and the load's own address.
    pub fn try_load(&self, tag: u8, offset: u64) -> Attempt<u64> {
        super::instructions::try_load(self.word(tag, offset))
    }

    /// Writes the 64-bit word `value` at `offset` through a pointer with logical tag `tag`:
    /// the exception, if any, and the store's own address.
    pub fn try_store(&self, tag: u8, offset: u64, value: u64) -> Attempt<()> {
        // SAFETY: the store writes a word of this page, which holds no Rust object.
        unsafe { super::instructions::try_store(self.word(tag, offset), value) }
    }

    /// [`try_load`](TaggedPage::try_load) without catching: a fault goes to the enclosing
    /// `run_in_user_mode` or `catch_exception`, or ends the test.
    pub fn load(&self, tag: u8, offset: u64) -> u64 {
        super::instructions::load(self.word(tag, offset))
    }

    /// [`try_store`](TaggedPage::try_store) without catching: a fault goes to the enclosing
    /// `run_in_user_mode` or `catch_exception`, or ends the test.
    pub fn store(&self, tag: u8, offset: u64, value: u64) {
        let address = self.word(tag, offset);
        // SAFETY: the store writes this page (no Rust object); a fault abandons this frame
        // (caught by an enclosing catch) or ends the test.
        unsafe {
            asm!("str {value}, [{address}]", address = in(reg) address, value = in(reg) value, options(nostack))
        };
    }

    /// Fills the page with `byte` through pointers that carry each granule's own allocation
    /// tag (so that no check fails whatever the mode).
    pub fn fill(&self, byte: u8) {
        let word = u64::from_ne_bytes([byte; 8]);
        for offset in (0..PAGE_SIZE).step_by(8) {
            let tag = self.tag(offset);
            if let Err(exception) = self.try_store(tag, offset, word).result {
                panic!("a store with the granule's own tag faulted: {exception}");
            }
        }
    }

    fn word(&self, tag: u8, offset: u64) -> u64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= PAGE_SIZE,
            "offset {offset} is not a word of the page"
        );
        self.pointer(tag, offset)
    }
}
