//! The device tree QEMU hands the guest: what every test needs of it, read once at boot into a
//! plain [`Platform`]; what only some tests use (the PCI host bridge, the GICv3 ITS, the timer
//! and PMU interrupts) is read from the DTB when first asked for, so that a test which never
//! asks links none of that parsing (the boot keeps the DTB out of the memory it gives to the
//! allocators).

use fdt::Fdt;

use super::smp::MAX_CPUS;
use crate::pci::{HostBridgeDescription, Space, Window};

/// The RAM base of QEMU's `virt` machine, where it puts the DTB of an ELF kernel.
pub const VIRT_RAM_BASE: u64 = 0x4000_0000;
/// The DTB header's magic number (big-endian in memory).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// The most memory ranges kept.
pub const MAX_MEMORY_RANGES: usize = 8;
/// The longest kernel command line kept, in bytes.
const BOOTARGS_CAPACITY: usize = 1024;

/// How PSCI calls reach the firmware (the DTB's `/psci` `method`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PsciConduit {
    /// `hvc #0`.
    Hvc,
    /// `smc #0`.
    Smc,
}

/// The interrupt controller the DTB describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GicInfo {
    /// 2 or 3.
    pub version: u8,
    /// The distributor's base address.
    pub distributor: u64,
    /// GICv3: the first redistributor region's base; GICv2: the CPU interface's base.
    pub redistributor: u64,
    /// The size of that region.
    pub redistributor_size: u64,
}

impl GicInfo {
    /// GICv3: the first ITS (`arm,gic-v3-its`, a child of the GIC node on `virt`): its base
    /// address and the size of its register frames. Read from the DTB on the first call.
    pub fn its(&self) -> Option<(u64, u64)> {
        *ITS.call_once(|| {
            let fdt = platform().device_tree()?;
            if self.version == 3 { its(&fdt) } else { None }
        })
    }
}

/// The ITS as read from the DTB (see [`GicInfo::its`]).
static ITS: spin::Once<Option<(u64, u64)>> = spin::Once::new();
/// The timers' PPIs as read from the DTB (see [`Platform::timer_interrupts`]).
static TIMER_INTERRUPTS: spin::Once<TimerInterrupts> = spin::Once::new();
/// The PMU's interrupt as read from the DTB (see [`Platform::pmu_interrupt`]).
static PMU_INTERRUPT: spin::Once<Option<u32>> = spin::Once::new();
/// The PCI host bridge as read from the DTB (see [`Platform::pci_host`]).
static PCI_HOST: spin::Once<Option<HostBridgeDescription>> = spin::Once::new();

/// The machine as the device tree describes it.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Where the DTB was found.
    pub dtb_address: u64,
    /// RAM ranges `(start, end)` (the first [`MAX_MEMORY_RANGES`]).
    memory: heapless::Vec<(u64, u64), MAX_MEMORY_RANGES>,
    /// The MPIDR affinity (the `reg` of each `/cpus/cpu@N`), in DTB order: CPU index -> MPIDR,
    /// for the first [`MAX_CPUS`] CPUs.
    mpidrs: heapless::Vec<u64, MAX_CPUS>,
    /// How many CPUs the DTB lists in all (may exceed [`MAX_CPUS`]).
    pub cpus_listed: usize,
    /// The PL011 UART's base address.
    pub uart: Option<u64>,
    /// The GIC.
    pub gic: Option<GicInfo>,
    /// The PSCI conduit.
    pub psci: Option<PsciConduit>,
    /// The initrd's `(start, end)` from `/chosen`.
    pub initrd: Option<(u64, u64)>,
    /// QEMU's fw_cfg device's base address.
    pub fw_cfg: Option<u64>,
    /// The DTB's size in bytes (its header's `totalsize`): the boot keeps
    /// `dtb_address..dtb_address + dtb_size` out of the allocators' memory, so that the DTB
    /// can still be read after boot.
    pub dtb_size: u64,
    bootargs: heapless::String<BOOTARGS_CAPACITY>,
}

impl Platform {
    /// The RAM ranges.
    pub fn memory(&self) -> &[(u64, u64)] {
        &self.memory
    }

    /// The total RAM size in bytes.
    pub fn memory_size(&self) -> u64 {
        self.memory().iter().map(|(start, end)| end - start).sum()
    }

