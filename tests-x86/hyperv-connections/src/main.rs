//! hyperv_connections: Hyper-V message and event connections (kvm-unit-tests'
//! x86/hyperv_connections.c): through the hypercall page, HvPostMessage delivers a message to
//! the SynIC message slot of the connection's CPU (itself or another), holds a second one
//! back while the slot is busy (MessagePending) and delivers it after EOM; HvSignalEvent sets
//! the connection's event flag and interrupts once, and not again while the flag is set.
//! Connections come from QEMU's `hyperv-testdev`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use vmunit::arch::cpuid::hypervisor_signature;
use vmunit::arch::hyperv::{
    self, HV_STATUS_INVALID_HYPERCALL_CODE, HVCALL_POST_MESSAGE, HVCALL_SIGNAL_EVENT, HypercallPage,
    HypervFeature, MessageType, PostMessageInput, Synic, TestDeviceCommand, disable_sint, enable_sint,
    end_of_message, test_device,
};
use vmunit::arch::msr::{HV_X64_MSR_VP_INDEX, try_rdmsr};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpu, on_cpus};
use vmunit::arch::{InterruptNumber, set_interrupt_handler};
use vmunit::time::wait_until;
use vmunit::{report, report_info, report_skip};

vmunit::main!(main);

const MESSAGE_VECTOR: u8 = 0xb0;
const EVENT_VECTOR: u8 = 0xb1;
const MESSAGE_SINT: u8 = 8;
const EVENT_SINT: u8 = 9;
const MESSAGE_CONNECTION_BASE: u8 = 0x10;
const EVENT_CONNECTION_BASE: u8 = 0x20;
const MESSAGE_TYPE: u32 = 0x1234_5678;
/// How long every CPU waits, interrupts enabled, for deliveries (kvm-unit-tests: 10^7 PAUSEs).
const WAIT_MS: u64 = 100;
/// A hypercall that did not run.
const NO_STATUS: u64 = u64::MAX;

/// SINT interrupts each CPU took.
static RECEIVED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The last hypercall result for each CPU's connection.
static STATUS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NO_STATUS) }; MAX_CPUS];

fn sint_interrupt(_vector: InterruptNumber) {
    RECEIVED[cpu_index()].fetch_add(1, Ordering::SeqCst);
}

/// One CPU's side: its SynIC pages and its HvPostMessage input.
struct Vcpu {
    synic: Synic,
    post: PostMessageInput,
    vp_index: AtomicU32,
}

fn message_connection(cpu: usize) -> u8 {
    MESSAGE_CONNECTION_BASE + cpu as u8
}

fn event_connection(cpu: usize) -> u8 {
    EVENT_CONNECTION_BASE + cpu as u8
}

