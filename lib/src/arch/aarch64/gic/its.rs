//! The GICv3 Interrupt Translation Service and LPIs: the ITS the device tree describes
//! (`arm,gic-v3-its`), its identification and table registers (GITS_TYPER, GITS_IIDR,
//! GITS_BASER<n>), the LPI configuration and pending tables of the redistributors
//! (GICR_PROPBASER, GICR_PENDBASER, GICR_CTLR.EnableLPIs), the device and collection tables,
//! the command queue (GITS_CBASER, GITS_CWRITER, GITS_CREADR) and typed ITS commands.
//!
//! Every table the ITS or a redistributor reads or writes is allocated here from the frame
//! allocator, zeroed and never freed: a [`Device`]'s interrupt translation table lives as long
//! as the program, so that no command can make the ITS write memory the program uses. LPIs
//! reach the GIC dispatcher like every other interrupt; handlers and delivery counts cover
//! INTIDs [`FIRST_LPI`] .. [`FIRST_LPI`] + [`HANDLED_LPIS`].

use core::arch::asm;

use spin::Mutex;

use super::{
    FIRST_LPI, HANDLED_LPIS, gic, read32, read64, redistributor, redistributor_base, write32, write64,
};
use crate::arch::smp::{MAX_CPUS, cpu_count};
use crate::memory::{PAGE_SIZE, allocate_frames};

/// ITS registers (offsets from the ITS's base: the control frame, then the translation frame
/// 64 KiB above it).
#[allow(missing_docs)]
pub mod registers {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    /// 64-bit.
    pub const TYPER: u64 = 0x0008;
    /// 64-bit: the command queue's address and size.
    pub const CBASER: u64 = 0x0080;
    /// 64-bit: where software writes the next command.
    pub const CWRITER: u64 = 0x0088;
    /// 64-bit: where the ITS reads the next command.
    pub const CREADR: u64 = 0x0090;
    /// 64-bit, eight of them: GITS_BASER<n> at BASER + 8 × n.
    pub const BASER: u64 = 0x0100;
    /// How many GITS_BASER<n> there are.
    pub const BASER_COUNT: usize = 8;
    /// The translation frame's GITS_TRANSLATER.
    pub const TRANSLATER: u64 = 0x1_0040;
    /// The size of the ITS's two register frames.
    pub const FRAME_SIZE: u64 = 0x2_0000;
    /// CTLR.Enabled.
    pub const CTLR_ENABLED: u32 = 1 << 0;
    /// CTLR.Quiescent (read-only): no transaction in flight.
    pub const CTLR_QUIESCENT: u32 = 1 << 31;
    /// CBASER and BASER<n>: Valid.
    pub const VALID: u64 = 1 << 63;
    /// CREADR.Stalled: a command error stopped the queue.
    pub const CREADR_STALLED: u64 = 1 << 0;
    /// CWRITER and CREADR: the offset field (bits 19:5).
    pub const QUEUE_OFFSET_MASK: u64 = 0x000f_ffe0;
}

/// The size of an ITS command.
const COMMAND_SIZE: u64 = 32;
/// The command queue's size: 64 KiB, 2048 commands.
const QUEUE_SIZE: u64 = 0x1_0000;
/// The device and collection tables' size: one 64 KiB page each.
const TABLE_SIZE: u64 = 0x1_0000;
/// GICR_PROPBASER.IDbits as programmed: 14 INTID bits, LPIs 8192 .. 16383.
const LPI_ID_BITS: u32 = 14;
/// Interrupt translation tables are 256-byte aligned.
const ITT_ALIGNMENT: u64 = 256;
/// Cacheability field value: Normal Inner Read-allocate Write-allocate Write-back.
const CACHE_RAWAWB: u64 = 0b111;
/// Shareability field value: Inner Shareable.
const SHAREABILITY_INNER: u64 = 0b01;

/// GITS_TYPER, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Typer(pub u64);

impl Typer {
    /// Physical: the ITS supports physical LPIs.
    pub fn physical_lpis(self) -> bool {
        self.0 & 1 != 0
    }

    /// Virtual: the ITS supports virtual LPIs (GICv4).
    pub fn virtual_lpis(self) -> bool {
        self.0 & 1 << 1 != 0
    }

    /// CCT: GITS_CTLR.Quiescent also covers the collections' redistributors' caches.
    pub fn cumulative_collection_tables(self) -> bool {
        self.0 & 1 << 2 != 0
    }

    /// ITT_entry_size + 1: the bytes of one interrupt translation table entry.
    pub fn itt_entry_size(self) -> u32 {
        ((self.0 >> 4) & 0xf) as u32 + 1
    }

