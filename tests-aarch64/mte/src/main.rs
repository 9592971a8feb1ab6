//! mte: the Memory Tagging Extension in kvm-unit-tests' arm/mte.c modes `sync`, `async` and
//! `asymm`: FEAT_MTE2 (ID_AA64PFR1_EL1.MTE >= 2, FEAT_MTE3 for asymm), the enables (SCTLR_EL1.ATA
//! and TCF, TCR_EL1.TBI0 and TCMA0), Tagged Normal memory (MAIR 0xF0), the tag instructions
//! (IRG with GCR_EL1/RGSR_EL1, STG, LDG), and what a mismatched tag does in the mode: a
//! synchronous Tag Check Fault (data abort, DFSC 0x11, FAR the tagged address) or TFSR_EL1.TF0
//! set with no exception; asymm is synchronous for reads and asynchronous for writes. Beyond
//! mte.c: TCMA0, PSTATE.TCO, ATA/ATA0 gating the checks, EL0 under TCF0 with TFSRE0_EL1,
//! untagged memory, TCF 0b00, and IRG's sequence against the Arm ARM's pseudocode.
#![no_std]
#![no_main]

use vmunit::arch::exceptions::FaultStatus;
use vmunit::arch::mmu;
use vmunit::arch::mte::{
    self, GRANULE, Level, MAIR_TAGGED_NORMAL, TagCheckMode, TaggedPage, insert_random_tag, tag_of,
    take_tag_fault_status, take_user_tag_fault_status, with_tag,
};
use vmunit::arch::registers::{
    Readable, SCTLR_EL1, TCR_EL1, gcr, gcr_el1, rgsr, rgsr_el1, sctlr, set_gcr_el1, set_rgsr_el1, tcr, tfsr,
};
use vmunit::arch::{Exception, ExceptionClass, run_in_user_mode, try_read};
use vmunit::catch::Attempt;
use vmunit::memory::{PAGE_SIZE, TestPage};
use vmunit::{prefix, report, report_info, report_skip, report_summary};

vmunit::main!(main);

/// The page's data before each access.
const FILL: u64 = u64::MAX;
/// FAR_EL1 bits a synchronous Tag Check Fault reports: 63:60 are UNKNOWN (Arm ARM, FAR_EL1).
const FAR_REPORTED: u64 = (1 << 60) - 1;

fn main(arguments: &[&str]) -> i32 {
    let mode = match arguments.first().copied() {
        Some("sync") => TagCheckMode::Synchronous,
        Some("async") => TagCheckMode::Asynchronous,
        Some("asymm") => TagCheckMode::Asymmetric,
        other => {
            report!(
                false,
                "a known mode was given: sync, async or asymm (got {other:?})"
            );
            return report_summary();
        }
    };
    let _mte = prefix("mte");
    let _mode = prefix(arguments[0]);
    let field = mte::field();
    let level = mte::level();
    report_info!("ID_AA64PFR1_EL1.MTE = {field} ({level:?})");
    if level < Level::Full {
        report_skip!(
            "MTE tag checks need FEAT_MTE2 (ID_AA64PFR1_EL1.MTE >= 2), this CPU has MTE = {field} \
             ({level:?}); QEMU gives -cpu max tag storage only with -machine mte=on"
        );
        return report_summary();
    }
    if level < mode.required_level() {
        report_skip!(
            "{mode:?} tag checks (SCTLR_EL1.TCF = 0b11) need FEAT_MTE3 (ID_AA64PFR1_EL1.MTE >= 3), this \
             CPU has MTE = {field}"
        );
        return report_summary();
    }

    // kvm-unit-tests' tags: the page's, then the read's and the write's (one more, two more).
    let page_tag = match mode {
        TagCheckMode::Synchronous => 1,
        TagCheckMode::Asymmetric => 2,
        _ => 3,
    };
    mte::enable();
    enables();
    let page = TaggedPage::new().expect("FEAT_MTE2 is present");
    memory_type(&page);
    tags(&page, page_tag);
    random_tags(&page);
    checks(&page, mode, page_tag);
    match_all(&page, mode, page_tag);
    tag_check_override(&page, page_tag);
    tag_access_gates_checks(&page, mode, page_tag);
    user_mode(&page, mode, page_tag);
    untagged_memory(mode);
    ignored(&page, page_tag);
    report_summary()
}

