//! aarch64 exceptions: the VBAR_EL1 vector table, the register frame, dispatch, and the
//! machinery behind `catch_exception`, `trap_exceptions` and EL0 (user mode) runs.
//!
//! Each of the 16 vectors saves x0/x1, puts its index (the *kind*: 4 × origin + type, origin
//! 0 current EL on SP_EL0, 1 current EL on SP_ELx, 2 lower EL AArch64, 3 lower EL AArch32;
//! type 0 synchronous, 1 IRQ, 2 FIQ, 3 SError) in x1 and jumps to a common path that saves
//! the rest of an [`ExceptionFrame`], including the FP/SIMD registers (Rust code uses them
//! freely on this hard-float target) and, for an exception that interrupted the kernel or EL0,
//! the SVE or streaming SME registers beyond them (`ExtendedSave`), and calls
//! [`exception_dispatch`]. Debug exceptions
//! (breakpoint, software step, watchpoint) go to a [`DebugHandler`] when one is installed
//! (`vmunit::arch::debug` records them with it), otherwise where other exceptions go.
//!
//! The kernel runs on SP_EL0 (EL1t, vector kinds 0-3) and exceptions on SP_EL1, a separate
//! 16 KiB stack per CPU: a kernel stack overflow faults on the unmapped guard page below the
//! kernel stack and is reported from a stack that works. Each exception stack is aligned to
//! its size and its lowest page is a guard too; every vector checks, before storing anything,
//! that SP_EL1 is above that page, so that nested exceptions that exhaust it (a handler that
//! faults again and again) end the test instead of faulting forever.

use core::arch::global_asm;
use core::fmt::{self, Write};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::smp::{EXCEPTION_STACK_SIZE, MAX_CPUS, STACK_SIZE, cpu_index};

/// The registers saved on every exception, in memory order; the assembly below writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExceptionFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The interrupted stack pointer (SP_EL0 when the exception came from EL0).
    pub sp: u64,
    /// ELR_EL1: where the exception returns to.
    pub elr: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr: u64,
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// The vector's index in the table (see the module documentation).
    pub kind: u64,
    /// Which SVE or SME state the vector kept in this CPU's [`ExtendedSave`] area, for the
    /// exception return to load back: [`EXTENDED_NONE`], [`EXTENDED_SVE`] or
    /// [`EXTENDED_STREAMING`].
    pub(crate) extended: u64,
    /// q0..q31.
    pub q: [u128; 32],
    /// FPCR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
}

/// The general-purpose registers, stack pointer, PC and PSTATE at an exception: what the
/// vector saved (x0..x30, the interrupted SP, ELR_EL1, SPSR_EL1), or, for a comparison, what
/// code captured just before the instruction that raised it (see
/// `instructions::try_with_registers`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Registers {
    /// x0..x30.
    pub x: [u64; 31],
    /// The stack pointer in use.
    pub sp: u64,
    /// The PC (ELR_EL1 for an exception).
    pub pc: u64,
    /// PSTATE as an SPSR holds it (SPSR_EL1 for an exception).
    pub pstate: u64,
}

/// The PSTATE bits an exception must preserve and that code can capture: NZCV, D, A, I, F,
/// and the mode M[4:0] (the exception level and the stack pointer selected).
pub const PSTATE_CHECKED: u64 = 0xf000_0000 | SPSR_DAIF | 0x1f;

// The capture in instructions.rs writes these offsets.
const _: () = assert!(offset_of!(Registers, sp) == 248);
const _: () = assert!(offset_of!(Registers, pc) == 256);
const _: () = assert!(offset_of!(Registers, pstate) == 264);

/// Each CPU's registers of the last exception that a `catch_exception` of that CPU caught.
static CAUGHT_REGISTERS: [spin::Mutex<Registers>; MAX_CPUS] = [const {
    spin::Mutex::new(Registers {
        x: [0; 31],
        sp: 0,
        pc: 0,
        pstate: 0,
    })
}; MAX_CPUS];

/// The registers (x0..x30, SP, ELR as PC, SPSR as PSTATE) that the vector saved for the last
/// exception a `catch_exception` on this CPU caught: what a handler saw.
pub fn last_caught_registers() -> Registers {
    *CAUGHT_REGISTERS[cpu_index()].lock()
}

const FRAME_SIZE: usize = 832;
const _: () = assert!(size_of::<ExceptionFrame>() == FRAME_SIZE);
const _: () = assert!(offset_of!(ExceptionFrame, sp) == 248);
const _: () = assert!(offset_of!(ExceptionFrame, elr) == 256);
const _: () = assert!(offset_of!(ExceptionFrame, esr) == 272);
const _: () = assert!(offset_of!(ExceptionFrame, kind) == 288);
const _: () = assert!(offset_of!(ExceptionFrame, q) == 304);
const _: () = assert!(offset_of!(ExceptionFrame, fpcr) == 816);

/// An exception class: ESR_EL1.EC (bits 31:26), named as in the Arm ARM (D24.2.40), so that
/// `#[vmunit::test(should_fault = DataAbort)]` and `exception.kind() == Vector::DataAbort` read
/// like the x86 `Vector::PF`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionClass {
    /// Unknown reason: an undefined instruction (UDF), among others. (EC 0x00)
    Unknown,
    /// A trapped WFI or WFE. (EC 0x01)
    WaitForInterruptOrEvent,
    /// FP/SIMD access trapped by CPACR_EL1.FPEN. (EC 0x07)
    FloatingPointAccess,
    /// Illegal execution state (PSTATE.IL). (EC 0x0e)
    IllegalState,
    /// SVE access trapped by CPACR_EL1.ZEN (or CPTR_EL2). (EC 0x19)
    SveAccess,
    /// SME trap (ISS.SMTC bits 2:0 say which): SME access trapped by CPACR_EL1.SMEN, an
    /// instruction illegal in Streaming SVE mode, ZA used while PSTATE.ZA is 0, ZT0 disabled.
    /// (EC 0x1d)
    SmeAccess,
    /// SVC in AArch64 state. (EC 0x15)
    SupervisorCall,
    /// HVC in AArch64 state. (EC 0x16)
    HypervisorCall,
    /// SMC in AArch64 state. (EC 0x17)
    SecureMonitorCall,
    /// A trapped MSR, MRS or system instruction. (EC 0x18)
    SystemRegister,
    /// An instruction abort from a lower exception level (EL0). (EC 0x20)
    InstructionAbortLower,
    /// An instruction abort at the same exception level. (EC 0x21)
    InstructionAbort,
    /// A misaligned PC. (EC 0x22)
    PcAlignment,
    /// A data abort from a lower exception level (EL0). (EC 0x24)
    DataAbortLower,
    /// A data abort at the same exception level. (EC 0x25)
    DataAbort,
    /// A misaligned SP. (EC 0x26)
    SpAlignment,
    /// A trapped floating-point exception (FPCR trap enables). (EC 0x2c)
    FloatingPointException,
    /// An SError interrupt. (EC 0x2f)
    SError,
    /// A hardware breakpoint from a lower exception level. (EC 0x30)
    BreakpointLower,
    /// A hardware breakpoint at the same exception level. (EC 0x31)
    Breakpoint,
    /// A software step from a lower exception level. (EC 0x32)
    SoftwareStepLower,
    /// A software step at the same exception level. (EC 0x33)
    SoftwareStep,
    /// A watchpoint from a lower exception level. (EC 0x34)
    WatchpointLower,
    /// A watchpoint at the same exception level. (EC 0x35)
    Watchpoint,
    /// BRK in AArch64 state. (EC 0x3c)
    BreakpointInstruction,
    /// Any other class, by its EC value.
    Other(u8),
}

