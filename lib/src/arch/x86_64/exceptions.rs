//! x86_64 exceptions: GDT/TSS, a full 256-vector IDT, the register frame, dispatch, and the
//! machinery behind `catch_exception` and `trap_exceptions`.
//!
//! Every vector enters through a 16-byte assembly stub that pushes a dummy error code when
//! the CPU pushes none, then the vector number, and jumps to a common path that saves the
//! general registers into an [`ExceptionFrame`] and calls [`exception_dispatch`].

use core::arch::{asm, global_asm};
use core::fmt;
use core::mem::size_of;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, DescriptorFlags, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::{Entry, EntryOptions, InterruptDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use super::smp::{MAX_CPUS, cpu_index};

/// The registers saved on every exception, in the order the entry path pushes them
/// (lowest address first), followed by the frame the CPU pushed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector number pushed by the stub.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The assembly below pushes 15 registers, a vector and an error code over the CPU's 5-word frame.
const _: () = assert!(size_of::<ExceptionFrame>() == 22 * 8);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, vector) == 15 * 8);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, rip) == 17 * 8);

/// An x86 interrupt vector number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Vector(pub u8);

#[allow(missing_docs)]
impl Vector {
    pub const DE: Vector = Vector(0);
    pub const DB: Vector = Vector(1);
    pub const NMI: Vector = Vector(2);
    pub const BP: Vector = Vector(3);
    pub const OF: Vector = Vector(4);
    pub const BR: Vector = Vector(5);
    pub const UD: Vector = Vector(6);
    pub const NM: Vector = Vector(7);
    pub const DF: Vector = Vector(8);
    pub const TS: Vector = Vector(10);
    pub const NP: Vector = Vector(11);
    pub const SS: Vector = Vector(12);
    pub const GP: Vector = Vector(13);
    pub const PF: Vector = Vector(14);
    pub const MF: Vector = Vector(16);
    pub const AC: Vector = Vector(17);
    pub const MC: Vector = Vector(18);
    pub const XM: Vector = Vector(19);
    pub const VE: Vector = Vector(20);
    pub const CP: Vector = Vector(21);

    /// The SDM mnemonic of an exception vector ("#GP"), or "IRQ" for vectors 32..=255.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 32] = [
            "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
            "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26",
            "#27", "#HV", "#VC", "#SX", "#31",
        ];
        NAMES.get(usize::from(self.0)).copied().unwrap_or("IRQ")
    }

    /// Whether the CPU pushes an error code for this vector.
    pub fn has_error_code(self) -> bool {
        matches!(self.0, 8 | 10..=14 | 17 | 21 | 29 | 30)
    }
}

impl fmt::Display for Vector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.name(), self.0)
    }
}

/// An exception as a test sees it: what was raised, where, and with which error code.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Exception {
    /// The vector that was raised.
    pub vector: Vector,
    /// The error code the CPU pushed (0 when the vector has none).
    pub error_code: u64,
    /// The RIP the CPU pushed: the faulting instruction for faults, the next one for traps.
    pub rip: u64,
    /// CR2 at the time of a #PF (the faulting linear address), 0 for other vectors.
    pub address: u64,
    /// Whether it was raised at CPL 3 (the pushed CS's RPL).
    pub from_user: bool,
    /// The RFLAGS the CPU pushed. For a fault, RF is set, so that the restarted instruction's
    /// breakpoint does not fire again (SDM Vol. 3, "Instruction-Breakpoint Exception
    /// Condition": "the value pushed for RF is 1" for every fault but an instruction
    /// breakpoint's #DB).
    pub rflags: u64,
}

impl Exception {
    /// The vector (the portable accessor: aarch64 has its exception class here).
    pub fn kind(&self) -> Vector {
        self.vector
    }

    /// The syndrome: the error code the CPU pushed (0 for vectors without one).
    pub fn syndrome(&self) -> u64 {
        self.error_code
    }

    /// Where the exception returns to (the pushed RIP): the faulting instruction for faults,
    /// the next one for traps.
    pub fn return_address(&self) -> u64 {
        self.rip
    }

    /// CR2 of a #PF: the faulting linear address (`None` for other vectors).
    pub fn fault_address(&self) -> Option<u64> {
        (self.vector == Vector::PF).then_some(self.address)
    }

    /// Whether it was raised at CPL 3.
    pub fn from_user_mode(&self) -> bool {
        self.from_user
    }

