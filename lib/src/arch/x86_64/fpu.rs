//! x87/SSE/XSAVE state: enabling CR4.OSFXSR/OSXSAVE and XCR0 access for the `xsave` test.
//!
//! The target is soft-float, so no Rust code here ever touches an x87, XMM or YMM register:
//! every vector instruction is inline assembly, and each probe that can fault runs under
//! [`catch_exception`]. XGETBV and XSETBV themselves are `instructions::try_xgetbv` and
//! `instructions::try_xsetbv`.
//!
//! These are hypervisor probes: under this project's software KVM (kvm_pvm) SSE, AVX, XSAVE
//! and XRSTOR stop the VM with a "KVM internal error" instead of running.

use alloc::boxed::Box;
use core::arch::asm;

use super::control::{Cr0Flags, Cr4Flags, read_cr0, read_cr4, try_write_cr0, try_write_cr4};
use super::cpuid::cpuid;
use super::exceptions::{Exception, catch_exception};

/// XCR0 state-component bits (SDM Vol. 1, 13.1).
pub mod component {
    /// x87 state: always set in XCR0.
    pub const X87: u64 = 1 << 0;
    /// SSE state: XMM0-15 and MXCSR.
    pub const SSE: u64 = 1 << 1;
    /// AVX state: the upper halves of YMM0-15.
    pub const YMM: u64 = 1 << 2;
}

/// Offsets in the standard (non-compacted) XSAVE area (SDM Vol. 1, 13.4).
pub mod area_offset {
    /// MXCSR (4 bytes) in the legacy region.
    pub const MXCSR: usize = 24;
    /// XMM0 (16 bytes; XMM1-15 follow).
    pub const XMM0: usize = 160;
    /// XSTATE_BV (8 bytes) in the XSAVE header.
    pub const XSTATE_BV: usize = 512;
    /// XCOMP_BV (8 bytes) in the XSAVE header.
    pub const XCOMP_BV: usize = 520;
}

/// MXCSR after reset: every SIMD floating-point exception masked.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// The XCR0 bits the processor supports: CPUID.(0xD,0) EDX:EAX, or 0 without leaf 0xD.
pub fn supported_xcr0() -> u64 {
    if cpuid(0, 0).eax < 0xd {
        return 0;
    }
    let leaf = cpuid(0xd, 0);
    (u64::from(leaf.edx) << 32) | u64::from(leaf.eax)
}

/// The size in bytes of the XSAVE area for the components XCR0 enables now:
/// CPUID.(0xD,0):EBX (0 without leaf 0xD).
pub fn xsave_area_size() -> u32 {
    if cpuid(0, 0).eax < 0xd {
        return 0;
    }
    cpuid(0xd, 0).ebx
}

/// Sets or clears CR4.OSXSAVE; returns the exception of the CR4 write (#GP where XSAVE is
/// not advertised).
pub fn try_set_osxsave(enabled: bool) -> Result<(), Exception> {
    let cr4 = read_cr4();
    let osxsave = Cr4Flags::OSXSAVE.bits();
    try_write_cr4(if enabled { cr4 | osxsave } else { cr4 & !osxsave })
}

/// Lets SSE instructions run: sets CR4.OSFXSR and OSXMMEXCPT, clears CR0.EM and TS and
/// sets CR0.MP, as an SSE-using OS does (SDM Vol. 3, 13.1.3).
pub fn try_enable_sse() -> Result<(), Exception> {
    let cr0 = Cr0Flags::from_bits_retain(read_cr0());
    let cr0 = (cr0 - Cr0Flags::EMULATE_COPROCESSOR - Cr0Flags::TASK_SWITCHED) | Cr0Flags::MONITOR_COPROCESSOR;
    try_write_cr0(cr0.bits())?;
    try_write_cr4(read_cr4() | (Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE).bits())
}

/// Loads `value` into XMM0 (MOVDQU): #UD while CR4.OSFXSR is clear or CR0.EM is set.
pub fn try_write_xmm0(value: u128) -> Result<(), Exception> {
    let bytes = value.to_le_bytes();
    catch_exception(|| {
        // SAFETY: MOVDQU reads 16 bytes of `bytes`, which lives on this frame, and writes
        // XMM0, which no Rust code on this soft-float target uses; a fault is caught.
        unsafe {
            asm!("movdqu xmm0, [{}]", in(reg) bytes.as_ptr(), out("xmm0") _, options(nostack, readonly))
        };
    })
}

