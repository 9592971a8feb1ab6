//! realmode: 16-bit real-mode instructions (kvm-unit-tests' x86/realmode.c), each snippet run
//! through `realmode::run` from the 64-bit runtime and judged by the registers it leaves.
//!
//! The snippets are realmode.c's, with the operand sizes its `.code16gcc` gave implicitly
//! spelled out (`calll`, `retl`, `pushfl`, `iretl`, `pushal`). As there, a check also fails when
//! a register outside the ones it names changed; a snippet that an interrupt or exception ends
//! fails its check. Data the snippets address lives in segment 0 (`realmode_data!`), where
//! realmode.c's image lived.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr0Flags, read_cr0, read_cr3, read_cr4};
use vmunit::arch::cpuid::cpuid;
use vmunit::arch::instructions::{rdtsc, store_gdtr, store_idtr, try_read};
use vmunit::arch::ioapic::{self, Trigger};
use vmunit::arch::msr::{EferFlags, IA32_EFER, rdmsr};
use vmunit::arch::realmode::{self, Interruption, RegisterSet, Registers, Snippet};
use vmunit::arch::{apic, testdev};
use vmunit::{realmode_data, realmode_routine, realmode_snippet, report, report_info, report_skip};

vmunit::main!(main);

const CF: u32 = 1 << 0;
const PF: u32 = 1 << 2;
const AF: u32 = 1 << 4;
const ZF: u32 = 1 << 6;
const SF: u32 = 1 << 7;
const IF: u32 = 1 << 9;
const DF: u32 = 1 << 10;
const RF: u32 = 1 << 16;
/// EFLAGS bits that always read 0: 3, 5, 15 and 31:22 (SDM Vol. 1, 3.4.3).
const EFLAGS_RESERVED_ZERO: u32 = 0xffc0_8028;
/// EFLAGS bit 1, which always reads 1.
const EFLAGS_RESERVED_ONE: u32 = 1 << 1;

const NONE: RegisterSet = RegisterSet::NONE;
const ALL: RegisterSet = RegisterSet::ALL;
const EAX: RegisterSet = RegisterSet::EAX;
const EBX: RegisterSet = RegisterSet::EBX;
const ECX: RegisterSet = RegisterSet::ECX;
const EDX: RegisterSet = RegisterSet::EDX;
const ESI: RegisterSet = RegisterSet::ESI;
const EDI: RegisterSet = RegisterSet::EDI;
const ESP: RegisterSet = RegisterSet::ESP;
const EBP: RegisterSet = RegisterSet::EBP;

/// Runs `snippet` with `input` and reports `name`: it ran to its end, `ok` holds of its
/// registers, and every register outside `changed` kept its input value (realmode.c's
/// `report(name, regs_ignore, ok)`). Returns the registers for checks that follow.
fn check(
    name: &str,
    snippet: &Snippet,
    input: &Registers,
    changed: RegisterSet,
    ok: impl FnOnce(&Registers) -> bool,
) -> Result<Registers, Interruption> {
    let outcome = realmode::run(snippet, input);
    let passed = match &outcome {
        Ok(output) => changed.contains(output.differences(input)) && ok(output),
        Err(_) => false,
    };
    report!(passed, "{name}");
    if !passed {
        report_info!("{name}: input {input:x?}, got {outcome:x?}");
    }
    outcome
}

/// The registers all zero, as realmode.c's `inregs = (struct regs){ 0 }`.
const ZERO: Registers = Registers {
    eax: 0,
    ebx: 0,
    ecx: 0,
    edx: 0,
    esi: 0,
    edi: 0,
    esp: 0,
    ebp: 0,
    eflags: 0,
};

// Code the snippets call or jump to: realmode.c's test_function, retf and retf_imm.
realmode_routine!(TEST_FUNCTION = "mov $0x1234, %eax", "retl");
realmode_routine!(RETF = "lretw");
realmode_routine!(RETF_IMM_FIXTURE = "lretw $10");

// A 64-byte stack for the call tests (realmode.c's `u32 esp[16]`).
realmode_data!(CALL_STACK = ".skip 64");
// The far pointer of `call far 1`, written by the snippet from ECX.
realmode_data!(FAR_POINTER = ".long 0");
// realmode.c's `tmp_stack` for pusha/popa.
realmode_data!(PUSHA_STACK = ".skip 512");
// realmode.c's `desc`: a 32-bit offset and a selector, for LDS and friends.
realmode_data!(FAR_DESCRIPTOR = ".long 0x1234", ".word 0x10");
// Read as SS-relative at SS = 1 (base 0x10): the word 16 bytes in.
realmode_data!(SS_ARRAY = ".long 0x12345678, 0, 0, 0, 0x87654321");
// Where SGDT/SIDT store (6 bytes), filled with a pattern they overwrite.
realmode_data!(TABLE_REGISTER = ".fill 6, 1, 0xa5");
// The XLAT table: entry i holds i + 1.
realmode_data!(
    XLAT_TABLE = ".set realmode_xlat_index, 0",
    ".rept 256",
    ".byte (realmode_xlat_index + 1) & 0xff",
    ".set realmode_xlat_index, realmode_xlat_index + 1",
    ".endr"
);
// FNSTSW and FNSTCW targets, all ones before each run.
realmode_data!(FPU_WORDS = ".word 0xffff, 0xffff");

realmode_snippet!(NULL = "");

fn test_null() {
    check("null", &NULL, &ZERO, NONE, |_| true).ok();
}

realmode_snippet!(SHLD = "shld $8, %edx, %eax");

fn test_shld() {
    let input = Registers {
        eax: 0xbe,
        edx: 0xef00_0000,
        ..ZERO
    };
    check("shld", &SHLD, &input, ALL, |o| o.eax == 0xbeef).ok();
}

realmode_snippet!(PUSH32 = "mov $0x12345678, %eax", "push %eax", "pop %ebx");
realmode_snippet!(PUSH16 = "mov $0x1234, %ax", "push %ax", "pop %bx");
realmode_snippet!(
    PUSH_ES = "mov $0x231, %bx",
    "mov $0x123, %ax",
    "mov %ax, %es",
    "pushw %es",
    "pop %bx"
);
realmode_snippet!(POP_ES = "push %ax", "popw %es", "mov %es, %bx");
realmode_snippet!(
    PUSH_POP_SS = "pushw %ss",
    "pushw %ax",
    "popw %ss",
    "mov %ss, %bx",
    "popw %ss"
);
realmode_snippet!(
    PUSH_POP_FS = "pushl %fs",
    "pushl %eax",
    "popl %fs",
    "mov %fs, %ebx",
    "popl %fs"
);
realmode_snippet!(
    PUSH_POP_HIGH_ESP = "xor $0x12340000, %esp",
    "push %ax",
    "xor $0x12340000, %esp",
    "pop %bx"
);