    /// IDbits + 1: the EventID bits the ITS supports.
    pub fn event_id_bits(self) -> u32 {
        ((self.0 >> 8) & 0x1f) as u32 + 1
    }

    /// Devbits + 1: the DeviceID bits the ITS supports.
    pub fn device_id_bits(self) -> u32 {
        ((self.0 >> 13) & 0x1f) as u32 + 1
    }

    /// SEIS: the ITS generates locally generated system errors.
    pub fn system_errors(self) -> bool {
        self.0 & 1 << 18 != 0
    }

    /// PTA: collection targets are redistributor physical addresses (else processor numbers).
    pub fn physical_target_addresses(self) -> bool {
        self.0 & 1 << 19 != 0
    }

    /// HCC: collections held in the ITS without a collection table.
    pub fn hardware_collections(self) -> u32 {
        ((self.0 >> 24) & 0xff) as u32
    }

    /// CIL: CIDbits is meaningful.
    pub fn collection_id_limit(self) -> bool {
        self.0 & 1 << 36 != 0
    }

    /// The collection ID bits: CIDbits + 1 when CIL, else 16.
    pub fn collection_id_bits(self) -> u32 {
        if self.collection_id_limit() {
            ((self.0 >> 32) & 0xf) as u32 + 1
        } else {
            16
        }
    }
}

/// What a GITS_BASER<n> table holds (its Type field).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TableType {
    /// 0: the register is unimplemented.
    Unimplemented,
    /// 1: devices.
    Devices,
    /// 2: virtual PEs (GICv4).
    VirtualPes,
    /// 4: interrupt collections.
    Collections,
    /// 3, 5, 6, 7: reserved.
    Reserved(u8),
}

/// GITS_BASER<n>'s Page_Size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TablePageSize {
    /// 4 KiB.
    Size4K,
    /// 16 KiB.
    Size16K,
    /// 64 KiB (0b11 reads as 64 KiB too).
    Size64K,
}

impl TablePageSize {
    /// The page size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            TablePageSize::Size4K => 0x1000,
            TablePageSize::Size16K => 0x4000,
            TablePageSize::Size64K => 0x1_0000,
        }
    }

    fn field(self) -> u64 {
        match self {
            TablePageSize::Size4K => 0,
            TablePageSize::Size16K => 1,
            TablePageSize::Size64K => 2,
        }
    }
}

/// GITS_BASER<n>, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Baser(pub u64);

impl Baser {
    /// Valid: the table is allocated.
    pub fn valid(self) -> bool {
        self.0 & registers::VALID != 0
    }

    /// Indirect: a two-level table.
    pub fn indirect(self) -> bool {
        self.0 & 1 << 62 != 0
    }

    /// Type (read-only).
    pub fn table_type(self) -> TableType {
        match ((self.0 >> 56) & 7) as u8 {
            0 => TableType::Unimplemented,
            1 => TableType::Devices,
            2 => TableType::VirtualPes,
            4 => TableType::Collections,
            other => TableType::Reserved(other),
        }
    }

    /// Entry_Size + 1: the bytes of one table entry (read-only).
    pub fn entry_size(self) -> u32 {
        ((self.0 >> 48) & 0x1f) as u32 + 1
    }

    /// Page_Size.
    pub fn page_size(self) -> TablePageSize {
        match (self.0 >> 8) & 3 {
            0 => TablePageSize::Size4K,
            1 => TablePageSize::Size16K,
            _ => TablePageSize::Size64K,
        }
    }

    /// Size + 1: the table's pages.
    pub fn pages(self) -> u32 {
        (self.0 & 0xff) as u32 + 1
    }

    /// The table's physical address (for 64 KiB pages, bits 15:12 hold address bits 51:48).
    pub fn address(self) -> u64 {
        let field = self.0 & 0x0000_ffff_ffff_f000;
        match self.page_size() {
            TablePageSize::Size64K => (field & !0xf000) | (field & 0xf000) << 36,
            _ => field,
        }
    }
}

/// The ITS's base address and register frames' size, if the device tree describes one.
pub fn its_address() -> Option<(u64, u64)> {
    super::gic().and_then(|gic| gic.its())
}

fn base() -> u64 {
    its_address().expect("the device tree describes no ITS").0
}

/// The address of the `size`-byte ITS register at `offset`, checked against the frames.
///
/// # Panics
/// For an offset outside the ITS's frames or unaligned, or without an ITS.
fn register(offset: u64, size: u64) -> u64 {
    assert!(
        offset
            .checked_add(size)
            .is_some_and(|end| end <= registers::FRAME_SIZE)
            && offset.is_multiple_of(size),
        "offset {offset:#x} is no {size}-byte register of the ITS"
    );
    base() + offset
}

