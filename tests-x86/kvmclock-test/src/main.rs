//! kvmclock_test: KVM's paravirtual clock (kvm-unit-tests' x86/kvmclock_test.c): every CPU's
//! time area through MSR_KVM_SYSTEM_TIME_NEW, the wall clock of MSR_KVM_WALL_CLOCK_NEW against
//! the host's time, and readings that never go backwards across CPUs, raw (as the stable bit
//! promises) and with pvclock's monotonic fix-up.
//!
//! Arguments: `loops=N` (reads per CPU in each cycle test; kvm-unit-tests runs 10000000) and
//! `threshold=S` (the largest wall-clock offset in seconds, 5 as kvm-unit-tests). The host's
//! time is the guest environment's `HOST_TIME` (kvm-unit-tests passes `date +%s`).
//!
//! With `migration` (entry `kvmclock-migration`, group `migration`): every CPU's kvmclock across
//! a live migration instead: readings that never go backwards and do not leap ahead of the
//! time that passed, each time area filled again on the destination (even version, system time
//! going on from where it was), and the wall clock still the host's time.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use vmunit::arch::cpuid::hypervisor_signature;
use vmunit::arch::instructions::rdtsc;
use vmunit::arch::kvmclock::{
    KvmClock, KvmFeature, PVCLOCK_FLAGS, PVCLOCK_TSC_STABLE_BIT, TimeInfo, has_kvm_feature, kvm_cpuid_base,
    kvm_features,
};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, on_cpu, on_cpus};
use vmunit::{benchmark, prefix, report, report_info, report_skip};

vmunit::main!(main);

const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

fn main(args: &[&str]) {
    let migration = args.contains(&"migration");
    let Some(base) = kvm_cpuid_base() else {
        report_skip!(
            "CPU not running on KVM with CLOCKSOURCE2: no KVM CPUID leaves (hypervisor signature \"{}\")",
            hypervisor_signature().escape_ascii()
        );
        if migration {
            vmunit::migrate_skip();
        }
        return;
    };
    report_info!("KVM leaves at {base:#x}, features EAX {:#x}", kvm_features());
    if !has_kvm_feature(KvmFeature::ClockSource2) {
        report_skip!(
            "CPU not running on KVM with CLOCKSOURCE2 (features {:#x})",
            kvm_features()
        );
        if migration {
            vmunit::migrate_skip();
        }
        return;
    }
    let loops: u64 = vmunit::args::value(args, "loops")
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000_000);
    let threshold: i64 = vmunit::args::value(args, "threshold")
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let clock = KvmClock::new().expect("a frame for the kvmclock areas");
    let cpus = cpu_count();
    if migration {
        report_info!("{cpus} CPUs");
    } else {
        report_info!("{cpus} CPUs, {loops} loops per cycle test");
    }

    enable(&clock, cpus);
    if migration {
        migrate(&clock, cpus, threshold);
        disable(&clock, cpus);
        return;
    }
    {
        let _prefix = prefix!("time areas");
        time_areas(&clock, cpus);
    }
    {
        let _prefix = prefix!("wall clock");
        wall_clock(&clock, cpus, threshold);
    }
    {
        let _prefix = prefix!("cycles");
        cycle_tests(&clock, loops);
    }
    disable(&clock, cpus);
}

/// kvm-unit-tests' `kvm_clock_clear` on every CPU.
fn disable(clock: &KvmClock, cpus: usize) {
    let disabled = AtomicU64::new(0);
    on_cpus(|| {
        if clock.disable_this_cpu().is_ok() {
            disabled.fetch_add(1, Ordering::SeqCst);
        }
    });
    report!(
        disabled.load(Ordering::SeqCst) == cpus as u64,
        "MSR_KVM_SYSTEM_TIME_NEW = 0 turns every CPU's time area off ({} of {cpus})",
        disabled.load(Ordering::SeqCst)
    );
}