fn test_push_pop() {
    check("push/pop 1", &PUSH32, &ZERO, EAX | EBX, |o| {
        o.eax == o.ebx && o.eax == 0x1234_5678
    })
    .ok();
    check("push/pop 2", &PUSH16, &ZERO, EAX | EBX, |o| {
        o.eax == o.ebx && o.eax == 0x1234
    })
    .ok();
    check("push/pop 3", &PUSH_ES, &ZERO, EAX | EBX, |o| {
        o.ebx == o.eax && o.eax == 0x123
    })
    .ok();
    check("push/pop 4", &POP_ES, &ZERO, EAX | EBX, |o| o.ebx == o.eax).ok();
    check("push/pop 5", &PUSH_POP_SS, &ZERO, EAX | EBX, |o| o.ebx == o.eax).ok();
    check("push/pop 6", &PUSH_POP_FS, &ZERO, EAX | EBX, |o| o.ebx == o.eax).ok();
    let input = Registers {
        eax: 0x9977,
        ebx: 0x7799,
        ..ZERO
    };
    check(
        "push/pop with high bits set in %esp",
        &PUSH_POP_HIGH_ESP,
        &input,
        EBX,
        |o| o.ebx == 0x9977,
    )
    .ok();
}

realmode_snippet!(
    PUSHA = "pushal",
    "pop %edi",
    "pop %esi",
    "pop %ebp",
    "add $4, %esp",
    "pop %ebx",
    "pop %edx",
    "pop %ecx",
    "pop %eax"
);
realmode_snippet!(
    POPA = "push %eax",
    "push %ecx",
    "push %edx",
    "push %ebx",
    "push %esp",
    "push %ebp",
    "push %esi",
    "push %edi",
    "popal"
);

fn test_pusha_popa() {
    let input = Registers {
        eax: 0,
        ebx: 1,
        ecx: 2,
        edx: 3,
        esi: 4,
        edi: 5,
        ebp: 6,
        esp: PUSHA_STACK.address() + PUSHA_STACK.len() as u32,
        eflags: 0,
    };
    check("pusha/popa 1", &PUSHA, &input, NONE, |_| true).ok();
    check("pusha/popa 2", &POPA, &input, NONE, |_| true).ok();
}

realmode_snippet!(MOV_R32 = "mov $1234567890, %eax");
realmode_snippet!(MOV_R16 = "mov $1234, %ax");
realmode_snippet!(MOV_AH = "mov $0x12, %ah");
realmode_snippet!(MOV_AL = "mov $0x34, %al");
realmode_snippet!(MOV_AH_AL = "mov $0x12, %ah", "mov $0x34, %al");

fn test_mov_imm() {
    check("mov 1", &MOV_R16, &ZERO, EAX, |o| o.eax == 1234).ok();
    check("mov 2", &MOV_R32, &ZERO, EAX, |o| o.eax == 1_234_567_890).ok();
    check("mov 3", &MOV_AH, &ZERO, EAX, |o| o.eax == 0x1200).ok();
    check("mov 4", &MOV_AL, &ZERO, EAX, |o| o.eax == 0x34).ok();
    check("mov 5", &MOV_AH_AL, &ZERO, EAX, |o| o.eax == 0x1234).ok();
}

realmode_snippet!(CMP_EQUAL = "mov $0x34, %al", "cmp $0x34, %al");
realmode_snippet!(CMP_BELOW = "mov $0x34, %al", "cmp $0x39, %al");
realmode_snippet!(CMP_ABOVE = "mov $0x34, %al", "cmp $0x24, %al");

fn test_cmp_imm() {
    check("cmp 1", &CMP_EQUAL, &ZERO, ALL, |o| o.eflags & ZF != 0).ok();
    check("cmp 2", &CMP_BELOW, &ZERO, ALL, |o| o.eflags & ZF == 0).ok();
    check("cmp 3", &CMP_ABOVE, &ZERO, ALL, |o| o.eflags & ZF == 0).ok();
}

realmode_snippet!(ADD32 = "mov $0x43211234, %eax", "add $0x12344321, %eax");
realmode_snippet!(ADD8 = "mov $0x12, %eax", "add $0x21, %al");

fn test_add_imm() {
    check("add 1", &ADD32, &ZERO, ALL, |o| o.eax == 0x5555_5555).ok();
    check("add 2", &ADD8, &ZERO, ALL, |o| o.eax == 0x33).ok();
}

realmode_snippet!(SUB32 = "mov $1234567890, %eax", "sub $10, %eax");
realmode_snippet!(SUB16 = "mov $1234, %ax", "sub $10, %ax");
realmode_snippet!(SUB_AH = "mov $0x12, %ah", "sub $0x10, %ah");
realmode_snippet!(SUB_AL = "mov $0x34, %al", "sub $0x10, %al");

fn test_sub_imm() {
    check("sub 1", &SUB16, &ZERO, EAX, |o| o.eax == 1224).ok();
    check("sub 2", &SUB32, &ZERO, EAX, |o| o.eax == 1_234_567_880).ok();
    check("sub 3", &SUB_AH, &ZERO, EAX, |o| o.eax == 0x0200).ok();
    check("sub 4", &SUB_AL, &ZERO, EAX, |o| o.eax == 0x24).ok();
}

realmode_snippet!(XOR32 = "mov $1234567890, %eax", "xor $1234567890, %eax");
realmode_snippet!(XOR16 = "mov $1234, %ax", "xor $1234, %ax");
realmode_snippet!(XOR_AH = "mov $0x12, %ah", "xor $0x12, %ah");
realmode_snippet!(XOR_AL = "mov $0x34, %al", "xor $0x34, %al");

fn test_xor_imm() {
    check("xor 1", &XOR16, &ZERO, EAX, |o| o.eax == 0).ok();
    check("xor 2", &XOR32, &ZERO, EAX, |o| o.eax == 0).ok();
    check("xor 3", &XOR_AH, &ZERO, EAX, |o| o.eax == 0).ok();
    check("xor 4", &XOR_AL, &ZERO, EAX, |o| o.eax == 0).ok();
}

