//! Supervisor-mode access and execution protection (SMAP/SMEP): STAC/CLAC and user pages.
//!
//! With CR4.SMAP set, a supervisor-mode (CPL 0) data access to a page the paging structures
//! mark user-accessible faults unless it is explicit and RFLAGS.AC is set; implicit
//! supervisor-mode accesses (to the GDT, LDT, IDT or TSS) fault whatever AC says. With
//! CR4.SMEP set, a CPL-0 instruction fetch from a user page faults (SDM Vol. 3, 4.6).
//!
//! The probes here set RFLAGS.AC only around the one access they test, so the runtime never
//! runs with it set; `catch_exception` restores RFLAGS when an access faults.
//!
//! A test that enables SMAP or SMEP must not have used `run_in_user_mode` first: that makes
//! the runtime's own image user-accessible, and with SMAP or SMEP set the kernel could no
//! longer touch its data or run its code.

use alloc::vec::Vec;
use core::arch::asm;

use super::control::RFlags;
use super::exceptions::{Exception, catch_exception};
use super::instructions::{store_gdtr, try_call_return};
use crate::memory::{PAGE_SIZE, TestPage};

/// RFLAGS.AC: alignment check, and at CPL 0 with SMAP, "user access allowed".
const RFLAGS_AC: u64 = RFlags::ALIGNMENT_CHECK.bits();

/// How a probe sets RFLAGS.AC around its access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AccessFlag {
    /// AC left clear, as the runtime keeps it (no CLAC executed), so SMAP blocks accesses
    /// to user pages.
    Clear,
    /// STAC before and CLAC after: AC set, so SMAP allows explicit accesses to user pages.
    Set,
    /// POPFQ sets AC before and clears it after: as `Set`, without STAC and CLAC (which
    /// need SMAP advertised, and which some hypervisors cannot emulate).
    SetByPopf,
}

/// Runs `function` with RFLAGS.AC as `flag` says, then clears AC again: the "user access"
/// window of an SMAP kernel. Only the code in `function` runs with AC set; a fault inside it
/// that a `catch_exception` outside catches restores that catch's RFLAGS (AC clear).
pub fn with_access_flag<R>(flag: AccessFlag, function: impl FnOnce() -> R) -> R {
    match flag {
        AccessFlag::Clear => {}
        // SAFETY: STAC only sets RFLAGS.AC, which matters to SMAP at CPL 0 and is cleared
        // below.
        AccessFlag::Set => unsafe { asm!("stac", options(nomem, nostack)) },
        // SAFETY: PUSHFQ/POPFQ are balanced and change only RFLAGS.AC, cleared below.
        AccessFlag::SetByPopf => unsafe {
            asm!("pushfq", "or qword ptr [rsp], {ac}", "popfq", ac = const RFLAGS_AC, options(nomem))
        },
    }
    let result = function();
    match flag {
        AccessFlag::Clear => {}
        // SAFETY: CLAC only clears RFLAGS.AC.
        AccessFlag::Set => unsafe { asm!("clac", options(nomem, nostack)) },
        // SAFETY: PUSHFQ/POPFQ are balanced and change only RFLAGS.AC.
        AccessFlag::SetByPopf => unsafe {
            asm!("pushfq", "and qword ptr [rsp], ~{ac}", "popfq", ac = const RFLAGS_AC, options(nomem))
        },
    }
    result
}

/// Runs STAC, reads RFLAGS, runs CLAC and reads RFLAGS again: returns RFLAGS.AC after each
/// (true, false expected), or #UD where SMAP is not advertised (or at CPL 3).
pub fn try_stac_clac() -> Result<(bool, bool), Exception> {
    catch_exception(|| {
        let (after_stac, after_clac): (u64, u64);
        // SAFETY: STAC and CLAC only change RFLAGS.AC, which is clear again at the end (and
        // restored by the catch on a fault); PUSHFQ/POP are balanced.
        unsafe {
            asm!("stac", "pushfq", "pop {set}", "clac", "pushfq", "pop {clear}",
                 set = out(reg) after_stac, clear = out(reg) after_clac, options(nomem))
        };
        (after_stac & RFLAGS_AC != 0, after_clac & RFLAGS_AC != 0)
    })
}

