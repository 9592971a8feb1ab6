//! Debug registers (DR0-DR7) and debug-exception helpers for the `debug` test.
//!
//! [`record_debug_exceptions`] runs a closure with a private #DB handler that records, for
//! each #DB, the RIP, RFLAGS and CS the CPU pushed and DR6 as the handler found it, and
//! resumes: like kvm-unit-tests' debug.c handler it sets RFLAGS.RF when an instruction
//! breakpoint fired, so that the instruction then runs. The instruction sequences below
//! single-step across interrupt shadows (STI, MOV SS), ICEBP and general detection and
//! return the addresses of their instruction boundaries; the watched buffer and the
//! breakpoint targets give data and instruction breakpoints something to watch that Rust
//! code never touches.

use super::control::RFlags;
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;

use super::exceptions::{Exception, ExceptionFrame, catch_exception, set_debug_handler};

/// DR6 bits (SDM Vol. 3, 19.2.3).
pub mod dr6 {
    /// The value DR6 reads with no condition bit set: its reserved bits read as 1
    /// (kvm-unit-tests' DR6_ACTIVE_LOW; bits 11 and 16 are active-low BLD and RTM).
    pub const ACTIVE_LOW: u64 = 0xffff_0ff0;
    /// B0-B3: breakpoint condition 0-3 was met.
    pub const B0: u64 = 1 << 0;
    /// Breakpoint condition 1 was met.
    pub const B1: u64 = 1 << 1;
    /// Breakpoint condition 2 was met.
    pub const B2: u64 = 1 << 2;
    /// Breakpoint condition 3 was met.
    pub const B3: u64 = 1 << 3;
    /// The four breakpoint-condition bits.
    pub const BREAKPOINTS: u64 = 0xf;
    /// BD: the next instruction accesses a debug register while DR7.GD is set.
    pub const BD: u64 = 1 << 13;
    /// BS: single-step (RFLAGS.TF).
    pub const BS: u64 = 1 << 14;
    /// BT: task switch to a TSS with the T flag.
    pub const BT: u64 = 1 << 15;
}

/// DR7 bits and fields (SDM Vol. 3, 19.2.4).
pub mod dr7 {
    /// Bit 10 reads as 1; DR7's value with every breakpoint off.
    pub const FIXED_1: u64 = 1 << 10;
    /// LE: local exact breakpoint enable (ignored by modern CPUs, kept by hypervisors).
    pub const LOCAL_EXACT: u64 = 1 << 8;
    /// GE: global exact breakpoint enable (ignored by modern CPUs, kept by hypervisors).
    pub const GLOBAL_EXACT: u64 = 1 << 9;
    /// GD: general detect, any MOV to or from a debug register raises #DB.
    pub const GD: u64 = 1 << 13;
    /// The R/W field: instruction execution.
    pub const EXECUTE: u64 = 0b00;
    /// The R/W field: data writes.
    pub const WRITE: u64 = 0b01;
    /// The R/W field: data reads and writes (not instruction fetches).
    pub const READ_WRITE: u64 = 0b11;

    /// The local-enable bit (Ln) of breakpoint `index` (0-3).
    pub const fn local(index: u32) -> u64 {
        1 << (2 * index)
    }

    /// The global-enable bit (Gn) of breakpoint `index` (0-3).
    pub const fn global(index: u32) -> u64 {
        1 << (2 * index + 1)
    }

    /// The LEN field encoding of a breakpoint of `bytes` (1, 2, 4 or 8) bytes.
    ///
    /// # Panics
    /// For any other length.
    pub const fn length(bytes: u64) -> u64 {
        match bytes {
            1 => 0b00,
            2 => 0b01,
            8 => 0b10,
            4 => 0b11,
            _ => panic!("a breakpoint covers 1, 2, 4 or 8 bytes"),
        }
    }

    /// The R/W and LEN fields of breakpoint `index`, for `condition` (EXECUTE, WRITE or
    /// READ_WRITE) over `bytes` bytes (1 for instruction breakpoints).
    pub const fn condition(index: u32, condition: u64, bytes: u64) -> u64 {
        (condition | (length(bytes) << 2)) << (16 + 4 * index)
    }
}

/// RFLAGS.TF, the trap (single-step) flag.
const RFLAGS_TF: u64 = RFlags::TRAP_FLAG.bits();
/// RFLAGS.RF, the resume flag: instruction breakpoints are ignored for one instruction.
const RFLAGS_RF: u64 = RFlags::RESUME_FLAG.bits();

