//! aarch64 instructions as safe wrappers: memory probes, exception-raising instructions (each
//! `try_` one returning where it sits, so that a test can check ELR), interrupt masking and
//! waiting. `try_<op>` catches the exception `<op>` raises; plain `<op>` never catches.
//!
//! Probes store their instruction's address to memory (a local, through `slot`) *before* the
//! probed instruction: an assembly output register is never written when it faults, since
//! `catch_exception` abandons the block.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::exceptions::{Exception, Registers, catch_exception};
use super::mmu::UnbackedPage;
pub use crate::catch::Attempt;

/// Reads the 64-bit word at `address`, or returns the exception (a data abort).
pub fn try_read(address: u64) -> Result<u64, Exception> {
    catch_exception(|| {
        let value: u64;
        // SAFETY: the load is outside Rust's memory model (inline assembly); any fault is
        // caught and becomes the result.
        unsafe {
            asm!("ldr {value}, [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly))
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
            asm!("str {value}, [{address}]", address = in(reg) address, value = in(reg) value, options(nostack))
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
        unsafe { asm!("blr {address}", address = in(reg) address, clobber_abi("C")) };
    })
}

/// Reads the 64-bit word at `address`: the value or the exception, and the load's own
/// address, for data abort tests that check ELR.
pub fn try_load(address: u64) -> Attempt<u64> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        let value: u64;
        // SAFETY: `slot` points at a live local, written before the probed load; the load is
        // outside Rust's memory model and any fault is caught.
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "2: ldr {value}, [{address}]",
                 scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, value = out(reg) value,
                 options(nostack))
        };
        value
    });
    Attempt {
        result,
        address: location,
    }
}

/// Writes the 64-bit word `value` at `address`: the exception, if any, and the store's own
/// address, for data abort tests that check ELR.
///
/// # Safety
/// As [`try_write`]: a store that does not fault must not break the runtime or alias a Rust
/// object in use.
pub unsafe fn try_store(address: u64, value: u64) -> Attempt<()> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local, written before the probed store; the caller
        // guarantees the store itself is harmless, and any fault is caught.
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "2: str {value}, [{address}]",
                 scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, value = in(reg) value,
                 options(nostack))
        };
    });
    Attempt {
        result,
        address: location,
    }
}

/// Executes `udf #0` (permanently undefined): the exception, and the UDF's address.
pub fn try_undefined_instruction() -> Attempt<()> {
    try_undefined_instruction_after(|| {})
}

/// Runs `function`, then executes `udf #0`, under one `catch_exception`: the exception that
/// ended it (the UDF's, unless `function` raised one first) and the UDF's address. For nested
/// catches: `function` may catch exceptions of its own.
pub fn try_undefined_instruction_after(function: impl FnOnce()) -> Attempt<()> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        function();
        // SAFETY: `slot` points at a live local written before the UDF; the exception is caught.
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "2: udf #0",
                 scratch = out(reg) _, slot = in(reg) slot, options(nostack))
        };
    });
    Attempt {
        result,
        address: location,
    }
}

/// Executes `udf #0` without catching it: it goes to the enclosing `catch_exception` or
/// `run_in_user_mode`, or, as an unexpected exception, ends the test.
pub fn undefined_instruction() {
    // SAFETY: the exception is either caught by an enclosing catch (which abandons this frame)
    // or ends the test; no Rust state is left inconsistent.
    unsafe { asm!("udf #0", options(nomem, nostack)) };
}

/// Executes `udf #0` with x0 = `value`, for an `ExceptionHandler` of class Unknown that
/// skips it (kvm-unit-tests' UNDEF handler, `regs->pc += 4`): the sequence continues after
/// the UDF with the x0 the handler left, and returns (that x0, the UDF's address). Without
/// such a handler the UDF goes to the enclosing catch, or ends the test.
pub fn undefined_instruction_resumable(value: u64) -> (u64, u64) {
    let mut x0 = value;
    let address: u64;
    // SAFETY: the UDF either returns here after the instruction (a handler skipped it; x0 is
    // an output, so a changed x0 is expected), is caught by an enclosing catch (which abandons
    // this frame), or ends the test.
    unsafe {
        asm!("adr {address}, 2f", "2: udf #0", address = out(reg) address, inout("x0") x0,
             options(nomem, nostack))
    };
    (x0, address)
}

