//! Where fixed IPIs land (kvm-unit-tests' apic.c: logical IPIs, physical broadcast): logical
//! flat and cluster destinations to one CPU or two, the physical broadcast address and the
//! all-including-self and all-excluding-self shorthands, aliased xAPIC physical IDs, and KVM's
//! paravirtual send-IPI hypercall (kvm-unit-tests' test_pv_ipi, extended). CPU 1
//! listens with interrupts enabled and applies the LDR/DFR (or ID) the test asks of it; each
//! CPU counts what it receives.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use vmunit::arch::apic::{self, register};
use vmunit::arch::instructions::{HypercallInstruction, kvm};
use vmunit::arch::kvmclock::{KvmFeature, has_kvm_feature, kvm_cpuid_base};
use vmunit::arch::set_interrupt_handler;
use vmunit::arch::smp::{apic_id_of, cpu_count, cpu_index, on_cpu_async};
use vmunit::time::{delay, spin_until, wait_until};
use vmunit::{prefix, report, report_info, report_skip};

use crate::{PATIENCE, SETTLE};

/// The vector of the IPIs sent here.
const VECTOR: u8 = 0x43;

/// Interrupts on [`VECTOR`] received by CPU 0 and CPU 1.
static RECEIVED: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
/// CPU 1's listener stops when this is set.
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether CPU 1 listens.
static LISTENING: AtomicBool = AtomicBool::new(false);
/// A request to CPU 1: `REQUESTED`, `CLUSTER` for the cluster model (else flat), and the
/// LDR in bits 31:0; CPU 1 clears it once applied.
static REQUEST: AtomicU64 = AtomicU64::new(0);
const REQUESTED: u64 = 1 << 63;
const CLUSTER: u64 = 1 << 62;
/// In a request: set the xAPIC ID to bits 7:0 instead of the LDR.
const SET_ID: u64 = 1 << 61;

