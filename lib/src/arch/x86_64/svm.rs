//! AMD SVM (nested virtualization): the VMCB layout, intercepts and exit codes by name (AMD APM
//! Vol. 2, 15 and appendix B/C), and a harness that runs a Rust closure as a nested guest.
//!
//! The guest shares the runtime's address space: its CR3, GDT, IDT and segments are the host's
//! (kvm-unit-tests' `vmcb_ident`), and nested paging, where CPUID offers it, maps guest-physical
//! memory onto the same host-physical addresses; so the closure runs the same code and sees the
//! same memory, on a stack of its own. [`Svm::run`] enters it with VMRUN (RAX = the
//! VMCB's physical address; the host's FS/GS/TR/LDTR and SYSCALL MSRs saved with VMSAVE and put
//! back with VMLOAD around it; GIF cleared with CLGI before and set again with STGI after) and
//! hands every #VMEXIT to the caller until it says the test is finished. The guest ends with an
//! intercepted VMMCALL when the closure returns.
//!
//! What a test may change is narrow and safe: intercepts, the ASID, the TSC offset, `int_ctl`,
//! V_INTR_VECTOR, EVENTINJ, the interrupt shadow, clean bits, the guest's RFLAGS.IF/TF and the
//! CR0/CR4 bits the runtime does not own, the I/O and MSR permission maps, the nested map's
//! presence. Skipping an intercepted instruction checks the instruction's bytes first. The raw
//! VMCB and the guest's registers are `unsafe` to write ([`Svm::vmcb_mut`],
//! [`Exit::registers_mut`]): a guest RIP, RSP, CR3, segment or callee-saved register can make
//! the guest's code run anything.
//!
//! The harness runs guests on the boot CPU: the guest's stack is no CPU's, so its catch
//! contexts count as the boot CPU's; the guest keeps its own across exits
//! (`catch::HandlerState`), so an exception in it never resumes a host frame.

use core::arch::{asm, global_asm};
use core::fmt;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU8, Ordering};

use super::control::{CR0_OWNED, Cr0Flags, read_cr0, read_cr2, read_cr3, read_cr4};
use super::cpuid::{Feature, cpuid, maximum_leaf};
use super::exceptions::Exception;
use super::msr::{EferFlags, IA32_DEBUGCTL, IA32_EFER, IA32_PAT, try_rdmsr, try_wrmsr};
use crate::memory::PAGE_SIZE;

/// VM_CR (AMD): SVM lock and disable bits.
pub const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA (AMD): the physical address of the page VMRUN saves the host's state to.
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// VM_CR.SVMDIS: EFER.SVME cannot be set.
pub const VM_CR_SVM_DISABLE: u64 = 1 << 4;

/// The CPUID leaf of SVM's features: EAX revision, EBX number of ASIDs, EDX feature bits.
pub const SVM_FEATURE_LEAF: u32 = 0x8000_000a;

/// An SVM feature bit of `CPUID.8000000AH:EDX` (kvm-unit-tests' `X86_FEATURE_NPT` ...).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SvmFeature {
    /// Nested paging: bit 0.
    Npt,
    /// LBR virtualization: bit 1.
    Lbrv,
    /// SVM lock: bit 2.
    SvmLock,
    /// Next-RIP save on #VMEXIT (`control.next_rip`): bit 3.
    Nrips,
    /// The TSC ratio MSR: bit 4.
    TscRateMsr,
    /// VMCB clean bits: bit 5.
    VmcbClean,
    /// Flush by ASID: bit 6.
    FlushByAsid,
    /// Decode assists: bit 7.
    DecodeAssists,
    /// Pause filter: bit 10.
    PauseFilter,
    /// Pause filter threshold: bit 12.
    PauseFilterThreshold,
    /// AVIC: bit 13.
    Avic,
    /// Virtualized VMSAVE/VMLOAD: bit 15.
    VirtualVmsaveVmload,
    /// Virtual GIF: bit 16.
    Vgif,
    /// Virtual NMI: bit 25.
    Vnmi,
}

impl SvmFeature {
    /// The bit in `CPUID.8000000AH:EDX`.
    pub const fn bit(self) -> u32 {
        match self {
            SvmFeature::Npt => 0,
            SvmFeature::Lbrv => 1,
            SvmFeature::SvmLock => 2,
            SvmFeature::Nrips => 3,
            SvmFeature::TscRateMsr => 4,
            SvmFeature::VmcbClean => 5,
            SvmFeature::FlushByAsid => 6,
            SvmFeature::DecodeAssists => 7,
            SvmFeature::PauseFilter => 10,
            SvmFeature::PauseFilterThreshold => 12,
            SvmFeature::Avic => 13,
            SvmFeature::VirtualVmsaveVmload => 15,
            SvmFeature::Vgif => 16,
            SvmFeature::Vnmi => 25,
        }
    }

    /// Whether CPUID reports SVM and this feature.
    pub fn supported(self) -> bool {
        Feature::Svm.supported()
            && maximum_leaf(SVM_FEATURE_LEAF) >= SVM_FEATURE_LEAF
            && cpuid(SVM_FEATURE_LEAF, 0).edx & (1 << self.bit()) != 0
    }
}

/// A segment in the VMCB's save area.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct VmcbSegment {
    /// The selector.
    pub selector: u16,
    /// The attributes: descriptor bits 47:40 in 7:0 and 55:52 in 11:8.
    pub attributes: u16,
    /// The limit.
    pub limit: u32,
    /// The base.
    pub base: u64,
}

/// Segment attribute bits ([`VmcbSegment::attributes`]).
pub mod attributes {
    /// Type: read/write data.
    pub const DATA_READ_WRITE: u16 = 3;
    /// Type: execute/read code, accessed.
    pub const CODE_EXECUTE_READ: u16 = 9;
    /// Type: execute/read code, accessed (0xb: kvm-unit-tests' 32-bit CS, 0xc9b).
    pub const CODE_EXECUTE_READ_ACCESSED: u16 = 0xb;
    /// S: code or data (not system).
    pub const S: u16 = 1 << 4;
    /// P: present.
    pub const P: u16 = 1 << 7;
    /// L: 64-bit code.
    pub const L: u16 = 1 << 9;
    /// D/B: 32-bit default operand size.
    pub const DB: u16 = 1 << 10;
    /// G: 4 KiB granularity.
    pub const G: u16 = 1 << 11;
}

/// The VMCB's control area (offsets 0x000-0x3ff).
#[repr(C)]
#[derive(Debug)]
pub struct ControlArea {
    /// Intercept vectors: CR reads/writes, DR reads/writes, exceptions, then two words of
    /// instruction intercepts and one more ([`Intercept`]).
    pub intercepts: [u32; 6],
    reserved_1: [u32; 9],
    /// Pause filter threshold.
    pub pause_filter_threshold: u16,
    /// Pause filter count.
    pub pause_filter_count: u16,
    /// IOPM_BASE_PA: the I/O permission map (12 KiB).
    pub iopm_base_pa: u64,
    /// MSRPM_BASE_PA: the MSR permission map (8 KiB).
    pub msrpm_base_pa: u64,
    /// TSC_OFFSET: added to the TSC the guest reads.
    pub tsc_offset: u64,
    /// The guest's ASID (0 is the host's: VMRUN fails with it).
    pub asid: u32,
    /// TLB_CONTROL.
    pub tlb_control: u8,
    reserved_2: [u8; 3],
    /// V_TPR, V_IRQ, V_GIF, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING ...
    pub int_ctl: u32,
    /// V_INTR_VECTOR.
    pub int_vector: u32,
    /// Interrupt shadow (bit 0).
    pub int_state: u32,
    reserved_3: [u8; 4],
    /// EXITCODE ([`ExitCode`]).
    pub exit_code: u64,
    /// EXITINFO1.
    pub exit_info_1: u64,
    /// EXITINFO2.
    pub exit_info_2: u64,
    /// EXITINTINFO.
    pub exit_int_info: u32,
    /// EXITINTINFO's error code.
    pub exit_int_info_error: u32,
    /// NP_ENABLE (bit 0) and friends.
    pub nested_control: u64,
    reserved_4: [u8; 16],
    /// EVENTINJ.
    pub event_inject: u32,
    /// EVENTINJ's error code.
    pub event_inject_error: u32,
    /// N_CR3: the nested page table.
    pub nested_cr3: u64,
    /// LBR virtualization and virtual VMSAVE/VMLOAD enables.
    pub virtual_extensions: u64,
    /// VMCB clean bits.
    pub clean: u32,
    reserved_5: u32,
    /// nRIP: the next instruction's RIP on an instruction intercept (NRIPS).
    pub next_rip: u64,
    /// The number of instruction bytes fetched (decode assists).
    pub instruction_length: u8,
    /// The instruction bytes fetched (decode assists).
    pub instruction_bytes: [u8; 15],
    reserved_6: [u8; 800],
}

/// The VMCB's state save area (offsets 0x400 on).
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)]
pub struct SaveArea {
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    reserved_1: [u8; 43],
    /// The current privilege level.
    pub cpl: u8,
    reserved_2: [u8; 4],
    pub efer: u64,
    reserved_3: [u8; 112],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    reserved_4: [u8; 88],
    pub rsp: u64,
    reserved_5: [u8; 24],
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    reserved_6: [u8; 32],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_exception_from: u64,
    pub last_exception_to: u64,
}

/// A virtual machine control block: one 4 KiB page.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct Vmcb {
    /// Intercepts, exit information, event injection.
    pub control: ControlArea,
    /// The guest's state.
    pub save: SaveArea,
}

const _: () = {
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(offset_of!(ControlArea, pause_filter_threshold) == 0x3c);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x40);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x48);
    assert!(offset_of!(ControlArea, tsc_offset) == 0x50);
    assert!(offset_of!(ControlArea, asid) == 0x58);
    assert!(offset_of!(ControlArea, tlb_control) == 0x5c);
    assert!(offset_of!(ControlArea, int_ctl) == 0x60);
    assert!(offset_of!(ControlArea, int_state) == 0x68);
    assert!(offset_of!(ControlArea, exit_code) == 0x70);
    assert!(offset_of!(ControlArea, exit_info_1) == 0x78);
    assert!(offset_of!(ControlArea, exit_info_2) == 0x80);
    assert!(offset_of!(ControlArea, exit_int_info) == 0x88);
    assert!(offset_of!(ControlArea, nested_control) == 0x90);
    assert!(offset_of!(ControlArea, event_inject) == 0xa8);
    assert!(offset_of!(ControlArea, nested_cr3) == 0xb0);
    assert!(offset_of!(ControlArea, clean) == 0xc0);
    assert!(offset_of!(ControlArea, next_rip) == 0xc8);
    assert!(offset_of!(ControlArea, instruction_length) == 0xd0);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(offset_of!(SaveArea, tr) == 0x90);
    assert!(offset_of!(SaveArea, cpl) == 0xcb);
    assert!(offset_of!(SaveArea, efer) == 0xd0);
    assert!(offset_of!(SaveArea, cr4) == 0x148);
    assert!(offset_of!(SaveArea, cr0) == 0x158);
    assert!(offset_of!(SaveArea, rflags) == 0x170);
    assert!(offset_of!(SaveArea, rip) == 0x178);
    assert!(offset_of!(SaveArea, rsp) == 0x1d8);
    assert!(offset_of!(SaveArea, rax) == 0x1f8);
    assert!(offset_of!(SaveArea, cr2) == 0x240);
    assert!(offset_of!(SaveArea, g_pat) == 0x268);
    assert!(offset_of!(SaveArea, last_exception_to) == 0x290);
    assert!(size_of::<Vmcb>() == PAGE_SIZE as usize);
};

