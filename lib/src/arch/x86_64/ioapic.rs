//! The I/O APIC: redirection table programming, and an interrupt source to raise IRQs on demand.
//!
//! The I/O APIC sits at 0xfec0_0000 on pc, q35 and microvm; its registers are reached through
//! an index (IOREGSEL) and a data window (IOWIN). Tests raise IRQs with QEMU's `pc-testdev`
//! (`super::testdev::set_irq_line`): ISA IRQ line n reaches I/O APIC input n (but line 0,
//! whose ISA IRQ is wired to input 2: see the MADT's overrides, `acpi::Madt::isa_irq`).

use x86_64::instructions::port::Port;

use super::apic;

/// The I/O APIC's physical (and, identity mapped, virtual) address.
pub const BASE: u64 = 0xfec0_0000;
/// IOREGSEL: the index of the register the window shows.
const SELECT: u64 = 0x00;
/// IOWIN: the selected register.
const WINDOW: u64 = 0x10;

/// I/O APIC register indexes (82093AA datasheet, 3.2).
#[allow(missing_docs)]
pub mod register {
    pub const ID: u8 = 0x00;
    pub const VERSION: u8 = 0x01;
    pub const ARBITRATION: u8 = 0x02;
    /// Entry n's low dword is at `REDIRECTION_TABLE + 2 * n`, its high dword one above.
    pub const REDIRECTION_TABLE: u8 = 0x10;
}

/// The bits of the ID (and arbitration ID) register that hold the 4-bit ID: 27:24.
pub const ID_MASK: u32 = 0x0f00_0000;

/// Serializes the two-step IOREGSEL/IOWIN accesses between CPUs; each access also runs with
/// interrupts disabled, so that a handler on the same CPU cannot come in between the steps.
static WINDOW_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Selects register `index` in IOREGSEL.
fn select(index: u8) {
    // SAFETY: the I/O APIC page is identity mapped; IOREGSEL only picks the register the
    // window shows, it changes no memory.
    unsafe { ((BASE + SELECT) as usize as *mut u32).write_volatile(u32::from(index)) };
}

/// Reads I/O APIC register `index`.
pub fn read(index: u8) -> u32 {
    super::interrupts::without_interrupts(|| {
        let _guard = WINDOW_LOCK.lock();
        select(index);
        // SAFETY: as for `select`; reading the window has no side effect.
        unsafe { ((BASE + WINDOW) as usize as *const u32).read_volatile() }
    })
}

/// Writes I/O APIC register `index`: a device poke (routing of interrupts), not a memory write.
pub fn write(index: u8, value: u32) {
    super::interrupts::without_interrupts(|| {
        let _guard = WINDOW_LOCK.lock();
        select(index);
        // SAFETY: as for `select`; the write changes I/O APIC state, not memory.
        unsafe { ((BASE + WINDOW) as usize as *mut u32).write_volatile(value) };
    })
}

/// The EOI register of version 0x20 I/O APICs (the 82093AA and KVM's in-kernel I/O APIC have
/// none): writing a vector clears remote IRR of the level-triggered entries on that vector.
const END_OF_INTERRUPT: u64 = 0x40;

/// Signals the end of interrupt `vector` to the I/O APIC directly, through its EOI register
/// (version 0x20 only; elsewhere the write goes nowhere).
pub fn end_of_interrupt(vector: u8) {
    // SAFETY: the I/O APIC page is identity mapped; the EOI register changes I/O APIC state,
    // not memory.
    unsafe { ((BASE + END_OF_INTERRUPT) as usize as *mut u32).write_volatile(u32::from(vector)) };
}

/// The I/O APIC's version (the version register's bits 7:0): 0x11 for the 82093AA and KVM's
/// in-kernel I/O APIC, 0x20 for QEMU's own by default (which adds an EOI register).
pub fn version() -> u8 {
    read(register::VERSION) as u8
}

/// The index of the last redirection table entry (the version register's bits 23:16): the
/// number of inputs minus one.
pub fn max_redirection_entry() -> u8 {
    (read(register::VERSION) >> 16) as u8
}

/// How the I/O APIC delivers an interrupt (a redirection entry's bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// To every destination CPU, on the entry's vector.
    Fixed,
    /// To the destination CPU of lowest priority.
    LowestPriority,
    /// A system management interrupt.
    Smi,
    /// Encoding 3, reserved.
    Reserved3,
    /// A non-maskable interrupt.
    Nmi,
    /// An INIT.
    Init,
    /// Encoding 6, reserved.
    Reserved6,
    /// An external (8259-style) interrupt: the vector comes from the PIC.
    ExtInt,
}