/// Reads XMM0 (MOVDQU): #UD while CR4.OSFXSR is clear or CR0.EM is set.
pub fn try_read_xmm0() -> Result<u128, Exception> {
    let mut bytes = [0u8; 16];
    let destination = bytes.as_mut_ptr();
    catch_exception(|| {
        // SAFETY: MOVDQU writes 16 bytes into `bytes`, which lives on this frame and is 16
        // bytes long; a fault is caught.
        unsafe { asm!("movdqu [{}], xmm0", in(reg) destination, options(nostack)) };
    })?;
    Ok(u128::from_le_bytes(bytes))
}

/// Copies 32 bytes through two YMM registers with AVX instructions (VMOVDQU to YMM0,
/// VMOVDQA YMM0 to YMM15, VMOVDQU from YMM15): #UD unless CR4.OSXSAVE is set, XCR0 enables
/// both SSE and AVX state, and AVX is supported (SDM Vol. 1, 14.3).
pub fn try_copy_through_ymm(source: &[u8; 32]) -> Result<[u8; 32], Exception> {
    let mut copy = [0u8; 32];
    let destination = copy.as_mut_ptr();
    catch_exception(|| {
        // SAFETY: the loads read the 32 bytes of `source`, the store writes the 32 bytes of
        // `copy`; YMM0 and YMM15 are not used by any Rust code on this soft-float target. A
        // fault is caught.
        unsafe {
            asm!(
                "vmovdqu ymm0, [{source}]",
                "vmovdqa ymm15, ymm0",
                "vmovdqu [{destination}], ymm15",
                source = in(reg) source.as_ptr(),
                destination = in(reg) destination,
                out("xmm0") _,
                out("xmm15") _,
                options(nostack),
            )
        };
    })?;
    Ok(copy)
}

/// kvm-unit-tests' YMM register pairs: (0, 15), (1, 14), ..., (13, 2), (14, 2), (15, 1).
pub const YMM_PAIRS: [(u8, u8); 16] = [
    (0, 15),
    (1, 14),
    (2, 13),
    (3, 12),
    (4, 11),
    (5, 10),
    (6, 9),
    (7, 8),
    (8, 7),
    (9, 6),
    (10, 5),
    (11, 4),
    (12, 3),
    (13, 2),
    (14, 2),
    (15, 1),
];

/// How [`try_move_through_ymm_pair`] loads and stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YmmMove {
    /// VMOVDQA load and store.
    Aligned,
    /// VMOVNTDQA load, VMOVNTDQ store (non-temporal).
    NonTemporal,
}

/// 32 bytes aligned for VMOVDQA and VMOVNTDQ{A}.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ymm(pub [u8; 32]);

macro_rules! ymm_pair {
    ($source:expr, $moved:expr, $native:expr, $kind:expr, $first:literal, $second:literal, $first_xmm:tt, $second_xmm:tt) => {
        match $kind {
            // SAFETY: the load reads the 32 aligned bytes at `source`, the stores write the 32
            // aligned bytes at `moved` and `native`, all three buffers owned by the caller for
            // the asm's duration; the two YMM registers are declared clobbered and no Rust code
            // on this soft-float target uses them.
            YmmMove::Aligned => unsafe {
                asm!(
                    concat!("vmovdqa ymm", $first, ", [{source}]"),
                    concat!("vmovdqa ymm", $second, ", ymm", $first),
                    concat!("vmovdqa [{moved}], ymm", $second),
                    concat!("vmovdqa [{native}], ymm", $second),
                    source = in(reg) $source,
                    moved = in(reg) $moved,
                    native = in(reg) $native,
                    out($first_xmm) _,
                    out($second_xmm) _,
                    options(nostack),
                )
            },
            // SAFETY: as for the aligned moves; SFENCE orders the non-temporal store.
            YmmMove::NonTemporal => unsafe {
                asm!(
                    concat!("vmovntdqa ymm", $first, ", [{source}]"),
                    concat!("vmovdqa ymm", $second, ", ymm", $first),
                    concat!("vmovntdq [{moved}], ymm", $second),
                    "sfence",
                    concat!("vmovdqa [{native}], ymm", $second),
                    source = in(reg) $source,
                    moved = in(reg) $moved,
                    native = in(reg) $native,
                    out($first_xmm) _,
                    out($second_xmm) _,
                    options(nostack),
                )
            },
        }
    };
}

