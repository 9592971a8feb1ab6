//! cache: self-modifying code (kvm-unit-tests' arm/cache.c). A page of code is primed with
//! `movz w0, #0x42; ret` and run, then its first instruction is rewritten and the page run
//! again, with the cache maintenance CTR_EL0 and CLIDR_EL1 say is required (DC CVAU, DSB ISH,
//! IC IVAU, DSB ISH, ISB, leaving out what IDC/DIC make unnecessary): the new code must run.
//!
//! Arguments: `iterations=N` (default 65536, as kvm-unit-tests' NTIMES); `idc=0|1` and
//! `dic=0|1`, the CTR_EL0 bits the CPU model has (checked when given).
#![no_std]
#![no_main]

use vmunit::arch::cache::{
    CTR_DIC, CTR_IDC, CodePage, Maintenance, RET, cache_levels, cache_type, move_to_w0,
};
use vmunit::arch::registers::{clidr, ctr};
use vmunit::{args, prefix, report, report_info, report_skip, report_summary};

vmunit::main!(main);

/// What the primed code returns.
const OLD_VALUE: u16 = 0x42;

fn main(arguments: &[&str]) -> i32 {
    let iterations = args::value(arguments, "iterations")
        .and_then(|text| text.parse::<u32>().ok())
        .unwrap_or(1 << 16);
    let ctr = cache_type();
    let clidr = cache_levels();
    report_info!(
        "CTR_EL0 = {ctr:#x}: IDC {}, DIC {}, I-cache line {} bytes, D-cache line {} bytes",
        (ctr & CTR_IDC != 0) as u8,
        (ctr & CTR_DIC != 0) as u8,
        ctr::instruction_line_bytes(ctr),
        ctr::data_line_bytes(ctr)
    );
    report_info!(
        "CLIDR_EL1 = {clidr:#x}: LoUU {}, LoC {}, LoUIS {}",
        clidr::level_of_unification_uniprocessor(clidr),
        clidr::level_of_coherence(clidr),
        clidr::level_of_unification_inner_shareable(clidr)
    );
    // A CPU model's CTR_EL0 is known: `idc=` and `dic=` (0 or 1) check that the machine
    // reports it (a hypervisor must not claim IDC or DIC that the CPU lacks).
    for (key, bit, name) in [("idc", CTR_IDC, "IDC"), ("dic", CTR_DIC, "DIC")] {
        if let Some(expected) = args::value(arguments, key) {
            let got = (ctr & bit != 0) as u8;
            report!(
                expected.parse::<u8>() == Ok(got),
                "CTR_EL0.{name} is {expected}, as the CPU model has it (got {got})"
            );
        }
    }
    let required = Maintenance::required();
    if required.clean_data {
        report_info!("dcache clean to PoU required");
    }
    if required.invalidate_instructions {
        report_info!("icache invalidation to PoU required");
    }

    let page = CodePage::new();
    page.write_instruction(0, move_to_w0(OLD_VALUE));
    page.write_instruction(1, RET);
    page.synchronise(0, 2, Maintenance::FULL);
    let first = page.call(0);
    report!(
        first == Ok(u32::from(OLD_VALUE)),
        "the code page runs: movz w0, #{OLD_VALUE:#x}; ret returns {OLD_VALUE:#x} (got {})",
        Shown(first)
    );
    if first.is_err() {
        return report_summary();
    }

    {
        let _prefix = prefix("IDC-DIC");
        let (mismatches, example) = rewrite_and_run(&page, iterations, required);
        report!(
            mismatches == 0,
            "code generation: {iterations} rewrites with the required maintenance {required:?} \
             each run the new code ({mismatches} ran something else{example})"
        );
    }
    {
        let _prefix = prefix("full-maintenance");
        let (mismatches, example) = rewrite_and_run(&page, iterations, Maintenance::FULL);
        report!(
            mismatches == 0,
            "code generation: {iterations} rewrites with DC CVAU and IC IVAU each run the new code \
             ({mismatches} ran something else{example})"
        );
    }
    {
        let _prefix = prefix("no-maintenance");
        let (mismatches, example) = rewrite_and_run(&page, iterations, Maintenance::NONE);
        if ctr & CTR_IDC != 0 && ctr & CTR_DIC != 0 {
            report!(
                mismatches == 0,
                "code generation: with CTR_EL0.IDC and DIC set, {iterations} rewrites followed by \
                 DSB ISH and ISB alone each run the new code ({mismatches} ran something else{example})"
            );
        } else {
            report_skip!(
                "code generation without DC CVAU/IC IVAU: CTR_EL0 (IDC {}, DIC {}) makes stale \
                 instructions architecturally allowed, so no result is wrong (observed: {mismatches} of \
                 {iterations} rewrites ran stale code{example}; TCG does not model a stale I-cache)",
                (ctr & CTR_IDC != 0) as u8,
                (ctr & CTR_DIC != 0) as u8
            );
        }
    }
    report_summary()
}

/// A mismatch seen while rewriting, formatted as `, first: rewrite N returned X, not Y`.
struct Example(Option<(u32, Result<u32, vmunit::arch::Exception>, u32)>);

impl core::fmt::Display for Example {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            None => Ok(()),
            Some((iteration, got, expected)) => write!(
                formatter,
                "; first: rewrite {iteration} returned {}, expected {expected:#x}",
                Shown(got)
            ),
        }
    }
}

/// A call's result: the returned w0 in hex, or the exception.
struct Shown(Result<u32, vmunit::arch::Exception>);

impl core::fmt::Display for Shown {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(value) => write!(formatter, "{value:#x}"),
            Err(exception) => write!(formatter, "{exception}"),
        }
    }
}

/// Primes the page with the old code (full maintenance, then a run, so that the old
/// instruction is in the I-cache), rewrites it to return a value unique to the iteration,
/// makes it visible with `maintenance`, runs it; counts the runs that did not return the new
/// value and keeps the first.
fn rewrite_and_run(page: &CodePage, iterations: u32, maintenance: Maintenance) -> (u32, Example) {
    let mut mismatches = 0;
    let mut example = Example(None);
    for iteration in 0..iterations {
        page.write_instruction(0, move_to_w0(OLD_VALUE));
        page.synchronise(0, 1, Maintenance::FULL);
        let primed = page.call(0);
        // A new value per iteration (never the old one), so stale code from any earlier
        // rewrite shows too.
        let new_value = 0x100 + (iteration % 0xff00) as u16;
        page.write_instruction(0, move_to_w0(new_value));
        page.synchronise(0, 1, maintenance);
        let got = page.call(0);
        if primed != Ok(u32::from(OLD_VALUE)) || got != Ok(u32::from(new_value)) {
            mismatches += 1;
            if example.0.is_none() {
                let shown = if primed != Ok(u32::from(OLD_VALUE)) {
                    primed
                } else {
                    got
                };
                let expected = if primed != Ok(u32::from(OLD_VALUE)) {
                    OLD_VALUE
                } else {
                    new_value
                };
                example = Example(Some((iteration, shown, u32::from(expected))));
            }
        }
    }
    (mismatches, example)
}
