//! Hyper-V enlightenments as KVM and QEMU offer them (`-cpu ...,hv-*`): the CPUID leaves
//! 0x4000_0000-0x4000_000A with their named feature bits, the reference TSC page, the
//! synthetic interrupt controller (SynIC: message and event flags pages, SINTx, EOM), the
//! synthetic timers' configuration, the hypercall page, and QEMU's `hyperv-testdev` (Hyper-V
//! TLFS 6.0; kvm-unit-tests' x86/hyperv.h).
//!
//! Every page the hypervisor writes (reference TSC, message, event flags, hypercall) is a frame
//! from the runtime's allocator, never a Rust object, read and written with volatile accesses,
//! and never given back: the hypervisor may go on writing it.

use core::sync::atomic::{Ordering, fence};

use super::cpuid::cpuid;
use super::exceptions::Exception;
use super::instructions::{out_u32, rdtsc};
use super::msr::{
    HV_X64_MSR_EOM, HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL, HV_X64_MSR_REFERENCE_TSC,
    HV_X64_MSR_SCONTROL, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0, HV_X64_MSR_STIMER0_CONFIG,
    HV_X64_MSR_STIMER0_COUNT, try_wrmsr, try_wrmsr_unrestricted,
};
use crate::memory::PAGE_SIZE;

/// The vendor leaf's signature (EBX, ECX, EDX of 0x4000_0000) of a Hyper-V-compatible
/// hypervisor.
pub const HYPERV_SIGNATURE: [u8; 12] = *b"Microsoft Hv";
/// HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS.
pub const HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS: u32 = 0x4000_0000;
/// HYPERV_CPUID_INTERFACE: EAX is `Hv#1` for the Hyper-V interface.
pub const HYPERV_CPUID_INTERFACE: u32 = 0x4000_0001;
/// HYPERV_CPUID_VERSION.
pub const HYPERV_CPUID_VERSION: u32 = 0x4000_0002;
/// HYPERV_CPUID_FEATURES: the partition's privileges (EAX, EBX) and features (EDX).
pub const HYPERV_CPUID_FEATURES: u32 = 0x4000_0003;
/// HYPERV_CPUID_ENLIGHTMENT_INFO: recommendations.
pub const HYPERV_CPUID_ENLIGHTMENT_INFO: u32 = 0x4000_0004;
/// HYPERV_CPUID_IMPLEMENT_LIMITS.
pub const HYPERV_CPUID_IMPLEMENT_LIMITS: u32 = 0x4000_0005;
/// HYPERV_CPUID_NESTED_FEATURES: the last leaf KVM's Hyper-V emulation lists (0x4000_000A).
pub const HYPERV_CPUID_NESTED_FEATURES: u32 = 0x4000_000a;
/// `Hv#1` as HYPERV_CPUID_INTERFACE's EAX.
pub const HYPERV_INTERFACE_SIGNATURE: u32 = u32::from_le_bytes(*b"Hv#1");

