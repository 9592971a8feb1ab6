//! The GIC, version 2 or 3 as the device tree says, behind one API: the distributor, the
//! GICv3 redistributors and system-register CPU interface (ICC_* through `mrs`/`msr`, which
//! aarch64-cpu lacks) or the GICv2 memory-mapped CPU interface (GICC_*); IRQ dispatch to
//! per-INTID handlers (SGIs, PPIs, SPIs and the first LPIs); enable, priority, target, pending
//! and active state of SGIs, PPIs and SPIs; SGIs to one CPU, a list, all but self or self;
//! acknowledge, EOI and deactivation. [`its`] adds the GICv3 ITS and LPIs.
//!
//! GICv2 runs every interrupt in group 0 (signalled as IRQ: no Security Extensions on `virt`,
//! GICC_CTLR.FIQEn clear); GICv3 runs every interrupt in group 1 with affinity routing.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use super::device_tree::{GicInfo, platform};

pub mod its;
use super::smp::{MAX_CPUS, cpu_count, cpu_index, mpidr_of};

/// The GIC architecture version the device tree describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    /// GICv2: `arm,cortex-a15-gic` or `arm,gic-400`, memory-mapped CPU interface.
    V2,
    /// GICv3: `arm,gic-v3`, redistributors and the system-register CPU interface.
    V3,
}

