//! pku: protection keys for user pages, like kvm-unit-tests' pku test (SDM Vol. 3, 4.6.2 and
//! 4.7). With CR4.PKE set, PKRU's AD bit for a page's key (PTE bits 62:59) makes data accesses
//! to a user page fault, from CPL 3 and CPL 0 alike, and its WD bit makes writes fault: CPL-3
//! writes always, CPL-0 writes only while CR0.WP is set. Supervisor pages and instruction
//! fetches are never checked against PKRU. The #PF has the PK bit (5) and CR2 holds the
//! address. RDPKRU and WRPKRU work at any CPL while CR4.PKE is set and raise #UD while it is
//! clear, #GP(0) with ECX (or WRPKRU's EDX) not 0; CPUID.7.0:ECX.OSPKE mirrors CR4.PKE. A new
//! PKRU value counts at the next access, without a TLB flush.
//!
//! The test pages get key 2, as kvm-unit-tests' do; the runtime's own pages keep key 0, which
//! `protection_keys` never lets a test restrict.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, read_cr4, try_set_write_protect, try_write_cr4};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::{read, try_call_return, try_call_return_in_user_mode, write_test_page};
use vmunit::arch::page_fault::{self, PRESENT, PROTECTION_KEY, USER, WRITE};
use vmunit::arch::protection_keys::{
    KeyRights, KeySweep, ProtectionKey, RightsRegister, key, page_with_key, rdpkru, set_key, sweep_keys,
    try_rdpkru, try_rdpkru_operands, try_wrpkru, try_wrpkru_operands, wrpkru,
};
use vmunit::arch::run_in_user_mode;
use vmunit::environment::instruction_emulating_kvm;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Exception, Vector, known_failure, prefix, report, report_fail, report_info, report_skip};

vmunit::main!(main);

/// The key kvm-unit-tests gives its test pages.
const KEY: ProtectionKey = ProtectionKey::new(2);
/// PKRU with AD set for [`KEY`] (kvm-unit-tests' `pkru_ad`, 0x10).
const ACCESS_DISABLED: RightsRegister = RightsRegister::ALLOW_ALL.with(KEY, KeyRights::ACCESS_DISABLE);
/// PKRU with WD set for [`KEY`] (kvm-unit-tests' `pkru_wd`, 0x20).
const WRITE_DISABLED: RightsRegister = RightsRegister::ALLOW_ALL.with(KEY, KeyRights::WRITE_DISABLE);

/// Where the checks read and write in a page.
const OFFSET: u64 = 0x40;

fn main(_args: &[&str]) {
    let supported = Feature::Pku.supported();
    report_info!(
        "PKU advertised: {supported}, OSPKE: {}, PKS advertised: {}, CR4 {:#x}",
        Feature::Ospke.supported(),
        Feature::Pks.supported(),
        read_cr4()
    );
    if !supported {
        pku_missing();
        return;
    }
    if !enable() {
        return;
    }
    instructions();
    kvm_unit_tests_checks();
    supervisor_accesses();
    user_accesses();
    paging_permissions();
    every_key();
    rights_without_flush();
    disabled_again();
    let _ = try_wrpkru(RightsRegister::ALLOW_ALL);
    set_write_protect(true);
}

fn is_gp0<T>(result: &Result<T, Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0)
}

fn is_ud<T>(result: &Result<T, Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::UD)
}

/// Sets or clears CR0.WP.
fn set_write_protect(on: bool) {
    if let Err(exception) = try_set_write_protect(on) {
        report_fail!("setting CR0.WP to {on} raised {exception}");
    }
}

/// WRPKRU of `value`; a fault FAILs (CR4.PKE is set wherever this runs).
fn set_pkru(value: RightsRegister) {
    if let Err(exception) = try_wrpkru(value) {
        report_fail!("WRPKRU {value} raised {exception}");
    }
}

/// A user page with key [`KEY`].
fn user_page(protection: Protection) -> TestPage {
    page_with_key(protection, KEY)
}

