//! msr: read/write round trips of architectural MSRs, and the #GP that non-canonical
//! addresses, reserved bits, read-only and write-only MSRs, and nonexistent MSRs must raise;
//! the 256 x2APIC MSRs in xAPIC mode (all #GP) and in x2APIC mode (each register's access);
//! the machine-check banks.
//!
//! Like kvm-unit-tests' msr test, two arguments `<index> <value>` (hexadecimal) test only
//! that MSR: it must take the value and give it back.
//!
//! QEMU's TCG does not raise #GP for most invalid MSR accesses (target/i386/tcg/system/
//! misc_helper.c ignores unknown MSRs and unchecked values: "XXX: exception?"); the software
//! KVM `kvm_pvm` (told by the runner's guest environment) accepts invalid PAT memory types,
//! ignores writes to IA32_TSC, and lets the unadvertised mitigation MSRs be accessed. Each
//! such check names its defect (`Gap`: evidence and reproducer entry) and reports KFAIL on the
//! host that has it, FAIL anywhere else.
#![no_std]
#![no_main]

use vmunit::arch::apic::{self, X2apicAccess, register};
use vmunit::arch::cpuid::{Feature, Vendor, cpuid, is_tcg, vendor};
use vmunit::arch::instructions::{rdtsc, try_rdpid, try_rdtscp};
use vmunit::arch::interrupt_count::{count_interrupts, interrupt_count, reset_interrupt_count};
use vmunit::arch::msr::{self, ApicBaseFlags, EferFlags, try_rdmsr, try_wrmsr, try_wrmsr_briefly};
use vmunit::time::wait_until;
use vmunit::{Exception, Vector, prefix, report, report_info, report_kfail, report_skip, report_summary};

vmunit::main!(main);

/// A canonical address with bits above 32 set (kvm-unit-tests' `addr_64`).
const ADDRESS: u64 = 0x0000_1234_5678_9abc;
/// kvm-unit-tests' NONCANONICAL: not canonical for 48- or 57-bit linear addresses.
const NONCANONICAL: u64 = 0xaaaa_aaaa_aaaa_aaaa;

/// What the test knows about where it runs.
struct Machine {
    intel: bool,
    /// CPUID leaf 0x40000000 says "TCGTCGTCGTCG": QEMU's TCG, whose MSR gaps are known.
    tcg: bool,
    /// The runner says the host's KVM is kvm_pvm, whose MSR gaps are known.
    pvm: bool,
}

/// A known defect that makes a check fail on some hosts (KFAIL there, FAIL elsewhere): each
/// names its evidence and its reproducer entry (group `reproducers`).
#[derive(Clone, Copy)]
enum Gap {
    /// None: the check must hold everywhere.
    None,
    /// QEMU's TCG: `helper_rdmsr` and `helper_wrmsr` (target/i386/tcg/system/misc_helper.c)
    /// have no case for the MSR (or, for a read-only one, no write case): the read gives 0 and
    /// the write is dropped ("XXX: exception?") instead of #GP. Reproducer:
    /// reproduce-unknown-msr-tcg.
    TcgUnknownMsr,
    /// QEMU's TCG: `helper_wrmsr` takes a value of an MSR it knows without checking reserved
    /// bits (EFER: masks them off; TSC_AUX, MCi_STATUS: stores them). Reproducer:
    /// reproduce-efer-reserved-bit-tcg.
    TcgUncheckedValue,
    /// QEMU's TCG: `helper_rdmsr` and `helper_wrmsr` answer for IA32_TSC_AUX whatever CPUID
    /// says (their MSR_TSC_AUX case checks no feature). Reproducer:
    /// reproduce-tsc-aux-unadvertised-tcg.
    TcgUnadvertisedTscAux,
    /// QEMU's TCG: `helper_wrmsr` stores non-canonical addresses in the FS/GS/KERNEL_GS base,
    /// LSTAR and CSTAR MSRs. Reproducer: reproduce-noncanonical-msr-tcg.
    TcgNoncanonical,
    /// QEMU's TCG (`helper_wrmsr` stores PAT unchecked) and kvm_pvm accept the reserved PAT
    /// memory types. Reproducer: reproduce-pat-invalid-type.
    InvalidPatType,
    /// QEMU's TCG (no IA32_TSC case in `helper_wrmsr`) and kvm_pvm (stores the value, RDTSC
    /// ignores it) do not move the TSC on WRMSR. Reproducer: reproduce-tsc-write.
    TscWrite,
    /// kvm_pvm lets SPEC_CTRL be read and written without IBRS, STIBP or SSBD advertised;
    /// QEMU's TCG has no case for it (as TcgUnknownMsr). Reproducers:
    /// reproduce-spec-ctrl-unadvertised, reproduce-unknown-msr-tcg.
    UnadvertisedSpecCtrl,
    /// kvm_pvm takes a write of PRED_CMD, FLUSH_CMD without IBPB, FLUSH_L1D advertised; QEMU's TCG
    /// has no case for them (as TcgUnknownMsr). Reproducers: reproduce-pred-cmd-unadvertised,
    /// reproduce-flush-cmd-unadvertised, reproduce-unknown-msr-tcg.
    UnadvertisedCommand,
}

