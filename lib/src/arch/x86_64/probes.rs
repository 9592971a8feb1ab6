//! probes: more safe wrappers for exception and paging tests, each of which reports where its
//! instruction sits so that a test can check the RIP an exception was delivered with.
//!
//! The faulting probes return an [`Attempt`]: the outcome under [`catch_exception`] and the
//! address of the probed instruction (for faults the RIP the CPU must push, for traps the
//! address after it, as each function's documentation says).
//!
//! The address is stored to memory (a local of the probe, through `slot`) by the assembly
//! *before* the probed instruction: an assembly output register would never be written when
//! the instruction faults, since `catch_exception` abandons the block.

use core::arch::asm;

use super::debug::dr7;
use super::exceptions::{Exception, catch_exception, selector};
use super::instructions::Attempt;
use crate::memory::{PAGE_SIZE, Protection, TestPage};

/// DIV of the 128-bit `high:low` by `divisor`: #DE for a zero divisor or a quotient above
/// 64 bits. Returns (quotient, remainder) or the exception, and the address of the DIV.
pub fn try_divide_unsigned(high: u64, low: u64, divisor: u64) -> Attempt<(u64, u64)> {
    let mut address = 0u64;
    let slot = &raw mut address;
    let result = catch_exception(|| {
        let (quotient, remainder): (u64, u64);
        // SAFETY: `slot` points at a live local of this probe, written once before the probed
        // instruction. DIV only touches RAX, RDX and the flags; `lea` computes an address; #DE is
        // caught.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: div {divisor}",
                 scratch = out(reg) _, slot = in(reg) slot,
                 divisor = in(reg) divisor, inout("rax") low => quotient, inout("rdx") high => remainder,
                 options(nostack))
        };
        (quotient, remainder)
    });
    Attempt { result, address }
}

/// IDIV of the signed 128-bit `high:low` by `divisor`: #DE for a zero divisor or a quotient
/// outside the signed 64-bit range (i64::MIN / -1). Returns (quotient, remainder) or the
/// exception, and the address of the IDIV.
pub fn try_divide_signed(high: i64, low: u64, divisor: i64) -> Attempt<(i64, i64)> {
    let mut address = 0u64;
    let slot = &raw mut address;
    let result = catch_exception(|| {
        let (quotient, remainder): (i64, i64);
        // SAFETY: `slot` points at a live local of this probe, written once before the probed
        // instruction. IDIV only touches RAX, RDX and the flags; #DE is caught.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: idiv {divisor}",
                 scratch = out(reg) _, slot = in(reg) slot,
                 divisor = in(reg) divisor, inout("rax") low as i64 => quotient,
                 inout("rdx") high => remainder, options(nostack))
        };
        (quotient, remainder)
    });
    Attempt { result, address }
}

/// Reads the 64-bit word at `address` (#PF, or #GP(0) when non-canonical); returns the word
/// or the exception, and the address of the load instruction.
pub fn try_load(address: u64) -> Attempt<u64> {
    let mut instruction = 0u64;
    let slot = &raw mut instruction;
    let result = catch_exception(|| {
        let value: u64;
        // SAFETY: `slot` points at a live local of this probe, written once before the probed
        // instruction. The load is outside Rust's memory model (inline assembly) and only reads;
        // any fault is caught.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}",
                 "2: mov {value}, qword ptr [{address}]", scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, value = out(reg) value,
                 options(nostack))
        };
        value
    });
    Attempt {
        result,
        address: instruction,
    }
}

/// Reads the 64-bit word at `address` through RBP, so with the stack segment: #SS(0) when
/// non-canonical. Returns the word or the exception, and the address of the load.
pub fn try_stack_read(address: u64) -> Attempt<u64> {
    let mut instruction = 0u64;
    let slot = &raw mut instruction;
    let result = catch_exception(|| {
        let value: u64;
        // SAFETY: `slot` points at a live local of this probe, written once before the probed
        // instruction. RBP is saved and restored around the access (and restored by the catch on a
        // fault, which resumes with the callee-saved registers of `catch_exception`); the
        // load only reads and is outside Rust's memory model.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "push rbp",
                 "mov rbp, {address}", "2: mov {value}, qword ptr [rbp]", "pop rbp",
                 scratch = out(reg) _, slot = in(reg) slot, address = in(reg) address, value = out(reg) value)
        };
        value
    });
    Attempt {
        result,
        address: instruction,
    }
}

