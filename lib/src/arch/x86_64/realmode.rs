//! x86_64 real mode: runs 16-bit real-mode code snippets from the 64-bit runtime and gives
//! back their registers, as kvm-unit-tests' x86/realmode.c `exec_in_big_real_mode` does.
//!
//! [`run`] leaves long mode through compatibility mode (paging off, EFER.LME clear) and 16-bit
//! protected mode to real mode, loads the snippet's registers, jumps to it, saves its registers
//! when it ends, and comes back the same way, restoring CR0, CR3, CR4, EFER, the GDTR, the IDTR,
//! the segment registers, FS_BASE and GS_BASE. Interrupts stay off in the runtime throughout;
//! the 8259 PIC is masked while the snippet runs (it may set IF).
//!
//! The code that runs in real mode lives in the linker script's `.realmode` output section:
//! linked at [`AREA_START`] (below 1 MiB, segment 0), stored in the image, and copied down
//! before every run, so that the snippets' absolute addresses (`mov $label, %ax`,
//! `lcallw $0, $label`) hold and every run starts from the same memory. It holds the harness
//! (its GDT, the transitions, the 256 interrupt stubs), the tests' snippets
//! ([`realmode_snippet!`](crate::realmode_snippet)) and their data
//! ([`realmode_data!`](crate::realmode_data)). The segments have 64 KiB limits, so a
//! snippet's data lives in segment 0: the area, or its stack (SP wraps inside segment 0).
//!
//! In real mode the IDTR is the reset value (base 0, limit 0x3ff) and the interrupt vector
//! table at 0 is rewritten before each run so that every vector ends the snippet: [`run`]
//! then answers [`Interruption`] with the vector and where it happened. A snippet may point a
//! vector at its own handler (`movw $handler, 4 * vector`).
//!
//! Physical memory from [`AREA_START`] to 64 KiB and the interrupt vector table belong to this
//! module while a snippet runs; the runtime uses none of it (its allocators start at 1 MiB and
//! page 0 is unmapped), except the SMP trampoline page at 0x8000, which the link script keeps
//! the area below, and which is used only when application processors start.

use core::arch::global_asm;
use core::mem::offset_of;

use super::instructions::{in_u8, out_u8};

/// Where the `.realmode` section is linked and copied (physical = linear, segment 0).
pub const AREA_START: u32 = 0x1000;
/// The end of segment 0: snippet stacks and data stay below it.
pub const AREA_END: u32 = 0x1_0000;

/// The real-mode IDTR the harness loads: (limit, base), the processor's reset value.
pub const REAL_MODE_IDTR: (u16, u32) = (0x3ff, 0);

/// The 8259 PICs' interrupt mask registers.
const PIC_MASTER_DATA: u16 = 0x21;
const PIC_SLAVE_DATA: u16 = 0xa1;

/// The general registers and EFLAGS of a snippet, as kvm-unit-tests' `struct regs` has them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Registers {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub esi: u32,
    pub edi: u32,
    pub esp: u32,
    pub ebp: u32,
    pub eflags: u32,
}

/// The general registers, as a set (kvm-unit-tests' `R_AX` ... `R_BP` masks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterSet(u8);

#[allow(missing_docs)]
impl RegisterSet {
    pub const NONE: Self = Self(0);
    pub const EAX: Self = Self(1 << 0);
    pub const EBX: Self = Self(1 << 1);
    pub const ECX: Self = Self(1 << 2);
    pub const EDX: Self = Self(1 << 3);
    pub const ESI: Self = Self(1 << 4);
    pub const EDI: Self = Self(1 << 5);
    pub const ESP: Self = Self(1 << 6);
    pub const EBP: Self = Self(1 << 7);
    pub const ALL: Self = Self(0xff);

    /// Whether every register of `other` is in the set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for RegisterSet {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl Registers {
    /// The general registers (EFLAGS aside) whose values differ between `self` and `other`.
    pub fn differences(&self, other: &Registers) -> RegisterSet {
        let mine = self.general();
        let theirs = other.general();
        let mut set = 0;
        for (index, (a, b)) in mine.iter().zip(theirs.iter()).enumerate() {
            if a != b {
                set |= 1 << index;
            }
        }
        RegisterSet(set)
    }

