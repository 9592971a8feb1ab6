//! Benchmark measurements: the `BENCH: name=value unit` lines guests print (see the guest
//! runtime's `vmunit::benchmark`), parsed out of a run's serial output.
//!
//! A `BENCH` line is not a report line: it counts as neither PASS nor FAIL. The runner keeps
//! a run's measurements in the order printed and puts them in the JSON `end` event
//! (`"benches": [{"name", "value", "unit"}]`), in the JUnit suite's `<properties>`
//! (`<property name="bench.<run>.<name>" value="<value> <unit>"/>`) and in `results.json`. A
//! malformed `BENCH` line is noted in the run's log (and with `-v` on the output), and
//! otherwise ignored.

use serde::{Deserialize, Serialize};

use crate::guest_line::{self, BenchLine, GuestLine, SerialLine};

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
    /// The JUnit property name of the measurement in run `run`: `bench.<run>.<name>`.
    pub fn property_name(&self, run: &str) -> String {
        format!("{PROPERTY_PREFIX}{run}.{}", self.name)
    }

    /// The value and unit as the line had them: `1234 cycles`.
    pub fn value_text(&self) -> String {
        format!("{} {}", self.value, self.unit)
    }
}

/// The measurement of a serial line: `None` when it is no `BENCH` line, `Some(Err(why))`
/// when it is a malformed one. The grammar is the protocol's; see [`guest_line::parse`].
pub fn parse_bench_line(line: &str) -> Option<Result<Bench, String>> {
    match guest_line::parse(line).kind {
        GuestLine::Bench(bench) => Some(measurement(bench)),
        GuestLine::MalformedBench(error) => Some(Err(error.to_string())),
        _ => None,
    }
}

/// A well-formed `BENCH` line as a measurement; its value must fit a JSON number.
pub fn measurement(line: BenchLine<&str>) -> Result<Bench, String> {
    let value = if let Ok(integer) = line.value.parse::<u64>() {
        integer.into()
    } else {
        line.value
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .ok_or_else(|| format!("value {:?} is not an unsigned decimal number", line.value))?
    };
    Ok(Bench {
        name: line.name.to_owned(),
        value,
        unit: line.unit.to_owned(),
    })
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
    pub fn observe(&mut self, line: &SerialLine<'_>) -> Option<String> {
        let measured = match line.kind {
            GuestLine::Bench(bench) => measurement(bench),
            GuestLine::MalformedBench(error) => Err(error.to_string()),
            _ => return None,
        };
        match measured {
            Ok(bench) => {
                if self.benches.len() < MAX_BENCHES {
                    self.benches.push(bench);
                }
                None
            }
            Err(reason) => {
                let note = format!("malformed BENCH line ({reason}): {}", line.text.trim_end());
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
        assert_eq!(bench.property_name("vmexit"), "bench.vmexit.cpuid");
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
        // The grammar and its messages are the protocol's (its own tests cover each rule).
        assert_eq!(error("BENCH: cpuid=1234"), "no unit after the value");
        assert_eq!(error("BENCH: cp uid=1 cycles"), "the name has the character ' '");
        assert_eq!(
            error("BENCH: x=-1 cycles"),
            "the value is not an unsigned decimal number"
        );
        // A float too large for f64 is malformed, not infinite.
        let huge = format!("BENCH: x={}.0 cycles", "9".repeat(400));
        assert!(error(&huge).contains("not an unsigned decimal"));
    }

    #[test]
    fn collector_keeps_measurements_and_notes() {
        let mut collector = BenchCollector::default();
        assert_eq!(collector.observe(&guest_line::parse("PASS: a")), None);
        assert_eq!(collector.observe(&guest_line::parse("BENCH: a=1 cycles")), None);
        assert_eq!(
            collector
                .observe(&guest_line::parse("BENCH: b=x cycles"))
                .as_deref(),
            Some("malformed BENCH line (the value is not an unsigned decimal number): BENCH: b=x cycles")
        );
        assert_eq!(collector.observe(&guest_line::parse("BENCH: a=2 cycles")), None);
        let values: Vec<_> = collector
            .benches
            .iter()
            .map(|bench| bench.value.as_u64())
            .collect();
        assert_eq!(values, [Some(1), Some(2)]);
        assert_eq!(collector.malformed.len(), 1);
        for _ in 0..MAX_BENCHES + 5 {
            collector.observe(&guest_line::parse("BENCH: c=3 cycles"));
            collector.observe(&guest_line::parse("BENCH: c"));
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
