//! Safe wrappers for the x86 instructions tests exercise. Those named `try_<op>` run under
//! [`catch_exception`] and return the exception instead of ending the test (those that also
//! report the instruction's address return an [`Attempt`]); the plain names never catch, so a
//! fault goes to the enclosing `catch_exception` or `run_in_user_mode`, or ends the test.
//!
//! These are deliberate hardware probes: they execute the raw instruction (no compiler
//! checks) so that a test can observe what the CPU, or the hypervisor emulating it, does.

use core::arch::asm;

use super::cpuid::Feature;
use super::exceptions::{Exception, catch_exception};

pub use crate::catch::Attempt;

/// RDTSC.
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDTSC reads the time-stamp counter (CR4.TSD is never set by the runtime).
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// RDTSCP: the TSC and IA32_TSC_AUX, or #UD where the CPU lacks it.
pub fn try_rdtscp() -> Result<(u64, u32), Exception> {
    catch_exception(|| {
        let (low, high, auxiliary): (u32, u32, u32);
        // SAFETY: RDTSCP only reads; #UD is caught.
        unsafe {
            asm!("rdtscp", out("eax") low, out("edx") high, out("ecx") auxiliary, options(nomem, nostack))
        };
        ((u64::from(high) << 32) | u64::from(low), auxiliary)
    })
}

/// RDPID: IA32_TSC_AUX, or #UD where the CPU lacks it.
pub fn try_rdpid() -> Result<u64, Exception> {
    catch_exception(|| {
        let value: u64;
        // SAFETY: RDPID only reads; #UD is caught.
        unsafe { asm!("rdpid {}", out(reg) value, options(nomem, nostack)) };
        value
    })
}

/// RDRAND: (value, carry flag: whether the value is valid), or #UD.
pub fn try_rdrand() -> Result<(u64, bool), Exception> {
    catch_exception(|| {
        let (value, valid): (u64, u8);
        // SAFETY: RDRAND only writes its register and the flags; #UD is caught.
        unsafe { asm!("rdrand {}", "setc {}", out(reg) value, out(reg_byte) valid, options(nomem, nostack)) };
        (value, valid != 0)
    })
}

/// RDSEED: (value, carry flag), or #UD.
pub fn try_rdseed() -> Result<(u64, bool), Exception> {
    catch_exception(|| {
        let (value, valid): (u64, u8);
        // SAFETY: RDSEED only writes its register and the flags; #UD is caught.
        unsafe { asm!("rdseed {}", "setc {}", out(reg) value, out(reg_byte) valid, options(nomem, nostack)) };
        (value, valid != 0)
    })
}

/// KVM's forced emulation prefix (kvm-unit-tests' `KVM_FEP`), as assembly text: UD2 followed
/// by the bytes "kvm". With the kvm module's `force_emulation_prefix` parameter set, KVM skips
/// it and runs the next instruction through its instruction emulator; anywhere else (TCG, KVM
/// without the parameter, other hypervisors) it is a #UD at the UD2.
macro_rules! forced_emulation_prefix {
    () => {
        "ud2\n.byte 0x6b, 0x76, 0x6d\n"
    };
}
pub(crate) use forced_emulation_prefix;

/// A NOP behind KVM's forced emulation prefix (kvm-unit-tests' `is_fep_available`): `Ok` where
/// the host emulates prefixed instructions, else the exception (#UD at the prefix's UD2).
pub fn try_forced_emulation_nop() -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: the prefix is a UD2 (caught) or, under KVM with forced emulation, makes the
        // NOP run through the emulator; either way no state Rust relies on changes.
        unsafe { asm!(forced_emulation_prefix!(), "nop", options(nomem, nostack)) };
    })
}

/// Reads the 64-bit word at `address` without catching a fault, as [`read`], through KVM's
/// instruction emulator: the load carries the forced emulation prefix. Where the prefix is not
/// honoured (see [`try_forced_emulation_nop`]) it raises #UD instead.
#[inline]
pub fn read_emulated(address: u64) -> u64 {
    let value: u64;
    // SAFETY: as in `read`; the prefix raises #UD where it is not honoured, which the
    // enclosing catch receives like a fault of the load.
    unsafe {
        asm!(forced_emulation_prefix!(), "mov {value}, qword ptr [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly))
    };
    value
}

/// Reads the 64-bit word at `address`, or the exception (#PF, #GP for non-canonical).
#[inline]
pub fn try_read(address: u64) -> Result<u64, Exception> {
    catch_exception(|| {
        let value: u64;
        // SAFETY: the load is outside Rust's memory model (inline assembly); any fault is
        // caught and becomes the result.
        unsafe {
            asm!("mov {value}, qword ptr [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly))
        };
        value
    })
}

/// Writes the 64-bit word `value` at `address`, or returns the exception.
///
/// # Safety
/// `address` must not hold memory that Rust code owns (use a `TestPage`).
pub unsafe fn try_write(address: u64, value: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: the caller guarantees the target is not Rust-owned memory; faults are caught.
        unsafe {
            asm!("mov qword ptr [{address}], {value}", address = in(reg) address, value = in(reg) value, options(nostack))
        };
    })
}

