//! Intel VT-d (QEMU's `-device intel-iommu` on q35), as kvm-unit-tests' lib/x86/intel-iommu.c
//! drives it, plus the invalidation queue and fault recording it leaves out: the remapping
//! unit the ACPI DMAR table names, legacy-mode root and context tables, second-level page
//! tables (3 levels for a 39-bit address width, 4 for 48) mapping IOVAs onto
//! [`DmaBuffer`]s, the interrupt remapping table, and the global command/status sequence.
//!
//! Every table the unit reads lives in [`DmaBuffer`]s that only volatile accesses touch; the
//! unit writes memory only for invalidation-wait status, also into a [`DmaBuffer`]. So every
//! operation here is a safe function: what a device may then write is decided by the page
//! tables, which map IOVAs onto [`DmaBuffer`]s only.
//!
//! References: Intel Virtualization Technology for Directed I/O, Architecture Specification
//! (chapters 9, 10 and 6.5); QEMU hw/i386/intel_iommu.c.

use alloc::vec::Vec;

use crate::memory::{DmaBuffer, PAGE_SIZE};
use crate::mmio::{DeviceWindow, MapError};
use crate::pci::Address;

/// Register offsets (VT-d 10.4).
pub mod register {
    /// Version, 32 bits: major in bits 7:4, minor in 3:0.
    pub const VERSION: u64 = 0x00;
    /// Capability, 64 bits.
    pub const CAPABILITY: u64 = 0x08;
    /// Extended capability, 64 bits.
    pub const EXTENDED_CAPABILITY: u64 = 0x10;
    /// Global command, 32 bits, write-only.
    pub const GLOBAL_COMMAND: u64 = 0x18;
    /// Global status, 32 bits.
    pub const GLOBAL_STATUS: u64 = 0x1c;
    /// Root table address, 64 bits.
    pub const ROOT_TABLE_ADDRESS: u64 = 0x20;
    /// Context command, 64 bits (register-based invalidation).
    pub const CONTEXT_COMMAND: u64 = 0x28;
    /// Fault status, 32 bits.
    pub const FAULT_STATUS: u64 = 0x34;
    /// Fault event control, 32 bits.
    pub const FAULT_EVENT_CONTROL: u64 = 0x38;
    /// Invalidation queue head, 64 bits.
    pub const INVALIDATION_QUEUE_HEAD: u64 = 0x80;
    /// Invalidation queue tail, 64 bits.
    pub const INVALIDATION_QUEUE_TAIL: u64 = 0x88;
    /// Invalidation queue address, 64 bits.
    pub const INVALIDATION_QUEUE_ADDRESS: u64 = 0x90;
    /// Invalidation completion status, 32 bits.
    pub const INVALIDATION_COMPLETION_STATUS: u64 = 0x9c;
    /// Interrupt remapping table address, 64 bits.
    pub const INTERRUPT_REMAPPING_TABLE_ADDRESS: u64 = 0xb8;
}

/// Global command and status bits (VT-d 10.4.4, 10.4.5): a command bit and its status bit
/// share a position.
pub mod global {
    /// TE/TES: DMA remapping (translation) enable.
    pub const TRANSLATION: u32 = 1 << 31;
    /// SRTP/RTPS: set root table pointer (one-shot).
    pub const ROOT_TABLE_POINTER: u32 = 1 << 30;
    /// SFL/FLS: set fault log (one-shot).
    pub const FAULT_LOG: u32 = 1 << 29;
    /// EAFL/AFLS: advanced fault logging.
    pub const ADVANCED_FAULT_LOG: u32 = 1 << 28;
    /// WBF/WBFS: write buffer flush (one-shot).
    pub const WRITE_BUFFER_FLUSH: u32 = 1 << 27;
    /// QIE/QIES: queued invalidation enable.
    pub const QUEUED_INVALIDATION: u32 = 1 << 26;
    /// IRE/IRES: interrupt remapping enable.
    pub const INTERRUPT_REMAPPING: u32 = 1 << 25;
    /// SIRTP/IRTPS: set interrupt remapping table pointer (one-shot).
    pub const INTERRUPT_TABLE_POINTER: u32 = 1 << 24;
    /// CFI/CFIS: compatibility format interrupts pass through.
    pub const COMPATIBILITY_FORMAT: u32 = 1 << 23;
    /// The status bits that are settings, written back with each command (VT-d 10.4.4: the
    /// one-shot ones must not be).
    pub const PERSISTENT: u32 =
        TRANSLATION | QUEUED_INVALIDATION | INTERRUPT_REMAPPING | COMPATIBILITY_FORMAT;
}

