//! The PVH boot protocol's `hvm_start_info` and memory map, as typed structures.
//!
//! Layouts follow Xen's `public/arch-x86/hvm/start_info.h`. The firmware leaves them in low
//! memory, which the runtime reuses, so [`BootInfo::read`] copies what it needs first.

use core::mem::size_of;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// `struct hvm_start_info` (version 1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// Must be [`START_INFO_MAGIC`].
    pub magic: u32,
    /// Version of the structure: 1 adds the memory map.
    pub version: u32,
    /// SIF_* flags.
    pub flags: u32,
    /// Number of `hvm_modlist_entry` at `module_list_address` (the `-initrd`).
    pub module_count: u32,
    /// Physical address of the module list.
    pub module_list_address: u64,
    /// Physical address of the NUL-terminated command line (`-append`).
    pub command_line_address: u64,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_address: u64,
    /// Physical address of the memory map (version 1).
    pub memory_map_address: u64,
    /// Number of memory map entries (version 1).
    pub memory_map_entries: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// `struct hvm_memmap_table_entry`: one E820-style range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryMapEntry {
    /// Physical start address.
    pub address: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type: [`MEMORY_TYPE_RAM`] is usable RAM.
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// `struct hvm_modlist_entry`: one module (QEMU's `-initrd`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleEntry {
    /// Physical address of the module's contents.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of the module's command line, or 0.
    pub command_line_address: u64,
    /// Reserved, zero.
    pub reserved: u64,
}

const _: () = assert!(size_of::<ModuleEntry>() == 32);

/// E820 type of usable RAM.
pub const MEMORY_TYPE_RAM: u32 = 1;

const _: () = assert!(size_of::<StartInfo>() == 56);
const _: () = assert!(size_of::<MemoryMapEntry>() == 24);

/// The most memory map entries the runtime keeps.
pub const MAX_MEMORY_MAP_ENTRIES: usize = 32;
/// The longest command line the runtime keeps, in bytes.
pub const MAX_COMMAND_LINE: usize = 2048;
/// The most bytes of the first module (the environment) the runtime keeps.
pub const MAX_ENVIRONMENT: usize = 4096;

/// What the runtime keeps of the start info, copied out of low memory.
pub struct BootInfo {
    /// The memory map (its first [`MAX_MEMORY_MAP_ENTRIES`] entries).
    pub memory_map: heapless::Vec<MemoryMapEntry, MAX_MEMORY_MAP_ENTRIES>,
    /// The command line bytes (without the NUL).
    pub command_line: heapless::Vec<u8, MAX_COMMAND_LINE>,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_address: u64,
    /// The first module's bytes: the runner's KEY=VALUE environment.
    pub environment: heapless::Vec<u8, MAX_ENVIRONMENT>,
}

impl BootInfo {
    /// Copies the start info at `address` out of low memory.
    ///
    /// # Safety
    /// `address` must be the `%ebx` value of a PVH entry, and the memory it and its
    /// pointers refer to must still be identity mapped and untouched.
    pub unsafe fn read(address: u32) -> BootInfo {
        let mut boot = BootInfo {
            memory_map: heapless::Vec::new(),
            command_line: heapless::Vec::new(),
            rsdp_address: 0,
            environment: heapless::Vec::new(),
        };
        // SAFETY: the caller guarantees `address` points at the loader's `hvm_start_info`.
        let info = unsafe { core::ptr::read_unaligned(address as usize as *const StartInfo) };
        assert!(
            info.magic == START_INFO_MAGIC,
            "PVH start info magic is {:#x}, expected {START_INFO_MAGIC:#x}",
            info.magic
        );
        boot.rsdp_address = info.rsdp_address;
        if info.command_line_address != 0 {
            let line = info.command_line_address as usize as *const u8;
            while !boot.command_line.is_full() {
                // SAFETY: the loader's command line is NUL-terminated; we stop at the NUL.
                let byte = unsafe { line.wrapping_add(boot.command_line.len()).read() };
                if byte == 0 || boot.command_line.push(byte).is_err() {
                    break;
                }
            }
        }
        if info.module_count > 0 && info.module_list_address != 0 {
            // SAFETY: the loader's module list holds `module_count` entries.
            let module =
                unsafe { (info.module_list_address as usize as *const ModuleEntry).read_unaligned() };
            let length = (module.size as usize).min(MAX_ENVIRONMENT);
            // SAFETY: the module's `size` bytes at `address` were loaded by QEMU and nothing
            // has written them; we read at most that many.
            let bytes = unsafe { core::slice::from_raw_parts(module.address as usize as *const u8, length) };
            // Cannot fail: `length` is at most the capacity.
            let _ = boot.environment.extend_from_slice(bytes);
        }
        if info.version >= 1 && info.memory_map_address != 0 {
            let entries = info.memory_map_entries as usize;
            let table = info.memory_map_address as usize as *const MemoryMapEntry;
            for index in 0..entries.min(MAX_MEMORY_MAP_ENTRIES) {
                // SAFETY: the loader's table holds `memory_map_entries` entries.
                let entry = unsafe { table.wrapping_add(index).read_unaligned() };
                // Cannot fail: at most the capacity's count of entries.
                let _ = boot.memory_map.push(entry);
            }
        }
        boot
    }

    /// The command line as text (invalid UTF-8 is cut at the first bad byte).
    pub fn command_line(&self) -> &str {
        let bytes = self.command_line.as_slice();
        match core::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => core::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The usable RAM ranges, as (start, end) physical addresses.
    pub fn ram(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.memory_map
            .iter()
            .filter(|entry| entry.kind == MEMORY_TYPE_RAM)
            .map(|entry| (entry.address, entry.address + entry.size))
    }
}
