//! intel-iommu: kvm-unit-tests' x86/intel-iommu.c: the VT-d unit brought up as
//! `vtd_init` does (queued invalidation, root table, interrupt remapping table, translation,
//! interrupt remapping) and its status and capabilities checked, then QEMU's `edu` device's DMA
//! through a mapped IOVA (to the device and back, the data compared), and edu's interrupt
//! remapped twice: INTx through an I/O APIC entry in remappable format, and MSI with a
//! remappable-format message, each arriving on the vector its remapping table entry names.
//! Beyond kvm-unit-tests: blocked DMA (writes and reads to an unmapped IOVA, a write to a
//! read-only page, a DMA after an unmap, which only the invalidation makes effective) with
//! the faults the unit records (reason, source ID, address, read or write), a factorial and
//! edu's identity, a DMA-completion MSI, and an MSI whose remapping table entry is not present.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use vmunit::arch::intel_iommu::{
    FaultRecord, Iommu, RemappedInterrupt, fault_reason, fault_status, global, source_id,
};
use vmunit::arch::pci::q35_intx_gsi;
use vmunit::arch::{apic, ioapic, set_interrupt_handler};
use vmunit::memory::DmaBuffer;
use vmunit::pci::edu::{self, Edu};
use vmunit::pci::{Address, Command, Function, HostBridge, device, register, vendor};
use vmunit::time::wait_until;
use vmunit::{println, report, report_info, report_kfail, report_skip};

vmunit::main!(main);

/// kvm-unit-tests' VTD_TEST_VECTOR_IOAPIC.
const VECTOR_IO_APIC: u8 = 0xed;
/// kvm-unit-tests' VTD_TEST_VECTOR_MSI.
const VECTOR_MSI: u8 = 0xee;
/// kvm-unit-tests' DMA_TEST_WORD.
const DMA_TEST_WORD: u32 = 0x1234_5678;
/// How long a DMA may take: edu moves the data 100 ms (virtual) after the command.
const DMA_PATIENCE_MS: u64 = 2000;
/// How long an interrupt may take to arrive.
const INTERRUPT_PATIENCE_MS: u64 = 1000;

/// The VT-d unit is QEMU's emulation (hw/i386/intel_iommu.c) under TCG and KVM alike: its
/// defects are known failures on every host this suite runs on.
const QEMU_INTEL_IOMMU: bool = true;

/// Interrupts counted per vector.
static COUNTS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
/// kvm-unit-tests' `edu_isr` counts; edu's interrupt status is acknowledged by `main` after
/// the wait (an edge-triggered entry and MSIs need nothing from the handler).
fn edu_handler(vector: u8) {
    COUNTS[usize::from(vector)].fetch_add(1, Ordering::SeqCst);
}

fn count(vector: u8) -> u32 {
    COUNTS[usize::from(vector)].load(Ordering::SeqCst)
}

fn main(arguments: &[&str]) {
    let mut iommu = match Iommu::probe() {
        Ok(iommu) => iommu,
        Err(error) => {
            report!(
                false,
                "the ACPI DMAR table names a VT-d unit ('-device intel-iommu' on q35): {error:?}"
            );
            return;
        }
    };
    vtd_init(&mut iommu);
    let (edu, function) = match edu_init() {
        Ok(found) => found,
        // Its failure is reported: the checks that need edu cannot run.
        Err(EduMissing::Broken) => return,
        Err(EduMissing::Absent) => {
            if arguments.contains(&"reproduce-cached-read-only-write") {
                report!(false, "the reproducer needs '-device edu'");
                return;
            }
            report_skip!("DMAR 4B memcpy test (no edu: give '-device edu')");
            report_skip!("IR IOAPIC (no edu)");
            report_skip!("IR MSI (no edu)");
            return;
        }
    };
    if iommu.global_status() & global::TRANSLATION == 0 {
        report_skip!("DMAR 4B memcpy test (DMA remapping is not enabled: no DMA without it)");
        return;
    }
    if !vtd_sentinel(&mut iommu, &edu, &function) {
        report_skip!("DMAR 4B memcpy test (the unit let an unmapped DMA write through)");
        return;
    }
    if arguments.contains(&"reproduce-cached-read-only-write") {
        reproduce_cached_read_only_write(&mut iommu, &edu, &function);
        return;
    }
    vtd_dmar(&mut iommu, &edu, &function);
    vtd_faults(&mut iommu, &edu, &function);
    vtd_ir(&mut iommu, &edu, &function);
}

