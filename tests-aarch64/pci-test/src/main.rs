//! pci-test: kvm-unit-tests' arm/pci-test.c: the ECAM host bridge from the device tree, the bus
//! enumerated and printed, BARs sized and assigned from the bridge's windows, then QEMU's
//! pci-testdev protocol through its memory BAR and its I/O BAR; plus config-space read-only
//! fields, BAR size masks, Command decode enables and (`membar=SIZE`) a 64-bit BAR above 4 GiB.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use vmunit::arch::device_tree::platform;
use vmunit::arch::mmu;
use vmunit::mmio::{DeviceWindow, MapError};
use vmunit::pci::testdev::{self, TestDevice, Trigger};
use vmunit::pci::{
    Address, Bar, BarKind, Command, Function, HeaderLayout, HostBridge, Space, class, device, register,
    vendor,
};
use vmunit::{println, report, report_info, report_skip};

vmunit::main!(main);

/// How many times each pci-testdev test writes its trigger (kvm-unit-tests' `nr_writes`).
const WRITES: u32 = 16;
/// kvm-unit-tests' NR_TESTS: PCI_TESTDEV_NUM_BARS (2) * PCI_TESTDEV_NUM_TESTS (3).
const TESTS: usize = 6;

fn main(arguments: &[&str]) {
    let membar = arguments
        .iter()
        .find_map(|argument| argument.strip_prefix("membar="))
        .map(parse_size);
    let _prefix = vmunit::prefix("pci");
    let mut bridge = match HostBridge::probe() {
        Ok(bridge) => bridge,
        Err(error) => {
            report!(
                false,
                "the device tree's pci-host-ecam-generic host bridge is usable (got {error:?})"
            );
            return;
        }
    };
    describe(&bridge);
    let functions = bridge.functions();
    for function in &functions {
        print_function(function);
    }
    check_host_bridge(&functions);
    let Some(testdev) = bridge.find(vendor::RED_HAT, device::RED_HAT_TEST) else {
        report_skip!("No PCI test device ('-device pci-testdev' not given)");
        return;
    };
    check_identity(&testdev);
    check_read_only_fields(&testdev);
    check_bar_sizes(&testdev, membar);
    let bars = match bridge.assign_bars(&testdev) {
        Ok(bars) => bars,
        Err(error) => {
            report!(
                false,
                "pci-testdev's BARs get addresses from the host bridge's windows (got {error:?})"
            );
            return;
        }
    };
    check_assignment(&bridge, &testdev, &bars, membar);
    print_function(&testdev);
    for bar in &bars {
        print_bar(bar);
    }
    let memory = bar_window(&bridge, &bars, testdev::MEMORY_BAR);
    let io = bar_window(&bridge, &bars, testdev::IO_BAR);
    let (Some(memory), Some(io)) = (memory, io) else {
        return;
    };
    check_decode_enables(&testdev, memory, io);
    let passed = run_tests("mem", TestDevice::new(memory), &testdev::MEMORY_TESTS, 0)
        + run_tests("io", TestDevice::new(io), &testdev::IO_TESTS, 3);
    report!(passed >= TESTS, "PCI test device passed {passed}/{TESTS} tests");
    if membar.is_some() {
        check_membar_mapping(&bridge, &bars);
    }
    check_map_device();
}

/// `SIZE` of `membar=SIZE`: bytes, or with a K, M or G suffix.
fn parse_size(text: &str) -> u64 {
    let (digits, unit) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().expect("membar=SIZE takes a number") * unit
}