fn main(_args: &[&str]) {
    if !hyperv::has(HypervFeature::Synic) {
        report_skip!(
            "Hyper-V SynIC is not supported (hypervisor signature \"{}\")",
            hypervisor_signature().escape_ascii()
        );
        return;
    }
    let cpus = cpu_count();
    set_interrupt_handler(MESSAGE_VECTOR, Some(sint_interrupt));
    set_interrupt_handler(EVENT_VECTOR, Some(sint_interrupt));

    let hypercalls = HypercallPage::new();
    report!(
        hypercalls.enable().is_ok(),
        "HV_X64_MSR_GUEST_OS_ID and HV_X64_MSR_HYPERCALL enable the hypercall page"
    );
    let probe = hypercalls.call(HVCALL_SIGNAL_EVENT, 0x1234, true);
    report!(
        probe.is_ok(),
        "the hypervisor filled the hypercall page and a hypercall through it returns (code {:02x?}, got {probe:x?})",
        hypercalls.code()
    );
    let Ok(probe) = probe else {
        return;
    };
    if probe as u16 == HV_STATUS_INVALID_HYPERCALL_CODE {
        report_skip!("Hyper-V SynIC connections are not supported");
        return;
    }

    let vcpus: [Option<Vcpu>; MAX_CPUS] = core::array::from_fn(|cpu| {
        (cpu < cpus).then(|| Vcpu {
            synic: Synic::new().expect("frames for the SynIC pages"),
            post: PostMessageInput::new().expect("a frame for the HvPostMessage input"),
            vp_index: AtomicU32::new(0),
        })
    });
    let vcpu = |cpu: usize| vcpus[cpu].as_ref().expect("a CPU that runs");
    for cpu in 0..cpus {
        on_cpu(cpu, || setup(cpu, vcpu(cpu)));
    }

    let post = |destination: usize| {
        let target = vcpu(destination);
        let first = target.post.first_word() + 1;
        target
            .post
            .set(u32::from(message_connection(destination)), MESSAGE_TYPE, 8, first);
        RECEIVED[destination].store(0, Ordering::SeqCst);
        let status = hypercalls.call(HVCALL_POST_MESSAGE, target.post.address(), false);
        STATUS[destination].store(status.unwrap_or(NO_STATUS), Ordering::SeqCst);
    };
    let signal = |destination: usize| {
        RECEIVED[destination].store(0, Ordering::SeqCst);
        let status = hypercalls.call(
            HVCALL_SIGNAL_EVENT,
            u64::from(event_connection(destination)),
            true,
        );
        STATUS[destination].store(status.unwrap_or(NO_STATUS), Ordering::SeqCst);
    };
    let clear_message = |cpu: usize| {
        RECEIVED[cpu].store(0, Ordering::SeqCst);
        vcpu(cpu).synic.set_message_type(MESSAGE_SINT, 0);
        let _ = end_of_message();
    };
    let clear_event = |cpu: usize| {
        RECEIVED[cpu].store(0, Ordering::SeqCst);
        vcpu(cpu)
            .synic
            .clear_event_flag(EVENT_SINT, u32::from(event_connection(cpu)));
    };
    let message_ok = |cpu: usize, busy: bool| {
        let target = vcpu(cpu);
        let message = target.synic.message(MESSAGE_SINT);
        let posted = target.post.first_word();
        message.message_type == MessageType::of(MESSAGE_TYPE)
            && message.payload_size == 8
            && message.pending == busy
            && message.payload[0] == if busy { posted - 1 } else { posted }
            && STATUS[cpu].load(Ordering::SeqCst) == 0
            && RECEIVED[cpu].load(Ordering::SeqCst) == u32::from(!busy)
    };
    let event_ok = |cpu: usize, busy: bool| {
        let flag = u32::from(event_connection(cpu));
        vcpu(cpu).synic.event_flags_word(EVENT_SINT, flag) == 1 << (flag % 64)
            && STATUS[cpu].load(Ordering::SeqCst) == 0
            && RECEIVED[cpu].load(Ordering::SeqCst) == u32::from(!busy)
    };
    // kvm-unit-tests' run_test: CPU i acts for CPU (i + offset) % cpus, then all wait.
    let run = |offset: usize, action: &(dyn Fn(usize) + Sync)| {
        on_cpus(|| {
            action((cpu_index() + offset) % cpus);
            let _ = wait_until(WAIT_MS, || false);
        });
    };
    let count = |check: &dyn Fn(usize) -> bool| (0..cpus).filter(|&cpu| check(cpu)).count();

    run(0, &post);
    let good = count(&|cpu| message_ok(cpu, false));
    report!(good == cpus, "send message to self: {good}/{cpus}");
    run(0, &clear_message);
    run(1, &post);
    let good = count(&|cpu| message_ok(cpu, false));
    report!(good == cpus, "send message to another cpu: {good}/{cpus}");
    run(1, &post);
    let good = count(&|cpu| message_ok(cpu, true));
    report!(good == cpus, "send message to busy slot: {good}/{cpus}");
    run(0, &clear_message);
    let good = count(&|cpu| message_ok(cpu, false));
    report!(good == cpus, "receive pending message: {good}/{cpus}");

    run(0, &signal);
    let good = count(&|cpu| event_ok(cpu, false));
    report!(good == cpus, "signal event on self: {good}/{cpus}");
    run(0, &clear_event);
    run(1, &signal);
    let good = count(&|cpu| event_ok(cpu, false));
    report!(good == cpus, "signal event on another cpu: {good}/{cpus}");
    run(1, &signal);
    let good = count(&|cpu| event_ok(cpu, true));
    report!(good == cpus, "signal event already set: {good}/{cpus}");

    for cpu in 0..cpus {
        on_cpu(cpu, || teardown(cpu, vcpu(cpu)));
    }
    report!(
        hypercalls.disable().is_ok(),
        "HV_X64_MSR_HYPERCALL and HV_X64_MSR_GUEST_OS_ID back to 0"
    );
}

/// kvm-unit-tests' `setup_cpu`.
fn setup(cpu: usize, vcpu: &Vcpu) {
    let vp_index = try_rdmsr(HV_X64_MSR_VP_INDEX).map_or(cpu as u32, |index| index as u32);
    vcpu.vp_index.store(vp_index, Ordering::SeqCst);
    report_info!("CPU {cpu}: VP index {vp_index}");
    let enabled = vcpu.synic.enable_this_cpu().is_ok();
    test_device(
        TestDeviceCommand::MessageConnectionCreate,
        vp_index as u8,
        MESSAGE_SINT,
        message_connection(cpu),
    );
    let message_sint = enable_sint(MESSAGE_SINT, MESSAGE_VECTOR, true).is_ok();
    test_device(
        TestDeviceCommand::EventConnectionCreate,
        vp_index as u8,
        EVENT_SINT,
        event_connection(cpu),
    );
    let event_sint = enable_sint(EVENT_SINT, EVENT_VECTOR, true).is_ok();
    vcpu.post.set(
        u32::from(message_connection(cpu)),
        MESSAGE_TYPE,
        8,
        (cpu as u64) << 16,
    );
    report!(
        enabled && message_sint && event_sint,
        "CPU {cpu}: SynIC enabled, SINT{MESSAGE_SINT} and SINT{EVENT_SINT} unmasked with auto-EOI"
    );
}

/// kvm-unit-tests' `teardown_cpu`.
fn teardown(cpu: usize, vcpu: &Vcpu) {
    let event_sint = disable_sint(EVENT_SINT).is_ok();
    test_device(
        TestDeviceCommand::EventConnectionDestroy,
        0,
        0,
        event_connection(cpu),
    );
    let message_sint = disable_sint(MESSAGE_SINT).is_ok();
    test_device(
        TestDeviceCommand::MessageConnectionDestroy,
        0,
        0,
        message_connection(cpu),
    );
    let disabled = vcpu.synic.disable_this_cpu().is_ok();
    report!(
        event_sint && message_sint && disabled,
        "CPU {cpu}: connections destroyed, SINTs masked, SynIC disabled"
    );
}
