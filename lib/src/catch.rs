//! `catch_exception`: run a closure and get its result, or the exception that ended it; and
//! `trap_exceptions`: run a closure, recording the exceptions it raised and resuming after
//! each. The architecture supplies the assembly (`vmunit_try_call`, a setjmp-like entry, and
//! `vmunit_try_recover`, where its dispatcher resumes the innermost [`CatchContext`]) and
//! the dispatcher, which asks this module what to do with an exception.

use core::sync::atomic::{AtomicPtr, Ordering};

use alloc::vec::Vec;

use crate::arch::smp::{MAX_CPUS, cpu_index};
use crate::arch::{Exception, Vector};

/// Where `catch_exception` resumes after an exception: the state `vmunit_try_call` saved.
#[repr(C)]
pub(crate) struct CatchContext {
    /// The stack pointer inside `vmunit_try_call` after it saved the callee-saved registers.
    pub(crate) stack_pointer: u64,
    /// Processor state at the call, restored on recovery: RFLAGS on x86 (so a stray TF or AC
    /// does not leak out); on aarch64 DAIF ORed with SPSel (bit 0: the stack the call ran
    /// on, SP_EL0 for kernel code, SP_EL1 inside an exception handler).
    pub(crate) state: u64,
    /// The exception that ended the closure, filled in by the dispatcher.
    pub(crate) exception: Option<Exception>,
    /// The enclosing context, restored when this one ends.
    previous: *mut CatchContext,
}

// The assembly writes the first two words.
const _: () = assert!(core::mem::offset_of!(CatchContext, stack_pointer) == 0);
const _: () = assert!(core::mem::offset_of!(CatchContext, state) == 8);

#[allow(clippy::declare_interior_mutable_const)]
const NO_CONTEXT: AtomicPtr<CatchContext> = AtomicPtr::new(core::ptr::null_mut());
/// Each CPU's innermost live context (null: none).
static CATCH_CONTEXTS: [AtomicPtr<CatchContext>; MAX_CPUS] = [NO_CONTEXT; MAX_CPUS];

/// The running CPU's innermost live `CatchContext`, or null. The dispatcher may treat a
/// non-null one as exclusively its own while the faulting closure is suspended.
fn innermost_context() -> *mut CatchContext {
    CATCH_CONTEXTS[cpu_index()].load(Ordering::Acquire)
}

/// The running CPU's innermost live `CatchContext` whose saved stack pointer `usable` accepts,
/// or null: the dispatcher skips contexts that it must not resume (those made on a user
/// stack, by code at CPL 3 or EL0, which resuming in the kernel would promote).
pub(crate) fn innermost_context_where(usable: impl Fn(u64) -> bool) -> *mut CatchContext {
    let mut context = innermost_context();
    // SAFETY: live contexts form a chain through `previous`, each owned by a suspended
    // `try_call` of this CPU (see `innermost_context`); only reads happen here.
    while !context.is_null() && !usable(unsafe { (*context).stack_pointer }) {
        // SAFETY: as above.
        context = unsafe { (*context).previous };
    }
    context
}

unsafe extern "C" {
    /// Defined by each architecture's exceptions.rs: saves the callee-saved registers, the
    /// stack pointer and `state` into `context`, calls `function(data)` and returns 0; or,
    /// resumed by the dispatcher at `vmunit_try_recover`, returns 1. `context` points at a
    /// `CatchContext`, of which the assembly writes the first two words only.
    fn vmunit_try_call(context: *mut u64, function: extern "C" fn(*mut u8), data: *mut u8) -> u64;
}

/// Calls `function(data)` under a new innermost context of this CPU; returns the exception
/// that ended it, or `None` when it returned.
#[inline]
fn try_call(function: extern "C" fn(*mut u8), data: *mut u8) -> Option<Exception> {
    let slot = &CATCH_CONTEXTS[cpu_index()];
    let mut context = CatchContext {
        stack_pointer: 0,
        state: 0,
        exception: None,
        previous: slot.load(Ordering::Relaxed),
    };
    slot.store(&raw mut context, Ordering::Release);
    // SAFETY: `vmunit_try_call` follows the C ABI, saves the callee-saved registers, and
    // either returns normally or is resumed by the dispatcher at `vmunit_try_recover`, which
    // restores its saved stack pointer and those registers; `context` and `data` outlive it.
    let interrupted = unsafe { vmunit_try_call((&raw mut context).cast(), function, data) };
    slot.store(context.previous, Ordering::Release);
    (interrupted != 0).then_some(context.exception).flatten()
}

/// A closure and the slot for its result, handed through assembly as one `*mut u8`: the
/// shared currency of `catch_exception` and the architectures' `run_in_user_mode`.
pub(crate) struct Call<F, R> {
    function: Option<F>,
    result: Option<R>,
}

impl<F: FnOnce() -> R, R> Call<F, R> {
    /// A call of `function` that has not run yet.
    pub(crate) fn new(function: F) -> Self {
        Self {
            function: Some(function),
            result: None,
        }
    }

    /// The pointer that [`Self::trampoline`] takes: this call, exclusively borrowed.
    pub(crate) fn as_data(&mut self) -> *mut u8 {
        (&raw mut *self).cast()
    }

