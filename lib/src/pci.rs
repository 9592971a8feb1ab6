//! PCI through a host bridge (ECAM, or x86's configuration ports): configuration space, enumeration, BAR sizing and
//! assignment from the host bridge's windows, and device windows on the assigned BARs.
//!
//! The architecture says where the host bridge is (`arch::pci::host_bridge()`: the device
//! tree's `pci-host-ecam-generic` node on aarch64, ACPI's MCFG on x86_64's q35) and maps its regions
//! (`arch::mmu::map_device`); the rest is generic. [`HostBridge::probe`] maps the ECAM region,
//! [`HostBridge::functions`] enumerates, [`HostBridge::assign_bars`] gives a function's BARs
//! addresses from the windows, as kvm-unit-tests' `pci_probe` does, and
//! [`HostBridge::map_bar`] maps one. I/O BARs are reachable where the host bridge maps I/O
//! space into memory (its I/O window has a CPU address, as on Arm).
//!
//! Configuration and BAR accesses are safe functions: a BAR decodes only inside the host
//! bridge's windows, which lie apart from RAM and the runtime's devices, so no BAR value can
//! cover them. A device told to master the bus (Command's Bus Master bit, then its own DMA
//! registers) could write RAM: no device the runtime knows of does so, and a test that
//! programs DMA must point it at memory it owns.

use alloc::vec::Vec;
use core::fmt;

pub mod edu;
pub mod testdev;

use crate::mmio::{DeviceWindow, MapError};

/// Vendor IDs.
pub mod vendor {
    /// Red Hat, Inc.: QEMU's own PCI devices.
    pub const RED_HAT: u16 = 0x1b36;
    /// QEMU's older vendor ID (`PCI_VENDOR_ID_QEMU`): the `edu` device's.
    pub const QEMU: u16 = 0x1234;
    /// What an absent function's vendor ID reads as.
    pub const NONE: u16 = 0xffff;
}

/// Device IDs (of [`vendor::RED_HAT`]).
pub mod device {
    /// QEMU's `pci-testdev`.
    pub const RED_HAT_TEST: u16 = 0x0005;
    /// QEMU's generic PCIe host bridge (`gpex`, the `virt` machine's).
    pub const RED_HAT_PCIE_HOST: u16 = 0x0008;
    /// QEMU's educational device `edu` (of [`vendor::QEMU`](super::vendor::QEMU)).
    pub const QEMU_EDU: u16 = 0x11e8;
}

/// Configuration space register offsets (type 0 and type 1 headers share the first 16 bytes).
pub mod register {
    /// Vendor ID, 16 bits, read-only.
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID, 16 bits, read-only.
    pub const DEVICE_ID: u16 = 0x02;
    /// Command, 16 bits (see [`Command`](super::Command)).
    pub const COMMAND: u16 = 0x04;
    /// Status, 16 bits.
    pub const STATUS: u16 = 0x06;
    /// Revision ID, 8 bits, read-only.
    pub const REVISION_ID: u16 = 0x08;
    /// Programming interface, 8 bits, then subclass and base class: the class code.
    pub const CLASS_CODE: u16 = 0x09;
    /// Header type, 8 bits, read-only.
    pub const HEADER_TYPE: u16 = 0x0e;
    /// BAR 0 (six 32-bit BARs follow in a type 0 header, two in a type 1).
    pub const BAR0: u16 = 0x10;
    /// Capabilities pointer, 8 bits.
    pub const CAPABILITIES: u16 = 0x34;
    /// Interrupt line, 8 bits, read-write scratch for software.
    pub const INTERRUPT_LINE: u16 = 0x3c;
    /// Interrupt pin, 8 bits, read-only (0: none, 1..4: INTA..INTD).
    pub const INTERRUPT_PIN: u16 = 0x3d;
}