/// Calls the code at `address`, or returns the exception its fetch or execution raised.
///
/// # Safety
/// The code at `address` must follow the C ABI and return.
pub unsafe fn try_call(address: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: the caller guarantees the code is a C-ABI function that returns.
        unsafe { asm!("call {address}", address = in(reg) address, clobber_abi("C")) };
    })
}

/// RET: the code [`try_call_return`] stores.
pub const RETURN: [u8; 1] = [0xc3];

/// Stores RET at `offset` in `page` (through the identity map, whatever the page's mapping)
/// and calls it through the page's mapping: `Ok`, or the exception the fetch raised (#PF for
/// a non-executable page, or a user page under CR4.SMEP, ...).
pub fn try_call_return(page: &crate::memory::TestPage, offset: u64) -> Result<(), Exception> {
    page.store_code(offset, &RETURN);
    // SAFETY: the code at `offset` is RET, just stored: it follows the C ABI and returns.
    unsafe { page.call(offset) }
}

/// [`try_call_return`] at CPL 3: stores RET at `offset` in `page`, then calls it from user
/// mode (`run_in_user_mode`): `Ok`, or the exception the fetch raised (#PF for a supervisor
/// or non-executable page, ...).
pub fn try_call_return_in_user_mode(page: &crate::memory::TestPage, offset: u64) -> Result<(), Exception> {
    page.store_code(offset, &RETURN);
    let address = page.address() + offset;
    super::run_in_user_mode(|| {
        // SAFETY: the code at `address` is RET, just stored: it follows the C ABI and
        // returns; a fault ends the user-mode run.
        unsafe { asm!("call {address}", address = in(reg) address, clobber_abi("C")) };
    })
}

/// Writes the 64-bit word `value` at `offset` in `page` through the page's mapping without
/// catching a fault: for user mode (`run_in_user_mode`, which catches instead), as [`read`]
/// reads. In the kernel, a fault here is an unexpected exception that ends the test.
///
/// # Panics
/// When the word does not lie inside the page.
pub fn write_test_page(page: &crate::memory::TestPage, offset: u64, value: u64) {
    assert!(
        offset + 8 <= crate::memory::PAGE_SIZE,
        "offset {offset} is outside the page"
    );
    let address = page.address() + offset;
    // SAFETY: the word lies in a TestPage, which no Rust object occupies; a fault goes to the
    // enclosing `run_in_user_mode`/`catch_exception`, or ends the test.
    unsafe {
        asm!("mov qword ptr [{address}], {value}", address = in(reg) address, value = in(reg) value, options(nostack))
    };
}

/// Executes UD2; returns the exception (#UD) and the instruction's address.
pub fn try_ud2() -> Attempt<()> {
    let mut address = 0u64;
    let slot = &raw mut address;
    let result = catch_exception(|| {
        // SAFETY: the address is stored through `slot` before UD2 raises #UD (register
        // outputs of an asm block that faults are never written back); #UD is caught.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: ud2", slot = in(reg) slot, scratch = out(reg) _, options(nostack))
        };
    });
    Attempt { result, address }
}

/// Executes UD2 without catching the #UD: it goes to the enclosing `catch_exception`, or, as
/// an unexpected exception, ends the test.
pub fn raise_invalid_opcode() {
    // SAFETY: the #UD is either caught by an enclosing catch (which abandons this frame) or
    // ends the test; no Rust state is left inconsistent.
    unsafe { asm!("ud2", options(nomem, nostack)) };
}

/// Executes INT3; returns the address of the instruction after it (where a #BP handler
/// that returns resumes).
pub fn int3() -> u64 {
    let after: u64;
    // SAFETY: INT3 raises #BP, a trap: the runtime's handler either records and returns
    // (trap_exceptions), recovers (catch_exception) or aborts the test.
    unsafe { asm!("int3", "2: lea {after}, [rip + 2b]", after = out(reg) after, options(nomem, nostack)) };
    after
}

/// Executes INT1 (ICEBP, opcode F1); returns the address of the instruction after it.
pub fn int1() -> u64 {
    let after: u64;
    // SAFETY: INT1 raises #DB as a trap; see `int3`.
    unsafe {
        asm!(".byte 0xf1", "2: lea {after}, [rip + 2b]", after = out(reg) after, options(nomem, nostack))
    };
    after
}

/// Executes `INT n` for a software interrupt `vector` known at compile time.
pub fn software_interrupt<const VECTOR: u8>() -> u64 {
    let after: u64;
    // SAFETY: INT n enters the IDT gate of `VECTOR`, which the runtime handles like INT3.
    unsafe {
        asm!("int {vector}", "2: lea {after}, [rip + 2b]", vector = const VECTOR, after = out(reg) after, options(nomem, nostack))
    };
    after
}