/// Executes `svc #IMMEDIATE`: the exception (ELR = the next instruction), and the address
/// after the SVC.
pub fn try_supervisor_call<const IMMEDIATE: u16>() -> Attempt<()> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local written before the SVC; the SVC exception is
        // caught (nothing handles it as a system call).
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "svc #{immediate}", "2:",
                 scratch = out(reg) _, slot = in(reg) slot, immediate = const IMMEDIATE, options(nostack))
        };
    });
    Attempt {
        result,
        address: location,
    }
}

/// Executes `brk #IMMEDIATE`: the exception (ELR = the BRK), and the BRK's address.
pub fn try_breakpoint<const IMMEDIATE: u16>() -> Attempt<()> {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local written before the BRK; the exception is caught.
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "2: brk #{immediate}",
                 scratch = out(reg) _, slot = in(reg) slot, immediate = const IMMEDIATE, options(nostack))
        };
    });
    Attempt {
        result,
        address: location,
    }
}

/// An instruction that raises a synchronous exception, for [`try_with_registers`].
#[derive(Clone, Copy)]
pub enum RaisingInstruction<'page> {
    /// `mrs x0, sctlr_el3`: reading an EL3 register from EL1 is UNDEFINED (EC 0x00).
    ReadEl3SystemRegister,
    /// `svc #123` (ELR: the next instruction).
    SupervisorCall,
    /// `blr x9`, x9 holding the page's address: the fetch there raises an instruction abort
    /// (x30 holds the return address, ELR the page's address).
    BranchToUnbacked(&'page UnbackedPage),
}

/// The immediate of [`RaisingInstruction::SupervisorCall`].
pub const CAPTURE_SVC_IMMEDIATE: u16 = 123;

/// What [`try_with_registers`] saw: the exception, the registers captured just before the
/// instruction (PC: the instruction's address; PSTATE: NZCV, DAIF and the mode, as an SPSR
/// holds them), and the registers the exception vector saved (what a handler sees).
#[derive(Clone, Copy, Debug)]
pub struct RegisterCapture {
    /// The exception (an `Ok` means the instruction raised none).
    pub result: Result<(), Exception>,
    /// The registers just before the instruction.
    pub before: Registers,
    /// The registers the vector saved for the exception (valid when `result` is an `Err`).
    pub handler: Registers,
}

/// PSTATE as an SPSR holds it, into x0 (clobbers x2): NZCV, DAIF, CurrentEL and SPSel line up
/// with SPSR's NZCV, DAIF and M[3:0]. At EL1 only (EL0 may not read DAIF, CurrentEL, SPSel).
macro_rules! capture_pstate_el1 {
    () => {
        concat!(
            "mrs x0, nzcv\n",
            "mrs x2, daif\n",
            "orr x0, x0, x2\n",
            "mrs x2, currentel\n",
            "orr x0, x0, x2\n",
            "mrs x2, spsel\n",
            "orr x0, x0, x2\n",
        )
    };
}

/// At EL0: NZCV, ORed with the rest of PSTATE as the runtime's EL0 runs have it (x3).
macro_rules! capture_pstate_el0 {
    () => {
        concat!("mrs x0, nzcv\n", "orr x0, x0, x3\n")
    };
}