/// Capability IDs (the first byte of each entry of the capability list).
pub mod capability {
    /// Power management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// Message Signalled Interrupts.
    pub const MSI: u8 = 0x05;
    /// PCI Express.
    pub const EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSI_X: u8 = 0x11;
}

/// The MSI capability's registers, from the capability's offset (PCI Local Bus 3.0, 6.8.1).
pub mod msi {
    /// Message Control, 16 bits (after the ID and next pointer).
    pub const CONTROL: u16 = 0x02;
    /// Message Address, low 32 bits.
    pub const ADDRESS_LOW: u16 = 0x04;
    /// Message Upper Address (64-bit capable functions only).
    pub const ADDRESS_HIGH: u16 = 0x08;
    /// Message Data of a 32-bit-address capability.
    pub const DATA_32: u16 = 0x08;
    /// Message Data of a 64-bit-address capability.
    pub const DATA_64: u16 = 0x0c;
    /// Message Control bit 0: MSI Enable.
    pub const CONTROL_ENABLE: u16 = 1 << 0;
    /// Message Control bit 7: 64-bit address capable.
    pub const CONTROL_64BIT: u16 = 1 << 7;
    /// Message Control bit 8: per-vector masking capable.
    pub const CONTROL_MASKABLE: u16 = 1 << 8;
}

/// Status register bit 4: the function has a capability list.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Class codes (base class).
pub mod class {
    /// Bridge devices (subclass 0: host bridge).
    pub const BRIDGE: u8 = 0x06;
    /// The bridge subclass of a host bridge.
    pub const HOST_BRIDGE: u8 = 0x00;
    /// Devices built before class codes were defined (QEMU's pci-testdev: its 16-bit class
    /// ID `PCI_CLASS_OTHERS`, 0x00ff, lands as class 00 subclass ff).
    pub const UNCLASSIFIED: u8 = 0x00;
    /// Devices that fit no defined class.
    pub const OTHER: u8 = 0xff;
}

/// The Command register.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Command(pub u16);

impl Command {
    /// I/O Space enable: the function decodes its I/O BARs.
    pub const IO_SPACE: Command = Command(1 << 0);
    /// Memory Space enable: the function decodes its memory BARs.
    pub const MEMORY_SPACE: Command = Command(1 << 1);
    /// Bus Master enable: the function may issue memory requests (DMA, MSI).
    pub const BUS_MASTER: Command = Command(1 << 2);
    /// Parity Error Response.
    pub const PARITY_ERROR_RESPONSE: Command = Command(1 << 6);
    /// SERR# enable.
    pub const SERR: Command = Command(1 << 8);
    /// INTx emulation disable.
    pub const INTX_DISABLE: Command = Command(1 << 10);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Command) -> bool {
        self.0 & other.0 == other.0
    }

    /// These bits and `other`'s.
    pub fn with(self, other: Command) -> Command {
        Command(self.0 | other.0)
    }

    /// These bits without `other`'s.
    pub fn without(self, other: Command) -> Command {
        Command(self.0 & !other.0)
    }
}

/// A function's address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct Address {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl Address {
    /// The offset of this function's 4 KiB configuration space from the ECAM base of bus 0.
    fn ecam_offset(self) -> u64 {
        (self.bus as u64) << 20 | (self.device as u64 & 0x1f) << 15 | (self.function as u64 & 7) << 12
    }
}

impl fmt::Display for Address {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

/// The layout of a configuration header (Header Type bits 6:0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeaderLayout {
    /// Type 0: an endpoint, six BARs.
    Normal,
    /// Type 1: a PCI-to-PCI bridge, two BARs.
    Bridge,
    /// Type 2: a CardBus bridge.
    CardBus,
    /// Reserved encodings.
    Reserved(u8),
}

/// The Header Type register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeaderType {
    /// The header's layout.
    pub layout: HeaderLayout,
    /// Bit 7: the device has functions other than 0.
    pub multifunction: bool,
    /// The raw register.
    pub raw: u8,
}

