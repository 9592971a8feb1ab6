//! PSCI (Arm DEN 0022): calls to the firmware (QEMU itself on `virt`) through the conduit the
//! device tree names, `hvc` or `smc`.

use core::arch::asm;

use super::device_tree::{PsciConduit, try_platform};

/// PSCI function identifiers (SMC32 forms for the argument-less calls, SMC64 otherwise).
#[allow(missing_docs)]
pub mod function {
    pub const VERSION: u32 = 0x8400_0000;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON: u32 = 0xc400_0003;
    pub const AFFINITY_INFO: u32 = 0xc400_0004;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const FEATURES: u32 = 0x8400_000a;
}

/// A PSCI return status: SUCCESS (0) or one of the negative error codes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// SUCCESS (0).
    Success,
    /// NOT_SUPPORTED (-1).
    NotSupported,
    /// INVALID_PARAMETERS (-2).
    InvalidParameters,
    /// DENIED (-3).
    Denied,
    /// ALREADY_ON (-4).
    AlreadyOn,
    /// ON_PENDING (-5).
    OnPending,
    /// INTERNAL_FAILURE (-6).
    InternalFailure,
    /// NOT_PRESENT (-7).
    NotPresent,
    /// DISABLED (-8).
    Disabled,
    /// INVALID_ADDRESS (-9).
    InvalidAddress,
    /// Any other value.
    Other(i64),
}

/// Each named status with its code and the specification's name.
const STATUSES: [(Status, i64, &str); 10] = [
    (Status::Success, 0, "SUCCESS"),
    (Status::NotSupported, -1, "NOT_SUPPORTED"),
    (Status::InvalidParameters, -2, "INVALID_PARAMETERS"),
    (Status::Denied, -3, "DENIED"),
    (Status::AlreadyOn, -4, "ALREADY_ON"),
    (Status::OnPending, -5, "ON_PENDING"),
    (Status::InternalFailure, -6, "INTERNAL_FAILURE"),
    (Status::NotPresent, -7, "NOT_PRESENT"),
    (Status::Disabled, -8, "DISABLED"),
    (Status::InvalidAddress, -9, "INVALID_ADDRESS"),
];

impl Status {
    /// The status a call returned in x0.
    pub fn from_code(code: i64) -> Status {
        STATUSES
            .iter()
            .find(|(_, value, _)| *value == code)
            .map_or(Status::Other(code), |(status, _, _)| *status)
    }

    /// The status's code.
    pub fn code(self) -> i64 {
        match self {
            Status::Other(code) => code,
            status => STATUSES
                .iter()
                .find(|(named, _, _)| *named == status)
                .map_or(0, |(_, code, _)| *code),
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match STATUSES.iter().find(|(status, _, _)| status == self) {
            Some((_, code, name)) => write!(formatter, "{name} ({code})"),
            None => write!(formatter, "status {}", self.code()),
        }
    }
}

/// What AFFINITY_INFO says of a CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AffinityState {
    /// ON (0).
    On,
    /// OFF (1).
    Off,
    /// ON_PENDING (2): CPU_ON was called and the CPU has not started yet.
    OnPending,
}

/// The conduit, `hvc` when the device tree names none (QEMU's default without EL2).
pub fn conduit() -> PsciConduit {
    try_platform()
        .and_then(|platform| platform.psci)
        .unwrap_or(PsciConduit::Hvc)
}

/// Whether `function` is in the PSCI range of SMCCC function identifiers (0x8400_0000 to
/// 0x8400_001f, and the SMC64 forms from 0xc400_0000).
fn is_psci(function: u32) -> bool {
    function & !0x4000_001f == 0x8400_0000
}

/// Whether `function` takes an entry point that the firmware starts a CPU at: CPU_SUSPEND,
/// CPU_ON, CPU_DEFAULT_SUSPEND, SYSTEM_SUSPEND (either calling convention).
fn takes_entry_point(function: u32) -> bool {
    matches!(
        function & !0x4000_0000,
        0x8400_0001 | 0x8400_0003 | 0x8400_000c | 0x8400_000e
    )
}

/// Makes PSCI call `function` with three arguments; returns x0 (a status or a result).
///
/// SYSTEM_OFF, SYSTEM_RESET and CPU_OFF do not return. Calls that start code at an entry point
/// (CPU_ON and the suspends) go through [`raw_call`] or [`cpu_on`], which are unsafe.
///
/// # Panics
/// For a function outside the PSCI range, or one that takes an entry point.
pub fn call(function: u32, first: u64, second: u64, third: u64) -> i64 {
    assert!(
        is_psci(function) && !takes_entry_point(function),
        "function {function:#x} is not a PSCI function without an entry point"
    );
    // SAFETY: a PSCI function that starts no code at an address of ours.
    unsafe { raw_call(function, first, second, third) }
}