/// Bits of the VMCB's `int_ctl` (AMD APM Vol. 2, 15.21 and appendix B).
pub mod int_ctl {
    /// V_TPR: the virtual TPR, bits 3:0.
    pub const V_TPR_MASK: u32 = 0xf;
    /// V_IRQ: a virtual interrupt is pending.
    pub const V_IRQ: u32 = 1 << 8;
    /// V_GIF: the virtual GIF (with [`V_GIF_ENABLED`]).
    pub const V_GIF: u32 = 1 << 9;
    /// V_NMI_PENDING (vNMI).
    pub const V_NMI_PENDING: u32 = 1 << 11;
    /// V_NMI_BLOCKING (vNMI).
    pub const V_NMI_BLOCKING: u32 = 1 << 12;
    /// V_INTR_PRIO: the virtual interrupt's priority, bits 19:16.
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    /// V_IGN_TPR: the virtual interrupt ignores V_TPR.
    pub const V_IGN_TPR: u32 = 1 << 20;
    /// V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts; physical ones are
    /// masked by the host's.
    pub const V_INTR_MASKING: u32 = 1 << 24;
    /// V_GIF_ENABLED: STGI/CLGI in the guest set and clear V_GIF.
    pub const V_GIF_ENABLED: u32 = 1 << 25;
    /// V_NMI_ENABLE (vNMI).
    pub const V_NMI_ENABLE: u32 = 1 << 26;
}

/// What EVENTINJ injects (its TYPE field).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventType {
    /// An external interrupt.
    Interrupt = 0,
    /// An NMI.
    Nmi = 2,
    /// An exception (fault or trap).
    Exception = 3,
    /// A software interrupt (INT n).
    Software = 4,
}

/// EVENTINJ.V: the event is valid (VMRUN injects it, #VMEXIT clears it).
pub const EVENT_VALID: u32 = 1 << 31;
/// EVENTINJ.EV: the event pushes an error code.
pub const EVENT_ERROR_CODE_VALID: u32 = 1 << 11;

/// The EVENTINJ value that injects `vector` as `kind` (without an error code).
pub const fn event_injection(vector: u8, kind: EventType) -> u32 {
    EVENT_VALID | (kind as u32) << 8 | vector as u32
}

/// All VMCB clean bits (intercepts, permission maps, ASID, interrupt control, nested paging,
/// CRs, DRs, descriptor tables, segments, CR2, LBR, AVIC).
pub const VMCB_CLEAN_ALL: u32 = 0xfff;

/// `nested_control`'s NP_ENABLE bit: nested paging.
pub const NESTED_PAGING_ENABLE: u64 = 1;
/// TLB_CONTROL: flush the guest's TLB entries at VMRUN.
pub const TLB_CONTROL_FLUSH_ALL_ASID: u8 = 1;

/// An intercept of the VMCB's intercept vectors (kvm-unit-tests' `INTERCEPT_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Intercept {
    /// MOV from CRn.
    CrRead(u8),
    /// MOV to CRn.
    CrWrite(u8),
    /// MOV from DRn.
    DrRead(u8),
    /// MOV to DRn.
    DrWrite(u8),
    /// Exception vector n.
    Exception(u8),
    Intr,
    Nmi,
    Smi,
    Init,
    Vintr,
    /// CR0 writes that change bits other than TS and MP (and LMSW).
    SelectiveCr0,
    Rdtsc,
    Rdpmc,
    Pushf,
    Popf,
    Cpuid,
    Rsm,
    Iret,
    SoftwareInterrupt,
    Invd,
    Pause,
    Hlt,
    Invlpg,
    Invlpga,
    /// I/O instructions, through the I/O permission map.
    IoioProt,
    /// RDMSR/WRMSR, through the MSR permission map.
    MsrProt,
    TaskSwitch,
    FerrFreeze,
    Shutdown,
    Vmrun,
    Vmmcall,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
    Rdtscp,
    Icebp,
    Wbinvd,
    Monitor,
    Mwait,
    MwaitConditional,
    Xsetbv,
    Rdpru,
    Invlpgb,
    InvlpgbIllegal,
    Invpcid,
    Mcommit,
    Tlbsync,
}

impl Intercept {
    /// The bit number across the intercept vectors (word * 32 + bit).
    pub const fn bit(self) -> u32 {
        match self {
            Intercept::CrRead(n) => n as u32,
            Intercept::CrWrite(n) => 16 + n as u32,
            Intercept::DrRead(n) => 32 + n as u32,
            Intercept::DrWrite(n) => 48 + n as u32,
            Intercept::Exception(n) => 64 + n as u32,
            Intercept::Intr => 96,
            Intercept::Nmi => 97,
            Intercept::Smi => 98,
            Intercept::Init => 99,
            Intercept::Vintr => 100,
            Intercept::SelectiveCr0 => 101,
            Intercept::Rdtsc => 110,
            Intercept::Rdpmc => 111,
            Intercept::Pushf => 112,
            Intercept::Popf => 113,
            Intercept::Cpuid => 114,
            Intercept::Rsm => 115,
            Intercept::Iret => 116,
            Intercept::SoftwareInterrupt => 117,
            Intercept::Invd => 118,
            Intercept::Pause => 119,
            Intercept::Hlt => 120,
            Intercept::Invlpg => 121,
            Intercept::Invlpga => 122,
            Intercept::IoioProt => 123,
            Intercept::MsrProt => 124,
            Intercept::TaskSwitch => 125,
            Intercept::FerrFreeze => 126,
            Intercept::Shutdown => 127,
            Intercept::Vmrun => 128,
            Intercept::Vmmcall => 129,
            Intercept::Vmload => 130,
            Intercept::Vmsave => 131,
            Intercept::Stgi => 132,
            Intercept::Clgi => 133,
            Intercept::Skinit => 134,
            Intercept::Rdtscp => 135,
            Intercept::Icebp => 136,
            Intercept::Wbinvd => 137,
            Intercept::Monitor => 138,
            Intercept::Mwait => 139,
            Intercept::MwaitConditional => 140,
            Intercept::Xsetbv => 141,
            Intercept::Rdpru => 142,
            Intercept::Invlpgb => 160,
            Intercept::InvlpgbIllegal => 161,
            Intercept::Invpcid => 162,
            Intercept::Mcommit => 163,
            Intercept::Tlbsync => 164,
        }
    }
}

impl ControlArea {
    /// Sets `intercept`.
    pub fn set_intercept(&mut self, intercept: Intercept) {
        let bit = intercept.bit();
        self.intercepts[(bit / 32) as usize] |= 1 << (bit % 32);
    }

    /// Clears `intercept`.
    pub fn clear_intercept(&mut self, intercept: Intercept) {
        let bit = intercept.bit();
        self.intercepts[(bit / 32) as usize] &= !(1 << (bit % 32));
    }

    /// Whether `intercept` is set.
    pub fn has_intercept(&self, intercept: Intercept) -> bool {
        let bit = intercept.bit();
        self.intercepts[(bit / 32) as usize] & (1 << (bit % 32)) != 0
    }

    /// EXITCODE, by name.
    pub fn exit(&self) -> ExitCode {
        ExitCode::from_raw(self.exit_code)
    }
}

/// A #VMEXIT's EXITCODE (AMD APM Vol. 2, appendix C; kvm-unit-tests' `SVM_EXIT_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum ExitCode {
    /// MOV from CRn: 0x00 + n.
    ReadCr(u8),
    /// MOV to CRn: 0x10 + n.
    WriteCr(u8),
    /// MOV from DRn: 0x20 + n.
    ReadDr(u8),
    /// MOV to DRn: 0x30 + n.
    WriteDr(u8),
    /// Exception vector n: 0x40 + n.
    Exception(u8),
    Intr,
    Nmi,
    Smi,
    Init,
    Vintr,
    /// A CR0 write caught by the selective CR0 intercept (0x65).
    Cr0SelectiveWrite,
    IdtrRead,
    GdtrRead,
    LdtrRead,
    TrRead,
    IdtrWrite,
    GdtrWrite,
    LdtrWrite,
    TrWrite,
    Rdtsc,
    Rdpmc,
    Pushf,
    Popf,
    Cpuid,
    Rsm,
    Iret,
    SoftwareInterrupt,
    Invd,
    Pause,
    Hlt,
    Invlpg,
    Invlpga,
    Ioio,
    Msr,
    TaskSwitch,
    FerrFreeze,
    Shutdown,
    Vmrun,
    Vmmcall,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
    Rdtscp,
    Icebp,
    Wbinvd,
    Monitor,
    Mwait,
    MwaitConditional,
    Xsetbv,
    Rdpru,
    Invpcid,
    /// Nested page fault (0x400).
    NestedPageFault,
    /// VMEXIT_INVALID (-1): VMRUN refused the VMCB's state.
    Invalid,
    /// Any other code.
    Other(u64),
}

impl ExitCode {
    /// The code EXITCODE holds for this exit.
    pub const fn raw(self) -> u64 {
        match self {
            ExitCode::ReadCr(n) => n as u64,
            ExitCode::WriteCr(n) => 0x10 + n as u64,
            ExitCode::ReadDr(n) => 0x20 + n as u64,
            ExitCode::WriteDr(n) => 0x30 + n as u64,
            ExitCode::Exception(n) => 0x40 + n as u64,
            ExitCode::Intr => 0x60,
            ExitCode::Nmi => 0x61,
            ExitCode::Smi => 0x62,
            ExitCode::Init => 0x63,
            ExitCode::Vintr => 0x64,
            ExitCode::Cr0SelectiveWrite => 0x65,
            ExitCode::IdtrRead => 0x66,
            ExitCode::GdtrRead => 0x67,
            ExitCode::LdtrRead => 0x68,
            ExitCode::TrRead => 0x69,
            ExitCode::IdtrWrite => 0x6a,
            ExitCode::GdtrWrite => 0x6b,
            ExitCode::LdtrWrite => 0x6c,
            ExitCode::TrWrite => 0x6d,
            ExitCode::Rdtsc => 0x6e,
            ExitCode::Rdpmc => 0x6f,
            ExitCode::Pushf => 0x70,
            ExitCode::Popf => 0x71,
            ExitCode::Cpuid => 0x72,
            ExitCode::Rsm => 0x73,
            ExitCode::Iret => 0x74,
            ExitCode::SoftwareInterrupt => 0x75,
            ExitCode::Invd => 0x76,
            ExitCode::Pause => 0x77,
            ExitCode::Hlt => 0x78,
            ExitCode::Invlpg => 0x79,
            ExitCode::Invlpga => 0x7a,
            ExitCode::Ioio => 0x7b,
            ExitCode::Msr => 0x7c,
            ExitCode::TaskSwitch => 0x7d,
            ExitCode::FerrFreeze => 0x7e,
            ExitCode::Shutdown => 0x7f,
            ExitCode::Vmrun => 0x80,
            ExitCode::Vmmcall => 0x81,
            ExitCode::Vmload => 0x82,
            ExitCode::Vmsave => 0x83,
            ExitCode::Stgi => 0x84,
            ExitCode::Clgi => 0x85,
            ExitCode::Skinit => 0x86,
            ExitCode::Rdtscp => 0x87,
            ExitCode::Icebp => 0x88,
            ExitCode::Wbinvd => 0x89,
            ExitCode::Monitor => 0x8a,
            ExitCode::Mwait => 0x8b,
            ExitCode::MwaitConditional => 0x8c,
            ExitCode::Xsetbv => 0x8d,
            ExitCode::Rdpru => 0x8e,
            ExitCode::Invpcid => 0xa2,
            ExitCode::NestedPageFault => 0x400,
            ExitCode::Invalid => u64::MAX,
            ExitCode::Other(code) => code,
        }
    }

