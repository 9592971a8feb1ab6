//! memory: kvm-unit-tests' memory test. CLFLUSH, CLFLUSHOPT, CLWB, SFENCE, LFENCE and MFENCE
//! run where CPUID advertises them and raise #UD where it does not (SDM Vol. 2); the three
//! cache-line instructions keep the line's contents and fault like a byte load: none on a
//! read-only page, #PF on an unmapped one, #GP(0) for a non-canonical address.
//!
//! QEMU's TCG never translates a cache-line instruction's address, so the last two faults
//! never come there: those checks report KFAIL when CPUID's hypervisor signature says TCG.
//!
//! PCOMMIT, which kvm-unit-tests once checked, was withdrawn before any CPU shipped it.
//!
//! Under KVM an instruction the CPU has runs natively whatever CPUID says, so the #UD side is
//! checked under TCG (the `memory-*` entries with CPU models lacking the features). Under this
//! project's kvm_pvm, CLWB stops the VM ("KVM internal error"): it is skipped there.
#![no_std]
#![no_main]

extern crate alloc;

use vmunit::arch::cpuid::{Feature, is_tcg};
use vmunit::arch::instructions::{MemoryInstruction, NON_CANONICAL_START, try_memory_instruction};
use vmunit::arch::page_fault;
use vmunit::catch::Attempt;
use vmunit::memory::{Protection, TestPage};
use vmunit::{Vector, known_failure, prefix, report, report_skip};

vmunit::main!(main);

fn main(_args: &[&str]) {
    let kvm = vmunit::env("ACCEL") == Some("kvm");
    for instruction in MemoryInstruction::ALL {
        let name = instruction.name();
        let _prefix = prefix(name);
        if instruction == MemoryInstruction::Clwb && vmunit::environment::instruction_emulating_kvm() {
            report_skip!(
                "CLWB not executed: this host's kvm_pvm stops the VM on it (KVM internal error); see the clwb reproducer"
            );
            continue;
        }
        let line = alloc::vec![0x5au8; 64];
        let Attempt { result, address } = try_memory_instruction(instruction, line.as_ptr());
        if instruction.advertised() {
            report!(
                result.is_ok(),
                "{name} runs where CPUID advertises it (got {result:x?})"
            );
            if instruction.has_operand() {
                report!(
                    line.iter().all(|&byte| byte == 0x5a),
                    "{name} keeps the line's contents"
                );
                check_faults(instruction);
            }
        } else if kvm {
            report_skip!(
                "{name} is not advertised, but under KVM the CPU runs it whatever CPUID says (got {result:x?})"
            );
        } else {
            report!(
                matches!(result, Err(e) if e.vector == Vector::UD && e.rip == address),
                "{name} raises #UD at its address {address:#x} where CPUID does not advertise it (got {result:x?})"
            );
        }
    }
    report!(
        !Feature::Pcommit.supported(),
        "CPUID.7.0:EBX[22] (PCOMMIT, withdrawn) is clear"
    );
}

/// A cache-line instruction faults like a byte load: not on a read-only page, #PF (not
/// present, read) on an unmapped one, #GP(0) at a non-canonical address.
fn check_faults(instruction: MemoryInstruction) {
    let name = instruction.name();
    let page = TestPage::new();
    let target = page.address() + 0x40;
    page.protect(Protection::READ_ONLY);
    let result = try_memory_instruction(instruction, target as *const u8).result;
    report!(
        result.is_ok(),
        "{name} of a read-only page runs (got {result:x?})"
    );
    page.unmap();
    // QEMU's TCG translates the cache-line instructions as no-ops that never translate
    // their address (gen_nop_modrm in target/i386/tcg), so they never fault there.
    let tcg = is_tcg();
    known_failure(
        tcg,
        "QEMU's TCG never translates a cache-line instruction's address (gen_nop_modrm, target/i386/tcg; reproduce-clflush-unmapped-tcg)",
        || check_address_faults(instruction, target),
    );
}

/// The faults of a byte load from `target`, in an unmapped page, and from a non-canonical
/// address.
fn check_address_faults(instruction: MemoryInstruction, target: u64) {
    let name = instruction.name();
    let Attempt { result, address } = try_memory_instruction(instruction, target as *const u8);
    report!(
        matches!(result, Err(e) if e.vector == Vector::PF && e.rip == address && e.address == target
            && e.error_code & (page_fault::PRESENT | page_fault::WRITE) == 0),
        "{name} of an unmapped page raises a read #PF for {target:#x} at {address:#x} (got {result:x?})"
    );
    let Attempt { result, address } = try_memory_instruction(instruction, NON_CANONICAL_START as *const u8);
    report!(
        matches!(result, Err(e) if e.vector == Vector::GP && e.error_code == 0 && e.rip == address),
        "{name} of non-canonical {NON_CANONICAL_START:#x} raises #GP(0) at {address:#x} (got {result:x?})"
    );
}