/// Fault status bits (VT-d 10.4.9).
pub mod fault_status {
    /// PFO: primary fault overflow.
    pub const OVERFLOW: u32 = 1 << 0;
    /// PPF: primary pending fault (some fault recording register holds a fault).
    pub const PENDING: u32 = 1 << 1;
    /// IQE: invalidation queue error.
    pub const QUEUE_ERROR: u32 = 1 << 4;
    /// ICE: invalidation completion error.
    pub const COMPLETION_ERROR: u32 = 1 << 5;
    /// ITE: invalidation time-out error.
    pub const TIMEOUT_ERROR: u32 = 1 << 6;
}

/// Fault event control bit 31: interrupt mask (set at reset: faults raise no interrupt).
pub const FAULT_EVENT_INTERRUPT_MASK: u32 = 1 << 31;

/// Fault reasons (VT-d 7.1.3, appendix A) that the checks expect.
pub mod fault_reason {
    /// A root entry is not present.
    pub const ROOT_NOT_PRESENT: u8 = 0x1;
    /// A context entry is not present.
    pub const CONTEXT_NOT_PRESENT: u8 = 0x2;
    /// A write to a page without write permission (a not-present entry included).
    pub const WRITE: u8 = 0x5;
    /// A read from a page without read permission (a not-present entry included).
    pub const READ: u8 = 0x6;
    /// An interrupt request's index is beyond the interrupt remapping table.
    pub const INTERRUPT_INDEX_BEYOND_TABLE: u8 = 0x21;
    /// An interrupt remapping table entry is not present.
    pub const INTERRUPT_ENTRY_NOT_PRESENT: u8 = 0x22;
    /// An interrupt request's source ID fails the entry's source validation.
    pub const INTERRUPT_SOURCE_ID: u8 = 0x26;
}

/// The capability register (VT-d 10.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability(pub u64);

impl Capability {
    /// SAGAW, bits 12:8: the supported adjusted guest address widths (bit 1: 39 bits,
    /// 3-level tables; bit 2: 48 bits, 4-level).
    pub fn sagaw(self) -> u8 {
        (self.0 >> 8 & 0x1f) as u8
    }

    /// 39-bit (3-level) second-level tables.
    pub fn supports_39bit(self) -> bool {
        self.sagaw() & 0b010 != 0
    }

    /// 48-bit (4-level) second-level tables.
    pub fn supports_48bit(self) -> bool {
        self.sagaw() & 0b100 != 0
    }

    /// SLLPS, bits 37:34: second-level large pages (bit 34: 2 MiB, bit 35: 1 GiB).
    pub fn large_pages(self) -> u8 {
        (self.0 >> 34 & 0xf) as u8
    }

    /// MGAW, bits 21:16, plus one: the maximum guest address width.
    pub fn maximum_guest_address_width(self) -> u8 {
        (self.0 >> 16 & 0x3f) as u8 + 1
    }

    /// ND, bits 2:0: the number of domain IDs, 2^(4 + 2 * ND).
    pub fn domains(self) -> u32 {
        1 << (4 + 2 * (self.0 & 7))
    }

    /// CM, bit 7: caching mode (not-present entries may be cached).
    pub fn caching_mode(self) -> bool {
        self.0 >> 7 & 1 != 0
    }