/// Whether the hypervisor offers the Hyper-V interface: the `Microsoft Hv` vendor leaf and
/// `Hv#1` in the interface leaf (kvm-unit-tests looks only at the feature bits).
pub fn present() -> bool {
    if !super::cpuid::has(super::cpuid::Feature::Hypervisor) {
        return false;
    }
    let vendor = cpuid(HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS, 0);
    let mut signature = [0; 12];
    for (chunk, register) in signature
        .chunks_exact_mut(4)
        .zip([vendor.ebx, vendor.ecx, vendor.edx])
    {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    signature == HYPERV_SIGNATURE
        && vendor.eax >= HYPERV_CPUID_FEATURES
        && cpuid(HYPERV_CPUID_INTERFACE, 0).eax == HYPERV_INTERFACE_SIGNATURE
}

/// A Hyper-V feature bit of HYPERV_CPUID_FEATURES (TLFS 2.4.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HypervFeature {
    /// HV_MSR_VP_RUNTIME_AVAILABLE (EAX[0], `hv-runtime`).
    VpRuntime,
    /// HV_MSR_TIME_REF_COUNT_AVAILABLE (EAX[1], `hv-time`).
    TimeRefCount,
    /// HV_MSR_SYNIC_AVAILABLE (EAX[2], `hv-synic`).
    Synic,
    /// HV_MSR_SYNTIMER_AVAILABLE (EAX[3], `hv-stimer`).
    SyntheticTimers,
    /// HV_MSR_APIC_ACCESS_AVAILABLE (EAX[4], `hv-vapic`).
    ApicAccess,
    /// HV_MSR_HYPERCALL_AVAILABLE (EAX[5]): GUEST_OS_ID and HYPERCALL.
    Hypercall,
    /// HV_MSR_VP_INDEX_AVAILABLE (EAX[6], `hv-vpindex`).
    VpIndex,
    /// HV_MSR_RESET_AVAILABLE (EAX[7], `hv-reset`).
    Reset,
    /// HV_ACCESS_FREQUENCY_MSRS (EAX[11], `hv-frequencies`).
    FrequencyMsrs,
    /// HV_MSR_REFERENCE_TSC_AVAILABLE (EAX[9], `hv-time`).
    ReferenceTsc,
    /// HV_POST_MESSAGES (EBX[4]): HvPostMessage.
    PostMessages,
    /// HV_SIGNAL_EVENTS (EBX[5]): HvSignalEvent.
    SignalEvents,
    /// HV_STIMER_DIRECT_MODE_AVAILABLE (EDX[19], `hv-stimer-direct`).
    StimerDirectMode,
}

impl HypervFeature {
    /// The bit: its register of HYPERV_CPUID_FEATURES and position.
    pub const fn bit(self) -> super::cpuid::FeatureBit {
        use super::cpuid::Register;
        let (register, bit) = match self {
            HypervFeature::VpRuntime => (Register::Eax, 0),
            HypervFeature::TimeRefCount => (Register::Eax, 1),
            HypervFeature::Synic => (Register::Eax, 2),
            HypervFeature::SyntheticTimers => (Register::Eax, 3),
            HypervFeature::ApicAccess => (Register::Eax, 4),
            HypervFeature::Hypercall => (Register::Eax, 5),
            HypervFeature::VpIndex => (Register::Eax, 6),
            HypervFeature::Reset => (Register::Eax, 7),
            HypervFeature::ReferenceTsc => (Register::Eax, 9),
            HypervFeature::FrequencyMsrs => (Register::Eax, 11),
            HypervFeature::PostMessages => (Register::Ebx, 4),
            HypervFeature::SignalEvents => (Register::Ebx, 5),
            HypervFeature::StimerDirectMode => (Register::Edx, 19),
        };
        super::cpuid::FeatureBit {
            leaf: HYPERV_CPUID_FEATURES,
            subleaf: 0,
            register,
            bit,
        }
    }
}

/// Whether the Hyper-V interface is [`present`] and advertises `feature`.
pub fn has(feature: HypervFeature) -> bool {
    let bit = feature.bit();
    present() && bit.register.of(cpuid(bit.leaf, 0)) & (1 << bit.bit) != 0
}

/// The partition reference counter's unit: 100 ns ticks per second.
pub const TICKS_PER_SECOND: u64 = 10_000_000;

/// A frame for the hypervisor to write: zeroed, identity mapped, never given back.
fn hypervisor_frame() -> Option<u64> {
    let frame = crate::memory::allocate_frame()?;
    // SAFETY: the frame is fresh from the allocator, identity mapped, owned by nothing else.
    unsafe { (frame as usize as *mut u8).write_bytes(0, PAGE_SIZE as usize) };
    Some(frame)
}

/// A volatile load from a hypervisor frame.
fn load<T: Copy>(address: u64) -> T {
    // SAFETY: callers pass aligned addresses inside a frame of `hypervisor_frame` (identity
    // mapped, never freed, no Rust object in it); volatile because the hypervisor writes it.
    unsafe { core::ptr::read_volatile(address as usize as *const T) }
}

/// A volatile store to a hypervisor frame.
fn store<T: Copy>(address: u64, value: T) {
    // SAFETY: as for `load`: no Rust object lives in the frame, so the store can break no
    // invariant the compiler relies on.
    unsafe { core::ptr::write_volatile(address as usize as *mut T, value) }
}

