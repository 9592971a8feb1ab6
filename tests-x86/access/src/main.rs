//! access: the permission matrix of a 4-level guest page walk, kvm-unit-tests' x86/access.c.
//! Every combination of its flags (PTE and PDE present, writable, user, accessed, dirty, NX,
//! reserved bits 51 and 36, PDE PS and reserved bit 13 of a large page, a read-only PDPTE,
//! protection key 1 with PKRU AD/WD, user/write/fetch/twice accesses, EFER.NX, CR0.WP and
//! CR4.PKE) that its `ac_test_legal` keeps is checked against the same model of the walk
//! (`ac_emulate_access`): fault or not, the #PF error code (P, W, U, RSVD, I/D, PK), CR2, and
//! the A and D bits the walk must set in the PTE and PDE. Then its special cases: two large
//! PDEs on one frame (`corrupt_hugepage_trigger`, `check_large_pte_dirty_for_nowp`), a
//! prefetched PTE's error code, SMEP with a write-protected page, CR0.WP toggled without a TLB
//! flush, and one page directory reached through PDPTEs with different rights.
//!
//! Beyond kvm-unit-tests, whose matrix leaves SMEP out: the same combinations with CR4.SMEP set
//! for CPL-0 accesses, run before any user mode (which makes the runtime's image a user page).
//! The 5-level matrix is skipped: the runtime runs with 4-level paging.
//!
//! Speed: kvm-unit-tests runs each combination as a separate walk. Combinations that differ
//! only in the bits of a PTE the walk never reads (the PDE is not present, has a reserved bit
//! or maps a large page: the walk stops there) are the same experiment for the CPU; each such
//! set runs once and counts for all its members. Every report line names its group (the CPU
//! state), how many of kvm-unit-tests' combinations it covered and how many walks it ran.
//! Under kvm_pvm, where a walk costs milliseconds, one walk in [`KVM_PVM_STRIDE`] runs unless
//! `sample=N` says otherwise (`sample=1`: all; `groups=N`: the first N groups only).
//!
//! `force_emulation` is kvm-unit-tests' access_fep: where KVM honours its forced emulation
//! prefix (probed first; SKIP with the #UD otherwise), FEP is one more flag of the matrix, its
//! reads and writes run through KVM's instruction emulator. `maxphyaddr=N` checks that CPUID
//! reports the MAXPHYADDR the run asked QEMU for (access-reduced-maxphyaddr: 36, which makes bit
//! 36 of an entry reserved and adds its combinations to the matrix).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vmunit::arch::control::{
    CR4_LA57, Cr0Flags, Cr4Flags, read_cr0, read_cr4, try_write_cr0, try_write_cr4,
    try_write_cr4_unrestricted,
};
use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::rdtsc;
use vmunit::arch::instructions::try_forced_emulation_nop;
use vmunit::arch::page_fault;
use vmunit::arch::page_walk::{
    ACCESSED, DIRTY, DirectoryTarget, Emulation, KEY_SHIFT, NO_EXECUTE, PAGE_SIZE_BIT, PRESENT,
    PagingSandbox, Privilege, USER, WRITABLE, no_execute_enabled, try_set_no_execute_enable,
};
use vmunit::arch::probes::physical_address_bits;
use vmunit::arch::protection_keys::{RightsRegister, try_wrpkru};
use vmunit::arch::timer;
use vmunit::environment::instruction_emulating_kvm;
use vmunit::{Exception, Vector, known_failure, report, report_info, report_kfail, report_skip};

vmunit::main!(main);

/// kvm-unit-tests' flag bits, in its order (`AC_*_BIT`): a combination is a `u32` of them.
mod flag {
    pub const PTE_WRITABLE: u32 = 1 << 0;
    pub const PTE_USER: u32 = 1 << 1;
    pub const PTE_ACCESSED: u32 = 1 << 2;
    pub const PTE_DIRTY: u32 = 1 << 3;
    pub const PTE_NX: u32 = 1 << 4;
    pub const PTE_PRESENT: u32 = 1 << 5;
    pub const PTE_BIT51: u32 = 1 << 6;
    pub const PTE_BIT36: u32 = 1 << 7;
    pub const PDE_WRITABLE: u32 = 1 << 8;
    pub const PDE_USER: u32 = 1 << 9;
    pub const PDE_ACCESSED: u32 = 1 << 10;
    pub const PDE_DIRTY: u32 = 1 << 11;
    pub const PDE_PSE: u32 = 1 << 12;
    pub const PDE_NX: u32 = 1 << 13;
    pub const PDE_PRESENT: u32 = 1 << 14;
    pub const PDE_BIT51: u32 = 1 << 15;
    pub const PDE_BIT36: u32 = 1 << 16;
    pub const PDE_BIT13: u32 = 1 << 17;
    pub const PDPTE_NO_WRITABLE: u32 = 1 << 18;
    pub const PKU_AD: u32 = 1 << 19;
    pub const PKU_WD: u32 = 1 << 20;
    pub const PKU_PKEY: u32 = 1 << 21;
    pub const ACCESS_USER: u32 = 1 << 22;
    pub const ACCESS_WRITE: u32 = 1 << 23;
    pub const ACCESS_FETCH: u32 = 1 << 24;
    pub const ACCESS_TWICE: u32 = 1 << 25;
    pub const CPU_EFER_NX: u32 = 1 << 26;
    pub const CPU_CR0_WP: u32 = 1 << 27;
    pub const CPU_CR4_SMEP: u32 = 1 << 28;
    pub const CPU_CR4_PKE: u32 = 1 << 29;
    /// Data accesses behind KVM's forced emulation prefix (kvm-unit-tests' `AC_FEP`).
    pub const FEP: u32 = 1 << 30;
    /// The bits that describe the PTE alone.
    pub const PTE_BITS: u32 = 0xff;
    /// The CPU-state bits: one report group per value.
    pub const CPU_STATE: u32 = CPU_EFER_NX | CPU_CR0_WP | CPU_CR4_PKE | PKU_AD | PKU_WD;
    pub const COUNT: usize = 31;
}

/// kvm-unit-tests' names of the flags (`ac_names`), by bit.
const NAMES: [&str; flag::COUNT] = [
    "pte.rw", "pte.user", "pte.a", "pte.d", "pte.nx", "pte.p", "pte.51", "pte.36", "pde.rw", "pde.user",
    "pde.a", "pde.d", "pde.pse", "pde.nx", "pde.p", "pde.51", "pde.36", "pde.13", "pdpte.ro", "pkru.ad",
    "pkru.wd", "pkey=1", "user", "write", "fetch", "twice", "efer.nx", "cr0.wp", "cr4.smep", "cr4.pke",
    "fep",
];

