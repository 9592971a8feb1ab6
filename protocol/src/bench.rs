//! `BENCH: name=value unit` lines: a guest's measurements, which count as no check.
//!
//! - `BENCH:` starts the line (leading blanks allowed), then one space.
//! - `name` is one or more of `A-Z a-z 0-9 _ - . / : +`.
//! - `value` is an unsigned decimal number: digits, optionally `.` and more digits.
//! - `unit` is one word: one or more characters other than blanks and control characters
//!   (`cycles`, `ns`, `iterations/s`).
//!
//! [`Measurement`] formats a line from any name and unit, making them valid (another
//! character of the name becomes `_`, an empty name `unnamed`, an empty unit `count`).

use core::fmt::{self, Write};

/// The name a measurement gets when the one given has no characters.
pub const UNNAMED: &str = "unnamed";
/// The unit a measurement gets when the one given has no characters.
pub const DEFAULT_UNIT: &str = "count";

/// Whether `character` may appear in a benchmark name.
pub fn is_name_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '.' | '/' | ':' | '+')
}

/// Whether `character` may appear in a unit.
pub fn is_unit_character(character: char) -> bool {
    !character.is_whitespace() && !character.is_control()
}

/// A well-formed `BENCH:` line's parts, as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchLine<T> {
    /// What was measured (`cpuid`).
    pub name: T,
    /// The value: digits, optionally `.` and more digits.
    pub value: T,
    /// Its unit (`cycles`).
    pub unit: T,
}

/// Why a `BENCH:` line breaks the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchError {
    /// No `=` between the name and the value.
    NoEquals,
    /// Nothing before `=`.
    EmptyName,
    /// The name has a character outside `A-Z a-z 0-9 _ - . / : +`.
    NameCharacter(char),
    /// A blank between `=` and the value.
    BlankBeforeValue,
    /// The value is not an unsigned decimal number.
    Value,
    /// No unit after the value.
    NoUnit,
    /// More than a value and a unit after `=`.
    TrailingWords,
    /// The unit has a control character.
    UnitCharacter(char),
}

impl fmt::Display for BenchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::NoEquals => formatter.write_str("no `=` between name and value"),
            BenchError::EmptyName => formatter.write_str("empty name"),
            BenchError::NameCharacter(character) => {
                write!(formatter, "the name has the character {character:?}")
            }
            BenchError::BlankBeforeValue => formatter.write_str("a blank between `=` and the value"),
            BenchError::Value => formatter.write_str("the value is not an unsigned decimal number"),
            BenchError::NoUnit => formatter.write_str("no unit after the value"),
            BenchError::TrailingWords => formatter.write_str("more than a value and a unit after `=`"),
            BenchError::UnitCharacter(character) => {
                write!(formatter, "the unit has the character {character:?}")
            }
        }
    }
}

impl<T> BenchLine<T> {
    /// The label that starts the line.
    pub const LABEL: &'static str = "BENCH:";
}

impl<'a> BenchLine<&'a str> {
    /// Parses a whole line; `None` when it is no `BENCH:` line at all.
    pub fn parse(line: &'a str) -> Option<Result<BenchLine<&'a str>, BenchError>> {
        let rest = line.trim().strip_prefix(BenchLine::<&str>::LABEL)?;
        Some(BenchLine::parse_after_label(rest))
    }

    /// Parses what follows `BENCH:`.
    pub fn parse_after_label(text: &'a str) -> Result<BenchLine<&'a str>, BenchError> {
        let text = text.trim();
        let (name, tail) = text.split_once('=').ok_or(BenchError::NoEquals)?;
        if name.is_empty() {
            return Err(BenchError::EmptyName);
        }
        if let Some(bad) = name.chars().find(|&character| !is_name_character(character)) {
            return Err(BenchError::NameCharacter(bad));
        }
        if tail.starts_with(char::is_whitespace) {
            return Err(BenchError::BlankBeforeValue);
        }
        let mut words = tail.split_whitespace();
        let value = words.next().ok_or(BenchError::NoUnit)?;
        let unit = words.next().ok_or(BenchError::NoUnit)?;
        if words.next().is_some() {
            return Err(BenchError::TrailingWords);
        }
        let (whole, fraction) = match value.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (value, None),
        };
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|fraction| !digits(fraction)) {
            return Err(BenchError::Value);
        }
        if let Some(bad) = unit.chars().find(|&character| !is_unit_character(character)) {
            return Err(BenchError::UnitCharacter(bad));
        }
        Ok(BenchLine { name, value, unit })
    }
}

