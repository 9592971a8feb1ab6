//! GICv3: the distributor, this CPU's redistributor and the system-register CPU interface
//! (ICC_* through `mrs`/`msr`, which aarch64-cpu lacks); IRQ dispatch to per-INTID handlers,
//! SGIs, and the pending/active state of SGIs and PPIs.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use super::device_tree::platform;
use super::smp::{MAX_CPUS, cpu_index, mpidr_of};

/// Distributor registers (offsets from GICD's base).
#[allow(missing_docs)]
pub mod distributor {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const PIDR2: u64 = 0xffe8;
    /// The size of the distributor's register frame.
    pub const FRAME_SIZE: u64 = 0x1_0000;
    /// CTLR: EnableGrp1 (non-secure view / single security state).
    pub const CTLR_ENABLE_GROUP1: u32 = 1 << 1;
    /// CTLR: affinity routing enabled.
    pub const CTLR_ARE: u32 = 1 << 4;
    /// CTLR: register write pending.
    pub const CTLR_RWP: u32 = 1 << 31;
    /// The first SPI's INTID, and so the first SPI's byte in IPRIORITYR.
    pub const FIRST_SPI: u64 = 32;

    /// PIDR2.ArchRev (bits 7:4): 3 for a GICv3, 4 for a GICv4.
    pub fn architecture_revision(pidr2: u32) -> u32 {
        (pidr2 >> 4) & 0xf
    }

    /// The INTIDs TYPER.ITLinesNumber (bits 4:0) provides for: 32 × (N + 1).
    pub fn interrupt_lines(typer: u32) -> u32 {
        32 * ((typer & 0x1f) + 1)
    }
}

/// Redistributor registers: RD_base frame, then the SGI_base frame 64 KiB above it.
#[allow(missing_docs)]
pub mod redistributor {
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

/// INTIDs of 1020 and above are special (1023: spurious, nothing pending).
pub const SPURIOUS: u32 = 1023;
/// The default priority given to SGIs and PPIs.
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// How many INTIDs the handler table covers (SGIs, PPIs and the first SPIs).
const HANDLED_INTIDS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLER: AtomicUsize = AtomicUsize::new(0);
static HANDLERS: [AtomicUsize; HANDLED_INTIDS] = [NO_HANDLER; HANDLED_INTIDS];
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU32 = AtomicU32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZEROS: [AtomicU32; HANDLED_INTIDS] = [ZERO; HANDLED_INTIDS];
/// Per CPU and INTID: how many times the IRQ was acknowledged by the dispatcher.
static DELIVERED: [[AtomicU32; HANDLED_INTIDS]; MAX_CPUS] = [ZEROS; MAX_CPUS];
/// IRQs the dispatcher acknowledged without a handler (or beyond the table).
static UNHANDLED: AtomicU32 = AtomicU32::new(0);
static DISTRIBUTOR_READY: AtomicBool = AtomicBool::new(false);

fn read32(address: u64) -> u32 {
    // SAFETY: `address` is a GIC register in the device-mapped GIC region of the device tree;
    // GIC register reads used here have no side effect on memory.
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

/// The distributor's base address.
///
/// # Panics
/// When the device tree has no GICv3.
pub fn distributor_base() -> u64 {
    gic_v3().expect("the device tree describes no GICv3").distributor
}

fn gic_v3() -> Option<super::device_tree::GicInfo> {
    platform().gic.filter(|gic| gic.version == 3)
}

/// The address of the `size`-byte distributor register at `offset`: offsets are checked, so
/// that no offset reaches memory outside the distributor's 64 KiB frame.
///
/// # Panics
/// For an offset outside the frame or not aligned to `size`.
fn distributor_register(offset: u64, size: u64) -> u64 {
    assert!(
        offset
            .checked_add(size)
            .is_some_and(|end| end <= distributor::FRAME_SIZE)
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

/// Reads one byte of the distributor (IPRIORITYR is byte-accessible).
///
/// # Panics
/// For an offset outside the distributor's frame.
pub fn distributor_read_byte(offset: u64) -> u8 {
    let address = distributor_register(offset, 1);
    // SAFETY: as for `read32`; byte access to IPRIORITYR is architecturally allowed.
    unsafe { (address as usize as *const u8).read_volatile() }
}

/// Writes one byte of the distributor.
///
/// # Panics
/// For an offset outside the distributor's frame.
pub fn distributor_write_byte(offset: u64, value: u8) {
    let address = distributor_register(offset, 1);
    // SAFETY: as for `distributor_read_byte`.
    unsafe { (address as usize as *mut u8).write_volatile(value) }
}

/// The RD_base of the redistributor of CPU `cpu` (its GICR_TYPER affinity matches the CPU's
/// MPIDR), found by walking the redistributor region.
pub fn redistributor_base(cpu: usize) -> Option<u64> {
    let gic = gic_v3()?;
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
/// For an offset outside the frames or unaligned.
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
/// For an offset outside the redistributor's frames, or unaligned.
pub fn redistributor_read(offset: u64) -> u32 {
    read32(redistributor_register(offset))
}

/// Writes a 32-bit register of this CPU's redistributor.
///
/// # Panics
/// For an offset outside the redistributor's frames, or unaligned.
pub fn redistributor_write(offset: u64, value: u32) {
    write32(redistributor_register(offset), value);
}

macro_rules! icc_register {
    ($read:ident, $write:ident, $name:literal) => {
        #[doc = concat!("Reads ", $name, ".")]
        pub fn $read() -> u64 {
            let value: u64;
            // SAFETY: reading this GIC CPU interface register is allowed at EL1 once
            // ICC_SRE_EL1.SRE is set; only IAR reads change state (they acknowledge).
            unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack)) };
            value
        }

        #[doc = concat!("Writes ", $name, ".")]
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

/// Acknowledges the highest-priority pending group-1 interrupt (ICC_IAR1_EL1): it becomes
/// active. Returns its INTID ([`SPURIOUS`] when none is pending).
pub fn acknowledge() -> u32 {
    let value: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the caller must end it.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) value, options(nomem, nostack)) };
    (value & 0xff_ffff) as u32
}

/// Ends interrupt `intid` (ICC_EOIR1_EL1: priority drop and deactivation, EOImode 0).
pub fn end_of_interrupt(intid: u32) {
    // SAFETY: ends an interrupt this CPU acknowledged; interrupt state only.
    unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nomem, nostack)) };
}

