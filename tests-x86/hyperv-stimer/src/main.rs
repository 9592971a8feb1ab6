//! hyperv_stimer: Hyper-V's synthetic timers (kvm-unit-tests' x86/hyperv_stimer.c) on every
//! CPU: periodic timers, a one-shot timer, auto-enable one-shot and periodic timers, each
//! expiring the expected number of times; in message mode (the default) through
//! HVMSG_TIMER_EXPIRED messages in the SynIC message page (SINT2 without, SINT3 with
//! auto-EOI), including a one-shot timer held back while its message slot is busy and
//! delivered after EOM; with the argument `direct`, as interrupts on their own APIC vectors.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use vmunit::arch::cpuid::hypervisor_signature;
use vmunit::arch::hyperv::{
    self, HypervFeature, MessageType, SINT_COUNT, StimerConfig, Synic, disable_sint, enable_sint,
    end_of_message, stimer_config_msr, stimer_count_msr, this_cpu_message, this_cpu_set_message_type,
};
use vmunit::arch::msr::{HV_X64_MSR_TIME_REF_COUNT, rdmsr, try_wrmsr};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpus};
use vmunit::arch::{InterruptNumber, set_interrupt_handler};
use vmunit::time::wait_until;
use vmunit::{report, report_info, report_skip};

vmunit::main!(main);

const SINT1_VECTOR: u8 = 0xf1;
const SINT2_VECTOR: u8 = 0xf2;
const APIC_VECTOR1: u8 = 0xf3;
const APIC_VECTOR2: u8 = 0xf4;
/// Timer 0's SINT in message mode (delivered on SINT1_VECTOR, EOI by the handler).
const SINT1: u8 = 2;
/// Timer 1's SINT (SINT2_VECTOR, auto-EOI).
const SINT2: u8 = 3;
const ONE_MILLISECOND: u64 = 10_000;
/// The longest wait for 1000 periods of 1 ms, or for one expiry.
const PATIENCE_MS: u64 = 10_000;

/// Expiries of each CPU's timers 0 and 1.
static FIRED: [[AtomicU32; 2]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 2] }; MAX_CPUS];
/// A message the handler did not expect, 0 if none: an unknown type, or a timer message with
/// a short payload or bad timer index (payload size in bits 63:56, first payload word below),
/// or any in direct mode.
static BAD_MESSAGE: AtomicU64 = AtomicU64::new(0);
/// Whether the timers run in direct mode.
static DIRECT: AtomicBool = AtomicBool::new(false);

/// kvm-unit-tests' `__stimer_isr`: every message slot of this CPU's page.
fn message_interrupt(_vector: InterruptNumber) {
    let cpu = cpu_index();
    for sint in 0..SINT_COUNT {
        let Some(message) = this_cpu_message(sint) else {
            return;
        };
        match message.message_type {
            MessageType::None => continue,
            MessageType::TimerExpired => {}
            MessageType::Other(kind) => {
                // No printing here: the interrupted code may hold the console.
                BAD_MESSAGE.store(u64::from(kind), Ordering::SeqCst);
                continue;
            }
        }
        let timer = message.payload[0] as u32;
        if message.payload_size < 24 || timer >= 2 || DIRECT.load(Ordering::SeqCst) {
            BAD_MESSAGE.store(
                message.payload[0] | u64::from(message.payload_size) << 56,
                Ordering::SeqCst,
            );
        } else {
            FIRED[cpu][timer as usize].fetch_add(1, Ordering::SeqCst);
        }
        this_cpu_set_message_type(sint, 0);
        if message.pending {
            let _ = end_of_message();
        }
    }
}

fn direct_interrupt(vector: InterruptNumber) {
    let timer = usize::from(vector == APIC_VECTOR2);
    FIRED[cpu_index()][timer].fetch_add(1, Ordering::SeqCst);
}

fn main(args: &[&str]) {
    let direct = args.first() == Some(&"direct");
    let signature = hypervisor_signature();
    for (feature, name) in [
        (HypervFeature::Synic, "Hyper-V SynIC is not supported"),
        (
            HypervFeature::SyntheticTimers,
            "Hyper-V SynIC timers are not supported",
        ),
        (
            HypervFeature::TimeRefCount,
            "Hyper-V time reference counter is not supported",
        ),
    ] {
        if !hyperv::has(feature) {
            report_skip!("{name} (hypervisor signature \"{}\")", signature.escape_ascii());
            return;
        }
    }
    if direct && !hyperv::has(HypervFeature::StimerDirectMode) {
        report_skip!("Hyper-V SynIC timer direct mode is not supported");
        return;
    }
    DIRECT.store(direct, Ordering::SeqCst);
    let cpus = cpu_count();
    report_info!(
        "cpus = {cpus}, {} mode",
        if direct { "direct" } else { "message" }
    );
    if direct {
        set_interrupt_handler(APIC_VECTOR1, Some(direct_interrupt));
        set_interrupt_handler(APIC_VECTOR2, Some(direct_interrupt));
    } else {
        set_interrupt_handler(SINT1_VECTOR, Some(message_interrupt));
        set_interrupt_handler(SINT2_VECTOR, Some(message_interrupt));
    }
    let synics: [Option<Synic>; MAX_CPUS] =
        core::array::from_fn(|cpu| (cpu < cpus && !direct).then(Synic::new).flatten());

    on_cpus(|| {
        let cpu = cpu_index();
        if let Some(synic) = &synics[cpu] {
            let ready = synic.enable_this_cpu().is_ok()
                && enable_sint(SINT1, SINT1_VECTOR, false).is_ok()
                && enable_sint(SINT2, SINT2_VECTOR, true).is_ok();
            report!(ready, "CPU {cpu}: SynIC, SINT{SINT1} and SINT{SINT2} enabled");
        }
        timers(cpu, synics[cpu].as_ref());
        let mut clean = (0..4).all(|timer| try_wrmsr(stimer_config_msr(timer), 0).is_ok());
        if let Some(synic) = &synics[cpu] {
            clean &= disable_sint(SINT1).is_ok()
                && disable_sint(SINT2).is_ok()
                && synic.disable_this_cpu().is_ok();
        }
        report!(clean, "CPU {cpu}: timers stopped and the SynIC disabled");
    });
    let bad = BAD_MESSAGE.load(Ordering::SeqCst);
    report!(
        bad == 0,
        "every SynIC message was a valid HVMSG_TIMER_EXPIRED for timer 0 or 1, and none came in direct mode (last bad one: {bad:#x})"
    );
}