impl HeaderType {
    /// Decodes the register.
    pub fn from_raw(raw: u8) -> HeaderType {
        let layout = match raw & 0x7f {
            0 => HeaderLayout::Normal,
            1 => HeaderLayout::Bridge,
            2 => HeaderLayout::CardBus,
            other => HeaderLayout::Reserved(other),
        };
        HeaderType {
            layout,
            multifunction: raw & 0x80 != 0,
            raw,
        }
    }

    /// How many BARs the layout has.
    pub fn bar_count(self) -> u8 {
        match self.layout {
            HeaderLayout::Normal => 6,
            HeaderLayout::Bridge => 2,
            _ => 0,
        }
    }
}

/// The class code: base class, subclass, programming interface.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClassCode {
    /// Base class (see [`class`]).
    pub class: u8,
    /// Subclass.
    pub subclass: u8,
    /// Programming interface.
    pub programming_interface: u8,
}

/// How a host bridge's configuration space is reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConfigMechanism {
    /// The ECAM region: 4 KiB a function, memory-mapped.
    Ecam,
    /// The architecture's port mechanism (x86's configuration mechanism #1, ports
    /// 0xCF8/0xCFC: `arch::pci::config_port_read`/`config_port_write`): the first 256 bytes of
    /// each function; beyond them reads give all ones and writes are dropped.
    Ports,
}

/// How one function's configuration space is reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConfigAccess {
    Ecam(DeviceWindow),
    Ports,
}

/// The size of a function's configuration space through the port mechanism.
pub const PORT_CONFIG_SIZE: u16 = 256;

/// One function's configuration space: 4 KiB through the ECAM, or the first 256 bytes through
/// the port mechanism. Accesses must be naturally aligned (a misaligned one panics).
#[derive(Clone, Copy, Debug)]
pub struct ConfigSpace {
    address: Address,
    access: ConfigAccess,
}

impl ConfigSpace {
    /// The function's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The ECAM window on the 4 KiB (`None` through the port mechanism).
    pub fn window(&self) -> Option<DeviceWindow> {
        match self.access {
            ConfigAccess::Ecam(window) => Some(window),
            ConfigAccess::Ports => None,
        }
    }

    /// Reads `width` bytes at `offset` through the port mechanism.
    fn port_read(&self, offset: u16, width: u8) -> u32 {
        assert!(
            offset.is_multiple_of(u16::from(width)),
            "misaligned configuration read at {offset:#x}"
        );
        if offset >= PORT_CONFIG_SIZE {
            return u32::MAX;
        }
        crate::arch::pci::config_port_read(self.address, offset as u8, width)
    }

    /// Writes `width` bytes at `offset` through the port mechanism.
    fn port_write(&self, offset: u16, width: u8, value: u32) {
        assert!(
            offset.is_multiple_of(u16::from(width)),
            "misaligned configuration write at {offset:#x}"
        );
        if offset < PORT_CONFIG_SIZE {
            crate::arch::pci::config_port_write(self.address, offset as u8, width, value)
        }
    }

    /// Reads the byte at `offset`.
    pub fn read_u8(&self, offset: u16) -> u8 {
        match self.access {
            ConfigAccess::Ecam(window) => window.read_u8(offset as u64),
            ConfigAccess::Ports => self.port_read(offset, 1) as u8,
        }
    }

    /// Reads the 16-bit register at `offset`.
    pub fn read_u16(&self, offset: u16) -> u16 {
        match self.access {
            ConfigAccess::Ecam(window) => window.read_u16(offset as u64),
            ConfigAccess::Ports => self.port_read(offset, 2) as u16,
        }
    }

    /// Reads the 32-bit register at `offset`.
    pub fn read_u32(&self, offset: u16) -> u32 {
        match self.access {
            ConfigAccess::Ecam(window) => window.read_u32(offset as u64),
            ConfigAccess::Ports => self.port_read(offset, 4),
        }
    }

