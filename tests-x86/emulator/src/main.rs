//! emulator: instructions whose memory operand is MMIO (kvm-unit-tests' emulator.c and
//! emulator64.c), so that the hypervisor's instruction emulator must run them: every ALU,
//! move, bit, shift and LOCK form compared with the same instruction on a register, string
//! instructions, stacks and branch targets in MMIO, page-crossing accesses, and the
//! emulator's exception paths. The MMIO is QEMU's `-device pc-testdev` region at 0xff000000.
#![no_std]
#![no_main]

extern crate alloc;

mod machine;

use alloc::vec::Vec;

use machine::{ARITHMETIC_FLAGS, CF, Case, State, StringState, ZF};
use vmunit::arch::control::{
    Cr0Flags, read_cr0, read_cr4, read_cr8, try_lmsw, try_write_cr0, try_write_cr4, write_cr8,
};
use vmunit::arch::cpuid::{Feature, Vendor, is_tcg, vendor};
use vmunit::arch::debug::{
    SsLoad, compatibility_ss_load_then_breakpointed_instruction, dr7, mov_ss_then_breakpointed_instruction,
    record_debug_exceptions, write_dr7,
};
use vmunit::arch::device::{self, Backing};
use vmunit::arch::exceptions::{selector, set_task_state_busy, task_state_busy};
use vmunit::arch::fpu::try_enable_sse;
use vmunit::arch::instructions::store_task_register;
use vmunit::arch::msr::{IA32_GS_BASE, try_wrmsr};
use vmunit::arch::run_in_user_mode;

use vmunit::arch::testdev::{IOMEM, IOMEM_SIZE};
use vmunit::arch::{Exception, Vector, page_fault};
use vmunit::catch::Attempt;
use vmunit::environment::instruction_emulating_kvm;
use vmunit::memory::{PAGE_SIZE, Protection};
use vmunit::{known_failure, prefix, report, report_skip, report_summary};

vmunit::main!(main);

/// pc-testdev's 32-bit data port.
const TESTDEV_PORT: u16 = 0xe0;

/// The test's own virtual window: a code page and a data page of RAM, two MMIO pages (the
/// first two of the region), an unmapped hole, and the region's third page read-only.
const WINDOW: u64 = device::WINDOW + 2 * PAGE_SIZE;
const CODE_PAGE: u64 = WINDOW - 2 * PAGE_SIZE;
const RAM_PAGE: u64 = WINDOW - PAGE_SIZE;
const MMIO_PAGE: u64 = WINDOW;
const MMIO_NEXT_PAGE: u64 = WINDOW + PAGE_SIZE;
const HOLE: u64 = WINDOW + 2 * PAGE_SIZE;
const READ_ONLY_PAGE: u64 = WINDOW + 3 * PAGE_SIZE;

/// Where the compared instruction forms find their memory operand.
const OPERAND: u64 = IOMEM + 0x800;

/// Inputs of the compared forms: (memory, RAX, RCX, RDX, flags). The first has RAX equal to
/// memory (CMPXCHG stores), the second not (CMPXCHG fails); counts in CL are 16, 0x80 (0
/// after masking), 1 and 63; some overflow the 8-bit DIV and IDIV (both forms raise #DE).
const OPERAND_SETS: [(u64, u64, u64, u64, u64); 4] = [
    (
        0x0123_4567_89ab_cdef,
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
        0,
        0,
    ),
    (
        0x8000_0000_8000_8080,
        1,
        0x8000_0000_8000_8080,
        0x0f0f_0f0f_0f0f_0f0f,
        CF,
    ),
    (
        0xffff_ffff_ffff_fffe,
        0xffff_ffff_ffff_fffe,
        1,
        0x5555_5555_5555_5555,
        ARITHMETIC_FLAGS,
    ),
    (0x0000_0001_0000_8001, 0x8000_0000_0000_0000, 0x3f, 0, 0),
];

fn main(args: &[&str]) -> i32 {
    let kvm_pvm = instruction_emulating_kvm();
    let reproduce = vmunit::args::value(args, "reproduce");
    if !vmunit::arch::testdev::present() {
        report_skip!("no pc-testdev: run with -device pc-testdev");
        return report_summary();
    }
    map_window();
    if let Some(defect) = reproduce {
        reproduce_defect(defect);
        return report_summary();
    }
    region();
    compare_forms(kvm_pvm, None);
    explicit_values();
    bit_offsets();
    double_width_compare_exchange(kvm_pvm);
    strings();
    stacks_and_branches();
    page_crossing();
    exceptions(kvm_pvm);
    other_forms(kvm_pvm);
    control_registers();
    sse(kvm_pvm);
    report_summary()
}

/// Maps the window: RAM pages before the MMIO ones, the hole left unmapped.
fn map_window() {
    let page = |address: u64| (address - device::WINDOW) / PAGE_SIZE;
    device::map(page(CODE_PAGE), Backing::Ram, Protection::READ_WRITE_EXECUTE);
    device::map(page(RAM_PAGE), Backing::Ram, Protection::READ_WRITE);
    device::map(page(MMIO_PAGE), Backing::Device(IOMEM), Protection::READ_WRITE);
    device::map(
        page(MMIO_NEXT_PAGE),
        Backing::Device(IOMEM + PAGE_SIZE),
        Protection::READ_WRITE,
    );
    device::unmap(page(HOLE));
    device::map(
        page(READ_ONLY_PAGE),
        Backing::Device(IOMEM + 2 * PAGE_SIZE),
        Protection::READ_ONLY,
    );
}

/// The region is device memory of exactly pc-testdev's size, and the window aliases it.
fn region() {
    let _prefix = prefix("region");
    let pattern = 0x0123_4567_89ab_cdef;
    machine::write64(IOMEM, pattern);
    let first = machine::read64(IOMEM);
    report!(
        first == pattern,
        "the first word at {IOMEM:#x} reads back {pattern:#x} (got {first:#x})"
    );
    let last_address = IOMEM + IOMEM_SIZE - 8;
    machine::write64(last_address, !pattern);
    let last = machine::read64(last_address);
    report!(
        last == !pattern,
        "the last word at {last_address:#x} reads back {:#x} (got {last:#x})",
        !pattern
    );
    let beyond = IOMEM + IOMEM_SIZE;
    machine::write64(beyond, pattern);
    let unassigned = machine::read64(beyond);
    report!(
        unassigned == 0,
        "past the 64 KiB region ({beyond:#x}) nothing answers: a write is dropped and reads give 0, so this is a device region, not RAM (got {unassigned:#x})"
    );
    let alias = machine::read64(MMIO_PAGE);
    report!(
        alias == pattern,
        "the window's first page aliases {IOMEM:#x} (got {alias:#x})"
    );
}

/// `value` merged into `initial` at the operand's width.
fn merge(initial: u64, value: u64, width: u32) -> u64 {
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    (initial & !mask) | (value & mask)
}

/// What a form produced: the memory word and registers (flags reduced to the defined
/// ones), or the exception's vector.
type Outcome = Result<(u64, State), Vector>;

/// Runs `run` under `catch_exception` when `case` may fault (catching costs a lot of time
/// under a software KVM, so the other forms run under their family's one catch).
fn outcome(case: &Case, run: impl FnOnce() -> (u64, State)) -> Outcome {
    let reduce = |(word, state): (u64, State)| {
        (
            word,
            State {
                flags: state.flags & case.defined,
                ..state
            },
        )
    };
    if case.faults {
        vmunit::arch::catch_exception(run)
            .map(reduce)
            .map_err(|exception| exception.vector)
    } else {
        Ok(reduce(run()))
    }
}

fn outcome_of_memory(case: &Case, set: (u64, u64, u64, u64, u64)) -> Outcome {
    let (memory, rax, rcx, rdx, flags) = set;
    let state = State { rax, rcx, rdx, flags };
    outcome(case, || {
        machine::run_memory_form(case.memory, OPERAND, memory, state)
    })
}

