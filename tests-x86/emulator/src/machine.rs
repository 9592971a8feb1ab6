//! The emulator test's exact instruction forms: inline-assembly wrappers that run one
//! instruction (or one short sequence) against an address that the caller points at MMIO.
//!
//! The test is about exact encodings, so it cannot go through the runtime's generic wrappers;
//! this module opts into `unsafe` for its assembly and nothing else (plain loads, stores,
//! mappings and port I/O come from the runtime's safe `device` and `instructions`). Every
//! address passed in must be the emulator window the test maps (MMIO, or RAM pages the test
//! owns), never memory that Rust code owns, unless a function says otherwise.
#![allow(unsafe_code)]

use core::arch::asm;

use vmunit::arch::cpuid::Feature;
use vmunit::arch::device;
use vmunit::arch::{Exception, catch_exception};
use vmunit::catch::Attempt;

/// The arithmetic flags: OF, SF, ZF, AF, PF, CF.
pub const ARITHMETIC_FLAGS: u64 = 0x8d5;
/// RFLAGS.CF.
pub const CF: u64 = 1 << 0;
/// RFLAGS.PF.
pub const PF: u64 = 1 << 2;
/// RFLAGS.AF.
pub const AF: u64 = 1 << 4;
/// RFLAGS.ZF.
pub const ZF: u64 = 1 << 6;
/// RFLAGS.SF.
pub const SF: u64 = 1 << 7;
/// RFLAGS.OF.
pub const OF: u64 = 1 << 11;

/// The registers an instruction form reads and writes besides its memory operand: RAX (the
/// accumulator of CMPXCHG, MUL, DIV), RCX (the second operand or count), RDX (the third
/// operand, the high half of MUL and DIV) and the arithmetic flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct State {
    /// RAX.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RFLAGS (on input only the arithmetic flags count).
    pub flags: u64,
}

/// An instruction form with a memory operand at `address`.
pub type MemoryForm = fn(address: u64, state: State) -> State;
/// The same instruction with a register (holding `value`) in place of the memory operand;
/// returns that register too.
pub type RegisterForm = fn(value: u64, state: State) -> (u64, State);

/// Builds a [`MemoryForm`] from assembly lines that use `{address}` and RAX, RCX, RDX.
macro_rules! memory_form {
    ($($template:expr),+ $(,)?) => {{
        fn form(address: u64, state: $crate::machine::State) -> $crate::machine::State {
            let (mut rax, mut rcx, mut rdx, mut flags) = (state.rax, state.rcx, state.rdx, state.flags);
            // SAFETY: the caller points `address` at the test's MMIO window (or RAM the test
            // owns), which no Rust object occupies; the flags are restored apart from the
            // arithmetic ones, and every register the lines write is an operand.
            unsafe {
                core::arch::asm!(
                    "pushfq",
                    "and qword ptr [rsp], {keep}",
                    "or qword ptr [rsp], {flags}",
                    "popfq",
                    $($template,)+
                    "pushfq",
                    "pop {flags}",
                    address = in(reg) address,
                    flags = inout(reg) flags,
                    keep = const $crate::machine::KEEP_FLAGS,
                    inout("rax") rax,
                    inout("rcx") rcx,
                    inout("rdx") rdx,
                )
            };
            $crate::machine::State { rax, rcx, rdx, flags }
        }
        form as $crate::machine::MemoryForm
    }};
}

/// Builds a [`RegisterForm`] from assembly lines that use `{value}` and RAX, RCX, RDX.
macro_rules! register_form {
    ($($template:expr),+ $(,)?) => {{
        fn form(value: u64, state: $crate::machine::State) -> (u64, $crate::machine::State) {
            let (mut rax, mut rcx, mut rdx, mut flags) = (state.rax, state.rcx, state.rdx, state.flags);
            let mut value = value;
            // SAFETY: register-only lines; the flags are restored apart from the arithmetic ones.
            unsafe {
                core::arch::asm!(
                    "pushfq",
                    "and qword ptr [rsp], {keep}",
                    "or qword ptr [rsp], {flags}",
                    "popfq",
                    $($template,)+
                    "pushfq",
                    "pop {flags}",
                    value = inout(reg) value,
                    flags = inout(reg) flags,
                    keep = const $crate::machine::KEEP_FLAGS,
                    inout("rax") rax,
                    inout("rcx") rcx,
                    inout("rdx") rdx,
                )
            };
            (value, $crate::machine::State { rax, rcx, rdx, flags })
        }
        form as $crate::machine::RegisterForm
    }};
}

/// RFLAGS bits an instruction form keeps from the caller: everything but the arithmetic flags.
pub const KEEP_FLAGS: i32 = !(ARITHMETIC_FLAGS as i32);

/// Runs `form` on the memory at `address` after storing `initial` there; returns the 64-bit
/// word found there afterwards and the registers. An exception goes to the enclosing
/// `catch_exception` (the caller's).
pub fn run_memory_form(form: MemoryForm, address: u64, initial: u64, state: State) -> (u64, State) {
    write64(address, initial);
    let state = form(address, state);
    (read64(address), state)
}

pub use vmunit::arch::device::{
    read_u8 as read8, read_u64 as read64, write_u8 as write8, write_u64 as write64,
};

/// Fills `length` bytes at `address` with `value`, one byte store at a time.
pub fn fill(address: u64, length: u64, value: u8) {
    for offset in 0..length {
        write8(address + offset, value);
    }
}

pub use vmunit::arch::instructions::{in_u8 as in8, out_u32 as out32};

/// Registers after a string instruction: RSI, RDI, RCX, RAX and the arithmetic flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StringState {
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RCX.
    pub rcx: u64,
    /// RAX.
    pub rax: u64,
    /// The arithmetic flags.
    pub flags: u64,
}

/// A string instruction with its prefix, run with RSI, RDI, RCX, RAX and DX (the port) set,
/// with DF set when `backward`.
pub type StringForm = fn(rsi: u64, rdi: u64, rcx: u64, rax: u64, backward: bool) -> StringState;

/// Builds a [`StringForm`] from one string instruction line; `writes N` names an instruction
/// that stores N-byte elements through RDI (MOVS, STOS, INS), whose destination is checked to
/// lie in device memory (the MMIO hole or the device window, where no Rust object lives).
macro_rules! string_form {
    ($instruction:expr) => {
        string_form!($instruction, writes 0)
    };
    ($instruction:expr, writes $size:expr) => {{
        fn form(rsi: u64, rdi: u64, rcx: u64, rax: u64, backward: bool) -> $crate::machine::StringState {
            $crate::machine::check_string_destination(rdi, rcx, $size, backward);
            let (mut rsi, mut rdi, mut rcx, mut rax) = (rsi, rdi, rcx, rax);
            let flags: u64;
            // SAFETY: the only stores go through RDI, to device memory checked just above
            // (RCX elements of the instruction's size, in DF's direction); loads through RSI
            // fault at worst, into the caller's catch. DF is cleared again before the block ends.
            unsafe {
                core::arch::asm!(
                    "test {backward}, {backward}",
                    "jz 2f",
                    "std",
                    "2:",
                    "xor edx, edx",
                    "mov dx, 0xe0",
                    $instruction,
                    "pushfq",
                    "pop {flags}",
                    "cld",
                    backward = in(reg) u64::from(backward),
                    flags = out(reg) flags,
                    inout("rsi") rsi,
                    inout("rdi") rdi,
                    inout("rcx") rcx,
                    inout("rax") rax,
                    out("rdx") _,
                )
            };
            $crate::machine::StringState { rsi, rdi, rcx, rax, flags: flags & $crate::machine::ARITHMETIC_FLAGS }
        }
        form as $crate::machine::StringForm
    }};
}