/// DIV of the 128-bit `high:low` by `divisor` with the raw instruction: #DE for a zero
/// divisor or a quotient that does not fit in 64 bits. Returns (quotient, remainder).
pub fn try_divide(high: u64, low: u64, divisor: u64) -> Result<(u64, u64), Exception> {
    catch_exception(|| {
        let (quotient, remainder): (u64, u64);
        // SAFETY: DIV only touches RAX/RDX and the flags; #DE is caught.
        unsafe {
            asm!("div {divisor}", divisor = in(reg) divisor, inout("rax") low => quotient,
                 inout("rdx") high => remainder, options(nomem, nostack))
        };
        (quotient, remainder)
    })
}

// DR6 without a fault check, here too for the tests that probe with the instructions above.
pub use super::debug::{read_dr6, write_dr6};

/// Single-steps two NOPs with RFLAGS.TF and returns the addresses right after each of them,
/// where the #DB traps are expected. TF is set by POPFQ, so the first trap follows the
/// first NOP; the steps that turn TF off again trap as well (three more #DB).
pub fn single_step_two_nops() -> [u64; 2] {
    let (first, second): (u64, u64);
    // SAFETY: TF makes each instruction trap with #DB; the runtime's handler records and
    // returns (`trap_exceptions`). TF is cleared before the block ends.
    unsafe {
        asm!(
            "lea {first}, [rip + 3f]",
            "lea {second}, [rip + 4f]",
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "nop",
            "3: nop",
            "4: pushfq",
            "and qword ptr [rsp], ~0x100",
            "popfq",
            first = out(reg) first,
            second = out(reg) second,
        )
    };
    [first, second]
}

/// RDTSC fenced by LFENCE on both sides: the read happens after every earlier instruction
/// has completed and before any later one starts, so it can be ordered against RDTSCP and
/// against other reads (plain RDTSC may execute early or late).
pub fn rdtsc_ordered() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: LFENCE only orders execution and RDTSC reads the time-stamp counter
    // (CR4.TSD is never set by the runtime); neither touches memory or the stack.
    unsafe { asm!("lfence", "rdtsc", "lfence", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// XGETBV of extended control register `index`: XCR0 for 0, or #UD (CR4.OSXSAVE clear) or
/// #GP (an unknown register).
///
/// A hypervisor probe: under this project's software KVM (kvm_pvm) it stops the VM with a
/// "KVM internal error" instead of running.
pub fn try_xgetbv(index: u32) -> Result<u64, Exception> {
    catch_exception(|| {
        let (low, high): (u32, u32);
        // SAFETY: XGETBV only reads an extended control register; faults are caught.
        unsafe { asm!("xgetbv", in("ecx") index, out("eax") low, out("edx") high, options(nomem, nostack)) };
        (u64::from(high) << 32) | u64::from(low)
    })
}

/// XSETBV of `value` into extended control register `index`, or the exception (#GP for an
/// invalid XCR0 value, #UD with CR4.OSXSAVE clear). Setting state components the runtime
/// never uses (SSE, AVX) is harmless: this soft-float code saves no vector state.
pub fn try_xsetbv(index: u32, value: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: XSETBV only changes which state components XSAVE manages; faults are caught.
        unsafe {
            asm!("xsetbv", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32,
                 options(nomem, nostack))
        };
    })
}

/// XGETBV with all 64 bits of RCX given: the processor ignores RCX[63:32] (SDM Vol. 2,
/// XGETBV), so `rcx` with XCR0's index (0) in its low half reads XCR0.
pub fn try_xgetbv_rcx(rcx: u64) -> Result<u64, Exception> {
    catch_exception(|| {
        let (low, high): (u32, u32);
        // SAFETY: as `try_xgetbv`.
        unsafe { asm!("xgetbv", in("rcx") rcx, out("eax") low, out("edx") high, options(nomem, nostack)) };
        (u64::from(high) << 32) | u64::from(low)
    })
}

/// XSETBV with all 64 bits of RCX given (RCX[63:32] are ignored), as [`try_xsetbv`].
pub fn try_xsetbv_rcx(rcx: u64, value: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: as `try_xsetbv`.
        unsafe {
            asm!("xsetbv", in("rcx") rcx, in("eax") value as u32, in("edx") (value >> 32) as u32,
                 options(nomem, nostack))
        };
    })
}

/// Clears XMM0 with XORPS: an SSE instruction (CR4.OSFXSR must be set, or it raises #UD).
///
/// A hypervisor probe: this soft-float code never uses XMM registers, and under kvm_pvm an
/// SSE instruction stops the VM with a "KVM internal error".
pub fn try_sse_clear_xmm0() -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: XORPS only writes XMM0, which no Rust code on this soft-float target uses.
        unsafe { asm!("xorps xmm0, xmm0", out("xmm0") _, options(nomem, nostack)) };
    })
}

/// CLWB of the cache line holding `address` (write it back, keep it cached), or #UD where the
/// CPU lacks CLWB (CPUID.7.0:EBX[24]).
pub fn try_clwb(address: *const u8) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: CLWB changes no architectural state visible to Rust: the line keeps its
        // contents; only its write-back to memory is forced.
        unsafe { asm!("clwb [{}]", in(reg) address, options(nostack, readonly)) };
    })
}

