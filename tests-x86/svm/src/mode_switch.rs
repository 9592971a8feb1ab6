//! mode_switch: the guest leaves long mode for real mode (through compatibility mode with
//! paging, EFER.LME and CR4.PAE turned off, and 16-bit protected mode), exits with VMMCALL
//! there, is resumed in real mode, and goes back to long mode, where it exits with VMMCALL
//! again. The host checks the guest's CR0, CR4 and EFER in the VMCB at each exit, as
//! kvm-unit-tests' mode_switch_finished does.
//!
//! The transitions are the runtime's real-mode harness (`vmunit::arch::realmode::run`, the
//! path kvm-unit-tests' test_mode_switch takes by hand), run by the guest; the real-mode
//! VMMCALL is a snippet of it, which clears CR4.PAE first (the harness keeps it).

use core::sync::atomic::{AtomicU8, Ordering::SeqCst};

use alloc::vec::Vec;
use vmunit::arch::control::{Cr0Flags, Cr4Flags};
use vmunit::arch::msr::EferFlags;
use vmunit::arch::realmode::{self, Registers};
use vmunit::arch::svm::{ExitCode, Intercept, Svm};
use vmunit::{Vector, realmode_snippet, report};

// The harness leaves CR4.PAE set on its way down (it restores CR4 on the way back): the
// snippet clears it, as kvm-unit-tests does before it enters 16-bit protected mode.
realmode_snippet!(
    REAL_MODE_VMMCALL = "mov %cr4, %eax",
    "and $~0x20, %eax",
    "mov %eax, %cr4",
    "vmmcall"
);

/// What the guest's real-mode run ended with: 0 not run, 1 back in long mode, 2 interrupted.
static RETURNED: AtomicU8 = AtomicU8::new(0);

/// The guest's mode bits at one exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mode {
    paging: bool,
    protected: bool,
    pae: bool,
    long_mode_enabled: bool,
    long_mode_active: bool,
}

impl Mode {
    fn of(cr0: u64, cr4: u64, efer: u64) -> Mode {
        let cr0 = Cr0Flags::from_bits_retain(cr0);
        let efer = EferFlags::from_bits_retain(efer);
        Mode {
            paging: cr0.contains(Cr0Flags::PAGING),
            protected: cr0.contains(Cr0Flags::PROTECTED_MODE_ENABLE),
            pae: Cr4Flags::from_bits_retain(cr4).contains(Cr4Flags::PHYSICAL_ADDRESS_EXTENSION),
            long_mode_enabled: efer.contains(EferFlags::LONG_MODE_ENABLE),
            long_mode_active: efer.contains(EferFlags::LONG_MODE_ACTIVE),
        }
    }

    const REAL: Mode = Mode {
        paging: false,
        protected: false,
        pae: false,
        long_mode_enabled: false,
        long_mode_active: false,
    };

    const LONG: Mode = Mode {
        paging: true,
        protected: true,
        pae: true,
        long_mode_enabled: true,
        long_mode_active: true,
    };
}

/// mode_switch: VMMCALL in real mode and again back in long mode, each resumed by the host.
pub fn mode_switch(svm: &mut Svm) {
    for vector in [Vector::GP, Vector::UD, Vector::DF] {
        svm.set_intercept(Intercept::Exception(vector.0));
    }
    RETURNED.store(0, SeqCst);
    let mut exits = Vec::new();
    svm.run(
        &|| {
            let result = realmode::run(&REAL_MODE_VMMCALL, &Registers::default());
            RETURNED.store(if result.is_ok() { 1 } else { 2 }, SeqCst);
        },
        |exit| {
            let save = &exit.vmcb().save;
            exits.push((exit.code(), Mode::of(save.cr0, save.cr4, save.efer)));
            if exit.code() != ExitCode::Vmmcall || exits.len() == 2 {
                return true;
            }
            exit.skip_instruction();
            false
        },
    );
    report!(
        exits.first() == Some(&(ExitCode::Vmmcall, Mode::REAL)),
        "the guest exits with VMMCALL in real mode: CR0.PG, CR0.PE, CR4.PAE, EFER.LME and EFER.LMA clear (exits {exits:?})"
    );
    report!(
        RETURNED.load(SeqCst) == 1,
        "the guest, resumed in real mode, goes back to long mode (outcome {})",
        RETURNED.load(SeqCst)
    );
    report!(
        exits.get(1) == Some(&(ExitCode::Vmmcall, Mode::LONG)) && exits.len() == 2,
        "the guest exits with VMMCALL back in long mode: CR0.PG, CR0.PE, CR4.PAE, EFER.LME and EFER.LMA set (exits {exits:?})"
    );
}
