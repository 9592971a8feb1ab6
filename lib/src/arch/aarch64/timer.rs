//! The Arm generic timer: the system counter (CNTFRQ_EL0, CNTVCT_EL0, CNTPCT_EL0) and the
//! virtual and physical timers (CNTV_* and CNTP_*), with their PPIs from the device tree. At
//! EL2 with VHE (`vmunit::arch::El2Boot::Vhe`) the CNTV_*/CNTP_* names reach the EL2 virtual
//! and physical timers (CNTHV_*, CNTHP_*; Arm ARM D12.8, "accessing the EL2 timers with
//! E2H"), whose PPIs are the DTB timer node's fifth and fourth interrupts.

use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTP_TVAL_EL0, CNTPCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0,
    CNTV_TVAL_EL0, CNTVCT_EL0, Readable, Writeable,
};

/// CNT*_CTL_EL0.ENABLE.
pub const CTL_ENABLE: u64 = 1 << 0;
/// CNT*_CTL_EL0.IMASK: the timer's interrupt is masked.
pub const CTL_IMASK: u64 = 1 << 1;
/// CNT*_CTL_EL0.ISTATUS (read-only): the timer condition is met.
pub const CTL_ISTATUS: u64 = 1 << 2;

/// The default PPIs of QEMU `virt` (INTIDs), used when the device tree has no timer node.
const DEFAULT_PHYSICAL_INTID: u32 = 30;
const DEFAULT_VIRTUAL_INTID: u32 = 27;
/// QEMU `virt`'s EL2 physical timer PPI (INTID), when the device tree lists none.
const DEFAULT_HYPERVISOR_PHYSICAL_INTID: u32 = 26;
/// QEMU `virt`'s EL2 virtual timer PPI (INTID, hw/arm/virt.c ARCH_TIMER_NS_EL2_VIRT_IRQ).
const DEFAULT_HYPERVISOR_VIRTUAL_INTID: u32 = 28;

/// The counter frequency in Hz (CNTFRQ_EL0).
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The runtime's clock, as on x86_64: the virtual count.
pub fn count() -> u64 {
    virtual_count()
}

/// The virtual count (CNTVCT_EL0), read after an ISB so that it is not read early.
pub fn virtual_count() -> u64 {
    super::instructions::isb();
    CNTVCT_EL0.get()
}

/// The physical count (CNTPCT_EL0), read after an ISB.
pub fn physical_count() -> u64 {
    super::instructions::isb();
    CNTPCT_EL0.get()
}

/// One of the timers of the exception level the kernel runs at: at EL1 the EL1 virtual and
/// physical timers; at EL2 (VHE) the EL2 virtual and physical timers, which the same register
/// names reach.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timer {
    /// The virtual timer (CNTV_*; CNTHV_* at EL2), counting CNTVCT.
    Virtual,
    /// The physical timer (CNTP_*; CNTHP_* at EL2), counting CNTPCT.
    Physical,
}

impl Timer {
    /// The timer's name, as kvm-unit-tests' report prefixes have it ("vtimer", "ptimer").
    pub fn name(self) -> &'static str {
        match self {
            Timer::Virtual => "vtimer",
            Timer::Physical => "ptimer",
        }
    }

    /// The timer's registers as the Arm ARM names them at the current exception level
    /// ("CNTV", "CNTP"; "CNTHV", "CNTHP" at EL2).
    pub fn registers(self) -> &'static str {
        match (self, super::instructions::current_el() == 2) {
            (Timer::Virtual, false) => "CNTV",
            (Timer::Physical, false) => "CNTP",
            (Timer::Virtual, true) => "CNTHV",
            (Timer::Physical, true) => "CNTHP",
        }
    }

    /// The INTID of the timer's PPI (the EL2 timers' at EL2).
    pub fn intid(self) -> u32 {
        let platform = super::device_tree::platform();
        if super::instructions::current_el() == 2 {
            let (physical, virtual_intid) = platform.hypervisor_timer_interrupts();
            return match self {
                Timer::Virtual => virtual_intid.unwrap_or(DEFAULT_HYPERVISOR_VIRTUAL_INTID),
                Timer::Physical => physical.unwrap_or(DEFAULT_HYPERVISOR_PHYSICAL_INTID),
            };
        }
        let interrupts = platform.timer_interrupts();
        match self {
            Timer::Virtual => interrupts.map_or(DEFAULT_VIRTUAL_INTID, |(_, virtual_intid)| virtual_intid),
            Timer::Physical => interrupts.map_or(DEFAULT_PHYSICAL_INTID, |(physical, _)| physical),
        }
    }

    /// The count this timer compares against.
    pub fn count(self) -> u64 {
        match self {
            Timer::Virtual => virtual_count(),
            Timer::Physical => physical_count(),
        }
    }

    /// CNT*_CTL_EL0.
    pub fn control(self) -> u64 {
        match self {
            Timer::Virtual => CNTV_CTL_EL0.get(),
            Timer::Physical => CNTP_CTL_EL0.get(),
        }
    }

    /// Writes CNT*_CTL_EL0 (ENABLE and IMASK; ISTATUS is read-only).
    pub fn set_control(self, value: u64) {
        match self {
            Timer::Virtual => CNTV_CTL_EL0.set(value),
            Timer::Physical => CNTP_CTL_EL0.set(value),
        }
        super::instructions::isb();
    }

    /// CNT*_CVAL_EL0, the compare value.
    pub fn compare_value(self) -> u64 {
        match self {
            Timer::Virtual => CNTV_CVAL_EL0.get(),
            Timer::Physical => CNTP_CVAL_EL0.get(),
        }
    }

    /// Writes CNT*_CVAL_EL0.
    pub fn set_compare_value(self, value: u64) {
        match self {
            Timer::Virtual => CNTV_CVAL_EL0.set(value),
            Timer::Physical => CNTP_CVAL_EL0.set(value),
        }
        super::instructions::isb();
    }

    /// CNT*_TVAL_EL0 as the signed 32-bit value the architecture defines (CVAL - count).
    pub fn timer_value(self) -> i32 {
        let value = match self {
            Timer::Virtual => CNTV_TVAL_EL0.get(),
            Timer::Physical => CNTP_TVAL_EL0.get(),
        };
        value as u32 as i32
    }

    /// Writes CNT*_TVAL_EL0: CVAL becomes count + the sign-extended value.
    pub fn set_timer_value(self, value: i32) {
        let value = i64::from(value) as u64;
        match self {
            Timer::Virtual => CNTV_TVAL_EL0.set(value),
            Timer::Physical => CNTP_TVAL_EL0.set(value),
        }
        super::instructions::isb();
    }
}