fn count(_vector: u8) {
    if let Some(counter) = RECEIVED.get(cpu_index()) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// CPU 1's job: interrupts on, apply LDR/DFR/ID requests, until [`STOP`] (or 60 s pass).
fn listen() {
    LISTENING.store(true, Ordering::SeqCst);
    let _ = wait_until(60_000, || {
        let request = REQUEST.load(Ordering::SeqCst);
        if request & REQUESTED != 0 && request & SET_ID != 0 {
            apic::write(register::ID, (request as u32 & 0xff) << 24);
            REQUEST.store(0, Ordering::SeqCst);
        } else if request & REQUESTED != 0 {
            let format = if request & CLUSTER != 0 {
                apic::DESTINATION_FORMAT_CLUSTER
            } else {
                apic::DESTINATION_FORMAT_FLAT
            };
            apic::write(register::DESTINATION_FORMAT, format);
            apic::write(register::LOGICAL_DESTINATION, request as u32);
            REQUEST.store(0, Ordering::SeqCst);
        }
        STOP.load(Ordering::SeqCst)
    });
    LISTENING.store(false, Ordering::SeqCst);
}

/// Gives CPU `cpu` (0 or 1) the DFR model `format` and the logical ID `logical` (LDR bits
/// 31:24).
fn set_logical(cpu: usize, format: u32, logical: u8) {
    let ldr = u32::from(logical) << 24;
    if cpu == 0 {
        apic::write(register::DESTINATION_FORMAT, format);
        apic::write(register::LOGICAL_DESTINATION, ldr);
        return;
    }
    let model = if format == apic::DESTINATION_FORMAT_CLUSTER {
        CLUSTER
    } else {
        0
    };
    REQUEST.store(REQUESTED | model | u64::from(ldr), Ordering::SeqCst);
    let _ = spin_until(PATIENCE, || REQUEST.load(Ordering::SeqCst) == 0);
}

/// Sends one fixed IPI and returns what CPU 0 and CPU 1 received: waits until `expected`
/// arrived (or [`PATIENCE`] passed), then [`SETTLE`] more for anything unexpected.
fn deliver(destination: u32, command: u32, expected: [u32; 2]) -> [u32; 2] {
    deliver_and_settle(destination, command, expected, SETTLE / 10)
}

/// [`deliver`], waiting `settle` milliseconds for unexpected interrupts.
fn deliver_and_settle(destination: u32, command: u32, expected: [u32; 2], settle: u64) -> [u32; 2] {
    for counter in &RECEIVED {
        counter.store(0, Ordering::SeqCst);
    }
    let sent = apic::send_command(destination, command | u32::from(VECTOR));
    let received = || RECEIVED.each_ref().map(|counter| counter.load(Ordering::SeqCst));
    if sent {
        let _ = wait_until(PATIENCE, || received() == expected);
        let _ = wait_until(settle, || received() != expected);
    }
    received()
}

/// Runs `checks` with CPU 1 listening and `handler` on [`VECTOR`].
fn with_listener(handler: fn(u8), checks: impl FnOnce()) {
    set_interrupt_handler(VECTOR, Some(handler));
    STOP.store(false, Ordering::SeqCst);
    on_cpu_async(1, listen);
    if !spin_until(PATIENCE, || LISTENING.load(Ordering::SeqCst)) {
        report!(false, "CPU 1 listens for IPIs");
        STOP.store(true, Ordering::SeqCst);
        return;
    }
    checks();
    STOP.store(true, Ordering::SeqCst);
    let _ = spin_until(PATIENCE, || !LISTENING.load(Ordering::SeqCst));
    delay(1);
    set_interrupt_handler(VECTOR, None);
}

/// Logical flat and cluster destinations (xAPIC mode only: x2APIC's logical IDs are fixed).
pub fn check_logical() {
    let _prefix = prefix("logical IPIs");
    if cpu_count() < 2 {
        report_skip!("logical IPIs between CPUs need smp >= 2");
        return;
    }
    if apic::x2apic_mode() {
        report_skip!("logical flat and cluster IPIs with a writable LDR are xAPIC's");
        return;
    }
    let format = apic::read(register::DESTINATION_FORMAT);
    let logical = apic::read(register::LOGICAL_DESTINATION);
    report_info!("CPU 0: DFR {format:#x}, LDR {logical:#x}");
    with_listener(count, || {
        let flat = apic::DESTINATION_FORMAT_FLAT;
        let cluster = apic::DESTINATION_FORMAT_CLUSTER;
        let logical_ipi = apic::DESTINATION_LOGICAL;
        // Flat, one target: CPU 1 alone has a logical ID (bit `i`); every destination that
        // includes bit i reaches it, whatever other (absent) bits it names. 0xff is the
        // broadcast, left out as kvm-unit-tests does.
        set_logical(0, flat, 0);
        for bit in 0..8 {
            let id = 1u8 << bit;
            set_logical(1, flat, id);
            for extra in [0u8, 0x5a & !id, 0xa5 & !id] {
                let destination = id | extra;
                if destination == 0xff {
                    continue;
                }
                let got = deliver(u32::from(destination), logical_ipi, [0, 1]);
                report!(
                    got == [0, 1],
                    "flat: CPU 1 with logical ID {id:#04x} alone receives an IPI to {destination:#04x} (CPU 0, CPU 1 got {got:?})"
                );
            }
            let miss = !id & 0x7f;
            let got = deliver(u32::from(miss), logical_ipi, [0, 0]);
            report!(
                got == [0, 0],
                "flat: an IPI to {miss:#04x} reaches neither CPU (logical IDs 0 and {id:#04x}; got {got:?})"
            );
        }
        // Flat, two targets: distinct bits, and the same two bits in both LDRs.
        for (first, second) in [(0, 1), (2, 7), (6, 3)] {
            let (a, b) = (1u8 << first, 1u8 << second);
            for (zero, one) in [(a, b), (a | b, a | b)] {
                set_logical(0, flat, zero);
                set_logical(1, flat, one);
                let destination = u32::from(a | b);
                let got = deliver(destination, logical_ipi, [1, 1]);
                report!(
                    got == [1, 1],
                    "flat: logical IDs {zero:#04x} and {one:#04x} both receive an IPI to {destination:#04x} (got {got:?})"
                );
            }
        }
        // Cluster: LDR bits 7:4 name the cluster (0xf is the broadcast cluster), bits 3:0
        // the CPUs in it.
        set_logical(0, cluster, 0);
        for cluster_id in 0..0xfu8 {
            let bit = cluster_id % 4;
            let id = cluster_id << 4 | 1 << bit;
            set_logical(1, cluster, id);
            let extra = 0xf & !(1 << bit);
            for destination in [id, id | extra] {
                let got = deliver(u32::from(destination), logical_ipi, [0, 1]);
                report!(
                    got == [0, 1],
                    "cluster: CPU 1 with logical ID {id:#04x} alone receives an IPI to {destination:#04x} (got {got:?})"
                );
            }
            let other_cluster = (cluster_id + 1) % 0xf;
            let miss = other_cluster << 4 | 0xf;
            let got = deliver(u32::from(miss), logical_ipi, [0, 0]);
            report!(
                got == [0, 0],
                "cluster: an IPI to {miss:#04x} (cluster {other_cluster:#x}) misses CPU 1 in cluster {cluster_id:#x} (got {got:?})"
            );
        }
        for cluster_id in [0u8, 5, 0xe] {
            let (a, b) = (1u8 << (cluster_id % 4), 1u8 << ((cluster_id + 2) % 4));
            for (zero, one) in [(a, b), (a | b, a | b)] {
                let (zero, one) = (cluster_id << 4 | zero, cluster_id << 4 | one);
                set_logical(0, cluster, zero);
                set_logical(1, cluster, one);
                let destination = u32::from(cluster_id << 4 | a | b);
                let got = deliver(destination, logical_ipi, [1, 1]);
                report!(
                    got == [1, 1],
                    "cluster: logical IDs {zero:#04x} and {one:#04x} both receive an IPI to {destination:#04x} (got {got:?})"
                );
            }
        }
        set_logical(1, flat, 0);
    });
    apic::write(register::DESTINATION_FORMAT, format);
    apic::write(register::LOGICAL_DESTINATION, logical);
}

/// The physical broadcast destination (0xff in xAPIC mode, 0xffffffff in x2APIC mode) and
/// the all-including-self and all-excluding-self shorthands.
pub fn check_broadcast() {
    let _prefix = prefix("broadcast");
    if cpu_count() != 2 {
        report_skip!(
            "the broadcast checks count on exactly 2 CPUs (got {})",
            cpu_count()
        );
        return;
    }
    with_listener(count, || {
        let broadcast = if apic::x2apic_mode() {
            apic::X2APIC_BROADCAST
        } else {
            apic::XAPIC_BROADCAST
        };
        let got = deliver(broadcast, 0, [1, 1]);
        report!(
            got == [1, 1],
            "a fixed IPI to the physical broadcast address {broadcast:#x} reaches both CPUs once (got {got:?})"
        );
        let got = deliver(0, apic::TO_ALL_INCLUDING_SELF, [1, 1]);
        report!(
            got == [1, 1],
            "the all-including-self shorthand reaches both CPUs once (got {got:?})"
        );
        let got = deliver(0, apic::TO_ALL_EXCLUDING_SELF, [0, 1]);
        report!(
            got == [0, 1],
            "the all-excluding-self shorthand reaches CPU 1 only (got {got:?})"
        );
    });
}

/// Each CPU's own xAPIC ID, for the aliasing check's handler to go back to.
static OWN_ID: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];