/// Reads debug register `index` (0-7; DR4 and DR5 included), or returns the exception:
/// #UD for DR4/DR5 with CR4.DE set, #DB (a fault) with DR7.GD set, #GP at CPL > 0.
///
/// # Panics
/// For an index above 7.
pub fn try_read_debug_register(index: u8) -> Result<u64, Exception> {
    /// MOV RAX, DRn by the given instruction text.
    macro_rules! read {
        ($instruction:literal) => {{
            let value: u64;
            // SAFETY: reading a debug register has no side effect beyond the exceptions
            // above, which the enclosing `catch_exception` catches.
            unsafe { asm!($instruction, out("rax") value, options(nomem, nostack)) };
            value
        }};
    }
    catch_exception(|| match index {
        0 => read!("mov rax, dr0"),
        1 => read!("mov rax, dr1"),
        2 => read!("mov rax, dr2"),
        3 => read!("mov rax, dr3"),
        // MOV RAX, DR4 / DR5 (0F 21 /r): the assembler knows no DR4 or DR5.
        4 => read!(".byte 0x0f, 0x21, 0xe0"),
        5 => read!(".byte 0x0f, 0x21, 0xe8"),
        6 => read!("mov rax, dr6"),
        7 => read!("mov rax, dr7"),
        _ => panic!("there is no DR{index}"),
    })
}

/// Writes debug register `index` (0-7; DR4 and DR5 included), or returns the exception:
/// #GP(0) for 1s in bits 63:32 of DR6 or DR7, #UD for DR4/DR5 with CR4.DE set, #DB (a fault)
/// with DR7.GD set, #GP at CPL > 0.
///
/// Breakpoints enabled through DR7 stay enabled: the caller must run what they watch under
/// [`record_debug_exceptions`] (or expect a #DB it catches) and disable them again.
///
/// # Panics
/// For an index above 7.
pub fn try_write_debug_register(index: u8, value: u64) -> Result<(), Exception> {
    /// MOV DRn, RAX by the given instruction text.
    macro_rules! write {
        ($instruction:literal) => {
            // SAFETY: a debug register holds breakpoint addresses, conditions or status bits;
            // a breakpoint that fires raises a #DB, which a test handles or the runtime
            // reports, and faults of the write itself are caught by `catch_exception`.
            unsafe { asm!($instruction, in("rax") value, options(nomem, nostack)) }
        };
    }
    catch_exception(|| match index {
        0 => write!("mov dr0, rax"),
        1 => write!("mov dr1, rax"),
        2 => write!("mov dr2, rax"),
        3 => write!("mov dr3, rax"),
        // MOV DR4 / DR5, RAX (0F 23 /r).
        4 => write!(".byte 0x0f, 0x23, 0xe0"),
        5 => write!(".byte 0x0f, 0x23, 0xe8"),
        6 => write!("mov dr6, rax"),
        7 => write!("mov dr7, rax"),
        _ => panic!("there is no DR{index}"),
    })
}

/// DR7 without a fault check, for use under [`super::run_in_user_mode`], where MOV from a
/// debug register must raise #GP(0) and end the closure.
pub fn read_dr7() -> u64 {
    let value: u64;
    // SAFETY: reading DR7 has no side effect; at CPL 3 it raises #GP, which ends the
    // enclosing `catch_exception` or `run_in_user_mode`.
    unsafe { asm!("mov {}, dr7", out(reg) value, options(nomem, nostack)) };
    value
}

/// DR6 without a fault check (for a #DB handler: reading it at CPL 0 has no side effect).
pub fn read_dr6() -> u64 {
    let value: u64;
    // SAFETY: reading DR6 has no side effect; at CPL 3 it raises #GP, which ends the test.
    unsafe { asm!("mov {}, dr6", out(reg) value, options(nomem, nostack)) };
    value
}

/// MOV to DR6 without a fault check (for a #DB handler that clears the status bits): DR6 only
/// reports #DBs; bits 63:32 set raise #GP, which ends the test.
pub fn write_dr6(value: u64) {
    // SAFETY: writing DR6 changes no memory and enables nothing.
    unsafe { asm!("mov dr6, {}", in(reg) value, options(nomem, nostack)) };
}

/// MOV to DR7 without a fault check (for timing it): a value that enables breakpoints makes
/// #DBs come, which end the test unless recorded.
pub fn write_dr7(value: u64) {
    // SAFETY: writing DR7 changes no memory; bits 63:32 set raise #GP, which ends the test.
    unsafe { asm!("mov dr7, {}", in(reg) value, options(nomem, nostack)) };
}

