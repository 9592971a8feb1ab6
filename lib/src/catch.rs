//! `catch_exception`: run a closure and get its result, or the exception that ended it. The
//! architecture supplies only `exceptions::try_call`, the setjmp-like entry that the exception
//! dispatcher resumes when the closure faults.

use crate::arch::Exception;

/// Runs `function` and returns its result, or the exception that interrupted it.
///
/// On an exception the closure's frames are abandoned without running destructors, like
/// `longjmp`: anything it owned leaks, and locks it held stay held.
pub fn catch_exception<R, F: FnOnce() -> R>(function: F) -> Result<R, Exception> {
    struct Call<F, R> {
        function: Option<F>,
        result: Option<R>,
    }
    extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut u8) {
        // SAFETY: `data` is the `Call` that `catch_exception` passed to `try_call`, alive and
        // exclusively ours for the duration of the call.
        let call = unsafe { &mut *data.cast::<Call<F, R>>() };
        if let Some(function) = call.function.take() {
            call.result = Some(function());
        }
    }

    let mut call = Call {
        function: Some(function),
        result: None,
    };
    let exception = crate::arch::exceptions::try_call(trampoline::<F, R>, (&raw mut call).cast());
    match (exception, call.result) {
        (None, Some(result)) => Ok(result),
        (Some(exception), _) => Err(exception),
        (None, None) => unreachable!("try_call returned without a result or an exception"),
    }
}