/// Reads a 32-bit ITS register.
///
/// # Panics
/// For an offset outside the ITS's frames or unaligned, or without an ITS.
pub fn read(offset: u64) -> u32 {
    read32(register(offset, 4))
}

/// Writes a 32-bit ITS register. The tables and the command queue registers are the
/// runtime's: writing GITS_CBASER, GITS_CWRITER or GITS_BASER<n> through this refuses.
///
/// # Panics
/// For an offset outside the ITS's frames or unaligned, without an ITS, or for a register
/// that points the ITS at memory (CBASER, CWRITER, BASER<n>).
pub fn write(offset: u64, value: u32) {
    assert!(
        !(registers::CBASER..registers::CREADR).contains(&offset)
            && !(registers::BASER..registers::BASER + 8 * registers::BASER_COUNT as u64).contains(&offset),
        "offset {offset:#x} points the ITS at memory: the runtime owns it"
    );
    write32(register(offset, 4), value);
}

/// Reads a 64-bit ITS register.
///
/// # Panics
/// For an offset outside the ITS's frames or unaligned, or without an ITS.
pub fn read64_register(offset: u64) -> u64 {
    read64(register(offset, 8))
}

/// GITS_TYPER.
pub fn typer() -> Typer {
    Typer(read64_register(registers::TYPER))
}

/// GITS_BASER<`index`>.
///
/// # Panics
/// For an index of 8 or more, or without an ITS.
pub fn baser(index: usize) -> Baser {
    assert!(index < registers::BASER_COUNT, "there are 8 GITS_BASER registers");
    Baser(read64_register(registers::BASER + 8 * index as u64))
}

/// Before [`init`] only: writes GITS_BASER<`index`> with `value` but Valid cleared (so that the
/// ITS uses no memory through it) and returns what reads back, to probe its read-only fields;
/// `None` once [`init`] has set up the tables.
///
/// # Panics
/// For an index of 8 or more, or without an ITS.
pub fn write_unused_baser(index: usize, value: u64) -> Option<Baser> {
    let state = STATE.lock();
    if state.is_some() {
        return None;
    }
    assert!(index < registers::BASER_COUNT, "there are 8 GITS_BASER registers");
    write64(
        register(registers::BASER + 8 * index as u64, 8),
        value & !registers::VALID,
    );
    Some(baser(index))
}

/// Why [`init`] could not make the ITS usable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InitError {
    /// The device tree describes no ITS (or no GICv3).
    NoIts,
    /// GITS_TYPER.Physical is clear.
    NoPhysicalLpis,
    /// A redistributor's GICR_TYPER.PLPIS is clear (the CPU index).
    NoLpisAt(usize),
    /// No CPU has a redistributor matching its MPIDR (the CPU index).
    NoRedistributor(usize),
    /// No GITS_BASER<n> has type Devices.
    NoDeviceTable,
    /// No GITS_BASER<n> has type Collections, and GITS_TYPER.HCC does not cover the CPUs.
    NoCollectionTable,
    /// A GITS_BASER<n> kept neither page size nor address as written (the index).
    TableRefused(usize),
    /// GITS_CBASER did not keep the command queue as written.
    QueueRefused,
    /// The frame allocator could not give the tables.
    OutOfMemory,
}

/// The ITS as [`init`] set it up.
#[derive(Clone, Copy, Debug)]
pub struct Its {
    /// GITS_TYPER.
    pub typer: Typer,
    /// The GITS_BASER<n> index of the device table.
    pub device_table: usize,
    /// The GITS_BASER<n> index of the collection table, if the ITS has one.
    pub collection_table: Option<usize>,
    /// The LPI configuration table (shared by every redistributor).
    pub property_table: u64,
    /// The command queue's address.
    pub command_queue: u64,
}

