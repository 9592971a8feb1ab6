//! lam: linear-address masking (kvm-unit-tests' x86/lam.c): CR4.LAM_SUP and CR3.LAM_U48/U57
//! against CPUID.7.1:EAX[26], and pointers with metadata in their high bits, which fault
//! (#GP(0), non-canonical) unless LAM masks those bits: supervisor pointers (data accesses to
//! RAM and MMIO, INVLPG, INVPCID's descriptor pointer and the address inside it), user
//! pointers (data accesses to RAM and MMIO, at CPL 0 and at CPL 3).
#![no_std]
#![no_main]

use vmunit::arch::control::{
    CR3_LAM_U48, CR3_LAM_U57, CR4_LAM_SUP, Cr4Flags, read_cr3, read_cr4, try_write_cr3, try_write_cr4,
};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::device::{self, Backing};
use vmunit::arch::instructions::{read, try_invlpg, try_invpcid_at};
use vmunit::arch::lam::{LAM48_MASK, LAM57_MASK, Masking, masking, tag, try_write_read};
use vmunit::arch::testdev::IOMEM;
use vmunit::arch::{Exception, run_in_user_mode};
use vmunit::memory::Protection;
use vmunit::{Vector, prefix, report, report_info, report_skip};

vmunit::main!(main);

/// The word each access writes and reads back (kvm-unit-tests' `do_mov` value).
const PATTERN: u64 = 0x0123_4567_89ab_cdef;
/// A second word, written through the tagged pointer, so that the untagged read shows where
/// the tagged write landed.
const TAGGED_PATTERN: u64 = 0x5a5a_1234_8765_a5a5;

/// Read-write, and accessible at CPL 3 (SMAP is off, so CPL 0 may access it too).
const USER_READ_WRITE: Protection = Protection {
    write: true,
    execute: false,
    user: true,
};

/// Where a pointer points.
#[derive(Clone, Copy)]
enum Target {
    Memory,
    Mmio,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Memory => "memory",
            Target::Mmio => "MMIO",
        }
    }
}

fn main(_args: &[&str]) {
    let lam = Feature::Lam.supported();
    report_info!(
        "{} LAM ({})",
        if lam {
            "this CPU supports"
        } else {
            "this CPU does not support"
        },
        Feature::Lam.bit()
    );
    supervisor_pointers(lam);
    user_pointers(lam);
}

/// Whether `result` is #GP(0).
fn is_general_protection<T>(result: &Result<T, Exception>) -> bool {
    matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0)
}

/// kvm-unit-tests' `test_cr4_lam_set_clear`: CR4.LAM_SUP can be set exactly when CPUID says
/// LAM, and cleared always.
fn cr4_lam_set_clear(lam: bool) {
    let cr4 = read_cr4();
    let set = cr4 | CR4_LAM_SUP.bits();
    if !lam && is_tcg() {
        report_skip!(
            "CR4.LAM_SUP=1 without LAM raises #GP: QEMU 10.0's TCG hangs the vCPU on this reserved CR4 bit (helper_write_crN, target/i386/tcg/system/misc_helper.c: cpu_vmexit(SVM_EXIT_ERR) outside SVM guest mode; reproduce-cr4-reserved-bit-tcg)"
        );
    } else {
        let result = try_write_cr4(set);
        let after = read_cr4();
        if lam {
            report!(
                result.is_ok() && after == set,
                "CR4.LAM_SUP=1 succeeds: CR4 {set:#x} (got {result:x?}, CR4 {after:#x})"
            );
        } else {
            report!(
                is_general_protection(&result) && after == cr4,
                "CR4.LAM_SUP=1 raises #GP(0) and leaves CR4 {cr4:#x} (got {result:x?}, CR4 {after:#x})"
            );
        }
    }
    let clear = read_cr4() & !CR4_LAM_SUP.bits();
    let result = try_write_cr4(clear);
    let after = read_cr4();
    report!(
        result.is_ok() && after == clear,
        "CR4.LAM_SUP=0 succeeds: CR4 {clear:#x} (got {result:x?}, CR4 {after:#x})"
    );
}