/// What `mte::enable` must have set: SCTLR_EL1.ATA, TCR_EL1.TBI0, TCMA0 clear.
fn enables() {
    let sctlr_value = SCTLR_EL1.get();
    let tcr_value = TCR_EL1.get();
    report!(
        sctlr_value & sctlr::ATA != 0,
        "SCTLR_EL1.ATA (allocation tag access at EL1) reads back set (SCTLR_EL1 {sctlr_value:#x})"
    );
    report!(
        tcr_value & tcr::TBI0 != 0,
        "TCR_EL1.TBI0 (top byte ignored, lower range) reads back set (TCR_EL1 {tcr_value:#x})"
    );
    report!(
        tcr_value & tcr::TCMA0 == 0,
        "TCR_EL1.TCMA0 reads back clear: tag 0 pointers are checked (TCR_EL1 {tcr_value:#x})"
    );
    report!(
        !mte::tag_check_override(),
        "PSTATE.TCO reads back clear: tag checks are not overridden"
    );
}

/// The tagged page's descriptor selects MAIR attribute 0xF0.
fn memory_type(page: &TaggedPage) {
    let attribute = mmu::descriptor(page.address()).map(|(descriptor, _)| mmu::memory_attribute(descriptor));
    report!(
        attribute == Some(MAIR_TAGGED_NORMAL),
        "the tagged page at {:#x} is mapped Tagged Normal (MAIR attribute {MAIR_TAGGED_NORMAL:#x}, got \
         {attribute:x?})",
        page.address()
    );
}

/// STG and LDG: per-granule allocation tags, and SCTLR_EL1.ATA's effect on them.
fn tags(page: &TaggedPage, page_tag: u8) {
    let _prefix = prefix("tags");
    page.set_tags(page_tag);
    let offsets = [0, PAGE_SIZE / 2, PAGE_SIZE - GRANULE];
    let read = offsets.map(|offset| page.tag(offset));
    report!(
        read == [page_tag; 3],
        "STG over the page, then LDG of its first, middle and last granule reads tag {page_tag} (got \
         {read:?})"
    );
    let granule = 8 * GRANULE;
    let other = page_tag ^ 0xf;
    page.set_tag(granule, other);
    let around = [
        page.tag(granule - GRANULE),
        page.tag(granule),
        page.tag(granule + 8),
        page.tag(granule + GRANULE),
    ];
    report!(
        around == [page_tag, other, other, page_tag],
        "STG of one granule sets its 16 bytes to tag {other} and leaves its neighbours at {page_tag} \
         (got {around:?})"
    );

    mte::set_tag_access(false);
    let without_access = page.tag(granule);
    page.set_tag(granule, page_tag);
    let irg = insert_random_tag(page.address(), 0);
    mte::set_tag_access(true);
    report!(
        without_access == 0,
        "with SCTLR_EL1.ATA clear, LDG reads tag 0 (got {without_access})"
    );
    let kept = page.tag(granule);
    report!(
        kept == other,
        "with SCTLR_EL1.ATA clear, STG leaves the allocation tag alone (still {other}, got {kept})"
    );
    report!(
        tag_of(irg) == 0,
        "with SCTLR_EL1.ATA clear, IRG makes tag 0 (got {irg:#x})"
    );
    page.set_tag(granule, page_tag);
    let restored = page.tag(granule);
    report!(
        restored == page_tag,
        "with SCTLR_EL1.ATA set again, STG sets tag {page_tag} (got {restored})"
    );
}

