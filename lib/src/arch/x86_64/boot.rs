//! x86_64 early boot: the PVH ELF note, the 32-bit PVH entry and the switch to long mode.
//!
//! QEMU's `-kernel` loads the ELF and enters `pvh_start32` in 32-bit protected mode with paging
//! off and `%ebx` pointing at the `hvm_start_info` (see [`super::start_info`]). The trampoline
//! clears the BSS, identity maps the first 4 GiB with 2 MiB pages, enables long mode and calls
//! [`rust_entry`] on the boot stack. Rust code replaces these page tables, the GDT and
//! the IDT as soon as it runs.

use core::arch::global_asm;
use core::mem::size_of;

use super::start_info::{self, BootInfo};
use super::{MAPPED_MEMORY_END, acpi, apic, exceptions, mmu, smp};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note type that carries the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// An ELF note with a 4-byte name, laid out as the ELF specification requires.
#[repr(C, packed(4))]
struct ElfNote<Descriptor> {
    name_size: u32,
    descriptor_size: u32,
    kind: u32,
    name: [u8; 4],
    descriptor: Descriptor,
}

/// The physical address of the 32-bit entry point, as stored in the PVH note.
#[repr(transparent)]
struct EntryAddress(*const u8);

// SAFETY: the address is only read (by QEMU, from the ELF file); it is never dereferenced.
unsafe impl Sync for EntryAddress {}

unsafe extern "C" {
    /// The 32-bit PVH entry, defined in the assembly below.
    static pvh_start32: u8;
}

/// The PVH note: QEMU boots an ELF64 through `-kernel` only when it carries this note.
/// QEMU reads the low 32 bits of the descriptor (Linux uses the same pointer-sized form).
#[unsafe(link_section = ".note.Xen")]
#[used]
static PVH_NOTE: ElfNote<EntryAddress> = ElfNote {
    name_size: 4,
    descriptor_size: size_of::<EntryAddress>() as u32,
    kind: XEN_ELFNOTE_PHYS32_ENTRY,
    name: *b"Xen\0",
    descriptor: EntryAddress(&raw const pvh_start32),
};

const _: () = assert!(size_of::<ElfNote<EntryAddress>>() == 24);
const _: () = assert!(core::mem::align_of::<ElfNote<EntryAddress>>() == 4);

// The boot page tables: one PML4, one PDPT and four page directories of 2 MiB pages.
global_asm!(
    r#"
    .section .bss.boot_page_tables, "aw", @nobits
    .balign 4096
    boot_pml4: .skip 4096
    boot_pdpt: .skip 4096
    boot_pd:   .skip 4 * 4096

    .section .rodata.boot_gdt, "a"
    .balign 16
    boot_gdt:
        .quad 0
        .quad 0x00af9a000000ffff    /* 0x08: 64-bit ring-0 code */
        .quad 0x00cf92000000ffff    /* 0x10: ring-0 data */
    boot_gdt_end:
    boot_gdt_pointer:
        .word boot_gdt_end - boot_gdt - 1
        .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
    pvh_start32:
        cli
        cld
        mov %ebx, %esi                  /* keep the start_info address */

        /* Clear the BSS (the boot page tables live there too). */
        mov $__bss_start, %edi
        mov $__bss_end, %ecx
        sub %edi, %ecx
        shr $2, %ecx
        xor %eax, %eax
        rep stosl

        /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. */
        mov $boot_pdpt + 0x3, %eax
        mov %eax, boot_pml4
        mov $boot_pd + 0x3, %eax
        xor %ecx, %ecx
    1:  mov %eax, boot_pdpt(,%ecx,8)
        add $4096, %eax
        inc %ecx
        cmp $4, %ecx
        jne 1b

        /* 2048 present, writable, 2 MiB pages: identity map 0..4 GiB. */
        mov $0x83, %eax
        xor %ecx, %ecx
    2:  mov %eax, boot_pd(,%ecx,8)
        add $0x200000, %eax
        inc %ecx
        cmp $2048, %ecx
        jne 2b

        mov $boot_pml4, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x20, %eax                  /* CR4.PAE */
        mov %eax, %cr4
        mov $0xc0000080, %ecx           /* IA32_EFER */
        rdmsr
        or $0x100, %eax                 /* EFER.LME */
        wrmsr
        mov %cr0, %eax
        or $0x80010001, %eax            /* CR0.PG | CR0.WP | CR0.PE */
        mov %eax, %cr0
        lgdt boot_gdt_pointer
        ljmp $0x08, $long_mode_entry

    .code64
    long_mode_entry:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        mov $__boot_stack_top, %rsp
        xor %ebp, %ebp
        mov %esi, %edi                  /* rust_entry(start_info_address) */
        call {rust_entry}
        ud2
    "#,
    rust_entry = sym rust_entry,
    options(att_syntax)
);

/// The first MiB holds firmware data and the PVH structures: never handed out.
const LOW_MEMORY_END: u64 = 1 << 20;
/// The most free ranges: each RAM range may be cut in two by the image.
const MAX_FREE_RANGES: usize = start_info::MAX_MEMORY_MAP_ENTRIES * 2;

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The machine as the PVH start info describes it, for `crate::runtime::start`.
struct PvhBoot {
    info: BootInfo,
    free: heapless::Vec<(u64, u64), MAX_FREE_RANGES>,
}

impl crate::arch::Boot for PvhBoot {
    fn command_line(&self) -> &str {
        self.info.command_line()
    }

    fn environment(&self) -> &[u8] {
        &self.info.environment
    }

    fn free_memory(&self) -> &[(u64, u64)] {
        &self.free
    }

    fn start_machine(&self) {
        mmu::init();
        mmu::set_ram(self.info.ram());
        apic::enable();
        acpi::set_rsdp_hint(self.info.rsdp_address);
        smp::init();
    }
}

/// Called by the boot assembly in long mode, on the boot stack, with the PVH start info: the
/// GDT and IDT and the start info, then the generic runtime.
extern "C" fn rust_entry(start_info_address: u32) -> ! {
    exceptions::init_cpu(0);
    // SAFETY: `start_info_address` is %ebx from the PVH entry, and nothing has written to
    // low memory yet.
    let info = unsafe { BootInfo::read(start_info_address) };
    let image = (&raw const __image_start as u64, &raw const __image_end as u64);
    let mut free = heapless::Vec::new();
    for (start, end) in info.ram() {
        let start = start.max(LOW_MEMORY_END);
        let end = end.min(MAPPED_MEMORY_END);
        // Cut the image out of the range.
        for (piece_start, piece_end) in [(start, end.min(image.0)), (start.max(image.1), end)] {
            if piece_start < piece_end {
                // Ranges beyond the capacity are left out.
                let _ = free.push((piece_start, piece_end));
            }
        }
    }
    crate::runtime::start(&PvhBoot { info, free })
}