/// The flag names of `flags`, space separated.
fn names(flags: u32) -> String {
    let mut text = String::new();
    for (bit, name) in NAMES.iter().enumerate() {
        if flags & (1 << bit) != 0 {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(name);
        }
    }
    if text.is_empty() {
        text.push_str("(none)");
    }
    text
}

/// kvm-unit-tests' `ac_test_legal`: the combinations its matrix runs.
fn legal(flags: u32) -> bool {
    use flag::*;
    let set = |mask: u32| flags & mask != 0;
    if set(CPU_CR4_SMEP) || (set(ACCESS_FETCH) && set(ACCESS_WRITE)) {
        return false;
    }
    if !set(CPU_CR4_PKE) && set(PKU_AD | PKU_WD) {
        return false;
    }
    if !set(PDE_PSE) && set(PDE_BIT13) {
        return false;
    }
    let mut reserved = PDE_BIT51 | PDE_BIT36 | PDE_BIT13 | PTE_BIT51 | PTE_BIT36;
    if !set(CPU_EFER_NX) {
        reserved |= PDE_NX | PTE_NX;
    }
    reserved &= flags;
    reserved & reserved.wrapping_sub(1) == 0
}

/// The combinations the matrix runs: kvm-unit-tests' (`legal`), and beyond them, with
/// CR4.SMEP set, those without a user-mode access (which SMEP forbids this kernel to make: its
/// image must stay a supervisor page), the rest of the rules unchanged.
fn allowed(flags: u32) -> bool {
    use flag::*;
    if flags & CPU_CR4_SMEP != 0 {
        flags & ACCESS_USER == 0 && legal(flags & !CPU_CR4_SMEP)
    } else {
        legal(flags)
    }
}

/// What the walk must do: kvm-unit-tests' `ac_test_t` expectation fields.
#[derive(Clone, Copy, Debug, Default)]
struct Expectation {
    fault: bool,
    error_code: u64,
    pte: u64,
    pde: u64,
    ignore_pde: u64,
}

/// kvm-unit-tests' `ac_test_permissions`: the leaf's rights against the access.
fn permissions(expect: &mut Expectation, flags: u32, writable: bool, user: bool, executable: bool) -> u64 {
    use flag::*;
    let set = |mask: u32| flags & mask != 0;
    let kernel_writable = !set(CPU_CR0_WP) && !set(ACCESS_USER);
    if set(ACCESS_USER) && !user {
        expect.fault = true;
    }
    if set(ACCESS_WRITE) && !writable && !kernel_writable {
        expect.fault = true;
    }
    if set(ACCESS_FETCH) && !executable {
        expect.fault = true;
    }
    if set(ACCESS_FETCH) && user && set(CPU_CR4_SMEP) {
        expect.fault = true;
    }
    let key_applies = user && !set(ACCESS_FETCH) && set(PKU_PKEY) && set(CPU_CR4_PKE);
    if key_applies && (set(PKU_AD) || (set(ACCESS_WRITE) && set(PKU_WD) && !kernel_writable)) {
        expect.fault = true;
        expect.error_code |= page_fault::PROTECTION_KEY;
    }
    let mut bits = 0;
    if !expect.fault {
        bits |= ACCESSED;
        if set(ACCESS_WRITE) {
            bits |= DIRTY;
        }
    }
    bits
}

/// kvm-unit-tests' `ac_emulate_access`: the walk of `flags`, step by step.
fn emulate(expect: &mut Expectation, flags: u32) {
    use flag::*;
    let set = |mask: u32| flags & mask != 0;
    if set(ACCESS_USER) {
        expect.error_code |= page_fault::USER;
    }
    if set(ACCESS_WRITE) {
        expect.error_code |= page_fault::WRITE;
    }
    if set(ACCESS_FETCH) {
        expect.error_code |= page_fault::FETCH;
    }
    if !set(PDE_ACCESSED) {
        expect.ignore_pde = ACCESSED;
    }
    let nx_reserved = !set(CPU_EFER_NX);
    let pde_valid =
        set(PDE_PRESENT) && !set(PDE_BIT51 | PDE_BIT36 | PDE_BIT13) && !(set(PDE_NX) && nx_reserved);
    'walk: {
        if !pde_valid {
            expect.fault = true;
            if set(PDE_PRESENT) {
                expect.error_code |= page_fault::RESERVED;
            } else {
                expect.error_code &= !page_fault::PRESENT;
            }
            break 'walk;
        }
        let mut writable = !set(PDPTE_NO_WRITABLE) && set(PDE_WRITABLE);
        let mut user = set(PDE_USER);
        let mut executable = !set(PDE_NX);
        if set(PDE_PSE) {
            expect.pde |= permissions(expect, flags, writable, user, executable);
            break 'walk;
        }
        expect.pde |= ACCESSED;
        let pte_valid = set(PTE_PRESENT) && !set(PTE_BIT51 | PTE_BIT36) && !(set(PTE_NX) && nx_reserved);
        if !pte_valid {
            expect.fault = true;
            if set(PTE_PRESENT) {
                expect.error_code |= page_fault::RESERVED;
            } else {
                expect.error_code &= !page_fault::PRESENT;
            }
            break 'walk;
        }
        writable &= set(PTE_WRITABLE);
        user &= set(PTE_USER);
        executable &= !set(PTE_NX);
        expect.pte |= permissions(expect, flags, writable, user, executable);
    }
    if !expect.fault {
        expect.ignore_pde = 0;
    }
    if nx_reserved && !set(CPU_CR4_SMEP) {
        expect.error_code &= !page_fault::FETCH;
    }
}

/// Where a walk goes in the sandbox: the PDPT entry, the page directory it names, the PDE,
/// the page table that names, and the PTE (kvm-unit-tests' `ac_test_t` with its buddies).
#[derive(Clone, Copy)]
struct Walk {
    pdpt_index: usize,
    directory: usize,
    directory_index: usize,
    table: usize,
    table_index: usize,
}

/// The walk of the matrix.
const MATRIX_WALK: Walk = Walk {
    pdpt_index: 0,
    directory: 0,
    directory_index: 0,
    table: 0,
    table_index: 0,
};