/// Enables the distributor (once) and this CPU's redistributor and CPU interface, and makes
/// the GIC dispatcher the IRQ handler. Call on every CPU that takes interrupts.
pub fn init() -> Result<(), &'static str> {
    let gic = platform().gic.ok_or("the device tree describes no GIC")?;
    if gic.version != 3 {
        return Err("the GIC is not a GICv3 (run with -M virt,gic-version=3)");
    }
    if !DISTRIBUTOR_READY.swap(true, Ordering::AcqRel) {
        distributor_write(
            distributor::CTLR,
            distributor::CTLR_ARE | distributor::CTLR_ENABLE_GROUP1,
        );
        while distributor_read(distributor::CTLR) & distributor::CTLR_RWP != 0 {
            core::hint::spin_loop();
        }
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
    for intid in 0..32 {
        // SAFETY: IPRIORITYR is byte-accessible, one byte per SGI/PPI, in the device-mapped
        // redistributor.
        unsafe {
            ((base + redistributor::IPRIORITYR + intid) as usize as *mut u8).write_volatile(DEFAULT_PRIORITY)
        };
    }
    set_icc_sre(icc_sre() | 1);
    set_icc_pmr(super::registers::ICC_PMR_ALLOW_ALL);
    set_icc_bpr1(0);
    set_icc_igrpen1(1);
    super::exceptions::set_irq_handler(Some(dispatch));
    Ok(())
}

/// An interrupt number: a GIC INTID (SGIs 0-15, PPIs 16-31, SPIs from 32).
pub type InterruptNumber = u32;

/// An interrupt handler: runs with IRQs masked, with the INTID it was registered for (the CPU
/// it runs on is `smp::cpu_index()`); the GIC dispatcher acknowledges the interrupt before and
/// ends it after. It must not allocate and should only record what happened.
pub type InterruptHandler = fn(intid: InterruptNumber);

