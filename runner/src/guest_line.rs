//! The guest's serial lines, parsed: report lines (`PASS:`, `FAIL:`, ...) and the lines that
//! carry a status.

/// The label of a guest report line (`PASS:`, `FAIL:`, ...); serialized as the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LineKind {
    /// `PASS:`.
    #[serde(rename = "PASS")]
    Pass,
    /// `FAIL:`: an unexpected failure.
    #[serde(rename = "FAIL")]
    Fail,
    /// `SKIP:`.
    #[serde(rename = "SKIP")]
    Skip,
    /// `XFAIL:`: an expected failure.
    #[serde(rename = "XFAIL")]
    ExpectedFail,
    /// `XPASS:`: an unexpected pass (counted as a failure).
    #[serde(rename = "XPASS")]
    UnexpectedPass,
    /// `KFAIL:`: a known failure, not counted as unexpected.
    #[serde(rename = "KFAIL")]
    KnownFail,
}

impl LineKind {
    const ALL: [LineKind; 6] = [
        LineKind::Pass,
        LineKind::Fail,
        LineKind::Skip,
        LineKind::ExpectedFail,
        LineKind::UnexpectedPass,
        LineKind::KnownFail,
    ];

    /// The label as the guest prints it.
    pub fn label(self) -> &'static str {
        match self {
            LineKind::Pass => "PASS",
            LineKind::Fail => "FAIL",
            LineKind::Skip => "SKIP",
            LineKind::ExpectedFail => "XFAIL",
            LineKind::UnexpectedPass => "XPASS",
            LineKind::KnownFail => "KFAIL",
        }
    }
}

/// One guest report line: its label and the text after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportLine {
    /// The label.
    pub kind: LineKind,
    /// The text after `LABEL:`.
    pub text: String,
}

/// The report line in a serial line, if it is one.
pub fn parse_report_line(line: &str) -> Option<ReportLine> {
    let line = line.trim();
    LineKind::ALL.into_iter().find_map(|kind| {
        let text = line.strip_prefix(kind.label())?.strip_prefix(':')?;
        Some(ReportLine {
            kind,
            text: text.trim().to_owned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        assert_eq!(
            parse_report_line("PASS: msr: EFER"),
            Some(ReportLine {
                kind: LineKind::Pass,
                text: "msr: EFER".into()
            })
        );
        assert_eq!(
            parse_report_line("  XFAIL: a").map(|line| line.kind),
            Some(LineKind::ExpectedFail)
        );
        assert_eq!(
            parse_report_line("KFAIL: b").map(|line| line.kind),
            Some(LineKind::KnownFail)
        );
        assert_eq!(parse_report_line("PASS selftest (3 tests)"), None);
        assert_eq!(parse_report_line("SUMMARY: 3 tests"), None);
        assert_eq!(parse_report_line("PASSED: x"), None);
    }
}