impl Machine {
    /// Whether this machine is known to miss a check with `gap`.
    fn known(&self, gap: Gap) -> bool {
        match gap {
            Gap::None => false,
            Gap::TcgUnknownMsr
            | Gap::TcgUncheckedValue
            | Gap::TcgUnadvertisedTscAux
            | Gap::TcgNoncanonical => self.tcg,
            Gap::InvalidPatType | Gap::TscWrite | Gap::UnadvertisedSpecCtrl | Gap::UnadvertisedCommand => {
                self.tcg || self.pvm
            }
        }
    }
}

impl Machine {
    fn detect() -> Self {
        let intel = vendor() == Vendor::Intel;
        let tcg = is_tcg();
        let pvm = vmunit::environment::instruction_emulating_kvm();
        Machine { intel, tcg, pvm }
    }
}

/// How an MSR access ended, for messages.
struct Outcome<T>(Result<T, Exception>);

impl<T> core::fmt::Display for Outcome<T> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Ok(_) => formatter.write_str("no exception"),
            Err(exception) => write!(formatter, "{}", exception.vector),
        }
    }
}

/// WRMSR of `value`, undone: at once for an MSR whose bits the runtime owns
/// (`try_wrmsr_briefly`), else right after the write when the MSR can be read (a write-only
/// command MSR has nothing to restore). The write's outcome.
fn try_write_undone(index: u32, value: u64) -> Result<(), Exception> {
    if msr::owned_bits(index) != 0 {
        return try_wrmsr_briefly(index, value).map(drop);
    }
    let original = try_rdmsr(index);
    let result = try_wrmsr(index, value);
    if let (Ok(()), Ok(original)) = (&result, original) {
        let _ = try_wrmsr(index, original);
    }
    result
}

fn is_gp<T>(result: &Result<T, Exception>) -> bool {
    matches!(
        result,
        Err(Exception {
            vector: Vector::GP,
            ..
        })
    )
}

/// Writes `value`, reads it back, restores the original; reports whether it read back.
fn round_trip(name: &str, index: u32, value: u64) {
    let original = match try_rdmsr(index) {
        Ok(original) => original,
        Err(exception) => {
            report!(
                false,
                "{name} ({index:#x}) round-trips {value:#x} (RDMSR raised {})",
                exception.vector
            );
            return;
        }
    };
    let read = try_wrmsr_briefly(index, value);
    match read {
        Ok(read) => report!(
            read == value,
            "{name} ({index:#x}) round-trips {value:#x} (read {read:#x})"
        ),
        Err(exception) => report!(
            false,
            "{name} ({index:#x}) round-trips {value:#x} (WRMSR or RDMSR raised {})",
            exception.vector
        ),
    };
    let restored = try_rdmsr(index);
    if restored != Ok(original) {
        report!(
            false,
            "{name} ({index:#x}) takes back its original value {original:#x} (got {restored:x?})"
        );
    }
}

/// Round trips of several values, reported as one check naming the first that failed.
fn round_trips(name: &str, index: u32, values: &[u64]) {
    let failure = values.iter().find_map(|&value| {
        let read = try_wrmsr_briefly(index, value);
        (read != Ok(value)).then_some(ReadBack(value, read))
    });
    report!(
        failure.is_none(),
        "{name} ({index:#x}) round-trips {values:x?}{}",
        Miss(failure)
    );
}

/// A value written and what reading it back gave, for messages.
struct ReadBack(u64, Result<u64, Exception>);

impl core::fmt::Display for ReadBack {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "{:#x}: read {:x?}", self.0, self.1)
    }
}

/// What a check found wrong, shown in parentheses after its message; nothing when it passed.
struct Miss<T>(Option<T>);

impl<T: core::fmt::Display> core::fmt::Display for Miss<T> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Some(miss) => write!(formatter, " ({miss})"),
            None => Ok(()),
        }
    }
}

/// WRMSR of `value` must raise #GP; `gap` names the hypervisors known not to (KFAIL there).
/// A write that wrongly succeeds is undone at once.
fn expect_write_gp(machine: &Machine, gap: Gap, name: &str, index: u32, value: u64) {
    let result = try_write_undone(index, value);
    report_kfail!(
        machine.known(gap),
        is_gp(&result),
        "WRMSR({name} {index:#x}, {value:#x}) raises #GP (got {})",
        Outcome(result)
    );
}

/// RDMSR must raise #GP.
fn expect_read_gp(machine: &Machine, gap: Gap, name: &str, index: u32) {
    let result = try_rdmsr(index);
    report_kfail!(
        machine.known(gap),
        is_gp(&result),
        "RDMSR({name} {index:#x}) raises #GP (got {})",
        Outcome(result)
    );
}

/// WRMSR of `value` must succeed.
fn expect_write_ok(name: &str, index: u32, value: u64) {
    let result = try_write_undone(index, value);
    report!(
        result.is_ok(),
        "WRMSR({name} {index:#x}, {value:#x}) succeeds (got {})",
        Outcome(result)
    );
}