    /// The exit named by EXITCODE `code`.
    pub fn from_raw(code: u64) -> ExitCode {
        match code {
            0x00..=0x0f => ExitCode::ReadCr(code as u8),
            0x10..=0x1f => ExitCode::WriteCr((code - 0x10) as u8),
            0x20..=0x2f => ExitCode::ReadDr((code - 0x20) as u8),
            0x30..=0x3f => ExitCode::WriteDr((code - 0x30) as u8),
            0x40..=0x5f => ExitCode::Exception((code - 0x40) as u8),
            0x60..=0x8e | 0xa2 | 0x400 | u64::MAX => ALL_NAMED
                .iter()
                .copied()
                .find(|exit| exit.raw() == code)
                .unwrap_or(ExitCode::Other(code)),
            _ => ExitCode::Other(code),
        }
    }
}

/// The exits without a register or vector number, for [`ExitCode::from_raw`].
const ALL_NAMED: [ExitCode; 50] = [
    ExitCode::Intr,
    ExitCode::Nmi,
    ExitCode::Smi,
    ExitCode::Init,
    ExitCode::Vintr,
    ExitCode::Cr0SelectiveWrite,
    ExitCode::IdtrRead,
    ExitCode::GdtrRead,
    ExitCode::LdtrRead,
    ExitCode::TrRead,
    ExitCode::IdtrWrite,
    ExitCode::GdtrWrite,
    ExitCode::LdtrWrite,
    ExitCode::TrWrite,
    ExitCode::Rdtsc,
    ExitCode::Rdpmc,
    ExitCode::Pushf,
    ExitCode::Popf,
    ExitCode::Cpuid,
    ExitCode::Rsm,
    ExitCode::Iret,
    ExitCode::SoftwareInterrupt,
    ExitCode::Invd,
    ExitCode::Pause,
    ExitCode::Hlt,
    ExitCode::Invlpg,
    ExitCode::Invlpga,
    ExitCode::Ioio,
    ExitCode::Msr,
    ExitCode::TaskSwitch,
    ExitCode::FerrFreeze,
    ExitCode::Shutdown,
    ExitCode::Vmrun,
    ExitCode::Vmmcall,
    ExitCode::Vmload,
    ExitCode::Vmsave,
    ExitCode::Stgi,
    ExitCode::Clgi,
    ExitCode::Skinit,
    ExitCode::Rdtscp,
    ExitCode::Icebp,
    ExitCode::Wbinvd,
    ExitCode::Monitor,
    ExitCode::Mwait,
    ExitCode::MwaitConditional,
    ExitCode::Xsetbv,
    ExitCode::Rdpru,
    ExitCode::Invpcid,
    ExitCode::NestedPageFault,
    ExitCode::Invalid,
];

impl fmt::Display for ExitCode {
    /// `VMMCALL (0x81)`, `READ_CR3 (0x3)`, `EXCP #UD (0x46)`, `ERR (-1)`: kvm-unit-tests' names.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCode::ReadCr(n) => write!(formatter, "READ_CR{n}")?,
            ExitCode::WriteCr(n) => write!(formatter, "WRITE_CR{n}")?,
            ExitCode::ReadDr(n) => write!(formatter, "READ_DR{n}")?,
            ExitCode::WriteDr(n) => write!(formatter, "WRITE_DR{n}")?,
            ExitCode::Exception(n) => write!(formatter, "EXCP {}", super::exceptions::Vector(*n).name())?,
            ExitCode::Invalid => return write!(formatter, "ERR (-1)"),
            ExitCode::Other(_) => write!(formatter, "unknown")?,
            named => {
                let name = match named {
                    ExitCode::Intr => "INTR",
                    ExitCode::Nmi => "NMI",
                    ExitCode::Smi => "SMI",
                    ExitCode::Init => "INIT",
                    ExitCode::Vintr => "VINTR",
                    ExitCode::Cr0SelectiveWrite => "CR0_SEL_WRITE",
                    ExitCode::IdtrRead => "IDTR_READ",
                    ExitCode::GdtrRead => "GDTR_READ",
                    ExitCode::LdtrRead => "LDTR_READ",
                    ExitCode::TrRead => "TR_READ",
                    ExitCode::IdtrWrite => "IDTR_WRITE",
                    ExitCode::GdtrWrite => "GDTR_WRITE",
                    ExitCode::LdtrWrite => "LDTR_WRITE",
                    ExitCode::TrWrite => "TR_WRITE",
                    ExitCode::Rdtsc => "RDTSC",
                    ExitCode::Rdpmc => "RDPMC",
                    ExitCode::Pushf => "PUSHF",
                    ExitCode::Popf => "POPF",
                    ExitCode::Cpuid => "CPUID",
                    ExitCode::Rsm => "RSM",
                    ExitCode::Iret => "IRET",
                    ExitCode::SoftwareInterrupt => "SWINT",
                    ExitCode::Invd => "INVD",
                    ExitCode::Pause => "PAUSE",
                    ExitCode::Hlt => "HLT",
                    ExitCode::Invlpg => "INVLPG",
                    ExitCode::Invlpga => "INVLPGA",
                    ExitCode::Ioio => "IOIO",
                    ExitCode::Msr => "MSR",
                    ExitCode::TaskSwitch => "TASK_SWITCH",
                    ExitCode::FerrFreeze => "FERR_FREEZE",
                    ExitCode::Shutdown => "SHUTDOWN",
                    ExitCode::Vmrun => "VMRUN",
                    ExitCode::Vmmcall => "VMMCALL",
                    ExitCode::Vmload => "VMLOAD",
                    ExitCode::Vmsave => "VMSAVE",
                    ExitCode::Stgi => "STGI",
                    ExitCode::Clgi => "CLGI",
                    ExitCode::Skinit => "SKINIT",
                    ExitCode::Rdtscp => "RDTSCP",
                    ExitCode::Icebp => "ICEBP",
                    ExitCode::Wbinvd => "WBINVD",
                    ExitCode::Monitor => "MONITOR",
                    ExitCode::Mwait => "MWAIT",
                    ExitCode::MwaitConditional => "MWAIT_COND",
                    ExitCode::Xsetbv => "XSETBV",
                    ExitCode::Rdpru => "RDPRU",
                    ExitCode::Invpcid => "INVPCID",
                    _ => "NPF",
                };
                formatter.write_str(name)?;
            }
        }
        write!(formatter, " ({:#x})", self.raw())
    }
}

/// The guest's general-purpose registers the VMCB does not hold (RAX and RSP are in its save
/// area), saved and restored around every VMRUN.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GuestRegisters {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

// Enters the guest and comes back after its #VMEXIT (System V: RDI = the VMCB's physical
// address, RSI = the guest's `GuestRegisters`, RDX = the physical address of the page the
// host's VMSAVE state goes to, ECX = whether to enter with the host's RFLAGS.IF set, R8D =
// whether to set the host's RFLAGS.TF right after CLGI, as kvm-unit-tests' host_rflags does in
// its prepare_gif_clear), as
// kvm-unit-tests' `test_run` does: CLGI, STI, VMRUN, CLI, STGI, called with interrupts off.
// With GIF clear the STI lets no interrupt in; it gives the host RFLAGS.IF that
// V_INTR_MASKING guests are masked by, so physical interrupts reach the guest (or exit with
// INTR), and stay pending for the host otherwise. The host's callee-saved registers stay on the stack, which
// #VMEXIT gives back (RSP from VM_HSAVE_PA's page); the guest's registers are loaded last
// and stored first.
global_asm!(
    ".pushsection .text.vmunit_svm, \"ax\", @progbits",
    ".global vmunit_svm_vmrun",
    "vmunit_svm_vmrun:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rsi",
    "push rdx",
    "push rdi",
    "clgi",
    "test ecx, ecx",
    "jz 2f",
    "sti",
    "2:",
    "test r8d, r8d",
    "jz 3f",
    "pushfq",
    "or qword ptr [rsp], 0x100",
    "popfq",
    "3:",
    "mov rax, rdx",
    "vmsave rax",
    "mov rax, rdi",
    "vmload rax",
    "mov rbx, [rsi + 0x00]",
    "mov rcx, [rsi + 0x08]",
    "mov rdx, [rsi + 0x10]",
    "mov rdi, [rsi + 0x20]",
    "mov rbp, [rsi + 0x28]",
    "mov r8, [rsi + 0x30]",
    "mov r9, [rsi + 0x38]",
    "mov r10, [rsi + 0x40]",
    "mov r11, [rsi + 0x48]",
    "mov r12, [rsi + 0x50]",
    "mov r13, [rsi + 0x58]",
    "mov r14, [rsi + 0x60]",
    "mov r15, [rsi + 0x68]",
    "mov rsi, [rsi + 0x18]",
    ".global vmunit_svm_vmrun_instruction",
    "vmunit_svm_vmrun_instruction:",
    "vmrun rax",
    "cli",
    "push rsi",
    "mov rsi, [rsp + 0x18]",
    "mov [rsi + 0x00], rbx",
    "mov [rsi + 0x08], rcx",
    "mov [rsi + 0x10], rdx",
    "mov [rsi + 0x20], rdi",
    "mov [rsi + 0x28], rbp",
    "mov [rsi + 0x30], r8",
    "mov [rsi + 0x38], r9",
    "mov [rsi + 0x40], r10",
    "mov [rsi + 0x48], r11",
    "mov [rsi + 0x50], r12",
    "mov [rsi + 0x58], r13",
    "mov [rsi + 0x60], r14",
    "mov [rsi + 0x68], r15",
    "pop rax",
    "mov [rsi + 0x18], rax",
    "pop rax",
    "vmsave rax",
    "pop rax",
    "vmload rax",
    "stgi",
    "pop rsi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
);

unsafe extern "sysv64" {
    fn vmunit_svm_vmrun(
        vmcb: u64,
        registers: *mut GuestRegisters,
        host_save: u64,
        host_interrupts: u32,
        host_trap_flag: u32,
    );
    static vmunit_svm_vmrun_instruction: u8;
}

/// The address of the harness's VMRUN instruction (3 bytes: the host resumes at this address
/// + 3 after each #VMEXIT), for a host #DB handler to recognise a trap that reached it.
pub fn vmrun_address() -> u64 {
    // Only the label's address is taken: it marks code, never read as data.
    core::ptr::addr_of!(vmunit_svm_vmrun_instruction) as u64
}

const _: () = {
    assert!(offset_of!(GuestRegisters, rsi) == 0x18);
    assert!(offset_of!(GuestRegisters, rdi) == 0x20);
    assert!(offset_of!(GuestRegisters, r15) == 0x68);
};