fn outcome_of_register(case: &Case, set: (u64, u64, u64, u64, u64)) -> Outcome {
    let (memory, rax, rcx, rdx, flags) = set;
    let state = State { rax, rcx, rdx, flags };
    outcome(case, || {
        let (value, state) = (case.register)(memory, state);
        (merge(memory, value, case.width), state)
    })
}

/// The first input set for which `case`'s MMIO form differs from its register form.
fn first_mismatch(case: &Case) -> Option<(usize, Outcome, Outcome)> {
    OPERAND_SETS.iter().enumerate().find_map(|(index, &set)| {
        let got = outcome_of_memory(case, set);
        let expected = outcome_of_register(case, set);
        (got != expected).then_some((index, got, expected))
    })
}

/// Every form in `machine::cases()`: the MMIO form must leave memory, RAX, RCX, RDX and the
/// defined flags as the register form leaves its register and the others, for each input
/// set. One report per family (the sizes of one instruction form).
fn compare_forms(kvm_pvm: bool, only: Option<&str>) {
    let _prefix = prefix("MMIO vs register");
    let cases = machine::cases();
    let mut start = 0;
    while start < cases.len() {
        let family = cases[start].family;
        let end = start
            + cases[start..]
                .iter()
                .take_while(|case| case.family == family)
                .count();
        let members = &cases[start..end];
        start = end;
        if only.is_some_and(|only| only != family) {
            continue;
        }
        if let Some(feature) = members[0].feature
            && !feature.supported()
        {
            report_skip!("{family}: {} is clear", feature.bit());
            continue;
        }
        if kvm_pvm && let Some((_, reason)) = KVM_PVM_STOPS.iter().find(|(name, _)| *name == family) {
            report_skip!("{family}: {reason}");
            continue;
        }
        let widths: Vec<u32> = members.iter().map(|case| case.width).collect();
        let mismatch = vmunit::arch::catch_exception(|| {
            members
                .iter()
                .find_map(|case| first_mismatch(case).map(|mismatch| (case.name, mismatch)))
        });
        let details = match mismatch {
            Ok(None) => alloc::string::String::new(),
            Ok(Some((name, (set, got, expected)))) => {
                alloc::format!(" ({name}, set {set}: got {got:x?}, expected {expected:x?})")
            }
            Err(exception) => alloc::format!(" (unexpected {exception})"),
        };
        let known = KVM_PVM_DEFECTS
            .iter()
            .find(|(name, _)| *name == family)
            .map(|(_, reason)| *reason);
        known_failure(kvm_pvm && known.is_some(), known.unwrap_or(""), || {
            report!(
                details.is_empty(),
                "{family} {widths:?}: memory, registers, flags as on a register{details}"
            )
        });
    }
}

/// `reproduce=<defect>`: one kvm_pvm emulator defect's check on its own, with no knowledge of
/// the host (the `reproduce-emulator-*` entries): movbe, popcnt, cmpxchg16b, movbe-register,
/// lea-register, sgdt; and QEMU TCG's mmx-mf and noncanonical-branch.
fn reproduce_defect(defect: &str) {
    match defect {
        "movbe" => compare_forms(false, Some("MOVBE r32, m32")),
        "popcnt" => compare_forms(false, Some("POPCNT r64, m64")),
        "cmpxchg16b" => double_width_compare_exchange(false),
        "movbe-register" => {
            let Attempt { result, address: rip } = machine::try_movbe_register();
            report!(
                matches!(result, Err(Exception { vector: Vector::UD, rip: at, .. }) if at == rip),
                "MOVBE with a register operand raises #UD (got {result:x?})"
            );
        }
        "lea-register" => {
            let Attempt { result, address: rip } = machine::try_lea_register();
            report!(
                matches!(result, Err(Exception { vector: Vector::UD, rip: at, .. }) if at == rip),
                "LEA with a register source raises #UD (got {result:x?})"
            );
        }
        "mmx-mf" => {
            let (cr0, cr4) = (read_cr0(), read_cr4());
            let enabled = try_enable_sse();
            report!(
                enabled.is_ok(),
                "the FPU and SSE can be enabled (got {enabled:x?})"
            );
            mmx_pending_x87_exception(cr0, false);
            let _ = try_write_cr4(cr4).and_then(|()| try_write_cr0(cr0));
        }
        "noncanonical-branch" => noncanonical_branches(false),
        "sgdt" => {
            let address = MMIO_PAGE + 0x70;
            machine::store_gdtr_to(address);
            let (limit, _) = vmunit::arch::instructions::store_gdtr();
            let stored = machine::read64(address) & 0xffff;
            report!(
                stored == u64::from(limit),
                "SGDT to MMIO completes and stores the limit {limit:#x} (got {stored:#x})"
            );
        }
        other => {
            report!(false, "reproduce={other}: no such defect check");
        }
    }
}

/// QEMU's TCG checks canonical form only at the access.
const TCG_NONCANONICAL_BRANCH: &str = "QEMU's TCG takes a branch to a non-canonical target and \
     faults on the fetch, with RIP the target: the canonical check is in get_physical_address \
     (target/i386/tcg/system/excp_helper.c), reached only by the fetch; the branch's RIP \
     update checks nothing (reproduce-emulator-noncanonical-branch-tcg)";

/// A near branch to a non-canonical target raises #GP(0) on the branch itself (SDM Vol. 2,
/// JMP and CALL: "#GP(0) If the target offset is non-canonical"), before RIP changes. `known`:
/// the host is QEMU's TCG, which faults at the target.
fn noncanonical_branches(known: bool) {
    machine::write64(MMIO_PAGE + 0x30, 0x1111_1111_1111_1111);
    for (name, Attempt { result, address: rip }) in [
        ("JMP m64", machine::try_jump_through(MMIO_PAGE + 0x30)),
        ("CALL m64", machine::try_call_through(MMIO_PAGE + 0x30)),
    ] {
        report!(
            matches!(
                result,
                Err(Exception {
                    vector: Vector::GP,
                    error_code: 0,
                    ..
                })
            ),
            "{name} through an MMIO pointer to a non-canonical address raises #GP(0) (got {result:x?})"
        );
        known_failure(known, TCG_NONCANONICAL_BRANCH, || {
            report!(
                matches!(result, Err(Exception { rip: at, .. }) if at == rip),
                "{name} to a non-canonical address faults at the branch, RIP {rip:#x} (got {result:x?})"
            )
        });
    }
}

/// Forms whose MMIO operand stops a VM under kvm_pvm ("KVM internal error ... emulation
/// failure": its instruction emulator lacks them), with the reason the test skips them.
const KVM_PVM_STOPS: [(&str, &str); 1] = [(
    "POPCNT r64, m64",
    "kvm_pvm's instruction emulator has no POPCNT: on MMIO it stops the VM (\"KVM internal error ... emulation failure\"; reproduce-emulator-popcnt)",
)];

/// Forms that kvm_pvm's instruction emulator gets wrong on MMIO, with the defect.
const KVM_PVM_DEFECTS: [(&str, &str); 2] = [
    (
        "MOVBE r32, m32",
        "kvm_pvm raises #UD for MOVBE on MMIO though CPUID.1:ECX[22] advertises MOVBE (reproduce-emulator-movbe)",
    ),
    (
        "MOVBE m64, r64",
        "kvm_pvm raises #UD for MOVBE on MMIO though CPUID.1:ECX[22] advertises MOVBE (reproduce-emulator-movbe)",
    ),
];

