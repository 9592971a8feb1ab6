//! hypercall: kvm-unit-tests' hypercall test. Under KVM, VMCALL and VMMCALL both reach the
//! hypervisor whatever the host's vendor (KVM rewrites the other vendor's instruction to its
//! own): an unknown hypercall number returns -KVM_ENOSYS in RAX, KVM_HC_VAPIC_POLL_IRQ returns
//! 0, and a hypercall in the last three bytes below the non-canonical hole completes, so that
//! the next fetch raises #GP(0) at 0x800000000000; from CPL 3 a hypercall returns -KVM_EPERM.
//! Without a hypervisor's guest mode (QEMU's
//! TCG) both instructions raise #UD at their own address.
//!
//! This project's kvm_pvm never completes either instruction: the vCPU re-enters it forever
//! (RIP stays on it, RAX unchanged). The hypercalls are skipped there unless the argument
//! `force` asks for them (the reproducer entry `reproduce-hypercall`).
#![no_std]
#![no_main]

use vmunit::arch::instructions::{
    HypercallInstruction, NON_CANONICAL_START, call_hypercall, kvm, store_hypercall, try_hypercall_in_page,
    try_run_at_canonical_edge,
};
use vmunit::arch::run_in_user_mode;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Exception, Vector, prefix, report, report_info, report_skip, report_summary};

vmunit::main!(main);

/// An unknown hypercall number, kvm-unit-tests' -1.
const UNKNOWN: u64 = u64::MAX;

/// What the instructions must do where the test runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expectation {
    /// KVM handles them.
    Hypercall,
    /// No hypervisor guest mode: #UD.
    InvalidOpcode,
}

fn main(args: &[&str]) -> i32 {
    edge_control();
    let accel = vmunit::env("ACCEL");
    let expectation = match accel {
        Some("kvm") => Expectation::Hypercall,
        Some("tcg") => Expectation::InvalidOpcode,
        _ => {
            report_skip!("the accelerator is unknown (ACCEL={accel:?}): no expectation");
            return report_summary();
        }
    };
    if vmunit::environment::instruction_emulating_kvm() && !args.contains(&"force") {
        report_skip!(
            "VMCALL and VMMCALL not executed: this host's kvm_pvm re-enters them forever and the vCPU hangs; see reproduce-hypercall"
        );
        return report_summary();
    }
    let page = TestPage::new();
    page.map(Protection::READ_WRITE_EXECUTE);
    for instruction in [HypercallInstruction::Vmcall, HypercallInstruction::Vmmcall] {
        let _prefix = prefix(instruction.name());
        inline_hypercall(&page, instruction, expectation);
        edge_hypercall(instruction, expectation);
        user_hypercall(instruction, expectation);
    }
    report_summary()
}

/// Whether `result` is #UD at `address`.
fn invalid_opcode_at(result: Result<impl Sized, Exception>, address: u64) -> bool {
    matches!(result, Err(e) if e.vector == Vector::UD && e.rip == address)
}

/// Whether `result` is #GP(0) at the first non-canonical address.
fn fetch_fault_past_edge(result: Result<(), Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0 && e.rip == NON_CANONICAL_START)
}

/// Without any hypercall: three NOPs that end at the canonical edge run, and the next fetch
/// raises #GP(0) at the first non-canonical address (what a completed hypercall must do too).
fn edge_control() {
    let mut nops = [0x90u8; 3];
    let result = try_run_at_canonical_edge(&mut nops, 0);
    report!(
        fetch_fault_past_edge(result),
        "NOPs ending at the canonical edge run on into #GP(0) at {NON_CANONICAL_START:#x} (got {result:x?})"
    );
}

/// The instruction with an unknown number and with KVM_HC_VAPIC_POLL_IRQ, from a test page.
fn inline_hypercall(page: &TestPage, instruction: HypercallInstruction, expectation: Expectation) {
    let address = page.address();
    for number in [UNKNOWN, kvm::HC_VAPIC_POLL_IRQ] {
        let result = try_hypercall_in_page(page, 0, instruction, number);
        match expectation {
            Expectation::Hypercall if number == UNKNOWN => report!(
                result == Ok(kvm::failure(kvm::ENOSYS)),
                "hypercall {number:#x} (unknown) returns -KVM_ENOSYS (got {result:x?})"
            ),
            Expectation::Hypercall => report!(
                result == Ok(0),
                "hypercall {number:#x} (KVM_HC_VAPIC_POLL_IRQ) returns 0 (got {result:x?})"
            ),
            Expectation::InvalidOpcode => report!(
                invalid_opcode_at(result, address),
                "hypercall {number:#x} raises #UD at {address:#x}: no VMX or SVM guest mode (got {result:x?})"
            ),
        };
    }
    let bytes = page.try_read(0).map(|word| word.to_le_bytes());
    if matches!(bytes, Ok(bytes) if bytes[..3] != instruction.bytes()) {
        report_info!("the hypervisor rewrote the instruction: {bytes:x?}");
    }
}

/// The instruction in the last three bytes below the non-canonical hole.
fn edge_hypercall(instruction: HypercallInstruction, expectation: Expectation) {
    let mut code = instruction.bytes();
    let start = NON_CANONICAL_START - code.len() as u64;
    let result = try_run_at_canonical_edge(&mut code, UNKNOWN);
    match expectation {
        Expectation::Hypercall => report!(
            fetch_fault_past_edge(result),
            "a hypercall ending at the canonical edge completes, then the fetch at {NON_CANONICAL_START:#x} raises #GP(0) (got {result:x?})"
        ),
        Expectation::InvalidOpcode => report!(
            invalid_opcode_at(result, start),
            "a hypercall ending at the canonical edge raises #UD at {start:#x} (got {result:x?})"
        ),
    };
    if code != instruction.bytes() {
        report_info!("the hypervisor rewrote the instruction at the edge: {code:x?}");
    }
}

/// KVM_HC_VAPIC_POLL_IRQ from CPL 3: KVM refuses it with -KVM_EPERM.
fn user_hypercall(instruction: HypercallInstruction, expectation: Expectation) {
    let page = TestPage::new();
    page.map(Protection {
        write: true,
        execute: true,
        user: true,
    });
    store_hypercall(&page, 0, instruction);
    let address = page.address();
    let number = kvm::HC_VAPIC_POLL_IRQ;
    let result = run_in_user_mode(|| call_hypercall(&page, 0, number));
    match expectation {
        Expectation::Hypercall => report!(
            result == Ok(kvm::failure(kvm::EPERM)),
            "hypercall {number:#x} at CPL 3 returns -KVM_EPERM (got {result:x?})"
        ),
        Expectation::InvalidOpcode => report!(
            invalid_opcode_at(result, address),
            "hypercall {number:#x} at CPL 3 raises #UD at {address:#x} (got {result:x?})"
        ),
    };
}
