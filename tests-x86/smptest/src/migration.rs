//! smptest's test_args `migration` (entry `smp-migration`, group `migration`): two CPUs across
//! a live migration. CPU 1 counts in a busy loop, interrupts enabled, while the VM moves: its
//! counter keeps advancing on the destination (no CPU lost), a fixed IPI sent to it after the
//! migration is delivered there once, and every CPU runs work again. Then an NMI is left
//! pending across a migration: CPU 0's NMI handler sends itself a second NMI, which NMI
//! blocking latches (SDM Vol. 3, 6.7.1: NMIs are blocked until the handler's IRET), and asks
//! for the migration from inside the handler; on the destination the latched NMI arrives
//! exactly once, after the handler's IRET.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use vmunit::arch::apic;
use vmunit::arch::exceptions::with_nmi_on_current_stack;
use vmunit::arch::interrupts;
use vmunit::arch::set_interrupt_handler;
use vmunit::arch::smp::{MAX_CPUS, apic_id_of, cpu_count, cpu_index, on_cpu_async, on_cpus};
use vmunit::time::{delay, spin_until};
use vmunit::{Migration, Vector, prefix, report, report_skip};

/// The fixed IPI's vector.
const IPI_VECTOR: u8 = 0x61;
/// CPU 1's busy-loop count.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Tells CPU 1's loop to stop.
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by CPU 1 once its loop stopped.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The fixed IPIs each CPU took.
static IPIS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The checks of test_args `migration`.
pub fn checks() {
    let _prefix = prefix("migration");
    if cpu_count() < 2 {
        report_skip!(
            "the migration checks need 2 CPUs (got {}; run with smp >= 2)",
            cpu_count()
        );
        vmunit::migrate_skip();
        return;
    }
    if busy_cpu_across_migration() {
        pending_nmi_across_migration();
    }
}

fn count_ipi(_vector: u8) {
    if let Some(count) = IPIS.get(cpu_index()) {
        count.fetch_add(1, Ordering::SeqCst);
    }
}

/// CPU 1 counting across a migration, then an IPI to it; false outside a migration run.
fn busy_cpu_across_migration() -> bool {
    let _prefix = prefix("busy CPU 1");
    set_interrupt_handler(IPI_VECTOR, Some(count_ipi));
    on_cpu_async(1, || {
        interrupts::enable();
        while !STOP.load(Ordering::Acquire) {
            COUNTER.fetch_add(1, Ordering::Relaxed);
            core::hint::spin_loop();
        }
        interrupts::disable();
        STOPPED.store(true, Ordering::Release);
    });
    let started = spin_until(1000, || COUNTER.load(Ordering::Relaxed) > 0);
    let before_start = COUNTER.load(Ordering::Relaxed);
    delay(20);
    let before = COUNTER.load(Ordering::Relaxed);
    report!(
        started && before > before_start,
        "CPU 1's busy loop counts before the migration ({before_start}, then {before} 20 ms later)"
    );
    let migration = vmunit::migrate();
    let after_start = COUNTER.load(Ordering::Relaxed);
    delay(20);
    let after = COUNTER.load(Ordering::Relaxed);
    if migration == Migration::Completed {
        report!(
            after_start >= before && after > after_start,
            "CPU 1's counter goes on from where it was and keeps advancing after the migration \
             ({before} before; {after_start}, then {after} 20 ms later)"
        );
        let sent = apic::send_ipi(apic_id_of(1), IPI_VECTOR);
        spin_until(1000, || IPIS[1].load(Ordering::SeqCst) > 0);
        // Time for a second (wrong) delivery to show.
        delay(20);
        let taken = IPIS[1].load(Ordering::SeqCst);
        let elsewhere = IPIS[0].load(Ordering::SeqCst);
        report!(
            sent && taken == 1 && elsewhere == 0,
            "a fixed IPI sent to CPU 1 after the migration is delivered there once (sent {sent}, \
             CPU 1 took {taken}, CPU 0 {elsewhere})"
        );
    }
    STOP.store(true, Ordering::Release);
    let stopped = spin_until(1000, || STOPPED.load(Ordering::Acquire));
    report!(
        stopped,
        "CPU 1 leaves its busy loop when told (stopped {stopped})"
    );
    set_interrupt_handler(IPI_VECTOR, None);
    if migration != Migration::Completed {
        return false;
    }
    let ran = AtomicU64::new(0);
    on_cpus(|| {
        ran.fetch_or(1 << cpu_index(), Ordering::SeqCst);
    });
    let all = (1u64 << cpu_count()) - 1;
    report!(
        ran.load(Ordering::SeqCst) == all,
        "every CPU runs work after the migration (expected {all:#b}, got {:#b})",
        ran.load(Ordering::SeqCst)
    );
    true
}

/// NMIs CPU 0's handler took.
static NMIS: AtomicU32 = AtomicU32::new(0);
/// The count the first handler run saw after its self-NMI had time to arrive (1: latched).
static NMIS_INSIDE: AtomicU32 = AtomicU32::new(0);
/// The count the first handler run saw after the migration, still inside it (1: NMIs still
/// blocked on the destination).
static NMIS_AFTER_MIGRATION: AtomicU32 = AtomicU32::new(0);
/// Whether the migration from inside the handler completed.
static MIGRATED_IN_HANDLER: AtomicBool = AtomicBool::new(false);

fn nmi_handler(_vector: u8) {
    if NMIS.fetch_add(1, Ordering::SeqCst) != 0 {
        return;
    }
    apic::send_nmi(apic::id());
    delay(20);
    NMIS_INSIDE.store(NMIS.load(Ordering::SeqCst), Ordering::SeqCst);
    let migration = vmunit::migrate();
    // Time for the latched NMI to show if the destination lost NMI blocking.
    delay(20);
    NMIS_AFTER_MIGRATION.store(NMIS.load(Ordering::SeqCst), Ordering::SeqCst);
    MIGRATED_IN_HANDLER.store(migration == Migration::Completed, Ordering::SeqCst);
}

/// A pending NMI, latched behind NMI blocking, across a migration taken in the NMI handler.
fn pending_nmi_across_migration() {
    let _prefix = prefix("pending NMI");
    set_interrupt_handler(Vector::NMI.0, Some(nmi_handler));
    // On the current stack, as kvm-unit-tests' eventinj: the handler runs long (a migration).
    with_nmi_on_current_stack(|| {
        apic::send_nmi(apic::id());
        spin_until(1000, || NMIS.load(Ordering::SeqCst) >= 2);
        // Time for a third (wrong) delivery to show.
        delay(50);
    });
    set_interrupt_handler(Vector::NMI.0, None);
    let migrated = MIGRATED_IN_HANDLER.load(Ordering::SeqCst);
    let inside = NMIS_INSIDE.load(Ordering::SeqCst);
    let after_migration = NMIS_AFTER_MIGRATION.load(Ordering::SeqCst);
    let total = NMIS.load(Ordering::SeqCst);
    report!(
        migrated,
        "the migration taken inside the NMI handler completed (got {migrated})"
    );
    report!(
        inside == 1,
        "the NMI sent from the NMI handler is held while the handler runs (handler runs seen inside it: expected 1, got {inside})"
    );
    report!(
        after_migration == 1,
        "NMIs stay blocked inside the handler on the destination: the latched NMI does not nest (handler runs seen after the migration: expected 1, got {after_migration})"
    );
    report!(
        total == 2,
        "the NMI latched across the migration is delivered exactly once after the handler's IRET (expected 2 NMIs in all, got {total})"
    );
}
