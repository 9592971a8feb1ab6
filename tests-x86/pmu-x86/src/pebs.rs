//! pmu_pebs (`test_args = "pebs"`): kvm-unit-tests' pmu_pebs. On Intel with PMU version 2 or
//! later, PEBS record format 4 or later and PEBS available in IA32_MISC_ENABLE: each counter
//! counting with PEBS enabled from each of kvm-unit-tests' start values writes PEBS records into
//! the DS area's buffer once it overflows (IA32_PERF_GLOBAL_STATUS bit 62), each naming the
//! counter, as long as its groups make it, with the groups' bits in its format field; a counter
//! that does not overflow writes none. The general-purpose counters one by one, then the even
//! ones together; where PEBS baseline is offered, also the fixed counters, and every
//! MSR_PEBS_DATA_CFG value (memory info, GPRs, XMMs, LBRs) both with the counters' adaptive bit
//! ("Adaptive": the record holds those groups, and its LBR entries are empty, the guest having
//! recorded none) and without it ("Ignored Adaptive": a basic record). Each missing piece SKIPs
//! with kvm-unit-tests' reason.

use vmunit::arch::cpuid::{Vendor, cpuid, vendor};
use vmunit::arch::msr::{
    IA32_A_PMC0, IA32_DS_AREA, IA32_FIXED_CTR_CTRL, IA32_FIXED_CTR0, IA32_MISC_ENABLE, IA32_PEBS_ENABLE,
    IA32_PERF_GLOBAL_CTRL, IA32_PERF_GLOBAL_OVF_CTRL, IA32_PERF_GLOBAL_STATUS, IA32_PERFEVTSEL0, IA32_PMC0,
    MAX_LBR_ENTRIES, MISC_ENABLE_PEBS_UNAVAILABLE, MSR_PEBS_DATA_CFG, try_rdmsr, try_wrmsr,
};
use vmunit::arch::pmu::{
    Capabilities, EVENT_ENABLE, EVENT_OS, EVENT_USR, GLOBAL_STATUS_BUFFER_OVERFLOW, PerfCapabilities,
    capabilities, perf_capabilities,
};
use vmunit::memory::{DmaBuffer, PAGE_SIZE};
use vmunit::{prefix, report, report_info, report_skip};

/// kvm-unit-tests' intel_arch_events, one per general-purpose counter.
const EVENTS: [u64; 8] = [0x00c4, 0x00c5, 0x0300, 0x003c, 0x00c0, 0x013c, 0x4f2e, 0x412e];
/// The bit of fixed counter 0 in IA32_PEBS_ENABLE and IA32_PERF_GLOBAL_CTRL.
const FIXED_INDEX: u32 = 32;
/// PERFEVTSEL bit 34: the counter writes adaptive records (MSR_PEBS_DATA_CFG's groups).
const EVENT_ADAPTIVE: u64 = 1 << 34;
/// MSR_PEBS_DATA_CFG: memory info, GPRs, XMMs, LBRs (bits 3:0), and the LBR count less one at
/// bit 24.
const DATA_MEMORY_INFO: u64 = 1 << 0;
const DATA_GPRS: u64 = 1 << 1;
const DATA_XMMS: u64 = 1 << 2;
const DATA_LBRS: u64 = 1 << 3;
const DATA_MASK: u64 = 0xf;
const DATA_LBR_SHIFT: u32 = 24;
/// Record group sizes in bytes: basic (format and size, IP, applicable counters, TSC), memory
/// info, GPRs (flags, IP and 16 registers), XMMs (16 of 16 bytes), one LBR entry (from, to,
/// info).
const BASIC_SIZE: u64 = 32;
const MEMORY_INFO_SIZE: u64 = 32;
const GPRS_SIZE: u64 = 18 * 8;
const XMMS_SIZE: u64 = 16 * 16;
const LBR_ENTRY_SIZE: u64 = 24;
/// The debug-store area's PEBS fields (byte offsets).
const DS_PEBS_BUFFER_BASE: u64 = 0x20;
const DS_PEBS_INDEX: u64 = 0x28;
const DS_PEBS_ABSOLUTE_MAXIMUM: u64 = 0x30;
const DS_PEBS_INTERRUPT_THRESHOLD: u64 = 0x38;

/// kvm-unit-tests' get_pebs_record_size.
fn record_size(data_config: u64, adaptive: bool) -> u64 {
    if !adaptive {
        return BASIC_SIZE;
    }
    let mut size = BASIC_SIZE;
    if data_config & DATA_MEMORY_INFO != 0 {
        size += MEMORY_INFO_SIZE;
    }
    if data_config & DATA_GPRS != 0 {
        size += GPRS_SIZE;
    }
    if data_config & DATA_XMMS != 0 {
        size += XMMS_SIZE;
    }
    if data_config & DATA_LBRS != 0 {
        size += u64::from(MAX_LBR_ENTRIES) * LBR_ENTRY_SIZE;
    }
    size
}