/// kvm-unit-tests' `vtd_init` and its eight reports, plus the registers read back.
fn vtd_init(iommu: &mut Iommu) {
    let _prefix = vmunit::prefix("vtd_init");
    let version = iommu.version();
    let capability = iommu.capability();
    let extended = iommu.extended_capability();
    println!("VT-d version:   {version:#x}");
    println!("     cap:       {:#018x}", capability.0);
    println!("     ecap:      {:#018x}", extended.0);
    report!(
        (version >> 4 & 0xf) >= 1,
        "VT-d major version is at least 1 (version {version:#x})"
    );
    report!(
        extended.queued_invalidation() && extended.interrupt_remapping(),
        "ECAP advertises queued invalidation and interrupt remapping (ecap {:#x})",
        extended.0
    );
    report!(
        iommu.global_status() == 0,
        "nothing is enabled at reset (GSTS {:#x})",
        iommu.global_status()
    );
    report!(
        iommu.fault_event_control() & vmunit::arch::intel_iommu::FAULT_EVENT_INTERRUPT_MASK != 0,
        "fault events are masked at reset (FECTL {:#x})",
        iommu.fault_event_control()
    );
    if let Err(step) = iommu.init() {
        report_info!("the {step} command's status bit never changed");
    }
    let status = iommu.global_status();
    report!(iommu.fault_status() == 0, "fault status check");
    report!(status & global::QUEUED_INVALIDATION != 0, "QI enablement");
    report!(status & global::ROOT_TABLE_POINTER != 0, "DMAR table setup");
    report!(status & global::INTERRUPT_TABLE_POINTER != 0, "IR table setup");
    report!(status & global::TRANSLATION != 0, "DMAR enablement");
    report!(status & global::INTERRUPT_REMAPPING != 0, "IR enablement");
    report!(
        capability.supports_39bit(),
        "DMAR support 39 bits address width (SAGAW {:#x})",
        capability.sagaw()
    );
    report!(
        capability.large_pages() & 0b11 == 0b11,
        "DMAR support huge pages (SLLPS {:#x}: 2 MiB and 1 GiB)",
        capability.large_pages()
    );
    println!("DMAR table address: {:#018x}", iommu.root_table_address());
    println!("IR table address: {:#018x}", iommu.interrupt_table_address());
    report!(
        iommu.wait_for_invalidations(),
        "an invalidation wait descriptor writes its status (queue works)"
    );
}

/// Why [`edu_init`] gave no edu.
enum EduMissing {
    /// No edu function on the bus: the checks that need it are skipped.
    Absent,
    /// edu is there but could not be set up: a failure, already reported.
    Broken,
}

