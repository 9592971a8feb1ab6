//! vmware_backdoors: kvm-unit-tests' vmware_backdoors. The VMware backdoor I/O port 0x5658
//! (QEMU's vmport, `-machine vmport=on`) answers GETVERSION with the magic in EBX and leaves EBX
//! alone for an unknown command, at CPL 0 and, where the hypervisor enables the backdoor
//! (KVM's `enable_vmware_backdoor`), at CPL 3 with IOPL 0 and a TSS that grants no port; RDPMC
//! of the pseudo counters 0x10000-0x10002 works at CPL 0 and 3 with CR4.PCE clear. Where the
//! backdoor is not enabled, the architectural rules hold instead and are checked: IN at CPL 3
//! with IOPL 0 and no I/O permission raises #GP(0) (SDM Vol. 1, 19.5), and so does RDPMC of a
//! counter that does not exist or at CPL 3 with CR4.PCE clear (SDM Vol. 2, RDPMC). A random
//! port and a random counter at CPL 3 raise #GP(0) either way.
#![no_std]
#![no_main]

use vmunit::arch::control::{Cr4Flags, RFlags, read_cr4, read_rflags, try_write_cr4};
use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::pmu::{capabilities, rdpmc, try_rdpmc};
use vmunit::arch::run_in_user_mode;
use vmunit::arch::vmware::{
    BACKDOOR_PORT, Command, HIGH_BANDWIDTH_PORT, MAGIC, PseudoCounter, UNANSWERED, request, try_request,
};
use vmunit::{Vector, known_failure, prefix, report, report_info, report_skip};

vmunit::main!(main);

/// kvm-unit-tests' RANDOM_IO_PORT: nothing grants it.
const RANDOM_PORT: u16 = 0x1234;
/// kvm-unit-tests' random counter: no PMU has it.
const RANDOM_COUNTER: u32 = 0xfff;

fn is_general_protection(result: &Result<impl core::fmt::Debug, vmunit::Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0)
}

fn main(_args: &[&str]) {
    let _prefix = prefix("vmware_backdoors");
    // kvm-unit-tests sets TSS I/O-bitmap bits for both ports; the runtime's TSS has no I/O
    // bitmap at all (its base lies past the TSS limit), which denies every port at CPL 3.
    let user_flags = run_in_user_mode(read_rflags);
    report!(
        matches!(user_flags, Ok(flags) if !flags.contains(RFlags::IOPL_LOW) && !flags.contains(RFlags::IOPL_HIGH)),
        "CPL 3 runs with IOPL 0 (RFLAGS {user_flags:x?})"
    );
    let pce = Cr4Flags::PERFORMANCE_MONITOR_COUNTER.bits();
    try_write_cr4(read_cr4() & !pce).expect("clearing CR4.PCE");
    report!(
        read_cr4() & pce == 0,
        "CR4.PCE is clear: RDPMC at CPL 3 is not allowed by CR4"
    );

    ports();
    counters();
}