/// Checks that a string instruction storing `count` elements of `size` bytes through `rdi`
/// (downwards when `backward`) writes only device memory; nothing to check when it stores
/// nothing (`size` 0, or no element).
///
/// # Panics
/// When the destination reaches outside the MMIO hole and the device window.
pub fn check_string_destination(rdi: u64, count: u64, size: u64, backward: bool) {
    let span = count.saturating_mul(size);
    if span == 0 {
        return;
    }
    let start = if backward {
        rdi.wrapping_add(size).wrapping_sub(span)
    } else {
        rdi
    };
    vmunit::arch::device::checked(start, span);
}

/// Runs `form` under `catch_exception`.
pub fn try_run_string(
    form: StringForm,
    rsi: u64,
    rdi: u64,
    rcx: u64,
    rax: u64,
    backward: bool,
) -> Result<StringState, Exception> {
    catch_exception(|| form(rsi, rdi, rcx, rax, backward))
}

/// CMPXCHG8B or CMPXCHG16B at `address`: compares EDX:EAX (RDX:RAX) with memory and on a
/// match stores ECX:EBX (RCX:RBX). Returns (RDX, RAX, ZF) after it.
pub fn try_compare_exchange_double(
    address: u64,
    wide: bool,
    expected: (u64, u64),
    new: (u64, u64),
) -> Result<(u64, u64, bool), Exception> {
    let address = device::checked(address, 16);
    catch_exception(|| {
        let (mut high, mut low) = expected;
        let zero: u8;
        // RBX cannot be an operand: it is swapped in and out around the instruction through
        // RDI, and every operand is an explicit register so that none is allocated to RBX.
        if wide {
            // SAFETY: `address` is the test's window (16 bytes); RBX is restored.
            unsafe {
                asm!(
                    "xchg rbx, rdi",
                    "lock cmpxchg16b xmmword ptr [rsi]",
                    "sete r8b",
                    "xchg rbx, rdi",
                    in("rsi") address,
                    inout("rdi") new.1 => _,
                    out("r8b") zero,
                    inout("rdx") high,
                    inout("rax") low,
                    in("rcx") new.0,
                )
            };
        } else {
            // SAFETY: `address` is the test's window (8 bytes); RBX is restored.
            unsafe {
                asm!(
                    "xchg rbx, rdi",
                    "cmpxchg8b qword ptr [rsi]",
                    "sete r8b",
                    "xchg rbx, rdi",
                    in("rsi") address,
                    inout("rdi") new.1 => _,
                    out("r8b") zero,
                    inout("rdx") high,
                    inout("rax") low,
                    in("rcx") new.0,
                )
            };
        }
        (high, low, zero != 0)
    })
}

/// Runs `code` (a sequence that faults) under `catch_exception`, after storing the address of
/// its first instruction; returns the exception and that address.
macro_rules! faulting {
    ($($template:expr),+ ; $($operands:tt)*) => {{
        let mut instruction = 0u64;
        let slot = &raw mut instruction;
        let result = vmunit::arch::catch_exception(|| {
            // SAFETY: the lines touch only the test's window (or registers), and the address
            // is stored through `slot` before anything can fault; the fault is caught.
            unsafe {
                core::arch::asm!(
                    "lea {scratch}, [rip + 2f]",
                    "mov qword ptr [{slot}], {scratch}",
                    "2:",
                    $($template,)+
                    slot = in(reg) slot,
                    scratch = out(reg) _,
                    $($operands)*
                )
            };
        });
        vmunit::catch::Attempt { result, address: instruction }
    }};
}

/// PUSH and POP with RSP inside the window: with `stack_top` as RSP, pushes an imm8, a
/// register, a memory word (read from `source`, RAM) and an imm32, then pops one into a
/// register and one into `destination` (RAM); returns RSP after the pushes, the popped
/// register and the final RSP.
///
/// # Panics
/// When the 32 bytes below `stack_top` are not device memory.
pub fn push_pop_on(stack_top: u64, source: &u64, destination: &mut u64) -> (u64, u64, u64) {
    let stack_top = device::checked(stack_top.wrapping_sub(32), 32) + 32;
    let (after_push, popped, after_pop): (u64, u64, u64);
    // SAFETY: RSP points at the test's window (MMIO the test owns) for the pushes and pops
    // only and is restored (an exception meanwhile would push its frame there, which works
    // too); `source` and `destination` are valid for 8 bytes.
    unsafe {
        asm!(
            "mov {saved}, rsp",
            "mov rsp, {top}",
            "push -7",
            "push {register}",
            "push qword ptr [{source}]",
            "push -7070707",
            "mov {after_push}, rsp",
            "pop {popped}",
            "pop qword ptr [{destination}]",
            "mov {after_pop}, rsp",
            "mov rsp, {saved}",
            saved = out(reg) _,
            top = in(reg) stack_top,
            register = in(reg) 0xffff_ffff_ffff_ffefu64,
            source = in(reg) source,
            destination = in(reg) destination,
            after_push = out(reg) after_push,
            popped = out(reg) popped,
            after_pop = out(reg) after_pop,
        )
    };
    (after_push, popped, after_pop)
}

/// PUSH m64 and POP m64 with the memory operand in the window and the stack in RAM: pushes
/// the word at `source`, pops it into `destination`.
///
/// # Panics
/// When either word is outside the MMIO hole and the device window.
pub fn push_pop_memory(source: u64, destination: u64) {
    let (source, destination) = (device::checked(source, 8), device::checked(destination, 8));
    // SAFETY: both words are device memory or window pages (checked above), where no Rust
    // object lives; the stack is balanced.
    unsafe {
        asm!(
            "push qword ptr [{source}]",
            "pop qword ptr [{destination}]",
            source = in(reg) source,
            destination = in(reg) destination,
        )
    };
}

/// PUSHW m16 then POPW into a register; returns the register and whether RSP came back.
pub fn push16_pop16(source: u64) -> (u16, bool) {
    let (value, before, after): (u16, u64, u64);
    // SAFETY: the stack is balanced (two bytes pushed, two popped).
    unsafe {
        asm!(
            "mov {before}, rsp",
            "push word ptr [{source}]",
            "pop {value:x}",
            "mov {after}, rsp",
            source = in(reg) source,
            before = out(reg) before,
            after = out(reg) after,
            value = out(reg) value,
        )
    };
    (value, before == after)
}