impl Version {
    /// 2 or 3.
    pub fn number(self) -> u32 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Distributor registers (offsets from GICD's base; the INTID-indexed ones hold one bit, or
/// one byte for IPRIORITYR and ITARGETSR, per INTID).
#[allow(missing_docs)]
pub mod distributor {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    /// GICv2 only: one byte of CPU-interface targets per INTID.
    pub const ITARGETSR: u64 = 0x0800;
    pub const ICFGR: u64 = 0x0c00;
    /// GICv2 only: the software-generated interrupt register.
    pub const SGIR: u64 = 0x0f00;
    /// GICv2 only: SGI clear-pending, one byte of source CPUs per SGI.
    pub const CPENDSGIR: u64 = 0x0f10;
    /// GICv2 only: SGI set-pending.
    pub const SPENDSGIR: u64 = 0x0f20;
    /// GICv3 only: 64-bit affinity routes, at IROUTER + 8 × INTID for SPIs.
    pub const IROUTER: u64 = 0x6000;
    /// IROUTER.Interrupt_Routing_Mode: any participating PE (1 of N); may be RAZ/WI.
    pub const IROUTER_ANY: u64 = 1 << 31;
    /// GICv2's peripheral ID 2 (ICPIDR2).
    pub const PIDR2_V2: u64 = 0x0fe8;
    /// GICv3's peripheral ID 2.
    pub const PIDR2: u64 = 0xffe8;
    /// The size of a GICv3 distributor's register frame.
    pub const FRAME_SIZE: u64 = 0x1_0000;
    /// The size of a GICv2 distributor's register frame.
    pub const FRAME_SIZE_V2: u64 = 0x1000;
    /// CTLR: EnableGrp0 (GICv2 without Security Extensions: group 0 forwarding).
    pub const CTLR_ENABLE_GROUP0: u32 = 1 << 0;
    /// CTLR: EnableGrp1 (non-secure view / single security state).
    pub const CTLR_ENABLE_GROUP1: u32 = 1 << 1;
    /// CTLR: affinity routing enabled (GICv3).
    pub const CTLR_ARE: u32 = 1 << 4;
    /// CTLR: register write pending (GICv3).
    pub const CTLR_RWP: u32 = 1 << 31;
    /// The first SPI's INTID, and so the first SPI's byte in IPRIORITYR and ITARGETSR.
    pub const FIRST_SPI: u64 = 32;
    /// SGIR.TargetListFilter (bits 25:24): send to the CPUTargetList.
    pub const SGIR_TARGET_LIST: u32 = 0 << 24;
    /// SGIR.TargetListFilter: send to every CPU interface but the requester's.
    pub const SGIR_ALL_BUT_SELF: u32 = 1 << 24;
    /// SGIR.TargetListFilter: send to the requester's CPU interface only.
    pub const SGIR_SELF: u32 = 2 << 24;

    /// PIDR2.ArchRev (bits 7:4): 2 for a GICv2, 3 for a GICv3, 4 for a GICv4.
    pub fn architecture_revision(pidr2: u32) -> u32 {
        (pidr2 >> 4) & 0xf
    }

    /// The INTIDs TYPER.ITLinesNumber (bits 4:0) provides for: 32 × (N + 1).
    pub fn interrupt_lines(typer: u32) -> u32 {
        32 * ((typer & 0x1f) + 1)
    }

    /// GICv2: the CPU interfaces TYPER.CPUNumber (bits 7:5) says are implemented: N + 1.
    pub fn cpu_interfaces(typer: u32) -> u32 {
        ((typer >> 5) & 0x7) + 1
    }
}

/// Redistributor registers: RD_base frame, then the SGI_base frame 64 KiB above it.
#[allow(missing_docs)]
pub mod redistributor {
    pub const CTLR: u64 = 0x0000;
    /// The LPI configuration (property) table's address and size (64-bit).
    pub const PROPBASER: u64 = 0x0070;
    /// The LPI pending table's address (64-bit).
    pub const PENDBASER: u64 = 0x0078;
    /// CTLR.EnableLPIs.
    pub const CTLR_ENABLE_LPIS: u32 = 1 << 0;
    /// CTLR.RWP: a write to CTLR (EnableLPIs going 1 -> 0) has not taken effect yet.
    pub const CTLR_RWP: u32 = 1 << 3;
    /// TYPER.PLPIS: physical LPIs are supported.
    pub const TYPER_PLPIS: u64 = 1 << 0;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const SGI_BASE: u64 = 0x1_0000;
    pub const FRAME_SIZE: u64 = 0x2_0000;
    pub const IGROUPR0: u64 = SGI_BASE + 0x0080;
    pub const ISENABLER0: u64 = SGI_BASE + 0x0100;
    pub const ICENABLER0: u64 = SGI_BASE + 0x0180;
    pub const ISPENDR0: u64 = SGI_BASE + 0x0200;
    pub const ICPENDR0: u64 = SGI_BASE + 0x0280;
    pub const ISACTIVER0: u64 = SGI_BASE + 0x0300;
    pub const ICACTIVER0: u64 = SGI_BASE + 0x0380;
    pub const IPRIORITYR: u64 = SGI_BASE + 0x0400;
    /// TYPER.Last: the last redistributor of the region.
    pub const TYPER_LAST: u64 = 1 << 4;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
}

/// GICv2 CPU interface registers (offsets from GICC's base).
#[allow(missing_docs)]
pub mod cpu_interface {
    pub const CTLR: u64 = 0x0000;
    pub const PMR: u64 = 0x0004;
    pub const BPR: u64 = 0x0008;
    pub const IAR: u64 = 0x000c;
    pub const EOIR: u64 = 0x0010;
    pub const RPR: u64 = 0x0014;
    pub const IIDR: u64 = 0x00fc;
    pub const DIR: u64 = 0x1000;
    /// The CPU interface's register frames (the second holds DIR).
    pub const FRAME_SIZE: u64 = 0x2000;
    /// CTLR: EnableGrp0.
    pub const CTLR_ENABLE_GROUP0: u32 = 1 << 0;
    /// CTLR: EOImodeS: EOIR drops priority only, DIR deactivates (group 0 without Security
    /// Extensions).
    pub const CTLR_EOI_MODE: u32 = 1 << 9;
}

/// ICC_CTLR_EL1.EOImode: ICC_EOIR1_EL1 drops priority only, ICC_DIR_EL1 deactivates.
pub const ICC_CTLR_EOI_MODE: u64 = 1 << 1;

/// INTIDs of 1020 and above are special (1023: spurious, nothing pending).
pub const SPURIOUS: u32 = 1023;
/// The first special INTID.
const FIRST_SPECIAL: u32 = 1020;
/// The default priority given to every interrupt by [`init`].
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// The priority mask that lets every priority through (ICC_PMR_EL1, GICC_PMR).
pub const PRIORITY_MASK_ALLOW_ALL: u8 = 0xff;
/// The first LPI's INTID.
pub const FIRST_LPI: u32 = 8192;
/// How many LPIs, from [`FIRST_LPI`], the handler and delivery tables cover.
pub const HANDLED_LPIS: u32 = 512;
/// The handler and delivery tables' slots: every SGI, PPI and SPI (INTIDs 0-1019), then
/// the LPIs [`FIRST_LPI`] .. [`FIRST_LPI`] + [`HANDLED_LPIS`].
const HANDLED_INTIDS: usize = FIRST_SPECIAL as usize + HANDLED_LPIS as usize;
/// The first PPI and the first SPI.
const FIRST_PPI: u32 = 16;
const FIRST_SPI: u32 = 32;

#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLER: AtomicUsize = AtomicUsize::new(0);
static HANDLERS: [AtomicUsize; HANDLED_INTIDS] = [NO_HANDLER; HANDLED_INTIDS];
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU32 = AtomicU32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZEROS: [AtomicU32; HANDLED_INTIDS] = [ZERO; HANDLED_INTIDS];
/// Per CPU and slot ([`slot`]): how many times the IRQ was acknowledged by the dispatcher.
static DELIVERED: [[AtomicU32; HANDLED_INTIDS]; MAX_CPUS] = [ZEROS; MAX_CPUS];
/// Per CPU: 1 + the CPU interface number of the last SGI's sender (GICv2), 0 for none.
static LAST_SOURCE: [AtomicU32; MAX_CPUS] = [ZERO; MAX_CPUS];
/// IRQs the dispatcher acknowledged without a handler.
static UNHANDLED: AtomicU32 = AtomicU32::new(0);
/// Per CPU: IRQs the dispatcher acknowledged whose INTID has no slot (an LPI beyond the
/// handled range, or a reserved INTID).
static OUT_OF_RANGE: [AtomicU32; MAX_CPUS] = [ZERO; MAX_CPUS];
/// Per CPU: every IRQ the dispatcher acknowledged (not the spurious INTID).
static TOTAL: [AtomicU32; MAX_CPUS] = [ZERO; MAX_CPUS];

/// The handler and delivery tables' slot of `intid`: SGIs, PPIs and SPIs by INTID, the
/// handled LPIs after them; `None` for special, reserved and unhandled LPI INTIDs.
fn slot(intid: u32) -> Option<usize> {
    if intid < FIRST_SPECIAL {
        Some(intid as usize)
    } else if (FIRST_LPI..FIRST_LPI + HANDLED_LPIS).contains(&intid) {
        Some((FIRST_SPECIAL + intid - FIRST_LPI) as usize)
    } else {
        None
    }
}
static DISTRIBUTOR_READY: AtomicBool = AtomicBool::new(false);
/// GICv2: per CPU index, its CPU interface mask (one bit), read from ITARGETSR0 by [`init`]
/// on that CPU; 0 before.
static INTERFACE_MASK: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

fn read32(address: u64) -> u32 {
    // SAFETY: `address` is a GIC register in the device-mapped GIC region of the device tree
    // (the boot map makes 0..1 GiB device memory); GIC register reads used here have no side
    // effect on memory (an IAR read acknowledges, which the callers account for).
    unsafe { (address as usize as *const u32).read_volatile() }
}

fn write32(address: u64, value: u32) {
    // SAFETY: as for `read32`; GIC register writes change interrupt state only.
    unsafe { (address as usize as *mut u32).write_volatile(value) }
}

fn read64(address: u64) -> u64 {
    // SAFETY: as for `read32`.
    unsafe { (address as usize as *const u64).read_volatile() }
}

fn write64(address: u64, value: u64) {
    // SAFETY: as for `write32`.
    unsafe { (address as usize as *mut u64).write_volatile(value) }
}

fn write8(address: u64, value: u8) {
    // SAFETY: as for `write32`; used for the byte-accessible IPRIORITYR, ITARGETSR and
    // C/SPENDSGIR only.
    unsafe { (address as usize as *mut u8).write_volatile(value) }
}

fn read8(address: u64) -> u8 {
    // SAFETY: as for `read32`; byte-accessible registers only.
    unsafe { (address as usize as *const u8).read_volatile() }
}

fn gic() -> Option<GicInfo> {
    platform().gic
}

/// The GIC version the device tree describes, if it describes one.
pub fn version() -> Option<Version> {
    match gic()?.version {
        2 => Some(Version::V2),
        3 => Some(Version::V3),
        _ => None,
    }
}

fn required_version() -> Version {
    version().expect("the device tree describes no GIC")
}

/// The distributor's base address.
///
/// # Panics
/// When the device tree has no GIC.
pub fn distributor_base() -> u64 {
    gic().expect("the device tree describes no GIC").distributor
}

/// The size of the distributor's register frame: 4 KiB on GICv2, 64 KiB on GICv3.
///
/// # Panics
/// When the device tree has no GIC.
pub fn distributor_frame_size() -> u64 {
    match required_version() {
        Version::V2 => distributor::FRAME_SIZE_V2,
        Version::V3 => distributor::FRAME_SIZE,
    }
}

/// The address of the `size`-byte distributor register at `offset`: offsets are checked, so
/// that no offset reaches memory outside the distributor's frame.
///
/// # Panics
/// For an offset outside the frame or not aligned to `size`.
fn distributor_register(offset: u64, size: u64) -> u64 {
    assert!(
        offset
            .checked_add(size)
            .is_some_and(|end| end <= distributor_frame_size())
            && offset.is_multiple_of(size),
        "offset {offset:#x} is no {size}-byte register of the distributor"
    );
    distributor_base() + offset
}

/// Reads a 32-bit distributor register.
///
/// # Panics
/// For an offset outside the distributor's frame, or unaligned.
pub fn distributor_read(offset: u64) -> u32 {
    read32(distributor_register(offset, 4))
}

/// Writes a 32-bit distributor register.
///
/// # Panics
/// For an offset outside the distributor's frame, or unaligned.
pub fn distributor_write(offset: u64, value: u32) {
    write32(distributor_register(offset, 4), value);
}

/// Reads one byte of the distributor (IPRIORITYR and ITARGETSR are byte-accessible).
///
/// # Panics
/// For an offset outside the distributor's frame.
pub fn distributor_read_byte(offset: u64) -> u8 {
    read8(distributor_register(offset, 1))
}

/// Writes one byte of the distributor.
///
/// # Panics
/// For an offset outside the distributor's frame.
pub fn distributor_write_byte(offset: u64, value: u8) {
    write8(distributor_register(offset, 1), value);
}

/// How many INTIDs the distributor implements (GICD_TYPER.ITLinesNumber), at most 1020.
pub fn interrupt_lines() -> u32 {
    distributor::interrupt_lines(distributor_read(distributor::TYPER)).min(FIRST_SPECIAL)
}

/// The RD_base of the redistributor of CPU `cpu` (its GICR_TYPER affinity matches the CPU's
/// MPIDR), found by walking the redistributor region. `None` on a GICv2.
pub fn redistributor_base(cpu: usize) -> Option<u64> {
    let gic = gic().filter(|gic| gic.version == 3)?;
    let wanted = mpidr_of(cpu);
    let affinity = (wanted & 0xff_ffff) | ((wanted >> 32) & 0xff) << 24;
    let mut frame = gic.redistributor;
    while frame + redistributor::FRAME_SIZE <= gic.redistributor + gic.redistributor_size {
        let typer = read64(frame + redistributor::TYPER);
        if typer >> 32 == affinity {
            return Some(frame);
        }
        if typer & redistributor::TYPER_LAST != 0 {
            break;
        }
        frame += redistributor::FRAME_SIZE;
    }
    None
}

fn this_redistributor() -> u64 {
    redistributor_base(cpu_index()).expect("no redistributor matches this CPU's MPIDR")
}

/// The address of the 32-bit register at `offset` of this CPU's redistributor: offsets are
/// checked, so that no offset reaches memory outside its two 64 KiB frames.
///
/// # Panics
/// For an offset outside the frames or unaligned, or on a GICv2.
fn redistributor_register(offset: u64) -> u64 {
    assert!(
        offset < redistributor::FRAME_SIZE && offset.is_multiple_of(4),
        "offset {offset:#x} is no 32-bit register of the redistributor"
    );
    this_redistributor() + offset
}

/// Reads a 32-bit register of this CPU's redistributor (RD_base or SGI_base offsets).
///
/// # Panics
/// For an offset outside the redistributor's frames, or unaligned, or on a GICv2.
pub fn redistributor_read(offset: u64) -> u32 {
    read32(redistributor_register(offset))
}

/// Writes a 32-bit register of this CPU's redistributor.
///
/// # Panics
/// For an offset outside the redistributor's frames, or unaligned, or on a GICv2.
pub fn redistributor_write(offset: u64, value: u32) {
    write32(redistributor_register(offset), value);
}

/// The GICv2 CPU interface's base address; `None` on a GICv3 or without a GIC.
pub fn cpu_interface_address() -> Option<u64> {
    gic().filter(|gic| gic.version == 2).map(|gic| gic.redistributor)
}

fn cpu_interface_base() -> u64 {
    cpu_interface_address().expect("the GIC is no GICv2")
}

/// Reads a 32-bit register of the GICv2 CPU interface (this CPU's: the interface is banked).
///
/// # Panics
/// For an offset outside the interface's frames or unaligned, or on a GICv3.
pub fn cpu_interface_read(offset: u64) -> u32 {
    assert!(
        offset < cpu_interface::FRAME_SIZE && offset.is_multiple_of(4) && offset != cpu_interface::IAR,
        "offset {offset:#x} is no readable register of the CPU interface (IAR: acknowledge)"
    );
    read32(cpu_interface_base() + offset)
}

/// Writes a 32-bit register of the GICv2 CPU interface.
///
/// # Panics
/// For an offset outside the interface's frames or unaligned, or on a GICv3.
pub fn cpu_interface_write(offset: u64, value: u32) {
    assert!(
        offset < cpu_interface::FRAME_SIZE && offset.is_multiple_of(4),
        "offset {offset:#x} is no register of the CPU interface"
    );
    write32(cpu_interface_base() + offset, value);
}

macro_rules! icc_register {
    ($read:ident, $write:ident, $name:literal) => {
        #[doc = concat!("Reads ", $name, " (GICv3 only: it is UNDEFINED with a GICv2).")]
        pub fn $read() -> u64 {
            let value: u64;
            // SAFETY: reading this GIC CPU interface register is allowed at EL1 once
            // ICC_SRE_EL1.SRE is set; only IAR reads change state (they acknowledge).
            unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack)) };
            value
        }