/// Loads `selector` into FS and then the null selector: #GP(selector) for a selector beyond
/// the GDT limit or naming a system segment. Returns the outcome and the address of the
/// loading MOV.
pub fn try_load_fs(selector: u16) -> Attempt<()> {
    let mut instruction = 0u64;
    let slot = &raw mut instruction;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local of this probe, written once before the probed
        // instruction. The runtime does not use FS (its base is not used either); it is left null.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: mov fs, {selector:x}",
                 "xor {selector:e}, {selector:e}", "mov fs, {selector:x}", scratch = out(reg) _, slot = in(reg) slot,
                 selector = inout(reg) u64::from(selector) => _, options(nostack))
        };
    });
    Attempt {
        result,
        address: instruction,
    }
}

/// Loads `selector` into SS, then the runtime's kernel data selector again: #GP(0) for a null
/// selector whose RPL differs from the CPL, #GP(selector) for a selector with RPL or DPL
/// other than the CPL or naming a non-writable segment. Returns the outcome and the address
/// of the loading MOV.
pub fn try_load_ss(selector: u16) -> Attempt<()> {
    let mut instruction = 0u64;
    let slot = &raw mut instruction;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local of this probe, written once before the probed
        // instruction. SS holds its new value for one instruction only (MOV SS also blocks
        // interrupts and debug traps until the next one), then the runtime's value returns; on
        // a fault the catch restores SS as well.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "2: mov ss, {selector:x}",
                 "mov ss, {kernel:x}", scratch = out(reg) _, slot = in(reg) slot, selector = in(reg) u64::from(selector),
                 kernel = in(reg) u64::from(selector::KERNEL_DATA), options(nostack))
        };
    });
    Attempt {
        result,
        address: instruction,
    }
}

/// The limit of the loaded GDT (its size in bytes minus one), from SGDT.
pub fn gdt_limit() -> u16 {
    x86_64::instructions::tables::sgdt().limit
}

