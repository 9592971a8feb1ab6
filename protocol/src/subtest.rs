//! The subtest registry in a guest image: the link sections `#[vmunit::test]` writes, and the
//! `LINE:NAME` record the runner lists subtests from without booting the image.

use core::fmt;

/// The link section `#[vmunit::test]` puts each subtest's descriptor in (the guest runs them
/// from it).
pub const SUBTESTS_SECTION: &str = "vmunit_tests";
/// The link section `#[vmunit::test]` puts each subtest's [`SubtestRecord`] in, NUL-terminated.
pub const SUBTEST_NAMES_SECTION: &str = "vmunit_test_names";

/// One subtest's name record: `LINE:NAME`, the source line zero-padded to eight digits so that
/// sorting the records as text puts them in the order the subtests run (declared order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubtestRecord<'a> {
    /// The line of the `#[vmunit::test]` function.
    pub line: u32,
    /// The function's name.
    pub name: &'a str,
}

impl<'a> SubtestRecord<'a> {
    /// Parses one record (without its NUL); `None` when it is not `LINE:NAME`.
    pub fn parse(record: &'a str) -> Option<SubtestRecord<'a>> {
        let (line, name) = record.split_once(':')?;
        if line.is_empty() || !line.bytes().all(|byte| byte.is_ascii_digit()) || name.is_empty() {
            return None;
        }
        Some(SubtestRecord {
            line: line.parse().ok()?,
            name,
        })
    }
}

impl fmt::Display for SubtestRecord<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:08}:{}", self.line, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    #[test]
    fn records() {
        let record = SubtestRecord {
            line: 20,
            name: "heap",
        };
        assert_eq!(format!("{record}"), "00000020:heap");
        assert_eq!(SubtestRecord::parse("00000020:heap"), Some(record));
        assert_eq!(SubtestRecord::parse("heap"), None);
        assert_eq!(SubtestRecord::parse("x:heap"), None);
        assert_eq!(SubtestRecord::parse("1:"), None);
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(line in 0u32..100_000_000, name in "[a-z_][a-z0-9_]{0,30}") {
            let record = SubtestRecord { line, name: &name };
            let text = format!("{record}");
            prop_assert_eq!(SubtestRecord::parse(&text), Some(record));
        }

        #[test]
        fn text_order_is_line_order(first in 0u32..100_000_000, second in 0u32..100_000_000) {
            let a = format!("{}", SubtestRecord { line: first, name: "a" });
            let b = format!("{}", SubtestRecord { line: second, name: "a" });
            prop_assert_eq!(a.cmp(&b), first.cmp(&second));
        }
    }
}