        #[doc = concat!("Writes ", $name, " (GICv3 only).")]
        pub fn $write(value: u64) {
            // SAFETY: writing this CPU interface register changes interrupt state only.
            unsafe { asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) value, options(nomem, nostack)) };
        }
    };
}

icc_register!(icc_sre, set_icc_sre, "icc_sre_el1");
icc_register!(icc_pmr, set_icc_pmr, "icc_pmr_el1");
icc_register!(icc_bpr1, set_icc_bpr1, "icc_bpr1_el1");
icc_register!(icc_igrpen1, set_icc_igrpen1, "icc_igrpen1_el1");
icc_register!(icc_ctlr, set_icc_ctlr, "icc_ctlr_el1");

/// Reads ICC_RPR_EL1, the running priority (GICv3 only).
pub fn icc_rpr() -> u64 {
    let value: u64;
    // SAFETY: reading the running priority has no side effect; allowed at EL1 with SRE set.
    unsafe { asm!("mrs {}, icc_rpr_el1", out(reg) value, options(nomem, nostack)) };
    value
}

/// An acknowledged interrupt: what ICC_IAR1_EL1 or GICC_IAR returned. End it with
/// [`end_of_interrupt`] (and, with split EOI, [`deactivate`]) using this value: on a GICv2 the
/// EOI must carry the SGI's source CPU too.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Acknowledged {
    raw: u32,
    version: Version,
}

