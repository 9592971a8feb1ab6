//! ACPI, as far as the runtime needs it: the RSDP (from the PVH start info, else the BIOS
//! area 0xE0000-0xFFFFF; the EBDA pointer lives in page 0, which the runtime leaves unmapped), the RSDT/XSDT, and the MADT's processors, I/O APICs and interrupt source overrides.
//!
//! pc and q35 have ACPI tables; microvm may not, and then the CPU count comes from fw_cfg
//! (see `smp`). Every table is checksummed before it is believed.

/// The most MADT entries of each kind kept.
pub const MAX_ENTRIES: usize = 16;

/// A table header's size (signature, length, revision, checksum, OEM fields, ...).
const HEADER_SIZE: usize = 36;
/// The RSDP signature.
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// The BIOS read-only area searched for the RSDP.
const BIOS_AREA: (u64, u64) = (0xe0000, 0x100000);
/// The largest table believed (a MADT of a few hundred CPUs fits).
const MAX_TABLE_SIZE: usize = 64 * 1024;

/// A local APIC the MADT lists as enabled (or online-capable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processor {
    /// Its APIC ID (x2APIC ID for an x2APIC entry).
    pub apic_id: u32,
    /// Its ACPI processor UID.
    pub uid: u32,
}

/// An I/O APIC of the MADT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoApic {
    /// Its I/O APIC ID.
    pub id: u8,
    /// The physical address of its registers.
    pub address: u32,
    /// The first global system interrupt (GSI) it serves.
    pub gsi_base: u32,
}

/// An interrupt source override: ISA IRQ `source` arrives on GSI `gsi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Override {
    /// The ISA IRQ.
    pub source: u8,
    /// The GSI it is wired to.
    pub gsi: u32,
    /// The MPS INTI flags (polarity in bits 1:0, trigger mode in bits 3:2).
    pub flags: u16,
}

/// What the MADT says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    /// The local APIC address.
    pub local_apic_address: u32,
    /// The enabled processors, in MADT order (the boot CPU first).
    pub processors: [Processor; MAX_ENTRIES],
    /// How many of `processors` are valid (more CPUs than [`MAX_ENTRIES`] are counted here
    /// but not kept).
    pub processor_count: usize,
    /// The I/O APICs.
    pub io_apics: [IoApic; 4],
    /// How many of `io_apics` are valid.
    pub io_apic_count: usize,
    /// The interrupt source overrides.
    pub overrides: [Override; MAX_ENTRIES],
    /// How many of `overrides` are valid.
    pub override_count: usize,
}

impl Madt {
    /// The GSI that ISA IRQ `irq` arrives on, and its MPS INTI flags (0: the bus's default,
    /// edge-triggered and active-high for ISA).
    pub fn isa_irq(&self, irq: u8) -> (u32, u16) {
        self.overrides[..self.override_count.min(MAX_ENTRIES)]
            .iter()
            .find(|entry| entry.source == irq)
            .map_or((u32::from(irq), 0), |entry| (entry.gsi, entry.flags))
    }
}

static MADT: spin::Once<Option<Madt>> = spin::Once::new();
static RSDP_HINT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the RSDP address the PVH start info gave (0: none), before [`madt`] is first used.
pub(crate) fn set_rsdp_hint(address: u64) {
    RSDP_HINT.store(address, core::sync::atomic::Ordering::Relaxed);
}

/// The MADT, parsed once, or `None` where the machine has no (valid) ACPI tables.
pub fn madt() -> Option<&'static Madt> {
    MADT.call_once(|| {
        let rsdp = find_rsdp(RSDP_HINT.load(core::sync::atomic::Ordering::Relaxed))?;
        let table = find_table(rsdp, b"APIC")?;
        Some(parse_madt(table))
    })
    .as_ref()
}

/// `length` bytes of physical memory at `address`.
///
/// Everything the tables name lies below 4 GiB, which the boot page tables identity-map;
/// page 0 is never read (no table starts there).
fn bytes(address: u64, length: usize) -> Option<&'static [u8]> {
    if address < 0x1000 || address.checked_add(length as u64)? > super::MAPPED_MEMORY_END {
        return None;
    }
    // SAFETY: the range is identity mapped (checked above) and read only; ACPI tables and
    // the BIOS areas are firmware memory that nothing writes after boot.
    Some(unsafe { core::slice::from_raw_parts(address as usize as *const u8, length) })
}