/// With RSP in the window at `stack_top`: CALL a local routine (its return address goes to
/// MMIO), which returns with RET (reading it back); then ENTER 0x18, 0 and LEAVE with RBP
/// saved on the MMIO stack. Returns (whether the routine ran and returned, RSP after ENTER
/// minus `stack_top`, RBP after ENTER minus `stack_top`, the word ENTER pushed, RSP after
/// LEAVE minus `stack_top`, RBP after LEAVE).
///
/// # Panics
/// When the 64 bytes below `stack_top` are not device memory.
pub fn call_enter_leave_on(stack_top: u64) -> (bool, u64, u64, u64, u64, u64) {
    let stack_top = device::checked(stack_top.wrapping_sub(0x40), 0x40) + 0x40;
    let mut results = [0u64; 6];
    // SAFETY: RSP and RBP are switched to the test's window and restored (RBP on the normal
    // stack, RSP in R8). Every operand is an explicit register, so none lives in RBP, which
    // the compiler may otherwise allocate; the routine is local and returns.
    unsafe {
        asm!(
            "push rbp",
            "mov r8, rsp",
            "mov rsp, rsi",
            "mov qword ptr [rdi], 0",
            "call 3f",
            "jmp 4f",
            "3:",
            "mov qword ptr [rdi], 1",
            "ret",
            "4:",
            "mov rbp, 0x5a5a5a5a",
            "enter 0x18, 0",
            "mov qword ptr [rdi + 8], rsp",
            "mov qword ptr [rdi + 16], rbp",
            "mov r9, qword ptr [rbp]",
            "mov qword ptr [rdi + 24], r9",
            "leave",
            "mov qword ptr [rdi + 32], rsp",
            "mov qword ptr [rdi + 40], rbp",
            "mov rsp, r8",
            "pop rbp",
            in("rdi") results.as_mut_ptr(),
            in("rsi") stack_top,
            out("r8") _,
            out("r9") _,
        )
    };
    let [ran, rsp_enter, rbp_enter, pushed, rsp_leave, rbp_leave] = results;
    (
        ran == 1,
        rsp_enter.wrapping_sub(stack_top),
        rbp_enter.wrapping_sub(stack_top),
        pushed,
        rsp_leave.wrapping_sub(stack_top),
        rbp_leave,
    )
}

/// JMP and CALL through a 64-bit pointer stored at `slot` (MMIO): returns which targets ran.
pub fn indirect_branches(slot: u64) -> (bool, bool) {
    let slot = device::checked(slot, 8);
    let (jumped, called): (u64, u64);
    // SAFETY: `slot` is the test's window; the targets are local labels, the call returns.
    unsafe {
        asm!(
            "xor {jumped:e}, {jumped:e}",
            "xor {called:e}, {called:e}",
            "lea {scratch}, [rip + 3f]",
            "mov qword ptr [{slot}], {scratch}",
            "jmp qword ptr [{slot}]",
            "jmp 5f",
            "3:",
            "mov {jumped:e}, 1",
            "lea {scratch}, [rip + 4f]",
            "mov qword ptr [{slot}], {scratch}",
            "call qword ptr [{slot}]",
            "jmp 5f",
            "4:",
            "mov {called:e}, 1",
            "ret",
            "5:",
            slot = in(reg) slot,
            scratch = out(reg) _,
            jumped = out(reg) jumped,
            called = out(reg) called,
        )
    };
    (jumped == 1, called == 1)
}

/// Far JMP through an m16:32 pointer at `slot` (MMIO; the selector stored with MOV m16, CS):
/// returns whether it reached its target and CS afterwards.
pub fn far_jump(slot: u64) -> (bool, u16) {
    let slot = device::checked(slot, 6);
    let (reached, cs): (u64, u64);
    // SAFETY: `slot` is the test's window; the target is a local label below 4 GiB (the image
    // is linked low), reached with the current code segment.
    unsafe {
        asm!(
            "xor {reached:e}, {reached:e}",
            "lea {scratch}, [rip + 3f]",
            "mov dword ptr [rax], {scratch:e}",
            "mov word ptr [rax + 4], cs",
            ".byte 0xff, 0x28", // jmp far [rax] (m16:32)
            "jmp 4f",
            "3:",
            "mov {reached:e}, 1",
            "4:",
            "mov {cs:e}, cs",
            in("rax") slot,
            scratch = out(reg) _,
            reached = out(reg) reached,
            cs = out(reg) cs,
        )
    };
    (reached == 1, cs as u16)
}

/// The physical address (in the MMIO region) that [`absolute_moves`] encodes.
pub const ABSOLUTE_ADDRESS: u64 = 0xff00_0100;

/// MOV with a 64-bit absolute address (opcodes A0-A3, moffs64) at [`ABSOLUTE_ADDRESS`]:
/// stores `value` with MOV moffs64, RAX and the byte 0x5c with MOV moffs8, AL 8 bytes further
/// on, then loads both back with MOV RAX, moffs64 and MOV AL, moffs8, RAX holding `merge`
/// before each load. Returns the two loaded RAX values.
pub fn absolute_moves(value: u64, merge: u64) -> (u64, u64) {
    let (wide, narrow): (u64, u64);
    // SAFETY: the encoded addresses are in the test device's MMIO region, which the identity
    // map covers and Rust does not own.
    unsafe {
        asm!(
            ".byte 0x48, 0xa3",
            ".quad 0xff000100", // mov [0xff000100], rax
            "mov rax, {merge}",
            ".byte 0x48, 0xa1",
            ".quad 0xff000100", // mov rax, [0xff000100]
            "mov {wide}, rax",
            "mov al, 0x5c",
            ".byte 0xa2",
            ".quad 0xff000108", // mov [0xff000108], al
            "mov rax, {merge}",
            ".byte 0xa0",
            ".quad 0xff000108", // mov al, [0xff000108]
            merge = in(reg) merge,
            wide = out(reg) wide,
            inout("rax") value => narrow,
        )
    };
    (wide, narrow)
}

/// Calls the code at `address` (C ABI, returns RAX).
///
/// # Safety
/// The code at `address` must follow the C ABI, return, and touch no memory Rust owns.
pub unsafe fn call_code(address: u64) -> u64 {
    let result: u64;
    // SAFETY: the caller guarantees a routine there that follows the C ABI and returns.
    unsafe { asm!("call {address}", address = in(reg) address, out("rax") result, clobber_abi("C")) };
    result
}

/// Writes `bytes` at `address` (a RAM page of the test's window mapped writable).
pub fn store_code(address: u64, bytes: &[u8]) {
    for (offset, byte) in bytes.iter().enumerate() {
        write8(address + offset as u64, *byte);
    }
}

/// SMSW m16 at `address`.
pub fn store_machine_status_to(address: u64) {
    let address = device::checked(address, 2);
    // SAFETY: the test's window, 2 bytes.
    unsafe { asm!("smsw word ptr [{address}]", address = in(reg) address, options(nostack)) };
}

/// SGDT m (10 bytes) at `address`.
pub fn store_gdtr_to(address: u64) {
    let address = device::checked(address, 10);
    // SAFETY: the test's window, 10 bytes.
    unsafe { asm!("sgdt [{address}]", address = in(reg) address, options(nostack)) };
}

/// MOV FS, m16 from `address`, then MOV m16, FS to `address + 2`; restores FS to 0 after.
pub fn try_segment_moves(address: u64) -> Result<(), Exception> {
    let address = device::checked(address, 4);
    catch_exception(|| {
        // SAFETY: a data selector (or a null one) goes into FS, which the runtime does not
        // use in 64-bit mode, and FS is nulled again.
        unsafe {
            asm!(
                "mov fs, word ptr [{address}]",
                "mov word ptr [{address} + 2], fs",
                "xor {scratch:e}, {scratch:e}",
                "mov fs, {scratch:e}",
                address = in(reg) address,
                scratch = out(reg) _,
                options(nostack),
            )
        }
    })
}

