//! Control registers: CR0, CR2, CR3, CR4 and CR8, with the `x86_64` crate's flag types for
//! their bits.
//!
//! The runtime runs in long mode with its own page tables, so a few bits are its own: CR0.PE
//! and CR0.PG, CR4.PAE, and CR3's page-table address. The safe `try_write_*` functions refuse
//! to change those (tests toggle everything else: CR0.WP/TS/AM/MP/EM, CR4.PCIDE/SMAP/SMEP/TSD/
//! UMIP/OSXSAVE, reserved bits that must fault, ...); the `unsafe` `*_unrestricted` variants
//! are for tests that must, such as clearing CR0.PG where the CPU must refuse.

use core::arch::asm;

use super::exceptions::{Exception, catch_exception};

pub use x86_64::registers::control::{Cr0Flags, Cr3Flags, Cr4Flags};
pub use x86_64::registers::rflags::RFlags;
pub use x86_64::registers::xcontrol::XCr0Flags;

/// The CR0 bits the runtime relies on: protected mode and paging.
pub const CR0_OWNED: Cr0Flags = Cr0Flags::PROTECTED_MODE_ENABLE.union(Cr0Flags::PAGING);
/// The CR4 bits the runtime relies on: PAE paging.
pub const CR4_OWNED: Cr4Flags = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION;
/// CR4.LAM_SUP (bit 28): linear-address masking for supervisor pointers (bit 63 set), LAM48
/// with 4-level paging (SDM Vol. 3, "Linear-Address Pre-Processing"). The `x86_64` crate does
/// not name it.
pub const CR4_LAM_SUP: Cr4Flags = Cr4Flags::from_bits_retain(1 << 28);
/// CR3.LAM_U57 (bit 61): LAM57 for user pointers (bit 63 clear); it wins over LAM_U48.
pub const CR3_LAM_U57: u64 = 1 << 61;
/// CR3.LAM_U48 (bit 62): LAM48 for user pointers, when LAM_U57 is clear.
pub const CR3_LAM_U48: u64 = 1 << 62;
/// The CR3 bits that are not the runtime's page-table address: the PCID (or PWT/PCD) in bits
/// 11:0, the LAM bits 62:61 (the runtime's addresses carry no metadata, so masking it changes
/// none of them) and bit 63, which asks MOV to CR3 not to flush a PCID's TLB entries.
pub const CR3_NOT_OWNED: u64 = 0xfff | CR3_LAM_U57 | CR3_LAM_U48 | 1 << 63;

/// CR0.
pub fn read_cr0() -> u64 {
    x86_64::registers::control::Cr0::read_raw()
}

/// CR2: the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// CR3.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects at CPL 0.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CR4.
pub fn read_cr4() -> u64 {
    x86_64::registers::control::Cr4::read_raw()
}

/// MOV from CR8: the task-priority class.
pub fn read_cr8() -> u64 {
    let value: u64;
    // SAFETY: reading CR8 at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr8", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR2 (only #PF writes it otherwise).
pub fn write_cr2(value: u64) {
    // SAFETY: CR2 is a plain register that nothing but #PF reports use.
    unsafe { asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// MOV to CR8: sets the task-priority class (bits 3:0 of `value`; the rest are reserved and
/// left clear).
pub fn write_cr8(value: u64) {
    // SAFETY: CR8 only masks interrupts by priority; it touches no memory.
    unsafe { asm!("mov cr8, {}", in(reg) value & 0xf, options(nomem, nostack, preserves_flags)) };
}

/// Writes CR0, or returns the exception (#GP for reserved bits or invalid combinations such
/// as NW without CD). kvm-unit-tests' `write_cr0_safe`.
///
/// # Panics
/// When `value` changes a bit of [`CR0_OWNED`].
pub fn try_write_cr0(value: u64) -> Result<(), Exception> {
    let changed = Cr0Flags::from_bits_retain(read_cr0() ^ value);
    assert!(
        !changed.intersects(CR0_OWNED),
        "CR0 <- {value:#x} would change {:?}, which the runtime owns",
        changed & CR0_OWNED
    );
    // SAFETY: PE and PG stay as they are.
    unsafe { try_write_cr0_unrestricted(value) }
}

/// Writes any value to CR0, or returns the exception.
///
/// # Safety
/// A write that does not fault must keep CR0.PE and CR0.PG set: the runtime runs in long
/// mode with paging (clearing PG while CR4.PCIDE is set, say, must raise #GP).
pub unsafe fn try_write_cr0_unrestricted(value: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: the caller keeps paging on; a fault is caught.
        unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack)) };
    })
}