fn parse_hex(text: &str) -> Option<u64> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u64::from_str_radix(digits, 16).ok()
}

fn main(args: &[&str]) -> i32 {
    if let [index, value] = args
        && let (Some(index), Some(value)) = (parse_hex(index), parse_hex(value))
    {
        test_custom(index, value);
        return report_summary();
    }
    let machine = Machine::detect();
    report_info!(
        "vendor {}, TCG signature {}",
        if machine.intel { "Intel" } else { "not Intel" },
        machine.tcg
    );
    test_sysenter(&machine);
    test_syscall(&machine);
    test_segment_bases(&machine);
    test_efer(&machine);
    test_pat(&machine);
    test_misc_enable(&machine);
    test_tsc(&machine);
    test_tsc_aux(&machine);
    test_nonexistent(&machine);
    test_x2apic_msrs(&machine);
    test_mitigations(&machine);
    test_machine_check(&machine);
    report_summary()
}

/// `msr <index> <value>`: the MSR takes the value and gives it back (EFER: the value's bits
/// are set on top of the current ones, since LME/LMA cannot change in long mode).
fn test_custom(index: u64, value: u64) {
    let Ok(index) = u32::try_from(index) else {
        report!(false, "MSR index {index:#x} fits in 32 bits");
        return;
    };
    let _prefix = vmunit::prefix!("MSR {index:#x}");
    let value = if index == msr::IA32_EFER {
        value | try_rdmsr(msr::IA32_EFER).unwrap_or(0)
    } else {
        value
    };
    round_trip("custom MSR", index, value);
}

fn test_sysenter(machine: &Machine) {
    let _prefix = prefix("SYSENTER");
    round_trip("SYSENTER_CS", msr::IA32_SYSENTER_CS, 0x1234);
    // Intel keeps 64-bit SYSENTER_ESP/EIP for 64-bit SYSENTER; AMD has no 64-bit SYSENTER and
    // keeps only bits 31:0 (KVM emulates the upper half only for Intel guests). AMD: check
    // a 32-bit value, and only show what happens to a 64-bit one.
    let value = if machine.intel {
        ADDRESS
    } else {
        ADDRESS & 0xffff_ffff
    };
    for (name, index) in [
        ("SYSENTER_ESP", msr::IA32_SYSENTER_ESP),
        ("SYSENTER_EIP", msr::IA32_SYSENTER_EIP),
    ] {
        round_trip(name, index, value);
        if !machine.intel {
            let read = try_wrmsr_briefly(index, ADDRESS);
            report_info!("{name} after writing {ADDRESS:#x} (not architectural on AMD): {read:x?}");
        }
        // Intel's WRMSR checks these for canonical addresses, but KVM makes the value
        // canonical instead of raising #GP (AMD ignores bits 63:32), so no #GP check here.
    }
}

fn test_syscall(machine: &Machine) {
    let _prefix = prefix("SYSCALL");
    round_trip("STAR", msr::IA32_STAR, 0x0023_0010_1234_5678);
    round_trip("SYSCALL_MASK", msr::IA32_FMASK, 0xffff_ffff);
    for (name, index) in [("LSTAR", msr::IA32_LSTAR), ("CSTAR", msr::IA32_CSTAR)] {
        round_trip(name, index, ADDRESS);
        expect_write_gp(machine, Gap::TcgNoncanonical, name, index, NONCANONICAL);
    }
}

fn test_segment_bases(machine: &Machine) {
    let _prefix = prefix("segment bases");
    for (name, index) in [
        ("FS_BASE", msr::IA32_FS_BASE),
        ("GS_BASE", msr::IA32_GS_BASE),
        ("KERNEL_GS_BASE", msr::IA32_KERNEL_GS_BASE),
    ] {
        round_trip(name, index, ADDRESS);
        expect_write_gp(machine, Gap::TcgNoncanonical, name, index, NONCANONICAL);
    }
}

fn test_efer(machine: &Machine) {
    let _prefix = prefix("EFER");
    let Ok(original) = try_rdmsr(msr::IA32_EFER) else {
        report!(false, "RDMSR(EFER) succeeds");
        return;
    };
    report!(
        original & EferFlags::LONG_MODE_ENABLE.bits() != 0,
        "EFER.LME is set in long mode (EFER {original:#x})"
    );
    // As kvm-unit-tests: the test value is SCE on top of the current bits (LME/LMA cannot
    // change in long mode); also clear SCE again.
    round_trip(
        "EFER",
        msr::IA32_EFER,
        original | EferFlags::SYSTEM_CALL_EXTENSIONS.bits(),
    );
    round_trip(
        "EFER",
        msr::IA32_EFER,
        original & !EferFlags::SYSTEM_CALL_EXTENSIONS.bits(),
    );
    // Bits 1-7, 9, 16, 19 and 22-63 are reserved for Intel and AMD alike.
    for bit in [1, 7, 63] {
        expect_write_gp(
            machine,
            Gap::TcgUncheckedValue,
            "EFER",
            msr::IA32_EFER,
            original | (1 << bit),
        );
    }
    // SDM: changing LME while CR0.PG=1 raises #GP.
    expect_write_gp(
        machine,
        Gap::TcgUncheckedValue,
        "EFER",
        msr::IA32_EFER,
        original & !EferFlags::LONG_MODE_ENABLE.bits(),
    );
}