    /// Writes the byte at `offset`.
    pub fn write_u8(&self, offset: u16, value: u8) {
        match self.access {
            ConfigAccess::Ecam(window) => window.write_u8(offset as u64, value),
            ConfigAccess::Ports => self.port_write(offset, 1, u32::from(value)),
        }
    }

    /// Writes the 16-bit register at `offset`.
    pub fn write_u16(&self, offset: u16, value: u16) {
        match self.access {
            ConfigAccess::Ecam(window) => window.write_u16(offset as u64, value),
            ConfigAccess::Ports => self.port_write(offset, 2, u32::from(value)),
        }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write_u32(&self, offset: u16, value: u32) {
        match self.access {
            ConfigAccess::Ecam(window) => window.write_u32(offset as u64, value),
            ConfigAccess::Ports => self.port_write(offset, 4, value),
        }
    }

    /// Vendor ID ([`vendor::NONE`] when no function answers).
    pub fn vendor_id(&self) -> u16 {
        self.read_u16(register::VENDOR_ID)
    }

    /// Device ID.
    pub fn device_id(&self) -> u16 {
        self.read_u16(register::DEVICE_ID)
    }

    /// Whether a function answers at this address (kvm-unit-tests' `pci_dev_exists`).
    pub fn exists(&self) -> bool {
        self.vendor_id() != vendor::NONE && self.device_id() != 0xffff
    }

    /// The Command register.
    pub fn command(&self) -> Command {
        Command(self.read_u16(register::COMMAND))
    }

    /// Writes the Command register.
    pub fn set_command(&self, command: Command) {
        self.write_u16(register::COMMAND, command.0)
    }

    /// Revision ID.
    pub fn revision(&self) -> u8 {
        self.read_u8(register::REVISION_ID)
    }

    /// The class code.
    pub fn class_code(&self) -> ClassCode {
        ClassCode {
            programming_interface: self.read_u8(register::CLASS_CODE),
            subclass: self.read_u8(register::CLASS_CODE + 1),
            class: self.read_u8(register::CLASS_CODE + 2),
        }
    }

    /// The Header Type register.
    pub fn header_type(&self) -> HeaderType {
        HeaderType::from_raw(self.read_u8(register::HEADER_TYPE))
    }

    /// The offsets of the function's capabilities, with their IDs, in list order (at most
    /// 48: a looping list ends there).
    pub fn capabilities(&self) -> Vec<(u8, u16)> {
        let mut found = Vec::new();
        if self.read_u16(register::STATUS) & STATUS_CAPABILITIES == 0 {
            return found;
        }
        let mut pointer = self.read_u8(register::CAPABILITIES) & 0xfc;
        while pointer >= 0x40 && found.len() < 48 {
            let offset = u16::from(pointer);
            found.push((self.read_u8(offset), offset));
            pointer = self.read_u8(offset + 1) & 0xfc;
        }
        found
    }

    /// The offset of the first capability with `id`.
    pub fn find_capability(&self, id: u8) -> Option<u16> {
        self.capabilities()
            .into_iter()
            .find_map(|(found, offset)| (found == id).then_some(offset))
    }

    /// The function's MSI capability, if it has one.
    pub fn msi(&self) -> Option<Msi> {
        Some(Msi {
            config: *self,
            offset: self.find_capability(capability::MSI)?,
        })
    }

    /// The raw 32-bit BAR `index`.
    pub fn bar_register(&self, index: u8) -> u32 {
        self.read_u32(register::BAR0 + 4 * index as u16)
    }

    /// Writes the raw 32-bit BAR `index`.
    pub fn set_bar_register(&self, index: u8, value: u32) {
        self.write_u32(register::BAR0 + 4 * index as u16, value)
    }

    /// Sizes BAR `index` the standard way (kvm-unit-tests' `pci_bar_size`): with the function's
    /// decoding off, writes all ones, reads what sticks, restores the BAR (both halves of a
    /// 64-bit BAR) and the Command register. `None` when the BAR is unimplemented (reads back
    /// 0) or is the upper half of a 64-bit BAR the caller should have skipped.
    pub fn probe_bar(&self, index: u8) -> Option<BarProbe> {
        let command = self.command();
        self.set_command(command.without(Command::IO_SPACE.with(Command::MEMORY_SPACE)));
        let original = self.bar_register(index);
        self.set_bar_register(index, !0);
        let low = self.bar_register(index);
        self.set_bar_register(index, original);
        let kind = BarKind::from_register(original);
        let high = if kind == BarKind::Memory64 && index < 5 {
            let original_high = self.bar_register(index + 1);
            self.set_bar_register(index + 1, !0);
            let high = self.bar_register(index + 1);
            self.set_bar_register(index + 1, original_high);
            high
        } else {
            0
        };
        self.set_command(command);
        if low == 0 {
            return None;
        }
        // The size is the lowest address bit that stuck (an I/O BAR may not implement the
        // upper 16 bits, so the complement of the whole mask would not do).
        let mask = ((high as u64) << 32) | (low & kind.address_mask()) as u64;
        if mask == 0 {
            return None;
        }
        Some(BarProbe {
            index,
            kind,
            prefetchable: kind != BarKind::Io && original & 0x8 != 0,
            size: 1 << mask.trailing_zeros(),
            low_readback: low,
            high_readback: high,
        })
    }

    /// The PCI bus address BAR `index` holds (both halves of a 64-bit one).
    pub fn bar_address(&self, index: u8) -> u64 {
        let low = self.bar_register(index);
        let kind = BarKind::from_register(low);
        let mut address = (low & kind.address_mask()) as u64;
        if kind == BarKind::Memory64 && index < 5 {
            address |= (self.bar_register(index + 1) as u64) << 32;
        }
        address
    }
}

/// What a BAR decodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BarKind {
    /// I/O space (bit 0 set).
    Io,
    /// 32-bit memory space (type 00).
    Memory32,
    /// Memory below 1 MiB (type 01, legacy).
    MemoryBelow1M,
    /// 64-bit memory space (type 10): this BAR and the next.
    Memory64,
    /// The reserved type 11.
    Reserved,
}

