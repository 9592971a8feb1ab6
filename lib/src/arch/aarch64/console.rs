//! aarch64 console: the PL011 UART of QEMU's `virt` machine (its base from the device tree).

use core::fmt;

/// The PL011's data register.
const DATA: u64 = 0x00;
/// The PL011's flag register; bit 5 is TXFF (transmit FIFO full).
const FLAGS: u64 = 0x18;
const TRANSMIT_FULL: u32 = 1 << 5;
/// Flag register bit 4, RXFE: the receive FIFO is empty.
const RECEIVE_EMPTY: u32 = 1 << 4;

/// The serial port the runtime prints to.
pub struct Console {
    base: Option<u64>,
}

impl Console {
    /// A console that is not yet initialised (it drops output until [`Console::init`]).
    pub const fn new() -> Console {
        Console { base: None }
    }

    /// Uses the PL011 the device tree names (QEMU's firmware-less boot leaves it enabled).
    pub fn init(&mut self) {
        self.base = super::device_tree::platform().uart;
    }

    /// A byte the host sent, if one is waiting (the receive FIFO is not empty).
    pub fn read_byte(&mut self) -> Option<u8> {
        let base = self.base?;
        let flags = (base + FLAGS) as usize as *const u32;
        let data = (base + DATA) as usize as *const u32;
        // SAFETY: `base` is the device tree's PL011, identity mapped as device memory; reading
        // the flag register has no side effect.
        if unsafe { flags.read_volatile() } & RECEIVE_EMPTY != 0 {
            return None;
        }
        // SAFETY: as above; reading the data register takes the byte out of the receive FIFO.
        Some(unsafe { data.read_volatile() } as u8)
    }

    fn send(base: u64, byte: u8) {
        let flags = (base + FLAGS) as usize as *const u32;
        let data = (base + DATA) as usize as *mut u32;
        // SAFETY: `base` is the PL011 of the device tree, identity mapped as device memory; its
        // flag register is read-only and reading it has no side effect.
        while unsafe { flags.read_volatile() } & TRANSMIT_FULL != 0 {
            core::hint::spin_loop();
        }
        // SAFETY: as above; writing the data register queues one byte for transmission.
        unsafe { data.write_volatile(u32::from(byte)) };
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl fmt::Write for Console {
    /// Writes the bytes, `\n` as `\r\n`.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let Some(base) = self.base else {
            return Ok(());
        };
        for byte in text.bytes() {
            if byte == b'\n' {
                Console::send(base, b'\r');
            }
            Console::send(base, byte);
        }
        Ok(())
    }
}

/// The PL011's PrimeCell identification: the peripheral ID (UARTPeriphID0-3, offsets
/// 0xFE0-0xFEC, one byte each) and the PrimeCell ID (UARTPCellID0-3, 0xFF0-0xFFC), each
/// assembled little end first. A PL011 has part number 0x011 and designer 0x41 (Arm) in the
/// peripheral ID and PrimeCell ID 0xB105_F00D (PL011 TRM, 3.3.11-3.3.18).
pub fn uart_identification() -> Option<(u32, u32)> {
    let base = super::device_tree::platform().uart?;
    let word = |offset: u64| {
        (0..4).fold(0u32, |value, index| {
            let register = (base + offset + 4 * index) as usize as *const u32;
            // SAFETY: `base` is the device tree's PL011, identity mapped as device memory; its
            // identification registers are read-only and reading them has no side effect.
            let byte = unsafe { register.read_volatile() } & 0xff;
            value | byte << (8 * index)
        })
    };
    Some((word(0xfe0), word(0xff0)))
}

/// The console UART's receive flag, for assembly that waits for a byte from the host while it
/// holds register values (a live migration's answer: [`crate::migration::migrate_holding`])
/// without running compiled code: its loop reads the PL011 flag register until RXFE (bit 4)
/// clears, and leaves the byte in the receive FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialInputWait {
    flags: u64,
}

impl SerialInputWait {
    /// The device tree's PL011 (identity mapped as device memory), if it named one.
    pub fn console() -> Option<SerialInputWait> {
        let base = super::device_tree::platform().uart?;
        Some(SerialInputWait { flags: base + FLAGS })
    }

    /// The flag register's address: an aligned 32-bit register whose reads have no side effect.
    pub fn flags_address(&self) -> u64 {
        self.flags
    }

    /// RXFE, the flag register bit that is set while the receive FIFO is empty.
    pub const RECEIVE_EMPTY: u32 = RECEIVE_EMPTY;
}