/// Defines a probe that runs one instruction without operands under [`catch_exception`] and
/// returns the outcome and the instruction's address. Each use names the instruction's bytes
/// or mnemonic, the registers it may write (`clobbers`), and why running it is harmless.
macro_rules! operandless_probe {
    ($(#[$doc:meta])* $name:ident, $instruction:literal, harmless: $reason:literal $(, clobbers: $register:tt)?) => {
        $(#[$doc])*
        ///
        #[doc = concat!("Running it is harmless: ", $reason, ".")]
        pub fn $name() -> Attempt<()> {
            let mut instruction = 0u64;
            let slot = &raw mut instruction;
            let result = catch_exception(|| {
                // SAFETY: `slot` points at a live local of this probe, written once before the
                // probed instruction; the instruction touches no memory and writes no register
                // but the declared clobbers (the function's documentation says why running it
                // is harmless); any exception is caught.
                unsafe {
                    asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", concat!("2: ", $instruction),
                         scratch = out(reg) _, slot = in(reg) slot, $(out($register) _,)? options(nostack))
                };
            });
            Attempt { result, address: instruction }
        }
    };
}

operandless_probe!(
    /// Executes the x87 FNINIT: #NM when CR0.TS or CR0.EM is set. Returns the outcome and the
    /// address of the FNINIT.
    try_fninit,
    "fninit",
    harmless: "FNINIT resets the x87 state, which nothing on this soft-float target uses"
);

operandless_probe!(
    /// Executes WAIT (FWAIT): #NM when both CR0.TS and CR0.MP are set (and not otherwise; no x87
    /// exception is pending after FNINIT). Returns the outcome and the address of the WAIT.
    try_fwait,
    "fwait",
    harmless: "WAIT only checks for pending x87 exceptions"
);

operandless_probe!(
    /// Executes NOP with a LOCK prefix (F0 90): #UD, since NOP cannot be locked. Returns the
    /// outcome and the address of the instruction.
    try_locked_nop,
    ".byte 0xf0, 0x90",
    harmless: "the instruction does nothing if it does not fault"
);

operandless_probe!(
    /// Executes the opcode of INTO (CE), invalid in 64-bit mode: #UD. Returns the outcome and the
    /// address of the instruction.
    try_into_opcode,
    ".byte 0xce",
    harmless: "in 64-bit mode CE is #UD; were it executed as INTO with OF clear it would do \
               nothing, and with OF set the #OF would be caught"
);

operandless_probe!(
    /// Executes MOV RAX, CR1 (0F 20 C8): CR1 does not exist, so #UD. Returns the outcome and the
    /// address of the instruction.
    try_read_cr1,
    ".byte 0x0f, 0x20, 0xc8",
    harmless: "the instruction only writes RAX, declared clobbered, if it does not fault",
    clobbers: "rax"
);

/// Single-steps NOP, XOR, CPUID (an instruction hypervisors emulate), then the PUSHFQ, AND
/// and POPFQ that clear TF again, and returns the addresses after each of those six
/// instructions: where the six #DB traps are expected (POPFQ sets TF without a trap after
/// itself, and the POPFQ that clears TF still traps). Run it under `trap_exceptions` with
/// `Vector::DB`.
pub fn single_step_with_cpuid() -> [u64; 6] {
    let mut after = [0u64; 6];
    // SAFETY: TF makes each instruction trap with #DB, which the runtime's handler records and
    // returns from (`trap_exceptions`); TF is cleared before the block ends. RBX, which
    // CPUID overwrites and LLVM reserves, is saved in a register and restored; the stores go
    // to `after`, which the block owns.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "nop",
            "2: xor eax, eax",
            "3: cpuid",
            "4: pushfq",
            "5: and qword ptr [rsp], ~0x100",
            "6: popfq",
            "7: mov rbx, {saved}",
            "lea {scratch}, [rip + 2b]",
            "mov qword ptr [{after}], {scratch}",
            "lea {scratch}, [rip + 3b]",
            "mov qword ptr [{after} + 8], {scratch}",
            "lea {scratch}, [rip + 4b]",
            "mov qword ptr [{after} + 16], {scratch}",
            "lea {scratch}, [rip + 5b]",
            "mov qword ptr [{after} + 24], {scratch}",
            "lea {scratch}, [rip + 6b]",
            "mov qword ptr [{after} + 32], {scratch}",
            "lea {scratch}, [rip + 7b]",
            "mov qword ptr [{after} + 40], {scratch}",
            saved = out(reg) _,
            scratch = out(reg) _,
            after = in(reg) after.as_mut_ptr(),
            out("eax") _, out("ecx") _, out("edx") _,
        )
    };
    after
}

/// The word a data breakpoint watches (never referenced by Rust code but through atomics).
static WATCHED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn write_dr0(value: u64) {
    // SAFETY: DR0 only holds a breakpoint address, which DR7 enables or not.
    unsafe { asm!("mov dr0, {}", in(reg) value, options(nomem, nostack)) };
}

fn write_dr7(value: u64) {
    // SAFETY: the callers enable only breakpoints whose #DB they handle, and disable them
    // before returning.
    unsafe { asm!("mov dr7, {}", in(reg) value, options(nomem, nostack)) };
}

/// Arms breakpoint 0 (DR0/DR7) on writes to an 8-byte word, stores `value` there, and
/// disarms it. The store must raise a #DB trap with DR6.B0 set, delivered after the store:
/// run it under `trap_exceptions` with `Vector::DB`. Returns the address after the store
/// and the word read back.
pub fn watched_store(value: u64) -> (u64, u64) {
    let word = WATCHED.as_ptr();
    write_dr0(word as u64);
    write_dr7(dr7::FIXED_1 | dr7::local(0) | dr7::condition(0, dr7::WRITE, 8));
    let after: u64;
    // SAFETY: the store goes to WATCHED, an atomic that Rust code only accesses atomically
    // (an aligned 8-byte MOV is atomic); the #DB it raises is a trap that returns.
    unsafe {
        asm!("mov qword ptr [{word}], {value}", "2: lea {after}, [rip + 2b]", word = in(reg) word,
             value = in(reg) value, after = out(reg) after, options(nostack))
    };
    write_dr7(dr7::FIXED_1);
    (after, WATCHED.load(core::sync::atomic::Ordering::SeqCst))
}