/// Reads the 64-bit word at `address` without catching a fault: for code that runs where
/// `catch_exception` cannot (user mode, under `run_in_user_mode`, which catches instead). In
/// the kernel, a fault here is an unexpected exception that ends the test.
#[inline]
pub fn read(address: u64) -> u64 {
    let value: u64;
    // SAFETY: the load is outside Rust's memory model (inline assembly); a fault is caught by
    // the enclosing `run_in_user_mode`/`catch_exception`, or ends the test.
    unsafe {
        asm!("mov {value}, qword ptr [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly))
    };
    value
}

/// Like [`read`], with RFLAGS.AC set around the load: at CPL 3 with CR0.AM set, a
/// misaligned `address` raises #AC(0).
pub fn read_with_alignment_check(address: u64) -> u64 {
    let value: u64;
    // SAFETY: as for `read`; AC is set only for the one load and cleared after it
    // (POPFQ may change AC at any privilege level).
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], 0x40000",
            "popfq",
            "mov {value}, qword ptr [{address}]",
            "pushfq",
            "and qword ptr [rsp], ~0x40000",
            "popfq",
            address = in(reg) address,
            value = out(reg) value,
            options(readonly)
        )
    };
    value
}

/// SGDT: the GDTR (limit, base). Raises #GP(0) at CPL 3 with CR4.UMIP set.
pub fn store_gdtr() -> (u16, u64) {
    let mut table = [0u8; 10];
    // SAFETY: SGDT writes 10 bytes into `table`, which is ours and 10 bytes long.
    unsafe { asm!("sgdt [{}]", in(reg) table.as_mut_ptr(), options(nostack)) };
    (
        u16::from_le_bytes([table[0], table[1]]),
        u64::from_le_bytes(table[2..].try_into().unwrap_or([0; 8])),
    )
}

/// SIDT: the IDTR (limit, base). Raises #GP(0) at CPL 3 with CR4.UMIP set.
pub fn store_idtr() -> (u16, u64) {
    let mut table = [0u8; 10];
    // SAFETY: SIDT writes 10 bytes into `table`, which is ours and 10 bytes long.
    unsafe { asm!("sidt [{}]", in(reg) table.as_mut_ptr(), options(nostack)) };
    (
        u16::from_le_bytes([table[0], table[1]]),
        u64::from_le_bytes(table[2..].try_into().unwrap_or([0; 8])),
    )
}

/// SLDT: the LDTR selector. Raises #GP(0) at CPL 3 with CR4.UMIP set.
pub fn store_ldtr() -> u16 {
    let selector: u16;
    // SAFETY: SLDT only writes its register operand.
    unsafe { asm!("sldt {:x}", out(reg) selector, options(nomem, nostack, preserves_flags)) };
    selector
}

/// STR: the task register's selector. Raises #GP(0) at CPL 3 with CR4.UMIP set.
pub fn store_task_register() -> u16 {
    let selector: u16;
    // SAFETY: STR only writes its register operand.
    unsafe { asm!("str {:x}", out(reg) selector, options(nomem, nostack, preserves_flags)) };
    selector
}

/// SMSW: the low bits of CR0. Raises #GP(0) at CPL 3 with CR4.UMIP set.
pub fn store_machine_status() -> u64 {
    let status: u64;
    // SAFETY: SMSW only writes its register operand.
    unsafe { asm!("smsw {}", out(reg) status, options(nomem, nostack, preserves_flags)) };
    status
}

/// INVPCID of `kind` (0: one address, 1: one PCID, 2: all including global, 3: all but
/// global) for `pcid` and `address`, or the exception (#UD without INVPCID, #GP for a bad
/// kind or a non-zero PCID while CR4.PCIDE is clear).
pub fn try_invpcid(kind: u64, pcid: u64, address: u64) -> Result<(), Exception> {
    let descriptor: [u64; 2] = [pcid, address];
    catch_exception(|| {
        // SAFETY: INVPCID only reads its 16-byte descriptor, which lives on this stack frame,
        // and invalidates TLB entries; a fault is caught.
        unsafe {
            asm!("invpcid {}, [{}]", in(reg) kind, in(reg) descriptor.as_ptr(), options(nostack, readonly))
        };
    })
}

/// INVPCID of `kind` with the 16-byte descriptor (PCID, then linear address) that `descriptor`
/// points to, or the exception: for tests of how INVPCID's memory operand is formed (a
/// non-canonical or LAM-tagged `descriptor` pointer) apart from the address it holds.
pub fn try_invpcid_at(kind: u64, descriptor: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: INVPCID only reads its descriptor and invalidates TLB entries, which the
        // runtime never relies on (the page tables are what count); a fault is caught.
        unsafe { asm!("invpcid {}, [{}]", in(reg) kind, in(reg) descriptor, options(nostack, readonly)) };
    })
}