// Port 0xe0: pc-testdev's 4-byte scratch register.
realmode_snippet!(
    IO1 = "mov $0xff, %al",
    "out %al, $0xe0",
    "mov $0x00, %al",
    "in $0xe0, %al"
);
realmode_snippet!(
    IO2 = "mov $0xffff, %ax",
    "out %ax, $0xe0",
    "mov $0x0000, %ax",
    "in $0xe0, %ax"
);
realmode_snippet!(
    IO3 = "mov $0xffffffff, %eax",
    "out %eax, $0xe0",
    "mov $0x000000, %eax",
    "in $0xe0, %eax"
);
realmode_snippet!(
    IO4 = "mov $0xe0, %dx",
    "mov $0xff, %al",
    "out %al, %dx",
    "mov $0x00, %al",
    "in %dx, %al"
);
realmode_snippet!(
    IO5 = "mov $0xe0, %dx",
    "mov $0xffff, %ax",
    "out %ax, %dx",
    "mov $0x0000, %ax",
    "in %dx, %ax"
);
realmode_snippet!(
    IO6 = "mov $0xe0, %dx",
    "mov $0xffffffff, %eax",
    "out %eax, %dx",
    "mov $0x00000000, %eax",
    "in %dx, %eax"
);

fn test_io() {
    check("pio 1", &IO1, &ZERO, EAX, |o| o.eax == 0xff).ok();
    check("pio 2", &IO2, &ZERO, EAX, |o| o.eax == 0xffff).ok();
    check("pio 3", &IO3, &ZERO, EAX, |o| o.eax == 0xffff_ffff).ok();
    check("pio 4", &IO4, &ZERO, EAX | EDX, |o| o.eax == 0xff).ok();
    check("pio 5", &IO5, &ZERO, EAX | EDX, |o| o.eax == 0xffff).ok();
    check("pio 6", &IO6, &ZERO, EAX | EDX, |o| o.eax == 0xffff_ffff).ok();
}

realmode_snippet!(CLC = "clc");
realmode_snippet!(STC = "stc");
realmode_snippet!(CLI = "cli");
realmode_snippet!(STI = "sti");
realmode_snippet!(CLD = "cld");
realmode_snippet!(STD = "std");

fn test_eflags_insn() {
    check("clc", &CLC, &ZERO, ALL, |o| o.eflags & CF == 0).ok();
    check("stc", &STC, &ZERO, ALL, |o| o.eflags & CF != 0).ok();
    check("cli", &CLI, &ZERO, ALL, |o| o.eflags & IF == 0).ok();
    check("sti", &STI, &ZERO, ALL, |o| o.eflags & IF != 0).ok();
    check("cld", &CLD, &ZERO, ALL, |o| o.eflags & DF == 0).ok();
    check("std", &STD, &ZERO, ALL, |o| o.eflags & DF != 0).ok();
}

realmode_snippet!(JNZ_SHORT1 = "jnz 1f", "mov $0x1234, %eax", "1:");
realmode_snippet!(
    JNZ_SHORT2 = "1:",
    "cmp $0x1234, %eax",
    "mov $0x1234, %eax",
    "jnz 1b"
);
realmode_snippet!(JMP_SHORT1 = "jmp 1f", "mov $0x1234, %eax", "1:");

fn test_jcc_short() {
    // realmode.c ignores every register here (`~0`), so only a fault could fail these; the
    // taken jump skips the MOV, so no register may change (as the near forms check).
    check("jnz short 1", &JNZ_SHORT1, &ZERO, NONE, |_| true).ok();
    check("jnz short 2", &JNZ_SHORT2, &ZERO, EAX, |o| o.eflags & ZF != 0).ok();
    check("jmp short 1", &JMP_SHORT1, &ZERO, NONE, |_| true).ok();
}

// The near (rel16) forms, which the assembler would not pick for these short distances: the
// opcodes spelled out, the displacements computed by the assembler.
realmode_snippet!(
    JNZ_NEAR1 = ".byte 0x0f, 0x85",
    ".word 1f - 2f",
    "2: mov $0x1234, %eax",
    "1:"
);
realmode_snippet!(
    JNZ_NEAR2 = "1: cmp $0x1234, %eax",
    "mov $0x1234, %eax",
    ".byte 0x0f, 0x85",
    ".word 1b - 2f",
    "2:"
);
realmode_snippet!(
    JMP_NEAR1 = ".byte 0xe9",
    ".word 1f - 2f",
    "2: mov $0x1234, %eax",
    "1:"
);

fn test_jcc_near() {
    check("jnz near 1", &JNZ_NEAR1, &ZERO, NONE, |_| true).ok();
    check("jnz near 2", &JNZ_NEAR2, &ZERO, EAX, |o| o.eflags & ZF != 0).ok();
    check("jmp near 1", &JMP_NEAR1, &ZERO, NONE, |_| true).ok();
}

realmode_snippet!(
    CALL1 = "mov $vmunit_realmode_routine_TEST_FUNCTION, %eax",
    "calll *%eax"
);
realmode_snippet!(
    CALL_NEAR1 = "jmp 2f",
    "1: mov $0x1234, %eax",
    "retl",
    "2: calll 1b"
);
realmode_snippet!(
    CALL_NEAR2 = "calll 1f",
    "jmp 2f",
    "1: mov $0x1234, %eax",
    "retl",
    "2:"
);
realmode_snippet!(CALL_FAR1 = "mov %ecx, (%ebx)", "lcallw *(%ebx)");
realmode_snippet!(CALL_FAR2 = "lcallw $0, $vmunit_realmode_routine_RETF");
realmode_snippet!(RET_IMM = "sub $10, %sp", "jmp 2f", "1: retw $10", "2: callw 1b");
realmode_snippet!(
    RETF_IMM = "sub $10, %sp",
    "lcallw $0, $vmunit_realmode_routine_RETF_IMM_FIXTURE"
);

fn test_call() {
    let stack_top = CALL_STACK.address() + CALL_STACK.len() as u32;
    let input = Registers {
        esp: stack_top,
        ..ZERO
    };
    check("call 1", &CALL1, &input, EAX, |o| o.eax == 0x1234).ok();
    check("call near 1", &CALL_NEAR1, &input, EAX, |o| o.eax == 0x1234).ok();
    check("call near 2", &CALL_NEAR2, &input, EAX, |o| o.eax == 0x1234).ok();
    // As realmode.c's: a far pointer whose segment is the target's paragraph and whose
    // offset is the rest, so that the call changes CS.
    let target = u32::from(RETF.address());
    let far = Registers {
        ebx: FAR_POINTER.address(),
        ecx: ((target >> 4) << 16) | (target & 0xf),
        ..input
    };
    check("call far 1", &CALL_FAR1, &far, NONE, |_| true).ok();
    check("call far 2", &CALL_FAR2, &input, NONE, |_| true).ok();
    check("ret imm 1", &RET_IMM, &input, NONE, |_| true).ok();
    check("retf imm 1", &RETF_IMM, &input, NONE, |_| true).ok();
}

realmode_snippet!(
    LONG_JMP = "calll 1f",
    "jmp 2f",
    "1: ljmp $0, $vmunit_realmode_routine_TEST_FUNCTION",
    "2:"
);

