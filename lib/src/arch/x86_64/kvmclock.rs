//! kvmclock: KVM's paravirtual clock. The KVM CPUID leaves (signature `KVMKVMKVM`, the
//! KVM_FEATURE_* bits), the per-CPU `pvclock_vcpu_time_info` area KVM keeps up to date once
//! MSR_KVM_SYSTEM_TIME_NEW names it, read with its version protocol, and the wall clock of
//! MSR_KVM_WALL_CLOCK_NEW (Linux's Documentation/virt/kvm/x86/msr.rst and cpuid.rst).
//!
//! The areas KVM writes are frames from the runtime's allocator, never Rust objects, and are
//! read with volatile loads only: the compiler must not assume they stay unchanged.

use core::sync::atomic::{Ordering, fence};

use super::cpuid::cpuid;
use super::exceptions::Exception;
use super::instructions::rdtsc_ordered;
use super::msr::{MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW, try_wrmsr_unrestricted};
use super::smp::{MAX_CPUS, cpu_index};

/// The KVM signature of a hypervisor CPUID leaf (EBX, ECX, EDX).
pub const KVM_SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";

/// The base of KVM's CPUID leaves: 0x4000_0000, or a multiple of 0x100 above it when another
/// interface (Hyper-V's) comes first. `None` when no leaf in 0x4000_0000..0x4001_0000 carries
/// the KVM signature (TCG, another hypervisor, bare metal).
pub fn kvm_cpuid_base() -> Option<u32> {
    if !super::cpuid::has(super::cpuid::Feature::Hypervisor) {
        return None;
    }
    (0x4000_0000..0x4001_0000).step_by(0x100).find(|&base| {
        let leaf = cpuid(base, 0);
        let mut signature = [0; 12];
        for (chunk, register) in signature.chunks_exact_mut(4).zip([leaf.ebx, leaf.ecx, leaf.edx]) {
            chunk.copy_from_slice(&register.to_le_bytes());
        }
        signature == KVM_SIGNATURE
    })
}

/// A KVM paravirtual feature: a bit of EAX of the KVM features leaf (base + 1,
/// KVM_CPUID_FEATURES).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum KvmFeature {
    /// KVM_FEATURE_CLOCKSOURCE: MSR_KVM_WALL_CLOCK and MSR_KVM_SYSTEM_TIME (0x11, 0x12).
    ClockSource = 0,
    /// KVM_FEATURE_NOP_IO_DELAY.
    NopIoDelay = 1,
    /// KVM_FEATURE_MMU_OP (withdrawn).
    MmuOp = 2,
    /// KVM_FEATURE_CLOCKSOURCE2: MSR_KVM_WALL_CLOCK_NEW and MSR_KVM_SYSTEM_TIME_NEW.
    ClockSource2 = 3,
    /// KVM_FEATURE_ASYNC_PF.
    AsyncPf = 4,
    /// KVM_FEATURE_STEAL_TIME.
    StealTime = 5,
    /// KVM_FEATURE_PV_EOI.
    PvEoi = 6,
    /// KVM_FEATURE_PV_UNHALT.
    PvUnhalt = 7,
    /// KVM_FEATURE_PV_TLB_FLUSH.
    PvTlbFlush = 9,
    /// KVM_FEATURE_ASYNC_PF_VMEXIT.
    AsyncPfVmexit = 10,
    /// KVM_FEATURE_PV_SEND_IPI.
    PvSendIpi = 11,
    /// KVM_FEATURE_POLL_CONTROL.
    PollControl = 12,
    /// KVM_FEATURE_PV_SCHED_YIELD.
    PvSchedYield = 13,
    /// KVM_FEATURE_ASYNC_PF_INT.
    AsyncPfInt = 14,
    /// KVM_FEATURE_MSI_EXT_DEST_ID.
    MsiExtDestId = 15,
    /// KVM_FEATURE_HC_MAP_GPA_RANGE.
    HcMapGpaRange = 16,
    /// KVM_FEATURE_MIGRATION_CONTROL.
    MigrationControl = 17,
    /// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: the guest may rely on
    /// [`PVCLOCK_TSC_STABLE_BIT`] in the time area's flags.
    ClockSourceStableBit = 24,
}

/// The KVM features leaf's EAX (0 without KVM leaves).
pub fn kvm_features() -> u32 {
    kvm_cpuid_base().map_or(0, |base| cpuid(base + 1, 0).eax)
}