/// kvm-unit-tests' `test_ptr`: an access through `pointer` works; through `pointer` with
/// metadata in the bits LAM would mask, it works exactly when LAM masks them (and lands at
/// `pointer`); under LAM57 with 4-level paging, metadata in bits 56:48 still faults.
fn pointer_accesses(pointer: u64, target: Target) {
    let _prefix = prefix(target.name());
    let masking = masking(pointer);
    let active = masking != Masking::None;
    let mask = masking.mask().unwrap_or(LAM57_MASK);

    // kvm-unit-tests reports an access twice: that it did not fault, then (its do_mov's
    // "Mov result check") that the read gave back what the write stored.
    let untagged = try_write_read(pointer, PATTERN);
    report!(
        untagged.is_ok(),
        "a write and read at untagged {pointer:#x} do not fault (got {untagged:x?})"
    );
    if untagged.is_ok() {
        report!(
            untagged == Ok(PATTERN),
            "the read at untagged {pointer:#x} gives back the {PATTERN:#x} written (got {untagged:x?})"
        );
    }

    let tagged = tag(pointer, mask);
    let result = try_write_read(tagged, TAGGED_PATTERN);
    if active {
        report!(
            result.is_ok(),
            "with {masking:?}, a write and read at tagged {tagged:#x} do not fault (got {result:x?})"
        );
        if result.is_ok() {
            let landed = device::read_u64(pointer);
            report!(
                result == Ok(TAGGED_PATTERN) && landed == TAGGED_PATTERN,
                "with {masking:?}, the read at tagged {tagged:#x} gives back {TAGGED_PATTERN:#x} and the write landed at {pointer:#x} (got {result:x?}, {landed:#x} there)"
            );
        }
    } else {
        let left = device::read_u64(pointer);
        report!(
            is_general_protection(&result) && left == PATTERN,
            "without LAM masking, an access at tagged {tagged:#x} raises #GP(0) and writes nothing (got {result:x?}, {left:#x} at {pointer:#x})"
        );
    }

    if masking == Masking::Lam57 && read_cr4() & Cr4Flags::L5_PAGING.bits() == 0 {
        let beyond = tag(tagged, LAM48_MASK);
        let result = try_write_read(beyond, TAGGED_PATTERN);
        report!(
            is_general_protection(&result),
            "with LAM57 and 4-level paging, an access at {beyond:#x} (metadata in bits 56:48) raises #GP(0) (got {result:x?})"
        );
    }
}

/// kvm-unit-tests' `test_invlpg`: INVLPG of a tagged address is a no-op, never a fault,
/// with LAM or without.
fn invlpg(pointer: u64) {
    let mask = masking(pointer).mask().unwrap_or(LAM57_MASK);
    let tagged = tag(pointer, mask);
    let result = try_invlpg(tagged);
    report!(
        result.is_ok(),
        "INVLPG of tagged {tagged:#x} succeeds (got {result:x?})"
    );
}

/// kvm-unit-tests' `test_invpcid`: LAM applies to INVPCID's memory operand (the descriptor
/// pointer), not to the linear address inside the descriptor. The descriptor lives at
/// `pointer`, a supervisor RAM page of the upper device window.
fn invpcid(pointer: u64) {
    let _prefix = prefix("INVPCID");
    if !Feature::Invpcid.supported() {
        report_skip!("INVPCID is not supported ({})", Feature::Invpcid.bit());
        return;
    }
    let masking = masking(pointer);
    let active = masking != Masking::None;
    let mask = masking.mask().unwrap_or(LAM57_MASK);
    let tagged_pointer = tag(pointer, mask);
    // The descriptor: PCID 0, then the linear address; type 0 invalidates that one address.
    device::write_u64(pointer, 0);
    device::write_u64(pointer + 8, pointer);
    let result = try_invpcid_at(0, pointer);
    report!(
        result.is_ok(),
        "an untagged pointer to a descriptor with an untagged address succeeds (got {result:x?})"
    );

    device::write_u64(pointer + 8, tag(pointer, mask));
    let result = try_invpcid_at(0, pointer);
    report!(
        is_general_protection(&result),
        "an untagged pointer to a descriptor with a tagged address raises #GP(0) (got {result:x?})"
    );
    let result = try_invpcid_at(0, tagged_pointer);
    report!(
        is_general_protection(&result),
        "a tagged pointer {tagged_pointer:#x} to a descriptor with a tagged address raises #GP(0) (got {result:x?})"
    );

    device::write_u64(pointer + 8, pointer);
    let result = try_invpcid_at(0, tagged_pointer);
    if active {
        report!(
            result.is_ok(),
            "with {masking:?}, a tagged pointer {tagged_pointer:#x} to a descriptor with an untagged address succeeds (got {result:x?})"
        );
    } else {
        report!(
            is_general_protection(&result),
            "without LAM masking, a tagged pointer {tagged_pointer:#x} to a descriptor raises #GP(0) (got {result:x?})"
        );
    }
}