fn test_long_jmp() {
    let input = Registers {
        esp: CALL_STACK.address() + CALL_STACK.len() as u32,
        ..ZERO
    };
    check("jmp far 1", &LONG_JMP, &input, EAX, |o| o.eax == 0x1234).ok();
}

/// One general register of [`Registers`], as a reader.
type RegisterField = fn(&Registers) -> u32;

realmode_snippet!(XCHG1 = "xchg %eax, %eax");
realmode_snippet!(XCHG2 = "xchg %eax, %ebx");
realmode_snippet!(XCHG3 = "xchg %eax, %ecx");
realmode_snippet!(XCHG4 = "xchg %eax, %edx");
realmode_snippet!(XCHG5 = "xchg %eax, %esi");
realmode_snippet!(XCHG6 = "xchg %eax, %edi");
realmode_snippet!(XCHG7 = "xchg %eax, %ebp");
realmode_snippet!(XCHG8 = "xchg %eax, %esp");

fn test_xchg() {
    let i = Registers {
        eax: 0,
        ebx: 1,
        ecx: 2,
        edx: 3,
        esi: 4,
        edi: 5,
        ebp: 6,
        esp: 7,
        eflags: 0,
    };
    check("xchg 1", &XCHG1, &i, NONE, |_| true).ok();
    // XCHG EAX with each other register: EAX and that register swap, nothing else changes.
    let others: [(&str, &Snippet, RegisterSet, RegisterField); 7] = [
        ("xchg 2", &XCHG2, EBX, |r| r.ebx),
        ("xchg 3", &XCHG3, ECX, |r| r.ecx),
        ("xchg 4", &XCHG4, EDX, |r| r.edx),
        ("xchg 5", &XCHG5, ESI, |r| r.esi),
        ("xchg 6", &XCHG6, EDI, |r| r.edi),
        ("xchg 7", &XCHG7, EBP, |r| r.ebp),
        ("xchg 8", &XCHG8, ESP, |r| r.esp),
    ];
    for (name, snippet, other, register) in others {
        check(name, snippet, &i, EAX | other, |o| {
            o.eax == register(&i) && register(o) == i.eax
        })
        .ok();
    }
}

realmode_snippet!(
    IRET32 = "pushfl",
    "pushl %cs",
    "calll 1f",
    "jmp 2f",
    "1: iretl",
    "2:"
);
realmode_snippet!(
    IRET16 = "pushfw",
    "pushw %cs",
    "callw 1f",
    "jmp 2f",
    "1: iretw",
    "2:"
);
realmode_snippet!(
    IRET_FLAGS32 = "pushfl",
    "popl %eax",
    "andl $~0x2, %eax",
    "orl $0xffc18028, %eax",
    "pushl %eax",
    "pushl %cs",
    "calll 1f",
    "jmp 2f",
    "1: iretl",
    "2:"
);
realmode_snippet!(
    IRET_FLAGS16 = "pushfw",
    "popw %ax",
    "and $~0x2, %ax",
    "or $0x8028, %ax",
    "pushw %ax",
    "pushw %cs",
    "callw 1f",
    "jmp 2f",
    "1: iretw",
    "2:"
);

fn test_iret() {
    check("iret 1", &IRET32, &ZERO, NONE, |_| true).ok();
    check("iret 2", &IRET16, &ZERO, NONE, |_| true).ok();
    // The IRETs pop flags with reserved bits set: EFLAGS bit 1 stays 1 and bits 3, 5, 15
    // and 31:22 stay 0 (SDM Vol. 1, 3.4.3), so the popped image must not show them.
    let reserved_kept =
        |o: &Registers| o.eflags & EFLAGS_RESERVED_ZERO == 0 && o.eflags & EFLAGS_RESERVED_ONE != 0;
    let outcome = check("iret 3", &IRET_FLAGS32, &ZERO, EAX, reserved_kept);
    // realmode.c's "rflags.rf": the IRET loaded RF = 1, but the flags are read by the
    // harness's PUSHFD, which stores RF as 0 whatever it holds (SDM Vol. 2, PUSHF), after
    // further instructions, each of which clears it. So this checks PUSHFD, not the IRET.
    let rf_clear = matches!(outcome, Ok(o) if o.eflags & RF == 0);
    report!(
        rf_clear,
        "rflags.rf: PUSHFD after the IRET that loaded RF stores RF as 0"
    );
    check("iret 4", &IRET_FLAGS16, &ZERO, EAX, reserved_kept).ok();
}

// The snippet points vector 0x11 at its own IRET (realmode.c stores the vector from C); the
// harness's table would otherwise end the run at the INT.
realmode_snippet!(
    INT11 = "movw $1f, 4 * 0x11",
    "movw $0, 4 * 0x11 + 2",
    "int $0x11",
    "jmp 2f",
    "1: iret",
    "2:"
);

fn test_int() {
    check("int 1", &INT11, &ZERO, NONE, |_| true).ok();
}

/// realmode.c's vector for ISA IRQ 11 (the BIOS's slave PIC base 0x70); here the I/O APIC
/// sends it.
const IRQ11_VECTOR: u8 = 0x73;
/// The ISA line pc-testdev raises.
const IRQ11: u8 = 11;
/// The LAPIC timer's vector, in a higher priority class than IRQ 11's: it ends a snippet whose
/// HLT nothing else would wake.
const BACKSTOP_VECTOR: u8 = 0x81;
/// 100 ms of the LAPIC timer at divide-by-1 (QEMU's APIC clock: 1 GHz).
const BACKSTOP_COUNT: u32 = 100_000_000;

// IRQ 11 is raised with interrupts off, then STI; HLT: the interrupt must wait for the
// instruction after STI (the STI shadow) and so wake the HLT. Delivered before the HLT, its
// IRET returns to a HLT nothing wakes but the backstop timer. realmode.c writes the line with
// OUTL, which pc-testdev ignores (hw/misc/pc-testdev.c: test_irq_ops' valid.max_access_size is
// 1), so there no IRQ 11 comes and its HLT waits for the BIOS's timer tick; here OUTB raises it.
realmode_snippet!(
    STI_INHIBIT = "movw $1f, 4 * 0x73",
    "movw $0, 4 * 0x73 + 2",
    "jmp 2f",
    "1: iret",
    "2: cli",
    "movw $0x200b, %dx",
    "movb $1, %al",
    "outb %al, %dx",
    "movb $0, %al",
    "outb %al, %dx",
    "sti",
    "hlt"
);

