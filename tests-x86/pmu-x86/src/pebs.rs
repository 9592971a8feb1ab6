//! pmu_pebs (`test_args = "pebs"`): kvm-unit-tests' pmu_pebs, its non-adaptive half. On Intel
//! with PMU version 2 or later, PEBS record format 4 or later and PEBS available in
//! IA32_MISC_ENABLE: each general-purpose counter counting an architectural event with PEBS
//! enabled from each of kvm-unit-tests' start values writes basic PEBS records into the DS
//! area's buffer once it overflows (IA32_PERF_GLOBAL_STATUS bit 62), each naming the counter,
//! 32 bytes long, with no data-configuration bits; a counter that does not overflow writes none;
//! then the even counters together. Each missing piece SKIPs with kvm-unit-tests' reason. Not
//! written yet: the fixed counters and adaptive PEBS (MSR_PEBS_DATA_CFG), which kvm-unit-tests
//! runs where PEBS baseline is offered (a SKIP line says so).

use vmunit::arch::cpuid::{Vendor, cpuid, vendor};
use vmunit::arch::msr::{
    IA32_A_PMC0, IA32_DS_AREA, IA32_MISC_ENABLE, IA32_PEBS_ENABLE, IA32_PERF_GLOBAL_CTRL,
    IA32_PERF_GLOBAL_OVF_CTRL, IA32_PERF_GLOBAL_STATUS, IA32_PERFEVTSEL0, IA32_PMC0,
    MISC_ENABLE_PEBS_UNAVAILABLE, try_rdmsr, try_wrmsr,
};
use vmunit::arch::pmu::{
    Capabilities, EVENT_ENABLE, EVENT_OS, EVENT_USR, GLOBAL_STATUS_BUFFER_OVERFLOW, PerfCapabilities,
    capabilities, perf_capabilities,
};
use vmunit::memory::{DmaBuffer, PAGE_SIZE};
use vmunit::{prefix, report, report_info, report_skip};

/// kvm-unit-tests' intel_arch_events, one per general-purpose counter.
const EVENTS: [u64; 8] = [0x00c4, 0x00c5, 0x0300, 0x003c, 0x00c0, 0x013c, 0x4f2e, 0x412e];
/// A basic PEBS record: format and size, IP, applicable counters, TSC.
const BASIC_RECORD_SIZE: u64 = 32;
/// The debug-store area's PEBS fields (byte offsets).
const DS_PEBS_BUFFER_BASE: u64 = 0x20;
const DS_PEBS_INDEX: u64 = 0x28;
const DS_PEBS_ABSOLUTE_MAXIMUM: u64 = 0x30;
const DS_PEBS_INTERRUPT_THRESHOLD: u64 = 0x38;

struct Pebs {
    pmu: Capabilities,
    perf: PerfCapabilities,
    store: DmaBuffer,
    buffer: DmaBuffer,
    counters: u32,
}

pub fn run() {
    if vendor() != Vendor::Intel {
        report_skip!(
            "PEBS requires Intel ICX or later, non-Intel detected ({:?})",
            vendor()
        );
        return;
    }
    let pmu = capabilities();
    let perf = perf_capabilities().unwrap_or_default();
    if pmu.version <= 1 {
        report_skip!("PEBS required PMU version 2, reported version is {}", pmu.version);
        return;
    }
    if perf.pebs_format() < 4 {
        report_skip!(
            "This test supports PEBS_Record_Format >= 4 only (IA32_PERF_CAPABILITIES[11:8] is {}; {perf:x?})",
            perf.pebs_format()
        );
        return;
    }
    let misc = try_rdmsr(IA32_MISC_ENABLE);
    if matches!(misc, Ok(value) if value & MISC_ENABLE_PEBS_UNAVAILABLE != 0) {
        report_skip!("PEBS unavailable according to MISC_ENABLE ({misc:x?})");
        return;
    }
    report_info!(
        "PEBS format {}, {} GP counters, baseline {}",
        perf.pebs_format(),
        pmu.counters,
        perf.pebs_baseline()
    );
    let pebs = Pebs {
        pmu,
        perf,
        store: DmaBuffer::new(1),
        buffer: DmaBuffer::new(1),
        counters: pmu.counters.min(EVENTS.len() as u32),
    };
    let width = if perf.full_width_writes() {
        pmu.counter_width
    } else {
        32
    };
    let top = (1u64 << width) - 1;
    // kvm-unit-tests' counter_start_values, for the counter's width.
    for start in [0, top - 0xf, top - 1, top] {
        for counter in 0..pebs.counters {
            let _prefix = prefix!("GP counter {counter} ({start:#x})");
            pebs.check(1 << counter, start);
        }
        let even = (0..pebs.counters)
            .step_by(2)
            .fold(0, |mask, counter| mask | 1 << counter);
        let _prefix = prefix!("Multiple ({even:#x}, {start:#x})");
        pebs.check(even, start);
    }
    if perf.pebs_baseline() {
        report_skip!("fixed counters and adaptive PEBS (MSR_PEBS_DATA_CFG): not written in vmunit yet");
    }
}