impl Acknowledged {
    /// The INTID ([`SPURIOUS`] when nothing was pending).
    pub fn intid(self) -> u32 {
        match self.version {
            Version::V2 => self.raw & 0x3ff,
            Version::V3 => self.raw & 0xff_ffff,
        }
    }

    /// Whether nothing was acknowledged (a special INTID, 1020-1023; LPIs are above).
    pub fn is_spurious(self) -> bool {
        (FIRST_SPECIAL..=SPURIOUS).contains(&self.intid())
    }

    /// GICv2, SGIs: the CPU index of the sender (GICC_IAR.CPUID); `None` elsewhere.
    pub fn source(self) -> Option<usize> {
        (self.version == Version::V2 && self.intid() < FIRST_PPI)
            .then(|| cpu_of_interface((self.raw >> 10) & 7))
            .flatten()
    }

    /// The register value as read.
    pub fn raw(self) -> u32 {
        self.raw
    }
}

/// The CPU index whose CPU interface number is `interface` (GICv2).
fn cpu_of_interface(interface: u32) -> Option<usize> {
    (0..cpu_count()).find(|&cpu| interface_mask(cpu) == 1 << interface)
}

/// Acknowledges the highest-priority pending interrupt (ICC_IAR1_EL1 or GICC_IAR): it
/// becomes active.
pub fn acknowledge() -> Acknowledged {
    match required_version() {
        Version::V2 => Acknowledged {
            raw: read32(cpu_interface_base() + cpu_interface::IAR),
            version: Version::V2,
        },
        Version::V3 => {
            let value: u64;
            // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the caller must end it.
            unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) value, options(nomem, nostack)) };
            Acknowledged {
                raw: (value & 0xff_ffff) as u32,
                version: Version::V3,
            }
        }
    }
}