struct State {
    its: Its,
    /// Per CPU: the LPI pending table.
    pending_tables: [u64; MAX_CPUS],
    /// The next command's offset in the queue.
    write_offset: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Allocates `bytes` (rounded up to a power-of-two count of frames, which the buddy frame
/// allocator aligns to their size) of zeroed, identity-mapped, never freed memory.
fn allocate_zeroed(bytes: u64) -> Result<u64, InitError> {
    let frames = bytes.div_ceil(PAGE_SIZE).next_power_of_two();
    let address = allocate_frames(frames as usize).ok_or(InitError::OutOfMemory)?;
    // SAFETY: the frames were just allocated for this table alone (never freed), lie in RAM
    // that the boot map identity-maps, and no Rust object lives in them.
    unsafe { core::ptr::write_bytes(address as usize as *mut u8, 0, (frames * PAGE_SIZE) as usize) };
    barrier();
    Ok(address)
}

fn barrier() {
    // SAFETY: a barrier only: earlier memory writes are visible to the ITS and redistributors
    // (and their reads of tables) before the following register writes.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// The ITS as [`init`] set it up, `None` before.
pub fn its() -> Option<Its> {
    STATE.lock().as_ref().map(|state| state.its)
}

/// Sets up LPIs and the ITS, once: an LPI configuration table (every LPI disabled) for
/// INTIDs up to 16383 in GICR_PROPBASER and a pending table in GICR_PENDBASER of every CPU's
/// redistributor, GICR_CTLR.EnableLPIs on each, a device table and a collection table
/// through GITS_BASER<n> (64 KiB pages, flat), the command queue in GITS_CBASER, then
/// GITS_CTLR.Enabled. Call after [`super::init`] (on every CPU that takes LPIs); later calls
/// return the ITS as set up.
pub fn init() -> Result<Its, InitError> {
    let mut state = STATE.lock();
    if let Some(state) = state.as_ref() {
        return Ok(state.its);
    }
    if its_address().is_none() || super::version() != Some(super::Version::V3) {
        return Err(InitError::NoIts);
    }
    let typer = typer();
    if !typer.physical_lpis() {
        return Err(InitError::NoPhysicalLpis);
    }
    let mut redistributors = [0u64; MAX_CPUS];
    for (cpu, slot) in redistributors.iter_mut().enumerate().take(cpu_count()) {
        let rd = redistributor_base(cpu).ok_or(InitError::NoRedistributor(cpu))?;
        if read64(rd + redistributor::TYPER) & redistributor::TYPER_PLPIS == 0 {
            return Err(InitError::NoLpisAt(cpu));
        }
        *slot = rd;
    }
    // The redistributors: configuration table, pending tables, EnableLPIs.
    let lpi_id_bits =
        LPI_ID_BITS.min(((super::distributor_read(super::distributor::TYPER) >> 19) & 0x1f) + 1);
    let property_table = allocate_zeroed((1u64 << lpi_id_bits) - u64::from(FIRST_LPI))?;
    let mut pending_tables = [0u64; MAX_CPUS];
    for table in pending_tables.iter_mut().take(cpu_count()) {
        // 64 KiB aligned (allocate_zeroed aligns 16 frames to 64 KiB).
        *table = allocate_zeroed(((1u64 << lpi_id_bits) / 8).max(0x1_0000))?;
    }
    let propbaser =
        property_table | u64::from(lpi_id_bits - 1) | CACHE_RAWAWB << 7 | SHAREABILITY_INNER << 10;
    for cpu in 0..cpu_count() {
        let rd = redistributors[cpu];
        write64(rd + redistributor::PROPBASER, propbaser);
        write64(
            rd + redistributor::PENDBASER,
            pending_tables[cpu] | CACHE_RAWAWB << 7 | SHAREABILITY_INNER << 10,
        );
        let control = read32(rd + redistributor::CTLR);
        write32(
            rd + redistributor::CTLR,
            control | redistributor::CTLR_ENABLE_LPIS,
        );
    }
    // The ITS tables.
    let mut device_table = None;
    let mut collection_table = None;
    for index in 0..registers::BASER_COUNT {
        let current = baser(index);
        let table_type = current.table_type();
        if !matches!(table_type, TableType::Devices | TableType::Collections) {
            continue;
        }
        let table = allocate_zeroed(TABLE_SIZE)?;
        let value = (current.0 & (0x1f << 48 | 7 << 56))
            | registers::VALID
            | CACHE_RAWAWB << 59
            | table
            | SHAREABILITY_INNER << 10
            | TablePageSize::Size64K.field() << 8;
        let offset = registers::BASER + 8 * index as u64;
        write64(register(offset, 8), value);
        let kept = baser(index);
        if !kept.valid() || kept.page_size() != TablePageSize::Size64K || kept.address() != table {
            return Err(InitError::TableRefused(index));
        }
        match table_type {
            TableType::Devices => device_table = device_table.or(Some(index)),
            _ => collection_table = collection_table.or(Some(index)),
        }
    }
    let device_table = device_table.ok_or(InitError::NoDeviceTable)?;
    if collection_table.is_none() && (typer.hardware_collections() as usize) < cpu_count() {
        return Err(InitError::NoCollectionTable);
    }
    // The command queue.
    let command_queue = allocate_zeroed(QUEUE_SIZE)?;
    let cbaser = registers::VALID
        | CACHE_RAWAWB << 59
        | command_queue
        | SHAREABILITY_INNER << 10
        | (QUEUE_SIZE / 0x1000 - 1);
    write64(register(registers::CBASER, 8), cbaser);
    write64(register(registers::CWRITER, 8), 0);
    let kept = read64_register(registers::CBASER);
    if kept & registers::VALID == 0 || kept & 0x000f_ffff_ffff_f000 != command_queue {
        return Err(InitError::QueueRefused);
    }
    let control = read32(register(registers::CTLR, 4));
    write32(register(registers::CTLR, 4), control | registers::CTLR_ENABLED);
    let its = Its {
        typer,
        device_table,
        collection_table,
        property_table,
        command_queue,
    };
    *state = Some(State {
        its,
        pending_tables,
        write_offset: 0,
    });
    Ok(its)
}

/// An LPI's configuration table entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LpiConfig {
    /// The priority (bits 7:2 are kept).
    pub priority: u8,
    /// Whether the LPI is enabled.
    pub enabled: bool,
}

impl LpiConfig {
    /// kvm-unit-tests' LPI_PROP_DEFAULT: priority 0xa0 (the runtime's default), enabled.
    pub const DEFAULT: LpiConfig = LpiConfig {
        priority: super::DEFAULT_PRIORITY,
        enabled: true,
    };

    fn byte(self) -> u8 {
        (self.priority & 0xfc) | 1 << 1 | u8::from(self.enabled)
    }
}

fn property_address(intid: u32) -> u64 {
    let state = STATE.lock();
    let state = state.as_ref().expect("its::init has not set up the LPI tables");
    assert!(
        (FIRST_LPI..1 << LPI_ID_BITS).contains(&intid),
        "INTID {intid} is no LPI of the configuration table"
    );
    state.its.property_table + u64::from(intid - FIRST_LPI)
}

/// Writes LPI `intid`'s configuration table entry. Redistributors may cache it: an INV or
/// INVALL command makes the change visible for sure.
///
/// # Panics
/// Before [`init`], or for an INTID outside 8192 .. 16383.
pub fn set_lpi_config(intid: u32, config: LpiConfig) {
    let address = property_address(intid);
    // SAFETY: the byte lies in the configuration table that `init` allocated for the
    // redistributors alone; no Rust object lives there.
    unsafe { (address as usize as *mut u8).write_volatile(config.byte()) };
    barrier();
}

/// LPI `intid`'s configuration table entry as stored.
///
/// # Panics
/// Before [`init`], or for an INTID outside 8192 .. 16383.
pub fn lpi_config(intid: u32) -> LpiConfig {
    let address = property_address(intid);
    // SAFETY: as in `set_lpi_config`; a read.
    let byte = unsafe { (address as usize as *const u8).read_volatile() };
    LpiConfig {
        priority: byte & 0xfc,
        enabled: byte & 1 != 0,
    }
}

/// The largest LPI INTID the configuration table covers, plus one.
pub const LPI_LIMIT: u32 = 1 << LPI_ID_BITS;

/// Whether LPI `intid` (from [`FIRST_LPI`]) is one of the LPIs the dispatcher's handler and
/// delivery tables cover.
pub fn is_handled_lpi(intid: u32) -> bool {
    (FIRST_LPI..FIRST_LPI + HANDLED_LPIS).contains(&intid)
}

/// A device of the ITS: its DeviceID, how many EventID bits it has and its interrupt
/// translation table, which [`Device::new`] allocates and nothing frees.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Device {
    id: u32,
    event_bits: u32,
    itt: u64,
}

impl Device {
    /// A device with DeviceID `id` and `event_bits` EventID bits (EventIDs below
    /// 2^`event_bits`), with a zeroed interrupt translation table; not mapped yet (see
    /// [`Command::MapDevice`]). `None` when `event_bits` is 0 or beyond GITS_TYPER.IDbits,
    /// or memory runs out.
    pub fn new(id: u32, event_bits: u32) -> Option<Device> {
        let typer = typer();
        if event_bits == 0 || event_bits > typer.event_id_bits() {
            return None;
        }
        let bytes = (1u64 << event_bits) * u64::from(typer.itt_entry_size());
        let itt = allocate_zeroed(bytes.max(ITT_ALIGNMENT)).ok()?;
        Some(Device { id, event_bits, itt })
    }

