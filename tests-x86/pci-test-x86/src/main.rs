//! pci-test-x86: the x86 side of the runtime's PCI layer, as arm/pci-test.c checks it on
//! aarch64 (kvm-unit-tests has no x86 pci-test): the host bridge (q35: ACPI MCFG's ECAM; pc:
//! ports 0xCF8/0xCFC), the bus enumerated, on q35 every function's first 64 bytes read alike
//! through the ECAM and the ports, pci-testdev's BARs assigned from the windows (memory BAR,
//! I/O BAR in port space, with `membar=2M` a 64-bit BAR above 4 GiB) and its protocol through
//! each, the 64-bit BAR's mapping uncached and identity above 4 GiB, and `map_device`'s
//! refusals (page 0, RAM, the local APIC, beyond the physical address width).
#![no_std]
#![no_main]

extern crate alloc;

use vmunit::arch::instructions::{in_u8, out_u8};
use vmunit::arch::{acpi, apic, mmu, pci as arch_pci};
use vmunit::mmio::MapError;
use vmunit::pci::testdev::{self, TestDevice};
use vmunit::pci::{Bar, BarKind, ConfigMechanism, HostBridge, class, device, vendor};
use vmunit::{println, report, report_skip};

vmunit::main!(main);

/// The host bridge's device ID on q35 (Intel 82G33/G31/P35/P31 DRAM controller, 8086:29c0)
/// and on pc (Intel 440FX, 8086:1237).
const Q35_HOST: u16 = 0x29c0;
const PC_HOST: u16 = 0x1237;
const INTEL: u16 = 0x8086;

fn main(arguments: &[&str]) {
    let membar = arguments.contains(&"membar");
    let mut bridge = match HostBridge::probe() {
        Ok(bridge) => bridge,
        Err(error) => {
            report!(false, "the machine has a PCI host bridge (got {error:?})");
            return;
        }
    };
    let description = bridge.description().clone();
    let ecam = acpi::ecam();
    report!(
        description.mechanism
            == if ecam.is_some() {
                ConfigMechanism::Ecam
            } else {
                ConfigMechanism::Ports
            },
        "configuration space goes through the MCFG's ECAM when there is one, else the ports \
         (got {:?}, MCFG {ecam:x?})",
        description.mechanism
    );
    let functions = bridge.functions();
    for function in &functions {
        println!(
            "{} {:04x}:{:04x} class {:02x} subclass {:02x}",
            function.address(),
            function.vendor_id,
            function.device_id,
            function.class_code.class,
            function.class_code.subclass
        );
    }
    let host = functions.first();
    report!(
        host.is_some_and(|host| host.address().device == 0
            && host.vendor_id == INTEL
            && [Q35_HOST, PC_HOST].contains(&host.device_id)
            && host.class_code.class == class::BRIDGE
            && host.class_code.subclass == class::HOST_BRIDGE),
        "00:00.0 is QEMU's Intel host bridge (q35 8086:29c0 or pc 8086:1237)"
    );
    if description.mechanism == ConfigMechanism::Ecam {
        let mismatch = functions.iter().find_map(|function| {
            (0..64u8).step_by(4).find_map(|offset| {
                let through_ecam = function.config.read_u32(u16::from(offset));
                let through_ports = arch_pci::config_port_read(function.address(), offset, 4);
                (through_ecam != through_ports).then_some((
                    function.address(),
                    offset,
                    through_ecam,
                    through_ports,
                ))
            })
        });
        report!(
            mismatch.is_none(),
            "every function's first 64 bytes read the same through the ECAM and the ports \
             (first difference {mismatch:x?})"
        );
    }
    let Some(testdev) = bridge.find(vendor::RED_HAT, device::RED_HAT_TEST) else {
        report_skip!("No PCI test device ('-device pci-testdev' not given)");
        return;
    };
    let bars = match bridge.assign_bars(&testdev) {
        Ok(bars) => bars,
        Err(error) => {
            report!(false, "pci-testdev's BARs get addresses ({error:?})");
            return;
        }
    };
    for bar in &bars {
        println!(
            "BAR {}: {:?} {:#x} bytes at {:#x}",
            bar.probe.index, bar.probe.kind, bar.probe.size, bar.cpu_address
        );
    }
    let find = |index: u8| bars.iter().find(|bar| bar.probe.index == index);
    if let Some(bar) = find(testdev::MEMORY_BAR) {
        match bridge.map_bar(bar) {
            Ok(window) => {
                let device = TestDevice::new(window);
                device.select(0);
                let name = device.name();
                report!(
                    name.as_str() == testdev::MEMORY_TESTS[0]
                        && mmu::is_uncached(window.base()) == Some(true),
                    "the memory BAR at {:#x} is mapped uncached and answers test 0 as {:?} (got {name:?})",
                    bar.cpu_address,
                    testdev::MEMORY_TESTS[0]
                );
            }
            Err(error) => {
                report!(false, "the memory BAR maps ({error})");
            }
        }
    } else {
        report!(false, "pci-testdev's memory BAR is assigned");
    }
    match find(testdev::IO_BAR).map(|bar| u16::try_from(bar.cpu_address)) {
        Some(Ok(port)) => {
            out_u8(port + testdev::offset::TEST as u16, 0);
            let mut name = alloc::string::String::new();
            for index in 0..32u16 {
                match in_u8(port + testdev::offset::NAME as u16 + index) {
                    0 => break,
                    byte => name.push(byte as char),
                }
            }
            report!(
                name.as_str() == testdev::IO_TESTS[0] && (0xc000..0x1_0000).contains(&u32::from(port)),
                "the I/O BAR at port {port:#x} (the I/O window) answers test 0 as {:?} (got {name:?})",
                testdev::IO_TESTS[0]
            );
        }
        other => {
            report!(false, "pci-testdev's I/O BAR is assigned a port (got {other:?})");
        }
    }
    if membar {
        check_membar(&bridge, find(testdev::MEMBAR).copied());
    }
    check_map_device();
}

