//! micro-bench: kvm-unit-tests' arm/micro-bench.c: the cost of a hypercall, an MMIO read the
//! VMM emulates (a virtio-mmio register), an MMIO read of the GIC distributor, an EOI of the
//! spurious INTID, an IPI to CPU 1 (and, where GICD_TYPER2.nASSGIcap allows, one without an
//! active state: `ipi_hw`), an LPI through the ITS to CPU 1 and a 10 ms timer interrupt,
//! each as `BENCH: <name>=<ticks> ticks` (generic timer ticks per operation, batches doubling
//! until one lasts long enough, few iterations so that TCG runs stay short). Unlike
//! kvm-unit-tests, each benchmark also checks that its operation happened: the hypercall
//! returned SMCCC's NOT_SUPPORTED, the reads returned the registers' values, the EOI left no
//! interrupt active, CPU 1 took every IPI and LPI, the timer fired after at least 10 ms.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use vmunit::arch::gic::its::{self, Collection, Command, Device, LpiConfig};
use vmunit::arch::gic::{self, SgiTarget, distributor};
use vmunit::arch::mmu::map_device;
use vmunit::arch::smp::{cpu_count, on_cpu, on_cpu_async};
use vmunit::arch::timer::{self, CTL_ENABLE, CTL_IMASK, Timer};
use vmunit::arch::{instructions, psci};
use vmunit::benchmark::{self, Sample};
use vmunit::time::{spin_until, wait_until};
use vmunit::{report, report_info, report_skip, report_summary};

vmunit::main!(main);

/// The SGI of the IPI benchmark.
const SGI: u32 = 1;
/// kvm-unit-tests' LPI (device 2, event 20, collection 1 on CPU 1).
const LPI: u32 = 8199;
/// QEMU `virt`'s first virtio-mmio transport (kvm-unit-tests' userspace_emulated_addr page).
const VIRTIO_MMIO: u64 = 0x0a00_0000;
/// virtio-mmio MagicValue (offset 0): "virt" little-endian.
const VIRTIO_MAGIC: u32 = 0x7472_6976;
/// GICD_IIDR.
const GICD_IIDR: u64 = 0x8;
/// GICD_TYPER2 (GICv3; its nASSGIcap is GICv4.1's).
const GICD_TYPER2: u64 = 0xc;
/// GICD_TYPER2.nASSGIcap: GICD_CTLR.nASSGIreq may be set.
const TYPER2_NASSGI_CAPABLE: u32 = 1 << 8;
/// GICD_CTLR.nASSGIreq: SGIs have no active state.
const CTLR_NASSGI_REQUEST: u32 = 1 << 8;
/// The running priority of a CPU interface with no active interrupt.
const IDLE_PRIORITY: u8 = 0xff;
/// Batches start at this many iterations and double up to the maximum, until one lasts the
/// budget.
const FIRST_BATCH: u64 = 8;
const MAXIMUM_BATCH: u64 = 256;
const BUDGET_MILLISECONDS: u64 = 20;
const UNIT: &str = "ticks";

/// Set while CPU 1 serves interrupts; cleared to let it return.
static SERVING: AtomicBool = AtomicBool::new(false);
/// Set once CPU 1 listens.
static LISTENING: AtomicBool = AtomicBool::new(false);
/// Interrupts CPU 1 took, per INTID of interest: [SGI, LPI].
static RECEIVED: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
/// Timer interrupts CPU 0 took, and the count at the last one.
static TIMER_FIRED: AtomicU32 = AtomicU32::new(0);
static TIMER_AT: AtomicU64 = AtomicU64::new(0);

fn main(_arguments: &[&str]) -> i32 {
    report_info!(
        "the counter runs at {} Hz (BENCH values are its ticks per operation)",
        timer::frequency()
    );
    hypercall();
    mmio_read_user();
    if let Err(problem) = gic::init() {
        report!(false, "the GIC initialises: {problem}");
        return report_summary();
    }
    mmio_read_vgic();
    eoi();
    if cpu_count() < 2 {
        report_skip!("ipi and lpi need 2 CPUs (got {})", cpu_count());
    } else {
        start_listener();
        ipi();
        ipi_hw();
        lpi();
        SERVING.store(false, Ordering::Release);
        gic::send_sgi(SGI, SgiTarget::Cpu(1));
        on_cpu(1, || {});
    }
    timer_10ms();
    report_summary()
}

