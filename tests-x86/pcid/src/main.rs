//! pcid: process-context identifiers and INVPCID, as kvm-unit-tests' pcid test checks them
//! (one report line per rule here): CR4.PCIDE can be set only where CPUID advertises PCID and
//! only with CR3[11:0] clear, paging cannot be turned off while it is set, and INVPCID runs
//! (or raises #UD where it is not advertised) with the SDM's #GP rules for its operands.
#![no_std]
#![no_main]

use vmunit::arch::instructions::{
    Register, has_feature, invpcid_safe, is_tcg, read_cr0, read_cr3, read_cr4, write_cr0_safe,
    write_cr3_safe, write_cr4_safe,
};
use vmunit::{Vector, known_failure, prefix, report, report_skip, report_summary};

vmunit::main!(main);

const CR4_PCIDE: u64 = 1 << 17;
const CR0_PG: u64 = 1 << 31;

fn is_gp<T>(result: &Result<T, vmunit::Exception>) -> bool {
    matches!(result, Err(e) if e.vector == Vector::GP)
}

fn main(_args: &[&str]) -> i32 {
    let pcid = has_feature(1, 0, Register::Ecx, 17);
    let invpcid = has_feature(7, 0, Register::Ebx, 10);
    if pcid {
        pcid_enabled();
    } else {
        let _prefix = prefix("PCID not advertised");
        let cr4 = read_cr4();
        let result = write_cr4_safe(cr4 | CR4_PCIDE);
        if result.is_ok() {
            let _ = write_cr4_safe(cr4);
        }
        let tcg = is_tcg();
        known_failure(tcg, "QEMU's TCG sets CR4.PCIDE though it offers no PCID", || {
            report!(is_gp(&result), "setting CR4.PCIDE raises #GP (got {result:x?})")
        });
    }
    if invpcid {
        invpcid_enabled(pcid);
    } else {
        let _prefix = prefix("INVPCID not advertised");
        if vmunit::environment::instruction_emulating_kvm() {
            report_skip!(
                "INVPCID: this host's kvm_pvm stops the VM on it (KVM internal error) instead of raising #UD"
            );
            return report_summary();
        }
        let result = invpcid_safe(2, 0, 0);
        report!(
            matches!(result, Err(e) if e.vector == Vector::UD),
            "INVPCID raises #UD (got {result:x?})"
        );
    }
    report_summary()
}

fn pcid_enabled() {
    let _prefix = prefix("PCID advertised");
    let (cr0, cr3, cr4) = (read_cr0(), read_cr3(), read_cr4());
    let set = write_cr4_safe(cr4 | CR4_PCIDE);
    report!(
        set.is_ok(),
        "setting CR4.PCIDE with CR3[11:0] clear works (got {set:x?})"
    );
    if set.is_ok() {
        let paging_off = write_cr0_safe(cr0 & !CR0_PG);
        report!(
            is_gp(&paging_off),
            "clearing CR0.PG while CR4.PCIDE is set raises #GP (got {paging_off:x?})"
        );
    }
    report!(write_cr4_safe(cr4).is_ok(), "clearing CR4.PCIDE works");
    let tagged = write_cr3_safe(cr3 | 0x001);
    let refused = write_cr4_safe(cr4 | CR4_PCIDE);
    let _ = write_cr4_safe(cr4);
    let _ = write_cr3_safe(cr3);
    report!(
        tagged.is_ok() && is_gp(&refused),
        "setting CR4.PCIDE with CR3[11:0] = 1 raises #GP (got {refused:x?})"
    );
}

fn invpcid_enabled(pcid: bool) {
    let _prefix = prefix("INVPCID advertised");
    let cr4 = read_cr4();
    for kind in 0..4 {
        let result = invpcid_safe(kind, 0, 0);
        report!(
            result.is_ok(),
            "INVPCID type {kind} for PCID 0 works with CR4.PCIDE clear (got {result:x?})"
        );
    }
    for kind in 0..2 {
        let result = invpcid_safe(kind, 1, 0);
        report!(
            is_gp(&result),
            "INVPCID type {kind} for PCID 1 raises #GP with CR4.PCIDE clear (got {result:x?})"
        );
    }
    let bad_type = invpcid_safe(4, 0, 0);
    report!(
        is_gp(&bad_type),
        "INVPCID of type 4 raises #GP (got {bad_type:x?})"
    );
    if pcid && write_cr4_safe(cr4 | CR4_PCIDE).is_ok() {
        let result = invpcid_safe(2, 10, 0);
        let _ = write_cr4_safe(cr4);
        report!(
            result.is_ok(),
            "INVPCID type 2 works with CR4.PCIDE set (got {result:x?})"
        );
    }
}