fn test_pat(machine: &Machine) {
    let _prefix = prefix("PAT");
    // Entry 0 stays write-back (the runtime's mappings use it); the others take each valid
    // type: WT, UC-, UC, WC, WP.
    round_trip("PAT", msr::IA32_PAT, 0x0007_0501_0007_0406);
    round_trip("PAT", msr::IA32_PAT, 0x0000_0000_0707_0706);
    let Ok(original) = try_rdmsr(msr::IA32_PAT) else {
        return;
    };
    // Types 2 and 3 are reserved encodings, and bits 7:3 of each entry are reserved.
    for (entry, bad_type) in [(1, 0x02u64), (3, 0x03), (7, 0x02), (5, 0x08), (2, 0x80)] {
        let shift = entry * 8;
        let value = (original & !(0xff << shift)) | (bad_type << shift);
        expect_write_gp(machine, Gap::InvalidPatType, "PAT", msr::IA32_PAT, value);
    }
}

fn test_misc_enable(machine: &Machine) {
    let _prefix = prefix("MISC_ENABLE");
    if !machine.intel {
        report_skip!("IA32_MISC_ENABLE is Intel's; the vendor is not GenuineIntel");
        return;
    }
    // kvm-unit-tests' value, keeping the read-only bits 7, 11 and 12 as they are.
    let keep = 0x1880;
    let Ok(original) = try_rdmsr(msr::IA32_MISC_ENABLE) else {
        report!(false, "RDMSR(MISC_ENABLE) succeeds on an Intel CPU");
        return;
    };
    round_trip(
        "MISC_ENABLE",
        msr::IA32_MISC_ENABLE,
        (0x4_00c5_0809 & !keep) | (original & keep),
    );
}

/// IA32_TSC: a write sets the counter, which then keeps counting from there.
fn test_tsc(machine: &Machine) {
    let _prefix = prefix("TSC");
    const TOLERANCE: u64 = 1 << 30;
    let before = rdtsc();
    let read = try_rdmsr(msr::IA32_TSC);
    let after = rdtsc();
    report_kfail!(
        machine.known(Gap::TcgUnknownMsr),
        matches!(read, Ok(value) if before <= value && value <= after),
        "RDMSR(TSC) lies between two RDTSCs {before:#x}..={after:#x} (got {:x?})",
        read
    );
    // Jump 2^40 ahead, so that a TSC that ignores the write stays below the target.
    let target = before.wrapping_add(1 << 40);
    let mut landed = None;
    for _ in 0..3 {
        if try_wrmsr(msr::IA32_TSC, target).is_err() {
            break;
        }
        let read = rdtsc();
        landed = Some(read);
        if read.wrapping_sub(target) < TOLERANCE {
            break;
        }
    }
    let moved_on = try_rdmsr(msr::IA32_TSC);
    match landed {
        Some(read) => {
            report_kfail!(
                machine.known(Gap::TscWrite),
                read.wrapping_sub(target) < TOLERANCE,
                "after WRMSR(TSC, {target:#x}) RDTSC reads at most {TOLERANCE:#x} more (got {read:#x})"
            );
            report_kfail!(
                machine.known(Gap::TscWrite),
                matches!(moved_on, Ok(value) if value >= read && value.wrapping_sub(target) < TOLERANCE * 2),
                "RDMSR(TSC) then counts on from {read:#x} (got {:x?})",
                moved_on
            );
        }
        None => {
            report!(false, "WRMSR(TSC, {target:#x}) succeeds");
        }
    }
    // Put the counter back where it would have been, if the write took.
    if let Ok(now) = moved_on {
        let elapsed = now.wrapping_sub(target);
        if elapsed < TOLERANCE * 2 {
            let _ = try_wrmsr(msr::IA32_TSC, before.wrapping_add(elapsed));
        }
    }
}

