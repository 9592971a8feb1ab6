//! x86_64 local APIC, in xAPIC mode (MMIO at 0xfee0_0000): identity, end of interrupt,
//! inter-processor interrupts and the LVT timer.

/// The xAPIC's physical (and, identity mapped, virtual) address.
pub const BASE: u64 = 0xfee0_0000;

/// xAPIC register offsets (SDM Vol. 3, 11.4.1).
#[allow(missing_docs)]
pub mod register {
    pub const ID: u64 = 0x20;
    pub const VERSION: u64 = 0x30;
    pub const TASK_PRIORITY: u64 = 0x80;
    pub const END_OF_INTERRUPT: u64 = 0xb0;
    pub const SPURIOUS: u64 = 0xf0;
    pub const IN_SERVICE: u64 = 0x100;
    pub const REQUEST: u64 = 0x200;
    pub const COMMAND_LOW: u64 = 0x300;
    pub const COMMAND_HIGH: u64 = 0x310;
    pub const TIMER: u64 = 0x320;
    pub const TIMER_INITIAL_COUNT: u64 = 0x380;
    pub const TIMER_CURRENT_COUNT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

/// The spurious-interrupt vector the runtime programs.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// SVR bit 8: the APIC is software-enabled.
const SOFTWARE_ENABLE: u32 = 1 << 8;
/// ICR delivery status: the IPI is still being sent.
const COMMAND_PENDING: u32 = 1 << 12;
/// ICR destination shorthands.
const TO_SELF: u32 = 0b01 << 18;
/// LVT mask bit.
pub const MASKED: u32 = 1 << 16;

/// Reads an xAPIC register.
pub fn read(offset: u64) -> u32 {
    // SAFETY: the xAPIC page is identity mapped; reading its registers has no side effect
    // on memory (the offsets the runtime uses have none on the APIC either).
    unsafe { ((BASE + offset) as usize as *const u32).read_volatile() }
}

/// Writes an xAPIC register: a hardware poke (IPIs, timer, priorities), not a memory write.
pub fn write(offset: u64, value: u32) {
    // SAFETY: as for `read`; a register write changes APIC state, not memory.
    unsafe { ((BASE + offset) as usize as *mut u32).write_volatile(value) };
}

/// Software-enables this CPU's APIC, with spurious interrupts on [`SPURIOUS_VECTOR`].
pub fn enable() {
    write(register::SPURIOUS, SOFTWARE_ENABLE | u32::from(SPURIOUS_VECTOR));
}

/// This CPU's APIC ID (xAPIC: bits 31:24 of the ID register).
pub fn id() -> u32 {
    read(register::ID) >> 24
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
    write(register::COMMAND_HIGH, destination << 24);
    write(register::COMMAND_LOW, command);
    (0..COMMAND_POLLS).any(|_| read(register::COMMAND_LOW) & COMMAND_PENDING == 0)
}

/// Sends a fixed interrupt on `vector` to the CPU whose APIC ID is `destination`.
pub fn send_ipi(destination: u32, vector: u8) -> bool {
    send_command(destination, u32::from(vector))
}

/// Sends a fixed interrupt on `vector` to this CPU.
pub fn self_ipi(vector: u8) -> bool {
    send_command(0, TO_SELF | u32::from(vector))
}

/// Whether `vector`'s bit is set in the 256-bit register array at `base` (IRR or ISR).
pub fn vector_bit(base: u64, vector: u8) -> bool {
    read(base + u64::from(vector / 32) * 0x10) & (1 << (vector % 32)) != 0
}