/// The aliasing check's handler: the next xAPIC ID (after 0xff: the CPU's own), then count.
fn next_id(vector: u8) {
    let id = apic::id();
    let next = if id == 0xff {
        OWN_ID[cpu_index().min(1)].load(Ordering::SeqCst)
    } else {
        id + 1
    };
    apic::write(register::ID, next << 24);
    count(vector);
}

/// kvm-unit-tests' "IPI to aliased xAPIC physical IDs": with both CPUs' xAPIC IDs equal, a
/// physical IPI to that ID reaches both. Both start at ID 0 and step their IDs up in the
/// handler, so that IPIs to 0, 1, ..., 0xff each reach both; after 0xff each CPU goes back to
/// its own ID. kvm-unit-tests runs it only where CPUID does not advertise x2APIC (KVM's
/// 32-bit x2APIC ID quirk breaks aliasing otherwise); so does this.
pub fn check_aliased_ids() {
    let _prefix = prefix("aliased xAPIC IDs");
    if cpu_count() != 2 {
        report_skip!("aliasing needs exactly 2 CPUs (got {})", cpu_count());
        return;
    }
    if apic::x2apic_mode() || vmunit::arch::cpuid::Feature::X2apic.supported() {
        report_skip!("x2APIC is advertised: KVM's x2APIC API leaves xAPIC ID aliasing alone");
        return;
    }
    OWN_ID[0].store(apic::id(), Ordering::SeqCst);
    OWN_ID[1].store(vmunit::arch::smp::apic_id_of(1), Ordering::SeqCst);
    let mut failures = 0;
    let mut first = None;
    // Stays 0 where CPU 1 never listened (with_listener reports that and skips the IPIs).
    let mut sent = 0;
    with_listener(next_id, || {
        REQUEST.store(REQUESTED | SET_ID, Ordering::SeqCst);
        let _ = spin_until(PATIENCE, || REQUEST.load(Ordering::SeqCst) == 0);
        apic::write(register::ID, 0);
        for destination in 0..=0xffu32 {
            // No settling: an extra interrupt shows in the next destination's count.
            let got = deliver_and_settle(destination, 0, [1, 1], 0);
            sent += 1;
            if got != [1, 1] {
                failures += 1;
                first.get_or_insert((destination, got));
                // Put both IDs at the next destination again.
                apic::write(register::ID, (destination + 1) << 24);
                REQUEST.store(REQUESTED | SET_ID | u64::from(destination + 1), Ordering::SeqCst);
                let _ = spin_until(PATIENCE, || REQUEST.load(Ordering::SeqCst) == 0);
            }
        }
        // Back to their own IDs, whatever happened.
        apic::write(register::ID, OWN_ID[0].load(Ordering::SeqCst) << 24);
        REQUEST.store(
            REQUESTED | SET_ID | u64::from(OWN_ID[1].load(Ordering::SeqCst)),
            Ordering::SeqCst,
        );
        let _ = spin_until(PATIENCE, || REQUEST.load(Ordering::SeqCst) == 0);
    });
    report!(
        sent == 0x100 && failures == 0,
        "a physical IPI to each xAPIC ID 0..=0xff reaches both CPUs, which share it ({sent} sent, {failures} failed; first {first:?})"
    );
    let cpu1 = AtomicU32::new(u32::MAX);
    vmunit::arch::smp::on_cpu(1, || cpu1.store(apic::id(), Ordering::SeqCst));
    let ids = [apic::id(), cpu1.load(Ordering::SeqCst)];
    let own = OWN_ID.each_ref().map(|id| id.load(Ordering::SeqCst));
    report!(
        ids == own,
        "both CPUs have their own xAPIC IDs {own:?} back (got {ids:?})"
    );
}