    /// The MPIDRs of the CPUs the runtime can use.
    pub fn mpidrs(&self) -> &[u64] {
        &self.mpidrs
    }

    /// The DTB, read again (it stays intact: see [`Platform::dtb_size`]); `None` if it no
    /// longer parses.
    fn device_tree(&self) -> Option<Fdt<'static>> {
        // SAFETY: `dtb_address` held a DTB with the right magic at boot (`init`), in
        // identity-mapped RAM that the boot leaves out of the allocators' memory and that
        // nothing else writes; `from_ptr` checks the header again.
        unsafe { Fdt::from_ptr(self.dtb_address as usize as *const u8) }.ok()
    }

    /// The EL1 timers' PPIs as INTIDs: (non-secure physical, virtual). Read from the DTB on the
    /// first call (with [`Platform::hypervisor_timer_interrupts`]).
    pub fn timer_interrupts(&self) -> Option<(u32, u32)> {
        self.timers().timer_interrupts
    }

    /// The EL2 timers' PPIs as INTIDs, where the DTB lists them: (EL2 physical, CNTHP_*;
    /// EL2 virtual, CNTHV_*). Read from the DTB on the first call.
    pub fn hypervisor_timer_interrupts(&self) -> (Option<u32>, Option<u32>) {
        self.timers().hypervisor_timer_interrupts
    }

    fn timers(&self) -> &'static TimerInterrupts {
        TIMER_INTERRUPTS.call_once(|| {
            self.device_tree()
                .map(|fdt| timer_interrupts(&fdt))
                .unwrap_or_default()
        })
    }

    /// The PMU's overflow interrupt (a PPI) as an INTID, read from the DTB on the first call.
    pub fn pmu_interrupt(&self) -> Option<u32> {
        *PMU_INTERRUPT.call_once(|| pmu_interrupt(&self.device_tree()?))
    }

    /// The first `pci-host-ecam-generic` host bridge, read from the DTB on the first call.
    pub fn pci_host(&self) -> Option<&HostBridgeDescription> {
        PCI_HOST.call_once(|| pci_host(&self.device_tree()?)).as_ref()
    }

    /// `/chosen/bootargs` (QEMU's `-append`), empty when absent.
    pub fn bootargs(&self) -> &str {
        &self.bootargs
    }
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// The platform read at boot.
///
/// # Panics
/// Before boot has read the device tree (never, for test code).
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("the device tree is read at boot")
}

/// The platform, or `None` before boot has read the device tree (or when it could not).
pub fn try_platform() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// Finds the DTB (at `x0`, or at RAM base for an ELF kernel) and reads the platform from it.
/// Returns a description of the problem when there is no usable DTB or it lacks a required node.
pub(crate) fn init(x0: u64) -> Result<&'static Platform, &'static str> {
    let address = [x0, VIRT_RAM_BASE]
        .into_iter()
        .find(|&address| address != 0 && has_magic(address))
        .ok_or(
            "no device tree: neither x0 nor RAM base holds a DTB (is the image linked 1 MiB above RAM?)",
        )?;
    // SAFETY: a DTB header with the right magic sits at `address` in identity-mapped RAM that
    // nothing writes before the platform has been copied out of it.
    let fdt = unsafe { Fdt::from_ptr(address as usize as *const u8) }.map_err(|_| "the DTB is malformed")?;
    let platform = read(&fdt, address)?;
    Ok(PLATFORM.call_once(|| platform))
}

fn has_magic(address: u64) -> bool {
    // SAFETY: both candidates lie in RAM, which the boot map covers; the read is aligned.
    let word = unsafe { (address as usize as *const u32).read_volatile() };
    u32::from_be(word) == FDT_MAGIC
}

