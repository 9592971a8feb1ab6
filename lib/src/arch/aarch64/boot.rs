//! aarch64 early boot: the ELF entry `_start`, the PSCI CPU_ON entry of secondary CPUs, EL2
//! (stay there with VHE when the test asks for it, else drop to EL1: [`El2Boot`]), and the boot page tables that turn the MMU on before any Rust code runs.
//!
//! QEMU enters `_start` at EL1 (EL2 with `-M virt,virtualization=on`) with the MMU and caches
//! off, x0 = 0 for an ELF kernel (the DTB then sits at RAM base) and CPACR_EL1.FPEN = 0. The
//! target is hard-float, so FP/SIMD is enabled first (and SVE and SME at their largest vector
//! lengths, where the CPU has them, CPTR_EL2.TZ and TSM clear when entered at EL2). With the MMU off every data access is
//! Device memory, where unaligned accesses and exclusives (spin locks) fault: the assembly builds
//! a minimal identity map (0..1 GiB device, 1..4 GiB normal write-back, 1 GiB blocks) and turns
//! the MMU on before calling Rust. Rust's `mmu` module then edits these tables in place. What
//! was written with the MMU off (the BSS and its boot tables) went straight to memory: its
//! cache lines are invalidated before the MMU and caches go on, so no stale line can hide it.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU8, Ordering};

use aarch64_cpu::registers::{CPACR_EL1, SCTLR_EL1};

use super::device_tree::{self, MAX_MEMORY_RANGES, Platform};
use super::smp::{EXCEPTION_STACK_SIZE, MAX_CPUS, STACK_SIZE};
use super::{exceptions, exit, fw_cfg, mmu};

/// MAIR_EL1: attribute 0 is Device-nGnRnE, attribute 1 Normal write-back (read/write allocate),
/// attribute 2 Tagged Normal write-back (0xF0, FEAT_MTE2: accesses are tag checked). Only
/// `mte::TaggedPage` maps pages with attribute 2, and only on a CPU that has FEAT_MTE2.
pub(crate) const MAIR: u64 = (MAIR_TAGGED_NORMAL as u64) << 16 | 0xff << 8;
/// The MAIR attribute byte of Tagged Normal memory (Arm ARM, MAIR_EL1.Attr\<n\>, FEAT_MTE2).
pub const MAIR_TAGGED_NORMAL: u8 = 0xf0;
/// The MAIR index of device memory.
pub(crate) const ATTRIBUTE_DEVICE: u64 = 0;
/// The MAIR index of normal memory.
pub(crate) const ATTRIBUTE_NORMAL: u64 = 1;
/// The MAIR index of Tagged Normal memory.
pub(crate) const ATTRIBUTE_TAGGED_NORMAL: u64 = 2;
/// TCR_EL1 without IPS: T0SZ = 16 (48-bit VA, 4 levels from level 0), inner/outer write-back
/// walks, inner shareable, 4 KiB granule, EPD1 (no TTBR1 walks).
const TCR_BASE: u64 = 16 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23;
/// SCTLR_EL1's v8.0 RES1 bits (SPAN among them: PSTATE.PAN stays 0).
const SCTLR_RES1: u64 = 0x30d0_0800;
/// SCTLR_EL1: the RES1 bits, then M, C and I.
const SCTLR: u64 =
    SCTLR_RES1 | SCTLR_EL1::M::Enable.value | SCTLR_EL1::C::Cacheable.value | SCTLR_EL1::I::Cacheable.value;
/// CPACR_EL1: FPEN lets FP/SIMD instructions run at EL0 and EL1 without traps.
const CPACR: u64 = CPACR_EL1::FPEN::TrapNothing.value;
/// CPACR_EL1.ZEN = 0b11: SVE instructions (and ZCR_EL1) run at EL0 and EL1 without traps; set
/// only where ID_AA64PFR0_EL1.SVE says SVE is implemented.
const CPACR_ZEN: u64 = 3 << 16;
/// CPACR_EL1.SMEN = 0b11: SME instructions (SMSTART, RDSVL, ZA, SMCR_EL1, SVCR) run at EL0 and
/// EL1 without traps; set only where ID_AA64PFR1_EL1.SME says SME is implemented.
pub(crate) const CPACR_SMEN: u64 = 3 << 24;

