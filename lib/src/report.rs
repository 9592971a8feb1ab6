//! kvm-unit-tests-compatible reporting: the kinds of report, their tally and the `prefix: `
//! chain. The lines themselves (labels, `SUMMARY:`, exit codes) are defined by the wire
//! protocol crate, `vmunit_protocol`, which the runner parses them with.
//!
//! The counting and formatting logic ([`Tally`], [`Prefixes`]) is plain data so that it is
//! unit tested on the host; the macros print through the console.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

pub use vmunit_protocol::{GuestCode, Label, PREFIX_DELIMITER, ReportLine, Summary};

/// How one report line counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `report!` that held.
    Pass,
    /// `report!` that did not hold: an unexpected failure.
    Fail,
    /// `report_xfail!` with the failure expected, and it failed.
    ExpectedFail,
    /// `report_xfail!` with the failure expected, but it passed: unexpected.
    UnexpectedPass,
    /// `report_kfail!` with a known failure that happened: not counted as unexpected.
    KnownFail,
    /// `report_skip!`.
    Skip,
}

impl Kind {
    /// Classifies a report, as kvm-unit-tests' `va_report` does.
    pub fn of(pass: bool, expected_fail: bool, known_fail: bool) -> Kind {
        match (pass, expected_fail, known_fail) {
            (true, true, _) => Kind::UnexpectedPass,
            (false, true, _) => Kind::ExpectedFail,
            (false, false, true) => Kind::KnownFail,
            (true, false, _) => Kind::Pass,
            (false, false, false) => Kind::Fail,
        }
    }

    /// The line's leading word.
    pub fn label(self) -> Label {
        match self {
            Kind::Pass => Label::Pass,
            Kind::Fail => Label::Fail,
            Kind::ExpectedFail => Label::ExpectedFail,
            Kind::UnexpectedPass => Label::UnexpectedPass,
            Kind::KnownFail => Label::KnownFail,
            Kind::Skip => Label::Skip,
        }
    }

    /// Whether the outcome counts as good (kvm-unit-tests' `report` return value).
    pub fn is_ok(self) -> bool {
        !matches!(self, Kind::Fail | Kind::UnexpectedPass)
    }
}

/// Guest exit codes as the `i32`s `main` returns: the protocol's [`GuestCode`]s. QEMU's
/// status is `(code << 1) | 1`.
pub mod exit_code {
    use super::GuestCode;

    /// Every report passed (QEMU status 1).
    pub const PASS: i32 = GuestCode::Pass.code() as i32;
    /// At least one unexpected failure (QEMU status 3).
    pub const FAIL: i32 = GuestCode::Failures.code() as i32;
    /// Every report was skipped, so that QEMU's status is 77 as in kvm-unit-tests.
    pub const SKIP: i32 = GuestCode::AllSkipped.code() as i32;
    /// A panic or unexpected exception (QEMU status 127, kvm-unit-tests' abort()).
    pub const ABORT: i32 = GuestCode::Abort.code() as i32;
}

/// Counters behind the `SUMMARY:` line.
#[derive(Default)]
pub struct Tally {
    tests: AtomicU32,
    failures: AtomicU32,
    known_failures: AtomicU32,
    expected_failures: AtomicU32,
    skipped: AtomicU32,
}

/// A snapshot of a [`Tally`]: the protocol's `SUMMARY:` line.
pub type Counts = Summary;

impl Tally {
    /// An empty tally.
    pub const fn new() -> Tally {
        Tally {
            tests: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            known_failures: AtomicU32::new(0),
            expected_failures: AtomicU32::new(0),
            skipped: AtomicU32::new(0),
        }
    }