impl BarKind {
    /// The kind a BAR register's low bits encode.
    pub fn from_register(value: u32) -> BarKind {
        if value & 1 != 0 {
            return BarKind::Io;
        }
        match (value >> 1) & 3 {
            0 => BarKind::Memory32,
            1 => BarKind::MemoryBelow1M,
            2 => BarKind::Memory64,
            _ => BarKind::Reserved,
        }
    }

    /// The address bits of the BAR register (the rest are type bits).
    pub fn address_mask(self) -> u32 {
        if self == BarKind::Io { !0x3 } else { !0xf }
    }

    /// The address space the BAR decodes in.
    pub fn space(self) -> Space {
        match self {
            BarKind::Io => Space::Io,
            BarKind::Memory64 => Space::Memory64,
            _ => Space::Memory32,
        }
    }
}

/// A function's MSI capability (kvm-unit-tests' `pci_setup_msi`, `pci_msi_set_enable`).
#[derive(Clone, Copy, Debug)]
pub struct Msi {
    config: ConfigSpace,
    offset: u16,
}

impl Msi {
    /// The capability's offset in configuration space.
    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// Message Control.
    pub fn control(&self) -> u16 {
        self.config.read_u16(self.offset + msi::CONTROL)
    }

    /// Whether the function takes a 64-bit message address.
    pub fn is_64bit(&self) -> bool {
        self.control() & msi::CONTROL_64BIT != 0
    }

    /// Whether MSI is enabled (the function then signals interrupts by message, not INTx).
    pub fn is_enabled(&self) -> bool {
        self.control() & msi::CONTROL_ENABLE != 0
    }

