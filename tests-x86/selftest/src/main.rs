//! selftest: the runtime itself works: boot, argv, heap, page allocation, exceptions, paging.
//!
//! The unittests.toml entry passes `selftest-arg1 key=value`; the argv checks expect them.
//! With `migration` (entry `selftest-migration`, group `migration`) it checks instead that the
//! guest goes on across live migrations.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use vmunit::arch::device::{self, HOLE, WINDOW, WINDOW_PAGES};
use vmunit::arch::instructions::{int3, raise_invalid_opcode, try_divide, try_read, try_ud2};
use vmunit::arch::{mmu, page_fault};
use vmunit::catch::Attempt;
use vmunit::memory::{self, PAGE_SIZE, Protection, TestPage};
use vmunit::{Migration, Vector, catch_exception, prefix, report, report_skip, trap_exceptions};

vmunit::main!(main);

fn main(args: &[&str]) {
    match args.first().copied() {
        Some("migration") => return migration(),
        Some("migration-continuous") => return continuous_migration(continuous_rounds(args)),
        _ => {}
    }
    check_arguments(args);
    check_heap();
    check_frames();
    check_exceptions();
    check_paging();
    check_device_ranges();
}

fn check_arguments(args: &[&str]) {
    let _prefix = prefix("argv");
    report!(args.len() == 2, "two arguments from -append (got {})", args.len());
    report!(
        args.first() == Some(&"selftest-arg1"),
        "first argument is selftest-arg1 (got {:?})",
        args.first()
    );
    report!(
        vmunit::args::value(args, "key") == Some("value"),
        "key=value is found as key -> value"
    );
}

fn check_heap() {
    let _prefix = prefix("heap");
    let (heap_bytes, frame_bytes) = memory::sizes();
    report!(
        heap_bytes >= 16 << 20,
        "the heap has at least 16 MiB with -m 128 (has {heap_bytes})"
    );
    report!(
        frame_bytes >= 16 << 20,
        "the frame allocator has at least 16 MiB (has {frame_bytes})"
    );

    let numbers: Vec<u64> = (0..10_000).collect();
    report!(
        numbers.iter().sum::<u64>() == 49_995_000,
        "a 10000-element Vec holds what was pushed"
    );
    let boxed = Box::new([0x5au8; 4096]);
    report!(
        boxed.iter().all(|&byte| byte == 0x5a),
        "a 4 KiB Box holds its contents"
    );

    // Touch one word per page: under an instruction-emulating hypervisor, filling 8 MiB byte
    // by byte takes seconds.
    let words_per_page = PAGE_SIZE as usize / 8;
    let mut big: Vec<u64> = alloc::vec![0; (8 << 20) / 8];
    for (page, word) in big.iter_mut().step_by(words_per_page).enumerate() {
        *word = page as u64 ^ 0xa5a5;
    }
    let intact = big
        .iter()
        .step_by(words_per_page)
        .enumerate()
        .all(|(page, &word)| word == page as u64 ^ 0xa5a5);
    report!(
        intact,
        "an 8 MiB allocation holds a word written in each of its pages"
    );
    let address = big.as_ptr() as usize;
    drop(big);
    let again: Vec<u64> = Vec::with_capacity((8 << 20) / 8);
    report!(
        again.as_ptr() as usize == address,
        "freeing 8 MiB makes the same block available again"
    );
}

fn check_frames() {
    let _prefix = prefix("frames");
    let first = memory::allocate_frame();
    let second = memory::allocate_frame();
    report!(first.is_some() && second.is_some(), "two frames can be allocated");
    let (Some(first), Some(second)) = (first, second) else {
        return;
    };
    report!(
        first % PAGE_SIZE == 0 && second % PAGE_SIZE == 0,
        "frames are page aligned ({first:#x}, {second:#x})"
    );
    report!(first != second, "two allocations return different frames");
    let block = memory::allocate_frames(4);
    report!(
        block.is_some_and(|address| address % (4 * PAGE_SIZE) == 0),
        "a block of 4 frames is aligned to its size ({block:x?})"
    );
    memory::free_frames(second, 1);
    report!(
        memory::allocate_frame() == Some(second),
        "a freed frame is handed out again"
    );
    memory::free_frames(first, 1);
    memory::free_frames(second, 1);
    if let Some(block) = block {
        memory::free_frames(block, 4);
    }
}

