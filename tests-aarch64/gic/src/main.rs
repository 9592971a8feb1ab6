//! gic: kvm-unit-tests' arm/gic.c on a GICv2 or a GICv3 (whichever the machine has): `ipi`
//! (SGIs to self, to a target list, to all but self and to one CPU, each delivered exactly
//! where sent, with the GICv2 source CPU), `active` (the pending → active → inactive life
//! cycle of an SGI and an SPI, the priority mask, split EOI, ICACTIVER in the handler), `mmio`
//! (distributor registers: read-only ones, CTLR, enables, IPRIORITYR, GICv2 ITARGETSR), `spi`
//! (an SPI made pending is delivered to the CPU it targets), `its-introspection` and
//! `its-trigger` (the GICv3 ITS and LPIs, in `its.rs`, with the migration variants
//! `its-migration`, `its-migrate-unmapped-collection`, `its-pending-migration`), and
//! `itargetsr-mask`, the reproducer of QEMU's unmasked GICv2 ITARGETSR.
#![no_std]
#![no_main]

extern crate alloc;

mod its;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use vmunit::arch::gic::{self, CpuSet, SgiTarget, Version, distributor};
use vmunit::arch::instructions::disable_interrupts;
use vmunit::arch::mmu;
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpus};
use vmunit::time::{delay, wait_until};
use vmunit::{prefix, report, report_info, report_kfail, report_skip, report_summary};

vmunit::main!(main);

/// The SGI the tests send (kvm-unit-tests' IPI_IRQ).
const SGI: u32 = 1;
/// The CPU that sends the IPIs (kvm-unit-tests' IPI_SENDER): not the boot CPU.
const SENDER: usize = 1;

fn main(arguments: &[&str]) -> i32 {
    let Some(version) = gic::version() else {
        report!(false, "the device tree describes a GICv2 or GICv3");
        return report_summary();
    };
    let _version = prefix!("gicv{}", version.number());
    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return report_summary();
    }
    match arguments.first().copied() {
        Some("ipi") => {
            let _mode = prefix("ipi");
            ipi(version);
        }
        Some("active") => active(version),
        Some("mmio") => {
            let _mode = prefix("mmio");
            mmio(version);
        }
        Some("spi") => spi(),
        Some("itargetsr-mask") => itargetsr_mask(version),
        Some(mode @ ("its-introspection" | "its-trigger")) => {
            let _mode = prefix(mode);
            if mode == "its-trigger" {
                its::trigger();
            } else {
                its::introspection();
            }
        }
        Some(mode @ "its-migration") => {
            let _mode = prefix(mode);
            its::migration();
        }
        Some(mode @ "its-migrate-unmapped-collection") => {
            let _mode = prefix(mode);
            its::migrate_unmapped_collection();
        }
        Some(mode @ "its-pending-migration") => {
            let _mode = prefix(mode);
            its::pending_migration();
        }
        other => {
            report!(false, "a known mode was given (got {other:?})");
        }
    }
    report_summary()
}

/// Whether the test runs under QEMU's TCG (the runner's guest environment says so).
fn tcg() -> bool {
    vmunit::env("ACCEL") == Some("tcg")
}

fn nothing(_intid: u32) {}

static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static STOP: AtomicBool = AtomicBool::new(false);

fn deliveries(intid: u32) -> [u32; MAX_CPUS] {
    core::array::from_fn(|cpu| gic::delivered(cpu, intid))
}