/// One #DB as [`record_debug_exceptions`] saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DebugException {
    /// The RIP the CPU pushed: the next instruction for traps, the instruction for faults.
    pub rip: u64,
    /// DR6 on entry to the handler.
    pub dr6: u64,
    /// The RFLAGS the CPU pushed (before the handler set RF in it).
    pub rflags: u64,
    /// The CS the CPU pushed: its low two bits are the CPL the #DB interrupted.
    pub cs: u64,
}

/// The most #DBs one [`record_debug_exceptions`] records; at the last it clears TF and
/// disables every breakpoint, so that a runaway sequence ends.
pub const CAPACITY: usize = 16;

/// Whether a recorder is active (they do not nest).
static RECORDING: AtomicBool = AtomicBool::new(false);
/// How many #DBs the active recorder saw (may exceed [`CAPACITY`]).
static RECORDED: AtomicUsize = AtomicUsize::new(0);
/// RIP, DR6, RFLAGS and CS of each recorded #DB.
static RECORDS: [[AtomicU64; 4]; CAPACITY] = [const { [const { AtomicU64::new(0) }; 4] }; CAPACITY];

global_asm!(
    r#"
    .section .text.vmunit_debug_targets, "ax"
    .balign 16
    .global vmunit_debug_target
    .global vmunit_debug_target_second
    vmunit_debug_target:
        nop
    vmunit_debug_target_second:
        nop
        ret
    "#,
);

unsafe extern "C" {
    static vmunit_debug_target: u8;
    static vmunit_debug_target_second: u8;
}

/// The recording #DB handler (a `DebugHandler`), with the frame it resumes from. It must not
/// allocate or take locks.
fn record_debug_exception(frame: &mut ExceptionFrame) {
    let (dr6, dr7): (u64, u64);
    // SAFETY: reading DR6 and DR7 at CPL 0 has no side effect (the CPU cleared DR7.GD when it
    // delivered this #DB, so no general-detect #DB follows).
    unsafe { asm!("mov {}, dr6", "mov {}, dr7", out(reg) dr6, out(reg) dr7, options(nomem, nostack)) };
    let index = RECORDED.fetch_add(1, Ordering::AcqRel);
    if let Some(record) = RECORDS.get(index) {
        for (slot, value) in record.iter().zip([frame.rip, dr6, frame.rflags, frame.cs]) {
            slot.store(value, Ordering::Relaxed);
        }
    }
    // An instruction breakpoint is a fault: resume with RF so that the instruction runs.
    for breakpoint in 0..4u32 {
        let enabled = dr7 & (dr7::local(breakpoint) | dr7::global(breakpoint)) != 0;
        let execute = (dr7 >> (16 + 4 * breakpoint)) & 0b11 == dr7::EXECUTE;
        if enabled && execute && dr6 & (1 << breakpoint) != 0 && breakpoint_address(breakpoint) == frame.rip {
            frame.rflags |= RFLAGS_RF;
        }
    }
    if index + 1 >= CAPACITY {
        frame.rflags &= !RFLAGS_TF;
        // SAFETY: disabling every breakpoint only stops further #DBs.
        unsafe { asm!("mov dr7, {}", in(reg) dr7::FIXED_1, options(nomem, nostack)) };
    }
}

/// DR0-DR3 inside the #DB handler.
fn breakpoint_address(index: u32) -> u64 {
    /// MOV RAX, DRn by the given instruction text.
    macro_rules! read {
        ($instruction:literal) => {{
            let value: u64;
            // SAFETY: reading a debug register at CPL 0 has no side effect.
            unsafe { asm!($instruction, out("rax") value, options(nomem, nostack)) };
            value
        }};
    }
    match index {
        0 => read!("mov rax, dr0"),
        1 => read!("mov rax, dr1"),
        2 => read!("mov rax, dr2"),
        _ => read!("mov rax, dr3"),
    }
}