fn describe(bridge: &HostBridge) {
    let description = bridge.description();
    report_info!(
        "ECAM at {:#x} ({:#x} bytes), buses {:#04x}..={:#04x}",
        description.ecam_base,
        description.ecam_size,
        description.bus_start,
        description.bus_end
    );
    for window in &description.windows {
        report_info!(
            "window {:?}{}: PCI {:#x} -> CPU {:#x}, {:#x} bytes",
            window.space,
            if window.prefetchable { " prefetchable" } else { "" },
            window.pci_address,
            window.cpu_address,
            window.size
        );
    }
    let has = |space| description.windows.iter().any(|window| window.space == space);
    report!(
        has(Space::Io) && has(Space::Memory32),
        "the host bridge forwards an I/O window and a 32-bit memory window"
    );
    // The ECAM answers at all (the host bridge's own function is at the first bus's 00.0): a
    // read through the mapping, above 4 GiB when QEMU's highmem ECAM is in use.
    let Some(ecam) = bridge.ecam() else {
        report!(false, "the host bridge has an ECAM window");
        return;
    };
    let descriptor = mmu::descriptor(ecam.base()).map(|(entry, level)| (mmu::is_device(entry), level));
    let last =
        mmu::descriptor(ecam.base() + ecam.size() - 1).map(|(entry, level)| (mmu::is_device(entry), level));
    report!(
        mmu::translate(ecam.base()) == Some(ecam.base())
            && descriptor.is_some_and(|(device, _)| device)
            && last.is_some_and(|(device, _)| device),
        "map_device mapped the ECAM ({:#x} bytes at {:#x}) identity as device memory (got (device, level) {descriptor:?} first, {last:?} last)",
        ecam.size(),
        ecam.base()
    );
    let vendor_id = ecam.read_u16(0);
    report!(
        vendor_id != vendor::NONE,
        "the ECAM window at {:#x} answers (bus {:#04x} 00.0 vendor ID {vendor_id:#06x})",
        description.ecam_base,
        description.bus_start
    );
}

/// kvm-unit-tests' `pci_dev_print`: `bb:dd.f vvvv:dddd type .. progif .. class .. subclass ..`.
fn print_function(function: &Function) {
    let class_code = function.class_code;
    println!(
        "{} {:04x}:{:04x} type {:02x} progif {:02x} class {:02x} subclass {:02x}",
        function.address(),
        function.vendor_id,
        function.device_id,
        function.header_type.raw,
        class_code.programming_interface,
        class_code.class,
        class_code.subclass
    );
}

/// kvm-unit-tests' `pci_bar_print`.
fn print_bar(bar: &Bar) {
    let probe = bar.probe;
    let end = bar.cpu_address + probe.size - 1;
    let kind = match probe.kind {
        BarKind::Io => "PIO",
        BarKind::Memory32 => "MEM32",
        BarKind::MemoryBelow1M => "MEM1M",
        BarKind::Memory64 => "MEM64",
        BarKind::Reserved => "MEM??",
    };
    let prefetch = if probe.prefetchable { "/p" } else { "" };
    if probe.kind == BarKind::Memory64 {
        println!(
            "\tBAR#{},{} [{:x}-{:x} {kind}{prefetch}]",
            probe.index,
            probe.index + 1,
            bar.cpu_address,
            end
        );
    } else {
        println!(
            "\tBAR#{} [{:02x}-{:02x} {kind}{prefetch}]",
            probe.index, bar.cpu_address, end
        );
    }
}

fn check_host_bridge(functions: &[Function]) {
    let root = functions.first().filter(|function| {
        let Address { device, function, .. } = function.address();
        (device, function) == (0, 0)
    });
    let Some(root) = root else {
        report!(
            false,
            "a function answers at 00.0 of the first bus (the host bridge)"
        );
        return;
    };
    report!(
        (root.vendor_id, root.device_id) == (vendor::RED_HAT, device::RED_HAT_PCIE_HOST),
        "{} is QEMU's PCIe host bridge 1b36:0008 (got {:04x}:{:04x})",
        root.address(),
        root.vendor_id,
        root.device_id
    );
    let class_code = root.class_code;
    report!(
        (class_code.class, class_code.subclass) == (class::BRIDGE, class::HOST_BRIDGE)
            && root.header_type.layout == HeaderLayout::Normal,
        "the host bridge is class 06 subclass 00 (host bridge) with a type 0 header (got class {:02x} subclass {:02x} type {:02x})",
        class_code.class,
        class_code.subclass,
        root.header_type.raw
    );
}