/// The control state the accesses run under, written only when it changes (kvm-unit-tests'
/// `shadow_cr0`, `shadow_cr4`, `shadow_efer`).
struct Cpu {
    write_protect: bool,
    no_execute: bool,
    protection_keys: bool,
    smep: bool,
    pkru: u32,
    /// User mode has run: the runtime's image is a user page, so SMEP must stay clear.
    user_mode_entered: bool,
}

impl Cpu {
    fn new() -> Cpu {
        Cpu {
            write_protect: read_cr0() & Cr0Flags::WRITE_PROTECT.bits() != 0,
            no_execute: no_execute_enabled(),
            protection_keys: read_cr4() & Cr4Flags::PROTECTION_KEY_USER.bits() != 0,
            smep: read_cr4() & Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits() != 0,
            pkru: 0,
            user_mode_entered: false,
        }
    }

    fn set_write_protect(&mut self, on: bool) {
        if on != self.write_protect {
            let cr0 = Cr0Flags::from_bits_retain(read_cr0());
            let value = if on {
                cr0 | Cr0Flags::WRITE_PROTECT
            } else {
                cr0 - Cr0Flags::WRITE_PROTECT
            };
            try_write_cr0(value.bits()).expect("CR0.WP can be toggled");
            self.write_protect = on;
        }
    }

    fn set_no_execute(&mut self, on: bool) {
        if on != self.no_execute {
            try_set_no_execute_enable(on).expect("EFER.NXE can be toggled where NX is supported");
            self.no_execute = on;
        }
    }

    fn set_cr4_bit(bit: Cr4Flags, on: bool) -> Result<(), Exception> {
        let cr4 = Cr4Flags::from_bits_retain(read_cr4());
        try_write_cr4(if on { cr4 | bit } else { cr4 - bit }.bits())
    }

    /// kvm-unit-tests' `set_cr4_pke`: leaving PKE with every key but 0 restricted, so that a
    /// walk that still looked at keys would fault.
    fn set_protection_keys(&mut self, on: bool) {
        if on != self.protection_keys {
            if !on {
                self.set_pkru(0xffff_fffc);
            }
            Cpu::set_cr4_bit(Cr4Flags::PROTECTION_KEY_USER, on).expect("CR4.PKE with PKU");
            self.protection_keys = on;
        }
    }

    fn set_pkru(&mut self, value: u32) {
        if value != self.pkru {
            try_wrpkru(RightsRegister::from_bits(value)).expect("WRPKRU with CR4.PKE set");
            self.pkru = value;
        }
    }

    fn set_smep(&mut self, on: bool) -> Result<(), Exception> {
        if on != self.smep {
            assert!(
                !on || !self.user_mode_entered,
                "CR4.SMEP after user mode ran: the runtime's image is a user page now"
            );
            Cpu::set_cr4_bit(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, on)?;
            self.smep = on;
        }
        Ok(())
    }

    /// kvm-unit-tests' state changes at the start of `ac_test_do_access`.
    fn enter(&mut self, flags: u32) {
        use flag::*;
        self.set_write_protect(flags & CPU_CR0_WP != 0);
        self.set_no_execute(flags & CPU_EFER_NX != 0);
        self.set_protection_keys(flags & CPU_CR4_PKE != 0);
        self.set_smep(flags & CPU_CR4_SMEP != 0)
            .expect("CR4.SMEP with SMEP");
        if flags & CPU_CR4_PKE != 0 {
            // Key 2 (the non-leaf PDE's key, which must not count) restricted; key 1 as asked.
            let pkru =
                0x30 | if flags & PKU_WD != 0 { 8 } else { 0 } | if flags & PKU_AD != 0 { 4 } else { 0 };
            self.set_pkru(pkru);
        }
    }
}

/// The test: the sandbox, the CPU state, and what the host is.
struct Tester {
    sandbox: PagingSandbox,
    cpu: Cpu,
    /// A counter written by write accesses (kvm-unit-tests' `unique`).
    unique: u64,
    /// QEMU's TCG: reserved-bit faults have P clear (a known defect).
    tcg: bool,
    /// The matrix runs one distinct walk in `stride` (1: all).
    stride: u64,
    /// Distinct walks of the matrix visited so far, run or not.
    walk_index: u64,
}

/// What a failed check saw, formatted only when a report shows it (no allocation per walk:
/// under TCG every reserved-bit walk fails the P check).
enum Mismatch {
    /// An exception other than #PF.
    OtherException(Exception),
    /// A #PF where the access should have passed.
    UnexpectedFault { error_code: u64 },
    /// The access passed where a #PF was due.
    UnexpectedAccess { error_code: u64 },
    /// The #PF error code.
    ErrorCode { observed: u64, expected: u64 },
    /// CR2.
    FaultAddress { observed: u64, expected: u64 },
    /// The data word a read returned, or held after a write.
    Data { observed: u64, expected: u64 },
    /// The PTE after the walk.
    Pte { observed: u64, expected: u64 },
    /// The PDE after the walk.
    Pde { observed: u64, expected: u64 },
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Mismatch::OtherException(exception) => {
                write!(formatter, "{exception} instead of a #PF or the access")
            }
            Mismatch::UnexpectedFault { error_code } => {
                write!(formatter, "unexpected fault, error code {error_code:#x}")
            }
            Mismatch::UnexpectedAccess { error_code } => {
                write!(formatter, "unexpected access, #PF {error_code:#x} expected")
            }
            Mismatch::ErrorCode { observed, expected } => {
                write!(formatter, "error code {observed:#x} expected {expected:#x}")
            }
            Mismatch::FaultAddress { observed, expected } => {
                write!(formatter, "CR2 {observed:#x} expected {expected:#x}")
            }
            Mismatch::Data { observed, expected } => {
                write!(formatter, "data {observed:#x} expected {expected:#x}")
            }
            Mismatch::Pte { observed, expected } => {
                write!(formatter, "pte {observed:#x} expected {expected:#x}")
            }
            Mismatch::Pde { observed, expected } => {
                write!(formatter, "pde {observed:#x} expected {expected:#x}")
            }
        }
    }
}

/// A failed check of one combination.
struct Failure {
    flags: u32,
    what: Mismatch,
    /// Only the TCG reserved-bit defect: P missing from an RSVD error code.
    rsvd_present_missing: bool,
}

impl Tester {
    fn address(&self, walk: Walk) -> u64 {
        self.sandbox
            .address(walk.pdpt_index, walk.directory_index, walk.table_index)
    }