/// Runs `function` with a #DB handler that records each #DB (up to [`CAPACITY`]) and resumes,
/// setting RF after an instruction breakpoint; other vectors are handled as usual. Returns
/// the closure's result, or the exception that ended it (as `catch_exception`), and the #DBs
/// in the order they arrived.
///
/// It installs the recorder with `exceptions::set_debug_handler` and removes it before
/// returning. The handler does not touch DR6: status bits accumulate unless the code under
/// test clears them.
///
/// # Panics
/// When called from inside another `record_debug_exceptions`.
pub fn record_debug_exceptions<R>(
    function: impl FnOnce() -> R,
) -> (Result<R, Exception>, Vec<DebugException>) {
    assert!(
        !RECORDING.swap(true, Ordering::AcqRel),
        "record_debug_exceptions does not nest"
    );
    RECORDED.store(0, Ordering::Release);
    set_debug_handler(Some(record_debug_exception));
    let result = catch_exception(function);
    set_debug_handler(None);
    let count = RECORDED.load(Ordering::Acquire).min(CAPACITY);
    let seen = RECORDS[..count]
        .iter()
        .map(|record| DebugException {
            rip: record[0].load(Ordering::Relaxed),
            dr6: record[1].load(Ordering::Relaxed),
            rflags: record[2].load(Ordering::Relaxed),
            cs: record[3].load(Ordering::Relaxed),
        })
        .collect();
    RECORDING.store(false, Ordering::Release);
    (result, seen)
}

/// The addresses of the two instructions of the breakpoint target routine (a NOP, then the
/// NOP before its RET): instruction breakpoints to arm in DR0-DR3.
pub fn breakpoint_targets() -> [u64; 2] {
    [
        &raw const vmunit_debug_target as u64,
        &raw const vmunit_debug_target_second as u64,
    ]
}

/// Calls the breakpoint target routine (two NOPs and RET).
pub fn call_breakpoint_target() {
    // SAFETY: the routine executes two NOPs and returns; it touches no register or memory
    // but the return address the CALL pushed.
    unsafe { asm!("call {target}", target = sym vmunit_debug_target) };
}

/// Enters the breakpoint target routine by IRETQ with RFLAGS.RF set, as a debugger resumes
/// after an instruction breakpoint: an instruction breakpoint on its first NOP must not fire,
/// while one on the second must (RF is cleared once an instruction completes).
pub fn call_breakpoint_target_with_resume_flag() {
    // SAFETY: the pushed frame returns to the same CS, SS and stack at the routine, whose RET
    // pops the return address pushed first, back to label 2; RFLAGS only gains RF.
    unsafe {
        asm!(
            "lea {scratch}, [rip + 2f]",
            "push {scratch}",
            "mov {stack}, rsp",
            "xor {scratch:e}, {scratch:e}",
            "mov {scratch:x}, ss",
            "push {scratch}",
            "push {stack}",
            "pushfq",
            "or qword ptr [rsp], {rf}",
            "mov {scratch:x}, cs",
            "push {scratch}",
            "lea {scratch}, [rip + {target}]",
            "push {scratch}",
            "iretq",
            "2:",
            scratch = out(reg) _,
            stack = out(reg) _,
            rf = const RFLAGS_RF,
            target = sym vmunit_debug_target,
        )
    };
}

/// The buffer data breakpoints watch: 128 bytes on a cache-line boundary, accessed only by
/// the assembly below (so never while Rust code holds a reference into it).
#[repr(C, align(64))]
struct Watched(UnsafeCell<[u8; WATCHED_SIZE]>);
/// The watched buffer's size.
pub const WATCHED_SIZE: usize = 128;
// SAFETY: the bytes are only accessed by single instructions in assembly.
unsafe impl Sync for Watched {}
static WATCHED: Watched = Watched(UnsafeCell::new([0; WATCHED_SIZE]));

/// The address of byte `offset` of the watched buffer (64-byte aligned at offset 0).
pub fn watched_address(offset: usize) -> u64 {
    WATCHED.0.get() as u64 + offset as u64
}

fn watched_pointer(offset: usize, size: usize) -> *mut u8 {
    assert!(
        matches!(size, 1 | 2 | 4 | 8) && offset + size <= WATCHED_SIZE,
        "{size} bytes at offset {offset} are not a load or store inside the watched buffer"
    );
    WATCHED.0.get().cast::<u8>().wrapping_add(offset)
}

/// Stores the low `size` bytes (1, 2, 4 or 8) of `value` at byte `offset` of the watched
/// buffer with one MOV; returns the address after the MOV, where a data breakpoint's #DB
/// trap is delivered.
///
/// # Panics
/// For another size, or an access that leaves the buffer.
pub fn store_watched(offset: usize, size: usize, value: u64) -> u64 {
    let pointer = watched_pointer(offset, size);
    /// The given store of `value` to `pointer`, then the address after it.
    macro_rules! store {
        ($instruction:literal) => {{
            let after: u64;
            // SAFETY: the store stays inside WATCHED, which only single instructions access.
            unsafe {
                asm!($instruction, "2: lea {a}, [rip + 2b]", p = in(reg) pointer, v = in(reg) value,
                     a = out(reg) after, options(nostack))
            };
            after
        }};
    }
    match size {
        1 => store!("mov byte ptr [{p}], {v:l}"),
        2 => store!("mov word ptr [{p}], {v:x}"),
        4 => store!("mov dword ptr [{p}], {v:e}"),
        _ => store!("mov qword ptr [{p}], {v}"),
    }
}

