//! x86_64 SMP: bringing up the application processors (INIT-SIPI-SIPI through a real-mode
//! trampoline below 1 MiB), per-CPU stacks, and running functions on other CPUs.
//!
//! Each CPU owns a 64 KiB slot of the linker script's stack region: an unmapped guard page,
//! its stack, its privilege stack (for entries from user mode) and its #DF/NMI/#MC stack. A CPU's index is therefore its stack pointer's slot:
//! cheap (it is read on every exception and `catch_exception`) and independent of anything a
//! test may change (GS_BASE, TSC_AUX), unlike CPUID's APIC ID, a VM exit of about 90 µs under
//! this project's software KVM. The CPU count comes from the ACPI MADT where there is one (pc,
//! q35), else from fw_cfg (`FW_CFG_NB_CPUS`), which microvm has too.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::instructions::rdtsc;
use super::{acpi, apic, fw_cfg};

/// The most CPUs the runtime brings up (the stack region's slots).
pub const MAX_CPUS: usize = 16;
/// One CPU's slot in the stack region.
const SLOT_SIZE: u64 = 64 * 1024;
const GUARD_SIZE: u64 = 4096;
/// The CPU's stack, above its guard page.
const STACK_SIZE: u64 = 40 * 1024;
/// Above it, the stack the CPU switches to when user-mode code is interrupted (TSS.RSP0).
const PRIVILEGE_STACK_SIZE: u64 = 8 * 1024;

/// Where the trampoline is copied: page 8, so that the SIPI vector is 0x08.
const TRAMPOLINE: u64 = 0x8000;
const SIPI_VECTOR: u32 = (TRAMPOLINE >> 12) as u32;

/// ICR: all excluding self, level assert, INIT.
const ICR_INIT_ALL_BUT_SELF: u32 = 0x000c_4500;
/// ICR: all excluding self, start-up to the trampoline's page.
const ICR_STARTUP_ALL_BUT_SELF: u32 = 0x000c_4600 | SIPI_VECTOR;

/// TSC ticks that are at least this long on a TSC of up to 3 GHz.
const TEN_MILLISECONDS: u64 = 30_000_000;
const TWO_HUNDRED_MICROSECONDS: u64 = 600_000;
const ONE_SECOND: u64 = 3_000_000_000;

unsafe extern "C" {
    static __cpu_stacks_start: u8;
    static vmunit_ap_trampoline_start: u8;
    static vmunit_ap_trampoline_end: u8;
    static vmunit_ap_cr3: u8;
    static vmunit_ap_efer: u8;
}

/// The next application processor's index: each one takes a ticket on entry.
static NEXT_INDEX: AtomicU32 = AtomicU32::new(1);
/// CPUs running, the boot CPU included.
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// The index a CPU restarted by [`reset_cpu`] takes in the trampoline instead of a new one
/// (`u32::MAX`: none).
static RESTART_INDEX: AtomicU32 = AtomicU32::new(u32::MAX);
/// How many times each CPU entered `ap_entry`.
static STARTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Each CPU's APIC ID, as it read it on entry.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn slot_base(index: usize) -> u64 {
    &raw const __cpu_stacks_start as u64 + index as u64 * SLOT_SIZE
}

/// The guard page below CPU `index`'s stack.
pub(crate) fn guard_page(index: usize) -> u64 {
    slot_base(index)
}

/// The top of CPU `index`'s privilege stack: where interrupts and exceptions from user mode
/// arrive (TSS.RSP0).
pub(crate) fn privilege_stack_top(index: usize) -> u64 {
    slot_base(index) + GUARD_SIZE + STACK_SIZE + PRIVILEGE_STACK_SIZE
}

/// The top of CPU `index`'s #DF/NMI/#MC stack (the rest of its slot, above the others).
pub(crate) fn emergency_stack_top(index: usize) -> u64 {
    slot_base(index) + SLOT_SIZE
}

/// The index of the running CPU: 0 for the boot CPU, then in the order the others came up.
#[inline]
pub fn cpu_index() -> usize {
    let stack: u64;
    // SAFETY: reading RSP has no effect.
    unsafe { asm!("mov {}, rsp", out(reg) stack, options(nomem, nostack, preserves_flags)) };
    let start = &raw const __cpu_stacks_start as u64;
    if let Some(slot) = stack
        .checked_sub(start)
        .map(|offset| (offset / SLOT_SIZE) as usize)
        && slot < MAX_CPUS
    {
        return slot;
    }
    // Kernel code on a CPU's user stack: a SYSCALL entry, which switches no stacks.
    // Anything else (a stack a test made up) counts as the boot CPU's.
    super::exceptions::user_stack_owner(stack).unwrap_or(0)
}

/// How many CPUs run (the boot CPU and the application processors that came up).
pub fn cpu_count() -> usize {
    ONLINE.load(Ordering::Acquire)
}