    /// Counts one report line; returns the count of report lines so far, this one included.
    pub fn record(&self, kind: Kind) -> u32 {
        let tests = self.tests.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let counter = match kind {
            Kind::Pass => return tests,
            Kind::Fail | Kind::UnexpectedPass => &self.failures,
            Kind::KnownFail => &self.known_failures,
            Kind::ExpectedFail => &self.expected_failures,
            Kind::Skip => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tests
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            tests: self.tests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            known_failures: self.known_failures.load(Ordering::Relaxed),
            expected_failures: self.expected_failures.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// The exit code kvm-unit-tests' `report_summary` returns for `counts`.
pub fn exit_code_of(counts: &Counts) -> i32 {
    // Guest codes fit in 0..=127 (QEMU's status is 8 bits).
    counts.guest_code().code() as i32
}

/// The prefix chain, kept as text: each prefix followed by `": "`, as kvm-unit-tests does.
pub struct Prefixes {
    text: [u8; Prefixes::CAPACITY],
    length: usize,
}

impl Prefixes {
    /// The longest prefix chain, in bytes.
    pub const CAPACITY: usize = 256;

    /// No prefixes.
    pub const fn new() -> Prefixes {
        Prefixes {
            text: [0; Prefixes::CAPACITY],
            length: 0,
        }
    }

    /// Appends `prefix` (formatted) and the delimiter.
    ///
    /// # Panics
    /// If the prefix contains the delimiter or the chain would exceed [`Self::CAPACITY`], as
    /// kvm-unit-tests asserts.
    pub fn push(&mut self, prefix: fmt::Arguments<'_>) {
        let start = self.length;
        self.write_fmt(prefix)
            .expect("report prefix chain exceeds 256 bytes");
        assert!(
            !self.as_str()[start..].contains(PREFIX_DELIMITER),
            "report prefix {:?} contains the delimiter {PREFIX_DELIMITER:?}",
            &self.as_str()[start..]
        );
        self.write_str(PREFIX_DELIMITER)
            .expect("report prefix chain exceeds 256 bytes");
    }

    /// Removes the last prefix, if any.
    pub fn pop(&mut self) {
        let text = self.as_str();
        let without_last = text.strip_suffix(PREFIX_DELIMITER).unwrap_or(text);
        // By bytes: `str::rfind` with a `&str` pattern links core's two-way searcher, about
        // 3 KiB in every image.
        let delimiter = PREFIX_DELIMITER.as_bytes();
        self.length = without_last
            .as_bytes()
            .windows(delimiter.len())
            .rposition(|window| window == delimiter)
            .map_or(0, |index| index + delimiter.len());
    }

    /// The chain as printed before a message (`"msr: EFER: "`), or `""`.
    pub fn as_str(&self) -> &str {
        // Only `write_str` fills `text`, with whole `str`s, so it is always valid UTF-8.
        core::str::from_utf8(&self.text[..self.length]).unwrap_or("")
    }
}

impl Write for Prefixes {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.length + text.len();
        if end > Self::CAPACITY {
            return Err(fmt::Error);
        }
        self.text[self.length..end].copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes::new()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn kinds_follow_kvm_unit_tests() {
        assert_eq!(Kind::of(true, false, false), Kind::Pass);
        assert_eq!(Kind::of(false, false, false), Kind::Fail);
        assert_eq!(Kind::of(false, true, false), Kind::ExpectedFail);
        assert_eq!(Kind::of(true, true, false), Kind::UnexpectedPass);
        assert_eq!(Kind::of(false, false, true), Kind::KnownFail);
        assert_eq!(Kind::of(true, false, true), Kind::Pass);
        assert!(!Kind::UnexpectedPass.is_ok());
        assert!(Kind::KnownFail.is_ok());
        assert_eq!(Kind::UnexpectedPass.label().as_str(), "XPASS");
    }

    #[test]
    fn summary_line_and_exit_code() {
        let tally = Tally::new();
        assert_eq!(format!("{}", tally.counts()), "SUMMARY: 0 tests");
        assert_eq!(
            exit_code_of(&tally.counts()),
            exit_code::SKIP,
            "no tests at all counts as skipped"
        );
        tally.record(Kind::Pass);
        tally.record(Kind::Skip);
        assert_eq!(format!("{}", tally.counts()), "SUMMARY: 2 tests, 1 skipped");
        assert_eq!(exit_code_of(&tally.counts()), exit_code::PASS);
        tally.record(Kind::ExpectedFail);
        tally.record(Kind::KnownFail);
        assert_eq!(exit_code_of(&tally.counts()), exit_code::PASS);
        tally.record(Kind::Fail);
        tally.record(Kind::UnexpectedPass);
        assert_eq!(
            format!("{}", tally.counts()),
            "SUMMARY: 6 tests, 2 unexpected failures, 1 known failures, 1 expected failures, 1 skipped"
        );
        assert_eq!(exit_code_of(&tally.counts()), exit_code::FAIL);
    }

    #[test]
    fn all_skipped_exits_so_that_qemu_reports_77() {
        let tally = Tally::new();
        tally.record(Kind::Skip);
        assert_eq!((exit_code_of(&tally.counts()) << 1) | 1, 77);
    }

    #[test]
    fn prefixes_push_and_pop() {
        let mut prefixes = Prefixes::new();
        prefixes.push(format_args!("msr"));
        prefixes.push(format_args!("EFER {}", 1));
        assert_eq!(prefixes.as_str(), "msr: EFER 1: ");
        prefixes.pop();
        assert_eq!(prefixes.as_str(), "msr: ");
        prefixes.pop();
        assert_eq!(prefixes.as_str(), "");
        prefixes.pop();
        assert_eq!(prefixes.as_str(), "");
    }

    #[test]
    #[should_panic(expected = "contains the delimiter")]
    fn prefix_with_delimiter_is_refused() {
        Prefixes::new().push(format_args!("a: b"));
    }

    #[test]
    #[should_panic(expected = "exceeds 256 bytes")]
    fn overlong_prefix_chain_is_refused() {
        let mut prefixes = Prefixes::new();
        for _ in 0..100 {
            prefixes.push(format_args!("prefix"));
        }
    }
}