/// What [`try_move_through_ymm_pair`] leaves in its three buffers (kvm-unit-tests' `v32_1`,
/// `v32_2` and `v32_3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YmmPairCopies {
    /// The source buffer after the load: a load must leave it as it was.
    pub source: Ymm,
    /// What the [`YmmMove`]'s own store (VMOVDQA or VMOVNTDQ) wrote from the second register.
    pub moved: Ymm,
    /// What a plain VMOVDQA store of the second register wrote afterwards.
    pub native: Ymm,
}

/// kvm-unit-tests' VMOVDQA / VMOVNTDQ{A} check of one register pair from [`YMM_PAIRS`]:
/// loads a copy of `source` into the first register (VMOVDQA or VMOVNTDQA), copies it to the
/// second with VMOVDQA, stores the second with the kind's store and then with VMOVDQA: returns
/// the three buffers, or the exception (#UD without AVX enabled in XCR0).
///
/// # Panics
/// When `pair` is not one of [`YMM_PAIRS`].
pub fn try_move_through_ymm_pair(
    pair: (u8, u8),
    kind: YmmMove,
    source: &Ymm,
) -> Result<YmmPairCopies, Exception> {
    let mut copies = YmmPairCopies {
        source: *source,
        moved: Ymm([0; 32]),
        native: Ymm([0; 32]),
    };
    let loaded = copies.source.0.as_mut_ptr();
    let moved = copies.moved.0.as_mut_ptr();
    let native = copies.native.0.as_mut_ptr();
    catch_exception(|| match pair {
        (0, 15) => ymm_pair!(loaded, moved, native, kind, "0", "15", "xmm0", "xmm15"),
        (1, 14) => ymm_pair!(loaded, moved, native, kind, "1", "14", "xmm1", "xmm14"),
        (2, 13) => ymm_pair!(loaded, moved, native, kind, "2", "13", "xmm2", "xmm13"),
        (3, 12) => ymm_pair!(loaded, moved, native, kind, "3", "12", "xmm3", "xmm12"),
        (4, 11) => ymm_pair!(loaded, moved, native, kind, "4", "11", "xmm4", "xmm11"),
        (5, 10) => ymm_pair!(loaded, moved, native, kind, "5", "10", "xmm5", "xmm10"),
        (6, 9) => ymm_pair!(loaded, moved, native, kind, "6", "9", "xmm6", "xmm9"),
        (7, 8) => ymm_pair!(loaded, moved, native, kind, "7", "8", "xmm7", "xmm8"),
        (8, 7) => ymm_pair!(loaded, moved, native, kind, "8", "7", "xmm8", "xmm7"),
        (9, 6) => ymm_pair!(loaded, moved, native, kind, "9", "6", "xmm9", "xmm6"),
        (10, 5) => ymm_pair!(loaded, moved, native, kind, "10", "5", "xmm10", "xmm5"),
        (11, 4) => ymm_pair!(loaded, moved, native, kind, "11", "4", "xmm11", "xmm4"),
        (12, 3) => ymm_pair!(loaded, moved, native, kind, "12", "3", "xmm12", "xmm3"),
        (13, 2) => ymm_pair!(loaded, moved, native, kind, "13", "2", "xmm13", "xmm2"),
        (14, 2) => ymm_pair!(loaded, moved, native, kind, "14", "2", "xmm14", "xmm2"),
        (15, 1) => ymm_pair!(loaded, moved, native, kind, "15", "1", "xmm15", "xmm1"),
        _ => panic!("YMM pair {pair:?} is not one of YMM_PAIRS"),
    })?;
    Ok(copies)
}

/// Loads YMM1 with `value` (VMOVDQA), leaving it there: for a check that YMM state survives
/// something (an XCR0 change) until [`try_read_ymm1`]. No Rust code on this soft-float target
/// touches YMM1 in between.
pub fn try_write_ymm1(value: &Ymm) -> Result<(), Exception> {
    let source = value.0.as_ptr();
    catch_exception(|| {
        // SAFETY: the load reads the 32 aligned bytes of `value`; YMM1 is not used by Rust code.
        unsafe { asm!("vmovdqa ymm1, [{}]", in(reg) source, options(nostack, readonly)) };
    })
}