    /// Sets or clears MSI Enable, keeping the rest of Message Control.
    pub fn set_enabled(&self, enabled: bool) {
        let control = self.control();
        let control = if enabled {
            control | msi::CONTROL_ENABLE
        } else {
            control & !msi::CONTROL_ENABLE
        };
        self.config.write_u16(self.offset + msi::CONTROL, control)
    }

    /// The message address and data as programmed.
    pub fn message(&self) -> (u64, u32) {
        let low = u64::from(self.config.read_u32(self.offset + msi::ADDRESS_LOW));
        if self.is_64bit() {
            let high = u64::from(self.config.read_u32(self.offset + msi::ADDRESS_HIGH));
            (high << 32 | low, self.config.read_u32(self.offset + msi::DATA_64))
        } else {
            (low, self.config.read_u32(self.offset + msi::DATA_32))
        }
    }

    /// Programs the message (one vector: Multiple Message Enable stays 0) and enables MSI.
    /// Returns false, programming nothing, when `address` needs 64 bits and the function has
    /// only 32.
    pub fn configure(&self, address: u64, data: u32) -> bool {
        if !self.is_64bit() && address >> 32 != 0 {
            return false;
        }
        self.config
            .write_u32(self.offset + msi::ADDRESS_LOW, address as u32);
        if self.is_64bit() {
            self.config
                .write_u32(self.offset + msi::ADDRESS_HIGH, (address >> 32) as u32);
            self.config.write_u32(self.offset + msi::DATA_64, data);
        } else {
            self.config.write_u32(self.offset + msi::DATA_32, data);
        }
        self.set_enabled(true);
        true
    }
}

/// What sizing a BAR found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BarProbe {
    /// The BAR's index (the lower one of a 64-bit pair).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// Prefetchable (memory BARs, bit 3).
    pub prefetchable: bool,
    /// The size in bytes.
    pub size: u64,
    /// The BAR register read back after writing all ones.
    pub low_readback: u32,
    /// The upper half of a 64-bit BAR read back after writing all ones (0 for others).
    pub high_readback: u32,
}

/// An address space a host bridge forwards.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Space {
    /// I/O space.
    Io,
    /// Memory space below 4 GiB (32-bit BARs).
    Memory32,
    /// Memory space anywhere (64-bit BARs).
    Memory64,
}

/// A range of PCI addresses the host bridge forwards, and where the CPU reaches it (a device
/// tree `ranges` entry).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Window {
    /// The PCI address space.
    pub space: Space,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// The first PCI bus address.
    pub pci_address: u64,
    /// The CPU physical address of `pci_address`.
    pub cpu_address: u64,
    /// The size in bytes.
    pub size: u64,
}

impl Window {
    /// The CPU address of `pci_address`, if this window holds it.
    pub fn translate(&self, pci_address: u64) -> Option<u64> {
        let offset = pci_address.checked_sub(self.pci_address)?;
        (offset < self.size).then_some(self.cpu_address + offset)
    }
}

/// The most windows kept of a host bridge.
pub const MAX_WINDOWS: usize = 8;

/// A host bridge as the platform describes it.
#[derive(Clone, Debug)]
pub struct HostBridgeDescription {
    /// How configuration space is reached: through the ECAM region below, or the
    /// architecture's ports (then the ECAM fields are 0).
    pub mechanism: ConfigMechanism,
    /// The ECAM region's CPU physical address (bus `bus_start`'s configuration space).
    pub ecam_base: u64,
    /// The ECAM region's size.
    pub ecam_size: u64,
    /// The first bus number.
    pub bus_start: u8,
    /// The last bus number.
    pub bus_end: u8,
    /// The windows (the first [`MAX_WINDOWS`]).
    pub windows: heapless::Vec<Window, MAX_WINDOWS>,
}