    /// FRO, bits 33:24, times 16: the first fault recording register's offset.
    pub fn fault_recording_offset(self) -> u64 {
        (self.0 >> 24 & 0x3ff) * 16
    }

    /// NFR, bits 47:40, plus one: how many fault recording registers there are.
    pub fn fault_recording_count(self) -> u32 {
        (self.0 >> 40 & 0xff) as u32 + 1
    }
}

/// The extended capability register (VT-d 10.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedCapability(pub u64);

impl ExtendedCapability {
    /// QI, bit 1: queued invalidation.
    pub fn queued_invalidation(self) -> bool {
        self.0 >> 1 & 1 != 0
    }

    /// IR, bit 3: interrupt remapping.
    pub fn interrupt_remapping(self) -> bool {
        self.0 >> 3 & 1 != 0
    }

    /// EIM, bit 4: extended interrupt mode (32-bit x2APIC destinations).
    pub fn extended_interrupt_mode(self) -> bool {
        self.0 >> 4 & 1 != 0
    }

    /// PT, bit 6: pass-through translation.
    pub fn pass_through(self) -> bool {
        self.0 >> 6 & 1 != 0
    }
}

/// One fault recording register (VT-d 10.4.14), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Its index.
    pub index: u32,
    /// FI: the faulting page address (DMA faults) or the interrupt index in bits 63:48
    /// (interrupt remapping faults).
    pub info: u64,
    /// SID: the requester's source ID (bus, device, function).
    pub source: u16,
    /// FR: the fault reason.
    pub reason: u8,
    /// T: the request was a read (clear: a write) — DMA faults.
    pub read: bool,
}

/// Why [`Iommu::probe`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// No ACPI DMAR table, or no remapping unit in it.
    NoUnit,
    /// The unit's registers could not be mapped.
    Map(MapError),
}

/// An interrupt remapping table entry's fields (VT-d 9.10, remapped format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemappedInterrupt {
    /// The vector delivered.
    pub vector: u8,
    /// The destination APIC ID (xAPIC: 8 bits, placed in bits 47:40 of the entry).
    pub destination: u32,
    /// Level triggered (clear: edge).
    pub level: bool,
    /// The requester whose interrupts the entry accepts (full source-ID verification), or
    /// `None` for no verification.
    pub source: Option<Address>,
}

/// The number of interrupt remapping table entries: 2^(S+1) with S = 7, one page of 16-byte
/// entries.
pub const INTERRUPT_TABLE_ENTRIES: u16 = 256;
/// The IRTA register's size field for [`INTERRUPT_TABLE_ENTRIES`].
const INTERRUPT_TABLE_SIZE_FIELD: u64 = 7;

/// How many polls of a status bit before a command counts as ignored.
const SPINS: u32 = 1_000_000;

/// A remapping unit, its registers mapped, with the tables the runtime gave it.
#[derive(Debug)]
pub struct Iommu {
    registers: DeviceWindow,
    root: DmaBuffer,
    /// Context tables and second-level page tables, found by physical address.
    tables: Vec<DmaBuffer>,
    queue: DmaBuffer,
    /// The next free queue slot (128-bit descriptors).
    queue_tail: u64,
    /// Where invalidation-wait descriptors write their status.
    wait_status: DmaBuffer,
    wait_sequence: u32,
    interrupt_table: DmaBuffer,
    next_interrupt_index: u16,
    /// Second-level paging levels: 3 (39-bit) or 4 (48-bit).
    levels: u32,
}

/// A requester's source ID (VT-d 3.4.1): bus in bits 15:8, device in 7:3, function in 2:0.
pub fn source_id(address: Address) -> u16 {
    u16::from(address.bus) << 8 | u16::from(address.device & 0x1f) << 3 | u16::from(address.function & 7)
}