/// Installs `handler` for interrupt `intid` (below 64), or removes it with `None`, on every
/// CPU. Interrupts reach it once [`init`] has made the GIC dispatcher the IRQ handler; an
/// interrupt without a handler is counted ([`unhandled`]) and ended.
///
/// # Panics
/// For an INTID of 64 or more.
pub fn set_interrupt_handler(intid: InterruptNumber, handler: Option<InterruptHandler>) {
    assert!(
        (intid as usize) < HANDLED_INTIDS,
        "INTID {intid} is beyond the {HANDLED_INTIDS} the dispatcher handles"
    );
    HANDLERS[intid as usize].store(handler.map_or(0, |handler| handler as usize), Ordering::Release);
}

/// How many times IRQ `intid` (below 64) was delivered to CPU `cpu` through the dispatcher.
pub fn delivered(cpu: usize, intid: u32) -> u32 {
    DELIVERED[cpu][intid as usize].load(Ordering::Acquire)
}

/// How many IRQs arrived with no handler.
pub fn unhandled() -> u32 {
    UNHANDLED.load(Ordering::Acquire)
}

/// The IRQ handler: acknowledges, counts, calls the INTID's handler, ends; until spurious.
fn dispatch() {
    let cpu = cpu_index();
    loop {
        let intid = acknowledge();
        if intid >= 1020 {
            break;
        }
        let index = intid as usize;
        match HANDLERS.get(index).map(|handler| handler.load(Ordering::Acquire)) {
            Some(handler) if handler != 0 => {
                DELIVERED[cpu][index].fetch_add(1, Ordering::AcqRel);
                // SAFETY: nonzero entries are stored by `set_interrupt_handler` from an
                // `InterruptHandler`; a fn pointer and a usize have the same size.
                let handler = unsafe { core::mem::transmute::<usize, InterruptHandler>(handler) };
                handler(intid);
            }
            _ => {
                if let Some(count) = DELIVERED[cpu].get(index) {
                    count.fetch_add(1, Ordering::AcqRel);
                }
                UNHANDLED.fetch_add(1, Ordering::AcqRel);
            }
        }
        end_of_interrupt(intid);
    }
}

/// Enables SGI/PPI `intid` (below 32) on this CPU.
pub fn enable_private(intid: u32) {
    redistributor_write(redistributor::ISENABLER0, 1 << intid);
}

/// Disables SGI/PPI `intid` (below 32) on this CPU.
pub fn disable_private(intid: u32) {
    redistributor_write(redistributor::ICENABLER0, 1 << intid);
}

/// Whether SGI/PPI `intid` is pending on this CPU (GICR_ISPENDR0).
pub fn is_pending(intid: u32) -> bool {
    redistributor_read(redistributor::ISPENDR0) & (1 << intid) != 0
}

/// Whether SGI/PPI `intid` is active on this CPU (GICR_ISACTIVER0).
pub fn is_active(intid: u32) -> bool {
    redistributor_read(redistributor::ISACTIVER0) & (1 << intid) != 0
}

/// Clears the pending state of SGI/PPI `intid` on this CPU.
pub fn clear_pending(intid: u32) {
    redistributor_write(redistributor::ICPENDR0, 1 << intid);
}

/// Where an SGI goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SgiTarget {
    /// CPU index (in device tree order).
    Cpu(usize),
    /// Every CPU but the sender (ICC_SGI1R_EL1.IRM).
    AllButSelf,
}

/// Sends SGI `intid` (0..=15) as a group-1 interrupt through ICC_SGI1R_EL1.
pub fn send_sgi(intid: u32, target: SgiTarget) {
    let intid = u64::from(intid & 0xf) << 24;
    let value = match target {
        SgiTarget::AllButSelf => intid | 1 << 40,
        SgiTarget::Cpu(cpu) => {
            let mpidr = mpidr_of(cpu);
            let aff0 = mpidr & 0xf;
            let aff1 = (mpidr >> 8) & 0xff;
            let aff2 = (mpidr >> 16) & 0xff;
            let aff3 = (mpidr >> 32) & 0xff;
            intid | 1 << aff0 | aff1 << 16 | aff2 << 32 | aff3 << 48
        }
    };
    // SAFETY: writing ICC_SGI1R_EL1 generates an SGI; interrupt state only. The DSB orders
    // earlier memory writes before the interrupt that may observe them.
    unsafe { asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nomem, nostack)) };
}