/// The portable name of an exception kind (`Vector` on x86).
pub use ExceptionClass as Vector;

/// Each named class with its EC value and the Arm ARM's short name.
const CLASSES: [(ExceptionClass, u8, &str); 25] = [
    (ExceptionClass::Unknown, 0x00, "UNKNOWN"),
    (ExceptionClass::WaitForInterruptOrEvent, 0x01, "WFx"),
    (ExceptionClass::FloatingPointAccess, 0x07, "FP_ASIMD_ACCESS"),
    (ExceptionClass::IllegalState, 0x0e, "ILLEGAL_STATE"),
    (ExceptionClass::SupervisorCall, 0x15, "SVC64"),
    (ExceptionClass::SveAccess, 0x19, "SVE"),
    (ExceptionClass::SmeAccess, 0x1d, "SME"),
    (ExceptionClass::HypervisorCall, 0x16, "HVC64"),
    (ExceptionClass::SecureMonitorCall, 0x17, "SMC64"),
    (ExceptionClass::SystemRegister, 0x18, "SYS64"),
    (ExceptionClass::InstructionAbortLower, 0x20, "IABT_EL0"),
    (ExceptionClass::InstructionAbort, 0x21, "IABT_EL1"),
    (ExceptionClass::PcAlignment, 0x22, "PC_ALIGN"),
    (ExceptionClass::DataAbortLower, 0x24, "DABT_EL0"),
    (ExceptionClass::DataAbort, 0x25, "DABT_EL1"),
    (ExceptionClass::SpAlignment, 0x26, "SP_ALIGN"),
    (ExceptionClass::FloatingPointException, 0x2c, "FP_EXC64"),
    (ExceptionClass::SError, 0x2f, "SERROR"),
    (ExceptionClass::BreakpointLower, 0x30, "BREAKPT_EL0"),
    (ExceptionClass::Breakpoint, 0x31, "BREAKPT_EL1"),
    (ExceptionClass::SoftwareStepLower, 0x32, "SOFTSTP_EL0"),
    (ExceptionClass::SoftwareStep, 0x33, "SOFTSTP_EL1"),
    (ExceptionClass::WatchpointLower, 0x34, "WATCHPT_EL0"),
    (ExceptionClass::Watchpoint, 0x35, "WATCHPT_EL1"),
    (ExceptionClass::BreakpointInstruction, 0x3c, "BRK64"),
];

impl ExceptionClass {
    /// The class with EC value `code` (bits 5:0).
    pub fn from_code(code: u8) -> ExceptionClass {
        let code = code & 0x3f;
        CLASSES
            .iter()
            .find(|(_, value, _)| *value == code)
            .map_or(ExceptionClass::Other(code), |(class, _, _)| *class)
    }

    /// The class of an ESR value.
    pub fn of(esr: u64) -> ExceptionClass {
        ExceptionClass::from_code(((esr >> 26) & 0x3f) as u8)
    }

    /// The EC value.
    pub fn code(self) -> u8 {
        match self {
            ExceptionClass::Other(code) => code,
            class => CLASSES
                .iter()
                .find(|(named, _, _)| *named == class)
                .map_or(0, |(_, code, _)| *code),
        }
    }

    /// The Arm ARM's short name of the class ("DABT_EL1"), "RESERVED" for other values.
    pub fn name(self) -> &'static str {
        CLASSES
            .iter()
            .find(|(class, _, _)| *class == self)
            .map_or("RESERVED", |(_, _, name)| name)
    }

    /// Whether SVC, HVC or SMC raised it: ELR then already points after the instruction.
    pub fn is_call(self) -> bool {
        matches!(
            self,
            ExceptionClass::SupervisorCall
                | ExceptionClass::HypervisorCall
                | ExceptionClass::SecureMonitorCall
        )
    }

    /// Whether it is a debug exception that PSTATE.D masks (breakpoint, software step or
    /// watchpoint, from either level; not BRK, which is always taken).
    pub fn is_debug(self) -> bool {
        matches!(
            self,
            ExceptionClass::BreakpointLower
                | ExceptionClass::Breakpoint
                | ExceptionClass::SoftwareStepLower
                | ExceptionClass::SoftwareStep
                | ExceptionClass::WatchpointLower
                | ExceptionClass::Watchpoint
        )
    }

    /// Whether FAR_EL1 holds the faulting address for this class (aborts, PC alignment,
    /// watchpoints).
    pub fn has_fault_address(self) -> bool {
        matches!(
            self,
            ExceptionClass::InstructionAbortLower
                | ExceptionClass::InstructionAbort
                | ExceptionClass::PcAlignment
                | ExceptionClass::DataAbortLower
                | ExceptionClass::DataAbort
                | ExceptionClass::WatchpointLower
                | ExceptionClass::Watchpoint
        )
    }
}

impl fmt::Debug for ExceptionClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

impl fmt::Display for ExceptionClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} (EC {:#04x})", self.name(), self.code())
    }
}

/// A synchronous exception as a test sees it (`Debug` prints the `Display` form).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// ESR_EL1.EC.
    pub class: ExceptionClass,
    /// ESR_EL1 in full (ISS in bits 24:0).
    pub esr: u64,
    /// ELR_EL1: the faulting instruction, or the one after an SVC/HVC/SMC.
    pub elr: u64,
    /// FAR_EL1 (meaningful for aborts and alignment faults).
    pub far: u64,
    /// Whether it was taken from EL0.
    pub from_user: bool,
}

