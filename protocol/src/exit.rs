//! How a guest ends: its result code, the `EXIT: STATUS=` line that carries it, and the
//! `ABORT:` line of a guest that could not finish.

use core::fmt;

/// A guest's result code, as kvm-unit-tests uses them. QEMU's exit status (isa-debug-exit,
/// semihosting) and the `EXIT:` line carry it as `(code << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestCode {
    /// Every check passed (status 1).
    Pass,
    /// Some checks failed unexpectedly (status 3).
    Failures,
    /// Every check was skipped (status 77, as in kvm-unit-tests).
    AllSkipped,
    /// A panic or unexpected exception: kvm-unit-tests' `abort()` (status 127).
    Abort,
    /// Any other code.
    Other(u32),
}

impl GuestCode {
    /// Decodes a result code.
    pub const fn from_code(code: u32) -> GuestCode {
        match code {
            0 => GuestCode::Pass,
            1 => GuestCode::Failures,
            38 => GuestCode::AllSkipped,
            63 => GuestCode::Abort,
            other => GuestCode::Other(other),
        }
    }

    /// The result code.
    pub const fn code(self) -> u32 {
        match self {
            GuestCode::Pass => 0,
            GuestCode::Failures => 1,
            GuestCode::AllSkipped => 38,
            GuestCode::Abort => 63,
            GuestCode::Other(code) => code,
        }
    }

    /// The exit status it becomes: `(code << 1) | 1`.
    pub const fn status(self) -> u32 {
        (self.code() << 1) | 1
    }

    /// Decodes an exit status `(code << 1) | 1`; `None` for an even status, which no guest
    /// result produces (a triple fault under `-no-reboot` exits with 0).
    pub const fn from_status(status: u32) -> Option<GuestCode> {
        if status & 1 == 1 {
            Some(GuestCode::from_code(status >> 1))
        } else {
            None
        }
    }
}

/// The `EXIT: STATUS=<status>` line the guest prints just before it stops the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitLine {
    /// The status: `(code << 1) | 1` for a guest code.
    pub status: u32,
}

impl ExitLine {
    /// What starts the line, up to the status.
    pub const LABEL: &'static str = "EXIT: STATUS=";

    /// The line for a guest code.
    pub const fn of(code: GuestCode) -> ExitLine {
        ExitLine {
            status: code.status(),
        }
    }

    /// The guest code, when the status is one (odd).
    pub const fn code(self) -> Option<GuestCode> {
        GuestCode::from_status(self.status)
    }

    /// Parses a whole `EXIT: STATUS=n` line.
    pub fn parse(line: &str) -> Option<ExitLine> {
        ExitLine::parse_after_label(line.trim().strip_prefix(ExitLine::LABEL)?)
    }

    /// Parses the status that follows the label: decimal digits only.
    pub fn parse_after_label(text: &str) -> Option<ExitLine> {
        let digits = text.trim();
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        Some(ExitLine {
            status: digits.parse().ok()?,
        })
    }
}

impl fmt::Display for ExitLine {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}{}", ExitLine::LABEL, self.status)
    }
}

/// The `ABORT: <reason>` line of a guest that panicked or took an unexpected exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortLine<T> {
    /// Why: the report prefixes and the panic message or exception.
    pub reason: T,
}

impl<T> AbortLine<T> {
    /// The label that starts the line.
    pub const LABEL: &'static str = "ABORT:";
}

impl<T: fmt::Display> fmt::Display for AbortLine<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", AbortLine::<T>::LABEL, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    #[test]
    fn codes_follow_kvm_unit_tests() {
        assert_eq!(GuestCode::Pass.status(), 1);
        assert_eq!(GuestCode::Failures.status(), 3);
        assert_eq!(GuestCode::AllSkipped.status(), 77);
        assert_eq!(GuestCode::Abort.status(), 127);
        assert_eq!(GuestCode::from_status(0), None);
        assert_eq!(GuestCode::from_status(9), Some(GuestCode::Other(4)));
    }

    #[test]
    fn exit_lines() {
        assert_eq!(
            format!("{}", ExitLine::of(GuestCode::AllSkipped)),
            "EXIT: STATUS=77"
        );
        assert_eq!(ExitLine::parse("EXIT: STATUS=3\r"), Some(ExitLine { status: 3 }));
        assert_eq!(ExitLine::parse("EXIT: STATUS=-1"), None);
        assert_eq!(ExitLine::parse("EXIT: STATUS="), None);
        assert_eq!(ExitLine::parse("EXIT: STATUS=99999999999"), None);
        assert_eq!(format!("{}", AbortLine { reason: "panic" }), "ABORT: panic");
    }

    proptest! {
        #[test]
        fn codes_round_trip(code in 0u32..(u32::MAX >> 1)) {
            let guest = GuestCode::from_code(code);
            prop_assert_eq!(guest.code(), code);
            prop_assert_eq!(GuestCode::from_status(guest.status()), Some(guest));
            let line = ExitLine::of(guest);
            prop_assert_eq!(ExitLine::parse(&format!("{line}")), Some(line));
            prop_assert_eq!(line.code(), Some(guest));
        }
    }
}