/// HCR_EL2 of a test that runs at EL2: E2H (bit 34, the EL2&0 regime: EL1 register names reach
/// their EL2 registers), RW (bit 31) and TGE (bit 27: exceptions and interrupts of EL0 and EL2
/// go to EL2). kvm-unit-tests' arm/cstart64.S sets the same when entered at EL2 with VHE.
pub const HCR_VHE: u64 = 1 << 34 | 1 << 31 | 1 << 27;

const _: () = assert!(MAIR == 0xf0_ff00);
const _: () = assert!(TCR_BASE == 0x80_3510);
const _: () = assert!(SCTLR == 0x30d0_1805);
const _: () = assert!(CPACR == 3 << 20);
const _: () = assert!(
    STACK_SIZE == 64 * 1024 && EXCEPTION_STACK_SIZE == 16 * 1024 && MAX_CPUS == 64,
    "link.ld reserves 64 stacks of 64 KiB and 64 exception stacks of 16 KiB"
);

global_asm!(
    r#"
    .section .bss.vmunit_page_tables, "aw", @nobits
    .balign 4096
    .global vmunit_boot_l0
    vmunit_boot_l0: .skip 4096
    vmunit_boot_l1: .skip 4096

    .section .text.boot, "ax"
    .global _start
    _start:
        mov x19, x0                     /* the DTB address, or 0 */
        bl vmunit_to_el1
        bl vmunit_enable_fp

        /* Clear the BSS (the boot page tables live there too), MMU still off. */
        adrp x9, __bss_start
        add x9, x9, :lo12:__bss_start
        adrp x10, __bss_end
        add x10, x10, :lo12:__bss_end
    1:  cmp x9, x10
        b.hs 2f
        stp xzr, xzr, [x9], #16
        b 1b
    2:
        /* L0[0] -> L1; L1[0]: 0..1 GiB device; L1[1..4]: 1..4 GiB normal, EL1 only. */
        adrp x9, vmunit_boot_l0
        adrp x10, vmunit_boot_l1
        orr x11, x10, #3
        str x11, [x9]
        movz x11, #0x0401               /* block, attribute 0, AF */
        movk x11, #0x0060, lsl #48      /* PXN, UXN */
        str x11, [x10]
        movz x11, #0x0705               /* block, attribute 1, inner shareable, AF */
        movk x11, #0x4000, lsl #16
        str x11, [x10, #8]
        movz x12, #0x4000, lsl #16        /* 1 GiB */
        add x11, x11, x12
        str x11, [x10, #16]
        add x11, x11, x12
        str x11, [x10, #24]

        /* The BSS, boot tables included, was written with the MMU off, straight to memory:
         * drop any stale cache lines of it before cacheable accesses and table walks begin. */
        adrp x9, __bss_start
        add x9, x9, :lo12:__bss_start
        adrp x10, __bss_end
        add x10, x10, :lo12:__bss_end
        mrs x12, ctr_el0
        ubfx x12, x12, #16, #4          /* DminLine: log2 of the line size in words */
        mov x13, #4
        lsl x13, x13, x12
        sub x12, x13, #1
        bic x9, x9, x12
    6:  dc ivac, x9
        add x9, x9, x13
        cmp x9, x10
        b.lo 6b
        dsb sy

        bl vmunit_enable_mmu
        mov x0, x19
        mov x1, #0
        mov x2, x20
        b vmunit_enter_rust

    /* PSCI CPU_ON entry of a secondary CPU: x0 = its CPU index (the context id). */
    .global vmunit_secondary_entry
    vmunit_secondary_entry:
        mov x19, x0
        bl vmunit_to_el1
        bl vmunit_enable_fp
        bl vmunit_enable_mmu
        mov x0, #0
        mov x1, x19
        b vmunit_enter_rust

    /* x0: rust_entry's argument; x1: CPU index; x2: what vmunit_to_el1 did (boot CPU). SP_EL1 gets that CPU's exception stack, and
     * the kernel runs on SP_EL0 (EL1t) with that CPU's stack: a kernel stack overflow then
     * faults onto a stack that still works. */
    vmunit_enter_rust:
        msr spsel, #1
        add x10, x1, #1
        adrp x9, __exception_stacks_start
        add x9, x9, :lo12:__exception_stacks_start
        add x9, x9, x10, lsl #14        /* top of exception stack number x1 (16 KiB each) */
        mov sp, x9
        msr spsel, #0
        adrp x9, __stacks_start
        add x9, x9, :lo12:__stacks_start
        add x9, x9, x10, lsl #16        /* top of stack number x1 (64 KiB each) */
        mov sp, x9
        msr tpidr_el1, x1
        mov x29, #0
        mov x30, #0
        cbnz x1, 3f
        mov x1, x2
        bl {rust_entry}
        b .
    3:  mov x0, x1
        bl {secondary_entry}
        b .

    /* CPACR_EL1.FPEN: no FP/SIMD traps; with SVE (ID_AA64PFR0_EL1.SVE) also CPACR_EL1.ZEN and
     * ZCR_EL1.LEN = 0xf (the largest vector length the CPU offers); with SME
     * (ID_AA64PFR1_EL1.SME) also CPACR_EL1.SMEN and SMCR_EL1.LEN = 0xf (the largest streaming
     * vector length; FA64 and EZT0 clear). Clobbers x9, x10, x11. */
    vmunit_enable_fp:
        mov x9, #{cpacr}
        mrs x10, id_aa64pfr0_el1
        ubfx x10, x10, #32, #4
        cbz x10, 12f
        orr x9, x9, #{cpacr_zen}
    12: mrs x11, id_aa64pfr1_el1
        ubfx x11, x11, #24, #4
        cbz x11, 14f
        orr x9, x9, #{cpacr_smen}
    14: msr cpacr_el1, x9
        isb
        cbz x10, 13f
        mov x9, #0xf
        msr S3_0_C1_C2_0, x9            /* ZCR_EL1 */
        isb
    13: cbz x11, 15f
        mov x9, #0xf
        msr S3_0_C1_C2_6, x9            /* SMCR_EL1 */
        isb
    15: ret

    /* Entered at EL2, stays there with VHE (HCR_EL2.E2H and TGE set) when the test asks
     * for EL2 (`vmunit::main!(main, el2)` sets vmunit_el2_choice) and the CPU has FEAT_VHE
     * (ID_AA64MMFR1_EL1.VH); otherwise returns at EL1h (interrupts masked). x20 says which:
     * 0 entered at EL1, 1 dropped to EL1 (the test runs at EL1), 2 dropped for want of VHE,
     * 3 stayed at EL2 with VHE. Clobbers x9, x10. */
    vmunit_to_el1:
        mov x20, #0
        mrs x9, CurrentEL
        cmp x9, #(2 << 2)
        b.ne 4f
        mov x20, #1
        adrp x9, vmunit_el2_choice
        ldrb w9, [x9, :lo12:vmunit_el2_choice]
        cbz w9, 7f
        mov x20, #2
        mrs x9, id_aa64mmfr1_el1
        ubfx x9, x9, #8, #4             /* VH */
        cbz x9, 7f
        mov x20, #3
        ldr x9, ={hcr_vhe}
        msr hcr_el2, x9
        isb
        /* With E2H the _EL1 names of SCTLR, TCR, TTBR0, MAIR, VBAR, ELR, SPSR, ESR, FAR,
         * CPACR (CPTR_EL2 in CPACR's layout) and ZCR reach their EL2 registers, and the EL0
         * timer names the EL2 timers: the rest of the boot runs unchanged. */
        mov x9, #3                      /* CNTHCTL_EL2 (E2H layout): EL0PCTEN | EL0VCTEN */
        msr cnthctl_el2, x9
        msr cntvoff_el2, xzr
        msr hstr_el2, xzr
        mrs x9, id_aa64pfr0_el1
        ubfx x9, x9, #24, #4            /* GIC system registers implemented? */
        cbz x9, 8f
        mov x9, #0xf                    /* ICC_SRE_EL2: SRE (ICC_* at EL2), DFB, DIB, Enable */
        msr icc_sre_el2, x9
        isb
    8:  ret
    7:  mov x9, #(1 << 31)              /* HCR_EL2.RW: EL1 is AArch64 */
        msr hcr_el2, x9
        mov x9, #3                      /* CNTHCTL_EL2.EL1PCTEN | EL1PCEN */
        msr cnthctl_el2, x9
        msr cntvoff_el2, xzr
        mov x9, #0x33ff                 /* CPTR_EL2: no FP/SIMD traps (TFP clear) */
        mrs x10, id_aa64pfr0_el1
        ubfx x10, x10, #32, #4          /* SVE implemented? TZ (bit 8) then traps it */
        cbz x10, 10f
        bic x9, x9, #(1 << 8)
    10: mrs x11, id_aa64pfr1_el1
        ubfx x11, x11, #24, #4          /* SME implemented? TSM (bit 12) then traps it */
        cbz x11, 16f
        bic x9, x9, #(1 << 12)
    16: msr cptr_el2, x9
        isb
        cbz x10, 11f
        mov x9, #0xf
        msr S3_4_C1_C2_0, x9            /* ZCR_EL2.LEN: EL1 may use every vector length */
    11: cbz x11, 17f
        mov x9, #0xf
        msr S3_4_C1_C2_6, x9            /* SMCR_EL2.LEN: EL1 may use every streaming length */
        isb
    17:
        msr hstr_el2, xzr
        mrs x9, id_aa64pfr0_el1
        ubfx x9, x9, #24, #4            /* GIC system registers implemented? */
        cbz x9, 5f
        mov x9, #0xf                    /* ICC_SRE_EL2: SRE, DFB, DIB, Enable (EL1 may use SRE) */
        msr icc_sre_el2, x9
    5:  mrs x9, midr_el1
        msr vpidr_el2, x9
        mrs x9, mpidr_el1
        msr vmpidr_el2, x9
        mov x9, #0x3c5                  /* EL1h, DAIF masked */
        msr spsr_el2, x9
        msr elr_el2, x30
        eret
    4:  ret
    .ltorg

    /* Loads MAIR, TCR and TTBR0 with the boot tables and turns the MMU and caches on. */
    vmunit_enable_mmu:
        movz x9, #{mair_low}
        movk x9, #{mair_high}, lsl #16
        msr mair_el1, x9
        mrs x10, id_aa64mmfr0_el1
        and x10, x10, #0xf              /* PARange, capped at 48 bits */
        mov x11, #5
        cmp x10, x11
        csel x10, x10, x11, ls
        movz x9, #{tcr_low}
        movk x9, #{tcr_high}, lsl #16
        orr x9, x9, x10, lsl #32        /* IPS */
        msr tcr_el1, x9
        adrp x9, vmunit_boot_l0
        msr ttbr0_el1, x9
        dsb sy
        tlbi vmalle1
        dsb nsh
        isb
        movz x9, #{sctlr_low}
        movk x9, #{sctlr_high}, lsl #16
        msr sctlr_el1, x9
        isb
        ret
    "#,
    rust_entry = sym rust_entry,
    hcr_vhe = const HCR_VHE,
    secondary_entry = sym super::smp::secondary_entry,
    mair_low = const MAIR & 0xffff,
    mair_high = const MAIR >> 16,
    cpacr = const CPACR,
    cpacr_zen = const CPACR_ZEN,
    cpacr_smen = const CPACR_SMEN,
    tcr_low = const TCR_BASE & 0xffff,
    tcr_high = const TCR_BASE >> 16,
    sctlr_low = const SCTLR & 0xffff,
    sctlr_high = const SCTLR >> 16,
);

unsafe extern "C" {
    /// The PSCI CPU_ON entry point of secondary CPUs (x0 = CPU index), defined above.
    pub(crate) static vmunit_secondary_entry: u8;
}

unsafe extern "C" {
    static __image_end: u8;
}

/// What the boot did with EL2, as `vmunit_to_el1` put it in x20 (see [`El2Boot`]).
static EL2_BOOT: AtomicU8 = AtomicU8::new(0);

/// What the boot did with EL2: a test states that it runs at EL2 with `vmunit::main!(main, el2)`
/// (kvm-unit-tests runs at EL2 under QEMU's `virtualization=on`); the machine decides whether
/// it enters the kernel at EL2 (`-M virt,virtualization=on`) and whether the CPU has VHE.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum El2Boot {
    /// QEMU entered the kernel at EL1: the machine has no EL2.
    EnteredAtEl1,
    /// Entered at EL2; the test runs at EL1 (it did not ask for EL2), the boot dropped to it.
    Dropped,
    /// Entered at EL2 and the test asked for EL2, but the CPU has no FEAT_VHE
    /// (ID_AA64MMFR1_EL1.VH = 0; e.g. `-cpu cortex-a57`): the runtime needs VHE's EL1 register
    /// redirection at EL2, so the boot dropped to EL1.
    DroppedWithoutVhe,
    /// Entered at EL2, the test asked for it and the CPU has VHE: the kernel runs at EL2 with
    /// HCR_EL2.{E2H, TGE} = {1, 1} ([`HCR_VHE`]).
    Vhe,
}

impl El2Boot {
    /// What the boot did with EL2.
    pub fn get() -> El2Boot {
        match EL2_BOOT.load(Ordering::Relaxed) {
            1 => El2Boot::Dropped,
            2 => El2Boot::DroppedWithoutVhe,
            3 => El2Boot::Vhe,
            _ => El2Boot::EnteredAtEl1,
        }
    }

    /// Why the kernel does not run at EL2, for a test that asked for it (`None` at EL2).
    pub fn reason_not_at_el2(self) -> Option<&'static str> {
        match self {
            El2Boot::Vhe => None,
            El2Boot::EnteredAtEl1 => {
                Some("QEMU entered at EL1 (the machine needs virtualization=on for EL2)")
            }
            El2Boot::Dropped => Some("the test does not ask for EL2 (vmunit::main!(main, el2))"),
            El2Boot::DroppedWithoutVhe => {
                Some("the CPU has no FEAT_VHE (ID_AA64MMFR1_EL1.VH = 0), which the runtime needs at EL2")
            }
        }
    }
}

/// The fw_cfg file the runner puts the guest environment in (see runner/src/qemu.rs).
const ENVIRONMENT_FILE: &str = "opt/vmunit/environment";
/// The most environment bytes read from fw_cfg.
const ENVIRONMENT_CAPACITY: usize = 4096;

/// The machine as the device tree describes it, for `crate::runtime::start`.
struct VirtBoot {
    platform: &'static Platform,
    environment: heapless::Vec<u8, ENVIRONMENT_CAPACITY>,
    free: heapless::Vec<(u64, u64), MAX_MEMORY_RANGES>,
}

impl crate::arch::Boot for VirtBoot {
    fn command_line(&self) -> &str {
        self.platform.bootargs()
    }

    fn environment(&self) -> &[u8] {
        &self.environment
    }

    fn free_memory(&self) -> &[(u64, u64)] {
        &self.free
    }

    fn start_machine(&self) {
        mmu::init();
    }
}

/// Called by the boot assembly with the MMU on, on the boot CPU's stack, with x0 from QEMU and
/// what the boot did with EL2: the vectors, the device tree and the guest environment, then the
/// generic runtime.
extern "C" fn rust_entry(x0: u64, el2: u64) -> ! {
    EL2_BOOT.store(el2 as u8, Ordering::Relaxed);
    exceptions::init();
    let platform = match device_tree::init(x0) {
        Ok(platform) => platform,
        Err(problem) => early_failure(problem),
    };
    if platform.uart.is_none() {
        early_failure("the DTB names no arm,pl011 UART");
    }
    let mut environment = heapless::Vec::new();
    if let Some((start, end)) = platform.initrd {
        // SAFETY: QEMU loaded the initrd (the runner's environment) at this RAM range, which
        // nothing has written yet; it is identity mapped.
        let bytes =
            unsafe { core::slice::from_raw_parts(start as usize as *const u8, (end - start) as usize) };
        // Cannot fail: the slice is cut to the capacity.
        let _ = environment.extend_from_slice(&bytes[..bytes.len().min(ENVIRONMENT_CAPACITY)]);
    } else if let Some(device) = fw_cfg::FwCfg::find() {
        let mut buffer = [0; ENVIRONMENT_CAPACITY];
        if let Some(length) = device.read_file(ENVIRONMENT_FILE, &mut buffer) {
            // Cannot fail: `read_file` fills at most the buffer.
            let _ = environment.extend_from_slice(&buffer[..length]);
        }
    }
    // RAM below the image's end holds the DTB and the image; the initrd was copied above.
    // The DTB stays readable after boot (device_tree reads some nodes on first use): when it
    // lies above the image, free memory starts past it.
    let image_end = (&raw const __image_end as u64).max(platform.dtb_address + platform.dtb_size);
    let free = platform
        .memory()
        .iter()
        .map(|&(start, end)| (start.max(image_end), end))
        .collect();
    crate::runtime::start(&VirtBoot {
        platform,
        environment,
        free,
    })
}

/// Before the console works there is no way to report anything: this ends the VM. With the
/// DTB found, the reason is printed first, straight to the PL011.
fn early_failure(problem: &str) -> ! {
    // The PL011 of `virt` is at this address even when the DTB is missing.
    const VIRT_PL011: u64 = 0x0900_0000;
    let label = vmunit_protocol::AbortLine::<&str>::LABEL;
    for byte in label
        .bytes()
        .chain(*b" boot: ")
        .chain(problem.bytes())
        .chain(*b"\r\n")
    {
        // SAFETY: a byte to the `virt` PL011's data register, device-mapped by the boot tables;
        // if the machine has no UART there the write is ignored by QEMU.
        unsafe { (VIRT_PL011 as usize as *mut u32).write_volatile(u32::from(byte)) };
    }
    exit::power_off()
}