impl Iommu {
    /// Maps the registers of the DMAR table's first remapping unit and allocates its root
    /// table, invalidation queue and interrupt remapping table (nothing is enabled yet).
    pub fn probe() -> Result<Iommu, ProbeError> {
        let unit = super::acpi::dmar()
            .and_then(|dmar| dmar.unit)
            .ok_or(ProbeError::NoUnit)?;
        let registers = super::mmu::map_device(unit.register_base, PAGE_SIZE).map_err(ProbeError::Map)?;
        let capability = Capability(registers.read_u64(register::CAPABILITY));
        Ok(Iommu {
            registers,
            root: DmaBuffer::new(1),
            tables: Vec::new(),
            queue: DmaBuffer::new(1),
            queue_tail: 0,
            wait_status: DmaBuffer::new(1),
            wait_sequence: 0,
            interrupt_table: DmaBuffer::new(1),
            next_interrupt_index: 0,
            levels: if capability.supports_39bit() { 3 } else { 4 },
        })
    }

    /// The register window.
    pub fn registers(&self) -> DeviceWindow {
        self.registers
    }

    /// The version register.
    pub fn version(&self) -> u32 {
        self.registers.read_u32(register::VERSION)
    }

    /// The capability register.
    pub fn capability(&self) -> Capability {
        Capability(self.registers.read_u64(register::CAPABILITY))
    }

    /// The extended capability register.
    pub fn extended_capability(&self) -> ExtendedCapability {
        ExtendedCapability(self.registers.read_u64(register::EXTENDED_CAPABILITY))
    }

    /// The global status register.
    pub fn global_status(&self) -> u32 {
        self.registers.read_u32(register::GLOBAL_STATUS)
    }

    /// The fault status register.
    pub fn fault_status(&self) -> u32 {
        self.registers.read_u32(register::FAULT_STATUS)
    }

    /// The fault event control register.
    pub fn fault_event_control(&self) -> u32 {
        self.registers.read_u32(register::FAULT_EVENT_CONTROL)
    }

    /// The root table's physical address as programmed.
    pub fn root_table_address(&self) -> u64 {
        self.registers.read_u64(register::ROOT_TABLE_ADDRESS)
    }

    /// The interrupt remapping table address register.
    pub fn interrupt_table_address(&self) -> u64 {
        self.registers
            .read_u64(register::INTERRUPT_REMAPPING_TABLE_ADDRESS)
    }

    /// The second-level paging levels in use.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// Issues one global command (`bit`, with the persistent settings of the status kept) and
    /// waits for its status bit to read `expected`; returns whether it did (one-shot commands
    /// included: their status bit reports the last one done).
    pub fn command(&self, bit: u32, set: bool) -> bool {
        let settings = self.global_status() & global::PERSISTENT;
        let value = if set { settings | bit } else { settings & !bit };
        self.registers.write_u32(register::GLOBAL_COMMAND, value);
        (0..SPINS).any(|_| (self.global_status() & bit != 0) == set)
    }

    /// Points the unit at the (empty) root table: SRTP, then RTPS.
    pub fn set_root_table(&self) -> bool {
        self.registers
            .write_u64(register::ROOT_TABLE_ADDRESS, self.root.physical_address());
        self.command(global::ROOT_TABLE_POINTER, true)
    }

    /// Points the unit at the (empty) interrupt remapping table of
    /// [`INTERRUPT_TABLE_ENTRIES`] entries, xAPIC format (EIME clear): SIRTP, then IRTPS.
    pub fn set_interrupt_table(&self) -> bool {
        self.registers.write_u64(
            register::INTERRUPT_REMAPPING_TABLE_ADDRESS,
            self.interrupt_table.physical_address() | INTERRUPT_TABLE_SIZE_FIELD,
        );
        self.command(global::INTERRUPT_TABLE_POINTER, true)
    }

    /// Gives the unit its invalidation queue (one page, 256 descriptors of 128 bits) and
    /// enables queued invalidation: QIE, then QIES.
    pub fn enable_queued_invalidation(&mut self) -> bool {
        self.registers.write_u64(register::INVALIDATION_QUEUE_TAIL, 0);
        self.queue_tail = 0;
        self.registers.write_u64(
            register::INVALIDATION_QUEUE_ADDRESS,
            self.queue.physical_address(),
        );
        self.command(global::QUEUED_INVALIDATION, true)
    }

