//! The two-CPU hand-off of the register-file tests (`fpu`, `sme`): one CPU (the holder) loads
//! its values and waits while the other (the worker) loads its own and signals it with an SGI.
//!
//! An [`Exchange`] holds the flags both sides share and what each side saw of the other: the
//! worker notes whether the holder had loaded its values before it loaded its own, the holder
//! whether the worker was done before its wait ended. Those two observations (not the flags
//! themselves, which each side sets whatever happens) say that the worker's load really fell
//! inside the holder's wait, so that a test's "held across the other CPU's work" is earned.
//!
//! ```ignore
//! static EXCHANGE: Exchange = Exchange::new(SGI);
//! EXCHANGE.run(0, 1, || { EXCHANGE.hold_descheduled(|handoff| round_trip(handoff)); },
//!              || { EXCHANGE.work_then_signal(|| load_and_store()); });
//! EXCHANGE.report(0, 1);
//! ```

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::gic::{self, SgiTarget};
use super::instructions::{Handoff, disable_interrupts, enable_interrupts, isb};
use super::smp::{cpu_index, on_cpu, on_cpu_async};
use super::timer::{self, CTL_ENABLE, Timer};

/// The flags of one hand-off between two CPUs, and what each side saw of the other.
pub struct Exchange {
    /// The SGI the worker sends the holder.
    sgi: u32,
    /// Set by the holder once its registers hold its values.
    loaded: AtomicU32,
    /// Set by the worker once it ran.
    done: AtomicU32,
    /// Set when the holder's handler ran for the worker's SGI.
    interrupt_seen: AtomicU32,
    /// The holder's CPU index.
    holder: AtomicU32,
    /// How many WFIs the holder ran.
    waits: AtomicU64,
    /// `loaded` as the worker saw it once its wait for it ended, before its own load.
    worker_saw_loaded: AtomicU32,
    /// Whether the holder's wait ended because `done` was set (not at its deadline or poll limit).
    holder_saw_done: AtomicU32,
}

impl Exchange {
    /// An exchange whose worker signals the holder with `sgi`.
    pub const fn new(sgi: u32) -> Exchange {
        Exchange {
            sgi,
            loaded: AtomicU32::new(0),
            done: AtomicU32::new(0),
            interrupt_seen: AtomicU32::new(0),
            holder: AtomicU32::new(0),
            waits: AtomicU64::new(0),
            worker_saw_loaded: AtomicU32::new(0),
            holder_saw_done: AtomicU32::new(0),
        }
    }

    /// Clears the flags and names `holder` the holder.
    pub fn reset(&self, holder: usize) {
        for flag in [
            &self.loaded,
            &self.done,
            &self.interrupt_seen,
            &self.worker_saw_loaded,
            &self.holder_saw_done,
        ] {
            flag.store(0, Ordering::Release);
        }
        self.waits.store(0, Ordering::Release);
        self.holder.store(holder as u32, Ordering::Release);
    }

    /// Resets, then runs `hold` on `holder` and `work` on `worker` at once (this CPU is one of
    /// them) and waits for both.
    pub fn run<H, W>(&self, holder: usize, worker: usize, hold: H, work: W)
    where
        H: Fn() + Sync + Send + 'static,
        W: Fn() + Sync + Send + 'static,
    {
        self.reset(holder);
        if holder == cpu_index() {
            on_cpu_async(worker, work);
            hold();
            on_cpu(worker, || {});
        } else {
            on_cpu_async(holder, hold);
            work();
            on_cpu(holder, || {});
        }
    }

    /// Runs on `cpu`: initialises its GIC interface and enables the exchange's SGI there;
    /// returns whether the GIC initialised.
    pub fn set_up_cpu(&self, cpu: usize) -> bool {
        let ready = AtomicBool::new(false);
        on_cpu(cpu, || {
            if gic::init().is_ok() {
                gic::enable(self.sgi);
                ready.store(true, Ordering::Release);
            }
        });
        ready.load(Ordering::Acquire)
    }

    /// The holder's CPU index.
    pub fn holder(&self) -> usize {
        self.holder.load(Ordering::Acquire) as usize
    }

    /// The flag the holder sets once its registers hold its values.
    pub fn loaded(&self) -> &AtomicU32 {
        &self.loaded
    }

    /// The flag the worker sets once it ran.
    pub fn done(&self) -> &AtomicU32 {
        &self.done
    }

    /// For the SGI handler: notes that the holder took the SGI when `cpu` is the holder.
    pub fn interrupt_taken(&self, cpu: usize) {
        if cpu == self.holder() {
            self.interrupt_seen.store(1, Ordering::Release);
        }
    }