/// Whether the KVM features leaf advertises `feature` (false without KVM leaves).
pub fn has_kvm_feature(feature: KvmFeature) -> bool {
    kvm_features() & (1 << feature as u32) != 0
}

/// PVCLOCK_TSC_STABLE_BIT in [`TimeInfo::flags`]: the time areas of all CPUs follow one TSC,
/// so their readings need no global monotonic fix-up.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// PVCLOCK_GUEST_STOPPED in [`TimeInfo::flags`]: the guest was paused by the host.
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;
/// PVCLOCK_COUNTS_FROM_ZERO in [`TimeInfo::flags`] (Linux's pvclock-abi.h; Xen's).
pub const PVCLOCK_COUNTS_FROM_ZERO: u8 = 1 << 2;
/// Every flag the pvclock ABI defines.
pub const PVCLOCK_FLAGS: u8 = PVCLOCK_TSC_STABLE_BIT | PVCLOCK_GUEST_STOPPED | PVCLOCK_COUNTS_FROM_ZERO;

/// A consistent copy of a `pvclock_vcpu_time_info` (32 bytes): system time (ns) is
/// `system_time + scale(rdtsc - tsc_timestamp)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TimeInfo {
    /// Even when consistent; KVM makes it odd while it updates the area.
    pub version: u32,
    /// The TSC when KVM last updated the area.
    pub tsc_timestamp: u64,
    /// Nanoseconds of system time at `tsc_timestamp`.
    pub system_time: u64,
    /// The TSC-to-nanoseconds multiplier, a 32.32 fraction.
    pub tsc_to_system_mul: u32,
    /// The shift applied to a TSC delta before the multiplication.
    pub tsc_shift: i8,
    /// [`PVCLOCK_TSC_STABLE_BIT`], [`PVCLOCK_GUEST_STOPPED`].
    pub flags: u8,
}

impl TimeInfo {
    /// Nanoseconds of system time at TSC value `tsc` (kvm-unit-tests' `__pvclock_read_cycles`).
    pub fn nanoseconds_at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        self.system_time
            .wrapping_add(scale_delta(delta, self.tsc_to_system_mul, self.tsc_shift))
    }
}

/// `delta` shifted by `shift` and multiplied by the 32.32 fraction `multiplier`
/// (pvclock's `scale_delta`).
pub fn scale_delta(delta: u64, multiplier: u32, shift: i8) -> u64 {
    let shifted = if shift < 0 {
        delta >> shift.unsigned_abs()
    } else {
        delta << shift
    };
    ((u128::from(shifted) * u128::from(multiplier)) >> 32) as u64
}

/// The wall clock KVM stores at MSR_KVM_WALL_CLOCK_NEW's address: the time of system time 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct WallClock {
    /// Even when consistent.
    pub version: u32,
    /// Seconds since the Unix epoch.
    pub seconds: u32,
    /// Nanoseconds.
    pub nanoseconds: u32,
}

/// Bytes of one CPU's time area.
const TIME_INFO_SIZE: u64 = 32;
/// Where the wall clock lives in the clock's frame: after the [`MAX_CPUS`] time areas.
const WALL_CLOCK_OFFSET: u64 = MAX_CPUS as u64 * TIME_INFO_SIZE;
const _: () = assert!(WALL_CLOCK_OFFSET + 12 <= crate::memory::PAGE_SIZE);

/// kvmclock: one frame of the runtime's, holding a time area per CPU and the wall clock.
///
/// The frame is never given back: KVM may go on writing it (a CPU that did not
/// [`disable`](KvmClock::disable_this_cpu)), so no other use may ever get it.
pub struct KvmClock {
    frame: u64,
}

impl KvmClock {
    /// A zeroed frame for the areas, or `None` when no frame is left.
    pub fn new() -> Option<KvmClock> {
        let frame = crate::memory::allocate_frame()?;
        // SAFETY: the frame is fresh from the allocator, identity mapped, and owned by
        // nothing else.
        unsafe { (frame as usize as *mut u8).write_bytes(0, crate::memory::PAGE_SIZE as usize) };
        Some(KvmClock { frame })
    }

    /// The guest-physical address of CPU `cpu`'s time area.
    pub fn time_area(&self, cpu: usize) -> u64 {
        assert!(cpu < MAX_CPUS, "CPU {cpu} has no time area");
        self.frame + cpu as u64 * TIME_INFO_SIZE
    }