/// The guest's entry: runs the closure at `guest`, then ends with VMMCALL (again, should the
/// host resume it).
extern "sysv64" fn guest_entry<G: Fn()>(guest: *const G) -> ! {
    // SAFETY: `Svm::run` passes a pointer to the closure it borrows for the whole run.
    let guest = unsafe { &*guest };
    guest();
    loop {
        vmmcall();
    }
}

/// The address [`Svm::run`] enters the guest at for `guest` (its RIP at the first VMRUN).
pub fn entry_point<G: Fn()>(_guest: &G) -> u64 {
    guest_entry::<G> as *const () as u64
}

/// The I/O permission map: one bit per port (set: intercepted), 12 KiB, as the CPU reads it
/// (an access of N bytes at port P checks the bits of ports P..P+N, so the map has a byte
/// after port 0xffff's).
pub struct IoPermissionMap {
    bytes: [AtomicU8; 3 * PAGE_SIZE as usize],
}

impl IoPermissionMap {
    /// Intercepts (or lets through) accesses that touch `port`.
    pub fn set_port(&self, port: u16, intercept: bool) {
        self.set_bit(u32::from(port), intercept);
    }

    /// Intercepts (or lets through) bit `index` of the map: port `index` for the ports, 65536
    /// up for the bits past the last port, which an access at the top of the port space
    /// checks.
    pub fn set_bit(&self, index: u32, intercept: bool) {
        let byte = &self.bytes[(index / 8) as usize];
        let bit = 1 << (index % 8);
        if intercept {
            byte.fetch_or(bit, Ordering::SeqCst);
        } else {
            byte.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// Whether accesses to `port` are intercepted.
    pub fn port(&self, port: u16) -> bool {
        self.bytes[usize::from(port / 8)].load(Ordering::SeqCst) & (1 << (port % 8)) != 0
    }

    /// Writes byte `index` of the map (ports `index * 8` to `index * 8 + 7`; index 8192 is
    /// the byte past the last port).
    pub fn set_byte(&self, index: usize, value: u8) {
        self.bytes[index].store(value, Ordering::SeqCst);
    }

    /// Fills the whole map with `value`.
    pub fn fill(&self, value: u8) {
        for byte in &self.bytes {
            byte.store(value, Ordering::SeqCst);
        }
    }
}

/// The MSR permission map: two bits per MSR (read, write; set: intercepted) for MSRs
/// 0-0x1fff, 0xc0000000-0xc0001fff and 0xc0010000-0xc0011fff, 8 KiB.
pub struct MsrPermissionMap {
    bytes: [AtomicU8; 2 * PAGE_SIZE as usize],
}

impl MsrPermissionMap {
    /// The bit number of `msr`'s read bit (its write bit follows), or `None` for an MSR
    /// outside the map's three ranges (always intercepted).
    pub fn read_bit(msr: u32) -> Option<usize> {
        let range = match msr & !0x1fff {
            0 => 0,
            0xc000_0000 => 1,
            0xc001_0000 => 2,
            _ => return None,
        };
        Some(range * 2048 * 8 + (msr & 0x1fff) as usize * 2)
    }

    /// Sets or clears bit `bit` of the map.
    pub fn set_bit(&self, bit: usize, value: bool) {
        let byte = &self.bytes[bit / 8];
        if value {
            byte.fetch_or(1 << (bit % 8), Ordering::SeqCst);
        } else {
            byte.fetch_and(!(1 << (bit % 8)), Ordering::SeqCst);
        }
    }

    /// Fills the whole map with `value`.
    pub fn fill(&self, value: u8) {
        for byte in &self.bytes {
            byte.store(value, Ordering::SeqCst);
        }
    }
}

/// One #VMEXIT, as [`Svm::run`] hands it to its caller: the VMCB and the guest's registers.
pub struct Exit<'a> {
    vmcb: &'a mut Vmcb,
    registers: &'a mut GuestRegisters,
}

impl Exit<'_> {
    /// The guest's registers at the exit (other than RAX and RSP, in the VMCB).
    pub fn registers(&self) -> &GuestRegisters {
        self.registers
    }

    /// The guest's registers, to change before it resumes.
    ///
    /// # Safety
    /// The guest runs compiled Rust code: registers it holds values in (callee-saved ones, RBP)
    /// must keep them, or that code may access memory it does not own.
    pub unsafe fn registers_mut(&mut self) -> &mut GuestRegisters {
        self.registers
    }

    /// EXITCODE.
    pub fn code(&self) -> ExitCode {
        self.vmcb.control.exit()
    }

    /// The VMCB after the exit.
    pub fn vmcb(&self) -> &Vmcb {
        self.vmcb
    }

    /// Sets `intercept` for the next VMRUN.
    pub fn set_intercept(&mut self, intercept: Intercept) {
        self.vmcb.control.set_intercept(intercept);
    }

    /// Clears `intercept` for the next VMRUN.
    pub fn clear_intercept(&mut self, intercept: Intercept) {
        self.vmcb.control.clear_intercept(intercept);
    }

    /// Sets `int_ctl` (V_IRQ, V_GIF, V_INTR_MASKING ...: [`int_ctl`]) for the next VMRUN.
    pub fn set_int_ctl(&mut self, value: u32) {
        self.vmcb.control.int_ctl = value;
    }

    /// The VMCB, to write anything before the guest resumes.
    ///
    /// # Safety
    /// As for [`Svm::vmcb_mut`]: the guest must be able to go on running the closure it runs.
    pub unsafe fn vmcb_mut(&mut self) -> &mut Vmcb {
        self.vmcb
    }

    /// Sets EVENTINJ (see [`event_injection`]) for the next VMRUN.
    pub fn set_event_inject(&mut self, value: u32) {
        self.vmcb.control.event_inject = value;
    }

    /// Sets the VMCB clean bits for the next VMRUN (which state the CPU may take from its
    /// cache instead of the VMCB; [`VMCB_CLEAN_ALL`] for all).
    pub fn set_clean(&mut self, bits: u32) {
        self.vmcb.control.clean = bits;
    }

    /// Sets or clears the guest's RFLAGS.IF for the next VMRUN.
    pub fn set_guest_interrupt_flag(&mut self, set: bool) {
        const INTERRUPT_FLAG: u64 = 1 << 9;
        let rflags = &mut self.vmcb.save.rflags;
        *rflags = if set {
            *rflags | INTERRUPT_FLAG
        } else {
            *rflags & !INTERRUPT_FLAG
        };
    }

    /// Sets or clears the guest's interrupt shadow (`int_state` bit 0: no interrupt before its
    /// next instruction completes) for the next VMRUN.
    pub fn set_interrupt_shadow(&mut self, set: bool) {
        self.vmcb.control.int_state = u32::from(set);
    }

    /// Sets V_INTR_VECTOR for the next VMRUN.
    pub fn set_int_vector(&mut self, vector: u8) {
        self.vmcb.control.int_vector = u32::from(vector);
    }

    /// Sets or clears the guest's RFLAGS.TF for the next VMRUN (a single-step #DB after the
    /// next guest instruction).
    pub fn set_guest_trap_flag(&mut self, set: bool) {
        const TRAP_FLAG: u64 = 1 << 8;
        let rflags = &mut self.vmcb.save.rflags;
        *rflags = if set {
            *rflags | TRAP_FLAG
        } else {
            *rflags & !TRAP_FLAG
        };
    }