fn check_identity(testdev: &Function) {
    let config = testdev.config;
    report!(
        (testdev.vendor_id, testdev.device_id) == (vendor::RED_HAT, device::RED_HAT_TEST),
        "pci-testdev found at {} with IDs 1b36:0005 (got {:04x}:{:04x})",
        testdev.address(),
        testdev.vendor_id,
        testdev.device_id
    );
    let class_code = testdev.class_code;
    report!(
        (
            class_code.class,
            class_code.subclass,
            class_code.programming_interface
        ) == (class::UNCLASSIFIED, 0xff, 0)
            && config.revision() == 0,
        "pci-testdev is class 00 subclass ff progif 00 revision 00, QEMU's class ID 0x00ff (got {:02x} {:02x} {:02x} revision {:02x})",
        class_code.class,
        class_code.subclass,
        class_code.programming_interface,
        config.revision()
    );
    report!(
        testdev.header_type.layout == HeaderLayout::Normal && !testdev.header_type.multifunction,
        "pci-testdev has a single-function type 0 header (got {:02x})",
        testdev.header_type.raw
    );
    let pin = config.read_u8(register::INTERRUPT_PIN);
    report!(pin == 0, "pci-testdev has no interrupt pin (got {pin})");
}

/// The IDs, revision, class code, header type and interrupt pin are read-only; the interrupt
/// line is software's read-write scratch byte.
fn check_read_only_fields(testdev: &Function) {
    let config = testdev.config;
    for (offset, name) in [
        (register::VENDOR_ID, "vendor and device IDs"),
        (register::REVISION_ID, "revision ID and class code"),
    ] {
        let before = config.read_u32(offset);
        config.write_u32(offset, !before);
        let after = config.read_u32(offset);
        config.write_u32(offset, before);
        report!(
            after == before,
            "writing the complement of the {name} ({before:#010x}) leaves them unchanged (got {after:#010x})"
        );
    }
    for (offset, name) in [
        (register::HEADER_TYPE, "header type"),
        (register::INTERRUPT_PIN, "interrupt pin"),
    ] {
        let before = config.read_u8(offset);
        config.write_u8(offset, !before);
        let after = config.read_u8(offset);
        config.write_u8(offset, before);
        report!(
            after == before,
            "writing the complement of the {name} ({before:#04x}) leaves it unchanged (got {after:#04x})"
        );
    }
    let line = config.read_u8(register::INTERRUPT_LINE);
    config.write_u8(register::INTERRUPT_LINE, 0x5a);
    let written = config.read_u8(register::INTERRUPT_LINE);
    config.write_u8(register::INTERRUPT_LINE, line);
    report!(
        written == 0x5a,
        "the interrupt line is read-write: 0x5a reads back (got {written:#04x})"
    );
}

/// All ones written to each BAR read back as the size mask with the read-only type bits:
/// BAR 0 4 KiB 32-bit memory, BAR 1 256 bytes of I/O, BAR 2 (with membar) a 64-bit
/// prefetchable BAR of that size; the others are unimplemented (read 0). Sizing restores
/// the BARs.
fn check_bar_sizes(testdev: &Function, membar: Option<u64>) {
    let config = testdev.config;
    let registers_before: Vec<u32> = (0..6).map(|index| config.bar_register(index)).collect();
    let memory = config.probe_bar(testdev::MEMORY_BAR);
    report!(
        memory.is_some_and(|probe| probe.kind == BarKind::Memory32
            && !probe.prefetchable
            && probe.size == testdev::MEMORY_BAR_SIZE
            && probe.low_readback == 0xffff_f000),
        "BAR0 is 4 KiB of 32-bit non-prefetchable memory: all ones read back 0xfffff000 (got {memory:x?})"
    );
    let io = config.probe_bar(testdev::IO_BAR);
    report!(
        io.is_some_and(|probe| probe.kind == BarKind::Io
            && probe.size == testdev::IO_BAR_SIZE
            && probe.low_readback == 0xffff_ff01),
        "BAR1 is 256 bytes of I/O: all ones read back 0xffffff01 (got {io:x?})"
    );
    let bar2 = config.probe_bar(testdev::MEMBAR);
    match membar {
        Some(size) => {
            let low = !(size as u32 - 1) | 0xc;
            report!(
                bar2.is_some_and(|probe| probe.kind == BarKind::Memory64
                    && probe.prefetchable
                    && probe.size == size
                    && probe.low_readback == low
                    && probe.high_readback == 0xffff_ffff),
                "BAR2,3 is {size:#x} bytes of 64-bit prefetchable memory: all ones read back {low:#010x} and 0xffffffff (got {bar2:x?})"
            );
            let unused: Vec<_> = [4, 5].into_iter().map(|index| config.probe_bar(index)).collect();
            report!(
                unused.iter().all(Option::is_none),
                "BAR4 and BAR5 are unimplemented (read 0 after all ones) (got {unused:x?})"
            );
        }
        None => {
            let unused: Vec<_> = (2..6).map(|index| config.probe_bar(index)).collect();
            report!(
                unused.iter().all(Option::is_none),
                "BAR2..BAR5 are unimplemented (read 0 after all ones) (got {unused:x?})"
            );
        }
    }
    let registers_after: Vec<u32> = (0..6).map(|index| config.bar_register(index)).collect();
    report!(
        registers_after == registers_before,
        "sizing restores every BAR (before {registers_before:x?}, after {registers_after:x?})"
    );
}

