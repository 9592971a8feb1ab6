//! sieve: the heap allocator and paging under stress: prime sieves in large buffers (static,
//! heap, repeated), and a sieve kept in test pages that are remapped, protected and freed.
//!
//! Its parts are `#[vmunit::test]` subtests: `static_memory`, `heap`, `bitmap`, `paged`
//! (arguments without `=` pick some by name or glob; `max=N` and `pages=N` scale it down).
//!
//! Like kvm-unit-tests' sieve, the result of each sieve is compared with the known count of
//! primes: a hypervisor that loses or corrupts guest memory (a stale TLB entry, a wrong shadow
//! page table, a page lost on remapping) changes the count. The paged sieve also compares each
//! word with the bitmap at its position, since two pages swapped keep the count.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use vmunit::arch::page_fault::{PRESENT, WRITE};
use vmunit::arch::probes::Window;
use vmunit::memory::{self, PAGE_SIZE, Protection, TestPage};
use vmunit::{Vector, report, report_info, report_skip};

/// (limit, number of primes below it).
const KNOWN_COUNTS: [(usize, usize); 5] = [
    (1_000, 168),
    (10_000, 1_229),
    (100_000, 9_592),
    (1_000_000, 78_498),
    (10_000_000, 664_579),
];
/// Primes below 2^21 (the paged sieve with 64 pages) and 2^24 (the largest bit sieve).
const PRIMES_BELOW_2_21: usize = 155_611;
const PRIMES_BELOW_2_24: usize = 1_077_871;

/// kvm-unit-tests' static sieve: a buffer in the image's .bss, whose pages the runtime maps
/// with 4 KiB pages.
const STATIC_SIZE: usize = 1_000_000;
static STATIC_DATA: [AtomicU8; STATIC_SIZE] = [const { AtomicU8::new(0) }; STATIC_SIZE];

/// Test pages holding the paged sieve: one bit per number, 2^21 numbers.
const PAGES: usize = 64;
const BITS_PER_PAGE: usize = PAGE_SIZE as usize * 8;
const WORDS_PER_PAGE: usize = PAGE_SIZE as usize / 8;
/// How often the paged sieve's pages go through protect / unmap / remap.
const ROUNDS: usize = 3;

/// How big the test is: `max=<limit>` caps the sieves' limits and `pages=<count>` sets how many
/// test pages hold the paged sieve (at most 64). A hypervisor that emulates every instruction
/// needs smaller values to finish in time: under this host's kvm_pvm (told by the runner's
/// guest environment) the defaults are `max=20000 pages=4`.
struct Scale {
    max: usize,
    pages: usize,
}

impl Scale {
    fn parse(args: &[&str]) -> Scale {
        let mut scale = if vmunit::environment::instruction_emulating_kvm() {
            Scale {
                max: 20_000,
                pages: 4,
            }
        } else {
            Scale {
                max: usize::MAX,
                pages: PAGES,
            }
        };
        for argument in args {
            if let Some(value) = argument.strip_prefix("max=").and_then(|value| value.parse().ok()) {
                scale.max = value;
            }
            if let Some(value) = argument
                .strip_prefix("pages=")
                .and_then(|value| value.parse().ok())
            {
                scale.pages = usize::min(value, PAGES).max(1);
            }
        }
        scale
    }
}

vmunit::subtests!(init = describe, exit = finish);

/// The suite's set-up: says what the subtests will work with.
fn describe() {
    let (heap, frames) = memory::sizes();
    report_info!("heap {} KiB, frames {} KiB", heap / 1024, frames / 1024);
    let scale = Scale::parse(vmunit::args());
    report_info!(
        "sieve limits up to {}, paged sieve over {} pages",
        scale.max,
        scale.pages
    );
    if vmunit::environment::instruction_emulating_kvm() {
        report_info!("kvm_pvm emulates every instruction: smaller limits unless arguments say otherwise");
    }
}

/// The suite's tear-down: every frame the subtests took is back.
fn finish() {
    let frame = memory::allocate_frames(1);
    report!(
        frame.is_some(),
        "frames can still be allocated after the subtests"
    );
    if let Some(frame) = frame {
        memory::free_frames(frame, 1);
    }
}

/// The sieve in a static buffer.
#[vmunit::test]
fn static_memory() {
    static_sieve(&Scale::parse(vmunit::args()));
}

/// Sieves in heap buffers of several sizes, and many buffers at once.
#[vmunit::test]
fn heap() {
    heap_sieves(memory::sizes().0, &Scale::parse(vmunit::args()));
}

/// A bit-per-number sieve in one large heap buffer.
#[vmunit::test]
fn bitmap() {
    bitmap_sieve(memory::sizes().0, &Scale::parse(vmunit::args()));
}

