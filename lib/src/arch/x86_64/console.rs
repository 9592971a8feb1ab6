//! x86_64 console: COM1 (port 0x3f8) through uart_16550.

use core::fmt;

use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

/// The first PC serial port.
const COM1: u16 = 0x3f8;

/// The serial port the runtime prints to.
pub struct Console(Option<Uart16550Tty<PioBackend>>);

impl Console {
    /// A console that is not yet initialised (it drops output until [`Console::init`]).
    pub const fn new() -> Console {
        Console(None)
    }

    /// Programs COM1 (115200 8N1, FIFOs on).
    pub fn init(&mut self) {
        // SAFETY: COM1's eight I/O ports belong to the runtime for the whole program.
        self.0 = unsafe { Uart16550Tty::new_port(COM1, Config::default()) }.ok();
    }
}

impl Console {
    /// A byte the host sent, if one is waiting in the receive buffer.
    pub fn read_byte(&mut self) -> Option<u8> {
        self.0.as_mut()?.inner_mut().try_receive_byte().ok()
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl fmt::Write for Console {
    /// Sends whole runs of bytes, so the UART is polled once per FIFO load rather than once
    /// per byte: every port access is a VM exit under KVM. `\n` goes out as `\r\n`.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let Some(port) = &mut self.0 else {
            return Ok(());
        };
        let uart = port.inner_mut();
        let mut lines = text.split('\n');
        if let Some(first) = lines.next() {
            uart.send_bytes_exact(first.as_bytes());
        }
        for line in lines {
            uart.send_bytes_exact(b"\r\n");
            uart.send_bytes_exact(line.as_bytes());
        }
        Ok(())
    }
}