/// Without PKU, CR4.PKE is reserved and RDPKRU/WRPKRU are undefined.
fn pku_missing() {
    let _prefix = prefix("PKU not advertised");
    report_skip!("PKU not advertised (CPUID.7.0:ECX[3] clear): no protection-key checks can run");
    report!(
        !Feature::Ospke.supported(),
        "CPUID.7.0:ECX.OSPKE is clear without PKU"
    );
    if is_tcg() {
        report_skip!(
            "setting CR4.PKE: QEMU's TCG hangs on a reserved CR4 bit (an SVM #VMEXIT outside SVM guest mode: helper_write_crN, target/i386/tcg/system/misc_helper.c; reproduce-cr4-reserved-bit-tcg)"
        );
    } else {
        let cr4 = read_cr4();
        let result = try_write_cr4(cr4 | Cr4Flags::PROTECTION_KEY_USER.bits());
        let after = read_cr4();
        if result.is_ok() {
            let _ = try_write_cr4(cr4);
        }
        known_failure(
            instruction_emulating_kvm(),
            "kvm_pvm takes CR4.PKE though its CPUID does not advertise PKU (reproduce-cr4-pke-unadvertised)",
            || {
                report!(
                    is_gp0(&result),
                    "setting CR4.PKE raises #GP(0) (got {result:x?}, CR4 then {after:#x})"
                )
            },
        );
    }
    if instruction_emulating_kvm() {
        report_skip!(
            "RDPKRU and WRPKRU raising #UD: this host's kvm_pvm stops the VM on them (KVM internal error; reproduce-rdpkru-without-cr4-pke)"
        );
    } else {
        let result = try_rdpkru();
        report!(is_ud(&result), "RDPKRU raises #UD (got {result:x?})");
        let result = try_wrpkru(RightsRegister::ALLOW_ALL);
        report!(is_ud(&result), "WRPKRU raises #UD (got {result:x?})");
    }
}

/// CR4.PKE: RDPKRU is #UD before it, CPUID's OSPKE follows it. Returns whether it is set.
fn enable() -> bool {
    let _prefix = prefix("CR4.PKE");
    let cr4 = read_cr4();
    let bit = Cr4Flags::PROTECTION_KEY_USER.bits();
    if cr4 & bit != 0 {
        report_fail!("CR4.PKE is clear at boot (CR4 {cr4:#x})");
    }
    report!(
        !Feature::Ospke.supported(),
        "CPUID.7.0:ECX.OSPKE is clear while CR4.PKE is clear"
    );
    let result = try_rdpkru();
    report!(
        is_ud(&result),
        "RDPKRU raises #UD while CR4.PKE is clear (got {result:x?})"
    );
    let result = try_wrpkru(RightsRegister::ALLOW_ALL);
    report!(
        is_ud(&result),
        "WRPKRU raises #UD while CR4.PKE is clear (got {result:x?})"
    );
    let result = try_write_cr4(cr4 | bit);
    let set = result.is_ok() && read_cr4() & bit != 0;
    report!(
        set,
        "setting CR4.PKE works (got {result:x?}, CR4 {:#x})",
        read_cr4()
    );
    report!(
        Feature::Ospke.supported(),
        "CPUID.7.0:ECX.OSPKE is set once CR4.PKE is"
    );
    let initial = try_rdpkru();
    report!(
        initial == Ok(RightsRegister::ALLOW_ALL),
        "PKRU is 0 after reset (got {initial:x?})"
    );
    set
}

/// RDPKRU and WRPKRU: round trips, operand #GPs, CPL 3.
fn instructions() {
    let _prefix = prefix("RDPKRU/WRPKRU");
    for value in [0x5555_5554, 0xaaaa_aaa8, 0xffff_fffc, 0x0000_0010] {
        let value = RightsRegister::from_bits(value);
        let written = try_wrpkru(value);
        let back = try_rdpkru_operands(0);
        report!(
            written.is_ok() && back == Ok((value.bits(), 0)),
            "WRPKRU {value} then RDPKRU reads it back with EDX 0 (got {written:x?}, {back:x?})"
        );
    }
    set_pkru(WRITE_DISABLED);
    let result = try_rdpkru_operands(1);
    report!(
        is_gp0(&result),
        "RDPKRU with ECX 1 raises #GP(0) (got {result:x?})"
    );
    let result = try_wrpkru_operands(ACCESS_DISABLED.bits(), 1, 0);
    report!(
        is_gp0(&result),
        "WRPKRU with ECX 1 raises #GP(0) (got {result:x?})"
    );
    let result = try_wrpkru_operands(ACCESS_DISABLED.bits(), 0, 1);
    report!(
        is_gp0(&result),
        "WRPKRU with EDX 1 raises #GP(0) (got {result:x?})"
    );
    let after = try_rdpkru();
    report!(
        after == Ok(WRITE_DISABLED),
        "a faulting WRPKRU leaves PKRU as it was ({WRITE_DISABLED}, got {after:x?})"
    );
    let user = run_in_user_mode(|| {
        let before = rdpkru();
        wrpkru(ACCESS_DISABLED);
        (before, rdpkru())
    });
    report!(
        user == Ok((WRITE_DISABLED, ACCESS_DISABLED)),
        "at CPL 3, RDPKRU reads {WRITE_DISABLED} and WRPKRU {ACCESS_DISABLED} takes (got {user:x?})"
    );
    let kernel = try_rdpkru();
    report!(
        kernel == Ok(ACCESS_DISABLED),
        "the value written at CPL 3 is PKRU at CPL 0 too (got {kernel:x?})"
    );
    set_pkru(RightsRegister::ALLOW_ALL);
}