/// INVLPG of `address`, or the exception: it raises none, even for a non-canonical address,
/// which it ignores (SDM Vol. 2, INVLPG).
pub fn try_invlpg(address: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: INVLPG only drops TLB entries, which the runtime never relies on; a fault
        // is caught.
        unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
    })
}

/// The hypercall instructions of the two hardware virtualization extensions. Outside a
/// virtual machine's guest mode both raise #UD; KVM accepts either one on any host (it
/// rewrites the other vendor's instruction to its own).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HypercallInstruction {
    /// Intel VT-x VMCALL (0F 01 C1).
    Vmcall,
    /// AMD-V VMMCALL (0F 01 D9).
    Vmmcall,
}

impl HypercallInstruction {
    /// The instruction's three bytes.
    pub const fn bytes(self) -> [u8; 3] {
        match self {
            HypercallInstruction::Vmcall => [0x0f, 0x01, 0xc1],
            HypercallInstruction::Vmmcall => [0x0f, 0x01, 0xd9],
        }
    }

    /// The mnemonic.
    pub const fn name(self) -> &'static str {
        match self {
            HypercallInstruction::Vmcall => "VMCALL",
            HypercallInstruction::Vmmcall => "VMMCALL",
        }
    }
}

/// KVM's hypercall ABI (Linux `include/uapi/linux/kvm_para.h`): hypercall numbers, and the
/// errors a hypercall returns negated in RAX.
pub mod kvm {
    /// KVM_ENOSYS: no such hypercall.
    pub const ENOSYS: i64 = 1000;
    /// KVM_EPERM: not permitted (a hypercall from CPL 3).
    pub const EPERM: i64 = 1;
    /// KVM_EINVAL: an invalid argument (KVM_HC_SEND_IPI with a logical destination or a
    /// shorthand in its ICR value).
    pub const EINVAL: i64 = 22;
    /// KVM_HC_VAPIC_POLL_IRQ: a hypercall that does nothing and returns 0.
    pub const HC_VAPIC_POLL_IRQ: u64 = 1;
    /// KVM_HC_SEND_IPI (Linux Documentation/virt/kvm/x86/hypercalls.rst), offered where
    /// KVM_FEATURE_PV_SEND_IPI is: RBX and RCX hold a bitmap of physical APIC IDs (in 64-bit
    /// mode, bit `n` of RBX is ID `RDX + n`, bit `n` of RCX is ID `RDX + 64 + n`), RDX the
    /// lowest ID, RSI the ICR value (vector, delivery mode, level, trigger: a logical
    /// destination or a shorthand is -KVM_EINVAL). Returns how many local APICs took the IPI
    /// (KVM's `kvm_pv_send_ipi`: one per existing, enabled target).
    pub const HC_SEND_IPI: u64 = 10;

    /// RAX after a hypercall that failed with `error` (which KVM returns negated).
    pub const fn failure(error: i64) -> u64 {
        error.wrapping_neg() as u64
    }
}

/// Stores `instruction` followed by RET at `offset` in `page` (through the identity map, so
/// whatever the page's mapping), for [`call_hypercall`].
pub fn store_hypercall(page: &crate::memory::TestPage, offset: u64, instruction: HypercallInstruction) {
    let [first, second, third] = instruction.bytes();
    page.store_code(offset, &[first, second, third, 0xc3]);
}

/// Executes `instruction` with `number` in RAX (KVM's hypercall number; its arguments in RBX,
/// RCX, RDX and RSI are whatever those registers hold) from a copy stored at `offset` in
/// `page` and followed by RET. Returns RAX after it, or the exception, whose RIP is
/// `page.address() + offset` for a fault on the instruction. The page must be mapped
/// executable. Running a copy keeps the image's own code intact where the hypervisor
/// rewrites the instruction: read the page afterwards to see.
pub fn try_hypercall_in_page(
    page: &crate::memory::TestPage,
    offset: u64,
    instruction: HypercallInstruction,
    number: u64,
) -> Result<u64, Exception> {
    store_hypercall(page, offset, instruction);
    let address = page.address() + offset;
    catch_exception(|| {
        let result: u64;
        // SAFETY: the page holds the hypercall instruction and RET, just stored; the call
        // returns (or faults, and the fault is caught). A hypervisor writes at most RAX (and
        // the rewritten instruction bytes, inside the page); the C ABI's other registers are
        // declared clobbered anyway.
        unsafe {
            asm!("call {address}", address = in(reg) address, inout("rax") number => result,
                 clobber_abi("C"))
        };
        result
    })
}

