//! cpuid: the vendor string, the basic and extended leaf ranges, the hypervisor leaves, the
//! long-mode baseline features, the topology leaves, and whether advertised instructions run
//! while unadvertised ones raise #UD.
//!
//! The accelerator whose signature CPUID leaf 0x40000000 must show comes from the argument
//! `accel=kvm|tcg`, else from the runner's guest environment (ACCEL); without either the
//! signature only has to be one of the two. Under kvm_pvm, which stops the VM on an
//! unadvertised RDTSCP instead of raising #UD, RDTSCP is not executed (SKIP, with the reason).
#![no_std]
#![no_main]

use vmunit::arch::control::read_cr4;
use vmunit::arch::cpuid::{Feature, cpuid, hypervisor_signature, vendor_string};
use vmunit::arch::instructions::{try_rdpid, try_rdrand, try_rdseed, try_rdtscp};
use vmunit::{Exception, Vector, prefix, report, report_info, report_skip};

vmunit::main!(main);

/// The accelerators this test knows the CPUID signature of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "kvm" => Some(Self::Kvm),
            "tcg" => Some(Self::Tcg),
            _ => None,
        }
    }

    /// The 12 bytes of leaf 0x40000000's EBX, ECX, EDX.
    fn signature(self) -> &'static [u8; 12] {
        match self {
            Self::Kvm => b"KVMKVMKVM\0\0\0",
            Self::Tcg => b"TCGTCGTCGTCG",
        }
    }
}

/// Vendor strings of x86-64 (and older x86) processors.
const KNOWN_VENDORS: [&[u8; 12]; 8] = [
    b"GenuineIntel",
    b"AuthenticAMD",
    b"HygonGenuine",
    b"CentaurHauls",
    b"  Shanghai  ",
    b"GenuineTMx86",
    b"Geode by NSC",
    b"VIA VIA VIA ",
];

const HYPERVISOR_BASE: u32 = 0x4000_0000;
const EXTENDED_BASE: u32 = 0x8000_0000;

/// The bytes as text for messages: printable ASCII as is, anything else as `\xNN`.
struct Shown<'a>(&'a [u8]);

impl core::fmt::Display for Shown<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str("\"")?;
        for &byte in self.0 {
            if (0x20..0x7f).contains(&byte) {
                write!(formatter, "{}", byte as char)?;
            } else {
                write!(formatter, "\\x{byte:02x}")?;
            }
        }
        formatter.write_str("\"")
    }
}

fn main(args: &[&str]) {
    let requested = vmunit::args::value(args, "accel").or_else(|| vmunit::env("ACCEL"));
    let expected_accelerator = match requested {
        Some(name) => match Accelerator::parse(name) {
            Some(accelerator) => Some(accelerator),
            None => {
                report!(false, "argument accel={name} names kvm or tcg");
                None
            }
        },
        None => None,
    };

    check_vendor();
    check_leaf_ranges();
    check_baseline_features();
    let accelerator = check_hypervisor_leaves(expected_accelerator);
    check_os_mirrored_bits();
    check_apic_id_and_topology();
    check_out_of_range_leaves();
    check_brand_string();
    check_instructions(accelerator);
}

fn check_vendor() {
    let _prefix = prefix("vendor");
    let vendor = vendor_string();
    report_info!("vendor {}", Shown(&vendor));
    let printable = vendor.iter().all(|byte| (0x20..0x7f).contains(byte));
    report!(
        printable,
        "vendor string {} is 12 printable ASCII characters",
        Shown(&vendor)
    );
    let known = KNOWN_VENDORS.iter().any(|known| **known == vendor);
    report!(known, "vendor string {} is a known x86 vendor's", Shown(&vendor));
}

fn check_leaf_ranges() {
    let _prefix = prefix("leaf ranges");
    let basic = cpuid(0, 0).eax;
    report!(
        (1..0x100).contains(&basic),
        "highest basic leaf is between 0x1 and 0xff (got {basic:#x})"
    );
    let extended = cpuid(EXTENDED_BASE, 0).eax;
    report!(
        (0x8000_0001..0x8000_0100).contains(&extended),
        "highest extended leaf is between 0x80000001 (needed for long mode) and 0x800000ff (got {extended:#x})"
    );
}