    /// kvm-unit-tests' `ac_test_setup_ptes`, then the expectation (`ac_set_expected_status`,
    /// with an INVLPG of the address).
    fn setup(&mut self, walk: Walk, flags: u32) -> Expectation {
        use flag::*;
        let set = |mask: u32| flags & mask != 0;
        let kept = |entry: u64| entry & (ACCESSED | DIRTY);
        let sandbox = &self.sandbox;
        let pml4e = kept(sandbox.pml4e()) | PRESENT | WRITABLE | USER;
        if sandbox.pml4e() != (pml4e | sandbox.pdpt_frame()) {
            sandbox.set_pml4e(pml4e);
        }
        let mut pdpte = kept(sandbox.pdpte(walk.pdpt_index)) | PRESENT | USER;
        if !set(PDPTE_NO_WRITABLE) {
            pdpte |= WRITABLE;
        }
        if sandbox.pdpte(walk.pdpt_index) != (pdpte | sandbox.directory_frame(walk.directory)) {
            sandbox.set_pdpte(walk.pdpt_index, walk.directory, pdpte);
        }
        let mut pde = 0;
        let target = if set(PDE_PSE) {
            if set(PKU_PKEY) {
                pde |= 1 << KEY_SHIFT;
            }
            DirectoryTarget::LargePage
        } else {
            pde |= kept(sandbox.pde(walk.directory, walk.directory_index));
            if set(PKU_PKEY) {
                // Keys in non-leaf entries are ignored: key 2 is fully restricted.
                pde |= 2 << KEY_SHIFT;
            }
            DirectoryTarget::Table(walk.table)
        };
        for (mask, bit) in [
            (PDE_PRESENT, PRESENT),
            (PDE_WRITABLE, WRITABLE),
            (PDE_USER, USER),
            (PDE_ACCESSED, ACCESSED),
            (PDE_DIRTY, DIRTY),
            (PDE_NX, NO_EXECUTE),
            (PDE_BIT51, 1 << 51),
            (PDE_BIT36, 1 << 36),
            (PDE_BIT13, 1 << 13),
        ] {
            if set(mask) {
                pde |= bit;
            }
        }
        let full = match target {
            DirectoryTarget::Table(table) => sandbox.table_frame(table) | pde,
            DirectoryTarget::LargePage => sandbox.data_frame() | pde | PAGE_SIZE_BIT,
        };
        if sandbox.pde(walk.directory, walk.directory_index) != full {
            sandbox.set_pde(walk.directory, walk.directory_index, target, pde);
        }
        if !set(PDE_PSE) {
            let mut pte = 0;
            if set(PKU_PKEY) {
                pte |= 1 << KEY_SHIFT;
            }
            for (mask, bit) in [
                (PTE_PRESENT, PRESENT),
                (PTE_WRITABLE, WRITABLE),
                (PTE_USER, USER),
                (PTE_ACCESSED, ACCESSED),
                (PTE_DIRTY, DIRTY),
                (PTE_NX, NO_EXECUTE),
                (PTE_BIT51, 1 << 51),
                (PTE_BIT36, 1 << 36),
            ] {
                if set(mask) {
                    pte |= bit;
                }
            }
            if sandbox.pte(walk.table, walk.table_index) != sandbox.data_frame() | pte {
                sandbox.set_pte(walk.table, walk.table_index, pte);
            }
        }
        self.expect(walk, flags, true)
    }

    /// kvm-unit-tests' `__ac_set_expected_status`.
    fn expect(&self, walk: Walk, flags: u32, flush: bool) -> Expectation {
        use flag::*;
        if flush {
            self.sandbox.invalidate(self.address(walk));
        }
        let mut expect = Expectation {
            pte: self.sandbox.pte(walk.table, walk.table_index),
            pde: self.sandbox.pde(walk.directory, walk.directory_index),
            error_code: page_fault::PRESENT,
            ..Expectation::default()
        };
        if flags & ACCESS_TWICE != 0 {
            emulate(&mut expect, flags & !(ACCESS_WRITE | ACCESS_FETCH | ACCESS_USER));
            expect.fault = false;
            expect.error_code = page_fault::PRESENT;
            expect.ignore_pde = 0;
        }
        emulate(&mut expect, flags);
        expect
    }

    /// kvm-unit-tests' `ac_test_do_access` and its checks; also CR2 and the written data.
    /// Returns the failures (at most one per check, the first failing check first).
    fn access(&mut self, walk: Walk, flags: u32, expect: &Expectation) -> Option<Failure> {
        use flag::*;
        let set = |mask: u32| flags & mask != 0;
        self.cpu.enter(flags);
        self.cpu.user_mode_entered |= set(ACCESS_USER);
        let address = self.address(walk);
        let sandbox = &self.sandbox;
        let emulation = if set(FEP) {
            Emulation::Forced
        } else {
            Emulation::Native
        };
        if set(ACCESS_TWICE) {
            let _ = sandbox.try_read_with(address, Privilege::Supervisor, emulation);
        }
        self.unique += 1;
        let value = self.unique;
        let before = sandbox.data(0);
        let mut read_value = None;
        let privilege = if set(ACCESS_USER) {
            Privilege::User
        } else {
            Privilege::Supervisor
        };
        let result = if set(ACCESS_FETCH) {
            sandbox.try_fetch(address, privilege)
        } else if set(ACCESS_WRITE) {
            sandbox.try_write_with(address, value, privilege, emulation)
        } else {
            sandbox.try_read_with(address, privilege, emulation).map(|read| {
                read_value = Some(read);
            })
        };
        let mut rsvd_present_missing = false;
        let failure = |what: Mismatch| {
            Some(Failure {
                flags,
                what,
                rsvd_present_missing: false,
            })
        };
        match result {
            Err(exception) if exception.vector != Vector::PF => {
                return failure(Mismatch::OtherException(exception));
            }
            Err(exception) if !expect.fault => {
                return failure(Mismatch::UnexpectedFault {
                    error_code: exception.error_code,
                });
            }
            Ok(()) if expect.fault => {
                return failure(Mismatch::UnexpectedAccess {
                    error_code: expect.error_code,
                });
            }
            Err(exception) if exception.error_code != expect.error_code => {
                let rsvd = expect.error_code & page_fault::RESERVED != 0
                    && exception.error_code == expect.error_code & !page_fault::PRESENT;
                if !rsvd {
                    return failure(Mismatch::ErrorCode {
                        observed: exception.error_code,
                        expected: expect.error_code,
                    });
                }
                // TCG's known defect (P missing beside RSVD) alone: the rest of this walk's
                // checks (CR2, data, A/D bits) still run and count as real failures.
                rsvd_present_missing = true;
            }
            _ => {}
        }
        if let Err(exception) = result
            && exception.address != address
        {
            return failure(Mismatch::FaultAddress {
                observed: exception.address,
                expected: address,
            });
        }
        if let Some(read) = read_value
            && read != before
        {
            return failure(Mismatch::Data {
                observed: read,
                expected: before,
            });
        }
        if set(ACCESS_WRITE) {
            let after = sandbox.data(0);
            let wanted = if expect.fault { before } else { value };
            if after != wanted {
                return failure(Mismatch::Data {
                    observed: after,
                    expected: wanted,
                });
            }
        }
        if !set(PDE_PSE) {
            let pte = sandbox.pte(walk.table, walk.table_index);
            if pte != expect.pte {
                return failure(Mismatch::Pte {
                    observed: pte,
                    expected: expect.pte,
                });
            }
        }
        let pde = sandbox.pde(walk.directory, walk.directory_index);
        if pde & !expect.ignore_pde != expect.pde & !expect.ignore_pde {
            return failure(Mismatch::Pde {
                observed: pde,
                expected: expect.pde,
            });
        }
        rsvd_present_missing.then_some(Failure {
            flags,
            what: Mismatch::ErrorCode {
                observed: expect.error_code & !page_fault::PRESENT,
                expected: expect.error_code,
            },
            rsvd_present_missing: true,
        })
    }