    /// The DeviceID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The EventID bits.
    pub fn event_bits(&self) -> u32 {
        self.event_bits
    }

    /// The interrupt translation table's address.
    pub fn itt(&self) -> u64 {
        self.itt
    }
}

/// An interrupt collection: an ICID and the redistributor (CPU) it targets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Collection {
    id: u16,
    cpu: usize,
    target: u64,
}

impl Collection {
    /// Collection `id` targeting CPU `cpu`'s redistributor: by physical address or by
    /// processor number (GICR_TYPER.Processor_Number), as GITS_TYPER.PTA says.
    ///
    /// # Panics
    /// For a CPU beyond [`cpu_count`] or without a redistributor.
    pub fn new(id: u16, cpu: usize) -> Collection {
        assert!(cpu < cpu_count(), "CPU {cpu} does not exist");
        let rd = redistributor_base(cpu).expect("no redistributor matches the CPU's MPIDR");
        let target = if typer().physical_target_addresses() {
            rd
        } else {
            ((read64(rd + redistributor::TYPER) >> 8) & 0xffff) << 16
        };
        Collection { id, cpu, target }
    }

    /// The ICID.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The CPU it targets.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The RDbase as commands encode it (bits 51:16: an address, or the processor number
    /// shifted by 16).
    pub fn target(&self) -> u64 {
        self.target
    }
}