/// MOVNTI m32 and m64 (SSE2, general registers): stores `value` to `address` and its low
/// half to `address + 8`.
pub fn movnti(address: u64, value: u64) {
    let address = device::checked(address, 12);
    // SAFETY: the test's window.
    unsafe {
        asm!(
            "movnti qword ptr [{address}], {value}",
            "movnti dword ptr [{address} + 8], {value:e}",
            "sfence",
            address = in(reg) address,
            value = in(reg) value,
            options(nostack),
        )
    };
}

/// SSE moves between XMM0 and `address`: MOVDQU, MOVUPS, MOVAPD store the 16 bytes in `data`
/// to `address`, `address + 16`, `address + 32` (aligned), then MOVDQU, MOVUPS, MOVAPS load
/// each back into XMM1 and store to `out` (RAM). The caller enables SSE.
pub fn sse_moves(address: u64, data: &[u8; 16], out: &mut [[u8; 16]; 3]) {
    let address = device::checked(address, 48);
    // SAFETY: `address` is 16-byte aligned in the test's window (48 bytes); `data` and `out`
    // are valid; XMM0 and XMM1 are declared clobbered.
    unsafe {
        asm!(
            "movdqu xmm0, xmmword ptr [{data}]",
            "movdqu xmmword ptr [{address}], xmm0",
            "movups xmmword ptr [{address} + 16], xmm0",
            "movapd xmmword ptr [{address} + 32], xmm0",
            "movdqu xmm1, xmmword ptr [{address}]",
            "movdqu xmmword ptr [{out}], xmm1",
            "movups xmm1, xmmword ptr [{address} + 16]",
            "movdqu xmmword ptr [{out} + 16], xmm1",
            "movaps xmm1, xmmword ptr [{address} + 32]",
            "movdqu xmmword ptr [{out} + 32], xmm1",
            address = in(reg) address,
            data = in(reg) data,
            out = in(reg) out,
            out("xmm0") _,
            out("xmm1") _,
            options(nostack),
        )
    };
}

/// One instruction run on a memory operand in MMIO and, for reference, on a register.
#[derive(Clone, Copy)]
pub struct Case {
    /// The instruction form, as the SDM writes it ("ADD m32, r32").
    pub name: &'static str,
    /// The forms it is reported with ("ADD m, r" for its four sizes).
    pub family: &'static str,
    /// The memory operand's size in bits.
    pub width: u32,
    /// The arithmetic flags the SDM defines for it (the others are undefined).
    pub defined: u64,
    /// The CPUID feature that advertises it, if any.
    pub feature: Option<Feature>,
    /// Whether some input sets make it fault (#DE), on memory and register alike.
    pub faults: bool,
    /// The form with the memory operand.
    pub memory: MemoryForm,
    /// The form with a register in its place.
    pub register: RegisterForm,
}

macro_rules! case {
    ($name:expr, $width:expr, $defined:expr, [$($memory:expr),+], [$($register:expr),+]) => {
        case!($name, $name, $width, $defined, [$($memory),+], [$($register),+])
    };
    ($name:expr, $family:expr, $width:expr, $defined:expr, [$($memory:expr),+], [$($register:expr),+]) => {
        Case {
            name: $name,
            family: $family,
            width: $width,
            defined: $defined,
            feature: None,
            faults: false,
            memory: memory_form!($($memory),+),
            register: register_form!($($register),+),
        }
    };
}

/// `OP m, r` in the four sizes, the second operand in RCX; `$lock` prefixes the memory form.
macro_rules! binary {
    ($name:literal, $lock:literal, $mnemonic:literal, $defined:expr) => {
        [
            case!(
                concat!($name, " m8, r8"),
                concat!($name, " m, r"),
                8,
                $defined,
                [concat!($lock, $mnemonic, " byte ptr [{address}], cl")],
                [concat!($mnemonic, " {value:l}, cl")]
            ),
            case!(
                concat!($name, " m16, r16"),
                concat!($name, " m, r"),
                16,
                $defined,
                [concat!($lock, $mnemonic, " word ptr [{address}], cx")],
                [concat!($mnemonic, " {value:x}, cx")]
            ),
            case!(
                concat!($name, " m32, r32"),
                concat!($name, " m, r"),
                32,
                $defined,
                [concat!($lock, $mnemonic, " dword ptr [{address}], ecx")],
                [concat!($mnemonic, " {value:e}, ecx")]
            ),
            case!(
                concat!($name, " m64, r64"),
                concat!($name, " m, r"),
                64,
                $defined,
                [concat!($lock, $mnemonic, " qword ptr [{address}], rcx")],
                [concat!($mnemonic, " {value}, rcx")]
            ),
        ]
    };
}

/// `OP r, m` in the four sizes, the destination RCX.
macro_rules! to_register {
    ($name:literal, $mnemonic:literal, $defined:expr) => {
        [
            case!(
                concat!($name, " r8, m8"),
                concat!($name, " r, m"),
                8,
                $defined,
                [concat!($mnemonic, " cl, byte ptr [{address}]")],
                [concat!($mnemonic, " cl, {value:l}")]
            ),
            case!(
                concat!($name, " r16, m16"),
                concat!($name, " r, m"),
                16,
                $defined,
                [concat!($mnemonic, " cx, word ptr [{address}]")],
                [concat!($mnemonic, " cx, {value:x}")]
            ),
            case!(
                concat!($name, " r32, m32"),
                concat!($name, " r, m"),
                32,
                $defined,
                [concat!($mnemonic, " ecx, dword ptr [{address}]")],
                [concat!($mnemonic, " ecx, {value:e}")]
            ),
            case!(
                concat!($name, " r64, m64"),
                concat!($name, " r, m"),
                64,
                $defined,
                [concat!($mnemonic, " rcx, qword ptr [{address}]")],
                [concat!($mnemonic, " rcx, {value}")]
            ),
        ]
    };
}

/// `OP m` in the four sizes (the operand list `$rest`, written `$label` in names, follows the
/// memory operand).
macro_rules! unary {
    ($name:literal, $lock:literal, $mnemonic:literal, $rest:literal, $label:literal, $defined:expr) => {
        [
            case!(
                concat!($name, " m8", $label),
                concat!($name, " m", $label),
                8,
                $defined,
                [concat!($lock, $mnemonic, " byte ptr [{address}]", $rest)],
                [concat!($mnemonic, " {value:l}", $rest)]
            ),
            case!(
                concat!($name, " m16", $label),
                concat!($name, " m", $label),
                16,
                $defined,
                [concat!($lock, $mnemonic, " word ptr [{address}]", $rest)],
                [concat!($mnemonic, " {value:x}", $rest)]
            ),
            case!(
                concat!($name, " m32", $label),
                concat!($name, " m", $label),
                32,
                $defined,
                [concat!($lock, $mnemonic, " dword ptr [{address}]", $rest)],
                [concat!($mnemonic, " {value:e}", $rest)]
            ),
            case!(
                concat!($name, " m64", $label),
                concat!($name, " m", $label),
                64,
                $defined,
                [concat!($lock, $mnemonic, " qword ptr [{address}]", $rest)],
                [concat!($mnemonic, " {value}", $rest)]
            ),
        ]
    };
}

