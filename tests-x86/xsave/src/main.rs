//! xsave: the XSAVE feature set, like kvm-unit-tests' xsave test (SDM Vol. 1, 13; Vol. 2,
//! XGETBV/XSETBV/XSAVE/XRSTOR). CR4.OSXSAVE can be set only where CPUID.1:ECX.XSAVE says so
//! (#GP otherwise) and CPUID.1:ECX.OSXSAVE mirrors it; with it clear XGETBV, XSETBV and XSAVE
//! raise #UD. With it set, XCR0 takes x87|SSE (and |YMM with AVX) and refuses with #GP a clear
//! x87 bit, YMM without SSE, unsupported bits and unknown XCRs; XGETBV(1) follows XINUSE; AVX
//! runs only while XCR0 enables YMM; XSAVE/XRSTOR save, restore and initialise SSE state.
//! Also kvm-unit-tests' YMM sweep (16 register pairs, VMOVDQA and VMOVNTDQ{A}), XSETBV/XGETBV
//! ignoring RCX[63:32], and YMM state kept while XCR0.YMM is clear.
//!
//! Under this project's kvm_pvm, XGETBV, XSETBV, SSE, AVX and XSAVE stop the VM ("KVM internal
//! error"): those checks are skipped there with the reason, the CR4 and CPUID checks still run.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use vmunit::arch::control::{Cr4Flags, read_cr0, read_cr4, try_write_cr0, try_write_cr4};
use vmunit::arch::cpuid::{Feature, cpuid, is_tcg};
use vmunit::arch::fpu::{
    self, MXCSR_DEFAULT, XsaveArea, YMM_PAIRS, Ymm, YmmMove, area_offset, component, supported_xcr0,
    try_copy_through_ymm, try_enable_sse, try_move_through_ymm_pair, try_read_xmm0, try_read_xmm1,
    try_read_ymm1, try_set_osxsave, try_write_xmm0, try_write_ymm1, try_xrstor, try_xsave,
};
use vmunit::arch::instructions::{rdtsc, try_xgetbv, try_xgetbv_rcx, try_xsetbv, try_xsetbv_rcx};
use vmunit::environment::instruction_emulating_kvm;
use vmunit::{Exception, Vector, known_failure, prefix, report, report_info, report_skip};

vmunit::main!(main);

/// Why the checks that execute XGETBV, XSETBV, SSE, AVX or XSAVE are skipped under kvm_pvm.
const KVM_PVM_STOPS: &str = "this host's kvm_pvm stops the VM on XGETBV/XSETBV/SSE/AVX/XSAVE \
     (KVM internal error; reproducers xgetbv-xsetbv, sse-instruction)";

/// x87 and SSE state: the XCR0 value every XSAVE-capable processor accepts.
const X87_SSE: u64 = component::X87 | component::SSE;

/// A recognisable XMM value.
const PATTERN: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

fn raises(result: &Result<impl Sized, Exception>, vector: Vector) -> bool {
    matches!(result, Err(exception) if exception.vector == vector)
}

/// QEMU's TCG takes CR4.OSXSAVE by the wrong CPUID word.
const TCG_OSXSAVE: &str = "QEMU's TCG accepts CR4.OSXSAVE while CPUID.(0xD,1):EAX is non-zero, whatever \
     CPUID.1:ECX.XSAVE says: cr4_reserved_bits (target/i386/cpu.h) reserves OSXSAVE only when \
     env->features[FEAT_XSAVE] (that leaf) is 0 (reproduce-osxsave-without-xsave-tcg)";

/// kvm_pvm's guest CPUID ignores QEMU's CPU model.
const KVM_PVM_CPUID: &str = "kvm_pvm's guest CPUID shows the host's XSAVE whatever QEMU's -cpu says \
     (reproduce-cpuid-ignores-cpu-model)";