/// IRG with GCR_EL1.Exclude, its own exclusion mask, and RGSR_EL1's sequence (GCR_EL1.RRND 0).
fn random_tags(page: &TaggedPage) {
    let _prefix = prefix("irg");
    // Bits 63:60 and the old tag must not matter: IRG replaces bits 59:56 alone.
    let base = with_tag(page.address() + 0x40, 0xf) | 0xa << 60;

    let exclude_all_but_5 = gcr::EXCLUDE & !(1 << 5);
    set_gcr_el1(exclude_all_but_5);
    let gcr_value = gcr_el1() & (gcr::EXCLUDE | gcr::RRND);
    report!(
        gcr_value == exclude_all_but_5,
        "GCR_EL1 reads back Exclude {exclude_all_but_5:#x}, RRND 0 (got {gcr_value:#x})"
    );
    let tagged = insert_random_tag(base, 0);
    report!(
        tagged == with_tag(base, 5),
        "IRG with every tag but 5 excluded by GCR_EL1 gives {:#x} (got {tagged:#x})",
        with_tag(base, 5)
    );
    set_gcr_el1(gcr::EXCLUDE);
    let tagged = insert_random_tag(base, 0);
    report!(
        tagged == with_tag(base, 0),
        "IRG with every tag excluded gives tag 0 (got {tagged:#x})"
    );
    set_gcr_el1(gcr::EXCLUDE & !(1 << 3 | 1 << 9));
    let tagged = insert_random_tag(base, 1 << 3);
    report!(
        tagged == with_tag(base, 9),
        "IRG with GCR_EL1 leaving tags 3 and 9 and its operand excluding 3 gives tag 9 (got {tagged:#x})"
    );

    // Odd tags excluded; a nonzero seed so that the sequence moves.
    set_gcr_el1(0xaaaa);
    let seed = 0x1234 << rgsr::SEED_SHIFT;
    set_rgsr_el1(seed);
    let rgsr_value = rgsr_el1() & (rgsr::SEED | rgsr::TAG);
    report!(
        rgsr_value == seed,
        "RGSR_EL1 reads back SEED 0x1234, TAG 0 (got {rgsr_value:#x})"
    );
    let sequence: [u8; 32] = core::array::from_fn(|_| tag_of(insert_random_tag(base, 0)));
    let after = rgsr_el1() & rgsr::TAG;
    report!(
        sequence.iter().all(|tag| tag % 2 == 0),
        "32 IRGs with GCR_EL1 excluding the odd tags give even tags only (got {sequence:?})"
    );
    let mut seen = [false; 16];
    sequence.iter().for_each(|&tag| seen[usize::from(tag)] = true);
    let distinct = seen.iter().filter(|&&seen| seen).count();
    report!(
        distinct >= 2,
        "32 IRGs from seed 0x1234 give more than one tag ({distinct} distinct)"
    );
    report!(
        after == u64::from(sequence[31]),
        "with GCR_EL1.RRND 0, RGSR_EL1.TAG holds the last tag IRG made, {} (got {after})",
        sequence[31]
    );
    set_rgsr_el1(seed);
    let again: [u8; 32] = core::array::from_fn(|_| tag_of(insert_random_tag(base, 0)));
    let rgsr_after = rgsr_el1() & (rgsr::SEED | rgsr::TAG);
    report!(
        again == sequence,
        "with GCR_EL1.RRND 0, the same RGSR_EL1 gives the same IRG sequence (got {again:?})"
    );
    let mut state = seed;
    let predicted: [u8; 32] = core::array::from_fn(|_| {
        let (tag, next) = architectural_irg(state, 0xaaaa);
        state = next;
        tag
    });
    report!(
        again == predicted && rgsr_after == state,
        "with GCR_EL1.RRND 0, IRG follows the Arm ARM's ChooseRandomNonExcludedTag: tags {predicted:?}, then \
         RGSR_EL1 {state:#x} (got {again:?}, RGSR_EL1 {rgsr_after:#x})"
    );
    set_gcr_el1(0);
}

