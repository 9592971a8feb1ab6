//! Benchmark measurements: the `BENCH: name=value unit` lines guests print (see the guest
//! runtime's `vmunit::benchmark`), parsed out of a run's serial output.
//!
//! A `BENCH` line is not a report line: it counts as neither PASS nor FAIL. The runner keeps
//! a run's measurements in the order printed and puts them in the JSON `end` event
//! (`"benches": [{"name", "value", "unit"}]`), in the JUnit testcase's `<properties>`
//! (`<property name="bench.<name>" value="<value> <unit>"/>`) and in `results.json`. A
//! malformed `BENCH` line is noted in the run's log (and with `-v` on the output), and
//! otherwise ignored.

use serde::{Deserialize, Serialize};

/// The label that starts a `BENCH` line.
pub const LABEL: &str = "BENCH:";
/// How many measurements one run keeps.
pub const MAX_BENCHES: usize = 10_000;
/// The prefix of a measurement's JUnit property name.
pub const PROPERTY_PREFIX: &str = "bench.";

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bench {
    /// What was measured (`cpuid`).
    pub name: String,
    /// The value: an integer when the line had no fraction, else a float.
    pub value: serde_json::Number,
    /// Its unit (`cycles`).
    pub unit: String,
}

impl Bench {
    /// The JUnit property name: `bench.<name>`.
    pub fn property_name(&self) -> String {
        format!("{PROPERTY_PREFIX}{}", self.name)
    }

    /// The value and unit as the line had them: `1234 cycles`.
    pub fn value_text(&self) -> String {
        format!("{} {}", self.value, self.unit)
    }
}

/// Whether `character` may appear in a benchmark name.
fn is_name_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '_' | '-' | '.' | '/' | ':' | '+')
}

/// The measurement of a serial line: `None` when it is no `BENCH` line, `Some(Err(why))`
/// when it is a malformed one.
pub fn parse_bench_line(line: &str) -> Option<Result<Bench, String>> {
    let rest = line.trim().strip_prefix(LABEL)?;
    Some(parse_measurement(rest.trim()))
}

fn parse_measurement(text: &str) -> Result<Bench, String> {
    let (name, tail) = text
        .split_once('=')
        .ok_or_else(|| "no `=` between name and value".to_owned())?;
    if name.is_empty() {
        return Err("empty name".to_owned());
    }
    if let Some(bad) = name.chars().find(|&character| !is_name_character(character)) {
        return Err(format!("name {name:?} has the character {bad:?}"));
    }
    let words: Vec<&str> = tail.split_whitespace().collect();
    let (value, unit) = match words.as_slice() {
        [value, unit] => (*value, *unit),
        [_] | [] => return Err("no unit after the value".to_owned()),
        _ => return Err(format!("more than a value and a unit after `=`: {tail:?}")),
    };
    if tail.starts_with(char::is_whitespace) {
        return Err("a blank between `=` and the value".to_owned());
    }
    if unit.chars().any(char::is_control) {
        return Err(format!("unit {unit:?} has a control character"));
    }
    Ok(Bench {
        name: name.to_owned(),
        value: parse_value(value)?,
        unit: unit.to_owned(),
    })
}