/// kvm-unit-tests' fixed values for XCHG, XADD, CMPXCHG and the simple ALU chain.
fn explicit_values() {
    let _prefix = prefix("values");
    let memory = OPERAND;
    let cases = machine::cases();
    let find = |name: &str| {
        cases
            .iter()
            .find(|case| case.name == name)
            .copied()
            .expect("a known form")
    };
    let run = |name: &str, initial: u64, rax: u64, rcx: u64| {
        let state = State {
            rax,
            rcx,
            rdx: 0,
            flags: 0,
        };
        vmunit::arch::catch_exception(|| machine::run_memory_form(find(name).memory, memory, initial, state))
    };
    let xchg = run("XCHG m8, r8", 0x0123_4567_89ab_cdef, 0, 0xfedc_ba98_7654_3210);
    report!(
        matches!(
            xchg,
            Ok((
                0x0123_4567_89ab_cd10,
                State {
                    rcx: 0xfedc_ba98_7654_32ef,
                    ..
                }
            ))
        ),
        "XCHG m8, r8 swaps only the low bytes (got {xchg:x?})"
    );
    let xchg = run("XCHG m32, r32", 0x0123_4567_89ab_cdef, 0, 0xfedc_ba98_7654_3210);
    report!(
        matches!(xchg, Ok((0x0123_4567_7654_3210, State { rcx: 0x89ab_cdef, .. }))),
        "XCHG m32, r32 swaps the low dwords and clears the register's bits 63:32 (got {xchg:x?})"
    );
    let xadd = run("XADD m64, r64", 0x0123_4567_89ab_cdef, 0, 0xfedc_ba98_7654_3210);
    report!(
        matches!(
            xadd,
            Ok((
                u64::MAX,
                State {
                    rcx: 0x0123_4567_89ab_cdef,
                    ..
                }
            ))
        ),
        "XADD m64, r64 stores the sum and returns the old memory (got {xadd:x?})"
    );
    let success = run("CMPXCHG m32, r32", 0x1111_1111_0000_0005, 5, 9);
    report!(
        matches!(success, Ok((0x1111_1111_0000_0009, State { rax: 5, flags, .. })) if flags & ZF != 0),
        "CMPXCHG m32 with EAX equal to memory stores the source and sets ZF (got {success:x?})"
    );
    let failure = run(
        "CMPXCHG m32, r32",
        0x1111_1111_0000_0005,
        0xffff_ffff_0000_0007,
        9,
    );
    report!(
        matches!(failure, Ok((0x1111_1111_0000_0005, State { rax: 5, flags, .. })) if flags & ZF == 0),
        "CMPXCHG m32 with a different EAX leaves memory, loads it into RAX (bits 63:32 cleared) and clears ZF (got {failure:x?})"
    );
    // kvm-unit-tests' test_simplealu chain: 0x1234 OR 0x8001, ADD 2, XOR 0x1111, SUB 0x26,
    // ADC 0x100 with CF set, SBB 0 with CF set, AND 0xfe77.
    let mut value = 0x1234u64;
    let mut chain_ok = true;
    for (name, operand, carry, expected) in [
        ("OR m32, r32", 0x8001, 0, 0x9235),
        ("ADD m32, r32", 2, 0, 0x9237),
        ("XOR m32, r32", 0x1111, 0, 0x8326),
        ("SUB m32, r32", 0x26, 0, 0x8300),
        ("ADC m32, r32", 0x100, CF, 0x8401),
        ("SBB m32, r32", 0, CF, 0x8400),
        ("AND m32, r32", 0xfe77, 0, 0x8400),
    ] {
        let state = State {
            rax: 0,
            rcx: operand,
            rdx: 0,
            flags: carry,
        };
        let result = vmunit::arch::catch_exception(|| {
            machine::run_memory_form(find(name).memory, memory, value, state).0
        });
        chain_ok &= result == Ok(expected);
        value = result.unwrap_or(0);
    }
    report!(
        chain_ok,
        "OR, ADD, XOR, SUB, ADC, SBB, AND on one MMIO dword give 0x8400 (got {value:#x})"
    );
}

/// BT, BTS, BTR, BTC with bit offsets beyond the operand address other bytes (bit-string
/// addressing with a register offset); an immediate offset is taken modulo the operand size.
fn bit_offsets() {
    let _prefix = prefix("bit offsets");
    let base = MMIO_PAGE + 0x100;
    let clear = || {
        for offset in (0..0x40).step_by(8) {
            machine::write64(base - 0x20 + offset, 0);
        }
    };
    let word = |offset: i64| machine::read64(base.wrapping_add_signed(offset));
    let bit = |form: machine::MemoryForm, offset: u64| {
        form(
            base,
            State {
                rax: 0,
                rcx: offset,
                rdx: 0,
                flags: 0,
            },
        )
        .flags
    };
    clear();
    bit(machine::BTS_REGISTER32, 66);
    report!(
        word(8) == 4 && word(0) == 0,
        "BTS m32, r32 with offset 66 sets bit 2 of the dword at +8 (got {:#x} at +8, {:#x} at +0)",
        word(8),
        word(0)
    );
    bit(machine::BTS_REGISTER64, u64::MAX);
    report!(
        word(-8) == 1 << 63,
        "BTS m64, r64 with offset -1 sets bit 63 of the qword at -8 (got {:#x})",
        word(-8)
    );
    bit(machine::BTC_REGISTER16, 33);
    report!(
        word(0) == 2 << 32,
        "BTC m16, r16 with offset 33 flips bit 1 of the word at +4 (got {:#x})",
        word(0)
    );
    let set = bit(machine::BT_REGISTER32, 66) & CF;
    let clear_bit = bit(machine::BT_REGISTER32, 65) & CF;
    report!(
        set != 0 && clear_bit == 0,
        "BT m32, r32 with offsets 66 and 65 reads bits 2 and 1 of the dword at +8 (CF {set}, {clear_bit})"
    );
    let was_set = bit(machine::BTR_REGISTER64, 66) & CF;
    report!(
        word(8) == 0 && was_set != 0,
        "BTR m64, r64 with offset 66 clears bit 2 of the qword at +8 (got {:#x}, CF {was_set})",
        word(8)
    );
    clear();
    bit(machine::BTS_IMMEDIATE32, 0);
    report!(
        word(0) == 1 << 1 && word(8) == 0,
        "BTS m32, 33 sets bit 1 of the operand itself: an immediate offset is taken modulo 32 (got {:#x})",
        word(0)
    );
    bit(machine::BTC_IMMEDIATE64, 0);
    report!(
        word(0) == (1 << 1) | (1 << 2),
        "BTC m64, 66 flips bit 2 of the operand itself (got {:#x})",
        word(0)
    );
}

/// CMPXCHG8B and CMPXCHG16B on MMIO: success, failure, and #GP(0) for a misaligned 16-byte
/// operand.
fn double_width_compare_exchange(kvm_pvm: bool) {
    let _prefix = prefix("CMPXCHG8B/16B");
    let address = MMIO_PAGE + 0x200;
    machine::write64(address, 0x1111_2222_3333_4444);
    let success = machine::try_compare_exchange_double(
        address,
        false,
        (0x1111_2222, 0x3333_4444),
        (0xaaaa_bbbb, 0xcccc_dddd),
    );
    let stored = machine::read64(address);
    report!(
        matches!(success, Ok((_, _, true))) && stored == 0xaaaa_bbbb_cccc_dddd,
        "CMPXCHG8B with EDX:EAX equal to memory stores ECX:EBX and sets ZF (got {success:x?}, memory {stored:#x})"
    );
    let failure = machine::try_compare_exchange_double(address, false, (0, 0), (0x5555_5555, 0x6666_6666));
    let kept = machine::read64(address);
    report!(
        matches!(failure, Ok((0xaaaa_bbbb, 0xcccc_dddd, false))) && kept == stored,
        "CMPXCHG8B with a different EDX:EAX loads memory into EDX:EAX, clears ZF and leaves memory (got {failure:x?}, memory {kept:#x})"
    );
    if !Feature::Cx16.supported() {
        report_skip!("CMPXCHG16B: CPUID.1:ECX[13] is clear");
        return;
    }
    if kvm_pvm {
        report_skip!(
            "CMPXCHG16B on MMIO: kvm_pvm's instruction emulator stops the VM on it (\"KVM internal error ... emulation failure\"; reproduce-emulator-cmpxchg16b)"
        );
        return;
    }
    let aligned = MMIO_PAGE + 0x210;
    machine::write64(aligned, 1);
    machine::write64(aligned + 8, 2);
    let success = machine::try_compare_exchange_double(aligned, true, (2, 1), (4, 3));
    let (low, high) = (machine::read64(aligned), machine::read64(aligned + 8));
    report!(
        matches!(success, Ok((_, _, true))) && (low, high) == (3, 4),
        "LOCK CMPXCHG16B with RDX:RAX equal to memory stores RCX:RBX and sets ZF (got {success:x?}, memory {high:#x}:{low:#x})"
    );
    let failure = machine::try_compare_exchange_double(aligned, true, (9, 9), (7, 7));
    let (low, high) = (machine::read64(aligned), machine::read64(aligned + 8));
    report!(
        matches!(failure, Ok((4, 3, false))) && (low, high) == (3, 4),
        "LOCK CMPXCHG16B with a different RDX:RAX loads memory into RDX:RAX, clears ZF and leaves memory (got {failure:x?}, memory {high:#x}:{low:#x})"
    );
    let misaligned = machine::try_compare_exchange_double(aligned + 8, true, (4, 3), (7, 7));
    report!(
        matches!(
            misaligned,
            Err(Exception {
                vector: Vector::GP,
                error_code: 0,
                ..
            })
        ),
        "LOCK CMPXCHG16B on a misaligned operand raises #GP(0) (got {misaligned:x?})"
    );
}