/// What one CPU saw of its kvmclock: a consistent copy of its time area and a reading.
#[derive(Clone, Copy, Debug)]
struct Sample {
    info: TimeInfo,
    /// System time in nanoseconds (`KvmClock::read`).
    reading: u64,
}

/// A sample taken on CPU `cpu` itself (KVM fills an area on its vCPU's entry).
fn sample(clock: &KvmClock, cpu: usize) -> Sample {
    let seen = [const { AtomicU64::new(0) }; 6];
    on_cpu(cpu, || {
        let (info, _) = clock.time_info(cpu);
        let (reading, _) = clock.read();
        seen[0].store(u64::from(info.version), Ordering::SeqCst);
        seen[1].store(info.tsc_timestamp, Ordering::SeqCst);
        seen[2].store(info.system_time, Ordering::SeqCst);
        seen[3].store(u64::from(info.tsc_to_system_mul), Ordering::SeqCst);
        seen[4].store(
            u64::from(info.tsc_shift as u8) | (u64::from(info.flags) << 8),
            Ordering::SeqCst,
        );
        seen[5].store(reading, Ordering::SeqCst);
    });
    let [
        version,
        tsc_timestamp,
        system_time,
        multiplier,
        shift_and_flags,
        reading,
    ] = seen.map(|value| value.load(Ordering::SeqCst));
    Sample {
        info: TimeInfo {
            version: version as u32,
            tsc_timestamp,
            system_time,
            tsc_to_system_mul: multiplier as u32,
            tsc_shift: shift_and_flags as u8 as i8,
            flags: (shift_and_flags >> 8) as u8,
        },
        reading,
    }
}

/// Every CPU's kvmclock across a live migration.
fn migrate(clock: &KvmClock, cpus: usize, threshold: i64) {
    let _prefix = prefix!("migration");
    let mut before = [None; MAX_CPUS];
    for (cpu, slot) in before.iter_mut().enumerate().take(cpus) {
        let sample = sample(clock, cpu);
        report!(
            sample.info.version != 0 && sample.info.version.is_multiple_of(2),
            "CPU {cpu}: before the migration the time area is filled: even version, not 0 (got {})",
            sample.info.version
        );
        *slot = Some(sample);
    }
    let tsc_before = rdtsc();
    if vmunit::migrate() != vmunit::Migration::Completed {
        return;
    }
    let ticks = rdtsc().wrapping_sub(tsc_before);
    for (cpu, before) in before.iter().enumerate().take(cpus) {
        let Some(before) = before else { continue };
        let after = sample(clock, cpu);
        report_info!("CPU {cpu}: before {before:x?}");
        report_info!("CPU {cpu}: after {after:x?}");
        report!(
            after.info.version != 0 && after.info.version.is_multiple_of(2),
            "CPU {cpu}: after the migration the time area is filled again: even version, not 0 (got {})",
            after.info.version
        );
        report!(
            after.info.tsc_to_system_mul != 0,
            "CPU {cpu}: tsc_to_system_mul is not 0 on the destination (got {:#x})",
            after.info.tsc_to_system_mul
        );
        report!(
            after.info.flags & !PVCLOCK_FLAGS == 0,
            "CPU {cpu}: flags hold only bits the pvclock ABI defines on the destination (got {:#x})",
            after.info.flags
        );
        report!(
            after.info.system_time >= before.info.system_time,
            "CPU {cpu}: system_time goes on from where it was, not from 0: {:#x} before the migration, {:#x} after",
            before.info.system_time,
            after.info.system_time
        );
        report!(
            after.reading >= before.reading,
            "CPU {cpu}: kvmclock does not go backwards across the migration: {} ns before, {} ns after",
            before.reading,
            after.reading
        );
        // The TSC runs at 1 GHz or faster, so no more than `ticks` ns passed since the first
        // sample; samples of later CPUs come later still, by far less than a second.
        let leap = after.reading.saturating_sub(before.reading);
        let bound = ticks + NANOSECONDS_PER_SECOND;
        report!(
            leap <= bound,
            "CPU {cpu}: kvmclock does not leap ahead: {leap} ns passed by it, at most {bound} (TSC ticks since the sample, plus 1 s)"
        );
        let later = sample(clock, cpu);
        vmunit::time::delay(2);
        let last = sample(clock, cpu);
        report!(
            after.reading <= later.reading && later.reading < last.reading,
            "CPU {cpu}: kvmclock keeps advancing on the destination ({} ns, {} ns, then {} ns 2 ms later)",
            after.reading,
            later.reading,
            last.reading
        );
    }
    wall_clock(clock, cpus, threshold);
}