macro_rules! capture_then {
    ($before:expr, $x9:expr, $pstate:expr, $instruction:literal) => {
        capture_then!($before, $x9, $pstate, $instruction, 0_u64)
    };
    ($before:expr, $x9:expr, $pstate:expr, $instruction:literal, $x3:expr) => {
        asm!(
            "movz x0, #0xa000, lsl #16",  // NZCV = N and C: a pattern the exception must keep
            "msr nzcv, x0",
            $pstate,
            "str x0, [x1, #264]",
            "movz x2, #0x0202",
            "movk x2, #0xfeed, lsl #48",
            "movz x3, #0x0303",
            "movk x3, #0xfeed, lsl #48",
            "movz x4, #0x0404",
            "movk x4, #0xfeed, lsl #48",
            "movz x5, #0x0505",
            "movk x5, #0xfeed, lsl #48",
            "movz x6, #0x0606",
            "movk x6, #0xfeed, lsl #48",
            "movz x7, #0x0707",
            "movk x7, #0xfeed, lsl #48",
            "movz x8, #0x0808",
            "movk x8, #0xfeed, lsl #48",
            "movz x10, #0x0a0a",
            "movk x10, #0xfeed, lsl #48",
            "movz x11, #0x0b0b",
            "movk x11, #0xfeed, lsl #48",
            "movz x12, #0x0c0c",
            "movk x12, #0xfeed, lsl #48",
            "movz x13, #0x0d0d",
            "movk x13, #0xfeed, lsl #48",
            "movz x14, #0x0e0e",
            "movk x14, #0xfeed, lsl #48",
            "movz x15, #0x0f0f",
            "movk x15, #0xfeed, lsl #48",
            "movz x16, #0x1010",
            "movk x16, #0xfeed, lsl #48",
            "movz x17, #0x1111",
            "movk x17, #0xfeed, lsl #48",
            "stp x2, x3, [x1, #16]",
            "stp x4, x5, [x1, #32]",
            "stp x6, x7, [x1, #48]",
            "stp x8, x9, [x1, #64]",
            "stp x10, x11, [x1, #80]",
            "stp x12, x13, [x1, #96]",
            "stp x14, x15, [x1, #112]",
            "stp x16, x17, [x1, #128]",
            "stp x18, x19, [x1, #144]",
            "stp x20, x21, [x1, #160]",
            "stp x22, x23, [x1, #176]",
            "stp x24, x25, [x1, #192]",
            "stp x26, x27, [x1, #208]",
            "stp x28, x29, [x1, #224]",
            "str x30, [x1, #240]",
            "mov x0, sp",
            "str x0, [x1, #248]",
            "adr x0, 2f",
            "str x0, [x1, #256]",
            "movz x0, #0x0a0a",
            "stp x0, x1, [x1]",
            concat!("2: ", $instruction),
            in("x1") $before, in("x9") $x9, out("x0") _, out("x2") _, inout("x3") $x3 => _, out("x4") _,
            out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            out("x30") _,
        )
    };
}

/// Runs `instruction` after storing every general-purpose register (x2-x8 and x10-x17 set to
/// distinct patterns first, NZCV to N and C), SP, its PC and PSTATE, and returns those with
/// the registers the exception vector saved, for kvm-unit-tests' selftest check that an
/// exception handler sees exactly the interrupted state.
pub fn try_with_registers(instruction: RaisingInstruction<'_>) -> RegisterCapture {
    let mut before = Registers::default();
    let slot = &raw mut before;
    let result = catch_exception(|| match instruction {
        // SAFETY: the capture writes only `before` (through `slot`, a live local) and
        // registers it declares clobbered; the MRS raises an exception that is caught, which
        // abandons this block.
        RaisingInstruction::ReadEl3SystemRegister => unsafe {
            capture_then!(slot, 0x0909_u64, capture_pstate_el1!(), "mrs x0, sctlr_el3")
        },
        // SAFETY: as above; nothing handles the SVC as a system call, it is caught.
        RaisingInstruction::SupervisorCall => unsafe {
            capture_then!(slot, 0x0909_u64, capture_pstate_el1!(), "svc #123")
        },
        // SAFETY: as above; the target is an `UnbackedPage`, with no memory behind it, so the
        // fetch faults and no code runs there.
        RaisingInstruction::BranchToUnbacked(page) => unsafe {
            capture_then!(slot, page.address(), capture_pstate_el1!(), "blr x9")
        },
    });
    let handler = if result.is_err() {
        super::exceptions::last_caught_registers()
    } else {
        Registers::default()
    };
    RegisterCapture {
        result,
        before,
        handler,
    }
}

/// [`try_with_registers`] at EL0, in a [`run_in_user_mode`](super::run_in_user_mode) run:
/// `mrs x0, sctlr_el3` (UNDEFINED at EL0 too) or `svc #123` (an instruction abort would need
/// an EL0-executable unbacked page). PSTATE before is NZCV with the D, A, I, F masks and mode
/// EL0t that the runtime's EL0 runs have.
///
/// # Panics
/// For [`RaisingInstruction::BranchToUnbacked`].
pub fn try_with_registers_in_user_mode(instruction: RaisingInstruction<'_>) -> RegisterCapture {
    let mut before = Registers::default();
    let slot = &raw mut before;
    assert!(
        !matches!(instruction, RaisingInstruction::BranchToUnbacked(_)),
        "no unbacked page is executable at EL0"
    );
    let rest = super::exceptions::USER_PSTATE;
    let result = super::run_in_user_mode(|| match instruction {
        // SAFETY: the capture writes only `before` (through `slot`: a live local in the image's
        // data, which EL0 may write) and registers it declares clobbered; the MRS raises an
        // exception that ends the EL0 run, which `run_in_user_mode` returns.
        RaisingInstruction::ReadEl3SystemRegister => unsafe {
            capture_then!(slot, 0x0909_u64, capture_pstate_el0!(), "mrs x0, sctlr_el3", rest)
        },
        // SAFETY: as above; the SVC ends the EL0 run (it is not the run's exit SVC).
        RaisingInstruction::SupervisorCall => unsafe {
            capture_then!(slot, 0x0909_u64, capture_pstate_el0!(), "svc #123", rest)
        },
        RaisingInstruction::BranchToUnbacked(_) => {}
    });
    let handler = if result.is_err() {
        super::exceptions::last_caught_registers()
    } else {
        Registers::default()
    };
    RegisterCapture {
        result,
        before,
        handler,
    }
}

