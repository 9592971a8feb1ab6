//! x86_64 local APIC: identity, end of interrupt, inter-processor interrupts and the LVT
//! timer, in xAPIC mode (MMIO at 0xfee0_0000) or, per CPU after [`try_enable_x2apic`], in x2APIC
//! mode (MSRs 0x800 + offset / 16; a 64-bit ICR; the SELF IPI register).

use core::sync::atomic::{AtomicBool, Ordering};

use super::exceptions::Exception;
use super::msr::{
    ApicBaseFlags, IA32_APIC_BASE, IA32_X2APIC_BASE, IA32_X2APIC_SELF_IPI, try_rdmsr, try_wrmsr,
    try_wrmsr_unrestricted,
};
use super::smp::{MAX_CPUS, cpu_index};

/// The xAPIC's physical (and, identity mapped, virtual) address.
pub const BASE: u64 = 0xfee0_0000;

/// xAPIC register offsets (SDM Vol. 3, 11.4.1, Table 11-1); the x2APIC MSR of each is
/// [`msr_of`]`(offset)` (Table 11-6).
#[allow(missing_docs)]
pub mod register {
    pub const ID: u64 = 0x20;
    pub const VERSION: u64 = 0x30;
    pub const TASK_PRIORITY: u64 = 0x80;
    /// Arbitration priority: xAPIC only (no x2APIC MSR).
    pub const ARBITRATION_PRIORITY: u64 = 0x90;
    pub const PROCESSOR_PRIORITY: u64 = 0xa0;
    pub const END_OF_INTERRUPT: u64 = 0xb0;
    /// Remote read: xAPIC only (no x2APIC MSR).
    pub const REMOTE_READ: u64 = 0xc0;
    pub const LOGICAL_DESTINATION: u64 = 0xd0;
    /// Destination format: xAPIC only (x2APIC has cluster mode alone).
    pub const DESTINATION_FORMAT: u64 = 0xe0;
    pub const SPURIOUS: u64 = 0xf0;
    /// ISR bits 31:0; the eight registers run to `IN_SERVICE + 0x70`.
    pub const IN_SERVICE: u64 = 0x100;
    /// TMR bits 31:0; the eight registers run to `TRIGGER_MODE + 0x70`.
    pub const TRIGGER_MODE: u64 = 0x180;
    /// IRR bits 31:0; the eight registers run to `REQUEST + 0x70`.
    pub const REQUEST: u64 = 0x200;
    pub const ERROR_STATUS: u64 = 0x280;
    /// LVT CMCI: exists when the version register counts 7 or more LVT entries.
    pub const LVT_CMCI: u64 = 0x2f0;
    pub const COMMAND_LOW: u64 = 0x300;
    /// ICR bits 63:32: xAPIC only (the x2APIC ICR is one 64-bit MSR).
    pub const COMMAND_HIGH: u64 = 0x310;
    pub const TIMER: u64 = 0x320;
    pub const LVT_THERMAL: u64 = 0x330;
    pub const LVT_PERFORMANCE: u64 = 0x340;
    pub const LVT_LINT0: u64 = 0x350;
    pub const LVT_LINT1: u64 = 0x360;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL_COUNT: u64 = 0x380;
    pub const TIMER_CURRENT_COUNT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
    /// SELF IPI: x2APIC only (MSR 0x83f).
    pub const SELF_IPI: u64 = 0x3f0;
}

/// How an x2APIC register's MSR may be accessed (SDM Vol. 3, Table 11-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X2apicAccess {
    /// No register: RDMSR and WRMSR raise #GP.
    None,
    /// RDMSR only; WRMSR raises #GP.
    ReadOnly,
    /// WRMSR only (EOI, SELF IPI); RDMSR raises #GP.
    WriteOnly,
    /// RDMSR and WRMSR.
    ReadWrite,
}

impl X2apicAccess {
    /// Whether RDMSR may read the register.
    pub fn readable(self) -> bool {
        matches!(self, X2apicAccess::ReadOnly | X2apicAccess::ReadWrite)
    }

    /// Whether WRMSR may write the register.
    pub fn writable(self) -> bool {
        matches!(self, X2apicAccess::WriteOnly | X2apicAccess::ReadWrite)
    }
}