    /// Whether RFLAGS.RF (the resume flag) is set in the pushed RFLAGS: kvm-unit-tests'
    /// `exception_rflags_rf()`. The CPU sets it for every fault but an instruction
    /// breakpoint's #DB.
    pub fn resume_flag(&self) -> bool {
        x86_64::registers::rflags::RFlags::from_bits_retain(self.rflags)
            .contains(x86_64::registers::rflags::RFlags::RESUME_FLAG)
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} at rip {:#x}", self.vector, self.rip)?;
        if self.vector.has_error_code() {
            write!(formatter, ", error code {:#x}", self.error_code)?;
        }
        if self.vector == Vector::PF {
            write!(formatter, ", address {:#x}", self.address)?;
        }
        Ok(())
    }
}

/// Page-fault error code bits (SDM Vol. 3, 4.7).
#[allow(missing_docs)]
pub mod page_fault {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
    /// PK: a protection key's rights (PKRU or IA32_PKRS) forbade the data access.
    pub const PROTECTION_KEY: u64 = 1 << 5;

    /// Whether `result` is a #PF at `address` (CR2) with exactly `error_code`.
    pub fn raised<T>(result: &Result<T, super::Exception>, address: u64, error_code: u64) -> bool {
        matches!(result, Err(e) if e.vector == super::Vector::PF && e.address == address && e.error_code == error_code)
    }
}

/// Segment selectors of the runtime's GDT.
#[allow(missing_docs)]
pub mod selector {
    pub const KERNEL_CODE: u16 = 0x08;
    pub const KERNEL_DATA: u16 = 0x10;
    /// 32-bit user code (compatibility mode), for SYSRET's 32-bit form: STAR[63:48] names it,
    /// and user data and 64-bit user code follow it, as SYSRET requires.
    pub const USER_CODE32: u16 = 0x18 | 3;
    pub const USER_DATA: u16 = 0x20 | 3;
    pub const USER_CODE: u16 = 0x28 | 3;
    pub const TSS: u16 = 0x30;
}

/// The IST slot (1-based in the IDT, 0-based in the TSS) of the #DF, NMI and #MC stack.
const EMERGENCY_STACK_INDEX: u16 = 0;
/// The IST slot of the stack [`with_page_fault_stack`] delivers #PF on.
const PAGE_FAULT_STACK_INDEX: u16 = 1;
/// The size of each CPU's page-fault stack.
const PAGE_FAULT_STACK_SIZE: usize = 8192;

/// Each CPU's page-fault stack: written by the CPU delivering a #PF, never by Rust code.
#[repr(C, align(16))]
struct PageFaultStacks(core::cell::UnsafeCell<[[u8; PAGE_FAULT_STACK_SIZE]; MAX_CPUS]>);
// SAFETY: no Rust reference into the stacks is ever made; only their addresses are taken.
unsafe impl Sync for PageFaultStacks {}
static PAGE_FAULT_STACKS: PageFaultStacks = PageFaultStacks(core::cell::UnsafeCell::new(
    [[0; PAGE_FAULT_STACK_SIZE]; MAX_CPUS],
));

#[allow(clippy::declare_interior_mutable_const)]
const NO_TSS: spin::Once<TaskStateSegment> = spin::Once::new();
#[allow(clippy::declare_interior_mutable_const)]
const NO_GDT: spin::Once<GlobalDescriptorTable> = spin::Once::new();
// `spin::Once` rather than `Lazy`: an all-zero initial value lands in .bss, not in the file.
// Each CPU has its own TSS (its emergency stack) and so its own GDT; all share the IDT.
static TSS: [spin::Once<TaskStateSegment>; MAX_CPUS] = [NO_TSS; MAX_CPUS];
static GDT: [spin::Once<GlobalDescriptorTable>; MAX_CPUS] = [NO_GDT; MAX_CPUS];
static IDT: spin::Once<SharedIdt> = spin::Once::new();

/// The IDT all CPUs share. After it is built, only [`set_gate_present`] changes it.
struct SharedIdt(core::cell::UnsafeCell<InterruptDescriptorTable>);
// SAFETY: the table is written once before any CPU loads it, and afterwards only one gate's
// present bit at a time, by tests that own that vector; the CPUs read it.
unsafe impl Sync for SharedIdt {}

fn new_tss(cpu: usize) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    let top = VirtAddr::new(super::smp::emergency_stack_top(cpu));
    tss.interrupt_stack_table[usize::from(EMERGENCY_STACK_INDEX)] = top;
    let page_fault_stack = PAGE_FAULT_STACKS.0.get() as u64 + ((cpu + 1) * PAGE_FAULT_STACK_SIZE) as u64;
    tss.interrupt_stack_table[usize::from(PAGE_FAULT_STACK_INDEX)] = VirtAddr::new(page_fault_stack);
    tss.privilege_stack_table[0] = VirtAddr::new(super::smp::privilege_stack_top(cpu));
    tss
}

