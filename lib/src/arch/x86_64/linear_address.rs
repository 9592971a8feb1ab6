//! Registers that hold linear addresses and the canonical-address rule that guards them: the
//! descriptor-table bases (GDTR and IDTR, and the TR and LDTR bases that LTR and LLDT take from
//! the GDT), tried with a value and put back at once. The segment-base and SYSCALL MSRs take
//! the same rule through [`super::msr::try_wrmsr_briefly`].

use alloc::vec::Vec;
use core::arch::asm;

use super::exceptions::{Exception, catch_exception, selector};
use super::instructions::store_gdtr;

/// Whether `address` is canonical in a `bits`-bit linear-address space (48 with 4-level
/// paging, 57 with 5-level): bits 63 down to `bits - 1` are all equal.
///
/// # Panics
/// When `bits` is not in 1..=64.
pub fn is_canonical(address: u64, bits: u32) -> bool {
    assert!((1..=64).contains(&bits), "{bits} is no linear-address width");
    let shift = 64 - bits;
    (((address << shift) as i64) >> shift) as u64 == address
}

/// A register that holds the base linear address of a descriptor table or segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseRegister {
    /// GDTR: LGDT loads it from a 10-byte pseudo-descriptor, SGDT reads it.
    Gdtr,
    /// IDTR: LIDT loads it, SIDT reads it.
    Idtr,
    /// TR: LTR loads it from a 64-bit TSS descriptor in the GDT; its base cannot be read.
    Tr,
    /// LDTR: LLDT loads it from an LDT descriptor in the GDT; its base cannot be read.
    Ldtr,
}

/// The 10-byte operand of LGDT/LIDT: a 16-bit limit, then a 64-bit base.
fn pseudo_descriptor(limit: u16, base: u64) -> [u8; 10] {
    let mut operand = [0u8; 10];
    operand[..2].copy_from_slice(&limit.to_le_bytes());
    operand[2..].copy_from_slice(&base.to_le_bytes());
    operand
}

fn base_of(pseudo_descriptor: &[u8; 10]) -> u64 {
    u64::from_le_bytes(pseudo_descriptor[2..].try_into().unwrap_or([0; 8]))
}

/// A 16-byte system descriptor (present, DPL 0) of `kind` (0x2 LDT, 0x9 available 64-bit
/// TSS) with `base` and `limit`, as two GDT entries.
fn system_descriptor(kind: u64, base: u64, limit: u64) -> [u64; 2] {
    [
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | ((0x80 | kind) << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56),
        base >> 32,
    ]
}

/// Loads `register` with the base `base` (GDTR and IDTR keep their limits; TR and LDTR load
/// a descriptor with that base, appended to a copy of the GDT) and puts the runtime's value
/// back at once, with interrupts off, nothing running in between: returns the base SGDT or
/// SIDT read back while the register held `base` (`None` for TR and LDTR, whose bases cannot
/// be read), or the exception the load raised (#GP for a base that is not canonical, say).
/// kvm-unit-tests' la57 `test_register_write` for descriptor-table bases.
pub fn try_load_base_briefly(register: BaseRegister, base: u64) -> Result<Option<u64>, Exception> {
    super::interrupts::without_interrupts(|| match register {
        BaseRegister::Gdtr | BaseRegister::Idtr => try_load_table_briefly(register, base).map(Some),
        BaseRegister::Tr | BaseRegister::Ldtr => try_load_segment_briefly(register, base).map(|()| None),
    })
}