/// A KVM_HC_SEND_IPI hypercall: the bitmap's two halves, the lowest APIC ID and the ICR value.
#[derive(Clone, Copy, Debug)]
struct PvIpi {
    low: u64,
    high: u64,
    min: u64,
    icr: u64,
}

/// Makes the hypercall `ipi` and returns RAX and what CPU 0 and CPU 1 received: waits until
/// `expected` arrived (or [`PATIENCE`] passed), then [`SETTLE`] / 10 more.
fn pv_deliver(instruction: HypercallInstruction, ipi: PvIpi, expected: [u32; 2]) -> (u64, [u32; 2]) {
    for counter in &RECEIVED {
        counter.store(0, Ordering::SeqCst);
    }
    let returned = instruction.call_with(kvm::HC_SEND_IPI, [ipi.low, ipi.high, ipi.min, ipi.icr]);
    let received = || RECEIVED.each_ref().map(|counter| counter.load(Ordering::SeqCst));
    let _ = wait_until(PATIENCE, || received() == expected);
    let _ = wait_until(SETTLE / 10, || received() != expected);
    (returned, received())
}

/// KVM's paravirtual send-IPI (kvm-unit-tests' test_pv_ipi; Linux
/// Documentation/virt/kvm/x86/hypercalls.rst, KVM_HC_SEND_IPI; `kvm_pv_send_ipi` in
/// arch/x86/kvm/lapic.c): a fixed IPI to every APIC whose physical ID has its bit in the
/// bitmap (RBX: IDs RDX..RDX+63, RCX: the 64 after), returning how many APICs took it.
/// kvm-unit-tests' own case: a bitmap from ID 0xffffffff, where no APIC is, returns 0.
/// Skips where KVM's CPUID leaves do not advertise KVM_FEATURE_PV_SEND_IPI, and under
/// kvm_pvm, whose hypercalls never complete.
pub fn check_pv_send_ipi() {
    let _prefix = prefix("PV send IPI");
    let Some(base) = kvm_cpuid_base() else {
        report_skip!("no KVM CPUID leaves (no KVMKVMKVM signature in 0x40000000..), so no KVM_HC_SEND_IPI");
        return;
    };
    if !has_kvm_feature(KvmFeature::PvSendIpi) {
        report_skip!(
            "KVM_FEATURE_PV_SEND_IPI (CPUID {:#x}:EAX[{}]) is clear",
            base + 1,
            KvmFeature::PvSendIpi as u32
        );
        return;
    }
    let instruction = HypercallInstruction::of_this_cpu();
    if vmunit::environment::instruction_emulating_kvm() {
        report_skip!(
            "KVM_FEATURE_PV_SEND_IPI is set, but this host's kvm_pvm never completes {}: the vCPU would hang (reproduce-hypercall)",
            instruction.name()
        );
        return;
    }
    // kvm-unit-tests: bitmap 0xffffffff from ID 0xffffffff, ICR 0: no APIC has such an ID.
    let returned = instruction.call_with(kvm::HC_SEND_IPI, [0xffff_ffff, 0, 0xffff_ffff, 0]);
    report!(
        returned == 0,
        "{} of KVM_HC_SEND_IPI to IDs from 0xffffffff (none exists) returns 0 (got {returned:#x})",
        instruction.name()
    );
    if cpu_count() != 2 {
        report_skip!(
            "the delivery checks count on exactly 2 CPUs (got {})",
            cpu_count()
        );
        return;
    }
    let ids = [apic_id_of(0), apic_id_of(1)];
    if ids.iter().any(|&id| id >= 64) {
        report_skip!("the delivery checks put both APIC IDs in one 64-bit half (got {ids:?})");
        return;
    }
    let bit = |cpu: usize| 1u64 << ids[cpu];
    let fixed = u64::from(VECTOR);
    with_listener(count, || {
        let one = PvIpi {
            low: bit(1),
            high: 0,
            min: 0,
            icr: fixed,
        };
        let (returned, got) = pv_deliver(instruction, one, [0, 1]);
        report!(
            returned == 1 && got == [0, 1],
            "a bitmap naming CPU 1's APIC ID {} sends it one IPI and returns 1 (got {returned:#x}, received {got:?})",
            ids[1]
        );
        let both = PvIpi {
            low: bit(0) | bit(1),
            high: 0,
            min: 0,
            icr: fixed,
        };
        let (returned, got) = pv_deliver(instruction, both, [1, 1]);
        report!(
            returned == 2 && got == [1, 1],
            "a bitmap naming both APIC IDs {ids:?}, the sender's too, reaches each once and returns 2 (got {returned:#x}, received {got:?})"
        );
        // The bitmap counts from RDX: bit 0 is the APIC ID in RDX.
        let offset = PvIpi {
            low: 1,
            high: 0,
            min: u64::from(ids[1]),
            icr: fixed,
        };
        let (returned, got) = pv_deliver(instruction, offset, [0, 1]);
        report!(
            returned == 1 && got == [0, 1],
            "bit 0 with RDX = {} (the lowest ID) reaches CPU 1 only and returns 1 (got {returned:#x}, received {got:?})",
            ids[1]
        );
        // RCX's bits continue RBX's: bit n of RCX is ID RDX + 64 + n, here none exists.
        let high = PvIpi {
            low: 0,
            high: bit(0) | bit(1),
            min: 0,
            icr: fixed,
        };
        let (returned, got) = pv_deliver(instruction, high, [0, 0]);
        report!(
            returned == 0 && got == [0, 0],
            "the same bits in RCX name IDs 64 and up, where no APIC is: returns 0, no IPI (got {returned:#x}, received {got:?})"
        );
        let absent = !(bit(0) | bit(1));
        let nobody = PvIpi {
            low: absent,
            high: 0,
            min: 0,
            icr: fixed,
        };
        let (returned, got) = pv_deliver(instruction, nobody, [0, 0]);
        report!(
            returned == 0 && got == [0, 0],
            "a bitmap of every other ID below 64 (no APIC there) returns 0, no IPI (got {returned:#x}, received {got:?})"
        );
        for (what, extra) in [
            ("a logical destination", u64::from(apic::DESTINATION_LOGICAL)),
            (
                "the all-including-self shorthand",
                u64::from(apic::TO_ALL_INCLUDING_SELF),
            ),
        ] {
            let invalid = PvIpi {
                low: bit(0) | bit(1),
                high: 0,
                min: 0,
                icr: fixed | extra,
            };
            let (returned, got) = pv_deliver(instruction, invalid, [0, 0]);
            report!(
                returned == kvm::failure(kvm::EINVAL) && got == [0, 0],
                "an ICR value with {what} returns -KVM_EINVAL, no IPI (got {returned:#x}, received {got:?})"
            );
        }
    });
}