impl DeliveryMode {
    const ALL: [DeliveryMode; 8] = [
        DeliveryMode::Fixed,
        DeliveryMode::LowestPriority,
        DeliveryMode::Smi,
        DeliveryMode::Reserved3,
        DeliveryMode::Nmi,
        DeliveryMode::Init,
        DeliveryMode::Reserved6,
        DeliveryMode::ExtInt,
    ];

    /// The mode of encoding `bits` (its low three bits).
    pub fn from_bits(bits: u32) -> DeliveryMode {
        Self::ALL[(bits & 7) as usize]
    }

    /// The 3-bit encoding.
    pub fn bits(self) -> u32 {
        Self::ALL.iter().position(|mode| *mode == self).unwrap_or(0) as u32
    }
}

/// Whether an input is edge- or level-triggered (a redirection entry's bit 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A rising edge on the input sends one interrupt.
    Edge,
    /// The input's asserted level sends an interrupt, and another after each EOI while it
    /// stays asserted (remote IRR holds it meanwhile).
    Level,
}

/// Which level of the input is asserted (a redirection entry's bit 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// High is asserted (the ISA convention).
    ActiveHigh,
    /// Low is asserted (the PCI convention).
    ActiveLow,
}

/// How the destination field names CPUs (a redirection entry's bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// The destination is an APIC ID.
    Physical,
    /// The destination is matched against each local APIC's logical destination (LDR, DFR).
    Logical,
}

/// One redirection table entry: how input n becomes an interrupt message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectionEntry {
    /// The interrupt vector (bits 7:0).
    pub vector: u8,
    /// The delivery mode (bits 10:8).
    pub delivery_mode: DeliveryMode,
    /// The destination mode (bit 11).
    pub destination_mode: DestinationMode,
    /// Delivery status (bit 12, read-only): a message waits to be sent.
    pub delivery_pending: bool,
    /// The input's polarity (bit 13).
    pub polarity: Polarity,
    /// Remote IRR (bit 14, read-only): a level-triggered interrupt was accepted by a local
    /// APIC and awaits its EOI.
    pub remote_irr: bool,
    /// The trigger mode (bit 15).
    pub trigger: Trigger,
    /// The mask (bit 16): a masked input sends nothing.
    pub masked: bool,
    /// The destination (bits 63:56): an APIC ID or a logical destination.
    pub destination: u8,
}

const DESTINATION_MODE_BIT: u32 = 1 << 11;
const DELIVERY_STATUS_BIT: u32 = 1 << 12;
const POLARITY_BIT: u32 = 1 << 13;
const REMOTE_IRR_BIT: u32 = 1 << 14;
const TRIGGER_BIT: u32 = 1 << 15;
const MASK_BIT: u32 = 1 << 16;

impl RedirectionEntry {
    /// An unmasked, active-high, fixed entry on `vector` to physical APIC ID 0.
    pub fn new(vector: u8, trigger: Trigger) -> RedirectionEntry {
        RedirectionEntry {
            vector,
            delivery_mode: DeliveryMode::Fixed,
            destination_mode: DestinationMode::Physical,
            delivery_pending: false,
            polarity: Polarity::ActiveHigh,
            remote_irr: false,
            trigger,
            masked: false,
            destination: 0,
        }
    }

    /// The entry encoded in the dwords (low, high) of the table.
    pub fn from_dwords(low: u32, high: u32) -> RedirectionEntry {
        RedirectionEntry {
            vector: low as u8,
            delivery_mode: DeliveryMode::from_bits(low >> 8),
            destination_mode: if low & DESTINATION_MODE_BIT != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            delivery_pending: low & DELIVERY_STATUS_BIT != 0,
            polarity: if low & POLARITY_BIT != 0 {
                Polarity::ActiveLow
            } else {
                Polarity::ActiveHigh
            },
            remote_irr: low & REMOTE_IRR_BIT != 0,
            trigger: if low & TRIGGER_BIT != 0 {
                Trigger::Level
            } else {
                Trigger::Edge
            },
            masked: low & MASK_BIT != 0,
            destination: (high >> 24) as u8,
        }
    }

    /// The entry's encoding as the table's (low, high) dwords.
    pub fn to_dwords(self) -> (u32, u32) {
        let flag = |set: bool, bit: u32| if set { bit } else { 0 };
        let low = u32::from(self.vector)
            | (self.delivery_mode.bits() << 8)
            | flag(
                self.destination_mode == DestinationMode::Logical,
                DESTINATION_MODE_BIT,
            )
            | flag(self.delivery_pending, DELIVERY_STATUS_BIT)
            | flag(self.polarity == Polarity::ActiveLow, POLARITY_BIT)
            | flag(self.remote_irr, REMOTE_IRR_BIT)
            | flag(self.trigger == Trigger::Level, TRIGGER_BIT)
            | flag(self.masked, MASK_BIT);
        (low, u32::from(self.destination) << 24)
    }
}

