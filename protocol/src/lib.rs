//! vmunit's wire protocol: every line a guest prints for the runner to read, defined once.
//!
//! The guest runtime (`vmunit`) formats these lines and the runner (`vmunit-runner`) parses
//! them; each line type has its formatter (`Display`) beside its parser, and the tests check
//! that one is the inverse of the other. The grammar is kvm-unit-tests':
//!
//! ```text
//! PASS: msr: EFER: write of NXE reads back    report lines: PASS FAIL SKIP XFAIL XPASS KFAIL INFO
//! SUMMARY: 14 tests, 2 unexpected failures, 1 skipped
//! EXIT: STATUS=3                               (guest code << 1) | 1, QEMU's status too
//! ABORT: boot: no memory map                   a panic or an unexpected exception
//! BENCH: cpuid=1234 cycles                     a measurement (not a report line)
//! MIGRATE: NOW                                 a migration request: NOW SKIP BEGIN END
//! ```
//!
//! and, in the image rather than on the console, the subtest registry ([`SubtestRecord`]).
//!
//! Lines may carry leading blanks and a trailing `\r`; [`GuestLine::parse`] ignores both.
//! The crate is `no_std` and allocates nothing, so the guest uses it as it is.

#![no_std]

#[cfg(test)]
extern crate std;

mod bench;
mod exit;
mod migrate;
mod report;
mod subtest;
mod summary;

pub use bench::{
    BenchError, BenchLine, DEFAULT_UNIT, Measurement, UNNAMED, is_name_character, is_unit_character,
};
pub use exit::{AbortLine, ExitLine, GuestCode};
pub use migrate::{MIGRATE_AFTER_REPORT_KEY, MigrateLine};
pub use report::{Label, PREFIX_DELIMITER, ReportLine};
pub use subtest::{SUBTEST_NAMES_SECTION, SUBTESTS_SECTION, SubtestRecord};
pub use summary::Summary;

/// One line of a guest's serial output, classified.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GuestLine<'a> {
    /// A report line: `PASS: ...`, `FAIL: ...`, ..., `INFO: ...`.
    Report(ReportLine<&'a str>),
    /// The closing `SUMMARY: ...` line.
    Summary(Summary),
    /// A `SUMMARY:` line whose counts do not parse; the text after the label.
    MalformedSummary(&'a str),
    /// The `EXIT: STATUS=n` line.
    Exit(ExitLine),
    /// An `ABORT: ...` line.
    Abort(AbortLine<&'a str>),
    /// A well-formed `BENCH:` line.
    Bench(BenchLine<&'a str>),
    /// A `BENCH:` line that breaks the grammar, and why.
    MalformedBench(BenchError),
    /// A migration request (`MIGRATE: NOW`, ...).
    Migrate(MigrateLine),
    /// Anything else: the guest's free text.
    Other(&'a str),
}

impl<'a> GuestLine<'a> {
    /// Classifies one line of serial output (without its newline).
    pub fn parse(line: &'a str) -> GuestLine<'a> {
        let text = line.trim_start().trim_end_matches(['\r', '\n']);
        if let Some(rest) = text.strip_prefix(ExitLine::LABEL)
            && let Some(exit) = ExitLine::parse_after_label(rest)
        {
            return GuestLine::Exit(exit);
        }
        if let Some(rest) = text.strip_prefix(Summary::LABEL) {
            return match Summary::parse_after_label(rest) {
                Some(summary) => GuestLine::Summary(summary),
                None => GuestLine::MalformedSummary(rest.trim()),
            };
        }
        if let Some(rest) = text.strip_prefix(AbortLine::<&str>::LABEL) {
            return GuestLine::Abort(AbortLine { reason: rest.trim() });
        }
        if let Some(rest) = text.strip_prefix(BenchLine::<&str>::LABEL) {
            return match BenchLine::parse_after_label(rest) {
                Ok(bench) => GuestLine::Bench(bench),
                Err(error) => GuestLine::MalformedBench(error),
            };
        }
        if let Some(rest) = text.strip_prefix(MigrateLine::LABEL)
            && let Some(request) = MigrateLine::parse_after_label(rest)
        {
            return GuestLine::Migrate(request);
        }
        match ReportLine::parse(text) {
            Some(report) => GuestLine::Report(report),
            None => GuestLine::Other(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind_of_line() {
        assert_eq!(
            GuestLine::parse("  PASS: msr: read\r"),
            GuestLine::Report(ReportLine {
                label: Label::Pass,
                text: "msr: read"
            })
        );
        assert_eq!(
            GuestLine::parse("SUMMARY: 3 tests, 1 skipped"),
            GuestLine::Summary(Summary {
                tests: 3,
                skipped: 1,
                ..Summary::default()
            })
        );
        assert_eq!(
            GuestLine::parse("SUMMARY: lots"),
            GuestLine::MalformedSummary("lots")
        );
        assert_eq!(
            GuestLine::parse("EXIT: STATUS=3"),
            GuestLine::Exit(ExitLine { status: 3 })
        );
        assert_eq!(
            GuestLine::parse("ABORT: boot: no memory"),
            GuestLine::Abort(AbortLine {
                reason: "boot: no memory"
            })
        );
        assert_eq!(
            GuestLine::parse("BENCH: cpuid=12 cycles"),
            GuestLine::Bench(BenchLine {
                name: "cpuid",
                value: "12",
                unit: "cycles"
            })
        );
        assert_eq!(
            GuestLine::parse("BENCH: cpuid=12"),
            GuestLine::MalformedBench(BenchError::NoUnit)
        );
        assert_eq!(
            GuestLine::parse("MIGRATE: NOW\r"),
            GuestLine::Migrate(MigrateLine::Now)
        );
        assert_eq!(
            GuestLine::parse("MIGRATE: LATER"),
            GuestLine::Other("MIGRATE: LATER")
        );
        assert_eq!(GuestLine::parse("hello"), GuestLine::Other("hello"));
        assert_eq!(GuestLine::parse("PASSED"), GuestLine::Other("PASSED"));
        // An EXIT line with a bad status is free text: nothing takes it for a result.
        assert_eq!(
            GuestLine::parse("EXIT: STATUS=x"),
            GuestLine::Other("EXIT: STATUS=x")
        );
    }
}
