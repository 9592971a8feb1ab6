//! pks: protection keys for supervisor pages, like kvm-unit-tests' pks test (SDM Vol. 3, 4.6.2
//! and 4.7). With CR4.PKS set, IA32_PKRS (MSR 0x6E1) holds two bits per key: AD makes data
//! accesses to a supervisor page with that key (PTE bits 62:59) fault, WD makes writes fault
//! while CR0.WP is set. User pages and instruction fetches are never checked against PKRS;
//! PKRU does not govern supervisor pages. The #PF has the PK bit (5) and CR2 holds the
//! address. Bits 63:32 of IA32_PKRS are reserved (#GP). A new IA32_PKRS value counts at the
//! next access, without a TLB flush.
//!
//! The test pages get key 2, as kvm-unit-tests' do; the runtime's own pages keep key 0, which
//! `protection_keys` never lets a test restrict.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, read_cr4, try_set_write_protect, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::{read, try_call_return, write_test_page};
use vmunit::arch::page_fault::{self, PRESENT, PROTECTION_KEY, WRITE};
use vmunit::arch::protection_keys::{
    KeyRights, KeySweep, ProtectionKey, RightsRegister, key, page_with_key, set_key, sweep_keys,
    try_read_pkrs, try_write_pkrs, try_wrpkru,
};
use vmunit::arch::run_in_user_mode;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Exception, Vector, prefix, report, report_fail, report_info, report_skip};

vmunit::main!(main);

/// The key kvm-unit-tests gives its test pages.
const KEY: ProtectionKey = ProtectionKey::new(2);
/// IA32_PKRS with AD set for [`KEY`] (kvm-unit-tests' `pkrs_ad`, 0x10).
const ACCESS_DISABLED: RightsRegister = RightsRegister::ALLOW_ALL.with(KEY, KeyRights::ACCESS_DISABLE);
/// IA32_PKRS with WD set for [`KEY`] (kvm-unit-tests' `pkrs_wd`, 0x20).
const WRITE_DISABLED: RightsRegister = RightsRegister::ALLOW_ALL.with(KEY, KeyRights::WRITE_DISABLE);
/// Both bits for [`KEY`].
const NO_RIGHTS: RightsRegister = RightsRegister::ALLOW_ALL.with(
    KEY,
    KeyRights {
        access_disable: true,
        write_disable: true,
    },
);

/// Where the checks read and write in a page.
const OFFSET: u64 = 0x40;

fn main(_args: &[&str]) {
    let supported = Feature::Pks.supported();
    report_info!(
        "PKS advertised: {supported}, PKU advertised: {}, CR4 {:#x}",
        Feature::Pku.supported(),
        read_cr4()
    );
    if !supported {
        pks_missing();
        return;
    }
    if !enable() {
        return;
    }
    register();
    kvm_unit_tests_checks();
    supervisor_accesses();
    user_pages();
    pkru_apart();
    paging_permissions();
    every_key();
    rights_without_flush();
    disabled_again();
    set_pkrs(RightsRegister::ALLOW_ALL);
    set_write_protect(true);
}

fn is_gp0<T>(result: &Result<T, Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0)
}

fn is_gp<T>(result: &Result<T, Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP)
}

/// Sets or clears CR0.WP.
fn set_write_protect(on: bool) {
    if let Err(exception) = try_set_write_protect(on) {
        report_fail!("setting CR0.WP to {on} raised {exception}");
    }
}

/// WRMSR of `value` to IA32_PKRS; a fault FAILs.
fn set_pkrs(value: RightsRegister) {
    if let Err(exception) = try_write_pkrs(u64::from(value.bits())) {
        report_fail!("WRMSR IA32_PKRS {value} raised {exception}");
    }
}

/// A supervisor page mapped with `protection` and key [`KEY`].
fn supervisor_page(protection: Protection) -> TestPage {
    page_with_key(protection, KEY)
}

/// A user page with key [`KEY`].
fn user_page() -> TestPage {
    page_with_key(Protection::USER_READ_WRITE, KEY)
}

/// Without PKS, CR4.PKS is reserved and IA32_PKRS does not exist.
fn pks_missing() {
    let _prefix = prefix("PKS not advertised");
    report_skip!("PKS not advertised (CPUID.7.0:ECX[31] clear): no protection-key checks can run");
    let read = try_read_pkrs();
    report!(is_gp(&read), "RDMSR IA32_PKRS raises #GP (got {read:x?})");
    let write = try_write_pkrs(0);
    report!(is_gp(&write), "WRMSR IA32_PKRS raises #GP (got {write:x?})");
    if is_tcg() {
        report_skip!(
            "setting CR4.PKS: QEMU's TCG hangs on a reserved CR4 bit (an SVM #VMEXIT outside SVM guest mode: helper_write_crN, target/i386/tcg/system/misc_helper.c; reproduce-cr4-reserved-bit-tcg)"
        );
        return;
    }
    let cr4 = read_cr4();
    let result = try_write_cr4(cr4 | Cr4Flags::PROTECTION_KEY_SUPERVISOR.bits());
    let after = read_cr4();
    if result.is_ok() {
        let _ = try_write_cr4(cr4);
    }
    report!(
        is_gp0(&result),
        "setting CR4.PKS raises #GP(0) (got {result:x?}, CR4 then {after:#x})"
    );
}