/// A consistent copy of the reference TSC page (`HV_REFERENCE_TSC_PAGE`, TLFS 12.7.2):
/// reference time = ((TSC * scale) >> 64) + offset, in 100 ns units.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReferenceTsc {
    /// TscSequence: 0 (or 0xFFFFFFFF) when the page is not valid and the guest must use
    /// HV_X64_MSR_TIME_REF_COUNT.
    pub sequence: u32,
    /// TscScale, a 64.64 fraction.
    pub scale: u64,
    /// TscOffset.
    pub offset: i64,
}

impl ReferenceTsc {
    /// The reference time (100 ns) at TSC value `tsc`.
    pub fn ticks_at(&self, tsc: u64) -> u64 {
        (((u128::from(tsc) * u128::from(self.scale)) >> 64) as u64).wrapping_add(self.offset as u64)
    }

    /// Whether the sequence says the page may be used.
    pub fn valid(&self) -> bool {
        self.sequence != 0 && self.sequence != u32::MAX
    }
}

/// The reference TSC page: a frame of the runtime's that HV_X64_MSR_REFERENCE_TSC names.
pub struct ReferenceTscPage {
    frame: u64,
}

impl ReferenceTscPage {
    /// A zeroed frame for the page, or `None` when none is left.
    pub fn new() -> Option<ReferenceTscPage> {
        hypervisor_frame().map(|frame| ReferenceTscPage { frame })
    }

    /// The page's guest-physical address.
    pub fn address(&self) -> u64 {
        self.frame
    }

    /// The value that enables the page at this frame: the frame | 1.
    pub fn enabling_value(&self) -> u64 {
        self.frame | 1
    }

    /// Writes HV_X64_MSR_REFERENCE_TSC = frame | 1, or the exception.
    pub fn enable(&self) -> Result<(), Exception> {
        // SAFETY: the address is this page's own frame, which is never freed.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_REFERENCE_TSC, self.enabling_value()) }
    }

    /// Writes HV_X64_MSR_REFERENCE_TSC = 0, or the exception.
    pub fn disable(&self) -> Result<(), Exception> {
        // SAFETY: 0 gives the hypervisor no address.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_REFERENCE_TSC, 0) }
    }

    /// A consistent copy: the fields read between two equal sequence numbers
    /// (kvm-unit-tests' `hvclock_get_time_values`).
    pub fn read(&self) -> ReferenceTsc {
        self.consistent(|_| ()).0
    }

    /// The reference time now, from the page and RDTSC (kvm-unit-tests' `hv_clock_read`).
    pub fn now(&self) -> u64 {
        self.consistent(|copy| copy.ticks_at(rdtsc())).1
    }

    /// Copies the page's fields and applies `use_copy` to them, again until the sequence
    /// number is the same before and after: the copy and what was made of it, consistent.
    fn consistent<T>(&self, use_copy: impl Fn(&ReferenceTsc) -> T) -> (ReferenceTsc, T) {
        loop {
            let sequence: u32 = load(self.frame);
            fence(Ordering::Acquire);
            let copy = ReferenceTsc {
                sequence,
                scale: load(self.frame + 8),
                offset: load(self.frame + 16),
            };
            let made = use_copy(&copy);
            fence(Ordering::Acquire);
            if load::<u32>(self.frame) == sequence {
                return (copy, made);
            }
        }
    }
}

/// The number of synthetic interrupt sources.
pub const SINT_COUNT: u8 = 16;
/// The number of synthetic timers per virtual processor.
pub const STIMER_COUNT: u8 = 4;
/// HV_SYNIC_CONTROL_ENABLE in SCONTROL; also the enable bit of SIMP and SIEFP.
pub const SYNIC_ENABLE: u64 = 1 << 0;
/// HV_SYNIC_SINT_MASKED in SINTx.
pub const SINT_MASKED: u64 = 1 << 16;
/// HV_SYNIC_SINT_AUTO_EOI in SINTx: the hypervisor ends the interrupt itself.
pub const SINT_AUTO_EOI: u64 = 1 << 17;
/// Bytes of one SynIC message (HV_MESSAGE_SIZE).
pub const MESSAGE_SIZE: u64 = 256;
/// HV_MESSAGE_PAYLOAD_BYTE_COUNT.
pub const MESSAGE_PAYLOAD_BYTES: u8 = 240;
/// Bytes of one SINT's event flags in the event flags page (2048 flags).
pub const EVENT_FLAGS_SIZE: u64 = 256;