/// Ends an acknowledged interrupt (ICC_EOIR1_EL1 or GICC_EOIR): priority drop, and also
/// deactivation unless split EOI is on ([`set_split_eoi`]).
pub fn end_of_interrupt(interrupt: Acknowledged) {
    match interrupt.version {
        Version::V2 => write32(cpu_interface_base() + cpu_interface::EOIR, interrupt.raw),
        // SAFETY: ends an interrupt this CPU acknowledged; interrupt state only.
        Version::V3 => unsafe {
            asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(interrupt.raw), options(nomem, nostack))
        },
    }
}

/// Deactivates an interrupt whose priority was dropped with split EOI on (ICC_DIR_EL1 or
/// GICC_DIR).
pub fn deactivate(interrupt: Acknowledged) {
    match interrupt.version {
        Version::V2 => write32(cpu_interface_base() + cpu_interface::DIR, interrupt.raw),
        // SAFETY: deactivates an interrupt of this CPU; interrupt state only.
        Version::V3 => unsafe {
            asm!("msr icc_dir_el1, {}", "isb", in(reg) u64::from(interrupt.raw), options(nomem, nostack))
        },
    }
}

/// Splits EOI into priority drop and deactivation on this CPU (ICC_CTLR_EL1.EOImode or
/// GICC_CTLR.EOImodeS), or joins them again. The dispatcher does not deactivate: a handler
/// that runs with split EOI on must deactivate itself.
pub fn set_split_eoi(split: bool) {
    match required_version() {
        Version::V2 => {
            let address = cpu_interface_base() + cpu_interface::CTLR;
            let control = read32(address) & !cpu_interface::CTLR_EOI_MODE;
            write32(
                address,
                control | if split { cpu_interface::CTLR_EOI_MODE } else { 0 },
            );
        }
        Version::V3 => {
            let control = icc_ctlr() & !ICC_CTLR_EOI_MODE;
            set_icc_ctlr(control | if split { ICC_CTLR_EOI_MODE } else { 0 });
        }
    }
}

/// Sets this CPU's priority mask (ICC_PMR_EL1 or GICC_PMR): only priorities numerically
/// below it are signalled.
pub fn set_priority_mask(mask: u8) {
    match required_version() {
        Version::V2 => write32(cpu_interface_base() + cpu_interface::PMR, u32::from(mask)),
        Version::V3 => set_icc_pmr(u64::from(mask)),
    }
}

/// This CPU's priority mask as read back (unimplemented low bits read as zero).
pub fn priority_mask() -> u8 {
    match required_version() {
        Version::V2 => read32(cpu_interface_base() + cpu_interface::PMR) as u8,
        Version::V3 => icc_pmr() as u8,
    }
}

/// This CPU's running priority (ICC_RPR_EL1 or GICC_RPR): the priority of the active
/// interrupt whose priority was not dropped yet, 0xff when none.
pub fn running_priority() -> u8 {
    match required_version() {
        Version::V2 => read32(cpu_interface_base() + cpu_interface::RPR) as u8,
        Version::V3 => icc_rpr() as u8,
    }
}

/// Enables the distributor (once) and this CPU's redistributor (GICv3) and CPU interface,
/// gives every interrupt [`DEFAULT_PRIORITY`], disabled, inactive and not pending, and makes
/// the GIC dispatcher the IRQ handler. Call on every CPU that takes interrupts.
pub fn init() -> Result<(), &'static str> {
    match version().ok_or("the device tree describes no GICv2 or GICv3")? {
        Version::V2 => init_v2(),
        Version::V3 => init_v3()?,
    }
    super::exceptions::set_irq_handler(Some(dispatch));
    Ok(())
}

/// The SPIs' bit registers (one bit per INTID) of the distributor: every word from INTID 32.
fn spi_words() -> impl Iterator<Item = u64> {
    (FIRST_SPI..interrupt_lines())
        .step_by(32)
        .map(|intid| u64::from(intid / 32) * 4)
}

/// Disables, unpends and deactivates every SPI and gives it the default priority.
fn reset_spis() {
    for word in spi_words() {
        distributor_write(distributor::ICENABLER + word, u32::MAX);
        distributor_write(distributor::ICPENDR + word, u32::MAX);
        distributor_write(distributor::ICACTIVER + word, u32::MAX);
    }
    for intid in FIRST_SPI..interrupt_lines() {
        distributor_write_byte(distributor::IPRIORITYR + u64::from(intid), DEFAULT_PRIORITY);
    }
}

fn init_v2() {
    // ITARGETSR0-7 read as this CPU's own interface mask, in every byte.
    let mask = distributor_read_byte(distributor::ITARGETSR);
    INTERFACE_MASK[cpu_index()].store(mask, Ordering::Release);
    if !DISTRIBUTOR_READY.swap(true, Ordering::AcqRel) {
        distributor_write(distributor::CTLR, 0);
        reset_spis();
        // Every SPI to the first CPU that initialises.
        for intid in FIRST_SPI..interrupt_lines() {
            distributor_write_byte(distributor::ITARGETSR + u64::from(intid), mask);
        }
        distributor_write(distributor::CTLR, distributor::CTLR_ENABLE_GROUP0);
    }
    // The banked SGI/PPI state: SGI enables may be fixed (RAO/WI) and SGI pending bits are
    // read-only here; CPENDSGIR clears SGIs.
    distributor_write(distributor::ICENABLER, u32::MAX);
    distributor_write(distributor::ICPENDR, u32::MAX);
    distributor_write(distributor::ICACTIVER, u32::MAX);
    for sgi in 0..FIRST_PPI {
        distributor_write_byte(distributor::CPENDSGIR + u64::from(sgi), u8::MAX);
    }
    for intid in 0..FIRST_SPI {
        distributor_write_byte(distributor::IPRIORITYR + u64::from(intid), DEFAULT_PRIORITY);
    }
    let base = cpu_interface_base();
    write32(base + cpu_interface::PMR, u32::from(PRIORITY_MASK_ALLOW_ALL));
    write32(base + cpu_interface::BPR, 0);
    write32(base + cpu_interface::CTLR, cpu_interface::CTLR_ENABLE_GROUP0);
}