fn check_assignment(bridge: &HostBridge, testdev: &Function, bars: &[Bar], membar: Option<u64>) {
    let config = testdev.config;
    let expected: &[u8] = if membar.is_some() { &[0, 1, 2] } else { &[0, 1] };
    let indices: Vec<u8> = bars.iter().map(|bar| bar.probe.index).collect();
    report!(
        indices == expected,
        "BARs {expected:?} were assigned (got {indices:?})"
    );
    for bar in bars {
        let index = bar.probe.index;
        let readback = config.bar_address(index);
        let space = bar.probe.kind.space();
        let window = bridge
            .description()
            .windows
            .iter()
            .find(|window| window.translate(bar.pci_address) == Some(bar.cpu_address));
        report!(
            readback == bar.pci_address && window.is_some_and(|window| window.space == space),
            "BAR{index} reads back its address {:#x} ({:#x} bytes, naturally aligned: {}) in the {space:?} window (got {readback:#x}, window {window:x?})",
            bar.pci_address,
            bar.probe.size,
            bar.pci_address.is_multiple_of(bar.probe.size)
        );
        if bar.probe.kind == BarKind::Memory64 {
            report!(
                bar.cpu_address >= 1 << 32,
                "the 64-bit BAR{index} lies above 4 GiB (at {:#x})",
                bar.cpu_address
            );
        }
    }
    // assign_bars wrote Memory and I/O Space, SERR# enable and Parity Error Response. The
    // decode enables must stick; SERR# enable and Parity Error Response may be hardwired to 0
    // by a device without SERR# or parity checking (PCI 3.0 6.2.2; QEMU hardwires the latter,
    // hw/pci/pci.c pci_init_wmask), but nothing not written may read back set.
    let written = Command::MEMORY_SPACE
        .with(Command::IO_SPACE)
        .with(Command::SERR)
        .with(Command::PARITY_ERROR_RESPONSE);
    let command = config.command();
    report!(
        command.contains(Command::MEMORY_SPACE.with(Command::IO_SPACE)) && command.without(written).0 == 0,
        "Command reads back Memory and I/O Space enabled and no bit beyond those written ({:#06x}) (got {:#06x})",
        written.0,
        command.0
    );
    config.set_command(command.with(Command::BUS_MASTER));
    let master = config.command();
    config.set_command(command);
    let restored = config.command();
    report!(
        master == command.with(Command::BUS_MASTER) && restored == command,
        "Bus Master enable is read-write (set: {:#06x}, cleared: {:#06x})",
        master.0,
        restored.0
    );
}

fn bar_window(bridge: &HostBridge, bars: &[Bar], index: u8) -> Option<DeviceWindow> {
    let Some(bar) = bars.iter().find(|bar| bar.probe.index == index) else {
        report!(false, "BAR{index} was assigned");
        return None;
    };
    let window = bridge.map_bar(bar);
    if let Err(error) = window {
        report!(
            false,
            "BAR{index} at {:#x} maps as device memory (got {error})",
            bar.cpu_address
        );
    }
    window.ok()
}