/// kvm-unit-tests' `kvm_clock_init` on every CPU.
fn enable(clock: &KvmClock, cpus: usize) {
    for cpu in 0..cpus {
        let result = AtomicBool::new(false);
        on_cpu(cpu, || {
            result.store(clock.enable_this_cpu().is_ok(), Ordering::SeqCst)
        });
        report!(
            result.load(Ordering::SeqCst),
            "MSR_KVM_SYSTEM_TIME_NEW takes CPU {cpu}'s time area at {:#x}",
            clock.time_area(cpu)
        );
    }
}

/// What each CPU's area holds once KVM filled it.
fn time_areas(clock: &KvmClock, cpus: usize) {
    let stable_advertised = has_kvm_feature(KvmFeature::ClockSourceStableBit);
    report_info!("KVM_FEATURE_CLOCKSOURCE_STABLE_BIT advertised: {stable_advertised}");
    for cpu in 0..cpus {
        // Read on the CPU itself: KVM fills an area on its vCPU's next entry.
        let snapshot = [const { AtomicU64::new(0) }; 6];
        on_cpu(cpu, || {
            let (first, _) = clock.time_info(cpu);
            let first_now = first.nanoseconds_at(rdtsc());
            vmunit::time::delay(2);
            let (second, _) = clock.time_info(cpu);
            let second_now = second.nanoseconds_at(rdtsc());
            snapshot[0].store(u64::from(first.version), Ordering::SeqCst);
            snapshot[1].store(u64::from(first.tsc_to_system_mul), Ordering::SeqCst);
            snapshot[2].store(first.tsc_shift as u8 as u64, Ordering::SeqCst);
            snapshot[3].store(u64::from(first.flags), Ordering::SeqCst);
            snapshot[4].store(first_now, Ordering::SeqCst);
            snapshot[5].store(second_now, Ordering::SeqCst);
        });
        let [version, multiplier, shift, flags, first, second] =
            snapshot.map(|value| value.load(Ordering::SeqCst));
        report_info!(
            "CPU {cpu}: version {version}, tsc_to_system_mul {multiplier:#x}, tsc_shift {}, flags {flags:#x}",
            shift as u8 as i8
        );
        report!(
            version != 0 && version % 2 == 0,
            "CPU {cpu}: KVM filled the area: its version is even and not 0 (got {version})"
        );
        report!(
            multiplier != 0,
            "CPU {cpu}: tsc_to_system_mul is not 0 (got {multiplier:#x})"
        );
        // 2 ms of TSC by the runtime's frequency; the frequency may be an upper bound, so
        // only a floor of 1 ms and a ceiling of 10 s are sure.
        let elapsed = second.wrapping_sub(first) as i64;
        report!(
            (1_000_000..10 * NANOSECONDS_PER_SECOND as i64).contains(&elapsed),
            "CPU {cpu}: system time advances with the TSC: a 2 ms wait reads 1 ms to 10 s (got {elapsed} ns)"
        );
        report!(
            flags & !u64::from(PVCLOCK_FLAGS) == 0,
            "CPU {cpu}: flags hold only bits the pvclock ABI defines (got {flags:#x})"
        );
    }
}