/// Runs STAC then CLAC without reading anything: for user mode (`run_in_user_mode`), where
/// both raise #UD. Unlike [`try_stac_clac`] this does not catch the exception itself.
pub fn stac_clac() {
    // SAFETY: STAC and CLAC only change RFLAGS.AC, clear again at the end; a #UD goes to the
    // enclosing catch.
    unsafe { asm!("stac", "clac", options(nomem, nostack)) };
}

/// Reads the 64-bit word at `offset` in `page` through its mapping, with RFLAGS.AC as `flag`
/// says: #PF when SMAP forbids it. Returns the word or the exception.
pub fn try_read_with(flag: AccessFlag, page: &TestPage, offset: u64) -> Result<u64, Exception> {
    with_access_flag(flag, || page.try_read(offset))
}

/// Writes the 64-bit word `value` at `offset` in `page` through its mapping, with RFLAGS.AC
/// as `flag` says: #PF when SMAP (or CR0.WP with a read-only page) forbids it.
pub fn try_write_with(flag: AccessFlag, page: &TestPage, offset: u64, value: u64) -> Result<(), Exception> {
    with_access_flag(flag, || page.try_write(offset, value))
}

/// Stores RET at `offset` in `page` and calls it, as [`try_call_return`], with RFLAGS.AC as
/// `flag` says: with CR4.SMEP set, a CPL-0 fetch from a user page raises #PF whatever AC says.
pub fn try_call_with(flag: AccessFlag, page: &TestPage, offset: u64) -> Result<(), Exception> {
    with_access_flag(flag, || try_call_return(page, offset))
}

/// PUSHes `value` with RSP at `offset` in `page` (the push writes the 8 bytes below it),
/// with RFLAGS.AC as `flag` says and interrupts off, then restores RSP: with CR4.SMAP set, a
/// push onto a user-page stack is an explicit write, which AC allows (kvm-unit-tests' smap
/// "write to user stack"). Its #PF is delivered on a stack of its own, since the current one
/// cannot take the exception frame. Returns the exception if the push faulted.
///
/// # Panics
/// When `offset` is not a multiple of 8 between 8 and the page size.
pub fn try_push_with(flag: AccessFlag, page: &TestPage, offset: u64, value: u64) -> Result<(), Exception> {
    assert!(
        offset.is_multiple_of(8) && (8..=PAGE_SIZE).contains(&offset),
        "the push must land inside the page"
    );
    let top = page.address() + offset;
    super::exceptions::with_page_fault_stack(|| {
        x86_64::instructions::interrupts::without_interrupts(|| {
            with_access_flag(flag, || {
                catch_exception(|| {
                    // SAFETY: RSP points into the test page only for the PUSH, with
                    // interrupts off, and is restored right after; a fault is caught by the
                    // enclosing catch, which restores RSP itself.
                    unsafe {
                        asm!(
                            "mov {saved}, rsp",
                            "mov rsp, {top}",
                            "push {value}",
                            "mov rsp, {saved}",
                            saved = out(reg) _,
                            top = in(reg) top,
                            value = in(reg) value,
                        )
                    };
                })
            })
        })
    })
}

/// A 64-bit data-segment descriptor (present, DPL 0, writable, accessed; base 0, limit 4 GiB)
/// for the local descriptor tables of [`try_load_fs_from_ldt`]. The accessed bit is preset, so
/// loading it reads the descriptor without writing it back.
pub const DATA_SEGMENT_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;