/// kvm-unit-tests' seven checks: CPL-0 writes to a supervisor page with key 2 never fault
/// (PKRU governs user pages only); a CPL-0 write to a user page with key 2 and WD faults only
/// with CR0.WP set; a CPL-0 read of it with AD faults.
fn kvm_unit_tests_checks() {
    let _prefix = prefix("kvm-unit-tests");
    let supervisor = page_with_key(Protection::READ_WRITE, KEY);
    let user = user_page(Protection::USER_READ_WRITE);
    // The runtime's write of its own tables, not the CPU: a precondition, no report when it holds.
    if key(&supervisor) != Some(KEY) || key(&user) != Some(KEY) {
        report_fail!(
            "the test pages' entries do not hold {KEY} (got {:?}, {:?})",
            key(&supervisor),
            key(&user)
        );
    }
    for (rights, name) in [(ACCESS_DISABLED, "ad"), (WRITE_DISABLED, "wd")] {
        for wp in [true, false] {
            set_write_protect(wp);
            set_pkru(rights);
            let value = 21 + u64::from(name == "wd") * 2 + u64::from(!wp);
            let result = supervisor.try_write(OFFSET, value);
            report!(
                result.is_ok() && supervisor.stored(OFFSET) == value,
                "write to supervisor page when pkru is {name} and wp == {} (got {result:x?})",
                u8::from(wp)
            );
        }
    }
    set_pkru(RightsRegister::ALLOW_ALL);
    let _ = user.try_write(OFFSET, 24);
    set_pkru(WRITE_DISABLED);
    set_write_protect(false);
    let result = user.try_write(OFFSET, 25);
    report!(
        result.is_ok() && user.stored(OFFSET) == 25,
        "write to user page when pkru is wd and wp == 0 (got {result:x?})"
    );
    set_write_protect(true);
    let target = user.address() + OFFSET;
    let result = user.try_write(OFFSET, 26);
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | WRITE | PRESENT) && user.stored(OFFSET) == 25,
        "write to user page when pkru is wd and wp == 1: #PF with PK, W, P at {target:#x}, nothing written (got {result:x?})"
    );
    set_pkru(ACCESS_DISABLED);
    let result = user.try_read(OFFSET);
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | PRESENT),
        "read from user page when pkru is ad: #PF with PK, P at {target:#x} (got {result:x?})"
    );
    set_pkru(RightsRegister::ALLOW_ALL);
}

/// CPL-0 accesses to a user page beyond kvm-unit-tests': AD blocks writes whatever CR0.WP,
/// WD never blocks reads, other keys and supervisor pages are untouched, fetches are free.
fn supervisor_accesses() {
    let _prefix = prefix("CPL 0");
    let user = user_page(Protection::USER_READ_WRITE);
    let target = user.address() + OFFSET;
    set_pkru(ACCESS_DISABLED);
    for wp in [true, false] {
        set_write_protect(wp);
        let result = user.try_write(OFFSET, 0x31);
        report!(
            page_fault::raised(&result, target, PROTECTION_KEY | WRITE | PRESENT) && user.stored(OFFSET) == 0,
            "AD: a write to a user page faults with PK, W, P with CR0.WP={} (got {result:x?})",
            u8::from(wp)
        );
    }
    set_write_protect(true);
    set_pkru(WRITE_DISABLED);
    let result = user.try_read(OFFSET);
    report!(
        result == Ok(0),
        "WD: a read of a user page works (got {result:x?})"
    );
    let other = user_page(Protection::USER_READ_WRITE);
    set_key(&other, ProtectionKey::new(3));
    set_pkru(ACCESS_DISABLED.with(
        KEY,
        KeyRights {
            access_disable: true,
            write_disable: true,
        },
    ));
    let result = other
        .try_write(OFFSET, 0x33)
        .and_then(|()| other.try_read(OFFSET));
    report!(
        result == Ok(0x33),
        "AD and WD for key 2 leave a user page with key 3 alone (got {result:x?})"
    );
    let code = user_page(Protection::USER_READ_EXECUTE);
    set_pkru(ACCESS_DISABLED.with(
        KEY,
        KeyRights {
            access_disable: true,
            write_disable: true,
        },
    ));
    let result = try_call_return(&code, OFFSET);
    report!(
        result.is_ok(),
        "AD and WD: a CPL-0 fetch from a user page with key 2 works, fetches are not checked (got {result:x?})"
    );
    set_pkru(RightsRegister::ALLOW_ALL);
}