/// `BTx m, r` in the three sizes, the bit offset RCX masked to 0..15 first (an offset inside
/// the operand, where the register form means the same bit).
macro_rules! bit_test {
    ($name:literal, $lock:literal, $mnemonic:literal) => {
        [
            case!(
                concat!($name, " m16, r16"),
                concat!($name, " m, r"),
                16,
                CF,
                [
                    "and ecx, 15",
                    concat!($lock, $mnemonic, " word ptr [{address}], cx")
                ],
                ["and ecx, 15", concat!($mnemonic, " {value:x}, cx")]
            ),
            case!(
                concat!($name, " m32, r32"),
                concat!($name, " m, r"),
                32,
                CF,
                [
                    "and ecx, 15",
                    concat!($lock, $mnemonic, " dword ptr [{address}], ecx")
                ],
                ["and ecx, 15", concat!($mnemonic, " {value:e}, ecx")]
            ),
            case!(
                concat!($name, " m64, r64"),
                concat!($name, " m, r"),
                64,
                CF,
                [
                    "and ecx, 15",
                    concat!($lock, $mnemonic, " qword ptr [{address}], rcx")
                ],
                ["and ecx, 15", concat!($mnemonic, " {value}, rcx")]
            ),
        ]
    };
}

/// Flags that shifts define for every count used here (CF is undefined for counts at least
/// the operand size, OF for counts above 1, AF always).
const SHIFT_FLAGS: u64 = SF | ZF | PF;
/// Flags that logical operations define (AF is undefined).
const LOGIC_FLAGS: u64 = OF | SF | ZF | PF | CF;

/// Every instruction form the test compares between MMIO and a register.
pub fn cases() -> alloc::vec::Vec<Case> {
    let mut cases = alloc::vec::Vec::new();
    let groups: &[&[Case]] = &[
        // Two operands, memory destination.
        &binary!("MOV", "", "mov", ARITHMETIC_FLAGS),
        &binary!("ADD", "", "add", ARITHMETIC_FLAGS),
        &binary!("OR", "", "or", LOGIC_FLAGS),
        &binary!("ADC", "", "adc", ARITHMETIC_FLAGS),
        &binary!("SBB", "", "sbb", ARITHMETIC_FLAGS),
        &binary!("AND", "", "and", LOGIC_FLAGS),
        &binary!("SUB", "", "sub", ARITHMETIC_FLAGS),
        &binary!("XOR", "", "xor", LOGIC_FLAGS),
        &binary!("CMP", "", "cmp", ARITHMETIC_FLAGS),
        &binary!("TEST", "", "test", LOGIC_FLAGS),
        &binary!("XCHG", "", "xchg", ARITHMETIC_FLAGS),
        &binary!("XADD", "", "xadd", ARITHMETIC_FLAGS),
        &binary!("CMPXCHG", "", "cmpxchg", ARITHMETIC_FLAGS),
        // LOCK-prefixed read-modify-write forms.
        &binary!("LOCK ADD", "lock ", "add", ARITHMETIC_FLAGS),
        &binary!("LOCK OR", "lock ", "or", LOGIC_FLAGS),
        &binary!("LOCK ADC", "lock ", "adc", ARITHMETIC_FLAGS),
        &binary!("LOCK SBB", "lock ", "sbb", ARITHMETIC_FLAGS),
        &binary!("LOCK AND", "lock ", "and", LOGIC_FLAGS),
        &binary!("LOCK SUB", "lock ", "sub", ARITHMETIC_FLAGS),
        &binary!("LOCK XOR", "lock ", "xor", LOGIC_FLAGS),
        &binary!("LOCK XADD", "lock ", "xadd", ARITHMETIC_FLAGS),
        &binary!("LOCK CMPXCHG", "lock ", "cmpxchg", ARITHMETIC_FLAGS),
        // Memory source, register destination.
        &to_register!("MOV", "mov", ARITHMETIC_FLAGS),
        &to_register!("ADD", "add", ARITHMETIC_FLAGS),
        &to_register!("SBB", "sbb", ARITHMETIC_FLAGS),
        &to_register!("XOR", "xor", LOGIC_FLAGS),
        &to_register!("CMP", "cmp", ARITHMETIC_FLAGS),
        // One operand.
        &unary!("INC", "", "inc", "", "", ARITHMETIC_FLAGS),
        &unary!("DEC", "", "dec", "", "", ARITHMETIC_FLAGS),
        &unary!("NEG", "", "neg", "", "", ARITHMETIC_FLAGS),
        &unary!("NOT", "", "not", "", "", ARITHMETIC_FLAGS),
        &unary!("LOCK INC", "lock ", "inc", "", "", ARITHMETIC_FLAGS),
        &unary!("LOCK DEC", "lock ", "dec", "", "", ARITHMETIC_FLAGS),
        &unary!("LOCK NEG", "lock ", "neg", "", "", ARITHMETIC_FLAGS),
        &unary!("LOCK NOT", "lock ", "not", "", "", ARITHMETIC_FLAGS),
        &unary!("MUL", "", "mul", "", "", OF | CF),
        &unary!("IMUL", "", "imul", "", "", OF | CF),
        &unary!("DIV", "", "div", "", "", 0),
        &unary!("IDIV", "", "idiv", "", "", 0),
        // Shifts and rotates.
        &unary!("SHL", "", "shl", ", cl", ", CL", SHIFT_FLAGS),
        &unary!("SHR", "", "shr", ", cl", ", CL", SHIFT_FLAGS),
        &unary!("SAR", "", "sar", ", cl", ", CL", SHIFT_FLAGS),
        &unary!("ROL", "", "rol", ", cl", ", CL", CF),
        &unary!("ROR", "", "ror", ", cl", ", CL", CF),
        &unary!("RCL", "", "rcl", ", cl", ", CL", CF),
        &unary!("RCR", "", "rcr", ", cl", ", CL", CF),
        &unary!("SHL", "", "shl", ", 1", ", 1", ARITHMETIC_FLAGS & !AF),
        &unary!("SAR", "", "sar", ", 3", ", imm8", SHIFT_FLAGS | CF),
        &unary!("ROR", "", "ror", ", 5", ", imm8", CF),
        // Bit tests with offsets inside the operand.
        &bit_test!("BT", "", "bt"),
        &bit_test!("BTS", "", "bts"),
        &bit_test!("BTR", "", "btr"),
        &bit_test!("BTC", "", "btc"),
        &bit_test!("LOCK BTS", "lock ", "bts"),
        &bit_test!("LOCK BTR", "lock ", "btr"),
        &bit_test!("LOCK BTC", "lock ", "btc"),
    ];
    for group in groups {
        cases.extend_from_slice(group);
    }
    for case in &mut cases {
        case.faults = case.family.ends_with("DIV m");
    }
    cases.extend(single_cases());
    cases
}