/// How register `offset` (a multiple of 16 below 0x1000) is accessed in x2APIC mode, on an
/// APIC whose version register counts `lvt_entries` LVT entries (the CMCI entry is the 7th).
pub fn x2apic_access(offset: u64, lvt_entries: u32) -> X2apicAccess {
    use register::*;
    match offset {
        ID | VERSION | PROCESSOR_PRIORITY | LOGICAL_DESTINATION | TIMER_CURRENT_COUNT => {
            X2apicAccess::ReadOnly
        }
        _ if [IN_SERVICE, TRIGGER_MODE, REQUEST]
            .iter()
            .any(|&base| (base..base + 0x80).contains(&offset)) =>
        {
            X2apicAccess::ReadOnly
        }
        TASK_PRIORITY | SPURIOUS | ERROR_STATUS | COMMAND_LOW | TIMER | LVT_THERMAL | LVT_PERFORMANCE
        | LVT_LINT0 | LVT_LINT1 | LVT_ERROR | TIMER_INITIAL_COUNT | TIMER_DIVIDE => X2apicAccess::ReadWrite,
        LVT_CMCI if lvt_entries >= 7 => X2apicAccess::ReadWrite,
        END_OF_INTERRUPT | SELF_IPI => X2apicAccess::WriteOnly,
        _ => X2apicAccess::None,
    }
}

/// The SDM's name of the APIC register at `offset`, for messages ("" for none).
pub fn register_name(offset: u64) -> &'static str {
    use register::*;
    match offset {
        ID => "ID",
        VERSION => "version",
        TASK_PRIORITY => "TPR",
        ARBITRATION_PRIORITY => "APR",
        PROCESSOR_PRIORITY => "PPR",
        END_OF_INTERRUPT => "EOI",
        REMOTE_READ => "RRD",
        LOGICAL_DESTINATION => "LDR",
        DESTINATION_FORMAT => "DFR",
        SPURIOUS => "SVR",
        0x100..0x180 => "ISR",
        0x180..0x200 => "TMR",
        0x200..0x280 => "IRR",
        ERROR_STATUS => "ESR",
        LVT_CMCI => "LVT CMCI",
        COMMAND_LOW => "ICR",
        COMMAND_HIGH => "ICR high",
        TIMER => "LVT timer",
        LVT_THERMAL => "LVT thermal",
        LVT_PERFORMANCE => "LVT performance",
        LVT_LINT0 => "LVT LINT0",
        LVT_LINT1 => "LVT LINT1",
        LVT_ERROR => "LVT error",
        TIMER_INITIAL_COUNT => "initial count",
        TIMER_CURRENT_COUNT => "current count",
        TIMER_DIVIDE => "divide configuration",
        SELF_IPI => "SELF IPI",
        _ => "",
    }
}

/// The number of LVT entries the version register counts (its bits 23:16 plus one).
pub fn lvt_entries() -> u32 {
    ((read(register::VERSION) >> 16) & 0xff) + 1
}

/// The spurious-interrupt vector the runtime programs.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// SVR bit 8: the APIC is software-enabled.
const SOFTWARE_ENABLE: u32 = 1 << 8;
/// ICR delivery status: the IPI is still being sent.
const COMMAND_PENDING: u32 = 1 << 12;
/// ICR destination shorthands.
const TO_SELF: u32 = 0b01 << 18;
/// ICR destination shorthand: every CPU, this one included (the destination is ignored).
pub const TO_ALL_INCLUDING_SELF: u32 = 0b10 << 18;
/// ICR destination shorthand: every CPU but this one (the destination is ignored).
pub const TO_ALL_EXCLUDING_SELF: u32 = 0b11 << 18;
/// ICR destination mode logical (bit 11): the destination is matched against each CPU's
/// LDR (and, in xAPIC mode, DFR's model) instead of its APIC ID.
pub const DESTINATION_LOGICAL: u32 = 1 << 11;
/// The xAPIC physical destination that reaches every CPU.
pub const XAPIC_BROADCAST: u32 = 0xff;
/// The x2APIC physical destination that reaches every CPU.
pub const X2APIC_BROADCAST: u32 = 0xffff_ffff;
/// DFR model flat (bits 31:28 = 1111): an 8-bit LDR mask, one bit per CPU.
pub const DESTINATION_FORMAT_FLAT: u32 = 0xffff_ffff;
/// DFR model cluster (bits 31:28 = 0000): LDR bits 31:28 name the cluster, 27:24 the CPUs.
pub const DESTINATION_FORMAT_CLUSTER: u32 = 0x0fff_ffff;
/// ICR delivery mode NMI (to a physical destination: the Self shorthand allows only Fixed).
const DELIVERY_NMI: u32 = 0b100 << 8;
/// ICR delivery mode SMI.
const DELIVERY_SMI: u32 = 0b010 << 8;
/// ICR delivery mode INIT.
const DELIVERY_INIT: u32 = 0b101 << 8;
/// ICR delivery mode STARTUP.
const DELIVERY_STARTUP: u32 = 0b110 << 8;
/// ICR level: assert (required for every delivery mode but INIT de-assert).
const ASSERT: u32 = 1 << 14;
/// LVT mask bit.
pub const MASKED: u32 = 1 << 16;
/// LVT timer mode: periodic (bits 18:17 = 01).
pub const TIMER_PERIODIC: u32 = 0b01 << 17;
/// LVT timer mode: TSC-deadline (bits 18:17 = 10), armed through IA32_TSC_DEADLINE.
pub const TIMER_TSC_DEADLINE: u32 = 0b10 << 17;