/// Fills `length` bytes at `address` with the pattern `seed + index`.
fn pattern(address: u64, length: u64, seed: u8) {
    for index in 0..length {
        machine::write8(address + index, seed.wrapping_add(index as u8));
    }
}

/// Whether the `length` bytes at `address` hold the pattern `seed + index`.
fn has_pattern(address: u64, length: u64, seed: u8) -> bool {
    (0..length).all(|index| machine::read8(address + index) == seed.wrapping_add(index as u8))
}

/// MOVS, STOS, LODS, CMPS, SCAS, INS and OUTS on MMIO, with REP, in both directions.
fn strings() {
    let _prefix = prefix("strings");
    let ram = RAM_PAGE + 0x100;
    let mmio = MMIO_PAGE + 0x300;
    // MOVS.
    pattern(ram, 61, 0x10);
    machine::fill(mmio - 8, 80, 0);
    let result = machine::try_run_string(machine::REP_MOVSB, ram, mmio + 3, 61, 0, false);
    report!(
        has_pattern(mmio + 3, 61, 0x10)
            && machine::read8(mmio + 2) == 0
            && machine::read8(mmio + 64) == 0
            && matches!(result, Ok(StringState { rcx: 0, rsi, rdi, .. }) if rsi == ram + 61 && rdi == mmio + 64),
        "REP MOVSB copies 61 bytes from RAM to MMIO, RSI/RDI advance by 61 and RCX reaches 0 (got {result:x?})"
    );
    machine::fill(ram + 0x200, 64, 0);
    let result = machine::try_run_string(machine::REP_MOVSQ, mmio, ram + 0x200, 8, 0, false);
    report!(
        (0..64).all(|index| machine::read8(ram + 0x200 + index) == machine::read8(mmio + index))
            && matches!(result, Ok(StringState { rcx: 0, rdi, .. }) if rdi == ram + 0x240),
        "REP MOVSQ copies 8 qwords from MMIO to RAM (got {result:x?})"
    );
    machine::fill(mmio + 0x100, 40, 0);
    let result = machine::try_run_string(machine::REP_MOVSD, ram + 16 + 12, mmio + 0x100 + 12, 4, 0, true);
    report!(
        has_pattern(mmio + 0x100, 16, 0x20)
            && machine::read8(mmio + 0x100 + 16) == 0
            && matches!(result, Ok(StringState { rcx: 0, rsi, rdi, .. }) if rsi == ram + 12 && rdi == mmio + 0x100 - 4),
        "REP MOVSD with DF set copies 4 dwords downwards from RAM to MMIO, RSI/RDI step back by 16 (got {result:x?})"
    );
    let crossing = MMIO_PAGE + PAGE_SIZE - 6;
    machine::fill(crossing - 2, 16, 0);
    let result = machine::try_run_string(machine::REP_MOVSW, ram, crossing, 6, 0, false);
    report!(
        has_pattern(crossing, 12, 0x10) && matches!(result, Ok(StringState { rcx: 0, .. })),
        "REP MOVSW from RAM copies 6 words across the boundary of two MMIO pages (got {result:x?})"
    );
    // STOS.
    machine::fill(mmio, 48, 0);
    let result = machine::try_run_string(machine::REP_STOSB, 0, mmio + 1, 13, 0xa5, false);
    report!(
        (1..14).all(|index| machine::read8(mmio + index) == 0xa5)
            && machine::read8(mmio) == 0
            && machine::read8(mmio + 14) == 0
            && matches!(result, Ok(StringState { rcx: 0, rdi, .. }) if rdi == mmio + 14),
        "REP STOSB stores AL 13 times into MMIO and no further (got {result:x?})"
    );
    let result = machine::try_run_string(machine::REP_STOSW, 0, mmio + 16, 3, 0x1234_beef, false);
    report!(
        (0..3).all(|index| machine::read64(mmio + 16) >> (16 * index) & 0xffff == 0xbeef)
            && machine::read8(mmio + 22) == 0
            && matches!(result, Ok(StringState { rcx: 0, .. })),
        "REP STOSW stores AX 3 times (got {:#x}, {result:x?})",
        machine::read64(mmio + 16)
    );
    let result = machine::try_run_string(machine::REP_STOSD, 0, mmio + 40, 3, 0x89ab_cdef, true);
    report!(
        machine::read64(mmio + 32) == 0x89ab_cdef_89ab_cdef
            && machine::read64(mmio + 40) & 0xffff_ffff == 0x89ab_cdef
            && matches!(result, Ok(StringState { rcx: 0, rdi, .. }) if rdi == mmio + 28),
        "REP STOSD with DF set stores EAX 3 times downwards, RDI ends 12 lower (got {result:x?})"
    );
    let result = machine::try_run_string(
        machine::REP_STOSQ,
        0,
        mmio + 0x80,
        4,
        0x0102_0304_0506_0708,
        false,
    );
    report!(
        (0..4).all(|index| machine::read64(mmio + 0x80 + 8 * index) == 0x0102_0304_0506_0708)
            && matches!(result, Ok(StringState { rcx: 0, .. })),
        "REP STOSQ stores RAX 4 times (got {result:x?})"
    );
    // LODS.
    machine::write64(mmio, 0x8877_6655_4433_2211);
    let merge_value = 0xffff_ffff_ffff_ffff;
    let byte = machine::try_run_string(machine::LODSB, mmio, 0, 0, merge_value, false);
    let word = machine::try_run_string(machine::LODSW, mmio, 0, 0, merge_value, false);
    let dword = machine::try_run_string(machine::LODSD, mmio + 4, 0, 0, merge_value, true);
    report!(
        matches!(byte, Ok(StringState { rax: 0xffff_ffff_ffff_ff11, rsi, .. }) if rsi == mmio + 1),
        "LODSB loads AL and keeps RAX's other bytes (got {byte:x?})"
    );
    report!(
        matches!(word, Ok(StringState { rax: 0xffff_ffff_ffff_2211, rsi, .. }) if rsi == mmio + 2),
        "LODSW loads AX and keeps RAX's other bytes (got {word:x?})"
    );
    report!(
        matches!(dword, Ok(StringState { rax: 0x8877_6655, rsi, .. }) if rsi == mmio),
        "LODSD with DF set loads EAX, clears bits 63:32 and steps RSI back by 4 (got {dword:x?})"
    );
    let result = machine::try_run_string(machine::REP_LODSQ, mmio + 0x80, 0, 3, 0, false);
    report!(
        matches!(result, Ok(StringState { rax: 0x0102_0304_0506_0708, rcx: 0, rsi, .. }) if rsi == mmio + 0x98),
        "REP LODSQ loads 3 qwords, leaving the last in RAX (got {result:x?})"
    );
    // CMPS: MMIO against RAM holding the same pattern but one byte.
    pattern(mmio, 64, 0x40);
    pattern(ram, 64, 0x40);
    machine::write8(ram + 37, 0);
    let result = machine::try_run_string(machine::REPE_CMPSB, mmio, ram, 64, 0, false);
    report!(
        matches!(result, Ok(StringState { rcx: 26, rsi, rdi, flags, .. }) if rsi == mmio + 38 && rdi == ram + 38 && flags & ZF == 0 && flags & CF == 0),
        "REPE CMPSB stops after the differing byte 37 with ZF clear, CF clear (0x65 > 0), RCX 26 (got {result:x?})"
    );
    let result = machine::try_run_string(machine::REPE_CMPSQ, mmio, ram, 4, 0, false);
    report!(
        matches!(result, Ok(StringState { rcx: 0, flags, .. }) if flags & ZF != 0),
        "REPE CMPSQ over 4 equal qwords ends with RCX 0 and ZF set (got {result:x?})"
    );
    let result = machine::try_run_string(machine::REPE_CMPSD, mmio + 60, ram + 60, 16, 0, true);
    report!(
        matches!(result, Ok(StringState { rcx: 9, rsi, flags, .. }) if rsi == mmio + 32 && flags & ZF == 0),
        "REPE CMPSD with DF set walks down from dword 15 and stops after dword 9 (the difference): 7 steps, RCX 9 (got {result:x?})"
    );
    // SCAS.
    let result = machine::try_run_string(machine::REPNE_SCASB, 0, mmio, 64, 0x40 + 21, false);
    report!(
        matches!(result, Ok(StringState { rcx: 42, rdi, flags, .. }) if rdi == mmio + 22 && flags & ZF != 0),
        "REPNE SCASB finds AL at byte 21 of MMIO: RDI past it, RCX 42, ZF set (got {result:x?})"
    );
    let result = machine::try_run_string(machine::SCASW, 0, mmio, 0, 0xffff_0000_0000_4140, false);
    report!(
        matches!(result, Ok(StringState { rdi, flags, .. }) if rdi == mmio + 2 && flags & ZF != 0),
        "SCASW compares AX alone with MMIO (got {result:x?})"
    );
    let result = machine::try_run_string(machine::REPE_SCASQ, 0, mmio, 8, 0x4746_4544_4342_4140, false);
    report!(
        matches!(result, Ok(StringState { rcx: 6, rdi, flags, .. }) if rdi == mmio + 16 && flags & ZF == 0),
        "REPE SCASQ stops at the second qword, which differs from RAX (got {result:x?})"
    );
    // INS and OUTS between the test device's port and MMIO (kvm-unit-tests' string_io_mmio).
    machine::out32(TESTDEV_PORT, 0x99);
    let start = MMIO_PAGE + PAGE_SIZE - 64;
    machine::fill(start, 128, 0);
    let result = machine::try_run_string(machine::REP_INSB, 0, start, 128, 0, false);
    report!(
        (0..128).all(|index| machine::read8(start + index) == 0x99)
            && matches!(result, Ok(StringState { rcx: 0, .. })),
        "REP INSB writes 128 port bytes into MMIO across a page boundary (got {result:x?})"
    );
    pattern(mmio, 16, 0x61);
    let result = machine::try_run_string(machine::REP_OUTSB, mmio, 0, 16, 0, false);
    let last = machine::in8(TESTDEV_PORT);
    report!(
        last == 0x70 && matches!(result, Ok(StringState { rcx: 0, .. })),
        "REP OUTSB sends 16 MMIO bytes, the port keeps the last (got {last:#x})"
    );
    let result = machine::try_run_string(machine::REP_OUTSB, mmio + 15, 0, 16, 0, true);
    let first = machine::in8(TESTDEV_PORT);
    report!(
        first == 0x61 && matches!(result, Ok(StringState { rcx: 0, .. })),
        "REP OUTSB with DF set sends them downwards, the port keeps the first (got {first:#x})"
    );
}