/// Loads `size` bytes (1, 2, 4 or 8) from byte `offset` of the watched buffer with one MOV;
/// returns the value (zero-extended) and the address after the MOV.
///
/// # Panics
/// For another size, or an access that leaves the buffer.
pub fn load_watched(offset: usize, size: usize) -> (u64, u64) {
    let pointer = watched_pointer(offset, size);
    /// The given load from `pointer`, then the value and the address after the load.
    macro_rules! load {
        ($instruction:literal) => {{
            let (value, after): (u64, u64);
            // SAFETY: the load stays inside WATCHED, which only single instructions access.
            unsafe {
                asm!($instruction, "2: lea {a}, [rip + 2b]", p = in(reg) pointer, v = out(reg) value,
                     a = out(reg) after, options(nostack, readonly))
            };
            (value, after)
        }};
    }
    match size {
        1 => load!("movzx {v:e}, byte ptr [{p}]"),
        2 => load!("movzx {v:e}, word ptr [{p}]"),
        4 => load!("mov {v:e}, dword ptr [{p}]"),
        _ => load!("mov {v}, qword ptr [{p}]"),
    }
}

/// LOCK CMPXCHG of the 8 bytes at `offset` of the watched buffer (offset 60 splits a cache
/// line: a bus lock): replaces `expected` by `new`; returns the value found there.
///
/// # Panics
/// For an access that leaves the buffer.
pub fn locked_compare_exchange_watched(offset: usize, expected: u64, new: u64) -> u64 {
    let pointer = watched_pointer(offset, 8);
    let found: u64;
    // SAFETY: the access stays inside WATCHED, which only single instructions access.
    unsafe {
        asm!("lock cmpxchg qword ptr [{p}], {new}", p = in(reg) pointer, new = in(reg) new,
             inout("rax") expected => found, options(nostack))
    };
    found
}

/// The instruction [`mov_ss_from_watched_then`] executes in the MOV SS shadow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShadowedInstruction {
    /// ICEBP (INT1, F1) with two CS prefixes.
    Icebp,
    /// INT 1 (CD 01).
    Int1,
    /// INT3 (CC) with eleven CS prefixes.
    Int3,
}

/// Loads SS from the 2-byte word at offset 0 of the watched buffer, then executes
/// `instruction` in the MOV SS shadow. The word must hold the current SS selector, stored
/// before a breakpoint watches it (any other selector raises #GP, or, null, leaves SS null at
/// CPL 0, which 64-bit mode allows). Returns the addresses after the MOV SS and after the
/// instruction.
pub fn mov_ss_from_watched_then(instruction: ShadowedInstruction) -> (u64, u64) {
    let pointer = watched_pointer(0, 2);
    /// MOV SS from `pointer`, then the given bytes; the addresses after each.
    macro_rules! shadowed {
        ($bytes:literal) => {{
            let (after_mov, after): (u64, u64);
            // SAFETY: SS is reloaded with a selector valid at CPL 0 or the load faults (see
            // above); the software exceptions deliver #DB or #BP, which the caller's handlers
            // resume from. The load reads WATCHED only.
            unsafe {
                asm!("mov ss, word ptr [{p}]", concat!("2: .byte ", $bytes), "3:",
                     "lea {m}, [rip + 2b]", "lea {a}, [rip + 3b]",
                     p = in(reg) pointer, m = out(reg) after_mov, a = out(reg) after, options(nostack))
            };
            (after_mov, after)
        }};
    }
    match instruction {
        ShadowedInstruction::Icebp => shadowed!("0x2e, 0x2e, 0xf1"),
        ShadowedInstruction::Int1 => shadowed!("0xcd, 0x01"),
        ShadowedInstruction::Int3 => {
            shadowed!("0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0xcc")
        }
    }
}

/// ICEBP (INT1, opcode F1) alone: a trap-like #DB; returns the address after it.
pub fn icebp() -> u64 {
    let after: u64;
    // SAFETY: ICEBP raises #DB as a trap, which the caller's handler resumes from.
    unsafe { asm!(".byte 0xf1", "2: lea {a}, [rip + 2b]", a = out(reg) after, options(nomem, nostack)) };
    after
}