struct Pebs {
    pmu: Capabilities,
    perf: PerfCapabilities,
    store: DmaBuffer,
    buffer: DmaBuffer,
    counters: u32,
}

/// One run: which counters, from what value, with which data configuration.
#[derive(Clone, Copy)]
struct Run {
    mask: u64,
    start: u64,
    data_config: u64,
    adaptive: bool,
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
        "PEBS format {}, {} GP counters, {} fixed counters, baseline {}",
        perf.pebs_format(),
        pmu.counters,
        pmu.fixed_counters,
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
    // kvm-unit-tests' counter_start_values, for the counter's width: no overflow, overflow
    // with records, overflow on the first event.
    for start in [0, top - 0xf, top - 1, top] {
        pebs.check_counters(start, 0, false);
        if !perf.pebs_baseline() {
            continue;
        }
        for groups in 0..=DATA_MASK {
            let mut data_config = groups;
            if data_config & DATA_LBRS != 0 {
                data_config |= u64::from(MAX_LBR_ENTRIES - 1) << DATA_LBR_SHIFT;
            }
            {
                let _prefix = prefix!("Adaptive ({data_config:#x})");
                pebs.check_counters(start, data_config, true);
            }
            let _prefix = prefix!("Ignored Adaptive ({data_config:#x})");
            pebs.check_counters(start, data_config, false);
        }
    }
    pebs.reset();
}

impl Pebs {
    fn counter_msr(&self, counter: u32) -> u32 {
        if self.perf.full_width_writes() {
            IA32_A_PMC0 + counter
        } else {
            IA32_PMC0 + counter
        }
    }

    fn fixed_counters(&self) -> u32 {
        if self.perf.pebs_baseline() {
            self.pmu.fixed_counters
        } else {
            0
        }
    }

    /// kvm-unit-tests' check_pebs_counters.
    fn check_counters(&self, start: u64, data_config: u64, adaptive: bool) {
        let run = |mask| Run {
            mask,
            start,
            data_config,
            adaptive,
        };
        for counter in 0..self.fixed_counters() {
            let _prefix = prefix!("Extended Fixed counter {counter} ({start:#x})");
            self.check(run(1 << (FIXED_INDEX + counter)));
        }
        for counter in 0..self.counters {
            let _prefix = prefix!("GP counter {counter} ({start:#x})");
            self.check(run(1 << counter));
        }
        let fixed = (0..self.fixed_counters()).fold(0, |mask, counter| mask | 1 << (FIXED_INDEX + counter));
        let even = (0..self.counters)
            .step_by(2)
            .fold(fixed, |mask, counter| mask | 1 << counter);
        let _prefix = prefix!("Multiple ({even:#x})");
        self.check(run(even));
    }

    fn reset(&self) {
        self.store.fill(0);
        self.buffer.fill(0);
        let _ = try_wrmsr(IA32_PEBS_ENABLE, 0);
        let _ = try_wrmsr(IA32_DS_AREA, 0);
        if self.perf.pebs_baseline() {
            let _ = try_wrmsr(MSR_PEBS_DATA_CFG, 0);
        }
        let _ = try_wrmsr(IA32_PERF_GLOBAL_CTRL, 0);
        if let Ok(status) = try_rdmsr(IA32_PERF_GLOBAL_STATUS) {
            let _ = try_wrmsr(IA32_PERF_GLOBAL_OVF_CTRL, status);
        }
        for counter in 0..self.pmu.counters {
            let _ = try_wrmsr(IA32_PERFEVTSEL0 + counter, 0);
            let _ = try_wrmsr(IA32_PMC0 + counter, 0);
        }
        let _ = try_wrmsr(IA32_FIXED_CTR_CTRL, 0);
        for counter in 0..self.pmu.fixed_counters {
            let _ = try_wrmsr(IA32_FIXED_CTR0 + counter, 0);
        }
    }