fn check_baseline_features() {
    let _prefix = prefix("long mode baseline");
    // Every x86-64 processor has these; this guest runs in long mode with SSE2-era
    // compilers' assumptions, so CPUID must not deny them.
    let leaf1 = cpuid(1, 0).edx;
    for (bit, name) in [
        (0, "FPU"),
        (4, "TSC"),
        (5, "MSR"),
        (6, "PAE"),
        (8, "CX8"),
        (13, "PGE"),
        (15, "CMOV"),
        (24, "FXSR"),
        (25, "SSE"),
        (26, "SSE2"),
    ] {
        report!(
            leaf1 & (1 << bit) != 0,
            "CPUID.1:EDX[{bit}] {name} is set (EDX {leaf1:#010x})"
        );
    }
    let extended_maximum = cpuid(EXTENDED_BASE, 0).eax;
    if extended_maximum < 0x8000_0001 {
        report!(
            false,
            "leaf 0x80000001 exists (highest extended leaf {extended_maximum:#x})"
        );
        return;
    }
    let extended = cpuid(0x8000_0001, 0).edx;
    report!(
        extended & (1 << 29) != 0,
        "CPUID.80000001H:EDX[29] LM is set: this guest runs in long mode (EDX {extended:#010x})"
    );
    report!(
        extended & (1 << 11) != 0,
        "CPUID.80000001H:EDX[11] SYSCALL is set, as on every 64-bit processor (EDX {extended:#010x})"
    );
}

/// Checks the hypervisor bit and leaf 0x40000000; returns the accelerator the signature names.
fn check_hypervisor_leaves(expected: Option<Accelerator>) -> Option<Accelerator> {
    let _prefix = prefix("hypervisor");
    let ecx = cpuid(1, 0).ecx;
    report!(
        ecx & (1 << 31) != 0,
        "CPUID.1:ECX[31] hypervisor bit is set under QEMU (ECX {ecx:#010x})"
    );

    let leaf = cpuid(HYPERVISOR_BASE, 0);
    let signature = hypervisor_signature();
    report_info!(
        "leaf 0x40000000: eax {:#x}, signature {}",
        leaf.eax,
        Shown(&signature)
    );
    let seen = [Accelerator::Kvm, Accelerator::Tcg]
        .into_iter()
        .find(|accelerator| *accelerator.signature() == signature);
    match expected {
        Some(expected) => report!(
            seen == Some(expected),
            "leaf 0x40000000 signature is {} for accel={expected:?} (got {})",
            Shown(expected.signature()),
            Shown(&signature)
        ),
        None => report!(
            seen.is_some(),
            "leaf 0x40000000 signature is KVM's or TCG's (got {})",
            Shown(&signature)
        ),
    };
    if seen.is_some() {
        // The highest hypervisor leaf must at least cover the signature leaf itself; KVM's
        // features leaf 0x40000001 follows it.
        let minimum = if seen == Some(Accelerator::Kvm) {
            HYPERVISOR_BASE + 1
        } else {
            HYPERVISOR_BASE
        };
        report!(
            (minimum..HYPERVISOR_BASE + 0x100).contains(&leaf.eax),
            "leaf 0x40000000 EAX, the highest hypervisor leaf, is in {minimum:#x}..=0x400000ff (got {:#x})",
            leaf.eax
        );
    }
    seen.or(expected)
}