    /// Moves the guest's RIP past the intercepted instruction at it, after checking its bytes:
    /// VMMCALL (0F 01 D9), MOV from/to DRn (0F 21/23 /r), RDMSR/WRMSR (0F 32/30), RDTSC
    /// (0F 31), CPUID (0F A2), RSM (0F AA), HLT (F4). Returns the length skipped.
    ///
    /// # Panics
    /// When the bytes at the guest's RIP are none of those: resuming anywhere else could run
    /// the guest into the middle of an instruction.
    pub fn skip_instruction(&mut self) -> u64 {
        let rip = self.vmcb.save.rip;
        let mut bytes = [0u8; 3];
        for (index, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: the guest runs the runtime's code through the runtime's page tables (and
            // an identity nested map), so its RIP is an address of the image, mapped and
            // readable; reading code bytes has no effect.
            *byte = unsafe { core::ptr::read_volatile((rip as usize + index) as *const u8) };
        }
        let length = match bytes {
            [0x0f, 0x01, 0xd9] => 3,
            [0x0f, 0x21 | 0x23, modrm] if modrm >= 0xc0 => 3,
            [0x0f, 0x30 | 0x31 | 0x32 | 0xa2 | 0xaa, _] => 2,
            [0xf4, _, _] => 1,
            _ => panic!("no known intercepted instruction at guest RIP {rip:#x}: {bytes:02x?}"),
        };
        self.vmcb.save.rip += length;
        length
    }
}

/// The SVM harness: one VMCB, its host-save and VMSAVE pages, the permission maps and the
/// guest's stack. Made once per test: its pages stay allocated.
pub struct Svm {
    vmcb: &'static mut Vmcb,
    vmcb_address: u64,
    host_save_address: u64,
    io: &'static IoPermissionMap,
    io_address: u64,
    msr: &'static MsrPermissionMap,
    msr_address: u64,
    stack_top: u64,
    registers: GuestRegisters,
    host_interrupts: bool,
    /// Whether VMRUN's path sets the host's RFLAGS.TF right after CLGI.
    host_trap_flag: bool,
    /// The page of [`Svm::give_guest_code32_segment`]'s GDT, once made.
    guest_gdt: Option<u64>,
    nested_cr3: Option<u64>,
}

/// Why SVM cannot run.
#[derive(Debug)]
pub enum Unavailable {
    /// `CPUID.80000001H:ECX[2]` is clear.
    NotSupported,
    /// VM_CR.SVMDIS is set: EFER.SVME cannot be set.
    Disabled,
    /// Setting EFER.SVME or VM_HSAVE_PA faulted.
    Fault(Exception),
}

/// The size of a guest's stack.
const GUEST_STACK_BYTES: usize = 16 * PAGE_SIZE as usize;
/// How many harnesses get a guest stack inside the image.
const IMAGE_GUEST_STACKS: usize = 4;

/// Guest stacks inside the image, so that a guest can run code in user mode (which the runtime
/// opens to the image's pages only, `run_in_user_mode`) with what it keeps on its stack. Only
/// guests use them, through their RSP.
#[repr(C, align(4096))]
struct GuestStacks(core::cell::UnsafeCell<[[u8; GUEST_STACK_BYTES]; IMAGE_GUEST_STACKS]>);
// SAFETY: no Rust reference into the stacks is ever made; only their addresses are taken, one
// stack per harness.
unsafe impl Sync for GuestStacks {}
static GUEST_STACKS: GuestStacks = GuestStacks(core::cell::UnsafeCell::new(
    [[0; GUEST_STACK_BYTES]; IMAGE_GUEST_STACKS],
));
/// The next unused stack of [`GUEST_STACKS`].
static NEXT_GUEST_STACK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The top of a fresh guest stack: one of the image's while they last, then leaked frames.
fn guest_stack_top() -> u64 {
    let index = NEXT_GUEST_STACK.fetch_add(1, Ordering::Relaxed);
    if index < IMAGE_GUEST_STACKS {
        GUEST_STACKS.0.get() as u64 + ((index + 1) * GUEST_STACK_BYTES) as u64
    } else {
        leak_frames(GUEST_STACK_BYTES / PAGE_SIZE as usize) + GUEST_STACK_BYTES as u64
    }
}

/// `count` zeroed, physically contiguous, identity-mapped frames that are never freed.
fn leak_frames(count: usize) -> u64 {
    let address = crate::memory::allocate_frames(count).expect("out of memory for SVM pages");
    // SAFETY: the frames are fresh from the frame allocator, identity mapped, and nothing
    // else refers to them.
    unsafe { core::ptr::write_bytes(address as usize as *mut u8, 0, count * PAGE_SIZE as usize) };
    address
}

/// VMMCALL: in a guest whose VMCB intercepts it, a #VMEXIT with [`ExitCode::Vmmcall`]; elsewhere
/// #UD (never caught here).
pub fn vmmcall() {
    // SAFETY: VMMCALL exits to the host or raises #UD; the host may change memory the guest
    // shares, hence no `nomem`.
    unsafe { asm!("vmmcall", options(nostack)) };
}

/// RSM: outside system-management mode #UD (never caught here); in a guest whose VMCB
/// intercepts it, a #VMEXIT with [`ExitCode::Rsm`].
pub fn rsm() {
    // SAFETY: outside SMM RSM raises #UD; intercepted it exits to the host.
    unsafe { asm!("rsm", options(nostack)) };
}

// RDTSC at a known place: `vmunit_svm_rdtsc_next` is the address of the instruction after it,
// what NRIPS stores in `next_rip` when RDTSC is intercepted.
global_asm!(
    ".pushsection .text.vmunit_svm, \"ax\", @progbits",
    ".global vmunit_svm_rdtsc",
    "vmunit_svm_rdtsc:",
    "rdtsc",
    ".global vmunit_svm_rdtsc_next",
    "vmunit_svm_rdtsc_next:",
    "shl rdx, 32",
    "or rax, rdx",
    "ret",
    ".popsection",
);

unsafe extern "sysv64" {
    fn vmunit_svm_rdtsc() -> u64;
}

/// RDTSC (its 64-bit result), by an instruction whose successor sits at
/// [`rdtsc_next_rip`]: for checking `next_rip` when RDTSC is intercepted.
pub fn rdtsc_probe() -> u64 {
    // SAFETY: the function reads the TSC into RDX:RAX, combines them and returns (System V).
    unsafe { vmunit_svm_rdtsc() }
}

/// The address of the instruction after [`rdtsc_probe`]'s RDTSC.
pub fn rdtsc_next_rip() -> u64 {
    let address: u64;
    // SAFETY: LEA computes an address.
    unsafe {
        asm!("lea {}, [rip + vmunit_svm_rdtsc_next]", out(reg) address, options(nomem, nostack, preserves_flags))
    };
    address
}

/// STGI: sets GIF (in a guest with V_GIF_ENABLED, V_GIF; intercepted, an exit).
pub fn stgi() {
    // SAFETY: STGI only unmasks interrupts (or exits to the host).
    unsafe { asm!("stgi", options(nomem, nostack)) };
}

/// CLGI: clears GIF, which holds interrupts and NMIs pending until STGI (in a guest with
/// V_GIF_ENABLED, V_GIF; intercepted, an exit).
pub fn clgi() {
    // SAFETY: CLGI only masks interrupts (or exits to the host).
    unsafe { asm!("clgi", options(nomem, nostack)) };
}

/// VMLOAD from the VMCB at physical `address`, for a guest to execute.
///
/// # Safety
/// Where it is not intercepted, VMLOAD loads FS, GS, TR, LDTR, KernelGsBase and the SYSCALL
/// and SYSENTER MSRs from the page: it must hold the running code's own (a VMCB that
/// [`Svm::reset`] set up does).
pub unsafe fn vmload_instruction(address: u64) {
    // SAFETY: the caller vouches for the state loaded.
    unsafe { asm!("vmload rax", in("rax") address, options(nostack)) };
}

/// VMSAVE to the VMCB at physical `address`, for a guest to execute.
///
/// # Safety
/// Where it is not intercepted, VMSAVE writes to the page at `address`: it must be a VMCB
/// nothing else relies on the saved fields of.
pub unsafe fn vmsave_instruction(address: u64) {
    // SAFETY: the caller vouches for the page written.
    unsafe { asm!("vmsave rax", in("rax") address, options(nostack)) };
}

// A guest body for single-stepping: VMMCALL, then PUSH RBP (one instruction, after which a TF
// loaded by VMRUN traps), MOV RBP, RSP, three VMMCALLs, POP RBP, RET.
global_asm!(
    ".pushsection .text.vmunit_svm, \"ax\", @progbits",
    ".global vmunit_svm_single_step",
    "vmunit_svm_single_step:",
    "vmmcall",
    "push rbp",
    ".global vmunit_svm_single_step_second",
    "vmunit_svm_single_step_second:",
    "mov rbp, rsp",
    "vmmcall",
    "vmmcall",
    ".global vmunit_svm_single_step_end",
    "vmunit_svm_single_step_end:",
    "vmmcall",
    "pop rbp",
    "ret",
    ".popsection",
);

unsafe extern "sysv64" {
    fn vmunit_svm_single_step();
}

/// For a guest: VMMCALL, PUSH RBP, MOV RBP, RSP, VMMCALL, VMMCALL, VMMCALL, POP RBP: what
/// kvm-unit-tests' `guest_rflags_test_guest` runs, after an exit where the host can set TF.
/// [`single_step_probe_addresses`] says where its second instruction and last VMMCALL are.
pub fn single_step_probe() {
    // SAFETY: the function keeps the stack balanced and clobbers nothing (RBP is restored);
    // its VMMCALLs exit to the host (or raise #UD outside a guest).
    unsafe { vmunit_svm_single_step() }
}

/// The addresses of [`single_step_probe`]'s MOV RBP, RSP (after its PUSH) and last VMMCALL.
pub fn single_step_probe_addresses() -> (u64, u64) {
    let (second, end): (u64, u64);
    // SAFETY: LEA computes addresses.
    unsafe {
        asm!("lea {0}, [rip + vmunit_svm_single_step_second]", "lea {1}, [rip + vmunit_svm_single_step_end]",
             out(reg) second, out(reg) end, options(nomem, nostack, preserves_flags))
    };
    (second, end)
}

// A guest body for interrupt-shadow checks: VMMCALL, NOP, NOP, VMMCALL, RET.
global_asm!(
    ".pushsection .text.vmunit_svm, \"ax\", @progbits",
    ".global vmunit_svm_shadow_probe",
    "vmunit_svm_shadow_probe:",
    "vmmcall",
    ".global vmunit_svm_shadow_probe_nops",
    "vmunit_svm_shadow_probe_nops:",
    "nop",
    "nop",
    "vmmcall",
    "ret",
    ".popsection",
);

unsafe extern "sysv64" {
    fn vmunit_svm_shadow_probe();
}

/// For a guest: VMMCALL, NOP, NOP, VMMCALL (kvm-unit-tests' `virq_inject_within_shadow_test`
/// after an exit where the host sets up the shadow); [`shadow_probe_nops`] is the first NOP's
/// address.
pub fn shadow_probe() {
    // SAFETY: the function uses no stack and clobbers nothing; its VMMCALLs exit to the host
    // (or raise #UD outside a guest).
    unsafe { vmunit_svm_shadow_probe() }
}

/// The address of [`shadow_probe`]'s first NOP.
pub fn shadow_probe_nops() -> u64 {
    let address: u64;
    // SAFETY: LEA computes an address.
    unsafe {
        asm!("lea {}, [rip + vmunit_svm_shadow_probe_nops]", out(reg) address, options(nomem, nostack, preserves_flags))
    };
    address
}

/// SKINIT with EAX = 0, for a guest where it is intercepted or not advertised (#UD).
///
/// # Safety
/// Only where SKINIT is intercepted or raises #UD: executed, it reinitializes the CPU into a
/// secure loader.
pub unsafe fn skinit_instruction() {
    // SAFETY: the caller runs this where SKINIT exits or faults.
    unsafe { asm!("skinit", in("eax") 0u32, options(nostack)) };
}

// kvm-unit-tests' reg_corruption guest: forever, store 0xAA to the byte at RSI, then INSB
// from port 0x4d0 into it (RDI = RSI), so an INSB that already ran shows in the byte.
global_asm!(
    ".pushsection .text.vmunit_svm, \"ax\", @progbits",
    ".global vmunit_svm_insb_loop",
    "vmunit_svm_insb_loop:",
    "2:",
    "mov dx, 0x4d0",
    "mov rdi, rsi",
    "mov byte ptr [rsi], 0xaa",
    ".global vmunit_svm_insb",
    "vmunit_svm_insb:",
    "insb",
    "jmp 2b",
    ".popsection",
);

unsafe extern "sysv64" {
    fn vmunit_svm_insb_loop(unused: u64, target: *const AtomicU8) -> !;
}

/// For a guest that exits by interrupts only: forever, stores 0xAA to `target`, then INSB
/// from port 0x4d0 into it (the instruction at [`insb_loop_address`]).
pub fn insb_loop(target: &AtomicU8) -> ! {
    // SAFETY: the loop writes only the byte `target` borrows, which is an atomic (the host
    // reads it between exits); it never returns and uses no stack.
    unsafe { vmunit_svm_insb_loop(0, target) }
}

/// The address of [`insb_loop`]'s INSB.
pub fn insb_loop_address() -> u64 {
    let address: u64;
    // SAFETY: LEA computes an address.
    unsafe {
        asm!("lea {}, [rip + vmunit_svm_insb]", out(reg) address, options(nomem, nostack, preserves_flags))
    };
    address
}

/// The bases VMLOAD loads and VMSAVE stores (with the segments' other fields and MSRs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LoadedBase {
    /// FS's base.
    Fs,
    /// GS's base.
    Gs,
    /// LDTR's base.
    Ldtr,
    /// TR's base.
    Tr,
    /// KernelGsBase.
    KernelGs,
}

impl LoadedBase {
    fn field(self, save: &mut SaveArea) -> &mut u64 {
        match self {
            LoadedBase::Fs => &mut save.fs.base,
            LoadedBase::Gs => &mut save.gs.base,
            LoadedBase::Ldtr => &mut save.ldtr.base,
            LoadedBase::Tr => &mut save.tr.base,
            LoadedBase::KernelGs => &mut save.kernel_gs_base,
        }
    }
}

/// A 32-bit ring-0 code segment (base 0, limit 4 GiB, execute/read, D/B, G), for
/// [`Svm::give_guest_code32_segment`].
const CODE32_DESCRIPTOR: u64 = 0x00cf_9b00_0000_ffff;

// INTO in 32-bit code (kvm-unit-tests' generate_of): entered with a far return from 64-bit
// code, it sets OF (0x7fffffff + 1) and runs INTO, whose #OF ends it; UD2 where INTO raises
// nothing. Either exception is caught by `try_overflow_in_compatibility_mode`.
global_asm!(
    ".pushsection .text.vmunit_svm_into_32bit, \"ax\", @progbits",
    ".code32",
    ".global vmunit_svm_into_32bit",
    "vmunit_svm_into_32bit:",
    "mov eax, 0x7fffffff",
    "add eax, 1",
    "into",
    "ud2",
    ".code64",
    ".popsection",
);

unsafe extern "C" {
    static vmunit_svm_into_32bit: u8;
}

