//! msr intercept check: kvm-unit-tests' msr intercept test. The guest reads and writes every
//! MSR of the permission map's three ranges, and one on either side of each, with the map all
//! clear and then all set.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use vmunit::arch::msr::{IA32_TSC, owned_bits, try_rdmsr, try_wrmsr, try_wrmsr_unrestricted};
use vmunit::arch::svm::{ExitCode, Intercept, MsrPermissionMap, Svm, vmmcall};
use vmunit::memory::TestPage;
use vmunit::report;

/// What the guest of `msr intercept check` asks of the host with VMMCALL, in SCRATCH's upper
/// half (the MSR in the lower): the steps of kvm-unit-tests' `msr_intercept_finished`.
const MSR_SET_READ: u64 = 0;
const MSR_SET_WRITE: u64 = 1;
const MSR_CLEAR_READ: u64 = 2;
const MSR_CLEAR_WRITE: u64 = 4;
const MSR_RESTORE_WRITE: u64 = 8;
/// The guest's requests to fill the map with ones for the second pass, and to finish.
const MSR_SECOND_PASS: u64 = -2i64 as u64;
const MSR_DONE: u64 = -3i64 as u64;

/// The MSRs the loop visits: each range of the permission map and one MSR on either side.
fn msrs_to_check() -> impl Iterator<Item = u32> {
    (0..=0x2000)
        .chain(0xbfff_ffff..=0xc000_2000)
        .chain(0xc000_ffff..=0xc001_2000)
}

/// How often one of the guest's MSR checks went wrong, and the first MSR it went wrong for.
#[derive(Default)]
struct Tally {
    count: AtomicU32,
    first: AtomicU32,
}

impl Tally {
    fn wrong(&self, msr: u32) {
        if self.count.fetch_add(1, SeqCst) == 0 {
            self.first.store(msr, SeqCst);
        }
    }
}

/// The guest's MSR checks, in the order `msr_intercept_check` reports them.
#[derive(Default)]
struct MsrFailures {
    read_not_intercepted: Tally,
    write_not_intercepted: Tally,
    read_intercepted: Tally,
    write_intercepted: Tally,
    value_differs: Tally,
}

/// WRMSR in the guest where its intercept should catch it: MSRs whose bits the runtime owns
/// get their current value (`owned`), the others `value`.
#[allow(unsafe_code)]
fn guest_intercepted_wrmsr(msr: u32, value: u64, owned: &[(u32, u64)]) -> bool {
    match owned.iter().find(|(index, _)| *index == msr) {
        // SAFETY: the value is the MSR's current one, so the write changes nothing even where it
        // is not intercepted (a host defect the test then reports).
        Some(&(_, current)) => unsafe { try_wrmsr_unrestricted(msr, current).is_ok() },
        None => try_wrmsr(msr, value).is_ok(),
    }
}

/// WRMSR in the guest of the value it just read, where the intercept should let it through.
/// An MSR whose bits the runtime owns is written only when the value is its current one
/// (`owned`: a RDMSR to check would exit where read bits are set).
#[allow(unsafe_code)]
fn guest_passthrough_wrmsr(msr: u32, value: u64, owned: &[(u32, u64)]) {
    match owned.iter().find(|(index, _)| *index == msr) {
        Some(&(_, current)) if current == value => {
            // SAFETY: the value is the MSR's current one: the write changes nothing.
            let _ = unsafe { try_wrmsr_unrestricted(msr, value) };
        }
        Some(_) => {}
        None => {
            let _ = try_wrmsr(msr, value);
        }
    }
}

/// One pass of kvm-unit-tests' `__test_msr_intercept` over every MSR.
fn msr_intercept_pass(scratch: &AtomicU64, failures: &MsrFailures, owned: &[(u32, u64)]) {
    let mut arbitrary: u64 = 0xef80_5679_1234_abcd;
    for msr in msrs_to_check() {
        if msr == MSR_SEV_STATUS {
            continue;
        }
        scratch.store(u64::from(msr), SeqCst);
        vmmcall();
        scratch.store(u64::MAX, SeqCst);
        if try_rdmsr(msr).is_err() || scratch.load(SeqCst) != u64::from(msr) {
            failures.read_not_intercepted.wrong(msr);
        }
        scratch.store(MSR_SET_WRITE << 32 | u64::from(msr), SeqCst);
        vmmcall();
        arbitrary = arbitrary.wrapping_add(arbitrary << 1);
        let value = owned
            .iter()
            .find(|(index, _)| *index == msr)
            .map_or(arbitrary, |&(_, current)| current);
        scratch.store(u64::MAX, SeqCst);
        if !guest_intercepted_wrmsr(msr, value, owned) || scratch.load(SeqCst) != value {
            failures.write_not_intercepted.wrong(msr);
        }
        scratch.store(MSR_CLEAR_READ << 32 | u64::from(msr), SeqCst);
        vmmcall();
        if MsrPermissionMap::read_bit(msr).is_none() {
            continue;
        }
        let expected = scratch.load(SeqCst);
        scratch.store(u64::MAX, SeqCst);
        let value = try_rdmsr(msr).unwrap_or(0);
        if scratch.load(SeqCst) != u64::MAX {
            failures.read_intercepted.wrong(msr);
        }
        if value != expected && msr != IA32_TSC {
            failures.value_differs.wrong(msr);
        }
        scratch.store(MSR_CLEAR_WRITE << 32 | u64::from(msr), SeqCst);
        vmmcall();
        scratch.store(u64::MAX, SeqCst);
        guest_passthrough_wrmsr(msr, value, owned);
        if scratch.load(SeqCst) != u64::MAX {
            failures.write_intercepted.wrong(msr);
        }
        scratch.store(MSR_RESTORE_WRITE << 32 | u64::from(msr), SeqCst);
        vmmcall();
    }
}