    /// The C-ABI entry that runs the closure of the call whose [`Self::as_data`] is `data`
    /// and stores its result. It must be entered only with such a pointer, while the call is
    /// alive and nothing else uses it.
    pub(crate) extern "C" fn trampoline(data: *mut u8) {
        // SAFETY: every caller passes `as_data` of a live `Call<F, R>` that it does not touch
        // until this returns or is abandoned (see above).
        let call = unsafe { &mut *data.cast::<Self>() };
        if let Some(function) = call.function.take() {
            call.result = Some(function());
        }
    }

    /// The closure's result, or `None` when it did not run to its end.
    pub(crate) fn into_result(self) -> Option<R> {
        self.result
    }
}

/// Runs `function` and returns its result, or the exception that interrupted it.
///
/// On an exception the closure's frames are abandoned without running destructors, like
/// `longjmp`: anything it owned leaks, and locks it held stay held.
pub fn catch_exception<R, F: FnOnce() -> R>(function: F) -> Result<R, Exception> {
    let mut call = Call::new(function);
    let exception = try_call(Call::<F, R>::trampoline, call.as_data());
    match (exception, call.into_result()) {
        (None, Some(result)) => Ok(result),
        (Some(exception), _) => Err(exception),
        (None, None) => unreachable!("try_call returned without a result or an exception"),
    }
}

/// The outcome of a `try_` function that also says where the instruction it ran sits, for
/// tests that check the reported instruction address (ELR on aarch64, RIP on x86).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Attempt<T> {
    /// The value the instruction produced, or the exception it raised.
    pub result: Result<T, Exception>,
    /// The address of the instruction that was run (after it, for a call instruction such as
    /// SVC, whose exception returns past it: the function's documentation says which).
    pub address: u64,
}

/// A recorder for `trap_exceptions`: which vectors to resume from, and what was seen.
struct TrapRecorder {
    vectors: &'static [Vector],
    seen: Vec<Exception>,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_RECORDER: AtomicPtr<TrapRecorder> = AtomicPtr::new(core::ptr::null_mut());
/// Each CPU's innermost live recorder (null: none).
static TRAP_RECORDERS: [AtomicPtr<TrapRecorder>; MAX_CPUS] = [NO_RECORDER; MAX_CPUS];

/// Runs `function`, recording (up to 16 of) the exceptions whose vector is in `vectors` and
/// resuming after the instruction that raised each; returns its result and what was seen.
///
/// How it resumes is the architecture's. On x86 the handler returns with IRETQ, so only
/// trap-class exceptions (#DB, #BP, #OF, ...) fit: a resumed fault would repeat forever. On
/// aarch64 (where `Vector` is the exception class) it resumes at ELR + 4, except after
/// SVC/HVC/SMC, whose ELR already points after them.
pub fn trap_exceptions<R>(vectors: &'static [Vector], function: impl FnOnce() -> R) -> (R, Vec<Exception>) {
    let mut recorder = TrapRecorder {
        vectors,
        seen: Vec::with_capacity(16),
    };
    let slot = &TRAP_RECORDERS[cpu_index()];
    let previous = slot.swap(&raw mut recorder, Ordering::AcqRel);
    let result = function();
    slot.store(previous, Ordering::Release);
    (result, recorder.seen)
}

/// For the exception dispatcher: records `exception` if the running CPU's innermost
/// `trap_exceptions` asked for `vector`, and returns whether it did (the dispatcher then
/// resumes after the instruction). It does not allocate.
pub(crate) fn record_trap(vector: Vector, exception: Exception) -> bool {
    let recorder = TRAP_RECORDERS[cpu_index()].load(Ordering::Acquire);
    if recorder.is_null() {
        return false;
    }
    // SAFETY: a non-null recorder is the live `TrapRecorder` of a `trap_exceptions` call on
    // this CPU, which is suspended while its exceptions are handled.
    let recorder = unsafe { &mut *recorder };
    if !recorder.vectors.contains(&vector) {
        return false;
    }
    if recorder.seen.len() < recorder.seen.capacity() {
        recorder.seen.push(exception);
    }
    true
}

/// One side's innermost catch context and trap recorder, for code that runs two contexts of
/// execution on one CPU in turns (a nested guest and its host): each keeps its own, so an
/// exception in one is never resumed in the other's frames. Generic, though only x86_64's SVM
/// harness runs a nested guest so far.
#[allow(dead_code, reason = "aarch64 runs no nested guest yet")]
pub(crate) struct HandlerState {
    context: *mut CatchContext,
    recorder: *mut TrapRecorder,
}

#[allow(dead_code, reason = "aarch64 runs no nested guest yet")]
impl HandlerState {
    /// No catch context and no recorder: what a guest starts with.
    pub(crate) const NONE: HandlerState = HandlerState {
        context: core::ptr::null_mut(),
        recorder: core::ptr::null_mut(),
    };

    /// Installs this state on the running CPU and keeps the one it replaces in its place.
    pub(crate) fn swap(&mut self) {
        let cpu = cpu_index();
        self.context = CATCH_CONTEXTS[cpu].swap(self.context, Ordering::AcqRel);
        self.recorder = TRAP_RECORDERS[cpu].swap(self.recorder, Ordering::AcqRel);
    }
}