/// kvm-unit-tests' `__test_lam_sup`: every supervisor-pointer check, as CR4 now stands.
fn supervisor_checks(memory: u64, mmio: u64) {
    pointer_accesses(memory, Target::Memory);
    pointer_accesses(mmio, Target::Mmio);
    invpcid(memory);
    invlpg(memory);
}

/// kvm-unit-tests' `test_lam_sup`: supervisor pointers (bit 63 set, pages of the upper device
/// window, one RAM and one pc-testdev's MMIO) without CR4.LAM_SUP, then with it where LAM is
/// supported.
fn supervisor_pointers(lam: bool) {
    let _prefix = prefix("supervisor");
    let memory = device::map_upper(0, Backing::Ram, Protection::READ_WRITE);
    let mmio = device::map_upper(1, Backing::Device(IOMEM), Protection::READ_WRITE);
    let cr4 = read_cr4();

    cr4_lam_set_clear(lam);
    {
        let _prefix = prefix("LAM_SUP=0");
        supervisor_checks(memory, mmio);
    }
    if lam {
        let _prefix = prefix("LAM_SUP=1");
        let result = try_write_cr4(cr4 | CR4_LAM_SUP.bits());
        report!(
            result.is_ok() && masking(memory) == Masking::Lam48,
            "CR4.LAM_SUP=1 succeeds and supervisor pointers get LAM48 (got {result:x?}, {:?})",
            masking(memory)
        );
        supervisor_checks(memory, mmio);
        let _ = try_write_cr4(cr4);
    }
    device::unmap_upper(0);
    device::unmap_upper(1);
}

/// Beyond kvm-unit-tests: a CPL-3 read through user pointer `pointer` (a user page) with
/// metadata works exactly when LAM masks it, as at CPL 0.
fn user_mode_read(pointer: u64) {
    let _prefix = prefix("CPL 3");
    let masking = masking(pointer);
    device::write_u64(pointer, PATTERN);
    let untagged = run_in_user_mode(|| read(pointer));
    report!(
        untagged == Ok(PATTERN),
        "a read at untagged {pointer:#x} reads {PATTERN:#x} (got {untagged:x?})"
    );
    let tagged = tag(pointer, masking.mask().unwrap_or(LAM57_MASK));
    let result = run_in_user_mode(|| read(tagged));
    if masking == Masking::None {
        report!(
            is_general_protection(&result) && result.is_err_and(|exception| exception.from_user),
            "without LAM masking, a read at tagged {tagged:#x} raises #GP(0) at CPL 3 (got {result:x?})"
        );
    } else {
        report!(
            result == Ok(PATTERN),
            "with {masking:?}, a read at tagged {tagged:#x} reads {PATTERN:#x} (got {result:x?})"
        );
    }
}

/// The user-pointer checks, as CR3 now stands.
fn user_checks(memory: u64) {
    pointer_accesses(memory, Target::Memory);
    pointer_accesses(IOMEM, Target::Mmio);
    user_mode_read(memory);
}

/// kvm-unit-tests' `test_lam_user`: user pointers (bit 63 clear: a RAM page of the lower
/// device window that CPL 3 may access, and pc-testdev's MMIO, identity mapped) without CR3's
/// LAM bits, then, where LAM is supported, with LAM_U48 and with LAM_U57.
fn user_pointers(lam: bool) {
    let _prefix = prefix("user");
    let memory = device::map(0, Backing::Ram, USER_READ_WRITE);
    let cr3 = read_cr3();
    let plain = cr3 & !(CR3_LAM_U48 | CR3_LAM_U57);
    {
        let _prefix = prefix("no LAM bits");
        user_checks(memory);
    }
    if lam {
        for (name, bit, expected) in [
            ("LAM_U48", CR3_LAM_U48, Masking::Lam48),
            ("LAM_U57", CR3_LAM_U57, Masking::Lam57),
        ] {
            let _prefix = prefix(name);
            let result = try_write_cr3(plain | bit);
            report!(
                result.is_ok() && masking(memory) == expected,
                "CR3.{name}=1 succeeds and user pointers get {expected:?} (got {result:x?}, {:?})",
                masking(memory)
            );
            user_checks(memory);
        }
        let _ = try_write_cr3(cr3);
    }
    device::unmap(0);
}