fn checksum_ok(data: &[u8]) -> bool {
    data.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}

fn read_u16(data: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([data[offset], data[offset + 1]])
}

fn read_u32(data: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap_or([0; 4]))
}

fn read_u64(data: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(data[offset..offset + 8].try_into().unwrap_or([0; 8]))
}

/// A valid RSDP at `address`: signature and the ACPI 1.0 checksum over its first 20 bytes.
fn rsdp_at(address: u64) -> Option<&'static [u8]> {
    let data = bytes(address, 36)?;
    (data[..8] == RSDP_SIGNATURE[..] && checksum_ok(&data[..20])).then_some(data)
}

/// The RSDP: the start info's, else the first valid one in the BIOS area.
fn find_rsdp(hint: u64) -> Option<&'static [u8]> {
    if hint != 0 {
        return rsdp_at(hint);
    }
    (BIOS_AREA.0..BIOS_AREA.1).step_by(16).find_map(rsdp_at)
}

/// A checksummed table at `address`.
fn table_at(address: u64) -> Option<&'static [u8]> {
    let header = bytes(address, HEADER_SIZE)?;
    let length = read_u32(header, 4) as usize;
    if !(HEADER_SIZE..=MAX_TABLE_SIZE).contains(&length) {
        return None;
    }
    let table = bytes(address, length)?;
    checksum_ok(table).then_some(table)
}

/// The checksummed table with `signature` ("FACP", "HPET", ...), where there are ACPI tables.
pub fn table(signature: &[u8; 4]) -> Option<&'static [u8]> {
    find_table(
        find_rsdp(RSDP_HINT.load(core::sync::atomic::Ordering::Relaxed))?,
        signature,
    )
}

/// The table with `signature` that the XSDT (ACPI 2.0+) or the RSDT lists.
fn find_table(rsdp: &[u8], signature: &[u8; 4]) -> Option<&'static [u8]> {
    let revision = rsdp[15];
    let (root, entry_size) = if revision >= 2 && read_u64(rsdp, 24) != 0 {
        (table_at(read_u64(rsdp, 24))?, 8)
    } else {
        (table_at(u64::from(read_u32(rsdp, 16)))?, 4)
    };
    root[HEADER_SIZE..]
        .chunks_exact(entry_size)
        .map(|entry| {
            if entry_size == 8 {
                read_u64(entry, 0)
            } else {
                u64::from(read_u32(entry, 0))
            }
        })
        .filter_map(table_at)
        .find(|table| &table[..4] == signature)
}

/// The MADT's entries after its 44-byte head (header, local APIC address, flags).
fn parse_madt(table: &[u8]) -> Madt {
    let mut madt = Madt {
        local_apic_address: read_u32(table, HEADER_SIZE),
        ..Madt::default()
    };
    let mut offset = HEADER_SIZE + 8;
    while offset + 2 <= table.len() {
        let (kind, length) = (table[offset], usize::from(table[offset + 1]));
        if length < 2 || offset + length > table.len() {
            break;
        }
        let entry = &table[offset..offset + length];
        match (kind, length) {
            // Processor Local APIC: UID, APIC ID, flags (enabled, online capable).
            (0, 8..) if read_u32(entry, 4) & 0b11 != 0 => {
                add_processor(&mut madt, u32::from(entry[3]), u32::from(entry[2]));
            }
            // I/O APIC: ID, reserved, address, GSI base.
            (1, 12..) if madt.io_apic_count < madt.io_apics.len() => {
                madt.io_apics[madt.io_apic_count] = IoApic {
                    id: entry[2],
                    address: read_u32(entry, 4),
                    gsi_base: read_u32(entry, 8),
                };
                madt.io_apic_count += 1;
            }
            // Interrupt Source Override: bus, source, GSI, flags.
            (2, 10..) if madt.override_count < MAX_ENTRIES => {
                madt.overrides[madt.override_count] = Override {
                    source: entry[3],
                    gsi: read_u32(entry, 4),
                    flags: read_u16(entry, 8),
                };
                madt.override_count += 1;
            }
            // Processor Local x2APIC: reserved, x2APIC ID, flags, UID.
            (9, 16..) if read_u32(entry, 8) & 0b11 != 0 => {
                add_processor(&mut madt, read_u32(entry, 4), read_u32(entry, 12));
            }
            _ => {}
        }
        offset += length;
    }
    madt
}