fn read(fdt: &Fdt<'_>, dtb_address: u64) -> Result<Platform, &'static str> {
    let mut platform = Platform {
        dtb_address,
        memory: heapless::Vec::new(),
        mpidrs: heapless::Vec::new(),
        cpus_listed: 0,
        uart: None,
        gic: None,
        psci: None,
        initrd: None,
        dtb_size: fdt.total_size() as u64,
        fw_cfg: None,
        bootargs: heapless::String::new(),
    };
    // `Fdt::memory()` and `cpus()` panic when the nodes are missing: walk the nodes instead.
    for node in fdt.all_nodes() {
        let is_memory = node
            .property("device_type")
            .and_then(|property| property.as_str())
            == Some("memory");
        if !is_memory {
            continue;
        }
        for region in node.reg().into_iter().flatten() {
            let start = region.starting_address as u64;
            let size = region.size.unwrap_or(0) as u64;
            if size > 0 {
                // Ranges beyond the capacity are left out.
                let _ = platform.memory.push((start, start + size));
            }
        }
    }
    if platform.memory.is_empty() {
        return Err("the DTB has no memory node with a non-empty reg");
    }
    let cpus = fdt.find_node("/cpus").ok_or("the DTB has no /cpus node")?;
    for cpu in cpus.children() {
        let is_cpu = cpu.property("device_type").and_then(|property| property.as_str()) == Some("cpu");
        let Some(mpidr) = cpu.property("reg").and_then(|property| property.as_usize()) else {
            continue;
        };
        if !is_cpu {
            continue;
        }
        // CPUs beyond MAX_CPUS are counted but not used.
        let _ = platform.mpidrs.push(mpidr as u64);
        platform.cpus_listed += 1;
    }
    if platform.mpidrs.is_empty() {
        return Err("the DTB's /cpus lists no cpu with a reg");
    }
    platform.uart = fdt
        .find_compatible(&["arm,pl011"])
        .and_then(|node| node.reg()?.next())
        .map(|region| region.starting_address as u64);
    platform.gic = gic(fdt);
    platform.fw_cfg = fdt
        .find_compatible(&["qemu,fw-cfg-mmio"])
        .and_then(|node| node.reg()?.next())
        .map(|region| region.starting_address as u64);
    platform.psci = fdt
        .find_node("/psci")
        .and_then(|node| node.property("method")?.as_str())
        .and_then(|method| match method {
            "hvc" => Some(PsciConduit::Hvc),
            "smc" => Some(PsciConduit::Smc),
            _ => None,
        });
    if let Some(chosen) = fdt.find_node("/chosen") {
        let cell = |name| chosen.property(name).and_then(|property| property.as_usize());
        if let (Some(start), Some(end)) = (cell("linux,initrd-start"), cell("linux,initrd-end")) {
            platform.initrd = (end > start).then_some((start as u64, end as u64));
        }
        if let Some(arguments) = chosen.property("bootargs").and_then(|property| property.as_str()) {
            // Cut at a character boundary to the capacity.
            let mut length = arguments.len().min(BOOTARGS_CAPACITY);
            while !arguments.is_char_boundary(length) {
                length -= 1;
            }
            let _ = platform.bootargs.push_str(&arguments[..length]);
        }
    }
    Ok(platform)
}

/// The timer node's PPIs (INTIDs).
#[derive(Clone, Copy, Default)]
struct TimerInterrupts {
    /// (non-secure physical, virtual).
    timer_interrupts: Option<(u32, u32)>,
    /// (EL2 physical, EL2 virtual).
    hypervisor_timer_interrupts: (Option<u32>, Option<u32>),
}

/// The `arm,armv8-timer` node's `interrupts`: four or five of three cells (type, number,
/// flags): secure physical, non-secure physical, virtual, EL2 physical and (QEMU lists it where
/// EL2 is enabled) EL2 virtual. PPI n is INTID 16 + n.
fn timer_interrupts(fdt: &Fdt<'_>) -> TimerInterrupts {
    let mut numbers = [None; 5];
    if let Some(property) = fdt
        .find_compatible(&["arm,armv8-timer", "arm,armv7-timer"])
        .and_then(|node| node.property("interrupts"))
    {
        let mut cells = property
            .value
            .chunks_exact(4)
            .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        for number in &mut numbers {
            let (Some(_kind), Some(value), Some(_flags)) = (cells.next(), cells.next(), cells.next()) else {
                break;
            };
            *number = Some(16 + value);
        }
    }
    TimerInterrupts {
        timer_interrupts: numbers[1].zip(numbers[2]),
        hypervisor_timer_interrupts: (numbers[3], numbers[4]),
    }
}

/// The PMU node's interrupt: one of three cells (type, number, flags); type 1 is a PPI,
/// INTID 16 + n.
fn pmu_interrupt(fdt: &Fdt<'_>) -> Option<u32> {
    let node = fdt.find_compatible(&["arm,armv8-pmuv3", "arm,cortex-a15-pmu"])?;
    let mut cells = node
        .property("interrupts")?
        .value
        .chunks_exact(4)
        .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    let (kind, number) = (cells.next()?, cells.next()?);
    (kind == 1).then_some(16 + number)
}

/// The `pci-host-ecam-generic` node (Linux's host-generic-pci binding, QEMU `virt`'s `pcie@`):
/// `reg` is the ECAM region (with `highmem` QEMU puts it above 4 GiB), `bus-range` (0..=255
/// when absent) the buses it covers, and each `ranges` entry a window: the PCI address in
/// three cells (phys.hi `npt000ss bbbbbbbb dddddfff rrrrrrrr`, ss = 1 I/O, 2 32-bit memory,
/// 3 64-bit memory, p = prefetchable; then 64 address bits), the CPU address in the root's
/// address cells (the node's parent is the root on `virt`), the size in two cells.
fn pci_host(fdt: &Fdt<'_>) -> Option<HostBridgeDescription> {
    let node = fdt.find_compatible(&["pci-host-ecam-generic"])?;
    let ecam = node.reg()?.next()?;
    let (bus_start, bus_end) = match node.property("bus-range") {
        Some(property) => {
            let cells = cells(property.value);
            let start = u8::try_from(*cells.first()?).ok()?;
            let end = u8::try_from(*cells.get(1)?).ok()?;
            (start, end)
        }
        None => (0, 0xff),
    };
    let child = node.cell_sizes();
    let parent_address_cells = fdt.find_node("/")?.cell_sizes().address_cells;
    if child.address_cells != 3 || child.size_cells == 0 || child.size_cells > 2 || parent_address_cells > 2 {
        return None;
    }
    let entry_cells = child.address_cells + parent_address_cells + child.size_cells;
    let ranges = cells(node.property("ranges")?.value);
    let join = |cells: &[u32]| cells.iter().fold(0u64, |value, &cell| value << 32 | cell as u64);
    let mut windows = heapless::Vec::new();
    for entry in ranges.chunks_exact(entry_cells) {
        let high = entry[0];
        let space = match (high >> 24) & 3 {
            1 => Space::Io,
            2 => Space::Memory32,
            3 => Space::Memory64,
            _ => continue, // configuration space: not a window
        };
        let cpu_end = 3 + parent_address_cells;
        // Windows beyond the capacity are left out.
        let _ = windows.push(Window {
            space,
            prefetchable: high & (1 << 30) != 0,
            pci_address: join(&entry[1..3]),
            cpu_address: join(&entry[3..cpu_end]),
            size: join(&entry[cpu_end..]),
        });
    }
    Some(HostBridgeDescription {
        mechanism: crate::pci::ConfigMechanism::Ecam,
        ecam_base: ecam.starting_address as u64,
        ecam_size: ecam.size.unwrap_or(0) as u64,
        bus_start,
        bus_end,
        windows,
    })
}

/// A property's value as big-endian 32-bit cells (at most 64 of them).
fn cells(value: &[u8]) -> heapless::Vec<u32, 64> {
    value
        .chunks_exact(4)
        .take(64)
        .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect()
}

fn gic(fdt: &Fdt<'_>) -> Option<GicInfo> {
    let (version, node) = if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
        (3, node)
    } else {
        (2, fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400"])?)
    };
    let mut regions = node.reg()?;
    let distributor = regions.next()?;
    let second = regions.next()?;
    Some(GicInfo {
        version,
        distributor: distributor.starting_address as u64,
        redistributor: second.starting_address as u64,
        redistributor_size: second.size.unwrap_or(0) as u64,
    })
}

/// The first `arm,gic-v3-its` node's first `reg` region: its base and size. On `virt` the ITS
/// is a child of the GIC node; elsewhere it may sit anywhere in the tree.
fn its(fdt: &Fdt<'_>) -> Option<(u64, u64)> {
    let gic = fdt.find_compatible(&["arm,gic-v3"])?;
    gic.children()
        .chain(fdt.all_nodes())
        .find(|child| {
            child
                .compatible()
                .is_some_and(|compatible| compatible.all().any(|name| name == "arm,gic-v3-its"))
        })
        .and_then(|its| its.reg()?.next())
        .map(|region| (region.starting_address as u64, region.size.unwrap_or(0) as u64))
}