fn test_tsc_aux(machine: &Machine) {
    let _prefix = prefix("TSC_AUX");
    let rdtscp = Feature::Rdtscp.supported();
    let rdpid = Feature::Rdpid.supported();
    if !rdtscp && !rdpid {
        // The SDM lists IA32_TSC_AUX only where RDTSCP or RDPID exists.
        expect_read_gp(machine, Gap::TcgUnadvertisedTscAux, "TSC_AUX", msr::IA32_TSC_AUX);
        expect_write_gp(
            machine,
            Gap::TcgUnadvertisedTscAux,
            "TSC_AUX",
            msr::IA32_TSC_AUX,
            0,
        );
        return;
    }
    let Ok(original) = try_rdmsr(msr::IA32_TSC_AUX) else {
        report!(false, "RDMSR(TSC_AUX) succeeds with RDTSCP or RDPID advertised");
        return;
    };
    let value = 0x1234_5678;
    round_trip("TSC_AUX", msr::IA32_TSC_AUX, value);
    let _ = try_wrmsr(msr::IA32_TSC_AUX, value);
    if rdtscp {
        let result = try_rdtscp();
        report!(
            matches!(result, Ok((_, aux)) if aux == value as u32),
            "RDTSCP returns TSC_AUX {value:#x} in ECX (got {result:x?})"
        );
    }
    if rdpid {
        let result = try_rdpid();
        report!(
            matches!(result, Ok(aux) if aux == value),
            "RDPID returns TSC_AUX {value:#x} (got {result:x?})"
        );
    }
    // Bits 63:32 are reserved: Intel raises #GP; AMD processors ignore them (read as 0),
    // so for AMD either behaviour is right as long as the upper half does not stick.
    let high = value | (1 << 40);
    if machine.intel {
        expect_write_gp(
            machine,
            Gap::TcgUncheckedValue,
            "TSC_AUX",
            msr::IA32_TSC_AUX,
            high,
        );
    } else {
        let result = try_wrmsr(msr::IA32_TSC_AUX, high);
        let read = try_rdmsr(msr::IA32_TSC_AUX);
        report_kfail!(
            machine.known(Gap::TcgUncheckedValue),
            is_gp(&result) || matches!(read, Ok(read) if read == value),
            "WRMSR(TSC_AUX, {high:#x}) raises #GP or drops bits 63:32 on AMD (WRMSR: {}, read {read:x?})",
            Outcome(result)
        );
    }
    let _ = try_wrmsr(msr::IA32_TSC_AUX, original);
}

/// MSR indices outside every architectural and vendor range.
fn test_nonexistent(machine: &Machine) {
    let _prefix = prefix("nonexistent");
    for index in [0x0000_2fff_u32, 0x8000_0000, 0xdead_beef, 0xffff_ffff] {
        expect_read_gp(machine, Gap::TcgUnknownMsr, "nonexistent MSR", index);
        expect_write_gp(machine, Gap::TcgUnknownMsr, "nonexistent MSR", index, 0);
    }
}

/// kvm-unit-tests' x2APIC MSR sweep: with IA32_APIC_BASE.EXTD clear every one of the 256
/// x2APIC MSRs (0x800-0x8ff) raises #GP; in x2APIC mode each follows its register's access
/// (SDM Vol. 3, Table 11-6): readable ones read (bits 63:32 clear), writable ones take their
/// own value back, WRMSR of a read-only or missing register and RDMSR of a write-only or
/// missing one raise #GP, bits 63:32 are reserved everywhere but the ICR, and so are the
/// SELF IPI register's bits 31:8.
fn test_x2apic_msrs(machine: &Machine) {
    let _prefix = prefix("x2APIC MSRs");
    let Ok(apic_base) = try_rdmsr(msr::IA32_APIC_BASE) else {
        report!(false, "RDMSR(APIC_BASE) succeeds");
        return;
    };
    if apic_base & ApicBaseFlags::X2APIC_ENABLE.bits() != 0 {
        report_skip!("x2APIC mode is enabled already (APIC_BASE {apic_base:#x})");
        return;
    }
    sweep_x2apic_off();
    if !Feature::X2apic.supported() {
        report_skip!("x2APIC mode: CPUID.1:ECX[21] is clear");
        return;
    }
    if let Err(exception) = apic::try_enable_x2apic() {
        report!(
            false,
            "WRMSR(APIC_BASE) switches to x2APIC mode (got {})",
            exception.vector
        );
        return;
    }
    sweep_x2apic_on(machine);
    let back = apic::try_return_to_xapic();
    report!(
        back.is_ok(),
        "back to xAPIC mode through the disabled state (got {back:x?})"
    );
}

/// The x2APIC MSR of APIC register `offset`, with the register's name, for messages.
struct Register(u64);

impl core::fmt::Display for Register {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let index = apic::msr_of(self.0);
        match apic::register_name(self.0) {
            "" => write!(formatter, "{index:#x}"),
            name => write!(formatter, "{index:#x} ({name})"),
        }
    }
}

/// Every APIC register offset with an x2APIC MSR: 0x000-0xff0, MSRs 0x800-0x8ff.
fn x2apic_offsets() -> impl Iterator<Item = u64> {
    (0..0x1000).step_by(0x10)
}

/// Values with SELF IPI bits 31:8 set (kvm-unit-tests' three).
const SELF_IPI_RESERVED: [u64; 3] = [0x100, 0xff00, 0xff00_0000];

/// EXTD clear: the x2APIC MSRs do not exist. One report per access kind over all 256 MSRs,
/// naming the first few that did not raise #GP.
fn sweep_x2apic_off() {
    let _prefix = prefix("xAPIC mode");
    let mut reads = Misses::default();
    let mut zero_writes = Misses::default();
    let mut ones_writes = Misses::default();
    for offset in x2apic_offsets() {
        let index = apic::msr_of(offset);
        if !is_gp(&try_rdmsr(index)) {
            reads.add(index);
        }
        if !is_gp(&try_write_undone(index, 0)) {
            zero_writes.add(index);
        }
        if !is_gp(&try_write_undone(index, u64::MAX)) {
            ones_writes.add(index);
        }
    }
    report!(
        reads.none(),
        "RDMSR of each of the 256 x2APIC MSRs raises #GP{reads}"
    );
    report!(zero_writes.none(), "WRMSR(0) of each raises #GP{zero_writes}");
    report!(
        ones_writes.none(),
        "WRMSR(all ones) of each raises #GP{ones_writes}"
    );
    let self_ipi = apic::msr_of(register::SELF_IPI);
    let mut reserved = Misses::default();
    for value in SELF_IPI_RESERVED {
        if !is_gp(&try_write_undone(self_ipi, value)) {
            reserved.add(value as u32);
        }
    }
    report!(
        reserved.none(),
        "WRMSR(SELF IPI {self_ipi:#x}) of {SELF_IPI_RESERVED:x?} raises #GP{reserved}"
    );
}