    /// EAX, EBX, ECX, EDX, ESI, EDI, ESP, EBP, in [`RegisterSet`]'s bit order.
    fn general(&self) -> [u32; 8] {
        [
            self.eax, self.ebx, self.ecx, self.edx, self.esi, self.edi, self.esp, self.ebp,
        ]
    }
}

/// The real-mode address (segment 0) of `start`, a label of the `.realmode` section.
///
/// # Panics
/// When `start` lies outside the real-mode area (`what` names it in the message).
fn real_mode_address(start: *const u8, what: &str) -> u32 {
    let address = start as usize;
    assert!(
        (AREA_START as usize..AREA_END as usize).contains(&address),
        "{what} at {address:#x} lies outside the real-mode area: is it in .realmode?"
    );
    address as u32
}

/// A snippet of real-mode code in the `.realmode` section (see
/// [`realmode_snippet!`](crate::realmode_snippet)).
pub struct Snippet {
    start: *const u8,
}

// SAFETY: a snippet is the address of code; it is never written through.
unsafe impl Sync for Snippet {}

impl Snippet {
    /// The snippet at `start`, a label in the `.realmode` section. Used by
    /// [`realmode_snippet!`](crate::realmode_snippet).
    #[doc(hidden)]
    pub const fn new(start: *const u8) -> Self {
        Self { start }
    }

    /// Its real-mode address (segment 0).
    pub fn address(&self) -> u16 {
        real_mode_address(self.start, "snippet") as u16
    }
}

/// Real-mode code that snippets call or jump to (see
/// [`realmode_routine!`](crate::realmode_routine)); never run on its own.
pub struct Routine {
    start: *const u8,
}

// SAFETY: a routine is the address of code; it is never written through.
unsafe impl Sync for Routine {}

impl Routine {
    /// The routine at `start`, a label in the `.realmode` section. Used by
    /// [`realmode_routine!`](crate::realmode_routine).
    #[doc(hidden)]
    pub const fn new(start: *const u8) -> Self {
        Self { start }
    }

    /// Its real-mode address (segment 0).
    pub fn address(&self) -> u16 {
        real_mode_address(self.start, "routine") as u16
    }
}

/// Data in the `.realmode` section (see [`realmode_data!`](crate::realmode_data)): each
/// [`run`] resets it to its assembled contents, and it may be read after the run.
pub struct Data {
    start: *const u8,
    end: *const u8,
}

// SAFETY: the region is only read, through `read`, which copies it out.
unsafe impl Sync for Data {}

impl Data {
    /// The data between `start` and `end`, labels in the `.realmode` section. Used by
    /// [`realmode_data!`](crate::realmode_data).
    #[doc(hidden)]
    pub const fn new(start: *const u8, end: *const u8) -> Self {
        Self { start, end }
    }

    /// Its real-mode address (segment 0): what a snippet's register should hold.
    pub fn address(&self) -> u32 {
        real_mode_address(self.start, "real-mode data")
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.end as usize - self.start as usize
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes at `offset` as the last run left them.
    ///
    /// # Panics
    /// When `offset + buffer.len()` runs past the data's end.
    pub fn read(&self, offset: usize, buffer: &mut [u8]) {
        assert!(
            offset + buffer.len() <= self.len(),
            "read past the real-mode data"
        );
        let _guard = LOCK.lock();
        let _ = self.address();
        // SAFETY: the range lies inside the data's copy in the real-mode area, identity mapped
        // (above page 0) and written only by `run`, which the lock excludes.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.start.wrapping_add(offset),
                buffer.as_mut_ptr(),
                buffer.len(),
            );
        }
    }

    /// Writes `bytes` at `offset` into the data's copy in the area, for a routine that runs
    /// without [`run`] (a waking vector: [`install_waking_vector`]); the next [`run`] resets it.
    ///
    /// # Panics
    /// When `offset + bytes.len()` runs past the data's end.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.len(),
            "write past the real-mode data"
        );
        let _guard = LOCK.lock();
        let _ = self.address();
        // SAFETY: the range lies inside the data's copy in the real-mode area, identity mapped
        // (above page 0), which only this module uses; the lock excludes `run`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.start.wrapping_add(offset).cast_mut(),
                bytes.len(),
            );
        }
    }

    /// The little-endian word at `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        let mut bytes = [0; 2];
        self.read(offset, &mut bytes);
        u16::from_le_bytes(bytes)
    }

    /// The little-endian doubleword at `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        let mut bytes = [0; 4];
        self.read(offset, &mut bytes);
        u32::from_le_bytes(bytes)
    }
}