/// A SynIC message type (`enum hv_message_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MessageType {
    /// HVMSG_NONE: the slot is free.
    None,
    /// HVMSG_TIMER_EXPIRED: a synthetic timer expired.
    TimerExpired,
    /// Any other value.
    Other(u32),
}

impl MessageType {
    /// HVMSG_TIMER_EXPIRED's value.
    pub const TIMER_EXPIRED: u32 = 0x8000_0010;

    /// The type of raw value `value`.
    pub const fn of(value: u32) -> MessageType {
        match value {
            0 => MessageType::None,
            MessageType::TIMER_EXPIRED => MessageType::TimerExpired,
            other => MessageType::Other(other),
        }
    }
}

/// A message's header (`struct hv_message_header`) and its first payload words.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Message {
    /// MessageType.
    pub message_type: MessageType,
    /// PayloadSize in bytes.
    pub payload_size: u8,
    /// MessageFlags.MessagePending: another message waits for this slot (write EOM once it
    /// is free).
    pub pending: bool,
    /// The first three payload words: for a timer message, the timer index (low 32 bits of
    /// word 0), the expiration time and the delivery time.
    pub payload: [u64; 3],
}

/// The SynIC pages of one virtual processor: the message page (SIMP) and the event flags
/// page (SIEFP), each a frame of the runtime's.
pub struct Synic {
    message_page: u64,
    event_flags_page: u64,
}

impl Synic {
    /// Zeroed frames for both pages, or `None` when none are left.
    pub fn new() -> Option<Synic> {
        Some(Synic {
            message_page: hypervisor_frame()?,
            event_flags_page: hypervisor_frame()?,
        })
    }

    /// The message page's guest-physical address.
    pub fn message_page(&self) -> u64 {
        self.message_page
    }

    /// The event flags page's guest-physical address.
    pub fn event_flags_page(&self) -> u64 {
        self.event_flags_page
    }

    /// On the running CPU: SIMP and SIEFP name this SynIC's pages (enabled), then
    /// SCONTROL's enable bit is set (kvm-unit-tests' `synic_test_prepare`). The message page
    /// becomes the CPU's for [`this_cpu_message`] (interrupt handlers read it there).
    pub fn enable_this_cpu(&self) -> Result<(), Exception> {
        // SAFETY: the address is this SynIC's own frame, which is never freed.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_SIMP, self.message_page | SYNIC_ENABLE) }?;
        // SAFETY: as above.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_SIEFP, self.event_flags_page | SYNIC_ENABLE) }?;
        MESSAGE_PAGES[super::smp::cpu_index()].store(self.message_page, Ordering::SeqCst);
        try_wrmsr(HV_X64_MSR_SCONTROL, SYNIC_ENABLE)
    }

    /// On the running CPU: SCONTROL, SIMP and SIEFP back to 0.
    pub fn disable_this_cpu(&self) -> Result<(), Exception> {
        try_wrmsr(HV_X64_MSR_SCONTROL, 0)?;
        // SAFETY: 0 gives the hypervisor no address.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_SIMP, 0) }?;
        // SAFETY: as above.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_SIEFP, 0) }
    }

    /// The message in SINT `sint`'s slot.
    pub fn message(&self, sint: u8) -> Message {
        message_in(self.message_page, sint)
    }

    /// Writes `message_type` into SINT `sint`'s slot: 0 (HVMSG_NONE) frees it (then write
    /// EOM if the message was pending); another type marks it busy.
    pub fn set_message_type(&self, sint: u8, message_type: u32) {
        set_message_type_in(self.message_page, sint, message_type);
    }

    /// Whether event flag `flag` of SINT `sint` is set.
    pub fn event_flag(&self, sint: u8, flag: u32) -> bool {
        assert!(sint < SINT_COUNT && u64::from(flag) < EVENT_FLAGS_SIZE * 8);
        let word = self.event_flags_page + u64::from(sint) * EVENT_FLAGS_SIZE + u64::from(flag / 64) * 8;
        load::<u64>(word) & (1 << (flag % 64)) != 0
    }