/// The register index of input `line`'s low dword.
fn entry_index(line: u8) -> u8 {
    register::REDIRECTION_TABLE + 2 * line
}

/// Reads the raw (low, high) dwords of input `line`'s entry.
pub fn read_entry_dwords(line: u8) -> (u32, u32) {
    (read(entry_index(line)), read(entry_index(line) + 1))
}

/// Reads input `line`'s redirection entry.
pub fn read_entry(line: u8) -> RedirectionEntry {
    let (low, high) = read_entry_dwords(line);
    RedirectionEntry::from_dwords(low, high)
}

/// The reserved bits of an entry's low dword: bits 31:17 (the 82093AA datasheet calls bits
/// 55:17 reserved).
pub const RESERVED_LOW: u32 = 0xfffe_0000;
/// The reserved bits of an entry's high dword: bits 55:32 of the entry.
pub const RESERVED_HIGH: u32 = 0x00ff_ffff;

/// Writes input `line`'s redirection entry (its read-only bits are ignored by the I/O APIC).
/// The dword with the mask goes last when the entry is unmasked and first when it is masked,
/// so that no interrupt leaves with half an entry.
pub fn write_entry(line: u8, entry: RedirectionEntry) {
    let (low, high) = entry.to_dwords();
    write_entry_dwords(line, low, high);
}

/// Writes the raw (low, high) dwords of input `line`'s entry, reserved bits included, in the
/// order [`write_entry`] uses.
pub fn write_entry_dwords(line: u8, low: u32, high: u32) {
    if low & MASK_BIT != 0 {
        write(entry_index(line), low);
        write(entry_index(line) + 1, high);
    } else {
        write(entry_index(line) + 1, high);
        write(entry_index(line), low);
    }
}

/// Writes only the high dword of input `line`'s entry: its destination.
pub fn write_destination(line: u8, destination: u8) {
    write(entry_index(line) + 1, u32::from(destination) << 24);
}

/// Masks or unmasks input `line`, keeping the rest of its entry.
pub fn set_mask(line: u8, masked: bool) {
    let (low, _) = read_entry_dwords(line);
    let low = if masked { low | MASK_BIT } else { low & !MASK_BIT };
    write(entry_index(line), low);
}

/// Programs input `line` as an unmasked fixed interrupt on `vector` to physical APIC ID 0.
pub fn route(line: u8, vector: u8, trigger: Trigger) {
    write_entry(line, RedirectionEntry::new(vector, trigger));
}

/// Whether the local APIC of this CPU accepted `vector` as level-triggered (its TMR bit).
pub fn local_trigger_mode(vector: u8) -> bool {
    apic::vector_bit(apic::register::TRIGGER_MODE, vector)
}

/// The master 8259 PIC's edge/level control register (ELCR1, PIIX and ICH: I/O port 0x4d0;
/// served by KVM's in-kernel PIC, `elcr_ioport_read`/`elcr_ioport_write` in
/// arch/x86/kvm/i8259.c, and by QEMU's hw/intc/i8259.c): bit `n` set makes IRQ `n`
/// level-triggered.
pub const ELCR_MASTER: u16 = 0x4d0;
/// The slave PIC's edge/level control register (ELCR2, port 0x4d1), IRQs 8-15.
pub const ELCR_SLAVE: u16 = 0x4d1;
/// The bits of [`ELCR_MASTER`] that take a write: IRQs 0, 1 and 2 (timer, keyboard, cascade)
/// are always edge-triggered, so bits 2:0 read 0 whatever is written (the chipsets' ELCR1;
/// `elcr_mask` 0xf8 of KVM's `kvm_pic_init` and of QEMU's `i8259_init_chip`).
pub const ELCR_MASTER_WRITABLE: u8 = 0xf8;

/// Masks every input of the legacy 8259 PICs (master and slave data ports 0x21 and 0xa1), so
/// that ISA IRQs arrive only through the I/O APIC.
pub fn mask_legacy_pic() {
    for port in [0x21u16, 0xa1] {
        let mut port = Port::<u8>::new(port);
        // SAFETY: writing the PIC's interrupt mask register touches no memory.
        unsafe { port.write(0xff) };
    }
}