/// Waits (up to 5 s) until every CPU of `expected` took `intid` since `before`, then 100 ms
/// more for interrupts that should not come; reports whether exactly the CPUs of `expected`
/// took it once each, and on a GICv2 whether the GICC_IAR source was `sender`.
fn check_deliveries(intid: u32, before: [u32; MAX_CPUS], expected: CpuSet, sender: Option<usize>) {
    let count = cpu_count();
    let arrived = |cpu: usize| gic::delivered(cpu, intid) - before[cpu];
    let all = wait_until(5000, || {
        (0..count).all(|cpu| !expected.contains(cpu) || arrived(cpu) >= 1)
    });
    if !all {
        report_info!("interrupts timed out (5 s)");
    }
    delay(100);
    let counts: [u32; MAX_CPUS] = core::array::from_fn(|cpu| if cpu < count { arrived(cpu) } else { 0 });
    let exact = (0..count).all(|cpu| counts[cpu] == u32::from(expected.contains(cpu)));
    report!(
        exact,
        "interrupts received once by the CPUs of mask {:#x} and by no other (per CPU: {:?})",
        expected.bits(),
        &counts[..count]
    );
    if let Some(sender) = sender {
        let wrong = expected
            .iter()
            .filter(|&cpu| cpu < count && counts[cpu] > 0)
            .find(|&cpu| gic::last_sgi_source(cpu) != Some(sender));
        let seen = wrong.map_or(alloc::string::String::new(), |cpu| {
            alloc::format!(" (CPU {cpu} saw {:?})", gic::last_sgi_source(cpu))
        });
        report!(
            wrong.is_none(),
            "GICC_IAR.CPUID names the sender, CPU {sender}{seen}"
        );
    }
}

fn ipi(version: Version) {
    if cpu_count() < 2 {
        report!(false, "at least 2 CPUs are given (got {})", cpu_count());
        return;
    }
    gic::set_interrupt_handler(SGI, Some(nothing));
    on_cpus(|| {
        let cpu = cpu_index();
        let ok = gic::init().is_ok();
        gic::enable(SGI);
        READY[cpu].store(ok, Ordering::Release);
    });
    let ready = (0..cpu_count()).all(|cpu| READY[cpu].load(Ordering::Acquire));
    report!(ready, "every CPU's GIC CPU interface initialises");
    let unhandled = gic::unhandled();
    STOP.store(false, Ordering::Release);
    on_cpus(|| {
        if cpu_index() == SENDER {
            send_ipis(version);
            STOP.store(true, Ordering::Release);
        } else {
            // A receiver: IRQs unmasked until the sender is done (at most 60 s).
            wait_until(60_000, || STOP.load(Ordering::Acquire));
        }
    });
    report!(
        gic::unhandled() == unhandled,
        "no other interrupt arrived ({} without a handler)",
        gic::unhandled() - unhandled
    );
}

/// On CPU [`SENDER`]: kvm-unit-tests' self, target-list and broadcast cases, plus one CPU.
fn send_ipis(version: Version) {
    let me = cpu_index();
    let count = cpu_count();
    let sender = (version == Version::V2).then_some(me);
    {
        let _prefix = prefix("self");
        let before = deliveries(SGI);
        gic::send_sgi(SGI, SgiTarget::Myself);
        check_deliveries(SGI, before, CpuSet::only(me), sender);
    }
    {
        let _prefix = prefix("target-list");
        // The CPUs whose index parity differs from the sender's.
        let list: CpuSet = (0..count).filter(|cpu| cpu % 2 != me % 2).collect();
        let before = deliveries(SGI);
        gic::send_sgi(SGI, SgiTarget::List(list));
        check_deliveries(SGI, before, list, sender);
    }
    {
        let _prefix = prefix("broadcast");
        let others = CpuSet::others();
        let before = deliveries(SGI);
        gic::send_sgi(SGI, SgiTarget::AllButSelf);
        check_deliveries(SGI, before, others, sender);
    }
    {
        let _prefix = prefix("one-cpu");
        let before = deliveries(SGI);
        gic::send_sgi(SGI, SgiTarget::Cpu(0));
        check_deliveries(SGI, before, CpuSet::only(0), sender);
    }
}

/// The SPI the tests use: the last one the distributor implements (nothing on `virt` is
/// wired to it).
fn test_spi() -> u32 {
    gic::interrupt_lines() - 1
}

fn clear_active_in_handler(intid: u32) {
    gic::clear_active(intid);
    CLEARED.store(u32::from(!gic::is_active(intid)), Ordering::Release);
}

static CLEARED: AtomicU32 = AtomicU32::new(0);