/// CPL-3 accesses: AD blocks reads and writes, WD blocks writes whatever CR0.WP, fetches are
/// free.
fn user_accesses() {
    let _prefix = prefix("CPL 3");
    let user = user_page(Protection::USER_READ_WRITE);
    let target = user.address() + OFFSET;
    set_pkru(RightsRegister::ALLOW_ALL);
    let result = run_in_user_mode(|| {
        write_test_page(&user, OFFSET, 0x41);
        read(target)
    });
    report!(
        result.as_ref().ok() == Some(&0x41),
        "with PKRU 0, a write then a read of a user page with key 2 works (got {result:x?})"
    );
    set_pkru(ACCESS_DISABLED);
    let result = run_in_user_mode(|| read(target));
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | USER | PRESENT),
        "AD: a read faults with PK, U, P at {target:#x} (got {result:x?})"
    );
    let result = run_in_user_mode(|| write_test_page(&user, OFFSET, 0x42));
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | WRITE | USER | PRESENT)
            && user.stored(OFFSET) == 0x41,
        "AD: a write faults with PK, W, U, P, nothing written (got {result:x?})"
    );
    set_pkru(WRITE_DISABLED);
    let result = run_in_user_mode(|| read(target));
    report!(result == Ok(0x41), "WD: a read works (got {result:x?})");
    for wp in [true, false] {
        set_write_protect(wp);
        let result = run_in_user_mode(|| write_test_page(&user, OFFSET, 0x43));
        report!(
            page_fault::raised(&result, target, PROTECTION_KEY | WRITE | USER | PRESENT)
                && user.stored(OFFSET) == 0x41,
            "WD: a write faults with PK, W, U, P with CR0.WP={}, nothing written (got {result:x?})",
            u8::from(wp)
        );
    }
    set_write_protect(true);
    let code = user_page(Protection::USER_READ_EXECUTE);
    set_pkru(ACCESS_DISABLED.with(
        KEY,
        KeyRights {
            access_disable: true,
            write_disable: true,
        },
    ));
    let result = try_call_return_in_user_mode(&code, OFFSET);
    report!(
        result.is_ok(),
        "AD and WD: a CPL-3 fetch from a user page with key 2 works, fetches are not checked (got {result:x?})"
    );
    set_pkru(RightsRegister::ALLOW_ALL);
}

/// Keys and the page's own permissions together: a read-only page faults without PK when the
/// key allows the write, with PK when WD forbids it too; CR0.WP=0 lets CPL 0 write both.
fn paging_permissions() {
    let _prefix = prefix("read-only page");
    let page = user_page(Protection::USER_READ_ONLY);
    let target = page.address() + OFFSET;
    set_pkru(RightsRegister::ALLOW_ALL);
    let result = run_in_user_mode(|| write_test_page(&page, OFFSET, 0x51));
    report!(
        page_fault::raised(&result, target, WRITE | USER | PRESENT),
        "PKRU 0: a CPL-3 write faults with W, U, P and no PK (got {result:x?})"
    );
    set_pkru(WRITE_DISABLED);
    let result = run_in_user_mode(|| write_test_page(&page, OFFSET, 0x52));
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | WRITE | USER | PRESENT),
        "WD: a CPL-3 write faults with PK, W, U, P (got {result:x?})"
    );
    let result = page.try_write(OFFSET, 0x53);
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | WRITE | PRESENT),
        "WD, CR0.WP=1: a CPL-0 write faults with PK, W, P (got {result:x?})"
    );
    set_write_protect(false);
    let result = page.try_write(OFFSET, 0x54);
    report!(
        result.is_ok() && page.stored(OFFSET) == 0x54,
        "WD, CR0.WP=0: a CPL-0 write goes through both (got {result:x?})"
    );
    set_write_protect(true);
    set_pkru(RightsRegister::ALLOW_ALL);
}