/// With DR7.GD set, reads DR7: the MOV raises a fault-like #DB (DR6.BD) and the CPU clears
/// GD, so the re-executed MOV reads DR7 without GD. Run it under
/// [`record_debug_exceptions`]. Returns the value read and the address of the MOV.
pub fn general_detect_read_dr7() -> (u64, u64) {
    let (value, address): (u64, u64);
    // SAFETY: the #DB is resumed at the MOV by the recording handler (GD is clear by then).
    unsafe {
        asm!("mov dr7, {gd}", "lea {a}, [rip + 2f]", "2: mov {v}, dr7",
             gd = in(reg) dr7::FIXED_1 | dr7::GD, a = out(reg) address, v = out(reg) value, options(nomem, nostack))
    };
    (value, address)
}

/// With DR7.GD set, writes `value` to DR0, as [`general_detect_read_dr7`] reads DR7.
/// Returns the address of the MOV to DR0.
pub fn general_detect_write_dr0(value: u64) -> u64 {
    let address: u64;
    // SAFETY: as for `general_detect_read_dr7`; DR0 is not enabled as a breakpoint by DR7.
    unsafe {
        asm!("mov dr7, {gd}", "lea {a}, [rip + 2f]", "2: mov dr0, {v}",
             gd = in(reg) dr7::FIXED_1 | dr7::GD, a = out(reg) address, v = in(reg) value, options(nomem, nostack))
    };
    address
}

// The single-step sequences below share a shape: PUSHFQ; POP RAX; OR RAX, TF; PUSH RAX;
// POPFQ sets TF (the POPFQ itself does not trap: TF was clear when it began), the steps under
// test follow, and AND RAX, ~TF; PUSH RAX; POPFQ clears TF again (that POPFQ still traps).
// Each returns the address after every instruction from the POPFQ that sets TF on, in
// order: the candidate RIPs of single-step traps. Run them under `record_debug_exceptions`.

/// The assembly that stores the addresses of local labels `N:` (`lea {s}, [rip + Nb]`), one
/// after the other, into consecutive `u64`s from `{out}` on (a pointer the block takes as
/// `inout`; it ends past the last one): the single-step snippets' candidate RIPs.
macro_rules! store_label_addresses {
    ($($label:literal),+) => {
        concat!($("lea {s}, [rip + ", $label, "b]\nmov [{out}], {s}\nadd {out}, 8\n"),+)
    };
}

/// Single-steps AND, PUSH and POPFQ. Returns the addresses after: the POPFQ that sets TF,
/// AND, PUSH, POPFQ.
pub fn single_step_basic() -> [u64; 4] {
    let mut after = [0u64; 4];
    // SAFETY: TF's #DB traps are resumed by the recording handler; the final POPFQ restores
    // RFLAGS with TF clear. Stores go to `after`, which the block owns.
    unsafe {
        asm!(
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: and rax, ~{tf}",
            "3: push rax",
            "4: popfq",
            "5:",
            store_label_addresses!(2, 3, 4, 5),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _, out("rax") _,
        )
    };
    after
}

/// Single-steps instructions that hypervisors intercept and emulate: XOR, CPUID, MOV and IN
/// from port 0x3fd (COM1's line status; CPL 0 only). Returns the addresses after: the POPFQ
/// that sets TF, AND, PUSH, XOR, CPUID, MOV, IN, POPFQ.
pub fn single_step_emulated_instructions() -> [u64; 8] {
    let mut after = [0u64; 8];
    // SAFETY: as for `single_step_basic`; RBX, which CPUID overwrites and LLVM reserves, is
    // saved in a register and restored; IN reads COM1's line status, which has no side effect.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: and rax, ~{tf}",
            "3: push rax",
            "4: xor eax, eax",
            "5: cpuid",
            "6: mov edx, 0x3fd",
            "7: in al, dx",
            "8: popfq",
            "9:",
            "mov rbx, {saved}",
            store_label_addresses!(2, 3, 4, 5, 6, 7, 8, 9),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _, saved = out(reg) _,
            out("rax") _, out("rcx") _, out("rdx") _,
        )
    };
    after
}