/// IRG by the Arm ARM's pseudocode with GCR_EL1.RRND 0 (AArch64.ChooseRandomNonExcludedTag):
/// four steps of the RGSR_EL1.SEED LFSR (NextRandomTagBit) make an offset, and
/// ChooseNonExcludedTag counts that many allowed tags on from RGSR_EL1.TAG. Returns the tag and
/// the RGSR_EL1 value after (TAG the new tag, SEED the LFSR).
fn architectural_irg(rgsr_value: u64, exclude: u16) -> (u8, u64) {
    let mut lfsr = ((rgsr_value & rgsr::SEED) >> rgsr::SEED_SHIFT) as u16;
    let mut offset = 0u8;
    for bit in 0..4 {
        let top = (lfsr >> 5 ^ lfsr >> 3 ^ lfsr >> 2 ^ lfsr) & 1;
        lfsr = top << 15 | lfsr >> 1;
        offset |= (top as u8) << bit;
    }
    let excluded = |tag: u8| exclude & (1 << tag) != 0;
    let mut tag = (rgsr_value & rgsr::TAG) as u8;
    if exclude == u16::MAX {
        tag = 0;
    } else if offset == 0 {
        while excluded(tag) {
            tag = (tag + 1) & 0xf;
        }
    } else {
        for _ in 0..offset {
            tag = (tag + 1) & 0xf;
            while excluded(tag) {
                tag = (tag + 1) & 0xf;
            }
        }
    }
    (tag, u64::from(tag) | u64::from(lfsr) << rgsr::SEED_SHIFT)
}

/// How a mode delivers the Tag Check Fault of a read or a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    /// A data abort at the access; TFSR_EL1 unchanged.
    Synchronous,
    /// The access completes; TFSR_EL1.TF0 set.
    Asynchronous,
}

fn delivery(mode: TagCheckMode, write: bool) -> Delivery {
    match (mode, write) {
        (TagCheckMode::Synchronous, _) | (TagCheckMode::Asymmetric, false) => Delivery::Synchronous,
        _ => Delivery::Asynchronous,
    }
}

/// The mode, accesses with matching tags, then a read and a write with mismatched ones.
fn checks(page: &TaggedPage, mode: TagCheckMode, page_tag: u8) {
    page.set_tags(page_tag);
    page.fill(0xff);
    mte::set_tag_check_mode(mode);
    let read_back = mte::tag_check_mode();
    report!(
        read_back == mode,
        "SCTLR_EL1.TCF reads back {:#04b} ({mode:?}; got {read_back:?})",
        mode.field()
    );
    let status = take_tag_fault_status();
    report!(
        status == 0,
        "TFSR_EL1 is clear after setting the mode (got {status:#x})"
    );

    let matching = page.try_load(page_tag, 0).result;
    let status = take_tag_fault_status();
    report!(
        matching == Ok(FILL) && status == 0,
        "a read with the granule's tag {page_tag} succeeds and records nothing (got {matching:x?}, TFSR_EL1 \
         {status:#x})"
    );
    let stored = page.try_store(page_tag, 8, 0x1234_5678).result;
    let status = take_tag_fault_status();
    let value = page.try_load(page_tag, 8).result;
    report!(
        stored.is_ok() && value == Ok(0x1234_5678) && status == 0,
        "a write with the granule's tag {page_tag} succeeds and records nothing (got {stored:?}, then \
         {value:x?}, TFSR_EL1 {status:#x})"
    );

    let read_tag = page_tag + 1;
    let _read = prefix("read");
    mismatched_read(page, mode, page_tag, read_tag, 0);
    drop(_read);

    let write_tag = page_tag + 2;
    let _write = prefix("write");
    mismatched_write(page, mode, page_tag, write_tag, 0, 0xcccc_cccc_bbbb_bbbb);
}

/// A read through `tag` of the word at `offset`, whose granule is tagged `page_tag` (holding
/// `FILL`), behaves as `mode` says.
fn mismatched_read(page: &TaggedPage, mode: TagCheckMode, page_tag: u8, tag: u8, offset: u64) {
    let attempt = page.try_load(tag, offset);
    let status = take_tag_fault_status();
    let what = format_args!("a read with tag {tag} of a granule tagged {page_tag}");
    match delivery(mode, false) {
        Delivery::Synchronous => {
            synchronous_fault(&attempt, page.pointer(tag, offset), false, what);
            report!(status == 0, "TFSR_EL1 stays clear (got {status:#x})");
        }
        Delivery::Asynchronous => {
            report!(
                attempt.result == Ok(FILL),
                "{what} completes with the memory's value {FILL:#x} (got {:x?})",
                attempt.result
            );
            report!(
                status == tfsr::TF0,
                "TFSR_EL1 records it: TF0 set, TF1 clear (got {status:#x})"
            );
        }
    }
}