/// An unsigned decimal: digits, optionally `.` and more digits.
fn parse_value(text: &str) -> Result<serde_json::Number, String> {
    let malformed = || format!("value {text:?} is not an unsigned decimal number");
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|fraction| !digits(fraction)) {
        return Err(malformed());
    }
    if fraction.is_none()
        && let Ok(integer) = whole.parse::<u64>()
    {
        return Ok(integer.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .ok_or_else(malformed)
}

/// Collects a run's measurements from its serial lines, with the malformed lines' notes.
#[derive(Clone, Debug, Default)]
pub struct BenchCollector {
    /// The measurements, in the order printed (at most [`MAX_BENCHES`]).
    pub benches: Vec<Bench>,
    /// One note per malformed `BENCH` line (at most [`MAX_BENCHES`]).
    pub malformed: Vec<String>,
}

impl BenchCollector {
    /// Looks at one serial line; returns the note when it is a malformed `BENCH` line.
    pub fn observe(&mut self, line: &str) -> Option<String> {
        match parse_bench_line(line)? {
            Ok(bench) => {
                if self.benches.len() < MAX_BENCHES {
                    self.benches.push(bench);
                }
                None
            }
            Err(reason) => {
                let note = format!("malformed BENCH line ({reason}): {}", line.trim());
                if self.malformed.len() < MAX_BENCHES {
                    self.malformed.push(note.clone());
                }
                Some(note)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Bench {
        parse_bench_line(line).unwrap().unwrap()
    }

    fn error(line: &str) -> String {
        parse_bench_line(line).unwrap().unwrap_err()
    }

    #[test]
    fn measurements() {
        let bench = parsed("BENCH: cpuid=1234 cycles");
        assert_eq!(bench.name, "cpuid");
        assert_eq!(bench.value.as_u64(), Some(1234));
        assert_eq!(bench.unit, "cycles");
        assert_eq!(bench.property_name(), "bench.cpuid");
        assert_eq!(bench.value_text(), "1234 cycles");
        let bench = parsed("  BENCH:ipi/halt-2:x.y+z=12.50 ns/op\r\n");
        assert_eq!(bench.name, "ipi/halt-2:x.y+z");
        assert_eq!(bench.value.as_f64(), Some(12.5));
        assert_eq!(bench.unit, "ns/op");
        assert_eq!(bench.value_text(), "12.5 ns/op");
        // Beyond u64, the value is a float.
        let bench = parsed("BENCH: big=18446744073709551616 cycles");
        assert_eq!(bench.value.as_f64(), Some(18446744073709551616.0));
        assert_eq!(
            parsed("BENCH: max=18446744073709551615 x").value.as_u64(),
            Some(u64::MAX)
        );
    }

    #[test]
    fn other_lines_are_not_bench_lines() {
        for line in [
            "PASS: cpuid",
            "INFO: BENCH: x=1 y",
            "BENCHMARK: x=1 y",
            "",
            "bench: x=1 y",
        ] {
            assert!(parse_bench_line(line).is_none(), "{line}");
        }
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(error("BENCH:"), "no `=` between name and value");
        assert_eq!(error("BENCH: cpuid 1234 cycles"), "no `=` between name and value");
        assert_eq!(error("BENCH: =1 cycles"), "empty name");
        assert_eq!(
            error("BENCH: cp uid=1 cycles"),
            "name \"cp uid\" has the character ' '"
        );
        assert_eq!(error("BENCH: cpuid=1234"), "no unit after the value");
        assert_eq!(error("BENCH: cpuid="), "no unit after the value");
        assert!(error("BENCH: cpuid=1 2 cycles").starts_with("more than a value and a unit"));
        assert_eq!(
            error("BENCH: cpuid= 1 cycles"),
            "a blank between `=` and the value"
        );
        for value in ["-1", "1e3", "1.", ".5", "0x10", "NaN", "inf", "1,5", "½"] {
            let message = error(&format!("BENCH: x={value} cycles"));
            assert!(message.contains("not an unsigned decimal"), "{value}: {message}");
        }
        assert_eq!(
            error("BENCH: x=1 cy\u{7}cles"),
            "unit \"cy\\u{7}cles\" has a control character"
        );
        // A name with a second `=` has `=` in its value part.
        assert!(error("BENCH: a=b=1 c").contains("not an unsigned decimal"));
        // A float too large for f64 is malformed, not infinite.
        let huge = format!("BENCH: x={}.0 cycles", "9".repeat(400));
        assert!(error(&huge).contains("not an unsigned decimal"));
    }

    #[test]
    fn collector_keeps_measurements_and_notes() {
        let mut collector = BenchCollector::default();
        assert_eq!(collector.observe("PASS: a"), None);
        assert_eq!(collector.observe("BENCH: a=1 cycles"), None);
        assert_eq!(
            collector.observe("BENCH: b=x cycles").as_deref(),
            Some("malformed BENCH line (value \"x\" is not an unsigned decimal number): BENCH: b=x cycles")
        );
        assert_eq!(collector.observe("BENCH: a=2 cycles"), None);
        let values: Vec<_> = collector
            .benches
            .iter()
            .map(|bench| bench.value.as_u64())
            .collect();
        assert_eq!(values, [Some(1), Some(2)]);
        assert_eq!(collector.malformed.len(), 1);
        for _ in 0..MAX_BENCHES + 5 {
            collector.observe("BENCH: c=3 cycles");
            collector.observe("BENCH: c");
        }
        assert_eq!(collector.benches.len(), MAX_BENCHES);
        assert_eq!(collector.malformed.len(), MAX_BENCHES);
    }

    #[test]
    fn json_form() {
        let bench = parsed("BENCH: cpuid=1234 cycles");
        assert_eq!(
            serde_json::to_string(&bench).unwrap(),
            r#"{"name":"cpuid","value":1234,"unit":"cycles"}"#
        );
        let back: Bench = serde_json::from_str(r#"{"name":"x","value":2.5,"unit":"ns"}"#).unwrap();
        assert_eq!(back, parsed("BENCH: x=2.5 ns"));
    }
}