fn new_gdt(tss: &'static TaskStateSegment) -> GlobalDescriptorTable {
    let mut gdt = GlobalDescriptorTable::new();
    gdt.append(Descriptor::kernel_code_segment());
    gdt.append(Descriptor::kernel_data_segment());
    gdt.append(Descriptor::UserSegment(DescriptorFlags::USER_CODE32.bits()));
    gdt.append(Descriptor::user_data_segment());
    gdt.append(Descriptor::user_code_segment());
    gdt.append(Descriptor::tss_segment(tss));
    gdt
}

unsafe extern "C" {
    /// The first of 256 16-byte entry stubs defined in the assembly below.
    static vmunit_vector_stubs: u8;
}

const STUB_SIZE: u64 = 16;

/// Points an IDT entry at the stub of `vector`.
fn install<F>(entry: &mut Entry<F>, vector: u8) -> &mut EntryOptions {
    let stubs = &raw const vmunit_vector_stubs as u64;
    // SAFETY: each stub is a valid interrupt entry that saves the full register state, calls
    // the dispatcher and returns with IRETQ.
    unsafe { entry.set_handler_addr(VirtAddr::new(stubs + u64::from(vector) * STUB_SIZE)) }
}

/// Points an IDT entry at the stub of `vector`, entered on the emergency IST stack: #DF,
/// NMI and #MC may strike when the current stack is unusable (a stack overflow, say).
fn install_emergency<F>(entry: &mut Entry<F>, vector: u8) {
    // SAFETY: the index names the TSS's emergency stack, which only these three vectors use
    // (none of them can nest in practice: a second #DF is a triple fault anyway).
    unsafe { install(entry, vector).set_stack_index(EMERGENCY_STACK_INDEX) };
}

fn new_idt() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    install(&mut idt.divide_error, 0);
    install(&mut idt.debug, 1);
    install_emergency(&mut idt.non_maskable_interrupt, 2);
    install(&mut idt.breakpoint, 3);
    install(&mut idt.overflow, 4);
    install(&mut idt.bound_range_exceeded, 5);
    install(&mut idt.invalid_opcode, 6);
    install(&mut idt.device_not_available, 7);
    install_emergency(&mut idt.double_fault, 8);
    install(&mut idt.invalid_tss, 10);
    install(&mut idt.segment_not_present, 11);
    install(&mut idt.stack_segment_fault, 12);
    install(&mut idt.general_protection_fault, 13);
    install(&mut idt.page_fault, 14);
    install(&mut idt.x87_floating_point, 16);
    install(&mut idt.alignment_check, 17);
    install_emergency(&mut idt.machine_check, 18);
    install(&mut idt.simd_floating_point, 19);
    install(&mut idt.virtualization, 20);
    install(&mut idt.cp_protection_exception, 21);
    install(&mut idt.hv_injection_exception, 28);
    install(&mut idt.vmm_communication_exception, 29);
    install(&mut idt.security_exception, 30);
    for vector in 32..=255u8 {
        install(&mut idt[vector], vector);
    }
    idt
}

/// Loads CPU `cpu`'s GDT (with a TSS whose IST holds its #DF/NMI/#MC stack) and the IDT.
pub(crate) fn init_cpu(cpu: usize) {
    let tss = TSS[cpu].call_once(|| new_tss(cpu));
    GDT[cpu].call_once(|| new_gdt(tss)).load();
    // SAFETY: the selector names the ring-0 64-bit code segment of the GDT just loaded.
    unsafe { CS::set_reg(SegmentSelector(selector::KERNEL_CODE)) };
    for register in [SS::set_reg, DS::set_reg, ES::set_reg] {
        // SAFETY: the selector names the ring-0 data segment of the GDT just loaded.
        unsafe { register(SegmentSelector(selector::KERNEL_DATA)) };
    }
    // A CPU restarted by INIT (smp::reset_cpu) finds its TSS marked busy by its first LTR.
    set_task_state_busy(false);
    // SAFETY: the selector names the available 64-bit TSS of the GDT just loaded.
    unsafe { load_tss(SegmentSelector(selector::TSS)) };
    let idt = IDT.call_once(|| SharedIdt(core::cell::UnsafeCell::new(new_idt())));
    // SAFETY: the table was built above and is not being written; the reference ends here.
    let table = unsafe { &*idt.0.get() };
    // SAFETY: the table is static, so it stays valid while loaded.
    unsafe { table.load_unsafe() };
}

