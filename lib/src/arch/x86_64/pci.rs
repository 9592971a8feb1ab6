//! Where x86_64 finds its PCI host bridge: nowhere yet. The runner's machine (`microvm`) has
//! no PCI; an ECAM host bridge on `q35` would come from ACPI's MCFG table, which the runtime
//! does not read yet, so `crate::pci::HostBridge::probe` reports `NoHostBridge`.

use crate::pci::HostBridgeDescription;

/// The ECAM host bridge the firmware describes: none until the runtime reads ACPI's MCFG.
pub fn host_bridge() -> Option<HostBridgeDescription> {
    None
}