/// PUSH and POP with the stack or the operand in MMIO, CALL/RET, ENTER/LEAVE on an MMIO
/// stack, and JMP, CALL and far JMP through pointers in MMIO.
fn stacks_and_branches() {
    let _prefix = prefix("stack and branches");
    let top = MMIO_PAGE + 0xf00;
    machine::fill(top - 0x40, 0x48, 0x55);
    let source = 0x0123_4567_89ab_cdefu64;
    let mut destination = 0u64;
    let (after_push, popped, after_pop) = machine::push_pop_on(top, &source, &mut destination);
    let pushed = [
        machine::read64(top - 8),
        machine::read64(top - 16),
        machine::read64(top - 24),
        machine::read64(top - 32),
    ];
    report!(
        after_push == top - 32,
        "four PUSHes move RSP down by 32 on the MMIO stack (got {:#x})",
        top - after_push
    );
    report!(
        pushed[0] == (-7i64) as u64,
        "PUSH imm8 stores it sign-extended to MMIO (got {:#x})",
        pushed[0]
    );
    report!(
        pushed[1] == 0xffff_ffff_ffff_ffef,
        "PUSH r64 stores the register to MMIO (got {:#x})",
        pushed[1]
    );
    report!(
        pushed[2] == source,
        "PUSH m64 stores the word from RAM to MMIO (got {:#x})",
        pushed[2]
    );
    report!(
        pushed[3] == (-7_070_707i64) as u64,
        "PUSH imm32 stores it sign-extended (got {:#x})",
        pushed[3]
    );
    report!(
        popped == (-7_070_707i64) as u64 && after_pop == top - 16,
        "POP r64 reads the MMIO stack (got {popped:#x})"
    );
    report!(
        destination == source,
        "POP m64 moves a word from the MMIO stack to RAM (got {destination:#x})"
    );
    machine::write64(MMIO_PAGE + 0x10, 0x1122_3344_5566_7788);
    machine::write64(MMIO_PAGE + 0x18, 0);
    machine::push_pop_memory(MMIO_PAGE + 0x10, MMIO_PAGE + 0x18);
    let copied = machine::read64(MMIO_PAGE + 0x18);
    report!(
        copied == 0x1122_3344_5566_7788,
        "PUSH m64 and POP m64 copy a word between MMIO addresses (got {copied:#x})"
    );
    let (value, balanced) = machine::push16_pop16(MMIO_PAGE + 0x10);
    report!(
        value == 0x7788 && balanced,
        "PUSH m16 and POP r16 move 2 bytes and 2 bytes of RSP (got {value:#x}, RSP back: {balanced})"
    );
    let (ran, rsp_enter, rbp_enter, saved, rsp_leave, rbp_leave) = machine::call_enter_leave_on(top);
    report!(
        ran,
        "CALL and RET with the return address on the MMIO stack come back"
    );
    report!(
        rsp_enter == (-0x20i64) as u64 && rbp_enter == (-8i64) as u64 && saved == 0x5a5a_5a5a,
        "ENTER 0x18, 0 pushes RBP to MMIO and reserves 0x18 bytes (RSP {rsp_enter:#x}, RBP {rbp_enter:#x} from the top, saved {saved:#x})"
    );
    report!(
        rsp_leave == 0 && rbp_leave == 0x5a5a_5a5a,
        "LEAVE restores RSP and RBP from the MMIO stack (RSP {rsp_leave:#x} from the top, RBP {rbp_leave:#x})"
    );
    let (jumped, called) = machine::indirect_branches(MMIO_PAGE + 0x20);
    report!(jumped, "JMP m64 through a pointer in MMIO reaches its target");
    report!(
        called,
        "CALL m64 through a pointer in MMIO reaches its target and returns"
    );
    let (reached, cs) = machine::far_jump(MMIO_PAGE + 0x28);
    report!(
        reached && cs == 8,
        "far JMP m16:32 through a pointer in MMIO (stored with MOV m16, CS) reaches its target (CS {cs:#x})"
    );
}