/// kvm-unit-tests' `edu_init`: finds edu, assigns its BAR, checks it is alive; also enables
/// bus mastering, which its DMA needs.
fn edu_init() -> Result<(Edu, Function), EduMissing> {
    let mut bridge = match HostBridge::probe() {
        Ok(bridge) => bridge,
        Err(error) => {
            report!(false, "q35's ECAM host bridge (ACPI MCFG) is usable: {error:?}");
            return Err(EduMissing::Broken);
        }
    };
    let function = bridge
        .find(vendor::QEMU, device::QEMU_EDU)
        .ok_or(EduMissing::Absent)?;
    let config = function.config;
    println!(
        "Found EDU device: {} {:04x}:{:04x} revision {:#x}, interrupt pin {}, line {}",
        function.address(),
        function.vendor_id,
        function.device_id,
        config.revision(),
        config.read_u8(register::INTERRUPT_PIN),
        config.read_u8(register::INTERRUPT_LINE)
    );
    let bars = match bridge.assign_bars(&function) {
        Ok(bars) => bars,
        Err(error) => {
            report!(false, "edu's BAR gets an address: {error:?}");
            return Err(EduMissing::Broken);
        }
    };
    // edu is there: a missing BAR 0 is a failure, not the "no edu" skip.
    let Some(bar) = bars.iter().find(|bar| bar.probe.index == edu::BAR) else {
        report!(false, "edu has a memory BAR {} (BARs {bars:x?})", edu::BAR);
        return Err(EduMissing::Broken);
    };
    report!(
        bar.probe.size == edu::BAR_SIZE,
        "edu's BAR 0 is 1 MiB (got {:#x}, at {:#x})",
        bar.probe.size,
        bar.cpu_address
    );
    let window = match bridge.map_bar(bar) {
        Ok(window) => window,
        Err(error) => {
            report!(false, "edu's BAR maps: {error}");
            return Err(EduMissing::Broken);
        }
    };
    config.set_command(config.command().with(Command::BUS_MASTER));
    let edu = Edu::new(window);
    let identification = edu.identification();
    report!(
        identification as u8 == edu::MAGIC && identification >> 24 >= 1,
        "edu identifies itself (got {identification:#010x}, expected 0x01xx00ed)"
    );
    report!(edu.is_alive(1), "edu is alive (liveness reads ~1)");
    edu.start_factorial(10);
    let done = edu.wait_factorial(1000);
    let factorial = edu.factorial();
    report!(
        done && factorial == 3_628_800,
        "edu computes 10! = 3628800 (got {factorial}, done {done})"
    );
    Ok((edu, function))
}

/// Starts a DMA from edu's buffer at `offset` to `iova` and waits for it.
fn dma_from_device(edu: &Edu, offset: u64, iova: u64, count: u64) -> bool {
    // SAFETY: `main` runs no DMA unless the unit reports translation enabled (TES), and then
    // edu's writes reach only what its second-level tables map, which `Iommu::map` makes of
    // DmaBuffer pages only (touched by volatile accesses alone, never freed); an unmapped
    // IOVA reaches nothing. A unit that ignored its tables is the defect these checks look
    // for: the first such write goes to an IOVA that is itself a DmaBuffer's physical
    // address (the sentinel), so that it shows as a FAIL, and the checks stop there.
    #[allow(unsafe_code)]
    unsafe {
        edu.start_dma_from_device(offset, iova, count, false)
    };
    edu.wait_dma(DMA_PATIENCE_MS)
}

/// Starts a DMA from `iova` to edu's buffer at `offset` and waits for it.
fn dma_to_device(edu: &Edu, iova: u64, offset: u64, count: u64) -> bool {
    edu.start_dma_to_device(iova, offset, count, false);
    edu.wait_dma(DMA_PATIENCE_MS)
}

/// kvm-unit-tests' `vtd_test_dmar`: a page mapped at IOVA 0, its first 4 bytes DMAed to edu
/// and back to bytes 4..8; plus a whole page through an IOVA far from its physical address.
fn vtd_dmar(iommu: &mut Iommu, edu: &Edu, function: &Function) {
    let _prefix = vmunit::prefix("vtd_dmar");
    let source = function.address();
    let page = DmaBuffer::new(1);
    page.write_u32(0, DMA_TEST_WORD);
    let mapped = iommu.map(source, 0, &page, true, true);
    println!(
        "map 4K page IOVA 0 to {:#x} (sid={:#06x})",
        page.physical_address(),
        source_id(source)
    );
    report!(
        mapped,
        "mapping IOVA 0 is invalidated (the wait descriptor completes)"
    );
    let to = dma_to_device(edu, 0, 0, 4);
    let from = dma_from_device(edu, 0, 4, 4);
    report!(
        to && from && page.read_u32(4) == DMA_TEST_WORD,
        "DMAR 4B memcpy test (bytes 4..8 read {:#x}, DMAs done {to}/{from})",
        page.read_u32(4)
    );
    // A whole page: pattern in, through edu, out to a second page at another IOVA.
    let input = DmaBuffer::new(1);
    let output = DmaBuffer::new(1);
    for offset in (0..4096).step_by(4) {
        input.write_u32(offset, 0xa5a5_0000 ^ (offset as u32 * 0x0101));
    }
    const IOVA_IN: u64 = 0x40_0000;
    const IOVA_OUT: u64 = 0x7f_f000;
    let mapped =
        iommu.map(source, IOVA_IN, &input, false, true) && iommu.map(source, IOVA_OUT, &output, true, true);
    let to = dma_to_device(edu, IOVA_IN, 0, 4096);
    let from = dma_from_device(edu, 0, IOVA_OUT, 4096);
    let first_difference = (0..4096)
        .step_by(4)
        .find(|&offset| output.read_u32(offset) != input.read_u32(offset));
    report!(
        mapped && to && from && first_difference.is_none(),
        "4 KiB DMA from IOVA {IOVA_IN:#x} (physical {:#x}) through edu to IOVA {IOVA_OUT:#x} \
         (physical {:#x}) arrives whole (first difference at {first_difference:?})",
        input.physical_address(),
        output.physical_address()
    );
    report!(
        iommu.fault_status() == 0 && iommu.fault_records().is_empty(),
        "mapped DMA records no fault (FSTS {:#x})",
        iommu.fault_status()
    );
}