/// CPUID.1:ECX[27] OSXSAVE and CPUID.7.0:ECX[4] OSPKE mirror CR4.OSXSAVE and CR4.PKE.
fn check_os_mirrored_bits() {
    let _prefix = prefix("CR4 mirrors");
    let cr4 = read_cr4();
    let osxsave = cpuid(1, 0).ecx & (1 << 27) != 0;
    let cr4_osxsave = cr4 & (1 << 18) != 0;
    report!(
        osxsave == cr4_osxsave,
        "CPUID.1:ECX[27] OSXSAVE ({}) equals CR4.OSXSAVE ({})",
        u8::from(osxsave),
        u8::from(cr4_osxsave)
    );
    if cpuid(0, 0).eax >= 7 {
        let ospke = cpuid(7, 0).ecx & (1 << 4) != 0;
        let cr4_pke = cr4 & (1 << 22) != 0;
        report!(
            ospke == cr4_pke,
            "CPUID.7.0:ECX[4] OSPKE ({}) equals CR4.PKE ({})",
            u8::from(ospke),
            u8::from(cr4_pke)
        );
    } else {
        report_skip!("leaf 7 is not implemented: no OSPKE bit to check");
    }
}

fn check_apic_id_and_topology() {
    let _prefix = prefix("APIC ID");
    let apic_id = cpuid(1, 0).ebx >> 24;
    report!(
        apic_id == 0,
        "CPUID.1:EBX[31:24] initial APIC ID of the boot CPU is 0 (got {apic_id})"
    );
    let maximum = cpuid(0, 0).eax;
    let leaf_b = (maximum >= 0xb)
        .then(|| check_topology_leaf(0xb, apic_id))
        .flatten();
    let leaf_1f = (maximum >= 0x1f)
        .then(|| check_topology_leaf(0x1f, apic_id))
        .flatten();
    match (leaf_b, leaf_1f) {
        (Some(b), Some(v2)) => {
            report!(
                b.x2apic_id == v2.x2apic_id,
                "leaves 0xB and 0x1F report the same x2APIC ID ({:#x} and {:#x})",
                b.x2apic_id,
                v2.x2apic_id
            );
            report!(
                b.package_shift == v2.package_shift,
                "leaves 0xB and 0x1F agree on the shift to the package ID ({} and {})",
                b.package_shift,
                v2.package_shift
            );
        }
        (None, _) => {
            report_skip!("leaf 0xB (extended topology) is not implemented (highest basic leaf {maximum:#x})");
        }
        (Some(_), None) => {
            report_skip!(
                "leaf 0x1F (V2 extended topology) is not implemented (highest basic leaf {maximum:#x})"
            );
        }
    }
}

/// What a topology leaf says about this CPU.
struct Topology {
    x2apic_id: u32,
    /// EAX[4:0] of the last valid subleaf: the shift from the x2APIC ID to the package ID.
    package_shift: u32,
}

/// Walks the subleaves of topology leaf 0xB or 0x1F; None when the leaf is not implemented
/// (EBX of subleaf 0 is 0).
fn check_topology_leaf(leaf: u32, apic_id: u32) -> Option<Topology> {
    let _prefix = vmunit::prefix!("leaf {leaf:#x}");
    let first = cpuid(leaf, 0);
    if first.ebx == 0 {
        report_info!("leaf {leaf:#x} subleaf 0 has EBX 0: not implemented");
        return None;
    }
    let x2apic_id = first.edx;
    report!(
        x2apic_id & 0xff == apic_id,
        "x2APIC ID {x2apic_id:#x} (EDX) agrees with the initial APIC ID {apic_id:#x} in its low 8 bits"
    );
    // Level types: 1 SMT and 2 core in both leaves; 0x1F adds 3 module, 4 tile, 5 die.
    let highest_type = if leaf == 0xb { 2 } else { 5 };
    let mut previous_shift = 0;
    let mut previous_type = 0;
    let mut levels_ok = true;
    let mut subleaf = 0;
    loop {
        let result = cpuid(leaf, subleaf);
        let level_type = (result.ecx >> 8) & 0xff;
        if level_type == 0 {
            report!(
                result.eax == 0 && result.ebx == 0 && result.ecx & 0xff == subleaf,
                "subleaf {subleaf} after the last level is invalid: EAX 0, EBX 0, ECX[7:0] {subleaf} (got {:#x}, {:#x}, {:#x})",
                result.eax,
                result.ebx,
                result.ecx
            );
            report!(
                result.edx == x2apic_id,
                "the invalid subleaf {subleaf} still reports x2APIC ID {x2apic_id:#x} (got {:#x})",
                result.edx
            );
            break;
        }
        let shift = result.eax & 0x1f;
        let level_ok = result.ecx & 0xff == subleaf
            && (1..=highest_type).contains(&level_type)
            && level_type > previous_type
            && shift >= previous_shift
            && result.ebx & 0xffff != 0
            && result.edx == x2apic_id;
        if !level_ok {
            report!(
                false,
                "subleaf {subleaf}: level number {subleaf}, a known level type above the previous one, a non-decreasing shift, nonzero processors, the same x2APIC ID (got EAX {:#x} EBX {:#x} ECX {:#x} EDX {:#x})",
                result.eax,
                result.ebx,
                result.ecx,
                result.edx
            );
            levels_ok = false;
        }
        previous_shift = shift;
        previous_type = level_type;
        subleaf += 1;
        if subleaf > 8 {
            report!(
                false,
                "leaf {leaf:#x} ends with an invalid level within 8 subleaves"
            );
            levels_ok = false;
            break;
        }
    }
    report!(
        levels_ok && subleaf >= 1,
        "{subleaf} level(s) numbered in order, with known, increasing level types and non-decreasing shifts"
    );
    Some(Topology {
        x2apic_id,
        package_shift: previous_shift,
    })
}

