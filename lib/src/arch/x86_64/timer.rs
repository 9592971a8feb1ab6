//! The time-stamp counter as the runtime's clock: its count (RDTSC) and frequency (CPUID), the
//! x86 side of the arch API that aarch64's generic-timer module offers (`count`, `frequency`).

use super::cpuid::cpuid;
use super::instructions::rdtsc;

/// The frequency assumed when CPUID does not give one: higher than any TSC this project runs
/// on, so that a wait of N milliseconds lasts at least N milliseconds.
const ASSUMED_MAXIMUM_FREQUENCY: u64 = 5_000_000_000;
/// The hypervisor leaf with the TSC frequency in kHz in EAX (KVM and QEMU with invtsc).
const HYPERVISOR_TIMING_LEAF: u32 = 0x4000_0010;

/// The TSC's count: RDTSC.
pub fn count() -> u64 {
    rdtsc()
}

/// The TSC frequency in Hz: CPUID leaf 0x15 (crystal clock and ratio), else leaf 0x16 (base
/// frequency), else the hypervisor's timing leaf, else an upper bound of 5 GHz.
pub fn frequency() -> u64 {
    static FREQUENCY: spin::Once<u64> = spin::Once::new();
    *FREQUENCY.call_once(|| advertised_frequency().unwrap_or(ASSUMED_MAXIMUM_FREQUENCY))
}

fn advertised_frequency() -> Option<u64> {
    let maximum_leaf = cpuid(0, 0).eax;
    if maximum_leaf >= 0x15 {
        let leaf = cpuid(0x15, 0);
        let (denominator, numerator, crystal) = (leaf.eax, leaf.ebx, leaf.ecx);
        if denominator != 0 && numerator != 0 && crystal != 0 {
            return Some(u64::from(crystal) * u64::from(numerator) / u64::from(denominator));
        }
    }
    if maximum_leaf >= 0x16 {
        let megahertz = cpuid(0x16, 0).eax & 0xffff;
        if megahertz != 0 {
            return Some(u64::from(megahertz) * 1_000_000);
        }
    }
    let hypervisor = cpuid(1, 0).ecx & (1 << 31) != 0;
    if hypervisor && cpuid(0x4000_0000, 0).eax >= HYPERVISOR_TIMING_LEAF {
        let kilohertz = cpuid(HYPERVISOR_TIMING_LEAF, 0).eax;
        if kilohertz != 0 {
            return Some(u64::from(kilohertz) * 1000);
        }
    }
    None
}