/// GDTR or IDTR: load, store, load the original, in one instruction sequence.
fn try_load_table_briefly(register: BaseRegister, base: u64) -> Result<u64, Exception> {
    let (limit, original) = match register {
        BaseRegister::Gdtr => store_gdtr(),
        _ => super::instructions::store_idtr(),
    };
    let new = pseudo_descriptor(limit, base);
    let old = pseudo_descriptor(limit, original);
    let mut seen = [0u8; 10];
    catch_exception(|| match register {
        // SAFETY: GDTR holds `base` only between the first and the last instruction, with
        // interrupts off and nothing in between that reads the table (no segment load); the
        // last one loads the original again. A fault of the first load is caught before
        // anything changed.
        BaseRegister::Gdtr => unsafe {
            asm!(
                "lgdt [{new}]", "sgdt [{seen}]", "lgdt [{old}]",
                new = in(reg) new.as_ptr(), seen = in(reg) seen.as_mut_ptr(),
                old = in(reg) old.as_ptr(), options(nostack)
            )
        },
        // SAFETY: as for GDTR: IDTR holds `base` only between the first and the last
        // instruction, with interrupts off and no exception delivered in between.
        _ => unsafe {
            asm!(
                "lidt [{new}]", "sidt [{seen}]", "lidt [{old}]",
                new = in(reg) new.as_ptr(), seen = in(reg) seen.as_mut_ptr(),
                old = in(reg) old.as_ptr(), options(nostack)
            )
        },
    })?;
    Ok(base_of(&seen))
}

/// TR or LDTR: a copy of the GDT with a descriptor for `base` appended, LTR or LLDT of it,
/// then the runtime's GDT, TSS and null LDTR again.
fn try_load_segment_briefly(register: BaseRegister, base: u64) -> Result<(), Exception> {
    let (limit, gdt_base) = store_gdtr();
    let count = (usize::from(limit) + 1) / 8;
    let mut gdt: Vec<u64> = Vec::with_capacity(count + 2);
    for entry in 0..count {
        let address = (gdt_base + entry as u64 * 8) as *const u64;
        // SAFETY: SGDT says the loaded GDT spans `limit + 1` bytes from `gdt_base`: the
        // runtime's GDT, which is only read here.
        gdt.push(unsafe { core::ptr::read_volatile(address) });
    }
    let appended = (count * 8) as u16;
    let descriptor = match register {
        BaseRegister::Tr => system_descriptor(0x9, base, 0x67),
        _ => system_descriptor(0x2, base, 0xfff),
    };
    gdt.extend_from_slice(&descriptor);
    let new_table = pseudo_descriptor((gdt.len() * 8 - 1) as u16, gdt.as_ptr() as u64);
    let old_table = pseudo_descriptor(limit, gdt_base);
    // SAFETY: the copy starts with the loaded GDT, so CS, SS and the TSS still name the same
    // descriptors; it lives until the original is loaded again below.
    unsafe { asm!("lgdt [{}]", in(reg) new_table.as_ptr(), options(nostack, readonly)) };
    let result = catch_exception(|| match register {
        // SAFETY: the appended descriptor is an available TSS; TR holds it only until the
        // runtime's TSS is loaded again below, with interrupts off (no stack switch reads it).
        BaseRegister::Tr => unsafe { asm!("ltr {0:x}", in(reg) appended, options(nostack)) },
        // SAFETY: the appended descriptor is an LDT, which no selector in use refers to; the
        // null LDTR comes back below.
        _ => unsafe { asm!("lldt {0:x}", in(reg) appended, options(nostack)) },
    });
    // SAFETY: the runtime's GDT, as SGDT reported it at the start.
    unsafe { asm!("lgdt [{}]", in(reg) old_table.as_ptr(), options(nostack, readonly)) };
    match register {
        BaseRegister::Tr => {
            let access = (gdt_base + u64::from(selector::TSS) + 5) as *mut u8;
            // SAFETY: the access byte of this CPU's TSS descriptor in the runtime's GDT, which
            // the CPU itself writes on LTR; reading it has no effect.
            let value = unsafe { access.read_volatile() };
            // SAFETY: as above; clearing the busy bit (type 0xB to 0x9) lets LTR load it again,
            // as `exceptions::init_cpu` does.
            unsafe { access.write_volatile(value & !0x02) };
            // SAFETY: the runtime's own available TSS, which TR held before.
            unsafe { asm!("ltr {0:x}", in(reg) selector::TSS, options(nostack)) };
        }
        // SAFETY: the null LDTR, the runtime's.
        _ => unsafe { asm!("lldt {0:x}", in(reg) 0u16, options(nostack)) },
    }
    drop(gdt);
    result
}