/// Executes `svc #0` without catching it: inside a [`run_in_user_mode`](super::run_in_user_mode)
/// closure (where `catch_exception` is unavailable) the SVC ends the EL0 run.
pub fn supervisor_call() {
    // SAFETY: the SVC ends the EL0 run, which `run_in_user_mode` catches, or goes to the
    // enclosing `catch_exception`.
    unsafe { asm!("svc #0", options(nomem, nostack)) };
}

/// Reads the 64-bit word at `address` without catching a fault: in an EL0 closure the fault
/// ends the run and `run_in_user_mode` returns it; elsewhere it goes to the enclosing
/// `catch_exception`, or ends the test.
pub fn load(address: u64) -> u64 {
    let value: u64;
    // SAFETY: the load is outside Rust's memory model; a fault abandons this frame (caught by
    // an enclosing catch) or ends the test.
    unsafe {
        asm!("ldr {value}, [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly))
    };
    value
}

/// The current exception level (CurrentEL.EL), readable at EL1 only.
pub fn current_el() -> u64 {
    use aarch64_cpu::registers::{CurrentEL, Readable};
    CurrentEL.get() >> 2 & 3
}

/// Unmasks IRQs (PSTATE.I = 0).
pub fn enable_interrupts() {
    // SAFETY: unmasking IRQs only lets the registered handler run between instructions.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
}

/// Masks IRQs (PSTATE.I = 1), the runtime's default.
pub fn disable_interrupts() {
    // SAFETY: masking IRQs has no effect on memory.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
}

/// Whether IRQs are masked.
pub fn interrupts_masked() -> bool {
    use aarch64_cpu::registers::{DAIF, Readable};
    DAIF.get() & (1 << 7) != 0
}

/// WFI: waits for an interrupt (pending even while masked) or another wake-up event.
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Waits with WFI (IRQs masked: a pending IRQ still wakes it), then unmasks IRQs so that the
/// pending one is taken, and masks them again.
pub fn wait_for_interrupt_enabled() {
    // SAFETY: WFI with IRQs masked cannot miss a wake-up; the handler runs at the ISB after
    // the unmask, before the mask is restored.
    unsafe {
        asm!(
            "dsb sy",
            "wfi",
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nomem, nostack)
        )
    };
}