/// Why [`HostBridge::probe`] failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProbeError {
    /// The platform describes no ECAM host bridge.
    NoHostBridge,
    /// The ECAM region is smaller than its bus range needs (1 MiB a bus).
    EcamTooSmall,
    /// The ECAM region could not be mapped.
    Map(MapError),
}

/// Why a BAR got no address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AssignError {
    /// The host bridge has no window of the BAR's space.
    NoWindow(Space),
    /// The window is full.
    WindowFull(Space),
    /// The function's header has no BARs of its own (a reserved layout).
    NoBars,
}

/// A BAR with the address [`HostBridge::assign_bars`] gave it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Bar {
    /// What sizing found.
    pub probe: BarProbe,
    /// The PCI bus address written to the BAR.
    pub pci_address: u64,
    /// The CPU physical address it is reached at.
    pub cpu_address: u64,
}

/// A function found by enumeration.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    /// Its configuration space.
    pub config: ConfigSpace,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class code.
    pub class_code: ClassCode,
    /// Header type.
    pub header_type: HeaderType,
}

impl Function {
    /// Its address.
    pub fn address(&self) -> Address {
        self.config.address()
    }
}

/// An ECAM host bridge, its ECAM mapped, with the state of BAR assignment.
#[derive(Debug)]
pub struct HostBridge {
    description: HostBridgeDescription,
    ecam: Option<DeviceWindow>,
    /// Bytes handed out of each window so far.
    allocated: [u64; MAX_WINDOWS],
}

impl HostBridge {
    /// Finds the platform's host bridge and maps its ECAM region (if it has one).
    pub fn probe() -> Result<HostBridge, ProbeError> {
        let description = crate::arch::pci::host_bridge().ok_or(ProbeError::NoHostBridge)?;
        let buses = description.bus_end as u64 - description.bus_start as u64 + 1;
        let ecam = match description.mechanism {
            ConfigMechanism::Ports => None,
            ConfigMechanism::Ecam => {
                if description.ecam_size < buses << 20 {
                    return Err(ProbeError::EcamTooSmall);
                }
                Some(
                    crate::arch::mmu::map_device(description.ecam_base, buses << 20)
                        .map_err(ProbeError::Map)?,
                )
            }
        };
        Ok(HostBridge {
            description,
            ecam,
            allocated: [0; MAX_WINDOWS],
        })
    }

    /// The description the platform gave.
    pub fn description(&self) -> &HostBridgeDescription {
        &self.description
    }

    /// The window on the ECAM region (`None` for a port-mechanism host bridge).
    pub fn ecam(&self) -> Option<DeviceWindow> {
        self.ecam
    }

    /// The configuration space of `address`, or `None` outside the bus range or for a device
    /// or function number out of range.
    pub fn config(&self, address: Address) -> Option<ConfigSpace> {
        let description = &self.description;
        if !(description.bus_start..=description.bus_end).contains(&address.bus)
            || address.device >= 32
            || address.function >= 8
        {
            return None;
        }
        let relative = Address {
            bus: address.bus - description.bus_start,
            ..address
        };
        let access = match self.ecam {
            Some(ecam) => ConfigAccess::Ecam(ecam.window(relative.ecam_offset(), 4096)?),
            None => ConfigAccess::Ports,
        };
        Some(ConfigSpace { address, access })
    }

    /// Every function that answers on the bridge's buses: functions 1..8 of a device only when
    /// function 0 says it is multi-function.
    pub fn functions(&self) -> Vec<Function> {
        let mut found = Vec::new();
        for bus in self.description.bus_start..=self.description.bus_end {
            for device in 0..32 {
                for function in 0..8 {
                    let Some(config) = self.config(Address {
                        bus,
                        device,
                        function,
                    }) else {
                        continue;
                    };
                    if !config.exists() {
                        if function == 0 {
                            break;
                        }
                        continue;
                    }
                    let header_type = config.header_type();
                    found.push(Function {
                        config,
                        vendor_id: config.vendor_id(),
                        device_id: config.device_id(),
                        class_code: config.class_code(),
                        header_type,
                    });
                    if function == 0 && !header_type.multifunction {
                        break;
                    }
                }
            }
        }
        found
    }