    /// The 64-bit word of SINT `sint`'s event flags that holds flag `flag`.
    pub fn event_flags_word(&self, sint: u8, flag: u32) -> u64 {
        assert!(sint < SINT_COUNT && u64::from(flag) < EVENT_FLAGS_SIZE * 8);
        load(self.event_flags_page + u64::from(sint) * EVENT_FLAGS_SIZE + u64::from(flag / 64) * 8)
    }

    /// Clears event flag `flag` of SINT `sint` (the guest's side of the protocol).
    pub fn clear_event_flag(&self, sint: u8, flag: u32) {
        assert!(sint < SINT_COUNT && u64::from(flag) < EVENT_FLAGS_SIZE * 8);
        let word = self.event_flags_page + u64::from(sint) * EVENT_FLAGS_SIZE + u64::from(flag / 64) * 8;
        let address = word as usize as *const core::sync::atomic::AtomicU64;
        // SAFETY: the word is an aligned u64 of this SynIC's frame, which no Rust object
        // occupies; the hypervisor sets flags atomically too, so an atomic AND is the access.
        unsafe { (*address).fetch_and(!(1 << (flag % 64)), Ordering::SeqCst) };
    }
}

/// The message page each CPU last enabled with [`Synic::enable_this_cpu`] (0: none).
static MESSAGE_PAGES: [core::sync::atomic::AtomicU64; super::smp::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; super::smp::MAX_CPUS];

fn slot(message_page: u64, sint: u8) -> u64 {
    assert!(sint < SINT_COUNT, "SINT{sint} does not exist");
    message_page + u64::from(sint) * MESSAGE_SIZE
}

fn message_in(message_page: u64, sint: u8) -> Message {
    let slot = slot(message_page, sint);
    let header: u64 = load(slot);
    fence(Ordering::Acquire);
    Message {
        message_type: MessageType::of(header as u32),
        payload_size: (header >> 32) as u8,
        pending: (header >> 40) & 1 != 0,
        payload: [load(slot + 16), load(slot + 24), load(slot + 32)],
    }
}

fn set_message_type_in(message_page: u64, sint: u8, message_type: u32) {
    store(slot(message_page, sint), message_type);
    fence(Ordering::SeqCst);
}

/// The message in SINT `sint`'s slot of the running CPU's SynIC (the one it enabled last),
/// or `None` when it enabled none: for interrupt handlers.
pub fn this_cpu_message(sint: u8) -> Option<Message> {
    let page = MESSAGE_PAGES[super::smp::cpu_index()].load(Ordering::SeqCst);
    (page != 0).then(|| message_in(page, sint))
}

/// Writes `message_type` into SINT `sint`'s slot of the running CPU's SynIC (nothing when it
/// enabled none): 0 frees the slot.
pub fn this_cpu_set_message_type(sint: u8, message_type: u32) {
    let page = MESSAGE_PAGES[super::smp::cpu_index()].load(Ordering::SeqCst);
    if page != 0 {
        set_message_type_in(page, sint, message_type);
    }
}

/// SINTx = `vector` (unmasked), with [`SINT_AUTO_EOI`] when `auto_eoi`, on the running CPU
/// (kvm-unit-tests' `sint_enable`).
pub fn enable_sint(sint: u8, vector: u8, auto_eoi: bool) -> Result<(), Exception> {
    assert!(sint < SINT_COUNT);
    let value = u64::from(vector) | if auto_eoi { SINT_AUTO_EOI } else { 0 };
    try_wrmsr(HV_X64_MSR_SINT0 + u32::from(sint), value)
}

/// SINTx masked, vector 0xff (kvm-unit-tests' `sint_disable`).
pub fn disable_sint(sint: u8) -> Result<(), Exception> {
    assert!(sint < SINT_COUNT);
    try_wrmsr(HV_X64_MSR_SINT0 + u32::from(sint), 0xff | SINT_MASKED)
}

/// HV_X64_MSR_EOM: the hypervisor may deliver the next pending message.
pub fn end_of_message() -> Result<(), Exception> {
    try_wrmsr(HV_X64_MSR_EOM, 0)
}