/// The access byte of this CPU's TSS descriptor in its loaded GDT.
fn task_state_access_byte() -> *mut u8 {
    let gdt = x86_64::instructions::tables::sgdt();
    (gdt.base.as_u64() + u64::from(selector::TSS) + 5) as *mut u8
}

/// Whether this CPU's TSS descriptor is marked busy (type 0xB), as LTR leaves it.
pub fn task_state_busy() -> bool {
    // SAFETY: the byte is the access byte of this CPU's TSS descriptor in its loaded GDT;
    // reading it has no effect.
    unsafe { task_state_access_byte().read_volatile() & 0x02 != 0 }
}

/// Marks this CPU's TSS descriptor busy or available (type 0xB or 0x9): LTR of
/// [`selector::TSS`] needs it available (kvm-unit-tests' emulator test_ltr clears the busy
/// bit, LTRs, and checks that LTR set it again). The loaded task register is unaffected.
pub fn set_task_state_busy(busy: bool) {
    let byte = task_state_access_byte();
    // SAFETY: as in `task_state_busy`.
    let value = unsafe { byte.read_volatile() };
    // SAFETY: the CPU itself writes this byte on LTR, and only the busy bit changes, which
    // nothing but LTR (and task switches, which a 64-bit guest never makes) reads.
    unsafe { byte.write_volatile(if busy { value | 0x02 } else { value & !0x02 }) };
}

/// Marks the IDT gate of interrupt `vector` (32..=255) present or not present, on every CPU
/// (they share the IDT). An interrupt through a not-present gate raises #NP with the gate in
/// the error code: `vector << 3 | IDT (2) | EXT (1 for an external event)`.
///
/// # Panics
/// For an exception vector (below 32).
pub fn set_gate_present(vector: u8, present: bool) {
    assert!(vector >= 32, "vector {vector} is an exception, not an interrupt");
    let idt = IDT.get().expect("the IDT is built at boot");
    // SAFETY: the gate is rewritten in place (same handler) with one present bit changed; no
    // Rust reference to the table is alive, and the CPUs read whole gates.
    let table = unsafe { &mut *idt.0.get() };
    install(&mut table[vector], vector).set_present(present);
}

/// Runs `function` with #PF delivered on a stack of its own (an IST stack, one per CPU)
/// instead of the current stack, on every CPU (they share the IDT), then goes back to the
/// current stack: so that a probe whose RSP points into a page it may not write (a user page
/// under SMAP) still gets its #PF delivered, and caught. A #PF inside the #PF handler would
/// reuse that stack, but the runtime's handler does not fault.
pub fn with_page_fault_stack<R>(function: impl FnOnce() -> R) -> R {
    let idt = IDT.get().expect("the IDT is built at boot");
    let set = |index: Option<u16>| {
        // SAFETY: as in `set_gate_present`: one gate rewritten in place (same handler, no
        // IST index), then given a stack every CPU's TSS holds, or left with none.
        let table = unsafe { &mut *idt.0.get() };
        let options = install(&mut table.page_fault, 14);
        if let Some(index) = index {
            // SAFETY: the index names the TSS's page-fault stack, which only #PF uses.
            unsafe { options.set_stack_index(index) };
        }
    };
    set(Some(PAGE_FAULT_STACK_INDEX));
    let result = function();
    set(None);
    result
}

/// Runs `function` with the NMI delivered on the current stack instead of its IST stack, on
/// every CPU (they share the IDT), then gives the NMI its IST stack back: so that an NMI
/// handler may IRET to itself (unblocking NMIs) and take a nested NMI without the IST
/// reloading the stack its own frames live on (kvm-unit-tests' eventinj NMI-IRET check).
pub fn with_nmi_on_current_stack<R>(function: impl FnOnce() -> R) -> R {
    let idt = IDT.get().expect("the IDT is built at boot");
    let set = |ist: bool| {
        // SAFETY: as in `set_gate_present`: the NMI gate rewritten in place (same handler),
        // with the emergency IST stack it was built with, or with none.
        let table = unsafe { &mut *idt.0.get() };
        if ist {
            install_emergency(&mut table.non_maskable_interrupt, 2);
        } else {
            install(&mut table.non_maskable_interrupt, 2);
        }
    };
    set(false);
    let result = function();
    set(true);
    result
}

unsafe extern "C" {
    static vmunit_exception_iret: u8;
}

/// The read-only stack page [`repair_stack_page`] makes writable on its first #PF (0: none),
/// and its frame.
static REPAIR_PAGE: AtomicU64 = AtomicU64::new(0);
static REPAIR_FRAME: AtomicU64 = AtomicU64::new(0);
/// The #PF that [`repair_stack_page`] handled, and whether it ran on the page-fault stack.
static REPAIRED_FAULT: spin::Mutex<Option<(Exception, bool)>> = spin::Mutex::new(None);