fn ports() {
    let _prefix = prefix("port_test");
    let kernel = try_request(BACKDOOR_PORT, Command::GetVersion.number());
    report!(
        matches!(kernel, Ok(registers) if registers.ebx == MAGIC),
        "CMD_GETVERSION kernel: EBX is the magic {MAGIC:#x} (got {kernel:x?})"
    );
    let illegal = try_request(BACKDOOR_PORT, Command::Illegal.number());
    report!(
        matches!(illegal, Ok(registers) if registers.ebx == UNANSWERED),
        "CMD_ILLEGAL kernel: an unknown command leaves EBX {UNANSWERED:#x} (got {illegal:x?})"
    );
    let random = run_in_user_mode(|| request(RANDOM_PORT, 0xfff));
    report!(
        is_general_protection(&random),
        "RANDOM port user: IN from {RANDOM_PORT:#x} at CPL 3 raises #GP(0) (got {random:x?})"
    );

    let user = run_in_user_mode(|| request(BACKDOOR_PORT, Command::GetVersion.number()));
    if user.is_err() {
        // The backdoor is off: what the SDM says for any port.
        report!(
            is_general_protection(&user),
            "IN from the backdoor port {BACKDOOR_PORT:#x} at CPL 3 without the backdoor raises #GP(0), as for any port (got {user:x?})"
        );
        let high = run_in_user_mode(|| request(HIGH_BANDWIDTH_PORT, Command::GetVersion.number()));
        report!(
            is_general_protection(&high),
            "IN from the high-bandwidth port {HIGH_BANDWIDTH_PORT:#x} at CPL 3 without the backdoor raises #GP(0) too (got {high:x?})"
        );
        report_skip!(
            "CMD_GETVERSION user, CMD_ILLEGAL user: the hypervisor does not let the backdoor port through at CPL 3 (#GP(0)): KVM's enable_vmware_backdoor is off, or QEMU's TCG, which has no backdoor exception"
        );
        return;
    }
    report!(
        matches!(user, Ok(registers) if registers.ebx == MAGIC),
        "CMD_GETVERSION user: IN from {BACKDOOR_PORT:#x} at CPL 3 is let through and EBX is the magic {MAGIC:#x} (got {user:x?})"
    );
    let illegal = run_in_user_mode(|| request(BACKDOOR_PORT, Command::Illegal.number()));
    report!(
        matches!(illegal, Ok(registers) if registers.ebx == UNANSWERED),
        "CMD_ILLEGAL user: an unknown command leaves EBX {UNANSWERED:#x} (got {illegal:x?})"
    );
    let high = run_in_user_mode(|| request(HIGH_BANDWIDTH_PORT, Command::GetVersion.number()));
    report!(
        high.is_ok(),
        "IN from the high-bandwidth port {HIGH_BANDWIDTH_PORT:#x} at CPL 3 is let through too (got {high:x?})"
    );
}

fn counters() {
    let _prefix = prefix("rdpmc_test");
    let random = run_in_user_mode(|| rdpmc(RANDOM_COUNTER));
    report!(
        is_general_protection(&random),
        "RANDOM PMC user: RDPMC of {RANDOM_COUNTER:#x} at CPL 3 with CR4.PCE clear raises #GP(0) (got {random:x?})"
    );
    let probe = try_rdpmc(PseudoCounter::HostTsc.index());
    if probe.is_err() {
        let version = capabilities().version;
        report_info!("architectural PMU version {version}");
        known_failure(
            is_tcg(),
            "QEMU's TCG does not implement RDPMC: #UD for every counter (helper_rdpmc, target/i386/tcg/misc_helper.c; pmu's RDPMC checks)",
            || {
                report!(
                    is_general_protection(&probe),
                    "RDPMC of the pseudo counter {:#x} at CPL 0, where no backdoor counters are served, raises #GP(0), as for any counter that does not exist (got {probe:x?})",
                    PseudoCounter::HostTsc.index()
                )
            },
        );
        report_skip!(
            "HOST_TSC/REAL_TIME/APPARENT_TIME kernel and user: RDPMC of the pseudo counters faulted: no backdoor counters (KVM serves them only with enable_vmware_backdoor and a PMU, here version {version}; QEMU's TCG never)"
        );
        return;
    }
    for counter in PseudoCounter::ALL {
        let kernel = try_rdpmc(counter.index());
        report!(
            kernel.is_ok(),
            "{counter:?} kernel: RDPMC of {:#x} at CPL 0 (got {kernel:x?})",
            counter.index()
        );
        let user = run_in_user_mode(|| rdpmc(counter.index()));
        report!(
            user.is_ok(),
            "{counter:?} user: RDPMC of {:#x} at CPL 3 with CR4.PCE clear (got {user:x?})",
            counter.index()
        );
    }
}