/// Forms that do not come in a regular set of sizes.
fn single_cases() -> [Case; 39] {
    let shld_flags = SHIFT_FLAGS | CF;
    [
        // Immediate operands.
        case!(
            "ADD m32, imm8",
            32,
            ARITHMETIC_FLAGS,
            ["add dword ptr [{address}], -3"],
            ["add {value:e}, -3"]
        ),
        case!(
            "ADC m32, imm8",
            32,
            ARITHMETIC_FLAGS,
            ["adc dword ptr [{address}], 0x7f"],
            ["adc {value:e}, 0x7f"]
        ),
        case!(
            "SBB m8, imm8",
            8,
            ARITHMETIC_FLAGS,
            ["sbb byte ptr [{address}], 0x81"],
            ["sbb {value:l}, 0x81"]
        ),
        case!(
            "OR m16, imm16",
            16,
            LOGIC_FLAGS,
            ["or word ptr [{address}], 0x1234"],
            ["or {value:x}, 0x1234"]
        ),
        case!(
            "AND m64, imm32",
            64,
            LOGIC_FLAGS,
            ["and qword ptr [{address}], -0x10001"],
            ["and {value}, -0x10001"]
        ),
        case!(
            "XOR m8, imm8",
            8,
            LOGIC_FLAGS,
            ["xor byte ptr [{address}], 0x5a"],
            ["xor {value:l}, 0x5a"]
        ),
        case!(
            "SUB m64, imm8",
            64,
            ARITHMETIC_FLAGS,
            ["sub qword ptr [{address}], 0x70"],
            ["sub {value}, 0x70"]
        ),
        case!(
            "CMP m32, imm32",
            32,
            ARITHMETIC_FLAGS,
            ["cmp dword ptr [{address}], 0x80008080"],
            ["cmp {value:e}, 0x80008080"]
        ),
        case!(
            "TEST m8, imm8",
            8,
            LOGIC_FLAGS,
            ["test byte ptr [{address}], 0x81"],
            ["test {value:l}, 0x81"]
        ),
        case!(
            "MOV m64, imm32",
            64,
            ARITHMETIC_FLAGS,
            ["mov qword ptr [{address}], -2"],
            ["mov {value}, -2"]
        ),
        case!(
            "MOV m16, imm16",
            16,
            ARITHMETIC_FLAGS,
            ["mov word ptr [{address}], 0xbeef"],
            ["mov {value:x}, 0xbeef"]
        ),
        case!(
            "MOV m8, imm8",
            8,
            ARITHMETIC_FLAGS,
            ["mov byte ptr [{address}], 0x99"],
            ["mov {value:l}, 0x99"]
        ),
        case!(
            "LOCK ADD m64, imm8",
            64,
            ARITHMETIC_FLAGS,
            ["lock add qword ptr [{address}], 1"],
            ["add {value}, 1"]
        ),
        case!(
            "LOCK BTS m32, imm8",
            32,
            CF,
            ["lock bts dword ptr [{address}], 13"],
            ["bts {value:e}, 13"]
        ),
        case!(
            "BT m16, imm8",
            16,
            CF,
            ["bt word ptr [{address}], 9"],
            ["bt {value:x}, 9"]
        ),
        case!(
            "BTR m64, imm8",
            64,
            CF,
            ["btr qword ptr [{address}], 50"],
            ["btr {value}, 50"]
        ),
        case!(
            "BTC m64, imm8",
            64,
            CF,
            ["btc qword ptr [{address}], 63"],
            ["btc {value}, 63"]
        ),
        // Double shifts; the 16-bit count stays below 16, where the result is defined.
        case!(
            "SHLD m16, r16, CL",
            16,
            shld_flags,
            ["and ecx, 15", "shld word ptr [{address}], dx, cl"],
            ["and ecx, 15", "shld {value:x}, dx, cl"]
        ),
        case!(
            "SHLD m32, r32, imm8",
            32,
            shld_flags,
            ["shld dword ptr [{address}], edx, 5"],
            ["shld {value:e}, edx, 5"]
        ),
        case!(
            "SHLD m64, r64, CL",
            64,
            shld_flags,
            ["shld qword ptr [{address}], rdx, cl"],
            ["shld {value}, rdx, cl"]
        ),
        case!(
            "SHRD m16, r16, imm8",
            16,
            shld_flags,
            ["shrd word ptr [{address}], dx, 7"],
            ["shrd {value:x}, dx, 7"]
        ),
        case!(
            "SHRD m32, r32, CL",
            32,
            shld_flags,
            ["shrd dword ptr [{address}], edx, cl"],
            ["shrd {value:e}, edx, cl"]
        ),
        case!(
            "SHRD m64, r64, imm8",
            64,
            shld_flags,
            ["shrd qword ptr [{address}], rdx, 33"],
            ["shrd {value}, rdx, 33"]
        ),
        // Loads that extend.
        case!(
            "MOVZX r32, m8",
            8,
            ARITHMETIC_FLAGS,
            ["movzx ecx, byte ptr [{address}]"],
            ["movzx ecx, {value:l}"]
        ),
        case!(
            "MOVZX r64, m16",
            16,
            ARITHMETIC_FLAGS,
            ["movzx rcx, word ptr [{address}]"],
            ["movzx rcx, {value:x}"]
        ),
        case!(
            "MOVSX r16, m8",
            8,
            ARITHMETIC_FLAGS,
            ["movsx cx, byte ptr [{address}]"],
            ["movsx cx, {value:l}"]
        ),
        case!(
            "MOVSX r64, m16",
            16,
            ARITHMETIC_FLAGS,
            ["movsx rcx, word ptr [{address}]"],
            ["movsx rcx, {value:x}"]
        ),
        case!(
            "MOVSXD r64, m32",
            32,
            ARITHMETIC_FLAGS,
            ["movsxd rcx, dword ptr [{address}]"],
            ["movsxd rcx, {value:e}"]
        ),
        // Conditional moves: a 32-bit CMOVcc clears bits 63:32 even when it does not move.
        case!(
            "CMOVE r32, m32",
            32,
            ARITHMETIC_FLAGS,
            ["cmove ecx, dword ptr [{address}]"],
            ["cmove ecx, {value:e}"]
        ),
        case!(
            "CMOVNE r64, m64",
            64,
            ARITHMETIC_FLAGS,
            ["cmovne rcx, qword ptr [{address}]"],
            ["cmovne rcx, {value}"]
        ),
        case!(
            "SETB m8",
            8,
            ARITHMETIC_FLAGS,
            ["setb byte ptr [{address}]"],
            ["setb {value:l}"]
        ),
        // Bit scans (every source here is non-zero) and multiplications.
        case!(
            "BSF r32, m32",
            32,
            ZF,
            ["bsf ecx, dword ptr [{address}]"],
            ["bsf ecx, {value:e}"]
        ),
        case!(
            "BSR r64, m64",
            64,
            ZF,
            ["bsr rcx, qword ptr [{address}]"],
            ["bsr rcx, {value}"]
        ),
        case!(
            "IMUL r64, m64",
            64,
            OF | CF,
            ["imul rcx, qword ptr [{address}]"],
            ["imul rcx, {value}"]
        ),
        case!(
            "IMUL r32, m32, imm8",
            32,
            OF | CF,
            ["imul ecx, dword ptr [{address}], 7"],
            ["imul ecx, {value:e}, 7"]
        ),
        case!(
            "IMUL r16, m16, imm16",
            16,
            OF | CF,
            ["imul cx, word ptr [{address}], 300"],
            ["imul cx, {value:x}, 300"]
        ),
        Case {
            feature: Some(Feature::Movbe),
            ..case!(
                "MOVBE r32, m32",
                32,
                ARITHMETIC_FLAGS,
                ["movbe ecx, dword ptr [{address}]"],
                ["mov ecx, {value:e}", "bswap ecx"]
            )
        },
        Case {
            feature: Some(Feature::Movbe),
            ..case!(
                "MOVBE m64, r64",
                64,
                ARITHMETIC_FLAGS,
                ["movbe qword ptr [{address}], rcx"],
                ["mov {value}, rcx", "bswap {value}"]
            )
        },
        Case {
            feature: Some(Feature::Popcnt),
            ..case!(
                "POPCNT r64, m64",
                64,
                ARITHMETIC_FLAGS,
                ["popcnt rcx, qword ptr [{address}]"],
                ["popcnt rcx, {value}"]
            )
        },
    ]
}

