//! Linear-address masking (LAM; SDM Vol. 3, "Linear-Address Pre-Processing"): the metadata
//! masks, pointer tagging, which masking applies to a pointer now, and a write-then-read probe
//! whose tagged pointer may only land in device memory.
//!
//! LAM lets software keep metadata in a pointer's high bits. Bit 63 says whose pointer it is:
//! a supervisor pointer (bit 63 set) is masked when CR4.LAM_SUP is set, LAM48 under 4-level
//! paging (bits 62:48 are metadata; bit 47 must equal bit 63); a user pointer (bit 63 clear)
//! by CR3.LAM_U57 (LAM57: bits 62:57 are metadata, and under 4-level paging bits 56:47 must
//! equal bit 63) or else CR3.LAM_U48 (LAM48). Masking replaces the metadata bits with the
//! bit below them (47 or 56), so a pointer that passes lands where its untagged form points.
//! It applies to memory operands (data accesses, INVLPG's operand, INVPCID's descriptor
//! pointer), not to linear addresses carried as data (the address inside INVPCID's
//! descriptor).

use super::control::{CR3_LAM_U48, CR3_LAM_U57, CR4_LAM_SUP, Cr4Flags, read_cr3, read_cr4};
use super::device::is_device_memory;
use super::exceptions::{Exception, catch_exception};
use core::arch::asm;

/// LAM48's metadata bits, 62:48 (kvm-unit-tests' `LAM48_MASK`).
pub const LAM48_MASK: u64 = 0x7fff_0000_0000_0000;
/// LAM57's metadata bits, 62:57 (kvm-unit-tests' `LAM57_MASK`).
pub const LAM57_MASK: u64 = 0x7e00_0000_0000_0000;
/// The metadata [`tag`] puts into the masked bits: kvm-unit-tests' `NONCANONICAL` pattern,
/// which makes any pointer non-canonical where no masking applies.
pub const METADATA: u64 = 0xaaaa_aaaa_aaaa_aaaa;

/// `address` with the bits of `mask` replaced by [`METADATA`]'s: kvm-unit-tests'
/// `get_non_canonical`.
pub const fn tag(address: u64, mask: u64) -> u64 {
    (address & !mask) | (METADATA & mask)
}

/// The masking the CPU applies to a pointer, as CR3 and CR4 now stand.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Masking {
    /// None: the pointer must be canonical.
    None,
    /// LAM48: bits 62:48 are metadata.
    Lam48,
    /// LAM57: bits 62:57 are metadata.
    Lam57,
}

impl Masking {
    /// The metadata bits, or `None` without masking.
    pub const fn mask(self) -> Option<u64> {
        match self {
            Masking::None => None,
            Masking::Lam48 => Some(LAM48_MASK),
            Masking::Lam57 => Some(LAM57_MASK),
        }
    }
}

/// Whether `address` is a supervisor pointer for LAM: bit 63 set.
pub const fn is_supervisor_pointer(address: u64) -> bool {
    address >> 63 == 1
}

/// The masking that applies to `address` now: CR4.LAM_SUP (with CR4.LA57) for supervisor
/// pointers, CR3.LAM_U57 or else CR3.LAM_U48 for user pointers.
pub fn masking(address: u64) -> Masking {
    let cr4 = Cr4Flags::from_bits_retain(read_cr4());
    if is_supervisor_pointer(address) {
        if !cr4.contains(CR4_LAM_SUP) {
            Masking::None
        } else if cr4.contains(Cr4Flags::L5_PAGING) {
            Masking::Lam57
        } else {
            Masking::Lam48
        }
    } else {
        let cr3 = read_cr3();
        if cr3 & CR3_LAM_U57 != 0 {
            Masking::Lam57
        } else if cr3 & CR3_LAM_U48 != 0 {
            Masking::Lam48
        } else {
            Masking::None
        }
    }
}

/// `address` sign-extended from bit `bit`: what LAM makes of a pointer whose metadata lies
/// above `bit` (47 for LAM48, 56 for LAM57).
const fn sign_extend(address: u64, bit: u32) -> u64 {
    let shift = 63 - bit;
    (((address << shift) as i64) >> shift) as u64
}

/// Whether `address` is canonical under 4-level paging (bits 63:47 all equal).
const fn is_canonical(address: u64) -> bool {
    sign_extend(address, 47) == address
}

/// Writes `value` through `pointer` with one 64-bit MOV, then reads it back through `pointer`
/// with another: kvm-unit-tests' `do_mov`. Returns what the read returned, or the exception
/// (#GP(0) for a pointer that is not canonical after masking).
///
/// A pointer that does not fault lands where the CPU's masking (none, LAM48 or LAM57, for
/// the runtime's 4-level paging) takes it; each such place must lie in device memory (the
/// MMIO hole or a device window, see `device`), where no Rust object lives.
///
/// # Panics
/// When one of those places is canonical and not device memory.
pub fn try_write_read(pointer: u64, value: u64) -> Result<u64, Exception> {
    for landing in [pointer, sign_extend(pointer, 47), sign_extend(pointer, 56)] {
        assert!(
            !is_canonical(landing) || is_device_memory(landing, 8),
            "{pointer:#x} may land at {landing:#x}, which is not device memory"
        );
    }
    catch_exception(|| {
        let read: u64;
        // SAFETY: the pointer lands in device memory (checked above), where no Rust object
        // lives, or faults, which is caught.
        unsafe {
            asm!(
                "mov qword ptr [{pointer}], {value}",
                "mov {read}, qword ptr [{pointer}]",
                pointer = in(reg) pointer,
                value = in(reg) value,
                read = lateout(reg) read,
                options(nostack, preserves_flags),
            )
        };
        read
    })
}