fn measure(batch: impl FnMut(u64)) -> Sample {
    benchmark::measure(BUDGET_MILLISECONDS, FIRST_BATCH, MAXIMUM_BATCH, batch)
}

/// hvc: kvm-unit-tests' hypercall, SMCCC function 0x4b000000, which no service owns: the
/// hypervisor answers Unknown Function (-1) itself.
fn hypercall() {
    match psci::try_call_unassigned() {
        Ok(psci::SMCCC_NOT_SUPPORTED) => {}
        other => {
            report!(
                false,
                "hvc: SMCCC function {:#x} returns NOT_SUPPORTED (-1) (got {other:?})",
                psci::UNASSIGNED_FUNCTION
            );
            return;
        }
    }
    let mut wrong = 0u64;
    let sample = measure(|iterations| {
        wrong = 0;
        for _ in 0..iterations {
            if psci::call_unassigned() != psci::SMCCC_NOT_SUPPORTED {
                wrong += 1;
            }
        }
    });
    benchmark::report_sample("hvc", sample, UNIT);
    report!(
        wrong == 0,
        "hvc: every call of SMCCC function {:#x} returned NOT_SUPPORTED (-1) ({wrong} of {} differed)",
        psci::UNASSIGNED_FUNCTION,
        sample.iterations
    );
}

/// mmio_read_user: a read of a register the VMM (userspace) emulates.
fn mmio_read_user() {
    let window = match map_device(VIRTIO_MMIO, 0x1000) {
        Ok(window) => window,
        Err(problem) => {
            report!(false, "mmio_read_user: the virtio-mmio page maps ({problem:?})");
            return;
        }
    };
    let mut wrong = 0u64;
    let sample = measure(|iterations| {
        wrong = 0;
        for _ in 0..iterations {
            if window.read_u32(0) != VIRTIO_MAGIC {
                wrong += 1;
            }
        }
    });
    benchmark::report_sample("mmio_read_user", sample, UNIT);
    report!(
        wrong == 0,
        "mmio_read_user: every read of virtio-mmio MagicValue returned {VIRTIO_MAGIC:#x} ({wrong} of {} differed)",
        sample.iterations
    );
}

/// mmio_read_vgic: a read of GICD_IIDR (the in-kernel vGIC under KVM).
fn mmio_read_vgic() {
    let expected = gic::distributor_read(GICD_IIDR);
    let mut wrong = 0u64;
    let sample = measure(|iterations| {
        wrong = 0;
        for _ in 0..iterations {
            if gic::distributor_read(GICD_IIDR) != expected {
                wrong += 1;
            }
        }
    });
    benchmark::report_sample("mmio_read_vgic", sample, UNIT);
    report!(
        expected & 0xfff != 0 && wrong == 0,
        "mmio_read_vgic: every GICD_IIDR read returned {expected:#x} (implementer nonzero; {wrong} of {} differed)",
        sample.iterations
    );
}

/// eoi: an EOI of the spurious INTID 1023, which the GIC ignores.
fn eoi() {
    let spurious = gic::acknowledge();
    report!(
        spurious.intid() == gic::SPURIOUS,
        "eoi: an acknowledge with nothing pending returns INTID 1023 (got {})",
        spurious.intid()
    );
    if spurious.intid() != gic::SPURIOUS {
        gic::end_of_interrupt(spurious);
        return;
    }
    let taken = gic::delivered_total(0);
    let sample = measure(|iterations| {
        for _ in 0..iterations {
            gic::end_of_interrupt(spurious);
        }
    });
    benchmark::report_sample("eoi", sample, UNIT);
    let priority = gic::running_priority();
    report!(
        priority == IDLE_PRIORITY && gic::delivered_total(0) == taken,
        "eoi: after {} EOIs of INTID 1023 no interrupt is active (running priority {priority:#x}, expected {IDLE_PRIORITY:#x})",
        sample.iterations
    );
}