/// Intel: CPUID of a leaf above the highest one (basic or extended) returns the data of the
/// highest basic leaf. AMD documents no such rule (its processors return zeros), so the check
/// runs only for Intel's vendor string.
fn check_out_of_range_leaves() {
    let _prefix = prefix("out-of-range leaves");
    let vendor = vendor_string();
    if vendor != *b"GenuineIntel" {
        report_skip!(
            "returning the highest basic leaf for out-of-range leaves is Intel's rule; vendor is {}",
            Shown(&vendor)
        );
        return;
    }
    let basic = cpuid(0, 0).eax;
    let extended = cpuid(EXTENDED_BASE, 0).eax;
    let highest = cpuid(basic, 0);
    for leaf in [basic + 1, 0x3fff_ffff, extended + 1] {
        let result = cpuid(leaf, 0);
        report!(
            result == highest,
            "leaf {leaf:#x} returns the highest basic leaf {basic:#x}'s data {:x?} (got {:x?})",
            [highest.eax, highest.ebx, highest.ecx, highest.edx],
            [result.eax, result.ebx, result.ecx, result.edx]
        );
    }
}

fn check_brand_string() {
    let _prefix = prefix("brand string");
    if cpuid(EXTENDED_BASE, 0).eax < 0x8000_0004 {
        report_skip!("leaves 0x80000002..=0x80000004 are not implemented");
        return;
    }
    let mut brand = [0u8; 48];
    for (index, chunk) in brand.chunks_exact_mut(16).enumerate() {
        let result = cpuid(0x8000_0002 + index as u32, 0);
        for (part, register) in chunk
            .chunks_exact_mut(4)
            .zip([result.eax, result.ebx, result.ecx, result.edx])
        {
            part.copy_from_slice(&register.to_le_bytes());
        }
    }
    let end = brand.iter().position(|&byte| byte == 0).unwrap_or(brand.len());
    let (text, padding) = brand.split_at(end);
    report_info!("brand {}", Shown(text));
    report!(
        text.iter().all(|byte| (0x20..0x7f).contains(byte)) && padding.iter().all(|&byte| byte == 0),
        "brand string is printable ASCII followed by NUL padding (got {})",
        Shown(&brand)
    );
}

/// One instruction whose CPUID bit says whether it exists.
struct Probe {
    name: &'static str,
    /// Where CPUID advertises it.
    bit: &'static str,
    advertised: bool,
    run: fn() -> Result<(), Exception>,
    /// Why KVM cannot make it raise #UD when unadvertised, or None when it can.
    kvm_cannot_enforce: Option<&'static str>,
}

fn describe(result: Result<(), Exception>) -> &'static str {
    match result {
        Ok(()) => "executed",
        Err(exception) if exception.vector == Vector::UD => "raised #UD",
        Err(_) => "raised another exception",
    }
}