/// An ITS command (IHI0069 5.3), as the command queue takes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Command {
    /// MAPD: maps (or with `valid` false unmaps) a device to its interrupt translation table.
    MapDevice {
        /// The device.
        device: Device,
        /// V.
        valid: bool,
    },
    /// MAPC: maps (or unmaps) a collection to its redistributor.
    MapCollection {
        /// The collection.
        collection: Collection,
        /// V.
        valid: bool,
    },
    /// MAPTI: maps a device's EventID to LPI `intid` in a collection.
    MapTranslation {
        /// The device.
        device: Device,
        /// The EventID.
        event: u32,
        /// The pINTID.
        intid: u32,
        /// The collection.
        collection: Collection,
    },
    /// MAPI: maps a device's EventID to the LPI of the same number in a collection.
    MapInterrupt {
        /// The device.
        device: Device,
        /// The EventID, which is the LPI's INTID.
        event: u32,
        /// The collection.
        collection: Collection,
    },
    /// INT: makes the LPI of a device's EventID pending.
    Interrupt {
        /// The device.
        device: Device,
        /// The EventID.
        event: u32,
    },
    /// CLEAR: clears the pending state of the LPI of a device's EventID.
    Clear {
        /// The device.
        device: Device,
        /// The EventID.
        event: u32,
    },
    /// DISCARD: clears the pending state and removes the EventID's mapping.
    Discard {
        /// The device.
        device: Device,
        /// The EventID.
        event: u32,
    },
    /// INV: the redistributor rereads the configuration of the EventID's LPI.
    Invalidate {
        /// The device.
        device: Device,
        /// The EventID.
        event: u32,
    },
    /// INVALL: the redistributor rereads the configuration of every LPI of a collection.
    InvalidateAll {
        /// The collection.
        collection: Collection,
    },
    /// MOVI: moves the EventID's LPI to another collection.
    Move {
        /// The device.
        device: Device,
        /// The EventID.
        event: u32,
        /// The new collection.
        collection: Collection,
    },
    /// MOVALL: moves every LPI pending on one redistributor to another.
    MoveAll {
        /// The source collection's redistributor.
        from: Collection,
        /// The destination collection's redistributor.
        to: Collection,
    },
    /// SYNC: the effects of earlier commands on a redistributor are visible.
    Sync {
        /// The collection whose redistributor is synchronised.
        collection: Collection,
    },
}

/// Command numbers (DW0 bits 7:0).
#[allow(missing_docs)]
pub mod opcode {
    pub const MOVI: u8 = 0x01;
    pub const INT: u8 = 0x03;
    pub const CLEAR: u8 = 0x04;
    pub const SYNC: u8 = 0x05;
    pub const MAPD: u8 = 0x08;
    pub const MAPC: u8 = 0x09;
    pub const MAPTI: u8 = 0x0a;
    pub const MAPI: u8 = 0x0b;
    pub const INV: u8 = 0x0c;
    pub const INVALL: u8 = 0x0d;
    pub const MOVALL: u8 = 0x0e;
    pub const DISCARD: u8 = 0x0f;
}