fn count_sgi(_intid: u32) {
    RECEIVED[0].fetch_add(1, Ordering::AcqRel);
}

fn count_lpi(_intid: u32) {
    RECEIVED[1].fetch_add(1, Ordering::AcqRel);
}

/// CPU 1 takes interrupts until SERVING is cleared (and an SGI wakes it): kvm-unit-tests'
/// gic_secondary_entry spins with IRQs unmasked, this one waits in WFI, so that under TCG its
/// vCPU thread does not compete with CPU 0's for the host's CPUs.
fn start_listener() {
    gic::set_interrupt_handler(SGI, Some(count_sgi));
    gic::set_interrupt_handler(LPI, Some(count_lpi));
    SERVING.store(true, Ordering::Release);
    on_cpu_async(1, || {
        if gic::init().is_ok() {
            gic::enable(SGI);
            LISTENING.store(true, Ordering::Release);
        }
        while SERVING.load(Ordering::Acquire) {
            instructions::wait_for_interrupt_enabled();
        }
    });
    report!(
        spin_until(5000, || LISTENING.load(Ordering::Acquire)),
        "CPU 1 initialises its GIC interface and listens"
    );
}

/// Runs `send` and waits (up to a second) until CPU 1 counted one more interrupt in
/// `counter`; returns whether it did.
fn round_trip(counter: &AtomicU32, send: impl FnOnce()) -> bool {
    let before = counter.load(Ordering::Acquire);
    send();
    spin_until(1000, || counter.load(Ordering::Acquire) != before)
}

/// ipi: SGI 1 to CPU 1, waiting until it is taken.
fn ipi() {
    ipi_benchmark("ipi");
}

/// ipi_hw (kvm-unit-tests' ipi_hw_prep): the same IPIs once GICD_CTLR.nASSGIreq asks for SGIs
/// without an active state, which a GICv4.1 host injects directly into the vCPU; where
/// GICD_TYPER2.nASSGIcap says that cannot be asked for, a SKIP.
fn ipi_hw() {
    if gic::version() != Some(gic::Version::V3) {
        report_skip!("ipi_hw: GICD_TYPER2.nASSGIcap needs a GICv3 distributor (this is a GICv2)");
        return;
    }
    let typer2 = gic::distributor_read(GICD_TYPER2);
    if typer2 & TYPER2_NASSGI_CAPABLE == 0 {
        report_skip!(
            "ipi_hw: GICD_TYPER2.nASSGIcap is 0 (GICD_TYPER2 {typer2:#x}): SGIs without an active state (GICv4.1) cannot be asked for"
        );
        return;
    }
    // nASSGIreq may change only while the distributor's group 1 is disabled.
    let control = gic::distributor_read(distributor::CTLR) & !distributor::CTLR_RWP;
    for value in [
        (control & !distributor::CTLR_ENABLE_GROUP1) | CTLR_NASSGI_REQUEST,
        control | CTLR_NASSGI_REQUEST,
    ] {
        gic::distributor_write(distributor::CTLR, value);
        spin_until(1000, || {
            gic::distributor_read(distributor::CTLR) & distributor::CTLR_RWP == 0
        });
    }
    let control = gic::distributor_read(distributor::CTLR);
    report!(
        control & CTLR_NASSGI_REQUEST != 0,
        "ipi_hw: GICD_CTLR.nASSGIreq reads back set where nASSGIcap is (GICD_CTLR {control:#x})"
    );
    ipi_benchmark("ipi_hw");
}