/// kvm-unit-tests' `wallclock_test` on each CPU in turn: the wall clock at boot plus the
/// system time is the host's time, within `threshold` seconds.
fn wall_clock(clock: &KvmClock, cpus: usize, threshold: i64) {
    let host: Option<i64> = vmunit::env("HOST_TIME").and_then(|value| value.parse().ok());
    let Some(host) = host else {
        report_skip!("the runner passed no HOST_TIME: cannot compare with the host's time");
        return;
    };
    report_info!("seconds from the host: {host}, threshold {threshold}");
    for cpu in 0..cpus {
        let seen = [const { AtomicI64::new(-1) }; 4];
        on_cpu(cpu, || {
            if let Ok(wall) = clock.wall_clock() {
                let (system, _) = clock.read();
                let nanoseconds =
                    u64::from(wall.seconds) * NANOSECONDS_PER_SECOND + u64::from(wall.nanoseconds) + system;
                seen[0].store(i64::from(wall.version), Ordering::SeqCst);
                seen[1].store((nanoseconds / NANOSECONDS_PER_SECOND) as i64, Ordering::SeqCst);
                seen[2].store(i64::from(wall.nanoseconds), Ordering::SeqCst);
                seen[3].store(system as i64, Ordering::SeqCst);
            }
        });
        let [version, seconds, nanoseconds, system] = seen.map(|value| value.load(Ordering::SeqCst));
        report!(
            version >= 0,
            "CPU {cpu}: MSR_KVM_WALL_CLOCK_NEW takes the wall clock's address"
        );
        if version < 0 {
            continue;
        }
        let offset = seconds - host;
        report_info!("CPU {cpu}: raw nanoseconds value from kvmclock: {system}");
        report!(
            version % 2 == 0 && (0..NANOSECONDS_PER_SECOND as i64).contains(&nanoseconds),
            "CPU {cpu}: the wall clock is consistent: even version, nanoseconds below 10^9 (version {version}, nsec {nanoseconds})"
        );
        report!(
            offset.abs() <= threshold,
            "CPU {cpu}: seconds from kvmclock {seconds} are the host's {host} within {threshold} s (offset {offset})"
        );
    }
}

/// The shared state of one cycle test (kvm-unit-tests' `struct test_info`).
struct Cycles {
    lock: AtomicBool,
    last: AtomicU64,
    warps: AtomicU64,
    stalls: AtomicU64,
    worst: AtomicI64,
    /// The global accumulator of pvclock's monotonic fix-up (`last_value`).
    last_value: AtomicU64,
    /// Whether every reading had PVCLOCK_TSC_STABLE_BIT set.
    all_stable: AtomicBool,
    /// Whether any reading had PVCLOCK_TSC_STABLE_BIT set (and was so taken raw).
    any_stable: AtomicBool,
}

impl Cycles {
    const fn new() -> Cycles {
        Cycles {
            lock: AtomicBool::new(false),
            last: AtomicU64::new(0),
            warps: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            worst: AtomicI64::new(0),
            last_value: AtomicU64::new(0),
            all_stable: AtomicBool::new(true),
            any_stable: AtomicBool::new(false),
        }
    }

    /// kvm-unit-tests' `pvclock_clocksource_read`: raw (`raw`, PVCLOCK_RAW_CYCLE_BIT) or
    /// with the fix-up that holds readings at the global last value unless the area's
    /// stable bit is set.
    fn read(&self, clock: &KvmClock, raw: bool) -> u64 {
        let (reading, flags) = clock.read();
        if flags & PVCLOCK_TSC_STABLE_BIT == 0 {
            self.all_stable.store(false, Ordering::Relaxed);
        } else {
            self.any_stable.store(true, Ordering::Relaxed);
        }
        if raw || flags & PVCLOCK_TSC_STABLE_BIT != 0 {
            return reading;
        }
        let mut last = self.last_value.load(Ordering::SeqCst);
        loop {
            if reading < last {
                return last;
            }
            match self
                .last_value
                .compare_exchange(last, reading, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return reading,
                Err(now) => last = now,
            }
        }
    }