    /// The guest-physical address of the wall clock.
    pub fn wall_clock_area(&self) -> u64 {
        self.frame + WALL_CLOCK_OFFSET
    }

    /// Points the running CPU's MSR_KVM_SYSTEM_TIME_NEW at its time area, enabled (kvm-unit-tests'
    /// `kvm_clock_init`), or the exception (#GP where the MSR does not exist).
    pub fn enable_this_cpu(&self) -> Result<(), Exception> {
        // SAFETY: the address is this clock's own frame, which no Rust object occupies and
        // which is never freed; the MSR is no bit the runtime otherwise relies on.
        unsafe { try_wrmsr_unrestricted(MSR_KVM_SYSTEM_TIME_NEW, self.time_area(cpu_index()) | 1) }
    }

    /// Turns the running CPU's time area off (MSR_KVM_SYSTEM_TIME_NEW = 0; kvm-unit-tests'
    /// `kvm_clock_clear`).
    pub fn disable_this_cpu(&self) -> Result<(), Exception> {
        // SAFETY: 0 gives KVM no address to write to.
        unsafe { try_wrmsr_unrestricted(MSR_KVM_SYSTEM_TIME_NEW, 0) }
    }

    fn load<T: Copy>(&self, address: u64) -> T {
        // SAFETY: callers pass addresses inside this clock's frame (identity mapped, never
        // freed, no Rust object in it), aligned for `T`; a volatile load because KVM writes the
        // frame behind the compiler's back.
        unsafe { core::ptr::read_volatile(address as usize as *const T) }
    }

    /// The raw version word of CPU `cpu`'s time area (odd while KVM updates it).
    pub fn version(&self, cpu: usize) -> u32 {
        self.load(self.time_area(cpu))
    }

    /// A consistent copy of CPU `cpu`'s time area: read between two equal, even versions
    /// (pvclock_read_begin/retry). Also what it took: the number of retries.
    pub fn time_info(&self, cpu: usize) -> (TimeInfo, u32) {
        let area = self.time_area(cpu);
        let mut retries = 0;
        loop {
            let version = self.load::<u32>(area) & !1;
            fence(Ordering::Acquire);
            let info = self.fields(area, version);
            fence(Ordering::Acquire);
            if self.load::<u32>(area) == version {
                return (info, retries);
            }
            retries += 1;
        }
    }

    fn fields(&self, area: u64, version: u32) -> TimeInfo {
        let packed: u64 = self.load(area + 24);
        TimeInfo {
            version,
            tsc_timestamp: self.load(area + 8),
            system_time: self.load(area + 16),
            tsc_to_system_mul: packed as u32,
            tsc_shift: (packed >> 32) as u8 as i8,
            flags: (packed >> 40) as u8,
        }
    }

    /// The running CPU's system time in nanoseconds, with the flags of the copy it came from:
    /// the TSC read (RDTSC between LFENCEs) and the scaling happen inside the version loop, as
    /// kvm-unit-tests' `pvclock_clocksource_read` does before its monotonic fix-up.
    pub fn read(&self) -> (u64, u8) {
        let area = self.time_area(cpu_index());
        loop {
            let version = self.load::<u32>(area) & !1;
            fence(Ordering::Acquire);
            let info = self.fields(area, version);
            let nanoseconds = info.nanoseconds_at(rdtsc_ordered());
            fence(Ordering::Acquire);
            if self.load::<u32>(area) == version {
                return (nanoseconds, info.flags);
            }
        }
    }

    /// Writes MSR_KVM_WALL_CLOCK_NEW with the wall clock's address (KVM stores it then) and
    /// reads it back with its version protocol (kvm-unit-tests' `pvclock_read_wallclock`), or
    /// the exception of the WRMSR.
    pub fn wall_clock(&self) -> Result<WallClock, Exception> {
        let area = self.wall_clock_area();
        // SAFETY: as in `enable_this_cpu`: the address is this clock's own frame.
        unsafe { try_wrmsr_unrestricted(MSR_KVM_WALL_CLOCK_NEW, area) }?;
        loop {
            let version: u32 = self.load(area);
            fence(Ordering::Acquire);
            let seconds = self.load(area + 4);
            let nanoseconds = self.load(area + 8);
            fence(Ordering::Acquire);
            let again: u32 = self.load(area);
            if again & 1 == 0 && version == again {
                return Ok(WallClock {
                    version,
                    seconds,
                    nanoseconds,
                });
            }
        }
    }
}
