//! host_rflags: the host's RFLAGS.TF and RFLAGS.RF around VMRUN (AMD APM Vol. 2, 15.5.1 and
//! 15.7.2): a TF set before VMRUN traps on the host; a TF still set at VMRUN traps after the
//! #VMEXIT, at the instruction after VMRUN; RF suppresses an instruction breakpoint on VMRUN,
//! and VMRUN's completion clears it.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use vmunit::arch::control::RFlags;
use vmunit::arch::debug::{dr6, dr7, read_dr6, read_dr7, try_write_debug_register, write_dr6, write_dr7};
use vmunit::arch::exceptions::{ExceptionFrame, set_debug_handler};
use vmunit::arch::svm::{ExitCode, Svm, vmrun_address};
use vmunit::report;

const TRAP_FLAG: u64 = RFlags::TRAP_FLAG.bits();
const RESUME_FLAG: u64 = RFlags::RESUME_FLAG.bits();

/// What the #DB handler does with the host's single-step traps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    /// Clears TF at the first trap (kvm-unit-tests' stage 1: TF set "not immediately before
    /// VMRUN").
    ClearAtOnce = 0,
    /// Keeps TF until the trap after VMRUN completes, then clears it (stage 2).
    ThroughVmrun = 1,
    /// At the trap that reaches VMRUN, clears TF and arms an instruction breakpoint on VMRUN;
    /// that breakpoint's #DB resumes with RF (stage 3).
    BreakpointOnVmrun = 2,
    /// As [`Mode::BreakpointOnVmrun`], but TF stays set through VMRUN, so the trap after the
    /// #VMEXIT shows the RFLAGS VMRUN completed with.
    BreakpointKeepingTrap = 3,
}

/// How many #DBs one stage records (more end the stage: TF cleared, breakpoints off).
const RECORDS: usize = 64;

static MODE: AtomicU8 = AtomicU8::new(0);
/// #DBs the handler saw this stage.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// Whether a trap reached VMRUN (its pushed RIP was VMRUN's address).
static REACHED_VMRUN: AtomicBool = AtomicBool::new(false);
/// Instruction-breakpoint #DBs on VMRUN that the handler resumed with RF.
static BREAKPOINT_HITS: AtomicU32 = AtomicU32::new(0);
/// RIP, DR6 and pushed RFLAGS of the last #DB.
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static LAST_DR6: AtomicU64 = AtomicU64::new(0);
static LAST_RFLAGS: AtomicU64 = AtomicU64::new(0);
/// RIP of the first #DB.
static FIRST_RIP: AtomicU64 = AtomicU64::new(0);
/// A #DB whose RIP lay outside the harness's VMRUN path (the guest's code): its RIP.
static STRAY_RIP: AtomicU64 = AtomicU64::new(0);
/// #DBs and breakpoint hits the guest saw when it ran (u32::MAX: it did not run).
static GUEST_SAW_COUNT: AtomicU32 = AtomicU32::new(u32::MAX);
static GUEST_SAW_HITS: AtomicU32 = AtomicU32::new(u32::MAX);

fn mode() -> Mode {
    match MODE.load(SeqCst) {
        0 => Mode::ClearAtOnce,
        1 => Mode::ThroughVmrun,
        2 => Mode::BreakpointOnVmrun,
        _ => Mode::BreakpointKeepingTrap,
    }
}

/// The VMRUN path's instructions after CLGI lie within this many bytes before VMRUN.
const PATH_BYTES: u64 = 256;

