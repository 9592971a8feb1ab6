//! Where aarch64 finds its PCI host bridge: the device tree's `pci-host-ecam-generic` node
//! (see `device_tree::Platform::pci_host`). The generic `crate::pci` does the rest.

use crate::pci::HostBridgeDescription;

/// The host bridge the device tree describes, if any.
pub fn host_bridge() -> Option<HostBridgeDescription> {
    super::device_tree::platform().pci_host.clone()
}