impl Command {
    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Command::MapDevice { .. } => opcode::MAPD,
            Command::MapCollection { .. } => opcode::MAPC,
            Command::MapTranslation { .. } => opcode::MAPTI,
            Command::MapInterrupt { .. } => opcode::MAPI,
            Command::Interrupt { .. } => opcode::INT,
            Command::Clear { .. } => opcode::CLEAR,
            Command::Discard { .. } => opcode::DISCARD,
            Command::Invalidate { .. } => opcode::INV,
            Command::InvalidateAll { .. } => opcode::INVALL,
            Command::Move { .. } => opcode::MOVI,
            Command::MoveAll { .. } => opcode::MOVALL,
            Command::Sync { .. } => opcode::SYNC,
        }
    }

    /// The four little-endian doublewords of the command.
    pub fn encode(&self) -> [u64; 4] {
        let device_event = |device: &Device, event: u32| (u64::from(device.id) << 32, u64::from(event));
        let target = |collection: &Collection| collection.target & 0x000f_ffff_ffff_0000;
        let mut words = [0u64; 4];
        match self {
            Command::MapDevice { device, valid } => {
                words[0] = u64::from(device.id) << 32;
                words[1] = u64::from(device.event_bits - 1) & 0x1f;
                words[2] = (device.itt & 0x000f_ffff_ffff_ff00) | u64::from(*valid) << 63;
            }
            Command::MapCollection { collection, valid } => {
                words[2] = u64::from(collection.id) | target(collection) | u64::from(*valid) << 63;
            }
            Command::MapTranslation {
                device,
                event,
                intid,
                collection,
            } => {
                (words[0], words[1]) = device_event(device, *event);
                words[1] |= u64::from(*intid) << 32;
                words[2] = u64::from(collection.id);
            }
            Command::MapInterrupt {
                device,
                event,
                collection,
            }
            | Command::Move {
                device,
                event,
                collection,
            } => {
                (words[0], words[1]) = device_event(device, *event);
                words[2] = u64::from(collection.id);
            }
            Command::Interrupt { device, event }
            | Command::Clear { device, event }
            | Command::Discard { device, event }
            | Command::Invalidate { device, event } => {
                (words[0], words[1]) = device_event(device, *event);
            }
            Command::InvalidateAll { collection } => words[2] = u64::from(collection.id),
            Command::MoveAll { from, to } => {
                words[2] = target(from);
                words[3] = target(to);
            }
            Command::Sync { collection } => words[2] = target(collection),
        }
        words[0] |= u64::from(self.opcode());
        words
    }
}

/// Why a command did not complete.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CommandError {
    /// [`init`] has not set up the command queue.
    NotInitialised,
    /// GITS_CREADR.Stalled: the ITS stopped at a command (CREADR's value).
    Stalled(u64),
    /// GITS_CREADR did not reach the command's end within a second (CREADR's value).
    Timeout(u64),
}

/// Queues `command` (GITS_CWRITER) and waits up to a second for the ITS to have processed
/// it (GITS_CREADR past it).
pub fn send(command: Command) -> Result<(), CommandError> {
    let mut state = STATE.lock();
    let state = state.as_mut().ok_or(CommandError::NotInitialised)?;
    let slot = state.its.command_queue + state.write_offset;
    for (index, word) in command.encode().into_iter().enumerate() {
        // SAFETY: the slot is a 32-byte command of the queue `init` allocated for the ITS
        // alone; no Rust object lives there, and the ITS reads it only after CWRITER moves.
        unsafe { ((slot + 8 * index as u64) as usize as *mut u64).write_volatile(word) };
    }
    barrier();
    let next = (state.write_offset + COMMAND_SIZE) % QUEUE_SIZE;
    state.write_offset = next;
    write64(register(registers::CWRITER, 8), next);
    let creadr = || read64_register(registers::CREADR);
    crate::time::spin_until(1000, || {
        let value = creadr();
        value & registers::QUEUE_OFFSET_MASK == next || value & registers::CREADR_STALLED != 0
    });
    let value = creadr();
    if value & registers::CREADR_STALLED != 0 {
        Err(CommandError::Stalled(value))
    } else if value & registers::QUEUE_OFFSET_MASK != next {
        Err(CommandError::Timeout(value))
    } else {
        Ok(())
    }
}

/// The LPI pending table of CPU `cpu` as [`init`] set it up (GICR_PENDBASER's address).
pub fn pending_table(cpu: usize) -> Option<u64> {
    let state = STATE.lock();
    let state = state.as_ref()?;
    (cpu < cpu_count()).then(|| state.pending_tables[cpu])
}

/// Whether the GIC is a GICv3 with an ITS the device tree describes.
pub fn is_present() -> bool {
    its_address().is_some() && gic().is_some_and(|gic| gic.version == 3)
}

/// A redistributor's LPI state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RedistributorLpis {
    /// GICR_TYPER.PLPIS.
    pub supported: bool,
    /// GICR_CTLR.EnableLPIs.
    pub enabled: bool,
}

/// The LPI state of CPU `cpu`'s redistributor; `None` without one (or on a GICv2).
pub fn redistributor_lpis(cpu: usize) -> Option<RedistributorLpis> {
    let rd = redistributor_base(cpu)?;
    Some(RedistributorLpis {
        supported: read64(rd + redistributor::TYPER) & redistributor::TYPER_PLPIS != 0,
        enabled: read32(rd + redistributor::CTLR) & redistributor::CTLR_ENABLE_LPIS != 0,
    })
}