/// A write through `tag` of `value` at `offset`, whose granule is tagged `page_tag` (holding
/// `FILL`), behaves as `mode` says.
fn mismatched_write(page: &TaggedPage, mode: TagCheckMode, page_tag: u8, tag: u8, offset: u64, value: u64) {
    let attempt = page.try_store(tag, offset, value);
    let status = take_tag_fault_status();
    let memory = page.try_load(page_tag, offset).result;
    let what = format_args!("a write with tag {tag} to a granule tagged {page_tag}");
    match delivery(mode, true) {
        Delivery::Synchronous => {
            synchronous_fault(&attempt, page.pointer(tag, offset), true, what);
            report!(
                memory == Ok(FILL),
                "the faulting write changed nothing: the word still holds {FILL:#x} (got {memory:x?})"
            );
            report!(status == 0, "TFSR_EL1 stays clear (got {status:#x})");
        }
        Delivery::Asynchronous => {
            report!(
                attempt.result.is_ok() && memory == Ok(value),
                "{what} completes: the word holds {value:#x} (got {:?}, then {memory:x?})",
                attempt.result
            );
            report!(
                status == tfsr::TF0,
                "TFSR_EL1 records it: TF0 set, TF1 clear (got {status:#x})"
            );
        }
    }
    // The next checks expect FILL again.
    let _ = page.try_store(page_tag, offset, FILL);
}

/// A synchronous Tag Check Fault of the access `attempt` made (at EL1) through `pointer`.
fn synchronous_fault<T: core::fmt::Debug>(
    attempt: &Attempt<T>,
    pointer: u64,
    write: bool,
    what: core::fmt::Arguments<'_>,
) {
    let Some(exception) = tag_check_fault(&attempt.result, ExceptionClass::DataAbort, pointer, write, what)
    else {
        return;
    };
    report!(
        exception.elr == attempt.address,
        "ELR_EL1 is the faulting {} at {:#x} (got {:#x})",
        if write { "store" } else { "load" },
        attempt.address,
        exception.elr
    );
}

/// Reports whether `result` is a synchronous Tag Check Fault of class `class` (DABT_EL1, or
/// DABT_EL0 from EL0) with the write flag `write` and FAR `pointer`; returns the exception.
fn tag_check_fault<T: core::fmt::Debug>(
    result: &Result<T, Exception>,
    class: ExceptionClass,
    pointer: u64,
    write: bool,
    what: core::fmt::Arguments<'_>,
) -> Option<Exception> {
    let fault = match result {
        Err(exception)
            if exception.class == class && exception.fault_status() == Some(FaultStatus::TagCheck) =>
        {
            Some(*exception)
        }
        _ => None,
    };
    report!(
        fault.is_some(),
        "{what} raises a synchronous Tag Check Fault ({}, DFSC 0x11) (got {result:x?})",
        class.name()
    );
    let exception = fault?;
    report!(
        exception.is_write() == write,
        "ESR_EL1.WnR is {} (ESR {:#x})",
        u8::from(write),
        exception.esr
    );
    report!(
        exception.fault_address_valid() && exception.far & FAR_REPORTED == pointer & FAR_REPORTED,
        "FAR_EL1 holds the tagged address {pointer:#x} (bits 59:0), FnV clear (got FAR {:#x}, ESR {:#x})",
        exception.far,
        exception.esr
    );
    Some(exception)
}

/// PSTATE.TCO: while set, mismatched tags are not checked.
fn tag_check_override(page: &TaggedPage, page_tag: u8) {
    let _prefix = prefix("tco");
    let tag = page_tag + 1;
    mte::set_tag_check_override(true);
    let set = mte::tag_check_override();
    let read = page.try_load(tag, 0).result;
    let written = page.try_store(tag, 8, FILL).result;
    mte::set_tag_check_override(false);
    let status = take_tag_fault_status();
    report!(set, "PSTATE.TCO reads back set after MSR TCO, #1");
    report!(
        read == Ok(FILL) && written.is_ok() && status == 0,
        "with PSTATE.TCO set, a read and a write with tag {tag} of a granule tagged {page_tag} are unchecked \
         (got {read:x?}, {written:?}, TFSR_EL1 {status:#x})"
    );
    report!(
        !mte::tag_check_override(),
        "PSTATE.TCO reads back clear after MSR TCO, #0"
    );
}

