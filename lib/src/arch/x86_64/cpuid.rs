//! CPUID: the raw instruction, the named feature bits tests check (kvm-unit-tests'
//! `X86_FEATURE_*`), the CPU vendor and the hypervisor signature.

pub use core::arch::x86_64::CpuidResult;

/// CPUID with `leaf` and `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// The highest leaf of the range `leaf` belongs to (basic leaves, or 0x8000_0000 and up).
pub fn maximum_leaf(leaf: u32) -> u32 {
    cpuid(leaf & 0x8000_0000, 0).eax
}

/// A CPUID output register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Register {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Register {
    /// This register's value in `result`.
    pub const fn of(self, result: CpuidResult) -> u32 {
        match self {
            Register::Eax => result.eax,
            Register::Ebx => result.ebx,
            Register::Ecx => result.ecx,
            Register::Edx => result.edx,
        }
    }

    /// The register's name, as the SDM spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Register::Eax => "EAX",
            Register::Ebx => "EBX",
            Register::Ecx => "ECX",
            Register::Edx => "EDX",
        }
    }
}

/// Where CPUID reports a feature: bit `bit` of output `register` for `leaf` and `subleaf`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FeatureBit {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The subleaf (ECX input).
    pub subleaf: u32,
    /// The output register.
    pub register: Register,
    /// The bit in it.
    pub bit: u32,
}

impl FeatureBit {
    /// Whether the bit is set (false when `leaf` is beyond the CPU's highest leaf).
    pub fn is_set(self) -> bool {
        if self.leaf > maximum_leaf(self.leaf) {
            return false;
        }
        self.register.of(cpuid(self.leaf, self.subleaf)) & (1 << self.bit) != 0
    }
}

impl core::fmt::Display for FeatureBit {
    /// `CPUID.7.0:EBX[24]`, `CPUID.80000001H:EDX[27]`, as the SDM writes it.
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.leaf >= 0x8000_0000 {
            write!(formatter, "CPUID.{:X}H", self.leaf)?;
        } else {
            write!(formatter, "CPUID.{:X}", self.leaf)?;
        }
        if self.subleaf != 0 || matches!(self.leaf, 7 | 0xd) {
            write!(formatter, ".{}", self.subleaf)?;
        }
        write!(formatter, ":{}[{}]", self.register.name(), self.bit)
    }
}

/// Whether CPUID reports `feature`.
pub fn has(feature: Feature) -> bool {
    feature.supported()
}