/// CR4.PKS: clear at boot, IA32_PKRS 0 after reset; setting it works. Returns whether it is
/// set.
fn enable() -> bool {
    let _prefix = prefix("CR4.PKS");
    let cr4 = read_cr4();
    let bit = Cr4Flags::PROTECTION_KEY_SUPERVISOR.bits();
    if cr4 & bit != 0 {
        report_fail!("CR4.PKS is clear at boot (CR4 {cr4:#x})");
    }
    let initial = try_read_pkrs();
    report!(
        initial == Ok(0),
        "IA32_PKRS reads 0 after reset, with CR4.PKS clear (got {initial:x?})"
    );
    let result = try_write_cr4(cr4 | bit);
    let set = result.is_ok() && read_cr4() & bit != 0;
    report!(
        set,
        "setting CR4.PKS works (got {result:x?}, CR4 {:#x})",
        read_cr4()
    );
    set
}

/// IA32_PKRS: round trips, reserved bits 63:32.
fn register() {
    let _prefix = prefix("IA32_PKRS");
    for value in [0x5555_5554, 0xaaaa_aaa8, 0xffff_fffc, 0x0000_0010] {
        let written = try_write_pkrs(value);
        let back = try_read_pkrs();
        report!(
            written.is_ok() && back == Ok(value),
            "WRMSR {value:#010x} then RDMSR reads it back (got {written:x?}, {back:x?})"
        );
    }
    set_pkrs(WRITE_DISABLED);
    for bit in [32, 63] {
        let value = u64::from(ACCESS_DISABLED.bits()) | 1 << bit;
        let result = try_write_pkrs(value);
        report!(
            is_gp0(&result),
            "WRMSR {value:#x} (reserved bit {bit}) raises #GP(0) (got {result:x?})"
        );
    }
    let after = try_read_pkrs();
    report!(
        after == Ok(u64::from(WRITE_DISABLED.bits())),
        "a faulting WRMSR leaves IA32_PKRS as it was ({WRITE_DISABLED}, got {after:x?})"
    );
    set_pkrs(RightsRegister::ALLOW_ALL);
}

/// kvm-unit-tests' seven checks: a CPL-0 write to a supervisor page with key 2 faults with AD
/// (whatever CR0.WP) and with WD while CR0.WP is set; CPL-0 accesses to a user page with key 2
/// never fault (PKRS governs supervisor pages only).
fn kvm_unit_tests_checks() {
    let _prefix = prefix("kvm-unit-tests");
    let supervisor = supervisor_page(Protection::READ_WRITE);
    let user = user_page();
    // The runtime's write of its own tables, not the CPU: a precondition, no report when it holds.
    if key(&supervisor) != Some(KEY) || key(&user) != Some(KEY) {
        report_fail!(
            "the test pages' entries do not hold {KEY} (got {:?}, {:?})",
            key(&supervisor),
            key(&user)
        );
    }
    let target = supervisor.address() + OFFSET;
    for (rights, name) in [(ACCESS_DISABLED, "ad"), (WRITE_DISABLED, "wd")] {
        for wp in [true, false] {
            set_pkrs(RightsRegister::ALLOW_ALL);
            let _ = supervisor.try_write(OFFSET, 20);
            set_write_protect(wp);
            set_pkrs(rights);
            let value = 21 + u64::from(name == "wd") * 2 + u64::from(!wp);
            let result = supervisor.try_write(OFFSET, value);
            let wp_bit = u8::from(wp);
            if name == "wd" && !wp {
                report!(
                    result.is_ok() && supervisor.stored(OFFSET) == value,
                    "write to supervisor page when pkrs is {name} and wp == {wp_bit} (got {result:x?})"
                );
            } else {
                report!(
                    page_fault::raised(&result, target, PROTECTION_KEY | WRITE | PRESENT)
                        && supervisor.stored(OFFSET) == 20,
                    "write to supervisor page when pkrs is {name} and wp == {wp_bit}: #PF with PK, W, P at {target:#x}, nothing written (got {result:x?})"
                );
            }
        }
    }
    for wp in [false, true] {
        set_write_protect(wp);
        set_pkrs(WRITE_DISABLED);
        let value = 25 + u64::from(wp);
        let result = user.try_write(OFFSET, value);
        report!(
            result.is_ok() && user.stored(OFFSET) == value,
            "write to user page when pkrs is wd and wp == {} (got {result:x?})",
            u8::from(wp)
        );
    }
    set_pkrs(ACCESS_DISABLED);
    let result = user.try_read(OFFSET);
    report!(
        result == Ok(26),
        "read from user page when pkrs is ad (got {result:x?})"
    );
    set_pkrs(RightsRegister::ALLOW_ALL);
}