/// A sieve whose pages are protected, unmapped and remapped between rounds.
#[vmunit::test]
fn paged() {
    paged_sieve(&Scale::parse(vmunit::args()));
}

/// kvm-unit-tests' sieve: one byte per number; returns how many primes lie below `data.len()`.
fn sieve(data: &mut [u8]) -> usize {
    data.fill(1);
    for entry in data.iter_mut().take(2) {
        *entry = 0;
    }
    let mut count = 0;
    for number in 2..data.len() {
        if data[number] != 0 {
            count += 1;
            for multiple in (number * 2..data.len()).step_by(number) {
                data[multiple] = 0;
            }
        }
    }
    count
}

fn static_sieve(scale: &Scale) {
    let Some(&(size, expected)) = KNOWN_COUNTS
        .iter()
        .rev()
        .find(|&&(limit, _)| limit <= STATIC_SIZE.min(scale.max))
    else {
        report_skip!(
            "static sieve: max={} is below the smallest known limit",
            scale.max
        );
        return;
    };
    let data = &STATIC_DATA[..size];
    for entry in data {
        entry.store(1, Ordering::Relaxed);
    }
    data[0].store(0, Ordering::Relaxed);
    data[1].store(0, Ordering::Relaxed);
    let mut count = 0;
    for number in 2..size {
        if data[number].load(Ordering::Relaxed) != 0 {
            count += 1;
            for multiple in (number * 2..size).step_by(number) {
                data[multiple].store(0, Ordering::Relaxed);
            }
        }
    }
    report!(
        count == expected,
        "{count} primes below {size} in the image's .bss (expected {expected})"
    );
}

/// Sieves of every known size in fresh heap buffers, the largest one three times over, as
/// kvm-unit-tests does with its 100 MB "virtual" buffer.
fn heap_sieves(heap: u64, scale: &Scale) {
    // The buddy heap rounds each block up to a power of two; leave room for everything else.
    let fits = |size: usize| (size.next_power_of_two() as u64) <= heap / 2;
    for &(limit, expected) in KNOWN_COUNTS.iter().filter(|&&(limit, _)| limit <= scale.max) {
        if !fits(limit) {
            report_skip!("sieve below {limit}: a {limit}-byte buffer does not fit in the {heap}-byte heap");
            continue;
        }
        let mut data = vec![0u8; limit];
        let count = sieve(&mut data);
        report!(
            count == expected,
            "{count} primes below {limit} (expected {expected})"
        );
    }
    let Some(&(limit, expected)) = KNOWN_COUNTS
        .iter()
        .rev()
        .find(|&&(limit, _)| fits(limit) && limit <= scale.max)
    else {
        report_skip!(
            "repeated heap sieves: max={} is below the smallest known limit",
            scale.max
        );
        return;
    };
    let mut addresses = Vec::new();
    for round in 0..3 {
        let mut data = vec![0u8; limit];
        addresses.push(data.as_ptr() as u64);
        let count = sieve(&mut data);
        report!(
            count == expected,
            "round {round}: {count} primes below {limit} in a new buffer (expected {expected})"
        );
    }
    report_info!("buffers at {addresses:#x?}");
    // Many buffers live at once do not overlap: each keeps its own pattern. They fill half
    // the heap (or four times `max`, for a scaled-down run) in 16 buffers.
    let total = usize::min((heap / 2) as usize, scale.max.saturating_mul(4));
    let size = usize::max(4096, (total / 16 + 1).next_power_of_two() / 2);
    let mut held = Vec::new();
    while (held.len() + 1) * size <= total {
        held.push(vec![held.len() as u8; size]);
    }
    let intact = held
        .iter()
        .enumerate()
        .filter(|(index, buffer)| buffer.iter().all(|&byte| byte == *index as u8))
        .count();
    // How many buffers there are follows from the sizes above (16 or more, unless a tiny
    // `max` leaves room for fewer): a count, not a check.
    if held.len() < 2 {
        report_skip!(
            "buffers live at once: {total} bytes hold {} buffer(s) of {size} bytes, too few to overlap",
            held.len()
        );
        return;
    }
    report!(
        intact == held.len(),
        "{intact} of {} buffers of {size} bytes live at once keep their own pattern (expected all)",
        held.len()
    );
}

/// A sieve with one bit per odd number in a `Vec<u64>`: another allocation size and access
/// pattern; returns the number of primes below `limit`.
fn bit_sieve(limit: usize) -> (Vec<u64>, usize) {
    // Bit i stands for the number 2i+1.
    let odd_numbers = limit / 2;
    let mut composite = vec![0u64; odd_numbers.div_ceil(64)];
    let mut count = usize::from(limit > 2); // 2
    for index in 1..odd_numbers {
        if composite[index / 64] & (1 << (index % 64)) == 0 {
            count += 1;
            let number = 2 * index + 1;
            let mut multiple = number * number;
            while multiple < limit {
                composite[multiple / 128] |= 1 << ((multiple / 2) % 64);
                multiple += 2 * number;
            }
        }
    }
    (composite, count)
}