fn main(args: &[&str]) {
    if vmunit::args::value(args, "reproduce") == Some("osxsave") {
        // Run with -cpu ...,-xsave: setting CR4.OSXSAVE alone, with no knowledge of the host.
        if Feature::Xsave.supported() {
            report_skip!("CPUID.1:ECX.XSAVE is set: run with -cpu ...,-xsave");
        } else {
            osxsave_refused();
        }
        return;
    }
    let (cr0, cr4) = (read_cr0(), read_cr4());
    report_info!(
        "CPUID.1:ECX {:#x} (XSAVE {}, AVX {}), XCR0 support {:#x}, CR4 {cr4:#x}",
        cpuid(1, 0).ecx,
        Feature::Xsave.supported(),
        Feature::Avx.supported(),
        supported_xcr0()
    );
    if args.contains(&"disabled") {
        known_failure(instruction_emulating_kvm(), KVM_PVM_CPUID, || {
            report!(
                !Feature::Xsave.supported(),
                "CPUID.1:ECX.XSAVE is clear, as -cpu ...,-xsave asks"
            )
        });
    }
    osxsave_clear();
    if Feature::Xsave.supported() {
        xsave_enabled();
    } else {
        xsave_not_advertised();
    }
    let restored = try_write_cr4(cr4).and_then(|()| try_write_cr0(cr0));
    report!(
        restored.is_ok(),
        "CR0 and CR4 are restored to {cr0:#x}, {cr4:#x} (got {restored:x?})"
    );
    report!(
        Feature::Osxsave.supported() == (cr4 & Cr4Flags::OSXSAVE.bits() != 0),
        "CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE again ({})",
        cr4 & Cr4Flags::OSXSAVE.bits() != 0
    );
}

/// With CR4.OSXSAVE clear: CPUID.1:ECX.OSXSAVE reads 0, and the XSAVE instructions are #UD.
fn osxsave_clear() {
    let _prefix = prefix("OSXSAVE clear");
    let cleared = try_set_osxsave(false);
    report!(cleared.is_ok(), "CR4.OSXSAVE can be cleared (got {cleared:x?})");
    report!(!Feature::Osxsave.supported(), "CPUID.1:ECX.OSXSAVE reads 0");
    if instruction_emulating_kvm() {
        report_skip!("XGETBV, XSETBV and XSAVE raising #UD: {KVM_PVM_STOPS}");
        return;
    }
    let read = try_xgetbv(0);
    report!(raises(&read, Vector::UD), "XGETBV(0) raises #UD (got {read:x?})");
    let write = try_xsetbv(0, X87_SSE);
    report!(
        raises(&write, Vector::UD),
        "XSETBV(0, x87|SSE) raises #UD (got {write:x?})"
    );
    let mut area = XsaveArea::new();
    let save = try_xsave(&mut area, 0, X87_SSE);
    report!(raises(&save, Vector::UD), "XSAVE raises #UD (got {save:x?})");
}

/// Without XSAVE: CR4.OSXSAVE cannot be set.
fn xsave_not_advertised() {
    let _prefix = prefix("XSAVE not advertised");
    known_failure(is_tcg(), TCG_OSXSAVE, osxsave_refused);
    report!(!Feature::Osxsave.supported(), "CPUID.1:ECX.OSXSAVE still reads 0");
    report!(
        read_cr4() & Cr4Flags::OSXSAVE.bits() == 0,
        "CR4.OSXSAVE is still clear (CR4 {:#x})",
        read_cr4()
    );
}

/// Without XSAVE, CR4.OSXSAVE is reserved: setting it raises #GP(0) (and is undone if taken).
fn osxsave_refused() {
    let set = try_set_osxsave(true);
    if set.is_ok() {
        let _ = try_set_osxsave(false);
    }
    report!(
        matches!(set, Err(e) if e.vector == Vector::GP && e.error_code == 0),
        "setting CR4.OSXSAVE raises #GP(0) (got {set:x?})"
    );
}