fn wait_for_distributor_write() {
    while distributor_read(distributor::CTLR) & distributor::CTLR_RWP != 0 {
        core::hint::spin_loop();
    }
}

fn init_v3() -> Result<(), &'static str> {
    if !DISTRIBUTOR_READY.swap(true, Ordering::AcqRel) {
        distributor_write(distributor::CTLR, 0);
        wait_for_distributor_write();
        distributor_write(distributor::CTLR, distributor::CTLR_ARE);
        wait_for_distributor_write();
        reset_spis();
        for word in spi_words() {
            distributor_write(distributor::IGROUPR + word, u32::MAX);
        }
        let route = affinity_route(cpu_index());
        for intid in FIRST_SPI..interrupt_lines() {
            write64(
                distributor_register(distributor::IROUTER + 8 * u64::from(intid), 8),
                route,
            );
        }
        distributor_write(
            distributor::CTLR,
            distributor::CTLR_ARE | distributor::CTLR_ENABLE_GROUP1,
        );
        wait_for_distributor_write();
    }
    let base = redistributor_base(cpu_index()).ok_or("no redistributor matches this CPU's MPIDR")?;
    let waker = read32(base + redistributor::WAKER);
    write32(
        base + redistributor::WAKER,
        waker & !redistributor::WAKER_PROCESSOR_SLEEP,
    );
    while read32(base + redistributor::WAKER) & redistributor::WAKER_CHILDREN_ASLEEP != 0 {
        core::hint::spin_loop();
    }
    write32(base + redistributor::IGROUPR0, u32::MAX);
    write32(base + redistributor::ICENABLER0, u32::MAX);
    write32(base + redistributor::ICPENDR0, u32::MAX);
    write32(base + redistributor::ICACTIVER0, u32::MAX);
    for intid in 0..u64::from(FIRST_SPI) {
        write8(base + redistributor::IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    set_icc_sre(icc_sre() | 1);
    set_icc_pmr(u64::from(PRIORITY_MASK_ALLOW_ALL));
    set_icc_bpr1(0);
    set_icc_ctlr(icc_ctlr() & !ICC_CTLR_EOI_MODE);
    set_icc_igrpen1(1);
    Ok(())
}

/// GICD_IROUTER's value for CPU `cpu`: Aff3 in bits 39:32, Aff2.Aff1.Aff0 in bits 23:0.
fn affinity_route(cpu: usize) -> u64 {
    let mpidr = mpidr_of(cpu);
    (mpidr & 0xff_ffff) | (mpidr & 0xff_0000_0000)
}

/// An interrupt number: a GIC INTID (SGIs 0-15, PPIs 16-31, SPIs from 32, LPIs from 8192).
pub type InterruptNumber = u32;

/// An interrupt handler: runs with IRQs masked, with the INTID it was registered for (the CPU
/// it runs on is `smp::cpu_index()`); the GIC dispatcher acknowledges the interrupt before and
/// ends it after. It must not allocate and should only record what happened.
pub type InterruptHandler = fn(intid: InterruptNumber);

/// Installs `handler` for interrupt `intid` (below 1020, or one of the [`HANDLED_LPIS`] LPIs
/// from [`FIRST_LPI`]), or removes it with `None`, on every CPU. Interrupts reach it once
/// [`init`] has made the GIC dispatcher the IRQ handler; an interrupt without a handler is
/// counted ([`unhandled`]) and ended.
///
/// # Panics
/// For a special or reserved INTID, or an LPI beyond the handled ones.
pub fn set_interrupt_handler(intid: InterruptNumber, handler: Option<InterruptHandler>) {
    let slot = slot(intid).unwrap_or_else(|| panic!("INTID {intid} has no handler slot"));
    HANDLERS[slot].store(handler.map_or(0, |handler| handler as usize), Ordering::Release);
}

/// How many times IRQ `intid` was delivered to CPU `cpu` through the dispatcher (0 for an
/// INTID without a slot or a CPU beyond [`MAX_CPUS`]).
pub fn delivered(cpu: usize, intid: u32) -> u32 {
    let Some(slot) = slot(intid) else {
        return 0;
    };
    DELIVERED
        .get(cpu)
        .and_then(|counts| counts.get(slot))
        .map_or(0, |count| count.load(Ordering::Acquire))
}

/// How many IRQs, of any INTID, were delivered to CPU `cpu` through the dispatcher.
pub fn delivered_total(cpu: usize) -> u32 {
    TOTAL.get(cpu).map_or(0, |count| count.load(Ordering::Acquire))
}

/// How many IRQs CPU `cpu` acknowledged whose INTID has no slot (an LPI beyond the handled
/// ones, a reserved INTID): each is also counted by [`unhandled`].
pub fn delivered_out_of_range(cpu: usize) -> u32 {
    OUT_OF_RANGE
        .get(cpu)
        .map_or(0, |count| count.load(Ordering::Acquire))
}

/// GICv2: the CPU index that sent the last SGI the dispatcher took on CPU `cpu` (GICC_IAR's
/// CPUID); `None` on a GICv3 or before any.
pub fn last_sgi_source(cpu: usize) -> Option<usize> {
    let source = LAST_SOURCE.get(cpu)?.load(Ordering::Acquire);
    source.checked_sub(1).map(|cpu| cpu as usize)
}

/// How many IRQs arrived with no handler.
pub fn unhandled() -> u32 {
    UNHANDLED.load(Ordering::Acquire)
}

/// The IRQ handler: acknowledges, counts, calls the INTID's handler, ends; until spurious.
fn dispatch() {
    let cpu = cpu_index();
    loop {
        let interrupt = acknowledge();
        if interrupt.is_spurious() {
            break;
        }
        let intid = interrupt.intid();
        if let Some(source) = interrupt.source() {
            LAST_SOURCE[cpu].store(source as u32 + 1, Ordering::Release);
        }
        TOTAL[cpu].fetch_add(1, Ordering::AcqRel);
        let handler = match slot(intid) {
            Some(slot) => {
                DELIVERED[cpu][slot].fetch_add(1, Ordering::AcqRel);
                HANDLERS[slot].load(Ordering::Acquire)
            }
            None => {
                OUT_OF_RANGE[cpu].fetch_add(1, Ordering::AcqRel);
                0
            }
        };
        if handler != 0 {
            // SAFETY: nonzero entries are stored by `set_interrupt_handler` from an
            // `InterruptHandler`; a fn pointer and a usize have the same size.
            let handler = unsafe { core::mem::transmute::<usize, InterruptHandler>(handler) };
            handler(intid);
        } else {
            UNHANDLED.fetch_add(1, Ordering::AcqRel);
        }
        end_of_interrupt(interrupt);
    }
}

/// The address and bit of `intid` in the one-bit-per-INTID register `register` (a
/// distributor offset: ISENABLER ... ICACTIVER): this CPU's redistributor for SGIs and PPIs
/// on a GICv3, the distributor otherwise (banked per CPU for SGIs and PPIs on a GICv2).
///
/// # Panics
/// For an INTID the distributor does not implement.
fn bit_of(register: u64, intid: u32) -> (u64, u32) {
    assert!(
        intid < interrupt_lines(),
        "INTID {intid} is beyond the {} the distributor implements",
        interrupt_lines()
    );
    let bit = 1 << (intid % 32);
    if required_version() == Version::V3 && intid < FIRST_SPI {
        (redistributor_register(redistributor::SGI_BASE + register), bit)
    } else {
        (distributor_register(register + u64::from(intid / 32) * 4, 4), bit)
    }
}

fn set_bit(register: u64, intid: u32) {
    let (address, bit) = bit_of(register, intid);
    write32(address, bit);
}

fn test_bit(register: u64, intid: u32) -> bool {
    let (address, bit) = bit_of(register, intid);
    read32(address) & bit != 0
}

/// Enables interrupt `intid` (for an SGI or PPI: on this CPU). GICv2 may keep SGIs enabled
/// whatever is written (IMPLEMENTATION DEFINED; QEMU does).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn enable(intid: u32) {
    set_bit(distributor::ISENABLER, intid);
}