fn test_sti_inhibit() {
    if !testdev::present() {
        report_skip!("sti inhibit: pc-testdev (port 0x200b raises IRQ 11) is missing");
        return;
    }
    ioapic::route(IRQ11, IRQ11_VECTOR, Trigger::Edge);
    apic::write(apic::register::TIMER_DIVIDE, 0xb);
    apic::write(apic::register::TIMER, u32::from(BACKSTOP_VECTOR));
    apic::write(apic::register::TIMER_INITIAL_COUNT, BACKSTOP_COUNT);
    check("sti inhibit", &STI_INHIBIT, &ZERO, ALL, |_| true).ok();
    apic::write(apic::register::TIMER_INITIAL_COUNT, 0);
    apic::write(apic::register::TIMER, apic::MASKED);
    ioapic::set_mask(IRQ11, true);
    // The IRET of real mode sends no EOI: end IRQ 11's (and the backstop's, had it fired).
    apic::end_of_interrupt();
    apic::end_of_interrupt();
}

realmode_snippet!(IMUL8_1 = "mov $2, %al", "mov $-4, %cx", "imul %cl");
realmode_snippet!(IMUL16_1 = "mov $2, %ax", "mov $-4, %cx", "imul %cx");
realmode_snippet!(IMUL32_1 = "mov $2, %eax", "mov $-4, %ecx", "imul %ecx");
realmode_snippet!(IMUL8_2 = "mov $0x12340002, %eax", "mov $4, %cx", "imul %cl");
realmode_snippet!(IMUL16_2 = "mov $2, %ax", "mov $4, %cx", "imul %cx");
realmode_snippet!(IMUL32_2 = "mov $2, %eax", "mov $4, %ecx", "imul %ecx");

fn test_imul() {
    let changed = EAX | ECX | EDX;
    check("imul 1", &IMUL8_1, &ZERO, changed, |o| {
        o.eax & 0xff == u32::from(-8i8 as u8)
    })
    .ok();
    check("imul 2", &IMUL16_1, &ZERO, changed, |o| {
        o.eax == u32::from(-8i16 as u16)
    })
    .ok();
    check("imul 3", &IMUL32_1, &ZERO, changed, |o| o.eax == -8i32 as u32).ok();
    check("imul 4", &IMUL8_2, &ZERO, changed, |o| {
        o.eax & 0xffff == 8 && o.eax & 0xffff_0000 == 0x1234_0000
    })
    .ok();
    check("imul 5", &IMUL16_2, &ZERO, changed, |o| o.eax == 8).ok();
    check("imul 6", &IMUL32_2, &ZERO, changed, |o| o.eax == 8).ok();
}

// realmode.c's mul tests run IMUL too; these keep its snippets and names.
realmode_snippet!(MUL8 = "mov $2, %al", "mov $4, %cx", "imul %cl");
realmode_snippet!(MUL16 = "mov $2, %ax", "mov $4, %cx", "imul %cx");
realmode_snippet!(MUL32 = "mov $2, %eax", "mov $4, %ecx", "imul %ecx");

fn test_mul() {
    let changed = EAX | ECX | EDX;
    check("mul 1", &MUL8, &ZERO, changed, |o| o.eax & 0xff == 8).ok();
    check("mul 2", &MUL16, &ZERO, changed, |o| o.eax == 8).ok();
    check("mul 3", &MUL32, &ZERO, changed, |o| o.eax == 8).ok();
}

realmode_snippet!(DIV8 = "mov $257, %ax", "mov $2, %cl", "div %cl");
realmode_snippet!(DIV16 = "mov $512, %ax", "mov $5, %cx", "div %cx");
realmode_snippet!(DIV32 = "mov $512, %eax", "mov $5, %ecx", "div %ecx");

fn test_div() {
    let changed = EAX | ECX | EDX;
    check("div 1", &DIV8, &ZERO, changed, |o| o.eax == 384).ok();
    check("div 2", &DIV16, &ZERO, changed, |o| o.eax == 102 && o.edx == 2).ok();
    check("div 3", &DIV32, &ZERO, changed, |o| o.eax == 102 && o.edx == 2).ok();
}

realmode_snippet!(IDIV8 = "mov $256, %ax", "mov $-2, %cl", "idiv %cl");
realmode_snippet!(IDIV16 = "mov $512, %ax", "mov $-2, %cx", "idiv %cx");
realmode_snippet!(IDIV32 = "mov $512, %eax", "mov $-2, %ecx", "idiv %ecx");

fn test_idiv() {
    let changed = EAX | ECX | EDX;
    check("idiv 1", &IDIV8, &ZERO, changed, |o| {
        o.eax == u32::from(-128i8 as u8)
    })
    .ok();
    check("idiv 2", &IDIV16, &ZERO, changed, |o| {
        o.eax == u32::from(-256i16 as u16)
    })
    .ok();
    check("idiv 3", &IDIV32, &ZERO, changed, |o| o.eax == -256i32 as u32).ok();
}

realmode_snippet!(LOOP = "mov $10, %ecx", "1: inc %eax", "loop 1b");
realmode_snippet!(LOOPE = "mov $10, %ecx", "mov $1, %eax", "1: dec %eax", "loope 1b");
realmode_snippet!(
    LOOPNE = "mov $10, %ecx",
    "mov $5, %eax",
    "1: dec %eax",
    "loopne 1b"
);

fn test_loopcc() {
    // realmode.c ignores only EAX in the first, though LOOP leaves ECX at 0: ECX is named.
    check("LOOPcc short 1", &LOOP, &ZERO, EAX | ECX, |o| {
        o.eax == 10 && o.ecx == 0
    })
    .ok();
    check("LOOPcc short 2", &LOOPE, &ZERO, EAX | ECX, |o| {
        o.eax == u32::MAX && o.ecx == 8
    })
    .ok();
    check("LOOPcc short 3", &LOOPNE, &ZERO, EAX | ECX, |o| {
        o.eax == 0 && o.ecx == 5
    })
    .ok();
}

realmode_snippet!(CBW = "mov $0xFE, %eax", "cbw");
realmode_snippet!(CWDE = "mov $0xFFFE, %eax", "cwde");

fn test_cbw() {
    // realmode.c names the first "cbq 1"; the name is kept.
    check("cbq 1", &CBW, &ZERO, ALL, |o| o.eax == 0xfffe).ok();
    check("cwde 1", &CWDE, &ZERO, ALL, |o| o.eax == 0xffff_fffe).ok();
}

realmode_snippet!(CWD1 = "mov $0x8000, %ax", "cwd");
realmode_snippet!(CWD2 = "mov $0x1000, %ax", "cwd");
realmode_snippet!(CDQ1 = "mov $0x80000000, %eax", "cdq");
realmode_snippet!(CDQ2 = "mov $0x10000000, %eax", "cdq");