    /// Whether the holder took the worker's SGI.
    pub fn interrupt_seen(&self) -> bool {
        self.interrupt_seen.load(Ordering::Acquire) == 1
    }

    /// The holder's side, for a wait ended by `done` or not: runs `round_trip` and notes
    /// `done` as it is when `round_trip` returns.
    pub fn hold<T>(&self, round_trip: impl FnOnce() -> T) -> T {
        let result = round_trip();
        self.holder_saw_done
            .store(self.done.load(Ordering::Acquire), Ordering::Release);
        result
    }

    /// The holder's side of a descheduled wait: arms the virtual timer as a watchdog at the
    /// hand-off's deadline (its PPI ends a WFI even with IRQs masked), runs `round_trip` with
    /// the hand-off, notes whether the wait ended before the deadline (so because `done` was
    /// set), disarms the timer, then unmasks IRQs so that the worker's pending SGI is taken.
    pub fn hold_descheduled<'a, T>(&'a self, round_trip: impl FnOnce(Handoff<'a>) -> T) -> T {
        let watchdog = Timer::Virtual;
        let deadline = timer::virtual_count() + 5 * timer::frequency();
        watchdog.set_compare_value(deadline);
        watchdog.set_control(CTL_ENABLE);
        gic::enable(watchdog.intid());
        let result = round_trip(Handoff {
            loaded: &self.loaded,
            done: &self.done,
            deadline,
            waits: &self.waits,
        });
        // The wait ends early only when `done` is set, and the count only grows.
        let early = timer::virtual_count() < deadline;
        self.holder_saw_done.store(u32::from(early), Ordering::Release);
        watchdog.set_control(0);
        gic::disable(watchdog.intid());
        isb();
        let deadline = timer::virtual_count() + timer::frequency();
        while !self.interrupt_seen() && timer::virtual_count() < deadline {
            enable_interrupts();
            isb();
            disable_interrupts();
        }
        result
    }

    /// The worker's side: waits (up to 5 seconds) until the holder holds its values, notes
    /// whether it did, runs `round_trip`, then sets `done` and sends the holder the SGI that
    /// ends its wait.
    pub fn work_then_signal<T>(&self, round_trip: impl FnOnce() -> T) -> T {
        let result = self.work(round_trip);
        self.done.store(1, Ordering::Release);
        gic::send_sgi(self.sgi, SgiTarget::Cpu(self.holder()));
        result
    }

    /// The worker's side without the signal: waits (up to 5 seconds) until the holder holds its
    /// values, notes whether it did, runs `round_trip`.
    pub fn work<T>(&self, round_trip: impl FnOnce() -> T) -> T {
        let deadline = timer::virtual_count() + 5 * timer::frequency();
        while self.loaded.load(Ordering::Acquire) == 0 && timer::virtual_count() < deadline {
            core::hint::spin_loop();
        }
        self.worker_saw_loaded
            .store(self.loaded.load(Ordering::Acquire), Ordering::Release);
        round_trip()
    }

    /// What the two sides saw: whether the worker found the holder's values loaded before its
    /// own load, whether the holder's wait ended because the worker was done, and how many WFIs
    /// the holder ran.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            worker_saw_loaded: self.worker_saw_loaded.load(Ordering::Acquire) == 1,
            holder_saw_done: self.holder_saw_done.load(Ordering::Acquire) == 1,
            waits: self.waits.load(Ordering::Acquire),
        }
    }

    /// Reports the hand-off itself: CPU `worker` loaded its values inside CPU `holder`'s wait
    /// (after the holder loaded, before the holder's wait ended), and the holder took the
    /// worker's SGI after its wait.
    pub fn report(&self, holder: usize, worker: usize) {
        let outcome = self.outcome();
        crate::report!(
            outcome.worker_saw_loaded && outcome.holder_saw_done,
            "CPU {worker} loaded its values while CPU {holder} waited with its own (expected loaded 1 and done 1, got {} and {})",
            u8::from(outcome.worker_saw_loaded),
            u8::from(outcome.holder_saw_done)
        );
        crate::report_info!(
            "CPU {holder} ran {} WFI(s) while holding its values",
            outcome.waits
        );
        let seen = u8::from(self.interrupt_seen());
        crate::report!(
            seen == 1,
            "CPU {holder} took CPU {worker}'s SGI after its wait (expected 1, got {seen})"
        );
    }
}

/// What the two sides of an [`Exchange`] saw of each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The worker found the holder's values loaded before it loaded its own.
    pub worker_saw_loaded: bool,
    /// The holder's wait ended because the worker was done (not at its deadline).
    pub holder_saw_done: bool,
    /// How many WFIs the holder ran (descheduled waits only).
    pub waits: u64,
}