/// A CPUID feature bit, as kvm-unit-tests' `X86_FEATURE_*` (lib/x86/processor.h).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Feature {
    /// The x87 FPU on chip: `CPUID.1:EDX[0]`.
    Fpu,
    /// Debugging extensions (CR4.DE): `CPUID.1:EDX[2]`.
    De,
    /// RDTSC: `CPUID.1:EDX[4]`.
    Tsc,
    /// RDMSR/WRMSR: `CPUID.1:EDX[5]`.
    Msr,
    /// Physical address extension: `CPUID.1:EDX[6]`.
    Pae,
    /// Machine check exception: `CPUID.1:EDX[7]`.
    Mce,
    /// CMPXCHG8B: `CPUID.1:EDX[8]`.
    Cx8,
    /// On-chip local APIC: `CPUID.1:EDX[9]`.
    Apic,
    /// SYSENTER/SYSEXIT: `CPUID.1:EDX[11]`.
    Sep,
    /// Memory type range registers: `CPUID.1:EDX[12]`.
    Mtrr,
    /// Global pages (CR4.PGE): `CPUID.1:EDX[13]`.
    Pge,
    /// Machine check architecture: `CPUID.1:EDX[14]`.
    Mca,
    /// CMOVcc: `CPUID.1:EDX[15]`.
    Cmov,
    /// Page attribute table: `CPUID.1:EDX[16]`.
    Pat,
    /// CLFLUSH: `CPUID.1:EDX[19]`.
    Clflush,
    /// Debug store (IA32_DS_AREA, the BTS and PEBS buffers): `CPUID.1:EDX[21]`.
    Ds,
    /// MMX: `CPUID.1:EDX[23]`.
    Mmx,
    /// FXSAVE/FXRSTOR (CR4.OSFXSR): `CPUID.1:EDX[24]`.
    Fxsr,
    /// SSE: `CPUID.1:EDX[25]`.
    Sse,
    /// SSE2: `CPUID.1:EDX[26]`.
    Sse2,
    /// SSE3: `CPUID.1:ECX[0]`.
    Sse3,
    /// PCLMULQDQ: `CPUID.1:ECX[1]`.
    Pclmulqdq,
    /// MONITOR/MWAIT: `CPUID.1:ECX[3]`.
    Mwait,
    /// VMX: `CPUID.1:ECX[5]`.
    Vmx,
    /// SSSE3: `CPUID.1:ECX[9]`.
    Ssse3,
    /// FMA: `CPUID.1:ECX[12]`.
    Fma,
    /// CMPXCHG16B: `CPUID.1:ECX[13]`.
    Cx16,
    /// IA32_PERF_CAPABILITIES: `CPUID.1:ECX[15]`.
    Pdcm,
    /// Process-context identifiers (CR4.PCIDE): `CPUID.1:ECX[17]`.
    Pcid,
    /// SSE4.1: `CPUID.1:ECX[19]`.
    Sse41,
    /// SSE4.2: `CPUID.1:ECX[20]`.
    Sse42,
    /// X2APIC mode: `CPUID.1:ECX[21]`.
    X2apic,
    /// MOVBE: `CPUID.1:ECX[22]`.
    Movbe,
    /// POPCNT: `CPUID.1:ECX[23]`.
    Popcnt,
    /// The local APIC timer's TSC-deadline mode: `CPUID.1:ECX[24]`.
    TscDeadlineTimer,
    /// AES-NI: `CPUID.1:ECX[25]`.
    Aes,
    /// XSAVE/XRSTOR, XSETBV/XGETBV and XCR0: `CPUID.1:ECX[26]`.
    Xsave,
    /// CR4.OSXSAVE is set (reported by the CPU, not a capability): `CPUID.1:ECX[27]`.
    Osxsave,
    /// AVX: `CPUID.1:ECX[28]`.
    Avx,
    /// RDRAND: `CPUID.1:ECX[30]`.
    Rdrand,
    /// Running under a hypervisor: `CPUID.1:ECX[31]`.
    Hypervisor,
    /// RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE (CR4.FSGSBASE): `CPUID.7.0:EBX[0]`.
    Fsgsbase,
    /// IA32_TSC_ADJUST: `CPUID.7.0:EBX[1]`.
    TscAdjust,
    /// BMI1: `CPUID.7.0:EBX[3]`.
    Bmi1,
    /// Hardware lock elision: `CPUID.7.0:EBX[4]`.
    Hle,
    /// AVX2: `CPUID.7.0:EBX[5]`.
    Avx2,
    /// Supervisor-mode execution prevention (CR4.SMEP): `CPUID.7.0:EBX[7]`.
    Smep,
    /// BMI2: `CPUID.7.0:EBX[8]`.
    Bmi2,
    /// Enhanced REP MOVSB/STOSB: `CPUID.7.0:EBX[9]`.
    Erms,
    /// INVPCID: `CPUID.7.0:EBX[10]`.
    Invpcid,
    /// Restricted transactional memory: `CPUID.7.0:EBX[11]`.
    Rtm,
    /// Memory protection extensions: `CPUID.7.0:EBX[14]`.
    Mpx,
    /// AVX-512 foundation: `CPUID.7.0:EBX[16]`.
    Avx512f,
    /// RDSEED: `CPUID.7.0:EBX[18]`.
    Rdseed,
    /// ADCX/ADOX: `CPUID.7.0:EBX[19]`.
    Adx,
    /// Supervisor-mode access prevention (CR4.SMAP, STAC/CLAC): `CPUID.7.0:EBX[20]`.
    Smap,
    /// PCOMMIT (withdrawn by Intel): `CPUID.7.0:EBX[22]`.
    Pcommit,
    /// CLFLUSHOPT: `CPUID.7.0:EBX[23]`.
    Clflushopt,
    /// CLWB: `CPUID.7.0:EBX[24]`.
    Clwb,
    /// Intel processor trace: `CPUID.7.0:EBX[25]`.
    IntelPt,
    /// SHA extensions: `CPUID.7.0:EBX[29]`.
    Sha,
    /// User-mode instruction prevention (CR4.UMIP): `CPUID.7.0:ECX[2]`.
    Umip,
    /// Protection keys for user pages (CR4.PKE): `CPUID.7.0:ECX[3]`.
    Pku,
    /// CR4.PKE is set (reported by the CPU, not a capability): `CPUID.7.0:ECX[4]`.
    Ospke,
    /// CET shadow stacks: `CPUID.7.0:ECX[7]`.
    Shstk,
    /// 5-level paging (CR4.LA57): `CPUID.7.0:ECX[16]`.
    La57,
    /// RDPID: `CPUID.7.0:ECX[22]`.
    Rdpid,
    /// Bus-lock debug exceptions (DEBUGCTL.BLD): `CPUID.7.0:ECX[24]`.
    BusLockDetect,
    /// Protection keys for supervisor pages (CR4.PKS): `CPUID.7.0:ECX[31]`.
    Pks,
    /// CET indirect-branch tracking: `CPUID.7.0:EDX[20]`.
    Ibt,
    /// IA32_SPEC_CTRL.IBRS and IA32_PRED_CMD.IBPB (Intel): `CPUID.7.0:EDX[26]`.
    SpecCtrl,
    /// IA32_SPEC_CTRL.STIBP (Intel): `CPUID.7.0:EDX[27]`.
    IntelStibp,
    /// IA32_FLUSH_CMD.L1D_FLUSH: `CPUID.7.0:EDX[28]`.
    FlushL1d,
    /// IA32_ARCH_CAPABILITIES: `CPUID.7.0:EDX[29]`.
    ArchCapabilities,
    /// IA32_SPEC_CTRL.SSBD (Intel): `CPUID.7.0:EDX[31]`.
    SpecCtrlSsbd,
    /// Linear-address masking (CR4.LAM_SUP, CR3.LAM_U48/U57): `CPUID.7.1:EAX[26]`.
    Lam,
    /// XSAVEOPT: `CPUID.D.1:EAX[0]`.
    Xsaveopt,
    /// XSAVEC: `CPUID.D.1:EAX[1]`.
    Xsavec,
    /// XGETBV with ECX = 1 (XINUSE): `CPUID.D.1:EAX[2]`.
    Xgetbv1,
    /// XSAVES/XRSTORS and IA32_XSS: `CPUID.D.1:EAX[3]`.
    Xsaves,
    /// LAHF/SAHF in 64-bit mode: `CPUID.80000001H:ECX[0]`.
    LahfLm,
    /// AMD secure virtual machine: `CPUID.80000001H:ECX[2]`.
    Svm,
    /// SKINIT and STGI regardless of EFER.SVME: `CPUID.80000001H:ECX[12]`.
    Skinit,
    /// SYSCALL/SYSRET: `CPUID.80000001H:EDX[11]`.
    Syscall,
    /// No-execute pages (EFER.NXE): `CPUID.80000001H:EDX[20]`.
    Nx,
    /// 1-GiB pages: `CPUID.80000001H:EDX[26]`.
    Gbpages,
    /// RDTSCP and IA32_TSC_AUX: `CPUID.80000001H:EDX[27]`.
    Rdtscp,
    /// Long mode: `CPUID.80000001H:EDX[29]`.
    Lm,
    /// RDPRU: `CPUID.80000008H:EBX[4]`.
    Rdpru,
    /// IA32_PRED_CMD.IBPB (AMD): `CPUID.80000008H:EBX[12]`.
    AmdIbpb,
    /// IA32_SPEC_CTRL.IBRS (AMD): `CPUID.80000008H:EBX[14]`.
    AmdIbrs,
    /// IA32_SPEC_CTRL.STIBP (AMD): `CPUID.80000008H:EBX[15]`.
    AmdStibp,
    /// IA32_SPEC_CTRL.SSBD (AMD): `CPUID.80000008H:EBX[24]`.
    AmdSsbd,
    /// MSR_VIRT_SPEC_CTRL.SSBD (AMD): `CPUID.80000008H:EBX[25]`.
    VirtSsbd,
    /// IA32_PRED_CMD.SBPB (AMD selective branch predictor barrier): `CPUID.80000021H:EAX[27]`.
    Sbpb,
}

