//! `catch_exception`: run a closure and get its result, or the exception that ended it. The
//! architecture supplies only `exceptions::try_call`, the setjmp-like entry that the exception
//! dispatcher resumes when the closure faults.

use crate::arch::Exception;

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
    let exception = crate::arch::exceptions::try_call(Call::<F, R>::trampoline, call.as_data());
    match (exception, call.into_result()) {
        (None, Some(result)) => Ok(result),
        (Some(exception), _) => Err(exception),
        (None, None) => unreachable!("try_call returned without a result or an exception"),
    }
}