fn xsave_enabled() {
    let _prefix = prefix("XSAVE advertised");
    let supported = supported_xcr0();
    report!(
        supported & X87_SSE == X87_SSE,
        "CPUID.(0xD,0) supports x87 and SSE state in XCR0 (got {supported:#x})"
    );
    let set = try_set_osxsave(true);
    report!(set.is_ok(), "CR4.OSXSAVE can be set (got {set:x?})");
    report!(Feature::Osxsave.supported(), "CPUID.1:ECX.OSXSAVE reads 1");
    report!(
        read_cr4() & Cr4Flags::OSXSAVE.bits() != 0,
        "CR4.OSXSAVE reads back set (CR4 {:#x})",
        read_cr4()
    );
    if instruction_emulating_kvm() {
        report_skip!("XCR0 values, XCRs, AVX, XINUSE, XSAVE and XRSTOR: {KVM_PVM_STOPS}");
        return;
    }
    let original = try_xgetbv(0);
    report!(
        matches!(original, Ok(value) if value & component::X87 != 0 && value & !supported == 0),
        "XGETBV(0) reads XCR0 with x87 set and only supported bits (got {original:x?})"
    );
    let sse = try_enable_sse();
    report!(sse.is_ok(), "SSE can be enabled in CR0/CR4 (got {sse:x?})");
    legal_xcr0_values(supported);
    avx(supported);
    ymm_registers(supported);
    ymm_kept_across_xcr0(supported);
    illegal_xcr0_values(supported);
    unsupported_xcrs();
    xinuse();
    save_and_restore();
    let restored = try_xsetbv(0, original.unwrap_or(component::X87));
    report!(
        restored.is_ok(),
        "XCR0 is restored to {original:x?} (got {restored:x?})"
    );
}

/// Writes `value` to XCR0 and reads it back.
fn try_write_xcr0(value: u64) -> (Result<(), Exception>, Result<u64, Exception>) {
    (try_xsetbv(0, value), try_xgetbv(0))
}

/// The XSAVE area size CPUID.(0xD,0):EBX must report for `xcr0` (standard format): the
/// legacy region and header, or the end of the highest enabled component.
fn expected_area_size(xcr0: u64) -> u32 {
    (2..64)
        .filter(|bit| xcr0 & (1 << bit) != 0)
        .map(|bit| {
            let leaf = cpuid(0xd, bit);
            leaf.ebx + leaf.eax
        })
        .fold(576, u32::max)
}

/// kvm-unit-tests' test_write_xcr0, for each XCR0 value it writes (x87, x87|SSE, and
/// x87|SSE|YMM where YMM state is supported): XSETBV and XGETBV ignore RCX[63:32] (SDM Vol. 2,
/// XGETBV/XSETBV), so an index of 0 with garbage above bit 31 writes and reads XCR0, which
/// XGETBV(0) then reads too; a plain XSETBV(0) of the same value reads back. Beyond
/// kvm-unit-tests: CPUID.(0xD,0):EBX follows the new XCR0.
fn legal_xcr0_values(supported: u64) {
    let _prefix = prefix("legal XCR0");
    let mut values = alloc::vec![component::X87, X87_SSE];
    if supported & component::YMM != 0 {
        values.push(X87_SSE | component::YMM);
    }
    for value in values {
        let alias = (rdtsc() | 1) << 32;
        let set = try_xsetbv_rcx(alias, value);
        report!(
            set.is_ok(),
            "XSETBV with RCX {alias:#x} (i.e. XCR0) of {value:#x} succeeds (got {set:x?})"
        );
        let read = try_xgetbv_rcx(alias);
        report!(
            read.is_ok(),
            "XGETBV with RCX {alias:#x} (i.e. XCR0) succeeds (got {read:x?})"
        );
        report!(
            read == Ok(value),
            "XGETBV with RCX {alias:#x} reads XCR0 = {value:#x} (got {read:x?})"
        );
        let xcr0 = try_xgetbv(0);
        report!(
            xcr0 == Ok(value),
            "XGETBV(0) reads XCR0 = {value:#x} (got {xcr0:x?})"
        );
        let (set, read) = try_write_xcr0(value);
        report!(
            set.is_ok() && read == Ok(value),
            "XSETBV(0, {value:#x}) works and XGETBV(0) reads it back (got {set:x?}, {read:x?})"
        );
        let size = fpu::xsave_area_size();
        let expected = expected_area_size(value);
        report!(
            size == expected,
            "CPUID.(0xD,0):EBX is the XSAVE area size for XCR0 {value:#x}: {expected} (got {size})"
        );
    }
    let _ = try_xsetbv(0, X87_SSE);
}