    /// Enables DMA remapping: TE, then TES.
    pub fn enable_translation(&self) -> bool {
        self.command(global::TRANSLATION, true)
    }

    /// Enables interrupt remapping: IRE, then IRES.
    pub fn enable_interrupt_remapping(&self) -> bool {
        self.command(global::INTERRUPT_REMAPPING, true)
    }

    /// kvm-unit-tests' `vtd_init` order: queued invalidation, root table, interrupt remapping
    /// table, translation, interrupt remapping. Returns the first step that failed.
    pub fn init(&mut self) -> Result<(), &'static str> {
        if !self.enable_queued_invalidation() {
            return Err("QIE");
        }
        if !self.set_root_table() {
            return Err("SRTP");
        }
        if !self.set_interrupt_table() {
            return Err("SIRTP");
        }
        if !self.enable_translation() {
            return Err("TE");
        }
        if !self.enable_interrupt_remapping() {
            return Err("IRE");
        }
        Ok(())
    }

    /// Queues one 128-bit descriptor and moves the tail past it.
    fn submit(&mut self, low: u64, high: u64) {
        let slot = self.queue_tail % (PAGE_SIZE / 16);
        self.queue.write_u64(slot * 16, low);
        self.queue.write_u64(slot * 16 + 8, high);
        self.queue_tail = (slot + 1) % (PAGE_SIZE / 16);
        self.registers
            .write_u64(register::INVALIDATION_QUEUE_TAIL, self.queue_tail << 4);
    }

    /// Queues an invalidation wait descriptor that writes a fresh status value, and waits
    /// for the value; returns whether it came (every descriptor before it is then done).
    pub fn wait_for_invalidations(&mut self) -> bool {
        /// Wait descriptor: type 5, SW (status write) bit 5.
        const WAIT: u64 = 0x5 | 1 << 5;
        self.wait_sequence = self.wait_sequence.wrapping_add(1).max(1);
        let sequence = self.wait_sequence;
        self.submit(
            WAIT | u64::from(sequence) << 32,
            self.wait_status.physical_address(),
        );
        (0..SPINS).any(|_| self.wait_status.read_u32(0) == sequence)
    }

    /// Invalidates every cached context entry, IOTLB entry and interrupt entry (global
    /// granularity), then waits for completion. Returns whether the wait completed.
    pub fn invalidate_all(&mut self) -> bool {
        /// Context-cache invalidate: type 1, global granularity (bits 5:4 = 1).
        const CONTEXT_GLOBAL: u64 = 0x1 | 1 << 4;
        /// IOTLB invalidate: type 2, global granularity, drain reads (bit 7) and writes (6).
        const IOTLB_GLOBAL: u64 = 0x2 | 1 << 4 | 1 << 7 | 1 << 6;
        /// Interrupt entry cache invalidate: type 4, global (bit 4 clear).
        const INTERRUPT_ENTRY_GLOBAL: u64 = 0x4;
        self.submit(CONTEXT_GLOBAL, 0);
        self.submit(IOTLB_GLOBAL, 0);
        self.submit(INTERRUPT_ENTRY_GLOBAL, 0);
        self.wait_for_invalidations()
    }

    /// The table page at `physical` that the runtime allocated.
    fn table_at(&self, physical: u64) -> &DmaBuffer {
        if physical == self.root.physical_address() {
            return &self.root;
        }
        self.tables
            .iter()
            .find(|table| table.physical_address() == physical)
            .expect("a table the runtime allocated")
    }

    /// The physical address of the next-level table that entry `index` of `table` points to,
    /// made (present, with `flags` in the low bits) when absent.
    fn next_table(&mut self, table: u64, index: u64, present: u64, flags: u64) -> u64 {
        let entry = self.table_at(table).read_u64(index * 8);
        if entry & present != 0 {
            return entry & 0x000f_ffff_ffff_f000;
        }
        let fresh = DmaBuffer::new(1);
        let address = fresh.physical_address();
        self.tables.push(fresh);
        self.table_at(table).write_u64(index * 8, address | flags);
        address
    }

    /// The second-level page table root of `source`'s context entry, making the root entry
    /// (for its bus) and the context entry (domain = the source ID, translation through
    /// second-level tables, fault reporting unless `report_faults` is false) when absent.
    fn context(&mut self, source: Address, report_faults: bool) -> u64 {
        let context_table = self.next_table(self.root.physical_address(), u64::from(source.bus) * 2, 1, 1);
        let entry = u64::from(source.device & 0x1f) << 3 | u64::from(source.function & 7);
        let context = self.table_at(context_table);
        let low = context.read_u64(entry * 16);
        if low & 1 != 0 {
            return low & 0x000f_ffff_ffff_f000;
        }
        let page_table = DmaBuffer::new(1);
        let page_table_address = page_table.physical_address();
        self.tables.push(page_table);
        let address_width = if self.levels == 3 { 1 } else { 2 };
        let high = address_width | u64::from(source_id(source)) << 8;
        // Present, FPD unless faults are reported, TT 0 (second-level translation only).
        let low = page_table_address | 1 | u64::from(!report_faults) << 1;
        let context = self.table_at(context_table);
        context.write_u64(entry * 16 + 8, high);
        context.write_u64(entry * 16, low);
        page_table_address
    }

    /// Maps the IOVAs `iova..iova + buffer.size()` of requester `source` onto `buffer`, 4 KiB
    /// pages readable and, with `writable`, writable; faults of `source` are recorded unless
    /// `report_faults` is false (kvm-unit-tests sets FPD). Invalidates the caches after.
    /// Returns whether the invalidation completed.
    ///
    /// # Panics
    /// When `iova` is not page aligned or beyond the address width.
    pub fn map(
        &mut self,
        source: Address,
        iova: u64,
        buffer: &DmaBuffer,
        writable: bool,
        report_faults: bool,
    ) -> bool {
        assert!(
            iova.is_multiple_of(PAGE_SIZE),
            "IOVA {iova:#x} is not page aligned"
        );
        let width = 12 + 9 * self.levels;
        assert!(
            (iova + buffer.size()) >> width == 0,
            "IOVA {iova:#x} beyond {width} bits"
        );
        let top = self.context(source, report_faults);
        for offset in (0..buffer.size()).step_by(PAGE_SIZE as usize) {
            let page = iova + offset;
            let mut table = top;
            for level in (2..=self.levels).rev() {
                let index = page >> (12 + 9 * (level - 1)) & 0x1ff;
                // Upper levels grant both: the leaf decides.
                table = self.next_table(table, index, 0b11, 0b11);
            }
            let leaf = 0b01 | u64::from(writable) << 1;
            self.table_at(table).write_u64(
                (page >> 12 & 0x1ff) * 8,
                (buffer.physical_address() + offset) | leaf,
            );
        }
        self.invalidate_all()
    }

    /// Removes the 4 KiB mapping of `iova` for `source` (if any) and invalidates the caches;
    /// returns whether the invalidation completed.
    pub fn unmap(&mut self, source: Address, iova: u64) -> bool {
        let top = self.context(source, true);
        let mut table = top;
        for level in (2..=self.levels).rev() {
            let index = iova >> (12 + 9 * (level - 1)) & 0x1ff;
            let entry = self.table_at(table).read_u64(index * 8);
            if entry & 0b11 == 0 {
                return self.invalidate_all();
            }
            table = entry & 0x000f_ffff_ffff_f000;
        }
        self.table_at(table).write_u64((iova >> 12 & 0x1ff) * 8, 0);
        self.invalidate_all()
    }

    /// Writes a present interrupt remapping table entry for `interrupt` (fixed delivery,
    /// physical destination, remapped format, faults reported) at a fresh index, invalidates
    /// the interrupt entry cache, and returns the index.
    ///
    /// # Panics
    /// When the table is full.
    pub fn allocate_interrupt(&mut self, interrupt: RemappedInterrupt) -> u16 {
        // Index 0 stays unused, as kvm-unit-tests leaves it.
        self.next_interrupt_index += 1;
        let index = self.next_interrupt_index;
        assert!(index < INTERRUPT_TABLE_ENTRIES, "interrupt remapping table full");
        self.write_interrupt(index, Some(interrupt));
        index
    }

    /// Writes entry `index` of the interrupt remapping table (`None`: not present) and
    /// invalidates the interrupt entry cache; returns whether the invalidation completed.
    pub fn write_interrupt(&mut self, index: u16, interrupt: Option<RemappedInterrupt>) -> bool {
        let offset = u64::from(index) * 16;
        match interrupt {
            None => {
                self.interrupt_table.write_u64(offset, 0);
                self.interrupt_table.write_u64(offset + 8, 0);
            }
            Some(interrupt) => {
                // xAPIC mode (EIME clear): the 8-bit APIC ID sits in bits 47:40.
                let destination = u64::from(interrupt.destination & 0xff) << 8;
                let low = 1 // present
                    | u64::from(interrupt.level) << 4
                    | u64::from(interrupt.vector) << 16
                    | destination << 32;
                // SVT 1: verify the full source ID (SQ 0).
                let high = interrupt
                    .source
                    .map_or(0, |source| u64::from(source_id(source)) | 1 << 18);
                self.interrupt_table.write_u64(offset + 8, high);
                self.interrupt_table.write_u64(offset, low);
            }
        }
        self.invalidate_all()
    }

    /// The MSI address and data of remapped-format interrupt `index` (VT-d 5.1.2.2: 0xFEE in
    /// bits 31:20, the handle's bits 14:0 in 19:5, format bit 4, SHV clear, handle bit 15 in
    /// bit 2; the data is then unused).
    pub fn msi_message(index: u16) -> (u64, u32) {
        let index = u64::from(index);
        let address = 0xfee0_0000 | (index & 0x7fff) << 5 | 1 << 4 | (index >> 15 & 1) << 2;
        (address, 0)
    }

    /// The I/O APIC redirection entry (low, high dwords) of remapped-format interrupt `index`
    /// (VT-d 5.1.5.1: format bit 48, the handle's bits 14:0 in 63:49 and bit 15 in bit 11;
    /// the vector and trigger mode repeated for the I/O APIC's own EOI handling).
    pub fn io_apic_entry(index: u16, vector: u8, level: bool) -> (u32, u32) {
        let index = u32::from(index);
        let low = u32::from(vector) | u32::from(level) << 15 | (index >> 15 & 1) << 11;
        let high = 1 << 16 | (index & 0x7fff) << 17;
        (low, high)
    }

    /// The fault recording registers that hold a fault (F set), decoded.
    pub fn fault_records(&self) -> Vec<FaultRecord> {
        let capability = self.capability();
        (0..capability.fault_recording_count())
            .filter_map(|index| {
                let offset = capability.fault_recording_offset() + u64::from(index) * 16;
                let low = self.registers.read_u64(offset);
                let high = self.registers.read_u64(offset + 8);
                (high >> 63 != 0).then_some(FaultRecord {
                    index,
                    info: low & !0xfff,
                    source: high as u16,
                    reason: (high >> 32) as u8,
                    read: high >> 62 & 1 != 0,
                })
            })
            .collect()
    }

    /// Clears every recorded fault (F is write-1-to-clear) and the overflow bit.
    pub fn clear_faults(&self) {
        let capability = self.capability();
        for index in 0..capability.fault_recording_count() {
            let offset = capability.fault_recording_offset() + u64::from(index) * 16;
            self.registers.write_u32(offset + 12, 1 << 31);
        }
        self.registers
            .write_u32(register::FAULT_STATUS, fault_status::OVERFLOW);
    }
}
