//! Where x86_64 finds its PCI host bridge: the ECAM region of ACPI's MCFG table (q35), else
//! the configuration mechanism #1 (ports 0xCF8/0xCFC: pc, and q35 too; the first 256 bytes
//! of each function), with the windows of QEMU's PC machines. microvm has no PCI.
//!
//! The windows: QEMU routes every physical address that is neither RAM nor a device of its own
//! to the PCI bus, and its ACPI tables describe the 32-bit hole up to the I/O APIC (0xfec00000)
//! and a 64-bit hole from 4 GiB above RAM. The runtime hands out the 32-bit window from
//! 0xc0000000 (above the ECAM region q35's firmware puts at 0xb0000000), from above every
//! //! memory BAR the firmware already assigned, so that no two BARs meet. x86 I/O space is not
//! memory mapped: the I/O window (ports 0xc000-0xffff, above the firmware's I/O BARs) has the
//! port numbers as its "CPU addresses", and an I/O BAR is reached with port instructions at
//! `Bar::cpu_address`, never through `HostBridge::map_bar`.

use x86_64::instructions::port::Port;

use crate::pci::{Address, ConfigMechanism, HostBridgeDescription, Space, Window};

/// CONFIG_ADDRESS: enable bit, bus, device, function, register.
const CONFIG_ADDRESS: u16 = 0xcf8;
/// CONFIG_DATA: the selected dword.
const CONFIG_DATA: u16 = 0xcfc;
/// CONFIG_ADDRESS bit 31: the next CONFIG_DATA access is a configuration cycle.
const CONFIG_ENABLE: u32 = 1 << 31;

/// Serialises the two-step CONFIG_ADDRESS/CONFIG_DATA accesses between CPUs.
static CONFIG_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The start of the 32-bit window the runtime allocates from.
pub const WINDOW32_START: u64 = 0xc000_0000;
/// The end of the 32-bit window: the I/O APIC and the chipset's devices follow.
pub const WINDOW32_END: u64 = 0xfec0_0000;
/// The start of the I/O window (where SeaBIOS starts PCI I/O on pc and q35).
pub const IO_WINDOW_START: u64 = 0xc000;
/// The end of the I/O window: the end of x86 I/O space.
pub const IO_WINDOW_END: u64 = 0x1_0000;
/// The start of the 64-bit window: 4 GiB (QEMU's `pci-hole64` starts right above RAM, and
/// the runner's guests have no RAM above 4 GiB).
pub const WINDOW64_START: u64 = 1 << 32;
/// The size of the 64-bit window: q35's default `pci-hole64-size`.
pub const WINDOW64_SIZE: u64 = 32 << 30;

/// Reads `width` bytes (1, 2 or 4; `offset` aligned to it) of `address`'s configuration space
/// at `offset` (below 256) through ports 0xCF8/0xCFC: CONFIG_DATA's byte `offset % 4` on. Absent
/// functions read all ones.
pub fn config_port_read(address: Address, offset: u8, width: u8) -> u32 {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _guard = CONFIG_LOCK.lock();
        select(address, offset);
        let port = CONFIG_DATA + u16::from(offset & 3);
        match width {
            1 => u32::from(super::instructions::in_u8(port)),
            // SAFETY: reading a configuration register through CONFIG_DATA changes no memory.
            2 => u32::from(unsafe { Port::<u16>::new(port).read() }),
            _ => super::instructions::in_u32(port),
        }
    })
}

/// Writes `width` bytes (1, 2 or 4) of `address`'s configuration space at `offset` through
/// ports 0xCF8/0xCFC: as safe as an ECAM write (see `crate::pci`).
pub fn config_port_write(address: Address, offset: u8, width: u8, value: u32) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _guard = CONFIG_LOCK.lock();
        select(address, offset);
        let port = CONFIG_DATA + u16::from(offset & 3);
        match width {
            1 => super::instructions::out_u8(port, value as u8),
            2 => super::instructions::out_u16(port, value as u16),
            _ => super::instructions::out_u32(port, value),
        }
    })
}

/// Reads the 32-bit configuration register at `offset` of `address` through the ports.
fn config_read_u32(address: Address, offset: u8) -> u32 {
    config_port_read(address, offset, 4)
}

/// Selects `offset` of `address` in CONFIG_ADDRESS; the caller holds the lock.
fn select(address: Address, offset: u8) {
    // SAFETY: CONFIG_ADDRESS only selects the register CONFIG_DATA shows; no memory changes.
    unsafe { Port::<u32>::new(CONFIG_ADDRESS).write(config_address(address, offset)) };
}

fn config_address(address: Address, offset: u8) -> u32 {
    CONFIG_ENABLE
        | u32::from(address.bus) << 16
        | u32::from(address.device & 0x1f) << 11
        | u32::from(address.function & 7) << 8
        | u32::from(offset & 0xfc)
}