/// The MSRs (or values) a sweep found misbehaving: how many, and the first few.
#[derive(Default)]
struct Misses {
    count: usize,
    first: [u32; 4],
}

impl Misses {
    fn add(&mut self, index: u32) {
        if self.count < self.first.len() {
            self.first[self.count] = index;
        }
        self.count += 1;
    }

    fn none(&self) -> bool {
        self.count == 0
    }

    /// Whether every miss is one of `known` (and all were recorded).
    fn only(&self, known: &[u32]) -> bool {
        self.count <= self.first.len() && self.first[..self.count].iter().all(|index| known.contains(index))
    }
}

impl core::fmt::Display for Misses {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        let shown = self.count.min(self.first.len());
        write!(formatter, " ({} did not:", self.count)?;
        for index in &self.first[..shown] {
            write!(formatter, " {index:#x}")?;
        }
        if self.count > shown {
            formatter.write_str(", ...")?;
        }
        formatter.write_str(")")
    }
}

/// The vector of the SELF IPI the write-only check sends.
const SELF_IPI_VECTOR: u8 = 0x40;
/// An x2APIC ID no CPU has (0xffffffff is the broadcast): an IPI there goes nowhere.
const NOBODY: u64 = 0xffff_fff0;

/// QEMU's TCG x2APIC (hw/intc/apic.c): `apic_register_write` refuses (#GP) only writes to
/// the ID, LDR and DFR registers and to the offsets it has no case for; it ignores writes to
/// the other read-only registers and takes the low 32 bits of every value, and
/// `apic_register_read` reads EOI as 0, the ICR without its destination half (`icr[0]`), and
/// still answers for the xAPIC-only APR and ICR-high offsets.
fn tcg_misses(machine: &Machine, offset: u64, check: Check) -> bool {
    machine.tcg
        && match check {
            Check::ReadOfWriteOnly => offset == register::END_OF_INTERRUPT,
            Check::WriteOfReadOnly | Check::HighBits => {
                !matches!(offset, register::ID | register::LOGICAL_DESTINATION)
            }
            Check::SelfIpiReservedBits | Check::CommandReadBack => true,
        }
}

/// The per-register checks of the x2APIC-mode sweep a host may be known to miss.
#[derive(Clone, Copy)]
enum Check {
    ReadOfWriteOnly,
    WriteOfReadOnly,
    HighBits,
    SelfIpiReservedBits,
    CommandReadBack,
}