fn active(version: Version) {
    disable_interrupts();
    gic::enable(SGI);
    {
        let _prefix = prefix("sgi");
        gic::send_sgi(SGI, SgiTarget::Myself);
        report!(
            gic::is_pending(SGI),
            "a sent SGI is pending while IRQs are masked"
        );
        report!(!gic::is_active(SGI), "and not active");
        gic::set_priority_mask(0);
        let masked = gic::acknowledge();
        report!(
            masked.intid() == gic::SPURIOUS,
            "with the priority mask at 0 it is not acknowledged (INTID {})",
            masked.intid()
        );
        gic::set_priority_mask(gic::PRIORITY_MASK_ALLOW_ALL);
        let interrupt = gic::acknowledge();
        report!(
            interrupt.intid() == SGI,
            "the acknowledge register returns SGI {SGI} (got {})",
            interrupt.intid()
        );
        if version == Version::V2 {
            report!(
                interrupt.source() == Some(cpu_index()),
                "GICC_IAR.CPUID names this CPU as the source (got {:?})",
                interrupt.source()
            );
        }
        report!(
            gic::is_active(SGI) && !gic::is_pending(SGI),
            "an acknowledged SGI is active and no longer pending"
        );
        let running = gic::running_priority();
        let priority = gic::priority(SGI);
        report!(
            running == priority,
            "the running priority is the SGI's ({running:#x}, priority {priority:#x})"
        );
        let again = gic::acknowledge();
        report!(
            again.is_spurious(),
            "nothing else is pending: a second acknowledge is spurious (INTID {})",
            again.intid()
        );
        gic::end_of_interrupt(interrupt);
        report!(
            !gic::is_active(SGI) && !gic::is_pending(SGI),
            "after EOI the SGI is inactive"
        );
        let idle = gic::running_priority();
        report!(idle == 0xff, "and the running priority is idle ({idle:#x})");
    }
    {
        let _prefix = prefix("split-eoi");
        gic::set_split_eoi(true);
        gic::send_sgi(SGI, SgiTarget::Myself);
        let interrupt = gic::acknowledge();
        report!(
            interrupt.intid() == SGI,
            "SGI {SGI} is acknowledged (got {})",
            interrupt.intid()
        );
        gic::end_of_interrupt(interrupt);
        let idle = gic::running_priority();
        report!(
            idle == 0xff && gic::is_active(SGI),
            "EOI with EOImode 1 drops the priority ({idle:#x}) and leaves the SGI active"
        );
        gic::deactivate(interrupt);
        report!(
            !gic::is_active(SGI) && !gic::is_pending(SGI),
            "the deactivation register makes it inactive"
        );
    }
    {
        // kvm-unit-tests' `active`: the handler clears the active state through ICACTIVER
        // (EOImode 1 stays on, so the dispatcher's EOI is a priority drop alone).
        let _prefix = prefix("active");
        gic::set_interrupt_handler(SGI, Some(clear_active_in_handler));
        let before = gic::delivered(cpu_index(), SGI);
        gic::send_sgi(SGI, SgiTarget::Myself);
        wait_until(1000, || gic::delivered(cpu_index(), SGI) != before);
        delay(100);
        let count = gic::delivered(cpu_index(), SGI) - before;
        report!(count == 1, "the SGI was received once (got {count})");
        report!(
            CLEARED.load(Ordering::Acquire) == 1,
            "the handler's ICACTIVER write made it inactive"
        );
        report!(
            !gic::is_active(SGI) && !gic::is_pending(SGI) && gic::running_priority() == 0xff,
            "afterwards the SGI is neither active nor pending, the priority is idle"
        );
        gic::set_interrupt_handler(SGI, None);
        gic::set_split_eoi(false);
    }
    {
        let _prefix = prefix("spi");
        let spi = test_spi();
        disable_interrupts();
        gic::enable(spi);
        gic::set_target(spi, cpu_index());
        gic::set_pending(spi);
        report!(
            gic::is_pending(spi),
            "SPI {spi} set pending through ISPENDR is pending"
        );
        let interrupt = gic::acknowledge();
        report!(
            interrupt.intid() == spi,
            "it is acknowledged (got {})",
            interrupt.intid()
        );
        report!(
            gic::is_active(spi) && !gic::is_pending(spi),
            "and is then active, not pending"
        );
        gic::end_of_interrupt(interrupt);
        report!(!gic::is_active(spi), "EOI makes it inactive");
        gic::set_active(spi);
        report!(gic::is_active(spi), "ISACTIVER makes it active");
        gic::clear_active(spi);
        report!(!gic::is_active(spi), "ICACTIVER makes it inactive");
        gic::disable(spi);
        gic::set_pending(spi);
        let disabled = gic::acknowledge();
        report!(
            disabled.is_spurious() && gic::is_pending(spi),
            "a disabled pending SPI is not acknowledged (INTID {}) and stays pending",
            disabled.intid()
        );
        gic::clear_pending(spi);
        report!(!gic::is_pending(spi), "ICPENDR clears its pending state");
    }
    gic::disable(SGI);
}