/// `name`: SGI 1 to CPU 1, waiting until it is taken, measured; every SGI must be taken.
fn ipi_benchmark(name: &str) {
    let mut received = 0u64;
    let sample = measure(|iterations| {
        received = 0;
        for _ in 0..iterations {
            if round_trip(&RECEIVED[0], || gic::send_sgi(SGI, SgiTarget::Cpu(1))) {
                received += 1;
            }
        }
    });
    benchmark::report_sample(name, sample, UNIT);
    report!(
        received == sample.iterations,
        "{name}: CPU 1 took every SGI ({received} of {})",
        sample.iterations
    );
}

/// lpi: kvm-unit-tests' lpi_prep (device 2, 8 events; collection 1 on CPU 1; event 20 → LPI
/// 8199), then an INT command per iteration, waiting until CPU 1 takes the LPI.
fn lpi() {
    if its::its_address().is_none() {
        report_skip!("lpi: the machine has no ITS");
        return;
    }
    if let Err(problem) = its::init() {
        report!(false, "lpi: the ITS and the LPI tables initialise ({problem:?})");
        return;
    }
    let Some(device) = Device::new(2, 5) else {
        report!(false, "lpi: device 2's interrupt translation table is allocated");
        return;
    };
    let collection = Collection::new(1, 1);
    its::set_lpi_config(LPI, LpiConfig::DEFAULT);
    let mapped = [
        Command::MapDevice { device, valid: true },
        Command::MapCollection {
            collection,
            valid: true,
        },
        Command::InvalidateAll { collection },
        Command::MapTranslation {
            device,
            event: 20,
            intid: LPI,
            collection,
        },
    ]
    .into_iter()
    .try_for_each(its::send);
    if let Err(problem) = mapped {
        report!(false, "lpi: MAPD, MAPC, INVALL and MAPTI complete ({problem:?})");
        return;
    }
    let mut received = 0u64;
    let mut failed = 0u64;
    let sample = measure(|iterations| {
        received = 0;
        failed = 0;
        for _ in 0..iterations {
            let delivered = round_trip(&RECEIVED[1], || {
                if its::send(Command::Interrupt { device, event: 20 }).is_err() {
                    failed += 1;
                }
            });
            if delivered {
                received += 1;
            }
        }
    });
    benchmark::report_sample("lpi", sample, UNIT);
    report!(
        received == sample.iterations && failed == 0,
        "lpi: CPU 1 took LPI {LPI} for every INT ({received} of {}, {failed} commands failed)",
        sample.iterations
    );
}

fn timer_handler(_intid: u32) {
    let timer = Timer::Virtual;
    timer.set_control(CTL_ENABLE | CTL_IMASK);
    TIMER_AT.store(timer::virtual_count(), Ordering::Release);
    TIMER_FIRED.fetch_add(1, Ordering::AcqRel);
}

/// timer_10ms: the virtual timer armed 10 ms ahead, its interrupt awaited.
fn timer_10ms() {
    let timer = Timer::Virtual;
    gic::set_interrupt_handler(timer.intid(), Some(timer_handler));
    gic::enable(timer.intid());
    let ten_milliseconds = timer::frequency() / 100;
    let mut early = 0u64;
    let mut fired = 0u64;
    let mut iterations = 0u64;
    let start = timer::virtual_count();
    for _ in 0..4 {
        iterations += 1;
        let before = TIMER_FIRED.load(Ordering::Acquire);
        let armed = timer::virtual_count();
        timer.set_compare_value(armed + ten_milliseconds);
        timer.set_control(CTL_ENABLE);
        if wait_until(1000, || TIMER_FIRED.load(Ordering::Acquire) != before) {
            fired += 1;
            if TIMER_AT.load(Ordering::Acquire).wrapping_sub(armed) < ten_milliseconds {
                early += 1;
            }
        }
        timer.set_control(0);
    }
    gic::disable(timer.intid());
    let sample = Sample {
        iterations,
        ticks: timer::virtual_count() - start,
    };
    benchmark::report_sample("timer_10ms", sample, UNIT);
    report!(
        fired == iterations && early == 0,
        "timer_10ms: the timer fired every time, never before 10 ms ({fired} of {iterations} fired, {early} early)"
    );
}