/// MOV m64, r64 at `address`; returns an [`Attempt`]: the exception and the instruction's address.
pub fn try_store(address: u64, value: u64) -> Attempt<()> {
    let address = device::checked(address, 8);
    faulting!("mov qword ptr [{address}], {value}"; address = in(reg) address, value = in(reg) value)
}

/// MOV m32, r32 at `address`; returns an [`Attempt`]: the exception and the instruction's address.
pub fn try_store32(address: u64, value: u32) -> Attempt<()> {
    let address = device::checked(address, 4);
    faulting!("mov dword ptr [{address}], {value:e}"; address = in(reg) address, value = in(reg) value)
}

/// MOV r64, m64 from `address` (discarding the value); returns an [`Attempt`]: the
/// exception and the instruction's address.
pub fn try_load(address: u64) -> Attempt<()> {
    faulting!("mov {value}, qword ptr [{address}]"; address = in(reg) address, value = out(reg) _)
}

/// REP STOSQ of `count` copies of `value` from `address` upwards.
pub fn try_rep_stosq(address: u64, count: u64, value: u64) -> Attempt<()> {
    let address = device::checked(address, count * 8);
    faulting!("rep stosq"; inout("rdi") address => _, inout("rcx") count => _, in("rax") value)
}

/// JMP through the 64-bit pointer at `slot`, expected to fault before it jumps.
pub fn try_jump_through(slot: u64) -> Attempt<()> {
    faulting!("jmp qword ptr [{slot_address}]"; slot_address = in(reg) slot)
}

/// CALL through the 64-bit pointer at `slot`, expected to fault before it calls.
pub fn try_call_through(slot: u64) -> Attempt<()> {
    faulting!("call qword ptr [{slot_address}]"; slot_address = in(reg) slot)
}

/// LOCK ADD EAX, ECX (F0 01 C8): LOCK on a register destination, which raises #UD.
pub fn try_lock_register_add() -> Attempt<()> {
    faulting!(".byte 0xf0, 0x01, 0xc8"; out("eax") _, out("ecx") _)
}

/// LOCK MOV [RAX], ECX (F0 89 08) at `address`: MOV is not lockable, which raises #UD.
pub fn try_lock_move(address: u64) -> Attempt<()> {
    let address = device::checked(address, 4);
    faulting!(".byte 0xf0, 0x89, 0x08"; in("rax") address, in("ecx") 0x5555_5555u32)
}

/// MOVBE with a register source (0F 38 F0 C0), an encoding that raises #UD.
pub fn try_movbe_register() -> Attempt<()> {
    faulting!(".byte 0x0f, 0x38, 0xf0, 0xc0"; out("eax") _)
}

/// LEA with a register source (8D C0), an encoding that raises #UD.
pub fn try_lea_register() -> Attempt<()> {
    faulting!(".byte 0x8d, 0xc0"; out("eax") _)
}

/// DIV m64 at `address` with RDX:RAX = `high`:`low`.
pub fn try_divide_by_memory(address: u64, high: u64, low: u64) -> Attempt<()> {
    faulting!("div qword ptr [{address}]"; address = in(reg) address, inout("rax") low => _, inout("rdx") high => _)
}

/// MOVAPS XMM0, m128 at `address` (the caller enables SSE).
pub fn try_movaps_load(address: u64) -> Attempt<()> {
    faulting!("movaps xmm0, xmmword ptr [{address}]"; address = in(reg) address, out("xmm0") _)
}

/// REP MOVSB.
pub const REP_MOVSB: StringForm = string_form!("rep movsb", writes 1);
/// REP MOVSW.
pub const REP_MOVSW: StringForm = string_form!("rep movsw", writes 2);
/// REP MOVSD.
pub const REP_MOVSD: StringForm = string_form!("rep movsd", writes 4);
/// REP MOVSQ.
pub const REP_MOVSQ: StringForm = string_form!("rep movsq", writes 8);
/// REP STOSB.
pub const REP_STOSB: StringForm = string_form!("rep stosb", writes 1);
/// REP STOSW.
pub const REP_STOSW: StringForm = string_form!("rep stosw", writes 2);
/// REP STOSD.
pub const REP_STOSD: StringForm = string_form!("rep stosd", writes 4);
/// REP STOSQ.
pub const REP_STOSQ: StringForm = string_form!("rep stosq", writes 8);
/// LODSB.
pub const LODSB: StringForm = string_form!("lodsb");
/// LODSW.
pub const LODSW: StringForm = string_form!("lodsw");
/// LODSD.
pub const LODSD: StringForm = string_form!("lodsd");
/// REP LODSQ.
pub const REP_LODSQ: StringForm = string_form!("rep lodsq");
/// REPE CMPSB.
pub const REPE_CMPSB: StringForm = string_form!("repe cmpsb");
/// REPE CMPSD.
pub const REPE_CMPSD: StringForm = string_form!("repe cmpsd");
/// REPE CMPSQ.
pub const REPE_CMPSQ: StringForm = string_form!("repe cmpsq");
/// REPNE SCASB.
pub const REPNE_SCASB: StringForm = string_form!("repne scasb");
/// SCASW.
pub const SCASW: StringForm = string_form!("scasw");
/// REPE SCASQ.
pub const REPE_SCASQ: StringForm = string_form!("repe scasq");
/// REP INSB from the test device's port 0xE0.
pub const REP_INSB: StringForm = string_form!("rep insb", writes 1);
/// REP OUTSB to the test device's port 0xE0.
pub const REP_OUTSB: StringForm = string_form!("rep outsb");

/// BT m32, r32 (bit offset in RCX).
pub const BT_REGISTER32: MemoryForm = memory_form!("bt dword ptr [{address}], ecx");
/// BTS m32, r32.
pub const BTS_REGISTER32: MemoryForm = memory_form!("bts dword ptr [{address}], ecx");
/// BTS m64, r64.
pub const BTS_REGISTER64: MemoryForm = memory_form!("bts qword ptr [{address}], rcx");
/// BTR m64, r64.
pub const BTR_REGISTER64: MemoryForm = memory_form!("btr qword ptr [{address}], rcx");
/// BTC m16, r16.
pub const BTC_REGISTER16: MemoryForm = memory_form!("btc word ptr [{address}], cx");
/// BTS m32, 33: an immediate offset beyond the operand.
pub const BTS_IMMEDIATE32: MemoryForm = memory_form!("bts dword ptr [{address}], 33");
/// BTC m64, 66: an immediate offset beyond the operand.
pub const BTC_IMMEDIATE64: MemoryForm = memory_form!("btc qword ptr [{address}], 66");