fn spi() {
    let spi = test_spi();
    gic::set_interrupt_handler(spi, Some(nothing));
    gic::enable(spi);
    report!(gic::is_enabled(spi), "SPI {spi} is enabled");
    {
        let _prefix = prefix("self");
        gic::set_target(spi, 0);
        let before = deliveries(spi);
        gic::set_pending(spi);
        check_deliveries(spi, before, CpuSet::only(0), None);
    }
    if cpu_count() < 2 {
        report_skip!("routing to another CPU needs -smp 2 or more");
        return;
    }
    on_cpus(|| {
        let ok = gic::init().is_ok();
        READY[cpu_index()].store(ok, Ordering::Release);
    });
    report!(
        (0..cpu_count()).all(|cpu| READY[cpu].load(Ordering::Acquire)),
        "every CPU's GIC CPU interface initialises"
    );
    // init on the other CPUs leaves the SPI's distributor state alone.
    report!(gic::is_enabled(spi), "SPI {spi} is still enabled");
    STOP.store(false, Ordering::Release);
    on_cpus(|| {
        if cpu_index() == 0 {
            for target in 1..cpu_count() {
                let _prefix = prefix!("cpu{target}");
                gic::set_target(spi, target);
                let before = deliveries(spi);
                gic::set_pending(spi);
                check_deliveries(spi, before, CpuSet::only(target), None);
            }
            STOP.store(true, Ordering::Release);
        } else {
            wait_until(60_000, || STOP.load(Ordering::Acquire));
        }
    });
    gic::disable(spi);
}

/// kvm-unit-tests' test_readonly_32: writing all ones, a pattern and zero leaves the register
/// unchanged (restored if not); `razwi`: it also reads as zero.
fn read_only(offset: u64, razwi: bool) -> bool {
    let original = gic::distributor_read(offset);
    if razwi && original != 0 {
        return false;
    }
    [u32::MAX, 0xa5a5_5a5a, 0]
        .into_iter()
        .filter(|&pattern| pattern != original)
        .all(|pattern| {
            gic::distributor_write(offset, pattern);
            let value = gic::distributor_read(offset);
            if value != original {
                gic::distributor_write(offset, original);
            }
            value == original
        })
}

fn byte(value: u32, index: u32) -> u32 {
    (value >> (index * 8)) & 0xff
}

/// kvm-unit-tests' test_byte_access on the word at `offset`, which holds `pattern`: byte 1
/// reads alone, byte 2 writes alone (0x1f), under the implemented-bits `mask`. `known` marks
/// the byte write's check a known failure (ITARGETSR under QEMU's mask defect).
fn byte_access(offset: u64, pattern: u32, mask: u32, known: bool) {
    let read = u32::from(gic::distributor_read_byte(offset + 1));
    let expected = byte(pattern, 1) & (mask >> 8);
    report!(
        read == expected,
        "byte reads successful ({read:#x}, expected {expected:#x})"
    );
    let pattern = (pattern & !(0xff << 16)) | 0x1f << 16;
    gic::distributor_write_byte(offset + 2, 0x1f);
    let word = gic::distributor_read(offset);
    report_kfail!(
        known,
        word == pattern & mask,
        "byte writes successful (writing 0x1f into byte 2 => {word:#010x}, expected {:#010x})",
        pattern & mask
    );
}