/// Disables interrupt `intid` (for an SGI or PPI: on this CPU).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn disable(intid: u32) {
    set_bit(distributor::ICENABLER, intid);
}

/// Whether interrupt `intid` is enabled (for an SGI or PPI: on this CPU).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn is_enabled(intid: u32) -> bool {
    test_bit(distributor::ISENABLER, intid)
}

/// Whether interrupt `intid` is pending (for an SGI or PPI: on this CPU).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn is_pending(intid: u32) -> bool {
    test_bit(distributor::ISPENDR, intid)
}

/// Whether interrupt `intid` is active (for an SGI or PPI: on this CPU).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn is_active(intid: u32) -> bool {
    test_bit(distributor::ISACTIVER, intid)
}

/// Makes interrupt `intid` pending (for an SGI or PPI: on this CPU). A GICv2 SGI becomes
/// pending from this CPU as source (GICD_SPENDSGIR: its ISPENDR bits are read-only).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn set_pending(intid: u32) {
    if required_version() == Version::V2 && intid < FIRST_PPI {
        let mask = interface_mask(cpu_index());
        distributor_write_byte(distributor::SPENDSGIR + u64::from(intid), mask);
    } else {
        set_bit(distributor::ISPENDR, intid);
    }
}

/// Clears the pending state of interrupt `intid` (for an SGI or PPI: on this CPU; a GICv2
/// SGI from every source, through GICD_CPENDSGIR).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn clear_pending(intid: u32) {
    if required_version() == Version::V2 && intid < FIRST_PPI {
        distributor_write_byte(distributor::CPENDSGIR + u64::from(intid), u8::MAX);
    } else {
        set_bit(distributor::ICPENDR, intid);
    }
}

/// Makes interrupt `intid` active (GICD/GICR_ISACTIVER).
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn set_active(intid: u32) {
    set_bit(distributor::ISACTIVER, intid);
}

/// Clears the active state of interrupt `intid` (GICD/GICR_ICACTIVER), without a priority
/// drop.
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn clear_active(intid: u32) {
    set_bit(distributor::ICACTIVER, intid);
}

fn priority_address(intid: u32) -> u64 {
    assert!(
        intid < interrupt_lines(),
        "INTID {intid} is beyond the {} the distributor implements",
        interrupt_lines()
    );
    if required_version() == Version::V3 && intid < FIRST_SPI {
        this_redistributor() + redistributor::IPRIORITYR + u64::from(intid)
    } else {
        distributor_register(distributor::IPRIORITYR + u64::from(intid), 1)
    }
}