    /// Sets up `flags` on `walk`, accesses and checks: kvm-unit-tests' `ac_test_exec`.
    fn exec(&mut self, walk: Walk, flags: u32) -> Option<Failure> {
        let expect = self.setup(walk, flags);
        self.access(walk, flags, &expect)
    }
}

/// The failures of one group of combinations, summed up for its report line.
#[derive(Default)]
struct Tally {
    combinations: u64,
    walks: u64,
    failures: u64,
    first: Vec<String>,
    /// TCG's reserved-bit defect (P clear): counted apart.
    rsvd_present_missing: u64,
    /// Walks (and the combinations they stand for) the sample left out.
    left_out_walks: u64,
    left_out_combinations: u64,
}

/// The sums over all groups.
#[derive(Default)]
struct Totals {
    combinations: u64,
    walks: u64,
    left_out_combinations: u64,
    left_out_walks: u64,
}

impl Tally {
    fn record(&mut self, failure: Option<Failure>, multiplicity: u64) {
        self.walks += 1;
        self.combinations += multiplicity;
        if let Some(failure) = failure {
            if failure.rsvd_present_missing {
                self.rsvd_present_missing += multiplicity;
            } else {
                self.failures += multiplicity;
                if self.first.len() < 3 {
                    self.first
                        .push(format!("[{}: {}]", names(failure.flags), failure.what));
                }
            }
        }
    }
}

/// The flags the matrix leaves out on this CPU (kvm-unit-tests' `invalid_mask`); FEP unless
/// the run forces emulation.
fn invalid_mask(protection_keys: bool, forced_emulation: bool) -> u32 {
    use flag::*;
    let width = physical_address_bits();
    let mut invalid = 0;
    if width >= 52 {
        invalid |= PDE_BIT51 | PTE_BIT51;
    }
    if width >= 37 {
        invalid |= PDE_BIT36 | PTE_BIT36;
    }
    if !protection_keys {
        invalid |= PKU_AD | PKU_WD | PKU_PKEY | CPU_CR4_PKE;
    }
    if !forced_emulation {
        invalid |= FEP;
    }
    invalid
}

/// The PTE reserved bits `legal` may add to `outer` (whose PTE bits are clear): none when
/// `outer` has a reserved bit already (one at a time), else bits 51 and 36 where they are
/// reserved and NX while EFER.NX is clear.
fn pte_reserved_choices(outer: u32, invalid: u32) -> impl Iterator<Item = u32> {
    use flag::*;
    let nx_reserved = outer & CPU_EFER_NX == 0;
    let mut outer_reserved = PDE_BIT51 | PDE_BIT36 | PDE_BIT13;
    if nx_reserved {
        outer_reserved |= PDE_NX;
    }
    let free = outer & outer_reserved == 0;
    let candidates = [PTE_BIT51, PTE_BIT36, if nx_reserved { PTE_NX } else { 0 }];
    core::iter::once(0).chain(
        candidates
            .into_iter()
            .filter(move |&bit| free && bit != 0 && bit & invalid == 0),
    )
}

/// The PTE bits that never make a combination illegal: P, W, U, A, D, and NX while EFER.NX
/// is set.
fn pte_free_bits(outer: u32) -> u32 {
    use flag::*;
    let mut free = PTE_PRESENT | PTE_WRITABLE | PTE_USER | PTE_ACCESSED | PTE_DIRTY;
    if outer & CPU_EFER_NX != 0 {
        free |= PTE_NX;
    }
    free
}

/// How many PTE-bit variants of `outer` (legal, with its PTE bits clear) `legal` keeps: the
/// members of its set when the walk never reads the PTE.
fn pte_variants(outer: u32, invalid: u32) -> u64 {
    (1u64 << pte_free_bits(outer).count_ones()) * pte_reserved_choices(outer, invalid).count() as u64
}

/// Whether the walk of `flags` reads the PTE: the PDE is present, maps a table, and has no
/// reserved bit.
fn reads_pte(flags: u32) -> bool {
    use flag::*;
    let set = |mask: u32| flags & mask != 0;
    set(PDE_PRESENT)
        && !set(PDE_PSE)
        && !set(PDE_BIT51 | PDE_BIT36 | PDE_BIT13)
        && (!set(PDE_NX) || set(CPU_EFER_NX))
}