    /// The first function with these IDs (kvm-unit-tests' `pci_find_dev`).
    pub fn find(&self, vendor_id: u16, device_id: u16) -> Option<Function> {
        self.functions()
            .into_iter()
            .find(|function| function.vendor_id == vendor_id && function.device_id == device_id)
    }

    /// The CPU address of `pci_address` in `space`.
    pub fn translate(&self, space: Space, pci_address: u64) -> Option<u64> {
        self.description
            .windows
            .iter()
            .filter(|window| window.space == space)
            .find_map(|window| window.translate(pci_address))
    }

    /// Gives every implemented BAR of `function` an address from the window of its space
    /// (a 64-bit BAR from the 64-bit window, else the 32-bit one), naturally aligned, writes
    /// it, and enables what the function decodes: the Command register becomes SERR# and
    /// Parity Error Response plus Memory and I/O Space for the kinds of BAR assigned, as
    /// kvm-unit-tests' `pci_probe` does. Returns the BARs in index order.
    pub fn assign_bars(&mut self, function: &Function) -> Result<Vec<Bar>, AssignError> {
        let config = function.config;
        let count = function.header_type.bar_count();
        if count == 0 {
            return Err(AssignError::NoBars);
        }
        let mut bars = Vec::new();
        let mut command = Command::SERR.with(Command::PARITY_ERROR_RESPONSE);
        let mut index = 0;
        while index < count {
            let Some(probe) = config.probe_bar(index) else {
                index += 1;
                continue;
            };
            let (pci_address, cpu_address) = self.allocate(probe)?;
            config.set_bar_register(
                index,
                pci_address as u32 | (config.bar_register(index) & !probe.kind.address_mask()),
            );
            if probe.kind == BarKind::Memory64 {
                config.set_bar_register(index + 1, (pci_address >> 32) as u32);
            }
            command = command.with(if probe.kind == BarKind::Io {
                Command::IO_SPACE
            } else {
                Command::MEMORY_SPACE
            });
            bars.push(Bar {
                probe,
                pci_address,
                cpu_address,
            });
            index += if probe.kind == BarKind::Memory64 { 2 } else { 1 };
        }
        config.set_command(command);
        Ok(bars)
    }

    /// Takes a naturally aligned range for `probe` from the first window of its space
    /// (64-bit BARs fall back to the 32-bit window).
    fn allocate(&mut self, probe: BarProbe) -> Result<(u64, u64), AssignError> {
        let wanted = probe.kind.space();
        let spaces: &[Space] = if wanted == Space::Memory64 {
            &[Space::Memory64, Space::Memory32]
        } else {
            core::slice::from_ref(match wanted {
                Space::Io => &Space::Io,
                _ => &Space::Memory32,
            })
        };
        for &space in spaces {
            let Some(slot) = self
                .description
                .windows
                .iter()
                .position(|window| window.space == space)
            else {
                continue;
            };
            let window = self.description.windows[slot];
            let start = (window.pci_address + self.allocated[slot]).next_multiple_of(probe.size);
            let end = start + probe.size;
            if end > window.pci_address + window.size {
                return Err(AssignError::WindowFull(space));
            }
            self.allocated[slot] = end - window.pci_address;
            let cpu = window.cpu_address + (start - window.pci_address);
            return Ok((start, cpu));
        }
        Err(AssignError::NoWindow(wanted))
    }

    /// Maps `bar`'s CPU range as device memory (an I/O BAR through the memory-mapped I/O
    /// window).
    pub fn map_bar(&self, bar: &Bar) -> Result<DeviceWindow, MapError> {
        crate::arch::mmu::map_device(bar.cpu_address, bar.probe.size)
    }
}
