//! Protection keys (SDM Vol. 3, 4.6.2): a 4-bit key in bits 62:59 of each leaf page-table
//! entry, and two rights registers that say, per key, whether data accesses are disabled (AD)
//! or writes are disabled (WD). PKRU, read and written with RDPKRU/WRPKRU at any privilege
//! level, governs user pages while CR4.PKE is set; IA32_PKRS (MSR 0x6E1), written with WRMSR
//! at CPL 0, governs supervisor pages while CR4.PKS is set. A key's WD stops supervisor-mode
//! writes only while CR0.WP is set; user-mode writes always. Instruction fetches are never
//! checked against keys. A #PF that a key caused has the PK bit (bit 5) in its error code.
//!
//! Every page the runtime itself uses (its image, stacks, heap and page tables) has key 0,
//! and the runtime keeps key 0's rights open in both registers: [`try_wrpkru`], [`wrpkru`] and
//! [`try_write_pkrs`] refuse (panic) to set AD or WD for key 0, so a test cannot lock the
//! kernel out of its own memory (the image becomes a user page once a test has run user-mode
//! code, so PKRU matters to it too). Tests give other keys to [`TestPage`]s with
//! [`set_key`], which no Rust object occupies.

use alloc::vec::Vec;
use core::arch::asm;
use core::fmt;

use super::exceptions::{Exception, catch_exception};
use super::msr::{IA32_PKRS, try_rdmsr};
use crate::memory::{Protection, TestPage};

/// A protection key: 0 to 15.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProtectionKey(u8);

impl ProtectionKey {
    /// Key 0: the key of every page the runtime uses, whose rights stay open.
    pub const RUNTIME: ProtectionKey = ProtectionKey(0);
    /// The highest key, 15 (all four key bits set, bit 62 included).
    pub const HIGHEST: ProtectionKey = ProtectionKey(15);

    /// Key `index`.
    ///
    /// # Panics
    /// When `index` is above 15.
    pub const fn new(index: u8) -> ProtectionKey {
        assert!(index <= 15, "a protection key is 0..=15");
        ProtectionKey(index)
    }

    /// The key's number.
    pub const fn index(self) -> u8 {
        self.0
    }

    /// Keys 1 to 15: those a test may restrict.
    pub fn restrictable() -> impl Iterator<Item = ProtectionKey> {
        (1..=15).map(ProtectionKey)
    }
}

impl fmt::Display for ProtectionKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "key {}", self.0)
    }
}

/// One key's two rights bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyRights {
    /// AD: data accesses (reads and writes) fault.
    pub access_disable: bool,
    /// WD: writes fault (user-mode writes always, supervisor-mode writes while CR0.WP is set).
    pub write_disable: bool,
}

impl KeyRights {
    /// Neither bit: the key restricts nothing.
    pub const ALLOW: KeyRights = KeyRights {
        access_disable: false,
        write_disable: false,
    };
    /// AD alone.
    pub const ACCESS_DISABLE: KeyRights = KeyRights {
        access_disable: true,
        write_disable: false,
    };
    /// WD alone.
    pub const WRITE_DISABLE: KeyRights = KeyRights {
        access_disable: false,
        write_disable: true,
    };
}

/// The value of a rights register: PKRU, or bits 31:0 of IA32_PKRS. Key `i` has AD in bit
/// `2 * i` and WD in bit `2 * i + 1`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RightsRegister(u32);

impl RightsRegister {
    /// Every key open: the value at reset, and the runtime's.
    pub const ALLOW_ALL: RightsRegister = RightsRegister(0);
    /// The bits of key 0, which the runtime keeps clear.
    pub const RUNTIME_BITS: u32 = 0b11;

    /// The register holding `bits`.
    pub const fn from_bits(bits: u32) -> RightsRegister {
        RightsRegister(bits)
    }