/// IA32_APIC_BASE.EN: the APIC is enabled.
const GLOBAL_ENABLE: u64 = ApicBaseFlags::LAPIC_ENABLE.bits();
/// IA32_APIC_BASE.EXTD: x2APIC mode.
const EXTENDED_MODE: u64 = ApicBaseFlags::X2APIC_ENABLE.bits();

/// Which CPUs run their APIC in x2APIC mode.
static X2APIC: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Whether this CPU's APIC is in x2APIC mode (as the runtime set it).
pub fn x2apic_mode() -> bool {
    X2APIC[cpu_index()].load(Ordering::Relaxed)
}

/// The x2APIC MSR of register `offset`.
pub fn msr_of(offset: u64) -> u32 {
    IA32_X2APIC_BASE + (offset >> 4) as u32
}

/// Reads an APIC register (through MMIO or its x2APIC MSR, as this CPU's mode says).
pub fn read(offset: u64) -> u32 {
    if x2apic_mode() {
        return try_rdmsr(msr_of(offset)).unwrap_or(0) as u32;
    }
    // SAFETY: the xAPIC page is identity mapped; reading its registers has no side effect
    // on memory (the offsets the runtime uses have none on the APIC either).
    unsafe { ((BASE + offset) as usize as *const u32).read_volatile() }
}

/// Writes an APIC register: a hardware poke (IPIs, timer, priorities), not a memory write.
pub fn write(offset: u64, value: u32) {
    if x2apic_mode() {
        let _ = try_wrmsr(msr_of(offset), u64::from(value));
        return;
    }
    // SAFETY: as for `read`; a register write changes APIC state, not memory.
    unsafe { ((BASE + offset) as usize as *mut u32).write_volatile(value) };
}

/// Switches this CPU's APIC to x2APIC mode (IA32_APIC_BASE.EXTD), or returns the #GP.
pub fn try_enable_x2apic() -> Result<(), Exception> {
    let base = try_rdmsr(IA32_APIC_BASE)?;
    // SAFETY: the base stays; the mode changes together with the runtime's record of it, with
    // no APIC access in between.
    unsafe { try_wrmsr_unrestricted(IA32_APIC_BASE, base | GLOBAL_ENABLE | EXTENDED_MODE)? };
    X2APIC[cpu_index()].store(true, Ordering::Relaxed);
    enable();
    Ok(())
}

/// Switches every running CPU's APIC to x2APIC mode; returns how many switched.
pub fn enable_x2apic_everywhere() -> usize {
    let switched = core::sync::atomic::AtomicUsize::new(0);
    super::smp::on_cpus(|| {
        if try_enable_x2apic().is_ok() {
            switched.fetch_add(1, Ordering::SeqCst);
        }
    });
    switched.load(Ordering::SeqCst)
}