/// A synthetic timer's configuration (`union hv_stimer_config`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StimerConfig {
    /// Enable (bit 0).
    pub enable: bool,
    /// Periodic (bit 1): COUNT is the period; else the absolute expiration time.
    pub periodic: bool,
    /// AutoEnable (bit 3): writing COUNT sets Enable.
    pub auto_enable: bool,
    /// DirectMode (bit 12): interrupt `apic_vector` instead of a message to `sint`.
    pub direct_mode: bool,
    /// ApicVector (bits 11:4), in direct mode.
    pub apic_vector: u8,
    /// SINTx (bits 19:16), in message mode.
    pub sint: u8,
}

impl StimerConfig {
    /// The MSR value.
    pub const fn bits(self) -> u64 {
        (self.enable as u64)
            | (self.periodic as u64) << 1
            | (self.auto_enable as u64) << 3
            | (self.apic_vector as u64) << 4
            | (self.direct_mode as u64) << 12
            | ((self.sint & 0xf) as u64) << 16
    }
}

/// Synthetic timer `timer`'s CONFIG MSR.
pub const fn stimer_config_msr(timer: u8) -> u32 {
    HV_X64_MSR_STIMER0_CONFIG + 2 * timer as u32
}

/// Synthetic timer `timer`'s COUNT MSR.
pub const fn stimer_count_msr(timer: u8) -> u32 {
    HV_X64_MSR_STIMER0_COUNT + 2 * timer as u32
}

/// A guest OS ID for HV_X64_MSR_GUEST_OS_ID (kvm-unit-tests' `0x8f00 << 48`): not 0, which
/// is what lets the hypercall page be enabled (TLFS 3.13).
pub const GUEST_OS_ID: u64 = 0x8f00 << 48;
/// HV_HYPERCALL_FAST in a hypercall's control word: the input is in RDX (and R8), not in
/// memory.
pub const HYPERCALL_FAST: u64 = 1 << 16;
/// HVCALL_POST_MESSAGE.
pub const HVCALL_POST_MESSAGE: u16 = 0x5c;
/// HVCALL_SIGNAL_EVENT.
pub const HVCALL_SIGNAL_EVENT: u16 = 0x5d;
/// HV_STATUS_SUCCESS in a hypercall's result (bits 15:0).
pub const HV_STATUS_SUCCESS: u16 = 0;
/// HV_STATUS_INVALID_HYPERCALL_CODE.
pub const HV_STATUS_INVALID_HYPERCALL_CODE: u16 = 2;

/// Why a hypercall through the page did not run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HypercallError {
    /// The page does not start with VMCALL or VMMCALL and RET: the hypervisor did not fill
    /// it (its first four bytes).
    PageNotFilled([u8; 4]),
    /// The call raised this exception.
    Exception(Exception),
}

/// The hypercall page: a page of the runtime's that the hypervisor fills with the hypercall
/// instruction sequence when HV_X64_MSR_HYPERCALL names it, mapped executable at its own
/// address. Dropping it turns HV_X64_MSR_HYPERCALL off before the frame is freed.
pub struct HypercallPage {
    page: crate::memory::TestPage,
}

impl HypercallPage {
    /// A zeroed page.
    ///
    /// # Panics
    /// When no frame is left.
    pub fn new() -> HypercallPage {
        HypercallPage {
            page: crate::memory::TestPage::new(),
        }
    }

    /// The page's guest-physical address.
    pub fn address(&self) -> u64 {
        self.page.frame()
    }

    /// Writes HV_X64_MSR_GUEST_OS_ID, then HV_X64_MSR_HYPERCALL = frame | 1 (enable), and
    /// maps the page read-execute; or the exception.
    pub fn enable(&self) -> Result<(), Exception> {
        try_wrmsr(HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID)?;
        // SAFETY: the address is this page's own frame; the hypervisor writes it only now,
        // and Drop turns the MSR off before the frame goes back to the allocator.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_HYPERCALL, self.page.frame() | 1) }?;
        self.page.map(crate::memory::Protection::READ_EXECUTE);
        Ok(())
    }

    /// HV_X64_MSR_HYPERCALL and HV_X64_MSR_GUEST_OS_ID back to 0.
    pub fn disable(&self) -> Result<(), Exception> {
        // SAFETY: 0 gives the hypervisor no address.
        unsafe { try_wrmsr_unrestricted(HV_X64_MSR_HYPERCALL, 0) }?;
        try_wrmsr(HV_X64_MSR_GUEST_OS_ID, 0)
    }