    /// kvm-unit-tests' `kvm_clock_test` on one CPU: under the lock, a reading compared with
    /// the last one any CPU took.
    fn run(&self, clock: &KvmClock, raw: bool, check: bool, loops: u64) {
        for iteration in 0..loops {
            if !check {
                self.read(clock, raw);
                continue;
            }
            while self
                .lock
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            let now = self.read(clock, raw);
            let before = self.last.load(Ordering::Relaxed);
            self.last.store(self.read(clock, raw), Ordering::Relaxed);
            self.lock.store(false, Ordering::Release);
            let delta = now.wrapping_sub(before) as i64;
            if delta < 0 {
                self.warps.fetch_add(1, Ordering::Relaxed);
                self.worst.fetch_min(delta, Ordering::Relaxed);
            } else if delta == 0 {
                self.stalls.fetch_add(1, Ordering::Relaxed);
            }
            if iteration & 31 == 0 {
                core::hint::spin_loop();
            }
        }
    }
}

/// One cycle test on every CPU at once; the TSC cycles it took.
fn cycle_test(clock: &KvmClock, cycles: &Cycles, raw: bool, check: bool, loops: u64) -> u64 {
    let begin = rdtsc();
    on_cpus(|| cycles.run(clock, raw, check, loops));
    rdtsc() - begin
}

/// kvm-unit-tests' four cycle tests: raw and adjusted readings checked across CPUs, then
/// both timed.
fn cycle_tests(clock: &KvmClock, loops: u64) {
    let raw = Cycles::new();
    cycle_test(clock, &raw, true, true, loops);
    let (warps, stalls, worst) = (
        raw.warps.load(Ordering::SeqCst),
        raw.stalls.load(Ordering::SeqCst),
        raw.worst.load(Ordering::SeqCst),
    );
    // The guest may trust the flag only where KVM advertises the stable bit feature.
    let stable = raw.all_stable.load(Ordering::SeqCst) && has_kvm_feature(KvmFeature::ClockSourceStableBit);
    report_info!(
        "raw cycles: {warps} warps, {stalls} stalls, worst warp {worst} ns, stable bit on every reading: {stable}"
    );
    if stable {
        // PVCLOCK_TSC_STABLE_BIT is the promise that raw readings need no fix-up.
        report!(
            warps == 0,
            "raw readings never go backwards across CPUs where KVM_FEATURE_CLOCKSOURCE_STABLE_BIT is advertised and PVCLOCK_TSC_STABLE_BIT set ({warps} warps, worst {worst} ns)"
        );
    } else {
        // kvm-unit-tests only prints "Raw cycle is not stable" then.
        report_info!(
            "the stable bit is not set on every reading (or not advertised): raw warps ({warps}) are allowed"
        );
    }

    let adjusted = Cycles::new();
    cycle_test(clock, &adjusted, false, true, loops);
    let (warps, worst) = (
        adjusted.warps.load(Ordering::SeqCst),
        adjusted.worst.load(Ordering::SeqCst),
    );
    report_info!(
        "monotonic cycles: {} stalls",
        adjusted.stalls.load(Ordering::SeqCst)
    );
    // A reading without the stable bit is clamped to the global last value, so it cannot
    // warp by construction: only readings taken raw under the stable bit can. Without any,
    // the count is the fix-up's own bookkeeping, shown but not judged.
    if adjusted.any_stable.load(Ordering::SeqCst) {
        report!(
            warps == 0,
            "{warps} time warps detected: readings with the stable-bit rule never go backwards across CPUs (worst {worst} ns)"
        );
    } else {
        report_info!(
            "{warps} time warps: no reading had PVCLOCK_TSC_STABLE_BIT, so pvclock's fix-up made them monotonic by construction (not a check)"
        );
    }

    let timed = Cycles::new();
    // The CPUs read at once: each CPU's loop takes the whole time.
    let per_read = |cycles: u64| cycles / loops.max(1);
    let raw_cycles = cycle_test(clock, &timed, true, false, loops);
    benchmark::report("raw_read", per_read(raw_cycles), "cycles");
    let adjusted_cycles = cycle_test(clock, &timed, false, false, loops);
    benchmark::report("adjusted_read", per_read(adjusted_cycles), "cycles");
}