/// How a snippet ended other than by reaching its end: through the interrupt vector table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interruption {
    /// The vector (an exception, `int n`, or an external interrupt).
    pub vector: u8,
    /// CS of the interrupt frame.
    pub cs: u16,
    /// IP of the interrupt frame: for a fault, the faulting instruction; for `int n` or a
    /// trap, the next one.
    pub ip: u16,
    /// The registers at that point (ESP with the frame popped, FLAGS from the frame).
    pub registers: Registers,
}

/// The harness's mailbox, at `vmunit_realmode_context` in the real-mode area.
#[repr(C)]
struct Context {
    input: Registers,
    output: Registers,
    /// The snippet's address (IP, CS = 0).
    entry: u16,
    /// The vector that ended the snippet, [`NO_VECTOR`] when it reached its end.
    vector: u16,
    fault_ip: u16,
    fault_cs: u16,
    cr0: u32,
    cr3: u32,
    cr4: u32,
    efer: u64,
    fs_base: u64,
    gs_base: u64,
    rsp: u64,
    cs: u16,
    ss: u16,
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    gdtr: [u8; 10],
    idtr: [u8; 10],
}

const NO_VECTOR: u16 = 0xffff;

unsafe extern "C" {
    static __realmode_load: u8;
    static __realmode_start: u8;
    static __realmode_end: u8;
    static vmunit_realmode_context: u8;
    static vmunit_realmode_gdt_pointer: u8;
    /// Leaves long mode, runs the snippet the context names, and comes back.
    fn vmunit_realmode_switch();
}

/// One run at a time: the area is shared by all CPUs.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The GDTR the harness loads in real mode (limit, base): what SGDT reads there. It copies the
/// area down, so data a previous run left is reset: read that first.
pub fn real_mode_gdtr() -> (u16, u32) {
    let pointer = &raw const vmunit_realmode_gdt_pointer;
    let _guard = LOCK.lock();
    copy_area();
    // SAFETY: the pointer's 6 bytes lie in the area's copy, just written.
    let bytes: [u8; 6] = unsafe { pointer.cast::<[u8; 6]>().read_volatile() };
    (
        u16::from_le_bytes([bytes[0], bytes[1]]),
        u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
    )
}

/// Copies the `.realmode` section from the image to where it is linked.
fn copy_area() {
    let load = &raw const __realmode_load;
    let start = &raw const __realmode_start;
    let length = &raw const __realmode_end as usize - start as usize;
    assert!(start as usize == AREA_START as usize);
    // SAFETY: the destination is the real-mode area (below 0x8000, above page 0, identity
    // mapped, used by nothing else: see the module documentation); the source is the section's
    // copy in the image; they do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(load, start.cast_mut(), length) };
}

/// Copies the real-mode area down and returns `routine`'s address, for firmware to jump to in
/// real mode on its own (the ACPI FACS waking vector: CS = address >> 4, IP = address & 0xf,
/// so the routine's first instruction should be a far jump to segment 0). The routine then
/// runs with none of [`run`]'s harness: it must never return.
pub fn install_waking_vector(routine: &Routine) -> u32 {
    let _guard = LOCK.lock();
    copy_area();
    u32::from(routine.address())
}

/// The context's field at `offset` (of type `T`, per [`Context`]'s layout).
fn field<T>(offset: usize) -> *mut T {
    (&raw const vmunit_realmode_context)
        .cast_mut()
        .wrapping_add(offset)
        .cast()
}

/// Writes the context's field at `offset`; the caller holds the lock and copied the area.
fn write_field<T>(offset: usize, value: T) {
    // SAFETY: the context lies in the area's copy, aligned (its label is 16-aligned and the
    // offset is a repr(C) field's); only `run` uses it, under the lock.
    unsafe { field::<T>(offset).write_volatile(value) };
}

/// Reads the context's field at `offset`, as the harness left it.
fn read_field<T>(offset: usize) -> T {
    // SAFETY: as in `write_field`.
    unsafe { field::<T>(offset).read_volatile() }
}

