//! The debug registers across a live migration (entry `debug-migration`, group `migration`;
//! vmunit's own: kvm-unit-tests has arm's debug-*-migration, no x86 one): DR0-DR3, DR6 and DR7
//! keep what the guest wrote, and the breakpoints they arm before the migration fire after it,
//! an instruction breakpoint (DR0), a data write breakpoint (DR1) and a data read/write
//! breakpoint (DR3), with DR2 holding an address it does not enable.

use vmunit::arch::debug::{
    breakpoint_targets, call_breakpoint_target, dr6, dr7, load_watched, record_debug_exceptions,
    store_watched, try_read_debug_register, try_write_debug_register, watched_address,
};
use vmunit::environment::instruction_emulating_kvm;
use vmunit::{Migration, known_failure, prefix, report};

use crate::{NO_DATA_BREAKPOINTS, check_debug_exceptions, clear_dr6, disable_breakpoints};

/// The byte of the watched buffer DR1 watches (4 bytes, writes).
const WRITE_WATCH: usize = 0;
/// The byte of the watched buffer DR3 watches (8 bytes, reads and writes).
const READ_WRITE_WATCH: usize = 16;
/// What DR2 holds: an address with no enable bit in DR7, so it never fires.
const IDLE_ADDRESS: u64 = 0x0000_7fff_1234_5670;

/// Programs DR0-DR7, migrates, and checks the registers and their breakpoints on the
/// destination.
pub fn run() {
    let _prefix = prefix("migration");
    let [first, _] = breakpoint_targets();
    let addresses = [
        first,
        watched_address(WRITE_WATCH),
        IDLE_ADDRESS,
        watched_address(READ_WRITE_WATCH),
    ];
    let control = dr7::FIXED_1
        | dr7::LOCAL_EXACT
        | dr7::GLOBAL_EXACT
        | dr7::local(0)
        | dr7::condition(0, dr7::EXECUTE, 1)
        | dr7::global(1)
        | dr7::condition(1, dr7::WRITE, 4)
        | dr7::condition(2, dr7::WRITE, 2)
        | dr7::local(3)
        | dr7::condition(3, dr7::READ_WRITE, 8);
    // Status bits a debugger left behind: B2 and BS.
    let status = dr6::ACTIVE_LOW | dr6::B2 | dr6::BS;
    let mut written = [Ok(()); 8];
    for (index, address) in (0u8..).zip(addresses) {
        written[usize::from(index)] = try_write_debug_register(index, address);
    }
    written[6] = try_write_debug_register(6, status);
    written[7] = try_write_debug_register(7, control);
    let before = [0u8, 1, 2, 3, 6, 7].map(|index| (index, try_read_debug_register(index)));
    let wanted = [
        addresses[0],
        addresses[1],
        addresses[2],
        addresses[3],
        status,
        control,
    ];
    for ((index, read), value) in before.iter().zip(wanted) {
        report!(
            written[usize::from(*index)].is_ok() && *read == Ok(value),
            "before the migration DR{index} holds {value:#x} (wrote {:x?}, read {read:x?})",
            written[usize::from(*index)]
        );
    }

    if vmunit::migrate() != Migration::Completed {
        disable_breakpoints();
        clear_dr6();
        return;
    }

    for (index, value) in before {
        let Ok(value) = value else { continue };
        let now = try_read_debug_register(index);
        report!(
            now == Ok(value),
            "DR{index} keeps {value:#x} across the migration (got {now:x?})"
        );
    }

    // The breakpoints armed on the source fire on the destination, one at a time from a
    // clear DR6.
    clear_dr6();
    let (_, seen) = record_debug_exceptions(call_breakpoint_target);
    check_debug_exceptions(
        "the instruction breakpoint in DR0 (L0)",
        &seen,
        &[(first, dr6::ACTIVE_LOW | dr6::B0, "before the instruction, DR6.B0")],
    );
    clear_dr6();
    let (store_after, store_seen) = record_debug_exceptions(|| store_watched(WRITE_WATCH, 4, 0x1234_5678));
    clear_dr6();
    let (load, load_seen) = record_debug_exceptions(|| load_watched(READ_WRITE_WATCH, 8));
    clear_dr6();
    let (store_after, load_after) = (
        store_after.map_or(0, |after| after),
        load.map_or(0, |(_, after)| after),
    );
    known_failure(instruction_emulating_kvm(), NO_DATA_BREAKPOINTS, || {
        check_debug_exceptions(
            "the data write breakpoint in DR1 (G1, 4 bytes), a 4-byte store",
            &store_seen,
            &[(store_after, dr6::ACTIVE_LOW | dr6::B1, "after the store, DR6.B1")],
        );
        check_debug_exceptions(
            "the data read/write breakpoint in DR3 (L3, 8 bytes), an 8-byte load",
            &load_seen,
            &[(load_after, dr6::ACTIVE_LOW | dr6::B3, "after the load, DR6.B3")],
        );
    });
    disable_breakpoints();
    for index in 0..4 {
        let _ = try_write_debug_register(index, 0);
    }
    clear_dr6();
}
