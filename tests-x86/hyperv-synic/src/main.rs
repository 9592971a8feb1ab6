//! hyperv_synic: Hyper-V's synthetic interrupt controller (kvm-unit-tests'
//! x86/hyperv_synic.c): the SynIC MSRs read without #GP (EOM reads 0), the message and event
//! flags pages and SCONTROL enabled on every CPU, and all 16 SINTs, routed through QEMU's
//! `hyperv-testdev`, delivered to another CPU on the vector each SINTx names, with and without
//! auto-EOI.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use vmunit::arch::cpuid::hypervisor_signature;
use vmunit::arch::hyperv::{
    self, HypervFeature, SINT_AUTO_EOI, SINT_COUNT, SYNIC_ENABLE, Synic, TestDeviceCommand, disable_sint,
    enable_sint, test_device,
};
use vmunit::arch::msr::{
    HV_X64_MSR_EOM, HV_X64_MSR_SCONTROL, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0,
    HV_X64_MSR_SVERSION, HV_X64_MSR_VP_INDEX, try_rdmsr,
};
use vmunit::arch::smp::{MAX_CPUS, cpu_count, cpu_index, on_cpu, on_cpus};
use vmunit::arch::{InterruptNumber, set_interrupt_handler};
use vmunit::time::wait_until;
use vmunit::{report, report_info, report_skip};

vmunit::main!(main);

/// Each SINT's vector and auto-EOI setting (kvm-unit-tests' `sint_vecs`).
const SINT_VECTORS: [(u8, bool); SINT_COUNT as usize] = [
    (0xb0, false),
    (0xb1, false),
    (0xb2, false),
    (0xb3, true),
    (0xb4, false),
    (0xb5, false),
    (0xb6, false),
    (0xb7, false),
    (0xb8, true),
    (0xb9, false),
    (0xba, true),
    (0xbb, false),
    (0xbc, false),
    (0xbd, false),
    (0xbe, true),
    (0xbf, false),
];

/// Interrupts each CPU took on the SINT vectors.
static ENTERED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The SINT vectors each CPU saw, one bit per SINT.
static SEEN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Each CPU's HV_X64_MSR_VP_INDEX, which `hyperv-testdev` addresses it by.
static VP_INDEX: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

fn sint_interrupt(vector: InterruptNumber) {
    let cpu = cpu_index();
    ENTERED[cpu].fetch_add(1, Ordering::SeqCst);
    SEEN[cpu].fetch_or(1 << (vector - SINT_VECTORS[0].0), Ordering::SeqCst);
    // The runtime writes the APIC's EOI after every handler: for an auto-EOI SINT nothing is
    // in service then, so it ends nothing.
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
    report_info!("ncpus = {cpus}");
    for (vector, _) in SINT_VECTORS {
        set_interrupt_handler(vector, Some(sint_interrupt));
    }
    let synics: [Option<Synic>; MAX_CPUS] =
        core::array::from_fn(|cpu| (cpu < cpus).then(Synic::new).flatten());

    for (cpu, synic) in synics.iter().enumerate().take(cpus) {
        let synic = synic.as_ref().expect("frames for the SynIC pages");
        on_cpu(cpu, || prepare(cpu, synic));
    }

    // Every CPU at once raises the 16 SINTs of its mirror CPU and waits for its own.
    on_cpus(|| {
        let me = cpu_index();
        let destination = cpus - 1 - me;
        let vp_index = VP_INDEX[destination].load(Ordering::SeqCst) as u8;
        for sint in 0..SINT_COUNT {
            test_device(TestDeviceCommand::SintRouteSetSint, vp_index, sint, 0);
        }
        let _ = wait_until(5000, || {
            ENTERED[me].load(Ordering::SeqCst) >= u32::from(SINT_COUNT)
                && ENTERED[destination].load(Ordering::SeqCst) >= u32::from(SINT_COUNT)
        });
    });

    for (cpu, synic) in synics.iter().enumerate().take(cpus) {
        let synic = synic.as_ref().expect("frames for the SynIC pages");
        on_cpu(cpu, || cleanup(cpu, synic));
    }

    let mut pass = true;
    for cpu in 0..cpus {
        let entered = ENTERED[cpu].load(Ordering::SeqCst);
        let seen = SEEN[cpu].load(Ordering::SeqCst);
        report!(
            entered == u32::from(SINT_COUNT),
            "CPU {cpu}: isr_enter_count is 16 (got {entered})"
        );
        report!(
            seen == 0xffff,
            "CPU {cpu}: each SINT came on the vector its SINTx names, 0xb0-0xbf (seen {seen:#06x})"
        );
        pass &= entered == u32::from(SINT_COUNT) && seen == 0xffff;
    }
    report!(pass, "Hyper-V SynIC test");
}