/// Single-steps XOR and CPUID at any privilege level (CPUID is intercepted by hypervisors).
/// Returns the addresses after: the POPFQ that sets TF, AND, PUSH, XOR, CPUID, POPFQ.
pub fn single_step_cpuid() -> [u64; 6] {
    let mut after = [0u64; 6];
    // SAFETY: as for `single_step_emulated_instructions`.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: and rax, ~{tf}",
            "3: push rax",
            "4: xor eax, eax",
            "5: cpuid",
            "6: popfq",
            "7:",
            "mov rbx, {saved}",
            store_label_addresses!(2, 3, 4, 5, 6, 7),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _, saved = out(reg) _,
            out("rax") _, out("rcx") _, out("rdx") _,
        )
    };
    after
}

/// Single-steps STI (CPL 0 only; interrupts are off before and after, and the STI shadow
/// must not hold back the single-step trap). Returns the addresses after: the POPFQ that sets
/// TF, STI, AND, PUSH, POPFQ.
pub fn single_step_sti() -> [u64; 5] {
    let mut after = [0u64; 5];
    // SAFETY: as for `single_step_basic`; RFLAGS is read after CLI, so the final POPFQ turns
    // interrupts off again. An interrupt in between is handled by the runtime.
    unsafe {
        asm!(
            "cli",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: sti",
            "3: and rax, ~{tf}",
            "4: push rax",
            "5: popfq",
            "6:",
            store_label_addresses!(2, 3, 4, 5, 6),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _, out("rax") _,
        )
    };
    after
}

/// Single-steps STI;HLT (CPL 0 only): an interrupt the caller arranged (an APIC timer) must
/// end the HLT. Returns the addresses after: the POPFQ that sets TF, STI, HLT, AND, PUSH,
/// POPFQ.
pub fn single_step_sti_hlt() -> [u64; 6] {
    let mut after = [0u64; 6];
    // SAFETY: as for `single_step_sti`; the caller's interrupt wakes the HLT.
    unsafe {
        asm!(
            "cli",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: sti",
            "3: hlt",
            "4: and rax, ~{tf}",
            "5: push rax",
            "6: popfq",
            "7:",
            store_label_addresses!(2, 3, 4, 5, 6, 7),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _, out("rax") _,
        )
    };
    after
}

/// Single-steps MOV SS (reloading SS with itself; any CPL), whose shadow holds back the
/// single-step trap until after the next instruction. Returns the addresses after: the POPFQ
/// that sets TF, MOV SS, AND, PUSH, POPFQ.
pub fn single_step_mov_ss() -> [u64; 5] {
    let mut after = [0u64; 5];
    // SAFETY: as for `single_step_basic`; SS is reloaded with its own selector.
    unsafe {
        asm!(
            "xor ecx, ecx",
            "mov cx, ss",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: mov ss, cx",
            "3: and rax, ~{tf}",
            "4: push rax",
            "5: popfq",
            "6:",
            store_label_addresses!(2, 3, 4, 5, 6),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _,
            out("rax") _, out("rcx") _,
        )
    };
    after
}

/// Single-steps MOV SS, then two ICEBPs (F1; any CPL), each a trap-like #DB of its own.
/// Returns the addresses after: the POPFQ that sets TF, MOV SS, ICEBP, ICEBP, AND, PUSH,
/// POPFQ.
pub fn single_step_mov_ss_icebp() -> [u64; 7] {
    let mut after = [0u64; 7];
    // SAFETY: as for `single_step_mov_ss`; the ICEBP #DBs are resumed by the recorder.
    unsafe {
        asm!(
            "xor ecx, ecx",
            "mov cx, ss",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: mov ss, cx",
            "3: .byte 0xf1",
            "4: .byte 0xf1",
            "5: and rax, ~{tf}",
            "6: push rax",
            "7: popfq",
            "8:",
            store_label_addresses!(2, 3, 4, 5, 6, 7, 8),
            tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _, s = out(reg) _,
            out("rax") _, out("rcx") _,
        )
    };
    after
}

/// Sets DR7.GD, then single-steps MOV SS and a MOV of 0 to DR6 (CPL 0 only): the MOV to DR6
/// raises a general-detect #DB, a fault the MOV SS shadow does not hold back; the CPU clears
/// GD, and the MOV runs when resumed. Returns the addresses after: the POPFQ that sets TF,
/// MOV SS (that is, of the MOV to DR6), MOV to DR6, AND, PUSH, POPFQ.
pub fn single_step_mov_ss_general_detect() -> [u64; 6] {
    let mut after = [0u64; 6];
    // SAFETY: as for `single_step_mov_ss`; the general-detect #DB is resumed by the recorder
    // at the MOV to DR6, which then clears DR6.
    unsafe {
        asm!(
            "mov dr7, {gd}",
            "xor edx, edx",
            "xor ecx, ecx",
            "mov cx, ss",
            "pushfq", "pop rax", "or rax, {tf}", "push rax", "popfq",
            "2: mov ss, cx",
            "3: mov dr6, rdx",
            "4: and rax, ~{tf}",
            "5: push rax",
            "6: popfq",
            "7:",
            store_label_addresses!(2, 3, 4, 5, 6, 7),
            gd = in(reg) dr7::FIXED_1 | dr7::GD, tf = const RFLAGS_TF, out = inout(reg) after.as_mut_ptr() => _,
            s = out(reg) _, out("rax") _, out("rcx") _, out("rdx") _,
        )
    };
    after
}