/// Like [`try_hypercall_in_page`], for user mode: calls what [`store_hypercall`] stored at
/// `offset` in `page` (mapped executable for user mode) without catching a fault, for code
/// under `run_in_user_mode`, which catches instead. If the page does not hold a hypercall
/// and RET there, it raises #UD (UD2 in this function) instead of calling it.
pub fn call_hypercall(page: &crate::memory::TestPage, offset: u64, number: u64) -> u64 {
    let address = page.address() + offset;
    let code = (read(address) as u32).to_le_bytes();
    let expected = |instruction: HypercallInstruction| {
        let [first, second, third] = instruction.bytes();
        code == [first, second, third, 0xc3]
    };
    if !expected(HypercallInstruction::Vmcall) && !expected(HypercallInstruction::Vmmcall) {
        raise_invalid_opcode();
    }
    let result: u64;
    // SAFETY: the code at `address` was just checked to be a hypercall and RET, which
    // returns; a fault goes to the enclosing `run_in_user_mode`. A hypervisor writes at most
    // RAX; the C ABI's other registers are declared clobbered anyway.
    unsafe {
        asm!("call {address}", address = in(reg) address, inout("rax") number => result,
             clobber_abi("C"))
    };
    result
}

/// The first non-canonical address above the lower half of a 48-bit address space.
pub const NON_CANONICAL_START: u64 = 1 << 47;

/// Runs `code` placed so that it ends exactly at [`NON_CANONICAL_START`], on a page mapped
/// there (read, write, execute) for this call only, with `rax` in RAX. Code that runs off its
/// end makes the CPU fetch from a non-canonical address: #GP(0) with RIP =
/// `NON_CANONICAL_START`. Returns the exception that ended the run (`Ok` only if `code`
/// returns with RET); `code` then holds the bytes as the page held them afterwards (a
/// hypervisor may rewrite instructions). The rest of the page holds UD2s.
///
/// # Panics
/// When `code` is longer than a page or no frame is left.
pub fn try_run_at_canonical_edge(code: &mut [u8], rax: u64) -> Result<(), Exception> {
    use crate::memory::{PAGE_SIZE, Protection, allocate_frame, free_frames};
    assert!(code.len() as u64 <= PAGE_SIZE, "the code does not fit in a page");
    let page = NON_CANONICAL_START - PAGE_SIZE;
    let frame = allocate_frame().expect("out of frames for the canonical edge page");
    let start = frame + PAGE_SIZE - code.len() as u64;
    // SAFETY: the frame is fresh from the frame allocator, identity mapped, and owned here
    // until it is freed below; nothing else refers to it.
    unsafe {
        let bytes = core::slice::from_raw_parts_mut(frame as usize as *mut u8, PAGE_SIZE as usize);
        for pair in bytes.chunks_exact_mut(2) {
            // UD2, so that a stray jump into the page faults at once.
            pair.copy_from_slice(&[0x0f, 0x0b]);
        }
        bytes[(PAGE_SIZE as usize - code.len())..].copy_from_slice(code);
    }
    // SAFETY: the top page of the lower canonical half belongs to nothing else in the
    // runtime (the identity map ends at 4 GiB, test pages live far below), and it maps a
    // frame owned here.
    unsafe { super::mmu::map_page(page, frame, Protection::READ_WRITE_EXECUTE) };
    let entry = NON_CANONICAL_START - code.len() as u64;
    let result = catch_exception(|| {
        // SAFETY: the code at `entry` is the caller's; whatever it raises is caught, and the
        // C ABI's registers are declared clobbered.
        unsafe { asm!("call {entry}", entry = in(reg) entry, inout("rax") rax => _, clobber_abi("C")) };
    });
    // SAFETY: the copy reads the frame through the identity map, still owned here.
    unsafe {
        core::ptr::copy_nonoverlapping(start as usize as *const u8, code.as_mut_ptr(), code.len());
    }
    // SAFETY: nothing refers to the page any more.
    unsafe { super::mmu::unmap_page(page) };
    free_frames(frame, 1);
    result
}

/// The cache-line and fence instructions of kvm-unit-tests' memory test, with the CPUID bit
/// that advertises each (where it is clear, the instruction raises #UD).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemoryInstruction {
    /// CLFLUSH m8: CPUID.1:EDX[19].
    Clflush,
    /// CLFLUSHOPT m8: CPUID.7.0:EBX[23].
    Clflushopt,
    /// CLWB m8: CPUID.7.0:EBX[24].
    Clwb,
    /// SFENCE: CPUID.1:EDX[25] (SSE).
    Sfence,
    /// LFENCE: CPUID.1:EDX[26] (SSE2).
    Lfence,
    /// MFENCE: CPUID.1:EDX[26] (SSE2).
    Mfence,
}

impl MemoryInstruction {
    /// Every instruction, in kvm-unit-tests' order.
    pub const ALL: [MemoryInstruction; 6] = [
        MemoryInstruction::Clflush,
        MemoryInstruction::Sfence,
        MemoryInstruction::Lfence,
        MemoryInstruction::Mfence,
        MemoryInstruction::Clflushopt,
        MemoryInstruction::Clwb,
    ];