/// Arms breakpoint 0 as an instruction breakpoint on a NOP and executes it: the #DB is a
/// fault, delivered with RIP at the NOP before it executes. Returns the outcome (the #DB
/// under `catch_exception`) and the NOP's address; the breakpoint is disarmed either way.
pub fn try_instruction_breakpoint() -> Attempt<()> {
    let mut target = 0u64;
    let target_slot = &raw mut target;
    let result = catch_exception(|| {
        // SAFETY: DR0 gets the address of the NOP below and DR7 enables it as an instruction
        // breakpoint; the #DB fault before the NOP is caught. The store goes to `target`,
        // which this function owns and reads only after the block.
        unsafe {
            asm!("lea {scratch}, [rip + 2f]", "mov qword ptr [{slot}], {scratch}", "mov dr0, {scratch}",
                 "mov dr7, {enable}", "2: nop", scratch = out(reg) _, slot = in(reg) target_slot,
                 enable = in(reg) dr7::FIXED_1 | dr7::local(0), options(nostack))
        };
    });
    write_dr7(dr7::FIXED_1);
    Attempt {
        result,
        address: target,
    }
}

/// The CPU's physical-address width (CPUID 0x8000_0008 EAX[7:0]), or 36 when not reported.
pub fn physical_address_bits() -> u32 {
    if core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0008 {
        core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff
    } else {
        36
    }
}

/// MOV to CR4 of `value`, with the instruction's address: a reserved bit raises #GP(0) at the
/// MOV, with RF set in the pushed RFLAGS (kvm-unit-tests' idt_test).
///
/// # Panics
/// When `value` changes a bit of `control::CR4_OWNED`, as `control::try_write_cr4`.
pub fn try_mov_to_cr4(value: u64) -> Attempt<()> {
    super::control::check_cr4_owned(value);
    let mut address = 0u64;
    let slot = &raw mut address;
    let result = catch_exception(|| {
        // SAFETY: as in `control::try_write_cr4` (PAE kept, checked above; the other bits
        // break nothing the runtime relies on); the address is stored before the MOV runs,
        // and a fault is caught.
        unsafe {
            asm!(
                "lea {scratch}, [rip + 2f]",
                "mov qword ptr [{slot}], {scratch}",
                "2: mov cr4, {value}",
                slot = in(reg) slot,
                scratch = out(reg) _,
                value = in(reg) value,
                options(nostack),
            )
        };
    });
    Attempt { result, address }
}

/// Sets `bit` in the page-table entry that maps `page`, a reserved bit: one of the address
/// bits from the CPU's physical-address width up to 51. Any access to the page then raises a
/// #PF with the RSVD and P bits; `page.map(..)` rewrites the entry without it.
///
/// # Panics
/// When `bit` is not such a reserved address bit.
pub fn set_reserved_address_bit(page: &TestPage, bit: u32) {
    assert!(
        (physical_address_bits()..=51).contains(&bit),
        "bit {bit} is not a reserved physical-address bit"
    );
    // SAFETY: the virtual page belongs to `page`, and the entry still names the page's own
    // frame: the reserved bit (inside the entry's address field) only makes every access fault.
    unsafe { super::mmu::map_page(page.address(), page.frame() | (1 << bit), Protection::READ_WRITE) };
}

/// A virtual page that shows the frame of any [`TestPage`] it borrows: remapping it from
/// frame to frame exercises page-table updates and TLB invalidation, and the data each frame
/// holds must show through whatever the mapping.
pub struct Window<'a> {
    /// Provides the virtual page (and a frame to show at first); freed on drop.
    placeholder: TestPage,
    shown: core::marker::PhantomData<&'a TestPage>,
}