pub use crate::work::{Barrier, CpuSet, on_cpu, on_cpu_async, on_cpu_mask, on_cpu_mask_async, on_cpus};

/// Checks that CPU `cpu` runs, before work is posted to it.
///
/// # Panics
/// When it does not.
pub(crate) fn make_ready(cpu: usize) {
    assert!(
        cpu < cpu_count(),
        "CPU {cpu} is not running ({} are)",
        cpu_count()
    );
}

/// What a CPU does while it waits for work or for a job to finish: spin.
pub(crate) fn idle() {
    core::hint::spin_loop();
}

/// Tells waiting CPUs that a mailbox or a job changed: nothing to do, they spin.
pub(crate) fn wake() {}

/// Called by the trampoline in long mode, on the new CPU's own stack.
extern "C" fn ap_entry(index: u32) -> ! {
    let index = index as usize;
    super::exceptions::init_cpu(index);
    apic::refresh_mode();
    apic::enable();
    APIC_IDS[index].store(apic::id(), Ordering::Release);
    if STARTS[index].fetch_add(1, Ordering::AcqRel) == 0 {
        ONLINE.fetch_add(1, Ordering::AcqRel);
    }
    crate::work::serve(index)
}

/// The APIC ID of CPU `cpu`, as it read it when it came up.
pub fn apic_id_of(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Acquire)
}

/// How a [`reset_cpu`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    /// The INIT IPI was sent (its delivery status cleared).
    pub init_sent: bool,
    /// Both STARTUP IPIs were sent.
    pub startup_sent: bool,
    /// The CPU came back through the trampoline, in bounded time.
    pub restarted: bool,
}

/// Resets CPU `cpu` with an INIT IPI (it stops and waits for a STARTUP IPI, whatever it was
/// running: its job is abandoned), waits `stopped_for` milliseconds, then restarts it through
/// the trampoline with two STARTUP IPIs, and waits until it serves work again. `between` runs
/// while the CPU is held in INIT, to look at it.
///
/// # Panics
/// For the calling CPU, or one that is not running.
pub fn reset_cpu(cpu: usize, between: impl FnOnce()) -> Reset {
    assert!(
        cpu != cpu_index() && cpu < cpu_count(),
        "CPU {cpu} is not another running CPU"
    );
    let destination = apic_id_of(cpu);
    let starts = STARTS[cpu].load(Ordering::Acquire);
    let init_sent = apic::send_init(destination);
    delay(TEN_MILLISECONDS);
    between();
    crate::work::abandon(cpu);
    RESTART_INDEX.store(cpu as u32, Ordering::Release);
    let mut startup_sent = apic::send_startup(destination, SIPI_VECTOR as u8);
    delay(TWO_HUNDRED_MICROSECONDS);
    // A second STARTUP, as the bring-up protocol has it, only if the first was not taken.
    if STARTS[cpu].load(Ordering::Acquire) == starts {
        startup_sent &= apic::send_startup(destination, SIPI_VECTOR as u8);
    }
    let start = rdtsc();
    while STARTS[cpu].load(Ordering::Acquire) == starts && rdtsc().wrapping_sub(start) < ONE_SECOND {
        core::hint::spin_loop();
    }
    let restarted = STARTS[cpu].load(Ordering::Acquire) != starts;
    // Where it never came back, no later CPU may take its index.
    RESTART_INDEX.store(u32::MAX, Ordering::Release);
    Reset {
        init_sent,
        startup_sent,
        restarted,
    }
}

fn delay(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Brings up the application processors that QEMU created (at most [`MAX_CPUS`] in all).
pub(crate) fn init() {
    APIC_IDS[0].store(apic::id(), Ordering::Release);
    let wanted = acpi::madt()
        .map(|madt| madt.processor_count)
        .filter(|count| *count > 0)
        .unwrap_or_else(|| usize::from(fw_cfg::read_u16(fw_cfg::CPU_COUNT)))
        .clamp(1, MAX_CPUS);
    if wanted == 1 {
        return;
    }
    for index in 1..wanted {
        // SAFETY: the guard page lies in the stack region, which nothing else uses.
        unsafe { super::mmu::unmap_page(guard_page(index)) };
    }
    let start = &raw const vmunit_ap_trampoline_start;
    let length = &raw const vmunit_ap_trampoline_end as usize - start as usize;
    let offset = |symbol: *const u8| symbol as u64 - start as u64;
    let (cr3, _) = x86_64::registers::control::Cr3::read();
    let efer = x86_64::registers::model_specific::Efer::read_raw();
    // SAFETY: page 8 (below 1 MiB) is identity mapped and used by nothing after boot: the
    // PVH start info was copied out, and the allocators start at 1 MiB. The trampoline
    // fits in it, and CR3 and EFER fit in their 32-bit fields (the tables and bits are below
    // 4 GiB and in the low word).
    unsafe {
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as usize as *mut u8, length);
    }
    let patch = |symbol: *const u8, value: u32| {
        // SAFETY: as above: the field lies inside the trampoline's copy.
        unsafe { ((TRAMPOLINE + offset(symbol)) as usize as *mut u32).write_volatile(value) };
    };
    patch(&raw const vmunit_ap_cr3, cr3.start_address().as_u64() as u32);
    patch(&raw const vmunit_ap_efer, efer as u32);

    // Whether each IPI went shows in how many CPUs come up, below.
    let _ = apic::send_command(0, ICR_INIT_ALL_BUT_SELF);
    delay(TEN_MILLISECONDS);
    let _ = apic::send_command(0, ICR_STARTUP_ALL_BUT_SELF);
    delay(TWO_HUNDRED_MICROSECONDS);
    let _ = apic::send_command(0, ICR_STARTUP_ALL_BUT_SELF);
    let start = rdtsc();
    while cpu_count() < wanted && rdtsc().wrapping_sub(start) < ONE_SECOND {
        core::hint::spin_loop();
    }
    if cpu_count() < wanted {
        crate::println!("INFO: only {} of {wanted} CPUs came up", cpu_count());
    }
}