    /// The mnemonic.
    pub const fn name(self) -> &'static str {
        match self {
            MemoryInstruction::Clflush => "CLFLUSH",
            MemoryInstruction::Clflushopt => "CLFLUSHOPT",
            MemoryInstruction::Clwb => "CLWB",
            MemoryInstruction::Sfence => "SFENCE",
            MemoryInstruction::Lfence => "LFENCE",
            MemoryInstruction::Mfence => "MFENCE",
        }
    }

    /// The CPUID feature that advertises it.
    pub const fn feature(self) -> Feature {
        match self {
            MemoryInstruction::Clflush => Feature::Clflush,
            MemoryInstruction::Clflushopt => Feature::Clflushopt,
            MemoryInstruction::Clwb => Feature::Clwb,
            MemoryInstruction::Sfence => Feature::Sse,
            MemoryInstruction::Lfence | MemoryInstruction::Mfence => Feature::Sse2,
        }
    }

    /// Whether CPUID advertises it.
    pub fn advertised(self) -> bool {
        self.feature().supported()
    }

    /// Whether it takes a memory operand (the cache-line instructions do, the fences not).
    pub const fn has_operand(self) -> bool {
        matches!(
            self,
            MemoryInstruction::Clflush | MemoryInstruction::Clflushopt | MemoryInstruction::Clwb
        )
    }
}

/// Executes `instruction` (on the cache line of `address`, for those that take an operand):
/// the outcome (#UD where the CPU lacks it; for the cache-line instructions the faults of a
/// byte load from `address`: #PF, #GP(0) for a non-canonical address) and the instruction's
/// address.
pub fn try_memory_instruction(instruction: MemoryInstruction, address: *const u8) -> Attempt<()> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        // Each arm: `slot` points at a live local, written once before the probed instruction;
        // faults are caught.
        match instruction {
            // SAFETY: see above; CLFLUSH writes the line back and evicts it; memory's contents stay.
            MemoryInstruction::Clflush => unsafe {
                asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: clflush byte ptr [{address}]",
                     scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, options(nostack))
            },
            // SAFETY: see above; CLFLUSHOPT, like CLFLUSH, leaves memory's contents unchanged.
            MemoryInstruction::Clflushopt => unsafe {
                asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: clflushopt byte ptr [{address}]",
                     scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, options(nostack))
            },
            // SAFETY: see above; CLWB writes the line back; memory's contents stay.
            MemoryInstruction::Clwb => unsafe {
                asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: clwb byte ptr [{address}]",
                     scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, options(nostack))
            },
            // SAFETY: see above; SFENCE only orders stores.
            MemoryInstruction::Sfence => unsafe {
                asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: sfence",
                     scratch = out(reg) _, slot = in(reg) slot, options(nostack))
            },
            // SAFETY: see above; LFENCE only orders execution.
            MemoryInstruction::Lfence => unsafe {
                asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: lfence",
                     scratch = out(reg) _, slot = in(reg) slot, options(nostack))
            },
            // SAFETY: see above; MFENCE only orders loads and stores.
            MemoryInstruction::Mfence => unsafe {
                asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: mfence",
                     scratch = out(reg) _, slot = in(reg) slot, options(nostack))
            },
        }
    });
    Attempt {
        result,
        address: location,
    }
}

/// RDPRU of processor register `register` (0: MPERF, 1: APERF; AMD APM Vol. 3): (EDX:EAX,
/// the carry flag, set when the value is valid), or the exception (#UD where CPUID.80000008H:
/// EBX[4] is clear), and the instruction's address.
pub fn try_rdpru(register: u32) -> Attempt<(u64, bool)> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        let (low, high): (u32, u32);
        let valid: u8;
        // SAFETY: `slot` points at a live local, written once before the probed instruction.
        // RDPRU (0F 01 FD, spelled in bytes for assemblers that lack it) only writes EDX:EAX
        // and the flags; #UD is caught.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: .byte 0x0f, 0x01, 0xfd",
                 "setc {valid}", scratch = out(reg) _, slot = in(reg) slot, valid = out(reg_byte) valid,
                 in("ecx") register, out("eax") low, out("edx") high, options(nostack))
        };
        ((u64::from(high) << 32) | u64::from(low), valid != 0)
    });
    Attempt {
        result,
        address: location,
    }
}

/// Like [`try_rdpru`] without catching a fault: for user mode, under `run_in_user_mode`
/// (which catches instead). Returns EDX:EAX and the carry flag.
pub fn rdpru(register: u32) -> (u64, bool) {
    let (low, high): (u32, u32);
    let valid: u8;
    // SAFETY: RDPRU only writes EDX:EAX and the flags; a #UD goes to the enclosing
    // `run_in_user_mode` (or `catch_exception`), or ends the test.
    unsafe {
        asm!(".byte 0x0f, 0x01, 0xfd", "setc {valid}", valid = out(reg_byte) valid, in("ecx") register,
             out("eax") low, out("edx") high, options(nomem, nostack))
    };
    ((u64::from(high) << 32) | u64::from(low), valid != 0)
}