impl Pebs {
    fn counter_msr(&self, counter: u32) -> u32 {
        if self.perf.full_width_writes() {
            IA32_A_PMC0 + counter
        } else {
            IA32_PMC0 + counter
        }
    }

    fn reset(&self) {
        self.store.fill(0);
        self.buffer.fill(0);
        let _ = try_wrmsr(IA32_PEBS_ENABLE, 0);
        let _ = try_wrmsr(IA32_DS_AREA, 0);
        let _ = try_wrmsr(IA32_PERF_GLOBAL_CTRL, 0);
        if let Ok(status) = try_rdmsr(IA32_PERF_GLOBAL_STATUS) {
            let _ = try_wrmsr(IA32_PERF_GLOBAL_OVF_CTRL, status);
        }
        for counter in 0..self.pmu.counters {
            let _ = try_wrmsr(IA32_PERFEVTSEL0 + counter, 0);
            let _ = try_wrmsr(IA32_PMC0 + counter, 0);
        }
    }

    /// kvm-unit-tests' check_one_counter / check_multiple_counters, non-adaptive.
    fn check(&self, mask: u64, start: u64) {
        self.reset();
        let base = self.buffer.physical_address();
        self.store.write_u64(DS_PEBS_BUFFER_BASE, base);
        self.store.write_u64(DS_PEBS_INDEX, base);
        self.store.write_u64(DS_PEBS_ABSOLUTE_MAXIMUM, base + PAGE_SIZE);
        self.store
            .write_u64(DS_PEBS_INTERRUPT_THRESHOLD, base + BASIC_RECORD_SIZE);
        for counter in (0..self.counters).filter(|counter| mask & 1 << counter != 0) {
            let select = EVENT_ENABLE | EVENT_OS | EVENT_USR | EVENTS[counter as usize];
            let _ = try_wrmsr(IA32_PERFEVTSEL0 + counter, select);
            let _ = try_wrmsr(self.counter_msr(counter), start);
        }
        let _ = try_wrmsr(IA32_DS_AREA, self.store.physical_address());
        let _ = try_wrmsr(IA32_PEBS_ENABLE, mask);
        let _ = try_wrmsr(IA32_PERF_GLOBAL_CTRL, mask);
        // kvm-unit-tests' workload: six CPUIDs (and its never-taken branches).
        for _ in 0..6 {
            core::hint::black_box(cpuid(0xa, 0));
        }
        // kvm-unit-tests' pebs_disable: for odd counters PEBS is turned off before the counter,
        // so that an overflow in between raises a plain counter interrupt, not a record.
        if mask.trailing_zeros() % 2 == 1 {
            let _ = try_wrmsr(IA32_PEBS_ENABLE, 0);
        }
        let _ = try_wrmsr(IA32_PERF_GLOBAL_CTRL, 0);

        let index = self.store.read_u64(DS_PEBS_INDEX);
        let empty = index == base && self.buffer.read_u64(0) == 0;
        let status = try_rdmsr(IA32_PERF_GLOBAL_STATUS).unwrap_or(0);
        if status & GLOBAL_STATUS_BUFFER_OVERFLOW == 0 {
            report!(
                empty,
                "No OVF irq, none PEBS records (PEBS index {:#x} past the base)",
                index - base
            );
            return;
        }
        if empty {
            report!(false, "A OVF irq, but none PEBS records.");
            return;
        }
        let format_mask = if self.perf.pebs_timing_info() {
            0xffff_ffff
        } else {
            (1 << 48) - 1
        };
        let mut offset = 0;
        let mut sequence = 0;
        while base + offset < index && offset + BASIC_RECORD_SIZE <= PAGE_SIZE {
            let format_size = self.buffer.read_u64(offset);
            let applicable = self.buffer.read_u64(offset + 16);
            let size = format_size >> 48;
            let good = applicable & mask != 0 && size == BASIC_RECORD_SIZE && format_size & format_mask == 0;
            report!(
                good,
                "PEBS record (written seq {sequence}) is verified (including size, counters and cfg): applicable counters {applicable:#x} of {mask:#x}, size {size}, cfg {:#x}",
                format_size & format_mask
            );
            if !good || size == 0 {
                return;
            }
            offset += size;
            sequence += 1;
        }
    }
}