/// The fault status code of an abort (ESR_EL1.ISS.DFSC or IFSC, bits 5:0), decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultStatus {
    /// Address size fault at a translation level (0-3).
    AddressSize {
        /// The translation table level.
        level: u8,
    },
    /// Translation fault: no valid descriptor at a level (0-3).
    Translation {
        /// The translation table level.
        level: u8,
    },
    /// Access flag fault at a level (1-3).
    AccessFlag {
        /// The translation table level.
        level: u8,
    },
    /// Permission fault at a level (1-3).
    Permission {
        /// The translation table level.
        level: u8,
    },
    /// Synchronous external abort, not on a translation table walk.
    ExternalAbort,
    /// Synchronous Tag Check Fault (FEAT_MTE2, DFSC 0b010001): the access's logical tag
    /// differs from the allocation tag of Tagged Normal memory.
    TagCheck,
    /// Alignment fault.
    Alignment,
    /// Any other code.
    Other(u8),
}

impl FaultStatus {
    /// Decodes a DFSC/IFSC value.
    pub fn from_code(code: u8) -> FaultStatus {
        let level = code & 3;
        match code & 0x3f {
            0b00_0000..=0b00_0011 => FaultStatus::AddressSize { level },
            0b00_0100..=0b00_0111 => FaultStatus::Translation { level },
            0b00_1000..=0b00_1011 => FaultStatus::AccessFlag { level },
            0b00_1100..=0b00_1111 => FaultStatus::Permission { level },
            0b01_0000 => FaultStatus::ExternalAbort,
            0b01_0001 => FaultStatus::TagCheck,
            0b10_0001 => FaultStatus::Alignment,
            other => FaultStatus::Other(other),
        }
    }
}

/// ESR_EL1.ISS.WnR (bit 6) of a data abort: the access was a write.
const ISS_WRITE_NOT_READ: u64 = 1 << 6;
/// ESR_EL1.ISS.FnV (bit 10) of an abort: FAR_EL1 is not valid.
const ISS_FAR_NOT_VALID: u64 = 1 << 10;

impl Exception {
    /// ISS (ESR bits 24:0).
    pub fn iss(&self) -> u64 {
        self.esr & 0x1ff_ffff
    }

    /// The exception class (the portable accessor; `Vector` is its other name).
    pub fn kind(&self) -> ExceptionClass {
        self.class
    }

    /// The syndrome: ESR_EL1 in full (the error code's counterpart).
    pub fn syndrome(&self) -> u64 {
        self.esr
    }

    /// Where the exception returns to (ELR_EL1): the faulting instruction, or the one after an
    /// SVC/HVC/SMC.
    pub fn return_address(&self) -> u64 {
        self.elr
    }

    /// FAR_EL1, for the classes that set it (aborts, PC alignment, watchpoints).
    pub fn fault_address(&self) -> Option<u64> {
        self.class.has_fault_address().then_some(self.far)
    }

    /// Whether the exception was taken from EL0.
    pub fn from_user_mode(&self) -> bool {
        self.from_user
    }

    /// The immediate of SVC, HVC, SMC and BRK (ISS bits 15:0).
    pub fn immediate(&self) -> u16 {
        (self.esr & 0xffff) as u16
    }

    /// The decoded fault status of an instruction or data abort (`None` for other classes).
    pub fn fault_status(&self) -> Option<FaultStatus> {
        matches!(
            self.class,
            ExceptionClass::InstructionAbortLower
                | ExceptionClass::InstructionAbort
                | ExceptionClass::DataAbortLower
                | ExceptionClass::DataAbort
        )
        .then(|| FaultStatus::from_code((self.esr & 0x3f) as u8))
    }

    /// Whether an abort says FAR_EL1 holds its address (ISS.FnV clear); `false` for other
    /// classes.
    pub fn fault_address_valid(&self) -> bool {
        self.fault_status().is_some() && self.esr & ISS_FAR_NOT_VALID == 0
    }

    /// Whether a data abort was raised by a write (ISS.WnR).
    pub fn is_write(&self) -> bool {
        matches!(
            self.class,
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbort
        ) && self.esr & ISS_WRITE_NOT_READ != 0
    }
}

impl fmt::Debug for Exception {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} from EL{} at ELR {:#x}, ESR {:#x}, FAR {:#x}",
            self.class,
            if self.from_user {
                0
            } else {
                super::instructions::current_el()
            },
            self.elr,
            self.esr,
            self.far
        )
    }
}

/// What a vector of the table takes: its kind modulo 4 (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum VectorType {
    Synchronous,
    Irq,
    Fiq,
    SError,
}

impl VectorType {
    fn of(kind: u64) -> VectorType {
        match kind & 3 {
            0 => VectorType::Synchronous,
            1 => VectorType::Irq,
            2 => VectorType::Fiq,
            _ => VectorType::SError,
        }
    }

    /// How an unexpected one is reported.
    fn description(self) -> &'static str {
        match self {
            VectorType::Synchronous => "synchronous exception",
            VectorType::Irq => "IRQ",
            VectorType::Fiq => "FIQ",
            VectorType::SError => "SError",
        }
    }
}

/// Vector kinds from here on are taken from a lower exception level (EL0).
const FIRST_LOWER_LEVEL_KIND: u64 = 8;
/// SPSR.{D, A, I, F}: the exception mask bits.
const SPSR_DAIF: u64 = 0x3c0;

/// The index of the SVC that ends a user-mode run (see [`run_in_user_mode`]).
const USER_EXIT_SVC: u16 = 0xfffe;
/// SPSR mode EL0t (EL0 on SP_EL0).
const SPSR_EL0T: u64 = 0x0;
/// SPSR value for EL0t with D, A, I and F masked.
const SPSR_EL0_MASKED: u64 = SPSR_DAIF | SPSR_EL0T;
const _: () = assert!(SPSR_EL0_MASKED == 0x3c0);
/// PSTATE of the runtime's EL0 runs apart from NZCV, as an SPSR holds it: D, A, I, F masked,
/// mode EL0t.
pub const USER_PSTATE: u64 = SPSR_EL0_MASKED;

