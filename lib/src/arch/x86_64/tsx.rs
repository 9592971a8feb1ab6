//! Intel TSX's restricted transactional memory (RTM): XBEGIN/XEND, for tests of what
//! IA32_TSX_CTRL does to it (SDM Vol. 1, chapter 16; Vol. 2, XBEGIN).

use core::arch::asm;

use super::exceptions::{Exception, catch_exception};

/// Runs one transaction, XBEGIN; a register store; XEND, and tells whether it committed: an
/// abort rolls the register back and resumes at the fallback address, so the store is seen
/// only when the transaction committed. #UD without RTM (CPUID.7.0:EBX[11]): the caller checks
/// it, or gets the exception.
pub fn try_transaction() -> Result<bool, Exception> {
    catch_exception(|| {
        let mut committed: u64 = 0;
        // SAFETY: the transaction only writes `committed` (a register) and EAX (the abort
        // status); an abort resumes at label 2 with the register as it was before XBEGIN.
        unsafe {
            asm!(
                "xbegin 2f",
                "mov {committed}, 1",
                "xend",
                "2:",
                committed = inout(reg) committed,
                out("eax") _,
                options(nomem, nostack),
            )
        };
        committed == 1
    })
}

/// Whether any of `attempts` transactions commits (kvm-unit-tests' `try_transaction`, 100
/// attempts: a transaction may abort for reasons of its own, an interrupt say, so one abort
/// proves nothing).
pub fn try_any_transaction_commits(attempts: u32) -> Result<bool, Exception> {
    for _ in 0..attempts {
        if try_transaction()? {
            return Ok(true);
        }
    }
    Ok(false)
}