/// Makes SMCCC call `function` with three arguments through the PSCI conduit; returns x0.
///
/// # Safety
/// The call must not start code that breaks the runtime: a CPU_ON or suspend entry point must
/// be code that can run with the MMU off on a CPU and stack nothing else uses (the runtime's
/// own secondary entry, through `smp::start_cpu`), or the call must fail (a CPU that is
/// already on, an MPIDR with no CPU). Other SMCCC services must leave memory alone.
pub unsafe fn raw_call(function: u32, first: u64, second: u64, third: u64) -> i64 {
    let mut result = u64::from(function);
    match conduit() {
        // SAFETY: an SMCCC call into the hypervisor (QEMU's PSCI): it reads x0..x3, returns in
        // x0 and may clobber x1..x17 (SMCCC 1.0); the caller guarantees what it starts.
        PsciConduit::Hvc => unsafe {
            asm!("hvc #0", inout("x0") result, inout("x1") first => _, inout("x2") second => _,
                 inout("x3") third => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                 out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                 out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
        },
        // SAFETY: as above, through the secure monitor conduit.
        PsciConduit::Smc => unsafe {
            asm!("smc #0", inout("x0") result, inout("x1") first => _, inout("x2") second => _,
                 inout("x3") third => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                 out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                 out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
        },
    }
    result as i64
}

/// kvm-unit-tests' micro-bench hypercall: SMCCC function 0x4b00_0000, which no service owns
/// (a Yielding Call, owning entity 11: reserved in SMCCC). SMCCC makes the answer Unknown
/// Function (x0 = -1, [`SMCCC_NOT_SUPPORTED`]).
pub const UNASSIGNED_FUNCTION: u32 = 0x4b00_0000;
/// SMCCC's Unknown Function / NOT_SUPPORTED return value.
pub const SMCCC_NOT_SUPPORTED: i64 = -1;

/// Makes SMCCC call [`UNASSIGNED_FUNCTION`] through the PSCI conduit and returns x0 (an
/// exception it raises is not caught: see [`try_call_unassigned`]).
pub fn call_unassigned() -> i64 {
    // SAFETY: no service owns the function, so the call starts no code and touches no memory.
    unsafe { raw_call(UNASSIGNED_FUNCTION, 0, 0, 0) }
}

/// Makes SMCCC call [`UNASSIGNED_FUNCTION`] through the PSCI conduit and returns x0, or the
/// exception it raised (a conduit that implements PSCI alone may make it UNDEFINED).
pub fn try_call_unassigned() -> Result<i64, crate::arch::Exception> {
    crate::catch::catch_exception(call_unassigned)
}

/// PSCI_FEATURES of `function`: its feature flags, or a status (NOT_SUPPORTED).
pub fn features(function: u32) -> Result<u32, Status> {
    let result = call(function::FEATURES, u64::from(function), 0, 0);
    u32::try_from(result).map_err(|_| Status::from_code(result))
}

/// PSCI_VERSION: (major, minor).
pub fn version() -> (u16, u16) {
    let version = call(function::VERSION, 0, 0, 0) as u32;
    ((version >> 16) as u16, version as u16)
}

/// CPU_ON of the CPU with affinity `mpidr` at physical `entry`, which gets `context` in x0.
///
/// # Safety
/// As for [`raw_call`]: `entry` and `context` must start the CPU safely (use
/// `smp::start_cpu`), unless the call is certain to fail.
pub unsafe fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Status {
    // SAFETY: the caller's guarantee.
    Status::from_code(unsafe { raw_call(function::CPU_ON, mpidr, entry, context) })
}

/// AFFINITY_INFO of the CPU `mpidr` (level 0), or the error status.
pub fn affinity_info(mpidr: u64) -> Result<AffinityState, Status> {
    match call(function::AFFINITY_INFO, mpidr, 0, 0) {
        0 => Ok(AffinityState::On),
        1 => Ok(AffinityState::Off),
        2 => Ok(AffinityState::OnPending),
        code => Err(Status::from_code(code)),
    }
}

/// CPU_OFF of the calling CPU; returns only on failure (with the status).
pub fn cpu_off() -> Status {
    Status::from_code(call(function::CPU_OFF, 0, 0, 0))
}

/// SYSTEM_OFF: QEMU exits with status 0. Returns only if PSCI is broken.
pub fn system_off() {
    call(function::SYSTEM_OFF, 0, 0, 0);
}