/// Checks that exactly one fault is recorded, as `expected` says, then clears it.
fn check_fault(iommu: &Iommu, what: &str, expected: FaultRecord) {
    let status = iommu.fault_status();
    let records = iommu.fault_records();
    report!(
        status & fault_status::PENDING != 0,
        "{what}: a primary fault is pending (FSTS {status:#x})"
    );
    match records.as_slice() {
        [record] => {
            report!(
                record.reason == expected.reason
                    && record.source == expected.source
                    && record.info == expected.info
                    && record.read == expected.read,
                "{what}: the fault record says reason {:#x}, source {:#06x}, address {:#x}, {} \
                 (got reason {:#x}, source {:#06x}, address {:#x}, {})",
                expected.reason,
                expected.source,
                expected.info,
                if expected.read { "read" } else { "write" },
                record.reason,
                record.source,
                record.info,
                if record.read { "read" } else { "write" }
            );
        }
        _ => {
            report!(false, "{what}: one fault recorded (got {records:?})");
        }
    }
    iommu.clear_faults();
    report!(
        iommu.fault_status() == 0 && iommu.fault_records().is_empty(),
        "{what}: clearing F leaves no fault pending (FSTS {:#x})",
        iommu.fault_status()
    );
}

/// Before any other DMA: a write to an unmapped IOVA is blocked and recorded. The IOVA is
/// the physical address of a sentinel page, so a unit that let the write through
/// untranslated would write the sentinel, harmlessly. Returns whether it was blocked.
fn vtd_sentinel(iommu: &mut Iommu, edu: &Edu, function: &Function) -> bool {
    let _prefix = vmunit::prefix("vtd_fault");
    let sid = source_id(function.address());
    // A mapping first, so that edu has a context entry and the fault is the page's.
    let context_page = DmaBuffer::new(1);
    const IOVA_CONTEXT: u64 = 0x7fe000;
    report!(
        iommu.map(function.address(), IOVA_CONTEXT, &context_page, true, true),
        "edu's context entry is made and invalidated"
    );
    let sentinel = DmaBuffer::new(1);
    sentinel.fill(0x5a);
    let iova = sentinel.physical_address();
    let done = dma_from_device(edu, 0, iova, 4);
    let blocked = sentinel.read_u32(0) == 0x5a5a_5a5a;
    report!(
        done && blocked,
        "a DMA write to unmapped IOVA {iova:#x} is blocked (the page at that physical address \
         reads {:#x})",
        sentinel.read_u32(0)
    );
    check_fault(
        iommu,
        "unmapped write",
        FaultRecord {
            index: 0,
            info: iova,
            source: sid,
            reason: fault_reason::WRITE,
            read: false,
        },
    );
    blocked
}