fn check_exceptions() {
    let _prefix = prefix("exceptions");
    let Attempt { result, address } = try_ud2();
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::UD && exception.rip == address),
        "ud2 raises #UD at its own address {address:#x} (got {result:x?})"
    );

    let result = try_read(0x8000_0000_0000_0000);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::GP && exception.error_code == 0),
        "reading a non-canonical address raises #GP(0) (got {result:x?})"
    );

    let result = try_divide(0, 1, 0);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::DE),
        "DIV by zero raises #DE (got {result:x?})"
    );
    report!(
        try_divide(0, 100, 7) == Ok((14, 2)),
        "DIV without a fault returns quotient and remainder"
    );

    if vmunit::environment::instruction_emulating_kvm() {
        report_skip!(
            "#BP: this host's kvm_pvm cannot emulate INT3 (the VM would stop with a KVM internal error; reproduce-int3)"
        );
    } else {
        let caught = catch_exception(int3);
        report!(
            matches!(caught, Err(exception) if exception.vector == Vector::BP),
            "int3 inside catch_exception is caught as #BP (got {caught:x?})"
        );
        let (after, traps) = trap_exceptions(&[Vector::BP], int3);
        report!(
            traps.len() == 1 && traps[0].rip == after,
            "a recorded #BP resumes after int3 at {after:#x} (got {traps:x?})"
        );
    }

    let mut inner_caught = false;
    let outer = catch_exception(|| {
        // divide() catches its own #DE; the #UD after it is left to the enclosing catch.
        inner_caught = matches!(try_divide(0, 1, 0), Err(exception) if exception.vector == Vector::DE);
        raise_invalid_opcode();
    });
    report!(
        inner_caught && matches!(outer, Err(exception) if exception.vector == Vector::UD),
        "catch_exception nests: the inner one catches #DE, then the outer one catches #UD (got {outer:x?})"
    );

    let result = try_read(0);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::PF && exception.address == 0),
        "reading the null page raises #PF at address 0 (got {result:x?})"
    );
}

fn check_paging() {
    let _prefix = prefix("paging");
    let page = TestPage::new();
    report!(
        page.try_write(8, 0x1122_3344_5566_7788).is_ok(),
        "a new test page is writable"
    );
    report!(
        page.try_read(8) == Ok(0x1122_3344_5566_7788),
        "a new test page reads back what was written"
    );
    report!(
        mmu::translate(page.address() + 8) == Some(page.frame() + 8),
        "translate() finds the page's frame"
    );

    page.protect(Protection::READ_ONLY);
    report!(
        page.try_read(8) == Ok(0x1122_3344_5566_7788),
        "a read-only page is still readable"
    );
    let result = page.try_write(8, 0);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::PF
            && exception.error_code & (page_fault::PRESENT | page_fault::WRITE) == (page_fault::PRESENT | page_fault::WRITE)
            && exception.address == page.address() + 8),
        "writing a read-only page raises #PF with P and W set at the written address (got {result:x?})"
    );

    page.unmap();
    report!(
        mmu::translate(page.address()).is_none(),
        "translate() finds nothing for an unmapped page"
    );
    let result = page.try_read(16);
    report!(
        matches!(result, Err(exception) if exception.vector == Vector::PF
            && exception.error_code & (page_fault::PRESENT | page_fault::WRITE) == 0
            && exception.address == page.address() + 16),
        "reading an unmapped page raises #PF with P and W clear at the read address (got {result:x?})"
    );

    page.map(Protection::READ_WRITE);
    report!(
        page.try_read(8) == Ok(0x1122_3344_5566_7788),
        "after mapping the page again its contents are intact"
    );
}