impl<T: fmt::Display> fmt::Display for BenchLine<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {}={} {}",
            BenchLine::<T>::LABEL,
            self.name,
            self.value,
            self.unit
        )
    }
}

/// One measurement to print; its `Display` is the `BENCH:` line, with the name and unit made
/// valid as the module documentation says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement<'a> {
    /// What was measured (`cpuid`, `ipi`).
    pub name: &'a str,
    /// The value.
    pub value: u64,
    /// Its unit (`cycles`).
    pub unit: &'a str,
}

/// Writes `text` with each character that `valid` refuses replaced by `_`, or `empty` when
/// `text` has no characters.
fn write_sanitised(
    formatter: &mut fmt::Formatter<'_>,
    text: &str,
    empty: &str,
    valid: fn(char) -> bool,
) -> fmt::Result {
    if text.is_empty() {
        return formatter.write_str(empty);
    }
    for character in text.chars() {
        formatter.write_char(if valid(character) { character } else { '_' })?;
    }
    Ok(())
}

impl fmt::Display for Measurement<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(BenchLine::<&str>::LABEL)?;
        formatter.write_char(' ')?;
        write_sanitised(formatter, self.name, UNNAMED, is_name_character)?;
        write!(formatter, "={} ", self.value)?;
        write_sanitised(formatter, self.unit, DEFAULT_UNIT, is_unit_character)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::{String, ToString};

    #[test]
    fn formats_and_sanitises() {
        let line = |name, value, unit| format!("{}", Measurement { name, value, unit });
        assert_eq!(line("cpuid", 1234, "cycles"), "BENCH: cpuid=1234 cycles");
        assert_eq!(line("a b=c", 0, ""), "BENCH: a_b_c=0 count");
        assert_eq!(line("", 1, "x y"), "BENCH: unnamed=1 x_y");
    }

    #[test]
    fn refuses_malformed_lines() {
        let error = |line| BenchLine::parse(line).unwrap().unwrap_err();
        assert_eq!(error("BENCH: cpuid"), BenchError::NoEquals);
        assert_eq!(error("BENCH: =1 ns"), BenchError::EmptyName);
        assert_eq!(error("BENCH: a b=1 ns"), BenchError::NameCharacter(' '));
        assert_eq!(error("BENCH: a= 1 ns"), BenchError::BlankBeforeValue);
        assert_eq!(error("BENCH: a=-1 ns"), BenchError::Value);
        assert_eq!(error("BENCH: a=1. ns"), BenchError::Value);
        assert_eq!(error("BENCH: a=1"), BenchError::NoUnit);
        assert_eq!(error("BENCH: a=1 ns extra"), BenchError::TrailingWords);
        assert_eq!(error("BENCH: a=1 n\u{7f}s"), BenchError::UnitCharacter('\u{7f}'));
        assert_eq!(BenchLine::parse("PASS: BENCH: a=1 ns"), None);
        assert_eq!(
            BenchLine::parse("  BENCH: ipi/halt=1.5 us\r"),
            Some(Ok(BenchLine {
                name: "ipi/halt",
                value: "1.5",
                unit: "us"
            }))
        );
    }

    proptest! {
        #[test]
        fn every_measurement_parses_back(name in "\\PC{0,20}", value: u64, unit in "\\PC{0,12}") {
            let line = format!("{}", Measurement { name: &name, value, unit: &unit });
            let parsed = BenchLine::parse(&line).unwrap().unwrap();
            let value_text = value.to_string();
            prop_assert_eq!(parsed.value, value_text.as_str());
            let expected: String = if name.is_empty() {
                UNNAMED.into()
            } else {
                name.chars().map(|character| if is_name_character(character) { character } else { '_' }).collect()
            };
            prop_assert_eq!(parsed.name, expected.as_str());
            prop_assert_eq!(format!("{parsed}"), line);
        }

        #[test]
        fn parse_then_format_is_identity(line in "BENCH: [a-z0-9=. _/]{0,30}") {
            if let Some(Ok(parsed)) = BenchLine::parse(&line) {
                let formatted = format!("{parsed}");
                prop_assert_eq!(BenchLine::parse(&formatted), Some(Ok(parsed)));
            }
        }
    }
}