fn avx(supported: u64) {
    let _prefix = prefix("AVX");
    if supported & component::YMM == 0 || !Feature::Avx.supported() {
        report_skip!("CPUID advertises no AVX or no YMM state (XCR0 support {supported:#x})");
        return;
    }
    let source: [u8; 32] = core::array::from_fn(|index| (index as u8).wrapping_mul(37) ^ 0x5a);
    let (set, _) = try_write_xcr0(X87_SSE | component::YMM);
    let copy = try_copy_through_ymm(&source);
    report!(
        set.is_ok() && copy == Ok(source),
        "with XCR0 = x87|SSE|YMM, VMOVDQU/VMOVDQA copy 32 bytes through YMM0 and YMM15 (got {copy:x?})"
    );
    let (set, _) = try_write_xcr0(X87_SSE);
    let copy = try_copy_through_ymm(&source);
    report!(
        set.is_ok() && raises(&copy, Vector::UD),
        "with XCR0 = x87|SSE, a 256-bit VMOVDQU raises #UD (got {copy:x?})"
    );
}

fn illegal_xcr0_values(supported: u64) {
    let _prefix = prefix("illegal XCR0");
    let _ = try_write_xcr0(X87_SSE);
    let mut values = alloc::vec![(0, "nothing"), (component::SSE, "SSE without x87")];
    if supported & component::YMM != 0 {
        values.push((component::YMM, "YMM alone"));
        values.push((component::X87 | component::YMM, "YMM without SSE"));
    }
    for (value, what) in values {
        let (set, read) = try_write_xcr0(value);
        report!(
            raises(&set, Vector::GP) && read == Ok(X87_SSE),
            "XSETBV(0, {value:#x}) ({what}) raises #GP and leaves XCR0 alone (got {set:x?}, {read:x?})"
        );
    }
    let unsupported: Vec<u32> = (0..64).filter(|bit| supported & (1u64 << bit) == 0).collect();
    let accepted: Vec<u32> = unsupported
        .iter()
        .copied()
        .filter(|&bit| {
            let set = try_xsetbv(0, X87_SSE | (1 << bit));
            if set.is_ok() {
                let _ = try_xsetbv(0, X87_SSE);
            }
            !raises(&set, Vector::GP)
        })
        .collect();
    report!(
        accepted.is_empty(),
        "XSETBV(0) with any of the {} unsupported bits set raises #GP (accepted bits: {accepted:?})",
        unsupported.len()
    );
}

/// kvm-unit-tests' test_unsupported_xcrs: XCR indexes other than 0 (and 1 for XGETBV, which
/// `xinuse` covers) do not exist, so XGETBV and XSETBV of x87 and of x87|SSE raise #GP for
/// each index 1..63 and for each single bit 1 << 1..1 << 31 (RCX[63:32] are ignored, so
/// higher bits would name XCR0). XCR0 must be left alone by each of them.
fn unsupported_xcrs() {
    let _prefix = prefix("unsupported XCRs");
    let _ = try_write_xcr0(X87_SSE);
    let writes = [(component::X87, "x87"), (X87_SSE, "x87|SSE")];
    for bit in 1..64u32 {
        let mut indexes = alloc::vec![(bit, alloc::format!("{bit}"))];
        if bit <= 31 {
            indexes.push((1 << bit, alloc::format!("{:#x}", 1u32 << bit)));
        }
        for (index, name) in indexes {
            if index != 1 {
                let read = try_xgetbv(index);
                report!(
                    raises(&read, Vector::GP),
                    "XGETBV({name}) raises #GP (got {read:x?})"
                );
            }
            for (value, what) in writes {
                let write = try_xsetbv(index, value);
                let xcr0 = try_xgetbv(0);
                report!(
                    raises(&write, Vector::GP) && xcr0 == Ok(X87_SSE),
                    "XSETBV({name}, {what}) raises #GP and leaves XCR0 {X87_SSE:#x} (got {write:x?}, XCR0 {xcr0:x?})"
                );
                if write.is_ok() {
                    let _ = try_xsetbv(0, X87_SSE);
                }
            }
        }
    }
}

/// XGETBV(1) reads XCR0 AND XINUSE where CPUID.(0xD,1):EAX[2] says so, and is #GP elsewhere.
fn xinuse() {
    let _prefix = prefix("XINUSE");
    let _ = try_write_xcr0(X87_SSE);
    if !Feature::Xgetbv1.supported() {
        let read = try_xgetbv(1);
        report!(
            raises(&read, Vector::GP),
            "without CPUID.(0xD,1):EAX[2], XGETBV(1) raises #GP (got {read:x?})"
        );
        return;
    }
    let loaded = try_write_xmm0(PATTERN);
    let read = try_xgetbv(1);
    report!(
        loaded.is_ok() && matches!(read, Ok(value) if value & !X87_SSE == 0),
        "XGETBV(1) reads a subset of XCR0 = x87|SSE (got {read:x?})"
    );
    report!(
        matches!(read, Ok(value) if value & component::SSE != 0),
        "XGETBV(1) has SSE in use while XMM0 is not zero (got {read:x?})"
    );
}

