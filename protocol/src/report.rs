//! Report lines: `LABEL: text`, kvm-unit-tests' PASS/FAIL/SKIP/XFAIL/XPASS/KFAIL and INFO.

use core::fmt;

/// The separator kvm-unit-tests puts after each report prefix (`msr: EFER: ...`) and after
/// the label; a prefix may not contain it.
pub const PREFIX_DELIMITER: &str = ": ";

/// The leading word of a report line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// A check that held.
    Pass,
    /// A check that did not hold: an unexpected failure.
    Fail,
    /// A check that was not made, with the reason.
    Skip,
    /// A failure that was expected, and happened (`XFAIL`).
    ExpectedFail,
    /// A failure that was expected, but the check passed: unexpected (`XPASS`).
    UnexpectedPass,
    /// A known defect of the host that showed (`KFAIL`): not counted as unexpected.
    KnownFail,
    /// Information, not a check.
    Info,
}

impl Label {
    /// Every label, in the order the runner documents them.
    pub const ALL: [Label; 7] = [
        Label::Pass,
        Label::Fail,
        Label::Skip,
        Label::ExpectedFail,
        Label::UnexpectedPass,
        Label::KnownFail,
        Label::Info,
    ];

    /// The word as printed: `PASS`, `FAIL`, `SKIP`, `XFAIL`, `XPASS`, `KFAIL`, `INFO`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Label::Pass => "PASS",
            Label::Fail => "FAIL",
            Label::Skip => "SKIP",
            Label::ExpectedFail => "XFAIL",
            Label::UnexpectedPass => "XPASS",
            Label::KnownFail => "KFAIL",
            Label::Info => "INFO",
        }
    }

    /// The label printed as `word`, if any.
    pub fn from_word(word: &str) -> Option<Label> {
        Label::ALL.into_iter().find(|label| label.as_str() == word)
    }

    /// Whether the line is a check's result (every label but `INFO`).
    pub const fn is_check(self) -> bool {
        !matches!(self, Label::Info)
    }

    /// Whether the line is an unexpected failure (`FAIL` or `XPASS`), which fails the run.
    pub const fn is_unexpected_failure(self) -> bool {
        matches!(self, Label::Fail | Label::UnexpectedPass)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One report line: `LABEL: text`. The guest formats it with any `Display` text (its prefix
/// chain and message); [`ReportLine::parse`] gives it back with a `&str`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportLine<T> {
    /// The leading word.
    pub label: Label,
    /// What follows `LABEL: `: the prefixes and the message.
    pub text: T,
}

impl<'a> ReportLine<&'a str> {
    /// Parses `LABEL: text` (leading blanks and trailing blanks or `\r` ignored; the text is
    /// trimmed). `None` when the line starts with no label followed by a colon.
    pub fn parse(line: &'a str) -> Option<ReportLine<&'a str>> {
        let line = line.trim();
        let (word, text) = line.split_once(':')?;
        let label = Label::from_word(word)?;
        Some(ReportLine {
            label,
            text: text.trim(),
        })
    }
}

impl<T: fmt::Display> fmt::Display for ReportLine<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}{PREFIX_DELIMITER}{}", self.label, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::String;

    #[test]
    fn words_round_trip() {
        for label in Label::ALL {
            assert_eq!(Label::from_word(label.as_str()), Some(label));
        }
        assert_eq!(Label::from_word("pass"), None);
        assert!(Label::UnexpectedPass.is_unexpected_failure());
        assert!(!Label::KnownFail.is_unexpected_failure());
        assert!(!Label::Info.is_check());
    }

    #[test]
    fn parses_kvm_unit_tests_lines() {
        let line = ReportLine::parse("FAIL: apic: x2apic: ICR\r").unwrap();
        assert_eq!(line.label, Label::Fail);
        assert_eq!(line.text, "apic: x2apic: ICR");
        assert_eq!(ReportLine::parse("FAIL:").unwrap().text, "");
        assert_eq!(ReportLine::parse("FAILED: x"), None);
        assert_eq!(ReportLine::parse("note: PASS: x"), None);
    }

    /// Report texts as guests print them: no control characters, no leading or trailing
    /// blanks (the parser trims them).
    fn text() -> impl Strategy<Value = String> {
        "[^\\p{Cc}\\s]([^\\p{Cc}]{0,60}[^\\p{Cc}\\s])?|"
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(index in 0..Label::ALL.len(), text in text()) {
            let label = Label::ALL[index];
            let line = format!("{}", ReportLine { label, text: &text });
            let parsed = ReportLine::parse(&line).unwrap();
            prop_assert_eq!(parsed, ReportLine { label, text: text.as_str() });
        }

        #[test]
        fn parse_then_format_is_identity(line in "\\PC{0,80}") {
            if let Some(parsed) = ReportLine::parse(&line) {
                let formatted = format!("{parsed}");
                prop_assert_eq!(ReportLine::parse(&formatted), Some(parsed));
            }
        }
    }
}
