//! rmap_chain: kvm-unit-tests' rmap_chain. One page mapped at (nearly) as many virtual
//! addresses as the guest has pages of RAM, each alias written, then one more alias added: in
//! a shadow-paging hypervisor every alias is a shadow PTE on the same frame's reverse-map
//! chain, so this builds the longest chains a guest can. Beyond kvm-unit-tests, which only
//! has to survive, every alias is checked: a write through it
//! lands in the frame, every alias sees a value written to the frame, and an unmapped alias
//! faults with #PF while the others still see the frame.
#![no_std]
#![no_main]

use vmunit::arch::mmu::translate;
use vmunit::arch::timer;
use vmunit::memory::{AliasedPage, PAGE_SIZE, sizes};
use vmunit::{Vector, report, report_info};

vmunit::main!(main);

/// Milliseconds since `start`, a reading of the architecture's clock.
fn milliseconds_since(start: u64) -> u64 {
    (timer::count() - start) * 1000 / timer::frequency().max(1)
}

/// The value of alias `index`'s own write.
fn stamp(index: u64) -> u64 {
    0x5a5a_0000_0000_0000 | index
}

fn main(args: &[&str]) {
    // kvm-unit-tests maps RAM pages minus 1000; the runtime's free RAM (heap and frames) is a
    // little less than RAM, which makes about as many.
    let (heap, frames) = sizes();
    let count = vmunit::args::value(args, "aliases")
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or((heap + frames) / PAGE_SIZE);
    // Two more slots: kvm-unit-tests maps its last alias one page past the end.
    let page = AliasedPage::new(count + 2);
    let start = timer::count();
    for index in 0..count {
        page.map(index);
    }
    report_info!(
        "created {count} mappings of the frame {:#x} in {} ms",
        page.frame(),
        milliseconds_since(start)
    );

    let wrong_translation = (0..count).find(|&index| translate(page.address(index)) != Some(page.frame()));
    // A software walk of the tables the runtime just wrote: its own bookkeeping, not the CPU's
    // translation (the writes and reads below are), so it is information, not a check.
    report_info!(
        "the runtime's page tables map all {count} aliases to the frame {:#x} (first that does not: {wrong_translation:?})",
        page.frame()
    );

    // Instantiate each mapping with a write (kvm-unit-tests writes 0), checked in the frame.
    let mut bad_write = None;
    let start = timer::count();
    for index in 0..count {
        let written = page.try_write(index, 8, stamp(index));
        let seen = page.read_frame(8);
        if written.is_err() || seen != stamp(index) {
            bad_write = Some((index, written, seen));
            break;
        }
    }
    report_info!(
        "instantiated the mappings (one write each) in {} ms",
        milliseconds_since(start)
    );
    report!(
        bad_write.is_none(),
        "a write through each of the {count} aliases lands in the frame (first that does not: {bad_write:x?})"
    );

    // Every alias sees what the frame holds.
    page.write_frame(16, 0x1234_5678_9abc_def0);
    let start = timer::count();
    let bad_read = (0..count)
        .map(|index| (index, page.try_read(index, 16)))
        .find(|(_, read)| !matches!(read, Ok(0x1234_5678_9abc_def0)));
    report_info!("read through every alias in {} ms", milliseconds_since(start));
    report!(
        bad_read.is_none(),
        "each of the {count} aliases reads the value written to the frame (first that does not: {bad_read:x?})"
    );

    // kvm-unit-tests' last step: one more alias, one page past the last, written.
    let last = count + 1;
    page.map(last);
    let written = page.try_write(last, 0, 0xfeed);
    report!(
        written.is_ok() && page.read_frame(0) == 0xfeed,
        "a write through one more alias after {count} lands in the frame (got {written:x?}, frame holds {:#x})",
        page.read_frame(0)
    );

    // Invalidate: every other alias unmapped faults; the rest still see the frame.
    let start = timer::count();
    for index in (0..count).step_by(2) {
        page.unmap(index);
    }
    report_info!("unmapped every other alias in {} ms", milliseconds_since(start));
    page.write_frame(24, 0xc0ffee);
    let start = timer::count();
    let not_faulting = (0..count).step_by(2).map(|index| (index, page.try_read(index, 24))).find(
        |(index, read)| !matches!(read, Err(e) if e.vector == Vector::PF && e.address == page.address(*index) + 24),
    );
    report_info!(
        "read through every unmapped alias in {} ms",
        milliseconds_since(start)
    );
    report!(
        not_faulting.is_none(),
        "each unmapped alias (every other one, {}) raises #PF at its address (first that does not: {not_faulting:x?})",
        count.div_ceil(2)
    );
    let start = timer::count();
    let stale = (1..count)
        .step_by(2)
        .map(|index| (index, page.try_read(index, 24)))
        .find(|(_, read)| !matches!(read, Ok(0xc0ffee)));
    report_info!(
        "read through every alias left in {} ms",
        milliseconds_since(start)
    );
    report!(
        stale.is_none(),
        "the {} aliases left mapped read the frame's new value (first that does not: {stale:x?})",
        count / 2
    );
    let start = timer::count();
    drop(page);
    report_info!("unmapped every alias in {} ms", milliseconds_since(start));
}