fn save_and_restore() {
    let _prefix = prefix("XSAVE/XRSTOR");
    let _ = try_write_xcr0(X87_SSE);
    let mut area = XsaveArea::new();
    let loaded = try_write_xmm0(PATTERN);
    let saved = try_xsave(&mut area, 0, X87_SSE);
    report!(
        loaded.is_ok() && saved.is_ok(),
        "XSAVE of x87|SSE works (got {loaded:x?}, {saved:x?})"
    );
    let xmm0 = area.vector(area_offset::XMM0);
    report!(xmm0 == PATTERN, "XSAVE stores XMM0 at offset 160 (got {xmm0:#x})");
    let mxcsr = area.word(area_offset::MXCSR) as u32;
    report!(
        mxcsr == MXCSR_DEFAULT,
        "XSAVE stores MXCSR ({MXCSR_DEFAULT:#x} since reset) at offset 24 (got {mxcsr:#x})"
    );
    let state = area.word(area_offset::XSTATE_BV);
    report!(
        state & component::SSE != 0 && state & !X87_SSE == 0,
        "XSTATE_BV has SSE set and nothing outside x87|SSE (got {state:#x})"
    );
    let compacted = area.word(area_offset::XCOMP_BV);
    report!(compacted == 0, "XSAVE leaves XCOMP_BV zero (got {compacted:#x})");

    let cleared = try_write_xmm0(0);
    let restored = try_xrstor(&mut area, 0, X87_SSE);
    let xmm0 = try_read_xmm0();
    report!(
        cleared.is_ok() && restored.is_ok() && xmm0 == Ok(PATTERN),
        "XRSTOR loads XMM0 back from the area (got {restored:x?}, XMM0 {xmm0:x?})"
    );

    area.set_word(area_offset::XSTATE_BV, state & !component::SSE);
    let restored = try_xrstor(&mut area, 0, X87_SSE);
    let xmm0 = try_read_xmm0();
    report!(
        restored.is_ok() && xmm0 == Ok(0),
        "XRSTOR with XSTATE_BV.SSE clear initialises XMM0 to 0 (got {restored:x?}, XMM0 {xmm0:x?})"
    );

    let mut fresh = XsaveArea::new();
    let loaded = try_write_xmm0(PATTERN);
    let saved = try_xsave(&mut fresh, 0, component::X87);
    let slot = fresh.vector(area_offset::XMM0);
    report!(
        loaded.is_ok() && saved.is_ok() && slot == 0,
        "XSAVE of x87 alone leaves the XMM0 slot untouched (got {saved:x?}, slot {slot:#x})"
    );

    let misaligned = try_xsave(&mut area, 8, X87_SSE);
    report!(
        raises(&misaligned, Vector::GP),
        "XSAVE to an area not 64-byte aligned raises #GP (got {misaligned:x?})"
    );
    let misaligned = try_xrstor(&mut area, 8, X87_SSE);
    report!(
        raises(&misaligned, Vector::GP),
        "XRSTOR from an area not 64-byte aligned raises #GP (got {misaligned:x?})"
    );
    area.set_word(area_offset::XSTATE_BV, state | component::YMM);
    let invalid = try_xrstor(&mut area, 0, X87_SSE);
    report!(
        raises(&invalid, Vector::GP),
        "XRSTOR with XSTATE_BV bit YMM set outside XCR0 = x87|SSE raises #GP (got {invalid:x?})"
    );
}

/// 32 bytes that differ from run to run (kvm-unit-tests fills its buffers from RDTSC).
fn random_ymm() -> Ymm {
    let mut state = rdtsc() | 1;
    Ymm(core::array::from_fn(|_| {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    }))
}