impl Feature {
    /// Where CPUID reports it.
    pub const fn bit(self) -> FeatureBit {
        let (leaf, subleaf, register, bit) = match self {
            Feature::Fpu => (1, 0, Register::Edx, 0),
            Feature::De => (1, 0, Register::Edx, 2),
            Feature::Tsc => (1, 0, Register::Edx, 4),
            Feature::Msr => (1, 0, Register::Edx, 5),
            Feature::Pae => (1, 0, Register::Edx, 6),
            Feature::Mce => (1, 0, Register::Edx, 7),
            Feature::Cx8 => (1, 0, Register::Edx, 8),
            Feature::Apic => (1, 0, Register::Edx, 9),
            Feature::Sep => (1, 0, Register::Edx, 11),
            Feature::Mtrr => (1, 0, Register::Edx, 12),
            Feature::Pge => (1, 0, Register::Edx, 13),
            Feature::Mca => (1, 0, Register::Edx, 14),
            Feature::Cmov => (1, 0, Register::Edx, 15),
            Feature::Pat => (1, 0, Register::Edx, 16),
            Feature::Clflush => (1, 0, Register::Edx, 19),
            Feature::Ds => (1, 0, Register::Edx, 21),
            Feature::Mmx => (1, 0, Register::Edx, 23),
            Feature::Fxsr => (1, 0, Register::Edx, 24),
            Feature::Sse => (1, 0, Register::Edx, 25),
            Feature::Sse2 => (1, 0, Register::Edx, 26),
            Feature::Sse3 => (1, 0, Register::Ecx, 0),
            Feature::Pclmulqdq => (1, 0, Register::Ecx, 1),
            Feature::Mwait => (1, 0, Register::Ecx, 3),
            Feature::Vmx => (1, 0, Register::Ecx, 5),
            Feature::Ssse3 => (1, 0, Register::Ecx, 9),
            Feature::Fma => (1, 0, Register::Ecx, 12),
            Feature::Cx16 => (1, 0, Register::Ecx, 13),
            Feature::Pdcm => (1, 0, Register::Ecx, 15),
            Feature::Pcid => (1, 0, Register::Ecx, 17),
            Feature::Sse41 => (1, 0, Register::Ecx, 19),
            Feature::Sse42 => (1, 0, Register::Ecx, 20),
            Feature::X2apic => (1, 0, Register::Ecx, 21),
            Feature::Movbe => (1, 0, Register::Ecx, 22),
            Feature::Popcnt => (1, 0, Register::Ecx, 23),
            Feature::TscDeadlineTimer => (1, 0, Register::Ecx, 24),
            Feature::Aes => (1, 0, Register::Ecx, 25),
            Feature::Xsave => (1, 0, Register::Ecx, 26),
            Feature::Osxsave => (1, 0, Register::Ecx, 27),
            Feature::Avx => (1, 0, Register::Ecx, 28),
            Feature::Rdrand => (1, 0, Register::Ecx, 30),
            Feature::Hypervisor => (1, 0, Register::Ecx, 31),
            Feature::Fsgsbase => (7, 0, Register::Ebx, 0),
            Feature::TscAdjust => (7, 0, Register::Ebx, 1),
            Feature::Bmi1 => (7, 0, Register::Ebx, 3),
            Feature::Hle => (7, 0, Register::Ebx, 4),
            Feature::Avx2 => (7, 0, Register::Ebx, 5),
            Feature::Smep => (7, 0, Register::Ebx, 7),
            Feature::Bmi2 => (7, 0, Register::Ebx, 8),
            Feature::Erms => (7, 0, Register::Ebx, 9),
            Feature::Invpcid => (7, 0, Register::Ebx, 10),
            Feature::Rtm => (7, 0, Register::Ebx, 11),
            Feature::Mpx => (7, 0, Register::Ebx, 14),
            Feature::Avx512f => (7, 0, Register::Ebx, 16),
            Feature::Rdseed => (7, 0, Register::Ebx, 18),
            Feature::Adx => (7, 0, Register::Ebx, 19),
            Feature::Smap => (7, 0, Register::Ebx, 20),
            Feature::Pcommit => (7, 0, Register::Ebx, 22),
            Feature::Clflushopt => (7, 0, Register::Ebx, 23),
            Feature::Clwb => (7, 0, Register::Ebx, 24),
            Feature::IntelPt => (7, 0, Register::Ebx, 25),
            Feature::Sha => (7, 0, Register::Ebx, 29),
            Feature::Umip => (7, 0, Register::Ecx, 2),
            Feature::Pku => (7, 0, Register::Ecx, 3),
            Feature::Ospke => (7, 0, Register::Ecx, 4),
            Feature::Shstk => (7, 0, Register::Ecx, 7),
            Feature::La57 => (7, 0, Register::Ecx, 16),
            Feature::Rdpid => (7, 0, Register::Ecx, 22),
            Feature::BusLockDetect => (7, 0, Register::Ecx, 24),
            Feature::Pks => (7, 0, Register::Ecx, 31),
            Feature::Ibt => (7, 0, Register::Edx, 20),
            Feature::SpecCtrl => (7, 0, Register::Edx, 26),
            Feature::IntelStibp => (7, 0, Register::Edx, 27),
            Feature::FlushL1d => (7, 0, Register::Edx, 28),
            Feature::ArchCapabilities => (7, 0, Register::Edx, 29),
            Feature::SpecCtrlSsbd => (7, 0, Register::Edx, 31),
            Feature::Lam => (7, 1, Register::Eax, 26),
            Feature::Xsaveopt => (0xd, 1, Register::Eax, 0),
            Feature::Xsavec => (0xd, 1, Register::Eax, 1),
            Feature::Xgetbv1 => (0xd, 1, Register::Eax, 2),
            Feature::Xsaves => (0xd, 1, Register::Eax, 3),
            Feature::LahfLm => (0x8000_0001, 0, Register::Ecx, 0),
            Feature::Svm => (0x8000_0001, 0, Register::Ecx, 2),
            Feature::Skinit => (0x8000_0001, 0, Register::Ecx, 12),
            Feature::Syscall => (0x8000_0001, 0, Register::Edx, 11),
            Feature::Nx => (0x8000_0001, 0, Register::Edx, 20),
            Feature::Gbpages => (0x8000_0001, 0, Register::Edx, 26),
            Feature::Rdtscp => (0x8000_0001, 0, Register::Edx, 27),
            Feature::Lm => (0x8000_0001, 0, Register::Edx, 29),
            Feature::Rdpru => (0x8000_0008, 0, Register::Ebx, 4),
            Feature::AmdIbpb => (0x8000_0008, 0, Register::Ebx, 12),
            Feature::AmdIbrs => (0x8000_0008, 0, Register::Ebx, 14),
            Feature::AmdStibp => (0x8000_0008, 0, Register::Ebx, 15),
            Feature::AmdSsbd => (0x8000_0008, 0, Register::Ebx, 24),
            Feature::VirtSsbd => (0x8000_0008, 0, Register::Ebx, 25),
            Feature::Sbpb => (0x8000_0021, 0, Register::Eax, 27),
        };
        FeatureBit {
            leaf,
            subleaf,
            register,
            bit,
        }
    }