/// Runs `snippet` in real mode with the registers `input`, and returns its registers when it
/// reaches its end, or how an interrupt or exception ended it.
///
/// The snippet runs at CPL 0 with the whole machine: the harness restores every control
/// register, descriptor table and segment it may change, but a snippet that writes memory
/// outside segment 0 or never ends breaks the runtime. Snippets come from
/// [`realmode_snippet!`](crate::realmode_snippet), whose code is the test's.
///
/// # Panics
/// With CR4.PCIDE set (leaving long mode needs it clear).
pub fn run(snippet: &Snippet, input: &Registers) -> Result<Registers, Interruption> {
    let entry = snippet.address();
    assert!(
        super::control::read_cr4() & super::control::Cr4Flags::PCID.bits() == 0,
        "realmode::run needs CR4.PCIDE clear"
    );
    let _guard = LOCK.lock();
    super::interrupts::without_interrupts(|| {
        let masks = (in_u8(PIC_MASTER_DATA), in_u8(PIC_SLAVE_DATA));
        out_u8(PIC_MASTER_DATA, 0xff);
        out_u8(PIC_SLAVE_DATA, 0xff);
        copy_area();
        write_field(offset_of!(Context, input), *input);
        write_field(offset_of!(Context, entry), entry);
        write_field(offset_of!(Context, vector), NO_VECTOR);
        // SAFETY: the switch saves and restores the runtime's state (see the assembly below);
        // interrupts are off, the area holds the harness and the snippet, and the lock keeps
        // other CPUs out of it.
        unsafe { vmunit_realmode_switch() };
        let output: Registers = read_field(offset_of!(Context, output));
        let vector: u16 = read_field(offset_of!(Context, vector));
        let fault_ip: u16 = read_field(offset_of!(Context, fault_ip));
        let fault_cs: u16 = read_field(offset_of!(Context, fault_cs));
        out_u8(PIC_MASTER_DATA, masks.0);
        out_u8(PIC_SLAVE_DATA, masks.1);
        if vector == NO_VECTOR {
            Ok(output)
        } else {
            Err(Interruption {
                vector: vector as u8,
                cs: fault_cs,
                ip: fault_ip,
                registers: output,
            })
        }
    })
}

