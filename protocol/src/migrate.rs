//! The guest's migration requests: `MIGRATE: NOW` and the others, the lines a guest prints to
//! ask the runner to live-migrate it (kvm-unit-tests' "Now migrate the VM, then press a key to
//! continue", lib/migrate.c). After a request that waits (`NOW`, `END`) the guest reads one byte
//! from its serial input: the runner sends it once the migration completed.

use core::fmt;

/// The guest environment variable (`KEY=VALUE` in the environment file the runner hands the
/// guest) of the runner's `--migrate`: `VMUNIT_MIGRATE_AFTER_REPORT=N` asks the guest's runtime
/// to request one migration (`MIGRATE: NOW`) right after its Nth report line.
pub const MIGRATE_AFTER_REPORT_KEY: &str = "VMUNIT_MIGRATE_AFTER_REPORT";

/// A migration request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateLine {
    /// `MIGRATE: NOW`: migrate the VM, then send a byte; the guest waits for it.
    Now,
    /// `MIGRATE: SKIP`: the guest will not ask for the migration it was run for (kvm-unit-tests'
    /// `migrate_skip`); the run needs none.
    Skip,
    /// `MIGRATE: BEGIN`: migrate the VM again and again, while it runs, until `END`.
    Begin,
    /// `MIGRATE: END`: finish the continuous migration (at least one completed since `BEGIN`),
    /// then send a byte; the guest waits for it.
    End,
}

impl MigrateLine {
    /// The label that starts the line.
    pub const LABEL: &'static str = "MIGRATE:";

    /// Every request, for tests and documentation.
    pub const ALL: [MigrateLine; 4] = [
        MigrateLine::Now,
        MigrateLine::Skip,
        MigrateLine::Begin,
        MigrateLine::End,
    ];

    /// The word after the label.
    pub const fn word(self) -> &'static str {
        match self {
            MigrateLine::Now => "NOW",
            MigrateLine::Skip => "SKIP",
            MigrateLine::Begin => "BEGIN",
            MigrateLine::End => "END",
        }
    }

    /// Whether the guest waits for a byte on its serial input after printing the line.
    pub const fn waits(self) -> bool {
        matches!(self, MigrateLine::Now | MigrateLine::End)
    }

    /// Parses what follows the label: one of the words, alone.
    pub fn parse_after_label(text: &str) -> Option<MigrateLine> {
        let word = text.trim();
        MigrateLine::ALL
            .into_iter()
            .find(|request| request.word() == word)
    }

    /// Parses a whole line.
    pub fn parse(line: &str) -> Option<MigrateLine> {
        MigrateLine::parse_after_label(line.trim().strip_prefix(MigrateLine::LABEL)?)
    }
}

impl fmt::Display for MigrateLine {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", MigrateLine::LABEL, self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    #[test]
    fn each_request_round_trips() {
        for request in MigrateLine::ALL {
            let line = format!("{request}");
            assert_eq!(MigrateLine::parse(&line), Some(request), "{line}");
            assert_eq!(MigrateLine::parse(&format!("  {line}\r")), Some(request));
        }
        assert_eq!(format!("{}", MigrateLine::Now), "MIGRATE: NOW");
        assert!(MigrateLine::Now.waits() && MigrateLine::End.waits());
        assert!(!MigrateLine::Begin.waits() && !MigrateLine::Skip.waits());
    }

    #[test]
    fn other_words_are_not_requests() {
        assert_eq!(MigrateLine::parse("MIGRATE: now"), None);
        assert_eq!(MigrateLine::parse("MIGRATE: NOW please"), None);
        assert_eq!(MigrateLine::parse("MIGRATE:"), None);
        assert_eq!(MigrateLine::parse("Now migrate the VM"), None);
    }

    proptest! {
        #[test]
        fn only_the_four_words_parse(word in "[A-Z ]{0,8}") {
            let parsed = MigrateLine::parse_after_label(&word);
            prop_assert_eq!(parsed.is_some(), ["NOW", "SKIP", "BEGIN", "END"].contains(&word.trim()));
            if let Some(request) = parsed {
                prop_assert_eq!(MigrateLine::parse(&format!("{request}")), Some(request));
            }
        }
    }
}