    /// The register's bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// This value with `key`'s rights replaced by `rights`.
    pub const fn with(self, key: ProtectionKey, rights: KeyRights) -> RightsRegister {
        let shift = 2 * key.0 as u32;
        let bits = (rights.access_disable as u32) | (rights.write_disable as u32) << 1;
        RightsRegister(self.0 & !(0b11 << shift) | bits << shift)
    }

    /// `key`'s rights in this value.
    pub const fn rights(self, key: ProtectionKey) -> KeyRights {
        let bits = self.0 >> (2 * key.0 as u32);
        KeyRights {
            access_disable: bits & 1 != 0,
            write_disable: bits & 2 != 0,
        }
    }

    /// Whether key 0's rights are open, as the runtime needs.
    pub const fn keeps_runtime_key_open(self) -> bool {
        self.0 & Self::RUNTIME_BITS == 0
    }
}

impl fmt::Debug for RightsRegister {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:#010x}", self.0)
    }
}

impl fmt::Display for RightsRegister {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:#010x}", self.0)
    }
}

/// Gives `page` protection key `key` (bits 62:59 of its page-table entry) and invalidates
/// its TLB entry. `TestPage::map` and `protect` write the entry with key 0 again.
///
/// # Panics
/// When the page is not mapped.
pub fn set_key(page: &TestPage, key: ProtectionKey) {
    // SAFETY: the virtual page belongs to `page`, which no Rust object occupies and which the
    // runtime never touches through this mapping.
    let mapped = unsafe { super::mmu::set_page_key(page.address(), key.0) };
    assert!(mapped, "the test page at {:#x} is not mapped", page.address());
}

/// A fresh test page mapped with `protection` whose page-table entry holds `key`.
pub fn page_with_key(protection: Protection, key: ProtectionKey) -> TestPage {
    let page = TestPage::new();
    page.map(protection);
    set_key(&page, key);
    page
}

/// What [`sweep_keys`] saw, as lists of key indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySweep {
    /// Keys whose AD bit alone did not make the read fault with PK and P at the address.
    pub not_blocked: Vec<u8>,
    /// Keys whose read faulted with AD set for every *other* key (and not for this one).
    pub blocked_by_others: Vec<u8>,
    /// Keys the page's entry did not hold after [`set_key`] (the runtime's bookkeeping).
    pub wrong_entry: Vec<u8>,
}

/// For each restrictable key: gives `page` that key, sets AD for it alone through
/// `set_rights` (WRPKRU or WRMSR IA32_PKRS) and reads `page` at `offset` at CPL 0 (a #PF with
/// PK and P is due), then sets AD for every other key and reads again (no fault is due).
/// Leaves the rights at [`RightsRegister::ALLOW_ALL`].
pub fn sweep_keys(page: &TestPage, offset: u64, set_rights: impl Fn(RightsRegister)) -> KeySweep {
    use super::exceptions::page_fault::{PRESENT, PROTECTION_KEY, raised};
    let mut sweep = KeySweep::default();
    let target = page.address() + offset;
    for each in ProtectionKey::restrictable() {
        set_key(page, each);
        if key(page) != Some(each) {
            sweep.wrong_entry.push(each.index());
        }
        set_rights(RightsRegister::ALLOW_ALL.with(each, KeyRights::ACCESS_DISABLE));
        if !raised(&page.try_read(offset), target, PROTECTION_KEY | PRESENT) {
            sweep.not_blocked.push(each.index());
        }
        let others = ProtectionKey::restrictable()
            .filter(|other| *other != each)
            .fold(RightsRegister::ALLOW_ALL, |rights, other| {
                rights.with(other, KeyRights::ACCESS_DISABLE)
            });
        set_rights(others);
        if page.try_read(offset).is_err() {
            sweep.blocked_by_others.push(each.index());
        }
    }
    set_rights(RightsRegister::ALLOW_ALL);
    sweep
}

/// The protection key in `page`'s page-table entry, if it is mapped.
pub fn key(page: &TestPage) -> Option<ProtectionKey> {
    super::mmu::page_key(page.address()).map(ProtectionKey)
}