/// EXTD set: each register's MSR as its access says; one report per check of each register.
fn sweep_x2apic_on(machine: &Machine) {
    let _prefix = prefix("x2APIC mode");
    let lvt_entries = apic::lvt_entries();
    report_info!("{lvt_entries} LVT entries");
    let mut missing = [Misses::default(), Misses::default(), Misses::default()];
    for offset in x2apic_offsets() {
        let access = apic::x2apic_access(offset, lvt_entries);
        let register = Register(offset);
        let index = apic::msr_of(offset);
        if access == X2apicAccess::None {
            // The missing registers, 200 or so of them: one report per access kind.
            if !is_gp(&try_rdmsr(index)) {
                missing[0].add(index);
            }
            if !is_gp(&try_write_undone(index, 0)) {
                missing[1].add(index);
            }
            if !is_gp(&try_write_undone(index, u64::MAX)) {
                missing[2].add(index);
            }
            continue;
        }
        let read = try_rdmsr(index);
        if access.readable() {
            report!(
                matches!(read, Ok(value) if offset == register::COMMAND_LOW || value >> 32 == 0),
                "RDMSR({register}) succeeds{} (got {read:x?})",
                if offset == register::COMMAND_LOW {
                    ""
                } else {
                    " with bits 63:32 clear"
                }
            );
        } else {
            report_kfail!(
                tcg_misses(machine, offset, Check::ReadOfWriteOnly),
                is_gp(&read),
                "RDMSR({register}) of a write-only register raises #GP (got {})",
                Outcome(read)
            );
        }
        // The good writes first: a bad write that wrongly goes through may leave an
        // interrupt in service (SELF IPI of all ones: vector 0xff) that blocks the rest.
        match (offset, access) {
            (register::SELF_IPI, _) => {
                count_interrupts(SELF_IPI_VECTOR);
                let write = try_wrmsr(index, u64::from(SELF_IPI_VECTOR));
                let delivered = wait_until(500, || interrupt_count(SELF_IPI_VECTOR) > 0);
                report!(
                    write.is_ok() && delivered && interrupt_count(SELF_IPI_VECTOR) == 1,
                    "WRMSR({register}, {SELF_IPI_VECTOR:#x}) succeeds and interrupts once (WRMSR: {}, {} interrupts)",
                    Outcome(write),
                    interrupt_count(SELF_IPI_VECTOR)
                );
                reset_interrupt_count(SELF_IPI_VECTOR);
            }
            (_, X2apicAccess::WriteOnly) => {
                // EOI with nothing in service: no effect.
                let write = try_wrmsr(index, 0);
                report!(
                    write.is_ok(),
                    "WRMSR({register}, 0) succeeds (got {})",
                    Outcome(write)
                );
            }
            (register::COMMAND_LOW, _) => {
                // A fixed IPI to an x2APIC ID no CPU has: the ICR keeps all 64 bits.
                let value = (NOBODY << 32) | u64::from(SELF_IPI_VECTOR);
                let write = try_wrmsr(index, value);
                let read = try_rdmsr(index);
                report_kfail!(
                    tcg_misses(machine, offset, Check::CommandReadBack),
                    write.is_ok() && read == Ok(value),
                    "WRMSR({register}, {value:#x}) sends and reads back all 64 bits (WRMSR: {}, read {read:x?})",
                    Outcome(write)
                );
            }
            (_, X2apicAccess::ReadWrite) => {
                // kvm-unit-tests' round trip: the register takes its own value back.
                if let Ok(value) = read {
                    let write = try_wrmsr(index, value);
                    let again = try_rdmsr(index);
                    report!(
                        write.is_ok() && again == Ok(value),
                        "WRMSR({register}, {value:#x}) of its own value reads back (WRMSR: {}, read {again:x?})",
                        Outcome(write)
                    );
                }
            }
            _ => {}
        }
        if !access.writable() {
            let write = try_write_undone(index, 0);
            report_kfail!(
                tcg_misses(machine, offset, Check::WriteOfReadOnly),
                is_gp(&write),
                "WRMSR({register}, 0) of a read-only register raises #GP (got {})",
                Outcome(write)
            );
        }
        if offset != register::COMMAND_LOW {
            let write = try_write_undone(index, u64::MAX);
            report_kfail!(
                tcg_misses(machine, offset, Check::HighBits),
                is_gp(&write),
                "WRMSR({register}, all ones) raises #GP: bits 63:32 are reserved (got {})",
                Outcome(write)
            );
        }
        if offset == register::SELF_IPI {
            for value in SELF_IPI_RESERVED {
                let write = try_wrmsr(index, value);
                report_kfail!(
                    tcg_misses(machine, offset, Check::SelfIpiReservedBits),
                    is_gp(&write),
                    "WRMSR({register}, {value:#x}) raises #GP: bits 31:8 are reserved (got {})",
                    Outcome(write)
                );
            }
        }
    }
    let [reads, zero_writes, ones_writes] = &missing;
    let total = x2apic_offsets()
        .filter(|&offset| apic::x2apic_access(offset, lvt_entries) == X2apicAccess::None)
        .count();
    // TCG answers for the xAPIC-only APR (reads and writes) and ICR-high (reads) offsets.
    let arbitration = apic::msr_of(register::ARBITRATION_PRIORITY);
    let command_high = apic::msr_of(register::COMMAND_HIGH);
    report_kfail!(
        machine.tcg && reads.only(&[arbitration, command_high]),
        reads.none(),
        "RDMSR of each of the {total} MSRs without a register raises #GP{reads}"
    );
    report_kfail!(
        machine.tcg && zero_writes.only(&[arbitration]),
        zero_writes.none(),
        "WRMSR(0) of each raises #GP{zero_writes}"
    );
    report_kfail!(
        machine.tcg && ones_writes.only(&[arbitration]),
        ones_writes.none(),
        "WRMSR(all ones) of each raises #GP{ones_writes}"
    );
}