// The trampoline, copied to TRAMPOLINE: real mode, then protected mode, then long mode with
// the boot CPU's page tables, then a jump to `vmunit_ap_long_mode` in the image.
global_asm!(
    r#"
    .section .rodata.vmunit_ap_trampoline, "a"
    .set TRAMPOLINE, {trampoline}
    .code16
    .global vmunit_ap_trampoline_start
    vmunit_ap_trampoline_start:
        cli
        cld
        xor %ax, %ax
        mov %ax, %ds
        lgdtl TRAMPOLINE + (ap_gdt_pointer - vmunit_ap_trampoline_start)
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $(TRAMPOLINE + (ap_protected - vmunit_ap_trampoline_start))
    .code32
    ap_protected:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %cr4, %eax
        or $0x20, %eax                  /* CR4.PAE */
        mov %eax, %cr4
        mov TRAMPOLINE + (vmunit_ap_cr3 - vmunit_ap_trampoline_start), %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx           /* IA32_EFER: the boot CPU's LME and NXE */
        rdmsr
        or TRAMPOLINE + (vmunit_ap_efer - vmunit_ap_trampoline_start), %eax
        wrmsr
        mov %cr0, %eax
        or $0x80010001, %eax            /* CR0.PG | CR0.WP | CR0.PE */
        mov %eax, %cr0
        ljmp $0x18, $(TRAMPOLINE + (ap_long - vmunit_ap_trampoline_start))
    .code64
    ap_long:
        movabs $vmunit_ap_long_mode, %rax
        jmp *%rax
    .balign 8
    ap_gdt:
        .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
        .quad 0x00cf92000000ffff        /* 0x10: data */
        .quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
    ap_gdt_pointer:
        .word 4 * 8 - 1
        .long TRAMPOLINE + (ap_gdt - vmunit_ap_trampoline_start)
    .global vmunit_ap_cr3
    vmunit_ap_cr3:
        .long 0
    .global vmunit_ap_efer
    vmunit_ap_efer:
        .long 0
    .global vmunit_ap_trampoline_end
    vmunit_ap_trampoline_end:

    .section .text.vmunit_ap_long_mode, "ax"
    .global vmunit_ap_long_mode
    vmunit_ap_long_mode:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        mov $-1, %eax                   /* a CPU that reset_cpu restarts keeps its index */
        xchg %eax, {restart_index}(%rip)
        cmp $-1, %eax
        jne 3f
        mov $1, %eax
        lock xadd %eax, {next_index}(%rip)
    3:  cmp ${max_cpus}, %eax
        jae 2f
        mov %eax, %edi                  /* ap_entry(index) */
        shl $16, %rax                   /* index * 64 KiB */
        movabs $__cpu_stacks_start + {stack_offset}, %rsp
        add %rax, %rsp
        xor %ebp, %ebp
        call {ap_entry}
    2:  cli                             /* more CPUs than slots: park this one */
        hlt
        jmp 2b
    "#,
    trampoline = const TRAMPOLINE,
    next_index = sym NEXT_INDEX,
    restart_index = sym RESTART_INDEX,
    max_cpus = const MAX_CPUS,
    stack_offset = const GUARD_SIZE + STACK_SIZE,
    ap_entry = sym ap_entry,
    options(att_syntax)
);

const _: () = assert!(SLOT_SIZE == 1 << 16, "vmunit_ap_long_mode shifts the index by 16");
const _: () = assert!(GUARD_SIZE + STACK_SIZE + PRIVILEGE_STACK_SIZE + 8 * 1024 <= SLOT_SIZE);