/// Runs one CPU-state group of the matrix and reports it.
fn run_group(tester: &mut Tester, state: u32, invalid: u32, total: &mut Totals) {
    use flag::*;
    let mut outer_bits = !(PTE_BITS | CPU_STATE | CPU_CR4_SMEP) & ((1 << COUNT) - 1) & !invalid;
    if state & CPU_CR4_SMEP != 0 {
        outer_bits &= !ACCESS_USER;
    }
    let mut tally = Tally::default();
    let start = rdtsc();
    let visit = |tester: &mut Tester, tally: &mut Tally, flags: u32, members: u64| {
        tester.walk_index += 1;
        if tester.walk_index.is_multiple_of(tester.stride) {
            let failure = tester.exec(MATRIX_WALK, flags);
            tally.record(failure, members);
        } else {
            tally.left_out_walks += 1;
            tally.left_out_combinations += members;
        }
    };
    let mut outer = 0u32;
    loop {
        let flags = state | outer;
        if allowed(flags) {
            if reads_pte(flags) {
                let free = pte_free_bits(flags);
                let walks = pte_variants(flags, invalid);
                if (tester.walk_index + walks) / tester.stride == tester.walk_index / tester.stride {
                    // No sampled walk among these: count them without visiting each.
                    tester.walk_index += walks;
                    tally.left_out_walks += walks;
                    tally.left_out_combinations += walks;
                } else {
                    for reserved in pte_reserved_choices(flags, invalid) {
                        let mut pte = 0u32;
                        loop {
                            visit(tester, &mut tally, flags | reserved | pte, 1);
                            if pte == free {
                                break;
                            }
                            pte = ((pte | !free) + 1) & free;
                        }
                    }
                }
            } else {
                // The walk stops at the PDE; its PTE (when the PDE names a table) is the most
                // permissive member of the set, so that a host that still walked to it (a stale
                // PDE) would complete the access or report other error bits, not hide behind
                // a not-present PTE.
                let pte = if flags & PDE_PSE == 0 {
                    PTE_PRESENT | PTE_WRITABLE | PTE_USER | PTE_ACCESSED | PTE_DIRTY
                } else {
                    0
                };
                visit(tester, &mut tally, flags | pte, pte_variants(flags, invalid));
            }
        }
        if outer == outer_bits {
            break;
        }
        outer = ((outer | !outer_bits) + 1) & outer_bits;
    }
    total.combinations += tally.combinations;
    total.walks += tally.walks;
    total.left_out_combinations += tally.left_out_combinations;
    total.left_out_walks += tally.left_out_walks;
    let label = group_label(state);
    let milliseconds = (rdtsc() - start) / (timer::frequency() / 1000).max(1);
    let sample = if tally.left_out_walks == 0 {
        format!(", {milliseconds} ms")
    } else {
        format!(
            " (sampled 1 walk in {}: {} combinations in {} walks not run), {milliseconds} ms",
            tester.stride, tally.left_out_combinations, tally.left_out_walks
        )
    };
    if tally.walks == 0 {
        report_skip!(
            "4-level walks with {label}: no walk ran ({} combinations left out by the sample){sample}",
            tally.left_out_combinations
        );
    } else if tally.failures == 0 {
        report!(
            true,
            "4-level walks with {label}: {} combinations ({} walks) as expected{sample}",
            tally.combinations,
            tally.walks
        );
    } else {
        report!(
            false,
            "4-level walks with {label}: {} of {} combinations ({} walks) failed, first {}{sample}",
            tally.failures,
            tally.combinations,
            tally.walks,
            tally.first.join(" ")
        );
    }
    if tally.rsvd_present_missing > 0 || tester.tcg {
        known_failure(tester.tcg, RSVD_REASON, || {
            report!(
                tally.rsvd_present_missing == 0,
                "4-level walks with {label}: reserved-bit faults have P set in the error code ({} combinations without it)",
                tally.rsvd_present_missing
            )
        });
    }
}

/// A group's name: its CPU state, every bit spelled out.
fn group_label(state: u32) -> String {
    use flag::*;
    let bit = |mask: u32| u8::from(state & mask != 0);
    let mut label = format!(
        "efer.nx={} cr0.wp={} cr4.pke={}",
        bit(CPU_EFER_NX),
        bit(CPU_CR0_WP),
        bit(CPU_CR4_PKE)
    );
    if state & CPU_CR4_PKE != 0 {
        label.push_str(&format!(" pkru.ad={} pkru.wd={}", bit(PKU_AD), bit(PKU_WD)));
    }
    if state & CPU_CR4_SMEP != 0 {
        label.push_str(" cr4.smep=1 (CPL-0 accesses only; beyond kvm-unit-tests)");
    }
    label
}

/// One walk in this many runs under kvm_pvm by default: a prime, so that the sample mixes
/// the flags instead of following their bit pattern.
const KVM_PVM_STRIDE: u64 = 89;

/// Why reserved-bit faults lack P under TCG.
const RSVD_REASON: &str = "QEMU's TCG leaves P clear in the error code of a reserved-bit #PF \
     (target/i386/tcg/system/excp_helper.c, mmu_translate: do_fault_rsvd sets RSVD alone)";

/// Runs one of kvm-unit-tests' special cases: `steps` of (walk, flags, set up entries?)
/// in order; reports whether all behaved.
fn special(tester: &mut Tester, name: &str, steps: &[(Walk, u32, bool)]) {
    let mut expectations: Vec<Expectation> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut rsvd = false;
    for &(walk, flags, setup) in steps {
        let expect = if setup {
            tester.setup(walk, flags)
        } else {
            tester.expect(walk, flags, true)
        };
        expectations.push(expect);
        match tester.access(walk, flags, &expect) {
            // TCG's known defect alone (the walk's other checks passed): the next steps run.
            Some(failure) if failure.rsvd_present_missing => {
                rsvd = true;
                failures.push(format!("[{}: {}]", names(failure.flags), failure.what));
            }
            Some(failure) => {
                rsvd = false;
                failures.push(format!("[{}: {}]", names(failure.flags), failure.what));
                break;
            }
            None => {}
        }
    }
    // The known failure covers the line only when every failure is the P bit of an RSVD fault.
    known_failure(tester.tcg && rsvd, RSVD_REASON, || {
        report!(
            failures.is_empty(),
            "{name}: {} accesses as expected{}",
            steps.len(),
            if failures.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failures.join(" "))
            }
        )
    });
}