fn host_rflags_handler(frame: &mut ExceptionFrame) {
    let index = COUNT.fetch_add(1, SeqCst) as usize;
    let vmrun = vmrun_address();
    let dr6 = read_dr6();
    if index == 0 {
        FIRST_RIP.store(frame.rip, SeqCst);
    }
    LAST_RIP.store(frame.rip, SeqCst);
    LAST_DR6.store(dr6, SeqCst);
    LAST_RFLAGS.store(frame.rflags, SeqCst);
    if !(vmrun - PATH_BYTES..=vmrun + 3).contains(&frame.rip) {
        STRAY_RIP.store(frame.rip, SeqCst);
    }
    let reached = REACHED_VMRUN.load(SeqCst);
    match mode() {
        Mode::ClearAtOnce => frame.rflags &= !TRAP_FLAG,
        Mode::ThroughVmrun => {
            if frame.rip == vmrun {
                REACHED_VMRUN.store(true, SeqCst);
                // Clean status bits, so that DR6.BS after VMRUN is the trap's own.
                write_dr6(dr6::ACTIVE_LOW);
            } else if reached {
                frame.rflags &= !TRAP_FLAG;
            }
        }
        Mode::BreakpointOnVmrun | Mode::BreakpointKeepingTrap => {
            if !reached {
                if frame.rip == vmrun {
                    REACHED_VMRUN.store(true, SeqCst);
                    if mode() == Mode::BreakpointOnVmrun {
                        frame.rflags &= !TRAP_FLAG;
                    }
                    // DR0 holds VMRUN's address (set before the run): enable it.
                    write_dr7(dr7::FIXED_1 | dr7::local(0) | dr7::global(0));
                }
            } else if dr6 & dr6::B0 != 0 && frame.rip == vmrun {
                BREAKPOINT_HITS.fetch_add(1, SeqCst);
                frame.rflags |= RESUME_FLAG;
            } else {
                frame.rflags &= !TRAP_FLAG;
            }
        }
    }
    if index + 1 >= RECORDS {
        frame.rflags &= !TRAP_FLAG;
        write_dr7(dr7::FIXED_1);
    }
}

/// What one stage saw.
#[derive(Debug)]
struct Stage {
    exit: ExitCode,
    count: u32,
    first_rip: u64,
    last_rip: u64,
    last_dr6: u64,
    last_rflags: u64,
    stray_rip: u64,
    guest_saw_count: u32,
    guest_saw_hits: u32,
    breakpoint_hits: u32,
    dr7_after: u64,
}

fn run_stage(svm: &mut Svm, mode: Mode) -> Stage {
    MODE.store(mode as u8, SeqCst);
    for counter in [&COUNT, &BREAKPOINT_HITS] {
        counter.store(0, SeqCst);
    }
    for value in [&FIRST_RIP, &LAST_RIP, &LAST_DR6, &LAST_RFLAGS, &STRAY_RIP] {
        value.store(0, SeqCst);
    }
    REACHED_VMRUN.store(false, SeqCst);
    GUEST_SAW_COUNT.store(u32::MAX, SeqCst);
    GUEST_SAW_HITS.store(u32::MAX, SeqCst);
    svm.reset();
    svm.set_host_trap_flag(true);
    let exit = svm.run_once(&|| {
        GUEST_SAW_COUNT.store(COUNT.load(SeqCst), SeqCst);
        GUEST_SAW_HITS.store(BREAKPOINT_HITS.load(SeqCst), SeqCst);
    });
    let dr7_after = read_dr7();
    write_dr7(dr7::FIXED_1);
    Stage {
        exit,
        count: COUNT.load(SeqCst),
        first_rip: FIRST_RIP.load(SeqCst),
        last_rip: LAST_RIP.load(SeqCst),
        last_dr6: LAST_DR6.load(SeqCst),
        last_rflags: LAST_RFLAGS.load(SeqCst),
        stray_rip: STRAY_RIP.load(SeqCst),
        guest_saw_count: GUEST_SAW_COUNT.load(SeqCst),
        guest_saw_hits: GUEST_SAW_HITS.load(SeqCst),
        breakpoint_hits: BREAKPOINT_HITS.load(SeqCst),
        dr7_after,
    }
}