/// Whether `address` lies in this CPU's page-fault IST stack.
fn on_page_fault_stack(address: u64) -> bool {
    let start = PAGE_FAULT_STACKS.0.get() as u64 + (cpu_index() * PAGE_FAULT_STACK_SIZE) as u64;
    (start..start + PAGE_FAULT_STACK_SIZE as u64).contains(&address)
}

/// The #PF handler of [`with_read_only_stack_repaired`]: a write fault on the armed page maps
/// it read-write, records the fault and resumes the faulting instruction (or the delivery it
/// interrupted). Any other #PF goes on to the usual handling.
fn repair_stack_page(frame: &ExceptionFrame, exception: &Exception) -> bool {
    let page = REPAIR_PAGE.load(Ordering::SeqCst);
    if page == 0 || exception.address & !0xfff != page {
        return false;
    }
    REPAIR_PAGE.store(0, Ordering::SeqCst);
    let on_stack = on_page_fault_stack(core::ptr::from_ref(frame) as u64);
    *REPAIRED_FAULT.lock() = Some((*exception, on_stack));
    // SAFETY: the page belongs to the caller's TestPage, which `with_read_only_stack_repaired`
    // borrows; mapping it read-write (as TestPage::new maps it) only undoes its protection.
    unsafe {
        super::mmu::map_page(
            page,
            REPAIR_FRAME.load(Ordering::SeqCst),
            crate::memory::Protection::READ_WRITE,
        )
    };
    true
}

/// A #PF that [`with_read_only_stack_repaired`] handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairedPageFault {
    /// The #PF (vector, error code, RIP, CR2).
    pub exception: Exception,
    /// Whether its handler ran on the page-fault IST stack, not on the faulting stack.
    pub on_page_fault_stack: bool,
}

/// Maps `stack` read-only and runs `function` with #PF delivered on its IST stack (as
/// [`with_page_fault_stack`]), where the first write fault on `stack` is repaired, not
/// reported: the handler maps the page read-write again and returns, so the faulting
/// instruction, or the event whose delivery pushed onto `stack`, runs again (kvm-unit-tests'
/// eventinj `pf_tss`). Returns `function`'s result and the repaired #PF, if one came.
pub fn with_read_only_stack_repaired<R>(
    stack: &crate::memory::TestPage,
    function: impl FnOnce() -> R,
) -> (R, Option<RepairedPageFault>) {
    stack.protect(crate::memory::Protection::READ_ONLY);
    *REPAIRED_FAULT.lock() = None;
    REPAIR_FRAME.store(stack.frame(), Ordering::SeqCst);
    REPAIR_PAGE.store(stack.address(), Ordering::SeqCst);
    let result = with_page_fault_stack(function);
    REPAIR_PAGE.store(0, Ordering::SeqCst);
    stack.protect(crate::memory::Protection::READ_WRITE);
    let fault = REPAIRED_FAULT.lock().take();
    (
        result,
        fault.map(|(exception, on_page_fault_stack)| RepairedPageFault {
            exception,
            on_page_fault_stack,
        }),
    )
}

/// The address of the IRETQ with which the runtime returns from every exception, interrupt
/// and NMI handler: an NMI arriving there came before the previous handler's IRET completed.
pub fn exception_return_address() -> u64 {
    &raw const vmunit_exception_iret as u64
}

global_asm!(
    r#"
    .section .text.vmunit_vectors, "ax"
    .balign 16
    .global vmunit_vector_stubs
    vmunit_vector_stubs:
    .set vector, 0
    .rept 256
        .balign 16
        .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
        .else
            push $0
        .endif
        push $vector
        jmp vmunit_exception_common
        .set vector, vector + 1
    .endr

    vmunit_exception_common:
        push %rax
        push %rbx
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %rbp
        push %r8
        push %r9
        push %r10
        push %r11
        push %r12
        push %r13
        push %r14
        push %r15
        cld
        mov %rsp, %rdi          /* 22 words below the CPU's 16-byte aligned frame: aligned */
        call {dispatch}
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rbp
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rbx
        pop %rax
        add $16, %rsp           /* vector and error code */
    .global vmunit_exception_iret
    vmunit_exception_iret:
        iretq
    "#,
    dispatch = sym exception_dispatch,
    options(att_syntax)
);

/// Exceptions and interrupts handled so far (for tests that check delivery counts).
pub(crate) static EXCEPTION_COUNT: AtomicUsize = AtomicUsize::new(0);