/// kvm-unit-tests' `stimer_start`: timer `timer` of this CPU, periodic with period `ticks`
/// or one-shot `ticks` from now, to its SINT or (direct) APIC vector.
fn start(timer: u8, auto_enable: bool, periodic: bool, ticks: u64) {
    let cpu = cpu_index();
    FIRED[cpu][usize::from(timer)].store(0, Ordering::SeqCst);
    let direct = DIRECT.load(Ordering::SeqCst);
    let config = StimerConfig {
        enable: true,
        periodic,
        auto_enable,
        direct_mode: direct,
        apic_vector: if direct {
            [APIC_VECTOR1, APIC_VECTOR2][usize::from(timer)]
        } else {
            0
        },
        sint: if direct {
            0
        } else {
            [SINT1, SINT2][usize::from(timer)]
        },
    };
    let count = if periodic {
        ticks
    } else {
        rdmsr(HV_X64_MSR_TIME_REF_COUNT) + ticks
    };
    let written = if auto_enable {
        try_wrmsr(stimer_config_msr(timer), config.bits()).and(try_wrmsr(stimer_count_msr(timer), count))
    } else {
        try_wrmsr(stimer_count_msr(timer), count).and(try_wrmsr(stimer_config_msr(timer), config.bits()))
    };
    if written.is_err() {
        report_info!("CPU {cpu}: stimer {timer}: WRMSR faulted: {written:x?}");
    }
}

fn stop(timer: u8) {
    let _ = try_wrmsr(stimer_config_msr(timer), 0);
}

fn fired(timer: u8) -> u32 {
    FIRED[cpu_index()][usize::from(timer)].load(Ordering::SeqCst)
}

/// kvm-unit-tests' `stimer_test` on one CPU.
fn timers(cpu: usize, synic: Option<&Synic>) {
    start(0, false, true, ONE_MILLISECOND);
    start(1, false, true, ONE_MILLISECOND);
    let both = wait_until(PATIENCE_MS, || fired(0) >= 1000 && fired(1) >= 1000);
    report!(
        both,
        "Hyper-V SynIC periodic timers test vcpu {cpu}: 1000 expiries of 1 ms each (got {}, {})",
        fired(0),
        fired(1)
    );
    stop(0);
    stop(1);

    start(0, false, false, ONE_MILLISECOND);
    report!(
        wait_until(PATIENCE_MS, || fired(0) >= 1),
        "Hyper-V SynIC one-shot test vcpu {cpu}"
    );
    stop(0);

    start(1, true, false, ONE_MILLISECOND);
    report!(
        wait_until(PATIENCE_MS, || fired(1) >= 1),
        "Hyper-V SynIC auto-enable one-shot timer test vcpu {cpu}"
    );
    stop(1);

    start(0, true, true, ONE_MILLISECOND);
    report!(
        wait_until(PATIENCE_MS, || fired(0) >= 1000),
        "Hyper-V SynIC auto-enable periodic timer test vcpu {cpu} (got {})",
        fired(0)
    );
    stop(0);

    // Message mode only: a busy slot holds the expiry back until EOM.
    let Some(synic) = synic else {
        return;
    };
    synic.set_message_type(SINT1, MessageType::TIMER_EXPIRED);
    start(0, false, false, ONE_MILLISECOND);
    let pending = wait_until(PATIENCE_MS, || synic.message(SINT1).pending);
    report!(
        pending,
        "vcpu {cpu}: the busy slot's MessagePending flag is set by the expiry"
    );
    report!(fired(0) == 0, "no timer fired while msg slot busy: vcpu {cpu}");
    synic.set_message_type(SINT1, 0);
    report!(end_of_message().is_ok(), "vcpu {cpu}: EOM written");
    report!(
        wait_until(PATIENCE_MS, || fired(0) >= 1),
        "timer resumed when msg slot released: vcpu {cpu}"
    );
    stop(0);
}