/// kvm-unit-tests' `synic_test_prepare` on CPU `cpu`.
fn prepare(cpu: usize, synic: &Synic) {
    let vp_index = try_rdmsr(HV_X64_MSR_VP_INDEX);
    report_info!("CPU {cpu}: HV_X64_MSR_VP_INDEX {vp_index:x?}");
    VP_INDEX[cpu].store(
        vp_index.map_or(cpu as u32, |index| index as u32),
        Ordering::SeqCst,
    );
    let version = try_rdmsr(HV_X64_MSR_SVERSION);
    report!(
        version == Ok(1),
        "CPU {cpu}: HV_X64_MSR_SVERSION reads 1 (got {version:x?})"
    );
    for (name, msr) in [
        ("SIMP", HV_X64_MSR_SIMP),
        ("SIEFP", HV_X64_MSR_SIEFP),
        ("SCONTROL", HV_X64_MSR_SCONTROL),
    ] {
        let value = try_rdmsr(msr);
        report!(
            value.is_ok(),
            "CPU {cpu}: HV_X64_MSR_{name} reads without #GP (got {value:x?})"
        );
    }
    let sints_read = (0..u32::from(SINT_COUNT)).all(|sint| try_rdmsr(HV_X64_MSR_SINT0 + sint).is_ok());
    report!(sints_read, "CPU {cpu}: HV_X64_MSR_SINT0-15 read without #GP");
    let end_of_message = try_rdmsr(HV_X64_MSR_EOM);
    report!(
        end_of_message == Ok(0),
        "CPU {cpu}: HV_X64_MSR_EOM reads 0 (got {end_of_message:x?})"
    );

    report!(
        synic.enable_this_cpu().is_ok(),
        "CPU {cpu}: SIMP, SIEFP and SCONTROL take the SynIC's pages and enable"
    );
    let simp = try_rdmsr(HV_X64_MSR_SIMP);
    let siefp = try_rdmsr(HV_X64_MSR_SIEFP);
    report!(
        simp == Ok(synic.message_page() | SYNIC_ENABLE)
            && siefp == Ok(synic.event_flags_page() | SYNIC_ENABLE),
        "CPU {cpu}: SIMP and SIEFP read back as written (got {simp:x?}, {siefp:x?})"
    );
    let mut sints_set = true;
    for (sint, (vector, auto_eoi)) in (0..SINT_COUNT).zip(SINT_VECTORS) {
        test_device(
            TestDeviceCommand::SintRouteCreate,
            VP_INDEX[cpu].load(Ordering::SeqCst) as u8,
            sint,
            0,
        );
        sints_set &= enable_sint(sint, vector, auto_eoi).is_ok();
        let expected = u64::from(vector) | if auto_eoi { SINT_AUTO_EOI } else { 0 };
        sints_set &= try_rdmsr(HV_X64_MSR_SINT0 + u32::from(sint)) == Ok(expected);
    }
    report!(
        sints_set,
        "CPU {cpu}: SINT0-15 take their vector and auto-EOI bit and read them back"
    );
}

/// kvm-unit-tests' `synic_test_cleanup` on CPU `cpu`.
fn cleanup(cpu: usize, synic: &Synic) {
    let vp_index = VP_INDEX[cpu].load(Ordering::SeqCst) as u8;
    let mut clean = true;
    for sint in 0..SINT_COUNT {
        clean &= disable_sint(sint).is_ok();
        test_device(TestDeviceCommand::SintRouteDestroy, vp_index, sint, 0);
    }
    let synic_off = synic.disable_this_cpu().is_ok();
    report!(
        clean && synic_off,
        "CPU {cpu}: SINTs masked, SCONTROL, SIMP and SIEFP back to 0"
    );
}