    /// The first four bytes of the page (read through the identity map).
    pub fn code(&self) -> [u8; 4] {
        (load::<u32>(self.page.frame())).to_le_bytes()
    }

    /// Hypercall `code` with `input` (a guest-physical address, or with `fast` the input
    /// itself) through the page: RCX = control, RDX = input, R8 = 0 (kvm-unit-tests'
    /// `do_hypercall`). Returns RAX, the hypercall result (status in bits 15:0).
    pub fn call(&self, code: u16, input: u64, fast: bool) -> Result<u64, HypercallError> {
        let filled = self.code();
        let hypercall = [[0x0f, 0x01, 0xc1, 0xc3], [0x0f, 0x01, 0xd9, 0xc3]];
        if !hypercall.contains(&filled) {
            return Err(HypercallError::PageNotFilled(filled));
        }
        let control = u64::from(code) | if fast { HYPERCALL_FAST } else { 0 };
        let address = self.page.address();
        super::exceptions::catch_exception(|| {
            let result: u64;
            // SAFETY: the page holds the hypercall instruction and RET (just checked) and is
            // mapped executable; the call returns or faults (caught). The hypervisor writes
            // RAX (and for a memory output, memory the input names: none here); the C ABI's
            // registers are declared clobbered.
            unsafe {
                core::arch::asm!("call {address}", address = in(reg) address, in("rcx") control,
                    in("rdx") input, in("r8") 0u64, lateout("rax") result, clobber_abi("C"))
            };
            result
        })
        .map_err(HypercallError::Exception)
    }
}

impl Default for HypercallPage {
    fn default() -> Self {
        HypercallPage::new()
    }
}

impl Drop for HypercallPage {
    fn drop(&mut self) {
        // SAFETY: 0 gives the hypervisor no address; the frame is freed after this.
        let _ = unsafe { try_wrmsr_unrestricted(HV_X64_MSR_HYPERCALL, 0) };
    }
}

/// The input of HVCALL_POST_MESSAGE (`struct hv_input_post_message`) in a frame of the
/// runtime's, which the hypervisor only reads.
pub struct PostMessageInput {
    frame: u64,
}

impl PostMessageInput {
    /// A zeroed frame, or `None` when none is left.
    pub fn new() -> Option<PostMessageInput> {
        hypervisor_frame().map(|frame| PostMessageInput { frame })
    }

    /// The input's guest-physical address, the hypercall's input.
    pub fn address(&self) -> u64 {
        self.frame
    }

    /// ConnectionId, MessageType, PayloadSize and the first payload word.
    pub fn set(&self, connection: u32, message_type: u32, payload_size: u32, first_word: u64) {
        store(self.frame, connection);
        store(self.frame + 4, 0u32);
        store(self.frame + 8, message_type);
        store(self.frame + 12, payload_size);
        store(self.frame + 16, first_word);
        fence(Ordering::SeqCst);
    }

    /// The first payload word.
    pub fn first_word(&self) -> u64 {
        load(self.frame + 16)
    }
}

/// The I/O port of QEMU's `hyperv-testdev` control register.
pub const TEST_DEVICE_PORT: u16 = 0x3000;

/// A `hyperv-testdev` command (hw/misc/hyperv_testdev.c, `HV_TEST_DEV_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum TestDeviceCommand {
    /// Create a SINT route to a vCPU's SINT.
    SintRouteCreate = 1,
    /// Destroy it.
    SintRouteDestroy = 2,
    /// Raise the routed SINT.
    SintRouteSetSint = 3,
    /// Create a message connection.
    MessageConnectionCreate = 4,
    /// Destroy it.
    MessageConnectionDestroy = 5,
    /// Create an event connection.
    EventConnectionCreate = 6,
    /// Destroy it.
    EventConnectionDestroy = 7,
}

/// Sends `command` to `hyperv-testdev` (kvm-unit-tests' `synic_ctl`).
pub fn test_device(command: TestDeviceCommand, vp_index: u8, sint: u8, connection: u8) {
    out_u32(
        TEST_DEVICE_PORT,
        u32::from(connection) << 24 | (command as u32) << 16 | u32::from(vp_index) << 8 | u32::from(sint),
    );
}