/// DMA the unit must block, and the faults it records.
fn vtd_faults(iommu: &mut Iommu, edu: &Edu, function: &Function) {
    let _prefix = vmunit::prefix("vtd_fault");
    let source = function.address();
    let sid = source_id(source);
    // A read of an unmapped IOVA (the sentinel's address, unmapped for edu).
    let sentinel = DmaBuffer::new(1);
    let iova = sentinel.physical_address();
    let done = dma_to_device(edu, iova, 0x100, 4);
    report!(done, "a DMA read from unmapped IOVA {iova:#x} ends");
    check_fault(
        iommu,
        "unmapped read",
        FaultRecord {
            index: 0,
            info: iova,
            source: sid,
            reason: fault_reason::READ,
            read: true,
        },
    );
    // Read-only: edu may read the page but not write it. The write comes first, while the
    // unit has no translation of the page cached.
    let read_only = DmaBuffer::new(1);
    read_only.write_u32(0, 0xfeed_f00d);
    const IOVA_READ_ONLY: u64 = 0x20_0000;
    let mapped = iommu.map(source, IOVA_READ_ONLY, &read_only, false, true);
    let written = dma_from_device(edu, 0, IOVA_READ_ONLY + 4, 4);
    report!(
        mapped && written && read_only.read_u32(4) == 0,
        "a DMA write to a read-only IOVA is blocked (bytes 4..8 read {:#x})",
        read_only.read_u32(4)
    );
    check_fault(
        iommu,
        "read-only write",
        FaultRecord {
            index: 0,
            info: IOVA_READ_ONLY,
            source: sid,
            reason: fault_reason::WRITE,
            read: false,
        },
    );
    let read = dma_to_device(edu, IOVA_READ_ONLY, 0x200, 4);
    report!(
        read && iommu.fault_status() == 0,
        "a DMA read from the read-only IOVA records no fault (FSTS {:#x})",
        iommu.fault_status()
    );
    cached_read_only_write(iommu, edu, sid, &read_only, IOVA_READ_ONLY);
    // The read went through: bring it back to a writable page.
    let check = DmaBuffer::new(1);
    const IOVA_CHECK: u64 = 0x21_0000;
    let mapped = iommu.map(source, IOVA_CHECK, &check, true, true);
    let back = dma_from_device(edu, 0x200, IOVA_CHECK, 4);
    report!(
        mapped && back && check.read_u32(0) == 0xfeed_f00d,
        "a DMA read from the read-only IOVA is allowed (read back {:#x})",
        check.read_u32(0)
    );
    // Unmap after use: the unit cached the translation, which the invalidation drops.
    let unmapped = iommu.unmap(source, IOVA_CHECK);
    check.write_u32(8, 0);
    let done = dma_from_device(edu, 0x200, IOVA_CHECK + 8, 4);
    report!(
        unmapped && done && check.read_u32(8) == 0,
        "after unmapping and invalidating, a DMA write to the IOVA is blocked (reads {:#x})",
        check.read_u32(8)
    );
    check_fault(
        iommu,
        "unmapped after use",
        FaultRecord {
            index: 0,
            info: IOVA_CHECK,
            source: sid,
            reason: fault_reason::WRITE,
            read: false,
        },
    );
}

/// A DMA write to a read-only page whose translation the unit cached (by a read just
/// before) is blocked, and recorded as a fault like the uncached one. QEMU's unit blocks it
/// but records nothing: `vtd_do_iommu_translate` (hw/i386/intel_iommu.c) returns an IOTLB
/// hit's access flags without the permission check that reports VTD_FR_WRITE, and the memory
/// core then drops the write silently (`address_space_translate_iommu`, system/physmem.c).
/// The unit is QEMU's under both accelerators, so the known failure holds for both.
fn cached_read_only_write(iommu: &mut Iommu, edu: &Edu, sid: u16, page: &DmaBuffer, iova: u64) {
    let written = dma_from_device(edu, 0, iova + 8, 4);
    report!(
        written && page.read_u32(8) == 0,
        "a DMA write to a read-only IOVA the unit has cached is blocked (bytes 8..12 read {:#x})",
        page.read_u32(8)
    );
    let status = iommu.fault_status();
    let records = iommu.fault_records();
    let recorded = status & fault_status::PENDING != 0
        && records.len() == 1
        && records[0].reason == fault_reason::WRITE
        && records[0].source == sid
        && records[0].info == iova;
    report_kfail!(
        QEMU_INTEL_IOMMU,
        recorded,
        "the blocked write to the cached read-only IOVA is recorded: reason {:#x}, source \
         {sid:#06x}, address {iova:#x} (FSTS {status:#x}, records {records:?}; \
         reproduce-vtd-cached-read-only-write)",
        fault_reason::WRITE
    );
    iommu.clear_faults();
}