fn main(args: &[&str]) {
    use flag::*;
    let pku = Feature::Pku.supported();
    let smep = Feature::Smep.supported();
    let nx = Feature::Nx.supported();
    let tcg = is_tcg();
    report_info!(
        "PKU {pku}, SMEP {smep}, NX {nx}, MAXPHYADDR {}, CR4 {:#x}",
        physical_address_bits(),
        read_cr4()
    );
    if !nx {
        report_skip!("the CPU has no NX: EFER.NXE cannot be toggled as the matrix needs");
        return;
    }
    // kvm-unit-tests' access_fep: every combination again with its data accesses behind KVM's
    // forced emulation prefix, where the host honours it (`is_fep_available`).
    let forced_emulation = args.contains(&"force_emulation");
    if forced_emulation {
        if let Err(exception) = try_forced_emulation_nop() {
            report_skip!(
                "forced emulation prefix (FEP) not available: UD2 \"kvm\" NOP raised {exception} ({})",
                if tcg {
                    "QEMU's TCG has no forced emulation"
                } else {
                    "KVM honours the prefix only with its kvm module's force_emulation_prefix parameter set"
                }
            );
            return;
        }
        report_info!(
            "forced emulation prefix available: each combination also runs with its reads and writes emulated"
        );
    }
    // kvm-unit-tests' access-reduced-maxphyaddr: the run asks QEMU for a smaller physical
    // address width, whose reserved bits (from MAXPHYADDR up, bit 36 among them) must fault.
    if let Some(wanted) = vmunit::args::value(args, "maxphyaddr").and_then(|value| value.parse::<u32>().ok())
    {
        let width = physical_address_bits();
        report!(
            width == wanted,
            "CPUID.80000008H reports MAXPHYADDR {width} (the run asks for {wanted}): bits {wanted}..51 are reserved in every entry"
        );
        if args.contains(&"maxphyaddr_only") {
            return;
        }
    }
    // Under kvm_pvm a walk costs milliseconds (its ring-0 instructions are emulated, and the
    // page-table writes, INVLPG and faults are VM exits): the default there is a sample.
    let stride = match vmunit::args::value(args, "sample").and_then(|value| value.parse::<u64>().ok()) {
        Some(stride) => stride.max(1),
        None if instruction_emulating_kvm() => KVM_PVM_STRIDE,
        None => 1,
    };
    let mut tester = Tester {
        sandbox: PagingSandbox::new(0x124),
        cpu: Cpu::new(),
        unique: 42,
        tcg,
        stride,
        walk_index: 0,
    };
    if args.contains(&"reserved_bit_error_code") {
        // The reproducer: one present PTE with reserved bit 51 (or the highest reserved bit).
        let flags = PDE_PRESENT | PTE_PRESENT | PTE_BIT51 | CPU_EFER_NX | CPU_CR0_WP;
        let failure = tester.exec(MATRIX_WALK, flags);
        report!(
            failure.is_none(),
            "a read through a present PTE with reserved bit 51 raises #PF with P and RSVD{}",
            failure
                .map(|failure| format!(": {}", failure.what))
                .unwrap_or_default()
        );
        return;
    }

    // CR4 bits the CPU lacks must be refused (kvm-unit-tests' checks before the matrix).
    if !pku {
        let refused = Cpu::set_cr4_bit(Cr4Flags::PROTECTION_KEY_USER, true);
        if refused.is_ok() {
            let _ = Cpu::set_cr4_bit(Cr4Flags::PROTECTION_KEY_USER, false);
        }
        report_kfail!(
            instruction_emulating_kvm(),
            matches!(refused, Err(e) if e.vector == Vector::GP),
            "CR4.PKE without PKU raises #GP (got {refused:x?}; kvm_pvm takes it: reproduce-cr4-pke-unadvertised); protection-key combinations left out"
        );
    }
    if !smep {
        let refused = tester.cpu.set_smep(true);
        if refused.is_ok() {
            let _ = tester.cpu.set_smep(false);
        }
        report!(
            matches!(refused, Err(e) if e.vector == Vector::GP),
            "CR4.SMEP without SMEP raises #GP (got {refused:x?})"
        );
    }
    if Feature::La57.supported() {
        // kvm-unit-tests: toggling LA57 in 64-bit mode is illegal, alone and with PSE (which
        // forces a VM exit on KVM, which does not intercept LA57 itself).
        for (extra, what) in [
            (Cr4Flags::empty(), "CR4.LA57"),
            (Cr4Flags::PAGE_SIZE_EXTENSION, "CR4.LA57 and CR4.PSE"),
        ] {
            let value = read_cr4() ^ (CR4_LA57 | extra).bits();
            #[allow(unsafe_code)]
            // SAFETY: in IA-32e mode the CPU must refuse a change of CR4.LA57 with #GP(0) (SDM
            // Vol. 2, MOV to CR4), which is caught; PAE is kept. A CPU that took it would
            // switch paging modes under the runtime: the test would crash, not pass.
            let result = unsafe { try_write_cr4_unrestricted(value) };
            report!(
                matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0),
                "toggling {what} in 64-bit mode raises #GP(0) (got {result:x?})"
            );
        }
    }
    report_skip!(
        "5-level paging: the runtime runs with 4-level paging (CR4.LA57 clear), LA57 cannot be toggled in 64-bit mode"
    );

    // SMEP first: once user mode has run, the runtime's image is a user page, which SMEP
    // would forbid the kernel to execute.
    if smep {
        let walk = Walk {
            table_index: 1,
            directory_index: 48,
            ..MATRIX_WALK
        };
        let base = PDE_PRESENT | PTE_PRESENT | PDE_USER | PTE_USER | PDE_ACCESSED | PTE_ACCESSED;
        let smep_flags = base | CPU_CR4_SMEP | CPU_CR0_WP;
        special(
            &mut tester,
            "check_smep_andnot_wp (CR4.SMEP, a CPL-0 write to a read-only user page, then a fetch)",
            &[
                (walk, smep_flags | ACCESS_WRITE, true),
                (walk, smep_flags | ACCESS_FETCH, false),
            ],
        );
    }

    let invalid = invalid_mask(pku, forced_emulation);
    let mut total = Totals::default();
    let mut smep_total = Totals::default();
    let start = rdtsc();
    let states: Vec<u32> = {
        let mut states = Vec::new();
        for state in 0..32u32 {
            let bits = [CPU_EFER_NX, CPU_CR0_WP, CPU_CR4_PKE, PKU_AD, PKU_WD];
            let flags = bits
                .iter()
                .enumerate()
                .filter(|(index, _)| state & (1 << index) != 0)
                .fold(0, |flags, (_, bit)| flags | bit);
            if flags & invalid == 0 && legal(flags) {
                states.push(flags);
            }
        }
        if smep {
            // SMEP groups first: user mode must not have run yet. Only with CR4.PKE clear,
            // to keep the run short: keys govern data accesses, SMEP fetches.
            let smep_states: Vec<u32> = [0, CPU_EFER_NX, CPU_CR0_WP, CPU_EFER_NX | CPU_CR0_WP]
                .into_iter()
                .map(|flags| flags | CPU_CR4_SMEP)
                .collect();
            states.splice(0..0, smep_states);
        }
        states
    };
    let only = vmunit::args::value(args, "groups").and_then(|value| value.parse::<usize>().ok());
    for (index, &state) in states.iter().enumerate() {
        if only.is_some_and(|limit| index >= limit) {
            report_skip!(
                "4-level walks with {}: left out (groups={})",
                group_label(state),
                only.unwrap_or_default()
            );
            continue;
        }
        if state & CPU_CR4_SMEP != 0 {
            run_group(&mut tester, state, invalid, &mut smep_total);
        } else {
            run_group(&mut tester, state, invalid, &mut total);
        }
    }
    let milliseconds = (rdtsc() - start) / (timer::frequency() / 1000).max(1);
    report_info!(
        "{} of kvm-unit-tests' combinations checked with {} walks and accesses in {milliseconds} ms",
        total.combinations,
        total.walks
    );
    if smep {
        report_info!(
            "beyond kvm-unit-tests: {} CR4.SMEP combinations checked with {} walks and accesses",
            smep_total.combinations,
            smep_total.walks
        );
    }
    if total.left_out_walks + smep_total.left_out_walks > 0 {
        report_skip!(
            "{} combinations ({} walks) left out: 1 walk in {} sampled{}; `sample=1` runs them all",
            total.left_out_combinations + smep_total.left_out_combinations,
            total.left_out_walks + smep_total.left_out_walks,
            tester.stride,
            if instruction_emulating_kvm() {
                " under kvm_pvm, where a walk costs milliseconds"
            } else {
                ""
            }
        );
    }

    // The special cases (kvm-unit-tests' `ac_test_cases`).
    let first = Walk {
        pdpt_index: 1,
        directory: 0,
        directory_index: 0,
        table: 0,
        table_index: 0,
    };
    let second = Walk {
        pdpt_index: 2,
        directory: 1,
        ..first
    };
    let large = CPU_CR0_WP | PDE_PSE | PDE_PRESENT;
    special(
        &mut tester,
        "corrupt_hugepage_trigger (two large PDEs on one frame, read-only and writable)",
        &[
            (second, large, true),
            (first, large | PDE_WRITABLE, true),
            (first, large | PDE_WRITABLE | ACCESS_WRITE, false),
            (second, large | ACCESS_WRITE, false),
        ],
    );
    let prefetch_first = Walk {
        pdpt_index: 3,
        directory_index: 5,
        table_index: 1,
        ..MATRIX_WALK
    };
    let prefetch_second = Walk {
        table_index: 3,
        ..prefetch_first
    };
    special(
        &mut tester,
        "check_pfec_on_prefetch_pte (a neighbour PTE with NX while EFER.NX is clear)",
        &[
            (prefetch_first, PDE_PRESENT | PTE_PRESENT, true),
            (prefetch_second, PDE_PRESENT | PTE_PRESENT | PTE_NX, true),
        ],
    );
    let nowp = PDE_PRESENT | PDE_PSE;
    special(
        &mut tester,
        "check_large_pte_dirty_for_nowp (CR0.WP=0 writes through two read-only large PDEs set D in each)",
        &[
            (second, nowp, true),
            (first, nowp | ACCESS_WRITE, true),
            (second, nowp | ACCESS_WRITE, false),
        ],
    );
    let toggle = Walk {
        pdpt_index: 4,
        directory_index: 16,
        table_index: 7,
        ..MATRIX_WALK
    };
    let toggle_flags = PDE_PRESENT | PDE_ACCESSED | PTE_PRESENT | PTE_ACCESSED | ACCESS_WRITE;
    let mut failures = Vec::new();
    tester.setup(toggle, toggle_flags);
    let routes: &[u32] = if forced_emulation { &[0, FEP] } else { &[0] };
    for &route in routes {
        for write_protect in [false, true] {
            let flags = toggle_flags | route | if write_protect { CPU_CR0_WP } else { 0 };
            let expect = tester.expect(toggle, flags, false);
            // The inverse CR0.WP, and EFER.NX toggled, before the access: no INVLPG.
            tester.cpu.set_write_protect(!write_protect);
            tester.cpu.set_no_execute(true);
            tester.cpu.set_no_execute(false);
            if let Some(failure) = tester.access(toggle, flags, &expect) {
                failures.push(format!("[{}: {}]", names(flags), failure.what));
            }
        }
    }
    report!(
        failures.is_empty(),
        "check_toggle_cr0_wp: a CPL-0 write to a read-only page succeeds with CR0.WP=0 and faults with CR0.WP=1, without INVLPG{}{}",
        if forced_emulation { ", also emulated" } else { "" },
        if failures.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failures.join(" "))
        }
    );
    // One page directory under two PDPTEs, one of them read-only (kvm-unit-tests'
    // check_effective_sp_permissions).
    let user = PDE_PRESENT
        | PTE_PRESENT
        | PDE_USER
        | PTE_USER
        | PDE_ACCESSED
        | PTE_ACCESSED
        | PTE_WRITABLE
        | ACCESS_USER;
    let walk1 = Walk {
        pdpt_index: 6,
        directory: 1,
        directory_index: 0,
        table: 0,
        table_index: 0,
    };
    let walk2 = Walk {
        directory_index: 1,
        table: 1,
        ..walk1
    };
    let walk3 = Walk {
        pdpt_index: 7,
        ..walk1
    };
    let walk4 = Walk {
        pdpt_index: 7,
        ..walk2
    };
    let writer = user | PDE_WRITABLE | PTE_DIRTY | ACCESS_WRITE;
    special(
        &mut tester,
        "check_effective_sp_permissions (one page directory under a writable and a read-only PDPTE)",
        &[
            (walk1, user, true),
            (walk2, writer, true),
            (walk3, user | PDPTE_NO_WRITABLE, true),
            (walk4, writer | PDPTE_NO_WRITABLE, true),
        ],
    );

    // Back to the runtime's state: CR0.WP and EFER.NX set, CR4.PKE as it was.
    tester.cpu.set_protection_keys(false);
    tester.cpu.set_write_protect(true);
    tester.cpu.set_no_execute(true);
}