fn add_processor(madt: &mut Madt, apic_id: u32, uid: u32) {
    if let Some(slot) = madt.processors.get_mut(madt.processor_count) {
        *slot = Processor { apic_id, uid };
    }
    madt.processor_count += 1;
}

/// The ACPI PM timer: its I/O port and the mask of its counter bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    /// The counter's I/O port.
    pub port: u16,
    /// `0xff_ffff` (24 bits), or `u32::MAX` with the FADT's TMR_VAL_EXT flag.
    pub mask: u32,
}

/// The PM timer the FADT describes (PM_TMR_BLK, or X_PM_TMR_BLK in system I/O space; ACPI 6.5,
/// 5.2.9), counting at 3.579545 MHz.
pub fn pm_timer() -> Option<PmTimer> {
    /// FADT offsets: PM_TMR_BLK, Flags, X_PM_TMR_BLK (a generic address structure).
    const PM_TIMER_BLOCK: usize = 76;
    const FLAGS: usize = 112;
    const EXTENDED_PM_TIMER_BLOCK: usize = 208;
    /// Flags.TMR_VAL_EXT: a 32-bit counter.
    const TIMER_VALUE_EXTENDED: u32 = 1 << 8;
    /// The generic address structure's system I/O space.
    const SYSTEM_IO: u8 = 1;
    let fadt = table(b"FACP")?;
    if fadt.len() < PM_TIMER_BLOCK + 4 {
        return None;
    }
    let flags = if fadt.len() >= FLAGS + 4 {
        read_u32(fadt, FLAGS)
    } else {
        0
    };
    let mut port = u64::from(read_u32(fadt, PM_TIMER_BLOCK));
    if fadt.len() >= EXTENDED_PM_TIMER_BLOCK + 12 && fadt[EXTENDED_PM_TIMER_BLOCK] == SYSTEM_IO {
        let extended = read_u64(fadt, EXTENDED_PM_TIMER_BLOCK + 4);
        if extended != 0 {
            port = extended;
        }
    }
    let port = u16::try_from(port).ok().filter(|port| *port != 0)?;
    let mask = if flags & TIMER_VALUE_EXTENDED != 0 {
        u32::MAX
    } else {
        0xff_ffff
    };
    Some(PmTimer { port, mask })
}

/// One ECAM region of the MCFG table (PCI Firmware Specification 3.2, 4.1.2): the
/// configuration spaces of buses `bus_start..=bus_end` of one segment, 1 MiB a bus from
/// `base` (bus 0's place, even when `bus_start` is higher).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamRegion {
    /// The base address, of bus 0 of the segment.
    pub base: u64,
    /// The PCI segment group.
    pub segment: u16,
    /// The first bus decoded.
    pub bus_start: u8,
    /// The last bus decoded.
    pub bus_end: u8,
}

/// The MCFG's first ECAM region of segment 0, where the machine has one (q35 does; pc has no
/// ECAM).
pub fn ecam() -> Option<EcamRegion> {
    /// The MCFG's entries start after the header and 8 reserved bytes; each is 16 bytes.
    const FIRST_ENTRY: usize = HEADER_SIZE + 8;
    let mcfg = table(b"MCFG")?;
    mcfg.get(FIRST_ENTRY..)?
        .chunks_exact(16)
        .map(|entry| EcamRegion {
            base: read_u64(entry, 0),
            segment: read_u16(entry, 8),
            bus_start: entry[10],
            bus_end: entry[11],
        })
        .find(|region| region.segment == 0 && region.bus_start <= region.bus_end)
}