global_asm!(
    r#"
    .section .text.vmunit_try_call, "ax"
    /* u64 vmunit_try_call(CatchContext *context, void (*function)(void *), void *data)
     * Returns 0 when `function` returned, 1 when an exception ended it (the dispatcher then
     * resumes at vmunit_try_recover on the stack pointer saved here). */
    .global vmunit_try_call
    vmunit_try_call:
        push %rbp
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        sub $8, %rsp            /* 16-byte alignment for the call below */
        mov %rsp, 0(%rdi)
        pushfq
        pop %rax
        mov %rax, 8(%rdi)
        mov %rdx, %rdi
        call *%rsi
        xor %eax, %eax
    vmunit_try_return:
        add $8, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        pop %rbp
        ret
    .global vmunit_try_recover
    vmunit_try_recover:
        mov $1, %eax
        jmp vmunit_try_return
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static vmunit_try_recover: u8;
}

pub use crate::catch::{catch_exception, trap_exceptions};

fn read_cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// The Rust side of every vector: recover into `catch_exception`, record for
/// `trap_exceptions`, or report the unexpected exception and abort the test.
extern "C" fn exception_dispatch(frame: &mut ExceptionFrame) {
    EXCEPTION_COUNT.fetch_add(1, Ordering::Relaxed);
    let vector = Vector(frame.vector as u8);
    let exception = Exception {
        vector,
        error_code: frame.error_code,
        rip: frame.rip,
        address: if vector == Vector::PF { read_cr2() } else { 0 },
        from_user: frame.cs & 3 == 3,
        rflags: frame.rflags,
    };
    if vector == Vector::DB {
        let hook = DEBUG_HANDLER.load(Ordering::Acquire);
        if hook != 0 {
            // SAFETY: non-zero values are `DebugHandler`s that `set_debug_handler` stored.
            let hook = unsafe { core::mem::transmute::<usize, DebugHandler>(hook) };
            hook(frame);
            return;
        }
    }
    if vector == Vector::PF && repair_stack_page(frame, &exception) {
        return;
    }
    if crate::catch::record_trap(vector, exception) {
        return;
    }
    if vector == Vector::NMI || vector.0 >= 32 {
        INTERRUPTED[cpu_index()].store(frame.rip, Ordering::Relaxed);
    }
    if vector == Vector::NMI
        && let Some(handler) = registered_handler(vector.0)
    {
        // An NMI is asynchronous: it belongs to its handler even inside `catch_exception`,
        // and needs no end of interrupt.
        handler(vector.0);
        return;
    }

    // A context made on a user stack belongs to code at CPL 3: resuming it at CPL 0 would
    // promote that code, so the exception goes to the innermost kernel context instead.
    let context = crate::catch::innermost_context_where(|stack| user_stack_owner(stack).is_none());
    if !context.is_null() && vector.0 < 32 {
        // SAFETY: a non-null context is the live `CatchContext` of a `catch_exception` call on
        // this CPU; its closure is what just faulted.
        let context = unsafe { &mut *context };
        context.exception = Some(exception);
        frame.rip = &raw const vmunit_try_recover as u64;
        frame.rsp = context.stack_pointer;
        frame.rflags = context.state;
        frame.cs = u64::from(selector::KERNEL_CODE);
        frame.ss = u64::from(selector::KERNEL_DATA);
        return;
    }

    if vector.0 >= 32 {
        if let Some(handler) = registered_handler(vector.0) {
            handler(vector.0);
            if vector.0 != super::apic::SPURIOUS_VECTOR {
                super::apic::end_of_interrupt();
            }
            return;
        }
        if vector.0 == super::apic::SPURIOUS_VECTOR {
            // A spurious interrupt needs no end of interrupt, and is no error.
            return;
        }
    }

    crate::console::emergency_unlock();
    crate::println!(
        "Unhandled exception {} {} at ip {:#018x}",
        vector.0,
        vector.name(),
        frame.rip
    );
    crate::println!(
        "error_code={:#018x} rflags={:#018x} cs={:#06x} ss={:#06x} cr2={:#018x}",
        frame.error_code,
        frame.rflags,
        frame.cs,
        frame.ss,
        read_cr2()
    );
    crate::println!(
        "rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx
    );
    crate::println!(
        "rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.rsp
    );
    crate::println!(
        "r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}",
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11
    );
    crate::println!(
        "r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15
    );
    crate::runtime::abort(format_args!(
        "unhandled exception {} at ip {:#x}",
        vector.name(),
        frame.rip
    ));
}