/// Defines a [`Snippet`](crate::arch::realmode::Snippet) of real-mode code, assembled as 16-bit
/// code (AT&T syntax) into the `.realmode` section, each string one line. The code starts with
/// the registers of [`run`](crate::arch::realmode::run)'s input, and ends by running off its end
/// (a jump back to the harness follows it).
///
/// `realmode_snippet!(XCHG_EBX = "xchg %eax, %ebx");`
#[macro_export]
macro_rules! realmode_snippet {
    ($(#[$attribute:meta])* $visibility:vis $name:ident = $($code:literal),+ $(,)?) => {
        $crate::realmode_code!(
            "snippet", Snippet, ["jmp vmunit_realmode_epilogue"],
            $(#[$attribute])* $visibility $name = $($code),+
        );
    };
}

/// Defines a [`Routine`](crate::arch::realmode::Routine): real-mode code (16-bit, AT&T
/// syntax) in the `.realmode` section that snippets call or jump to, each string one line. Its
/// first instruction is at the global label `vmunit_realmode_routine_<NAME>`.
#[macro_export]
macro_rules! realmode_routine {
    ($(#[$attribute:meta])* $visibility:vis $name:ident = $($code:literal),+ $(,)?) => {
        $crate::realmode_code!("routine", Routine, [], $(#[$attribute])* $visibility $name = $($code),+);
    };
}

/// What [`realmode_snippet!`](crate::realmode_snippet) and
/// [`realmode_routine!`](crate::realmode_routine) share: 16-bit code under the global label
/// `vmunit_realmode_<kind>_<NAME>` in its own `.realmode.text` section, followed by the
/// `tail` lines, and a static of type `arch::realmode::<Type>` that points at it.
#[doc(hidden)]
#[macro_export]
macro_rules! realmode_code {
    (
        $kind:literal, $type:ident, [$($tail:literal),*],
        $(#[$attribute:meta])* $visibility:vis $name:ident = $($code:literal),+
    ) => {
        ::core::arch::global_asm!(
            concat!(".pushsection .realmode.text.", stringify!($name), ",\"ax\",@progbits"),
            ".code16",
            concat!(".global vmunit_realmode_", $kind, "_", stringify!($name)),
            concat!("vmunit_realmode_", $kind, "_", stringify!($name), ":"),
            $($code,)+
            $($tail,)*
            ".code64",
            ".popsection",
            options(att_syntax)
        );
        $(#[$attribute])*
        $visibility static $name: $crate::arch::realmode::$type = {
            #[allow(unsafe_code)]
            unsafe extern "C" {
                #[link_name = concat!("vmunit_realmode_", $kind, "_", stringify!($name))]
                static START: u8;
            }
            $crate::arch::realmode::$type::new(&raw const START)
        };
    };
}

/// Defines real-mode [`Data`](crate::arch::realmode::Data) in the `.realmode` section, from
/// assembler data directives (`.word`, `.long`, `.skip`, ...), each string one line; labels made
/// `.global` there can be named by snippets.
#[macro_export]
macro_rules! realmode_data {
    ($(#[$attribute:meta])* $visibility:vis $name:ident = $($code:literal),+ $(,)?) => {
        ::core::arch::global_asm!(
            concat!(".pushsection .realmode.data.", stringify!($name), ",\"aw\",@progbits"),
            ".balign 16",
            concat!(".global vmunit_realmode_data_", stringify!($name)),
            concat!("vmunit_realmode_data_", stringify!($name), ":"),
            $($code,)+
            concat!(".global vmunit_realmode_data_", stringify!($name), "_end"),
            concat!("vmunit_realmode_data_", stringify!($name), "_end:"),
            ".popsection",
            options(att_syntax)
        );
        $(#[$attribute])*
        $visibility static $name: $crate::arch::realmode::Data = {
            #[allow(unsafe_code)]
            unsafe extern "C" {
                #[link_name = concat!("vmunit_realmode_data_", stringify!($name))]
                static START: u8;
                #[link_name = concat!("vmunit_realmode_data_", stringify!($name), "_end")]
                static END: u8;
            }
            $crate::arch::realmode::Data::new(&raw const START, &raw const END)
        };
    };
}

// The 64-bit halves live in the image; the rest in the real-mode area.
//
// Selectors of the harness's GDT: 0x08 32-bit code, 0x10 32-bit data (flat), 0x18 16-bit code
// and 0x20 16-bit data (base 0, limit 64 KiB: what real mode inherits), 0x28 64-bit code.
global_asm!(
    r#"
    .set CTX, vmunit_realmode_context
    .set EFER, 0xc0000080
    .set FS_BASE, 0xc0000100
    .set GS_BASE, 0xc0000101

    .section .text.vmunit_realmode_switch, "ax"
    .code64
    .global vmunit_realmode_switch
    vmunit_realmode_switch:
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, CTX + {rsp}
        sgdt CTX + {gdtr}
        sidt CTX + {idtr}
        mov %cs, CTX + {cs}
        mov %ss, CTX + {ss}
        mov %ds, CTX + {ds}
        mov %es, CTX + {es}
        mov %fs, CTX + {fs}
        mov %gs, CTX + {gs}
        mov %cr0, %rax
        mov %eax, CTX + {cr0}
        mov %cr3, %rax
        mov %eax, CTX + {cr3}
        mov %cr4, %rax
        mov %eax, CTX + {cr4}
        mov $EFER, %ecx
        rdmsr
        mov %eax, CTX + {efer}
        mov %edx, CTX + {efer} + 4
        mov $FS_BASE, %ecx
        rdmsr
        mov %eax, CTX + {fs_base}
        mov %edx, CTX + {fs_base} + 4
        mov $GS_BASE, %ecx
        rdmsr
        mov %eax, CTX + {gs_base}
        mov %edx, CTX + {gs_base} + 4
        lgdt vmunit_realmode_gdt_pointer
        pushq $0x08
        pushq $vmunit_realmode_compat
        lretq

    /* Back from real mode, in 64-bit mode on the harness's GDT. */
    .global vmunit_realmode_resume
    vmunit_realmode_resume:
        lgdt CTX + {gdtr}
        lidt CTX + {idtr}
        mov CTX + {ss}, %ss
        mov CTX + {ds}, %ds
        mov CTX + {es}, %es
        mov CTX + {fs}, %fs
        mov CTX + {gs}, %gs
        mov $FS_BASE, %ecx
        mov CTX + {fs_base}, %eax
        mov CTX + {fs_base} + 4, %edx
        wrmsr
        mov $GS_BASE, %ecx
        mov CTX + {gs_base}, %eax
        mov CTX + {gs_base} + 4, %edx
        wrmsr
        mov CTX + {rsp}, %rsp
        movzwq CTX + {cs}, %rax
        push %rax
        lea 1f(%rip), %rax
        push %rax
        lretq
    1:  pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        ret

    .section .realmode.harness, "ax", @progbits
    .code32
    vmunit_realmode_compat:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %cr0, %eax                  /* paging off: long mode ends */
        and $0x7fffffff, %eax
        mov %eax, %cr0
        mov $EFER, %ecx
        rdmsr
        and $~0x100, %eax               /* EFER.LME */
        wrmsr
        ljmp $0x18, $vmunit_realmode_protected16
    .code16
    vmunit_realmode_protected16:
        mov $0x20, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov %cr0, %eax
        and $~1, %eax                   /* CR0.PE */
        mov %eax, %cr0
        ljmp $0, $vmunit_realmode_real
    vmunit_realmode_real:
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov $vmunit_realmode_stack_top, %esp
        lidtl vmunit_realmode_idt_pointer
        cld
        mov $vmunit_realmode_vector_table, %si
        xor %di, %di
        mov $256, %cx
        rep movsl
        pushl CTX + {input_eflags}
        popfl
        mov CTX + {input_eax}, %eax
        mov CTX + {input_ebx}, %ebx
        mov CTX + {input_ecx}, %ecx
        mov CTX + {input_edx}, %edx
        mov CTX + {input_esi}, %esi
        mov CTX + {input_edi}, %edi
        mov CTX + {input_ebp}, %ebp
        mov CTX + {input_esp}, %esp
        jmpw *CTX + {entry}

    /* Snippets end here, with whatever segments they left; CS is 0. */
    .global vmunit_realmode_epilogue
    vmunit_realmode_epilogue:
        mov %eax, %cs:CTX + {output_eax}
        mov %ebx, %cs:CTX + {output_ebx}
        mov %ecx, %cs:CTX + {output_ecx}
        mov %edx, %cs:CTX + {output_edx}
        mov %esi, %cs:CTX + {output_esi}
        mov %edi, %cs:CTX + {output_edi}
        mov %ebp, %cs:CTX + {output_ebp}
        mov %esp, %cs:CTX + {output_esp}
        pushfl
        popl %cs:CTX + {output_eflags}
        jmp vmunit_realmode_exit

    /* Every vector: a CALL from its stub, whose return address names the vector. */
    vmunit_realmode_vector_common:
        mov %eax, %cs:CTX + {output_eax}
        mov %ebx, %cs:CTX + {output_ebx}
        mov %ecx, %cs:CTX + {output_ecx}
        mov %edx, %cs:CTX + {output_edx}
        mov %esi, %cs:CTX + {output_esi}
        mov %edi, %cs:CTX + {output_edi}
        mov %ebp, %cs:CTX + {output_ebp}
        pop %ax
        sub $vmunit_realmode_stubs + 3, %ax
        mov $3, %bl
        div %bl
        xor %ah, %ah
        mov %ax, %cs:CTX + {vector}
        pop %ax
        mov %ax, %cs:CTX + {fault_ip}
        pop %ax
        mov %ax, %cs:CTX + {fault_cs}
        pop %ax
        movzwl %ax, %eax
        mov %eax, %cs:CTX + {output_eflags}
        mov %esp, %cs:CTX + {output_esp}

    vmunit_realmode_exit:
        cli
        cld
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov $vmunit_realmode_stack_top, %esp
        lgdtl vmunit_realmode_gdt_pointer
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $vmunit_realmode_back32
    .code32
    vmunit_realmode_back32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov CTX + {cr4}, %eax
        mov %eax, %cr4
        mov CTX + {cr3}, %eax
        mov %eax, %cr3
        mov $EFER, %ecx
        mov CTX + {efer}, %eax
        mov CTX + {efer} + 4, %edx
        wrmsr
        mov CTX + {cr0}, %eax
        mov %eax, %cr0
        ljmp $0x28, $vmunit_realmode_back64
    .code64
    vmunit_realmode_back64:
        movabs $vmunit_realmode_resume, %rax
        jmp *%rax

    .code16
    vmunit_realmode_stubs:
    .rept 256
        call vmunit_realmode_vector_common
    .endr
    .code64

    .balign 8
    vmunit_realmode_gdt:
        .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
        .quad 0x00cf92000000ffff        /* 0x10: 32-bit data */
        .quad 0x00009a000000ffff        /* 0x18: 16-bit code */
        .quad 0x000092000000ffff        /* 0x20: 16-bit data */
        .quad 0x00af9a000000ffff        /* 0x28: 64-bit code */
    vmunit_realmode_gdt_end:
    .global vmunit_realmode_gdt_pointer
    vmunit_realmode_gdt_pointer:        /* 6 bytes for LGDTL, 10 for the 64-bit LGDT */
        .word vmunit_realmode_gdt_end - vmunit_realmode_gdt - 1
        .long vmunit_realmode_gdt
        .long 0
    vmunit_realmode_idt_pointer:
        .word {ivt_limit}
        .long {ivt_base}

    /* The vector table copied to 0 before each run: vector n -> 0:stub n. */
    .balign 4
    vmunit_realmode_vector_table:
    .set vmunit_realmode_vector, 0
    .rept 256
        .word vmunit_realmode_stubs + 3 * vmunit_realmode_vector, 0
        .set vmunit_realmode_vector, vmunit_realmode_vector + 1
    .endr

    .balign 16
    vmunit_realmode_stack:
        .skip 64
    vmunit_realmode_stack_top:

    .balign 16
    .global vmunit_realmode_context
    vmunit_realmode_context:
        .skip {context_size}

    /* Back to the default section: module-level assembly that follows in the same object
       (another global_asm! without a .section of its own) must not land in .realmode. */
    .text
    "#,
    rsp = const offset_of!(Context, rsp),
    gdtr = const offset_of!(Context, gdtr),
    idtr = const offset_of!(Context, idtr),
    cs = const offset_of!(Context, cs),
    ss = const offset_of!(Context, ss),
    ds = const offset_of!(Context, ds),
    es = const offset_of!(Context, es),
    fs = const offset_of!(Context, fs),
    gs = const offset_of!(Context, gs),
    cr0 = const offset_of!(Context, cr0),
    cr3 = const offset_of!(Context, cr3),
    cr4 = const offset_of!(Context, cr4),
    efer = const offset_of!(Context, efer),
    fs_base = const offset_of!(Context, fs_base),
    gs_base = const offset_of!(Context, gs_base),
    entry = const offset_of!(Context, entry),
    vector = const offset_of!(Context, vector),
    fault_ip = const offset_of!(Context, fault_ip),
    fault_cs = const offset_of!(Context, fault_cs),
    input_eax = const offset_of!(Context, input) + offset_of!(Registers, eax),
    input_ebx = const offset_of!(Context, input) + offset_of!(Registers, ebx),
    input_ecx = const offset_of!(Context, input) + offset_of!(Registers, ecx),
    input_edx = const offset_of!(Context, input) + offset_of!(Registers, edx),
    input_esi = const offset_of!(Context, input) + offset_of!(Registers, esi),
    input_edi = const offset_of!(Context, input) + offset_of!(Registers, edi),
    input_esp = const offset_of!(Context, input) + offset_of!(Registers, esp),
    input_ebp = const offset_of!(Context, input) + offset_of!(Registers, ebp),
    input_eflags = const offset_of!(Context, input) + offset_of!(Registers, eflags),
    output_eax = const offset_of!(Context, output) + offset_of!(Registers, eax),
    output_ebx = const offset_of!(Context, output) + offset_of!(Registers, ebx),
    output_ecx = const offset_of!(Context, output) + offset_of!(Registers, ecx),
    output_edx = const offset_of!(Context, output) + offset_of!(Registers, edx),
    output_esi = const offset_of!(Context, output) + offset_of!(Registers, esi),
    output_edi = const offset_of!(Context, output) + offset_of!(Registers, edi),
    output_esp = const offset_of!(Context, output) + offset_of!(Registers, esp),
    output_ebp = const offset_of!(Context, output) + offset_of!(Registers, ebp),
    output_eflags = const offset_of!(Context, output) + offset_of!(Registers, eflags),
    ivt_limit = const REAL_MODE_IDTR.0,
    ivt_base = const REAL_MODE_IDTR.1,
    context_size = const size_of::<Context>(),
    options(att_syntax)
);

/// The (limit, base) that a 16-bit SGDT or SIDT stored in 6 bytes.
pub fn descriptor_table_register(bytes: [u8; 6]) -> (u16, u32) {
    (
        u16::from_le_bytes([bytes[0], bytes[1]]),
        u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
    )
}