/// Sets GICR_CTLR.EnableLPIs of CPU `cpu`'s redistributor to `enabled` (after [`init`], so
/// that its GICR_PROPBASER and GICR_PENDBASER hold the runtime's tables), waits up to a
/// second for GICR_CTLR.RWP to clear, and returns EnableLPIs as read back: whether it can be
/// cleared once set is IMPLEMENTATION DEFINED (IHI0069 GICR_CTLR.EnableLPIs). With it clear
/// the redistributor takes no LPI and leaves its pending table to software
/// ([`set_lpi_pending`]); setting it again makes the redistributor read the pending table.
/// `None` before [`init`] or for a CPU without a redistributor.
pub fn set_redistributor_lpis_enabled(cpu: usize, enabled: bool) -> Option<bool> {
    if STATE.lock().is_none() || cpu >= cpu_count() {
        return None;
    }
    let rd = redistributor_base(cpu)?;
    barrier();
    let control = read32(rd + redistributor::CTLR);
    let control = if enabled {
        control | redistributor::CTLR_ENABLE_LPIS
    } else {
        control & !redistributor::CTLR_ENABLE_LPIS
    };
    write32(rd + redistributor::CTLR, control);
    crate::time::spin_until(1000, || {
        read32(rd + redistributor::CTLR) & redistributor::CTLR_RWP == 0
    });
    Some(read32(rd + redistributor::CTLR) & redistributor::CTLR_ENABLE_LPIS != 0)
}

/// Why [`set_lpi_pending`] did not write a pending table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PendingTableError {
    /// [`init`] has not set up the pending tables, or the CPU has none.
    NoTable,
    /// The INTID is no LPI of the tables (8192 .. [`LPI_LIMIT`]).
    NotAnLpi,
    /// The CPU's GICR_CTLR.EnableLPIs is set (or GICR_CTLR.RWP): the redistributor owns its
    /// pending table, and software writes to it are UNPREDICTABLE (IHI0069).
    RedistributorOwnsTable,
}

/// The address of LPI `intid`'s byte in CPU `cpu`'s pending table and its bit there (bit N
/// of the table is INTID N's pending state).
fn pending_bit(cpu: usize, intid: u32) -> Result<(u64, u8), PendingTableError> {
    let table = pending_table(cpu).ok_or(PendingTableError::NoTable)?;
    if !(FIRST_LPI..LPI_LIMIT).contains(&intid) {
        return Err(PendingTableError::NotAnLpi);
    }
    Ok((table + u64::from(intid / 8), 1 << (intid % 8)))
}

/// Whether LPI `intid` is pending in CPU `cpu`'s pending table as memory holds it (a
/// redistributor with EnableLPIs set may keep more recent state cached). `None` before
/// [`init`], for a CPU without a table or an INTID outside 8192 .. [`LPI_LIMIT`].
pub fn lpi_pending(cpu: usize, intid: u32) -> Option<bool> {
    let (address, bit) = pending_bit(cpu, intid).ok()?;
    // Serialises with `set_lpi_pending`.
    let _state = STATE.lock();
    barrier();
    // SAFETY: the byte lies in the pending table that `init` allocated for this CPU's
    // redistributor alone (never freed); no Rust object lives there. A read, under the lock
    // that every software write of the table holds.
    let byte = unsafe { (address as usize as *const u8).read_volatile() };
    Some(byte & bit != 0)
}

/// Sets or clears LPI `intid`'s bit in CPU `cpu`'s pending table (kvm-unit-tests'
/// gicv3_lpi_set_clr_pending), only while that redistributor's EnableLPIs is clear (see
/// [`set_redistributor_lpis_enabled`]); the redistributor reads it when EnableLPIs is set.
pub fn set_lpi_pending(cpu: usize, intid: u32, pending: bool) -> Result<(), PendingTableError> {
    let (address, bit) = pending_bit(cpu, intid)?;
    let rd = redistributor_base(cpu).ok_or(PendingTableError::NoTable)?;
    let control = read32(rd + redistributor::CTLR);
    if control & (redistributor::CTLR_ENABLE_LPIS | redistributor::CTLR_RWP) != 0 {
        return Err(PendingTableError::RedistributorOwnsTable);
    }
    let pointer = address as usize as *mut u8;
    // Serialises the read-modify-write with other software accesses of the table.
    let _state = STATE.lock();
    // SAFETY: as in `lpi_pending`; the redistributor does not use the table while its
    // EnableLPIs is clear (checked above), and every software access holds the lock.
    let byte = unsafe { pointer.read_volatile() };
    // SAFETY: as for the read just above.
    unsafe { pointer.write_volatile(if pending { byte | bit } else { byte & !bit }) };
    barrier();
    Ok(())
}