fn mmio(version: Version) {
    mapping(version);
    let typer = gic::distributor_read(distributor::TYPER);
    let lines = distributor::interrupt_lines(typer);
    report_info!("number of implemented SPIs: {}", lines - 32);
    report!(lines > 32, "GICD_TYPER.ITLinesNumber gives SPIs ({lines} INTIDs)");
    if version == Version::V2 {
        let interfaces = distributor::cpu_interfaces(typer);
        report!(
            interfaces as usize == cpu_count(),
            "all CPUs have interrupts (GICD_TYPER.CPUNumber: {interfaces}, CPUs: {})",
            cpu_count()
        );
    }
    report_info!("IIDR: {:#010x}", gic::distributor_read(distributor::IIDR));
    report!(read_only(distributor::TYPER, false), "GICD_TYPER is read-only");
    report!(read_only(distributor::IIDR, false), "GICD_IIDR is read-only");
    let pidr2_offset = match version {
        Version::V2 => distributor::PIDR2_V2,
        Version::V3 => distributor::PIDR2,
    };
    let pidr2 = gic::distributor_read(pidr2_offset);
    report!(
        read_only(pidr2_offset, false),
        "ICPIDR2 is read-only ({pidr2:#010x})"
    );
    let revision = distributor::architecture_revision(pidr2);
    report!(
        revision == version.number(),
        "PIDR2.ArchRev says GICv{} (got {revision})",
        version.number()
    );
    control(version);
    enables();
    priorities(lines);
    match version {
        Version::V2 => targets(lines),
        Version::V3 => routes(),
    }
}

/// GICv3 GICD_IROUTER of an SPI: an affinity route and the 1-of-N mode read back.
fn routes() {
    let _prefix = prefix("IROUTER");
    let offset = distributor::IROUTER + 8 * u64::from(test_spi());
    let read =
        || u64::from(gic::distributor_read(offset)) | u64::from(gic::distributor_read(offset + 4)) << 32;
    let write = |value: u64| {
        gic::distributor_write(offset, value as u32);
        gic::distributor_write(offset + 4, (value >> 32) as u32);
    };
    let original = read();
    let route = vmunit::arch::smp::mpidr_of(cpu_count() - 1) & 0xff_ffff;
    write(route);
    let value = read();
    report!(
        value == route,
        "an affinity route reads back ({value:#x}, wrote {route:#x})"
    );
    write(distributor::IROUTER_ANY);
    let any = read();
    report!(
        any & distributor::IROUTER_ANY != 0,
        "Interrupt_Routing_Mode (1 of N) reads back ({any:#x})"
    );
    write(original);
}

/// The runtime maps the GIC's register frames as device memory.
fn mapping(version: Version) {
    let frames: [(&str, u64); 2] = match version {
        Version::V2 => {
            let interface = gic::cpu_interface_address().unwrap_or(0);
            // The CPU interface's second 4 KiB frame holds GICC_DIR.
            [
                ("GICC", interface),
                ("GICC_DIR", interface + gic::cpu_interface::DIR),
            ]
        }
        Version::V3 => {
            let redistributor = gic::redistributor_base(cpu_index()).unwrap_or(0);
            [
                ("GICR RD_base", redistributor),
                ("GICR SGI_base", redistributor + gic::redistributor::SGI_BASE),
            ]
        }
    };
    for (name, address) in [("GICD", gic::distributor_base())].into_iter().chain(frames) {
        let _ = match mmu::descriptor(address) {
            Some((entry, level)) => report!(
                address != 0 && mmu::is_device(entry),
                "{name} at {address:#x} is mapped as device memory (level-{level} descriptor {entry:#x})"
            ),
            None => report!(false, "{name} at {address:#x} is mapped"),
        };
    }
}

/// GICD_CTLR: the enable bits the runtime set read back; cleared and set again.
fn control(version: Version) {
    let _prefix = prefix("CTLR");
    let enable = match version {
        Version::V2 => distributor::CTLR_ENABLE_GROUP0,
        Version::V3 => distributor::CTLR_ENABLE_GROUP1,
    };
    let original = gic::distributor_read(distributor::CTLR);
    report!(
        original & enable != 0,
        "the distributor is enabled ({original:#x})"
    );
    if version == Version::V3 {
        report!(
            original & distributor::CTLR_ARE != 0,
            "affinity routing is enabled ({original:#x})"
        );
    }
    gic::distributor_write(distributor::CTLR, original & !enable);
    wait_for_distributor();
    let cleared = gic::distributor_read(distributor::CTLR);
    gic::distributor_write(distributor::CTLR, original);
    wait_for_distributor();
    let restored = gic::distributor_read(distributor::CTLR);
    report!(
        cleared & enable == 0 && restored == original,
        "the enable bit clears and sets ({cleared:#x}, then {restored:#x})"
    );
}