impl<'a> Window<'a> {
    /// A new window, showing a zeroed frame of its own.
    pub fn new() -> Window<'a> {
        Window {
            placeholder: TestPage::new(),
            shown: core::marker::PhantomData,
        }
    }

    /// The window's virtual address.
    pub fn address(&self) -> u64 {
        self.placeholder.address()
    }

    /// Maps the window onto `page`'s frame with `protection`.
    pub fn show(&mut self, page: &'a TestPage, protection: Protection) {
        // SAFETY: the window's virtual page belongs to it alone; the frame belongs to `page`,
        // which no Rust reference points into and which stays allocated while borrowed.
        unsafe { super::mmu::map_page(self.address(), page.frame(), protection) };
    }

    /// Reads the 64-bit word at `offset` through the window, or returns the exception the read
    /// raised.
    pub fn try_read(&self, offset: u64) -> Result<u64, Exception> {
        assert!(offset + 8 <= PAGE_SIZE, "offset {offset} is outside the page");
        super::instructions::try_read(self.address() + offset)
    }

    /// Writes the 64-bit word at `offset` through the window, or returns the exception the
    /// write raised.
    pub fn try_write(&self, offset: u64, value: u64) -> Result<(), Exception> {
        assert!(offset + 8 <= PAGE_SIZE, "offset {offset} is outside the page");
        // SAFETY: the window shows a TestPage frame, which no Rust object occupies.
        unsafe { super::instructions::try_write(self.address() + offset, value) }
    }
}

impl Default for Window<'_> {
    fn default() -> Self {
        Window::new()
    }
}