fn bitmap_sieve(heap: u64, scale: &Scale) {
    let limits = KNOWN_COUNTS
        .iter()
        .copied()
        .chain([(1 << 21, PRIMES_BELOW_2_21), (1 << 24, PRIMES_BELOW_2_24)]);
    for (limit, expected) in limits.filter(|&(limit, _)| limit >= 10_000 && limit <= scale.max) {
        if (limit as u64 / 16).next_power_of_two() > heap / 2 {
            report_skip!("bit sieve below {limit}: the bitmap does not fit in the heap");
            continue;
        }
        let (_, count) = bit_sieve(limit);
        report!(
            count == expected,
            "{count} primes below {limit} with a bit per odd number (expected {expected})"
        );
    }
}

/// Every frame the frame allocator can hand out now, as blocks (address, frame count) taken
/// greedily from the largest size down; all are given back before returning.
fn free_frame_blocks() -> Vec<(u64, usize)> {
    let mut blocks = Vec::new();
    for order in (0..28).rev() {
        while let Some(address) = memory::allocate_frames(1 << order) {
            blocks.push((address, 1 << order));
        }
    }
    for &(address, count) in &blocks {
        memory::free_frames(address, count);
    }
    blocks
}

fn frame_total(blocks: &[(u64, usize)]) -> usize {
    blocks.iter().map(|&(_, count)| count).sum()
}

/// The paged sieve's bitmap (bit n set when n is prime, for n below `limit`) and the number
/// of primes.
fn prime_bitmap(limit: usize) -> (Vec<u64>, usize) {
    let mut bits = vec![0u64; limit / 64];
    let (composite, count) = bit_sieve(limit);
    bits[0] |= 1 << 2;
    for number in (3..limit).step_by(2) {
        if composite[number / 128] & (1 << ((number / 2) % 64)) == 0 {
            bits[number / 64] |= 1 << (number % 64);
        }
    }
    (bits, count)
}

/// What one pass over the paged sieve read: the primes it counted, and the words that differ
/// from the bitmap's word at their own position. Two pages showing each other's frames count
/// the same primes in total; only the positions tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PagedRead {
    primes: usize,
    misplaced_words: usize,
}

/// Reads every word of the paged sieve through `read(page, word)`, pages in `order`, and
/// compares each with `bitmap` at its position; `None` when a read faults.
fn read_paged(
    bitmap: &[u64],
    mut read: impl FnMut(usize, usize) -> Option<u64>,
    order: &[usize],
) -> Option<PagedRead> {
    let mut result = PagedRead {
        primes: 0,
        misplaced_words: 0,
    };
    for &page in order {
        for word in 0..WORDS_PER_PAGE {
            let value = read(page, word)?;
            result.primes += value.count_ones() as usize;
            if value != bitmap[page * WORDS_PER_PAGE + word] {
                result.misplaced_words += 1;
            }
        }
    }
    Some(result)
}