fn wait_for_distributor() {
    wait_until(100, || {
        gic::distributor_read(distributor::CTLR) & distributor::CTLR_RWP == 0
    });
}

/// ISENABLER/ICENABLER of an SPI: a set bit reads back in both, a clear clears both.
fn enables() {
    let _prefix = prefix("ISENABLER");
    let spi = test_spi();
    let word = u64::from(spi / 32) * 4;
    let bit = 1 << (spi % 32);
    gic::distributor_write(distributor::ISENABLER + word, bit);
    let set = gic::distributor_read(distributor::ISENABLER + word) & bit != 0;
    let set_clear_view = gic::distributor_read(distributor::ICENABLER + word) & bit != 0;
    report!(
        set && set_clear_view,
        "writing 1 to ISENABLER enables SPI {spi} (ISENABLER {set}, ICENABLER {set_clear_view})"
    );
    gic::distributor_write(distributor::ICENABLER + word, bit);
    let cleared = gic::distributor_read(distributor::ISENABLER + word) & bit == 0;
    let cleared_clear_view = gic::distributor_read(distributor::ICENABLER + word) & bit == 0;
    report!(
        cleared && cleared_clear_view,
        "writing 1 to ICENABLER disables it"
    );
    gic::distributor_write(distributor::ISENABLER + word, 0);
    report!(
        gic::distributor_read(distributor::ISENABLER + word) & bit == 0,
        "writing 0 to ISENABLER changes nothing"
    );
}

/// kvm-unit-tests' test_priorities.
fn priorities(lines: u32) {
    let _prefix = prefix("IPRIORITYR");
    let first_spi = distributor::IPRIORITYR + distributor::FIRST_SPI;
    let original = gic::distributor_read(first_spi);
    gic::distributor_write(first_spi, u32::MAX);
    let mask = gic::distributor_read(first_spi);
    let inverse = !mask;
    report!(
        inverse >> 16 == inverse & 0xffff && inverse & 0xff == (inverse >> 8) & 0xff,
        "consistent priority masking (mask {mask:#010x})"
    );
    let bits = 8 - (inverse & 0xff).trailing_ones();
    report!(bits >= 4, "implements at least 4 priority bits ({bits})");
    gic::distributor_write(first_spi, 0);
    report!(gic::distributor_read(first_spi) == 0, "clearing priorities");
    let beyond = distributor::IPRIORITYR + u64::from(lines);
    if beyond + 4 <= distributor::IPRIORITYR + 1020 {
        report!(read_only(beyond, true), "accesses beyond limit RAZ/WI");
    } else {
        report_skip!("accesses beyond limit: all 1020 INTIDs are implemented");
    }
    // kvm-unit-tests writes 0 alone, which a RAZ/WI register passes too: all ones must read
    // back as the priority mask first.
    let last = distributor::IPRIORITYR + u64::from(lines) - 4;
    let last_original = gic::distributor_read(last);
    gic::distributor_write(last, u32::MAX);
    let ones = gic::distributor_read(last);
    gic::distributor_write(last, 0);
    let zero = gic::distributor_read(last);
    gic::distributor_write(last, last_original);
    report!(
        ones == mask && zero == 0,
        "accessing last SPIs (all ones read {ones:#010x}, mask {mask:#010x}; zero read {zero:#010x})"
    );
    let pattern = 0xff7f_bf3f;
    gic::distributor_write(first_spi, pattern);
    let value = gic::distributor_read(first_spi);
    report!(
        value == pattern & mask,
        "priorities are preserved ({value:#010x}, expected {:#010x})",
        pattern & mask
    );
    byte_access(first_spi, pattern, mask, false);
    gic::distributor_write(first_spi, original);
}

/// Whether QEMU's TCG GICv2 leaves target bits of absent CPU interfaces writable here: QEMU
/// 10.0's hw/intc/arm_gic.c gic_dist_writeb stores `value & ALL_CPU_MASK` (all 8 bits) in
/// irq_target[], where IHI0048B 4.3.12 makes the bits of unimplemented CPU interfaces RAZ/WI.
fn target_mask_defect() -> bool {
    tcg() && (2..8).contains(&cpu_count())
}