/// RDPKRU: PKRU, or the exception (#UD while CR4.PKE is clear).
pub fn try_rdpkru() -> Result<RightsRegister, Exception> {
    try_rdpkru_operands(0).map(|(value, _)| RightsRegister(value))
}

/// RDPKRU with ECX = `ecx`: EAX and EDX (0), or the exception (#GP(0) when ECX is not 0,
/// #UD while CR4.PKE is clear).
pub fn try_rdpkru_operands(ecx: u32) -> Result<(u32, u32), Exception> {
    catch_exception(|| {
        let (eax, edx): (u32, u32);
        // SAFETY: RDPKRU only reads PKRU into EAX and EDX; a fault is caught.
        unsafe { asm!("rdpkru", in("ecx") ecx, out("eax") eax, out("edx") edx, options(nomem, nostack)) };
        (eax, edx)
    })
}

/// RDPKRU without catching a fault: for user mode (`run_in_user_mode`), where it works too.
pub fn rdpkru() -> RightsRegister {
    let value: u32;
    // SAFETY: RDPKRU only reads PKRU; a fault goes to the enclosing catch or ends the test.
    unsafe { asm!("rdpkru", in("ecx") 0u32, out("eax") value, out("edx") _, options(nomem, nostack)) };
    RightsRegister(value)
}

/// WRPKRU of `value`, or the exception (#UD while CR4.PKE is clear).
///
/// # Panics
/// When `value` restricts key 0, the runtime's key.
pub fn try_wrpkru(value: RightsRegister) -> Result<(), Exception> {
    try_wrpkru_operands(value.0, 0, 0)
}

/// WRPKRU of EAX = `eax` with ECX = `ecx` and EDX = `edx`, or the exception (#GP(0) when ECX
/// or EDX is not 0, #UD while CR4.PKE is clear).
///
/// # Panics
/// When `eax` restricts key 0, the runtime's key.
pub fn try_wrpkru_operands(eax: u32, ecx: u32, edx: u32) -> Result<(), Exception> {
    assert!(
        RightsRegister(eax).keeps_runtime_key_open(),
        "PKRU <- {eax:#x} would restrict key 0, the key of the runtime's pages"
    );
    catch_exception(|| {
        // SAFETY: key 0, the runtime's, stays open (checked above), so only test pages with
        // other keys become inaccessible; a fault is caught.
        unsafe { asm!("wrpkru", in("eax") eax, in("ecx") ecx, in("edx") edx, options(nomem, nostack)) };
    })
}

/// WRPKRU without catching a fault: for user mode (`run_in_user_mode`), where it works too.
///
/// # Panics
/// When `value` restricts key 0, the runtime's key.
pub fn wrpkru(value: RightsRegister) {
    assert!(
        value.keeps_runtime_key_open(),
        "PKRU <- {value} would restrict key 0, the key of the runtime's pages"
    );
    // SAFETY: key 0 stays open (checked above); a fault goes to the enclosing catch.
    unsafe { asm!("wrpkru", in("eax") value.0, in("ecx") 0u32, in("edx") 0u32, options(nomem, nostack)) };
}

/// RDMSR of IA32_PKRS, or the exception (#GP where PKS is not supported).
pub fn try_read_pkrs() -> Result<u64, Exception> {
    try_rdmsr(IA32_PKRS)
}

/// WRMSR of `value` to IA32_PKRS, or the exception (#GP for bits 63:32, which are reserved,
/// or where PKS is not supported).
///
/// # Panics
/// When `value` restricts key 0, the runtime's key (as `msr::try_wrmsr` would).
pub fn try_write_pkrs(value: u64) -> Result<(), Exception> {
    assert!(
        value & u64::from(RightsRegister::RUNTIME_BITS) == 0,
        "IA32_PKRS <- {value:#x} would restrict key 0, the key of the runtime's pages"
    );
    // SAFETY: key 0, the runtime's, stays open (checked above); other keys only restrict
    // test pages.
    unsafe { super::msr::try_wrmsr_unrestricted(IA32_PKRS, value) }
}
