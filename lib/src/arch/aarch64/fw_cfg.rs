//! QEMU's fw_cfg device on `virt` (MMIO, base from the device tree's `qemu,fw-cfg-mmio`): the
//! runner puts the guest environment there, because QEMU loads `-initrd` only for Linux-image
//! kernels, not for ELF ones.

/// The data register (byte reads stream the selected item).
const DATA: u64 = 0x0;
/// The selector register (16-bit, big-endian).
const SELECTOR: u64 = 0x8;
/// Item 0: the signature "QEMU".
const SIGNATURE: u16 = 0x0000;
/// The file directory: a big-endian count, then 64-byte entries.
const FILE_DIRECTORY: u16 = 0x0019;
/// The name field's size in a directory entry.
const NAME_SIZE: usize = 56;

/// The fw_cfg device at `base`.
pub struct FwCfg {
    base: u64,
}

impl FwCfg {
    /// The device the device tree names, if its signature reads "QEMU".
    pub fn find() -> Option<FwCfg> {
        let device = FwCfg {
            base: super::device_tree::platform().fw_cfg?,
        };
        device.select(SIGNATURE);
        let mut signature = [0; 4];
        device.read(&mut signature);
        (&signature == b"QEMU").then_some(device)
    }

    fn select(&self, key: u16) {
        // SAFETY: the selector register of the device-mapped fw_cfg; selecting an item only
        // resets the device's read position.
        unsafe { ((self.base + SELECTOR) as usize as *mut u16).write_volatile(key.to_be()) };
    }

    fn read(&self, buffer: &mut [u8]) {
        for byte in buffer {
            // SAFETY: the data register of the device-mapped fw_cfg; each read returns the
            // next byte of the selected item (0 past its end).
            *byte = unsafe { ((self.base + DATA) as usize as *const u8).read_volatile() };
        }
    }

    /// Reads fw_cfg file `name` into `buffer`; returns how many bytes were stored (at most the
    /// buffer's length), or `None` when there is no such file.
    pub fn read_file(&self, name: &str, buffer: &mut [u8]) -> Option<usize> {
        self.select(FILE_DIRECTORY);
        let mut count = [0; 4];
        self.read(&mut count);
        let mut found = None;
        for _ in 0..u32::from_be_bytes(count) {
            let mut entry = [0; 8 + NAME_SIZE];
            self.read(&mut entry);
            let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
            let key = u16::from_be_bytes([entry[4], entry[5]]);
            let field = &entry[8..];
            let length = field.iter().position(|&byte| byte == 0).unwrap_or(NAME_SIZE);
            if &field[..length] == name.as_bytes() {
                found = Some((key, size));
                break;
            }
        }
        let (key, size) = found?;
        let length = size.min(buffer.len());
        self.select(key);
        self.read(&mut buffer[..length]);
        Some(length)
    }
}