/// Sets (`on`) or clears CR0.WP, leaving the other CR0 bits as they are.
pub fn try_set_write_protect(on: bool) -> Result<(), Exception> {
    let cr0 = read_cr0();
    let bit = Cr0Flags::WRITE_PROTECT.bits();
    try_write_cr0(if on { cr0 | bit } else { cr0 & !bit })
}

/// Writes CR3, or returns the exception (#GP for reserved bits, such as bit 63 while
/// CR4.PCIDE is clear). kvm-unit-tests' `write_cr3_safe`.
///
/// # Panics
/// When `value` names other page tables than the runtime's (only the bits of
/// [`CR3_NOT_OWNED`] may differ).
pub fn try_write_cr3(value: u64) -> Result<(), Exception> {
    let current = read_cr3();
    assert!(
        (current ^ value) & !CR3_NOT_OWNED == 0,
        "CR3 <- {value:#x} would leave the runtime's page tables at {current:#x}"
    );
    catch_exception(|| {
        // SAFETY: the value keeps the runtime's page tables (checked above); a fault is caught.
        unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack)) };
    })
}

/// Writes CR4, or returns the exception (#GP for reserved or unsupported bits).
/// kvm-unit-tests' `write_cr4_safe`.
///
/// # Panics
/// When `value` changes a bit of [`CR4_OWNED`].
pub fn try_write_cr4(value: u64) -> Result<(), Exception> {
    check_cr4_owned(value);
    catch_exception(|| {
        // SAFETY: PAE stays as it is (checked above), and no other CR4 bit breaks Rust's or the
        // runtime's guarantees: SMEP/SMAP/UMIP/TSD only make later accesses or instructions
        // fault, OSFXSR/OSXSAVE only enable state this soft-float code never uses, PCIDE and
        // PGE only change TLB tagging, LAM_SUP only masks metadata in upper-half pointers,
        // which the runtime does not use; LA57 cannot change in 64-bit mode (#GP); a fault is
        // caught.
        unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack)) };
    })
}

/// CR4.LA57 (bit 12): 5-level paging. The runtime runs with 4-level paging; in IA-32e mode
/// MOV to CR4 must refuse to change the bit (#GP(0), SDM Vol. 2, "MOV—Move to/from Control
/// Registers").
pub const CR4_LA57: Cr4Flags = Cr4Flags::from_bits_retain(1 << 12);

/// Writes any value to CR4, or returns the exception: for the writes the CPU must refuse,
/// such as a change of CR4.LA57 in 64-bit mode (kvm-unit-tests' access test).
///
/// # Safety
/// A write that does not fault must keep what the runtime relies on: CR4.PAE, and the paging
/// mode (CR4.LA57); a CPU that takes such a write breaks the runtime's page walks.
pub unsafe fn try_write_cr4_unrestricted(value: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: the caller keeps PAE and the paging mode, or expects the CPU to refuse the
        // write; a fault is caught.
        unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack)) };
    })
}

/// Panics when writing `value` to CR4 would change a bit of [`CR4_OWNED`].
pub(crate) fn check_cr4_owned(value: u64) {
    let changed = Cr4Flags::from_bits_retain(read_cr4() ^ value);
    assert!(
        !changed.intersects(CR4_OWNED),
        "CR4 <- {value:#x} would change {:?}, which the runtime owns",
        changed & CR4_OWNED
    );
}

/// LMSW: loads bits 3:0 of `msw` into CR0 (PE, MP, EM, TS; it can set PE but not clear it), or
/// returns the exception.
pub fn try_lmsw(msw: u16) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: LMSW changes only CR0.MP/EM/TS (and can only set PE, which is set): none of
        // the bits the runtime owns; a fault is caught.
        unsafe { asm!("lmsw {0:x}", in(reg) msw, options(nostack)) };
    })
}

/// RFLAGS (PUSHFQ), at any CPL: IOPL, IF, AC and the rest.
pub fn read_rflags() -> RFlags {
    RFlags::from_bits_retain(x86_64::registers::rflags::read_raw())
}
