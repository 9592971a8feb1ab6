//! console-echo: the serial port carries input from the host intact, in a handshake driven by
//! the runner's `expect` script: the guest says READY, then echoes each line it receives.
//!
//! `rounds=N` says how many lines to expect (3 by default): line i must read `ping i`. Run by
//! hand without a script, it gives up after a bounded wait and fails.
#![no_std]
#![no_main]

use vmunit::arch::instructions::rdtsc;
use vmunit::console::read_line;
use vmunit::{println, report, report_fail};

vmunit::main!(main);

/// How long to wait for a line, in TSC cycles: at least 10 s on any TSC of up to 3 GHz.
const PATIENCE: u64 = 30_000_000_000;

fn main(args: &[&str]) {
    let rounds: usize = vmunit::args::value(args, "rounds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    println!("READY");
    let mut buffer = [0u8; 128];
    for round in 0..rounds {
        let start = rdtsc();
        let Some(length) = read_line(&mut buffer, || rdtsc().wrapping_sub(start) > PATIENCE) else {
            report_fail!("line {round} arrives within the wait (nothing came)");
            break;
        };
        let line = core::str::from_utf8(&buffer[..length]).unwrap_or("<not UTF-8>");
        println!("echo: {line}");
        let mut expected = [0u8; 32];
        let expected = format_into(&mut expected, round);
        report!(
            line == expected,
            "line {round} arrives intact as {expected:?} (got {line:?})"
        );
    }
}

/// `ping <round>` in `buffer`, without the heap.
fn format_into(buffer: &mut [u8; 32], round: usize) -> &str {
    use core::fmt::Write;
    struct Cursor<'a>(&'a mut [u8], usize);
    impl Write for Cursor<'_> {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            let end = self.1 + text.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(core::fmt::Error)?
                .copy_from_slice(text.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
    let mut cursor = Cursor(buffer, 0);
    let _ = write!(cursor, "ping {round}");
    let length = cursor.1;
    core::str::from_utf8(&buffer[..length]).unwrap_or("")
}