const TARGET_MASK_DEFECT: &str = "QEMU's GICv2 keeps ITARGETSR bits of absent CPU interfaces \
    (hw/intc/arm_gic.c gic_dist_writeb: irq_target[irq] = value & ALL_CPU_MASK); \
    see reproduce-gicv2-itargetsr-cpu-mask";

/// kvm-unit-tests' test_targets, plus the banked, read-only SGI/PPI targets. One CPU: the
/// architecture makes ITARGETSR RAZ/WI (IHI0048B 4.3.12: "In a uniprocessor implementation,
/// all interrupts target the one processor, and the GICD_ITARGETSRs are RAZ/WI"), which
/// kvm-unit-tests does not expect.
fn targets(lines: u32) {
    let _prefix = prefix("ITARGETSR");
    let count = cpu_count();
    let uniprocessor = count == 1;
    let own = gic::distributor_read(distributor::ITARGETSR);
    let own_expected = if uniprocessor {
        0
    } else {
        0x0101_0101 << cpu_index()
    };
    report!(
        own == own_expected,
        "SGI targets read as this CPU's interface in every byte ({own:#010x}, expected {own_expected:#010x})"
    );
    let private_read_only =
        (0..8).all(|register| read_only(distributor::ITARGETSR + 4 * register, uniprocessor));
    report!(
        private_read_only,
        "the SGI and PPI targets (ITARGETSR0-7) are read-only"
    );
    let first_spi = distributor::ITARGETSR + distributor::FIRST_SPI;
    let original = gic::distributor_read(first_spi);
    if uniprocessor {
        report!(
            read_only(first_spi, true),
            "one CPU: SPI targets are RAZ/WI (IHI0048B 4.3.12)"
        );
        report!(
            read_only(distributor::ITARGETSR + u64::from(lines) - 4, true),
            "one CPU: the last SPIs' targets are RAZ/WI"
        );
        return;
    }
    let cpu_mask = {
        let mask = ((1u32 << count) - 1) & 0xff;
        mask * 0x0101_0101
    };
    if target_mask_defect() {
        report_info!("known failure here: {TARGET_MASK_DEFECT}");
    }
    if count < 8 {
        gic::distributor_write(first_spi, u32::MAX);
        let value = gic::distributor_read(first_spi);
        report_kfail!(
            target_mask_defect(),
            value & !cpu_mask == 0,
            "bits for non-existent CPUs masked ({value:#010x}, {} non-existent CPUs)",
            8 - count
        );
    } else {
        report_skip!("CPU masking (all CPUs implemented)");
    }
    let beyond = distributor::ITARGETSR + u64::from(lines);
    if lines < 1020 {
        report!(read_only(beyond, true), "accesses beyond limit RAZ/WI");
    } else {
        report_skip!("accesses beyond limit: all 1020 INTIDs are implemented");
    }
    let pattern = 0x0103_020f;
    gic::distributor_write(first_spi, pattern);
    let value = gic::distributor_read(first_spi);
    report_kfail!(
        target_mask_defect(),
        value == pattern & cpu_mask,
        "register content preserved ({value:#010x}, expected {:#010x})",
        pattern & cpu_mask
    );
    byte_access(first_spi, pattern, cpu_mask, target_mask_defect());
    gic::distributor_write(first_spi, original);
}

/// The reproducer: an SPI's ITARGETSR byte written with all ones keeps only the bits of
/// implemented CPU interfaces (IHI0048B 4.3.12), with no known-failure allowance.
fn itargetsr_mask(version: Version) {
    if version != Version::V2 || !(2..8).contains(&cpu_count()) {
        report_skip!("needs a GICv2 with 2 to 7 CPUs (-M virt,gic-version=2 -smp 3)");
        return;
    }
    let offset = distributor::ITARGETSR + u64::from(test_spi());
    let original = gic::distributor_read_byte(offset);
    gic::distributor_write_byte(offset, 0xff);
    let value = gic::distributor_read_byte(offset);
    gic::distributor_write_byte(offset, original);
    let implemented = ((1u32 << cpu_count()) - 1) as u8;
    report!(
        value == implemented,
        "ITARGETSR of SPI {} written 0xff reads {value:#04x}: only the {} implemented CPU interfaces ({implemented:#04x})",
        test_spi(),
        cpu_count()
    );
}
