//! The guest's environment: `KEY=VALUE` lines that the runner passes as the initrd, as
//! kvm-unit-tests does (ACCEL, HOST_KERNEL, HOST_KVM_MODULE, ...). Tests use it to tell
//! known host defects apart precisely, e.g. to skip an instruction a host cannot emulate.

/// The most bytes of environment kept.
const CAPACITY: usize = 4096;

static ENVIRONMENT: spin::Once<heapless::Vec<u8, CAPACITY>> = spin::Once::new();

/// Keeps a copy of (the first [`CAPACITY`] bytes of) the environment the boot code found
/// (call once, early).
pub(crate) fn init(bytes: &[u8]) {
    ENVIRONMENT.call_once(|| {
        let mut text = heapless::Vec::new();
        // Cannot fail: the slice is cut to the capacity.
        let _ = text.extend_from_slice(&bytes[..bytes.len().min(CAPACITY)]);
        text
    });
}

/// The value of `key` in the environment, if the runner set it.
pub fn env(key: &str) -> Option<&'static str> {
    let text = core::str::from_utf8(ENVIRONMENT.get()?).ok()?;
    text.lines().find_map(|line| crate::args::value_of(line, key))
}

/// The host's KVM module (`kvm_intel`, `kvm_amd`, `kvm_pvm`) when the test runs under KVM.
pub fn kvm_module() -> Option<&'static str> {
    if env("ACCEL") == Some("kvm") {
        env("HOST_KVM_MODULE")
    } else {
        None
    }
}

/// Whether the test runs under `kvm_pvm`, a software KVM that emulates ring-0 guest code
/// with KVM's instruction emulator. That emulator lacks SSE, XGETBV/XSETBV and INT3: each of
/// them stops the VM with a "KVM internal error", so tests skip them there, saying why.
pub fn instruction_emulating_kvm() -> bool {
    kvm_module() == Some("kvm_pvm")
}