/// For a guest given a 32-bit code segment ([`Svm::give_guest_code32_segment`]): jumps to
/// 32-bit code in that segment (at CPL 0) that runs INTO with OF set, and returns the
/// exception that ends it (#OF, or #UD where INTO raised nothing).
///
/// # Panics
/// When the stack or the code lie above 4 GiB (32-bit code reaches neither).
pub fn try_overflow_in_compatibility_mode(code32: u16) -> Exception {
    let code = core::ptr::addr_of!(vmunit_svm_into_32bit) as u64;
    let stack: u64;
    // SAFETY: reading RSP has no effect.
    unsafe { asm!("mov {}, rsp", out(reg) stack, options(nomem, nostack, preserves_flags)) };
    assert!(
        code < 1 << 32 && stack < 1 << 32,
        "32-bit code needs code and stack below 4 GiB"
    );
    let outcome = super::catch_exception(|| {
        // SAFETY: the far return enters the 32-bit code, which only ends in an exception
        // (INTO's #OF or UD2's #UD), which the enclosing catch turns into a return here, in
        // 64-bit mode. The segment is a flat ring-0 code segment, and the stack stays below
        // 4 GiB.
        unsafe {
            asm!(
                "push {selector}",
                "push {code}",
                "retfq",
                selector = in(reg) u64::from(code32),
                code = in(reg) code,
                out("rax") _,
            )
        };
    });
    match outcome {
        Err(exception) => exception,
        Ok(()) => unreachable!("the 32-bit INTO code ends only in an exception"),
    }
}

/// The SMBASE a CPU has after reset (its SMI handler runs at SMBASE + 0x8000, its state is
/// saved at SMBASE + 0xfe00 and up).
pub const RESET_SMBASE: u64 = 0x3_0000;

/// Puts an SMI handler that only resumes (RSM) at the reset SMBASE's entry point, physical
/// 0x38000: an SMI an SVM test leaves pending (intr_intercept_mix_smi's, which stays pending
/// after its intercept) is then taken and returned from. Physical 0x30000-0x3ffff is below
/// the runtime's allocators (1 MiB) and above the real-mode area (64 KiB): SMM owns it.
pub fn install_resuming_smi_handler() {
    /// RSM.
    const RSM: [u8; 2] = [0x0f, 0xaa];
    let entry = RESET_SMBASE + 0x8000;
    // SAFETY: physical 0x38000 is identity mapped RAM that nothing in the runtime uses (see
    // above); two bytes of code are written there.
    unsafe { core::ptr::copy_nonoverlapping(RSM.as_ptr(), entry as usize as *mut u8, RSM.len()) };
}

/// The paging of [`Svm::run_legacy_hypercall`]'s 32-bit guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LegacyPaging {
    /// Two-level 32-bit paging with 4 MiB pages (CR4.PSE).
    TwoLevel,
    /// PAE paging: a PDPT of four entries at CR3 (CR4.PAE).
    Pae,
}

// The 32-bit guest of `Svm::run_legacy_hypercall`: VMMCALL, again if resumed.
global_asm!(
    ".pushsection .text.vmunit_svm_hypercall_32bit, \"ax\", @progbits",
    ".code32",
    ".global vmunit_svm_hypercall_32bit",
    "vmunit_svm_hypercall_32bit:",
    "vmmcall",
    "jmp vmunit_svm_hypercall_32bit",
    ".code64",
    ".popsection",
);

unsafe extern "C" {
    static vmunit_svm_hypercall_32bit: u8;
}

/// The address of [`Svm::run_legacy_hypercall`]'s 32-bit guest code (its RIP).
pub fn hypercall_32bit_address() -> u64 {
    core::ptr::addr_of!(vmunit_svm_hypercall_32bit) as u64
}

/// VMRUN with RAX = `address`, for a guest to execute where the host intercepts it.
///
/// # Safety
/// Only in a guest whose VMCB intercepts VMRUN: executed by the host (or a guest that does not
/// intercept it), VMRUN enters whatever VMCB `address` holds.
pub unsafe fn vmrun_instruction(address: u64) {
    // SAFETY: the caller runs this where VMRUN is intercepted.
    unsafe { asm!("vmrun rax", in("rax") address, options(nostack)) };
}

/// Bits of a nested page fault's EXITINFO1 (AMD APM Vol. 2, 15.25.6): a #PF error code in
/// bits 31:0, and which translation faulted.
pub mod nested_fault {
    /// P: the entry was present (a protection or reserved-bit fault).
    pub const PRESENT: u64 = 1;
    /// W: a write.
    pub const WRITE: u64 = 1 << 1;
    /// U: a user access (every nested walk is one).
    pub const USER: u64 = 1 << 2;
    /// RSV: a reserved bit was set.
    pub const RESERVED: u64 = 1 << 3;
    /// I/D: an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
    /// The fault hit the final translation of the guest's physical address.
    pub const FINAL_TRANSLATION: u64 = 1 << 32;
    /// The fault hit a translation of one of the guest's page tables (its walk).
    pub const PAGE_TABLE_WALK: u64 = 1 << 33;
}

/// A level of the nested page table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NestedLevel {
    /// The PML4 (512 GiB per entry).
    Pml4,
    /// The page directory pointer table (1 GiB per entry).
    Pdpt,
    /// The page directory (2 MiB per entry: the harness's pages).
    Directory,
    /// A page table (4 KiB per entry), made on demand by splitting a 2 MiB page.
    Table,
}

/// Bits of a nested page table entry (the long-mode page table format).
pub mod nested_entry {
    /// P.
    pub const PRESENT: u64 = 1;
    /// R/W.
    pub const WRITABLE: u64 = 1 << 1;
    /// U/S: nested walks are user accesses, so a supervisor entry faults them all.
    pub const USER: u64 = 1 << 2;
    /// PS: a 2 MiB or 1 GiB page in a directory or PDPT entry.
    pub const LARGE_PAGE: u64 = 1 << 7;
    /// NX (with the host's EFER.NXE; reserved without).
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The bits [`super::Svm::update_nested_permissions`] may change.
    pub const PERMISSIONS: u64 = PRESENT | WRITABLE | USER | NO_EXECUTE;
}

/// The physical address field of a nested page table entry.
const NESTED_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Builds nested page tables that map guest-physical 0 to 4 GiB onto the same host-physical
/// addresses in 2 MiB pages, writable and executable; returns the PML4's physical address.
/// Nested page walks count as user accesses, so every level allows user access.
fn build_nested_page_tables() -> u64 {
    const PRESENT_WRITABLE_USER: u64 = 0b111;
    const LARGE_PAGE: u64 = 1 << 7;
    let pml4 = leak_frames(1);
    let pdpt = leak_frames(1);
    let directories = leak_frames(4);
    let entries = |table: u64| {
        // SAFETY: `table` is a zeroed frame of our own, leaked, identity mapped: 512 entries.
        unsafe { core::slice::from_raw_parts_mut(table as usize as *mut u64, 512) }
    };
    entries(pml4)[0] = pdpt | PRESENT_WRITABLE_USER;
    for gigabyte in 0..4u64 {
        let directory = directories + gigabyte * PAGE_SIZE;
        entries(pdpt)[gigabyte as usize] = directory | PRESENT_WRITABLE_USER;
        for (index, entry) in entries(directory).iter_mut().enumerate() {
            *entry = (gigabyte << 30 | (index as u64) << 21) | PRESENT_WRITABLE_USER | LARGE_PAGE;
        }
    }
    pml4
}

/// Turns SVM on for the running CPU: a host-save page of its own in VM_HSAVE_PA, then
/// EFER.SVME (kvm-unit-tests' `setup_svm`, and `set_additional_vcpu_msr` on the other CPUs).
pub fn enable() -> Result<(), Unavailable> {
    if !Feature::Svm.supported() {
        return Err(Unavailable::NotSupported);
    }
    if try_rdmsr(MSR_VM_CR).map_err(Unavailable::Fault)? & VM_CR_SVM_DISABLE != 0 {
        return Err(Unavailable::Disabled);
    }
    let host_save_area = leak_frames(1);
    try_wrmsr(MSR_VM_HSAVE_PA, host_save_area).map_err(Unavailable::Fault)?;
    let efer = try_rdmsr(IA32_EFER).map_err(Unavailable::Fault)?;
    try_wrmsr(IA32_EFER, efer | EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE.bits()).map_err(Unavailable::Fault)
}

impl Svm {
    /// Turns SVM on (EFER.SVME, VM_HSAVE_PA: [`enable`]) and allocates the harness's pages,
    /// with a VMCB set up as [`Svm::reset`] does.
    pub fn new() -> Result<Svm, Unavailable> {
        enable()?;
        let vmcb_address = leak_frames(1);
        let io_address = leak_frames(3);
        let msr_address = leak_frames(2);
        let mut svm = Svm {
            // SAFETY: a zeroed, page-aligned frame of our own, never freed; all-zero is a valid
            // `Vmcb` (plain integers).
            vmcb: unsafe { &mut *(vmcb_address as usize as *mut Vmcb) },
            vmcb_address,
            host_save_address: leak_frames(1),
            // SAFETY: three zeroed frames of our own, never freed; zero is a valid AtomicU8.
            io: unsafe { &*(io_address as usize as *const IoPermissionMap) },
            io_address,
            // SAFETY: two zeroed frames of our own, never freed.
            msr: unsafe { &*(msr_address as usize as *const MsrPermissionMap) },
            msr_address,
            stack_top: guest_stack_top(),
            registers: GuestRegisters::default(),
            host_interrupts: true,
            host_trap_flag: false,
            guest_gdt: None,
            nested_cr3: SvmFeature::Npt.supported().then(build_nested_page_tables),
        };
        svm.reset();
        Ok(svm)
    }

