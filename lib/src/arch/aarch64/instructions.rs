//! aarch64 instructions as safe wrappers: memory probes, exception-raising instructions (each
//! returning where it sits, so that a test can check ELR), interrupt masking and waiting.
//!
//! Probes store their instruction's address to memory (a local, through `slot`) *before* the
//! probed instruction: an assembly output register is never written when it faults, since
//! `catch_exception` abandons the block.

use core::arch::asm;

use super::exceptions::{Exception, catch_exception};

/// Reads the 64-bit word at `address`, or the exception (a data abort).
pub fn probe_read(address: u64) -> Result<u64, Exception> {
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
pub unsafe fn probe_write(address: u64, value: u64) -> Result<(), Exception> {
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
pub unsafe fn probe_call(address: u64) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: the caller guarantees the code is a C-ABI function that returns.
        unsafe { asm!("blr {address}", address = in(reg) address, clobber_abi("C")) };
    })
}

/// Reads the 64-bit word at `address` and returns the load's own address too: for data abort
/// tests that check ELR. The result is the value or the exception.
pub fn load_at(address: u64) -> (Result<u64, Exception>, u64) {
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
    (result, location)
}

/// Executes `udf #0` (permanently undefined); returns the exception and the UDF's address.
pub fn undefined_instruction() -> (Result<(), Exception>, u64) {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local written before the UDF; the exception is caught.
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "2: udf #0",
                 scratch = out(reg) _, slot = in(reg) slot, options(nostack))
        };
    });
    (result, location)
}

/// Executes `udf #0` without catching it: it goes to the enclosing `catch_exception`, or, as
/// an unexpected exception, ends the test.
pub fn raise_undefined_instruction() {
    // SAFETY: the exception is either caught by an enclosing catch (which abandons this frame)
    // or ends the test; no Rust state is left inconsistent.
    unsafe { asm!("udf #0", options(nomem, nostack)) };
}

/// Executes `svc #IMMEDIATE`; returns the exception (ELR = the next instruction) and the
/// address after the SVC.
pub fn supervisor_call<const IMMEDIATE: u16>() -> (Result<(), Exception>, u64) {
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
    (result, location)
}

/// Executes `brk #IMMEDIATE`; returns the exception (ELR = the BRK) and the BRK's address.
pub fn breakpoint<const IMMEDIATE: u16>() -> (Result<(), Exception>, u64) {
    let mut location = 0u64;
    let slot = &raw mut location;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local written before the BRK; the exception is caught.
        unsafe {
            asm!("adr {scratch}, 2f", "str {scratch}, [{slot}]", "2: brk #{immediate}",
                 scratch = out(reg) _, slot = in(reg) slot, immediate = const IMMEDIATE, options(nostack))
        };
    });
    (result, location)
}

/// Executes `svc #0` at EL0 inside a [`run_in_user_mode`](super::run_in_user_mode) closure
/// (where `catch_exception` is unavailable): the SVC ends the user run.
pub fn user_supervisor_call() {
    // SAFETY: the SVC ends the EL0 run; `run_in_user_mode` catches it.
    unsafe { asm!("svc #0", options(nomem, nostack)) };
}

/// Reads the 64-bit word at `address` without catching a fault (for EL0 closures, where the
/// fault ends the run and is returned by `run_in_user_mode`).
pub fn user_load(address: u64) -> u64 {
    let value: u64;
    // SAFETY: the load is outside Rust's memory model; a fault ends the user run.
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

/// What happens between loading and storing the vector registers in
/// [`vector_register_round_trip`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RoundTripEvent {
    /// `brk #0x77`, which `trap_exceptions` records and resumes after.
    Breakpoint,
    /// A pending IRQ, taken while IRQs are briefly unmasked.
    InterruptWindow,
}

/// Loads `values` into v0-v31 and `fpcr` into FPCR, lets `event` happen, stores v0-v31 back;
/// returns them and FPCR as read afterwards (then restores the old FPCR). For tests that the
/// FP/SIMD state survives exceptions: `Breakpoint` must run under `trap_exceptions` of
/// BRK64, `InterruptWindow` with an IRQ pending (it unmasks IRQs for one ISB).
pub fn vector_register_round_trip(values: &[u8; 512], fpcr: u64, event: RoundTripEvent) -> ([u8; 512], u64) {
    let mut out = [0u8; 512];
    let fpcr_after: u64;
    let interrupt = u64::from(event == RoundTripEvent::InterruptWindow);
    // SAFETY: reads `values` and writes `out` (512 bytes each, live locals); every vector
    // register is declared clobbered and FPCR is restored; the BRK is resumed by
    // `trap_exceptions` and an IRQ's handler returns.
    unsafe {
        asm!(
            "mrs {saved}, fpcr",
            "msr fpcr, {pattern}",
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{input}], #64",
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{input}], #64",
            "ld1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [{input}], #64",
            "ld1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [{input}], #64",
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{input}], #64",
            "ld1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{input}], #64",
            "ld1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{input}], #64",
            "ld1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{input}], #64",
            "cbnz {interrupt}, 2f",
            "brk #0x77",
            "b 3f",
            "2: msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            "3: st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{output}], #64",
            "st1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{output}], #64",
            "st1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [{output}], #64",
            "st1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [{output}], #64",
            "st1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{output}], #64",
            "st1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{output}], #64",
            "st1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{output}], #64",
            "st1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{output}], #64",
            "mrs {fpcr}, fpcr",
            "msr fpcr, {saved}",
            saved = out(reg) _,
            pattern = in(reg) fpcr,
            input = inout(reg) values.as_ptr() => _,
            output = inout(reg) out.as_mut_ptr() => _,
            interrupt = in(reg) interrupt,
            fpcr = out(reg) fpcr_after,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
            out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _,
            out("v14") _, out("v15") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
            out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        )
    };
    (out, fpcr_after)
}