/// Stores YMM1 (VMOVDQA): what [`try_write_ymm1`] left there, or the exception.
pub fn try_read_ymm1() -> Result<Ymm, Exception> {
    let mut value = Ymm([0; 32]);
    let destination = value.0.as_mut_ptr();
    catch_exception(|| {
        // SAFETY: the store writes the 32 aligned bytes of `value`.
        unsafe { asm!("vmovdqa [{}], ymm1", in(reg) destination, options(nostack)) };
    })?;
    Ok(value)
}

/// Stores XMM1 (MOVDQU, SSE): the low half of YMM1.
pub fn try_read_xmm1() -> Result<u128, Exception> {
    let mut bytes = [0u8; 16];
    let destination = bytes.as_mut_ptr();
    catch_exception(|| {
        // SAFETY: MOVDQU writes the 16 bytes of `bytes`; a fault is caught.
        unsafe { asm!("movdqu [{}], xmm1", in(reg) destination, options(nostack)) };
    })?;
    Ok(u128::from_le_bytes(bytes))
}

/// A standard-format XSAVE area: 64-byte aligned, zeroed when created, large enough for
/// x87, SSE and AVX state (and more: 4 KiB).
#[repr(C, align(64))]
pub struct XsaveArea {
    /// The area's bytes, as XSAVE lays them out (see [`area_offset`]).
    pub bytes: [u8; XsaveArea::SIZE],
}

impl XsaveArea {
    /// The area's size in bytes.
    pub const SIZE: usize = 4096;

    /// A zeroed area on the heap.
    pub fn new() -> Box<XsaveArea> {
        Box::new(XsaveArea {
            bytes: [0; Self::SIZE],
        })
    }

    /// The 64-bit little-endian word at `offset`.
    pub fn word(&self, offset: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.bytes[offset..offset + 8]);
        u64::from_le_bytes(word)
    }

    /// Stores the 64-bit little-endian word `value` at `offset`.
    pub fn set_word(&mut self, offset: usize, value: u64) {
        self.bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// The 128-bit little-endian value at `offset` (an XMM register's slot).
    pub fn vector(&self, offset: usize) -> u128 {
        let mut vector = [0u8; 16];
        vector.copy_from_slice(&self.bytes[offset..offset + 16]);
        u128::from_le_bytes(vector)
    }

    /// The address `offset` bytes into the area, after checking that the state XCR0 enables
    /// fits from there.
    fn operand(&mut self, offset: usize) -> *mut u8 {
        assert!(
            offset + xsave_area_size() as usize <= Self::SIZE,
            "the XSAVE area at offset {offset} is too small for XCR0's components"
        );
        self.bytes[offset..].as_mut_ptr()
    }
}

/// XSAVE of the state components `components` (EDX:EAX, ANDed with XCR0 by the CPU) to
/// `area`, `offset` bytes in (0 for the aligned area): #UD with CR4.OSXSAVE clear, #GP when
/// the operand is not 64-byte aligned.
pub fn try_xsave(area: &mut XsaveArea, offset: usize, components: u64) -> Result<(), Exception> {
    let operand = area.operand(offset);
    catch_exception(|| {
        // SAFETY: XSAVE writes at most CPUID.(0xD,0):EBX bytes (checked by `operand`) into
        // `area`, which this call borrows mutably; it only reads the processor state. A
        // fault is caught.
        unsafe {
            asm!("xsave64 [{}]", in(reg) operand, in("eax") components as u32,
                 in("edx") (components >> 32) as u32, options(nostack))
        };
    })
}

/// XRSTOR of the state components `components` from `area`, `offset` bytes in: components
/// whose XSTATE_BV bit is clear are set to their initial state. #UD with CR4.OSXSAVE clear,
/// #GP for a misaligned operand or an invalid XSAVE header.
///
/// The components loaded are x87, SSE and AVX registers only (this soft-float code keeps no
/// state in them), unless XCR0 enables more.
pub fn try_xrstor(area: &mut XsaveArea, offset: usize, components: u64) -> Result<(), Exception> {
    let operand = area.operand(offset);
    catch_exception(|| {
        // SAFETY: XRSTOR only reads `area` and loads vector/x87 registers that no Rust code
        // on this soft-float target uses; a fault (#GP for a bad header) is caught.
        unsafe {
            asm!("xrstor64 [{}]", in(reg) operand, in("eax") components as u32,
                 in("edx") (components >> 32) as u32, out("xmm0") _, options(nostack, readonly))
        };
    })
}