    /// Sets the VMCB up as a copy of the host (kvm-unit-tests' `vmcb_ident`): VMSAVE of the
    /// host's FS/GS/TR/LDTR and MSRs, flat ES/CS/SS/DS with the host's selectors, the host's
    /// GDTR, IDTR, EFER, CR0, CR2, CR3, CR4, DR6, DR7, PAT and DEBUGCTL, CPL 0, ASID 1, the
    /// permission maps, and intercepts of VMRUN, VMMCALL and SHUTDOWN only. Guest registers are
    /// zeroed. Where CPUID reports NPT, nested paging is on, with tables that map guest-physical
    /// 0-4 GiB onto the same host-physical addresses (and a flush of the ASID's TLB entries).
    pub fn reset(&mut self) {
        self.host_trap_flag = false;
        // SAFETY: the VMCB is our page; all-zero bytes are a valid `Vmcb`.
        unsafe { core::ptr::write_bytes(self.vmcb as *mut Vmcb, 0, 1) };
        // SAFETY: VMSAVE writes the host's FS/GS/TR/LDTR and MSRs to the VMCB page we own.
        unsafe { asm!("vmsave rax", in("rax") self.vmcb_address, options(nostack)) };
        use attributes::*;
        let data = DATA_READ_WRITE | S | P | DB | G;
        let code = CODE_EXECUTE_READ | S | P | L | G;
        let flat = |selector: u16, attributes: u16| VmcbSegment {
            selector,
            attributes,
            limit: u32::MAX,
            base: 0,
        };
        let (es, cs, ss, ds): (u16, u16, u16, u16);
        // SAFETY: reading segment selectors has no effect.
        unsafe {
            asm!("mov {0:x}, es", "mov {1:x}, cs", "mov {2:x}, ss", "mov {3:x}, ds",
                 out(reg) es, out(reg) cs, out(reg) ss, out(reg) ds, options(nomem, nostack, preserves_flags))
        };
        let (gdt_limit, gdt_base) = super::instructions::store_gdtr();
        let (idt_limit, idt_base) = super::instructions::store_idtr();
        let save = &mut self.vmcb.save;
        save.es = flat(es, data);
        save.cs = flat(cs, code);
        save.ss = flat(ss, data);
        save.ds = flat(ds, data);
        save.gdtr = VmcbSegment {
            selector: 0,
            attributes: 0,
            limit: u32::from(gdt_limit),
            base: gdt_base,
        };
        save.idtr = VmcbSegment {
            selector: 0,
            attributes: 0,
            limit: u32::from(idt_limit),
            base: idt_base,
        };
        save.cpl = 0;
        save.efer = try_rdmsr(IA32_EFER).unwrap_or(0);
        save.cr4 = read_cr4();
        save.cr3 = read_cr3();
        save.cr0 = read_cr0();
        save.dr7 = super::debug::try_read_debug_register(7).unwrap_or(0x400);
        save.dr6 = super::debug::try_read_debug_register(6).unwrap_or(0xffff_0ff0);
        save.cr2 = read_cr2();
        save.g_pat = try_rdmsr(IA32_PAT).unwrap_or(0x0007_0406_0007_0406);
        save.dbgctl = try_rdmsr(IA32_DEBUGCTL).unwrap_or(0);
        save.rflags = 2;
        let control = &mut self.vmcb.control;
        control.asid = 1;
        control.set_intercept(Intercept::Vmrun);
        control.set_intercept(Intercept::Vmmcall);
        control.set_intercept(Intercept::Shutdown);
        control.iopm_base_pa = self.io_address;
        control.msrpm_base_pa = self.msr_address;
        if let Some(nested_cr3) = self.nested_cr3 {
            control.nested_control = NESTED_PAGING_ENABLE;
            control.nested_cr3 = nested_cr3;
            control.tlb_control = TLB_CONTROL_FLUSH_ALL_ASID;
        }
        self.registers = GuestRegisters::default();
    }

    /// Whether VMRUN runs with the host's RFLAGS.IF set (the default, as kvm-unit-tests'
    /// `test_run`) or clear (its `prepare_gif_clear` doing CLI): with V_INTR_MASKING, physical
    /// interrupts reach the guest only in the first case. Kept across [`Svm::reset`].
    pub fn set_host_interrupts(&mut self, enabled: bool) {
        self.host_interrupts = enabled;
    }

    /// Whether the next VMRUNs set the host's RFLAGS.TF right after CLGI (kvm-unit-tests'
    /// host_rflags, in its `prepare_gif_clear`): each host instruction from there on raises a
    /// single-step #DB on the host, which a handler installed with
    /// [`set_debug_handler`](super::exceptions::set_debug_handler) clears TF at or lets run
    /// through VMRUN (a TF still set at VMRUN traps after the #VMEXIT, at
    /// [`vmrun_address`] + 3). Without such a handler the first #DB ends the test. Cleared by
    /// [`Svm::reset`].
    pub fn set_host_trap_flag(&mut self, set: bool) {
        self.host_trap_flag = set;
    }

    /// Sets or clears the present bit of the nested page table's first PML4 entry, which maps
    /// all of guest-physical 0-512 GiB: cleared, the guest's first access (its first fetch)
    /// exits with a nested page fault. Returns false without nested paging.
    pub fn set_nested_mapping_present(&mut self, present: bool) -> bool {
        let Some(root) = self.nested_cr3 else {
            return false;
        };
        // SAFETY: the root is the nested PML4 frame `build_nested_page_tables` leaked for us;
        // only the guest's translations (flushed at VMRUN by TLB_CONTROL) use it.
        let entry = unsafe { &mut *(root as usize as *mut u64) };
        *entry = if present { *entry | 1 } else { *entry & !1 };
        true
    }

    /// The nested page table entry of `level` that maps guest-physical `address` (below 4 GiB),
    /// as a pointer into the harness's tables; `None` without nested paging or above 4 GiB.
    /// Asking for [`NestedLevel::Table`] splits the 2 MiB page that holds `address` into 4 KiB
    /// pages first (the same mapping and permissions).
    fn nested_entry_pointer(&mut self, address: u64, level: NestedLevel) -> Option<*mut u64> {
        let root = self.nested_cr3?;
        if address >= 4 << 30 {
            return None;
        }
        let slot = |table: u64, index: u64| (table + 8 * index) as usize as *mut u64;
        let pml4e = slot(root, (address >> 39) & 0x1ff);
        if level == NestedLevel::Pml4 {
            return Some(pml4e);
        }
        // SAFETY: the entries are in frames `build_nested_page_tables` (or the split below)
        // leaked for the harness, identity mapped (so are the reads below).
        let pdpt = unsafe { *pml4e } & NESTED_ADDRESS_MASK;
        let pdpte = slot(pdpt, (address >> 30) & 0x1ff);
        if level == NestedLevel::Pdpt {
            return Some(pdpte);
        }
        // SAFETY: as above.
        let directory = unsafe { *pdpte } & NESTED_ADDRESS_MASK;
        let pde = slot(directory, (address >> 21) & 0x1ff);
        if level == NestedLevel::Directory {
            return Some(pde);
        }
        // SAFETY: as above.
        let entry = unsafe { *pde };
        if entry & nested_entry::LARGE_PAGE != 0 {
            let table = leak_frames(1);
            let flags = entry & !NESTED_ADDRESS_MASK & !nested_entry::LARGE_PAGE;
            let base = entry & NESTED_ADDRESS_MASK & !((1 << 21) - 1);
            for index in 0..512u64 {
                // SAFETY: `table` is a fresh frame of ours: 512 entries.
                unsafe { *slot(table, index) = (base + index * PAGE_SIZE) | flags };
            }
            // SAFETY: the PDE is ours; the table maps the same 2 MiB with the same permissions,
            // and the next VMRUN flushes the guest's TLB (TLB_CONTROL, `reset`).
            unsafe { *pde = table | nested_entry::PRESENT | nested_entry::WRITABLE | nested_entry::USER };
        }
        // SAFETY: as above.
        let table = unsafe { *pde } & NESTED_ADDRESS_MASK;
        Some(slot(table, (address >> 12) & 0x1ff))
    }

    /// The nested page table entry of `level` that maps guest-physical `address` (kvm-unit-tests'
    /// `npt_get_pte`/`npt_get_pde`/`npt_get_pdpe`/`npt_get_pml4e`); `None` without nested paging
    /// or at or above 4 GiB. [`NestedLevel::Table`] splits the 2 MiB page first.
    pub fn nested_entry(&mut self, address: u64, level: NestedLevel) -> Option<u64> {
        // SAFETY: the pointer is into the harness's own nested tables.
        self.nested_entry_pointer(address, level)
            .map(|entry| unsafe { *entry })
    }

    /// The physical address of the nested page table entry of `level` for `address` (what a
    /// test compares with where kvm-unit-tests compares entry pointers).
    pub fn nested_entry_address(&mut self, address: u64, level: NestedLevel) -> Option<u64> {
        self.nested_entry_pointer(address, level)
            .map(|entry| entry as u64)
    }

    /// Sets the bits `set` and clears the bits `clear` of the nested entry of `level` for
    /// guest-physical `address`: present, writable, user and no-execute only
    /// ([`nested_entry::PERMISSIONS`]), which can only take the guest's access away or give
    /// it back (a nested page fault exit). Returns the entry as it was, `None` without nested
    /// paging. The next VMRUN flushes the guest's TLB.
    ///
    /// # Panics
    /// When `set` or `clear` holds a bit other than the permissions.
    pub fn update_nested_permissions(
        &mut self,
        address: u64,
        level: NestedLevel,
        set: u64,
        clear: u64,
    ) -> Option<u64> {
        assert!(
            (set | clear) & !nested_entry::PERMISSIONS == 0,
            "only permission bits: set {set:#x}, clear {clear:#x}"
        );
        let entry = self.nested_entry_pointer(address, level)?;
        // SAFETY: the entry is the harness's own.
        let old = unsafe { *entry };
        // SAFETY: as above; permission bits change what the guest may do, not where its
        // addresses go.
        unsafe { *entry = (old | set) & !clear };
        Some(old)
    }

    /// Writes `value` to the nested entry of `level` for guest-physical `address` (reserved
    /// bits, a page size bit): returns the entry as it was, `None` without nested paging.
    ///
    /// # Safety
    /// A nested page table that the CPU does not treat as faulting maps the guest's addresses
    /// onto host-physical memory: `value` must map them onto memory the guest may touch, or
    /// the guest must not run until the entry is put back.
    pub unsafe fn write_nested_entry(&mut self, address: u64, level: NestedLevel, value: u64) -> Option<u64> {
        let entry = self.nested_entry_pointer(address, level)?;
        // SAFETY: the entry is the harness's own.
        let old = unsafe { *entry };
        // SAFETY: as above; the caller answers for what it maps.
        unsafe { *entry = value };
        Some(old)
    }

    /// The address of the first instruction a guest running `guest` executes (what [`Svm::run`]
    /// puts in the VMCB's RIP): its first fetch, so the page a nested fault of that fetch
    /// names.
    pub fn guest_entry_address<G: Fn()>(_guest: &G) -> u64 {
        guest_entry::<G> as *const () as u64
    }

    /// Sets or clears the guest's EFER.NXE. Cleared, the NX bits of the page tables the guest
    /// shares with the host are reserved to it: a guest access through such an entry takes a
    /// #PF (the guest's).
    pub fn set_guest_no_execute(&mut self, enabled: bool) {
        let nxe = EferFlags::NO_EXECUTE_ENABLE.bits();
        let efer = &mut self.vmcb.save.efer;
        *efer = if enabled { *efer | nxe } else { *efer & !nxe };
    }

    /// Whether [`Svm::reset`] turns nested paging on (CPUID reports NPT).
    pub fn nested_paging(&self) -> bool {
        self.nested_cr3.is_some()
    }

    /// Resets the VMCB (a copy of the host's state), sets `which` base in it to `base`, then
    /// VMLOAD and VMSAVE in the host: returns the base VMSAVE stored (kvm-unit-tests'
    /// TEST_CANONICAL_VMLOAD: VMLOAD makes a non-canonical base canonical). The host's own
    /// state is loaded back before GIF is set again, so no interrupt or NMI sees the changed
    /// base.
    pub fn vmload_vmsave_base(&mut self, which: LoadedBase, base: u64) -> u64 {
        self.reset();
        let field = which.field(&mut self.vmcb.save);
        let original = *field;
        *field = base;
        let field = field as *mut u64;
        let saved: u64;
        // SAFETY: with GIF clear nothing can interrupt; VMLOAD loads the host's own state but
        // for one base, VMSAVE stores it into our VMCB, and the last VMLOAD, after the
        // original base is back in the VMCB, restores the host's state exactly; no memory is
        // accessed with the changed base in between (FS/GS are not used, TR is only read on
        // interrupts).
        unsafe {
            asm!(
                "clgi",
                "vmload rax",
                "vmsave rax",
                "mov {saved}, [{field}]",
                "mov [{field}], {original}",
                "vmload rax",
                "stgi",
                in("rax") self.vmcb_address,
                field = in(reg) field,
                original = in(reg) original,
                saved = out(reg) saved,
                options(nostack),
            )
        };
        saved
    }

