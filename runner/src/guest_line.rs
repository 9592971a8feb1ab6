//! The guest's serial lines, parsed once per line into a [`SerialLine`]: the protocol's
//! grammar (`vmunit-protocol`: report labels, SUMMARY, EXIT, ABORT, BENCH) and what the runner
//! also looks for in free text (abort messages, crash addresses). The transcript, the report
//! lines, the BENCH collector and the crash symboliser all consume the parsed value.

pub use vmunit_protocol::{BenchLine, GuestLine, Label};

/// One guest report line, owned: its label and the text after it.
pub type ReportLine = vmunit_protocol::ReportLine<String>;

/// One serial line, parsed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SerialLine<'a> {
    /// The line without leading blanks and line ending.
    pub text: &'a str,
    /// What it is, by the protocol's grammar.
    pub kind: GuestLine<'a>,
    /// It says the guest aborted: an `ABORT:` line, or an unhandled exception or a panic
    /// message in free text.
    pub aborted: bool,
    /// The crash address it reports (`at ip 0x...`, `ELR 0x...`), if any.
    pub crash_address: Option<u64>,
}

impl SerialLine<'_> {
    /// The report line it is, owned, if it is one that checks something (`INFO:` is not).
    pub fn report(&self) -> Option<ReportLine> {
        match self.kind {
            GuestLine::Report(line) if line.label.is_check() => Some(ReportLine {
                label: line.label,
                text: line.text.to_owned(),
            }),
            _ => None,
        }
    }

    /// The text of a `SUMMARY:` line as printed, whether its counts parse or not.
    pub fn summary_text(&self) -> Option<&str> {
        match self.kind {
            GuestLine::Summary(_) | GuestLine::MalformedSummary(_) => self
                .text
                .get(vmunit_protocol::Summary::LABEL.len()..)
                .map(str::trim),
            _ => None,
        }
    }
}

/// Free-text markers of a guest that died: an unhandled exception or a panic.
const ABORT_MARKERS: [&str; 2] = ["Unhandled exception", "panicked at"];

/// Parses one serial line (without its newline).
pub fn parse(line: &str) -> SerialLine<'_> {
    let text = line.trim_start().trim_end_matches(['\r', '\n']);
    let kind = GuestLine::parse(line);
    SerialLine {
        text,
        kind,
        aborted: matches!(kind, GuestLine::Abort(_))
            || ABORT_MARKERS.iter().any(|marker| text.contains(marker)),
        crash_address: crash_address(text),
    }
}

/// The markers after which a crash address follows, lower case: x86's `at ip 0x...` and the
/// aarch64 exception link register in any of the forms `ELR 0x...`, `ELR=0x...`, `ELR: 0x...`,
/// `ELR_EL1=0x...`.
const CRASH_ADDRESS_MARKERS: [&str; 3] = ["at ip", "elr_el1", "elr"];

/// The crash address in a guest line, if it reports one.
fn crash_address(line: &str) -> Option<u64> {
    let lower = line.to_ascii_lowercase();
    CRASH_ADDRESS_MARKERS.iter().find_map(|marker| {
        let mut search = 0;
        while let Some(found) = lower[search..].find(marker) {
            let start = search + found;
            search = start + marker.len();
            // A whole word: `elr` must not be the end of another word.
            if start > 0 && lower.as_bytes()[start - 1].is_ascii_alphanumeric() {
                continue;
            }
            let rest = lower[search..].trim_start_matches([' ', ':', '=', '\t']);
            if let Some(hex) = rest.strip_prefix("0x") {
                let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                if let Ok(address) = u64::from_str_radix(&digits, 16) {
                    return Some(address);
                }
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        let report = |line: &str| parse(line).report();
        assert_eq!(
            report("PASS: msr: EFER"),
            Some(ReportLine {
                label: Label::Pass,
                text: "msr: EFER".into()
            })
        );
        assert_eq!(
            report("  XFAIL: a").map(|line| line.label),
            Some(Label::ExpectedFail)
        );
        assert_eq!(report("KFAIL: b").map(|line| line.label), Some(Label::KnownFail));
        assert_eq!(report("INFO: b"), None);
        assert_eq!(report("PASS selftest (3 tests)"), None);
        assert_eq!(report("SUMMARY: 3 tests"), None);
        assert_eq!(report("PASSED: x"), None);
    }

    #[test]
    fn summaries_and_aborts() {
        assert_eq!(
            parse("SUMMARY: 3 tests, 1 skipped\r").summary_text(),
            Some("3 tests, 1 skipped")
        );
        assert_eq!(parse("  SUMMARY: lots").summary_text(), Some("lots"));
        assert_eq!(parse("PASS: x").summary_text(), None);
        assert!(parse("ABORT: boot").aborted);
        assert!(parse("guest panicked at src/main.rs:3").aborted);
        assert!(!parse("FAIL: x").aborted);
    }

    #[test]
    fn addresses_in_crash_lines() {
        assert_eq!(
            crash_address("Unhandled exception 6 #UD at ip 0x000000000010025c"),
            Some(0x10_025c)
        );
        assert_eq!(
            crash_address("ABORT: unhandled exception #UD at ip 0x10025c"),
            Some(0x10_025c)
        );
        assert_eq!(
            crash_address("Unhandled exception: ESR 0x2000000 ELR 0x40080abc"),
            Some(0x4008_0abc)
        );
        assert_eq!(crash_address("elr=0x40001000 far=0x0"), Some(0x4000_1000));
        assert_eq!(crash_address("ELR_EL1: 0x40001234"), Some(0x4000_1234));
        assert_eq!(crash_address("PASS: nothing at ip here"), None);
        assert_eq!(crash_address("the shelr 0x10 is not a marker"), None);
        assert_eq!(crash_address("ELR 0xzz"), None);
    }
}
