//! The VMware backdoor: the I/O port a guest asks the hypervisor things through (QEMU's
//! `-machine vmport=on`, hw/i386/vmport.c) and the pseudo performance counters RDPMC reads
//! (KVM's `enable_vmware_backdoor`, arch/x86/kvm/pmu.c). Where the backdoor is enabled, KVM
//! lets IN from the backdoor ports and RDPMC of the pseudo counters through at CPL 3 whatever
//! IOPL, the TSS I/O bitmap and CR4.PCE say; elsewhere the architectural rules raise #GP(0).

use core::arch::asm;

use super::exceptions::{Exception, catch_exception};

/// The backdoor's I/O port (kvm-unit-tests' VMWARE_BACKDOOR_PORT).
pub const BACKDOOR_PORT: u16 = 0x5658;
/// The backdoor's high-bandwidth port (KVM lets it through at CPL 3 too).
pub const HIGH_BANDWIDTH_PORT: u16 = 0x5659;
/// The magic value a request carries in EAX, and GETVERSION answers in EBX ("VMXh").
pub const MAGIC: u32 = 0x564d_5868;
/// What a request's EBX holds before the IN, so that an unanswered one shows (kvm-unit-tests'
/// VMPORT_DEFAULT_RETVAL).
pub const UNANSWERED: u32 = 0xdead_beef;

/// A backdoor command (ECX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// GETVERSION (0x0a): EBX answers [`MAGIC`].
    GetVersion,
    /// A command QEMU's vmport does not implement (kvm-unit-tests' VMPORT_CMD_ILLEGAL, 0xfff):
    /// EBX is left alone.
    Illegal,
}

impl Command {
    /// Its number, for ECX.
    pub const fn number(self) -> u32 {
        match self {
            Command::GetVersion => 0x0a,
            Command::Illegal => 0xfff,
        }
    }
}

/// A pseudo performance counter RDPMC reads where the backdoor is enabled (KVM's
/// VMWARE_BACKDOOR_PMC_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoCounter {
    /// 0x10000: the host's TSC.
    HostTsc,
    /// 0x10001: real time, in nanoseconds.
    RealTime,
    /// 0x10002: apparent time, in nanoseconds.
    ApparentTime,
}

impl PseudoCounter {
    /// All three.
    pub const ALL: [PseudoCounter; 3] = [
        PseudoCounter::HostTsc,
        PseudoCounter::RealTime,
        PseudoCounter::ApparentTime,
    ];

    /// Its RDPMC index (ECX).
    pub const fn index(self) -> u32 {
        match self {
            PseudoCounter::HostTsc => 0x10000,
            PseudoCounter::RealTime => 0x10001,
            PseudoCounter::ApparentTime => 0x10002,
        }
    }
}

/// The registers a backdoor IN returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    /// EAX: the value read.
    pub eax: u32,
    /// EBX: GETVERSION's magic, or [`UNANSWERED`] where nothing answered.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// IN of a doubleword from `port` with EAX = [`MAGIC`], ECX = `command` and EBX =
/// [`UNANSWERED`], as a backdoor request: the registers afterwards. Never catches: for
/// `run_in_user_mode`, where a #GP ends the run.
pub fn request(port: u16, command: u32) -> Registers {
    let (eax, ecx, edx): (u32, u32, u32);
    let mut ebx = u64::from(UNANSWERED);
    // SAFETY: port input changes no guest memory; RBX (reserved by LLVM) is swapped with a
    // scratch register around the IN and back.
    unsafe {
        asm!(
            "xchg {ebx}, rbx",
            "in eax, dx",
            "xchg {ebx}, rbx",
            ebx = inout(reg) ebx,
            inout("eax") MAGIC => eax,
            inout("ecx") command => ecx,
            inout("edx") u32::from(port) => edx,
            options(nomem, nostack, preserves_flags),
        )
    };
    Registers {
        eax,
        ebx: ebx as u32,
        ecx,
        edx,
    }
}

/// [`request`], or the exception the IN raised.
pub fn try_request(port: u16, command: u32) -> Result<Registers, Exception> {
    catch_exception(|| request(port, command))
}