fn test_cwd_cdq() {
    check("cwd 1", &CWD1, &ZERO, EAX | EDX, |o| {
        o.eax == 0x8000 && o.edx == 0xffff
    })
    .ok();
    check("cwd 2", &CWD2, &ZERO, EAX | EDX, |o| {
        o.eax == 0x1000 && o.edx == 0
    })
    .ok();
    check("cdq 1", &CDQ1, &ZERO, EAX | EDX, |o| {
        o.eax == 0x8000_0000 && o.edx == 0xffff_ffff
    })
    .ok();
    check("cdq 2", &CDQ2, &ZERO, EAX | EDX, |o| {
        o.eax == 0x1000_0000 && o.edx == 0
    })
    .ok();
}

realmode_snippet!(DAS = "das");

/// DAS as the SDM's pseudocode has it: (AL, CF, AF, and the low byte of EFLAGS after it).
fn das_expected(al: u8, carry: bool, adjust: bool) -> (u8, u32) {
    let mut result = al;
    let mut cf = false;
    let mut af = false;
    if al & 0xf > 9 || adjust {
        let (value, borrow) = result.overflowing_sub(6);
        result = value;
        cf = carry || borrow;
        af = true;
    }
    if al > 0x99 || carry {
        result = result.wrapping_sub(0x60);
        cf = true;
    }
    let mut flags = 1 << 1;
    if cf {
        flags |= CF;
    }
    if result.count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    if af {
        flags |= AF;
    }
    if result == 0 {
        flags |= ZF;
    }
    if result & 0x80 != 0 {
        flags |= SF;
    }
    (result, flags)
}

fn test_das() {
    // realmode.c's 1024 cases: every AL with every CF and AF, the expected AL and flags (low
    // byte: CF, PF, AF, ZF, SF) from the SDM's pseudocode.
    let mut failure = None;
    'cases: for al in 0..=255u8 {
        for (carry, adjust) in [(false, false), (true, false), (false, true), (true, true)] {
            let eflags = if carry { CF } else { 0 } | if adjust { AF } else { 0 };
            let input = Registers {
                eax: u32::from(al),
                eflags,
                ..ZERO
            };
            let (result, flags) = das_expected(al, carry, adjust);
            let outcome = realmode::run(&DAS, &input);
            let ok = matches!(outcome, Ok(o) if EAX.contains(o.differences(&input))
                && o.eax == u32::from(result) && o.eflags & 0xff == flags);
            if !ok {
                failure = Some((input, result, flags, outcome));
                break 'cases;
            }
        }
    }
    report!(failure.is_none(), "DAS");
    if let Some((input, result, flags, outcome)) = failure {
        report_info!("DAS: input {input:x?}: expected AL {result:#x}, flags {flags:#x}; got {outcome:x?}");
    }
}

realmode_snippet!(LDS = "push %ds", "lds (%ebx), %eax", "mov %ds, %ebx", "pop %ds");
realmode_snippet!(LES = "push %es", "les (%ebx), %eax", "mov %es, %ebx", "pop %es");
realmode_snippet!(LFS = "push %fs", "lfs (%ebx), %eax", "mov %fs, %ebx", "pop %fs");
realmode_snippet!(LGS = "push %gs", "lgs (%ebx), %eax", "mov %gs, %ebx", "pop %gs");
// realmode.c pushes SS and pops it back from the stack LSS just switched to; the old SS is
// kept in ECX instead.
realmode_snippet!(
    LSS = "mov %ss, %cx",
    "lss (%ebx), %eax",
    "mov %ss, %ebx",
    "mov %cx, %ss"
);

fn test_lds_lss() {
    let input = Registers {
        ebx: FAR_DESCRIPTOR.address(),
        ..ZERO
    };
    let loaded = |o: &Registers| o.eax == 0x1234 && o.ebx == 0x10;
    check("lds", &LDS, &input, EAX | EBX, loaded).ok();
    check("les", &LES, &input, EAX | EBX, loaded).ok();
    check("lfs", &LFS, &input, EAX | EBX, loaded).ok();
    check("lgs", &LGS, &input, EAX | EBX, loaded).ok();
    check("lss", &LSS, &input, EAX | EBX, loaded).ok();
}

realmode_snippet!(JCXZ1 = "jcxz 1f", "mov $0x1234, %eax", "1:");
realmode_snippet!(
    JCXZ2 = "mov $0x100, %ecx",
    "jcxz 1f",
    "mov $0x1234, %eax",
    "mov $0, %ecx",
    "1:"
);
realmode_snippet!(JCXZ3 = "mov $0x10000, %ecx", "jcxz 1f", "mov $0x1234, %eax", "1:");
realmode_snippet!(JECXZ1 = "jecxz 1f", "mov $0x1234, %eax", "1:");
realmode_snippet!(
    JECXZ2 = "mov $0x10000, %ecx",
    "jecxz 1f",
    "mov $0x1234, %eax",
    "mov $0, %ecx",
    "1:"
);

fn test_jcxz() {
    check("jcxz short 1", &JCXZ1, &ZERO, NONE, |_| true).ok();
    check("jcxz short 2", &JCXZ2, &ZERO, EAX, |o| o.eax == 0x1234).ok();
    check("jcxz short 3", &JCXZ3, &ZERO, ECX, |o| o.ecx == 0x10000).ok();
    check("jecxz short 1", &JECXZ1, &ZERO, NONE, |_| true).ok();
    check("jecxz short 2", &JECXZ2, &ZERO, EAX, |o| o.eax == 0x1234).ok();
}

realmode_snippet!(CPUID = "cpuid");

fn test_cpuid() {
    let leaf = 0x1234;
    let expected = cpuid(leaf, 0);
    let input = Registers { eax: leaf, ..ZERO };
    check("cpuid", &CPUID, &input, EAX | EBX | ECX | EDX, |o| {
        o.eax == expected.eax && o.ebx == expected.ebx && o.ecx == expected.ecx && o.edx == expected.edx
    })
    .ok();
}

realmode_snippet!(
    SS_RELATIVE1 = "mov %ss, %ax",
    "mov %bx, %ss",
    "movl (%ebp), %ebx",
    "mov %ax, %ss"
);
realmode_snippet!(
    SS_RELATIVE2 = "mov %ss, %ax",
    "mov %bx, %ss",
    "movl (%ebp,%edi,8), %ebx",
    "mov %ax, %ss"
);

fn test_ss_base_for_esp_ebp() {
    let input = Registers {
        ebx: 1,
        ebp: SS_ARRAY.address(),
        edi: 0,
        ..ZERO
    };
    check(
        "ss relative addressing (1)",
        &SS_RELATIVE1,
        &input,
        EAX | EBX,
        |o| o.ebx == 0x8765_4321,
    )
    .ok();
    check(
        "ss relative addressing (2)",
        &SS_RELATIVE2,
        &input,
        EAX | EBX,
        |o| o.ebx == 0x8765_4321,
    )
    .ok();
}