/// `device::checked` lets raw accesses through only inside the MMIO hole and the device
/// window: a range that runs past their end, or wraps around the address space, is not
/// device memory.
fn check_device_ranges() {
    let _prefix = prefix("device memory");
    let window_end = WINDOW + WINDOW_PAGES * PAGE_SIZE;
    report!(
        device::is_device_memory(HOLE.start, 8) && device::is_device_memory(window_end - 8, 8),
        "the first word of the MMIO hole and the last of the device window are device memory"
    );
    report!(
        !device::is_device_memory(window_end - 8, 16) && !device::is_device_memory(HOLE.end - 8, 16),
        "a range running past the window's or the hole's end is not device memory"
    );
    report!(
        !device::is_device_memory(u64::MAX - 7, 16),
        "a range that wraps around the address space is not device memory"
    );
    report!(
        !device::is_device_memory(1 << 20, 8),
        "RAM at 1 MiB is not device memory"
    );
}

/// kvm-unit-tests' selftest-migration (arm/selftest.c `migration`, common/selftest-migration.c):
/// the VM migrates [`MIGRATIONS`] times; after each migration the guest goes on with its memory
/// intact.
fn migration() {
    let _prefix = prefix("migration");
    let pattern: Vec<u64> = (0..PATTERN_WORDS).map(|index| pattern_word(index, 0)).collect();
    let mut completed = 0;
    for round in 1..=MIGRATIONS {
        match vmunit::migrate_quiet() {
            Migration::Completed => {}
            // Not a migration run: the SKIP line says so, and there is nothing to check.
            Migration::NotMigrationRun => return,
            Migration::AlreadyMigrated => break,
        }
        completed = round;
        let difference = first_difference(&pattern, 0);
        report!(
            difference.is_none(),
            "after migration {round}: the guest runs on with its {} KiB pattern intact (first difference at word {difference:?})",
            PATTERN_WORDS * 8 / 1024
        );
    }
    report!(
        completed == MIGRATIONS,
        "the guest went on after each of {MIGRATIONS} migrations (completed {completed})"
    );
}

/// Continuous migration (kvm-unit-tests' `migrate_begin_continuous`): the runner migrates
/// while the guest rewrites and checks its memory, round after round.
fn continuous_migration(rounds: u64) {
    let _prefix = prefix("migration-continuous");
    let mut buffer: Vec<u64> = (0..PATTERN_WORDS).map(|index| pattern_word(index, 0)).collect();
    if vmunit::begin_continuous_migration() != Migration::Completed {
        return;
    }
    let mut broken = None;
    for round in 1..=rounds {
        for (index, word) in buffer.iter_mut().enumerate() {
            *word = pattern_word(index, round);
        }
        if let Some(index) = first_difference(&buffer, round) {
            broken.get_or_insert((round, index));
        }
    }
    let ended = vmunit::end_continuous_migration();
    report!(
        ended == Migration::Completed && broken.is_none(),
        "{rounds} rounds of rewriting memory under continuous migration read back (first broken round and word: {broken:?})"
    );
    let difference = first_difference(&buffer, rounds);
    report!(
        difference.is_none(),
        "after continuous migration: the last round's pattern is intact (first difference at word {difference:?})"
    );
}

/// The rounds of continuous migration: `rounds=N` after `migration-continuous` (at least 1),
/// else [`CONTINUOUS_ROUNDS`].
fn continuous_rounds(args: &[&str]) -> u64 {
    vmunit::args::value(args, "rounds")
        .and_then(|rounds| rounds.parse().ok())
        .filter(|rounds| *rounds >= 1)
        .unwrap_or(CONTINUOUS_ROUNDS)
}

/// How many times `migration` migrates one by one (kvm-unit-tests does 15 on arm, 30 elsewhere).
const MIGRATIONS: usize = 8;
/// How many rounds the guest rewrites its pattern under continuous migration by default.
const CONTINUOUS_ROUNDS: u64 = 64;
/// The pattern's size in words: 1 MiB.
const PATTERN_WORDS: usize = 128 * 1024;

/// Word `index` of round `round`'s pattern: differs by word and by round.
fn pattern_word(index: usize, round: u64) -> u64 {
    (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_mul(0xd1b5_4a32_d192_ed03)
}

/// The first word of `buffer` that is not round `round`'s pattern.
fn first_difference(buffer: &[u64], round: u64) -> Option<usize> {
    buffer
        .iter()
        .enumerate()
        .position(|(index, word)| *word != pattern_word(index, round))
}