/// STI; NOP; CLI: an interrupt window of one instruction, in which pending interrupts are
/// delivered (after the STI shadow).
pub fn interrupt_window() {
    // SAFETY: the runtime's handlers run in the window; interrupts are off again after it.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// STI; NOP; NOP; CLI: an interrupt window like [`interrupt_window`]; returns the address of
/// the first NOP, the instruction in the STI shadow. An interrupt or NMI whose handler sees it
/// as its `interrupted_address` came in the shadow.
pub fn interrupt_window_with_shadow_address() -> u64 {
    let shadow: u64;
    // SAFETY: as `interrupt_window`; LEA only computes the address.
    unsafe {
        asm!(
            "lea {shadow}, [rip + 2f]",
            "sti",
            "2:",
            "nop",
            "nop",
            "cli",
            shadow = out(reg) shadow,
            options(nomem, nostack),
        )
    };
    shadow
}

/// STI; INT `VECTOR`; CLI: the software interrupt runs in the STI shadow, so it is delivered
/// before any pending external interrupt, which comes right after it.
pub fn software_interrupt_in_interrupt_shadow<const VECTOR: u8>() {
    // SAFETY: INT n enters the runtime's gate of `VECTOR`; interrupts are off again after it.
    unsafe { asm!("sti", "int {vector}", "cli", vector = const VECTOR, options(nomem, nostack)) };
}

/// Opens an interrupt window of `iterations` PAUSE loops with RSP at `stack_pointer`: a
/// pending interrupt is then delivered onto that stack. On an unmapped page, the push faults
/// (#PF), and so does the #PF's own push: a #DF, on its IST stack, which is returned.
pub fn try_interrupt_window_on_stack(stack_pointer: u64, iterations: u32) -> Result<(), Exception> {
    catch_exception(|| {
        // SAFETY: RSP is restored right after the window; an exception in the window is
        // recovered by the enclosing catch, which restores RSP itself. Nothing but the
        // interrupt frame is pushed on the borrowed stack.
        unsafe {
            asm!(
                "mov {saved}, rsp",
                "mov rsp, {stack}",
                "sti",
                "2:",
                "pause",
                "dec {count:e}",
                "jnz 2b",
                "cli",
                "mov rsp, {saved}",
                saved = out(reg) _,
                stack = in(reg) stack_pointer,
                count = inout(reg) iterations.max(1) => _,
            );
        }
    })
}

/// kvm-unit-tests' eventinj `do_iret`: an IRETQ to the very next instruction (same CS, same
/// RFLAGS) whose frame sits at the top of `stack` (a fresh page), flushed from the host's
/// mappings just before (pc-testdev), so that the IRET's own reads make the hypervisor fault
/// the page in. Inside an NMI handler, that IRET unblocks NMIs: a pending one arrives at the
/// returned address, on `stack`, before this function switches back to the current stack.
/// Use it under [`super::exceptions::with_nmi_on_current_stack`] in that case, so that the
/// nested NMI's frame goes onto `stack`, not onto the outer NMI's IST stack.
/// Returns the address right after the IRETQ.
pub fn iret_on_flushed_stack(stack: &TestPage) -> u64 {
    let top = stack.address() + PAGE_SIZE;
    let after: u64;
    // SAFETY: the frame is built on `stack`'s page, owned by the caller's TestPage and mapped
    // read-write; the IRETQ returns to label 2 with this CS, RFLAGS and SS, and RSP (the
    // pushed value) still on that page; RDX keeps the original RSP, restored right after.
    // Handlers that run at label 2 save and restore every register. OUT to pc-testdev's flush
    // port changes only the host's mappings (ignored without the device).
    unsafe {
        asm!(
            "mov rdx, rsp",
            "mov rsp, {top}",
            "mov ecx, ss",
            "push rcx",
            "push rsp",
            "pushfq",
            "mov ecx, cs",
            "push rcx",
            "lea rcx, [rip + 2f]",
            "push rcx",
            "out 0xe4, eax",
            "iretq",
            "2:",
            "mov rsp, rdx",
            "lea {after}, [rip + 2b]",
            top = in(reg) top,
            after = lateout(reg) after,
            in("eax") stack.frame() as u32,
            out("rdx") _,
            out("rcx") _,
        )
    };
    after
}

/// DIV of 1500 by zero with RSP at the top of `stack`: the #DE's frame is pushed onto that
/// page (kvm-unit-tests' eventinj "DE PF exceptions" with [`super::exceptions::with_read_only_stack_repaired`]).
/// Returns the #DE (or what else ended the division) and the address of the DIV.
pub fn try_divide_by_zero_on_stack(stack: &TestPage) -> Attempt<()> {
    let top = stack.address() + PAGE_SIZE;
    let mut address = 0u64;
    let slot = &raw mut address;
    let result = catch_exception(|| {
        // SAFETY: `slot` points at a live local of this probe, written before the switch. RSP
        // moves to the top of the caller's TestPage (no Rust object lives there) and back; the
        // #DE is recovered by the enclosing catch, which restores RSP itself. DIV touches only
        // RAX, RDX and the flags.
        unsafe {
            asm!(
                "lea {scratch}, [rip + 2f]",
                "mov qword ptr [{slot}], {scratch}",
                "mov {saved}, rsp",
                "mov rsp, {top}",
                "2: div {divisor:e}",
                "mov rsp, {saved}",
                scratch = out(reg) _,
                saved = out(reg) _,
                slot = in(reg) slot,
                top = in(reg) top,
                divisor = in(reg) 0u32,
                inout("eax") 1500u32 => _,
                inout("edx") 0u32 => _,
            )
        };
    });
    Attempt { result, address }
}

/// INT `VECTOR` with RSP at the top of `stack`: its frame, or that of the exception its
/// delivery raises (#NP through a not-present gate), is pushed onto that page (kvm-unit-tests'
/// eventinj "NP PF exceptions"). Returns what INT `VECTOR` raised and the address of the INT.
pub fn try_software_interrupt_on_stack<const VECTOR: u8>(stack: &TestPage) -> Attempt<()> {
    try_software_interrupt_with_stack_pointer::<VECTOR>(stack.address() + PAGE_SIZE)
}

/// INT `VECTOR` with RSP at `top` (like [`try_interrupt_window_on_stack`]: memory no Rust
/// object uses, such as `mmu::with_stack_on_page_table`'s table page): the handler's frame
/// goes there. Returns what INT `VECTOR` raised, if anything, and the address of the INT.
pub fn try_software_interrupt_with_stack_pointer<const VECTOR: u8>(top: u64) -> Attempt<()> {
    let mut address = 0u64;
    let slot = &raw mut address;
    let result = catch_exception(|| {
        // SAFETY: as `try_divide_by_zero_on_stack`; INT n enters the runtime's gate of
        // `VECTOR`, whose handler returns here, or raises an exception that the catch recovers.
        unsafe {
            asm!(
                "lea {scratch}, [rip + 2f]",
                "mov qword ptr [{slot}], {scratch}",
                "mov {saved}, rsp",
                "mov rsp, {top}",
                "2: int {vector}",
                "mov rsp, {saved}",
                scratch = out(reg) _,
                saved = out(reg) _,
                slot = in(reg) slot,
                top = in(reg) top,
                vector = const VECTOR,
            )
        };
    });
    Attempt { result, address }
}