/// kvm-unit-tests' test_avx_vmovdqa: each of 16 register pairs carries 32 bytes through
/// VMOVDQA (load, register to register, store, then a second VMOVDQA store) and through
/// VMOVNTDQA/VMOVDQA/VMOVNTDQ (the source left as it was, the non-temporal store, then a
/// VMOVDQA store), with XCR0 enabling YMM state: kvm-unit-tests' five reports per pair.
fn ymm_registers(supported: u64) {
    let _prefix = prefix("YMM registers");
    if supported & component::YMM == 0 || !Feature::Avx.supported() {
        report_skip!("CPUID advertises no AVX or no YMM state (XCR0 support {supported:#x})");
        return;
    }
    let set = try_xsetbv(0, X87_SSE | component::YMM);
    report!(set.is_ok(), "XCR0 = x87|SSE|YMM (got {set:x?})");
    for pair in YMM_PAIRS {
        let (first, second) = pair;
        let source = random_ymm();
        let copies = try_move_through_ymm_pair(pair, YmmMove::Aligned, &source);
        report_copy(
            copies.map(|copies| copies.moved),
            &source,
            &alloc::format!("VMOVDQA loads YMM{first}, copies it to YMM{second} and stores it"),
        );
        report_copy(
            copies.map(|copies| copies.native),
            &source,
            &alloc::format!("after VMOVDQA, a second VMOVDQA store of YMM{second}"),
        );

        let source = random_ymm();
        let copies = try_move_through_ymm_pair(pair, YmmMove::NonTemporal, &source);
        report_copy(
            copies.map(|copies| copies.source),
            &source,
            &alloc::format!("VMOVNTDQA into YMM{first} leaves its source memory as it was"),
        );
        report_copy(
            copies.map(|copies| copies.moved),
            &source,
            &alloc::format!(
                "VMOVNTDQA loads YMM{first}, VMOVDQA copies it to YMM{second}, VMOVNTDQ stores it"
            ),
        );
        report_copy(
            copies.map(|copies| copies.native),
            &source,
            &alloc::format!("after VMOVNTDQ, a VMOVDQA store of YMM{second}"),
        );
    }
    let _ = try_xsetbv(0, X87_SSE);
}

/// One report of the YMM sweep: `copy` (32 bytes, or the exception) holds `source`.
fn report_copy(copy: Result<Ymm, Exception>, source: &Ymm, what: &str) {
    let detail = if copy == Ok(*source) {
        alloc::string::String::new()
    } else {
        alloc::format!(" (wanted {:02x?}, got {copy:02x?})", source.0)
    };
    report!(copy == Ok(*source), "{what}: 32 random bytes{detail}");
}

/// Clearing XCR0.YMM keeps AVX state: the processor preserves it unmodified (SDM Vol. 1,
/// 13.3, XCR0[2]) while AVX instructions raise #UD and SSE ones still see the low halves;
/// setting XCR0.YMM again gives back the whole 256-bit value.
fn ymm_kept_across_xcr0(supported: u64) {
    let _prefix = prefix("YMM across XCR0");
    if supported & component::YMM == 0 || !Feature::Avx.supported() {
        report_skip!("CPUID advertises no AVX or no YMM state (XCR0 support {supported:#x})");
        return;
    }
    let value = random_ymm();
    let low = u128::from_le_bytes(value.0[..16].try_into().unwrap_or([0; 16]));
    let enabled = try_xsetbv(0, X87_SSE | component::YMM);
    let written = try_write_ymm1(&value);
    report!(
        enabled.is_ok() && written.is_ok(),
        "YMM1 is loaded with XCR0 = x87|SSE|YMM (got {enabled:x?}, {written:x?})"
    );
    let disabled = try_xsetbv(0, X87_SSE);
    let xmm = try_read_xmm1();
    let ymm = try_read_ymm1();
    report!(
        disabled.is_ok() && xmm == Ok(low),
        "with XCR0 = x87|SSE, SSE reads YMM1's low half in XMM1 {low:#x} (got {xmm:x?})"
    );
    report!(
        raises(&ymm, Vector::UD),
        "with XCR0 = x87|SSE, VMOVDQA from YMM1 raises #UD (got {ymm:x?})"
    );
    let enabled = try_xsetbv(0, X87_SSE | component::YMM);
    let ymm = try_read_ymm1();
    report!(
        enabled.is_ok() && ymm == Ok(value),
        "XCR0.YMM set again: YMM1 still holds all 256 bits, upper half kept (sent {:02x?}, got {ymm:02x?})",
        value.0
    );
    let _ = try_xsetbv(0, X87_SSE);
}