/// The ends of the highest 32-bit memory BAR and of the highest I/O BAR that the firmware
/// assigned on bus 0 (0 if none), read through the configuration ports; a BAR's size is at
/// most its address's natural alignment, so the end is rounded up to the address's lowest set
/// bit.
fn firmware_bars_end() -> (u64, u64) {
    let mut end = 0;
    let mut io_end = 0;
    for device in 0..32 {
        for function in 0..8 {
            let address = Address {
                bus: 0,
                device,
                function,
            };
            let identity = config_read_u32(address, 0);
            if identity & 0xffff == 0xffff {
                if function == 0 {
                    break;
                }
                continue;
            }
            let header = config_read_u32(address, 0x0c) >> 16 & 0xff;
            let bars = if header & 0x7f == 0 { 6 } else { 2 };
            for index in 0..bars {
                let bar = config_read_u32(address, 0x10 + 4 * index);
                if bar & 1 != 0 {
                    let base = u64::from(bar & 0xfffc);
                    if base != 0 {
                        io_end = io_end.max(base + (1 << base.trailing_zeros()));
                    }
                    continue;
                }
                let base = u64::from(bar & !0xf);
                if base != 0 {
                    end = end.max(base + (1 << base.trailing_zeros()));
                }
            }
            if function == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
    (end, io_end)
}

/// The host bridge: the ECAM region ACPI's MCFG describes (q35), else, where a host bridge
/// answers at 00:00.0 through the configuration ports (pc), the port mechanism; with the
/// windows above. `None` without PCI (microvm).
pub fn host_bridge() -> Option<HostBridgeDescription> {
    let ecam = super::acpi::ecam();
    let host = Address {
        bus: 0,
        device: 0,
        function: 0,
    };
    if ecam.is_none() && config_read_u32(host, 0) & 0xffff == 0xffff {
        return None;
    }
    let (firmware_end, firmware_io_end) = firmware_bars_end();
    let mut start = WINDOW32_START.max(firmware_end);
    if let Some(ecam) = ecam {
        let ecam_end = ecam.base + ((u64::from(ecam.bus_end) + 1) << 20);
        if (ecam.base..ecam_end).contains(&start) {
            start = ecam_end;
        }
    }
    let start = start.next_multiple_of(1 << 20);
    let mut windows = heapless::Vec::new();
    if start < WINDOW32_END {
        let _ = windows.push(Window {
            space: Space::Memory32,
            prefetchable: false,
            pci_address: start,
            cpu_address: start,
            size: WINDOW32_END - start,
        });
    }
    let io_start = IO_WINDOW_START.max(firmware_io_end).next_multiple_of(0x100);
    if io_start < IO_WINDOW_END {
        let _ = windows.push(Window {
            space: Space::Io,
            prefetchable: false,
            pci_address: io_start,
            cpu_address: io_start,
            size: IO_WINDOW_END - io_start,
        });
    }
    let _ = windows.push(Window {
        space: Space::Memory64,
        prefetchable: true,
        pci_address: WINDOW64_START,
        cpu_address: WINDOW64_START,
        size: WINDOW64_SIZE,
    });
    Some(match ecam {
        Some(ecam) => HostBridgeDescription {
            mechanism: ConfigMechanism::Ecam,
            // The MCFG's base is bus 0's; the description's is `bus_start`'s.
            ecam_base: ecam.base + (u64::from(ecam.bus_start) << 20),
            ecam_size: (u64::from(ecam.bus_end) - u64::from(ecam.bus_start) + 1) << 20,
            bus_start: ecam.bus_start,
            bus_end: ecam.bus_end,
            windows,
        },
        None => HostBridgeDescription {
            mechanism: ConfigMechanism::Ports,
            ecam_base: 0,
            ecam_size: 0,
            bus_start: 0,
            bus_end: 0xff,
            windows,
        },
    })
}

/// The I/O APIC input (GSI) that INTx `pin` (1: INTA .. 4: INTD) of device `device` on q35's
/// bus 0 reaches in APIC mode: QEMU's ICH9 routes INT[A-D] of slot `s` to PIRQ `(s + pin - 1)
/// % 4 + 4` (PIRQ E-H; hw/isa/lpc_ich9.c, `ich9_cc_init`, matching the DSDT's `_PRT`), and
/// PIRQ `n` to GSI `16 + n` (`ich9_pirq_to_gsi`). The Interrupt Line register holds what the
/// firmware chose for the 8259 instead. `None` for a pin out of 1..=4.
pub fn q35_intx_gsi(device: u8, pin: u8) -> Option<u8> {
    /// PIRQ A's GSI.
    const FIRST_PIRQ_GSI: u8 = 16;
    (1..=4)
        .contains(&pin)
        .then(|| FIRST_PIRQ_GSI + ((device & 0x1f) + pin - 1) % 4 + 4)
}
