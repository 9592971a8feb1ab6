//! x86_64 fw_cfg: QEMU's firmware configuration device through its I/O ports (selector 0x510,
//! data 0x511), present on pc, q35 and microvm.

use x86_64::instructions::port::Port;

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;

/// `FW_CFG_NB_CPUS`: the number of CPUs QEMU created (16 bits, little-endian).
pub const CPU_COUNT: u16 = 0x05;

/// Reads the 16-bit little-endian item `selector`.
pub fn read_u16(selector: u16) -> u16 {
    let mut select = Port::<u16>::new(SELECTOR_PORT);
    let mut data = Port::<u8>::new(DATA_PORT);
    // SAFETY: selecting an fw_cfg item and reading its bytes touches no memory; the ports
    // belong to QEMU's fw_cfg device (reads return 0 where there is none).
    unsafe { select.write(selector) };
    // SAFETY: as above.
    let low = unsafe { data.read() };
    // SAFETY: as above.
    let high = unsafe { data.read() };
    u16::from_le_bytes([low, high])
}