/// Advertised instructions execute; unadvertised ones raise #UD where the hypervisor can
/// enforce that. RDTSCP comes last, and is not executed unadvertised under kvm_pvm, which
/// stops the VM on it instead of raising #UD.
fn check_instructions(accelerator: Option<Accelerator>) {
    let _prefix = prefix("instructions");
    let rdrand = Probe {
        name: "RDRAND",
        bit: "CPUID.1:ECX[30]",
        advertised: Feature::Rdrand.supported(),
        run: || try_rdrand().map(drop),
        kvm_cannot_enforce: Some("SVM has no RDRAND intercept, so KVM on AMD hosts cannot hide it"),
    };
    let rdseed = Probe {
        name: "RDSEED",
        bit: "CPUID.7.0:EBX[18]",
        advertised: Feature::Rdseed.supported(),
        run: || try_rdseed().map(drop),
        kvm_cannot_enforce: Some("SVM has no RDSEED intercept, so KVM on AMD hosts cannot hide it"),
    };
    let rdpid = Probe {
        name: "RDPID",
        bit: "CPUID.7.0:ECX[22]",
        advertised: Feature::Rdpid.supported(),
        run: || try_rdpid().map(drop),
        kvm_cannot_enforce: Some("SVM has no RDPID intercept, so KVM on AMD hosts cannot hide it"),
    };
    let rdtscp = Probe {
        name: "RDTSCP",
        bit: "CPUID.80000001H:EDX[27]",
        advertised: Feature::Rdtscp.supported(),
        run: || try_rdtscp().map(drop),
        // VMX's "enable RDTSCP" control and SVM's RDTSCP intercept both let KVM raise #UD.
        kvm_cannot_enforce: None,
    };
    for probe in [&rdrand, &rdseed, &rdpid] {
        check_probe(probe, accelerator);
    }
    check_random_numbers(&rdrand, &rdseed);
    if !rdtscp.advertised && vmunit::environment::instruction_emulating_kvm() {
        report_skip!(
            "unadvertised RDTSCP not executed: this host's kvm_pvm stops the VM on it (KVM internal error) instead of raising #UD (reproduce-rdtscp-unadvertised)"
        );
    } else {
        check_probe(&rdtscp, accelerator);
    }
}

fn check_probe(probe: &Probe, accelerator: Option<Accelerator>) {
    if probe.advertised {
        let result = (probe.run)();
        report!(
            result.is_ok(),
            "{} is advertised ({}) and executes (it {})",
            probe.name,
            probe.bit,
            describe(result)
        );
        return;
    }
    match (accelerator, probe.kvm_cannot_enforce) {
        (Some(Accelerator::Tcg), _) | (_, None) => {
            let result = (probe.run)();
            report!(
                matches!(
                    result,
                    Err(Exception {
                        vector: Vector::UD,
                        ..
                    })
                ),
                "{} is not advertised ({} clear) and raises #UD (it {})",
                probe.name,
                probe.bit,
                describe(result)
            );
        }
        (_, Some(reason)) => {
            report_skip!(
                "{} is not advertised, but #UD is not checked under KVM: {reason}",
                probe.name
            );
        }
    }
}

/// Advertised RDRAND and RDSEED deliver random numbers (CF=1) within the retries Intel
/// recommends, and two of them differ.
fn check_random_numbers(rdrand: &Probe, rdseed: &Probe) {
    for (probe, tries, read) in [
        (rdrand, 10, try_rdrand as fn() -> Result<(u64, bool), Exception>),
        (rdseed, 1000, try_rdseed),
    ] {
        if !probe.advertised {
            continue;
        }
        let mut values = [0u64; 2];
        let mut found = 0;
        for _ in 0..tries * 2 {
            if let Ok((value, true)) = read() {
                values[found] = value;
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
        report!(
            found == 2 && values[0] != values[1],
            "{} delivers two different valid values (CF=1) within {} tries (got {found}: {:#x}, {:#x})",
            probe.name,
            tries * 2,
            values[0],
            values[1]
        );
    }
}