/// MMX MOVQ between MM0/MM1 and `address`: stores `value` with MOVQ m64, MM0, loads it back
/// with MOVQ MM1, m64 and returns MM1; EMMS ends MMX mode. The caller enables the FPU.
pub fn mmx_moves(address: u64, value: u64) -> u64 {
    let address = device::checked(address, 8);
    let mut loaded = 0u64;
    // SAFETY: `address` is the test's window; `value` and `loaded` are locals; the x87/MMX
    // state is reset by FNINIT and left by EMMS, and MM0/MM1 are declared clobbered.
    unsafe {
        asm!(
            "fninit",
            "movq mm0, qword ptr [{value}]",
            "movq qword ptr [{address}], mm0",
            "movq mm1, qword ptr [{address}]",
            "movq qword ptr [{loaded}], mm1",
            "emms",
            address = in(reg) address,
            value = in(reg) &value,
            loaded = in(reg) &mut loaded,
            out("mm0") _,
            out("mm1") _,
            options(nostack),
        )
    };
    loaded
}

/// kvm-unit-tests' test_smsw_reg: SMSW into AX, EAX and RAX, each starting from `rax`.
/// Returns the three RAX values.
pub fn store_machine_status_registers(rax: u64) -> [u64; 3] {
    let (mut word, mut double, mut quad) = (rax, rax, rax);
    // SAFETY: SMSW only writes its register operand.
    unsafe {
        asm!(
            "smsw {word:x}",
            "smsw {double:e}",
            "smsw {quad:r}",
            word = inout(reg) word,
            double = inout(reg) double,
            quad = inout(reg) quad,
            options(nomem, nostack, preserves_flags),
        )
    };
    [word, double, quad]
}

/// LMSW m16 at `address`: loads CR0 bits 3:0 from memory (MP, EM, TS; PE only set), or
/// returns the exception.
pub fn try_load_machine_status_from(address: u64) -> Result<(), Exception> {
    let address = device::checked(address, 2);
    catch_exception(|| {
        // SAFETY: the test's window, 2 bytes read; LMSW changes only CR0.MP/EM/TS, none of the
        // bits the runtime owns (PE is set already).
        unsafe { asm!("lmsw word ptr [{address}]", address = in(reg) address, options(nostack)) };
    })
}

/// MOVUPS m128, XMM0 at `address` (which may cross a page), XMM0 loaded with `data` first.
/// Returns the store's outcome and its address. The caller enables SSE.
pub fn try_movups_store(address: u64, data: &[u8; 16]) -> Attempt<()> {
    let address = device::checked(address, 16);
    let mut instruction = 0u64;
    let slot = &raw mut instruction;
    let result = catch_exception(|| {
        // SAFETY: `data` is a live 16-byte local read; the store touches only the test's window
        // (16 bytes, checked); the address is stored through `slot` before the store; a fault
        // is caught; XMM0 is declared clobbered.
        unsafe {
            asm!(
                "movups xmm0, xmmword ptr [{data}]",
                "lea {scratch}, [rip + 2f]",
                "mov qword ptr [{slot}], {scratch}",
                "2: movups xmmword ptr [{address}], xmm0",
                data = in(reg) data.as_ptr(),
                slot = in(reg) slot,
                scratch = out(reg) _,
                address = in(reg) address,
                out("xmm0") _,
                options(nostack),
            )
        };
    });
    Attempt {
        result,
        address: instruction,
    }
}

/// emulator64's test_mmx_movq_mf: with all x87 exceptions unmasked (FLDCW 0), 0.0 / 0.0
/// (FDIVP) leaves an x87 exception pending, and the next MMX instruction, MOVQ m64, MM0 to
/// `address`, raises #MF (with CR0.NE set). FNCLEX and EMMS clean up afterwards. Returns the
/// outcome and the MOVQ's address. The caller enables the FPU and sets CR0.NE.
pub fn try_mmx_store_with_pending_x87_exception(address: u64) -> Attempt<()> {
    let address = device::checked(address, 8);
    let control_word = 0u16;
    let mut instruction = 0u64;
    let slot = &raw mut instruction;
    let result = catch_exception(|| {
        // SAFETY: `control_word` is a live local read by FLDCW; the MOVQ writes 8 bytes of the
        // test's window (checked); the address is stored through `slot` first; #MF is caught.
        // The x87/MMX state is reset by FNINIT here and cleaned below; MM0 is clobbered.
        unsafe {
            asm!(
                "fninit",
                "fldcw word ptr [{control_word}]",
                "fldz",
                "fldz",
                "fdivp st(1), st",
                "lea {scratch}, [rip + 2f]",
                "mov qword ptr [{slot}], {scratch}",
                "2: movq qword ptr [{address}], mm0",
                control_word = in(reg) &control_word,
                slot = in(reg) slot,
                scratch = out(reg) _,
                address = in(reg) address,
                out("mm0") _,
                options(nostack),
            )
        };
    });
    // SAFETY: FNCLEX clears the pending x87 exception flags, EMMS leaves MMX mode, FNINIT
    // resets the x87 state: nothing Rust code (soft-float) relies on.
    unsafe { asm!("fnclex", "emms", "fninit", options(nomem, nostack)) };
    Attempt {
        result,
        address: instruction,
    }
}

/// LTR m16 at `address` (the selector read from the window), or the exception. The caller
/// makes the TSS it names available first.
pub fn try_load_task_register_from(address: u64) -> Result<(), Exception> {
    let address = device::checked(address, 2);
    catch_exception(|| {
        // SAFETY: the test's window, 2 bytes read. The selector the caller stored there names
        // this CPU's own TSS, already loaded: LTR reloads the same task register.
        unsafe { asm!("ltr word ptr [{address}]", address = in(reg) address, options(nostack)) };
    })
}

/// Loads GS with `selector` (in 64-bit mode this also loads the descriptor's base, 0; write
/// IA32_GS_BASE afterwards). The runtime does not use GS.
pub fn load_gs(selector: u16) {
    // SAFETY: MOV GS only changes GS, which no code of the runtime or the test relies on; the
    // caller passes a valid data selector or 0.
    unsafe { asm!("mov gs, {0:x}", in(reg) selector, options(nomem, nostack, preserves_flags)) };
}

/// GS's selector and the 64-bit word at GS:`offset` (GS's base plus `offset`): for code at
/// CPL 3, after the IRET that entered it.
pub fn read_gs_relative(offset: u64) -> (u16, u64) {
    let (selector, value): (u16, u64);
    // SAFETY: the load reads 8 bytes at GS base + `offset`, which the caller points at a
    // readable word; a fault is the caller's to catch (run_in_user_mode does).
    unsafe {
        asm!(
            "mov {selector:x}, gs",
            "mov {value}, qword ptr gs:[{offset}]",
            selector = out(reg) selector,
            value = out(reg) value,
            offset = in(reg) offset,
            options(readonly, nostack, preserves_flags),
        )
    };
    (selector, value)
}