/// With `membar=2M`: BAR 2 is a 64-bit BAR, assigned at 4 GiB or above, mapped there
/// identity and uncached by `map_device`.
fn check_membar(bridge: &HostBridge, bar: Option<Bar>) {
    let Some(bar) = bar else {
        report!(false, "pci-testdev's 64-bit BAR 2 is assigned ('membar=2M')");
        return;
    };
    report!(
        bar.probe.kind == BarKind::Memory64 && bar.cpu_address >= 1 << 32 && bar.probe.size == 2 << 20,
        "BAR 2 is a 2 MiB 64-bit BAR assigned above 4 GiB (got {:?}, {:#x} bytes at {:#x})",
        bar.probe.kind,
        bar.probe.size,
        bar.cpu_address
    );
    match bridge.map_bar(&bar) {
        Ok(window) => {
            let last = window.base() + window.size() - 1;
            report!(
                mmu::translate(window.base()) == Some(window.base())
                    && mmu::translate(last) == Some(last)
                    && mmu::is_uncached(window.base()) == Some(true)
                    && mmu::is_uncached(last) == Some(true),
                "map_device maps BAR 2 at {:#x} identity and uncached, first to last byte",
                window.base()
            );
        }
        Err(error) => {
            report!(false, "BAR 2 maps above 4 GiB ({error})");
        }
    }
}

/// `map_device`'s refusals.
fn check_map_device() {
    report!(
        mmu::map_device(0, 0x1000) == Err(MapError::NullPage),
        "map_device refuses page 0"
    );
    report!(
        mmu::map_device(0x200_0000, 0x1000) == Err(MapError::Ram),
        "map_device refuses RAM (32 MiB)"
    );
    report!(
        mmu::map_device(apic::BASE, 0x1000) == Err(MapError::RuntimeDevice),
        "map_device refuses the local APIC the runtime drives"
    );
    let limit = mmu::physical_address_limit();
    report!(
        mmu::map_device(limit - 0x1000, 0x2000) == Err(MapError::BeyondAddressRange { limit }),
        "map_device refuses a region past the physical address width ({limit:#x})"
    );
    report!(
        mmu::map_device(0xfed0_0000, 0) == Err(MapError::Empty),
        "map_device refuses an empty region"
    );
}