    /// Whether CPUID reports it.
    pub fn supported(self) -> bool {
        self.bit().is_set()
    }
}

/// The CPU vendor, from CPUID leaf 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Vendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` (or Hygon's `HygonGenuine`, which follows AMD).
    Amd,
    /// Any other vendor string (see [`vendor_string`]).
    Other,
}

/// The CPU vendor.
pub fn vendor() -> Vendor {
    match &vendor_string() {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Twelve bytes from three CPUID output registers, in the order given.
fn text_of(registers: [u32; 3]) -> [u8; 12] {
    let mut bytes = [0; 12];
    for (chunk, register) in bytes.chunks_exact_mut(4).zip(registers) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    bytes
}

/// The CPU vendor string of CPUID leaf 0 (EBX, EDX, ECX), e.g. `*b"GenuineIntel"`.
pub fn vendor_string() -> [u8; 12] {
    let leaf = cpuid(0, 0);
    text_of([leaf.ebx, leaf.edx, leaf.ecx])
}

/// The hypervisor signature of CPUID leaf 0x4000_0000 (EBX, ECX, EDX), e.g.
/// `*b"KVMKVMKVM\0\0\0"` or `*b"TCGTCGTCGTCG"`; meaningful when [`Feature::Hypervisor`] is
/// set.
pub fn hypervisor_signature() -> [u8; 12] {
    let leaf = cpuid(0x4000_0000, 0);
    text_of([leaf.ebx, leaf.ecx, leaf.edx])
}

/// Whether the hypervisor signature says QEMU's TCG (`TCGTCGTCGTCG`): for tests that mark
/// TCG's known defects.
pub fn is_tcg() -> bool {
    hypervisor_signature() == *b"TCGTCGTCGTCG"
}
