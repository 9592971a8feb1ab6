//! idt_test: exceptions through the runtime's IDT arrive with their vector, error code, the
//! faulting instruction's own RIP, and RF set in the pushed RFLAGS (kvm-unit-tests'
//! x86/idt_test.c: #GP from MOV to CR4 with reserved bits, #UD from UD2).
#![no_std]
#![no_main]

use vmunit::arch::control::read_cr4;
use vmunit::arch::cpuid::is_tcg;
use vmunit::arch::instructions::try_ud2;
use vmunit::arch::probes::{try_load, try_mov_to_cr4};
use vmunit::catch::Attempt;
use vmunit::{Vector, prefix, report, report_skip};

vmunit::main!(main);

/// CR4 bit 31: reserved on every x86 processor, so setting it must raise #GP(0).
const CR4_RESERVED_BIT: u32 = 31;

/// A non-canonical address under 4-level paging (bit 47 set, bits 63:48 clear).
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

fn main(args: &[&str]) {
    // `force` runs the CR4 check under TCG too, where it hangs (reproduce-cr4-reserved-bit-tcg).
    if is_tcg() && !args.contains(&"force") {
        report_skip!(
            "#GP of MOV to CR4 with reserved bit {CR4_RESERVED_BIT}: QEMU 10.0's TCG hangs the vCPU there: helper_write_crN (target/i386/tcg/system/misc_helper.c) answers a cr4_reserved_bits() hit with cpu_vmexit(SVM_EXIT_ERR) outside SVM guest mode, and do_vmexit reloads the state it just saved, RIP on the MOV, with GIF clear (reproduce-cr4-reserved-bit-tcg)"
        );
    } else {
        general_protection_from_cr4();
    }
    general_protection_from_non_canonical_load();
    invalid_opcode();
}

/// Reports the four facts idt_test checks of one fault: its vector, its error code (when the
/// vector has one), the RIP of the faulting instruction, and RF in the pushed RFLAGS.
fn check_fault<T: core::fmt::Debug>(attempt: &Attempt<T>, vector: Vector, error_code: u64) {
    let Attempt { result, address } = attempt;
    let Err(exception) = result else {
        report!(false, "{} is raised (got {result:x?})", vector.name());
        return;
    };
    report!(
        exception.vector == vector,
        "the vector is {vector} (got {})",
        exception.vector
    );
    if vector.has_error_code() {
        report!(
            exception.error_code == error_code,
            "the error code is {error_code:#x} (got {:#x})",
            exception.error_code
        );
    }
    report!(
        exception.rip == *address,
        "the pushed RIP is the faulting instruction's {address:#x} (got {:#x})",
        exception.rip
    );
    report!(
        exception.resume_flag(),
        "RF is set in the pushed RFLAGS (got {:#x})",
        exception.rflags
    );
}

/// kvm-unit-tests' `test_gp`: MOV to CR4 with a reserved bit. Only the reserved bit is added
/// to CR4's value (kvm-unit-tests loads 0xffffffff, which would also flip LA57, SMEP and
/// more, were a hypervisor to accept it).
fn general_protection_from_cr4() {
    let _prefix = prefix("#GP");
    let cr4 = read_cr4();
    let value = cr4 | 1 << CR4_RESERVED_BIT;
    let attempt = try_mov_to_cr4(value);
    let after = read_cr4();
    if after != cr4 {
        // The hypervisor took the reserved bit: put CR4 back before anything else runs.
        let _ = try_mov_to_cr4(cr4);
    }
    report!(
        after == cr4,
        "MOV to CR4 of {value:#x} (reserved bit {CR4_RESERVED_BIT}) leaves CR4 at {cr4:#x} (got {after:#x})"
    );
    check_fault(&attempt, Vector::GP, 0);
}

/// A second #GP(0), from a load at a non-canonical address: it runs on every host, TCG too.
fn general_protection_from_non_canonical_load() {
    let _prefix = prefix("#GP non-canonical");
    check_fault(&try_load(NON_CANONICAL), Vector::GP, 0);
}

/// kvm-unit-tests' `test_ud2`: UD2 raises #UD.
fn invalid_opcode() {
    let _prefix = prefix("#UD");
    check_fault(&try_ud2(), Vector::UD, 0);
}