/// Accesses that cross from RAM into MMIO and from one MMIO page into the next.
fn page_crossing() {
    let _prefix = prefix("page crossing");
    let split = MMIO_PAGE - 4;
    machine::write64(RAM_PAGE + PAGE_SIZE - 8, 0);
    machine::write64(MMIO_PAGE, 0);
    machine::write64(split, 0x8877_6655_4433_2211);
    let (ram, mmio) = (
        machine::read64(RAM_PAGE + PAGE_SIZE - 8),
        machine::read64(MMIO_PAGE),
    );
    report!(
        ram == 0x4433_2211_0000_0000 && mmio == 0x8877_6655,
        "an 8-byte store split between RAM and MMIO writes both halves (got RAM {ram:#x}, MMIO {mmio:#x})"
    );
    let loaded = machine::read64(split);
    report!(
        loaded == 0x8877_6655_4433_2211,
        "an 8-byte load split between RAM and MMIO reads both halves (got {loaded:#x})"
    );
    let crossing = MMIO_NEXT_PAGE - 1;
    machine::write8(crossing, 0x99);
    machine::write8(crossing + 1, 0x77);
    let word = machine::read64(crossing) & 0xffff;
    report!(
        word == 0x7799,
        "a load across two MMIO pages reads both (got {word:#x})"
    );
    machine::write64(crossing - 3, 0x0102_0304_0506_0708);
    let through_identity = machine::read64(IOMEM + PAGE_SIZE - 4);
    report!(
        through_identity == 0x0102_0304_0506_0708,
        "a store across two MMIO pages writes both, as the identity map shows (got {through_identity:#x})"
    );
}

/// The emulator's exception paths.
fn exceptions(kvm_pvm: bool) {
    let _prefix = prefix("exceptions");
    // A store split between an MMIO page and an unmapped one faults before writing anything.
    let split = HOLE - 4;
    machine::write64(HOLE - 8, 0x1111_1111_1111_1111);
    let Attempt { result, address: rip } = machine::try_store(split, 0x2222_2222_2222_2222);
    let after = machine::read64(HOLE - 8);
    report!(
        matches!(result, Err(Exception { vector: Vector::PF, error_code, address, rip: at, .. }) if address == HOLE && at == rip && error_code == page_fault::WRITE),
        "a store split between MMIO and an unmapped page raises #PF (write, not present) at the hole (got {result:x?})"
    );
    report!(
        after == 0x1111_1111_1111_1111,
        "the faulting split store leaves the MMIO half unwritten (got {after:#x})"
    );
    // REP STOS runs into the hole: the iterations before the fault complete.
    machine::write64(HOLE - 16, 0);
    machine::write64(HOLE - 8, 0);
    let Attempt { result, address: rip } = machine::try_rep_stosq(HOLE - 16, 4, 0x3333_3333_3333_3333);
    let written = (machine::read64(HOLE - 16), machine::read64(HOLE - 8));
    report!(
        matches!(result, Err(Exception { vector: Vector::PF, address, rip: at, .. }) if address == HOLE && at == rip),
        "REP STOSQ from MMIO into an unmapped page raises #PF at the hole (got {result:x?})"
    );
    report!(
        written == (0x3333_3333_3333_3333, 0x3333_3333_3333_3333),
        "the two REP STOSQ iterations before the fault are written to MMIO (got {written:x?})"
    );
    // A read-only mapping of MMIO.
    let before = machine::read64(IOMEM + 2 * PAGE_SIZE);
    let Attempt { result, address: rip } = machine::try_store32(READ_ONLY_PAGE, 0xdead_beef);
    let unchanged = machine::read64(IOMEM + 2 * PAGE_SIZE);
    report!(
        matches!(result, Err(Exception { vector: Vector::PF, error_code, address, rip: at, .. }) if address == READ_ONLY_PAGE && at == rip && error_code == page_fault::WRITE | page_fault::PRESENT),
        "a store to a read-only mapping of MMIO raises #PF (write, present) (got {result:x?})"
    );
    report!(
        unchanged == before,
        "the refused store leaves MMIO unchanged (got {unchanged:#x}, was {before:#x})"
    );
    let result = machine::try_load(READ_ONLY_PAGE).result;
    report!(
        result.is_ok(),
        "a load from the read-only mapping of MMIO works (got {result:x?})"
    );
    // Non-canonical addresses.
    let Attempt { result, address: rip } = machine::try_load(0x8000_0000_0000_0000 | IOMEM);
    report!(
        matches!(result, Err(Exception { vector: Vector::GP, error_code: 0, rip: at, .. }) if at == rip),
        "a load from a non-canonical address raises #GP(0) (got {result:x?})"
    );
    noncanonical_branches(is_tcg());
    // Invalid encodings.
    let Attempt { result, address: rip } = machine::try_lock_register_add();
    report!(
        matches!(result, Err(Exception { vector: Vector::UD, rip: at, .. }) if at == rip),
        "LOCK ADD with a register destination raises #UD (got {result:x?})"
    );
    machine::write64(MMIO_PAGE + 0x38, 0);
    let Attempt { result, address: rip } = machine::try_lock_move(MMIO_PAGE + 0x38);
    let untouched = machine::read64(MMIO_PAGE + 0x38);
    report!(
        matches!(result, Err(Exception { vector: Vector::UD, rip: at, .. }) if at == rip) && untouched == 0,
        "LOCK MOV to MMIO raises #UD and stores nothing (got {result:x?}, memory {untouched:#x})"
    );
    if kvm_pvm {
        report_skip!(
            "MOVBE with a register operand: under kvm_pvm it stops the VM (\"KVM internal error ... emulation failure\") instead of raising #UD (reproduce-emulator-movbe-register)"
        );
    } else if Feature::Movbe.supported() {
        let Attempt { result, address: rip } = machine::try_movbe_register();
        report!(
            matches!(result, Err(Exception { vector: Vector::UD, rip: at, .. }) if at == rip),
            "MOVBE with a register operand raises #UD (got {result:x?})"
        );
    } else {
        report_skip!("MOVBE with a register operand: CPUID.1:ECX[22] is clear");
    }
    if kvm_pvm {
        report_skip!(
            "LEA with a register source: under kvm_pvm it stops the VM (\"KVM internal error ... emulation failure\") instead of raising #UD (reproduce-emulator-lea-register)"
        );
    } else {
        let Attempt { result, address: rip } = machine::try_lea_register();
        report!(
            matches!(result, Err(Exception { vector: Vector::UD, rip: at, .. }) if at == rip),
            "LEA with a register source raises #UD (got {result:x?})"
        );
    }
    machine::write64(MMIO_PAGE + 0x40, 0);
    let Attempt { result, address: rip } = machine::try_divide_by_memory(MMIO_PAGE + 0x40, 0, 5);
    report!(
        matches!(result, Err(Exception { vector: Vector::DE, rip: at, .. }) if at == rip),
        "DIV by a zero qword in MMIO raises #DE (got {result:x?})"
    );
}

