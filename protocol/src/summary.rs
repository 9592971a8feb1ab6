//! The closing `SUMMARY:` line: how many checks ran and how they ended, and the guest code
//! they make.

use core::fmt;

use crate::exit::GuestCode;

/// The counts of a `SUMMARY: N tests[, M unexpected failures][, K known failures][, X
/// expected failures][, S skipped]` line, as kvm-unit-tests' `report_summary` prints it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Report lines, skips included (INFO excluded).
    pub tests: u32,
    /// Unexpected failures (FAIL and XPASS).
    pub failures: u32,
    /// KFAIL lines.
    pub known_failures: u32,
    /// XFAIL lines.
    pub expected_failures: u32,
    /// SKIP lines.
    pub skipped: u32,
}

/// The optional parts after `N tests`, in print order: their words and fields.
const PARTS: [&str; 4] = [
    "unexpected failures",
    "known failures",
    "expected failures",
    "skipped",
];

impl Summary {
    /// The label that starts the line.
    pub const LABEL: &'static str = "SUMMARY:";

    /// The code kvm-unit-tests' `report_summary` returns for these counts: all skipped (no
    /// tests at all counts as skipped), else failures, else pass.
    pub fn guest_code(&self) -> GuestCode {
        if self.tests == self.skipped {
            GuestCode::AllSkipped
        } else if self.failures > 0 {
            GuestCode::Failures
        } else {
            GuestCode::Pass
        }
    }

    /// Parses a whole `SUMMARY:` line.
    pub fn parse(line: &str) -> Option<Summary> {
        Summary::parse_after_label(line.trim().strip_prefix(Summary::LABEL)?)
    }

    /// Parses what follows `SUMMARY:`. Each part is `<count> <words>`; a singular word
    /// (`1 unexpected failure`) is accepted too, and unknown parts are an error.
    pub fn parse_after_label(text: &str) -> Option<Summary> {
        let mut parts = text.trim().split(',').map(str::trim);
        let tests = count_of(parts.next()?, "tests")?;
        let mut summary = Summary {
            tests,
            ..Summary::default()
        };
        for part in parts {
            let (count, words) = part.split_once(' ')?;
            let count: u32 = count.parse().ok()?;
            let words = words.trim();
            let index = PARTS
                .iter()
                .position(|plural| words == *plural || plural.strip_suffix('s') == Some(words))?;
            *summary.field(index) = count;
        }
        Some(summary)
    }

    fn field(&mut self, index: usize) -> &mut u32 {
        match index {
            0 => &mut self.failures,
            1 => &mut self.known_failures,
            2 => &mut self.expected_failures,
            _ => &mut self.skipped,
        }
    }

    fn fields(&self) -> [u32; 4] {
        [
            self.failures,
            self.known_failures,
            self.expected_failures,
            self.skipped,
        ]
    }
}

/// `<count> <word>` (or the singular of `word`).
fn count_of(part: &str, word: &str) -> Option<u32> {
    let (count, rest) = part.split_once(' ')?;
    let rest = rest.trim();
    (rest == word || word.strip_suffix('s') == Some(rest))
        .then(|| count.parse().ok())
        .flatten()
}

impl fmt::Display for Summary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {} tests", Summary::LABEL, self.tests)?;
        for (count, words) in self.fields().into_iter().zip(PARTS) {
            if count > 0 {
                write!(formatter, ", {count} {words}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    #[test]
    fn prints_as_kvm_unit_tests() {
        assert_eq!(format!("{}", Summary::default()), "SUMMARY: 0 tests");
        let summary = Summary {
            tests: 6,
            failures: 2,
            known_failures: 1,
            expected_failures: 1,
            skipped: 1,
        };
        assert_eq!(
            format!("{summary}"),
            "SUMMARY: 6 tests, 2 unexpected failures, 1 known failures, 1 expected failures, 1 skipped"
        );
    }

    #[test]
    fn parses_singulars_and_refuses_junk() {
        let summary = Summary::parse("SUMMARY: 3 tests, 1 unexpected failure\r").unwrap();
        assert_eq!(summary.failures, 1);
        assert_eq!(Summary::parse("SUMMARY: 1 test").unwrap().tests, 1);
        assert_eq!(Summary::parse("SUMMARY: 3 tests, 1 surprises"), None);
        assert_eq!(Summary::parse("SUMMARY: many tests"), None);
        assert_eq!(Summary::parse("SUMMARY:"), None);
    }

    #[test]
    fn guest_codes() {
        assert_eq!(Summary::default().guest_code(), GuestCode::AllSkipped);
        let passed = Summary {
            tests: 2,
            skipped: 1,
            known_failures: 1,
            ..Summary::default()
        };
        assert_eq!(passed.guest_code(), GuestCode::Pass);
        let failed = Summary {
            failures: 1,
            ..passed
        };
        assert_eq!(failed.guest_code(), GuestCode::Failures);
        assert_eq!(failed.guest_code().status(), 3);
        let skipped = Summary {
            tests: 2,
            skipped: 2,
            ..Summary::default()
        };
        assert_eq!(skipped.guest_code().status(), 77);
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(
            tests: u32, failures: u32, known_failures: u32, expected_failures: u32, skipped: u32,
        ) {
            let summary = Summary { tests, failures, known_failures, expected_failures, skipped };
            prop_assert_eq!(Summary::parse(&format!("{summary}")), Some(summary));
        }

        #[test]
        fn parse_then_format_is_identity(line in "SUMMARY: [0-9 a-z,]{0,40}") {
            if let Some(summary) = Summary::parse(&line) {
                prop_assert_eq!(Summary::parse(&format!("{summary}")), Some(summary));
            }
        }
    }
}
