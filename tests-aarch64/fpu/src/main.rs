//! fpu: the FP/SIMD register file (v0-v31, FPCR, FPSR) survives a synchronous exception (BRK,
//! resumed by the runtime) and an IRQ whose handler itself uses SIMD registers.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use vmunit::arch::ExceptionClass;
use vmunit::arch::gic::{self, SgiTarget};
use vmunit::arch::instructions::{RoundTripEvent, vector_register_round_trip};
use vmunit::{report, report_summary, trap_exceptions};

vmunit::main!(main);

const SGI: u32 = 2;
/// FPCR.RMode = 0b11 (round towards zero) and FPCR.FZ: a value the runtime never sets.
const FPCR_PATTERN: u64 = 3 << 22 | 1 << 24;

fn main(_arguments: &[&str]) -> i32 {
    let before = pattern(0x11);
    let (after, fpcr, traps) = {
        let (result, seen) = trap_exceptions(&[ExceptionClass::BRK64], || {
            vector_register_round_trip(&before, FPCR_PATTERN, RoundTripEvent::Breakpoint)
        });
        (result.0, result.1, seen.len())
    };
    report!(traps == 1, "the BRK was taken and resumed once (got {traps})");
    report!(
        after == before,
        "v0-v31 hold their values across a BRK exception ({})",
        first_difference(&before, &after)
    );
    report!(
        fpcr & FPCR_PATTERN == FPCR_PATTERN,
        "FPCR keeps RMode and FZ across the exception (got {fpcr:#x})"
    );

    if let Err(problem) = gic::init() {
        report!(false, "the GICv3 initialises: {problem}");
        return report_summary();
    }
    gic::set_handler(SGI, Some(simd_handler));
    gic::enable_private(SGI);
    let before = pattern(0x5a);
    gic::send_sgi(SGI, SgiTarget::Cpu(0));
    let (after, fpcr) = vector_register_round_trip(&before, FPCR_PATTERN, RoundTripEvent::InterruptWindow);
    report!(
        HANDLED.load(Ordering::Acquire) == 1,
        "the SGI was handled inside the register round trip"
    );
    report!(
        after == before,
        "v0-v31 hold their values across an IRQ whose handler uses SIMD ({})",
        first_difference(&before, &after)
    );
    report!(
        fpcr & FPCR_PATTERN == FPCR_PATTERN,
        "FPCR keeps RMode and FZ across the IRQ (got {fpcr:#x})"
    );
    report_summary()
}

static HANDLED: AtomicU32 = AtomicU32::new(0);

/// An IRQ handler that works the SIMD registers hard (the compiler vectorises this).
fn simd_handler(_intid: u32, _cpu: usize) {
    let mut values = core::hint::black_box([1.25f64; 64]);
    for (index, value) in values.iter_mut().enumerate() {
        *value = *value * index as f64 + 0.5;
    }
    let copy = core::hint::black_box(values);
    core::hint::black_box(copy.iter().sum::<f64>());
    HANDLED.fetch_add(1, Ordering::AcqRel);
}

fn pattern(seed: u8) -> [u8; 512] {
    core::array::from_fn(|index| (index as u8).wrapping_mul(7) ^ seed)
}

fn first_difference(before: &[u8; 512], after: &[u8; 512]) -> alloc_free::Difference {
    alloc_free::Difference(before.iter().zip(after).position(|(a, b)| a != b))
}

mod alloc_free {
    //! Formatting of the first differing register without allocating.
    /// The byte index of the first difference, if any.
    pub struct Difference(pub Option<usize>);
    impl core::fmt::Display for Difference {
        fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                None => write!(formatter, "all equal"),
                Some(index) => write!(formatter, "v{} differs first, byte {}", index / 16, index % 16),
            }
        }
    }
}