/// The reproducer of QEMU's unrecorded fault: a read-only page, read once by DMA (the unit
/// caches the translation), then written: the write must be blocked and recorded.
fn reproduce_cached_read_only_write(iommu: &mut Iommu, edu: &Edu, function: &Function) {
    let _prefix = vmunit::prefix("reproduce");
    let page = DmaBuffer::new(1);
    const IOVA: u64 = 0x20_0000;
    let source = function.address();
    let mapped = iommu.map(source, IOVA, &page, false, true);
    let read = dma_to_device(edu, IOVA, 0, 4);
    let written = dma_from_device(edu, 0, IOVA + 8, 4);
    let status = iommu.fault_status();
    let records = iommu.fault_records();
    report!(
        mapped
            && read
            && written
            && status & fault_status::PENDING != 0
            && records.len() == 1
            && records[0].reason == fault_reason::WRITE,
        "a DMA write to a read-only IOVA after a DMA read of it is recorded as a write fault \
         (FSTS {status:#x}, records {records:?})"
    );
}

/// The I/O APIC input edu's INTA reaches (q35's PIRQ routing; the Interrupt Line register
/// kvm-unit-tests reads holds the firmware's 8259 choice, which qboot does not route).
fn intx_line(function: &Function) -> Option<u8> {
    let pin = function.config.read_u8(register::INTERRUPT_PIN);
    let address = function.address();
    if address.bus != 0 {
        return None;
    }
    q35_intx_gsi(address.device, pin).filter(|&line| line <= ioapic::max_redirection_entry())
}

/// Acknowledges what edu raised; returns the interrupt status it had.
fn acknowledge(edu: &Edu) -> u32 {
    let status = edu.interrupt_status();
    edu.acknowledge_interrupt(status);
    status
}