realmode_snippet!(SGDT = "sgdtw (%eax)");
realmode_snippet!(SIDT = "sidtw (%eax)");

fn stored_table_register() -> (u16, u32) {
    let mut bytes = [0; 6];
    TABLE_REGISTER.read(0, &mut bytes);
    realmode::descriptor_table_register(bytes)
}

fn test_sgdt_sidt() {
    // realmode.c compares with its own SGDT/SIDT in real mode: the harness's real-mode GDTR
    // and the IDTR it loads.
    let input = Registers {
        eax: TABLE_REGISTER.address(),
        ..ZERO
    };
    let gdtr = realmode::real_mode_gdtr();
    let outcome = check("sgdt", &SGDT, &input, NONE, |_| stored_table_register() == gdtr);
    if outcome.is_ok() && stored_table_register() != gdtr {
        report_info!("sgdt: stored {:x?}, GDTR {gdtr:x?}", stored_table_register());
    }
    let idtr = realmode::REAL_MODE_IDTR;
    let outcome = check("sidt", &SIDT, &input, NONE, |_| stored_table_register() == idtr);
    if outcome.is_ok() && stored_table_register() != idtr {
        report_info!("sidt: stored {:x?}, IDTR {idtr:x?}", stored_table_register());
    }
}

realmode_snippet!(LAHF = "pushfw", "mov %al, (%esp)", "popfw", "lahf");
realmode_snippet!(SAHF = "sahf", "pushfw", "mov (%esp), %al", "popfw");

fn test_lahf_sahf() {
    let input = Registers { eax: 0xc7, ..ZERO };
    check("lahf", &LAHF, &input, EAX, |o| o.eax >> 8 == input.eax).ok();
    let input = Registers { eax: 0xfd00, ..ZERO };
    check("sahf", &SAHF, &input, EAX, |o| o.eax == input.eax | 0xd7).ok();
}

realmode_snippet!(MOVSX = "movsx %al, %ebx");
realmode_snippet!(MOVZX = "movzx %al, %ebx");
realmode_snippet!(MOVSX_AH = "movsx %ah, %ebx");
realmode_snippet!(MOVZX_AH = "movzx %ah, %ebx");

fn test_movzx_movsx() {
    let input = Registers {
        eax: 0x1234_569c,
        esp: 0xffff,
        ..ZERO
    };
    let al = input.eax as u8;
    let ah = (input.eax >> 8) as u8;
    check("movsx", &MOVSX, &input, EBX, |o| {
        o.ebx == i32::from(al as i8) as u32
    })
    .ok();
    check("movzx", &MOVZX, &input, EBX, |o| o.ebx == u32::from(al)).ok();
    check("movsx ah", &MOVSX_AH, &input, EBX, |o| {
        o.ebx == i32::from(ah as i8) as u32
    })
    .ok();
    check("movzx ah", &MOVZX_AH, &input, EBX, |o| o.ebx == u32::from(ah)).ok();
}

realmode_snippet!(BSWAP = "bswap %ecx");
realmode_snippet!(AAD = "aad");
realmode_snippet!(AAM = "aam");
realmode_snippet!(XLAT = "xlat");
realmode_snippet!(CLC_SALC = "clc", ".byte 0xd6");
realmode_snippet!(STC_SALC = "stc", ".byte 0xd6");

fn test_bcd_and_friends() {
    let input = Registers {
        ecx: 0x1234_5678,
        ..ZERO
    };
    check("bswap", &BSWAP, &input, ECX, |o| o.ecx == 0x7856_3412).ok();
    let input = Registers {
        eax: 0x1234_5678,
        ..ZERO
    };
    check("aad", &AAD, &input, EAX, |o| o.eax == 0x1234_00d4).ok();
    let input = Registers {
        eax: 0x7654_3210,
        ..ZERO
    };
    check("aam", &AAM, &input, EAX, |o| o.eax == 0x7654_0106).ok();
    let input = Registers {
        eax: 0x89ab_cdef,
        ebx: XLAT_TABLE.address(),
        ..ZERO
    };
    check("xlat", &XLAT, &input, EAX, |o| o.eax == 0x89ab_cdf0).ok();
    // SALC (0xd6, undocumented): AL = CF ? 0xff : 0.
    let input = Registers {
        eax: 0x1234_5678,
        ..ZERO
    };
    check("salc (1)", &CLC_SALC, &input, EAX, |o| o.eax == 0x1234_5600).ok();
    check("salc (2)", &STC_SALC, &input, EAX, |o| o.eax == 0x1234_56ff).ok();
}

realmode_snippet!(FNINIT = "fninit", "fnstsw (%eax)", "fnstcw (%ebx)");

fn test_fninit() {
    let input = Registers {
        eax: FPU_WORDS.address(),
        ebx: FPU_WORDS.address() + 2,
        ..ZERO
    };
    check("fninit", &FNINIT, &input, NONE, |_| {
        let status = FPU_WORDS.read_u16(0);
        let control = FPU_WORDS.read_u16(2);
        status == 0 && control & 0x103f == 0x003f
    })
    .ok();
}

// MOV from DR0 with ModRM.mod = 00: the mod bits are ignored, the register form is meant.
realmode_snippet!(DR_MOD = "movl %ebx, %dr0", ".byte 0x0f, 0x21, 0x00");

fn test_dr_mod() {
    let input = Registers {
        eax: 0xdead,
        ebx: 0xaced,
        ..ZERO
    };
    check("mov dr with mod bits", &DR_MOD, &input, EAX | EBX, |o| {
        o.eax == 0xaced
    })
    .ok();
}

realmode_snippet!(
    SMSW = "movl %cr0, %ebx",
    "movl %ebx, %ecx",
    "or $0x40000000, %ebx",
    "movl %ebx, %cr0",
    "smswl %eax",
    "movl %ecx, %cr0"
);

fn test_smsw() {
    let input = Registers {
        eax: 0x1234_5678,
        ..ZERO
    };
    check("smsw", &SMSW, &input, EAX | EBX | ECX, |o| o.eax == o.ebx).ok();
}

realmode_snippet!(NOPL1 = ".byte 0x90");
realmode_snippet!(NOPL2 = ".byte 0x66, 0x90");
realmode_snippet!(NOPL3 = ".byte 0x0f, 0x1f, 0x00");
realmode_snippet!(NOPL4 = ".byte 0x0f, 0x1f, 0x40, 0x00");

fn test_nopl() {
    // realmode.c runs the four and reports once; here each also keeps every register.
    let all_ran = [&NOPL1, &NOPL2, &NOPL3, &NOPL4]
        .iter()
        .all(|snippet| matches!(realmode::run(snippet, &ZERO), Ok(o) if o.differences(&ZERO).is_empty()));
    report!(all_ran, "nopl");
}