/// Each key 1..15 is decoded from PTE bits 62:59: AD for that key alone faults a read, AD for
/// every other key does not.
fn every_key() {
    let _prefix = prefix("every key");
    let page = user_page(Protection::USER_READ_WRITE);
    let KeySweep {
        not_blocked,
        blocked_by_others,
        wrong_entry,
    } = sweep_keys(&page, OFFSET, set_pkru);
    if !wrong_entry.is_empty() {
        report_fail!("the page's entry does not hold the key set for keys {wrong_entry:?}");
    }
    report!(
        not_blocked.is_empty(),
        "AD for the page's key alone faults a CPL-0 read with PK, P, for keys 1-15 (keys that did not: {not_blocked:?})"
    );
    report!(
        blocked_by_others.is_empty(),
        "AD for every other key 1-15 leaves the read alone (keys blocked: {blocked_by_others:?})"
    );
}

/// WRPKRU counts at the next access: no INVLPG or CR3 write between a cached translation and
/// the access that the new rights forbid.
fn rights_without_flush() {
    let _prefix = prefix("no TLB flush");
    let page = user_page(Protection::USER_READ_WRITE);
    let target = page.address() + OFFSET;
    set_pkru(RightsRegister::ALLOW_ALL);
    let warm = page.try_read(OFFSET).and_then(|_| page.try_write(OFFSET, 0x61));
    set_pkru(ACCESS_DISABLED);
    let denied = page.try_read(OFFSET);
    set_pkru(RightsRegister::ALLOW_ALL);
    let allowed = page.try_read(OFFSET);
    report!(
        warm.is_ok() && page_fault::raised(&denied, target, PROTECTION_KEY | PRESENT) && allowed == Ok(0x61),
        "a read through a cached translation faults right after WRPKRU sets AD and works right after it clears it (got {warm:x?}, {denied:x?}, {allowed:x?})"
    );
    set_pkru(WRITE_DISABLED);
    let denied = page.try_write(OFFSET, 0x62);
    set_pkru(RightsRegister::ALLOW_ALL);
    let allowed = page.try_write(OFFSET, 0x63);
    report!(
        page_fault::raised(&denied, target, PROTECTION_KEY | WRITE | PRESENT)
            && allowed.is_ok()
            && page.stored(OFFSET) == 0x63,
        "a write faults right after WRPKRU sets WD and works right after it clears it (got {denied:x?}, {allowed:x?})"
    );
}

/// With CR4.PKE clear again, keys do not count and RDPKRU/WRPKRU are #UD, but PKRU keeps its
/// value for when CR4.PKE is set again (and the page's translation is refreshed).
fn disabled_again() {
    let _prefix = prefix("CR4.PKE cleared");
    let page = user_page(Protection::USER_READ_WRITE);
    let target = page.address() + OFFSET;
    set_pkru(ACCESS_DISABLED);
    let bit = Cr4Flags::PROTECTION_KEY_USER.bits();
    let cr4 = read_cr4();
    let cleared = try_write_cr4(cr4 & !bit);
    report!(
        cleared.is_ok() && read_cr4() & bit == 0 && !Feature::Ospke.supported(),
        "clearing CR4.PKE works and clears CPUID's OSPKE (got {cleared:x?})"
    );
    let result = page.try_read(OFFSET);
    report!(
        result.is_ok(),
        "AD for key 2 no longer blocks a CPL-0 read (got {result:x?})"
    );
    let result = run_in_user_mode(|| read(target));
    report!(result.is_ok(), "nor a CPL-3 read (got {result:x?})");
    let result = try_rdpkru();
    report!(is_ud(&result), "RDPKRU raises #UD (got {result:x?})");
    let result = try_wrpkru(RightsRegister::ALLOW_ALL);
    report!(is_ud(&result), "WRPKRU raises #UD (got {result:x?})");
    let set = try_write_cr4(cr4);
    let kept = try_rdpkru();
    report!(
        set.is_ok() && kept == Ok(ACCESS_DISABLED),
        "set again, CR4.PKE finds PKRU as it was ({ACCESS_DISABLED}, got {set:x?}, {kept:x?})"
    );
    // A TLB entry made while CR4.PKE was clear need not hold the key (SDM Vol. 3, 4.10.2.2),
    // and setting CR4.PKE flushes nothing: invalidate the page's translation first.
    set_key(&page, KEY);
    let result = page.try_read(OFFSET);
    report!(
        page_fault::raised(&result, target, PROTECTION_KEY | PRESENT),
        "and, once the page's translation is invalidated, AD for key 2 blocks the read again (got {result:x?})"
    );
    set_pkru(RightsRegister::ALLOW_ALL);
}