/// kvm-unit-tests' mitigation MSRs: PRED_CMD and FLUSH_CMD are write-only commands that exist
/// only when advertised; SPEC_CTRL takes the bits of the advertised features.
fn test_mitigations(machine: &Machine) {
    let _prefix = prefix("mitigations");
    report_info!(
        "CPUID.7.0:EDX {:#010x}, CPUID.80000008H:EBX {:#010x}",
        if cpuid(0, 0).eax >= 7 { cpuid(7, 0).edx } else { 0 },
        if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
            cpuid(0x8000_0008, 0).ebx
        } else {
            0
        }
    );
    let mut spec_ctrl_bits = 0u64;
    if Feature::SpecCtrl.supported() || Feature::AmdIbrs.supported() {
        spec_ctrl_bits |= 1 << 0; // IBRS
    }
    if Feature::IntelStibp.supported() || Feature::AmdStibp.supported() {
        spec_ctrl_bits |= 1 << 1; // STIBP
    }
    if Feature::SpecCtrlSsbd.supported() || Feature::AmdSsbd.supported() {
        spec_ctrl_bits |= 1 << 2; // SSBD
    }
    if spec_ctrl_bits != 0 {
        for value in 0..=spec_ctrl_bits {
            if value & spec_ctrl_bits == value {
                round_trip("SPEC_CTRL", msr::IA32_SPEC_CTRL, value);
            }
        }
    } else {
        expect_read_gp(
            machine,
            Gap::UnadvertisedSpecCtrl,
            "SPEC_CTRL",
            msr::IA32_SPEC_CTRL,
        );
        expect_write_gp(
            machine,
            Gap::UnadvertisedSpecCtrl,
            "SPEC_CTRL",
            msr::IA32_SPEC_CTRL,
            0,
        );
    }

    let ibpb = Feature::SpecCtrl.supported() || Feature::AmdIbpb.supported() || Feature::Sbpb.supported();
    let flush_l1d = Feature::FlushL1d.supported();
    for (name, index, advertised) in [
        ("PRED_CMD", msr::IA32_PRED_CMD, ibpb),
        ("FLUSH_CMD", msr::IA32_FLUSH_CMD, flush_l1d),
    ] {
        expect_read_gp(machine, Gap::TcgUnknownMsr, name, index);
        for value in [0, 1] {
            if advertised {
                expect_write_ok(name, index, value);
            } else {
                expect_write_gp(machine, Gap::UnadvertisedCommand, name, index, value);
            }
        }
    }
}

/// kvm-unit-tests' MCE bank checks: IA32_MCG_CAP[7:0] banks of CTL/STATUS/ADDR/MISC, up to
/// 32 banks (0x400..=0x47f); the banks beyond the count do not exist.
fn test_machine_check(machine: &Machine) {
    let _prefix = prefix("machine check");
    if !Feature::Mca.supported() {
        report_skip!("MCA (CPUID.1:EDX[14]) is not advertised");
        return;
    }
    let capabilities = match try_rdmsr(msr::IA32_MCG_CAP) {
        Ok(capabilities) => capabilities,
        Err(exception) => {
            report!(
                false,
                "RDMSR(MCG_CAP) succeeds with MCA advertised (got {})",
                exception.vector
            );
            return;
        }
    };
    let banks = (capabilities & 0xff) as u32;
    report_info!("MCG_CAP {capabilities:#x}: {banks} banks");
    report!(
        banks <= 32,
        "MCG_CAP[7:0] counts at most 32 banks, all below the VMX MSRs at 0x480 (got {banks})"
    );
    // SDM: IA32_MCG_CAP is read-only.
    expect_write_gp(
        machine,
        Gap::TcgUnknownMsr,
        "MCG_CAP",
        msr::IA32_MCG_CAP,
        capabilities,
    );
    for bank in 0..banks.min(32) {
        let base = msr::IA32_MC0_CTL + 4 * bank;
        let _bank = vmunit::prefix!("MC{bank}");
        round_trips("CTL", base, &[0, u64::MAX]);
        // MCi_CTL takes only all 0s or all 1s: the P6 rule (SDM Vol. 3, 15.3.2.1; later
        // processors leave other values undefined), which KVM keeps (x86.c `set_msr_mce`:
        // #GP, but for bank 4 with bit 10 clear) and kvm-unit-tests checks. QEMU's TCG
        // (misc_helper.c `helper_wrmsr`) ignores such a write instead, which is just as
        // architectural: the check is KVM's, skipped under TCG.
        if machine.tcg {
            report_skip!("WRMSR(CTL {base:#x}, {NONCANONICAL:#x}) raising #GP is KVM's rule, not TCG's");
        } else {
            expect_write_gp(machine, Gap::None, "CTL", base, NONCANONICAL);
        }
        round_trips("STATUS", base + 1, &[0]);
        // SDM 15.3.2.2: writing 1s to IA32_MCi_STATUS raises #GP (AMD: unless the
        // non-architectural HWCR.McStatusWrEn is set, which no VMM sets by default).
        expect_write_gp(machine, Gap::TcgUncheckedValue, "STATUS", base + 1, 1);
        round_trips("ADDR", base + 2, &[0, u64::MAX, NONCANONICAL]);
        round_trips("MISC", base + 3, &[0, u64::MAX, NONCANONICAL]);
    }
    for bank in banks..32 {
        let base = msr::IA32_MC0_CTL + 4 * bank;
        let bad = (base..base + 4).find_map(|index| {
            let read = try_rdmsr(index);
            let write = try_write_undone(index, 0);
            (!is_gp(&read) || !is_gp(&write)).then_some(BankMiss(index, Outcome(read), Outcome(write)))
        });
        report_kfail!(
            machine.known(Gap::TcgUnknownMsr),
            bad.is_none(),
            "bank {bank} beyond the count: RDMSR and WRMSR(0) of its 4 MSRs raise #GP{}",
            Miss(bad)
        );
    }
}

/// An MSR of a bank beyond the count that did not raise #GP, and how its accesses ended.
struct BankMiss(u32, Outcome<u64>, Outcome<()>);

impl core::fmt::Display for BankMiss {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "MSR {:#x}: RDMSR {}, WRMSR {}", self.0, self.1, self.2)
    }
}