/// Sets the priority of interrupt `intid` (for an SGI or PPI: on this CPU); the GIC keeps
/// its implemented (upper) bits.
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn set_priority(intid: u32, priority: u8) {
    write8(priority_address(intid), priority);
}

/// The priority of interrupt `intid` as read back.
///
/// # Panics
/// For an INTID the distributor does not implement.
pub fn priority(intid: u32) -> u8 {
    read8(priority_address(intid))
}

/// GICv2: CPU `cpu`'s CPU interface mask, as it read it from ITARGETSR0 in [`init`]; before
/// that CPU ran [`init`], `1 << cpu` (interface numbers follow CPU order on `virt`).
fn interface_mask(cpu: usize) -> u8 {
    match INTERFACE_MASK.get(cpu).map(|mask| mask.load(Ordering::Acquire)) {
        Some(mask) if mask != 0 => mask,
        _ => 1u8.checked_shl(cpu as u32).unwrap_or(0),
    }
}

/// Routes SPI `intid` to CPU `cpu` alone (GICD_ITARGETSR on a GICv2, GICD_IROUTER on a
/// GICv3).
///
/// # Panics
/// For an INTID that is no implemented SPI, or a CPU beyond [`cpu_count`].
pub fn set_target(intid: u32, cpu: usize) {
    assert!(
        (FIRST_SPI..interrupt_lines()).contains(&intid) && cpu < cpu_count(),
        "INTID {intid} is no SPI, or CPU {cpu} does not exist"
    );
    match required_version() {
        Version::V2 => distributor_write_byte(distributor::ITARGETSR + u64::from(intid), interface_mask(cpu)),
        Version::V3 => write64(
            distributor_register(distributor::IROUTER + 8 * u64::from(intid), 8),
            affinity_route(cpu),
        ),
    }
}

/// A set of CPU indices (bit n: CPU n): the runtime's, which `smp::on_cpu_mask` takes too.
pub use crate::work::CpuSet;

/// Where an SGI goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SgiTarget {
    /// CPU index (in device tree order).
    Cpu(usize),
    /// The sending CPU (GICD_SGIR's "self" filter; on a GICv3 its own affinity).
    Myself,
    /// Every CPU but the sender (GICD_SGIR's filter 1, ICC_SGI1R_EL1.IRM).
    AllButSelf,
    /// The listed CPUs (one SGIR write on a GICv2, one per affinity cluster on a GICv3).
    List(CpuSet),
}

/// Sends SGI `intid` (0..=15): through GICD_SGIR on a GICv2, as a group-1 interrupt through
/// ICC_SGI1R_EL1 on a GICv3. Earlier memory writes are visible to the receivers' handlers.
pub fn send_sgi(intid: u32, target: SgiTarget) {
    let intid = intid & 0xf;
    match required_version() {
        Version::V2 => {
            let value = match target {
                SgiTarget::Myself => distributor::SGIR_SELF,
                SgiTarget::AllButSelf => distributor::SGIR_ALL_BUT_SELF,
                SgiTarget::Cpu(cpu) => distributor::SGIR_TARGET_LIST | u32::from(interface_mask(cpu)) << 16,
                SgiTarget::List(cpus) => {
                    let list = cpus.iter().fold(0u8, |list, cpu| list | interface_mask(cpu));
                    distributor::SGIR_TARGET_LIST | u32::from(list) << 16
                }
            };
            // SAFETY: a barrier only: earlier writes reach memory before the SGI is sent.
            unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
            distributor_write(distributor::SGIR, value | intid);
        }
        Version::V3 => {
            let intid = u64::from(intid) << 24;
            match target {
                SgiTarget::AllButSelf => write_sgi1r(intid | 1 << 40),
                SgiTarget::Cpu(cpu) => write_sgi1r(intid | sgi1r_affinity(mpidr_of(cpu))),
                SgiTarget::Myself => write_sgi1r(intid | sgi1r_affinity(mpidr_of(cpu_index()))),
                SgiTarget::List(cpus) => {
                    // One write per cluster (Aff3.Aff2.Aff1): the target list holds Aff0s.
                    let mut sent = CpuSet::EMPTY;
                    for cpu in cpus.iter().filter(|&cpu| cpu < cpu_count()) {
                        if sent.contains(cpu) {
                            continue;
                        }
                        let cluster = mpidr_of(cpu) & !0xff;
                        let mut value = intid | sgi1r_affinity(mpidr_of(cpu));
                        for other in cpus.iter().filter(|&other| other < cpu_count()) {
                            if mpidr_of(other) & !0xff == cluster {
                                value |= sgi1r_affinity(mpidr_of(other)) & 0xffff;
                                sent = sent.with(other);
                            }
                        }
                        write_sgi1r(value);
                    }
                }
            }
        }
    }
}

/// ICC_SGI1R_EL1's affinity fields for one CPU: its Aff0 bit in the target list, Aff1-3.
fn sgi1r_affinity(mpidr: u64) -> u64 {
    let aff0 = mpidr & 0xf;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    1 << aff0 | aff1 << 16 | aff2 << 32 | aff3 << 48
}

fn write_sgi1r(value: u64) {
    // SAFETY: writing ICC_SGI1R_EL1 generates an SGI; interrupt state only. The DSB orders
    // earlier memory writes before the interrupt that may observe them.
    unsafe { asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nomem, nostack)) };
}