/// kvm-unit-tests' emulator test_mov_pop_ss_code_db: points DR0 at the XOR right after a
/// MOV SS (SS reloaded with its own selector) and runs them; arm DR0 as an instruction
/// breakpoint in DR7 first and record #DBs ([`record_debug_exceptions`], which sets RF after
/// one). Intel CPUs inhibit that code breakpoint in the MOV SS shadow; AMD ones deliver it,
/// with RIP at the XOR. Returns the XOR's address and the value it left (0 when it ran).
pub fn mov_ss_then_breakpointed_instruction() -> (u64, u64) {
    let (target, cleared): (u64, u64);
    // SAFETY: DR0 takes the address of the XOR below (a debug register the caller arms and
    // disarms in DR7); SS is reloaded with its own selector; XOR clears a scratch register.
    unsafe {
        asm!(
            "lea {target}, [rip + 2f]",
            "mov dr0, {target}",
            "xor ecx, ecx",
            "mov cx, ss",
            "mov {cleared}, -1",
            "mov ss, cx",
            "2: xor {cleared:e}, {cleared:e}",
            target = out(reg) target,
            cleared = out(reg) cleared,
            out("rcx") _,
            options(nostack),
        )
    };
    (target, cleared)
}

global_asm!(
    r#"
    .section .text.vmunit_debug_compat, "ax"
    /* 32-bit code for `compatibility_ss_load_then_breakpointed_instruction` (CPL 3,
       compatibility mode): POP SS (or MOV SS), then the XOR a code breakpoint watches, then
       UD2 to end the run. */
    .code32
    .global vmunit_compat_pop_ss
    vmunit_compat_pop_ss:
        push ss
        pop ss
    .global vmunit_compat_pop_ss_target
    vmunit_compat_pop_ss_target:
        xor eax, eax
        ud2
    .global vmunit_compat_mov_ss
    vmunit_compat_mov_ss:
        mov eax, ss
        mov ss, eax
    .global vmunit_compat_mov_ss_target
    vmunit_compat_mov_ss_target:
        xor eax, eax
        ud2
    .code64
    "#
);

unsafe extern "C" {
    static vmunit_compat_pop_ss: u8;
    static vmunit_compat_pop_ss_target: u8;
    static vmunit_compat_mov_ss: u8;
    static vmunit_compat_mov_ss_target: u8;
}

/// How [`compatibility_ss_load_then_breakpointed_instruction`] loads SS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsLoad {
    /// PUSH SS; POP SS (valid outside 64-bit mode only).
    Pop,
    /// MOV EAX, SS; MOV SS, EAX.
    Move,
}

/// kvm-unit-tests' emulator test_mov_pop_ss_code_db as its 32-bit build runs it: at CPL 3 in
/// compatibility mode (a 32-bit code segment), POP SS or MOV SS, then an XOR that DR0 points
/// at, then UD2. Arm DR0 as an instruction breakpoint in DR7 and record #DBs around this
/// ([`record_debug_exceptions`]). Returns the XOR's address and the exception that ended the
/// run (#UD at the UD2 after the XOR when all went well).
pub fn compatibility_ss_load_then_breakpointed_instruction(load: SsLoad) -> (u64, Exception) {
    let (code, target) = match load {
        SsLoad::Pop => (
            &raw const vmunit_compat_pop_ss as u64,
            &raw const vmunit_compat_pop_ss_target as u64,
        ),
        SsLoad::Move => (
            &raw const vmunit_compat_mov_ss as u64,
            &raw const vmunit_compat_mov_ss_target as u64,
        ),
    };
    // SAFETY: DR0 is a debug register the caller arms and disarms in DR7; it only makes
    // fetches of `target` raise #DB.
    unsafe { asm!("mov dr0, {}", in(reg) target, options(nomem, nostack, preserves_flags)) };
    (target, super::exceptions::enter_compatibility_mode(code))
}