/// host_rflags: kvm-unit-tests' four stages (a plain run, TF set after CLGI and cleared at its
/// first trap, TF through VMRUN, RF over an instruction breakpoint on VMRUN), plus RF as VMRUN
/// completes seen by a TF trap after it.
pub fn host_rflags(svm: &mut Svm) {
    let vmrun = vmrun_address();
    let breakpoint_set = try_write_debug_register(0, vmrun).is_ok();
    set_debug_handler(Some(host_rflags_handler));

    // Stage 0: no TF.
    svm.reset();
    let exit = svm.run_once(&|| {});
    report!(
        exit == ExitCode::Vmmcall,
        "without host TF the guest runs to VMMCALL (got {exit})"
    );

    // Stage 1: TF set after CLGI, cleared at its first trap.
    let stage = run_stage(svm, Mode::ClearAtOnce);
    report!(
        stage.exit == ExitCode::Vmmcall && stage.count == 1 && stage.guest_saw_count == 1,
        "host TF set before VMRUN traps once on the host, before the guest runs (exit {}, {} #DB, guest saw {})",
        stage.exit,
        stage.count,
        stage.guest_saw_count
    );
    report!(
        stage.count == 1 && stage.first_rip < vmrun && stage.first_rip + PATH_BYTES > vmrun,
        "that #DB is on the host's VMRUN path, before VMRUN at {vmrun:#x} (RIP {:#x})",
        stage.first_rip
    );

    // Stage 2: TF kept through VMRUN: the trap comes after the #VMEXIT.
    let stage = run_stage(svm, Mode::ThroughVmrun);
    report!(
        stage.exit == ExitCode::Vmmcall && stage.guest_saw_count != u32::MAX,
        "with host TF set at VMRUN the guest runs to VMMCALL (exit {}, guest saw {} #DBs)",
        stage.exit,
        stage.guest_saw_count
    );
    report!(
        stage.last_rip == vmrun + 3 && stage.count == stage.guest_saw_count + 1,
        "host TF at VMRUN traps after the #VMEXIT, at {:#x} (last #DB at {:#x}, {} #DBs, {} before the guest ran)",
        vmrun + 3,
        stage.last_rip,
        stage.count,
        stage.guest_saw_count
    );
    report!(
        stage.last_dr6 & dr6::BS != 0,
        "that #DB reports a single step: DR6.BS (DR6 {:#x})",
        stage.last_dr6
    );
    report!(
        stage.stray_rip == 0,
        "no #DB in the guest (stray RIP {:#x})",
        stage.stray_rip
    );

    // Stage 3: RF over an instruction breakpoint on VMRUN.
    let stage = run_stage(svm, Mode::BreakpointOnVmrun);
    report!(
        breakpoint_set && stage.exit == ExitCode::Vmmcall && stage.guest_saw_hits == 1,
        "the instruction breakpoint on VMRUN fires once before the guest runs (exit {}, guest saw {} hits)",
        stage.exit,
        stage.guest_saw_hits
    );
    report!(
        stage.breakpoint_hits == 1,
        "host RF suppresses the breakpoint as VMRUN runs again ({} breakpoint #DBs)",
        stage.breakpoint_hits
    );
    report!(
        stage.dr7_after & 0xff == 0,
        "#VMEXIT disables the host's breakpoints: DR7[7:0] clear (DR7 {:#x})",
        stage.dr7_after
    );

    // RF as VMRUN completes: TF kept through VMRUN shows it in the trap after the #VMEXIT.
    let stage = run_stage(svm, Mode::BreakpointKeepingTrap);
    report!(
        stage.exit == ExitCode::Vmmcall && stage.breakpoint_hits == 1 && stage.last_rip == vmrun + 3,
        "with RF and TF at VMRUN the guest runs and the trap comes after the #VMEXIT (exit {}, {} breakpoint #DBs, last #DB at {:#x})",
        stage.exit,
        stage.breakpoint_hits,
        stage.last_rip
    );
    report!(
        stage.last_rip == vmrun + 3 && stage.last_rflags & RESUME_FLAG == 0,
        "VMRUN's completion clears host RF (RFLAGS after VMRUN {:#x})",
        stage.last_rflags
    );

    set_debug_handler(None);
    let _ = try_write_debug_register(0, 0);
    write_dr7(dr7::FIXED_1);
    svm.reset();
}