global_asm!(
    r#"
    .arch_extension sve
    .arch_extension sme
    /* x10, x11, x12: this CPU's ExtendedSave area's Z, P and FFR (x5-x7 scratch). */
    .macro VMUNIT_EXTENDED_AREA
        mrs x5, tpidr_el1
        and x5, x5, #{cpu_mask}
        mov x7, #{extended_size}
        adrp x6, {extended_save}
        add x6, x6, :lo12:{extended_save}
        madd x6, x5, x7, x6
        add x10, x6, #{extended_z}
        mov x11, #{extended_p}
        add x11, x6, x11
        mov x12, #{extended_ffr}
        add x12, x6, x12
    .endm

    /* Z0-Z31 to [x10] and P0-P15 to [x11], at the current (streaming) vector length. */
    .macro VMUNIT_STORE_Z_P
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        str z\n, [x10, #\n, mul vl]
        .endr
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        str p\n, [x11, #\n, mul vl]
        .endr
    .endm

    /* P0-P15 from [x11], then Z0-Z31 from [x10]: the reverse of VMUNIT_STORE_Z_P. */
    .macro VMUNIT_LOAD_P_Z
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        ldr p\n, [x11, #\n, mul vl]
        .endr
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        ldr z\n, [x10, #\n, mul vl]
        .endr
    .endm

    .macro VMUNIT_VECTOR kind
        .balign 0x80
        sub sp, sp, #{frame_size}
        /* x0 <-> SP without a scratch register: is SP in the guard page (offset below 4 KiB
         * in its 16 KiB-aligned stack)? */
        add sp, sp, x0
        sub x0, sp, x0
        tst x0, #0x3000
        b.eq 1f
        sub x0, sp, x0
        sub sp, sp, x0
        stp x0, x1, [sp, #0]
        mov x1, #\kind
        b vmunit_exception_common
    1:  mov x0, #\kind
        b vmunit_exception_stack_overflow
    .endm

    .section .text.vmunit_vectors, "ax"
    .balign 2048
    .global vmunit_vectors
    vmunit_vectors:
    VMUNIT_VECTOR 0
    VMUNIT_VECTOR 1
    VMUNIT_VECTOR 2
    VMUNIT_VECTOR 3
    VMUNIT_VECTOR 4
    VMUNIT_VECTOR 5
    VMUNIT_VECTOR 6
    VMUNIT_VECTOR 7
    VMUNIT_VECTOR 8
    VMUNIT_VECTOR 9
    VMUNIT_VECTOR 10
    VMUNIT_VECTOR 11
    VMUNIT_VECTOR 12
    VMUNIT_VECTOR 13
    VMUNIT_VECTOR 14
    VMUNIT_VECTOR 15

    /* x0: the vector kind. Abandons this CPU's exception stack and reports. */
    vmunit_exception_stack_overflow:
        mrs x9, tpidr_el1
        and x9, x9, #{cpu_mask}
        add x9, x9, #1
        adrp x10, __exception_stacks_start
        add x10, x10, :lo12:__exception_stacks_start
        add x10, x10, x9, lsl #14
        mov sp, x10
        bl {overflow}
        b .

    vmunit_exception_common:
        stp x2, x3, [sp, #16]
        stp x4, x5, [sp, #32]
        stp x6, x7, [sp, #48]
        stp x8, x9, [sp, #64]
        stp x10, x11, [sp, #80]
        stp x12, x13, [sp, #96]
        stp x14, x15, [sp, #112]
        stp x16, x17, [sp, #128]
        stp x18, x19, [sp, #144]
        stp x20, x21, [sp, #160]
        stp x22, x23, [sp, #176]
        stp x24, x25, [sp, #192]
        stp x26, x27, [sp, #208]
        stp x28, x29, [sp, #224]
        str x30, [sp, #240]
        mrs x2, elr_el1
        mrs x3, spsr_el1
        stp x2, x3, [sp, #256]
        mrs x2, esr_el1
        mrs x4, far_el1
        stp x2, x4, [sp, #272]
        str x1, [sp, #288]
        tst x3, #1                      /* SPSR.M[0] == 0: EL0t or EL1t, on SP_EL0 */
        b.ne 1f
        mrs x2, sp_el0
        b 2f
    1:  add x2, sp, #{frame_size}
    2:  str x2, [sp, #248]
        /* SVE and SME state (see ExtendedSave): kept only when the exception interrupted code
         * on SP_EL0 (the kernel's code or EL0), never for a nested one, and only while
         * CPACR_EL1 lets EL1 use SVE (ZEN bit 16) or SME (SMEN bit 24). */
        str xzr, [sp, #296]
        tst x3, #1
        b.ne 20f
        mrs x4, cpacr_el1
        tbnz x4, #24, 22f
        tbz x4, #16, 20f
    22:
        VMUNIT_EXTENDED_AREA
        tbz x4, #24, 21f
        mrs x9, S3_3_C4_C2_2            /* SVCR */
        tbz x9, #0, 21f
        /* Streaming SVE mode: Z and P at the streaming length, then leave it (the handler's
         * AdvSIMD code is illegal there); ZA and PSTATE.ZA are left as they are. */
        VMUNIT_STORE_Z_P
        smstop sm
        mov x8, #{extended_streaming}
        str x8, [sp, #296]
        b 20f
    21: tbz x4, #16, 20f
        VMUNIT_STORE_Z_P
        rdffr p0.b
        str p0, [x12]
        mov x8, #{extended_sve}
        str x8, [sp, #296]
    20: add x2, sp, #304
        stp q0, q1, [x2, #0]
        stp q2, q3, [x2, #32]
        stp q4, q5, [x2, #64]
        stp q6, q7, [x2, #96]
        stp q8, q9, [x2, #128]
        stp q10, q11, [x2, #160]
        stp q12, q13, [x2, #192]
        stp q14, q15, [x2, #224]
        stp q16, q17, [x2, #256]
        stp q18, q19, [x2, #288]
        stp q20, q21, [x2, #320]
        stp q22, q23, [x2, #352]
        stp q24, q25, [x2, #384]
        stp q26, q27, [x2, #416]
        stp q28, q29, [x2, #448]
        stp q30, q31, [x2, #480]
        mrs x3, fpcr
        mrs x4, fpsr
        add x5, x2, #512
        stp x3, x4, [x5]

        mov x0, sp
        bl {dispatch}

        add x2, sp, #304
        ldp q0, q1, [x2, #0]
        ldp q2, q3, [x2, #32]
        ldp q4, q5, [x2, #64]
        ldp q6, q7, [x2, #96]
        ldp q8, q9, [x2, #128]
        ldp q10, q11, [x2, #160]
        ldp q12, q13, [x2, #192]
        ldp q14, q15, [x2, #224]
        ldp q16, q17, [x2, #256]
        ldp q18, q19, [x2, #288]
        ldp q20, q21, [x2, #320]
        ldp q22, q23, [x2, #352]
        ldp q24, q25, [x2, #384]
        ldp q26, q27, [x2, #416]
        ldp q28, q29, [x2, #448]
        ldp q30, q31, [x2, #480]
        /* The SVE or SME state the entry kept (its Z registers' low halves override q0-q31),
         * then FPCR and FPSR (SMSTART resets FPSR). */
        ldr x8, [sp, #296]
        cbz x8, 23f
        VMUNIT_EXTENDED_AREA
        cmp x8, #{extended_streaming}
        b.eq 24f
        ldr p0, [x12]
        wrffr p0.b
        VMUNIT_LOAD_P_Z
        b 23f
    24: smstart sm
        VMUNIT_LOAD_P_Z
    23: add x2, sp, #304
        add x5, x2, #512
        ldp x3, x4, [x5]
        msr fpcr, x3
        msr fpsr, x4
        ldp x2, x3, [sp, #256]
        msr elr_el1, x2
        msr spsr_el1, x3
        tst x3, #1
        b.ne 3f
        ldr x2, [sp, #248]
        msr sp_el0, x2
    3:  ldp x0, x1, [sp, #0]
        ldp x2, x3, [sp, #16]
        ldp x4, x5, [sp, #32]
        ldp x6, x7, [sp, #48]
        ldp x8, x9, [sp, #64]
        ldp x10, x11, [sp, #80]
        ldp x12, x13, [sp, #96]
        ldp x14, x15, [sp, #112]
        ldp x16, x17, [sp, #128]
        ldp x18, x19, [sp, #144]
        ldp x20, x21, [sp, #160]
        ldp x22, x23, [sp, #176]
        ldp x24, x25, [sp, #192]
        ldp x26, x27, [sp, #208]
        ldp x28, x29, [sp, #224]
        ldr x30, [sp, #240]
        add sp, sp, #{frame_size}
        eret
    "#,
    frame_size = const FRAME_SIZE,
    dispatch = sym exception_dispatch,
    overflow = sym exception_stack_overflow,
    cpu_mask = const MAX_CPUS - 1,
    extended_save = sym EXTENDED_SAVE,
    extended_size = const EXTENDED_SIZE,
    extended_z = const EXTENDED_Z,
    extended_p = const EXTENDED_P,
    extended_ffr = const EXTENDED_FFR,
    extended_sve = const EXTENDED_SVE,
    extended_streaming = const EXTENDED_STREAMING,
);

/// [`ExceptionFrame`]'s `extended`: the vector kept no SVE or SME state (a nested exception,
/// or neither enabled).
pub(crate) const EXTENDED_NONE: u64 = 0;
/// The vector kept Z0-Z31, P0-P15 and FFR at the current vector length (not in Streaming SVE
/// mode).
pub(crate) const EXTENDED_SVE: u64 = 1;
/// The vector found PSTATE.SM set: it kept the streaming Z0-Z31 and P0-P15 at the streaming
/// vector length and left Streaming SVE mode (SMSTOP SM); the exception return re-enters it
/// (SMSTART SM) and loads them back. (FFR is not accessible in Streaming SVE mode without
/// SMCR_EL1.FA64, which the runtime leaves clear.)
pub(crate) const EXTENDED_STREAMING: u64 = 2;
/// Where Z0-Z31 start in an [`ExtendedSave`] area (after a 64-byte header).
const EXTENDED_Z: usize = 64;
/// Where P0-P15 start: after 32 Z registers of the largest length (256 bytes).
const EXTENDED_P: usize = EXTENDED_Z + 32 * super::sve::MAX_VECTOR_BYTES;
/// Where FFR starts: after 16 P registers of the largest length (32 bytes).
const EXTENDED_FFR: usize = EXTENDED_P + 16 * super::sve::MAX_VECTOR_BYTES / 8;
/// One CPU's area, FFR included, rounded to 64 bytes.
const EXTENDED_SIZE: usize = (EXTENDED_FFR + super::sve::MAX_VECTOR_BYTES / 8).next_multiple_of(64);
const _: () = assert!(EXTENDED_P < 0x1_0000 && EXTENDED_FFR < 0x1_0000 && EXTENDED_SIZE < 0x1_0000);

/// Each CPU's SVE/SME save area of the exception vectors. The runtime's handlers are compiled
/// Rust, which uses v0-v31 (and an AdvSIMD write to a V register zeroes the rest of its Z
/// register, Arm ARM "Vector registers"), so q0-q31 in the frame are not enough for code that
/// holds SVE values: the vector of an exception that interrupted code on SP_EL0 (the kernel or
/// EL0) keeps Z0-Z31, P0-P15 and FFR here (or, in Streaming SVE mode, the streaming Z and P,
/// and then leaves that mode, where AdvSIMD instructions are illegal), and the exception return
/// loads them back. One area per CPU suffices: handlers run on SP_EL1, so the exceptions they
/// take are nested ones, which keep only q0-q31. ZA is never touched by the runtime: it needs
/// no saving. A handler must not change the vector lengths (ZCR_EL1, SMCR_EL1).
#[repr(C, align(64))]
pub(crate) struct ExtendedSave(core::cell::UnsafeCell<[[u8; EXTENDED_SIZE]; MAX_CPUS]>);
// SAFETY: only the exception vectors touch the bytes, each CPU its own area (by TPIDR_EL1),
// with exceptions masked.
unsafe impl Sync for ExtendedSave {}
static EXTENDED_SAVE: ExtendedSave =
    ExtendedSave(core::cell::UnsafeCell::new([[0; EXTENDED_SIZE]; MAX_CPUS]));

const _: () = assert!(MAX_CPUS.is_power_of_two());
const _: () = assert!(EXCEPTION_STACK_SIZE == 0x4000, "the vectors test SP bits 13:12");

unsafe extern "C" {
    static vmunit_vectors: u8;
}

/// Points VBAR_EL1 at the vector table (on each CPU).
pub(crate) fn init() {
    use aarch64_cpu::registers::{VBAR_EL1, Writeable};
    VBAR_EL1.set(&raw const vmunit_vectors as u64);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The IRQ handler (0: none): called for every IRQ, with IRQs masked.
static IRQ_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Exceptions and interrupts handled so far (for tests that check delivery counts).
pub(crate) static EXCEPTION_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Installs the function every IRQ goes to (the GIC driver's dispatcher), or none. Tests
/// register per-INTID handlers with `set_interrupt_handler`.
pub(crate) fn set_irq_handler(handler: Option<fn()>) {
    IRQ_HANDLER.store(handler.map_or(0, |handler| handler as usize), Ordering::Release);
}

global_asm!(
    r#"
    .section .text.vmunit_try_call, "ax"
    /* u64 vmunit_try_call(CatchContext *context, void (*function)(void *), void *data)
     * Returns 0 when `function` returned, 1 when an exception ended it (the dispatcher then
     * resumes at vmunit_try_recover with x0 = context). */
    .global vmunit_try_call
    vmunit_try_call:
        stp x29, x30, [sp, #-160]!
        stp x19, x20, [sp, #16]
        stp x21, x22, [sp, #32]
        stp x23, x24, [sp, #48]
        stp x25, x26, [sp, #64]
        stp x27, x28, [sp, #80]
        stp d8, d9, [sp, #96]
        stp d10, d11, [sp, #112]
        stp d12, d13, [sp, #128]
        stp d14, d15, [sp, #144]
        mov x9, sp
        str x9, [x0]
        mrs x9, daif
        mrs x10, spsel
        orr x9, x9, x10
        str x9, [x0, #8]
        mov x0, x2
        blr x1
        mov x0, #0
    vmunit_try_return:
        ldp x19, x20, [sp, #16]
        ldp x21, x22, [sp, #32]
        ldp x23, x24, [sp, #48]
        ldp x25, x26, [sp, #64]
        ldp x27, x28, [sp, #80]
        ldp d8, d9, [sp, #96]
        ldp d10, d11, [sp, #112]
        ldp d12, d13, [sp, #128]
        ldp d14, d15, [sp, #144]
        ldp x29, x30, [sp], #160
        ret
    .global vmunit_try_recover
    vmunit_try_recover:
        ldr x9, [x0]
        mov sp, x9
        mov x0, #1
        b vmunit_try_return

    /* Enters EL0 at vmunit_user_entry: x0 = data, x1 = function, x2 = the EL0 stack top.
     * SP_EL0 is the kernel's stack, and MSR SP_EL0 is undefined while SPSel selects it: switch
     * to SP_EL1 first (unused until the ERET; the kernel SP is in the CatchContext). */
    .global vmunit_enter_user
    vmunit_enter_user:
        msr spsel, #1
        msr sp_el0, x2
        adr x9, vmunit_user_entry
        msr elr_el1, x9
        mov x9, #{spsr_el0}
        msr spsr_el1, x9
        eret
    vmunit_user_entry:
        blr x1
        svc #{user_exit}
        b .
    "#,
    spsr_el0 = const SPSR_EL0_MASKED,
    user_exit = const USER_EXIT_SVC,
);

unsafe extern "C" {
    static vmunit_try_recover: u8;
    /// Never returns: the SVC that ends the EL0 run (or an exception) is caught.
    fn vmunit_enter_user(data: *mut u8, function: extern "C" fn(*mut u8), stack_top: u64);
}

pub use crate::catch::{catch_exception, trap_exceptions};

/// One 16 KiB EL0 stack per CPU, in the image's data (which EL0 may access; see mmu.rs).
#[repr(C, align(16))]
struct UserStacks(core::cell::UnsafeCell<[[u8; USER_STACK_SIZE]; MAX_CPUS]>);
const USER_STACK_SIZE: usize = 16 * 1024;
// SAFETY: no Rust code reads or writes the stacks' bytes; only EL0 code on its own CPU does.
unsafe impl Sync for UserStacks {}
static USER_STACKS: UserStacks = UserStacks(core::cell::UnsafeCell::new([[0; USER_STACK_SIZE]; MAX_CPUS]));

/// The CPU whose user stack holds `address`, if one does.
pub(crate) fn user_stack_owner(address: u64) -> Option<usize> {
    let start = USER_STACKS.0.get() as u64;
    let index = (address.checked_sub(start)? / USER_STACK_SIZE as u64) as usize;
    (index < MAX_CPUS).then_some(index)
}

/// Runs `function` at EL0 on a small user stack and returns its result, or the first
/// exception it raised (taken from EL0, so `from_user` is set).
///
/// At EL0 the closure may use its stack, the image's code and statics, but not the heap,
/// the console, system registers, or `catch_exception` (those raise exceptions, which end
/// the run and are returned). Interrupts stay masked.
pub fn run_in_user_mode<R, F: FnOnce() -> R>(function: F) -> Result<R, Exception> {
    let mut call = crate::catch::Call::new(function);
    let stack_top = USER_STACKS.0.get().cast::<u8>() as u64 + ((cpu_index() + 1) * USER_STACK_SIZE) as u64;
    let data = call.as_data();
    let outcome = catch_exception(|| {
        // SAFETY: the EL0 code is the call's trampoline, which ends with the SVC that
        // `catch_exception` catches (as it does any other exception); the stack is this CPU's
        // user stack, which nothing else uses.
        unsafe { vmunit_enter_user(data, crate::catch::Call::<F, R>::trampoline, stack_top) }
    });
    match outcome {
        Err(exception)
            if exception.from_user
                && exception.class == ExceptionClass::SupervisorCall
                && exception.immediate() == USER_EXIT_SVC =>
        {
            call.into_result().ok_or(exception)
        }
        Err(exception) => Err(exception),
        Ok(()) => unreachable!("vmunit_enter_user returned"),
    }
}

/// SPSR.D (bit 9): debug exceptions masked.
pub const SPSR_D: u64 = 1 << 9;
/// SPSR.SS (bit 21): the software step state (1: active-not-pending after the ERET).
pub const SPSR_SS: u64 = 1 << 21;

/// A debug exception (breakpoint, software step, watchpoint) as a [`DebugHandler`] sees it:
/// the exception and the saved PSTATE, with the changes to the return state that cannot hurt
/// the runtime (masking debug exceptions, the step state); the return address only through
/// an `unsafe` method.
pub struct DebugFrame<'frame> {
    frame: &'frame mut ExceptionFrame,
    exception: Exception,
}

impl DebugFrame<'_> {
    /// The exception (class, ESR, ELR, FAR, whether from EL0).
    pub fn exception(&self) -> Exception {
        self.exception
    }

    /// The saved PSTATE (SPSR_EL1) the ERET restores, with the changes made so far.
    pub fn spsr(&self) -> u64 {
        self.frame.spsr
    }

    /// Returns with PSTATE.D set (kvm-unit-tests' breakpoint and watchpoint handlers): the
    /// instruction at ELR then runs without its breakpoint or watchpoint firing again, until
    /// code unmasks debug exceptions.
    pub fn mask_debug_exceptions_on_return(&mut self) {
        self.frame.spsr |= SPSR_D;
    }

    /// Returns with PSTATE.SS set (`true`: the step state machine is active-not-pending, so
    /// one instruction runs and a software step exception follows while MDSCR_EL1.SS stays
    /// set; kvm-unit-tests' single-step handler) or clear (active-pending: the step exception
    /// comes again before any instruction runs).
    pub fn set_step_on_return(&mut self, step: bool) {
        if step {
            self.frame.spsr |= SPSR_SS;
        } else {
            self.frame.spsr &= !SPSR_SS;
        }
    }

    /// Makes the exception return to `address` instead of ELR.
    ///
    /// # Safety
    /// `address` must be an instruction where the interrupted code may continue with the
    /// registers it had: for compiled code, in practice only the next instruction of an
    /// assembly sequence that expects it.
    pub unsafe fn set_return_address(&mut self, address: u64) {
        self.frame.elr = address;
    }
}

/// A handler that takes every debug exception (breakpoint, software step, watchpoint; not
/// BRK) instead of the usual dispatch, on every CPU, and resumes with what it changed in the
/// [`DebugFrame`]. It runs with debug exceptions and interrupts masked; it must not allocate
/// or take locks.
pub type DebugHandler = fn(frame: &mut DebugFrame<'_>);

/// The installed [`DebugHandler`] (as usize; 0: none).
static DEBUG_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs `handler` for every debug exception (kvm-unit-tests' `install_exception_handler`
/// for the breakpoint, step and watchpoint classes), or removes it with `None`: without one
/// a debug exception goes to `catch_exception`/`trap_exceptions` as any other.
/// `vmunit::arch::debug::record_debug_exceptions` uses it.
pub fn set_debug_handler(handler: Option<DebugHandler>) {
    DEBUG_HANDLER.store(handler.map_or(0, |handler| handler as usize), Ordering::Release);
}

/// A synchronous exception as an [`ExceptionHandler`] sees it: the exception and the register
/// frame the vector saved (x0..x30, SP, ELR, SPSR), which the exception return restores.
/// Reading is safe; every change is `unsafe`, since the interrupted code (compiled Rust
/// included) continues with what the handler leaves there.
pub struct ExceptionContext<'frame> {
    frame: &'frame mut ExceptionFrame,
    exception: Exception,
}

impl ExceptionContext<'_> {
    /// The exception (class, ESR, ELR, FAR, whether from EL0).
    pub fn exception(&self) -> Exception {
        self.exception
    }

    /// The saved registers: x0..x30, SP, ELR as `pc`, SPSR as `pstate`, with the changes
    /// made so far.
    pub fn registers(&self) -> Registers {
        Registers {
            x: self.frame.x,
            sp: self.frame.sp,
            pc: self.frame.elr,
            pstate: self.frame.spsr,
        }
    }

    /// Sets x`index` (0..=30) for the exception return.
    ///
    /// # Safety
    /// The interrupted code must expect the value: in practice an assembly sequence that
    /// raises the exception on purpose and names the register as an output.
    ///
    /// # Panics
    /// If `index` is above 30.
    pub unsafe fn set_x(&mut self, index: usize, value: u64) {
        self.frame.x[index] = value;
    }

    /// Makes the exception return to `address` (ELR).
    ///
    /// # Safety
    /// `address` must be an instruction where the interrupted code may continue with the
    /// registers it will have: for compiled code, in practice only the instruction after the
    /// faulting one of an assembly sequence that expects that.
    pub unsafe fn set_return_address(&mut self, address: u64) {
        self.frame.elr = address;
    }

    /// Returns past the instruction that raised the exception (ELR + 4; kvm-unit-tests'
    /// `regs->pc += 4`). For SVC, HVC and SMC, ELR already points past it: use
    /// [`ExceptionClass::is_call`] to tell.
    ///
    /// # Safety
    /// As [`set_return_address`](Self::set_return_address): the code must expect to continue
    /// after the faulting instruction.
    pub unsafe fn skip_instruction(&mut self) {
        self.frame.elr += 4;
    }

    /// Sets the saved PSTATE (SPSR) the exception return restores.
    ///
    /// # Safety
    /// The interrupted code must be able to continue in that state: a different exception
    /// level, stack pointer selection or mask can break the runtime.
    pub unsafe fn set_pstate(&mut self, spsr: u64) {
        self.frame.spsr = spsr;
    }

    /// Sets the stack pointer the exception return restores (when it returns to the kernel's
    /// SP_EL0 or to EL0).
    ///
    /// # Safety
    /// The interrupted code must expect that stack.
    pub unsafe fn set_stack_pointer(&mut self, sp: u64) {
        self.frame.sp = sp;
    }
}

/// A handler for one exception class (kvm-unit-tests' `install_exception_handler(vector, ec,
/// fn(regs, esr))`): it sees the saved frame, may change it, and the exception returns with
/// it. It runs on the exception stack with interrupts masked, on whichever CPU took the
/// exception; it must not take a lock that the interrupted code may hold.
pub type ExceptionHandler = fn(context: &mut ExceptionContext<'_>);

/// The installed [`ExceptionHandler`] of each EC value (as usize; 0: none).
static EXCEPTION_HANDLERS: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];

/// Installs `handler` for every synchronous exception of `class` on every CPU, at EL1/EL2 or
/// from EL0, ahead of `catch_exception` and `trap_exceptions` (but after a
/// [`DebugHandler`]), or removes it with `None`. Returns the handler it replaces. The
/// runtime's own SVC that ends a [`run_in_user_mode`] never reaches a handler.
pub fn install_exception_handler(
    class: ExceptionClass,
    handler: Option<ExceptionHandler>,
) -> Option<ExceptionHandler> {
    let slot = &EXCEPTION_HANDLERS[usize::from(class.code() & 0x3f)];
    let previous = slot.swap(handler.map_or(0, |handler| handler as usize), Ordering::AcqRel);
    // SAFETY: non-zero values are `ExceptionHandler`s stored above; a fn pointer and a usize
    // have the same size.
    (previous != 0).then(|| unsafe { core::mem::transmute::<usize, ExceptionHandler>(previous) })
}

/// The Rust side of every vector: IRQs to the registered handler; debug exceptions to the
/// [`DebugHandler`] if one is installed; a class with an [`ExceptionHandler`] to it; other synchronous exceptions recorded for
/// `trap_exceptions`, recovered into `catch_exception`, or reported and fatal.
extern "C" fn exception_dispatch(frame: &mut ExceptionFrame) {
    EXCEPTION_COUNT.fetch_add(1, Ordering::Relaxed);
    let kind = frame.kind;
    let taken = VectorType::of(kind);
    let cpu = cpu_index();
    if taken == VectorType::Irq {
        let handler = IRQ_HANDLER.load(Ordering::Acquire);
        if handler != 0 {
            // SAFETY: a nonzero value was stored by `set_irq_handler` from a `fn()`.
            let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler) };
            handler();
            return;
        }
    }
    let exception = Exception {
        class: ExceptionClass::of(frame.esr),
        esr: frame.esr,
        elr: frame.elr,
        far: frame.far,
        from_user: kind >= FIRST_LOWER_LEVEL_KIND,
    };
    if taken == VectorType::Synchronous && exception.class.is_debug() {
        let hook = DEBUG_HANDLER.load(Ordering::Acquire);
        if hook != 0 {
            // SAFETY: non-zero values are `DebugHandler`s that `set_debug_handler` stored; a
            // fn pointer and a usize have the same size.
            let hook = unsafe { core::mem::transmute::<usize, DebugHandler>(hook) };
            hook(&mut DebugFrame { frame, exception });
            return;
        }
    }
    if taken == VectorType::Synchronous
        && !(exception.from_user
            && exception.class == ExceptionClass::SupervisorCall
            && exception.immediate() == USER_EXIT_SVC)
    {
        let handler = EXCEPTION_HANDLERS[usize::from(exception.class.code() & 0x3f)].load(Ordering::Acquire);
        if handler != 0 {
            // SAFETY: non-zero values are `ExceptionHandler`s that `install_exception_handler`
            // stored; a fn pointer and a usize have the same size.
            let handler = unsafe { core::mem::transmute::<usize, ExceptionHandler>(handler) };
            handler(&mut ExceptionContext { frame, exception });
            return;
        }
    }
    if taken == VectorType::Synchronous {
        if crate::catch::record_trap(exception.class, exception) {
            if !exception.class.is_call() {
                frame.elr += 4;
            }
            return;
        }
        // A context made on a user stack belongs to EL0 code: never resumed at EL1.
        let context = crate::catch::innermost_context_where(|stack| user_stack_owner(stack).is_none());
        if !context.is_null() {
            // SAFETY: a non-null context is the live `CatchContext` of a `catch_exception`
            // call on this CPU; its closure is what just faulted.
            let context = unsafe { &mut *context };
            context.exception = Some(exception);
            *CAUGHT_REGISTERS[cpu].lock() = Registers {
                x: frame.x,
                sp: frame.sp,
                pc: frame.elr,
                pstate: frame.spsr,
            };
            frame.elr = &raw const vmunit_try_recover as u64;
            // Compiled code resumes: never in Streaming SVE mode, where its AdvSIMD
            // instructions are illegal (the vector left it; the abandoned closure's streaming
            // values are dropped).
            if frame.extended == EXTENDED_STREAMING {
                frame.extended = EXTENDED_NONE;
            }
            frame.x[0] = (&raw mut *context) as u64;
            // The kernel's mode: its exception level (EL1, or EL2 with VHE) and stack pointer.
            let mode = (super::instructions::current_el() << 2) | (context.state & 1);
            frame.spsr = (context.state & SPSR_DAIF) | mode;
            return;
        }
    }

    crate::console::emergency_unlock();
    let what = taken.description();
    crate::println!(
        "Unhandled exception: {what} ({}) from EL{} on CPU {cpu}, vector kind {kind}",
        exception.class,
        if exception.from_user {
            0
        } else {
            super::instructions::current_el()
        }
    );
    let overflowed = stack_guard_owner(exception.far).filter(|_| {
        taken == VectorType::Synchronous
            && !exception.from_user
            && matches!(
                exception.class,
                ExceptionClass::DataAbort | ExceptionClass::SpAlignment
            )
    });
    crate::println!(
        "ESR={:#018x} FAR={:#018x} ELR={:#018x} SPSR={:#018x} SP={:#018x}",
        frame.esr,
        frame.far,
        frame.elr,
        frame.spsr,
        frame.sp
    );
    for (row, registers) in frame.x.chunks(4).enumerate() {
        // Formatted without allocating (the heap may be what broke); four fit.
        let mut line = heapless::String::<96>::new();
        for (column, value) in registers.iter().enumerate() {
            let _ = write!(line, "x{:<2}={value:#018x} ", row * 4 + column);
        }
        crate::println!("{}", line.trim_end());
    }
    if let Some(owner) = overflowed {
        crate::runtime::abort(format_args!(
            "stack overflow: CPU {owner}'s stack ran into its guard page (unhandled {what}: {} at ELR \
             {:#x}, FAR {:#x}, SP {:#x})",
            exception.class, frame.elr, exception.far, frame.sp
        ));
    }
    crate::runtime::abort(format_args!(
        "unhandled {what}: {} at ELR {:#x}",
        exception.class, frame.elr
    ));
}

unsafe extern "C" {
    static __stacks_start: u8;
    static __exception_stacks_start: u8;
}

/// The guard pages (unmapped, lowest page) of each CPU's kernel stack and exception stack, in
/// CPU order: kernel, exception, kernel, exception, ...
pub fn stack_guard_pages() -> impl Iterator<Item = u64> {
    let kernel = &raw const __stacks_start as u64;
    let exception = &raw const __exception_stacks_start as u64;
    (0..MAX_CPUS as u64).flat_map(move |cpu| {
        [
            kernel + cpu * STACK_SIZE as u64,
            exception + cpu * EXCEPTION_STACK_SIZE as u64,
        ]
    })
}

/// The CPU whose kernel-stack guard page holds `address`, if any.
fn stack_guard_owner(address: u64) -> Option<usize> {
    let kernel = &raw const __stacks_start as u64;
    (0..MAX_CPUS).find(|&cpu| {
        let guard = kernel + (cpu * STACK_SIZE) as u64;
        (guard..guard + 4096).contains(&address)
    })
}

/// Called by a vector, on a fresh exception stack, when SP_EL1 reached its guard page:
/// exceptions nested until the exception stack ran out. Ends the test.
extern "C" fn exception_stack_overflow(kind: u64) -> ! {
    use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, FAR_EL1, Readable};
    crate::console::emergency_unlock();
    crate::runtime::abort(format_args!(
        "exception stack overflow on CPU {}: nested exceptions exhausted SP_EL1 (vector kind {kind}, \
         ESR {:#x}, ELR {:#x}, FAR {:#x})",
        cpu_index(),
        ESR_EL1.get(),
        ELR_EL1.get(),
        FAR_EL1.get()
    ))
}
