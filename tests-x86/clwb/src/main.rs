//! clwb: a reproducer. CLWB writes a cache line back and keeps its contents where CPUID.7.0:
//! EBX[24] advertises it (SDM Vol. 2, CLWB), whatever the line holds.
//!
//! Under this project's software KVM (kvm_pvm) the instruction stops the VM with "KVM
//! internal error ... emulation failure": the runner reports a hypervisor error at once.
#![no_std]
#![no_main]

extern crate alloc;

use vmunit::arch::cpuid::Feature;
use vmunit::arch::instructions::try_clwb;
use vmunit::{report, report_skip, report_summary};

vmunit::main!(main);

fn main(_args: &[&str]) -> i32 {
    if !Feature::Clwb.supported() {
        report_skip!("CPUID.7.0:EBX[24] (CLWB) is clear");
        return report_summary();
    }
    let line = alloc::vec![0x5au8; 64];
    let result = try_clwb(line.as_ptr());
    report!(result.is_ok(), "CLWB of a heap line executes (got {result:x?})");
    report!(
        line.iter().all(|&byte| byte == 0x5a),
        "the line keeps its contents after CLWB"
    );
    let code = main as fn(&[&str]) -> i32 as *const u8;
    let result = try_clwb(code);
    report!(result.is_ok(), "CLWB of a code line executes (got {result:x?})");
    report_summary()
}