/// A DMA remapping hardware unit of the DMAR table (Intel VT-d specification, 8.3: a DRHD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemappingUnit {
    /// Its registers' physical address.
    pub register_base: u64,
    /// The PCI segment it serves.
    pub segment: u16,
    /// INCLUDE_PCI_ALL: it serves every device of the segment not named by another unit.
    pub include_all: bool,
}

/// What the DMAR table (VT-d 8.1) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// The host address width: the DMA physical address bits, minus one as encoded (N means N+1
    /// bits) already added here.
    pub host_address_width: u8,
    /// Flags bit 0, INTR_REMAP: the platform supports interrupt remapping.
    pub interrupt_remapping: bool,
    /// Flags bit 1, X2APIC_OPT_OUT: firmware asks the OS not to use x2APIC mode.
    pub x2apic_opt_out: bool,
    /// The first remapping unit (DRHD), if any.
    pub unit: Option<RemappingUnit>,
}

/// The DMAR table, where the machine has an IOMMU (`-device intel-iommu` on q35).
pub fn dmar() -> Option<Dmar> {
    /// The remapping structures follow the header, the width, flags and 10 reserved bytes.
    const FIRST_STRUCTURE: usize = HEADER_SIZE + 12;
    /// Remapping structure type 0: DRHD.
    const DRHD: u16 = 0;
    let table = table(b"DMAR")?;
    if table.len() < FIRST_STRUCTURE {
        return None;
    }
    let mut dmar = Dmar {
        host_address_width: table[HEADER_SIZE] + 1,
        interrupt_remapping: table[HEADER_SIZE + 1] & 1 != 0,
        x2apic_opt_out: table[HEADER_SIZE + 1] & 2 != 0,
        unit: None,
    };
    let mut offset = FIRST_STRUCTURE;
    while offset + 4 <= table.len() {
        let kind = read_u16(table, offset);
        let length = usize::from(read_u16(table, offset + 2));
        if length < 4 || offset + length > table.len() {
            break;
        }
        if kind == DRHD && length >= 16 && dmar.unit.is_none() {
            dmar.unit = Some(RemappingUnit {
                register_base: read_u64(table, offset + 8),
                segment: read_u16(table, offset + 6),
                include_all: table[offset + 4] & 1 != 0,
            });
        }
        offset += length;
    }
    Some(dmar)
}

/// What sleeping in S3 needs from the FADT (ACPI 6.5, 5.2.9) and the FACS (5.2.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepControl {
    /// PM1a_EVT_BLK: the PM1a status register's port; the enable register is at `+ 2`.
    pub pm1a_event: u16,
    /// PM1a_CNT_BLK: the PM1a control register's port (SLP_TYP, SLP_EN).
    pub pm1a_control: u16,
    /// The FACS's physical address (FIRMWARE_CTRL, or X_FIRMWARE_CTRL).
    pub facs: u64,
}

/// PM1 enable register: RTC_EN, a wake-up by the RTC alarm.
pub const PM1_ENABLE_RTC: u16 = 1 << 10;
/// PM1 control register: SLP_TYP (bits 12:10) takes the sleep type of `\_Sx`.
pub const PM1_CONTROL_SLEEP_TYPE_SHIFT: u16 = 10;
/// PM1 control register: SLP_EN, enter the sleep state SLP_TYP names.
pub const PM1_CONTROL_SLEEP_ENABLE: u16 = 1 << 13;