/// kvm-unit-tests' `vtd_test_ir`: edu's INTx through a remappable I/O APIC entry, then its
/// MSI with a remappable message; plus the DMA-completion MSI and a not-present entry.
fn vtd_ir(iommu: &mut Iommu, edu: &Edu, function: &Function) {
    let _prefix = vmunit::prefix("vtd_ir");
    ioapic::mask_legacy_pic();
    let msi = function.config.msi();
    if let Some(msi) = msi {
        msi.set_enabled(false);
    }
    set_interrupt_handler(VECTOR_IO_APIC, Some(edu_handler));
    set_interrupt_handler(VECTOR_MSI, Some(edu_handler));
    let destination = apic::id();
    match intx_line(function) {
        None => {
            report_skip!("IR IOAPIC (edu's interrupt line is not set)");
        }
        Some(line) => {
            // The I/O APIC's messages carry its own source ID (the DMAR table's I/O APIC device
            // scope), not edu's: kvm-unit-tests' verification of edu's ID works only because
            // QEMU's I/O APIC sends no source ID. This entry verifies none.
            let index = iommu.allocate_interrupt(RemappedInterrupt {
                vector: VECTOR_IO_APIC,
                destination,
                level: false,
                source: None,
            });
            let (low, high) = Iommu::io_apic_entry(index, VECTOR_IO_APIC, false);
            println!("INTR: IRTE index {index} for I/O APIC input {line}: {high:#010x}{low:08x}");
            ioapic::write_entry_dwords(line, low, high);
            edu.raise_interrupt(1);
            let arrived = wait_until(INTERRUPT_PATIENCE_MS, || count(VECTOR_IO_APIC) >= 1);
            let status = acknowledge(edu);
            ioapic::set_mask(line, true);
            report!(
                arrived && count(VECTOR_IO_APIC) == 1 && status == 1,
                "IR IOAPIC (one interrupt on {VECTOR_IO_APIC:#x} from input {line}, got {}; \
                 edu's status {status:#x})",
                count(VECTOR_IO_APIC)
            );
        }
    }
    let Some(msi) = msi else {
        report_skip!("IR MSI (edu has no MSI capability)");
        return;
    };
    let index = iommu.allocate_interrupt(RemappedInterrupt {
        vector: VECTOR_MSI,
        destination,
        level: false,
        source: Some(function.address()),
    });
    let (address, data) = Iommu::msi_message(index);
    println!("vtd_setup_msi: msi_addr={address:#x}, msi_data={data:#x} (IRTE index {index})");
    report!(
        msi.configure(address, data),
        "edu's MSI takes the remappable message"
    );
    edu.raise_interrupt(1);
    let arrived = wait_until(INTERRUPT_PATIENCE_MS, || count(VECTOR_MSI) >= 1);
    acknowledge(edu);
    report!(
        arrived && count(VECTOR_MSI) == 1 && count(VECTOR_IO_APIC) == 1,
        "IR MSI (one interrupt on {VECTOR_MSI:#x}, got {}; none more on {VECTOR_IO_APIC:#x})",
        count(VECTOR_MSI)
    );
    // A DMA that raises its completion interrupt: MSI again, through the same entry.
    let page = DmaBuffer::new(1);
    const IOVA_IRQ: u64 = 0x30_0000;
    let mapped = iommu.map(function.address(), IOVA_IRQ, &page, true, true);
    edu.start_dma_to_device(IOVA_IRQ, 0, 4, true);
    let arrived = wait_until(DMA_PATIENCE_MS, || count(VECTOR_MSI) >= 2);
    let status = acknowledge(edu);
    report!(
        mapped && arrived && count(VECTOR_MSI) == 2 && status == edu::DMA_INTERRUPT,
        "edu's DMA-completion interrupt arrives remapped on {VECTOR_MSI:#x} (count {}, edu's \
         status {status:#x})",
        count(VECTOR_MSI)
    );
    // An entry that verifies another requester's source ID: edu's MSI is blocked and the
    // fault recorded (reason 0x26).
    let other = Address {
        device: (function.address().device + 1) & 0x1f,
        ..function.address()
    };
    iommu.write_interrupt(
        index,
        Some(RemappedInterrupt {
            vector: VECTOR_MSI,
            destination,
            level: false,
            source: Some(other),
        }),
    );
    edu.raise_interrupt(1);
    let arrived = wait_until(200, || count(VECTOR_MSI) > 2);
    acknowledge(edu);
    report!(
        !arrived,
        "an MSI whose remapping entry verifies source {other} is blocked (count {})",
        count(VECTOR_MSI)
    );
    let records = iommu.fault_records();
    report!(
        records.len() == 1
            && records[0].reason == fault_reason::INTERRUPT_SOURCE_ID
            && records[0].source == source_id(function.address())
            && records[0].info >> 48 == u64::from(index),
        "the MSI from the wrong source is recorded: reason {:#x}, source {:#06x}, index {index} \
         (got {records:?})",
        fault_reason::INTERRUPT_SOURCE_ID,
        source_id(function.address())
    );
    iommu.clear_faults();
    // A not-present entry: the MSI is blocked and the fault recorded.
    iommu.write_interrupt(index, None);
    edu.raise_interrupt(1);
    let arrived = wait_until(200, || count(VECTOR_MSI) > 2);
    report!(
        !arrived,
        "an MSI whose remapping entry is not present is blocked (count {})",
        count(VECTOR_MSI)
    );
    let records = iommu.fault_records();
    report_info!("fault records after the blocked MSI: {records:?}");
    report!(
        records.len() == 1
            && records[0].reason == fault_reason::INTERRUPT_ENTRY_NOT_PRESENT
            && records[0].source == source_id(function.address())
            && records[0].info >> 48 == u64::from(index),
        "the blocked MSI is recorded: reason {:#x}, source {:#06x}, index {index} in FI[63:48]",
        fault_reason::INTERRUPT_ENTRY_NOT_PRESENT,
        source_id(function.address())
    );
    iommu.clear_faults();
    edu.acknowledge_interrupt(u32::MAX);
}
