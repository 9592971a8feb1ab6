//! Live migration in the middle of a test, as kvm-unit-tests' lib/migrate.c: the guest prints
//! a request (`MIGRATE: NOW`, the protocol's [`MigrateLine`]) and waits for the runner to send a
//! byte on its serial input, which it does once the VM runs on the destination QEMU.
//!
//! Only runs of the `migration` group (or with `migrate = true`) migrate: the runner then sets `VMUNIT_MIGRATION=yes` in
//! the guest environment. Elsewhere a request reports `SKIP` with the reason and returns at once,
//! so that a test never waits for a migration nobody will do.
//!
//! Under the runner's `--migrate` any test migrates once, without edits: the runner sets
//! `VMUNIT_MIGRATE_AFTER_REPORT=N` and the report path ([`after_report`]) asks for one migration
//! right after the test's Nth report line, a point between two checks.

use core::sync::atomic::{AtomicBool, Ordering};

use vmunit_protocol::MigrateLine;

/// The guest environment variable that says the runner migrates this run on request.
pub const ENVIRONMENT_KEY: &str = "VMUNIT_MIGRATION";

/// How a migration request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migration {
    /// The runner migrated the VM: the code after the request runs on the destination.
    Completed,
    /// This is no migration run: nothing happened (a `SKIP` line says so).
    NotMigrationRun,
    /// [`migrate_once`] already migrated: nothing happened.
    AlreadyMigrated,
}

static MIGRATED_ONCE: AtomicBool = AtomicBool::new(false);

/// The guest environment variable that asks for one migration after the Nth report line (the
/// runner's `--migrate`).
pub const AFTER_REPORT_KEY: &str = vmunit_protocol::MIGRATE_AFTER_REPORT_KEY;

/// Set once the migration [`AFTER_REPORT_KEY`] asks for was requested.
static INJECTED: AtomicBool = AtomicBool::new(false);

/// The report line after which the runner migrates this run once (`--migrate`), if it does.
fn injected_after() -> Option<u32> {
    static AFTER: spin::Once<Option<u32>> = spin::Once::new();
    *AFTER.call_once(|| {
        crate::env(AFTER_REPORT_KEY)
            .and_then(|value| value.parse::<u32>().ok())
            .filter(|after| *after >= 1)
    })
}

/// Called by the report path after each report line, `reports` the count so far: asks for the
/// one migration of a `--migrate` run after the line it names, then says so in an `INFO:` line.
/// Does nothing elsewhere, and nothing after that migration.
pub(crate) fn after_report(reports: u32) {
    let Some(after) = injected_after() else {
        return;
    };
    if reports < after || INJECTED.swap(true, Ordering::Relaxed) {
        return;
    }
    request(MigrateLine::Now);
    crate::report_info!("migrated after report line {after} ({AFTER_REPORT_KEY})");
}

/// Whether the runner migrates this run on request (the run is in group `migration`, or says
/// `migrate = true`).
pub fn is_migration_run() -> bool {
    crate::env(ENVIRONMENT_KEY) == Some("yes")
}

/// Reports the `SKIP` of a request outside a migration run.
fn not_a_migration_run() -> Migration {
    crate::report_skip!(
        "migration requested, but this is not a migration run (the runner migrates on request \
         only runs of group `migration` or with `migrate = true`, whose environment has \
         {ENVIRONMENT_KEY}=yes)"
    );
    Migration::NotMigrationRun
}

/// How long `END` waits for the runner's byte before it says `END` again.
const END_REPEAT_MILLISECONDS: u64 = 5000;

/// Prints `request` and, when it waits, waits for the runner's byte.
fn request(request: MigrateLine) {
    if request == MigrateLine::End {
        // A line printed while the VM switches to the destination can reach the runner cut in
        // two (its start from the source, its rest from the destination): `END` is said again
        // until the runner answers. The runner takes only the first `END` after `BEGIN`.
        let answered = core::cell::Cell::new(false);
        while !answered.get() {
            crate::println!("{request}");
            crate::time::spin_until(END_REPEAT_MILLISECONDS, || {
                if crate::console::read_byte().is_some() {
                    answered.set(true);
                }
                answered.get()
            });
        }
        return;
    }
    crate::println!("{request}");
    if request.waits() {
        // Any byte: the runner writes one once the VM runs on the destination. The runner's
        // timeout ends a run whose migration never completes.
        while crate::console::read_byte().is_none() {
            core::hint::spin_loop();
        }
    }
}

/// Asks the runner to migrate the VM now and waits until it ran on the destination
/// (kvm-unit-tests' `migrate()`). Outside a migration run it reports `SKIP` and returns.
pub fn migrate() -> Migration {
    if !is_migration_run() {
        return not_a_migration_run();
    }
    request(MigrateLine::Now);
    crate::report_info!("Migration complete");
    Migration::Completed
}

/// Asks the runner to migrate now and runs `hold` while it does: `hold` must return only once
/// the runner's byte is waiting on the serial input, and must leave it there (assembly that
/// holds register values across the migration polls the UART's receive flag, as
/// `arch::console::SerialInputWait` describes on aarch64). The byte is then taken and an
/// `INFO:` line says the migration completed. For state no compiled code may touch while the
/// VM moves (FP/SIMD, SVE and SME registers held by a round trip). Outside a migration run it
/// reports `SKIP` and returns `Err(NotMigrationRun)` without running `hold`.
pub fn migrate_holding<T>(hold: impl FnOnce() -> T) -> Result<T, Migration> {
    if !is_migration_run() {
        return Err(not_a_migration_run());
    }
    crate::println!("{}", MigrateLine::Now);
    let value = hold();
    while crate::console::read_byte().is_none() {
        core::hint::spin_loop();
    }
    crate::report_info!("Migration complete");
    Ok(value)
}

/// Like [`migrate`] without the `INFO:` line, for tests that migrate many times
/// (kvm-unit-tests' `migrate_quiet()`).
pub fn migrate_quiet() -> Migration {
    if !is_migration_run() {
        return not_a_migration_run();
    }
    request(MigrateLine::Now);
    Migration::Completed
}

/// [`migrate`] the first time it is called, nothing afterwards (kvm-unit-tests'
/// `migrate_once()`): for tests that reach the migration point from several paths.
pub fn migrate_once() -> Migration {
    if MIGRATED_ONCE.swap(true, Ordering::Relaxed) {
        return Migration::AlreadyMigrated;
    }
    migrate()
}

/// Tells the runner that this run will not migrate (kvm-unit-tests' `migrate_skip()`), for a
/// migration test that skips what it would have migrated for. Does nothing outside a
/// migration run or after [`migrate_once`] migrated.
pub fn migrate_skip() {
    if is_migration_run() && !MIGRATED_ONCE.swap(true, Ordering::Relaxed) {
        request(MigrateLine::Skip);
    }
}

/// Starts continuous migration (kvm-unit-tests' `migrate_begin_continuous()`): the runner
/// migrates the VM again and again while it runs, until [`end_continuous_migration`]. Returns
/// at once.
pub fn begin_continuous_migration() -> Migration {
    if !is_migration_run() {
        return not_a_migration_run();
    }
    request(MigrateLine::Begin);
    Migration::Completed
}

/// Ends continuous migration: waits until the migration in progress completed (at least one
/// completed since [`begin_continuous_migration`]).
pub fn end_continuous_migration() -> Migration {
    if !is_migration_run() {
        return Migration::NotMigrationRun;
    }
    request(MigrateLine::End);
    crate::report_info!("Continuous migration complete");
    Migration::Completed
}