fn greatest_common_divisor(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The sieve's bitmap lives in test pages that are remapped, protected, shown through a
/// window and freed: every word must stay at its place (so the count too) through every change
/// of mapping, and the frames must be allocatable again afterwards.
fn paged_sieve(scale: &Scale) {
    let page_count = scale.pages;
    let limit = page_count * BITS_PER_PAGE;
    let (bitmap, expected) = prime_bitmap(limit);
    if page_count == PAGES {
        report!(
            expected == PRIMES_BELOW_2_21,
            "the heap bit sieve finds {expected} primes below {limit} (expected {PRIMES_BELOW_2_21})"
        );
    }
    let prime_bits = |index: usize| bitmap[index];
    let pages: Vec<TestPage> = (0..page_count).map(|_| TestPage::new()).collect();
    let mut window = Window::new();
    let mut frames: Vec<u64> = pages.iter().map(TestPage::frame).collect();
    frames.sort_unstable();
    frames.dedup();
    report!(
        frames.len() == page_count,
        "{page_count} test pages got {} distinct frames",
        frames.len()
    );

    let mut write_faults = 0;
    for (index, page) in pages.iter().enumerate() {
        for word in 0..WORDS_PER_PAGE {
            if page
                .try_write(word as u64 * 8, prime_bits(index * WORDS_PER_PAGE + word))
                .is_err()
            {
                write_faults += 1;
            }
        }
    }
    report!(
        write_faults == 0,
        "writing the bitmap into {page_count} pages through their mappings ({write_faults} faults)"
    );
    let in_order: Vec<usize> = (0..page_count).collect();
    // A stride coprime with the page count visits every page once, far from the last one.
    let stride = (37..)
        .find(|&stride| greatest_common_divisor(stride, page_count) == 1)
        .unwrap_or(1);
    let sound = Some(PagedRead {
        primes: expected,
        misplaced_words: 0,
    });
    let own = read_paged(
        &bitmap,
        |page, word| pages[page].try_read(word as u64 * 8).ok(),
        &in_order,
    );
    report!(
        own == sound,
        "the {expected} primes below {limit} read back through the pages, each word at its place \
         (got {own:?})"
    );

    for round in 0..ROUNDS {
        let _prefix = vmunit::prefix!("round {round}");
        let (mut protect_ok, mut unmap_ok, mut remap_ok) = (true, true, true);
        for (index, page) in pages.iter().enumerate() {
            let first = prime_bits(index * WORDS_PER_PAGE);
            page.protect(Protection::READ_ONLY);
            let write = page.try_write(0, !first);
            protect_ok &= matches!(write, Err(e) if e.vector == Vector::PF && e.error_code == PRESENT | WRITE && e.address == page.address())
                && page.try_read(0) == Ok(first);
            page.unmap();
            let read = page.try_read(8);
            unmap_ok &= matches!(read, Err(e) if e.vector == Vector::PF && e.error_code == 0 && e.address == page.address() + 8);
            page.map(Protection::READ_WRITE);
            remap_ok &= page.try_read(0) == Ok(first);
        }
        report!(
            protect_ok,
            "a write to each read-only page raises #PF(P|W) and changes nothing"
        );
        report!(
            unmap_ok,
            "a read of each unmapped page raises #PF(0) at the right address"
        );
        report!(remap_ok, "each page remapped read-write shows its old contents");

        // One window, moved from frame to frame: a stale TLB entry shows the wrong frame.
        let order: Vec<usize> = (0..page_count)
            .map(|index| (index * stride + round * 11) % page_count)
            .collect();
        let mut shown = usize::MAX;
        let counted = read_paged(
            &bitmap,
            |page, word| {
                if page != shown {
                    window.show(&pages[page], Protection::READ_ONLY);
                    shown = page;
                }
                window.try_read(word as u64 * 8).ok()
            },
            &order,
        );
        report!(
            counted == sound,
            "the {expected} primes read through one window remapped over the pages in shuffled \
             order, each word at its place (got {counted:?})"
        );
    }

    // Writes through the window reach the page's own mapping (same frame, another alias).
    let target = &pages[page_count / 2];
    window.show(target, Protection::READ_WRITE);
    let marker = 0x0123_4567_89ab_cdef;
    let written = window.try_write(PAGE_SIZE - 8, marker);
    let through_page = target.try_read(PAGE_SIZE - 8);
    report!(
        written.is_ok() && through_page == Ok(marker),
        "a word written through the window reads back through the page's own mapping (got {through_page:x?})"
    );
    let restored = target.try_write(
        PAGE_SIZE - 8,
        prime_bits((page_count / 2 + 1) * WORDS_PER_PAGE - 1),
    );
    let via_window = window.try_read(PAGE_SIZE - 8);
    report!(
        restored.is_ok() && via_window == Ok(prime_bits((page_count / 2 + 1) * WORDS_PER_PAGE - 1)),
        "a word written through the page reads back through the window (got {via_window:x?})"
    );
    let final_count = read_paged(
        &bitmap,
        |page, word| pages[page].try_read(word as u64 * 8).ok(),
        &in_order,
    );
    report!(
        final_count == sound,
        "the {expected} primes read through the pages after all the remapping, each word at its \
         place (got {final_count:?})"
    );

    // Freed frames are handed out again, and none leak.
    let before = frame_total(&free_frame_blocks());
    let window_frame = 1; // The window's own frame.
    drop(window);
    drop(pages);
    let blocks = free_frame_blocks();
    let after = frame_total(&blocks);
    report!(
        after == before + page_count + window_frame,
        "freeing {page_count} test pages and the window returns {} frames to the allocator ({before} free before, {after} after)",
        page_count + window_frame
    );
    let reusable = frames
        .iter()
        .filter(|&&frame| {
            blocks
                .iter()
                .any(|&(address, count)| (address..address + count as u64 * PAGE_SIZE).contains(&frame))
        })
        .count();
    report!(
        reusable == page_count,
        "all {page_count} frames of the freed pages can be allocated again ({reusable} can)"
    );
    let again = frame_total(&free_frame_blocks());
    report!(
        again == after,
        "counting free frames leaks none ({after} then {again})"
    );
}