impl HypercallInstruction {
    /// Executes the instruction itself (from the image) with hypercall `number` in RAX and
    /// RBX, RCX, RDX and RSI (KVM's arguments) zero; returns RAX. No catch, so that its cost
    /// is the instruction's own: outside a hypervisor's guest mode it raises #UD, so run it
    /// under `catch_exception` where that can happen.
    pub fn call(self, number: u64) -> u64 {
        let mut result = number;
        match self {
            // SAFETY: a hypercall changes no guest memory: the hypervisor answers in RAX; RBX
            // is saved around it because the compiler reserves it, the others are clobbered.
            HypercallInstruction::Vmcall => unsafe {
                asm!(
                    "mov {saved}, rbx", "xor ebx, ebx", "vmcall", "mov rbx, {saved}",
                    saved = out(reg) _, inout("rax") result, inout("rcx") 0u64 => _,
                    inout("rdx") 0u64 => _, inout("rsi") 0u64 => _, options(nostack)
                )
            },
            // SAFETY: as for VMCALL.
            HypercallInstruction::Vmmcall => unsafe {
                asm!(
                    "mov {saved}, rbx", "xor ebx, ebx", "vmmcall", "mov rbx, {saved}",
                    saved = out(reg) _, inout("rax") result, inout("rcx") 0u64 => _,
                    inout("rdx") 0u64 => _, inout("rsi") 0u64 => _, options(nostack)
                )
            },
        }
        result
    }
}

impl HypercallInstruction {
    /// The instruction of this CPU's vendor, as kvm-unit-tests chooses it: VMMCALL on AMD and
    /// Hygon, VMCALL elsewhere.
    pub fn of_this_cpu() -> Self {
        let vendor = super::cpuid::vendor_string();
        if vendor == *b"AuthenticAMD" || vendor == *b"HygonGenuine" {
            HypercallInstruction::Vmmcall
        } else {
            HypercallInstruction::Vmcall
        }
    }

    /// Executes the instruction with hypercall `number` in RAX and `arguments` in RBX, RCX,
    /// RDX and RSI (KVM's first four arguments); returns RAX. No catch, as [`Self::call`].
    pub fn call_with(self, number: u64, arguments: [u64; 4]) -> u64 {
        let mut result = number;
        let [first, second, third, fourth] = arguments;
        match self {
            // SAFETY: a hypercall changes no guest memory: the hypervisor answers in RAX (the
            // IPIs it may send are interrupts, taken by the handlers as any other); RBX is
            // swapped in and out because the compiler reserves it.
            HypercallInstruction::Vmcall => unsafe {
                asm!(
                    "xchg {first}, rbx", "vmcall", "xchg {first}, rbx",
                    first = inout(reg) first => _, inout("rax") result, inout("rcx") second => _,
                    inout("rdx") third => _, inout("rsi") fourth => _, options(nostack)
                )
            },
            // SAFETY: as for VMCALL.
            HypercallInstruction::Vmmcall => unsafe {
                asm!(
                    "xchg {first}, rbx", "vmmcall", "xchg {first}, rbx",
                    first = inout(reg) first => _, inout("rax") result, inout("rcx") second => _,
                    inout("rdx") third => _, inout("rsi") fourth => _, options(nostack)
                )
            },
        }
        result
    }
}

/// WBINVD: writes the caches' modified lines back to memory and invalidates the caches (a
/// CPL-0 instruction: #GP(0) elsewhere). Memory keeps every value written; under a hypervisor
/// it exits (KVM: `kvm_emulate_wbinvd`).
pub fn wbinvd() {
    // SAFETY: WBINVD writes back before it invalidates, so memory holds what was written.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// INVD: invalidates the caches without writing modified lines back (a CPL-0 instruction).
///
/// # Safety
/// On bare metal it loses every store still in a cache, which can corrupt any memory. Call it
/// only under a hypervisor that does not pass it to the hardware: KVM skips it as a NOP
/// (`kvm_emulate_invd`, arch/x86/kvm/x86.c); QEMU's TCG models no cache and does nothing.
pub unsafe fn invd() {
    // SAFETY: the caller runs under a hypervisor that keeps memory intact (see # Safety).
    unsafe { asm!("invd", options(nostack, preserves_flags)) };
}

/// IN of a byte from `port` (a device access, never a memory access).
pub fn in_u8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port input changes no guest memory.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// OUT of a byte to `port` (a device access, never a memory access).
pub fn out_u8(port: u16, value: u8) {
    // SAFETY: port output changes no guest memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// OUT of a word to `port` (a device access, never a memory access).
pub fn out_u16(port: u16, value: u16) {
    // SAFETY: port output changes no guest memory.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) };
}

/// OUT of a doubleword to `port` (a device access, never a memory access).
pub fn out_u32(port: u16, value: u32) {
    // SAFETY: port output changes no guest memory.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// IN of a doubleword from `port`: a device access (reading some ports has effects on their
/// device, e.g. a serial port's receive buffer), never a memory access.
pub fn in_u32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: port input changes no guest memory.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// IN of a word from `port` (a device access, never a memory access).
pub fn in_u16(port: u16) -> u16 {
    let value: u16;
    // SAFETY: port input changes no guest memory.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// HLT: waits for an interrupt (with RFLAGS.IF clear, only an NMI, an SMI or, in a nested
/// guest, an intercepted interrupt ends it).
pub fn halt() {
    // SAFETY: HLT stops the CPU until an event; it touches no memory.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}