/// SEV_STATUS cannot be intercepted (AMD APM Vol. 2, 15.34.10).
const MSR_SEV_STATUS: u32 = 0xc001_0131;

/// msr intercept check: with the MSR permission map all clear, then all set, each RDMSR and
/// WRMSR exits exactly when its own bit is set, and an MSR outside the map's ranges always
/// exits; without an exit the guest reads what the host reads.
pub(crate) fn msr_intercept_check(svm: &mut Svm) {
    let map = svm.msr_permission_map();
    map.fill(0);
    svm.set_intercept(Intercept::MsrProt);
    // Every MSR the runtime owns bits of (`owned_bits`) is written only with its current value;
    // one that does not exist here (kvmclock's and Hyper-V's without those interfaces) with the
    // address of a page of the test's own, enable bits clear, should a broken hypervisor take
    // the write.
    let sink = TestPage::new();
    let owned: Vec<(u32, u64)> = msrs_to_check()
        .filter(|msr| owned_bits(*msr) != 0)
        .map(|msr| (msr, try_rdmsr(msr).unwrap_or(sink.frame())))
        .collect();
    let scratch = AtomicU64::new(0);
    let failures = MsrFailures::default();
    let guest = || {
        msr_intercept_pass(&scratch, &failures, &owned);
        scratch.store(MSR_SECOND_PASS, SeqCst);
        vmmcall();
        msr_intercept_pass(&scratch, &failures, &owned);
        scratch.store(MSR_DONE, SeqCst);
    };
    let mut all_set = false;
    let mut uncovered = Vec::new();
    let mut unexpected_exit = None;
    let restore = |bit: usize, all_set: bool| map.set_bit(bit, all_set);
    let last = svm.run(&guest, |exit| {
        let code = exit.code();
        if code == ExitCode::Vmmcall {
            exit.skip_instruction();
            let request = scratch.load(SeqCst);
            match request {
                MSR_DONE => return true,
                MSR_SECOND_PASS => {
                    all_set = true;
                    map.fill(0xff);
                    return false;
                }
                _ => {}
            }
            let msr = request as u32;
            let Some(bit) = MsrPermissionMap::read_bit(msr) else {
                if request >> 32 == MSR_CLEAR_READ && !uncovered.contains(&msr) {
                    uncovered.push(msr);
                }
                return false;
            };
            match request >> 32 {
                MSR_SET_READ => map.set_bit(bit, true),
                MSR_SET_WRITE => {
                    restore(bit, all_set);
                    map.set_bit(bit + 1, true);
                }
                MSR_CLEAR_READ => {
                    restore(bit + 1, all_set);
                    map.set_bit(bit, false);
                    scratch.store(try_rdmsr(msr).unwrap_or(0), SeqCst);
                }
                MSR_CLEAR_WRITE => {
                    restore(bit, all_set);
                    map.set_bit(bit + 1, false);
                }
                MSR_RESTORE_WRITE => restore(bit + 1, all_set),
                _ => return true,
            }
            return false;
        }
        if code != ExitCode::Msr {
            unexpected_exit = Some(code);
            return true;
        }
        exit.skip_instruction();
        let value = if exit.vmcb().control.exit_info_1 != 0 {
            exit.registers().rdx << 32 | (exit.vmcb().save.rax & 0xffff_ffff)
        } else {
            exit.registers().rcx
        };
        scratch.store(value, SeqCst);
        false
    });
    map.fill(0);
    report!(
        last == ExitCode::Vmmcall && scratch.load(SeqCst) == MSR_DONE && unexpected_exit.is_none(),
        "both passes complete, every exit MSR or VMMCALL (last exit {last}, unexpected {unexpected_exit:?})"
    );
    for (tally, what) in [
        (
            &failures.read_not_intercepted,
            "RDMSR with its read bit set exits with MSR and RCX",
        ),
        (
            &failures.write_not_intercepted,
            "WRMSR with its write bit set exits with MSR and EDX:EAX",
        ),
        (
            &failures.read_intercepted,
            "RDMSR with its read bit clear does not exit",
        ),
        (
            &failures.write_intercepted,
            "WRMSR with its write bit clear does not exit",
        ),
        (
            &failures.value_differs,
            "RDMSR without an exit reads what the host reads",
        ),
    ] {
        let (count, first) = (tally.count.load(SeqCst), tally.first.load(SeqCst));
        report!(
            count == 0,
            "{what} (wrong for {count} MSRs, the first {first:#x})"
        );
    }
    let expected_uncovered = [0x2000, 0xbfff_ffff, 0xc000_2000, 0xc000_ffff, 0xc001_2000];
    report!(
        uncovered == expected_uncovered,
        "only the MSRs just outside the map's ranges are not covered by it (got {uncovered:x?})"
    );
}