/// EL0: SCTLR_EL1.TCF0 (not TCF) and ATA0 govern its accesses, and TFSRE0_EL1 records them.
fn user_mode(page: &TaggedPage, mode: TagCheckMode, page_tag: u8) {
    let _prefix = prefix("el0");
    page.share_with_user_mode();
    let tag = page_tag + 1;
    mte::set_user_tag_access(true);
    let sctlr_value = SCTLR_EL1.get();
    report!(
        sctlr_value & sctlr::ATA0 != 0,
        "SCTLR_EL1.ATA0 reads back set (SCTLR_EL1 {sctlr_value:#x})"
    );
    mte::set_user_tag_check_mode(TagCheckMode::Ignored);
    let read = run_in_user_mode(|| page.load(tag, 0));
    let (user_status, status) = (take_user_tag_fault_status(), take_tag_fault_status());
    report!(
        read == Ok(FILL) && user_status == 0 && status == 0,
        "with SCTLR_EL1.TCF0 0b00 (TCF {mode:?}, ATA0 set), an EL0 read with tag {tag} of a granule tagged \
         {page_tag} is unchecked (got {read:x?}, TFSRE0_EL1 {user_status:#x}, TFSR_EL1 {status:#x})"
    );

    mte::set_user_tag_check_mode(mode);
    let read_back = mte::user_tag_check_mode();
    report!(
        read_back == mode,
        "SCTLR_EL1.TCF0 reads back {:#04b} ({mode:?}; got {read_back:?})",
        mode.field()
    );
    // Allocation tag access gates the checks too (AArch64.AccessIsTagChecked).
    mte::set_user_tag_access(false);
    let read = run_in_user_mode(|| page.load(tag, 0));
    let (user_status, status) = (take_user_tag_fault_status(), take_tag_fault_status());
    report!(
        read == Ok(FILL) && user_status == 0 && status == 0,
        "with SCTLR_EL1.ATA0 clear (TCF0 {mode:?}), an EL0 read with tag {tag} of a granule tagged {page_tag} is unchecked \
         (got {read:x?}, TFSRE0_EL1 {user_status:#x}, TFSR_EL1 {status:#x})"
    );
    mte::set_user_tag_access(true);
    let read = run_in_user_mode(|| page.load(tag, 0));
    let (user_status, status) = (take_user_tag_fault_status(), take_tag_fault_status());
    let what = format_args!("an EL0 read with tag {tag} of a granule tagged {page_tag}");
    match delivery(mode, false) {
        Delivery::Synchronous => {
            tag_check_fault(
                &read,
                ExceptionClass::DataAbortLower,
                page.pointer(tag, 0),
                false,
                what,
            );
            report!(
                user_status == 0 && status == 0,
                "TFSRE0_EL1 and TFSR_EL1 stay clear (got {user_status:#x}, {status:#x})"
            );
        }
        Delivery::Asynchronous => {
            report!(
                read == Ok(FILL),
                "{what} completes with {FILL:#x} (got {read:x?})"
            );
            report!(
                user_status == tfsr::TF0 && status == 0,
                "TFSRE0_EL1 records it (TF0 set, TF1 clear) and TFSR_EL1 does not (got {user_status:#x}, \
                 {status:#x})"
            );
        }
    }

    let value = 0xaaaa_aaaa_aaaa_aaaa;
    let tag = page_tag + 2;
    let written = run_in_user_mode(|| page.store(tag, 0, value));
    let (user_status, status) = (take_user_tag_fault_status(), take_tag_fault_status());
    let memory = page.try_load(page_tag, 0).result;
    let what = format_args!("an EL0 write with tag {tag} to a granule tagged {page_tag}");
    match delivery(mode, true) {
        Delivery::Synchronous => {
            tag_check_fault(
                &written,
                ExceptionClass::DataAbortLower,
                page.pointer(tag, 0),
                true,
                what,
            );
            report!(
                memory == Ok(FILL) && user_status == 0 && status == 0,
                "the word still holds {FILL:#x}; TFSRE0_EL1 and TFSR_EL1 stay clear (got {memory:x?}, \
                 {user_status:#x}, {status:#x})"
            );
        }
        Delivery::Asynchronous => {
            report!(
                written.is_ok() && memory == Ok(value),
                "{what} completes: the word holds {value:#x} (got {written:?}, then {memory:x?})"
            );
            report!(
                user_status == tfsr::TF0 && status == 0,
                "TFSRE0_EL1 records it (TF0 set, TF1 clear) and TFSR_EL1 does not (got {user_status:#x}, \
                 {status:#x})"
            );
        }
    }
    let _ = page.try_store(page_tag, 0, FILL);
    mte::set_user_tag_check_mode(TagCheckMode::Ignored);
    mte::set_user_tag_access(false);
}