realmode_snippet!(XADD = "xaddl %eax, %eax");

fn test_xadd() {
    let input = Registers {
        eax: 0x1234_5678,
        ..ZERO
    };
    check("xadd", &XADD, &input, EAX, |o| o.eax == input.eax * 2).ok();
}

// Not realmode.c's: what the harness promises. The snippet sees real mode (CR0.PE and PG clear,
// EFER.LME and LMA clear); an exception ends the run at the faulting instruction; and long mode
// comes back as it was.
realmode_snippet!(MODE = "movl %cr0, %ebx", "mov $0xc0000080, %ecx", "rdmsr");
realmode_snippet!(UD2 = "ud2");

fn test_harness() {
    let real_mode = |o: &Registers| {
        let cr0 = Cr0Flags::from_bits_retain(u64::from(o.ebx));
        let efer = EferFlags::from_bits_retain(u64::from(o.eax));
        !cr0.intersects(Cr0Flags::PROTECTED_MODE_ENABLE | Cr0Flags::PAGING)
            && !efer.intersects(EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE)
    };
    check(
        "harness: the snippet runs with CR0.PE, CR0.PG, EFER.LME and EFER.LMA clear",
        &MODE,
        &ZERO,
        EAX | EBX | ECX | EDX,
        real_mode,
    )
    .ok();
    let outcome = realmode::run(&UD2, &ZERO);
    report!(
        matches!(outcome, Err(i) if i.vector == 6 && i.cs == 0 && i.ip == UD2.address()),
        "harness: UD2 ends the snippet with #UD at its address {:#x} (got {outcome:x?})",
        UD2.address()
    );
    let state = || {
        (
            read_cr0(),
            read_cr3(),
            read_cr4(),
            rdmsr(IA32_EFER),
            store_gdtr(),
            store_idtr(),
        )
    };
    let before = state();
    let _ = realmode::run(&MODE, &ZERO);
    let after = state();
    report!(
        before == after,
        "harness: CR0, CR3, CR4, EFER, GDTR and IDTR are restored (before {before:x?}, after {after:x?})"
    );
    let null = try_read(0);
    report!(
        null.is_err(),
        "harness: the runtime still catches a #PF after the runs (got {null:x?})"
    );
}

/// realmode.c's PERF_COUNT, a tenth of it: under an emulating hypervisor each iteration exits.
const PERF_COUNT: u32 = 100_000;

realmode_snippet!(
    PERF_LOOP = "rdtsc",
    "mov %eax, %ebx",
    "mov %edx, %esi",
    "1: .byte 0x67",
    "loop 1b",
    "rdtsc"
);
realmode_snippet!(
    PERF_MOVE = "rdtsc",
    "mov %eax, %ebx",
    "mov %edx, %esi",
    "1: mov %esi, %edi",
    ".byte 0x67",
    "loop 1b",
    "rdtsc"
);
realmode_snippet!(
    PERF_ARITH = "rdtsc",
    "mov %eax, %ebx",
    "mov %edx, %esi",
    "1: add $4, %edi",
    ".byte 0x67",
    "loop 1b",
    "rdtsc"
);
realmode_snippet!(
    PERF_LOAD = "rdtsc",
    "mov %eax, %ebx",
    "mov %edx, %esi",
    "1: cmpl $0, (%edi)",
    ".byte 0x67",
    "loop 1b",
    "rdtsc"
);
realmode_snippet!(
    PERF_STORE = "rdtsc",
    "mov %eax, %ebx",
    "mov %edx, %esi",
    "1: mov %ax, (%edi)",
    ".byte 0x67",
    "loop 1b",
    "rdtsc"
);
realmode_snippet!(
    PERF_RMW = "rdtsc",
    "mov %eax, %ebx",
    "mov %edx, %esi",
    "1: addl $1, (%edi)",
    ".byte 0x67",
    "loop 1b",
    "rdtsc"
);
// The word the memory loops read and write.
realmode_data!(PERF_WORD = ".long 0");

/// TSC cycles of `snippet`'s loop (realmode.c's `cycles_in_big_real_mode`), `None` if it did not
/// run to its end.
fn cycles(snippet: &Snippet) -> Option<u64> {
    let input = Registers {
        ecx: PERF_COUNT,
        edi: PERF_WORD.address(),
        ..ZERO
    };
    let output = realmode::run(snippet, &input).ok()?;
    let start = (u64::from(output.esi) << 32) | u64::from(output.ebx);
    let end = (u64::from(output.edx) << 32) | u64::from(output.eax);
    Some(end.wrapping_sub(start))
}

/// realmode.c's perf tests: cycles per instruction, printed, not checked.
fn test_perf() {
    let start = rdtsc();
    let Some(baseline) = cycles(&PERF_LOOP) else {
        report_info!("perf: the loop did not run to its end");
        return;
    };
    report_info!(
        "{} cycles/emulated jump instruction",
        baseline / u64::from(PERF_COUNT + 3)
    );
    for (snippet, what) in [
        (&PERF_MOVE, "move"),
        (&PERF_ARITH, "arithmetic"),
        (&PERF_LOAD, "memory load"),
        (&PERF_STORE, "memory store"),
        (&PERF_RMW, "memory RMW"),
    ] {
        match cycles(snippet) {
            Some(total) => report_info!(
                "{} cycles/emulated {what} instruction",
                total.saturating_sub(baseline) / u64::from(PERF_COUNT)
            ),
            None => report_info!("perf: the {what} loop did not run to its end"),
        }
    }
    report_info!("perf: {} TSC cycles in all", rdtsc() - start);
}

fn main(_args: &[&str]) {
    test_harness();
    test_null();
    test_shld();
    test_push_pop();
    test_pusha_popa();
    test_mov_imm();
    test_cmp_imm();
    test_add_imm();
    test_sub_imm();
    test_xor_imm();
    test_io();
    test_eflags_insn();
    test_jcc_short();
    test_jcc_near();
    test_call();
    test_long_jmp();
    test_xchg();
    test_iret();
    test_int();
    test_sti_inhibit();
    test_imul();
    test_mul();
    test_div();
    test_idiv();
    test_loopcc();
    test_cbw();
    test_cwd_cdq();
    test_das();
    test_lds_lss();
    test_jcxz();
    test_cpuid();
    test_ss_base_for_esp_ebp();
    test_sgdt_sidt();
    test_lahf_sahf();
    test_movzx_movsx();
    test_bcd_and_friends();
    test_fninit();
    test_dr_mod();
    test_smsw();
    test_nopl();
    test_xadd();
    test_perf();
}