/// CPL-0 accesses to a supervisor page beyond kvm-unit-tests': AD blocks reads, WD does not,
/// other keys are untouched, fetches are free.
fn supervisor_accesses() {
    let _prefix = prefix("supervisor page");
    let page = supervisor_page(Protection::READ_WRITE);
    let target = page.address() + OFFSET;
    let _ = page.try_write(OFFSET, 0x31);
    set_pkrs(ACCESS_DISABLED);
    let result = page.try_read(OFFSET);
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | PRESENT),
        "AD: a read faults with PK, P at {target:#x} (got {result:x?})"
    );
    set_pkrs(WRITE_DISABLED);
    let result = page.try_read(OFFSET);
    report!(result == Ok(0x31), "WD: a read works (got {result:x?})");
    let other = supervisor_page(Protection::READ_WRITE);
    set_key(&other, ProtectionKey::new(3));
    set_pkrs(NO_RIGHTS);
    let result = other
        .try_write(OFFSET, 0x33)
        .and_then(|()| other.try_read(OFFSET));
    report!(
        result == Ok(0x33),
        "AD and WD for key 2 leave a supervisor page with key 3 alone (got {result:x?})"
    );
    let code = supervisor_page(Protection::READ_EXECUTE);
    let result = try_call_return(&code, OFFSET);
    report!(
        result.is_ok(),
        "AD and WD: a fetch from a supervisor page with key 2 works, fetches are not checked (got {result:x?})"
    );
    set_pkrs(RightsRegister::ALLOW_ALL);
}

/// CPL-3 accesses to a user page with key 2 ignore IA32_PKRS.
fn user_pages() {
    let _prefix = prefix("user page");
    let page = user_page();
    let target = page.address() + OFFSET;
    set_pkrs(NO_RIGHTS);
    let result = run_in_user_mode(|| {
        write_test_page(&page, OFFSET, 0x41);
        read(target)
    });
    report!(
        result == Ok(0x41),
        "AD and WD in IA32_PKRS: a CPL-3 write then read of a user page with key 2 works (got {result:x?})"
    );
    set_pkrs(RightsRegister::ALLOW_ALL);
}

/// PKRU governs user pages, IA32_PKRS supervisor pages, each alone.
fn pkru_apart() {
    let _prefix = prefix("PKRU");
    if !Feature::Pku.supported() {
        report_skip!("PKU not advertised (CPUID.7.0:ECX[3] clear): PKRU cannot be set");
        return;
    }
    let cr4 = read_cr4();
    let enabled = try_write_cr4(cr4 | Cr4Flags::PROTECTION_KEY_USER.bits());
    if let Err(exception) = enabled {
        report_fail!("setting CR4.PKE raised {exception}");
        return;
    }
    let supervisor = supervisor_page(Protection::READ_WRITE);
    let user = user_page();
    set_pkrs(RightsRegister::ALLOW_ALL);
    let pkru = try_wrpkru(NO_RIGHTS);
    let result = supervisor
        .try_write(OFFSET, 0x51)
        .and_then(|()| supervisor.try_read(OFFSET));
    report!(
        pkru.is_ok() && result == Ok(0x51),
        "AD and WD for key 2 in PKRU leave a supervisor page with key 2 alone (got {pkru:x?}, {result:x?})"
    );
    let user_target = user.address() + OFFSET;
    let result = user.try_read(OFFSET);
    report!(
        page_fault::raised(&result, user_target, PROTECTION_KEY | PRESENT),
        "while they fault a CPL-0 read of a user page with key 2 (got {result:x?})"
    );
    let _ = try_wrpkru(RightsRegister::ALLOW_ALL);
    let _ = try_write_cr4(cr4);
}

/// Keys and the page's own permissions together: a CPL-0 write to a read-only supervisor page
/// with CR0.WP set faults without PK when the key allows it, with PK when WD forbids it too;
/// CR0.WP=0 lets it through both.
fn paging_permissions() {
    let _prefix = prefix("read-only page");
    let page = supervisor_page(Protection::READ_ONLY);
    let target = page.address() + OFFSET;
    set_write_protect(true);
    set_pkrs(RightsRegister::ALLOW_ALL);
    let result = page.try_write(OFFSET, 0x61);
    report!(
        page_fault::raised(&result, target, WRITE | PRESENT),
        "IA32_PKRS 0, CR0.WP=1: a write faults with W, P and no PK (got {result:x?})"
    );
    set_pkrs(WRITE_DISABLED);
    let result = page.try_write(OFFSET, 0x62);
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | WRITE | PRESENT),
        "WD, CR0.WP=1: a write faults with PK, W, P (got {result:x?})"
    );
    set_write_protect(false);
    let result = page.try_write(OFFSET, 0x63);
    report!(
        result.is_ok() && page.stored(OFFSET) == 0x63,
        "WD, CR0.WP=0: a write goes through both (got {result:x?})"
    );
    set_write_protect(true);
    set_pkrs(RightsRegister::ALLOW_ALL);
}