/// The FADT's PM1a blocks and FACS, where there are ACPI tables and a FACS (hardware-reduced
/// machines such as microvm have none).
pub fn sleep_control() -> Option<SleepControl> {
    /// FADT offsets: FIRMWARE_CTRL, PM1a_EVT_BLK, PM1a_CNT_BLK, X_FIRMWARE_CTRL.
    const FIRMWARE_CONTROL: usize = 36;
    const PM1A_EVENT_BLOCK: usize = 56;
    const PM1A_CONTROL_BLOCK: usize = 64;
    const EXTENDED_FIRMWARE_CONTROL: usize = 132;
    let fadt = table(b"FACP")?;
    if fadt.len() < PM1A_CONTROL_BLOCK + 4 {
        return None;
    }
    let mut facs = u64::from(read_u32(fadt, FIRMWARE_CONTROL));
    if facs == 0 && fadt.len() >= EXTENDED_FIRMWARE_CONTROL + 8 {
        facs = read_u64(fadt, EXTENDED_FIRMWARE_CONTROL);
    }
    let header = bytes(facs, 8)?;
    if &header[..4] != b"FACS" {
        return None;
    }
    Some(SleepControl {
        pm1a_event: u16::try_from(read_u32(fadt, PM1A_EVENT_BLOCK)).ok()?,
        pm1a_control: u16::try_from(read_u32(fadt, PM1A_CONTROL_BLOCK)).ok()?,
        facs,
    })
}

/// The FACS's Firmware Waking Vector field (a 32-bit real-mode address).
const FACS_WAKING_VECTOR: usize = 12;
/// The FACS's X_Firmware_Waking_Vector field (64-bit; 0 leaves the 32-bit one in force).
const FACS_EXTENDED_WAKING_VECTOR: usize = 24;

/// Sets the FACS's Firmware Waking Vector to `vector` (and clears X_Firmware_Waking_Vector, so
/// the firmware resumes in real mode at CS = vector >> 4, IP = vector & 0xf); returns the
/// vector read back.
pub fn set_waking_vector(control: &SleepControl, vector: u32) -> Option<u32> {
    let facs = bytes(control.facs, 32)?;
    let base = facs.as_ptr() as usize as *mut u8;
    // SAFETY: the FACS is firmware memory, identity mapped (checked by `bytes`), that the OS
    // owns the waking vectors of; no slice the runtime hands out covers it (it is not a table
    // the RSDT lists, so `table` never returns it). The writes are aligned fields.
    unsafe {
        base.wrapping_add(FACS_WAKING_VECTOR)
            .cast::<u32>()
            .write_volatile(vector);
    }
    // SAFETY: as above.
    unsafe {
        base.wrapping_add(FACS_EXTENDED_WAKING_VECTOR)
            .cast::<u64>()
            .write_volatile(0);
    }
    // SAFETY: as above.
    Some(unsafe {
        base.wrapping_add(FACS_WAKING_VECTOR)
            .cast::<u32>()
            .read_volatile()
    })
}

/// The SLP_TYPa value of sleep state `\_S3` in the DSDT, where firmware offers S3 (QEMU omits
/// `\_S3` with `-global PIIX4_PM.disable_s3=1` or `ICH9-LPC.disable_s3=1`). Read from the
/// package `Name (_S3, Package () { a, b, ... })`: its first element, a byte constant.
pub fn s3_sleep_type() -> Option<u8> {
    /// FADT offsets: DSDT, X_DSDT.
    const DSDT: usize = 40;
    const EXTENDED_DSDT: usize = 140;
    /// AML opcodes: PackageOp, BytePrefix, ZeroOp, OneOp.
    const PACKAGE: u8 = 0x12;
    const BYTE_PREFIX: u8 = 0x0a;
    const ZERO: u8 = 0x00;
    const ONE: u8 = 0x01;
    let fadt = table(b"FACP")?;
    let mut address = u64::from(read_u32(fadt, DSDT));
    if address == 0 && fadt.len() >= EXTENDED_DSDT + 8 {
        address = read_u64(fadt, EXTENDED_DSDT);
    }
    let dsdt = table_at(address)?;
    let at = dsdt
        .windows(5)
        .position(|window| &window[..4] == b"_S3_" && window[4] == PACKAGE)?;
    // After PackageOp: a PkgLength (one byte under 64 bytes; more bytes as bits 7:6 say), the
    // element count, then the first element.
    let length_start = at + 5;
    let extra_length_bytes = usize::from(*dsdt.get(length_start)? >> 6);
    let first = length_start + 1 + extra_length_bytes + 1;
    match *dsdt.get(first)? {
        BYTE_PREFIX => dsdt.get(first + 1).copied(),
        ZERO => Some(0),
        ONE => Some(1),
        _ => None,
    }
}