/// ISB.
pub fn isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// FPCR, the floating-point control register.
pub fn fpcr() -> u64 {
    let value: u64;
    // SAFETY: reads a register EL1 may read; no memory access.
    unsafe { asm!("mrs {value}, fpcr", value = out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes FPCR (rounding mode, flush-to-zero, default NaN, trap enables).
pub fn set_fpcr(value: u64) {
    // SAFETY: FPCR only changes how later FP instructions compute; no memory access.
    unsafe { asm!("msr fpcr, {value}", value = in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// FPSR, the floating-point status register (cumulative exception flags, QC).
pub fn fpsr() -> u64 {
    let value: u64;
    // SAFETY: reads a register EL1 may read; no memory access.
    unsafe { asm!("mrs {value}, fpsr", value = out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes FPSR.
pub fn set_fpsr(value: u64) {
    // SAFETY: FPSR holds status flags only; no memory access.
    unsafe { asm!("msr fpsr, {value}", value = in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// The FP/SIMD state a test loads into the registers and reads back: v0-v31, FPCR, FPSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FpState {
    /// v0..v31, 16 bytes each, in register order.
    pub vectors: [u8; 512],
    /// FPCR.
    pub fpcr: u64,
    /// FPSR (the cumulative exception flags and QC are the bits that hold a value).
    pub fpsr: u64,
}

impl FpState {
    /// A state whose 512 vector bytes are all distinct functions of `seed`.
    pub fn pattern(seed: u8, fpcr: u64, fpsr: u64) -> FpState {
        FpState {
            vectors: core::array::from_fn(|index| (index as u8).wrapping_mul(7) ^ seed),
            fpcr,
            fpsr,
        }
    }

    /// The first vector register that differs from `other`'s, if any.
    pub fn first_vector_difference(&self, other: &FpState) -> Option<usize> {
        self.vectors
            .iter()
            .zip(&other.vectors)
            .position(|(mine, theirs)| mine != theirs)
            .map(|byte| byte / 16)
    }
}

/// What happens while [`fp_state_round_trip`] holds the state in the registers.
#[derive(Clone, Copy, Debug)]
pub enum FpEvent<'a> {
    /// Nothing: the registers are stored back at once (for handlers that must overwrite
    /// every FP/SIMD register).
    Nothing,
    /// `brk #0x77`, which `trap_exceptions` records and resumes after.
    Breakpoint,
    /// A pending IRQ, taken while IRQs are briefly unmasked.
    InterruptWindow,
    /// Stores 1 to `loaded` once the registers hold the state, then waits, IRQs unmasked
    /// between polls (so that IPIs are taken), until `done` is nonzero or `polls` polls passed:
    /// another CPU meanwhile runs its own work and interrupts this one.
    Handshake {
        /// Set (release) when the state is in the registers.
        loaded: &'a AtomicU32,
        /// Polled (acquire) until nonzero.
        done: &'a AtomicU32,
        /// The most polls before giving up (the caller then sees `done` still 0).
        polls: u64,
    },
    /// The registers are held across WFIs with IRQs masked ([`Handoff`]): no exception is
    /// taken, so only the hypervisor (which deschedules the waiting vCPU) can change them.
    Descheduled(Handoff<'a>),
    /// A wait, no exception taken, until the console UART holds a byte from the host (left in
    /// its receive FIFO): the registers are held across a live migration whose answer is that
    /// byte ([`crate::migration::migrate_holding`]).
    SerialInput(super::console::SerialInputWait),
}

/// A wait in WFI with IRQs masked while a CPU holds register values: it stores 1 to `loaded`
/// once the registers hold them, then loops `WFI` until `done` is nonzero or the virtual count
/// reaches `deadline`, and counts the WFIs it ran in `waits`. A pending IRQ (taken later, once
/// the caller unmasks IRQs) ends each WFI; the caller arms a timer for `deadline` so that a lost
/// wake-up cannot hang the CPU. No runtime code runs in between, so the values cross only what
/// the hypervisor does while the vCPU waits (under KVM: `kvm_vcpu_block`, the vCPU thread
/// scheduled out and its FP/SIMD state saved and reloaded).
#[derive(Clone, Copy, Debug)]
pub struct Handoff<'a> {
    /// Set (release) when the state is in the registers.
    pub loaded: &'a AtomicU32,
    /// Polled (acquire) before each WFI.
    pub done: &'a AtomicU32,
    /// The virtual count (CNTVCT_EL0) at which the wait gives up.
    pub deadline: u64,
    /// Receives how many WFIs ran.
    pub waits: &'a AtomicU64,
}

/// Loads `state` into v0-v31, FPCR and FPSR, lets `event` happen, and returns the registers
/// as they are afterwards (FPCR and FPSR are then restored). For tests that the FP/SIMD state
/// survives exceptions, interrupts and other CPUs' work: `Breakpoint` must run under
/// `trap_exceptions` of BRK64, `InterruptWindow` with an IRQ pending.
pub fn fp_state_round_trip(state: &FpState, event: FpEvent<'_>) -> FpState {
    let mut out = FpState {
        vectors: [0; 512],
        fpcr: 0,
        fpsr: 0,
    };
    let mut waits: *mut u64 = core::ptr::null_mut();
    let (mode, loaded, done, polls) = match event {
        FpEvent::Nothing => (3u64, core::ptr::null(), core::ptr::null(), 0),
        FpEvent::Breakpoint => (0, core::ptr::null(), core::ptr::null(), 0),
        FpEvent::InterruptWindow => (1, core::ptr::null(), core::ptr::null(), 0),
        FpEvent::Handshake { loaded, done, polls } => {
            (2, loaded.as_ptr().cast_const(), done.as_ptr().cast_const(), polls)
        }
        FpEvent::Descheduled(handoff) => {
            waits = handoff.waits.as_ptr();
            (
                4,
                handoff.loaded.as_ptr().cast_const(),
                handoff.done.as_ptr().cast_const(),
                handoff.deadline,
            )
        }
        // `polls` carries the flag register's address.
        FpEvent::SerialInput(wait) => (5, core::ptr::null(), core::ptr::null(), wait.flags_address()),
    };
    let fpcr_after: u64;
    let fpsr_after: u64;
    // SAFETY: reads `state.vectors` and writes `out.vectors` (512 bytes each, live); `loaded`,
    // `done` and (Descheduled only) `waits` point at live atomics accessed with atomic
    // instructions; SerialInput reads the PL011's flag register (aligned, identity mapped
    // device memory, no side effect); DAIF is restored after the Descheduled wait; every vector
    // register is declared clobbered and FPCR/FPSR are restored; the BRK is resumed by
    // `trap_exceptions` and IRQ handlers return.
    unsafe {
        asm!(
            "mrs {saved_fpcr}, fpcr",
            "mrs {saved_fpsr}, fpsr",
            "msr fpcr, {fpcr_pattern}",
            "msr fpsr, {fpsr_pattern}",
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{input}], #64",
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{input}], #64",
            "ld1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [{input}], #64",
            "ld1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [{input}], #64",
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{input}], #64",
            "ld1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{input}], #64",
            "ld1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{input}], #64",
            "ld1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{input}], #64",
            "cmp {mode}, #1",
            "b.eq 2f",
            "b.lo 6f",
            "cmp {mode}, #2",
            "b.eq 4f",
            "cmp {mode}, #4",
            "b.eq 7f",
            "cmp {mode}, #5",
            "b.eq 11f",
            "b 3f",
            // SerialInput: the UART flag register read until RXFE clears.
            "11: ldr {scratch:w}, [{polls}]",
            "tst {scratch:w}, #{receive_empty}",
            "b.ne 11b",
            "b 3f",
            "6: brk #0x77",
            "b 3f",
            "2: msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            "b 3f",
            "4: mov {scratch:w}, #1",
            "stlr {scratch:w}, [{loaded}]",
            "5: msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            "ldar {scratch:w}, [{done}]",
            "cbnz {scratch:w}, 3f",
            "subs {polls}, {polls}, #1",
            "b.hi 5b",
            "b 3f",
            // Descheduled: IRQs masked, `input` counts the WFIs, `fpcr` holds the saved DAIF.
            "7: mrs {fpcr}, daif",
            "msr daifset, #2",
            "mov {input}, #0",
            "mov {scratch:w}, #1",
            "stlr {scratch:w}, [{loaded}]",
            "8: ldar {scratch:w}, [{done}]",
            "cbnz {scratch:w}, 9f",
            "isb",
            "mrs {scratch}, cntvct_el0",
            "cmp {scratch}, {polls}",
            "b.hs 9f",
            "wfi",
            "add {input}, {input}, #1",
            "b 8b",
            "9: stlr {input}, [{waits}]",
            "3: st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{output}], #64",
            "st1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{output}], #64",
            "st1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [{output}], #64",
            "st1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [{output}], #64",
            "st1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{output}], #64",
            "st1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{output}], #64",
            "st1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{output}], #64",
            "st1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{output}], #64",
            "cmp {mode}, #4",
            "b.ne 10f",
            "msr daif, {fpcr}",
            "10: mrs {fpcr}, fpcr",
            "mrs {fpsr}, fpsr",
            "msr fpcr, {saved_fpcr}",
            "msr fpsr, {saved_fpsr}",
            saved_fpcr = out(reg) _,
            saved_fpsr = out(reg) _,
            fpcr_pattern = in(reg) state.fpcr,
            fpsr_pattern = in(reg) state.fpsr,
            input = inout(reg) state.vectors.as_ptr() => _,
            output = inout(reg) out.vectors.as_mut_ptr() => _,
            mode = in(reg) mode,
            loaded = in(reg) loaded,
            done = in(reg) done,
            polls = inout(reg) polls => _,
            waits = in(reg) waits,
            scratch = out(reg) _,
            receive_empty = const super::console::SerialInputWait::RECEIVE_EMPTY,
            fpcr = out(reg) fpcr_after,
            fpsr = out(reg) fpsr_after,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
            out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
            out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
        )
    };
    out.fpcr = fpcr_after;
    out.fpsr = fpsr_after;
    out
}