/// Each key 1..15 is decoded from PTE bits 62:59: AD for that key alone faults a read, AD for
/// every other key does not.
fn every_key() {
    let _prefix = prefix("every key");
    let page = supervisor_page(Protection::READ_WRITE);
    let KeySweep {
        not_blocked,
        blocked_by_others,
        wrong_entry,
    } = sweep_keys(&page, OFFSET, set_pkrs);
    if !wrong_entry.is_empty() {
        report_fail!("the page's entry does not hold the key set for keys {wrong_entry:?}");
    }
    report!(
        not_blocked.is_empty(),
        "AD for the page's key alone faults a read with PK, P, for keys 1-15 (keys that did not: {not_blocked:?})"
    );
    report!(
        blocked_by_others.is_empty(),
        "AD for every other key 1-15 leaves the read alone (keys blocked: {blocked_by_others:?})"
    );
}

/// WRMSR IA32_PKRS counts at the next access: no INVLPG or CR3 write between a cached
/// translation and the access that the new rights forbid.
fn rights_without_flush() {
    let _prefix = prefix("no TLB flush");
    let page = supervisor_page(Protection::READ_WRITE);
    let target = page.address() + OFFSET;
    set_pkrs(RightsRegister::ALLOW_ALL);
    let warm = page.try_read(OFFSET).and_then(|_| page.try_write(OFFSET, 0x71));
    set_pkrs(ACCESS_DISABLED);
    let denied = page.try_read(OFFSET);
    set_pkrs(RightsRegister::ALLOW_ALL);
    let allowed = page.try_read(OFFSET);
    report!(
        warm.is_ok() && page_fault::raised(&denied, target, PROTECTION_KEY | PRESENT) && allowed == Ok(0x71),
        "a read through a cached translation faults right after IA32_PKRS sets AD and works right after it clears it (got {warm:x?}, {denied:x?}, {allowed:x?})"
    );
    set_pkrs(WRITE_DISABLED);
    let denied = page.try_write(OFFSET, 0x72);
    set_pkrs(RightsRegister::ALLOW_ALL);
    let allowed = page.try_write(OFFSET, 0x73);
    report!(
        page_fault::raised(&denied, target, PROTECTION_KEY | WRITE | PRESENT)
            && allowed.is_ok()
            && page.stored(OFFSET) == 0x73,
        "a write faults right after IA32_PKRS sets WD and works right after it clears it (got {denied:x?}, {allowed:x?})"
    );
}

/// With CR4.PKS clear again, keys do not count, but IA32_PKRS keeps its value for when
/// CR4.PKS is set again (and the page's translation is refreshed).
fn disabled_again() {
    let _prefix = prefix("CR4.PKS cleared");
    let page = supervisor_page(Protection::READ_WRITE);
    let target = page.address() + OFFSET;
    set_pkrs(ACCESS_DISABLED);
    let bit = Cr4Flags::PROTECTION_KEY_SUPERVISOR.bits();
    let cr4 = read_cr4();
    let cleared = try_write_cr4(cr4 & !bit);
    report!(
        cleared.is_ok() && read_cr4() & bit == 0,
        "clearing CR4.PKS works (got {cleared:x?})"
    );
    let result = page.try_read(OFFSET);
    report!(
        result.is_ok(),
        "AD for key 2 no longer blocks a read (got {result:x?})"
    );
    let kept = try_read_pkrs();
    report!(
        kept == Ok(u64::from(ACCESS_DISABLED.bits())),
        "IA32_PKRS keeps {ACCESS_DISABLED} (got {kept:x?})"
    );
    let set = try_write_cr4(cr4);
    // A TLB entry made while CR4.PKS was clear need not hold the key (SDM Vol. 3, 4.10.2.2),
    // and setting CR4.PKS flushes nothing: invalidate the page's translation first.
    set_key(&page, KEY);
    let result = page.try_read(OFFSET);
    report!(
        set.is_ok() && page_fault::raised(&result, target, PROTECTION_KEY | PRESENT),
        "set again, once the page's translation is invalidated, AD for key 2 blocks the read again (got {set:x?}, {result:x?})"
    );
    set_pkrs(RightsRegister::ALLOW_ALL);
}