/// MOV with 64-bit absolute addresses, RIP-relative MMIO operands, SMSW/SGDT/MOV Sreg with
/// MMIO, and MOVNTI.
#[allow(unsafe_code)]
fn other_forms(kvm_pvm: bool) {
    let _prefix = prefix("other forms");
    let (wide, narrow) = machine::absolute_moves(0x0bad_cafe_dead_beef, 0x1111_1111_1111_1111);
    report!(
        wide == 0x0bad_cafe_dead_beef,
        "MOV moffs64, RAX then MOV RAX, moffs64 round-trip through MMIO (got {wide:#x})"
    );
    report!(
        narrow == 0x1111_1111_1111_115c,
        "MOV moffs8, AL then MOV AL, moffs8 load one byte and keep RAX's others (got {narrow:#x})"
    );
    let stored = machine::read64(machine::ABSOLUTE_ADDRESS);
    report!(
        stored == 0x0bad_cafe_dead_beef,
        "MOV moffs64, RAX stored to {:#x} (got {stored:#x})",
        machine::ABSOLUTE_ADDRESS
    );
    // RIP-relative: MOV byte [rip + disp], 1; MOV EAX, [rip + disp]; RET.
    let target = MMIO_PAGE + 0x50;
    machine::write64(target, 0);
    let mut code = Vec::new();
    let store_end = CODE_PAGE + 7;
    code.extend_from_slice(&[0xc6, 0x05]);
    code.extend_from_slice(&((target + 2).wrapping_sub(store_end) as u32).to_le_bytes());
    code.push(0x01);
    let load_end = CODE_PAGE + 13;
    code.extend_from_slice(&[0x8b, 0x05]);
    code.extend_from_slice(&(target.wrapping_sub(load_end) as u32).to_le_bytes());
    code.push(0xc3);
    machine::store_code(CODE_PAGE, &code);
    // SAFETY: the code just stored stores to and loads from the MMIO page, then returns.
    let loaded = unsafe { machine::call_code(CODE_PAGE) };
    let word = machine::read64(target);
    report!(
        word == 0x1_0000,
        "MOV m8, imm8 with a RIP-relative MMIO operand stores at the right address (got {word:#x})"
    );
    report!(
        loaded & 0xffff_ffff == 0x1_0000,
        "MOV r32, m32 with a RIP-relative MMIO operand loads it (got {loaded:#x})"
    );
    // SMSW and SGDT to MMIO.
    let smsw_address = MMIO_PAGE + 0x60;
    machine::fill(smsw_address, 32, 0xee);
    machine::store_machine_status_to(smsw_address);
    let machine_status = machine::read64(smsw_address);
    let cr0 = read_cr0();
    report!(
        machine_status == 0xeeee_eeee_eeee_0000 | (cr0 & 0xffff),
        "SMSW m16 stores CR0[15:0] to MMIO and nothing more (got {machine_status:#x}, CR0 {cr0:#x})"
    );
    if kvm_pvm {
        report_skip!(
            "SGDT to MMIO: under kvm_pvm the vCPU never gets past it (RIP stays at the SGDT until the timeout; reproduce-emulator-sgdt)"
        );
    } else {
        machine::store_gdtr_to(smsw_address + 16);
        let (limit, base) = vmunit::arch::instructions::store_gdtr();
        let stored_limit = machine::read64(smsw_address + 16) & 0xffff;
        let stored_base = machine::read64(smsw_address + 18);
        let tail = machine::read64(smsw_address + 24) >> 16;
        report!(
            stored_limit == u64::from(limit) && stored_base == base && tail == 0xeeee_eeee_eeee,
            "SGDT to MMIO stores the 2-byte limit and 8-byte base, 10 bytes (got {stored_limit:#x}, {stored_base:#x}; expected {limit:#x}, {base:#x})"
        );
    }
    // MOV FS, m16 and MOV m16, FS.
    let selector_address = MMIO_PAGE + 0x80;
    machine::write64(selector_address, 0x10);
    let result = machine::try_segment_moves(selector_address);
    let stored = machine::read64(selector_address);
    report!(
        result.is_ok() && stored == 0x0010_0010,
        "MOV FS, m16 loads a data selector from MMIO and MOV m16, FS stores it back (got {result:x?}, {stored:#x})"
    );
    machine::write64(MMIO_PAGE + 0x90, 0);
    machine::write64(MMIO_PAGE + 0x98, u64::MAX);
    machine::movnti(MMIO_PAGE + 0x90, 0x0123_4567_89ab_cdef);
    let (wide, narrow) = (
        machine::read64(MMIO_PAGE + 0x90),
        machine::read64(MMIO_PAGE + 0x98),
    );
    report!(
        wide == 0x0123_4567_89ab_cdef && narrow == 0xffff_ffff_89ab_cdef,
        "MOVNTI m64 and m32 store to MMIO (got {wide:#x}, {narrow:#x})"
    );
}

/// SSE and MMX loads and stores to MMIO, and #GP for a misaligned MOVAPS.
fn sse(kvm_pvm: bool) {
    let _prefix = prefix("SSE");
    if kvm_pvm {
        report_skip!(
            "SSE and MMX on MMIO: kvm_pvm stops the VM on SSE instructions (\"KVM internal error\")"
        );
        return;
    }
    let (cr0, cr4) = (read_cr0(), read_cr4());
    let enabled = try_enable_sse();
    report!(
        enabled.is_ok(),
        "SSE can be enabled (CR0.EM and TS clear, CR4.OSFXSR and OSXMMEXCPT set) (got {enabled:x?})"
    );
    let address = MMIO_PAGE + 0x400;
    let data: [u8; 16] = core::array::from_fn(|index| 0x30 + index as u8);
    let mut out = [[0u8; 16]; 3];
    machine::fill(address, 48, 0);
    machine::sse_moves(address, &data, &mut out);
    report!(
        has_pattern(address, 16, 0x30),
        "MOVDQU m128, XMM stores 16 bytes to MMIO"
    );
    report!(
        has_pattern(address + 16, 16, 0x30),
        "MOVUPS m128, XMM stores 16 bytes to MMIO"
    );
    report!(
        has_pattern(address + 32, 16, 0x30),
        "MOVAPD m128, XMM stores 16 bytes to aligned MMIO"
    );
    report!(
        out.iter().all(|loaded| *loaded == data),
        "MOVDQU, MOVUPS, MOVAPS XMM, m128 load 16 bytes from MMIO (got {out:x?})"
    );
    machine::write64(address + 0x40, 0);
    let mmx = machine::mmx_moves(address + 0x40, 0x0102_0304_0506_0708);
    let stored = machine::read64(address + 0x40);
    report!(
        stored == 0x0102_0304_0506_0708 && mmx == stored,
        "MMX MOVQ m64, MM0 stores to MMIO and MOVQ MM1, m64 loads it back (got {stored:#x}, {mmx:#x})"
    );
    let Attempt { result, address: rip } = machine::try_movaps_load(address + 8);
    report!(
        matches!(result, Err(Exception { vector: Vector::GP, error_code: 0, rip: at, .. }) if at == rip),
        "MOVAPS from misaligned MMIO raises #GP(0) (got {result:x?})"
    );
    sse_page_crossing();
    mmx_pending_x87_exception(cr0, is_tcg());
    let restored = try_write_cr4(cr4).and_then(|()| try_write_cr0(cr0));
    report!(restored.is_ok(), "CR0 and CR4 are restored (got {restored:x?})");
}

/// kvm-unit-tests' test_sse_exceptions, crossing pages: a MOVUPS store split across two mapped
/// MMIO pages stores all 16 bytes; split into the unmapped page after them, it raises #PF
/// (write, not present) for that second page, at the MOVUPS.
fn sse_page_crossing() {
    let data: [u8; 16] = core::array::from_fn(|index| 0x50 + index as u8);
    let crossing = MMIO_NEXT_PAGE - 8;
    machine::fill(crossing, 16, 0);
    let Attempt { result, .. } = machine::try_movups_store(crossing, &data);
    report!(
        result.is_ok() && has_pattern(crossing, 16, 0x50),
        "MOVUPS m128 across two MMIO pages at {crossing:#x} stores all 16 bytes (got {result:x?})"
    );
    let split = HOLE - 8;
    let Attempt { result, address } = machine::try_movups_store(split, &data);
    report!(
        matches!(result, Err(e) if e.vector == Vector::PF
            && e.error_code & (page_fault::PRESENT | page_fault::WRITE) == page_fault::WRITE
            && e.address == HOLE
            && e.rip == address),
        "MOVUPS m128 at {split:#x}, split into the unmapped page, raises #PF(write, not present) for {HOLE:#x} at {address:#x} (got {result:x?})"
    );
}