/// Back from x2APIC to xAPIC mode the only legal way: disabled first, then enabled (the APIC's
/// state is reset on the way). Returns the #GP if a step faults.
pub fn try_return_to_xapic() -> Result<(), Exception> {
    let base = try_rdmsr(IA32_APIC_BASE)?;
    // SAFETY: as in `try_enable_x2apic`: the base stays and the record follows the mode.
    unsafe { try_wrmsr_unrestricted(IA32_APIC_BASE, base & !(GLOBAL_ENABLE | EXTENDED_MODE))? };
    X2APIC[cpu_index()].store(false, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { try_wrmsr_unrestricted(IA32_APIC_BASE, (base & !EXTENDED_MODE) | GLOBAL_ENABLE)? };
    enable();
    Ok(())
}

/// Reads this CPU's mode from IA32_APIC_BASE.EXTD into the runtime's record (after an INIT,
/// whatever the hypervisor made of it).
pub(crate) fn refresh_mode() {
    let extended = try_rdmsr(IA32_APIC_BASE).is_ok_and(|base| base & EXTENDED_MODE != 0);
    X2APIC[cpu_index()].store(extended, Ordering::Relaxed);
}

/// Sends an INIT IPI (level assert) to the CPU whose APIC ID is `destination`.
pub fn send_init(destination: u32) -> bool {
    send_command(destination, DELIVERY_INIT | ASSERT)
}

/// Sends a STARTUP IPI to the CPU whose APIC ID is `destination`: it starts in real mode at
/// `vector << 12`.
pub fn send_startup(destination: u32, vector: u8) -> bool {
    send_command(destination, DELIVERY_STARTUP | u32::from(vector))
}

/// WRMSR of `value` to IA32_APIC_BASE, or the exception (#GP for reserved bits or an illegal
/// mode change): disables, enables, switches modes or moves the APIC. Call [`resynchronize`]
/// afterwards so that the runtime's APIC accesses follow.
///
/// # Panics
/// When the base address in `value` (its bits below the CPU's physical-address width) leaves
/// the MMIO hole ([`super::device::HOLE`]): an APIC page there would hide RAM.
pub fn try_write_base(value: u64) -> Result<(), Exception> {
    let width_mask = (1u64 << super::probes::physical_address_bits()) - 1;
    let base = value & width_mask & !0xfff;
    assert!(
        super::device::HOLE.contains(&base),
        "IA32_APIC_BASE <- {value:#x} would move the APIC out of the MMIO hole, over RAM"
    );
    // SAFETY: the APIC page stays in the MMIO hole, where no Rust object lives; the runtime's
    // APIC accesses to a disabled, moved or switched APIC read all ones or fault, and its mode
    // record only chooses between MMIO and MSR access, both of which tolerate that.
    unsafe { try_wrmsr_unrestricted(IA32_APIC_BASE, value) }
}

/// Reads this CPU's mode from IA32_APIC_BASE into the runtime's record and, where the APIC is
/// enabled, software-enables it: after a test changed IA32_APIC_BASE itself.
pub fn resynchronize() {
    refresh_mode();
    if try_rdmsr(IA32_APIC_BASE).is_ok_and(|base| base & GLOBAL_ENABLE != 0) {
        enable();
    }
}

/// Software-enables this CPU's APIC, with spurious interrupts on [`SPURIOUS_VECTOR`].
pub fn enable() {
    write(register::SPURIOUS, SOFTWARE_ENABLE | u32::from(SPURIOUS_VECTOR));
}

/// This CPU's APIC ID (xAPIC: bits 31:24 of the ID register; x2APIC: all 32 bits).
pub fn id() -> u32 {
    if x2apic_mode() {
        read(register::ID)
    } else {
        read(register::ID) >> 24
    }
}

/// Signals the end of the interrupt being serviced.
pub fn end_of_interrupt() {
    write(register::END_OF_INTERRUPT, 0);
}

/// How many times to look at the ICR's delivery status before giving up on it.
const COMMAND_POLLS: u32 = 1_000_000;

/// Sends an interrupt command (the ICR's low word, with `destination` in its high word);
/// returns whether the APIC reported it sent, in bounded time.
pub fn send_command(destination: u32, command: u32) -> bool {
    if x2apic_mode() {
        // One 64-bit ICR with a 32-bit destination; WRMSR completes the send.
        let value = (u64::from(destination) << 32) | u64::from(command);
        return try_wrmsr(msr_of(register::COMMAND_LOW), value).is_ok();
    }
    write(register::COMMAND_HIGH, destination << 24);
    write(register::COMMAND_LOW, command);
    (0..COMMAND_POLLS).any(|_| read(register::COMMAND_LOW) & COMMAND_PENDING == 0)
}

/// Sends a fixed interrupt on `vector` to the CPU whose APIC ID is `destination`.
pub fn send_ipi(destination: u32, vector: u8) -> bool {
    send_command(destination, u32::from(vector))
}

/// Sends a fixed interrupt on `vector` to this CPU (x2APIC: through the SELF IPI register).
pub fn self_ipi(vector: u8) -> bool {
    if x2apic_mode() {
        return try_wrmsr(IA32_X2APIC_SELF_IPI, u64::from(vector)).is_ok();
    }
    send_command(0, TO_SELF | u32::from(vector))
}

/// Sends an SMI to the CPU whose APIC ID is `destination` (which may be this CPU's own): it
/// enters SMM at its SMBASE + 0x8000 unless SVM intercepts it, so only after
/// `svm::install_resuming_smi_handler`.
pub fn send_smi(destination: u32) -> bool {
    send_command(destination, DELIVERY_SMI | ASSERT)
}

/// Sends an NMI to the CPU whose APIC ID is `destination` (which may be this CPU's own).
pub fn send_nmi(destination: u32) -> bool {
    send_command(destination, DELIVERY_NMI | ASSERT)
}

/// Whether `vector`'s bit is set in the 256-bit register array at `base` (IRR or ISR).
pub fn vector_bit(base: u64, vector: u8) -> bool {
    read(base + u64::from(vector / 32) * 0x10) & (1 << (vector % 32)) != 0
}