/// The user-mode stack of each CPU, in the image (whose pages user mode may access).
#[repr(C, align(16))]
struct UserStacks(core::cell::UnsafeCell<[[u8; USER_STACK_SIZE]; MAX_CPUS]>);
const USER_STACK_SIZE: usize = 8 * 1024;
// SAFETY: no Rust code reads or writes the stacks' bytes; only user-mode code on its own CPU.
unsafe impl Sync for UserStacks {}
static USER_STACKS: UserStacks = UserStacks(core::cell::UnsafeCell::new([[0; USER_STACK_SIZE]; MAX_CPUS]));

global_asm!(
    r#"
    .section .text.vmunit_user, "ax"
    /* vmunit_enter_user(data, function, stack_top): IRETQ to CPL 3 at vmunit_user_entry,
       with %rdi (data) and %rsi (function) kept for it. */
    .global vmunit_enter_user
    vmunit_enter_user:
        pushq ${user_data}
        pushq %rdx
        pushq $0x2                      /* RFLAGS: reserved bit 1; IF, AC and TF clear */
        pushq ${user_code}
        leaq vmunit_user_entry(%rip), %rax
        pushq %rax
        iretq
    /* At CPL 3: call function(data), then return to the kernel with a #UD at the
       known address vmunit_user_return. A #UD is delivered by every hypervisor; INT n from
       user mode is not (this project's kvm_pvm raises #UD for it: reproduce-int-n-user). */
    vmunit_user_entry:
        call *%rsi
    .global vmunit_user_return
    vmunit_user_return:
        ud2

    /* vmunit_enter_compatibility(code, stack_top): IRETQ to CPL 3 in compatibility mode
       (the 32-bit user code segment) at code. */
    .global vmunit_enter_compatibility
    vmunit_enter_compatibility:
        pushq ${user_data}
        pushq %rsi
        pushq $0x2
        pushq ${user_code32}
        pushq %rdi
        iretq
    "#,
    user_data = const selector::USER_DATA,
    user_code = const selector::USER_CODE,
    user_code32 = const selector::USER_CODE32,
    options(att_syntax)
);

unsafe extern "C" {
    fn vmunit_enter_user(data: *mut u8, function: extern "C" fn(*mut u8), stack_top: u64) -> !;
    fn vmunit_enter_compatibility(code: u64, stack_top: u64) -> !;
    static vmunit_user_return: u8;
}

/// The CPU whose user stack holds `address`, if one does.
pub(crate) fn user_stack_owner(address: u64) -> Option<usize> {
    let start = USER_STACKS.0.get() as u64;
    let index = (address.checked_sub(start)? / USER_STACK_SIZE as u64) as usize;
    (index < MAX_CPUS).then_some(index)
}

/// This CPU's user stack's top.
#[inline]
fn user_stack_top() -> u64 {
    USER_STACKS
        .0
        .get()
        .cast::<u8>()
        .wrapping_add((cpu_index() + 1) * USER_STACK_SIZE) as u64
}

/// Runs 32-bit code at `code` at CPL 3 in compatibility mode (the GDT's 32-bit user code
/// segment) on this CPU's user stack, and returns the exception that ends it: such code has
/// no other way back. `code` must be 32-bit code in the image (below 4 GiB), like the
/// runtime's own compatibility-mode routines (`syscall::compat_syscall`).
pub fn enter_compatibility_mode(code: u64) -> Exception {
    super::mmu::allow_user_access_to_image();
    let stack = user_stack_top();
    let outcome = catch_exception(|| {
        // SAFETY: the code runs at CPL 3 and can only leave through an exception, which the
        // enclosing catch turns into a return here; the stack is this CPU's user stack.
        unsafe { vmunit_enter_compatibility(code, stack) }
    });
    match outcome {
        Err(exception) => exception,
        Ok(()) => unreachable!("vmunit_enter_compatibility never returns"),
    }
}

/// Runs `function` at CPL 3 (user mode) on this CPU's user stack, with interrupts off, and
/// returns to the kernel: the closure's result, or the exception that ended it (a user-mode
/// #PF has the USER error-code bit set). The image's pages (code, data, stacks, so also what
/// the closure captured) are made user-accessible on first use; memory elsewhere is as the
/// page tables say.
///
/// The closure runs in ring 3: no port I/O (so no printing), no privileged instructions, no
/// heap.
pub fn run_in_user_mode<R, F: FnOnce() -> R>(function: F) -> Result<R, Exception> {
    super::mmu::allow_user_access_to_image();
    let mut call = crate::catch::Call::new(function);
    let data = call.as_data();
    let stack = user_stack_top();
    let outcome = catch_exception(|| {
        // SAFETY: `vmunit_enter_user` leaves through the #UD at `vmunit_user_return` or another
        // exception, which the enclosing catch turns into a return here; the stack is this
        // CPU's user stack.
        unsafe { vmunit_enter_user(data, crate::catch::Call::<F, R>::trampoline, stack) }
    });
    let returned = &raw const vmunit_user_return as u64;
    match outcome {
        Err(exception) if exception.vector == Vector::UD && exception.rip == returned => {
            call.into_result().ok_or(exception)
        }
        Err(exception) => Err(exception),
        Ok(()) => unreachable!("vmunit_enter_user never returns"),
    }
}