/// Loads FS from entry `index` of a local descriptor table at the start of `page` (`entries`
/// descriptors long, at most 512), then loads the null selector again. Loading the segment
/// reads the descriptor from the LDT: an implicit supervisor-mode access, which SMAP forbids
/// for a user page whatever RFLAGS.AC says (`flag` sets AC around the load).
///
/// The runtime's GDT is copied to the heap with an LDT descriptor appended and loaded for
/// the duration; the original GDT and a null LDTR are restored before returning. Interrupts
/// are kept off meanwhile. Returns the #PF (or #GP/#NP for a bad descriptor) if the load
/// faulted.
pub fn try_load_fs_from_ldt(
    page: &TestPage,
    entries: u16,
    index: u16,
    flag: AccessFlag,
) -> Result<(), Exception> {
    assert!(
        entries > 0 && u64::from(entries) * 8 <= PAGE_SIZE,
        "the LDT must fit in the page"
    );
    let table = page.address();
    let (limit, base) = store_gdtr();
    let count = (usize::from(limit) + 1) / 8;
    let mut gdt: Vec<u64> = Vec::with_capacity(count + 2);
    for entry in 0..count {
        let address = (base + entry as u64 * 8) as *const u64;
        // SAFETY: SGDT says the loaded GDT spans `limit + 1` bytes from `base`: the runtime's
        // GDT, which is only read here.
        gdt.push(unsafe { core::ptr::read_volatile(address) });
    }
    let ldt_selector = (count * 8) as u16;
    let ldt_limit = u64::from(entries) * 8 - 1;
    // A 16-byte LDT system descriptor (type 2, present, DPL 0) for `table`.
    gdt.push(
        (ldt_limit & 0xffff)
            | ((table & 0xff_ffff) << 16)
            | (0x82 << 40)
            | (((ldt_limit >> 16) & 0xf) << 48)
            | (((table >> 24) & 0xff) << 56),
    );
    gdt.push(table >> 32);
    let new_table = pseudo_descriptor((gdt.len() * 8 - 1) as u16, gdt.as_ptr() as u64);
    let old_table = pseudo_descriptor(limit, base);
    let segment_selector = (index << 3) | 0b100;
    super::interrupts::without_interrupts(|| {
        // SAFETY: the new GDT starts with a copy of the loaded one, so every selector in use
        // (CS, SS, the TSS) still names the same descriptor; it lives until the original is
        // restored below.
        unsafe { asm!("lgdt [{}]", in(reg) new_table.as_ptr(), options(nostack, readonly)) };
        let result = catch_exception(|| {
            // SAFETY: LLDT names the LDT descriptor appended above, present until the
            // null LDTR is loaded again below.
            unsafe { asm!("lldt {ldt:x}", ldt = in(reg) ldt_selector, options(nostack)) };
            with_access_flag(flag, || {
                // SAFETY: the runtime does not use FS (null again below); a fault goes to
                // the enclosing catch, which also restores RFLAGS.
                unsafe {
                    asm!("mov fs, {selector:x}", selector = in(reg) segment_selector, options(nostack))
                };
            });
            // SAFETY: the null selector, which the runtime keeps in FS.
            unsafe { asm!("mov fs, {null:x}", null = in(reg) 0u16, options(nostack)) };
        });
        // SAFETY: a null LDTR and the GDT SGDT reported at the start: the runtime's state.
        unsafe {
            asm!("lldt {null:x}", "lgdt [{table}]", null = in(reg) 0u16, table = in(reg) old_table.as_ptr(),
                 options(nostack, readonly))
        };
        drop(gdt);
        result
    })
}

/// The 10-byte operand of LGDT/LIDT: a 16-bit limit, then a 64-bit base.
fn pseudo_descriptor(limit: u16, base: u64) -> [u8; 10] {
    let mut operand = [0u8; 10];
    operand[..2].copy_from_slice(&limit.to_le_bytes());
    operand[2..].copy_from_slice(&base.to_le_bytes());
    operand
}