/// emulator64's test_mmx_movq_mf: an MMX MOVQ to MMIO with an unmasked x87 exception pending
/// raises #MF at the MOVQ (CR0.NE set for the check, as kvm-unit-tests runs). `known`: the
/// host is QEMU's TCG, which raises none.
fn mmx_pending_x87_exception(cr0: u64, known: bool) {
    let numeric_error = Cr0Flags::NUMERIC_ERROR.bits();
    let set = try_write_cr0(read_cr0() | numeric_error);
    let Attempt { result, address } = machine::try_mmx_store_with_pending_x87_exception(MMIO_PAGE + 0x500);
    let _ = try_write_cr0(read_cr0() & !numeric_error | cr0 & numeric_error);
    known_failure(
        known,
        "QEMU's TCG raises no #MF for an MMX instruction with an x87 exception pending: \
         its MMX prologue, helper_enter_mmx (target/i386/tcg/fpu_helper.c), never checks \
         FPUS_SE as helper_fwait does; FWAIT there raises #MF (reproduce-emulator-mmx-mf)",
        || {
            report!(
                set.is_ok() && matches!(result, Err(e) if e.vector == Vector::MF && e.rip == address),
                "MMX MOVQ m64, MM0 with an unmasked x87 exception pending (0.0 / 0.0) raises #MF at {address:#x} (got {result:x?})"
            );
        },
    );
}

/// kvm-unit-tests' test_smsw_reg, test_lmsw, test_ltr and emulator64's test_cr8: SMSW into a
/// register of each size, LMSW from a register and from MMIO (bits 3:0 of CR0 only, and never
/// clearing PE), LTR from MMIO, MOV to and from CR8.
fn control_registers() {
    let _prefix = prefix("control registers");
    let cr0 = read_cr0();
    let rax = 0x1234_5678_90ab_cdef;
    let [word, double, quad] = machine::store_machine_status_registers(rax);
    report!(
        word & 0xffff == cr0 & 0xffff && word >> 16 == rax >> 16,
        "SMSW AX stores CR0[15:0] and keeps RAX[63:16] (got {word:#x}, CR0 {cr0:#x})"
    );
    report!(
        double == cr0 & 0xffff_ffff,
        "SMSW EAX stores CR0[31:0], zero-extended (got {double:#x}, CR0 {cr0:#x})"
    );
    report!(quad == cr0, "SMSW RAX stores CR0 (got {quad:#x}, CR0 {cr0:#x})");

    // CR0.TS (bit 3) and EM (bit 2): nothing in this soft-float runtime uses x87 or SSE
    // while they are flipped here.
    let toggled = try_lmsw((cr0 ^ 8) as u16);
    let after = read_cr0();
    report!(
        toggled.is_ok() && cr0 ^ after == 8,
        "LMSW from a register flips CR0.TS alone: {cr0:#x} to {:#x} (got {toggled:x?}, CR0 {after:#x})",
        cr0 ^ 8
    );
    let status = MMIO_PAGE + 0x80;
    machine::write64(status, cr0 & 0xffff);
    let loaded = machine::try_load_machine_status_from(status);
    let after = read_cr0();
    report!(
        loaded.is_ok() && after == cr0,
        "LMSW from MMIO loads CR0[3:0] back: {cr0:#x} (got {loaded:x?}, CR0 {after:#x})"
    );
    let toggled = try_lmsw(((cr0 & !1) ^ 4) as u16);
    let after = read_cr0();
    report!(
        toggled.is_ok() && cr0 ^ after == 4 && after & 1 == 1,
        "LMSW with PE clear flips CR0.EM but cannot clear PE: {:#x} (got {toggled:x?}, CR0 {after:#x})",
        cr0 ^ 4
    );
    let restored = try_lmsw(cr0 as u16);
    report!(
        restored.is_ok() && read_cr0() == cr0,
        "LMSW restores CR0 {cr0:#x} (got {restored:x?}, CR0 {:#x})",
        read_cr0()
    );

    // kvm-unit-tests' test_ltr: LTR with its selector in MMIO, the TSS made available first.
    let task_register = store_task_register();
    let selector_address = MMIO_PAGE + 0x90;
    machine::write64(selector_address, u64::from(task_register));
    set_task_state_busy(false);
    let loaded = machine::try_load_task_register_from(selector_address);
    let busy = task_state_busy();
    set_task_state_busy(true);
    report!(
        loaded.is_ok() && store_task_register() == task_register && busy,
        "LTR m16 from MMIO loads TR {task_register:#x} and marks its TSS busy (got {loaded:x?}, TR {:#x}, busy {busy})",
        store_task_register()
    );

    iret_nullified_segment();
    mov_ss_code_breakpoint();

    let priority = read_cr8();
    write_cr8(3);
    let read = read_cr8();
    write_cr8(priority);
    report!(read == 3, "MOV CR8, 3 then MOV from CR8 reads 3 (got {read})");
}

/// The word emulator64's test_iret reads through GS at CPL 3.
static GS_TARGET: u64 = 0xdead_beef_dead_beef;
/// emulator64's GS base for test_iret: 4 MiB.
const GS_BASE_VALUE: u64 = 0x40_0000;

/// emulator64's test_iret: the IRET that enters CPL 3 nullifies GS (a DPL-0 data segment,
/// SDM Vol. 2A IRET: its selector becomes 0), but GS's base (IA32_GS_BASE) still applies to a
/// GS-relative load in 64-bit mode.
fn iret_nullified_segment() {
    machine::load_gs(selector::KERNEL_DATA);
    let based = try_wrmsr(IA32_GS_BASE, GS_BASE_VALUE);
    let offset = (&raw const GS_TARGET as u64).wrapping_sub(GS_BASE_VALUE);
    let result = run_in_user_mode(|| machine::read_gs_relative(offset));
    machine::load_gs(0);
    let _ = try_wrmsr(IA32_GS_BASE, 0);
    report!(
        based.is_ok() && matches!(result, Ok((0, value)) if value == GS_TARGET),
        "IRET to CPL 3 nullifies GS ({:#x} before) and keeps its base: GS:{offset:#x} reads {GS_TARGET:#x} at CPL 3 (got {result:x?}, as (GS, value))",
        selector::KERNEL_DATA
    );
}

/// kvm-unit-tests' test_mov_pop_ss_code_db ("no fep"; POP SS does not exist in 64-bit mode):
/// an instruction breakpoint on the instruction after MOV SS is inhibited by the MOV SS
/// shadow on Intel CPUs and delivered on AMD ones; the instruction runs either way.
fn mov_ss_code_breakpoint() {
    let intel = vendor() == Vendor::Intel;
    write_dr7(dr7::FIXED_1 | dr7::global(0) | dr7::condition(0, dr7::EXECUTE, 1));
    let (result, seen) = record_debug_exceptions(mov_ss_then_breakpointed_instruction);
    write_dr7(dr7::FIXED_1);
    let Ok((target, cleared)) = result else {
        report!(false, "MOV SS; XOR with DR0 on the XOR runs (got {result:x?})");
        return;
    };
    let expected = usize::from(!intel);
    report!(
        seen.len() == expected && seen.iter().all(|e| e.rip == target) && cleared == 0,
        "{}: an instruction breakpoint on the XOR after MOV SS ({target:#x}) is {}, and the XOR runs (got {seen:x?}, XOR result {cleared:#x})",
        if intel { "Intel" } else { "AMD" },
        if intel { "inhibited" } else { "delivered" }
    );

    // The 32-bit build's form: MOV SS and POP SS in a 32-bit code segment (CPL 3).
    for (load, name) in [(SsLoad::Move, "MOV SS"), (SsLoad::Pop, "POP SS")] {
        write_dr7(dr7::FIXED_1 | dr7::global(0) | dr7::condition(0, dr7::EXECUTE, 1));
        let (result, seen) =
            record_debug_exceptions(|| compatibility_ss_load_then_breakpointed_instruction(load));
        write_dr7(dr7::FIXED_1);
        let ended = result.as_ref().map(|(_, exception)| *exception);
        let target = result.as_ref().map_or(0, |(target, _)| *target);
        report!(
            seen.len() == expected
                && seen.iter().all(|e| e.rip == target)
                && matches!(ended, Ok(e) if e.vector == Vector::UD && e.from_user && e.rip == target + 2),
            "{}: in a 32-bit code segment, an instruction breakpoint on the XOR after {name} ({target:#x}) is {}, and the XOR runs to the UD2 (got {seen:x?}, then {ended:x?})",
            if intel { "Intel" } else { "AMD" },
            if intel { "inhibited" } else { "delivered" }
        );
    }
}