/// SCTLR_EL1.ATA gates EL1's tag checks: clear, a mismatched access is unchecked whatever the
/// mode (AArch64.AccessIsTagChecked).
fn tag_access_gates_checks(page: &TaggedPage, mode: TagCheckMode, page_tag: u8) {
    let _prefix = prefix("ata");
    let tag = page_tag + 1;
    mte::set_tag_access(false);
    let read = page.try_load(tag, 0).result;
    let written = page.try_store(tag, 8, FILL).result;
    mte::set_tag_access(true);
    let status = take_tag_fault_status();
    report!(
        read == Ok(FILL) && written.is_ok() && status == 0,
        "with SCTLR_EL1.ATA clear (TCF {mode:?}), a read and a write with tag {tag} of a granule tagged \
         {page_tag} are unchecked (got {read:x?}, {written:?}, TFSR_EL1 {status:#x})"
    );
}

/// TCR_EL1.TCMA0: pointers with tag 0 are unchecked while it is set, checked when clear.
fn match_all(page: &TaggedPage, mode: TagCheckMode, page_tag: u8) {
    let _prefix = prefix("tcma0");
    mte::set_match_all(true);
    let tcr_value = TCR_EL1.get();
    let read = page.try_load(0, 0).result;
    let written = page.try_store(0, 8, FILL).result;
    let status = take_tag_fault_status();
    mte::set_match_all(false);
    report!(
        tcr_value & tcr::TCMA0 != 0,
        "TCR_EL1.TCMA0 reads back set (TCR_EL1 {tcr_value:#x})"
    );
    report!(
        read == Ok(FILL) && written.is_ok() && status == 0,
        "with TCMA0 set, a read and a write with tag 0 of a granule tagged {page_tag} are unchecked (got \
         {read:x?}, {written:?}, TFSR_EL1 {status:#x})"
    );
    mismatched_read(page, mode, page_tag, 0, 0);
}

/// Accesses to normal (untagged, MAIR 0xFF) memory are never tag checked.
fn untagged_memory(mode: TagCheckMode) {
    let _prefix = prefix("untagged");
    let page = TestPage::new();
    let pointer = with_tag(page.address(), 7);
    let read = try_read(pointer);
    let status = take_tag_fault_status();
    report!(
        read == Ok(0) && status == 0,
        "in {mode:?} mode a read with tag 7 of normal untagged memory is unchecked (got {read:x?}, \
         TFSR_EL1 {status:#x})"
    );
}

/// TCF 0b00: mismatched tags have no effect.
fn ignored(page: &TaggedPage, page_tag: u8) {
    let _prefix = prefix("ignored");
    mte::set_tag_check_mode(TagCheckMode::Ignored);
    let tag = page_tag + 1;
    let read = page.try_load(tag, 0).result;
    let written = page.try_store(tag, 8, FILL).result;
    let status = take_tag_fault_status();
    report!(
        read == Ok(FILL) && written.is_ok() && status == 0,
        "with SCTLR_EL1.TCF 0b00, a read and a write with tag {tag} of a granule tagged {page_tag} have no \
         effect (got {read:x?}, {written:?}, TFSR_EL1 {status:#x})"
    );
}