/// The first 4 bytes of the memory BAR's and the I/O BAR's test names, as a little-endian word
/// read at the name offset while test 0 is selected.
fn name_word(name: &str) -> u32 {
    let bytes = name.as_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// With its Command enable clear, a BAR stops decoding: the device's header is no longer
/// readable there (the read faults or returns something else); set again, it is.
fn check_decode_enables(testdev: &Function, memory: DeviceWindow, io: DeviceWindow) {
    let config = testdev.config;
    let command = config.command();
    for (window, enable, name, expected) in [
        (
            memory,
            Command::MEMORY_SPACE,
            "Memory Space",
            testdev::MEMORY_TESTS[0],
        ),
        (io, Command::IO_SPACE, "I/O Space", testdev::IO_TESTS[0]),
    ] {
        let device = TestDevice::new(window);
        let word = name_word(expected);
        device.select(0);
        let enabled = device.window().read_u32(testdev::offset::NAME);
        config.set_command(command.without(enable));
        let disabled = vmunit::arch::try_read(window.base() + testdev::offset::NAME);
        config.set_command(command);
        let again = device.window().read_u32(testdev::offset::NAME);
        report!(
            enabled == word && again == word,
            "with {name} enabled the BAR decodes: {expected:?} starts with {word:#010x} (got {enabled:#010x}, then {again:#010x})"
        );
        report!(
            disabled.map_or(true, |value| value as u32 != word),
            "with {name} disabled the BAR does not decode (got {:x?})",
            disabled
                .map(|value| value as u32)
                .map_err(|exception| exception.kind())
        );
    }
}

/// kvm-unit-tests' `pci_testdev_all` on one BAR: tests 0, 1, ... until one reports an invalid
/// width, each selected, its header read and its trigger written `WRITES` times. Returns how
/// many tests passed in a row.
fn run_tests(kind: &str, device: TestDevice, names: &[&str; 3], first_index: u8) -> usize {
    let _prefix = vmunit::prefix(kind);
    let mut passed = 0;
    for number in 0u8.. {
        device.select(number);
        let width = device.width();
        if !matches!(width, 1 | 2 | 4) {
            report!(
                number as usize == names.len() && width == 0 && device.count() == 0,
                "the device has {} tests: selecting test {number} selects none (width {width}, count {})",
                names.len(),
                device.count()
            );
            break;
        }
        if run_test(
            &device,
            number,
            names.get(number as usize).copied(),
            first_index + number,
        ) {
            passed += 1;
        } else {
            break;
        }
    }
    passed
}

/// One test: its header, then `WRITES` writes of its data at its trigger offset.
fn run_test(device: &TestDevice, number: u8, expected_name: Option<&str>, expected_index: u8) -> bool {
    let name = device.name();
    let _prefix = vmunit::prefix(&name);
    let count = device.count();
    let (width, index, data, trigger) = (
        device.width(),
        device.index(),
        device.data(),
        device.trigger_offset(),
    );
    println!(
        "pci-testdev {}: {name}",
        if expected_index < 3 { "mem" } else { " io" }
    );
    let header = report!(
        count == 0 && width == 1 && index == expected_index && Some(name.as_str()) == expected_name,
        "test {number} is {expected_name:?}, index {expected_index}, width 1, count 0 after selection (got {name:?}, index {index}, width {width}, count {count})"
    );
    let size = device.window().size();
    let in_bar = (trigger as u64) >= testdev::offset::NAME + 32 && (trigger as u64) + width as u64 <= size;
    report!(
        in_bar,
        "the trigger offset {trigger:#x} lies in the {size:#x}-byte BAR, past the header"
    );
    if !in_bar {
        return false;
    }
    for _ in 0..WRITES {
        device.write(trigger as u64, width, data);
    }
    let count = device.count();
    let trigger_kind = Trigger::of_name(&name);
    let counted = match trigger_kind {
        Some(Trigger::NoEventfd) => count == WRITES,
        // kvm-unit-tests accepts 0: the ioeventfd took the writes (QEMU's memory core signals
        // it itself when KVM does not, system/memory.c memory_region_dispatch_write).
        _ => count == WRITES || count == 0,
    };
    let expectation = if trigger_kind == Some(Trigger::NoEventfd) {
        "16"
    } else {
        "16, or 0 when an ioeventfd took them"
    };
    report!(
        counted,
        "{WRITES} writes of {data:#04x} at {trigger:#x} count {expectation} (got {count})"
    );
    // What does not trigger: a write beside the trigger offset; for datamatch, other data.
    device.write(trigger as u64 + 1, width, data);
    let beside = device.count();
    report!(
        beside == count,
        "a write at {:#x}, beside the trigger, is not counted (count {count}, then {beside})",
        trigger + 1
    );
    if trigger_kind == Some(Trigger::DatamatchEventfd) {
        for _ in 0..WRITES {
            device.write(trigger as u64, width, !data & 0xff);
        }
        let mismatched = device.count();
        report!(
            mismatched == count,
            "writes of other data ({:#04x}) at the trigger are not counted (count {count}, then {mismatched})",
            !data & 0xff
        );
    }
    header && counted
}

/// The 64-bit BAR (`membar`) maps as device memory above 4 GiB: the identity map reaches it
/// and its descriptor is Device-nGnRnE. (Its region is empty in QEMU: nothing to access.)
fn check_membar_mapping(bridge: &HostBridge, bars: &[Bar]) {
    let Some(bar) = bars.iter().find(|bar| bar.probe.index == testdev::MEMBAR) else {
        return;
    };
    let window = bridge.map_bar(bar);
    let descriptor = mmu::descriptor(bar.cpu_address);
    report!(
        window.is_ok_and(|window| window.base() == bar.cpu_address && window.size() == bar.probe.size)
            && mmu::translate(bar.cpu_address) == Some(bar.cpu_address)
            && descriptor.is_some_and(|(entry, _)| mmu::is_device(entry)),
        "map_device maps the 64-bit BAR at {:#x} identity, as device memory (got {window:x?}, descriptor {descriptor:x?})",
        bar.cpu_address
    );
}

/// What `map_device` refuses (RAM, the UART, page 0, beyond the physical address range,
/// nothing), and
/// a page of the boot map's normal-memory hole between RAM and 4 GiB remapped as device
/// memory on its own: its neighbours stay normal memory.
fn check_map_device() {
    let _prefix = vmunit::prefix("map_device");
    let platform = platform();
    let (ram, _) = platform.memory()[0];
    let result = mmu::map_device(ram, 4096);
    report!(
        result == Err(MapError::Ram),
        "RAM at {ram:#x} is refused (got {result:x?})"
    );
    if let Some(uart) = platform.uart {
        let result = mmu::map_device(uart, 4096);
        report!(
            result == Err(MapError::RuntimeDevice),
            "the console's UART at {uart:#x} is refused (got {result:x?})"
        );
    }
    let limit = mmu::physical_address_limit();
    let result = mmu::map_device(limit - 4096, 8192);
    report!(
        result == Err(MapError::BeyondAddressRange { limit }),
        "a region reaching past the physical address limit {limit:#x} is refused (got {result:x?})"
    );
    let result = mmu::map_device(0, 4096);
    report!(
        result == Err(MapError::NullPage) && mmu::descriptor(0).is_none(),
        "page 0 is refused and stays unmapped (got {result:x?})"
    );
    let result = mmu::map_device(0x1000_0000, 0);
    report!(
        result == Err(MapError::Empty),
        "an empty region is refused (got {result:x?})"
    );
    // 3 GiB: inside the boot map's normal-memory 1 GiB blocks, beyond RAM with -m 128.
    let hole = 0xc000_0000;
    if platform
        .memory()
        .iter()
        .any(|&(start, end)| start <= hole + (4 << 20) && hole < end)
    {
        report_skip!("RAM reaches 3 GiB: no normal-memory hole to remap");
        return;
    }
    let before = mmu::descriptor(hole).map(|(entry, level)| (mmu::is_device(entry), level));
    let result = mmu::map_device(hole, 4096);
    let page = mmu::descriptor(hole).map(|(entry, level)| (mmu::is_device(entry), level));
    let neighbour = mmu::descriptor(hole + 4096).map(|(entry, level)| (mmu::is_device(entry), level));
    let far = mmu::descriptor(hole + (4 << 20)).map(|(entry, level)| (mmu::is_device(entry), level));
    report!(
        result.is_ok() && page == Some((true, 3)) && neighbour == Some((false, 3)) && far == Some((false, 2)),
        "the normal-memory page at {hole:#x} (was {before:?}: (device, level)) becomes a device page, its neighbour and the next 2 MiB stay normal (got {result:x?}, page {page:?}, neighbour {neighbour:?}, 2 MiB on {far:?})"
    );
}
