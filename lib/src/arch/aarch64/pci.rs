//! Where aarch64 finds its PCI host bridge: the device tree's `pci-host-ecam-generic` node
//! (see `device_tree::Platform::pci_host`). The generic `crate::pci` does the rest.

use crate::pci::{Address, HostBridgeDescription};

/// The host bridge the device tree describes, if any.
pub fn host_bridge() -> Option<HostBridgeDescription> {
    super::device_tree::platform().pci_host().cloned()
}

/// aarch64 has no port mechanism for configuration space (its host bridges are ECAM only, and
/// no description says `ConfigMechanism::Ports`): every read is all ones.
pub fn config_port_read(_address: Address, _offset: u8, _width: u8) -> u32 {
    u32::MAX
}

/// aarch64 has no port mechanism: the write goes nowhere (see [`config_port_read`]).
pub fn config_port_write(_address: Address, _offset: u8, _width: u8, _value: u32) {}