/// Per CPU: the address the latest interrupt or NMI arrived before.
static INTERRUPTED: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_CPUS];

/// In an interrupt handler (the NMI's too): the address of the instruction the interrupt
/// arrived before, where the handler returns to. Elsewhere: that of this CPU's latest one.
pub fn interrupted_address() -> u64 {
    INTERRUPTED[cpu_index()].load(Ordering::Relaxed)
}

/// An interrupt number: an IDT vector.
pub type InterruptNumber = u8;

/// An interrupt handler: runs in interrupt context with the vector it was registered for; the
/// runtime signals the APIC's end of interrupt after it returns. It must not allocate (the
/// heap's lock does not mask interrupts) and should only record what happened.
pub type InterruptHandler = fn(vector: InterruptNumber);

#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The handler of each vector (as usize; 0: none). Shared by all CPUs.
static INTERRUPT_HANDLERS: [AtomicUsize; 256] = [NO_HANDLER; 256];

/// Installs `handler` for interrupt `vector` (32..=255, or 2 for the NMI), or removes it with
/// `None`; an interrupt on a vector without one is an unexpected exception, which ends the
/// test. The NMI handler runs on the CPU's IST stack, and there is no end of interrupt for it.
///
/// # Panics
/// For an exception vector (below 32) other than the NMI's.
pub fn set_interrupt_handler(vector: InterruptNumber, handler: Option<InterruptHandler>) {
    assert!(
        vector >= 32 || vector == Vector::NMI.0,
        "vector {vector} is an exception, not an interrupt"
    );
    let value = handler.map_or(0, |handler| handler as usize);
    INTERRUPT_HANDLERS[usize::from(vector)].store(value, Ordering::Release);
}

/// A #DB handler that takes every #DB (on any CPU) instead of the usual dispatch, and resumes
/// with the frame it may edit (RF after an instruction breakpoint, TF cleared, ...).
pub type DebugHandler = fn(frame: &mut ExceptionFrame);

/// The installed [`DebugHandler`] (as usize; 0: none).
static DEBUG_HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs `handler` for every #DB, or removes it with `None`; `vmunit::arch::debug` records
/// #DBs with it. It must not allocate or take locks.
pub fn set_debug_handler(handler: Option<DebugHandler>) {
    DEBUG_HANDLER.store(handler.map_or(0, |handler| handler as usize), Ordering::Release);
}

/// Lets `INT vector` run at CPL 3 (gate DPL 3) or not (DPL 0: #GP from CPL 3), on every CPU.
///
/// # Panics
/// For an exception vector (below 32).
pub fn set_gate_user_callable(vector: u8, callable: bool) {
    assert!(vector >= 32, "vector {vector} is an exception, not an interrupt");
    let idt = IDT.get().expect("the IDT is built at boot");
    let privilege = if callable {
        x86_64::PrivilegeLevel::Ring3
    } else {
        x86_64::PrivilegeLevel::Ring0
    };
    // SAFETY: as in `set_gate_present`: one gate rewritten in place, with its DPL changed.
    let table = unsafe { &mut *idt.0.get() };
    install(&mut table[vector], vector).set_privilege_level(privilege);
}

/// The handler registered for `vector`, if any.
fn registered_handler(vector: u8) -> Option<InterruptHandler> {
    let handler = INTERRUPT_HANDLERS[usize::from(vector)].load(Ordering::Acquire);
    // SAFETY: non-zero entries are `InterruptHandler`s that `set_interrupt_handler` stored; a
    // fn pointer and a usize have the same size.
    (handler != 0).then(|| unsafe { core::mem::transmute::<usize, InterruptHandler>(handler) })
}

/// Enables interrupts and halts until one arrives, then disables them again.
pub fn wait_for_interrupt() {
    // SAFETY: STI;HLT is the architectural idle sequence; the interrupt shadow of STI makes
    // the pair atomic, and CLI restores the runtime's interrupts-off default.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}