    /// The VMCB's physical address (what VMRUN takes in RAX).
    pub fn vmcb_address(&self) -> u64 {
        self.vmcb_address
    }

    /// The VMCB.
    pub fn vmcb(&self) -> &Vmcb {
        self.vmcb
    }

    /// The VMCB, to write anything.
    ///
    /// # Safety
    /// The guest runs the runtime's code in the runtime's memory: its RIP, RSP, CR3, CR0.PG/PE,
    /// EFER.LME/LMA, segments and descriptor tables must let it run the closure [`Svm::run`]
    /// gives it, and the control area's physical addresses (permission maps, nested CR3) must
    /// name what the CPU will read as such.
    pub unsafe fn vmcb_mut(&mut self) -> &mut Vmcb {
        self.vmcb
    }

    /// Sets `intercept`.
    pub fn set_intercept(&mut self, intercept: Intercept) {
        self.vmcb.control.set_intercept(intercept);
    }

    /// Clears `intercept`.
    pub fn clear_intercept(&mut self, intercept: Intercept) {
        self.vmcb.control.clear_intercept(intercept);
    }

    /// Sets the guest's ASID (0, the host's, makes VMRUN fail).
    pub fn set_asid(&mut self, asid: u32) {
        self.vmcb.control.asid = asid;
    }

    /// Sets the PAUSE filter count (how many PAUSEs the guest executes before the PAUSE
    /// intercept exits) and threshold (the cycles between two PAUSEs after which the count
    /// starts again); with the PAUSE intercept set they filter it where CPUID offers them.
    pub fn set_pause_filter(&mut self, count: u16, threshold: u16) {
        self.vmcb.control.pause_filter_count = count;
        self.vmcb.control.pause_filter_threshold = threshold;
    }

    /// Sets TSC_OFFSET.
    pub fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.control.tsc_offset = offset;
    }

    /// Sets `int_ctl` (V_IRQ, V_GIF, V_INTR_MASKING ...: [`int_ctl`]).
    pub fn set_int_ctl(&mut self, value: u32) {
        self.vmcb.control.int_ctl = value;
    }

    /// Sets EVENTINJ (see [`event_injection`]).
    pub fn set_event_inject(&mut self, value: u32) {
        self.vmcb.control.event_inject = value;
    }

    /// Sets V_INTR_VECTOR: the vector of the virtual interrupt V_IRQ requests.
    pub fn set_int_vector(&mut self, vector: u8) {
        self.vmcb.control.int_vector = u32::from(vector);
    }

    /// Sets or clears the guest's RFLAGS.IF for the next VMRUN.
    pub fn set_guest_interrupt_flag(&mut self, set: bool) {
        const INTERRUPT_FLAG: u64 = 1 << 9;
        let rflags = &mut self.vmcb.save.rflags;
        *rflags = if set {
            *rflags | INTERRUPT_FLAG
        } else {
            *rflags & !INTERRUPT_FLAG
        };
    }

    /// Sets the guest's CR4.
    ///
    /// # Panics
    /// When `value` changes CR4.PAE: the guest runs the runtime's 64-bit code.
    pub fn set_guest_cr4(&mut self, value: u64) {
        let changed = super::control::Cr4Flags::from_bits_retain(self.vmcb.save.cr4 ^ value);
        assert!(
            !changed.intersects(super::control::CR4_OWNED),
            "guest CR4 <- {value:#x} would change {changed:?}"
        );
        self.vmcb.save.cr4 = value;
    }

    /// Sets the guest's CR0.
    ///
    /// # Panics
    /// When `value` changes CR0.PE or CR0.PG: the guest runs the runtime's 64-bit code.
    pub fn set_guest_cr0(&mut self, value: u64) {
        let changed = Cr0Flags::from_bits_retain(self.vmcb.save.cr0 ^ value);
        assert!(
            !changed.intersects(CR0_OWNED),
            "guest CR0 <- {value:#x} would change {changed:?}"
        );
        self.vmcb.save.cr0 = value;
    }

    /// The guest's registers after the last exit (other than RAX and RSP).
    pub fn registers(&self) -> &GuestRegisters {
        &self.registers
    }

    /// The I/O permission map (which the guest may borrow too).
    pub fn io_permission_map(&self) -> &'static IoPermissionMap {
        self.io
    }

    /// The MSR permission map (which the guest may borrow too).
    pub fn msr_permission_map(&self) -> &'static MsrPermissionMap {
        self.msr
    }

    /// Runs `guest` as the nested guest, on the harness's stack, from its start: VMRUN, then
    /// `finished` with each #VMEXIT until it returns true (resuming the guest where it exited
    /// otherwise). Returns the last exit's code. The guest and `finished` can share state
    /// through cells or atomics: the host waits while the guest runs. `finished` runs with
    /// interrupts off (an interrupt the guest exited for stays pending until the host opens a
    /// window); they are back as they were when `run` returns.
    pub fn run<G: Fn()>(&mut self, guest: &G, finished: impl FnMut(&mut Exit<'_>) -> bool) -> ExitCode {
        assert!(
            super::smp::cpu_index() == 0,
            "the SVM harness runs guests on the boot CPU, whose exception catching they share"
        );
        self.run_here(guest, finished)
    }

    /// [`Svm::run`] on whichever CPU calls it (kvm-unit-tests' `on_vcpu`), for a guest that a
    /// CPU's end can be left to (svm_init_intercept_test's INIT). Call [`enable`] on that CPU
    /// first. The calling CPU's exception catching is put aside for the run as on the boot
    /// CPU.
    ///
    /// # Safety
    /// The guest must raise no exception and take no interrupt the runtime dispatches: its
    /// stack is not a CPU's, so the runtime takes whatever the guest raises for the boot
    /// CPU's and would resume it in the boot CPU's catch contexts.
    pub unsafe fn run_on_this_cpu<G: Fn()>(
        &mut self,
        guest: &G,
        finished: impl FnMut(&mut Exit<'_>) -> bool,
    ) -> ExitCode {
        self.run_here(guest, finished)
    }

    fn run_here<G: Fn()>(&mut self, guest: &G, finished: impl FnMut(&mut Exit<'_>) -> bool) -> ExitCode {
        self.vmcb.save.rip = guest_entry::<G> as *const () as u64;
        // As after a CALL: RSP + 8 is 16-byte aligned.
        self.vmcb.save.rsp = self.stack_top - 8;
        self.registers.rdi = guest as *const G as u64;
        self.enter(finished)
    }

    /// Gives the guest a GDT of its own: a copy of the runtime's (so every selector the guest
    /// holds means what it meant) with a 32-bit ring-0 code segment after it, whose selector it
    /// returns (for [`try_overflow_in_compatibility_mode`]). Until [`Svm::reset`].
    pub fn give_guest_code32_segment(&mut self) -> u16 {
        let (limit, base) = super::instructions::store_gdtr();
        let length = usize::from(limit) + 1;
        assert!(length + 8 <= PAGE_SIZE as usize, "the runtime's GDT fills a page");
        let page = *self.guest_gdt.get_or_insert_with(|| leak_frames(1));
        // SAFETY: the runtime's GDT is `length` bytes at `base`, readable; the page is our own,
        // never freed, and holds nothing else.
        unsafe {
            core::ptr::copy_nonoverlapping(base as usize as *const u8, page as usize as *mut u8, length)
        };
        // SAFETY: the descriptor lands just after the copy, inside the same page (checked above).
        unsafe { ((page as usize + length) as *mut u64).write_unaligned(CODE32_DESCRIPTOR) };
        self.vmcb.save.gdtr.base = page;
        self.vmcb.save.gdtr.limit = (length + 8 - 1) as u32;
        length as u16
    }

    /// Runs the harness's 32-bit guest (VMMCALL in a loop: kvm-unit-tests'
    /// `hypercall_32bit_main`) in legacy protected mode with `paging` through the tables at
    /// `cr3` (kvm-unit-tests' `svm_32bit_guest_init_common`): a 32-bit CS, EFER.LME and LMA
    /// clear, CR0.PG and PE set, CR4.PAE or CR4.PSE. Returns its first exit: VMMCALL, ERR when
    /// VMRUN refuses the state, or an intercepted fault of its walk. Call [`Svm::reset`]
    /// before the next run.
    ///
    /// # Safety
    /// `cr3` must point at tables of `paging`'s format that map the guest's code (below 4 GiB)
    /// onto itself, changed at most in bits VMRUN refuses or a walk faults on: tables that
    /// map the code elsewhere run whatever is there as the guest.
    pub unsafe fn run_legacy_hypercall(&mut self, paging: LegacyPaging, cr3: u64) -> ExitCode {
        use super::control::Cr4Flags;
        let code = hypercall_32bit_address();
        assert!(code < 1 << 32, "the 32-bit guest's code lies above 4 GiB");
        let save = &mut self.vmcb.save;
        save.cs.attributes = attributes::CODE_EXECUTE_READ_ACCESSED
            | attributes::S
            | attributes::P
            | attributes::DB
            | attributes::G;
        save.efer &= !(EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE).bits();
        save.cr0 |= (Cr0Flags::PAGING | Cr0Flags::PROTECTED_MODE_ENABLE).bits();
        save.cr4 &= !(Cr4Flags::PHYSICAL_ADDRESS_EXTENSION | Cr4Flags::PAGE_SIZE_EXTENSION).bits();
        save.cr4 |= match paging {
            LegacyPaging::TwoLevel => Cr4Flags::PAGE_SIZE_EXTENSION,
            LegacyPaging::Pae => Cr4Flags::PHYSICAL_ADDRESS_EXTENSION,
        }
        .bits();
        save.cr3 = cr3;
        save.rip = code;
        save.rsp = self.stack_top - 8;
        self.enter(|_| true)
    }

    /// VMRUN from the VMCB as it is, then `finished` with each #VMEXIT until it returns true.
    fn enter(&mut self, mut finished: impl FnMut(&mut Exit<'_>) -> bool) -> ExitCode {
        let interrupts_were_enabled = super::interrupts::are_enabled();
        super::interrupts::disable();
        let mut guest_handlers = crate::catch::HandlerState::NONE;
        loop {
            // The guest keeps catch contexts and trap recorders of its own across exits (its
            // stack is not a CPU's, so they count as the boot CPU's, checked above).
            guest_handlers.swap();
            // SAFETY: the VMCB is the host's copy (`reset`) whose RIP, RSP and RDI were just set
            // to run `guest` on the harness's stack, or the 32-bit guest's state whose tables
            // `run_legacy_hypercall`'s caller vouches for; only `unsafe` `vmcb_mut` can break
            // that.
            // The host-save page and VM_HSAVE_PA were set up by `new`. `guest` outlives the
            // loop.
            unsafe {
                vmunit_svm_vmrun(
                    self.vmcb_address,
                    &mut self.registers,
                    self.host_save_address,
                    u32::from(self.host_interrupts),
                    u32::from(self.host_trap_flag),
                )
            };
            guest_handlers.swap();
            let mut exit = Exit {
                vmcb: &mut *self.vmcb,
                registers: &mut self.registers,
            };
            if finished(&mut exit) {
                let code = exit.code();
                if interrupts_were_enabled {
                    super::interrupts::enable();
                }
                return code;
            }
        }
    }

    /// Runs `guest` to its first #VMEXIT (a VMMCALL when it returns without other exits).
    pub fn run_once<G: Fn()>(&mut self, guest: &G) -> ExitCode {
        self.run(guest, |_| true)
    }
}