    /// kvm-unit-tests' pebs_enable.
    fn enable(&self, run: Run) {
        if self.perf.pebs_baseline() {
            let _ = try_wrmsr(MSR_PEBS_DATA_CFG, run.data_config);
        }
        let base = self.buffer.physical_address();
        self.store.write_u64(DS_PEBS_BUFFER_BASE, base);
        self.store.write_u64(DS_PEBS_INDEX, base);
        self.store.write_u64(DS_PEBS_ABSOLUTE_MAXIMUM, base + PAGE_SIZE);
        self.store.write_u64(
            DS_PEBS_INTERRUPT_THRESHOLD,
            base + record_size(run.data_config, run.adaptive),
        );
        let mut fixed_control = 0;
        for counter in
            (0..self.fixed_counters()).filter(|counter| run.mask & 1 << (FIXED_INDEX + counter) != 0)
        {
            let _ = try_wrmsr(IA32_FIXED_CTR0 + counter, run.start);
            // OS, USR and PMI (0xb), and the adaptive bit kvm-unit-tests sets at 32 + 4n.
            fixed_control |= 0xb << (counter * 4);
            if run.adaptive {
                fixed_control |= 1 << (FIXED_INDEX + counter * 4);
            }
        }
        if fixed_control != 0 {
            let _ = try_wrmsr(IA32_FIXED_CTR_CTRL, fixed_control);
        }
        for counter in (0..self.counters).filter(|counter| run.mask & 1 << counter != 0) {
            let adaptive = if run.adaptive { EVENT_ADAPTIVE } else { 0 };
            let select = EVENT_ENABLE | EVENT_OS | EVENT_USR | EVENTS[counter as usize] | adaptive;
            let _ = try_wrmsr(IA32_PERFEVTSEL0 + counter, select);
            let _ = try_wrmsr(self.counter_msr(counter), run.start);
        }
        let _ = try_wrmsr(IA32_DS_AREA, self.store.physical_address());
        let _ = try_wrmsr(IA32_PEBS_ENABLE, run.mask);
        let _ = try_wrmsr(IA32_PERF_GLOBAL_CTRL, run.mask);
    }

    /// kvm-unit-tests' check_one_counter / check_multiple_counters and check_pebs_records.
    fn check(&self, run: Run) {
        self.reset();
        self.enable(run);
        // kvm-unit-tests' workload: six CPUIDs (and its never-taken branches).
        for _ in 0..6 {
            core::hint::black_box(cpuid(0xa, 0));
        }
        // kvm-unit-tests' pebs_disable: for odd counters PEBS is turned off before the counter,
        // so that an overflow in between raises a plain counter interrupt, not a record.
        if run.mask.trailing_zeros() % 2 == 1 {
            let _ = try_wrmsr(IA32_PEBS_ENABLE, 0);
        }
        let _ = try_wrmsr(IA32_PERF_GLOBAL_CTRL, 0);

        let base = self.buffer.physical_address();
        let index = self.store.read_u64(DS_PEBS_INDEX);
        let empty = index == base && self.buffer.read_u64(0) == 0;
        let status = match try_rdmsr(IA32_PERF_GLOBAL_STATUS) {
            Ok(status) => status,
            Err(exception) => {
                // Not read as 0: that would take the "no overflow, no records" branch below.
                report!(
                    false,
                    "IA32_PERF_GLOBAL_STATUS can be read after the workload (got {exception})"
                );
                return;
            }
        };
        if status & GLOBAL_STATUS_BUFFER_OVERFLOW == 0 {
            report!(
                empty,
                "No OVF irq, none PEBS records (PEBS index {:#x} past the base)",
                index.wrapping_sub(base)
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
        let expected_size = record_size(run.data_config, run.adaptive);
        let expected_config = if run.adaptive { run.data_config } else { 0 };
        let mut offset = 0;
        let mut sequence = 0;
        while base + offset < index && offset + BASIC_SIZE <= PAGE_SIZE {
            let format_size = self.buffer.read_u64(offset);
            let applicable = self.buffer.read_u64(offset + 16);
            let size = format_size >> 48;
            let good = applicable & run.mask != 0
                && size == expected_size
                && format_size & format_mask == expected_config;
            report!(
                good,
                "PEBS record (written seq {sequence}) is verified (including size, counters and cfg): applicable counters {applicable:#x} of {:#x}, size {size} (expected {expected_size}), cfg {:#x} (expected {expected_config:#x})",
                run.mask,
                format_size & format_mask
            );
            if run.adaptive && run.data_config & DATA_LBRS != 0 && offset + size <= PAGE_SIZE {
                let lbrs = offset + record_size(run.data_config & !DATA_LBRS, true);
                for entry in 0..u64::from(MAX_LBR_ENTRIES) {
                    let at = lbrs + entry * LBR_ENTRY_SIZE;
                    let (from, to) = (self.buffer.read_u64(at), self.buffer.read_u64(at + 8));
                    if from != 0 || to != 0 {
                        report!(
                            false,
                            "PEBS LBR record {entry} isn't empty, got from = '{from:#x}', to = '{to:#x}', info = '{:#x}'",
                            self.buffer.read_u64(at + 16)
                        );
                    }
                }
            }
            if !good || size == 0 {
                return;
            }
            offset += size;
            sequence += 1;
        }
    }
}
